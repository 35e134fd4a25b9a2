//! The read half of the runtime interface.

use async_trait::async_trait;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, HTTPGetAction, Pod};

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

/// How a pod's containers are placed and sized, as the runtime manager asks
/// the container manager when it creates them (upstream: `RuntimeHelper`'s
/// `GetPodCgroupParent`, `generateLinuxContainerResources` with
/// `InternalContainerLifecycle.PreCreateContainer`'s cpusets, and the CPU
/// manager's `AddContainer` after a start).
///
/// `kubelet-cm` implements it for its container manager, and offers a plain
/// implementation without CPU or memory managers.
pub trait ContainerResources: Send + Sync {
    /// The pod cgroup's literal name: the sandbox's CRI `cgroup_parent`.
    fn pod_cgroup_parent(&self, pod: &Pod) -> String;

    /// What the CRI gets for a container: CPU shares and quota, memory
    /// limit, OOM score, huge pages, and the cpuset and memory nodes the
    /// CPU and memory managers assigned.
    fn container_resources(&self, pod: &Pod, container: &Container)
    -> cri::LinuxContainerResources;

    /// Records a started container (for the CPU manager's reconcile).
    fn add_container(&self, pod: &Pod, container: &Container, container_id: &str) {
        let _ = (pod, container, container_id);
    }
}

/// The kubelet's version as it names itself to hooks and probes
/// (`User-Agent: kube-lifecycle/<version>`, `kube-probe/<version>`).
pub const KUBE_VERSION: &str = "1.35";

/// Sends the HTTP GET of a lifecycle hook (upstream `runHTTPHandler`'s
/// `httpDoer`, `pkg/kubelet/lifecycle/handlers.go`, with the request built
/// as for an HTTP probe by `pkg/probe/http`). `kubelet-prober`'s HTTP prober
/// implements it; the runtime manager runs `postStart`/`preStop` HTTP hooks
/// through it.
#[async_trait]
pub trait HttpHook: Send + Sync {
    /// Sends `action`'s GET to `host` (the pod's IP unless the action names
    /// a host) with `User-Agent: user_agent`, within `timeout`. `Ok` when
    /// any HTTP response came back, whatever its status (upstream fails a
    /// hook only when the request itself fails); `Err` says why not. A
    /// request over HTTPS answered in plain HTTP is retried over HTTP
    /// without its `Authorization` header, as upstream's
    /// `LifecycleHTTPFallback`.
    async fn get(
        &self,
        action: &HTTPGetAction,
        container: &Container,
        host: &str,
        user_agent: &str,
        timeout: Duration,
    ) -> Result<(), String>;
}

/// The newest API status of a pod, as the status manager keeps it (upstream
/// `status.PodStatusProvider`, `pkg/kubelet/status/status_manager.go`). The
/// prober reads container IDs, states and `started` through it.
pub trait PodStatusProvider: Send + Sync {
    /// The pod's latest status, or `None` when it has none (yet).
    fn pod_status(&self, pod_uid: &str) -> Option<k8s_openapi::api::core::v1::PodStatus>;
}

impl<F> PodStatusProvider for F
where
    F: Fn(&str) -> Option<k8s_openapi::api::core::v1::PodStatus> + Send + Sync,
{
    fn pod_status(&self, pod_uid: &str) -> Option<k8s_openapi::api::core::v1::PodStatus> {
        self(pod_uid)
    }
}
