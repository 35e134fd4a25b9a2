//! Image garbage collection over a fake CRI runtime with a pretend image
//! filesystem: unused images go least recently used first down to the low
//! threshold; images in use, pinned, the sandbox image and young ones stay.

// Test helpers outside #[test] functions unwrap too.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::TestCri;
use kubelet_cri_client::RuntimeService;
use kubelet_kuberuntime::image_gc::{
    Error, FsCapacity, FsStat, ImageGcManager, ImageGcPolicy, Statvfs,
};

const CAPACITY: u64 = 1000;

fn t(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs)
}

fn fs(available: u64) -> Arc<dyn FsStat> {
    Arc::new(move |_: &Path| {
        Ok(FsCapacity {
            capacity_bytes: CAPACITY,
            available_bytes: available,
        })
    })
}

struct Ids {
    pause: String,
    in_use: String,
    exited: String,
    pinned: String,
    older: String,
    old: String,
    never: String,
    young: String,
}

/// Images whose history is known by `t(120)`:
/// - `pause` (the sandbox image), `in-use` (a running container),
///   `exited` (an exited container), `pinned` (pinned by the runtime);
/// - `older` last used at t(0), `old` at t(60), `never` never used: 60 bytes
///   each;
/// - `young`, 500 bytes, first seen at t(120).
async fn setup(cri: &Arc<TestCri>, gc: &ImageGcManager) -> Ids {
    let pause = cri.add_image("localhost/pause:3.10", 10, false).await;
    let in_use = cri.add_image("app:1", 100, false).await;
    let exited = cri.add_image("job:1", 100, false).await;
    let pinned = cri.add_image("pinned:1", 100, true).await;
    let older = cri.add_image("older:1", 60, false).await;
    let old = cri.add_image("old:1", 60, false).await;
    let never = cri.add_image("never:1", 60, false).await;

    cri.container("app", "app:1", "", true).await;
    let job = cri.container("job", "job:1", "", true).await;
    cri.fake.exit_container(&job, 0, "Completed").unwrap();
    let user = cri.container("older-user", "older:1", "", true).await;

    gc.detect_images(t(0)).await.unwrap();
    cri.fake.remove_container(&user).await.unwrap();
    let user = cri.container("old-user", "old:1", "", true).await;
    gc.detect_images(t(60)).await.unwrap();
    cri.fake.remove_container(&user).await.unwrap();

    let young = cri.add_image("young:1", 500, false).await;
    gc.detect_images(t(120)).await.unwrap();
    Ids {
        pause,
        in_use,
        exited,
        pinned,
        older,
        old,
        never,
        young,
    }
}

fn manager(cri: &Arc<TestCri>, available: u64, policy: ImageGcPolicy) -> ImageGcManager {
    *cri.mountpoint.lock().unwrap() = Some("/var/lib/containerd".into());
    ImageGcManager::new(cri.clone(), policy)
        .unwrap()
        .with_sandbox_image("localhost/pause:3.10")
        .with_fs_stat(fs(available))
}

#[test]
fn policy_is_validated_as_upstream() {
    assert!(ImageGcPolicy::default().validate().is_ok());
    let p = ImageGcPolicy::default();
    assert_eq!(
        (p.high_threshold_percent, p.low_threshold_percent),
        (85, 80)
    );
    assert_eq!(p.min_age, Duration::from_secs(120));
    assert_eq!(p.max_age, None);
    for (high, low) in [(101, 80), (85, 101), (80, 85)] {
        let bad = ImageGcPolicy {
            high_threshold_percent: high,
            low_threshold_percent: low,
            ..Default::default()
        };
        assert!(
            matches!(bad.validate(), Err(Error::InvalidPolicy(_))),
            "{high} {low}"
        );
        assert!(ImageGcManager::new(TestCri::new(), bad).is_err());
    }
    let equal = ImageGcPolicy {
        high_threshold_percent: 0,
        low_threshold_percent: 0,
        ..Default::default()
    };
    assert!(equal.validate().is_ok());
}

