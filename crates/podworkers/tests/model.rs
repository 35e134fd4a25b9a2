//! Model-based test: random interleavings of updates, deletions, kills,
//! sync results, cache updates and `sync_known_pods` against the recording
//! fake syncer. After every step the syncer's guarantee checks must hold and
//! the observed state (queries, recorded calls, kill completions, live
//! workers, reported failures) must agree with a small reference model.
//! At the end every pod is driven out and nothing may be left behind.
//!
//! The status cache is manual, so a worker syncs only when the cache has
//! news for it; time moves by milliseconds only, so no retry timer fires
//! during the random phase (timers are covered by the unit tests and the
//! final drain).

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, PodSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kubelet_podworkers::fake::{
    Behavior, CallKind, FakeStatusCache, RecordingEvents, RecordingSyncer,
};
use kubelet_podworkers::{
    CONFIG_SOURCE_ANNOTATION, KillPodOptions, PodWorkerPool, PodWorkerState, PodWorkers,
    SyncPodType, TerminatePodOptions, UpdatePodOptions,
};
use proptest::prelude::*;
use tokio::sync::oneshot;

const PODS: usize = 4;
const SPEC_GRACE: i64 = 30;

fn uid(i: usize) -> String {
    format!("p{i}")
}

/// p0 and p1 are static pods with the same full name; p2 and p3 are API pods.
fn is_static(i: usize) -> bool {
    i < 2
}

