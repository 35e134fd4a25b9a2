//! The machine: CPUs and their topology, memory, huge pages, NUMA nodes and
//! the pid limit, read from a sysfs and a procfs root so tests can use
//! fixture trees.
//!
//! Upstream gets these from cAdvisor (`MachineInfo`) and
//! `pkg/kubelet/cm/cpumanager/topology/topology.go` (`Discover`);
//! `pkg/kubelet/cm/cadvisor/util.go` (`CapacityFromMachineInfo`) and
//! `pkg/kubelet/stats/pidlimit` turn them into capacity.

use std::collections::BTreeMap;
use std::path::Path;

use crate::cgroup::read_file;
use crate::cpuset::CpuSet;
use crate::error::{Error, Result};
use crate::resources::{HUGEPAGES_PREFIX, hugepage_unit_size};

/// A resource list in integers: `cpu` in millicores, everything else in
/// whole units (bytes for `memory`, `ephemeral-storage` and
/// `hugepages-<size>`, a count for `pid` and `pods`).
pub type ResourceList = BTreeMap<String, i64>;

/// The `pid` resource name (upstream `pidlimit.PIDs`).
pub const RESOURCE_PID: &str = "pid";

/// One logical CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuInfo {
    /// Logical CPU ID.
    pub id: usize,
    /// Physical core, unique on the machine (not sysfs's per-socket `core_id`).
    pub core: usize,
    /// Socket (physical package).
    pub socket: usize,
    /// NUMA node.
    pub numa_node: usize,
}

/// The CPU topology (upstream `topology.CPUTopology`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CpuTopology {
    cpus: Vec<CpuInfo>,
}

impl CpuTopology {
    /// A topology from its CPUs.
    pub fn new(mut cpus: Vec<CpuInfo>) -> Self {
        cpus.sort_by_key(|c| c.id);
        CpuTopology { cpus }
    }

    /// A synthetic topology numbered as Linux does on x86: the first threads
    /// of all cores are CPUs `0..cores`, their siblings `cores..2×cores`, and
    /// so on. `sockets × numa_per_socket × cores_per_numa × threads_per_core` CPUs.
    pub fn synthetic(
        sockets: usize,
        numa_per_socket: usize,
        cores_per_numa: usize,
        threads_per_core: usize,
    ) -> Self {
        let cores = sockets * numa_per_socket * cores_per_numa;
        let mut cpus = Vec::with_capacity(cores * threads_per_core);
        for t in 0..threads_per_core {
            for core in 0..cores {
                cpus.push(CpuInfo {
                    id: t * cores + core,
                    core,
                    socket: core / (numa_per_socket * cores_per_numa).max(1),
                    numa_node: core / cores_per_numa.max(1),
                });
            }
        }
        CpuTopology::new(cpus)
    }

    /// Reads `<sysfs>/devices/system/cpu/online`, each CPU's
    /// `topology/{physical_package_id,core_id}` and the NUMA nodes'
    /// `<sysfs>/devices/system/node/node<N>/cpulist` (all node 0 without them).
    pub fn from_sysfs(sysfs_root: &Path) -> Result<Self> {
        let cpu_dir = sysfs_root.join("devices/system/cpu");
        let online_path = cpu_dir.join("online");
        let online = CpuSet::parse(&read_file(&online_path)?).map_err(|e| Error::Parse {
            path: online_path.clone(),
            reason: e.to_string(),
        })?;
        let mut numa_of: BTreeMap<usize, usize> = BTreeMap::new();
        for (node, path) in numa_node_dirs(sysfs_root) {
            let list_path = path.join("cpulist");
            let list = CpuSet::parse(&read_file(&list_path)?).map_err(|e| Error::Parse {
                path: list_path.clone(),
                reason: e.to_string(),
            })?;
            for cpu in list.iter() {
                numa_of.insert(cpu, node);
            }
        }
        let mut core_index: BTreeMap<(usize, usize), usize> = BTreeMap::new();
        let mut cpus = Vec::new();
        for id in online.iter() {
            let topo = cpu_dir.join(format!("cpu{id}/topology"));
            let read_num = |f: &str| -> Result<usize> {
                let p = topo.join(f);
                let t = read_file(&p)?;
                // Some kernels report -1 for an unknown package.
                Ok(t.trim()
                    .parse::<i64>()
                    .map_err(|_| Error::Parse {
                        path: p.clone(),
                        reason: format!("not a number: {:?}", t.trim()),
                    })?
                    .max(0) as usize)
            };
            let socket = read_num("physical_package_id")?;
            let core_id = read_num("core_id")?;
            let n = core_index.len();
            let core = *core_index.entry((socket, core_id)).or_insert(n);
            cpus.push(CpuInfo {
                id,
                core,
                socket,
                numa_node: numa_of.get(&id).copied().unwrap_or(0),
            });
        }
        Ok(CpuTopology::new(cpus))
    }

