//! The status manager at 1,000 pods (issue 17's simulated density), each
//! Running with 3 containers and the kubelet's 5 conditions:
//!
//! - `status_1000/set_pod_status_new`: 1,000 `set_pod_status` calls into an
//!   empty manager (each pod's first status: a version each).
//! - `status_1000/set_pod_status_unchanged`: the same 1,000 statuses again
//!   (what the pod workers' periodic resyncs do): no version moves.
//! - `status_1000/sync_batch_changes_only`: one `sync_batch(false)` of the
//!   syncer once all 1,000 were written (what it does on every status
//!   change): nothing to send.
//! - `status_1000/sync_batch_all_unchanged`: one `sync_batch(true)` over
//!   the same (the 10 s reconciliation pass, upstream `syncBatch(true)`):
//!   each status merged with the pod manager's copy of the API status and
//!   compared, no request made.
//!
//! The API server is a `tower` service that answers a GET or PATCH of a pod
//! with that pod, and counts requests; the two passes assert that they made
//! none.
//!
//! `cargo bench -p kubelet-status --bench status`

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use criterion::{BatchSize, Criterion, Throughput};
use hyper::{Request, Response};
use k8s_openapi::api::core::v1::{Pod, PodStatus};
use kube::client::Body;
use kubelet_status::{PodDeletionSafetyProvider, PodManager, StatusManager, StatusSync};
use serde_json::json;

const PODS: usize = 1_000;

fn uid(i: usize) -> String {
    format!("5f1c2d3e-0000-4000-8000-{i:012}")
}

fn pod(i: usize) -> Pod {
    let containers: Vec<_> = (0..3)
        .map(|c| json!({"name": format!("c{c}"), "image": "registry.local/busybox:1.36"}))
        .collect();
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": format!("pod-{i}"), "namespace": "default", "uid": uid(i),
                     "resourceVersion": "1"},
        "spec": {"nodeName": "node-1", "restartPolicy": "Always", "containers": containers}
    }))
    .expect("valid pod")
}

fn status(i: usize) -> PodStatus {
    let t = "2025-01-01T00:00:00Z";
    let statuses: Vec<_> = (0..3)
        .map(|c| {
            json!({
                "name": format!("c{c}"),
                "image": "registry.local/busybox:1.36",
                "imageID": "sha256:0123456789abcdef0123456789abcdef",
                "containerID": format!("containerd://{i:08}{c:056}"),
                "ready": true, "restartCount": 0, "started": true,
                "state": {"running": {"startedAt": t}}
            })
        })
        .collect();
    let conditions: Vec<_> = [
        "PodReadyToStartContainers",
        "Initialized",
        "Ready",
        "ContainersReady",
        "PodScheduled",
    ]
    .iter()
    .map(|c| json!({"type": c, "status": "True", "lastTransitionTime": t}))
    .collect();
    serde_json::from_value(json!({
        "phase": "Running", "qosClass": "BestEffort",
        "podIP": "10.88.0.5", "podIPs": [{"ip": "10.88.0.5"}],
        "hostIP": "192.168.1.10", "hostIPs": [{"ip": "192.168.1.10"}],
        "startTime": t, "conditions": conditions, "containerStatuses": statuses
    }))
    .expect("valid status")
}

/// The kubelet's pods by UID, as its pod manager holds them.
struct Pods(HashMap<String, Pod>);

impl PodManager for Pods {
    fn pod_by_uid(&self, uid: &str) -> Option<Pod> {
        self.0.get(uid).cloned()
    }
    fn mirror_pod_by_pod(&self, _: &Pod) -> Option<Pod> {
        None
    }
}

struct Running;

impl PodDeletionSafetyProvider for Running {
    fn pod_could_have_running_containers(&self, _: &Pod) -> bool {
        true
    }
}

