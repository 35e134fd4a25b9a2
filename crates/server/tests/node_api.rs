//! The node API over real HTTP: every route, the refusals, and shutdown.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::*;
use http_body_util::BodyExt;
use hyper::Method;
use k8s_openapi::List;
use k8s_openapi::api::core::v1::Pod;
use kubelet_container::stats::{
    ContainerStats, CpuStats, FsStats, MemoryStats, NodeStats, PodReference, PodStats,
    ProcessStats, RlimitStats, RuntimeStats, SYSTEM_CONTAINER_PODS,
};
use kubelet_server::{
    ContainerLog, ContainerStateLabel, Error, LogLookup, Metrics, PodWorkerOperation, Server,
    ServerConfig, StreamLookup, StreamOptions, StreamRequest, Summary,
};

const GUARD: Duration = Duration::from_secs(20);

#[tokio::test]
async fn pods_is_a_v1_podlist_that_k8s_openapi_parses() {
    let host = FakeHost::default();
    *host.pods.lock().unwrap() = vec![pod("default", "web", 2), pod("kube-system", "dns", 1)];
    let s = start(host).await;
    let r = get(s.addr, "/pods").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.headers["content-type"], "application/json");
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["kind"], "PodList");
    assert_eq!(v["apiVersion"], "v1");
    assert_eq!(v["metadata"], serde_json::json!({}));
    let list: List<Pod> = serde_json::from_slice(&r.body).unwrap();
    let names: Vec<_> = list
        .items
        .iter()
        .map(|p| p.metadata.name.clone().unwrap_or_default())
        .collect();
    assert_eq!(names, ["web", "dns"]);
    let status = list.items[0].status.as_ref().unwrap();
    assert_eq!(status.phase.as_deref(), Some("Running"));
    assert_eq!(status.container_statuses.as_ref().unwrap().len(), 2);

    // HEAD answers like GET without a body.
    let h = request(s.addr, Method::HEAD, "/pods").await;
    assert_eq!(h.status, 200);
    assert!(h.body.is_empty());

    // No pods: an empty list, still parseable.
    s.host.pods.lock().unwrap().clear();
    let r = get(s.addr, "/pods").await;
    let list: List<Pod> = serde_json::from_slice(&r.body).unwrap();
    assert!(list.items.is_empty());
}

/// One sample: name, labels, value.
type Sample = (String, BTreeMap<String, String>, f64);

/// Checks the Prometheus text format line by line and returns the TYPE of
/// each family and every sample's name and labels.
fn parse_prometheus(text: &str) -> (BTreeMap<String, String>, Vec<Sample>) {
    let mut types = BTreeMap::new();
    let mut samples = Vec::new();
    for line in text.lines() {
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, ty) = rest.split_once(' ').expect("TYPE line");
            assert!(
                ["counter", "gauge", "histogram", "summary", "untyped"].contains(&ty),
                "bad type in {line:?}"
            );
            types.insert(name.to_string(), ty.to_string());
            continue;
        }
        if line.starts_with("# HELP ") {
            continue;
        }
        assert!(!line.starts_with('#'), "unexpected comment {line:?}");
        let (series, value) = line.rsplit_once(' ').expect("sample has a value");
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v
                .parse()
                .unwrap_or_else(|_| panic!("bad value in {line:?}")),
        };
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => {
                let body = rest
                    .strip_suffix('}')
                    .unwrap_or_else(|| panic!("unclosed labels in {line:?}"));
                let mut labels = BTreeMap::new();
                for pair in body.split("\",").filter(|p| !p.is_empty()) {
                    let (k, v) = pair
                        .split_once("=\"")
                        .unwrap_or_else(|| panic!("bad label in {line:?}"));
                    labels.insert(k.to_string(), v.trim_end_matches('"').to_string());
                }
                (name, labels)
            }
            None => (series, BTreeMap::new()),
        };
        assert!(
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad metric name in {line:?}"
        );
        samples.push((name.to_string(), labels, value));
    }
    (types, samples)
}

