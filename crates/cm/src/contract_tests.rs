//! Table-driven tests of QoS, OOM score, shares/quota and container resources
//! against upstream's cases (`qos_test.go`, `policy_test.go`,
//! `helpers_linux_test.go`, `kuberuntime_container_linux_test.go`).

use kubelet_cri_client::api::HugepageLimit;
use serde_json::json;

use crate::testutil::{ctr, first, pod, seed004};
use crate::*;

const CPU_MEM_100: &[(&str, &str)] = &[("cpu", "100m"), ("memory", "100Mi")];

#[test]
fn seed_004_pod_exactly() {
    let p = seed004();
    assert_eq!(pod_qos_class(&p), QosClass::Burstable);
    assert_eq!(pod_qos_class(&p).as_str(), "Burstable");
    let name = pod_cgroup_name(&CgroupName::root(), &p);
    assert_eq!(
        name.parts(),
        [
            "kubepods",
            "burstable",
            "pod0f4c3a2e-1b2d-4c5e-9f00-aabbccddeeff"
        ]
    );
    assert_eq!(
        name.to_cgroupfs(),
        "/kubepods/burstable/pod0f4c3a2e-1b2d-4c5e-9f00-aabbccddeeff"
    );
    assert_eq!(
        name.to_systemd(),
        "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod0f4c3a2e_1b2d_4c5e_9f00_aabbccddeeff.slice"
    );
    let opts = ContainerResourceOptions {
        memory_capacity_bytes: 8_000_000_000,
        ..Default::default()
    };
    let lcr = container_linux_resources_with_hugepage_sizes(&p, first(&p), &opts, &[]);
    assert_eq!(lcr.memory_limit_in_bytes, 67_108_864);
    assert_eq!(lcr.cpu_quota, 50_000);
    assert_eq!(lcr.cpu_period, 100_000);
    assert_eq!(lcr.cpu_shares, 256);
    // 1000 - 1000 × 10485760 / 8e9 = 999 (integer division).
    assert_eq!(lcr.oom_score_adj, 999);
    assert!(lcr.unified.is_empty());

    let cfg = pod_resource_config(&p, true, 100_000);
    assert_eq!(
        cfg,
        ResourceConfig {
            cpu_shares: Some(256),
            cpu_quota: Some(50_000),
            cpu_period: Some(100_000),
            memory_limit: Some(67_108_864),
            pids_limit: None,
            hugepage_limits: Default::default(),
        }
    );
}

