//! HTTP(S) GET probes (upstream `pkg/probe/http/http.go` and `request.go`).
//!
//! As upstream's prober:
//!
//! - the URL is `<scheme>://<host>:<port><path>`; the host defaults to the
//!   pod IP, the port may name one of the container's ports;
//! - the headers are the probe's `httpHeaders`; a `Host` header overrides the
//!   request's host; `User-Agent: kube-probe/<major.minor>` and
//!   `Accept: */*` are added unless the probe sets them (an empty `Accept`
//!   removes it); `Connection: close` (no keep-alive), no compression;
//! - status 200..=399 is a success; anything else, or any transport error or
//!   timeout, a failure with the message `HTTP probe failed with statuscode:
//!   <code>` (never the body, upstream issue 99425);
//! - redirects are followed, at most 10, only while they stay on the same
//!   host name; a redirect to another host is not followed and counts as a
//!   success with a warning (`Probe terminated redirects`);
//! - at most 10 KiB of the body is read;
//! - `https` does not verify the server's certificate (upstream's
//!   `InsecureSkipVerify: true`), via rustls.
//!
//! The `timeout` covers the whole exchange, redirects and body included
//! (Go's `http.Client.Timeout`).

use std::sync::Arc;
use std::time::Duration;

use http::header::{self, HeaderName, HeaderValue};
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::{Container, HTTPGetAction};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use super::{MAX_OUTPUT_LENGTH, Outcome, join_host_port, resolve_container_port};
use crate::Error;

/// Go's client gives up after this many requests in one redirect chain.
pub const MAX_REDIRECTS: usize = 10;

/// One HTTP probe request, built from a probe's `httpGet` (upstream
/// `NewRequestForHTTPGetAction`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpRequest {
    /// `http` or `https` (lower case).
    pub scheme: String,
    /// The host to connect to (an IP or a name; no brackets).
    pub host: String,
    /// The port to connect to.
    pub port: u16,
    /// The request target: path and query, starting with `/`.
    pub path: String,
    /// The headers to send, in order, names as written. A `Host` entry is
    /// sent as the request's host instead of `host:port`.
    pub headers: Vec<(String, String)>,
}

impl HttpRequest {
    /// Builds the request for `action` on `container` of a pod whose IP is
    /// `pod_ip` (used when `action.host` is empty), with `user_agent` unless
    /// the probe sets one.
    pub fn for_http_get_action(
        action: &HTTPGetAction,
        container: &Container,
        pod_ip: &str,
        user_agent: &str,
    ) -> Result<Self, Error> {
        let scheme = action
            .scheme
            .as_deref()
            .map(str::to_ascii_lowercase)
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "http".to_owned());
        let host = match action.host.as_deref() {
            Some(h) if !h.is_empty() => h.to_owned(),
            _ if !pod_ip.is_empty() => pod_ip.to_owned(),
            _ => return Err(Error::NoPodIp(container.name.clone())),
        };
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = resolve_container_port(&action.port, container)?;
        let path = request_target(action.path.as_deref().unwrap_or(""));

        let mut headers: Vec<(String, String)> = action
            .http_headers
            .iter()
            .flatten()
            .map(|h| (h.name.clone(), h.value.clone()))
            .collect();
        let has = |hs: &[(String, String)], name: &str| {
            hs.iter().any(|(n, _)| n.eq_ignore_ascii_case(name))
        };
        if !has(&headers, "user-agent") {
            headers.push(("User-Agent".to_owned(), user_agent.to_owned()));
        }
        if !has(&headers, "accept") {
            headers.push(("Accept".to_owned(), "*/*".to_owned()));
        } else {
            // An Accept header overridden with an empty value is removed.
            let first_empty = headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case("accept"))
                .is_some_and(|(_, v)| v.is_empty());
            if first_empty {
                headers.retain(|(n, _)| !n.eq_ignore_ascii_case("accept"));
            }
        }
        Ok(Self {
            scheme,
            host,
            port,
            path,
            headers,
        })
    }

    /// The URL, for messages.
    pub fn url(&self) -> String {
        format!(
            "{}://{}{}",
            self.scheme,
            join_host_port(&self.host, self.port),
            self.path
        )
    }

    /// The value of the first `Host` header, if the probe set one.
    fn host_override(&self) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("host"))
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    }
}

