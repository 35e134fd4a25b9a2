//! The container manager: QoS classes and cgroups, node allocatable, CPU and memory managers.
//!
//! Mirrors upstream `pkg/kubelet/cm`.
//!
//! The container manager computes each pod's QoS class, builds the `kubepods`
//! cgroup tree, turns requests and limits into the CRI's
//! `LinuxContainerResources`, and reserves node allocatable.
//!
//! **Status: not built yet.** This crate holds its name in the workspace;
//! the container manager (issue: cm) fills it. Nothing here pretends to work: [`Error::Unimplemented`]
//! is all it can return.
//!
//! ```no_run
//! let err = kubelet_cm::Error::Unimplemented("ContainerManager");
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
