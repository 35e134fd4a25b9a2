//! The `io.kubernetes.*` labels and annotations the kubelet puts on
//! sandboxes and containers, so that state is recovered from the runtime
//! after a restart and tools such as `crictl` show our pods like upstream's.
//!
//! Mirrors upstream `pkg/kubelet/kuberuntime/labels.go` and
//! `pkg/kubelet/types/labels.go`.

use std::collections::HashMap;

use k8s_openapi::api::core::v1::{Container, ContainerPort, LifecycleHandler, Pod};

use crate::hash::{ContainerHash, HASH_VERSION, HashContainer};
pub use kubelet_container::ContainerType;

/// Label: the pod's name.
pub const POD_NAME: &str = kubelet_container::pod::POD_NAME_LABEL;
/// Label: the pod's namespace.
pub const POD_NAMESPACE: &str = kubelet_container::pod::POD_NAMESPACE_LABEL;
/// Label: the pod's UID.
pub const POD_UID: &str = kubelet_container::pod::POD_UID_LABEL;
/// Label: the container's name.
pub const CONTAINER_NAME: &str = kubelet_container::pod::CONTAINER_NAME_LABEL;

/// Annotation: hex of the container hash.
pub const CONTAINER_HASH: &str = "io.kubernetes.container.hash";
/// Annotation: the version of the container hash's field list (ours; see
/// [`crate::hash`]).
pub const CONTAINER_HASH_VERSION: &str = "io.kubernetes.container.hashVersion";
/// Annotation: the container's restart count.
pub const CONTAINER_RESTART_COUNT: &str = "io.kubernetes.container.restartCount";
/// Annotation: the termination message path.
pub const CONTAINER_TERMINATION_MESSAGE_PATH: &str =
    "io.kubernetes.container.terminationMessagePath";
/// Annotation: the termination message policy.
pub const CONTAINER_TERMINATION_MESSAGE_POLICY: &str =
    "io.kubernetes.container.terminationMessagePolicy";
/// Annotation: the pod's deletion grace period.
pub const POD_DELETION_GRACE_PERIOD: &str = "io.kubernetes.pod.deletionGracePeriod";
/// Annotation: the pod's termination grace period.
pub const POD_TERMINATION_GRACE_PERIOD: &str = "io.kubernetes.pod.terminationGracePeriod";
/// Annotation: the preStop handler, as JSON.
pub const CONTAINER_PRE_STOP_HANDLER: &str = "io.kubernetes.container.preStopHandler";
/// Annotation: the container's ports, as JSON.
pub const CONTAINER_PORTS: &str = "io.kubernetes.container.ports";
/// Annotation: `init`, `container` or `ephemeral`.
pub const CONTAINER_TYPE: &str = "io.kubernetes.container.type";

fn meta(pod: &Pod) -> (&str, &str, &str) {
    let m = &pod.metadata;
    (
        m.name.as_deref().unwrap_or_default(),
        m.namespace.as_deref().unwrap_or("default"),
        m.uid.as_deref().unwrap_or_default(),
    )
}

/// The sandbox's labels: the pod's labels plus the `io.kubernetes.pod.*`
/// ones (upstream `newPodLabels`).
pub fn new_pod_labels(pod: &Pod) -> HashMap<String, String> {
    let (name, namespace, uid) = meta(pod);
    let mut labels: HashMap<String, String> = pod
        .metadata
        .labels
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    labels.insert(POD_NAME.into(), name.into());
    labels.insert(POD_NAMESPACE.into(), namespace.into());
    labels.insert(POD_UID.into(), uid.into());
    labels
}

