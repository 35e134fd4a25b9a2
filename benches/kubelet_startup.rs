//! Pod start-up through the kubelet against the runtime's floor, and the
//! kubelet's memory.
//!
//! For N = 1, 10 and 50 pods, in one run on one private containerd:
//! - **floor**: a small driver makes the CRI calls the kubelet makes for
//!   each pod (RunPodSandbox, PodSandboxStatus, ImageStatus,
//!   CreateContainer, StartContainer) with the very requests the kubelet
//!   builds for the same manifest (its config functions, its mounts), all
//!   pods at once, and stops the clock when the last StartContainer returns;
//! - **kubelet**: the release build of `examples/kubelet` runs as a child
//!   process; the clock starts when N manifests are written to its static
//!   pod directory and stops when ListContainers shows N app containers
//!   running (polled every 10 ms).
//!
//! It also reads the kubelet's VmRSS from `/proc/<pid>/status`: idle (no
//! pods, after start-up) and with N pods running.
//!
//! Run as root: `scripts/bench-kubelet.sh` (it builds the kubelet in
//! release mode and runs `cargo bench --bench kubelet_startup`).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
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

const IMAGE: &str = "localhost/busybox:latest";
const REPEATS: usize = 5;

fn median<T: Ord + Copy>(mut v: Vec<T>) -> T {
    v.sort();
    v[v.len() / 2]
}

fn kubelet_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("KUBELET_BIN") {
        return PathBuf::from(p);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    target.join("release/examples/kubelet")
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

async fn remove_everything(cri: &RemoteRuntime) {
    for s in cri.list_pod_sandbox(None).await.unwrap_or_default() {
        let _ = cri.stop_pod_sandbox(&s.id).await;
        let _ = cri.remove_pod_sandbox(&s.id).await;
    }
}

/// The floor: the same CRI requests the kubelet makes for each pod — the
/// sandbox and container configs come from the kubelet's own functions
/// (`kuberuntime::config`) for the same manifest, with the same managed
/// `/etc/hosts` and termination-message mounts — made directly, all pods at
/// once, without the kubelet's pod config, workers, PLEG or status.
async fn floor(cri: &RemoteRuntime, bed: &Testbed, n: usize, round: &str) -> Duration {
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
    let started = Instant::now();
    let mut tasks = Vec::new();
    for pod in pods {
        let cri = cri.clone();
        let opts = opts.clone();
        let pod_dir = dir.join(pod.metadata.uid.clone().unwrap_or_default());
        tasks.push(tokio::spawn(async move {
            std::fs::create_dir_all(pod_dir.join("containers")).expect("pod dir");
            let sandbox = pod_sandbox_config(&pod, 0, &opts).expect("sandbox config");
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
        }));
    }
    for t in tasks {
        t.await.expect("floor task");
    }
    started.elapsed()
}

fn manifest(i: usize) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: bench-{i}}}\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - {{name: app, image: \"{IMAGE}\", imagePullPolicy: IfNotPresent, command: [sleep, \"3600\"]}}\n"
    )
}

async fn running_apps(cri: &RemoteRuntime) -> usize {
    cri.list_containers(Some(api::ContainerFilter {
        state: Some(api::ContainerStateValue {
            state: api::ContainerState::ContainerRunning as i32,
        }),
        ..Default::default()
    }))
    .await
    .map(|c| c.len())
    .unwrap_or(0)
}

struct KubeletProcess(Child);

impl Drop for KubeletProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn through_kubelet(
    cri: &RemoteRuntime,
    bed: &Testbed,
    n: usize,
    round: &str,
) -> (Duration, u64, u64) {
    let dir = bed.dir().join(format!("kubelet-{round}"));
    let manifests = dir.join("manifests");
    std::fs::create_dir_all(&manifests).expect("manifests");
    let child = Command::new(kubelet_binary())
        .arg("--pod-manifest-path")
        .arg(&manifests)
        .arg("--container-runtime-endpoint")
        .arg(bed.endpoint())
        .arg("--root-dir")
        .arg(dir.join("root"))
        .arg("--cgroup-root")
        .arg(format!("/{}/kubelet-{round}", bed.cgroup_root()))
        .arg("--hostname-override")
        .arg("bench")
        // Any free loopback port for the node API.
        .arg("--port")
        .arg("0")
        // Memory pressure only: on a nearly full disk, disk-pressure
        // reclaim would delete the test bed's images, which cannot be
        // pulled again.
        .arg("--eviction-hard")
        .arg("memory.available<100Mi")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("start {}: {e}", kubelet_binary().display()));
    let kubelet = KubeletProcess(child);
    let pid = kubelet.0.id();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle = rss_kib(pid);

    let tmp = dir.join("staging");
    std::fs::create_dir_all(&tmp).expect("staging");
    for i in 0..n {
        std::fs::write(tmp.join(format!("bench-{i}.yaml")), manifest(i)).expect("write");
    }
    let started = Instant::now();
    for i in 0..n {
        let name = format!("bench-{i}.yaml");
        std::fs::rename(tmp.join(&name), manifests.join(&name)).expect("rename");
    }
    let deadline = started + Duration::from_secs(120);
    while running_apps(cri).await < n {
        assert!(Instant::now() < deadline, "pods did not start within 120 s");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let elapsed = started.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let loaded = rss_kib(pid);
    drop(kubelet);
    (elapsed, idle, loaded)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    if !kubelet_binary().exists() {
        eprintln!(
            "{} is missing: run scripts/bench-kubelet.sh (or cargo build --release --example kubelet)",
            kubelet_binary().display()
        );
        std::process::exit(1);
    }
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
        let cri = RemoteRuntime::builder(bed.endpoint()).connect().await.expect("connect");
        println!("containerd {}", bed.containerd_version());
        // Warm-up: the first sandboxes on a fresh containerd are slower.
        floor(&cri, &bed, 5, "warmup").await;
        remove_everything(&cri).await;
        println!("median of {REPEATS} runs each, floor and kubelet alternating");
        println!("| pods | floor (direct CRI) | kubelet | kubelet / floor | kubelet RSS idle | kubelet RSS with pods |");
        println!("|---|---|---|---|---|---|");
        for n in [1usize, 10, 50] {
            let (mut fs, mut ks, mut idles, mut loadeds) = (vec![], vec![], vec![], vec![]);
            for r in 0..REPEATS {
                fs.push(floor(&cri, &bed, n, &format!("f{n}-{r}")).await);
                remove_everything(&cri).await;
                let (k, idle, loaded) = through_kubelet(&cri, &bed, n, &format!("k{n}-{r}")).await;
                remove_everything(&cri).await;
                ks.push(k);
                idles.push(idle);
                loadeds.push(loaded);
            }
            let (f, k, idle, loaded) = (median(fs), median(ks), median(idles), median(loadeds));
            println!(
                "| {n} | {:.0} ms | {:.0} ms | {:.2} | {:.1} MiB | {:.1} MiB |",
                f.as_secs_f64() * 1e3,
                k.as_secs_f64() * 1e3,
                k.as_secs_f64() / f.as_secs_f64(),
                idle as f64 / 1024.0,
                loaded as f64 / 1024.0
            );
        }
    });
}
