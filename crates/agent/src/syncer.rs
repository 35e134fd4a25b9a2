//! [`KubeletSyncer`]: the four sync functions the pod workers drive.
//!
//! Mirrors upstream `(*Kubelet).SyncPod`, `SyncTerminatingPod`,
//! `SyncTerminatingRuntimePod` and `SyncTerminatedPod`
//! (`pkg/kubelet/kubelet.go`): compute the API status, stop at a terminal
//! phase, prepare the pod's directories and volumes, then let the runtime
//! manager bring the containers to the spec.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use kubelet_cm::ContainerManager;
use kubelet_container::events::{EventRecorder, EventType, pod_ref, reason};

use async_trait::async_trait;
use k8s_openapi::api::core::v1::Pod;
use kubelet_kuberuntime::{PodStatus, Runtime, pod_name};
use kubelet_podworkers::{
    Error as WorkerError, PodSyncer, RuntimePod, SyncContext, SyncPodOutcome, SyncPodType,
    TerminatePodOptions,
};

use crate::status::{StatusManager, generate_api_pod_status_with, phase};
use crate::volumes::{VolumeContext, prepare_pod_volumes};
use kubelet_server::PodWorkerOperation;

/// The kubelet's pod syncer.
pub struct KubeletSyncer {
    runtime: Arc<dyn Runtime>,
    statuses: Arc<StatusManager>,
    root_dir: PathBuf,
    cm: Option<Arc<dyn ContainerManager>>,
    prober: Option<Arc<kubelet_prober::Manager>>,
    metrics: Option<kubelet_server::Metrics>,
    /// The runtime's name, the type of the API's container IDs.
    runtime_name: String,
    /// When each pod was first synced, until it first ran (for
    /// `kubelet_pod_start_duration_seconds`).
    first_seen: std::sync::Mutex<HashMap<String, std::time::Instant>>,
    /// Mirror pods for static pods (cluster mode).
    mirror_client: Option<Arc<dyn crate::mirror::MirrorClient>>,
    node_ips: Vec<std::net::IpAddr>,
    /// Secret, configMap and projected volumes (cluster mode).
    api_volumes: Option<Arc<kubelet_volumemanager::ApiVolumes>>,
    /// The cluster's Services, for the service environment variables
    /// (cluster mode).
    services: Option<crate::services::ServiceLister>,
    /// Where pod events (`FailedMount`) are recorded.
    events: EventSlot,
}

/// An [`EventRecorder`] that can be pointed elsewhere after it was handed
/// out: the syncer moves into the pod workers when the kubelet is built,
/// and `Kubelet::with_event_recorder` sets its recorder afterwards.
#[derive(Clone)]
pub(crate) struct EventSlot(Arc<std::sync::RwLock<Arc<dyn EventRecorder>>>);

impl Default for EventSlot {
    fn default() -> Self {
        Self(Arc::new(std::sync::RwLock::new(Arc::new(
            kubelet_container::events::NoopRecorder,
        ))))
    }
}

impl EventSlot {
    /// Records into `events` from now on.
    pub(crate) fn set(&self, events: Arc<dyn EventRecorder>) {
        *self
            .0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = events;
    }

    fn get(&self) -> Arc<dyn EventRecorder> {
        self.0
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

impl std::fmt::Debug for KubeletSyncer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeletSyncer")
            .field("root_dir", &self.root_dir)
            .finish_non_exhaustive()
    }
}

fn worker_error(e: impl std::error::Error + Send + Sync + 'static) -> WorkerError {
    WorkerError::Sync(Box::new(e))
}

