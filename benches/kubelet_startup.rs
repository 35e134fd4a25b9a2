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

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kubelet_rs::cri::{RemoteRuntime, RuntimeService, api};
use kubelet_testbed::Testbed;

mod common;
use common::{KubeletProcess, kubelet_binary, manifest, median, remove_everything, rss_kib};

const REPEATS: usize = 5;

/// The floor's time for `n` pods: until the last StartContainer returns.
async fn floor(cri: &RemoteRuntime, bed: &Testbed, n: usize, round: &str) -> Duration {
    common::floor(cri, bed, n, round)
        .await
        .into_iter()
        .max()
        .unwrap_or_default()
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
    let pid = kubelet.id();
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
