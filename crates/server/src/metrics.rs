//! The kubelet's Prometheus metrics, with upstream's names, types, labels and
//! buckets (`pkg/kubelet/metrics/metrics.go`, the HTTP ones from
//! `pkg/kubelet/server/metrics/metrics.go`), plus the process metrics
//! (`process_resident_memory_bytes`, `process_cpu_seconds_total`,
//! `process_start_time_seconds`, `process_open_fds`, ...) read from
//! `/proc/self` by the `prometheus` crate's process collector.

use prometheus::{
    CounterVec, Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, Opts, Registry,
    TextEncoder,
};

use crate::Error;

/// Upstream's `metrics.DefBuckets` (Prometheus' default buckets).
const DEF_BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Upstream's `podStartupDurationBuckets`.
const POD_STARTUP_DURATION_BUCKETS: [f64; 25] = [
    0.5, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 20.0, 30.0, 45.0, 60.0, 120.0, 180.0, 240.0,
    300.0, 360.0, 480.0, 600.0, 900.0, 1200.0, 1800.0, 2700.0, 3600.0,
];

/// The `operation_type` label of `kubelet_pod_worker_duration_seconds`:
/// upstream's `kubetypes.SyncPodType` strings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PodWorkerOperation {
    /// `sync`
    Sync,
    /// `update`
    Update,
    /// `create`
    Create,
    /// `kill`
    Kill,
}

impl PodWorkerOperation {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            PodWorkerOperation::Sync => "sync",
            PodWorkerOperation::Update => "update",
            PodWorkerOperation::Create => "create",
            PodWorkerOperation::Kill => "kill",
        }
    }
}

/// The `container_state` label of `kubelet_running_containers`: upstream's
/// `kubecontainer.State` strings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ContainerStateLabel {
    /// `created`
    Created,
    /// `running`
    Running,
    /// `exited`
    Exited,
    /// `unknown`
    Unknown,
}

impl ContainerStateLabel {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            ContainerStateLabel::Created => "created",
            ContainerStateLabel::Running => "running",
            ContainerStateLabel::Exited => "exited",
            ContainerStateLabel::Unknown => "unknown",
        }
    }
}

/// The kubelet's metrics registry. Cloning is cheap and every clone records
/// into the same metrics; recording methods take `&self` and never block
/// for long (atomic adds, and a short lock the first time a label value is
/// seen).
///
/// Label values of [`Metrics::observe_runtime_operation`] and
/// [`Metrics::inc_evictions`] must come from a fixed set (CRI method names,
/// eviction signals), never from request input.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    running_pods: Gauge,
    running_containers: GaugeVec,
    pod_start_duration: Histogram,
    pod_worker_duration: HistogramVec,
    pleg_relist_duration: Histogram,
    pleg_relist_interval: Histogram,
    runtime_operations: CounterVec,
    runtime_operations_duration: HistogramVec,
    runtime_operations_errors: CounterVec,
    evictions: CounterVec,
    rest_client_requests: CounterVec,
    http_requests: CounterVec,
    http_requests_duration: HistogramVec,
    probes: Registry,
    probe_total: CounterVec,
    probe_duration: HistogramVec,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// component-base prefixes the help of ALPHA metrics with `[ALPHA] `.
fn opts(name: &str, help: &str) -> Opts {
    Opts::new(name, format!("[ALPHA] {help}")).subsystem("kubelet")
}

fn hopts(name: &str, help: &str, buckets: Vec<f64>) -> HistogramOpts {
    HistogramOpts::new(name, format!("[ALPHA] {help}"))
        .subsystem("kubelet")
        .buckets(buckets)
}