/// The sandbox's annotations: the pod's annotations (upstream
/// `newPodAnnotations`).
pub fn new_pod_annotations(pod: &Pod) -> HashMap<String, String> {
    pod.metadata
        .annotations
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// A container's labels (upstream `newContainerLabels`).
pub fn new_container_labels(container: &Container, pod: &Pod) -> HashMap<String, String> {
    let (name, namespace, uid) = meta(pod);
    HashMap::from([
        (POD_NAME.to_string(), name.to_string()),
        (POD_NAMESPACE.to_string(), namespace.to_string()),
        (POD_UID.to_string(), uid.to_string()),
        (CONTAINER_NAME.to_string(), container.name.clone()),
    ])
}

/// A container's annotations (upstream `newContainerAnnotations`).
pub fn new_container_annotations(
    container: &Container,
    pod: &Pod,
    container_type: ContainerType,
    restart_count: i32,
) -> HashMap<String, String> {
    let hash = ContainerHash::of(container);
    let mut a = HashMap::from([
        (CONTAINER_HASH.to_string(), hash.hex()),
        (CONTAINER_HASH_VERSION.to_string(), HASH_VERSION.to_string()),
        (
            CONTAINER_RESTART_COUNT.to_string(),
            restart_count.to_string(),
        ),
        (
            CONTAINER_TERMINATION_MESSAGE_PATH.to_string(),
            container
                .termination_message_path
                .clone()
                .unwrap_or_else(|| "/dev/termination-log".into()),
        ),
        (
            CONTAINER_TERMINATION_MESSAGE_POLICY.to_string(),
            container
                .termination_message_policy
                .clone()
                .unwrap_or_else(|| "File".into()),
        ),
        (
            CONTAINER_TYPE.to_string(),
            container_type.as_str().to_string(),
        ),
    ]);
    for (k, v) in container
        .lifecycle
        .iter()
        .flat_map(|l| l.pre_stop.as_ref())
        .filter_map(|h| {
            serde_json::to_string(h)
                .ok()
                .map(|j| (CONTAINER_PRE_STOP_HANDLER, j))
        })
    {
        a.insert(k.into(), v);
    }
    if let Some(ports) = container.ports.as_ref().filter(|p| !p.is_empty())
        && let Ok(json) = serde_json::to_string(ports)
    {
        a.insert(CONTAINER_PORTS.into(), json);
    }
    if let Some(grace) = pod.metadata.deletion_grace_period_seconds {
        a.insert(POD_DELETION_GRACE_PERIOD.into(), grace.to_string());
    }
    if let Some(grace) = pod
        .spec
        .as_ref()
        .and_then(|s| s.termination_grace_period_seconds)
    {
        a.insert(POD_TERMINATION_GRACE_PERIOD.into(), grace.to_string());
    }
    a
}

/// What the labels of a container or sandbox say (upstream
/// `labeledContainerInfo`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabeledContainerInfo {
    /// The container's name (`POD` for a sandbox in old runtimes).
    pub container_name: String,
    /// The pod's name.
    pub pod_name: String,
    /// The pod's namespace.
    pub pod_namespace: String,
    /// The pod's UID.
    pub pod_uid: String,
}

/// Reads the `io.kubernetes.*` labels; missing ones read as empty.
pub fn labeled_container_info(labels: &HashMap<String, String>) -> LabeledContainerInfo {
    let get = |k: &str| labels.get(k).cloned().unwrap_or_default();
    LabeledContainerInfo {
        container_name: get(CONTAINER_NAME),
        pod_name: get(POD_NAME),
        pod_namespace: get(POD_NAMESPACE),
        pod_uid: get(POD_UID),
    }
}

/// What the annotations of a container say (upstream
/// `annotatedContainerInfo`). Unparsable values read as absent or zero,
/// as upstream, and are logged.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AnnotatedContainerInfo {
    /// The container hash recorded at creation.
    pub hash: Option<ContainerHash>,
    /// The restart count recorded at creation.
    pub restart_count: i32,
    /// The pod's deletion grace period at creation.
    pub pod_deletion_grace_period: Option<i64>,
    /// The pod's termination grace period at creation.
    pub pod_termination_grace_period: Option<i64>,
    /// The termination message path.
    pub termination_message_path: String,
    /// The termination message policy.
    pub termination_message_policy: String,
    /// The preStop handler, for killing a container whose spec is gone.
    pub pre_stop_handler: Option<LifecycleHandler>,
    /// The container's ports.
    pub ports: Vec<ContainerPort>,
    /// The container's type.
    pub container_type: Option<ContainerType>,
}

/// Reads an integer annotation; an unparsable value reads as absent and is
/// logged.
fn annotated_i64(annotations: &HashMap<String, String>, key: &str) -> Option<i64> {
    annotations.get(key).and_then(|v| match v.parse::<i64>() {
        Ok(n) => Some(n),
        Err(e) => {
            tracing::warn!(annotation = key, value = %v, error = %e, "unparsable annotation");
            None
        }
    })
}

/// The container hash recorded in a container's annotations: the
/// [`AnnotatedContainerInfo::hash`] of [`annotated_container_info`],
/// without reading (and parsing the JSON of) the other annotations, for
/// listings such as `GetPods`.
pub fn annotated_container_hash(annotations: &HashMap<String, String>) -> Option<ContainerHash> {
    annotations.get(CONTAINER_HASH).and_then(|hex| {
        let version = annotations
            .get(CONTAINER_HASH_VERSION)
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0);
        ContainerHash::parse(version, hex)
    })
}

