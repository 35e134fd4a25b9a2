//! Container and sandbox garbage collection.
//!
//! Mirrors upstream `containerGC` (`pkg/kubelet/kuberuntime/kuberuntime_gc.go`),
//! which the kubelet runs every minute (`ContainerGCPeriod`):
//!
//! 1. Evictable containers are the ones not running and created more than
//!    `min_age` ago, grouped by (pod UID, container name), newest first.
//! 2. When all sources are ready, every evictable container of a pod whose
//!    content may be removed (deleted, or terminated when
//!    `evict_terminated_pods`) is removed.
//! 3. Each group keeps at most `max_per_pod_container` dead containers.
//! 4. With `max_containers` ≥ 0, the node keeps at most that many dead
//!    containers: first each group is cut to `max(max_containers / groups, 1)`,
//!    then the oldest overall go.
//! 5. Sandboxes that are not ready and have no containers are removed,
//!    keeping the newest of a pod that still exists; all of a removed pod's.
//! 6. The log directories of removed pods go too.
//!
//! Where this does better: removals run [`GC_PARALLELISM`] at a time
//! (upstream's one at a time made a pass over the fault soak's hundreds of
//! dead pods last minutes, longer than the soak's kubelet lived), and a
//! pass stops at the first sign the runtime is unreachable instead of
//! failing every removal left.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use kubelet_cri_client::api;

use crate::labels::labeled_container_info;
use crate::manager::CriRuntime;

/// Upstream's `GCPolicy` (kubelet defaults: `MinAge` 0,
/// `MaxPerPodContainer` 1, `MaxContainers` -1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GcPolicy {
    /// A dead container younger than this is kept.
    pub min_age: Duration,
    /// Dead containers kept per (pod, container name); negative: no limit.
    pub max_per_pod_container: i64,
    /// Dead containers kept on the node; negative: no limit.
    pub max_containers: i64,
}

impl Default for GcPolicy {
    fn default() -> Self {
        Self {
            min_age: Duration::ZERO,
            max_per_pod_container: 1,
            max_containers: -1,
        }
    }
}

/// What the kubelet knows of a pod that the runtime alone does not
/// (upstream `podStateProvider`, which the pod workers implement).
pub trait PodStateProvider: Send + Sync {
    /// The pod is gone for good: its containers and logs may be removed.
    fn should_pod_content_be_removed(&self, uid: &str) -> bool;
    /// The pod is terminated: its containers may be removed.
    fn should_pod_runtime_be_removed(&self, uid: &str) -> bool;
}

/// What one pass removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct GcResult {
    /// Container IDs removed.
    pub containers: Vec<String>,
    /// Sandbox IDs removed.
    pub sandboxes: Vec<String>,
    /// Pod log directories removed.
    pub log_dirs: Vec<String>,
}

/// How many removals a pass keeps in flight.
pub const GC_PARALLELISM: usize = 4;

/// Runs `remove` on every ID, [`GC_PARALLELISM`] at a time; returns the
/// removed ones. An unreachable runtime ends the pass (the next retries).
async fn remove_each<F, Fut>(
    ids: Vec<String>,
    what: &'static str,
    remove: F,
) -> Result<Vec<String>, kubelet_cri_client::Error>
where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = (String, Result<(), kubelet_cri_client::Error>)>,
{
    let mut removed = Vec::with_capacity(ids.len());
    let mut calls = futures::stream::iter(ids)
        .map(remove)
        .buffer_unordered(GC_PARALLELISM);
    while let Some((id, outcome)) = calls.next().await {
        match outcome {
            Ok(()) => removed.push(id),
            Err(e @ kubelet_cri_client::Error::Unavailable { .. }) => return Err(e),
            Err(e) => tracing::warn!(id = %id, error = %e, "GC: cannot remove {what}"),
        }
    }
    Ok(removed)
}

#[derive(Debug, Clone)]
struct Dead {
    id: String,
    created_at: i64,
}