    /// All CPUs, by ID.
    pub fn cpus(&self) -> &[CpuInfo] {
        &self.cpus
    }

    /// Every CPU ID.
    pub fn all(&self) -> CpuSet {
        self.cpus.iter().map(|c| c.id).collect()
    }

    /// Number of logical CPUs.
    pub fn num_cpus(&self) -> usize {
        self.cpus.len()
    }

    /// Number of physical cores.
    pub fn num_cores(&self) -> usize {
        let mut v: Vec<usize> = self.cpus.iter().map(|c| c.core).collect();
        v.sort_unstable();
        v.dedup();
        v.len()
    }

    /// Socket IDs, ascending.
    pub fn sockets(&self) -> Vec<usize> {
        let mut v: Vec<usize> = self.cpus.iter().map(|c| c.socket).collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    /// NUMA node IDs, ascending.
    pub fn numa_nodes(&self) -> Vec<usize> {
        let mut v: Vec<usize> = self.cpus.iter().map(|c| c.numa_node).collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    /// Threads per core (1 without SMT).
    pub fn cpus_per_core(&self) -> usize {
        self.num_cpus().checked_div(self.num_cores()).unwrap_or(0)
    }

    /// The CPU with this ID.
    pub fn cpu(&self, id: usize) -> Option<&CpuInfo> {
        self.cpus
            .binary_search_by_key(&id, |c| c.id)
            .ok()
            .map(|i| &self.cpus[i])
    }

    /// CPUs of a socket.
    pub fn cpus_in_socket(&self, socket: usize) -> CpuSet {
        self.cpus
            .iter()
            .filter(|c| c.socket == socket)
            .map(|c| c.id)
            .collect()
    }

    /// CPUs of a NUMA node.
    pub fn cpus_in_numa_node(&self, node: usize) -> CpuSet {
        self.cpus
            .iter()
            .filter(|c| c.numa_node == node)
            .map(|c| c.id)
            .collect()
    }

    /// CPUs of a physical core.
    pub fn cpus_in_core(&self, core: usize) -> CpuSet {
        self.cpus
            .iter()
            .filter(|c| c.core == core)
            .map(|c| c.id)
            .collect()
    }
}

fn numa_node_dirs(sysfs_root: &Path) -> Vec<(usize, std::path::PathBuf)> {
    let dir = sysfs_root.join("devices/system/node");
    let mut out: Vec<(usize, std::path::PathBuf)> = std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let n: usize = name.strip_prefix("node")?.parse().ok()?;
            Some((n, e.path()))
        })
        .collect();
    out.sort();
    out
}

/// One NUMA node's memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NumaNode {
    /// Node ID.
    pub id: usize,
    /// `MemTotal` of the node in bytes.
    pub memory_bytes: u64,
    /// Pre-allocated huge pages: page size in bytes → count.
    pub hugepages: BTreeMap<u64, u64>,
}

/// What the container manager knows about the machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MachineInfo {
    /// CPUs and their topology.
    pub topology: CpuTopology,
    /// `MemTotal` from `/proc/meminfo`, in bytes.
    pub memory_capacity_bytes: u64,
    /// Pre-allocated huge pages: page size in bytes → count.
    pub hugepages: BTreeMap<u64, u64>,
    /// NUMA nodes (one node 0 holding everything when sysfs has none).
    pub numa_nodes: Vec<NumaNode>,
    /// `min(pid_max, threads-max)` from `/proc/sys/kernel`, when readable.
    pub max_pids: Option<i64>,
}

fn meminfo_kb(path: &Path, text: &str, key: &str) -> Result<u64> {
    for line in text.lines() {
        // "MemTotal:  123 kB" or "Node 0 MemTotal:  123 kB".
        if let Some((k, v)) = line.split_once(':')
            && (k.trim() == key || k.trim().ends_with(&format!(" {key}")))
        {
            let num = v.split_whitespace().next().unwrap_or("");
            return num.parse().map_err(|_| Error::Parse {
                path: path.to_owned(),
                reason: format!("{key}: not a number: {num:?}"),
            });
        }
    }
    Err(Error::Parse {
        path: path.to_owned(),
        reason: format!("no {key} line"),
    })
}

