//! CPU manager tests: upstream's assignment cases, the static policy,
//! checkpoints, hints, reconcile, and proptest invariants on synthetic
//! topologies.

use proptest::prelude::*;
use serde_json::json;

use super::*;
use crate::machine::CpuInfo;
use crate::testutil::{ctr, pod};

/// Upstream's `topoDualSocketHT`: 2 sockets × 6 cores × 2 threads; even
/// CPUs on socket 0, core `i` holds CPUs `i` and `i + 6`.
fn topo_dual_socket_ht() -> CpuTopology {
    CpuTopology::new(
        (0..12)
            .map(|id| CpuInfo {
                id,
                core: id % 6,
                socket: id % 2,
                numa_node: id % 2,
            })
            .collect(),
    )
}

fn cs(s: &str) -> CpuSet {
    CpuSet::parse(s).unwrap()
}

fn guaranteed(uid: &str, cpu: &str) -> Pod {
    let r = &[("cpu", cpu), ("memory", "100Mi")];
    pod(uid, vec![ctr("app", r, r)], vec![])
}

fn app(p: &Pod) -> &Container {
    &p.spec.as_ref().unwrap().containers[0]
}

fn static_policy(n: usize) -> CpuPolicy {
    CpuPolicy::Static {
        reserved: ReservedCpus::Count(n),
    }
}

#[test]
fn take_by_topology_as_upstream() {
    let t = topo_dual_socket_ht();
    let cases: &[(&str, &str, usize, &str)] = &[
        ("one cpu, core from socket 0", "1-5,7-11", 1, "2"),
        ("a whole socket", "0-11", 6, "0,2,4,6,8,10"),
        ("a socket and a core", "0-11", 8, "0-2,4,6-8,10"),
        (
            "two cores when a socket is partly used",
            "1-5,7-11",
            4,
            "2,4,8,10",
        ),
        ("whole core first, then a thread", "0-11", 3, "0,2,6"),
        ("partly used core before a free one", "0-5,7-11", 1, "0"),
        ("take everything", "0-11", 12, "0-11"),
        ("nothing", "0-11", 0, ""),
    ];
    for (name, avail, n, want) in cases {
        let got = take_by_topology(&t, &cs(avail), *n).unwrap();
        assert_eq!(got.to_string(), *want, "{name}");
    }
    let err = take_by_topology(&t, &cs("0-3"), 5).unwrap_err();
    assert_eq!(
        err.to_string(),
        "not enough cpus available to satisfy request: requested=5, available=4"
    );
}

#[test]
fn reserved_cpus_by_topology() {
    // 8 CPUs with HT, 2 reserved -> {0,4} (a whole core).
    let m = CpuManager::new(static_policy(2), CpuTopology::synthetic(1, 1, 4, 2), None).unwrap();
    assert_eq!(m.reserved().to_string(), "0,4");
    let m = CpuManager::new(static_policy(1), CpuTopology::synthetic(1, 1, 4, 2), None).unwrap();
    assert_eq!(m.reserved().to_string(), "0");
    let err =
        CpuManager::new(static_policy(0), CpuTopology::synthetic(1, 1, 4, 2), None).unwrap_err();
    assert!(err.to_string().contains("greater than zero"), "{err}");
    let list = CpuPolicy::Static {
        reserved: ReservedCpus::List(cs("1,5")),
    };
    let m = CpuManager::new(list, CpuTopology::synthetic(1, 1, 4, 2), None).unwrap();
    assert_eq!(m.reserved().to_string(), "1,5");
    let bad = CpuPolicy::Static {
        reserved: ReservedCpus::List(cs("9")),
    };
    assert!(CpuManager::new(bad, CpuTopology::synthetic(1, 1, 4, 2), None).is_err());
}