fn nanos(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// One garbage collection pass over `runtime`.
pub async fn garbage_collect(
    runtime: &dyn CriRuntime,
    pod_logs_dir: &Path,
    policy: GcPolicy,
    all_sources_ready: bool,
    evict_terminated_pods: bool,
    pods: &dyn PodStateProvider,
) -> Result<GcResult, kubelet_cri_client::Error> {
    let mut result = GcResult::default();
    let newest_allowed =
        nanos(SystemTime::now()) - i64::try_from(policy.min_age.as_nanos()).unwrap_or(i64::MAX);
    let containers = runtime.list_containers(None).await?;
    let removable_pod = |uid: &str| {
        pods.should_pod_content_be_removed(uid)
            || (evict_terminated_pods && pods.should_pod_runtime_be_removed(uid))
    };

    // 1. Evictable units, newest first.
    let mut units: BTreeMap<(String, String), Vec<Dead>> = BTreeMap::new();
    for c in &containers {
        if c.state() == api::ContainerState::ContainerRunning || c.created_at > newest_allowed {
            continue;
        }
        let info = labeled_container_info(&c.labels);
        if info.pod_uid.is_empty() {
            continue;
        }
        let name = c
            .metadata
            .as_ref()
            .map(|m| m.name.clone())
            .unwrap_or(info.container_name);
        units.entry((info.pod_uid, name)).or_default().push(Dead {
            id: c.id.clone(),
            created_at: c.created_at,
        });
    }
    for list in units.values_mut() {
        list.sort_by_key(|d| std::cmp::Reverse(d.created_at));
    }

    let mut doomed: Vec<String> = Vec::new();
    // 2. Containers of removed pods.
    if all_sources_ready {
        units.retain(|(uid, _), list| {
            if removable_pod(uid) {
                doomed.extend(list.iter().map(|d| d.id.clone()));
                false
            } else {
                true
            }
        });
    }
    // 3. Per (pod, container) limit.
    if policy.max_per_pod_container >= 0 {
        let keep = usize::try_from(policy.max_per_pod_container).unwrap_or(usize::MAX);
        for list in units.values_mut() {
            if list.len() > keep {
                doomed.extend(list.drain(keep..).map(|d| d.id));
            }
        }
    }
    // 4. Node-wide limit.
    if policy.max_containers >= 0 {
        let max = usize::try_from(policy.max_containers).unwrap_or(usize::MAX);
        let total: usize = units.values().map(Vec::len).sum();
        if total > max && !units.is_empty() {
            let per_unit = (max / units.len()).max(1);
            for list in units.values_mut() {
                if list.len() > per_unit {
                    doomed.extend(list.drain(per_unit..).map(|d| d.id));
                }
            }
            let mut rest: Vec<Dead> = units.values().flatten().cloned().collect();
            if rest.len() > max {
                rest.sort_by_key(|d| d.created_at);
                let excess = rest.len() - max;
                doomed.extend(rest.into_iter().take(excess).map(|d| d.id));
            }
        }
    }
    result.containers = remove_each(doomed, "container", |id| async move {
        let outcome = runtime.remove_container(&id).await;
        (id, outcome)
    })
    .await?;

    // 5. Sandboxes.
    let remaining: HashSet<String> = runtime
        .list_containers(None)
        .await?
        .into_iter()
        .map(|c| c.pod_sandbox_id)
        .collect();
    let mut by_pod: BTreeMap<String, Vec<api::PodSandbox>> = BTreeMap::new();
    for s in runtime.list_pod_sandbox(None).await? {
        let uid = s
            .metadata
            .as_ref()
            .map(|m| m.uid.clone())
            .unwrap_or_default();
        by_pod.entry(uid).or_default().push(s);
    }
    let mut doomed = Vec::new();
    for (uid, mut sandboxes) in by_pod {
        sandboxes.sort_by_key(|s| std::cmp::Reverse(s.created_at));
        let gone = all_sources_ready && removable_pod(&uid);
        for (i, s) in sandboxes.into_iter().enumerate() {
            let ready = s.state() == api::PodSandboxState::SandboxReady;
            let keep_newest = i == 0 && !gone;
            if ready || remaining.contains(&s.id) || keep_newest {
                continue;
            }
            doomed.push(s.id);
        }
    }
    result.sandboxes = remove_each(doomed, "sandbox", |id| async move {
        let outcome = runtime.remove_pod_sandbox(&id).await;
        (id, outcome)
    })
    .await?;

    // 6. Logs of removed pods: <ns>_<name>_<uid>, the UID after the last '_'.
    if all_sources_ready && let Ok(entries) = std::fs::read_dir(pod_logs_dir) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(uid) = name.rsplit('_').next() else {
                continue;
            };
            if name.contains('_') && pods.should_pod_content_be_removed(uid) {
                if let Err(e) = std::fs::remove_dir_all(entry.path()) {
                    tracing::warn!(dir = %name, error = %e, "GC: cannot remove pod logs");
                } else {
                    result.log_dirs.push(name);
                }
            }
        }
    }
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kubelet_cri_client::{FakeRuntime, RuntimeService};

    struct Gone(HashSet<String>);

    impl PodStateProvider for Gone {
        fn should_pod_content_be_removed(&self, uid: &str) -> bool {
            self.0.contains(uid)
        }
        fn should_pod_runtime_be_removed(&self, uid: &str) -> bool {
            self.0.contains(uid)
        }
    }

    async fn pod_with_dead(rt: &FakeRuntime, uid: &str, dead: u32, running: bool) -> String {
        let sandbox = api::PodSandboxConfig {
            metadata: Some(api::PodSandboxMetadata {
                name: uid.into(),
                namespace: "default".into(),
                uid: uid.into(),
                attempt: 0,
            }),
            ..Default::default()
        };
        let sb = rt.run_pod_sandbox(sandbox.clone(), "").await.unwrap();
        let total = dead + u32::from(running);
        for attempt in 0..total {
            let config = api::ContainerConfig {
                metadata: Some(api::ContainerMetadata {
                    name: "app".into(),
                    attempt,
                }),
                image: Some(api::ImageSpec {
                    image: "img".into(),
                    ..Default::default()
                }),
                labels: [
                    (crate::labels::POD_UID.to_string(), uid.to_string()),
                    (crate::labels::CONTAINER_NAME.to_string(), "app".to_string()),
                ]
                .into(),
                ..Default::default()
            };
            let id = rt
                .create_container(&sb, config, sandbox.clone())
                .await
                .unwrap();
            rt.start_container(&id).await.unwrap();
            if attempt < dead {
                rt.exit_container(&id, 1, "Error").unwrap();
            }
        }
        sb
    }

    #[tokio::test]
    async fn keeps_one_dead_container_per_unit_and_removes_deleted_pods() {
        let rt = FakeRuntime::new();
        rt.add_image("img");
        pod_with_dead(&rt, "live", 3, true).await;
        let gone_sb = pod_with_dead(&rt, "gone", 2, false).await;
        rt.stop_pod_sandbox(&gone_sb).await.unwrap();
        let logs = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(logs.path().join("default_gone_gone")).unwrap();
        std::fs::create_dir_all(logs.path().join("default_live_live")).unwrap();
        let provider = Gone(HashSet::from(["gone".to_string()]));
        let r = garbage_collect(
            &rt,
            logs.path(),
            GcPolicy::default(),
            true,
            false,
            &provider,
        )
        .await
        .unwrap();
        // live: 3 dead → 1 kept (the newest); gone: both dead removed, and its sandbox.
        assert_eq!(r.containers.len(), 4, "{r:?}");
        assert_eq!(r.sandboxes, [gone_sb]);
        assert_eq!(r.log_dirs, ["default_gone_gone"]);
        let left = rt.list_containers(None).await.unwrap();
        assert_eq!(left.len(), 2, "the running one and the newest dead one");
        assert!(
            left.iter()
                .any(|c| c.metadata.as_ref().unwrap().attempt == 2)
        );
        assert!(
            left.iter()
                .any(|c| c.metadata.as_ref().unwrap().attempt == 3)
        );
        assert!(logs.path().join("default_live_live").exists());
    }

    /// Removals overlap (the soak's passes over hundreds of dead pods took
    /// minutes one at a time), and an unreachable runtime ends the pass at
    /// once rather than failing every removal left.
    #[tokio::test(start_paused = true)]
    async fn removals_overlap_and_an_unreachable_runtime_ends_the_pass() {
        let rt = FakeRuntime::new();
        rt.add_image("img");
        let mut gone: HashSet<String> = (0..3).map(|i| format!("later-{i}")).collect();
        for i in 0..8 {
            let uid = format!("gone-{i}");
            let sb = pod_with_dead(&rt, &uid, 1, false).await;
            rt.stop_pod_sandbox(&sb).await.unwrap();
            gone.insert(uid);
        }
        rt.set_delay("RemoveContainer", Duration::from_secs(1));
        rt.set_delay("RemovePodSandbox", Duration::from_secs(1));
        let provider = Gone(gone);
        let dir = tempfile::tempdir().unwrap();
        let started = tokio::time::Instant::now();
        let r = garbage_collect(&rt, dir.path(), GcPolicy::default(), true, false, &provider)
            .await
            .unwrap();
        assert_eq!((r.containers.len(), r.sandboxes.len()), (8, 8), "{r:?}");
        // 16 removals of 1 s each, 4 at a time.
        assert_eq!(started.elapsed().as_secs(), 4);

        for i in 0..3 {
            let uid = format!("later-{i}");
            pod_with_dead(&rt, &uid, 1, false).await;
        }
        rt.clear_calls();
        for _ in 0..3 {
            rt.inject_error(
                "RemoveContainer",
                kubelet_cri_client::Error::Unavailable {
                    call: kubelet_cri_client::Call::new("RemoveContainer"),
                    message: "connection refused".into(),
                },
            );
        }
        let err = garbage_collect(&rt, dir.path(), GcPolicy::default(), true, false, &provider)
            .await
            .unwrap_err();
        assert!(
            matches!(err, kubelet_cri_client::Error::Unavailable { .. }),
            "{err}"
        );
        let calls = rt.calls();
        assert!(
            !calls.contains(&"RemovePodSandbox"),
            "the pass ended: {calls:?}"
        );
    }

    #[tokio::test]
    async fn nothing_of_a_deleted_pod_goes_before_sources_are_ready() {
        let rt = FakeRuntime::new();
        rt.add_image("img");
        pod_with_dead(&rt, "gone", 1, false).await;
        let provider = Gone(HashSet::from(["gone".to_string()]));
        let dir = tempfile::tempdir().unwrap();
        let r = garbage_collect(
            &rt,
            dir.path(),
            GcPolicy::default(),
            false,
            false,
            &provider,
        )
        .await
        .unwrap();
        assert!(r.containers.is_empty(), "{r:?}");
    }

    #[tokio::test]
    async fn the_node_wide_limit_removes_the_oldest() {
        let rt = FakeRuntime::new();
        rt.add_image("img");
        for uid in ["a", "b", "c"] {
            pod_with_dead(&rt, uid, 2, false).await;
        }
        let policy = GcPolicy {
            max_per_pod_container: -1,
            max_containers: 2,
            ..Default::default()
        };
        let dir = tempfile::tempdir().unwrap();
        let r = garbage_collect(&rt, dir.path(), policy, true, false, &Gone(HashSet::new()))
            .await
            .unwrap();
        assert_eq!(r.containers.len(), 4, "{r:?}");
        assert_eq!(rt.list_containers(None).await.unwrap().len(), 2);
    }
}
