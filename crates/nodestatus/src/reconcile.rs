//! An already registered Node brought in line with this kubelet (upstream
//! `tryRegisterWithAPIServer` on AlreadyExists:
//! `reconcileCMADAnnotationWithExistingNode`, `updateDefaultLabels`,
//! `reconcileExtendedResource`, `reconcileHugePageResource` and
//! `updateDefaultResources`, `pkg/kubelet/kubelet_node_status.go`).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Node, NodeStatus};

use crate::compare::quantities_equal;
use crate::setters::{
    ANNOTATION_CONTROLLER_MANAGED_ATTACH_DETACH, LABEL_ARCH, LABEL_HOSTNAME, LABEL_OS,
    LEGACY_LABEL_ARCH, LEGACY_LABEL_OS, is_huge_page_resource_name,
};

/// The labels the kubelet owns on an existing Node (upstream
/// `updateDefaultLabels`): reset to the initial node's value when it has
/// one. `--node-labels` are not among them, as upstream: they are set at
/// registration only.
pub const DEFAULT_LABELS: [&str; 12] = [
    LABEL_HOSTNAME,
    "topology.kubernetes.io/zone",
    "topology.kubernetes.io/region",
    "failure-domain.beta.kubernetes.io/zone",
    "failure-domain.beta.kubernetes.io/region",
    "node.kubernetes.io/instance-type",
    "beta.kubernetes.io/instance-type",
    LABEL_OS,
    LABEL_ARCH,
    "node.kubernetes.io/windows-build",
    LEGACY_LABEL_OS,
    LEGACY_LABEL_ARCH,
];

/// Brings `existing` (the Node found on AlreadyExists) in line with
/// `initial` (what [`initial_node`](crate::initial_node) built); returns
/// whether anything changed, i.e. whether it must be patched.
///
/// In upstream's order: the controller-managed attach/detach annotation
/// follows `initial`; the default labels `initial` carries are reset (an
/// empty value removes the label); a missing capacity or allocatable is
/// copied from `initial`; huge page sizes are updated, added, and removed
/// when no longer supported. Not done: zeroing extended resources on a
/// recreated node (upstream asks its device manager, which this crate does
/// not have).
pub fn reconcile_existing(existing: &mut Node, initial: &Node) -> bool {
    let mut changed = reconcile_cmad_annotation(existing, initial);
    changed |= update_default_labels(existing, initial);
    let empty = NodeStatus::default();
    let initial_status = initial.status.as_ref().unwrap_or(&empty);
    let status = existing.status.get_or_insert_with(NodeStatus::default);
    changed |= update_default_resources(status, initial_status);
    changed |= reconcile_huge_pages(status, initial_status);
    changed
}

fn reconcile_cmad_annotation(existing: &mut Node, initial: &Node) -> bool {
    let key = ANNOTATION_CONTROLLER_MANAGED_ATTACH_DETACH;
    let wanted = initial
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(key));
    let current = existing
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(key));
    // Upstream compares values, an absent annotation being "".
    if wanted.map_or("", String::as_str) == current.map_or("", String::as_str) {
        return false;
    }
    match wanted {
        None => {
            tracing::info!(
                "controller attach-detach setting changed to false; updating existing Node"
            );
            if let Some(a) = existing.metadata.annotations.as_mut() {
                a.remove(key);
            }
        }
        Some(value) => {
            tracing::info!(
                "controller attach-detach setting changed to true; updating existing Node"
            );
            existing
                .metadata
                .annotations
                .get_or_insert_with(BTreeMap::new)
                .insert(key.to_owned(), value.clone());
        }
    }
    true
}

fn update_default_labels(existing: &mut Node, initial: &Node) -> bool {
    let Some(initial_labels) = initial.metadata.labels.as_ref() else {
        return false;
    };
    let labels = existing.metadata.labels.get_or_insert_with(BTreeMap::new);
    let mut changed = false;
    for label in DEFAULT_LABELS {
        let Some(value) = initial_labels.get(label) else {
            continue;
        };
        if labels.get(label).map_or("", String::as_str) != value {
            labels.insert(label.to_owned(), value.clone());
            changed = true;
        }
        if labels.get(label).is_some_and(String::is_empty) {
            labels.remove(label);
        }
    }
    changed
}

fn update_default_resources(status: &mut NodeStatus, initial: &NodeStatus) -> bool {
    let mut changed = false;
    if status.capacity.is_none() {
        changed |= initial.capacity.is_some();
        status.capacity = Some(initial.capacity.clone().unwrap_or_default());
    }
    if status.allocatable.is_none() {
        changed |= initial.allocatable.is_some();
        status.allocatable = Some(initial.allocatable.clone().unwrap_or_default());
    }
    changed
}

