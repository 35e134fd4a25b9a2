//! [`PodWorkerPool`], the implementation of [`PodWorkers`].

use std::collections::{HashMap, HashSet};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use futures::FutureExt;
use k8s_openapi::api::core::v1::Pod;
use tokio::runtime::Handle;
use tokio::sync::{Notify, oneshot};
use tokio::task::AbortHandle;
use tokio::time::Instant;
use tracing::{Instrument, debug, error, info_span, trace, warn};

use crate::error::{Error, Result};
use crate::grace::{Jitter, calculate_effective_grace_period};
use crate::types::{
    BACKOFF_JITTER_FACTOR, BACKOFF_ON_TRANSIENT_ERROR_PERIOD, MIN_ABNORMAL_TERMINATION_WAIT,
    PodWorkerState, PodWorkerSync, PodWorkersConfig, RESYNC_JITTER_FACTOR, RuntimePod, SyncContext,
    SyncPodOutcome, SyncPodType, TerminatePodOptions, UpdatePodOptions, build_pod_full_name,
    is_static_pod,
};
use crate::{EventRecorder, NoopRecorder, PodStatusCache, PodSyncer, PodWorkers};

/// Kill state carried by an update once the pod is terminating (the part
/// of upstream's `KillPodOptions` that is replayed).
#[derive(Debug, Clone, Copy)]
struct KillState {
    grace_period: Option<i64>,
}

/// The cloneable part of an update (upstream `UpdatePodOptions` without the
/// completion channel, which lives in `abnormal`).
#[derive(Debug, Clone, Default)]
struct Update {
    update_type: SyncPodType,
    start_time: Option<Instant>,
    pod: Option<Arc<Pod>>,
    mirror_pod: Option<Arc<Pod>>,
    running_pod: Option<RuntimePod>,
    kill: Option<KillState>,
}

/// One recorded kill request (upstream `abnormalTerminations`).
#[derive(Debug)]
struct Abnormal {
    options: TerminatePodOptions,
    completed: Option<oneshot::Sender<()>>,
}

fn signal_completion(sender: Option<oneshot::Sender<()>>) {
    if let Some(tx) = sender {
        // The waiter may have given up: nothing to do then.
        let _ = tx.send(());
    }
}

/// Per-pod state (upstream `podSyncStatus`).
#[derive(Debug)]
struct PodSyncStatus {
    ctx: Option<SyncContext>,
    fullname: String,
    working: bool,
    pending: Option<Update>,
    active: Option<Update>,
    started_at: Option<Instant>,
    terminating_at: Option<Instant>,
    terminated_at: Option<Instant>,
    grace_period: i64,
    abnormal: Vec<Abnormal>,
    started_terminating: bool,
    deleted: bool,
    evicted: bool,
    finished: bool,
    restart_requested: bool,
    observed_runtime: bool,
}

impl PodSyncStatus {
    fn new(fullname: String) -> Self {
        Self {
            ctx: None,
            fullname,
            working: false,
            pending: None,
            active: None,
            started_at: None,
            terminating_at: None,
            terminated_at: None,
            grace_period: 0,
            abnormal: Vec::new(),
            started_terminating: false,
            deleted: false,
            evicted: false,
            finished: false,
            restart_requested: false,
            observed_runtime: false,
        }
    }

    fn is_termination_requested(&self) -> bool {
        self.terminating_at.is_some()
    }

    fn is_terminated(&self) -> bool {
        self.terminated_at.is_some()
    }

    fn is_started(&self) -> bool {
        self.started_at.is_some()
    }

    fn work_type(&self) -> PodWorkerState {
        if self.is_terminated() {
            PodWorkerState::Terminated
        } else if self.is_termination_requested() {
            PodWorkerState::Terminating
        } else {
            PodWorkerState::Sync
        }
    }

    /// Upstream `mergeLastUpdate`: the last pod and mirror pod are kept, a
    /// runtime pod never replaces a known pod, kill state is replaced by the
    /// newer one (whose grace period is already the minimum in force).
    fn merge_last_update(&mut self, other: &Update) {
        let opts = self.active.get_or_insert_with(Update::default);
        if opts.pod.is_none() || other.running_pod.is_none() {
            opts.pod.clone_from(&other.pod);
        }
        opts.running_pod.clone_from(&other.running_pod);
        if other.mirror_pod.is_some() {
            opts.mirror_pod.clone_from(&other.mirror_pod);
        }
        if other.kill.is_some() {
            opts.kill = other.kill;
        }
    }

    /// Signals every kill waiter still recorded.
    fn complete_kills(&mut self) {
        for a in &mut self.abnormal {
            signal_completion(a.completed.take());
        }
    }
}

/// The wake-up of one worker task (upstream's `chan struct{}` of buffer 1:
/// a [`Notify`] stores one permit the same way).
#[derive(Debug, Default)]
struct WorkerSignal {
    notify: Notify,
    closed: AtomicBool,
}

