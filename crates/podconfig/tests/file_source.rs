//! The file source against a real temporary directory: the inotify path (with
//! a relist period of an hour, so only inotify can deliver in time) and the
//! relist path (inotify disabled, short relist period).

// Test code: a panic is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use common::*;
use kubelet_podconfig::{
    CONFIG_SOURCE_ANNOTATION, Error, FILE_SOURCE, FileSource, PodConfig, PodOperation, PodUpdates,
};

const NODE: &str = "Node-A";
const WAIT: Duration = Duration::from_secs(5);

fn start(source: FileSource) -> (PodConfig, PodUpdates) {
    init_tracing();
    PodConfig::builder(NODE).source(source).start()
}

fn inotify_source(path: &Path) -> FileSource {
    FileSource::new(path, NODE).relist_period(Duration::from_secs(3600))
}

fn relist_source(path: &Path) -> FileSource {
    FileSource::new(path, NODE)
        .inotify(false)
        .relist_period(Duration::from_millis(100))
}

/// Writes atomically: a dotfile first (ignored), then a rename into place.
fn write_atomic(dir: &Path, name: &str, contents: &str) {
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, contents).unwrap();
    std::fs::rename(&tmp, dir.join(name)).unwrap();
}

async fn lifecycle(dir: &Path, updates: &mut PodUpdates, config: &PodConfig) {
    // Initial state: one pod.
    let add = expect(updates, WAIT, PodOperation::Add, &["a-node-a"]).await;
    assert_eq!(add.source, FILE_SOURCE);
    let pod = &add.pods[0];
    assert_eq!(
        pod.metadata.annotations.as_ref().unwrap()[CONFIG_SOURCE_ANNOTATION],
        "file"
    );
    assert_eq!(pod.spec.as_ref().unwrap().node_name.as_deref(), Some(NODE));
    assert!(config.sources_ready());
    assert!(config.seen_all_sources(&HashSet::from(["file".to_string()])));

    // Create.
    write_atomic(dir, "b.yaml", &manifest("b", "busybox:1"));
    let added = expect(updates, WAIT, PodOperation::Add, &["b-node-a"]).await;
    let old_uid = added.pods[0].metadata.uid.clone().unwrap();

    // Edit: the UID is a hash of the content, so the pod is replaced.
    write_atomic(dir, "b.yaml", &manifest("b", "busybox:2"));
    let removed = expect(updates, WAIT, PodOperation::Remove, &["b-node-a"]).await;
    assert_eq!(
        removed.pods[0].metadata.uid.as_deref(),
        Some(old_uid.as_str())
    );
    let readded = expect(updates, WAIT, PodOperation::Add, &["b-node-a"]).await;
    assert_eq!(
        readded.pods[0].spec.as_ref().unwrap().containers[0]
            .image
            .as_deref(),
        Some("busybox:2")
    );

    // Edit with an explicit UID: an UPDATE.
    let with_uid =
        |image: &str| manifest("u", image).replace("  name: u\n", "  name: u\n  uid: fixed-uid\n");
    write_atomic(dir, "u.yaml", &with_uid("nginx:1"));
    expect(updates, WAIT, PodOperation::Add, &["u-node-a"]).await;
    write_atomic(dir, "u.yaml", &with_uid("nginx:2"));
    let updated = expect(updates, WAIT, PodOperation::Update, &["u-node-a"]).await;
    assert_eq!(
        updated.pods[0].spec.as_ref().unwrap().containers[0]
            .image
            .as_deref(),
        Some("nginx:2")
    );

    // Rename into a dotfile: gone.
    std::fs::rename(dir.join("b.yaml"), dir.join(".b.yaml")).unwrap();
    expect(updates, WAIT, PodOperation::Remove, &["b-node-a"]).await;
    // Rename from outside into the directory: added.
    std::fs::rename(dir.join(".b.yaml"), dir.join("c.yaml")).unwrap();
    expect(updates, WAIT, PodOperation::Add, &["b-node-a"]).await;

    // A broken file, a subdirectory and an oversized file do not disturb the rest.
    // Written atomically so that no read sees a half-written file.
    write_atomic(
        dir,
        "broken.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: x\nspec:\n  containers: []\n",
    );
    std::fs::create_dir(dir.join("sub")).unwrap();
    std::fs::write(dir.join("sub/d.yaml"), manifest("d", "busybox")).unwrap();
    write_atomic(
        dir,
        "big.yaml",
        &format!("{}# {}\n", manifest("big", "busybox"), "x".repeat(2048)),
    );
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let rejected = config.rejected_manifests();
        let origins: Vec<_> = rejected.iter().map(|r| r.origin.clone()).collect();
        if origins.iter().any(|o| o.ends_with("broken.yaml"))
            && origins.iter().any(|o| o.ends_with("big.yaml"))
        {
            let broken = rejected
                .iter()
                .find(|r| r.origin.ends_with("broken.yaml"))
                .unwrap();
            assert_eq!(broken.source, "file");
            assert!(
                matches!(&*broken.error, Error::Invalid { .. }),
                "{}",
                broken.error
            );
            assert!(
                broken
                    .error
                    .to_string()
                    .contains("spec.containers: Required value")
            );
            let big = rejected
                .iter()
                .find(|r| r.origin.ends_with("big.yaml"))
                .unwrap();
            assert!(
                matches!(&*big.error, Error::TooLarge { limit: 1024, .. }),
                "{}",
                big.error
            );
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "rejections not reported: {origins:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Fixing the broken file clears its rejection and adds the pod.
    write_atomic(dir, "broken.yaml", &manifest("fixed", "busybox"));
    expect(updates, WAIT, PodOperation::Add, &["fixed-node-a"]).await;
    assert!(
        !config
            .rejected_manifests()
            .iter()
            .any(|r| r.origin.ends_with("broken.yaml"))
    );

    // Delete.
    std::fs::remove_file(dir.join("a.yaml")).unwrap();
    expect(updates, WAIT, PodOperation::Remove, &["a-node-a"]).await;

    assert_eq!(
        names(&config.merged_pods()),
        ["b-node-a", "fixed-node-a", "u-node-a"]
    );
}

#[tokio::test]
async fn inotify_path_sees_every_change_without_relisting() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.yaml"), manifest("a", "busybox")).unwrap();
    let (config, mut updates) = start(inotify_source(dir.path()).max_manifest_bytes(1024));
    lifecycle(dir.path(), &mut updates, &config).await;
}

