//! What the kubelet knows about its node, as the status setters read it:
//! the [`NodeInputs`] trait the kubelet implements and the plain
//! [`NodeSnapshot`] it is read into once per status update.
//!
//! Upstream hands each setter of `pkg/kubelet/nodestatus/setters.go` its own
//! function (`GetCachedMachineInfo`, `containerManager.GetCapacity`,
//! `containerRuntime.Version`, `runtimeState.runtimeErrors`,
//! `evictionManager.IsUnderMemoryPressure`, `imageManager.GetImageList`,
//! ...); here they are the methods of one trait, read into one snapshot so
//! that the setters are pure functions of it.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};

use async_trait::async_trait;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

/// The machine, as cAdvisor reports it upstream (`cadvisorapi.MachineInfo`
/// and `VersionInfo`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MachineInfo {
    /// Logical CPUs: the `cpu` capacity unless the capacity map says
    /// otherwise.
    pub num_cores: u32,
    /// Memory in bytes: the `memory` capacity unless the capacity map says
    /// otherwise.
    pub memory_capacity_bytes: u64,
    /// `/etc/machine-id` (`nodeInfo.machineID`).
    pub machine_id: String,
    /// The SMBIOS product UUID (`nodeInfo.systemUUID`).
    pub system_uuid: String,
    /// `/proc/sys/kernel/random/boot_id` (`nodeInfo.bootID`).
    pub boot_id: String,
    /// `uname -r` (`nodeInfo.kernelVersion`).
    pub kernel_version: String,
    /// `PRETTY_NAME` of `/etc/os-release` (`nodeInfo.osImage`).
    pub os_image: String,
}

/// Capacity and allocatable of the node (upstream
/// `containerManager.GetCapacity` and capacity minus
/// `GetNodeAllocatableReservation`), keyed by resource name: `cpu`,
/// `memory`, `pods`, optionally `ephemeral-storage`, `hugepages-<size>` and
/// extended resources.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodeResources {
    /// Laid over the machine's `cpu` and `memory`.
    pub capacity: BTreeMap<String, Quantity>,
    /// Final values: a capacity without an allocatable entry is allocatable
    /// in full, as upstream without a reservation. The kubelet subtracts
    /// reservations and huge pages before handing them over.
    pub allocatable: BTreeMap<String, Quantity>,
}

/// The container runtime's name and version, reported as
/// `nodeInfo.containerRuntimeVersion` `"<name>://<version>"` (upstream
/// `VersionInfo`: `containerd://1.7.24`, or `containerd://Unknown` when the
/// version could not be read).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeVersion {
    /// The runtime's name (`RuntimeName` of CRI `Version`: `containerd`).
    pub runtime_name: String,
    /// Its version (`RuntimeVersion` of CRI `Version`), or why it is
    /// unknown.
    pub version: Result<String, String>,
}

impl fmt::Display for RuntimeVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.version {
            Ok(v) => write!(f, "{}://{}", self.runtime_name, v),
            Err(_) => write!(f, "{}://Unknown", self.runtime_name),
        }
    }
}

/// When the kubelet last heard from the runtime (upstream
/// `runtimeState.lastBaseRuntimeSync` against `baseRuntimeSyncThreshold`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum RuntimeSync {
    /// No runtime status check has completed yet: "container runtime status
    /// check may not have completed yet".
    #[default]
    NotYetChecked,
    /// The last successful check is older than the threshold: "container
    /// runtime is down".
    Down,
    /// The runtime answered recently.
    Up,
}

/// The runtime's health as the Ready condition reads it (upstream
/// `runtimeState`: `runtimeErrors`, `networkErrors`, `storageErrors`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuntimeHealth {
    /// Whether the runtime answered recently.
    pub sync: RuntimeSync,
    /// The runtime's RuntimeReady condition when false, as upstream words it
    /// (see [`RuntimeCondition::not_ready_error`]).
    pub runtime_error: Option<String>,
    /// The runtime's NetworkReady condition when false (see
    /// [`RuntimeCondition::network_not_ready_error`]).
    pub network_error: Option<String>,
    /// A storage error, if any.
    pub storage_error: Option<String>,
}

