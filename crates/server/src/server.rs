//! The HTTP/1 server: accept loop, dispatch through the route table, the
//! handlers, and graceful shutdown (upstream: `ListenAndServeKubeletServer`,
//! `Server.ServeHTTP` and the handlers in `pkg/kubelet/server/server.go`).

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::header::{ALLOW, CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

use crate::auth::{Authenticator, Authorizer, Credentials, UserInfo};
use crate::body::ResponseBody;
use crate::healthz::{self, HealthCheck};
use crate::logs::{self, LogOptions, LogQueryError};
use crate::router::{self, Match, RouteId};
use crate::{Error, LogLookup, Metrics, NodeApi};

const TEXT_PLAIN: &str = "text/plain; charset=utf-8";
const APPLICATION_JSON: &str = "application/json";

/// Who may use the node API: requests are authenticated, then authorized
/// for `nodes/<subresource>` of `node_name` (see [`crate::auth`]).
#[derive(Clone)]
pub struct ServerAuth {
    /// Identifies the user of a request.
    pub authenticator: Arc<dyn Authenticator>,
    /// Decides what the user may do.
    pub authorizer: Arc<dyn Authorizer>,
    /// The node's name (the `name` of the authorized attributes).
    pub node_name: String,
}

impl std::fmt::Debug for ServerAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerAuth")
            .field("node_name", &self.node_name)
            .finish_non_exhaustive()
    }
}

/// How to run the node API server.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    addr: SocketAddr,
    allow_non_loopback: bool,
    tls: Option<Arc<rustls::ServerConfig>>,
    auth: Option<ServerAuth>,
    sync_loop_threshold: Duration,
    max_log_streams: usize,
    shutdown_grace: Duration,
    header_read_timeout: Duration,
    log_poll_interval: Duration,
}

impl ServerConfig {
    /// Serve on `addr` (for example `127.0.0.1:10250`; port 0 picks one).
    /// Defaults: loopback only, `syncloop` threshold 5 minutes (upstream's
    /// `max(2 × syncFrequency 1m, 5m)`), at most 128 concurrent container log
    /// streams, 10 s for in-flight requests at shutdown, 30 s to read request
    /// headers.
    pub fn new(addr: SocketAddr) -> Self {
        ServerConfig {
            addr,
            allow_non_loopback: false,
            tls: None,
            auth: None,
            sync_loop_threshold: Duration::from_secs(5 * 60),
            max_log_streams: 128,
            shutdown_grace: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(30),
            log_poll_interval: Duration::from_millis(250),
        }
    }

    /// The address to bind.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Allow a non-loopback address without TLS and authentication. That
    /// exposes pod specs (with their env), configuration and logs to
    /// whoever reaches the address; only do it behind another guard. With
    /// [`ServerConfig::tls`] and [`ServerConfig::auth`] both set, any
    /// address is allowed without this.
    pub fn allow_non_loopback(mut self, allow: bool) -> Self {
        self.allow_non_loopback = allow;
        self
    }

    /// Serve HTTPS with `config` (see [`crate::tls::server_config`]); a
    /// client certificate it verified authenticates its requests.
    pub fn tls(mut self, config: Arc<rustls::ServerConfig>) -> Self {
        self.tls = Some(config);
        self
    }

    /// Authenticate and authorize every request (upstream
    /// `InstallAuthFilter`); without it every request is served.
    pub fn auth(mut self, auth: ServerAuth) -> Self {
        self.auth = Some(auth);
        self
    }

    /// `/healthz` fails `syncloop` when the sync loop last started longer
    /// ago than this. Upstream: `max(2 × syncFrequency, 5m)`.
    pub fn sync_loop_threshold(mut self, threshold: Duration) -> Self {
        self.sync_loop_threshold = threshold;
        self
    }

    /// At most this many `/containerLogs` responses stream at once; more get
    /// `503`.
    pub fn max_log_streams(mut self, n: usize) -> Self {
        self.max_log_streams = n;
        self
    }

    /// How often a `follow=true` log stream looks for new lines at the end
    /// of the file (default 250 ms). Whether the container still runs and
    /// whether the file was rotated is checked every second, as upstream's
    /// `logForceCheckPeriod`.
    pub fn log_poll_interval(mut self, interval: Duration) -> Self {
        self.log_poll_interval = interval;
        self
    }

