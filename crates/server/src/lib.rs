//! The kubelet's node API: the HTTPS server that answers `/healthz`, `/pods`,
//! `/metrics`, `/metrics/resource`, `/metrics/probes`, `/configz`,
//! `/containerLogs/{namespace}/{pod}/{container}`, `/stats/summary`, and the
//! streaming and command endpoints `/exec`, `/attach`, `/portForward` and
//! `/run`.
//!
//! Upstream this is `pkg/kubelet/server/server.go` (the handlers),
//! `pkg/kubelet/server/stats/` (the summary API; its types, upstream
//! `staging/src/k8s.io/kubelet/pkg/apis/stats/v1alpha1/types.go`, are the
//! core crate's [`kubelet_container::stats`], the same model the eviction
//! manager reads),
//! `pkg/kubelet/metrics/metrics.go` (the metric names and buckets) and
//! `pkg/kubelet/kuberuntime/logs/logs.go` (how a CRI log file is read back).
//!
//! # The main trait: [`NodeApi`]
//!
//! The server knows nothing about pods itself: it asks a host — the agent —
//! through [`NodeApi`], the equivalent of upstream's `HostInterface`
//! (`pkg/kubelet/server/server.go`). Every method is meant to be cheap (read
//! a snapshot the agent already keeps, no runtime round trip):
//!
//! | method | serves | upstream |
//! |---|---|---|
//! | [`NodeApi::pods`] | `GET /pods` | `GetPods` |
//! | [`NodeApi::sync_loop_last_entered`] | the `syncloop` check of `/healthz` | `SyncLoopHealthCheck` |
//! | [`NodeApi::pleg_healthy`] | the `pleg` check of `/healthz` | `pleg.Healthy` |
//! | [`NodeApi::kubelet_config`] | `GET /configz` | `configz.InstallHandler` |
//! | [`NodeApi::container_log`] | `GET /containerLogs/...` | `GetKubeletContainerLogs` |
//! | [`NodeApi::container_running`] | when `follow=true` stops | `isContainerRunning` in `logs.go` |
//! | [`NodeApi::stats_summary`] | `GET /stats/summary`, `GET /metrics/resource` | `SummaryProvider.Get`, `GetCPUAndMemoryStats` |
//! | [`NodeApi::stream_url`] | `/exec`, `/attach`, `/portForward` | `GetExec`, `GetAttach`, `GetPortForward` |
//! | [`NodeApi::run_in_container`] | `POST /run/...` | `RunInContainer` |
//!
//! # Metrics
//!
//! [`Metrics`] is a Prometheus registry holding the kubelet's metrics with
//! upstream's names, types, labels and buckets, plus the process metrics read
//! from `/proc/self`. The agent keeps a clone and records into it with cheap
//! methods such as [`Metrics::observe_pod_worker_duration`]; `/metrics`
//! renders it in the Prometheus text format 0.0.4. `/metrics/probes` serves
//! the prober's own registry ([`Metrics::observe_probe`]:
//! `prober_probe_total`, `prober_probe_duration_seconds`), and
//! `/metrics/resource` the CPU and memory figures metrics-server scrapes,
//! rendered from the stats summary on each request.
//!
//! # Security
//!
//! With [`ServerConfig::tls`] (see [`tls`]: rustls, the serving pair,
//! client CA, `tlsMinVersion`, `tlsCipherSuites`, a self-signed pair as
//! upstream's `InitializeTLS`) and [`ServerConfig::auth`] (see [`auth`]:
//! client certificates, TokenReview bearer tokens, anonymous requests;
//! `AlwaysAllow` or SubjectAccessReview over upstream's `nodes/<subresource>`
//! attributes, with both caches), every request is authenticated (`401`)
//! and authorized (`403`) before it is routed, as upstream's
//! `InstallAuthFilter`; such a server may bind any address. Without both it
//! is **loopback only**: [`Server::bind`] refuses a non-loopback address
//! unless [`ServerConfig::allow_non_loopback`] is set. The host log browser
//! `/logs`, `/debug/pprof`, `/checkpoint` and `/runningpods` are
//! deliberately absent: they answer `404` like any unknown path (after
//! authorization, as upstream). The streaming endpoints proxy the client's
//! upgraded connection to the runtime's streaming server without its
//! `Authorization` header. Routes live in one
//! explicit table ([`ROUTES`]); unknown paths and methods are never used as
//! metric labels. Container log files are opened without following
//! symlinks (`O_NOFOLLOW` on the file and its directory) and must be
//! regular files; names with `/`, `..` or NUL are refused with `400` before
//! the host is asked.
//!
//! # Differences from upstream, and what is not done yet
//!
//! - A client certificate from another CA, or expired, ends the TLS
//!   handshake; upstream completes it and answers `401`.
//! - `/pods` with no pods serves `"items":[]` where Go writes `null`; both
//!   parse in kubectl, `[]` also parses in `k8s-openapi`.
//! - `/containerLogs` reads the CRI log format only (not Docker's JSON
//!   format), serves `stream=Stdout|Stderr` as with upstream's
//!   `PodLogsQuerySplitStreams` gate on, and a follower polls the end of the
//!   file (every [`ServerConfig::log_poll_interval`]) instead of using
//!   inotify; at most [`ServerConfig::max_log_streams`] streams run at once.
//! - Not served: `/stats` (cAdvisor), `/stats/container`,
//!   `/metrics/cadvisor`, `/statusz`, `/flagz`, and the swap series of
//!   `/metrics/resource` (the summary has no swap figures); not recorded:
//!   `kubelet_http_inflight_requests` and the many other kubelet metrics
//!   beyond those listed on [`Metrics`].
//!
//! # Example
//!
//! ```no_run
//! use std::sync::Arc;
//! use std::time::Instant;
//! use async_trait::async_trait;
//! use k8s_openapi::api::core::v1::Pod;
//! use kubelet_server::{ContainerLog, Error, LogLookup, Metrics, NodeApi, Server, ServerConfig, Summary};
//!
//! struct Agent;
//!
//! #[async_trait]
//! impl NodeApi for Agent {
//!     async fn pods(&self) -> Vec<Pod> { Vec::new() }
//!     fn sync_loop_last_entered(&self) -> Option<Instant> { Some(Instant::now()) }
//!     async fn kubelet_config(&self) -> serde_json::Value { serde_json::json!({"syncFrequency": "1m0s"}) }
//!     async fn container_log(&self, _ns: &str, _pod: &str, _ctr: &str, _previous: bool) -> LogLookup {
//!         LogLookup::PodNotFound
//!     }
//!     async fn stats_summary(&self) -> Result<Summary, Error> { Err(Error::Host("no stats yet".into())) }
//! }
//!
//! # async fn run() -> Result<(), Error> {
//! let metrics = Metrics::new()?;
//! let server = Server::bind(
//!     ServerConfig::new("127.0.0.1:10250".parse().map_err(|_| Error::Host("addr".into()))?),
//!     Arc::new(Agent),
//!     metrics.clone(),
//! )
//! .await?;
//! println!("serving on {}", server.local_addr());
//! metrics.set_running_pods(0);
//! server.serve(async { let _ = tokio::signal::ctrl_c().await; }).await?;
//! # Ok(())
//! # }
//! ```