impl WorkerSignal {
    fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.notify.notify_one();
    }

    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }
}

#[derive(Debug)]
struct WorkerHandle {
    signal: Arc<WorkerSignal>,
    abort: Option<AbortHandle>,
}

#[derive(Debug, Default)]
struct State {
    pods_synced: bool,
    shut_down: bool,
    statuses: HashMap<String, PodSyncStatus>,
    workers: HashMap<String, WorkerHandle>,
    started_static: HashMap<String, String>,
    waiting_static: HashMap<String, Vec<String>>,
}

impl State {
    fn shutdown(&mut self) {
        self.shut_down = true;
        for (_, w) in self.workers.drain() {
            w.signal.close();
            if let Some(abort) = w.abort {
                abort.abort();
            }
        }
        for status in self.statuses.values() {
            if let Some(ctx) = &status.ctx {
                ctx.cancel();
            }
        }
        // Dropping the statuses drops the kill senders: waiters see Shutdown.
        self.statuses.clear();
        self.started_static.clear();
        self.waiting_static.clear();
    }

    /// Upstream `cleanupPodUpdates`: stop the worker of `uid`.
    fn cleanup_pod_updates(&mut self, uid: &str) {
        if let Some(w) = self.workers.remove(uid) {
            w.signal.close();
        }
    }

    fn notify(&self, uid: &str) {
        if let Some(w) = self.workers.get(uid) {
            w.signal.notify.notify_one();
        }
    }

    /// Clears the started entry of a static pod. Upstream leaves the next
    /// waiting pod to its 10–15 s retry; we wake the waiting pods of that
    /// full name at once, so a replaced static pod starts without delay.
    fn release_static(&mut self, fullname: &str, uid: &str) {
        if self
            .started_static
            .get(fullname)
            .is_some_and(|u| u.as_str() == uid)
        {
            self.started_static.remove(fullname);
            if let Some(waiting) = self.waiting_static.get(fullname) {
                for w in waiting {
                    self.notify(w);
                }
            }
        }
    }

    /// Upstream `requeueLastPodUpdate`.
    fn requeue_last_pod_update(&mut self, uid: &str) {
        let Some(status) = self.statuses.get_mut(uid) else {
            return;
        };
        if status.pending.is_some() {
            return;
        }
        let Some(active) = status.active.clone() else {
            return;
        };
        status.pending = Some(active);
        status.working = true;
        self.notify(uid);
    }

    /// Upstream `allowStaticPodStart`.
    fn allow_static_pod_start(&mut self, fullname: &str, uid: &str) -> bool {
        if let Some(started) = self.started_static.get(fullname) {
            return started.as_str() == uid;
        }
        let waiting = self.waiting_static.remove(fullname).unwrap_or_default();
        let mut rest = waiting.as_slice();
        while let Some((first, tail)) = rest.split_first() {
            let viable = self
                .statuses
                .get(first)
                .is_some_and(|s| !s.is_termination_requested() && !s.is_terminated());
            if !viable {
                rest = tail;
                continue;
            }
            if first.as_str() != uid {
                self.waiting_static
                    .insert(fullname.to_owned(), rest.to_vec());
                return false;
            }
            rest = tail;
            break;
        }
        if !rest.is_empty() {
            self.waiting_static
                .insert(fullname.to_owned(), rest.to_vec());
        }
        self.started_static
            .insert(fullname.to_owned(), uid.to_owned());
        true
    }

    /// Upstream `cleanupUnstartedPod`, which also signals the kill waiters
    /// (upstream leaves their channels open until the caller times out).
    fn cleanup_unstarted_pod(&mut self, uid: &str) {
        self.cleanup_pod_updates(uid);
        let Some(status) = self.statuses.get_mut(uid) else {
            return;
        };
        status.finished = true;
        status.working = false;
        status.terminated_at = Some(Instant::now());
        status.complete_kills();
        let fullname = status.fullname.clone();
        self.release_static(&fullname, uid);
    }

    /// Upstream `removeTerminatedWorker`; true if the worker was removed.
    fn remove_terminated_worker(&mut self, uid: &str, orphaned: bool) -> bool {
        let Some(status) = self.statuses.get_mut(uid) else {
            return true;
        };
        if !status.finished {
            if !orphaned {
                trace!(
                    pod_uid = uid,
                    "removal requested but pod not fully terminated"
                );
                return false;
            }
            status.deleted = true;
            if !status.is_started() && !status.observed_runtime {
                debug!(pod_uid = uid, "pod is orphaned and was never started");
            } else if !status.is_termination_requested() {
                status.terminating_at = Some(Instant::now());
                status.grace_period = match status.active.as_ref().and_then(|a| a.pod.as_deref()) {
                    Some(pod) => {
                        calculate_effective_grace_period(status.grace_period, Some(pod), None).0
                    }
                    None => 1,
                };
                debug!(
                    pod_uid = uid,
                    "pod is orphaned and still running, began terminating"
                );
                self.requeue_last_pod_update(uid);
                return false;
            } else {
                debug!(pod_uid = uid, "pod is orphaned and still terminating");
                self.requeue_last_pod_update(uid);
                return false;
            }
        }
        let Some(mut status) = self.statuses.remove(uid) else {
            return true;
        };
        debug!(
            pod_uid = uid,
            restart_requested = status.restart_requested,
            "forgetting pod worker"
        );
        status.complete_kills();
        self.cleanup_pod_updates(uid);
        self.release_static(&status.fullname, uid);
        true
    }
}

