//! The sync loop, pod and status managers: what turns the components into a
//! kubelet.
//!
//! Mirrors upstream `pkg/kubelet/kubelet.go` (`syncLoop`,
//! `syncLoopIteration`, `HandlePodAdditions`/`Updates`/`Removes`/`Reconcile`,
//! `HandlePodCleanups`) and the pod manager (`pkg/kubelet/pod`). Its central
//! type is [`Kubelet`]: it takes the pod config's updates
//! (`kubelet-podconfig`), drives one pod worker per pod
//! (`kubelet-podworkers`) whose sync functions ([`KubeletSyncer`]) call the
//! runtime manager (`kubelet-kuberuntime`), wakes pods on lifecycle events,
//! and cleans up after pods that are gone.
//!
//! The status cache the workers wait on and the lifecycle events are
//! supplied by the caller (the PLEG crate provides both), so the loop runs
//! with any implementation of [`PodStatusCache`].
//!
//! Optional parts ([`KubeletParts`]): the container manager (admission,
//! pod and QoS cgroups), the prober (readiness in the status, probe results
//! waking pods), the eviction manager (admission under node pressure,
//! evictions through the pod workers) and metrics.
//!
//! Modules: [`standalone`] wires every crate into a standalone kubelet on a
//! CRI socket; [`volumes`] prepares emptyDir (disk and tmpfs), hostPath,
//! downward API volumes and safe subPath mounts; [`status`] builds API pod
//! statuses; [`node_api`] serves the kubelet through `kubelet-server`;
//! [`explain`] predicts what the kubelet will do with a pod; [`config`] reads
//! `KubeletConfiguration` and upstream's flags; [`api_env`] reads the env's
//! Secrets and ConfigMaps and the pull secrets; [`services`] keeps the
//! cluster's Services for the service environment variables.
//!
//! ```no_run
//! use std::sync::Arc;
//! # async fn demo<C>(runtime: Arc<dyn kubelet_kuberuntime::Runtime>, cache: C)
//! # -> Result<(), kubelet_agent::Error>
//! # where C: kubelet_podworkers::PodStatusCache<Status = Arc<kubelet_kuberuntime::PodStatus>> {
//! use kubelet_agent::{Kubelet, KubeletConfig};
//! use kubelet_podconfig::PodConfig;
//!
//! let (config, updates) = PodConfig::builder("node-1").file("/etc/kubernetes/manifests").start();
//! let kubelet = Kubelet::new(KubeletConfig::new("node-1"), runtime, cache)?;
//! let (_events_tx, events) = tokio::sync::mpsc::channel(1000);
//! let ready = Box::new(move || config.sources_ready());
//! kubelet.run(updates, events, ready, std::future::pending()).await;
//! # Ok(())
//! # }
//! ```

use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kubelet_cm::ContainerManager;
use kubelet_kuberuntime::gc::{GcPolicy, PodStateProvider};
use kubelet_kuberuntime::{PodStatus, Runtime, RuntimeManager};
use kubelet_podconfig::{PodOperation, PodUpdate, PodUpdates};
use kubelet_podworkers::{
    KillPodOptions, PodStatusCache, PodWorkerPool, PodWorkers, RuntimePod, UpdatePodOptions,
};

pub mod admission;
pub mod api_env;
pub mod apiclient;
pub mod builder;
pub mod services;
/// The status manager ([`kubelet_status`]).
pub use kubelet_status as status;
/// The volume manager ([`kubelet_volumemanager`]).
pub use kubelet_volumemanager as volumes;
pub mod config;
pub mod cpu_reconcile;
pub mod deletor;
pub mod explain;
pub mod mirror;
pub mod node_api;
pub mod node_inputs;
pub mod standalone;
#[cfg(test)]
mod sync_loop_tests;
mod syncer;

pub use status::StatusManager;
pub use syncer::KubeletSyncer;

/// Errors of this crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The pod cannot be run as written.
    #[error("pod {pod}: {reason}")]
    InvalidPod {
        /// The pod (`namespace/name`).
        pod: String,
        /// Why.
        reason: String,
    },
    /// A file or directory could not be made or removed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The runtime failed.
    #[error(transparent)]
    Runtime(Box<kubelet_kuberuntime::Error>),
    /// The pod workers could not start.
    #[error(transparent)]
    Workers(Box<kubelet_podworkers::Error>),
    /// Containers still ran after a kill that succeeded (upstream's "CRI
    /// violation" check in `SyncTerminatingPod`): the kill went by a stale
    /// status.
    #[error("pod {pod}: detected running containers after a successful KillPod: {containers:?}")]
    RunningAfterKill {
        /// The pod (`namespace/name`).
        pod: String,
        /// The IDs of the containers still running.
        containers: Vec<String>,
    },
}

impl From<kubelet_kuberuntime::Error> for Error {
    fn from(e: kubelet_kuberuntime::Error) -> Self {
        Error::Runtime(Box::new(e))
    }
}

impl From<kubelet_container::Error> for Error {
    fn from(e: kubelet_container::Error) -> Self {
        Error::Runtime(Box::new(e.into()))
    }
}

impl From<kubelet_volumemanager::Error> for Error {
    fn from(e: kubelet_volumemanager::Error) -> Self {
        match e {
            kubelet_volumemanager::Error::InvalidPod { pod, reason } => {
                Error::InvalidPod { pod, reason }
            }
            kubelet_volumemanager::Error::Io { path, source } => Error::Io { path, source },
            other => Error::InvalidPod {
                pod: "*".into(),
                reason: other.to_string(),
            },
        }
    }
}

impl From<kubelet_podworkers::Error> for Error {
    fn from(e: kubelet_podworkers::Error) -> Self {
        Error::Workers(Box::new(e))
    }
}

/// Upstream `housekeepingPeriod`.
pub const HOUSEKEEPING_PERIOD: Duration = Duration::from_secs(2);
/// Upstream `ContainerGCPeriod`.
pub const CONTAINER_GC_PERIOD: Duration = Duration::from_secs(60);

