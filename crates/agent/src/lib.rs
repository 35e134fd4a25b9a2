//! The sync loop, pod and status managers, and the node API: what turns the components into a kubelet.
//!
//! Mirrors upstream `pkg/kubelet/kubelet.go`.
//!
//! The agent wires pod config, pod workers, the PLEG, the container manager,
//! eviction and the runtime manager into a kubelet: the sync loop, the pod
//! manager, admission, and the status manager.
//!
//! **Status: not built yet.** This crate holds its name in the workspace;
//! the agent (issue: working kubelet) fills it. Nothing here pretends to work: [`Error::Unimplemented`]
//! is all it can return.
//!
//! ```no_run
//! let err = kubelet_agent::Error::Unimplemented("Kubelet");
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
