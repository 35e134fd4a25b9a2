//! QoS classes and the OOM score policy.
//!
//! Upstream: `pkg/apis/core/v1/helper/qos/qos.go` (`GetPodQOS`,
//! `ComputePodQOS`) and `pkg/kubelet/qos/policy.go`
//! (`GetContainerOOMScoreAdjust`).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Pod};

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use crate::podres::{self, is_restartable_init, milli_of, milli_to_value, parse_milli};

/// A pod's quality-of-service class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum QosClass {
    /// Every container has equal, non-zero cpu and memory requests and limits.
    Guaranteed,
    /// Anything between: some request or limit, but not Guaranteed.
    Burstable,
    /// No cpu or memory request or limit anywhere.
    BestEffort,
}

impl QosClass {
    /// The API spelling: `"Guaranteed"`, `"Burstable"` or `"BestEffort"`.
    pub fn as_str(&self) -> &'static str {
        match self {
            QosClass::Guaranteed => "Guaranteed",
            QosClass::Burstable => "Burstable",
            QosClass::BestEffort => "BestEffort",
        }
    }

    /// Parses the API spelling (as found in `status.qosClass`).
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "Guaranteed" => Some(QosClass::Guaranteed),
            "Burstable" => Some(QosClass::Burstable),
            "BestEffort" => Some(QosClass::BestEffort),
            _ => None,
        }
    }
}

impl std::fmt::Display for QosClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// OOM score adjustment of the kubelet itself (`KubeletOOMScoreAdj`).
pub const KUBELET_OOM_SCORE_ADJ: i64 = -999;
/// OOM score adjustment of Guaranteed and node-critical containers.
pub const GUARANTEED_OOM_SCORE_ADJ: i64 = -997;
/// OOM score adjustment of BestEffort containers.
pub const BEST_EFFORT_OOM_SCORE_ADJ: i64 = 1000;
/// Priority at and above which a pod is critical (`scheduling.SystemCriticalPriority`).
pub const SYSTEM_CRITICAL_PRIORITY: i32 = 2_000_000_000;

/// The pod's QoS class: `status.qosClass` when set (upstream `GetPodQOS`),
/// else [`compute_pod_qos`].
pub fn pod_qos_class(pod: &Pod) -> QosClass {
    pod.status
        .as_ref()
        .and_then(|s| s.qos_class.as_deref())
        .and_then(QosClass::parse)
        .unwrap_or_else(|| compute_pod_qos(pod))
}

/// Computes the QoS class from the spec alone (upstream `ComputePodQOS`).
///
/// Only `cpu` and `memory` count; app and init containers count, ephemeral
/// containers do not. BestEffort when no positive request or limit exists;
/// Guaranteed when every container has positive cpu and memory limits and the
/// summed requests equal the summed limits; Burstable otherwise. Pod-level
/// `spec.resources` (when they set cpu or memory) replace the containers.
pub fn compute_pod_qos(pod: &Pod) -> QosClass {
    // [cpu, memory] sums of positive requests and limits, and whether any was seen.
    let mut req = [0i64; 2];
    let mut lim = [0i64; 2];
    let mut req_seen = [false; 2];
    let mut lim_seen = [false; 2];
    let mut guaranteed = true;
    let mut visit = |r: Option<&BTreeMap<String, Quantity>>,
                     l: Option<&BTreeMap<String, Quantity>>| {
        // One pass over each list (they hold a handful of entries).
        let index = |k: &str| match k {
            "cpu" => Some(0),
            "memory" => Some(1),
            _ => None,
        };
        for (k, q) in r.into_iter().flatten() {
            if let Some(i) = index(k) {
                let v = parse_milli(k, q);
                if v > 0 {
                    req[i] = req[i].saturating_add(v);
                    req_seen[i] = true;
                }
            }
        }
        let mut limits_found = [false; 2];
        for (k, q) in l.into_iter().flatten() {
            if let Some(i) = index(k) {
                let v = parse_milli(k, q);
                if v > 0 {
                    lim[i] = lim[i].saturating_add(v);
                    lim_seen[i] = true;
                    limits_found[i] = true;
                }
            }
        }
        if !(limits_found[0] && limits_found[1]) {
            guaranteed = false;
        }
    };
    if let Some(r) = podres::pod_level(pod) {
        visit(r.requests.as_ref(), r.limits.as_ref());
    } else if let Some(spec) = pod.spec.as_ref() {
        for c in spec
            .containers
            .iter()
            .chain(spec.init_containers.iter().flatten())
        {
            let r = c.resources.as_ref();
            visit(
                r.and_then(|r| r.requests.as_ref()),
                r.and_then(|r| r.limits.as_ref()),
            );
        }
    }
    if !req_seen.iter().any(|s| *s) && !lim_seen.iter().any(|s| *s) {
        return QosClass::BestEffort;
    }
    // Every requested resource has an equal limit, and as many limits as requests.
    let equal = (0..2).all(|i| !req_seen[i] || (lim_seen[i] && lim[i] == req[i]));
    let same_count =
        req_seen.iter().filter(|s| **s).count() == lim_seen.iter().filter(|s| **s).count();
    if guaranteed && equal && same_count {
        return QosClass::Guaranteed;
    }
    QosClass::Burstable
}

