//! The probe manager (upstream `pkg/kubelet/prober/prober_manager.go`): one
//! worker per container probe, three result caches, and the `ready` and
//! `started` fields of a pod's container statuses.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use k8s_openapi::api::core::v1::{Container, ContainerStatus, Pod, PodStatus};
use kubelet_container::events::EventRecorder;
use kubelet_cri_client::RuntimeService;
use tokio::runtime::Handle;

use crate::Error;
use crate::prober::{DEFAULT_KUBE_VERSION, ProbeType, Prober};
use crate::results::{self, ContainerId, ProbeResult};
use crate::worker::{Worker, WorkerHandle};

/// What the workers read pod statuses through (the core crate's
/// [`PodStatusProvider`](kubelet_container::PodStatusProvider): container
/// IDs, states, `started`; upstream: the status manager's `GetPodStatus`).
///
/// The status must be the one *after* [`Manager::update_pod_status`] was
/// applied: liveness and readiness probes only run once a container's
/// `started` is true, and that is set there.
pub use kubelet_container::PodStatusProvider as StatusProvider;

/// The wall clock the workers compare a container's `startedAt` with, for
/// `initialDelaySeconds`.
pub trait Clock: Send + Sync {
    /// The current time.
    fn now(&self) -> SystemTime;
}

/// The system's clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// A wall clock that advances with tokio's clock, so tests with paused time
/// see `initialDelaySeconds` pass as they advance time.
#[derive(Clone, Copy, Debug)]
pub struct TokioClock {
    base: SystemTime,
    origin: tokio::time::Instant,
}

impl TokioClock {
    /// A clock reading `base` now (call inside a tokio runtime).
    pub fn new(base: SystemTime) -> Self {
        Self {
            base,
            origin: tokio::time::Instant::now(),
        }
    }
}

impl Clock for TokioClock {
    fn now(&self) -> SystemTime {
        self.base + self.origin.elapsed()
    }
}

/// One finished probe, for metrics such as upstream's
/// `prober_probe_total{probe_type, result, container, pod, namespace, pod_uid}`
/// and `prober_probe_duration_seconds`.
#[derive(Clone, Copy, Debug)]
pub struct ProbeEvent<'a> {
    /// The probe's type.
    pub probe_type: ProbeType,
    /// The pod's name.
    pub pod_name: &'a str,
    /// The pod's namespace.
    pub namespace: &'a str,
    /// The pod's UID.
    pub pod_uid: &'a str,
    /// The container probed.
    pub container: &'a str,
    /// The probe's result (before thresholds).
    pub result: ProbeResult,
    /// How long the status read and the probe took.
    pub duration: Duration,
}

type Observer = Arc<dyn Fn(&ProbeEvent<'_>) + Send + Sync>;

/// A probe worker that stopped (its pod or container went away, or the pod
/// finished), so that metrics can drop its series as upstream's worker
/// deletes its `prober_probe_total` label sets on exit.
#[derive(Clone, Copy, Debug)]
pub struct ProbeWorkerStopped<'a> {
    /// The probe's type.
    pub probe_type: ProbeType,
    /// The pod's name.
    pub pod_name: &'a str,
    /// The pod's namespace.
    pub namespace: &'a str,
    /// The pod's UID.
    pub pod_uid: &'a str,
    /// The container probed.
    pub container: &'a str,
}

type StopObserver = Arc<dyn Fn(&ProbeWorkerStopped<'_>) + Send + Sync>;

/// Identifies a worker (upstream `probeKey`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct ProbeKey {
    pub(crate) pod_uid: String,
    pub(crate) container: String,
    pub(crate) probe_type: ProbeType,
}

/// What the manager and its workers share.
pub(crate) struct Shared {
    pub(crate) status: Arc<dyn StatusProvider>,
    pub(crate) prober: Prober,
    pub(crate) liveness: Arc<results::Manager>,
    pub(crate) readiness: Arc<results::Manager>,
    pub(crate) startup: Arc<results::Manager>,
    pub(crate) start: tokio::time::Instant,
    pub(crate) jitter: bool,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) observer: Option<Observer>,
    pub(crate) stop_observer: Option<StopObserver>,
    workers: Mutex<HashMap<ProbeKey, WorkerHandle>>,
    known_pods: Mutex<HashSet<String>>,
    next_id: AtomicU64,
}

impl Shared {
    pub(crate) fn results(&self, probe_type: ProbeType) -> Arc<results::Manager> {
        match probe_type {
            ProbeType::Liveness => self.liveness.clone(),
            ProbeType::Readiness => self.readiness.clone(),
            ProbeType::Startup => self.startup.clone(),
        }
    }