#[tokio::test]
async fn relist_path_sees_every_change_without_inotify() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.yaml"), manifest("a", "busybox")).unwrap();
    let (config, mut updates) = start(relist_source(dir.path()).max_manifest_bytes(1024));
    lifecycle(dir.path(), &mut updates, &config).await;
}

#[tokio::test]
async fn without_inotify_nothing_is_seen_before_the_relist() {
    let dir = tempfile::tempdir().unwrap();
    let source = FileSource::new(dir.path(), NODE)
        .inotify(false)
        .relist_period(Duration::from_secs(3600));
    let (_config, mut updates) = start(source);
    expect(&mut updates, WAIT, PodOperation::Add, &[]).await;
    write_atomic(dir.path(), "a.yaml", &manifest("a", "busybox"));
    expect_quiet(&mut updates, Duration::from_millis(500)).await;
}

#[tokio::test]
async fn missing_path_is_an_empty_ready_source_then_picked_up() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("manifests");
    let (config, mut updates) = start(inotify_source(&path));
    // The empty ADD that says "ready".
    expect(&mut updates, WAIT, PodOperation::Add, &[]).await;
    assert!(config.sources_ready());
    // The watch is retried every second until the directory exists.
    std::fs::create_dir(&path).unwrap();
    write_atomic(&path, "a.yaml", &manifest("a", "busybox"));
    expect(&mut updates, WAIT, PodOperation::Add, &["a-node-a"]).await;
}