#[tokio::test]
async fn metrics_are_prometheus_text_with_upstream_names() {
    let s = start(FakeHost::default()).await;
    let m = &s.metrics;
    m.set_running_pods(2);
    m.set_running_containers(ContainerStateLabel::Running, 3);
    m.observe_pod_start_duration(4.2);
    m.observe_pod_worker_duration(PodWorkerOperation::Create, 0.3);
    m.observe_pleg_relist_duration(0.01);
    m.observe_pleg_relist_interval(1.0);
    m.observe_runtime_operation("list_containers", 0.002, false);
    m.observe_runtime_operation("run_podsandbox", 0.5, true);
    m.inc_evictions("memory.available");

    // Requests to unknown paths and methods must not become labels.
    assert_eq!(get(s.addr, "/no/such/path-123").await.status, 404);
    let brew = Method::from_bytes(b"BREW").unwrap();
    assert_eq!(request(s.addr, brew, "/pods").await.status, 405);

    let r = get(s.addr, "/metrics").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.headers["content-type"], "text/plain; version=0.0.4");
    let text = r.text();
    let (types, samples) = parse_prometheus(&text);
    let expected = [
        ("kubelet_running_pods", "gauge"),
        ("kubelet_running_containers", "gauge"),
        ("kubelet_pod_start_duration_seconds", "histogram"),
        ("kubelet_pod_worker_duration_seconds", "histogram"),
        ("kubelet_pleg_relist_duration_seconds", "histogram"),
        ("kubelet_pleg_relist_interval_seconds", "histogram"),
        ("kubelet_runtime_operations_total", "counter"),
        ("kubelet_runtime_operations_duration_seconds", "histogram"),
        ("kubelet_runtime_operations_errors_total", "counter"),
        ("kubelet_evictions", "counter"),
        ("kubelet_http_requests_total", "counter"),
        ("process_resident_memory_bytes", "gauge"),
        ("process_cpu_seconds_total", "counter"),
        ("process_start_time_seconds", "gauge"),
        ("process_open_fds", "gauge"),
    ];
    for (name, ty) in expected {
        assert_eq!(
            types.get(name).map(String::as_str),
            Some(ty),
            "TYPE of {name}"
        );
        let base_ok = |n: &str| {
            n == name
                || (ty == "histogram"
                    && [
                        format!("{name}_bucket"),
                        format!("{name}_sum"),
                        format!("{name}_count"),
                    ]
                    .iter()
                    .any(|x| x == n))
        };
        assert!(
            samples.iter().any(|(n, _, _)| base_ok(n)),
            "no sample of {name}"
        );
    }
    let value = |name: &str, label: Option<(&str, &str)>| {
        samples
            .iter()
            .find(|(n, l, _)| {
                n == name && label.is_none_or(|(k, v)| l.get(k).map(String::as_str) == Some(v))
            })
            .map(|(_, _, v)| *v)
    };
    assert_eq!(value("kubelet_running_pods", None), Some(2.0));
    assert_eq!(
        value(
            "kubelet_running_containers",
            Some(("container_state", "running"))
        ),
        Some(3.0)
    );
    assert_eq!(
        value(
            "kubelet_pod_worker_duration_seconds_count",
            Some(("operation_type", "create"))
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            "kubelet_runtime_operations_errors_total",
            Some(("operation_type", "run_podsandbox"))
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            "kubelet_runtime_operations_total",
            Some(("operation_type", "list_containers"))
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            "kubelet_evictions",
            Some(("eviction_signal", "memory.available"))
        ),
        Some(1.0)
    );
    assert!(value("process_resident_memory_bytes", None).unwrap() > 0.0);

    // Upstream's pod start buckets end at 3600 then +Inf (26 bounds).
    let les: Vec<_> = samples
        .iter()
        .filter(|(n, _, _)| n == "kubelet_pod_start_duration_seconds_bucket")
        .map(|(_, l, _)| l["le"].clone())
        .collect();
    assert_eq!(les.len(), 26);
    assert_eq!(les[0], "0.5");
    assert_eq!(les[24], "3600");
    // DefBuckets on the pod worker histogram: 11 bounds + Inf.
    let worker = samples
        .iter()
        .filter(|(n, l, _)| {
            n == "kubelet_pod_worker_duration_seconds_bucket" && l["operation_type"] == "create"
        })
        .count();
    assert_eq!(worker, 12);

    // HTTP request labels come only from the route table.
    let paths: BTreeSet<_> = samples
        .iter()
        .filter(|(n, _, _)| n == "kubelet_http_requests_total")
        .map(|(_, l, _)| l["path"].clone())
        .collect();
    let allowed: BTreeSet<_> = kubelet_server::ROUTES
        .iter()
        .map(|r| r.name.to_string())
        .chain(["other".to_string()])
        .collect();
    assert!(paths.is_subset(&allowed), "{paths:?}");
    assert!(paths.contains("other"));
    assert!(paths.contains("pods"));
    let methods: BTreeSet<_> = samples
        .iter()
        .filter(|(n, _, _)| n == "kubelet_http_requests_total")
        .map(|(_, l, _)| l["method"].clone())
        .collect();
    assert!(methods.contains("other"));
    assert!(!text.contains("BREW"));
    assert!(!text.contains("path-123"));
}

#[tokio::test]
async fn healthz_follows_the_sync_loop() {
    let host = Arc::new(FakeHost::default());
    let s = start_with(host.clone(), |c| {
        c.sync_loop_threshold(Duration::from_secs(60))
    })
    .await;

    // Never synced counts as healthy, as upstream's zero time.
    let r = get(s.addr, "/healthz").await;
    assert_eq!((r.status, r.text().as_str()), (200, "ok"));

    *host.last_sync.lock().unwrap() = Some(Instant::now());
    assert_eq!(get(s.addr, "/healthz").await.text(), "ok");
    let r = get(s.addr, "/healthz?verbose").await;
    assert_eq!(
        r.text(),
        "[+]ping ok\n[+]log ok\n[+]syncloop ok\n[+]pleg ok\nhealthz check passed\n"
    );

    *host.last_sync.lock().unwrap() = Instant::now().checked_sub(Duration::from_secs(120));
    let r = get(s.addr, "/healthz").await;
    assert_eq!(r.status, 500);
    assert_eq!(
        r.text(),
        "[+]ping ok\n[+]log ok\n[-]syncloop failed: reason withheld\n[+]pleg ok\nhealthz check failed\n"
    );
    let r = get(s.addr, "/healthz/syncloop").await;
    assert_eq!(r.status, 500);
    assert!(r.text().contains("sync Loop took longer than expected"));
    let r = get(s.addr, "/healthz/ping").await;
    assert_eq!((r.status, r.text().as_str()), (200, "ok"));
    assert_eq!(get(s.addr, "/healthz/log").await.status, 200);
    assert_eq!(get(s.addr, "/healthz/nope").await.status, 404);
    assert_eq!(get(s.addr, "/healthz?exclude=syncloop").await.status, 200);
}