#[test]
fn static_policy_on_this_machine_shape() {
    // 1 socket × 2 CPUs, one reserved.
    let m = CpuManager::new(static_policy(1), CpuTopology::synthetic(1, 1, 2, 1), None).unwrap();
    assert_eq!(m.reserved().to_string(), "0");
    let p1 = guaranteed("p1", "1");
    assert_eq!(
        m.allocate(&p1, app(&p1), None)
            .unwrap()
            .unwrap()
            .to_string(),
        "1"
    );
    assert_eq!(m.shared_pool().to_string(), "0");
    assert_eq!(m.cpuset_for("p1", "app").to_string(), "1");
    // Idempotent.
    assert_eq!(
        m.allocate(&p1, app(&p1), None)
            .unwrap()
            .unwrap()
            .to_string(),
        "1"
    );
    // Nothing left but the reserved CPU.
    let p2 = guaranteed("p2", "1");
    assert!(matches!(
        m.allocate(&p2, app(&p2), None),
        Err(Error::NotEnoughCpus {
            requested: 1,
            available: 0
        })
    ));
    // Non-integer and non-Guaranteed containers share.
    let frac = guaranteed("p3", "1500m");
    assert_eq!(m.allocate(&frac, app(&frac), None).unwrap(), None);
    assert_eq!(m.cpuset_for("p3", "app").to_string(), "0");
    let burst = pod("p4", vec![ctr("app", &[("cpu", "1")], &[])], vec![]);
    assert_eq!(m.allocate(&burst, app(&burst), None).unwrap(), None);
    // Removal returns the CPU.
    m.remove_container("p1", "app").unwrap();
    assert_eq!(m.shared_pool().to_string(), "0-1");
    assert_eq!(m.assigned("p1", "app"), None);
}

#[test]
fn none_policy_shares_everything() {
    let m = CpuManager::new(CpuPolicy::None, CpuTopology::synthetic(1, 1, 2, 1), None).unwrap();
    let p = guaranteed("p", "1");
    assert_eq!(m.allocate(&p, app(&p), None).unwrap(), None);
    assert_eq!(m.cpuset_for("p", "app").to_string(), "0-1");
    assert_eq!(m.hints(&p, app(&p)), None);
}

#[test]
fn init_container_cpus_are_reused_and_siblings_hold() {
    let m = CpuManager::new(static_policy(2), CpuTopology::synthetic(2, 1, 8, 2), None).unwrap();
    let r = &[("cpu", "2"), ("memory", "1Gi")];
    let p = pod(
        "p",
        vec![ctr("app", r, r), ctr("side", r, r)],
        vec![ctr("init", r, r)],
    );
    let spec = p.spec.as_ref().unwrap();
    let init = &spec.init_containers.as_ref().unwrap()[0];
    let got_init = m.allocate(&p, init, None).unwrap().unwrap();
    let got_app = m.allocate(&p, &spec.containers[0], None).unwrap().unwrap();
    assert_eq!(
        got_init, got_app,
        "the app reuses the init container's CPUs"
    );
    let got_side = m.allocate(&p, &spec.containers[1], None).unwrap().unwrap();
    assert!(got_side.intersection(&got_app).is_empty());
    // Removing the init container keeps CPUs the app still holds.
    m.remove_container("p", "init").unwrap();
    assert!(m.shared_pool().intersection(&got_app).is_empty());
    m.remove_container("p", "app").unwrap();
    assert!(got_app.is_subset(&m.shared_pool()));
}

#[test]
fn hints_on_two_numa_nodes() {
    let m = CpuManager::new(static_policy(2), CpuTopology::synthetic(2, 1, 8, 2), None).unwrap();
    let small = guaranteed("a", "4");
    let h = m.hints(&small, app(&small)).unwrap();
    let h: Vec<(Vec<usize>, bool)> = h
        .iter()
        .map(|h| (h.numa_affinity.unwrap().nodes(), h.preferred))
        .collect();
    assert_eq!(
        h,
        vec![(vec![0], true), (vec![1], true), (vec![0, 1], false)]
    );
    let big = guaranteed("b", "20");
    let h = m.hints(&big, app(&big)).unwrap();
    assert_eq!(h.len(), 1);
    assert_eq!(
        (h[0].numa_affinity.unwrap().nodes(), h[0].preferred),
        (vec![0, 1], true)
    );
    // Aligned allocation follows the hint.
    let hint = TopologyHint {
        numa_affinity: Some(NumaMask::of([1])),
        preferred: true,
    };
    let got = m
        .allocate(&small, app(&small), Some(&hint))
        .unwrap()
        .unwrap();
    assert!(got.is_subset(&m.topology().cpus_in_numa_node(1)), "{got}");
    assert_eq!(got.len(), 4);
    // Too big for what is left: no hint at all.
    let huge = guaranteed("c", "40");
    assert_eq!(m.hints(&huge, app(&huge)).unwrap(), vec![]);
}