/// What the worker should do after consuming its pending update.
enum Start {
    /// Nothing pending: wait for the next notification.
    NoWork,
    /// The pod can never start (terminated before it started): exit.
    Never,
    /// A static pod waiting for its turn: retry after the delay.
    NotYet(Duration),
    /// Run this work.
    Run(Work),
}

struct Work {
    ctx: SyncContext,
    state: PodWorkerState,
    update: Update,
}

struct Shared<S, C> {
    state: Mutex<State>,
    syncer: S,
    cache: C,
    recorder: Arc<dyn EventRecorder>,
    config: PodWorkersConfig,
    jitter: Jitter,
    live_workers: AtomicUsize,
    handle: Handle,
}

impl<S, C> Shared<S, C> {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic never happens while the lock is held (sync functions run
        // outside it), but if one did, the state is still consistent enough
        // to keep serving: use it rather than propagate the poison.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Decrements the live worker count when a worker task ends, however it ends.
struct LiveGuard<'a>(&'a AtomicUsize);

impl Drop for LiveGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Builder of a [`PodWorkerPool`].
pub struct PodWorkerPoolBuilder<S, C> {
    syncer: S,
    cache: C,
    recorder: Arc<dyn EventRecorder>,
    config: PodWorkersConfig,
}

impl<S, C> PodWorkerPoolBuilder<S, C>
where
    S: PodSyncer,
    C: PodStatusCache<Status = S::Status>,
{
    /// Where failures are reported (default: nowhere but `tracing`).
    pub fn recorder(mut self, recorder: Arc<dyn EventRecorder>) -> Self {
        self.recorder = recorder;
        self
    }

    /// Timing configuration (default: upstream's).
    pub fn config(mut self, config: PodWorkersConfig) -> Self {
        self.config = config;
        self
    }

    /// Builds the pool on the current tokio runtime, where its worker tasks
    /// will be spawned.
    pub fn build(self) -> Result<PodWorkerPool<S, C>> {
        let handle = Handle::try_current().map_err(|e| Error::NoRuntime(e.to_string()))?;
        Ok(PodWorkerPool {
            shared: Arc::new(Shared {
                state: Mutex::new(State::default()),
                syncer: self.syncer,
                cache: self.cache,
                recorder: self.recorder,
                jitter: Jitter::new(self.config.jitter_seed),
                config: self.config,
                live_workers: AtomicUsize::new(0),
                handle,
            }),
        })
    }
}

/// The pod workers: one tokio task per pod UID, driving the pod through
/// sync, terminating and terminated with the [`PodSyncer`] `S`, waiting on
/// the [`PodStatusCache`] `C` before each sync (upstream `podWorkers`).
///
/// All state sits behind one mutex (upstream `podLock`) that is never held
/// across an `await` nor while a sync function runs. Dropping the pool (or
/// [`shutdown`](Self::shutdown)) stops every worker task.
pub struct PodWorkerPool<S, C> {
    shared: Arc<Shared<S, C>>,
}

impl<S, C> std::fmt::Debug for PodWorkerPool<S, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.shared.lock();
        f.debug_struct("PodWorkerPool")
            .field("pods", &state.statuses.len())
            .field("workers", &state.workers.len())
            .field(
                "live_workers",
                &self.shared.live_workers.load(Ordering::Relaxed),
            )
            .finish()
    }
}

impl<S, C> PodWorkerPool<S, C>
where
    S: PodSyncer,
    C: PodStatusCache<Status = S::Status>,
{
    /// A builder with upstream's defaults and no event recorder.
    pub fn builder(syncer: S, cache: C) -> PodWorkerPoolBuilder<S, C> {
        PodWorkerPoolBuilder {
            syncer,
            cache,
            recorder: Arc::new(NoopRecorder),
            config: PodWorkersConfig::default(),
        }
    }

    /// The syncer.
    pub fn syncer(&self) -> &S {
        &self.shared.syncer
    }

    /// The status cache.
    pub fn cache(&self) -> &C {
        &self.shared.cache
    }

    /// How many worker tasks are alive right now (counted by the tasks
    /// themselves, so a leaked task shows here).
    pub fn live_workers(&self) -> usize {
        self.shared.live_workers.load(Ordering::Acquire)
    }

    /// How many pods the pool holds state for.
    pub fn known_pods(&self) -> usize {
        self.shared.lock().statuses.len()
    }

    /// Stops every worker task and cancels running syncs. Kill waiters see
    /// [`Error::Shutdown`]. Later updates are ignored.
    pub fn shutdown(&self) {
        self.shared.lock().shutdown();
    }
}

