//! Upstream `cache_test.go`'s cases on tokio's paused clock.

use std::time::Duration;

use crate::cri as api;
use crate::{ContainerStatus, ContainerType};

use super::*;

fn status(uid: &str, version: &str) -> Result<Arc<PodStatus>, Error> {
    Ok(Arc::new(PodStatus {
        uid: uid.into(),
        name: version.into(),
        ..PodStatus::default()
    }))
}

fn name_of(entry: Result<Arc<PodStatus>, Error>) -> String {
    entry.expect("status").name.clone()
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Spawns a `get_newer_than` and reports whether it is still waiting.
fn wait(cache: &PodCache, uid: &str, min: Instant) -> tokio::task::JoinHandle<String> {
    let cache = cache.clone();
    let uid = uid.to_owned();
    tokio::spawn(async move { name_of(cache.get_newer_than(&uid, Some(min)).await) })
}

async fn settle() {
    for _ in 0..5 {
        tokio::task::yield_now().await;
    }
}

#[tokio::test(start_paused = true)]
async fn a_miss_is_an_empty_status_with_the_uid() {
    let cache = PodCache::new();
    let s = cache.get("nope").expect("default");
    assert_eq!(s.uid, "nope");
    assert!(s.sandbox_statuses.is_empty() && s.container_statuses.is_empty());
    assert_eq!(cache.timestamp(), None, "the global timestamp starts unset");
    assert!(cache.is_empty());
}

#[tokio::test(start_paused = true)]
async fn set_get_delete() {
    let cache = PodCache::new();
    let t = Instant::now();
    assert!(cache.set("a", status("a", "v1"), t));
    assert_eq!(name_of(cache.get("a")), "v1");
    assert_eq!(cache.modified("a"), Some(t));
    assert_eq!(cache.get_all().len(), 1);
    // Without the evented gate an older Set still wins, as upstream.
    assert!(cache.set("a", status("a", "v0"), t - ms(5)));
    assert_eq!(name_of(cache.get("a")), "v0");
    cache.delete("a");
    assert_eq!(name_of(cache.get("a")), "");
    assert!(cache.is_empty());
}

#[tokio::test(start_paused = true)]
async fn with_reject_older_an_older_set_is_ignored() {
    let cache = PodCache::new();
    cache.set_reject_older(true);
    let t = Instant::now();
    assert!(cache.set("a", status("a", "v1"), t));
    assert!(
        !cache.set("a", status("a", "v0"), t - ms(1)),
        "older: ignored"
    );
    assert_eq!(name_of(cache.get("a")), "v1");
    assert!(cache.set("a", status("a", "v1b"), t), "same time: taken");
    assert!(cache.set("a", status("a", "v2"), t + ms(1)));
    assert_eq!(name_of(cache.get("a")), "v2");
}

#[tokio::test(start_paused = true)]
async fn get_newer_than_returns_at_once_when_the_entry_is_newer() {
    let cache = PodCache::new();
    let t = Instant::now();
    cache.set("a", status("a", "v1"), t + ms(10));
    assert_eq!(name_of(cache.get_newer_than("a", Some(t)).await), "v1");
}

#[tokio::test(start_paused = true)]
async fn get_newer_than_waits_for_a_newer_set() {
    let cache = PodCache::new();
    let t = Instant::now();
    cache.set("a", status("a", "old"), t);
    // Same time is not newer.
    let waiter = wait(&cache, "a", t);
    settle().await;
    assert!(!waiter.is_finished());
    assert_eq!(cache.waiters(), 1);
    // A Set older than the wait's time does not wake it.
    cache.set("a", status("a", "older"), t - ms(1));
    settle().await;
    assert!(!waiter.is_finished());
    // Another pod's Set does not either.
    cache.set("b", status("b", "other"), t + ms(50));
    settle().await;
    assert!(!waiter.is_finished());
    cache.set("a", status("a", "new"), t + ms(1));
    assert_eq!(waiter.await.expect("join"), "new");
    assert_eq!(cache.waiters(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_set_at_exactly_the_wait_time_wakes_it() {
    // Upstream notify wakes when !timestamp.Before(minTime), while the
    // immediate check wants strictly after: both kept.
    let cache = PodCache::new();
    let t = Instant::now();
    let waiter = wait(&cache, "a", t);
    settle().await;
    assert!(!waiter.is_finished());
    cache.set("a", status("a", "same-time"), t);
    assert_eq!(waiter.await.expect("join"), "same-time");
}

#[tokio::test(start_paused = true)]
async fn a_newer_global_timestamp_releases_waiters_with_what_is_cached() {
    let cache = PodCache::new();
    let t = Instant::now();
    cache.set("a", status("a", "cached"), t - ms(100));
    let on_a = wait(&cache, "a", t);
    let on_missing = wait(&cache, "missing", t);
    settle().await;
    cache.update_time(t - ms(1));
    settle().await;
    assert!(!on_a.is_finished() && !on_missing.is_finished(), "older");
    cache.update_time(t + ms(1));
    assert_eq!(on_a.await.expect("join"), "cached");
    assert_eq!(on_missing.await.expect("join"), "", "the default status");
    // And afterwards, a wait older than the global timestamp returns at once.
    assert_eq!(name_of(cache.get_newer_than("zzz", Some(t)).await), "");
    // ... but not one newer than it.
    let later = wait(&cache, "zzz", t + ms(5));
    settle().await;
    assert!(!later.is_finished());
    later.abort();
}

#[tokio::test(start_paused = true)]
async fn delete_wakes_no_one() {
    let cache = PodCache::new();
    let t = Instant::now();
    cache.set("a", status("a", "v1"), t);
    let waiter = wait(&cache, "a", t);
    settle().await;
    cache.delete("a");
    settle().await;
    assert!(!waiter.is_finished());
    cache.update_time(t + ms(1));
    assert_eq!(waiter.await.expect("join"), "", "deleted: the default");
}

#[tokio::test(start_paused = true)]
async fn cancelled_waits_do_not_pile_up() {
    let cache = PodCache::new();
    let t = Instant::now();
    for _ in 0..10 {
        let w = wait(&cache, "a", t);
        settle().await;
        w.abort();
        settle().await;
    }
    assert_eq!(cache.waiters(), 0);
    assert!(
        lock(&cache.shared.inner)
            .subscribers
            .get("a")
            .is_none_or(|l| l.len() <= 1),
        "closed subscriptions are pruned"
    );
}

#[tokio::test(start_paused = true)]
async fn errors_are_cached_and_handed_to_waiters() {
    let cache = PodCache::new();
    let t = Instant::now();
    let waiter = {
        let cache = cache.clone();
        tokio::spawn(async move { cache.get_newer_than("a", Some(t)).await })
    };
    settle().await;
    let err = Error::runtime("default/a", std::io::Error::other("boom"));
    cache.set("a", Err(err), t + ms(1));
    let got = waiter.await.expect("join").expect_err("the error");
    assert!(got.to_string().contains("boom"), "{got}");
    assert!(cache.get_all().is_empty(), "errors are left out of get_all");
}

fn container(state: ContainerState) -> ContainerStatus {
    ContainerStatus {
        id: "c".into(),
        name: "app".into(),
        state,
        created_at: 0,
        started_at: 0,
        finished_at: 0,
        exit_code: 0,
        image: String::new(),
        image_ref: String::new(),
        hash: None,
        restart_count: 0,
        reason: String::new(),
        message: String::new(),
        container_type: ContainerType::Regular,
        pod_termination_grace_period: None,
    }
}

#[tokio::test(start_paused = true)]
async fn the_pod_workers_trait() {
    let cache = PodCache::new();
    let t = Instant::now();
    assert!(cache.is_runtime_terminal("unknown"));
    let running = PodStatus {
        uid: "a".into(),
        container_statuses: vec![container(ContainerState::Running)],
        ..PodStatus::default()
    };
    cache.set("a", Ok(Arc::new(running)), t);
    assert!(!cache.is_runtime_terminal("a"));
    let ready_sandbox = PodStatus {
        uid: "b".into(),
        sandbox_statuses: vec![api::PodSandboxStatus {
            id: "s".into(),
            state: api::PodSandboxState::SandboxReady as i32,
            ..Default::default()
        }],
        container_statuses: vec![container(ContainerState::Exited)],
        ..PodStatus::default()
    };
    cache.set("b", Ok(Arc::new(ready_sandbox)), t);
    assert!(!cache.is_runtime_terminal("b"));
    let dead = PodStatus {
        uid: "c".into(),
        container_statuses: vec![container(ContainerState::Exited)],
        ..PodStatus::default()
    };
    cache.set("c", Ok(Arc::new(dead)), t);
    assert!(cache.is_runtime_terminal("c"));

    // None: at once, whatever is there.
    let s = cache.get_newer_than("a", None).await.expect("status");
    assert_eq!(s.container_statuses.len(), 1);
    // Some(t): waits like get_newer_than.
    let waiter = {
        let cache = cache.clone();
        tokio::spawn(async move { cache.get_newer_than("a", Some(t)).await })
    };
    settle().await;
    assert!(!waiter.is_finished());
    cache.update_time(t + ms(1));
    assert_eq!(waiter.await.expect("join").expect("status").uid, "a");
}

#[test]
fn clones_share_the_cache() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("runtime");
    rt.block_on(async {
        let a = PodCache::new();
        let b = a.clone();
        a.set("x", status("x", "v"), Instant::now());
        assert_eq!(name_of(b.get("x")), "v");
        b.set_reject_older(true);
        assert!(a.rejects_older());
    });
}

/// A pod's first sync (`None`) waits for the first relist, as upstream's
/// zero time does: an empty answer before it would make a restarted
/// kubelet recreate running pods.
#[tokio::test(start_paused = true)]
async fn a_first_sync_waits_for_the_first_relist() {
    let cache = PodCache::new();
    let waiter = {
        let cache = cache.clone();
        tokio::spawn(async move { cache.get_newer_than("u1", None).await })
    };
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    assert!(!waiter.is_finished(), "nothing was listed yet");
    cache.update_time(tokio::time::Instant::now());
    let status = waiter.await.expect("task").expect("status");
    assert_eq!(status.uid, "u1");
    // Once listed, a first sync answers at once.
    let again = tokio::time::timeout(
        std::time::Duration::from_millis(1),
        cache.get_newer_than("u2", None),
    )
    .await;
    assert!(again.is_ok());
}

/// An event source's periodic refresh never stands for a relist: before
/// the first one, a restarted kubelet's first sync of a running pod waits
/// instead of seeing an empty status (which made the fault soak's kubelet
/// create a second sandbox and leak the first).
#[tokio::test(start_paused = true)]
async fn refresh_time_waits_for_the_first_relist() {
    let cache = PodCache::new();
    let first_sync = {
        let cache = cache.clone();
        tokio::spawn(async move { name_of(cache.get_newer_than("running", None).await) })
    };
    settle().await;
    assert!(!cache.refresh_time(Instant::now()), "no relist yet");
    settle().await;
    assert!(
        !first_sync.is_finished(),
        "an event refresh said nothing yet"
    );
    let t = Instant::now();
    cache.set("running", status("running", "relisted"), t);
    cache.update_time(t);
    assert_eq!(first_sync.await.expect("join"), "relisted");
    assert!(
        cache.refresh_time(t + ms(5)),
        "after the first relist it moves"
    );
    assert_eq!(
        name_of(cache.get_newer_than("gone", Some(t + ms(1))).await),
        "",
        "the refreshed time answers for pods without an entry"
    );
}