fn hugepages_in(dir: &Path) -> Result<BTreeMap<u64, u64>> {
    let mut out = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(out);
    };
    for e in entries.flatten() {
        let Ok(name) = e.file_name().into_string() else {
            continue;
        };
        let Some(kb) = name
            .strip_prefix("hugepages-")
            .and_then(|s| s.strip_suffix("kB"))
            .and_then(|s| s.parse::<u64>().ok())
        else {
            continue;
        };
        let p = e.path().join("nr_hugepages");
        let t = read_file(&p)?;
        let n = t.trim().parse().map_err(|_| Error::Parse {
            path: p.clone(),
            reason: format!("not a number: {:?}", t.trim()),
        })?;
        out.insert(kb * 1024, n);
    }
    Ok(out)
}

impl MachineInfo {
    /// Reads the machine from `sysfs_root` (`/sys`) and `procfs_root` (`/proc`).
    pub fn read(sysfs_root: &Path, procfs_root: &Path) -> Result<Self> {
        let topology = CpuTopology::from_sysfs(sysfs_root)?;
        let meminfo = procfs_root.join("meminfo");
        let memory_capacity_bytes = meminfo_kb(&meminfo, &read_file(&meminfo)?, "MemTotal")? * 1024;
        let hugepages = hugepages_in(&sysfs_root.join("kernel/mm/hugepages"))?;
        let mut numa_nodes = Vec::new();
        for (id, dir) in numa_node_dirs(sysfs_root) {
            let mi = dir.join("meminfo");
            let memory_bytes = meminfo_kb(&mi, &read_file(&mi)?, "MemTotal")? * 1024;
            numa_nodes.push(NumaNode {
                id,
                memory_bytes,
                hugepages: hugepages_in(&dir.join("hugepages"))?,
            });
        }
        if numa_nodes.is_empty() {
            numa_nodes.push(NumaNode {
                id: 0,
                memory_bytes: memory_capacity_bytes,
                hugepages: hugepages.clone(),
            });
        }
        let read_num = |f: &str| -> Option<i64> {
            std::fs::read_to_string(procfs_root.join("sys/kernel").join(f))
                .ok()?
                .trim()
                .parse()
                .ok()
        };
        let max_pids = match (read_num("pid_max"), read_num("threads-max")) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        Ok(MachineInfo {
            topology,
            memory_capacity_bytes,
            hugepages,
            numa_nodes,
            max_pids,
        })
    }

    /// Reads this machine (`/sys`, `/proc`).
    pub fn host() -> Result<Self> {
        Self::read(Path::new("/sys"), Path::new("/proc"))
    }

    /// A synthetic machine: the topology, memory split evenly over its NUMA nodes.
    pub fn synthetic(topology: CpuTopology, memory_capacity_bytes: u64) -> Self {
        let nodes = topology.numa_nodes();
        let per = memory_capacity_bytes / (nodes.len().max(1) as u64);
        MachineInfo {
            numa_nodes: nodes
                .iter()
                .map(|&id| NumaNode {
                    id,
                    memory_bytes: per,
                    hugepages: BTreeMap::new(),
                })
                .collect(),
            topology,
            memory_capacity_bytes,
            hugepages: BTreeMap::new(),
            max_pids: None,
        }
    }

    /// The node's capacity (upstream `CapacityFromMachineInfo` plus the
    /// `pid` resource): `cpu` (millicores), `memory`, `hugepages-<size>`, `pid`.
    pub fn capacity(&self) -> ResourceList {
        let mut c = ResourceList::new();
        c.insert("cpu".into(), self.topology.num_cpus() as i64 * 1000);
        c.insert(
            "memory".into(),
            i64::try_from(self.memory_capacity_bytes).unwrap_or(i64::MAX),
        );
        for (size, count) in &self.hugepages {
            c.insert(
                format!("{HUGEPAGES_PREFIX}{}", hugepage_resource_suffix(*size)),
                i64::try_from(size.saturating_mul(*count)).unwrap_or(i64::MAX),
            );
        }
        if let Some(p) = self.max_pids {
            c.insert(RESOURCE_PID.into(), p);
        }
        c
    }
}

