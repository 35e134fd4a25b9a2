//! The one error type of this crate.

use std::path::PathBuf;

/// Errors of this crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An eviction threshold string could not be parsed (upstream
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
    #[error("invalid eviction configuration: {0}")]
    InvalidConfig(String),
    /// Reading a statistic from the node failed.
    #[error("reading {path}: {source}")]
    Io {
        /// The file read.
        path: PathBuf,
        /// The failure.
        #[source]
        source: std::io::Error,
    },
    /// A statistic file held something unexpected.
    #[error("parsing {path}: {reason}")]
    Parse {
        /// The file read.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// The facility is not available on this host (for example kernel
    /// memory notifications on cgroup v2).
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// The summary provider could not produce stats.
    #[error("summary unavailable: {0}")]
    Summary(String),
}

/// This crate's result.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<kubelet_container::Error> for Error {
    fn from(e: kubelet_container::Error) -> Self {
        match e {
            kubelet_container::Error::InvalidThreshold { input, reason } => {
                Error::InvalidThreshold { input, reason }
            }
            other => Error::InvalidConfig(other.to_string()),
        }
    }
}