#[test]
fn checkpoint_restores_and_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let topo = CpuTopology::synthetic(1, 1, 4, 2);
    let p = guaranteed("p", "2");
    {
        let m = CpuManager::new(static_policy(2), topo.clone(), Some(dir.path())).unwrap();
        m.allocate(&p, app(&p), None).unwrap();
    }
    let m = CpuManager::new(static_policy(2), topo.clone(), Some(dir.path())).unwrap();
    assert_eq!(m.assigned("p", "app").unwrap().to_string(), "1,5");
    assert_eq!(m.shared_pool().to_string(), "0,2-4,6-7");
    drop(m);
    // A changed policy refuses to start and says what to do.
    let err = CpuManager::new(CpuPolicy::None, topo.clone(), Some(dir.path()))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("differs from state checkpoint policy") && err.contains("drain this node"),
        "{err}"
    );
    // More reserved CPUs than the state allows.
    let err = CpuManager::new(static_policy(4), topo.clone(), Some(dir.path()))
        .unwrap_err()
        .to_string();
    assert!(err.contains("not all reserved cpus"), "{err}");
    // A corrupt file.
    let path = dir.path().join(CPU_MANAGER_STATE_FILE);
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, text.replace("\"1,5\"", "\"1-2,5\"")).unwrap();
    let err = CpuManager::new(static_policy(2), topo.clone(), Some(dir.path()))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("checksum mismatch") && err.contains("drain this node"),
        "{err}"
    );
    // A different machine (CPUs gone) is detected by validation.
    std::fs::write(&path, &text).unwrap();
    let err = CpuManager::new(
        static_policy(2),
        CpuTopology::synthetic(1, 1, 3, 2),
        Some(dir.path()),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("doesn't match"), "{err}");
}

#[test]
fn stale_state_removed() {
    let m = CpuManager::new(static_policy(1), CpuTopology::synthetic(1, 1, 4, 1), None).unwrap();
    let a = guaranteed("a", "1");
    let b = guaranteed("b", "1");
    m.allocate(&a, app(&a), None).unwrap();
    m.allocate(&b, app(&b), None).unwrap();
    m.remove_stale_state(&[("a".into(), "app".into())]).unwrap();
    assert!(m.assigned("a", "app").is_some());
    assert!(m.assigned("b", "app").is_none());
    assert_eq!(m.shared_pool().len(), 3);
}

