//! A fault soak on real parts (issue 18, part 3): the example kubelet, as a
//! child process, on a private containerd of the test bed, under pod churn
//! while containerd and the kubelet are SIGKILLed and restarted at random.
//!
//! What it does, for `SOAK_SECONDS` (default 90: the CI variant):
//!
//! - **churn**: writes static pod manifests to the kubelet's manifest
//!   directory and removes them, about `SOAK_PODS_PER_SECOND` (3) each way,
//!   each pod living 5–25 s, at most `SOAK_MAX_PODS` (60) at once. 60 % are
//!   `sleep 3600` (BestEffort or Burstable), 20 % crash-loop (`sh -c 'exit
//!   1'`, `restartPolicy: Always`), 20 % OOM (a 16 MiB memory limit and a
//!   shell that doubles a string until the kernel kills it; Burstable or
//!   Guaranteed);
//! - **faults**: containerd is SIGKILLed and started again every
//!   `SOAK_CONTAINERD_KILL_EVERY` seconds (a random `MIN-MAX` interval:
//!   120-240 in runs of 15 minutes or more, else 20-40), the kubelet every
//!   `SOAK_KUBELET_KILL_EVERY` (180-300, else 30-50); containerd's shims and
//!   containers keep running, as after a crash; the kubelet starts again
//!   with the same flags and finds its pods in the runtime;
//! - **checks**, every `SOAK_CHECK_EVERY` seconds (60, else 30) while the
//!   churn goes on, and at the end: see [`Soak::check`]. For a pod whose
//!   manifest was removed, the bound runs from the latest of its removal
//!   and the last restarts of the kubelet and containerd: 30 s for running
//!   containers, ready sandboxes, pod cgroups (under the kubelet's cgroup
//!   root, in every hierarchy), mounts and pod directories; 150 s for dead
//!   containers, stopped sandboxes and log directories, which the
//!   kubelet's container GC removes every minute as upstream's. Every
//!   running pod's status on the node API's `/pods` must match the CRI
//!   view (the running container of each container name) within 10 s;
//! - **the end**: churn and faults stop, the pods left must match the
//!   runtime, then every manifest is removed and everything must go: no
//!   sandbox, container, pod cgroup, mount under the test bed, pod
//!   directory, log directory or `/pods` entry;
//! - **memory**: the kubelet's `VmRSS` every 5 s; the slope (MiB/min) of a
//!   least-squares line fitted within each kubelet run after
//!   `SOAK_RSS_WARMUP` seconds (60, else 15), pooled over the runs. It
//!   fails above `SOAK_RSS_MAX_SLOPE` (1 MiB/min) when at least 5 minutes
//!   of post-warm-up samples back the fit (the long run); the short run
//!   only reports it.
//!
//! Everything it observed goes to `SOAK_OUT` (default
//! `<target>/tmp/soak-<pid>`): `summary.txt` (the figures), `events.log`
//! (every pod created and deleted, every kill and restart, every check),
//! `checks.tsv`, `rss.tsv`, `kubelet.log` (all runs) and `containerd.log`.
//! `SOAK_SEED` fixes the random choices (the interleavings still differ).
//!
//! `scripts/soak.sh` runs the 30-minute soak on a release build. As every
//! end-to-end test, it needs root and the test bed (`scripts/testbed/
//! install.sh`): without them it skips, except under CI where it fails. It
//! runs the example kubelet next to this test binary
//! (`<target>/<profile>/examples/kubelet`, which `cargo test` builds;
//! `KUBELET_BIN` overrides it).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kubelet_rs::cri::{RemoteRuntime, RuntimeService, api};
use kubelet_rs::podconfig::{ManifestOrigin, decode_static_pod};
use kubelet_testbed::{Testbed, http_get};

/// The node name (`--hostname-override`): static pods are `<name>-soak`.
const NODE: &str = "soak";
/// The bound for what must go promptly once a pod is gone.
const FAST_BOUND: Duration = Duration::from_secs(30);
/// The bound for what the container GC (every 60 s) removes.
const SLOW_BOUND: Duration = Duration::from_secs(150);
/// How long a status may lag the runtime: a mismatch counts when it is seen
/// three times, 5 s apart.
const STATUS_CONFIRM: Duration = Duration::from_secs(5);
/// Both the kubelet and containerd have been up this long when a check runs.
const CHECK_UPTIME: Duration = Duration::from_secs(15);
/// A live pod must be on `/pods` once its manifest is this old.
const STATUS_MIN_AGE: Duration = Duration::from_secs(20);
/// RSS sampling period.
const RSS_EVERY: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------
// Settings

/// The run's parameters, from the environment.
#[derive(Debug, Clone)]
struct Settings {
    seconds: u64,
    pods_per_second: f64,
    max_pods: usize,
    containerd_every: (u64, u64),
    kubelet_every: (u64, u64),
    check_every: u64,
    rss_warmup: u64,
    rss_max_slope: f64,
    final_limit: u64,
    seed: u64,
    out: PathBuf,
}

fn env_parse<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a valid value")),
        _ => default,
    }
}

fn env_range(name: &str, default: (u64, u64)) -> (u64, u64) {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => {
            let parsed = v
                .trim()
                .split_once('-')
                .and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)));
            match parsed {
                Some((a, b)) if a > 0 && a <= b => (a, b),
                _ => panic!("{name}={v:?}: expected MIN-MAX seconds, 0 < MIN <= MAX"),
            }
        }
        _ => default,
    }
}

impl Settings {
    fn from_env() -> Settings {
        let seconds: u64 = env_parse("SOAK_SECONDS", 90);
        let long = seconds >= 900;
        let seed = env_parse(
            "SOAK_SEED",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1),
        );
        let out = std::env::var_os("SOAK_OUT")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("soak-{}", std::process::id()))
            });
        Settings {
            seconds,
            pods_per_second: env_parse("SOAK_PODS_PER_SECOND", 3.0),
            max_pods: env_parse("SOAK_MAX_PODS", 60),
            containerd_every: env_range(
                "SOAK_CONTAINERD_KILL_EVERY",
                if long { (120, 240) } else { (20, 40) },
            ),
            kubelet_every: env_range(
                "SOAK_KUBELET_KILL_EVERY",
                if long { (180, 300) } else { (30, 50) },
            ),
            check_every: env_parse("SOAK_CHECK_EVERY", if long { 60 } else { 30 }),
            rss_warmup: env_parse("SOAK_RSS_WARMUP", if long { 60 } else { 15 }),
            rss_max_slope: env_parse("SOAK_RSS_MAX_SLOPE", 1.0),
            final_limit: env_parse("SOAK_FINAL_LIMIT", 150),
            seed,
            out,
        }
    }
}

/// xorshift64*: the run's random choices, from `SOAK_SEED`.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
}

// ---------------------------------------------------------------------------
// Pods

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Sleep,
    Crash,
    Oom,
}

