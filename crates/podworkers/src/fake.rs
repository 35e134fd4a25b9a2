//! Test doubles: a controllable [`PodStatusCache`], a recording
//! [`PodSyncer`] that checks the pod workers' guarantees as it is called, and
//! a recording [`EventRecorder`].
//!
//! They are used by this crate's tests and benchmarks and are meant for the
//! tests of crates that drive the pod workers.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use k8s_openapi::api::core::v1::Pod;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::error::{Error, Result};
use crate::types::{
    PodWorkerState, RuntimePod, SyncContext, SyncPodOutcome, SyncPodType, TerminatePodOptions,
    build_pod_full_name, is_static_pod,
};
use crate::{EventRecorder, PodStatusCache, PodSyncer};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The status [`FakeStatusCache`] hands out.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FakePodStatus {
    /// The pod UID.
    pub uid: String,
    /// How many times [`FakeStatusCache::set`] was called for the pod.
    pub version: u64,
    /// Whether something of the pod runs.
    pub running: bool,
}

#[derive(Debug, Default)]
struct CacheInner {
    pods: HashMap<String, (Instant, FakePodStatus)>,
    global: Option<Instant>,
    errors: HashMap<String, String>,
}

/// A pod status cache with upstream's `GetNewerThan` semantics, filled by
/// hand: [`set`](Self::set) stores a pod's status stamped now,
/// [`update_time`](Self::update_time) marks the whole cache fresh.
///
/// A wait with no minimum time returns at once. In
/// [`always_fresh`](Self::always_fresh) mode no wait ever blocks.
#[derive(Debug, Default)]
pub struct FakeStatusCache {
    always_fresh: bool,
    inner: Mutex<CacheInner>,
    changed: Notify,
    waiters: AtomicUsize,
}

impl FakeStatusCache {
    /// A cache whose waits block until it is updated.
    pub fn new() -> Self {
        Self::default()
    }

    /// A cache whose waits never block.
    pub fn always_fresh() -> Self {
        Self {
            always_fresh: true,
            ..Self::default()
        }
    }

    /// Stores a new status for `uid`, stamped now, and wakes the waiters.
    pub fn set(&self, uid: &str, running: bool) {
        let mut inner = lock(&self.inner);
        let entry = inner
            .pods
            .entry(uid.to_owned())
            .or_insert_with(|| (Instant::now(), FakePodStatus::default()));
        entry.0 = Instant::now();
        entry.1.uid = uid.to_owned();
        entry.1.version += 1;
        entry.1.running = running;
        drop(inner);
        self.changed.notify_waiters();
    }

    /// Marks the whole cache fresh as of now (upstream `UpdateTime` after a
    /// relist) and wakes the waiters.
    pub fn update_time(&self) {
        lock(&self.inner).global = Some(Instant::now());
        self.changed.notify_waiters();
    }

    /// Makes waits for `uid` fail with this message (`None` clears it).
    pub fn set_error(&self, uid: &str, message: Option<&str>) {
        let mut inner = lock(&self.inner);
        match message {
            Some(m) => inner.errors.insert(uid.to_owned(), m.to_owned()),
            None => inner.errors.remove(uid),
        };
    }

    /// How many waits are blocked right now.
    pub fn waiters(&self) -> usize {
        self.waiters.load(Ordering::Acquire)
    }
}

#[async_trait]
impl PodStatusCache for FakeStatusCache {
    type Status = FakePodStatus;

    async fn get_newer_than(&self, uid: &str, min_time: Option<Instant>) -> Result<FakePodStatus> {
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let inner = lock(&self.inner);
                if let Some(message) = inner.errors.get(uid) {
                    return Err(Error::StatusCache {
                        uid: uid.to_owned(),
                        source: message.clone().into(),
                    });
                }
                let entry = inner.pods.get(uid);
                let fresh = self.always_fresh
                    || match min_time {
                        None => true,
                        Some(min) => {
                            entry.is_some_and(|(at, _)| *at > min)
                                || inner.global.is_some_and(|g| g > min)
                        }
                    };
                if fresh {
                    return Ok(entry
                        .map(|(_, s)| s.clone())
                        .unwrap_or_else(|| FakePodStatus {
                            uid: uid.to_owned(),
                            ..FakePodStatus::default()
                        }));
                }
            }
            self.waiters.fetch_add(1, Ordering::AcqRel);
            notified.await;
            self.waiters.fetch_sub(1, Ordering::AcqRel);
        }
    }

    fn is_runtime_terminal(&self, uid: &str) -> bool {
        let inner = lock(&self.inner);
        if inner.errors.contains_key(uid) {
            return false;
        }
        inner.pods.get(uid).is_none_or(|(_, s)| !s.running)
    }
}

