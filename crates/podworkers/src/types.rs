//! The value types of the pod workers: states, update options, kill options,
//! the runtime-only pod, the sync context and the configuration.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, PodStatus};
use tokio::sync::{Notify, oneshot};
use tokio::time::Instant;

use crate::error::{Error, Result};

/// Resync period after a successful sync (kubelet `syncFrequency`, 1 min).
pub const DEFAULT_RESYNC_INTERVAL: Duration = Duration::from_secs(60);
/// Retry period after a failed sync (kubelet `backOffPeriod`, 10 s).
pub const DEFAULT_BACKOFF_PERIOD: Duration = Duration::from_secs(10);
/// Retry period after a "network is not ready" error
/// (upstream `backOffOnTransientErrorPeriod`, 1 s).
pub const BACKOFF_ON_TRANSIENT_ERROR_PERIOD: Duration = Duration::from_secs(1);
/// Jitter factor of the resync interval (`workerResyncIntervalJitterFactor`):
/// a delay `d` becomes a random value in `[d, d + 0.5·d)`.
pub const RESYNC_JITTER_FACTOR: f64 = 0.5;
/// Jitter factor of the back-off periods (`workerBackOffPeriodJitterFactor`).
pub const BACKOFF_JITTER_FACTOR: f64 = 0.5;
/// Shortest wait of `terminate_pod_abnormally_and_wait` (10 s).
pub const MIN_ABNORMAL_TERMINATION_WAIT: Duration = Duration::from_secs(10);
pub use kubelet_container::pod::{
    API_SOURCE as API_SERVER_SOURCE, CONFIG_SOURCE_ANNOTATION, build_pod_full_name, is_static_pod,
};

/// Where a pod is in its lifecycle, as the pod worker sees it
/// (upstream `PodWorkerState`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PodWorkerState {
    /// The pod is expected to be started and running (`SyncPod`).
    Sync,
    /// The pod is no longer being set up; containers may still run and are
    /// being torn down (`TerminatingPod`).
    Terminating,
    /// The pod has no running containers; cleanup may still run
    /// (`TerminatedPod`).
    Terminated,
}

impl fmt::Display for PodWorkerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Sync => "sync",
            Self::Terminating => "terminating",
            Self::Terminated => "terminated",
        })
    }
}

/// The kind of an update (upstream `kubetypes.SyncPodType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum SyncPodType {
    /// A periodic or replayed sync. Replays of the last update use this type.
    #[default]
    Sync,
    /// The pod changed.
    Update,
    /// The pod was seen for the first time.
    Create,
    /// The pod must be terminated (eviction, preemption, shutdown, orphan).
    Kill,
}

impl fmt::Display for SyncPodType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Sync => "sync",
            Self::Update => "update",
            Self::Create => "create",
            Self::Kill => "kill",
        })
    }
}

/// What a successful [`PodSyncer::sync_pod`](crate::PodSyncer::sync_pod)
/// reports (upstream's `isTerminal` return value).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncPodOutcome {
    /// The pod keeps running; resync after the resync interval.
    Running,
    /// The pod reached a terminal phase (Succeeded or Failed) on its own;
    /// the worker moves it to terminating at once.
    Terminal,
}

/// A pod known only from the container runtime, with no configuration: an
/// orphan left behind (for instance by a previous kubelet run) that must be
/// torn down.
///
/// Upstream passes a `kubecontainer.Pod` with its containers and sandboxes;
/// this crate keeps only the identity, so it does not depend on a runtime
/// API: the [`PodSyncer`](crate::PodSyncer) finds the containers by UID.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct RuntimePod {
    /// The pod UID (from the runtime's `io.kubernetes.pod.uid` label).
    pub uid: String,
    /// The pod name.
    pub name: String,
    /// The pod namespace.
    pub namespace: String,
}

impl RuntimePod {
    /// A runtime pod with this identity.
    pub fn new(
        uid: impl Into<String>,
        name: impl Into<String>,
        namespace: impl Into<String>,
    ) -> Self {
        Self {
            uid: uid.into(),
            name: name.into(),
            namespace: namespace.into(),
        }
    }
}

