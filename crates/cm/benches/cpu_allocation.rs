#![allow(missing_docs)]
//! Static CPU policy allocation on a 256-CPU synthetic topology
//! (2 sockets × 2 NUMA nodes × 32 cores × 2 threads). Goal: under 50 µs per allocation.

use criterion::{Criterion, criterion_group, criterion_main};
use k8s_openapi::api::core::v1::Pod;
use kubelet_cm::cpumanager::take_by_topology;
use kubelet_cm::{CpuManager, CpuPolicy, CpuSet, CpuTopology, ReservedCpus};

fn guaranteed(uid: &str, cpus: u32) -> Pod {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": uid, "uid": uid},
        "spec": {"containers": [{"name": "app", "resources": {
            "requests": {"cpu": cpus.to_string(), "memory": "1Gi"},
            "limits": {"cpu": cpus.to_string(), "memory": "1Gi"}}}]},
    }))
    .expect("pod")
}

fn bench(c: &mut Criterion) {
    let topo = CpuTopology::synthetic(2, 2, 32, 2);
    assert_eq!(topo.num_cpus(), 256);
    let all = topo.all();
    let mut g = c.benchmark_group("static_cpu_policy_256_cpus");
    for n in [1usize, 8, 64] {
        g.bench_function(format!("take_by_topology_{n}"), |b| {
            b.iter(|| take_by_topology(&topo, std::hint::black_box(&all), n).expect("take"))
        });
    }
    // A fragmented pool: every third CPU taken.
    let fragmented: CpuSet = all.iter().filter(|c| c % 3 != 0).collect();
    g.bench_function("take_by_topology_8_fragmented", |b| {
        b.iter(|| take_by_topology(&topo, std::hint::black_box(&fragmented), 8).expect("take"))
    });
    // The manager's whole Allocate (hint-less) on a machine with 100 pods already placed.
    let policy = CpuPolicy::Static {
        reserved: ReservedCpus::Count(4),
    };
    let manager = CpuManager::new(policy, topo.clone(), None).expect("manager");
    for i in 0..100 {
        let p = guaranteed(&format!("bg{i}"), 2);
        manager
            .allocate(&p, &p.spec.as_ref().expect("spec").containers[0], None)
            .expect("allocate");
    }
    let pod = guaranteed("bench", 4);
    let container = pod.spec.as_ref().expect("spec").containers[0].clone();
    // Allocate then release, so every iteration really allocates.
    g.bench_function("cpu_manager_allocate_and_release_4", |b| {
        b.iter(|| {
            let got = manager.allocate(&pod, &container, None).expect("allocate");
            assert_eq!(got.map(|s| s.len()), Some(4));
            manager.remove_container("bench", "app").expect("remove");
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