#[tokio::test]
async fn configz_and_stats_summary() {
    let host = FakeHost::default();
    *host.summary.lock().unwrap() = Some(Summary {
        node: NodeStats {
            node_name: "node-1".into(),
            cpu: Some(CpuStats {
                usage_nano_cores: Some(1000),
                ..CpuStats::default()
            }),
            fs: Some(FsStats {
                capacity_bytes: Some(10),
                ..FsStats::default()
            }),
            system_containers: vec![ContainerStats {
                name: SYSTEM_CONTAINER_PODS.into(),
                memory: Some(MemoryStats {
                    available_bytes: Some(5),
                    ..MemoryStats::default()
                }),
                ..ContainerStats::default()
            }],
            runtime: Some(RuntimeStats {
                image_fs: Some(FsStats {
                    inodes_free: Some(3),
                    ..FsStats::default()
                }),
                container_fs: None,
            }),
            rlimit: Some(RlimitStats {
                time: kubelet_container::stats::from_system_time(
                    std::time::UNIX_EPOCH + Duration::from_secs(1_500_000_000),
                ),
                max_pid: Some(4096),
                num_of_running_processes: Some(12),
            }),
            ..NodeStats::default()
        },
        pods: vec![PodStats {
            pod_ref: PodReference {
                name: "web".into(),
                namespace: "default".into(),
                uid: "u1".into(),
            },
            ephemeral_storage: Some(FsStats {
                used_bytes: Some(7),
                ..FsStats::default()
            }),
            process_stats: Some(ProcessStats {
                process_count: Some(2),
            }),
            ..PodStats::default()
        }],
    });
    let s = start(host).await;
    let r = get(s.addr, "/configz").await;
    assert_eq!(r.status, 200);
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["kubeletconfig"]["syncFrequency"], "1m0s");

    let r = get(s.addr, "/stats/summary").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.headers["content-type"], "application/json");
    let summary: Summary = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(summary.node.node_name, "node-1");
    assert_eq!(summary.pods[0].pod_ref.uid, "u1");
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["node"]["cpu"]["usageNanoCores"], 1000);
    assert_eq!(v["node"]["fs"]["capacityBytes"], 10);
    // upstream stats/v1alpha1 JSON names
    assert_eq!(v["node"]["systemContainers"][0]["name"], "pods");
    assert_eq!(
        v["node"]["systemContainers"][0]["memory"]["availableBytes"],
        5
    );
    assert_eq!(v["node"]["runtime"]["imageFs"]["inodesFree"], 3);
    assert_eq!(v["node"]["rlimit"]["maxpid"], 4096);
    assert_eq!(v["node"]["rlimit"]["curproc"], 12);
    assert_eq!(v["node"]["rlimit"]["time"], "2017-07-14T02:40:00Z");
    assert_eq!(v["node"]["startTime"], serde_json::Value::Null);
    assert_eq!(v["pods"][0]["podRef"]["namespace"], "default");
    assert_eq!(v["pods"][0]["ephemeral-storage"]["usedBytes"], 7);
    assert_eq!(v["pods"][0]["process_stats"]["process_count"], 2);

    let r = get(s.addr, "/stats/summary?only_cpu_and_memory=true").await;
    let summary: Summary = serde_json::from_slice(&r.body).unwrap();
    assert!(summary.node.fs.is_none());
    assert!(summary.node.cpu.is_some());
    assert!(summary.node.runtime.is_none() && summary.node.rlimit.is_none());
    assert!(
        summary
            .node
            .system_container(SYSTEM_CONTAINER_PODS)
            .is_some_and(|c| c.memory.is_some()),
        "system containers keep their memory"
    );
    assert!(summary.pods[0].ephemeral_storage.is_none());
    assert_eq!(
        request(s.addr, Method::POST, "/stats/summary").await.status,
        200
    );

    s.host.summary.lock().unwrap().take();
    let r = get(s.addr, "/stats/summary").await;
    assert_eq!(r.status, 500);
    assert_eq!(r.text(), "Internal Error: no stats");
}

