//! End to end on this host's cgroup v1 memory controller, without a
//! container runtime: a "pods" cgroup with a 256 MiB limit holds one pod
//! cgroup whose process grows its memory 4 MiB every 20 ms. The manager
//! (real [`CgroupSummaryProvider`], `allocatableMemory.available<128Mi`,
//! kernel notification on, 10 s loop) must evict that pod, through a
//! killer that really kills the process, well before the 10 s period and
//! before the kernel's OOM killer; a BestEffort pod submitted while the
//! pressure holds is rejected and a second, quiet pod is left running.
//!
//! Needs root, the cgroup v1 memory controller and python3:
//! `kubelet_testbed::require` skips without them, and fails under CI.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use k8s_openapi::api::core::v1::{Container, Pod, PodSpec, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kubelet_eviction::cgroup_summary::CgroupSummaryProvider;
use kubelet_eviction::manager::{Config, Eviction, Manager, PodKiller};
use kubelet_eviction::notifier::attach_memcg_notifiers;
use kubelet_eviction::{Signal, ThresholdConfig};

const MEMORY_ROOT: &str = "/sys/fs/cgroup/memory";

struct Cgroups {
    dirs: Vec<PathBuf>,
}

impl Drop for Cgroups {
    fn drop(&mut self) {
        for d in self.dirs.iter().rev() {
            // move leftovers out, then remove
            if let Ok(procs) = std::fs::read_to_string(d.join("cgroup.procs")) {
                for p in procs.lines() {
                    let _ = std::fs::write(Path::new(MEMORY_ROOT).join("cgroup.procs"), p);
                }
            }
            let _ = std::fs::remove_dir(d);
        }
    }
}

