//! One probe worker per (pod, container, probe type) (upstream
//! `pkg/kubelet/prober/worker.go`).
//!
//! The worker wakes every `periodSeconds` (or when the manager triggers it),
//! reads the pod's status from the [`StatusProvider`](crate::StatusProvider),
//! and probes the container when upstream would:
//!
//! - no status yet: wait; a terminal pod phase (Failed, Succeeded): exit;
//! - the container has no ID yet: wait; a new container ID: forget the old
//!   result, record the probe type's initial value and leave `on_hold`;
//! - `on_hold` (after a liveness or startup Failure): wait for a new
//!   container ID, i.e. the restart;
//! - the container is not running: record Failure; exit if it terminated and
//!   will not be restarted (pod `restartPolicy: Never`, and not a sidecar);
//! - the pod is being deleted: liveness and startup record Success and exit;
//! - less than `initialDelaySeconds` since `startedAt`: wait;
//! - before `started` is true only the startup probe runs, after it only
//!   liveness and readiness;
//! - then probe; an error is dropped; a result is recorded only after
//!   `failureThreshold` consecutive failures or `successThreshold`
//!   consecutive successes; a liveness or startup Failure puts the worker
//!   on hold.
//!
//! The first probe waits a random part of the period, but only while the
//! kubelet started less than one period ago (upstream: so that probes of a
//! restarted kubelet do not all fire at once); a pod added later is probed
//! at once. When the worker ends, for whatever reason, it removes its result
//! and itself from the manager.
//!
//! One deliberate difference: a new container ID also resets the run of
//! equal results, so a restarted container needs its own
//! `successThreshold` successes (upstream carries the count over from the
//! previous container).

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use k8s_openapi::api::core::v1::{Container, ContainerStatus, Pod, PodStatus, Probe};
use tokio::sync::Notify;
use tokio::time::{Instant, MissedTickBehavior};

use crate::manager::{ProbeEvent, ProbeKey, Shared};
use crate::prober::{ProbeTiming, ProbeType};
use crate::results::{self, ContainerId, ProbeResult};

/// What the manager keeps of a running worker.
#[derive(Debug)]
pub(crate) struct WorkerHandle {
    pub(crate) id: u64,
    pub(crate) stop: Arc<Notify>,
    pub(crate) trigger: Arc<Notify>,
}

impl WorkerHandle {
    /// Asks the worker to stop; safe to call more than once.
    pub(crate) fn stop(&self) {
        self.stop.notify_one();
    }

    /// Asks for a probe now instead of at the next tick (non-blocking).
    pub(crate) fn trigger(&self) {
        self.trigger.notify_one();
    }
}

pub(crate) struct Worker {
    id: u64,
    key: ProbeKey,
    shared: Arc<Shared>,
    pod: Arc<Pod>,
    container: Container,
    probe_type: ProbeType,
    timing: ProbeTiming,
    initial_value: ProbeResult,
    results: Arc<results::Manager>,
    stop: Arc<Notify>,
    trigger: Arc<Notify>,
    /// The last container ID seen.
    container_id: Option<ContainerId>,
    /// The last probe result and how many times in a row it came.
    last_result: Option<ProbeResult>,
    result_run: u32,
    /// Skip probing until the container ID changes.
    on_hold: bool,
}

impl Worker {
    /// A worker and the handle the manager keeps; `None` when the container
    /// has no probe of this type.
    pub(crate) fn new(
        id: u64,
        shared: Arc<Shared>,
        pod: Arc<Pod>,
        container: Container,
        probe_type: ProbeType,
    ) -> Option<(Worker, WorkerHandle)> {
        let spec: &Probe = probe_type.spec_of(&container)?;
        let timing = ProbeTiming::of(spec);
        let results = shared.results(probe_type);
        let stop = Arc::new(Notify::new());
        let trigger = Arc::new(Notify::new());
        let key = ProbeKey {
            pod_uid: pod.metadata.uid.clone().unwrap_or_default(),
            container: container.name.clone(),
            probe_type,
        };
        let handle = WorkerHandle {
            id,
            stop: stop.clone(),
            trigger: trigger.clone(),
        };
        Some((
            Worker {
                id,
                key,
                shared,
                pod,
                container,
                probe_type,
                timing,
                initial_value: probe_type.initial_value(),
                results,
                stop,
                trigger,
                container_id: None,
                last_result: None,
                result_run: 0,
                on_hold: false,
            },
            handle,
        ))
    }

