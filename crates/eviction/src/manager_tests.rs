//! Manager tests in the shape of upstream `eviction_manager_test.go`
//! (`TestMemoryPressure`, `TestDiskPressureNodeFs`, `TestMinReclaim`,
//! `TestNodeReclaimFuncs`, `TestPIDPressure`, `TestCriticalPodsAreNotEvicted`,
//! `TestAllocatableMemoryPressure`, `TestAdmit*`) with a fake summary and
//! a fake clock.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use k8s_openapi::api::core::v1::{Pod, PodStatus, Toleration};

use crate::backoff::FakeClock;
use crate::manager::*;
use crate::rank::DiskLayout;
use crate::summary::FakeSummaryProvider;
use crate::testutil::{pod, pod_stats_mem};
use crate::threshold::*;
use kubelet_container::stats::*;

const MI: u64 = 1 << 20;
const GI: u64 = 1 << 30;

fn node_mem(available: u64, capacity: u64) -> MemoryStats {
    MemoryStats {
        available_bytes: Some(available),
        working_set_bytes: Some(capacity - available),
        usage_bytes: Some(capacity - available),
        ..Default::default()
    }
}

fn summary(available: u64, pods: &[(&Pod, u64)]) -> Summary {
    Summary {
        node: NodeStats {
            memory: Some(node_mem(available, 2 * GI)),
            ..Default::default()
        },
        pods: pods.iter().map(|(p, ws)| pod_stats_mem(p, *ws)).collect(),
    }
}

struct Bed {
    clock: Arc<FakeClock>,
    summary: Arc<FakeSummaryProvider>,
    killer: Arc<RecordingKiller>,
    manager: Manager,
}

fn bed(thresholds: Vec<Threshold>, initial: Summary) -> Bed {
    bed_with(
        Config {
            thresholds,
            max_pod_grace_period_seconds: 5,
            ..Default::default()
        },
        initial,
    )
}

fn bed_with(config: Config, initial: Summary) -> Bed {
    let clock = Arc::new(FakeClock::new());
    let summary = Arc::new(FakeSummaryProvider::new(initial));
    let killer = Arc::new(RecordingKiller::default());
    let manager = Manager::with_clock(config, summary.clone(), killer.clone(), clock.clone());
    Bed {
        clock,
        summary,
        killer,
        manager,
    }
}

fn memory_thresholds() -> Vec<Threshold> {
    vec![
        Threshold::hard(Signal::MemoryAvailable, ThresholdValue::Quantity(GI as i64)),
        Threshold {
            grace_period: Duration::from_secs(120),
            ..Threshold::hard(
                Signal::MemoryAvailable,
                ThresholdValue::Quantity(2 * GI as i64 - 1),
            )
        },
    ]
}

fn best_effort(name: &str) -> Pod {
    pod(name, 0, "", "")
}

fn burstable(name: &str, req: &str) -> Pod {
    pod(name, 0, req, "")
}

fn name(p: &Pod) -> &str {
    p.metadata.name.as_deref().unwrap_or_default()
}