#[tokio::test]
async fn unknown_paths_and_methods_are_refused() {
    let s = start(FakeHost::default()).await;
    assert_eq!(get(s.addr, "/nope").await.status, 404);
    assert_eq!(get(s.addr, "/").await.status, 404);
    let r = request(s.addr, Method::POST, "/pods").await;
    assert_eq!(r.status, 405);
    assert_eq!(r.headers["allow"], "GET, HEAD");
    assert_eq!(
        request(s.addr, Method::DELETE, "/healthz").await.status,
        405
    );
    assert_eq!(
        request(s.addr, Method::PUT, "/containerLogs/a/b/c")
            .await
            .status,
        405
    );
    for path in [
        "/logs/",
        "/logs/syslog",
        "/debug/pprof/",
        "/debug/flags/v",
        "/checkpoint/default/web/c0",
        "/runningpods/",
        "/metrics/cadvisor",
    ] {
        for m in [Method::GET, Method::POST] {
            assert_eq!(
                request(s.addr, m.clone(), path).await.status,
                404,
                "{m} {path}"
            );
        }
    }
}

fn cri_log(path: &Path, lines: &[&str]) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    for l in lines {
        writeln!(f, "{l}").unwrap();
    }
}

fn log_host(dir: &Path) -> FakeHost {
    let ctr_dir = dir.join("default_web_uid1").join("app");
    std::fs::create_dir_all(&ctr_dir).unwrap();
    let path = ctr_dir.join("0.log");
    cri_log(
        &path,
        &[
            "2025-01-01T00:00:00.000000001Z stdout F hello",
            "2025-01-01T00:00:01.5Z stderr P wor",
            "2025-01-01T00:00:01.6Z stderr F ld",
            "2025-01-01T00:00:02Z stdout F bye",
        ],
    );
    let host = FakeHost::default();
    let mut logs = host.logs.lock().unwrap();
    logs.insert(
        ("default".into(), "web".into(), "app".into()),
        LogLookup::Found(ContainerLog {
            path: path.clone(),
            container_id: Some("abc".into()),
        }),
    );
    logs.insert(
        ("default".into(), "web".into(), "nosuch".into()),
        LogLookup::ContainerNotFound,
    );
    // A log path the host believes in, but which is a symlink to a host file.
    let secret = dir.join("secret");
    std::fs::write(&secret, "2025-01-01T00:00:00Z stdout F root:x:0:0\n").unwrap();
    let evil_dir = dir.join("default_evil_uid2").join("app");
    std::fs::create_dir_all(&evil_dir).unwrap();
    std::os::unix::fs::symlink(&secret, evil_dir.join("0.log")).unwrap();
    logs.insert(
        ("default".into(), "evil".into(), "app".into()),
        LogLookup::Found(ContainerLog {
            path: evil_dir.join("0.log"),
            container_id: None,
        }),
    );
    // The container directory itself swapped for a symlink.
    std::os::unix::fs::symlink(
        dir.join("default_web_uid1").join("app"),
        dir.join("ctrlink"),
    )
    .unwrap();
    logs.insert(
        ("default".into(), "evil2".into(), "app".into()),
        LogLookup::Found(ContainerLog {
            path: dir.join("ctrlink").join("0.log"),
            container_id: None,
        }),
    );
    drop(logs);
    host
}

#[tokio::test]
async fn container_logs_serve_cri_files_with_upstream_options() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(log_host(dir.path())).await;
    let base = "/containerLogs/default/web/app";

    let r = get(s.addr, base).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "hello\nworld\nbye\n");

    assert_eq!(
        get(s.addr, &format!("{base}?tailLines=1")).await.text(),
        "bye\n"
    );
    assert_eq!(
        get(s.addr, &format!("{base}?tailLines=2")).await.text(),
        "ld\nbye\n"
    );
    assert_eq!(
        get(s.addr, &format!("{base}?tail=all")).await.text(),
        "hello\nworld\nbye\n"
    );
    assert_eq!(
        get(s.addr, &format!("{base}?limitBytes=8")).await.text(),
        "hello\nwo"
    );
    assert_eq!(
        get(s.addr, &format!("{base}?stream=Stdout")).await.text(),
        "hello\nbye\n"
    );
    assert_eq!(
        get(s.addr, &format!("{base}?sinceTime=2025-01-01T00:00:01Z"))
            .await
            .text(),
        "world\nbye\n"
    );
    assert_eq!(
        get(s.addr, &format!("{base}?timestamps=true&tailLines=1"))
            .await
            .text(),
        "2025-01-01T00:00:02.000000000Z bye\n"
    );
    assert_eq!(
        get(s.addr, &format!("{base}?timestamps=true&limitBytes=40"))
            .await
            .text(),
        "2025-01-01T00:00:00.000000001Z hello\n202"
    );
    // sinceSeconds is relative to now: everything in the file is older.
    assert_eq!(
        get(s.addr, &format!("{base}?sinceSeconds=60")).await.text(),
        ""
    );

    // Query errors: 400 for what does not decode, 422 for invalid options.
    assert_eq!(
        get(s.addr, &format!("{base}?tailLines=ten")).await.status,
        400
    );
    assert_eq!(
        get(s.addr, &format!("{base}?follow=maybe")).await.status,
        400
    );
    assert_eq!(
        get(s.addr, &format!("{base}?tailLines=-1")).await.status,
        422
    );
    assert_eq!(
        get(s.addr, &format!("{base}?limitBytes=0")).await.status,
        422
    );

    // What the host says.
    let r = get(s.addr, "/containerLogs/default/gone/app").await;
    assert_eq!(
        (r.status, r.text().as_str()),
        (404, "pod \"gone\" does not exist")
    );
    assert_eq!(
        get(s.addr, "/containerLogs/default/web/nosuch")
            .await
            .status,
        404
    );
    let r = get(s.addr, &format!("{base}?previous=true")).await;
    assert_eq!(r.status, 400);
    assert!(r.text().contains("previous terminated container"));

    // HEAD: headers only.
    let r = request(s.addr, Method::HEAD, base).await;
    assert_eq!(r.status, 200);
    assert!(r.body.is_empty());
}

