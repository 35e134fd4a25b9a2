//! The CPU manager's reconcile loop in the kubelet: with the `static`
//! policy, every `cpuManagerReconcilePeriod` each running container of the
//! active pods gets its cpuset (its exclusive CPUs, or the shared pool as it
//! is now), so containers that started on the whole shared pool stop using
//! CPUs handed out exclusively since.
//!
//! Upstream: `pkg/kubelet/cm/cpumanager/cpu_manager.go` (`Start` and
//! `reconcileState`, fed by the kubelet's `GetActivePods`, its pod status
//! provider and the pod config's `SourcesReady`). The loop itself is
//! [`CpuManager::spawn_reconcile`]; this module reads the period from the
//! configuration and lists the containers from what the kubelet knows: its
//! active pods and the PLEG's pod cache.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kubelet_cm::cpumanager::{ActiveContainer, ReconcileSnapshot, ReconcileTask};
use kubelet_cm::{CpuManager, CpuPolicy, NodeContainerManager};
use kubelet_cri_client::RuntimeService;
use kubelet_kuberuntime::{ContainerState, PodStatus};
use kubelet_pleg::PodCache;
use kubelet_podconfig::PodConfig;

use crate::config::KubeletConfiguration;
use crate::{Error, Kubelet};

/// The reconcile loop, configured and not yet started.
#[derive(Debug)]
pub struct CpuReconcile {
    cpu: Arc<CpuManager>,
    period: Duration,
}

/// `cpuManagerReconcilePeriod` as a duration: zero or empty means upstream's
/// default (10 s).
pub fn reconcile_period(config: &KubeletConfiguration) -> Result<Duration, Error> {
    let text = config.cpu_manager_reconcile_period.trim();
    if text.is_empty() {
        return Ok(kubelet_cm::cpumanager::RECONCILE_PERIOD);
    }
    let period =
        kubelet_container::duration::parse_go_duration(text).map_err(|e| Error::InvalidPod {
            pod: "*".into(),
            reason: format!("cpuManagerReconcilePeriod: {e}"),
        })?;
    Ok(if period.is_zero() {
        kubelet_cm::cpumanager::RECONCILE_PERIOD
    } else {
        period
    })
}

impl CpuReconcile {
    /// The loop for `cm`'s CPU manager, when its policy has one to run
    /// (`static`; `none` has nothing to reconcile, as upstream). Fails on
    /// an unreadable `cpuManagerReconcilePeriod`, so call it with the other
    /// start-up checks.
    pub fn new(
        config: &KubeletConfiguration,
        cm: &NodeContainerManager,
    ) -> Result<Option<Self>, Error> {
        let period = reconcile_period(config)?;
        let cpu = cm.cpu_manager_handle();
        if matches!(cpu.policy(), CpuPolicy::None) {
            return Ok(None);
        }
        Ok(Some(Self { cpu, period }))
    }

    /// The period between passes.
    pub fn period(&self) -> Duration {
        self.period
    }

    /// Starts the loop on the kubelet's active pods and the PLEG's `cache`;
    /// stale assignments are released only once `pods` has seen every
    /// source. Stop it with [`ReconcileTask::stop`].
    pub fn start(
        self,
        runtime: Arc<dyn RuntimeService>,
        kubelet: Arc<Kubelet<Arc<PodCache>>>,
        cache: Arc<PodCache>,
        pods: Arc<PodConfig>,
    ) -> ReconcileTask {
        let source = move || {
            snapshot(
                &kubelet.active_pods(),
                |uid| cache.get(uid).ok(),
                pods.sources_ready(),
            )
        };
        self.cpu
            .spawn_reconcile(runtime, Arc::new(source), self.period)
    }
}

