//! The Node object built and kept current without I/O: upstream
//! `initialNode` (`pkg/kubelet/kubelet_node_status.go`) and the status
//! setters of `pkg/kubelet/nodestatus/setters.go`, applied in upstream's
//! order (`defaultNodeStatusFuncs`): NodeAddress, MachineInfo, VersionInfo,
//! DaemonEndpoints, Images, GoRuntime, MemoryPressureCondition,
//! DiskPressureCondition, PIDPressureCondition, ReadyCondition.
//!
//! Where upstream records an event (`NodeReady`, `NodeHasSufficientMemory`,
//! `Rebooted`, ...), the setters return it in the [`StatusReport`] instead,
//! so the caller decides whether to post it.

use std::collections::BTreeMap;
use std::net::IpAddr;

use k8s_openapi::api::core::v1::{
    ContainerImage, DaemonEndpoint, Node, NodeAddress, NodeCondition, NodeDaemonEndpoints,
    NodeSpec, NodeStatus, NodeSystemInfo, Taint,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

use crate::compare::quantities_equal;
use crate::config::NodeConfig;
use crate::inputs::{ImageInfo, NodeSnapshot, RuntimeSync};

/// `kubernetes.io/hostname` (upstream `v1.LabelHostname`).
pub const LABEL_HOSTNAME: &str = "kubernetes.io/hostname";
/// `kubernetes.io/os` (upstream `v1.LabelOSStable`).
pub const LABEL_OS: &str = "kubernetes.io/os";
/// `kubernetes.io/arch` (upstream `v1.LabelArchStable`).
pub const LABEL_ARCH: &str = "kubernetes.io/arch";
/// `beta.kubernetes.io/os` (upstream `kubeletapis.LabelOS`), still set.
pub const LEGACY_LABEL_OS: &str = "beta.kubernetes.io/os";
/// `beta.kubernetes.io/arch` (upstream `kubeletapis.LabelArch`), still set.
pub const LEGACY_LABEL_ARCH: &str = "beta.kubernetes.io/arch";
/// The annotation that hands attach/detach of the node's volumes to the
/// attach/detach controller (upstream
/// `volutil.ControllerManagedAttachAnnotation`).
pub const ANNOTATION_CONTROLLER_MANAGED_ATTACH_DETACH: &str =
    "volumes.kubernetes.io/controller-managed-attach-detach";
/// The taint of a node registered unschedulable (upstream
/// `v1.TaintNodeUnschedulable`).
pub const TAINT_NODE_UNSCHEDULABLE: &str = "node.kubernetes.io/unschedulable";
/// At most this many names per image in `status.images` (upstream
/// `MaxNamesPerImageInNodeStatus`).
pub const MAX_NAMES_PER_IMAGE: usize = 5;

/// Node condition types set by the kubelet (upstream `v1.NodeConditionType`).
pub mod condition {
    /// `Ready`.
    pub const READY: &str = "Ready";
    /// `MemoryPressure`.
    pub const MEMORY_PRESSURE: &str = "MemoryPressure";
    /// `DiskPressure`.
    pub const DISK_PRESSURE: &str = "DiskPressure";
    /// `PIDPressure`.
    pub const PID_PRESSURE: &str = "PIDPressure";
}

/// An event upstream's setters would record for the Node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeEvent {
    /// `Normal` or `Warning`.
    pub event_type: &'static str,
    /// The event's reason (`NodeReady`, `NodeHasDiskPressure`, `Rebooted`).
    pub reason: String,
    /// The event's message, worded as upstream.
    pub message: String,
}

/// What one pass of the setters found: the errors upstream's setters return
/// (logged, the other setters still run) and the events they would record.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatusReport {
    /// One line per failed setter (the node keeps that setter's old fields).
    pub errors: Vec<String>,
    /// Events, in the order upstream records them.
    pub events: Vec<NodeEvent>,
}

/// The Node this kubelet registers (upstream `initialNode`): default labels
/// `kubernetes.io/hostname`, `kubernetes.io/os`, `kubernetes.io/arch` and
/// their `beta.` twins, then `--node-labels` over them; `--register-with-taints`
/// plus the unschedulable taint when registered unschedulable; the
/// controller-managed attach/detach annotation; `spec.providerID`; and the
/// status of [`set_node_status`] at `now`.
///
/// Upstream's kubelet does not set `node.alpha.kubernetes.io/ttl`: the TTL
/// controller of kube-controller-manager does.
pub fn initial_node(
    config: &NodeConfig,
    snapshot: &NodeSnapshot,
    now: Time,
) -> (Node, StatusReport) {
    let mut labels = BTreeMap::from([
        (LABEL_HOSTNAME.to_owned(), config.hostname.clone()),
        (LABEL_OS.to_owned(), config.os.clone()),
        (LABEL_ARCH.to_owned(), config.arch.clone()),
        (LEGACY_LABEL_OS.to_owned(), config.os.clone()),
        (LEGACY_LABEL_ARCH.to_owned(), config.arch.clone()),
    ]);
    for (k, v) in &config.node_labels {
        if let Some(old) = labels.get(k) {
            tracing::info!(label = %k, value = %v, default = %old, "the node label will overwrite the default setting");
        }
        labels.insert(k.clone(), v.clone());
    }

    let unschedulable = !config.register_schedulable;
    let mut taints = config.register_with_taints.clone();
    if unschedulable
        && !taints
            .iter()
            .any(|t| t.key == TAINT_NODE_UNSCHEDULABLE && t.effect == "NoSchedule")
    {
        taints.push(Taint {
            key: TAINT_NODE_UNSCHEDULABLE.to_owned(),
            effect: "NoSchedule".to_owned(),
            ..Default::default()
        });
    }

    let annotations = config.enable_controller_attach_detach.then(|| {
        BTreeMap::from([(
            ANNOTATION_CONTROLLER_MANAGED_ATTACH_DETACH.to_owned(),
            "true".to_owned(),
        )])
    });

    let mut node = Node {
        metadata: ObjectMeta {
            name: Some(config.node_name.clone()),
            labels: Some(labels),
            annotations,
            ..Default::default()
        },
        spec: Some(NodeSpec {
            unschedulable: unschedulable.then_some(true),
            taints: (!taints.is_empty()).then_some(taints),
            provider_id: config.provider_id.clone(),
            ..Default::default()
        }),
        status: Some(NodeStatus::default()),
    };
    let report = set_node_status(&mut node, config, snapshot, now);
    (node, report)
}

