//! Pod helpers and the annotations and source names every component reads
//! (upstream `pkg/kubelet/types/pod_update.go`, `pkg/kubelet/container/helpers.go`,
//! `pkg/kubelet/util/format`).

use k8s_openapi::api::core::v1::{Container, EphemeralContainer, Pod};

/// Source name of static pods from files (upstream `kubetypes.FileSource`).
pub const FILE_SOURCE: &str = "file";
/// Source name of static pods from a URL (upstream `kubetypes.HTTPSource`).
pub const HTTP_SOURCE: &str = "http";
/// Source name of pods from the API server (upstream `kubetypes.ApiserverSource`);
/// every other source makes a static pod.
pub const API_SOURCE: &str = "api";
/// All sources (upstream `kubetypes.AllSource`).
pub const ALL_SOURCE: &str = "*";

/// Which source a pod came from; set by the pod config on every pod.
pub const CONFIG_SOURCE_ANNOTATION: &str = "kubernetes.io/config.source";
/// Marks a mirror pod (the API server's copy of a static pod).
pub const CONFIG_MIRROR_ANNOTATION: &str = "kubernetes.io/config.mirror";
/// When the kubelet first saw the pod; set by the pod config on ADD.
pub const CONFIG_SEEN_ANNOTATION: &str = "kubernetes.io/config.seen";
/// The static pod's hash (its UID); set by the static pod defaults.
pub const CONFIG_HASH_ANNOTATION: &str = "kubernetes.io/config.hash";

/// The label with which the runtime manager marks a pod's sandboxes and
/// containers with the pod's UID (upstream `kubelettypes.KubernetesPodUIDLabel`).
pub const POD_UID_LABEL: &str = "io.kubernetes.pod.uid";
/// The label naming the pod (upstream `KubernetesPodNameLabel`).
pub const POD_NAME_LABEL: &str = "io.kubernetes.pod.name";
/// The label naming the pod's namespace (upstream `KubernetesPodNamespaceLabel`).
pub const POD_NAMESPACE_LABEL: &str = "io.kubernetes.pod.namespace";
/// The label naming the container (upstream `KubernetesContainerNameLabel`).
pub const CONTAINER_NAME_LABEL: &str = "io.kubernetes.container.name";

/// `<name>_<namespace>`, the full name static pods are made exclusive by
/// and duplicates are found by (upstream `kubecontainer.BuildPodFullName`).
pub fn build_pod_full_name(name: &str, namespace: &str) -> String {
    let mut s = String::with_capacity(name.len() + namespace.len() + 1);
    s.push_str(name);
    s.push('_');
    s.push_str(namespace);
    s
}

/// The pod's `<name>_<namespace>` (upstream `kubecontainer.GetPodFullName`).
pub fn pod_full_name(pod: &Pod) -> String {
    build_pod_full_name(
        pod.metadata.name.as_deref().unwrap_or_default(),
        pod.metadata.namespace.as_deref().unwrap_or_default(),
    )
}

/// `namespace/name`, how logs and errors name a pod (upstream `format.Pod`
/// without the UID).
pub fn pod_name(pod: &Pod) -> String {
    format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or("default"),
        pod.metadata.name.as_deref().unwrap_or_default()
    )
}

/// The pod's UID, empty when unset.
pub fn pod_uid(pod: &Pod) -> &str {
    pod.metadata.uid.as_deref().unwrap_or_default()
}

/// The source the pod came from, if the pod config set it.
pub fn pod_source(pod: &Pod) -> Option<&str> {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(CONFIG_SOURCE_ANNOTATION))
        .map(String::as_str)
}

/// True for a static pod: its source is other than the API server
/// (upstream `kubetypes.IsStaticPod`).
pub fn is_static_pod(pod: &Pod) -> bool {
    pod_source(pod).is_some_and(|s| s != API_SOURCE)
}

/// True for a mirror pod (upstream `kubetypes.IsMirrorPod`).
pub fn is_mirror_pod(pod: &Pod) -> bool {
    pod.metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(CONFIG_MIRROR_ANNOTATION))
}

/// An ephemeral container as the container it describes: every field but
/// `targetContainerName` (upstream converts `EphemeralContainerCommon`
/// to `v1.Container`, `pkg/kubelet/kuberuntime/kuberuntime_container.go`
/// `ephemeralContainerStartSpec`, `pkg/kubelet/kubelet_pods.go`
/// `convertStatusToAPIStatus`).
pub fn ephemeral_container_common(ec: &EphemeralContainer) -> Container {
    // Destructured in full, so that a field added to either type is seen.
    let EphemeralContainer {
        args,
        command,
        env,
        env_from,
        image,
        image_pull_policy,
        lifecycle,
        liveness_probe,
        name,
        ports,
        readiness_probe,
        resize_policy,
        resources,
        restart_policy,
        restart_policy_rules,
        security_context,
        startup_probe,
        stdin,
        stdin_once,
        target_container_name: _,
        termination_message_path,
        termination_message_policy,
        tty,
        volume_devices,
        volume_mounts,
        working_dir,
    } = ec.clone();
    Container {
        args,
        command,
        env,
        env_from,
        image,
        image_pull_policy,
        lifecycle,
        liveness_probe,
        name,
        ports,
        readiness_probe,
        resize_policy,
        resources,
        restart_policy,
        restart_policy_rules,
        security_context,
        startup_probe,
        stdin,
        stdin_once,
        termination_message_path,
        termination_message_policy,
        tty,
        volume_devices,
        volume_mounts,
        working_dir,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn pod(source: Option<&str>) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("prod".into()),
                annotations: source
                    .map(|s| [(CONFIG_SOURCE_ANNOTATION.to_owned(), s.to_owned())].into()),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn names_and_sources() {
        assert_eq!(pod_full_name(&pod(None)), "web_prod");
        assert_eq!(pod_name(&pod(None)), "prod/web");
        assert!(is_static_pod(&pod(Some(FILE_SOURCE))));
        assert!(!is_static_pod(&pod(Some(API_SOURCE))));
        assert!(!is_static_pod(&pod(None)));
        assert!(!is_mirror_pod(&pod(Some(FILE_SOURCE))));
    }

    #[test]
    fn an_ephemeral_container_is_its_common_part() {
        let ec = EphemeralContainer {
            name: "debug".into(),
            image: Some("busybox".into()),
            command: Some(vec!["ps".into()]),
            target_container_name: Some("app".into()),
            tty: Some(true),
            ..Default::default()
        };
        let c = ephemeral_container_common(&ec);
        assert_eq!(c.name, "debug");
        assert_eq!(c.image.as_deref(), Some("busybox"));
        assert_eq!(c.command, Some(vec!["ps".to_owned()]));
        assert_eq!(c.tty, Some(true));
    }
}
