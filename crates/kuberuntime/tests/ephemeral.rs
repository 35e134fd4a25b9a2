//! Ephemeral containers over the in-memory `FakeRuntime`: started once
//! after the sandbox, in their target's PID namespace, never restarted;
//! a bad one fails alone (upstream `kuberuntime_manager.go` `SyncPod`,
//! `kuberuntime_container.go` `getTargetID`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use k8s_openapi::api::core::v1::{Container, Pod};
use kubelet_container::events::FakeRecorder;
use kubelet_container::{ContainerResources, ContainerType, cri};
use kubelet_cri_client::FakeRuntime;
use kubelet_cri_client::api::NamespaceMode;
use kubelet_kuberuntime::config::ConfigOptions;
use kubelet_kuberuntime::{ContainerState, Error, Runtime, RuntimeManager, RuntimeReader};
use serde_json::json;

const BUSYBOX: &str = "localhost/busybox:latest";

struct Unlimited;

impl ContainerResources for Unlimited {
    fn pod_cgroup_parent(&self, _: &Pod) -> String {
        "/kubepods/poduid-web".into()
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
    let fake = FakeRuntime::new();
    fake.add_image(BUSYBOX);
    let events = Arc::new(FakeRecorder::new());
    let opts = ConfigOptions {
        pod_logs_dir: logs.path().to_path_buf(),
        cluster_dns: vec!["10.96.0.10".parse().unwrap()],
        resolv_conf: None,
        ..ConfigOptions::new(Arc::new(Unlimited))
    };
    let manager =
        RuntimeManager::new(Arc::new(fake.clone()), opts).with_event_recorder(events.clone());
    Setup {
        fake,
        manager,
        events,
        _logs: logs,
    }
}

fn pod(ephemeral: serde_json::Value) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "web", "namespace": "default", "uid": "uid-web"},
        "spec": {
            "restartPolicy": "Always",
            "containers": [{"name": "app", "image": BUSYBOX, "imagePullPolicy": "IfNotPresent"}],
            "ephemeralContainers": ephemeral,
        },
    }))
    .unwrap()
}

fn debug(name: &str, target: &str) -> serde_json::Value {
    json!({"name": name, "image": BUSYBOX, "imagePullPolicy": "IfNotPresent",
           "command": ["ps"], "targetContainerName": target})
}

impl Setup {
    async fn status(&self) -> kubelet_kuberuntime::PodStatus {
        self.manager
            .get_pod_status("uid-web", "web", "default")
            .await
            .unwrap()
    }

    async fn sync(&self, p: &Pod) -> kubelet_kuberuntime::PodSyncResult {
        let st = self.status().await;
        self.manager.sync_pod(p, &st, &Default::default()).await
    }

    async fn ids(&self, name: &str) -> Vec<String> {
        self.status()
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
    let app = s.ids("app").await;
    assert_eq!(app.len(), 1);

    let r = s.sync(&p).await;
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_eq!(r.started_containers, ["debug"]);
    let debug_ids = s.ids("debug").await;
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
    let st = s.status().await;
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
    assert_eq!(s.ids("debug").await, debug_ids);
    let st = s.status().await;
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
    let p = pod(json!([debug("lost", "nope"), with_ports, debug("good", "app")]));
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
        events.contains(&"Warning Failed Error: unable to find target container nope".to_owned()),
        "{events:?}"
    );
    // No runtime container was made for either; the app was not touched.
    assert!(s.ids("lost").await.is_empty());
    assert!(s.ids("ports").await.is_empty());
    assert!(!r.killed_pod && r.killed_containers.is_empty());
}
