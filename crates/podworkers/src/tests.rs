//! Unit tests of the pod workers, one or more per upstream rule, on tokio's
//! paused clock. Every assertion is on what the recording syncer saw or
//! what the queries answer, never on what a test asked for.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, PodSpec, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use tokio::time::Instant;

use crate::fake::{Behavior, CallKind, FakeStatusCache, RecordingEvents, RecordingSyncer};
use crate::*;

type Pool = PodWorkerPool<RecordingSyncer, FakeStatusCache>;

fn pod(uid: &str, name: &str) -> Pod {
    Pod {
        metadata: ObjectMeta {
            uid: Some(uid.into()),
            name: Some(name.into()),
            namespace: Some("default".into()),
            resource_version: Some("1".into()),
            ..Default::default()
        },
        spec: Some(PodSpec {
            termination_grace_period_seconds: Some(30),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn with_version(mut p: Pod, v: &str) -> Pod {
    p.metadata.resource_version = Some(v.into());
    p
}

fn static_pod(uid: &str, name: &str) -> Pod {
    let mut p = pod(uid, name);
    p.metadata.annotations = Some(BTreeMap::from([(
        CONFIG_SOURCE_ANNOTATION.to_owned(),
        "file".to_owned(),
    )]));
    p
}

fn deleted(mut p: Pod, grace: i64) -> Pod {
    p.metadata.deletion_timestamp = Some(Time(Default::default()));
    p.metadata.deletion_grace_period_seconds = Some(grace);
    p
}

fn in_phase(mut p: Pod, phase: &str) -> Pod {
    p.status = Some(PodStatus {
        phase: Some(phase.into()),
        ..Default::default()
    });
    p
}

fn new_pool() -> (Pool, Arc<RecordingEvents>) {
    pool_with(FakeStatusCache::always_fresh())
}

fn pool_with(cache: FakeStatusCache) -> (Pool, Arc<RecordingEvents>) {
    let events = Arc::new(RecordingEvents::new());
    let pool = PodWorkerPool::builder(RecordingSyncer::new(), cache)
        .recorder(events.clone())
        .build()
        .unwrap();
    (pool, events)
}

/// Lets every worker run until it waits (paused clock: time moves 1 ms).
async fn settle() {
    tokio::time::sleep(Duration::from_millis(1)).await;
}

fn kinds(pool: &Pool, uid: &str) -> Vec<CallKind> {
    pool.syncer()
        .calls_for(uid)
        .into_iter()
        .map(|c| c.kind)
        .collect()
}

fn assert_no_violations(pool: &Pool) {
    assert_eq!(pool.syncer().violations(), Vec::<String>::new());
}

fn terminating(grace: i64) -> CallKind {
    CallKind::Terminating {
        grace_period_seconds: grace,
        abnormal: false,
        evict: false,
        has_status_fn: false,
    }
}

#[tokio::test(start_paused = true)]
async fn create_syncs_pod_once_then_idles() {
    let (pool, _) = new_pool();
    pool.update_pod(UpdatePodOptions::create(pod("a", "a")));
    settle().await;
    assert_eq!(
        kinds(&pool, "a"),
        vec![CallKind::SyncPod(SyncPodType::Create)]
    );
    assert_eq!(pool.pod_state("a"), Some(PodWorkerState::Sync));
    assert!(pool.could_have_running_containers("a"));
    assert_eq!(pool.live_workers(), 1);
    tokio::time::sleep(Duration::from_secs(59)).await;
    assert_eq!(
        pool.syncer().calls_for("a").len(),
        1,
        "no sync before resync"
    );
    assert_no_violations(&pool);
}

#[tokio::test(start_paused = true)]
async fn pending_updates_coalesce_newest_wins() {
    let (pool, _) = new_pool();
    pool.syncer()
        .push_once("a", Behavior::Sleep(Duration::from_secs(5)));
    pool.update_pod(UpdatePodOptions::create(with_version(pod("a", "a"), "1")));
    settle().await;
    for v in 2..=9 {
        pool.update_pod(UpdatePodOptions::update(with_version(
            pod("a", "a"),
            &v.to_string(),
        )));
    }
    tokio::time::sleep(Duration::from_secs(6)).await;
    let calls = pool.syncer().calls_for("a");
    let versions: Vec<_> = calls.iter().map(|c| c.resource_version.clone()).collect();
    assert_eq!(versions, vec![Some("1".into()), Some("9".into())]);
    assert_eq!(calls[1].kind, CallKind::SyncPod(SyncPodType::Update));
    assert_no_violations(&pool);
}

#[tokio::test(start_paused = true)]
async fn never_two_syncs_of_one_pod_at_once() {
    let (pool, _) = new_pool();
    pool.syncer()
        .set_default_behavior(Behavior::Sleep(Duration::from_secs(2)));
    for i in 0..20 {
        pool.update_pod(UpdatePodOptions::update(with_version(
            pod("a", "a"),
            &i.to_string(),
        )));
        pool.update_pod(UpdatePodOptions::update(with_version(
            pod("b", "b"),
            &i.to_string(),
        )));
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    for uid in ["a", "b"] {
        let calls = pool.syncer().calls_for(uid);
        assert!(calls.len() >= 5, "{uid}: {}", calls.len());
        for pair in calls.windows(2) {
            assert!(pair[1].at >= pair[0].at + Duration::from_secs(2), "overlap");
        }
    }
    // the two pods did run concurrently
    let a = pool.syncer().calls_for("a");
    let b = pool.syncer().calls_for("b");
    assert_eq!(a[0].at, b[0].at);
    assert_no_violations(&pool);
}

#[tokio::test(start_paused = true)]
async fn deletion_terminates_then_finishes_with_deletion_grace() {
    let (pool, _) = new_pool();
    pool.update_pod(UpdatePodOptions::create(pod("a", "a")));
    settle().await;
    pool.update_pod(UpdatePodOptions::update(deleted(pod("a", "a"), 7)));
    settle().await;
    assert_eq!(
        kinds(&pool, "a"),
        vec![
            CallKind::SyncPod(SyncPodType::Create),
            terminating(7),
            CallKind::Terminated
        ]
    );
    assert!(pool.should_pod_be_finished("a"));
    assert!(pool.is_pod_known_terminated("a"));
    assert!(!pool.could_have_running_containers("a"));
    assert!(
        pool.should_pod_content_be_removed("a"),
        "deleted and terminated"
    );
    assert!(pool.should_pod_runtime_be_removed("a"));
    assert_eq!(pool.grace_period("a"), Some(7));
    assert_eq!(pool.live_workers(), 0, "finished worker exits");
    // a finished pod ignores further updates
    pool.update_pod(UpdatePodOptions::update(pod("a", "a")));
    settle().await;
    assert_eq!(pool.syncer().calls_for("a").len(), 3);
    assert_eq!(pool.live_workers(), 0);
    assert_no_violations(&pool);
}

#[tokio::test(start_paused = true)]
async fn terminating_retries_until_success_and_phase_change_is_immediate() {
    let (pool, _) = new_pool();
    pool.update_pod(UpdatePodOptions::create(pod("a", "a")));
    settle().await;
    pool.syncer().push_once("a", Behavior::Fail);
    let t0 = Instant::now();
    pool.update_pod(UpdatePodOptions::update(deleted(pod("a", "a"), 30)));
    settle().await;
    assert!(pool.is_pod_termination_requested("a"));
    assert!(pool.should_pod_containers_be_terminating("a"));
    assert!(pool.could_have_running_containers("a"));
    tokio::time::sleep(Duration::from_secs(16)).await;
    let calls = pool.syncer().calls_for("a");
    assert_eq!(calls.len(), 4, "{calls:?}");
    assert_eq!(calls[1].kind, terminating(30));
    assert_eq!(calls[2].kind, terminating(30));
    let retry = calls[2].at - t0;
    assert!(
        retry >= Duration::from_secs(10) && retry < Duration::from_secs(15),
        "{retry:?}"
    );
    assert_eq!(calls[3].kind, CallKind::Terminated);
    assert_eq!(calls[3].at, calls[2].at, "terminated follows at once");
    assert_no_violations(&pool);
}

#[tokio::test(start_paused = true)]
async fn kill_signals_completion_only_once_terminated() {
    let (pool, _) = new_pool();
    pool.update_pod(UpdatePodOptions::create(pod("a", "a")));
    settle().await;
    pool.syncer().set_behavior("a", Behavior::Fail);
    let (kill, mut done) = KillPodOptions::with_completion(TerminatePodOptions {
        evict: true,
        grace_period_seconds_override: Some(5),
        status_fn: Some(Arc::new(|s: &mut PodStatus| {
            s.reason = Some("Evicted".into())
        })),
    });
    pool.update_pod(UpdatePodOptions::kill(pod("a", "a"), kill));
    tokio::time::sleep(Duration::from_secs(20)).await;
    assert!(
        done.try_recv().is_err(),
        "not complete while terminating fails"
    );
    assert!(pool.should_pod_content_be_removed("a"), "evicted");
    pool.syncer().set_behavior("a", Behavior::Ok);
    tokio::time::sleep(Duration::from_secs(20)).await;
    assert_eq!(done.try_recv(), Ok(()));
    let calls = pool.syncer().calls_for("a");
    assert!(calls.iter().any(|c| c.kind
        == CallKind::Terminating {
            grace_period_seconds: 5,
            abnormal: true,
            evict: true,
            has_status_fn: true
        }));
    assert_eq!(
        calls.last().map(|c| c.kind.clone()),
        Some(CallKind::Terminated)
    );
    assert_no_violations(&pool);
}

#[tokio::test(start_paused = true)]
async fn kill_of_terminated_or_finished_pod_completes_at_once() {
    let (pool, _) = new_pool();
    pool.update_pod(UpdatePodOptions::create(pod("a", "a")));
    settle().await;
    pool.syncer().push_once("a", Behavior::Ok);
    pool.syncer().push_once("a", Behavior::Fail); // terminated sync fails
    pool.update_pod(UpdatePodOptions::update(deleted(pod("a", "a"), 1)));
    settle().await;
    assert!(pool.is_pod_known_terminated("a"));
    assert!(!pool.should_pod_be_finished("a"));
    let (kill, mut done) = KillPodOptions::with_completion(TerminatePodOptions::default());
    pool.update_pod(UpdatePodOptions::kill(pod("a", "a"), kill));
    assert_eq!(done.try_recv(), Ok(()), "terminated pod: complete at once");
    tokio::time::sleep(Duration::from_secs(20)).await;
    assert!(pool.should_pod_be_finished("a"));
    let (kill, mut done) = KillPodOptions::with_completion(TerminatePodOptions::default());
    pool.update_pod(UpdatePodOptions::kill(pod("a", "a"), kill));
    assert_eq!(done.try_recv(), Ok(()), "finished pod: complete at once");
    // a kill of a pod that is still syncing is not "invalid": it terminates it
    let (kill, mut done) = KillPodOptions::with_completion(TerminatePodOptions::default());
    pool.update_pod(UpdatePodOptions::kill(pod("b", "b"), kill));
    settle().await;
    assert_eq!(done.try_recv(), Ok(()));
    assert_eq!(
        kinds(&pool, "b"),
        vec![
            CallKind::Terminating {
                grace_period_seconds: 30,
                abnormal: true,
                evict: false,
                has_status_fn: false
            },
            CallKind::Terminated
        ]
    );
    assert_no_violations(&pool);
}

#[tokio::test(start_paused = true)]
async fn grace_period_only_goes_down_and_shortening_cancels_running_terminate() {
    let (pool, _) = new_pool();
    pool.update_pod(UpdatePodOptions::create(pod("a", "a")));
    settle().await;
    pool.syncer().push_once("a", Behavior::WaitForCancel);
    pool.update_pod(UpdatePodOptions::update(deleted(pod("a", "a"), 30)));
    settle().await;
    assert_eq!(pool.grace_period("a"), Some(30));
    // a longer override does nothing, and does not cancel
    pool.update_pod(UpdatePodOptions::kill(
        pod("a", "a"),
        KillPodOptions {
            terminate: TerminatePodOptions {
                grace_period_seconds_override: Some(50),
                ..Default::default()
            },
            completed: None,
        },
    ));
    settle().await;
    assert_eq!(pool.grace_period("a"), Some(30));
    assert_eq!(
        pool.syncer().calls_for("a").len(),
        2,
        "still the first terminate"
    );
    // a shorter one cancels the running terminate, which reruns with it
    pool.update_pod(UpdatePodOptions::kill(
        pod("a", "a"),
        KillPodOptions {
            terminate: TerminatePodOptions {
                grace_period_seconds_override: Some(3),
                ..Default::default()
            },
            completed: None,
        },
    ));
    settle().await;
    assert_eq!(pool.grace_period("a"), Some(3));
    let k = kinds(&pool, "a");
    assert_eq!(k[1], terminating(30));
    assert!(
        matches!(
            k[2],
            CallKind::Terminating {
                grace_period_seconds: 3,
                abnormal: true,
                ..
            }
        ),
        "{k:?}"
    );
    assert_eq!(k[3], CallKind::Terminated);
    // zero becomes the floor of 1
    let (pool2, _) = new_pool();
    pool2.update_pod(UpdatePodOptions::update(deleted(pod("z", "z"), 0)));
    settle().await;
    assert_eq!(kinds(&pool2, "z")[0], terminating(1));
    assert_no_violations(&pool);
}

#[tokio::test(start_paused = true)]
async fn running_sync_is_cancelled_when_pod_starts_terminating() {
    let (pool, events) = new_pool();
    pool.syncer().push_once("a", Behavior::WaitForCancel);
    pool.update_pod(UpdatePodOptions::create(pod("a", "a")));
    settle().await;
    tokio::time::sleep(Duration::from_secs(100)).await;
    assert_eq!(pool.syncer().calls_for("a").len(), 1, "sync still running");
    pool.update_pod(UpdatePodOptions::update(deleted(pod("a", "a"), 2)));
    settle().await;
    assert_eq!(
        kinds(&pool, "a"),
        vec![
            CallKind::SyncPod(SyncPodType::Create),
            terminating(2),
            CallKind::Terminated
        ]
    );
    assert!(
        events.failures().is_empty(),
        "cancellation is not a failure"
    );
    assert_no_violations(&pool);
}

#[tokio::test(start_paused = true)]
async fn terminal_outcome_moves_to_terminating_with_spec_grace() {
    let (pool, _) = new_pool();
    pool.syncer().push_once("a", Behavior::Terminal);
    pool.update_pod(UpdatePodOptions::create(pod("a", "a")));
    settle().await;
    assert_eq!(
        kinds(&pool, "a"),
        vec![
            CallKind::SyncPod(SyncPodType::Create),
            terminating(30),
            CallKind::Terminated
        ]
    );
    assert!(
        !pool.should_pod_content_be_removed("a"),
        "not deleted, not evicted"
    );
    assert_no_violations(&pool);
}

#[tokio::test(start_paused = true)]
async fn terminal_phase_update_terminates() {
    let (pool, _) = new_pool();
    pool.update_pod(UpdatePodOptions::create(pod("a", "a")));
    settle().await;
    pool.update_pod(UpdatePodOptions::update(in_phase(pod("a", "a"), "Failed")));
    settle().await;
    assert_eq!(
        kinds(&pool, "a")[1..],
        [terminating(30), CallKind::Terminated]
    );
}

#[tokio::test(start_paused = true)]
async fn first_sighting_of_finished_pod_goes_straight_to_terminated() {
    let cache = FakeStatusCache::always_fresh();
    cache.set("running", true);
    let (pool, _) = pool_with(cache);
    pool.update_pod(UpdatePodOptions::create(in_phase(
        pod("done", "done"),
        "Succeeded",
    )));
    pool.update_pod(UpdatePodOptions::create(in_phase(
        pod("running", "r"),
        "Succeeded",
    )));
    assert!(
        pool.is_pod_known_terminated("done"),
        "terminated before any sync"
    );
    assert!(!pool.is_pod_known_terminated("running"));
    settle().await;
    assert_eq!(kinds(&pool, "done"), vec![CallKind::Terminated]);
    assert_eq!(
        kinds(&pool, "running"),
        vec![terminating(30), CallKind::Terminated]
    );
    assert_no_violations(&pool);
}

#[tokio::test(start_paused = true)]
async fn reused_uid_restarts_only_after_cleanup() {
    let (pool, _) = new_pool();
    pool.update_pod(UpdatePodOptions::create(pod("a", "a")));
    settle().await;
    pool.syncer().push_once("a", Behavior::Fail);
    pool.update_pod(UpdatePodOptions::update(deleted(pod("a", "a"), 1)));
    settle().await;
    // the same UID is created again while terminating
    pool.update_pod(UpdatePodOptions::create(pod("a", "a")));
    tokio::time::sleep(Duration::from_secs(20)).await;
    assert!(pool.should_pod_be_finished("a"));
    let before = pool.syncer().calls_for("a").len();
    pool.update_pod(UpdatePodOptions::create(pod("a", "a")));
    settle().await;
    assert_eq!(
        pool.syncer().calls_for("a").len(),
        before,
        "finished: not restarted"
    );
    // housekeeping with the pod still desired forgets it (restart requested)
    let known = pool.sync_known_pods(&HashSet::from(["a".to_owned()]));
    assert!(!known.contains_key("a"), "{known:?}");
    assert!(!pool.is_pod_known("a"));
    pool.syncer().forget("a");
    pool.update_pod(UpdatePodOptions::create(pod("a", "a")));
    settle().await;
    let k = kinds(&pool, "a");
    assert_eq!(k.last(), Some(&CallKind::SyncPod(SyncPodType::Create)));
    assert_eq!(pool.pod_state("a"), Some(PodWorkerState::Sync));
    assert_no_violations(&pool);
}

#[tokio::test(start_paused = true)]
async fn finished_pod_without_restart_is_kept_while_desired() {
    let (pool, _) = new_pool();
    pool.update_pod(UpdatePodOptions::update(deleted(pod("a", "a"), 1)));
    settle().await;
    let known = pool.sync_known_pods(&HashSet::from(["a".to_owned()]));
    assert_eq!(
        known.get("a").map(|s| s.state),
        Some(PodWorkerState::Terminated)
    );
    assert!(pool.is_pod_known("a"));
    let known = pool.sync_known_pods(&HashSet::new());
    assert!(known.is_empty());
    assert!(!pool.is_pod_known("a"));
}

#[tokio::test(start_paused = true)]
async fn static_pods_with_same_full_name_never_run_together() {
    let (pool, _) = new_pool();
    pool.update_pod(UpdatePodOptions::create(static_pod("a", "etcd")));
    settle().await;
    pool.update_pod(UpdatePodOptions::create(static_pod("b", "etcd")));
    settle().await;
    assert!(kinds(&pool, "b").is_empty(), "b waits for a");
    tokio::time::sleep(Duration::from_secs(40)).await;
    assert!(kinds(&pool, "b").is_empty(), "b still waits after retries");
    let known = pool.sync_known_pods(&HashSet::from(["a".to_owned(), "b".to_owned()]));
    assert_eq!(
        known.get("b").map(|s| (s.state, s.is_static, s.has_config)),
        Some((PodWorkerState::Sync, true, true))
    );
    pool.syncer()
        .push_once("a", Behavior::Sleep(Duration::from_secs(3)));
    pool.update_pod(UpdatePodOptions::update(deleted(
        static_pod("a", "etcd"),
        5,
    )));
    settle().await;
    assert!(pool.is_pod_for_mirror_pod_terminating_by_full_name("etcd_default"));
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(!pool.is_pod_for_mirror_pod_terminating_by_full_name("etcd_default"));
    let a = pool.syncer().calls_for("a");
    let b = pool.syncer().calls_for("b");
    assert_eq!(b.len(), 1, "{b:?}");
    assert!(b[0].at >= a.last().map(|c| c.at).unwrap_or(b[0].at));
    assert_eq!(b[0].at, a[2].at, "b starts as soon as a is cleaned up");
    assert_no_violations(&pool);
}

#[tokio::test(start_paused = true)]
async fn static_pods_start_in_arrival_order() {
    let (pool, _) = new_pool();
    pool.update_pod(UpdatePodOptions::create(static_pod("a", "s")));
    pool.update_pod(UpdatePodOptions::create(static_pod("b", "s")));
    pool.update_pod(UpdatePodOptions::create(static_pod("c", "s")));
    settle().await;
    assert_eq!(kinds(&pool, "a").len(), 1);
    // b is killed before it ever started: it never runs and is finished
    let (kill, mut done) = KillPodOptions::with_completion(TerminatePodOptions::default());
    pool.update_pod(UpdatePodOptions::kill(static_pod("b", "s"), kill));
    settle().await;
    assert_eq!(
        done.try_recv(),
        Ok(()),
        "kill of an unstarted pod completes"
    );
    assert!(pool.should_pod_be_finished("b"));
    pool.update_pod(UpdatePodOptions::update(deleted(static_pod("a", "s"), 1)));
    settle().await;
    assert!(kinds(&pool, "b").is_empty());
    assert_eq!(
        kinds(&pool, "c"),
        vec![CallKind::SyncPod(SyncPodType::Create)]
    );
    assert_no_violations(&pool);
}

#[tokio::test(start_paused = true)]
async fn orphaned_runtime_pod_is_torn_down() {
    let (pool, _) = new_pool();
    // a runtime pod can only be killed
    pool.update_pod(UpdatePodOptions {
        update_type: SyncPodType::Sync,
        running_pod: Some(RuntimePod::new("o", "old", "ns")),
        ..Default::default()
    });
    assert!(!pool.is_pod_known("o"));
    pool.update_pod(UpdatePodOptions::kill_runtime_pod(RuntimePod::new(
        "o", "old", "ns",
    )));
    assert!(pool.is_pod_termination_requested("o"));
    settle().await;
    let calls = pool.syncer().calls_for("o");
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].kind, CallKind::TerminatingRuntime);
    assert_eq!(
        calls[0].status_version, None,
        "no status wait for runtime pods"
    );
    assert!(!pool.is_pod_known("o"), "runtime pods leave no state");
    assert_eq!(pool.live_workers(), 0);
    // a failing teardown is retried
    pool.syncer().push_once("p", Behavior::Fail);
    pool.update_pod(UpdatePodOptions::kill_runtime_pod(RuntimePod::new(
        "p", "p", "ns",
    )));
    tokio::time::sleep(Duration::from_secs(16)).await;
    assert_eq!(
        kinds(&pool, "p"),
        vec![CallKind::TerminatingRuntime, CallKind::TerminatingRuntime]
    );
    assert!(!pool.is_pod_known("p"));
    assert_no_violations(&pool);
}

#[tokio::test(start_paused = true)]
async fn runtime_kill_of_known_pod_uses_its_spec() {
    let (pool, _) = new_pool();
    pool.update_pod(UpdatePodOptions::create(pod("a", "a")));
    settle().await;
    pool.update_pod(UpdatePodOptions::kill_runtime_pod(RuntimePod::new(
        "a", "a", "default",
    )));
    settle().await;
    assert_eq!(
        kinds(&pool, "a")[1..],
        [terminating(30), CallKind::Terminated]
    );
    assert!(
        pool.should_pod_content_be_removed("a"),
        "orphan counts as deleted"
    );
}

#[tokio::test(start_paused = true)]
async fn sync_known_pods_terminates_orphans_and_leaks_no_worker() {
    let (pool, _) = new_pool();
    assert!(pool.could_have_running_containers("unknown"));
    assert!(!pool.should_pod_content_be_removed("unknown"));
    pool.update_pod(UpdatePodOptions::create(pod("a", "a")));
    pool.update_pod(UpdatePodOptions::create(pod("b", "b")));
    pool.update_pod(UpdatePodOptions::create(static_pod("s1", "s")));
    pool.update_pod(UpdatePodOptions::create(static_pod("s2", "s")));
    settle().await;
    assert_eq!(pool.live_workers(), 4);
    let known = pool.sync_known_pods(&HashSet::from(["b".to_owned(), "s1".to_owned()]));
    // s2 never started: dropped silently; a is orphaned and terminating
    assert!(!known.contains_key("s2"));
    assert!(kinds(&pool, "s2").is_empty());
    let a = known.get("a").copied();
    assert_eq!(
        a.map(|s| (s.state, s.orphan)),
        Some((PodWorkerState::Terminating, true))
    );
    assert_eq!(pool.grace_period("a"), Some(30));
    settle().await;
    assert_eq!(
        kinds(&pool, "a")[1..],
        [terminating(30), CallKind::Terminated]
    );
    let known = pool.sync_known_pods(&HashSet::from(["b".to_owned(), "s1".to_owned()]));
    assert_eq!(known.len(), 2);
    assert!(
        !pool.could_have_running_containers("a"),
        "unknown after sync"
    );
    assert!(pool.should_pod_content_be_removed("a"));
    // everything goes away
    let known = pool.sync_known_pods(&HashSet::new());
    assert_eq!(known.len(), 2);
    settle().await;
    let known = pool.sync_known_pods(&HashSet::new());
    assert!(known.is_empty(), "{known:?}");
    assert_eq!(pool.known_pods(), 0);
    assert_eq!(pool.live_workers(), 0, "no worker task leaked");
    assert_no_violations(&pool);
}

#[tokio::test(start_paused = true)]
async fn resync_and_retry_timing_follow_upstream() {
    let (pool, _) = new_pool();
    let t0 = Instant::now();
    pool.update_pod(UpdatePodOptions::create(pod("ok", "ok")));
    pool.syncer().push_once("err", Behavior::Fail);
    pool.update_pod(UpdatePodOptions::create(pod("err", "err")));
    pool.syncer().push_once("net", Behavior::NetworkNotReady);
    pool.update_pod(UpdatePodOptions::create(pod("net", "net")));
    tokio::time::sleep(Duration::from_secs(200)).await;
    let offsets = |uid: &str| -> Vec<Duration> {
        pool.syncer()
            .calls_for(uid)
            .iter()
            .map(|c| c.at - t0)
            .collect()
    };
    let ok = offsets("ok");
    assert_eq!(ok.len(), 3, "{ok:?}");
    for pair in ok.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(
            gap >= Duration::from_secs(60) && gap < Duration::from_secs(90),
            "{gap:?}"
        );
    }
    let err = offsets("err");
    let gap = err[1] - err[0];
    assert!(
        gap >= Duration::from_secs(10) && gap < Duration::from_secs(15),
        "{gap:?}"
    );
    let net = offsets("net");
    let gap = net[1] - net[0];
    assert!(
        gap >= Duration::from_secs(1) && gap < Duration::from_millis(1500),
        "{gap:?}"
    );
    // resyncs replay the last update as a sync
    assert_eq!(kinds(&pool, "ok")[1], CallKind::SyncPod(SyncPodType::Sync));
}

#[tokio::test(start_paused = true)]
async fn panic_in_sync_is_contained_and_reported() {
    let (pool, events) = new_pool();
    pool.syncer().push_once("bad", Behavior::Panic);
    pool.update_pod(UpdatePodOptions::create(pod("bad", "bad")));
    pool.update_pod(UpdatePodOptions::create(pod("good", "good")));
    settle().await;
    assert_eq!(kinds(&pool, "good").len(), 1);
    let failures = events.failures();
    assert_eq!(failures.len(), 1);
    assert_eq!(failures[0].0, "bad");
    assert!(failures[0].2.contains("injected panic"), "{failures:?}");
    assert_eq!(pool.live_workers(), 2, "the worker survived its panic");
    // the panicking pod is retried and can still be terminated
    tokio::time::sleep(Duration::from_secs(16)).await;
    assert_eq!(kinds(&pool, "bad").len(), 2);
    pool.syncer().push_once("bad", Behavior::Panic);
    pool.update_pod(UpdatePodOptions::update(deleted(pod("bad", "bad"), 1)));
    tokio::time::sleep(Duration::from_secs(16)).await;
    assert!(pool.should_pod_be_finished("bad"));
    let f = events.failures();
    assert_eq!(f.last().map(|f| f.1), Some(PodWorkerState::Terminating));
    // errors are reported the same way
    pool.syncer().push_once("good", Behavior::Fail);
    pool.update_pod(UpdatePodOptions::update(pod("good", "good")));
    settle().await;
    assert_eq!(
        events.failures().last().map(|f| f.0.clone()),
        Some("good".into())
    );
    assert_no_violations(&pool);
}

#[tokio::test(start_paused = true)]
async fn worker_waits_for_status_newer_than_its_last_sync() {
    let (pool, _) = pool_with(FakeStatusCache::new());
    pool.update_pod(UpdatePodOptions::create(pod("a", "a")));
    settle().await;
    assert_eq!(
        pool.syncer().calls_for("a").len(),
        1,
        "first sync needs no wait"
    );
    pool.update_pod(UpdatePodOptions::update(pod("a", "a")));
    settle().await;
    assert_eq!(
        pool.syncer().calls_for("a").len(),
        1,
        "waits for fresher status"
    );
    assert_eq!(pool.cache().waiters(), 1);
    tokio::time::sleep(Duration::from_secs(5)).await;
    pool.cache().set("a", true);
    settle().await;
    let calls = pool.syncer().calls_for("a");
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[1].status_version, Some(1));
    // a global refresh also releases the wait
    pool.update_pod(UpdatePodOptions::update(pod("a", "a")));
    settle().await;
    assert_eq!(pool.syncer().calls_for("a").len(), 2);
    tokio::time::sleep(Duration::from_millis(5)).await;
    pool.cache().update_time();
    settle().await;
    assert_eq!(pool.syncer().calls_for("a").len(), 3);
}

#[tokio::test(start_paused = true)]
async fn status_cache_error_is_reported_and_retried() {
    let (pool, events) = new_pool();
    pool.cache().set_error("a", Some("inspect failed"));
    pool.update_pod(UpdatePodOptions::create(pod("a", "a")));
    settle().await;
    assert!(pool.syncer().calls_for("a").is_empty());
    assert!(events.failures()[0].2.contains("inspect failed"));
    pool.cache().set_error("a", None);
    tokio::time::sleep(Duration::from_secs(16)).await;
    assert_eq!(pool.syncer().calls_for("a").len(), 1);
}

#[tokio::test(start_paused = true)]
async fn terminate_abnormally_and_wait_completes_or_times_out() {
    let (pool, events) = new_pool();
    let a = Arc::new(pod("a", "a"));
    pool.update_pod(UpdatePodOptions::create(a.clone()));
    settle().await;
    pool.terminate_pod_abnormally_and_wait(a.clone(), TerminatePodOptions::default())
        .await
        .unwrap();
    assert!(pool.is_pod_known_terminated("a"));

    let b = Arc::new(pod("b", "b"));
    pool.update_pod(UpdatePodOptions::create(b.clone()));
    settle().await;
    pool.syncer().set_behavior("b", Behavior::Fail);
    let t0 = Instant::now();
    let err = pool
        .terminate_pod_abnormally_and_wait(
            b.clone(),
            TerminatePodOptions {
                grace_period_seconds_override: Some(2),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::TerminationTimeout { .. }), "{err}");
    assert_eq!(
        Instant::now() - t0,
        Duration::from_secs(10),
        "max(1.5*2s, 10s)"
    );
    assert_eq!(events.exceeded(), vec!["b".to_owned()]);
    // a pod with a long grace period gets 1.5 times it
    let c = Arc::new(pod("c", "c"));
    pool.syncer().set_behavior("c", Behavior::Fail);
    let t0 = Instant::now();
    let _ = pool
        .terminate_pod_abnormally_and_wait(c, TerminatePodOptions::default())
        .await;
    assert_eq!(Instant::now() - t0, Duration::from_secs(45));
}

#[tokio::test(start_paused = true)]
async fn shutdown_stops_every_worker() {
    let (pool, _) = new_pool();
    pool.syncer().set_behavior("a", Behavior::Fail);
    for uid in ["a", "b", "c"] {
        pool.update_pod(UpdatePodOptions::create(pod(uid, uid)));
    }
    let (kill, done) = KillPodOptions::with_completion(TerminatePodOptions::default());
    pool.update_pod(UpdatePodOptions::kill(pod("a", "a"), kill));
    settle().await;
    assert_eq!(pool.live_workers(), 3);
    pool.shutdown();
    settle().await;
    assert_eq!(pool.live_workers(), 0);
    assert!(done.await.is_err(), "waiter sees shutdown");
    pool.update_pod(UpdatePodOptions::create(pod("d", "d")));
    settle().await;
    assert_eq!(pool.live_workers(), 0);
    assert!(kinds(&pool, "d").is_empty());
}

#[tokio::test(start_paused = true)]
async fn invalid_updates_are_ignored() {
    let (pool, _) = new_pool();
    let mut p = pod("x", "x");
    p.metadata.uid = None;
    let (kill, mut done) = KillPodOptions::with_completion(TerminatePodOptions::default());
    pool.update_pod(UpdatePodOptions::kill(p, kill));
    pool.update_pod(UpdatePodOptions::default());
    settle().await;
    assert_eq!(done.try_recv(), Ok(()));
    assert_eq!(pool.known_pods(), 0);
    assert_eq!(pool.live_workers(), 0);
    assert!(pool.syncer().calls().is_empty());
}

#[tokio::test(start_paused = true)]
async fn kill_options_on_syncing_update_are_dropped_and_signalled() {
    // Upstream: "KillPodOptions is not valid for sync actions outside of the
    // terminating phase" - the channel is closed and the pod keeps running.
    let (pool, _) = new_pool();
    let (kill, mut done) = KillPodOptions::with_completion(TerminatePodOptions::default());
    let mut opts = UpdatePodOptions::update(pod("a", "a"));
    opts.kill_pod_options = Some(kill);
    pool.update_pod(opts);
    settle().await;
    assert_eq!(done.try_recv(), Ok(()));
    assert_eq!(pool.pod_state("a"), Some(PodWorkerState::Sync));
    assert_eq!(
        kinds(&pool, "a"),
        vec![CallKind::SyncPod(SyncPodType::Update)]
    );
}
