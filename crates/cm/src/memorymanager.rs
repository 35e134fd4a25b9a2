//! The memory manager: policies `None` and `Static` (NUMA-aware memory and
//! huge page reservations for Guaranteed pods), with its own checkpoint.
//!
//! Upstream: `pkg/kubelet/cm/memorymanager/{memory_manager.go,
//! policy_static.go,policy_none.go,state/*}`. Not done: reuse of init
//! containers' memory by later containers, and the check that the reserved
//! memory equals kube-reserved + system-reserved + the eviction threshold.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Mutex, MutexGuard, PoisonError};

use k8s_openapi::api::core::v1::{Container, Pod};
use serde::{Deserialize, Serialize};

use crate::checkpoint::Checkpoint;
use crate::error::{Error, Result};
use crate::machine::{MachineInfo, hugepage_resource_suffix};
use crate::podres::{milli_of, milli_to_value};
use crate::qos::{QosClass, pod_qos_class};
use crate::resources::{HUGEPAGES_PREFIX, hugepage_size_of_resource};
use crate::topologymanager::{
    HintProvider, NumaMask, ProviderHints, TopologyHint, TopologyPolicy, merge_hints,
};

/// The checkpoint's file name under the kubelet root directory.
pub const MEMORY_MANAGER_STATE_FILE: &str = "memory_manager_state";

/// One resource's accounting on one NUMA node (upstream `MemoryTable`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct MemoryTable {
    /// Bytes on the node.
    pub total: u64,
    /// Bytes reserved for the system (`reservedMemory`).
    pub system_reserved: u64,
    /// `total − system_reserved`.
    pub allocatable: u64,
    /// Bytes given to containers.
    pub reserved: u64,
    /// `allocatable − reserved`.
    pub free: u64,
}

/// One NUMA node's state (upstream `NUMANodeState`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct NumaNodeState {
    /// Blocks placed on this node.
    pub number_of_assignments: u64,
    /// Resource (`memory`, `hugepages-2Mi`) → accounting.
    pub memory_map: BTreeMap<String, MemoryTable>,
    /// The group of nodes this node is allocated with (itself alone when single).
    pub cells: Vec<usize>,
}

/// Memory given to a container on some NUMA nodes (upstream `Block`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Block {
    /// NUMA nodes.
    pub numa_affinity: Vec<usize>,
    /// Resource name.
    pub resource: String,
    /// Bytes.
    pub size: u64,
}

/// The memory manager's state, as checkpointed.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct MemoryManagerState {
    /// The policy that wrote this state.
    pub policy_name: String,
    /// NUMA node → state.
    pub machine_state: BTreeMap<usize, NumaNodeState>,
    /// Pod UID → container name → blocks.
    pub entries: BTreeMap<String, BTreeMap<String, Vec<Block>>>,
}

/// The memory manager policy (kubelet `memoryManagerPolicy`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemoryPolicy {
    /// No reservations.
    None,
    /// NUMA-aware reservations for Guaranteed pods.
    Static {
        /// `reservedMemory`: NUMA node → resource → bytes.
        reserved: BTreeMap<usize, BTreeMap<String, u64>>,
    },
}

impl MemoryPolicy {
    /// `"None"` or `"Static"`, as upstream spells them.
    pub fn name(&self) -> &'static str {
        match self {
            MemoryPolicy::None => "None",
            MemoryPolicy::Static { .. } => "Static",
        }
    }
}

/// The memory manager.
pub struct MemoryManager {
    policy: MemoryPolicy,
    numa_nodes: Vec<usize>,
    checkpoint: Option<Checkpoint>,
    state: Mutex<MemoryManagerState>,
}

impl std::fmt::Debug for MemoryManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryManager")
            .field("policy", &self.policy.name())
            .finish()
    }
}

/// Memory and huge page requests of a Guaranteed container, in bytes.
fn requested(pod: &Pod, container: &Container) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    let reqs = container
        .resources
        .as_ref()
        .and_then(|r| r.requests.as_ref());
    for (name, _) in reqs.into_iter().flatten() {
        if name == "memory" || hugepage_size_of_resource(name).is_some() {
            let v = milli_to_value(milli_of(reqs, name));
            if let Ok(v) = u64::try_from(v)
                && v > 0
            {
                out.insert(name.clone(), v);
            }
        }
    }
    let _ = pod;
    out
}

