//! What a sync must do to bring a pod's runtime state to its spec.
//!
//! Mirrors upstream `computePodActions`, `podSandboxChanged`,
//! `computeInitContainerActions`, `hasAnyRegularContainerCreated` and
//! `ShouldContainerBeRestarted`
//! (`pkg/kubelet/kuberuntime/kuberuntime_manager.go`,
//! `kuberuntime_container.go`, `pkg/kubelet/container/helpers.go`). Pure
//! functions of the pod spec and the runtime status, so every rule is unit
//! tested without a runtime.
//!
//! Init containers follow v1.35, where `LegacySidecarContainers` is off:
//! every pod goes through [`compute_init_container_actions`], so
//! restartable init containers (sidecars, `restartPolicy: Always`) start
//! in order, each once the previous sidecar runs and passed its startup
//! probe, and keep running (restarted when they exit or fail a probe)
//! beside the app containers. Ephemeral containers to start are chosen by
//! [`crate::ephemeral::ephemeral_containers_to_start`].
//!
//! Not covered yet: in-place resize does not trigger actions.

use k8s_openapi::api::core::v1::{Container, Pod};
use kubelet_container::podres::is_restartable_init;
use kubelet_cri_client::api;

use crate::hash::HashContainer;
use crate::status::{ContainerState, ContainerStatus, PodStatus};

/// Why a container is to be killed, and what to report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerToKill {
    /// The container ID.
    pub id: String,
    /// Its name.
    pub name: String,
    /// The message logged and recorded as the `Killing` event's, in
    /// upstream's words (`Container app failed liveness probe, will be
    /// restarted`); empty for upstream's default, `Stopping container app`.
    pub message: String,
    /// The failed probe's own `terminationGracePeriodSeconds`, when the kill
    /// is for a liveness or startup probe failure and the probe sets one
    /// (upstream `setTerminationGracePeriod` in `kuberuntime_container.go`:
    /// it wins over the pod's, but not over a deletion's grace period).
    pub probe_grace_period: Option<i64>,
}

/// The actions of one sync (upstream `podActions`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodActions {
    /// Stop every container and the sandbox.
    pub kill_pod: bool,
    /// Create a new sandbox.
    pub create_sandbox: bool,
    /// The sandbox to use (the existing one, when not recreating).
    pub sandbox_id: Option<String>,
    /// The attempt number of the sandbox to create.
    pub attempt: u32,
    /// Init containers to start, in this order, as indices into
    /// `spec.initContainers` (upstream `InitContainersToStart`): the next
    /// one to run, and sidecars to (re)start.
    pub init_containers_to_start: Vec<usize>,
    /// App containers to start, as indices into `spec.containers`.
    pub containers_to_start: Vec<usize>,
    /// Containers to kill, when the pod itself is not killed.
    pub containers_to_kill: Vec<ContainerToKill>,
    /// Ephemeral containers to start, as indices into
    /// `spec.ephemeralContainers` (see [`crate::ephemeral`]).
    pub ephemeral_containers_to_start: Vec<usize>,
}

fn restart_policy(pod: &Pod) -> &str {
    pod.spec
        .as_ref()
        .and_then(|s| s.restart_policy.as_deref())
        .unwrap_or("Always")
}

fn host_network(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.host_network)
        .unwrap_or(false)
}

fn init_containers(pod: &Pod) -> &[Container] {
    pod.spec
        .as_ref()
        .and_then(|s| s.init_containers.as_deref())
        .unwrap_or_default()
}

fn app_containers(pod: &Pod) -> &[Container] {
    pod.spec
        .as_ref()
        .map(|s| s.containers.as_slice())
        .unwrap_or_default()
}

/// Whether the pod's sandbox must be (re)created, the attempt number for
/// the new one, and the sandbox to reuse or clean up (upstream
/// `podSandboxChanged`).
pub fn pod_sandbox_changed(pod: &Pod, status: &PodStatus) -> (bool, u32, Option<String>) {
    let Some(newest) = status.sandbox_statuses.first() else {
        return (true, 0, None);
    };
    let attempt = newest.metadata.as_ref().map(|m| m.attempt).unwrap_or(0);
    let ready = status
        .sandbox_statuses
        .iter()
        .filter(|s| s.state() == api::PodSandboxState::SandboxReady)
        .count();
    let id = Some(newest.id.clone());
    if ready > 1 {
        tracing::info!(pod = %status.name, "more than one ready sandbox: recreating");
        return (true, attempt + 1, id);
    }
    if newest.state() != api::PodSandboxState::SandboxReady {
        tracing::info!(pod = %status.name, "no ready sandbox: recreating");
        return (true, attempt + 1, id);
    }
    let sandbox_host_network = newest
        .linux
        .as_ref()
        .and_then(|l| l.namespaces.as_ref())
        .and_then(|n| n.options.as_ref())
        .is_some_and(|o| o.network() == api::NamespaceMode::Node);
    if sandbox_host_network != host_network(pod) {
        tracing::info!(pod = %status.name, "network namespace changed: recreating");
        return (true, attempt + 1, None);
    }
    let ip_empty = newest.network.as_ref().is_none_or(|n| n.ip.is_empty());
    if !host_network(pod) && ip_empty {
        tracing::info!(pod = %status.name, "sandbox has no IP: recreating");
        return (true, attempt + 1, id);
    }
    (false, attempt, id)
}

/// Upstream `isInitContainerFailed`.
fn is_init_container_failed(status: &ContainerStatus) -> bool {
    status.reason == "OOMKilled"
        || (status.state == ContainerState::Exited && status.exit_code != 0)
        || status.state == ContainerState::Unknown
}

/// Whether any app container was created (upstream
/// `hasAnyRegularContainerCreated`), which means initialization finished
/// before.
fn has_any_regular_container_created(pod: &Pod, status: &PodStatus) -> bool {
    app_containers(pod).iter().any(|c| {
        status
            .find_container_status_by_name(&c.name)
            .is_some_and(|s| {
                matches!(
                    s.state,
                    ContainerState::Created | ContainerState::Running | ContainerState::Exited
                )
            })
    })
}