/// The resource-name suffix for a page size: 2097152 → `"2Mi"`.
pub fn hugepage_resource_suffix(bytes: u64) -> String {
    // hugepage_unit_size gives "2MB"; resource names use binary SI ("2Mi").
    let unit = hugepage_unit_size(bytes);
    for (from, to) in [
        ("KB", "Ki"),
        ("MB", "Mi"),
        ("GB", "Gi"),
        ("TB", "Ti"),
        ("PB", "Pi"),
    ] {
        if let Some(n) = unit.strip_suffix(from) {
            return format!("{n}{to}");
        }
    }
    unit.trim_end_matches('B').to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fixture sysfs/procfs: 2 sockets × 2 cores × 2 threads, 2 NUMA nodes, 2 MiB pages.
    pub(crate) fn fixture() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        let w = |p: &str, s: &str| {
            let p = d.path().join(p);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, s).unwrap();
        };
        w("sys/devices/system/cpu/online", "0-7\n");
        let topo = CpuTopology::synthetic(2, 1, 2, 2);
        for c in topo.cpus() {
            w(
                &format!(
                    "sys/devices/system/cpu/cpu{}/topology/physical_package_id",
                    c.id
                ),
                &format!("{}\n", c.socket),
            );
            // sysfs core IDs repeat across sockets.
            w(
                &format!("sys/devices/system/cpu/cpu{}/topology/core_id", c.id),
                &format!("{}\n", c.core % 2),
            );
        }
        w("sys/devices/system/node/node0/cpulist", "0-1,4-5\n");
        w("sys/devices/system/node/node1/cpulist", "2-3,6-7\n");
        w(
            "sys/devices/system/node/node0/meminfo",
            "Node 0 MemTotal:  4194304 kB\nNode 0 MemFree: 1 kB\n",
        );
        w(
            "sys/devices/system/node/node1/meminfo",
            "Node 1 MemTotal:  4194304 kB\n",
        );
        w(
            "sys/devices/system/node/node0/hugepages/hugepages-2048kB/nr_hugepages",
            "8\n",
        );
        w(
            "sys/devices/system/node/node1/hugepages/hugepages-2048kB/nr_hugepages",
            "0\n",
        );
        w(
            "sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages",
            "8\n",
        );
        w(
            "sys/kernel/mm/hugepages/hugepages-1048576kB/nr_hugepages",
            "0\n",
        );
        w(
            "proc/meminfo",
            "MemTotal:        8388608 kB\nMemFree:  100 kB\n",
        );
        w("proc/sys/kernel/pid_max", "4194304\n");
        w("proc/sys/kernel/threads-max", "63704\n");
        d
    }

    #[test]
    fn reads_fixture_machine() {
        let d = fixture();
        let m = MachineInfo::read(&d.path().join("sys"), &d.path().join("proc")).unwrap();
        assert_eq!(m.topology, CpuTopology::synthetic(2, 1, 2, 2));
        assert_eq!(m.topology.num_cores(), 4);
        assert_eq!(m.topology.cpus_per_core(), 2);
        assert_eq!(m.topology.cpus_in_socket(1).to_string(), "2-3,6-7");
        assert_eq!(m.topology.cpus_in_core(0).to_string(), "0,4");
        assert_eq!(m.memory_capacity_bytes, 8 << 30);
        assert_eq!(m.numa_nodes.len(), 2);
        assert_eq!(m.numa_nodes[0].hugepages.get(&(2 << 20)), Some(&8));
        assert_eq!(m.max_pids, Some(63704));
        let cap = m.capacity();
        assert_eq!(cap["cpu"], 8000);
        assert_eq!(cap["memory"], 8 << 30);
        assert_eq!(cap["hugepages-2Mi"], 16 << 20);
        assert_eq!(cap["hugepages-1Gi"], 0);
        assert_eq!(cap["pid"], 63704);
    }

    #[test]
    fn missing_files_are_named() {
        let d = fixture();
        std::fs::remove_file(
            d.path()
                .join("sys/devices/system/cpu/cpu3/topology/core_id"),
        )
        .unwrap();
        let err = MachineInfo::read(&d.path().join("sys"), &d.path().join("proc")).unwrap_err();
        assert!(err.to_string().contains("cpu3/topology/core_id"), "{err}");
        std::fs::write(d.path().join("proc/meminfo"), "nothing\n").unwrap();
        let err = CpuTopology::from_sysfs(&d.path().join("nope")).unwrap_err();
        assert!(
            err.to_string().contains("nope/devices/system/cpu/online"),
            "{err}"
        );
    }

    #[test]
    fn synthetic_layouts() {
        let t = CpuTopology::synthetic(1, 1, 2, 1);
        assert_eq!((t.num_cpus(), t.num_cores(), t.sockets().len()), (2, 2, 1));
        let t = CpuTopology::synthetic(2, 1, 8, 2);
        assert_eq!(
            (t.num_cpus(), t.num_cores(), t.sockets().len()),
            (32, 16, 2)
        );
        assert_eq!(t.cpus_in_core(3).to_string(), "3,19");
        let t = CpuTopology::synthetic(2, 2, 32, 2);
        assert_eq!((t.num_cpus(), t.numa_nodes().len()), (256, 4));
        assert_eq!(t.cpus_in_numa_node(1).len(), 64);
    }

    #[test]
    fn reads_this_host() {
        // Whatever the host is, it has at least one CPU and some memory.
        let m = MachineInfo::host().unwrap();
        assert!(m.topology.num_cpus() >= 1);
        assert!(m.memory_capacity_bytes > 0);
    }
}
