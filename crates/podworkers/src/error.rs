//! The crate's one error type.

use std::time::Duration;

use crate::PodWorkerState;

/// The text upstream matches in a sync error to retry quickly
/// (`NetworkNotReadyErrorMsg` in `pkg/kubelet/kubelet_pods.go`).
pub const NETWORK_NOT_READY_ERROR_MSG: &str = "network is not ready";

/// A boxed error from a user's sync function or status cache.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Everything that can go wrong in the pod workers, and what a [`PodSyncer`]
/// or [`PodStatusCache`] returns.
///
/// The variants a syncer returns steer the retry timing as upstream's
/// `completeWork` does: [`Error::Cancelled`] is expected (a newer update is
/// already queued), [`Error::is_network_not_ready`] errors retry after 1–1.5 s,
/// anything else after 10–15 s.
///
/// [`PodSyncer`]: crate::PodSyncer
/// [`PodStatusCache`]: crate::PodStatusCache
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The sync was cancelled through its [`SyncContext`](crate::SyncContext)
    /// because the pod began terminating or its grace period shortened
    /// (upstream: `context.Canceled`).
    #[error("pod sync cancelled")]
    Cancelled,

    /// The pod network is not ready yet; the worker retries after 1–1.5 s
    /// (upstream: `backOffOnTransientErrorPeriod`).
    #[error("{NETWORK_NOT_READY_ERROR_MSG}: {0}")]
    NetworkNotReady(String),

    /// A sync function failed; the worker retries after 10–15 s.
    #[error("sync failed: {0}")]
    Sync(#[source] BoxError),

    /// The pod status cache could not give a status for the pod
    /// (upstream records a `FailedSync` event "error determining status").
    #[error("error determining status of pod {uid}: {source}")]
    StatusCache {
        /// The pod UID.
        uid: String,
        /// What the cache reported.
        #[source]
        source: BoxError,
    },

    /// A sync function panicked. The panic was caught and is contained to
    /// this pod, which is retried like any other failure.
    #[error("{state} sync of pod {uid} panicked: {message}")]
    Panicked {
        /// The pod UID.
        uid: String,
        /// The phase whose sync function panicked.
        state: PodWorkerState,
        /// The panic payload, when it was a string.
        message: String,
    },

    /// An update named a pod without a UID, or no pod at all.
    #[error("invalid pod update: {0}")]
    InvalidUpdate(String),

    /// [`PodWorkers::terminate_pod_abnormally_and_wait`](crate::PodWorkers::terminate_pod_abnormally_and_wait)
    /// gave up waiting (upstream: "timeout waiting to terminate pod abnormally").
    #[error("timeout waiting to terminate pod {uid} abnormally after {waited:?}")]
    TerminationTimeout {
        /// The pod UID.
        uid: String,
        /// How long it waited: max(1.5 × grace period, 10 s).
        waited: Duration,
    },

    /// The pod workers were shut down before the operation completed.
    #[error("pod workers shut down")]
    Shutdown,

    /// No tokio runtime was running when the pod workers were built.
    #[error("pod workers need a tokio runtime: {0}")]
    NoRuntime(String),
}

impl Error {
    /// Wraps any error as [`Error::Sync`].
    pub fn sync(err: impl Into<BoxError>) -> Self {
        Self::Sync(err.into())
    }

    /// True when the error means "network is not ready": the
    /// [`Error::NetworkNotReady`] variant, or (as upstream matches text) any
    /// error whose message contains [`NETWORK_NOT_READY_ERROR_MSG`].
    pub fn is_network_not_ready(&self) -> bool {
        match self {
            Self::NetworkNotReady(_) => true,
            other => other.to_string().contains(NETWORK_NOT_READY_ERROR_MSG),
        }
    }
}

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