/// The kubelet's own settings.
#[derive(Debug, Clone)]
pub struct KubeletConfig {
    /// This node's name.
    pub node_name: String,
    /// Where pod directories live (upstream `--root-dir`,
    /// `/var/lib/kubelet`).
    pub root_dir: PathBuf,
    /// How often housekeeping runs.
    pub housekeeping_period: Duration,
    /// At most this many pods are admitted (upstream `maxPods`, 110).
    pub max_pods: usize,
    /// How often dead containers are garbage collected.
    pub container_gc_period: Duration,
    /// What garbage collection keeps.
    pub gc_policy: GcPolicy,
    /// The runtime's name as its CRI `Version` reports it (`containerd`,
    /// `cri-o`): the type of the API's container IDs. The
    /// [`builder`] takes it from `Version`; this defaults
    /// to [`DEFAULT_RUNTIME_NAME`] for kubelets assembled by hand.
    pub runtime_name: String,
    /// The node's addresses: each pod's `hostIP`/`hostIPs` (upstream
    /// `kl.GetHostIPs`). Empty: not reported.
    pub node_ips: Vec<std::net::IpAddr>,
    /// How soon a running pod is synced again (upstream `syncFrequency`,
    /// 1 minute, jittered by up to half of it).
    pub sync_frequency: Duration,
}

/// The runtime name a hand-assembled [`KubeletConfig`] starts with.
pub const DEFAULT_RUNTIME_NAME: &str = "containerd";

impl KubeletConfig {
    /// Upstream's defaults for `node_name`.
    pub fn new(node_name: impl Into<String>) -> Self {
        Self {
            node_name: node_name.into(),
            root_dir: PathBuf::from("/var/lib/kubelet"),
            housekeeping_period: HOUSEKEEPING_PERIOD,
            max_pods: 110,
            container_gc_period: CONTAINER_GC_PERIOD,
            gc_policy: GcPolicy::default(),
            runtime_name: DEFAULT_RUNTIME_NAME.to_owned(),
            node_ips: Vec::new(),
            sync_frequency: kubelet_podworkers::DEFAULT_RESYNC_INTERVAL,
        }
    }
}

fn uid_of(pod: &Pod) -> String {
    pod.metadata.uid.clone().unwrap_or_default()
}

fn is_terminal(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded") | Some("Failed")
    )
}

/// The optional parts a kubelet is assembled from, beyond its runtime and
/// status cache.
#[derive(Default)]
pub struct KubeletParts {
    /// Where pod statuses are recorded (the caller may read them: a node
    /// API, a test).
    pub statuses: Arc<StatusManager>,
    /// The container manager: admission (topology, CPU and memory
    /// managers), pod cgroups and the QoS cgroups.
    pub cm: Option<Arc<dyn ContainerManager>>,
    /// The prober: liveness, readiness and startup probes.
    pub prober: Option<Arc<kubelet_prober::Manager>>,
    /// Metrics to record into.
    pub metrics: Option<kubelet_server::Metrics>,
    /// The eviction manager, with the receiving end of its [`EvictionKiller`]
    /// (see [`eviction_channel`]): admission under node pressure and
    /// evictions, run alongside the sync loop.
    pub eviction: Option<(Arc<kubelet_eviction::manager::Manager>, EvictionRequests)>,
    /// Mirror pods in the API server for static pods (cluster mode).
    pub mirror_client: Option<Arc<dyn mirror::MirrorClient>>,
    /// Secret, configMap and projected volumes from the API server
    /// (cluster mode).
    pub api_volumes: Option<Arc<kubelet_volumemanager::ApiVolumes>>,
    /// The cluster's Services, for the containers' service environment
    /// variables (cluster mode).
    pub services: Option<services::ServiceLister>,
}

/// The eviction manager's [`PodKiller`](kubelet_eviction::manager::PodKiller):
/// it hands each eviction to the sync loop, which records the evicted status
/// and kills the pod through its worker (upstream `killPodNow`); the
/// manager then waits for the pod to be cleaned up.
#[derive(Debug, Clone)]
pub struct EvictionKiller(tokio::sync::mpsc::UnboundedSender<kubelet_eviction::manager::Eviction>);

/// The sync loop's end of an [`EvictionKiller`].
#[derive(Debug)]
pub struct EvictionRequests(
    tokio::sync::mpsc::UnboundedReceiver<kubelet_eviction::manager::Eviction>,
);

/// A killer for the eviction manager and the requests the kubelet serves.
pub fn eviction_channel() -> (EvictionKiller, EvictionRequests) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    (EvictionKiller(tx), EvictionRequests(rx))
}

#[async_trait::async_trait]
impl kubelet_eviction::manager::PodKiller for EvictionKiller {
    async fn kill_pod(&self, eviction: &kubelet_eviction::manager::Eviction) -> Result<(), String> {
        self.0
            .send(eviction.clone())
            .map_err(|_| "the sync loop is not running".to_owned())
    }
}

impl std::fmt::Debug for KubeletParts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeletParts")
            .field("cm", &self.cm.is_some())
            .field("prober", &self.prober.is_some())
            .field("metrics", &self.metrics.is_some())
            .field("eviction", &self.eviction.is_some())
            .finish_non_exhaustive()
    }
}