/// Turns a probe's `path` into a request target as upstream's `formatURL`
/// does: a scheme and authority in it are dropped (the probe's own replace
/// them), a fragment is dropped, a leading `/` is added, and characters not
/// allowed in a URL are percent-encoded.
fn request_target(path: &str) -> String {
    let mut p = path;
    if let Some(rest) = strip_scheme(p) {
        p = rest;
    }
    if let Some(rest) = p.strip_prefix("//") {
        p = rest.find('/').map_or("", |i| &rest[i..]);
    }
    let p = p.split('#').next().unwrap_or("");
    let mut out = String::with_capacity(p.len() + 1);
    if !p.starts_with('/') {
        out.push('/');
    }
    for b in p.bytes() {
        let allowed = b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/?%".contains(&b);
        if allowed {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The rest of `s` after a URL scheme and `:`, if `s` starts with one.
fn strip_scheme(s: &str) -> Option<&str> {
    let colon = s.find(':')?;
    let scheme = &s[..colon];
    let mut chars = scheme.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic());
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c));
    (first_ok && rest_ok).then(|| &s[colon + 1..])
}

/// Where one request of a redirect chain goes.
#[derive(Clone, Debug)]
struct Target {
    scheme: String,
    host: String,
    port: u16,
    path: String,
}

impl Target {
    fn url(&self) -> String {
        format!(
            "{}://{}{}",
            self.scheme,
            join_host_port(&self.host, self.port),
            self.path
        )
    }

    /// Resolves a `Location` header against this target (RFC 3986 §5.2).
    /// Returns the next target and whether the location was relative (had
    /// no scheme or authority).
    fn resolve(&self, location: &str) -> Result<(Target, bool), String> {
        let location = location.split('#').next().unwrap_or("");
        let (scheme, rest) = match strip_scheme(location) {
            Some(rest) => (
                location[..location.len() - rest.len() - 1].to_ascii_lowercase(),
                rest,
            ),
            None => (self.scheme.clone(), location),
        };
        if let Some(after) = rest.strip_prefix("//") {
            let end = after.find(['/', '?']).unwrap_or(after.len());
            let authority = &after[..end];
            let authority = authority.rsplit('@').next().unwrap_or(authority);
            let (host, port) = split_authority(authority, &scheme)?;
            let path = request_target(&remove_dot_segments(&after[end..]));
            return Ok((
                Target {
                    scheme,
                    host,
                    port,
                    path,
                },
                false,
            ));
        }
        if scheme != self.scheme && strip_scheme(location).is_some() {
            return Err(format!("unsupported redirect location {location:?}"));
        }
        let merged = if rest.starts_with('/') {
            rest.to_owned()
        } else if rest.is_empty() {
            self.path.clone()
        } else if let Some(query) = rest.strip_prefix('?') {
            let base = self.path.split('?').next().unwrap_or("/");
            format!("{base}?{query}")
        } else {
            let base = self.path.split('?').next().unwrap_or("/");
            let dir = base.rfind('/').map_or("/", |i| &base[..=i]);
            format!("{dir}{rest}")
        };
        Ok((
            Target {
                scheme,
                host: self.host.clone(),
                port: self.port,
                path: request_target(&remove_dot_segments(&merged)),
            },
            true,
        ))
    }
}

fn split_authority(authority: &str, scheme: &str) -> Result<(String, u16), String> {
    let default_port = match scheme {
        "http" => 80,
        "https" => 443,
        other => return Err(format!("unsupported protocol scheme {other:?}")),
    };
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let close = v6
            .find(']')
            .ok_or_else(|| format!("invalid host {authority:?}"))?;
        let port = v6[close + 1..].strip_prefix(':');
        (&v6[..close], port)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err(format!("no host in redirect location {authority:?}"));
    }
    let port = match port {
        None | Some("") => default_port,
        Some(p) => p
            .parse::<u16>()
            .map_err(|_| format!("invalid port {p:?} in redirect location"))?,
    };
    Ok((host.to_owned(), port))
}

