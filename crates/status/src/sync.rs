//! [`StatusSync`]: writes the [`StatusManager`]'s statuses to the API
//! server and finishes the deletion of terminated pods (upstream
//! `manager.Start`, `syncBatch`, `syncPod`, `needsUpdate`, `needsReconcile`
//! and `canBeDeleted` in `pkg/kubelet/status/status_manager.go`).
//!
//! Every request goes through the [`kube::Client`] it is given, so tests
//! drive it with `tower_test::mock::pair` and `kube::Client::new`.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Pod, PodStatus};
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use kubelet_container::pod::{is_mirror_pod, is_static_pod};
use tokio::sync::watch;

use crate::error::StatusError;
use crate::manager::{StatusManager, VersionedPodStatus};
use crate::merge::{is_phase_terminal, merge_pod_status};
use crate::patch::status_patch;

/// How often every status is compared with the API server's even when
/// nothing changed (upstream `syncPeriod`).
pub const DEFAULT_SYNC_PERIOD: Duration = Duration::from_secs(10);

/// At most this many pods are synced at once in a round (upstream: one
/// at a time).
pub const MAX_CONCURRENT_SYNCS: usize = 16;

/// The kubelet's pods as the status syncer needs to see them (upstream
/// `status.PodManager`, the subset of `pkg/kubelet/pod.Manager` it uses).
///
/// A static pod (from a file or an URL) is known to the API server only
/// through its mirror pod: its status is written to the mirror pod, found
/// through [`PodManager::mirror_pod_by_pod`] (upstream `TranslatePodUID` /
/// `GetUIDTranslations`); a static pod without a mirror pod is skipped.
pub trait PodManager: Send + Sync {
    /// The kubelet's pod with this UID, mirror pods excepted (upstream
    /// `GetPodByUID`). For a pod from the API server, its newest copy from
    /// the watch: its status and deletion timestamp are read.
    fn pod_by_uid(&self, uid: &str) -> Option<Pod>;

    /// The mirror pod of static pod `pod`, as the API server has it
    /// (upstream `GetMirrorPodByPod`).
    fn mirror_pod_by_pod(&self, pod: &Pod) -> Option<Pod>;
}

/// Whether a pod's object may go from the API server (upstream
/// `PodDeletionSafetyProvider`, implemented by the kubelet).
pub trait PodDeletionSafetyProvider: Send + Sync {
    /// True while any of the pod's containers could still run (upstream
    /// `PodCouldHaveRunningContainers`, answered by the pod workers). Until
    /// it is false the pod is not reported terminal and not deleted.
    fn pod_could_have_running_containers(&self, pod: &Pod) -> bool;

    /// True once the pod's resources are reclaimed: containers gone,
    /// volumes unmounted, cgroups removed (upstream's older
    /// `PodResourcesAreReclaimed`; newer upstream waits for
    /// [`StatusManager::terminate_pod`] instead). A pod with a deletion
    /// timestamp and a terminal phase is deleted once its status is
    /// finished or this is true. By default: no container can run.
    fn pod_resources_are_reclaimed(&self, pod: &Pod, status: &PodStatus) -> bool {
        let _ = status;
        !self.pod_could_have_running_containers(pod)
    }
}

/// What syncing one pod did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PodSyncOutcome {
    /// The status was compared with the API server's.
    Synced {
        /// A PATCH was sent (false: the API server's status was up to date).
        patched: bool,
        /// The pod was then deleted (grace period 0) and forgotten.
        deleted: bool,
    },
    /// The pod is no longer on the API server: its status is forgotten.
    NotFound,
    /// The API server has another pod under this name (deleted and
    /// recreated): its status is forgotten, nothing sent.
    Recreated {
        /// The UID the API server has.
        api_uid: String,
    },
}

/// One pod's line in what [`StatusSync::sync_batch`] returns.
#[derive(Debug)]
pub struct PodSyncReport {
    /// The pod's UID (the static pod's for a static pod).
    pub uid: String,
    /// The UID its status is written to (the mirror pod's for a static pod).
    pub status_uid: String,
    /// The status version that was synced.
    pub version: u64,
    /// What happened, or why it failed (the status is then kept for the
    /// next round).
    pub result: Result<PodSyncOutcome, StatusError>,
}

