//! Ours against upstream's kubelet v1.35.4, side by side: the same private
//! containerd, the same static pods, an equivalent configuration, one
//! kubelet at a time.
//!
//! One private containerd ([`Testbed`]) serves both kubelets, never at
//! once: each kills the runtime pods it does not know. Over `ROUNDS` rounds
//! (default 3) the two alternate, ours first in even rounds and upstream's
//! first in odd ones; each round of a kubelet is one process, started fresh
//! in standalone mode, that goes through:
//!
//! - **idle**: `SETTLE` (10 s) after its node API answers `/healthz`, its
//!   CPU time (`utime + stime` of `/proc/<pid>/stat`) over `WINDOW` (60 s),
//!   its `VmRSS` at the end of the window, and its CRI calls in the window
//!   (`kubelet_runtime_operations_total` of its `/metrics`, by operation);
//! - for each N of `PODS` (default `10,50,100`): N manifests `bench<N>-<i>` of busybox
//!   `sleep 3600` (`terminationGracePeriodSeconds: 1`, `common::manifest`)
//!   written to a staging folder and renamed into the static pod folder;
//!   from the renames, the time until ListContainers shows N of them
//!   running (polled every 20 ms) and until the node API's `/pods` shows N
//!   of them `Running` (polled every 100 ms, at the same time); the CRI calls
//!   it made meanwhile, per pod; whether each pod's status is right
//!   (Running, its container ready, no restart); then `SETTLE` and the same
//!   steady-state window as idle, with N pods (CRI calls per pod per
//!   minute); then the N manifests removed at once, and the time until no
//!   sandbox of them is ready any more (ListPodSandbox, polled every 20 ms:
//!   the pods are stopped; removing stopped sandboxes is the container GC's
//!   business, once a minute upstream);
//! - **exit → status**: `EXITS` (default 5) pods `exit-<i>` (busybox
//!   `sleep 3600`, `restartPolicy: Never`) started together; then, one
//!   after the other at varied offsets (so that a periodic relist is met
//!   at every phase), the bench kills the container's process (SIGKILL to
//!   the pid containerd reports) and polls `/pods` every 50 ms until the
//!   pod's container status shows it terminated: the time from the kill.
//!
//! Then, when `DENSITY` is set (say 250), each kubelet once more with
//! `maxPods: DENSITY` and that many pods: start, statuses, steady state,
//! terminate, as above.
//!
//! The configuration (a `KubeletConfiguration` file, the same for both but
//! for the lines marked): `staticPodPath`, `containerRuntimeEndpoint`,
//! `cgroupDriver: cgroupfs`, `cgroupRoot` (one per kubelet and round under
//! the test bed's, made beforehand in every v1 hierarchy: upstream's needs
//! it to exist), `failCgroupV1: false`, `podLogsDir`, `address: 127.0.0.1`,
//! anonymous authentication with `AlwaysAllow`, `evictionHard:
//! {memory.available: 100Mi}` (memory only: the disk is nearly full, and
//! disk-pressure eviction and image GC would delete the test bed's images,
//! which cannot be pulled again), `imageGCHighThresholdPercent: 100`,
//! `maxPods`, `healthzPort: 0`, `volumePluginDir`; flags `--config`,
//! `--root-dir <dir>/<kubelet>-<round>/root`, `--hostname-override`, and
//! for upstream's `--cert-dir`. The node API both are asked on is plain
//! HTTP on loopback: ours serves it so on `port` with this authentication,
//! upstream's on `readOnlyPort` (its `port` is HTTPS, on another free port).
//! Logging is each one's default (info).
//!
//! Upstream's kubelet on this machine (see `scripts/conformance.sh`): it
//! rewrites `vm.overcommit_memory`, `kernel.panic`, `kernel.panic_on_oops`
//! (restored after each of its runs and on exit), creates
//! `/var/lib/kubelet/device-plugins` and `/var/log/containers` (removed on
//! exit when they were not there before) and bind-mounts its root folder
//! onto itself (unmounted after each run).
//!
//! Output: Markdown tables on stdout (medians over rounds, spread as
//! min–max, ratio ours/upstream, the goal and whether it is met),
//! and in `REPORT_DIR` (default `$CARGO_TARGET_DIR/vs-upstream`):
//! `summary.md` (the same), `samples.tsv` (every sample) and each
//! kubelet's log. The bench fails (exit status 1) only when a kubelet
//! cannot run: it does not start, or pods do not run or stop within the
//! generous hang guards. A timing never fails it.
//!
//! Run as root: `scripts/bench-vs-upstream.sh`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kubelet_rs::cri::{RemoteRuntime, RuntimeService, api};
use kubelet_testbed::{Testbed, http_get};

mod common;
use common::{
    IMAGE, KubeletProcess, clock_ticks_per_second, cpu_ticks, free_port, kubelet_binary,
    load_average, named_manifest, remove_everything, rss_kib, status_kib,
};

