//! `GET /pods` latency with 100 and with 1,000 pods (2 containers each,
//! with status; 1,000 is issue 17's simulated density) over one kept-alive
//! HTTP/1 connection on loopback, against the bare cost of cloning and
//! serializing the same pods in process.
//!
//! `cargo bench -p kubelet-server --bench pods_latency`

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::Request;
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::Pod;
use kubelet_server::{Error, LogLookup, Metrics, NodeApi, Server, ServerConfig, Summary};

struct Host {
    pods: std::sync::RwLock<Vec<Pod>>,
}

#[async_trait]
impl NodeApi for Host {
    async fn pods(&self) -> Vec<Pod> {
        self.pods.read().map(|p| p.clone()).unwrap_or_default()
    }
    fn sync_loop_last_entered(&self) -> Option<Instant> {
        None
    }
    async fn kubelet_config(&self) -> serde_json::Value {
        serde_json::Value::Null
    }
    async fn container_log(&self, _: &str, _: &str, _: &str, _: bool) -> LogLookup {
        LogLookup::PodNotFound
    }
    async fn stats_summary(&self) -> Result<Summary, Error> {
        Err(Error::Host("none".into()))
    }
}

fn pod(i: usize) -> Pod {
    let name = format!("pod-{i}");
    let containers: Vec<_> = (0..2)
        .map(|c| {
            serde_json::json!({
                "name": format!("c{c}"),
                "image": "registry.local/busybox:1.36",
                "command": ["sh", "-c", "sleep 3600"],
                "env": [{"name": "MODE", "value": "bench"}],
                "ports": [{"containerPort": 8080, "protocol": "TCP"}],
                "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"memory": "128Mi"}}
            })
        })
        .collect();
    let statuses: Vec<_> = (0..2)
        .map(|c| {
            serde_json::json!({
                "name": format!("c{c}"),
                "image": "registry.local/busybox:1.36",
                "imageID": "sha256:0123456789abcdef0123456789abcdef",
                "containerID": format!("containerd://{name}-{c}"),
                "ready": true, "restartCount": 0, "started": true,
                "state": {"running": {"startedAt": "2025-01-01T00:00:00Z"}}
            })
        })
        .collect();
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "name": name, "namespace": "default", "uid": format!("5f1c2d3e-0000-4000-8000-{i:012}"),
            "labels": {"app": "bench", "tier": "web"},
            "annotations": {"kubernetes.io/config.source": "file", "kubernetes.io/config.hash": "abcdef"},
            "creationTimestamp": "2025-01-01T00:00:00Z"
        },
        "spec": {"containers": containers, "restartPolicy": "Always", "nodeName": "node-1",
                 "terminationGracePeriodSeconds": 30, "dnsPolicy": "ClusterFirst"},
        "status": {
            "phase": "Running", "qosClass": "Burstable", "podIP": "10.88.0.5", "hostIP": "192.168.1.10",
            "startTime": "2025-01-01T00:00:00Z",
            "conditions": [
                {"type": "Initialized", "status": "True", "lastTransitionTime": "2025-01-01T00:00:00Z"},
                {"type": "Ready", "status": "True", "lastTransitionTime": "2025-01-01T00:00:01Z"},
                {"type": "ContainersReady", "status": "True", "lastTransitionTime": "2025-01-01T00:00:01Z"},
                {"type": "PodScheduled", "status": "True", "lastTransitionTime": "2025-01-01T00:00:00Z"}
            ],
            "containerStatuses": statuses
        }
    }))
    .expect("valid pod")
}

fn stats(mut v: Vec<Duration>) -> (Duration, Duration, Duration) {
    v.sort();
    let p = |x: f64| v[((v.len() as f64 * x).ceil() as usize).saturating_sub(1)];
    (p(0.5), p(0.9), p(0.99))
}

/// Measures `runs` GETs of `/pods` with `n` pods (after a warm-up) and
/// prints the percentiles.
async fn measure(n: usize, runs: usize) {
    const WARMUP: usize = 50;
    let pods: Vec<Pod> = (0..n).map(pod).collect();

    // Baseline: what the handler must do at least (clone + serialize).
    let mut base = Vec::with_capacity(runs);
    let mut size = 0;
    for i in 0..WARMUP + runs {
        let t = Instant::now();
        let copy = pods.clone();
        let b = serde_json::to_vec(&copy).expect("json");
        size = b.len();
        if i >= WARMUP {
            base.push(t.elapsed());
        }
    }

    let host = Arc::new(Host {
        pods: std::sync::RwLock::new(pods),
    });
    let server = Server::bind(
        ServerConfig::new("127.0.0.1:0".parse().expect("addr")),
        host,
        Metrics::new().expect("metrics"),
    )
    .await
    .expect("bind");
    let addr = server.local_addr();
    let stop = tokio_util::sync::CancellationToken::new();
    let join = tokio::spawn(server.serve(stop.clone().cancelled_owned()));

    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(stream))
            .await
            .expect("handshake");
    tokio::spawn(conn);
    let mut lat = Vec::with_capacity(runs);
    let mut body_len = 0;
    for i in 0..WARMUP + runs {
        let req = Request::get("/pods")
            .header("host", "localhost")
            .body(Empty::new())
            .expect("request");
        let t = Instant::now();
        sender.ready().await.expect("ready");
        let resp = sender.send_request(req).await.expect("response");
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        if i >= WARMUP {
            lat.push(t.elapsed());
        }
        body_len = body.len();
    }
    stop.cancel();
    let _ = join.await;

    let (p50, p90, p99) = stats(lat);
    let (b50, _, _) = stats(base);
    println!(
        "GET /pods, {n} pods, {body_len} bytes per response, {runs} requests on one connection:"
    );
    println!("  median {p50:?}  p90 {p90:?}  p99 {p99:?}");
    println!("baseline clone + serde_json of the same pods ({size} bytes): median {b50:?}");
    println!(
        "ratio median /pods over baseline: {:.2}",
        p50.as_secs_f64() / b50.as_secs_f64()
    );
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        measure(100, 1000).await;
        // A response of about 3 MB: fewer runs keep the bench short.
        measure(1000, 200).await;
    });
}
