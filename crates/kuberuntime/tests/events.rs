//! The events the runtime manager records, with upstream's reasons and
//! wording, over the in-memory `FakeRuntime` and a recording
//! `FakeRecorder`: image pulls, container creation and start, failures,
//! crash-loop back-off, kills, hooks and the sandbox; and how ephemeral
//! containers start (module `ephemeral`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Pod};
use kubelet_container::events::{EventType, FakeRecorder, RecordedEvent};
use kubelet_container::{ContainerResources, cri};
use kubelet_cri_client::api::ExecSyncResponse;
use kubelet_cri_client::{Call, Error as CriError, FakeRuntime};
use kubelet_kuberuntime::actions::ProbeResults;
use kubelet_kuberuntime::config::ConfigOptions;
use kubelet_kuberuntime::{Error, Runtime, RuntimeManager, RuntimeReader};
use serde_json::json;

const BUSYBOX: &str = "localhost/busybox:latest";

/// Each pod in its own cgroup, its containers without limits.
struct Unlimited;

impl ContainerResources for Unlimited {
    fn pod_cgroup_parent(&self, pod: &Pod) -> String {
        format!(
            "/kubepods/pod{}",
            pod.metadata.uid.as_deref().unwrap_or_default()
        )
    }

    fn container_resources(&self, _: &Pod, _: &Container) -> cri::LinuxContainerResources {
        cri::LinuxContainerResources::default()
    }
}

struct Setup {
    fake: FakeRuntime,
    manager: RuntimeManager,
    events: Arc<FakeRecorder>,
    _logs: tempfile::TempDir,
}

fn setup() -> Setup {
    let logs = tempfile::tempdir().unwrap();
    // Cluster DNS configured and no host file: no DNS events to filter.
    setup_with(
        ConfigOptions {
            pod_logs_dir: logs.path().to_path_buf(),
            cluster_dns: vec!["10.96.0.10".parse().unwrap()],
            resolv_conf: None,
            ..ConfigOptions::new(Arc::new(Unlimited))
        },
        logs,
    )
}

fn setup_with(opts: ConfigOptions, logs: tempfile::TempDir) -> Setup {
    let fake = FakeRuntime::new();
    fake.add_image(BUSYBOX);
    let events = Arc::new(FakeRecorder::new());
    let manager =
        RuntimeManager::new(Arc::new(fake.clone()), opts).with_event_recorder(events.clone());
    Setup {
        fake,
        manager,
        events,
        _logs: logs,
    }
}

fn pod(containers: serde_json::Value) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "web", "namespace": "default", "uid": "uid-web"},
        "spec": {"restartPolicy": "Always", "dnsPolicy": "ClusterFirst", "containers": containers},
    }))
    .unwrap()
}

fn app(image: &str, policy: &str) -> serde_json::Value {
    json!({"name": "app", "image": image, "imagePullPolicy": policy})
}

impl Setup {
    async fn status(&self, p: &Pod) -> kubelet_kuberuntime::PodStatus {
        self.manager
            .get_pod_status("uid-web", "web", "default")
            .await
            .unwrap_or_else(|e| panic!("status of {:?}: {e}", p.metadata.name))
    }

    async fn sync(&self, p: &Pod) -> kubelet_kuberuntime::PodSyncResult {
        let st = self.status(p).await;
        self.manager.sync_pod(p, &st, &Default::default()).await
    }

    fn take(&self) -> Vec<String> {
        self.events.take().iter().map(ToString::to_string).collect()
    }

    fn running_id(&self, st: &kubelet_kuberuntime::PodStatus, name: &str) -> String {
        st.container_statuses
            .iter()
            .find(|c| c.name == name && c.state == kubelet_kuberuntime::ContainerState::Running)
            .map(|c| c.id.clone())
            .unwrap()
    }
}

fn unavailable(method: &'static str, message: &str) -> CriError {
    CriError::Unavailable {
        call: Call::with_id(method, "x"),
        message: message.into(),
    }
}

