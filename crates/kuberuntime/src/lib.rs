//! Pods translated into CRI calls: SyncPod, KillPod, pod status from the
//! runtime, and image pulls.
//!
//! Mirrors upstream `pkg/kubelet/kuberuntime` (the "generic runtime
//! manager"). Its central trait is [`Runtime`] (upstream
//! `kubecontainer.Runtime`): what the kubelet's pod workers call to make a
//! pod's containers match its spec. [`RuntimeManager`] implements it over
//! any [`RuntimeService`](kubelet_cri_client::RuntimeService) +
//! [`ImageService`](kubelet_cri_client::ImageService), such as containerd
//! through [`RemoteRuntime`](kubelet_cri_client::RemoteRuntime).
//!
//! - [`actions`]: `compute_pod_actions`, a pure function of spec and status
//!   that decides which sandbox and containers to create or kill.
//! - [`config`]: the CRI sandbox and container configs (log paths, cgroup
//!   parent, namespaces, mounts, resources from `kubelet-cm`, security
//!   context) and the environment as upstream `makeEnvironmentVariables`:
//!   `envFrom` and `valueFrom` of Secrets and ConfigMaps (from the
//!   `EnvSources` snapshot in [`PodVolumes`]; a standalone kubelet has
//!   none), every downward API `fieldRef`, `resourceFieldRef` with limits
//!   defaulted to the node's allocatable, the service variables
//!   (`{SVC}_SERVICE_HOST`, Docker links; upstream `getServiceEnvVarMap`,
//!   also from the snapshot) after the container's own, and `$(VAR)`
//!   expansion in values, command and args. An environment that cannot be made fails only its
//!   container ([`Error::CreateContainerConfig`], upstream
//!   `CreateContainerConfigError`).
//! - [`ephemeral`]: ephemeral containers (`kubectl debug`): started once
//!   after the sandbox, never restarted, in the PID namespace of their
//!   target container.
//! - [`dns`]: the pod's resolver configuration from its `dnsPolicy` and
//!   `dnsConfig`, `clusterDNS`, `clusterDomain` and the host's
//!   `resolvConf` (upstream `pkg/kubelet/network/dns`), handed to the
//!   runtime as the sandbox's `DNSConfig`.
//! - [`labels`] and [`hash`]: the `io.kubernetes.*` labels and annotations
//!   from which state is rebuilt after a restart, and the versioned
//!   container hash.
//! - [`status`]: the runtime's view of a pod.
//!
//! - [`gc`]: container and sandbox garbage collection.
//! - [`lifecycle`]: `postStart` / `preStop` hooks (exec, HTTP, sleep) and
//!   termination messages.
//! - [`hosts`]: the managed `/etc/hosts` of a pod's containers.
//! - [`credentials`]: registry credentials for pulls (the node's docker
//!   config, the pod's `imagePullSecrets`), matched as upstream's keyring.
//! - [`image_gc`]: image garbage collection between the high and low
//!   thresholds of the image filesystem, and the eviction manager's
//!   `DeleteUnusedImages`.
//! - [`logs`]: container log rotation through `ReopenContainerLog`.
//!
//! A running container that failed its liveness or startup probe is killed
//! and restarted when the manager has [`actions::ProbeResults`]
//! ([`RuntimeManager::with_probe_results`]).
//!
//! Crash loops and failing pulls back off as upstream (10 s doubling to
//! 300 s), with the core crate's keyed `Backoff`
//! (`kubelet_container::flowcontrol`).
//!
//! What happens is recorded as upstream's Kubernetes events (`Pulling`,
//! `Pulled`, `Created`, `Started`, `Killing`, `BackOff`, `Failed`, ...,
//! with upstream's messages) through the core crate's `EventRecorder`
//! given to [`RuntimeManager::with_event_recorder`]; without one nothing
//! is recorded.
//!
//! Sidecars (restartable init containers) run beside the app containers
//! and stop after them, in reverse order ([`actions`], `KillPod`).
//! Ephemeral containers start once, in their target's PID namespace.
//!
//! Not built yet: in-place resize.
//!
//! ```no_run
//! use std::sync::Arc;
//! use k8s_openapi::api::core::v1::{Container, Pod};
//! use kubelet_container::{ContainerResources, cri};
//! use kubelet_cri_client::RemoteRuntime;
//! use kubelet_kuberuntime::{Runtime, RuntimeManager, RuntimeReader, config::ConfigOptions};
//!
//! /// Each pod in its own cgroup under `/kubepods`, its containers without
//! /// limits. A kubelet asks `kubelet-cm`'s container manager instead (or
//! /// its `StaticResources`, without CPU or memory managers).
//! struct Unlimited;
//!
//! impl ContainerResources for Unlimited {
//!     fn pod_cgroup_parent(&self, pod: &Pod) -> String {
//!         format!("/kubepods/pod{}", pod.metadata.uid.as_deref().unwrap_or_default())
//!     }
//!     fn container_resources(&self, _pod: &Pod, _container: &Container)
//!         -> cri::LinuxContainerResources {
//!         cri::LinuxContainerResources::default()
//!     }
//! }
//!
//! # async fn demo(pod: k8s_openapi::api::core::v1::Pod) -> Result<(), Box<dyn std::error::Error>> {
//! let cri = RemoteRuntime::builder("unix:///run/containerd/containerd.sock").connect().await?;
//! let manager = RuntimeManager::new(Arc::new(cri), ConfigOptions::new(Arc::new(Unlimited)));
//! let uid = pod.metadata.uid.clone().unwrap_or_default();
//! let status = manager.get_pod_status(&uid, "web", "default").await?;
//! let result = manager.sync_pod(&pod, &status, &Default::default()).await;
//! println!("started {:?}, errors {:?}", result.started_containers, result.errors);
//! # Ok(())
//! # }
//! ```

