//! Container log rotation over a fake CRI runtime and real files: the live
//! log is renamed and reopened, at most `max_files` files are kept,
//! leftovers are cleaned, a failed reopen is rolled back, and symlinks are
//! never followed, renamed or removed.

// Test helpers outside #[test] functions unwrap too.
#![allow(clippy::unwrap_used)]

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::TestCri;
use kubelet_cri_client::Error as CriError;
use kubelet_kuberuntime::logs::{ContainerLogManager, Error, LogRotatePolicy};

const NOW: &str = "20231114-221320";

fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_700_000_000)
}

struct Bed {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    log: PathBuf,
    cri: Arc<TestCri>,
    id: String,
}

/// A running container whose live log is `<tmp>/pod/app/0.log`, holding
/// `size` bytes; ReopenContainerLog creates a new live file, as containerd.
async fn bed(size: usize) -> Bed {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("pod").join("app");
    fs::create_dir_all(&dir).unwrap();
    let log = dir.join("0.log");
    fs::write(&log, vec![b'x'; size]).unwrap();
    let cri = TestCri::new();
    cri.fake.add_image("busybox");
    let id = cri
        .container("app", "busybox", log.to_str().unwrap(), true)
        .await;
    cri.recreate_on_reopen(log.clone());
    Bed {
        _tmp: tmp,
        dir,
        log,
        cri,
        id,
    }
}

fn manager(b: &Bed, max_size: u64, max_files: usize) -> ContainerLogManager {
    ContainerLogManager::new(
        b.cri.clone(),
        LogRotatePolicy {
            max_size,
            max_files,
        },
    )
    .unwrap()
}

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

fn reopens(b: &Bed) -> usize {
    b.cri
        .fake
        .calls()
        .iter()
        .filter(|c| **c == "ReopenContainerLog")
        .count()
}

#[test]
fn policy_is_validated_as_upstream() {
    let cri = TestCri::new();
    let d = LogRotatePolicy::default();
    assert_eq!((d.max_size, d.max_files), (10 * 1024 * 1024, 5));
    for (max_size, max_files) in [(1024, 1), (1024, 0), (0, 5)] {
        let r = ContainerLogManager::new(
            cri.clone(),
            LogRotatePolicy {
                max_size,
                max_files,
            },
        );
        assert!(
            matches!(r, Err(Error::InvalidPolicy(_))),
            "{max_size} {max_files}"
        );
    }
}

#[tokio::test]
async fn a_log_over_the_size_is_renamed_and_reopened() {
    let b = bed(2000).await;
    let m = manager(&b, 1024, 3);
    let report = m.rotate_logs_at(now()).await.unwrap();
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(report.rotated.len(), 1);
    let r = &report.rotated[0];
    assert_eq!(r.container_id, b.id);
    assert_eq!(r.rotated_to, b.dir.join(format!("0.log.{NOW}")));
    assert_eq!(fs::read(&r.rotated_to).unwrap().len(), 2000);
    // The runtime reopened: a new, empty live log.
    assert_eq!(fs::metadata(&b.log).unwrap().len(), 0);
    assert_eq!(reopens(&b), 1);
    assert_eq!(
        names(&b.dir),
        vec!["0.log".to_owned(), format!("0.log.{NOW}")]
    );

    // Under the size: nothing happens.
    let report = m
        .rotate_logs_at(now() + Duration::from_secs(10))
        .await
        .unwrap();
    assert!(report.rotated.is_empty() && report.errors.is_empty());
    assert_eq!(reopens(&b), 1);
}

#[tokio::test]
async fn at_most_max_files_are_kept_and_leftovers_are_cleaned() {
    let b = bed(2000).await;
    let keep = [
        "0.log.foo",             // not a rotated name: left alone
        "1.log.20230101-000000", // another container's log
        "other",
    ];
    let rotated = [
        "0.log.20230101-000000",
        "0.log.20230102-000000",
        "0.log.20230103-000000.gz",
        "0.log.20230103-000000",     // already compressed: unused
        "0.log.20230104-000000.tmp", // interrupted compression
        "0.log.20230104-000000.gz.tmp",
    ];
    for n in keep.iter().chain(&rotated) {
        fs::write(b.dir.join(n), n).unwrap();
    }
    let m = manager(&b, 1024, 3);
    let report = m.rotate_logs_at(now()).await.unwrap();
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    let mut removed: Vec<String> = report.rotated[0]
        .removed
        .iter()
        .map(|p| p.file_name().unwrap().to_str().unwrap().to_owned())
        .collect();
    removed.sort();
    assert_eq!(
        removed,
        vec![
            "0.log.20230101-000000",
            "0.log.20230102-000000",
            "0.log.20230103-000000",
            "0.log.20230104-000000.gz.tmp",
            "0.log.20230104-000000.tmp",
        ]
    );
    // max_files 3: the live log, the newest older file, the one just rotated.
    let mut want: Vec<String> = keep.iter().map(|s| s.to_string()).collect();
    want.extend([
        "0.log".to_owned(),
        "0.log.20230103-000000.gz".to_owned(),
        format!("0.log.{NOW}"),
    ]);
    want.sort();
    assert_eq!(names(&b.dir), want);

    // Rotating again keeps 3 files of this log.
    fs::write(&b.log, vec![b'y'; 4096]).unwrap();
    let later = now() + Duration::from_secs(3600);
    let report = m.rotate_logs_at(later).await.unwrap();
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    let ours: Vec<String> = names(&b.dir)
        .into_iter()
        .filter(|n| n.starts_with("0.log") && n != "0.log.foo")
        .collect();
    assert_eq!(
        ours,
        vec![
            "0.log".to_owned(),
            format!("0.log.{NOW}"),
            "0.log.20231114-231320".to_owned()
        ]
    );
}

