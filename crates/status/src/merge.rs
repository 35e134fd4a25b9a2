//! The pure rules of the status manager: which conditions the kubelet owns,
//! how its status is merged into the API server's, how statuses are
//! normalized and compared, and which container state transitions are
//! illegal.
//!
//! Upstream: `mergePodStatus`, `normalizeStatus`, `isPodStatusByKubeletEqual`,
//! `checkContainerStateTransition` and `updateLastTransitionTime` in
//! `pkg/kubelet/status/status_manager.go`; `PodConditionByKubelet` and
//! `PodConditionSharedByKubelet` in `pkg/kubelet/types/pod_status.go`; the
//! terminal-phase guard of `generateAPIPodStatus` in
//! `pkg/kubelet/kubelet_pods.go`.

use k8s_openapi::api::core::v1::{ContainerState, ContainerStatus, Pod, PodCondition, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::Value;

use crate::phase;

/// The pod condition types the kubelet reads and writes (upstream
/// `v1.PodConditionType` constants).
pub mod condition {
    /// Set by the scheduler when it binds the pod; upstream's kubelet also
    /// owns it and reports it `True`.
    pub const POD_SCHEDULED: &str = "PodScheduled";
    /// Every container is ready and every readiness gate is `True`.
    pub const READY: &str = "Ready";
    /// Every init container completed.
    pub const INITIALIZED: &str = "Initialized";
    /// Every container is ready.
    pub const CONTAINERS_READY: &str = "ContainersReady";
    /// The sandbox exists and its network is configured.
    pub const POD_READY_TO_START_CONTAINERS: &str = "PodReadyToStartContainers";
    /// An in-place resize waits.
    pub const POD_RESIZE_PENDING: &str = "PodResizePending";
    /// An in-place resize is being actuated.
    pub const POD_RESIZE_IN_PROGRESS: &str = "PodResizeInProgress";
    /// The pod is about to be terminated by a disruption (eviction,
    /// preemption, taint manager, or the kubelet itself).
    pub const DISRUPTION_TARGET: &str = "DisruptionTarget";
}

/// Termination messages of all a pod's containers share this many bytes
/// (upstream `kubecontainer.MaxPodTerminationMessageLogLength`).
pub const MAX_POD_TERMINATION_MESSAGE_LOG_LENGTH: usize = 1024 * 12;

/// True for the condition types the kubelet owns: it writes them and drops
/// whatever the API server had (upstream `kubetypes.PodConditionByKubelet`,
/// with the feature gates of 1.34: `PodReadyToStartContainers` and the resize
/// conditions included).
pub fn pod_condition_by_kubelet(condition_type: &str) -> bool {
    matches!(
        condition_type,
        condition::POD_SCHEDULED
            | condition::READY
            | condition::INITIALIZED
            | condition::CONTAINERS_READY
            | condition::POD_READY_TO_START_CONTAINERS
            | condition::POD_RESIZE_PENDING
            | condition::POD_RESIZE_IN_PROGRESS
    )
}

/// True for the condition types the kubelet shares with other writers
/// (upstream `kubetypes.PodConditionSharedByKubelet`): `DisruptionTarget`.
pub fn pod_condition_shared_by_kubelet(condition_type: &str) -> bool {
    condition_type == condition::DISRUPTION_TARGET
}

/// True for `Succeeded` and `Failed` (upstream `podutil.IsPodPhaseTerminal`).
pub fn is_phase_terminal(phase: Option<&str>) -> bool {
    matches!(phase, Some(phase::SUCCEEDED | phase::FAILED))
}

fn find<'a>(conditions: &'a Option<Vec<PodCondition>>, kind: &str) -> Option<&'a PodCondition> {
    conditions.iter().flatten().find(|c| c.type_ == kind)
}

fn now() -> Time {
    crate::now()
}

