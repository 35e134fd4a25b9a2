//! The per-pod state machine of a kubelet.
//!
//! This crate mirrors upstream's `pkg/kubelet/pod_workers.go`: the authority
//! inside a kubelet on which pods are running, terminating or terminated. It
//! runs one worker task per pod UID and drives each pod through three phases,
//! calling the owner's sync functions:
//!
//! 1. **sync** ([`PodSyncer::sync_pod`]) until the pod is deleted, reaches a
//!    terminal phase, or is killed (eviction, preemption, orphaning);
//! 2. **terminating** ([`PodSyncer::sync_terminating_pod`], or
//!    [`PodSyncer::sync_terminating_runtime_pod`] for a pod known only from the
//!    runtime) until it succeeds, with a grace period that only ever shortens;
//! 3. **terminated** ([`PodSyncer::sync_terminated_pod`]) until it succeeds;
//!    the pod is then *finished* and never runs again under that UID until
//!    [`PodWorkers::sync_known_pods`] forgets it.
//!
//! It guarantees that a pod is never synced twice at once, that two static
//! pods with the same full name never run at the same time, and that every
//! kill completes and signals its completion.
//!
//! # Central traits
//!
//! - [`PodSyncer`]: what the owner implements, the four sync functions.
//! - [`PodWorkers`]: what callers use: [`PodWorkers::update_pod`],
//!   [`PodWorkers::sync_known_pods`], and the queries other kubelet loops ask.
//! - [`PodStatusCache`]: the runtime status cache the worker waits on before
//!   each sync (upstream `kubecontainer.Cache.GetNewerThan`). The PLEG crate
//!   implements it; see the trait for the design choice.
//! - [`EventRecorder`]: where failures are reported (upstream's events).
//!
//! [`PodWorkerPool`] is the implementation. [`fake`] has a recording syncer
//! and a controllable cache for tests of this and downstream crates.
//!
//! # Timing
//!
//! As upstream: after a successful sync the worker resyncs after the resync
//! interval (60 s) with jitter (60–90 s); after an error it retries after
//! 10–15 s ("network is not ready": 1–1.5 s); a phase change runs the next
//! phase at once. Upstream hands these delays to the kubelet's work queue,
//! which sends a `Sync` update back; here the worker's own timer replays its
//! last update, so a driver does not need a work queue.
//!
//! # Example
//!
//! ```no_run
//! use std::collections::HashSet;
//! use std::sync::Arc;
//!
//! use async_trait::async_trait;
//! use k8s_openapi::api::core::v1::Pod;
//! use kubelet_podworkers::fake::FakeStatusCache;
//! use kubelet_podworkers::{
//!     Error, PodSyncer, PodWorkerPool, PodWorkers, RuntimePod, SyncContext,
//!     SyncPodOutcome, SyncPodType, TerminatePodOptions, UpdatePodOptions,
//! };
//!
//! struct MySyncer;
//!
//! #[async_trait]
//! impl PodSyncer for MySyncer {
//!     type Status = kubelet_podworkers::fake::FakePodStatus;
//!
//!     async fn sync_pod(&self, ctx: &SyncContext, _: SyncPodType, pod: &Pod,
//!         _mirror: Option<&Pod>, _status: &Self::Status) -> Result<SyncPodOutcome, Error> {
//!         ctx.check()?; // start containers of `pod` here
//!         Ok(SyncPodOutcome::Running)
//!     }
//!     async fn sync_terminating_pod(&self, _: &SyncContext, _pod: &Pod, _: &Self::Status,
//!         grace_period_seconds: i64, _: Option<&TerminatePodOptions>) -> Result<(), Error> {
//!         let _ = grace_period_seconds; // stop containers here
//!         Ok(())
//!     }
//!     async fn sync_terminating_runtime_pod(&self, _: &SyncContext, _: &RuntimePod) -> Result<(), Error> {
//!         Ok(())
//!     }
//!     async fn sync_terminated_pod(&self, _: &SyncContext, _: &Pod, _: &Self::Status) -> Result<(), Error> {
//!         Ok(()) // release volumes, write the final status
//!     }
//! }
//!
//! # async fn demo(pod: Pod) -> Result<(), Error> {
//! let workers = PodWorkerPool::builder(MySyncer, FakeStatusCache::always_fresh()).build()?;
//! let uid = pod.metadata.uid.clone().unwrap_or_default();
//! workers.update_pod(UpdatePodOptions::create(pod.clone()));
//! // ... later, eviction:
//! workers
//!     .terminate_pod_abnormally_and_wait(Arc::new(pod), TerminatePodOptions {
//!         evict: true,
//!         grace_period_seconds_override: Some(1),
//!         status_fn: None,
//!     })
//!     .await?;
//! assert!(workers.should_pod_content_be_removed(&uid));
//! // housekeeping: forget finished workers of pods no longer desired
//! let known = workers.sync_known_pods(&HashSet::new());
//! println!("{} workers still known", known.len());
//! # Ok(())
//! # }
//! ```

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use async_trait::async_trait;
use k8s_openapi::api::core::v1::Pod;
use tokio::time::Instant;

