//! The kubelet's API server client: kube-rs from a kubeconfig, rate limited
//! by `kubeAPIQPS`/`kubeAPIBurst`.
//!
//! Mirrors upstream `cmd/kubelet/app/server.go` (`buildKubeletClientConfig`,
//! `kubeClient`): the client reads `--kubeconfig` (the node's client
//! certificate in cluster mode) and every request waits for a token of a
//! bucket with `kubeAPIQPS` tokens per second and `kubeAPIBurst` of
//! capacity, as client-go's `flowcontrol.NewTokenBucketRateLimiter`. A QPS
//! of 0 takes client-go's defaults (5 per second, burst 10), as
//! `rest.RESTClientFor` does.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use kubelet_container::flowcontrol::TokenBucket;

/// Why the API client could not be made.
#[derive(Debug, thiserror::Error)]
#[error("kubeconfig {path}: {reason}")]
pub struct ApiClientError {
    /// The kubeconfig file.
    pub path: PathBuf,
    /// What is wrong with it.
    pub reason: String,
}

/// client-go's defaults when `QPS` is 0 (`rest.DefaultQPS`,
/// `rest.DefaultBurst`).
const DEFAULT_QPS: u32 = 5;
const DEFAULT_BURST: u32 = 10;

/// Called with each request's method and outcome (the HTTP status, or
/// `<error>`), as client-go's `rest_client_requests_total` counts them.
pub type RequestObserver = Arc<dyn Fn(&http::Method, &str) + Send + Sync>;

/// A kube-rs client from the kubeconfig at `path` (its current context),
/// limited to `qps` requests per second with bursts of `burst`; `observer`
/// sees every request.
pub async fn client_from_kubeconfig(
    path: &Path,
    qps: i32,
    burst: i32,
    observer: Option<RequestObserver>,
) -> Result<kube::Client, ApiClientError> {
    let err = |reason: String| ApiClientError {
        path: path.to_owned(),
        reason,
    };
    let kubeconfig = kube::config::Kubeconfig::read_from(path).map_err(|e| err(e.to_string()))?;
    let config = kube::Config::from_custom_kubeconfig(
        kubeconfig,
        &kube::config::KubeConfigOptions::default(),
    )
    .await
    .map_err(|e| err(e.to_string()))?;
    let (qps, burst) = match (u32::try_from(qps), u32::try_from(burst)) {
        (Ok(0), _) => (DEFAULT_QPS, DEFAULT_BURST),
        (Ok(q), Ok(b)) => (q, b.max(1)),
        _ => {
            return Err(err(
                "kubeAPIQPS and kubeAPIBurst must not be negative".into()
            ));
        }
    };
    let bucket = TokenBucket::new(qps, burst).map_err(|e| err(e.to_string()))?;
    let rate_limit = RateLimitLayer {
        bucket: Arc::new(bucket),
        observer,
    };
    http2_client(config, rate_limit).map_err(|e| err(e.to_string()))
}

/// kube-rs's client stack (base URI, authentication, extra headers) over a
/// connection that speaks HTTP/2 when the API server offers it, as
/// client-go does: every request and watch of the kubelet shares one
/// connection instead of one TLS connection per open watch (kube-rs's
/// default client is HTTP/1.1 only), with client-go's health check pings
/// (`ReadIdleTimeout` 30 s, `PingTimeout` 15 s) ending a dead connection.
fn http2_client(
    config: kube::Config,
    rate_limit: RateLimitLayer,
) -> Result<kube::Client, kube::Error> {
    use kube::client::ConfigExt;
    // ALPN (`h2`, `http/1.1`) is set by `enable_all_versions`.
    let tls = config.rustls_client_config()?;
    let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(config.connect_timeout);
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_all_versions()
        .wrap_connector(http);
    let client: hyper_util::client::legacy::Client<_, kube::client::Body> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .timer(hyper_util::rt::TokioTimer::new())
            .http2_keep_alive_interval(std::time::Duration::from_secs(30))
            .http2_keep_alive_timeout(std::time::Duration::from_secs(15))
            .build(https);
    let service = tower::ServiceBuilder::new()
        .layer(rate_limit)
        .layer(config.base_uri_layer())
        .option_layer(config.auth_layer()?)
        .layer(config.extra_headers_layer()?)
        .map_err(tower::BoxError::from)
        .service(client);
    Ok(kube::Client::new(service, config.default_namespace))
}