/// Syncs pod statuses with the API server (upstream `manager.Start` and its
/// sync goroutine). Owns the client and the versions last sent; [`run`]
/// it once.
///
/// [`run`]: StatusSync::run
pub struct StatusSync {
    client: kube::Client,
    statuses: Arc<StatusManager>,
    pods: Arc<dyn PodManager>,
    safety: Arc<dyn PodDeletionSafetyProvider>,
    period: Duration,
    /// By status UID (the mirror pod's for a static pod): the version last
    /// written (upstream `apiStatusVersions`).
    api_versions: HashMap<String, u64>,
}

impl std::fmt::Debug for StatusSync {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatusSync")
            .field("period", &self.period)
            .field("api_versions", &self.api_versions)
            .finish_non_exhaustive()
    }
}

/// A pod to sync, decided under no lock.
struct Todo {
    uid: String,
    status_uid: String,
    local: Option<Pod>,
    status: VersionedPodStatus,
}

impl StatusSync {
    /// A syncer of `statuses` through `client`, with upstream's 10 s
    /// period.
    pub fn new(
        client: kube::Client,
        statuses: Arc<StatusManager>,
        pods: Arc<dyn PodManager>,
        safety: Arc<dyn PodDeletionSafetyProvider>,
    ) -> Self {
        Self {
            client,
            statuses,
            pods,
            safety,
            period: DEFAULT_SYNC_PERIOD,
            api_versions: HashMap::new(),
        }
    }

    /// Compares every status with the API server every `period` (upstream
    /// `syncPeriod`, 10 s) rather than the default.
    #[must_use]
    pub fn with_sync_period(mut self, period: Duration) -> Self {
        self.period = period.max(Duration::from_millis(1));
        self
    }

    /// The version last written for status UID `status_uid`.
    pub fn api_status_version(&self, status_uid: &str) -> Option<u64> {
        self.api_versions.get(status_uid).copied()
    }

