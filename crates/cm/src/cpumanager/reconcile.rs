//! The CPU manager's reconcile loop: pushes each running container's cpuset
//! (its exclusive CPUs, or the shared pool as it is now) to the runtime.
//!
//! Upstream: `pkg/kubelet/cm/cpumanager/cpu_manager.go` (`Start`, which
//! runs `reconcileState` every `reconcilePeriod` for the static policy only;
//! `reconcileState`; `removeStaleState`; the `lastUpdateState` skip) and
//! `cpu_manager_others.go` (`updateContainerCPUSet`: an
//! `UpdateContainerResources` carrying only `cpuset_cpus`).
//!
//! Two deliberate differences. The last pushed cpuset is remembered per
//! container ID, not per (pod, container name): a restarted container is a
//! new container, and remembering by name can skip it when the shared pool
//! changed between its create and its start. And the stale-state removal
//! spares assignments made after the active pods were listed (see
//! [`CpuManager::remove_stale_state`]), where upstream lists them under its
//! lock.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use kubelet_cri_client::RuntimeService;
use kubelet_cri_client::api::LinuxContainerResources;

use super::{ActiveContainer, CpuManager, CpuPolicy, Inner, RECONCILE_PERIOD};
use crate::cpuset::CpuSet;

/// What one reconcile pass works on, read fresh at every period.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReconcileSnapshot {
    /// (pod UID, container name) of every container, init containers
    /// included, of every active pod (upstream `activePods`); `None` while
    /// not every pod source has been seen (upstream `sourcesReady`), which
    /// keeps all assignments.
    pub active: Option<Vec<(String, String)>>,
    /// The running containers of the active pods, each the newest of its
    /// name (upstream: the pod status's running container IDs).
    pub running: Vec<ActiveContainer>,
}

/// Where the reconcile loop reads the kubelet's pods from (upstream
/// `ActivePodsFunc`, `SourcesReady` and `PodStatusProvider`). Any
/// `Fn() -> ReconcileSnapshot` is one.
pub trait ActiveContainerSource: Send + Sync {
    /// The active pods' containers now.
    fn snapshot(&self) -> ReconcileSnapshot;
}

impl<F> ActiveContainerSource for F
where
    F: Fn() -> ReconcileSnapshot + Send + Sync,
{
    fn snapshot(&self) -> ReconcileSnapshot {
        self()
    }
}

/// What a reconcile pass did, by container ID (upstream returns the
/// success and failure lists; success is `updated` plus `in_sync`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReconcileReport {
    /// Containers whose cpuset was pushed now.
    pub updated: Vec<String>,
    /// Containers that already had the cpuset last pushed.
    pub in_sync: Vec<String>,
    /// Containers whose update failed or whose cpuset would be empty; they
    /// are retried at the next pass.
    pub failed: Vec<String>,
}

/// What a reconcile pass does with one container.
enum Step {
    /// It has what was last pushed to it.
    InSync,
    /// Its cpuset would be empty (upstream: "should not happen outside of
    /// tests"): skipped as a failure.
    Empty,
    /// It needs this cpuset.
    Push(CpuSet),
}

fn step_of(g: &Inner, c: &ActiveContainer) -> Step {
    let want = g
        .state
        .entries
        .get(&c.pod_uid)
        .and_then(|cs| cs.get(&c.name))
        .unwrap_or(&g.state.default_cpu_set);
    if want.is_empty() {
        Step::Empty
    } else if g.last_update.get(&c.container_id) == Some(want) {
        Step::InSync
    } else {
        Step::Push(want.clone())
    }
}

impl CpuManager {
    /// The running containers whose cpuset differs from what was last
    /// pushed to them, with the cpuset they should have: their exclusive
    /// CPUs or the shared pool as it is now. Containers whose cpuset would
    /// be empty are left out.
    pub fn reconcile_plan(&self, running: &[ActiveContainer]) -> Vec<(String, CpuSet)> {
        let g = self.lock();
        running
            .iter()
            .filter_map(|c| match step_of(&g, c) {
                Step::Push(cpus) => Some((c.container_id.clone(), cpus)),
                Step::InSync | Step::Empty => None,
            })
            .collect()
    }

    /// Pushes each running container's cpuset through
    /// `UpdateContainerResources` when it differs from what was last pushed
    /// to that container (upstream `reconcileState` past `removeStaleState`,
    /// and `updateContainerCPUSet`). `running` must list every running
    /// container of the active pods: what is remembered of others is
    /// dropped. A failed update is retried at the next call.
    pub async fn reconcile(
        &self,
        runtime: &dyn RuntimeService,
        running: &[ActiveContainer],
    ) -> ReconcileReport {
        let steps: Vec<Step> = {
            let mut g = self.lock();
            for c in running {
                // Idempotent: after a kubelet restart this is how the
                // manager learns which container runs what (upstream).
                g.containers
                    .insert(c.container_id.clone(), (c.pod_uid.clone(), c.name.clone()));
            }
            // Exited containers never run again: forget what they got.
            let ids: HashSet<&str> = running.iter().map(|c| c.container_id.as_str()).collect();
            g.last_update.retain(|id, _| ids.contains(id.as_str()));
            running.iter().map(|c| step_of(&g, c)).collect()
        };
        let mut report = ReconcileReport::default();
        for (c, step) in running.iter().zip(steps) {
            let id = &c.container_id;
            let cpus = match step {
                Step::InSync => {
                    report.in_sync.push(id.clone());
                    continue;
                }
                Step::Empty => {
                    tracing::warn!(pod = %c.pod_uid, container = %c.name, "cpu manager: empty cpuset, container skipped");
                    report.failed.push(id.clone());
                    continue;
                }
                Step::Push(cpus) => cpus,
            };
            // Only the cpuset: the runtime keeps the other resources
            // (upstream sends the same partial update).
            let linux = LinuxContainerResources {
                cpuset_cpus: cpus.to_string(),
                ..Default::default()
            };
            match runtime.update_container_resources(id, linux).await {
                Ok(()) => {
                    tracing::debug!(pod = %c.pod_uid, container = %c.name, cpus = %cpus, "cpuset updated");
                    self.lock().last_update.insert(id.clone(), cpus);
                    report.updated.push(id.clone());
                }
                Err(err) => {
                    tracing::warn!(pod = %c.pod_uid, container = %c.name, %err, "cpuset update failed");
                    report.failed.push(id.clone());
                }
            }
        }
        report
    }