impl Metrics {
    /// A registry with all the metrics registered, including the process
    /// collector on Linux.
    pub fn new() -> Result<Self, Error> {
        let registry = Registry::new();
        let running_pods = Gauge::with_opts(opts(
            "running_pods",
            "Number of pods that have a running pod sandbox",
        ))?;
        let running_containers = GaugeVec::new(
            opts(
                "running_containers",
                "Number of containers currently running",
            ),
            &["container_state"],
        )?;
        let pod_start_duration = Histogram::with_opts(hopts(
            "pod_start_duration_seconds",
            "Duration in seconds from kubelet seeing a pod for the first time to the pod starting to run",
            POD_STARTUP_DURATION_BUCKETS.to_vec(),
        ))?;
        let pod_worker_duration = HistogramVec::new(
            hopts(
                "pod_worker_duration_seconds",
                "Duration in seconds to sync a single pod. Broken down by operation type: create, update, or sync",
                DEF_BUCKETS.to_vec(),
            ),
            &["operation_type"],
        )?;
        let pleg_relist_duration = Histogram::with_opts(hopts(
            "pleg_relist_duration_seconds",
            "Duration in seconds for relisting pods in PLEG.",
            DEF_BUCKETS.to_vec(),
        ))?;
        let pleg_relist_interval = Histogram::with_opts(hopts(
            "pleg_relist_interval_seconds",
            "Interval in seconds between relisting in PLEG.",
            DEF_BUCKETS.to_vec(),
        ))?;
        let runtime_operations = CounterVec::new(
            opts(
                "runtime_operations_total",
                "Cumulative number of runtime operations by operation type.",
            ),
            &["operation_type"],
        )?;
        let runtime_operations_duration = HistogramVec::new(
            hopts(
                "runtime_operations_duration_seconds",
                "Duration in seconds of runtime operations. Broken down by operation type.",
                // metrics.ExponentialBuckets(.005, 2.5, 14)
                prometheus::exponential_buckets(0.005, 2.5, 14)?,
            ),
            &["operation_type"],
        )?;
        let runtime_operations_errors = CounterVec::new(
            opts(
                "runtime_operations_errors_total",
                "Cumulative number of runtime operation errors by operation type.",
            ),
            &["operation_type"],
        )?;
        let evictions = CounterVec::new(
            opts(
                "evictions",
                "Cumulative number of pod evictions by eviction signal",
            ),
            &["eviction_signal"],
        )?;
        // client-go's `rest_client_requests_total` (no `kubelet_` prefix,
        // as upstream registers it).
        let rest_client_requests = CounterVec::new(
            Opts::new(
                "rest_client_requests_total",
                "[ALPHA] Number of HTTP requests, partitioned by status code, method, and host.",
            ),
            &["code", "host", "method"],
        )?;
        let http_requests = CounterVec::new(
            opts(
                "http_requests_total",
                "Number of the http requests received since the server started",
            ),
            &["method", "path", "server_type", "long_running"],
        )?;
        let http_requests_duration = HistogramVec::new(
            hopts(
                "http_requests_duration_seconds",
                "Duration in seconds to serve http requests",
                DEF_BUCKETS.to_vec(),
            ),
            &["method", "path", "server_type", "long_running"],
        )?;

        registry.register(Box::new(running_pods.clone()))?;
        registry.register(Box::new(running_containers.clone()))?;
        registry.register(Box::new(pod_start_duration.clone()))?;
        registry.register(Box::new(pod_worker_duration.clone()))?;
        registry.register(Box::new(pleg_relist_duration.clone()))?;
        registry.register(Box::new(pleg_relist_interval.clone()))?;
        registry.register(Box::new(runtime_operations.clone()))?;
        registry.register(Box::new(runtime_operations_duration.clone()))?;
        registry.register(Box::new(runtime_operations_errors.clone()))?;
        registry.register(Box::new(evictions.clone()))?;
        registry.register(Box::new(rest_client_requests.clone()))?;
        registry.register(Box::new(http_requests.clone()))?;
        registry.register(Box::new(http_requests_duration.clone()))?;
        #[cfg(target_os = "linux")]
        registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;

        // The prober's own registry, served by `/metrics/probes` (upstream
        // `InstallAuthNotRequiredHandlers`: `prober.ProberResults`,
        // `prober.ProberDuration` and the process start time).
        let probes = Registry::new();
        let probe_total = CounterVec::new(
            Opts::new(
                "probe_total",
                "[BETA] Cumulative number of a liveness, readiness or startup probe for a container by result.",
            )
            .subsystem("prober"),
            &["probe_type", "result", "container", "pod", "namespace", "pod_uid"],
        )?;
        let probe_duration = HistogramVec::new(
            HistogramOpts::new(
                "probe_duration_seconds",
                "[ALPHA] Duration in seconds for a probe response.",
            )
            .subsystem("prober")
            .buckets(DEF_BUCKETS.to_vec()),
            &["probe_type", "container", "pod", "namespace"],
        )?;
        let start_time = Gauge::with_opts(Opts::new(
            "process_start_time_seconds",
            "[ALPHA] Start time of the process since unix epoch in seconds.",
        ))?;
        start_time.set(process_start_time_seconds());
        probes.register(Box::new(probe_total.clone()))?;
        probes.register(Box::new(probe_duration.clone()))?;
        probes.register(Box::new(start_time))?;

        // Show every running_containers series from the start, as upstream
        // sets them all on each relist.
        for state in [
            ContainerStateLabel::Created,
            ContainerStateLabel::Running,
            ContainerStateLabel::Exited,
            ContainerStateLabel::Unknown,
        ] {
            running_containers
                .with_label_values(&[state.as_str()])
                .set(0.0);
        }

        Ok(Metrics {
            registry,
            running_pods,
            running_containers,
            pod_start_duration,
            pod_worker_duration,
            pleg_relist_duration,
            pleg_relist_interval,
            runtime_operations,
            runtime_operations_duration,
            runtime_operations_errors,
            evictions,
            rest_client_requests,
            http_requests,
            http_requests_duration,
            probes,
            probe_total,
            probe_duration,
        })
    }

