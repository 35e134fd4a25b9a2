//! A fake host and a small HTTP client for the node API tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::{Method, Request, Response};
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::Pod;
use kubelet_server::{Error, LogLookup, Metrics, NodeApi, Server, ServerConfig, Summary};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

#[derive(Default)]
pub struct FakeHost {
    pub pods: Mutex<Vec<Pod>>,
    pub last_sync: Mutex<Option<Instant>>,
    pub logs: Mutex<HashMap<(String, String, String), LogLookup>>,
    pub log_lookups: AtomicUsize,
    pub stopped: AtomicBool,
    pub summary: Mutex<Option<Summary>>,
    /// What `stream_url` answers, and the requests it was asked.
    pub stream: Mutex<Option<kubelet_server::StreamLookup>>,
    pub stream_requests: Mutex<Vec<kubelet_server::StreamRequest>>,
    /// What `run_in_container` answers, and what it was asked.
    pub run: Mutex<Option<kubelet_server::RunOutcome>>,
    pub run_requests: Mutex<Vec<RunCall>>,
}

/// One `run_in_container` call: namespace, pod, uid, container, command.
pub type RunCall = (String, String, Option<String>, String, Vec<String>);

#[async_trait]
impl NodeApi for FakeHost {
    async fn pods(&self) -> Vec<Pod> {
        self.pods.lock().unwrap().clone()
    }
    fn sync_loop_last_entered(&self) -> Option<Instant> {
        *self.last_sync.lock().unwrap()
    }
    async fn kubelet_config(&self) -> serde_json::Value {
        serde_json::json!({"kind": "KubeletConfiguration", "syncFrequency": "1m0s"})
    }
    async fn container_log(&self, ns: &str, pod: &str, ctr: &str, previous: bool) -> LogLookup {
        self.log_lookups.fetch_add(1, Ordering::SeqCst);
        if previous {
            return LogLookup::Unavailable(format!(
                "previous terminated container {ctr:?} in pod {pod:?} not found"
            ));
        }
        self.logs
            .lock()
            .unwrap()
            .get(&(ns.to_string(), pod.to_string(), ctr.to_string()))
            .cloned()
            .unwrap_or(LogLookup::PodNotFound)
    }
    async fn container_running(&self, _id: &str) -> bool {
        !self.stopped.load(Ordering::SeqCst)
    }
    async fn stream_url(
        &self,
        request: &kubelet_server::StreamRequest,
    ) -> kubelet_server::StreamLookup {
        self.stream_requests.lock().unwrap().push(request.clone());
        self.stream
            .lock()
            .unwrap()
            .clone()
            .unwrap_or(kubelet_server::StreamLookup::Failed(
                "streaming is not supported by this kubelet".into(),
            ))
    }
    async fn run_in_container(
        &self,
        namespace: &str,
        pod: &str,
        uid: Option<&str>,
        container: &str,
        command: &[String],
    ) -> kubelet_server::RunOutcome {
        self.run_requests.lock().unwrap().push((
            namespace.into(),
            pod.into(),
            uid.map(str::to_owned),
            container.into(),
            command.to_vec(),
        ));
        self.run
            .lock()
            .unwrap()
            .clone()
            .unwrap_or(kubelet_server::RunOutcome::PodNotFound)
    }
    async fn stats_summary(&self) -> Result<Summary, Error> {
        self.summary
            .lock()
            .unwrap()
            .clone()
            .ok_or_else(|| Error::Host("no stats".into()))
    }
}

pub fn pod(ns: &str, name: &str, containers: usize) -> Pod {
    let ctrs: Vec<_> = (0..containers)
        .map(|i| {
            serde_json::json!({
                "name": format!("c{i}"),
                "image": "registry.local/busybox:1.36",
                "command": ["sh", "-c", "sleep 3600"],
                "env": [{"name": "MODE", "value": "test"}],
                "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"memory": "128Mi"}}
            })
        })
        .collect();
    let statuses: Vec<_> = (0..containers)
        .map(|i| {
            serde_json::json!({
                "name": format!("c{i}"),
                "image": "registry.local/busybox:1.36",
                "imageID": "sha256:0123456789abcdef",
                "containerID": format!("containerd://{name}-{i}"),
                "ready": true,
                "restartCount": 0,
                "started": true,
                "state": {"running": {"startedAt": "2025-01-01T00:00:00Z"}}
            })
        })
        .collect();
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": ns,
            "uid": format!("uid-{ns}-{name}"),
            "labels": {"app": name},
            "annotations": {"kubernetes.io/config.source": "file"}
        },
        "spec": {"containers": ctrs, "restartPolicy": "Always", "nodeName": "node-1"},
        "status": {
            "phase": "Running",
            "qosClass": "Burstable",
            "podIP": "10.88.0.5",
            "conditions": [{"type": "Ready", "status": "True"}],
            "containerStatuses": statuses
        }
    }))
    .unwrap()
}

pub struct Running {
    pub addr: SocketAddr,
    pub host: Arc<FakeHost>,
    pub metrics: Metrics,
    pub stop: CancellationToken,
    pub join: tokio::task::JoinHandle<Result<(), Error>>,
}

pub async fn start_with(
    host: Arc<FakeHost>,
    config: impl FnOnce(ServerConfig) -> ServerConfig,
) -> Running {
    let metrics = Metrics::new().unwrap();
    let cfg = config(ServerConfig::new("127.0.0.1:0".parse().unwrap()));
    let server = Server::bind(cfg, host.clone(), metrics.clone())
        .await
        .unwrap();
    let addr = server.local_addr();
    let stop = CancellationToken::new();
    let join = tokio::spawn(server.serve(stop.clone().cancelled_owned()));
    Running {
        addr,
        host,
        metrics,
        stop,
        join,
    }
}

pub async fn start(host: FakeHost) -> Running {
    start_with(Arc::new(host), |c| c).await
}

/// One kept-alive HTTP/1 connection.
pub struct Client {
    sender: hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
}

impl Client {
    pub async fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).await.unwrap();
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(conn);
        Client { sender }
    }

    pub async fn send(&mut self, method: Method, path: &str) -> Response<Incoming> {
        self.sender.ready().await.unwrap();
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "localhost")
            .body(Empty::new())
            .unwrap();
        self.sender.send_request(req).await.unwrap()
    }
}

pub struct Reply {
    pub status: u16,
    pub headers: hyper::HeaderMap,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

pub async fn request(addr: SocketAddr, method: Method, path: &str) -> Reply {
    let mut c = Client::connect(addr).await;
    let resp = c.send(method, path).await;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .to_vec();
    Reply {
        status,
        headers,
        body,
    }
}

pub async fn get(addr: SocketAddr, path: &str) -> Reply {
    request(addr, Method::GET, path).await
}
