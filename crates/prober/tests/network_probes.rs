//! HTTP, TCP and gRPC probes against local servers on 127.0.0.1.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::{
    Container, ContainerPort, GRPCAction, HTTPGetAction, HTTPHeader, PodStatus, Probe,
    TCPSocketAction,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kubelet_cri_client::FakeRuntime;
use kubelet_prober::probe::http::{HttpProber, HttpRequest};
use kubelet_prober::probe::{MAX_OUTPUT_LENGTH, Outcome, grpc, tcp};
use kubelet_prober::{ContainerId, Prober};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A one-request-per-connection HTTP server: `respond(path)` gives the raw
/// response; every request head is recorded.
struct Server {
    port: u16,
    heads: Arc<Mutex<Vec<String>>>,
}

async fn serve(respond: impl Fn(&str) -> Option<String> + Send + Sync + 'static) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let heads = Arc::new(Mutex::new(Vec::new()));
    let recorded = heads.clone();
    let respond = Arc::new(respond);
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let recorded = recorded.clone();
            let respond = respond.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match sock.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&buf).into_owned();
                let path = head.split_whitespace().nth(1).unwrap_or("").to_owned();
                recorded.lock().unwrap().push(head);
                match respond(&path) {
                    Some(resp) => {
                        let _ = sock.write_all(resp.as_bytes()).await;
                        let _ = sock.shutdown().await;
                    }
                    // Never answer.
                    None => tokio::time::sleep(Duration::from_secs(3600)).await,
                }
            });
        }
    });
    Server { port, heads }
}

fn response(code: u16, extra: &str, body: &str) -> String {
    format!(
        "HTTP/1.1 {code} X\r\ncontent-length: {}\r\nconnection: close\r\n{extra}\r\n{body}",
        body.len()
    )
}

fn request(port: u16, path: &str) -> HttpRequest {
    let action = HTTPGetAction {
        path: Some(path.into()),
        port: IntOrString::Int(i32::from(port)),
        ..Default::default()
    };
    HttpRequest::for_http_get_action(
        &action,
        &Container::default(),
        "127.0.0.1",
        "kube-probe/1.34",
    )
    .unwrap()
}

const T: Duration = Duration::from_secs(5);

#[tokio::test]
async fn http_2xx_and_3xx_succeed_4xx_5xx_fail() {
    let s = serve(|path| {
        Some(match path {
            "/ok" => response(200, "", "fine"),
            "/nocontent" => response(204, "", ""),
            "/bad" => response(400, "", "secret body"),
            _ => response(503, "", "down"),
        })
    })
    .await;
    let p = HttpProber::new();
    let (o, body) = p.probe(&request(s.port, "/ok"), T).await.unwrap();
    assert_eq!((o, body.as_str()), (Outcome::Success, "fine"));
    let (o, _) = p.probe(&request(s.port, "/nocontent"), T).await.unwrap();
    assert_eq!(o, Outcome::Success);
    let (o, msg) = p.probe(&request(s.port, "/bad"), T).await.unwrap();
    assert_eq!(
        (o, msg.as_str()),
        (Outcome::Failure, "HTTP probe failed with statuscode: 400")
    );
    let (o, msg) = p.probe(&request(s.port, "/down"), T).await.unwrap();
    assert_eq!(
        (o, msg.as_str()),
        (Outcome::Failure, "HTTP probe failed with statuscode: 503")
    );
}