/// The manifest of pod `name` of `kind`; `variant` picks QoS and grace.
fn manifest(name: &str, kind: Kind, variant: u64) -> String {
    let grace = variant % 3;
    let (command, resources) = match kind {
        Kind::Sleep => (
            r#"[sleep, "3600"]"#,
            if variant.is_multiple_of(2) {
                ""
            } else {
                "\n    resources: {requests: {cpu: 10m, memory: 8Mi}}"
            },
        ),
        Kind::Crash => (r#"[sh, -c, "exit 1"]"#, ""),
        Kind::Oom => (
            // Doubles a shell string until the memory limit's OOM killer
            // ends it (about 16 MiB): exit 137, reason OOMKilled.
            r#"[sh, -c, "x=0123456789abcdef; while :; do x=$x$x; done"]"#,
            if variant.is_multiple_of(2) {
                "\n    resources: {limits: {memory: 16Mi}}"
            } else {
                "\n    resources: {limits: {cpu: 100m, memory: 16Mi}}"
            },
        ),
    };
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: default\nspec:\n  \
         terminationGracePeriodSeconds: {grace}\n  restartPolicy: Always\n  containers:\n  \
         - name: app\n    image: {image}\n    imagePullPolicy: IfNotPresent\n    command: \
         {command}{resources}\n",
        image = kubelet_testbed::BUSYBOX_IMAGE,
    )
}

/// One pod of the churn.
#[derive(Debug)]
struct Pod {
    /// `soak-<n>`.
    name: String,
    kind: Kind,
    created: Instant,
    /// When its manifest is removed.
    expires: Instant,
    removed: Option<Instant>,
    /// Sandbox and container IDs seen for it (for the mount check).
    ids: HashSet<String>,
    /// A container of it was seen in the runtime.
    ever_container: bool,
}

impl Pod {
    /// The full static pod name.
    fn full_name(&self) -> String {
        format!("{}-{NODE}", self.name)
    }
}

// ---------------------------------------------------------------------------
// The world: what the driver did and knows

#[derive(Debug, Default)]
struct Counts {
    created: u64,
    deleted: u64,
    containerd_kills: u64,
    kubelet_kills: u64,
    /// Kubelet exits the driver did not cause.
    kubelet_crashes: Vec<String>,
    /// Kill or restart failures.
    fault_errors: Vec<String>,
}

/// One RSS sample.
#[derive(Debug, Clone, Copy)]
struct RssSample {
    /// Seconds since the soak started.
    t: f64,
    /// Seconds since this kubelet run started.
    age: f64,
    run: u32,
    kib: u64,
}

/// One check's outcome.
#[derive(Debug, Default)]
struct CheckRow {
    label: String,
    t: f64,
    live: usize,
    gone_fast: usize,
    gone_slow: usize,
    /// Category → what leaked.
    leaks: BTreeMap<&'static str, Vec<String>>,
    /// Pods whose status did not match the runtime.
    mismatches: Vec<String>,
    /// Runtime invariants broken (two ready sandboxes for a pod, ...).
    violations: Vec<String>,
    /// Why part of the check could not run.
    errors: Vec<String>,
}

impl CheckRow {
    fn leak(&mut self, what: &'static str, item: String) {
        self.leaks.entry(what).or_default().push(item);
    }
    fn leak_total(&self) -> usize {
        self.leaks.values().map(Vec::len).sum()
    }
    fn is_clean(&self) -> bool {
        self.leak_total() == 0
            && self.mismatches.is_empty()
            && self.violations.is_empty()
            && self.errors.is_empty()
    }
}

const LEAK_KINDS: [&str; 9] = [
    "running containers",
    "ready sandboxes",
    "cgroups",
    "mounts",
    "pod dirs",
    "dead containers",
    "stopped sandboxes",
    "log dirs",
    "unknown pods",
];

struct World {
    pods: BTreeMap<String, Pod>,
    counts: Counts,
    kubelet_started: Instant,
    containerd_started: Instant,
    kubelet_run: u32,
    rss: Vec<RssSample>,
    checks: Vec<CheckRow>,
    events: std::fs::File,
}

// ---------------------------------------------------------------------------
// The soak

struct Soak {
    // The kubelet child is killed in `Drop` before the fields drop, the
    // test bed (containerd) last.
    kubelet: Mutex<Option<Child>>,
    settings: Settings,
    manifests: PathBuf,
    staging: PathBuf,
    root: PathBuf,
    pod_logs: PathBuf,
    config: PathBuf,
    kubelet_bin: PathBuf,
    port: u16,
    t0: Instant,
    world: Mutex<World>,
    /// Held by a kill-and-restart and by a check, so they never overlap.
    faults: tokio::sync::Mutex<()>,
    churning: AtomicBool,
    bed: Testbed,
}

