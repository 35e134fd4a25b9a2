//! Removing a pod's dead containers as they die (upstream
//! `podContainerDeletor`, `pkg/kubelet/pod_container_deletor.go`).
//!
//! On every `ContainerDied` lifecycle event the kubelet keeps the newest
//! `containers_to_keep` exited containers of the same name in the pod and
//! hands the older ones to one background worker that removes them; a pod
//! whose content may be removed (deleted and terminated) loses all of its
//! exited containers. Without it a crash-looping pod's dead containers wait
//! for the minute's garbage collection pass, which then has hundreds to
//! remove at once.
//!
//! As upstream, requests beyond the buffer (50) are dropped with a
//! warning: garbage collection removes those later.

use std::sync::Arc;

use kubelet_container::{ContainerState, PodStatus};
use kubelet_cri_client::RuntimeService;
use tokio::sync::mpsc;

/// Upstream `containerDeletorBufferLimit`.
pub const CONTAINER_DELETOR_BUFFER_LIMIT: usize = 50;

/// Upstream `minDeadContainerInPod`: the deletor keeps at least one dead
/// container per name, for its logs and exit status.
pub const MIN_DEAD_CONTAINER_IN_POD: usize = 1;

/// Queues dead containers for removal; see the [module docs](self).
#[derive(Debug, Clone)]
pub struct ContainerDeletor {
    worker: mpsc::Sender<String>,
    containers_to_keep: usize,
}

/// The removing half of a [`ContainerDeletor`]: run it with
/// [`DeletorWorker::run`].
#[derive(Debug)]
pub struct DeletorWorker {
    requests: mpsc::Receiver<String>,
}

impl ContainerDeletor {
    /// A deletor keeping `containers_to_keep` (at least
    /// [`MIN_DEAD_CONTAINER_IN_POD`]) dead containers per name, and the
    /// worker that removes the others.
    pub fn new(containers_to_keep: usize) -> (Self, DeletorWorker) {
        let (worker, requests) = mpsc::channel(CONTAINER_DELETOR_BUFFER_LIMIT);
        (
            Self {
                worker,
                containers_to_keep: containers_to_keep.max(MIN_DEAD_CONTAINER_IN_POD),
            },
            DeletorWorker { requests },
        )
    }

    /// Upstream `deleteContainersInPod`: queues the exited containers named
    /// as `exited_container_id` beyond the newest kept ones, or every
    /// exited container of the pod with `remove_all`. Never waits.
    pub fn delete_containers_in_pod(
        &self,
        exited_container_id: &str,
        status: &PodStatus,
        remove_all: bool,
    ) {
        let (filter, keep) = if remove_all {
            ("", 0)
        } else {
            (exited_container_id, self.containers_to_keep)
        };
        for id in containers_to_delete_in_pod(filter, status, keep) {
            if self.worker.try_send(id.clone()).is_err() {
                tracing::warn!(container = %id, pod = %status.uid,
                    "container deletor: failed to issue the request to remove the container");
            }
        }
    }
}

impl DeletorWorker {
    /// Removes the queued containers one at a time until every
    /// [`ContainerDeletor`] is dropped or `stop` completes.
    pub async fn run(
        mut self,
        runtime: Arc<dyn RuntimeService>,
        stop: impl std::future::Future<Output = ()>,
    ) {
        let work = async {
            while let Some(id) = self.requests.recv().await {
                if let Err(e) = runtime.remove_container(&id).await {
                    tracing::warn!(container = %id, error = %e,
                        "container deletor: cannot remove the container");
                }
            }
        };
        tokio::select! {
            () = work => {}
            () = stop => {}
        }
    }
}

