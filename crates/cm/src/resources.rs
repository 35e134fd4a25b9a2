//! Requests and limits turned into cgroup values: the pod cgroup's
//! [`ResourceConfig`] and a container's CRI `LinuxContainerResources`.
//!
//! Upstream: `pkg/kubelet/cm/helpers_linux.go` (`MilliCPUToShares`,
//! `MilliCPUToQuota`, `ResourceConfigForPod`, `HugePageLimits`) and
//! `pkg/kubelet/kuberuntime/kuberuntime_container_linux.go`
//! (`generateLinuxContainerResources`, `calculateLinuxResources`,
//! `GetHugepageLimitsFromResources`).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::OnceLock;

use k8s_openapi::api::core::v1::{Container, Pod};
use kubelet_cri_client::api::{HugepageLimit, LinuxContainerResources};

use crate::cgroup_name::CgroupName;
use crate::podres::{self, has, milli_of, milli_to_value};
use crate::qos::{QosClass, container_oom_score_adj, pod_qos_class};
use crate::quantity;

/// Fewest cpu shares a cgroup gets (`MinShares`).
pub const MIN_SHARES: u64 = 2;
/// Most cpu shares a cgroup gets (`MaxShares`).
pub const MAX_SHARES: u64 = 262_144;
/// Shares per whole CPU (`SharesPerCPU`).
pub const SHARES_PER_CPU: u64 = 1024;
/// Default CFS period in microseconds (`QuotaPeriod`, 100 ms).
pub const QUOTA_PERIOD_US: u64 = 100_000;
/// Smallest CFS quota in microseconds (`MinQuotaPeriod`, 1 ms).
pub const MIN_QUOTA_PERIOD_US: i64 = 1000;
/// Prefix of huge page resource names (`hugepages-2Mi`).
pub const HUGEPAGES_PREFIX: &str = "hugepages-";

/// Cpu shares for a milli-CPU amount: 0 gives [`MIN_SHARES`], otherwise
/// `m × 1024 / 1000` clamped to `[2, 262144]` (upstream `MilliCPUToShares`).
pub fn milli_cpu_to_shares(milli_cpu: i64) -> u64 {
    if milli_cpu <= 0 {
        return MIN_SHARES;
    }
    let shares = (i128::from(milli_cpu) * i128::from(SHARES_PER_CPU)) / 1000;
    u64::try_from(shares)
        .unwrap_or(MAX_SHARES)
        .clamp(MIN_SHARES, MAX_SHARES)
}

/// CFS quota for a milli-CPU limit over `period_us`: 0 for no limit,
/// otherwise `m × period / 1000`, at least 1000 µs (upstream `MilliCPUToQuota`).
pub fn milli_cpu_to_quota(milli_cpu: i64, period_us: u64) -> i64 {
    if milli_cpu <= 0 {
        return 0;
    }
    let quota = (i128::from(milli_cpu) * i128::from(period_us)) / 1000;
    i64::try_from(quota)
        .unwrap_or(i64::MAX)
        .max(MIN_QUOTA_PERIOD_US)
}

/// cgroup v2 `cpu.weight` for cgroup v1 shares, runc's classic mapping
/// `1 + (shares - 2) × 9999 / 262142` (`[2, 262144]` onto `[1, 10000]`).
pub fn cpu_shares_to_weight(shares: u64) -> u64 {
    let s = shares.clamp(MIN_SHARES, MAX_SHARES);
    1 + ((s - 2) * 9999) / 262_142
}

/// The unit size string of a huge page size in bytes, as cgroups spell it:
/// 2097152 → `"2MB"`, 1073741824 → `"1GB"` (upstream `HugePageUnitSizeFromByteSize`).
pub fn hugepage_unit_size(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KB", "MB", "GB", "TB", "PB"];
    let mut size = bytes;
    let mut idx = 0;
    while size >= 1024 && size.is_multiple_of(1024) && idx + 1 < UNITS.len() {
        size /= 1024;
        idx += 1;
    }
    format!("{size}{}", UNITS[idx])
}

/// The page size string of a `hugepages-<size>` resource name (`hugepages-2Mi` → `"2MB"`).
pub fn hugepage_size_of_resource(name: &str) -> Option<String> {
    let size = name.strip_prefix(HUGEPAGES_PREFIX)?;
    let bytes = quantity::value(size).ok()?;
    u64::try_from(bytes)
        .ok()
        .filter(|b| *b > 0)
        .map(hugepage_unit_size)
}

