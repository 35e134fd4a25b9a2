//! Image GC and log rotation against a real containerd from
//! `scripts/testbed`: a chatty busybox container's log is rotated through
//! containerd's ReopenContainerLog and goes on in the new file, at most
//! `max_files` files kept; ImageFsInfo and statvfs give sane numbers, and
//! image GC removes the busybox image only once no container uses it,
//! never the pause image.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use k8s_openapi::api::core::v1::Pod;
use kubelet_cri_client::ImageService;
use kubelet_cri_client::api::ImageSpec;
use kubelet_kuberuntime::image_gc::{self, ImageGcManager, ImageGcPolicy};
use kubelet_kuberuntime::logs::{ContainerLogManager, LogRotatePolicy};
use kubelet_kuberuntime::{ContainerState, Runtime, RuntimeManager};
use kubelet_testbed::{BUSYBOX_IMAGE, PAUSE_IMAGE, Testbed};

mod kuberuntime_e2e;
use kuberuntime_e2e::{kill_and_remove as teardown, manager, status};

async fn start(m: &RuntimeManager, yaml: &str) -> (Pod, String) {
    let p: Pod = serde_saphyr::from_str(yaml).expect("manifest");
    let r = m
        .sync_pod(&p, &status(m, &p).await, &Default::default())
        .await;
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    let st = status(m, &p).await;
    let c = st.find_container_status_by_name("app").expect("app");
    assert_eq!(c.state, ContainerState::Running);
    let id = c.id.clone();
    (p, id)
}

fn size(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

async fn wait_for(what: &str, limit: Duration, mut ok: impl FnMut() -> bool) {
    kubelet_testbed::wait_for(what, limit, || {
        let done = ok();
        async move { done.then_some(()) }
    })
    .await;
}

fn rotated_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("log dir")
        .map(|e| e.expect("entry").file_name().into_string().expect("utf-8"))
        .filter(|n| n.starts_with("0.log."))
        .collect();
    names.sort();
    names
}

const CHATTY: &str = r#"
metadata: {name: chatty, namespace: default, uid: 10900000-0000-4000-8000-000000000001}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: app
    image: localhost/busybox:latest
    imagePullPolicy: Never
    command:
    - sh
    - -c
    - 'n=0; while true; do i=0; while [ $i -lt 1000 ]; do echo "round $n line $i aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"; i=$((i+1)); done; n=$((n+1)); sleep 1; done'
"#;

#[tokio::test]
async fn a_chatty_container_log_is_rotated_through_containerd() {
    let Some(bed) = Testbed::start() else { return };
    let (m, cri) = manager(&bed).await;
    let (p, id) = start(&m, CHATTY).await;
    let log: PathBuf = bed
        .log_dir()
        .join("default_chatty_10900000-0000-4000-8000-000000000001")
        .join("app")
        .join("0.log");
    let dir = log.parent().expect("dir").to_path_buf();
    const MAX: u64 = 64 * 1024;
    let logs = ContainerLogManager::new(
        Arc::new(cri.clone()),
        LogRotatePolicy {
            max_size: MAX,
            max_files: 3,
        },
    )
    .expect("policy")
    .with_reopen_timeout(Duration::from_secs(10));

    let mut rotations = Vec::new();
    for round in 0..4 {
        wait_for(
            "the log to reach the max size",
            Duration::from_secs(60),
            || size(&log) >= MAX,
        )
        .await;
        let report = logs.rotate_logs().await.expect("rotate");
        assert!(
            report.errors.is_empty(),
            "round {round}: {:?}",
            report.errors
        );
        assert_eq!(report.rotated.len(), 1, "round {round}");
        let r = &report.rotated[0];
        assert_eq!(r.container_id, id);
        assert_eq!(r.log_path, log);
        assert!(size(&r.rotated_to) >= MAX, "round {round}");
        rotations.push(r.rotated_to.clone());
        // At most max_files: the live log and two rotated ones.
        assert!(rotated_files(&dir).len() <= 2, "{:?}", rotated_files(&dir));
        // Rotated names have a one-second resolution.
        tokio::time::sleep(Duration::from_millis(1100)).await;
    }
    // containerd reopened: the container keeps writing to a new live file.
    wait_for(
        "output in the new live log",
        Duration::from_secs(20),
        || {
            std::fs::read_to_string(&log)
                .is_ok_and(|s| s.contains(" stdout ") && s.contains("line"))
        },
    )
    .await;
    let kept = rotated_files(&dir);
    assert_eq!(kept.len(), 2, "{kept:?}");
    // The two newest rotations are the ones kept.
    let newest: Vec<String> = rotations[rotations.len() - 2..]
        .iter()
        .map(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .expect("name")
                .to_owned()
        })
        .collect();
    assert_eq!(kept, newest);
    teardown(&m, &p).await;
}

