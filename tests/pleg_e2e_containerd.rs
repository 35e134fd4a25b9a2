//! Both PLEGs against a real containerd from `scripts/testbed`: 10 pods
//! whose container exits (code 7) half a second after it starts, restarted
//! 5 times each; every one of the 50 exits must arrive as `ContainerDied`
//! with a fresh cache entry, through the evented PLEG (CRI container
//! events) in milliseconds and through the generic PLEG within its 1 s
//! relist period. The latency from the container's `finished_at` to the
//! event is printed for both.
//!
//! containerd 1.7 hands each event to one `GetContainerEvents` stream only
//! (its CRI plugin has one event channel that every stream reads from), so
//! no other subscriber may run beside the evented PLEG here.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use k8s_openapi::api::core::v1::Pod;
use kubelet_cri_client::RemoteRuntime;
use kubelet_kuberuntime::config::ConfigOptions;
use kubelet_kuberuntime::{ContainerState, PodStatus, Runtime, RuntimeManager, RuntimeReader};
use kubelet_pleg::{
    EventedConfig, EventedPleg, GenericPleg, PlegConfig, PodCache, PodLifecycleEventGenerator,
    PodLifecycleEventType,
};
use kubelet_testbed::Testbed;

const PODS: usize = 10;
const ROUNDS: usize = 5;

fn pod(i: usize) -> Pod {
    serde_saphyr::from_str(&format!(
        r#"
metadata: {{name: exiter-{i}, namespace: default, uid: 91e90000-0000-4000-8000-0000000000{i:02}}}
spec:
  terminationGracePeriodSeconds: 1
  restartPolicy: Always
  containers:
  - name: app
    image: localhost/busybox:latest
    imagePullPolicy: IfNotPresent
    command: [sh, -c, "sleep 0.5; exit 7"]
"#
    ))
    .expect("manifest")
}

fn uid(p: &Pod) -> String {
    p.metadata.uid.clone().unwrap_or_default()
}

async fn status(m: &RuntimeManager, p: &Pod) -> PodStatus {
    m.get_pod_status(
        &uid(p),
        p.metadata.name.as_deref().unwrap_or_default(),
        "default",
    )
    .await
    .expect("status")
}

fn wall_nanos() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or_default()
}

/// For each container ID: when `ContainerDied` arrived (wall nanos) and
/// whether the cache then showed it exited with code 7.
type Seen = Arc<Mutex<HashMap<String, (i64, bool)>>>;

