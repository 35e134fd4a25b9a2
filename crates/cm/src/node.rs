//! Node allocatable: what is left for pods once the system, the kubelet and
//! the eviction thresholds have taken their share, and the `kubepods`
//! cgroup's limits that enforce it.
//!
//! Upstream: `pkg/kubelet/cm/node_container_manager_linux.go`
//! (`enforceNodeAllocatableCgroups`, `getCgroupConfig`,
//! `GetNodeAllocatableReservation`, `validateNodeAllocatable`),
//! `pkg/kubelet/cm/helpers.go` (`hardEvictionReservation`) and
//! `pkg/kubelet/nodestatus/setters.go` (huge pages taken from reported memory).

use std::collections::BTreeSet;

use kubelet_container::threshold::{Signal, Threshold, ThresholdConfig};

use crate::error::{Error, Result};
use crate::machine::{RESOURCE_PID, ResourceList};
use crate::resources::{ResourceConfig, hugepage_size_of_resource, milli_cpu_to_shares};

/// The `enforceNodeAllocatable` key that limits the `kubepods` cgroup.
pub const ENFORCE_PODS: &str = "pods";
/// The key that limits the system-reserved cgroup.
pub const ENFORCE_SYSTEM_RESERVED: &str = "system-reserved";
/// The key that limits the kube-reserved cgroup.
pub const ENFORCE_KUBE_RESERVED: &str = "kube-reserved";

/// Kubelet settings that shape node allocatable.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeAllocatableConfig {
    /// `--kube-reserved`.
    pub kube_reserved: ResourceList,
    /// `--system-reserved`.
    pub system_reserved: ResourceList,
    /// Hard eviction thresholds (only `memory.available` and
    /// `nodefs.available` reserve anything).
    pub hard_eviction_thresholds: Vec<Threshold>,
    /// `enforceNodeAllocatable` (default `{"pods"}`).
    pub enforce_node_allocatable: BTreeSet<String>,
}

impl Default for NodeAllocatableConfig {
    fn default() -> Self {
        NodeAllocatableConfig {
            kube_reserved: ResourceList::new(),
            system_reserved: ResourceList::new(),
            hard_eviction_thresholds: default_hard_thresholds(),
            enforce_node_allocatable: [ENFORCE_PODS.to_owned()].into(),
        }
    }
}

/// Upstream's default hard thresholds on Linux
/// ([`kubelet_container::threshold::default_eviction_hard`]).
pub fn default_hard_thresholds() -> Vec<Threshold> {
    ThresholdConfig {
        hard: kubelet_container::threshold::default_eviction_hard(),
        ..ThresholdConfig::default()
    }
    .parse()
    .unwrap_or_default()
}

/// What hard eviction thresholds hold back (upstream `hardEvictionReservation`):
/// `memory.available` → `memory`, `nodefs.available` → `ephemeral-storage`,
/// a percentage taken of capacity. Soft thresholds reserve nothing.
pub fn hard_eviction_reservation(
    thresholds: &[Threshold],
    capacity: &ResourceList,
) -> ResourceList {
    let mut out = ResourceList::new();
    for t in thresholds.iter().filter(|t| t.is_hard()) {
        let resource = match t.signal {
            Signal::MemoryAvailable => "memory",
            Signal::NodeFsAvailable => "ephemeral-storage",
            _ => continue,
        };
        let amount = match t.value {
            kubelet_container::threshold::ThresholdValue::Quantity(q) => q,
            percentage => {
                let Some(cap) = capacity.get(resource) else {
                    continue;
                };
                percentage.quantity(*cap)
            }
        };
        *out.entry(resource.to_owned()).or_insert(0) += amount;
    }
    out
}

fn subtract(capacity: &ResourceList, reservations: &[&ResourceList]) -> ResourceList {
    capacity
        .iter()
        .map(|(k, v)| {
            let reserved: i64 = reservations.iter().filter_map(|r| r.get(k)).sum();
            (k.clone(), v.saturating_sub(reserved).max(0))
        })
        .collect()
}