/// A kubelet: the pod manager, the pod workers and the sync loop.
pub struct Kubelet<C>
where
    C: PodStatusCache<Status = Arc<PodStatus>>,
{
    config: KubeletConfig,
    runtime: Arc<dyn Runtime>,
    gc: Option<Arc<RuntimeManager>>,
    cm: Option<Arc<dyn ContainerManager>>,
    workers: PodWorkerPool<KubeletSyncer, C>,
    statuses: Arc<StatusManager>,
    /// The pods the sources gave, by UID (upstream's pod manager). Ordered:
    /// housekeeping and the handlers walk it to dispatch work, and the
    /// order reaches the pod workers and the runtime's calls. Upstream
    /// ranges over Go maps (any order); a fixed one makes a run on a paused
    /// clock (`kubelet-sim`) replay exactly. At most `maxPods` entries.
    pods: Mutex<BTreeMap<String, Arc<Pod>>>,
    /// Mirror pods from the API server, by full name (upstream's pod
    /// manager keeps them apart from the pods it runs); ordered as `pods`.
    mirror_pods: Mutex<BTreeMap<String, Arc<Pod>>>,
    mirror_client: Option<Arc<dyn mirror::MirrorClient>>,
    prober: Option<Arc<kubelet_prober::Manager>>,
    metrics: Option<kubelet_server::Metrics>,
    /// When the sync loop last went round (upstream `syncLoopMonitor`, read
    /// by `/healthz/syncloop`).
    sync_loop_entered: Mutex<Option<std::time::Instant>>,
    /// The sources whose updates the kubelet has handled (upstream
    /// `kl.sourcesReady`'s seen set).
    sources_seen: Mutex<HashSet<String>>,
    eviction: Option<Arc<kubelet_eviction::manager::Manager>>,
    evictions: Mutex<Option<EvictionRequests>>,
    /// The Node as last registered or updated (cluster mode): its taints
    /// at admission.
    node: Option<tokio::sync::watch::Receiver<Option<k8s_openapi::api::core::v1::Node>>>,
    /// Where admission rejections are recorded as events.
    events: Arc<dyn kubelet_container::events::EventRecorder>,
    /// Where the syncer records pod events (`FailedMount`).
    syncer_events: syncer::EventSlot,
}

impl<C> std::fmt::Debug for Kubelet<C>
where
    C: PodStatusCache<Status = Arc<PodStatus>>,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kubelet")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl<C> Kubelet<C>