pub mod error;
pub mod fake;
mod grace;
mod pool;
mod types;

pub use error::{BoxError, Error, NETWORK_NOT_READY_ERROR_MSG, Result};
pub use grace::calculate_effective_grace_period;
pub use pool::{PodWorkerPool, PodWorkerPoolBuilder};
pub use types::{
    API_SERVER_SOURCE, BACKOFF_JITTER_FACTOR, BACKOFF_ON_TRANSIENT_ERROR_PERIOD,
    CONFIG_SOURCE_ANNOTATION, DEFAULT_BACKOFF_PERIOD, DEFAULT_RESYNC_INTERVAL, KillPodOptions,
    MIN_ABNORMAL_TERMINATION_WAIT, PodStatusFn, PodWorkerState, PodWorkerSync, PodWorkersConfig,
    RESYNC_JITTER_FACTOR, RuntimePod, SyncContext, SyncPodOutcome, SyncPodType,
    TerminatePodOptions, UpdatePodOptions, build_pod_full_name, is_static_pod,
};

/// The lifecycle operations the owner of the pod workers implements
/// (upstream's `podSyncer` interface).
///
/// A pod is first synced with [`sync_pod`](Self::sync_pod) until it reaches a
/// terminal phase on its own or is asked to terminate; then
/// [`sync_terminating_pod`](Self::sync_terminating_pod) runs until it
/// succeeds; then [`sync_terminated_pod`](Self::sync_terminated_pod) runs
/// until it succeeds. The worker never calls two of these at once for one
/// pod, but calls them concurrently for different pods.
///
/// A panic in any of them is caught, reported as [`Error::Panicked`] and
/// retried like an error; other pods are not affected.
#[async_trait]
pub trait PodSyncer: Send + Sync + 'static {
    /// The runtime status of a pod that the [`PodStatusCache`] supplies
    /// (upstream `*kubecontainer.PodStatus`; the PLEG crate's type).
    type Status: Send + Sync + 'static;

    /// Sets the pod up and (re)starts its containers. Returns
    /// [`SyncPodOutcome::Terminal`] once the pod reached Succeeded or Failed
    /// on its own. Should return [`Error::Cancelled`] early when `ctx` is
    /// cancelled.
    async fn sync_pod(
        &self,
        ctx: &SyncContext,
        update_type: SyncPodType,
        pod: &Pod,
        mirror_pod: Option<&Pod>,
        status: &Self::Status,
    ) -> Result<SyncPodOutcome>;

    /// Stops every container of the pod within `grace_period_seconds`
    /// (at least 1, the effective grace period in force) and collects the
    /// final status. Called again, with the same or a shorter grace period,
    /// until it returns `Ok`. `abnormal` is the most recent kill request, if
    /// the kubelet is acting outside the normal lifecycle (eviction, ...).
    async fn sync_terminating_pod(
        &self,
        ctx: &SyncContext,
        pod: &Pod,
        status: &Self::Status,
        grace_period_seconds: i64,
        abnormal: Option<&TerminatePodOptions>,
    ) -> Result<()>;

    /// Stops the containers of a pod known only from the runtime (no
    /// configuration). Must not return `Ok` unless all are stopped.
    async fn sync_terminating_runtime_pod(
        &self,
        ctx: &SyncContext,
        running_pod: &RuntimePod,
    ) -> Result<()>;

    /// Releases what must be released right away once no container runs
    /// (volumes, devices, the final status). When it returns `Ok` the pod
    /// is finished on this node.
    async fn sync_terminated_pod(
        &self,
        ctx: &SyncContext,
        pod: &Pod,
        status: &Self::Status,
    ) -> Result<()>;
}