/// What one reconcile pass works on: every container of `pods` (init
/// containers included) as active when `sources_ready`, and those whose
/// newest status in `status_of` is running (upstream `reconcileState`
/// skips waiting and terminated containers).
pub fn snapshot(
    pods: &[Pod],
    status_of: impl Fn(&str) -> Option<Arc<PodStatus>>,
    sources_ready: bool,
) -> ReconcileSnapshot {
    let mut active = Vec::new();
    let mut running = Vec::new();
    for pod in pods {
        let Some(uid) = pod.metadata.uid.as_deref() else {
            continue;
        };
        let Some(spec) = pod.spec.as_ref() else {
            continue;
        };
        let status = status_of(uid);
        let names = spec
            .init_containers
            .iter()
            .flatten()
            .chain(&spec.containers)
            .map(|c| c.name.as_str());
        for name in names {
            active.push((uid.to_owned(), name.to_owned()));
            // Statuses are newest first: an older running instance of a
            // restarted container is not what runs now.
            if let Some(c) = status
                .as_deref()
                .and_then(|s| s.find_container_status_by_name(name))
                .filter(|c| c.state == ContainerState::Running)
            {
                running.push(ActiveContainer {
                    pod_uid: uid.to_owned(),
                    name: name.to_owned(),
                    container_id: c.id.clone(),
                });
            }
        }
    }
    ReconcileSnapshot {
        active: sources_ready.then_some(active),
        running,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kubelet_kuberuntime::ContainerStatus;
    use kubelet_kuberuntime::labels::ContainerType;

    fn pod(uid: &str, init: &[&str], containers: &[&str]) -> Pod {
        let c = |n: &&str| serde_json::json!({"name": n, "image": "busybox"});
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": uid, "namespace": "default", "uid": uid},
            "spec": {
                "initContainers": init.iter().map(c).collect::<Vec<_>>(),
                "containers": containers.iter().map(c).collect::<Vec<_>>(),
            },
        }))
        .expect("test pod")
    }

    fn status(id: &str, name: &str, state: ContainerState) -> ContainerStatus {
        ContainerStatus {
            id: id.into(),
            name: name.into(),
            state,
            created_at: 0,
            started_at: 0,
            finished_at: 0,
            exit_code: 0,
            image: String::new(),
            image_ref: String::new(),
            hash: None,
            restart_count: 0,
            reason: String::new(),
            message: String::new(),
            container_type: ContainerType::Regular,
            pod_termination_grace_period: None,
        }
    }

    #[test]
    fn running_containers_of_active_pods_newest_first() {
        let pods = [
            pod("a", &["init"], &["app", "side"]),
            pod("b", &[], &["app"]),
        ];
        let a = Arc::new(PodStatus {
            uid: "a".into(),
            container_statuses: vec![
                // Newest first: app restarted and is being created again.
                status("a-app-2", "app", ContainerState::Created),
                status("a-app-1", "app", ContainerState::Running),
                status("a-side", "side", ContainerState::Running),
                status("a-init", "init", ContainerState::Exited),
                // Not in the spec (any more): not reconciled.
                status("a-old", "gone", ContainerState::Running),
            ],
            ..Default::default()
        });
        let status_of = |uid: &str| (uid == "a").then(|| a.clone());
        let s = snapshot(&pods, status_of, true);
        assert_eq!(
            s.running,
            vec![ActiveContainer {
                pod_uid: "a".into(),
                name: "side".into(),
                container_id: "a-side".into(),
            }]
        );
        let active = s.active.expect("sources ready");
        assert_eq!(
            active,
            [("a", "init"), ("a", "app"), ("a", "side"), ("b", "app")]
                .map(|(u, n)| (u.to_owned(), n.to_owned()))
                .to_vec()
        );
        // Before every source is seen, nothing is stale: no active list.
        let s = snapshot(&pods, status_of, false);
        assert_eq!(s.active, None);
        assert_eq!(s.running.len(), 1);
    }

    #[test]
    fn the_period_defaults_as_upstream() {
        let mut c = KubeletConfiguration::default();
        assert_eq!(
            reconcile_period(&c).expect("default"),
            Duration::from_secs(10)
        );
        c.cpu_manager_reconcile_period = "1500ms".into();
        assert_eq!(
            reconcile_period(&c).expect("ms"),
            Duration::from_millis(1500)
        );
        c.cpu_manager_reconcile_period = "0s".into();
        assert_eq!(reconcile_period(&c).expect("zero"), Duration::from_secs(10));
        c.cpu_manager_reconcile_period = "often".into();
        let err = reconcile_period(&c).expect_err("bad");
        assert!(
            err.to_string().contains("cpuManagerReconcilePeriod"),
            "{err}"
        );
    }
}