    fn workers(&self) -> MutexGuard<'_, HashMap<ProbeKey, WorkerHandle>> {
        self.workers.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn known_pods(&self) -> MutexGuard<'_, HashSet<String>> {
        self.known_pods
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Called by a worker when it ends; a newer worker under the same key is
    /// left alone.
    pub(crate) fn remove_worker(&self, key: &ProbeKey, id: u64) {
        let mut workers = self.workers();
        if workers.get(key).is_some_and(|w| w.id == id) {
            workers.remove(key);
        }
    }

    fn has_worker(&self, pod_uid: &str, container: &str, probe_type: ProbeType) -> bool {
        self.workers().contains_key(&ProbeKey {
            pod_uid: pod_uid.to_owned(),
            container: container.to_owned(),
            probe_type,
        })
    }

    fn trigger(&self, pod_uid: &str, container: &str, probe_type: ProbeType) -> bool {
        let workers = self.workers();
        let key = ProbeKey {
            pod_uid: pod_uid.to_owned(),
            container: container.to_owned(),
            probe_type,
        };
        match workers.get(&key) {
            Some(w) => {
                w.trigger();
                true
            }
            None => false,
        }
    }
}

/// Configures a [`Manager`].
pub struct ManagerBuilder {
    runtime: Arc<dyn RuntimeService>,
    status: Arc<dyn StatusProvider>,
    jitter: bool,
    clock: Arc<dyn Clock>,
    kube_version: String,
    observer: Option<Observer>,
    stop_observer: Option<StopObserver>,
    handle: Option<Handle>,
    liveness: Option<Arc<results::Manager>>,
    readiness: Option<Arc<results::Manager>>,
    startup: Option<Arc<results::Manager>>,
    recorder: Option<Arc<dyn EventRecorder>>,
}

impl fmt::Debug for ManagerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ManagerBuilder")
            .field("jitter", &self.jitter)
            .field("kube_version", &self.kube_version)
            .finish_non_exhaustive()
    }
}

impl ManagerBuilder {
    /// Whether a worker's first probe waits a random part of its period
    /// while the manager is younger than one period (default: true, as
    /// upstream). Tests turn it off for exact timing.
    pub fn jitter(mut self, on: bool) -> Self {
        self.jitter = on;
        self
    }

    /// The wall clock for `initialDelaySeconds` (default [`SystemClock`];
    /// [`TokioClock`] for tests with paused time).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The `major.minor` of the probes' `User-Agent: kube-probe/<v>`
    /// (default [`DEFAULT_KUBE_VERSION`]).
    pub fn kube_version(mut self, version: impl Into<String>) -> Self {
        self.kube_version = version.into();
        self
    }