pub mod auth;
mod body;
mod healthz;
pub mod logs;
mod metrics;
mod resource_metrics;
mod router;
mod server;
mod stream;
pub mod tls;

use std::path::PathBuf;
use std::time::Instant;

use async_trait::async_trait;
use k8s_openapi::api::core::v1::Pod;

pub use healthz::{HEALTHZ_CHECKS, HealthCheck};
pub use kubelet_container::stats::Summary;
pub use metrics::{
    ContainerStateLabel, Metrics, PodWorkerOperation, ProbeLabels, ProbeResultLabel,
};
pub use router::{ROUTES, Route, RouteId, Segment};
pub use server::{Server, ServerAuth, ServerConfig};
pub use stream::{StreamLookup, StreamOptions, StreamRequest};

/// The one error type of this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Binding or accepting on the listener failed.
    #[error("listener: {0}")]
    Listen(#[source] std::io::Error),
    /// The address is not a loopback address and
    /// [`ServerConfig::allow_non_loopback`] was not set: without
    /// authentication the node API must not be reachable from the network.
    #[error("refusing to serve the unauthenticated node API on non-loopback address {0}")]
    NonLoopbackAddress(std::net::SocketAddr),
    /// A Prometheus registry operation or the text encoding failed.
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// The host ([`NodeApi`]) could not answer; the message is served with a 500.
    #[error("{0}")]
    Host(String),
    /// A container log file could not be opened or read.
    #[error("container log {path}: {source}")]
    Log {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        #[source]
        source: std::io::Error,
    },
    /// A container log path is a symlink, or not a regular file.
    #[error("container log {0} is not a regular file (symlinks are refused)")]
    UnsafeLogFile(PathBuf),
    /// JSON encoding failed.
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
    /// The TLS configuration cannot be used (a file, a cipher suite, a
    /// version); the message names the field or file.
    #[error("node API TLS: {0}")]
    Tls(String),
}

/// Where a container's log is, as answered by [`NodeApi::container_log`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LogLookup {
    /// The log file of the container (or of its previous instance).
    Found(ContainerLog),
    /// No pod with that namespace and name: `404 pod "..." does not exist`.
    PodNotFound,
    /// The pod has no container of that name: `404 container "..." not found in pod "..."`.
    ContainerNotFound,
    /// The container exists but there is no log to serve (for example
    /// `previous=true` and no previous instance): `400` with this message, as
    /// upstream's `GetKubeletContainerLogs` errors.
    Unavailable(String),
}

