//! Ephemeral containers (what `kubectl debug` adds to a running pod).
//!
//! Mirrors upstream `pkg/kubelet/kuberuntime`:
//!
//! - `computePodActions` (`kuberuntime_manager.go`): an ephemeral container
//!   with no status yet is started, once; one that ran is never restarted,
//!   whatever the pod's restart policy
//!   ([`ephemeral_containers_to_start`]). As upstream, none is started in
//!   the sync that creates the sandbox, and they may start before the
//!   pod's initialization is done.
//! - `SyncPod` step 5: they start after the sandbox, before the init
//!   containers (the manager calls [`RuntimeManager`]'s
//!   `start_ephemeral_container`).
//! - `startSpec.getTargetID` (`kuberuntime_container.go`): a
//!   `targetContainerName` names a container of the pod whose newest
//!   runtime container gives the ID ([`target_container_id`]); an unknown
//!   target fails that container with `CreateContainerConfigError`
//!   (`unable to find target container <name>`).
//! - `generateLinuxContainerConfig` (`kuberuntime_container_linux.go`): with
//!   a target, a container that would have its own PID namespace joins the
//!   target's instead (`NamespaceMode::Target`, `target_id`) ([`set_pid_target`]);
//!   with `shareProcessNamespace` or `hostPID` the pod's mode is kept.
//!
//! The API server forbids ports, probes, lifecycle hooks, resources, resize
//! policy and restart policy on an ephemeral container (upstream
//! `validateEphemeralContainers`, `pkg/apis/core/validation`). The kubelet
//! does not rely on it: such a container fails alone, with upstream's
//! validation message ([`validate`]), and the pod's other containers are
//! untouched.
//!
//! Ephemeral containers take no part in the pod's QoS class or resources
//! (`kubelet_container::qos`, `kubelet_container::podres` count init and app
//! containers only), nor in its phase or conditions; their statuses are the
//! pod's `ephemeralContainerStatuses` (`kubelet-status`).

use k8s_openapi::api::core::v1::{Container, EphemeralContainer, Pod};
use kubelet_container::pod::ephemeral_container_common;
use kubelet_cri_client::api;

use crate::config::PodVolumes;
use crate::labels::ContainerType;
use crate::manager::RuntimeManager;
use crate::status::PodStatus;
use crate::{Error, pod_name};

/// The pod's ephemeral containers (`spec.ephemeralContainers`).
pub fn ephemeral_containers(pod: &Pod) -> &[EphemeralContainer] {
    pod.spec
        .as_ref()
        .and_then(|s| s.ephemeral_containers.as_deref())
        .unwrap_or_default()
}

/// The ephemeral containers to start, as indices into
/// `spec.ephemeralContainers` (upstream `computePodActions`): those the
/// runtime has no container of. Ephemeral containers are never restarted.
/// None for a pod being deleted: upstream's pod worker no longer calls
/// `SyncPod` for it, and nothing is started for it here either (as
/// `should_container_be_restarted`).
pub fn ephemeral_containers_to_start(pod: &Pod, status: &PodStatus) -> Vec<usize> {
    if pod.metadata.deletion_timestamp.is_some() {
        return Vec::new();
    }
    ephemeral_containers(pod)
        .iter()
        .enumerate()
        .filter(|(_, c)| status.find_container_status_by_name(&c.name).is_none())
        .map(|(i, _)| i)
        .collect()
}

/// The error of an ephemeral container that cannot be made, with
/// upstream's message.
fn invalid(pod: &Pod, container: &str, message: String) -> Error {
    Error::EphemeralContainerConfig {
        pod: pod_name(pod),
        container: container.to_owned(),
        message,
    }
}

