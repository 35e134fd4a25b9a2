//! Test support for end-to-end tests: a private containerd, a real
//! Kubernetes control plane and a node address, the one rule for skipping
//! or failing a test that needs something from the machine, and the set-up
//! that tests of several crates share.
//!
//! # A private containerd
//!
//! [`Testbed::start`] runs the project's `scripts/testbed/start.sh` in a fresh
//! temporary directory: a containerd of its own (socket, root, state, CNI
//! bridge and IP range) with the locally built `pause` and `busybox` images
//! imported. Each test bed also owns a cgroup root, [`Testbed::cgroup_root`],
//! under which tests place their pods. Dropping the [`Testbed`] runs
//! `scripts/testbed/stop.sh` (kills containers, containerd and its shims,
//! unmounts, removes the bridge) and removes the cgroup root in every
//! hierarchy, so a test leaves nothing running or mounted behind it, even
//! when it panics. [`Testbed::kill_containerd`] and
//! [`Testbed::restart_containerd`] crash it (SIGKILL: its shims and
//! containers keep running) and start it again on the same state, for
//! fault tests.
//!
//! # A control plane and a node address
//!
//! [`ControlPlane::start`] runs `scripts/testbed/controlplane-start.sh`:
//! etcd, kube-apiserver, kube-controller-manager and kube-scheduler
//! v1.35.4 (built from the Go module proxy by `build-controlplane.sh`, which
//! `install.sh` calls) on loopback ports of their own, with certificates
//! for an admin ([`ControlPlane::admin_kubeconfig`], [`ControlPlane::kubectl`])
//! and for one node ([`ControlPlane::node_kubeconfig`], restricted by the
//! `Node` authorizer and `NodeRestriction`). [`ControlPlane::stop_apiserver`]
//! and [`ControlPlane::start_apiserver`] take the API server away and bring
//! it back. [`NodeNet::up`] gives a node a non-loopback address (upstream's
//! kubelet refuses loopback): a veth pair into a network namespace of its
//! own. Both tear everything down on drop. [`k8s_binary`] finds the other
//! binaries of the build, upstream's `kubelet` among them.
//!
//! ```no_run
//! use kubelet_testbed::{ControlPlane, NodeNet};
//! let Some(cp) = ControlPlane::start("node-a") else { return };
//! let Some(net) = NodeNet::up("node-a") else { return };
//! assert_eq!(cp.kubectl(&["get", "--raw", "/readyz"]).unwrap(), "ok");
//! println!("kubelet --kubeconfig {} --node-ip {}", cp.node_kubeconfig().display(), net.address());
//! ```
//!
//! # Skip or fail: [`require`]
//!
//! A test that needs something from the machine (the containerd test bed,
//! root, a cgroup v1 controller, bind mounts, kubectl, python3) asks for it
//! through [`require`], the one place that decides:
//!
//! - outside CI, a missing need prints `SKIPPED: <test> needs <what>: <why>`
//!   to stderr and [`require`] returns `None`: the test returns early and
//!   `cargo test` on a developer's laptop passes without a test bed;
//! - under CI ([`is_ci`]: `CI` set to anything but empty or `false`) it
//!   panics with the same reason, because a missing test bed there is a
//!   failure, not a skip.
//!
//! The checks ([`root`], [`cgroup_v1`], [`executable`], [`kubectl_path`],
//! [`k8s_binary`], [`Testbed::try_start`], [`ControlPlane::try_start`],
//! [`NodeNet::try_up`]) return `Result<_, String>` with the reason, so
//! they combine with `and_then` before one [`require`]. No test should read
//! `CI` or return early on a missing need by any other way.
//!
//! ```no_run
//! // The containerd test bed ([`Testbed::start`] is `require` on `try_start`).
//! let Some(bed) = kubelet_testbed::Testbed::start() else { return };
//! println!("containerd at {}", bed.endpoint());
//!
//! // Root and the cgroup v1 memory controller.
//! let need = kubelet_testbed::root().and_then(|()| kubelet_testbed::cgroup_v1("memory"));
//! let Some(memory) = kubelet_testbed::require("root and cgroup v1 memory", need) else {
//!     return;
//! };
//! println!("memory controller at {}", memory.display());
//! ```
//!
//! # Shared set-up
//!
//! [`cri`] builds the CRI sandbox and busybox container configs of tests
//! that talk to containerd directly; [`wait_for`], [`wait_for_file`] poll
//! with a deadline; [`read_trimmed`] reads a cgroup or log file;
//! [`init_tracing`] installs a test log subscriber.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