#[tokio::test]
async fn a_new_pod_records_pulled_created_started_about_each_container() {
    let s = setup();
    let p = pod(json!([app(BUSYBOX, "IfNotPresent"),
                       {"name": "side", "image": BUSYBOX, "imagePullPolicy": "IfNotPresent"}]));
    let r = s.sync(&p).await;
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    let events = s.events.take();
    let strings: Vec<String> = events.iter().map(ToString::to_string).collect();
    assert_eq!(
        strings,
        [
            "Normal Pulled Container image \"localhost/busybox:latest\" already present on machine",
            "Normal Created Created container: app",
            "Normal Started Started container app",
            "Normal Pulled Container image \"localhost/busybox:latest\" already present on machine",
            "Normal Created Created container: side",
            "Normal Started Started container side",
        ]
    );
    // Each is about the container: the pod with its field path.
    let RecordedEvent { object, .. } = &events[0];
    assert_eq!(object.kind.as_deref(), Some("Pod"));
    assert_eq!(object.name.as_deref(), Some("web"));
    assert_eq!(object.namespace.as_deref(), Some("default"));
    assert_eq!(object.uid.as_deref(), Some("uid-web"));
    assert_eq!(object.field_path.as_deref(), Some("spec.containers{app}"));
    assert_eq!(
        events[5].object.field_path.as_deref(),
        Some("spec.containers{side}")
    );
}

#[tokio::test(start_paused = true)]
async fn a_pull_records_pulling_then_pulled_with_its_time_and_size() {
    let s = setup();
    s.fake.set_delay("PullImage", Duration::from_millis(1500));
    let p = pod(json!([app("registry.local/app:1", "Always")]));
    let r = s.sync(&p).await;
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_eq!(
        s.take()[..2],
        [
            "Normal Pulling Pulling image \"registry.local/app:1\"",
            "Normal Pulled Successfully pulled image \"registry.local/app:1\" in 1.5s (1.5s including waiting). Image size: 4096 bytes.",
        ]
    );
}

#[tokio::test]
async fn a_failed_pull_records_failed_then_backs_off() {
    let s = setup();
    s.fake.inject_error(
        "PullImage",
        unavailable("PullImage", "registry.local: connection refused"),
    );
    let p = pod(json!([app("registry.local/app:1", "Always")]));
    let r = s.sync(&p).await;
    assert!(
        matches!(r.error(), Some(Error::ImagePull { .. })),
        "{:?}",
        r.errors
    );
    assert_eq!(
        s.take(),
        [
            "Normal Pulling Pulling image \"registry.local/app:1\"",
            "Warning Failed Failed to pull image \"registry.local/app:1\": rpc error: code = Unavailable desc = registry.local: connection refused",
            "Warning Failed Error: ErrImagePull",
        ]
    );
    let r = s.sync(&p).await;
    assert!(
        matches!(r.error(), Some(Error::ImagePullBackOff { .. })),
        "{:?}",
        r.errors
    );
    assert_eq!(
        s.take(),
        [
            "Normal BackOff Back-off pulling image \"registry.local/app:1\"",
            "Warning Failed Error: ImagePullBackOff",
        ]
    );
}

#[tokio::test]
async fn an_absent_image_that_is_never_pulled() {
    let s = setup();
    let p = pod(json!([app("registry.local/absent:1", "Never")]));
    let r = s.sync(&p).await;
    assert!(
        matches!(r.error(), Some(Error::ImageNeverPull { .. })),
        "{:?}",
        r.errors
    );
    assert_eq!(
        s.take(),
        [
            "Warning ErrImageNeverPull Container image \"registry.local/absent:1\" is not present with pull policy of Never",
            "Warning Failed Error: ErrImageNeverPull",
        ]
    );
}

#[tokio::test]
async fn a_create_failure_records_the_runtime_message() {
    let s = setup();
    s.fake.inject_error(
        "CreateContainer",
        unavailable("CreateContainer", "no space left on device"),
    );
    let p = pod(json!([app(BUSYBOX, "IfNotPresent")]));
    let r = s.sync(&p).await;
    assert!(
        matches!(r.error(), Some(Error::CreateContainer { .. })),
        "{:?}",
        r.errors
    );
    assert_eq!(
        s.take()[1..],
        ["Warning Failed Error: no space left on device"]
    );
}

#[tokio::test]
async fn a_container_id_in_a_start_error_becomes_the_container_name() {
    let s = setup();
    let p = pod(json!([app(BUSYBOX, "IfNotPresent")]));
    // The fake's next container ID: 64 hex digits after 0xfa4e00000000 +
    // the number of objects made (one sandbox, then this container).
    let next_id = format!("{:064x}", 0xfa4e_0000_0000_u64 + 2);
    s.fake.inject_error(
        "StartContainer",
        CriError::Unavailable {
            call: Call::with_id("StartContainer", next_id.clone()),
            message: format!("failed to start container {next_id}: exec format error"),
        },
    );
    let r = s.sync(&p).await;
    assert!(
        matches!(r.error(), Some(Error::StartContainer { .. })),
        "{:?}",
        r.errors
    );
    assert_eq!(
        s.take()[2],
        "Warning Failed Error: failed to start container app: exec format error"
    );
}

