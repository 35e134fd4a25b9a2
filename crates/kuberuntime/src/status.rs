//! The runtime's view of a pod, rebuilt from the CRI and the
//! `io.kubernetes.*` labels and annotations. The types live in
//! `kubelet-container` (upstream `pkg/kubelet/container/runtime.go`); this
//! module builds them (upstream `kuberuntime_container.go`,
//! `kuberuntime_manager.go`).

use kubelet_cri_client::api;

use kubelet_container::ContainerType;
pub use kubelet_container::status::{
    ContainerState, ContainerStatus, PodStatus, RunningContainer, RunningPod, RunningSandbox,
};

use crate::labels::{annotated_container_info, labeled_container_info};

/// Builds a container's status from a CRI `ContainerStatus` (upstream
/// `convertToKubeContainerStatus`, `kuberuntime_container.go`): an exited
/// container's termination message is read from the file mounted at its
/// `terminationMessagePath`, or from its log under `FallbackToLogsOnError`,
/// and appended to the message.
pub fn container_status_from_cri(s: &api::ContainerStatus) -> ContainerStatus {
    let labels = labeled_container_info(&s.labels);
    let annotations = annotated_container_info(&s.annotations);
    let mut message = s.message.clone();
    let termination = crate::lifecycle::termination_message_with(
        s,
        &annotations.termination_message_path,
        &annotations.termination_message_policy,
    );
    if !termination.is_empty() {
        if !message.is_empty() {
            message.push_str(": ");
        }
        message.push_str(&termination);
    }
    ContainerStatus {
        id: s.id.clone(),
        name: s
            .metadata
            .as_ref()
            .map(|m| m.name.clone())
            .unwrap_or(labels.container_name),
        state: s.state().into(),
        created_at: s.created_at,
        started_at: s.started_at,
        finished_at: s.finished_at,
        exit_code: s.exit_code,
        image: s
            .image
            .as_ref()
            .map(|i| i.image.clone())
            .unwrap_or_default(),
        image_ref: s.image_ref.clone(),
        hash: annotations.hash,
        restart_count: annotations.restart_count,
        reason: s.reason.clone(),
        message,
        container_type: annotations.container_type.unwrap_or(ContainerType::Regular),
        pod_termination_grace_period: annotations.pod_termination_grace_period,
    }
}