/// Refuses an ephemeral container with a field the API server forbids on
/// one (upstream `validateEphemeralContainers`: `spec.ephemeralContainers[i].ports:
/// Forbidden: cannot be set for an Ephemeral Container`), or whose name
/// is taken by an init or app container.
pub fn validate(pod: &Pod, index: usize, ec: &EphemeralContainer) -> Result<(), Error> {
    let forbidden = [
        ("ports", ec.ports.as_ref().is_some_and(|p| !p.is_empty())),
        ("livenessProbe", ec.liveness_probe.is_some()),
        ("readinessProbe", ec.readiness_probe.is_some()),
        ("startupProbe", ec.startup_probe.is_some()),
        ("lifecycle", ec.lifecycle.is_some()),
        (
            "resources",
            ec.resources.as_ref().is_some_and(|r| {
                r.limits.as_ref().is_some_and(|l| !l.is_empty())
                    || r.requests.as_ref().is_some_and(|l| !l.is_empty())
                    || r.claims.as_ref().is_some_and(|l| !l.is_empty())
            }),
        ),
        (
            "resizePolicy",
            ec.resize_policy.as_ref().is_some_and(|p| !p.is_empty()),
        ),
        ("restartPolicy", ec.restart_policy.is_some()),
        (
            "restartPolicyRules",
            ec.restart_policy_rules
                .as_ref()
                .is_some_and(|p| !p.is_empty()),
        ),
    ];
    let path = format!("spec.ephemeralContainers[{index}]");
    let errors: Vec<String> = forbidden
        .iter()
        .filter(|(_, set)| *set)
        .map(|(field, _)| {
            format!("{path}.{field}: Forbidden: cannot be set for an Ephemeral Container")
        })
        .collect();
    if !errors.is_empty() {
        return Err(invalid(pod, &ec.name, errors.join(", ")));
    }
    let taken = crate::config::all_containers(pod).any(|c| c.name == ec.name);
    if taken {
        return Err(invalid(
            pod,
            &ec.name,
            format!("{path}.name: Duplicate value: {:?}", ec.name),
        ));
    }
    Ok(())
}

/// The runtime ID of the container an ephemeral container targets
/// (upstream `startSpec.getTargetID`): `None` without a
/// `targetContainerName`; an error when the pod has no container of that
/// name in the runtime.
pub fn target_container_id(
    pod: &Pod,
    ec: &EphemeralContainer,
    status: &PodStatus,
) -> Result<Option<String>, Error> {
    let Some(target) = ec
        .target_container_name
        .as_deref()
        .filter(|t| !t.is_empty())
    else {
        return Ok(None);
    };
    match status.find_container_status_by_name(target) {
        Some(s) => Ok(Some(s.id.clone())),
        None => Err(invalid(
            pod,
            &ec.name,
            format!("unable to find target container {target}"),
        )),
    }
}

/// Puts the container in the PID namespace of `target` (upstream
/// `generateLinuxContainerConfig`): only when it would otherwise have its
/// own (`NamespaceMode::Container`).
pub fn set_pid_target(config: &mut api::ContainerConfig, target: &str) {
    let Some(ns) = config
        .linux
        .as_mut()
        .and_then(|l| l.security_context.as_mut())
        .and_then(|s| s.namespace_options.as_mut())
    else {
        return;
    };
    if ns.pid() == api::NamespaceMode::Container {
        ns.set_pid(api::NamespaceMode::Target);
        ns.target_id = target.to_owned();
    }
}

/// What a start of an ephemeral container needs beyond a regular one's:
/// the container it targets.
#[derive(Debug, Clone, Copy)]
pub(crate) struct EphemeralSpec<'a> {
    /// Its index in `spec.ephemeralContainers`.
    pub index: usize,
    /// The ephemeral container.
    pub container: &'a EphemeralContainer,
}

