//! The [`ContainerManager`] trait and its Linux implementation,
//! [`NodeContainerManager`]: node capacity and allocatable, the `kubepods`
//! tree, QoS and pod cgroups, admission through the topology manager, the
//! CPU and memory managers' container hooks, and [`ContainerManager::explain`].
//!
//! Upstream: `pkg/kubelet/cm/container_manager.go` (the interface),
//! `container_manager_linux.go`, `qos_container_manager_linux.go`,
//! `pod_container_manager_linux.go`, `node_container_manager_linux.go`,
//! `internal_container_lifecycle_linux.go`.

use kubelet_container::ContainerResources;
use std::fmt;
use std::path::PathBuf;

use k8s_openapi::api::core::v1::{Container, Pod};
use kubelet_cri_client::api::LinuxContainerResources;

use crate::cgroup::{CgroupManager, Cgroupfs, FsCgroupManager, Systemd};
use crate::cgroup_name::{CgroupDriverKind, CgroupName};
use crate::cpumanager::{CpuManager, CpuPolicy};
use crate::cpuset::CpuSet;
use crate::error::{Error, Result};
use crate::machine::{MachineInfo, ResourceList};
use crate::memorymanager::{MemoryManager, MemoryPolicy};
use crate::node::{
    NodeAllocatableConfig, cgroup_config_for, node_allocatable, node_allocatable_enforced,
    validate_node_allocatable,
};
use crate::podres::{self, milli_to_value};
use crate::qos::{QosClass, pod_qos_class};
use crate::resources::{
    ContainerResourceOptions, QUOTA_PERIOD_US, ResourceConfig,
    container_linux_resources_with_hugepage_sizes, milli_cpu_to_shares, pod_cgroup_name,
    pod_resource_config, qos_cgroup_name,
};
use crate::topologymanager::{HintProvider, TopologyManager, TopologyPolicy};

/// How often upstream refreshes the QoS cgroups (`periodicQOSCgroupUpdateInterval`).
pub const QOS_CGROUP_UPDATE_PERIOD: std::time::Duration = std::time::Duration::from_secs(60);
/// The limit that leaves huge pages unbounded on the QoS cgroups (`1 << 62`).
pub const HUGEPAGE_UNBOUNDED: i64 = 1 << 62;

/// The container manager's settings (the `cm`-relevant part of `KubeletConfiguration`).
#[derive(Debug, Clone)]
pub struct ContainerManagerConfig {
    /// Where the cgroup hierarchies are mounted (`/sys/fs/cgroup`).
    pub cgroup_mount_root: PathBuf,
    /// kubelet `cgroupRoot` (the root by default): `kubepods` goes under it.
    pub cgroup_root: CgroupName,
    /// kubelet `cgroupDriver`.
    pub cgroup_driver: CgroupDriverKind,
    /// kubelet `cgroupsPerQOS` (default true).
    pub cgroups_per_qos: bool,
    /// Reservations, eviction thresholds and `enforceNodeAllocatable`.
    pub node_allocatable: NodeAllocatableConfig,
    /// kubelet `podPidsLimit` (-1: unlimited).
    pub pod_pids_limit: i64,
    /// kubelet `cpuCFSQuota`.
    pub cpu_cfs_quota: bool,
    /// kubelet `cpuCFSQuotaPeriod` in microseconds.
    pub cpu_cfs_quota_period_us: u64,
    /// kubelet `qosReserved` memory percentage (feature QOSReserved).
    pub qos_reserved_memory_pct: Option<i64>,
    /// kubelet `cpuManagerPolicy`.
    pub cpu_policy: CpuPolicy,
    /// kubelet `memoryManagerPolicy`.
    pub memory_policy: MemoryPolicy,
    /// kubelet `topologyManagerPolicy`.
    pub topology_policy: TopologyPolicy,
    /// Where the CPU and memory manager checkpoints live (`/var/lib/kubelet`); none: not persisted.
    pub state_dir: Option<PathBuf>,
}