impl MemoryManager {
    /// A memory manager for `machine`, checkpointed in
    /// `state_dir/memory_manager_state` when given. `Static` needs some
    /// reserved memory (upstream refuses zero) on nodes that exist.
    pub fn new(
        policy: MemoryPolicy,
        machine: &MachineInfo,
        state_dir: Option<&Path>,
    ) -> Result<Self> {
        let numa_nodes: Vec<usize> = machine.numa_nodes.iter().map(|n| n.id).collect();
        let mut fresh = MemoryManagerState {
            policy_name: policy.name().to_owned(),
            ..Default::default()
        };
        if let MemoryPolicy::Static { reserved } = &policy {
            let total: u64 = reserved.values().filter_map(|r| r.get("memory")).sum();
            if total == 0 {
                return Err(Error::InvalidConfig(
                    "the Static memory manager policy requires reserved memory (reservedMemory) greater than zero".into(),
                ));
            }
            for node in reserved.keys() {
                if !numa_nodes.contains(node) {
                    return Err(Error::InvalidConfig(format!(
                        "reserved memory for NUMA node {node}, which does not exist"
                    )));
                }
            }
            for n in &machine.numa_nodes {
                let mut map = BTreeMap::new();
                let mut add = |name: String, total: u64| {
                    let sys = reserved
                        .get(&n.id)
                        .and_then(|r| r.get(&name))
                        .copied()
                        .unwrap_or(0);
                    let alloc = total.saturating_sub(sys);
                    map.insert(
                        name,
                        MemoryTable {
                            total,
                            system_reserved: sys,
                            allocatable: alloc,
                            reserved: 0,
                            free: alloc,
                        },
                    );
                };
                add("memory".into(), n.memory_bytes);
                for (size, count) in &n.hugepages {
                    add(
                        format!("{HUGEPAGES_PREFIX}{}", hugepage_resource_suffix(*size)),
                        size * count,
                    );
                }
                fresh.machine_state.insert(
                    n.id,
                    NumaNodeState {
                        number_of_assignments: 0,
                        memory_map: map,
                        cells: vec![n.id],
                    },
                );
            }
        }
        let checkpoint = state_dir
            .map(|d| Checkpoint::new(d.join(MEMORY_MANAGER_STATE_FILE), "memory_manager_state"));
        let state = match checkpoint
            .as_ref()
            .map(|c| c.load::<MemoryManagerState>())
            .transpose()?
            .flatten()
        {
            Some(s) => {
                let path = checkpoint
                    .as_ref()
                    .map(|c| c.path().to_owned())
                    .unwrap_or_default();
                let refuse = |what: String| Error::Checkpoint {
                    reason: format!(
                        "{what}: drain this node and delete the memory manager checkpoint file {} before restarting the kubelet",
                        path.display()
                    ),
                    path: path.clone(),
                };
                if s.policy_name != policy.name() {
                    return Err(refuse(format!(
                        "configured policy {:?} differs from state checkpoint policy {:?}",
                        policy.name(),
                        s.policy_name
                    )));
                }
                // The machine or the reservation changed: totals must still match.
                let totals =
                    |m: &BTreeMap<usize, NumaNodeState>| -> Vec<(usize, String, u64, u64)> {
                        m.iter()
                            .flat_map(|(n, st)| {
                                st.memory_map
                                    .iter()
                                    .map(move |(r, t)| (*n, r.clone(), t.total, t.system_reserved))
                            })
                            .collect()
                    };
                if totals(&s.machine_state) != totals(&fresh.machine_state) {
                    return Err(refuse(
                        "the machine state in the checkpoint does not match this machine".into(),
                    ));
                }
                s
            }
            None => fresh,
        };
        let m = MemoryManager {
            policy,
            numa_nodes,
            checkpoint,
            state: Mutex::new(state),
        };
        m.persist()?;
        Ok(m)
    }

