//! SyncPod and KillPod against the in-memory `FakeRuntime`: the CRI calls
//! made, in upstream's order, and the state they leave.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use kubelet_cri_client::{FakeRuntime, RuntimeService};
use kubelet_kuberuntime::config::ConfigOptions;
use kubelet_kuberuntime::{ContainerState, Error, Runtime, RuntimeManager, RuntimeReader};

fn pod(yaml: &str) -> Pod {
    serde_saphyr::from_str(yaml).expect("test manifest")
}

const WEB: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: default, uid: uid-web}
spec:
  restartPolicy: Always
  containers:
  - name: app
    image: localhost/busybox:latest
    imagePullPolicy: IfNotPresent
    command: [sleep, "3600"]
  - name: side
    image: localhost/busybox:latest
    imagePullPolicy: IfNotPresent
    command: [sleep, "3600"]
"#;

fn setup() -> (FakeRuntime, RuntimeManager, tempfile::TempDir) {
    let fake = FakeRuntime::new();
    fake.add_image("localhost/busybox:latest");
    let logs = tempfile::tempdir().expect("tempdir");
    let opts = ConfigOptions {
        pod_logs_dir: logs.path().to_path_buf(),
        ..ConfigOptions::new(std::sync::Arc::new(kubelet_cm::StaticResources::default()))
    };
    let manager = RuntimeManager::new(Arc::new(fake.clone()), opts);
    (fake, manager, logs)
}

async fn status_of(m: &RuntimeManager, p: &Pod) -> kubelet_kuberuntime::PodStatus {
    m.get_pod_status(
        p.metadata.uid.as_deref().unwrap_or_default(),
        p.metadata.name.as_deref().unwrap_or_default(),
        "default",
    )
    .await
    .expect("pod status")
}

#[tokio::test]
async fn a_new_pod_is_created_in_upstream_order() {
    let (fake, m, logs) = setup();
    let p = pod(WEB);
    let st = status_of(&m, &p).await;
    fake.clear_calls();
    let r = m.sync_pod(&p, &st, &Default::default()).await;
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_eq!(r.started_containers, ["app", "side"]);
    assert_eq!(
        fake.calls(),
        [
            "RunPodSandbox",
            "PodSandboxStatus",
            "ImageStatus",
            "CreateContainer",
            "StartContainer",
            "ImageStatus",
            "CreateContainer",
            "StartContainer"
        ]
    );
    // The pod's log directory and each container's were made.
    assert!(logs.path().join("default_web_uid-web/app").is_dir());
    let st = status_of(&m, &p).await;
    assert_eq!(st.sandbox_statuses.len(), 1);
    assert_eq!(st.running_containers().count(), 2);
    assert!(!st.ips.is_empty(), "the pod IP comes from the sandbox");
}

#[tokio::test]
async fn a_crashed_container_restarts_in_the_same_sandbox_with_a_higher_count() {
    let (fake, m, _logs) = setup();
    let p = pod(WEB);
    m.sync_pod(&p, &status_of(&m, &p).await, &Default::default())
        .await;
    let before = status_of(&m, &p).await;
    let app = before
        .find_container_status_by_name("app")
        .expect("app")
        .clone();
    fake.exit_container(&app.id, 1, "Error").expect("exit");

    let r = m
        .sync_pod(&p, &status_of(&m, &p).await, &Default::default())
        .await;
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_eq!(r.started_containers, ["app"], "only the dead one");
    assert!(r.created_sandbox.is_none());
    let after = status_of(&m, &p).await;
    let new_app = after.find_container_status_by_name("app").expect("app");
    assert_ne!(new_app.id, app.id);
    assert_eq!(new_app.restart_count, 1);
    assert_eq!(new_app.state, ContainerState::Running);
    assert_eq!(after.sandbox_statuses.len(), 1);
}

