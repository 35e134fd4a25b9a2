//! Requests to the node API: the input is the request target (path and
//! query) and the method, sent over HTTP to a real server on loopback
//! whose host has a pod with a log. Every answer must be a well-formed
//! response with a status code; the server must stay up; the authorization
//! attributes of any path must be computable.
#![no_main]

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use libfuzzer_sys::fuzz_target;

struct Host;

#[async_trait::async_trait]
impl kubelet_server::NodeApi for Host {
    async fn pods(&self) -> Vec<k8s_openapi::api::core::v1::Pod> {
        Vec::new()
    }
    fn sync_loop_last_entered(&self) -> Option<Instant> {
        None
    }
    async fn kubelet_config(&self) -> serde_json::Value {
        serde_json::Value::Null
    }
    async fn container_log(
        &self,
        _: &str,
        _: &str,
        _: &str,
        _: bool,
    ) -> kubelet_server::LogLookup {
        kubelet_server::LogLookup::PodNotFound
    }
    async fn stats_summary(&self) -> Result<kubelet_server::Summary, kubelet_server::Error> {
        Ok(kubelet_server::Summary::default())
    }
}

struct Bed {
    rt: tokio::runtime::Runtime,
    addr: std::net::SocketAddr,
}

fn bed() -> &'static Bed {
    static BED: OnceLock<Bed> = OnceLock::new();
    BED.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let addr = rt.block_on(async {
            let server = kubelet_server::Server::bind(
                kubelet_server::ServerConfig::new("127.0.0.1:0".parse().expect("addr")),
                Arc::new(Host),
                kubelet_server::Metrics::new().expect("metrics"),
            )
            .await
            .expect("bind");
            let addr = server.local_addr();
            tokio::spawn(server.serve(std::future::pending()));
            addr
        });
        Bed { rt, addr }
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&m, target)) = data.split_first() else { return };
    let method = ["GET", "POST", "HEAD", "PUT", "DELETE", "OPTIONS"][usize::from(m) % 6];
    // A request target is visible ASCII; anything else is not HTTP.
    if target.is_empty() || !target.iter().all(|b| b.is_ascii_graphic()) {
        return;
    }
    let target = std::str::from_utf8(target).expect("ascii");
    let path = target.split('?').next().unwrap_or_default();
    let user = kubelet_server::auth::UserInfo {
        name: "fuzz".into(),
        uid: String::new(),
        groups: Vec::new(),
        extra: Default::default(),
    };
    if let Ok(m) = method.parse() {
        let _ = kubelet_server::auth::request_attributes(&user, &m, path, "node");
    }
    let bed = bed();
    let status = bed.rt.block_on(async {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(bed.addr).await.expect("server up");
        let req = format!("{method} {target} HTTP/1.0\r\nHost: node\r\n\r\n");
        s.write_all(req.as_bytes()).await.expect("send");
        let mut head = [0u8; 12];
        s.read_exact(&mut head).await.expect("an answer");
        String::from_utf8_lossy(&head).into_owned()
    });
    assert!(status.starts_with("HTTP/1."), "{status:?}");
    let code: u16 = status[9..12].parse().expect("a status code");
    assert!((100..600).contains(&code), "{status:?}");
    // This host refuses streaming and `/run` (500, upstream's answer to a
    // runtime that refuses); nothing else may be an internal error.
    // The server takes the path from the parsed request target (an
    // absolute-form target like `x://host/run/...` has path `/run/...`), so
    // a refused route anywhere in the target counts.
    let refused = ["/exec/", "/attach/", "/portForward/", "/run/"]
        .iter()
        .any(|p| target.contains(p));
    assert!(code != 500 || refused, "{method} {target}: an internal error");
});
