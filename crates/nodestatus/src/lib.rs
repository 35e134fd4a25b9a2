//! Node registration and node status of a kubelet (upstream
//! `pkg/kubelet/kubelet_node_status.go` and `pkg/kubelet/nodestatus`).
//!
//! The kubelet implements [`NodeInputs`] over its components; a
//! [`NodeStatusManager`] registers the Node and keeps its status current:
//!
//! ```no_run
//! use std::sync::Arc;
//! use kubelet_nodestatus::{
//!     MachineInfo, NodeConfig, NodeResources, NodeSnapshot, NodeStatusManager, Pressure,
//!     RuntimeHealth, RuntimeVersion, StaticInputs,
//! };
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let client = kube::Client::try_default().await?;
//! // A real kubelet implements `NodeInputs` over cAdvisor, its container
//! // manager, the CRI client, the PLEG and the eviction manager.
//! let inputs = Arc::new(StaticInputs::new(NodeSnapshot {
//!     machine: Ok(MachineInfo { num_cores: 4, memory_capacity_bytes: 8 << 30, ..Default::default() }),
//!     resources: NodeResources::default(),
//!     runtime_version: RuntimeVersion { runtime_name: "containerd".into(), version: Ok("1.7.24".into()) },
//!     runtime_health: RuntimeHealth::ready(),
//!     pleg_health: Ok(()),
//!     pressure: Pressure::default(),
//!     images: Ok(vec![]),
//!     daemon_endpoint_port: 10250,
//!     host_ips: vec![],
//! }));
//! let manager = NodeStatusManager::new(client, NodeConfig::new("node-a"), inputs);
//! let mut sent = manager.subscribe();
//! let (stop, stop_rx) = tokio::sync::watch::channel(false);
//! let task = tokio::spawn(manager.run(stop_rx));
//! sent.wait_for(|node| node.is_some()).await?; // registered
//! stop.send(true)?;
//! task.await?;
//! # Ok(())
//! # }
//! ```
//!
//! The pure part builds and updates the Node without I/O:
//! [`initial_node`] (labels `kubernetes.io/hostname`, `kubernetes.io/os`,
//! `kubernetes.io/arch` and their `beta.` twins, `--node-labels`,
//! `--register-with-taints`, the controller-managed attach/detach
//! annotation), [`set_node_status`] (upstream's setters in upstream's
//! order, with upstream's condition reasons and messages and transition
//! times kept while a status holds), [`reconcile_existing`] (an existing
//! Node on registration), [`node_status_has_changed`] and
//! [`should_patch`] (patch when changed or when the report period has
//! passed), and [`node_status_patch`] (the strategic merge patch of
//! upstream's `PatchNodeStatus`).
//!
//! # Where this differs from upstream
//!
//! - Better: the setters are pure functions of one [`NodeSnapshot`], so
//!   every condition and its wording is unit-tested without a kubelet; the
//!   events upstream records are returned ([`StatusReport`]) and, with
//!   [`NodeStatusManager::with_event_recorder`], recorded on the Node once
//!   the API server has the status that made them (upstream records them
//!   as the setters run, again on each retry of a failed update); images
//!   need not come sorted; a status update that finds the Node gone stops
//!   retrying at once and registers it again (upstream never re-registers,
//!   kubernetes#71398; [`NodeConfig::reregister_on_not_found`] turns this
//!   off); a 403 names the verb and resource the credentials lack.
//! - Different: the Node is read with `resourceVersion=0` on the first try
//!   of each update (upstream did so before it had a node informer; it now
//!   reads its informer's cache).
//! - Not done: cloud providers (addresses, zone and instance-type labels,
//!   the external-cloud-provider taint), DNS lookup of the node name for its
//!   address (the kubelet passes its host addresses instead), device plugin
//!   resources and zeroing extended resources on a recreated node, volume
//!   limits, `volumesInUse`, `runtimeHandlers`, `features`, the container
//!   manager's soft-requirement warning in the Ready message, the fast
//!   status update at start-up (`fastStatusUpdateOnce`), and pod CIDR
//!   updates.

mod compare;
mod config;
mod error;
mod inputs;
mod manager;
mod patch;
mod reconcile;
mod setters;

pub use compare::{
    node_conditions_have_changed, node_status_has_changed, quantities_equal, should_patch,
};
pub use config::{NodeConfig, go_arch, go_os};
pub use error::Error;
pub use inputs::{
    ImageInfo, MachineInfo, NodeInputs, NodeResources, NodeSnapshot, Pressure, RuntimeCondition,
    RuntimeHealth, RuntimeSync, RuntimeVersion, StaticInputs,
};
pub use manager::{
    NODE_STATUS_UPDATE_RETRY, NodeStatusManager, REGISTER_INITIAL_BACKOFF, REGISTER_MAX_BACKOFF,
    UpdateOutcome, system_now,
};
pub use patch::node_status_patch;
pub use reconcile::{DEFAULT_LABELS, reconcile_existing};
pub use setters::{
    ANNOTATION_CONTROLLER_MANAGED_ATTACH_DETACH, LABEL_ARCH, LABEL_HOSTNAME, LABEL_OS,
    LEGACY_LABEL_ARCH, LEGACY_LABEL_OS, MAX_NAMES_PER_IMAGE, NodeEvent, StatusReport,
    TAINT_NODE_UNSCHEDULABLE, condition, ensure_required_labels, initial_node,
    is_extended_resource_name, is_huge_page_resource_name, not_ready_reasons, set_node_status,
};
