//! [`StatusManager`]: the newest status of every pod, versioned (upstream
//! `manager.podStatuses`, `SetPodStatus`, `updateStatusInternal`,
//! `TerminatePod` in `pkg/kubelet/status/status_manager.go`).

use std::collections::{BTreeMap, HashSet};
use std::sync::{Mutex, MutexGuard, PoisonError};

use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateTerminated, ContainerStatus, Pod, PodStatus,
};
use kubelet_container::pod::{is_static_pod, pod_uid};
use tokio::sync::Notify;

use crate::error::StatusError;
use crate::merge::{
    check_container_state_transition, is_phase_terminal, is_pod_status_by_kubelet_equal,
    normalize_status,
};
use crate::phase;

/// A pod's newest status with what the syncer needs to send it (upstream
/// `versionedPodStatus`).
#[derive(Debug, Clone, PartialEq)]
pub struct VersionedPodStatus {
    /// Increases by one on every change of the pod's status; the syncer
    /// sends a status only when its version is newer than the one it last
    /// sent (or the API server's copy differs).
    pub version: u64,
    /// The pod's name, to address it on the API server (empty when only
    /// [`StatusManager::set`] recorded it: the syncer then asks its
    /// `PodManager`).
    pub name: String,
    /// The pod's namespace.
    pub namespace: String,
    /// True once [`StatusManager::terminate_pod`] recorded the final status
    /// (upstream `podIsFinished`: `SyncTerminatedPod` completed); it sticks.
    pub finished: bool,
    /// The status itself, normalized (times at whole seconds, container
    /// statuses sorted).
    pub status: PodStatus,
}

/// The newest API status of every pod, by UID, versioned; the source of
/// truth the kubelet's components read (through
/// [`kubelet_container::PodStatusProvider`]) and the status syncer
/// ([`crate::StatusSync`]) writes to the API server.
///
/// Every change bumps the pod's version and wakes the syncer without
/// blocking the caller (a [`Notify`] permit, as upstream's buffered
/// `podStatusChannel`). A terminal phase already recorded sticks.
#[derive(Debug, Default)]
pub struct StatusManager {
    statuses: Mutex<BTreeMap<String, VersionedPodStatus>>,
    changed: Notify,
}

/// The inputs of one update (upstream `updateStatusInternal`'s arguments).
struct Update<'a> {
    uid: &'a str,
    pod: Option<&'a Pod>,
    status: PodStatus,
    force: bool,
    finished: bool,
}

impl StatusManager {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, VersionedPodStatus>> {
        self.statuses.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records `status` for `uid` and returns what was recorded. A terminal
    /// phase already recorded sticks (upstream: no transition out of Failed
    /// or Succeeded), and with it the reason, message and
    /// `DisruptionTarget` condition of why the pod ended.
    ///
    /// Without the pod, the container state transitions cannot be checked
    /// against its restart policy, and the syncer must find its name
    /// through its `PodManager`: prefer [`StatusManager::set_pod_status`].
    pub fn set(&self, uid: &str, status: PodStatus) -> PodStatus {
        let mut map = self.lock();
        let update = Update {
            uid,
            pod: None,
            status,
            force: false,
            finished: false,
        };
        match self.update_locked(&mut map, update) {
            Ok(s) => s,
            // Without a pod no transition is checked, so no error; keep the
            // old status should that ever change.
            Err(_) => map.get(uid).map(|v| v.status.clone()).unwrap_or_default(),
        }
    }

    /// Records `status` for `pod` (upstream `SetPodStatus`): refuses a
    /// terminated container going back to running against the pod's
    /// restart policy, keeps unchanged conditions' transition times and the
    /// start time, normalizes it, and bumps the version when it differs
    /// from the recorded one as far as the kubelet is concerned — always
    /// when the pod has a deletion timestamp, so that the syncer can finish
    /// the deletion. Returns what was recorded.
    pub fn set_pod_status(&self, pod: &Pod, status: PodStatus) -> Result<PodStatus, StatusError> {
        let mut map = self.lock();
        let update = Update {
            uid: pod_uid(pod),
            pod: Some(pod),
            status,
            force: pod.metadata.deletion_timestamp.is_some(),
            finished: false,
        };
        self.update_locked(&mut map, update)
    }

