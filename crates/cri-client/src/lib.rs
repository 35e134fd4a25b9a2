//! The CRI (`runtime.v1`) client of a kubelet.
//!
//! A kubelet drives its container runtime (containerd, CRI-O) through the
//! Container Runtime Interface: two gRPC services, `RuntimeService` for pod
//! sandboxes and containers and `ImageService` for images, served on a unix
//! socket. This crate mirrors upstream's
//! `staging/src/k8s.io/cri-client/pkg/remote_runtime.go` and
//! `remote_image.go` (formerly `pkg/kubelet/cri/remote`):
//!
//! - [`RuntimeService`] and [`ImageService`]: the two async traits every
//!   other crate of the workspace programs against. Their methods are the CRI
//!   calls a kubelet makes, with the request wrapping taken away.
//! - [`RemoteRuntime`]: the real implementation, tonic over a unix socket, with
//!   upstream's connection retry, `runtime.v1` check, 2-minute per-call
//!   timeout, 16 MiB message limit, one `tracing` span per call and an
//!   [`OperationObserver`] hook for `kubelet_runtime_operations_duration_seconds`.
//! - `FakeRuntime` (feature `fake`): an in-memory runtime with realistic
//!   state, a call record, and per-method error and delay injection, for unit
//!   tests of the crates above this one. It can also be served over a unix
//!   socket, so tests and benchmarks can drive [`RemoteRuntime`] against it.
//!
//! The protobuf types are re-exported as [`api`] (`k8s_cri::v1`).
//!
//! Errors are one enum, [`Error`], whose variants follow the gRPC codes and
//! name the CRI method and object that failed.
//!
//! # Example
//!
//! ```no_run
//! use kubelet_cri_client::{RemoteRuntime, RuntimeService};
//!
//! # async fn demo() -> Result<(), kubelet_cri_client::Error> {
//! let runtime = RemoteRuntime::builder("unix:///run/containerd/containerd.sock")
//!     .connect()
//!     .await?;
//! let version = runtime.version().await?;
//! println!("{} {}", version.runtime_name, version.runtime_version);
//! for container in runtime.list_containers(None).await? {
//!     println!("{} {:?}", container.id, container.state());
//! }
//! # Ok(())
//! # }
//! ```

use std::pin::Pin;
use std::time::Duration;

use async_trait::async_trait;
use futures::Stream;

pub mod error;
#[cfg(feature = "fake")]
pub mod fake;
mod remote;

pub use error::{Call, Error, Result};
#[cfg(feature = "fake")]
pub use fake::FakeRuntime;
pub use remote::{OperationObserver, RemoteRuntime, RemoteRuntimeBuilder};

/// The CRI `runtime.v1` protobuf types (re-exported from `k8s-cri`).
pub use k8s_cri::v1 as api;

use api::{
    AuthConfig, Container, ContainerConfig, ContainerEventResponse, ContainerFilter,
    ContainerStats, ContainerStatsFilter, ContainerStatusResponse, ExecSyncResponse, Image,
    ImageFilter, ImageFsInfoResponse, ImageSpec, LinuxContainerResources, PodSandbox,
    PodSandboxConfig, PodSandboxFilter, PodSandboxStats, PodSandboxStatsFilter,
    PodSandboxStatusResponse, RuntimeConfigResponse, StatusResponse, VersionResponse,
};

/// The CRI API version this client speaks (what `Version` must report).
pub const RUNTIME_API_VERSION: &str = "v1";

/// The stream of container events from [`RuntimeService::get_container_events`].
pub type ContainerEventStream =
    Pin<Box<dyn Stream<Item = Result<ContainerEventResponse>> + Send + 'static>>;

/// The pod sandbox and container half of the CRI, as a kubelet calls it.
///
/// Mirrors upstream's `internalapi.RuntimeService`
/// (`staging/src/k8s.io/cri-api/pkg/apis/services.go`). Methods that take an
/// ID return [`Error::NotFound`] for an unknown one.
#[async_trait]
pub trait RuntimeService: Send + Sync {
    /// The runtime's name, version and CRI API version.
    async fn version(&self) -> Result<VersionResponse>;

    /// The runtime's conditions (`RuntimeReady`, `NetworkReady`).
    async fn status(&self, verbose: bool) -> Result<StatusResponse>;

    /// The runtime's own configuration, notably its cgroup driver.
    ///
    /// containerd before 2.0 answers [`Error::Unimplemented`]: a kubelet then
    /// uses its configured driver, as upstream does.
    async fn runtime_config(&self) -> Result<RuntimeConfigResponse>;

    /// Creates and starts a pod sandbox; returns its ID.
    async fn run_pod_sandbox(
        &self,
        config: PodSandboxConfig,
        runtime_handler: &str,
    ) -> Result<String>;

    /// Stops every process of the sandbox and tears down its network.
    async fn stop_pod_sandbox(&self, pod_sandbox_id: &str) -> Result<()>;

    /// Removes the sandbox and its containers.
    async fn remove_pod_sandbox(&self, pod_sandbox_id: &str) -> Result<()>;

