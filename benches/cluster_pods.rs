//! Cluster mode: pods created through the API server until the API shows
//! them Running, against the runtime's floor; the kubelet's API requests
//! per minute at steady state, and its memory.
//!
//! In one run, on one private containerd and one control plane
//! (`kubelet_testbed::{Testbed, ControlPlane, NodeNet}`: etcd,
//! kube-apiserver, kube-controller-manager and kube-scheduler v1.35), for
//! [`ROUNDS`] rounds, floor and kubelet alternating:
//!
//! - **floor**: [`PODS`] pods started with the kubelet's own CRI requests
//!   made directly (`common::floor`), all at once; each pod's latency runs
//!   from the common start to the return of its StartContainer.
//! - **kubelet**: the release `examples/kubelet` runs as a child process in
//!   cluster mode (`--kubeconfig`, `--node-ip`, `--hostname-override`, a
//!   `KubeletConfiguration` file). Once its Node is Ready (and carries no
//!   NoSchedule/NoExecute taint), an admin kube-rs client creates
//!   [`PODS`] pods concurrently (busybox `sleep 3600`,
//!   `automountServiceAccountToken: false`, `terminationGracePeriodSeconds:
//!   1`, no `nodeName`: the scheduler binds them); a kube-rs `watcher` on
//!   namespace `default`, listed before the first create, records when each
//!   pod is first seen with `phase: Running`. A pod's latency is that
//!   instant minus the instant its create request was sent.
//! - **API requests**: [`SETTLE`] after the last pod is Running, the
//!   kubelet's `rest_client_requests_total{code,host,method}` is read from
//!   its `/metrics` (plain HTTP on `127.0.0.1:--port`: the round's
//!   kubelet serves anonymous requests with `AlwaysAllow` on loopback, so
//!   the bench reads it without credentials), and again
//!   [`WINDOW`] later: requests per minute, in all and by method.
//! - **RSS**: the kubelet's `VmRSS` (`/proc/<pid>/status`) at the end of
//!   that window, with the pods running.
//!
//! Between rounds every pod goes: the API pods are deleted through the API
//! and waited for, then the kubelet is stopped (SIGTERM), its Node deleted
//! (the next round's kubelet registers it again, so "Ready" is always the
//! new kubelet's), and every sandbox left is removed.
//!
//! p50 and p99 are nearest-rank percentiles of the [`PODS`] latencies of a
//! round: with 30 samples p99 is the 30th, the maximum. The table shows the
//! median over the rounds of each figure.
//!
//! Run as root: `scripts/bench-cluster.sh` (it installs the test bed,
//! builds the kubelet in release mode and runs
//! `cargo bench --bench cluster_pods`).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kubelet_rs::cri::{RemoteRuntime, RuntimeService};
use kubelet_testbed::{ControlPlane, NodeNet, Testbed, http_get};

mod common;
use common::{
    IMAGE, KubeletProcess, free_port, kubelet_binary, load_average, median, remove_everything,
    rss_kib,
};

/// Pods per round.
const PODS: usize = 30;
/// Rounds of floor and kubelet, alternating.
const ROUNDS: usize = 3;
/// The node's name (control plane credentials, node network, kubelet).
const NODE: &str = "bench-node";
/// The label of the benchmark's API pods.
const LABEL: &str = "app=cluster-bench";
/// From the last pod Running to the first metrics read: the status
/// updates of the start settle.
const SETTLE: Duration = Duration::from_secs(15);
/// Between the two metrics reads.
const WINDOW: Duration = Duration::from_secs(60);
/// Hang guards, not bounds.
const READY_LIMIT: Duration = Duration::from_secs(120);
const RUNNING_LIMIT: Duration = Duration::from_secs(180);
const GONE_LIMIT: Duration = Duration::from_secs(180);

/// The nearest-rank `p`th percentile of `samples` (zero when empty).
fn percentile(samples: &[Duration], p: f64) -> Duration {
    if samples.is_empty() {
        return Duration::ZERO;
    }
    let mut v = samples.to_vec();
    v.sort();
    let rank = (p / 100.0 * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The API pod `bench-<i>`: what `common::manifest(i)` is for the floor,
/// with the benchmark's label and no service account token.
fn api_pod(i: usize) -> Pod {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": format!("bench-{i}"), "labels": {"app": "cluster-bench"}},
        "spec": {
            "automountServiceAccountToken": false,
            "terminationGracePeriodSeconds": 1,
            "containers": [{
                "name": "app",
                "image": IMAGE,
                "imagePullPolicy": "IfNotPresent",
                "command": ["sleep", "3600"],
            }],
        },
    }))
    .expect("pod")
}