/// What a [`RecordingSyncer`] does when called.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Behavior {
    /// Succeed (`sync_pod`: the pod keeps running).
    Ok,
    /// `sync_pod` reports the pod terminal; other calls succeed.
    Terminal,
    /// Fail with [`Error::Sync`].
    Fail,
    /// Fail with [`Error::NetworkNotReady`].
    NetworkNotReady,
    /// Panic.
    Panic,
    /// Wait until the context is cancelled, then return [`Error::Cancelled`].
    WaitForCancel,
    /// Sleep this long, then succeed.
    Sleep(Duration),
}

/// Which sync function was called.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallKind {
    /// `sync_pod` with this update type.
    SyncPod(SyncPodType),
    /// `sync_terminating_pod` with this grace period; `evict` and
    /// `has_status_fn` describe the abnormal termination passed, if any.
    Terminating {
        /// The grace period passed.
        grace_period_seconds: i64,
        /// An abnormal termination was passed.
        abnormal: bool,
        /// It was an eviction.
        evict: bool,
        /// It carried a status function.
        has_status_fn: bool,
    },
    /// `sync_terminating_runtime_pod`.
    TerminatingRuntime,
    /// `sync_terminated_pod`.
    Terminated,
}

impl CallKind {
    /// The phase this call belongs to.
    pub fn state(&self) -> PodWorkerState {
        match self {
            Self::SyncPod(_) => PodWorkerState::Sync,
            Self::Terminating { .. } | Self::TerminatingRuntime => PodWorkerState::Terminating,
            Self::Terminated => PodWorkerState::Terminated,
        }
    }
}

/// One recorded call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    /// The pod UID.
    pub uid: String,
    /// Which function.
    pub kind: CallKind,
    /// When it started.
    pub at: Instant,
    /// The version of the status passed (runtime pods: none).
    pub status_version: Option<u64>,
    /// Whether the context was already cancelled when it started.
    pub cancelled_at_start: bool,
    /// The `metadata.resourceVersion` of the pod passed (runtime pods: none).
    pub resource_version: Option<String>,
}

#[derive(Debug, Default)]
struct Checks {
    in_flight: HashMap<String, usize>,
    terminating_seen: HashSet<String>,
    done: HashSet<String>,
    running_static: HashMap<String, String>,
    violations: Vec<String>,
}

#[derive(Debug, Default)]
struct SyncerInner {
    calls: Vec<Call>,
    once: HashMap<String, VecDeque<Behavior>>,
    behavior: HashMap<String, Behavior>,
    default: Option<Behavior>,
    checks: Checks,
}

/// A [`PodSyncer`] that records every call, behaves as scripted per pod, and
/// checks the pod workers' guarantees while it is called:
///
/// - never two calls for one UID at once;
/// - no `sync_pod` once termination started for the UID;
/// - no call at all once the UID finished (terminated sync succeeded, or
///   runtime pod terminated), until [`forget`](Self::forget);
/// - never two static pods of one full name between their first `sync_pod`
///   and their successful terminated sync.
///
/// Broken guarantees are listed by [`violations`](Self::violations).
#[derive(Debug, Default)]
pub struct RecordingSyncer {
    inner: Mutex<SyncerInner>,
    record: bool,
}

struct InFlight<'a> {
    syncer: &'a RecordingSyncer,
    uid: String,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let mut inner = lock(&self.syncer.inner);
        if let Some(n) = inner.checks.in_flight.get_mut(&self.uid) {
            *n = n.saturating_sub(1);
        }
    }
}

impl RecordingSyncer {
    /// A syncer that succeeds and records every call.
    pub fn new() -> Self {
        Self {
            inner: Mutex::default(),
            record: true,
        }
    }

    /// A syncer that succeeds and checks, but keeps no call list (for
    /// benchmarks).
    pub fn without_call_log() -> Self {
        Self::default()
    }

