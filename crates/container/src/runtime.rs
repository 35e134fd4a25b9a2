//! The read half of the runtime interface.

use async_trait::async_trait;

use crate::{ContainerStatus, Error, PodStatus, RunningPod, cri};

/// What a reader of the container runtime needs: the pods it holds and one
/// pod's status (the read half of upstream `kubecontainer.Runtime`,
/// `pkg/kubelet/container/runtime.go`: `GetPods`, `GetPodStatus`).
///
/// The PLEG needs nothing more; the runtime manager of
/// `kubelet-kuberuntime` implements it and extends it with SyncPod and
/// KillPod.
#[async_trait]
pub trait RuntimeReader: Send + Sync {
    /// Every pod found in the runtime (with exited containers and
    /// not-ready sandboxes when `all`), grouped by the pod UID label.
    async fn get_pods(&self, all: bool) -> Result<Vec<RunningPod>, Error>;

    /// The runtime status of one pod.
    async fn get_pod_status(
        &self,
        uid: &str,
        name: &str,
        namespace: &str,
    ) -> Result<PodStatus, Error>;

    /// A container's status from the CRI's own, as the runtime builds it
    /// for [`get_pod_status`](Self::get_pod_status) (upstream
    /// `convertToKubeContainerStatus`). The evented PLEG builds pod statuses
    /// from CRI container events with it (upstream `GeneratePodStatus`).
    fn container_status_from_cri(&self, status: &cri::ContainerStatus) -> ContainerStatus;
}