#[tokio::test]
async fn http_sends_upstream_headers_and_host_override() {
    let s = serve(|_| Some(response(200, "", ""))).await;
    let mut action = HTTPGetAction {
        path: Some("/h?x=1".into()),
        port: IntOrString::String("web".into()),
        http_headers: Some(vec![
            HTTPHeader {
                name: "X-Custom".into(),
                value: "a".into(),
            },
            HTTPHeader {
                name: "X-Custom".into(),
                value: "b".into(),
            },
            HTTPHeader {
                name: "Host".into(),
                value: "svc.example".into(),
            },
        ]),
        ..Default::default()
    };
    let container = Container {
        name: "app".into(),
        ports: Some(vec![ContainerPort {
            name: Some("web".into()),
            container_port: i32::from(s.port),
            ..Default::default()
        }]),
        ..Default::default()
    };
    let req = HttpRequest::for_http_get_action(&action, &container, "127.0.0.1", "kube-probe/1.34")
        .unwrap();
    let (o, _) = HttpProber::new().probe(&req, T).await.unwrap();
    assert_eq!(o, Outcome::Success);
    let head = s.heads.lock().unwrap()[0].to_ascii_lowercase();
    assert!(head.starts_with("get /h?x=1 http/1.1\r\n"), "{head}");
    for want in [
        "host: svc.example\r\n",
        "user-agent: kube-probe/1.34\r\n",
        "accept: */*\r\n",
        "x-custom: a\r\n",
        "x-custom: b\r\n",
        "connection: close\r\n",
    ] {
        assert!(head.contains(want), "{want:?} missing from {head}");
    }
    assert!(!head.contains("accept-encoding"), "{head}");

    // Without an override, Host is host:port.
    action.http_headers = None;
    let req = HttpRequest::for_http_get_action(&action, &container, "127.0.0.1", "ua").unwrap();
    HttpProber::new().probe(&req, T).await.unwrap();
    let head = s.heads.lock().unwrap()[1].to_ascii_lowercase();
    assert!(
        head.contains(&format!("host: 127.0.0.1:{}\r\n", s.port)),
        "{head}"
    );
}

#[tokio::test]
async fn http_follows_same_host_redirects_only() {
    let s = serve(|path| {
        Some(match path {
            "/start" => response(302, "location: /next/\r\n", ""),
            "/next/" => response(301, "location: ../final\r\n", ""),
            "/final" => response(200, "", "landed"),
            "/away" => response(302, "location: http://other.invalid/x\r\n", "moved"),
            "/failing" => response(307, "location: /gone\r\n", ""),
            "/gone" => response(500, "", ""),
            "/loop" => response(302, "location: /loop\r\n", ""),
            _ => response(404, "", ""),
        })
    })
    .await;
    let p = HttpProber::new();
    let (o, body) = p.probe(&request(s.port, "/start"), T).await.unwrap();
    assert_eq!((o, body.as_str()), (Outcome::Success, "landed"));
    assert_eq!(s.heads.lock().unwrap().len(), 3);

    let (o, msg) = p.probe(&request(s.port, "/away"), T).await.unwrap();
    assert_eq!(o, Outcome::Warning, "{msg}");
    assert_eq!(msg, "Probe terminated redirects, Response body: moved");

    let (o, msg) = p.probe(&request(s.port, "/failing"), T).await.unwrap();
    assert_eq!(
        (o, msg.as_str()),
        (Outcome::Failure, "HTTP probe failed with statuscode: 500")
    );

    let before = s.heads.lock().unwrap().len();
    let (o, msg) = p.probe(&request(s.port, "/loop"), T).await.unwrap();
    assert_eq!(o, Outcome::Failure);
    assert!(msg.contains("stopped after 10 redirects"), "{msg}");
    assert_eq!(s.heads.lock().unwrap().len() - before, 10);
}

#[tokio::test]
async fn http_timeouts_and_refused_connections_fail() {
    let s = serve(|_| None).await;
    let (o, msg) = HttpProber::new()
        .probe(&request(s.port, "/"), Duration::from_millis(200))
        .await
        .unwrap();
    assert_eq!(o, Outcome::Failure);
    assert!(msg.contains("deadline exceeded"), "{msg}");

    let closed = closed_port().await;
    let (o, msg) = HttpProber::new()
        .probe(&request(closed, "/"), T)
        .await
        .unwrap();
    assert_eq!(o, Outcome::Failure);
    assert!(msg.contains("dial tcp"), "{msg}");
}

#[tokio::test]
async fn http_body_is_capped_at_10_kib() {
    let s = serve(|_| Some(response(200, "", &"y".repeat(100_000)))).await;
    let (o, body) = HttpProber::new()
        .probe(&request(s.port, "/"), T)
        .await
        .unwrap();
    assert_eq!(o, Outcome::Success);
    assert_eq!(body.len(), MAX_OUTPUT_LENGTH);
}

#[tokio::test]
async fn https_against_a_plain_server_fails_in_the_handshake() {
    // A plain-HTTP server that answers at once, before any request.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let _ = sock.write_all(response(200, "", "").as_bytes()).await;
        }
    });
    let mut req = request(port, "/");
    req.scheme = "https".into();
    let (o, msg) = HttpProber::new().probe(&req, T).await.unwrap();
    assert_eq!(o, Outcome::Failure);
    assert!(msg.contains("TLS handshake"), "{msg}");
}