    /// Sets what calls for `uid` do from now on.
    pub fn set_behavior(&self, uid: &str, behavior: Behavior) {
        lock(&self.inner).behavior.insert(uid.to_owned(), behavior);
    }

    /// Sets what calls for pods without their own behavior do.
    pub fn set_default_behavior(&self, behavior: Behavior) {
        lock(&self.inner).default = Some(behavior);
    }

    /// Queues a behavior for the next call for `uid` only.
    pub fn push_once(&self, uid: &str, behavior: Behavior) {
        lock(&self.inner)
            .once
            .entry(uid.to_owned())
            .or_default()
            .push_back(behavior);
    }

    /// Every call so far.
    pub fn calls(&self) -> Vec<Call> {
        lock(&self.inner).calls.clone()
    }

    /// The calls for `uid`.
    pub fn calls_for(&self, uid: &str) -> Vec<Call> {
        lock(&self.inner)
            .calls
            .iter()
            .filter(|c| c.uid == uid)
            .cloned()
            .collect()
    }

    /// The guarantees broken so far.
    pub fn violations(&self) -> Vec<String> {
        lock(&self.inner).checks.violations.clone()
    }

    /// Starts a new life for `uid` (after the pod workers forgot it).
    pub fn forget(&self, uid: &str) {
        let mut inner = lock(&self.inner);
        inner.checks.terminating_seen.remove(uid);
        inner.checks.done.remove(uid);
    }

    fn enter(
        &self,
        uid: &str,
        kind: CallKind,
        ctx: &SyncContext,
        status: Option<u64>,
        pod: Option<&Pod>,
    ) -> (InFlight<'_>, Behavior) {
        let static_name = pod.and_then(static_name);
        let mut inner = lock(&self.inner);
        let checks = &mut inner.checks;
        let n = checks.in_flight.entry(uid.to_owned()).or_default();
        *n += 1;
        if *n > 1 {
            checks
                .violations
                .push(format!("{uid}: two syncs at once ({kind:?})"));
        }
        if checks.done.contains(uid) {
            checks
                .violations
                .push(format!("{uid}: {kind:?} after the pod finished"));
        }
        match &kind {
            CallKind::SyncPod(_) => {
                if checks.terminating_seen.contains(uid) {
                    checks
                        .violations
                        .push(format!("{uid}: sync_pod after termination started"));
                }
                if let Some(name) = static_name {
                    match checks.running_static.get(&name) {
                        Some(other) if other != uid => checks.violations.push(format!(
                            "{uid}: static pod {name} runs while {other} has not finished"
                        )),
                        _ => {
                            checks.running_static.insert(name, uid.to_owned());
                        }
                    }
                }
            }
            CallKind::Terminating { .. } | CallKind::TerminatingRuntime => {
                checks.terminating_seen.insert(uid.to_owned());
            }
            CallKind::Terminated => {}
        }
        if self.record {
            inner.calls.push(Call {
                uid: uid.to_owned(),
                kind,
                at: Instant::now(),
                status_version: status,
                cancelled_at_start: ctx.is_cancelled(),
                resource_version: pod.and_then(|p| p.metadata.resource_version.clone()),
            });
        }
        let behavior = inner
            .once
            .get_mut(uid)
            .and_then(VecDeque::pop_front)
            .or_else(|| inner.behavior.get(uid).cloned())
            .or_else(|| inner.default.clone())
            .unwrap_or(Behavior::Ok);
        (
            InFlight {
                syncer: self,
                uid: uid.to_owned(),
            },
            behavior,
        )
    }

    fn finish(&self, uid: &str, static_name: Option<String>) {
        let mut inner = lock(&self.inner);
        inner.checks.done.insert(uid.to_owned());
        if let Some(name) = static_name
            && inner
                .checks
                .running_static
                .get(&name)
                .is_some_and(|u| u == uid)
        {
            inner.checks.running_static.remove(&name);
        }
    }

