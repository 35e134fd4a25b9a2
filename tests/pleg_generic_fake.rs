//! The generic PLEG against `FakeRuntime` behind a `RuntimeManager`, on
//! tokio's paused clock: relists find added, started, exited and removed
//! containers; only changed pods are inspected; failed inspections are
//! retried; the health check; the loop's period.

mod pleg_common;

use std::sync::Arc;
use std::time::Duration;

use kubelet_cri_client::{Call, Error as CriError, RuntimeService};
use kubelet_kuberuntime::ContainerState;
use kubelet_pleg::PodLifecycleEventType::*;
use kubelet_pleg::{
    GenericPleg, PlegConfig, PodCache, PodLifecycleEvent, PodLifecycleEventGenerator, RelistTiming,
};
use kubelet_podworkers::PodStatusCache;
use pleg_common::{drain, fake, run_pod, start_container};
use tokio::time::Instant;

fn pleg_with(
    runtime: Arc<dyn kubelet_kuberuntime::Runtime>,
    config: PlegConfig,
) -> (GenericPleg, Arc<PodCache>) {
    let cache = Arc::new(PodCache::new());
    (GenericPleg::new(runtime, cache.clone(), config), cache)
}

fn ev(uid: &str, kind: kubelet_pleg::PodLifecycleEventType, id: &str) -> PodLifecycleEvent {
    PodLifecycleEvent::new(uid, kind, id)
}

fn unavailable(method: &'static str) -> CriError {
    CriError::Unavailable {
        call: Call::new(method),
        message: "injected".into(),
    }
}

#[tokio::test(start_paused = true)]
async fn relist_reports_started_exited_and_removed_containers() {
    let (fake, runtime) = fake();
    let (pleg, cache) = pleg_with(runtime, PlegConfig::default());
    let mut rx = pleg.watch().expect("receiver");
    assert!(pleg.watch().is_none(), "one receiver");

    let pod = run_pod(&fake, "uid-a", 2).await;
    pleg.relist().await;
    let mut got = drain(&mut rx);
    got.sort_by(|a, b| a.data.cmp(&b.data));
    let mut want = vec![
        ev("uid-a", ContainerStarted, &pod.sandbox),
        ev("uid-a", ContainerStarted, &pod.containers[0]),
        ev("uid-a", ContainerStarted, &pod.containers[1]),
    ];
    want.sort_by(|a, b| a.data.cmp(&b.data));
    assert_eq!(got, want);
    let status = cache.get("uid-a").expect("status");
    assert_eq!(status.name, "pod-uid-a");
    assert_eq!(status.running_containers().count(), 2);
    assert!(status.has_ready_sandbox());
    assert!(!status.ips.is_empty());

    // Nothing changed: no events, and no inspection.
    fake.clear_calls();
    pleg.relist().await;
    assert!(drain(&mut rx).is_empty());
    assert_eq!(fake.calls(), ["ListPodSandbox", "ListContainers"]);

    // An exit.
    fake.exit_container(&pod.containers[0], 3, "Error")
        .expect("exit");
    pleg.relist().await;
    assert_eq!(
        drain(&mut rx),
        [ev("uid-a", ContainerDied, &pod.containers[0])]
    );
    let status = cache.get("uid-a").expect("status");
    let c0 = status
        .container_statuses
        .iter()
        .find(|c| c.id == pod.containers[0])
        .expect("c0");
    assert_eq!(
        (c0.state, c0.exit_code, c0.reason.as_str()),
        (ContainerState::Exited, 3, "Error")
    );

    // The exited one removed: only ContainerRemoved; the running one
    // removed: ContainerDied then ContainerRemoved.
    fake.remove_container(&pod.containers[0])
        .await
        .expect("remove");
    fake.remove_container(&pod.containers[1])
        .await
        .expect("remove");
    pleg.relist().await;
    let got = drain(&mut rx);
    let removed_exited = got
        .iter()
        .filter(|e| e.data == pod.containers[0])
        .cloned()
        .collect::<Vec<_>>();
    let removed_running = got
        .iter()
        .filter(|e| e.data == pod.containers[1])
        .cloned()
        .collect::<Vec<_>>();
    assert_eq!(
        removed_exited,
        [ev("uid-a", ContainerRemoved, &pod.containers[0])]
    );
    assert_eq!(
        removed_running,
        [
            ev("uid-a", ContainerDied, &pod.containers[1]),
            ev("uid-a", ContainerRemoved, &pod.containers[1])
        ]
    );
    assert_eq!(got.len(), 3);
    assert!(
        cache
            .get("uid-a")
            .expect("status")
            .container_statuses
            .is_empty()
    );

    // A new container in the same sandbox.
    let again = start_container(&fake, &pod, "c0", 1).await;
    pleg.relist().await;
    assert_eq!(drain(&mut rx), [ev("uid-a", ContainerStarted, &again)]);

    // The whole pod gone: the sandbox and container die and are removed,
    // and the cache entry is deleted.
    fake.stop_pod_sandbox(&pod.sandbox).await.expect("stop");
    pleg.relist().await;
    let mut kinds: Vec<_> = drain(&mut rx).into_iter().map(|e| e.kind).collect();
    kinds.sort_by_key(|k| k.as_str());
    assert_eq!(
        kinds,
        [ContainerDied, ContainerDied],
        "sandbox and container"
    );
    fake.remove_pod_sandbox(&pod.sandbox).await.expect("remove");
    pleg.relist().await;
    let mut kinds: Vec<_> = drain(&mut rx).into_iter().map(|e| e.kind).collect();
    kinds.sort_by_key(|k| k.as_str());
    assert_eq!(kinds, [ContainerRemoved, ContainerRemoved]);
    assert!(cache.is_empty(), "the pod's entry is deleted");
    let empty = cache.get("uid-a").expect("default");
    assert_eq!(empty.uid, "uid-a");
    assert!(empty.sandbox_statuses.is_empty());
}