/// A created container `name` of pod `uid` in the fake runtime; its ID.
async fn fake_container(rt: &kubelet_cri_client::FakeRuntime, uid: &str, name: &str) -> String {
    use kubelet_cri_client::RuntimeService;
    use kubelet_cri_client::api::{
        ContainerConfig, ContainerMetadata, ImageSpec, PodSandboxConfig, PodSandboxMetadata,
    };
    rt.add_image("busybox");
    let sb_cfg = PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: uid.into(),
            uid: uid.into(),
            namespace: "d".into(),
            attempt: 0,
        }),
        ..Default::default()
    };
    let sb = rt.run_pod_sandbox(sb_cfg.clone(), "").await.unwrap();
    let cfg = ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: name.into(),
            attempt: 0,
        }),
        image: Some(ImageSpec {
            image: "busybox".into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    rt.create_container(&sb, cfg, sb_cfg).await.unwrap()
}

fn running(uid: &str, name: &str, id: &str) -> ActiveContainer {
    ActiveContainer {
        pod_uid: uid.into(),
        name: name.into(),
        container_id: id.into(),
    }
}

/// The cpuset the fake runtime last received for `id`.
fn pushed(rt: &kubelet_cri_client::FakeRuntime, id: &str) -> Option<String> {
    rt.container_resources(id).map(|r| r.cpuset_cpus)
}

fn updates(rt: &kubelet_cri_client::FakeRuntime) -> usize {
    rt.calls()
        .iter()
        .filter(|c| **c == "UpdateContainerResources")
        .count()
}

fn best_effort(uid: &str) -> Pod {
    pod(uid, vec![ctr("app", &[], &[])], vec![])
}

#[tokio::test]
async fn reconcile_pushes_cpusets_once() {
    let rt = kubelet_cri_client::FakeRuntime::new();
    let id = fake_container(&rt, "p", "app").await;
    let m = CpuManager::new(static_policy(1), CpuTopology::synthetic(1, 1, 4, 1), None).unwrap();
    let p = guaranteed("p", "2");
    m.allocate(&p, app(&p), None).unwrap();
    let active = vec![running("p", "app", &id)];
    let r = m.reconcile(&rt, &active).await;
    assert_eq!((r.updated, r.failed), (vec![id.clone()], vec![]));
    assert_eq!(
        pushed(&rt, &id),
        Some(m.assigned("p", "app").unwrap().to_string())
    );
    // Nothing changed: nothing pushed (upstream's lastUpdateState skip).
    let r = m.reconcile(&rt, &active).await;
    assert!(r.updated.is_empty());
    assert_eq!(r.in_sync, vec![id.clone()]);
    assert_eq!(updates(&rt), 1);
    // After removal the container is moved back to the shared pool.
    m.remove_container("p", "app").unwrap();
    let r = m.reconcile(&rt, &active).await;
    assert_eq!(r.updated.len(), 1);
    assert_eq!(pushed(&rt, &id), Some("0-3".into()));
    // An unknown container fails and is reported.
    let ghost = vec![running("x", "y", "nope")];
    let r = m.reconcile(&rt, &ghost).await;
    assert_eq!(r.failed, vec!["nope".to_owned()]);
}

/// The bug of issue 12: a shared-pool container keeps the CPUs later handed
/// out exclusively until the reconcile narrows it.
#[tokio::test]
async fn shared_containers_narrow_when_cpus_go_exclusive() {
    let rt = kubelet_cri_client::FakeRuntime::new();
    let m = CpuManager::new(
        CpuPolicy::Static {
            reserved: ReservedCpus::List(cs("0")),
        },
        CpuTopology::synthetic(1, 1, 2, 1),
        None,
    )
    .unwrap();
    let be = best_effort("be");
    assert_eq!(m.allocate(&be, app(&be), None).unwrap(), None);
    let be_id = fake_container(&rt, "be", "app").await;
    let r = m.reconcile(&rt, &[running("be", "app", &be_id)]).await;
    assert_eq!(r.updated, vec![be_id.clone()]);
    assert_eq!(pushed(&rt, &be_id), Some("0-1".into()));

    let g = guaranteed("g", "1");
    assert_eq!(m.allocate(&g, app(&g), None).unwrap(), Some(cs("1")));
    let g_id = fake_container(&rt, "g", "app").await;
    let both = [running("be", "app", &be_id), running("g", "app", &g_id)];
    let plan = m.reconcile_plan(&both);
    assert_eq!(
        plan,
        vec![(be_id.clone(), cs("0")), (g_id.clone(), cs("1"))]
    );
    let r = m.reconcile(&rt, &both).await;
    assert_eq!(r.updated, vec![be_id.clone(), g_id.clone()]);
    assert_eq!(pushed(&rt, &be_id), Some("0".into()));
    assert_eq!(pushed(&rt, &g_id), Some("1".into()));
    // Only the cpuset is sent, as upstream's updateContainerCPUSet.
    let sent = rt.container_resources(&be_id).unwrap();
    assert_eq!(
        sent,
        kubelet_cri_client::api::LinuxContainerResources {
            cpuset_cpus: "0".into(),
            ..Default::default()
        }
    );

    // The Guaranteed pod goes: its CPU returns to the pool and the shared
    // container widens again at the next pass.
    m.remove_container("g", "app").unwrap();
    let r = m.reconcile(&rt, &[running("be", "app", &be_id)]).await;
    assert_eq!(r.updated, vec![be_id.clone()]);
    assert_eq!(pushed(&rt, &be_id), Some("0-1".into()));
}

#[tokio::test]
async fn failed_updates_are_retried_and_exited_containers_forgotten() {
    let rt = kubelet_cri_client::FakeRuntime::new();
    let m = CpuManager::new(static_policy(1), CpuTopology::synthetic(1, 1, 2, 1), None).unwrap();
    let id = fake_container(&rt, "be", "app").await;
    rt.inject_error(
        "UpdateContainerResources",
        kubelet_cri_client::Error::Unavailable {
            call: kubelet_cri_client::Call::new("UpdateContainerResources"),
            message: "injected".into(),
        },
    );
    let active = [running("be", "app", &id)];
    let r = m.reconcile(&rt, &active).await;
    assert_eq!((r.updated.len(), r.failed.clone()), (0, vec![id.clone()]));
    assert_eq!(pushed(&rt, &id), None);
    let r = m.reconcile(&rt, &active).await;
    assert_eq!(r.updated, vec![id.clone()]);
    // The container exits: what it got is forgotten, so its successor (a
    // new ID) and even a reappearing ID are pushed again.
    m.reconcile(&rt, &[]).await;
    let r = m.reconcile(&rt, &active).await;
    assert_eq!(r.updated, vec![id.clone()]);
    assert_eq!(updates(&rt), 3);
}

#[tokio::test]
async fn reconcile_state_removes_stale_state_only_when_sources_are_ready() {
    let rt = kubelet_cri_client::FakeRuntime::new();
    let m = CpuManager::new(static_policy(1), CpuTopology::synthetic(1, 1, 4, 1), None).unwrap();
    let gone = guaranteed("gone", "2");
    m.allocate(&gone, app(&gone), None).unwrap();
    let be_id = fake_container(&rt, "be", "app").await;
    let not_ready = || ReconcileSnapshot {
        active: None,
        running: vec![running("be", "app", &be_id)],
    };
    let r = m.reconcile_state(&rt, &not_ready).await;
    assert_eq!(r.updated, vec![be_id.clone()]);
    assert!(m.assigned("gone", "app").is_some(), "kept while not ready");
    assert_eq!(pushed(&rt, &be_id), Some(m.shared_pool().to_string()));
    assert_eq!(m.shared_pool().len(), 2);

    let ready = || ReconcileSnapshot {
        active: Some(vec![("be".into(), "app".into())]),
        running: vec![running("be", "app", &be_id)],
    };
    let r = m.reconcile_state(&rt, &ready).await;
    assert!(m.assigned("gone", "app").is_none(), "stale: released");
    assert_eq!(r.updated, vec![be_id.clone()]);
    assert_eq!(pushed(&rt, &be_id), Some("0-3".into()));
}

#[tokio::test]
async fn an_allocation_racing_the_pod_listing_is_not_stale() {
    let rt = kubelet_cri_client::FakeRuntime::new();
    let m = CpuManager::new(static_policy(1), CpuTopology::synthetic(1, 1, 4, 1), None).unwrap();
    let old = guaranteed("old", "1");
    m.allocate(&old, app(&old), None).unwrap();
    let new = guaranteed("new", "1");
    // The pod is admitted while the kubelet's pods are being listed: the
    // list misses it, as it misses the pod that went away.
    let racing = || {
        m.allocate(&new, app(&new), None).unwrap();
        ReconcileSnapshot {
            active: Some(Vec::new()),
            running: Vec::new(),
        }
    };
    m.reconcile_state(&rt, &racing).await;
    assert!(m.assigned("old", "app").is_none());
    assert!(m.assigned("new", "app").is_some());
    // Listed as active at the next pass, it stays; the one after that
    // without it, it goes.
    let listed = || ReconcileSnapshot {
        active: Some(vec![("new".into(), "app".into())]),
        running: Vec::new(),
    };
    m.reconcile_state(&rt, &listed).await;
    assert!(m.assigned("new", "app").is_some());
    let empty = || ReconcileSnapshot {
        active: Some(Vec::new()),
        running: Vec::new(),
    };
    m.reconcile_state(&rt, &empty).await;
    assert!(m.assigned("new", "app").is_none());
}

#[tokio::test(start_paused = true)]
async fn reconcile_loop_runs_every_period_until_shutdown() {
    let rt = kubelet_cri_client::FakeRuntime::new();
    let m = CpuManager::new(static_policy(1), CpuTopology::synthetic(1, 1, 2, 1), None).unwrap();
    let calls = std::sync::atomic::AtomicUsize::new(0);
    let start = tokio::time::Instant::now();
    let source = || {
        calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        ReconcileSnapshot::default()
    };
    m.run_reconcile_loop(
        &rt,
        &source,
        RECONCILE_PERIOD,
        tokio::time::sleep(std::time::Duration::from_secs(25)),
    )
    .await;
    // Ticks at 0 s, 10 s and 20 s; shutdown at 25 s.
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 3);
    assert_eq!(start.elapsed(), std::time::Duration::from_secs(25));
}

