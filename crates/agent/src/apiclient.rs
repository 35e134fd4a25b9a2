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

/// A kube-rs client from the kubeconfig at `path` (its current context),
/// limited to `qps` requests per second with bursts of `burst`.
pub async fn client_from_kubeconfig(
    path: &Path,
    qps: i32,
    burst: i32,
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
    let builder = kube::client::ClientBuilder::try_from(config).map_err(|e| err(e.to_string()))?;
    Ok(builder
        .with_layer(&RateLimitLayer {
            bucket: Arc::new(bucket),
        })
        .build())
}

/// A tower layer that makes each request wait for a token.
#[derive(Clone)]
pub struct RateLimitLayer {
    bucket: Arc<TokenBucket>,
}

impl RateLimitLayer {
    /// A layer taking tokens from `bucket`.
    pub fn new(bucket: Arc<TokenBucket>) -> Self {
        Self { bucket }
    }
}

impl<S> tower::Layer<S> for RateLimitLayer {
    type Service = RateLimited<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimited {
            inner,
            bucket: self.bucket.clone(),
            waiting: None,
            permit: false,
        }
    }
}

/// The service of [`RateLimitLayer`]: not ready until a token is taken.
pub struct RateLimited<S> {
    inner: S,
    bucket: Arc<TokenBucket>,
    waiting: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
    permit: bool,
}

impl<S, R> tower::Service<R> for RateLimited<S>
where
    S: tower::Service<R>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

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

    fn call(&mut self, req: R) -> Self::Future {
        // tower's contract: `call` follows a ready `poll_ready`, which took
        // the token.
        self.permit = false;
        self.inner.call(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::{Layer, Service, ServiceExt};

    #[tokio::test]
    async fn requests_beyond_the_burst_wait_for_tokens() {
        let bucket = Arc::new(TokenBucket::new(10, 2).expect("bucket"));
        let mut svc = RateLimitLayer::new(bucket).layer(tower::service_fn(|n: u32| async move {
            Ok::<_, std::convert::Infallible>(n)
        }));
        let start = std::time::Instant::now();
        for n in 0..4 {
            let got = svc
                .ready()
                .await
                .expect("ready")
                .call(n)
                .await
                .expect("call");
            assert_eq!(got, n);
        }
        // 2 from the burst, then 2 more at 10 per second: about 200 ms.
        let took = start.elapsed();
        assert!(
            took >= std::time::Duration::from_millis(150),
            "4 requests with burst 2 at 10 qps took {took:?}"
        );
    }

    #[tokio::test]
    async fn a_missing_kubeconfig_names_the_file() {
        let Err(e) = client_from_kubeconfig(Path::new("/nonexistent/kubeconfig"), 50, 100).await
        else {
            panic!("a client from a missing kubeconfig");
        };
        assert!(e.to_string().contains("/nonexistent/kubeconfig"), "{e}");
    }
}