/// Keeps the old `lastTransitionTime` of `condition_type` when its status
/// did not change, and stamps it now when it did (upstream
/// `updateLastTransitionTime`).
pub fn update_last_transition_time(status: &mut PodStatus, old: &PodStatus, condition_type: &str) {
    let old_condition = find(&old.conditions, condition_type);
    if let Some(c) = status
        .conditions
        .iter_mut()
        .flatten()
        .find(|c| c.type_ == condition_type)
    {
        c.last_transition_time = match old_condition {
            Some(o) if o.status == c.status => o.last_transition_time.clone(),
            _ => Some(now()),
        };
    }
}

/// Sets `condition` in `status`, keeping the old transition time when its
/// status did not change (upstream `podutil.UpdatePodCondition`).
fn update_pod_condition(status: &mut PodStatus, mut condition: PodCondition) {
    let conditions = status.conditions.get_or_insert_with(Vec::new);
    match conditions.iter_mut().find(|c| c.type_ == condition.type_) {
        Some(existing) => {
            condition.last_transition_time = if existing.status == condition.status {
                existing.last_transition_time.clone()
            } else {
                Some(now())
            };
            *existing = condition;
        }
        None => {
            condition.last_transition_time = Some(now());
            conditions.push(condition);
        }
    }
}

fn is_condition_true(status: &PodStatus, kind: &str) -> bool {
    find(&status.conditions, kind).is_some_and(|c| c.status == "True")
}

