//! The CPU manager: policies `none` and `static`.
//!
//! With `static`, containers of Guaranteed pods whose cpu request is a whole
//! number get CPUs of their own, chosen topology-aware; everyone else runs on
//! the shared pool. State is checkpointed (see [`crate::checkpoint`]) and
//! pushed to running containers by [`CpuManager::reconcile_state`], every
//! period in the background task of [`CpuManager::spawn_reconcile`].
//!
//! Upstream: `pkg/kubelet/cm/cpumanager/{cpu_manager.go,policy_static.go,
//! policy_none.go,cpu_assignment.go,state/checkpoint.go}`. Not done:
//! the policy options (`full-pcpus-only`, `distribute-cpus-across-numa`,
//! `align-by-socket`, ...), pod-level resources and the `cpusToReuse`
//! handling of sidecars beyond what upstream does for init containers.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Mutex, MutexGuard, PoisonError};

use k8s_openapi::api::core::v1::{Container, Pod};
use serde::{Deserialize, Serialize};

use crate::checkpoint::Checkpoint;
use crate::cpuset::CpuSet;
use crate::error::{Error, Result};
use crate::machine::CpuTopology;
use crate::podres::{is_restartable_init, milli_of};
use crate::qos::{QosClass, pod_qos_class};
use crate::topologymanager::{HintProvider, NumaMask, ProviderHints, TopologyHint};

/// The checkpoint's file name under the kubelet root directory.
pub const CPU_MANAGER_STATE_FILE: &str = "cpu_manager_state";
/// The default reconcile period (kubelet `cpuManagerReconcilePeriod`, 10 s).
pub const RECONCILE_PERIOD: std::time::Duration = std::time::Duration::from_secs(10);

/// The CPU manager's state (upstream `state.State`), as checkpointed.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct CpuManagerState {
    /// The policy that wrote this state.
    pub policy_name: String,
    /// The shared pool.
    pub default_cpu_set: CpuSet,
    /// Pod UID → container name → exclusive CPUs.
    pub entries: BTreeMap<String, BTreeMap<String, CpuSet>>,
}

/// How many or which CPUs the static policy keeps for the system.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReservedCpus {
    /// `ceil(systemReserved.cpu + kubeReserved.cpu)` CPUs, chosen by topology.
    Count(usize),
    /// `reservedSystemCPUs`: exactly these.
    List(CpuSet),
}

/// The CPU manager policy (kubelet `cpuManagerPolicy`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CpuPolicy {
    /// Everyone shares every CPU.
    None,
    /// Exclusive CPUs for integer Guaranteed containers.
    Static {
        /// CPUs kept out of exclusive allocation.
        reserved: ReservedCpus,
    },
}

impl CpuPolicy {
    /// `"none"` or `"static"`.
    pub fn name(&self) -> &'static str {
        match self {
            CpuPolicy::None => "none",
            CpuPolicy::Static { .. } => "static",
        }
    }
}

/// A topology prepared for fast allocation: for each CPU its NUMA node,
/// socket and core, and the CPUs of each unit, all in dense vectors indexed
/// by ID (IDs are small integers).
#[derive(Debug, Clone)]
struct TopoIndex {
    /// Per level (NUMA, socket, core): CPU ID → unit ID.
    unit_of: [Vec<usize>; 3],
    /// Per level: unit ID → its CPUs (ascending).
    cpus_of: [Vec<Vec<usize>>; 3],
    /// NUMA nodes are taken before sockets (sockets >= NUMA nodes).
    numa_first: bool,
    /// NUMA node → CPUs, for hints.
    numa_cpus: BTreeMap<usize, Vec<usize>>,
}

const NUMA: usize = 0;
const SOCKET: usize = 1;
const CORE: usize = 2;