    /// One reconcile pass as upstream's `reconcileState`: the stale
    /// assignments of containers no longer active are released (only once
    /// every pod source is ready), then every running container gets its
    /// cpuset through [`CpuManager::reconcile`].
    pub async fn reconcile_state(
        &self,
        runtime: &dyn RuntimeService,
        source: &dyn ActiveContainerSource,
    ) -> ReconcileReport {
        // Read before listing: allocations made after it are spared.
        let generation = self.lock().generation + 1;
        let snapshot = source.snapshot();
        if let Some(active) = &snapshot.active
            && let Err(err) = self.remove_stale_state_before(active, generation)
        {
            // The state stays in memory; only its checkpoint failed.
            tracing::error!(%err, "cpu manager: removing stale state failed");
        }
        self.reconcile(runtime, &snapshot.running).await
    }

    /// Runs [`CpuManager::reconcile_state`] now and then every `period`
    /// until `shutdown` completes (upstream `wait.Until(reconcileState,
    /// reconcilePeriod)`). A zero `period` means [`RECONCILE_PERIOD`], as
    /// upstream defaults an unset `cpuManagerReconcilePeriod`. A pass that
    /// overruns the period delays the next one rather than bunching up.
    pub async fn run_reconcile_loop<S>(
        &self,
        runtime: &dyn RuntimeService,
        source: &dyn ActiveContainerSource,
        period: Duration,
        shutdown: S,
    ) where
        S: std::future::Future<Output = ()>,
    {
        let period = if period.is_zero() {
            RECONCILE_PERIOD
        } else {
            period
        };
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                biased;
                () = &mut shutdown => return,
                _ = tick.tick() => {
                    // A pass in flight finishes before shutdown is seen: an
                    // update is never cut off between the runtime's answer
                    // and the record of it.
                    let r = self.reconcile_state(runtime, source).await;
                    tracing::debug!(
                        updated = r.updated.len(),
                        in_sync = r.in_sync.len(),
                        failed = r.failed.len(),
                        "cpu manager reconcile"
                    );
                }
            }
        }
    }

    /// Starts the reconcile loop ([`CpuManager::run_reconcile_loop`]) as a
    /// background task of the current tokio runtime, every `period`, on the
    /// containers `source` lists, until [`ReconcileTask::stop`]. Call it
    /// once pod admission can run (upstream `Manager.Start`).
    ///
    /// With the `none` policy there is nothing to reconcile and no loop
    /// runs, as upstream; the task still stops and joins the same way.
    pub fn spawn_reconcile(
        self: Arc<Self>,
        runtime: Arc<dyn RuntimeService>,
        source: Arc<dyn ActiveContainerSource>,
        period: Duration,
    ) -> ReconcileTask {
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let run = !matches!(self.policy, CpuPolicy::None);
        if run {
            tracing::info!(
                policy = self.policy.name(),
                ?period,
                "cpu manager reconciling"
            );
        }
        let handle = tokio::spawn(async move {
            if !run {
                return;
            }
            let shutdown = async move {
                // A dropped sender stops the loop too.
                let _ = stopped.wait_for(|s| *s).await;
            };
            self.run_reconcile_loop(runtime.as_ref(), source.as_ref(), period, shutdown)
                .await;
        });
        ReconcileTask {
            stop,
            handle: Some(handle),
        }
    }
}

/// The reconcile loop's task ([`CpuManager::spawn_reconcile`]). Stop it
/// with [`ReconcileTask::stop`], which waits for the task to end; dropping
/// it aborts the task instead, so it never outlives its owner.
#[derive(Debug)]
pub struct ReconcileTask {
    stop: tokio::sync::watch::Sender<bool>,
    handle: Option<tokio::task::JoinHandle<()>>,
}

impl ReconcileTask {
    /// Signals the loop to stop after the pass in flight, if any, and waits
    /// for it. A loop that panicked is reported in the log.
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        if let Some(handle) = self.handle.take()
            && let Err(err) = handle.await
        {
            tracing::error!(%err, "cpu manager reconcile task failed");
        }
    }

    /// Whether the task has ended (with the `none` policy, at once).
    pub fn is_finished(&self) -> bool {
        self.handle.as_ref().is_none_or(|h| h.is_finished())
    }
}

impl Drop for ReconcileTask {
    fn drop(&mut self) {
        if let Some(handle) = self.handle.take() {
            handle.abort();
        }
    }
}
