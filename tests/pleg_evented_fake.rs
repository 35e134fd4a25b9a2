//! The evented PLEG against `FakeRuntime` (which publishes container events
//! as containerd 1.7 does), on tokio's paused clock: events reach the
//! channel and the cache without a relist; the fallback to relisting on
//! `Unimplemented` and after 5 stream failures; reconnection after a broken
//! stream; the global cache timestamp; health.

mod pleg_common;

use std::sync::Arc;
use std::time::Duration;

use kubelet_cri_client::{Call, Error as CriError, FakeRuntime, RuntimeService, api};
use kubelet_kuberuntime::{ContainerState, Runtime};
use kubelet_pleg::PodLifecycleEventType::*;
use kubelet_pleg::{
    EventedConfig, EventedPleg, PlegConfig, PodCache, PodLifecycleEvent,
    PodLifecycleEventGenerator, RelistTiming,
};
use pleg_common::{drain, fake, run_pod};
use tokio::sync::mpsc;
use tokio::time::Instant;

struct Bed {
    fake: FakeRuntime,
    pleg: EventedPleg,
    cache: Arc<PodCache>,
    rx: mpsc::Receiver<PodLifecycleEvent>,
}

fn bed_with(config: EventedConfig) -> Bed {
    let (fake, runtime): (FakeRuntime, Arc<dyn Runtime>) = fake();
    let cache = Arc::new(PodCache::new());
    let pleg = EventedPleg::new(runtime, Arc::new(fake.clone()), cache.clone(), config);
    let rx = pleg.watch().expect("receiver");
    Bed {
        fake,
        pleg,
        cache,
        rx,
    }
}

fn bed() -> Bed {
    bed_with(EventedConfig::default())
}

/// Lets the spawned loops run without moving the clock.
async fn settle() {
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
}

/// The paused clock stands still while the fake stamps events with the
/// wall clock: step past the last relist so events are newer than it.
async fn step() {
    tokio::time::advance(Duration::from_millis(10)).await;
}

fn error(code: &str) -> CriError {
    let call = Call::new("GetContainerEvents");
    let message = "injected".to_owned();
    match code {
        "unimplemented" => CriError::Unimplemented { call, message },
        _ => CriError::Unavailable { call, message },
    }
}

#[tokio::test(start_paused = true)]
async fn a_container_exit_is_an_event_without_a_relist() {
    let mut b = bed();
    b.pleg.start().expect("start");
    settle().await;
    assert!(b.pleg.is_evented_in_use());
    assert_eq!(b.pleg.generic().timing(), RelistTiming::evented());
    step().await;

    let pod = run_pod(&b.fake, "uid-e", 1).await;
    settle().await;
    let mut started: Vec<_> = drain(&mut b.rx);
    started.sort_by(|a, c| a.data.cmp(&c.data));
    let mut want = vec![
        PodLifecycleEvent::new("uid-e", ContainerStarted, &pod.sandbox),
        PodLifecycleEvent::new("uid-e", ContainerStarted, &pod.containers[0]),
    ];
    want.sort_by(|a, c| a.data.cmp(&c.data));
    assert_eq!(started, want);
    let relists = b.pleg.metrics().relists;

    step().await;
    let exited_at = Instant::now();
    b.fake
        .exit_container(&pod.containers[0], 137, "OOMKilled")
        .expect("exit");
    let died = tokio::time::timeout(Duration::from_millis(1), b.rx.recv())
        .await
        .expect("an event at once")
        .expect("event");
    assert_eq!(
        died,
        PodLifecycleEvent::new("uid-e", ContainerDied, &pod.containers[0])
    );
    assert_eq!(
        exited_at.elapsed(),
        Duration::ZERO,
        "no waiting for a relist"
    );
    assert_eq!(b.pleg.metrics().relists, relists, "no relist was needed");
    // The cache holds the event's payload, merged with what it knew.
    let status = b.cache.get("uid-e").expect("status");
    let c = status
        .container_statuses
        .iter()
        .find(|c| c.id == pod.containers[0])
        .expect("container");
    assert_eq!(
        (c.state, c.exit_code, c.reason.as_str()),
        (ContainerState::Exited, 137, "OOMKilled")
    );
    assert!(status.has_ready_sandbox());
    assert!(!status.ips.is_empty());

    // Removal: the fake's DELETED event has no sandbox status; the cache
    // tells whose container it was.
    step().await;
    b.fake
        .remove_container(&pod.containers[0])
        .await
        .expect("remove");
    settle().await;
    assert_eq!(
        drain(&mut b.rx),
        [
            PodLifecycleEvent::new("uid-e", ContainerDied, &pod.containers[0]),
            PodLifecycleEvent::new("uid-e", ContainerRemoved, &pod.containers[0]),
        ]
    );
    let status = b.cache.get("uid-e").expect("status");
    assert!(status.container_statuses.is_empty());
    assert_eq!(status.sandbox_statuses.len(), 1);
    assert_eq!(b.pleg.healthy(), Ok(()));
    assert!(b.pleg.metrics().container_events >= 6);

    // Stopped: no more events.
    b.pleg.stop();
    settle().await;
    step().await;
    b.fake.stop_pod_sandbox(&pod.sandbox).await.expect("stop");
    settle().await;
    assert!(drain(&mut b.rx).is_empty());
}

