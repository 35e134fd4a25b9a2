//! End to end, as root, on this machine's real cgroups, under a cgroup root
//! of the test's own (`kubelet-cm-test-<pid>-<n>`), removed by a drop guard
//! even when an assertion fails. Needs root and, on a cgroup v1 host, the
//! memory controller: `kubelet_testbed::require` skips without them, and
//! fails under CI.

use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::Pod;
use kubelet_cm::{
    CgroupManager, CgroupName, CgroupVersion, ContainerManager, ContainerManagerConfig,
    ContainerResources, FsCgroupManager, MachineInfo, NodeContainerManager, QosClass,
    ResourceConfig,
};

use kubelet_testbed::read_trimmed as read;

const MOUNT: &str = "/sys/fs/cgroup";

/// Removes every directory the test created under its cgroup root, deepest first.
struct Guard {
    root_name: String,
    dirs: Vec<PathBuf>,
}

impl Guard {
    fn new(tag: &str) -> Option<Self> {
        let root_name = format!("kubelet-cm-test-{}-{tag}", std::process::id());
        let m = FsCgroupManager::new(MOUNT);
        let dirs: Vec<PathBuf> = match m.version() {
            CgroupVersion::V1 => m
                .controllers()
                .map(|c| Path::new(MOUNT).join(c).join(&root_name))
                .collect(),
            CgroupVersion::V2 => vec![Path::new(MOUNT).join(&root_name)],
        };
        Some(Guard { root_name, dirs })
    }

    fn name(&self) -> CgroupName {
        CgroupName::new([self.root_name.clone()])
    }
}

fn remove_tree(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_tree(&e.path());
            }
        }
    }
    let _ = std::fs::remove_dir(dir);
}

impl Drop for Guard {
    fn drop(&mut self) {
        for d in &self.dirs {
            remove_tree(d);
            if d.exists() {
                eprintln!("warning: could not remove {}", d.display());
            }
        }
    }
}

/// Root, and on a cgroup v1 host the memory controller; `None` (skip) or a
/// panic under CI when missing.
fn can_run() -> Option<()> {
    let need = kubelet_testbed::root().and_then(|()| {
        if FsCgroupManager::new(MOUNT).version() == CgroupVersion::V1 {
            kubelet_testbed::cgroup_v1("memory").map(drop)
        } else {
            Ok(())
        }
    });
    kubelet_testbed::require("root and a writable cgroup hierarchy", need)
}

fn pod(uid: &str, requests: serde_json::Value, limits: serde_json::Value) -> Pod {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": "p", "namespace": "default", "uid": uid},
        "spec": {"containers": [{"name": "app", "image": "busybox",
            "resources": {"requests": requests, "limits": limits}}]},
    }))
    .expect("pod")
}

