//! Eviction signals and thresholds, and the parser of the kubelet's
//! `--eviction-hard`, `--eviction-soft`, `--eviction-soft-grace-period` and
//! `--eviction-minimum-reclaim` settings.
//!
//! Upstream: `pkg/kubelet/eviction/api/types.go` (signals, `ThresholdValue`,
//! `GetThresholdQuantity`), `helpers.go` (`ParseThresholdConfig`,
//! `parseThresholdStatement`, `parseGracePeriods`, `parseMinimumReclaims`,
//! `addAllocatableThresholds`, `UpdateContainerFsThresholds`) and
//! `defaults_linux.go` (`DefaultEvictionHard`).
//!
//! Where we do better: every error names the offending statement, and the
//! flag form (`memory.available<100Mi,nodefs.available<10%`) is parsed here
//! too ([`parse_eviction_flag`]) instead of in a separate flag package.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::Error;
use crate::duration::parse_go_duration;

/// An eviction signal (upstream `evictionapi.Signal`). The only operator is
/// "less than": a threshold is met when the available amount drops below
/// it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Signal {
    /// `memory.available`: node capacity minus working set.
    MemoryAvailable,
    /// `allocatableMemory.available`: the pods cgroup's limit minus its
    /// working set (added when `enforceNodeAllocatable` has `pods`).
    AllocatableMemoryAvailable,
    /// `nodefs.available`: bytes free on the kubelet's filesystem.
    NodeFsAvailable,
    /// `nodefs.inodesFree`.
    NodeFsInodesFree,
    /// `imagefs.available`: bytes free on the runtime's image filesystem.
    ImageFsAvailable,
    /// `imagefs.inodesFree`.
    ImageFsInodesFree,
    /// `containerfs.available`: the writable layers' filesystem (derived
    /// from nodefs or imagefs, see [`update_container_fs_thresholds`]).
    ContainerFsAvailable,
    /// `containerfs.inodesFree`.
    ContainerFsInodesFree,
    /// `pid.available`: the PID limit minus running processes.
    PidAvailable,
}

/// The resource a signal reclaims (upstream `signalToResource`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Resource {
    /// `memory`.
    Memory,
    /// `ephemeral-storage`.
    EphemeralStorage,
    /// `inodes` (internal to the eviction manager upstream).
    Inodes,
    /// `pids` (internal to the eviction manager upstream).
    Pids,
}

impl Resource {
    /// The name as upstream spells it in messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Resource::Memory => "memory",
            Resource::EphemeralStorage => "ephemeral-storage",
            Resource::Inodes => "inodes",
            Resource::Pids => "pids",
        }
    }
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A node pressure condition (upstream `v1.NodeConditionType` values the
/// eviction manager sets).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum NodeCondition {
    /// `MemoryPressure`.
    MemoryPressure,
    /// `DiskPressure`.
    DiskPressure,
    /// `PIDPressure`.
    PidPressure,
}

impl NodeCondition {
    /// The condition type as in the Node API.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeCondition::MemoryPressure => "MemoryPressure",
            NodeCondition::DiskPressure => "DiskPressure",
            NodeCondition::PidPressure => "PIDPressure",
        }
    }
}

impl fmt::Display for NodeCondition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Signal {
    /// Every signal, memory first.
    pub const ALL: [Signal; 9] = [
        Signal::MemoryAvailable,
        Signal::AllocatableMemoryAvailable,
        Signal::NodeFsAvailable,
        Signal::NodeFsInodesFree,
        Signal::ImageFsAvailable,
        Signal::ImageFsInodesFree,
        Signal::ContainerFsAvailable,
        Signal::ContainerFsInodesFree,
        Signal::PidAvailable,
    ];