/// The node name both kubelets run as.
const NODE: &str = "vs-node";
/// Hang guards, not bounds: past them the kubelet "cannot run".
const HEALTHY_LIMIT: Duration = Duration::from_secs(90);
const RUNNING_LIMIT: Duration = Duration::from_secs(600);
const STOPPED_LIMIT: Duration = Duration::from_secs(300);
const EXIT_LIMIT: Duration = Duration::from_secs(60);

/// The two kubelets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Ours,
    Upstream,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Ours => "ours",
            Kind::Upstream => "upstream",
        }
    }

    fn index(self) -> usize {
        match self {
            Kind::Ours => 0,
            Kind::Upstream => 1,
        }
    }
}

/// What the environment asks for.
struct Settings {
    rounds: usize,
    pods: Vec<usize>,
    window: Duration,
    settle: Duration,
    exits: usize,
    density: usize,
    report_dir: PathBuf,
}

fn env_parse<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => v.trim().parse().unwrap_or_else(|_| {
            eprintln!("{name}={v}: not a valid value");
            std::process::exit(2)
        }),
        _ => default,
    }
}

impl Settings {
    fn from_env() -> Settings {
        let pods = std::env::var("PODS")
            .ok()
            .filter(|v| !v.trim().is_empty())
            .unwrap_or_else(|| "10,50,100".into())
            .split([',', ' '])
            .filter(|p| !p.is_empty())
            .map(|p| {
                p.parse::<usize>()
                    .ok()
                    .filter(|n| *n > 0)
                    .unwrap_or_else(|| {
                        eprintln!("PODS: {p} is not a positive number");
                        std::process::exit(2)
                    })
            })
            .collect();
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
        Settings {
            rounds: env_parse("ROUNDS", 3usize).max(1),
            pods,
            window: Duration::from_secs(env_parse("WINDOW", 60u64).max(1)),
            settle: Duration::from_secs(env_parse("SETTLE", 10u64)),
            exits: env_parse("EXITS", 5usize),
            density: env_parse("DENSITY", 0usize),
            report_dir: std::env::var_os("REPORT_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| target.join("vs-upstream")),
        }
    }
}

/// One measure: its samples for ours and upstream's, and the goal.
struct Measure {
    name: String,
    unit: &'static str,
    samples: [Vec<f64>; 2],
    /// The goal for ours/upstream (met when the ratio is at most
    /// this), if it sets one for this measure.
    goal: Option<f64>,
}

/// Every measure, in the order first recorded.
#[derive(Default)]
struct Results {
    measures: Vec<Measure>,
    /// CRI calls by operation: (what, kind) → one map per round.
    ops: BTreeMap<(String, usize), Vec<BTreeMap<String, f64>>>,
    /// Pods whose status was not right, by kubelet.
    wrong_statuses: Vec<String>,
}

impl Results {
    fn record(&mut self, kind: Kind, name: &str, unit: &'static str, goal: Option<f64>, v: f64) {
        let i = match self.measures.iter().position(|m| m.name == name) {
            Some(i) => i,
            None => {
                self.measures.push(Measure {
                    name: name.to_owned(),
                    unit,
                    samples: [Vec::new(), Vec::new()],
                    goal,
                });
                self.measures.len() - 1
            }
        };
        self.measures[i].samples[kind.index()].push(v);
    }