mod controlplane;
pub mod cri;
mod require;
mod util;

pub use controlplane::{ControlPlane, NodeNet};
pub use require::{
    K8S_VERSION, cgroup_v1, executable, is_ci, is_root, k8s_bin_dir, k8s_binary, kubectl_path,
    require, root, testbed_home,
};
pub use util::{http_get, init_tracing, read_trimmed, rss_bytes, wait_for, wait_for_file};

/// The pause image the test bed imports and sets as the sandbox image.
pub const PAUSE_IMAGE: &str = "localhost/pause:3.10";
/// A busybox image (static busybox, `/bin/sh` and the applets).
pub const BUSYBOX_IMAGE: &str = "localhost/busybox:latest";

/// Debian's kubectl (package `kubernetes-client`), unpacked by
/// `scripts/testbed/install.sh`; `None` when it is not there. A test that
/// needs it asks with `require("kubectl", kubectl_path())` instead, so that
/// CI fails without it.
pub fn kubectl() -> Option<PathBuf> {
    kubectl_path().ok()
}

/// A running private containerd; stopped and cleaned up on drop.
#[derive(Debug)]
pub struct Testbed {
    dir: tempfile::TempDir,
    cgroup_root: String,
    version: String,
    /// containerds started again by [`Testbed::restart_containerd`]: this
    /// process's children, reaped when killed and on drop.
    restarted: std::sync::Mutex<Vec<std::process::Child>>,
}

/// The repository's `scripts/testbed` directory: found by walking up from
/// the working directory (cargo runs tests and benches in their package's
/// directory), else from where this crate was built.
pub fn scripts_dir() -> PathBuf {
    let relative = Path::new("scripts/testbed");
    if let Ok(cwd) = std::env::current_dir() {
        for dir in cwd.ancestors() {
            if dir.join(relative).join("start.sh").exists() {
                return dir.join(relative);
            }
        }
    }
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(relative)
}

impl Testbed {
    /// Starts a private containerd, or returns `None` (skip) when the test
    /// bed cannot run here and this is not CI. Panics under CI: it is
    /// [`require`] on [`Testbed::try_start`].
    pub fn start() -> Option<Testbed> {
        require("the containerd test bed", Self::try_start())
    }