/// Upstream `TestMemoryPressure`, step by step.
#[tokio::test]
async fn memory_pressure_soft_then_hard_then_transition() {
    let be = best_effort("best-effort-high");
    let bu = burstable("burstable-low", "100Mi");
    let pods = vec![be.clone(), bu.clone()];
    let usage = [(&be, 400 * MI), (&bu, 300 * MI)];
    // Capacity 2Gi: the soft threshold is "below 2Gi-1"; 3Gi available = no pressure.
    let b = bed(
        vec![
            Threshold::hard(Signal::MemoryAvailable, ThresholdValue::Quantity(GI as i64)),
            Threshold {
                grace_period: Duration::from_secs(120),
                ..Threshold::hard(
                    Signal::MemoryAvailable,
                    ThresholdValue::Quantity(1536 * MI as i64),
                )
            },
        ],
        summary(1800 * MI, &usage),
    );
    let m = &b.manager;

    // no pressure
    assert!(m.synchronize(&pods).await.expect("sync").is_none());
    assert!(!m.is_under_memory_pressure());
    assert!(m.admit(&best_effort("new")).admit);

    // soft pressure: condition at once, no eviction before the grace period
    b.summary.set(summary(1500 * MI, &usage));
    b.clock.advance(Duration::from_secs(60));
    assert!(m.synchronize(&pods).await.expect("sync").is_none());
    assert!(
        m.is_under_memory_pressure(),
        "soft threshold met: condition reported"
    );
    let r = m.admit(&best_effort("new"));
    assert!(!r.admit);
    assert_eq!(r.reason, "Evicted");
    assert_eq!(r.message, "The node had condition: [MemoryPressure]. ");
    assert!(
        m.admit(&burstable("new-burstable", "10Mi")).admit,
        "non-BestEffort admitted"
    );

    b.clock.advance(Duration::from_secs(119));
    assert!(
        m.synchronize(&pods).await.expect("sync").is_none(),
        "grace not yet satisfied"
    );

    // grace period satisfied: soft eviction, grace = min(pod, max 5)
    b.clock.advance(Duration::from_secs(1));
    let ev = m.synchronize(&pods).await.expect("sync").expect("evicted");
    assert_eq!(
        name(&ev.pod),
        "best-effort-high",
        "over request (0) with the larger excess"
    );
    assert_eq!(ev.grace_period_seconds, 5);
    assert_eq!(ev.signal, Some(Signal::MemoryAvailable));
    assert_eq!(b.killer.evictions().len(), 1);

    // hard pressure: grace 1, one pod per cycle
    b.summary.set(summary(500 * MI, &usage));
    b.clock.advance(Duration::from_secs(1));
    let ev = m.synchronize(&pods).await.expect("sync").expect("evicted");
    assert_eq!(
        ev.grace_period_seconds,
        IMMEDIATE_EVICTION_GRACE_PERIOD_SECONDS
    );
    assert_eq!(b.killer.evictions().len(), 2, "exactly one more");

    // pressure gone: the condition holds for the transition period
    b.summary.set(summary(1900 * MI, &usage));
    b.clock.advance(Duration::from_secs(1));
    assert!(m.synchronize(&pods).await.expect("sync").is_none());
    assert!(m.is_under_memory_pressure(), "transition period");
    assert!(!m.admit(&best_effort("new")).admit);
    b.clock.advance(Duration::from_secs(298));
    assert!(m.synchronize(&pods).await.expect("sync").is_none());
    assert!(
        m.is_under_memory_pressure(),
        "299 s since last observed < 5 min"
    );
    b.clock.advance(Duration::from_secs(1));
    assert!(m.synchronize(&pods).await.expect("sync").is_none());
    assert!(!m.is_under_memory_pressure(), "cleared after 5 min");
    assert!(m.admit(&best_effort("new")).admit);
    assert_eq!(b.killer.evictions().len(), 2);
}

#[tokio::test]
async fn soft_grace_uses_the_smaller_of_pod_and_max() {
    let mut p = burstable("p", "1Mi");
    if let Some(s) = p.spec.as_mut() {
        s.termination_grace_period_seconds = Some(2);
    }
    let b = bed(memory_thresholds(), summary(100 * MI, &[(&p, 500 * MI)]));
    // only the soft one: drop the hard threshold by using a soft-only config
    let b2 = bed(
        vec![memory_thresholds()[1].clone()],
        summary(100 * MI, &[(&p, 500 * MI)]),
    );
    drop(b);
    assert!(
        b2.manager
            .synchronize(std::slice::from_ref(&p))
            .await
            .expect("sync")
            .is_none()
    );
    b2.clock.advance(Duration::from_secs(120));
    let ev = b2
        .manager
        .synchronize(std::slice::from_ref(&p))
        .await
        .expect("sync")
        .expect("evicted");
    assert_eq!(ev.grace_period_seconds, 2, "pod's 2 s < max 5 s");
}

