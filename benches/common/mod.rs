//! What the kubelet benchmarks share (`kubelet_startup`, `cluster_pods`,
//! `vs_upstream`): the release kubelet's path and process, its RSS and CPU
//! time, the manifest of a benchmark pod, a plain HTTP GET of the node API,
//! and the floor — the kubelet's CRI calls for each pod made directly.
//!
//! Each bench that uses this module uses only part of it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use kubelet_rs::cm::CgroupName;
use kubelet_rs::cri::{ImageService, RemoteRuntime, RuntimeService, api};
use kubelet_rs::kuberuntime::PodVolumes;
use kubelet_rs::kuberuntime::config::{
    ConfigOptions, container_config, pod_log_dir, pod_sandbox_config,
};
use kubelet_rs::kuberuntime::hosts::ensure_hosts_file;
use kubelet_rs::kuberuntime::labels::ContainerType;
use kubelet_rs::kuberuntime::lifecycle::make_termination_message_mount;
use kubelet_rs::podconfig::{ManifestOrigin, decode_static_pod};
use kubelet_testbed::Testbed;

/// The test bed's busybox image (imported by `start.sh`, never pulled).
pub const IMAGE: &str = "localhost/busybox:latest";

/// The median of `v` (the upper one for an even count).
pub fn median<T: PartialOrd + Copy>(mut v: Vec<T>) -> T {
    v.sort_by(|a, b| a.partial_cmp(b).expect("comparable"));
    v[v.len() / 2]
}

/// The release `examples/kubelet`: `$KUBELET_BIN`, else
/// `$CARGO_TARGET_DIR/release/examples/kubelet`, else the package's
/// `target/release/examples/kubelet`.
pub fn kubelet_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("KUBELET_BIN") {
        return PathBuf::from(p);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    target.join("release/examples/kubelet")
}

/// `VmRSS` of process `pid` in KiB (0 when it cannot be read).
pub fn rss_kib(pid: u32) -> u64 {
    status_kib(pid, "VmRSS")
}

/// A KiB field of `/proc/<pid>/status` (`VmRSS`, `RssAnon`, `RssFile`);
/// 0 when it cannot be read.
pub fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.strip_prefix(field).is_some_and(|r| r.starts_with(':')))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// `utime + stime` of process `pid` in clock ticks (all its threads), from
/// `/proc/<pid>/stat` (fields 14 and 15); `None` when it cannot be read.
pub fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces: count after its ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state): utime is field 14, stime 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// Clock ticks per second (`getconf CLK_TCK`; 100 when it cannot be run).
pub fn clock_ticks_per_second() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// The 1, 5 and 15 minute load averages (`/proc/loadavg`).
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// A loopback TCP port nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Stops and removes every pod sandbox of the runtime.
pub async fn remove_everything(cri: &RemoteRuntime) {
    for s in cri.list_pod_sandbox(None).await.unwrap_or_default() {
        let _ = cri.stop_pod_sandbox(&s.id).await;
        let _ = cri.remove_pod_sandbox(&s.id).await;
    }
}

/// The benchmark pod `bench-<i>`: busybox `sleep 3600`, a grace period of
/// 1 s, as a static pod manifest (YAML).
pub fn manifest(i: usize) -> String {
    named_manifest(&format!("bench-{i}"))
}

/// [`manifest`] with the pod name `name`.
pub fn named_manifest(name: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - {{name: app, image: \"{IMAGE}\", imagePullPolicy: IfNotPresent, command: [sleep, \"3600\"]}}\n"
    )
}

/// The floor: the same CRI requests the kubelet makes for each pod — the
/// sandbox and container configs come from the kubelet's own functions
/// (`kuberuntime::config`) for the same manifest, with the same managed
/// `/etc/hosts` and termination-message mounts — made directly, all pods at
/// once, without the kubelet's pod config, workers, PLEG or status.
///
/// Returns each pod's latency, from the common start to the return of its
/// StartContainer, in pod order; the last StartContainer is the maximum.
pub async fn floor(cri: &RemoteRuntime, bed: &Testbed, n: usize, round: &str) -> Vec<Duration> {
    let opts = ConfigOptions {
        pod_logs_dir: bed.log_dir(),
        node_name: "bench".into(),
        ..ConfigOptions::new(std::sync::Arc::new(kubelet_cm::StaticResources {
            cgroup_root: CgroupName::from_cgroupfs(&format!(
                "/{}/floor-{round}",
                bed.cgroup_root()
            )),
            ..Default::default()
        }))
    };
    let dir = bed.dir().join(format!("floor-{round}"));
    // Decoding is the pod config's work, not the runtime's: done before.
    let pods: Vec<_> = (0..n)
        .map(|i| {
            let path = dir.join(format!("bench-{i}.yaml"));
            let origin = ManifestOrigin::file(&path);
            decode_static_pod(manifest(i).as_bytes(), &origin, "bench").expect("manifest")
        })
        .collect();
    // The kubelet reads the host's resolv.conf for each sandbox too.
    let dns = std::sync::Arc::new(
        opts.dns_configurer(std::sync::Arc::new(kubelet_container::events::NoopRecorder)),
    );
    let started = Instant::now();
    let mut tasks = Vec::new();
    for pod in pods {
        let cri = cri.clone();
        let opts = opts.clone();
        let dns = dns.clone();
        let pod_dir = dir.join(pod.metadata.uid.clone().unwrap_or_default());
        tasks.push(tokio::spawn(async move {
            std::fs::create_dir_all(pod_dir.join("containers")).expect("pod dir");
            let sandbox = pod_sandbox_config(&pod, 0, &opts, &dns).expect("sandbox config");
            let sb = cri
                .run_pod_sandbox(sandbox.clone(), "")
                .await
                .expect("sandbox");
            let ips: Vec<String> = cri
                .pod_sandbox_status(&sb, false)
                .await
                .expect("sandbox status")
                .status
                .and_then(|s| s.network)
                .map(|n| vec![n.ip])
                .unwrap_or_default();
            let container = &pod.spec.as_ref().expect("spec").containers[0];
            let image = cri
                .image_status(
                    api::ImageSpec {
                        image: IMAGE.into(),
                        ..Default::default()
                    },
                    false,
                )
                .await
                .expect("image status")
                .map(|i| i.id)
                .expect("image present");
            let volumes = PodVolumes {
                etc_hosts: Some(pod_dir.join("etc-hosts")),
                pod_dir: Some(pod_dir.clone()),
                ..Default::default()
            };
            std::fs::create_dir_all(pod_log_dir(&opts.pod_logs_dir, &pod).join(&container.name))
                .expect("log dir");
            ensure_hosts_file(&pod_dir.join("etc-hosts"), &pod, &ips, &opts.cluster_domain)
                .expect("hosts");
            let mut config = container_config(
                &pod,
                container,
                ContainerType::Regular,
                0,
                &image,
                &ips,
                &volumes,
                &opts,
            )
            .expect("container config");
            if let Some(m) = make_termination_message_mount(&pod_dir, container) {
                config.mounts.push(m);
            }
            let id = cri
                .create_container(&sb, config, sandbox)
                .await
                .expect("create");
            cri.start_container(&id).await.expect("start");
            started.elapsed()
        }));
    }
    let mut latencies = Vec::with_capacity(n);
    for t in tasks {
        latencies.push(t.await.expect("floor task"));
    }
    latencies
}

/// A child process killed (SIGKILL) and reaped on drop.
pub struct KubeletProcess(pub Child);

impl KubeletProcess {
    /// The child's pid.
    pub fn id(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for KubeletProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