use std::path::PathBuf;

use async_trait::async_trait;
use k8s_openapi::api::core::v1::Pod;

pub mod actions;
pub mod config;
pub mod credentials;
pub mod dns;
pub mod ephemeral;
pub mod gc;
pub mod hash;
pub mod hosts;
pub mod image_gc;
pub mod labels;
pub mod lifecycle;
pub mod logs;
mod manager;
pub mod status;
mod termination_order;

pub use config::PodVolumes;
pub use kubelet_container::RuntimeReader;
pub use manager::{CriRuntime, ImagePullPolicy, MINIMUM_GRACE_PERIOD, RuntimeManager, pull_policy};
pub use status::{ContainerState, ContainerStatus, PodStatus, RunningPod};

/// Why a container's config cannot be made (the `source` of
/// [`Error::CreateContainerConfig`]), in upstream's words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ContainerConfigError {
    /// Its environment (upstream `makeEnvironmentVariables`).
    #[error(transparent)]
    Env(#[from] kubelet_container::env::EnvError),
    /// Its mounts (upstream `makeMounts`: `cannot find volume "v" to mount
    /// into container "c"`, `failed to prepare subPath for volumeMount "v"
    /// of container "c"`, ...).
    #[error("{0}")]
    Mount(String),
}

/// Errors of this crate. Each names the pod (`namespace/name`) and, where
/// it applies, the container or image.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The pod spec cannot be run as written.
    #[error("pod {pod}: {reason}")]
    InvalidPod {
        /// The pod.
        pod: String,
        /// What is wrong.
        reason: String,
    },
    /// The image is absent and its pull policy is `Never`
    /// (upstream `ErrImageNeverPull`).
    #[error("pod {pod}: image {image:?} is not present with pull policy of Never")]
    ImageNeverPull {
        /// The pod.
        pod: String,
        /// The image.
        image: String,
    },
    /// The container exited and its restart backoff has not passed yet
    /// (upstream `ErrCrashLoopBackOff`).
    #[error("pod {pod}: back-off {delay:?} restarting failed container={container}")]
    CrashLoopBackOff {
        /// The pod.
        pod: String,
        /// The container.
        container: String,
        /// The current backoff.
        delay: std::time::Duration,
    },
    /// A pull of this image failed recently; waiting before the next try
    /// (upstream `ErrImagePullBackOff`).
    #[error("pod {pod}: back-off pulling image {image:?}")]
    ImagePullBackOff {
        /// The pod.
        pod: String,
        /// The image.
        image: String,
    },
    /// The registry pull rate was exceeded (upstream `pull QPS exceeded`).
    #[error("pod {pod}: pulling image {image:?}: pull QPS exceeded")]
    ImagePullQpsExceeded {
        /// The pod.
        pod: String,
        /// The image.
        image: String,
    },
    /// Pulling the image failed (upstream `ErrImagePull`).
    #[error("pod {pod}: pulling image {image:?}: {source}")]
    ImagePull {
        /// The pod.
        pod: String,
        /// The image.
        image: String,
        /// The CRI error.
        source: kubelet_cri_client::Error,
    },
    /// RunPodSandbox failed (upstream `ErrCreatePodSandbox`).
    #[error("pod {pod}: creating the sandbox: {source}")]
    CreateSandbox {
        /// The pod.
        pod: String,
        /// The CRI error.
        source: kubelet_cri_client::Error,
    },
    /// The container's config could not be made: its environment refers
    /// to a Secret, ConfigMap or key that is missing, or to a field the
    /// kubelet cannot fill, or a mount cannot be made (a missing volume, a
    /// `subPath` that cannot be prepared) (upstream
    /// `ErrCreateContainerConfig`, waiting reason
    /// `CreateContainerConfigError`, with `source` as its message). Only
    /// this container fails; the sync goes on with the others.
    #[error("pod {pod}: container {container:?}: CreateContainerConfigError: {source}")]
    CreateContainerConfig {
        /// The pod.
        pod: String,
        /// The container.
        container: String,
        /// Upstream's message (`secret "x" not found`, ...).
        source: Box<ContainerConfigError>,
    },
    /// An ephemeral container cannot be made: its target container is
    /// unknown (`unable to find target container x`), or it sets a field
    /// the API forbids on one (see [`ephemeral`]). Upstream's
    /// `ErrCreateContainerConfig`, waiting reason
    /// `CreateContainerConfigError` with `message`. Only this container
    /// fails.
    #[error("pod {pod}: container {container:?}: CreateContainerConfigError: {message}")]
    EphemeralContainerConfig {
        /// The pod.
        pod: String,
        /// The ephemeral container.
        container: String,
        /// Upstream's message.
        message: String,
    },
    /// CreateContainer failed (upstream `ErrCreateContainer`).
    #[error("pod {pod}: creating container {container:?}: {source}")]
    CreateContainer {
        /// The pod.
        pod: String,
        /// The container.
        container: String,
        /// The CRI error.
        source: kubelet_cri_client::Error,
    },
    /// StartContainer failed (upstream `ErrRunContainer`).
    #[error("pod {pod}: starting container {container:?}: {source}")]
    StartContainer {
        /// The pod.
        pod: String,
        /// The container.
        container: String,
        /// The CRI error.
        source: kubelet_cri_client::Error,
    },
    /// The container started but its `postStart` hook failed; it was killed
    /// (upstream `ErrPostStartHook`, waiting reason `PostStartHookError`).
    #[error("pod {pod}: container {container:?}: PostStartHookError: {source}")]
    PostStartHook {
        /// The pod.
        pod: String,
        /// The container.
        container: String,
        /// The hook's failure.
        source: Box<crate::lifecycle::HookError>,
    },
    /// StopContainer failed (upstream `ErrKillContainer`).
    #[error("killing container {container:?} ({id}): {source}")]
    KillContainer {
        /// The container.
        container: String,
        /// Its ID.
        id: String,
        /// The CRI error.
        source: kubelet_cri_client::Error,
    },
    /// Stopping or removing the sandbox failed (upstream `ErrKillPodSandbox`).
    #[error("pod {pod}: stopping the sandbox: {source}")]
    KillPod {
        /// The pod.
        pod: String,
        /// The CRI error.
        source: kubelet_cri_client::Error,
    },
    /// Reading the runtime's state failed.
    #[error("pod {pod}: {source}")]
    Runtime {
        /// The pod (`*` for all).
        pod: String,
        /// The CRI error.
        source: kubelet_cri_client::Error,
    },
    /// Reading the runtime's state failed (through [`RuntimeReader`]).
    #[error(transparent)]
    Read(#[from] kubelet_container::Error),
    /// The pod's DNS configuration could not be formed (upstream
    /// `GeneratePodSandboxConfig ... failed`): the host's resolver file is
    /// unreadable or malformed.
    #[error("pod {pod}: {source}")]
    Dns {
        /// The pod.
        pod: String,
        /// Why.
        source: crate::dns::DnsError,
    },
    /// A file or directory the pod needs could not be made.
    #[error("{}: {source}", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

pub use kubelet_container::pod::pod_name;

/// What one [`Runtime::sync_pod`] did (upstream `PodSyncResult`).
#[derive(Debug, Default)]
pub struct PodSyncResult {
    /// Whether the whole pod was killed first.
    pub killed_pod: bool,
    /// The sandbox created, if any.
    pub created_sandbox: Option<String>,
    /// Containers killed (by name).
    pub killed_containers: Vec<String>,
    /// Containers started (by name).
    pub started_containers: Vec<String>,
    /// What failed; the sync carried on where upstream does.
    pub errors: Vec<Error>,
}

impl PodSyncResult {
    /// The first error, if the sync failed anywhere.
    pub fn error(&self) -> Option<&Error> {
        self.errors.first()
    }
}

/// What the kubelet needs from a container runtime (upstream
/// `kubecontainer.Runtime`, `pkg/kubelet/container/runtime.go`): the read
/// half ([`RuntimeReader`], in `kubelet-container`, all the PLEG needs) and
/// the calls that change the runtime.
#[async_trait]
pub trait Runtime: RuntimeReader {
    /// Brings the pod's sandbox and containers to its spec, in upstream's
    /// order. `volumes` maps the pod's volume names to prepared host paths.
    async fn sync_pod(
        &self,
        pod: &Pod,
        status: &PodStatus,
        volumes: &crate::config::PodVolumes,
    ) -> PodSyncResult;

    /// Stops every container (with its grace period) and every sandbox of
    /// the pod. `pod` is `None` for a pod the kubelet no longer knows: the
    /// grace periods then come from the containers' annotations.
    async fn kill_pod(
        &self,
        pod: Option<&Pod>,
        running: &RunningPod,
        grace_override: Option<i64>,
    ) -> Result<(), Error>;

    /// Removes the pod's sandboxes (and with them its containers) once it is
    /// killed.
    async fn remove_pod(&self, running: &RunningPod) -> Result<(), Error>;
}