/// A function that overrides the pod status reported after a kill
/// (upstream `PodStatusFunc`), for instance to mark the pod `Evicted`.
pub type PodStatusFn = Arc<dyn Fn(&mut PodStatus) + Send + Sync>;

/// How a pod is terminated abnormally (upstream `kubetypes.TerminatePodOptions`).
#[derive(Clone, Default)]
pub struct TerminatePodOptions {
    /// The kill is an eviction: the pod's content may be removed at once
    /// ([`PodWorkers::should_pod_content_be_removed`](crate::PodWorkers::should_pod_content_be_removed)).
    pub evict: bool,
    /// A shorter grace period, in seconds. The effective grace period only
    /// ever goes down.
    pub grace_period_seconds_override: Option<i64>,
    /// Overrides the status the syncer reports for the killed pod.
    pub status_fn: Option<PodStatusFn>,
}

impl fmt::Debug for TerminatePodOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TerminatePodOptions")
            .field("evict", &self.evict)
            .field(
                "grace_period_seconds_override",
                &self.grace_period_seconds_override,
            )
            .field("status_fn", &self.status_fn.as_ref().map(|_| "<fn>"))
            .finish()
    }
}

/// Options of a [`SyncPodType::Kill`] update (upstream `KillPodOptions`).
#[derive(Debug, Default)]
pub struct KillPodOptions {
    /// Eviction, grace period override and status function.
    pub terminate: TerminatePodOptions,
    /// Signalled (a `()` is sent) once the kill has completed: when the
    /// pod's terminating sync succeeded, or at once when the pod is already
    /// terminated, finished, unknown or was never started. The receiver sees
    /// an error only if the pod workers were shut down first.
    pub completed: Option<oneshot::Sender<()>>,
}

impl KillPodOptions {
    /// Kill options with a completion signal, and the receiver to wait on.
    pub fn with_completion(terminate: TerminatePodOptions) -> (Self, oneshot::Receiver<()>) {
        let (tx, rx) = oneshot::channel();
        (
            Self {
                terminate,
                completed: Some(tx),
            },
            rx,
        )
    }
}

/// One update handed to [`PodWorkers::update_pod`](crate::PodWorkers::update_pod)
/// (upstream `UpdatePodOptions`).
///
/// Either `pod` is set, or `running_pod` with [`SyncPodType::Kill`].
#[derive(Debug, Default)]
pub struct UpdatePodOptions {
    /// The kind of update.
    pub update_type: SyncPodType,
    /// When the update was created, for latency measurement (the oldest one
    /// is kept while updates coalesce).
    pub start_time: Option<Instant>,
    /// The pod. Required unless `running_pod` is set.
    pub pod: Option<Arc<Pod>>,
    /// The mirror pod when `pod` is a static pod.
    pub mirror_pod: Option<Arc<Pod>>,
    /// A runtime-only pod to tear down; only valid without `pod` and with
    /// [`SyncPodType::Kill`].
    pub running_pod: Option<RuntimePod>,
    /// Kill options; only meaningful once the pod is terminating.
    pub kill_pod_options: Option<KillPodOptions>,
}

impl UpdatePodOptions {
    /// An update of `update_type` for `pod`.
    pub fn new(update_type: SyncPodType, pod: impl Into<Arc<Pod>>) -> Self {
        Self {
            update_type,
            pod: Some(pod.into()),
            ..Self::default()
        }
    }

    /// A [`SyncPodType::Create`] update.
    pub fn create(pod: impl Into<Arc<Pod>>) -> Self {
        Self::new(SyncPodType::Create, pod)
    }

    /// A [`SyncPodType::Update`] update.
    pub fn update(pod: impl Into<Arc<Pod>>) -> Self {
        Self::new(SyncPodType::Update, pod)
    }