#[tokio::test]
async fn evicted_status_and_message_as_upstream() {
    let p = burstable("hog", "100Mi");
    let b = bed(
        vec![Threshold::hard(
            Signal::MemoryAvailable,
            ThresholdValue::Quantity(100 * MI as i64),
        )],
        summary(50 * MI, &[(&p, 300 * MI)]),
    );
    let ev = b
        .manager
        .synchronize(std::slice::from_ref(&p))
        .await
        .expect("sync")
        .expect("evicted");
    assert_eq!(
        ev.status.message,
        "The node was low on resource: memory. Threshold quantity: 100Mi, available: 50Mi. \
         Container c was using 300Mi, request is 100Mi, has larger consumption of memory. "
    );
    assert_eq!(
        ev.status
            .annotations
            .get("offending_containers")
            .map(String::as_str),
        Some("c")
    );
    assert_eq!(
        ev.status
            .annotations
            .get("offending_containers_usage")
            .map(String::as_str),
        Some("300Mi")
    );
    assert_eq!(
        ev.status
            .annotations
            .get("starved_resource")
            .map(String::as_str),
        Some("memory")
    );
    let mut st = PodStatus::default();
    ev.status.apply_to(&mut st);
    assert_eq!(st.phase.as_deref(), Some("Failed"));
    assert_eq!(st.reason.as_deref(), Some("Evicted"));
    assert!(pod_is_evicted(&st));
    let cond = st
        .conditions
        .as_ref()
        .and_then(|c| c.first())
        .expect("condition");
    assert_eq!(cond.type_, "DisruptionTarget");
    assert_eq!(cond.reason.as_deref(), Some("TerminationByKubelet"));
}

/// Upstream `evictPod` and `synchronize`'s events: `EvictionThresholdMet`
/// on the node when reclaim begins, `Evicted` with the message and
/// annotations on the pod evicted; none for a critical pod.
#[tokio::test]
async fn evictions_are_recorded_as_events() {
    use kubelet_container::events::{EventType, FakeRecorder, node_ref, pod_ref};
    let p = burstable("hog", "100Mi");
    let crit = critical("static");
    let events = Arc::new(FakeRecorder::new());
    let mut b = bed(
        vec![Threshold::hard(
            Signal::MemoryAvailable,
            ThresholdValue::Quantity(100 * MI as i64),
        )],
        summary(50 * MI, &[(&p, 300 * MI)]),
    );
    b.manager = b
        .manager
        .with_event_recorder(events.clone(), node_ref("node-a"));
    let ev = b
        .manager
        .synchronize(std::slice::from_ref(&p))
        .await
        .expect("sync")
        .expect("evicted");
    let recorded = events.take();
    assert_eq!(recorded.len(), 2, "{recorded:?}");
    assert_eq!(recorded[0].object, node_ref("node-a"));
    assert_eq!(
        recorded[0].to_string(),
        "Warning EvictionThresholdMet Attempting to reclaim memory"
    );
    assert_eq!(recorded[1].object, pod_ref(&p));
    assert_eq!(recorded[1].event_type, EventType::Warning);
    assert_eq!(recorded[1].reason, "Evicted");
    assert_eq!(recorded[1].message, ev.status.message);
    assert_eq!(recorded[1].annotations, ev.status.annotations);
    assert_eq!(
        recorded[1]
            .annotations
            .get("starved_resource")
            .map(String::as_str),
        Some("memory")
    );

    // Only a critical pod left: reclaim is attempted, nothing evicted.
    b.summary.set(summary(50 * MI, &[(&crit, 300 * MI)]));
    b.clock.advance(Duration::from_secs(1));
    assert!(
        b.manager
            .synchronize(std::slice::from_ref(&crit))
            .await
            .expect("sync")
            .is_none()
    );
    assert_eq!(
        events.strings(),
        ["Warning EvictionThresholdMet Attempting to reclaim memory"]
    );
}

fn critical(name: &str) -> Pod {
    let mut p = best_effort(name);
    p.metadata.annotations = Some(BTreeMap::from([(
        "kubernetes.io/config.source".to_owned(),
        "file".to_owned(),
    )]));
    p
}

