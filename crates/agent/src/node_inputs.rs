//! What this kubelet knows about its node, as the node status reads it:
//! [`KubeletNodeInputs`] implements `kubelet_nodestatus::NodeInputs` over
//! the container manager, the CRI, the PLEG and the eviction manager, and
//! [`RuntimeState`] is upstream's `runtimeState` kept by
//! [`RuntimeState::update_runtime_up`] every 5 s.
//!
//! Mirrors upstream `pkg/kubelet/kubelet_node_status.go`
//! (`defaultNodeStatusFuncs`: which component answers which setter),
//! `pkg/kubelet/runtime.go` (`runtimeState`) and `pkg/kubelet/kubelet.go`
//! (`updateRuntimeUp`).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kubelet_cm::ContainerManager;
use kubelet_container::threshold::{Signal, Threshold};
use kubelet_cri_client::{ImageService, RemoteRuntime, RuntimeService};
use kubelet_nodestatus::{
    ImageInfo, MachineInfo, NodeInputs, NodeResources, Pressure, RuntimeCondition, RuntimeHealth,
    RuntimeSync, RuntimeVersion,
};
use kubelet_pleg::PodLifecycleEventGenerator;

/// How often the runtime's status is asked (upstream `updateRuntimeUp`
/// runs every 5 s).
pub const RUNTIME_UP_PERIOD: Duration = Duration::from_secs(5);

/// How long the runtime may go unheard before the node is NotReady
/// (upstream `maxWaitForContainerRuntime`, 30 s).
pub const RUNTIME_SYNC_THRESHOLD: Duration = Duration::from_secs(30);

/// Upstream `runtimeState`: when the runtime last answered, and its
/// RuntimeReady/NetworkReady conditions.
#[derive(Debug, Default)]
pub struct RuntimeState {
    inner: Mutex<StateInner>,
}

#[derive(Debug, Default)]
struct StateInner {
    last_sync: Option<Instant>,
    runtime_error: Option<String>,
    network_error: Option<String>,
}

impl RuntimeState {
    /// Upstream `updateRuntimeUp`: asks the runtime's `Status`; a reply
    /// with RuntimeReady counts as a sync, its NetworkReady condition is
    /// recorded. An error leaves the last sync as it was, so the node turns
    /// NotReady once [`RUNTIME_SYNC_THRESHOLD`] passes.
    pub async fn update_runtime_up(&self, cri: &dyn RuntimeService) {
        let status = match cri.status(false).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "container runtime status check failed");
                return;
            }
        };
        let conditions = status.status.map(|s| s.conditions).unwrap_or_default();
        let find = |t: &str| {
            conditions
                .iter()
                .find(|c| c.r#type == t)
                .map(|c| RuntimeCondition {
                    condition_type: c.r#type.clone(),
                    status: c.status,
                    reason: c.reason.clone(),
                    message: c.message.clone(),
                })
        };
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        inner.network_error = match find("NetworkReady") {
            Some(c) if !c.status => Some(c.network_not_ready_error()),
            Some(_) => None,
            None => {
                Some("container runtime network not ready: NetworkReady condition missing".into())
            }
        };
        match find("RuntimeReady") {
            Some(c) if c.status => {
                inner.runtime_error = None;
                inner.last_sync = Some(Instant::now());
            }
            Some(c) => inner.runtime_error = Some(c.not_ready_error()),
            None => {
                inner.runtime_error =
                    Some("container runtime not ready: RuntimeReady condition missing".into());
            }
        }
    }

    /// The health the Ready condition reads.
    pub fn health(&self) -> RuntimeHealth {
        let inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        RuntimeHealth {
            sync: match inner.last_sync {
                None => RuntimeSync::NotYetChecked,
                Some(t) if t.elapsed() > RUNTIME_SYNC_THRESHOLD => RuntimeSync::Down,
                Some(_) => RuntimeSync::Up,
            },
            runtime_error: inner.runtime_error.clone(),
            network_error: inner.network_error.clone(),
            storage_error: None,
        }
    }
}

/// [`NodeInputs`] over this kubelet's components.
pub struct KubeletNodeInputs {
    /// The CRI client (version, images).
    pub cri: RemoteRuntime,
    /// The runtime's name as `Version` reported it.
    pub runtime_name: String,
    /// The container manager (capacity and allocatable).
    pub cm: Arc<dyn ContainerManager>,
    /// The PLEG (its health check).
    pub pleg: Arc<dyn PodLifecycleEventGenerator>,
    /// The eviction manager (pressure conditions).
    pub eviction: Arc<kubelet_eviction::manager::Manager>,
    /// The runtime's state, kept by [`RuntimeState::update_runtime_up`].
    pub runtime_state: Arc<RuntimeState>,
    /// The machine, read once at start ([`machine_info`]).
    pub machine: MachineInfo,
    /// The kubelet's root directory: `ephemeral-storage` is the capacity of
    /// its filesystem (upstream: cAdvisor's `RootFsInfo`).
    pub root_dir: PathBuf,
    /// The hard eviction thresholds: `nodefs.available` lowers allocatable
    /// `ephemeral-storage` as upstream `GetNodeAllocatableReservation`.
    pub thresholds: Vec<Threshold>,
    /// `maxPods`: the `pods` capacity.
    pub max_pods: i64,
    /// The node API's port (`daemonEndpoints.kubeletEndpoint`).
    pub port: u16,
}

impl std::fmt::Debug for KubeletNodeInputs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeletNodeInputs")
            .field("root_dir", &self.root_dir)
            .finish_non_exhaustive()
    }
}