    fn record_ops(&mut self, kind: Kind, what: &str, ops: BTreeMap<String, f64>) {
        self.ops
            .entry((what.to_owned(), kind.index()))
            .or_default()
            .push(ops);
    }
}

fn median_of(v: &[f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

fn fmt_num(v: f64) -> String {
    if v == 0.0 {
        "0".into()
    } else if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else if v.abs() >= 0.1 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

fn spread(v: &[f64]) -> String {
    let min = v.iter().copied().fold(f64::INFINITY, f64::min);
    let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if v.is_empty() {
        "—".into()
    } else {
        format!("{}–{}", fmt_num(min), fmt_num(max))
    }
}

impl Results {
    fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "| measure | ours median | ours spread | upstream median | upstream spread | ours / upstream | goal | met |"
        );
        let _ = writeln!(out, "|---|---|---|---|---|---|---|---|");
        for m in &self.measures {
            let (o, u) = (median_of(&m.samples[0]), median_of(&m.samples[1]));
            let ratio = match (o, u) {
                (Some(o), Some(u)) if u > 0.0 => Some(o / u),
                _ => None,
            };
            let (goal, met) = match (m.goal, ratio) {
                (Some(g), Some(r)) => (format!("≤ {g}×"), if r <= g { "yes" } else { "**no**" }),
                (Some(g), None) => (format!("≤ {g}×"), "?"),
                (None, _) => ("—".into(), ""),
            };
            let _ = writeln!(
                out,
                "| {} ({}) | {} | {} | {} | {} | {} | {} | {} |",
                m.name,
                m.unit,
                o.map(fmt_num).unwrap_or_else(|| "—".into()),
                spread(&m.samples[0]),
                u.map(fmt_num).unwrap_or_else(|| "—".into()),
                spread(&m.samples[1]),
                ratio
                    .map(|r| format!("{r:.2}"))
                    .unwrap_or_else(|| "—".into()),
                goal,
                met
            );
        }
        out
    }

    /// CRI calls by operation, median over rounds, one table per "what".
    fn ops_tables(&self) -> String {
        let mut out = String::new();
        let whats: Vec<String> = {
            let mut w: Vec<String> = self.ops.keys().map(|(w, _)| w.clone()).collect();
            w.dedup();
            w
        };
        for what in whats {
            let per_kind: Vec<BTreeMap<String, f64>> = (0..2)
                .map(|k| {
                    let rounds = self
                        .ops
                        .get(&(what.clone(), k))
                        .cloned()
                        .unwrap_or_default();
                    let mut names: Vec<String> =
                        rounds.iter().flat_map(|r| r.keys().cloned()).collect();
                    names.sort();
                    names.dedup();
                    names
                        .into_iter()
                        .map(|n| {
                            let vs: Vec<f64> = rounds
                                .iter()
                                .map(|r| r.get(&n).copied().unwrap_or(0.0))
                                .collect();
                            (n, median_of(&vs).unwrap_or(0.0))
                        })
                        .collect()
                })
                .collect();
            let mut names: Vec<&String> = per_kind.iter().flat_map(|m| m.keys()).collect();
            names.sort();
            names.dedup();
            let _ = writeln!(out, "\n{what}, by operation (median over rounds):\n");
            let _ = writeln!(out, "| operation | ours | upstream |");
            let _ = writeln!(out, "|---|---|---|");
            for n in names {
                let cell = |k: usize| {
                    per_kind[k]
                        .get(n)
                        .map(|v| fmt_num(*v))
                        .unwrap_or_else(|| "0".into())
                };
                let _ = writeln!(out, "| {n} | {} | {} |", cell(0), cell(1));
            }
        }
        out
    }

    fn tsv(&self) -> String {
        let mut out = String::from("measure\tunit\tkubelet\tsample\n");
        for m in &self.measures {
            for (k, name) in [(0, "ours"), (1, "upstream")] {
                for v in &m.samples[k] {
                    let _ = writeln!(out, "{}\t{}\t{name}\t{v}", m.name, m.unit);
                }
            }
        }
        out
    }
}

/// What upstream's kubelet changes on the host, put back as it was.
struct HostState {
    sysctls: Vec<(String, String)>,
    created_paths: Vec<PathBuf>,
}

impl HostState {
    const SYSCTLS: [&'static str; 3] = [
        "vm.overcommit_memory",
        "kernel.panic",
        "kernel.panic_on_oops",
    ];
    const PATHS: [&'static str; 2] = ["/var/lib/kubelet", "/var/log/containers"];

    fn record() -> HostState {
        let sysctls = Self::SYSCTLS
            .iter()
            .filter_map(|k| {
                let path = format!("/proc/sys/{}", k.replace('.', "/"));
                std::fs::read_to_string(path)
                    .ok()
                    .map(|v| (k.to_string(), v.trim().to_owned()))
            })
            .collect();
        let created_paths = Self::PATHS
            .iter()
            .map(PathBuf::from)
            .filter(|p| !p.exists())
            .collect();
        HostState {
            sysctls,
            created_paths,
        }
    }

    fn restore_sysctls(&self) {
        for (k, v) in &self.sysctls {
            let path = format!("/proc/sys/{}", k.replace('.', "/"));
            if std::fs::read_to_string(&path).is_ok_and(|now| now.trim() != v)
                && let Err(e) = std::fs::write(&path, v)
            {
                eprintln!("could not restore {k}={v}: {e}");
            }
        }
    }
}

impl Drop for HostState {
    fn drop(&mut self) {
        self.restore_sysctls();
        for p in &self.created_paths {
            let _ = std::fs::remove_dir_all(p);
        }
    }
}

/// Makes cgroup `path` in every v1 hierarchy (and the unified one), with
/// its parent's cpusets: upstream's kubelet needs its `cgroupRoot` to
/// exist. The test bed removes the tree on drop.
fn make_cgroup(path: &str) {
    let Ok(entries) = std::fs::read_dir("/sys/fs/cgroup") else {
        return;
    };
    for entry in entries.flatten() {
        let base = entry.path();
        if base.is_symlink() || !base.is_dir() {
            continue;
        }
        let mut dir = base.clone();
        for part in path.trim_start_matches('/').split('/') {
            let parent = dir.clone();
            dir = dir.join(part);
            if dir.exists() {
                continue;
            }
            if std::fs::create_dir(&dir).is_err() {
                break;
            }
            for f in ["cpuset.cpus", "cpuset.mems"] {
                if let Ok(v) = std::fs::read_to_string(parent.join(f)) {
                    let _ = std::fs::write(dir.join(f), v.trim());
                }
            }
        }
    }
}

/// Unmounts everything mounted under `dir`, deepest first.
fn unmount_under(dir: &Path) {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let mut points: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split_whitespace().nth(4))
        .map(PathBuf::from)
        .filter(|p| p.starts_with(dir))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.as_os_str().len()));
    for p in points {
        let _ = Command::new("umount").arg(&p).status();
    }
}

