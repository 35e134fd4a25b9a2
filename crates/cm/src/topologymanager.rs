//! The topology manager: gathers NUMA affinity hints from the CPU and memory
//! managers, merges them, and admits or rejects a pod by policy.
//!
//! Upstream: `pkg/kubelet/cm/topologymanager/{policy.go,policy_none.go,
//! policy_best_effort.go,policy_restricted.go,policy_single_numa_node.go,
//! scope_container.go,bitmask/bitmask.go}`. Scope `container` (the default)
//! is implemented; scope `pod` is not.

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::api::core::v1::{Container, Pod};

use crate::error::{Error, Result};

/// Upstream's admission failure reason.
pub const TOPOLOGY_AFFINITY_ERROR: &str = "TopologyAffinityError";

/// A set of NUMA node IDs (0..64) as a bit mask (upstream `bitmask.BitMask`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct NumaMask(u64);

impl NumaMask {
    /// A mask of the given node IDs (IDs of 64 and above are ignored).
    pub fn of(nodes: impl IntoIterator<Item = usize>) -> Self {
        NumaMask(
            nodes
                .into_iter()
                .filter(|n| *n < 64)
                .fold(0, |m, n| m | (1 << n)),
        )
    }

    /// Whether `node` is set.
    pub fn is_set(&self, node: usize) -> bool {
        node < 64 && self.0 & (1 << node) != 0
    }

    /// Number of nodes set.
    pub fn count(&self) -> u32 {
        self.0.count_ones()
    }

    /// The node IDs set, ascending.
    pub fn nodes(&self) -> Vec<usize> {
        (0..64).filter(|n| self.is_set(*n)).collect()
    }

    /// `self & other`.
    pub fn and(&self, other: NumaMask) -> NumaMask {
        NumaMask(self.0 & other.0)
    }

    /// Fewer nodes, or as many with lower IDs (upstream `IsNarrowerThan`).
    pub fn is_narrower_than(&self, other: &NumaMask) -> bool {
        if self.count() == other.count() {
            self.0 < other.0
        } else {
            self.count() < other.count()
        }
    }

    /// Every non-empty subset of `nodes`, by size then by value (upstream `IterateBitMasks`).
    pub fn combinations(nodes: &[usize]) -> Vec<NumaMask> {
        let n = nodes.len().min(20);
        let mut out: Vec<NumaMask> = (1u64..(1 << n))
            .map(|bits| NumaMask::of((0..n).filter(|i| bits & (1 << i) != 0).map(|i| nodes[i])))
            .collect();
        out.sort_by_key(|m| (m.count(), m.0));
        out
    }
}

impl fmt::Debug for NumaMask {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NumaMask{:?}", self.nodes())
    }
}

/// A NUMA affinity and whether it is a preferred placement (upstream `TopologyHint`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TopologyHint {
    /// The NUMA nodes; `None` means any.
    pub numa_affinity: Option<NumaMask>,
    /// Whether this is the best a provider can do.
    pub preferred: bool,
}

/// Hints of one provider: resource name → hints. `None` for a resource means
/// "no preference"; `Some(vec![])` means "cannot be satisfied".
pub type ProviderHints = BTreeMap<String, Option<Vec<TopologyHint>>>;

/// A resource manager that gives hints and allocates along them (upstream `HintProvider`).
pub trait HintProvider: Send + Sync {
    /// The hints for one container.
    fn topology_hints(&self, pod: &Pod, container: &Container) -> ProviderHints;
    /// Allocates for the container, following the merged hint.
    fn allocate(&self, pod: &Pod, container: &Container, hint: &TopologyHint) -> Result<()>;
}

/// The topology manager policy (kubelet `topologyManagerPolicy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum TopologyPolicy {
    /// No alignment; always admit.
    #[default]
    None,
    /// Align when possible; always admit.
    BestEffort,
    /// Admit only a preferred alignment.
    Restricted,
    /// Admit only a preferred alignment on a single NUMA node.
    SingleNumaNode,
}

impl TopologyPolicy {
    /// Parses `none`, `best-effort`, `restricted`, `single-numa-node`.
    pub fn parse(s: &str) -> Result<Self> {
        Ok(match s {
            "none" => TopologyPolicy::None,
            "best-effort" => TopologyPolicy::BestEffort,
            "restricted" => TopologyPolicy::Restricted,
            "single-numa-node" => TopologyPolicy::SingleNumaNode,
            other => {
                return Err(Error::InvalidConfig(format!(
                    "unknown topology manager policy {other:?}"
                )));
            }
        })
    }