fn reconcile_huge_pages(status: &mut NodeStatus, initial: &NodeStatus) -> bool {
    let empty = BTreeMap::new();
    let initial_capacity = initial.capacity.as_ref().unwrap_or(&empty);
    let initial_allocatable = initial.allocatable.as_ref().unwrap_or(&empty);
    let capacity = status.capacity.get_or_insert_with(BTreeMap::new);
    let allocatable = status.allocatable.get_or_insert_with(BTreeMap::new);
    let mut changed = false;
    for (name, cap) in initial_capacity {
        if !is_huge_page_resource_name(name) {
            continue;
        }
        let supported = capacity.contains_key(name);
        if !capacity.get(name).is_some_and(|c| quantities_equal(c, cap)) {
            capacity.insert(name.clone(), cap.clone());
            changed = true;
        }
        let wanted = initial_allocatable.get(name).cloned().unwrap_or_default();
        if !supported
            || !allocatable
                .get(name)
                .is_some_and(|a| quantities_equal(a, &wanted))
        {
            allocatable.insert(name.clone(), wanted);
            changed = true;
        }
    }
    let gone: Vec<String> = capacity
        .keys()
        .filter(|k| is_huge_page_resource_name(k) && !initial_capacity.contains_key(*k))
        .cloned()
        .collect();
    for name in gone {
        tracing::info!(resource = %name, "removing huge page resource which is no longer supported");
        capacity.remove(&name);
        allocatable.remove(&name);
        changed = true;
    }
    changed
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use k8s_openapi::api::core::v1::NodeStatus;
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn node(labels: &[(&str, &str)], annotations: &[(&str, &str)], cap: &[(&str, &str)]) -> Node {
        let map = |kv: &[(&str, &str)]| -> BTreeMap<String, String> {
            kv.iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        };
        let quantities: BTreeMap<String, Quantity> = cap
            .iter()
            .map(|(k, v)| ((*k).to_owned(), Quantity((*v).to_owned())))
            .collect();
        Node {
            metadata: ObjectMeta {
                name: Some("n".into()),
                labels: Some(map(labels)),
                annotations: Some(map(annotations)),
                ..Default::default()
            },
            spec: None,
            status: Some(NodeStatus {
                capacity: Some(quantities.clone()),
                allocatable: Some(quantities),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn nothing_to_do() {
        let initial = node(
            &[(LABEL_HOSTNAME, "n"), (LABEL_OS, "linux")],
            &[(ANNOTATION_CONTROLLER_MANAGED_ATTACH_DETACH, "true")],
            &[("cpu", "4")],
        );
        let mut existing = initial.clone();
        existing
            .metadata
            .labels
            .as_mut()
            .unwrap()
            .insert("team".into(), "a".into());
        let before = existing.clone();
        assert!(!reconcile_existing(&mut existing, &initial));
        assert_eq!(existing, before);
    }

    #[test]
    fn labels_and_annotation_are_reconciled() {
        let initial = node(
            &[
                (LABEL_HOSTNAME, "n"),
                (LABEL_OS, "linux"),
                (LABEL_ARCH, "amd64"),
                ("role", "edge"),
            ],
            &[(ANNOTATION_CONTROLLER_MANAGED_ATTACH_DETACH, "true")],
            &[],
        );
        let mut existing = node(
            &[
                (LABEL_HOSTNAME, "old"),
                (LABEL_ARCH, "arm64"),
                ("team", "a"),
            ],
            &[],
            &[],
        );
        assert!(reconcile_existing(&mut existing, &initial));
        let labels = existing.metadata.labels.unwrap();
        assert_eq!(labels[LABEL_HOSTNAME], "n");
        assert_eq!(labels[LABEL_OS], "linux");
        assert_eq!(labels[LABEL_ARCH], "amd64");
        // Not a default label: --node-labels are not reconciled; others' labels stay.
        assert!(!labels.contains_key("role"));
        assert_eq!(labels["team"], "a");
        assert_eq!(
            existing.metadata.annotations.unwrap()[ANNOTATION_CONTROLLER_MANAGED_ATTACH_DETACH],
            "true"
        );
    }

    #[test]
    fn cmad_annotation_is_removed_when_disabled() {
        let initial = node(&[], &[], &[]);
        let mut existing = node(
            &[],
            &[(ANNOTATION_CONTROLLER_MANAGED_ATTACH_DETACH, "true")],
            &[],
        );
        assert!(reconcile_existing(&mut existing, &initial));
        assert!(existing.metadata.annotations.unwrap().is_empty());
    }

    #[test]
    fn huge_pages_follow_the_machine() {
        let initial = node(&[], &[], &[("cpu", "4"), ("hugepages-2Mi", "1Gi")]);
        let mut existing = node(&[], &[], &[("cpu", "4"), ("hugepages-1Gi", "2Gi")]);
        assert!(reconcile_existing(&mut existing, &initial));
        let status = existing.status.unwrap();
        let cap = status.capacity.unwrap();
        assert_eq!(cap.get("hugepages-2Mi"), Some(&Quantity("1Gi".into())));
        assert!(!cap.contains_key("hugepages-1Gi"));
        assert!(!status.allocatable.unwrap().contains_key("hugepages-1Gi"));
    }

    #[test]
    fn missing_resources_are_copied() {
        let initial = node(&[], &[], &[("cpu", "4")]);
        let mut existing = node(&[], &[], &[]);
        existing.status = None;
        assert!(reconcile_existing(&mut existing, &initial));
        let status = existing.status.unwrap();
        assert_eq!(status.capacity.unwrap()["cpu"], Quantity("4".into()));
        assert_eq!(status.allocatable.unwrap()["cpu"], Quantity("4".into()));
    }
}