    /// How long shutdown waits for in-flight requests before dropping them.
    pub fn shutdown_grace(mut self, grace: Duration) -> Self {
        self.shutdown_grace = grace;
        self
    }
}

struct State {
    host: Arc<dyn NodeApi>,
    metrics: Metrics,
    config: ServerConfig,
    log_streams: Arc<Semaphore>,
    /// Cancelled at shutdown: ends log followers so connections can close.
    shutdown: CancellationToken,
}

/// The node API server, bound and ready to [`serve`](Server::serve).
pub struct Server {
    listener: TcpListener,
    local_addr: SocketAddr,
    state: Arc<State>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

impl Server {
    /// Binds `config.addr()`. Refuses a non-loopback address unless
    /// [`ServerConfig::allow_non_loopback`].
    pub async fn bind(
        config: ServerConfig,
        host: Arc<dyn NodeApi>,
        metrics: Metrics,
    ) -> Result<Server, Error> {
        check_loopback(&config, config.addr)?;
        let listener = TcpListener::bind(config.addr)
            .await
            .map_err(Error::Listen)?;
        Server::from_listener(listener, config, host, metrics)
    }

    /// Serves on a listener the caller bound (`config.addr()` is ignored);
    /// the same loopback rule applies to its local address.
    pub fn from_listener(
        listener: TcpListener,
        config: ServerConfig,
        host: Arc<dyn NodeApi>,
        metrics: Metrics,
    ) -> Result<Server, Error> {
        let local_addr = listener.local_addr().map_err(Error::Listen)?;
        check_loopback(&config, local_addr)?;
        let log_streams = Arc::new(Semaphore::new(config.max_log_streams));
        Ok(Server {
            listener,
            local_addr,
            state: Arc::new(State {
                host,
                metrics,
                config,
                log_streams,
                shutdown: CancellationToken::new(),
            }),
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves until `shutdown` completes, then stops accepting, ends log
    /// followers, and waits up to the configured grace for in-flight
    /// requests. Pass for example `token.cancelled_owned()` or a signal.
    pub async fn serve(self, shutdown: impl Future<Output = ()> + Send) -> Result<(), Error> {
        let Server {
            listener,
            local_addr,
            state,
        } = self;
        tracing::info!(addr = %local_addr, "serving the node API");
        let connections = tokio_util::task::TaskTracker::new();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        let state = state.clone();
                        connections.spawn(async move {
                            serve_connection(state, stream, peer).await;
                        });
                    }
                    Err(e) => {
                        // EMFILE and the like: back off instead of spinning.
                        tracing::warn!(error = %e, "accepting a node API connection failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
                _ = &mut shutdown => break,
            }
        }
        drop(listener);
        // Ends log followers and streaming sessions, and asks every
        // connection to finish its request in flight and close.
        state.shutdown.cancel();
        connections.close();
        tokio::select! {
            _ = connections.wait() => tracing::info!("node API stopped"),
            _ = tokio::time::sleep(state.config.shutdown_grace) => {
                tracing::warn!("node API stopped with requests still in flight");
            }
        }
        Ok(())
    }
}

/// One connection: the TLS handshake when configured (bounded by the
/// header read timeout), then HTTP/1 with the client certificate's user,
/// if any, for every request on it.
async fn serve_connection(state: Arc<State>, stream: tokio::net::TcpStream, peer: SocketAddr) {
    let Some(tls) = state.config.tls.clone() else {
        drive(state, None, TokioIo::new(stream), peer).await;
        return;
    };
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let timeout = state.config.header_read_timeout;
    let stream = match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "node API TLS handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, "node API TLS handshake timed out");
            return;
        }
    };
    let user = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|certs| certs.first())
        .and_then(|leaf| crate::tls::client_certificate_user(leaf.as_ref()));
    drive(state, user.map(Arc::new), TokioIo::new(stream), peer).await;
}