    /// The configuration spelling.
    pub fn as_str(&self) -> &'static str {
        match self {
            TopologyPolicy::None => "none",
            TopologyPolicy::BestEffort => "best-effort",
            TopologyPolicy::Restricted => "restricted",
            TopologyPolicy::SingleNumaNode => "single-numa-node",
        }
    }
}

fn filter_provider_hints(providers: &[ProviderHints]) -> Vec<Vec<TopologyHint>> {
    let mut all = Vec::new();
    for hints in providers {
        if hints.is_empty() {
            all.push(vec![TopologyHint {
                numa_affinity: None,
                preferred: true,
            }]);
            continue;
        }
        for h in hints.values() {
            match h {
                None => all.push(vec![TopologyHint {
                    numa_affinity: None,
                    preferred: true,
                }]),
                Some(v) if v.is_empty() => all.push(vec![TopologyHint {
                    numa_affinity: None,
                    preferred: false,
                }]),
                Some(v) => all.push(v.clone()),
            }
        }
    }
    all
}

fn filter_single_numa(all: Vec<Vec<TopologyHint>>) -> Vec<Vec<TopologyHint>> {
    all.into_iter()
        .map(|hints| {
            hints
                .into_iter()
                .filter(|h| h.preferred && h.numa_affinity.is_none_or(|m| m.count() == 1))
                .collect()
        })
        .collect()
}

fn merge_permutation(default: NumaMask, perm: &[TopologyHint]) -> TopologyHint {
    let mut merged = default;
    let mut preferred = true;
    for h in perm {
        if let Some(m) = h.numa_affinity {
            merged = merged.and(m);
        }
        preferred &= h.preferred;
    }
    TopologyHint {
        numa_affinity: Some(merged),
        preferred,
    }
}

fn narrower<'a>(current: &'a TopologyHint, candidate: &'a TopologyHint) -> &'a TopologyHint {
    match (candidate.numa_affinity, current.numa_affinity) {
        (Some(c), Some(cur)) if c.is_narrower_than(&cur) => candidate,
        _ => current,
    }
}

fn count(h: &TopologyHint) -> u32 {
    h.numa_affinity.map_or(0, |m| m.count())
}

/// Upstream `HintMerger.compare`.
fn compare(
    current: Option<TopologyHint>,
    candidate: TopologyHint,
    best_non_preferred: u32,
) -> Option<TopologyHint> {
    if count(&candidate) == 0 {
        return current;
    }
    let Some(current) = current else {
        return Some(candidate);
    };
    let pick = match (current.preferred, candidate.preferred) {
        (false, true) => candidate,
        (true, false) => current,
        (true, true) => *narrower(&current, &candidate),
        (false, false) => {
            let (cur, cand) = (count(&current), count(&candidate));
            if cur > best_non_preferred {
                *narrower(&current, &candidate)
            } else if cur == best_non_preferred {
                if cand != best_non_preferred {
                    current
                } else {
                    *narrower(&current, &candidate)
                }
            } else if cand > best_non_preferred {
                current
            } else if cand == best_non_preferred || cand > cur {
                // At the target, or closer to it from below.
                candidate
            } else if cand < cur {
                current
            } else {
                *narrower(&current, &candidate)
            }
        }
    };
    Some(pick)
}

/// Merges providers' hints into one (upstream `HintMerger.Merge`): the cross
/// product of every provider's hints, each permutation ANDed; preferred beats
/// non-preferred, then the narrower mask wins.
pub fn merge_hints(
    numa_nodes: &[usize],
    providers: &[ProviderHints],
    policy: TopologyPolicy,
) -> TopologyHint {
    let default = NumaMask::of(numa_nodes.iter().copied());
    let mut filtered = filter_provider_hints(providers);
    if policy == TopologyPolicy::SingleNumaNode {
        filtered = filter_single_numa(filtered);
    }
    let best_non_preferred = filtered
        .iter()
        .filter_map(|hints| {
            hints
                .iter()
                .filter_map(|h| h.numa_affinity)
                .reduce(|a, b| if b.is_narrower_than(&a) { b } else { a })
        })
        .map(|m| m.count())
        .max()
        .unwrap_or(0);
    let mut best: Option<TopologyHint> = None;
    // Iterate the cross product with an odometer over the providers' hint lists.
    if filtered.iter().all(|h| !h.is_empty()) {
        let mut idx = vec![0usize; filtered.len()];
        let mut perm = Vec::with_capacity(filtered.len());
        loop {
            perm.clear();
            perm.extend(filtered.iter().zip(&idx).map(|(h, i)| h[*i]));
            best = compare(best, merge_permutation(default, &perm), best_non_preferred);
            // The last provider varies fastest, as upstream's recursion.
            let mut k = idx.len();
            let mut done = true;
            while k > 0 {
                k -= 1;
                idx[k] += 1;
                if idx[k] < filtered[k].len() {
                    done = false;
                    break;
                }
                idx[k] = 0;
            }
            if done {
                break;
            }
        }
    }
    let mut hint = best.unwrap_or(TopologyHint {
        numa_affinity: Some(default),
        preferred: false,
    });
    if policy == TopologyPolicy::SingleNumaNode
        && hint.numa_affinity == Some(default)
        && numa_nodes.len() > 1
    {
        hint.numa_affinity = None;
    }
    hint
}