/// `kubelet_runtime_operations_total` by operation, from `/metrics`.
async fn runtime_operations(port: u16) -> Result<BTreeMap<String, f64>, String> {
    let (code, body) = http_get(port, "/metrics").await?;
    if code != 200 {
        return Err(format!("GET /metrics: {code}"));
    }
    let mut ops = BTreeMap::new();
    for line in body.lines() {
        let Some(rest) = line.strip_prefix("kubelet_runtime_operations_total{") else {
            continue;
        };
        let Some((labels, value)) = rest.split_once("} ") else {
            continue;
        };
        let op = labels
            .split(',')
            .find_map(|l| l.trim().strip_prefix("operation_type=\""))
            .map(|m| m.trim_end_matches('"').to_owned())
            .unwrap_or_default();
        let value: f64 = value
            .split_whitespace()
            .next()
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| format!("bad line {line}"))?;
        *ops.entry(op).or_insert(0.0) += value;
    }
    Ok(ops)
}

fn ops_delta(
    after: &BTreeMap<String, f64>,
    before: &BTreeMap<String, f64>,
    per: f64,
) -> BTreeMap<String, f64> {
    after
        .iter()
        .map(|(k, v)| (k.clone(), (v - before.get(k).copied().unwrap_or(0.0)) / per))
        .filter(|(_, v)| *v > 0.0)
        .collect()
}

/// The pods of `/pods` whose name starts with `prefix`.
async fn node_pods(port: u16, prefix: &str) -> Result<Vec<serde_json::Value>, String> {
    let (code, body) = http_get(port, "/pods").await?;
    if code != 200 {
        return Err(format!("GET /pods: {code}"));
    }
    let list: serde_json::Value =
        serde_json::from_str(&body).map_err(|e| format!("GET /pods: {e}"))?;
    Ok(list["items"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter(|p| {
                    p["metadata"]["name"]
                        .as_str()
                        .is_some_and(|n| n.starts_with(prefix))
                })
                .cloned()
                .collect()
        })
        .unwrap_or_default())
}

fn phase(pod: &serde_json::Value) -> &str {
    pod["status"]["phase"].as_str().unwrap_or("")
}

/// Whether a benchmark pod's status is what it should be: Running, its one
/// container ready and running, never restarted.
fn status_right(pod: &serde_json::Value) -> bool {
    let cs = &pod["status"]["containerStatuses"][0];
    phase(pod) == "Running"
        && cs["ready"].as_bool() == Some(true)
        && cs["state"]["running"].is_object()
        && cs["restartCount"].as_u64() == Some(0)
}

fn pod_name_label(labels: &std::collections::HashMap<String, String>) -> &str {
    labels
        .get("io.kubernetes.pod.name")
        .map(String::as_str)
        .unwrap_or("")
}

/// Running containers of pods whose name starts with `prefix`.
async fn running_containers(cri: &RemoteRuntime, prefix: &str) -> Vec<api::Container> {
    cri.list_containers(Some(api::ContainerFilter {
        state: Some(api::ContainerStateValue {
            state: api::ContainerState::ContainerRunning as i32,
        }),
        ..Default::default()
    }))
    .await
    .unwrap_or_default()
    .into_iter()
    .filter(|c| pod_name_label(&c.labels).starts_with(prefix))
    .collect()
}

/// Ready sandboxes of pods whose name starts with `prefix`.
async fn ready_sandboxes(cri: &RemoteRuntime, prefix: &str) -> Option<usize> {
    cri.list_pod_sandbox(Some(api::PodSandboxFilter {
        state: Some(api::PodSandboxStateValue {
            state: api::PodSandboxState::SandboxReady as i32,
        }),
        ..Default::default()
    }))
    .await
    .ok()
    .map(|s| {
        s.iter()
            .filter(|s| pod_name_label(&s.labels).starts_with(prefix))
            .count()
    })
}

/// The pod `exit-<i>`: busybox `sleep 3600` that is never restarted.
fn exit_manifest(i: usize) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: exit-{i}}}\nspec:\n  restartPolicy: Never\n  terminationGracePeriodSeconds: 1\n  containers:\n  - {{name: app, image: \"{IMAGE}\", imagePullPolicy: IfNotPresent, command: [sleep, \"3600\"]}}\n"
    )
}

