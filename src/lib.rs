//! A Kubernetes node agent as composable crates, and a working `kubelet`
//! made from them.
//!
//! This facade re-exports each component crate behind a feature of the same
//! name (all on by default); depend on a component crate directly to take one
//! piece alone (`cargo add kubelet-podworkers`).
//!
//! | module | crate | mirrors upstream |
//! |---|---|---|
//! | [`container`] | `kubelet-container` (always on: the shared vocabulary) | `pkg/kubelet/container` |
//! | [`cri`] | `kubelet-cri-client` | `staging/src/k8s.io/cri-client` |
//! | [`podconfig`] | `kubelet-podconfig` | `pkg/kubelet/config` |
//! | [`podworkers`] | `kubelet-podworkers` | `pkg/kubelet/pod_workers.go` |
//! | [`pleg`] | `kubelet-pleg` | `pkg/kubelet/pleg` |
//! | [`cm`] | `kubelet-cm` | `pkg/kubelet/cm` |
//! | [`eviction`] | `kubelet-eviction` | `pkg/kubelet/eviction` |
//! | [`kuberuntime`] | `kubelet-kuberuntime` | `pkg/kubelet/kuberuntime` |
//! | [`prober`] | `kubelet-prober` | `pkg/kubelet/prober`, `pkg/probe` |
//! | [`server`] | `kubelet-server` | `pkg/kubelet/server`, `pkg/kubelet/metrics` |
//! | [`status`] | `kubelet-status` | `pkg/kubelet/status` |
//! | [`volumemanager`] | `kubelet-volumemanager` | `pkg/kubelet/volumemanager`, `pkg/volume` |
//! | [`agent`] | `kubelet-agent` | `pkg/kubelet/kubelet.go` |
//!
//! The example binary `kubelet` (`cargo run --example kubelet`) wires them.

pub use kubelet_container as container;

#[cfg(feature = "cri-client")]
pub use kubelet_cri_client as cri;

#[cfg(feature = "podconfig")]
pub use kubelet_podconfig as podconfig;

#[cfg(feature = "podworkers")]
pub use kubelet_podworkers as podworkers;

#[cfg(feature = "pleg")]
pub use kubelet_pleg as pleg;

#[cfg(feature = "cm")]
pub use kubelet_cm as cm;

#[cfg(feature = "eviction")]
pub use kubelet_eviction as eviction;

#[cfg(feature = "kuberuntime")]
pub use kubelet_kuberuntime as kuberuntime;

#[cfg(feature = "prober")]
pub use kubelet_prober as prober;

#[cfg(feature = "server")]
pub use kubelet_server as server;

#[cfg(feature = "status")]
pub use kubelet_status as status;

#[cfg(feature = "volumemanager")]
pub use kubelet_volumemanager as volumemanager;

#[cfg(feature = "nodestatus")]
pub use kubelet_nodestatus as nodestatus;

#[cfg(feature = "nodelease")]
pub use kubelet_nodelease as nodelease;

#[cfg(feature = "events")]
pub use kubelet_events as events;

#[cfg(feature = "agent")]
pub use kubelet_agent as agent;
