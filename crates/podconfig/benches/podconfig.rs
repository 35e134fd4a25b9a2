//! Benchmarks of issue 3:
//!
//! - `merge/reconcile_update_stream`: 3 sources × 1,000 pods, then 100,000
//!   single-pod updates (90 % status-only → RECONCILE, 10 % spec changes →
//!   UPDATE) through the [`Merger`]. Goal: ≥ 200,000 updates/s on one core.
//!   The merger's memory beyond the pod objects is printed once
//!   (goal: < 2 KiB per pod).
//! - `file_to_add_latency`: a manifest written to disk (atomically, by
//!   rename) until its ADD comes out of a [`PodConfig`] with the inotify
//!   path and a one-hour relist. Median and p99 over 200 files are printed.
//!   Goal: p99 < 50 ms (upstream: up to the 20 s relist period).
//!
//! Run: `cargo bench -p kubelet-podconfig --bench podconfig -- --sample-size 10`

use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_main};
use k8s_openapi::api::core::v1::{Pod, PodStatus};
use kubelet_podconfig::{
    FileSource, ManifestOrigin, Merger, PodConfig, PodOperation, decode_static_pod,
};

const SOURCES: [&str; 3] = ["file", "http", "api"];
const PODS_PER_SOURCE: usize = 1_000;
const STREAM: usize = 100_000;
const CHUNK: usize = 10_000;

fn manifest(name: &str, image: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: kube-system\n  labels:\n    app: {name}\n    tier: control-plane\n  annotations:\n    example.com/owner: team-a\nspec:\n  priorityClassName: system-node-critical\n  hostNetwork: true\n  containers:\n  - name: main\n    image: {image}\n    command: [\"/bin/server\", \"--port=8080\", \"--v=2\"]\n    env:\n    - name: MODE\n      value: production\n    ports:\n    - containerPort: 8080\n      name: http\n    resources:\n      requests:\n        cpu: 100m\n        memory: 128Mi\n      limits:\n        cpu: \"1\"\n        memory: 512Mi\n    volumeMounts:\n    - name: data\n      mountPath: /data\n  - name: sidecar\n    image: busybox:1.36\n  volumes:\n  - name: data\n    hostPath:\n      path: /var/lib/{name}\n"
    )
}

fn pods(source: &str) -> Vec<Pod> {
    (0..PODS_PER_SOURCE)
        .map(|i| {
            let origin = ManifestOrigin::File(format!("/etc/kubernetes/{source}/{i}.yaml"));
            decode_static_pod(
                manifest(&format!("{source}-pod-{i}"), "registry.k8s.io/app:1.0").as_bytes(),
                &origin,
                "node-1",
            )
            .expect("bench manifest is valid")
        })
        .collect()
}

fn primed() -> (Merger, Vec<Vec<Pod>>) {
    let mut merger = Merger::new();
    let all: Vec<Vec<Pod>> = SOURCES.iter().map(|s| pods(s)).collect();
    for (source, pods) in SOURCES.iter().zip(&all) {
        merger.merge(source, PodOperation::Set, pods.clone());
    }
    (merger, all)
}

/// The i-th update of the stream: a pod of some source with a new status
/// (RECONCILE), or every tenth time a new image (UPDATE).
fn stream_item(all: &[Vec<Pod>], i: usize) -> (usize, Pod) {
    let s = i % SOURCES.len();
    let mut pod = all[s][(i / SOURCES.len()) % PODS_PER_SOURCE].clone();
    pod.status = Some(PodStatus {
        phase: Some("Running".into()),
        message: Some(i.to_string()),
        ..Default::default()
    });
    if i.is_multiple_of(10)
        && let Some(c) = pod.spec.as_mut().and_then(|s| s.containers.first_mut())
    {
        c.image = Some(format!("registry.k8s.io/app:{i}"));
    }
    (s, pod)
}

