//! What the API-backed volumes read from the API server: secrets, config
//! maps and service account tokens ([`ApiObjects`], implemented over a
//! `kube::Client` by [`KubeApiObjects`]), and the token cache
//! ([`TokenManager`], upstream `pkg/kubelet/token/token_manager.go`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{ConfigMap, Secret, ServiceAccount};

use crate::Error;

/// A token request for a service account, bound to a pod (upstream: the
/// `TokenRequest` the projected volume plugin builds, with
/// `boundObjectRef` `{apiVersion: v1, kind: Pod, name, uid}`). It is also
/// the token cache's key, as upstream `keyFunc` (service account,
/// namespace, audiences, expiration, bound object); it holds nothing
/// secret.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ServiceAccountTokenRequest {
    /// The namespace of the service account (the pod's).
    pub namespace: String,
    /// The service account (the pod's `serviceAccountName`).
    pub service_account: String,
    /// The audiences of the token; empty: the API server's default.
    pub audiences: Vec<String>,
    /// The requested lifetime in seconds (`expirationSeconds`, 3600 when
    /// the projection leaves it out, as the API's defaulting).
    pub expiration_seconds: i64,
    /// The pod the token is bound to: its name.
    pub pod_name: String,
    /// The pod the token is bound to: its UID.
    pub pod_uid: String,
}

/// A token the API server issued (upstream `TokenRequest.status`, with the
/// lifetime of its spec).
#[derive(Clone, PartialEq, Eq)]
pub struct IssuedToken {
    /// The token (a JWT).
    pub token: String,
    /// When it expires (`status.expirationTimestamp`).
    pub expiration_timestamp: SystemTime,
    /// The lifetime it was issued for in seconds: the answer's
    /// `spec.expirationSeconds`, else the requested one. The token manager
    /// takes its issue time as `expiration_timestamp - expiration_seconds`.
    pub expiration_seconds: i64,
}

/// The token itself is not printed.
impl std::fmt::Debug for IssuedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedToken")
            .field("token", &"<redacted>")
            .field("expiration_timestamp", &self.expiration_timestamp)
            .field("expiration_seconds", &self.expiration_seconds)
            .finish()
    }
}

/// What secret, configMap and projected volumes read from the API server
/// (upstream: the volume host's `GetSecretFunc`, `GetConfigMapFunc` and
/// `GetServiceAccountTokenFunc`).
#[async_trait::async_trait]
pub trait ApiObjects: Send + Sync {
    /// The secret `namespace/name`; `Ok(None)`: it does not exist.
    async fn get_secret(&self, namespace: &str, name: &str) -> Result<Option<Secret>, Error>;

    /// The config map `namespace/name`; `Ok(None)`: it does not exist.
    async fn get_config_map(&self, namespace: &str, name: &str)
    -> Result<Option<ConfigMap>, Error>;

    /// A new token from the TokenRequest API
    /// (`POST /api/v1/namespaces/<ns>/serviceaccounts/<sa>/token`).
    async fn request_token(
        &self,
        request: &ServiceAccountTokenRequest,
    ) -> Result<IssuedToken, Error>;

    /// The pod is synced: keep what it refers to at hand (upstream
    /// `Manager.RegisterPod` of the secret and configMap managers). A
    /// `GET` per lookup keeps nothing: the default does nothing.
    fn register_pod(&self, _pod: &k8s_openapi::api::core::v1::Pod) {}

    /// The pod terminated: drop what only it referred to (upstream
    /// `UnregisterPod`).
    fn unregister_pod(&self, _pod: &k8s_openapi::api::core::v1::Pod) {}

    /// Stops every background task (watches) and waits for each.
    async fn shutdown(&self) {}
}

/// [`ApiObjects`] over a `kube::Client`: `GET` of secrets and config maps
/// (a 404 is `None`), `create` of the `token` subresource of service
/// accounts.
#[derive(Clone)]
pub struct KubeApiObjects {
    client: kube::Client,
}

impl std::fmt::Debug for KubeApiObjects {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeApiObjects").finish_non_exhaustive()
    }
}

impl KubeApiObjects {
    /// Reads through `client` (the kubelet's own credentials: the node
    /// authorizer lets it read only what its pods reference).
    pub fn new(client: kube::Client) -> Self {
        Self { client }
    }
}

fn api_error(what: String) -> impl FnOnce(kube::Error) -> Error {
    move |e| Error::Api {
        what,
        source: Box::new(e),
    }
}