/// Sets `kubernetes.io/os` and `kubernetes.io/arch` when missing or wrong,
/// as upstream's `updateNode` does before every status update; returns
/// whether a label changed.
pub fn ensure_required_labels(node: &mut Node, config: &NodeConfig) -> bool {
    let labels = node.metadata.labels.get_or_insert_with(BTreeMap::new);
    let mut changed = false;
    for (key, value) in [(LABEL_OS, &config.os), (LABEL_ARCH, &config.arch)] {
        if labels.get(key) != Some(value) {
            labels.insert(key.to_owned(), value.clone());
            changed = true;
        }
    }
    changed
}

/// Fills the Node's status from `snapshot` at `now` with upstream's setters,
/// in upstream's order. A setter that fails leaves its fields as they were
/// and adds a line to the report's errors; the others still run.
///
/// Condition transition times are kept while a condition's status does not
/// change; heartbeat times are `now`.
pub fn set_node_status(
    node: &mut Node,
    config: &NodeConfig,
    snapshot: &NodeSnapshot,
    now: Time,
) -> StatusReport {
    let mut report = StatusReport::default();
    let name = node
        .metadata
        .name
        .clone()
        .unwrap_or_else(|| config.node_name.clone());
    let status = node.status.get_or_insert_with(NodeStatus::default);

    if let Err(e) = set_addresses(status, config, snapshot, &name) {
        report.errors.push(e);
    }
    set_machine_info(status, snapshot, &name, &mut report);
    if let Err(e) = set_version_info(status, config, snapshot) {
        report.errors.push(e);
    }
    status.daemon_endpoints = Some(NodeDaemonEndpoints {
        kubelet_endpoint: Some(DaemonEndpoint {
            port: snapshot.daemon_endpoint_port,
        }),
    });
    if let Err(e) = set_images(status, config.node_status_max_images, &snapshot.images) {
        report.errors.push(e);
    }
    let info = status.node_info.get_or_insert_with(NodeSystemInfo::default);
    info.operating_system = config.os.clone();
    info.architecture = config.arch.clone();

    let pressure = snapshot.pressure;
    set_pressure(status, &name, &now, &MEMORY, pressure.memory, &mut report);
    set_pressure(status, &name, &now, &DISK, pressure.disk, &mut report);
    set_pressure(status, &name, &now, &PID, pressure.pid, &mut report);
    set_ready(status, config, snapshot, &name, &now, &mut report);
    report
}

/// Upstream's `validateNodeIP`, without the interface lookup when
/// `host_ips` is empty.
fn validate_node_ip(ip: IpAddr, host_ips: &[IpAddr]) -> Result<(), String> {
    if ip.is_loopback() {
        return Err("nodeIP can't be loopback address".into());
    }
    if ip.is_multicast() {
        return Err("nodeIP can't be a multicast address".into());
    }
    let link_local = match ip {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => v6.is_unicast_link_local(),
    };
    if link_local {
        return Err("nodeIP can't be a link-local unicast address".into());
    }
    if ip.is_unspecified() {
        return Err("nodeIP can't be an all zeros address".into());
    }
    if !host_ips.is_empty() && !host_ips.contains(&ip) {
        return Err(format!(
            "node IP: {:?} not found in the host's network interfaces",
            ip.to_string()
        ));
    }
    Ok(())
}

/// Upstream `NodeAddress` without a cloud provider: the primary node IP (or
/// the hostname when it is an IP, or a detected host address), the
/// secondary node IP, and the hostname.
fn set_addresses(
    status: &mut NodeStatus,
    config: &NodeConfig,
    snapshot: &NodeSnapshot,
    node_name: &str,
) -> Result<(), String> {
    let primary = config.node_ips.first().copied();
    let primary_specified = primary.filter(|ip| !ip.is_unspecified());
    let secondary = config.node_ips.get(1).copied();
    if let Some(ip) = primary_specified {
        validate_node_ip(ip, &snapshot.host_ips)
            .map_err(|e| format!("failed to validate nodeIP: {e}"))?;
    }
    if let Some(ip) = secondary {
        validate_node_ip(ip, &snapshot.host_ips)
            .map_err(|e| format!("failed to validate secondaryNodeIP: {e}"))?;
    }

    let address = if let Some(ip) = primary_specified {
        Some(ip)
    } else if let Ok(ip) = config.hostname.parse::<IpAddr>() {
        Some(ip)
    } else {
        // Detection prefers IPv4 unless `--node-ip ::` asked for IPv6.
        let prefer_v6 = matches!(primary, Some(IpAddr::V6(_)));
        let usable: Vec<IpAddr> = snapshot
            .host_ips
            .iter()
            .copied()
            .filter(|ip| validate_node_ip(*ip, &[]).is_ok())
            .collect();
        usable
            .iter()
            .find(|ip| ip.is_ipv6() == prefer_v6)
            .or_else(|| usable.first())
            .copied()
    };
    let Some(address) = address else {
        return Err(format!(
            "can't get ip address of node {node_name}. error: no usable address among the host's {:?}",
            snapshot.host_ips
        ));
    };

    let mut addresses = vec![NodeAddress {
        type_: "InternalIP".into(),
        address: address.to_string(),
    }];
    if let Some(ip) = secondary {
        addresses.push(NodeAddress {
            type_: "InternalIP".into(),
            address: ip.to_string(),
        });
    }
    addresses.push(NodeAddress {
        type_: "Hostname".into(),
        address: config.hostname.clone(),
    });
    status.addresses = Some(addresses);
    Ok(())
}