/// Serves HTTP/1 (with upgrades, for streaming) on one connection until it
/// closes, or, once the server shuts down, until its request in flight is
/// answered.
async fn drive<I>(state: Arc<State>, user: Option<Arc<UserInfo>>, io: I, peer: SocketAddr)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let shutdown = state.shutdown.clone();
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(state.config.header_read_timeout)
        .serve_connection(io, service(state, user))
        .with_upgrades();
    tokio::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        _ = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(%peer, error = %e, "node API connection ended with an error");
    }
}

fn service(
    state: Arc<State>,
    client_certificate: Option<Arc<UserInfo>>,
) -> impl hyper::service::Service<
    Request<Incoming>,
    Response = Response<ResponseBody>,
    Error = Infallible,
    Future = impl Future<Output = Result<Response<ResponseBody>, Infallible>> + Send,
> + Clone {
    service_fn(move |req| {
        let state = state.clone();
        let user = client_certificate.clone();
        async move { Ok::<_, Infallible>(handle(state, user.as_deref(), req).await) }
    })
}

fn check_loopback(config: &ServerConfig, addr: SocketAddr) -> Result<(), Error> {
    let secured = config.tls.is_some() && config.auth.is_some();
    if !config.allow_non_loopback && !secured && !addr.ip().is_loopback() {
        return Err(Error::NonLoopbackAddress(addr));
    }
    Ok(())
}

pub(crate) fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<ResponseBody> {
    with_type(status, TEXT_PLAIN, ResponseBody::full(body))
}

fn with_type(status: StatusCode, ct: &'static str, body: ResponseBody) -> Response<ResponseBody> {
    let mut r = Response::new(body);
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(ct));
    r.headers_mut().insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    r
}

/// Upstream `InstallAuthFilter`: `None` lets the request through, else the
/// answer (`401`, `403`, or `500` when the authorizer cannot be asked).
async fn check_auth(
    auth: &ServerAuth,
    client_certificate: Option<&UserInfo>,
    req: &Request<Incoming>,
) -> Option<Response<ResponseBody>> {
    let bearer_token = req
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, token) = v.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        })
        .filter(|t| !t.is_empty());
    let credentials = Credentials {
        client_certificate,
        bearer_token,
    };
    let user = match auth.authenticator.authenticate(&credentials).await {
        Ok(Some(user)) => user,
        Ok(None) => return Some(text(StatusCode::UNAUTHORIZED, "Unauthorized")),
        Err(e) => {
            tracing::info!(error = %e, "node API request not authenticated");
            return Some(text(StatusCode::UNAUTHORIZED, "Unauthorized"));
        }
    };
    let attrs =
        crate::auth::request_attributes(&user, req.method(), req.uri().path(), &auth.node_name);
    for a in &attrs {
        match auth.authorizer.authorize(a).await {
            Ok(true) => return None,
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(error = %e, user = %a.user.name, verb = %a.verb,
                    subresource = %a.subresource, "node API authorization error");
                return Some(text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!(
                        "Authorization error (user={}, verb={}, resource={}, subresource={})",
                        a.user.name, a.verb, a.resource, a.subresource
                    ),
                ));
            }
        }
    }
    let subresources: Vec<&str> = attrs.iter().map(|a| a.subresource.as_str()).collect();
    Some(text(
        StatusCode::FORBIDDEN,
        format!(
            "Forbidden (user={}, verb={}, resource=nodes, subresource=[{}])",
            user.name,
            attrs.first().map(|a| a.verb.as_str()).unwrap_or_default(),
            subresources.join(" ")
        ),
    ))
}