/// Whether a policy admits a merged hint.
pub fn policy_admits(policy: TopologyPolicy, hint: &TopologyHint) -> bool {
    match policy {
        TopologyPolicy::None | TopologyPolicy::BestEffort => true,
        TopologyPolicy::Restricted | TopologyPolicy::SingleNumaNode => hint.preferred,
    }
}

/// The topology manager with container scope.
pub struct TopologyManager {
    policy: TopologyPolicy,
    numa_nodes: Vec<usize>,
    hints: std::sync::Mutex<BTreeMap<(String, String), TopologyHint>>,
}

impl fmt::Debug for TopologyManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TopologyManager")
            .field("policy", &self.policy)
            .field("numa_nodes", &self.numa_nodes)
            .finish()
    }
}

impl TopologyManager {
    /// A manager for a machine with these NUMA nodes. Upstream refuses more
    /// than 8 NUMA nodes unless an option raises it; so do we (64 is the hard cap here).
    pub fn new(policy: TopologyPolicy, numa_nodes: Vec<usize>) -> Result<Self> {
        if policy != TopologyPolicy::None && numa_nodes.len() > 8 {
            return Err(Error::InvalidConfig(format!(
                "unsupported on machines with more than 8 NUMA Nodes ({} found)",
                numa_nodes.len()
            )));
        }
        Ok(TopologyManager {
            policy,
            numa_nodes,
            hints: Default::default(),
        })
    }

    /// The policy.
    pub fn policy(&self) -> TopologyPolicy {
        self.policy
    }

    /// Admits a pod: for each init then app container, merges the providers'
    /// hints, checks the policy, and has every provider allocate along the
    /// hint. Fails with [`TOPOLOGY_AFFINITY_ERROR`] when the policy cannot be met.
    pub fn admit(&self, pod: &Pod, providers: &[&dyn HintProvider]) -> Result<()> {
        let Some(spec) = pod.spec.as_ref() else {
            return Ok(());
        };
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        for c in spec
            .init_containers
            .iter()
            .flatten()
            .chain(spec.containers.iter())
        {
            let hint = if self.policy == TopologyPolicy::None {
                TopologyHint {
                    numa_affinity: None,
                    preferred: true,
                }
            } else {
                let all: Vec<ProviderHints> =
                    providers.iter().map(|p| p.topology_hints(pod, c)).collect();
                merge_hints(&self.numa_nodes, &all, self.policy)
            };
            if !policy_admits(self.policy, &hint) {
                return Err(Error::Admission {
                    reason: TOPOLOGY_AFFINITY_ERROR,
                    message: "Resources cannot be allocated with Topology locality".into(),
                });
            }
            tracing::debug!(pod = %uid, container = %c.name, ?hint, "topology hint");
            if let Ok(mut h) = self.hints.lock() {
                h.insert((uid.clone(), c.name.clone()), hint);
            }
            for p in providers {
                p.allocate(pod, c, &hint)?;
            }
        }
        Ok(())
    }

    /// The hint stored for a container at admission (upstream `GetAffinity`).
    pub fn affinity(&self, pod_uid: &str, container: &str) -> Option<TopologyHint> {
        self.hints
            .lock()
            .ok()?
            .get(&(pod_uid.to_owned(), container.to_owned()))
            .copied()
    }