#[tokio::test]
async fn a_crash_loop_records_back_off_restarting_failed_container() {
    let s = setup();
    let p = pod(json!([app(BUSYBOX, "IfNotPresent")]));
    assert!(s.sync(&p).await.errors.is_empty());
    // Exits, restarts at once (the first restart has no back-off), exits
    // again: the next start waits for its back-off.
    for _ in 0..2 {
        let st = s.status(&p).await;
        s.fake
            .exit_container(&s.running_id(&st, "app"), 1, "Error")
            .unwrap();
        s.sync(&p).await;
    }
    let events = s.events.take();
    let last = events.last().unwrap();
    assert_eq!(
        last.to_string(),
        "Warning BackOff Back-off restarting failed container app in pod web_default(uid-web)"
    );
    assert_eq!(last.event_type, EventType::Warning);
    assert_eq!(
        last.object.field_path.as_deref(),
        Some("spec.containers{app}")
    );
    // No "Failed" event for a back-off.
    assert!(
        !events.iter().any(|e| e.message.starts_with("Error:")),
        "{events:?}"
    );
}

struct LivenessFailed(String);

impl ProbeResults for LivenessFailed {
    fn liveness_failed(&self, id: &str) -> bool {
        id == self.0
    }
    fn startup_failed(&self, _: &str) -> bool {
        false
    }
    fn startup_result(&self, _: &str) -> Option<kubelet_kuberuntime::actions::ProbeOutcome> {
        Some(kubelet_kuberuntime::actions::ProbeOutcome::Success)
    }
}

#[tokio::test]
async fn a_failed_liveness_probe_records_killing_with_the_reason() {
    let s = setup();
    let p = pod(json!([app(BUSYBOX, "IfNotPresent")]));
    assert!(s.sync(&p).await.errors.is_empty());
    let st = s.status(&p).await;
    let id = s.running_id(&st, "app");
    let Setup {
        fake,
        manager,
        events,
        _logs,
    } = s;
    let manager = manager.with_probe_results(Arc::new(LivenessFailed(id)));
    events.take();
    let r = manager.sync_pod(&p, &st, &Default::default()).await;
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    let strings: Vec<String> = events.take().iter().map(ToString::to_string).collect();
    assert_eq!(
        strings[0],
        "Normal Killing Container app failed liveness probe, will be restarted"
    );
    assert_eq!(
        strings[2..],
        [
            "Normal Created Created container: app",
            "Normal Started Started container app"
        ]
    );
    drop(fake);
}

#[tokio::test]
async fn killing_a_pod_records_stopping_container() {
    let s = setup();
    let p = pod(json!([app(BUSYBOX, "IfNotPresent")]));
    assert!(s.sync(&p).await.errors.is_empty());
    s.events.take();
    let running = s.status(&p).await.to_running_pod();
    s.manager.kill_pod(Some(&p), &running, None).await.unwrap();
    assert_eq!(s.take(), ["Normal Killing Stopping container app"]);
}

#[tokio::test]
async fn hooks_that_fail_record_their_event_without_their_output() {
    let s = setup();
    s.fake.set_exec_handler(|_, cmd| ExecSyncResponse {
        stdout: format!("secret output of {cmd:?}").into_bytes(),
        stderr: Vec::new(),
        exit_code: 1,
    });
    let p = pod(json!([{
        "name": "app", "image": BUSYBOX, "imagePullPolicy": "IfNotPresent",
        "lifecycle": {"postStart": {"exec": {"command": ["start-hook"]}},
                      "preStop": {"exec": {"command": ["stop-hook"]}}},
    }]));
    let r = s.sync(&p).await;
    assert!(
        matches!(r.error(), Some(Error::PostStartHook { .. })),
        "{:?}",
        r.errors
    );
    assert_eq!(
        s.take(),
        [
            "Normal Pulled Container image \"localhost/busybox:latest\" already present on machine",
            "Normal Created Created container: app",
            "Normal Started Started container app",
            "Warning FailedPostStartHook PostStartHook failed",
            "Normal Killing FailedPostStartHook",
            "Warning FailedPreStopHook PreStopHook failed",
        ]
    );
}

