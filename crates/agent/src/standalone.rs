//! A standalone kubelet: static pods from a directory, run on a CRI
//! runtime, as upstream's kubelet runs without an API server.
//!
//! [`run`] wires the components: the CRI client, the runtime manager, the
//! PLEG and its pod cache, the pod config's file source, the pod workers
//! and the sync loop. The example binary parses flags and calls it; tests
//! call it in-process against the containerd test bed.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use kubelet_cm::{
    CgroupDriverKind, CgroupName, ContainerManager, ContainerResourceOptions, NodeContainerManager,
};
use kubelet_cri_client::{RemoteRuntime, RuntimeService};
use kubelet_kuberuntime::RuntimeManager;
use kubelet_kuberuntime::config::ConfigOptions;
use kubelet_pleg::{
    EventedConfig, EventedPleg, PodCache, PodLifecycleEventGenerator, PodLifecycleEventType,
};
use kubelet_podconfig::PodConfig;

use crate::config::KubeletConfiguration;
use crate::{Error, Kubelet, KubeletConfig, KubeletParts, StatusManager};
use kubelet_eviction::cgroup_summary::CgroupSummaryProvider;

/// Called with the pod config once it runs, to add sources driven from
/// outside ([`PodConfig::channel`], [`PodConfig::add_source`]): an embedding
/// program's own pod source, or a test standing in for the API server.
#[derive(Clone)]
pub struct PodConfigHook(pub Arc<dyn Fn(&PodConfig) + Send + Sync>);

impl std::fmt::Debug for PodConfigHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PodConfigHook")
    }
}

/// What a standalone kubelet needs besides its [`KubeletConfiguration`].
#[derive(Debug, Clone)]
pub struct StandaloneOptions {
    /// This node's name (upstream: the hostname, or `--hostname-override`).
    pub node_name: String,
    /// Where pod directories live (`--root-dir`).
    pub root_dir: PathBuf,
    /// How long to wait for the runtime's socket.
    pub runtime_connect_timeout: Duration,
    /// The housekeeping period (upstream 2 s).
    pub housekeeping_period: Duration,
    /// Where pod statuses are recorded; keep a clone to read them.
    pub statuses: Arc<StatusManager>,
    /// Adds pod sources to the pod config.
    pub pod_config_hook: Option<PodConfigHook>,
}

impl StandaloneOptions {
    /// Upstream's defaults for `node_name`.
    pub fn new(node_name: impl Into<String>) -> Self {
        Self {
            node_name: node_name.into(),
            root_dir: PathBuf::from("/var/lib/kubelet"),
            runtime_connect_timeout: Duration::from_secs(30),
            housekeeping_period: crate::HOUSEKEEPING_PERIOD,
            statuses: Arc::new(StatusManager::default()),
            pod_config_hook: None,
        }
    }
}

/// The node's memory, from `/proc/meminfo` (for OOM score adjustments).
fn memory_capacity_bytes() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}

/// The lowercase hostname, upstream's default node name.
pub fn default_node_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_lowercase())
        .unwrap_or_else(|_| "localhost".into())
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
/// them (by CRI container ID; the prober keys by `containerd://<id>`).
struct ProberResults(Arc<kubelet_prober::Manager>);

impl kubelet_kuberuntime::actions::ProbeResults for ProberResults {
    fn liveness_failed(&self, container_id: &str) -> bool {
        let id = kubelet_prober::ContainerId::new("containerd", container_id);
        self.0.liveness().get(&id) == Some(kubelet_prober::ProbeResult::Failure)
    }