/// Sets `map[key] = value`, keeping the existing text when it is the same
/// quantity (`1Gi` and `1073741824`), so that a server-normalized quantity
/// is not seen as a change.
fn set_quantity(map: &mut BTreeMap<String, Quantity>, key: &str, value: &Quantity) {
    match map.get(key) {
        Some(old) if quantities_equal(old, value) => {}
        _ => {
            map.insert(key.to_owned(), value.clone());
        }
    }
}

/// Upstream `v1helper.IsExtendedResourceName`: a qualified name outside
/// the `kubernetes.io/` domain, not a `requests.` quota name.
pub fn is_extended_resource_name(name: &str) -> bool {
    name.contains('/') && !name.contains("kubernetes.io/") && !name.starts_with("requests.")
}

/// Upstream `v1helper.IsHugePageResourceName`.
pub fn is_huge_page_resource_name(name: &str) -> bool {
    name.starts_with("hugepages-")
}

/// Upstream `MachineInfo`: nodeInfo's machine ID, system UUID and boot ID
/// (a changed boot ID is a `Rebooted` warning), capacity from the machine
/// with the resource map over it, allocatable from the resource map.
fn set_machine_info(
    status: &mut NodeStatus,
    snapshot: &NodeSnapshot,
    node_name: &str,
    report: &mut StatusReport,
) {
    let resources = &snapshot.resources;
    let capacity = status.capacity.get_or_insert_with(BTreeMap::new);
    match &snapshot.machine {
        Err(e) => {
            // Upstream's fallback: zero CPU and memory, pods as configured.
            set_quantity(capacity, "cpu", &Quantity("0".into()));
            set_quantity(capacity, "memory", &Quantity("0Gi".into()));
            if let Some(pods) = resources.capacity.get("pods") {
                set_quantity(capacity, "pods", pods);
            }
            report
                .errors
                .push(format!("error getting machine info: {e}"));
        }
        Ok(machine) => {
            let info = status.node_info.get_or_insert_with(NodeSystemInfo::default);
            info.machine_id = machine.machine_id.clone();
            info.system_uuid = machine.system_uuid.clone();
            if !info.boot_id.is_empty() && info.boot_id != machine.boot_id {
                report.events.push(NodeEvent {
                    event_type: "Warning",
                    reason: "Rebooted".into(),
                    message: format!(
                        "Node {node_name} has been rebooted, boot id: {}",
                        machine.boot_id
                    ),
                });
            }
            info.boot_id = machine.boot_id.clone();
            set_quantity(capacity, "cpu", &Quantity(machine.num_cores.to_string()));
            set_quantity(
                capacity,
                "memory",
                &Quantity(machine.memory_capacity_bytes.to_string()),
            );
            for (k, v) in &resources.capacity {
                set_quantity(capacity, k, v);
            }
        }
    }

    let capacity = capacity.clone();
    let allocatable = status.allocatable.get_or_insert_with(BTreeMap::new);
    // Extended resources gone from capacity leave allocatable too.
    allocatable.retain(|k, _| capacity.contains_key(k) || !is_extended_resource_name(k));
    for (k, cap) in &capacity {
        let value = resources.allocatable.get(k).unwrap_or(cap);
        set_quantity(allocatable, k, value);
    }
}

/// Upstream `VersionInfo`: kernel, OS image, runtime and kubelet versions.
/// Like upstream, nothing is set when the machine's versions are unknown.
fn set_version_info(
    status: &mut NodeStatus,
    config: &NodeConfig,
    snapshot: &NodeSnapshot,
) -> Result<(), String> {
    let machine = snapshot
        .machine
        .as_ref()
        .map_err(|e| format!("error getting version info: {e}"))?;
    let info = status.node_info.get_or_insert_with(NodeSystemInfo::default);
    info.kernel_version = machine.kernel_version.clone();
    info.os_image = machine.os_image.clone();
    info.container_runtime_version = snapshot.runtime_version.to_string();
    info.kubelet_version = config.kubelet_version.clone();
    Ok(())
}

/// Upstream `Images`: the largest images first, at most `max_images`
/// (-1: all), each with at most [`MAX_NAMES_PER_IMAGE`] names, digests
/// before tags. Unlike upstream, the list need not come sorted.
fn set_images(
    status: &mut NodeStatus,
    max_images: i32,
    images: &Result<Vec<ImageInfo>, String>,
) -> Result<(), String> {
    let images = match images {
        Ok(images) => images,
        Err(e) => {
            status.images = None;
            return Err(format!("error getting image list: {e}"));
        }
    };
    let mut sorted: Vec<&ImageInfo> = images.iter().collect();
    sorted.sort_by_key(|image| std::cmp::Reverse(image.size_bytes));
    if let Ok(max) = usize::try_from(max_images) {
        sorted.truncate(max);
    }
    let list: Vec<ContainerImage> = sorted
        .into_iter()
        .map(|image| ContainerImage {
            names: Some(
                image
                    .repo_digests
                    .iter()
                    .chain(&image.repo_tags)
                    .take(MAX_NAMES_PER_IMAGE)
                    .cloned()
                    .collect(),
            ),
            size_bytes: Some(image.size_bytes),
        })
        .collect();
    status.images = (!list.is_empty()).then_some(list);
    Ok(())
}