fn kill_init(s: &ContainerStatus, message: String) -> ContainerToKill {
    ContainerToKill {
        id: s.id.clone(),
        name: s.name.clone(),
        message,
        probe_grace_period: None,
    }
}

/// A probe's own `terminationGracePeriodSeconds`.
fn probe_grace(probe: Option<&k8s_openapi::api::core::v1::Probe>) -> Option<i64> {
    probe.and_then(|p| p.termination_grace_period_seconds)
}

/// Sets the init container actions of a sync (upstream
/// `computeInitContainerActions`, `kuberuntime_container.go`) and returns
/// whether the pod is initialized. Walking the init containers from the
/// last one backwards:
///
/// - a created (never started) one is started again;
/// - a running sidecar counts as started once its startup probe (if any)
///   succeeded: then the next init container starts (the first time), or
///   the pod is initialized when it is the last one; a sidecar that failed
///   its startup or liveness probe, or whose spec changed, is killed and
///   started again;
/// - an exited sidecar is started again, whatever the pod's restart
///   policy (with the crash-loop backoff, when it is started);
/// - an exited regular init container that succeeded lets the next one
///   start, or initializes the pod when it is the last; one that failed is
///   retried, or, under `restartPolicy: Never`, kills the pod;
/// - in unknown state, a sidecar is killed and restarted; a regular one
///   too, unless the policy is `Never`, which kills the pod;
/// - once an app container was created or runs, only sidecars are kept
///   running (ones whose status is gone are started again);
/// - nothing started yet: the first init container starts.
///
/// Without `probes` every probe counts as passed.
pub fn compute_init_container_actions(
    pod: &Pod,
    status: &PodStatus,
    probes: Option<&dyn ProbeResults>,
    changes: &mut PodActions,
) -> bool {
    let inits = init_containers(pod);
    if inits.is_empty() {
        return true;
    }
    // Exited app containers do not count: after a reboot they belong to
    // the previous sandbox (upstream's workaround).
    let mut pod_has_initialized = app_containers(pod).iter().any(|c| {
        status
            .find_container_status_by_name(&c.name)
            .is_some_and(|s| matches!(s.state, ContainerState::Created | ContainerState::Running))
    });
    let mut previously_initialized = pod_has_initialized;
    let restart_on_failure = restart_policy(pod) != "Never";
    let last = inits.len() - 1;
    // Collected backwards, reversed at the end.
    let mut to_start = Vec::new();
    for (i, c) in inits.iter().enumerate().rev() {
        let sidecar = is_restartable_init(c);
        let Some(s) = status.find_container_status_by_name(&c.name) else {
            // Its status was removed: a sidecar must run again.
            if previously_initialized && sidecar {
                to_start.push(i);
            }
            continue;
        };
        if previously_initialized && !sidecar {
            continue;
        }
        match s.state {
            // Created but never started: the runtime failed to start it.
            ContainerState::Created => to_start.push(i),
            ContainerState::Running if sidecar => 'running: {
                if c.startup_probe.is_some() {
                    match probes.map_or(Some(ProbeOutcome::Success), |p| p.startup_result(&s.id)) {
                        Some(ProbeOutcome::Success) => {}
                        Some(ProbeOutcome::Failure) => {
                            changes.containers_to_kill.push(ContainerToKill {
                                probe_grace_period: probe_grace(c.startup_probe.as_ref()),
                                ..kill_init(
                                    s,
                                    format!("Init container {} failed startup probe", c.name),
                                )
                            });
                            to_start.push(i);
                            break 'running;
                        }
                        // Not run yet, or not known: wait for it.
                        Some(ProbeOutcome::Unknown) | None => break 'running,
                    }
                }
                if i == last {
                    pod_has_initialized = true;
                } else if !previously_initialized {
                    // Started for the first time: the next one may start.
                    to_start.push(i + 1);
                }
                if !s.hash.is_none_or(|h| h.matches(c)) {
                    changes.containers_to_kill.push(kill_init(
                        s,
                        format!("Init container {} definition changed", c.name),
                    ));
                    to_start.push(i);
                    break 'running;
                }
                if c.liveness_probe.is_some() && probes.is_some_and(|p| p.liveness_failed(&s.id)) {
                    changes.containers_to_kill.push(ContainerToKill {
                        probe_grace_period: probe_grace(c.liveness_probe.as_ref()),
                        ..kill_init(
                            s,
                            format!("Init container {} failed liveness probe", c.name),
                        )
                    });
                    to_start.push(i);
                }
            }
            // A regular init container runs to completion.
            ContainerState::Running => {}
            ContainerState::Exited if sidecar => to_start.push(i),
            ContainerState::Exited if is_init_container_failed(s) => {
                if !restart_on_failure {
                    changes.kill_pod = true;
                    changes.init_containers_to_start.clear();
                    return false;
                }
                to_start.push(i);
            }
            ContainerState::Exited if i == last => pod_has_initialized = true,
            ContainerState::Exited => to_start.push(i + 1),
            ContainerState::Unknown => {
                if !sidecar && !restart_on_failure {
                    changes.kill_pod = true;
                    changes.init_containers_to_start.clear();
                    return false;
                }
                changes.containers_to_kill.push(kill_init(
                    s,
                    "Init container is in \"unknown\" state, try killing it before restart".into(),
                ));
                to_start.push(i);
            }
        }
        previously_initialized = true;
    }
    if !previously_initialized {
        to_start.push(0);
    }
    to_start.reverse();
    changes.init_containers_to_start.extend(to_start);
    pod_has_initialized
}

