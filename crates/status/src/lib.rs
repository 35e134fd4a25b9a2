//! The status manager of a kubelet (upstream `pkg/kubelet/status`): the
//! newest API status of every pod, computed from the runtime's view,
//! versioned, and kept in sync with the API server.
//!
//! The main type is [`StatusManager`]: the kubelet records each pod's
//! status there ([`StatusManager::set_pod_status`]), its components read
//! it back (it implements [`kubelet_container::PodStatusProvider`]), and
//! [`StatusSync`] writes it to the API server: on every change and every
//! 10 s it GETs the pod, merges the kubelet's status into the API's
//! ([`merge::merge_pod_status`]), sends a strategic merge PATCH of
//! `pods/<name>/status` with the pod's UID as precondition only when
//! something changed ([`patch::status_patch`]), and deletes with a grace
//! period of 0 a pod whose deletion was requested once it is terminal and
//! none of its containers can run. The kubelet supplies what the syncer
//! cannot know through two traits: [`PodManager`] (its pods, and the
//! mirror pod of each static pod, to which a static pod's status goes) and
//! [`PodDeletionSafetyProvider`] (whether a pod's containers could still
//! run).
//!
//! ```no_run
//! # async fn demo(pods: std::sync::Arc<dyn kubelet_status::PodManager>,
//! #               safety: std::sync::Arc<dyn kubelet_status::PodDeletionSafetyProvider>,
//! #               pod: k8s_openapi::api::core::v1::Pod)
//! # -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use kubelet_status::{StatusManager, StatusSync, phase};
//!
//! let statuses = Arc::new(StatusManager::default());
//! let (stop_tx, stop) = tokio::sync::watch::channel(false);
//! let client = kube::Client::try_default().await?;
//! let syncer = StatusSync::new(client, Arc::clone(&statuses), pods, safety);
//! let task = tokio::spawn(syncer.run(stop));
//!
//! // The pod worker records what it saw; the syncer PATCHes it (once).
//! let status = k8s_openapi::api::core::v1::PodStatus {
//!     phase: Some(phase::RUNNING.into()),
//!     ..Default::default()
//! };
//! statuses.set_pod_status(&pod, status)?;
//!
//! stop_tx.send(true)?;
//! task.await?;
//! # Ok(())
//! # }
//! ```
//!
//! # What it mirrors
//!
//! - `generateAPIPodStatus`, `getPhase` and `convertToAPIContainerStatuses`
//!   (`pkg/kubelet/kubelet_pods.go`) and the condition generators of
//!   `pkg/kubelet/status/generate.go`: [`generate_api_pod_status`],
//!   [`get_phase`];
//! - `pkg/kubelet/status/status_manager.go`: `SetPodStatus`,
//!   `updateStatusInternal` (versions, `checkContainerStateTransition`,
//!   transition times, start time, `normalizeStatus`,
//!   `isPodStatusByKubeletEqual`), `TerminatePod`,
//!   `RemoveOrphanedStatuses` ([`StatusManager`]); `Start`, `syncBatch`,
//!   `syncPod`, `needsUpdate`, `needsReconcile`, `canBeDeleted`
//!   ([`StatusSync`]); `mergePodStatus` ([`merge`]);
//! - `pkg/util/pod/pod.go` `PatchPodStatus` (two-way strategic merge patch
//!   with a UID precondition, no request when unchanged): [`patch`];
//! - `pkg/kubelet/pod/pod_manager.go` `TranslatePodUID` /
//!   `GetUIDTranslations`: the static-to-mirror translation through
//!   [`PodManager`];
//! - `pkg/kubelet/types/pod_status.go`: which conditions the kubelet owns
//!   ([`merge::pod_condition_by_kubelet`]).
//!
//! # Where it does better
//!
//! - A terminal phase never moves: not in the manager (a later status
//!   cannot undo `Succeeded`/`Failed`, and keeps why the pod ended), not in
//!   the merge (a terminal phase on the API server is kept, where upstream
//!   relies on `generateAPIPodStatus`).
//! - Reconciliation compares what would be sent, not raw statuses: a
//!   difference the merge would not send costs no GET every period.
//! - A round syncs up to [`MAX_CONCURRENT_SYNCS`] pods at once, where
//!   upstream's `syncBatch` GETs and PATCHes one pod after another: 30
//!   pods that start together reach the API server in a few round trips,
//!   not 60 in turn.
//! - A kubelet-owned condition whose status did not change keeps the API
//!   server's transition time, and `PodScheduled`, `hostIP(s)` and
//!   `nominatedNodeName` are kept when the kubelet's status leaves them
//!   unset (upstream's kubelet always fills them; callers of this crate
//!   may not).
//! - Deletion also requires that no container can run, even for a status
//!   marked finished.
//! - A pod gone from the API server (404) is forgotten at once rather than
//!   at the next orphan sweep.
//! - Every failure is a [`StatusError`] naming the pod, the verb and the
//!   resource; a 403 is its own variant.
//!
//! # Not done (yet)
//!
//! - `SetContainerReadiness` / `SetContainerStartup`: the prober's results
//!   reach the status through [`generate_api_pod_status_with`] instead.
//! - The checkpointed pod resource allocation and resize status
//!   (`state`), and the `PodStartupLatencyStateHelper` and
//!   `PodStatusSyncDuration` metrics.
//! - `GetPodStatus` by mirror pod UID (`TranslatePodUID` in the reader):
//!   statuses are read by the kubelet's own pod UID.
//! - The strategic merge patch knows `PodStatus`'s patch strategies only
//!   (`retainKeys` of `resourceClaimStatuses` is not emitted: the kubelet
//!   never changes them).

mod error;
mod manager;
pub mod merge;
pub mod patch;
mod sync;

pub use error::StatusError;
pub use manager::{StatusManager, VersionedPodStatus};
pub use sync::{
    DEFAULT_SYNC_PERIOD, MAX_CONCURRENT_SYNCS, PodDeletionSafetyProvider, PodManager,
    PodSyncOutcome, PodSyncReport, StatusSync,
};

