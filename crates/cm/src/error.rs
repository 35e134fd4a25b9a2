//! The crate's one error type.

use std::path::PathBuf;

/// Errors of this crate.
///
/// Every variant that comes from the file system names the file it was
/// reading or writing, as youki's `WrappedIoError` does and unlike upstream's
/// bare `os.PathError` wrapping in places.
#[derive(Debug, thiserror::Error)]
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

    /// Reading, writing, creating or removing a file or directory failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done (`"read"`, `"write"`, `"create dir"`, `"remove dir"`).
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// A file's content could not be understood.
    #[error("parse {path}: {reason}")]
    Parse {
        /// The file that was read.
        path: PathBuf,
        /// What was wrong with it.
        reason: String,
    },

    /// The configuration is not valid (for example a reservation above capacity).
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),

    /// A CPU list such as `"0-3,8"` that does not parse.
    #[error("invalid cpu set {value:?}: {reason}")]
    InvalidCpuSet {
        /// The text that was given.
        value: String,
        /// Why it was refused.
        reason: &'static str,
    },

    /// A checkpoint exists but cannot be used; the message says what to do.
    #[error("checkpoint {path}: {reason}")]
    Checkpoint {
        /// The checkpoint file.
        path: PathBuf,
        /// What is wrong and what to do about it.
        reason: String,
    },

    /// A pod cannot be admitted (upstream's admission failure reasons, such as
    /// `TopologyAffinityError` or `UnexpectedAdmissionError`).
    #[error("{reason}: {message}")]
    Admission {
        /// The machine-readable reason, as upstream.
        reason: &'static str,
        /// A human-readable explanation.
        message: String,
    },

    /// The CPU manager could not satisfy a request.
    #[error(
        "not enough cpus available to satisfy request: requested={requested}, available={available}"
    )]
    NotEnoughCpus {
        /// CPUs asked for.
        requested: usize,
        /// CPUs that were free.
        available: usize,
    },

    /// Processes left in a pod cgroup could not be killed (upstream
    /// `tryKillingCgroupProcesses`); the cgroup stays until a retry.
    #[error("cannot kill processes {pids:?} left in pod cgroup {cgroup}: {reason}")]
    KillProcesses {
        /// The pod cgroup.
        cgroup: String,
        /// The processes that did not take the signal.
        pids: Vec<u32>,
        /// The last error.
        reason: String,
    },

    /// The named part is not built yet.
    #[error("{0} is not implemented yet")]
    Unimplemented(&'static str),
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An [`Error::Io`] for `path`.
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }
}

impl From<kubelet_container::Error> for Error {
    fn from(e: kubelet_container::Error) -> Self {
        match e {
            kubelet_container::Error::InvalidQuantity { value, reason } => {
                Error::InvalidQuantity { value, reason }
            }
            other => Error::InvalidConfig(other.to_string()),
        }
    }
}