/// The runtime pod status cache a worker waits on before each sync
/// (upstream `kubecontainer.Cache`, filled by the PLEG).
///
/// # Design
///
/// The trait is defined here so that the `pleg` crate implements it while
/// depending on this crate (the dependency points from the PLEG's cache to
/// the pod workers, never back). It is generic over the status through the
/// associated type [`Status`](Self::Status), so the PLEG keeps its own
/// `PodStatus` (containers, sandboxes, IPs) and the syncer receives exactly
/// that value: a [`PodWorkerPool`] requires
/// `C: PodStatusCache<Status = S::Status>`. A cache that holds large
/// statuses should make `Status` an `Arc<...>` so handing it out is cheap.
///
/// Timestamps are [`tokio::time::Instant`], so tests with a paused clock
/// control them.
#[async_trait]
pub trait PodStatusCache: Send + Sync + 'static {
    /// The status value handed to the syncer.
    type Status: Send + Sync + 'static;

    /// Waits until the cache holds data for `uid` newer than `min_time` (or
    /// the whole cache was refreshed after it), then returns the pod's
    /// status (upstream `GetNewerThan`; an unknown pod gets an empty
    /// status). `None` is a pod's first sync, upstream's zero time: wait
    /// until the cache has any data of the pod or has been refreshed once,
    /// so that a kubelet that restarts never syncs a running pod against an
    /// empty status.
    async fn get_newer_than(&self, uid: &str, min_time: Option<Instant>) -> Result<Self::Status>;

    /// True when the cached status shows nothing of the pod running: no
    /// running container and no ready sandbox (upstream
    /// `isPodStatusCacheTerminal(podCache.Get(uid))`; an unknown pod counts
    /// as terminal, a cached inspection error as not terminal). Must not
    /// block.
    fn is_runtime_terminal(&self, uid: &str) -> bool;
}

/// A shared cache is a cache: the PLEG writes the one the workers read.
#[async_trait]
impl<T: PodStatusCache> PodStatusCache for Arc<T> {
    type Status = T::Status;

    async fn get_newer_than(&self, uid: &str, min_time: Option<Instant>) -> Result<Self::Status> {
        T::get_newer_than(self, uid, min_time).await
    }

    fn is_runtime_terminal(&self, uid: &str) -> bool {
        T::is_runtime_terminal(self, uid)
    }
}

/// Where the pod workers report what upstream records as events.
///
/// Every method has a no-op default.
pub trait EventRecorder: Send + Sync + 'static {
    /// A sync function (or the status cache) failed or panicked for a pod
    /// (upstream `FailedSync`). Not called for [`Error::Cancelled`].
    fn sync_failed(&self, uid: &str, state: PodWorkerState, error: &Error) {
        let _ = (uid, state, error);
    }

    /// An abnormal termination did not finish in time (upstream
    /// `ExceededGracePeriod`, "Container runtime did not terminate the pod
    /// within specified grace period.").
    fn exceeded_grace_period(&self, pod: &Pod) {
        let _ = pod;
    }
}

/// An [`EventRecorder`] that records nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoopRecorder;

impl EventRecorder for NoopRecorder {}

