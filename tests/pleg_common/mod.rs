//! Pods on the in-memory `FakeRuntime`, made with plain CRI calls and the
//! `io.kubernetes.*` labels `RuntimeManager::get_pods` groups them by.

#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::Arc;

use kubelet_cri_client::{FakeRuntime, RuntimeService, api};
use kubelet_kuberuntime::config::ConfigOptions;
use kubelet_kuberuntime::labels;
use kubelet_kuberuntime::{Runtime, RuntimeManager};
use kubelet_pleg::PodLifecycleEvent;
use tokio::sync::mpsc;

pub const IMAGE: &str = "localhost/busybox:latest";

pub fn fake() -> (FakeRuntime, Arc<dyn Runtime>) {
    let fake = FakeRuntime::new();
    fake.add_image(IMAGE);
    let manager = RuntimeManager::new(
        Arc::new(fake.clone()),
        ConfigOptions::new(std::sync::Arc::new(kubelet_cm::StaticResources::default())),
    );
    (fake, Arc::new(manager))
}

fn pod_labels(uid: &str, name: &str) -> HashMap<String, String> {
    HashMap::from([
        (labels::POD_UID.to_owned(), uid.to_owned()),
        (labels::POD_NAME.to_owned(), name.to_owned()),
        (labels::POD_NAMESPACE.to_owned(), "default".to_owned()),
    ])
}

/// A running pod: its sandbox ID and the IDs of its running containers.
pub struct FakePod {
    pub uid: String,
    pub sandbox: String,
    pub containers: Vec<String>,
    config: api::PodSandboxConfig,
}

pub async fn run_pod(fake: &FakeRuntime, uid: &str, containers: usize) -> FakePod {
    let name = format!("pod-{uid}");
    let config = api::PodSandboxConfig {
        metadata: Some(api::PodSandboxMetadata {
            name: name.clone(),
            namespace: "default".into(),
            uid: uid.into(),
            attempt: 0,
        }),
        labels: pod_labels(uid, &name),
        ..Default::default()
    };
    let sandbox = fake
        .run_pod_sandbox(config.clone(), "")
        .await
        .expect("RunPodSandbox");
    let mut pod = FakePod {
        uid: uid.into(),
        sandbox,
        containers: Vec::new(),
        config,
    };
    for i in 0..containers {
        let id = start_container(fake, &pod, &format!("c{i}"), 0).await;
        pod.containers.push(id);
    }
    pod
}

pub async fn start_container(
    fake: &FakeRuntime,
    pod: &FakePod,
    name: &str,
    attempt: u32,
) -> String {
    let mut labels = pod_labels(&pod.uid, &format!("pod-{}", pod.uid));
    labels.insert(labels::CONTAINER_NAME.to_owned(), name.to_owned());
    let config = api::ContainerConfig {
        metadata: Some(api::ContainerMetadata {
            name: name.into(),
            attempt,
        }),
        image: Some(api::ImageSpec {
            image: IMAGE.into(),
            ..Default::default()
        }),
        labels,
        ..Default::default()
    };
    let id = fake
        .create_container(&pod.sandbox, config, pod.config.clone())
        .await
        .expect("CreateContainer");
    fake.start_container(&id).await.expect("StartContainer");
    id
}

/// Every event waiting in the channel now.
pub fn drain(rx: &mut mpsc::Receiver<PodLifecycleEvent>) -> Vec<PodLifecycleEvent> {
    let mut out = Vec::new();
    while let Ok(e) = rx.try_recv() {
        out.push(e);
    }
    out
}