/// Fails when a reservation exceeds capacity (upstream `validateNodeAllocatable`).
pub fn validate_node_allocatable(
    capacity: &ResourceList,
    cfg: &NodeAllocatableConfig,
) -> Result<()> {
    let eviction = hard_eviction_reservation(&cfg.hard_eviction_thresholds, capacity);
    let mut errors = Vec::new();
    for (k, cap) in capacity {
        let reserved: i64 = [&cfg.kube_reserved, &cfg.system_reserved, &eviction]
            .iter()
            .filter_map(|r| r.get(k))
            .sum();
        if reserved > *cap {
            errors.push(format!(
                "Resource {k:?} has a reservation of {reserved} but capacity of {cap}. Expected capacity >= reservation."
            ));
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(Error::InvalidConfig(errors.join("; ")))
    }
}

/// The allocatable the node reports: capacity − kube-reserved −
/// system-reserved − hard eviction reservation, never negative, with
/// pre-allocated huge pages taken out of memory.
pub fn node_allocatable(capacity: &ResourceList, cfg: &NodeAllocatableConfig) -> ResourceList {
    let eviction = hard_eviction_reservation(&cfg.hard_eviction_thresholds, capacity);
    let mut out = subtract(
        capacity,
        &[&cfg.kube_reserved, &cfg.system_reserved, &eviction],
    );
    let hugepages: i64 = capacity
        .iter()
        .filter(|(k, _)| hugepage_size_of_resource(k).is_some())
        .map(|(_, v)| *v)
        .sum();
    if let Some(m) = out.get_mut("memory") {
        *m = m.saturating_sub(hugepages).max(0);
    }
    out
}

/// What the `kubepods` cgroup is limited to: capacity, or capacity −
/// kube-reserved − system-reserved when `cgroups_per_qos` and `"pods"` is
/// enforced. The eviction reservation is not subtracted (pods may use it until
/// the eviction manager acts), as upstream.
pub fn node_allocatable_enforced(
    capacity: &ResourceList,
    cfg: &NodeAllocatableConfig,
    cgroups_per_qos: bool,
) -> ResourceList {
    if cgroups_per_qos && cfg.enforce_node_allocatable.contains(ENFORCE_PODS) {
        subtract(capacity, &[&cfg.kube_reserved, &cfg.system_reserved])
    } else {
        capacity.clone()
    }
}

/// A cgroup config from a resource list (upstream `getCgroupConfig`): cpu
/// shares from `cpu`, memory limit, pids limit, huge page limits (0 for host
/// sizes not listed).
pub fn cgroup_config_for(list: &ResourceList, host_hugepage_sizes: &[String]) -> ResourceConfig {
    let mut rc = ResourceConfig::default();
    if let Some(m) = list.get("memory") {
        rc.memory_limit = Some(*m);
    }
    if let Some(c) = list.get("cpu") {
        rc.cpu_shares = Some(milli_cpu_to_shares(*c));
    }
    if let Some(p) = list.get(RESOURCE_PID) {
        rc.pids_limit = Some(*p);
    }
    for (k, v) in list {
        if let Some(size) = hugepage_size_of_resource(k) {
            rc.hugepage_limits.insert(size, *v);
        }
    }
    for size in host_hugepage_sizes {
        rc.hugepage_limits.entry(size.clone()).or_insert(0);
    }
    rc
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A hard threshold from `signal<value`.
    fn threshold(s: &str) -> Threshold {
        let (signal, value) = s.split_once('<').expect("signal<value");
        kubelet_container::threshold::parse_threshold_statement(signal, value)
            .expect("parses")
            .expect("a threshold")
    }

    fn list(pairs: &[(&str, i64)]) -> ResourceList {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()
    }

    const GI: i64 = 1 << 30;
    const MI: i64 = 1 << 20;

    #[test]
    fn allocatable_as_upstream() {
        // node_container_manager_linux_test.go TestNodeAllocatableReservationForScheduling.
        let mem_threshold = vec![threshold("memory.available<100Mi")];
        #[allow(clippy::type_complexity)]
        let cases: Vec<(
            &str,
            ResourceList,
            ResourceList,
            Vec<Threshold>,
            ResourceList,
            ResourceList,
        )> = vec![
            (
                "kube and system reserved",
                list(&[("cpu", 100), ("memory", 100 * MI)]),
                list(&[("cpu", 50), ("memory", 50 * MI)]),
                vec![],
                list(&[("cpu", 10_000), ("memory", 10 * GI)]),
                list(&[("cpu", 9850), ("memory", 10 * GI - 150 * MI)]),
            ),
            (
                "plus eviction",
                list(&[("cpu", 100), ("memory", 100 * MI)]),
                list(&[("cpu", 50), ("memory", 50 * MI)]),
                mem_threshold.clone(),
                list(&[("cpu", 10_000), ("memory", 10 * GI)]),
                list(&[("cpu", 9850), ("memory", 10 * GI - 250 * MI)]),
            ),
            (
                "eviction percentage",
                list(&[]),
                list(&[]),
                vec![threshold("memory.available<5%")],
                list(&[("cpu", 10_000), ("memory", 10 * GI)]),
                // Upstream's percentages are float32
                // (`evictionapi.ThresholdValue.Percentage`): 5 % of 10 GiB
                // is 536870920 bytes, 8 more than half a GiB.
                list(&[("cpu", 10_000), ("memory", 10 * GI - 536_870_920)]),
            ),
            (
                "reservation above capacity floors at zero",
                list(&[("memory", 20 * GI)]),
                list(&[]),
                vec![],
                list(&[("cpu", 10_000), ("memory", 10 * GI)]),
                list(&[("cpu", 10_000), ("memory", 0)]),
            ),
            (
                "nodefs reservation",
                list(&[]),
                list(&[]),
                vec![threshold("nodefs.available<10%")],
                list(&[("ephemeral-storage", 100 * GI)]),
                // 10 % as float32, as upstream: 160 bytes more than a tenth.
                list(&[("ephemeral-storage", 90 * GI - 160)]),
            ),
        ];
        for (name, kube, system, thresholds, capacity, want) in cases {
            let cfg = NodeAllocatableConfig {
                kube_reserved: kube,
                system_reserved: system,
                hard_eviction_thresholds: thresholds,
                ..Default::default()
            };
            assert_eq!(node_allocatable(&capacity, &cfg), want, "{name}");
        }
    }

    #[test]
    fn hugepages_leave_reported_memory() {
        let cap = list(&[("memory", 10 * GI), ("hugepages-2Mi", GI)]);
        let cfg = NodeAllocatableConfig {
            hard_eviction_thresholds: vec![],
            ..Default::default()
        };
        assert_eq!(node_allocatable(&cap, &cfg)["memory"], 9 * GI);
        // The cgroup limit keeps them (huge pages are not memory.limit's business).
        assert_eq!(
            node_allocatable_enforced(&cap, &cfg, true)["memory"],
            10 * GI
        );
    }

    #[test]
    fn enforced_and_cgroup_config() {
        let cap = list(&[("cpu", 2000), ("memory", 8 * GI), ("pid", 4096)]);
        let cfg = NodeAllocatableConfig {
            kube_reserved: list(&[("cpu", 500), ("memory", GI)]),
            system_reserved: list(&[("memory", GI), ("pid", 96)]),
            ..Default::default()
        };
        let enforced = node_allocatable_enforced(&cap, &cfg, true);
        assert_eq!(
            enforced,
            list(&[("cpu", 1500), ("memory", 6 * GI), ("pid", 4000)])
        );
        // Eviction's 100Mi is not in the cgroup limit but is in the reported value.
        assert_eq!(node_allocatable(&cap, &cfg)["memory"], 6 * GI - 100 * MI);
        let not_enforced = NodeAllocatableConfig {
            enforce_node_allocatable: BTreeSet::new(),
            ..cfg.clone()
        };
        assert_eq!(node_allocatable_enforced(&cap, &not_enforced, true), cap);
        assert_eq!(node_allocatable_enforced(&cap, &cfg, false), cap);
        let rc = cgroup_config_for(&enforced, &["2MB".into()]);
        assert_eq!(rc.cpu_shares, Some(1536));
        assert_eq!(rc.memory_limit, Some(6 * GI));
        assert_eq!(rc.pids_limit, Some(4000));
        assert_eq!(rc.hugepage_limits.get("2MB"), Some(&0));
    }

    #[test]
    fn validation_and_parsing() {
        let cap = list(&[("memory", GI)]);
        let cfg = NodeAllocatableConfig {
            kube_reserved: list(&[("memory", GI)]),
            ..Default::default()
        };
        let err = validate_node_allocatable(&cap, &cfg)
            .unwrap_err()
            .to_string();
        assert!(err.contains("Expected capacity >= reservation"), "{err}");
        assert!(validate_node_allocatable(&cap, &NodeAllocatableConfig::default()).is_ok());
        assert_eq!(default_hard_thresholds().len(), 5);
    }
}