async fn handle(
    state: Arc<State>,
    client_certificate: Option<&UserInfo>,
    req: Request<Incoming>,
) -> Response<ResponseBody> {
    let start = Instant::now();
    let method = req.method().clone();
    if let Some(auth) = &state.config.auth
        && let Some(refused) = check_auth(auth, client_certificate, &req).await
    {
        tracing::debug!(method = %method, path = req.uri().path(),
            status = refused.status().as_u16(), "node API request refused");
        state.metrics.observe_http_request(
            router::method_bucket(&method),
            "other",
            start.elapsed().as_secs_f64(),
        );
        return refused;
    }
    let matched = router::route(&method, req.uri().path());
    if let Match::Found(route, params) = &matched
        && matches!(
            route.id,
            RouteId::Exec | RouteId::Attach | RouteId::PortForward
        )
    {
        let route: &'static router::Route = route;
        let params = params.iter().map(|p| (*p).to_owned()).collect();
        let response = stream_session(&state, route.id, params, req).await;
        state.metrics.observe_http_request(
            router::method_bucket(&method),
            route.name,
            start.elapsed().as_secs_f64(),
        );
        return response;
    }
    let path = req.uri().path();
    let query = req.uri().query();
    let (response, bucket) = match matched {
        Match::Found(route, params) => (
            dispatch(&state, route.id, &method, &params, query).await,
            route.name,
        ),
        Match::MethodNotAllowed(route) => {
            let allow: Vec<&str> = route.methods.iter().map(Method::as_str).collect();
            let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed");
            if let Ok(v) = HeaderValue::from_str(&allow.join(", ")) {
                r.headers_mut().insert(ALLOW, v);
            }
            (r, route.name)
        }
        Match::NotFound => (text(StatusCode::NOT_FOUND, "404 page not found\n"), "other"),
    };
    tracing::debug!(method = %method, path, status = response.status().as_u16(), "node API request");
    state.metrics.observe_http_request(
        router::method_bucket(&method),
        bucket,
        start.elapsed().as_secs_f64(),
    );
    response
}

async fn dispatch(
    state: &Arc<State>,
    id: RouteId,
    method: &Method,
    params: &[&str],
    query: Option<&str>,
) -> Response<ResponseBody> {
    match id {
        RouteId::Healthz => {
            let r = healthz::root(
                query,
                state.host.sync_loop_last_entered(),
                &state.host.pleg_healthy(),
                state.config.sync_loop_threshold,
                Instant::now(),
            );
            healthz_response(r)
        }
        RouteId::HealthzCheck => {
            let name = params.first().map(|p| decode(p)).unwrap_or_default();
            match name.as_deref().and_then(HealthCheck::from_name) {
                Some(check) => healthz_response(healthz::single(
                    check,
                    state.host.sync_loop_last_entered(),
                    &state.host.pleg_healthy(),
                    state.config.sync_loop_threshold,
                    Instant::now(),
                )),
                None => text(StatusCode::NOT_FOUND, "404 page not found\n"),
            }
        }
        RouteId::Pods => {
            let pods = state.host.pods().await;
            match encode_pods(&pods) {
                Ok(b) => with_type(StatusCode::OK, APPLICATION_JSON, ResponseBody::full(b)),
                Err(e) => internal(&e.into()),
            }
        }
        RouteId::Metrics => match state.metrics.encode() {
            Ok(s) => with_type(StatusCode::OK, Metrics::CONTENT_TYPE, ResponseBody::full(s)),
            Err(e) => internal(&e),
        },
        RouteId::Configz => {
            let config = state.host.kubelet_config().await;
            match serde_json::to_vec(&serde_json::json!({ "kubeletconfig": config })) {
                Ok(b) => with_type(StatusCode::OK, APPLICATION_JSON, ResponseBody::full(b)),
                Err(e) => internal(&e.into()),
            }
        }
        RouteId::StatsSummary => {
            let only_cpu_and_memory = query.is_some_and(|q| {
                let vals: Vec<_> = form_urlencoded::parse(q.as_bytes())
                    .filter(|(k, _)| k == "only_cpu_and_memory")
                    .collect();
                vals.len() == 1 && vals[0].1 == "true"
            });
            match state.host.stats_summary().await {
                Ok(s) => {
                    let s = if only_cpu_and_memory {
                        s.cpu_and_memory_only()
                    } else {
                        s
                    };
                    // go-restful pretty-prints WriteAsJson by default.
                    match serde_json::to_vec_pretty(&s) {
                        Ok(b) => with_type(StatusCode::OK, APPLICATION_JSON, ResponseBody::full(b)),
                        Err(e) => internal(&e.into()),
                    }
                }
                Err(e) => internal(&e),
            }
        }
        RouteId::ContainerLogs => container_logs(state, method, params, query).await,
        RouteId::Run => run_in_container(state, params, query).await,
        RouteId::MetricsResource => {
            // Upstream's collector asks for CPU and memory only, and
            // answers a scrape error, not a failed request, when it cannot.
            let summary = match state.host.stats_summary().await {
                Ok(s) => Some(s.cpu_and_memory_only()),
                Err(e) => {
                    tracing::error!(error = %e, "no summary for the resource metrics endpoint");
                    None
                }
            };
            match crate::resource_metrics::render(summary.as_ref()) {
                Ok(s) => with_type(StatusCode::OK, Metrics::CONTENT_TYPE, ResponseBody::full(s)),
                Err(e) => internal(&e),
            }
        }
        RouteId::MetricsProbes => match state.metrics.encode_probes() {
            Ok(s) => with_type(StatusCode::OK, Metrics::CONTENT_TYPE, ResponseBody::full(s)),
            Err(e) => internal(&e),
        },
        // Served by `stream_session` before dispatch.
        RouteId::Exec | RouteId::Attach | RouteId::PortForward => {
            text(StatusCode::NOT_FOUND, "404 page not found\n")
        }
    }
}