    /// Records the final status of a pod whose termination completed
    /// (upstream `TerminatePod`, called at the end of `SyncTerminatedPod`):
    /// once the pod initialized, every container without a terminated state
    /// is recorded as terminated with `ContainerStatusUnknown` and exit code
    /// 137, as are the init containers that started; a pod that is not
    /// static goes to `Failed` unless already terminal. The status is marked
    /// finished, which lets the syncer delete a pod with a deletion
    /// timestamp.
    pub fn terminate_pod(&self, pod: &Pod) -> Result<PodStatus, StatusError> {
        let mut map = self.lock();
        let uid = pod_uid(pod);
        let cached = map.get(uid).map(|v| v.status.clone());
        let is_cached = cached.is_some();
        let mut status = cached.or_else(|| pod.status.clone()).unwrap_or_default();
        let unknown = || ContainerState {
            terminated: Some(ContainerStateTerminated {
                reason: Some("ContainerStatusUnknown".into()),
                message: Some(
                    "The container could not be located when the pod was terminated".into(),
                ),
                exit_code: 137,
                ..Default::default()
            }),
            ..Default::default()
        };
        let is_terminated = |c: &ContainerStatus| {
            c.state
                .as_ref()
                .and_then(|s| s.terminated.as_ref())
                .is_some()
        };
        if has_pod_initialized(pod) {
            for c in status.container_statuses.iter_mut().flatten() {
                if !is_terminated(c) {
                    c.state = Some(unknown());
                }
            }
        }
        if let Some(inits) = status.init_container_statuses.as_mut() {
            let started = initialized_containers(inits);
            for c in inits.iter_mut().take(started) {
                if !is_terminated(c) {
                    c.state = Some(unknown());
                }
            }
        }
        if !is_static_pod(pod) {
            match status.phase.as_deref() {
                Some(phase::SUCCEEDED | phase::FAILED) => {}
                other => {
                    if other == Some(phase::RUNNING) && is_cached {
                        tracing::info!(pod = %pod_ref(pod), "terminal running pod should have already been marked as failed");
                    }
                    status.phase = Some(phase::FAILED.into());
                }
            }
        }
        let update = Update {
            uid,
            pod: Some(pod),
            status,
            force: true,
            finished: true,
        };
        self.update_locked(&mut map, update)
    }

    /// Upstream `updateStatusInternal`, under the lock.
    fn update_locked(
        &self,
        map: &mut BTreeMap<String, VersionedPodStatus>,
        update: Update<'_>,
    ) -> Result<PodStatus, StatusError> {
        let Update {
            uid,
            pod,
            mut status,
            force,
            mut finished,
        } = update;
        let cached = map.get(uid);
        let old = cached
            .map(|c| c.status.clone())
            .or_else(|| pod.and_then(|p| p.status.clone()))
            .unwrap_or_default();
        if let Some(c) = cached
            && c.finished
            && !finished
            && !pod.is_some_and(is_static_pod)
        {
            finished = true;
        }
        if let Some(pod) = pod
            && let Err(e) = check_container_state_transition(&old, &status, pod)
        {
            let err = StatusError::IllegalTransition {
                pod: pod_ref(pod),
                kind: if e.init {
                    "init container"
                } else {
                    "container"
                },
                container: e.container,
            };
            tracing::error!(error = %err, "status update on pod aborted");
            return Err(err);
        }
        keep_terminal(&old, &mut status);
        // Transition times of conditions whose status did not change.
        for c in status.conditions.iter_mut().flatten() {
            match old.conditions.iter().flatten().find(|o| o.type_ == c.type_) {
                Some(o) if o.status == c.status => {
                    c.last_transition_time = o.last_transition_time.clone();
                }
                _ if c.last_transition_time.is_none() => {
                    c.last_transition_time = Some(crate::now());
                }
                _ => {}
            }
        }
        // The start time does not change across updates.
        if old.start_time.is_some() {
            status.start_time = old.start_time.clone();
        } else if status.start_time.is_none() {
            status.start_time = Some(crate::now());
        }
        normalize_status(pod, &mut status);

        let (name, namespace) = match pod {
            Some(p) => (
                p.metadata.name.clone().unwrap_or_default(),
                p.metadata.namespace.clone().unwrap_or_default(),
            ),
            None => cached
                .map(|c| (c.name.clone(), c.namespace.clone()))
                .unwrap_or_default(),
        };
        if let Some(c) = map.get_mut(uid)
            && !force
            && is_pod_status_by_kubelet_equal(&c.status, &status)
        {
            if c.name.is_empty() && !name.is_empty() {
                c.name = name;
                c.namespace = namespace;
            }
            tracing::trace!(uid, "ignoring same status for pod");
            return Ok(c.status.clone());
        }
        let version = map.get(uid).map_or(0, |c| c.version) + 1;
        map.insert(
            uid.to_owned(),
            VersionedPodStatus {
                version,
                name,
                namespace,
                finished,
                status: status.clone(),
            },
        );
        self.changed.notify_one();
        Ok(status)
    }

    /// The newest status of `uid`.
    pub fn get(&self, uid: &str) -> Option<PodStatus> {
        self.lock().get(uid).map(|v| v.status.clone())
    }

    /// The newest status of `uid` with its version, name and whether it is
    /// final.
    pub fn versioned(&self, uid: &str) -> Option<VersionedPodStatus> {
        self.lock().get(uid).cloned()
    }