    fn startup_failed(&self, container_id: &str) -> bool {
        let id = kubelet_prober::ContainerId::new("containerd", container_id);
        self.0.startup().get(&id) == Some(kubelet_prober::ProbeResult::Failure)
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

/// Runs a standalone kubelet until `shutdown` completes. Pods keep running
/// afterwards, as upstream's kubelet leaves them on SIGTERM.
pub async fn run(
    config: KubeletConfiguration,
    opts: StandaloneOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<(), Error> {
    let host = crate::config::HostFacts::probe();
    config
        .check_for_start(&host)
        .map_err(|e| Error::InvalidPod {
            pod: "*".into(),
            reason: e.to_string(),
        })?;
    let metrics = kubelet_server::Metrics::new().map_err(|e| Error::InvalidPod {
        pod: "*".into(),
        reason: format!("metrics: {e}"),
    })?;
    let cri = RemoteRuntime::builder(&config.container_runtime_endpoint)
        .connect_timeout(opts.runtime_connect_timeout)
        .observer(Arc::new(RuntimeMetrics(metrics.clone())))
        .connect()
        .await
        .map_err(|source| kubelet_kuberuntime::Error::Runtime {
            pod: "*".into(),
            source,
        })?;
    let version = cri
        .version()
        .await
        .map_err(|source| kubelet_kuberuntime::Error::Runtime {
            pod: "*".into(),
            source,
        })?;
    tracing::info!(
        runtime = %version.runtime_name,
        version = %version.runtime_version,
        endpoint = %config.container_runtime_endpoint,
        "connected to the container runtime"
    );
    // The container manager: the kubepods tree, node allocatable, the CPU,
    // memory and topology managers (upstream `NewContainerManager` + `Start`).
    let cm_config = config
        .container_manager_config(&opts.root_dir)
        .map_err(|e| Error::InvalidPod {
            pod: "*".into(),
            reason: e.to_string(),
        })?;
    let cm_error = |e: kubelet_cm::Error| Error::InvalidPod {
        pod: "*".into(),
        reason: format!("container manager: {e}"),
    };
    let machine = kubelet_cm::MachineInfo::host().map_err(cm_error)?;
    let node_cm = Arc::new(NodeContainerManager::new(cm_config, machine).map_err(cm_error)?);
    let cpu_reconcile = crate::cpu_reconcile::CpuReconcile::new(&config, &node_cm)?;
    let cm: Arc<dyn ContainerManager> = node_cm;
    cm.start().map_err(cm_error)?;
    tracing::info!(allocatable = ?cm.node_allocatable(), "container manager started");

    let driver = if config.cgroup_driver == "systemd" {
        CgroupDriverKind::Systemd
    } else {
        CgroupDriverKind::Cgroupfs
    };
    // The probers: exec probes through the CRI, results read by the runtime
    // manager (liveness and startup restarts) and the status (readiness).
    let prober = Arc::new(
        kubelet_prober::Manager::builder(Arc::new(cri.clone()), opts.statuses.clone())
            .build()
            .map_err(|e| Error::InvalidPod {
                pod: "*".into(),
                reason: format!("prober: {e}"),
            })?,
    );
    let runtime = Arc::new(
        RuntimeManager::new(
            Arc::new(cri.clone()),
            ConfigOptions {
                pod_logs_dir: config.pod_logs_dir.clone(),
                cgroup_root: CgroupName::from_cgroupfs(&config.cgroup_root),
                cgroups_per_qos: config.cgroups_per_qos,
                cgroup_driver: driver,
                resources: ContainerResourceOptions {
                    memory_capacity_bytes: memory_capacity_bytes(),
                    ..Default::default()
                },
                node_name: opts.node_name.clone(),
                cluster_domain: config.cluster_domain.clone(),
                container_manager: Some(cm.clone()),
            },
        )
        .with_probe_results(Arc::new(ProberResults(prober.clone())))
        .with_keyring(node_keyring(&opts.root_dir)),
    );

    // The evented PLEG: container events from the CRI (milliseconds), a
    // relist every 300 s as a safety net, and a fall back to relisting every
    // second when the runtime has no events (containerd 1.6) or the stream
    // keeps failing. containerd 1.7 hands each event to one stream only, so
    // this is the only reader.
    let cache = Arc::new(PodCache::new());
    let pleg = EventedPleg::new(
        runtime.clone(),
        Arc::new(cri.clone()),
        cache.clone(),
        EventedConfig::default(),
    );
    let mut pleg_events = pleg.watch().ok_or_else(|| Error::InvalidPod {
        pod: "*".into(),
        reason: "the PLEG's event channel was already taken".into(),
    })?;

    // The eviction manager: hard thresholds of the configuration, the node's
    // cgroups and filesystems, the kernel's memory threshold notifications on
    // the node and the pods cgroup (upstream `NewManager` + `Start`).
    let pods_cgroup = format!("{}/kubepods", config.cgroup_root.trim_matches('/'))
        .trim_start_matches('/')
        .to_owned();
    let thresholds = config
        .eviction_thresholds()
        .map_err(|e| Error::InvalidPod {
            pod: "*".into(),
            reason: e.to_string(),
        })?;
    let stats = CgroupSummaryProvider {
        pods_cgroup: pods_cgroup.clone(),
        node_fs: opts.root_dir.clone(),
        ..Default::default()
    };
    // Image garbage collection (upstream `imageGCManager`), also the
    // eviction manager's node-level reclaim for disk pressure. containerd
    // 1.7 pins its sandbox image itself.
    let bad = |field: &str, e: String| Error::InvalidPod {
        pod: "*".into(),
        reason: format!("{field}: {e}"),
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
        .map_err(|e| bad("imageGC", e.to_string()))?,
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
        ),
    );
    let notifiers = kubelet_eviction::notifier::attach_memcg_notifiers(
        &eviction,
        std::path::Path::new("/sys/fs/cgroup/memory"),
        &pods_cgroup,
    );
    tracing::info!(notifiers, "eviction manager ready");

    let kubelet = Arc::new(
        Kubelet::with_parts(
            KubeletConfig {
                node_name: opts.node_name.clone(),
                root_dir: opts.root_dir.clone(),
                housekeeping_period: opts.housekeeping_period,
                max_pods: usize::try_from(config.max_pods).unwrap_or(110),
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
            },
        )?
        .with_container_gc(runtime.clone()),
    );

    // The node API (loopback only: it has no authentication yet).
    let server_stop = tokio::sync::watch::channel(false);
    let server = if config.enable_server {
        let addr = std::net::SocketAddr::new(config.address, config.port);
        let host = crate::node_api::KubeletNodeApi::new(
            kubelet.clone(),
            runtime.clone(),
            Arc::new(cri.clone()),
            serde_json::to_value(&config).unwrap_or_default(),
            opts.node_name.clone(),
            stats,
        );
        let server = kubelet_server::Server::bind(
            kubelet_server::ServerConfig::new(addr),
            Arc::new(host),
            metrics.clone(),
        )
        .await
        .map_err(|e| Error::InvalidPod {
            pod: "*".into(),
            reason: format!("node API on {addr}: {e}"),
        })?;
        tracing::info!(address = %server.local_addr(), "node API serving");
        let mut stop = server_stop.1.clone();
        Some(tokio::spawn(async move {
            let until = async move {
                let _ = stop.wait_for(|s| *s).await;
            };
            if let Err(e) = server.serve(until).await {
                tracing::error!(error = %e, "node API stopped");
            }
        }))
    } else {
        None
    };

    // Image GC every 5 minutes, log rotation every 10 seconds (upstream
    // `StartGarbageCollection`, `containerLogManager.Start`).
    let housekeeping_tasks = {
        let image_gc = image_gc.clone();
        let gc_enabled = !image_gc.policy().is_disabled();
        tokio::spawn(async move {
            if let Err(e) = image_gc.detect_images(std::time::SystemTime::now()).await {
                tracing::warn!(error = %e, "image GC: cannot detect images");
            }
            let mut images = tokio::time::interval(kubelet_kuberuntime::image_gc::IMAGE_GC_PERIOD);
            let mut logs = tokio::time::interval(kubelet_kuberuntime::logs::LOG_MONITOR_PERIOD);
            images.tick().await;
            loop {
                tokio::select! {
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
        })
    };

    // PLEG relist timings into the metrics (upstream records them in relist).
    let pleg_metrics = {
        let metrics = metrics.clone();
        let pleg = pleg.clone();
        tokio::spawn(async move {
            let mut seen = 0;
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
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
        })
    };

    // Everything that can fail at start has been checked: start the PLEG
    // and the pod sources.
    pleg.start().map_err(|e| Error::InvalidPod {
        pod: "*".into(),
        reason: format!("cannot start the PLEG: {e}"),
    })?;
    let mut builder = PodConfig::builder(opts.node_name.clone());
    if let Some(path) = &config.static_pod_path {
        builder = builder.file(path.clone());
    }
    let (pod_config, updates) = builder.start();
    if let Some(hook) = &opts.pod_config_hook {
        (hook.0)(&pod_config);
    }

    // PLEG events wake the pod's worker; ContainerRemoved needs no sync (upstream).
    let (events_tx, events_rx) = tokio::sync::mpsc::channel(1000);
    let forward = tokio::spawn(async move {
        while let Some(event) = pleg_events.recv().await {
            if event.kind == PodLifecycleEventType::ContainerRemoved {
                continue;
            }
            if events_tx.send(event.pod_uid).await.is_err() {
                return;
            }
        }
    });
    let pod_config = Arc::new(pod_config);
    // The CPU manager's cpusets pushed to running containers (static policy).
    let cpu_reconcile = cpu_reconcile.map(|r| {
        r.start(
            Arc::new(cri.clone()),
            kubelet.clone(),
            cache,
            pod_config.clone(),
        )
    });
    let ready_config = pod_config.clone();
    kubelet
        .run(
            updates,
            events_rx,
            Box::new(move || ready_config.sources_ready()),
            shutdown,
        )
        .await;
    if let Some(task) = cpu_reconcile {
        task.stop().await;
    }
    pleg.stop();
    pod_config.shutdown();
    forward.abort();
    pleg_metrics.abort();
    housekeeping_tasks.abort();
    prober.shutdown();
    let _ = server_stop.0.send(true);
    if let Some(server) = server {
        let _ = server.await;
    }
    Ok(())
}
