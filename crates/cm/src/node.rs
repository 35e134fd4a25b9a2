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

use crate::error::{Error, Result};
use crate::machine::{RESOURCE_PID, ResourceList};
use crate::resources::{ResourceConfig, hugepage_size_of_resource, milli_cpu_to_shares};

/// The `enforceNodeAllocatable` key that limits the `kubepods` cgroup.
pub const ENFORCE_PODS: &str = "pods";
/// The key that limits the system-reserved cgroup.
pub const ENFORCE_SYSTEM_RESERVED: &str = "system-reserved";
/// The key that limits the kube-reserved cgroup.
pub const ENFORCE_KUBE_RESERVED: &str = "kube-reserved";

/// An eviction threshold's value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ThresholdValue {
    /// An absolute amount (bytes for memory and storage).
    Quantity(i64),
    /// A fraction of capacity, `0.0..=1.0`.
    Percentage(f64),
}

/// A hard eviction threshold such as `memory.available<100Mi`.
#[derive(Debug, Clone, PartialEq)]
pub struct EvictionThreshold {
    /// The signal (`memory.available`, `nodefs.available`, ...).
    pub signal: String,
    /// The amount below which the kubelet evicts.
    pub value: ThresholdValue,
}

impl EvictionThreshold {
    /// Parses `signal<value` (`memory.available<100Mi`, `nodefs.available<10%`).
    pub fn parse(s: &str) -> Result<Self> {
        let (signal, value) = s.split_once('<').ok_or_else(|| {
            Error::InvalidConfig(format!("eviction threshold {s:?}: expected signal<value"))
        })?;
        let value = match value.trim().strip_suffix('%') {
            Some(p) => {
                let pct: f64 = p.trim().parse().map_err(|_| {
                    Error::InvalidConfig(format!("eviction threshold {s:?}: bad percentage"))
                })?;
                if !(0.0..=100.0).contains(&pct) {
                    return Err(Error::InvalidConfig(format!(
                        "eviction threshold {s:?}: percentage out of range"
                    )));
                }
                ThresholdValue::Percentage(pct / 100.0)
            }
            None => ThresholdValue::Quantity(crate::quantity::value(value)?),
        };
        Ok(EvictionThreshold {
            signal: signal.trim().to_owned(),
            value,
        })
    }

    /// Upstream's default hard thresholds on Linux: `memory.available<100Mi`,
    /// `nodefs.available<10%`, `nodefs.inodesFree<5%`, `imagefs.available<15%`.
    pub fn defaults() -> Vec<Self> {
        [
            "memory.available<100Mi",
            "nodefs.available<10%",
            "nodefs.inodesFree<5%",
            "imagefs.available<15%",
        ]
        .iter()
        .filter_map(|s| Self::parse(s).ok())
        .collect()
    }
}

/// Kubelet settings that shape node allocatable.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeAllocatableConfig {
    /// `--kube-reserved`.
    pub kube_reserved: ResourceList,
    /// `--system-reserved`.
    pub system_reserved: ResourceList,
    /// Hard eviction thresholds (only `memory.available` and
    /// `nodefs.available` reserve anything).
    pub hard_eviction_thresholds: Vec<EvictionThreshold>,
    /// `enforceNodeAllocatable` (default `{"pods"}`).
    pub enforce_node_allocatable: BTreeSet<String>,
}

impl Default for NodeAllocatableConfig {
    fn default() -> Self {
        NodeAllocatableConfig {
            kube_reserved: ResourceList::new(),
            system_reserved: ResourceList::new(),
            hard_eviction_thresholds: EvictionThreshold::defaults(),
            enforce_node_allocatable: [ENFORCE_PODS.to_owned()].into(),
        }
    }
}

/// What hard eviction thresholds hold back (upstream `hardEvictionReservation`):
/// `memory.available` → `memory`, `nodefs.available` → `ephemeral-storage`,
/// a percentage taken of capacity.
pub fn hard_eviction_reservation(
    thresholds: &[EvictionThreshold],
    capacity: &ResourceList,
) -> ResourceList {
    let mut out = ResourceList::new();
    for t in thresholds {
        let resource = match t.signal.as_str() {
            "memory.available" => "memory",
            "nodefs.available" => "ephemeral-storage",
            _ => continue,
        };
        let amount = match t.value {
            ThresholdValue::Quantity(q) => q,
            ThresholdValue::Percentage(p) => {
                let Some(cap) = capacity.get(resource) else {
                    continue;
                };
                (*cap as f64 * p) as i64
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

    fn list(pairs: &[(&str, i64)]) -> ResourceList {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()
    }

    const GI: i64 = 1 << 30;
    const MI: i64 = 1 << 20;

    #[test]
    fn allocatable_as_upstream() {
        // node_container_manager_linux_test.go TestNodeAllocatableReservationForScheduling.
        let mem_threshold = vec![EvictionThreshold::parse("memory.available<100Mi").unwrap()];
        #[allow(clippy::type_complexity)]
        let cases: Vec<(
            &str,
            ResourceList,
            ResourceList,
            Vec<EvictionThreshold>,
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
                vec![EvictionThreshold::parse("memory.available<5%").unwrap()],
                list(&[("cpu", 10_000), ("memory", 10 * GI)]),
                list(&[("cpu", 10_000), ("memory", 10 * GI - GI / 2)]),
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
                vec![EvictionThreshold::parse("nodefs.available<10%").unwrap()],
                list(&[("ephemeral-storage", 100 * GI)]),
                list(&[("ephemeral-storage", 90 * GI)]),
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
        assert!(EvictionThreshold::parse("memory.available").is_err());
        assert!(EvictionThreshold::parse("memory.available<120%").is_err());
        assert!(EvictionThreshold::parse("memory.available<lots").is_err());
        assert_eq!(EvictionThreshold::defaults().len(), 4);
    }
}