    /// Probes periodically until stopped or the container is gone for good.
    pub(crate) async fn run(mut self) {
        let period = self.timing.period;
        let stop = self.stop.clone();
        let trigger = self.trigger.clone();
        if self.shared.jitter && self.shared.start.elapsed() < period {
            let delay = period.mul_f64(random_fraction());
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = stop.notified() => return,
            }
        }
        let mut ticker = tokio::time::interval_at(Instant::now() + period, period);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
        while self.do_probe().await {
            tokio::select! {
                _ = stop.notified() => break,
                _ = ticker.tick() => {
                    tracing::trace!(probe_type = %self.probe_type, pod_uid = %self.key.pod_uid, container = %self.key.container, "probe triggered by periodSeconds");
                }
                _ = trigger.notified() => {
                    tracing::trace!(probe_type = %self.probe_type, pod_uid = %self.key.pod_uid, container = %self.key.container, "probe triggered manually");
                }
            }
        }
    }

    /// Probes once and records the result; returns whether to keep going
    /// (upstream `doProbe`).
    pub(crate) async fn do_probe(&mut self) -> bool {
        let begin = Instant::now();
        let pod_uid = self.key.pod_uid.clone();
        let Some(status) = self.shared.status.pod_status(&pod_uid) else {
            tracing::trace!(pod_uid, "no status for pod");
            return true;
        };
        if matches!(status.phase.as_deref(), Some("Failed" | "Succeeded")) {
            tracing::debug!(pod_uid, phase = ?status.phase, "pod is terminated, exiting probe worker");
            return false;
        }
        let Some(c) = find_container_status(&status, &self.container.name) else {
            tracing::trace!(pod_uid, container = %self.container.name, "probe target container not found");
            return true;
        };
        let raw_id = c.container_id.as_deref().unwrap_or_default();
        if self
            .container_id
            .as_ref()
            .map(ToString::to_string)
            .as_deref()
            != Some(raw_id)
        {
            if let Some(old) = self.container_id.take() {
                self.results.remove(&old);
            }
            match ContainerId::parse(raw_id) {
                Ok(id) => {
                    self.results.set(&id, self.initial_value, &pod_uid);
                    self.container_id = Some(id);
                    // A new container: resume probing.
                    self.on_hold = false;
                    self.last_result = None;
                    self.result_run = 0;
                }
                Err(e) => {
                    tracing::warn!(pod_uid, container = %self.container.name, error = %e, "cannot probe a container with an invalid ID");
                    return true;
                }
            }
        }
        let Some(container_id) = self.container_id.clone() else {
            return true;
        };
        if self.on_hold {
            return true;
        }

        let state = c.state.as_ref();
        let Some(running) = state.and_then(|s| s.running.as_ref()) else {
            tracing::trace!(pod_uid, container = %self.container.name, "non-running container probed");
            self.results
                .set(&container_id, ProbeResult::Failure, &pod_uid);
            // Abort if the container will not be restarted.
            let terminated = state.and_then(|s| s.terminated.as_ref()).is_some();
            let never = self
                .pod
                .spec
                .as_ref()
                .and_then(|s| s.restart_policy.as_deref())
                == Some("Never");
            let sidecar = self.container.restart_policy.as_deref() == Some("Always");
            return !terminated || !never || sidecar;
        };

        // Graceful shutdown of the pod.
        if self.pod.metadata.deletion_timestamp.is_some()
            && matches!(self.probe_type, ProbeType::Liveness | ProbeType::Startup)
        {
            tracing::debug!(probe_type = %self.probe_type, pod_uid, container = %self.container.name, "pod deletion requested, setting probe result to success");
            self.results
                .set(&container_id, ProbeResult::Success, &pod_uid);
            return false;
        }

        // Probe disabled for initialDelaySeconds.
        if let Some(started_at) = &running.started_at {
            let started = system_time(started_at.0.as_millisecond());
            let since = self
                .shared
                .clock
                .now()
                .duration_since(started)
                .unwrap_or(Duration::ZERO);
            if since.as_secs() < self.timing.initial_delay.as_secs() {
                return true;
            }
        }

        if c.started == Some(true) {
            // Stop probing for startup once the container has started; keep
            // the worker for a restarted container.
            if self.probe_type == ProbeType::Startup {
                return true;
            }
        } else if self.probe_type != ProbeType::Startup {
            // Other probes wait until the container has started.
            return true;
        }

        let result = match self
            .shared
            .prober
            .probe(
                self.probe_type,
                &self.pod,
                &status,
                &self.container,
                &container_id,
            )
            .await
        {
            Ok(r) => r,
            // A prober error: throw the attempt away.
            Err(_) => return true,
        };
        if let Some(observer) = &self.shared.observer {
            observer(&ProbeEvent {
                probe_type: self.probe_type,
                pod_name: self.pod.metadata.name.as_deref().unwrap_or_default(),
                namespace: self.pod.metadata.namespace.as_deref().unwrap_or_default(),
                pod_uid: &pod_uid,
                container: &self.container.name,
                result,
                duration: begin.elapsed(),
            });
        }

        if self.last_result == Some(result) {
            self.result_run = self.result_run.saturating_add(1);
        } else {
            self.last_result = Some(result);
            self.result_run = 1;
        }
        if (result == ProbeResult::Failure && self.result_run < self.timing.failure_threshold)
            || (result == ProbeResult::Success && self.result_run < self.timing.success_threshold)
        {
            // Below the threshold: leave the recorded state unchanged.
            return true;
        }

        self.results.set(&container_id, result, &pod_uid);
        if matches!(self.probe_type, ProbeType::Liveness | ProbeType::Startup)
            && result == ProbeResult::Failure
        {
            // The container will be restarted: stop probing until a new
            // container ID shows up (upstream #21751).
            tracing::info!(probe_type = %self.probe_type, pod_uid, container = %self.container.name, "probe failed, container will be restarted");
            self.on_hold = true;
            self.result_run = 0;
        }
        true
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        if let Some(id) = &self.container_id {
            self.results.remove(id);
        }
        if let Some(observer) = &self.shared.stop_observer {
            observer(&crate::manager::ProbeWorkerStopped {
                probe_type: self.probe_type,
                pod_name: self.pod.metadata.name.as_deref().unwrap_or_default(),
                namespace: self.pod.metadata.namespace.as_deref().unwrap_or_default(),
                pod_uid: &self.key.pod_uid,
                container: &self.container.name,
            });
        }
        self.shared.remove_worker(&self.key, self.id);
    }
}

/// The status of the container named `name`: among the regular containers
/// with an ID, else among the init containers with one.
fn find_container_status<'a>(status: &'a PodStatus, name: &str) -> Option<&'a ContainerStatus> {
    let with_id = |list: &'a Option<Vec<ContainerStatus>>| {
        list.iter()
            .flatten()
            .find(|c| c.name == name && c.container_id.as_deref().is_some_and(|id| !id.is_empty()))
    };
    with_id(&status.container_statuses).or_else(|| with_id(&status.init_container_statuses))
}

/// Milliseconds since the Unix epoch as a `SystemTime`.
fn system_time(millis: i64) -> SystemTime {
    let magnitude = Duration::from_millis(millis.unsigned_abs());
    if millis >= 0 {
        SystemTime::UNIX_EPOCH + magnitude
    } else {
        SystemTime::UNIX_EPOCH - magnitude
    }
}

/// A number in [0, 1) from the standard library's randomly keyed hasher.
fn random_fraction() -> f64 {
    let bits = RandomState::new().hash_one(std::time::Instant::now());
    (bits >> 11) as f64 / (1u64 << 53) as f64
}