/// The host's huge page sizes from `<sysfs>/kernel/mm/hugepages/hugepages-<n>kB`
/// (upstream reads the same directory through runc's `HugePageSizes`), sorted.
pub fn hugepage_sizes_from(sysfs_root: &Path) -> Vec<String> {
    let dir = sysfs_root.join("kernel/mm/hugepages");
    let mut sizes: Vec<(u64, String)> = std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let kb: u64 = name
                .strip_prefix("hugepages-")?
                .strip_suffix("kB")?
                .parse()
                .ok()?;
            let bytes = kb.checked_mul(1024)?;
            Some((bytes, hugepage_unit_size(bytes)))
        })
        .collect();
    sizes.sort();
    sizes.into_iter().map(|(_, s)| s).collect()
}

/// This host's huge page sizes, read once from `/sys`.
pub fn host_hugepage_sizes() -> &'static [String] {
    static SIZES: OnceLock<Vec<String>> = OnceLock::new();
    SIZES.get_or_init(|| hugepage_sizes_from(Path::new("/sys")))
}

/// The values a pod (or QoS, or node) cgroup gets (upstream `ResourceConfig`).
/// `None` leaves the kernel's value alone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResourceConfig {
    /// `cpu.shares` (v1); written as `cpu.weight` on v2 through [`cpu_shares_to_weight`].
    pub cpu_shares: Option<u64>,
    /// `cpu.cfs_quota_us` (v1) / first field of `cpu.max` (v2); -1 is unlimited.
    pub cpu_quota: Option<i64>,
    /// `cpu.cfs_period_us` (v1) / second field of `cpu.max` (v2).
    pub cpu_period: Option<u64>,
    /// `memory.limit_in_bytes` (v1) / `memory.max` (v2); -1 is unlimited.
    pub memory_limit: Option<i64>,
    /// `pids.max`; -1 is unlimited.
    pub pids_limit: Option<i64>,
    /// Huge page size (`"2MB"`) → `hugetlb.<size>.limit_in_bytes`.
    pub hugepage_limits: BTreeMap<String, i64>,
}

impl ResourceConfig {
    /// What the runtime (runc) writes into a container's own cgroup for the
    /// CRI's `LinuxContainerResources`: only the non-zero fields (runc's
    /// `fs.CpuGroup.Set` and `fs.MemoryGroup.Set` skip zeros). The cpuset is
    /// not part of a `ResourceConfig`; see `cpuset_cpus` on the CRI message.
    pub fn from_linux_resources(r: &LinuxContainerResources) -> Self {
        let nonzero = |v: i64| (v != 0).then_some(v);
        Self {
            cpu_shares: nonzero(r.cpu_shares).and_then(|v| u64::try_from(v).ok()),
            cpu_quota: nonzero(r.cpu_quota),
            cpu_period: nonzero(r.cpu_period).and_then(|v| u64::try_from(v).ok()),
            memory_limit: nonzero(r.memory_limit_in_bytes),
            pids_limit: None,
            hugepage_limits: r
                .hugepage_limits
                .iter()
                .map(|h| {
                    (
                        h.page_size.clone(),
                        i64::try_from(h.limit).unwrap_or(i64::MAX),
                    )
                })
                .collect(),
        }
    }
}

/// Huge page limits from a resource list: page size → bytes (upstream `HugePageLimits`).
fn hugepage_limits_of(list: &podres::MilliList<'_>) -> BTreeMap<String, i64> {
    let mut out = BTreeMap::new();
    for (name, milli) in list.iter() {
        if let Some(size) = hugepage_size_of_resource(name) {
            *out.entry(size).or_insert(0) += milli_to_value(milli);
        }
    }
    out
}

/// Pod-level cgroup config from the pod's requests and limits (upstream
/// `ResourceConfigForPod`).
///
/// - Guaranteed: shares from requests, quota and period from limits, memory limit.
/// - Burstable: shares; quota and period only when every container has a cpu
///   limit; memory only when every container has a memory limit.
/// - BestEffort: shares = 2 only.
///
/// `enforce_cpu_limits = false` (kubelet `cpuCFSQuota: false`) sets the quota
/// to -1. Huge page limits come from the requests. `pids_limit` is left to the
/// caller (the kubelet's `podPidsLimit`).
pub fn pod_resource_config(
    pod: &Pod,
    enforce_cpu_limits: bool,
    cpu_period_us: u64,
) -> ResourceConfig {
    let reqs = podres::pod_requests(pod);
    let (limits, cpu_declared, mem_declared) = podres::pod_limits(pod);
    let cpu_requests = reqs.get("cpu").copied().unwrap_or(0);
    let cpu_limits = limits.get("cpu").copied().unwrap_or(0);
    let memory_limits = milli_to_value(limits.get("memory").copied().unwrap_or(0));

    let cpu_shares = milli_cpu_to_shares(cpu_requests);
    let mut cpu_quota = milli_cpu_to_quota(cpu_limits, cpu_period_us);
    if !enforce_cpu_limits {
        cpu_quota = -1;
    }
    let mut cfg = ResourceConfig {
        hugepage_limits: hugepage_limits_of(&reqs),
        ..ResourceConfig::default()
    };
    match pod_qos_class(pod) {
        QosClass::Guaranteed => {
            cfg.cpu_shares = Some(cpu_shares);
            cfg.cpu_quota = Some(cpu_quota);
            cfg.cpu_period = Some(cpu_period_us);
            cfg.memory_limit = Some(memory_limits);
        }
        QosClass::Burstable => {
            cfg.cpu_shares = Some(cpu_shares);
            if cpu_declared {
                cfg.cpu_quota = Some(cpu_quota);
                cfg.cpu_period = Some(cpu_period_us);
            }
            if mem_declared {
                cfg.memory_limit = Some(memory_limits);
            }
        }
        QosClass::BestEffort => cfg.cpu_shares = Some(MIN_SHARES),
    }
    cfg
}