#[tokio::test]
async fn a_restarted_manager_recovers_state_and_restarts_nothing() {
    let (fake, m, logs) = setup();
    let p = pod(WEB);
    m.sync_pod(&p, &status_of(&m, &p).await, &Default::default())
        .await;
    let ids: Vec<String> = status_of(&m, &p)
        .await
        .container_statuses
        .iter()
        .map(|c| c.id.clone())
        .collect();
    drop(m);
    // A new manager knows only what the runtime's labels and annotations say.
    let m2 = RuntimeManager::new(
        Arc::new(fake.clone()),
        ConfigOptions {
            pod_logs_dir: logs.path().to_path_buf(),
            ..ConfigOptions::new(std::sync::Arc::new(kubelet_cm::StaticResources::default()))
        },
    );
    fake.clear_calls();
    let r = m2
        .sync_pod(&p, &status_of(&m2, &p).await, &Default::default())
        .await;
    assert!(
        r.errors.is_empty() && r.started_containers.is_empty() && !r.killed_pod,
        "{r:?}"
    );
    let still: Vec<String> = status_of(&m2, &p)
        .await
        .container_statuses
        .iter()
        .map(|c| c.id.clone())
        .collect();
    assert_eq!(ids, still);
    assert!(!fake.calls().contains(&"StopContainer"));
    let pods = m2.get_pods(false).await.expect("pods");
    assert_eq!(pods.len(), 1);
    assert_eq!(
        (pods[0].name.as_str(), pods[0].containers.len()),
        ("web", 2)
    );
}

#[tokio::test]
async fn kill_pod_stops_containers_then_the_sandbox() {
    let (fake, m, _logs) = setup();
    let p = pod(WEB);
    m.sync_pod(&p, &status_of(&m, &p).await, &Default::default())
        .await;
    let running = status_of(&m, &p).await.to_running_pod();
    fake.clear_calls();
    m.kill_pod(Some(&p), &running, None).await.expect("kill");
    let calls = fake.calls();
    assert_eq!(calls, ["StopContainer", "StopContainer", "StopPodSandbox"]);
    let st = status_of(&m, &p).await;
    assert_eq!(st.running_containers().count(), 0);
    assert!(!st.has_ready_sandbox());
    m.remove_pod(&running).await.expect("remove");
    assert!(fake.list_pod_sandbox(None).await.expect("list").is_empty());
}