#[tokio::test]
async fn container_logs_refuse_traversal_and_symlinks() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(log_host(dir.path())).await;
    let before = s.host.log_lookups.load(Ordering::SeqCst);
    for path in [
        "/containerLogs/default/../app",
        "/containerLogs/default/%2E%2E/app",
        "/containerLogs/default/web/..",
        "/containerLogs/..%2F..%2Fetc/web/app",
        "/containerLogs/default/a%2Fb/app",
        "/containerLogs/default/web/a%00b",
        "/containerLogs/default//app",
        "/containerLogs/default/web/%FF",
    ] {
        let r = get(s.addr, path).await;
        assert_eq!(r.status, 400, "{path}: {}", r.text());
    }
    assert_eq!(
        s.host.log_lookups.load(Ordering::SeqCst),
        before,
        "the host was asked about an unsafe name"
    );

    let r = get(s.addr, "/containerLogs/default/evil/app").await;
    assert_eq!(r.status, 400);
    assert!(r.text().contains("symlinks are refused"), "{}", r.text());
    assert!(!r.text().contains("root:x"));
    let r = get(s.addr, "/containerLogs/default/evil2/app").await;
    assert_eq!(r.status, 400);
    assert!(!r.text().contains("hello"));
}

/// Reads body frames until `want` shows up in what was received.
async fn read_until(body: &mut hyper::body::Incoming, got: &mut String, want: &str) {
    tokio::time::timeout(GUARD, async {
        while !got.contains(want) {
            let frame = body.frame().await.expect("body ended early").unwrap();
            if let Ok(data) = frame.into_data() {
                got.push_str(&String::from_utf8_lossy(&data));
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("never received {want:?}; got {got:?}"));
}

#[tokio::test]
async fn follow_streams_new_lines_until_the_container_stops() {
    let dir = tempfile::tempdir().unwrap();
    let host = Arc::new(log_host(dir.path()));
    let s = start_with(host.clone(), |c| {
        c.log_poll_interval(Duration::from_millis(20))
    })
    .await;
    let path = dir.path().join("default_web_uid1/app/0.log");

    let mut c = Client::connect(s.addr).await;
    let resp = c
        .send(
            Method::GET,
            "/containerLogs/default/web/app?follow=true&tailLines=1",
        )
        .await;
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let mut got = String::new();
    read_until(&mut body, &mut got, "bye\n").await;
    assert_eq!(got, "bye\n");

    // A line written in two pieces: the partial piece waits for its end.
    cri_log(&path, &["2025-01-01T00:00:03Z stdout P new "]);
    std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap()
        .write_all(b"2025-01-01T00:00:03Z stdout F li")
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap()
        .write_all(b"ne\n")
        .unwrap();
    read_until(&mut body, &mut got, "new line\n").await;
    assert_eq!(got, "bye\nnew line\n");

    // The container stops: what is left is sent, then the stream ends.
    cri_log(&path, &["2025-01-01T00:00:04Z stdout F last words"]);
    host.stopped.store(true, Ordering::SeqCst);
    let rest = tokio::time::timeout(GUARD, body.collect())
        .await
        .expect("the stream did not end after the container stopped")
        .unwrap()
        .to_bytes();
    got.push_str(&String::from_utf8_lossy(&rest));
    assert_eq!(got, "bye\nnew line\nlast words\n");
}

#[tokio::test]
async fn follow_ends_at_disconnect_and_shutdown_ends_followers() {
    let dir = tempfile::tempdir().unwrap();
    let host = Arc::new(log_host(dir.path()));
    let s = start_with(host.clone(), |c| {
        c.log_poll_interval(Duration::from_millis(20))
            .max_log_streams(1)
    })
    .await;
    let url = "/containerLogs/default/web/app?follow=true";

    // The only stream slot is taken, then freed when the client goes away.
    let mut c1 = Client::connect(s.addr).await;
    let resp = c1.send(Method::GET, url).await;
    let mut body = resp.into_body();
    let mut got = String::new();
    read_until(&mut body, &mut got, "bye\n").await;
    assert_eq!(get(s.addr, url).await.status, 503);
    drop(body);
    drop(c1);
    let freed = tokio::time::timeout(GUARD, async {
        loop {
            let mut c = Client::connect(s.addr).await;
            let resp = c.send(Method::GET, url).await;
            if resp.status() == 200 {
                return (c, resp);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the follower of a disconnected client kept its slot");
    let (_c2, resp) = freed;
    let mut body = resp.into_body();
    let mut got = String::new();
    read_until(&mut body, &mut got, "bye\n").await;

    // Shutdown ends the follower, so serve() returns.
    s.stop.cancel();
    let rest = tokio::time::timeout(GUARD, body.collect())
        .await
        .expect("shutdown did not end the log stream");
    assert!(rest.is_ok());
    let served = tokio::time::timeout(GUARD, s.join)
        .await
        .expect("serve() did not return");
    assert!(served.unwrap().is_ok());
}

#[tokio::test]
async fn graceful_shutdown_stops_accepting() {
    let s = start(FakeHost::default()).await;
    assert_eq!(get(s.addr, "/healthz").await.status, 200);
    s.stop.cancel();
    tokio::time::timeout(GUARD, s.join)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(tokio::net::TcpStream::connect(s.addr).await.is_err());
}

#[tokio::test]
async fn only_loopback_by_default() {
    let host = Arc::new(FakeHost::default());
    let err = Server::bind(
        ServerConfig::new("0.0.0.0:0".parse().unwrap()),
        host.clone(),
        Metrics::new().unwrap(),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, Error::NonLoopbackAddress(_)));
    let listener = tokio::net::TcpListener::bind("0.0.0.0:0").await.unwrap();
    let err = Server::from_listener(
        listener,
        ServerConfig::new("127.0.0.1:0".parse().unwrap()),
        host,
        Metrics::new().unwrap(),
    )
    .unwrap_err();
    assert!(matches!(err, Error::NonLoopbackAddress(_)));
}

/// A fake runtime streaming server: answers the upgrade with 101 and
/// echoes what it reads; reports the request head it got.
async fn echo_streaming_server() -> (std::net::SocketAddr, tokio::sync::oneshot::Receiver<String>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            s.read_exact(&mut byte).await.unwrap();
            head.push(byte[0]);
        }
        let _ = tx.send(String::from_utf8_lossy(&head).into_owned());
        s.write_all(
            b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n\
              X-Stream-Protocol-Version: v4.channel.k8s.io\r\n\r\n",
        )
        .await
        .unwrap();
        let mut buf = [0u8; 64];
        loop {
            let n = s.read(&mut buf).await.unwrap_or(0);
            if n == 0 {
                break;
            }
            s.write_all(&buf[..n]).await.unwrap();
        }
    });
    (addr, rx)
}

#[tokio::test]
async fn streaming_requests_are_checked_then_proxied_to_the_runtime() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let host = Arc::new(FakeHost::default());
    let s = start_with(host.clone(), |c| c).await;
    // Options first (upstream NewOptions): no stream is a 400.
    let r = get(s.addr, "/exec/default/web/c0?command=sh").await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.text(),
        "you must specify at least 1 of stdin, stdout, stderr"
    );
    // Names as for logs, in every parameter of every streaming route.
    for path in [
        "/exec/default/..%2f/c0?output=1",
        "/exec/%2e%2e/web/c0?output=1",
        "/exec/default/web/a%2Fb/c0?output=1",
        "/exec/default/web/uid/..?output=1",
        "/attach/default/web/a%00b?output=1",
        "/attach/..%2F..%2Fetc/web/c0?output=1",
        "/portForward/default/..",
        "/portForward/default/web/%2e%2e%2fuid",
        "/portForward/a%2Fb/web",
    ] {
        assert_eq!(get(s.addr, path).await.status, 400, "{path}");
    }
    assert!(
        host.stream_requests.lock().unwrap().is_empty(),
        "the host was asked about an unsafe name"
    );
    // The host's answers.
    *host.stream.lock().unwrap() = Some(StreamLookup::PodNotFound);
    let r = get(s.addr, "/attach/default/web/c0?output=1").await;
    assert_eq!((r.status, r.text().as_str()), (404, "pod does not exist"));
    *host.stream.lock().unwrap() = Some(StreamLookup::Failed("Exec: not found".into()));
    assert_eq!(get(s.addr, "/portForward/default/web").await.status, 500);
    // A WebSocket port forward names its ports in the query (upstream
    // NewV4Options): none is a 400 before the host is asked; the ports go to
    // the host, which passes them to the runtime's PortForward.
    let asked = host.stream_requests.lock().unwrap().len();
    for (query, status) in [("", "400"), ("?port=80&port=8080,9090", "500")] {
        let mut tcp = tokio::net::TcpStream::connect(s.addr).await.unwrap();
        tcp.write_all(
            format!(
                "GET /portForward/default/web{query} HTTP/1.1\r\nHost: node\r\n\
                 Connection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
        let mut status_line = [0u8; 12];
        tcp.read_exact(&mut status_line).await.unwrap();
        assert_eq!(
            &status_line[9..],
            status.as_bytes(),
            "{query}: {}",
            String::from_utf8_lossy(&status_line)
        );
    }
    {
        let requests = host.stream_requests.lock().unwrap();
        assert_eq!(requests.len(), asked + 1, "only the request with ports");
        assert_eq!(
            requests.last(),
            Some(&StreamRequest::PortForward {
                namespace: "default".into(),
                pod: "web".into(),
                uid: None,
                ports: vec![80, 8080, 9090],
            })
        );
    }
    // A URL, but not an upgrade request.
    let (backend, head) = echo_streaming_server().await;
    *host.stream.lock().unwrap() = Some(StreamLookup::Url(format!("http://{backend}/exec/tok3n")));
    let r = get(
        s.addr,
        "/exec/default/web/uid-1/c0?command=ls&command=-l&output=1&tty=1",
    )
    .await;
    assert_eq!(
        (r.status, r.text().as_str()),
        (400, "Upgrade request required")
    );
    assert_eq!(
        host.stream_requests.lock().unwrap().last(),
        Some(&StreamRequest::Exec {
            namespace: "default".into(),
            pod: "web".into(),
            uid: Some("uid-1".into()),
            container: "c0".into(),
            command: vec!["ls".into(), "-l".into()],
            options: StreamOptions {
                stdout: true,
                tty: true,
                ..StreamOptions::default()
            },
        })
    );
    // An upgrade: proxied to the runtime's URL, then bytes both ways.
    let mut tcp = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    tcp.write_all(
        b"POST /exec/default/web/c0?command=sh&input=1&output=1 HTTP/1.1\r\nHost: node\r\n\
          Authorization: Bearer secret-token\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n\
          X-Stream-Protocol-Version: v4.channel.k8s.io\r\nContent-Length: 0\r\n\r\n",
    )
    .await
    .unwrap();
    let mut head_back = Vec::new();
    let mut byte = [0u8; 1];
    while !head_back.ends_with(b"\r\n\r\n") {
        tcp.read_exact(&mut byte).await.unwrap();
        head_back.push(byte[0]);
    }
    let head_back = String::from_utf8_lossy(&head_back).to_lowercase();
    assert!(head_back.starts_with("http/1.1 101"), "{head_back}");
    assert!(
        head_back.contains("x-stream-protocol-version: v4.channel.k8s.io"),
        "{head_back}"
    );
    let sent = head.await.unwrap();
    assert!(sent.starts_with("POST /exec/tok3n HTTP/1.1\r\n"), "{sent}");
    assert!(
        !sent.to_lowercase().contains("authorization"),
        "credentials leaked: {sent}"
    );
    assert!(sent.to_lowercase().contains("upgrade: spdy/3.1"), "{sent}");
    tcp.write_all(b"ping").await.unwrap();
    let mut echo = [0u8; 4];
    tcp.read_exact(&mut echo).await.unwrap();
    assert_eq!(&echo, b"ping");
    drop(tcp);
    s.stop.cancel();
    s.join.await.unwrap().unwrap();
}

#[tokio::test]
async fn run_executes_through_the_host_and_refuses_what_upstream_refuses() {
    let s = start(FakeHost::default()).await;
    *s.host.run.lock().unwrap() = Some(kubelet_server::RunOutcome::Output(b"hi\n".to_vec()));
    let r = request(s.addr, Method::POST, "/run/default/web/c0?cmd=echo%20hi").await;
    assert_eq!((r.status, r.text().as_str()), (200, "hi\n"));
    assert_eq!(r.headers["content-type"], "application/json");
    let r = request(s.addr, Method::POST, "/run/default/web/uid-1/c0?cmd=ls").await;
    assert_eq!(r.status, 200);
    assert_eq!(
        s.host.run_requests.lock().unwrap().clone(),
        vec![
            (
                "default".into(),
                "web".into(),
                None,
                "c0".into(),
                vec!["echo".into(), "hi".into()]
            ),
            (
                "default".into(),
                "web".into(),
                Some("uid-1".into()),
                "c0".into(),
                vec!["ls".into()]
            ),
        ]
    );
    // Upstream registers POST only.
    let r = get(s.addr, "/run/default/web/c0?cmd=ls").await;
    assert_eq!(r.status, 405);
    assert_eq!(r.headers["allow"], "POST");
    // Unsafe names never reach the host.
    for path in [
        "/run/default/..%2F/c0?cmd=ls",
        "/run/default/web/a%00b?cmd=ls",
    ] {
        assert_eq!(
            request(s.addr, Method::POST, path).await.status,
            400,
            "{path}"
        );
    }
    assert_eq!(s.host.run_requests.lock().unwrap().len(), 2);
    *s.host.run.lock().unwrap() = Some(kubelet_server::RunOutcome::PodNotFound);
    let r = request(s.addr, Method::POST, "/run/default/gone/c0?cmd=ls").await;
    assert_eq!((r.status, r.text().as_str()), (404, "pod does not exist"));
    *s.host.run.lock().unwrap() = Some(kubelet_server::RunOutcome::Failed(
        "command 'false' exited with 1: ".into(),
    ));
    let r = request(s.addr, Method::POST, "/run/default/web/c0?cmd=false").await;
    assert_eq!(r.status, 500);
    assert!(r.text().contains("exited with 1"), "{}", r.text());
}

/// `/metrics/resource` parsed by a Prometheus text parser, checked for the
/// series metrics-server's decoder reads (`pkg/scraper/client/resource/
/// decode.go`: the node's and each container's CPU and working set, with
/// their sample timestamps, and the containers' start times).
#[tokio::test]
async fn metrics_resource_serves_what_metrics_server_reads() {
    let s = start(FakeHost::default()).await;
    // No summary: still a 200, with the scrape error set (upstream's
    // collector answers the error as a metric).
    let r = get(s.addr, "/metrics/resource").await;
    assert_eq!(r.status, 200);
    assert!(
        r.text().lines().any(|l| l == "resource_scrape_error 1"),
        "{}",
        r.text()
    );

    let t = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        k8s_openapi::jiff::Timestamp::from_second(1_700_000_000).unwrap(),
    );
    let cpu = |ns: u64| CpuStats {
        time: Some(t.clone()),
        usage_nano_cores: Some(5),
        usage_core_nano_seconds: Some(ns),
    };
    let mem = |b: u64| MemoryStats {
        time: Some(t.clone()),
        working_set_bytes: Some(b),
        ..MemoryStats::default()
    };
    *s.host.summary.lock().unwrap() = Some(Summary {
        node: NodeStats {
            node_name: "node-1".into(),
            cpu: Some(cpu(3_500_000_000)),
            memory: Some(mem(1 << 30)),
            ..NodeStats::default()
        },
        pods: vec![PodStats {
            pod_ref: PodReference {
                name: "web".into(),
                namespace: "default".into(),
                uid: "u1".into(),
            },
            containers: vec![ContainerStats {
                name: "app".into(),
                start_time: Some(t.clone()),
                cpu: Some(cpu(1_000_000_000)),
                memory: Some(mem(4096)),
                rootfs: Some(FsStats::default()),
                ..ContainerStats::default()
            }],
            cpu: Some(cpu(1_500_000_000)),
            memory: Some(mem(8192)),
            ..PodStats::default()
        }],
    });
    let r = get(s.addr, "/metrics/resource").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.headers["content-type"], Metrics::CONTENT_TYPE);
    let scrape = prometheus_parse::Scrape::parse(r.text().lines().map(|l| Ok(l.to_owned())))
        .expect("the Prometheus text parser reads it");
    let find = |name: &str, container: Option<&str>| {
        scrape
            .samples
            .iter()
            .find(|x| {
                x.metric == name && container.is_none_or(|c| x.labels.get("container") == Some(c))
            })
            .unwrap_or_else(|| panic!("{name} missing in\n{}", r.text()))
    };
    let value = |x: &prometheus_parse::Sample| match x.value {
        prometheus_parse::Value::Counter(v)
        | prometheus_parse::Value::Gauge(v)
        | prometheus_parse::Value::Untyped(v) => v,
        ref other => panic!("unexpected {other:?}"),
    };
    let node_cpu = find("node_cpu_usage_seconds_total", None);
    assert_eq!(value(node_cpu), 3.5);
    assert!(matches!(
        node_cpu.value,
        prometheus_parse::Value::Counter(_)
    ));
    assert_eq!(node_cpu.timestamp.timestamp(), 1_700_000_000, "sample time");
    assert_eq!(
        value(find("node_memory_working_set_bytes", None)),
        (1u64 << 30) as f64
    );
    let c = find("container_cpu_usage_seconds_total", Some("app"));
    assert_eq!(value(c), 1.0);
    assert_eq!(c.labels.get("pod"), Some("web"));
    assert_eq!(c.labels.get("namespace"), Some("default"));
    assert_eq!(
        value(find("container_memory_working_set_bytes", Some("app"))),
        4096.0
    );
    assert_eq!(
        value(find("container_start_time_seconds", Some("app"))),
        1.7e9
    );
    assert_eq!(value(find("pod_cpu_usage_seconds_total", None)), 1.5);
    assert_eq!(value(find("pod_memory_working_set_bytes", None)), 8192.0);
    assert_eq!(value(find("resource_scrape_error", None)), 0.0);
    // Only CPU and memory: no filesystem figure leaks into it.
    assert!(!r.text().contains("fs"), "{}", r.text());
}

#[tokio::test]
async fn metrics_probes_serves_the_prober_registry() {
    let s = start(FakeHost::default()).await;
    let probe = kubelet_server::ProbeLabels {
        probe_type: "Liveness",
        container: "app",
        pod: "web",
        namespace: "default",
        pod_uid: "u1",
    };
    s.metrics
        .observe_probe(&probe, kubelet_server::ProbeResultLabel::Successful, 0.003);
    let r = get(s.addr, "/metrics/probes").await;
    assert_eq!(r.status, 200);
    let (types, samples) = parse_prometheus(r.text().as_str());
    assert_eq!(types["prober_probe_total"], "counter");
    assert_eq!(types["prober_probe_duration_seconds"], "histogram");
    assert!(types.contains_key("process_start_time_seconds"));
    assert!(samples.iter().any(|(n, l, v)| n == "prober_probe_total"
        && l.get("result").map(String::as_str) == Some("successful")
        && l.get("probe_type").map(String::as_str) == Some("Liveness")
        && *v == 1.0));
    // And not on /metrics.
    assert!(
        !get(s.addr, "/metrics")
            .await
            .text()
            .contains("prober_probe_total")
    );
}