/// A kubelet that cannot run: its log's end, and the bench fails.
fn cannot_run(kind: Kind, log: &Path, what: &str) -> ! {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let tail: Vec<&str> = text.lines().rev().take(30).collect();
    eprintln!("--- last lines of {}:", log.display());
    for l in tail.into_iter().rev() {
        eprintln!("{l}");
    }
    panic!("{} kubelet cannot run: {what}", kind.name());
}

struct Bench {
    bed: Testbed,
    cri: RemoteRuntime,
    settings: Settings,
    results: Results,
    host: HostState,
    clk_tck: f64,
}

/// One kubelet process of a round.
struct Running {
    kind: Kind,
    process: KubeletProcess,
    port: u16,
    dir: PathBuf,
    log: PathBuf,
}

impl Running {
    fn pid(&self) -> u32 {
        self.process.id()
    }

    fn check_alive(&mut self, what: &str) {
        if matches!(self.process.0.try_wait(), Ok(Some(_)) | Err(_)) {
            cannot_run(self.kind, &self.log, &format!("it exited ({what})"));
        }
    }
}

impl Bench {
    /// The configuration file of a kubelet for a round.
    fn config(&self, kind: Kind, dir: &Path, cgroup: &str, port: u16, max_pods: usize) -> String {
        let mut c = format!(
            "apiVersion: kubelet.config.k8s.io/v1beta1\n\
             kind: KubeletConfiguration\n\
             staticPodPath: {manifests}\n\
             containerRuntimeEndpoint: {endpoint}\n\
             cgroupDriver: cgroupfs\n\
             cgroupRoot: {cgroup}\n\
             failCgroupV1: false\n\
             podLogsDir: {logs}\n\
             volumePluginDir: {plugins}\n\
             address: 127.0.0.1\n\
             healthzPort: 0\n\
             authentication: {{anonymous: {{enabled: true}}, webhook: {{enabled: false}}}}\n\
             authorization: {{mode: AlwaysAllow}}\n\
             evictionHard: {{memory.available: 100Mi}}\n\
             imageGCHighThresholdPercent: 100\n\
             maxPods: {max_pods}\n",
            manifests = dir.join("manifests").display(),
            endpoint = self.bed.endpoint(),
            logs = dir.join("pod-logs").display(),
            plugins = dir.join("volume-plugins").display(),
        );
        match kind {
            // Ours: plain HTTP on `port` (anonymous + AlwaysAllow on loopback).
            Kind::Ours => {
                let _ = writeln!(c, "port: {port}");
            }
            // Upstream's: its `port` is always HTTPS; the same node API in
            // plain HTTP is its read-only port.
            Kind::Upstream => {
                let _ = writeln!(c, "port: {}\nreadOnlyPort: {port}", free_port());
            }
        }
        c
    }