    /// A [`SyncPodType::Sync`] update.
    pub fn sync(pod: impl Into<Arc<Pod>>) -> Self {
        Self::new(SyncPodType::Sync, pod)
    }

    /// A [`SyncPodType::Kill`] update with these options.
    pub fn kill(pod: impl Into<Arc<Pod>>, options: KillPodOptions) -> Self {
        Self {
            kill_pod_options: Some(options),
            ..Self::new(SyncPodType::Kill, pod)
        }
    }

    /// A kill of a runtime-only (orphaned) pod.
    pub fn kill_runtime_pod(running_pod: RuntimePod) -> Self {
        Self {
            update_type: SyncPodType::Kill,
            running_pod: Some(running_pod),
            ..Self::default()
        }
    }

    /// Sets the mirror pod.
    pub fn with_mirror_pod(mut self, mirror_pod: impl Into<Arc<Pod>>) -> Self {
        self.mirror_pod = Some(mirror_pod.into());
        self
    }

    /// Sets the start time used for latency measurement.
    pub fn with_start_time(mut self, start_time: Instant) -> Self {
        self.start_time = Some(start_time);
        self
    }
}

/// The summary of one known worker returned by
/// [`PodWorkers::sync_known_pods`](crate::PodWorkers::sync_known_pods)
/// (upstream `PodWorkerSync`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PodWorkerSync {
    /// The pod's state.
    pub state: PodWorkerState,
    /// The pod was not in the desired set.
    pub orphan: bool,
    /// A pod spec is known for the worker.
    pub has_config: bool,
    /// The known pod spec is a static pod.
    pub is_static: bool,
}

#[derive(Debug, Default)]
struct CancelInner {
    cancelled: AtomicBool,
    notify: Notify,
}

/// The cancellation context handed to each sync call (upstream passes a
/// `context.Context`).
///
/// The worker cancels it when the pod begins terminating or its grace period
/// shortens while a sync may be running. A long sync should watch
/// [`SyncContext::cancelled`] or check [`SyncContext::check`] and return
/// [`Error::Cancelled`]; the newer update is already queued.
#[derive(Debug, Clone, Default)]
pub struct SyncContext {
    inner: Arc<CancelInner>,
}

impl SyncContext {
    /// A context that is not cancelled.
    pub fn new() -> Self {
        Self::default()
    }

    /// True once cancelled.
    pub fn is_cancelled(&self) -> bool {
        self.inner.cancelled.load(Ordering::Acquire)
    }

    /// `Err(Error::Cancelled)` once cancelled, `Ok(())` before.
    pub fn check(&self) -> Result<()> {
        if self.is_cancelled() {
            Err(Error::Cancelled)
        } else {
            Ok(())
        }
    }

    /// Completes once the context is cancelled.
    pub async fn cancelled(&self) {
        loop {
            let notified = self.inner.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.is_cancelled() {
                return;
            }
            notified.await;
        }
    }

    /// Cancels the context and wakes every waiter.
    pub fn cancel(&self) {
        self.inner.cancelled.store(true, Ordering::Release);
        self.inner.notify.notify_waiters();
    }
}

/// Timing of the pod workers. The defaults are upstream's.
#[derive(Debug, Clone)]
pub struct PodWorkersConfig {
    /// Resync after a successful sync (`syncFrequency`, default 60 s),
    /// jittered by [`RESYNC_JITTER_FACTOR`].
    pub resync_interval: Duration,
    /// Retry after a failed sync, and retry of a static pod waiting for its
    /// turn (`backOffPeriod`, default 10 s), jittered by [`BACKOFF_JITTER_FACTOR`].
    pub backoff_period: Duration,
    /// Seed of the jitter's pseudo-random sequence (tests use a fixed one).
    pub jitter_seed: u64,
}

impl Default for PodWorkersConfig {
    fn default() -> Self {
        Self {
            resync_interval: DEFAULT_RESYNC_INTERVAL,
            backoff_period: DEFAULT_BACKOFF_PERIOD,
            jitter_seed: 0x5eed_cafe_f00d_d00d,
        }
    }
}