impl TopoIndex {
    fn new(topo: &CpuTopology) -> Self {
        let max = topo.cpus().iter().map(|c| c.id + 1).max().unwrap_or(0);
        let mut unit_of = [
            vec![usize::MAX; max],
            vec![usize::MAX; max],
            vec![usize::MAX; max],
        ];
        let mut cpus_of: [Vec<Vec<usize>>; 3] = [Vec::new(), Vec::new(), Vec::new()];
        let mut numa_cpus: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
        for c in topo.cpus() {
            for (level, unit) in [(NUMA, c.numa_node), (SOCKET, c.socket), (CORE, c.core)] {
                unit_of[level][c.id] = unit;
                if cpus_of[level].len() <= unit {
                    cpus_of[level].resize(unit + 1, Vec::new());
                }
                cpus_of[level][unit].push(c.id);
            }
            numa_cpus.entry(c.numa_node).or_default().push(c.id);
        }
        TopoIndex {
            unit_of,
            cpus_of,
            // NUMA nodes first when they sit below sockets (sockets >= NUMA nodes).
            numa_first: topo.sockets().len() >= topo.numa_nodes().len(),
            numa_cpus,
        }
    }

    fn numa(&self, cpu: usize) -> usize {
        self.unit_of[NUMA].get(cpu).copied().unwrap_or(usize::MAX)
    }
}

/// Upstream's `cpuAccumulator` with the packed sorting strategy.
struct Acc<'a> {
    t: &'a TopoIndex,
    /// CPU ID → still available.
    avail: Vec<bool>,
    result: Vec<usize>,
    needed: usize,
}

impl Acc<'_> {
    /// Free-CPU count per unit of `level`.
    fn free_counts(&self, level: usize) -> Vec<usize> {
        let mut counts = vec![0usize; self.t.cpus_of[level].len()];
        for (cpu, free) in self.avail.iter().enumerate() {
            if *free
                && let Some(u) = self.t.unit_of[level].get(cpu)
                && *u != usize::MAX
            {
                counts[*u] += 1;
            }
        }
        counts
    }

    /// Available units of `level` in upstream's order (`sortAvailable*`):
    /// by ascending free count then ID, nested inside the sorted upper level.
    fn sorted_units(&self, level: usize) -> Vec<usize> {
        let top = if self.t.numa_first { NUMA } else { SOCKET };
        let top_counts = self.free_counts(top);
        let mut tops: Vec<usize> = (0..top_counts.len())
            .filter(|u| top_counts[*u] > 0)
            .collect();
        tops.sort_by_key(|u| (top_counts[*u], *u));
        if level == top {
            return tops;
        }
        let counts = self.free_counts(level);
        let mut seen = vec![false; counts.len()];
        let mut out = Vec::new();
        for t in tops {
            let mut inner: Vec<usize> = Vec::new();
            for cpu in &self.t.cpus_of[top][t] {
                let u = self.t.unit_of[level][*cpu];
                if u != usize::MAX && counts[u] > 0 && !seen[u] {
                    seen[u] = true;
                    inner.push(u);
                }
            }
            inner.sort_by_key(|u| (counts[*u], *u));
            out.extend(inner);
        }
        out
    }

    fn is_free(&self, level: usize, unit: usize) -> bool {
        self.t.cpus_of[level][unit].iter().all(|c| self.avail[*c])
    }

    fn take(&mut self, cpu: usize) {
        self.avail[cpu] = false;
        self.result.push(cpu);
        self.needed = self.needed.saturating_sub(1);
    }

    fn take_full(&mut self, level: usize) {
        let units: Vec<usize> = self
            .sorted_units(level)
            .into_iter()
            .filter(|u| self.is_free(level, *u))
            .collect();
        for u in units {
            let n = self.t.cpus_of[level][u].len();
            if self.needed < n {
                continue;
            }
            for i in 0..n {
                let cpu = self.t.cpus_of[level][u][i];
                self.take(cpu);
            }
        }
    }

    fn take_remaining(&mut self) {
        let mut order = Vec::new();
        for core in self.sorted_units(CORE) {
            order.extend(
                self.t.cpus_of[CORE][core]
                    .iter()
                    .copied()
                    .filter(|c| self.avail[*c]),
            );
        }
        for cpu in order {
            if self.needed == 0 {
                return;
            }
            self.take(cpu);
        }
    }
}