impl<S, C> Drop for PodWorkerPool<S, C> {
    fn drop(&mut self) {
        self.shared.lock().shutdown();
    }
}

fn pod_identity(pod: &Pod) -> Option<(&str, &str, &str)> {
    let uid = pod.metadata.uid.as_deref().filter(|u| !u.is_empty())?;
    Some((
        uid,
        pod.metadata.namespace.as_deref().unwrap_or_default(),
        pod.metadata.name.as_deref().unwrap_or_default(),
    ))
}

fn is_terminal_phase(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Failed") | Some("Succeeded")
    )
}

impl<S, C> Shared<S, C>
where
    S: PodSyncer,
    C: PodStatusCache<Status = S::Status>,
{
    /// Upstream `UpdatePod`.
    fn update_pod(self: &Arc<Self>, mut options: UpdatePodOptions) {
        let mut completion = options
            .kill_pod_options
            .as_mut()
            .and_then(|k| k.completed.take());
        let mut kill_options = options.kill_pod_options.take().map(|k| k.terminate);

        let (uid, ns, name, is_runtime_pod) = match (&options.pod, &options.running_pod) {
            (Some(pod), running) => {
                let Some((uid, ns, name)) = pod_identity(pod) else {
                    warn!(error = %Error::InvalidUpdate("pod has no UID".into()), "ignoring pod update");
                    signal_completion(completion);
                    return;
                };
                if running.is_some() {
                    debug!(
                        pod_uid = uid,
                        "update included a runtime pod, which is only valid without a pod"
                    );
                }
                (uid.to_owned(), ns.to_owned(), name.to_owned(), false)
            }
            (None, Some(running)) => {
                if options.update_type != SyncPodType::Kill {
                    debug!(pod_uid = %running.uid, update_type = %options.update_type, "pod update is ignored, runtime pods can only be killed");
                    signal_completion(completion);
                    return;
                }
                if running.uid.is_empty() {
                    warn!(error = %Error::InvalidUpdate("runtime pod has no UID".into()), "ignoring pod update");
                    signal_completion(completion);
                    return;
                }
                (
                    running.uid.clone(),
                    running.namespace.clone(),
                    running.name.clone(),
                    true,
                )
            }
            (None, None) => {
                warn!(error = %Error::InvalidUpdate("neither pod nor runtime pod".into()), "ignoring pod update");
                signal_completion(completion);
                return;
            }
        };
        if !is_runtime_pod {
            options.running_pod = None;
        }
        // Asked outside the lock: the cache is foreign code.
        let runtime_terminal = options
            .pod
            .as_deref()
            .filter(|p| is_terminal_phase(p))
            .map(|_| self.cache.is_runtime_terminal(&uid));

        let mut guard = self.lock();
        let state = &mut *guard;
        if state.shut_down {
            return;
        }
        let now = Instant::now();
        let first_time = !state.statuses.contains_key(&uid);
        if first_time {
            let mut status = PodSyncStatus::new(build_pod_full_name(&name, &ns));
            if runtime_terminal == Some(true) {
                // Upstream issue 105523: a terminal pod seen for the first
                // time (a kubelet restart) with nothing running goes straight
                // to terminated, so only its terminated sync runs.
                debug!(pod_uid = %uid, "pod is terminal in config and runtime, starting as terminated");
                status.terminating_at = Some(now);
                status.terminated_at = Some(now);
                status.started_terminating = true;
            }
            state.statuses.insert(uid.clone(), status);
        }
        let Some(status) = state.statuses.get_mut(&uid) else {
            return;
        };

        if is_runtime_pod {
            status.observed_runtime = true;
            let known = status
                .pending
                .as_ref()
                .and_then(|u| u.pod.clone())
                .or_else(|| status.active.as_ref().and_then(|u| u.pod.clone()));
            if let Some(pod) = known {
                options.pod = Some(pod);
                options.running_pod = None;
            }
        }

        if !first_time
            && status.is_termination_requested()
            && options.update_type == SyncPodType::Create
        {
            debug!(pod_uid = %uid, "pod is terminating but was re-created with the same UID, restart after cleanup");
            status.restart_requested = true;
            signal_completion(completion);
            return;
        }

        if status.finished {
            trace!(pod_uid = %uid, "pod is finished, ignoring update");
            // Upstream leaves a kill of a finished pod to time out; the pod
            // has no running containers, so we signal it at once.
            signal_completion(completion);
            return;
        }

        let pod = options.pod.as_deref();
        let mut became_terminating = false;
        if !status.is_termination_requested() {
            let deleted = pod.is_some_and(|p| p.metadata.deletion_timestamp.is_some());
            if is_runtime_pod {
                debug!(pod_uid = %uid, "pod is orphaned and must be torn down");
                status.deleted = true;
                became_terminating = true;
            } else if deleted {
                debug!(pod_uid = %uid, "pod is marked for graceful deletion, begin teardown");
                status.deleted = true;
                became_terminating = true;
            } else if pod.is_some_and(is_terminal_phase) {
                debug!(pod_uid = %uid, "pod is in a terminal phase, begin teardown");
                became_terminating = true;
            } else if options.update_type == SyncPodType::Kill {
                if kill_options.as_ref().is_some_and(|k| k.evict) {
                    debug!(pod_uid = %uid, "pod is being evicted, begin teardown");
                    status.evicted = true;
                } else {
                    debug!(pod_uid = %uid, "pod is being removed by the kubelet, begin teardown");
                }
                became_terminating = true;
            }
            if became_terminating {
                status.terminating_at = Some(now);
            }
        }

        let mut grace_shortened = false;
        let kill = if status.is_terminated() {
            if is_runtime_pod {
                trace!(pod_uid = %uid, "pod is terminated, ignoring runtime-only kill");
                signal_completion(completion);
                return;
            }
            signal_completion(completion.take());
            None
        } else if status.is_termination_requested() {
            let (grace, shortened) = calculate_effective_grace_period(
                status.grace_period,
                pod,
                kill_options
                    .as_ref()
                    .and_then(|k| k.grace_period_seconds_override),
            );
            grace_shortened = shortened;
            status.grace_period = grace;
            if let Some(options) = kill_options.take() {
                status.abnormal.push(Abnormal {
                    options,
                    completed: completion.take(),
                });
            }
            Some(KillState {
                grace_period: Some(grace),
            })
        } else {
            // Kill options are not valid outside terminating.
            signal_completion(completion.take());
            None
        };
        let work_type = status.work_type();
        let is_static = pod.is_some_and(is_static_pod);
        let fullname = status.fullname.clone();

        let pending_start = status.pending.as_ref().and_then(|p| p.start_time);
        let start_time = match (pending_start, options.start_time) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => b.or(a),
        };
        status.pending = Some(Update {
            update_type: options.update_type,
            start_time,
            pod: options.pod,
            mirror_pod: options.mirror_pod,
            running_pod: options.running_pod,
            kill,
        });
        status.working = true;
        let cancel = if became_terminating || grace_shortened {
            status.ctx.clone()
        } else {
            None
        };

        if !state.workers.contains_key(&uid) {
            if is_static {
                state
                    .waiting_static
                    .entry(fullname)
                    .or_default()
                    .push(uid.clone());
            }
            self.spawn_worker(state, &uid);
        }
        trace!(pod_uid = %uid, work_type = %work_type, "notifying pod of pending update");
        state.notify(&uid);
        if let Some(ctx) = cancel {
            debug!(pod_uid = %uid, work_type = %work_type, "cancelling current pod sync");
            ctx.cancel();
        }
    }

    fn spawn_worker(self: &Arc<Self>, state: &mut State, uid: &str) {
        let signal = Arc::new(WorkerSignal::default());
        self.live_workers.fetch_add(1, Ordering::AcqRel);
        let span = info_span!("pod_worker", pod_uid = %uid);
        let task = self.handle.spawn(
            Arc::clone(self)
                .worker_loop(uid.to_owned(), Arc::clone(&signal))
                .instrument(span),
        );
        state.workers.insert(
            uid.to_owned(),
            WorkerHandle {
                signal,
                abort: Some(task.abort_handle()),
            },
        );
    }

    /// Upstream `podWorkerLoop`.
    async fn worker_loop(self: Arc<Self>, uid: String, signal: Arc<WorkerSignal>) {
        let _live = LiveGuard(&self.live_workers);
        let mut last_sync: Option<Instant> = None;
        let mut retry_at: Option<Instant> = None;
        loop {
            let timer_fired = match retry_at {
                Some(at) => {
                    tokio::select! {
                        _ = signal.notify.notified() => false,
                        _ = tokio::time::sleep_until(at) => true,
                    }
                }
                None => {
                    signal.notify.notified().await;
                    false
                }
            };
            if signal.is_closed() {
                break;
            }
            if timer_fired {
                retry_at = None;
                self.replay_for_retry(&uid);
            }
            let work = match self.start_pod_sync(&uid, &signal) {
                Start::NoWork => continue,
                Start::Never => break,
                Start::NotYet(delay) => {
                    retry_at = Some(Instant::now() + delay);
                    continue;
                }
                Start::Run(work) => work,
            };
            let state = work.state;
            let is_runtime = work.update.running_pod.is_some();
            let (result, synced) = self.run_sync(&uid, work, last_sync).await;
            if synced {
                last_sync = Some(Instant::now());
            }
            let mut phase_transition = false;
            match &result {
                Err(Error::Cancelled) => {
                    debug!(work_type = %state, "sync exited with cancellation");
                }
                Err(err) => {
                    error!(work_type = %state, error = %err, "error syncing pod, will retry");
                    self.recorder.sync_failed(&uid, state, err);
                }
                Ok(outcome) => match state {
                    PodWorkerState::Terminated => {
                        self.complete_terminated(&uid);
                        debug!("pod is finished, worker exits");
                        break;
                    }
                    PodWorkerState::Terminating if is_runtime => {
                        self.complete_terminating_runtime_pod(&uid);
                        debug!("runtime pod is terminated, worker exits");
                        break;
                    }
                    PodWorkerState::Terminating => {
                        self.complete_terminating(&uid);
                        phase_transition = true;
                    }
                    PodWorkerState::Sync => {
                        if *outcome == SyncPodOutcome::Terminal {
                            self.complete_sync(&uid);
                            phase_transition = true;
                        }
                    }
                },
            }
            retry_at = self
                .complete_work(&uid, phase_transition, result.err().as_ref())
                .map(|d| Instant::now() + d);
            if signal.is_closed() {
                break;
            }
        }
        trace!("pod worker stopped");
    }

    /// Runs one sync; the bool says whether a sync function ran (upstream
    /// sets `lastSyncTime` only then).
    async fn run_sync(
        &self,
        uid: &str,
        work: Work,
        last_sync: Option<Instant>,
    ) -> (Result<SyncPodOutcome>, bool) {
        let Work { ctx, state, update } = work;
        let mut synced = false;
        let body = async {
            if let Some(running) = &update.running_pod {
                // Runtime pods are always terminating and need no status.
                let _ = self.acknowledge_terminating(uid);
                synced = true;
                return self
                    .syncer
                    .sync_terminating_runtime_pod(&ctx, running)
                    .await
                    .map(|()| SyncPodOutcome::Running);
            }
            let Some(pod) = update.pod.as_deref() else {
                return Err(Error::InvalidUpdate(format!("no pod to sync for {uid}")));
            };
            let status = self.cache.get_newer_than(uid, last_sync).await?;
            synced = true;
            match state {
                PodWorkerState::Terminated => self
                    .syncer
                    .sync_terminated_pod(&ctx, pod, &status)
                    .await
                    .map(|()| SyncPodOutcome::Running),
                PodWorkerState::Terminating => {
                    // The grace period in force (monotonic, so never above the
                    // one this update carried). Upstream passes the update's
                    // override, which is missing on orphan replays.
                    let (abnormal, grace) = self.acknowledge_terminating(uid);
                    let grace = if grace >= 1 {
                        grace
                    } else {
                        update.kill.and_then(|k| k.grace_period).unwrap_or(1).max(1)
                    };
                    self.syncer
                        .sync_terminating_pod(&ctx, pod, &status, grace, abnormal.as_ref())
                        .await
                        .map(|()| SyncPodOutcome::Running)
                }
                PodWorkerState::Sync => {
                    self.syncer
                        .sync_pod(
                            &ctx,
                            update.update_type,
                            pod,
                            update.mirror_pod.as_deref(),
                            &status,
                        )
                        .await
                }
            }
        };
        let result = match AssertUnwindSafe(body).catch_unwind().await {
            Ok(r) => r,
            Err(payload) => {
                let message = payload
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "non-string panic payload".to_owned());
                synced = true;
                Err(Error::Panicked {
                    uid: uid.to_owned(),
                    state,
                    message,
                })
            }
        };
        (result, synced)
    }

    /// Upstream `startPodSync`.
    fn start_pod_sync(&self, uid: &str, signal: &WorkerSignal) -> Start {
        let mut guard = self.lock();
        let state = &mut *guard;
        let Some(status) = state.statuses.get_mut(uid) else {
            return Start::NoWork;
        };
        let Some(update) = status.pending.take() else {
            status.working = false;
            return Start::NoWork;
        };
        // Drain a stored wake-up: the pending update is consumed. Under the
        // lock, so no newer notification is lost.
        let _ = signal.notify.notified().now_or_never();
        let work_type = status.work_type();
        let ctx = match &status.ctx {
            Some(ctx) if !ctx.is_cancelled() => ctx.clone(),
            _ => {
                let ctx = SyncContext::new();
                status.ctx = Some(ctx.clone());
                ctx
            }
        };
        let run = |status: &mut PodSyncStatus, update: Update| {
            status.merge_last_update(&update);
            Start::Run(Work {
                ctx: ctx.clone(),
                state: work_type,
                update,
            })
        };
        if status.is_started() {
            return run(status, update);
        }
        if update.running_pod.is_some() && work_type == PodWorkerState::Terminating {
            return run(status, update);
        }
        let Some(pod) = update.pod.clone() else {
            // Cannot happen (runtime pods are terminating); never start.
            state.cleanup_unstarted_pod(uid);
            return Start::Never;
        };
        // allowPodStart
        if is_static_pod(&pod) {
            if status.is_termination_requested() {
                debug!(pod_uid = uid, "static pod terminated before it started");
                state.cleanup_unstarted_pod(uid);
                return Start::Never;
            }
            let fullname = status.fullname.clone();
            if !state.allow_static_pod_start(&fullname, uid) {
                if let Some(status) = state.statuses.get_mut(uid) {
                    status.pending = Some(update);
                    status.working = false;
                }
                debug!(pod_uid = uid, "static pod cannot start yet");
                return Start::NotYet(
                    self.jitter
                        .jitter(self.config.backoff_period, BACKOFF_JITTER_FACTOR),
                );
            }
        }
        let Some(status) = state.statuses.get_mut(uid) else {
            return Start::NoWork;
        };
        status.started_at = Some(Instant::now());
        run(status, update)
    }

    /// Replays the last update when a retry or resync timer fires (what the
    /// kubelet's work queue and `HandlePodSyncs` do upstream).
    fn replay_for_retry(&self, uid: &str) {
        let mut state = self.lock();
        let Some(status) = state.statuses.get_mut(uid) else {
            return;
        };
        if status.finished || status.pending.is_some() {
            return;
        }
        if let Some(active) = &status.active {
            let mut replay = active.clone();
            replay.update_type = SyncPodType::Sync;
            replay.start_time = None;
            status.pending = Some(replay);
            status.working = true;
        }
    }

    /// Upstream `acknowledgeTerminating`: returns the latest abnormal
    /// termination and the grace period in force.
    fn acknowledge_terminating(&self, uid: &str) -> (Option<TerminatePodOptions>, i64) {
        let mut state = self.lock();
        let Some(status) = state.statuses.get_mut(uid) else {
            return (None, 1);
        };
        if status.is_termination_requested() && !status.started_terminating {
            debug!(
                pod_uid = uid,
                "pod worker has observed request to terminate"
            );
            status.started_terminating = true;
        }
        (
            status.abnormal.last().map(|a| a.options.clone()),
            status.grace_period,
        )
    }

    /// Upstream `completeSync`: the pod reached a terminal phase on its own.
    /// Unlike upstream we also compute the grace period in force, so the
    /// terminating sync gets the pod's own grace period.
    fn complete_sync(&self, uid: &str) {
        let mut state = self.lock();
        let Some(status) = state.statuses.get_mut(uid) else {
            return;
        };
        if status.terminating_at.is_none() {
            status.terminating_at = Some(Instant::now());
            let pod = status.active.as_ref().and_then(|a| a.pod.clone());
            status.grace_period =
                calculate_effective_grace_period(status.grace_period, pod.as_deref(), None).0;
        }
        status.started_terminating = true;
        state.requeue_last_pod_update(uid);
    }

    /// Upstream `completeTerminating`.
    fn complete_terminating(&self, uid: &str) {
        let mut state = self.lock();
        let Some(status) = state.statuses.get_mut(uid) else {
            return;
        };
        status.terminated_at = Some(Instant::now());
        status.complete_kills();
        state.requeue_last_pod_update(uid);
    }

    /// Upstream `completeTerminatingRuntimePod`.
    fn complete_terminating_runtime_pod(&self, uid: &str) {
        let mut state = self.lock();
        state.cleanup_pod_updates(uid);
        if let Some(mut status) = state.statuses.remove(uid) {
            status.complete_kills();
            state.release_static(&status.fullname, uid);
        }
    }

    /// Upstream `completeTerminated`.
    fn complete_terminated(&self, uid: &str) {
        let mut state = self.lock();
        state.cleanup_pod_updates(uid);
        let Some(status) = state.statuses.get_mut(uid) else {
            return;
        };
        status.finished = true;
        status.working = false;
        status.complete_kills();
        let fullname = status.fullname.clone();
        state.release_static(&fullname, uid);
    }

    /// Upstream `completeWork`: the delay before the next retry or resync,
    /// then wake up again at once if an update is pending.
    fn complete_work(
        &self,
        uid: &str,
        phase_transition: bool,
        err: Option<&Error>,
    ) -> Option<Duration> {
        let delay = match err {
            // The next phase is already queued by the transition.
            _ if phase_transition => None,
            None => Some(
                self.jitter
                    .jitter(self.config.resync_interval, RESYNC_JITTER_FACTOR),
            ),
            Some(e) if e.is_network_not_ready() => Some(
                self.jitter
                    .jitter(BACKOFF_ON_TRANSIENT_ERROR_PERIOD, BACKOFF_JITTER_FACTOR),
            ),
            Some(_) => Some(
                self.jitter
                    .jitter(self.config.backoff_period, BACKOFF_JITTER_FACTOR),
            ),
        };
        let mut state = self.lock();
        if let Some(status) = state.statuses.get_mut(uid) {
            if status.pending.is_some() {
                state.notify(uid);
            } else {
                status.working = false;
            }
        }
        delay
    }

    /// Upstream `SyncKnownPods`.
    fn sync_known_pods(&self, desired: &HashSet<String>) -> HashMap<String, PodWorkerSync> {
        let mut state = self.lock();
        state.pods_synced = true;
        // In UID order: forgetting a worker can release a static pod's
        // full name and wake the pods waiting for it. Upstream ranges over
        // a Go map (`podSyncStatuses`, any order); a fixed one makes a run
        // on a paused clock (`kubelet-sim`) replay exactly.
        let mut uids: Vec<String> = state.statuses.keys().cloned().collect();
        uids.sort_unstable();
        let mut workers = HashMap::with_capacity(uids.len());
        for uid in uids {
            let orphan = !desired.contains(&uid);
            let restart = state
                .statuses
                .get(&uid)
                .is_some_and(|s| s.restart_requested);
            if (restart || orphan) && state.remove_terminated_worker(&uid, orphan) {
                continue;
            }
            let Some(status) = state.statuses.get(&uid) else {
                continue;
            };
            let config = status
                .active
                .as_ref()
                .or(status.pending.as_ref())
                .and_then(|u| u.pod.as_deref());
            workers.insert(
                uid,
                PodWorkerSync {
                    state: status.work_type(),
                    orphan,
                    has_config: config.is_some(),
                    is_static: config.is_some_and(is_static_pod),
                },
            );
        }
        workers
    }

    fn query<T>(
        &self,
        uid: &str,
        known: impl FnOnce(&PodSyncStatus) -> T,
        unknown: impl FnOnce(bool) -> T,
    ) -> T {
        let state = self.lock();
        match state.statuses.get(uid) {
            Some(status) => known(status),
            None => unknown(state.pods_synced),
        }
    }
}

