//! The shared vocabulary of a kubelet, without I/O: what every component
//! crate of this workspace speaks, so that none of them depends on another
//! for it.
//!
//! Mirrors upstream `pkg/kubelet/container` (kube-rs's `kube-core` is the
//! model for its place in the workspace): the runtime's view of a pod
//! ([`PodStatus`], [`RunningPod`]), the read half of the runtime interface
//! that the PLEG consumes, the pod status [`PodCache`], container IDs that
//! carry the runtime's own type, and pod helpers. It is also the one home
//! of the small models every component needs: Kubernetes
//! [`quantity`] parsing, Go [`duration`]s, pod [`qos`], eviction
//! [`threshold`]s (upstream `pkg/kubelet/eviction/api`) and
//! [`flowcontrol`] (upstream `client-go/util/flowcontrol`: `Backoff`,
//! token buckets), the [`env`](mod@env) sources and downward API values of a
//! container's environment, and the node and pod [`stats`] summary with its
//! [`SummaryProvider`](stats::SummaryProvider) (upstream
//! `k8s.io/kubelet/pkg/apis/stats/v1alpha1`).
//!
//! # Central trait
//!
//! [`RuntimeReader`]: the pods a container runtime holds and one pod's
//! status (the read half of upstream `kubecontainer.Runtime`). The PLEG
//! needs only this; `kubelet-kuberuntime`'s `Runtime` extends it with
//! SyncPod and KillPod.
//!
//! ```
//! use std::sync::Arc;
//! use async_trait::async_trait;
//! use kubelet_container::{Error, PodCache, PodStatus, RunningPod, RuntimeReader};
//!
//! /// A runtime that holds nothing.
//! struct Empty;
//!
//! #[async_trait]
//! impl RuntimeReader for Empty {
//!     async fn get_pods(&self, _all: bool) -> Result<Vec<RunningPod>, Error> {
//!         Ok(Vec::new())
//!     }
//!     async fn get_pod_status(&self, uid: &str, name: &str, namespace: &str)
//!         -> Result<PodStatus, Error> {
//!         Ok(PodStatus { uid: uid.into(), name: name.into(), namespace: namespace.into(),
//!             ..PodStatus::default() })
//!     }
//!     fn container_status_from_cri(&self, s: &kubelet_container::cri::ContainerStatus)
//!         -> kubelet_container::ContainerStatus {
//!         kubelet_container::ContainerStatus {
//!             id: s.id.clone(),
//!             name: s.metadata.as_ref().map(|m| m.name.clone()).unwrap_or_default(),
//!             state: s.state().into(),
//!             created_at: s.created_at,
//!             started_at: s.started_at,
//!             finished_at: s.finished_at,
//!             exit_code: s.exit_code,
//!             image: String::new(),
//!             image_ref: s.image_ref.clone(),
//!             hash: None,
//!             restart_count: 0,
//!             reason: s.reason.clone(),
//!             message: s.message.clone(),
//!             container_type: kubelet_container::ContainerType::Regular,
//!             pod_termination_grace_period: None,
//!         }
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Error> {
//! let runtime: Arc<dyn RuntimeReader> = Arc::new(Empty);
//! let cache = PodCache::new();
//! let status = runtime.get_pod_status("uid-1", "web", "default").await?;
//! cache.set("uid-1", Ok(Arc::new(status)), tokio::time::Instant::now());
//! assert!(cache.is_runtime_terminal("uid-1"));
//! # Ok(())
//! # }
//! ```

pub mod cache;
pub mod duration;
pub mod env;
mod error;
pub mod events;
pub mod flowcontrol;
pub mod id;
pub mod pod;
pub mod podres;
pub mod qos;
pub mod quantity;
mod runtime;
pub mod stats;
pub mod status;
pub mod threshold;
mod volume;

pub use cache::PodCache;
pub use error::{Error, Result};
pub use events::{EventRecorder, EventType, NoopRecorder};
pub use id::ContainerId;
pub use runtime::{ContainerResources, HttpHook, KUBE_VERSION, PodStatusProvider, RuntimeReader};
pub use status::{
    ContainerHash, ContainerState, ContainerStatus, ContainerType, PodStatus, RunningContainer,
    RunningPod, RunningSandbox,
};
pub use volume::{PodVolumes, PrepareSubpath, Subpath, Subpaths};

/// The CRI `runtime.v1` messages that statuses carry (from `k8s-cri`).
pub use k8s_cri::v1 as cri;

/// Locks a mutex, taking the data of a poisoned one: every value guarded in
/// this crate stays consistent between statements, so a panic elsewhere
/// leaves nothing half-written.
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