#[tokio::test]
async fn first_detection_dates_images_in_the_past_and_tracks_use() {
    let cri = TestCri::new();
    let gc = manager(&cri, 500, ImageGcPolicy::default());
    let ids = setup(&cri, &gc).await;
    let records = gc.records();
    assert_eq!(records[&ids.older].first_detected, UNIX_EPOCH);
    assert_eq!(records[&ids.older].last_used, Some(t(0)));
    assert_eq!(records[&ids.old].last_used, Some(t(60)));
    assert_eq!(records[&ids.never].last_used, None);
    assert_eq!(records[&ids.in_use].last_used, Some(t(120)));
    assert_eq!(records[&ids.exited].last_used, Some(t(120)));
    assert_eq!(records[&ids.young].first_detected, t(120));
    assert_eq!(records[&ids.young].size, 500);
    assert!(records[&ids.pause].pinned && records[&ids.pinned].pinned);
    assert!(!records[&ids.old].pinned);
}

#[tokio::test]
async fn frees_unused_images_least_recently_used_first_down_to_the_low_threshold() {
    let cri = TestCri::new();
    // 90 % used: free 1000 * 20 % - 100 = 100 bytes.
    let gc = manager(&cri, 100, ImageGcPolicy::default());
    let ids = setup(&cri, &gc).await;
    let result = gc.garbage_collect(t(150)).await.unwrap();
    // never (unused ever) first, young skipped (30 s < min age), then older;
    // 120 bytes >= 100: old stays.
    assert_eq!(result.removed, vec![ids.never.clone(), ids.older.clone()]);
    assert_eq!(result.freed_bytes, 120);
    assert_eq!(cri.removed(), result.removed);
    let stats = result.fs_stats.unwrap();
    assert_eq!(
        (stats.capacity_bytes, stats.available_bytes),
        (CAPACITY, 100)
    );
    assert_eq!(stats.used_bytes, 10 + 3 * 100 + 3 * 60 + 500);
    for kept in [
        &ids.pause,
        &ids.in_use,
        &ids.exited,
        &ids.pinned,
        &ids.old,
        &ids.young,
    ] {
        assert!(cri.has_image(kept), "{kept} was removed");
    }
    assert!(!gc.records().contains_key(&ids.never));
}

#[tokio::test]
async fn nothing_is_removed_under_the_high_threshold() {
    let cri = TestCri::new();
    // 84 % used.
    let gc = manager(&cri, 160, ImageGcPolicy::default());
    setup(&cri, &gc).await;
    cri.fake.clear_calls();
    let result = gc.garbage_collect(t(1000)).await.unwrap();
    assert!(result.removed.is_empty());
    assert_eq!(result.freed_bytes, 0);
    assert!(cri.removed().is_empty());
    assert_eq!(cri.images.lock().unwrap().len(), 8);
}

#[tokio::test]
async fn not_enough_eligible_images_is_an_error_after_removing_them() {
    let cri = TestCri::new();
    // Full: free 200 bytes; only never, older and old (180) may go.
    let gc = manager(&cri, 0, ImageGcPolicy::default());
    let ids = setup(&cri, &gc).await;
    match gc.garbage_collect(t(150)).await {
        Err(Error::Insufficient {
            wanted,
            freed,
            removed,
        }) => {
            assert_eq!((wanted, freed), (200, 180));
            assert_eq!(removed, vec![ids.never, ids.older, ids.old]);
        }
        other => panic!("expected Insufficient, got {other:?}"),
    }
    // Once min age has passed, young may go too.
    let result = gc.garbage_collect(t(120 + 121)).await.unwrap();
    assert_eq!(result.removed, vec![ids.young]);
}