    fn lock(&self) -> MutexGuard<'_, MemoryManagerState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn persist(&self) -> Result<()> {
        if let Some(c) = &self.checkpoint {
            let s = self.lock().clone();
            c.store(&s)?;
        }
        Ok(())
    }

    /// The policy.
    pub fn policy(&self) -> &MemoryPolicy {
        &self.policy
    }

    /// A copy of the state.
    pub fn state(&self) -> MemoryManagerState {
        self.lock().clone()
    }

    /// The blocks of a container.
    pub fn blocks(&self, pod_uid: &str, container: &str) -> Option<Vec<Block>> {
        self.lock().entries.get(pod_uid)?.get(container).cloned()
    }

    /// The container's `cpuset.mems` (NUMA nodes of its blocks), if pinned.
    pub fn memory_nodes(&self, pod_uid: &str, container: &str) -> Option<String> {
        let blocks = self.blocks(pod_uid, container)?;
        let mut nodes: Vec<usize> = blocks
            .iter()
            .flat_map(|b| b.numa_affinity.iter().copied())
            .collect();
        nodes.sort_unstable();
        nodes.dedup();
        Some(crate::cpuset::CpuSet::of(nodes).to_string())
    }

    fn calculate_hints(
        &self,
        s: &MemoryManagerState,
        req: &BTreeMap<String, u64>,
    ) -> BTreeMap<String, Vec<TopologyHint>> {
        let mut min_size = self.numa_nodes.len() as u32;
        let mut masks = Vec::new();
        for mask in NumaMask::combinations(&self.numa_nodes) {
            let bits = mask.nodes();
            let sum = |f: fn(&MemoryTable) -> u64, r: &str| -> u64 {
                bits.iter()
                    .filter_map(|n| s.machine_state.get(n)?.memory_map.get(r))
                    .map(f)
                    .sum()
            };
            if req
                .iter()
                .any(|(r, size)| sum(|t| t.allocatable, r) < *size)
            {
                continue;
            }
            min_size = min_size.min(mask.count());
            let single = bits.len() == 1;
            if single
                && s.machine_state
                    .get(&bits[0])
                    .is_some_and(|st| st.cells.len() > 1)
            {
                continue;
            }
            let conflict = !single
                && bits.iter().any(|n| {
                    s.machine_state.get(n).is_some_and(|st| {
                        st.number_of_assignments > 0 && (st.cells.len() == 1 || st.cells != bits)
                    })
                });
            if conflict {
                continue;
            }
            if req.iter().any(|(r, size)| sum(|t| t.free, r) < *size) {
                continue;
            }
            masks.push(mask);
        }
        req.keys()
            .map(|r| {
                let hints = masks
                    .iter()
                    .map(|m| TopologyHint {
                        numa_affinity: Some(*m),
                        preferred: m.count() == min_size,
                    })
                    .collect();
                (r.clone(), hints)
            })
            .collect()
    }

    fn satisfies(s: &MemoryManagerState, mask: NumaMask, req: &BTreeMap<String, u64>) -> bool {
        req.iter().all(|(r, size)| {
            mask.nodes()
                .iter()
                .filter_map(|n| s.machine_state.get(n)?.memory_map.get(r))
                .map(|t| t.free)
                .sum::<u64>()
                >= *size
        })
    }

    fn violates(s: &MemoryManagerState, mask: NumaMask) -> bool {
        let bits = mask.nodes();
        if bits.len() == 1 {
            return s
                .machine_state
                .get(&bits[0])
                .is_some_and(|st| st.cells.len() > 1);
        }
        bits.iter().any(|n| {
            s.machine_state
                .get(n)
                .is_some_and(|st| st.number_of_assignments > 0 && st.cells != bits)
        })
    }

    /// Reserves memory for a Guaranteed container along `hint` (upstream
    /// `staticPolicy.Allocate`): the hint, or the best default hint when it
    /// has no affinity, widened when it cannot hold the request.
    pub fn allocate(
        &self,
        pod: &Pod,
        container: &Container,
        hint: Option<&TopologyHint>,
    ) -> Result<Option<Vec<Block>>> {
        if matches!(self.policy, MemoryPolicy::None) || pod_qos_class(pod) != QosClass::Guaranteed {
            return Ok(None);
        }
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let req = requested(pod, container);
        if req.is_empty() {
            return Ok(None);
        }
        let blocks = {
            let mut s = self.lock();
            if let Some(b) = s.entries.get(&uid).and_then(|c| c.get(&container.name)) {
                return Ok(Some(b.clone()));
            }
            let fail = |msg: &str| Error::Admission {
                reason: "UnexpectedAdmissionError",
                message: format!("[memorymanager] {msg}"),
            };
            let hints = self.calculate_hints(&s, &req);
            let providers: Vec<ProviderHints> = vec![
                hints
                    .iter()
                    .map(|(k, v)| (k.clone(), Some(v.clone())))
                    .collect(),
            ];
            let best = match hint.and_then(|h| h.numa_affinity.map(|m| (m, h.preferred))) {
                Some((m, p)) => TopologyHint {
                    numa_affinity: Some(m),
                    preferred: p,
                },
                None => {
                    let d = merge_hints(&self.numa_nodes, &providers, TopologyPolicy::BestEffort);
                    if !d.preferred && hint.is_some_and(|h| h.preferred) {
                        return Err(fail("failed to find the default preferred hint"));
                    }
                    d
                }
            };
            let mut mask = best
                .numa_affinity
                .unwrap_or_else(|| NumaMask::of(self.numa_nodes.iter().copied()));
            if !Self::satisfies(&s, mask, &req) {
                // Widen: the narrowest calculated hint that includes the mask.
                let wider = hints
                    .values()
                    .next()
                    .into_iter()
                    .flatten()
                    .filter_map(|h| h.numa_affinity.map(|m| (m, h.preferred)))
                    .filter(|(m, _)| m.and(mask) == mask)
                    .min_by_key(|(m, p)| (!*p, m.count(), *m));
                match wider {
                    Some((m, p)) => {
                        if !p && best.preferred {
                            return Err(fail("failed to find the extended preferred hint"));
                        }
                        mask = m;
                    }
                    None => {
                        return Err(fail(
                            "failed to find NUMA nodes to extend the current topology hint",
                        ));
                    }
                }
            }
            if Self::violates(&s, mask) {
                return Err(fail("preferred hint violates NUMA node allocation"));
            }
            let bits = mask.nodes();
            let mut blocks = Vec::new();
            for (r, size) in &req {
                let mut left = *size;
                for n in &bits {
                    let Some(st) = s.machine_state.get_mut(n) else {
                        continue;
                    };
                    st.number_of_assignments += 1;
                    st.cells = bits.clone();
                    if left == 0 {
                        continue;
                    }
                    if let Some(t) = st.memory_map.get_mut(r) {
                        let take = left.min(t.free);
                        t.free -= take;
                        t.reserved += take;
                        left -= take;
                    }
                }
                blocks.push(Block {
                    numa_affinity: bits.clone(),
                    resource: r.clone(),
                    size: *size,
                });
            }
            s.entries
                .entry(uid.clone())
                .or_default()
                .insert(container.name.clone(), blocks.clone());
            blocks
        };
        tracing::info!(pod = %uid, container = %container.name, ?blocks, "reserved memory");
        self.persist()?;
        Ok(Some(blocks))
    }

    /// Releases a container's memory (upstream `RemoveContainer`).
    pub fn remove_container(&self, pod_uid: &str, container: &str) -> Result<()> {
        {
            let mut s = self.lock();
            let Some(blocks) = s.entries.get_mut(pod_uid).and_then(|c| c.remove(container)) else {
                return Ok(());
            };
            if s.entries.get(pod_uid).is_some_and(|c| c.is_empty()) {
                s.entries.remove(pod_uid);
            }
            for b in blocks {
                let mut left = b.size;
                for n in &b.numa_affinity {
                    let Some(st) = s.machine_state.get_mut(n) else {
                        continue;
                    };
                    st.number_of_assignments = st.number_of_assignments.saturating_sub(1);
                    if st.number_of_assignments == 0 {
                        st.cells = vec![*n];
                    }
                    if let Some(t) = st.memory_map.get_mut(&b.resource) {
                        let give = left.min(t.reserved);
                        t.reserved -= give;
                        t.free += give;
                        left -= give;
                    }
                }
            }
        }
        self.persist()
    }
}

