//! Lifecycle hooks and termination messages against a real containerd from
//! `scripts/testbed`: the preStop hook runs before SIGTERM, a container
//! that ignores SIGTERM is SIGKILLed after its grace period, and a message
//! written to `/dev/termination-log` (or, under `FallbackToLogsOnError`, the
//! log tail) shows in the container status after exit.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kubelet_kuberuntime::config::PodVolumes;
use kubelet_kuberuntime::{ContainerState, PodStatus, Runtime, RuntimeManager};
use kubelet_testbed::{BUSYBOX_IMAGE, Testbed};

mod kuberuntime_e2e;
use kuberuntime_e2e::{kill_and_remove, status};

fn pod(yaml: &str) -> Pod {
    serde_saphyr::from_str(&yaml.replace("BUSYBOX", BUSYBOX_IMAGE)).expect("manifest")
}

/// Polls until `done` holds for the pod status; panics after a generous
/// deadline (a hang guard, not a performance bound).
async fn wait_for(m: &RuntimeManager, p: &Pod, what: &str, done: impl Fn(&PodStatus) -> bool) {
    kubelet_testbed::wait_for(what, Duration::from_secs(90), || async {
        done(&status(m, p).await).then_some(())
    })
    .await;
}

async fn wait_for_file(path: &Path, content: &str) {
    kubelet_testbed::wait_for_file(path, content, Duration::from_secs(90)).await;
}

async fn teardown(m: &RuntimeManager, p: &Pod) {
    kill_and_remove(m, p).await;
    let left = status(m, p).await;
    assert!(
        left.sandbox_statuses.is_empty() && left.container_statuses.is_empty(),
        "nothing of the pod is left: {left:?}"
    );
}

fn volumes(shared: &Path, pod_dir: &Path) -> PodVolumes {
    PodVolumes {
        volumes: HashMap::from([("shared".to_string(), PathBuf::from(shared))]),
        pod_dir: Some(pod_dir.to_path_buf()),
        ..Default::default()
    }
}

