//! `kubelet`: a kubelet made from this workspace's crates.
//!
//! It runs the static pods of `--pod-manifest-path` on the CRI runtime at
//! `--container-runtime-endpoint`, as upstream's kubelet does without an API
//! server; with `--kubeconfig` it also runs the pods the API server binds
//! to this node. Flags keep upstream's names; a `KubeletConfiguration` file
//! (`--config`) sets the same fields, and flags win over it. SIGTERM or
//! SIGINT stops the kubelet and leaves the pods running.
//!
//! ```text
//! cargo run --release --example kubelet -- \
//!     --pod-manifest-path examples/manifests \
//!     --container-runtime-endpoint unix:///run/containerd/containerd.sock
//! ```
//!
//! This file only parses flags and wires; the kubelet is `kubelet-agent`.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use kubelet_rs::agent::config::{Flags, KubeletConfiguration};
use kubelet_rs::agent::standalone::{self, StandaloneOptions};

/// Upstream's flags (a subset); see `kubelet --help` upstream.
#[derive(Debug, Parser)]
#[command(name = "kubelet", version, about = "A standalone kubelet in Rust")]
struct Cli {
    /// A KubeletConfiguration file (kubelet.config.k8s.io/v1beta1, YAML).
    /// Upstream fields this kubelet cannot honour are refused, harmless ones
    /// ignored and listed at start, and unknown ones are errors.
    #[arg(long)]
    config: Option<PathBuf>,
    /// The static pod manifests: a directory or one file.
    #[arg(long)]
    pod_manifest_path: Option<PathBuf>,
    /// The CRI endpoint (unix:///run/containerd/containerd.sock).
    #[arg(long)]
    container_runtime_endpoint: Option<String>,
    /// Where pod directories live.
    #[arg(long, default_value = "/var/lib/kubelet")]
    root_dir: PathBuf,
    /// The node name, instead of the hostname.
    #[arg(long)]
    hostname_override: Option<String>,
    /// cgroupfs (systemd is refused: nothing here talks to systemd).
    #[arg(long)]
    cgroup_driver: Option<String>,
    /// Create QoS-level cgroups (kubepods/burstable, kubepods/besteffort).
    #[arg(long)]
    cgroups_per_qos: Option<bool>,
    /// The root cgroup for pods.
    #[arg(long)]
    cgroup_root: Option<String>,
    /// Resources reserved for Kubernetes daemons (cpu=100m,memory=100Mi,pid=1000).
    #[arg(long)]
    kube_reserved: Option<String>,
    /// Resources reserved for the system.
    #[arg(long)]
    system_reserved: Option<String>,
    /// Hard eviction thresholds (memory.available<100Mi,...); "" for none
    /// (required where the memory controller is on cgroup v2).
    #[arg(long)]
    eviction_hard: Option<String>,
    /// none or static.
    #[arg(long)]
    cpu_manager_policy: Option<String>,
    /// How often the CPU manager updates containers' cpusets (10s).
    #[arg(long)]
    cpu_manager_reconcile_period: Option<String>,
    /// CPUs reserved for the system (0,1).
    #[arg(long)]
    reserved_cpus: Option<String>,
    /// None (Static is refused: reservedMemory is not read).
    #[arg(long)]
    memory_manager_policy: Option<String>,
    /// none, best-effort, restricted or single-numa-node.
    #[arg(long)]
    topology_manager_policy: Option<String>,
    /// The most pods this node runs.
    #[arg(long)]
    max_pods: Option<i64>,
    /// Run the node API server (/healthz, /pods, /metrics, ...).
    #[arg(long)]
    enable_server: Option<bool>,
    /// The node API's address (default 0.0.0.0 when it authenticates
    /// requests, 127.0.0.1 when it serves anonymous requests with
    /// AlwaysAllow, which a non-loopback address refuses).
    #[arg(long)]
    address: Option<std::net::IpAddr>,
    /// The node API's serving certificate (default: a self-signed pair in
    /// --cert-dir).
    #[arg(long)]
    tls_cert_file: Option<String>,
    /// The key of --tls-cert-file.
    #[arg(long)]
    tls_private_key_file: Option<String>,
    /// Where the self-signed serving pair is kept (default
    /// <root-dir>/pki).
    #[arg(long)]
    cert_dir: Option<PathBuf>,
    /// The CA client certificates of node API requests are verified
    /// against.
    #[arg(long)]
    client_ca_file: Option<String>,
    /// Serve node API requests without credentials as system:anonymous.
    #[arg(long)]
    anonymous_auth: Option<bool>,
    /// Authenticate bearer tokens through the API server's TokenReview.
    #[arg(long)]
    authentication_token_webhook: Option<bool>,
    /// AlwaysAllow or Webhook (SubjectAccessReview).
    #[arg(long)]
    authorization_mode: Option<String>,
    /// The node API's port (default 10250).
    #[arg(long)]
    port: Option<u16>,
    /// The API server's kubeconfig: cluster mode (register the Node, run
    /// the pods bound to it, report their status). Without it the kubelet
    /// runs standalone.
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// The node's IP addresses, comma separated (default: the address of
    /// the default route's interface).
    #[arg(long, value_delimiter = ',')]
    node_ip: Vec<std::net::IpAddr>,
    /// Labels to register the node with (key=value,...).
    #[arg(long)]
    node_labels: Option<String>,
    /// Register the node with the API server.
    #[arg(long)]
    register_node: Option<bool>,
    /// Taints to register the node with (key=value:Effect,...).
    #[arg(long)]
    register_with_taints: Option<String>,
    /// A URL serving pod manifests (staticPodURL).
    #[arg(long)]
    manifest_url: Option<String>,
    /// The cluster DNS servers' IPs, comma separated: the nameservers of
    /// dnsPolicy ClusterFirst pods (without them those pods get the host's
    /// DNS, with a MissingClusterDNS event).
    #[arg(long, value_delimiter = ',')]
    cluster_dns: Option<Vec<String>>,
    /// The cluster's DNS domain (cluster.local): the search path of
    /// ClusterFirst pods and the pods' /etc/hosts.
    #[arg(long)]
    cluster_domain: Option<String>,
    /// The host's resolver file pods' DNS is based on (/etc/resolv.conf;
    /// "" for none).
    #[arg(long)]
    resolv_conf: Option<String>,
    /// Log verbosity (0: info; 4: debug; 6: trace).
    #[arg(short = 'v', long = "v", default_value_t = 0)]
    verbosity: u8,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Print everything the kubelet would do with a pod manifest on this node
    /// and configuration (QoS, cgroups and the values written, CRI resources,
    /// oom_score_adj, CPUs, eviction rank), without running it.
    Explain {
        /// The pod manifest (YAML or JSON).
        manifest: PathBuf,
        /// Output format: text (default) or json.
        #[arg(short = 'o', long = "output", default_value = "text")]
        output: String,
    },
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; stop with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let level = match cli.verbosity {
        0..=3 => "info",
        4..=5 => "debug",
        _ => "trace",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level)),
        )
        // Logs go to stderr, as upstream's klog; stdout is for `explain`.
        .with_writer(std::io::stderr)
        .init();

    let mut config = match &cli.config {
        Some(path) => match KubeletConfiguration::from_file(path) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("kubelet: {e}");
                return std::process::ExitCode::FAILURE;
            }
        },
        None => KubeletConfiguration::default(),
    };
    let flags = Flags {
        pod_manifest_path: cli.pod_manifest_path,
        container_runtime_endpoint: cli.container_runtime_endpoint,
        cgroup_driver: cli.cgroup_driver,
        cgroups_per_qos: cli.cgroups_per_qos,
        cgroup_root: cli.cgroup_root,
        kube_reserved: cli.kube_reserved,
        system_reserved: cli.system_reserved,
        eviction_hard: cli.eviction_hard,
        cpu_manager_policy: cli.cpu_manager_policy,
        cpu_manager_reconcile_period: cli.cpu_manager_reconcile_period,
        reserved_cpus: cli.reserved_cpus,
        memory_manager_policy: cli.memory_manager_policy,
        topology_manager_policy: cli.topology_manager_policy,
        max_pods: cli.max_pods,
        enable_server: cli.enable_server,
        address: cli.address,
        port: cli.port,
        tls_cert_file: cli.tls_cert_file,
        tls_private_key_file: cli.tls_private_key_file,
        client_ca_file: cli.client_ca_file,
        anonymous_auth: cli.anonymous_auth,
        authentication_token_webhook: cli.authentication_token_webhook,
        authorization_mode: cli.authorization_mode,
        manifest_url: cli.manifest_url,
        register_node: cli.register_node,
        register_with_taints: cli.register_with_taints,
        cluster_dns: cli.cluster_dns,
        cluster_domain: cli.cluster_domain,
        resolv_conf: cli.resolv_conf,
    };
    if let Err(e) = config.apply_flags(&flags).and_then(|()| config.validate()) {
        eprintln!("kubelet: {e}");
        return std::process::ExitCode::FAILURE;
    }
    let node_name = cli
        .hostname_override
        .map(|h| h.to_lowercase())
        .unwrap_or_else(standalone::default_node_name);
    if let Some(Command::Explain { manifest, output }) = cli.command {
        return explain(&config, &manifest, &node_name, &output);
    }
    let node_labels = match cli
        .node_labels
        .as_deref()
        .map(kubelet_rs::agent::config::parse_node_labels)
        .transpose()
    {
        Ok(labels) => labels.unwrap_or_default(),
        Err(e) => {
            eprintln!("kubelet: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let mut opts = StandaloneOptions::new(node_name);
    opts.root_dir = cli.root_dir;
    opts.kubeconfig = cli.kubeconfig;
    opts.node_ips = cli.node_ip;
    opts.node_labels = node_labels;
    opts.cert_dir = cli.cert_dir;
    opts.runtime_connect_timeout = Duration::from_secs(30);
    match standalone::run(config, opts, shutdown_signal()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kubelet: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn explain(
    config: &KubeletConfiguration,
    manifest: &std::path::Path,
    node_name: &str,
    output: &str,
) -> std::process::ExitCode {
    use kubelet_rs::agent::explain::{Host, explain_manifest};
    let result =
        Host::current().and_then(|host| explain_manifest(config, manifest, node_name, &host));
    match (result, output) {
        (Ok(e), "json") => match serde_json::to_string_pretty(&e) {
            Ok(json) => {
                println!("{json}");
                std::process::ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("kubelet explain: {e}");
                std::process::ExitCode::FAILURE
            }
        },
        (Ok(e), "text") => {
            print!("{e}");
            std::process::ExitCode::SUCCESS
        }
        (Ok(_), other) => {
            eprintln!("kubelet explain: unknown output format {other:?} (text or json)");
            std::process::ExitCode::FAILURE
        }
        (Err(e), _) => {
            eprintln!("kubelet explain: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