#[async_trait::async_trait]
impl ApiObjects for KubeApiObjects {
    async fn get_secret(&self, namespace: &str, name: &str) -> Result<Option<Secret>, Error> {
        kube::Api::<Secret>::namespaced(self.client.clone(), namespace)
            .get_opt(name)
            .await
            .map_err(api_error(format!("get secret {namespace}/{name}")))
    }

    async fn get_config_map(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<ConfigMap>, Error> {
        kube::Api::<ConfigMap>::namespaced(self.client.clone(), namespace)
            .get_opt(name)
            .await
            .map_err(api_error(format!("get configmap {namespace}/{name}")))
    }

    async fn request_token(
        &self,
        request: &ServiceAccountTokenRequest,
    ) -> Result<IssuedToken, Error> {
        let what = format!(
            "request a token of service account {}/{}",
            request.namespace, request.service_account
        );
        let body = TokenRequest {
            spec: TokenRequestSpec {
                audiences: request.audiences.clone(),
                expiration_seconds: Some(request.expiration_seconds),
                bound_object_ref: Some(BoundObjectReference {
                    api_version: Some("v1".into()),
                    kind: Some("Pod".into()),
                    name: Some(request.pod_name.clone()),
                    uid: Some(request.pod_uid.clone()),
                }),
            },
            ..Default::default()
        };
        let answer =
            kube::Api::<ServiceAccount>::namespaced(self.client.clone(), &request.namespace)
                .create_token_request(&request.service_account, &Default::default(), &body)
                .await
                .map_err(api_error(what.clone()))?;
        let Some(status) = answer.status.filter(|s| !s.token.is_empty()) else {
            return Err(Error::Api {
                what,
                source: "the answer holds no token".into(),
            });
        };
        let expiration_timestamp = system_time(status.expiration_timestamp.0);
        Ok(IssuedToken {
            token: status.token,
            expiration_timestamp,
            expiration_seconds: answer
                .spec
                .expiration_seconds
                .unwrap_or(request.expiration_seconds),
        })
    }
}

/// A `jiff` timestamp as a `SystemTime` (jiff's own conversion needs its
/// `std` feature).
fn system_time(t: k8s_openapi::jiff::Timestamp) -> SystemTime {
    let secs = t.as_second();
    let nanos = u32::try_from(t.subsec_nanosecond()).unwrap_or(0);
    if secs >= 0 {
        SystemTime::UNIX_EPOCH + Duration::new(secs.unsigned_abs(), nanos)
    } else {
        SystemTime::UNIX_EPOCH
            .checked_sub(Duration::from_secs(secs.unsigned_abs()))
            .map_or(SystemTime::UNIX_EPOCH, |t| {
                t + Duration::from_nanos(nanos.into())
            })
    }
}

/// Where the token manager reads the time (injectable for tests).
pub type Clock = Arc<dyn Fn() -> SystemTime + Send + Sync>;

/// Upstream `maxTTL`: a token older than this is refreshed whatever its
/// lifetime.
const MAX_TTL: Duration = Duration::from_secs(24 * 60 * 60);
/// Upstream `maxJitter`: refreshes are spread by up to this much.
const MAX_JITTER: Duration = Duration::from_secs(10);

/// The service account token cache (upstream `token.Manager`): a token is
/// requested once per [`ServiceAccountTokenRequest`] and served from the
/// cache until it is older than 80 % of its lifetime or than 24 hours (less
/// a random jitter of up to 10 s, whole seconds, as upstream); a failed
/// refresh serves the cached token while it has not expired.
pub struct TokenManager {
    cache: Mutex<HashMap<ServiceAccountTokenRequest, IssuedToken>>,
    clock: Clock,
}

impl std::fmt::Debug for TokenManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenManager")
            .field("cached", &self.lock().len())
            .finish_non_exhaustive()
    }
}

impl Default for TokenManager {
    fn default() -> Self {
        Self::new()
    }
}

impl TokenManager {
    /// An empty cache on the system clock.
    pub fn new() -> Self {
        Self::with_clock(Arc::new(SystemTime::now))
    }