impl RuntimeHealth {
    /// A runtime that answered and is ready, network included.
    pub fn ready() -> Self {
        RuntimeHealth {
            sync: RuntimeSync::Up,
            ..Default::default()
        }
    }
}

/// A CRI runtime condition (`RuntimeReady`, `NetworkReady`) worded as
/// upstream's `kubecontainer.RuntimeCondition.String()`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeCondition {
    /// `RuntimeReady` or `NetworkReady`.
    pub condition_type: String,
    /// Whether it holds.
    pub status: bool,
    /// The runtime's reason.
    pub reason: String,
    /// The runtime's message.
    pub message: String,
}

impl fmt::Display for RuntimeCondition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}={} reason:{} message:{}",
            self.condition_type, self.status, self.reason, self.message
        )
    }
}

impl RuntimeCondition {
    /// Upstream's runtime error: `container runtime not ready: <condition>`.
    pub fn not_ready_error(&self) -> String {
        format!("container runtime not ready: {self}")
    }

    /// Upstream's network error: `container runtime network not ready:
    /// <condition>`.
    pub fn network_not_ready_error(&self) -> String {
        format!("container runtime network not ready: {self}")
    }
}

/// Node pressure as the eviction manager sees it (upstream
/// `IsUnderMemoryPressure`, `IsUnderDiskPressure`, `IsUnderPIDPressure`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pressure {
    /// Memory pressure.
    pub memory: bool,
    /// Disk pressure.
    pub disk: bool,
    /// PID pressure.
    pub pid: bool,
}

/// One image on the node (upstream `kubecontainer.Image`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageInfo {
    /// Repository digests, reported first.
    pub repo_digests: Vec<String>,
    /// Repository tags.
    pub repo_tags: Vec<String>,
    /// Size in bytes.
    pub size_bytes: i64,
}

/// What the kubelet knows about its node; the kubelet implements it over
/// its components (cAdvisor or `/proc`, the container manager, the CRI
/// client, the PLEG, the eviction manager, the image manager).
///
/// Errors are strings because they only end up in a condition message or a
/// log line.
#[async_trait]
pub trait NodeInputs: Send + Sync {
    /// The machine (upstream `GetCachedMachineInfo` and cAdvisor's
    /// `VersionInfo`). On error the capacity falls back to `cpu: 0`,
    /// `memory: 0Gi` as upstream.
    async fn machine_info(&self) -> Result<MachineInfo, String>;

    /// Capacity and allocatable.
    async fn resources(&self) -> NodeResources;

    /// The container runtime's name and version.
    async fn runtime_version(&self) -> RuntimeVersion;

    /// The runtime's health (upstream `runtimeState`).
    fn runtime_health(&self) -> RuntimeHealth;

    /// The PLEG's health check (upstream `pleg.Healthy`); its error makes
    /// the node NotReady with `PLEG is not healthy: <error>`.
    fn pleg_health(&self) -> Result<(), String> {
        Ok(())
    }

    /// Node pressure.
    fn pressure(&self) -> Pressure {
        Pressure::default()
    }

    /// Images on the node, in any order (they are sorted by size here).
    async fn images(&self) -> Result<Vec<ImageInfo>, String> {
        Ok(Vec::new())
    }

    /// The kubelet's port (`status.daemonEndpoints.kubeletEndpoint.Port`).
    fn daemon_endpoint_port(&self) -> i32;

    /// This host's addresses to pick the InternalIP from when `--node-ip`
    /// is not given (upstream resolves the node name and falls back to the
    /// default route's interface, `ChooseHostInterface`). When not empty, a
    /// `--node-ip` must be one of them, as upstream's `validateNodeIP`.
    fn host_ips(&self) -> Vec<IpAddr> {
        Vec::new()
    }
}