    /// The version of `uid`'s newest status (0 is never used).
    pub fn version(&self, uid: &str) -> Option<u64> {
        self.lock().get(uid).map(|v| v.version)
    }

    /// Forgets `uid` (after the pod is gone; upstream `deletePodStatus`).
    pub fn remove(&self, uid: &str) {
        self.lock().remove(uid);
    }

    /// Forgets every pod not in `keep` (upstream `RemoveOrphanedStatuses`).
    pub fn remove_orphaned_statuses(&self, keep: &HashSet<String>) {
        self.lock().retain(|uid, _| keep.contains(uid));
    }

    /// Every pod's status, by UID.
    pub fn all(&self) -> BTreeMap<String, PodStatus> {
        self.lock()
            .iter()
            .map(|(k, v)| (k.clone(), v.status.clone()))
            .collect()
    }

    /// Every pod's versioned status, by UID (what the syncer works from).
    pub fn snapshot(&self) -> BTreeMap<String, VersionedPodStatus> {
        self.lock().clone()
    }

    /// Resolves once a status changed: at once if one changed since the
    /// last call returned (one change is remembered, as upstream's
    /// one-slot `podStatusChannel`), else at the next change.
    pub async fn changed(&self) {
        self.changed.notified().await;
    }
}

/// A terminal phase already recorded sticks, and with it why the pod ended
/// (its reason, message and `DisruptionTarget` condition) when the new
/// status knows nothing of it.
fn keep_terminal(old: &PodStatus, status: &mut PodStatus) {
    if !is_phase_terminal(old.phase.as_deref()) {
        return;
    }
    if status.phase != old.phase {
        status.phase = old.phase.clone();
    }
    if status.reason.is_none() {
        status.reason = old.reason.clone();
        status.message = old.message.clone();
        let kept: Vec<_> = old
            .conditions
            .iter()
            .flatten()
            .filter(|c| c.type_ == crate::merge::condition::DISRUPTION_TARGET)
            .cloned()
            .collect();
        if !kept.is_empty() {
            let conds = status.conditions.get_or_insert_with(Vec::new);
            conds.retain(|c| c.type_ != crate::merge::condition::DISRUPTION_TARGET);
            conds.extend(kept);
        }
    }
}

fn pod_ref(pod: &Pod) -> String {
    format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or_default(),
        pod.metadata.name.as_deref().unwrap_or_default()
    )
}

/// Upstream `hasPodInitialized`: no init containers, or a regular container
/// left waiting once, or the last init container completed (or, for a
/// sidecar, runs and started).
fn has_pod_initialized(pod: &Pod) -> bool {
    let inits = pod
        .spec
        .as_ref()
        .and_then(|s| s.init_containers.as_deref())
        .unwrap_or_default();
    if inits.is_empty() {
        return true;
    }
    let status = pod.status.as_ref();
    let waiting = |s: &ContainerStatus| s.state.as_ref().and_then(|x| x.waiting.as_ref()).is_some();
    let last_terminated = |s: &ContainerStatus| {
        s.last_state
            .as_ref()
            .and_then(|x| x.terminated.as_ref())
            .is_some()
    };
    if status
        .and_then(|s| s.container_statuses.as_ref())
        .into_iter()
        .flatten()
        .any(|s| last_terminated(s) || !waiting(s))
    {
        return true;
    }
    let init_statuses = status
        .and_then(|s| s.init_container_statuses.as_deref())
        .unwrap_or_default();
    let Some(last) = init_statuses.last() else {
        return false;
    };
    let Some(container) = inits.get(init_statuses.len() - 1) else {
        return false;
    };
    if container.restart_policy.as_deref() == Some("Always") {
        return last
            .state
            .as_ref()
            .and_then(|x| x.running.as_ref())
            .is_some()
            && last.started == Some(true);
    }
    let ok = |s: Option<&ContainerState>| {
        s.and_then(|x| x.terminated.as_ref())
            .is_some_and(|t| t.exit_code == 0)
    };
    ok(last.last_state.as_ref()) || ok(last.state.as_ref())
}

/// Upstream `initializedContainers`: how many init container statuses,
/// from the first, have attempted to start (all but the suffix still
/// waiting; at least one).
fn initialized_containers(statuses: &[ContainerStatus]) -> usize {
    for (i, c) in statuses.iter().enumerate().rev() {
        let waiting = c.state.as_ref().and_then(|s| s.waiting.as_ref()).is_some();
        let last_terminated = c
            .last_state
            .as_ref()
            .and_then(|s| s.terminated.as_ref())
            .is_some();
        if !waiting || last_terminated {
            return i + 1;
        }
    }
    statuses.len().min(1)
}

impl kubelet_container::PodStatusProvider for StatusManager {
    fn pod_status(&self, pod_uid: &str) -> Option<PodStatus> {
        self.get(pod_uid)
    }
}