/// Node facts and kubelet settings that [`container_linux_resources`] needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerResourceOptions {
    /// The node's memory capacity, for the Burstable OOM score.
    pub memory_capacity_bytes: u64,
    /// kubelet `cpuCFSQuota` (default true): set CFS quota and period.
    pub cpu_cfs_quota: bool,
    /// kubelet `cpuCFSQuotaPeriod` in microseconds (default 100000).
    pub cpu_cfs_quota_period_us: u64,
    /// The node runs cgroup v2 (unified): adds `memory.oom.group = 1`.
    pub cgroup_v2: bool,
}

impl Default for ContainerResourceOptions {
    fn default() -> Self {
        ContainerResourceOptions {
            memory_capacity_bytes: 0,
            cpu_cfs_quota: true,
            cpu_cfs_quota_period_us: QUOTA_PERIOD_US,
            cgroup_v2: false,
        }
    }
}

/// What the CRI gets for one container (upstream
/// `generateLinuxContainerResources`), with this host's huge page sizes.
///
/// See [`container_linux_resources_with_hugepage_sizes`].
pub fn container_linux_resources(
    pod: &Pod,
    container: &Container,
    opts: &ContainerResourceOptions,
) -> LinuxContainerResources {
    container_linux_resources_with_hugepage_sizes(pod, container, opts, host_hugepage_sizes())
}

/// What the CRI gets for one container, given the host's huge page sizes.
///
/// - `cpu_shares` from the cpu request; with no request but a limit, from the limit.
/// - `memory_limit_in_bytes` = the memory limit when non-zero.
/// - `cpu_quota`/`cpu_period` from the cpu limit when `cpu_cfs_quota` (quota 0
///   when there is no limit, as upstream).
/// - `oom_score_adj` from [`container_oom_score_adj`].
/// - `hugepage_limits`: 0 for every host page size, unless the container's
///   limits set it.
/// - `unified["memory.oom.group"] = "1"` on cgroup v2.
///
/// Not done: MemoryQoS (`memory.min`/`memory.high`, alpha) and NodeSwap.
pub fn container_linux_resources_with_hugepage_sizes(
    pod: &Pod,
    container: &Container,
    opts: &ContainerResourceOptions,
    host_hugepage_sizes: &[String],
) -> LinuxContainerResources {
    let res = container.resources.as_ref();
    let requests = res.and_then(|r| r.requests.as_ref());
    let limits = res.and_then(|r| r.limits.as_ref());
    let cpu_limit = milli_of(limits, "cpu");
    let cpu_request = milli_of(requests, "cpu");
    let memory_limit = milli_to_value(milli_of(limits, "memory"));

    let shares = if !has(requests, "cpu") && cpu_limit != 0 {
        milli_cpu_to_shares(cpu_limit)
    } else {
        milli_cpu_to_shares(cpu_request)
    };
    let mut lcr = LinuxContainerResources {
        cpu_shares: i64::try_from(shares).unwrap_or(i64::MAX),
        ..LinuxContainerResources::default()
    };
    if memory_limit != 0 {
        lcr.memory_limit_in_bytes = memory_limit;
    }
    if opts.cpu_cfs_quota {
        let period = opts.cpu_cfs_quota_period_us;
        lcr.cpu_quota = milli_cpu_to_quota(cpu_limit, period);
        lcr.cpu_period = i64::try_from(period).unwrap_or(i64::MAX);
    }
    if opts.cgroup_v2 {
        lcr.unified = HashMap::from([("memory.oom.group".to_owned(), "1".to_owned())]);
    }
    lcr.oom_score_adj = container_oom_score_adj(pod, container, opts.memory_capacity_bytes);

    let mut required: BTreeMap<String, u64> = BTreeMap::new();
    for (name, q) in limits.into_iter().flatten() {
        if let Some(size) = hugepage_size_of_resource(name) {
            let v = milli_to_value(podres::parse_milli(name, q));
            required.insert(size, u64::try_from(v).unwrap_or(0));
        }
    }
    lcr.hugepage_limits = host_hugepage_sizes
        .iter()
        .map(|size| HugepageLimit {
            page_size: size.clone(),
            limit: required.get(size).copied().unwrap_or(0),
        })
        .collect();
    lcr
}

