//! Pods translated into CRI calls: SyncPod, KillPod, image pulls and garbage collection.
//!
//! Mirrors upstream `pkg/kubelet/kuberuntime`.
//!
//! The runtime manager computes which sandboxes and containers a pod needs
//! and drives the CRI to get there: SyncPod, KillPod, image pulls and
//! container garbage collection.
//!
//! **Status: not built yet.** This crate holds its name in the workspace;
//! the runtime manager (issue: working kubelet) fills it. Nothing here pretends to work: [`Error::Unimplemented`]
//! is all it can return.
//!
//! ```no_run
//! let err = kubelet_kuberuntime::Error::Unimplemented("Runtime");
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