/// `/exec`, `/attach`, `/portForward` (upstream `getExec`, `getAttach`,
/// `getPortForward`): the options, the names, the runtime's streaming URL
/// from the host, then the upgraded connection proxied to it.
async fn stream_session(
    state: &Arc<State>,
    id: RouteId,
    params: Vec<String>,
    req: Request<Incoming>,
) -> Response<ResponseBody> {
    use crate::stream::{StreamLookup, StreamRequest};
    let names: Option<Vec<String>> = params.iter().map(|p| decode(p)).collect();
    let Some(names) = names.filter(|n| !n.iter().any(|x| bad_name(x))) else {
        return text(StatusCode::BAD_REQUEST, "invalid name in the path");
    };
    let request = if id == RouteId::PortForward {
        let (namespace, pod, uid) = match names.as_slice() {
            [ns, pod] => (ns.clone(), pod.clone(), None),
            [ns, pod, uid] => (ns.clone(), pod.clone(), Some(uid.clone())),
            _ => return text(StatusCode::NOT_FOUND, "404 page not found\n"),
        };
        let ports = match crate::stream::websocket_ports(&req) {
            Ok(p) => p,
            Err(e) => return text(StatusCode::BAD_REQUEST, e),
        };
        StreamRequest::PortForward {
            namespace,
            pod,
            uid,
            ports,
        }
    } else {
        let (options, command) = match crate::stream::options(req.uri().query()) {
            Ok(x) => x,
            Err(e) => return text(StatusCode::BAD_REQUEST, e),
        };
        let (namespace, pod, uid, container) = match names.as_slice() {
            [ns, pod, c] => (ns.clone(), pod.clone(), None, c.clone()),
            [ns, pod, uid, c] => (ns.clone(), pod.clone(), Some(uid.clone()), c.clone()),
            _ => return text(StatusCode::NOT_FOUND, "404 page not found\n"),
        };
        if id == RouteId::Exec {
            StreamRequest::Exec {
                namespace,
                pod,
                uid,
                container,
                command,
                options,
            }
        } else {
            StreamRequest::Attach {
                namespace,
                pod,
                uid,
                container,
                options,
            }
        }
    };
    match state.host.stream_url(&request).await {
        StreamLookup::Url(url) => {
            if !crate::stream::is_upgrade(&req) {
                return text(StatusCode::BAD_REQUEST, "Upgrade request required");
            }
            crate::stream::proxy(req, &url, state.shutdown.clone()).await
        }
        StreamLookup::PodNotFound => text(StatusCode::NOT_FOUND, "pod does not exist"),
        StreamLookup::ContainerNotFound => text(StatusCode::NOT_FOUND, "container not found"),
        StreamLookup::Failed(message) => {
            tracing::warn!(?request, %message, "node API streaming request failed");
            text(StatusCode::INTERNAL_SERVER_ERROR, message)
        }
    }
}

fn healthz_response(r: healthz::HealthzResponse) -> Response<ResponseBody> {
    let status = if r.ok {
        StatusCode::OK
    } else {
        StatusCode::INTERNAL_SERVER_ERROR
    };
    text(status, r.body)
}

fn internal(e: &Error) -> Response<ResponseBody> {
    tracing::error!(error = %e, "node API internal error");
    text(
        StatusCode::INTERNAL_SERVER_ERROR,
        format!("Internal Error: {e}"),
    )
}

