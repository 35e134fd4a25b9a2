//! Liveness, readiness and startup probes for a kubelet, mirroring upstream's
//! `pkg/kubelet/prober` and `pkg/probe`.
//!
//! A container may declare three probes; each is run periodically by a
//! worker, and each worker's result lands in one of three caches:
//!
//! - [`Manager`] (`prober_manager.go`): [`Manager::add_pod`] starts one
//!   worker per (pod, container, probe type) for the pod's containers and
//!   sidecars; [`Manager::remove_pod`] and [`Manager::cleanup_pods`] stop
//!   them; [`Manager::update_pod_status`] sets `containerStatuses[].ready`
//!   and `.started` from the results. [`Manager::liveness`],
//!   [`Manager::readiness`] and [`Manager::startup`] give the caches.
//! - [`results::Manager`] (`results/results_manager.go`): a cache of
//!   [`ProbeResult`] per [`ContainerId`] with a channel of
//!   [`results::Update`]s, sent only when a result changes.
//! - the worker (`worker.go`): jitter, `initialDelaySeconds`, the
//!   success/failure thresholds, on-hold after a liveness or startup failure
//!   until the container is restarted, startup gating (see the `worker`
//!   module source for the exact rules).
//! - [`Prober`] (`prober.go`) and the mechanisms in [`probe`]: exec through
//!   CRI `ExecSync` ([`kubelet_cri_client::RuntimeService`]), HTTP(S) GET,
//!   TCP connect and gRPC health checks, with upstream's defaults
//!   ([`ProbeTiming`]), host defaulting (the pod IP), named ports, 10 KiB
//!   output caps, `User-Agent: kube-probe/<major.minor>`, and same-host-only
//!   redirects.
//!
//! The workers read pod statuses through a [`StatusProvider`] that the
//! kubelet's status manager implements. Probe failures are recorded as
//! upstream's Warning `Unhealthy` events (`Liveness probe failed:
//! <output>`) and warnings as `ProbeWarning`, through the core crate's
//! `EventRecorder` given to [`ManagerBuilder::event_recorder`].
//!
//! # Wiring
//!
//! The kubelet adds a pod's probes when it admits the pod, sets `ready` and
//! `started` whenever it generates the pod's API status, syncs a pod when
//! one of its results changes, and its runtime manager kills a container
//! whose liveness or startup result is [`ProbeResult::Failure`]:
//!
//! ```no_run
//! use std::sync::Arc;
//! use k8s_openapi::api::core::v1::{Pod, PodStatus};
//! use kubelet_prober::{ContainerId, Manager, ProbeResult, StatusProvider};
//!
//! # async fn demo(
//! #     runtime: Arc<dyn kubelet_cri_client::RuntimeService>,
//! #     statuses: Arc<dyn StatusProvider>,
//! #     pod: Pod,
//! #     mut status: PodStatus,
//! # ) -> Result<(), kubelet_prober::Error> {
//! let probes = Manager::builder(runtime, statuses).build()?;
//! let mut liveness_updates = probes.liveness().updates();
//!
//! probes.add_pod(&pod); // on admission
//! probes.update_pod_status(&pod, &mut status); // when generating the API status
//!
//! while let Some(update) = liveness_updates.recv().await {
//!     // Sync update.pod_uid; its runtime manager then checks:
//!     let id = ContainerId::parse("containerd://0123abcd")?;
//!     if probes.liveness().get(&id) == Some(ProbeResult::Failure) {
//!         // kill and restart the container
//!     }
//! }
//! probes.remove_pod(&pod); // when the pod is gone
//! # Ok(())
//! # }
//! ```
//!
//! # Not done
//!
//! - A probe's own `terminationGracePeriodSeconds` is not read: a container
//!   killed for a failed probe gets the pod's grace period.
//! - Metrics are left to the [`ManagerBuilder::on_probe`] and
//!   [`ManagerBuilder::on_worker_stop`] hooks (the kubelet counts
//!   `prober_probe_total` through them).
//! - Probes may target any host (the `host` field), as upstream; the
//!   kubelet does not keep them from reaching the node's network
//!   (upstream issue 81129).
//! - HTTP probes do not set `SO_LINGER` (upstream does, to spare
//!   `TIME_WAIT` sockets).

mod error;
mod manager;
pub mod probe;
mod prober;
pub mod results;
mod worker;

pub use error::Error;
pub use manager::{
    Clock, Manager, ManagerBuilder, ProbeEvent, ProbeWorkerStopped, StatusProvider, SystemClock,
    TokioClock,
};
pub use prober::{DEFAULT_KUBE_VERSION, MAX_PROBE_RETRIES, ProbeTiming, ProbeType, Prober};
pub use results::{ContainerId, ProbeResult};