    /// Called after every probe that ran, e.g. to count
    /// `prober_probe_total`.
    pub fn on_probe(mut self, f: impl Fn(&ProbeEvent<'_>) + Send + Sync + 'static) -> Self {
        self.observer = Some(Arc::new(f));
        self
    }

    /// Called when a probe worker stops, e.g. to delete its
    /// `prober_probe_total` series.
    pub fn on_worker_stop(
        mut self,
        f: impl Fn(&ProbeWorkerStopped<'_>) + Send + Sync + 'static,
    ) -> Self {
        self.stop_observer = Some(Arc::new(f));
        self
    }

    /// The runtime the workers are spawned on (default: the current one at
    /// [`ManagerBuilder::build`]).
    pub fn runtime_handle(mut self, handle: Handle) -> Self {
        self.handle = Some(handle);
        self
    }

    /// Use these result caches instead of new ones (upstream passes the
    /// three managers into `NewManager`).
    pub fn results_managers(
        mut self,
        liveness: Arc<results::Manager>,
        readiness: Arc<results::Manager>,
        startup: Arc<results::Manager>,
    ) -> Self {
        self.liveness = Some(liveness);
        self.readiness = Some(readiness);
        self.startup = Some(startup);
        self
    }

    /// Records the probes' `Unhealthy` and `ProbeWarning` events through
    /// `recorder` (default: none; see [`Prober::with_event_recorder`]).
    /// Killing a container that failed its liveness or startup probe is the
    /// runtime manager's, and so is its `Killing` event (`Container app
    /// failed liveness probe, will be restarted`), as upstream.
    pub fn event_recorder(mut self, recorder: Arc<dyn EventRecorder>) -> Self {
        self.recorder = Some(recorder);
        self
    }

    /// The manager. Fails only when there is no tokio runtime to spawn the
    /// workers on.
    pub fn build(self) -> Result<Manager, Error> {
        let handle = match self.handle {
            Some(h) => h,
            None => Handle::try_current().map_err(|e| Error::NoRuntime(e.to_string()))?,
        };
        let start = {
            let _guard = handle.enter();
            tokio::time::Instant::now()
        };
        let mut prober = Prober::new(self.runtime, &self.kube_version);
        if let Some(recorder) = self.recorder {
            prober = prober.with_event_recorder(recorder);
        }
        let shared = Arc::new(Shared {
            status: self.status,
            prober,
            liveness: self.liveness.unwrap_or_default(),
            readiness: self.readiness.unwrap_or_default(),
            startup: self.startup.unwrap_or_default(),
            start,
            jitter: self.jitter,
            clock: self.clock,
            observer: self.observer,
            stop_observer: self.stop_observer,
            workers: Mutex::new(HashMap::new()),
            known_pods: Mutex::new(HashSet::new()),
            next_id: AtomicU64::new(0),
        });
        Ok(Manager { shared, handle })
    }
}

/// Manages pod probing (upstream `prober.Manager`): [`Manager::add_pod`]
/// starts a worker for every probe of a pod's containers (and of its
/// sidecars, restartable init containers); the workers cache their results
/// in three [`results::Manager`]s; [`Manager::update_pod_status`] sets
/// `ready` and `started` from them. Updating a pod's probes is not
/// supported (as upstream): remove and re-add the pod.
///
/// Dropping the manager stops every worker.
pub struct Manager {
    shared: Arc<Shared>,
    handle: Handle,
}

impl fmt::Debug for Manager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Manager")
            .field("workers", &self.worker_count())
            .finish_non_exhaustive()
    }
}

fn pod_uid(pod: &Pod) -> &str {
    pod.metadata.uid.as_deref().unwrap_or_default()
}

/// The pod's containers that get probe workers: regular containers and
/// sidecars (init containers with `restartPolicy: Always`).
fn probed_containers(pod: &Pod) -> impl Iterator<Item = &Container> {
    let spec = pod.spec.as_ref();
    let sidecars = spec
        .and_then(|s| s.init_containers.as_ref())
        .into_iter()
        .flatten()
        .filter(|c| is_sidecar(c));
    spec.map(|s| s.containers.iter())
        .into_iter()
        .flatten()
        .chain(sidecars)
}

fn is_sidecar(c: &Container) -> bool {
    c.restart_policy.as_deref() == Some("Always")
}

fn is_running(cs: &ContainerStatus) -> bool {
    cs.state.as_ref().and_then(|s| s.running.as_ref()).is_some()
}

impl Manager {
    /// A builder: `runtime` runs exec probes, `status` gives the workers the
    /// pods' statuses.
    pub fn builder(
        runtime: Arc<dyn RuntimeService>,
        status: Arc<dyn StatusProvider>,
    ) -> ManagerBuilder {
        ManagerBuilder {
            runtime,
            status,
            jitter: true,
            clock: Arc::new(SystemClock),
            kube_version: DEFAULT_KUBE_VERSION.to_owned(),
            observer: None,
            stop_observer: None,
            handle: None,
            liveness: None,
            readiness: None,
            startup: None,
            recorder: None,
        }
    }

    /// The liveness results: the runtime manager restarts a container whose
    /// result is [`ProbeResult::Failure`].
    pub fn liveness(&self) -> Arc<results::Manager> {
        self.shared.liveness.clone()
    }

    /// The readiness results.
    pub fn readiness(&self) -> Arc<results::Manager> {
        self.shared.readiness.clone()
    }

    /// The startup results: the runtime manager restarts a container whose
    /// result is [`ProbeResult::Failure`].
    pub fn startup(&self) -> Arc<results::Manager> {
        self.shared.startup.clone()
    }