/// Upstream `getContainersToDeleteInPod`: the exited containers of the pod
/// named as the container `filter_container_id` (all names when empty),
/// newest first by attempt then creation, less the first
/// `containers_to_keep`. An ID the status does not hold selects nothing.
pub fn containers_to_delete_in_pod(
    filter_container_id: &str,
    status: &PodStatus,
    containers_to_keep: usize,
) -> Vec<String> {
    let matched = if filter_container_id.is_empty() {
        None
    } else {
        match status
            .container_statuses
            .iter()
            .find(|c| c.id == filter_container_id)
        {
            Some(c) => Some(c.name.as_str()),
            None => {
                tracing::debug!(container = %filter_container_id, pod = %status.uid,
                    "container not found in the pod's containers");
                return Vec::new();
            }
        }
    };
    let mut candidates: Vec<_> = status
        .container_statuses
        .iter()
        .filter(|c| c.state == ContainerState::Exited)
        .filter(|c| matched.is_none_or(|name| c.name == name))
        .collect();
    if candidates.len() <= containers_to_keep {
        return Vec::new();
    }
    candidates.sort_by_key(|c| std::cmp::Reverse((c.restart_count, c.created_at)));
    candidates
        .into_iter()
        .skip(containers_to_keep)
        .map(|c| c.id.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use kubelet_container::ContainerStatus;

    fn container(id: &str, name: &str, attempt: i32, state: ContainerState) -> ContainerStatus {
        ContainerStatus {
            id: id.into(),
            name: name.into(),
            state,
            created_at: i64::from(attempt) * 10,
            started_at: 0,
            finished_at: 0,
            exit_code: 0,
            image: "img".into(),
            image_ref: String::new(),
            hash: None,
            restart_count: attempt,
            reason: String::new(),
            message: String::new(),
            container_type: kubelet_container::ContainerType::Regular,
            pod_termination_grace_period: None,
        }
    }

    fn pod() -> PodStatus {
        PodStatus {
            uid: "u".into(),
            container_statuses: vec![
                container("app-0", "app", 0, ContainerState::Exited),
                container("app-2", "app", 2, ContainerState::Exited),
                container("app-1", "app", 1, ContainerState::Exited),
                container("app-3", "app", 3, ContainerState::Running),
                container("side-0", "side", 0, ContainerState::Exited),
                container("side-1", "side", 1, ContainerState::Exited),
            ],
            ..PodStatus::default()
        }
    }

    /// Upstream `TestGetContainersToDeleteInPodWithFilter` and
    /// `...WithNoMatch`'s cases.
    #[test]
    fn keeps_the_newest_dead_containers_of_the_died_ones_name() {
        let status = pod();
        assert_eq!(
            containers_to_delete_in_pod("app-2", &status, 1),
            ["app-1", "app-0"]
        );
        assert_eq!(containers_to_delete_in_pod("app-2", &status, 2), ["app-0"]);
        assert!(containers_to_delete_in_pod("app-2", &status, 3).is_empty());
        assert_eq!(
            containers_to_delete_in_pod("side-0", &status, 1),
            ["side-0"]
        );
        assert!(
            containers_to_delete_in_pod("gone", &status, 0).is_empty(),
            "no match"
        );
        // No filter: every name; the running container never.
        assert_eq!(
            containers_to_delete_in_pod("", &status, 0),
            ["app-2", "app-1", "side-1", "app-0", "side-0"]
        );
    }

    #[tokio::test]
    async fn the_worker_removes_what_was_queued_and_the_queue_never_blocks() {
        let runtime = kubelet_cri_client::FakeRuntime::new();
        runtime.add_image("img");
        let (deletor, worker) = ContainerDeletor::new(0);
        let mut status = pod();
        // Real containers behind the statuses, so removal is observable.
        let sandbox = runtime
            .run_pod_sandbox(
                kubelet_cri_client::api::PodSandboxConfig {
                    metadata: Some(kubelet_cri_client::api::PodSandboxMetadata {
                        name: "p".into(),
                        namespace: "default".into(),
                        uid: "u".into(),
                        attempt: 0,
                    }),
                    ..Default::default()
                },
                "",
            )
            .await
            .expect("sandbox");
        for c in &mut status.container_statuses {
            let config = kubelet_cri_client::api::ContainerConfig {
                metadata: Some(kubelet_cri_client::api::ContainerMetadata {
                    name: c.name.clone(),
                    attempt: u32::try_from(c.restart_count).expect("attempt"),
                }),
                image: Some(kubelet_cri_client::api::ImageSpec {
                    image: "img".into(),
                    ..Default::default()
                }),
                ..Default::default()
            };
            c.id = runtime
                .create_container(&sandbox, config, Default::default())
                .await
                .expect("create");
        }
        // Kept at one, as upstream (MIN_DEAD_CONTAINER_IN_POD).
        let first = status.container_statuses[0].id.clone();
        deletor.delete_containers_in_pod(&first, &status, false);
        // A full buffer drops requests instead of waiting.
        for _ in 0..CONTAINER_DELETOR_BUFFER_LIMIT {
            deletor.delete_containers_in_pod("", &status, true);
        }
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let run = tokio::spawn(worker.run(Arc::new(runtime.clone()), async {
            let _ = stop_rx.await;
        }));
        let expected_left: Vec<String> = vec![status.container_statuses[3].id.clone()];
        let container_ids = || async {
            let listed = runtime.list_containers(None).await.expect("list");
            listed.into_iter().map(|c| c.id).collect::<Vec<String>>()
        };
        let mut left = container_ids().await;
        for _ in 0..100 {
            if left == expected_left {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            left = container_ids().await;
        }
        assert_eq!(
            left, expected_left,
            "every exited container removed, the running one kept"
        );
        let _ = stop_tx.send(());
        run.await.expect("worker stops");
    }
}