/// The QoS-level cgroup under `cgroup_root`: `kubepods` (Guaranteed),
/// `kubepods/burstable`, `kubepods/besteffort`.
pub fn qos_cgroup_name(cgroup_root: &CgroupName, qos: QosClass) -> CgroupName {
    let kubepods = cgroup_root.child(KUBEPODS);
    match qos {
        QosClass::Guaranteed => kubepods,
        QosClass::Burstable => kubepods.child("burstable"),
        QosClass::BestEffort => kubepods.child("besteffort"),
    }
}

/// The node-allocatable cgroup's name under the cgroup root.
pub const KUBEPODS: &str = "kubepods";
/// Prefix of a pod cgroup's name (`pod<uid>`).
pub const POD_CGROUP_PREFIX: &str = "pod";

/// The pod's cgroup under the cgroup root: `kubepods/pod<uid>` (Guaranteed),
/// `kubepods/burstable/pod<uid>`, `kubepods/besteffort/pod<uid>` (upstream
/// `podContainerManagerImpl.GetPodContainerName`). A pod without a UID gets
/// `pod` alone; callers should not create cgroups for such pods.
pub fn pod_cgroup_name(cgroup_root: &CgroupName, pod: &Pod) -> CgroupName {
    let uid = pod.metadata.uid.as_deref().unwrap_or_default();
    let mut parts = Vec::with_capacity(cgroup_root.parts().len() + 3);
    parts.extend(cgroup_root.parts().iter().cloned());
    parts.push(KUBEPODS.to_owned());
    match pod_qos_class(pod) {
        QosClass::Guaranteed => {}
        QosClass::Burstable => parts.push("burstable".to_owned()),
        QosClass::BestEffort => parts.push("besteffort".to_owned()),
    }
    let mut pod_part = String::with_capacity(POD_CGROUP_PREFIX.len() + uid.len());
    pod_part.push_str(POD_CGROUP_PREFIX);
    pod_part.push_str(uid);
    parts.push(pod_part);
    CgroupName::new(parts)
}

/// Checks that every quantity in the pod's containers, init containers and
/// overhead parses; the computing functions treat a bad one as zero.
pub fn validate_pod_resources(pod: &Pod) -> crate::Result<()> {
    let Some(spec) = pod.spec.as_ref() else {
        return Ok(());
    };
    let lists = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .filter_map(|c| c.resources.as_ref())
        .chain(spec.resources.as_ref())
        .flat_map(|r| [r.requests.as_ref(), r.limits.as_ref()])
        .chain([spec.overhead.as_ref()])
        .flatten();
    for list in lists {
        for q in list.values() {
            quantity::milli_value(&q.0)?;
        }
    }
    Ok(())
}

/// Pod cgroups and container resources without the CPU, memory and
/// topology managers: the pod's cgroup under `cgroup_root` (its QoS class
/// below `kubepods` when `cgroups_per_qos`), spelled by `driver`, and
/// [`container_linux_resources`]. For a runtime manager used without a
/// [`ContainerManager`](crate::ContainerManager) (tests, tools, a node
/// agent that manages no cgroups of its own).
#[derive(Debug, Clone)]
pub struct StaticResources {
    /// The cgroup everything lives under (upstream `--cgroup-root`).
    pub cgroup_root: CgroupName,
    /// Whether pods get QoS-level cgroups (`kubepods/burstable/...`).
    pub cgroups_per_qos: bool,
    /// How cgroup names are spelled for the runtime.
    pub driver: crate::CgroupDriverKind,
    /// How container resources are computed.
    pub options: ContainerResourceOptions,
}

impl Default for StaticResources {
    fn default() -> Self {
        Self {
            cgroup_root: CgroupName::new(Vec::<String>::new()),
            cgroups_per_qos: true,
            driver: crate::CgroupDriverKind::Cgroupfs,
            options: ContainerResourceOptions::default(),
        }
    }
}

impl kubelet_container::ContainerResources for StaticResources {
    fn pod_cgroup_parent(&self, pod: &Pod) -> String {
        let name = if self.cgroups_per_qos {
            pod_cgroup_name(&self.cgroup_root, pod)
        } else {
            self.cgroup_root.clone()
        };
        match self.driver {
            crate::CgroupDriverKind::Cgroupfs => name.to_cgroupfs(),
            crate::CgroupDriverKind::Systemd => name.to_systemd(),
        }
    }

    fn container_resources(&self, pod: &Pod, container: &Container) -> LinuxContainerResources {
        container_linux_resources(pod, container, &self.options)
    }
}