fn is_running(pod: &Pod) -> bool {
    pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
}

/// Polls `check` every `every` until it is true; `Err` after `limit`.
async fn poll_until<F, Fut>(limit: Duration, every: Duration, mut check: F) -> Result<(), ()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while !check().await {
        if Instant::now() >= deadline {
            return Err(());
        }
        tokio::time::sleep(every).await;
    }
    Ok(())
}

/// What the pod watch saw: when each pod was first bound, first Running.
#[derive(Default)]
struct Seen {
    bound: HashMap<String, Instant>,
    running: HashMap<String, Instant>,
}

/// When the app container of each pod (by pod name) started, by
/// containerd's `startedAt`, on the clock of `anchor` (an instant and the
/// wall-clock time at that instant).
async fn container_starts(
    cri: &RemoteRuntime,
    anchor: (Instant, SystemTime),
) -> HashMap<String, Instant> {
    let mut starts = HashMap::new();
    for c in cri.list_containers(None).await.unwrap_or_default() {
        let Some(pod) = c.labels.get("io.kubernetes.pod.name") else {
            continue;
        };
        let Ok(status) = cri.container_status(&c.id, false).await else {
            continue;
        };
        let Some(ns) = status.status.map(|s| s.started_at) else {
            continue;
        };
        let wall = SystemTime::UNIX_EPOCH + Duration::from_nanos(u64::try_from(ns).unwrap_or(0));
        let at = match wall.duration_since(anchor.1) {
            Ok(after) => anchor.0 + after,
            Err(e) => anchor.0.checked_sub(e.duration()).unwrap_or(anchor.0),
        };
        starts.insert(pod.clone(), at);
    }
    starts
}

/// What one kubelet round measured.
struct KubeletRound {
    latencies: Vec<Duration>,
    /// Create sent → first seen bound (`spec.nodeName`): the scheduler.
    bound: Vec<Duration>,
    /// Create sent → the app container started (containerd's `startedAt`).
    to_start: Vec<Duration>,
    /// Container started → first seen Running: status to the API.
    to_report: Vec<Duration>,
    /// `rest_client_requests_total` by method, over [`WINDOW`], per minute.
    requests: BTreeMap<String, f64>,
    /// `rest_client_requests_total` by method from the kubelet's start to
    /// the window's start: registration, the pods' start, their statuses.
    start_requests: BTreeMap<String, f64>,
    rss_kib: u64,
    /// From the kubelet's start to its Node Ready and schedulable.
    ready_after: Duration,
    /// The kubelet's command line and its `--config` file.
    command: String,
    config: String,
}

/// Panics with `what` and the end of the kubelet's log.
fn fail(log_path: &Path, what: &str) -> ! {
    let log = std::fs::read_to_string(log_path).unwrap_or_default();
    let lines: Vec<&str> = log.lines().collect();
    let tail = &lines[lines.len().saturating_sub(40)..];
    panic!("{what}; the kubelet's log ends:\n{}", tail.join("\n"));
}

/// The run's fixed parts: containerd, the control plane, the node address.
struct Bench {
    bed: Testbed,
    cp: ControlPlane,
    net: NodeNet,
    cri: RemoteRuntime,
    admin: kube::Client,
}