#[async_trait]
impl<S, C> PodWorkers for PodWorkerPool<S, C>
where
    S: PodSyncer,
    C: PodStatusCache<Status = S::Status>,
{
    fn update_pod(&self, options: UpdatePodOptions) {
        self.shared.update_pod(options);
    }

    async fn terminate_pod_abnormally_and_wait(
        &self,
        pod: Arc<Pod>,
        options: TerminatePodOptions,
    ) -> Result<()> {
        let grace = options
            .grace_period_seconds_override
            .or_else(|| {
                pod.spec
                    .as_ref()
                    .and_then(|s| s.termination_grace_period_seconds)
            })
            .unwrap_or(0)
            .max(0);
        let timeout =
            Duration::from_secs(u64::try_from(grace.saturating_add(grace / 2)).unwrap_or(u64::MAX))
                .max(MIN_ABNORMAL_TERMINATION_WAIT);
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let (kill, completed) = crate::KillPodOptions::with_completion(options);
        self.update_pod(UpdatePodOptions::kill(Arc::clone(&pod), kill));
        match tokio::time::timeout(timeout, completed).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(Error::Shutdown),
            Err(_) => {
                self.shared.recorder.exceeded_grace_period(&pod);
                Err(Error::TerminationTimeout {
                    uid,
                    waited: timeout,
                })
            }
        }
    }

    fn sync_known_pods(&self, desired_uids: &HashSet<String>) -> HashMap<String, PodWorkerSync> {
        self.shared.sync_known_pods(desired_uids)
    }

    fn is_pod_known(&self, uid: &str) -> bool {
        self.shared.query(uid, |_| true, |_| false)
    }

    fn pod_state(&self, uid: &str) -> Option<PodWorkerState> {
        self.shared.query(uid, |s| Some(s.work_type()), |_| None)
    }

    fn is_pod_known_terminated(&self, uid: &str) -> bool {
        self.shared
            .query(uid, PodSyncStatus::is_terminated, |_| false)
    }

    fn could_have_running_containers(&self, uid: &str) -> bool {
        self.shared
            .query(uid, |s| !s.is_terminated(), |synced| !synced)
    }

    fn should_pod_be_finished(&self, uid: &str) -> bool {
        self.shared.query(uid, |s| s.finished, |synced| synced)
    }

    fn is_pod_termination_requested(&self, uid: &str) -> bool {
        self.shared
            .query(uid, PodSyncStatus::is_termination_requested, |_| false)
    }

    fn should_pod_containers_be_terminating(&self, uid: &str) -> bool {
        self.shared
            .query(uid, |s| s.started_terminating, |synced| synced)
    }

    fn should_pod_runtime_be_removed(&self, uid: &str) -> bool {
        self.shared
            .query(uid, PodSyncStatus::is_terminated, |synced| synced)
    }

    fn should_pod_content_be_removed(&self, uid: &str) -> bool {
        self.shared.query(
            uid,
            |s| s.evicted || (s.deleted && s.is_terminated()),
            |synced| synced,
        )
    }

    fn is_pod_for_mirror_pod_terminating_by_full_name(&self, full_name: &str) -> bool {
        let state = self.shared.lock();
        state
            .started_static
            .get(full_name)
            .and_then(|uid| state.statuses.get(uid))
            .is_some_and(|s| s.is_termination_requested() && !s.is_terminated())
    }

    fn grace_period(&self, uid: &str) -> Option<i64> {
        self.shared.query(
            uid,
            |s| s.is_termination_requested().then_some(s.grace_period),
            |_| None,
        )
    }
}
