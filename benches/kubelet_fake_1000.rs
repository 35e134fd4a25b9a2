#![allow(missing_docs)]
//! The whole kubelet at 1,000 pods over the in-process `FakeRuntime`
//! (issue 17): the real sync loop, pod config, pod workers and their
//! syncer, runtime manager, generic PLEG (1 s relist) and status manager,
//! on a current-thread tokio runtime, with 1,000 pods of 3 `sleep`
//! containers each (3,000 containers, 1,000 sandboxes).
//!
//! - **adds**: the 1,000 pods handed to the `api` source at once, until
//!   the status manager shows every one `Running` with its 3 containers
//!   ready: wall time (bound by the PLEG's 1 s relists, since a worker
//!   waits for a relist newer than its last sync) and the process's CPU
//!   time, with the CRI calls made.
//! - **idle**: a window of [`WINDOW`] with the 1,000 pods running and
//!   nothing to do (relists, housekeeping): CPU time and CRI calls.
//! - **resync**: the same window after every pod was sent an unchanged
//!   update (`handle_pod_updates`, what the periodic resync does to each
//!   worker): CPU time and CRI calls above the idle window's.
//!
//! CPU time is the whole process's (`CLOCK_PROCESS_CPUTIME_ID`, every
//! thread), so it includes tokio's blocking pool (pod directories).
//! Each figure is the median of [`ROUNDS`] rounds.
//!
//! Run: `cargo bench --bench kubelet_fake_1000` (about two minutes).

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kubelet_rs::agent::{Kubelet, KubeletConfig};
use kubelet_rs::cri::FakeRuntime;
use kubelet_rs::kuberuntime::RuntimeManager;
use kubelet_rs::kuberuntime::config::ConfigOptions;
use kubelet_rs::pleg::{GenericPleg, PlegConfig, PodCache, PodLifecycleEventGenerator};
use kubelet_rs::podconfig::PodConfig;

const PODS: usize = 1_000;
const CONTAINERS_PER_POD: usize = 3;
const IMAGE: &str = "localhost/busybox:latest";
const NODE: &str = "bench-node";
const WINDOW: Duration = Duration::from_secs(3);
const ROUNDS: usize = 3;

fn pod(i: usize) -> Pod {
    let containers: Vec<_> = (0..CONTAINERS_PER_POD)
        .map(|c| {
            serde_json::json!({
                "name": format!("c{c}"),
                "image": IMAGE,
                "imagePullPolicy": "IfNotPresent",
                "command": ["sleep", "3600"],
            })
        })
        .collect();
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": format!("pod-{i}"),
            "namespace": "default",
            "uid": format!("{i:08}-0000-4000-8000-000000000000"),
            "creationTimestamp": "2025-01-01T00:00:00Z",
        },
        "spec": {
            "restartPolicy": "Always",
            "terminationGracePeriodSeconds": 1,
            // As the API server defaults it.
            "dnsPolicy": "ClusterFirst",
            "containers": containers,
        },
        "status": {"phase": "Pending"},
    }))
    .expect("valid pod")
}

/// CPU time of the whole process so far (user + system, every thread,
/// finished ones included: `CLOCK_PROCESS_CPUTIME_ID`).
fn process_cpu() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    Duration::new(
        u64::try_from(t.tv_sec).unwrap_or_default(),
        u32::try_from(t.tv_nsec).unwrap_or_default(),
    )
}

fn running_pods(kubelet: &Kubelet<Arc<PodCache>>) -> usize {
    kubelet
        .statuses()
        .all()
        .values()
        .filter(|s| {
            s.phase.as_deref() == Some("Running")
                && s.container_statuses
                    .as_ref()
                    .is_some_and(|cs| cs.len() == CONTAINERS_PER_POD && cs.iter().all(|c| c.ready))
        })
        .count()
}

#[derive(Default)]
struct Round {
    adds_wall: Duration,
    adds_cpu: Duration,
    adds_calls: usize,
    idle_cpu: Duration,
    idle_calls: usize,
    resync_cpu: Duration,
    resync_calls: usize,
}