    /// Syncs on every status change (what changed) and every period
    /// (everything, reconciling with the API server), until `stop` turns
    /// true or its sender is gone; a sync in flight is abandoned then (the
    /// statuses stay in the manager).
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) {
        tracing::info!(period = ?self.period, "starting to sync pod status with the API server");
        let statuses = Arc::clone(&self.statuses);
        let mut ticker =
            tokio::time::interval_at(tokio::time::Instant::now() + self.period, self.period);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let all = tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                () = statuses.changed() => false,
                _ = ticker.tick() => true,
            };
            tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                _ = self.sync_batch(all) => {}
            }
        }
    }

    /// One round (upstream `syncBatch`): with `all` false, the pods whose
    /// newest version was not written yet; with `all` true, also those
    /// whose API status differs from what the kubelet would write
    /// (`needsReconcile`) or that are ready to be deleted, and the versions
    /// of pods gone are forgotten. Each error is logged with the pod and
    /// the verb, and returned in its report.
    pub async fn sync_batch(&mut self, all: bool) -> Vec<PodSyncReport> {
        let mut todo = Vec::new();
        let mut live = HashSet::new();
        for (uid, mut status) in self.statuses.snapshot() {
            let local = self.pods.pod_by_uid(&uid);
            let status_uid = match local.as_ref().filter(|p| is_static_pod(p)) {
                Some(p) => match self.pods.mirror_pod_by_pod(p).and_then(|m| m.metadata.uid) {
                    Some(mirror) => mirror,
                    None => {
                        tracing::debug!(uid, pod = %format!("{}/{}", status.namespace, status.name), "static pod has no mirror pod; skipping");
                        continue;
                    }
                },
                None => uid.clone(),
            };
            live.insert(uid.clone());
            live.insert(status_uid.clone());
            if status.name.is_empty() {
                match local.as_ref() {
                    Some(p) => {
                        status.name = p.metadata.name.clone().unwrap_or_default();
                        status.namespace = p.metadata.namespace.clone().unwrap_or_default();
                    }
                    None => {
                        tracing::debug!(uid, "status of a pod without name; skipping");
                        continue;
                    }
                }
            }
            let sent = self.api_versions.get(&status_uid).copied();
            let needed = if !all {
                sent.unwrap_or(0) < status.version
            } else if self.needs_update(&status_uid, &status) {
                true
            } else if self.needs_reconcile(local.as_ref(), &status) {
                self.api_versions.remove(&status_uid);
                true
            } else {
                false
            };
            if needed {
                todo.push(Todo {
                    uid,
                    status_uid,
                    local,
                    status,
                });
            }
        }
        if all {
            self.api_versions.retain(|uid, _| live.contains(uid));
        }
        // Better than upstream, which syncs one pod after another: up to
        // MAX_CONCURRENT_SYNCS pods at once, so that a burst of new pods
        // reaches the API server in about one round trip rather than in
        // one GET and one PATCH per pod in turn (the client's QPS limit
        // still bounds the rate). The bookkeeping is applied once all
        // are answered, in the order of `todo`.
        let syncer = PodSyncer {
            client: &self.client,
            safety: self.safety.as_ref(),
        };
        let results: Vec<(Todo, Result<PodSyncOutcome, StatusError>)> =
            futures::stream::iter(todo.into_iter().map(|t| {
                let syncer = &syncer;
                async move {
                    let r = syncer.sync_pod(&t).await;
                    (t, r)
                }
            }))
            .buffered(MAX_CONCURRENT_SYNCS)
            .collect()
            .await;
        let mut reports = Vec::with_capacity(results.len());
        for (t, result) in results {
            match &result {
                Ok(PodSyncOutcome::Synced { deleted: false, .. }) => {
                    self.api_versions
                        .insert(t.status_uid.clone(), t.status.version);
                }
                Ok(_) => self.forget(&t),
                Err(e) => {
                    let pod = format!("{}/{}", t.status.namespace, t.status.name);
                    match e {
                        StatusError::Forbidden { .. } => {
                            tracing::error!(pod, uid = t.uid, verb = e.verb(), error = %e, "pod status sync refused")
                        }
                        _ => {
                            tracing::warn!(pod, uid = t.uid, verb = e.verb(), error = %e, "pod status sync failed; retrying next round")
                        }
                    }
                }
            }
            reports.push(PodSyncReport {
                uid: t.uid,
                status_uid: t.status_uid,
                version: t.status.version,
                result,
            });
        }
        reports
    }

    /// Upstream `needsUpdate`: a version not written yet, or a pod ready to
    /// be deleted.
    fn needs_update(&self, status_uid: &str, status: &VersionedPodStatus) -> bool {
        match self.api_versions.get(status_uid) {
            Some(&v) if v >= status.version => {}
            _ => return true,
        }
        self.pods
            .pod_by_uid(status_uid)
            .is_some_and(|pod| self.can_be_deleted(&pod, &pod, status))
    }

    /// Upstream `needsReconcile`, against the pod manager's copy of the API
    /// pod (the mirror pod for a static pod): true when the kubelet would
    /// write something. Better than upstream, which compares the raw
    /// statuses: a difference the merge would not send (a condition the
    /// kubelet does not own, a held terminal transition) does not cost a
    /// GET every period.
    fn needs_reconcile(&self, local: Option<&Pod>, status: &VersionedPodStatus) -> bool {
        let Some(local) = local else { return false };
        let api_pod = if is_static_pod(local) {
            match self.pods.mirror_pod_by_pod(local) {
                Some(m) => m,
                None => return false,
            }
        } else {
            local.clone()
        };
        let api = api_pod.status.clone().unwrap_or_default();
        let could_run = self.safety.pod_could_have_running_containers(local);
        let merged = merge_pod_status(&api, &status.status, could_run);
        let uid = api_pod.metadata.uid.as_deref().unwrap_or_default();
        let differs = status_patch(uid, &api, &merged).is_some();
        if differs {
            tracing::debug!(pod = %format!("{}/{}", status.namespace, status.name), "pod status differs from the API server's; reconciling");
        }
        differs
    }

    /// Upstream `canBeDeleted`; see [`can_be_deleted`].
    fn can_be_deleted(&self, api_pod: &Pod, local: &Pod, status: &VersionedPodStatus) -> bool {
        can_be_deleted(self.safety.as_ref(), api_pod, local, status)
    }

    fn forget(&mut self, t: &Todo) {
        self.statuses.remove(&t.uid);
        self.api_versions.remove(&t.status_uid);
    }
}