/// Everything the status setters read, gathered once per update.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeSnapshot {
    /// See [`NodeInputs::machine_info`].
    pub machine: Result<MachineInfo, String>,
    /// See [`NodeInputs::resources`].
    pub resources: NodeResources,
    /// See [`NodeInputs::runtime_version`].
    pub runtime_version: RuntimeVersion,
    /// See [`NodeInputs::runtime_health`].
    pub runtime_health: RuntimeHealth,
    /// See [`NodeInputs::pleg_health`].
    pub pleg_health: Result<(), String>,
    /// See [`NodeInputs::pressure`].
    pub pressure: Pressure,
    /// See [`NodeInputs::images`].
    pub images: Result<Vec<ImageInfo>, String>,
    /// See [`NodeInputs::daemon_endpoint_port`].
    pub daemon_endpoint_port: i32,
    /// See [`NodeInputs::host_ips`].
    pub host_ips: Vec<IpAddr>,
}

impl NodeSnapshot {
    /// Reads every input once.
    pub async fn collect(inputs: &dyn NodeInputs) -> Self {
        NodeSnapshot {
            machine: inputs.machine_info().await,
            resources: inputs.resources().await,
            runtime_version: inputs.runtime_version().await,
            runtime_health: inputs.runtime_health(),
            pleg_health: inputs.pleg_health(),
            pressure: inputs.pressure(),
            images: inputs.images().await,
            daemon_endpoint_port: inputs.daemon_endpoint_port(),
            host_ips: inputs.host_ips(),
        }
    }
}

/// A [`NodeInputs`] that answers from a snapshot the caller sets: for tests,
/// examples and node agents that compute their inputs elsewhere.
#[derive(Debug)]
pub struct StaticInputs(Mutex<NodeSnapshot>);

impl StaticInputs {
    /// Answers `snapshot` until changed.
    pub fn new(snapshot: NodeSnapshot) -> Self {
        StaticInputs(Mutex::new(snapshot))
    }

    /// Changes what is answered from now on.
    pub fn update(&self, f: impl FnOnce(&mut NodeSnapshot)) {
        f(&mut self.0.lock().unwrap_or_else(PoisonError::into_inner));
    }

    /// What is answered now.
    pub fn snapshot(&self) -> NodeSnapshot {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

#[async_trait]
impl NodeInputs for StaticInputs {
    async fn machine_info(&self) -> Result<MachineInfo, String> {
        self.snapshot().machine
    }
    async fn resources(&self) -> NodeResources {
        self.snapshot().resources
    }
    async fn runtime_version(&self) -> RuntimeVersion {
        self.snapshot().runtime_version
    }
    fn runtime_health(&self) -> RuntimeHealth {
        self.snapshot().runtime_health
    }
    fn pleg_health(&self) -> Result<(), String> {
        self.snapshot().pleg_health
    }
    fn pressure(&self) -> Pressure {
        self.snapshot().pressure
    }
    async fn images(&self) -> Result<Vec<ImageInfo>, String> {
        self.snapshot().images
    }
    fn daemon_endpoint_port(&self) -> i32 {
        self.snapshot().daemon_endpoint_port
    }
    fn host_ips(&self) -> Vec<IpAddr> {
        self.snapshot().host_ips
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtime_wording_is_upstreams() {
        let v = RuntimeVersion {
            runtime_name: "containerd".into(),
            version: Ok("1.7.24".into()),
        };
        assert_eq!(v.to_string(), "containerd://1.7.24");
        let v = RuntimeVersion {
            runtime_name: "containerd".into(),
            version: Err("timeout".into()),
        };
        assert_eq!(v.to_string(), "containerd://Unknown");
        let c = RuntimeCondition {
            condition_type: "NetworkReady".into(),
            status: false,
            reason: "NetworkPluginNotReady".into(),
            message: "Network plugin returns error: cni plugin not initialized".into(),
        };
        assert_eq!(
            c.network_not_ready_error(),
            "container runtime network not ready: NetworkReady=false reason:NetworkPluginNotReady message:Network plugin returns error: cni plugin not initialized"
        );
    }
}