#[tokio::test]
async fn sandbox_failures_and_changes_are_pod_events() {
    let s = setup();
    s.fake.inject_error(
        "RunPodSandbox",
        unavailable("RunPodSandbox", "failed to setup network for sandbox"),
    );
    let p = pod(json!([app(BUSYBOX, "IfNotPresent")]));
    let r = s.sync(&p).await;
    assert!(
        matches!(r.error(), Some(Error::CreateSandbox { .. })),
        "{:?}",
        r.errors
    );
    let events = s.events.take();
    assert_eq!(
        events.iter().map(ToString::to_string).collect::<Vec<_>>(),
        [
            "Warning FailedCreatePodSandBox Failed to create pod sandbox: rpc error: code = Unavailable desc = failed to setup network for sandbox"
        ]
    );
    assert_eq!(events[0].object.field_path, None, "a pod event");

    // A sandbox that died is replaced: the pod's containers are killed and
    // started again in a new one.
    assert!(s.sync(&p).await.errors.is_empty());
    let st = s.status(&p).await;
    s.fake
        .set_sandbox_not_ready(&st.sandbox_statuses[0].id)
        .unwrap();
    s.events.take();
    let r = s.sync(&p).await;
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    let strings = s.take();
    assert_eq!(
        strings[..2],
        [
            "Normal SandboxChanged Pod sandbox changed, it will be killed and re-created.",
            "Normal Killing Stopping container app",
        ]
    );
}