fn merge_throughput(c: &mut Criterion) {
    let (merger, _) = primed();
    let pods = merger.len();
    let overhead = merger.overhead_bytes();
    println!(
        "merger memory beyond pod objects: {overhead} bytes for {pods} pods = {} bytes/pod (size_of::<Pod>() = {})",
        overhead / pods.max(1),
        std::mem::size_of::<Pod>()
    );

    let mut group = c.benchmark_group("merge");
    group.throughput(Throughput::Elements(STREAM as u64));
    group.bench_function("reconcile_update_stream", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let (mut merger, all) = primed();
                let (mut reconciles, mut updates) = (0usize, 0usize);
                for chunk in 0..STREAM / CHUNK {
                    let inputs: Vec<(usize, Pod)> = (chunk * CHUNK..(chunk + 1) * CHUNK)
                        .map(|i| stream_item(&all, i))
                        .collect();
                    // The consumer's work (dropping what it was sent) is not
                    // the merger's: outputs are dropped after the clock stops.
                    let mut outputs = Vec::with_capacity(CHUNK);
                    let start = Instant::now();
                    for (s, pod) in inputs {
                        outputs.push(merger.merge(SOURCES[s], PodOperation::Update, vec![pod]));
                    }
                    total += start.elapsed();
                    for out in outputs {
                        for u in &out.updates {
                            match u.op {
                                PodOperation::Reconcile => reconciles += 1,
                                PodOperation::Update => updates += 1,
                                _ => {}
                            }
                        }
                    }
                }
                assert_eq!(
                    reconciles + updates,
                    STREAM,
                    "every item must produce one update"
                );
                assert!(updates >= STREAM / 10);
            }
            total
        })
    });
    // The floor under the above: upstream's "every emitted pod is a deep
    // copy" costs one clone per update, and the merger drops the incoming
    // pod it does not keep.
    group.bench_function("pod_clone_and_drop_baseline", |b| {
        let (merger, _) = primed();
        let pods = merger.merged_state();
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let mut kept = Vec::with_capacity(CHUNK);
                let start = Instant::now();
                for i in 0..STREAM {
                    let copy = pods[i % pods.len()].clone();
                    if i % CHUNK == 0 {
                        kept.clear();
                    }
                    kept.push(std::hint::black_box(copy));
                }
                total += start.elapsed();
            }
            total
        })
    });
    group.finish();
}

fn file_to_add_latency(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().to_path_buf();
    let _guard = runtime.enter();
    let (_config, mut updates) = PodConfig::builder("node-1")
        .source(FileSource::new(&path, "node-1").relist_period(Duration::from_secs(3600)))
        .start();
    runtime.block_on(async {
        // The initial (empty) snapshot.
        updates.recv().await.expect("ready");
        // Let the watch settle.
        tokio::time::sleep(Duration::from_millis(100)).await;
    });

    let mut n = 0usize;
    let mut write_and_wait = |n: usize| -> Duration {
        let name = format!("pod-{n}");
        let tmp = path.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, manifest(&name, "registry.k8s.io/app:1.0")).expect("write");
        let start = Instant::now();
        std::fs::rename(&tmp, path.join(format!("{name}.yaml"))).expect("rename");
        let want = format!("{name}-node-1");
        runtime.block_on(async {
            loop {
                let u = tokio::time::timeout(Duration::from_secs(30), updates.recv())
                    .await
                    .expect("ADD within 30 s")
                    .expect("stream open");
                if u.op == PodOperation::Add
                    && u.pods
                        .iter()
                        .any(|p| p.metadata.name.as_deref() == Some(want.as_str()))
                {
                    return start.elapsed();
                }
            }
        })
    };

    let mut samples: Vec<Duration> = (0..200)
        .map(|_| {
            n += 1;
            write_and_wait(n)
        })
        .collect();
    samples.sort();
    let pct = |p: f64| samples[((samples.len() as f64 * p).ceil() as usize).saturating_sub(1)];
    println!(
        "file → ADD latency over {} files: median {:?}, p99 {:?}, max {:?}",
        samples.len(),
        pct(0.5),
        pct(0.99),
        samples[samples.len() - 1]
    );

    c.bench_function("file_to_add_latency", |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| {
                    n += 1;
                    write_and_wait(n)
                })
                .sum()
        })
    });
}

mod group {
    use super::{file_to_add_latency, merge_throughput};
    criterion::criterion_group!(benches, merge_throughput, file_to_add_latency);
}
criterion_main!(group::benches);