use std::collections::HashMap;

use k8s_openapi::api::core::v1::{
    Container, ContainerState, ContainerStateRunning, ContainerStateTerminated,
    ContainerStateWaiting, ContainerStatus, Pod, PodCondition, PodIP, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kubelet_container::ContainerId;
use kubelet_container::podres::is_restartable_init;
use kubelet_container::{ContainerState as RtState, PodStatus as RuntimePodStatus};

/// The pod phases (upstream `v1.PodPhase`).
pub mod phase {
    /// Not all containers have started.
    pub const PENDING: &str = "Pending";
    /// At least one container runs, or restarts.
    pub const RUNNING: &str = "Running";
    /// Every container exited 0 and none will restart.
    pub const SUCCEEDED: &str = "Succeeded";
    /// Every container stopped and at least one failed, for good.
    pub const FAILED: &str = "Failed";
}

/// An API time from nanoseconds since the epoch; `None` for 0 (unset).
pub fn time_of(nanos: i64) -> Option<Time> {
    if nanos <= 0 {
        return None;
    }
    let secs = nanos.div_euclid(1_000_000_000);
    let sub = u32::try_from(nanos.rem_euclid(1_000_000_000)).unwrap_or(0);
    k8s_openapi::jiff::Timestamp::new(secs, i32::try_from(sub).unwrap_or(0))
        .ok()
        .map(Time)
}

fn now() -> Time {
    // From the system clock by hand: `Timestamp::now` needs a jiff feature
    // this crate does not otherwise pull in.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    time_of(nanos).unwrap_or(Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH))
}

fn restart_policy(pod: &Pod) -> &str {
    pod.spec
        .as_ref()
        .and_then(|s| s.restart_policy.as_deref())
        .unwrap_or("Always")
}

/// One container's API status from the runtime's newest record of it.
/// The waiting reason of a container not created yet (upstream
/// `kubecontainer.ContainerCreating`, `pkg/kubelet/kuberuntime`).
pub const CONTAINER_CREATING: &str = "ContainerCreating";
/// The waiting reason of an app container while its pod's init containers
/// run (upstream `PodInitializing`, `pkg/kubelet/kubelet_pods.go`).
pub const POD_INITIALIZING: &str = "PodInitializing";

fn container_status(
    c: &Container,
    rt: &RuntimePodStatus,
    waiting_reason: Option<&str>,
    default_waiting: &str,
    runtime_name: &str,
) -> ContainerStatus {
    let mut statuses = rt.container_statuses.iter().filter(|s| s.name == c.name);
    let newest = statuses.next();
    let previous = statuses.next();
    let terminated = |s: &kubelet_container::ContainerStatus| ContainerStateTerminated {
        exit_code: s.exit_code,
        reason: Some(s.reason.clone()).filter(|r| !r.is_empty()),
        message: Some(s.message.clone()).filter(|m| !m.is_empty()),
        started_at: time_of(s.started_at),
        finished_at: time_of(s.finished_at),
        container_id: Some(ContainerId::new(runtime_name, s.id.as_str()).to_string()),
        signal: None,
    };
    let (state, ready, started) = match newest.map(|s| (s, s.state)) {
        Some((s, RtState::Running)) => (
            ContainerState {
                running: Some(ContainerStateRunning {
                    started_at: time_of(s.started_at),
                }),
                ..Default::default()
            },
            // Without probes a running container is ready (upstream's
            // default when no readiness probe is set).
            c.readiness_probe.is_none(),
            true,
        ),
        Some((s, RtState::Exited)) if waiting_reason.is_none() => (
            ContainerState {
                terminated: Some(terminated(s)),
                ..Default::default()
            },
            false,
            false,
        ),
        _ => (
            ContainerState {
                waiting: Some(ContainerStateWaiting {
                    reason: Some(waiting_reason.unwrap_or(default_waiting).to_owned()),
                    message: None,
                }),
                ..Default::default()
            },
            false,
            false,
        ),
    };
    // lastState: the previous run, or the newest one while waiting to restart.
    let last = match (waiting_reason, newest) {
        (Some(_), Some(s)) if s.state == RtState::Exited => Some(s),
        _ => previous.filter(|s| s.state == RtState::Exited),
    };
    ContainerStatus {
        name: c.name.clone(),
        image: c.image.clone().unwrap_or_default(),
        image_id: newest.map(|s| s.image_ref.clone()).unwrap_or_default(),
        container_id: newest.map(|s| ContainerId::new(runtime_name, s.id.as_str()).to_string()),
        restart_count: newest.map(|s| s.restart_count).unwrap_or(0),
        ready,
        started: Some(started),
        state: Some(state),
        last_state: last.map(|s| ContainerState {
            terminated: Some(terminated(s)),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The pod phase (upstream `getPhase`). `init` and `app` are in spec
/// order; `pod_has_initialized` says an app container of the pod runs or
/// was created (upstream `HasAnyActiveRegularContainerStarted`).
///
/// Sidecars (restartable init containers) do not count as init
/// containers: a running one counts as a running container (pending
/// while not started, unless the pod was initialized), an exited one is
/// ignored, and their failures never fail the pod.
pub fn get_phase(
    pod: &Pod,
    init: &[ContainerStatus],
    app: &[ContainerStatus],
    pod_has_initialized: bool,
) -> &'static str {
    let policy = restart_policy(pod);
    let spec_inits = pod
        .spec
        .as_ref()
        .and_then(|s| s.init_containers.as_deref())
        .unwrap_or_default();
    let mut pending_init = 0;
    let mut failed_init = 0;
    let mut pending_sidecars = 0;
    let mut running_sidecars = 0;
    for (c, s) in spec_inits.iter().zip(init) {
        let st = s.state.as_ref();
        if is_restartable_init(c) {
            if st.and_then(|x| x.running.as_ref()).is_some() {
                if s.started != Some(true) {
                    pending_sidecars += 1;
                }
                running_sidecars += 1;
            } else if st.and_then(|x| x.terminated.as_ref()).is_none()
                && s.last_state
                    .as_ref()
                    .and_then(|l| l.terminated.as_ref())
                    .is_none()
            {
                // Waiting, never ran.
                pending_sidecars += 1;
            }
            continue;
        }
        match (
            st.and_then(|x| x.terminated.as_ref()),
            st.and_then(|x| x.running.as_ref()),
        ) {
            (Some(t), _) if t.exit_code == 0 => {}
            (Some(_), _) => {
                failed_init += 1;
                pending_init += 1;
            }
            _ => pending_init += 1,
        }
    }
    if failed_init > 0 && policy == "Never" {
        return phase::FAILED;
    }
    let (mut running, mut waiting, mut stopped, mut succeeded) = (running_sidecars, 0, 0, 0);
    for s in app {
        let st = s.state.as_ref();
        if st.and_then(|x| x.running.as_ref()).is_some() {
            running += 1;
        } else if let Some(t) = st.and_then(|x| x.terminated.as_ref()) {
            stopped += 1;
            if t.exit_code == 0 {
                succeeded += 1;
            }
        } else if s
            .last_state
            .as_ref()
            .and_then(|l| l.terminated.as_ref())
            .is_some()
        {
            // Waiting to restart after a run: it counts as stopped-then-waiting.
            waiting += 1;
        } else {
            waiting += 1;
        }
    }
    if (pending_init > 0 || (pending_sidecars > 0 && !pod_has_initialized))
        && running == running_sidecars
        && stopped == 0
    {
        return phase::PENDING;
    }
    if waiting > 0 {
        // A container waiting to restart after it ran keeps the pod Running
        // (upstream counts it as running when restartable).
        let restarting = app.iter().any(|s| {
            s.last_state
                .as_ref()
                .and_then(|l| l.terminated.as_ref())
                .is_some()
        });
        if restarting && policy != "Never" {
            return phase::RUNNING;
        }
        return phase::PENDING;
    }
    if running > 0 {
        return phase::RUNNING;
    }
    if stopped == app.len() && !app.is_empty() {
        return match policy {
            "Always" => phase::RUNNING,
            "OnFailure" if succeeded == stopped => phase::SUCCEEDED,
            "OnFailure" => phase::RUNNING,
            _ if succeeded == stopped => phase::SUCCEEDED,
            _ => phase::FAILED,
        };
    }
    phase::PENDING
}

fn condition(kind: &str, ok: bool, reason: Option<&str>) -> PodCondition {
    PodCondition {
        type_: kind.into(),
        status: if ok { "True" } else { "False" }.into(),
        reason: if ok { None } else { reason.map(str::to_owned) },
        last_transition_time: Some(now()),
        ..Default::default()
    }
}

/// Upstream `convertToAPIContainerStatuses`' defaults from the old status
/// (`pkg/kubelet/kubelet_pods.go`): a container the runtime holds no
/// record of keeps, from `old` (the status manager's last status, else the
/// pod's own), its whole old status if that had terminated, else its
/// `restartCount` and `lastState`. Without it a restart count went back to
/// 0 once garbage collection or a pod's cleanup removed its containers.
pub fn apply_old_container_statuses(
    status: &mut PodStatus,
    old: &PodStatus,
    rt: &RuntimePodStatus,
) {
    let apply = |new: &mut Vec<ContainerStatus>, old: Option<&Vec<ContainerStatus>>| {
        for c in new.iter_mut() {
            if rt.container_statuses.iter().any(|s| s.name == c.name) {
                continue;
            }
            let Some(o) = old.and_then(|o| o.iter().find(|o| o.name == c.name)) else {
                continue;
            };
            if o.state.as_ref().is_some_and(|s| s.terminated.is_some()) {
                *c = o.clone();
            } else {
                c.restart_count = o.restart_count;
                c.last_state = o.last_state.clone();
            }
        }
    };
    if let Some(new) = status.container_statuses.as_mut() {
        apply(new, old.container_statuses.as_ref());
    }
    if let Some(new) = status.init_container_statuses.as_mut() {
        apply(new, old.init_container_statuses.as_ref());
    }
}

/// The reason of a `Ready` condition held back by readiness gates (upstream
/// `ReadinessGatesNotReady`, `pkg/kubelet/status/generate.go`).
pub const READINESS_GATES_NOT_READY: &str = "ReadinessGatesNotReady";

/// The `Ready` condition (upstream `GeneratePodReadyCondition`,
/// `pkg/kubelet/status/generate.go`): not ready with `unready_reason` while
/// the containers are not; else not ready with
/// [`READINESS_GATES_NOT_READY`] while a readiness gate of the spec has no
/// `True` condition of its type in the pod's status (conditions written by
/// others through the API, which the status manager keeps).
pub fn pod_ready_condition(
    pod: &Pod,
    containers_ready: bool,
    unready_reason: &str,
) -> PodCondition {
    if !containers_ready {
        return condition("Ready", false, Some(unready_reason));
    }
    let conditions = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_deref())
        .unwrap_or_default();
    let unready: Vec<String> = pod
        .spec
        .as_ref()
        .and_then(|s| s.readiness_gates.as_deref())
        .unwrap_or_default()
        .iter()
        .filter_map(|gate| {
            let kind = &gate.condition_type;
            match conditions.iter().find(|c| &c.type_ == kind) {
                None => Some(format!(
                    "corresponding condition of pod readiness gate {kind:?} does not exist."
                )),
                Some(c) if c.status != "True" => Some(format!(
                    "the status of pod readiness gate {kind:?} is not \"True\", but {}",
                    c.status
                )),
                Some(_) => None,
            }
        })
        .collect();
    if unready.is_empty() {
        return condition("Ready", true, None);
    }
    PodCondition {
        message: Some(unready.join(", ")),
        ..condition("Ready", false, Some(READINESS_GATES_NOT_READY))
    }
}

/// Whether the API's `Ready` condition of `pod` disagrees with its
/// readiness gates (upstream `NeedToReconcilePodReadiness`,
/// `pkg/kubelet/status/status_manager.go`): a pod with gates whose
/// status, as the API server has it, has a `Ready` condition of another
/// status or message than the gates and its `ContainersReady` condition
/// give. The kubelet then syncs the pod at once (upstream
/// `HandlePodReconcile`) rather than at its next periodic sync.
pub fn need_to_reconcile_pod_readiness(pod: &Pod) -> bool {
    let has_gates = pod
        .spec
        .as_ref()
        .and_then(|s| s.readiness_gates.as_ref())
        .is_some_and(|g| !g.is_empty());
    if !has_gates {
        return false;
    }
    let conditions = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_deref())
        .unwrap_or_default();
    let Some(current) = conditions.iter().find(|c| c.type_ == "Ready") else {
        return false;
    };
    let containers_ready = conditions
        .iter()
        .any(|c| c.type_ == "ContainersReady" && c.status == "True");
    let want = pod_ready_condition(pod, containers_ready, "ContainersNotReady");
    current.status != want.status || current.message != want.message
}

/// The reason of a pod failed for its `activeDeadlineSeconds` (upstream
/// `pkg/kubelet/active_deadline.go`).
pub const DEADLINE_EXCEEDED: &str = "DeadlineExceeded";
/// Its message, in upstream's words.
pub const DEADLINE_EXCEEDED_MESSAGE: &str =
    "Pod was active on the node longer than the specified deadline";

/// Whether `pod`, started at `start`, has run its `activeDeadlineSeconds`
/// out at `now` (upstream `activeDeadlineHandler.pastActiveDeadline`: no
/// deadline or no start time, never). The kubelet notices at the pod's
/// next sync: a spec update, a lifecycle event or its periodic resync
/// (`syncFrequency`; upstream also checks every second).
pub fn past_active_deadline(pod: &Pod, start: Option<&Time>, now: &Time) -> bool {
    let Some(deadline) = pod.spec.as_ref().and_then(|s| s.active_deadline_seconds) else {
        return false;
    };
    let Some(start) = start else {
        return false;
    };
    let elapsed = now.0.as_second() - start.0.as_second();
    elapsed >= deadline
}

/// The API status of `pod` from the runtime's view (upstream
/// `generateAPIPodStatus`), its ephemeral containers' in
/// `ephemeralContainerStatuses`. `waiting` gives, per container name, the
/// waiting reason the last sync ran into (`CrashLoopBackOff`,
/// `ErrImageNeverPull`, ...).
///
/// Container IDs are `<runtime_name>://<id>`, `runtime_name` being what the
/// runtime's `Version` reports (upstream `kubecontainer.ContainerID`).
pub fn generate_api_pod_status(
    pod: &Pod,
    rt: &RuntimePodStatus,
    waiting: &HashMap<String, String>,
    runtime_name: &str,
) -> PodStatus {
    generate_api_pod_status_with(pod, rt, waiting, runtime_name, |_| {})
}

/// Like [`generate_api_pod_status`], letting `adjust` change the container
/// statuses before the conditions are computed from them: the prober sets
/// `ready` and `started` there (upstream `probeManager.UpdatePodStatus`,
/// called from `generateAPIPodStatus`).
pub fn generate_api_pod_status_with(
    pod: &Pod,
    rt: &RuntimePodStatus,
    waiting: &HashMap<String, String>,
    runtime_name: &str,
    adjust: impl FnOnce(&mut PodStatus),
) -> PodStatus {
    let spec = pod.spec.as_ref();
    let reason = |c: &Container| waiting.get(&c.name).map(String::as_str);
    // Upstream `convertToAPIContainerStatuses` (called with
    // `len(pod.Spec.InitContainers) > 0` for init, app and ephemeral
    // containers alike): in a pod with init containers, a container not
    // created yet waits in `PodInitializing`, else in `ContainerCreating`.
    let has_init = spec.is_some_and(|s| s.init_containers.as_ref().is_some_and(|i| !i.is_empty()));
    let app_default = if has_init {
        POD_INITIALIZING
    } else {
        CONTAINER_CREATING
    };
    let init: Vec<ContainerStatus> = spec
        .and_then(|s| s.init_containers.as_deref())
        .unwrap_or_default()
        .iter()
        .map(|c| container_status(c, rt, reason(c), app_default, runtime_name))
        .collect();
    let app: Vec<ContainerStatus> = spec
        .map(|s| s.containers.as_slice())
        .unwrap_or_default()
        .iter()
        .map(|c| container_status(c, rt, reason(c), app_default, runtime_name))
        .collect();
    // Upstream: each `EphemeralContainerCommon` as a `v1.Container`, with
    // no probe results (not ready, `started` unset); they count in neither
    // the phase nor the conditions.
    let ephemeral: Vec<ContainerStatus> = spec
        .and_then(|s| s.ephemeral_containers.as_deref())
        .unwrap_or_default()
        .iter()
        .map(|ec| {
            let c = kubelet_container::pod::ephemeral_container_common(ec);
            ContainerStatus {
                ready: false,
                started: None,
                ..container_status(&c, rt, reason(&c), app_default, runtime_name)
            }
        })
        .collect();
    let pod_has_initialized = spec.is_some_and(|s| {
        s.containers.iter().any(|c| {
            rt.find_container_status_by_name(&c.name)
                .is_some_and(|s| matches!(s.state, RtState::Running | RtState::Created))
        })
    });
    let phase = get_phase(pod, &init, &app, pod_has_initialized);
    let start_time = rt
        .sandbox_statuses
        .last()
        .and_then(|s| time_of(s.created_at));
    // Upstream's active deadline handler, a pod sync handler whose
    // `ShouldEvict` turns the phase to Failed (`generateAPIPodStatus`).
    let deadline_exceeded = phase != phase::SUCCEEDED
        && phase != phase::FAILED
        && past_active_deadline(
            pod,
            pod.status
                .as_ref()
                .and_then(|s| s.start_time.as_ref())
                .or(start_time.as_ref()),
            &now(),
        );
    let phase = if deadline_exceeded {
        phase::FAILED
    } else {
        phase
    };
    let mut probed = PodStatus {
        init_container_statuses: Some(init),
        container_statuses: Some(app),
        ..Default::default()
    };
    adjust(&mut probed);
    let init = probed.init_container_statuses.take().unwrap_or_default();
    let app = probed.container_statuses.take().unwrap_or_default();
    let spec_inits = spec
        .and_then(|s| s.init_containers.as_deref())
        .unwrap_or_default();
    // Upstream GeneratePodInitializedCondition: regular init containers
    // succeeded and sidecars started, or an app container started, or the
    // pod succeeded.
    // Its message names the init containers not complete yet, in spec
    // order: `containers with incomplete status: [init1 init2]`.
    let incomplete: Vec<&str> = spec_inits
        .iter()
        .zip(&init)
        .filter(|(c, s)| {
            if is_restartable_init(c) {
                s.started != Some(true)
            } else {
                s.state
                    .as_ref()
                    .and_then(|x| x.terminated.as_ref())
                    .is_none_or(|t| t.exit_code != 0)
            }
        })
        .map(|(c, _)| c.name.as_str())
        .collect();
    let initialized = incomplete.is_empty()
        || app.iter().any(|s| s.started == Some(true))
        || phase == phase::SUCCEEDED;
    // Upstream GenerateContainersReadyCondition: sidecars count too.
    let sidecars_ready = spec_inits
        .iter()
        .zip(&init)
        .all(|(c, s)| !is_restartable_init(c) || s.ready);
    let containers_ready = !app.is_empty() && app.iter().all(|s| s.ready) && sidecars_ready;
    let sandbox_ready = rt.has_ready_sandbox();
    let terminal = phase == phase::SUCCEEDED || phase == phase::FAILED;
    PodStatus {
        phase: Some(phase.to_owned()),
        qos_class: Some(
            kubelet_container::qos::pod_qos_class(pod)
                .as_str()
                .to_owned(),
        ),
        pod_ip: rt.ips.first().cloned(),
        pod_ips: Some(rt.ips.iter().map(|ip| PodIP { ip: ip.clone() }).collect()),
        host_ip: None,
        start_time,
        reason: deadline_exceeded.then(|| DEADLINE_EXCEEDED.to_owned()),
        message: deadline_exceeded.then(|| DEADLINE_EXCEEDED_MESSAGE.to_owned()),
        conditions: Some(vec![
            condition("PodReadyToStartContainers", sandbox_ready, None),
            PodCondition {
                message: (!initialized).then(|| {
                    format!(
                        "containers with incomplete status: [{}]",
                        incomplete.join(" ")
                    )
                }),
                ..condition("Initialized", initialized, Some("ContainersNotInitialized"))
            },
            condition(
                "ContainersReady",
                containers_ready && !terminal,
                Some(if terminal {
                    "PodCompleted"
                } else {
                    "ContainersNotReady"
                }),
            ),
            pod_ready_condition(
                pod,
                containers_ready && !terminal,
                if terminal {
                    "PodCompleted"
                } else {
                    "ContainersNotReady"
                },
            ),
            condition("PodScheduled", true, None),
        ]),
        init_container_statuses: (!init.is_empty()).then_some(init),
        container_statuses: Some(app),
        ephemeral_container_statuses: (!ephemeral.is_empty()).then_some(ephemeral),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kubelet_container::ContainerType;

    fn pod(policy: &str, apps: &[&str]) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "default", "uid": "u"},
            "spec": {
                "restartPolicy": policy,
                "containers": apps.iter().map(|n| serde_json::json!({"name": n, "image": "busybox"})).collect::<Vec<_>>()
            }
        }))
        .expect("pod")
    }

    fn rt(containers: &[(&str, RtState, i32, i64)]) -> RuntimePodStatus {
        RuntimePodStatus {
            uid: "u".into(),
            name: "p".into(),
            namespace: "default".into(),
            ips: vec!["10.88.0.2".into()],
            sandbox_statuses: vec![],
            container_statuses: containers
                .iter()
                .map(
                    |(name, state, code, created)| kubelet_container::ContainerStatus {
                        id: format!("{name}-{created}"),
                        name: (*name).into(),
                        state: *state,
                        created_at: *created,
                        started_at: *created,
                        finished_at: 0,
                        exit_code: *code,
                        image: "busybox".into(),
                        image_ref: "sha256:x".into(),
                        hash: None,
                        restart_count: i32::try_from(*created).unwrap_or(0),
                        reason: if *code == 0 {
                            "Completed".into()
                        } else {
                            "Error".into()
                        },
                        message: String::new(),
                        container_type: ContainerType::Regular,
                        pod_termination_grace_period: None,
                    },
                )
                .collect(),
        }
    }

    fn phase_of(policy: &str, apps: &[&str], cs: &[(&str, RtState, i32, i64)]) -> String {
        let s = generate_api_pod_status(&pod(policy, apps), &rt(cs), &HashMap::new(), "containerd");
        s.phase.unwrap_or_default()
    }

    /// Upstream `convertToAPIContainerStatuses` (`kubelet_pods.go`), checked
    /// by the [NodeConformance] spec "should not start app containers if
    /// init containers fail on a RestartAlways pod"
    /// (`common/node/init_container.go`).
    #[test]
    fn app_containers_wait_in_pod_initializing_behind_init_containers() {
        let mut p = pod("Always", &["run1"]);
        p.spec.as_mut().expect("spec").init_containers = Some(vec![Container {
            name: "init1".into(),
            ..Default::default()
        }]);
        let s = generate_api_pod_status(
            &p,
            &rt(&[("init1", RtState::Exited, 1, 1)]),
            &HashMap::new(),
            "containerd",
        );
        let reason = |cs: &Option<Vec<ContainerStatus>>| {
            cs.as_ref().expect("statuses")[0]
                .state
                .as_ref()
                .and_then(|s| s.waiting.as_ref())
                .and_then(|w| w.reason.clone())
        };
        assert_eq!(
            reason(&s.container_statuses).as_deref(),
            Some(POD_INITIALIZING)
        );
        // The Initialized condition names the incomplete init containers.
        let init_cond = s
            .conditions
            .as_ref()
            .expect("conditions")
            .iter()
            .find(|c| c.type_ == "Initialized")
            .expect("Initialized")
            .clone();
        assert_eq!(
            init_cond.reason.as_deref(),
            Some("ContainersNotInitialized")
        );
        assert_eq!(
            init_cond.message.as_deref(),
            Some("containers with incomplete status: [init1]")
        );
        // A second init container not created yet too (upstream's RestartNever spec).
        p.spec
            .as_mut()
            .expect("spec")
            .init_containers
            .as_mut()
            .expect("inits")
            .push(Container {
                name: "init2".into(),
                ..Default::default()
            });
        let s = generate_api_pod_status(
            &p,
            &rt(&[("init1", RtState::Running, 0, 1)]),
            &HashMap::new(),
            "c",
        );
        let second = s.init_container_statuses.expect("inits")[1].clone();
        assert_eq!(
            second
                .state
                .and_then(|s| s.waiting)
                .and_then(|w| w.reason)
                .as_deref(),
            Some(POD_INITIALIZING)
        );
        // Without init containers: ContainerCreating.
        let s = generate_api_pod_status(&pod("Always", &["run1"]), &rt(&[]), &HashMap::new(), "c");
        assert_eq!(
            reason(&s.container_statuses).as_deref(),
            Some(CONTAINER_CREATING)
        );
    }

    /// Upstream `GeneratePodReadyCondition` and `NeedToReconcilePodReadiness`,
    /// checked by the [NodeConformance] spec "should support pod readiness
    /// gates" (`common/node/pods.go`).
    #[test]
    fn readiness_gates_hold_ready_back_until_their_conditions_are_true() {
        use k8s_openapi::api::core::v1::PodReadinessGate;
        let mut p = pod("Always", &["a"]);
        p.spec.as_mut().expect("spec").readiness_gates = Some(vec![
            PodReadinessGate {
                condition_type: "k8s.io/test-condition1".into(),
            },
            PodReadinessGate {
                condition_type: "k8s.io/test-condition2".into(),
            },
        ]);
        let running = rt(&[("a", RtState::Running, 0, 1)]);
        let ready = |p: &Pod| {
            let s = generate_api_pod_status(p, &running, &HashMap::new(), "c");
            s.conditions
                .expect("conditions")
                .into_iter()
                .find(|c| c.type_ == "Ready")
                .expect("Ready")
        };
        let r = ready(&p);
        assert_eq!(r.status, "False");
        assert_eq!(r.reason.as_deref(), Some(READINESS_GATES_NOT_READY));
        assert!(
            r.message
                .as_deref()
                .is_some_and(|m| m.contains("does not exist"))
        );
        let set = |p: &mut Pod, c1: &str, c2: &str| {
            let mut conds = vec![
                condition("ContainersReady", true, None),
                condition("Ready", false, Some("x")),
            ];
            for (t, v) in [
                ("k8s.io/test-condition1", c1),
                ("k8s.io/test-condition2", c2),
            ] {
                if !v.is_empty() {
                    conds.push(PodCondition {
                        type_: t.into(),
                        status: v.into(),
                        ..Default::default()
                    });
                }
            }
            p.status = Some(PodStatus {
                conditions: Some(conds),
                ..Default::default()
            });
        };
        set(&mut p, "True", "");
        assert_eq!(ready(&p).status, "False", "one gate left");
        set(&mut p, "True", "False");
        assert!(
            ready(&p)
                .message
                .as_deref()
                .is_some_and(|m| m.contains("but False"))
        );
        set(&mut p, "True", "True");
        assert_eq!(ready(&p).status, "True");
        // The API's Ready (False) disagrees with the gates: sync at once.
        assert!(need_to_reconcile_pod_readiness(&p));
        // Agreeing (both gates not True, ContainersReady true): nothing to do.
        set(&mut p, "False", "False");
        let want = pod_ready_condition(&p, true, "ContainersNotReady");
        let conds = p
            .status
            .as_mut()
            .and_then(|s| s.conditions.as_mut())
            .expect("conds");
        conds[1] = want;
        assert!(!need_to_reconcile_pod_readiness(&p));
        // No gates: never.
        assert!(!need_to_reconcile_pod_readiness(&pod("Always", &["a"])));
    }

    /// Upstream `pkg/kubelet/active_deadline.go`, checked by the
    /// [NodeConformance] spec "Pods should allow activeDeadlineSeconds to be
    /// updated" (`common/node/pods.go`).
    #[test]
    fn a_pod_past_its_active_deadline_fails_with_deadline_exceeded() {
        let at = |secs: i64| Time(k8s_openapi::jiff::Timestamp::new(secs, 0).expect("time"));
        let mut p = pod("Always", &["a"]);
        assert!(
            !past_active_deadline(&p, Some(&at(0)), &at(100)),
            "no deadline"
        );
        p.spec.as_mut().expect("spec").active_deadline_seconds = Some(5);
        assert!(!past_active_deadline(&p, None, &at(100)), "not started");
        assert!(!past_active_deadline(&p, Some(&at(96)), &at(100)));
        assert!(past_active_deadline(&p, Some(&at(95)), &at(100)));
        p.status = Some(PodStatus {
            start_time: Some(at(1)),
            ..Default::default()
        });
        let s = generate_api_pod_status(
            &p,
            &rt(&[("a", RtState::Running, 0, 1)]),
            &HashMap::new(),
            "c",
        );
        assert_eq!(s.phase.as_deref(), Some("Failed"));
        assert_eq!(s.reason.as_deref(), Some(DEADLINE_EXCEEDED));
        assert_eq!(s.message.as_deref(), Some(DEADLINE_EXCEEDED_MESSAGE));
        // A pod that already succeeded stays Succeeded.
        let s = generate_api_pod_status(
            &{
                let mut q = p.clone();
                q.spec.as_mut().expect("spec").restart_policy = Some("Never".into());
                q
            },
            &rt(&[("a", RtState::Exited, 0, 1)]),
            &HashMap::new(),
            "c",
        );
        assert_eq!(s.phase.as_deref(), Some("Succeeded"));
        assert_eq!(s.reason, None);
    }

    #[test]
    fn a_container_gone_from_the_runtime_keeps_its_old_restart_count_or_terminated_status() {
        use RtState::*;
        let p = pod("Always", &["a", "b"]);
        let old = generate_api_pod_status(
            &p,
            &rt(&[("a", Running, 0, 3), ("b", Exited, 1, 2)]),
            &HashMap::new(),
            "containerd",
        );
        // Both containers removed from the runtime (garbage collection, the
        // pod's cleanup): a fresh status knows nothing of them.
        let empty = rt(&[]);
        let mut s = generate_api_pod_status(&p, &empty, &HashMap::new(), "containerd");
        let counts = |s: &PodStatus| -> Vec<i32> {
            s.container_statuses
                .iter()
                .flatten()
                .map(|c| c.restart_count)
                .collect()
        };
        assert_eq!(counts(&s), [0, 0]);
        apply_old_container_statuses(&mut s, &old, &empty);
        assert_eq!(counts(&s), [3, 2]);
        let cs = s.container_statuses.as_deref().unwrap_or_default();
        assert!(
            cs[0].state.as_ref().is_some_and(|st| st.waiting.is_some()),
            "a running container's state is not kept: {:?}",
            cs[0].state
        );
        assert_eq!(
            cs[1],
            old.container_statuses.as_deref().unwrap_or_default()[1]
        );
        // A container the runtime still holds is the runtime's.
        let held = rt(&[("a", Running, 0, 5)]);
        let mut s = generate_api_pod_status(&p, &held, &HashMap::new(), "containerd");
        apply_old_container_statuses(&mut s, &old, &held);
        assert_eq!(counts(&s), [5, 2]);
    }

    #[test]
    fn phases_follow_upstream() {
        use RtState::*;
        assert_eq!(phase_of("Always", &["a"], &[]), "Pending");
        assert_eq!(
            phase_of("Always", &["a"], &[("a", Running, 0, 1)]),
            "Running"
        );
        assert_eq!(
            phase_of("Never", &["a"], &[("a", Exited, 0, 1)]),
            "Succeeded"
        );
        assert_eq!(phase_of("Never", &["a"], &[("a", Exited, 1, 1)]), "Failed");
        assert_eq!(
            phase_of("OnFailure", &["a"], &[("a", Exited, 0, 1)]),
            "Succeeded"
        );
        assert_eq!(
            phase_of("OnFailure", &["a"], &[("a", Exited, 2, 1)]),
            "Running"
        );
        assert_eq!(
            phase_of("Always", &["a"], &[("a", Exited, 0, 1)]),
            "Running"
        );
        assert_eq!(
            phase_of(
                "Never",
                &["a", "b"],
                &[("a", Exited, 0, 1), ("b", Running, 0, 1)]
            ),
            "Running"
        );
        assert_eq!(
            phase_of(
                "Never",
                &["a", "b"],
                &[("a", Exited, 0, 1), ("b", Exited, 3, 1)]
            ),
            "Failed"
        );
    }

    #[test]
    fn container_statuses_carry_restart_count_and_last_state() {
        use RtState::*;
        let s = generate_api_pod_status(
            &pod("Always", &["a"]),
            // Newest first: the second run is running, the first exited 137.
            &rt(&[("a", Running, 0, 2), ("a", Exited, 137, 1)]),
            &HashMap::new(),
            // The runtime's own name, whatever it is.
            "cri-o",
        );
        let c = &s.container_statuses.unwrap_or_default()[0];
        assert_eq!(c.restart_count, 2);
        assert!(c.ready);
        assert_eq!(
            c.last_state
                .as_ref()
                .and_then(|l| l.terminated.as_ref())
                .map(|t| t.exit_code),
            Some(137)
        );
        assert_eq!(c.container_id.as_deref(), Some("cri-o://a-2"));
        let ready = s
            .conditions
            .unwrap_or_default()
            .into_iter()
            .find(|c| c.type_ == "Ready")
            .map(|c| c.status);
        assert_eq!(ready.as_deref(), Some("True"));
    }

    #[test]
    fn ephemeral_containers_have_their_own_statuses_and_no_say_in_the_phase() {
        use RtState::*;
        let mut p = pod("Never", &["a"]);
        if let Some(spec) = p.spec.as_mut() {
            spec.ephemeral_containers = Some(vec![
                k8s_openapi::api::core::v1::EphemeralContainer {
                    name: "debug".into(),
                    image: Some("busybox".into()),
                    target_container_name: Some("a".into()),
                    ..Default::default()
                },
                k8s_openapi::api::core::v1::EphemeralContainer {
                    name: "later".into(),
                    image: Some("busybox".into()),
                    ..Default::default()
                },
            ]);
        }
        let s = generate_api_pod_status(
            &p,
            &rt(&[("a", Running, 0, 1), ("debug", Exited, 3, 1)]),
            &HashMap::new(),
            "containerd",
        );
        // A failed ephemeral container fails neither the pod nor readiness.
        assert_eq!(s.phase.as_deref(), Some("Running"));
        let ready = s
            .conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == "Ready")
            .map(|c| c.status.clone());
        assert_eq!(ready.as_deref(), Some("True"));
        assert_eq!(s.container_statuses.as_ref().map(Vec::len), Some(1));
        let eph = s.ephemeral_container_statuses.unwrap_or_default();
        assert_eq!(eph.len(), 2);
        let debug = &eph[0];
        assert_eq!(debug.name, "debug");
        assert!(!debug.ready);
        assert_eq!(debug.started, None);
        assert_eq!(debug.container_id.as_deref(), Some("containerd://debug-1"));
        let t = debug
            .state
            .as_ref()
            .and_then(|s| s.terminated.as_ref())
            .expect("terminated");
        assert_eq!(t.exit_code, 3);
        let waiting = eph[1]
            .state
            .as_ref()
            .and_then(|s| s.waiting.as_ref())
            .and_then(|w| w.reason.as_deref());
        assert_eq!(waiting, Some("ContainerCreating"));
        // Without ephemeral containers the field stays unset.
        let s = generate_api_pod_status(
            &pod("Never", &["a"]),
            &rt(&[("a", Running, 0, 1)]),
            &HashMap::new(),
            "containerd",
        );
        assert_eq!(s.ephemeral_container_statuses, None);
    }

    #[test]
    fn a_terminal_phase_sticks() {
        let m = StatusManager::default();
        let done = PodStatus {
            phase: Some("Succeeded".into()),
            ..Default::default()
        };
        m.set("u", done);
        let later = m.set(
            "u",
            PodStatus {
                phase: Some("Pending".into()),
                ..Default::default()
            },
        );
        assert_eq!(later.phase.as_deref(), Some("Succeeded"));
    }

    fn sidecar_pod(policy: &str) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "default", "uid": "u"},
            "spec": {
                "restartPolicy": policy,
                "initContainers": [
                    {"name": "s", "image": "busybox", "restartPolicy": "Always"},
                    {"name": "i", "image": "busybox"}
                ],
                "containers": [{"name": "a", "image": "busybox"}]
            }
        }))
        .expect("pod")
    }

    fn cond<'a>(s: &'a PodStatus, kind: &str) -> &'a str {
        s.conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == kind)
            .map_or("", |c| c.status.as_str())
    }

    #[test]
    fn a_running_sidecar_shows_started_and_ready_and_the_pod_is_ready() {
        use RtState::*;
        let p = sidecar_pod("Always");
        let rt1 = rt(&[
            ("s", Running, 0, 1),
            ("i", Exited, 0, 2),
            ("a", Running, 0, 3),
        ]);
        let s = generate_api_pod_status(&p, &rt1, &HashMap::new(), "containerd");
        let side = &s.init_container_statuses.as_ref().expect("init")[0];
        assert!(
            side.state
                .as_ref()
                .and_then(|x| x.running.as_ref())
                .is_some()
        );
        assert_eq!((side.started, side.ready), (Some(true), true));
        assert_eq!(s.phase.as_deref(), Some("Running"));
        for kind in ["Initialized", "ContainersReady", "Ready"] {
            assert_eq!(cond(&s, kind), "True", "{kind}");
        }
        // An unready sidecar makes the pod unready (its readiness probe
        // has not passed, as the prober says through `adjust`).
        let s = generate_api_pod_status_with(&p, &rt1, &HashMap::new(), "containerd", |s| {
            if let Some(side) = s
                .init_container_statuses
                .as_mut()
                .and_then(|v| v.first_mut())
            {
                side.ready = false;
            }
        });
        assert_eq!(cond(&s, "Initialized"), "True");
        assert_eq!(cond(&s, "ContainersReady"), "False");
        assert_eq!(cond(&s, "Ready"), "False");
    }

    #[test]
    fn initialization_waits_for_sidecars_to_start() {
        use RtState::*;
        let p = sidecar_pod("Always");
        let rt1 = rt(&[("s", Running, 0, 1), ("i", Exited, 0, 2)]);
        let not_started = |s: &mut PodStatus| {
            if let Some(side) = s
                .init_container_statuses
                .as_mut()
                .and_then(|v| v.first_mut())
            {
                side.started = Some(false);
                side.ready = false;
            }
        };
        let s = generate_api_pod_status_with(&p, &rt1, &HashMap::new(), "containerd", not_started);
        assert_eq!(cond(&s, "Initialized"), "False");
        assert_eq!(s.phase.as_deref(), Some("Pending"));
        // Started: initialized, the app container still to be created.
        let s = generate_api_pod_status(&p, &rt1, &HashMap::new(), "containerd");
        assert_eq!(cond(&s, "Initialized"), "True");
        assert_eq!(s.phase.as_deref(), Some("Pending"));
        // A running regular init container after the sidecar: not yet.
        let rt2 = rt(&[("s", Running, 0, 1), ("i", Running, 0, 2)]);
        let s = generate_api_pod_status(&p, &rt2, &HashMap::new(), "containerd");
        assert_eq!(cond(&s, "Initialized"), "False");
        assert_eq!(s.phase.as_deref(), Some("Pending"));
    }

    #[test]
    fn a_failed_sidecar_never_fails_the_pod() {
        use RtState::*;
        let p = sidecar_pod("Never");
        let rt1 = rt(&[
            ("s", Exited, 1, 1),
            ("i", Exited, 0, 2),
            ("a", Running, 0, 3),
        ]);
        let s = generate_api_pod_status(&p, &rt1, &HashMap::new(), "containerd");
        assert_eq!(s.phase.as_deref(), Some("Running"));
        assert_eq!(cond(&s, "Initialized"), "True", "the app container started");
        // A failed regular init container does.
        let rt2 = rt(&[("s", Running, 0, 1), ("i", Exited, 1, 2)]);
        let s = generate_api_pod_status(&p, &rt2, &HashMap::new(), "containerd");
        assert_eq!(s.phase.as_deref(), Some("Failed"));
    }

    #[test]
    fn a_running_sidecar_keeps_a_finished_pod_running_until_it_stops() {
        use RtState::*;
        let p = sidecar_pod("Never");
        let rt1 = rt(&[
            ("s", Running, 0, 1),
            ("i", Exited, 0, 2),
            ("a", Exited, 0, 3),
        ]);
        let s = generate_api_pod_status(&p, &rt1, &HashMap::new(), "containerd");
        assert_eq!(s.phase.as_deref(), Some("Running"));
        // Stopped with the pod (SIGTERM: 143): the pod succeeded.
        let rt2 = rt(&[
            ("s", Exited, 143, 1),
            ("i", Exited, 0, 2),
            ("a", Exited, 0, 3),
        ]);
        let s = generate_api_pod_status(&p, &rt2, &HashMap::new(), "containerd");
        assert_eq!(s.phase.as_deref(), Some("Succeeded"));
        assert_eq!(cond(&s, "Initialized"), "True");
    }
}