impl HintProvider for MemoryManager {
    fn topology_hints(&self, pod: &Pod, container: &Container) -> ProviderHints {
        if matches!(self.policy, MemoryPolicy::None) || pod_qos_class(pod) != QosClass::Guaranteed {
            return ProviderHints::new();
        }
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let s = self.lock();
        if let Some(blocks) = s.entries.get(&uid).and_then(|c| c.get(&container.name)) {
            return blocks
                .iter()
                .map(|b| {
                    let h = TopologyHint {
                        numa_affinity: Some(NumaMask::of(b.numa_affinity.iter().copied())),
                        preferred: true,
                    };
                    (b.resource.clone(), Some(vec![h]))
                })
                .collect();
        }
        let req = requested(pod, container);
        self.calculate_hints(&s, &req)
            .into_iter()
            .map(|(k, v)| (k, Some(v)))
            .collect()
    }

    fn allocate(&self, pod: &Pod, container: &Container, hint: &TopologyHint) -> Result<()> {
        MemoryManager::allocate(self, pod, container, Some(hint)).map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::machine::CpuTopology;
    use crate::testutil::{ctr, pod};

    const GI: u64 = 1 << 30;

    fn machine() -> MachineInfo {
        // 2 NUMA nodes × 4 GiB.
        MachineInfo::synthetic(CpuTopology::synthetic(2, 1, 2, 1), 8 * GI)
    }

    fn static_policy() -> MemoryPolicy {
        MemoryPolicy::Static {
            reserved: [
                (0, [("memory".to_owned(), GI)].into()),
                (1, [("memory".to_owned(), GI)].into()),
            ]
            .into(),
        }
    }

    fn g(uid: &str, mem: &str) -> Pod {
        let r = &[("cpu", "1"), ("memory", mem)];
        pod(uid, vec![ctr("app", r, r)], vec![])
    }

    fn app(p: &Pod) -> &Container {
        &p.spec.as_ref().unwrap().containers[0]
    }

    #[test]
    fn static_requires_reservation() {
        let none = MemoryPolicy::Static {
            reserved: BTreeMap::new(),
        };
        assert!(MemoryManager::new(none, &machine(), None).is_err());
        let bad = MemoryPolicy::Static {
            reserved: [(5, [("memory".to_owned(), GI)].into())].into(),
        };
        assert!(MemoryManager::new(bad, &machine(), None).is_err());
    }

    #[test]
    fn hints_allocation_and_release() {
        let m = MemoryManager::new(static_policy(), &machine(), None).unwrap();
        let small = g("a", "2Gi");
        let h = m.topology_hints(&small, app(&small));
        let hints = h["memory"].clone().unwrap();
        let got: Vec<(Vec<usize>, bool)> = hints
            .iter()
            .map(|h| (h.numa_affinity.unwrap().nodes(), h.preferred))
            .collect();
        assert_eq!(
            got,
            vec![(vec![0], true), (vec![1], true), (vec![0, 1], false)]
        );
        let hint = TopologyHint {
            numa_affinity: Some(NumaMask::of([1])),
            preferred: true,
        };
        let blocks = m
            .allocate(&small, app(&small), Some(&hint))
            .unwrap()
            .unwrap();
        assert_eq!(
            blocks,
            vec![Block {
                numa_affinity: vec![1],
                resource: "memory".into(),
                size: 2 * GI
            }]
        );
        assert_eq!(m.memory_nodes("a", "app").as_deref(), Some("1"));
        let st = m.state();
        assert_eq!(st.machine_state[&1].memory_map["memory"].free, GI);
        assert_eq!(st.machine_state[&1].memory_map["memory"].reserved, 2 * GI);
        // A 5 GiB request needs both nodes; node 1 is already single-NUMA, so no hint fits.
        let big = g("b", "5Gi");
        let h = m.topology_hints(&big, app(&big));
        assert_eq!(h["memory"], Some(vec![]));
        m.remove_container("a", "app").unwrap();
        let st = m.state();
        assert_eq!(st.machine_state[&1].memory_map["memory"].free, 3 * GI);
        assert_eq!(st.machine_state[&1].cells, vec![1]);
        // Now it spans both nodes.
        let blocks = m.allocate(&big, app(&big), None).unwrap().unwrap();
        assert_eq!(blocks[0].numa_affinity, vec![0, 1]);
        assert_eq!(m.memory_nodes("b", "app").as_deref(), Some("0-1"));
        // A single-NUMA request cannot land on a node that is part of a group.
        let one = g("c", "512Mi");
        let err = m.allocate(
            &one,
            app(&one),
            Some(&TopologyHint {
                numa_affinity: Some(NumaMask::of([0])),
                preferred: true,
            }),
        );
        assert!(err.is_err());
    }

    #[test]
    fn only_guaranteed_and_none_policy() {
        let m = MemoryManager::new(static_policy(), &machine(), None).unwrap();
        let b = pod("b", vec![ctr("app", &[("memory", "1Gi")], &[])], vec![]);
        assert_eq!(m.allocate(&b, app(&b), None).unwrap(), None);
        let n = MemoryManager::new(MemoryPolicy::None, &machine(), None).unwrap();
        let p = g("a", "1Gi");
        assert_eq!(n.allocate(&p, app(&p), None).unwrap(), None);
        assert!(n.topology_hints(&p, app(&p)).is_empty());
    }

    #[test]
    fn checkpoint_round_trip_and_policy_change() {
        let d = tempfile::tempdir().unwrap();
        {
            let m = MemoryManager::new(static_policy(), &machine(), Some(d.path())).unwrap();
            let p = g("a", "2Gi");
            m.allocate(&p, app(&p), None).unwrap();
        }
        let m = MemoryManager::new(static_policy(), &machine(), Some(d.path())).unwrap();
        assert_eq!(m.blocks("a", "app").unwrap()[0].size, 2 * GI);
        drop(m);
        let err = MemoryManager::new(MemoryPolicy::None, &machine(), Some(d.path()))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("differs from state checkpoint policy") && err.contains("drain"),
            "{err}"
        );
        let other = MachineInfo::synthetic(CpuTopology::synthetic(2, 1, 2, 1), 16 * GI);
        let err = MemoryManager::new(static_policy(), &other, Some(d.path()))
            .unwrap_err()
            .to_string();
        assert!(err.contains("does not match this machine"), "{err}");
    }
}