impl Drop for Soak {
    fn drop(&mut self) {
        if let Ok(mut k) = self.kubelet.lock()
            && let Some(mut child) = k.take()
        {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The example kubelet: `KUBELET_BIN`, else `<target>/<profile>/examples/
/// kubelet` next to this test binary (`<target>/<profile>/deps/soak-*`).
fn kubelet_binary() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("KUBELET_BIN") {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let profile = exe
        .parent()
        .and_then(Path::parent)
        .ok_or_else(|| format!("{} has no profile folder", exe.display()))?;
    let bin = profile.join("examples/kubelet");
    if bin.is_file() {
        Ok(bin)
    } else {
        Err(format!(
            "{} is missing: build it with `cargo build --example kubelet` (cargo test builds it)",
            bin.display()
        ))
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// `VmRSS` of `pid` in KiB.
fn rss_kib(pid: u32) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

impl Soak {
    fn secs(&self) -> f64 {
        self.t0.elapsed().as_secs_f64()
    }

    /// Appends a line to `events.log`, prefixed with the soak's clock.
    fn event(&self, line: &str) {
        let t = self.secs();
        if let Ok(mut w) = self.world.lock() {
            let _ = writeln!(w.events, "{t:9.3} {line}");
        }
    }

    fn start_kubelet(&self) -> Result<u32, String> {
        let log_path = self.settings.out.join("kubelet.log");
        let mut log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| format!("open {}: {e}", log_path.display()))?;
        let _ = writeln!(log, "==== soak: kubelet started at t={:.3}", self.secs());
        let log2 = log.try_clone().map_err(|e| format!("kubelet.log: {e}"))?;
        let child = Command::new(&self.kubelet_bin)
            .arg("--config")
            .arg(&self.config)
            .arg("--root-dir")
            .arg(&self.root)
            .arg("--hostname-override")
            .arg(NODE)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .map_err(|e| format!("start {}: {e}", self.kubelet_bin.display()))?;
        let pid = child.id();
        *self.kubelet.lock().map_err(|_| "kubelet lock")? = Some(child);
        if let Ok(mut w) = self.world.lock() {
            w.kubelet_started = Instant::now();
            w.kubelet_run += 1;
        }
        self.event(&format!("kubelet started (pid {pid})"));
        Ok(pid)
    }

    fn kill_kubelet(&self) -> Result<u32, String> {
        let mut guard = self.kubelet.lock().map_err(|_| "kubelet lock")?;
        let mut child = guard.take().ok_or("no kubelet runs")?;
        let pid = child.id();
        child
            .kill()
            .map_err(|e| format!("kill kubelet {pid}: {e}"))?;
        let _ = child.wait();
        drop(guard);
        self.event(&format!("kubelet SIGKILLed (pid {pid})"));
        Ok(pid)
    }

    fn kubelet_pid(&self) -> Option<u32> {
        self.kubelet.lock().ok()?.as_ref().map(Child::id)
    }

    /// Notices a kubelet that exited by itself, records it and starts
    /// another.
    fn watch_kubelet(&self) {
        let exited = {
            let Ok(mut guard) = self.kubelet.lock() else {
                return;
            };
            match guard.as_mut().map(Child::try_wait) {
                Some(Ok(Some(status))) => {
                    guard.take();
                    Some(status.to_string())
                }
                _ => None,
            }
        };
        if let Some(status) = exited {
            let what = format!("kubelet exited by itself at t={:.1}: {status}", self.secs());
            self.event(&what);
            if let Ok(mut w) = self.world.lock() {
                w.counts.kubelet_crashes.push(what);
            }
            if let Err(e) = self.start_kubelet() {
                self.fault_error(e);
            }
        }
    }

    fn fault_error(&self, e: String) {
        self.event(&format!("fault error: {e}"));
        if let Ok(mut w) = self.world.lock() {
            w.counts.fault_errors.push(e);
        }
    }

    // --- churn -------------------------------------------------------------

    fn create_pod(&self, n: u64, rng: &mut Rng) -> Result<(), String> {
        let name = format!("soak-{n}");
        let kind = match rng.range(0, 9) {
            0 | 1 => Kind::Crash,
            2 | 3 => Kind::Oom,
            _ => Kind::Sleep,
        };
        let text = manifest(&name, kind, rng.next());
        let file = format!("{name}.yaml");
        let path = self.manifests.join(&file);
        let pod = decode_static_pod(text.as_bytes(), &ManifestOrigin::file(&path), NODE)
            .map_err(|e| format!("decode {name}: {e}"))?;
        let uid = pod
            .metadata
            .uid
            .ok_or_else(|| format!("{name} got no UID"))?;
        // Write then rename, as config managers do.
        let tmp = self.staging.join(&file);
        std::fs::write(&tmp, &text).map_err(|e| format!("write {}: {e}", tmp.display()))?;
        std::fs::rename(&tmp, &path).map_err(|e| format!("rename {}: {e}", path.display()))?;
        let now = Instant::now();
        let life = Duration::from_secs(rng.range(5, 25));
        self.event(&format!("create {name} {kind:?} uid={uid}"));
        let mut w = self.world.lock().map_err(|_| "world lock")?;
        w.counts.created += 1;
        w.pods.insert(
            uid,
            Pod {
                name,
                kind,
                created: now,
                expires: now + life,
                removed: None,
                ids: HashSet::new(),
                ever_container: false,
            },
        );
        Ok(())
    }

    fn remove_pod(&self, uid: &str) {
        let name = {
            let Ok(w) = self.world.lock() else { return };
            match w.pods.get(uid) {
                Some(p) if p.removed.is_none() => p.name.clone(),
                _ => return,
            }
        };
        let path = self.manifests.join(format!("{name}.yaml"));
        if let Err(e) = std::fs::remove_file(&path) {
            self.fault_error(format!("remove {}: {e}", path.display()));
        }
        self.event(&format!("delete {name} uid={uid}"));
        if let Ok(mut w) = self.world.lock() {
            w.counts.deleted += 1;
            if let Some(p) = w.pods.get_mut(uid) {
                p.removed = Some(Instant::now());
            }
        }
    }

    async fn churn(self: Arc<Self>, until: Instant, mut rng: Rng) {
        let period = Duration::from_secs_f64(1.0 / self.settings.pods_per_second.max(0.01));
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut n = 0;
        while Instant::now() < until {
            tick.tick().await;
            let now = Instant::now();
            let (expired, live): (Vec<String>, usize) = {
                let Ok(w) = self.world.lock() else { return };
                let live: Vec<(&String, &Pod)> =
                    w.pods.iter().filter(|(_, p)| p.removed.is_none()).collect();
                (
                    live.iter()
                        .filter(|(_, p)| p.expires <= now)
                        .map(|(uid, _)| (*uid).clone())
                        .collect(),
                    live.len(),
                )
            };
            let live = live - expired.len();
            for uid in &expired {
                self.remove_pod(uid);
            }
            if live < self.settings.max_pods {
                if let Err(e) = self.create_pod(n, &mut rng) {
                    self.fault_error(e);
                }
                n += 1;
            }
        }
        self.churning.store(false, Ordering::SeqCst);
    }

    // --- faults ------------------------------------------------------------

    async fn containerd_faults(self: Arc<Self>, until: Instant, mut rng: Rng) {
        let (lo, hi) = self.settings.containerd_every;
        loop {
            let wait = Duration::from_secs(rng.range(lo, hi));
            if Instant::now() + wait >= until {
                return;
            }
            tokio::time::sleep(wait).await;
            let _turn = self.faults.lock().await;
            let me = self.clone();
            let done = tokio::task::spawn_blocking(move || {
                let killed = me.bed.kill_containerd()?;
                me.event(&format!("containerd SIGKILLed (pid {killed})"));
                if let Ok(mut w) = me.world.lock() {
                    w.counts.containerd_kills += 1;
                }
                let started = Instant::now();
                let pid = me.bed.restart_containerd(Duration::from_secs(30))?;
                me.event(&format!(
                    "containerd started (pid {pid}, answering after {} ms)",
                    started.elapsed().as_millis()
                ));
                if let Ok(mut w) = me.world.lock() {
                    w.containerd_started = Instant::now();
                }
                Ok::<(), String>(())
            })
            .await;
            match done {
                Ok(Ok(())) => {}
                Ok(Err(e)) => self.fault_error(format!("containerd kill/restart: {e}")),
                Err(e) => self.fault_error(format!("containerd kill/restart panicked: {e}")),
            }
        }
    }

    async fn kubelet_faults(self: Arc<Self>, until: Instant, mut rng: Rng) {
        let (lo, hi) = self.settings.kubelet_every;
        loop {
            let wait = Duration::from_secs(rng.range(lo, hi));
            if Instant::now() + wait >= until {
                return;
            }
            tokio::time::sleep(wait).await;
            let _turn = self.faults.lock().await;
            self.watch_kubelet();
            match self.kill_kubelet() {
                Ok(_) => {
                    if let Ok(mut w) = self.world.lock() {
                        w.counts.kubelet_kills += 1;
                    }
                }
                Err(e) => self.fault_error(e),
            }
            if let Err(e) = self.start_kubelet() {
                self.fault_error(e);
            }
        }
    }

    // --- sampling ----------------------------------------------------------

    /// Every 5 s: the kubelet's RSS, an exit it did not get from the
    /// driver, and the IDs the runtime holds for each pod.
    async fn sample(self: Arc<Self>) {
        let mut tick = tokio::time::interval(RSS_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.watch_kubelet();
            if let Some(pid) = self.kubelet_pid()
                && let Some(kib) = rss_kib(pid)
            {
                let t = self.secs();
                if let Ok(mut w) = self.world.lock() {
                    let age = w.kubelet_started.elapsed().as_secs_f64();
                    let run = w.kubelet_run;
                    w.rss.push(RssSample { t, age, run, kib });
                }
            }
            if let Ok(view) = RuntimeView::read(&self.bed).await {
                self.learn_ids(&view);
            }
        }
    }

    fn learn_ids(&self, view: &RuntimeView) {
        let Ok(mut w) = self.world.lock() else { return };
        for s in &view.sandboxes {
            if let Some(p) = w.pods.get_mut(&uid_of(&s.labels)) {
                p.ids.insert(s.id.clone());
            }
        }
        for c in &view.containers {
            if let Some(p) = w.pods.get_mut(&uid_of(&c.labels)) {
                p.ids.insert(c.id.clone());
                p.ever_container = true;
            }
        }
    }

    // --- checks ------------------------------------------------------------

    /// Waits (holding the fault lock, so no kill comes meanwhile) until the
    /// kubelet and containerd have both been up for [`CHECK_UPTIME`].
    async fn settle_uptime(&self, uptime: Duration) {
        loop {
            let wait = {
                let Ok(w) = self.world.lock() else { return };
                let up = w
                    .kubelet_started
                    .elapsed()
                    .min(w.containerd_started.elapsed());
                uptime.saturating_sub(up)
            };
            if wait.is_zero() {
                return;
            }
            tokio::time::sleep(wait).await;
        }
    }

    async fn periodic_checks(self: Arc<Self>) {
        let every = Duration::from_secs(self.settings.check_every);
        let mut n = 0;
        loop {
            // Wake every second so that the end of the churn ends this too.
            let due = Instant::now() + every;
            while Instant::now() < due {
                if !self.churning.load(Ordering::SeqCst) {
                    return;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            let _turn = self.faults.lock().await;
            self.settle_uptime(CHECK_UPTIME).await;
            n += 1;
            let row = self.check(format!("minute-{n}"), false).await;
            self.record(row);
        }
    }

    fn record(&self, row: CheckRow) {
        let mut line = format!(
            "check {}: live {} gone {}/{} leaks {} mismatches {} violations {}",
            row.label,
            row.live,
            row.gone_fast,
            row.gone_slow,
            row.leak_total(),
            row.mismatches.len(),
            row.violations.len()
        );
        for (what, items) in &row.leaks {
            let _ = write!(line, "\n    leaked {what}: {}", items.join(", "));
        }
        for m in &row.mismatches {
            let _ = write!(line, "\n    status mismatch: {m}");
        }
        for v in &row.violations {
            let _ = write!(line, "\n    violation: {v}");
        }
        for e in &row.errors {
            let _ = write!(line, "\n    check error: {e}");
        }
        eprintln!("soak: {line}");
        self.event(&line);
        if let Ok(mut w) = self.world.lock() {
            w.checks.push(row);
        }
    }

    /// One check: leaks of gone pods, runtime invariants, and statuses.
    ///
    /// A pod is gone once its manifest was removed; `final_` makes every
    /// removed pod gone at once, bounds or not (the end of the run, after
    /// waiting for everything to go).
    async fn check(&self, label: String, final_: bool) -> CheckRow {
        let mut row = CheckRow {
            label,
            t: self.secs(),
            ..Default::default()
        };
        let view = match RuntimeView::read(&self.bed).await {
            Ok(v) => v,
            Err(e) => {
                row.errors.push(format!("CRI: {e}"));
                return row;
            }
        };
        self.learn_ids(&view);
        let now = Instant::now();
        // uid → (full name, is gone fast, is gone slow, ids)
        struct Gone {
            uid: String,
            full: String,
            fast: bool,
            slow: bool,
            ids: HashSet<String>,
        }
        let (gone, known, live): (Vec<Gone>, HashSet<String>, usize) = {
            let Ok(w) = self.world.lock() else {
                row.errors.push("world lock".into());
                return row;
            };
            let restarted = w.kubelet_started.max(w.containerd_started);
            let gone = w
                .pods
                .iter()
                .filter_map(|(uid, p)| {
                    let removed = p.removed?;
                    let from = removed.max(restarted);
                    Some(Gone {
                        uid: uid.clone(),
                        full: p.full_name(),
                        fast: final_ || now >= from + FAST_BOUND,
                        slow: final_ || now >= from + SLOW_BOUND,
                        ids: p.ids.clone(),
                    })
                })
                .collect();
            let live = w.pods.values().filter(|p| p.removed.is_none()).count();
            (gone, w.pods.keys().cloned().collect(), live)
        };
        row.live = live;
        row.gone_fast = gone.iter().filter(|g| g.fast).count();
        row.gone_slow = gone.iter().filter(|g| g.slow).count();

        let cgroups = pod_cgroups(self.bed.cgroup_root());
        let mounts = mounts();
        let pod_dirs = dir_names(&self.root.join("pods"));
        let log_dirs = dir_names(&self.pod_logs);

        for g in gone.iter().filter(|g| g.fast) {
            let tag = |what: &str| format!("{} ({what})", g.full);
            for c in view.containers_of(&g.uid) {
                if c.state == api::ContainerState::ContainerRunning as i32 {
                    row.leak("running containers", tag(&short(&c.id)));
                }
            }
            for s in view.sandboxes_of(&g.uid) {
                if s.state == api::PodSandboxState::SandboxReady as i32 {
                    row.leak("ready sandboxes", tag(&short(&s.id)));
                }
            }
            for (controller, path) in cgroups.iter().filter(|(_, p)| p.contains(&g.uid)) {
                row.leak("cgroups", tag(&format!("{controller}:{path}")));
            }
            for m in mounts
                .iter()
                .filter(|m| m.contains(&g.uid) || g.ids.iter().any(|id| m.contains(id.as_str())))
            {
                row.leak("mounts", tag(m));
            }
            if pod_dirs.contains(&g.uid) {
                row.leak("pod dirs", tag("pods/<uid>"));
            }
        }
        for g in gone.iter().filter(|g| g.slow) {
            let tag = |what: &str| format!("{} ({what})", g.full);
            for c in view.containers_of(&g.uid) {
                if c.state != api::ContainerState::ContainerRunning as i32 {
                    row.leak("dead containers", tag(&short(&c.id)));
                }
            }
            for s in view.sandboxes_of(&g.uid) {
                if s.state != api::PodSandboxState::SandboxReady as i32 {
                    row.leak("stopped sandboxes", tag(&short(&s.id)));
                }
            }
            if log_dirs.iter().any(|d| d.ends_with(&g.uid)) {
                row.leak("log dirs", tag("pod log dir"));
            }
        }
        // Objects of pods this soak never made.
        let mut unknown = BTreeSet::new();
        for labels in view
            .sandboxes
            .iter()
            .map(|s| &s.labels)
            .chain(view.containers.iter().map(|c| &c.labels))
        {
            let uid = uid_of(labels);
            if !known.contains(&uid) {
                unknown.insert(format!("runtime uid {uid:?}"));
            }
        }
        for (controller, path) in &cgroups {
            if !known.iter().any(|uid| path.contains(uid.as_str())) {
                unknown.insert(format!("cgroup {controller}:{path}"));
            }
        }
        for d in &pod_dirs {
            if !known.contains(d) {
                unknown.insert(format!("pod dir {d}"));
            }
        }
        for u in unknown {
            row.leak("unknown pods", u);
        }
        // Invariants: one ready sandbox per pod, one running container per
        // container name.
        let mut ready: HashMap<String, usize> = HashMap::new();
        for s in &view.sandboxes {
            if s.state == api::PodSandboxState::SandboxReady as i32 {
                *ready.entry(uid_of(&s.labels)).or_default() += 1;
            }
        }
        for (uid, n) in ready.into_iter().filter(|(_, n)| *n > 1) {
            row.violations
                .push(format!("{n} ready sandboxes for pod {uid}"));
        }
        let mut running: HashMap<(String, String), usize> = HashMap::new();
        for c in &view.containers {
            if c.state == api::ContainerState::ContainerRunning as i32 {
                *running
                    .entry((uid_of(&c.labels), container_name_of(&c.labels)))
                    .or_default() += 1;
            }
        }
        for ((uid, name), n) in running.into_iter().filter(|(_, n)| *n > 1) {
            row.violations
                .push(format!("{n} running containers {name} for pod {uid}"));
        }

        match self.confirmed_status_mismatches(final_).await {
            Ok(m) => row.mismatches = m,
            Err(e) => row.errors.push(e),
        }
        row
    }

    /// Status mismatches seen three times, [`STATUS_CONFIRM`] apart.
    async fn confirmed_status_mismatches(&self, final_: bool) -> Result<Vec<String>, String> {
        let mut seen: Option<BTreeMap<String, String>> = None;
        for round in 0..3 {
            if round > 0 {
                tokio::time::sleep(STATUS_CONFIRM).await;
            }
            let now = self.status_mismatches(final_).await?;
            let kept = match seen {
                None => now,
                Some(before) => now
                    .into_iter()
                    .filter(|(uid, _)| before.contains_key(uid))
                    .collect(),
            };
            if kept.is_empty() {
                return Ok(Vec::new());
            }
            seen = Some(kept);
        }
        Ok(seen.unwrap_or_default().into_values().collect())
    }

    /// Pod UID → how its status on `/pods` differs from the runtime, now.
    async fn status_mismatches(&self, final_: bool) -> Result<BTreeMap<String, String>, String> {
        let before = RuntimeView::read(&self.bed).await?;
        let (code, body) = http_get(self.port, "/pods").await?;
        if code != 200 {
            return Err(format!("GET /pods: {code}"));
        }
        let after = RuntimeView::read(&self.bed).await?;
        let reported = reported_pods(&body)?;
        let now = Instant::now();
        let (live, gone): (Vec<(String, String)>, HashMap<String, String>) = {
            let w = self.world.lock().map_err(|_| "world lock")?;
            let restarted = w.kubelet_started.max(w.containerd_started);
            let live = w
                .pods
                .iter()
                .filter(|(_, p)| p.removed.is_none() && now >= p.created + STATUS_MIN_AGE)
                .map(|(uid, p)| (uid.clone(), p.full_name()))
                .collect();
            let gone = w
                .pods
                .iter()
                .filter(|(_, p)| {
                    p.removed
                        .is_some_and(|r| final_ || now >= r.max(restarted) + FAST_BOUND)
                })
                .map(|(uid, p)| (uid.clone(), p.full_name()))
                .collect();
            (live, gone)
        };
        let mut out = BTreeMap::new();
        for (uid, full) in live {
            let runtime = before.running_by_name(&uid);
            if runtime != after.running_by_name(&uid) {
                continue; // it changed while /pods was read
            }
            let Some(status) = reported.get(&uid) else {
                out.insert(uid, format!("{full}: not on /pods"));
                continue;
            };
            let names: BTreeSet<&String> = runtime.keys().chain(status.running.keys()).collect();
            for name in names {
                let r = runtime.get(name);
                let k = status.running.get(name);
                if r != k {
                    out.insert(
                        uid.clone(),
                        format!(
                            "{full}: container {name}: /pods says {} (phase {}), the runtime runs {}",
                            k.map_or("not running".to_owned(), |id| format!("running {}", short(id))),
                            status.phase,
                            r.map_or("nothing".to_owned(), |id| short(id)),
                        ),
                    );
                }
            }
        }
        for (uid, status) in &reported {
            if let Some(full) = gone.get(uid) {
                out.insert(
                    uid.clone(),
                    format!(
                        "{full}: still on /pods (phase {}) after its manifest was removed",
                        status.phase
                    ),
                );
            }
        }
        Ok(out)
    }

    /// Everything of every pod that must be gone when none is left.
    async fn leftovers(&self) -> Result<Vec<String>, String> {
        let view = RuntimeView::read(&self.bed).await?;
        let mut left = Vec::new();
        for s in &view.sandboxes {
            left.push(format!(
                "sandbox {} of {} (state {})",
                short(&s.id),
                uid_of(&s.labels),
                s.state
            ));
        }
        for c in &view.containers {
            left.push(format!(
                "container {} of {} (state {})",
                short(&c.id),
                uid_of(&c.labels),
                c.state
            ));
        }
        for (controller, path) in pod_cgroups(self.bed.cgroup_root()) {
            left.push(format!("cgroup {controller}:{path}"));
        }
        let bed = self.bed.dir().display().to_string();
        for m in mounts().into_iter().filter(|m| m.starts_with(&bed)) {
            left.push(format!("mount {m}"));
        }
        for d in dir_names(&self.root.join("pods")) {
            left.push(format!("pod dir {d}"));
        }
        for d in dir_names(&self.pod_logs) {
            left.push(format!("log dir {d}"));
        }
        let (code, body) = http_get(self.port, "/pods").await?;
        if code != 200 {
            return Err(format!("GET /pods: {code}"));
        }
        for (uid, p) in reported_pods(&body)? {
            left.push(format!("/pods entry {uid} (phase {})", p.phase));
        }
        Ok(left)
    }
}

// ---------------------------------------------------------------------------
// Observations

/// The CRI's view, read through the project's CRI client.
struct RuntimeView {
    sandboxes: Vec<api::PodSandbox>,
    containers: Vec<api::Container>,
}

impl RuntimeView {
    /// Lists sandboxes and containers on a fresh connection (containerd may
    /// have been restarted since the last one).
    async fn read(bed: &Testbed) -> Result<RuntimeView, String> {
        let cri = RemoteRuntime::builder(bed.endpoint())
            .connect_timeout(Duration::from_secs(10))
            .request_timeout(Duration::from_secs(20))
            .connect()
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let sandboxes = cri
            .list_pod_sandbox(None)
            .await
            .map_err(|e| format!("ListPodSandbox: {e}"))?;
        let containers = cri
            .list_containers(None)
            .await
            .map_err(|e| format!("ListContainers: {e}"))?;
        Ok(RuntimeView {
            sandboxes,
            containers,
        })
    }

    fn containers_of<'a>(&'a self, uid: &'a str) -> impl Iterator<Item = &'a api::Container> {
        self.containers
            .iter()
            .filter(move |c| uid_of(&c.labels) == uid)
    }

    fn sandboxes_of<'a>(&'a self, uid: &'a str) -> impl Iterator<Item = &'a api::PodSandbox> {
        self.sandboxes
            .iter()
            .filter(move |s| uid_of(&s.labels) == uid)
    }

    /// Container name → the ID of its running container, for pod `uid`.
    fn running_by_name(&self, uid: &str) -> BTreeMap<String, String> {
        self.containers_of(uid)
            .filter(|c| c.state == api::ContainerState::ContainerRunning as i32)
            .map(|c| (container_name_of(&c.labels), c.id.clone()))
            .collect()
    }
}

fn uid_of(labels: &HashMap<String, String>) -> String {
    labels
        .get("io.kubernetes.pod.uid")
        .cloned()
        .unwrap_or_default()
}

fn container_name_of(labels: &HashMap<String, String>) -> String {
    labels
        .get("io.kubernetes.container.name")
        .cloned()
        .unwrap_or_default()
}

fn short(id: &str) -> String {
    id.chars().take(13).collect()
}

/// A pod's status as `/pods` reports it.
struct Reported {
    phase: String,
    /// Container name → the running container's ID.
    running: BTreeMap<String, String>,
}

/// Parses `/pods` (a `v1` `PodList`).
fn reported_pods(body: &str) -> Result<BTreeMap<String, Reported>, String> {
    let list: serde_json::Value =
        serde_json::from_str(body).map_err(|e| format!("/pods is not JSON: {e}"))?;
    let mut out = BTreeMap::new();
    for item in list["items"].as_array().into_iter().flatten() {
        let uid = item["metadata"]["uid"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let status = &item["status"];
        let mut running = BTreeMap::new();
        for c in status["containerStatuses"].as_array().into_iter().flatten() {
            if c["state"]["running"].is_object() {
                let id = c["containerID"].as_str().unwrap_or_default();
                let id = id.split_once("://").map_or(id, |(_, id)| id);
                running.insert(
                    c["name"].as_str().unwrap_or_default().to_owned(),
                    id.to_owned(),
                );
            }
        }
        out.insert(
            uid,
            Reported {
                phase: status["phase"].as_str().unwrap_or("").to_owned(),
                running,
            },
        );
    }
    Ok(out)
}

/// `(controller, path)` of every pod cgroup (a directory named `pod<uid>`)
/// under `/sys/fs/cgroup/<controller>/<root>`.
fn pod_cgroups(root: &str) -> Vec<(String, String)> {
    fn walk(dir: &Path, rel: &str, depth: usize, out: &mut Vec<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            if !e.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let name = e.file_name().to_string_lossy().into_owned();
            let path = format!("{rel}/{name}");
            if name.starts_with("pod") {
                out.push(path);
            } else if depth < 3 {
                walk(&e.path(), &path, depth + 1, out);
            }
        }
    }
    let mut out = Vec::new();
    let Ok(controllers) = std::fs::read_dir("/sys/fs/cgroup") else {
        return out;
    };
    for c in controllers.flatten() {
        let controller = c.file_name().to_string_lossy().into_owned();
        let mut found = Vec::new();
        walk(&c.path().join(root), "", 0, &mut found);
        out.extend(found.into_iter().map(|p| (controller.clone(), p)));
    }
    out
}

/// The mount points of this process's mount namespace.
fn mounts() -> Vec<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().nth(4).map(str::to_owned))
        .collect()
}

fn dir_names(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------
// Memory trend

/// The RSS figures: per run and the pooled within-run slope.
struct RssTrend {
    /// MiB per minute, fitted within each run after warm-up, pooled.
    slope: Option<f64>,
    /// Seconds of post-warm-up samples behind the fit.
    span: f64,
    /// One line per kubelet run.
    runs: Vec<String>,
    min_kib: u64,
    max_kib: u64,
}

fn rss_trend(samples: &[RssSample], warmup: f64) -> RssTrend {
    let mut by_run: BTreeMap<u32, Vec<RssSample>> = BTreeMap::new();
    for s in samples {
        by_run.entry(s.run).or_default().push(*s);
    }
    let (mut sxy, mut sxx, mut span) = (0.0, 0.0, 0.0);
    let mut runs = Vec::new();
    for (run, all) in &by_run {
        let warm: Vec<&RssSample> = all.iter().filter(|s| s.age >= warmup).collect();
        let first = all.first().map_or(0, |s| s.kib);
        let last = all.last().map_or(0, |s| s.kib);
        let max = all.iter().map(|s| s.kib).max().unwrap_or(0);
        let mut line = format!(
            "run {run}: {} samples, t {:.0}-{:.0} s, RSS first {:.1} MiB, last {:.1} MiB, max {:.1} MiB",
            all.len(),
            all.first().map_or(0.0, |s| s.t),
            all.last().map_or(0.0, |s| s.t),
            first as f64 / 1024.0,
            last as f64 / 1024.0,
            max as f64 / 1024.0
        );
        if warm.len() >= 3 {
            let n = warm.len() as f64;
            let mt = warm.iter().map(|s| s.t).sum::<f64>() / n;
            let mr = warm.iter().map(|s| s.kib as f64).sum::<f64>() / n;
            let xy: f64 = warm.iter().map(|s| (s.t - mt) * (s.kib as f64 - mr)).sum();
            let xx: f64 = warm.iter().map(|s| (s.t - mt).powi(2)).sum();
            if xx > 0.0 {
                let _ = write!(
                    line,
                    ", after warm-up {:+.2} MiB/min",
                    xy / xx * 60.0 / 1024.0
                );
            }
            sxy += xy;
            sxx += xx;
            span += warm.last().map_or(0.0, |s| s.t) - warm.first().map_or(0.0, |s| s.t);
        }
        runs.push(line);
    }
    RssTrend {
        slope: (sxx > 0.0).then(|| sxy / sxx * 60.0 / 1024.0),
        span,
        runs,
        min_kib: samples.iter().map(|s| s.kib).min().unwrap_or(0),
        max_kib: samples.iter().map(|s| s.kib).max().unwrap_or(0),
    }
}

// ---------------------------------------------------------------------------
// The test

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak() {
    let settings = Settings::from_env();
    let need = kubelet_testbed::root().and_then(|()| kubelet_binary());
    let Some(kubelet_bin) = kubelet_testbed::require("root and the example kubelet", need) else {
        return;
    };
    let Some(bed) = Testbed::start() else { return };
    std::fs::create_dir_all(&settings.out)
        .unwrap_or_else(|e| panic!("create {}: {e}", settings.out.display()));
    for f in ["kubelet.log", "events.log"] {
        let _ = std::fs::remove_file(settings.out.join(f));
    }
    let events = std::fs::File::create(settings.out.join("events.log")).expect("events.log");
    let manifests = bed.dir().join("manifests");
    let staging = bed.dir().join("staging");
    let root = bed.dir().join("kubelet");
    let pod_logs = bed.log_dir();
    for d in [&manifests, &staging, &root, &pod_logs] {
        std::fs::create_dir_all(d).expect("soak dirs");
    }
    let port = free_port();
    let config = bed.dir().join("kubelet.yaml");
    std::fs::write(
        &config,
        format!(
            "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n\
             staticPodPath: {}\ncontainerRuntimeEndpoint: {}\ncgroupRoot: /{}\n\
             podLogsDir: {}\naddress: 127.0.0.1\nport: {port}\n\
             # The test bed's images cannot be pulled again: no image GC, and\n\
             # memory is the only eviction signal.\n\
             evictionHard: {{memory.available: 100Mi}}\nimageGCHighThresholdPercent: 100\n",
            manifests.display(),
            bed.endpoint(),
            bed.cgroup_root(),
            pod_logs.display(),
        ),
    )
    .expect("kubelet config");
    let now = Instant::now();
    let soak = Arc::new(Soak {
        kubelet: Mutex::new(None),
        settings: settings.clone(),
        manifests,
        staging,
        root,
        pod_logs,
        config,
        kubelet_bin,
        port,
        t0: now,
        world: Mutex::new(World {
            pods: BTreeMap::new(),
            counts: Counts::default(),
            kubelet_started: now,
            containerd_started: now,
            kubelet_run: 0,
            rss: Vec::new(),
            checks: Vec::new(),
            events,
        }),
        faults: tokio::sync::Mutex::new(()),
        churning: AtomicBool::new(true),
        bed,
    });
    eprintln!(
        "soak: {settings:?}\nsoak: containerd {} in {}, kubelet {}, node API 127.0.0.1:{port}",
        soak.bed.containerd_version(),
        soak.bed.dir().display(),
        soak.kubelet_bin.display()
    );
    soak.event(&format!("settings {settings:?}"));
    soak.start_kubelet().expect("start the kubelet");
    // The node API answers: the kubelet is up.
    kubelet_testbed::wait_for("the node API", Duration::from_secs(60), || {
        let soak = soak.clone();
        async move {
            http_get(soak.port, "/healthz")
                .await
                .ok()
                .filter(|(c, _)| *c == 200)
        }
    })
    .await;

    let mut rng = Rng::new(settings.seed);
    let until = Instant::now() + Duration::from_secs(settings.seconds);
    let sampler = tokio::spawn(soak.clone().sample());
    let checks = tokio::spawn(soak.clone().periodic_checks());
    let cfaults = tokio::spawn(soak.clone().containerd_faults(until, Rng::new(rng.next())));
    let kfaults = tokio::spawn(soak.clone().kubelet_faults(until, Rng::new(rng.next())));
    soak.clone().churn(until, Rng::new(rng.next())).await;
    soak.event("churn stopped");
    let _ = cfaults.await;
    let _ = kfaults.await;
    let _ = checks.await;

    // The end: the pods left must match the runtime, then all go.
    let churn_seconds = soak.secs();
    soak.settle_uptime(Duration::from_secs(20)).await;
    let row = soak.check("end-live".into(), false).await;
    soak.record(row);
    let uids: Vec<String> = soak
        .world
        .lock()
        .expect("world")
        .pods
        .iter()
        .filter(|(_, p)| p.removed.is_none())
        .map(|(uid, _)| uid.clone())
        .collect();
    for uid in &uids {
        soak.remove_pod(uid);
    }
    let removed_all = Instant::now();
    let limit = Duration::from_secs(settings.final_limit);
    let mut left = Vec::new();
    while removed_all.elapsed() < limit {
        tokio::time::sleep(Duration::from_secs(2)).await;
        soak.watch_kubelet();
        match soak.leftovers().await {
            Ok(l) if l.is_empty() => {
                left.clear();
                break;
            }
            Ok(l) => left = l,
            Err(e) => left = vec![format!("cannot look: {e}")],
        }
    }
    let clean_after = removed_all.elapsed();
    soak.event(&format!(
        "all manifests removed; {} left after {:.0} s",
        left.len(),
        clean_after.as_secs_f64()
    ));
    let row = soak.check("end-gone".into(), true).await;
    soak.record(row);
    sampler.abort();
    let _ = sampler.await;

    // Figures.
    let summary = summarize(&soak, churn_seconds, &left, clean_after);
    eprintln!("{summary}");
    let path = settings.out.join("summary.txt");
    std::fs::write(&path, &summary).expect("summary.txt");
    write_tables(&soak);
    let _ = std::fs::copy(
        soak.bed.dir().join("containerd.log"),
        settings.out.join("containerd.log"),
    );
    eprintln!("soak: figures and logs in {}", settings.out.display());

    let failures = failures(&soak, &left);
    // Stop the kubelet and containerd before failing: Soak's Drop.
    drop(soak);
    assert!(failures.is_empty(), "soak failed:\n{}", failures.join("\n"));
}

fn summarize(soak: &Soak, churn_seconds: f64, left: &[String], clean_after: Duration) -> String {
    let w = soak.world.lock().expect("world");
    let s = &soak.settings;
    let c = &w.counts;
    let mut out = String::new();
    let _ = writeln!(out, "== soak summary");
    let _ = writeln!(
        out,
        "settings: {} s of churn at {} pods/s (max {} live), containerd killed every {}-{} s, \
         kubelet every {}-{} s, checks every {} s, seed {}",
        s.seconds,
        s.pods_per_second,
        s.max_pods,
        s.containerd_every.0,
        s.containerd_every.1,
        s.kubelet_every.0,
        s.kubelet_every.1,
        s.check_every,
        s.seed
    );
    let _ = writeln!(
        out,
        "containerd {}; kubelet {}",
        soak.bed.containerd_version(),
        soak.kubelet_bin.display()
    );
    let by_kind = |k: Kind| w.pods.values().filter(|p| p.kind == k).count();
    let never = w
        .pods
        .values()
        .filter(|p| {
            !p.ever_container
                && p.removed
                    .is_some_and(|r| r - p.created >= Duration::from_secs(10))
        })
        .count();
    let _ = writeln!(
        out,
        "pods: {} created ({} sleep, {} crash-looping, {} OOMing), {} deleted in {:.0} s \
         ({:.2} created/s); {} lived 10 s or more without a container seen (sampled every 5 s)",
        c.created,
        by_kind(Kind::Sleep),
        by_kind(Kind::Crash),
        by_kind(Kind::Oom),
        c.deleted,
        churn_seconds,
        c.created as f64 / churn_seconds.max(1.0),
        never
    );
    let _ = writeln!(
        out,
        "faults: containerd SIGKILLed {} times, kubelet SIGKILLed {} times; kubelet exits not \
         caused by the soak: {}; fault errors: {}",
        c.containerd_kills,
        c.kubelet_kills,
        c.kubelet_crashes.len(),
        c.fault_errors.len()
    );
    for e in c.kubelet_crashes.iter().chain(&c.fault_errors) {
        let _ = writeln!(out, "  {e}");
    }
    let _ = writeln!(
        out,
        "checks (leaks of gone pods by kind; status mismatches):"
    );
    let _ = writeln!(
        out,
        "  {:<10} {:>6} {:>5} {:>9} | {} | mismatches violations errors",
        "check",
        "t(s)",
        "live",
        "gone f/s",
        LEAK_KINDS.join(" / ")
    );
    for r in &w.checks {
        let leaks: Vec<String> = LEAK_KINDS
            .iter()
            .map(|k| r.leaks.get(k).map_or(0, Vec::len).to_string())
            .collect();
        let _ = writeln!(
            out,
            "  {:<10} {:>6.0} {:>5} {:>4}/{:<4} | {} | {} {} {}",
            r.label,
            r.t,
            r.live,
            r.gone_fast,
            r.gone_slow,
            leaks.join(" / "),
            r.mismatches.len(),
            r.violations.len(),
            r.errors.len()
        );
        for (what, items) in &r.leaks {
            for i in items.iter().take(10) {
                let _ = writeln!(out, "      leaked {what}: {i}");
            }
        }
        for m in r
            .mismatches
            .iter()
            .chain(&r.violations)
            .chain(&r.errors)
            .take(20)
        {
            let _ = writeln!(out, "      {m}");
        }
    }
    let _ = writeln!(
        out,
        "end: {} left {:.0} s after the last manifest was removed",
        left.len(),
        clean_after.as_secs_f64()
    );
    let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
    for l in left {
        // "cgroup memory:/kubepods/..." counts as "cgroup memory".
        let kind: String = l.split([':', '(']).next().unwrap_or(l).trim().to_owned();
        *kinds.entry(kind).or_default() += 1;
    }
    for (kind, n) in &kinds {
        let _ = writeln!(out, "  left: {n} × {kind}");
    }
    for l in left.iter().take(20) {
        let _ = writeln!(out, "  left: {l}");
    }
    let trend = rss_trend(&w.rss, s.rss_warmup as f64);
    let _ = writeln!(
        out,
        "kubelet RSS: {} samples every {} s, min {:.1} MiB, max {:.1} MiB",
        w.rss.len(),
        RSS_EVERY.as_secs(),
        trend.min_kib as f64 / 1024.0,
        trend.max_kib as f64 / 1024.0
    );
    for r in &trend.runs {
        let _ = writeln!(out, "  {r}");
    }
    match trend.slope {
        Some(slope) => {
            let _ = writeln!(
                out,
                "  trend after {} s of warm-up in each run, pooled over runs: {slope:+.3} MiB/min \
                 over {:.0} s of samples (fails above {} MiB/min with 300 s or more)",
                s.rss_warmup, trend.span, s.rss_max_slope
            );
        }
        None => {
            let _ = writeln!(out, "  trend: too few samples after warm-up");
        }
    }
    out
}

fn write_tables(soak: &Soak) {
    let Ok(w) = soak.world.lock() else { return };
    let mut rss = String::from("t_s\trun\tage_s\trss_kib\n");
    for s in &w.rss {
        let _ = writeln!(rss, "{:.1}\t{}\t{:.1}\t{}", s.t, s.run, s.age, s.kib);
    }
    let _ = std::fs::write(soak.settings.out.join("rss.tsv"), rss);
    let mut checks = format!(
        "check\tt_s\tlive\tgone_fast\tgone_slow\t{}\tmismatches\tviolations\terrors\n",
        LEAK_KINDS.join("\t").replace(' ', "_")
    );
    for r in &w.checks {
        let leaks: Vec<String> = LEAK_KINDS
            .iter()
            .map(|k| r.leaks.get(k).map_or(0, Vec::len).to_string())
            .collect();
        let _ = writeln!(
            checks,
            "{}\t{:.0}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
            r.label,
            r.t,
            r.live,
            r.gone_fast,
            r.gone_slow,
            leaks.join("\t"),
            r.mismatches.len(),
            r.violations.len(),
            r.errors.len()
        );
    }
    let _ = std::fs::write(soak.settings.out.join("checks.tsv"), checks);
}

fn failures(soak: &Soak, left: &[String]) -> Vec<String> {
    let w = soak.world.lock().expect("world");
    let mut out = Vec::new();
    for r in w.checks.iter().filter(|r| !r.is_clean()) {
        out.push(format!(
            "check {} at t={:.0}s: {} leaked, {} status mismatches, {} violations, {} errors",
            r.label,
            r.t,
            r.leak_total(),
            r.mismatches.len(),
            r.violations.len(),
            r.errors.len()
        ));
    }
    if !left.is_empty() {
        out.push(format!(
            "{} things left after every pod was removed: {}",
            left.len(),
            left.iter().take(5).cloned().collect::<Vec<_>>().join("; ")
        ));
    }
    for e in w
        .counts
        .kubelet_crashes
        .iter()
        .chain(&w.counts.fault_errors)
    {
        out.push(e.clone());
    }
    if w.counts.created == 0 {
        out.push("no pod was created".into());
    }
    let trend = rss_trend(&w.rss, soak.settings.rss_warmup as f64);
    if let Some(slope) = trend.slope
        && trend.span >= 300.0
        && slope > soak.settings.rss_max_slope
    {
        out.push(format!(
            "the kubelet's RSS grows {slope:+.3} MiB/min after warm-up (limit {} MiB/min)",
            soak.settings.rss_max_slope
        ));
    }
    out
}
