//! The pod status a CRI container event produces
//! (`kubelet_pleg::pod_status_from_event`), with container statuses built by
//! the real runtime manager's converter
//! (`kubelet_kuberuntime::status::container_status_from_cri`).

use kubelet_container::ContainerState;
use kubelet_cri_client::api::{self, ContainerEventResponse, ContainerEventType};
use kubelet_kuberuntime::status::container_status_from_cri as convert;
use kubelet_pleg::pod_status_from_event;

fn sandbox(id: &str, ready: bool, created_at: i64, ip: &str) -> api::PodSandboxStatus {
    api::PodSandboxStatus {
        id: id.into(),
        metadata: Some(api::PodSandboxMetadata {
            name: "web".into(),
            namespace: "default".into(),
            uid: "uid-1".into(),
            attempt: 0,
        }),
        state: if ready {
            api::PodSandboxState::SandboxReady
        } else {
            api::PodSandboxState::SandboxNotready
        } as i32,
        created_at,
        network: Some(api::PodSandboxNetworkStatus {
            ip: ip.into(),
            additional_ips: Vec::new(),
        }),
        ..Default::default()
    }
}

fn container(id: &str, state: api::ContainerState, created_at: i64) -> api::ContainerStatus {
    api::ContainerStatus {
        id: id.into(),
        metadata: Some(api::ContainerMetadata {
            name: format!("name-{id}"),
            attempt: 0,
        }),
        state: state as i32,
        created_at,
        exit_code: if state == api::ContainerState::ContainerExited {
            3
        } else {
            0
        },
        ..Default::default()
    }
}

fn event(
    kind: ContainerEventType,
    id: &str,
    sandbox: Option<api::PodSandboxStatus>,
    containers: Vec<api::ContainerStatus>,
) -> ContainerEventResponse {
    ContainerEventResponse {
        container_id: id.into(),
        container_event_type: kind as i32,
        created_at: 0,
        pod_sandbox_status: sandbox,
        containers_statuses: containers,
    }
}

#[test]
fn a_first_event_builds_the_status() {
    let e = event(
        ContainerEventType::ContainerStartedEvent,
        "c1",
        Some(sandbox("s1", true, 1, "10.0.0.5")),
        vec![container("c1", api::ContainerState::ContainerRunning, 2)],
    );
    let s = pod_status_from_event("uid-1", None, &e, convert);
    assert_eq!(
        (s.uid.as_str(), s.name.as_str(), s.namespace.as_str()),
        ("uid-1", "web", "default")
    );
    assert_eq!(s.ips, ["10.0.0.5"]);
    assert_eq!(s.sandbox_statuses.len(), 1);
    assert_eq!(s.container_statuses.len(), 1);
    assert_eq!(s.container_statuses[0].name, "name-c1");
    assert_eq!(s.container_statuses[0].state, ContainerState::Running);
}

#[test]
fn events_merge_into_the_previous_status_by_id() {
    let first = event(
        ContainerEventType::ContainerStartedEvent,
        "c1",
        Some(sandbox("s1", true, 1, "10.0.0.5")),
        vec![
            container("c1", api::ContainerState::ContainerRunning, 2),
            container("c2", api::ContainerState::ContainerRunning, 3),
        ],
    );
    let before = pod_status_from_event("uid-1", None, &first, convert);
    // Only c1 in the payload (as the fake sends): c2 stays.
    let stopped = event(
        ContainerEventType::ContainerStoppedEvent,
        "c1",
        Some(sandbox("s1", true, 1, "10.0.0.5")),
        vec![container("c1", api::ContainerState::ContainerExited, 2)],
    );
    let after = pod_status_from_event("uid-1", Some(&before), &stopped, convert);
    let ids: Vec<_> = after
        .container_statuses
        .iter()
        .map(|c| c.id.as_str())
        .collect();
    assert_eq!(ids, ["c2", "c1"], "newest first");
    let c1 = &after.container_statuses[1];
    assert_eq!((c1.state, c1.exit_code), (ContainerState::Exited, 3));

    // Deleted: removed from the status.
    let deleted = event(
        ContainerEventType::ContainerDeletedEvent,
        "c1",
        None,
        vec![],
    );
    let gone = pod_status_from_event("uid-1", Some(&after), &deleted, convert);
    assert_eq!(gone.container_statuses.len(), 1);
    assert_eq!(gone.container_statuses[0].id, "c2");

    // A new sandbox, newest first; the old one kept.
    let new_sandbox = event(
        ContainerEventType::ContainerStartedEvent,
        "s2",
        Some(sandbox("s2", true, 10, "10.0.0.6")),
        vec![],
    );
    let two = pod_status_from_event("uid-1", Some(&gone), &new_sandbox, convert);
    let ids: Vec<_> = two.sandbox_statuses.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(ids, ["s2", "s1"]);
    assert_eq!(two.ips, ["10.0.0.6"]);

    // The newest sandbox not ready: no IPs from the event (the PLEG then
    // keeps the cached ones).
    let stopped_sandbox = event(
        ContainerEventType::ContainerStoppedEvent,
        "s2",
        Some(sandbox("s2", false, 10, "10.0.0.6")),
        vec![],
    );
    let dead = pod_status_from_event("uid-1", Some(&two), &stopped_sandbox, convert);
    assert!(dead.ips.is_empty());
}