    /// The signal's name in the kubelet's configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            Signal::MemoryAvailable => "memory.available",
            Signal::AllocatableMemoryAvailable => "allocatableMemory.available",
            Signal::NodeFsAvailable => "nodefs.available",
            Signal::NodeFsInodesFree => "nodefs.inodesFree",
            Signal::ImageFsAvailable => "imagefs.available",
            Signal::ImageFsInodesFree => "imagefs.inodesFree",
            Signal::ContainerFsAvailable => "containerfs.available",
            Signal::ContainerFsInodesFree => "containerfs.inodesFree",
            Signal::PidAvailable => "pid.available",
        }
    }

    /// The resource it reclaims (upstream `signalToResource`).
    pub fn resource(self) -> Resource {
        match self {
            Signal::MemoryAvailable | Signal::AllocatableMemoryAvailable => Resource::Memory,
            Signal::NodeFsAvailable | Signal::ImageFsAvailable | Signal::ContainerFsAvailable => {
                Resource::EphemeralStorage
            }
            Signal::NodeFsInodesFree
            | Signal::ImageFsInodesFree
            | Signal::ContainerFsInodesFree => Resource::Inodes,
            Signal::PidAvailable => Resource::Pids,
        }
    }

    /// The node condition reported while it is met (upstream
    /// `signalToNodeCondition`).
    pub fn node_condition(self) -> NodeCondition {
        match self.resource() {
            Resource::Memory => NodeCondition::MemoryPressure,
            Resource::EphemeralStorage | Resource::Inodes => NodeCondition::DiskPressure,
            Resource::Pids => NodeCondition::PidPressure,
        }
    }

    /// Whether it is a memory signal.
    pub fn is_memory(self) -> bool {
        self.resource() == Resource::Memory
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Signal {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        Signal::ALL
            .into_iter()
            .find(|sig| sig.as_str() == s)
            .ok_or_else(|| Error::InvalidThreshold {
                input: s.to_owned(),
                reason: format!(
                    "unsupported eviction signal {s} (supported: {})",
                    Signal::ALL.map(Signal::as_str).join(", ")
                ),
            })
    }
}

/// A threshold's amount: a quantity, or a fraction of the capacity
/// (upstream `ThresholdValue`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ThresholdValue {
    /// An absolute amount (bytes, inodes or PIDs).
    Quantity(i64),
    /// A fraction of the capacity, 0.0 to 1.0 (`10%` is 0.1).
    Percentage(f32),
}

impl ThresholdValue {
    /// The amount for a capacity (upstream `GetThresholdQuantity`:
    /// `capacity * percentage`, truncated).
    pub fn quantity(&self, capacity: i64) -> i64 {
        match *self {
            ThresholdValue::Quantity(q) => q,
            ThresholdValue::Percentage(p) => (capacity as f64 * f64::from(p)) as i64,
        }
    }
}

impl fmt::Display for ThresholdValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ThresholdValue::Quantity(q) => write!(f, "{q}"),
            ThresholdValue::Percentage(p) => write!(f, "{}%", p * 100.0),
        }
    }
}

/// An eviction threshold (upstream `evictionapi.Threshold`).
#[derive(Debug, Clone, PartialEq)]
pub struct Threshold {
    /// What is measured.
    pub signal: Signal,
    /// Below what the signal meets the threshold.
    pub value: ThresholdValue,
    /// How long it must be met before pods are evicted; zero for hard
    /// thresholds.
    pub grace_period: Duration,
    /// How much beyond the threshold to reclaim once it is met.
    pub min_reclaim: Option<ThresholdValue>,
}

impl Threshold {
    /// A hard threshold of `signal` at `value`.
    pub fn hard(signal: Signal, value: ThresholdValue) -> Self {
        Self {
            signal,
            value,
            grace_period: Duration::ZERO,
            min_reclaim: None,
        }
    }

    /// Whether eviction is immediate (upstream `isHardEvictionThreshold`).
    pub fn is_hard(&self) -> bool {
        self.grace_period.is_zero()
    }

