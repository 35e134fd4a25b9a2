//! Node-pressure eviction, admission, and the backoff that tames crash loops and image pulls.
//!
//! Mirrors upstream `pkg/kubelet/eviction` and `client-go/util/flowcontrol/backoff.go`.
//!
//! When the node runs short of memory, disk or PIDs, the eviction manager
//! chooses which pods to evict and refuses new pods; the keyed backoff slows
//! crash-looping containers and failing image pulls.
//!
//! **Status: not built yet.** This crate holds its name in the workspace;
//! the eviction manager and backoff (issue: eviction) fills it. Nothing here pretends to work: [`Error::Unimplemented`]
//! is all it can return.
//!
//! ```no_run
//! let err = kubelet_eviction::Error::Unimplemented("EvictionManager");
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
