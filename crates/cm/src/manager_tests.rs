//! Container manager tests on fixture cgroup trees and synthetic machines.

use std::path::Path;

use serde_json::json;

use crate::cpumanager::ReservedCpus;
use crate::manager::*;
use crate::testutil::{ctr, pod, seed004};
use crate::*;

const GI: i64 = 1 << 30;

fn v1_fixture() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for c in ["cpu", "cpuset", "memory", "pids"] {
        std::fs::create_dir_all(dir.path().join(c)).unwrap();
    }
    dir
}

fn read(root: &Path, p: &str) -> String {
    std::fs::read_to_string(root.join(p)).unwrap_or_else(|e| panic!("{p}: {e}"))
}

fn config(root: &Path) -> ContainerManagerConfig {
    ContainerManagerConfig {
        cgroup_mount_root: root.to_owned(),
        node_allocatable: node::NodeAllocatableConfig {
            kube_reserved: [("cpu".to_owned(), 500), ("memory".to_owned(), GI)].into(),
            system_reserved: [("memory".to_owned(), GI)].into(),
            ..Default::default()
        },
        ..Default::default()
    }
}

fn machine_2cpu_8gi() -> MachineInfo {
    MachineInfo::synthetic(CpuTopology::synthetic(1, 1, 2, 1), 8 << 30)
}

#[test]
fn start_builds_the_kubepods_tree() {
    let root = v1_fixture();
    let cm = NodeContainerManager::new(config(root.path()), machine_2cpu_8gi()).unwrap();
    cm.start().unwrap();
    let r = root.path();
    // kubepods: capacity − kube − system (2000m − 500m, 8Gi − 2Gi).
    assert_eq!(read(r, "cpu/kubepods/cpu.shares"), "1536");
    assert_eq!(
        read(r, "memory/kubepods/memory.limit_in_bytes"),
        (6 * GI).to_string()
    );
    assert_eq!(read(r, "cpu/kubepods/besteffort/cpu.shares"), "2");
    assert!(r.join("memory/kubepods/burstable").is_dir());
    // Reported allocatable also takes the 100Mi eviction threshold.
    assert_eq!(cm.node_allocatable()["memory"], 6 * GI - (100 << 20));
    // Idempotent.
    cm.start().unwrap();
}

#[test]
fn pod_cgroup_lifecycle_and_qos_updates() {
    let root = v1_fixture();
    let mut cfg = config(root.path());
    cfg.pod_pids_limit = 1024;
    let cm = NodeContainerManager::new(cfg, machine_2cpu_8gi()).unwrap();
    cm.start().unwrap();
    let p = seed004();
    let uid = p.metadata.uid.clone().unwrap();
    cm.ensure_pod_cgroup(&p).unwrap();
    assert!(cm.pod_cgroup_exists(&p));
    let dir = format!("kubepods/burstable/pod{uid}");
    let r = root.path();
    assert_eq!(
        read(r, &format!("memory/{dir}/memory.limit_in_bytes")),
        "67108864"
    );
    assert_eq!(read(r, &format!("cpu/{dir}/cpu.cfs_quota_us")), "50000");
    assert_eq!(read(r, &format!("cpu/{dir}/cpu.cfs_period_us")), "100000");
    assert_eq!(read(r, &format!("cpu/{dir}/cpu.shares")), "256");
    assert_eq!(read(r, &format!("pids/{dir}/pids.max")), "1024");
    assert_eq!(cm.pod_cgroup_parent(&p), format!("/{dir}"));
    cm.update_qos_cgroups(std::slice::from_ref(&p)).unwrap();
    assert_eq!(read(r, "cpu/kubepods/burstable/cpu.shares"), "256");
    cm.destroy_pod_cgroup(&p).unwrap();
    assert!(!r.join(format!("cpu/{dir}")).exists());
    assert!(!cm.pod_cgroup_exists(&p));
    // The QoS cgroups stay.
    assert!(r.join("cpu/kubepods/burstable").is_dir());
    // No UID, no cgroup.
    let mut anon = seed004();
    anon.metadata.uid = None;
    assert!(cm.ensure_pod_cgroup(&anon).is_err());
}