fn pod(name: &str, uid: &str, memory_request: Option<&str>) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("default".into()),
            uid: Some(uid.into()),
            ..Default::default()
        },
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "app".into(),
                resources: memory_request.map(|r| ResourceRequirements {
                    requests: Some(BTreeMap::from([("memory".to_owned(), Quantity(r.into()))])),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn spawn_in(cgroup: &Path, script: &str) -> Child {
    let procs = cgroup.join("cgroup.procs");
    Command::new("/bin/sh")
        .arg("-c")
        .arg(format!(
            "echo $$ > {} && exec /usr/bin/python3 -c '{script}'",
            procs.display()
        ))
        .spawn()
        .expect("spawn")
}

struct Killer {
    children: Mutex<BTreeMap<String, Child>>,
    evicted: Mutex<Vec<(Eviction, Instant)>>,
}

#[async_trait]
impl PodKiller for Killer {
    async fn kill_pod(&self, ev: &Eviction) -> Result<(), String> {
        let at = Instant::now();
        let uid = ev.pod.metadata.uid.clone().unwrap_or_default();
        if let Some(mut c) = self
            .children
            .lock()
            .map_err(|e| e.to_string())?
            .remove(&uid)
        {
            c.kill().map_err(|e| e.to_string())?;
            c.wait().map_err(|e| e.to_string())?;
        }
        self.evicted
            .lock()
            .map_err(|e| e.to_string())?
            .push((ev.clone(), at));
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn growing_pod_is_evicted_within_100ms_of_crossing() {
    let root = Path::new(MEMORY_ROOT);
    let need = kubelet_testbed::root()
        .and_then(|()| kubelet_testbed::cgroup_v1("memory"))
        .and_then(|_| kubelet_testbed::executable("/usr/bin/python3"));
    let Some(_) = kubelet_testbed::require("root, cgroup v1 memory and python3", need) else {
        return;
    };
    let pods_rel = format!("eviction-e2e-{}", std::process::id());
    let pods_dir = root.join(&pods_rel);
    std::fs::create_dir(&pods_dir).expect("the pods memory cgroup");
    let hog_uid = "e2e00001-0000-4000-8000-000000000001";
    let quiet_uid = "e2e00002-0000-4000-8000-000000000002";
    let hog_dir = pods_dir.join(format!("pod{hog_uid}"));
    let quiet_dir = pods_dir.join(format!("pod{quiet_uid}"));
    let _guard = Cgroups {
        dirs: vec![pods_dir.clone(), hog_dir.clone(), quiet_dir.clone()],
    };
    std::fs::create_dir(&hog_dir).expect("hog cgroup");
    std::fs::create_dir(&quiet_dir).expect("quiet cgroup");
    std::fs::write(
        pods_dir.join("memory.limit_in_bytes"),
        (256u64 << 20).to_string(),
    )
    .expect("limit");

    let provider = Arc::new(CgroupSummaryProvider {
        pods_cgroup: pods_rel.clone(),
        node_fs: PathBuf::from("/"),
        ..Default::default()
    });
    let thresholds = ThresholdConfig {
        hard: BTreeMap::from([("memory.available".to_owned(), "128Mi".to_owned())]),
        enforce_node_allocatable: vec!["pods".into()],
        ..Default::default()
    }
    .parse()
    .expect("thresholds");
    // memory.available<128Mi on a 24 GiB node never fires; allocatable does.
    let killer = Arc::new(Killer {
        children: Mutex::new(BTreeMap::new()),
        evicted: Mutex::new(Vec::new()),
    });
    let manager = Arc::new(Manager::new(
        Config {
            thresholds,
            ..Default::default()
        },
        provider.clone(),
        killer.clone(),
    ));
    assert_eq!(attach_memcg_notifiers(&manager, root, &pods_rel), 2);

    let quiet = spawn_in(&quiet_dir, "import time; time.sleep(60)");
    let hog_pod = pod("hog", hog_uid, Some("10Mi"));
    let quiet_pod = pod("quiet", quiet_uid, Some("64Mi"));
    let pods = vec![hog_pod.clone(), quiet_pod.clone()];
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let m2 = manager.clone();
    let run = tokio::spawn(m2.run(move || pods.clone(), |_| true, async {
        let _ = stop_rx.await;
    }));
    // let the first pass arm the notifiers
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(manager.node_conditions().is_empty());

    let hog = spawn_in(
        &hog_dir,
        "import time\na=[]\nfor _ in range(50):\n    a.append(b\"x\" * (4<<20)); time.sleep(0.02)\ntime.sleep(60)",
    );
    killer
        .children
        .lock()
        .expect("lock")
        .insert(hog_uid.into(), hog);
    killer
        .children
        .lock()
        .expect("lock")
        .insert(quiet_uid.into(), quiet);

    // watch the pods cgroup's working set to find when it crosses 128Mi
    let usage_dir = pods_dir.clone();
    let start = Instant::now();
    let mut crossed: Option<Instant> = None;
    while start.elapsed() < Duration::from_secs(15) {
        if !killer.evicted.lock().expect("lock").is_empty() {
            break;
        }
        if crossed.is_none()
            && let Ok((_, ws)) = kubelet_eviction::cgroup_summary::cgroup_memory(&usage_dir)
            && ws > (128 << 20)
        {
            crossed = Some(Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let evicted = killer.evicted.lock().expect("lock").clone();
    assert_eq!(
        evicted.len(),
        1,
        "exactly one pod evicted; conditions {:?}",
        manager.node_conditions()
    );
    let (ev, at) = &evicted[0];
    assert_eq!(ev.pod.metadata.name.as_deref(), Some("hog"));
    assert_eq!(ev.signal, Some(Signal::AllocatableMemoryAvailable));
    assert!(
        ev.status
            .message
            .starts_with("The node was low on resource: memory. "),
        "{}",
        ev.status.message
    );
    assert!(
        ev.status.message.contains("Container app was using")
            || ev.status.message.contains("Threshold quantity: 128Mi")
    );
    let since_start = at.duration_since(start);
    assert!(
        since_start < Duration::from_secs(9),
        "evicted after {since_start:?}: the 10 s loop would be later"
    );
    // the crossing is found by 1 ms polling; the eviction may even precede it
    let latency = crossed.map(|c| at.saturating_duration_since(c));
    eprintln!(
        "pressure-to-eviction latency: {latency:?} (eviction {since_start:?} after the hog started)"
    );
    // The latency is a measurement, reported above (goal: under 100 ms);
    // asserting it would make the test fail on a loaded machine.
    assert!(manager.is_under_memory_pressure());
    let admit = manager.admit(&pod("late", "e2e00003-0000-4000-8000-000000000003", None));
    assert!(!admit.admit);
    assert_eq!(admit.message, "The node had condition: [MemoryPressure]. ");
    assert!(
        manager
            .admit(&pod("late-burstable", "e2e00004", Some("1Mi")))
            .admit
    );

    // the quiet pod is still running
    {
        let mut children = killer.children.lock().expect("lock");
        let q = children.get_mut(quiet_uid).expect("quiet pod");
        assert!(
            q.try_wait().expect("try_wait").is_none(),
            "quiet pod still runs"
        );
        let _ = q.kill();
        let _ = q.wait();
    }
    let _ = stop_tx.send(());
    let _ = run.await;
}