/// Merges the kubelet's `new` status into the API server's `old` one, as
/// upstream `mergePodStatus`:
///
/// - conditions the kubelet does not own are kept from `old` (a
///   controller's readiness gate, a `DisruptionTarget` written by the
///   eviction API); the ones it owns come from `new`;
/// - `new`'s `DisruptionTarget` is sent only with the transition to a
///   terminal phase, and only once no container can run;
/// - the transition to a terminal phase waits while
///   `could_have_running_containers` (phase, reason and message stay as in
///   `old`);
/// - a terminal phase forces `Ready` and `ContainersReady` to `False`
///   (`PodFailed` / `PodCompleted`);
/// - `resourceClaimStatuses` and `extendedResourceClaimStatus` are not the
///   kubelet's and stay as in `old`.
///
/// Where this does more than upstream's `mergePodStatus`:
///
/// - a terminal phase in `old` is never changed (upstream enforces this in
///   `generateAPIPodStatus`, and the API server refuses the transition);
/// - the conditions keep `old`'s order (new ones last), so that the
///   merge converges: once applied, merging again sends nothing;
/// - a kubelet-owned condition whose status did not change keeps `old`'s
///   `lastTransitionTime`, so a status generated without the API's view
///   does not rewrite the scheduler's transition time;
/// - `PodScheduled` is kept from `old` when `new` has none (upstream's
///   kubelet always reports it, a caller of this crate might not), and
///   `hostIP`, `hostIPs` and `nominatedNodeName` are kept from `old` when
///   `new` leaves them unset.
pub fn merge_pod_status(
    old: &PodStatus,
    new: &PodStatus,
    could_have_running_containers: bool,
) -> PodStatus {
    let mut merged = new.clone();
    let new_has_scheduled = find(&new.conditions, condition::POD_SCHEDULED).is_some();
    let mut conditions: Vec<PodCondition> = old
        .conditions
        .iter()
        .flatten()
        .filter(|c| {
            !pod_condition_by_kubelet(&c.type_)
                || (c.type_ == condition::POD_SCHEDULED && !new_has_scheduled)
        })
        .cloned()
        .collect();
    let transitioning_to_terminal =
        !is_phase_terminal(old.phase.as_deref()) && is_phase_terminal(new.phase.as_deref());
    for c in new.conditions.iter().flatten() {
        if pod_condition_by_kubelet(&c.type_) {
            let mut c = c.clone();
            if let Some(o) = find(&old.conditions, &c.type_).filter(|o| o.status == c.status) {
                c.last_transition_time = o.last_transition_time.clone();
            }
            conditions.push(c);
        } else if pod_condition_shared_by_kubelet(&c.type_)
            && c.type_ == condition::DISRUPTION_TARGET
            && transitioning_to_terminal
            && !could_have_running_containers
        {
            // Sent late: the transition time set when it was recorded is
            // stale by now.
            update_last_transition_time(&mut merged, old, &c.type_);
            if let Some(c) = find(&merged.conditions, &c.type_).cloned() {
                match conditions.iter_mut().find(|x| x.type_ == c.type_) {
                    Some(existing) => *existing = c,
                    None => conditions.push(c),
                }
            }
        }
    }
    // Better than upstream (old's unowned first, then new's owned): the
    // API server's order is kept and new conditions come last, so a
    // status that did not change is not sent again just reordered.
    let position = |c: &PodCondition| {
        old.conditions
            .iter()
            .flatten()
            .position(|o| o.type_ == c.type_)
            .unwrap_or(usize::MAX)
    };
    conditions.sort_by_key(position);
    merged.conditions = Some(conditions);
    merged.resource_claim_statuses = old.resource_claim_statuses.clone();
    merged.extended_resource_claim_status = old.extended_resource_claim_status.clone();
    if merged.host_ip.is_none() {
        merged.host_ip = old.host_ip.clone();
    }
    if merged.host_ips.as_ref().is_none_or(Vec::is_empty) {
        merged.host_ips = old.host_ips.clone();
    }
    if merged.nominated_node_name.is_none() {
        merged.nominated_node_name = old.nominated_node_name.clone();
    }
    if transitioning_to_terminal && could_have_running_containers {
        merged.phase = old.phase.clone();
        merged.reason = old.reason.clone();
        merged.message = old.message.clone();
    }
    if is_phase_terminal(old.phase.as_deref()) && merged.phase != old.phase {
        tracing::warn!(
            api_phase = ?old.phase,
            kubelet_phase = ?merged.phase,
            "pod attempted illegal phase transition out of a terminal phase; keeping the API's"
        );
        merged.phase = old.phase.clone();
    }
    if is_phase_terminal(merged.phase.as_deref())
        && (is_condition_true(&merged, condition::READY)
            || is_condition_true(&merged, condition::CONTAINERS_READY))
    {
        let reason = if merged.phase.as_deref() == Some(phase::FAILED) {
            "PodFailed"
        } else {
            "PodCompleted"
        };
        for kind in [condition::CONTAINERS_READY, condition::READY] {
            update_pod_condition(
                &mut merged,
                PodCondition {
                    type_: kind.into(),
                    status: "False".into(),
                    reason: Some(reason.into()),
                    ..Default::default()
                },
            );
            // Better than upstream: already `False` on the API server, it
            // keeps that transition time, so the next round sends nothing.
            if let Some(o) = find(&old.conditions, kind).filter(|o| o.status == "False")
                && let Some(c) = merged
                    .conditions
                    .iter_mut()
                    .flatten()
                    .find(|c| c.type_ == kind)
            {
                c.last_transition_time = o.last_transition_time.clone();
            }
        }
    }
    merged
}

/// Which container went the wrong way, for
/// [`check_container_state_transition`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IllegalTransition {
    /// The container's name.
    pub container: String,
    /// True for an init container.
    pub init: bool,
}

fn is_restartable_init_container(c: &k8s_openapi::api::core::v1::Container) -> bool {
    c.restart_policy.as_deref() == Some("Always")
}

fn terminated(
    s: &ContainerStatus,
) -> Option<&k8s_openapi::api::core::v1::ContainerStateTerminated> {
    s.state.as_ref().and_then(|x| x.terminated.as_ref())
}