async fn closed_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    drop(l);
    port
}

#[tokio::test]
async fn tcp_connects_or_fails() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    assert_eq!(tcp::probe("127.0.0.1", port, T).await.0, Outcome::Success);
    drop(l);
    let (o, msg) = tcp::probe("127.0.0.1", closed_port().await, T).await;
    assert_eq!(o, Outcome::Failure);
    assert!(msg.starts_with("dial tcp 127.0.0.1:"), "{msg}");
}

#[tokio::test]
async fn prober_defaults_host_to_the_pod_ip_and_resolves_named_ports() {
    let s = serve(|_| Some(response(200, "", "ok"))).await;
    let container = Container {
        name: "app".into(),
        ports: Some(vec![ContainerPort {
            name: Some("http".into()),
            container_port: i32::from(s.port),
            ..Default::default()
        }]),
        ..Default::default()
    };
    let status = PodStatus {
        pod_ip: Some("127.0.0.1".into()),
        ..Default::default()
    };
    let prober = Prober::new(Arc::new(FakeRuntime::new()), "1.34");
    let id = ContainerId::new("containerd", "x");
    let http = Probe {
        http_get: Some(HTTPGetAction {
            port: IntOrString::String("http".into()),
            path: Some("/healthz".into()),
            ..Default::default()
        }),
        ..Default::default()
    };
    let (o, body) = prober
        .run_probe(&http, &status, &container, &id)
        .await
        .unwrap();
    assert_eq!((o, body.as_str()), (Outcome::Success, "ok"));
    assert!(s.heads.lock().unwrap()[0].starts_with("GET /healthz HTTP/1.1"));

    let tcp = Probe {
        tcp_socket: Some(TCPSocketAction {
            port: IntOrString::String("http".into()),
            host: None,
        }),
        ..Default::default()
    };
    let (o, _) = prober
        .run_probe(&tcp, &status, &container, &id)
        .await
        .unwrap();
    assert_eq!(o, Outcome::Success);

    // An unknown named port cannot be probed at all: an error, not a failure.
    let bad = Probe {
        tcp_socket: Some(TCPSocketAction {
            port: IntOrString::String("nope".into()),
            host: None,
        }),
        ..Default::default()
    };
    assert!(
        prober
            .run_probe(&bad, &status, &container, &id)
            .await
            .is_err()
    );
    assert!(
        prober
            .run_probe(&Probe::default(), &status, &container, &id)
            .await
            .is_err()
    );
}

#[tokio::test]
async fn grpc_health_check_needs_serving() {
    use tonic_health::ServingStatus;
    let (reporter, service) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("up", ServingStatus::Serving)
        .await;
    reporter
        .set_service_status("down", ServingStatus::NotServing)
        .await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );

    let (o, msg) = grpc::probe("127.0.0.1", "up", port, T, "kube-probe/1.34").await;
    assert_eq!((o, msg.as_str()), (Outcome::Success, "service healthy"));
    let (o, msg) = grpc::probe("127.0.0.1", "down", port, T, "kube-probe/1.34").await;
    assert_eq!(o, Outcome::Failure);
    assert!(msg.contains("NOT_SERVING"), "{msg}");
    let (o, _) = grpc::probe("127.0.0.1", "unknown-service", port, T, "kube-probe/1.34").await;
    assert_eq!(o, Outcome::Failure);
    let (o, msg) = grpc::probe("127.0.0.1", "up", closed_port().await, T, "kube-probe/1.34").await;
    assert_eq!(o, Outcome::Failure);
    assert!(msg.starts_with("error: failed to connect"), "{msg}");

    // Through the prober: the gRPC probe goes to the pod IP.
    let prober = Prober::new(Arc::new(FakeRuntime::new()), "1.34");
    let probe = Probe {
        grpc: Some(GRPCAction {
            port: i32::from(port),
            service: Some("up".into()),
        }),
        ..Default::default()
    };
    let status = PodStatus {
        pod_ip: Some("127.0.0.1".into()),
        ..Default::default()
    };
    let (o, _) = prober
        .run_probe(
            &probe,
            &status,
            &Container::default(),
            &ContainerId::new("c", "x"),
        )
        .await
        .unwrap();
    assert_eq!(o, Outcome::Success);
}