/// Whether the pod is critical (upstream `kubelettypes.IsCriticalPod`):
/// a static or mirror pod, or priority at least [`SYSTEM_CRITICAL_PRIORITY`].
pub fn is_critical_pod(pod: &Pod) -> bool {
    let ann = pod.metadata.annotations.as_ref();
    let is_static = ann
        .and_then(|a| a.get("kubernetes.io/config.source"))
        .is_some_and(|s| s != "api");
    let is_mirror = ann.is_some_and(|a| a.contains_key("kubernetes.io/config.mirror"));
    let prio = pod.spec.as_ref().and_then(|s| s.priority);
    is_static || is_mirror || prio.is_some_and(|p| p >= SYSTEM_CRITICAL_PRIORITY)
}

/// Whether the pod is node-critical (upstream `IsNodeCriticalPod`): critical
/// and of priority class `system-node-critical`.
pub fn is_node_critical_pod(pod: &Pod) -> bool {
    is_critical_pod(pod)
        && pod
            .spec
            .as_ref()
            .and_then(|s| s.priority_class_name.as_deref())
            == Some("system-node-critical")
}

fn memory_request_bytes(c: &Container) -> i64 {
    milli_to_value(milli_of(
        c.resources.as_ref().and_then(|r| r.requests.as_ref()),
        "memory",
    ))
}

fn burstable_score(memory_request: i64, capacity: u64) -> i64 {
    // i128: 1000 × request cannot overflow; a zero capacity counts as one byte.
    let cap = i128::from(capacity.max(1));
    let score = 1000 - (1000 * i128::from(memory_request)) / cap;
    i64::try_from(score).unwrap_or(i64::MIN)
}

/// The `oom_score_adj` for a container (upstream `GetContainerOOMScoreAdjust`).
///
/// Node-critical pods and Guaranteed pods get -997, BestEffort 1000, and
/// Burstable `1000 - 1000 × memoryRequest / memoryCapacity`, clamped to
/// `[3, 999]`. A sidecar (restartable init container) gets no higher a score
/// than the regular container with the smallest memory request, as upstream
/// since the SidecarContainers feature.
///
/// On hosts without `CAP_SYS_RESOURCE` a negative value cannot be written;
/// the runtime clamps it (containerd's `restrict_oom_score_adj`). This
/// function returns upstream's value regardless.
pub fn container_oom_score_adj(
    pod: &Pod,
    container: &Container,
    memory_capacity_bytes: u64,
) -> i64 {
    if is_node_critical_pod(pod) {
        return GUARANTEED_OOM_SCORE_ADJ;
    }
    match pod_qos_class(pod) {
        QosClass::Guaranteed => return GUARANTEED_OOM_SCORE_ADJ,
        QosClass::BestEffort => return BEST_EFFORT_OOM_SCORE_ADJ,
        QosClass::Burstable => {}
    }
    let mut score = burstable_score(memory_request_bytes(container), memory_capacity_bytes);
    if is_restartable_init(container)
        && let Some(spec) = pod.spec.as_ref()
        && let Some(min_regular) = spec.containers.iter().map(memory_request_bytes).min()
    {
        score = score.min(burstable_score(min_regular, memory_capacity_bytes));
    }
    if score < 1000 + GUARANTEED_OOM_SCORE_ADJ {
        return 1000 + GUARANTEED_OOM_SCORE_ADJ;
    }
    if score == BEST_EFFORT_OOM_SCORE_ADJ {
        return score - 1;
    }
    score
}
