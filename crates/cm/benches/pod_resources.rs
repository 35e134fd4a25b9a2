#![allow(missing_docs)]
//! QoS class, pod cgroup config and container resources for 1,000 pods.
//! Goal: under 1 ms for all 1,000.

use criterion::{Criterion, criterion_group, criterion_main};
use k8s_openapi::api::core::v1::Pod;
use kubelet_cm::{
    CgroupName, ContainerResourceOptions, container_linux_resources_with_hugepage_sizes,
    pod_cgroup_name, pod_qos_class, pod_resource_config,
};

fn pods() -> Vec<Pod> {
    (0..1000)
        .map(|i| {
            let (req, lim) = match i % 3 {
                0 => (
                    serde_json::json!({"cpu": "250m", "memory": "10Mi"}),
                    serde_json::json!({"cpu": "500m", "memory": "64Mi"}),
                ),
                1 => (
                    serde_json::json!({"cpu": "1", "memory": "1Gi"}),
                    serde_json::json!({"cpu": "1", "memory": "1Gi"}),
                ),
                _ => (serde_json::json!({}), serde_json::json!({})),
            };
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": format!("p{i}"), "uid": format!("uid-{i}")},
                "spec": {"containers": [
                    {"name": "app", "resources": {"requests": req, "limits": lim}},
                    {"name": "side", "resources": {"requests": req, "limits": lim}},
                ]},
            }))
            .expect("pod")
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let pods = pods();
    let root = CgroupName::root();
    let opts = ContainerResourceOptions {
        memory_capacity_bytes: 8 << 30,
        ..Default::default()
    };
    let sizes = ["2MB".to_owned(), "1GB".to_owned()];
    c.bench_function("qos_podconfig_container_resources_1000_pods", |b| {
        b.iter(|| {
            let mut acc = 0i64;
            for p in std::hint::black_box(&pods) {
                let q = pod_qos_class(p);
                let cfg = pod_resource_config(p, true, 100_000);
                let name = pod_cgroup_name(&root, p);
                for ctr in &p.spec.as_ref().expect("spec").containers {
                    let r = container_linux_resources_with_hugepage_sizes(p, ctr, &opts, &sizes);
                    acc += r.cpu_shares + r.memory_limit_in_bytes;
                }
                acc += cfg.cpu_shares.unwrap_or(0) as i64 + q as i64 + name.parts().len() as i64;
            }
            acc
        })
    });
}

fn parts(c: &mut Criterion) {
    let pods = pods();
    let root = CgroupName::root();
    let opts = ContainerResourceOptions {
        memory_capacity_bytes: 8 << 30,
        ..Default::default()
    };
    let mut g = c.benchmark_group("parts_1000_pods");
    g.bench_function("qos", |b| {
        b.iter(|| pods.iter().map(|p| pod_qos_class(p) as i64).sum::<i64>())
    });
    g.bench_function("pod_resource_config", |b| {
        b.iter(|| {
            pods.iter()
                .map(|p| {
                    pod_resource_config(p, true, 100_000)
                        .cpu_shares
                        .unwrap_or(0)
                })
                .sum::<u64>()
        })
    });
    g.bench_function("pod_cgroup_name", |b| {
        b.iter(|| {
            pods.iter()
                .map(|p| pod_cgroup_name(&root, p).parts().len())
                .sum::<usize>()
        })
    });
    g.bench_function("container_resources", |b| {
        b.iter(|| {
            pods.iter()
                .flat_map(|p| {
                    p.spec
                        .as_ref()
                        .expect("spec")
                        .containers
                        .iter()
                        .map(move |c| (p, c))
                })
                .map(|(p, c)| {
                    container_linux_resources_with_hugepage_sizes(p, c, &opts, &[]).cpu_shares
                })
                .sum::<i64>()
        })
    });
    g.finish();
}

criterion_group!(benches, bench, parts);
criterion_main!(benches);
