//! Pod lifecycle events and the pod status cache.
//!
//! Mirrors upstream `pkg/kubelet/pleg` and `pkg/kubelet/container/cache.go`.
//!
//! The pod lifecycle event generator (PLEG) notices changes in the container
//! runtime (by relisting, or from CRI container events) and wakes the pod's
//! worker; the pod cache holds the newest runtime status of every pod.
//!
//! **Status: not built yet.** This crate holds its name in the workspace;
//! the pod lifecycle event generator and pod cache (issue: pleg) fills it. Nothing here pretends to work: [`Error::Unimplemented`]
//! is all it can return.
//!
//! ```no_run
//! let err = kubelet_pleg::Error::Unimplemented("PodLifecycleEventGenerator");
//! eprintln!("{err}");
//! ```

/// Errors of this crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The named part is not built yet.
    #[error("{0} is not implemented yet")]
    Unimplemented(&'static str),
}