const SLEEPER: &str = r#"
metadata: {name: sleeper, namespace: default, uid: 10900000-0000-4000-8000-000000000002}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - {name: app, image: "localhost/busybox:latest", imagePullPolicy: Never, command: [sleep, "3600"]}
"#;

#[tokio::test]
async fn image_gc_on_containerd_removes_only_unused_images() {
    let Some(bed) = Testbed::start() else { return };
    let (m, cri) = manager(&bed).await;
    let runtime: Arc<dyn kubelet_kuberuntime::CriRuntime> = Arc::new(cri.clone());
    let spec = |image: &str| ImageSpec {
        image: image.into(),
        ..Default::default()
    };
    let busybox = cri
        .image_status(spec(BUSYBOX_IMAGE), false)
        .await
        .expect("status")
        .expect("busybox present");
    assert!(
        cri.image_status(spec(PAUSE_IMAGE), false)
            .await
            .expect("status")
            .is_some()
    );

    // ImageFsInfo + statvfs.
    let idle = ImageGcManager::new(
        runtime.clone(),
        ImageGcPolicy {
            high_threshold_percent: 100,
            low_threshold_percent: 100,
            ..Default::default()
        },
    )
    .expect("policy")
    .with_sandbox_image(PAUSE_IMAGE);
    let stats = idle.image_fs_stats().await.expect("image fs stats");
    assert!(stats.mountpoint.exists(), "{}", stats.mountpoint.display());
    assert!(
        stats.mountpoint.starts_with(bed.dir()),
        "{}",
        stats.mountpoint.display()
    );
    assert!(stats.capacity_bytes > 0);
    assert!(stats.available_bytes <= stats.capacity_bytes);
    // containerd sums snapshot usage in the background (every 10 s): right
    // after start it may still say 0.
    assert!(stats.used_bytes <= stats.capacity_bytes, "{stats:?}");
    // Thresholds that do not trigger: nothing goes.
    let r = idle.garbage_collect(SystemTime::now()).await.expect("gc");
    assert!(r.removed.is_empty());
    assert!(r.fs_stats.is_some());

    // Forced thresholds: every eligible image goes.
    let forced = ImageGcManager::new(
        runtime.clone(),
        ImageGcPolicy {
            high_threshold_percent: 0,
            low_threshold_percent: 0,
            min_age: Duration::ZERO,
            max_age: None,
        },
    )
    .expect("policy")
    .with_sandbox_image(PAUSE_IMAGE);
    let (p, _) = start(&m, SLEEPER).await;
    // busybox is in use, pause is the sandbox image: nothing can go.
    match forced.garbage_collect(SystemTime::now()).await {
        Err(image_gc::Error::Insufficient { removed, freed, .. }) => {
            assert!(removed.is_empty(), "{removed:?}");
            assert_eq!(freed, 0);
        }
        other => panic!("expected Insufficient, got {other:?}"),
    }
    assert!(
        cri.image_status(spec(BUSYBOX_IMAGE), false)
            .await
            .expect("status")
            .is_some()
    );

    // Once the pod is gone, busybox is unused and goes; pause stays.
    teardown(&m, &p).await;
    let removed = match forced.garbage_collect(SystemTime::now()).await {
        Ok(r) => r.removed,
        Err(image_gc::Error::Insufficient { removed, .. }) => removed,
        Err(e) => panic!("gc: {e}"),
    };
    assert_eq!(removed, vec![busybox.id.clone()]);
    assert!(
        cri.image_status(spec(BUSYBOX_IMAGE), false)
            .await
            .expect("status")
            .is_none()
    );
    assert!(
        cri.image_status(spec(PAUSE_IMAGE), false)
            .await
            .expect("status")
            .is_some()
    );
}