fn make_pod(i: usize, deletion_grace: Option<i64>) -> Pod {
    Pod {
        metadata: ObjectMeta {
            uid: Some(uid(i)),
            name: Some(if is_static(i) { "s".into() } else { uid(i) }),
            namespace: Some("default".into()),
            annotations: is_static(i).then(|| {
                BTreeMap::from([(CONFIG_SOURCE_ANNOTATION.to_owned(), "file".to_owned())])
            }),
            deletion_timestamp: deletion_grace.map(|_| Time(Default::default())),
            deletion_grace_period_seconds: deletion_grace,
            ..Default::default()
        },
        spec: Some(PodSpec {
            termination_grace_period_seconds: Some(SPEC_GRACE),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Result3 {
    Ok,
    Fail,
    Panic,
}

#[derive(Debug, Clone)]
enum Action {
    Create(usize),
    Update(usize),
    Delete(usize, i64),
    Kill {
        pod: usize,
        grace: Option<i64>,
        evict: bool,
    },
    SetResult(usize, Result3),
    CacheUpdate(usize),
    CacheUpdateAll,
    SyncKnownPods(u8),
}

fn action() -> impl Strategy<Value = Action> {
    let pod = 0..PODS;
    prop_oneof![
        3 => pod.clone().prop_map(Action::Create),
        2 => pod.clone().prop_map(Action::Update),
        2 => (pod.clone(), 0i64..40).prop_map(|(p, g)| Action::Delete(p, g)),
        2 => (pod.clone(), proptest::option::of(0i64..40), any::<bool>())
            .prop_map(|(pod, grace, evict)| Action::Kill { pod, grace, evict }),
        2 => (pod.clone(), prop_oneof![Just(Result3::Ok), Just(Result3::Fail), Just(Result3::Panic)])
            .prop_map(|(p, r)| Action::SetResult(p, r)),
        3 => pod.prop_map(Action::CacheUpdate),
        2 => Just(Action::CacheUpdateAll),
        2 => any::<u8>().prop_map(Action::SyncKnownPods),
    ]
}

// ---------------------------------------------------------------- the model

#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    Sync,
    Terminating,
    Terminated,
}

#[derive(Debug, Default)]
struct MStatus {
    term_requested: bool,
    terminated: bool,
    finished: bool,
    started: bool,
    started_terminating: bool,
    deleted: bool,
    evicted: bool,
    restart_requested: bool,
    grace: i64,
    /// Pending update, with its update type.
    pending: Option<SyncPodType>,
    /// A static pod told to wait for its turn (not woken since).
    blocked: bool,
    /// Work consumed and waiting for a fresh status.
    waiting: Option<(Phase, SyncPodType)>,
    worker: bool,
    /// Kill receivers not yet signalled.
    kills: Vec<usize>,
    /// Kill requests recorded (any), and whether the last one evicts.
    abnormal: Option<bool>,
}

impl MStatus {
    fn phase(&self) -> Phase {
        if self.terminated {
            Phase::Terminated
        } else if self.term_requested {
            Phase::Terminating
        } else {
            Phase::Sync
        }
    }
}

#[derive(Debug, Default)]
struct Model {
    pods: Vec<Option<MStatus>>,
    fresh: Vec<bool>,
    result: Vec<Result3>,
    pods_synced: bool,
    started_static: Option<usize>,
    waiting_static: Vec<usize>,
    calls: Vec<Vec<CallKind>>,
    failures: usize,
    /// Kill receiver id -> signalled.
    kill_done: Vec<bool>,
}

fn effective_grace(current: i64, deletion: Option<i64>, ov: Option<i64>) -> i64 {
    let mut g = current;
    let mut overridden = false;
    for c in [deletion, ov].into_iter().flatten() {
        if g == 0 || c < g {
            g = c;
            overridden = true;
        }
    }
    if !overridden && g == 0 {
        g = SPEC_GRACE;
    }
    g.max(1)
}

impl Model {
    fn new() -> Self {
        Self {
            pods: (0..PODS).map(|_| None).collect(),
            fresh: vec![true; PODS],
            result: vec![Result3::Ok; PODS],
            calls: vec![Vec::new(); PODS],
            ..Self::default()
        }
    }

    fn signal(&mut self, kills: Vec<usize>) {
        for k in kills {
            self.kill_done[k] = true;
        }
    }

    fn update(
        &mut self,
        i: usize,
        kind: SyncPodType,
        deletion: Option<i64>,
        kill: Option<(Option<i64>, bool, usize)>,
    ) {
        let first = self.pods[i].is_none();
        let mut immediate = Vec::new();
        {
            let s = self.pods[i].get_or_insert_with(MStatus::default);
            if !first && s.term_requested && kind == SyncPodType::Create {
                s.restart_requested = true;
                return;
            }
            if s.finished {
                if let Some((_, _, k)) = kill {
                    immediate.push(k);
                }
            } else {
                if !s.term_requested {
                    if deletion.is_some() {
                        s.deleted = true;
                        s.term_requested = true;
                    } else if kind == SyncPodType::Kill {
                        if kill.is_some_and(|k| k.1) {
                            s.evicted = true;
                        }
                        s.term_requested = true;
                    }
                }
                if s.terminated {
                    if let Some((_, _, k)) = kill {
                        immediate.push(k);
                    }
                } else if s.term_requested {
                    s.grace = effective_grace(s.grace, deletion, kill.and_then(|k| k.0));
                    if let Some((_, evict, k)) = kill {
                        s.kills.push(k);
                        s.abnormal = Some(evict);
                    }
                }
                s.pending = Some(kind);
                s.blocked = false;
                if !s.worker {
                    s.worker = true;
                    s.waiting = None;
                    self.fresh[i] = true;
                    if is_static(i) {
                        self.waiting_static.push(i);
                    }
                }
            }
        }
        self.signal(immediate);
    }

    fn release_static(&mut self, i: usize) {
        if self.started_static == Some(i) {
            self.started_static = None;
            for &w in &self.waiting_static {
                if let Some(s) = self.pods[w].as_mut() {
                    s.blocked = false;
                }
            }
        }
    }

    fn allow_static(&mut self, i: usize) -> bool {
        if let Some(started) = self.started_static {
            return started == i;
        }
        let waiting = std::mem::take(&mut self.waiting_static);
        let mut rest: &[usize] = &waiting;
        while let Some((&first, tail)) = rest.split_first() {
            let viable = self.pods[first]
                .as_ref()
                .is_some_and(|s| !s.term_requested && !s.terminated);
            if !viable {
                rest = tail;
                continue;
            }
            if first != i {
                self.waiting_static = rest.to_vec();
                return false;
            }
            rest = tail;
            break;
        }
        self.waiting_static = rest.to_vec();
        self.started_static = Some(i);
        true
    }

    fn requeue_last(&mut self, i: usize) {
        if let Some(s) = self.pods[i].as_mut()
            && s.pending.is_none()
            && s.started
        {
            s.pending = Some(SyncPodType::Sync);
            s.blocked = false;
        }
    }

    fn cleanup_unstarted(&mut self, i: usize) {
        let Some(s) = self.pods[i].as_mut() else {
            return;
        };
        s.finished = true;
        s.terminated = true;
        s.worker = false;
        s.pending = None;
        let kills = std::mem::take(&mut s.kills);
        self.signal(kills);
        self.release_static(i);
    }

    fn execute(&mut self, i: usize, phase: Phase, update_type: SyncPodType) {
        self.fresh[i] = false;
        let result = self.result[i];
        let Some(s) = self.pods[i].as_mut() else {
            return;
        };
        let kind = match phase {
            Phase::Sync => CallKind::SyncPod(update_type),
            Phase::Terminating => {
                s.started_terminating = true;
                CallKind::Terminating {
                    grace_period_seconds: s.grace,
                    abnormal: s.abnormal.is_some(),
                    evict: s.abnormal == Some(true),
                    has_status_fn: false,
                }
            }
            Phase::Terminated => CallKind::Terminated,
        };
        self.calls[i].push(kind);
        if result != Result3::Ok {
            self.failures += 1;
            return;
        }
        match phase {
            Phase::Sync => {}
            Phase::Terminating => {
                s.terminated = true;
                let kills = std::mem::take(&mut s.kills);
                self.signal(kills);
                self.requeue_last(i);
            }
            Phase::Terminated => {
                s.finished = true;
                s.worker = false;
                let kills = std::mem::take(&mut s.kills);
                self.signal(kills);
                self.release_static(i);
            }
        }
    }

    /// One worker step; true if something happened.
    fn step(&mut self, i: usize) -> bool {
        let fresh = self.fresh[i];
        let Some(s) = self.pods[i].as_mut() else {
            return false;
        };
        if !s.worker {
            return false;
        }
        if let Some((phase, t)) = s.waiting {
            if fresh {
                s.waiting = None;
                self.execute(i, phase, t);
                return true;
            }
            return false;
        }
        let Some(t) = s.pending else { return false };
        if s.blocked {
            return false;
        }
        s.pending = None;
        let phase = s.phase();
        if !s.started {
            if is_static(i) {
                if s.term_requested {
                    self.cleanup_unstarted(i);
                    return true;
                }
                if !self.allow_static(i) {
                    if let Some(s) = self.pods[i].as_mut() {
                        s.pending = Some(t);
                        s.blocked = true;
                    }
                    return true;
                }
            }
            if let Some(s) = self.pods[i].as_mut() {
                s.started = true;
            }
        }
        if self.fresh[i] {
            self.execute(i, phase, t);
        } else if let Some(s) = self.pods[i].as_mut() {
            s.waiting = Some((phase, t));
        }
        true
    }

    fn settle(&mut self) {
        for _ in 0..1000 {
            let mut any = false;
            for i in 0..PODS {
                any |= self.step(i);
            }
            if !any {
                return;
            }
        }
        panic!("model did not settle");
    }

    fn sync_known_pods(
        &mut self,
        desired: &HashSet<usize>,
    ) -> BTreeMap<usize, (PodWorkerState, bool)> {
        self.pods_synced = true;
        let mut out = BTreeMap::new();
        for i in 0..PODS {
            let Some(s) = self.pods[i].as_mut() else {
                continue;
            };
            let orphan = !desired.contains(&i);
            let mut removed = false;
            if s.restart_requested || orphan {
                if !s.finished {
                    if orphan {
                        s.deleted = true;
                        if !s.started {
                            removed = true;
                        } else if !s.term_requested {
                            s.term_requested = true;
                            s.grace = effective_grace(s.grace, None, None);
                            self.requeue_last(i);
                        } else {
                            self.requeue_last(i);
                        }
                    }
                } else {
                    removed = true;
                }
            }
            if removed {
                if let Some(mut s) = self.pods[i].take() {
                    let kills = std::mem::take(&mut s.kills);
                    self.signal(kills);
                }
                self.release_static(i);
                continue;
            }
            let Some(s) = self.pods[i].as_ref() else {
                continue;
            };
            let state = match s.phase() {
                Phase::Sync => PodWorkerState::Sync,
                Phase::Terminating => PodWorkerState::Terminating,
                Phase::Terminated => PodWorkerState::Terminated,
            };
            out.insert(i, (state, orphan));
        }
        out
    }
}

// ---------------------------------------------------------------- the run

type Pool = PodWorkerPool<RecordingSyncer, FakeStatusCache>;

struct Harness {
    pool: Pool,
    events: Arc<RecordingEvents>,
    model: Model,
    receivers: Vec<oneshot::Receiver<()>>,
    received: Vec<Option<bool>>,
}

async fn settle() {
    tokio::time::sleep(Duration::from_millis(1)).await;
}

impl Harness {
    fn new() -> Self {
        let events = Arc::new(RecordingEvents::new());
        let pool = PodWorkerPool::builder(RecordingSyncer::new(), FakeStatusCache::new())
            .recorder(events.clone())
            .build()
            .expect("runtime");
        Self {
            pool,
            events,
            model: Model::new(),
            receivers: Vec::new(),
            received: Vec::new(),
        }
    }

    fn poll_receivers(&mut self) {
        for (k, rx) in self.receivers.iter_mut().enumerate() {
            if self.received[k].is_none() {
                match rx.try_recv() {
                    Ok(()) => self.received[k] = Some(true),
                    Err(oneshot::error::TryRecvError::Closed) => self.received[k] = Some(false),
                    Err(oneshot::error::TryRecvError::Empty) => {}
                }
            }
        }
    }

    async fn apply(&mut self, a: &Action) {
        match *a {
            Action::Create(i) => {
                self.pool
                    .update_pod(UpdatePodOptions::create(make_pod(i, None)));
                self.model.update(i, SyncPodType::Create, None, None);
            }
            Action::Update(i) => {
                self.pool
                    .update_pod(UpdatePodOptions::update(make_pod(i, None)));
                self.model.update(i, SyncPodType::Update, None, None);
            }
            Action::Delete(i, g) => {
                self.pool
                    .update_pod(UpdatePodOptions::update(make_pod(i, Some(g))));
                self.model.update(i, SyncPodType::Update, Some(g), None);
            }
            Action::Kill { pod, grace, evict } => {
                let (kill, rx) = KillPodOptions::with_completion(TerminatePodOptions {
                    evict,
                    grace_period_seconds_override: grace,
                    status_fn: None,
                });
                let id = self.receivers.len();
                self.receivers.push(rx);
                self.received.push(None);
                self.model.kill_done.push(false);
                self.pool
                    .update_pod(UpdatePodOptions::kill(make_pod(pod, None), kill));
                self.model
                    .update(pod, SyncPodType::Kill, None, Some((grace, evict, id)));
            }
            Action::SetResult(i, r) => {
                let b = match r {
                    Result3::Ok => Behavior::Ok,
                    Result3::Fail => Behavior::Fail,
                    Result3::Panic => Behavior::Panic,
                };
                self.pool.syncer().set_behavior(&uid(i), b);
                self.model.result[i] = r;
            }
            Action::CacheUpdate(i) => {
                tokio::time::advance(Duration::from_millis(1)).await;
                self.pool.cache().set(&uid(i), true);
                self.model.fresh[i] = true;
            }
            Action::CacheUpdateAll => {
                tokio::time::advance(Duration::from_millis(1)).await;
                self.pool.cache().update_time();
                self.model.fresh = vec![true; PODS];
            }
            Action::SyncKnownPods(mask) => {
                let desired: HashSet<usize> = (0..PODS).filter(|i| mask & (1 << i) != 0).collect();
                let got = self
                    .pool
                    .sync_known_pods(&desired.iter().map(|&i| uid(i)).collect());
                let want = self.model.sync_known_pods(&desired);
                let got: BTreeMap<usize, (PodWorkerState, bool)> = got
                    .into_iter()
                    .map(|(u, s)| (u[1..].parse().unwrap_or(usize::MAX), (s.state, s.orphan)))
                    .collect();
                assert_eq!(got, want, "sync_known_pods result");
                for i in 0..PODS {
                    if !got.contains_key(&i) && !self.pool.is_pod_known(&uid(i)) {
                        // observed: the pool forgot the UID, a new life starts
                        self.pool.syncer().forget(&uid(i));
                    }
                }
            }
        }
        settle().await;
        self.model.settle();
        self.poll_receivers();
    }

    fn check(&self, step: usize, a: &Action) {
        let ctx = format!("step {step} {a:?}");
        let pool = &self.pool;
        assert_eq!(pool.syncer().violations(), Vec::<String>::new(), "{ctx}");
        let m = &self.model;
        for i in 0..PODS {
            let u = uid(i);
            let s = m.pods[i].as_ref();
            let synced = m.pods_synced;
            assert_eq!(pool.is_pod_known(&u), s.is_some(), "{ctx}: known {u}");
            assert_eq!(
                pool.is_pod_termination_requested(&u),
                s.is_some_and(|s| s.term_requested),
                "{ctx}: termination requested {u}"
            );
            assert_eq!(
                pool.is_pod_known_terminated(&u),
                s.is_some_and(|s| s.terminated),
                "{ctx}: terminated {u}"
            );
            assert_eq!(
                pool.should_pod_be_finished(&u),
                s.map_or(synced, |s| s.finished),
                "{ctx}: finished {u}"
            );
            assert_eq!(
                pool.should_pod_containers_be_terminating(&u),
                s.map_or(synced, |s| s.started_terminating),
                "{ctx}: containers terminating {u}"
            );
            assert_eq!(
                pool.should_pod_content_be_removed(&u),
                s.map_or(synced, |s| s.evicted || (s.deleted && s.terminated)),
                "{ctx}: content removed {u}"
            );
            assert_eq!(
                pool.grace_period(&u),
                s.and_then(|s| s.term_requested.then_some(s.grace)),
                "{ctx}: grace {u}"
            );
            let calls: Vec<CallKind> = pool
                .syncer()
                .calls_for(&u)
                .into_iter()
                .map(|c| c.kind)
                .collect();
            assert_eq!(calls, m.calls[i], "{ctx}: calls of {u}");
        }
        let workers = m.pods.iter().flatten().filter(|s| s.worker).count();
        assert_eq!(pool.live_workers(), workers, "{ctx}: live workers");
        assert_eq!(
            self.events.failures().len(),
            m.failures,
            "{ctx}: failures reported"
        );
        let want: Vec<Option<bool>> = m.kill_done.iter().map(|&d| d.then_some(true)).collect();
        assert_eq!(self.received, want, "{ctx}: kill completions");
    }

    /// Every pod healthy, fresh statuses, time passing: all pods must end.
    async fn drain(&mut self) {
        for i in 0..PODS {
            self.pool.syncer().set_behavior(&uid(i), Behavior::Ok);
        }
        for round in 0..3 {
            let _ = self.pool.sync_known_pods(&HashSet::new());
            for _ in 0..8 {
                tokio::time::advance(Duration::from_millis(1)).await;
                self.pool.cache().update_time();
                tokio::time::sleep(Duration::from_secs(100)).await;
            }
            let _ = round;
        }
        let left = self.pool.sync_known_pods(&HashSet::new());
        assert!(left.is_empty(), "workers left after drain: {left:?}");
        settle().await;
        assert_eq!(self.pool.live_workers(), 0, "worker tasks leaked");
        assert_eq!(self.pool.known_pods(), 0);
        self.poll_receivers();
        assert!(
            self.received.iter().all(|r| *r == Some(true)),
            "every kill completes: {:?}",
            self.received
        );
        assert_eq!(self.pool.syncer().violations(), Vec::<String>::new());
    }
}

fn run(actions: Vec<Action>) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("runtime");
    rt.block_on(async {
        let mut h = Harness::new();
        for (step, a) in actions.iter().enumerate() {
            h.apply(a).await;
            h.check(step, a);
        }
        h.drain().await;
    });
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn pod_workers_agree_with_model(actions in prop::collection::vec(action(), 1..40)) {
        run(actions);
    }
}

#[test]
fn model_smoke() {
    run(vec![
        Action::Create(0),
        Action::Create(1),
        Action::Create(2),
        Action::SetResult(2, Result3::Fail),
        Action::Delete(2, 5),
        Action::CacheUpdate(2),
        Action::Kill {
            pod: 0,
            grace: Some(3),
            evict: true,
        },
        Action::CacheUpdateAll,
        Action::CacheUpdateAll,
        Action::SyncKnownPods(0b0010),
        Action::CacheUpdateAll,
    ]);
}