    /// Forgets a container's hint.
    pub fn remove_container(&self, pod_uid: &str, container: &str) {
        if let Ok(mut h) = self.hints.lock() {
            h.remove(&(pod_uid.to_owned(), container.to_owned()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(nodes: &[usize], preferred: bool) -> TopologyHint {
        TopologyHint {
            numa_affinity: Some(NumaMask::of(nodes.iter().copied())),
            preferred,
        }
    }

    fn provider(resource: &str, hints: Option<Vec<TopologyHint>>) -> ProviderHints {
        [(resource.to_owned(), hints)].into()
    }

    #[test]
    fn masks() {
        let m = NumaMask::of([0, 2]);
        assert_eq!(m.count(), 2);
        assert!(m.is_set(2) && !m.is_set(1));
        assert!(NumaMask::of([1]).is_narrower_than(&m));
        assert!(NumaMask::of([0, 1]).is_narrower_than(&NumaMask::of([0, 2])));
        let c = NumaMask::combinations(&[0, 1]);
        assert_eq!(
            c,
            vec![NumaMask::of([0]), NumaMask::of([1]), NumaMask::of([0, 1])]
        );
    }

    #[test]
    fn merge_cases_as_upstream() {
        // policy_test.go-style cases on two NUMA nodes.
        let nodes = [0, 1];
        use TopologyPolicy::{BestEffort, Restricted, SingleNumaNode};
        let cases: Vec<(&str, Vec<ProviderHints>, TopologyPolicy, TopologyHint, bool)> = vec![
            ("no providers", vec![], BestEffort, h(&[0, 1], true), true),
            (
                "provider with no preference",
                vec![provider("cpu", None)],
                Restricted,
                h(&[0, 1], true),
                true,
            ),
            (
                "provider that cannot satisfy",
                vec![provider("cpu", Some(vec![]))],
                Restricted,
                h(&[0, 1], false),
                false,
            ),
            (
                "two providers agree on node 0",
                vec![
                    provider("cpu", Some(vec![h(&[0], true), h(&[0, 1], false)])),
                    provider(
                        "memory",
                        Some(vec![h(&[0], true), h(&[1], true), h(&[0, 1], false)]),
                    ),
                ],
                Restricted,
                h(&[0], true),
                true,
            ),
            (
                // No common preferred node: the narrowest non-preferred merge
                // at the best non-preferred count (1) wins, lowest node first.
                "preferred on different nodes: not preferred",
                vec![
                    provider("cpu", Some(vec![h(&[0], true), h(&[0, 1], false)])),
                    provider("memory", Some(vec![h(&[1], true), h(&[0, 1], false)])),
                ],
                BestEffort,
                h(&[0], false),
                true,
            ),
            (
                "same, restricted rejects",
                vec![
                    provider("cpu", Some(vec![h(&[0], true), h(&[0, 1], false)])),
                    provider("memory", Some(vec![h(&[1], true), h(&[0, 1], false)])),
                ],
                Restricted,
                h(&[0], false),
                false,
            ),
            (
                // Upstream ANDs preferred masks: the result stays preferred.
                "preferred masks AND to the narrower one",
                vec![
                    provider("cpu", Some(vec![h(&[0, 1], true)])),
                    provider(
                        "memory",
                        Some(vec![h(&[0], true), h(&[1], true), h(&[0, 1], false)]),
                    ),
                ],
                Restricted,
                h(&[0], true),
                true,
            ),
            (
                "narrower preferred wins",
                vec![provider("cpu", Some(vec![h(&[0, 1], true), h(&[1], true)]))],
                BestEffort,
                h(&[1], true),
                true,
            ),
            (
                "single-numa-node drops the cross-NUMA hint",
                vec![provider("cpu", Some(vec![h(&[0, 1], true)]))],
                SingleNumaNode,
                TopologyHint {
                    numa_affinity: None,
                    preferred: false,
                },
                false,
            ),
            (
                "single-numa-node admits a single node",
                vec![provider(
                    "cpu",
                    Some(vec![h(&[1], true), h(&[0, 1], false)]),
                )],
                SingleNumaNode,
                h(&[1], true),
                true,
            ),
        ];
        for (name, providers, policy, want, admit) in cases {
            let got = merge_hints(&nodes, &providers, policy);
            assert_eq!(got, want, "{name}");
            assert_eq!(policy_admits(policy, &got), admit, "{name}");
        }
    }

    #[test]
    fn parse_policies() {
        for p in ["none", "best-effort", "restricted", "single-numa-node"] {
            assert_eq!(TopologyPolicy::parse(p).unwrap().as_str(), p);
        }
        assert!(TopologyPolicy::parse("strict").is_err());
        assert!(TopologyManager::new(TopologyPolicy::Restricted, (0..9).collect()).is_err());
    }
}