impl Default for ContainerManagerConfig {
    fn default() -> Self {
        ContainerManagerConfig {
            cgroup_mount_root: PathBuf::from("/sys/fs/cgroup"),
            cgroup_root: CgroupName::root(),
            cgroup_driver: CgroupDriverKind::Cgroupfs,
            cgroups_per_qos: true,
            node_allocatable: NodeAllocatableConfig::default(),
            pod_pids_limit: -1,
            cpu_cfs_quota: true,
            cpu_cfs_quota_period_us: QUOTA_PERIOD_US,
            qos_reserved_memory_pct: None,
            cpu_policy: CpuPolicy::None,
            memory_policy: MemoryPolicy::None,
            topology_policy: TopologyPolicy::None,
            state_dir: None,
        }
    }
}

/// Everything the container manager decides for one container.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerExplanation {
    /// Container name.
    pub name: String,
    /// Whether it is an init container (sidecars included).
    pub init: bool,
    /// What the CRI gets (`LinuxContainerResources`, cpuset included).
    pub resources: LinuxContainerResources,
    /// The `oom_score_adj` that will actually hold on this host: runtimes
    /// without `CAP_SYS_RESOURCE` raise a negative value to their own.
    pub effective_oom_score_adj: i64,
    /// Exclusive CPUs from the static CPU manager.
    pub exclusive_cpus: Option<CpuSet>,
    /// NUMA nodes pinned by the static memory manager.
    pub memory_nodes: Option<String>,
}

/// Every value the container manager computes for a pod ([`ContainerManager::explain`]).
#[derive(Debug, Clone, PartialEq)]
pub struct PodExplanation {
    /// The pod's QoS class.
    pub qos_class: QosClass,
    /// The pod cgroup (`kubepods/burstable/pod<uid>`).
    pub pod_cgroup: CgroupName,
    /// Its literal form for the driver: the sandbox's CRI `cgroup_parent`.
    pub cgroup_parent: String,
    /// The pod cgroup's values.
    pub pod_cgroup_config: ResourceConfig,
    /// Per container, init containers first.
    pub containers: Vec<ContainerExplanation>,
    /// The node's capacity.
    pub node_capacity: ResourceList,
    /// The node's reported allocatable.
    pub node_allocatable: ResourceList,
}

fn opt<T: fmt::Display>(v: &Option<T>) -> String {
    v.as_ref()
        .map_or_else(|| "-".to_owned(), ToString::to_string)
}

impl fmt::Display for PodExplanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "qos class:      {}", self.qos_class)?;
        writeln!(
            f,
            "pod cgroup:     {} (cgroup_parent {})",
            self.pod_cgroup, self.cgroup_parent
        )?;
        let c = &self.pod_cgroup_config;
        writeln!(
            f,
            "pod cgroup:     cpu.shares={} cfs_quota={} cfs_period={} memory.limit={} pids.max={}",
            opt(&c.cpu_shares),
            opt(&c.cpu_quota),
            opt(&c.cpu_period),
            opt(&c.memory_limit),
            opt(&c.pids_limit)
        )?;
        for k in &self.containers {
            let r = &k.resources;
            writeln!(
                f,
                "{} {}: cpu_shares={} cpu_quota={} cpu_period={} memory_limit_in_bytes={} oom_score_adj={} (effective {}) cpuset_cpus={:?} cpuset_mems={:?}",
                if k.init {
                    "init container"
                } else {
                    "container"
                },
                k.name,
                r.cpu_shares,
                r.cpu_quota,
                r.cpu_period,
                r.memory_limit_in_bytes,
                r.oom_score_adj,
                k.effective_oom_score_adj,
                r.cpuset_cpus,
                r.cpuset_mems
            )?;
        }
        writeln!(f, "node capacity:    {:?}", self.node_capacity)?;
        write!(f, "node allocatable: {:?}", self.node_allocatable)
    }
}

