//! The one error type of this crate.
//!
//! Upstream's probers return `(result, output, err)`; an `err` means "the
//! probe could not be run" (a bad port, a runtime error), as opposed to a
//! probe that ran and failed. [`Error`] is that `err`: the prober retries it
//! up to three times and the worker then throws the attempt away
//! (`pkg/kubelet/prober/prober.go` `runProbeWithRetries`, `worker.go`
//! `doProbe`), so an error never turns a container unhealthy by itself.

/// Everything that can stop a probe from running, or a manager from starting.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A container ID that is not of the API form `<type>://<id>`.
    #[error("invalid container ID {0:?}: want <type>://<id>")]
    InvalidContainerId(String),

    /// A probe port that is out of range or names no port of the container
    /// (upstream `probe.ResolveContainerPort`).
    #[error("invalid probe port {port:?} for container {container:?}: {reason}")]
    InvalidPort {
        /// The port as written in the probe.
        port: String,
        /// The container probed.
        container: String,
        /// Why it could not be used.
        reason: String,
    },

    /// The probe has none of `exec`, `httpGet`, `tcpSocket`, `grpc`.
    #[error("missing probe handler for container {0:?}")]
    MissingHandler(String),

    /// The pod has no IP yet and the probe needs one.
    #[error("pod has no IP address to probe container {0:?}")]
    NoPodIp(String),

    /// The container runtime failed the `ExecSync` call (not a timeout and
    /// not a non-zero exit code, which are probe failures).
    #[error("exec probe: {0}")]
    Runtime(#[from] kubelet_cri_client::Error),

    /// Reading an HTTP response body failed for another reason than its
    /// size (upstream returns this as an error too).
    #[error("reading the HTTP probe response body: {0}")]
    Body(String),

    /// [`crate::ManagerBuilder::build`] ran outside a tokio runtime and was
    /// given no runtime handle.
    #[error("the probe manager needs a tokio runtime: {0}")]
    NoRuntime(String),
}

impl From<kubelet_container::Error> for Error {
    fn from(e: kubelet_container::Error) -> Self {
        match e {
            kubelet_container::Error::InvalidContainerId(id) => Error::InvalidContainerId(id),
            other => Error::InvalidContainerId(other.to_string()),
        }
    }
}
