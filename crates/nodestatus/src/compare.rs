//! Whether a new status is worth a patch (upstream `nodeStatusHasChanged`,
//! `nodeConditionsHaveChanged` and the report-frequency test of
//! `tryUpdateNodeStatus`, `pkg/kubelet/kubelet_node_status.go`).

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{NodeCondition, NodeStatus};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kubelet_container::quantity;

/// Whether two quantities are the same amount (`1Gi` and `1073741824`,
/// `1` and `1000m`), as upstream's semantic equality compares them; text
/// that does not parse is compared as text.
pub fn quantities_equal(a: &Quantity, b: &Quantity) -> bool {
    if a.0 == b.0 {
        return true;
    }
    match (quantity::milli_value(&a.0), quantity::milli_value(&b.0)) {
        (Ok(x), Ok(y)) => x == y,
        // Too large for milli-units: whole units are exact enough.
        _ => match (quantity::value(&a.0), quantity::value(&b.0)) {
            (Ok(x), Ok(y)) => x == y,
            _ => false,
        },
    }
}

fn resource_lists_equal(
    a: Option<&BTreeMap<String, Quantity>>,
    b: Option<&BTreeMap<String, Quantity>>,
) -> bool {
    let empty = BTreeMap::new();
    let (a, b) = (a.unwrap_or(&empty), b.unwrap_or(&empty));
    a.len() == b.len()
        && a.iter()
            .all(|(k, v)| b.get(k).is_some_and(|w| quantities_equal(v, w)))
}

/// Upstream `nodeConditionsHaveChanged`: the conditions compared by type,
/// their heartbeat times ignored.
pub fn node_conditions_have_changed(old: &[NodeCondition], new: &[NodeCondition]) -> bool {
    if old.len() != new.len() {
        return true;
    }
    let key = |c: &NodeCondition| {
        let mut c = c.clone();
        c.last_heartbeat_time = None;
        c
    };
    let mut old: Vec<NodeCondition> = old.iter().map(key).collect();
    let mut new: Vec<NodeCondition> = new.iter().map(key).collect();
    old.sort_by(|a, b| a.type_.cmp(&b.type_));
    new.sort_by(|a, b| a.type_.cmp(&b.type_));
    old != new
}

/// Upstream `nodeStatusHasChanged`: any difference but condition heartbeat
/// times; quantities compare by amount and an absent list equals an empty
/// one, as upstream's semantic equality.
pub fn node_status_has_changed(old: &NodeStatus, new: &NodeStatus) -> bool {
    let conditions = |s: &NodeStatus| s.conditions.clone().unwrap_or_default();
    if node_conditions_have_changed(&conditions(old), &conditions(new)) {
        return true;
    }
    if !resource_lists_equal(old.capacity.as_ref(), new.capacity.as_ref())
        || !resource_lists_equal(old.allocatable.as_ref(), new.allocatable.as_ref())
    {
        return true;
    }
    let rest = |s: &NodeStatus| {
        let mut s = s.clone();
        s.conditions = None;
        s.capacity = None;
        s.allocatable = None;
        if s.images.as_ref().is_some_and(Vec::is_empty) {
            s.images = None;
        }
        if s.addresses.as_ref().is_some_and(Vec::is_empty) {
            s.addresses = None;
        }
        if s.volumes_in_use.as_ref().is_some_and(Vec::is_empty) {
            s.volumes_in_use = None;
        }
        if s.volumes_attached.as_ref().is_some_and(Vec::is_empty) {
            s.volumes_attached = None;
        }
        s
    };
    rest(old) != rest(new)
}

/// Upstream's rule for patching: when the status changed, or when
/// `report_frequency` has passed since the last successful report (or there
/// was none).
pub fn should_patch(
    changed: bool,
    since_last_report: Option<Duration>,
    report_frequency: Duration,
) -> bool {
    changed || since_last_report.is_none_or(|since| since >= report_frequency)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use k8s_openapi::jiff::Timestamp;

    fn at(secs: i64) -> Option<Time> {
        Some(Time(Timestamp::from_second(1_700_000_000 + secs).unwrap()))
    }

    fn c(t: &str, status: &str, hb: i64) -> NodeCondition {
        NodeCondition {
            type_: t.into(),
            status: status.into(),
            last_heartbeat_time: at(hb),
            last_transition_time: at(0),
            reason: Some("r".into()),
            message: Some("m".into()),
        }
    }

    #[test]
    fn quantities_compare_by_amount() {
        let q = |s: &str| Quantity(s.into());
        assert!(quantities_equal(&q("1Gi"), &q("1073741824")));
        assert!(quantities_equal(&q("1"), &q("1000m")));
        assert!(!quantities_equal(&q("1"), &q("2")));
        assert!(quantities_equal(&q("8Ei"), &q("8Ei")));
        assert!(!quantities_equal(&q("bogus"), &q("1")));
    }

    #[test]
    fn heartbeat_only_is_no_change() {
        let old = NodeStatus {
            conditions: Some(vec![c("Ready", "True", 0), c("MemoryPressure", "False", 0)]),
            ..Default::default()
        };
        // Same conditions, other order, newer heartbeats.
        let new = NodeStatus {
            conditions: Some(vec![
                c("MemoryPressure", "False", 10),
                c("Ready", "True", 10),
            ]),
            images: Some(vec![]),
            ..Default::default()
        };
        assert!(!node_status_has_changed(&old, &new));
        let flipped = NodeStatus {
            conditions: Some(vec![
                c("MemoryPressure", "True", 10),
                c("Ready", "True", 10),
            ]),
            ..Default::default()
        };
        assert!(node_status_has_changed(&old, &flipped));
        let fewer = NodeStatus {
            conditions: Some(vec![c("Ready", "True", 10)]),
            ..Default::default()
        };
        assert!(node_status_has_changed(&old, &fewer));
    }

    #[test]
    fn other_fields_count() {
        let q = |s: &str| Quantity(s.into());
        let old = NodeStatus {
            capacity: Some(BTreeMap::from([("memory".into(), q("8Gi"))])),
            ..Default::default()
        };
        let same = NodeStatus {
            capacity: Some(BTreeMap::from([("memory".into(), q("8589934592"))])),
            ..Default::default()
        };
        assert!(!node_status_has_changed(&old, &same));
        let more = NodeStatus {
            capacity: Some(BTreeMap::from([("memory".into(), q("9Gi"))])),
            ..Default::default()
        };
        assert!(node_status_has_changed(&old, &more));
        let mut info = old.clone();
        info.node_info = Some(Default::default());
        assert!(node_status_has_changed(&old, &info));
    }

    #[test]
    fn patch_when_changed_or_report_period_passed() {
        let five_min = Duration::from_secs(300);
        assert!(should_patch(false, None, five_min));
        assert!(!should_patch(
            false,
            Some(Duration::from_secs(10)),
            five_min
        ));
        assert!(should_patch(true, Some(Duration::from_secs(10)), five_min));
        assert!(should_patch(false, Some(five_min), five_min));
        assert!(should_patch(
            false,
            Some(Duration::from_secs(301)),
            five_min
        ));
    }
}
