//! [`KubeletBuilder`]: a kubelet wired from its configuration, with a typed
//! start-up error per component and every background task owned and joined.
//!
//! Mirrors upstream `cmd/kubelet/app/server.go` (`RunKubelet`,
//! `createAndInitKubelet`) and `pkg/kubelet/kubelet.go` (`NewMainKubelet`,
//! `Run`). [`KubeletBuilder::build`] connects to the runtime and makes
//! every component, checking everything that can fail at start (the
//! configuration against the host, the runtime's version, the container
//! manager, the node API's bind) before anything runs;
//! [`BuiltKubelet::run`] starts the PLEG, the pod sources and the
//! background loops, runs the sync loop until `shutdown` completes, then
//! stops every task and waits for each to end. Pods keep running
//! afterwards, as upstream's kubelet leaves them on SIGTERM.
//!
//! Where we do better: upstream reports most start-up failures as one
//! `error` string from `Run`; [`StartError`] says which component failed,
//! with its own error as the source.
//!
//! ```no_run
//! use kubelet_agent::builder::KubeletBuilder;
//! use kubelet_agent::config::KubeletConfiguration;
//! use kubelet_agent::standalone::StandaloneOptions;
//!
//! # async fn demo() -> Result<(), kubelet_agent::builder::StartError> {
//! let config = KubeletConfiguration::default();
//! let kubelet = KubeletBuilder::new(config, StandaloneOptions::new("node-1")).build().await?;
//! kubelet.run(async { let _ = tokio::signal::ctrl_c().await; }).await
//! # }
//! ```

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use kubelet_cm::{ContainerManager, NodeContainerManager};
use kubelet_cri_client::{RemoteRuntime, RuntimeService};
use kubelet_eviction::cgroup_summary::CgroupSummaryProvider;
use kubelet_kuberuntime::RuntimeManager;
use kubelet_kuberuntime::config::ConfigOptions;
use kubelet_pleg::{
    EventedConfig, EventedPleg, PodCache, PodLifecycleEvent, PodLifecycleEventGenerator,
    PodLifecycleEventType,
};
use kubelet_podconfig::PodConfig;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::config::{ConfigError, KubeletConfiguration};
use crate::standalone::StandaloneOptions;
use crate::{Kubelet, KubeletConfig, KubeletParts};