#[tokio::test]
async fn single_file_path() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pod.yaml");
    std::fs::write(&file, manifest("one", "busybox:1")).unwrap();
    let (_config, mut updates) = start(inotify_source(&file));
    expect(&mut updates, WAIT, PodOperation::Add, &["one-node-a"]).await;
    std::fs::write(&file, manifest("one", "busybox:2")).unwrap();
    expect(&mut updates, WAIT, PodOperation::Remove, &["one-node-a"]).await;
    let add = expect(&mut updates, WAIT, PodOperation::Add, &["one-node-a"]).await;
    assert_eq!(
        add.pods[0].spec.as_ref().unwrap().containers[0]
            .image
            .as_deref(),
        Some("busybox:2")
    );
    // Replaced by renames, as editors do, twice: the watch survives.
    for image in ["busybox:3", "busybox:4"] {
        write_atomic(dir.path(), "pod.yaml", &manifest("one", image));
        expect(&mut updates, WAIT, PodOperation::Remove, &["one-node-a"]).await;
        let add = expect(&mut updates, WAIT, PodOperation::Add, &["one-node-a"]).await;
        assert_eq!(
            add.pods[0].spec.as_ref().unwrap().containers[0]
                .image
                .as_deref(),
            Some(image)
        );
    }
    // Other files in the directory are not ours.
    std::fs::write(dir.path().join("other.yaml"), manifest("other", "busybox")).unwrap();
    expect_quiet(&mut updates, Duration::from_millis(300)).await;
    std::fs::remove_file(&file).unwrap();
    expect(&mut updates, WAIT, PodOperation::Remove, &["one-node-a"]).await;
}

#[tokio::test]
async fn duplicate_names_across_files_keep_the_first_and_report_the_second() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.yaml"), manifest("same", "busybox:1")).unwrap();
    std::fs::write(dir.path().join("b.yaml"), manifest("same", "busybox:2")).unwrap();
    let (config, mut updates) = start(relist_source(dir.path()));
    let add = expect(&mut updates, WAIT, PodOperation::Add, &["same-node-a"]).await;
    assert_eq!(
        add.pods[0].spec.as_ref().unwrap().containers[0]
            .image
            .as_deref(),
        Some("busybox:1")
    );
    let rejected = config.rejected_manifests();
    assert_eq!(rejected.len(), 1, "{rejected:?}");
    assert!(
        matches!(&*rejected[0].error, Error::DuplicateName { full_name, .. } if full_name == "same-node-a_default")
    );
}

#[tokio::test]
async fn a_broken_edit_keeps_the_pod_until_the_relist_drops_it() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.yaml"), manifest("a", "busybox")).unwrap();
    // inotify on, relist every 700 ms.
    let source = FileSource::new(dir.path(), NODE).relist_period(Duration::from_millis(700));
    let (config, mut updates) = start(source);
    expect(&mut updates, WAIT, PodOperation::Add, &["a-node-a"]).await;
    let mut sub = config.subscribe_rejections();
    // Atomic, so inotify never sees the half-written (empty) file in between,
    // which is rejected as Invalid rather than Decode.
    write_atomic(
        dir.path(),
        "a.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata: {",
    );
    let rejection = tokio::time::timeout(WAIT, sub.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(rejection.origin.ends_with("a.yaml"));
    assert!(matches!(&*rejection.error, Error::Decode { .. }));
    // The relist is authoritative: the pod goes.
    expect(&mut updates, WAIT, PodOperation::Remove, &["a-node-a"]).await;
}

#[tokio::test]
async fn duplicate_names_through_inotify_fall_back_to_a_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.yaml"), manifest("same", "busybox:1")).unwrap();
    let (config, mut updates) = start(inotify_source(dir.path()));
    expect(&mut updates, WAIT, PodOperation::Add, &["same-node-a"]).await;
    // A second file with the same pod name: the first keeps running.
    write_atomic(dir.path(), "b.yaml", &manifest("same", "busybox:2"));
    let deadline = tokio::time::Instant::now() + WAIT;
    while !config
        .rejected_manifests()
        .iter()
        .any(|r| matches!(&*r.error, Error::DuplicateName { .. }))
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "duplicate not reported"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let pods = config.merged_pods();
    assert_eq!(pods.len(), 1);
    assert_eq!(
        pods[0].spec.as_ref().unwrap().containers[0]
            .image
            .as_deref(),
        Some("busybox:1")
    );
    // Removing the first lets the second in at once, not at the next relist.
    std::fs::remove_file(dir.path().join("a.yaml")).unwrap();
    expect(&mut updates, WAIT, PodOperation::Remove, &["same-node-a"]).await;
    let add = expect(&mut updates, WAIT, PodOperation::Add, &["same-node-a"]).await;
    assert_eq!(
        add.pods[0].spec.as_ref().unwrap().containers[0]
            .image
            .as_deref(),
        Some("busybox:2")
    );
    assert!(config.rejected_manifests().is_empty());
}