/// Upstream `TestCriticalPodsAreNotEvicted` and `TestAdmitCriticalPod`.
#[tokio::test]
async fn critical_pods_are_not_evicted_and_always_admitted() {
    let crit = critical("static");
    let b = bed(
        vec![Threshold::hard(
            Signal::MemoryAvailable,
            ThresholdValue::Quantity(GI as i64),
        )],
        summary(100 * MI, &[(&crit, GI)]),
    );
    assert!(
        b.manager
            .synchronize(std::slice::from_ref(&crit))
            .await
            .expect("sync")
            .is_none()
    );
    assert!(b.killer.evictions().is_empty());
    assert!(b.manager.is_under_memory_pressure());
    assert!(b.manager.admit(&critical("another")).admit);
    let mut high = best_effort("system");
    if let Some(s) = high.spec.as_mut() {
        s.priority = Some(2_000_000_000);
    }
    assert!(b.manager.admit(&high).admit, "priority >= system critical");

    // with a regular pod too, the regular one goes even though it uses less
    let other = best_effort("regular");
    b.summary
        .set(summary(100 * MI, &[(&crit, GI), (&other, MI)]));
    let ev = b
        .manager
        .synchronize(&[crit.clone(), other.clone()])
        .await
        .expect("sync")
        .expect("evicted");
    assert_eq!(name(&ev.pod), "regular");
}

/// Upstream `TestAdmitUnderNodeConditions` and the toleration case.
#[tokio::test]
async fn admission_under_each_pressure() {
    let be = best_effort("be");
    let bu = burstable("bu", "1Mi");
    let mut tolerant = best_effort("tolerant");
    if let Some(s) = tolerant.spec.as_mut() {
        s.tolerations = Some(vec![Toleration {
            key: Some(TAINT_NODE_MEMORY_PRESSURE.into()),
            operator: Some("Exists".into()),
            effect: Some("NoSchedule".into()),
            ..Default::default()
        }]);
    }
    let mut wrong = best_effort("wrong");
    if let Some(s) = wrong.spec.as_mut() {
        s.tolerations = Some(vec![Toleration {
            key: Some("node.kubernetes.io/disk-pressure".into()),
            operator: Some("Exists".into()),
            effect: Some("NoSchedule".into()),
            ..Default::default()
        }]);
    }
    let b = bed(
        vec![
            Threshold::hard(Signal::MemoryAvailable, ThresholdValue::Quantity(GI as i64)),
            Threshold::hard(Signal::NodeFsAvailable, ThresholdValue::Percentage(0.1)),
        ],
        summary(100 * MI, &[]),
    );
    // memory only (nodefs has no observation)
    let _ = b.manager.synchronize(&[]).await.expect("sync");
    assert_eq!(
        b.manager.node_conditions(),
        vec![NodeCondition::MemoryPressure]
    );
    assert!(!b.manager.admit(&be).admit);
    assert!(b.manager.admit(&bu).admit);
    assert!(b.manager.admit(&tolerant).admit);
    assert!(!b.manager.admit(&wrong).admit);

    // disk too: everything non-critical rejected
    b.summary.update(|s| {
        s.node.fs = Some(FsStats {
            available_bytes: Some(1),
            capacity_bytes: Some(100),
            ..Default::default()
        })
    });
    let _ = b.manager.synchronize(&[]).await.expect("sync");
    assert!(b.manager.is_under_disk_pressure());
    let r = b.manager.admit(&bu);
    assert!(!r.admit);
    assert_eq!(
        r.message,
        "The node had condition: [MemoryPressure DiskPressure]. "
    );
    assert!(!b.manager.admit(&tolerant).admit);
    assert!(b.manager.admit(&critical("c")).admit);
}

/// Upstream `TestMinReclaim`: once met, a threshold stays until
/// available exceeds threshold + minimum reclaim.
#[tokio::test]
async fn min_reclaim_keeps_the_threshold_until_reclaimed() {
    let p = best_effort("p");
    let b = bed(
        vec![Threshold {
            min_reclaim: Some(ThresholdValue::Quantity(500 * MI as i64)),
            ..Threshold::hard(Signal::MemoryAvailable, ThresholdValue::Quantity(GI as i64))
        }],
        summary(500 * MI, &[(&p, 100 * MI)]),
    );
    let pods = [p.clone()];
    assert!(b.manager.synchronize(&pods).await.expect("sync").is_some());
    // 1.2Gi available: above 1Gi but below 1Gi + 500Mi: still evicting
    b.summary.set(summary(1229 * MI, &[(&p, 100 * MI)]));
    assert!(b.manager.synchronize(&pods).await.expect("sync").is_some());
    // 1.6Gi: reclaimed
    b.summary.set(summary(1640 * MI, &[(&p, 100 * MI)]));
    assert!(b.manager.synchronize(&pods).await.expect("sync").is_none());
    assert_eq!(b.killer.evictions().len(), 2);
}