/// Why a kubelet could not start: which component failed, and its error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The configuration cannot be honoured (on this host).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The metrics registry could not be made.
    #[error("metrics: {0}")]
    Metrics(#[source] kubelet_server::Error),
    /// The container runtime could not be reached.
    #[error("connecting to the container runtime at {endpoint}: {source}")]
    RuntimeConnect {
        /// `containerRuntimeEndpoint`.
        endpoint: String,
        /// The CRI error.
        source: kubelet_cri_client::Error,
    },
    /// The runtime did not answer `Version`.
    #[error("the container runtime at {endpoint} did not answer Version: {source}")]
    RuntimeVersion {
        /// `containerRuntimeEndpoint`.
        endpoint: String,
        /// The CRI error.
        source: kubelet_cri_client::Error,
    },
    /// The container manager could not start (cgroups, node allocatable,
    /// CPU, memory or topology managers).
    #[error("container manager: {0}")]
    ContainerManager(#[source] kubelet_cm::Error),
    /// The probe manager could not be made.
    #[error("prober: {0}")]
    Prober(#[source] kubelet_prober::Error),
    /// The PLEG could not start.
    #[error("PLEG: {0}")]
    Pleg(String),
    /// The node API could not bind.
    #[error("node API on {addr}: {source}")]
    NodeApi {
        /// The address it tried.
        addr: std::net::SocketAddr,
        /// Why.
        source: kubelet_server::Error,
    },
    /// The API server client could not be made from the kubeconfig.
    #[error("API client: {0}")]
    ApiClient(#[source] crate::apiclient::ApiClientError),
    /// The kubelet's own parts (pod workers) could not be made.
    #[error("kubelet: {0}")]
    Kubelet(#[source] crate::Error),
}

/// Builds a kubelet from its [`KubeletConfiguration`] and
/// [`StandaloneOptions`].
#[derive(Debug)]
pub struct KubeletBuilder {
    config: KubeletConfiguration,
    opts: StandaloneOptions,
}

/// A kubelet whose components are made and checked, ready to
/// [`run`](BuiltKubelet::run).
pub struct BuiltKubelet {
    config: KubeletConfiguration,
    opts: StandaloneOptions,
    cri: RemoteRuntime,
    cache: Arc<PodCache>,
    pleg: EventedPleg,
    pleg_events: mpsc::Receiver<PodLifecycleEvent>,
    kubelet: Arc<Kubelet<Arc<PodCache>>>,
    prober: Arc<kubelet_prober::Manager>,
    metrics: kubelet_server::Metrics,
    image_gc: Arc<kubelet_kuberuntime::image_gc::ImageGcManager>,
    log_rotation: kubelet_kuberuntime::logs::ContainerLogManager,
    cpu_reconcile: Option<crate::cpu_reconcile::CpuReconcile>,
    server: Option<kubelet_server::Server>,
    runtime_name: String,
    api: Option<kube::Client>,
    events_task: Option<kubelet_events::RecorderTask>,
    /// Cluster mode: the secret and configMap managers (their watches are
    /// stopped at shutdown).
    objects: Option<Arc<dyn kubelet_volumemanager::ApiObjects>>,
    /// Cluster mode: the Service reflector of the service env variables.
    service_reflector: Option<crate::services::ServiceReflector>,
    /// Cluster mode: the node's registration and status.
    node_status: Option<kubelet_nodestatus::NodeStatusManager>,
    runtime_state: Arc<crate::node_inputs::RuntimeState>,
}

impl std::fmt::Debug for BuiltKubelet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BuiltKubelet")
            .field("node_name", &self.opts.node_name)
            .field("runtime", &self.runtime_name)
            .field("node_api", &self.server.as_ref().map(|s| s.local_addr()))
            .finish_non_exhaustive()
    }
}

/// The background tasks of a running kubelet: each gets a stop signal and
/// is awaited on shutdown (none is aborted or leaked).
struct Tasks {
    stop: watch::Sender<bool>,
    handles: Vec<(&'static str, JoinHandle<()>)>,
}

impl Tasks {
    fn new() -> Self {
        Self {
            stop: watch::channel(false).0,
            handles: Vec::new(),
        }
    }

    /// Spawns `make(stop)`; the future must return once `stop` turns true.
    fn spawn<F, Fut>(&mut self, name: &'static str, make: F)
    where
        F: FnOnce(watch::Receiver<bool>) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let handle = tokio::spawn(make(self.stop.subscribe()));
        self.handles.push((name, handle));
    }

    /// Signals every task to stop and waits for each; a task that panicked
    /// is logged.
    async fn shutdown(self) {
        let _ = self.stop.send(true);
        for (name, handle) in self.handles {
            if let Err(e) = handle.await {
                tracing::error!(task = name, error = %e, "background task ended abnormally");
            }
        }
    }
}

/// Resolves once `stop` turns true (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// CRI calls into `kubelet_runtime_operations_*` (upstream's
/// `instrumentedRuntimeService`).
struct RuntimeMetrics(kubelet_server::Metrics);

impl kubelet_cri_client::OperationObserver for RuntimeMetrics {
    fn observe(
        &self,
        operation: &'static str,
        elapsed: Duration,
        error: Option<&kubelet_cri_client::Error>,
    ) {
        self.0
            .observe_runtime_operation(operation, elapsed.as_secs_f64(), error.is_some());
    }
}

/// The prober's liveness and startup results, as the runtime manager reads
/// them (by CRI container ID; the prober keys by the API's
/// `<runtime>://<id>`).
struct ProberResults {
    prober: Arc<kubelet_prober::Manager>,
    runtime_name: String,
}

impl kubelet_kuberuntime::actions::ProbeResults for ProberResults {
    fn liveness_failed(&self, container_id: &str) -> bool {
        let id = kubelet_prober::ContainerId::new(self.runtime_name.as_str(), container_id);
        self.prober.liveness().get(&id) == Some(kubelet_prober::ProbeResult::Failure)
    }

    fn startup_failed(&self, container_id: &str) -> bool {
        let id = kubelet_prober::ContainerId::new(self.runtime_name.as_str(), container_id);
        self.prober.startup().get(&id) == Some(kubelet_prober::ProbeResult::Failure)
    }

    fn startup_result(
        &self,
        container_id: &str,
    ) -> Option<kubelet_kuberuntime::actions::ProbeOutcome> {
        use kubelet_kuberuntime::actions::ProbeOutcome;
        let id = kubelet_prober::ContainerId::new(self.runtime_name.as_str(), container_id);
        self.prober.startup().get(&id).map(|r| match r {
            kubelet_prober::ProbeResult::Success => ProbeOutcome::Success,
            kubelet_prober::ProbeResult::Failure => ProbeOutcome::Failure,
            kubelet_prober::ProbeResult::Unknown => ProbeOutcome::Unknown,
        })
    }
}

/// The eviction manager's container reclaim (upstream
/// `DeleteAllUnusedContainers`): dead containers of any age, keeping the
/// newest one per container, as this kubelet's container GC keeps for the
/// restart count. Pods themselves are left to the pod workers.
struct DeadContainers(Arc<RuntimeManager>);

struct KeepPods;

impl kubelet_kuberuntime::gc::PodStateProvider for KeepPods {
    fn should_pod_content_be_removed(&self, _uid: &str) -> bool {
        false
    }

    fn should_pod_runtime_be_removed(&self, _uid: &str) -> bool {
        false
    }
}

#[async_trait::async_trait]
impl kubelet_eviction::manager::ContainerGc for DeadContainers {
    async fn delete_all_unused_containers(&self) -> Result<(), String> {
        let policy = kubelet_kuberuntime::gc::GcPolicy {
            min_age: Duration::ZERO,
            max_per_pod_container: 1,
            max_containers: -1,
        };
        self.0
            .garbage_collect(policy, true, true, &KeepPods)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

/// The eviction manager's image reclaim (upstream `DeleteUnusedImages`).
struct UnusedImages(Arc<kubelet_kuberuntime::image_gc::ImageGcManager>);

#[async_trait::async_trait]
impl kubelet_eviction::manager::ImageGc for UnusedImages {
    async fn delete_unused_images(&self) -> Result<(), String> {
        self.0
            .delete_unused_images(std::time::SystemTime::now())
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

/// The node's registry credentials (upstream `ReadDockerConfigFile`): the
/// docker `config.json` in the root directory and in `~/.docker`. A file that
/// does not parse is logged and skipped.
fn node_keyring(root_dir: &std::path::Path) -> kubelet_kuberuntime::credentials::DockerKeyring {
    let mut keyring = kubelet_kuberuntime::credentials::DockerKeyring::new();
    let mut paths = vec![root_dir.join("config.json")];
    if let Some(home) = std::env::var_os("HOME") {
        paths.push(PathBuf::from(home).join(".docker/config.json"));
    }
    for path in paths {
        let Ok(data) = std::fs::read(&path) else {
            continue;
        };
        match keyring.add_config(&path.display().to_string(), &data) {
            Ok(()) => tracing::info!(path = %path.display(), "registry credentials loaded"),
            Err(e) => tracing::warn!(error = %e, "registry credentials skipped"),
        }
    }
    keyring
}

/// The node's address when `--node-ip` is not given (upstream
/// `nodeutil.GetNodeHostIPs` / `utilnet.ResolveBindAddress`): the node
/// name's non-loopback addresses, else the source address of the default
/// route (a UDP `connect`, which sends nothing). Empty when neither exists.
fn detect_node_ips(node_name: &str) -> Vec<std::net::IpAddr> {
    use std::net::ToSocketAddrs;
    let resolved: Vec<std::net::IpAddr> = (node_name, 0)
        .to_socket_addrs()
        .map(|addrs| {
            addrs
                .map(|a| a.ip())
                .filter(|ip| !ip.is_loopback() && !ip.is_unspecified())
                .collect()
        })
        .unwrap_or_default();
    if let Some(ip) = resolved.first() {
        return vec![*ip];
    }
    std::net::UdpSocket::bind(("0.0.0.0", 0))
        .and_then(|s| {
            s.connect(("192.0.2.1", 9))?;
            s.local_addr()
        })
        .map(|a| vec![a.ip()])
        .unwrap_or_default()
}

impl KubeletBuilder {
    /// A builder for a kubelet with `config` and `opts`.
    pub fn new(config: KubeletConfiguration, opts: StandaloneOptions) -> Self {
        Self { config, opts }
    }

    /// Makes every component and checks everything that can fail at start;
    /// nothing runs until [`BuiltKubelet::run`] but the runtime connection.
    pub async fn build(self) -> Result<BuiltKubelet, StartError> {
        let Self { config, opts } = self;
        let host = crate::config::HostFacts::probe();
        config.check_for_start(&host)?;
        let security = config.node_api_security(opts.kubeconfig.is_some())?;
        let metrics = kubelet_server::Metrics::new().map_err(StartError::Metrics)?;
        // Cluster mode: the API client from the kubeconfig (upstream
        // `buildKubeletClientConfig`). Nothing is asked of the API server
        // yet: static pods run whether it answers or not.
        let observer = |metrics: &kubelet_server::Metrics| -> crate::apiclient::RequestObserver {
            let metrics = metrics.clone();
            Arc::new(move |method: &http::Method, code: &str| {
                metrics.inc_rest_client_request(code, "apiserver", method.as_str());
            })
        };
        let api = match &opts.kubeconfig {
            Some(path) => Some(
                crate::apiclient::client_from_kubeconfig(
                    path,
                    config.kube_api_qps,
                    config.kube_api_burst,
                    Some(observer(&metrics)),
                )
                .await
                .map_err(StartError::ApiClient)?,
            ),
            None => None,
        };
        // Upstream's kubelet posts events through a client of their own,
        // limited by eventRecordQPS/eventBurst instead of kubeAPIQPS
        // (`cmd/kubelet/app/server.go`, `eventClientConfig`): a burst of
        // events never delays a pod status or the node's heartbeat.
        let events_api = match &opts.kubeconfig {
            Some(path) => Some(
                crate::apiclient::client_from_kubeconfig(
                    path,
                    // eventRecordQPS 0 is no limit (upstream's field doc).
                    if config.event_record_qps > 0 {
                        config.event_record_qps
                    } else {
                        i32::MAX
                    },
                    if config.event_record_qps > 0 {
                        config.event_burst
                    } else {
                        i32::MAX
                    },
                    Some(observer(&metrics)),
                )
                .await
                .map_err(StartError::ApiClient)?,
            ),
            None => None,
        };
        // Events (upstream `makeEventRecorder`): to the API server in
        // cluster mode, nowhere standalone.
        let (events, events_task): (
            Arc<dyn kubelet_container::events::EventRecorder>,
            Option<kubelet_events::RecorderTask>,
        ) = match &events_api {
            Some(client) => {
                let (recorder, task) =
                    kubelet_events::Recorder::builder(client.clone(), opts.node_name.clone())
                        .rate_limit(
                            u32::try_from(config.event_record_qps).unwrap_or(50),
                            u32::try_from(config.event_burst).unwrap_or(100),
                        )
                        .build()
                        .map_err(|e| ConfigError {
                            field: "eventRecordQPS".into(),
                            reason: e.to_string(),
                        })?;
                (Arc::new(recorder), Some(task))
            }
            None => (Arc::new(kubelet_container::NoopRecorder), None),
        };
        if api.is_some() {
            // Upstream `BirthCry`, as the kubelet is made.
            events.event(
                &kubelet_container::events::node_ref(&opts.node_name),
                kubelet_container::EventType::Normal,
                kubelet_container::events::reason::STARTING_KUBELET,
                "Starting kubelet.".into(),
            );
        }
        // The secret and configMap managers (upstream
        // `secret.NewWatchingSecretManager` and friends, as
        // `configMapAndSecretChangeDetectionStrategy` says): the pods'
        // volumes, env and pull secrets all read through them.
        let objects = match &api {
            Some(client) => Some(kubelet_volumemanager::api_objects(
                config.change_detection_strategy()?,
                client.clone(),
            )),
            None => None,
        };
        // The Services of the service env variables (upstream's service
        // informer); none standalone.
        let (services, service_reflector) = api
            .as_ref()
            .map(|c| crate::services::service_reflector(c.clone()))
            .unzip();
        let endpoint = config.container_runtime_endpoint.clone();
        let cri = RemoteRuntime::builder(&endpoint)
            .connect_timeout(opts.runtime_connect_timeout)
            .observer(Arc::new(RuntimeMetrics(metrics.clone())))
            .connect()
            .await
            .map_err(|source| StartError::RuntimeConnect {
                endpoint: endpoint.clone(),
                source,
            })?;
        let version = cri
            .version()
            .await
            .map_err(|source| StartError::RuntimeVersion {
                endpoint: endpoint.clone(),
                source,
            })?;
        tracing::info!(
            runtime = %version.runtime_name,
            version = %version.runtime_version,
            endpoint = %endpoint,
            "connected to the container runtime"
        );
        // The API's container IDs carry the runtime's own name (upstream
        // `kubecontainer.ContainerID{Type: runtimeName}`), never a guess.
        let runtime_name = version.runtime_name;

        // The container manager: the kubepods tree, node allocatable, the
        // CPU, memory and topology managers (upstream `NewContainerManager`
        // + `Start`).
        let cm_config = config.container_manager_config(&opts.root_dir)?;
        let machine = kubelet_cm::MachineInfo::host().map_err(StartError::ContainerManager)?;
        // The machine does not change while the kubelet runs: read once,
        // for the node status too (upstream `GetCachedMachineInfo`).
        let machine_info = crate::node_inputs::machine_info(&machine);
        let node_cm = Arc::new(
            NodeContainerManager::new(cm_config, machine).map_err(StartError::ContainerManager)?,
        );
        let cpu_reconcile = crate::cpu_reconcile::CpuReconcile::new(&config, &node_cm)
            .map_err(StartError::Kubelet)?;
        let cm: Arc<dyn ContainerManager> = node_cm;
        cm.start().map_err(StartError::ContainerManager)?;
        tracing::info!(allocatable = ?cm.node_allocatable(), "container manager started");

        // The probers: exec probes through the CRI, results read by the
        // runtime manager (liveness and startup restarts) and the status
        // (readiness).
        let prober = Arc::new(
            kubelet_prober::Manager::builder(Arc::new(cri.clone()), opts.statuses.clone())
                .event_recorder(events.clone())
                .on_probe({
                    // `/metrics/probes` (upstream `worker.doProbe`).
                    let metrics = metrics.clone();
                    move |ev| {
                        let probe_type = ev.probe_type.to_string();
                        let labels = kubelet_server::ProbeLabels {
                            probe_type: &probe_type,
                            container: ev.container,
                            pod: ev.pod_name,
                            namespace: ev.namespace,
                            pod_uid: ev.pod_uid,
                        };
                        let result = match ev.result {
                            kubelet_prober::ProbeResult::Success => {
                                kubelet_server::ProbeResultLabel::Successful
                            }
                            kubelet_prober::ProbeResult::Failure => {
                                kubelet_server::ProbeResultLabel::Failed
                            }
                            kubelet_prober::ProbeResult::Unknown => {
                                kubelet_server::ProbeResultLabel::Unknown
                            }
                        };
                        metrics.observe_probe(&labels, result, ev.duration.as_secs_f64());
                    }
                })
                .on_worker_stop({
                    let metrics = metrics.clone();
                    move |w| {
                        let probe_type = w.probe_type.to_string();
                        metrics.forget_probe(&kubelet_server::ProbeLabels {
                            probe_type: &probe_type,
                            container: w.container,
                            pod: w.pod_name,
                            namespace: w.namespace,
                            pod_uid: w.pod_uid,
                        });
                    }
                })
                .build()
                .map_err(StartError::Prober)?,
        );
        let runtime = Arc::new(
            RuntimeManager::new(
                Arc::new(cri.clone()),
                ConfigOptions {
                    pod_logs_dir: config.pod_logs_dir.clone(),
                    node_name: opts.node_name.clone(),
                    cluster_domain: config.cluster_domain.clone(),
                    cluster_dns: config.cluster_dns_ips()?,
                    resolv_conf: config.resolv_conf_path(),
                    node_ips: opts.node_ips.clone(),
                    ..ConfigOptions::new(cm.clone())
                },
            )
            .with_probe_results(Arc::new(ProberResults {
                prober: prober.clone(),
                runtime_name: runtime_name.clone(),
            }))
            .with_http_hooks(Arc::new(kubelet_prober::probe::http::HttpProber::new()))
            .with_keyring(node_keyring(&opts.root_dir))
            .with_pull_secrets(crate::api_env::pull_secrets(objects.clone()))
            .with_event_recorder(events.clone()),
        );
        // Upstream checks the host's resolver file against the DNS limits
        // once, as the sync loop starts (`CheckLimitsForResolvConf`).
        runtime.dns().check_limits_for_resolv_conf();

        // The evented PLEG: container events from the CRI (milliseconds), a
        // relist every 300 s as a safety net, and a fall back to relisting
        // every second when the runtime has no events (containerd 1.6) or
        // the stream keeps failing. containerd 1.7 hands each event to one
        // stream only, so this is the only reader.
        let cache = Arc::new(PodCache::new());
        let pleg = EventedPleg::new(
            runtime.clone(),
            Arc::new(cri.clone()),
            cache.clone(),
            EventedConfig::default(),
        );
        let pleg_events = pleg
            .watch()
            .ok_or_else(|| StartError::Pleg("its event channel was already taken".into()))?;

        // The eviction manager: the thresholds of the configuration, the
        // node's cgroups and filesystems, the kernel's memory threshold
        // notifications on the node and the pods cgroup (upstream
        // `NewManager` + `Start`).
        let pods_cgroup = format!("{}/kubepods", config.cgroup_root.trim_matches('/'))
            .trim_start_matches('/')
            .to_owned();
        let thresholds = config.eviction_thresholds()?;
        let stats = CgroupSummaryProvider {
            pods_cgroup: pods_cgroup.clone(),
            node_fs: opts.root_dir.clone(),
            ..Default::default()
        };
        // Image garbage collection (upstream `imageGCManager`), also the
        // eviction manager's node-level reclaim for disk pressure.
        // containerd 1.7 pins its sandbox image itself.
        let bad = |field: &str, e: String| ConfigError {
            field: field.into(),
            reason: e,
        };
        let image_gc = Arc::new(
            kubelet_kuberuntime::image_gc::ImageGcManager::new(
                Arc::new(cri.clone()),
                kubelet_kuberuntime::image_gc::ImageGcPolicy {
                    high_threshold_percent: config.image_gc_high_threshold_percent,
                    low_threshold_percent: config.image_gc_low_threshold_percent,
                    min_age: kubelet_container::duration::parse_go_duration(
                        &config.image_minimum_gc_age,
                    )
                    .map_err(|e| bad("imageMinimumGCAge", e.to_string()))?,
                    max_age: None,
                },
            )
            .map_err(|e| bad("imageGCHighThresholdPercent", e.to_string()))?,
        );
        let log_rotation = kubelet_kuberuntime::logs::ContainerLogManager::new(
            Arc::new(cri.clone()),
            kubelet_kuberuntime::logs::LogRotatePolicy {
                max_size: kubelet_kuberuntime::logs::parse_max_size(&config.container_log_max_size)
                    .map_err(|e| bad("containerLogMaxSize", e.to_string()))?,
                max_files: config.container_log_max_files,
            },
        )
        .map_err(|e| bad("containerLogMaxFiles", e.to_string()))?;

        let (killer, eviction_requests) = crate::eviction_channel();
        let eviction = Arc::new(
            kubelet_eviction::manager::Manager::new(
                kubelet_eviction::manager::Config {
                    thresholds,
                    disk_layout: stats.disk_layout(),
                    ..Default::default()
                },
                Arc::new(stats.clone()),
                Arc::new(killer),
            )
            .with_gc(
                Arc::new(DeadContainers(runtime.clone())),
                Arc::new(UnusedImages(image_gc.clone())),
            )
            .with_event_recorder(
                events.clone(),
                kubelet_container::events::node_ref(&opts.node_name),
            ),
        );
        let notifiers = kubelet_eviction::notifier::attach_memcg_notifiers(
            &eviction,
            std::path::Path::new("/sys/fs/cgroup/memory"),
            &pods_cgroup,
        );
        tracing::info!(notifiers, "eviction manager ready");

        // Cluster mode: the Node's registration and status (upstream
        // `registerWithAPIServer`, `syncNodeStatus`), read from the
        // components by `KubeletNodeInputs`.
        let runtime_state = Arc::new(crate::node_inputs::RuntimeState::default());
        let node_ips = if opts.node_ips.is_empty() {
            detect_node_ips(&opts.node_name)
        } else {
            opts.node_ips.clone()
        };
        tracing::info!(?node_ips, "node addresses");
        let node_status = match &api {
            Some(client) => {
                let inputs = crate::node_inputs::KubeletNodeInputs {
                    cri: cri.clone(),
                    runtime_name: runtime_name.clone(),
                    cm: cm.clone(),
                    pleg: Arc::new(pleg.clone()),
                    eviction: eviction.clone(),
                    runtime_state: runtime_state.clone(),
                    machine: machine_info.clone(),
                    root_dir: opts.root_dir.clone(),
                    thresholds: config.eviction_thresholds()?,
                    max_pods: config.max_pods,
                    port: config.port,
                };
                let mut node = kubelet_nodestatus::NodeConfig::new(opts.node_name.clone());
                // One answer for the Node's addresses and the pods' hostIP.
                node.node_ips = node_ips.clone();
                node.node_labels = opts.node_labels.clone();
                node.register_node = config.register_node;
                node.register_with_taints = config.register_with_taints.clone();
                node.provider_id =
                    (!config.provider_id.is_empty()).then(|| config.provider_id.clone());
                node.node_status_max_images = config.node_status_max_images;
                node.node_status_update_frequency = config.node_status_update_period()?;
                node.node_status_report_frequency = config.node_status_report_period()?;
                Some(
                    kubelet_nodestatus::NodeStatusManager::new(
                        client.clone(),
                        node,
                        Arc::new(inputs),
                    )
                    .with_event_recorder(events.clone()),
                )
            }
            None => None,
        };
        let kubelet = Kubelet::with_parts(
            KubeletConfig {
                node_name: opts.node_name.clone(),
                root_dir: opts.root_dir.clone(),
                housekeeping_period: opts.housekeeping_period,
                container_gc_period: opts.container_gc_period,
                max_pods: usize::try_from(config.max_pods).unwrap_or(110),
                runtime_name: runtime_name.clone(),
                node_ips: node_ips.clone(),
                sync_frequency: config.sync_period()?,
                ..KubeletConfig::new(opts.node_name.clone())
            },
            runtime.clone(),
            cache.clone(),
            KubeletParts {
                statuses: opts.statuses.clone(),
                cm: Some(cm),
                prober: Some(prober.clone()),
                metrics: Some(metrics.clone()),
                eviction: Some((eviction, eviction_requests)),
                api_volumes: objects
                    .clone()
                    .map(|o| Arc::new(kubelet_volumemanager::ApiVolumes::new(o))),
                services,
                mirror_client: api.as_ref().map(|client| {
                    Arc::new(crate::mirror::ApiMirrorClient::new(
                        client.clone(),
                        opts.node_name.clone(),
                    )) as Arc<dyn crate::mirror::MirrorClient>
                }),
            },
        )
        .map_err(StartError::Kubelet)?
        .with_container_gc(runtime.clone())
        .with_event_recorder(events.clone());
        let kubelet = Arc::new(match &node_status {
            Some(n) => kubelet.with_node(n.subscribe()),
            None => kubelet,
        });

        // The node API: TLS and every request authenticated and
        // authorized, or plain HTTP on loopback for a standalone kubelet
        // left open (see `KubeletConfiguration::node_api_security`).
        let server = if config.enable_server {
            let addr = std::net::SocketAddr::new(security.address, config.port);
            let host = crate::node_api::KubeletNodeApi::new(
                kubelet.clone(),
                runtime.clone(),
                Arc::new(cri.clone()),
                serde_json::to_value(&config).unwrap_or_default(),
                opts.node_name.clone(),
                stats,
            )
            .with_pleg(Arc::new(pleg.clone()))
            .with_pod_cache(cache.clone());
            let server_config =
                node_api_server_config(addr, &config, &security, &opts, api.clone())
                    .map_err(|source| StartError::NodeApi { addr, source })?;
            let server =
                kubelet_server::Server::bind(server_config, Arc::new(host), metrics.clone())
                    .await
                    .map_err(|source| StartError::NodeApi { addr, source })?;
            tracing::info!(address = %server.local_addr(), "node API serving");
            Some(server)
        } else {
            None
        };

        Ok(BuiltKubelet {
            config,
            opts,
            cri,
            cache,
            pleg,
            pleg_events,
            kubelet,
            prober,
            metrics,
            image_gc,
            log_rotation,
            cpu_reconcile,
            server,
            runtime_name,
            api,
            events_task,
            objects,
            service_reflector,
            node_status,
            runtime_state,
        })
    }
}

impl BuiltKubelet {
    /// The runtime's name, as its `Version` reported it.
    pub fn runtime_name(&self) -> &str {
        &self.runtime_name
    }

    /// Where the node API listens, when it is enabled.
    pub fn node_api_addr(&self) -> Option<std::net::SocketAddr> {
        self.server.as_ref().map(|s| s.local_addr())
    }

    /// Runs the kubelet until `shutdown` completes, then stops every
    /// background task and waits for each to end.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), StartError> {
        let BuiltKubelet {
            config,
            opts,
            cri,
            cache,
            pleg,
            mut pleg_events,
            kubelet,
            prober,
            metrics,
            image_gc,
            log_rotation,
            cpu_reconcile,
            server,
            runtime_name: _,
            api,
            events_task,
            objects,
            service_reflector,
            node_status,
            runtime_state,
        } = self;
        let mut tasks = Tasks::new();
        if let Some(reflector) = service_reflector {
            tasks.spawn("services", |stop| reflector.run(stop));
        }
        if let Some(task) = events_task {
            tasks.spawn("events", |stop| task.run(stop));
        }
        if let Some(server) = server {
            tasks.spawn("node API", |mut stop| async move {
                if let Err(e) = server.serve(async move { stopped(&mut stop).await }).await {
                    tracing::error!(error = %e, "node API stopped");
                }
            });
        }

        if let Some(manager) = node_status {
            // Upstream `updateRuntimeUp` every 5 s: the runtime's conditions
            // for the node's Ready condition.
            let cri = cri.clone();
            let state = runtime_state.clone();
            tasks.spawn("runtime status", |mut stop| async move {
                let mut tick = tokio::time::interval(crate::node_inputs::RUNTIME_UP_PERIOD);
                loop {
                    tokio::select! {
                        _ = stopped(&mut stop) => return,
                        _ = tick.tick() => state.update_runtime_up(&cri).await,
                    }
                }
            });
            // A newly registered Node (first start, or registered again
            // after it was deleted) gets its static pods' mirror pods now.
            let mut registered = manager.subscribe();
            let kubelet_for_mirrors = kubelet.clone();
            tasks.spawn("mirror pods on registration", |mut stop| async move {
                let mut node_uid: Option<String> = None;
                loop {
                    tokio::select! {
                        _ = stopped(&mut stop) => return,
                        changed = registered.changed() => if changed.is_err() { return },
                    }
                    let uid = registered
                        .borrow_and_update()
                        .as_ref()
                        .and_then(|n| n.metadata.uid.clone());
                    if uid.is_some() && uid != node_uid {
                        node_uid = uid;
                        kubelet_for_mirrors.sync_static_pods_without_mirror();
                    }
                }
            });
            tasks.spawn("node status", |stop| manager.run(stop));
        }

        // Image GC every 5 minutes, log rotation every 10 seconds (upstream
        // `StartGarbageCollection`, `containerLogManager.Start`).
        tasks.spawn("image GC and log rotation", |mut stop| async move {
            let gc_enabled = !image_gc.policy().is_disabled();
            if let Err(e) = image_gc.detect_images(std::time::SystemTime::now()).await {
                tracing::warn!(error = %e, "image GC: cannot detect images");
            }
            let mut images = tokio::time::interval(kubelet_kuberuntime::image_gc::IMAGE_GC_PERIOD);
            let mut logs = tokio::time::interval(kubelet_kuberuntime::logs::LOG_MONITOR_PERIOD);
            images.tick().await;
            loop {
                tokio::select! {
                    _ = stopped(&mut stop) => return,
                    _ = images.tick(), if gc_enabled => {
                        match image_gc.garbage_collect(std::time::SystemTime::now()).await {
                            Ok(r) if !r.removed.is_empty() => tracing::info!(removed = ?r.removed, freed = r.freed_bytes, "image GC"),
                            Ok(_) => {}
                            Err(e) => tracing::warn!(error = %e, "image GC failed"),
                        }
                    }
                    _ = logs.tick() => match log_rotation.rotate_logs().await {
                        Ok(r) => {
                            for e in r.errors {
                                tracing::warn!(error = %e, "log rotation");
                            }
                        }
                        Err(e) => tracing::warn!(error = %e, "log rotation failed"),
                    },
                }
            }
        });

        // PLEG relist timings into the metrics (upstream records them in
        // relist).
        {
            let metrics = metrics.clone();
            let pleg = pleg.clone();
            tasks.spawn("PLEG metrics", |mut stop| async move {
                let mut seen = 0;
                let mut tick = tokio::time::interval(Duration::from_secs(1));
                loop {
                    tokio::select! {
                        _ = stopped(&mut stop) => return,
                        _ = tick.tick() => {}
                    }
                    let m = pleg.metrics();
                    if m.relists != seen {
                        seen = m.relists;
                        if let Some(d) = m.last_relist_duration {
                            metrics.observe_pleg_relist_duration(d.as_secs_f64());
                        }
                        if let Some(i) = m.last_relist_interval {
                            metrics.observe_pleg_relist_interval(i.as_secs_f64());
                        }
                    }
                }
            });
        }

        // Everything that can fail at start has been checked: start the
        // PLEG and the pod sources.
        if let Err(e) = pleg.start() {
            tasks.shutdown().await;
            prober.shutdown();
            return Err(StartError::Pleg(e.to_string()));
        }
        let mut builder = PodConfig::builder(opts.node_name.clone());
        if let Some(path) = &config.static_pod_path {
            builder = builder.file(path.clone());
        }
        if !config.static_pod_url.is_empty() {
            // Upstream `config.NewSourceURL`; the period was validated by
            // `build`.
            let period = config
                .http_check_period()
                .unwrap_or(Duration::from_secs(20));
            let mut source =
                kubelet_podconfig::HttpSource::new(&config.static_pod_url, opts.node_name.clone())
                    .period(period);
            for (name, values) in &config.static_pod_url_header {
                for value in values {
                    source = source.header(name.clone(), value.clone());
                }
            }
            builder = builder.source(source);
        }
        if let Some(client) = &api {
            // Pods bound to this node (upstream `config.NewSourceApiserver`).
            builder = builder.api_server(client.clone());
        }
        let (pod_config, updates) = builder.start();
        if let Some(hook) = &opts.pod_config_hook {
            (hook.0)(&pod_config);
        }

        // PLEG events wake the pod's worker; ContainerRemoved needs no sync
        // (upstream). A ContainerDied also hands the pod's older dead
        // containers to the container deletor (upstream
        // `cleanUpContainersInPod`).
        let (deletor, deletor_worker) =
            crate::deletor::ContainerDeletor::new(kubelet.dead_containers_to_keep());
        {
            let runtime: Arc<dyn kubelet_cri_client::RuntimeService> = Arc::new(cri.clone());
            tasks.spawn("container deletor", |mut stop| async move {
                deletor_worker.run(runtime, stopped(&mut stop)).await;
            });
        }
        let (events_tx, events_rx) = mpsc::channel(1000);
        let events_kubelet = kubelet.clone();
        let events_cache = cache.clone();
        tasks.spawn("PLEG events", |mut stop| async move {
            loop {
                let event = tokio::select! {
                    _ = stopped(&mut stop) => return,
                    event = pleg_events.recv() => event,
                };
                let Some(event) = event else { return };
                if event.kind == PodLifecycleEventType::ContainerRemoved {
                    continue;
                }
                if event.kind == PodLifecycleEventType::ContainerDied
                    && let Ok(status) = events_cache.get(&event.pod_uid)
                {
                    let remove_all = events_kubelet.should_pod_content_be_removed(&event.pod_uid);
                    deletor.delete_containers_in_pod(&event.data, &status, remove_all);
                }
                if events_tx.send(event.pod_uid).await.is_err() {
                    return;
                }
            }
        });
        let pod_config = Arc::new(pod_config);
        // The CPU manager's cpusets pushed to running containers (static
        // policy).
        let cpu_reconcile = cpu_reconcile.map(|r| {
            r.start(
                Arc::new(cri.clone()),
                kubelet.clone(),
                cache,
                pod_config.clone(),
            )
        });
        if let Some(client) = &api {
            // Upstream `nodeLeaseController.Run` and `statusManager.Start`.
            let lease = kubelet_nodelease::LeaseController::new(
                client.clone(),
                opts.node_name.clone(),
                config.node_lease_duration_seconds,
            );
            tasks.spawn("node lease", |stop| lease.run(stop));
            let pods = Arc::new(crate::StatusSyncPods(kubelet.clone()));
            let sync = kubelet_status::StatusSync::new(
                client.clone(),
                kubelet.statuses().clone(),
                pods.clone(),
                pods,
            );
            tasks.spawn("status sync", |stop| sync.run(stop));
        }
        // Upstream `NewSourcesReady(podCfg.SeenAllSources)`: ready once the
        // sync loop handled an update of every source.
        let ready_config = pod_config.clone();
        let ready_kubelet = kubelet.clone();
        kubelet
            .run(
                updates,
                events_rx,
                Box::new(move || ready_config.seen_all_sources(&ready_kubelet.sources_seen())),
                shutdown,
            )
            .await;
        if let Some(task) = cpu_reconcile {
            task.stop().await;
        }
        pleg.stop();
        pod_config.shutdown();
        prober.shutdown();
        tasks.shutdown().await;
        if let Some(objects) = objects {
            objects.shutdown().await;
        }
        Ok(())
    }
}

/// The node API server's TLS and authentication (upstream `InitializeTLS`
/// and `BuildAuth`, `cmd/kubelet/app/server.go` and `auth.go`): the
/// serving pair from `tlsCertFile`/`tlsPrivateKeyFile` or self-signed in
/// the cert dir, client certificates of `clientCAFile`, bearer tokens and
/// decisions through the API server's TokenReview and SubjectAccessReview.
fn node_api_server_config(
    addr: std::net::SocketAddr,
    config: &KubeletConfiguration,
    security: &crate::config::NodeApiSecurity,
    opts: &StandaloneOptions,
    api: Option<kube::Client>,
) -> Result<kubelet_server::ServerConfig, kubelet_server::Error> {
    use kubelet_server::auth;
    let server_config = kubelet_server::ServerConfig::new(addr);
    if !security.secure {
        return Ok(server_config);
    }
    let (cert_file, key_file) = match &security.cert_and_key {
        Some(pair) => pair.clone(),
        None => {
            let dir = opts
                .cert_dir
                .clone()
                .unwrap_or_else(|| opts.root_dir.join("pki"));
            kubelet_server::tls::self_signed(&dir, &opts.node_name)?
        }
    };
    let tls = kubelet_server::tls::server_config(&kubelet_server::tls::TlsOptions {
        cert_file,
        key_file,
        client_ca_file: security.client_ca_file.clone(),
        min_version: Some(config.tls_min_version.clone()).filter(|v| !v.is_empty()),
        cipher_suites: config.tls_cipher_suites.clone(),
    })?;
    let reviews = api.map(|client| Arc::new(auth::KubeReviews::new(client)));
    let mut authenticator = auth::NodeAuthenticator::new().with_anonymous(security.anonymous);
    if let (Some(ttl), Some(reviews)) = (security.token_webhook, &reviews) {
        authenticator = authenticator.with_tokens(Arc::new(auth::CachedTokenReviewer::new(
            reviews.clone(),
            ttl,
        )));
    }
    let authorizer: Arc<dyn auth::Authorizer> = match (security.authorization_webhook, &reviews) {
        (Some((allowed, denied)), Some(reviews)) => Arc::new(auth::WebhookAuthorizer::new(
            reviews.clone(),
            allowed,
            denied,
        )),
        _ => Arc::new(auth::AlwaysAllow),
    };
    Ok(server_config.tls(tls).auth(kubelet_server::ServerAuth {
        authenticator: Arc::new(authenticator),
        authorizer,
        node_name: opts.node_name.clone(),
    }))
}
