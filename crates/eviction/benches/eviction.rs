#![allow(missing_docs)]
//! Ranking 1,000 pods under memory pressure, one synchronize pass over a
//! fake summary of 1,000 pods, and the backoff's hot path.

use std::collections::{BTreeMap, HashMap};
use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use k8s_openapi::api::core::v1::{Container, Pod, PodSpec, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kubelet_container::stats::{ContainerStats, MemoryStats, NodeStats, PodReference, PodStats};
use kubelet_eviction::manager::{Config, Manager, RecordingKiller};
use kubelet_eviction::rank::{RankFunc, rank};
use kubelet_eviction::{
    Backoff, FakeClock, FakeSummaryProvider, Signal, Summary, Threshold, ThresholdValue,
};

fn pods(n: usize) -> (Vec<Pod>, Vec<PodStats>) {
    let mut pods = Vec::with_capacity(n);
    let mut stats = Vec::with_capacity(n);
    for i in 0..n {
        let uid = format!("uid-{i:05}");
        let req = (i % 7) * 16;
        pods.push(Pod {
            metadata: ObjectMeta {
                name: Some(format!("pod-{i}")),
                namespace: Some("default".into()),
                uid: Some(uid.clone()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                priority: Some((i % 5) as i32 - 2),
                containers: vec![Container {
                    name: "app".into(),
                    resources: (req > 0).then(|| ResourceRequirements {
                        requests: Some(BTreeMap::from([(
                            "memory".to_owned(),
                            Quantity(format!("{req}Mi")),
                        )])),
                        ..Default::default()
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        });
        let ws = ((i * 7919) % 200) as u64 * (1 << 20);
        let memory = MemoryStats {
            working_set_bytes: Some(ws),
            ..Default::default()
        };
        stats.push(PodStats {
            pod_ref: PodReference {
                uid,
                ..Default::default()
            },
            memory: Some(memory.clone()),
            containers: vec![ContainerStats {
                name: "app".into(),
                memory: Some(memory),
                ..Default::default()
            }],
            ..Default::default()
        });
    }
    (pods, stats)
}

fn bench_rank(c: &mut Criterion) {
    let (pods, stats_v) = pods(1000);
    let stats: HashMap<&str, &PodStats> = stats_v
        .iter()
        .map(|s| (s.pod_ref.uid.as_str(), s))
        .collect();
    c.bench_function("rank_memory_pressure_1000_pods", |b| {
        b.iter(|| {
            let mut refs: Vec<&Pod> = pods.iter().collect();
            rank(&mut refs, &stats, &RankFunc::Memory);
            black_box(refs[0]);
        })
    });
}

fn bench_synchronize(c: &mut Criterion) {
    let (pods, stats) = pods(1000);
    let summary = Summary {
        node: NodeStats {
            memory: Some(MemoryStats {
                available_bytes: Some(50 << 20),
                working_set_bytes: Some(8 << 30),
                usage_bytes: Some(9 << 30),
                ..Default::default()
            }),
            ..Default::default()
        },
        pods: stats,
    };
    let provider = Arc::new(FakeSummaryProvider::new(summary));
    let killer = Arc::new(RecordingKiller::default());
    let manager = Manager::with_clock(
        Config {
            thresholds: vec![Threshold::hard(
                Signal::MemoryAvailable,
                ThresholdValue::Quantity(100 << 20),
            )],
            ..Default::default()
        },
        provider,
        killer,
        Arc::new(FakeClock::new()),
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    c.bench_function("synchronize_1000_pods_memory_pressure", |b| {
        b.iter(|| {
            let ev = rt.block_on(manager.synchronize(&pods)).expect("sync");
            black_box(ev.is_some());
        })
    });
}

fn bench_backoff(c: &mut Criterion) {
    let clock = Arc::new(FakeClock::new());
    let b = Backoff::crash_loop().clock(clock.clone());
    for i in 0..1000 {
        b.next_now(&format!("pod-{i}_default_uid_app_abc"));
    }
    let key = "pod-500_default_uid_app_abc";
    c.bench_function("backoff_check_and_next_1000_keys", |bn| {
        bn.iter(|| {
            let in_backoff = b.is_in_backoff_since(key, clock_now(&clock));
            if !in_backoff {
                b.next_now(key);
            }
            black_box(in_backoff)
        })
    });
}

fn clock_now(c: &FakeClock) -> std::time::Instant {
    use kubelet_eviction::Clock;
    c.now()
}

criterion_group!(benches, bench_rank, bench_synchronize, bench_backoff);
criterion_main!(benches);