/// Soak regression: a pod cgroup left by a pod the kubelet no longer knows
/// is found by UID under each QoS cgroup and can be removed.
#[test]
fn orphaned_pod_cgroups_are_listed_and_removed() {
    let root = v1_fixture();
    // Killing a process empties its cgroup.procs, as the kernel would once
    // the killed process is reaped; 43 refuses the signal.
    let killed = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let (record, procs_root) = (killed.clone(), root.path().to_path_buf());
    let cm = NodeContainerManager::new(config(root.path()), machine_2cpu_8gi())
        .unwrap()
        .with_process_killer(std::sync::Arc::new(move |pid| {
            record.lock().unwrap().push(pid);
            if pid == 43 {
                return Err(std::io::Error::from_raw_os_error(1));
            }
            for procs in walk_procs(&procs_root) {
                std::fs::write(procs, "").unwrap();
            }
            Ok(())
        }));
    cm.start().unwrap();
    let p = seed004();
    let uid = p.metadata.uid.clone().unwrap();
    cm.ensure_pod_cgroup(&p).unwrap();
    let r = root.path();
    // A Guaranteed and a BestEffort pod's cgroups from a previous run.
    for dir in ["kubepods/podg-1", "kubepods/besteffort/podb-2"] {
        for c in ["cpu", "memory"] {
            std::fs::create_dir_all(r.join(c).join(dir)).unwrap();
        }
    }
    let found = cm.pod_cgroups().unwrap();
    let uids: Vec<&str> = found.keys().map(String::as_str).collect();
    let mut expected = vec!["b-2", "g-1", uid.as_str()];
    expected.sort_unstable();
    assert_eq!(uids, expected);
    assert_eq!(found["b-2"].to_cgroupfs(), "/kubepods/besteffort/podb-2");
    cm.destroy_orphaned_pod_cgroup(&found["b-2"]).unwrap();
    cm.destroy_orphaned_pod_cgroup(&found["g-1"]).unwrap();
    assert!(!r.join("cpu/kubepods/besteffort/podb-2").exists());
    assert!(!r.join("memory/kubepods/podg-1").exists());
    assert!(r.join("cpu/kubepods/besteffort").is_dir());
    // One with a process that refuses the signal stays, with an error
    // naming it (upstream retries five times).
    let dir = format!("kubepods/burstable/pod{uid}");
    std::fs::write(r.join(format!("pids/{dir}/cgroup.procs")), "43\n").unwrap();
    let err = cm.destroy_orphaned_pod_cgroup(&found[&uid]).unwrap_err();
    assert!(
        matches!(&err, Error::KillProcesses { pids, .. } if pids == &[43]),
        "{err}"
    );
    assert_eq!(*killed.lock().unwrap(), vec![43; 5]);
    assert!(r.join(format!("cpu/{dir}")).is_dir());
    // A process left behind is killed, then the cgroup goes (upstream
    // `tryKillingCgroupProcesses`; the fault soak found terminated pods
    // whose sandbox outlived their termination retrying here for good).
    killed.lock().unwrap().clear();
    std::fs::write(r.join(format!("pids/{dir}/cgroup.procs")), "42\n").unwrap();
    cm.destroy_pod_cgroup(&p).unwrap();
    assert_eq!(*killed.lock().unwrap(), vec![42]);
    assert!(!r.join(format!("cpu/{dir}")).exists());
    assert!(!r.join(format!("pids/{dir}")).exists());
}

fn walk_procs(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk_procs(&path));
        } else if path.file_name().is_some_and(|n| n == "cgroup.procs") {
            out.push(path);
        }
    }
    out
}

#[test]
fn without_cgroups_per_qos_pods_sit_at_the_root() {
    let root = v1_fixture();
    let cfg = ContainerManagerConfig {
        cgroups_per_qos: false,
        cgroup_root: CgroupName::new(["custom"]),
        ..config(root.path())
    };
    let cm = NodeContainerManager::new(cfg, machine_2cpu_8gi()).unwrap();
    cm.start().unwrap();
    assert!(!root.path().join("cpu/custom/kubepods").exists());
    assert_eq!(cm.pod_cgroup_parent(&seed004()), "/custom");
    assert_eq!(cm.node_allocatable_enforced()["memory"], 8 * GI);
}