#[tokio::test(start_paused = true)]
async fn only_changed_pods_are_inspected() {
    let (fake, runtime) = fake();
    let (pleg, _cache) = pleg_with(runtime, PlegConfig::default());
    let mut rx = pleg.watch().expect("receiver");
    let mut pods = Vec::new();
    for i in 0..10 {
        pods.push(run_pod(&fake, &format!("uid-{i}"), 1).await);
    }
    pleg.relist().await;
    assert_eq!(drain(&mut rx).len(), 20);
    fake.exit_container(&pods[4].containers[0], 0, "Completed")
        .expect("exit");
    fake.clear_calls();
    pleg.relist().await;
    assert_eq!(
        drain(&mut rx),
        [ev("uid-4", ContainerDied, &pods[4].containers[0])]
    );
    // One list of each, then one pod's inspection.
    assert_eq!(
        fake.calls(),
        [
            "ListPodSandbox",
            "ListContainers",
            "ListPodSandbox",
            "PodSandboxStatus",
            "ListContainers",
            "ContainerStatus"
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_failed_inspection_sends_nothing_and_is_retried_on_the_next_relist() {
    let (fake, runtime) = fake();
    let (pleg, cache) = pleg_with(runtime, PlegConfig::default());
    let mut rx = pleg.watch().expect("receiver");
    let pod = run_pod(&fake, "uid-r", 1).await;
    fake.inject_error("ContainerStatus", unavailable("ContainerStatus"));
    pleg.relist().await;
    assert!(drain(&mut rx).is_empty(), "no events for a pod that failed");
    assert_eq!(pleg.pods_to_reinspect().await, ["uid-r"]);
    let err = cache.get("uid-r").expect_err("the error is cached");
    assert!(err.to_string().contains("injected"), "{err}");
    // The pod workers see it as a status cache error, and not terminal.
    let worker_err = PodStatusCache::get_newer_than(&*cache, "uid-r", None)
        .await
        .expect_err("error");
    assert!(
        worker_err
            .to_string()
            .contains("error determining status of pod uid-r"),
        "{worker_err}"
    );
    assert!(!PodStatusCache::is_runtime_terminal(&*cache, "uid-r"));

    // Nothing changed in the runtime, but the pod is inspected again and
    // its events, held back, are sent now.
    fake.clear_calls();
    pleg.relist().await;
    assert!(fake.calls().contains(&"ContainerStatus"));
    let mut got = drain(&mut rx);
    got.sort_by(|a, b| a.data.cmp(&b.data));
    let mut want = vec![
        ev("uid-r", ContainerStarted, &pod.sandbox),
        ev("uid-r", ContainerStarted, &pod.containers[0]),
    ];
    want.sort_by(|a, b| a.data.cmp(&b.data));
    assert_eq!(got, want);
    assert!(pleg.pods_to_reinspect().await.is_empty());
    assert_eq!(
        cache
            .get("uid-r")
            .expect("status")
            .running_containers()
            .count(),
        1
    );

    // And once fine, it is not inspected again.
    fake.clear_calls();
    pleg.relist().await;
    assert_eq!(fake.calls(), ["ListPodSandbox", "ListContainers"]);
}

#[tokio::test(start_paused = true)]
async fn health_follows_relists_and_the_threshold() {
    let (fake, runtime) = fake();
    let (pleg, cache) = pleg_with(runtime, PlegConfig::default());
    assert_eq!(pleg.healthy(), Err("pleg has yet to be successful".into()));

    // A failing relist does not count.
    fake.inject_error("ListPodSandbox", unavailable("ListPodSandbox"));
    pleg.relist().await;
    assert_eq!(pleg.healthy(), Err("pleg has yet to be successful".into()));
    assert_eq!(cache.timestamp(), None, "no UpdateTime without a relist");

    let before = Instant::now();
    pleg.relist().await;
    assert_eq!(pleg.healthy(), Ok(()));
    assert_eq!(cache.timestamp(), Some(before), "UpdateTime(relist start)");

    tokio::time::advance(Duration::from_secs(180)).await;
    assert_eq!(pleg.healthy(), Ok(()), "exactly at the threshold is fine");
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(
        pleg.healthy(),
        Err("pleg was last seen active 3m1s ago; threshold is 3m0s".into())
    );
    // Relisting heals it; relists failing again leave it unhealthy.
    pleg.relist().await;
    assert_eq!(pleg.healthy(), Ok(()));
    for _ in 0..4 {
        fake.inject_error("ListPodSandbox", unavailable("ListPodSandbox"));
    }
    tokio::time::advance(Duration::from_secs(200)).await;
    pleg.relist().await;
    assert!(pleg.healthy().is_err());
}

#[tokio::test(start_paused = true)]
async fn the_loop_relists_every_period_and_stops() {
    let (fake, runtime) = fake();
    let (pleg, _cache) = pleg_with(runtime, PlegConfig::default());
    let mut rx = pleg.watch().expect("receiver");
    let pod = run_pod(&fake, "uid-l", 1).await;
    pleg.start().expect("start");
    pleg.start().expect("starting twice is a no-op");
    assert!(pleg.is_running());
    // The first relist runs at once.
    let first = tokio::time::timeout(Duration::from_millis(10), rx.recv())
        .await
        .expect("first relist")
        .expect("event");
    assert_eq!(first.kind, ContainerStarted);
    drain(&mut rx);

    tokio::time::sleep(Duration::from_millis(300)).await;
    let exited_at = Instant::now();
    fake.exit_container(&pod.containers[0], 1, "Error")
        .expect("exit");
    let died = tokio::time::timeout(Duration::from_secs(2), rx.recv())
        .await
        .expect("ContainerDied within the period")
        .expect("event");
    assert_eq!(died, ev("uid-l", ContainerDied, &pod.containers[0]));
    let latency = exited_at.elapsed();
    assert!(
        latency <= Duration::from_secs(1),
        "seen after {latency:?}, more than the 1 s period"
    );
    assert_eq!(pleg.relist_interval(), Some(Duration::from_secs(1)));
    assert!(pleg.relist_duration().is_some());
    assert!(pleg.metrics().relists >= 2);

    pleg.stop();
    assert!(!pleg.is_running());
    let relists = pleg.metrics().relists;
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(pleg.metrics().relists, relists, "no relist after stop");
}

#[tokio::test(start_paused = true)]
async fn update_changes_the_period_and_threshold() {
    let (_fake, runtime) = fake();
    let (pleg, _cache) = pleg_with(runtime, PlegConfig::default());
    pleg.update(RelistTiming {
        period: Duration::from_secs(5),
        threshold: Duration::from_secs(20),
    });
    pleg.start().expect("start");
    tokio::time::sleep(Duration::from_millis(5500)).await;
    assert_eq!(pleg.metrics().relists, 2, "at 0 s and 5 s");
    pleg.stop();
    tokio::time::advance(Duration::from_secs(21)).await;
    assert_eq!(
        pleg.healthy(),
        Err("pleg was last seen active 21.5s ago; threshold is 20s".into())
    );
}

#[tokio::test(start_paused = true)]
async fn inspections_run_concurrently_with_a_bound() {
    async fn relist_time(bound: usize) -> Duration {
        let (fake, runtime) = fake();
        let (pleg, cache) = pleg_with(
            runtime,
            PlegConfig {
                max_concurrent_inspections: bound,
                ..PlegConfig::default()
            },
        );
        for i in 0..20 {
            run_pod(&fake, &format!("uid-{i:02}"), 1).await;
        }
        fake.set_delay("PodSandboxStatus", Duration::from_millis(100));
        pleg.relist().await;
        assert_eq!(cache.len(), 20);
        pleg.relist_duration().expect("duration")
    }
    // 20 inspections of 100 ms each.
    assert_eq!(relist_time(1).await, Duration::from_millis(2000));
    assert_eq!(relist_time(4).await, Duration::from_millis(500));
    assert_eq!(relist_time(16).await, Duration::from_millis(200));
}

#[tokio::test(start_paused = true)]
async fn a_full_channel_drops_and_counts_events() {
    let (fake, runtime) = fake();
    let (pleg, _cache) = pleg_with(
        runtime,
        PlegConfig {
            channel_capacity: 3,
            ..PlegConfig::default()
        },
    );
    let mut rx = pleg.watch().expect("receiver");
    run_pod(&fake, "uid-f", 4).await; // five events
    pleg.relist().await;
    assert_eq!(drain(&mut rx).len(), 3);
    assert_eq!(pleg.metrics().discarded_events, 2);
    assert_eq!(
        pleg.healthy(),
        Ok(()),
        "the generic PLEG's health ignores it"
    );
}

#[tokio::test(start_paused = true)]
async fn waiters_are_released_by_the_next_relist_with_a_fresh_status() {
    let (fake, runtime) = fake();
    let (pleg, cache) = pleg_with(runtime, PlegConfig::default());
    let pod = run_pod(&fake, "uid-w", 1).await;
    pleg.relist().await;
    let asked_at = Instant::now();
    tokio::time::advance(Duration::from_millis(10)).await;
    let waiter = {
        let cache = PodCache::clone(&cache);
        tokio::spawn(async move {
            PodStatusCache::get_newer_than(&cache, "uid-w", Some(asked_at)).await
        })
    };
    tokio::task::yield_now().await;
    assert!(!waiter.is_finished(), "nothing newer yet");
    assert_eq!(cache.waiters(), 1);
    fake.exit_container(&pod.containers[0], 2, "Error")
        .expect("exit");
    pleg.relist().await;
    let status = waiter.await.expect("join").expect("status");
    assert_eq!(status.container_statuses[0].state, ContainerState::Exited);
    assert_eq!(status.container_statuses[0].exit_code, 2);
    // The pod still has a ready sandbox: not terminal.
    assert!(!PodStatusCache::is_runtime_terminal(&*cache, "uid-w"));
}

#[tokio::test(start_paused = true)]
async fn a_dead_pod_keeps_its_ip() {
    let (fake, runtime) = fake();
    let (pleg, cache) = pleg_with(runtime, PlegConfig::default());
    let pod = run_pod(&fake, "uid-ip", 1).await;
    pleg.relist().await;
    let ips = cache.get("uid-ip").expect("status").ips.clone();
    assert_eq!(ips.len(), 1);
    fake.stop_pod_sandbox(&pod.sandbox).await.expect("stop");
    pleg.relist().await;
    let status = cache.get("uid-ip").expect("status");
    assert!(!status.has_ready_sandbox());
    assert_eq!(status.ips, ips, "upstream getPodIPs keeps the old IPs");
    assert!(PodStatusCache::is_runtime_terminal(&*cache, "uid-ip"));
}
