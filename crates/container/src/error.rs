//! The crate's one error type.

use std::sync::Arc;

/// Errors of this crate. Cheap to clone: the pod status cache hands the
/// same inspection error to every waiter.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A Kubernetes quantity (`"250m"`, `"64Mi"`) that does not parse.
    #[error("invalid quantity {value:?}: {reason}")]
    InvalidQuantity {
        /// The text that was given.
        value: String,
        /// Why it was refused.
        reason: &'static str,
    },
    /// A Go duration (`"1m30s"`) that does not parse.
    #[error("invalid duration {value:?}: {reason}")]
    InvalidDuration {
        /// The text that was given.
        value: String,
        /// Why it was refused.
        reason: String,
    },
    /// An eviction threshold that does not parse (upstream
    /// `ParseThresholdConfig` errors).
    #[error("invalid eviction threshold {input:?}: {reason}")]
    InvalidThreshold {
        /// The text as given.
        input: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A configuration value is inconsistent (for example a soft threshold
    /// without a grace period, or a rate limit burst of zero).
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    /// A container ID that is not `<type>://<id>`.
    #[error("invalid container ID {0:?}: expected <type>://<id>")]
    InvalidContainerId(String),
    /// Reading the runtime's state failed.
    #[error("reading the runtime: {source}")]
    Runtime {
        /// The pod (`namespace/name`, its UID, or `*` for all).
        pod: String,
        /// What the runtime reported.
        source: Arc<dyn std::error::Error + Send + Sync>,
    },
    /// The node's or the pods' statistics could not be read (a
    /// [`SummaryProvider`](crate::stats::SummaryProvider) failed).
    #[error("reading stats: {0}")]
    Stats(Arc<dyn std::error::Error + Send + Sync>),
}

impl Error {
    /// A stats error from `source` (an error, or a message).
    pub fn stats(source: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Error::Stats(Arc::from(source.into()))
    }

    /// A runtime error about `pod`.
    pub fn runtime(
        pod: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Error::Runtime {
            pod: pod.into(),
            source: Arc::new(source),
        }
    }
}

/// This crate's result.
pub type Result<T, E = Error> = std::result::Result<T, E>;
