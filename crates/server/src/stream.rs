//! `/exec`, `/attach` and `/portForward` (upstream `getExec`, `getAttach`,
//! `getPortForward` and `proxyStream` in `pkg/kubelet/server/server.go`):
//! the runtime prepares the session (CRI `Exec`, `Attach`, `PortForward`)
//! and answers with a URL on its own streaming server; the kubelet proxies
//! the client's upgraded connection (SPDY/3.1 or WebSocket, whichever the
//! client asked for: the streaming server negotiates it) to that URL and
//! then copies bytes both ways until either side closes or the server shuts
//! down (upstream `proxy.NewUpgradeAwareHandler` with `upgradeRequired`).

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Incoming;
use hyper::header::{CONNECTION, HOST, UPGRADE};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio_util::sync::CancellationToken;

use crate::body::ResponseBody;
use crate::server::text;

/// A streaming session the node API asks the host to prepare.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamRequest {
    /// `/exec/{namespace}/{pod}[/{uid}]/{container}?command=...`.
    Exec {
        /// The pod's namespace.
        namespace: String,
        /// The pod's name.
        pod: String,
        /// The pod's UID when the path names it.
        uid: Option<String>,
        /// The container.
        container: String,
        /// The command (`command`, repeated).
        command: Vec<String>,
        /// What is streamed.
        options: StreamOptions,
    },
    /// `/attach/{namespace}/{pod}[/{uid}]/{container}`.
    Attach {
        /// The pod's namespace.
        namespace: String,
        /// The pod's name.
        pod: String,
        /// The pod's UID when the path names it.
        uid: Option<String>,
        /// The container.
        container: String,
        /// What is streamed.
        options: StreamOptions,
    },
    /// `/portForward/{namespace}/{pod}[/{uid}]`.
    PortForward {
        /// The pod's namespace.
        namespace: String,
        /// The pod's name.
        pod: String,
        /// The pod's UID when the path names it.
        uid: Option<String>,
        /// The ports of a WebSocket session (every `port` query parameter,
        /// each a comma-separated list; upstream `portforward.NewV4Options`),
        /// passed to the runtime's `PortForward` request; empty for SPDY,
        /// whose client opens a stream per port.
        ports: Vec<i32>,
    },
}

/// Which streams a session has (upstream `remotecommand.Options`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StreamOptions {
    /// `input=1`.
    pub stdin: bool,
    /// `output=1`.
    pub stdout: bool,
    /// `error=1` (never with a TTY).
    pub stderr: bool,
    /// `tty=1`.
    pub tty: bool,
}

/// What the host answers for a [`StreamRequest`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamLookup {
    /// The runtime's streaming URL for the session.
    Url(String),
    /// No such pod: `404 pod does not exist`.
    PodNotFound,
    /// No such container in the pod: `404`.
    ContainerNotFound,
    /// The runtime refused or failed: `500` with this message.
    Failed(String),
}

/// The session options of the query (upstream `remotecommandserver.NewOptions`
/// with `k8s.io/api/core/v1`'s parameter names): `input`, `output`,
/// `error`, `tty` are on when `1`; a TTY has no separate stderr; at least
/// one stream is needed.
pub(crate) fn options(query: Option<&str>) -> Result<(StreamOptions, Vec<String>), String> {
    let mut o = StreamOptions::default();
    let mut command = Vec::new();
    for (k, v) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        match k.as_ref() {
            "input" => o.stdin = v == "1",
            "output" => o.stdout = v == "1",
            "error" => o.stderr = v == "1",
            "tty" => o.tty = v == "1",
            "command" => command.push(v.into_owned()),
            _ => {}
        }
    }
    if o.tty {
        o.stderr = false;
    }
    if !o.stdin && !o.stdout && !o.stderr {
        return Err("you must specify at least 1 of stdin, stdout, stderr".into());
    }
    Ok((o, command))
}