/// The waiting reason a sync error gives a container (upstream's
/// `ErrImagePull`, `ErrImageNeverPull`, `CreateContainerError`, ...).
fn waiting_reason(e: &kubelet_kuberuntime::Error) -> Option<(String, &'static str)> {
    use kubelet_kuberuntime::Error as E;
    match e {
        E::CreateContainerConfig { container, .. } => {
            Some((container.clone(), "CreateContainerConfigError"))
        }
        E::EphemeralContainerConfig { container, .. } => {
            Some((container.clone(), "CreateContainerConfigError"))
        }
        E::CreateContainer { container, .. } => Some((container.clone(), "CreateContainerError")),
        E::StartContainer { container, .. } => Some((container.clone(), "RunContainerError")),
        E::CrashLoopBackOff { container, .. } => Some((container.clone(), "CrashLoopBackOff")),
        E::PostStartHook { container, .. } => Some((container.clone(), "PostStartHookError")),
        _ => None,
    }
}

impl KubeletSyncer {
    /// A syncer over `runtime`, recording statuses in `statuses`, with pod
    /// directories under `root_dir` (upstream `--root-dir`) and, with `cm`,
    /// pod cgroups made and removed by the container manager.
    pub fn new(
        runtime: Arc<dyn Runtime>,
        statuses: Arc<StatusManager>,
        root_dir: PathBuf,
        cm: Option<Arc<dyn ContainerManager>>,
    ) -> Self {
        Self {
            runtime,
            statuses,
            root_dir,
            cm,
            prober: None,
            metrics: None,
            runtime_name: crate::DEFAULT_RUNTIME_NAME.to_owned(),
            first_seen: std::sync::Mutex::new(HashMap::new()),
            mirror_client: None,
            node_ips: Vec::new(),
            api_volumes: None,
            services: None,
            events: EventSlot::default(),
        }
    }

    /// Records pod events (`FailedMount`) in `events`.
    pub fn with_event_recorder(self, events: Arc<dyn EventRecorder>) -> Self {
        self.events.set(events);
        self
    }

    /// The slot the syncer records in, to point it elsewhere once the
    /// syncer is in the pod workers.
    pub(crate) fn event_slot(&self) -> EventSlot {
        self.events.clone()
    }

    /// Upstream's `FailedMount` Warning on the pod for a volume that could
    /// not be set up (`MountVolume.SetUp failed for volume "x" : secret
    /// "y" not found`) or volumes that could not be prepared. Recorded on
    /// each failed sync, as upstream's volume manager does on each failed
    /// try; the event correlator counts the repeats.
    fn record_failed_mount(&self, pod: &Pod, e: &kubelet_volumemanager::Error) {
        self.events.get().event(
            &pod_ref(pod),
            EventType::Warning,
            reason::FAILED_MOUNT_VOLUME,
            e.mount_event_message(),
        );
    }

    /// Sets the containers' `ready` and `started` from `prober`'s results,
    /// and stops its workers when pods terminate.
    pub fn with_prober(mut self, prober: Arc<kubelet_prober::Manager>) -> Self {
        self.prober = Some(prober);
        self
    }

    /// Names the runtime in the API's container IDs (`<name>://<id>`): what
    /// its CRI `Version` reports.
    pub fn with_runtime_name(mut self, name: impl Into<String>) -> Self {
        self.runtime_name = name.into();
        self
    }

    /// The node's addresses, reported as each pod's `hostIP`/`hostIPs`;
    /// a `hostNetwork` pod's own IPs are these too (upstream
    /// `generateAPIPodStatus`).
    pub fn with_node_ips(mut self, ips: Vec<std::net::IpAddr>) -> Self {
        self.node_ips = ips;
        self
    }