/// The wording of one pressure condition (upstream
/// `MemoryPressureCondition`, `DiskPressureCondition`,
/// `PIDPressureCondition`).
struct PressureWords {
    condition_type: &'static str,
    true_reason: &'static str,
    true_message: &'static str,
    true_event: &'static str,
    false_reason: &'static str,
    false_message: &'static str,
    false_event: &'static str,
}

const MEMORY: PressureWords = PressureWords {
    condition_type: condition::MEMORY_PRESSURE,
    true_reason: "KubeletHasInsufficientMemory",
    true_message: "kubelet has insufficient memory available",
    true_event: "NodeHasInsufficientMemory",
    false_reason: "KubeletHasSufficientMemory",
    false_message: "kubelet has sufficient memory available",
    false_event: "NodeHasSufficientMemory",
};

const DISK: PressureWords = PressureWords {
    condition_type: condition::DISK_PRESSURE,
    true_reason: "KubeletHasDiskPressure",
    true_message: "kubelet has disk pressure",
    true_event: "NodeHasDiskPressure",
    false_reason: "KubeletHasNoDiskPressure",
    false_message: "kubelet has no disk pressure",
    false_event: "NodeHasNoDiskPressure",
};

const PID: PressureWords = PressureWords {
    condition_type: condition::PID_PRESSURE,
    true_reason: "KubeletHasInsufficientPID",
    true_message: "kubelet has insufficient PID available",
    true_event: "NodeHasInsufficientPID",
    false_reason: "KubeletHasSufficientPID",
    false_message: "kubelet has sufficient PID available",
    false_event: "NodeHasSufficientPID",
};

/// Upstream's `recordNodeStatusEvent`: "Node <name> status is now: <event>".
fn status_event(node_name: &str, reason: &str) -> NodeEvent {
    NodeEvent {
        event_type: "Normal",
        reason: reason.to_owned(),
        message: format!("Node {node_name} status is now: {reason}"),
    }
}

/// One pressure condition: created Unknown when missing, its heartbeat set
/// to `now`, and its status, reason, message and transition time changed
/// only when the pressure flips.
fn set_pressure(
    status: &mut NodeStatus,
    node_name: &str,
    now: &Time,
    words: &PressureWords,
    under_pressure: bool,
    report: &mut StatusReport,
) {
    let conditions = status.conditions.get_or_insert_with(Vec::new);
    let index = match conditions
        .iter()
        .position(|c| c.type_ == words.condition_type)
    {
        Some(i) => i,
        None => {
            conditions.push(NodeCondition {
                type_: words.condition_type.to_owned(),
                status: "Unknown".to_owned(),
                ..Default::default()
            });
            conditions.len() - 1
        }
    };
    let Some(c) = conditions.get_mut(index) else {
        return;
    };
    c.last_heartbeat_time = Some(now.clone());
    let (want, reason, message, event) = if under_pressure {
        (
            "True",
            words.true_reason,
            words.true_message,
            words.true_event,
        )
    } else {
        (
            "False",
            words.false_reason,
            words.false_message,
            words.false_event,
        )
    };
    if c.status != want {
        c.status = want.to_owned();
        c.reason = Some(reason.to_owned());
        c.message = Some(message.to_owned());
        c.last_transition_time = Some(now.clone());
        report.events.push(status_event(node_name, event));
    }
}

/// Upstream `utilerrors.NewAggregate(errs).Error()`: duplicates dropped, a
/// single message as is, several as `[a, b]`.
fn aggregate(errors: &[String]) -> Option<String> {
    let mut seen: Vec<&str> = Vec::new();
    for e in errors {
        if !seen.contains(&e.as_str()) {
            seen.push(e);
        }
    }
    match seen.as_slice() {
        [] => None,
        [one] => Some((*one).to_owned()),
        many => Some(format!("[{}]", many.join(", "))),
    }
}

/// The reasons the node is not ready, in upstream's order: runtime errors
/// (last sync, health checks such as the PLEG, the runtime's condition),
/// network errors, storage errors, missing capacities.
pub fn not_ready_reasons(
    config: &NodeConfig,
    snapshot: &NodeSnapshot,
    status: &NodeStatus,
) -> Vec<String> {
    let health = &snapshot.runtime_health;
    let mut errors = Vec::new();
    match health.sync {
        RuntimeSync::NotYetChecked => {
            errors.push("container runtime status check may not have completed yet".to_owned())
        }
        RuntimeSync::Down => errors.push("container runtime is down".to_owned()),
        RuntimeSync::Up => {}
    }
    if let Err(e) = &snapshot.pleg_health {
        errors.push(format!("PLEG is not healthy: {e}"));
    }
    errors.extend(health.runtime_error.iter().cloned());
    errors.extend(health.network_error.iter().cloned());
    errors.extend(health.storage_error.iter().cloned());
    let mut required = vec!["cpu", "memory", "pods"];
    if config.local_storage_capacity_isolation {
        required.push("ephemeral-storage");
    }
    let missing: Vec<&str> = required
        .into_iter()
        .filter(|r| !status.capacity.as_ref().is_some_and(|c| c.contains_key(*r)))
        .collect();
    if !missing.is_empty() {
        errors.push(format!(
            "missing node capacity for resources: {}",
            missing.join(", ")
        ));
    }
    errors
}