impl Bench {
    fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.admin.clone(), "default")
    }

    fn nodes(&self) -> Api<Node> {
        Api::all(self.admin.clone())
    }

    /// The Node is Ready and the scheduler may bind pods to it.
    async fn schedulable(&self) -> bool {
        let Ok(Some(node)) = self.nodes().get_opt(NODE).await else {
            return false;
        };
        let ready = node
            .status
            .and_then(|s| s.conditions)
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
        let spec = node.spec.unwrap_or_default();
        let tainted = spec
            .taints
            .unwrap_or_default()
            .iter()
            .any(|t| t.effect == "NoSchedule" || t.effect == "NoExecute");
        ready && !tainted && spec.unschedulable != Some(true)
    }

    /// The `KubeletConfiguration` of a round (the fields that have no
    /// flag here).
    fn kubelet_config(&self, round: &str) -> String {
        format!(
            "apiVersion: kubelet.config.k8s.io/v1beta1\n\
             kind: KubeletConfiguration\n\
             cgroupRoot: \"/{}/kubelet-{round}\"\n\
             podLogsDir: \"{}\"\n\
             evictionHard: {{memory.available: 100Mi}}\n\
             imageGCHighThresholdPercent: 100\n\
             clusterDNS: [10.96.0.10]\n\
             clusterDomain: cluster.local\n\
             address: 127.0.0.1\n\
             authentication: {{anonymous: {{enabled: true}}, webhook: {{enabled: false}}}}\n\
             authorization: {{mode: AlwaysAllow}}\n",
            self.bed.cgroup_root(),
            self.bed.log_dir().display()
        )
    }

    /// The kubelet's arguments: cluster mode on the test bed.
    fn kubelet_args(&self, config: &Path, root: &Path, port: u16) -> Vec<String> {
        [
            "--config".to_owned(),
            config.display().to_string(),
            "--kubeconfig".into(),
            self.cp.node_kubeconfig().display().to_string(),
            "--node-ip".into(),
            self.net.address().to_string(),
            "--hostname-override".into(),
            NODE.into(),
            "--container-runtime-endpoint".into(),
            self.bed.endpoint(),
            "--root-dir".into(),
            root.display().to_string(),
            "--port".into(),
            port.to_string(),
        ]
        .into()
    }

    async fn through_kubelet(&self, round: &str) -> KubeletRound {
        let dir = self.bed.dir().join(format!("kubelet-{round}"));
        std::fs::create_dir_all(&dir).expect("kubelet dir");
        let port = free_port();
        let config_path = dir.join("kubelet-config.yaml");
        let config = self.kubelet_config(round);
        std::fs::write(&config_path, &config).expect("write the kubelet's config");
        let args = self.kubelet_args(&config_path, &dir.join("root"), port);
        let command = format!("{} {}", kubelet_binary().display(), args.join(" "));
        let log_path = dir.join("kubelet.log");
        let log = std::fs::File::create(&log_path).expect("kubelet log");
        let launched = Instant::now();
        let anchor = (Instant::now(), SystemTime::now());
        let child = Command::new(kubelet_binary())
            .args(&args)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", kubelet_binary().display()));
        let mut kubelet = KubeletProcess(child);
        let pid = kubelet.id();
        let fail = |what: &str| fail(&log_path, what);

        if poll_until(READY_LIMIT, Duration::from_millis(100), || {
            self.schedulable()
        })
        .await
        .is_err()
        {
            fail("the Node did not turn Ready");
        }
        let ready_after = launched.elapsed();

        // The watch is listed before the first create, so no Running is
        // missed; it notes the instant each pod is first seen bound to the
        // node and first seen Running.
        let seen: Arc<Mutex<Seen>> = Arc::default();
        let (synced_tx, synced_rx) = tokio::sync::oneshot::channel();
        let watch = tokio::spawn({
            let seen = seen.clone();
            let stream =
                watcher(self.pods(), watcher::Config::default().labels(LABEL)).default_backoff();
            async move {
                let mut stream = std::pin::pin!(stream);
                let mut synced = Some(synced_tx);
                while let Some(event) = stream.next().await {
                    let now = Instant::now();
                    match event {
                        Ok(watcher::Event::InitDone) => {
                            if let Some(tx) = synced.take() {
                                let _ = tx.send(());
                            }
                        }
                        Ok(watcher::Event::Apply(pod) | watcher::Event::InitApply(pod)) => {
                            let name = pod.metadata.name.clone().unwrap_or_default();
                            let mut seen = seen.lock().expect("seen");
                            if pod.spec.as_ref().is_some_and(|s| s.node_name.is_some()) {
                                seen.bound.entry(name.clone()).or_insert(now);
                            }
                            if is_running(&pod) {
                                seen.running.entry(name).or_insert(now);
                            }
                        }
                        _ => {}
                    }
                }
            }
        });
        synced_rx.await.expect("the pod watch lists");

        // Open the admin client's connections before the clock starts, so
        // that the creates do not pay for TLS handshakes.
        let warm: Vec<_> = (0..PODS)
            .map(|i| {
                let pods = self.pods();
                tokio::spawn(async move { pods.get_opt(&format!("bench-{i}")).await })
            })
            .collect();
        for w in warm {
            let _ = w.await;
        }

        let creates: Vec<_> = (0..PODS)
            .map(|i| {
                let pods = self.pods();
                let pod = api_pod(i);
                tokio::spawn(async move {
                    let sent = Instant::now();
                    pods.create(&PostParams::default(), &pod)
                        .await
                        .unwrap_or_else(|e| panic!("create bench-{i}: {e}"));
                    (format!("bench-{i}"), sent)
                })
            })
            .collect();
        let mut sent = HashMap::new();
        for c in creates {
            let (name, at) = c.await.expect("create task");
            sent.insert(name, at);
        }
        if poll_until(RUNNING_LIMIT, Duration::from_millis(20), || async {
            seen.lock().expect("seen").running.len() >= PODS
        })
        .await
        .is_err()
        {
            let n = seen.lock().expect("seen").running.len();
            fail(&format!("only {n} of {PODS} pods Running"));
        }
        watch.abort();
        let seen = std::mem::take(&mut *seen.lock().expect("seen"));
        let latencies: Vec<Duration> = sent
            .iter()
            .map(|(name, at)| seen.running[name].saturating_duration_since(*at))
            .collect();
        let bound: Vec<Duration> = sent
            .iter()
            .map(|(name, at)| {
                seen.bound
                    .get(name)
                    .unwrap_or(&seen.running[name])
                    .saturating_duration_since(*at)
            })
            .collect();
        // When containerd started each app container (its own clock,
        // `startedAt`), against the create and the Running seen.
        let started = container_starts(&self.cri, anchor).await;
        let (mut to_start, mut to_report) = (Vec::new(), Vec::new());
        for (name, at) in &sent {
            if let Some(s) = started.get(name) {
                to_start.push(s.saturating_duration_since(*at));
                to_report.push(seen.running[name].saturating_duration_since(*s));
            }
        }

        // Steady state with the pods running.
        tokio::time::sleep(SETTLE).await;
        let before = match api_requests(port).await {
            Ok(r) => r,
            Err(e) => fail(&format!("GET /metrics: {e}")),
        };
        tokio::time::sleep(WINDOW).await;
        let after = match api_requests(port).await {
            Ok(r) => r,
            Err(e) => fail(&format!("GET /metrics: {e}")),
        };
        let rss = rss_kib(pid);
        let per_minute = 60.0 / WINDOW.as_secs_f64();
        let requests = after
            .iter()
            .map(|(method, n)| {
                let delta = n - before.get(method).copied().unwrap_or(0.0);
                (method.clone(), delta * per_minute)
            })
            .collect();

        // Every pod goes through the API, then the kubelet stops.
        self.pods()
            .delete_collection(
                &DeleteParams::default(),
                &ListParams::default().labels(LABEL),
            )
            .await
            .expect("delete the pods");
        if poll_until(GONE_LIMIT, Duration::from_millis(200), || async {
            self.pods()
                .list(&ListParams::default().labels(LABEL))
                .await
                .is_ok_and(|l| l.items.is_empty())
        })
        .await
        .is_err()
        {
            fail("the pods were not deleted");
        }
        stop(&mut kubelet).await;
        drop(kubelet);
        let _ = self.nodes().delete(NODE, &DeleteParams::default()).await;
        let _ = poll_until(
            Duration::from_secs(30),
            Duration::from_millis(200),
            || async { matches!(self.nodes().get_opt(NODE).await, Ok(None)) },
        )
        .await;
        remove_everything(&self.cri).await;

        KubeletRound {
            latencies,
            bound,
            to_start,
            to_report,
            requests,
            start_requests: before,
            rss_kib: rss,
            ready_after,
            command,
            config,
        }
    }
}