fn collect(pleg: &dyn PodLifecycleEventGenerator, cache: Arc<PodCache>) -> Seen {
    let seen: Seen = Arc::default();
    let mut rx = pleg.watch().expect("receiver");
    let out = seen.clone();
    tokio::spawn(async move {
        while let Some(e) = rx.recv().await {
            let at = wall_nanos();
            if e.kind != PodLifecycleEventType::ContainerDied {
                continue;
            }
            let fresh = cache.get(&e.pod_uid).is_ok_and(|s| {
                s.container_statuses.iter().any(|c| {
                    c.id == e.data && c.state == ContainerState::Exited && c.exit_code == 7
                })
            });
            out.lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .entry(e.data)
                .or_insert((at, fresh));
        }
    });
    seen
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn summary(name: &str, mut ms: Vec<f64>) -> (f64, f64) {
    ms.sort_by(f64::total_cmp);
    let (p50, p90, p99, max) = (
        percentile(&ms, 0.5),
        percentile(&ms, 0.9),
        percentile(&ms, 0.99),
        ms[ms.len() - 1],
    );
    eprintln!(
        "{name}: exit-to-event latency over {} exits: p50 {p50:.1} ms, p90 {p90:.1} ms, p99 {p99:.1} ms, max {max:.1} ms",
        ms.len()
    );
    (p50, p99)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_exits_reach_both_plegs_with_fresh_cache_entries() {
    let Some(bed) = Testbed::start() else { return };
    let cri = RemoteRuntime::builder(bed.endpoint())
        .connect()
        .await
        .expect("connect");
    let opts = ConfigOptions {
        pod_logs_dir: bed.log_dir(),
        ..ConfigOptions::new(Arc::new(kubelet_cm::StaticResources {
            cgroup_root: kubelet_cm::CgroupName::new([bed.cgroup_root()]),
            ..Default::default()
        }))
    };
    // Containers exit and are restarted in quick rounds: no crash-loop
    // backoff here (the kubelet's own tests cover it).
    let no_backoff = || {
        Arc::new(kubelet_container::flowcontrol::Backoff::new(
            Duration::ZERO,
            Duration::ZERO,
        ))
    };
    let manager = Arc::new(
        RuntimeManager::new(Arc::new(cri.clone()), opts).with_backoffs(no_backoff(), no_backoff()),
    );

    let evented_cache = Arc::new(PodCache::new());
    let evented = EventedPleg::new(
        manager.clone(),
        Arc::new(cri.clone()),
        evented_cache.clone(),
        EventedConfig::default(),
    );
    let generic_cache = Arc::new(PodCache::new());
    let generic = GenericPleg::new(
        manager.clone(),
        generic_cache.clone(),
        PlegConfig::default(),
    );
    let seen_evented = collect(&evented, evented_cache.clone());
    let seen_generic = collect(&generic, generic_cache.clone());
    evented.start().expect("start");
    generic.start().expect("start");
    // Let containerd register the subscription.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let has_events = bed.has_container_events();
    if has_events {
        assert!(
            evented.is_evented_in_use(),
            "containerd {}",
            bed.containerd_version()
        );
    } else {
        assert!(
            evented.fell_back(),
            "containerd 1.6: Unimplemented, fell back"
        );
        eprintln!(
            "containerd {}: no GetContainerEvents, the evented PLEG fell back to relisting",
            bed.containerd_version()
        );
    }

    let pods: Vec<Pod> = (0..PODS).map(pod).collect();
    let mut exits: Vec<(String, String)> = Vec::new(); // (pod uid, container id)
    for round in 0..ROUNDS {
        let mut round_ids = Vec::new();
        for p in &pods {
            let st = status(&manager, p).await;
            let r = manager.sync_pod(p, &st, &Default::default()).await;
            assert!(r.errors.is_empty(), "round {round}: {:?}", r.errors);
            assert_eq!(r.started_containers, ["app"], "round {round}");
            let st = status(&manager, p).await;
            let app = st.find_container_status_by_name("app").expect("app");
            assert_eq!(app.restart_count as usize, round);
            round_ids.push((uid(p), app.id.clone()));
        }
        // Wait for both PLEGs to see every exit of the round.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let all = |seen: &Seen| {
                let seen = seen
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                round_ids.iter().all(|(_, id)| seen.contains_key(id))
            };
            if all(&seen_evented) && all(&seen_generic) {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "round {round}: not every exit was seen: evented {}, generic {} of {}; evented in use {}, stream errors {}",
                round_ids
                    .iter()
                    .filter(|(_, id)| seen_evented
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .contains_key(id))
                    .count(),
                round_ids
                    .iter()
                    .filter(|(_, id)| seen_generic
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .contains_key(id))
                    .count(),
                round_ids.len(),
                evented.is_evented_in_use(),
                evented.metrics().stream_errors,
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        exits.extend(round_ids);
    }
    assert_eq!(exits.len(), PODS * ROUNDS);

    // finished_at of every exit, from the runtime.
    let mut finished = HashMap::new();
    for p in &pods {
        for c in status(&manager, p).await.container_statuses {
            assert_eq!((c.state, c.exit_code), (ContainerState::Exited, 7));
            finished.insert(c.id, c.finished_at);
        }
    }
    let latencies = |seen: &Seen, name: &str| {
        let seen = seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        exits
            .iter()
            .map(|(_, id)| {
                let (at, fresh) = seen[id];
                assert!(
                    fresh,
                    "{name}: the cache was not fresh at ContainerDied of {id}"
                );
                let done = finished[id];
                assert!(done > 0, "finished_at of {id}");
                (at - done) as f64 / 1e6
            })
            .collect::<Vec<f64>>()
    };
    let generic_ms = latencies(&seen_generic, "generic");
    let evented_ms = latencies(&seen_evented, "evented");
    let (generic_p50, generic_p99) = summary("generic PLEG (1 s relist)", generic_ms.clone());
    let (evented_p50, evented_p99) = summary(
        if has_events {
            "evented PLEG (CRI events)"
        } else {
            "evented PLEG (fallen back to a 1 s relist)"
        },
        evented_ms.clone(),
    );
    // The latencies are measurements (printed above; the goals live in the
    // issue and the notes). What the test asserts is behaviour: every exit
    // was seen with a fresh cache entry, and, with CRI events, far sooner
    // than a relist finds it.
    let _ = (generic_p99, evented_p99);
    assert!(generic_ms.iter().all(|ms| *ms >= -5.0), "clock sanity");
    if has_events {
        assert!(
            evented_p50 * 2.0 < generic_p50,
            "events ({evented_p50:.1} ms) should beat a 1 s relist ({generic_p50:.1} ms)"
        );
        assert_eq!(evented.metrics().stream_errors, 0);
    }
    assert_eq!(evented.healthy(), Ok(()));
    assert_eq!(generic.healthy(), Ok(()));

    evented.stop();
    generic.stop();
    for p in &pods {
        let running = status(&manager, p).await.to_running_pod();
        manager
            .kill_pod(Some(p), &running, Some(0))
            .await
            .expect("kill");
        manager.remove_pod(&running).await.expect("remove");
    }
}