/// A tower layer that makes each request wait for a token.
#[derive(Clone)]
pub struct RateLimitLayer {
    bucket: Arc<TokenBucket>,
    observer: Option<RequestObserver>,
}

impl RateLimitLayer {
    /// A layer taking tokens from `bucket`.
    pub fn new(bucket: Arc<TokenBucket>) -> Self {
        Self {
            bucket,
            observer: None,
        }
    }

    /// Tells `observer` of every request and its outcome.
    pub fn with_observer(mut self, observer: RequestObserver) -> Self {
        self.observer = Some(observer);
        self
    }
}

impl<S> tower::Layer<S> for RateLimitLayer {
    type Service = RateLimited<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimited {
            inner,
            bucket: self.bucket.clone(),
            observer: self.observer.clone(),
            waiting: None,
            permit: false,
        }
    }
}

/// The service of [`RateLimitLayer`]: not ready until a token is taken.
pub struct RateLimited<S> {
    inner: S,
    bucket: Arc<TokenBucket>,
    observer: Option<RequestObserver>,
    waiting: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
    permit: bool,
}

impl<S, B, RB> tower::Service<http::Request<B>> for RateLimited<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        if !self.permit {
            let bucket = self.bucket.clone();
            let waiting = self
                .waiting
                .get_or_insert_with(|| Box::pin(async move { bucket.acquire().await }));
            match waiting.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    self.waiting = None;
                    self.permit = true;
                }
                Poll::Pending => return Poll::Pending,
            }
        }
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        // tower's contract: `call` follows a ready `poll_ready`, which took
        // the token.
        self.permit = false;
        let method = req.method().clone();
        let observer = self.observer.clone();
        let response = self.inner.call(req);
        Box::pin(async move {
            let result = response.await;
            if let Some(observe) = observer {
                match &result {
                    Ok(r) => observe(&method, r.status().as_str()),
                    Err(_) => observe(&method, "<error>"),
                }
            }
            result
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::{Layer, Service, ServiceExt};

    #[tokio::test]
    async fn requests_beyond_the_burst_wait_for_tokens_and_are_observed() {
        let bucket = Arc::new(TokenBucket::new(10, 2).expect("bucket"));
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let observer: RequestObserver = {
            let seen = seen.clone();
            Arc::new(move |m: &http::Method, code: &str| {
                seen.lock().expect("seen").push(format!("{m} {code}"));
            })
        };
        let mut svc = RateLimitLayer::new(bucket)
            .with_observer(observer)
            .layer(tower::service_fn(|req: http::Request<u32>| async move {
                let status = if *req.body() == 3 { 404 } else { 200 };
                let response = http::Response::builder()
                    .status(status)
                    .body(*req.body())
                    .expect("response");
                Ok::<_, std::convert::Infallible>(response)
            }));
        let start = std::time::Instant::now();
        for n in 0..4u32 {
            let req = http::Request::builder()
                .method(if n == 0 { "POST" } else { "GET" })
                .body(n)
                .expect("request");
            let got = ServiceExt::<http::Request<u32>>::ready(&mut svc)
                .await
                .expect("ready")
                .call(req)
                .await
                .expect("call");
            assert_eq!(*got.body(), n);
        }
        // 2 from the burst, then 2 more at 10 per second: about 200 ms.
        let took = start.elapsed();
        assert!(
            took >= std::time::Duration::from_millis(150),
            "4 requests with burst 2 at 10 qps took {took:?}"
        );
        assert_eq!(
            *seen.lock().expect("seen"),
            ["POST 200", "GET 200", "GET 200", "GET 404"]
        );
    }

    #[tokio::test]
    async fn a_missing_kubeconfig_names_the_file() {
        let Err(e) =
            client_from_kubeconfig(Path::new("/nonexistent/kubeconfig"), 50, 100, None).await
        else {
            panic!("a client from a missing kubeconfig");
        };
        assert!(e.to_string().contains("/nonexistent/kubeconfig"), "{e}");
    }
}