/// Upstream `ReadyCondition`: True "KubeletReady" / "kubelet is posting
/// ready status", or False "KubeletNotReady" with the aggregated reasons;
/// the transition time is kept while the status holds.
fn set_ready(
    status: &mut NodeStatus,
    config: &NodeConfig,
    snapshot: &NodeSnapshot,
    node_name: &str,
    now: &Time,
    report: &mut StatusReport,
) {
    let reasons = not_ready_reasons(config, snapshot, status);
    let (state, reason, message) = match aggregate(&reasons) {
        None => (
            "True",
            "KubeletReady",
            "kubelet is posting ready status".to_owned(),
        ),
        Some(message) => ("False", "KubeletNotReady", message),
    };
    let mut ready = NodeCondition {
        type_: condition::READY.to_owned(),
        status: state.to_owned(),
        reason: Some(reason.to_owned()),
        message: Some(message),
        last_heartbeat_time: Some(now.clone()),
        last_transition_time: Some(now.clone()),
    };
    let conditions = status.conditions.get_or_insert_with(Vec::new);
    match conditions.iter_mut().find(|c| c.type_ == condition::READY) {
        Some(existing) => {
            if existing.status == ready.status {
                ready.last_transition_time = existing.last_transition_time.clone();
            } else {
                let event = if state == "True" {
                    "NodeReady"
                } else {
                    "NodeNotReady"
                };
                report.events.push(status_event(node_name, event));
            }
            *existing = ready;
        }
        None => conditions.push(ready),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::inputs::{MachineInfo, NodeResources, Pressure, RuntimeHealth, RuntimeVersion};
    use k8s_openapi::jiff::Timestamp;

    fn at(secs: i64) -> Time {
        Time(Timestamp::from_second(1_700_000_000 + secs).unwrap())
    }

    fn q(s: &str) -> Quantity {
        Quantity(s.to_owned())
    }

    fn snapshot() -> NodeSnapshot {
        NodeSnapshot {
            machine: Ok(MachineInfo {
                num_cores: 4,
                memory_capacity_bytes: 8 * 1024 * 1024 * 1024,
                machine_id: "mid".into(),
                system_uuid: "uuid".into(),
                boot_id: "boot-1".into(),
                kernel_version: "6.1.0-18-amd64".into(),
                os_image: "Debian GNU/Linux 12 (bookworm)".into(),
            }),
            resources: NodeResources {
                capacity: BTreeMap::from([
                    ("pods".into(), q("110")),
                    ("ephemeral-storage".into(), q("100Gi")),
                ]),
                allocatable: BTreeMap::from([
                    ("cpu".into(), q("3800m")),
                    ("memory".into(), q("7Gi")),
                ]),
            },
            runtime_version: RuntimeVersion {
                runtime_name: "containerd".into(),
                version: Ok("1.7.24".into()),
            },
            runtime_health: RuntimeHealth::ready(),
            pleg_health: Ok(()),
            pressure: Pressure::default(),
            images: Ok(vec![
                ImageInfo {
                    repo_digests: vec!["busybox@sha256:1".into()],
                    repo_tags: vec!["busybox:1".into()],
                    size_bytes: 10,
                },
                ImageInfo {
                    repo_digests: vec![],
                    repo_tags: (0..7).map(|i| format!("big:{i}")).collect(),
                    size_bytes: 100,
                },
            ]),
            daemon_endpoint_port: 10250,
            host_ips: vec!["10.0.0.5".parse().unwrap(), "fd00::5".parse().unwrap()],
        }
    }

    fn config() -> NodeConfig {
        let mut c = NodeConfig::new("node-a");
        c.os = "linux".into();
        c.arch = "amd64".into();
        c
    }

    fn cond<'a>(node: &'a Node, t: &str) -> &'a NodeCondition {
        node.status
            .as_ref()
            .unwrap()
            .conditions
            .as_ref()
            .unwrap()
            .iter()
            .find(|c| c.type_ == t)
            .unwrap()
    }

    #[test]
    fn initial_node_labels_annotations_taints() {
        let mut c = config();
        c.node_labels = BTreeMap::from([
            ("role".to_owned(), "edge".to_owned()),
            (LABEL_HOSTNAME.to_owned(), "override".to_owned()),
        ]);
        c.register_with_taints = vec![Taint {
            key: "dedicated".into(),
            value: Some("x".into()),
            effect: "NoExecute".into(),
            ..Default::default()
        }];
        c.register_schedulable = false;
        let (node, report) = initial_node(&c, &snapshot(), at(0));
        assert!(report.errors.is_empty(), "{report:?}");
        let labels = node.metadata.labels.as_ref().unwrap();
        assert_eq!(labels[LABEL_HOSTNAME], "override");
        assert_eq!(labels[LABEL_OS], "linux");
        assert_eq!(labels[LABEL_ARCH], "amd64");
        assert_eq!(labels[LEGACY_LABEL_OS], "linux");
        assert_eq!(labels[LEGACY_LABEL_ARCH], "amd64");
        assert_eq!(labels["role"], "edge");
        assert_eq!(labels.len(), 6);
        let annotations = node.metadata.annotations.as_ref().unwrap();
        assert_eq!(
            annotations[ANNOTATION_CONTROLLER_MANAGED_ATTACH_DETACH],
            "true"
        );
        assert!(!annotations.contains_key("node.alpha.kubernetes.io/ttl"));
        let spec = node.spec.as_ref().unwrap();
        assert_eq!(spec.unschedulable, Some(true));
        let taints: Vec<(&str, &str)> = spec
            .taints
            .as_ref()
            .unwrap()
            .iter()
            .map(|t| (t.key.as_str(), t.effect.as_str()))
            .collect();
        assert_eq!(
            taints,
            [
                ("dedicated", "NoExecute"),
                (TAINT_NODE_UNSCHEDULABLE, "NoSchedule")
            ]
        );
    }

    #[test]
    fn schedulable_node_has_no_taints_and_no_cmad_when_disabled() {
        let mut c = config();
        c.enable_controller_attach_detach = false;
        let (node, _) = initial_node(&c, &snapshot(), at(0));
        assert_eq!(node.metadata.annotations, None);
        let spec = node.spec.unwrap();
        assert_eq!(spec.taints, None);
        assert_eq!(spec.unschedulable, None);
    }

    #[test]
    fn status_of_a_healthy_node() {
        let (node, report) = initial_node(&config(), &snapshot(), at(0));
        let status = node.status.as_ref().unwrap();
        let types: Vec<&str> = status
            .conditions
            .as_ref()
            .unwrap()
            .iter()
            .map(|c| c.type_.as_str())
            .collect();
        // Ready last, as upstream insists.
        assert_eq!(
            types,
            ["MemoryPressure", "DiskPressure", "PIDPressure", "Ready"]
        );
        let ready = cond(&node, condition::READY);
        assert_eq!(ready.status, "True");
        assert_eq!(ready.reason.as_deref(), Some("KubeletReady"));
        assert_eq!(
            ready.message.as_deref(),
            Some("kubelet is posting ready status")
        );
        let mem = cond(&node, condition::MEMORY_PRESSURE);
        assert_eq!(
            (
                mem.status.as_str(),
                mem.reason.as_deref(),
                mem.message.as_deref()
            ),
            (
                "False",
                Some("KubeletHasSufficientMemory"),
                Some("kubelet has sufficient memory available")
            )
        );
        let disk = cond(&node, condition::DISK_PRESSURE);
        assert_eq!(disk.reason.as_deref(), Some("KubeletHasNoDiskPressure"));
        assert_eq!(
            disk.message.as_deref(),
            Some("kubelet has no disk pressure")
        );
        let pid = cond(&node, condition::PID_PRESSURE);
        assert_eq!(pid.reason.as_deref(), Some("KubeletHasSufficientPID"));
        assert_eq!(
            pid.message.as_deref(),
            Some("kubelet has sufficient PID available")
        );

        let cap = status.capacity.as_ref().unwrap();
        assert_eq!(cap["cpu"], q("4"));
        assert_eq!(cap["memory"], q("8589934592"));
        assert_eq!(cap["pods"], q("110"));
        assert_eq!(cap["ephemeral-storage"], q("100Gi"));
        let alloc = status.allocatable.as_ref().unwrap();
        assert_eq!(alloc["cpu"], q("3800m"));
        assert_eq!(alloc["memory"], q("7Gi"));
        assert_eq!(alloc["pods"], q("110"));

        let info = status.node_info.as_ref().unwrap();
        assert_eq!(info.container_runtime_version, "containerd://1.7.24");
        assert_eq!(info.kernel_version, "6.1.0-18-amd64");
        assert_eq!(info.os_image, "Debian GNU/Linux 12 (bookworm)");
        assert_eq!(info.boot_id, "boot-1");
        assert_eq!(info.machine_id, "mid");
        assert_eq!(info.system_uuid, "uuid");
        assert_eq!(info.operating_system, "linux");
        assert_eq!(info.architecture, "amd64");
        assert_eq!(info.kubelet_version, config().kubelet_version);

        let port = status
            .daemon_endpoints
            .as_ref()
            .and_then(|d| d.kubelet_endpoint.as_ref())
            .map(|e| e.port);
        assert_eq!(port, Some(10250));

        let addresses: Vec<(&str, &str)> = status
            .addresses
            .as_ref()
            .unwrap()
            .iter()
            .map(|a| (a.type_.as_str(), a.address.as_str()))
            .collect();
        assert_eq!(
            addresses,
            [("InternalIP", "10.0.0.5"), ("Hostname", "node-a")]
        );

        // Largest image first; at most five names, digests first.
        let images = status.images.as_ref().unwrap();
        assert_eq!(images[0].size_bytes, Some(100));
        assert_eq!(images[0].names.as_ref().unwrap().len(), MAX_NAMES_PER_IMAGE);
        assert_eq!(
            images[1].names.as_deref().unwrap(),
            ["busybox@sha256:1", "busybox:1"]
        );

        // New pressure conditions go Unknown -> False: upstream records it.
        let reasons: Vec<&str> = report.events.iter().map(|e| e.reason.as_str()).collect();
        assert_eq!(
            reasons,
            [
                "NodeHasSufficientMemory",
                "NodeHasNoDiskPressure",
                "NodeHasSufficientPID"
            ]
        );
        assert_eq!(
            report.events[0].message,
            "Node node-a status is now: NodeHasSufficientMemory"
        );
    }

    #[test]
    fn max_images_truncates_and_minus_one_keeps_all() {
        let mut c = config();
        c.node_status_max_images = 1;
        let (node, _) = initial_node(&c, &snapshot(), at(0));
        let images = node.status.unwrap().images.unwrap();
        assert_eq!(images.len(), 1);
        assert_eq!(images[0].size_bytes, Some(100));
        c.node_status_max_images = -1;
        let (node, _) = initial_node(&c, &snapshot(), at(0));
        assert_eq!(node.status.unwrap().images.unwrap().len(), 2);
    }

    #[test]
    fn not_ready_messages_are_upstreams() {
        let mut s = snapshot();
        s.runtime_health.sync = RuntimeSync::Down;
        let (node, _) = initial_node(&config(), &s, at(0));
        let ready = cond(&node, condition::READY);
        assert_eq!(ready.status, "False");
        assert_eq!(ready.reason.as_deref(), Some("KubeletNotReady"));
        assert_eq!(ready.message.as_deref(), Some("container runtime is down"));

        s.pleg_health = Err("pleg was last seen active 3m0s ago; threshold is 3m0s".into());
        s.runtime_health.network_error = Some("container runtime network not ready: NetworkReady=false reason:NetworkPluginNotReady message:cni plugin not initialized".into());
        let (node, _) = initial_node(&config(), &s, at(0));
        assert_eq!(
            cond(&node, condition::READY).message.as_deref(),
            Some(
                "[container runtime is down, PLEG is not healthy: pleg was last seen active 3m0s ago; threshold is 3m0s, container runtime network not ready: NetworkReady=false reason:NetworkPluginNotReady message:cni plugin not initialized]"
            )
        );

        let mut s = snapshot();
        s.runtime_health.sync = RuntimeSync::NotYetChecked;
        s.resources.capacity.remove("ephemeral-storage");
        s.resources.capacity.remove("pods");
        let (node, _) = initial_node(&config(), &s, at(0));
        assert_eq!(
            cond(&node, condition::READY).message.as_deref(),
            Some(
                "[container runtime status check may not have completed yet, missing node capacity for resources: pods, ephemeral-storage]"
            )
        );

        // Without local storage capacity isolation ephemeral-storage is not required.
        let mut c = config();
        c.local_storage_capacity_isolation = false;
        let mut s = snapshot();
        s.resources.capacity.remove("ephemeral-storage");
        let (node, _) = initial_node(&c, &s, at(0));
        assert_eq!(cond(&node, condition::READY).status, "True");
    }

    #[test]
    fn transition_times_are_kept_while_status_holds() {
        let c = config();
        let mut s = snapshot();
        let (mut node, _) = initial_node(&c, &s, at(0));
        assert_eq!(
            cond(&node, condition::READY).last_transition_time,
            Some(at(0))
        );

        // Same status 10 s later: heartbeat moves, transition stays, no event.
        let report = set_node_status(&mut node, &c, &s, at(10));
        assert!(report.events.is_empty(), "{report:?}");
        for t in ["MemoryPressure", "DiskPressure", "PIDPressure", "Ready"] {
            let cnd = cond(&node, t);
            assert_eq!(cnd.last_heartbeat_time, Some(at(10)), "{t}");
            assert_eq!(cnd.last_transition_time, Some(at(0)), "{t}");
        }

        // Memory pressure and a dead runtime at 20 s.
        s.pressure.memory = true;
        s.runtime_health.sync = RuntimeSync::Down;
        let report = set_node_status(&mut node, &c, &s, at(20));
        let mem = cond(&node, condition::MEMORY_PRESSURE);
        assert_eq!(mem.status, "True");
        assert_eq!(mem.reason.as_deref(), Some("KubeletHasInsufficientMemory"));
        assert_eq!(
            mem.message.as_deref(),
            Some("kubelet has insufficient memory available")
        );
        assert_eq!(mem.last_transition_time, Some(at(20)));
        assert_eq!(
            cond(&node, condition::DISK_PRESSURE).last_transition_time,
            Some(at(0))
        );
        let ready = cond(&node, condition::READY);
        assert_eq!(ready.status, "False");
        assert_eq!(ready.last_transition_time, Some(at(20)));
        let reasons: Vec<&str> = report.events.iter().map(|e| e.reason.as_str()).collect();
        assert_eq!(reasons, ["NodeHasInsufficientMemory", "NodeNotReady"]);

        // Still not ready at 30 s but for another reason: the transition stays.
        s.runtime_health.sync = RuntimeSync::Up;
        s.pleg_health = Err("boom".into());
        set_node_status(&mut node, &c, &s, at(30));
        let ready = cond(&node, condition::READY);
        assert_eq!(ready.message.as_deref(), Some("PLEG is not healthy: boom"));
        assert_eq!(ready.last_transition_time, Some(at(20)));

        // Ready again at 40 s.
        s.pleg_health = Ok(());
        let report = set_node_status(&mut node, &c, &s, at(40));
        assert_eq!(
            cond(&node, condition::READY).last_transition_time,
            Some(at(40))
        );
        assert!(report.events.iter().any(|e| e.reason == "NodeReady"));
    }

    #[test]
    fn reboot_is_a_warning_event() {
        let c = config();
        let mut s = snapshot();
        let (mut node, _) = initial_node(&c, &s, at(0));
        if let Ok(m) = &mut s.machine {
            m.boot_id = "boot-2".into();
        }
        let report = set_node_status(&mut node, &c, &s, at(10));
        let ev = report
            .events
            .iter()
            .find(|e| e.reason == "Rebooted")
            .unwrap();
        assert_eq!(ev.event_type, "Warning");
        assert_eq!(ev.message, "Node node-a has been rebooted, boot id: boot-2");
        assert_eq!(node.status.unwrap().node_info.unwrap().boot_id, "boot-2");
    }

    #[test]
    fn machine_info_error_falls_back_as_upstream() {
        let c = config();
        let mut s = snapshot();
        s.machine = Err("cadvisor down".into());
        let (node, report) = initial_node(&c, &s, at(0));
        assert!(
            report
                .errors
                .contains(&"error getting machine info: cadvisor down".to_owned())
        );
        assert!(
            report
                .errors
                .contains(&"error getting version info: cadvisor down".to_owned())
        );
        let status = node.status.unwrap();
        let cap = status.capacity.unwrap();
        assert_eq!(cap["cpu"], q("0"));
        assert_eq!(cap["memory"], q("0Gi"));
        assert_eq!(cap["pods"], q("110"));
        // No ephemeral-storage capacity: not ready.
        let ready = status
            .conditions
            .unwrap()
            .into_iter()
            .find(|c| c.type_ == "Ready")
            .unwrap();
        assert_eq!(
            ready.message.as_deref(),
            Some("missing node capacity for resources: ephemeral-storage")
        );
    }

    #[test]
    fn server_normalized_quantities_are_kept() {
        let c = config();
        let s = snapshot();
        let (mut node, _) = initial_node(&c, &s, at(0));
        // The API server canonicalizes 8589934592 to 8Gi.
        let status = node.status.as_mut().unwrap();
        status
            .capacity
            .as_mut()
            .unwrap()
            .insert("memory".into(), q("8Gi"));
        set_node_status(&mut node, &c, &s, at(10));
        assert_eq!(node.status.unwrap().capacity.unwrap()["memory"], q("8Gi"));
    }

    #[test]
    fn extended_resources_leave_allocatable_with_capacity() {
        let c = config();
        let s = snapshot();
        let (mut node, _) = initial_node(&c, &s, at(0));
        node.status
            .as_mut()
            .unwrap()
            .allocatable
            .as_mut()
            .unwrap()
            .insert("example.com/gpu".into(), q("2"));
        set_node_status(&mut node, &c, &s, at(10));
        assert!(
            !node
                .status
                .unwrap()
                .allocatable
                .unwrap()
                .contains_key("example.com/gpu")
        );
        assert!(is_extended_resource_name("example.com/gpu"));
        assert!(!is_extended_resource_name("kubernetes.io/foo"));
        assert!(!is_extended_resource_name("cpu"));
        assert!(!is_extended_resource_name("requests.example.com/gpu"));
    }

    #[test]
    fn addresses_follow_node_ip_and_validation() {
        let mut c = config();
        c.node_ips = vec!["10.0.0.5".parse().unwrap(), "fd00::5".parse().unwrap()];
        let (node, _) = initial_node(&c, &snapshot(), at(0));
        let addrs: Vec<String> = node
            .status
            .unwrap()
            .addresses
            .unwrap()
            .into_iter()
            .map(|a| format!("{}={}", a.type_, a.address))
            .collect();
        assert_eq!(
            addrs,
            [
                "InternalIP=10.0.0.5",
                "InternalIP=fd00::5",
                "Hostname=node-a"
            ]
        );

        // `--node-ip ::` prefers IPv6 among the host's addresses.
        c.node_ips = vec!["::".parse().unwrap()];
        let (node, _) = initial_node(&c, &snapshot(), at(0));
        assert_eq!(
            node.status.unwrap().addresses.unwrap()[0].address,
            "fd00::5"
        );

        // A node IP that is not the host's is an error, and addresses stay unset.
        c.node_ips = vec!["10.9.9.9".parse().unwrap()];
        let (node, report) = initial_node(&c, &snapshot(), at(0));
        assert_eq!(
            report.errors,
            [
                "failed to validate nodeIP: node IP: \"10.9.9.9\" not found in the host's network interfaces"
            ]
        );
        assert_eq!(node.status.unwrap().addresses, None);

        c.node_ips = vec!["127.0.0.1".parse().unwrap()];
        let (_, report) = initial_node(&c, &snapshot(), at(0));
        assert_eq!(
            report.errors,
            ["failed to validate nodeIP: nodeIP can't be loopback address"]
        );

        // The hostname as an IP, when no node IP is given.
        let mut c = config();
        c.hostname = "192.168.1.7".into();
        let (node, _) = initial_node(&c, &snapshot(), at(0));
        assert_eq!(
            node.status.unwrap().addresses.unwrap()[0].address,
            "192.168.1.7"
        );

        // Nothing to pick from.
        let c = config();
        let mut s = snapshot();
        s.host_ips = vec!["127.0.0.1".parse().unwrap()];
        let (_, report) = initial_node(&c, &s, at(0));
        assert!(
            report.errors[0].starts_with("can't get ip address of node node-a"),
            "{report:?}"
        );
    }

    #[test]
    fn required_labels_are_restored() {
        let c = config();
        let (mut node, _) = initial_node(&c, &snapshot(), at(0));
        assert!(!ensure_required_labels(&mut node, &c));
        node.metadata.labels.as_mut().unwrap().remove(LABEL_ARCH);
        assert!(ensure_required_labels(&mut node, &c));
        assert_eq!(node.metadata.labels.unwrap()[LABEL_ARCH], "amd64");
    }

    #[test]
    fn aggregate_is_upstreams() {
        assert_eq!(aggregate(&[]), None);
        assert_eq!(aggregate(&["a".into()]), Some("a".into()));
        assert_eq!(aggregate(&["a".into(), "a".into()]), Some("a".into()));
        assert_eq!(
            aggregate(&["a".into(), "b".into(), "a".into()]),
            Some("[a, b]".into())
        );
    }
}
