//! Set-up shared by the end-to-end tests against the test bed's containerd.

#![allow(dead_code)]

use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use kubelet_cm::CgroupName;
use kubelet_cri_client::RemoteRuntime;
use kubelet_kuberuntime::config::ConfigOptions;
use kubelet_kuberuntime::{PodStatus, Runtime, RuntimeManager, RuntimeReader};
use kubelet_testbed::Testbed;

/// A runtime manager on the test bed's containerd, its pod logs and cgroup
/// root in the test bed; and the CRI client under it.
pub async fn manager(bed: &Testbed) -> (RuntimeManager, RemoteRuntime) {
    let cri = RemoteRuntime::builder(bed.endpoint())
        .connect()
        .await
        .expect("connect");
    let opts = ConfigOptions {
        pod_logs_dir: bed.log_dir(),
        ..ConfigOptions::new(Arc::new(kubelet_cm::StaticResources {
            cgroup_root: CgroupName::new([bed.cgroup_root()]),
            ..Default::default()
        }))
    };
    (RuntimeManager::new(Arc::new(cri.clone()), opts), cri)
}

/// The runtime's status of pod `p` (in namespace `default`).
pub async fn status(m: &RuntimeManager, p: &Pod) -> PodStatus {
    m.get_pod_status(
        p.metadata.uid.as_deref().unwrap_or_default(),
        p.metadata.name.as_deref().unwrap_or_default(),
        "default",
    )
    .await
    .expect("status")
}

/// Kills and removes pod `p` at once (grace 0).
pub async fn kill_and_remove(m: &RuntimeManager, p: &Pod) {
    let running = status(m, p).await.to_running_pod();
    m.kill_pod(Some(p), &running, Some(0)).await.expect("kill");
    m.remove_pod(&running).await.expect("remove");
}
