//! What a sync must do to bring a pod's runtime state to its spec.
//!
//! Mirrors upstream `computePodActions`, `podSandboxChanged`,
//! `findNextInitContainerToRun` and `ShouldContainerBeRestarted`
//! (`pkg/kubelet/kuberuntime/kuberuntime_manager.go`,
//! `kuberuntime_container.go`, `pkg/kubelet/container/helpers.go`). Pure
//! functions of the pod spec and the runtime status, so every rule is unit
//! tested without a runtime.
//!
//! Ephemeral containers to start are chosen by
//! [`crate::ephemeral::ephemeral_containers_to_start`].
//!
//! Not covered yet: restartable init containers (sidecars) are treated as
//! classic init containers, probe results and in-place resize do not
//! trigger actions.

use k8s_openapi::api::core::v1::{Container, Pod};
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
    /// The init container to start next, as an index into
    /// `spec.initContainers`.
    pub next_init_container_to_start: Option<usize>,
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

/// The next init container to run (upstream `findNextInitContainerToRun`):
/// the status of the last failed one, the index to run next, and whether
/// initialization is done.
pub fn find_next_init_container_to_run<'a>(
    pod: &Pod,
    status: &'a PodStatus,
) -> (Option<&'a ContainerStatus>, Option<usize>, bool) {
    let inits = init_containers(pod);
    if inits.is_empty() {
        return (None, None, true);
    }
    // A running app container means initialization finished earlier.
    if app_containers(pod).iter().any(|c| {
        status
            .find_container_status_by_name(&c.name)
            .is_some_and(|s| s.state == ContainerState::Running)
    }) {
        return (None, None, true);
    }
    for (i, c) in inits.iter().enumerate().rev() {
        if let Some(s) = status.find_container_status_by_name(&c.name)
            && is_init_container_failed(s)
        {
            return (Some(s), Some(i), false);
        }
    }
    for (i, c) in inits.iter().enumerate().rev() {
        let Some(s) = status.find_container_status_by_name(&c.name) else {
            continue;
        };
        match s.state {
            ContainerState::Running => return (None, None, false),
            ContainerState::Exited if i == inits.len() - 1 => return (None, None, true),
            ContainerState::Exited => return (None, Some(i + 1), false),
            _ => {}
        }
    }
    (None, Some(0), false)
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

/// The probe results a sync acts on (upstream: the kubelet's liveness and
/// startup results managers, consulted by `computePodActions`).
pub trait ProbeResults: Send + Sync {
    /// Whether the container (its CRI ID) failed its liveness probe.
    fn liveness_failed(&self, container_id: &str) -> bool;
    /// Whether the container (its CRI ID) failed its startup probe.
    fn startup_failed(&self, container_id: &str) -> bool;
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
        if to_start.is_empty() {
            let (_, _, done) = find_next_init_container_to_run(pod, status);
            if done {
                changes.create_sandbox = false;
                return changes;
            }
        }
        if !init_containers(pod).is_empty() {
            changes.next_init_container_to_start = Some(0);
            return changes;
        }
        changes.containers_to_start = to_start;
        return changes;
    }

    // Ephemeral containers may start before initialization is done.
    changes.ephemeral_containers_to_start =
        crate::ephemeral::ephemeral_containers_to_start(pod, status);

    let (last_init, next_init, init_done) = find_next_init_container_to_run(pod, status);
    if !init_done {
        if let Some(next) = next_init {
            let failed = last_init.is_some_and(is_init_container_failed);
            if failed && restart_policy(pod) == "Never" {
                changes.kill_pod = true;
            } else {
                if let Some(s) = last_init.filter(|s| s.state == ContainerState::Unknown) {
                    changes.containers_to_kill.push(ContainerToKill {
                        id: s.id.clone(),
                        name: s.name.clone(),
                        message:
                            "Init container is in \"unknown\" state, try killing it before restart"
                                .into(),
                    });
                }
                changes.next_init_container_to_start = Some(next);
            }
        }
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
                    });
                }
                changes.containers_to_start.push(i);
            }
            continue;
        };
        let (message, restart) = if !running.hash.is_none_or(|h| h.matches(c)) {
            (format!("Container {} definition changed", c.name), true)
        } else if probes.is_some_and(|p| p.liveness_failed(&running.id)) {
            (
                format!("Container {} failed liveness probe", c.name),
                restart_policy(pod) != "Never",
            )
        } else if probes.is_some_and(|p| p.startup_failed(&running.id)) {
            (
                format!("Container {} failed startup probe", c.name),
                restart_policy(pod) != "Never",
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
        });
        if restart {
            changes.containers_to_start.push(i);
        }
    }
    if keep == 0 && changes.containers_to_start.is_empty() {
        changes.kill_pod = true;
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
        assert_eq!(a.next_init_container_to_start, Some(0));
        assert!(a.containers_to_start.is_empty());

        let st = status(
            vec![ready_sandbox(0)],
            vec![cs("i1", ContainerState::Running, 0)],
        );
        let a = compute_pod_actions(&p, &st);
        assert_eq!(a.next_init_container_to_start, None, "i1 still runs");
        assert!(a.containers_to_start.is_empty());

        let st = status(
            vec![ready_sandbox(0)],
            vec![cs("i1", ContainerState::Exited, 0)],
        );
        assert_eq!(
            compute_pod_actions(&p, &st).next_init_container_to_start,
            Some(1)
        );

        let st = status(
            vec![ready_sandbox(0)],
            vec![
                cs("i2", ContainerState::Exited, 0),
                cs("i1", ContainerState::Exited, 0),
            ],
        );
        let a = compute_pod_actions(&p, &st);
        assert_eq!(a.next_init_container_to_start, None);
        assert_eq!(a.containers_to_start, [0]);
    }

    #[test]
    fn a_failed_init_container_blocks_the_app_containers() {
        let st = status(
            vec![ready_sandbox(0)],
            vec![cs("i1", ContainerState::Exited, 1)],
        );
        let a = compute_pod_actions(&pod("Always", &["i1"], &["a"]), &st);
        assert_eq!(a.next_init_container_to_start, Some(0), "retried");
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
}