/// Refuses a container that goes from terminated back to not terminated
/// when the restart policy does not allow it to run again (upstream
/// `checkContainerStateTransition`): with `Always` anything goes, with
/// `OnFailure` only a failed container may restart, with `Never` none;
/// restartable init containers (sidecars) always may.
pub fn check_container_state_transition(
    old: &PodStatus,
    new: &PodStatus,
    pod: &Pod,
) -> Result<(), IllegalTransition> {
    let spec = pod.spec.as_ref();
    let policy = spec
        .and_then(|s| s.restart_policy.as_deref())
        .unwrap_or("Always");
    if policy == "Always" {
        return Ok(());
    }
    let may_restart = |t: &k8s_openapi::api::core::v1::ContainerStateTerminated| {
        t.exit_code != 0 && policy == "OnFailure"
    };
    for o in old.container_statuses.iter().flatten() {
        let Some(t) = terminated(o) else { continue };
        if may_restart(t) {
            continue;
        }
        if new
            .container_statuses
            .iter()
            .flatten()
            .any(|n| n.name == o.name && terminated(n).is_none())
        {
            return Err(IllegalTransition {
                container: o.name.clone(),
                init: false,
            });
        }
    }
    let inits = spec
        .and_then(|s| s.init_containers.as_deref())
        .unwrap_or_default();
    for o in old.init_container_statuses.iter().flatten() {
        if inits
            .iter()
            .find(|c| c.name == o.name)
            .is_some_and(is_restartable_init_container)
        {
            continue;
        }
        let Some(t) = terminated(o) else { continue };
        if may_restart(t) {
            continue;
        }
        if new
            .init_container_statuses
            .iter()
            .flatten()
            .any(|n| n.name == o.name && terminated(n).is_none())
        {
            return Err(IllegalTransition {
                container: o.name.clone(),
                init: true,
            });
        }
    }
    Ok(())
}

/// `t` truncated to whole seconds, as the API server stores it (upstream
/// `metav1.Time.Rfc3339Copy`).
fn to_seconds(t: &mut Time) {
    if let Ok(s) = k8s_openapi::jiff::Timestamp::new(t.0.as_second(), 0) {
        t.0 = s;
    }
}