#[tokio::test]
async fn the_pre_stop_hook_runs_before_sigterm() {
    let Some(bed) = Testbed::start() else { return };
    let (m, _) = kuberuntime_e2e::manager(&bed).await;
    let shared = tempfile::tempdir().expect("tempdir");
    let pod_dir = tempfile::tempdir().expect("tempdir");
    let p = pod(r#"
metadata: {name: prestop, namespace: default, uid: 11fec7c1-0000-4000-8000-000000000001}
spec:
  terminationGracePeriodSeconds: 20
  volumes: [{name: shared, emptyDir: {}}]
  containers:
  - name: app
    image: BUSYBOX
    imagePullPolicy: IfNotPresent
    command: [sh, -c, "trap 'echo TERM >> /shared/log; exit 0' TERM; echo started >> /shared/log; while true; do sleep 1 & wait $!; done"]
    volumeMounts: [{name: shared, mountPath: /shared}]
    lifecycle:
      preStop:
        exec: {command: [sh, -c, "sleep 1; echo prestop >> /shared/log"]}
"#);
    let vols = volumes(shared.path(), pod_dir.path());
    let r = m.sync_pod(&p, &status(&m, &p).await, &vols).await;
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    let log = shared.path().join("log");
    // The trap is set once "started" is written.
    wait_for_file(&log, "started").await;

    let running = status(&m, &p).await.to_running_pod();
    let t0 = Instant::now();
    m.kill_pod(Some(&p), &running, None).await.expect("kill");
    eprintln!("preStop + SIGTERM took {:?}", t0.elapsed());
    let lines: Vec<String> = std::fs::read_to_string(&log)
        .expect("log")
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(
        lines,
        ["started", "prestop", "TERM"],
        "preStop, then SIGTERM"
    );
    let st = status(&m, &p).await;
    let app = st.find_container_status_by_name("app").expect("app");
    assert_eq!(app.state, ContainerState::Exited);
    assert_eq!(
        app.exit_code, 0,
        "it exited from its TERM trap, not SIGKILL"
    );
    teardown(&m, &p).await;
}

#[tokio::test]
async fn a_container_ignoring_sigterm_is_killed_after_its_grace_period() {
    let Some(bed) = Testbed::start() else { return };
    let (m, _) = kuberuntime_e2e::manager(&bed).await;
    let shared = tempfile::tempdir().expect("tempdir");
    let pod_dir = tempfile::tempdir().expect("tempdir");
    let p = pod(r#"
metadata: {name: stubborn, namespace: default, uid: 11fec7c1-0000-4000-8000-000000000002}
spec:
  terminationGracePeriodSeconds: 2
  volumes: [{name: shared, emptyDir: {}}]
  containers:
  - name: app
    image: BUSYBOX
    imagePullPolicy: IfNotPresent
    command: [sh, -c, "trap '' TERM; echo ignoring > /shared/ready; sleep 3600"]
    volumeMounts: [{name: shared, mountPath: /shared}]
"#);
    let vols = volumes(shared.path(), pod_dir.path());
    let r = m.sync_pod(&p, &status(&m, &p).await, &vols).await;
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    wait_for_file(&shared.path().join("ready"), "ignoring").await;

    let running = status(&m, &p).await.to_running_pod();
    let t0 = Instant::now();
    m.kill_pod(Some(&p), &running, None).await.expect("kill");
    let took = t0.elapsed();
    eprintln!("a SIGTERM-ignoring container with a 2 s grace period was killed in {took:?}");
    assert!(
        took >= Duration::from_millis(1900),
        "SIGKILL came only after the grace period: {took:?}"
    );
    let st = status(&m, &p).await;
    let app = st.find_container_status_by_name("app").expect("app");
    assert_eq!(app.state, ContainerState::Exited, "it is gone");
    assert_eq!(app.exit_code, 137, "by SIGKILL");
    teardown(&m, &p).await;
}

#[tokio::test]
async fn termination_messages_show_in_the_status_after_exit() {
    let Some(bed) = Testbed::start() else { return };
    let (m, _) = kuberuntime_e2e::manager(&bed).await;
    let shared = tempfile::tempdir().expect("tempdir");
    let pod_dir = tempfile::tempdir().expect("tempdir");
    let p = pod(r#"
metadata: {name: messages, namespace: default, uid: 11fec7c1-0000-4000-8000-000000000003}
spec:
  restartPolicy: Never
  terminationGracePeriodSeconds: 2
  containers:
  - name: writer
    image: BUSYBOX
    imagePullPolicy: IfNotPresent
    command: [sh, -c, "printf 'bye from writer' > /dev/termination-log; exit 3"]
  - name: logger
    image: BUSYBOX
    imagePullPolicy: IfNotPresent
    terminationMessagePolicy: FallbackToLogsOnError
    command: [sh, -c, "echo line one; echo line two; exit 1"]
"#);
    let vols = volumes(shared.path(), pod_dir.path());
    let r = m.sync_pod(&p, &status(&m, &p).await, &vols).await;
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    wait_for(&m, &p, "both containers exit", |st| {
        st.container_statuses.len() == 2
            && st
                .container_statuses
                .iter()
                .all(|c| c.state == ContainerState::Exited)
    })
    .await;
    let st = status(&m, &p).await;
    let writer = st.find_container_status_by_name("writer").expect("writer");
    let logger = st.find_container_status_by_name("logger").expect("logger");
    eprintln!(
        "writer: exit {} message {:?}; logger: exit {} message {:?}",
        writer.exit_code, writer.message, logger.exit_code, logger.message
    );
    assert_eq!(writer.exit_code, 3);
    assert!(
        writer.message.ends_with("bye from writer"),
        "{:?}",
        writer.message
    );
    // The file lives under the pod directory, as upstream.
    let files: Vec<_> = std::fs::read_dir(pod_dir.path().join("containers/writer"))
        .expect("containers/writer")
        .collect();
    assert_eq!(files.len(), 1);
    assert_eq!(logger.exit_code, 1);
    assert!(
        logger.message.ends_with("line one\nline two\n"),
        "{:?}",
        logger.message
    );
    teardown(&m, &p).await;
}