/// SIGTERM, as an operator stops the kubelet; SIGKILL after 10 s.
async fn stop(kubelet: &mut KubeletProcess) {
    let _ = Command::new("kill")
        .args(["-TERM", &kubelet.id().to_string()])
        .status();
    let _ = poll_until(Duration::from_secs(10), Duration::from_millis(50), || {
        let exited = matches!(kubelet.0.try_wait(), Ok(Some(_)));
        async move { exited }
    })
    .await;
}

/// `rest_client_requests_total` from the kubelet's `/metrics`, summed over
/// code and host, by method.
async fn api_requests(port: u16) -> Result<BTreeMap<String, f64>, String> {
    let (code, response) = http_get(port, "/metrics").await?;
    if code != 200 {
        return Err(format!("GET /metrics: {code}"));
    }
    let mut by_method = BTreeMap::new();
    for line in response.lines() {
        let Some(rest) = line.strip_prefix("rest_client_requests_total{") else {
            continue;
        };
        let Some((labels, value)) = rest.split_once("} ") else {
            continue;
        };
        let method = labels
            .split(',')
            .find_map(|l| l.strip_prefix("method=\""))
            .map(|m| m.trim_end_matches('"').to_owned())
            .unwrap_or_default();
        let value: f64 = value.trim().parse().map_err(|e| format!("{line}: {e}"))?;
        *by_method.entry(method).or_insert(0.0) += value;
    }
    if by_method.is_empty() {
        return Err("no rest_client_requests_total in /metrics".into());
    }
    Ok(by_method)
}