/// A client whose API server answers a GET or PATCH of `pods/<name>[/status]`
/// with that pod, counting requests.
fn client(pods: &HashMap<String, Pod>, requests: Arc<AtomicUsize>) -> kube::Client {
    let by_name: Arc<HashMap<String, Vec<u8>>> = Arc::new(
        pods.values()
            .map(|p| {
                let name = p.metadata.name.clone().unwrap_or_default();
                (name, serde_json::to_vec(p).expect("json"))
            })
            .collect(),
    );
    let service = tower::service_fn(move |req: Request<Body>| {
        let by_name = Arc::clone(&by_name);
        let requests = Arc::clone(&requests);
        async move {
            requests.fetch_add(1, Ordering::SeqCst);
            // /api/v1/namespaces/<ns>/pods/<name>[/status]
            let name = req.uri().path().split('/').nth(6).unwrap_or_default();
            let (code, body) = match by_name.get(name) {
                Some(b) => (200, b.clone()),
                None => (404, b"{}".to_vec()),
            };
            Response::builder()
                .status(code)
                .header("content-type", "application/json")
                .body(Body::from(body))
        }
    });
    kube::Client::new(service, "default")
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let pods: Vec<Pod> = (0..PODS).map(pod).collect();
    let statuses: Vec<PodStatus> = (0..PODS).map(status).collect();

    let mut group = c.benchmark_group("status_1000");
    group.throughput(Throughput::Elements(PODS as u64));
    group.bench_function("set_pod_status_new", |b| {
        b.iter_batched(
            || (StatusManager::default(), statuses.clone()),
            |(manager, statuses)| {
                for (pod, status) in pods.iter().zip(statuses) {
                    manager.set_pod_status(pod, status).expect("set");
                }
                manager
            },
            BatchSize::LargeInput,
        );
    });

    let manager = Arc::new(StatusManager::default());
    for (pod, status) in pods.iter().zip(&statuses) {
        manager.set_pod_status(pod, status.clone()).expect("set");
    }
    let versions = |m: &StatusManager| -> Vec<Option<u64>> {
        pods.iter()
            .map(|p| m.version(p.metadata.uid.as_deref().unwrap_or_default()))
            .collect()
    };
    let before = versions(&manager);
    group.bench_function("set_pod_status_unchanged", |b| {
        b.iter_batched(
            || statuses.clone(),
            |statuses| {
                for (pod, status) in pods.iter().zip(statuses) {
                    manager.set_pod_status(pod, status).expect("set");
                }
            },
            BatchSize::LargeInput,
        );
    });
    assert_eq!(
        versions(&manager),
        before,
        "an unchanged status moved a version"
    );

    // The pod manager's pods carry the API status, as the kubelet's watch
    // delivers it: here what the kubelet recorded, so nothing differs.
    let local: HashMap<String, Pod> = pods
        .iter()
        .map(|p| {
            let uid = p.metadata.uid.clone().unwrap_or_default();
            let mut p = p.clone();
            p.status = manager.get(&uid);
            (uid, p)
        })
        .collect();
    let requests = Arc::new(AtomicUsize::new(0));
    let mut sync = rt.block_on(async {
        let client = client(&local, Arc::clone(&requests));
        let mut sync = StatusSync::new(
            client,
            Arc::clone(&manager),
            Arc::new(Pods(local)),
            Arc::new(Running),
        );
        // Every version written once (GET each, no PATCH: the API has it).
        let reports = sync.sync_batch(false).await;
        assert_eq!(reports.len(), PODS);
        assert!(reports.iter().all(|r| r.result.is_ok()));
        sync
    });
    let sent = requests.load(Ordering::SeqCst);
    group.bench_function("sync_batch_changes_only", |b| {
        b.iter(|| {
            let reports = rt.block_on(sync.sync_batch(false));
            assert!(reports.is_empty());
        });
    });
    group.bench_function("sync_batch_all_unchanged", |b| {
        b.iter(|| {
            let reports = rt.block_on(sync.sync_batch(true));
            assert!(reports.is_empty());
        });
    });
    assert_eq!(
        requests.load(Ordering::SeqCst),
        sent,
        "a pass over unchanged statuses made requests"
    );
    group.finish();
    c.final_summary();
}