#[test]
fn qos_classes_as_upstream() {
    use QosClass::*;
    let none: &[(&str, &str)] = &[];
    let cases: Vec<(
        &str,
        Vec<serde_json::Value>,
        Vec<serde_json::Value>,
        QosClass,
    )> = vec![
        (
            "guaranteed",
            vec![ctr("a", CPU_MEM_100, CPU_MEM_100)],
            vec![],
            Guaranteed,
        ),
        (
            "guaranteed-guaranteed",
            vec![
                ctr("a", CPU_MEM_100, CPU_MEM_100),
                ctr("b", CPU_MEM_100, CPU_MEM_100),
            ],
            vec![],
            Guaranteed,
        ),
        (
            "guaranteed-guaranteed-different-sizes",
            vec![
                ctr("a", CPU_MEM_100, CPU_MEM_100),
                ctr(
                    "b",
                    &[("cpu", "1"), ("memory", "1Gi")],
                    &[("cpu", "1"), ("memory", "1Gi")],
                ),
            ],
            vec![],
            Guaranteed,
        ),
        (
            "best-effort",
            vec![ctr("a", none, none)],
            vec![],
            BestEffort,
        ),
        (
            "best-effort-best-effort",
            vec![ctr("a", none, none), ctr("b", none, none)],
            vec![],
            BestEffort,
        ),
        (
            "best-effort-burstable",
            vec![
                ctr("a", none, none),
                ctr(
                    "b",
                    &[("cpu", "1"), ("nvidia.com/gpu", "1")],
                    &[("nvidia.com/gpu", "1")],
                ),
            ],
            vec![],
            Burstable,
        ),
        (
            "best-effort-guaranteed",
            vec![ctr("a", none, none), ctr("b", CPU_MEM_100, CPU_MEM_100)],
            vec![],
            Burstable,
        ),
        (
            "burstable-cpu-guaranteed-memory",
            vec![ctr(
                "a",
                &[("cpu", "100m"), ("memory", "100Mi")],
                &[("memory", "100Mi")],
            )],
            vec![],
            Burstable,
        ),
        (
            "burstable-no-limits",
            vec![ctr("a", CPU_MEM_100, none)],
            vec![],
            Burstable,
        ),
        (
            "burstable-guaranteed",
            vec![
                ctr(
                    "a",
                    &[("cpu", "1"), ("memory", "100Mi")],
                    &[("cpu", "2"), ("memory", "100Mi")],
                ),
                ctr("b", CPU_MEM_100, CPU_MEM_100),
            ],
            vec![],
            Burstable,
        ),
        (
            "burstable-unbounded-but-requests-match-limits",
            vec![
                ctr("a", CPU_MEM_100, CPU_MEM_100),
                ctr("b", CPU_MEM_100, none),
            ],
            vec![],
            Burstable,
        ),
        (
            "burstable-1",
            vec![ctr(
                "a",
                &[("cpu", "10m"), ("memory", "10Mi")],
                &[("cpu", "10m")],
            )],
            vec![],
            Burstable,
        ),
        (
            "best-effort-hugepages",
            vec![ctr(
                "a",
                &[("hugepages-2Mi", "1Gi")],
                &[("hugepages-2Mi", "1Gi")],
            )],
            vec![],
            BestEffort,
        ),
        (
            "best-effort-zero-requests",
            vec![ctr("a", &[("cpu", "0"), ("memory", "0")], &[("cpu", "0")])],
            vec![],
            BestEffort,
        ),
        (
            "init-guaranteed-app-best-effort",
            vec![ctr("a", none, none)],
            vec![ctr("i", CPU_MEM_100, CPU_MEM_100)],
            Burstable,
        ),
        (
            "init-best-effort-app-guaranteed",
            vec![ctr("a", CPU_MEM_100, CPU_MEM_100)],
            vec![ctr("i", none, none)],
            Burstable,
        ),
        (
            "init-and-app-guaranteed",
            vec![ctr("a", CPU_MEM_100, CPU_MEM_100)],
            vec![ctr(
                "i",
                &[("cpu", "1"), ("memory", "1Gi")],
                &[("cpu", "1"), ("memory", "1Gi")],
            )],
            Guaranteed,
        ),
        (
            "equal-values-different-spellings",
            vec![ctr(
                "a",
                &[("cpu", "1"), ("memory", "1Gi")],
                &[("cpu", "1000m"), ("memory", "1073741824")],
            )],
            vec![],
            Guaranteed,
        ),
    ];
    for (name, containers, init, want) in cases {
        let p = pod("u", containers, init);
        assert_eq!(compute_pod_qos(&p), want, "{name}");
        assert_eq!(pod_qos_class(&p), want, "{name}");
    }
}

#[test]
fn status_qos_class_wins() {
    let mut p = seed004();
    p.status = Some(serde_json::from_value(json!({"qosClass": "Guaranteed"})).unwrap());
    assert_eq!(pod_qos_class(&p), QosClass::Guaranteed);
    assert_eq!(compute_pod_qos(&p), QosClass::Burstable);
}