    /// The underlying registry, to register more collectors.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// `kubelet_running_pods`: pods with a running sandbox.
    pub fn set_running_pods(&self, n: i64) {
        self.running_pods.set(n as f64);
    }

    /// `kubelet_running_containers{container_state}`.
    pub fn set_running_containers(&self, state: ContainerStateLabel, n: i64) {
        self.running_containers
            .with_label_values(&[state.as_str()])
            .set(n as f64);
    }

    /// `kubelet_pod_start_duration_seconds`: from first seeing a pod to its
    /// containers running.
    pub fn observe_pod_start_duration(&self, seconds: f64) {
        self.pod_start_duration.observe(seconds);
    }

    /// `kubelet_pod_worker_duration_seconds{operation_type}`: one pod sync.
    pub fn observe_pod_worker_duration(&self, op: PodWorkerOperation, seconds: f64) {
        self.pod_worker_duration
            .with_label_values(&[op.as_str()])
            .observe(seconds);
    }

    /// `kubelet_pleg_relist_duration_seconds`.
    pub fn observe_pleg_relist_duration(&self, seconds: f64) {
        self.pleg_relist_duration.observe(seconds);
    }

    /// `kubelet_pleg_relist_interval_seconds`.
    pub fn observe_pleg_relist_interval(&self, seconds: f64) {
        self.pleg_relist_interval.observe(seconds);
    }

    /// One CRI call, as upstream's `instrumentedRuntimeService`
    /// (`pkg/kubelet/kuberuntime/instrumented_services.go`): increments
    /// `kubelet_runtime_operations_total`, observes
    /// `kubelet_runtime_operations_duration_seconds` and, when `failed`,
    /// increments `kubelet_runtime_operations_errors_total`, all labelled
    /// `operation_type` (upstream's names: `run_podsandbox`,
    /// `create_container`, `list_containers`, ...).
    pub fn observe_runtime_operation(&self, operation: &str, seconds: f64, failed: bool) {
        self.runtime_operations
            .with_label_values(&[operation])
            .inc();
        self.runtime_operations_duration
            .with_label_values(&[operation])
            .observe(seconds);
        if failed {
            self.runtime_operations_errors
                .with_label_values(&[operation])
                .inc();
        }
    }

    /// `kubelet_evictions{eviction_signal}`: one pod evicted for `signal`
    /// (`memory.available`, `nodefs.available`, ...).
    pub fn inc_evictions(&self, signal: &str) {
        self.evictions.with_label_values(&[signal]).inc();
    }

