//! The HTTP source: static pods from a manifest URL.
//!
//! Mirrors upstream `pkg/kubelet/config/http.go`: GET every
//! `httpCheckFrequency` (20 s) with the custom headers and a 10 s timeout;
//! a non-200 status is an error; an empty body sends an empty snapshot (so
//! the source counts as seen) and an error; a body identical to the last
//! one is a no-op; the body is a single Pod, else a PodList, and one invalid
//! pod rejects the whole body (nothing is sent). After three failures in a
//! row, failure logs drop to debug level.
//!
//! We also cap the body at 10 MiB (upstream reads it all). Only `http://`
//! URLs are supported (no TLS client here).

use std::time::Duration;

use async_trait::async_trait;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper::header::{HeaderName, HeaderValue};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::config::{PodSource, SourceSink};
use crate::decode::{ManifestOrigin, decode_static_pods};
use crate::error::Error;
use crate::{HTTP_SOURCE, MAX_MANIFEST_BYTES};

/// Upstream `httpCheckFrequency` default.
const DEFAULT_PERIOD: Duration = Duration::from_secs(20);
/// Upstream's `http.Client{Timeout: 10 * time.Second}`.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Static pods from a manifest URL (the kubelet's `staticPodURL` and
/// `staticPodURLHeader`). Source name `http`.
#[derive(Debug, Clone)]
#[must_use]
pub struct HttpSource {
    url: String,
    headers: Vec<(String, String)>,
    node_name: String,
    period: Duration,
    timeout: Duration,
}

impl HttpSource {
    /// A source polling `url` for node `node_name` every 20 s.
    pub fn new(url: impl Into<String>, node_name: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            headers: Vec::new(),
            node_name: node_name.into(),
            period: DEFAULT_PERIOD,
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// Adds a header sent with every request (`staticPodURLHeader`).
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// How often the URL is fetched (upstream `httpCheckFrequency`, 20 s).
    pub fn period(mut self, period: Duration) -> Self {
        self.period = period.max(Duration::from_millis(1));
        self
    }

    /// The timeout of one fetch, body included (default 10 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
}

#[async_trait]
impl PodSource for HttpSource {
    fn name(&self) -> &str {
        HTTP_SOURCE
    }

    async fn run(self: Box<Self>, sink: SourceSink) {
        tracing::info!(url = %self.url, "watching static pod URL");
        let client: Client<HttpConnector, Empty<Bytes>> =
            Client::builder(TokioExecutor::new()).build_http();
        let mut state = UrlState {
            cfg: *self,
            client,
            last: None,
            failures: 0,
        };
        let mut tick = tokio::time::interval(state.cfg.period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match state.extract(&sink).await {
                Ok(()) => {
                    if state.failures > 0 {
                        tracing::info!(url = %state.cfg.url, "successfully read pods from URL");
                        state.failures = 0;
                    }
                }
                Err(Error::Closed) => return,
                Err(err) => {
                    // Don't repeat the same warning every period.
                    if state.failures < 3 {
                        tracing::warn!(%err, "failed to read pods from URL");
                    } else if state.failures == 3 {
                        tracing::warn!(%err, "failed to read pods from URL; dropping verbosity of this message to debug");
                    } else {
                        tracing::debug!(%err, "failed to read pods from URL");
                    }
                    state.failures = state.failures.saturating_add(1);
                    if sink.reject(state.cfg.url.clone(), err).await.is_err() {
                        return;
                    }
                }
            }
        }
    }
}

struct UrlState {
    cfg: HttpSource,
    client: Client<HttpConnector, Empty<Bytes>>,
    /// The last body read (upstream `s.data`).
    last: Option<Bytes>,
    failures: u32,
}

impl UrlState {
    fn http_err(&self, reason: impl Into<String>) -> Error {
        Error::Http {
            url: self.cfg.url.clone(),
            reason: reason.into(),
        }
    }

    async fn fetch(&self) -> Result<(hyper::StatusCode, Bytes), Error> {
        let mut request = hyper::Request::get(self.cfg.url.as_str());
        for (name, value) in &self.cfg.headers {
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|e| self.http_err(format!("header {name:?}: {e}")))?;
            let value = HeaderValue::from_str(value)
                .map_err(|e| self.http_err(format!("header {name}: {e}")))?;
            request = request.header(name, value);
        }
        let request = request
            .body(Empty::new())
            .map_err(|e| self.http_err(e.to_string()))?;
        let work = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| self.http_err(e.to_string()))?;
            let status = response.status();
            let body = Limited::new(response.into_body(), MAX_MANIFEST_BYTES as usize)
                .collect()
                .await
                .map_err(|e| self.http_err(format!("reading body: {e}")))?
                .to_bytes();
            Ok((status, body))
        };
        tokio::time::timeout(self.cfg.timeout, work)
            .await
            .map_err(|_| self.http_err(format!("timed out after {:?}", self.cfg.timeout)))?
    }

    /// upstream `extractFromURL`.
    async fn extract(&mut self, sink: &SourceSink) -> Result<(), Error> {
        let (status, data) = self.fetch().await?;
        if status != hyper::StatusCode::OK {
            return Err(self.http_err(status.to_string()));
        }
        if data.is_empty() {
            // An empty SET lets the source be marked as seen.
            sink.set(Vec::new()).await?;
            return Err(self.http_err("zero-length data received"));
        }
        if self.last.as_ref() == Some(&data) {
            return Ok(());
        }
        self.last = Some(data.clone());
        let origin = ManifestOrigin::Url(self.cfg.url.clone());
        let pods = decode_static_pods(&data, &origin, &self.cfg.node_name)?;
        sink.clear_rejection(self.cfg.url.clone()).await?;
        sink.set(pods).await
    }
}