    async fn act(behavior: Behavior, ctx: &SyncContext) -> Result<SyncPodOutcome> {
        match behavior {
            Behavior::Ok => Ok(SyncPodOutcome::Running),
            Behavior::Terminal => Ok(SyncPodOutcome::Terminal),
            Behavior::Fail => Err(Error::sync("injected failure")),
            Behavior::NetworkNotReady => Err(Error::NetworkNotReady("cni not ready".into())),
            Behavior::Panic => panic!("injected panic"),
            Behavior::WaitForCancel => {
                ctx.cancelled().await;
                Err(Error::Cancelled)
            }
            Behavior::Sleep(d) => {
                tokio::time::sleep(d).await;
                Ok(SyncPodOutcome::Running)
            }
        }
    }
}

fn uid_of(pod: &Pod) -> String {
    pod.metadata.uid.clone().unwrap_or_default()
}

fn static_name(pod: &Pod) -> Option<String> {
    is_static_pod(pod).then(|| {
        build_pod_full_name(
            pod.metadata.name.as_deref().unwrap_or_default(),
            pod.metadata.namespace.as_deref().unwrap_or_default(),
        )
    })
}

#[async_trait]
impl PodSyncer for RecordingSyncer {
    type Status = FakePodStatus;

    async fn sync_pod(
        &self,
        ctx: &SyncContext,
        update_type: SyncPodType,
        pod: &Pod,
        _mirror_pod: Option<&Pod>,
        status: &FakePodStatus,
    ) -> Result<SyncPodOutcome> {
        let uid = uid_of(pod);
        let (_guard, behavior) = self.enter(
            &uid,
            CallKind::SyncPod(update_type),
            ctx,
            Some(status.version),
            Some(pod),
        );
        Self::act(behavior, ctx).await
    }

    async fn sync_terminating_pod(
        &self,
        ctx: &SyncContext,
        pod: &Pod,
        status: &FakePodStatus,
        grace_period_seconds: i64,
        abnormal: Option<&TerminatePodOptions>,
    ) -> Result<()> {
        let uid = uid_of(pod);
        let kind = CallKind::Terminating {
            grace_period_seconds,
            abnormal: abnormal.is_some(),
            evict: abnormal.is_some_and(|a| a.evict),
            has_status_fn: abnormal.is_some_and(|a| a.status_fn.is_some()),
        };
        let (_guard, behavior) = self.enter(&uid, kind, ctx, Some(status.version), Some(pod));
        Self::act(behavior, ctx).await.map(|_| ())
    }

    async fn sync_terminating_runtime_pod(
        &self,
        ctx: &SyncContext,
        running_pod: &RuntimePod,
    ) -> Result<()> {
        let (_guard, behavior) = self.enter(
            &running_pod.uid,
            CallKind::TerminatingRuntime,
            ctx,
            None,
            None,
        );
        Self::act(behavior, ctx).await?;
        self.finish(&running_pod.uid, None);
        Ok(())
    }

    async fn sync_terminated_pod(
        &self,
        ctx: &SyncContext,
        pod: &Pod,
        status: &FakePodStatus,
    ) -> Result<()> {
        let uid = uid_of(pod);
        let (_guard, behavior) = self.enter(
            &uid,
            CallKind::Terminated,
            ctx,
            Some(status.version),
            Some(pod),
        );
        Self::act(behavior, ctx).await?;
        self.finish(&uid, static_name(pod));
        Ok(())
    }
}

/// An [`EventRecorder`] that keeps what it is told.
#[derive(Debug, Default)]
pub struct RecordingEvents {
    failures: Mutex<Vec<(String, PodWorkerState, String)>>,
    exceeded: Mutex<Vec<String>>,
}

impl RecordingEvents {
    /// A recorder with nothing recorded.
    pub fn new() -> Self {
        Self::default()
    }

    /// Every reported failure: UID, phase, error text.
    pub fn failures(&self) -> Vec<(String, PodWorkerState, String)> {
        lock(&self.failures).clone()
    }

    /// UIDs of pods whose abnormal termination exceeded its wait.
    pub fn exceeded(&self) -> Vec<String> {
        lock(&self.exceeded).clone()
    }
}

impl EventRecorder for RecordingEvents {
    fn sync_failed(&self, uid: &str, state: PodWorkerState, error: &Error) {
        lock(&self.failures).push((uid.to_owned(), state, error.to_string()));
    }

    fn exceeded_grace_period(&self, pod: &Pod) {
        lock(&self.exceeded).push(uid_of(pod));
    }
}