#[tokio::test(start_paused = true)]
async fn spawned_reconcile_follows_the_pool_and_stops_on_request() {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;
    let rt = kubelet_cri_client::FakeRuntime::new();
    let m = Arc::new(
        CpuManager::new(
            CpuPolicy::Static {
                reserved: ReservedCpus::List(cs("0")),
            },
            CpuTopology::synthetic(1, 1, 2, 1),
            None,
        )
        .unwrap(),
    );
    let be_id = fake_container(&rt, "be", "app").await;
    let listed = Arc::new(Mutex::new(vec![running("be", "app", &be_id)]));
    let source = {
        let listed = listed.clone();
        move || ReconcileSnapshot {
            active: None,
            running: listed.lock().unwrap().clone(),
        }
    };
    let period = Duration::from_secs(1);
    let task = m
        .clone()
        .spawn_reconcile(Arc::new(rt.clone()), Arc::new(source), period);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        pushed(&rt, &be_id),
        Some("0-1".into()),
        "first pass at once"
    );

    let g = guaranteed("g", "1");
    m.allocate(&g, app(&g), None).unwrap();
    let g_id = fake_container(&rt, "g", "app").await;
    listed.lock().unwrap().push(running("g", "app", &g_id));
    // Not before the next period...
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(pushed(&rt, &be_id), Some("0-1".into()));
    // ...but at it.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(pushed(&rt, &be_id), Some("0".into()));
    assert_eq!(pushed(&rt, &g_id), Some("1".into()));
    let before = updates(&rt);
    tokio::time::sleep(period * 5).await;
    assert_eq!(updates(&rt), before, "nothing changed, nothing pushed");

    assert!(!task.is_finished());
    task.stop().await;
    // Stopped: a change is no longer pushed.
    m.remove_container("g", "app").unwrap();
    tokio::time::sleep(period * 3).await;
    assert_eq!(pushed(&rt, &be_id), Some("0".into()));
}