/// The ports of a port-forward request (upstream `portforward.NewV4Options`,
/// `k8s.io/kubelet/pkg/cri/streaming/portforward/websocket.go`): none for a
/// SPDY upgrade; for a WebSocket one, every `port` query parameter, each a
/// comma-separated list of ports in 1–65535, at least one. The runtime's
/// streaming server serves a WebSocket session (`v4.channel.k8s.io`) on
/// exactly the ports of its `PortForward` request, so without them it
/// forwards nothing.
pub(crate) fn websocket_ports<B>(req: &Request<B>) -> Result<Vec<i32>, String> {
    if !is_websocket(req) {
        return Ok(Vec::new());
    }
    let mut ports = Vec::new();
    let mut seen = false;
    for (k, v) in form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes()) {
        if k != "port" {
            continue;
        }
        seen = true;
        if v.is_empty() {
            return Err(r#"query parameter "port" cannot be empty"#.into());
        }
        for p in v.split(',') {
            match p.parse::<u16>() {
                Ok(0) => return Err(format!("port {v:?} must be > 0")),
                Ok(port) => ports.push(i32::from(port)),
                Err(e) => return Err(format!("unable to parse {v:?} as a port: {e}")),
            }
        }
    }
    if !seen {
        return Err(r#"query parameter "port" is required"#.into());
    }
    Ok(ports)
}

/// Whether the request asks for a WebSocket (upstream
/// `wsstream.IsWebSocketRequest`: `Connection` names `upgrade` and
/// `Upgrade` is `websocket`, both case-insensitively).
pub(crate) fn is_websocket<B>(req: &Request<B>) -> bool {
    connection_upgrade(req)
        && req
            .headers()
            .get(UPGRADE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("websocket"))
}

fn connection_upgrade<B>(req: &Request<B>) -> bool {
    req.headers()
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}

/// Whether the request asks to upgrade its connection.
pub(crate) fn is_upgrade(req: &Request<Incoming>) -> bool {
    connection_upgrade(req) && req.headers().contains_key(UPGRADE)
}

/// Proxies the upgrade request `req` to the runtime's streaming `url`.
/// Only `http://` URLs on the streaming server are followed (containerd's
/// and CRI-O's default).
pub(crate) async fn proxy(
    mut req: Request<Incoming>,
    url: &str,
    shutdown: CancellationToken,
) -> Response<ResponseBody> {
    let Ok(target) = url.parse::<hyper::Uri>() else {
        return text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the runtime's streaming URL {url:?} is not a URL"),
        );
    };
    if target.scheme_str() != Some("http") {
        return text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the runtime's streaming URL {url:?} is not http://"),
        );
    }
    let Some(authority) = target.authority().cloned() else {
        return text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the runtime's streaming URL {url:?} has no host"),
        );
    };
    let port = authority.port_u16().unwrap_or(80);
    let backend = match tokio::net::TcpStream::connect((authority.host(), port)).await {
        Ok(s) => s,
        Err(e) => {
            return text(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("connecting to the runtime's streaming server: {e}"),
            );
        }
    };
    let (mut sender, conn) =
        match hyper::client::conn::http1::handshake(TokioIo::new(backend)).await {
            Ok(x) => x,
            Err(e) => {
                return text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("the runtime's streaming server: {e}"),
                );
            }
        };
    tokio::spawn(conn.with_upgrades());
    // The client's request as it came, to the runtime's path, without its
    // credentials (they were for this server).
    let path = target
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "/".into());
    let mut out = Request::builder().method(req.method().clone()).uri(path);
    for (name, value) in req.headers() {
        if name == HOST || name == hyper::header::AUTHORIZATION {
            continue;
        }
        out = out.header(name, value);
    }
    out = out.header(HOST, authority.as_str());
    let Ok(out) = out.body(Empty::<Bytes>::new()) else {
        return text(
            StatusCode::INTERNAL_SERVER_ERROR,
            "building the proxied request",
        );
    };
    let client_upgrade = hyper::upgrade::on(&mut req);
    let mut answer = match sender.send_request(out).await {
        Ok(r) => r,
        Err(e) => {
            return text(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("the runtime's streaming server: {e}"),
            );
        }
    };
    if answer.status() != StatusCode::SWITCHING_PROTOCOLS {
        // The runtime's own answer (a bad token, a refused protocol), at
        // most 64 KiB of it.
        let status = answer.status();
        let body = Limited::new(answer.into_body(), 64 << 10)
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        return text(status, body);
    }
    let mut response = Response::new(ResponseBody::empty());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    for (name, value) in answer.headers() {
        response.headers_mut().append(name, value.clone());
    }
    let backend_upgrade = hyper::upgrade::on(&mut answer);
    tokio::spawn(async move {
        let (client, backend) = match tokio::try_join!(client_upgrade, backend_upgrade) {
            Ok(x) => x,
            Err(e) => {
                tracing::debug!(error = %e, "a streaming upgrade failed");
                return;
            }
        };
        let mut client = TokioIo::new(client);
        let mut backend = TokioIo::new(backend);
        tokio::select! {
            r = tokio::io::copy_bidirectional(&mut client, &mut backend) => {
                if let Err(e) = r {
                    tracing::debug!(error = %e, "a streaming session ended with an error");
                }
            }
            _ = shutdown.cancelled() => {}
        }
    });
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_follow_upstream() {
        let (o, cmd) = options(Some(
            "command=sh&command=-c&command=echo%20hi&output=1&error=1",
        ))
        .expect("ok");
        assert_eq!(cmd, ["sh", "-c", "echo hi"]);
        assert!(o.stdout && o.stderr && !o.stdin && !o.tty);
        let (o, _) = options(Some("input=1&output=1&error=1&tty=1")).expect("tty");
        assert!(o.tty && !o.stderr, "a TTY has no separate stderr");
        assert!(
            options(Some("command=ls&output=true")).is_err(),
            "only 1 is on"
        );
        assert_eq!(
            options(None).unwrap_err(),
            "you must specify at least 1 of stdin, stdout, stderr"
        );
    }

    fn port_forward(query: &str, websocket: bool) -> Request<()> {
        let mut b = Request::get(format!("/portForward/ns/pod?{query}"));
        if websocket {
            b = b
                .header(CONNECTION, "keep-alive, Upgrade")
                .header(UPGRADE, "WebSocket");
        } else {
            b = b.header(CONNECTION, "Upgrade").header(UPGRADE, "SPDY/3.1");
        }
        b.body(()).unwrap()
    }

    #[test]
    fn websocket_port_forwards_name_their_ports_as_upstream_v4_options() {
        assert_eq!(
            websocket_ports(&port_forward("port=80&port=8080,9090", true)),
            Ok(vec![80, 8080, 9090])
        );
        // SPDY: the client names a port per stream, the query none.
        assert_eq!(websocket_ports(&port_forward("", false)), Ok(vec![]));
        assert_eq!(
            websocket_ports(&port_forward("ports=80", true)).unwrap_err(),
            r#"query parameter "port" is required"#
        );
        assert_eq!(
            websocket_ports(&port_forward("port=", true)).unwrap_err(),
            r#"query parameter "port" cannot be empty"#
        );
        assert!(websocket_ports(&port_forward("port=0", true)).is_err());
        assert!(websocket_ports(&port_forward("port=65536", true)).is_err());
        assert!(websocket_ports(&port_forward("port=80,x", true)).is_err());
    }
}