#[tokio::test(start_paused = true)]
async fn unimplemented_falls_back_to_relisting_at_once() {
    let mut b = bed();
    b.fake
        .inject_error("GetContainerEvents", error("unimplemented"));
    let pod = run_pod(&b.fake, "uid-u", 1).await;
    b.pleg.start().expect("start");
    settle().await;
    assert!(b.pleg.fell_back(), "no retries for Unimplemented");
    assert!(!b.pleg.is_evented_in_use());
    assert_eq!(b.pleg.generic().timing(), RelistTiming::default());
    assert_eq!(b.pleg.metrics().stream_errors, 0);
    // The generic PLEG relists at 1 s and reports the health now.
    assert_eq!(b.pleg.healthy(), Ok(()));
    drain(&mut b.rx);
    step().await;
    let exited_at = Instant::now();
    b.fake
        .exit_container(&pod.containers[0], 1, "Error")
        .expect("exit");
    let died = tokio::time::timeout(Duration::from_secs(2), b.rx.recv())
        .await
        .expect("seen by a relist")
        .expect("event");
    assert_eq!(died.kind, ContainerDied);
    assert!(exited_at.elapsed() <= Duration::from_secs(1));
    assert_eq!(
        b.fake
            .calls()
            .iter()
            .filter(|c| **c == "GetContainerEvents")
            .count(),
        1
    );
}

#[tokio::test(start_paused = true)]
async fn five_stream_failures_fall_back_to_relisting_within_2s() {
    let mut b = bed();
    for _ in 0..5 {
        b.fake
            .inject_error("GetContainerEvents", error("unavailable"));
    }
    let pod = run_pod(&b.fake, "uid-5", 1).await;
    let started = Instant::now();
    b.pleg.start().expect("start");
    settle().await;
    assert!(b.pleg.fell_back());
    assert_eq!(b.pleg.metrics().stream_errors, 5);
    assert_eq!(b.pleg.generic().timing(), RelistTiming::default());
    // A forced relist after each failure (and the generic PLEG's first).
    assert!(b.pleg.metrics().relists >= 5);
    drain(&mut b.rx);

    step().await;
    b.fake
        .exit_container(&pod.containers[0], 1, "Error")
        .expect("exit");
    let died = tokio::time::timeout(Duration::from_secs(2), b.rx.recv())
        .await
        .expect("relisting took over")
        .expect("event");
    assert_eq!(died.kind, ContainerDied);
    assert!(
        started.elapsed() <= Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test(start_paused = true)]
async fn four_failures_are_retried_and_events_flow() {
    let mut b = bed();
    for _ in 0..4 {
        b.fake
            .inject_error("GetContainerEvents", error("unavailable"));
    }
    b.pleg.start().expect("start");
    settle().await;
    assert!(!b.pleg.fell_back());
    assert!(b.pleg.is_evented_in_use());
    assert_eq!(b.pleg.metrics().stream_errors, 4);
    step().await;
    let pod = run_pod(&b.fake, "uid-4", 1).await;
    step().await;
    b.fake
        .exit_container(&pod.containers[0], 1, "Error")
        .expect("exit");
    settle().await;
    let kinds: Vec<_> = drain(&mut b.rx).into_iter().map(|e| e.kind).collect();
    assert_eq!(kinds, [ContainerStarted, ContainerStarted, ContainerDied]);
}

#[tokio::test(start_paused = true)]
async fn a_broken_stream_reconnects_and_relists() {
    let b = bed();
    b.pleg.start().expect("start");
    settle().await;
    step().await;
    // 1,200 events without yielding: the fake's stream (1,024) lags and
    // reports it as an error item.
    for i in 0..600 {
        let config = api::PodSandboxConfig {
            metadata: Some(api::PodSandboxMetadata {
                name: format!("p{i}"),
                namespace: "default".into(),
                uid: format!("uid-{i}"),
                attempt: 0,
            }),
            ..Default::default()
        };
        b.fake.run_pod_sandbox(config, "").await.expect("sandbox");
    }
    settle().await;
    assert_eq!(b.pleg.metrics().stream_errors, 1);
    assert!(b.pleg.is_evented_in_use(), "one failure is retried");
    assert_eq!(
        b.fake
            .calls()
            .iter()
            .filter(|c| **c == "GetContainerEvents")
            .count(),
        2,
        "reconnected"
    );
    // The forced relist filled the cache with what the stream lost.
    assert_eq!(b.cache.len(), 600);
}

#[tokio::test(start_paused = true)]
async fn the_global_timestamp_is_refreshed_every_2s() {
    let b = bed();
    b.pleg.start().expect("start");
    settle().await;
    let t0 = Instant::now();
    step().await;
    let asked = Instant::now();
    let waiter = {
        let cache = PodCache::clone(&b.cache);
        tokio::spawn(async move { cache.get_newer_than("nobody", Some(asked)).await })
    };
    tokio::time::sleep_until(t0 + Duration::from_millis(1990)).await;
    assert!(!waiter.is_finished());
    tokio::time::sleep_until(t0 + Duration::from_millis(2001)).await;
    settle().await;
    assert!(waiter.is_finished(), "released by the 2 s refresh");
    let status = waiter.await.expect("join").expect("status");
    assert_eq!(status.uid, "nobody");
    assert!(b.pleg.metrics().relists <= 2, "not by a relist");
}

#[tokio::test(start_paused = true)]
async fn a_full_channel_makes_it_unhealthy() {
    let b = bed_with(EventedConfig {
        generic: PlegConfig {
            channel_capacity: 2,
            relist: RelistTiming::evented(),
            ..PlegConfig::default()
        },
        ..EventedConfig::default()
    });
    assert_eq!(
        b.pleg.healthy(),
        Err("pleg has yet to be successful".into()),
        "before start, the generic PLEG's health"
    );
    b.pleg.start().expect("start");
    settle().await;
    assert_eq!(b.pleg.healthy(), Ok(()));
    step().await;
    run_pod(&b.fake, "uid-full", 2).await;
    settle().await;
    assert_eq!(
        b.pleg.healthy(),
        Err("EventedPLEG: pleg event channel capacity is full with 2 events".into())
    );
    assert_eq!(b.pleg.metrics().discarded_events, 1);
}