    /// Starts a private containerd; the error says why it could not.
    pub fn try_start() -> Result<Testbed, String> {
        if !is_root() {
            return Err("the test bed needs root".into());
        }
        let scripts = scripts_dir();
        let start = scripts.join("start.sh");
        if !start.exists() {
            return Err(format!("{} is missing", start.display()));
        }
        sweep_abandoned();
        let dir = tempfile::Builder::new()
            .prefix("kubelet-tb-")
            .tempdir_in("/tmp")
            .map_err(|e| format!("cannot create the test bed directory: {e}"))?;
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let cgroup_root = format!(
            "kubelet-e2e-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let mut bed = Testbed {
            dir,
            cgroup_root,
            version: String::new(),
            restarted: std::sync::Mutex::new(Vec::new()),
        };
        let out = Command::new("bash")
            .arg(&start)
            .arg(bed.dir.path())
            .output()
            .map_err(|e| format!("cannot run {}: {e}", start.display()))?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() {
            // `bed` drops here and runs stop.sh on whatever was started.
            return Err(format!(
                "{} failed ({}):\n{}\n{}",
                start.display(),
                out.status,
                stdout,
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        // Who owns this test bed, so a later run can sweep it if this
        // process is killed before its Drop runs.
        let _ = std::fs::write(
            bed.dir.path().join("owner.pid"),
            std::process::id().to_string(),
        );
        bed.version = stdout
            .lines()
            .find_map(|l| l.strip_prefix("testbed: containerd "))
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or("unknown")
            .to_owned();
        eprintln!(
            "testbed: containerd {} in {}",
            bed.version,
            bed.dir.path().display()
        );
        Ok(bed)
    }

    /// The CRI endpoint: `unix://<dir>/containerd.sock`.
    pub fn endpoint(&self) -> String {
        format!("unix://{}", self.socket().display())
    }

    /// The socket path.
    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("containerd.sock")
    }

    /// The test bed's directory (config, root, state, logs).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A directory for pod logs, inside the test bed's directory.
    pub fn log_dir(&self) -> PathBuf {
        self.dir.path().join("pod-logs")
    }

    /// The containerd version reported by start.sh (`v1.7.24`, ...).
    pub fn containerd_version(&self) -> &str {
        &self.version
    }

    /// True for containerd 1.7 and later (they implement `GetContainerEvents`).
    pub fn has_container_events(&self) -> bool {
        let v = self.version.trim_start_matches('v');
        let mut parts = v.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
        let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
        (major, minor) >= (1, 7)
    }

    /// This test bed's cgroup root, without a leading slash
    /// (`kubelet-e2e-<pid>-<n>`): put pod cgroups below `/<root>/...`.
    pub fn cgroup_root(&self) -> &str {
        &self.cgroup_root
    }

    /// The cgroup v1 directory of `controller` for the cgroup path `path`
    /// (`/kubelet-e2e-1-0/podx/<id>`), e.g. `/sys/fs/cgroup/memory/...`.
    pub fn cgroup_v1_dir(controller: &str, path: &str) -> PathBuf {
        Path::new("/sys/fs/cgroup")
            .join(controller)
            .join(path.trim_start_matches('/'))
    }

    /// True when the unified (v2) hierarchy is the only one mounted.
    pub fn is_cgroup_v2() -> bool {
        Path::new("/sys/fs/cgroup/cgroup.controllers").exists()
    }

    /// The pid of this test bed's containerd (`<dir>/containerd.pid`), if
    /// it is running.
    pub fn containerd_pid(&self) -> Option<u32> {
        let pid = std::fs::read_to_string(self.dir.path().join("containerd.pid")).ok()?;
        let pid: u32 = pid.trim().parse().ok()?;
        process_running(pid).then_some(pid)
    }

    /// Kills this test bed's containerd with SIGKILL, as a crash would, and
    /// waits (up to 10 s) until it is gone. Its shims and containers keep
    /// running, as they do when containerd crashes. Returns the pid killed.
    pub fn kill_containerd(&self) -> Result<u32, String> {
        let pid = self
            .containerd_pid()
            .ok_or_else(|| "containerd is not running".to_owned())?;
        let status = Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status()
            .map_err(|e| format!("cannot run kill: {e}"))?;
        if !status.success() {
            return Err(format!("kill -KILL {pid}: {status}"));
        }
        // Reap it when it is one this process started again.
        if let Ok(mut children) = self.restarted.lock() {
            children.retain_mut(|child| {
                if child.id() == pid {
                    let _ = child.wait();
                    false
                } else {
                    true
                }
            });
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while process_running(pid) {
            if std::time::Instant::now() > deadline {
                return Err(format!(
                    "containerd (pid {pid}) still runs 10 s after SIGKILL"
                ));
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        Ok(pid)
    }

    /// Starts this test bed's containerd again, with the config, state and
    /// socket `start.sh` gave it, as `start.sh` starts it (in a session of
    /// its own, its output appended to `containerd.log`), records its pid in
    /// `containerd.pid` for `stop.sh`, and waits (up to `limit`) until its
    /// CRI plugin answers. Fails if a containerd already runs here.
    pub fn restart_containerd(&self, limit: std::time::Duration) -> Result<u32, String> {
        if let Some(pid) = self.containerd_pid() {
            return Err(format!("containerd already runs (pid {pid})"));
        }
        let env = std::fs::read_to_string(self.dir.path().join("testbed.env"))
            .map_err(|e| format!("read testbed.env: {e}"))?;
        let ctr = env
            .lines()
            .find_map(|l| l.strip_prefix("CTR="))
            .map(PathBuf::from)
            .ok_or_else(|| "testbed.env names no CTR".to_owned())?;
        let bin_dir = ctr
            .parent()
            .ok_or_else(|| format!("{} has no folder", ctr.display()))?
            .to_path_buf();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("containerd.log"))
            .map_err(|e| format!("open containerd.log: {e}"))?;
        let log2 = log
            .try_clone()
            .map_err(|e| format!("containerd.log: {e}"))?;
        let path = format!("{}:/usr/sbin:/usr/bin:/sbin:/bin", bin_dir.display());
        // Not a process group leader, so setsid(1) execs containerd in a
        // new session without forking: the child's pid is containerd's.
        let child = Command::new("setsid")
            .arg(bin_dir.join("containerd"))
            .arg("--config")
            .arg(self.dir.path().join("config.toml"))
            .env("PATH", path)
            .stdin(std::process::Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .map_err(|e| format!("cannot start containerd: {e}"))?;
        let pid = child.id();
        if let Ok(mut children) = self.restarted.lock() {
            children.push(child);
        }
        std::fs::write(self.dir.path().join("containerd.pid"), pid.to_string())
            .map_err(|e| format!("write containerd.pid: {e}"))?;
        let deadline = std::time::Instant::now() + limit;
        loop {
            let answers = Command::new("timeout")
                .arg("5")
                .arg(&ctr)
                .arg("--address")
                .arg(self.socket())
                .arg("version")
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if answers {
                return Ok(pid);
            }
            if !process_running(pid) {
                return Err(format!("containerd (pid {pid}) exited during start-up"));
            }
            if std::time::Instant::now() > deadline {
                return Err(format!("containerd did not answer within {limit:?}"));
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }

    fn remove_cgroups(&self) {
        let Ok(entries) = std::fs::read_dir("/sys/fs/cgroup") else {
            return;
        };
        let mut roots: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path().join(&self.cgroup_root))
            .collect();
        roots.push(Path::new("/sys/fs/cgroup").join(&self.cgroup_root));
        for root in roots.into_iter().filter(|r| r.is_dir()) {
            remove_cgroup_tree(&root);
        }
    }
}

fn pid_alive(pid: &str) -> bool {
    Path::new("/proc").join(pid).exists()
}

/// True when process `pid` exists and is not a zombie.
fn process_running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        // "pid (comm) S ...": the state follows the last ')'.
        stat.rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X")
    })
}

/// Stops the test beds and removes the cgroup roots of test processes that
/// died without dropping their [`Testbed`] (killed by a timeout, say).
fn sweep_abandoned() {
    let Ok(entries) = std::fs::read_dir("/tmp") else {
        return;
    };
    for entry in entries.flatten() {
        let dir = entry.path();
        let is_bed = entry
            .file_name()
            .to_str()
            .is_some_and(|n| n.starts_with("kubelet-tb-"));
        let owner = std::fs::read_to_string(dir.join("owner.pid")).unwrap_or_default();
        if is_bed && !owner.is_empty() && !pid_alive(owner.trim()) {
            eprintln!(
                "testbed: sweeping {} (owner {} is gone)",
                dir.display(),
                owner.trim()
            );
            let _ = Command::new("bash")
                .arg(scripts_dir().join("stop.sh"))
                .arg(&dir)
                .output();
        }
    }
    let Ok(controllers) = std::fs::read_dir("/sys/fs/cgroup") else {
        return;
    };
    for controller in controllers.flatten() {
        let Ok(children) = std::fs::read_dir(controller.path()) else {
            continue;
        };
        for child in children.flatten() {
            let name = child.file_name();
            let Some(pid) = name
                .to_str()
                .and_then(|n| n.strip_prefix("kubelet-e2e-"))
                .and_then(|rest| rest.split('-').next())
            else {
                continue;
            };
            if !pid_alive(pid) {
                remove_cgroup_tree(&child.path());
            }
        }
    }
}

/// cgroup directories are removed with rmdir, children first.
fn remove_cgroup_tree(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                remove_cgroup_tree(&entry.path());
            }
        }
    }
    if let Err(e) = std::fs::remove_dir(dir) {
        eprintln!("testbed: cannot remove cgroup {}: {e}", dir.display());
    }
}

impl Drop for Testbed {
    fn drop(&mut self) {
        let stop = scripts_dir().join("stop.sh");
        match Command::new("bash")
            .arg(&stop)
            .arg(self.dir.path())
            .output()
        {
            Ok(out) if out.status.success() => {}
            Ok(out) => eprintln!(
                "testbed: {} failed: {}{}",
                stop.display(),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
            Err(e) => eprintln!("testbed: cannot run {}: {e}", stop.display()),
        }
        // stop.sh killed the containerd of containerd.pid: reap the ones
        // this process started (a no-op for those already reaped).
        if let Ok(mut children) = self.restarted.lock() {
            for child in children.iter_mut() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        self.remove_cgroups();
    }
}