    /// `rest_client_requests_total{code,host,method}`: one request of the
    /// kubelet's API server client (client-go's metric); `code` is the
    /// HTTP status, or `<error>` when no response came.
    pub fn inc_rest_client_request(&self, code: &str, host: &str, method: &str) {
        self.rest_client_requests
            .with_label_values(&[code, host, method])
            .inc();
    }

    /// `kubelet_http_requests_total` and
    /// `kubelet_http_requests_duration_seconds`; `method` and `path` are
    /// already bucketed (a known method or `other`, a route name or `other`).
    pub(crate) fn observe_http_request(&self, method: &str, path: &str, seconds: f64) {
        let labels = [method, path, "readonly", "false"];
        self.http_requests.with_label_values(&labels).inc();
        self.http_requests_duration
            .with_label_values(&labels)
            .observe(seconds);
    }

    /// One probe that ran (upstream `worker.doProbe`):
    /// `prober_probe_total{probe_type,result,container,pod,namespace,pod_uid}`
    /// and, for a successful or unknown result, `prober_probe_duration_seconds`.
    /// `probe_type` is `Liveness`, `Readiness` or `Startup`; `result` is
    /// `successful`, `failed` or `unknown`. The names come from the pods of
    /// this node; [`Metrics::forget_probe`] drops them with the worker.
    pub fn observe_probe(&self, probe: &ProbeLabels<'_>, result: ProbeResultLabel, seconds: f64) {
        self.probe_total
            .with_label_values(&[
                probe.probe_type,
                result.as_str(),
                probe.container,
                probe.pod,
                probe.namespace,
                probe.pod_uid,
            ])
            .inc();
        if result != ProbeResultLabel::Failed {
            self.probe_duration
                .with_label_values(&[
                    probe.probe_type,
                    probe.container,
                    probe.pod,
                    probe.namespace,
                ])
                .observe(seconds);
        }
    }

    /// A probe worker stopped: its series go away, as upstream's worker
    /// deletes its label sets when it exits (so pod churn does not grow the
    /// registry).
    pub fn forget_probe(&self, probe: &ProbeLabels<'_>) {
        for result in [
            ProbeResultLabel::Successful,
            ProbeResultLabel::Failed,
            ProbeResultLabel::Unknown,
        ] {
            let _ = self.probe_total.remove_label_values(&[
                probe.probe_type,
                result.as_str(),
                probe.container,
                probe.pod,
                probe.namespace,
                probe.pod_uid,
            ]);
        }
        let _ = self.probe_duration.remove_label_values(&[
            probe.probe_type,
            probe.container,
            probe.pod,
            probe.namespace,
        ]);
    }

    /// The prober registry (`/metrics/probes`) in the text format 0.0.4.
    pub fn encode_probes(&self) -> Result<String, Error> {
        encode(&self.probes)
    }

    /// The registry in the Prometheus text format 0.0.4 (content type
    /// [`Metrics::CONTENT_TYPE`]).
    pub fn encode(&self) -> Result<String, Error> {
        encode(&self.registry)
    }

    /// `text/plain; version=0.0.4`.
    pub const CONTENT_TYPE: &'static str = prometheus::TEXT_FORMAT;
}

fn encode(registry: &Registry) -> Result<String, Error> {
    let families = registry.gather();
    let mut buf = Vec::with_capacity(16 * 1024);
    TextEncoder::new().encode(&families, &mut buf)?;
    String::from_utf8(buf).map_err(|e| Error::Host(format!("metrics are not UTF-8: {e}")))
}

/// When this process started, in seconds since the epoch: from
/// `/proc/self/stat` (field 22, in clock ticks since boot) and the boot
/// time of `/proc/stat`, as component-base's `RegisterProcessStartTime`;
/// the current time if either cannot be read.
fn process_start_time_seconds() -> f64 {
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or_default()
    };
    let read = || -> Option<f64> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        // The command may contain spaces: fields are counted after its `)`.
        let after = stat.rsplit_once(')')?.1;
        let ticks: f64 = after.split_whitespace().nth(19)?.parse().ok()?;
        let boot: f64 = std::fs::read_to_string("/proc/stat")
            .ok()?
            .lines()
            .find_map(|l| l.strip_prefix("btime "))?
            .trim()
            .parse()
            .ok()?;
        // USER_HZ is 100 on every Linux architecture the kubelet runs on.
        Some(boot + ticks / 100.0)
    };
    read().unwrap_or_else(now)
}