#[test]
fn kubepods_tree_pod_cgroups_and_removal() {
    let Some(()) = can_run() else { return };
    let guard = Guard::new("tree").expect("guard");
    let cfg = ContainerManagerConfig {
        cgroup_root: guard.name(),
        pod_pids_limit: 4096,
        ..Default::default()
    };
    let machine = MachineInfo::host().expect("machine");
    let cm = NodeContainerManager::new(cfg, machine.clone()).expect("container manager");
    cm.start().expect("start");
    let version = FsCgroupManager::new(MOUNT).version();
    let base = |ctrl: &str, rel: &str| -> PathBuf {
        match version {
            CgroupVersion::V1 => Path::new(MOUNT).join(ctrl).join(&guard.root_name).join(rel),
            CgroupVersion::V2 => Path::new(MOUNT).join(&guard.root_name).join(rel),
        }
    };
    if version == CgroupVersion::V2 {
        eprintln!("cgroup v2 host: checking v2 files");
        assert!(base("", "kubepods/besteffort").is_dir());
        return;
    }
    // The tree exists, with kubepods limited to allocatable (no reservations: capacity).
    for rel in ["kubepods", "kubepods/burstable", "kubepods/besteffort"] {
        for ctrl in ["cpu", "memory", "cpuset", "pids"] {
            assert!(base(ctrl, rel).is_dir(), "{ctrl}/{rel}");
        }
    }
    let cpus = machine.topology.num_cpus() as u64;
    assert_eq!(
        read(base("cpu", "kubepods/cpu.shares")),
        (cpus * 1024).to_string()
    );
    let limit: u64 = read(base("memory", "kubepods/memory.limit_in_bytes"))
        .parse()
        .unwrap();
    // The kernel rounds down to the page size.
    assert_eq!(limit, machine.memory_capacity_bytes / 4096 * 4096);
    assert_eq!(read(base("cpu", "kubepods/besteffort/cpu.shares")), "2");
    // cpuset copied down so the runtime can start containers inside.
    assert_eq!(
        read(base("cpuset", "kubepods/cpuset.cpus")),
        read(Path::new(MOUNT).join("cpuset/cpuset.cpus"))
    );

    // Seed 004: a Burstable pod with limits 64Mi / 500m.
    let uid = "e2e00004-0000-4000-8000-000000000004";
    let burstable = pod(
        uid,
        serde_json::json!({"memory": "10Mi", "cpu": "250m"}),
        serde_json::json!({"memory": "64Mi", "cpu": "500m"}),
    );
    assert_eq!(kubelet_cm::pod_qos_class(&burstable), QosClass::Burstable);
    cm.ensure_pod_cgroup(&burstable).expect("pod cgroup");
    let rel = format!("kubepods/burstable/pod{uid}");
    assert_eq!(
        read(base("memory", &format!("{rel}/memory.limit_in_bytes"))),
        "67108864"
    );
    assert_eq!(
        read(base("cpu", &format!("{rel}/cpu.cfs_quota_us"))),
        "50000"
    );
    assert_eq!(
        read(base("cpu", &format!("{rel}/cpu.cfs_period_us"))),
        "100000"
    );
    assert_eq!(read(base("cpu", &format!("{rel}/cpu.shares"))), "256");
    assert_eq!(read(base("pids", &format!("{rel}/pids.max"))), "4096");
    assert!(!read(base("cpuset", &format!("{rel}/cpuset.cpus"))).is_empty());
    assert_eq!(
        cm.pod_cgroup_parent(&burstable),
        format!("/{}/{rel}", guard.root_name)
    );
    // Nothing was put in it.
    assert!(
        cm.cgroup_manager()
            .pids(&cm.pod_cgroup(&burstable))
            .unwrap()
            .is_empty()
    );

    // A Guaranteed pod sits directly under kubepods.
    let guid = "e2e0000g-0000-4000-8000-00000000000g";
    let g = pod(
        guid,
        serde_json::json!({"memory": "32Mi", "cpu": "100m"}),
        serde_json::json!({"memory": "32Mi", "cpu": "100m"}),
    );
    cm.ensure_pod_cgroup(&g).expect("guaranteed pod cgroup");
    assert_eq!(
        read(base(
            "memory",
            &format!("kubepods/pod{guid}/memory.limit_in_bytes")
        )),
        "33554432"
    );
    assert_eq!(
        read(base("cpu", &format!("kubepods/pod{guid}/cpu.cfs_quota_us"))),
        "10000"
    );

    // QoS reservations follow the active pods.
    cm.update_qos_cgroups(&[burstable.clone(), g.clone()])
        .expect("qos update");
    assert_eq!(read(base("cpu", "kubepods/burstable/cpu.shares")), "256");
    cm.update_qos_cgroups(std::slice::from_ref(&g))
        .expect("qos update");
    assert_eq!(read(base("cpu", "kubepods/burstable/cpu.shares")), "2");

    // Terminated pods' cgroups are removed.
    cm.destroy_pod_cgroup(&burstable).expect("destroy");
    cm.destroy_pod_cgroup(&g).expect("destroy");
    for ctrl in ["cpu", "memory", "cpuset", "pids"] {
        assert!(!base(ctrl, &rel).exists(), "{ctrl}/{rel} still there");
    }
    assert!(base("memory", "kubepods/burstable").is_dir());
}

#[test]
fn cgroup_manager_round_trip_and_errors_on_real_files() {
    let Some(()) = can_run() else { return };
    let guard = Guard::new("rt").expect("guard");
    let m = FsCgroupManager::new(MOUNT);
    // Reads back the v1 files (cpu.cfs_quota_us, memory.limit_in_bytes).
    let Some(_) = kubelet_testbed::require("cgroup v1", kubelet_testbed::cgroup_v1("memory"))
    else {
        return;
    };
    let name = guard.name().child("a").child("b");
    let cfg = ResourceConfig {
        cpu_shares: Some(512),
        cpu_quota: Some(25_000),
        cpu_period: Some(50_000),
        memory_limit: Some(128 << 20),
        pids_limit: Some(64),
        ..Default::default()
    };
    m.create(&name, &cfg).expect("create");
    assert_eq!(m.read_config(&name).expect("read back"), cfg);
    // Lift the limits.
    let open = ResourceConfig {
        cpu_quota: Some(-1),
        memory_limit: Some(-1),
        pids_limit: Some(-1),
        ..Default::default()
    };
    m.update(&name, &open).expect("update");
    let back = m.read_config(&name).unwrap();
    assert_eq!(back.cpu_quota, Some(-1));
    assert_eq!(back.pids_limit, Some(-1));
    assert!(
        back.memory_limit.unwrap() > 1 << 60,
        "unlimited memory reads back huge"
    );
    // The kernel refuses a quota below 1ms: the error names the file.
    let err = m
        .update(
            &name,
            &ResourceConfig {
                cpu_quota: Some(10),
                ..Default::default()
            },
        )
        .unwrap_err();
    assert!(err.to_string().contains("cpu.cfs_quota_us"), "{err}");
    m.destroy(&guard.name()).expect("destroy");
    assert!(!m.exists(&name));
}