#[test]
fn qos_reserve_table() {
    // qos_container_manager_linux_test.go-style: 1Gi Guaranteed, 512Mi Burstable, 100% reserve.
    let g = pod(
        "g",
        vec![ctr(
            "a",
            &[("cpu", "1"), ("memory", "1Gi")],
            &[("cpu", "1"), ("memory", "1Gi")],
        )],
        vec![],
    );
    let b = pod(
        "b",
        vec![ctr("a", &[("cpu", "250m"), ("memory", "512Mi")], &[])],
        vec![],
    );
    let b2 = pod("b2", vec![ctr("a", &[("cpu", "500m")], &[])], vec![]);
    let e = pod("e", vec![ctr("a", &[], &[])], vec![]);
    let pods = [g, b, b2, e];
    let c = qos_cgroup_configs(&pods, 8 * GI, Some(100), &["2MB".into()]);
    assert_eq!(c.burstable.cpu_shares, Some(768));
    assert_eq!(c.best_effort.cpu_shares, Some(2));
    assert_eq!(c.burstable.memory_limit, Some(7 * GI));
    assert_eq!(c.best_effort.memory_limit, Some(7 * GI - 512 * (1 << 20)));
    assert_eq!(c.burstable.hugepage_limits["2MB"], HUGEPAGE_UNBOUNDED);
    let c = qos_cgroup_configs(&pods, 8 * GI, Some(50), &[]);
    assert_eq!(c.burstable.memory_limit, Some(8 * GI - GI / 2));
    assert_eq!(
        c.best_effort.memory_limit,
        Some(8 * GI - (GI + 512 * (1 << 20)) / 2)
    );
    let c = qos_cgroup_configs(&pods, 8 * GI, None, &[]);
    assert_eq!(c.burstable.memory_limit, None);
}

fn numa_manager(policy: TopologyPolicy, root: &Path) -> NodeContainerManager {
    let cfg = ContainerManagerConfig {
        cpu_policy: cpumanager::CpuPolicy::Static {
            reserved: ReservedCpus::Count(2),
        },
        memory_policy: memorymanager::MemoryPolicy::Static {
            reserved: [
                (0, [("memory".to_owned(), 1u64 << 30)].into()),
                (1, [("memory".to_owned(), 1u64 << 30)].into()),
            ]
            .into(),
        },
        topology_policy: policy,
        ..config(root)
    };
    // 2 sockets × 8 cores × 2 threads, 2 NUMA nodes of 16 GiB.
    NodeContainerManager::new(
        cfg,
        MachineInfo::synthetic(CpuTopology::synthetic(2, 1, 8, 2), 32 << 30),
    )
    .unwrap()
}

fn guaranteed(uid: &str, cpu: &str, mem: &str) -> k8s_openapi::api::core::v1::Pod {
    let r = &[("cpu", cpu), ("memory", mem)];
    pod(uid, vec![ctr("app", r, r)], vec![])
}

#[test]
fn admission_aligns_cpus_and_memory() {
    let root = v1_fixture();
    let cm = numa_manager(TopologyPolicy::SingleNumaNode, root.path());
    let p = guaranteed("g1", "4", "2Gi");
    cm.admit(&p).unwrap();
    let ex = cm.explain(&p);
    let c = &ex.containers[0];
    let cpus = c.exclusive_cpus.clone().unwrap();
    assert_eq!(cpus.len(), 4);
    assert_eq!(c.resources.cpuset_cpus, cpus.to_string());
    let node: usize = c.memory_nodes.as_deref().unwrap().parse().unwrap();
    assert!(
        cpus.is_subset(&cm.machine().topology.cpus_in_numa_node(node)),
        "cpus {cpus} not on node {node}"
    );
    assert_eq!(c.resources.cpuset_mems, node.to_string());
    assert_eq!(ex.qos_class, QosClass::Guaranteed);
    assert_eq!(ex.pod_cgroup.to_cgroupfs(), "/kubepods/podg1");
    // More than one NUMA node's CPUs: single-numa-node rejects with upstream's reason.
    let big = guaranteed("g2", "20", "1Gi");
    match cm.admit(&big) {
        Err(Error::Admission { reason, .. }) => assert_eq!(reason, "TopologyAffinityError"),
        other => panic!("expected TopologyAffinityError, got {other:?}"),
    }
    // Releasing returns CPUs and memory.
    cm.remove_container("g1", "app", None).unwrap();
    assert!(cm.cpu_manager().assigned("g1", "app").is_none());
    assert!(cm.memory_manager().blocks("g1", "app").is_none());
}