/// What callers of the pod workers use (upstream's `PodWorkers` interface).
///
/// Query methods answer for unknown UIDs as upstream does: before the first
/// [`sync_known_pods`](Self::sync_known_pods) an unknown pod may still be
/// running; after it, an unknown pod is known not to run.
#[async_trait]
pub trait PodWorkers: Send + Sync {
    /// Hands a change or a termination to the pod's worker, starting one if
    /// needed. Pending updates coalesce: the worker sees only the newest.
    /// Ignored for a finished pod until it is forgotten.
    fn update_pod(&self, options: UpdatePodOptions);

    /// Kills the pod outside its natural lifecycle and waits until it is
    /// terminated, at most max(1.5 × grace period, 10 s); on timeout it
    /// reports [`EventRecorder::exceeded_grace_period`] and returns
    /// [`Error::TerminationTimeout`].
    async fn terminate_pod_abnormally_and_wait(
        &self,
        pod: Arc<Pod>,
        options: TerminatePodOptions,
    ) -> Result<()>;

    /// Housekeeping: forgets finished workers whose pod is not in
    /// `desired_uids` (or whose UID was re-created), starts terminating
    /// running pods that are no longer desired, and returns every worker it
    /// kept. The caller re-sends a `Create` for desired pods missing from the
    /// result.
    fn sync_known_pods(&self, desired_uids: &HashSet<String>) -> HashMap<String, PodWorkerSync>;

    /// True while the pod workers hold state for the UID.
    fn is_pod_known(&self, uid: &str) -> bool;

    /// The pod's state, if known.
    fn pod_state(&self, uid: &str) -> Option<PodWorkerState>;

    /// True once the pod's terminating sync succeeded (unknown: false).
    fn is_pod_known_terminated(&self, uid: &str) -> bool;

    /// False once the pod is terminated (unknown: true until the first
    /// `sync_known_pods`).
    fn could_have_running_containers(&self, uid: &str) -> bool;

    /// True once the terminated sync succeeded (unknown: true after the
    /// first `sync_known_pods`).
    fn should_pod_be_finished(&self, uid: &str) -> bool;

    /// True from the moment termination is requested (unknown: false).
    fn is_pod_termination_requested(&self, uid: &str) -> bool;

    /// True once the worker has observed the termination request, so no new
    /// container will start (unknown: true after the first `sync_known_pods`).
    fn should_pod_containers_be_terminating(&self, uid: &str) -> bool;

    /// True once the pod is terminated (unknown: true after the first
    /// `sync_known_pods`).
    fn should_pod_runtime_be_removed(&self, uid: &str) -> bool;

    /// True for an evicted pod, or a deleted one once terminated (unknown:
    /// true after the first `sync_known_pods`).
    fn should_pod_content_be_removed(&self, uid: &str) -> bool;

    /// True while the started static pod of this full name
    /// (`name_namespace`) is terminating and not yet terminated.
    fn is_pod_for_mirror_pod_terminating_by_full_name(&self, full_name: &str) -> bool;

    /// The effective grace period in force, in seconds, once termination is
    /// requested.
    fn grace_period(&self, uid: &str) -> Option<i64>;
}

#[cfg(test)]
mod tests;

/// The PLEG's pod status cache is the cache the workers wait on.
#[async_trait]
impl PodStatusCache for kubelet_container::PodCache {
    type Status = Arc<kubelet_container::PodStatus>;

    async fn get_newer_than(
        &self,
        uid: &str,
        min_time: Option<Instant>,
    ) -> Result<Arc<kubelet_container::PodStatus>> {
        // `None` (a pod's first sync) waits, as upstream's zero time does,
        // for the first data of the pod or the first relist: an empty status
        // before the PLEG has looked would make the first sync after a
        // kubelet restart create a second sandbox for a running pod.
        kubelet_container::PodCache::get_newer_than(self, uid, min_time)
            .await
            .map_err(|e| Error::StatusCache {
                uid: uid.to_owned(),
                source: Box::new(e),
            })
    }

    fn is_runtime_terminal(&self, uid: &str) -> bool {
        kubelet_container::PodCache::is_runtime_terminal(self, uid)
    }
}