/// Upstream's `encodePods`: a `v1` `PodList` (`items` is `[]` rather than
/// Go's `null` when there are no pods), with the apimachinery JSON
/// serializer's trailing newline.
pub(crate) fn encode_pods(pods: &[Pod]) -> Result<Vec<u8>, serde_json::Error> {
    let mut buf = Vec::with_capacity(64 + pods.len() * 2048);
    buf.extend_from_slice(br#"{"kind":"PodList","apiVersion":"v1","metadata":{},"items":"#);
    serde_json::to_writer(&mut buf, pods)?;
    buf.extend_from_slice(b"}\n");
    Ok(buf)
}

/// The wall clock as a timestamp (for `sinceSeconds`).
fn now() -> Timestamp {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    Timestamp::new(d.as_secs() as i64, d.subsec_nanos() as i32).unwrap_or(Timestamp::UNIX_EPOCH)
}

/// Percent-decodes a path segment; `None` if it is not UTF-8.
fn decode(segment: &str) -> Option<String> {
    percent_encoding::percent_decode_str(segment)
        .decode_utf8()
        .ok()
        .map(|c| c.into_owned())
}

/// `POST /run/{namespace}/{pod}[/{uid}]/{container}?cmd=...` (upstream
/// `getRun`): the command, split on single spaces as upstream's
/// `strings.Split`, runs to completion in the container (CRI `ExecSync`)
/// and its stdout then stderr are the body, served as `application/json`
/// as upstream's `writeJSONResponse` does whatever the bytes are.
async fn run_in_container(
    state: &Arc<State>,
    params: &[&str],
    query: Option<&str>,
) -> Response<ResponseBody> {
    let names: Option<Vec<String>> = params.iter().map(|p| decode(p)).collect();
    let Some(names) = names.filter(|n| !n.iter().any(|x| bad_name(x))) else {
        return text(StatusCode::BAD_REQUEST, "invalid name in the path");
    };
    let (namespace, pod, uid, container) = match names.as_slice() {
        [ns, pod, c] => (ns, pod, None, c),
        [ns, pod, uid, c] => (ns, pod, Some(uid.as_str()), c),
        _ => return text(StatusCode::NOT_FOUND, "404 page not found\n"),
    };
    let cmd = form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .find(|(k, _)| k == "cmd")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default();
    let command: Vec<String> = cmd.split(' ').map(str::to_owned).collect();
    match state
        .host
        .run_in_container(namespace, pod, uid, container, &command)
        .await
    {
        crate::RunOutcome::Output(bytes) => {
            with_type(StatusCode::OK, APPLICATION_JSON, ResponseBody::full(bytes))
        }
        crate::RunOutcome::PodNotFound => text(StatusCode::NOT_FOUND, "pod does not exist"),
        crate::RunOutcome::Failed(message) => {
            tracing::info!(namespace, pod, container, %message, "node API run failed");
            text(StatusCode::INTERNAL_SERVER_ERROR, message)
        }
    }
}

/// A name that must not reach the host: empty, or with `/`, `..` or NUL.
fn bad_name(name: &str) -> bool {
    name.is_empty() || name.contains('/') || name.contains("..") || name.contains('\0')
}

async fn container_logs(
    state: &Arc<State>,
    method: &Method,
    params: &[&str],
    query: Option<&str>,
) -> Response<ResponseBody> {
    let [ns, pod, container] = params else {
        return text(StatusCode::NOT_FOUND, "404 page not found\n");
    };
    let (Some(ns), Some(pod), Some(container)) = (decode(ns), decode(pod), decode(container))
    else {
        return text(StatusCode::BAD_REQUEST, "invalid path encoding");
    };
    // Upstream answers a missing name with a JSON message and 400.
    for (name, missing) in [
        (&pod, r#"{"message": "Missing podID."}"#),
        (&container, r#"{"message": "Missing container name."}"#),
        (&ns, r#"{"message": "Missing podNamespace."}"#),
    ] {
        if name.is_empty() {
            return text(StatusCode::BAD_REQUEST, missing);
        }
        if bad_name(name) {
            tracing::warn!(name = %name.escape_debug(), "refusing a container log request with an unsafe name");
            return text(StatusCode::BAD_REQUEST, r#"{"message": "Invalid name."}"#);
        }
    }
    let opts = match LogOptions::from_query(query, now()) {
        Ok(o) => o,
        Err(LogQueryError::Decode(e)) => {
            tracing::debug!(error = %e, "container log query does not decode");
            return text(
                StatusCode::BAD_REQUEST,
                r#"{"message": "Unable to decode query."}"#,
            );
        }
        Err(LogQueryError::Invalid(e)) => {
            tracing::debug!(error = %e, "container log query is invalid");
            return text(
                StatusCode::UNPROCESSABLE_ENTITY,
                r#"{"message": "Invalid request."}"#,
            );
        }
    };
    let found = match state
        .host
        .container_log(&ns, &pod, &container, opts.previous)
        .await
    {
        LogLookup::Found(l) => l,
        LogLookup::PodNotFound => {
            return text(StatusCode::NOT_FOUND, format!("pod {pod:?} does not exist"));
        }
        LogLookup::ContainerNotFound => {
            return text(
                StatusCode::NOT_FOUND,
                format!("container {container:?} not found in pod {pod:?}"),
            );
        }
        LogLookup::Unavailable(msg) => return text(StatusCode::BAD_REQUEST, msg),
    };
    let file = match logs::open_log_file(&found.path) {
        Ok(f) => f,
        Err(e) => {
            if matches!(e, Error::UnsafeLogFile(_)) {
                tracing::warn!(error = %e, "refusing to serve a container log");
            }
            // Upstream answers a failed ReadLogs with 400.
            return text(StatusCode::BAD_REQUEST, e.to_string());
        }
    };
    let Ok(permit) = state.log_streams.clone().try_acquire_owned() else {
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many concurrent container log streams",
        );
    };
    if *method == Method::HEAD {
        return with_type(StatusCode::OK, TEXT_PLAIN, ResponseBody::empty());
    }
    let (tx, rx) = mpsc::channel::<Bytes>(8);
    let follow = opts.follow.then(|| logs::Follow {
        host: state.host.clone(),
        container_id: found.container_id.clone(),
        shutdown: state.shutdown.clone(),
        poll_interval: state.config.log_poll_interval,
    });
    let path = found.path;
    tokio::spawn(async move {
        let _permit = permit;
        if let Err(e) = logs::stream_log(file, path, opts, follow, tx).await {
            tracing::warn!(error = %e, "streaming a container log failed");
        }
    });
    with_type(StatusCode::OK, TEXT_PLAIN, ResponseBody::channel(rx))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pods_encode_as_a_v1_podlist() {
        let pods = vec![Pod::default()];
        let b = encode_pods(&pods).unwrap();
        assert!(b.starts_with(br#"{"kind":"PodList","apiVersion":"v1","metadata":{},"items":[{"#));
        assert!(b.ends_with(b"}]}\n"));
        let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(v["items"].as_array().map(Vec::len), Some(1));
        assert_eq!(
            encode_pods(&[]).unwrap(),
            br#"{"kind":"PodList","apiVersion":"v1","metadata":{},"items":[]}
"#
        );
    }

    #[test]
    fn names_are_checked() {
        for bad in ["", "a/b", "..", "a..b", "a\0"] {
            assert!(bad_name(bad), "{bad:?}");
        }
        for ok in ["nginx", "kube-system", "a.b"] {
            assert!(!bad_name(ok));
        }
        assert_eq!(decode("a%2Fb").as_deref(), Some("a/b"));
        assert_eq!(decode("%ff"), None);
    }

    #[test]
    fn non_loopback_needs_opt_in() {
        let addr: SocketAddr = "0.0.0.0:10250".parse().unwrap();
        let c = ServerConfig::new(addr);
        assert!(matches!(
            check_loopback(&c, addr),
            Err(Error::NonLoopbackAddress(_))
        ));
        let c = c.allow_non_loopback(true);
        assert!(check_loopback(&c, addr).is_ok());
        let lo: SocketAddr = "[::1]:10250".parse().unwrap();
        assert!(check_loopback(&ServerConfig::new(lo), lo).is_ok());
    }
}