    async fn start(&mut self, kind: Kind, label: &str, max_pods: usize) -> Running {
        let dir = self.bed.dir().join(format!("{}-{label}", kind.name()));
        for sub in ["manifests", "staging", "root", "pod-logs"] {
            std::fs::create_dir_all(dir.join(sub)).expect("round folders");
        }
        let cgroup = format!("/{}/{}-{label}", self.bed.cgroup_root(), kind.name());
        make_cgroup(&cgroup);
        let port = free_port();
        let config_path = dir.join("kubelet.yaml");
        std::fs::write(
            &config_path,
            self.config(kind, &dir, &cgroup, port, max_pods),
        )
        .expect("write the kubelet config");
        let binary = match kind {
            Kind::Ours => kubelet_binary(),
            Kind::Upstream => kubelet_testbed::k8s_binary("kubelet").unwrap_or_else(|e| {
                panic!("upstream's kubelet: {e}");
            }),
        };
        let log = dir.join("kubelet.log");
        let log_file = std::fs::File::create(&log).expect("kubelet log");
        let mut cmd = Command::new(&binary);
        cmd.arg("--config")
            .arg(&config_path)
            .arg("--root-dir")
            .arg(dir.join("root"))
            .arg("--hostname-override")
            .arg(NODE);
        if kind == Kind::Upstream {
            cmd.arg("--cert-dir").arg(dir.join("certs"));
        }
        cmd.env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("log"))
            .stderr(log_file);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", binary.display()));
        let mut running = Running {
            kind,
            process: KubeletProcess(child),
            port,
            dir,
            log,
        };
        let deadline = Instant::now() + HEALTHY_LIMIT;
        loop {
            running.check_alive("before its node API answered");
            if matches!(http_get(port, "/healthz").await, Ok((200, _))) {
                break;
            }
            if Instant::now() > deadline {
                cannot_run(
                    kind,
                    &running.log,
                    "its /healthz did not answer 200 in time",
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        running
    }

    async fn stop(&mut self, mut running: Running, label: &str) {
        let pid = running.pid();
        let _ = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline && matches!(running.process.0.try_wait(), Ok(None)) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let kind = running.kind;
        let (dir, log) = (running.dir.clone(), running.log.clone());
        drop(running); // SIGKILL if still there, and reaped
        remove_everything(&self.cri).await;
        if kind == Kind::Upstream {
            unmount_under(&dir);
            self.host.restore_sysctls();
        }
        let _ = std::fs::create_dir_all(&self.settings.report_dir);
        let _ = std::fs::copy(
            &log,
            self.settings
                .report_dir
                .join(format!("{}-{label}.log", kind.name())),
        );
    }

    /// CPU, RSS and CRI calls over the steady-state window, with `n` pods.
    async fn steady(&mut self, running: &mut Running, n: usize, what: &str, goal_pods: bool) {
        tokio::time::sleep(self.settings.settle).await;
        running.check_alive("before a steady-state window");
        let pid = running.pid();
        let c0 = cpu_ticks(pid).unwrap_or(0);
        let m0 = runtime_operations(running.port).await.unwrap_or_default();
        let t0 = Instant::now();
        tokio::time::sleep(self.settings.window).await;
        let c1 = cpu_ticks(pid).unwrap_or(0);
        let m1 = runtime_operations(running.port).await.unwrap_or_default();
        let elapsed = t0.elapsed().as_secs_f64();
        let rss = rss_kib(pid) as f64 / 1024.0;
        let anon = status_kib(pid, "RssAnon") as f64 / 1024.0;
        running.check_alive("during a steady-state window");
        let kind = running.kind;
        let cpu_per_min = (c1.saturating_sub(c0)) as f64 / self.clk_tck * 60.0 / elapsed;
        let goal = |g: f64| goal_pods.then_some(g);
        self.results.record(
            kind,
            &format!("CPU at steady state, {what}"),
            "CPU s per 60 s",
            goal(0.1),
            cpu_per_min,
        );
        self.results.record(
            kind,
            &format!("RSS at steady state, {what}"),
            "MiB",
            goal(0.2),
            rss,
        );
        self.results.record(
            kind,
            &format!("of which anonymous (RssAnon), {what}"),
            "MiB",
            None,
            anon,
        );
        let per = (n.max(1) as f64) * elapsed / 60.0;
        let ops = ops_delta(&m1, &m0, per);
        let label = if n == 0 {
            format!("CRI calls at steady state, {what}")
        } else {
            format!("CRI calls per pod at steady state, {what}")
        };
        self.results.record(
            kind,
            &label,
            if n == 0 {
                "per minute"
            } else {
                "per pod per minute"
            },
            (n > 0).then_some(0.5),
            ops.values().sum(),
        );
        self.results.record_ops(kind, &label, ops);
        println!(
            "  {} {what}: CPU {:.2} s/60 s, RSS {:.1} MiB ({:.1} anonymous), load {}",
            kind.name(),
            cpu_per_min,
            rss,
            anon,
            load_average()
        );
    }

    /// N pods: start (CRI and `/pods`), statuses, steady state, terminate.
    async fn pods(&mut self, running: &mut Running, n: usize, steady: bool) {
        let kind = running.kind;
        let port = running.port;
        let manifests = running.dir.join("manifests");
        let staging = running.dir.join("staging");
        // Names of their own for each N: a manifest written again with the
        // same content is the same static pod (same UID).
        let prefix = format!("bench{n}-");
        for i in 0..n {
            std::fs::write(
                staging.join(format!("{prefix}{i}.yaml")),
                named_manifest(&format!("{prefix}{i}")),
            )
            .expect("write");
        }
        let before = runtime_operations(port).await.unwrap_or_default();
        let started = Instant::now();
        for i in 0..n {
            let name = format!("{prefix}{i}.yaml");
            std::fs::rename(staging.join(&name), manifests.join(&name)).expect("rename");
        }
        let cri_view = async {
            while running_containers(&self.cri, &prefix).await.len() < n {
                if started.elapsed() > RUNNING_LIMIT {
                    return None;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Some(started.elapsed())
        };
        let api_view = async {
            loop {
                if let Ok(pods) = node_pods(port, &prefix).await
                    && pods.iter().filter(|p| phase(p) == "Running").count() >= n
                {
                    return Some(started.elapsed());
                }
                if started.elapsed() > RUNNING_LIMIT {
                    return None;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        };
        let (cri_t, api_t) = tokio::join!(cri_view, api_view);
        let (Some(cri_t), Some(api_t)) = (cri_t, api_t) else {
            running.check_alive("while pods started");
            cannot_run(
                kind,
                &running.log,
                &format!("{n} pods were not all running within {RUNNING_LIMIT:?}"),
            );
        };
        let after = runtime_operations(port).await.unwrap_or_default();
        let goal = (n >= 50).then_some(0.9);
        self.results.record(
            kind,
            &format!("{n} manifests → {n} containers running (CRI)"),
            "s",
            goal,
            cri_t.as_secs_f64(),
        );
        self.results.record(
            kind,
            &format!("{n} manifests → {n} pods Running in /pods"),
            "s",
            goal,
            api_t.as_secs_f64(),
        );
        let ops = ops_delta(&after, &before, n as f64);
        let label = format!("CRI calls per pod started, {n} pods");
        self.results
            .record(kind, &label, "per pod", Some(0.5), ops.values().sum());
        self.results.record_ops(kind, &label, ops);
        // Statuses right, a moment after all are Running.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let pods = node_pods(port, &prefix).await.unwrap_or_default();
        let wrong: Vec<String> = pods
            .iter()
            .filter(|p| !status_right(p))
            .map(|p| p["metadata"]["name"].as_str().unwrap_or("?").to_owned())
            .collect();
        if pods.len() != n || !wrong.is_empty() {
            self.results.wrong_statuses.push(format!(
                "{} with {n} pods: {} pods in /pods, not right: {wrong:?}",
                kind.name(),
                pods.len()
            ));
        }
        println!(
            "  {} {n} pods: containers running {:.2} s, /pods Running {:.2} s, {:.1} CRI calls per pod, statuses {}",
            kind.name(),
            cri_t.as_secs_f64(),
            api_t.as_secs_f64(),
            after.values().sum::<f64>() / n as f64 - before.values().sum::<f64>() / n as f64,
            if pods.len() == n && wrong.is_empty() {
                "right"
            } else {
                "NOT right"
            }
        );
        if steady {
            let goal_pods = n == 100 || n >= 250;
            self.steady(running, n, &format!("{n} pods"), goal_pods)
                .await;
        }
        // Terminate: every manifest removed at once.
        let t0 = Instant::now();
        for i in 0..n {
            let _ = std::fs::remove_file(manifests.join(format!("{prefix}{i}.yaml")));
        }
        loop {
            if ready_sandboxes(&self.cri, &prefix).await == Some(0) {
                break;
            }
            if t0.elapsed() > STOPPED_LIMIT {
                running.check_alive("while pods stopped");
                cannot_run(
                    kind,
                    &running.log,
                    &format!("{n} pods did not stop in time"),
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let stop_t = t0.elapsed();
        self.results.record(
            kind,
            &format!("terminate {n} pods (manifests removed → sandboxes stopped)"),
            "s",
            (n == 50).then_some(0.8),
            stop_t.as_secs_f64(),
        );
        println!(
            "  {} {n} pods terminated in {:.2} s",
            kind.name(),
            stop_t.as_secs_f64()
        );
        // Let the kubelet see its pods gone before the runtime forgets them.
        tokio::time::sleep(Duration::from_secs(2)).await;
        remove_everything(&self.cri).await;
    }

    /// Container exit → the pod's status in `/pods` shows it.
    async fn exits(&mut self, running: &mut Running, count: usize) {
        let kind = running.kind;
        let port = running.port;
        let manifests = running.dir.join("manifests");
        for i in 0..count {
            std::fs::write(manifests.join(format!("exit-{i}.yaml")), exit_manifest(i))
                .expect("write");
        }
        let t0 = Instant::now();
        loop {
            let api_ok = node_pods(port, "exit-")
                .await
                .is_ok_and(|p| p.iter().filter(|p| status_right(p)).count() >= count);
            if api_ok && running_containers(&self.cri, "exit-").await.len() >= count {
                break;
            }
            if t0.elapsed() > RUNNING_LIMIT {
                running.check_alive("while exit pods started");
                cannot_run(kind, &running.log, "the exit pods did not all run");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        let mut samples = Vec::new();
        for i in 0..count {
            let prefix = format!("exit-{i}-");
            let Some(container) = running_containers(&self.cri, &prefix)
                .await
                .into_iter()
                .next()
            else {
                cannot_run(
                    kind,
                    &running.log,
                    &format!("no running container for {prefix}"),
                );
            };
            let pid = self
                .cri
                .container_status(&container.id, true)
                .await
                .ok()
                .and_then(|s| s.info.get("info").cloned())
                .and_then(|info| serde_json::from_str::<serde_json::Value>(&info).ok())
                .and_then(|v| v["pid"].as_u64())
                .filter(|p| *p > 1)
                .unwrap_or_else(|| panic!("containerd reports no pid for {}", container.id));
            // Offsets that meet a 1 s relist at different phases.
            tokio::time::sleep(Duration::from_millis(300 + (i as u64 * 370) % 1000)).await;
            let killed = Instant::now();
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            loop {
                let seen = node_pods(port, &prefix).await.is_ok_and(|pods| {
                    pods.iter().any(|p| {
                        p["status"]["containerStatuses"][0]["state"]["terminated"].is_object()
                    })
                });
                if seen {
                    break;
                }
                if killed.elapsed() > EXIT_LIMIT {
                    running.check_alive("while a container exited");
                    cannot_run(
                        kind,
                        &running.log,
                        &format!("{prefix}'s exit never showed in /pods"),
                    );
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let ms = killed.elapsed().as_secs_f64() * 1e3;
            samples.push(ms);
            self.results.record(
                kind,
                "container exit → status in /pods",
                "ms",
                Some(0.2),
                ms,
            );
        }
        println!(
            "  {} exit → status: {:?} ms",
            kind.name(),
            samples.iter().map(|v| v.round()).collect::<Vec<_>>()
        );
        for i in 0..count {
            let _ = std::fs::remove_file(manifests.join(format!("exit-{i}.yaml")));
        }
        let t0 = Instant::now();
        while ready_sandboxes(&self.cri, "exit-").await != Some(0) && t0.elapsed() < STOPPED_LIMIT {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        remove_everything(&self.cri).await;
    }

    async fn round(&mut self, kind: Kind, round: usize) {
        let label = format!("r{round}");
        println!(
            "round {round}: {} kubelet (load {})",
            kind.name(),
            load_average()
        );
        let mut running = self.start(kind, &label, 110).await;
        self.steady(&mut running, 0, "0 pods", true).await;
        let pods = self.settings.pods.clone();
        for n in pods {
            self.pods(&mut running, n, true).await;
        }
        if self.settings.exits > 0 {
            let exits = self.settings.exits;
            self.exits(&mut running, exits).await;
        }
        self.stop(running, &label).await;
    }

    async fn density(&mut self, kind: Kind) {
        let n = self.settings.density;
        println!(
            "density: {} kubelet, {n} pods (load {})",
            kind.name(),
            load_average()
        );
        let mut running = self.start(kind, "density", n.max(110)).await;
        self.pods(&mut running, n, true).await;
        self.stop(running, "density").await;
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--list") {
        return;
    }
    if !args.iter().any(|a| a == "--bench") {
        println!("vs_upstream: a benchmark; run it with scripts/bench-vs-upstream.sh");
        return;
    }
    if !kubelet_binary().exists() {
        eprintln!(
            "{} is missing: run scripts/bench-vs-upstream.sh (or cargo build --release --example kubelet)",
            kubelet_binary().display()
        );
        std::process::exit(1);
    }
    if let Err(e) = kubelet_testbed::k8s_binary("kubelet") {
        eprintln!("upstream's kubelet: {e}");
        std::process::exit(1);
    }
    let settings = Settings::from_env();
    // Recorded before the test bed exists, so that it is restored last.
    let host = HostState::record();
    let Some(bed) = Testbed::start() else {
        eprintln!("no test bed: run as root after scripts/testbed/install.sh");
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
        let mut bench = Bench {
            bed,
            cri,
            settings,
            results: Results::default(),
            host,
            clk_tck: clock_ticks_per_second(),
        };
        let s = &bench.settings;
        let header = format!(
            "ours {} vs upstream's {}, containerd {}; rounds {}, pods {:?}, window {} s, settle {} s, exits {}, density {}; load at start {}",
            kubelet_binary().display(),
            kubelet_testbed::k8s_binary("kubelet")
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            bench.bed.containerd_version(),
            s.rounds,
            s.pods,
            s.window.as_secs(),
            s.settle.as_secs(),
            s.exits,
            s.density,
            load_average()
        );
        println!("{header}");
        // Warm-up: the first sandboxes on a fresh containerd are slower.
        common::floor(&bench.cri, &bench.bed, 5, "warmup").await;
        remove_everything(&bench.cri).await;
        let began = Instant::now();
        for r in 0..bench.settings.rounds {
            let order = if r % 2 == 0 {
                [Kind::Ours, Kind::Upstream]
            } else {
                [Kind::Upstream, Kind::Ours]
            };
            for kind in order {
                bench.round(kind, r).await;
            }
        }
        if bench.settings.density > 0 {
            for kind in [Kind::Ours, Kind::Upstream] {
                bench.density(kind).await;
            }
        }
        let mut summary = format!(
            "{header}\ntook {:.0} s; load at the end {}\n\n{}",
            began.elapsed().as_secs_f64(),
            load_average(),
            bench.results.table()
        );
        summary.push_str(&bench.results.ops_tables());
        if bench.results.wrong_statuses.is_empty() {
            summary.push_str("\nEvery pod's status was right (Running, ready, no restart) once all were Running.\n");
        } else {
            summary.push_str("\nStatuses not right:\n");
            for w in &bench.results.wrong_statuses {
                let _ = writeln!(summary, "- {w}");
            }
        }
        println!("\n{summary}");
        let dir = &bench.settings.report_dir;
        let _ = std::fs::create_dir_all(dir);
        let _ = std::fs::write(dir.join("summary.md"), &summary);
        let _ = std::fs::write(dir.join("samples.tsv"), bench.results.tsv());
        println!("report in {}", dir.display());
    });
}