/// The container manager (upstream `cm.ContainerManager`). What the runtime
/// manager asks of it (the pod's cgroup parent, each container's resources,
/// started containers) is the core crate's
/// [`ContainerResources`].
pub trait ContainerManager: kubelet_container::ContainerResources {
    /// Creates the `kubepods` cgroup (limited to node allocatable when
    /// enforced) and the QoS cgroups. Idempotent.
    fn start(&self) -> Result<()>;
    /// The node's capacity.
    fn capacity(&self) -> ResourceList;
    /// The node's reported allocatable.
    fn node_allocatable(&self) -> ResourceList;
    /// What the `kubepods` cgroup is limited to.
    fn node_allocatable_enforced(&self) -> ResourceList;
    /// The pod's cgroup name.
    fn pod_cgroup(&self, pod: &Pod) -> CgroupName;
    /// Creates or updates the pod cgroup (no processes are added).
    fn ensure_pod_cgroup(&self, pod: &Pod) -> Result<()>;
    /// Whether the pod cgroup exists.
    fn pod_cgroup_exists(&self, pod: &Pod) -> bool;
    /// Removes a terminated pod's cgroup and releases its CPUs and memory;
    /// processes left in it are killed first, as upstream's
    /// `podContainerManagerImpl.Destroy`.
    fn destroy_pod_cgroup(&self, pod: &Pod) -> Result<()>;
    /// The pod cgroups under the QoS cgroups, by pod UID (upstream
    /// `podContainerManagerImpl.GetAllPodsFromCgroups`); none by default.
    fn pod_cgroups(&self) -> Result<std::collections::BTreeMap<String, CgroupName>> {
        Ok(Default::default())
    }
    /// Removes the cgroup of a pod the kubelet no longer knows (one that
    /// [`ContainerManager::pod_cgroups`] found), as upstream's
    /// `cleanupOrphanedPodCgroups` does, after killing what is left in it.
    fn destroy_orphaned_pod_cgroup(&self, name: &CgroupName) -> Result<()> {
        let _ = name;
        Ok(())
    }
    /// Recomputes the QoS cgroups from the active pods (upstream `UpdateCgroups`).
    fn update_qos_cgroups(&self, active_pods: &[Pod]) -> Result<()>;
    /// Admits a pod's resources: the topology manager with the CPU and memory
    /// managers as hint providers (allocation happens here).
    fn admit(&self, pod: &Pod) -> Result<()>;
    /// Releases what a removed container held.
    fn remove_container(
        &self,
        pod_uid: &str,
        container_name: &str,
        container_id: Option<&str>,
    ) -> Result<()>;
    /// Every value above for a pod, as a typed report.
    fn explain(&self, pod: &Pod) -> PodExplanation;
}

/// The values of the burstable and besteffort cgroups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QosCgroupConfigs {
    /// `kubepods/burstable`.
    pub burstable: ResourceConfig,
    /// `kubepods/besteffort`.
    pub best_effort: ResourceConfig,
}

/// QoS cgroup values from the active pods (upstream `setCPUCgroupConfig`,
/// `setHugePagesConfig`, `setMemoryReserve`): besteffort gets 2 shares,
/// burstable the shares of its pods' cpu requests; huge pages unbounded;
/// with `qos_reserved_memory_pct`, burstable is limited to allocatable −
/// guaranteed requests × pct, besteffort to allocatable − (guaranteed +
/// burstable requests) × pct.
pub fn qos_cgroup_configs(
    active_pods: &[Pod],
    allocatable_memory: i64,
    qos_reserved_memory_pct: Option<i64>,
    host_hugepage_sizes: &[String],
) -> QosCgroupConfigs {
    let mut burstable_cpu = 0i64;
    let mut guaranteed_mem = 0i64;
    let mut burstable_mem = 0i64;
    for pod in active_pods {
        let reqs = podres::pod_requests(pod);
        let mem = milli_to_value(reqs.get("memory").copied().unwrap_or(0));
        match pod_qos_class(pod) {
            QosClass::Burstable => {
                burstable_cpu += reqs.get("cpu").copied().unwrap_or(0);
                burstable_mem += mem.max(0);
            }
            QosClass::Guaranteed => guaranteed_mem += mem.max(0),
            QosClass::BestEffort => {}
        }
    }
    let unbounded = host_hugepage_sizes
        .iter()
        .map(|s| (s.clone(), HUGEPAGE_UNBOUNDED))
        .collect();
    let mut cfg = QosCgroupConfigs {
        burstable: ResourceConfig {
            cpu_shares: Some(milli_cpu_to_shares(burstable_cpu)),
            hugepage_limits: unbounded,
            ..Default::default()
        },
        best_effort: ResourceConfig {
            cpu_shares: Some(crate::resources::MIN_SHARES),
            hugepage_limits: host_hugepage_sizes
                .iter()
                .map(|s| (s.clone(), HUGEPAGE_UNBOUNDED))
                .collect(),
            ..Default::default()
        },
    };
    if let Some(pct) = qos_reserved_memory_pct
        && allocatable_memory > 0
    {
        cfg.burstable.memory_limit = Some(allocatable_memory - guaranteed_mem * pct / 100);
        cfg.best_effort.memory_limit =
            Some(allocatable_memory - (guaranteed_mem + burstable_mem) * pct / 100);
    }
    cfg
}

