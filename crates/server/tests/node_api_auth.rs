//! The node API over TLS with authentication and authorization: client
//! certificates from the client CA, bearer tokens reviewed by the "API
//! server", anonymous requests refused, and each request authorized for
//! `nodes/<subresource>` (upstream `InstallAuthFilter`,
//! `pkg/kubelet/server/auth.go`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use kubelet_server::auth::{
    AccessReviewer, Attributes, AuthError, NodeAuthenticator, TokenReviewer, UserInfo,
    WebhookAuthorizer,
};
use kubelet_server::tls::{self, TlsOptions};
use kubelet_server::{Metrics, Server, ServerAuth, ServerConfig};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

/// A CA and what it signs.
struct Ca {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    pem: String,
}

fn ca(name: &str) -> Ca {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::default();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    let cert = params.self_signed(&key).unwrap();
    Ca {
        pem: cert.pem(),
        issuer: rcgen::Issuer::new(params, key),
    }
}

/// A client certificate for `cn` in `orgs`, signed by `ca`; `expired`
/// makes one whose validity ended yesterday.
fn client_cert(ca: &Ca, cn: &str, orgs: &[&str], expired: bool) -> (String, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::default();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, cn);
    for o in orgs {
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, *o);
    }
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    if expired {
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::days(30);
        params.not_after = now - time::Duration::days(1);
    }
    let cert = params.signed_by(&key, &ca.issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

/// Tokens: `bob-token` is bob; `down` cannot be reviewed; others are not
/// authenticated.
struct Tokens;

#[async_trait]
impl TokenReviewer for Tokens {
    async fn review(&self, token: &str) -> Result<Option<UserInfo>, AuthError> {
        match token {
            "bob-token" => Ok(Some(UserInfo {
                name: "bob".into(),
                groups: vec!["system:authenticated".into()],
                ..UserInfo::default()
            })),
            "down" => Err(AuthError::Webhook {
                call: "TokenReview",
                message: "connection refused".into(),
            }),
            _ => Ok(None),
        }
    }
}

/// Alice (and `system:masters`) may do anything; bob only `nodes/stats`.
#[derive(Default)]
struct Access(AtomicUsize);

#[async_trait]
impl AccessReviewer for Access {
    async fn review(&self, a: &Attributes) -> Result<bool, AuthError> {
        self.0.fetch_add(1, Ordering::SeqCst);
        assert_eq!((a.resource.as_str(), a.name.as_str()), ("nodes", "node-a"));
        Ok(a.user.groups.iter().any(|g| g == "system:masters")
            || (a.user.name == "bob" && a.subresource == "stats"))
    }
}

struct Bed {
    addr: std::net::SocketAddr,
    server_ca: String,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

async fn start(anonymous: bool) -> (Bed, Ca, Arc<Access>) {
    let dir = tempfile::tempdir().unwrap();
    let (cert_file, key_file) = tls::self_signed(&dir.path().join("pki"), "127.0.0.1").unwrap();
    let server_ca = std::fs::read_to_string(&cert_file)
        .unwrap()
        .split_inclusive("-----END CERTIFICATE-----\n")
        .nth(1)
        .unwrap()
        .to_owned();
    let client_ca = ca("client-ca");
    let ca_file = dir.path().join("client-ca.crt");
    std::fs::write(&ca_file, &client_ca.pem).unwrap();
    let tls_config = tls::server_config(&TlsOptions {
        cert_file,
        key_file,
        client_ca_file: Some(ca_file),
        ..TlsOptions::default()
    })
    .unwrap();
    let access = Arc::new(Access::default());
    let auth = ServerAuth {
        authenticator: Arc::new(
            NodeAuthenticator::new()
                .with_tokens(Arc::new(Tokens))
                .with_anonymous(anonymous),
        ),
        authorizer: Arc::new(WebhookAuthorizer::new(
            access.clone(),
            std::time::Duration::from_secs(300),
            std::time::Duration::from_secs(30),
        )),
        node_name: "node-a".into(),
    };
    let host = Arc::new(common::FakeHost::default());
    host.pods
        .lock()
        .unwrap()
        .push(common::pod("default", "web", 1));
    let server = Server::bind(
        ServerConfig::new("127.0.0.1:0".parse().unwrap())
            .tls(tls_config)
            .auth(auth),
        host,
        Metrics::new().unwrap(),
    )
    .await
    .unwrap();
    let addr = server.local_addr();
    let stop = CancellationToken::new();
    let shutdown = stop.clone().cancelled_owned();
    let task = tokio::spawn(async move { server.serve(shutdown).await.unwrap() });
    (
        Bed {
            addr,
            server_ca,
            stop,
            task,
            _dir: dir,
        },
        client_ca,
        access,
    )
}

/// A TLS connection to the bed, with an optional client certificate.
async fn tls_connect(
    bed: &Bed,
    cert: Option<&(String, String)>,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, String> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(bed.server_ca.as_bytes()).unwrap())
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let config = match cert {
        Some((cert, key)) => builder
            .with_client_auth_cert(
                vec![CertificateDer::from_pem_slice(cert.as_bytes()).unwrap()],
                PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(bed.addr).await.unwrap();
    let name = ServerName::IpAddress(std::net::Ipv4Addr::LOCALHOST.into());
    connector
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())
}

/// A GET over TLS with an optional client certificate and bearer token:
/// the status and body, or the connection error.
async fn get(
    bed: &Bed,
    cert: Option<&(String, String)>,
    token: Option<&str>,
    path: &str,
) -> Result<(StatusCode, String), String> {
    let stream = tls_connect(bed, cert).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let mut req = Request::get(path).header("host", "127.0.0.1");
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let resp = sender
        .send_request(req.body(Empty::<Bytes>::new()).unwrap())
        .await
        .map_err(|e| e.to_string())?;
    let status = resp.status();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

#[tokio::test]
async fn only_authenticated_and_authorized_requests_are_served() {
    let (bed, client_ca, access) = start(false).await;
    let alice = client_cert(&client_ca, "alice", &["system:masters"], false);

    // No credentials, anonymous off: 401.
    assert_eq!(
        get(&bed, None, None, "/pods").await,
        Ok((StatusCode::UNAUTHORIZED, "Unauthorized".into()))
    );
    // A client certificate of the client CA: its CN and O are the user.
    let (status, body) = get(&bed, Some(&alice), None, "/pods").await.unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.contains("\"PodList\""), "{body}");
    // A certificate from another CA, or an expired one, never gets a
    // response.
    let other = client_cert(&ca("other-ca"), "alice", &["system:masters"], false);
    assert!(get(&bed, Some(&other), None, "/pods").await.is_err());
    let expired = client_cert(&client_ca, "alice", &["system:masters"], true);
    assert!(get(&bed, Some(&expired), None, "/pods").await.is_err());
    // A token the API server accepts, authorized for nodes/stats only.
    let (status, _) = get(&bed, None, Some("bob-token"), "/stats/summary")
        .await
        .unwrap();
    assert_ne!(status, StatusCode::FORBIDDEN);
    assert_ne!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        get(&bed, None, Some("bob-token"), "/pods").await,
        Ok((
            StatusCode::FORBIDDEN,
            "Forbidden (user=bob, verb=get, resource=nodes, subresource=[pods proxy])".into()
        ))
    );
    assert_eq!(
        get(
            &bed,
            None,
            Some("bob-token"),
            "/containerLogs/default/web/c0"
        )
        .await
        .map(|(s, _)| s),
        Ok(StatusCode::FORBIDDEN),
        "logs need nodes/proxy"
    );
    for path in [
        "/exec/default/web/c0?command=id&output=1",
        "/attach/default/web/c0?output=1",
        "/portForward/default/web",
        "/metrics/resource",
    ] {
        assert_eq!(
            get(&bed, None, Some("bob-token"), path)
                .await
                .map(|(s, _)| s),
            Ok(StatusCode::FORBIDDEN),
            "{path}: bob may read nodes/stats only"
        );
    }
    // A token the API server rejects, or cannot review: 401.
    for t in ["stolen", "down"] {
        assert_eq!(
            get(&bed, None, Some(t), "/pods").await.map(|(s, _)| s),
            Ok(StatusCode::UNAUTHORIZED),
            "{t}"
        );
    }
    // Unknown paths are authorized as nodes/proxy before they are 404.
    assert_eq!(
        get(&bed, None, None, "/debug/pprof/").await.map(|(s, _)| s),
        Ok(StatusCode::UNAUTHORIZED)
    );
    assert_eq!(
        get(&bed, Some(&alice), None, "/debug/pprof/")
            .await
            .map(|(s, _)| s),
        Ok(StatusCode::NOT_FOUND)
    );
    // Allowed decisions are cached: alice's second /pods asks nobody.
    let before = access.0.load(Ordering::SeqCst);
    get(&bed, Some(&alice), None, "/pods").await.unwrap();
    assert_eq!(access.0.load(Ordering::SeqCst), before);

    // Plain HTTP on the TLS port gets nothing.
    let tcp = TcpStream::connect(bed.addr).await.unwrap();
    let plain = async {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
        tokio::spawn(conn);
        sender
            .send_request(Request::get("/pods").body(Empty::<Bytes>::new()).unwrap())
            .await
    };
    assert!(plain.await.is_err());

    bed.stop.cancel();
    bed.task.await.unwrap();
}

#[tokio::test]
async fn anonymous_requests_are_authorized_as_system_anonymous() {
    let (bed, _, _) = start(true).await;
    assert_eq!(
        get(&bed, None, None, "/healthz").await,
        Ok((
            StatusCode::FORBIDDEN,
            "Forbidden (user=system:anonymous, verb=get, resource=nodes, subresource=[healthz proxy])"
                .into()
        ))
    );
    // A rejected token is not anonymous.
    assert_eq!(
        get(&bed, None, Some("stolen"), "/healthz")
            .await
            .map(|(s, _)| s),
        Ok(StatusCode::UNAUTHORIZED)
    );
    bed.stop.cancel();
    bed.task.await.unwrap();
}

#[tokio::test]
async fn tls_and_auth_allow_any_address_and_without_them_loopback_only() {
    let dir = tempfile::tempdir().unwrap();
    let (cert_file, key_file) = tls::self_signed(dir.path(), "node-a").unwrap();
    let tls_config = tls::server_config(&TlsOptions {
        cert_file,
        key_file,
        ..TlsOptions::default()
    })
    .unwrap();
    let any: std::net::SocketAddr = "0.0.0.0:0".parse().unwrap();
    let host = || Arc::new(common::FakeHost::default());
    let err = Server::bind(
        ServerConfig::new(any).tls(tls_config.clone()),
        host(),
        Metrics::new().unwrap(),
    )
    .await
    .expect_err("TLS without auth");
    assert!(err.to_string().contains("non-loopback"), "{err}");
    let auth = ServerAuth {
        authenticator: Arc::new(NodeAuthenticator::new()),
        authorizer: Arc::new(kubelet_server::auth::AlwaysAllow),
        node_name: "node-a".into(),
    };
    Server::bind(
        ServerConfig::new(any).tls(tls_config).auth(auth),
        host(),
        Metrics::new().unwrap(),
    )
    .await
    .expect("TLS and auth");
}

/// A thousand connections that never say a word (slowloris) do not keep a
/// legitimate request from being answered, and cost little memory; a
/// 100 MiB request body is never read into memory: the answer comes while
/// the body is still being sent. Each connection is its own task, and a
/// silent one is dropped after the header read timeout (which also bounds
/// the TLS handshake).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connections_and_huge_bodies_starve_nothing() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (bed, client_ca, _) = start(false).await;
    let alice = client_cert(&client_ca, "alice", &["system:masters"], false);
    // Warm up (the first TLS set-up allocates its tables).
    assert_eq!(
        get(&bed, Some(&alice), None, "/pods").await.unwrap().0,
        StatusCode::OK
    );
    let before = kubelet_testbed::rss_bytes();
    let mut silent = Vec::new();
    for _ in 0..1000 {
        silent.push(TcpStream::connect(bed.addr).await.unwrap());
    }
    // Half of them start a TLS handshake and stall: a few bytes of a
    // record header, then nothing.
    for s in silent.iter_mut().step_by(2) {
        s.write_all(&[0x16, 0x03, 0x01]).await.unwrap();
    }
    let started = std::time::Instant::now();
    let (status, body) = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        get(&bed, Some(&alice), None, "/pods"),
    )
    .await
    .expect("answered while 1000 connections hang")
    .unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    let grown = kubelet_testbed::rss_bytes().saturating_sub(before);
    assert!(
        grown < 48 << 20,
        "1000 silent connections grew the RSS by {grown} bytes"
    );

    // 100 MiB announced and streamed to a route that takes no body.
    let stream = tls_connect(&bed, Some(&alice)).await.unwrap();
    let (mut rd, mut wr) = tokio::io::split(stream);
    const SIZE: u64 = 100 << 20;
    let sent = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counter = sent.clone();
    let writer = tokio::spawn(async move {
        wr.write_all(
            format!("POST /stats/summary HTTP/1.1\r\nHost: node\r\nContent-Length: {SIZE}\r\n\r\n")
                .as_bytes(),
        )
        .await?;
        let chunk = vec![b'x'; 64 << 10];
        while counter.load(Ordering::SeqCst) < SIZE {
            wr.write_all(&chunk).await?;
            counter.fetch_add(chunk.len() as u64, Ordering::SeqCst);
        }
        Ok::<_, std::io::Error>(())
    });
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    tokio::time::timeout(std::time::Duration::from_secs(10), async {
        while !head.ends_with(b"\r\n\r\n") {
            rd.read_exact(&mut byte).await.unwrap();
            head.push(byte[0]);
        }
    })
    .await
    .expect("an answer before the body is sent");
    let head = String::from_utf8_lossy(&head).into_owned();
    let at_answer = sent.load(Ordering::SeqCst);
    assert!(head.starts_with("HTTP/1.1 "), "{head}");
    assert!(
        at_answer < SIZE,
        "the body was read to its end ({at_answer} bytes) before the answer"
    );
    writer.abort();
    let grown = kubelet_testbed::rss_bytes().saturating_sub(before);
    assert!(
        grown < 64 << 20,
        "the RSS grew by {grown} bytes (silent connections and a 100 MiB body)"
    );
    drop(silent);
    bed.stop.cancel();
    bed.task.await.unwrap();
}