impl RuntimeManager {
    /// Starts the pod's ephemeral container `index` (upstream `SyncPod`
    /// step 5, `start("ephemeral container", ...)`); returns its name.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn start_ephemeral_container(
        &self,
        pod: &Pod,
        index: usize,
        sandbox_id: &str,
        sandbox: &api::PodSandboxConfig,
        status: &PodStatus,
        pod_ips: &[String],
        volumes: &PodVolumes,
    ) -> Option<Result<String, Error>> {
        let ec = ephemeral_containers(pod).get(index)?;
        let container: Container = ephemeral_container_common(ec);
        let result = self
            .start_container_spec(
                pod,
                &container,
                ContainerType::Ephemeral,
                Some(EphemeralSpec {
                    index,
                    container: ec,
                }),
                sandbox_id,
                sandbox,
                status,
                pod_ips,
                volumes,
            )
            .await;
        Some(result.map(|_| container.name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::ContainerStatus;
    use k8s_openapi::api::core::v1::{ContainerPort, Probe, ResourceRequirements};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn ec(name: &str, target: Option<&str>) -> EphemeralContainer {
        EphemeralContainer {
            name: name.into(),
            image: Some("busybox".into()),
            target_container_name: target.map(str::to_owned),
            ..Default::default()
        }
    }

    fn pod(ephemeral: Vec<EphemeralContainer>) -> Pod {
        let mut p: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "default", "uid": "u"},
            "spec": {"restartPolicy": "Always",
                     "containers": [{"name": "app", "image": "busybox"}]},
        }))
        .expect("pod");
        if let Some(spec) = p.spec.as_mut() {
            spec.ephemeral_containers = Some(ephemeral);
        }
        p
    }

    /// A container of the pod as the runtime reports it.
    fn cs(name: &str, state: api::ContainerState, exit_code: i32) -> ContainerStatus {
        crate::status::container_status_from_cri(&api::ContainerStatus {
            id: format!("id-{name}"),
            metadata: Some(api::ContainerMetadata {
                name: name.into(),
                attempt: 0,
            }),
            state: state as i32,
            exit_code,
            ..Default::default()
        })
    }

    fn status(containers: Vec<ContainerStatus>) -> PodStatus {
        PodStatus {
            uid: "u".into(),
            name: "p".into(),
            namespace: "default".into(),
            container_statuses: containers,
            ..Default::default()
        }
    }

    #[test]
    fn an_ephemeral_container_starts_once_and_never_restarts() {
        let p = pod(vec![ec("debug", Some("app")), ec("shell", None)]);
        let running = status(vec![cs("app", api::ContainerState::ContainerRunning, 0)]);
        assert_eq!(ephemeral_containers_to_start(&p, &running), [0, 1]);
        // Running, exited 0, failed, unknown: never started again.
        for (state, code) in [
            (api::ContainerState::ContainerRunning, 0),
            (api::ContainerState::ContainerExited, 0),
            (api::ContainerState::ContainerExited, 1),
            (api::ContainerState::ContainerUnknown, 0),
            (api::ContainerState::ContainerCreated, 0),
        ] {
            let mut st = running.clone();
            st.container_statuses.push(cs("debug", state, code));
            assert_eq!(
                ephemeral_containers_to_start(&p, &st),
                [1],
                "{state:?} exit {code}"
            );
        }
    }

    #[test]
    fn compute_pod_actions_starts_them_after_the_sandbox_even_during_init() {
        use crate::actions::compute_pod_actions;
        let mut p = pod(vec![ec("debug", Some("app"))]);
        // The sync that creates the sandbox does not start them (upstream).
        let a = compute_pod_actions(&p, &PodStatus::default());
        assert!(a.create_sandbox && a.ephemeral_containers_to_start.is_empty());
        // With a ready sandbox they start, even while an init container runs.
        if let Some(spec) = p.spec.as_mut() {
            spec.init_containers = Some(vec![Container {
                name: "init".into(),
                image: Some("busybox".into()),
                ..Default::default()
            }]);
        }
        let mut st = status(vec![cs("init", api::ContainerState::ContainerRunning, 0)]);
        st.sandbox_statuses = vec![api::PodSandboxStatus {
            id: "sb".into(),
            state: api::PodSandboxState::SandboxReady as i32,
            network: Some(api::PodSandboxNetworkStatus {
                ip: "10.88.0.2".into(),
                additional_ips: vec![],
            }),
            ..Default::default()
        }];
        let a = compute_pod_actions(&p, &st);
        assert!(!a.create_sandbox);
        assert_eq!(a.ephemeral_containers_to_start, [0]);
        assert!(a.containers_to_start.is_empty());
    }

    #[test]
    fn nothing_starts_in_a_pod_being_deleted() {
        let mut p = pod(vec![ec("debug", Some("app"))]);
        p.metadata.deletion_timestamp = Some(Time(Default::default()));
        let st = status(vec![cs("app", api::ContainerState::ContainerRunning, 0)]);
        assert!(ephemeral_containers_to_start(&p, &st).is_empty());
    }

    #[test]
    fn the_target_is_the_named_containers_runtime_id() {
        let p = pod(vec![]);
        let st = status(vec![cs("app", api::ContainerState::ContainerRunning, 0)]);
        assert_eq!(
            target_container_id(&p, &ec("debug", Some("app")), &st).unwrap(),
            Some("id-app".to_owned())
        );
        assert_eq!(
            target_container_id(&p, &ec("debug", None), &st).unwrap(),
            None
        );
        let err = target_container_id(&p, &ec("debug", Some("nope")), &st).unwrap_err();
        match &err {
            Error::EphemeralContainerConfig {
                container, message, ..
            } => {
                assert_eq!(container, "debug");
                assert_eq!(message, "unable to find target container nope");
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(err.to_string().contains("CreateContainerConfigError"));
    }

    fn config_with_pid(mode: api::NamespaceMode) -> api::ContainerConfig {
        api::ContainerConfig {
            linux: Some(api::LinuxContainerConfig {
                security_context: Some(api::LinuxContainerSecurityContext {
                    namespace_options: Some(api::NamespaceOption {
                        pid: mode as i32,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn pid_of(c: &api::ContainerConfig) -> (api::NamespaceMode, String) {
        let ns = c
            .linux
            .as_ref()
            .and_then(|l| l.security_context.as_ref())
            .and_then(|s| s.namespace_options.as_ref())
            .expect("namespace options");
        (ns.pid(), ns.target_id.clone())
    }

    #[test]
    fn a_target_replaces_only_a_private_pid_namespace() {
        let mut c = config_with_pid(api::NamespaceMode::Container);
        set_pid_target(&mut c, "id-app");
        assert_eq!(pid_of(&c), (api::NamespaceMode::Target, "id-app".into()));
        // shareProcessNamespace (Pod) and hostPID (Node) are kept.
        for mode in [api::NamespaceMode::Pod, api::NamespaceMode::Node] {
            let mut c = config_with_pid(mode);
            set_pid_target(&mut c, "id-app");
            assert_eq!(pid_of(&c), (mode, String::new()));
        }
    }

    #[test]
    fn forbidden_fields_and_taken_names_fail_the_container_alone() {
        let p = pod(vec![]);
        assert!(validate(&p, 0, &ec("debug", Some("app"))).is_ok());
        let bad = EphemeralContainer {
            ports: Some(vec![ContainerPort {
                container_port: 80,
                ..Default::default()
            }]),
            readiness_probe: Some(Probe::default()),
            resources: Some(ResourceRequirements {
                limits: Some([("cpu".to_owned(), Default::default())].into()),
                ..Default::default()
            }),
            ..ec("debug", None)
        };
        match validate(&p, 2, &bad) {
            Err(Error::EphemeralContainerConfig { message, .. }) => assert_eq!(
                message,
                "spec.ephemeralContainers[2].ports: Forbidden: cannot be set for an Ephemeral Container, \
                 spec.ephemeralContainers[2].readinessProbe: Forbidden: cannot be set for an Ephemeral Container, \
                 spec.ephemeralContainers[2].resources: Forbidden: cannot be set for an Ephemeral Container"
            ),
            other => panic!("unexpected {other:?}"),
        }
        // Empty resources are what a client may send: allowed.
        let empty = EphemeralContainer {
            resources: Some(ResourceRequirements::default()),
            ..ec("debug", None)
        };
        assert!(validate(&p, 0, &empty).is_ok());
        match validate(&p, 0, &ec("app", None)) {
            Err(Error::EphemeralContainerConfig { message, .. }) => {
                assert_eq!(
                    message,
                    "spec.ephemeralContainers[0].name: Duplicate value: \"app\""
                )
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}