/// The Linux container manager.
pub struct NodeContainerManager {
    config: ContainerManagerConfig,
    machine: MachineInfo,
    cgroups: Box<dyn CgroupManager>,
    cpu: std::sync::Arc<CpuManager>,
    memory: MemoryManager,
    topology: TopologyManager,
    hugepage_sizes: Vec<String>,
    cgroup_v2: bool,
    oom_score_adj_floor: Option<i64>,
    killer: ProcessKiller,
}

/// Sends `SIGKILL` to one process: what [`NodeContainerManager`] does to
/// the processes left in a pod cgroup it removes. Replaceable with
/// [`NodeContainerManager::with_process_killer`] (tests record instead).
pub type ProcessKiller = std::sync::Arc<dyn Fn(u32) -> std::io::Result<()> + Send + Sync>;

fn sigkill(pid: u32) -> std::io::Result<()> {
    let pid = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
        .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    rustix::process::kill_process(pid, rustix::process::Signal::KILL).map_err(std::io::Error::from)
}

impl fmt::Debug for NodeContainerManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeContainerManager")
            .field("cgroup_root", &self.config.cgroup_root)
            .field("cpu", &self.cpu)
            .field("memory", &self.memory)
            .field("topology", &self.topology)
            .finish()
    }
}

/// The lowest `oom_score_adj` a runtime started by this process could set:
/// without `CAP_SYS_RESOURCE` in the bounding set, its own current value.
pub fn oom_score_adj_floor(procfs_root: &std::path::Path) -> Option<i64> {
    let status = std::fs::read_to_string(procfs_root.join("self/status")).ok()?;
    let bnd = status.lines().find_map(|l| l.strip_prefix("CapBnd:"))?;
    let caps = u64::from_str_radix(bnd.trim(), 16).ok()?;
    const CAP_SYS_RESOURCE: u32 = 24;
    if caps & (1 << CAP_SYS_RESOURCE) != 0 {
        return None;
    }
    std::fs::read_to_string(procfs_root.join("self/oom_score_adj"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

impl NodeContainerManager {
    /// A container manager for `machine`. Fails on an invalid reservation,
    /// CPU or memory manager configuration, or an unusable checkpoint.
    pub fn new(config: ContainerManagerConfig, machine: MachineInfo) -> Result<Self> {
        validate_node_allocatable(&machine.capacity(), &config.node_allocatable)?;
        let cgroups: Box<dyn CgroupManager> = match config.cgroup_driver {
            CgroupDriverKind::Cgroupfs => Box::new(FsCgroupManager::with_driver(
                &config.cgroup_mount_root,
                Cgroupfs,
            )),
            CgroupDriverKind::Systemd => Box::new(FsCgroupManager::with_driver(
                &config.cgroup_mount_root,
                Systemd,
            )),
        };
        let cgroup_v2 = crate::cgroup::detect_cgroup_version(&config.cgroup_mount_root)
            == crate::CgroupVersion::V2;
        let state_dir = config.state_dir.as_deref();
        let cpu = std::sync::Arc::new(CpuManager::new(
            config.cpu_policy.clone(),
            machine.topology.clone(),
            state_dir,
        )?);
        let memory = MemoryManager::new(config.memory_policy.clone(), &machine, state_dir)?;
        let topology = TopologyManager::new(config.topology_policy, machine.topology.numa_nodes())?;
        let hugepage_sizes = machine
            .hugepages
            .keys()
            .map(|b| crate::resources::hugepage_unit_size(*b))
            .collect();
        Ok(NodeContainerManager {
            oom_score_adj_floor: oom_score_adj_floor(std::path::Path::new("/proc")),
            config,
            machine,
            cgroups,
            cpu,
            memory,
            topology,
            hugepage_sizes,
            cgroup_v2,
            killer: std::sync::Arc::new(sigkill),
        })
    }

    /// Replaces what kills the processes left in a pod cgroup that is
    /// removed (`SIGKILL` by default).
    pub fn with_process_killer(mut self, killer: ProcessKiller) -> Self {
        self.killer = killer;
        self
    }

    /// Upstream `tryKillingCgroupProcesses`
    /// (`pkg/kubelet/cm/pod_container_manager_linux.go`): `SIGKILL` to every
    /// process left in the cgroup but this one, up to five rounds while
    /// some refuse. Upstream then removes the cgroup at once; this waits up
    /// to 100 ms for the killed processes to be reaped, so the removal that
    /// follows does not fail on a cgroup that is about to be empty.
    fn kill_cgroup_processes(&self, name: &CgroupName) -> Result<()> {
        let me = std::process::id();
        let pids: Vec<u32> = self
            .cgroups
            .pids(name)?
            .into_iter()
            .filter(|p| *p != me)
            .collect();
        if pids.is_empty() {
            return Ok(());
        }
        tracing::info!(cgroup = %name, ?pids, "killing the processes left in a pod cgroup");
        let mut failed = Vec::new();
        let mut reason = String::new();
        for _ in 0..5 {
            failed.clear();
            for &pid in &pids {
                match (self.killer)(pid) {
                    Ok(()) => {}
                    Err(e) if e.raw_os_error() == Some(rustix::io::Errno::SRCH.raw_os_error()) => {}
                    Err(e) => {
                        failed.push(pid);
                        reason = e.to_string();
                    }
                }
            }
            if failed.is_empty() {
                break;
            }
        }
        if !failed.is_empty() {
            return Err(Error::KillProcesses {
                cgroup: name.to_string(),
                pids: failed,
                reason,
            });
        }
        for _ in 0..20 {
            if self.cgroups.pids(name)?.iter().all(|p| *p == me) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        Ok(())
    }

    /// The CPU manager.
    pub fn cpu_manager(&self) -> &CpuManager {
        &self.cpu
    }

    /// The CPU manager, shared: for its reconcile task
    /// ([`CpuManager::spawn_reconcile`]).
    pub fn cpu_manager_handle(&self) -> std::sync::Arc<CpuManager> {
        self.cpu.clone()
    }

    /// The memory manager.
    pub fn memory_manager(&self) -> &MemoryManager {
        &self.memory
    }

    /// The cgroup manager.
    pub fn cgroup_manager(&self) -> &dyn CgroupManager {
        self.cgroups.as_ref()
    }

    /// The machine.
    pub fn machine(&self) -> &MachineInfo {
        &self.machine
    }

    fn kubepods(&self) -> CgroupName {
        self.config.cgroup_root.child(crate::resources::KUBEPODS)
    }

    fn resource_options(&self) -> ContainerResourceOptions {
        ContainerResourceOptions {
            memory_capacity_bytes: self.machine.memory_capacity_bytes,
            cpu_cfs_quota: self.config.cpu_cfs_quota,
            cpu_cfs_quota_period_us: self.config.cpu_cfs_quota_period_us,
            cgroup_v2: self.cgroup_v2,
        }
    }

    fn pod_config(&self, pod: &Pod) -> ResourceConfig {
        let mut cfg = pod_resource_config(
            pod,
            self.config.cpu_cfs_quota,
            self.config.cpu_cfs_quota_period_us,
        );
        if self.config.pod_pids_limit > 0 {
            cfg.pids_limit = Some(self.config.pod_pids_limit);
        }
        cfg
    }

    fn all_containers(pod: &Pod) -> impl Iterator<Item = (&Container, bool)> {
        let spec = pod.spec.as_ref();
        spec.and_then(|s| s.init_containers.as_ref())
            .into_iter()
            .flatten()
            .map(|c| (c, true))
            .chain(
                spec.into_iter()
                    .flat_map(|s| s.containers.iter().map(|c| (c, false))),
            )
    }
}

impl ContainerResources for NodeContainerManager {
    fn pod_cgroup_parent(&self, pod: &Pod) -> String {
        self.cgroups.literal_name(&self.pod_cgroup(pod))
    }
    fn container_resources(&self, pod: &Pod, container: &Container) -> LinuxContainerResources {
        let mut r = container_linux_resources_with_hugepage_sizes(
            pod,
            container,
            &self.resource_options(),
            &self.hugepage_sizes,
        );
        let uid = pod.metadata.uid.as_deref().unwrap_or_default();
        if matches!(self.config.cpu_policy, CpuPolicy::Static { .. }) {
            r.cpuset_cpus = self.cpu.cpuset_for(uid, &container.name).to_string();
        }
        if let Some(mems) = self.memory.memory_nodes(uid, &container.name) {
            r.cpuset_mems = mems;
        }
        r
    }
    fn add_container(&self, pod: &Pod, container: &Container, container_id: &str) {
        let uid = pod.metadata.uid.as_deref().unwrap_or_default();
        self.cpu.add_container(uid, &container.name, container_id);
    }
}

impl ContainerManager for NodeContainerManager {
    fn start(&self) -> Result<()> {
        if !self.config.cgroups_per_qos {
            return Ok(());
        }
        let capacity = self.capacity();
        let enforced = self.node_allocatable_enforced();
        let mut kubepods = cgroup_config_for(&enforced, &self.hugepage_sizes);
        if !self
            .config
            .node_allocatable
            .enforce_node_allocatable
            .contains(crate::node::ENFORCE_PODS)
        {
            // Capacity: shares still set (defaults starve kubepods), limits left open.
            kubepods = cgroup_config_for(&capacity, &self.hugepage_sizes);
        }
        tracing::info!(cgroup = %self.kubepods(), ?kubepods, "enforcing node allocatable");
        self.cgroups.create(&self.kubepods(), &kubepods)?;
        let configs = qos_cgroup_configs(&[], 0, None, &self.hugepage_sizes);
        for (qos, cfg) in [
            (
                QosClass::Burstable,
                ResourceConfig {
                    cpu_shares: None,
                    ..configs.burstable
                },
            ),
            (QosClass::BestEffort, configs.best_effort),
        ] {
            self.cgroups
                .create(&qos_cgroup_name(&self.config.cgroup_root, qos), &cfg)?;
        }
        Ok(())
    }

    fn capacity(&self) -> ResourceList {
        self.machine.capacity()
    }

    fn node_allocatable(&self) -> ResourceList {
        node_allocatable(&self.capacity(), &self.config.node_allocatable)
    }

    fn node_allocatable_enforced(&self) -> ResourceList {
        node_allocatable_enforced(
            &self.capacity(),
            &self.config.node_allocatable,
            self.config.cgroups_per_qos,
        )
    }

    fn pod_cgroup(&self, pod: &Pod) -> CgroupName {
        if !self.config.cgroups_per_qos {
            return self.config.cgroup_root.clone();
        }
        pod_cgroup_name(&self.config.cgroup_root, pod)
    }

    fn ensure_pod_cgroup(&self, pod: &Pod) -> Result<()> {
        if !self.config.cgroups_per_qos {
            return Ok(());
        }
        if pod.metadata.uid.as_deref().is_none_or(str::is_empty) {
            return Err(Error::InvalidConfig(
                "a pod without a UID gets no cgroup".into(),
            ));
        }
        let name = self.pod_cgroup(pod);
        let cfg = self.pod_config(pod);
        if self.cgroups.exists(&name) {
            self.cgroups.update(&name, &cfg)
        } else {
            self.cgroups.create(&name, &cfg)
        }
    }

    fn pod_cgroup_exists(&self, pod: &Pod) -> bool {
        self.cgroups.exists(&self.pod_cgroup(pod))
    }

    fn destroy_pod_cgroup(&self, pod: &Pod) -> Result<()> {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        for (c, _) in Self::all_containers(pod) {
            self.remove_container(&uid, &c.name, None)?;
        }
        if !self.config.cgroups_per_qos || uid.is_empty() {
            return Ok(());
        }
        let name = self.pod_cgroup(pod);
        self.kill_cgroup_processes(&name)?;
        self.cgroups.destroy(&name)
    }

    fn pod_cgroups(&self) -> Result<std::collections::BTreeMap<String, CgroupName>> {
        let mut out = std::collections::BTreeMap::new();
        if !self.config.cgroups_per_qos {
            return Ok(out);
        }
        // Upstream `GetAllPodsFromCgroups`: the children named pod<uid> of
        // the Guaranteed (kubepods), Burstable and BestEffort cgroups.
        let kubepods = self.config.cgroup_root.child(crate::resources::KUBEPODS);
        for qos in [
            kubepods.clone(),
            kubepods.child("burstable"),
            kubepods.child("besteffort"),
        ] {
            for child in self.cgroups.children(&qos)? {
                let uid = child
                    .parts()
                    .last()
                    .and_then(|p| p.strip_prefix(crate::resources::POD_CGROUP_PREFIX))
                    .filter(|uid| !uid.is_empty())
                    .map(str::to_owned);
                if let Some(uid) = uid {
                    out.insert(uid, child);
                }
            }
        }
        Ok(out)
    }

    fn destroy_orphaned_pod_cgroup(&self, name: &CgroupName) -> Result<()> {
        self.kill_cgroup_processes(name)?;
        self.cgroups.destroy(name)
    }

    fn update_qos_cgroups(&self, active_pods: &[Pod]) -> Result<()> {
        if !self.config.cgroups_per_qos {
            return Ok(());
        }
        let alloc_mem = self.node_allocatable().get("memory").copied().unwrap_or(0);
        let cfg = qos_cgroup_configs(
            active_pods,
            alloc_mem,
            self.config.qos_reserved_memory_pct,
            &self.hugepage_sizes,
        );
        for (qos, c) in [
            (QosClass::Burstable, cfg.burstable),
            (QosClass::BestEffort, cfg.best_effort),
        ] {
            let name = qos_cgroup_name(&self.config.cgroup_root, qos);
            if let Err(err) = self.cgroups.update(&name, &c) {
                // Upstream: when usage is already above the new limit, retry with the usage.
                let usage = self
                    .memory_usage_path(&name)
                    .and_then(|p| std::fs::read_to_string(p).ok())
                    .and_then(|t| t.trim().parse::<i64>().ok());
                match (usage, c.memory_limit) {
                    (Some(u), Some(l)) if u > l => {
                        tracing::warn!(cgroup = %name, usage = u, limit = l, "memory usage above qos reserve; limiting to usage");
                        self.cgroups.update(
                            &name,
                            &ResourceConfig {
                                memory_limit: Some(u),
                                ..c
                            },
                        )?;
                    }
                    _ => return Err(err),
                }
            }
        }
        Ok(())
    }

    fn admit(&self, pod: &Pod) -> Result<()> {
        let providers: [&dyn HintProvider; 2] = [&*self.cpu, &self.memory];
        self.topology.admit(pod, &providers).map_err(|e| match e {
            Error::NotEnoughCpus { .. } => Error::Admission {
                reason: "UnexpectedAdmissionError",
                message: format!("Allocate failed due to {e}, which is unexpected"),
            },
            other => other,
        })
    }

    fn remove_container(
        &self,
        pod_uid: &str,
        container_name: &str,
        container_id: Option<&str>,
    ) -> Result<()> {
        if let Some(id) = container_id {
            self.cpu.remove_container_id(id)?;
        }
        self.cpu.remove_container(pod_uid, container_name)?;
        self.memory.remove_container(pod_uid, container_name)?;
        self.topology.remove_container(pod_uid, container_name);
        Ok(())
    }

    fn explain(&self, pod: &Pod) -> PodExplanation {
        let uid = pod.metadata.uid.as_deref().unwrap_or_default();
        let containers = Self::all_containers(pod)
            .map(|(c, init)| {
                let resources = self.container_resources(pod, c);
                let effective = match self.oom_score_adj_floor {
                    Some(floor) => resources.oom_score_adj.max(floor),
                    None => resources.oom_score_adj,
                };
                ContainerExplanation {
                    name: c.name.clone(),
                    init,
                    effective_oom_score_adj: effective,
                    exclusive_cpus: self.cpu.assigned(uid, &c.name),
                    memory_nodes: self.memory.memory_nodes(uid, &c.name),
                    resources,
                }
            })
            .collect();
        PodExplanation {
            qos_class: pod_qos_class(pod),
            pod_cgroup: self.pod_cgroup(pod),
            cgroup_parent: self.pod_cgroup_parent(pod),
            pod_cgroup_config: self.pod_config(pod),
            containers,
            node_capacity: self.capacity(),
            node_allocatable: self.node_allocatable(),
        }
    }
}

impl NodeContainerManager {
    fn memory_usage_path(&self, name: &CgroupName) -> Option<PathBuf> {
        let rel = self.cgroups.literal_name(name);
        let rel = rel.trim_start_matches('/');
        let root = &self.config.cgroup_mount_root;
        if self.cgroup_v2 {
            Some(root.join(rel).join("memory.current"))
        } else {
            Some(root.join("memory").join(rel).join("memory.usage_in_bytes"))
        }
    }
}