    /// Records pod worker and pod start durations in `metrics`.
    pub fn with_metrics(mut self, metrics: kubelet_server::Metrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Writes secret, configMap and projected volumes (service account
    /// tokens included) from the API server before each sync.
    pub fn with_api_volumes(mut self, volumes: Arc<kubelet_volumemanager::ApiVolumes>) -> Self {
        self.api_volumes = Some(volumes);
        self
    }

    /// Gives containers the service environment variables of `services`.
    pub fn with_services(mut self, services: crate::services::ServiceLister) -> Self {
        self.services = Some(services);
        self
    }

    /// Keeps static pods' mirror pods in the API server (cluster mode).
    pub fn with_mirror_client(mut self, client: Arc<dyn crate::mirror::MirrorClient>) -> Self {
        self.mirror_client = Some(client);
        self
    }

    /// Upstream `SyncPod`'s mirror pod step: a mirror pod being deleted or
    /// of another version of the static pod is deleted (UID precondition),
    /// and a missing one is created. Failures are logged, never fatal to
    /// the pod's sync, as upstream.
    async fn sync_mirror_pod(&self, pod: &Pod, mirror: Option<&Pod>) {
        let Some(client) = &self.mirror_client else {
            return;
        };
        if !kubelet_container::pod::is_static_pod(pod) {
            return;
        }
        let mut deleted = false;
        if let Some(m) = mirror
            && (m.metadata.deletion_timestamp.is_some() || !crate::mirror::is_mirror_pod_of(m, pod))
        {
            let full_name = kubelet_container::pod::pod_full_name(pod);
            tracing::info!(pod = %pod_name(pod), "deleting an outdated mirror pod");
            match client
                .delete_mirror_pod(&full_name, m.metadata.uid.as_deref())
                .await
            {
                Ok(d) => deleted = d,
                Err(e) => tracing::warn!(error = %e, "cannot delete the mirror pod"),
            }
        }
        if mirror.is_none() || deleted {
            if let Err(e) = client.create_mirror_pod(pod).await {
                tracing::warn!(error = %e, "cannot create the mirror pod");
            } else {
                tracing::debug!(pod = %pod_name(pod), "mirror pod created");
            }
        }
    }

    fn record(&self, pod: &Pod, status: &PodStatus, waiting: &HashMap<String, String>) -> String {
        self.record_with_messages(pod, status, waiting, &HashMap::new())
    }

    /// [`Self::record`], with the waiting message of some containers
    /// (upstream's reason cache keeps the sync error's message beside its
    /// reason: `secret "x" not found` for `CreateContainerConfigError`).
    fn record_with_messages(
        &self,
        pod: &Pod,
        status: &PodStatus,
        waiting: &HashMap<String, String>,
        messages: &HashMap<String, String>,
    ) -> String {
        let uid = pod.metadata.uid.as_deref().unwrap_or_default();
        // Upstream `generateAPIPodStatus` starts from the status manager's
        // status, else the pod's.
        let old = self.statuses.get(uid).or_else(|| pod.status.clone());
        let mut api = generate_api_pod_status_with(pod, status, waiting, &self.runtime_name, |s| {
            if let Some(old) = &old {
                crate::status::apply_old_container_statuses(s, old, status);
            }
            if let Some(prober) = &self.prober {
                prober.update_pod_status(pod, s);
            }
            let all = s
                .init_container_statuses
                .iter_mut()
                .flatten()
                .chain(s.container_statuses.iter_mut().flatten())
                .chain(s.ephemeral_container_statuses.iter_mut().flatten());
            for c in all {
                if let (Some(message), Some(w)) = (
                    messages.get(&c.name),
                    c.state.as_mut().and_then(|st| st.waiting.as_mut()),
                ) {
                    w.message = Some(message.clone());
                }
            }
        });
        if !self.node_ips.is_empty() {
            use k8s_openapi::api::core::v1::{HostIP, PodIP};
            let ips: Vec<String> = self.node_ips.iter().map(ToString::to_string).collect();
            api.host_ip = ips.first().cloned();
            api.host_ips = Some(ips.iter().map(|ip| HostIP { ip: ip.clone() }).collect());
            let host_network = pod
                .spec
                .as_ref()
                .and_then(|s| s.host_network)
                .unwrap_or(false);
            if host_network {
                api.pod_ip = ips.first().cloned();
                api.pod_ips = Some(ips.iter().map(|ip| PodIP { ip: ip.clone() }).collect());
            }
        }
        if let Some(metrics) = &self.metrics {
            let mut seen = self
                .first_seen
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if api.phase.as_deref() == Some(phase::RUNNING) {
                if let Some(t) = seen.remove(uid) {
                    metrics.observe_pod_start_duration(t.elapsed().as_secs_f64());
                }
            } else if api.phase.as_deref() == Some(phase::PENDING) {
                seen.entry(uid.to_owned())
                    .or_insert_with(std::time::Instant::now);
            }
        }
        let summary = |s: &k8s_openapi::api::core::v1::PodStatus| {
            let containers: Vec<String> = s
                .container_statuses
                .iter()
                .flatten()
                .map(|c| {
                    let state = c.state.as_ref();
                    let what = if state.and_then(|x| x.running.as_ref()).is_some() {
                        "running".to_owned()
                    } else if let Some(t) = state.and_then(|x| x.terminated.as_ref()) {
                        format!("exited {}", t.exit_code)
                    } else {
                        state
                            .and_then(|x| x.waiting.as_ref())
                            .and_then(|w| w.reason.clone())
                            .unwrap_or_else(|| "waiting".into())
                    };
                    format!("{}={what} restarts={}", c.name, c.restart_count)
                })
                .collect();
            (s.phase.clone().unwrap_or_default(), containers.join(" "))
        };
        let before = self.statuses.get(uid).map(|s| summary(&s));
        let api = match self.statuses.set_pod_status(pod, api) {
            Ok(api) => api,
            Err(e) => {
                tracing::warn!(pod = %pod_name(pod), error = %e, "status not recorded");
                self.statuses.get(uid).unwrap_or_default()
            }
        };
        let after = summary(&api);
        if before.as_ref() != Some(&after) {
            tracing::info!(pod = %pod_name(pod), phase = %after.0, containers = %after.1, "pod status");
        }
        api.phase.unwrap_or_default()
    }
}

#[async_trait]
impl PodSyncer for KubeletSyncer {
    type Status = Arc<PodStatus>;

    async fn sync_pod(
        &self,
        ctx: &SyncContext,
        update_type: SyncPodType,
        pod: &Pod,
        mirror_pod: Option<&Pod>,
        status: &Self::Status,
    ) -> Result<SyncPodOutcome, WorkerError> {
        let started = std::time::Instant::now();
        self.sync_mirror_pod(pod, mirror_pod).await;
        let result = self.sync_pod_inner(ctx, pod, status).await;
        if let Some(metrics) = &self.metrics {
            let op = match update_type {
                SyncPodType::Create => PodWorkerOperation::Create,
                SyncPodType::Update => PodWorkerOperation::Update,
                SyncPodType::Kill => PodWorkerOperation::Kill,
                _ => PodWorkerOperation::Sync,
            };
            metrics.observe_pod_worker_duration(op, started.elapsed().as_secs_f64());
        }
        result
    }

    async fn sync_terminating_pod(
        &self,
        _ctx: &SyncContext,
        pod: &Pod,
        status: &Self::Status,
        grace_period_seconds: i64,
        _options: Option<&TerminatePodOptions>,
    ) -> Result<(), WorkerError> {
        tracing::info!(pod = %pod_name(pod), grace_period_seconds, "terminating pod");
        // Upstream: liveness and startup probes stop when termination starts.
        if let Some(prober) = &self.prober {
            prober.stop_liveness_and_startup(pod);
        }
        let running = status.to_running_pod();
        self.runtime
            .kill_pod(Some(pod), &running, Some(grace_period_seconds))
            .await
            .map_err(worker_error)?;
        // Upstream `SyncTerminatingPod` (`pkg/kubelet/kubelet.go`): the kill
        // went by the cached status, which may be stale (a relist that could
        // not inspect the pod); the runtime is asked again, and a container
        // still running fails the sync, to be retried, rather than the pod
        // counting as terminated (a static pod's next UID would then start
        // beside it).
        let uid = pod.metadata.uid.as_deref().unwrap_or_default();
        let stopped = self
            .runtime
            .get_pod_status(
                uid,
                pod.metadata.name.as_deref().unwrap_or_default(),
                pod.metadata.namespace.as_deref().unwrap_or_default(),
            )
            .await
            .map_err(worker_error)?;
        let still: Vec<String> = stopped
            .container_statuses
            .iter()
            .filter(|c| c.state == kubelet_kuberuntime::ContainerState::Running)
            .map(|c| c.id.clone())
            .collect();
        if !still.is_empty() {
            return Err(worker_error(crate::Error::RunningAfterKill {
                pod: pod_name(pod),
                containers: still,
            }));
        }
        Ok(())
    }

    async fn sync_terminating_runtime_pod(
        &self,
        _ctx: &SyncContext,
        running_pod: &RuntimePod,
    ) -> Result<(), WorkerError> {
        let pods = self.runtime.get_pods(true).await.map_err(worker_error)?;
        if let Some(found) = pods.into_iter().find(|p| p.uid == running_pod.uid) {
            tracing::info!(pod = %found.name, uid = %found.uid, "killing orphaned runtime pod");
            self.runtime
                .kill_pod(None, &found, None)
                .await
                .map_err(worker_error)?;
        }
        Ok(())
    }

    async fn sync_terminated_pod(
        &self,
        _ctx: &SyncContext,
        pod: &Pod,
        status: &Self::Status,
    ) -> Result<(), WorkerError> {
        self.record(pod, status, &HashMap::new());
        if let Some(prober) = &self.prober {
            prober.remove_pod(pod);
        }
        if let Err(e) = crate::volumes::unmount_pod_volumes(
            &self.root_dir,
            pod.metadata.uid.as_deref().unwrap_or_default(),
        ) {
            tracing::warn!(pod = %pod_name(pod), error = %e, "cannot unmount the volumes of a terminated pod");
        }
        // Upstream removes the pod cgroup once nothing runs in it; an error
        // (a process still there) makes the worker retry.
        if let Some(cm) = &self.cm {
            cm.destroy_pod_cgroup(pod).map_err(worker_error)?;
        }
        if let Some(api_volumes) = &self.api_volumes {
            api_volumes.forget_pod(pod.metadata.uid.as_deref().unwrap_or_default());
            // Upstream `SyncTerminatedPod`: once the volumes are gone, the
            // secret and configMap managers drop the pod's references.
            api_volumes.api().unregister_pod(pod);
        }
        // Upstream `SyncTerminatedPod` ends with `statusManager.TerminatePod`:
        // the final status, marked finished, which lets the status syncer
        // delete a pod with a deletion timestamp from the API server.
        if let Err(e) = self.statuses.terminate_pod(pod) {
            tracing::warn!(pod = %pod_name(pod), error = %e, "cannot record the final status");
        }
        tracing::info!(pod = %pod_name(pod), "pod terminated");
        Ok(())
    }
}

impl KubeletSyncer {
    /// What the pod's containers' environment reads (upstream
    /// `makeEnvironmentVariables`' inputs): the Secrets and ConfigMaps it
    /// refers to, read from the API server now (cluster mode; none
    /// standalone), the node's IPs and its allocatable.
    async fn env_sources(&self, pod: &Pod) -> kubelet_container::env::EnvSources {
        let objects = match &self.api_volumes {
            Some(api) => Some(crate::api_env::fetch_env_objects(api.api().as_ref(), pod).await),
            None => None,
        };
        kubelet_container::env::EnvSources {
            services: self
                .services
                .as_ref()
                .map_or(kubelet_container::env::ServiceEnv::None, |s| {
                    s.service_env(pod)
                }),
            objects,
            host_ips: self.node_ips.iter().map(ToString::to_string).collect(),
            allocatable: self
                .cm
                .as_ref()
                .map(|cm| cm.node_allocatable())
                .unwrap_or_default(),
        }
    }

    async fn sync_pod_inner(
        &self,
        ctx: &SyncContext,
        pod: &Pod,
        status: &Arc<PodStatus>,
    ) -> Result<SyncPodOutcome, WorkerError> {
        let phase = self.record(pod, status, &HashMap::new());
        // Upstream: a pod in a terminal phase goes on to termination.
        if phase == phase::SUCCEEDED || phase == phase::FAILED {
            tracing::info!(pod = %pod_name(pod), phase, "pod reached a terminal phase");
            return Ok(SyncPodOutcome::Terminal);
        }
        ctx.check()?;
        // Upstream SyncPod: the pod cgroup, with the pod's limits, exists
        // before its sandbox.
        if let Some(cm) = &self.cm {
            cm.ensure_pod_cgroup(pod).map_err(worker_error)?;
        }
        let volume_ctx = self
            .cm
            .as_ref()
            .map(|cm| {
                let alloc = cm.node_allocatable();
                VolumeContext {
                    allocatable_memory: alloc.get("memory").copied(),
                    allocatable_milli_cpu: alloc.get("cpu").copied(),
                }
            })
            .unwrap_or_default();
        // API volumes are (re)written on every sync, as upstream's volume
        // manager remounts them; a failure keeps the last contents, and a
        // volume never written keeps the pod waiting below.
        let mut failed_api_volumes = Vec::new();
        if let Some(api_volumes) = &self.api_volumes {
            // Upstream `SyncPod`: the kubelet's secret and configMap
            // managers learn what the pod refers to (its watches start).
            api_volumes.api().register_pod(pod);
            let errors = kubelet_volumemanager::prepare_api_volumes_each(
                &self.root_dir,
                pod,
                &volume_ctx,
                api_volumes,
            )
            .await;
            for e in errors {
                tracing::warn!(pod = %pod_name(pod), error = %e, "cannot write the pod's API volumes");
                self.record_failed_mount(pod, &e);
                failed_api_volumes.extend(e.volume().map(str::to_owned));
            }
        }
        let mut volumes = match prepare_pod_volumes(&self.root_dir, pod, &volume_ctx) {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(pod = %pod_name(pod), error = %e, "cannot prepare the pod's volumes");
                // Upstream: a volume that cannot be set up is a FailedMount
                // event and the containers wait in ContainerCreating (the
                // volume manager's WaitForAttachAndMount fails the sync). An
                // API volume's event was recorded above. A subPath is the
                // container's own (CreateContainerConfigError), prepared
                // when it is created.
                if !e
                    .volume()
                    .is_some_and(|v| failed_api_volumes.iter().any(|f| f == v))
                {
                    self.record_failed_mount(pod, &e);
                }
                return Err(worker_error(e));
            }
        };
        volumes.env = self.env_sources(pod).await;
        ctx.check()?;
        let result = self.runtime.sync_pod(pod, status, &volumes).await;
        let mut waiting = HashMap::new();
        let mut messages = HashMap::new();
        for e in &result.errors {
            tracing::warn!(pod = %pod_name(pod), error = %e, "sync failed");
            if let Some((container, reason)) = waiting_reason(e) {
                match e {
                    kubelet_kuberuntime::Error::CreateContainerConfig { source, .. } => {
                        messages.insert(container.clone(), source.to_string());
                    }
                    kubelet_kuberuntime::Error::EphemeralContainerConfig { message, .. } => {
                        messages.insert(container.clone(), message.clone());
                    }
                    _ => {}
                }
                waiting.insert(container, reason.to_owned());
            }
        }
        if !waiting.is_empty() {
            self.record_with_messages(pod, status, &waiting, &messages);
        }
        match result.errors.into_iter().next() {
            Some(e) => Err(worker_error(e)),
            None => Ok(SyncPodOutcome::Running),
        }
    }
}