/// What the host answers for `POST /run/...` ([`NodeApi::run_in_container`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RunOutcome {
    /// The command ran and exited 0: its stdout, then its stderr.
    Output(Vec<u8>),
    /// No pod with that namespace and name (and UID, when given):
    /// `404 pod does not exist`.
    PodNotFound,
    /// No running container of that name, a runtime error, or the command
    /// exited non-zero (upstream's `command '...' exited with N: ...`):
    /// `500` with this message.
    Failed(String),
}

/// A container log file, as the agent knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerLog {
    /// The CRI log file, for example
    /// `/var/log/pods/<namespace>_<name>_<uid>/<container>/<restartCount>.log`.
    /// Neither the file nor its directory may be a symlink.
    pub path: PathBuf,
    /// The CRI container ID, passed to [`NodeApi::container_running`] while
    /// following. `None` follows until the client goes away.
    pub container_id: Option<String>,
}

/// What the node API server needs from the kubelet: upstream's
/// `HostInterface` (`pkg/kubelet/server/server.go`) reduced to the read-only
/// endpoints this crate serves.
///
/// Every method is called on the request path, so each should read a
/// snapshot the agent already keeps rather than call the runtime.
#[async_trait]
pub trait NodeApi: Send + Sync + 'static {
    /// The pods bound to this node, with their current status, as upstream's
    /// `GetPods` (served as a `v1` `PodList` by `GET /pods`).
    async fn pods(&self) -> Vec<Pod>;

    /// When the sync loop last started an iteration (upstream's
    /// `syncLoopMonitor`). `None` means it has not run yet, which upstream
    /// counts as healthy. `/healthz` fails the `syncloop` check when this is
    /// older than [`ServerConfig::sync_loop_threshold`] (upstream:
    /// `max(2 × syncFrequency, 5m)` in `Kubelet.SyncLoopHealthCheck`).
    fn sync_loop_last_entered(&self) -> Option<Instant>;

    /// The PLEG's health (upstream `pleg.Healthy`): the `pleg` check of
    /// `/healthz`. Healthy unless implemented.
    fn pleg_healthy(&self) -> Result<(), String> {
        Ok(())
    }

    /// The kubelet's effective `KubeletConfiguration` as JSON. The server
    /// wraps it as `{"kubeletconfig": ...}`, the shape of upstream's
    /// `/configz`.
    async fn kubelet_config(&self) -> serde_json::Value;

    /// Where the log of container `container` of pod `namespace/pod` is;
    /// with `previous`, the log of the previous (terminated) instance. The
    /// names have already been checked: non-empty, no `/`, no `..`, no NUL.
    async fn container_log(
        &self,
        namespace: &str,
        pod: &str,
        container: &str,
        previous: bool,
    ) -> LogLookup;

    /// Whether the container is still running; following a log stops once it
    /// is not (upstream's `isContainerRunning` in
    /// `pkg/kubelet/kuberuntime/logs/logs.go`). Asked at most about once a
    /// second per follower. The default says always running.
    async fn container_running(&self, container_id: &str) -> bool {
        let _ = container_id;
        true
    }

    /// The stats summary served by `GET /stats/summary` (upstream's
    /// `SummaryProvider.Get`). An error answers `500 Internal Error: ...`.
    async fn stats_summary(&self) -> Result<Summary, Error>;

    /// Prepares a streaming session (`/exec`, `/attach`, `/portForward`)
    /// with the runtime (upstream `GetExec`, `GetAttach`,
    /// `GetPortForward`) and answers its streaming URL, which the server
    /// proxies the client's upgraded connection to. The names have been
    /// checked as for [`NodeApi::container_log`]. The default refuses.
    async fn stream_url(&self, request: &StreamRequest) -> StreamLookup {
        let _ = request;
        StreamLookup::Failed("streaming is not supported by this kubelet".into())
    }

    /// Runs `command` to completion in the running container `container`
    /// of pod `namespace/pod` (and UID `uid` when the path names one) and
    /// answers its output, for `POST /run/...` (upstream `RunInContainer`:
    /// CRI `ExecSync` without a timeout). The names have been checked as
    /// for [`NodeApi::container_log`]. The default refuses.
    async fn run_in_container(
        &self,
        namespace: &str,
        pod: &str,
        uid: Option<&str>,
        container: &str,
        command: &[String],
    ) -> RunOutcome {
        let _ = (namespace, pod, uid, container, command);
        RunOutcome::Failed("running commands is not supported by this kubelet".into())
    }
}
