//! Skip or fail: the one rule for tests that need something from the machine.

use std::fmt::Display;
use std::io::Write;
use std::path::{Path, PathBuf};

/// True under CI: `CI` set to anything but empty or `false` (GitHub
/// Actions, GitLab and the project's `.ci/run` set `CI=true`).
pub fn is_ci() -> bool {
    std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "false")
}

/// Decides skip-vs-fail for a test that needs `what` from the machine,
/// given the outcome of the check for it.
///
/// - `Ok(v)`: returns `Some(v)`, the test goes on;
/// - `Err(reason)` outside CI: prints `SKIPPED: <test> needs <what>:
///   <reason>` to stderr (uncaptured, so `cargo test` shows it) and
///   returns `None`, which the test uses to return
///   (`let Some(v) = require(..) else { return };`);
/// - `Err(reason)` under CI ([`is_ci`]): panics with the same reason, so a
///   machine that lacks what the tests need fails the run instead of
///   passing it with tests that ran nothing.
///
/// Every test that needs containerd, root, cgroups, mounts or a tool goes
/// through this function (directly, or through [`crate::Testbed::start`]).
pub fn require<T, E: Display>(what: &str, found: Result<T, E>) -> Option<T> {
    let reason = match found {
        Ok(v) => return Some(v),
        Err(e) => e,
    };
    let thread = std::thread::current();
    // libtest names each test's thread after the test.
    let test = thread.name().unwrap_or("this test");
    if is_ci() {
        panic!("{test} needs {what}, which is required under CI: {reason}");
    }
    // Straight to the process's stderr: libtest captures `eprintln!` of
    // passing tests, and a skip must show in a plain `cargo test`.
    let _ = writeln!(std::io::stderr(), "SKIPPED: {test} needs {what}: {reason}");
    None
}

/// True when the effective user is root.
pub fn is_root() -> bool {
    // The effective uid, read without libc: /proc/self/status "Uid:" line
    // (real, effective, saved, filesystem).
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

/// `Ok` when the test runs as root (cgroups, bind mounts, the test bed).
pub fn root() -> Result<(), String> {
    if is_root() {
        Ok(())
    } else {
        Err("not running as root".into())
    }
}

/// The directory of the cgroup v1 hierarchy of `controller`
/// (`/sys/fs/cgroup/memory`), when it is mounted.
pub fn cgroup_v1(controller: &str) -> Result<PathBuf, String> {
    let dir = Path::new("/sys/fs/cgroup").join(controller);
    // `tasks` exists only in v1 hierarchies; v2 has cgroup.procs alone.
    if dir.join("tasks").is_file() && dir.join("cgroup.procs").is_file() {
        Ok(dir)
    } else if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        Err(format!(
            "this host has the unified cgroup v2 hierarchy only, no v1 {controller} controller"
        ))
    } else {
        Err(format!(
            "the cgroup v1 {controller} controller is not mounted at {}",
            dir.display()
        ))
    }
}

/// `Ok(path)` when `path` is an executable file.
pub fn executable(path: impl AsRef<Path>) -> Result<PathBuf, String> {
    use std::os::unix::fs::PermissionsExt;
    let path = path.as_ref();
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() && m.permissions().mode() & 0o111 != 0 => Ok(path.to_owned()),
        Ok(_) => Err(format!("{} is not an executable file", path.display())),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

/// Where `scripts/testbed/install.sh` puts everything: `$TESTBED_HOME`,
/// default `/opt/kubelet-testbed`.
pub fn testbed_home() -> PathBuf {
    std::env::var_os("TESTBED_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/opt/kubelet-testbed"))
}

/// Where the scripts claim subnets, ports and node networks:
/// `$TESTBED_RUN`, default `/run/kubelet-testbed`.
pub(crate) fn testbed_run() -> PathBuf {
    std::env::var_os("TESTBED_RUN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/run/kubelet-testbed"))
}

/// Debian's kubectl (package `kubernetes-client`) as unpacked by
/// `scripts/testbed/install.sh` under `$TESTBED_HOME` (default
/// `/opt/kubelet-testbed`).
pub fn kubectl_path() -> Result<PathBuf, String> {
    let path = testbed_home().join("kubernetes-client/kubectl");
    if path.is_file() {
        Ok(path)
    } else {
        Err(format!(
            "{} is missing (run scripts/testbed/install.sh)",
            path.display()
        ))
    }
}

/// The Kubernetes version of the test bed's control plane and reference
/// kubelet.
pub const K8S_VERSION: &str = "1.35.4";

/// `$TESTBED_HOME/k8s-v1.35.4/bin`, where
/// `scripts/testbed/build-controlplane.sh` puts `etcd`, `kube-apiserver`,
/// `kube-controller-manager`, `kube-scheduler`, `kubectl` and `kubelet`.
pub fn k8s_bin_dir() -> PathBuf {
    testbed_home().join(format!("k8s-v{K8S_VERSION}/bin"))
}

/// One of the binaries of [`k8s_bin_dir`] (`"kubelet"` is upstream's
/// kubelet, the reference to compare with): `Err` says how to build it.
/// Ask with `require("upstream's kubelet", k8s_binary("kubelet"))`.
pub fn k8s_binary(name: &str) -> Result<PathBuf, String> {
    executable(k8s_bin_dir().join(name)).map_err(|e| {
        format!("{e} (run scripts/testbed/build-controlplane.sh, or install.sh, which calls it)")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_found_need_is_returned() {
        assert_eq!(require("nothing", Ok::<_, String>(7)), Some(7));
    }

    #[test]
    fn a_missing_need_skips_outside_ci_and_panics_under_ci() {
        let outcome = std::panic::catch_unwind(|| require::<(), _>("a unicorn", Err("none here")));
        if is_ci() {
            let panic = outcome.expect_err("CI must fail");
            let msg = panic.downcast_ref::<String>().cloned().unwrap_or_default();
            assert!(msg.contains("a unicorn"), "{msg}");
            assert!(msg.contains("none here"), "{msg}");
            assert!(
                msg.contains("a_missing_need_skips"),
                "names the test: {msg}"
            );
        } else {
            assert_eq!(outcome.ok(), Some(None), "skips outside CI");
        }
    }

    #[test]
    fn checks_say_why() {
        let e = executable("/nonexistent/python3").expect_err("missing");
        assert!(e.contains("/nonexistent/python3"), "{e}");
        let e = k8s_binary("no-such-binary").expect_err("missing");
        assert!(e.contains("no-such-binary"), "{e}");
        assert!(e.contains("build-controlplane.sh"), "{e}");
        let e = cgroup_v1("no-such-controller").expect_err("missing");
        assert!(e.contains("no-such-controller"), "{e}");
    }
}