async fn admin_client(cp: &ControlPlane) -> kube::Client {
    let kubeconfig =
        kube::config::Kubeconfig::read_from(cp.admin_kubeconfig()).expect("admin kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(
        kubeconfig,
        &kube::config::KubeConfigOptions::default(),
    )
    .await
    .expect("admin config");
    kube::Client::try_from(config).expect("admin client")
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--list") {
        return;
    }
    if !args.iter().any(|a| a == "--bench") {
        println!("cluster_pods: a benchmark; run it with cargo bench --bench cluster_pods");
        return;
    }
    if !kubelet_binary().exists() {
        eprintln!(
            "{} is missing: run scripts/bench-cluster.sh (or cargo build --release --example kubelet)",
            kubelet_binary().display()
        );
        std::process::exit(1);
    }
    let Some(bed) = Testbed::start() else {
        eprintln!("no test bed: run as root after scripts/testbed/install.sh");
        std::process::exit(1);
    };
    let Some(cp) = ControlPlane::start(NODE) else {
        eprintln!("no control plane: run scripts/testbed/install.sh");
        std::process::exit(1);
    };
    let Some(net) = NodeNet::up(NODE) else {
        eprintln!("no node network: run as root");
        std::process::exit(1);
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio");
    rt.block_on(async {
        let cri = RemoteRuntime::builder(bed.endpoint())
            .connect()
            .await
            .expect("connect");
        let admin = admin_client(&cp).await;
        let bench = Bench {
            bed,
            cp,
            net,
            cri,
            admin,
        };
        println!(
            "containerd {}, control plane {}, load average {} at the start",
            bench.bed.containerd_version(),
            bench.cp.env_value("K8S_VERSION").unwrap_or("?"),
            load_average()
        );
        // Warm-up: the first sandboxes on a fresh containerd are slower.
        common::floor(&bench.cri, &bench.bed, 5, "warmup").await;
        remove_everything(&bench.cri).await;

        let (mut floors, mut kubelets) = (Vec::new(), Vec::new());
        for r in 0..ROUNDS {
            let f = common::floor(&bench.cri, &bench.bed, PODS, &format!("f{r}")).await;
            remove_everything(&bench.cri).await;
            let k = bench.through_kubelet(&format!("k{r}")).await;
            println!(
                "round {}: floor p50 {:.0} ms p99 {:.0} ms | kubelet p50 {:.0} ms p99 {:.0} ms \
                 (bound {:.0}/{:.0}, started {:.0}/{:.0}, started → Running seen {:.0}/{:.0} ms; \
                 Node Ready {:.1} s after start) | {:.1} API requests/min {:?} \
                 ({:.0} requests before the window: {:?}) | RSS {:.1} MiB | load {}",
                r + 1,
                ms(percentile(&f, 50.0)),
                ms(percentile(&f, 99.0)),
                ms(percentile(&k.latencies, 50.0)),
                ms(percentile(&k.latencies, 99.0)),
                ms(percentile(&k.bound, 50.0)),
                ms(percentile(&k.bound, 99.0)),
                ms(percentile(&k.to_start, 50.0)),
                ms(percentile(&k.to_start, 99.0)),
                ms(percentile(&k.to_report, 50.0)),
                ms(percentile(&k.to_report, 99.0)),
                k.ready_after.as_secs_f64(),
                k.requests.values().sum::<f64>(),
                k.requests,
                k.start_requests.values().sum::<f64>(),
                k.start_requests,
                k.rss_kib as f64 / 1024.0,
                load_average()
            );
            floors.push(f);
            kubelets.push(k);
        }

        let f50 = median(floors.iter().map(|f| percentile(f, 50.0)).collect());
        let f99 = median(floors.iter().map(|f| percentile(f, 99.0)).collect());
        let k50 = median(kubelets.iter().map(|k| percentile(&k.latencies, 50.0)).collect());
        let k99 = median(kubelets.iter().map(|k| percentile(&k.latencies, 99.0)).collect());
        let total = median(
            kubelets
                .iter()
                .map(|k| k.requests.values().sum::<f64>())
                .collect(),
        );
        let methods: BTreeSet<&String> = kubelets.iter().flat_map(|k| k.requests.keys()).collect();
        let rss = median(kubelets.iter().map(|k| k.rss_kib).collect());

        println!();
        println!(
            "{PODS} pods, median of {ROUNDS} rounds, floor and kubelet alternating; \
             p99 of {PODS} samples is the maximum (nearest rank)"
        );
        println!();
        println!("| | floor (direct CRI) | kubelet (API create → Running seen) | kubelet − floor | kubelet / floor |");
        println!("|---|---|---|---|---|");
        for (name, f, k) in [("p50", f50, k50), ("p99 (= max)", f99, k99)] {
            println!(
                "| {name} | {:.0} ms | {:.0} ms | {:+.0} ms | {:.2} |",
                ms(f),
                ms(k),
                ms(k) - ms(f),
                k.as_secs_f64() / f.as_secs_f64()
            );
        }
        println!();
        println!("where a kubelet pod's time goes (each part's own percentile, so they do not add up):");
        println!();
        println!("| kubelet pods | p50 | p99 (= max) |");
        println!("|---|---|---|");
        for (name, part) in [
            (
                "create sent → seen bound (scheduler)",
                (|k: &KubeletRound| k.bound.clone()) as fn(&KubeletRound) -> Vec<Duration>,
            ),
            (
                "create sent → app container started (containerd's startedAt)",
                |k| k.to_start.clone(),
            ),
            ("container started → seen Running (status to the API)", |k| {
                k.to_report.clone()
            }),
        ] {
            let at = |p: f64| {
                median(
                    kubelets
                        .iter()
                        .map(|k| percentile(&part(k), p))
                        .collect::<Vec<_>>(),
                )
            };
            println!("| {name} | {:.0} ms | {:.0} ms |", ms(at(50.0)), ms(at(99.0)));
        }
        println!();
        println!("| kubelet at steady state, {PODS} pods running | median | goal |");
        println!("|---|---|---|");
        println!(
            "| API requests per minute | {total:.1} | ≤ 12 (upstream: node status + lease) |"
        );
        for m in methods {
            let v = median(
                kubelets
                    .iter()
                    .map(|k| k.requests.get(m).copied().unwrap_or(0.0))
                    .collect(),
            );
            println!("| … {m} | {v:.1} | |");
        }
        println!(
            "| RSS (VmRSS) | {:.1} MiB | < 40 MiB |",
            rss as f64 / 1024.0
        );
        println!();
        println!(
            "kubelet − floor at p99: {:+.0} ms (goal: under +100 ms); load average {} at the end",
            ms(k99) - ms(f99),
            load_average()
        );
        println!();
        println!("command: scripts/bench-cluster.sh (cargo bench --bench cluster_pods)");
        if let Some(last) = kubelets.last() {
            println!("kubelet (last round): {}", last.command);
            println!("its --config file:\n{}", last.config);
        }
    });
}