    /// The amount for `capacity`, plus the minimum reclaim when
    /// `with_min_reclaim` (upstream `thresholdsMet`'s comparison value).
    pub fn quantity(&self, capacity: i64, with_min_reclaim: bool) -> i64 {
        let base = self.value.quantity(capacity);
        match (with_min_reclaim, self.min_reclaim) {
            (true, Some(m)) => base.saturating_add(m.quantity(capacity)),
            _ => base,
        }
    }

    /// Whether two thresholds are the same rule (upstream `hasThreshold`:
    /// signal, grace period and value; not the minimum reclaim).
    pub fn same_rule(&self, other: &Threshold) -> bool {
        self.signal == other.signal
            && self.grace_period == other.grace_period
            && self.value == other.value
    }
}

impl fmt::Display for Threshold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "threshold(signal={}, operator=LessThan, value={}, gracePeriod={:?})",
            self.signal, self.value, self.grace_period
        )
    }
}

/// Upstream `DefaultEvictionHard` on Linux (`defaults_linux.go`, newest
/// kubelet configuration defaults): `memory.available<100Mi`,
/// `nodefs.available<10%`, `nodefs.inodesFree<5%`, `imagefs.available<15%`,
/// `imagefs.inodesFree<5%`.
pub fn default_eviction_hard() -> BTreeMap<String, String> {
    [
        ("memory.available", "100Mi"),
        ("nodefs.available", "10%"),
        ("nodefs.inodesFree", "5%"),
        ("imagefs.available", "15%"),
        ("imagefs.inodesFree", "5%"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

/// The `enforceNodeAllocatable` key that adds `allocatableMemory.available`
/// (upstream `kubetypes.NodeAllocatableEnforcementKey`).
pub const NODE_ALLOCATABLE_ENFORCEMENT_KEY: &str = "pods";

fn invalid(input: impl Into<String>, reason: impl Into<String>) -> Error {
    Error::InvalidThreshold {
        input: input.into(),
        reason: reason.into(),
    }
}

/// Parses the flag form of a threshold map: `signal<value` or, for grace
/// periods and minimum reclaims, `signal=value`, separated by commas
/// (upstream `cliflag.LangleSeparatedMapStringString` and
/// `MapStringString`). Whitespace around items is ignored; an empty string
/// is an empty map.
pub fn parse_eviction_flag(flag: &str) -> Result<BTreeMap<String, String>, Error> {
    let mut out = BTreeMap::new();
    for item in flag.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (k, v) = item
            .split_once('<')
            .or_else(|| item.split_once('='))
            .ok_or_else(|| invalid(item, "expected signal<value or signal=value"))?;
        let (k, v) = (k.trim(), v.trim());
        if k.is_empty() || v.is_empty() {
            return Err(invalid(item, "empty signal or value"));
        }
        out.insert(k.to_owned(), v.to_owned());
    }
    Ok(out)
}

fn parse_percentage(statement: &str, val: &str) -> Result<f32, Error> {
    let num = val.trim_end_matches('%');
    let p: f64 = num
        .parse()
        .map_err(|_| invalid(statement, format!("{val:?} is not a percentage")))?;
    if !p.is_finite() {
        return Err(invalid(statement, format!("{val:?} is not a percentage")));
    }
    Ok((p / 100.0) as f32)
}

fn threshold_quantity(statement: &str, val: &str) -> Result<i64, Error> {
    crate::quantity::value(val)
        .map_err(|e| invalid(statement, format!("{val:?} is not a quantity: {e}")))
}

/// Parses one threshold statement (upstream `parseThresholdStatement`).
/// `0%` and `100%` mean "no threshold" and give `None`, as upstream.
pub fn parse_threshold_statement(signal: &str, val: &str) -> Result<Option<Threshold>, Error> {
    let statement = format!("{signal}<{val}");
    let sig: Signal = signal
        .parse()
        .map_err(|_| invalid(&statement, format!("unsupported eviction signal {signal}")))?;
    if val.ends_with('%') {
        if val == "0%" || val == "100%" {
            return Ok(None);
        }
        let p = parse_percentage(&statement, val)?;
        if p < 0.0 {
            return Err(invalid(
                &statement,
                format!("eviction percentage threshold {sig} must be >= 0%: {val}"),
            ));
        }
        if p > 1.0 {
            return Err(invalid(
                &statement,
                format!("eviction percentage threshold {sig} must be <= 100%: {val}"),
            ));
        }
        return Ok(Some(Threshold::hard(sig, ThresholdValue::Percentage(p))));
    }
    let q = threshold_quantity(&statement, val)?;
    if q <= 0 {
        return Err(invalid(
            &statement,
            format!("eviction threshold {sig} must be positive: {val}"),
        ));
    }
    Ok(Some(Threshold::hard(sig, ThresholdValue::Quantity(q))))
}

fn parse_min_reclaim(signal: &str, val: &str) -> Result<(Signal, ThresholdValue), Error> {
    let statement = format!("{signal}={val}");
    let sig: Signal = signal
        .parse()
        .map_err(|_| invalid(&statement, format!("unsupported eviction signal {signal}")))?;
    if val.ends_with('%') {
        let p = parse_percentage(&statement, val)?;
        if p <= 0.0 {
            return Err(invalid(
                &statement,
                format!("eviction percentage minimum reclaim {sig} must be positive: {val}"),
            ));
        }
        return Ok((sig, ThresholdValue::Percentage(p)));
    }
    let q = threshold_quantity(&statement, val)?;
    if q < 0 {
        return Err(invalid(
            &statement,
            format!("negative eviction minimum reclaim specified for {sig}"),
        ));
    }
    Ok((sig, ThresholdValue::Quantity(q)))
}

/// The kubelet's eviction settings as maps of signal name to value (the
/// `KubeletConfiguration` fields `evictionHard`, `evictionSoft`,
/// `evictionSoftGracePeriod`, `evictionMinimumReclaim` and
/// `enforceNodeAllocatable`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ThresholdConfig {
    /// `evictionHard`: signal → `100Mi` or `10%`.
    pub hard: BTreeMap<String, String>,
    /// `evictionSoft`.
    pub soft: BTreeMap<String, String>,
    /// `evictionSoftGracePeriod`: signal → Go duration (`1m30s`).
    pub soft_grace_period: BTreeMap<String, String>,
    /// `evictionMinimumReclaim`: signal → quantity or percentage.
    pub minimum_reclaim: BTreeMap<String, String>,
    /// `enforceNodeAllocatable` (`pods` adds `allocatableMemory.available`).
    pub enforce_node_allocatable: Vec<String>,
}

impl ThresholdConfig {
    /// The kubelet's defaults: [`default_eviction_hard`] and
    /// `enforceNodeAllocatable: [pods]`.
    pub fn kubelet_defaults() -> Self {
        Self {
            hard: default_eviction_hard(),
            enforce_node_allocatable: vec![NODE_ALLOCATABLE_ENFORCEMENT_KEY.to_owned()],
            ..Default::default()
        }
    }

    /// Parses into thresholds (upstream `ParseThresholdConfig`): hard
    /// thresholds, then soft ones with their grace periods (a soft threshold
    /// without one is an error), minimum reclaims attached, and the
    /// allocatable memory threshold copied from the hard `memory.available`
    /// when `enforce_node_allocatable` has `pods`. The output is ordered by
    /// signal within hard and soft (upstream iterates a Go map).
    pub fn parse(&self) -> Result<Vec<Threshold>, Error> {
        let mut results = Vec::new();
        for (k, v) in &self.hard {
            results.extend(parse_threshold_statement(k, v)?);
        }
        let mut grace = BTreeMap::new();
        for (k, v) in &self.soft_grace_period {
            let sig: Signal = k.parse()?;
            let d = parse_go_duration(v).map_err(|e| match e {
                Error::InvalidDuration { reason, .. } => {
                    invalid(format!("{k}={v}"), format!("invalid duration: {reason}"))
                }
                other => other,
            })?;
            grace.insert(sig, d);
        }
        let mut min_reclaims = BTreeMap::new();
        for (k, v) in &self.minimum_reclaim {
            let (sig, val) = parse_min_reclaim(k, v)?;
            min_reclaims.insert(sig, val);
        }
        for (k, v) in &self.soft {
            if let Some(mut t) = parse_threshold_statement(k, v)? {
                t.grace_period = *grace.get(&t.signal).ok_or_else(|| {
                    invalid(
                        format!("{k}<{v}"),
                        format!(
                            "grace period must be specified for the soft eviction threshold {}",
                            t.signal
                        ),
                    )
                })?;
                results.push(t);
            }
        }
        for t in &mut results {
            if let Some(m) = min_reclaims.get(&t.signal) {
                t.min_reclaim = Some(*m);
            }
        }
        if self
            .enforce_node_allocatable
            .iter()
            .any(|k| k == NODE_ALLOCATABLE_ENFORCEMENT_KEY)
        {
            let extra: Vec<Threshold> = results
                .iter()
                .filter(|t| t.signal == Signal::MemoryAvailable && t.is_hard())
                .map(|t| Threshold {
                    signal: Signal::AllocatableMemoryAvailable,
                    ..t.clone()
                })
                .collect();
            results.extend(extra);
        }
        Ok(results)
    }
}

/// Adds the `containerfs.*` thresholds from `nodefs.*` (one filesystem, or
/// containers split from a dedicated image filesystem) or `imagefs.*` (a
/// dedicated image filesystem holding the writable layers too), replacing
/// any the user set (upstream `UpdateContainerFsThresholds`, which warns
/// about them; so do we, through `tracing`).
pub fn update_container_fs_thresholds(
    thresholds: &[Threshold],
    dedicated_image_fs: bool,
    split_container_image_fs: bool,
) -> Vec<Threshold> {
    let mut out: Vec<Threshold> = Vec::with_capacity(thresholds.len() + 4);
    for t in thresholds {
        if matches!(
            t.signal,
            Signal::ContainerFsAvailable | Signal::ContainerFsInodesFree
        ) {
            tracing::warn!(signal = %t.signal, "containerfs thresholds are derived from nodefs or imagefs; ignoring the configured one");
        } else {
            out.push(t.clone());
        }
    }
    let from_nodefs = dedicated_image_fs == split_container_image_fs;
    let (bytes, inodes) = if from_nodefs {
        (Signal::NodeFsAvailable, Signal::NodeFsInodesFree)
    } else {
        (Signal::ImageFsAvailable, Signal::ImageFsInodesFree)
    };
    let derived: Vec<Threshold> = out
        .iter()
        .filter_map(|t| {
            let signal = if t.signal == bytes {
                Signal::ContainerFsAvailable
            } else if t.signal == inodes {
                Signal::ContainerFsInodesFree
            } else {
                return None;
            };
            Some(Threshold {
                signal,
                ..t.clone()
            })
        })
        .collect();
    out.extend(derived);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn q(signal: Signal, v: i64) -> Threshold {
        Threshold::hard(signal, ThresholdValue::Quantity(v))
    }

    fn pct(signal: Signal, v: f32) -> Threshold {
        Threshold::hard(signal, ThresholdValue::Percentage(v))
    }

    /// Upstream `TestParseThresholdConfig`, case by case.
    #[test]
    fn parse_threshold_config_table() {
        struct Case {
            name: &'static str,
            allocatable: Vec<&'static str>,
            hard: Vec<(&'static str, &'static str)>,
            soft: Vec<(&'static str, &'static str)>,
            grace: Vec<(&'static str, &'static str)>,
            min_reclaim: Vec<(&'static str, &'static str)>,
            want: Result<Vec<Threshold>, &'static str>,
        }
        let gi = 1i64 << 30;
        let mi = 1i64 << 20;
        let cases = vec![
            Case {
                name: "no values",
                allocatable: vec![],
                hard: vec![],
                soft: vec![],
                grace: vec![],
                min_reclaim: vec![],
                want: Ok(vec![]),
            },
            Case {
                name: "all memory eviction values",
                allocatable: vec![],
                hard: vec![("memory.available", "150Mi")],
                soft: vec![("memory.available", "300Mi")],
                grace: vec![("memory.available", "30s")],
                min_reclaim: vec![("memory.available", "0")],
                want: Ok(vec![
                    Threshold {
                        min_reclaim: Some(ThresholdValue::Quantity(0)),
                        ..q(Signal::MemoryAvailable, 150 * mi)
                    },
                    Threshold {
                        grace_period: Duration::from_secs(30),
                        min_reclaim: Some(ThresholdValue::Quantity(0)),
                        ..q(Signal::MemoryAvailable, 300 * mi)
                    },
                ]),
            },
            Case {
                name: "allocatable memory eviction values",
                allocatable: vec!["pods"],
                hard: vec![("memory.available", "150Mi")],
                soft: vec![],
                grace: vec![],
                min_reclaim: vec![("memory.available", "0")],
                want: Ok(vec![
                    Threshold {
                        min_reclaim: Some(ThresholdValue::Quantity(0)),
                        ..q(Signal::MemoryAvailable, 150 * mi)
                    },
                    Threshold {
                        min_reclaim: Some(ThresholdValue::Quantity(0)),
                        ..q(Signal::AllocatableMemoryAvailable, 150 * mi)
                    },
                ]),
            },
            Case {
                name: "percentage values and disk",
                allocatable: vec![],
                hard: vec![
                    ("memory.available", "10%"),
                    ("nodefs.available", "15%"),
                    ("nodefs.inodesFree", "5%"),
                ],
                soft: vec![("imagefs.available", "20%"), ("imagefs.inodesFree", "10%")],
                grace: vec![("imagefs.available", "1m30s"), ("imagefs.inodesFree", "2h")],
                min_reclaim: vec![("nodefs.available", "2Gi"), ("imagefs.inodesFree", "5%")],
                want: Ok(vec![
                    pct(Signal::MemoryAvailable, 0.1),
                    Threshold {
                        min_reclaim: Some(ThresholdValue::Quantity(2 * gi)),
                        ..pct(Signal::NodeFsAvailable, 0.15)
                    },
                    pct(Signal::NodeFsInodesFree, 0.05),
                    Threshold {
                        grace_period: Duration::from_secs(90),
                        ..pct(Signal::ImageFsAvailable, 0.2)
                    },
                    Threshold {
                        grace_period: Duration::from_secs(7200),
                        min_reclaim: Some(ThresholdValue::Percentage(0.05)),
                        ..pct(Signal::ImageFsInodesFree, 0.1)
                    },
                ]),
            },
            Case {
                name: "pid.available",
                allocatable: vec![],
                hard: vec![("pid.available", "1000")],
                soft: vec![],
                grace: vec![],
                min_reclaim: vec![],
                want: Ok(vec![q(Signal::PidAvailable, 1000)]),
            },
            Case {
                name: "0% and 100% are ignored",
                allocatable: vec![],
                hard: vec![("memory.available", "0%"), ("nodefs.available", "100%")],
                soft: vec![],
                grace: vec![],
                min_reclaim: vec![],
                want: Ok(vec![]),
            },
            Case {
                name: "invalid-signal",
                allocatable: vec![],
                hard: vec![("mem.available", "150Mi")],
                soft: vec![],
                grace: vec![],
                min_reclaim: vec![],
                want: Err("unsupported eviction signal mem.available"),
            },
            Case {
                name: "hard-signal-negative",
                allocatable: vec![],
                hard: vec![("memory.available", "-150Mi")],
                soft: vec![],
                grace: vec![],
                min_reclaim: vec![],
                want: Err("must be positive"),
            },
            Case {
                name: "hard-signal-negative-percentage",
                allocatable: vec![],
                hard: vec![("memory.available", "-15%")],
                soft: vec![],
                grace: vec![],
                min_reclaim: vec![],
                want: Err("must be >= 0%"),
            },
            Case {
                name: "hard-signal-over-100-percentage",
                allocatable: vec![],
                hard: vec![("memory.available", "150%")],
                soft: vec![],
                grace: vec![],
                min_reclaim: vec![],
                want: Err("must be <= 100%"),
            },
            Case {
                name: "hard-signal-zero",
                allocatable: vec![],
                hard: vec![("memory.available", "0")],
                soft: vec![],
                grace: vec![],
                min_reclaim: vec![],
                want: Err("must be positive"),
            },
            Case {
                name: "hard-signal-garbage",
                allocatable: vec![],
                hard: vec![("memory.available", "lots")],
                soft: vec![],
                grace: vec![],
                min_reclaim: vec![],
                want: Err("is not a quantity"),
            },
            Case {
                name: "soft-no-grace-period",
                allocatable: vec![],
                hard: vec![],
                soft: vec![("memory.available", "150Mi")],
                grace: vec![],
                min_reclaim: vec![],
                want: Err(
                    "grace period must be specified for the soft eviction threshold memory.available",
                ),
            },
            Case {
                name: "soft-invalid-grace-period",
                allocatable: vec![],
                hard: vec![],
                soft: vec![("memory.available", "150Mi")],
                grace: vec![("memory.available", "soon")],
                min_reclaim: vec![],
                want: Err("invalid duration"),
            },
            Case {
                name: "soft-negative-grace-period",
                allocatable: vec![],
                hard: vec![],
                soft: vec![("memory.available", "150Mi")],
                grace: vec![("memory.available", "-30s")],
                min_reclaim: vec![],
                want: Err("must be a positive value"),
            },
            Case {
                name: "negative-reclaim",
                allocatable: vec![],
                hard: vec![],
                soft: vec![],
                grace: vec![],
                min_reclaim: vec![("memory.available", "-300Mi")],
                want: Err("negative eviction minimum reclaim"),
            },
            Case {
                name: "zero-percentage-reclaim",
                allocatable: vec![],
                hard: vec![],
                soft: vec![],
                grace: vec![],
                min_reclaim: vec![("memory.available", "0%")],
                want: Err("must be positive"),
            },
            Case {
                name: "grace for an unknown signal",
                allocatable: vec![],
                hard: vec![],
                soft: vec![],
                grace: vec![("disk.available", "30s")],
                min_reclaim: vec![],
                want: Err("unsupported eviction signal disk.available"),
            },
        ];
        for c in cases {
            let cfg = ThresholdConfig {
                hard: map(&c.hard),
                soft: map(&c.soft),
                soft_grace_period: map(&c.grace),
                minimum_reclaim: map(&c.min_reclaim),
                enforce_node_allocatable: c.allocatable.iter().map(|s| (*s).to_owned()).collect(),
            };
            match (cfg.parse(), c.want) {
                (Ok(got), Ok(want)) => assert_eq!(got, want, "{}", c.name),
                (Err(e), Err(want)) => {
                    assert!(
                        e.to_string().contains(want),
                        "{}: {e} lacks {want:?}",
                        c.name
                    )
                }
                (got, want) => panic!("{}: got {got:?}, want {want:?}", c.name),
            }
        }
    }

    #[test]
    fn defaults_parse() {
        let t = ThresholdConfig::kubelet_defaults()
            .parse()
            .expect("defaults");
        assert!(t.contains(&q(Signal::MemoryAvailable, 100 << 20)));
        assert!(t.contains(&q(Signal::AllocatableMemoryAvailable, 100 << 20)));
        assert!(t.contains(&pct(Signal::NodeFsAvailable, 0.10)));
        assert!(t.contains(&pct(Signal::NodeFsInodesFree, 0.05)));
        assert!(t.contains(&pct(Signal::ImageFsAvailable, 0.15)));
        assert!(t.contains(&pct(Signal::ImageFsInodesFree, 0.05)));
        assert_eq!(t.len(), 6);
        assert!(t.iter().all(Threshold::is_hard));
    }

    #[test]
    fn flag_syntax() {
        let m = parse_eviction_flag(
            "memory.available<100Mi, nodefs.available<10%,nodefs.inodesFree<5%",
        )
        .expect("flag");
        assert_eq!(m.get("memory.available").map(String::as_str), Some("100Mi"));
        assert_eq!(m.get("nodefs.inodesFree").map(String::as_str), Some("5%"));
        let g = parse_eviction_flag("memory.available=1m30s").expect("grace");
        assert_eq!(g.get("memory.available").map(String::as_str), Some("1m30s"));
        assert!(parse_eviction_flag("").expect("empty").is_empty());
        let e = parse_eviction_flag("memory.available").expect_err("no value");
        assert!(e.to_string().contains("memory.available"), "{e}");
        assert!(parse_eviction_flag("<5%").is_err());
    }

    #[test]
    fn threshold_quantity_from_percentage() {
        let t = Threshold {
            min_reclaim: Some(ThresholdValue::Percentage(0.05)),
            ..pct(Signal::NodeFsAvailable, 0.1)
        };
        assert_eq!(t.quantity(1000, false), 100);
        assert_eq!(t.quantity(1000, true), 150);
        assert_eq!(q(Signal::MemoryAvailable, 7).quantity(1000, true), 7);
    }

    #[test]
    fn signal_maps_as_upstream() {
        for s in Signal::ALL {
            assert_eq!(s.as_str().parse::<Signal>().ok(), Some(s));
        }
        assert_eq!(
            Signal::AllocatableMemoryAvailable.node_condition(),
            NodeCondition::MemoryPressure
        );
        assert_eq!(
            Signal::ImageFsInodesFree.node_condition(),
            NodeCondition::DiskPressure
        );
        assert_eq!(
            Signal::ContainerFsAvailable.resource(),
            Resource::EphemeralStorage
        );
        assert_eq!(
            Signal::PidAvailable.node_condition(),
            NodeCondition::PidPressure
        );
        assert_eq!(Signal::NodeFsInodesFree.resource(), Resource::Inodes);
    }

    /// Upstream `TestUpdateContainerFsThresholds`, its three layouts.
    #[test]
    fn container_fs_thresholds_follow_the_layout() {
        let base = vec![
            pct(Signal::NodeFsAvailable, 0.1),
            pct(Signal::NodeFsInodesFree, 0.05),
            pct(Signal::ImageFsAvailable, 0.15),
            pct(Signal::ImageFsInodesFree, 0.07),
            pct(Signal::ContainerFsAvailable, 0.99),
        ];
        let find = |ts: &[Threshold], s: Signal| {
            ts.iter()
                .filter(|t| t.signal == s)
                .map(|t| t.value)
                .collect::<Vec<_>>()
        };
        // single filesystem: containerfs = nodefs
        let t = update_container_fs_thresholds(&base, false, false);
        assert_eq!(
            find(&t, Signal::ContainerFsAvailable),
            vec![ThresholdValue::Percentage(0.1)]
        );
        assert_eq!(
            find(&t, Signal::ContainerFsInodesFree),
            vec![ThresholdValue::Percentage(0.05)]
        );
        // dedicated imagefs holding writable layers: containerfs = imagefs
        let t = update_container_fs_thresholds(&base, true, false);
        assert_eq!(
            find(&t, Signal::ContainerFsAvailable),
            vec![ThresholdValue::Percentage(0.15)]
        );
        assert_eq!(
            find(&t, Signal::ContainerFsInodesFree),
            vec![ThresholdValue::Percentage(0.07)]
        );
        // split: containerfs = nodefs
        let t = update_container_fs_thresholds(&base, true, true);
        assert_eq!(
            find(&t, Signal::ContainerFsAvailable),
            vec![ThresholdValue::Percentage(0.1)]
        );
    }
}