/// The labels of one probe worker, for [`Metrics::observe_probe`].
#[derive(Clone, Copy, Debug)]
pub struct ProbeLabels<'a> {
    /// `Liveness`, `Readiness` or `Startup`.
    pub probe_type: &'a str,
    /// The container's name.
    pub container: &'a str,
    /// The pod's name.
    pub pod: &'a str,
    /// The pod's namespace.
    pub namespace: &'a str,
    /// The pod's UID.
    pub pod_uid: &'a str,
}

/// The `result` label of `prober_probe_total` (upstream's
/// `probeResultSuccessful`, `probeResultFailed`, `probeResultUnknown`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProbeResultLabel {
    /// `successful`
    Successful,
    /// `failed`
    Failed,
    /// `unknown`
    Unknown,
}

impl ProbeResultLabel {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            ProbeResultLabel::Successful => "successful",
            ProbeResultLabel::Failed => "failed",
            ProbeResultLabel::Unknown => "unknown",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_and_renders_upstream_names() {
        let m = Metrics::new().unwrap();
        m.set_running_pods(3);
        m.observe_pod_worker_duration(PodWorkerOperation::Sync, 0.2);
        m.observe_runtime_operation("run_podsandbox", 1.0, true);
        m.inc_evictions("memory.available");
        let text = m.encode().unwrap();
        assert!(text.contains("# TYPE kubelet_running_pods gauge"));
        assert!(text.contains("kubelet_running_pods 3"));
        assert!(
            text.contains("kubelet_pod_worker_duration_seconds_count{operation_type=\"sync\"} 1")
        );
        assert!(text.contains(
            "kubelet_runtime_operations_errors_total{operation_type=\"run_podsandbox\"} 1"
        ));
        assert!(text.contains("kubelet_evictions{eviction_signal=\"memory.available\"} 1"));
        assert!(text.contains("# HELP kubelet_running_pods [ALPHA] "));
        // Upstream's ExponentialBuckets(.005, 2.5, 14): the last bound is .005 * 2.5^13.
        let last = 0.005 * 2.5f64.powi(13);
        assert!(text.contains(&format!(
            "kubelet_runtime_operations_duration_seconds_bucket{{operation_type=\"run_podsandbox\",le=\"{last}\"}} 1"
        )));
        assert!(text.contains("kubelet_running_containers{container_state=\"exited\"} 0"));
        assert!(
            !text.contains("prober_probe_total"),
            "probes have their own endpoint"
        );
    }

    #[test]
    fn probe_series_are_recorded_then_forgotten_with_their_worker() {
        let m = Metrics::new().unwrap();
        let web = ProbeLabels {
            probe_type: "Readiness",
            container: "app",
            pod: "web",
            namespace: "default",
            pod_uid: "u1",
        };
        m.observe_probe(&web, ProbeResultLabel::Successful, 0.01);
        m.observe_probe(&web, ProbeResultLabel::Failed, 0.02);
        m.observe_probe(&web, ProbeResultLabel::Failed, 0.02);
        let text = m.encode_probes().unwrap();
        assert!(text.contains(
            "prober_probe_total{container=\"app\",namespace=\"default\",pod=\"web\",pod_uid=\"u1\",probe_type=\"Readiness\",result=\"failed\"} 2"
        ), "{text}");
        assert!(text.contains("# HELP prober_probe_total [BETA] "), "{text}");
        // Failures are not timed, as upstream.
        assert!(text.contains(
            "prober_probe_duration_seconds_count{container=\"app\",namespace=\"default\",pod=\"web\",probe_type=\"Readiness\"} 1"
        ), "{text}");
        let start = text
            .lines()
            .find_map(|l| l.strip_prefix("process_start_time_seconds "))
            .and_then(|v| v.parse::<f64>().ok())
            .expect("process_start_time_seconds");
        assert!(start > 1.6e9, "{start}");
        m.forget_probe(&web);
        let text = m.encode_probes().unwrap();
        assert!(!text.contains("pod=\"web\""), "{text}");
    }
}
