//! A standalone kubelet: static pods from a directory, run on a CRI
//! runtime, as upstream's kubelet runs without an API server.
//!
//! [`run`] builds the kubelet with [`KubeletBuilder`] (the CRI client, the
//! runtime manager, the PLEG and its pod cache, the pod config's file
//! source, the pod workers and the sync loop) and runs it. The example
//! binary parses flags and calls it; tests call it in-process against the
//! containerd test bed.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use kubelet_podconfig::PodConfig;

use crate::StatusManager;
use crate::builder::{KubeletBuilder, StartError};
use crate::config::KubeletConfiguration;

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
    /// The container garbage collection period (upstream
    /// `ContainerGCPeriod`, 1 min): what removes terminated pods' dead
    /// containers and sandboxes.
    pub container_gc_period: Duration,
    /// Where pod statuses are recorded; keep a clone to read them.
    pub statuses: Arc<StatusManager>,
    /// Adds pod sources to the pod config.
    pub pod_config_hook: Option<PodConfigHook>,
    /// The API server's kubeconfig (`--kubeconfig`): cluster mode. `None`
    /// runs standalone (upstream: no API client, static pods only).
    pub kubeconfig: Option<PathBuf>,
    /// The node's addresses (`--node-ip`); empty: the address of the
    /// interface of the default route, as upstream.
    pub node_ips: Vec<std::net::IpAddr>,
    /// Labels the node registers with (`--node-labels`).
    pub node_labels: std::collections::BTreeMap<String, String>,
    /// Where the node API's self-signed serving pair is kept when
    /// `tlsCertFile` is not set (`--cert-dir`); `None`: `<root_dir>/pki`,
    /// as upstream's default `/var/lib/kubelet/pki`.
    pub cert_dir: Option<PathBuf>,
}

impl StandaloneOptions {
    /// Upstream's defaults for `node_name`.
    pub fn new(node_name: impl Into<String>) -> Self {
        Self {
            node_name: node_name.into(),
            root_dir: PathBuf::from("/var/lib/kubelet"),
            runtime_connect_timeout: Duration::from_secs(30),
            housekeeping_period: crate::HOUSEKEEPING_PERIOD,
            container_gc_period: crate::CONTAINER_GC_PERIOD,
            statuses: Arc::new(StatusManager::default()),
            pod_config_hook: None,
            kubeconfig: None,
            node_ips: Vec::new(),
            node_labels: std::collections::BTreeMap::new(),
            cert_dir: None,
        }
    }
}

/// The lowercase hostname, upstream's default node name.
pub fn default_node_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_lowercase())
        .unwrap_or_else(|_| "localhost".into())
}

/// Runs a standalone kubelet until `shutdown` completes: [`KubeletBuilder`]
/// then [`BuiltKubelet::run`](crate::builder::BuiltKubelet::run). Pods keep
/// running afterwards, as upstream's kubelet leaves them on SIGTERM.
pub async fn run(
    config: KubeletConfiguration,
    opts: StandaloneOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<(), StartError> {
    KubeletBuilder::new(config, opts)
        .build()
        .await?
        .run(shutdown)
        .await
}