/// Whether a container that is not running should be started (upstream
/// `ShouldContainerBeRestarted`).
pub fn should_container_be_restarted(container: &Container, pod: &Pod, status: &PodStatus) -> bool {
    if pod.metadata.deletion_timestamp.is_some() {
        return false;
    }
    let Some(s) = status.find_container_status_by_name(&container.name) else {
        return true;
    };
    match s.state {
        ContainerState::Running => false,
        ContainerState::Unknown | ContainerState::Created => true,
        ContainerState::Exited => match restart_policy(pod) {
            "Never" => false,
            "OnFailure" => s.exit_code != 0,
            _ => true,
        },
    }
}

/// A cached probe result (upstream `proberesults.Result`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeOutcome {
    /// Not known yet.
    Unknown,
    /// The probe passed.
    Success,
    /// The probe failed.
    Failure,
}

/// The probe results a sync acts on (upstream: the kubelet's liveness and
/// startup results managers, consulted by `computePodActions` and
/// `computeInitContainerActions`).
pub trait ProbeResults: Send + Sync {
    /// Whether the container (its CRI ID) failed its liveness probe.
    fn liveness_failed(&self, container_id: &str) -> bool;
    /// Whether the container (its CRI ID) failed its startup probe.
    fn startup_failed(&self, container_id: &str) -> bool;
    /// The container's (its CRI ID) cached startup result, `None` when its
    /// probe has not run yet: a sidecar with a startup probe counts as
    /// started only on [`ProbeOutcome::Success`].
    fn startup_result(&self, container_id: &str) -> Option<ProbeOutcome>;
}

/// Computes what a sync must do (upstream `computePodActions`), without
/// probe results.
pub fn compute_pod_actions(pod: &Pod, status: &PodStatus) -> PodActions {
    compute_pod_actions_with_probes(pod, status, None)
}