where
    C: PodStatusCache<Status = Arc<PodStatus>>,
{
    /// A kubelet over `runtime`, whose pod workers wait on `cache`.
    pub fn new(config: KubeletConfig, runtime: Arc<dyn Runtime>, cache: C) -> Result<Self, Error> {
        Self::with_parts(config, runtime, cache, KubeletParts::default())
    }

    /// Like [`Kubelet::new`], with the optional parts: a status manager the
    /// caller reads, the container manager, the prober and metrics.
    pub fn with_parts(
        config: KubeletConfig,
        runtime: Arc<dyn Runtime>,
        cache: C,
        parts: KubeletParts,
    ) -> Result<Self, Error> {
        let KubeletParts {
            statuses,
            cm,
            prober,
            metrics,
            eviction,
            mirror_client,
            api_volumes,
            services,
        } = parts;
        let (eviction, evictions) = match eviction {
            Some((m, r)) => (Some(m), Some(r)),
            None => (None, None),
        };
        let mut syncer = KubeletSyncer::new(
            runtime.clone(),
            statuses.clone(),
            config.root_dir.clone(),
            cm.clone(),
        )
        .with_runtime_name(config.runtime_name.clone())
        .with_node_ips(config.node_ips.clone());
        if let Some(prober) = &prober {
            syncer = syncer.with_prober(prober.clone());
        }
        if let Some(metrics) = &metrics {
            syncer = syncer.with_metrics(metrics.clone());
        }
        if let Some(client) = &mirror_client {
            syncer = syncer.with_mirror_client(client.clone());
        }
        if let Some(volumes) = api_volumes {
            syncer = syncer.with_api_volumes(volumes);
        }
        if let Some(services) = services {
            syncer = syncer.with_services(services);
        }
        let syncer_events = syncer.event_slot();
        let workers = PodWorkerPool::builder(syncer, cache)
            .config(kubelet_podworkers::PodWorkersConfig {
                resync_interval: config.sync_frequency,
                ..Default::default()
            })
            .build()?;
        Ok(Self {
            config,
            runtime,
            gc: None,
            cm,
            workers,
            statuses,
            pods: Mutex::new(BTreeMap::new()),
            mirror_pods: Mutex::new(BTreeMap::new()),
            mirror_client,
            prober,
            metrics,
            sync_loop_entered: Mutex::new(None),
            sources_seen: Mutex::new(HashSet::new()),
            eviction,
            evictions: Mutex::new(evictions),
            node: None,
            events: Arc::new(kubelet_container::events::NoopRecorder),
            syncer_events,
        })
    }

    /// Admits pods against the Node `node` holds (its `NoExecute` taints),
    /// as upstream's predicate admission reads the Node from its informer.
    pub fn with_node(
        mut self,
        node: tokio::sync::watch::Receiver<Option<k8s_openapi::api::core::v1::Node>>,
    ) -> Self {
        self.node = Some(node);
        self
    }

    /// Records admission rejections as Warning events on the pod (upstream
    /// `rejectPod`), and the syncer's `FailedMount` when a pod's volumes
    /// cannot be set up.
    pub fn with_event_recorder(
        mut self,
        events: Arc<dyn kubelet_container::events::EventRecorder>,
    ) -> Self {
        self.syncer_events.set(events.clone());
        self.events = events;
        self
    }

    /// When the sync loop last went round; `None` before it started.
    pub fn sync_loop_last_entered(&self) -> Option<std::time::Instant> {
        *self
            .sync_loop_entered
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Garbage-collects dead containers and sandboxes of `manager` every
    /// `container_gc_period` while the loop runs, beside it (upstream
    /// `StartGarbageCollection`). It is what removes terminated pods'
    /// containers and sandboxes, as upstream: without it they stay in the
    /// runtime (housekeeping only kills unknown running pods).
    pub fn with_container_gc(mut self, manager: Arc<RuntimeManager>) -> Self {
        self.gc = Some(manager);
        self
    }

    /// Whether everything of the pod may go from the node: its dead
    /// containers, sandboxes and logs (upstream
    /// `podWorkers.ShouldPodContentBeRemoved`, for a pod the pod manager no
    /// longer holds).
    pub fn should_pod_content_be_removed(&self, uid: &str) -> bool {
        !self.pod_map().contains_key(uid) && self.workers.should_pod_content_be_removed(uid)
    }

    /// The dead containers kept per container name (the garbage collection
    /// policy's `max_per_pod_container`, at least one).
    pub fn dead_containers_to_keep(&self) -> usize {
        usize::try_from(self.config.gc_policy.max_per_pod_container)
            .unwrap_or(usize::MAX)
            .max(deletor::MIN_DEAD_CONTAINER_IN_POD)
    }

    /// The status manager (every pod's API status).
    pub fn statuses(&self) -> &Arc<StatusManager> {
        &self.statuses
    }

    /// The pods the kubelet should run, by UID (upstream pod manager).
    pub fn pods(&self) -> Vec<Arc<Pod>> {
        self.pod_map().values().cloned().collect()
    }

    fn pod_map(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Arc<Pod>>> {
        self.pods.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn mirror_map(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Arc<Pod>>> {
        self.mirror_pods
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The mirror pod the API server holds for static pod `pod`.
    pub fn mirror_pod_of(&self, pod: &Pod) -> Option<Arc<Pod>> {
        if !kubelet_container::pod::is_static_pod(pod) {
            return None;
        }
        self.mirror_map()
            .get(&kubelet_container::pod::pod_full_name(pod))
            .cloned()
    }

    /// The pod with `uid` the kubelet runs (mirror pods excepted), as its
    /// source last gave it (upstream `podManager.GetPodByUID`).
    pub fn pod_by_uid(&self, uid: &str) -> Option<Arc<Pod>> {
        self.pod_map().get(uid).cloned()
    }

    /// Whether any container of pod `uid` could still run (upstream
    /// `podWorkers.CouldHaveRunningContainers`).
    pub fn could_have_running_containers(&self, uid: &str) -> bool {
        self.workers.could_have_running_containers(uid)
    }

    /// Syncs every static pod that has no mirror pod yet, so that its
    /// mirror pod is created now. Upstream waits for the next periodic
    /// sync (up to `syncFrequency`, 1 min) once the Node exists; the
    /// builder calls this when the Node is registered, so mirror pods
    /// appear within seconds.
    pub fn sync_static_pods_without_mirror(&self) {
        let pods: Vec<Arc<Pod>> = self
            .pod_map()
            .values()
            .filter(|p| kubelet_container::pod::is_static_pod(p))
            .cloned()
            .collect();
        for pod in pods {
            if self.mirror_pod_of(&pod).is_none() {
                self.dispatch(UpdatePodOptions::sync(pod));
            }
        }
    }

    /// Hands `options` to the pod's worker, with the static pod's mirror
    /// pod (upstream `dispatchWork` with `podManager.GetMirrorPodByPod`).
    fn dispatch(&self, mut options: UpdatePodOptions) {
        if options.mirror_pod.is_none()
            && let Some(pod) = &options.pod
        {
            options.mirror_pod = self.mirror_pod_of(pod);
        }
        self.workers.update_pod(options);
    }

    /// Upstream `handleMirrorPod`: a mirror pod was added, changed or
    /// removed in the API server; its static pod is synced, which recreates
    /// or replaces it as needed. Mirror pods themselves never run.
    fn handle_mirror_pod(&self, mirror: &Pod, removed: bool) {
        let full_name = kubelet_container::pod::pod_full_name(mirror);
        {
            let mut mirrors = self.mirror_map();
            let same_uid = mirrors
                .get(&full_name)
                .is_some_and(|m| m.metadata.uid == mirror.metadata.uid);
            if removed {
                // A REMOVE of an older mirror pod leaves a newer one alone.
                if same_uid {
                    mirrors.remove(&full_name);
                }
            } else {
                mirrors.insert(full_name.clone(), Arc::new(mirror.clone()));
            }
        }
        let static_pod = self
            .pod_map()
            .values()
            .find(|p| {
                kubelet_container::pod::is_static_pod(p)
                    && kubelet_container::pod::pod_full_name(p) == full_name
            })
            .cloned();
        if let Some(pod) = static_pod {
            self.dispatch(UpdatePodOptions::sync(pod));
        }
    }

    /// Runs the sync loop until `shutdown` completes: config updates,
    /// lifecycle events (pod UIDs to sync) and housekeeping. Pods keep
    /// running when it returns, as upstream's kubelet leaves them on SIGTERM.
    pub async fn run(
        &self,
        updates: PodUpdates,
        events: tokio::sync::mpsc::Receiver<String>,
        sources_ready: Box<dyn Fn() -> bool + Send + Sync + '_>,
        shutdown: impl Future<Output = ()>,
    ) {
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let sources_ready = &*sources_ready;
        let sync_loop = async {
            self.sync_loop(updates, events, sources_ready, shutdown)
                .await;
            let _ = stop_tx.send(true);
        };
        // Container garbage collection beside the sync loop, as upstream's
        // `StartGarbageCollection` runs it in its own goroutine
        // (`pkg/kubelet/kubelet.go`): it removes terminated pods' dead
        // containers and sandboxes (`evictSandboxes`,
        // `pkg/kubelet/kuberuntime/kuberuntime_gc.go`), so a runtime call
        // that hangs there (a `RemovePodSandbox` that never answers) holds
        // up only the next collection, never the loop's config updates and
        // lifecycle events. Stopped with the sync loop: a call in flight is
        // dropped then, so nothing outlives `run`.
        let gc = async {
            if self.gc.is_none() {
                return;
            }
            let mut stop = stop_rx.clone();
            tokio::select! {
                _ = stop.wait_for(|s| *s) => {}
                () = self.gc_loop(sources_ready) => {}
            }
        };
        // The eviction manager's loop (upstream `evictionManager.Start`),
        // stopped with the sync loop.
        let eviction = async {
            let Some(manager) = self.eviction.clone() else {
                return;
            };
            let mut stop = stop_rx.clone();
            manager
                .run(
                    || self.active_pods(),
                    |pod| self.workers.is_pod_known_terminated(&uid_of(pod)),
                    async move {
                        let _ = stop.wait_for(|s| *s).await;
                    },
                )
                .await;
        };
        tokio::join!(sync_loop, eviction, gc);
    }

    /// Collects garbage at once, then `container_gc_period` after each
    /// pass ends, as upstream's `wait.Until` over `ContainerGCPeriod`
    /// (`StartGarbageCollection`). The first pass comes before the sources
    /// are ready, so it removes only what the per-container limits allow;
    /// a kubelet restarted more often than the period (the fault soak's
    /// short variant) still keeps crash loops' dead containers down.
    async fn gc_loop(&self, sources_ready: &(dyn Fn() -> bool + Send + Sync + '_)) {
        loop {
            self.garbage_collect(sources_ready()).await;
            tokio::time::sleep(self.config.container_gc_period).await;
        }
    }

    /// Pods admitted and not yet terminated (upstream `GetActivePods`).
    pub fn active_pods(&self) -> Vec<Pod> {
        let pods: Vec<Arc<Pod>> = self.pod_map().values().cloned().collect();
        pods.iter()
            .filter(|p| self.is_active(p))
            .map(|p| Pod::clone(p))
            .collect()
    }

    /// Upstream `filterOutInactivePods` (`pkg/kubelet/kubelet_pods.go`): a
    /// pod known terminated is inactive, and so is one in a terminal phase
    /// (in its config or as the kubelet recorded it: completed, evicted)
    /// unless it is still terminating, as it may still hold resources.
    fn is_active(&self, pod: &Pod) -> bool {
        let uid = uid_of(pod);
        if self.workers.is_pod_known_terminated(&uid) {
            return false;
        }
        let terminal = is_terminal(pod)
            || self.statuses.get(&uid).is_some_and(|s| {
                matches!(
                    s.phase.as_deref(),
                    Some(status::phase::SUCCEEDED | status::phase::FAILED)
                )
            });
        !terminal || self.workers.is_pod_termination_requested(&uid)
    }

    /// Records an eviction's status and kills the pod with its grace period
    /// (upstream `killPodNow` with the eviction's status function).
    fn evict(&self, ev: kubelet_eviction::manager::Eviction) {
        let uid = uid_of(&ev.pod);
        let pod = self
            .pod_map()
            .get(&uid)
            .cloned()
            .unwrap_or_else(|| Arc::new(ev.pod.clone()));
        let mut status = self.statuses.get(&uid).unwrap_or_default();
        ev.status.apply_to(&mut status);
        if let Err(e) = self.statuses.set_pod_status(&pod, status) {
            tracing::warn!(pod = ?pod.metadata.name, error = %e, "cannot record the evicted status");
        }
        tracing::warn!(pod = ?pod.metadata.name, grace = ev.grace_period_seconds, message = %ev.status.message, "evicting pod");
        let options = KillPodOptions {
            terminate: kubelet_podworkers::TerminatePodOptions {
                evict: true,
                grace_period_seconds_override: Some(ev.grace_period_seconds),
                ..Default::default()
            },
            ..Default::default()
        };
        self.workers
            .update_pod(UpdatePodOptions::kill(pod, options));
    }

    async fn sync_loop(
        &self,
        mut updates: PodUpdates,
        mut events: tokio::sync::mpsc::Receiver<String>,
        sources_ready: &(dyn Fn() -> bool + Send + Sync + '_),
        shutdown: impl Future<Output = ()>,
    ) {
        let mut evictions = self
            .evictions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        async fn next_eviction(
            rx: &mut Option<EvictionRequests>,
        ) -> Option<kubelet_eviction::manager::Eviction> {
            match rx {
                Some(rx) => rx.0.recv().await,
                None => std::future::pending().await,
            }
        }
        // Upstream `time.NewTicker(housekeepingPeriod)`: the first tick comes
        // one period after the loop starts, not at once (tokio's `interval`
        // would tick at once, racing the sources' first updates).
        let mut housekeeping = tokio::time::interval_at(
            tokio::time::Instant::now() + self.config.housekeeping_period,
            self.config.housekeeping_period,
        );
        housekeeping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(shutdown);
        // Probe results (upstream: the liveness, readiness and startup
        // managers' update channels in syncLoopIteration).
        let (mut liveness, mut readiness, mut startup) = match &self.prober {
            Some(p) => (
                Some(p.liveness().updates()),
                Some(p.readiness().updates()),
                Some(p.startup().updates()),
            ),
            None => (None, None, None),
        };
        async fn next_update(
            rx: &mut Option<tokio::sync::mpsc::UnboundedReceiver<kubelet_prober::results::Update>>,
        ) -> Option<kubelet_prober::results::Update> {
            match rx {
                Some(rx) => rx.recv().await,
                None => std::future::pending().await,
            }
        }
        loop {
            *self
                .sync_loop_entered
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = Some(std::time::Instant::now());
            tokio::select! {
                Some(u) = next_update(&mut liveness) => {
                    if u.result == kubelet_prober::ProbeResult::Failure {
                        tracing::info!(pod = %u.pod_uid, container = %u.container_id, "liveness probe failed: syncing the pod");
                        self.handle_event(&u.pod_uid);
                    }
                }
                Some(u) = next_update(&mut readiness) => {
                    tracing::debug!(pod = %u.pod_uid, container = %u.container_id, result = ?u.result, "readiness changed");
                    self.handle_event(&u.pod_uid);
                }
                Some(ev) = next_eviction(&mut evictions) => self.evict(ev),
                Some(u) = next_update(&mut startup) => {
                    tracing::debug!(pod = %u.pod_uid, container = %u.container_id, result = ?u.result, "startup changed");
                    self.handle_event(&u.pod_uid);
                }
                update = updates.recv() => match update {
                    Some(update) => self.handle_update(update),
                    None => {
                        tracing::warn!("pod config closed: stopping the sync loop");
                        return;
                    }
                },
                Some(uid) = events.recv() => self.handle_event(&uid),
                _ = housekeeping.tick() => {
                    if sources_ready() {
                        self.handle_pod_cleanups().await;
                    }
                }
                () = &mut shutdown => {
                    tracing::info!("shutting down the sync loop; pods keep running");
                    return;
                }
            }
        }
    }

    /// Dispatches one config update (upstream `syncLoopIteration`), then
    /// counts its source as seen ([`Kubelet::sources_seen`]).
    pub fn handle_update(&self, update: PodUpdate) {
        tracing::debug!(op = %update.op, source = %update.source, pods = update.pods.len(), "pod config update");
        let source = update.source;
        match update.op {
            PodOperation::Add => self.handle_pod_additions(update.pods),
            PodOperation::Update | PodOperation::Delete => self.handle_pod_updates(update.pods),
            PodOperation::Remove => self.handle_pod_removes(update.pods),
            PodOperation::Reconcile => self.handle_pod_reconcile(update.pods),
            PodOperation::Set => tracing::warn!("SET updates are not supported (as upstream)"),
        }
        // Upstream `kl.sourcesReady.AddSource(u.Source)`, only once the
        // handler ran: "It is important that this takes place only after
        // kubelet calls the update handler to process the update to ensure
        // the internal pod cache is up-to-date" (`pkg/kubelet/kubelet.go`).
        self.sources_seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(source);
    }

    /// The sources whose updates this kubelet has handled. Give it to
    /// `PodConfig::seen_all_sources` to decide whether every source is
    /// ready (upstream `config.NewSourcesReady(podCfg.SeenAllSources)`):
    /// the merger alone having seen a source is not enough, since its
    /// pods may still wait in the update channel, and housekeeping would
    /// then kill them as unknown.
    pub fn sources_seen(&self) -> HashSet<String> {
        self.sources_seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Upstream `HandlePodAdditions`: oldest first, admitted, then created.
    pub fn handle_pod_additions(&self, mut pods: Vec<Pod>) {
        pods.sort_by(|a, b| {
            let t = |p: &Pod| p.metadata.creation_timestamp.as_ref().map(|t| t.0);
            t(a).cmp(&t(b))
        });
        for pod in pods {
            if kubelet_container::pod::is_mirror_pod(&pod) {
                self.handle_mirror_pod(&pod, false);
                continue;
            }
            let uid = uid_of(&pod);
            let pod = Arc::new(pod);
            // Upstream counts only active pods: completed or evicted ones
            // free their slot.
            let existing: Vec<Arc<Pod>> = self.pod_map().values().cloned().collect();
            let active: Vec<&Pod> = existing
                .iter()
                .filter(|p| self.is_active(p))
                .map(|p| p.as_ref())
                .collect();
            self.pod_map().insert(uid.clone(), pod.clone());
            if !is_terminal(&pod)
                && pod.metadata.deletion_timestamp.is_none()
                && let Err(reason) = self.admit(&pod, &active)
            {
                self.reject(&pod, &reason);
                continue;
            }
            if let Some(prober) = &self.prober {
                prober.add_pod(&pod);
            }
            self.dispatch(UpdatePodOptions::create(pod));
        }
    }

    /// Upstream's admit handlers (`canAdmitPod` over `admitHandlers`, in
    /// upstream's order): the predicate handler first (pod count,
    /// resources against allocatable, host ports, `NoExecute` taints;
    /// [`admission`]), then node pressure (eviction), then sysctls (only
    /// the safe ones, [`admission::admit_sysctls`]), then the topology,
    /// CPU and memory managers. `others` are the active pods.
    fn admit(&self, pod: &Pod, others: &[&Pod]) -> Result<(), String> {
        let allocatable = self
            .cm
            .as_ref()
            .map(|cm| cm.node_allocatable())
            .unwrap_or_default();
        let node = self.node.as_ref().and_then(|n| n.borrow().clone());
        let taints = node
            .as_ref()
            .and_then(|n| n.spec.as_ref())
            .and_then(|s| s.taints.as_deref())
            .unwrap_or_default();
        admission::admit(
            pod,
            others,
            &admission::NodeFit {
                allocatable: &allocatable,
                max_pods: self.config.max_pods,
                taints,
            },
        )
        .map_err(|r| r.to_string())?;
        if let Some(eviction) = &self.eviction {
            // Upstream's eviction admit handler: no new pods (BestEffort
            // ones under memory pressure) while the node is under pressure.
            let r = eviction.admit(pod);
            if !r.admit {
                return Err(format!("{}: {}", r.reason, r.message));
            }
        }
        // Upstream's sysctl admit handler: only the safe sysctls.
        admission::admit_sysctls(pod).map_err(|r| r.to_string())?;
        if let Some(cm) = &self.cm {
            // Topology, CPU and memory managers (upstream's allocate-resources
            // admit handler): their own reason (`TopologyAffinityError`, ...),
            // any other error as upstream's `GetPodAdmitResult` wraps it.
            cm.admit(pod).map_err(|e| match e {
                kubelet_cm::Error::Admission { reason, message } => format!("{reason}: {message}"),
                e => format!(
                    "UnexpectedAdmissionError: Allocate failed due to {e}, which is unexpected"
                ),
            })?;
        }
        Ok(())
    }

    fn reject(&self, pod: &Pod, reason: &str) {
        tracing::warn!(pod = ?pod.metadata.name, reason, "pod rejected at admission");
        let (kind, message) = reason.split_once(": ").unwrap_or(("Rejected", reason));
        self.events.event(
            &kubelet_container::events::pod_ref(pod),
            kubelet_container::events::EventType::Warning,
            kind,
            message.to_owned(),
        );
        // Upstream `rejectPod` (`pkg/kubelet/kubelet.go`): a Warning event,
        // and the API shows the pod Failed with the admission's reason.
        let rejected = k8s_openapi::api::core::v1::PodStatus {
            phase: Some(status::phase::FAILED.into()),
            reason: Some(kind.into()),
            message: Some(format!("Pod was rejected: {message}")),
            qos_class: Some(kubelet_container::qos::pod_qos_class(pod).as_str().into()),
            ..Default::default()
        };
        if let Err(e) = self.statuses.set_pod_status(pod, rejected) {
            tracing::warn!(pod = ?pod.metadata.name, error = %e, "cannot record the rejection");
        }
        self.pod_map().remove(&uid_of(pod));
    }

    /// Upstream `HandlePodUpdates`.
    pub fn handle_pod_updates(&self, pods: Vec<Pod>) {
        for pod in pods {
            if kubelet_container::pod::is_mirror_pod(&pod) {
                self.handle_mirror_pod(&pod, false);
                continue;
            }
            let pod = Arc::new(pod);
            self.pod_map().insert(uid_of(&pod), pod.clone());
            self.dispatch(UpdatePodOptions::update(pod));
        }
    }

    /// Upstream `HandlePodRemoves`: forget the pod and kill it.
    pub fn handle_pod_removes(&self, pods: Vec<Pod>) {
        for pod in pods {
            if kubelet_container::pod::is_mirror_pod(&pod) {
                self.handle_mirror_pod(&pod, true);
                continue;
            }
            let uid = uid_of(&pod);
            let pod = self.pod_map().remove(&uid).unwrap_or_else(|| Arc::new(pod));
            tracing::info!(pod = ?pod.metadata.name, %uid, "pod removed from its source: killing it");
            self.dispatch(UpdatePodOptions::kill(pod, KillPodOptions::default()));
        }
    }

    /// Upstream `HandlePodReconcile`: a status-only change.
    pub fn handle_pod_reconcile(&self, pods: Vec<Pod>) {
        for pod in pods {
            if kubelet_container::pod::is_mirror_pod(&pod) {
                self.mirror_map()
                    .insert(kubelet_container::pod::pod_full_name(&pod), Arc::new(pod));
                continue;
            }
            // Upstream `HandlePodReconcile`: a status change from the API
            // that leaves the Ready condition at odds with the readiness
            // gates (another writer set a gate's condition) syncs the pod
            // now, not at its next periodic sync.
            let reconcile = kubelet_status::need_to_reconcile_pod_readiness(&pod);
            let pod = Arc::new(pod);
            self.pod_map().insert(uid_of(&pod), Arc::clone(&pod));
            if reconcile {
                self.dispatch(UpdatePodOptions::sync(pod));
            }
        }
    }

    /// A lifecycle event for `uid`: sync the pod, if we know it.
    pub fn handle_event(&self, uid: &str) {
        let pod = self.pod_map().get(uid).cloned();
        if let Some(pod) = pod {
            self.dispatch(UpdatePodOptions::sync(pod));
        }
    }

    /// One container garbage collection pass (upstream
    /// `StartGarbageCollection`'s container half).
    pub async fn garbage_collect(&self, all_sources_ready: bool) {
        let Some(manager) = &self.gc else { return };
        match manager
            .garbage_collect(self.config.gc_policy, all_sources_ready, false, self)
            .await
        {
            Ok(r) if !r.containers.is_empty() || !r.sandboxes.is_empty() => tracing::info!(
                containers = r.containers.len(),
                sandboxes = r.sandboxes.len(),
                log_dirs = r.log_dirs.len(),
                "garbage collected"
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "container garbage collection failed"),
        }
    }

    /// Upstream `HandlePodCleanups`: forget finished workers, kill runtime
    /// pods nobody knows, and remove what terminated pods left behind.
    pub async fn handle_pod_cleanups(&self) {
        let desired: HashSet<String> = self.pod_map().keys().cloned().collect();
        if let Some(cm) = &self.cm {
            let active: Vec<Pod> = self
                .pod_map()
                .values()
                .filter(|p| !self.workers.is_pod_known_terminated(&uid_of(p)))
                .map(|p| Pod::clone(p))
                .collect();
            if let Err(e) = cm.update_qos_cgroups(&active) {
                tracing::warn!(error = %e, "cannot update the QoS cgroups");
            }
        }
        let known = self.workers.sync_known_pods(&desired);
        // Upstream `HandlePodCleanups` (`pkg/kubelet/kubelet_pods.go`): an
        // active pod the workers do not know was killed and created again
        // with the same UID while its worker was terminating it — a static
        // pod whose manifest was removed and put back (same content, same
        // UID). `sync_known_pods` has just forgotten that worker; the pod
        // starts again as created.
        let restartable: Vec<Arc<Pod>> = {
            let pods: Vec<Arc<Pod>> = self.pod_map().values().cloned().collect();
            pods.into_iter()
                .filter(|p| !known.contains_key(&uid_of(p)) && self.is_active(p))
                .collect()
        };
        for pod in restartable {
            tracing::info!(pod = ?pod.metadata.name, uid = %uid_of(&pod), "pod will be restarted: desired and not known to the pod workers (likely a reused UID)");
            self.dispatch(UpdatePodOptions::create(pod));
        }
        if let Some(prober) = &self.prober {
            prober.cleanup_pods(desired.iter());
        }
        self.delete_orphaned_mirror_pods().await;
        let runtime_pods = match self.runtime.get_pods(true).await {
            Ok(pods) => pods,
            Err(e) => {
                tracing::warn!(error = %e, "housekeeping: cannot list runtime pods");
                return;
            }
        };
        if let Some(metrics) = &self.metrics {
            let running: Vec<_> = runtime_pods.iter().filter(|p| p.is_running()).collect();
            metrics.set_running_pods(i64::try_from(running.len()).unwrap_or(i64::MAX));
            use kubelet_kuberuntime::ContainerState as S;
            use kubelet_server::ContainerStateLabel as L;
            let mut counts = [0i64; 4];
            for c in runtime_pods.iter().flat_map(|p| &p.containers) {
                counts[match c.state {
                    S::Created => 0,
                    S::Running => 1,
                    S::Exited => 2,
                    _ => 3,
                }] += 1;
            }
            for (label, n) in [L::Created, L::Running, L::Exited, L::Unknown]
                .into_iter()
                .zip(counts)
            {
                metrics.set_running_containers(label, n);
            }
        }
        // Runtime pods nobody knows that still run are killed through the
        // pod workers. What terminated pods leave in the runtime (dead
        // containers, stopped sandboxes) is not removed here: upstream's
        // `HandlePodCleanups` (`pkg/kubelet/kubelet_pods.go`) leaves it to
        // the container garbage collector, which runs in its own task
        // (`Kubelet::run`); a hung `RemovePodSandbox` here would stall the
        // whole sync loop until the call timed out.
        for pod in &runtime_pods {
            if desired.contains(&pod.uid) || known.contains_key(&pod.uid) || !pod.is_running() {
                continue;
            }
            tracing::info!(pod = %pod.name, uid = %pod.uid, "runtime pod unknown to the kubelet: killing it");
            self.workers
                .update_pod(UpdatePodOptions::kill_runtime_pod(RuntimePod::new(
                    pod.uid.clone(),
                    pod.name.clone(),
                    pod.namespace.clone(),
                )));
        }
        // Directories of pods that are neither desired, known nor running
        // in the runtime (upstream `cleanupOrphanedPodDirs`), and with them
        // the pods' statuses. As upstream's, "in the runtime" means running
        // (`runtimeCache.GetPods` lists with `all = false`): a terminated
        // pod's dead containers and stopped sandbox, which the container GC
        // removes a minute or more later, do not keep its directory and
        // cgroups (the fault soak counted them as leaks past 30 s).
        let in_runtime: HashSet<&str> = runtime_pods
            .iter()
            .filter(|p| p.is_running())
            .map(|p| p.uid.as_str())
            .collect();
        let orphaned = |uid: &str| {
            !desired.contains(uid) && !known.contains_key(uid) && !in_runtime.contains(uid)
        };
        if let Ok(entries) = std::fs::read_dir(self.config.root_dir.join("pods")) {
            for entry in entries.flatten() {
                let uid = entry.file_name().to_string_lossy().into_owned();
                if !orphaned(&uid) {
                    continue;
                }
                match volumes::remove_pod_dir(&self.config.root_dir, &uid) {
                    Ok(()) => {
                        tracing::info!(%uid, "removed a terminated pod's directory");
                        self.statuses.remove(&uid);
                    }
                    Err(e) => {
                        tracing::warn!(%uid, error = %e, "cannot remove an orphaned pod directory");
                    }
                }
            }
        }
        // Upstream `cleanupOrphanedPodCgroups`: the cgroups of pods that are
        // neither desired, known nor in the runtime. A pod whose termination
        // a kubelet restart interrupted, or that left while the kubelet was
        // down, has no worker to remove its cgroup (the fault soak found
        // such cgroups left for good). As upstream, not while the pod's
        // directory (its volumes) still exists.
        if let Some(cm) = &self.cm {
            match cm.pod_cgroups() {
                Ok(cgroups) => {
                    for (uid, name) in cgroups {
                        if !orphaned(&uid) || self.config.root_dir.join("pods").join(&uid).exists()
                        {
                            continue;
                        }
                        match cm.destroy_orphaned_pod_cgroup(&name) {
                            Ok(()) => {
                                tracing::info!(%uid, cgroup = %name, "removed an orphaned pod cgroup");
                            }
                            Err(e) => {
                                tracing::warn!(%uid, error = %e, "cannot remove an orphaned pod cgroup");
                            }
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot list the pod cgroups"),
            }
        }
    }
}

impl<C> Kubelet<C>
where
    C: PodStatusCache<Status = Arc<PodStatus>>,
{
    /// Upstream `deleteOrphanedMirrorPods`: mirror pods whose static pod is
    /// gone are deleted, unless the static pod's worker is still
    /// terminating it.
    async fn delete_orphaned_mirror_pods(&self) {
        let Some(client) = &self.mirror_client else {
            return;
        };
        let statics: HashSet<String> = self
            .pod_map()
            .values()
            .filter(|p| kubelet_container::pod::is_static_pod(p))
            .map(|p| kubelet_container::pod::pod_full_name(p))
            .collect();
        let orphans: Vec<Arc<Pod>> = self
            .mirror_map()
            .iter()
            .filter(|(name, _)| !statics.contains(*name))
            .map(|(_, p)| p.clone())
            .collect();
        for mirror in orphans {
            let full_name = kubelet_container::pod::pod_full_name(&mirror);
            if self
                .workers
                .is_pod_for_mirror_pod_terminating_by_full_name(&full_name)
            {
                continue;
            }
            if let Err(e) = client
                .delete_mirror_pod(&full_name, mirror.metadata.uid.as_deref())
                .await
            {
                tracing::warn!(error = %e, "cannot delete an orphaned mirror pod");
            }
        }
    }
}

/// What garbage collection may remove, from the pod manager and the pod
/// workers (upstream's pod workers are the kubelet's `podStateProvider`).
impl<C> PodStateProvider for Kubelet<C>
where
    C: PodStatusCache<Status = Arc<PodStatus>>,
{
    fn should_pod_content_be_removed(&self, uid: &str) -> bool {
        Kubelet::should_pod_content_be_removed(self, uid)
    }

    fn should_pod_runtime_be_removed(&self, uid: &str) -> bool {
        self.workers.should_pod_runtime_be_removed(uid)
    }
}

/// The kubelet's pods as the status syncer reads them (upstream
/// `status.PodManager` and `PodDeletionSafetyProvider`, answered by the pod
/// manager and the pod workers).
pub struct StatusSyncPods<C>(pub Arc<Kubelet<C>>)
where
    C: PodStatusCache<Status = Arc<PodStatus>>;

impl<C> kubelet_status::PodManager for StatusSyncPods<C>
where
    C: PodStatusCache<Status = Arc<PodStatus>> + Send + Sync + 'static,
{
    fn pod_by_uid(&self, uid: &str) -> Option<Pod> {
        self.0.pod_by_uid(uid).map(|p| Pod::clone(&p))
    }

    fn mirror_pod_by_pod(&self, pod: &Pod) -> Option<Pod> {
        self.0.mirror_pod_of(pod).map(|p| Pod::clone(&p))
    }
}

impl<C> kubelet_status::PodDeletionSafetyProvider for StatusSyncPods<C>
where
    C: PodStatusCache<Status = Arc<PodStatus>> + Send + Sync + 'static,
{
    fn pod_could_have_running_containers(&self, pod: &Pod) -> bool {
        self.0.could_have_running_containers(&uid_of(pod))
    }
}