/// RFC 3986 §5.2.4 on the path part (the query is kept as is).
fn remove_dot_segments(target: &str) -> String {
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target, None),
    };
    let mut out: Vec<&str> = Vec::new();
    let segments: Vec<&str> = path.split('/').collect();
    let last = segments.len().saturating_sub(1);
    for (i, seg) in segments.iter().enumerate() {
        match *seg {
            "." => {
                if i == last {
                    out.push("");
                }
            }
            ".." => {
                if out.len() > 1 {
                    out.pop();
                }
                if i == last {
                    out.push("");
                }
            }
            s => out.push(s),
        }
    }
    let mut joined = out.join("/");
    if !joined.starts_with('/') {
        joined.insert(0, '/');
    }
    match query {
        Some(q) => format!("{joined}?{q}"),
        None => joined,
    }
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// Aborts the connection task when the exchange is over.
struct AbortOnDrop(tokio::task::JoinHandle<()>);
impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Runs HTTP probes; holds the TLS client configuration. Cheap to clone.
#[derive(Clone)]
pub struct HttpProber {
    tls: Result<Arc<ClientConfig>, String>,
}

impl std::fmt::Debug for HttpProber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpProber")
            .field("tls", &self.tls.is_ok())
            .finish()
    }
}

impl Default for HttpProber {
    fn default() -> Self {
        Self::new()
    }
}

impl HttpProber {
    /// A prober whose HTTPS skips certificate verification, as upstream's.
    pub fn new() -> Self {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map(|b| {
                Arc::new(
                    b.dangerous()
                        .with_custom_certificate_verifier(Arc::new(SkipVerify(provider)))
                        .with_no_client_auth(),
                )
            })
            .map_err(|e| e.to_string());
        Self { tls }
    }

    /// Runs one probe (upstream `DoHTTPProbe` with the kubelet's redirect
    /// checker, `followNonLocalRedirects = false`).
    pub async fn probe(
        &self,
        req: &HttpRequest,
        timeout: Duration,
    ) -> Result<(Outcome, String), Error> {
        match tokio::time::timeout(timeout, self.run(req)).await {
            Ok(r) => r,
            Err(_) => Ok((
                Outcome::Failure,
                format!(
                    "Get {:?}: context deadline exceeded (Client.Timeout exceeded after {timeout:?})",
                    req.url()
                ),
            )),
        }
    }

    async fn run(&self, req: &HttpRequest) -> Result<(Outcome, String), Error> {
        let first_host = req.host.clone();
        let mut target = Target {
            scheme: req.scheme.clone(),
            host: req.host.clone(),
            port: req.port,
            path: req.path.clone(),
        };
        let mut host_override = req.host_override().map(str::to_owned);
        let mut requests = 0usize;
        loop {
            requests += 1;
            let (resp, _conn) = match self.send(&target, req, host_override.as_deref()).await {
                Ok(r) => r,
                Err(msg) => return Ok((Outcome::Failure, msg)),
            };
            let status = resp.status();
            let location = resp
                .headers()
                .get(header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let follows = matches!(status.as_u16(), 301 | 302 | 303 | 307 | 308);
            if let (true, Some(location)) = (follows, location) {
                let (next, relative) = match target.resolve(&location) {
                    Ok(n) => n,
                    Err(msg) => {
                        return Ok((Outcome::Failure, format!("Get {:?}: {msg}", target.url())));
                    }
                };
                if next.host == first_host {
                    if requests >= MAX_REDIRECTS {
                        return Ok((
                            Outcome::Failure,
                            format!("Get {:?}: stopped after 10 redirects", next.url()),
                        ));
                    }
                    tracing::trace!(from = %target.url(), to = %next.url(), "HTTP probe follows a redirect");
                    // Go keeps a custom Host only through relative redirects.
                    if !relative {
                        host_override = None;
                    }
                    target = next;
                    continue;
                }
                // Another host: not followed; this response is the answer.
            }
            let body = read_capped(resp.into_body()).await?;
            let code = status.as_u16();
            if (200..400).contains(&code) {
                if code >= 300 {
                    tracing::debug!(url = %target.url(), code, "probe terminated redirects");
                    return Ok((
                        Outcome::Warning,
                        format!("Probe terminated redirects, Response body: {body}"),
                    ));
                }
                tracing::trace!(url = %target.url(), code, "HTTP probe succeeded");
                return Ok((Outcome::Success, body));
            }
            tracing::trace!(url = %target.url(), code, %body, "HTTP probe failed");
            return Ok((
                Outcome::Failure,
                format!("HTTP probe failed with statuscode: {code}"),
            ));
        }
    }

    /// One request; errors are failure messages.
    async fn send(
        &self,
        target: &Target,
        req: &HttpRequest,
        host_override: Option<&str>,
    ) -> Result<(hyper::Response<hyper::body::Incoming>, AbortOnDrop), String> {
        let url = target.url();
        let fail = |what: &str, e: &dyn std::fmt::Display| format!("Get {url:?}: {what}{e}");
        let hostport = join_host_port(&target.host, target.port);
        let tcp = TcpStream::connect((target.host.as_str(), target.port))
            .await
            .map_err(|e| fail(&format!("dial tcp {hostport}: "), &e))?;
        let io: Box<dyn Io> = match target.scheme.as_str() {
            "http" => Box::new(tcp),
            "https" => {
                let config = self.tls.clone().map_err(|e| fail("TLS setup: ", &e))?;
                let name = ServerName::try_from(target.host.clone())
                    .map_err(|e| fail("TLS server name: ", &e))?;
                let tls = tokio_rustls::TlsConnector::from(config)
                    .connect(name, tcp)
                    .await
                    .map_err(|e| fail("TLS handshake: ", &e))?;
                Box::new(tls)
            }
            other => return Err(fail("unsupported protocol scheme ", &format!("{other:?}"))),
        };
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
            .await
            .map_err(|e| fail("", &e))?;
        let conn = AbortOnDrop(tokio::spawn(async move {
            let _ = conn.await;
        }));

        let mut builder = hyper::Request::get(target.path.as_str());
        let host_value = host_override.map_or(hostport.clone(), str::to_owned);
        builder = builder.header(header::HOST, host_value);
        for (name, value) in &req.headers {
            if name.eq_ignore_ascii_case("host") {
                continue;
            }
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|e| fail("invalid header name: ", &e))?;
            let value =
                HeaderValue::from_str(value).map_err(|e| fail("invalid header value: ", &e))?;
            builder = builder.header(name, value);
        }
        builder = builder.header(header::CONNECTION, "close");
        let request = builder
            .body(Empty::<Bytes>::new())
            .map_err(|e| fail("", &e))?;
        let resp = sender
            .send_request(request)
            .await
            .map_err(|e| fail("", &e))?;
        Ok((resp, conn))
    }
}