/// Upstream `startContainer`: a container whose environment refers to a
/// missing Secret or key fails alone with `CreateContainerConfigError`
/// (a Warning `Failed` event `Error: <message>`); the pod's other
/// containers start, and once the Secret is there the next sync starts it.
#[tokio::test]
async fn a_missing_secret_fails_only_its_container_until_it_appears() {
    use kubelet_container::env::{EnvObjects, EnvSources, Lookup};
    let s = setup();
    let p = pod(json!([
        {"name": "app", "image": BUSYBOX, "imagePullPolicy": "IfNotPresent",
         "env": [{"name": "PW", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}}]},
        {"name": "keyless", "image": BUSYBOX, "imagePullPolicy": "IfNotPresent",
         "envFrom": [{"configMapRef": {"name": "settings"}}],
         "env": [{"name": "K", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "absent"}}}]},
        {"name": "side", "image": BUSYBOX, "imagePullPolicy": "IfNotPresent",
         "env": [{"name": "LVL", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "LOG_LEVEL"}}}]}
    ]));
    let objects = |secret: Lookup<std::collections::BTreeMap<String, Vec<u8>>>| EnvObjects {
        secrets: [("db".to_owned(), secret)].into(),
        config_maps: [(
            "settings".to_owned(),
            Lookup::Found([("LOG_LEVEL".to_owned(), "debug".to_owned())].into()),
        )]
        .into(),
    };
    let volumes = |secret| kubelet_kuberuntime::PodVolumes {
        env: EnvSources {
            objects: Some(objects(secret)),
            ..EnvSources::default()
        },
        ..Default::default()
    };
    let st = s.status(&p).await;
    let r = s
        .manager
        .sync_pod(&p, &st, &volumes(Lookup::NotFound))
        .await;
    assert_eq!(r.started_containers, ["side"]);
    let failed: Vec<(String, String)> = r
        .errors
        .iter()
        .map(|e| match e {
            Error::CreateContainerConfig {
                container, source, ..
            } => (container.clone(), source.to_string()),
            other => panic!("expected CreateContainerConfig, got {other:?}"),
        })
        .collect();
    assert_eq!(
        failed,
        [
            ("app".to_owned(), r#"secret "db" not found"#.to_owned()),
            (
                "keyless".to_owned(),
                "couldn't find key absent in ConfigMap default/settings".to_owned()
            ),
        ]
    );
    let events = s.take();
    assert!(
        events.contains(&r#"Warning Failed Error: secret "db" not found"#.to_owned()),
        "{events:?}"
    );
    assert!(
        events.contains(
            &"Warning Failed Error: couldn't find key absent in ConfigMap default/settings"
                .to_owned()
        ),
        "{events:?}"
    );
    assert!(
        !events.iter().any(|e| e.contains("Created container: app")),
        "{events:?}"
    );
    // The secret appears: the next sync starts the container, with its value.
    let secret = Lookup::Found([("password".to_owned(), b"s3cret".to_vec())].into());
    let st = s.status(&p).await;
    let r = s.manager.sync_pod(&p, &st, &volumes(secret)).await;
    assert_eq!(r.started_containers, ["app"]);
    assert_eq!(r.errors.len(), 1, "{:?}", r.errors);
    let st = s.status(&p).await;
    let id = s.running_id(&st, "app");
    let config = s.fake.container_config(&id).expect("config of app");
    assert!(
        config
            .envs
            .iter()
            .any(|kv| kv.key == "PW" && kv.value == "s3cret"),
        "{:?}",
        config.envs
    );
}

#[tokio::test]
async fn cluster_first_without_cluster_dns_records_missing_cluster_dns_on_node_and_pod() {
    let logs = tempfile::tempdir().unwrap();
    let resolv = logs.path().join("resolv.conf");
    std::fs::write(&resolv, "nameserver 192.0.2.53\nsearch example.org\n").unwrap();
    let s = setup_with(
        ConfigOptions {
            pod_logs_dir: logs.path().join("pods"),
            node_name: "node-1".into(),
            resolv_conf: Some(resolv),
            ..ConfigOptions::new(Arc::new(Unlimited))
        },
        logs,
    );
    let p = pod(json!([app(BUSYBOX, "IfNotPresent")]));
    let r = s.sync(&p).await;
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    let dns: Vec<RecordedEvent> = s
        .events
        .take()
        .into_iter()
        .filter(|e| e.reason == "MissingClusterDNS")
        .collect();
    let message = "kubelet does not have ClusterDNS IP configured and cannot create Pod using \"ClusterFirst\" policy. Falling back to \"Default\" policy.";
    assert_eq!(dns.len(), 2, "{dns:?}");
    assert_eq!(dns[0].object.kind.as_deref(), Some("Node"));
    assert_eq!(dns[0].object.name.as_deref(), Some("node-1"));
    assert_eq!(dns[0].event_type, EventType::Warning);
    assert_eq!(dns[0].message, message);
    assert_eq!(dns[1].object.kind.as_deref(), Some("Pod"));
    assert_eq!(
        dns[1].message,
        format!("pod: \"web_default(uid-web)\". {message}")
    );
}

#[tokio::test]
async fn an_unreadable_resolver_file_fails_the_sandbox_with_an_event() {
    let logs = tempfile::tempdir().unwrap();
    let s = setup_with(
        ConfigOptions {
            pod_logs_dir: logs.path().join("pods"),
            resolv_conf: Some(logs.path().join("missing-resolv.conf")),
            ..ConfigOptions::new(Arc::new(Unlimited))
        },
        logs,
    );
    let p = pod(json!([app(BUSYBOX, "IfNotPresent")]));
    let r = s.sync(&p).await;
    assert!(
        matches!(r.error(), Some(Error::Dns { .. })),
        "{:?}",
        r.errors
    );
    assert!(r.created_sandbox.is_none());
    let failed: Vec<String> = s
        .take()
        .into_iter()
        .filter(|e| e.contains("FailedCreatePodSandBox"))
        .collect();
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert!(failed[0].contains("missing-resolv.conf"), "{failed:?}");
}

/// Ephemeral containers: started once after the sandbox, in their target's
/// PID namespace, never restarted; a bad one fails alone with its `Failed`
/// event (upstream `kuberuntime_manager.go` `SyncPod`,
/// `kuberuntime_container.go` `getTargetID`).
mod ephemeral {
    use super::*;
    use kubelet_container::ContainerType;
    use kubelet_cri_client::api::NamespaceMode;
    use kubelet_kuberuntime::ContainerState;

    /// The app container `app` and these ephemeral containers.
    fn pod(ephemeral: serde_json::Value) -> Pod {
        let mut p = super::pod(json!([app(BUSYBOX, "IfNotPresent")]));
        if let Some(spec) = p.spec.as_mut() {
            spec.ephemeral_containers = serde_json::from_value(ephemeral).unwrap();
        }
        p
    }

    fn debug(name: &str, target: &str) -> serde_json::Value {
        json!({"name": name, "image": BUSYBOX, "imagePullPolicy": "IfNotPresent",
               "command": ["ps"], "targetContainerName": target})
    }

    impl Setup {
        async fn ids(&self, p: &Pod, name: &str) -> Vec<String> {
            self.status(p)
                .await
                .container_statuses
                .iter()
                .filter(|c| c.name == name)
                .map(|c| c.id.clone())
                .collect()
        }
    }

    #[tokio::test]
    async fn an_ephemeral_container_runs_once_in_its_targets_pid_namespace() {
        let s = setup();
        // The sync that creates the sandbox starts the app only (upstream).
        let p = pod(json!([debug("debug", "app")]));
        let r = s.sync(&p).await;
        assert!(r.errors.is_empty(), "{:?}", r.errors);
        assert_eq!(r.started_containers, ["app"]);
        let app = s.ids(&p, "app").await;
        assert_eq!(app.len(), 1);

        let r = s.sync(&p).await;
        assert!(r.errors.is_empty(), "{:?}", r.errors);
        assert_eq!(r.started_containers, ["debug"]);
        let debug_ids = s.ids(&p, "debug").await;
        assert_eq!(debug_ids.len(), 1);
        let config = s.fake.container_config(&debug_ids[0]).unwrap();
        let ns = config
            .linux
            .and_then(|l| l.security_context)
            .and_then(|s| s.namespace_options)
            .unwrap();
        assert_eq!(ns.pid(), NamespaceMode::Target);
        assert_eq!(ns.target_id, app[0]);
        assert_eq!(ns.network(), NamespaceMode::Pod);
        assert_eq!(config.command, ["ps"]);
        let st = s.status(&p).await;
        let debug_status = st
            .container_statuses
            .iter()
            .find(|c| c.name == "debug")
            .unwrap();
        assert_eq!(debug_status.container_type, ContainerType::Ephemeral);
        let events: Vec<String> = s.events.take().iter().map(ToString::to_string).collect();
        assert!(
            events.contains(&"Normal Started Started container debug".to_owned()),
            "{events:?}"
        );

        // Running: nothing to do. Exited (even failed, restartPolicy Always):
        // never restarted, and the app keeps running.
        let r = s.sync(&p).await;
        assert!(r.started_containers.is_empty() && r.errors.is_empty());
        s.fake.exit_container(&debug_ids[0], 1, "Error").unwrap();
        for _ in 0..2 {
            let r = s.sync(&p).await;
            assert!(r.errors.is_empty(), "{:?}", r.errors);
            assert!(r.started_containers.is_empty(), "{r:?}");
            assert!(!r.killed_pod);
        }
        assert_eq!(s.ids(&p, "debug").await, debug_ids);
        let st = s.status(&p).await;
        assert!(
            st.container_statuses
                .iter()
                .any(|c| c.name == "app" && c.state == ContainerState::Running)
        );
    }

    #[tokio::test]
    async fn a_bad_ephemeral_container_fails_alone_with_a_clear_error() {
        let s = setup();
        let p = pod(json!([]));
        assert!(s.sync(&p).await.errors.is_empty());
        s.events.take();
        let mut with_ports = debug("ports", "app");
        with_ports["ports"] = json!([{"containerPort": 80}]);
        let p = pod(json!([
            debug("lost", "nope"),
            with_ports,
            debug("good", "app")
        ]));
        let r = s.sync(&p).await;
        assert_eq!(r.started_containers, ["good"], "{r:?}");
        let messages: Vec<(String, String)> = r
            .errors
            .iter()
            .map(|e| match e {
                Error::EphemeralContainerConfig {
                    container, message, ..
                } => (container.clone(), message.clone()),
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        assert_eq!(
            messages,
            [
                (
                    "lost".to_owned(),
                    "unable to find target container nope".to_owned()
                ),
                (
                    "ports".to_owned(),
                    "spec.ephemeralContainers[1].ports: Forbidden: cannot be set for an Ephemeral Container"
                        .to_owned()
                ),
            ]
        );
        let events: Vec<String> = s.events.take().iter().map(ToString::to_string).collect();
        assert!(
            events
                .contains(&"Warning Failed Error: unable to find target container nope".to_owned()),
            "{events:?}"
        );
        // No runtime container was made for either; the app was not touched.
        assert!(s.ids(&p, "lost").await.is_empty());
        assert!(s.ids(&p, "ports").await.is_empty());
        assert!(!r.killed_pod && r.killed_containers.is_empty());
    }
}