fn truncate_bytes(s: &mut String, max: usize) {
    if s.len() > max {
        let mut end = max;
        while end > 0 && !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
}

fn normalize_state(state: &mut Option<ContainerState>, bytes_per_status: usize) {
    let Some(state) = state.as_mut() else { return };
    if let Some(t) = state.running.as_mut().and_then(|r| r.started_at.as_mut()) {
        to_seconds(t);
    }
    if let Some(t) = state.terminated.as_mut() {
        for time in [t.started_at.as_mut(), t.finished_at.as_mut()]
            .into_iter()
            .flatten()
        {
            to_seconds(time);
        }
        if let Some(m) = t.message.as_mut() {
            truncate_bytes(m, bytes_per_status);
        }
    }
}

/// Brings `status` to what the API server would store, so that comparisons
/// see only meaningful changes (upstream `normalizeStatus`): times to whole
/// seconds, termination messages cut to their share of
/// [`MAX_POD_TERMINATION_MESSAGE_LOG_LENGTH`], container and ephemeral
/// container statuses sorted by name, init container statuses in the
/// spec's order (when `pod` is given).
pub fn normalize_status(pod: Option<&Pod>, status: &mut PodStatus) {
    let spec = pod.and_then(|p| p.spec.as_ref());
    let containers = spec.map_or(0, |s| {
        s.containers.len()
            + s.init_containers.as_ref().map_or(0, Vec::len)
            + s.ephemeral_containers.as_ref().map_or(0, Vec::len)
    });
    let bytes_per_status = MAX_POD_TERMINATION_MESSAGE_LOG_LENGTH
        .checked_div(containers)
        .unwrap_or(MAX_POD_TERMINATION_MESSAGE_LOG_LENGTH);
    if let Some(t) = status.start_time.as_mut() {
        to_seconds(t);
    }
    for c in status.conditions.iter_mut().flatten() {
        for t in [c.last_probe_time.as_mut(), c.last_transition_time.as_mut()]
            .into_iter()
            .flatten()
        {
            to_seconds(t);
        }
    }
    for list in [
        status.container_statuses.as_mut(),
        status.init_container_statuses.as_mut(),
        status.ephemeral_container_statuses.as_mut(),
    ]
    .into_iter()
    .flatten()
    {
        for c in list.iter_mut() {
            normalize_state(&mut c.state, bytes_per_status);
            normalize_state(&mut c.last_state, bytes_per_status);
        }
    }
    if let Some(list) = status.container_statuses.as_mut() {
        list.sort_by(|a, b| a.name.cmp(&b.name));
    }
    if let Some(list) = status.ephemeral_container_statuses.as_mut() {
        list.sort_by(|a, b| a.name.cmp(&b.name));
    }
    if let (Some(list), Some(inits)) = (
        status.init_container_statuses.as_mut(),
        spec.and_then(|s| s.init_containers.as_ref()),
    ) {
        let index = |name: &str| {
            inits
                .iter()
                .position(|c| c.name == name)
                .unwrap_or(usize::MAX)
        };
        list.sort_by_key(|c| index(&c.name));
    }
}

/// Removes what Go's `omitempty` and the API server's semantic equality
/// treat as absent: `null`, `""`, `[]` and `{}`, recursively.
pub(crate) fn prune(value: &mut Value) -> bool {
    match value {
        Value::Null => false,
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => {
            for v in a.iter_mut() {
                prune(v);
            }
            !a.is_empty()
        }
        Value::Object(m) => {
            m.retain(|_, v| prune(v));
            !m.is_empty()
        }
        _ => true,
    }
}

/// The status as JSON with the empties pruned; `Null` when empty.
pub(crate) fn pruned_json(status: &PodStatus) -> Value {
    let mut v = serde_json::to_value(status).unwrap_or(Value::Null);
    if !prune(&mut v) {
        return Value::Null;
    }
    v
}

/// True when `new` says nothing `old` does not, as far as the kubelet is
/// concerned (upstream `isPodStatusByKubeletEqual`): every condition of
/// `new` the kubelet owns or shares is in `old` with the same status,
/// reason and message, and everything but the conditions is semantically
/// equal (times at whole seconds, empty and absent alike).
pub fn is_pod_status_by_kubelet_equal(old: &PodStatus, new: &PodStatus) -> bool {
    for c in new.conditions.iter().flatten() {
        if pod_condition_by_kubelet(&c.type_) || pod_condition_shared_by_kubelet(&c.type_) {
            let same = find(&old.conditions, &c.type_).is_some_and(|o| {
                o.status == c.status
                    && o.message.as_deref().unwrap_or_default()
                        == c.message.as_deref().unwrap_or_default()
                    && o.reason.as_deref().unwrap_or_default()
                        == c.reason.as_deref().unwrap_or_default()
            });
            if !same {
                return false;
            }
        }
    }
    // The common case, a pod worker's resync of an unchanged pod: equal
    // field for field but the conditions (compared above) is equal, without
    // the two clones and JSON documents the semantic comparison below costs
    // (about 20 µs a pod with 3 containers: 20 ms a resync of 1,000 pods).
    if equal_but_conditions(old, new) {
        return true;
    }
    let mut old = old.clone();
    old.conditions = new.conditions.clone();
    pruned_json(&old) == pruned_json(new)
}

/// `a == b` but for the conditions. Exact equality implies the semantic
/// equality of [`is_pod_status_by_kubelet_equal`]; the destructuring is
/// exhaustive, so a field added to `PodStatus` fails to compile here
/// rather than being left out of the comparison.
fn equal_but_conditions(a: &PodStatus, b: &PodStatus) -> bool {
    let PodStatus {
        conditions: _,
        container_statuses,
        ephemeral_container_statuses,
        extended_resource_claim_status,
        host_ip,
        host_ips,
        init_container_statuses,
        message,
        nominated_node_name,
        observed_generation,
        phase,
        pod_ip,
        pod_ips,
        qos_class,
        reason,
        resize,
        resource_claim_statuses,
        start_time,
    } = a;
    *container_statuses == b.container_statuses
        && *ephemeral_container_statuses == b.ephemeral_container_statuses
        && *extended_resource_claim_status == b.extended_resource_claim_status
        && *host_ip == b.host_ip
        && *host_ips == b.host_ips
        && *init_container_statuses == b.init_container_statuses
        && *message == b.message
        && *nominated_node_name == b.nominated_node_name
        && *observed_generation == b.observed_generation
        && *phase == b.phase
        && *pod_ip == b.pod_ip
        && *pod_ips == b.pod_ips
        && *qos_class == b.qos_class
        && *reason == b.reason
        && *resize == b.resize
        && *resource_claim_statuses == b.resource_claim_statuses
        && *start_time == b.start_time
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cond(kind: &str, status: &str) -> PodCondition {
        PodCondition {
            type_: kind.into(),
            status: status.into(),
            ..Default::default()
        }
    }

    fn status(phase: &str, conditions: Vec<PodCondition>) -> PodStatus {
        PodStatus {
            phase: Some(phase.into()),
            conditions: Some(conditions),
            ..Default::default()
        }
    }

    #[test]
    fn ownership_follows_upstream() {
        for c in ["PodScheduled", "Ready", "Initialized", "ContainersReady"] {
            assert!(pod_condition_by_kubelet(c), "{c}");
        }
        assert!(!pod_condition_by_kubelet("DisruptionTarget"));
        assert!(pod_condition_shared_by_kubelet("DisruptionTarget"));
        assert!(!pod_condition_by_kubelet("example.com/gate"));
    }

    #[test]
    fn disruption_target_waits_for_the_terminal_transition() {
        let old = status("Running", vec![cond("Ready", "True")]);
        let new = status(
            "Failed",
            vec![cond("Ready", "False"), cond("DisruptionTarget", "True")],
        );
        let held = merge_pod_status(&old, &new, true);
        assert_eq!(held.phase.as_deref(), Some("Running"));
        assert!(find(&held.conditions, "DisruptionTarget").is_none());
        let sent = merge_pod_status(&old, &new, false);
        assert_eq!(sent.phase.as_deref(), Some("Failed"));
        assert!(find(&sent.conditions, "DisruptionTarget").is_some());
        // Not transitioning (already terminal in the API): not re-sent.
        let again = merge_pod_status(&status("Failed", vec![]), &new, false);
        assert!(find(&again.conditions, "DisruptionTarget").is_none());
    }

    #[test]
    fn terminal_phase_forces_ready_false() {
        let old = status("Running", vec![]);
        let new = status(
            "Succeeded",
            vec![cond("Ready", "True"), cond("ContainersReady", "True")],
        );
        let m = merge_pod_status(&old, &new, false);
        for kind in ["Ready", "ContainersReady"] {
            let c = find(&m.conditions, kind).expect("condition");
            assert_eq!(c.status, "False");
            assert_eq!(c.reason.as_deref(), Some("PodCompleted"));
        }
    }

    #[test]
    fn illegal_transitions_are_refused_by_restart_policy() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p"},
            "spec": {"restartPolicy": "OnFailure", "containers": [{"name": "a"}, {"name": "b"}]}
        }))
        .expect("pod");
        let cs = |name: &str, exit: Option<i32>| ContainerStatus {
            name: name.into(),
            state: Some(match exit {
                Some(code) => ContainerState {
                    terminated: Some(k8s_openapi::api::core::v1::ContainerStateTerminated {
                        exit_code: code,
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                None => ContainerState::default(),
            }),
            ..Default::default()
        };
        let old = PodStatus {
            container_statuses: Some(vec![cs("a", Some(0)), cs("b", Some(1))]),
            ..Default::default()
        };
        // b failed and may restart under OnFailure; a succeeded and may not.
        let b_restarts = PodStatus {
            container_statuses: Some(vec![cs("a", Some(0)), cs("b", None)]),
            ..Default::default()
        };
        assert_eq!(
            check_container_state_transition(&old, &b_restarts, &pod),
            Ok(())
        );
        let a_restarts = PodStatus {
            container_statuses: Some(vec![cs("a", None), cs("b", Some(1))]),
            ..Default::default()
        };
        assert_eq!(
            check_container_state_transition(&old, &a_restarts, &pod),
            Err(IllegalTransition {
                container: "a".into(),
                init: false
            })
        );
    }

    #[test]
    fn normalize_cuts_messages_on_char_boundaries_and_sorts() {
        let mut s = PodStatus {
            container_statuses: Some(vec![
                ContainerStatus {
                    name: "b".into(),
                    state: Some(ContainerState {
                        terminated: Some(k8s_openapi::api::core::v1::ContainerStateTerminated {
                            message: Some("é".repeat(MAX_POD_TERMINATION_MESSAGE_LOG_LENGTH)),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                ContainerStatus {
                    name: "a".into(),
                    ..Default::default()
                },
            ]),
            ..Default::default()
        };
        normalize_status(None, &mut s);
        let list = s.container_statuses.unwrap_or_default();
        assert_eq!(list[0].name, "a");
        let m = list[1]
            .state
            .as_ref()
            .and_then(|s| s.terminated.as_ref())
            .and_then(|t| t.message.clone())
            .unwrap_or_default();
        assert_eq!(m.len(), MAX_POD_TERMINATION_MESSAGE_LOG_LENGTH);
    }

    /// The reference: the semantic comparison alone, without the fast path.
    fn by_json(old: &PodStatus, new: &PodStatus) -> bool {
        let mut old = old.clone();
        old.conditions = new.conditions.clone();
        pruned_json(&old) == pruned_json(new)
    }

    #[test]
    fn kubelet_equality_fast_path_agrees_with_the_json_comparison() {
        let at = |secs: i64, nanos: i32| {
            Time(k8s_openapi::jiff::Timestamp::new(secs, nanos).expect("time"))
        };
        let running = |name: &str| ContainerStatus {
            name: name.into(),
            ready: true,
            container_id: Some(format!("containerd://{name}")),
            state: Some(ContainerState {
                running: Some(k8s_openapi::api::core::v1::ContainerStateRunning {
                    started_at: Some(at(1_700_000_000, 0)),
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let mut ready = cond("Ready", "True");
        ready.last_transition_time = Some(at(1_700_000_000, 0));
        let base = PodStatus {
            host_ip: Some("192.168.1.10".into()),
            pod_ip: Some("10.88.0.5".into()),
            start_time: Some(at(1_700_000_000, 0)),
            container_statuses: Some(vec![running("a"), running("b")]),
            ..status(phase::RUNNING, vec![ready])
        };
        let variant = |f: &dyn Fn(&mut PodStatus)| {
            let mut s = base.clone();
            f(&mut s);
            s
        };
        let cases: Vec<(&str, PodStatus, bool)> = vec![
            ("identical", base.clone(), true),
            (
                "a condition's transition time only",
                variant(&|s| {
                    if let Some(c) = s.conditions.as_mut().and_then(|c| c.first_mut()) {
                        c.last_transition_time = Some(at(1_700_000_100, 0));
                    }
                }),
                true,
            ),
            (
                "an empty message against none",
                variant(&|s| s.message = Some(String::new())),
                true,
            ),
            (
                "a start time a fraction of a second later",
                variant(&|s| s.start_time = Some(at(1_700_000_000, 500_000_000))),
                by_json(
                    &base,
                    &variant(&|s| s.start_time = Some(at(1_700_000_000, 500_000_000))),
                ),
            ),
            (
                "a container no longer ready",
                variant(&|s| {
                    if let Some(c) = s.container_statuses.as_mut().and_then(|c| c.first_mut()) {
                        c.ready = false;
                    }
                }),
                false,
            ),
            (
                "another phase",
                variant(&|s| s.phase = Some(phase::SUCCEEDED.into())),
                false,
            ),
            (
                "another pod IP",
                variant(&|s| s.pod_ip = Some("10.88.0.6".into())),
                false,
            ),
        ];
        for (what, new, want) in cases {
            assert_eq!(is_pod_status_by_kubelet_equal(&base, &new), want, "{what}");
            assert_eq!(
                by_json(&base, &new),
                want,
                "{what}: the reference disagrees"
            );
        }
    }
}