async fn round(pods: &[Pod]) -> Round {
    let fake = FakeRuntime::new();
    fake.add_image(IMAGE);
    let root = tempfile::tempdir().expect("root dir");
    let logs = tempfile::tempdir().expect("logs dir");
    let opts = ConfigOptions {
        pod_logs_dir: logs.path().to_path_buf(),
        node_name: NODE.into(),
        resolv_conf: None,
        ..ConfigOptions::new(Arc::new(kubelet_rs::cm::StaticResources::default()))
    };
    let manager = Arc::new(RuntimeManager::new(Arc::new(fake.clone()), opts));
    let cache = Arc::new(PodCache::new());
    let pleg = GenericPleg::new(
        manager.clone(),
        cache.clone(),
        PlegConfig {
            channel_capacity: 100_000,
            ..PlegConfig::default()
        },
    );
    let mut pleg_events = pleg.watch().expect("PLEG events");
    let mut config = KubeletConfig::new(NODE);
    config.root_dir = root.path().to_path_buf();
    config.max_pods = 2 * PODS;
    let kubelet = Arc::new(
        Kubelet::new(config, manager.clone(), cache)
            .expect("kubelet")
            .with_container_gc(manager),
    );
    let (pod_config, updates) = PodConfig::builder(NODE).start();
    let api = pod_config.channel("api");
    let (events_tx, events_rx) = tokio::sync::mpsc::channel(100_000);
    let forward = tokio::spawn(async move {
        while let Some(e) = pleg_events.recv().await {
            if events_tx.send(e.pod_uid).await.is_err() {
                return;
            }
        }
    });
    pleg.start().expect("PLEG");
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let k = kubelet.clone();
    let sync_loop = tokio::spawn(async move {
        k.run(updates, events_rx, Box::new(|| true), async {
            let _ = stop_rx.await;
        })
        .await;
    });

    let mut r = Round::default();
    fake.clear_calls();
    let (t, cpu) = (Instant::now(), process_cpu());
    api.set(pods.to_vec()).await.expect("pods");
    let deadline = t + Duration::from_secs(120);
    let progress = std::env::var_os("BENCH_PROGRESS").is_some();
    let mut shown = Instant::now();
    loop {
        let running = running_pods(&kubelet);
        if running >= PODS {
            break;
        }
        if progress && shown.elapsed() >= Duration::from_secs(1) {
            shown = Instant::now();
            println!(
                "  {:?}: {running} pods Running, {} containers, {} statuses",
                t.elapsed(),
                fake.inspect_containers().len(),
                kubelet.statuses().all().len()
            );
        }
        assert!(Instant::now() < deadline, "pods not all running in 120 s");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    r.adds_wall = t.elapsed();
    r.adds_cpu = process_cpu().saturating_sub(cpu);
    r.adds_calls = fake.calls().len();
    assert_eq!(
        fake.inspect_containers().len(),
        PODS * CONTAINERS_PER_POD,
        "containers"
    );

    // Let the last syncs after the statuses settle, then an idle window.
    tokio::time::sleep(Duration::from_secs(2)).await;
    fake.clear_calls();
    let cpu = process_cpu();
    tokio::time::sleep(WINDOW).await;
    r.idle_cpu = process_cpu().saturating_sub(cpu);
    r.idle_calls = fake.calls().len();

    // Every worker sent its unchanged pod again.
    fake.clear_calls();
    let cpu = process_cpu();
    kubelet.handle_pod_updates(pods.to_vec());
    tokio::time::sleep(WINDOW).await;
    r.resync_cpu = process_cpu().saturating_sub(cpu);
    r.resync_calls = fake.calls().len();
    assert_eq!(
        fake.inspect_containers().len(),
        PODS * CONTAINERS_PER_POD,
        "an unchanged update started or removed containers"
    );

    let _ = stop_tx.send(());
    let _ = sync_loop.await;
    pleg.stop();
    forward.abort();
    r
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else is read. The kubelet's
    // logs with `RUST_LOG` (e.g. `warn`); progress with `BENCH_PROGRESS=1`.
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .try_init();
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let pods: Vec<Pod> = (0..PODS).map(pod).collect();
    let rounds: Vec<Round> = (0..ROUNDS).map(|_| rt.block_on(round(&pods))).collect();
    let med = |f: fn(&Round) -> Duration| median(rounds.iter().map(f).collect());
    let calls = |f: fn(&Round) -> usize| {
        let mut v: Vec<usize> = rounds.iter().map(f).collect();
        v.sort_unstable();
        v[v.len() / 2]
    };
    println!(
        "kubelet over the fake runtime, {PODS} pods x {CONTAINERS_PER_POD} containers, median of {ROUNDS} rounds:"
    );
    println!(
        "  adds until all Running: wall {:?}, process CPU {:?}, {} CRI calls",
        med(|r| r.adds_wall),
        med(|r| r.adds_cpu),
        calls(|r| r.adds_calls)
    );
    println!(
        "  idle {WINDOW:?}: process CPU {:?}, {} CRI calls",
        med(|r| r.idle_cpu),
        calls(|r| r.idle_calls)
    );
    println!(
        "  unchanged update of every pod, then {WINDOW:?}: process CPU {:?}, {} CRI calls (idle window's above included)",
        med(|r| r.resync_cpu),
        calls(|r| r.resync_calls)
    );
}