struct Gc {
    summary: Arc<FakeSummaryProvider>,
    containers: AtomicUsize,
    images: AtomicUsize,
    frees: bool,
}

#[async_trait]
impl ContainerGc for Gc {
    async fn delete_all_unused_containers(&self) -> Result<(), String> {
        self.containers.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

#[async_trait]
impl ImageGc for Gc {
    async fn delete_unused_images(&self) -> Result<(), String> {
        self.images.fetch_add(1, Ordering::SeqCst);
        if self.frees {
            self.summary.update(|s| {
                if let Some(fs) = s.node.fs.as_mut() {
                    fs.available_bytes = Some(50 * GI);
                }
            });
        }
        Ok(())
    }
}

fn disk_summary(available: u64, pods: &[(&Pod, u64)]) -> Summary {
    Summary {
        node: NodeStats {
            memory: Some(node_mem(GI, 2 * GI)),
            fs: Some(FsStats {
                available_bytes: Some(available),
                capacity_bytes: Some(100 * GI),
                inodes_free: Some(1_000_000),
                inodes: Some(2_000_000),
                ..Default::default()
            }),
            ..Default::default()
        },
        pods: pods
            .iter()
            .map(|(p, used)| {
                let mut s = pod_stats_mem(p, 0);
                s.containers[0].rootfs = Some(FsStats {
                    used_bytes: Some(*used),
                    inodes_used: Some(10),
                    ..Default::default()
                });
                s.containers[0].logs = Some(FsStats {
                    used_bytes: Some(0),
                    ..Default::default()
                });
                s
            })
            .collect(),
    }
}

/// Upstream `TestNodeReclaimFuncs` / `TestDiskPressureNodeFs`.
#[tokio::test]
async fn disk_pressure_reclaims_node_resources_first() {
    let small = pod("small", 0, "", "");
    let big = pod("big", 0, "", "");
    let pods = vec![small.clone(), big.clone()];
    let usage = [(&small, GI), (&big, 5 * GI)];
    for (frees, want_eviction) in [(true, false), (false, true)] {
        let b = bed(
            vec![Threshold::hard(
                Signal::NodeFsAvailable,
                ThresholdValue::Percentage(0.1),
            )],
            disk_summary(5 * GI, &usage),
        );
        let gc = Arc::new(Gc {
            summary: b.summary.clone(),
            containers: AtomicUsize::new(0),
            images: AtomicUsize::new(0),
            frees,
        });
        let m = Manager::with_clock(
            b.manager.config().clone(),
            b.summary.clone(),
            b.killer.clone(),
            b.clock.clone(),
        )
        .with_gc(gc.clone(), gc.clone());
        let ev = m.synchronize(&pods).await.expect("sync");
        assert!(m.is_under_disk_pressure());
        assert_eq!(gc.containers.load(Ordering::SeqCst), 1, "containers first");
        assert_eq!(gc.images.load(Ordering::SeqCst), 1, "then images");
        assert_eq!(ev.is_some(), want_eviction, "frees={frees}");
        if let Some(ev) = ev {
            assert_eq!(name(&ev.pod), "big");
            assert!(
                ev.status
                    .message
                    .starts_with("The node was low on resource: ephemeral-storage. "),
                "{}",
                ev.status.message
            );
        }
    }
}

#[tokio::test]
async fn dedicated_imagefs_nodefs_pressure_skips_gc() {
    let p = pod("p", 0, "", "");
    let b = bed_with(
        Config {
            thresholds: vec![Threshold::hard(
                Signal::NodeFsAvailable,
                ThresholdValue::Percentage(0.1),
            )],
            disk_layout: DiskLayout {
                dedicated_image_fs: true,
                split_container_image_fs: false,
            },
            ..Default::default()
        },
        disk_summary(GI, &[(&p, GI)]),
    );
    let gc = Arc::new(Gc {
        summary: b.summary.clone(),
        containers: AtomicUsize::new(0),
        images: AtomicUsize::new(0),
        frees: true,
    });
    let m = Manager::with_clock(
        b.manager.config().clone(),
        b.summary.clone(),
        b.killer.clone(),
        b.clock.clone(),
    )
    .with_gc(gc.clone(), gc.clone());
    assert!(
        m.synchronize(std::slice::from_ref(&p))
            .await
            .expect("sync")
            .is_some()
    );
    assert_eq!(
        gc.images.load(Ordering::SeqCst),
        0,
        "nodefs with an imagefs: no image GC"
    );
}

/// Upstream `TestPIDPressure`.
#[tokio::test]
async fn pid_pressure_evicts_by_priority_then_processes() {
    let low = pod("low", 0, "", "");
    let high = pod("high", 1000, "", "");
    let mut s = Summary {
        node: NodeStats {
            rlimit: Some(RlimitStats {
                max_pid: Some(10_000),
                num_of_running_processes: Some(9_900),
                time: None,
            }),
            ..Default::default()
        },
        pods: vec![pod_stats_mem(&low, 0), pod_stats_mem(&high, 0)],
    };
    s.pods[0].process_stats = Some(ProcessStats {
        process_count: Some(10),
    });
    s.pods[1].process_stats = Some(ProcessStats {
        process_count: Some(5_000),
    });
    let b = bed(
        vec![Threshold::hard(
            Signal::PidAvailable,
            ThresholdValue::Quantity(1200),
        )],
        s,
    );
    let ev = b
        .manager
        .synchronize(&[high.clone(), low.clone()])
        .await
        .expect("sync")
        .expect("evicted");
    assert_eq!(name(&ev.pod), "low");
    assert!(b.manager.is_under_pid_pressure());
    assert!(
        !b.manager.admit(&burstable("x", "1Mi")).admit,
        "PID pressure rejects all"
    );
    assert!(
        ev.status.message.starts_with(
            "The node was low on resource: pids. Threshold quantity: 1200, available: 100. "
        ),
        "{}",
        ev.status.message
    );
}

#[tokio::test]
async fn allocatable_memory_pressure() {
    let p = best_effort("p");
    let t = ThresholdConfig {
        hard: BTreeMap::from([("memory.available".to_owned(), "100Mi".to_owned())]),
        enforce_node_allocatable: vec!["pods".into()],
        ..Default::default()
    }
    .parse()
    .expect("parse");
    let mut s = summary(GI, &[(&p, 900 * MI)]);
    s.node.system_containers = vec![ContainerStats {
        name: SYSTEM_CONTAINER_PODS.into(),
        memory: Some(MemoryStats {
            available_bytes: Some(50 * MI),
            working_set_bytes: Some(950 * MI),
            ..Default::default()
        }),
        ..Default::default()
    }];
    let b = bed(t, s);
    let ev = b
        .manager
        .synchronize(std::slice::from_ref(&p))
        .await
        .expect("sync")
        .expect("evicted");
    assert_eq!(ev.signal, Some(Signal::AllocatableMemoryAvailable));
}

#[tokio::test]
async fn stale_stats_do_not_evict_twice() {
    // upstream thresholdsUpdatedStats: same stat timestamp -> no new eviction
    let p = best_effort("p");
    let t0 = stats_time(1_700_000_000);
    let mut s = summary(100 * MI, &[(&p, 100 * MI)]);
    if let Some(m) = s.node.memory.as_mut() {
        m.time = Some(t0);
    }
    let b = bed(
        vec![Threshold::hard(
            Signal::MemoryAvailable,
            ThresholdValue::Quantity(GI as i64),
        )],
        s,
    );
    assert!(
        b.manager
            .synchronize(std::slice::from_ref(&p))
            .await
            .expect("sync")
            .is_some()
    );
    assert!(
        b.manager
            .synchronize(std::slice::from_ref(&p))
            .await
            .expect("sync")
            .is_none(),
        "same stats"
    );
    b.summary.update(|s| {
        if let Some(m) = s.node.memory.as_mut() {
            m.time = Some(stats_time(1_700_000_010));
        }
    });
    assert!(
        b.manager
            .synchronize(std::slice::from_ref(&p))
            .await
            .expect("sync")
            .is_some(),
        "fresh stats"
    );
    b.summary.update(|s| {
        if let Some(m) = s.node.memory.as_mut() {
            m.time = Some(stats_time(1_700_000_005));
        }
    });
    assert!(
        b.manager
            .synchronize(std::slice::from_ref(&p))
            .await
            .expect("sync")
            .is_none(),
        "older stats are not fresh (upstream `After`)"
    );
}

/// A stats timestamp `secs` after the epoch.
fn stats_time(secs: u64) -> k8s_openapi::apimachinery::pkg::apis::meta::v1::Time {
    from_system_time(std::time::UNIX_EPOCH + Duration::from_secs(secs)).expect("in range")
}

#[tokio::test]
async fn summary_failure_is_not_an_eviction() {
    let p = best_effort("p");
    let b = bed(memory_thresholds(), summary(100 * MI, &[(&p, 100 * MI)]));
    b.summary.fail();
    assert!(
        b.manager
            .synchronize(std::slice::from_ref(&p))
            .await
            .expect("sync")
            .is_none()
    );
    assert!(b.manager.node_conditions().is_empty());
}

#[tokio::test]
async fn local_storage_limits_evict_with_immediate_grace() {
    use k8s_openapi::api::core::v1::{EmptyDirVolumeSource, Volume};
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    let mut p = pod("scratch", 0, "", "");
    if let Some(s) = p.spec.as_mut() {
        s.volumes = Some(vec![Volume {
            name: "tmp".into(),
            empty_dir: Some(EmptyDirVolumeSource {
                size_limit: Some(Quantity("1Mi".into())),
                ..Default::default()
            }),
            ..Default::default()
        }]);
    }
    let mut s = summary(GI, &[(&p, MI)]);
    s.pods[0].volume_stats = vec![VolumeStats {
        name: "tmp".into(),
        fs: FsStats {
            used_bytes: Some(2 * MI),
            ..Default::default()
        },
        pvc_ref: None,
    }];
    let b = bed(vec![], s);
    let ev = b
        .manager
        .synchronize(std::slice::from_ref(&p))
        .await
        .expect("sync")
        .expect("evicted");
    assert_eq!(
        ev.status.message,
        "Usage of EmptyDir volume \"tmp\" exceeds the limit \"1Mi\". "
    );
    assert_eq!(ev.signal, None);
    assert_eq!(
        ev.grace_period_seconds,
        IMMEDIATE_EVICTION_GRACE_PERIOD_SECONDS
    );
}

#[tokio::test(start_paused = true)]
async fn run_loop_evicts_waits_for_cleanup_and_wakes_early() {
    let p = best_effort("p");
    let b = bed(
        vec![Threshold::hard(
            Signal::MemoryAvailable,
            ThresholdValue::Quantity(GI as i64),
        )],
        summary(2 * GI - 1, &[(&p, 100 * MI)]),
    );
    let Bed {
        summary,
        killer,
        manager,
        ..
    } = b;
    let m = Arc::new(manager);
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let pods = vec![p.clone()];
    let task = tokio::spawn(m.clone().run(move || pods.clone(), |_| true, async {
        let _ = rx.await;
    }));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let calls_before = summary.calls();
    assert!(calls_before >= 1);
    // pressure appears; a wake-up synchronizes before the 10 s period
    summary.set(summary_of(100 * MI, &p));
    m.wake();
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(killer.evictions().len(), 1, "woken, not waiting 10 s");
    let _ = tx.send(());
    assert!(task.await.is_ok());
}

fn summary_of(available: u64, p: &Pod) -> Summary {
    summary(available, &[(p, 100 * MI)])
}

mod props {
    use super::*;
    use crate::rank::{RankFunc, rank};
    use proptest::prelude::*;
    use std::collections::HashMap;

    fn arb_pods() -> impl Strategy<Value = Vec<(i32, u64, u64, bool, bool)>> {
        // priority, request Mi, usage Mi, has stats, critical
        prop::collection::vec(
            (-5i32..5, 0u64..8, 0u64..10, any::<bool>(), any::<bool>()),
            1..25,
        )
    }

    fn build(spec: &[(i32, u64, u64, bool, bool)]) -> (Vec<Pod>, Vec<PodStats>) {
        let mut pods = Vec::new();
        let mut stats = Vec::new();
        for (i, (prio, req, usage, has, crit)) in spec.iter().enumerate() {
            let req = if *req == 0 {
                String::new()
            } else {
                format!("{req}Mi")
            };
            let mut p = pod(&format!("p{i}"), *prio, &req, "");
            if *crit {
                p.metadata.annotations = Some(BTreeMap::from([(
                    "kubernetes.io/config.source".to_owned(),
                    "file".to_owned(),
                )]));
            }
            if *has {
                stats.push(pod_stats_mem(&p, usage * MI));
            }
            pods.push(p);
        }
        (pods, stats)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// The ranking is a total order: antisymmetric and transitive, and
        /// the sorted output is consistent with pairwise comparison.
        #[test]
        fn ranking_is_a_total_order(spec in arb_pods()) {
            let (pods, stats_v) = build(&spec);
            let stats: HashMap<&str, &PodStats> = stats_v.iter().map(|s| (s.pod_ref.uid.as_str(), s)).collect();
            for func in [RankFunc::Memory, RankFunc::Pids] {
                let refs: Vec<&Pod> = pods.iter().collect();
                for a in &refs {
                    for b in &refs {
                        let ab = crate::rank::compare(a, b, &stats, &func);
                        let ba = crate::rank::compare(b, a, &stats, &func);
                        prop_assert_eq!(ab, ba.reverse());
                        for c in &refs {
                            let bc = crate::rank::compare(b, c, &stats, &func);
                            if ab.is_le() && bc.is_le() {
                                prop_assert!(crate::rank::compare(a, c, &stats, &func).is_le());
                            }
                        }
                    }
                }
                let mut sorted = refs.clone();
                rank(&mut sorted, &stats, &func);
                for w in sorted.windows(2) {
                    prop_assert!(crate::rank::compare(w[0], w[1], &stats, &func).is_le());
                }
            }
        }

        /// A critical pod is never evicted while a non-critical pod is
        /// active; with only critical pods, nothing is.
        #[test]
        fn critical_never_chosen(spec in arb_pods()) {
            let rt = tokio::runtime::Builder::new_current_thread().build().map_err(|e| TestCaseError::fail(e.to_string()))?;
            let (pods, stats) = build(&spec);
            let b = bed(
                vec![Threshold::hard(Signal::MemoryAvailable, ThresholdValue::Quantity(GI as i64))],
                Summary { node: NodeStats { memory: Some(node_mem(10 * MI, 2 * GI)), ..Default::default() }, pods: stats },
            );
            let ev = rt.block_on(b.manager.synchronize(&pods)).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let any_regular = pods.iter().any(|p| !kubelet_container::qos::is_critical_pod(p));
            match ev {
                Some(ev) => prop_assert!(!kubelet_container::qos::is_critical_pod(&ev.pod)),
                None => prop_assert!(!any_regular),
            }
        }
    }
}

struct CountingNotifier(AtomicUsize);

impl ThresholdNotifier for CountingNotifier {
    fn update_threshold(&self, _summary: &Summary) -> Result<(), crate::Error> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
    fn description(&self) -> String {
        "counting".into()
    }
}

#[tokio::test]
async fn notifiers_rearm_every_10s_and_after_a_wake() {
    let b = bed(memory_thresholds(), summary(1900 * MI, &[]));
    let n = Arc::new(CountingNotifier(AtomicUsize::new(0)));
    b.manager.add_notifier(n.clone());
    let _ = b.manager.synchronize(&[]).await.expect("sync");
    assert_eq!(n.0.load(Ordering::SeqCst), 1, "first pass arms");
    b.clock.advance(Duration::from_secs(5));
    let _ = b.manager.synchronize(&[]).await.expect("sync");
    assert_eq!(n.0.load(Ordering::SeqCst), 1, "not again within 10 s");
    b.manager.wake();
    let _ = b.manager.synchronize(&[]).await.expect("sync");
    assert_eq!(
        n.0.load(Ordering::SeqCst),
        2,
        "re-armed after a notification"
    );
    b.clock.advance(Duration::from_secs(11));
    let _ = b.manager.synchronize(&[]).await.expect("sync");
    assert_eq!(n.0.load(Ordering::SeqCst), 3, "and every 10 s");
}