/// Computes what a sync must do (upstream `computePodActions`): a running
/// container that failed its liveness or startup probe is killed, and
/// started again unless the restart policy is `Never`.
pub fn compute_pod_actions_with_probes(
    pod: &Pod,
    status: &PodStatus,
    probes: Option<&dyn ProbeResults>,
) -> PodActions {
    let (create_sandbox, attempt, sandbox_id) = pod_sandbox_changed(pod, status);
    let mut changes = PodActions {
        kill_pod: create_sandbox,
        create_sandbox,
        sandbox_id,
        attempt,
        ..Default::default()
    };

    if create_sandbox {
        // A pod that must not restart, whose sandbox died after it ran, is done.
        if restart_policy(pod) == "Never" && attempt != 0 && !status.container_statuses.is_empty() {
            changes.create_sandbox = false;
            return changes;
        }
        let to_start: Vec<usize> = app_containers(pod)
            .iter()
            .enumerate()
            .filter(|(_, c)| {
                let succeeded = status
                    .find_container_status_by_name(&c.name)
                    .is_some_and(|s| s.state == ContainerState::Exited && s.exit_code == 0);
                !(restart_policy(pod) == "OnFailure" && succeeded)
            })
            .map(|(i, _)| i)
            .collect();
        if to_start.is_empty() && has_any_regular_container_created(pod, status) {
            changes.create_sandbox = false;
            return changes;
        }
        if !init_containers(pod).is_empty() {
            changes.init_containers_to_start = vec![0];
            return changes;
        }
        changes.containers_to_start = to_start;
        return changes;
    }

    // Ephemeral containers may start before initialization is done.
    changes.ephemeral_containers_to_start =
        crate::ephemeral::ephemeral_containers_to_start(pod, status);

    let initialized = compute_init_container_actions(pod, status, probes, &mut changes);
    if changes.kill_pod || !initialized {
        return changes;
    }

    let mut keep = 0;
    for (i, c) in app_containers(pod).iter().enumerate() {
        let s = status.find_container_status_by_name(&c.name);
        let running = s.filter(|s| s.state == ContainerState::Running);
        let Some(running) = running else {
            if should_container_be_restarted(c, pod, status) {
                if let Some(s) = s.filter(|s| s.state == ContainerState::Unknown) {
                    changes.containers_to_kill.push(ContainerToKill {
                        id: s.id.clone(),
                        name: s.name.clone(),
                        message: "Container is in \"unknown\" state, try killing it before restart"
                            .into(),
                        probe_grace_period: None,
                    });
                }
                changes.containers_to_start.push(i);
            }
            continue;
        };
        let (message, restart, probe_grace_period) = if !running.hash.is_none_or(|h| h.matches(c)) {
            (
                format!("Container {} definition changed", c.name),
                true,
                None,
            )
        } else if probes.is_some_and(|p| p.liveness_failed(&running.id)) {
            (
                format!("Container {} failed liveness probe", c.name),
                restart_policy(pod) != "Never",
                probe_grace(c.liveness_probe.as_ref()),
            )
        } else if probes.is_some_and(|p| p.startup_failed(&running.id)) {
            (
                format!("Container {} failed startup probe", c.name),
                restart_policy(pod) != "Never",
                probe_grace(c.startup_probe.as_ref()),
            )
        } else {
            keep += 1;
            continue;
        };
        changes.containers_to_kill.push(ContainerToKill {
            id: running.id.clone(),
            name: c.name.clone(),
            message: if restart {
                format!("{message}, will be restarted")
            } else {
                message
            },
            probe_grace_period,
        });
        if restart {
            changes.containers_to_start.push(i);
        }
    }
    if keep == 0 && changes.containers_to_start.is_empty() {
        changes.kill_pod = true;
        // Sidecars must not keep a finished pod alive.
        changes.init_containers_to_start.clear();
    }
    changes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::ContainerHash;
    use crate::labels::ContainerType;
    use k8s_openapi::api::core::v1::PodSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

    fn container(name: &str) -> Container {
        Container {
            name: name.into(),
            image: Some("busybox".into()),
            ..Default::default()
        }
    }

    fn pod(restart: &str, inits: &[&str], apps: &[&str]) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some("p".into()),
                namespace: Some("default".into()),
                uid: Some("u".into()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                restart_policy: Some(restart.into()),
                init_containers: (!inits.is_empty())
                    .then(|| inits.iter().map(|n| container(n)).collect()),
                containers: apps.iter().map(|n| container(n)).collect(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn ready_sandbox(attempt: u32) -> api::PodSandboxStatus {
        api::PodSandboxStatus {
            id: format!("sb{attempt}"),
            metadata: Some(api::PodSandboxMetadata {
                attempt,
                ..Default::default()
            }),
            state: api::PodSandboxState::SandboxReady as i32,
            network: Some(api::PodSandboxNetworkStatus {
                ip: "10.88.0.2".into(),
                additional_ips: vec![],
            }),
            ..Default::default()
        }
    }

    fn cs(name: &str, state: ContainerState, exit_code: i32) -> ContainerStatus {
        ContainerStatus {
            id: format!("id-{name}"),
            name: name.into(),
            state,
            created_at: 1,
            started_at: 1,
            finished_at: 0,
            exit_code,
            image: "busybox".into(),
            image_ref: String::new(),
            hash: Some(ContainerHash::of(&container(name))),
            restart_count: 0,
            reason: String::new(),
            message: String::new(),
            container_type: ContainerType::Regular,
            pod_termination_grace_period: None,
        }
    }

    fn status(
        sandboxes: Vec<api::PodSandboxStatus>,
        containers: Vec<ContainerStatus>,
    ) -> PodStatus {
        PodStatus {
            uid: "u".into(),
            name: "p".into(),
            namespace: "default".into(),
            ips: vec![],
            sandbox_statuses: sandboxes,
            container_statuses: containers,
        }
    }

    #[test]
    fn a_new_pod_gets_a_sandbox_and_all_its_containers() {
        let a = compute_pod_actions(&pod("Always", &[], &["a", "b"]), &PodStatus::default());
        assert!(a.create_sandbox && a.kill_pod);
        assert_eq!(a.attempt, 0);
        assert_eq!(a.containers_to_start, [0, 1]);
    }

    #[test]
    fn a_healthy_pod_needs_nothing() {
        let st = status(
            vec![ready_sandbox(0)],
            vec![cs("a", ContainerState::Running, 0)],
        );
        let a = compute_pod_actions(&pod("Always", &[], &["a"]), &st);
        assert_eq!(
            a,
            PodActions {
                sandbox_id: Some("sb0".into()),
                ..Default::default()
            }
        );
    }

    #[test]
    fn exited_containers_restart_by_policy() {
        for (policy, code, restart) in [
            ("Always", 0, true),
            ("Always", 1, true),
            ("OnFailure", 0, false),
            ("OnFailure", 137, true),
            ("Never", 1, false),
            ("Never", 0, false),
        ] {
            let st = status(
                vec![ready_sandbox(0)],
                vec![
                    cs("a", ContainerState::Exited, code),
                    cs("b", ContainerState::Running, 0),
                ],
            );
            let a = compute_pod_actions(&pod(policy, &[], &["a", "b"]), &st);
            assert_eq!(
                a.containers_to_start == [0],
                restart,
                "{policy} exit {code}: {a:?}"
            );
            assert!(!a.kill_pod, "{policy} exit {code}: b still runs");
        }
    }

    #[test]
    fn a_pod_whose_containers_all_finished_for_good_is_killed() {
        let st = status(
            vec![ready_sandbox(0)],
            vec![cs("a", ContainerState::Exited, 0)],
        );
        let a = compute_pod_actions(&pod("OnFailure", &[], &["a"]), &st);
        assert!(a.kill_pod && !a.create_sandbox);
    }

    #[test]
    fn a_dead_sandbox_is_recreated_with_the_next_attempt() {
        let mut dead = ready_sandbox(2);
        dead.state = api::PodSandboxState::SandboxNotready as i32;
        let st = status(vec![dead], vec![cs("a", ContainerState::Exited, 1)]);
        let a = compute_pod_actions(&pod("Always", &[], &["a"]), &st);
        assert!(a.create_sandbox && a.kill_pod);
        assert_eq!(a.attempt, 3);
        assert_eq!(a.containers_to_start, [0]);
        // With restartPolicy Never the pod is done instead.
        let a = compute_pod_actions(&pod("Never", &[], &["a"]), &st);
        assert!(!a.create_sandbox && a.kill_pod);
    }

    #[test]
    fn a_sandbox_without_ip_or_with_another_network_mode_is_recreated() {
        let mut no_ip = ready_sandbox(0);
        no_ip.network = None;
        let st = status(vec![no_ip], vec![cs("a", ContainerState::Running, 0)]);
        assert!(compute_pod_actions(&pod("Always", &[], &["a"]), &st).create_sandbox);
        let mut host = pod("Always", &[], &["a"]);
        if let Some(spec) = host.spec.as_mut() {
            spec.host_network = Some(true);
        }
        let st = status(
            vec![ready_sandbox(0)],
            vec![cs("a", ContainerState::Running, 0)],
        );
        let a = compute_pod_actions(&host, &st);
        assert!(a.create_sandbox);
        assert_eq!(a.sandbox_id, None, "a namespace change reuses no sandbox");
    }

    #[test]
    fn a_changed_spec_restarts_the_container() {
        let mut st = status(
            vec![ready_sandbox(0)],
            vec![cs("a", ContainerState::Running, 0)],
        );
        st.container_statuses[0].hash = Some(ContainerHash {
            version: 1,
            value: 7,
        });
        let a = compute_pod_actions(&pod("Never", &[], &["a"]), &st);
        assert_eq!(a.containers_to_start, [0]);
        assert_eq!(a.containers_to_kill.len(), 1);
        assert!(!a.kill_pod);
    }

    #[test]
    fn init_containers_run_one_at_a_time_in_order() {
        let p = pod("Always", &["i1", "i2"], &["a"]);
        let a = compute_pod_actions(&p, &PodStatus::default());
        assert_eq!(a.init_containers_to_start, [0]);
        assert!(a.containers_to_start.is_empty());

        let st = status(
            vec![ready_sandbox(0)],
            vec![cs("i1", ContainerState::Running, 0)],
        );
        let a = compute_pod_actions(&p, &st);
        assert!(a.init_containers_to_start.is_empty(), "i1 still runs");
        assert!(a.containers_to_start.is_empty());

        let st = status(
            vec![ready_sandbox(0)],
            vec![cs("i1", ContainerState::Exited, 0)],
        );
        assert_eq!(compute_pod_actions(&p, &st).init_containers_to_start, [1]);

        let st = status(
            vec![ready_sandbox(0)],
            vec![
                cs("i2", ContainerState::Exited, 0),
                cs("i1", ContainerState::Exited, 0),
            ],
        );
        let a = compute_pod_actions(&p, &st);
        assert!(a.init_containers_to_start.is_empty());
        assert_eq!(a.containers_to_start, [0]);
    }

    #[test]
    fn a_failed_init_container_blocks_the_app_containers() {
        let st = status(
            vec![ready_sandbox(0)],
            vec![cs("i1", ContainerState::Exited, 1)],
        );
        let a = compute_pod_actions(&pod("Always", &["i1"], &["a"]), &st);
        assert_eq!(a.init_containers_to_start, [0], "retried");
        assert!(a.containers_to_start.is_empty());
        let a = compute_pod_actions(&pod("Never", &["i1"], &["a"]), &st);
        assert!(a.kill_pod, "restartPolicy Never gives up");
        assert!(a.containers_to_start.is_empty());
    }

    #[test]
    fn a_deleted_pod_restarts_nothing() {
        let mut p = pod("Always", &[], &["a"]);
        p.metadata.deletion_timestamp = Some(Time(Default::default()));
        let st = status(
            vec![ready_sandbox(0)],
            vec![cs("a", ContainerState::Exited, 1)],
        );
        let a = compute_pod_actions(&p, &st);
        assert!(a.containers_to_start.is_empty());
        assert!(a.kill_pod);
    }

    struct Failed(&'static str, bool);
    impl ProbeResults for Failed {
        fn liveness_failed(&self, id: &str) -> bool {
            self.1 && id == self.0
        }
        fn startup_failed(&self, id: &str) -> bool {
            !self.1 && id == self.0
        }
        fn startup_result(&self, id: &str) -> Option<ProbeOutcome> {
            Some(if self.startup_failed(id) {
                ProbeOutcome::Failure
            } else {
                ProbeOutcome::Success
            })
        }
    }

    /// Probe results per container ID: liveness failures and startup
    /// results (absent: not run yet).
    #[derive(Default)]
    struct Probes {
        liveness_failed: Vec<String>,
        startup: Vec<(String, ProbeOutcome)>,
    }
    impl ProbeResults for Probes {
        fn liveness_failed(&self, id: &str) -> bool {
            self.liveness_failed.iter().any(|i| i == id)
        }
        fn startup_failed(&self, id: &str) -> bool {
            self.startup_result(id) == Some(ProbeOutcome::Failure)
        }
        fn startup_result(&self, id: &str) -> Option<ProbeOutcome> {
            self.startup.iter().find(|(i, _)| *i == id).map(|(_, r)| *r)
        }
    }

    fn init_containers_mut(p: &mut Pod) -> impl Iterator<Item = &mut Container> {
        p.spec
            .as_mut()
            .and_then(|s| s.init_containers.as_mut())
            .into_iter()
            .flatten()
    }

    /// A pod whose init containers named `s*` are sidecars.
    fn sidecar_pod(restart: &str, inits: &[&str], apps: &[&str]) -> Pod {
        let mut p = pod(restart, inits, apps);
        for c in init_containers_mut(&mut p).filter(|c| c.name.starts_with('s')) {
            c.restart_policy = Some("Always".into());
        }
        p
    }

    fn with_probes(mut p: Pod, name: &str, startup: bool, liveness: bool) -> Pod {
        let probe = || k8s_openapi::api::core::v1::Probe::default();
        for c in init_containers_mut(&mut p).filter(|c| c.name == name) {
            c.startup_probe = startup.then(probe);
            c.liveness_probe = liveness.then(probe);
        }
        p
    }

    fn init_actions(
        p: &Pod,
        st: &PodStatus,
        probes: Option<&dyn ProbeResults>,
    ) -> (PodActions, bool) {
        let mut a = PodActions::default();
        let done = compute_init_container_actions(p, st, probes, &mut a);
        (a, done)
    }

    fn running(names: &[&str]) -> PodStatus {
        status(
            vec![ready_sandbox(0)],
            names
                .iter()
                .map(|n| cs(n, ContainerState::Running, 0))
                .collect(),
        )
    }

    #[test]
    fn a_running_sidecar_lets_the_next_init_container_start() {
        let p = sidecar_pod("Always", &["s1", "i2", "s3"], &["a"]);
        let (a, done) = init_actions(&p, &PodStatus::default(), None);
        assert_eq!((a.init_containers_to_start, done), (vec![0], false));
        let (a, done) = init_actions(&p, &running(&["s1"]), None);
        assert_eq!((a.init_containers_to_start, done), (vec![1], false));
        // A running regular init container holds the next one back; the
        // sidecar before it is left alone.
        let (a, done) = init_actions(&p, &running(&["s1", "i2"]), None);
        assert_eq!((a.init_containers_to_start, done), (vec![], false));
        let mut st = running(&["s1"]);
        st.container_statuses
            .push(cs("i2", ContainerState::Exited, 0));
        let (a, done) = init_actions(&p, &st, None);
        assert_eq!((a.init_containers_to_start, done), (vec![2], false));
        // The last init container is a started sidecar: initialized.
        st.container_statuses
            .push(cs("s3", ContainerState::Running, 0));
        let (a, done) = init_actions(&p, &st, None);
        assert_eq!((a.init_containers_to_start, done), (vec![], true));
        assert!(a.containers_to_kill.is_empty() && !a.kill_pod);
    }

    #[test]
    fn app_containers_start_beside_running_sidecars() {
        let p = sidecar_pod("Always", &["s1", "i2"], &["a", "b"]);
        let mut st = running(&["s1"]);
        st.container_statuses
            .push(cs("i2", ContainerState::Exited, 0));
        let a = compute_pod_actions(&p, &st);
        assert_eq!(a.containers_to_start, [0, 1]);
        assert!(a.init_containers_to_start.is_empty());
        assert!(a.containers_to_kill.is_empty() && !a.kill_pod);
        // Running together: nothing to do.
        st.container_statuses
            .push(cs("a", ContainerState::Running, 0));
        st.container_statuses
            .push(cs("b", ContainerState::Running, 0));
        let a = compute_pod_actions(&p, &st);
        assert!(a.containers_to_start.is_empty() && a.init_containers_to_start.is_empty());
        assert!(a.containers_to_kill.is_empty() && !a.kill_pod);
    }

    #[test]
    fn a_sidecar_waits_for_its_startup_probe() {
        let p = with_probes(
            sidecar_pod("Always", &["s1", "i2"], &["a"]),
            "s1",
            true,
            false,
        );
        let st = running(&["s1"]);
        let none = Probes::default();
        let (a, done) = init_actions(&p, &st, Some(&none));
        assert_eq!(
            (a.init_containers_to_start, done),
            (vec![], false),
            "not run yet"
        );
        let unknown = Probes {
            startup: vec![("id-s1".into(), ProbeOutcome::Unknown)],
            ..Default::default()
        };
        let (a, _) = init_actions(&p, &st, Some(&unknown));
        assert!(a.init_containers_to_start.is_empty());
        let ok = Probes {
            startup: vec![("id-s1".into(), ProbeOutcome::Success)],
            ..Default::default()
        };
        let (a, _) = init_actions(&p, &st, Some(&ok));
        assert_eq!(a.init_containers_to_start, [1]);
        // A startup failure restarts the sidecar, and only it.
        let failed = Probes {
            startup: vec![("id-s1".into(), ProbeOutcome::Failure)],
            ..Default::default()
        };
        let (a, done) = init_actions(&p, &st, Some(&failed));
        assert_eq!((a.init_containers_to_start, done), (vec![0], false));
        assert_eq!(
            a.containers_to_kill,
            [ContainerToKill {
                id: "id-s1".into(),
                name: "s1".into(),
                message: "Init container s1 failed startup probe".into(),
                probe_grace_period: None,
            }]
        );
        // A sidecar without a startup probe ignores startup results.
        let p = sidecar_pod("Always", &["s1", "i2"], &["a"]);
        let (a, _) = init_actions(&p, &st, Some(&none));
        assert_eq!(a.init_containers_to_start, [1]);
    }

    /// Upstream `setTerminationGracePeriod` (`kuberuntime_container.go`),
    /// checked by the [NodeConformance] specs "should override
    /// timeoutGracePeriodSeconds when LivenessProbe field is set"
    /// (`common/node/container_probe.go`, app containers and sidecars).
    #[test]
    fn a_probe_kill_carries_the_probes_own_grace_period() {
        let with_grace = |p: Option<i64>| k8s_openapi::api::core::v1::Probe {
            termination_grace_period_seconds: p,
            ..Default::default()
        };
        let mut p = pod("Always", &[], &["a"]);
        let app = &mut p.spec.as_mut().expect("spec").containers[0];
        app.liveness_probe = Some(with_grace(Some(5)));
        app.startup_probe = Some(with_grace(None));
        let st = running(&["a"]);
        let live = Probes {
            liveness_failed: vec!["id-a".into()],
            ..Default::default()
        };
        let a = compute_pod_actions_with_probes(&p, &st, Some(&live));
        assert_eq!(a.containers_to_kill.len(), 1);
        assert_eq!(a.containers_to_kill[0].probe_grace_period, Some(5));
        let start = Probes {
            startup: vec![("id-a".into(), ProbeOutcome::Failure)],
            ..Default::default()
        };
        let a = compute_pod_actions_with_probes(&p, &st, Some(&start));
        assert_eq!(a.containers_to_kill.len(), 1);
        assert_eq!(
            a.containers_to_kill[0].probe_grace_period, None,
            "the pod's"
        );
        // A sidecar's liveness probe too.
        let mut p = with_probes(sidecar_pod("Always", &["s1"], &["a"]), "s1", false, true);
        init_containers_mut(&mut p).for_each(|c| c.liveness_probe = Some(with_grace(Some(7))));
        let st = running(&["s1", "a"]);
        let live = Probes {
            liveness_failed: vec!["id-s1".into()],
            ..Default::default()
        };
        let a = compute_pod_actions_with_probes(&p, &st, Some(&live));
        assert_eq!(a.containers_to_kill[0].probe_grace_period, Some(7));
    }

    #[test]
    fn a_sidecar_failing_liveness_is_restarted_whatever_the_policy() {
        for policy in ["Always", "OnFailure", "Never"] {
            let p = with_probes(sidecar_pod(policy, &["s1"], &["a"]), "s1", false, true);
            let st = running(&["s1", "a"]);
            let probes = Probes {
                liveness_failed: vec!["id-s1".into()],
                ..Default::default()
            };
            let a = compute_pod_actions_with_probes(&p, &st, Some(&probes));
            assert_eq!(a.init_containers_to_start, [0], "{policy}");
            assert_eq!(a.containers_to_kill.len(), 1, "{policy}");
            assert_eq!(
                a.containers_to_kill[0].message,
                "Init container s1 failed liveness probe"
            );
            assert!(a.containers_to_start.is_empty() && !a.kill_pod, "{policy}");
            // The app container's liveness is its own: a failed sidecar
            // liveness result is not read for a sidecar without the probe.
            let p = sidecar_pod(policy, &["s1"], &["a"]);
            let a = compute_pod_actions_with_probes(&p, &st, Some(&probes));
            assert!(
                a.containers_to_kill.is_empty(),
                "{policy}: no liveness probe"
            );
        }
    }

    #[test]
    fn an_exited_sidecar_restarts_whatever_the_policy() {
        for policy in ["Always", "OnFailure", "Never"] {
            for code in [0, 1] {
                let p = sidecar_pod(policy, &["s1"], &["a"]);
                let mut st = running(&["a"]);
                st.container_statuses
                    .push(cs("s1", ContainerState::Exited, code));
                let a = compute_pod_actions(&p, &st);
                assert_eq!(a.init_containers_to_start, [0], "{policy} exit {code}");
                assert!(!a.kill_pod && a.containers_to_kill.is_empty());
                assert!(a.containers_to_start.is_empty(), "a keeps running");
            }
        }
    }

    #[test]
    fn a_sidecar_whose_status_is_gone_starts_again_after_initialization() {
        let p = sidecar_pod("Always", &["s1", "i2"], &["a"]);
        // i2's status was garbage collected too: it is not run again.
        let a = compute_pod_actions(&p, &running(&["a"]));
        assert_eq!(a.init_containers_to_start, [0]);
        assert!(a.containers_to_start.is_empty() && !a.kill_pod);
    }

    #[test]
    fn a_changed_sidecar_is_restarted() {
        let p = sidecar_pod("Never", &["s1"], &["a"]);
        let mut st = running(&["s1", "a"]);
        st.container_statuses[0].hash = Some(ContainerHash {
            version: 1,
            value: 7,
        });
        let a = compute_pod_actions(&p, &st);
        assert_eq!(a.init_containers_to_start, [0]);
        assert_eq!(
            a.containers_to_kill[0].message,
            "Init container s1 definition changed"
        );
    }

    #[test]
    fn a_created_init_container_is_started_again() {
        for inits in [["s1"], ["i1"]] {
            let p = sidecar_pod("Always", &inits, &["a"]);
            let st = status(
                vec![ready_sandbox(0)],
                vec![cs(inits[0], ContainerState::Created, 0)],
            );
            let (a, done) = init_actions(&p, &st, None);
            assert_eq!((a.init_containers_to_start, done), (vec![0], false));
        }
    }

    #[test]
    fn an_unknown_init_container_is_killed_and_restarted_or_kills_the_pod() {
        for (name, policy, kill_pod) in [
            ("s1", "Never", false),
            ("s1", "Always", false),
            ("i1", "Always", false),
            ("i1", "OnFailure", false),
            ("i1", "Never", true),
        ] {
            let p = sidecar_pod(policy, &[name], &["a"]);
            let st = status(
                vec![ready_sandbox(0)],
                vec![cs(name, ContainerState::Unknown, 0)],
            );
            let (a, done) = init_actions(&p, &st, None);
            assert!(!done);
            assert_eq!(a.kill_pod, kill_pod, "{name} {policy}");
            if kill_pod {
                assert!(a.init_containers_to_start.is_empty());
            } else {
                assert_eq!(a.init_containers_to_start, [0], "{name} {policy}");
                assert_eq!(
                    a.containers_to_kill[0].message,
                    "Init container is in \"unknown\" state, try killing it before restart"
                );
            }
        }
    }

    #[test]
    fn a_failed_regular_init_container_after_a_sidecar_kills_the_pod_under_never() {
        let p = sidecar_pod("Never", &["s1", "i2"], &["a"]);
        let mut st = running(&["s1"]);
        st.container_statuses
            .push(cs("i2", ContainerState::Exited, 1));
        let a = compute_pod_actions(&p, &st);
        assert!(a.kill_pod && a.init_containers_to_start.is_empty());
        assert!(a.containers_to_start.is_empty());
        // OnFailure retries it, the sidecar keeps running.
        let p = sidecar_pod("OnFailure", &["s1", "i2"], &["a"]);
        let a = compute_pod_actions(&p, &st);
        assert!(!a.kill_pod);
        assert_eq!(a.init_containers_to_start, [1]);
        // An OOM-killed one counts as failed too.
        let mut st = running(&["s1"]);
        let mut oom = cs("i2", ContainerState::Exited, 0);
        oom.reason = "OOMKilled".into();
        st.container_statuses.push(oom);
        let p = sidecar_pod("Never", &["s1", "i2"], &["a"]);
        assert!(compute_pod_actions(&p, &st).kill_pod);
    }

    #[test]
    fn finished_app_containers_stop_the_sidecars_too() {
        // restartPolicy Never, the app container is done, the sidecar
        // runs: the pod is killed, the sidecar with it.
        let p = sidecar_pod("Never", &["s1"], &["a"]);
        let mut st = status(
            vec![ready_sandbox(0)],
            vec![
                cs("a", ContainerState::Exited, 0),
                cs("s1", ContainerState::Running, 0),
            ],
        );
        let a = compute_pod_actions(&p, &st);
        assert!(a.kill_pod);
        assert!(a.init_containers_to_start.is_empty());
        // The sidecar exited too: an exited app container does not prove
        // initialization (it may be of a previous sandbox), so upstream
        // starts the sidecar again first, and kills the pod on the next
        // sync.
        st.container_statuses[1] = cs("s1", ContainerState::Exited, 1);
        let a = compute_pod_actions(&p, &st);
        assert!(!a.kill_pod);
        assert_eq!(a.init_containers_to_start, [0]);
        assert!(a.containers_to_start.is_empty());
    }

    #[test]
    fn a_new_sandbox_restarts_from_the_first_init_container() {
        let p = sidecar_pod("Always", &["s1", "i2"], &["a"]);
        let mut dead = ready_sandbox(0);
        dead.state = api::PodSandboxState::SandboxNotready as i32;
        let st = status(vec![dead], vec![cs("s1", ContainerState::Exited, 0)]);
        let a = compute_pod_actions(&p, &st);
        assert!(a.create_sandbox);
        assert_eq!(a.init_containers_to_start, [0]);
        assert!(a.containers_to_start.is_empty());
        // OnFailure, the app container succeeded: nothing to restart.
        let p = sidecar_pod("OnFailure", &["s1"], &["a"]);
        let st = status(
            vec![ready_sandbox(0)],
            vec![cs("a", ContainerState::Exited, 0)],
        );
        let mut st2 = st.clone();
        st2.sandbox_statuses[0].state = api::PodSandboxState::SandboxNotready as i32;
        let a = compute_pod_actions(&p, &st2);
        assert!(!a.create_sandbox && a.kill_pod);
    }

    #[test]
    fn failed_liveness_or_startup_probes_restart_the_container_unless_never() {
        let st = status(
            vec![ready_sandbox(0)],
            vec![
                cs("a", ContainerState::Running, 0),
                cs("b", ContainerState::Running, 0),
            ],
        );
        let p = pod("Always", &[], &["a", "b"]);
        assert!(compute_pod_actions(&p, &st).containers_to_kill.is_empty());
        for liveness in [true, false] {
            let a = compute_pod_actions_with_probes(&p, &st, Some(&Failed("id-a", liveness)));
            assert_eq!(a.containers_to_kill.len(), 1);
            let kill = &a.containers_to_kill[0];
            assert_eq!(kill.id, "id-a");
            let probe = if liveness { "liveness" } else { "startup" };
            assert_eq!(
                kill.message,
                format!("Container a failed {probe} probe, will be restarted")
            );
            assert_eq!(a.containers_to_start, vec![0]);
            assert!(!a.kill_pod);
        }
        // Never: killed, not restarted; b keeps the pod alive.
        let never = pod("Never", &[], &["a", "b"]);
        let a = compute_pod_actions_with_probes(&never, &st, Some(&Failed("id-a", true)));
        assert_eq!(a.containers_to_kill.len(), 1);
        assert!(a.containers_to_start.is_empty());
        assert!(!a.kill_pod);
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        /// Something that happens to a running container between syncs.
        #[derive(Debug, Clone, Copy)]
        enum Event {
            Exit(i32),
            Startup(ProbeOutcome),
        }

        fn event() -> impl Strategy<Value = Event> {
            prop_oneof![
                Just(Event::Exit(0)),
                Just(Event::Exit(1)),
                Just(Event::Startup(ProbeOutcome::Success)),
                Just(Event::Startup(ProbeOutcome::Failure)),
                Just(Event::Startup(ProbeOutcome::Unknown)),
            ]
        }

        proptest! {
            /// A pod run from scratch, sync after sync, the runtime doing
            /// what the actions say and containers exiting or passing and
            /// failing startup probes between syncs: the app container is
            /// first started only once every regular init container
            /// succeeded and every sidecar passed its startup probe (a
            /// sidecar restarting after that does not hold the app
            /// containers back, as upstream); init containers to start
            /// come in spec order, once.
            #[test]
            fn app_containers_never_start_before_initialization(
                kinds in proptest::collection::vec(any::<bool>(), 1..5),
                events in proptest::collection::vec((0usize..6, event()), 0..40),
                policy in prop_oneof![Just("Always"), Just("OnFailure"), Just("Never")],
            ) {
                let names: Vec<String> = kinds
                    .iter()
                    .enumerate()
                    .map(|(i, sidecar)| format!("{}{i}", if *sidecar { 's' } else { 'i' }))
                    .collect();
                let refs: Vec<&str> = names.iter().map(String::as_str).collect();
                let mut p = sidecar_pod(policy, &refs, &["a"]);
                for n in refs.iter().filter(|n| n.starts_with('s')) {
                    p = with_probes(p, n, true, false);
                }
                let mut st = status(vec![ready_sandbox(0)], vec![]);
                let mut probes = Probes::default();
                let mut events = events.into_iter();
                // Init containers that succeeded, sidecars that passed their
                // startup probe, at some point.
                let mut initialized = std::collections::HashSet::new();
                for _ in 0..60 {
                    let a = compute_pod_actions_with_probes(&p, &st, Some(&probes));
                    let mut sorted = a.init_containers_to_start.clone();
                    sorted.sort_unstable();
                    sorted.dedup();
                    prop_assert_eq!(&sorted, &a.init_containers_to_start);
                    if a.kill_pod {
                        prop_assert!(a.init_containers_to_start.is_empty());
                        break;
                    }
                    let app_ran = st.find_container_status_by_name("a").is_some();
                    if !a.containers_to_start.is_empty() && !app_ran {
                        for n in &refs {
                            prop_assert!(initialized.contains(*n), "{} not started or done", n);
                        }
                    }
                    // The runtime does it.
                    fn set(st: &mut PodStatus, name: &str, state: ContainerState, code: i32) {
                        st.container_statuses.retain(|c| c.name != name);
                        st.container_statuses.push(cs(name, state, code));
                    }
                    for k in &a.containers_to_kill {
                        set(&mut st, &k.name, ContainerState::Exited, 137);
                    }
                    for &i in &a.init_containers_to_start {
                        set(&mut st, refs[i], ContainerState::Running, 0);
                        probes.startup.retain(|(id, _)| *id != format!("id-{}", refs[i]));
                    }
                    for _ in &a.containers_to_start {
                        set(&mut st, "a", ContainerState::Running, 0);
                    }
                    // Then something happens to one running container.
                    let Some((which, e)) = events.next() else { break };
                    let name = refs.get(which).copied().unwrap_or("a");
                    if st.find_container_status_by_name(name).map(|s| s.state)
                        != Some(ContainerState::Running)
                    {
                        continue;
                    }
                    match e {
                        Event::Exit(code) => {
                            if code == 0 && name.starts_with('i') {
                                initialized.insert(name);
                            }
                            set(&mut st, name, ContainerState::Exited, code)
                        }
                        Event::Startup(r) => {
                            if r == ProbeOutcome::Success && name.starts_with('s') {
                                initialized.insert(name);
                            }
                            probes.startup.retain(|(id, _)| *id != format!("id-{name}"));
                            probes.startup.push((format!("id-{name}"), r));
                        }
                    }
                }
            }
        }
    }
}