fn take_by_topology_indexed(t: &TopoIndex, available: &CpuSet, num: usize) -> Result<CpuSet> {
    if num == 0 {
        return Ok(CpuSet::new());
    }
    if num > available.len() {
        return Err(Error::NotEnoughCpus {
            requested: num,
            available: available.len(),
        });
    }
    let mut avail = vec![false; t.unit_of[NUMA].len()];
    let mut known = 0;
    for cpu in available.iter() {
        if let Some(a) = avail.get_mut(cpu) {
            *a = true;
            known += 1;
        }
    }
    if num > known {
        return Err(Error::NotEnoughCpus {
            requested: num,
            available: known,
        });
    }
    let mut acc = Acc {
        t,
        avail,
        result: Vec::with_capacity(num),
        needed: num,
    };
    let (first, second) = if t.numa_first {
        (NUMA, SOCKET)
    } else {
        (SOCKET, NUMA)
    };
    for step in [first, second, CORE] {
        acc.take_full(step);
        if acc.needed == 0 {
            return Ok(CpuSet::of(acc.result));
        }
    }
    acc.take_remaining();
    if acc.needed == 0 {
        Ok(CpuSet::of(acc.result))
    } else {
        Err(Error::NotEnoughCpus {
            requested: num,
            available: available.len(),
        })
    }
}

/// Takes `num` CPUs from `available`, packed by topology (upstream
/// `takeByTopologyNUMAPacked`): whole NUMA nodes or sockets while the need is
/// at least their size, then whole cores, then single CPUs, candidates
/// ordered by ascending free CPUs in their enclosing unit, then by ID.
pub fn take_by_topology(topo: &CpuTopology, available: &CpuSet, num: usize) -> Result<CpuSet> {
    take_by_topology_indexed(&TopoIndex::new(topo), available, num)
}

/// The exclusive CPUs a container gets under the static policy (upstream
/// `guaranteedCPUs`): its cpu request when the pod is Guaranteed and the
/// request is a whole number, else 0.
pub fn guaranteed_cpus(pod: &Pod, container: &Container) -> usize {
    if pod_qos_class(pod) != QosClass::Guaranteed {
        return 0;
    }
    let m = milli_of(
        container
            .resources
            .as_ref()
            .and_then(|r| r.requests.as_ref()),
        "cpu",
    );
    if m <= 0 || m % 1000 != 0 {
        return 0;
    }
    usize::try_from(m / 1000).unwrap_or(0)
}

struct Inner {
    state: CpuManagerState,
    cpus_to_reuse: BTreeMap<String, CpuSet>,
    /// Container ID → (pod UID, container name).
    containers: BTreeMap<String, (String, String)>,
    /// Container ID → the cpuset last pushed to the runtime.
    last_update: BTreeMap<String, CpuSet>,
    /// Bumped by every allocation; see [`CpuManager::remove_stale_state`].
    generation: u64,
    /// (pod UID, container name) → the generation of its allocation.
    allocated_at: BTreeMap<(String, String), u64>,
}

/// The CPU manager (upstream `cpumanager.Manager`).
pub struct CpuManager {
    policy: CpuPolicy,
    topology: CpuTopology,
    index: TopoIndex,
    reserved: CpuSet,
    checkpoint: Option<Checkpoint>,
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for CpuManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CpuManager")
            .field("policy", &self.policy.name())
            .field("reserved", &self.reserved.to_string())
            .finish()
    }
}

/// One running container, for [`CpuManager::reconcile`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveContainer {
    /// Pod UID.
    pub pod_uid: String,
    /// Container name.
    pub name: String,
    /// Runtime container ID.
    pub container_id: String,
}