#[tokio::test]
async fn failed_removals_are_reported_and_the_others_go_on() {
    let cri = TestCri::new();
    let gc = manager(&cri, 0, ImageGcPolicy::default());
    let ids = setup(&cri, &gc).await;
    cri.remove_fails.lock().unwrap().insert(ids.older.clone());
    match gc.garbage_collect(t(150)).await {
        Err(Error::Remove {
            freed,
            removed,
            errors,
            ..
        }) => {
            assert_eq!(freed, 120);
            assert_eq!(removed, vec![ids.never, ids.old]);
            assert_eq!(errors.len(), 1);
            assert_eq!(errors[0].0, ids.older);
        }
        other => panic!("expected Remove, got {other:?}"),
    }
    assert!(cri.has_image(&ids.older));
    assert!(gc.records().contains_key(&ids.older));
}

#[tokio::test]
async fn delete_unused_images_removes_every_eligible_image() {
    let cri = TestCri::new();
    let gc = manager(&cri, 900, ImageGcPolicy::default());
    let ids = setup(&cri, &gc).await;
    let result = gc.delete_unused_images(t(150)).await.unwrap();
    assert_eq!(result.removed, vec![ids.never, ids.older, ids.old]);
    assert_eq!(result.freed_bytes, 180);
    assert!(cri.has_image(&ids.young) && cri.has_image(&ids.pause));
}

#[tokio::test]
async fn max_age_removes_long_unused_images_whatever_the_usage() {
    let cri = TestCri::new();
    let policy = ImageGcPolicy {
        max_age: Some(Duration::from_secs(3600)),
        ..Default::default()
    };
    let gc = manager(&cri, 900, policy);
    // Collection begins at t(0), before the images appear.
    assert!(gc.garbage_collect(t(0)).await.unwrap().removed.is_empty());
    let ids = setup(&cri, &gc).await;
    // Nothing has been unused for an hour yet.
    assert!(
        gc.garbage_collect(t(3000))
            .await
            .unwrap()
            .removed
            .is_empty()
    );
    // older was last used at t(0), old at t(60), never was first seen at
    // t(0); young, first seen at t(120) and never used, is 3550 s old.
    let result = gc.garbage_collect(t(3670)).await.unwrap();
    let mut removed = result.removed.clone();
    removed.sort();
    let mut want = vec![ids.never, ids.older, ids.old];
    want.sort();
    assert_eq!(removed, want);
    assert_eq!(result.freed_bytes, 180);
    assert!(cri.has_image(&ids.young) && cri.has_image(&ids.in_use));
}

#[tokio::test]
async fn a_runtime_without_an_image_filesystem_is_an_error() {
    let cri = TestCri::new();
    cri.add_image("a:1", 10, false).await;
    let gc = ImageGcManager::new(cri.clone(), ImageGcPolicy::default()).unwrap();
    assert!(matches!(
        gc.garbage_collect(t(0)).await,
        Err(Error::NoImageFs)
    ));
    let zero = manager(&cri, 0, ImageGcPolicy::default())
        .with_fs_stat(Arc::new(|_: &Path| Ok(FsCapacity::default())));
    assert!(matches!(
        zero.garbage_collect(t(0)).await,
        Err(Error::InvalidCapacity { .. })
    ));
    // The plain fake answers an empty ImageFsInfo.
    let fake = kubelet_cri_client::FakeRuntime::new();
    let gc = ImageGcManager::new(Arc::new(fake.clone()), ImageGcPolicy::default()).unwrap();
    assert!(matches!(gc.image_fs_stats().await, Err(Error::NoImageFs)));
    assert!(fake.list_containers(None).await.unwrap().is_empty());
}

#[test]
fn statvfs_reads_a_real_filesystem() {
    let dir = tempfile::tempdir().unwrap();
    let cap = Statvfs.fs_capacity(dir.path()).unwrap();
    assert!(cap.capacity_bytes > 0);
    assert!(cap.available_bytes <= cap.capacity_bytes);
    assert!(Statvfs.fs_capacity(&dir.path().join("missing")).is_err());
}