/// The pod's termination grace period recorded in a container's
/// annotations: the [`AnnotatedContainerInfo::pod_termination_grace_period`]
/// of [`annotated_container_info`], without reading the other annotations.
pub fn annotated_pod_termination_grace_period(
    annotations: &HashMap<String, String>,
) -> Option<i64> {
    annotated_i64(annotations, POD_TERMINATION_GRACE_PERIOD)
}

/// Reads the annotations written by [`new_container_annotations`].
pub fn annotated_container_info(annotations: &HashMap<String, String>) -> AnnotatedContainerInfo {
    let parse_i64 = |k: &str| annotated_i64(annotations, k);
    AnnotatedContainerInfo {
        hash: annotated_container_hash(annotations),
        restart_count: parse_i64(CONTAINER_RESTART_COUNT)
            .and_then(|n| i32::try_from(n).ok())
            .unwrap_or(0),
        pod_deletion_grace_period: parse_i64(POD_DELETION_GRACE_PERIOD),
        pod_termination_grace_period: annotated_pod_termination_grace_period(annotations),
        termination_message_path: annotations
            .get(CONTAINER_TERMINATION_MESSAGE_PATH)
            .cloned()
            .unwrap_or_default(),
        termination_message_policy: annotations
            .get(CONTAINER_TERMINATION_MESSAGE_POLICY)
            .cloned()
            .unwrap_or_default(),
        pre_stop_handler: annotations
            .get(CONTAINER_PRE_STOP_HANDLER)
            .and_then(|j| serde_json::from_str(j).ok()),
        ports: annotations
            .get(CONTAINER_PORTS)
            .and_then(|j| serde_json::from_str(j).ok())
            .unwrap_or_default(),
        container_type: annotations
            .get(CONTAINER_TYPE)
            .map(|t| ContainerType::parse(t)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{ExecAction, Lifecycle, PodSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    #[test]
    fn annotations_round_trip() {
        let container = Container {
            name: "app".into(),
            image: Some("busybox".into()),
            ports: Some(vec![ContainerPort {
                container_port: 8080,
                name: Some("http".into()),
                ..Default::default()
            }]),
            lifecycle: Some(Lifecycle {
                pre_stop: Some(LifecycleHandler {
                    exec: Some(ExecAction {
                        command: Some(vec!["sleep".into(), "1".into()]),
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let pod = Pod {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("prod".into()),
                uid: Some("u1".into()),
                deletion_grace_period_seconds: Some(5),
                ..Default::default()
            },
            spec: Some(PodSpec {
                termination_grace_period_seconds: Some(30),
                ..Default::default()
            }),
            ..Default::default()
        };
        let a = new_container_annotations(&container, &pod, ContainerType::Init, 3);
        let info = annotated_container_info(&a);
        assert_eq!(info.restart_count, 3);
        assert_eq!(info.hash, Some(ContainerHash::of(&container)));
        assert_eq!(info.pod_deletion_grace_period, Some(5));
        assert_eq!(info.pod_termination_grace_period, Some(30));
        // The readers GetPods uses read the same.
        assert_eq!(annotated_container_hash(&a), info.hash);
        assert_eq!(annotated_pod_termination_grace_period(&a), Some(30));
        assert_eq!(info.ports[0].container_port, 8080);
        assert_eq!(info.container_type, Some(ContainerType::Init));
        assert_eq!(info.termination_message_path, "/dev/termination-log");
        assert!(info.pre_stop_handler.and_then(|h| h.exec).is_some());

        let labels = new_container_labels(&container, &pod);
        let l = labeled_container_info(&labels);
        assert_eq!(
            (
                l.pod_name.as_str(),
                l.pod_namespace.as_str(),
                l.pod_uid.as_str()
            ),
            ("web", "prod", "u1")
        );
        assert_eq!(l.container_name, "app");
    }

    #[test]
    fn garbage_annotations_read_as_defaults() {
        let a = HashMap::from([
            (CONTAINER_RESTART_COUNT.to_string(), "many".to_string()),
            (CONTAINER_HASH.to_string(), "zz".to_string()),
            (CONTAINER_PORTS.to_string(), "{not json".to_string()),
        ]);
        let info = annotated_container_info(&a);
        assert_eq!(info.restart_count, 0);
        assert_eq!(info.hash, None);
        assert!(info.ports.is_empty());
    }
}