#[tokio::test(start_paused = true)]
async fn a_dropped_reconcile_task_is_aborted() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let rt = kubelet_cri_client::FakeRuntime::new();
    let m = Arc::new(
        CpuManager::new(static_policy(1), CpuTopology::synthetic(1, 1, 2, 1), None).unwrap(),
    );
    let passes = Arc::new(AtomicUsize::new(0));
    let source = {
        let passes = passes.clone();
        move || {
            passes.fetch_add(1, Ordering::SeqCst);
            ReconcileSnapshot::default()
        }
    };
    let period = std::time::Duration::from_secs(1);
    let task = m
        .clone()
        .spawn_reconcile(Arc::new(rt), Arc::new(source), period);
    tokio::time::sleep(period * 2 + period / 2).await;
    assert_eq!(passes.load(Ordering::SeqCst), 3);
    drop(task);
    tokio::time::sleep(period * 5).await;
    assert_eq!(passes.load(Ordering::SeqCst), 3);
    // The task held the manager; aborted, it lets go.
    tokio::task::yield_now().await;
    assert_eq!(Arc::strong_count(&m), 1);
}

#[tokio::test(start_paused = true)]
async fn the_none_policy_runs_no_loop() {
    use std::sync::Arc;
    let rt = kubelet_cri_client::FakeRuntime::new();
    let m = Arc::new(
        CpuManager::new(CpuPolicy::None, CpuTopology::synthetic(1, 1, 2, 1), None).unwrap(),
    );
    let id = fake_container(&rt, "be", "app").await;
    let source = move || ReconcileSnapshot {
        active: None,
        running: vec![running("be", "app", &id)],
    };
    let task = m.spawn_reconcile(
        Arc::new(rt.clone()),
        Arc::new(source),
        std::time::Duration::from_secs(1),
    );
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    assert!(task.is_finished());
    task.stop().await;
    assert_eq!(updates(&rt), 0);
}