#[tokio::test]
async fn never_pull_of_a_missing_image_is_a_clear_error() {
    let (_fake, m, _logs) = setup();
    let p = pod(r#"
metadata: {name: np, namespace: default, uid: uid-np}
spec:
  containers:
  - {name: app, image: "localhost/absent:1", imagePullPolicy: Never}
"#);
    let r = m
        .sync_pod(&p, &status_of(&m, &p).await, &Default::default())
        .await;
    assert!(
        matches!(r.error(), Some(Error::ImageNeverPull { image, .. }) if image == "localhost/absent:1"),
        "{:?}",
        r.errors
    );
}

#[tokio::test]
async fn a_failing_container_does_not_stop_the_others() {
    let (fake, m, _logs) = setup();
    let p = pod(WEB);
    fake.inject_error(
        "CreateContainer",
        kubelet_cri_client::Error::Unavailable {
            call: kubelet_cri_client::Call::new("CreateContainer"),
            message: "boom".into(),
        },
    );
    let r = m
        .sync_pod(&p, &status_of(&m, &p).await, &Default::default())
        .await;
    assert_eq!(r.started_containers, ["side"]);
    assert!(
        matches!(r.error(), Some(Error::CreateContainer { container, .. }) if container == "app")
    );
}

#[tokio::test]
async fn init_containers_gate_the_app_containers() {
    let (fake, m, _logs) = setup();
    let p = pod(r#"
metadata: {name: init, namespace: default, uid: uid-init}
spec:
  restartPolicy: Never
  initContainers:
  - {name: i1, image: "localhost/busybox:latest", imagePullPolicy: IfNotPresent}
  - {name: i2, image: "localhost/busybox:latest", imagePullPolicy: IfNotPresent}
  containers:
  - {name: app, image: "localhost/busybox:latest", imagePullPolicy: IfNotPresent}
"#);
    let r = m
        .sync_pod(&p, &status_of(&m, &p).await, &Default::default())
        .await;
    assert_eq!(r.started_containers, ["i1"]);
    let i1 = status_of(&m, &p)
        .await
        .find_container_status_by_name("i1")
        .expect("i1")
        .id
        .clone();
    fake.exit_container(&i1, 0, "Completed").expect("exit");
    let r = m
        .sync_pod(&p, &status_of(&m, &p).await, &Default::default())
        .await;
    assert_eq!(r.started_containers, ["i2"]);
    let i2 = status_of(&m, &p)
        .await
        .find_container_status_by_name("i2")
        .expect("i2")
        .id
        .clone();
    fake.exit_container(&i2, 2, "Error").expect("exit");
    // i2 failed and the policy is Never: the pod is killed, app never starts.
    let r = m
        .sync_pod(&p, &status_of(&m, &p).await, &Default::default())
        .await;
    assert!(r.killed_pod && r.started_containers.is_empty(), "{r:?}");
    assert!(
        status_of(&m, &p)
            .await
            .find_container_status_by_name("app")
            .is_none()
    );
}

#[tokio::test]
async fn sidecars_start_in_order_run_beside_the_app_and_restart_alone() {
    let (fake, m, _logs) = setup();
    // restartPolicy Never: the sidecar restarts anyway.
    let p = pod(r#"
metadata: {name: side, namespace: default, uid: uid-side}
spec:
  restartPolicy: Never
  initContainers:
  - {name: s1, image: "localhost/busybox:latest", imagePullPolicy: IfNotPresent, restartPolicy: Always}
  - {name: i2, image: "localhost/busybox:latest", imagePullPolicy: IfNotPresent}
  containers:
  - {name: app, image: "localhost/busybox:latest", imagePullPolicy: IfNotPresent}
"#);
    let sync = || async {
        m.sync_pod(&p, &status_of(&m, &p).await, &Default::default())
            .await
    };
    let id = |name: &'static str| {
        let m = &m;
        let p = &p;
        async move {
            status_of(m, p)
                .await
                .find_container_status_by_name(name)
                .map(|c| c.id.clone())
                .unwrap_or_default()
        }
    };
    assert_eq!(sync().await.started_containers, ["s1"]);
    // s1 runs (no startup probe): i2 starts beside it.
    assert_eq!(sync().await.started_containers, ["i2"]);
    assert!(sync().await.started_containers.is_empty(), "i2 runs");
    fake.exit_container(&id("i2").await, 0, "Completed")
        .expect("exit");
    assert_eq!(sync().await.started_containers, ["app"]);
    let st = status_of(&m, &p).await;
    assert_eq!(
        st.running_containers().count(),
        2,
        "s1 and app run together"
    );
    let app = id("app").await;

    // The sidecar exits: only it restarts, with a higher count.
    let s1 = id("s1").await;
    fake.exit_container(&s1, 1, "Error").expect("exit");
    let r = sync().await;
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert!(!r.killed_pod);
    assert_eq!(r.started_containers, ["s1"]);
    let st = status_of(&m, &p).await;
    let new_s1 = st.find_container_status_by_name("s1").expect("s1");
    assert_ne!(new_s1.id, s1);
    assert_eq!(new_s1.restart_count, 1);
    assert_eq!(new_s1.state, ContainerState::Running);
    assert_eq!(id("app").await, app, "the app container was left alone");

    // The app container finishes: the pod is done, the sidecar stopped.
    fake.exit_container(&app, 0, "Completed").expect("exit");
    let r = sync().await;
    assert!(r.killed_pod && r.started_containers.is_empty(), "{r:?}");
    assert_eq!(status_of(&m, &p).await.running_containers().count(), 0);
}

#[tokio::test]
async fn the_pre_stop_hook_runs_before_the_container_is_stopped() {
    let (fake, m, _logs) = setup();
    let p = pod(r#"
metadata: {name: hooked, namespace: default, uid: uid-hooked}
spec:
  terminationGracePeriodSeconds: 5
  containers:
  - name: app
    image: localhost/busybox:latest
    imagePullPolicy: IfNotPresent
    lifecycle:
      preStop:
        exec: {command: [sh, -c, "echo bye"]}
"#);
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = seen.clone();
    fake.set_exec_handler(move |_, cmd| {
        record.lock().unwrap().push(cmd.join(" "));
        Default::default()
    });
    m.sync_pod(&p, &status_of(&m, &p).await, &Default::default())
        .await;
    let running = status_of(&m, &p).await.to_running_pod();
    fake.clear_calls();
    m.kill_pod(Some(&p), &running, None).await.expect("kill");
    assert_eq!(
        fake.calls(),
        ["ExecSync", "StopContainer", "StopPodSandbox"]
    );
    assert_eq!(*seen.lock().unwrap(), ["sh -c echo bye"]);
}

#[tokio::test]
async fn a_crash_looping_container_backs_off_10_then_20_seconds() {
    use kubelet_container::flowcontrol::{Backoff, FakeClock};
    let fake = FakeRuntime::new();
    fake.add_image("localhost/busybox:latest");
    let logs = tempfile::tempdir().expect("tempdir");
    let clock = Arc::new(FakeClock::new());
    let m = RuntimeManager::new(
        Arc::new(fake.clone()),
        ConfigOptions {
            pod_logs_dir: logs.path().to_path_buf(),
            ..ConfigOptions::new(std::sync::Arc::new(kubelet_cm::StaticResources::default()))
        },
    )
    .with_backoffs(
        Arc::new(Backoff::crash_loop().clock(clock.clone())),
        Arc::new(Backoff::image_pull().clock(clock.clone())),
    );
    let p = pod(WEB);
    let crash = |fake: &FakeRuntime, st: &kubelet_kuberuntime::PodStatus| {
        let id = st
            .find_container_status_by_name("app")
            .expect("app")
            .id
            .clone();
        fake.exit_container(&id, 1, "Error").expect("exit");
    };
    m.sync_pod(&p, &status_of(&m, &p).await, &Default::default())
        .await;

    // First crash: restarted at once (the backoff starts counting now).
    crash(&fake, &status_of(&m, &p).await);
    let r = m
        .sync_pod(&p, &status_of(&m, &p).await, &Default::default())
        .await;
    assert_eq!(r.started_containers, ["app"], "{:?}", r.errors);

    // Second crash: 10 s of backoff.
    crash(&fake, &status_of(&m, &p).await);
    let r = m
        .sync_pod(&p, &status_of(&m, &p).await, &Default::default())
        .await;
    assert!(
        matches!(r.error(), Some(Error::CrashLoopBackOff { delay, .. }) if delay.as_secs() == 10),
        "{:?}",
        r.errors
    );
    clock.advance(std::time::Duration::from_secs(9));
    let r = m
        .sync_pod(&p, &status_of(&m, &p).await, &Default::default())
        .await;
    assert!(r.started_containers.is_empty(), "still backing off at 9 s");
    clock.advance(std::time::Duration::from_secs(2));
    let r = m
        .sync_pod(&p, &status_of(&m, &p).await, &Default::default())
        .await;
    assert_eq!(r.started_containers, ["app"], "{:?}", r.errors);

    // Third crash: 20 s.
    crash(&fake, &status_of(&m, &p).await);
    let r = m
        .sync_pod(&p, &status_of(&m, &p).await, &Default::default())
        .await;
    assert!(
        matches!(r.error(), Some(Error::CrashLoopBackOff { delay, .. }) if delay.as_secs() == 20),
        "{:?}",
        r.errors
    );
    let st = status_of(&m, &p).await;
    assert_eq!(
        st.find_container_status_by_name("app")
            .map(|c| c.restart_count),
        Some(2)
    );
}

fn always_pull(name: &str) -> Pod {
    pod(&format!(
        "metadata: {{name: {name}, namespace: default, uid: uid-{name}}}\nspec:\n  containers:\n  - {{name: app, image: \"registry.local/app:1\", imagePullPolicy: Always}}\n"
    ))
}

#[tokio::test]
async fn pulls_are_serial_by_default() {
    let (fake, m, _logs) = setup();
    let m = Arc::new(m);
    fake.set_delay("PullImage", std::time::Duration::from_millis(150));
    let started = std::time::Instant::now();
    let mut tasks = Vec::new();
    for name in ["a", "b", "c"] {
        let m = m.clone();
        tasks.push(tokio::spawn(async move {
            let p = always_pull(name);
            let st = status_of(&m, &p).await;
            m.sync_pod(&p, &st, &Default::default()).await
        }));
    }
    for t in tasks {
        let r = t.await.expect("task");
        assert!(r.errors.is_empty(), "{:?}", r.errors);
    }
    // Three 150 ms pulls one after another cannot take less than 450 ms.
    assert!(started.elapsed() >= std::time::Duration::from_millis(450));
    assert_eq!(fake.pulls().len(), 3);
}

#[tokio::test]
async fn pulls_over_the_registry_rate_are_refused_and_back_off() {
    let (fake, m, _logs) = setup();
    let m = m.with_image_pull_policy(kubelet_kuberuntime::ImagePullPolicy {
        max_parallel: 2,
        registry_qps: 1,
        registry_burst: 1,
    });
    let first = always_pull("first");
    let r = m
        .sync_pod(&first, &status_of(&m, &first).await, &Default::default())
        .await;
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    let second = always_pull("second");
    let r = m
        .sync_pod(&second, &status_of(&m, &second).await, &Default::default())
        .await;
    assert!(
        matches!(r.error(), Some(Error::ImagePullQpsExceeded { .. })),
        "{:?}",
        r.errors
    );
    // The refused pull starts a backoff: the next sync does not even try.
    let r = m
        .sync_pod(&second, &status_of(&m, &second).await, &Default::default())
        .await;
    assert!(
        matches!(r.error(), Some(Error::ImagePullBackOff { .. })),
        "{:?}",
        r.errors
    );
    assert_eq!(fake.pulls().len(), 1);
}

struct Secrets;

#[async_trait::async_trait]
impl kubelet_kuberuntime::credentials::PullSecrets for Secrets {
    async fn docker_configs(&self, namespace: &str, names: &[String]) -> Vec<(String, Vec<u8>)> {
        names
            .iter()
            .filter(|n| namespace == "default" && n.as_str() == "team-creds")
            .map(|n| {
                (
                    format!("secret {namespace}/{n}"),
                    br#"{"auths": {"registry.example.com/team": {"username": "team", "password": "s3cret"}}}"#.to_vec(),
                )
            })
            .collect()
    }
}

/// Upstream pullImage: the pod's pull secrets first, then the node's
/// keyring, each tried in turn until one pull succeeds; an image no
/// credential matches is pulled anonymously.
#[tokio::test]
async fn pulls_try_the_pod_secrets_then_the_node_keyring() {
    let (fake, m, _logs) = setup();
    let mut keyring = kubelet_kuberuntime::credentials::DockerKeyring::new();
    keyring
        .add_config(
            "node config.json",
            br#"{"auths": {"registry.example.com": {"username": "node", "password": "n"}}}"#,
        )
        .expect("config");
    let m = m.with_keyring(keyring).with_pull_secrets(Arc::new(Secrets));
    let p = pod(r#"
apiVersion: v1
kind: Pod
metadata: {name: private, namespace: default, uid: uid-private}
spec:
  imagePullSecrets: [{name: team-creds}, {name: missing}]
  containers:
  - {name: app, image: "registry.example.com/team/app:1", imagePullPolicy: IfNotPresent}
  - {name: public, image: "docker.example.org/app:1", imagePullPolicy: IfNotPresent}
"#);
    // The pod's secret is refused by the registry; the node's works.
    fake.inject_error(
        "PullImage",
        kubelet_cri_client::Error::Unavailable {
            call: kubelet_cri_client::Call::with_id("PullImage", "registry.example.com/team/app:1"),
            message: "401 Unauthorized".into(),
        },
    );
    let r = m
        .sync_pod(&p, &status_of(&m, &p).await, &Default::default())
        .await;
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    let pulls: Vec<(String, Option<String>)> = fake
        .pulls()
        .into_iter()
        .map(|(image, auth)| {
            (
                image,
                auth.map(|a| format!("{}:{}", a.username, a.password)),
            )
        })
        .collect();
    // The refused attempt (the pod's secret) is not recorded by the fake;
    // three PullImage calls were made.
    assert_eq!(
        pulls,
        [
            (
                "registry.example.com/team/app:1".to_owned(),
                Some("node:n".to_owned())
            ),
            ("docker.example.org/app:1".to_owned(), None),
        ]
    );
    let calls = fake.calls().iter().filter(|c| **c == "PullImage").count();
    assert_eq!(calls, 3);
    // Without a refusal, the pod's secret is the one used.
    let p2 = pod(r#"
apiVersion: v1
kind: Pod
metadata: {name: private2, namespace: default, uid: uid-private2}
spec:
  imagePullSecrets: [{name: team-creds}]
  containers:
  - {name: app, image: "registry.example.com/team/other:1", imagePullPolicy: IfNotPresent}
"#);
    let r = m
        .sync_pod(&p2, &status_of(&m, &p2).await, &Default::default())
        .await;
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    let last = fake.pulls().pop().expect("a pull");
    assert_eq!(last.0, "registry.example.com/team/other:1");
    assert_eq!(last.1.map(|a| a.username).as_deref(), Some("team"));
}