    /// An empty cache on `clock`.
    pub fn with_clock(clock: Clock) -> Self {
        Self {
            cache: Mutex::new(HashMap::new()),
            clock,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ServiceAccountTokenRequest, IssuedToken>> {
        self.cache.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The token for `request`: the cached one unless it needs a refresh,
    /// else a new one from `api` (upstream `GetServiceAccountToken`). When
    /// the refresh fails, the cached token is returned while it has not
    /// expired, and the failure is logged.
    pub async fn get_service_account_token(
        &self,
        api: &dyn ApiObjects,
        request: &ServiceAccountTokenRequest,
    ) -> Result<IssuedToken, Error> {
        let cached = self.lock().get(request).cloned();
        self.cleanup();
        if let Some(token) = &cached
            && !self.requires_refresh(token)
        {
            return Ok(token.clone());
        }
        match api.request_token(request).await {
            Ok(token) => {
                self.lock().insert(request.clone(), token.clone());
                Ok(token)
            }
            Err(e) => match cached {
                Some(token) if !self.expired(&token) => {
                    tracing::warn!(
                        namespace = %request.namespace,
                        service_account = %request.service_account,
                        pod_uid = %request.pod_uid,
                        error = %e,
                        "cannot refresh a service account token; the cached one is still valid"
                    );
                    Ok(token)
                }
                Some(_) => Err(Error::Api {
                    what: format!(
                        "the token of service account {}/{} expired and its refresh failed",
                        request.namespace, request.service_account
                    ),
                    source: Box::new(e),
                }),
                None => Err(e),
            },
        }
    }

    /// Forgets the tokens bound to the pod `pod_uid` (upstream
    /// `DeleteServiceAccountToken`, called when the pod is removed).
    pub fn delete_service_account_token(&self, pod_uid: &str) {
        self.lock().retain(|k, _| k.pod_uid != pod_uid);
    }

    /// Forgets expired tokens (upstream `cleanup`, every minute there;
    /// here on each request).
    pub fn cleanup(&self) {
        let now = (self.clock)();
        self.lock().retain(|_, t| now <= t.expiration_timestamp);
    }

    /// How many tokens are cached.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no token is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn expired(&self, token: &IssuedToken) -> bool {
        (self.clock)() > token.expiration_timestamp
    }

    /// Upstream `requiresRefresh`: older than 24 hours, or within 20 % of
    /// its lifetime of its expiration (both less the jitter).
    pub fn requires_refresh(&self, token: &IssuedToken) -> bool {
        let now = (self.clock)();
        let ttl = Duration::from_secs(token.expiration_seconds.max(0).unsigned_abs());
        let exp = token.expiration_timestamp;
        let iat = exp.checked_sub(ttl).unwrap_or(SystemTime::UNIX_EPOCH);
        let jitter =
            Duration::from_secs(crate::atomic_writer::random_u64() % MAX_JITTER.as_secs().max(1));
        if iat
            .checked_add(MAX_TTL.saturating_sub(jitter))
            .is_some_and(|t| now > t)
        {
            return true;
        }
        let margin = Duration::from_secs(ttl.as_secs() * 20 / 100) + jitter;
        exp.checked_sub(margin)
            .is_none_or(|refresh_at| now > refresh_at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

    /// Issues `token-<n>` valid for the requested lifetime from the fake
    /// clock's time; fails while `fail` is set.
    struct FakeTokens {
        now: Arc<AtomicU64>,
        issued: AtomicUsize,
        fail: std::sync::atomic::AtomicBool,
    }

    #[async_trait::async_trait]
    impl ApiObjects for FakeTokens {
        async fn get_secret(&self, _: &str, _: &str) -> Result<Option<Secret>, Error> {
            Ok(None)
        }
        async fn get_config_map(&self, _: &str, _: &str) -> Result<Option<ConfigMap>, Error> {
            Ok(None)
        }
        async fn request_token(
            &self,
            request: &ServiceAccountTokenRequest,
        ) -> Result<IssuedToken, Error> {
            if self.fail.load(Ordering::SeqCst) {
                return Err(Error::Api {
                    what: "request a token".into(),
                    source: "unavailable".into(),
                });
            }
            let n = self.issued.fetch_add(1, Ordering::SeqCst) + 1;
            let now = SystemTime::UNIX_EPOCH + Duration::from_secs(self.now.load(Ordering::SeqCst));
            Ok(IssuedToken {
                token: format!("token-{n}"),
                expiration_timestamp: now
                    + Duration::from_secs(request.expiration_seconds.unsigned_abs()),
                expiration_seconds: request.expiration_seconds,
            })
        }
    }

    fn request(uid: &str, expiration_seconds: i64) -> ServiceAccountTokenRequest {
        ServiceAccountTokenRequest {
            namespace: "team".into(),
            service_account: "default".into(),
            audiences: vec![],
            expiration_seconds,
            pod_name: "p".into(),
            pod_uid: uid.into(),
        }
    }

    fn setup() -> (Arc<AtomicU64>, FakeTokens, TokenManager) {
        let now = Arc::new(AtomicU64::new(1_000_000));
        let clock_now = now.clone();
        let manager = TokenManager::with_clock(Arc::new(move || {
            SystemTime::UNIX_EPOCH + Duration::from_secs(clock_now.load(Ordering::SeqCst))
        }));
        let api = FakeTokens {
            now: now.clone(),
            issued: AtomicUsize::new(0),
            fail: Default::default(),
        };
        (now, api, manager)
    }

    #[tokio::test]
    async fn tokens_are_refreshed_after_80_percent_of_their_life() {
        let (now, api, tokens) = setup();
        let start = now.load(Ordering::SeqCst);
        let req = request("u1", 3607);
        let get = || tokens.get_service_account_token(&api, &req);
        assert_eq!(get().await.expect("token").token, "token-1");
        // 80 % of 3607 s is 2885.6 s; upstream refreshes 721 s (20 %,
        // rounded down) before expiry, less up to 10 s of jitter.
        for at in [1, 1800, 2849, 2875] {
            now.store(start + at, Ordering::SeqCst);
            assert_eq!(get().await.expect("token").token, "token-1", "at {at} s");
        }
        now.store(start + 2887, Ordering::SeqCst);
        assert_eq!(get().await.expect("token").token, "token-2", "past 80 %");
        assert_eq!(api.issued.load(Ordering::SeqCst), 2);
        // The new token has its own life.
        now.store(start + 2887 + 2800, Ordering::SeqCst);
        assert_eq!(get().await.expect("token").token, "token-2");
        // Another key (another pod) has its own token.
        assert_eq!(
            tokens
                .get_service_account_token(&api, &request("u2", 3607))
                .await
                .expect("token")
                .token,
            "token-3"
        );
        assert_eq!(tokens.len(), 2);
        tokens.delete_service_account_token("u2");
        assert_eq!(tokens.len(), 1);
    }

    #[tokio::test]
    async fn tokens_older_than_a_day_are_refreshed() {
        let (now, api, tokens) = setup();
        let start = now.load(Ordering::SeqCst);
        let req = request("u1", 7 * 24 * 3600);
        assert_eq!(
            tokens
                .get_service_account_token(&api, &req)
                .await
                .expect("t")
                .token,
            "token-1"
        );
        now.store(start + 23 * 3600, Ordering::SeqCst);
        assert_eq!(
            tokens
                .get_service_account_token(&api, &req)
                .await
                .expect("t")
                .token,
            "token-1"
        );
        now.store(start + 24 * 3600 + 1, Ordering::SeqCst);
        assert_eq!(
            tokens
                .get_service_account_token(&api, &req)
                .await
                .expect("t")
                .token,
            "token-2"
        );
    }

    #[tokio::test]
    async fn a_failed_refresh_serves_the_cached_token_until_it_expires() {
        let (now, api, tokens) = setup();
        let start = now.load(Ordering::SeqCst);
        let req = request("u1", 600);
        assert_eq!(
            tokens
                .get_service_account_token(&api, &req)
                .await
                .expect("t")
                .token,
            "token-1"
        );
        api.fail.store(true, Ordering::SeqCst);
        now.store(start + 590, Ordering::SeqCst);
        assert_eq!(
            tokens
                .get_service_account_token(&api, &req)
                .await
                .expect("t")
                .token,
            "token-1"
        );
        now.store(start + 601, Ordering::SeqCst);
        let err = tokens
            .get_service_account_token(&api, &req)
            .await
            .expect_err("expired");
        assert!(err.to_string().contains("team/default"), "{err}");
        assert!(tokens.is_empty(), "the expired token was dropped");
        api.fail.store(false, Ordering::SeqCst);
        assert_eq!(
            tokens
                .get_service_account_token(&api, &req)
                .await
                .expect("t")
                .token,
            "token-2"
        );
    }

    #[test]
    fn tokens_are_not_printed() {
        let t = IssuedToken {
            token: "s3cret".into(),
            expiration_timestamp: SystemTime::UNIX_EPOCH,
            expiration_seconds: 1,
        };
        assert!(!format!("{t:?}").contains("s3cret"));
    }
}