impl CpuManager {
    /// A CPU manager with `policy` on `topology`, its state checkpointed in
    /// `state_dir/cpu_manager_state` when given.
    ///
    /// Fails, as upstream, when the static policy has no reserved CPU, when
    /// the reservation cannot be met, when the checkpoint is corrupt, or when
    /// it was written by another policy; the message says to drain the node
    /// and remove the state file.
    pub fn new(policy: CpuPolicy, topology: CpuTopology, state_dir: Option<&Path>) -> Result<Self> {
        let index = TopoIndex::new(&topology);
        let all = topology.all();
        let reserved = match &policy {
            CpuPolicy::None => CpuSet::new(),
            CpuPolicy::Static { reserved } => {
                let set = match reserved {
                    ReservedCpus::Count(0) => {
                        return Err(Error::InvalidConfig(
                            "the static policy requires systemreserved.cpu + kubereserved.cpu to be greater than zero".into(),
                        ));
                    }
                    ReservedCpus::Count(n) => take_by_topology_indexed(&index, &all, *n)?,
                    ReservedCpus::List(l) => {
                        if l.is_empty() || !l.is_subset(&all) {
                            return Err(Error::InvalidConfig(format!(
                                "reserved cpus {l} must be a non-empty subset of the online cpus {all}"
                            )));
                        }
                        l.clone()
                    }
                };
                if let ReservedCpus::Count(n) = reserved
                    && set.len() != *n
                {
                    return Err(Error::InvalidConfig(format!(
                        "unable to reserve the required amount of CPUs (size of {set} did not equal {n})"
                    )));
                }
                set
            }
        };
        let checkpoint =
            state_dir.map(|d| Checkpoint::new(d.join(CPU_MANAGER_STATE_FILE), "cpu_manager_state"));
        let mut state = match &checkpoint {
            Some(c) => c.load::<CpuManagerState>()?.unwrap_or_default(),
            None => CpuManagerState::default(),
        };
        if !state.policy_name.is_empty() && state.policy_name != policy.name() {
            let path = checkpoint
                .as_ref()
                .map(|c| c.path().to_owned())
                .unwrap_or_default();
            return Err(Error::Checkpoint {
                reason: format!(
                    "configured policy {:?} differs from state checkpoint policy {:?}: drain this node and delete the CPU manager checkpoint file {} before restarting the kubelet",
                    policy.name(),
                    state.policy_name,
                    path.display()
                ),
                path,
            });
        }
        state.policy_name = policy.name().to_owned();
        let m = CpuManager {
            policy,
            topology,
            index,
            reserved,
            checkpoint,
            inner: Mutex::new(Inner {
                state: CpuManagerState::default(),
                cpus_to_reuse: BTreeMap::new(),
                containers: BTreeMap::new(),
                last_update: BTreeMap::new(),
                generation: 0,
                allocated_at: BTreeMap::new(),
            }),
        };
        m.validate_and_init(&mut state)?;
        m.lock().state = state;
        m.persist()?;
        Ok(m)
    }