#[test]
fn admission_policies_differ_on_a_cross_numa_pod() {
    let root = v1_fixture();
    let big = guaranteed("g", "20", "1Gi");
    // best-effort admits across both nodes; restricted too (cross-NUMA is the preferred fit).
    for policy in [
        TopologyPolicy::BestEffort,
        TopologyPolicy::Restricted,
        TopologyPolicy::None,
    ] {
        let cm = numa_manager(policy, root.path());
        cm.admit(&big).unwrap_or_else(|e| panic!("{policy:?}: {e}"));
        assert_eq!(cm.cpu_manager().assigned("g", "app").unwrap().len(), 20);
    }
    // Out of CPUs: UnexpectedAdmissionError, as upstream's allocation failure.
    let cm = numa_manager(TopologyPolicy::None, root.path());
    let huge = guaranteed("h", "31", "1Gi");
    match cm.admit(&huge) {
        Err(Error::Admission { reason, message }) => {
            assert_eq!(reason, "UnexpectedAdmissionError");
            assert!(message.contains("not enough cpus"), "{message}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn explain_reports_everything() {
    let root = v1_fixture();
    let cm = NodeContainerManager::new(config(root.path()), machine_2cpu_8gi()).unwrap();
    let mut p = seed004();
    let mut init = ctr("init", &[("cpu", "100m")], &[]);
    init["restartPolicy"] = json!("Always");
    p.spec.as_mut().unwrap().init_containers = Some(vec![serde_json::from_value(init).unwrap()]);
    let ex = cm.explain(&p);
    assert_eq!(ex.qos_class, QosClass::Burstable);
    assert_eq!(ex.containers.len(), 2);
    assert!(ex.containers[0].init && !ex.containers[1].init);
    let app = &ex.containers[1].resources;
    assert_eq!(
        (
            app.memory_limit_in_bytes,
            app.cpu_quota,
            app.cpu_period,
            app.cpu_shares
        ),
        (67_108_864, 50_000, 100_000, 256)
    );
    // 1000 − 1000 × 10Mi / 8Gi = 999.
    assert_eq!(app.oom_score_adj, 999);
    assert_eq!(ex.pod_cgroup_config.cpu_shares, Some(358));
    assert_eq!(ex.node_capacity["cpu"], 2000);
    let text = ex.to_string();
    assert!(text.contains("qos class:      Burstable"), "{text}");
    assert!(text.contains("memory_limit_in_bytes=67108864"), "{text}");
    assert!(text.contains(&format!(
        "/kubepods/burstable/pod{}",
        p.metadata.uid.as_deref().unwrap()
    )));
}

#[test]
fn oom_floor_from_capabilities() {
    let d = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(d.path().join("self")).unwrap();
    std::fs::write(d.path().join("self/oom_score_adj"), "0\n").unwrap();
    // Bounding set without bit 24 (CAP_SYS_RESOURCE).
    std::fs::write(
        d.path().join("self/status"),
        "Name:\tx\nCapBnd:\t00000000a80425fb\n",
    )
    .unwrap();
    assert_eq!(oom_score_adj_floor(d.path()), Some(0));
    std::fs::write(d.path().join("self/status"), "CapBnd:\t000001ffffffffff\n").unwrap();
    assert_eq!(oom_score_adj_floor(d.path()), None);
}

#[test]
fn invalid_reservation_refuses_to_start() {
    let root = v1_fixture();
    let mut cfg = config(root.path());
    cfg.node_allocatable
        .kube_reserved
        .insert("memory".into(), 100 * GI);
    assert!(matches!(
        NodeContainerManager::new(cfg, machine_2cpu_8gi()),
        Err(Error::InvalidConfig(_))
    ));
}