    /// The sandbox's status (state, network, creation time, labels).
    async fn pod_sandbox_status(
        &self,
        pod_sandbox_id: &str,
        verbose: bool,
    ) -> Result<PodSandboxStatusResponse>;

    /// Every sandbox matching the filter (all of them for `None`).
    async fn list_pod_sandbox(&self, filter: Option<PodSandboxFilter>) -> Result<Vec<PodSandbox>>;

    /// Creates a container in a sandbox; returns its ID.
    async fn create_container(
        &self,
        pod_sandbox_id: &str,
        config: ContainerConfig,
        sandbox_config: PodSandboxConfig,
    ) -> Result<String>;

    /// Starts a created container.
    async fn start_container(&self, container_id: &str) -> Result<()>;

    /// Stops a container: SIGTERM (or the image's stop signal), then SIGKILL
    /// after `timeout`.
    async fn stop_container(&self, container_id: &str, timeout: Duration) -> Result<()>;

    /// Removes a container (stopping it first if needed).
    async fn remove_container(&self, container_id: &str) -> Result<()>;

    /// Every container matching the filter (all of them for `None`).
    async fn list_containers(&self, filter: Option<ContainerFilter>) -> Result<Vec<Container>>;

    /// The container's status: state, exit code, reason, times, image.
    async fn container_status(
        &self,
        container_id: &str,
        verbose: bool,
    ) -> Result<ContainerStatusResponse>;

    /// Changes a running container's Linux resources.
    async fn update_container_resources(
        &self,
        container_id: &str,
        linux: LinuxContainerResources,
    ) -> Result<()>;

    /// Asks the runtime to reopen the container's log file (after rotation).
    async fn reopen_container_log(&self, container_id: &str) -> Result<()>;

    /// Runs a command in the container and waits for it, at most `timeout`
    /// (zero: no timeout of its own).
    async fn exec_sync(
        &self,
        container_id: &str,
        cmd: Vec<String>,
        timeout: Duration,
    ) -> Result<ExecSyncResponse>;

    /// Prepares a streaming exec (`Exec`): the URL of the runtime's
    /// streaming server the client's upgraded connection is proxied to
    /// (upstream `GetExec`). Runtimes without one answer `Unimplemented`.
    async fn exec(&self, request: api::ExecRequest) -> Result<String> {
        let _ = request;
        Err(Error::Unimplemented {
            call: Call::new("Exec"),
            message: "this runtime client has no streaming".into(),
        })
    }

    /// Prepares a streaming attach (`Attach`): the streaming server's URL.
    async fn attach(&self, request: api::AttachRequest) -> Result<String> {
        let _ = request;
        Err(Error::Unimplemented {
            call: Call::new("Attach"),
            message: "this runtime client has no streaming".into(),
        })
    }

    /// Prepares a port forward into a sandbox (`PortForward`): the
    /// streaming server's URL.
    async fn port_forward(&self, request: api::PortForwardRequest) -> Result<String> {
        let _ = request;
        Err(Error::Unimplemented {
            call: Call::new("PortForward"),
            message: "this runtime client has no streaming".into(),
        })
    }

    /// Resource usage of one container.
    async fn container_stats(&self, container_id: &str) -> Result<ContainerStats>;

    /// Resource usage of every container matching the filter.
    async fn list_container_stats(
        &self,
        filter: Option<ContainerStatsFilter>,
    ) -> Result<Vec<ContainerStats>>;

    /// Resource usage of every sandbox matching the filter.
    async fn list_pod_sandbox_stats(
        &self,
        filter: Option<PodSandboxStatsFilter>,
    ) -> Result<Vec<PodSandboxStats>>;

    /// A stream of container lifecycle events (created, started, stopped,
    /// deleted), for the evented PLEG.
    ///
    /// The subscription is opened in the background: events of changes made
    /// before the runtime has registered it may be missed, so a caller
    /// relists after subscribing, as upstream's evented PLEG does. Errors —
    /// [`Error::Unimplemented`] from containerd 1.6 among them — may come as
    /// an `Err` item of the stream, after which it ends; a caller then falls
    /// back to relisting.
    async fn get_container_events(&self) -> Result<ContainerEventStream>;
}

/// The image half of the CRI, as a kubelet calls it.
///
/// Mirrors upstream's `internalapi.ImageManagerService`.
#[async_trait]
pub trait ImageService: Send + Sync {
    /// Every image matching the filter.
    async fn list_images(&self, filter: Option<ImageFilter>) -> Result<Vec<Image>>;

    /// The image, or `None` when the runtime does not have it.
    async fn image_status(&self, image: ImageSpec, verbose: bool) -> Result<Option<Image>>;

    /// Pulls the image, with registry credentials when given; returns the
    /// image reference the runtime resolved it to.
    async fn pull_image(
        &self,
        image: ImageSpec,
        auth: Option<AuthConfig>,
        sandbox_config: Option<PodSandboxConfig>,
    ) -> Result<String>;

    /// Removes the image (no error when it is already gone).
    async fn remove_image(&self, image: ImageSpec) -> Result<()>;

    /// Usage of the filesystems that hold images and container layers.
    async fn image_fs_info(&self) -> Result<ImageFsInfoResponse>;
}