    /// Upstream `validateState`.
    fn validate_and_init(&self, s: &mut CpuManagerState) -> Result<()> {
        let all = self.topology.all();
        let bad = |reason: String| {
            let path = self
                .checkpoint
                .as_ref()
                .map(|c| c.path().to_owned())
                .unwrap_or_default();
            Error::Checkpoint {
                reason: format!(
                    "{reason}: drain this node and delete the CPU manager checkpoint file {} before restarting the kubelet",
                    path.display()
                ),
                path,
            }
        };
        if s.default_cpu_set.is_empty() {
            if !s.entries.is_empty() {
                return Err(bad("default cpuset cannot be empty".into()));
            }
            s.default_cpu_set = all;
            return Ok(());
        }
        if matches!(self.policy, CpuPolicy::None) {
            return Ok(());
        }
        if !self.reserved.is_subset(&s.default_cpu_set) {
            return Err(bad(format!(
                "not all reserved cpus: {:?} are present in defaultCpuSet: {:?}",
                self.reserved.to_string(),
                s.default_cpu_set.to_string()
            )));
        }
        let mut known = s.default_cpu_set.clone();
        for (pod, containers) in &s.entries {
            for (name, cset) in containers {
                if !cset.intersection(&s.default_cpu_set).is_empty() {
                    return Err(bad(format!(
                        "pod: {pod}, container: {name} cpuset: {:?} overlaps with default cpuset {:?}",
                        cset.to_string(),
                        s.default_cpu_set.to_string()
                    )));
                }
                known = known.union(cset);
            }
        }
        if known != all {
            return Err(bad(format!(
                "current set of available CPUs {:?} doesn't match with CPUs in state {:?}",
                all.to_string(),
                known.to_string()
            )));
        }
        Ok(())
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn persist(&self) -> Result<()> {
        if let Some(c) = &self.checkpoint {
            let state = self.lock().state.clone();
            c.store(&state)?;
        }
        Ok(())
    }

    /// The policy.
    pub fn policy(&self) -> &CpuPolicy {
        &self.policy
    }

    /// The topology.
    pub fn topology(&self) -> &CpuTopology {
        &self.topology
    }

    /// CPUs reserved for the system (empty for `none`).
    pub fn reserved(&self) -> &CpuSet {
        &self.reserved
    }

    /// A copy of the state.
    pub fn state(&self) -> CpuManagerState {
        self.lock().state.clone()
    }

    /// The shared pool (upstream `GetDefaultCPUSet`).
    pub fn shared_pool(&self) -> CpuSet {
        self.lock().state.default_cpu_set.clone()
    }

    /// CPUs free for exclusive allocation: shared pool − reserved.
    pub fn allocatable(&self) -> CpuSet {
        self.lock().state.default_cpu_set.difference(&self.reserved)
    }

    /// The exclusive CPUs of a container, if any.
    pub fn assigned(&self, pod_uid: &str, container: &str) -> Option<CpuSet> {
        self.lock()
            .state
            .entries
            .get(pod_uid)?
            .get(container)
            .cloned()
    }

    /// The cpuset a container runs on: its exclusive CPUs or the shared pool
    /// (`cpuset_cpus` before create, upstream `AddContainer`/`reconcileState`).
    pub fn cpuset_for(&self, pod_uid: &str, container: &str) -> CpuSet {
        let g = self.lock();
        g.state
            .entries
            .get(pod_uid)
            .and_then(|c| c.get(container))
            .cloned()
            .unwrap_or_else(|| g.state.default_cpu_set.clone())
    }

    /// Allocates exclusive CPUs at admission (upstream `staticPolicy.Allocate`):
    /// a no-op for `none`, for non-integer or non-Guaranteed containers, and
    /// for containers that already have CPUs. Aligned to `hint` first.
    pub fn allocate(
        &self,
        pod: &Pod,
        container: &Container,
        hint: Option<&TopologyHint>,
    ) -> Result<Option<CpuSet>> {
        if matches!(self.policy, CpuPolicy::None) {
            return Ok(None);
        }
        let num = guaranteed_cpus(pod, container);
        if num == 0 {
            return Ok(None);
        }
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let result = {
            let mut g = self.lock();
            if let Some(existing) = g
                .state
                .entries
                .get(&uid)
                .and_then(|c| c.get(&container.name))
                .cloned()
            {
                Self::update_cpus_to_reuse(&mut g, pod, container, &existing);
                return Ok(Some(existing));
            }
            let reusable = g.cpus_to_reuse.get(&uid).cloned().unwrap_or_default();
            let allocatable = g
                .state
                .default_cpu_set
                .difference(&self.reserved)
                .union(&reusable);
            let mut result = CpuSet::new();
            if let Some(mask) = hint.and_then(|h| h.numa_affinity) {
                let aligned: CpuSet = allocatable
                    .iter()
                    .filter(|c| mask.is_set(self.index.numa(*c)))
                    .collect();
                let n = num.min(aligned.len());
                result = take_by_topology_indexed(&self.index, &aligned, n)?;
            }
            let rest = take_by_topology_indexed(
                &self.index,
                &allocatable.difference(&result),
                num - result.len(),
            )?;
            result = result.union(&rest);
            g.state.default_cpu_set = g.state.default_cpu_set.difference(&result);
            g.state
                .entries
                .entry(uid.clone())
                .or_default()
                .insert(container.name.clone(), result.clone());
            g.generation += 1;
            let generation = g.generation;
            g.allocated_at
                .insert((uid.clone(), container.name.clone()), generation);
            Self::update_cpus_to_reuse(&mut g, pod, container, &result);
            result
        };
        tracing::info!(pod = %uid, container = %container.name, cpus = %result, "allocated exclusive cpus");
        self.persist()?;
        Ok(Some(result))
    }

    fn update_cpus_to_reuse(g: &mut Inner, pod: &Pod, container: &Container, cset: &CpuSet) {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        g.cpus_to_reuse.retain(|k, _| *k == uid);
        let reuse = g.cpus_to_reuse.entry(uid).or_default();
        let init = pod
            .spec
            .as_ref()
            .and_then(|s| s.init_containers.as_ref())
            .and_then(|ics| ics.iter().find(|ic| ic.name == container.name));
        match init {
            Some(ic) if !is_restartable_init(ic) => *reuse = reuse.union(cset),
            _ => *reuse = reuse.difference(cset),
        }
    }

    /// Releases a container's CPUs to the shared pool, except those its
    /// sibling containers still hold (upstream `RemoveContainer`).
    pub fn remove_container(&self, pod_uid: &str, container: &str) -> Result<()> {
        let changed = {
            let mut g = self.lock();
            let siblings: CpuSet = g
                .state
                .entries
                .get(pod_uid)
                .map(|c| {
                    c.iter()
                        .filter(|(n, _)| n.as_str() != container)
                        .fold(CpuSet::new(), |acc, (_, s)| acc.union(s))
                })
                .unwrap_or_default();
            let released = g
                .state
                .entries
                .get_mut(pod_uid)
                .and_then(|c| c.remove(container));
            g.allocated_at
                .remove(&(pod_uid.to_owned(), container.to_owned()));
            if g.state.entries.get(pod_uid).is_some_and(|c| c.is_empty()) {
                g.state.entries.remove(pod_uid);
            }
            match released {
                Some(set) => {
                    let back = set.difference(&siblings);
                    g.state.default_cpu_set = g.state.default_cpu_set.union(&back);
                    true
                }
                None => false,
            }
        };
        if changed {
            self.persist()?;
        }
        Ok(())
    }

    /// Remembers which runtime container runs which pod container.
    pub fn add_container(&self, pod_uid: &str, container: &str, container_id: &str) {
        self.lock().containers.insert(
            container_id.to_owned(),
            (pod_uid.to_owned(), container.to_owned()),
        );
    }

    /// Forgets a runtime container and releases its CPUs.
    pub fn remove_container_id(&self, container_id: &str) -> Result<()> {
        let entry = {
            let mut g = self.lock();
            g.last_update.remove(container_id);
            g.containers.remove(container_id)
        };
        match entry {
            Some((uid, name)) => self.remove_container(&uid, &name),
            None => Ok(()),
        }
    }

    /// Drops assignments of containers that are no longer active (upstream
    /// `removeStaleState`; call only when all pod sources are ready).
    /// `active` lists (pod UID, container name) of every container, init
    /// containers included, of every active pod.
    pub fn remove_stale_state(&self, active: &[(String, String)]) -> Result<()> {
        self.remove_stale_state_before(active, u64::MAX)
    }

    /// [`CpuManager::remove_stale_state`], sparing assignments made at or
    /// after generation `before`: those were allocated after the caller
    /// listed the active pods, so their absence from `active` proves
    /// nothing (upstream lists the pods under the manager's lock instead).
    fn remove_stale_state_before(&self, active: &[(String, String)], before: u64) -> Result<()> {
        let active: std::collections::BTreeSet<(&str, &str)> = active
            .iter()
            .map(|(uid, name)| (uid.as_str(), name.as_str()))
            .collect();
        let stale: Vec<(String, String)> = {
            let mut g = self.lock();
            let inner = &mut *g;
            // The container map forgets containers of inactive pods too
            // (upstream visits its `containerMap`); so does the last-pushed
            // cache, keyed by container ID.
            let gone: Vec<String> = inner
                .containers
                .iter()
                .filter(|(_, (uid, name))| !active.contains(&(uid.as_str(), name.as_str())))
                .map(|(id, _)| id.clone())
                .collect();
            for id in gone {
                inner.containers.remove(&id);
                inner.last_update.remove(&id);
            }
            inner
                .state
                .entries
                .iter()
                .flat_map(|(uid, cs)| cs.keys().map(move |n| (uid.as_str(), n.as_str())))
                .filter(|k| !active.contains(k))
                .filter(|(uid, name)| {
                    inner
                        .allocated_at
                        .get(&((*uid).to_owned(), (*name).to_owned()))
                        .is_none_or(|g| *g < before)
                })
                .map(|(uid, name)| (uid.to_owned(), name.to_owned()))
                .collect()
        };
        for (uid, name) in stale {
            tracing::info!(pod = %uid, container = %name, "removing stale cpu assignment");
            self.remove_container(&uid, &name)?;
        }
        Ok(())
    }

    /// NUMA hints for a container (upstream `GetTopologyHints`,
    /// `generateCPUTopologyHints`): every NUMA combination with enough free
    /// CPUs, preferred when it is as narrow as the narrowest that could hold
    /// the request on an empty machine.
    pub fn hints(&self, pod: &Pod, container: &Container) -> Option<Vec<TopologyHint>> {
        if matches!(self.policy, CpuPolicy::None) {
            return None;
        }
        let requested = guaranteed_cpus(pod, container);
        if requested == 0 {
            return None;
        }
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let (available, reusable) = {
            let g = self.lock();
            if let Some(allocated) = g
                .state
                .entries
                .get(&uid)
                .and_then(|c| c.get(&container.name))
            {
                if allocated.len() != requested {
                    return Some(Vec::new());
                }
                (allocated.clone(), CpuSet::new())
            } else {
                (
                    g.state.default_cpu_set.difference(&self.reserved),
                    g.cpus_to_reuse.get(&uid).cloned().unwrap_or_default(),
                )
            }
        };
        let nodes = self.topology.numa_nodes();
        let mut min_size = nodes.len() as u32;
        let mut hints = Vec::new();
        for mask in NumaMask::combinations(&nodes) {
            let in_mask = self
                .index
                .numa_cpus
                .iter()
                .filter(|(n, _)| mask.is_set(**n))
                .map(|(_, v)| v.len())
                .sum::<usize>();
            if in_mask >= requested && mask.count() < min_size {
                min_size = mask.count();
            }
            if reusable.iter().any(|c| !mask.is_set(self.index.numa(c))) {
                continue;
            }
            let matching = reusable.len()
                + available
                    .iter()
                    .filter(|c| mask.is_set(self.index.numa(*c)))
                    .count();
            if matching >= requested {
                hints.push(TopologyHint {
                    numa_affinity: Some(mask),
                    preferred: false,
                });
            }
        }
        for h in &mut hints {
            h.preferred = h.numa_affinity.is_some_and(|m| m.count() == min_size);
        }
        Some(hints)
    }
}

impl HintProvider for CpuManager {
    fn topology_hints(&self, pod: &Pod, container: &Container) -> ProviderHints {
        match self.hints(pod, container) {
            None => ProviderHints::new(),
            Some(h) => [("cpu".to_owned(), Some(h))].into(),
        }
    }

    fn allocate(&self, pod: &Pod, container: &Container, hint: &TopologyHint) -> Result<()> {
        CpuManager::allocate(self, pod, container, Some(hint)).map(|_| ())
    }
}

mod reconcile;
pub use reconcile::{ActiveContainerSource, ReconcileReport, ReconcileSnapshot, ReconcileTask};

#[cfg(test)]
mod tests;