/// Reads at most [`MAX_OUTPUT_LENGTH`] bytes of a body; more is a
/// non-fatal truncation, as upstream's `ReadAtMost`.
async fn read_capped(mut body: hyper::body::Incoming) -> Result<String, Error> {
    let mut buf: Vec<u8> = Vec::new();
    while buf.len() < MAX_OUTPUT_LENGTH {
        match body.frame().await {
            None => break,
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    buf.extend_from_slice(&data);
                }
            }
            Some(Err(e)) => return Err(Error::Body(e.to_string())),
        }
    }
    if buf.len() >= MAX_OUTPUT_LENGTH {
        tracing::trace!("non fatal body truncation of an HTTP probe response");
    }
    Ok(super::capped_output(&buf))
}

/// Accepts any server certificate (upstream's `InsecureSkipVerify: true`)
/// while still checking the handshake signatures.
#[derive(Debug)]
struct SkipVerify(Arc<CryptoProvider>);

impl ServerCertVerifier for SkipVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Lifecycle hooks' HTTP GETs through the probes' client (upstream
/// `runHTTPHandler`, `pkg/kubelet/lifecycle/handlers.go`, which builds its
/// request with `NewRequestForHTTPGetAction` as a probe does).
#[async_trait::async_trait]
impl kubelet_container::HttpHook for HttpProber {
    async fn get(
        &self,
        action: &HTTPGetAction,
        container: &Container,
        host: &str,
        user_agent: &str,
        timeout: Duration,
    ) -> Result<(), String> {
        let req = HttpRequest::for_http_get_action(action, container, host, user_agent)
            .map_err(|e| e.to_string())?;
        let limit = timeout;
        let (outcome, message) = self.probe(&req, limit).await.map_err(|e| e.to_string())?;
        if got_response(outcome, &message) {
            tracing::debug!(container = %container.name, url = %req.url(), %message, "HTTP lifecycle hook answered");
            return Ok(());
        }
        // Upstream retries an HTTPS hook that got a plain-HTTP answer over
        // HTTP, without the Authorization header (`isHTTPResponseError`).
        if req.scheme == "https" && message.contains("InvalidContentType") {
            let mut plain = req.clone();
            plain.scheme = "http".into();
            plain
                .headers
                .retain(|(name, _)| !name.eq_ignore_ascii_case("authorization"));
            let (outcome, fallback) = self.probe(&plain, limit).await.map_err(|e| e.to_string())?;
            if got_response(outcome, &fallback) {
                tracing::warn!(
                    container = %container.name,
                    host = %req.host,
                    "LifecycleHTTPFallback: request to HTTPS lifecycle hook got HTTP response, retry with HTTP succeeded"
                );
                return Ok(());
            }
        }
        Err(message)
    }
}

/// Whether the probe client got an HTTP response at all: upstream's hook
/// fails only when `http.Client.Do` does, never on a status code.
fn got_response(outcome: Outcome, message: &str) -> bool {
    match outcome {
        Outcome::Success | Outcome::Warning => true,
        Outcome::Failure => message.starts_with("HTTP probe failed with statuscode:"),
        Outcome::Unknown => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::HTTPHeader;
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

    fn action(path: &str) -> HTTPGetAction {
        HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::Int(8080),
            ..Default::default()
        }
    }

    #[test]
    fn request_defaults_host_scheme_and_headers() {
        let c = Container::default();
        let r =
            HttpRequest::for_http_get_action(&action("healthz"), &c, "10.0.0.5", "kube-probe/1.34")
                .unwrap();
        assert_eq!(r.url(), "http://10.0.0.5:8080/healthz");
        assert_eq!(
            r.headers,
            [
                ("User-Agent".to_owned(), "kube-probe/1.34".to_owned()),
                ("Accept".to_owned(), "*/*".to_owned())
            ]
        );

        let mut a = action("/x?y=1#frag");
        a.scheme = Some("HTTPS".into());
        a.host = Some("fd00::7".into());
        a.http_headers = Some(vec![
            HTTPHeader {
                name: "accept".into(),
                value: String::new(),
            },
            HTTPHeader {
                name: "user-agent".into(),
                value: "mine".into(),
            },
        ]);
        let r = HttpRequest::for_http_get_action(&a, &c, "10.0.0.5", "kube-probe/1.34").unwrap();
        assert_eq!(r.url(), "https://[fd00::7]:8080/x?y=1");
        assert_eq!(r.headers, [("user-agent".to_owned(), "mine".to_owned())]);

        let err = HttpRequest::for_http_get_action(&action("/"), &c, "", "ua").unwrap_err();
        assert!(matches!(err, Error::NoPodIp(_)));
    }

    #[test]
    fn path_formatting_drops_scheme_authority_and_escapes() {
        assert_eq!(request_target(""), "/");
        assert_eq!(request_target("//evil.example/x"), "/x");
        assert_eq!(request_target("http://other/a?b=c"), "/a?b=c");
        assert_eq!(request_target("/a b"), "/a%20b");
    }

    #[test]
    fn locations_resolve_like_a_browser() {
        let t = Target {
            scheme: "http".into(),
            host: "10.0.0.1".into(),
            port: 8080,
            path: "/a/b/c?q=1".into(),
        };
        let r = |l: &str| t.resolve(l).map(|(n, rel)| (n.url(), rel)).unwrap();
        assert_eq!(r("/new"), ("http://10.0.0.1:8080/new".into(), true));
        assert_eq!(r("d"), ("http://10.0.0.1:8080/a/b/d".into(), true));
        assert_eq!(r("../d"), ("http://10.0.0.1:8080/a/d".into(), true));
        assert_eq!(r("?z"), ("http://10.0.0.1:8080/a/b/c?z".into(), true));
        assert_eq!(r("//other:9/x"), ("http://other:9/x".into(), false));
        assert_eq!(
            r("https://10.0.0.1/x"),
            ("https://10.0.0.1:443/x".into(), false)
        );
        assert_eq!(r("http://[::1]:81/"), ("http://[::1]:81/".into(), false));
        assert!(t.resolve("ftp://10.0.0.1/x").is_err());
    }

    #[test]
    fn any_http_response_counts_as_success() {
        assert!(got_response(Outcome::Success, ""));
        assert!(got_response(Outcome::Warning, ""));
        assert!(got_response(
            Outcome::Failure,
            "HTTP probe failed with statuscode: 500"
        ));
        assert!(!got_response(
            Outcome::Failure,
            "Get \"http://x\": dial tcp x: refused"
        ));
    }
}