#[tokio::test]
async fn a_failed_reopen_renames_the_log_back() {
    let b = bed(2000).await;
    let m = manager(&b, 1024, 3);
    b.cri.fake.inject_error(
        "ReopenContainerLog",
        CriError::Unavailable {
            call: kubelet_cri_client::Call::with_id("ReopenContainerLog", b.id.clone()),
            message: "injected".into(),
        },
    );
    let report = m.rotate_logs_at(now()).await.unwrap();
    assert!(report.rotated.is_empty());
    match report.errors.as_slice() {
        [
            Error::Reopen {
                container,
                rolled_back,
                ..
            },
        ] => {
            assert_eq!(container, &b.id);
            assert!(rolled_back);
        }
        other => panic!("expected one Reopen error, got {other:?}"),
    }
    assert_eq!(names(&b.dir), vec!["0.log"]);
    assert_eq!(fs::read(&b.log).unwrap().len(), 2000);

    // The next round rotates.
    let report = m
        .rotate_logs_at(now() + Duration::from_secs(10))
        .await
        .unwrap();
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(report.rotated.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_reopen_that_hangs_times_out_and_is_rolled_back() {
    let b = bed(2000).await;
    let m = manager(&b, 1024, 3).with_reopen_timeout(Duration::from_secs(1));
    b.cri
        .fake
        .set_delay("ReopenContainerLog", Duration::from_secs(3600));
    let report = m.rotate_logs_at(now()).await.unwrap();
    match report.errors.as_slice() {
        [
            Error::Reopen {
                reason,
                rolled_back,
                ..
            },
        ] => {
            assert!(reason.contains("timed out"), "{reason}");
            assert!(rolled_back);
        }
        other => panic!("expected one Reopen error, got {other:?}"),
    }
    assert_eq!(names(&b.dir), vec!["0.log"]);
}

#[tokio::test]
async fn a_rollback_never_overwrites_a_new_live_log() {
    let b = bed(2000).await;
    let m = manager(&b, 1024, 3);
    // The runtime makes the new live file, then the call fails (as when
    // the kubelet's side times out after the runtime acted).
    let log = b.log.clone();
    *b.cri.before_reopen.lock().unwrap() =
        Some(Box::new(move |_| fs::write(&log, "new output").unwrap()));
    b.cri.fake.inject_error(
        "ReopenContainerLog",
        CriError::Unavailable {
            call: kubelet_cri_client::Call::new("ReopenContainerLog"),
            message: "injected".into(),
        },
    );
    let report = m.rotate_logs_at(now()).await.unwrap();
    match report.errors.as_slice() {
        [Error::Reopen { rolled_back, .. }] => assert!(!rolled_back),
        other => panic!("expected one Reopen error, got {other:?}"),
    }
    // Both outputs survive.
    assert_eq!(fs::read_to_string(&b.log).unwrap(), "new output");
    assert_eq!(
        fs::read(b.dir.join(format!("0.log.{NOW}"))).unwrap().len(),
        2000
    );
}

#[tokio::test]
async fn a_second_rotation_in_the_same_second_never_overwrites() {
    let b = bed(2000).await;
    let m = manager(&b, 1024, 5);
    assert_eq!(m.rotate_logs_at(now()).await.unwrap().rotated.len(), 1);
    fs::write(&b.log, vec![b'y'; 3000]).unwrap();
    let report = m.rotate_logs_at(now()).await.unwrap();
    assert!(report.rotated.is_empty());
    assert!(
        matches!(report.errors.as_slice(), [Error::Io { .. }]),
        "{:?}",
        report.errors
    );
    assert_eq!(fs::read(&b.log).unwrap().len(), 3000);
    assert_eq!(
        fs::read(b.dir.join(format!("0.log.{NOW}"))).unwrap().len(),
        2000
    );
}

#[tokio::test]
async fn symlinks_are_never_followed_renamed_or_removed() {
    let b = bed(0).await;
    let outside = b._tmp.path().join("outside");
    fs::write(&outside, vec![b'z'; 5000]).unwrap();
    // A live log that is a symlink to a big file elsewhere.
    fs::remove_file(&b.log).unwrap();
    std::os::unix::fs::symlink(&outside, &b.log).unwrap();
    let m = manager(&b, 1024, 2);
    let report = m.rotate_logs_at(now()).await.unwrap();
    assert!(report.rotated.is_empty());
    assert!(
        matches!(report.errors.as_slice(), [Error::Unsafe { .. }]),
        "{:?}",
        report.errors
    );
    assert!(
        fs::symlink_metadata(&b.log)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(fs::read(&outside).unwrap().len(), 5000);
    assert_eq!(reopens(&b), 0);

    // A rotated name that is a symlink is neither removed nor counted.
    fs::remove_file(&b.log).unwrap();
    fs::write(&b.log, vec![b'x'; 2000]).unwrap();
    let link = b.dir.join("0.log.20200101-000000");
    std::os::unix::fs::symlink(&outside, &link).unwrap();
    let report = m.rotate_logs_at(now()).await.unwrap();
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert!(report.rotated[0].removed.is_empty());
    assert!(
        fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(fs::read(&outside).unwrap().len(), 5000);

    // A log directory that is a symlink is refused.
    let real = b._tmp.path().join("real");
    fs::create_dir(&real).unwrap();
    fs::write(real.join("0.log"), vec![b'x'; 2000]).unwrap();
    let linked_dir = b._tmp.path().join("linked");
    std::os::unix::fs::symlink(&real, &linked_dir).unwrap();
    let cri = TestCri::new();
    cri.fake.add_image("busybox");
    cri.container(
        "c",
        "busybox",
        linked_dir.join("0.log").to_str().unwrap(),
        true,
    )
    .await;
    let m = ContainerLogManager::new(
        cri.clone(),
        LogRotatePolicy {
            max_size: 1024,
            max_files: 2,
        },
    )
    .unwrap();
    let report = m.rotate_logs_at(now()).await.unwrap();
    assert!(
        matches!(report.errors.as_slice(), [Error::Io { .. }]),
        "{:?}",
        report.errors
    );
    assert_eq!(names(&real), vec!["0.log"]);
}

#[tokio::test]
async fn a_missing_live_log_is_recovered_by_reopening() {
    let b = bed(0).await;
    fs::remove_file(&b.log).unwrap();
    let m = manager(&b, 1024, 3);
    let report = m.rotate_logs_at(now()).await.unwrap();
    assert!(report.errors.is_empty() && report.rotated.is_empty());
    assert_eq!(reopens(&b), 1);
    assert!(b.log.exists());
}

#[tokio::test]
async fn only_running_containers_are_rotated() {
    let b = bed(2000).await;
    b.cri.fake.exit_container(&b.id, 0, "Completed").unwrap();
    let m = manager(&b, 1024, 3);
    let report = m.rotate_logs_at(now()).await.unwrap();
    assert!(report.rotated.is_empty() && report.errors.is_empty());
    assert_eq!(names(&b.dir), vec!["0.log"]);
}

#[tokio::test]
async fn clean_removes_the_live_and_rotated_logs() {
    let b = bed(2000).await;
    fs::write(b.dir.join("0.log.20230101-000000.gz"), "").unwrap();
    fs::write(b.dir.join("0.log.foo"), "").unwrap();
    let m = manager(&b, 1024, 3);
    let removed = m.clean(&b.id).await.unwrap();
    assert_eq!(removed.len(), 2);
    assert_eq!(names(&b.dir), vec!["0.log.foo"]);
}

/// A container's log path is fixed at its creation: the manager asks
/// ContainerStatus for it once, not on every pass (upstream asks every
/// running container's status every 10 s), and the remembered path still
/// rotates.
#[tokio::test]
async fn each_container_status_is_asked_once_across_passes() {
    let b = bed(10).await;
    let m = manager(&b, 1024, 3);
    b.cri.fake.clear_calls();
    for _ in 0..3 {
        let report = m.rotate_logs_at(now()).await.unwrap();
        assert!(report.errors.is_empty() && report.rotated.is_empty());
    }
    let count = |name: &str| b.cri.fake.calls().iter().filter(|c| **c == name).count();
    assert_eq!(count("ListContainers"), 3);
    assert_eq!(count("ContainerStatus"), 1);
    fs::write(&b.log, vec![b'x'; 2000]).unwrap();
    let report = m.rotate_logs_at(now()).await.unwrap();
    assert_eq!(report.rotated.len(), 1, "{:?}", report.errors);
    assert_eq!(count("ContainerStatus"), 1);
}