#[test]
fn pod_level_resources_decide_qos() {
    let mut p = pod("u", vec![ctr("a", &[], &[])], vec![]);
    p.spec.as_mut().unwrap().resources = Some(
        serde_json::from_value(json!({"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"cpu": "1", "memory": "1Gi"}}))
            .unwrap(),
    );
    assert_eq!(pod_qos_class(&p), QosClass::Guaranteed);
}

#[test]
fn oom_score_adj_as_upstream() {
    let none: &[(&str, &str)] = &[];
    const STD: u64 = 8_000_000_000;
    let half = (STD / 2).to_string();
    let almost = (STD - 1).to_string();
    let cases: Vec<(&str, serde_json::Value, u64, i64)> = vec![
        (
            "cpuLimit",
            ctr("a", none, &[("cpu", "10")]),
            4_000_000_000,
            999,
        ),
        (
            "memoryLimitCPURequest",
            ctr("a", &[("cpu", "0")], &[("memory", "10G")]),
            STD,
            999,
        ),
        (
            "zeroMemoryLimit",
            ctr("a", none, &[("memory", "0")]),
            7_230_457_451,
            1000,
        ),
        ("noRequestLimit", ctr("a", none, none), 4_000_000_000, 1000),
        (
            "equalRequestLimitCPUMemory",
            ctr(
                "a",
                &[("memory", "10G"), ("cpu", "5m")],
                &[("cpu", "5m"), ("memory", "10G")],
            ),
            123_456_789,
            -997,
        ),
        (
            "cpuUnlimitedMemoryLimitedWithRequests",
            ctr(
                "a",
                &[("memory", &half), ("cpu", "5m")],
                &[("memory", "10G")],
            ),
            STD,
            500,
        ),
        (
            "requestNoLimit",
            ctr("a", &[("memory", &almost), ("cpu", "5m")], none),
            STD,
            3,
        ),
    ];
    for (name, c, cap, want) in cases {
        let p = pod("u", vec![c], vec![]);
        assert_eq!(container_oom_score_adj(&p, first(&p), cap), want, "{name}");
    }

    // Node-critical pods get -997 whatever their QoS.
    let mut critical = pod("u", vec![ctr("a", none, none)], vec![]);
    let spec = critical.spec.as_mut().unwrap();
    spec.priority = Some(qos::SYSTEM_CRITICAL_PRIORITY);
    spec.priority_class_name = Some("system-node-critical".into());
    assert_eq!(
        container_oom_score_adj(&critical, first(&critical), 4_000_000_000),
        -997
    );
    // Critical by priority but not node-critical: BestEffort's 1000.
    critical.spec.as_mut().unwrap().priority_class_name = Some("system-cluster-critical".into());
    assert_eq!(
        container_oom_score_adj(&critical, first(&critical), 4_000_000_000),
        1000
    );

    // A sidecar is protected like the smallest regular container.
    let mut sidecar = ctr("s", &[("cpu", "10m")], none);
    sidecar["restartPolicy"] = json!("Always");
    let p = pod(
        "u",
        vec![ctr("a", &[("memory", "1Gi")], none)],
        vec![sidecar],
    );
    let init = &p.spec.as_ref().unwrap().init_containers.as_ref().unwrap()[0];
    assert_eq!(container_oom_score_adj(&p, init, 4 << 30), 750);
    assert_eq!(container_oom_score_adj(&p, first(&p), 4 << 30), 750);
}

#[test]
fn shares_and_quota_tables() {
    // helpers_linux_test.go TestMilliCPUToQuota / shares.
    for (m, period, want) in [
        (0, 100_000, 0),
        (5, 100_000, 1000),
        (9, 100_000, 1000),
        (10, 100_000, 1000),
        (200, 100_000, 20_000),
        (500, 100_000, 50_000),
        (1000, 100_000, 100_000),
        (1500, 100_000, 150_000),
        (5, 50_000, 1000),
        (200, 50_000, 10_000),
        (1500, 50_000, 75_000),
        (1000, 1_000_000, 1_000_000),
    ] {
        assert_eq!(milli_cpu_to_quota(m, period), want, "quota({m}, {period})");
    }
    for (m, want) in [
        (0, 2),
        (1, 2),
        (2, 2),
        (3, 3),
        (10, 10),
        (100, 102),
        (250, 256),
        (1000, 1024),
        (2000, 2048),
        (256_000, 262_144),
        (300_000, 262_144),
        (i64::MAX, 262_144),
    ] {
        assert_eq!(milli_cpu_to_shares(m), want, "shares({m})");
    }
    assert_eq!(resources::cpu_shares_to_weight(2), 1);
    assert_eq!(resources::cpu_shares_to_weight(1024), 39);
    assert_eq!(resources::cpu_shares_to_weight(262_144), 10_000);
}

#[test]
fn pod_resource_config_table() {
    let none: &[(&str, &str)] = &[];
    let g = CPU_MEM_100;
    let cases: Vec<(&str, Vec<serde_json::Value>, bool, u64, ResourceConfig)> = vec![
        (
            "besteffort",
            vec![ctr("a", none, none)],
            true,
            100_000,
            ResourceConfig {
                cpu_shares: Some(2),
                ..Default::default()
            },
        ),
        (
            "burstable-no-limits",
            vec![ctr("a", g, none)],
            true,
            100_000,
            ResourceConfig {
                cpu_shares: Some(102),
                ..Default::default()
            },
        ),
        (
            "burstable-with-limits",
            vec![ctr("a", g, &[("cpu", "200m"), ("memory", "200Mi")])],
            true,
            100_000,
            ResourceConfig {
                cpu_shares: Some(102),
                cpu_quota: Some(20_000),
                cpu_period: Some(100_000),
                memory_limit: Some(209_715_200),
                ..Default::default()
            },
        ),
        (
            "burstable-with-limits-no-cpu-enforcement",
            vec![ctr("a", g, &[("cpu", "200m"), ("memory", "200Mi")])],
            false,
            100_000,
            ResourceConfig {
                cpu_shares: Some(102),
                cpu_quota: Some(-1),
                cpu_period: Some(100_000),
                memory_limit: Some(209_715_200),
                ..Default::default()
            },
        ),
        (
            "burstable-partial-limits",
            vec![
                ctr("a", g, &[("cpu", "200m"), ("memory", "200Mi")]),
                ctr("b", g, none),
            ],
            true,
            100_000,
            ResourceConfig {
                cpu_shares: Some(204),
                ..Default::default()
            },
        ),
        (
            "burstable-cpu-limits-only-on-all",
            vec![
                ctr("a", g, &[("cpu", "200m")]),
                ctr("b", g, &[("cpu", "300m")]),
            ],
            true,
            100_000,
            ResourceConfig {
                cpu_shares: Some(204),
                cpu_quota: Some(50_000),
                cpu_period: Some(100_000),
                ..Default::default()
            },
        ),
        (
            "guaranteed",
            vec![ctr("a", g, g)],
            true,
            100_000,
            ResourceConfig {
                cpu_shares: Some(102),
                cpu_quota: Some(10_000),
                cpu_period: Some(100_000),
                memory_limit: Some(104_857_600),
                ..Default::default()
            },
        ),
        (
            "guaranteed-no-cpu-enforcement",
            vec![ctr("a", g, g)],
            false,
            100_000,
            ResourceConfig {
                cpu_shares: Some(102),
                cpu_quota: Some(-1),
                cpu_period: Some(100_000),
                memory_limit: Some(104_857_600),
                ..Default::default()
            },
        ),
        (
            "guaranteed-with-60ms-period",
            vec![ctr("a", g, g)],
            true,
            60_000,
            ResourceConfig {
                cpu_shares: Some(102),
                cpu_quota: Some(6000),
                cpu_period: Some(60_000),
                memory_limit: Some(104_857_600),
                ..Default::default()
            },
        ),
        (
            "guaranteed-hugepages",
            vec![ctr(
                "a",
                &[
                    ("cpu", "100m"),
                    ("memory", "100Mi"),
                    ("hugepages-2Mi", "4Mi"),
                ],
                &[
                    ("cpu", "100m"),
                    ("memory", "100Mi"),
                    ("hugepages-2Mi", "4Mi"),
                ],
            )],
            true,
            100_000,
            ResourceConfig {
                cpu_shares: Some(102),
                cpu_quota: Some(10_000),
                cpu_period: Some(100_000),
                memory_limit: Some(104_857_600),
                hugepage_limits: [("2MB".to_owned(), 4_194_304)].into(),
                ..Default::default()
            },
        ),
    ];
    for (name, containers, enforce, period, want) in cases {
        let p = pod("u", containers, vec![]);
        assert_eq!(pod_resource_config(&p, enforce, period), want, "{name}");
    }
}

#[test]
fn init_containers_and_overhead_in_pod_sums() {
    // Init container larger than the app: its request wins (max, not sum).
    let p = pod(
        "u",
        vec![ctr("a", &[("cpu", "100m")], &[])],
        vec![ctr("i", &[("cpu", "500m")], &[])],
    );
    assert_eq!(pod_resource_config(&p, true, 100_000).cpu_shares, Some(512));
    // A sidecar adds to the app containers; a later init container runs beside it.
    let mut sidecar = ctr("s", &[("cpu", "200m")], &[]);
    sidecar["restartPolicy"] = json!("Always");
    let p = pod(
        "u",
        vec![ctr("a", &[("cpu", "100m")], &[])],
        vec![sidecar, ctr("i", &[("cpu", "250m")], &[])],
    );
    // max(100 + 200, 250 + 200) = 450m → 460 shares.
    assert_eq!(pod_resource_config(&p, true, 100_000).cpu_shares, Some(460));
    // Overhead adds to requests, and to limits only where set.
    let mut p = pod("u", vec![ctr("a", CPU_MEM_100, CPU_MEM_100)], vec![]);
    p.spec.as_mut().unwrap().overhead =
        Some(serde_json::from_value(json!({"cpu": "250m", "memory": "120Mi"})).unwrap());
    let cfg = pod_resource_config(&p, true, 100_000);
    assert_eq!(cfg.cpu_shares, Some(358));
    assert_eq!(cfg.cpu_quota, Some(35_000));
    assert_eq!(cfg.memory_limit, Some(220 * 1024 * 1024));
}

#[test]
fn container_resources_table() {
    let none: &[(&str, &str)] = &[];
    let opts = ContainerResourceOptions {
        memory_capacity_bytes: 4 << 30,
        ..Default::default()
    };
    // (name, container, shares, quota, period, memory)
    let cases: Vec<(&str, serde_json::Value, i64, i64, i64, i64)> = vec![
        (
            "requests-and-limits",
            ctr("a", &[("cpu", "1")], &[("cpu", "2"), ("memory", "128Mi")]),
            1024,
            200_000,
            100_000,
            134_217_728,
        ),
        (
            "limit-only-shares-from-limit",
            ctr("a", none, &[("cpu", "2")]),
            2048,
            200_000,
            100_000,
            0,
        ),
        (
            "explicit-zero-request",
            ctr("a", &[("cpu", "0")], &[("cpu", "2")]),
            2,
            200_000,
            100_000,
            0,
        ),
        ("nothing", ctr("a", none, none), 2, 0, 100_000, 0),
        (
            "tiny-limit",
            ctr("a", &[("cpu", "1m")], &[("cpu", "1m")]),
            2,
            1000,
            100_000,
            0,
        ),
    ];
    for (name, c, shares, quota, period, memory) in cases {
        let p = pod("u", vec![c], vec![]);
        let lcr = container_linux_resources_with_hugepage_sizes(&p, first(&p), &opts, &[]);
        assert_eq!(
            (
                lcr.cpu_shares,
                lcr.cpu_quota,
                lcr.cpu_period,
                lcr.memory_limit_in_bytes
            ),
            (shares, quota, period, memory),
            "{name}"
        );
    }
    // cpuCFSQuota off: no quota or period at all.
    let p = pod(
        "u",
        vec![ctr("a", &[("cpu", "1")], &[("cpu", "2")])],
        vec![],
    );
    let off = ContainerResourceOptions {
        cpu_cfs_quota: false,
        ..opts.clone()
    };
    let lcr = container_linux_resources_with_hugepage_sizes(&p, first(&p), &off, &[]);
    assert_eq!((lcr.cpu_quota, lcr.cpu_period), (0, 0));
    // A custom period.
    let custom = ContainerResourceOptions {
        cpu_cfs_quota_period_us: 50_000,
        ..opts.clone()
    };
    let lcr = container_linux_resources_with_hugepage_sizes(&p, first(&p), &custom, &[]);
    assert_eq!((lcr.cpu_quota, lcr.cpu_period), (100_000, 50_000));
    // cgroup v2: memory.oom.group.
    let v2 = ContainerResourceOptions {
        cgroup_v2: true,
        ..opts.clone()
    };
    let lcr = container_linux_resources_with_hugepage_sizes(&p, first(&p), &v2, &[]);
    assert_eq!(
        lcr.unified.get("memory.oom.group").map(String::as_str),
        Some("1")
    );
    // Huge pages: 0 for each host size unless limited.
    let p = pod(
        "u",
        vec![ctr(
            "a",
            &[("hugepages-2Mi", "4Mi")],
            &[("hugepages-2Mi", "4Mi")],
        )],
        vec![],
    );
    let sizes = ["2MB".to_owned(), "1GB".to_owned()];
    let lcr = container_linux_resources_with_hugepage_sizes(&p, first(&p), &opts, &sizes);
    assert_eq!(
        lcr.hugepage_limits,
        vec![
            HugepageLimit {
                page_size: "2MB".into(),
                limit: 4_194_304
            },
            HugepageLimit {
                page_size: "1GB".into(),
                limit: 0
            },
        ]
    );
}

#[test]
fn pod_cgroup_names_per_qos() {
    let g = pod("abc-1", vec![ctr("a", CPU_MEM_100, CPU_MEM_100)], vec![]);
    let be = pod("abc-2", vec![ctr("a", &[], &[])], vec![]);
    let root = CgroupName::root();
    assert_eq!(
        pod_cgroup_name(&root, &g).to_cgroupfs(),
        "/kubepods/podabc-1"
    );
    assert_eq!(
        pod_cgroup_name(&root, &be).to_cgroupfs(),
        "/kubepods/besteffort/podabc-2"
    );
    assert_eq!(
        pod_cgroup_name(&root, &be).to_systemd(),
        "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-podabc_2.slice"
    );
    let custom = CgroupName::new(["kubelet-test"]);
    assert_eq!(
        pod_cgroup_name(&custom, &g).to_cgroupfs(),
        "/kubelet-test/kubepods/podabc-1"
    );
}

#[test]
fn hugepage_names_and_sizes() {
    assert_eq!(resources::hugepage_unit_size(2 * 1024 * 1024), "2MB");
    assert_eq!(resources::hugepage_unit_size(1 << 30), "1GB");
    assert_eq!(resources::hugepage_unit_size(64 * 1024), "64KB");
    assert_eq!(resources::hugepage_unit_size(1000), "1000B");
    assert_eq!(
        resources::hugepage_size_of_resource("hugepages-1Gi").as_deref(),
        Some("1GB")
    );
    assert_eq!(resources::hugepage_size_of_resource("hugepages-bad"), None);
    assert_eq!(resources::hugepage_size_of_resource("memory"), None);
    let dir = tempfile::tempdir().unwrap();
    for d in ["hugepages-1048576kB", "hugepages-2048kB", "junk"] {
        std::fs::create_dir_all(dir.path().join("kernel/mm/hugepages").join(d)).unwrap();
    }
    assert_eq!(resources::hugepage_sizes_from(dir.path()), ["2MB", "1GB"]);
}

#[test]
fn invalid_quantities_are_reported_not_panicked() {
    let p = pod(
        "u",
        vec![ctr("a", &[("cpu", "lots")], &[("memory", "64Mi")])],
        vec![],
    );
    assert!(matches!(
        validate_pod_resources(&p),
        Err(Error::InvalidQuantity { .. })
    ));
    // The computing functions treat it as zero.
    assert_eq!(pod_resource_config(&p, true, 100_000).cpu_shares, Some(2));
    assert!(validate_pod_resources(&seed004()).is_ok());
}