fn check_invariants(m: &CpuManager) -> Result<(), TestCaseError> {
    let s = m.state();
    let all = m.topology().all();
    let mut seen = s.default_cpu_set.clone();
    for cs in s.entries.values().flat_map(|c| c.values()) {
        prop_assert!(
            seen.intersection(cs).is_empty(),
            "a CPU given twice: {cs} vs {seen}"
        );
        prop_assert!(
            m.reserved().intersection(cs).is_empty(),
            "reserved CPU made exclusive: {cs}"
        );
        seen = seen.union(cs);
    }
    prop_assert_eq!(seen, all);
    prop_assert!(!s.default_cpu_set.is_empty(), "shared pool empty");
    prop_assert!(m.reserved().is_subset(&s.default_cpu_set));
    Ok(())
}

#[derive(Debug, Clone)]
enum Op {
    Alloc { pod: u8, cpus: u8, numa: Option<u8> },
    Remove { pod: u8 },
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    prop::collection::vec(
        prop_oneof![
            (0u8..12, 1u8..40, prop::option::of(0u8..4)).prop_map(|(pod, cpus, numa)| Op::Alloc {
                pod,
                cpus,
                numa
            }),
            (0u8..12).prop_map(|pod| Op::Remove { pod }),
        ],
        1..40,
    )
}

fn run_ops(topo: CpuTopology, reserved: usize, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let m = CpuManager::new(static_policy(reserved), topo, None).unwrap();
    for op in ops {
        match op {
            Op::Alloc { pod: n, cpus, numa } => {
                let p = guaranteed(&format!("p{n}"), &cpus.to_string());
                let hint = numa.map(|x| TopologyHint {
                    numa_affinity: Some(NumaMask::of([x as usize])),
                    preferred: true,
                });
                match m.allocate(&p, app(&p), hint.as_ref()) {
                    Ok(Some(got)) => prop_assert_eq!(
                        got.len(),
                        m.assigned(&format!("p{n}"), "app").unwrap().len()
                    ),
                    Ok(None) => prop_assert!(false, "integer Guaranteed got no CPUs"),
                    Err(Error::NotEnoughCpus { .. }) => {}
                    Err(e) => prop_assert!(false, "unexpected error {e}"),
                }
            }
            Op::Remove { pod: n } => m.remove_container(&format!("p{n}"), "app").unwrap(),
        }
        check_invariants(&m)?;
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn invariants_one_socket_two_cpus(ops in ops()) {
        run_ops(CpuTopology::synthetic(1, 1, 2, 1), 1, ops)?;
    }

    #[test]
    fn invariants_two_sockets_eight_cores_ht(ops in ops()) {
        run_ops(CpuTopology::synthetic(2, 1, 8, 2), 2, ops)?;
    }

    #[test]
    fn invariants_four_numa_nodes_of_64(ops in ops()) {
        run_ops(CpuTopology::synthetic(2, 2, 32, 2), 4, ops)?;
    }

    #[test]
    fn take_returns_what_was_asked(avail in prop::collection::btree_set(0usize..32, 0..32), n in 0usize..33) {
        let t = CpuTopology::synthetic(2, 1, 8, 2);
        let a: CpuSet = avail.iter().copied().collect();
        match take_by_topology(&t, &a, n) {
            Ok(got) => {
                prop_assert_eq!(got.len(), n);
                prop_assert!(got.is_subset(&a));
            }
            Err(_) => prop_assert!(n > a.len()),
        }
    }
}

#[test]
fn state_json_shape() {
    let s = CpuManagerState {
        policy_name: "static".into(),
        default_cpu_set: cs("0,4-7"),
        entries: [("uid".to_owned(), [("c".to_owned(), cs("1-3"))].into())].into(),
    };
    assert_eq!(
        serde_json::to_value(&s).unwrap(),
        json!({"policy_name": "static", "default_cpu_set": "0,4-7", "entries": {"uid": {"c": "1-3"}}})
    );
}