/// What one pod's sync needs, shared by the syncs of a batch in flight.
struct PodSyncer<'a> {
    client: &'a kube::Client,
    safety: &'a dyn PodDeletionSafetyProvider,
}

impl PodSyncer<'_> {
    /// Upstream `syncPod`: GET, merge, PATCH when changed, then the
    /// deletion handshake.
    async fn sync_pod(&self, t: &Todo) -> Result<PodSyncOutcome, StatusError> {
        let (namespace, name) = (t.status.namespace.as_str(), t.status.name.as_str());
        let api: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        let pod = match api.get(name).await {
            Ok(p) => p,
            Err(e) if is_not_found(&e) => {
                tracing::debug!(pod = %format!("{namespace}/{name}"), uid = t.uid, "pod does not exist on the API server; forgetting its status");
                return Ok(PodSyncOutcome::NotFound);
            }
            Err(e) => return Err(StatusError::request("get", "pods", namespace, name, e)),
        };
        let api_uid = pod.metadata.uid.clone().unwrap_or_default();
        if !api_uid.is_empty() && api_uid != t.status_uid {
            tracing::info!(pod = %format!("{namespace}/{name}"), old_uid = t.uid, api_uid, "pod was deleted and then recreated; skipping status update");
            return Ok(PodSyncOutcome::Recreated { api_uid });
        }
        // The kubelet's own pod decides whether containers could run (the
        // static pod, not its mirror); the API's copy otherwise.
        let local = t.local.clone().unwrap_or_else(|| pod.clone());
        let could_run = self.safety.pod_could_have_running_containers(&local);
        let old = pod.status.clone().unwrap_or_default();
        let merged = merge_pod_status(&old, &t.status.status, could_run);
        let (pod, patched) = match status_patch(&api_uid, &old, &merged) {
            Some(patch) => {
                tracing::debug!(pod = %format!("{namespace}/{name}"), %patch, version = t.status.version, "patching pod status");
                match api
                    .patch_status(name, &PatchParams::default(), &Patch::Strategic(patch))
                    .await
                {
                    Ok(p) => (p, true),
                    Err(e) => {
                        return Err(StatusError::request(
                            "patch",
                            "pods/status",
                            namespace,
                            name,
                            e,
                        ));
                    }
                }
            }
            None => (pod, false),
        };
        if api_uid.is_empty() || !can_be_deleted(self.safety, &pod, &local, &t.status) {
            return Ok(PodSyncOutcome::Synced {
                patched,
                deleted: false,
            });
        }
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: Some(api_uid),
                resource_version: None,
            }),
            ..Default::default()
        };
        match api.delete(name, &params).await {
            Ok(_) => {}
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(StatusError::request("delete", "pods", namespace, name, e)),
        }
        tracing::info!(pod = %format!("{namespace}/{name}"), "pod fully terminated and removed from the API server");
        Ok(PodSyncOutcome::Synced {
            patched,
            deleted: true,
        })
    }
}

/// Upstream `canBeDeleted`, stricter: a pod with a deletion timestamp,
/// not a mirror pod, terminal on the API server, whose containers can
/// no longer run, and whose status is finished or resources reclaimed.
fn can_be_deleted(
    safety: &dyn PodDeletionSafetyProvider,
    api_pod: &Pod,
    local: &Pod,
    status: &VersionedPodStatus,
) -> bool {
    if api_pod.metadata.deletion_timestamp.is_none() || is_mirror_pod(api_pod) {
        return false;
    }
    let phase = api_pod.status.as_ref().and_then(|s| s.phase.as_deref());
    if !is_phase_terminal(phase) {
        tracing::debug!(pod = %format!("{}/{}", status.namespace, status.name), ?phase, local_phase = ?status.status.phase, "delaying pod deletion as the phase is non-terminal");
        return false;
    }
    if safety.pod_could_have_running_containers(local) {
        return false;
    }
    status.finished || safety.pod_resources_are_reclaimed(local, &status.status)
}

fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}