    /// Starts a worker for every probe of the pod's containers and sidecars
    /// (upstream `AddPod`). A worker that already exists is kept (and the
    /// rest still added; upstream stops at the first duplicate).
    pub fn add_pod(&self, pod: &Pod) {
        let uid = pod_uid(pod);
        if uid.is_empty() {
            tracing::warn!(pod = ?pod.metadata.name, "not probing a pod without a UID");
            return;
        }
        self.shared.known_pods().insert(uid.to_owned());
        let pod_arc = Arc::new(pod.clone());
        let mut to_spawn = Vec::new();
        let mut workers = self.shared.workers();
        for c in probed_containers(pod) {
            for probe_type in [
                ProbeType::Startup,
                ProbeType::Readiness,
                ProbeType::Liveness,
            ] {
                if probe_type.spec_of(c).is_none() {
                    continue;
                }
                let key = ProbeKey {
                    pod_uid: uid.to_owned(),
                    container: c.name.clone(),
                    probe_type,
                };
                if workers.contains_key(&key) {
                    tracing::debug!(%probe_type, pod_uid = uid, container = %c.name, "probe worker already exists");
                    continue;
                }
                let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
                let Some((worker, handle)) = Worker::new(
                    id,
                    self.shared.clone(),
                    pod_arc.clone(),
                    c.clone(),
                    probe_type,
                ) else {
                    continue;
                };
                workers.insert(key, handle);
                to_spawn.push(worker);
            }
        }
        // Spawn without the lock: a worker dropped at once (a runtime that
        // is shutting down) removes itself from the map.
        drop(workers);
        for worker in to_spawn {
            self.handle.spawn(worker.run());
        }
    }

    /// Stops the liveness and startup workers of a pod that is terminating
    /// (upstream `StopLivenessAndStartup`); readiness keeps running.
    pub fn stop_liveness_and_startup(&self, pod: &Pod) {
        let uid = pod_uid(pod);
        for (key, w) in self.shared.workers().iter() {
            if key.pod_uid == uid && key.probe_type != ProbeType::Readiness {
                w.stop();
            }
        }
    }

    /// Stops every worker of the pod; each removes its cached result as it
    /// ends (upstream `RemovePod`).
    pub fn remove_pod(&self, pod: &Pod) {
        let uid = pod_uid(pod);
        self.shared.known_pods().remove(uid);
        for (key, w) in self.shared.workers().iter() {
            if key.pod_uid == uid {
                w.stop();
            }
        }
    }

    /// Stops the workers of every pod whose UID is not in `desired`
    /// (upstream `CleanupPods`).
    pub fn cleanup_pods<I, S>(&self, desired: I)
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let desired: HashSet<String> = desired.into_iter().map(|s| s.as_ref().to_owned()).collect();
        self.shared.known_pods().retain(|uid| desired.contains(uid));
        for (key, w) in self.shared.workers().iter() {
            if !desired.contains(&key.pod_uid) {
                w.stop();
            }
        }
    }

    /// Sets `started` and `ready` of the pod's container statuses from the
    /// cached results (upstream `UpdatePodStatus`):
    ///
    /// - started: false if not running; else the startup result is Success;
    ///   with no result, true only if the container has no startup probe;
    /// - ready: false if not started or not running; else the readiness
    ///   result is Success; with no result, true only if the container has
    ///   no readiness probe (and the probe's worker is woken to run now);
    /// - init containers: ready when exited 0; sidecars as regular
    ///   containers.
    ///
    /// A probe that has not run is never "passed": this also holds for a
    /// pod this manager has not been given yet (after a kubelet restart,
    /// before `add_pod`), whose probed containers are neither started nor
    /// ready until their probes say so.
    pub fn update_pod_status(&self, pod: &Pod, status: &mut PodStatus) {
        let uid = pod_uid(pod);
        let known = self.shared.known_pods().contains(uid);
        let spec = pod.spec.as_ref();
        let find = |list: Option<&Vec<Container>>, name: &str| -> Option<Container> {
            list.into_iter().flatten().find(|c| c.name == name).cloned()
        };
        for cs in status.container_statuses.iter_mut().flatten() {
            let c = find(spec.map(|s| &s.containers), &cs.name);
            let started = self.is_started(uid, known, c.as_ref(), cs);
            cs.started = Some(started);
            cs.ready = started && self.is_ready(uid, known, c.as_ref(), cs);
        }
        for cs in status.init_container_statuses.iter_mut().flatten() {
            let c = find(spec.and_then(|s| s.init_containers.as_ref()), &cs.name);
            let started = self.is_started(uid, known, c.as_ref(), cs);
            cs.started = Some(started);
            if c.as_ref().is_some_and(is_sidecar) {
                cs.ready = started && self.is_ready(uid, known, c.as_ref(), cs);
            } else {
                cs.ready = cs
                    .state
                    .as_ref()
                    .and_then(|s| s.terminated.as_ref())
                    .is_some_and(|t| t.exit_code == 0);
            }
        }
    }

    fn cached(&self, results: &results::Manager, cs: &ContainerStatus) -> Option<ProbeResult> {
        let id = ContainerId::parse(cs.container_id.as_deref()?).ok()?;
        results.get(&id)
    }

    fn is_started(
        &self,
        uid: &str,
        known: bool,
        c: Option<&Container>,
        cs: &ContainerStatus,
    ) -> bool {
        if !is_running(cs) {
            return false;
        }
        if let Some(r) = self.cached(&self.shared.startup, cs) {
            return r == ProbeResult::Success;
        }
        if self.shared.has_worker(uid, &cs.name, ProbeType::Startup) {
            // A startup probe that has not run yet.
            return false;
        }
        known || c.is_none_or(|c| c.startup_probe.is_none())
    }

    fn is_ready(
        &self,
        uid: &str,
        known: bool,
        c: Option<&Container>,
        cs: &ContainerStatus,
    ) -> bool {
        if !is_running(cs) {
            return false;
        }
        if self.cached(&self.shared.readiness, cs) == Some(ProbeResult::Success) {
            return true;
        }
        if self.shared.trigger(uid, &cs.name, ProbeType::Readiness) {
            // A readiness probe that has not passed: run it now.
            return false;
        }
        known || c.is_none_or(|c| c.readiness_probe.is_none())
    }

    /// How many workers are running.
    pub fn worker_count(&self) -> usize {
        self.shared.workers().len()
    }

    /// Whether the pod's container has a running worker for `probe_type`.
    pub fn has_worker(&self, pod_uid: &str, container: &str, probe_type: ProbeType) -> bool {
        self.shared.has_worker(pod_uid, container, probe_type)
    }

    /// Stops every worker (also done on drop).
    pub fn shutdown(&self) {
        for w in self.shared.workers().values() {
            w.stop();
        }
        self.shared.known_pods().clear();
    }
}