/// A resource amount as the API writes it: CPU in cores or millicores,
/// the rest as plain integers.
fn quantity(resource: &str, amount: i64) -> Quantity {
    if resource == "cpu" {
        if amount % 1000 == 0 {
            Quantity((amount / 1000).to_string())
        } else {
            Quantity(format!("{amount}m"))
        }
    } else {
        Quantity(amount.to_string())
    }
}

/// The total size of the filesystem holding `path`, in bytes.
fn filesystem_capacity(path: &std::path::Path) -> Option<i64> {
    let st = rustix::fs::statvfs(path).ok()?;
    i64::try_from(st.f_blocks.saturating_mul(st.f_frsize)).ok()
}

fn read_trimmed(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

/// `PRETTY_NAME` of `/etc/os-release`.
fn os_image() -> String {
    std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|text| {
            text.lines().find_map(|l| {
                l.strip_prefix("PRETTY_NAME=")
                    .map(|v| v.trim_matches('"').to_owned())
            })
        })
        .unwrap_or_else(|| "Unknown".into())
}

/// The node status's view of `machine` plus the host's identity files
/// (machine ID, system UUID, boot ID, kernel, OS image), read once.
pub fn machine_info(machine: &kubelet_cm::MachineInfo) -> MachineInfo {
    MachineInfo {
        num_cores: u32::try_from(machine.topology.num_cpus()).unwrap_or(u32::MAX),
        memory_capacity_bytes: machine.memory_capacity_bytes,
        machine_id: read_trimmed("/etc/machine-id"),
        system_uuid: read_trimmed("/sys/class/dmi/id/product_uuid"),
        boot_id: read_trimmed("/proc/sys/kernel/random/boot_id"),
        kernel_version: read_trimmed("/proc/sys/kernel/osrelease"),
        os_image: os_image(),
    }
}

#[async_trait]
impl NodeInputs for KubeletNodeInputs {
    async fn machine_info(&self) -> Result<MachineInfo, String> {
        Ok(self.machine.clone())
    }

    async fn resources(&self) -> NodeResources {
        let mut capacity: BTreeMap<String, Quantity> = BTreeMap::new();
        let mut allocatable: BTreeMap<String, Quantity> = BTreeMap::new();
        // `pid` is the container manager's own bookkeeping, not a Node
        // resource (upstream leaves it out of the Node's capacity).
        for (name, amount) in self.cm.capacity() {
            if name != "pid" {
                capacity.insert(name.clone(), quantity(&name, amount));
            }
        }
        for (name, amount) in self.cm.node_allocatable() {
            if name != "pid" {
                allocatable.insert(name.clone(), quantity(&name, amount.max(0)));
            }
        }
        capacity.insert("pods".into(), Quantity(self.max_pods.to_string()));
        allocatable.insert("pods".into(), Quantity(self.max_pods.to_string()));
        if let Some(storage) = filesystem_capacity(&self.root_dir) {
            let reserved: i64 = self
                .thresholds
                .iter()
                .filter(|t| t.signal == Signal::NodeFsAvailable)
                .map(|t| t.value.quantity(storage))
                .sum();
            capacity.insert("ephemeral-storage".into(), Quantity(storage.to_string()));
            allocatable.insert(
                "ephemeral-storage".into(),
                Quantity((storage - reserved).max(0).to_string()),
            );
        }
        NodeResources {
            capacity,
            allocatable,
        }
    }

    async fn runtime_version(&self) -> RuntimeVersion {
        RuntimeVersion {
            runtime_name: self.runtime_name.clone(),
            version: self
                .cri
                .version()
                .await
                .map(|v| v.runtime_version)
                .map_err(|e| e.to_string()),
        }
    }

    fn runtime_health(&self) -> RuntimeHealth {
        self.runtime_state.health()
    }

    fn pleg_health(&self) -> Result<(), String> {
        self.pleg.healthy()
    }

    fn pressure(&self) -> Pressure {
        Pressure {
            memory: self.eviction.is_under_memory_pressure(),
            disk: self.eviction.is_under_disk_pressure(),
            pid: self.eviction.is_under_pid_pressure(),
        }
    }

    async fn images(&self) -> Result<Vec<ImageInfo>, String> {
        let images = self
            .cri
            .list_images(None)
            .await
            .map_err(|e| e.to_string())?;
        Ok(images
            .into_iter()
            .map(|i| ImageInfo {
                repo_digests: i.repo_digests,
                repo_tags: i.repo_tags,
                size_bytes: i64::try_from(i.size).unwrap_or(i64::MAX),
            })
            .collect())
    }

    fn daemon_endpoint_port(&self) -> i32 {
        i32::from(self.port)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_are_written_as_the_api_writes_them() {
        assert_eq!(quantity("cpu", 2000).0, "2");
        assert_eq!(quantity("cpu", 1500).0, "1500m");
        assert_eq!(quantity("memory", 1024).0, "1024");
    }

    #[tokio::test]
    async fn the_runtime_state_follows_the_runtimes_conditions() {
        let state = RuntimeState::default();
        assert_eq!(state.health().sync, RuntimeSync::NotYetChecked);
        let fake = kubelet_cri_client::FakeRuntime::new();
        state.update_runtime_up(&fake).await;
        let health = state.health();
        assert_eq!(health.sync, RuntimeSync::Up, "{health:?}");
        assert_eq!(health.runtime_error, None);
    }
}