impl Drop for Manager {
    fn drop(&mut self) {
        self.shutdown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicI32;

    use k8s_openapi::api::core::v1::{
        ContainerState, ContainerStateRunning, ContainerStateTerminated, ExecAction, PodSpec, Probe,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
    use kubelet_cri_client::FakeRuntime;
    use kubelet_cri_client::api;

    const UID: &str = "pod-uid-1";

    fn exec_probe() -> Probe {
        Probe {
            exec: Some(ExecAction {
                command: Some(vec!["check".into()]),
            }),
            ..Default::default()
        }
    }

    fn pod(container: Container) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("default".into()),
                uid: Some(UID.into()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                containers: vec![container],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn now_time(clock: &dyn Clock, ago: Duration) -> Time {
        let t = clock.now() - ago;
        let ms = t
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_millis();
        Time(k8s_openapi::jiff::Timestamp::from_millisecond(ms as i64).unwrap())
    }

    fn running_status(id: &str, started: Option<bool>, started_at: Time) -> PodStatus {
        PodStatus {
            phase: Some("Running".into()),
            pod_ip: Some("127.0.0.1".into()),
            container_statuses: Some(vec![ContainerStatus {
                name: "app".into(),
                container_id: Some(format!("containerd://{id}")),
                started,
                state: Some(ContainerState {
                    running: Some(ContainerStateRunning {
                        started_at: Some(started_at),
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }]),
            ..Default::default()
        }
    }

    /// A fake runtime with one running container whose exec probes exit
    /// with `exit`, a settable pod status, and a manager over both.
    struct Harness {
        fake: FakeRuntime,
        exit: Arc<AtomicI32>,
        execs: Arc<AtomicU64>,
        status: Arc<Mutex<Option<PodStatus>>>,
        manager: Manager,
        clock: Arc<TokioClock>,
    }

    impl Harness {
        async fn new() -> Self {
            let fake = FakeRuntime::new();
            let exit = Arc::new(AtomicI32::new(0));
            let execs = Arc::new(AtomicU64::new(0));
            let (e, n) = (exit.clone(), execs.clone());
            fake.set_exec_handler(move |_, _| {
                n.fetch_add(1, Ordering::SeqCst);
                api::ExecSyncResponse {
                    stdout: b"out".to_vec(),
                    stderr: Vec::new(),
                    exit_code: e.load(Ordering::SeqCst),
                }
            });
            let status: Arc<Mutex<Option<PodStatus>>> = Arc::new(Mutex::new(None));
            let s = status.clone();
            let provider = move |_: &str| s.lock().unwrap().clone();
            let clock = Arc::new(TokioClock::new(SystemTime::now()));
            let manager = Manager::builder(Arc::new(fake.clone()), Arc::new(provider))
                .jitter(false)
                .clock(clock.clone())
                .build()
                .unwrap();
            Self {
                fake,
                exit,
                execs,
                status,
                manager,
                clock,
            }
        }

        async fn start_container(&self, name: &str) -> String {
            let sandbox = api::PodSandboxConfig {
                metadata: Some(api::PodSandboxMetadata {
                    name: format!("sb-{name}"),
                    namespace: "default".into(),
                    uid: format!("uid-{name}"),
                    attempt: 0,
                }),
                ..Default::default()
            };
            self.fake.add_image("busybox");
            let sb = self
                .fake
                .run_pod_sandbox(sandbox.clone(), "")
                .await
                .unwrap();
            let config = api::ContainerConfig {
                metadata: Some(api::ContainerMetadata {
                    name: name.into(),
                    attempt: 0,
                }),
                image: Some(api::ImageSpec {
                    image: "busybox".into(),
                    ..Default::default()
                }),
                ..Default::default()
            };
            let id = self
                .fake
                .create_container(&sb, config, sandbox)
                .await
                .unwrap();
            self.fake.start_container(&id).await.unwrap();
            id
        }

        fn set_status(&self, s: PodStatus) {
            *self.status.lock().unwrap() = Some(s);
        }

        fn worker(&self, pod: &Pod, probe_type: ProbeType) -> Worker {
            let c = pod.spec.as_ref().unwrap().containers[0].clone();
            Worker::new(
                99,
                self.manager.shared.clone(),
                Arc::new(pod.clone()),
                c,
                probe_type,
            )
            .unwrap()
            .0
        }

        fn execs(&self) -> u64 {
            self.execs.load(Ordering::SeqCst)
        }
    }

    use kubelet_cri_client::RuntimeService;

    fn app(liveness: Option<Probe>, readiness: Option<Probe>, startup: Option<Probe>) -> Container {
        Container {
            name: "app".into(),
            liveness_probe: liveness,
            readiness_probe: readiness,
            startup_probe: startup,
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn liveness_fails_only_after_failure_threshold_then_holds_until_restart() {
        let h = Harness::new().await;
        let id = h.start_container("app").await;
        let pod = pod(app(Some(exec_probe()), None, None));
        h.set_status(running_status(
            &id,
            Some(true),
            now_time(h.clock.as_ref(), Duration::ZERO),
        ));
        let cid = ContainerId::new("containerd", id.clone());
        let mut w = h.worker(&pod, ProbeType::Liveness);

        assert!(w.do_probe().await);
        assert_eq!(h.manager.liveness().get(&cid), Some(ProbeResult::Success));
        h.exit.store(1, Ordering::SeqCst);
        for _ in 0..2 {
            assert!(w.do_probe().await);
            assert_eq!(h.manager.liveness().get(&cid), Some(ProbeResult::Success));
        }
        assert!(w.do_probe().await);
        assert_eq!(h.manager.liveness().get(&cid), Some(ProbeResult::Failure));
        assert_eq!(h.execs(), 4);

        // On hold: no more execs for this container, even when it recovers.
        h.exit.store(0, Ordering::SeqCst);
        assert!(w.do_probe().await);
        assert!(w.do_probe().await);
        assert_eq!(h.execs(), 4, "an on-hold worker probed");
        assert_eq!(h.manager.liveness().get(&cid), Some(ProbeResult::Failure));

        // The restart: a new container ID resets to Success and probing resumes.
        let id2 = h.start_container("app2").await;
        h.set_status(running_status(
            &id2,
            Some(true),
            now_time(h.clock.as_ref(), Duration::ZERO),
        ));
        assert!(w.do_probe().await);
        assert_eq!(h.execs(), 5);
        let cid2 = ContainerId::new("containerd", id2);
        assert_eq!(h.manager.liveness().get(&cid2), Some(ProbeResult::Success));
        assert_eq!(
            h.manager.liveness().get(&cid),
            None,
            "the old result was kept"
        );
    }

    #[tokio::test]
    async fn readiness_needs_success_threshold_and_starts_as_failure() {
        let h = Harness::new().await;
        let id = h.start_container("app").await;
        let mut probe = exec_probe();
        probe.success_threshold = Some(2);
        let pod = pod(app(None, Some(probe), None));
        h.set_status(running_status(
            &id,
            Some(true),
            now_time(h.clock.as_ref(), Duration::ZERO),
        ));
        let cid = ContainerId::new("containerd", id);
        let mut w = h.worker(&pod, ProbeType::Readiness);
        assert!(w.do_probe().await);
        assert_eq!(h.manager.readiness().get(&cid), Some(ProbeResult::Failure));
        assert!(w.do_probe().await);
        assert_eq!(h.manager.readiness().get(&cid), Some(ProbeResult::Success));
        // A readiness failure does not hold the worker.
        h.exit.store(1, Ordering::SeqCst);
        for _ in 0..3 {
            assert!(w.do_probe().await);
        }
        assert_eq!(h.manager.readiness().get(&cid), Some(ProbeResult::Failure));
        h.exit.store(0, Ordering::SeqCst);
        assert!(w.do_probe().await);
        assert!(w.do_probe().await);
        assert_eq!(h.manager.readiness().get(&cid), Some(ProbeResult::Success));
    }

    #[tokio::test]
    async fn startup_gates_liveness_and_readiness() {
        let h = Harness::new().await;
        let id = h.start_container("app").await;
        let pod = pod(app(
            Some(exec_probe()),
            Some(exec_probe()),
            Some(exec_probe()),
        ));
        let at = now_time(h.clock.as_ref(), Duration::ZERO);
        let cid = ContainerId::new("containerd", id.clone());
        let mut live = h.worker(&pod, ProbeType::Liveness);
        let mut ready = h.worker(&pod, ProbeType::Readiness);
        let mut startup = h.worker(&pod, ProbeType::Startup);

        h.set_status(running_status(&id, Some(false), at.clone()));
        assert!(live.do_probe().await);
        assert!(ready.do_probe().await);
        assert_eq!(h.execs(), 0, "liveness or readiness ran before startup");
        assert_eq!(h.manager.startup().get(&cid), None);
        assert!(startup.do_probe().await);
        assert_eq!(h.execs(), 1);
        assert_eq!(h.manager.startup().get(&cid), Some(ProbeResult::Success));

        h.set_status(running_status(&id, Some(true), at));
        assert!(startup.do_probe().await);
        assert_eq!(h.execs(), 1, "startup ran after the container started");
        assert!(live.do_probe().await);
        assert!(ready.do_probe().await);
        assert_eq!(h.execs(), 3);
    }

    #[tokio::test]
    async fn initial_delay_counts_from_started_at() {
        let h = Harness::new().await;
        let id = h.start_container("app").await;
        let mut probe = exec_probe();
        probe.initial_delay_seconds = Some(10);
        let pod = pod(app(Some(probe), None, None));
        let mut w = h.worker(&pod, ProbeType::Liveness);
        h.set_status(running_status(
            &id,
            Some(true),
            now_time(h.clock.as_ref(), Duration::from_secs(5)),
        ));
        assert!(w.do_probe().await);
        assert_eq!(h.execs(), 0);
        h.set_status(running_status(
            &id,
            Some(true),
            now_time(h.clock.as_ref(), Duration::from_secs(11)),
        ));
        assert!(w.do_probe().await);
        assert_eq!(h.execs(), 1);
    }

    #[tokio::test]
    async fn non_running_terminal_and_deleted_pods() {
        let h = Harness::new().await;
        let id = h.start_container("app").await;
        let mut p = pod(app(Some(exec_probe()), Some(exec_probe()), None));
        let cid = ContainerId::new("containerd", id.clone());

        // Waiting container: readiness Failure, keep going.
        let mut s = running_status(&id, Some(true), now_time(h.clock.as_ref(), Duration::ZERO));
        s.container_statuses.as_mut().unwrap()[0].state = Some(ContainerState::default());
        h.set_status(s.clone());
        let mut ready = h.worker(&p, ProbeType::Readiness);
        assert!(ready.do_probe().await);
        assert_eq!(h.manager.readiness().get(&cid), Some(ProbeResult::Failure));

        // Terminated with restartPolicy Never: the worker exits.
        s.container_statuses.as_mut().unwrap()[0].state = Some(ContainerState {
            terminated: Some(ContainerStateTerminated {
                exit_code: 1,
                ..Default::default()
            }),
            ..Default::default()
        });
        h.set_status(s.clone());
        assert!(
            ready.do_probe().await,
            "restartPolicy Always keeps the worker"
        );
        p.spec.as_mut().unwrap().restart_policy = Some("Never".into());
        let mut never = h.worker(&p, ProbeType::Readiness);
        assert!(!never.do_probe().await);

        // A terminal phase ends every worker.
        s.phase = Some("Succeeded".into());
        h.set_status(s);
        assert!(!ready.do_probe().await);

        // Deletion: liveness records Success and stops.
        let mut p = pod(app(Some(exec_probe()), None, None));
        p.metadata.deletion_timestamp = Some(now_time(h.clock.as_ref(), Duration::ZERO));
        h.set_status(running_status(
            &id,
            Some(true),
            now_time(h.clock.as_ref(), Duration::ZERO),
        ));
        let mut live = h.worker(&p, ProbeType::Liveness);
        assert!(!live.do_probe().await);
        assert_eq!(h.manager.liveness().get(&cid), Some(ProbeResult::Success));
        assert_eq!(h.execs(), 0);

        // No status, or no container ID yet: wait.
        *h.status.lock().unwrap() = None;
        assert!(live.do_probe().await);
    }

    fn status_of(pod: &Pod, m: &Manager, s: &PodStatus) -> (bool, Option<bool>) {
        let mut s = s.clone();
        m.update_pod_status(pod, &mut s);
        let c = &s.container_statuses.unwrap()[0];
        (c.ready, c.started)
    }

    #[tokio::test]
    async fn update_pod_status_sets_ready_and_started_as_upstream() {
        let h = Harness::new().await;
        let id = h.start_container("app").await;
        let cid = ContainerId::new("containerd", id.clone());
        let running = running_status(&id, None, now_time(h.clock.as_ref(), Duration::ZERO));
        let mut waiting = running.clone();
        waiting.container_statuses.as_mut().unwrap()[0].state = Some(ContainerState::default());

        // No probes: running means started and ready.
        let plain = pod(app(None, None, None));
        assert_eq!(status_of(&plain, &h.manager, &running), (true, Some(true)));
        assert_eq!(
            status_of(&plain, &h.manager, &waiting),
            (false, Some(false))
        );

        // A readiness probe on a pod not added yet (kubelet restart): not ready.
        let mut probed = pod(app(None, Some(exec_probe()), Some(exec_probe())));
        probed.metadata.uid = Some("restarted".into());
        assert_eq!(
            status_of(&probed, &h.manager, &running),
            (false, Some(false))
        );

        // Added, workers exist but no results: not started, not ready.
        let mut probed2 = pod(app(None, Some(exec_probe()), Some(exec_probe())));
        probed2.metadata.uid = Some("held".into());
        h.manager.add_pod(&probed2);
        assert_eq!(
            status_of(&probed2, &h.manager, &running),
            (false, Some(false))
        );
        h.manager.startup().set(&cid, ProbeResult::Unknown, "held");
        assert_eq!(
            status_of(&probed2, &h.manager, &running),
            (false, Some(false))
        );
        h.manager.startup().set(&cid, ProbeResult::Success, "held");
        assert_eq!(
            status_of(&probed2, &h.manager, &running),
            (false, Some(true))
        );
        h.manager
            .readiness()
            .set(&cid, ProbeResult::Success, "held");
        assert_eq!(
            status_of(&probed2, &h.manager, &running),
            (true, Some(true))
        );
        // Not running: neither, whatever the results say.
        assert_eq!(
            status_of(&probed2, &h.manager, &waiting),
            (false, Some(false))
        );
        h.manager.remove_pod(&probed2);
    }

    #[tokio::test(start_paused = true)]
    async fn workers_come_and_go_with_pods() {
        let h = Harness::new().await;
        let mut a = pod(app(Some(exec_probe()), Some(exec_probe()), None));
        a.metadata.uid = Some("a".into());
        let mut b = pod(app(None, Some(exec_probe()), Some(exec_probe())));
        b.metadata.uid = Some("b".into());
        // A sidecar's probes count too; a regular init container's do not.
        b.spec.as_mut().unwrap().init_containers = Some(vec![
            Container {
                name: "sidecar".into(),
                restart_policy: Some("Always".into()),
                readiness_probe: Some(exec_probe()),
                ..Default::default()
            },
            Container {
                name: "init".into(),
                readiness_probe: Some(exec_probe()),
                ..Default::default()
            },
        ]);
        h.manager.add_pod(&a);
        h.manager.add_pod(&a);
        h.manager.add_pod(&b);
        assert_eq!(h.manager.worker_count(), 5);
        assert!(h.manager.has_worker("b", "sidecar", ProbeType::Readiness));
        assert!(!h.manager.has_worker("b", "init", ProbeType::Readiness));

        h.manager.stop_liveness_and_startup(&a);
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(!h.manager.has_worker("a", "app", ProbeType::Liveness));
        assert!(h.manager.has_worker("a", "app", ProbeType::Readiness));

        h.manager.cleanup_pods(["b"]);
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(h.manager.worker_count(), 3);
        h.manager.remove_pod(&b);
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(h.manager.worker_count(), 0);
    }
}
