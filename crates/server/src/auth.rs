//! Authentication and authorization of node API requests (upstream
//! `pkg/kubelet/server/auth.go`, the `InstallAuthFilter` of
//! `pkg/kubelet/server/server.go`, and the delegating authenticator and
//! authorizer `cmd/kubelet/app/auth.go` builds from the
//! `authentication`/`authorization` configuration).
//!
//! A request is authenticated first, from the strongest credential down:
//! the client certificate the TLS handshake verified against
//! `authentication.x509.clientCAFile` (user = its Common Name, groups = its
//! Organizations), then a bearer token reviewed by the API server
//! (TokenReview, cached for `authentication.webhook.cacheTTL`), then, only
//! when `authentication.anonymous.enabled`, `system:anonymous`. A token the
//! API server rejects is `401` even with anonymous requests enabled, as
//! upstream's `FailOnError` union. Then it is authorized: each of the
//! [`request_attributes`] in turn (`nodes/<subresource>` of this node), the
//! first allowed one wins; none is `403`.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;

/// Who made a request (upstream `user.Info`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserInfo {
    /// The user name (`system:anonymous`, `kube-apiserver-kubelet-client`,
    /// `system:serviceaccount:ns:name`, ...).
    pub name: String,
    /// The user's UID, when the authenticator knows it.
    pub uid: String,
    /// The groups.
    pub groups: Vec<String>,
    /// Extra attributes (a service account token's pod, ...).
    pub extra: BTreeMap<String, Vec<String>>,
}

impl UserInfo {
    /// The anonymous user (upstream `anonymous.NewAuthenticator`).
    pub fn anonymous() -> Self {
        UserInfo {
            name: "system:anonymous".into(),
            groups: vec!["system:unauthenticated".into()],
            ..UserInfo::default()
        }
    }
}

/// What a request asks of the node, for the authorizer (upstream
/// `authorizer.AttributesRecord` for `nodes/<subresource>`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Attributes {
    /// Who asks.
    pub user: UserInfo,
    /// The API verb of the HTTP method: `get`, `create`, `update`,
    /// `patch`, `delete` (empty for other methods, as upstream).
    pub verb: String,
    /// Always `nodes`.
    pub resource: String,
    /// `stats`, `metrics`, `log`, `checkpoint`, `pods`, `healthz`,
    /// `configz` or `proxy`.
    pub subresource: String,
    /// The node's name.
    pub name: String,
    /// The request path.
    pub path: String,
}

/// Whether `path` is `prefix` or below it (upstream `isSubpath`).
fn is_subpath(path: &str, prefix: &str) -> bool {
    let prefix = prefix.trim_end_matches('/');
    path == prefix || (path.starts_with(prefix) && path.as_bytes().get(prefix.len()) == Some(&b'/'))
}

/// The attributes to authorize a request with, in order (upstream
/// `nodeAuthorizerAttributesGetter.GetRequestAttributes` with
/// `KubeletFineGrainedAuthz`, on by default since 1.33): `/stats`,
/// `/metrics`, `/logs` and `/checkpoint` need their own subresource;
/// `/pods`, `/runningpods`, `/healthz` and `/configz` need theirs or
/// `proxy`; everything else (`/containerLogs`, `/exec`, ...) needs `proxy`.
pub fn request_attributes(
    user: &UserInfo,
    method: &hyper::Method,
    path: &str,
    node_name: &str,
) -> Vec<Attributes> {
    let verb = match *method {
        hyper::Method::POST => "create",
        hyper::Method::GET => "get",
        hyper::Method::PUT => "update",
        hyper::Method::PATCH => "patch",
        hyper::Method::DELETE => "delete",
        _ => "",
    };
    let attrs = |sub: &str| Attributes {
        user: user.clone(),
        verb: verb.into(),
        resource: "nodes".into(),
        subresource: sub.into(),
        name: node_name.into(),
        path: path.into(),
    };
    let own = [
        ("/stats", "stats"),
        ("/metrics", "metrics"),
        ("/logs", "log"),
        ("/checkpoint", "checkpoint"),
    ];
    if let Some((_, sub)) = own.iter().find(|(p, _)| is_subpath(path, p)) {
        return vec![attrs(sub)];
    }
    let fine = [
        ("/pods", "pods"),
        ("/runningpods", "pods"),
        ("/healthz", "healthz"),
        ("/configz", "configz"),
    ];
    match fine.iter().find(|(p, _)| is_subpath(path, p)) {
        Some((_, sub)) => vec![attrs(sub), attrs("proxy")],
        None => vec![attrs("proxy")],
    }
}

/// Why a request could not be authenticated or authorized (an answer of
/// `401` or `500`, never a crash).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// The bearer token was rejected by the API server.
    #[error("invalid bearer token")]
    InvalidToken,
    /// The API server could not be asked (TokenReview or
    /// SubjectAccessReview failed).
    #[error("{call}: {message}")]
    Webhook {
        /// `TokenReview` or `SubjectAccessReview`.
        call: &'static str,
        /// What went wrong.
        message: String,
    },
}

/// What a request carries to authenticate with.
#[derive(Debug, Clone, Copy, Default)]
pub struct Credentials<'a> {
    /// The user of the client certificate the TLS handshake verified
    /// against the client CA (CN and O of the leaf).
    pub client_certificate: Option<&'a UserInfo>,
    /// The `Authorization: Bearer` token.
    pub bearer_token: Option<&'a str>,
}

/// Identifies the user of a request (upstream `authenticator.Request`).
#[async_trait]
pub trait Authenticator: Send + Sync {
    /// The user, `Ok(None)` when the request carries nothing this
    /// authenticator accepts (answered `401`), an error when a credential
    /// was rejected or could not be checked (also `401`, and logged).
    async fn authenticate(
        &self,
        credentials: &Credentials<'_>,
    ) -> Result<Option<UserInfo>, AuthError>;
}

/// Decides whether a user may do what a request asks (upstream
/// `authorizer.Authorizer`).
#[async_trait]
pub trait Authorizer: Send + Sync {
    /// `Ok(true)` allows; `Ok(false)` has no opinion or denies; an error
    /// is answered `500` (upstream's "Authorization error").
    async fn authorize(&self, attributes: &Attributes) -> Result<bool, AuthError>;
}

/// Allows everything (`authorization.mode: AlwaysAllow`).
#[derive(Debug, Clone, Copy, Default)]
pub struct AlwaysAllow;

#[async_trait]
impl Authorizer for AlwaysAllow {
    async fn authorize(&self, _: &Attributes) -> Result<bool, AuthError> {
        Ok(true)
    }
}

/// Reviews a bearer token (upstream: the webhook token authenticator,
/// `authentication.webhook`).
#[async_trait]
pub trait TokenReviewer: Send + Sync {
    /// The token's user; `Ok(None)`: the API server says it is not
    /// authenticated.
    async fn review(&self, token: &str) -> Result<Option<UserInfo>, AuthError>;
}

/// Asks whether a user may do something (upstream: the webhook authorizer,
/// `authorization.mode: Webhook`).
#[async_trait]
pub trait AccessReviewer: Send + Sync {
    /// The API server's decision.
    async fn review(&self, attributes: &Attributes) -> Result<bool, AuthError>;
}

/// The kubelet's authenticator (upstream `DelegatingAuthenticatorConfig`):
/// x509, then a bearer token through a [`TokenReviewer`], then anonymous.
#[derive(Clone, Default)]
pub struct NodeAuthenticator {
    tokens: Option<Arc<dyn TokenReviewer>>,
    anonymous: bool,
}

impl std::fmt::Debug for NodeAuthenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeAuthenticator")
            .field("tokens", &self.tokens.is_some())
            .field("anonymous", &self.anonymous)
            .finish()
    }
}

impl NodeAuthenticator {
    /// Client certificates only (verified by the TLS layer).
    pub fn new() -> Self {
        Self::default()
    }

    /// Bearer tokens reviewed by `reviewer` (`authentication.webhook`).
    pub fn with_tokens(mut self, reviewer: Arc<dyn TokenReviewer>) -> Self {
        self.tokens = Some(reviewer);
        self
    }

    /// Requests without credentials are `system:anonymous`
    /// (`authentication.anonymous.enabled`).
    pub fn with_anonymous(mut self, enabled: bool) -> Self {
        self.anonymous = enabled;
        self
    }

    /// Whether anonymous requests are accepted.
    pub fn anonymous(&self) -> bool {
        self.anonymous
    }
}

#[async_trait]
impl Authenticator for NodeAuthenticator {
    async fn authenticate(
        &self,
        credentials: &Credentials<'_>,
    ) -> Result<Option<UserInfo>, AuthError> {
        if let Some(user) = credentials.client_certificate {
            return Ok(Some(user.clone()));
        }
        if let (Some(token), Some(reviewer)) = (credentials.bearer_token, &self.tokens) {
            // A token that is present but rejected fails the request, even
            // with anonymous requests enabled (upstream `FailOnError`).
            return match reviewer.review(token).await? {
                Some(user) => Ok(Some(user)),
                None => Err(AuthError::InvalidToken),
            };
        }
        Ok(self.anonymous.then(UserInfo::anonymous))
    }
}

/// A bounded map of answers that expire (upstream's token and
/// authorization caches).
struct TtlCache<K, V> {
    entries: Mutex<HashMap<K, (Instant, V)>>,
    capacity: usize,
}

impl<K: std::hash::Hash + Eq + Clone, V: Clone> TtlCache<K, V> {
    fn new(capacity: usize) -> Self {
        TtlCache {
            entries: Mutex::new(HashMap::new()),
            capacity,
        }
    }

    fn get(&self, key: &K, now: Instant) -> Option<V> {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        match entries.get(key) {
            Some((expires, v)) if *expires > now => Some(v.clone()),
            Some(_) => {
                entries.remove(key);
                None
            }
            None => None,
        }
    }

    fn insert(&self, key: K, value: V, ttl: Duration, now: Instant) {
        if ttl.is_zero() {
            return;
        }
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if entries.len() >= self.capacity {
            entries.retain(|_, (expires, _)| *expires > now);
            if entries.len() >= self.capacity
                && let Some(k) = entries.keys().next().cloned()
            {
                entries.remove(&k);
            }
        }
        entries.insert(key, (now + ttl, value));
    }
}

const CACHE_CAPACITY: usize = 4096;

/// A [`TokenReviewer`] whose answers, authenticated or not, are kept for a
/// TTL (upstream `authentication.webhook.cacheTTL`, default 2 minutes;
/// errors are not cached). Tokens are keyed by their SHA-256, never kept.
pub struct CachedTokenReviewer {
    inner: Arc<dyn TokenReviewer>,
    ttl: Duration,
    cache: TtlCache<[u8; 32], Option<UserInfo>>,
}

impl std::fmt::Debug for CachedTokenReviewer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachedTokenReviewer")
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl CachedTokenReviewer {
    /// Caches `inner`'s answers for `ttl` (zero: no cache).
    pub fn new(inner: Arc<dyn TokenReviewer>, ttl: Duration) -> Self {
        CachedTokenReviewer {
            inner,
            ttl,
            cache: TtlCache::new(CACHE_CAPACITY),
        }
    }
}

fn sha256(data: &[u8]) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, data);
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

#[async_trait]
impl TokenReviewer for CachedTokenReviewer {
    async fn review(&self, token: &str) -> Result<Option<UserInfo>, AuthError> {
        let key = sha256(token.as_bytes());
        if let Some(answer) = self.cache.get(&key, Instant::now()) {
            return Ok(answer);
        }
        let answer = self.inner.review(token).await?;
        self.cache
            .insert(key, answer.clone(), self.ttl, Instant::now());
        Ok(answer)
    }
}

/// The webhook authorizer (`authorization.mode: Webhook`): asks an
/// [`AccessReviewer`] and keeps allowed answers for
/// `cacheAuthorizedTTL` (default 5 minutes) and denied ones for
/// `cacheUnauthorizedTTL` (default 30 seconds); errors are not cached.
pub struct WebhookAuthorizer {
    inner: Arc<dyn AccessReviewer>,
    authorized_ttl: Duration,
    unauthorized_ttl: Duration,
    cache: TtlCache<Attributes, bool>,
}

impl std::fmt::Debug for WebhookAuthorizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookAuthorizer")
            .field("authorized_ttl", &self.authorized_ttl)
            .field("unauthorized_ttl", &self.unauthorized_ttl)
            .finish_non_exhaustive()
    }
}

impl WebhookAuthorizer {
    /// Asks `inner`, caching as configured.
    pub fn new(
        inner: Arc<dyn AccessReviewer>,
        authorized_ttl: Duration,
        unauthorized_ttl: Duration,
    ) -> Self {
        WebhookAuthorizer {
            inner,
            authorized_ttl,
            unauthorized_ttl,
            cache: TtlCache::new(CACHE_CAPACITY),
        }
    }
}

#[async_trait]
impl Authorizer for WebhookAuthorizer {
    async fn authorize(&self, attributes: &Attributes) -> Result<bool, AuthError> {
        if let Some(allowed) = self.cache.get(attributes, Instant::now()) {
            return Ok(allowed);
        }
        let allowed = self.inner.review(attributes).await?;
        let ttl = if allowed {
            self.authorized_ttl
        } else {
            self.unauthorized_ttl
        };
        self.cache
            .insert(attributes.clone(), allowed, ttl, Instant::now());
        Ok(allowed)
    }
}

/// A [`TokenReviewer`] and [`AccessReviewer`] over the API server's
/// TokenReview and SubjectAccessReview APIs (upstream's webhook clients in
/// delegated mode).
#[derive(Clone)]
pub struct KubeReviews {
    client: kube::Client,
}

impl std::fmt::Debug for KubeReviews {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeReviews").finish_non_exhaustive()
    }
}

impl KubeReviews {
    /// Reviews through `client` (the kubelet's own credentials; the API
    /// server lets nodes create both reviews).
    pub fn new(client: kube::Client) -> Self {
        KubeReviews { client }
    }
}

#[async_trait]
impl TokenReviewer for KubeReviews {
    async fn review(&self, token: &str) -> Result<Option<UserInfo>, AuthError> {
        use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_owned()),
                audiences: None,
            },
            ..TokenReview::default()
        };
        let api: kube::Api<TokenReview> = kube::Api::all(self.client.clone());
        let answer = api
            .create(&kube::api::PostParams::default(), &review)
            .await
            .map_err(|e| AuthError::Webhook {
                call: "TokenReview",
                message: e.to_string(),
            })?;
        let Some(status) = answer.status else {
            return Ok(None);
        };
        if status.authenticated != Some(true) {
            return Ok(None);
        }
        let user = status.user.unwrap_or_default();
        Ok(Some(UserInfo {
            name: user.username.unwrap_or_default(),
            uid: user.uid.unwrap_or_default(),
            groups: user.groups.unwrap_or_default(),
            extra: user.extra.unwrap_or_default().into_iter().collect(),
        }))
    }
}

#[async_trait]
impl AccessReviewer for KubeReviews {
    async fn review(&self, a: &Attributes) -> Result<bool, AuthError> {
        use k8s_openapi::api::authorization::v1::{
            ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
        };
        let review = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: Some(a.user.name.clone()),
                uid: (!a.user.uid.is_empty()).then(|| a.user.uid.clone()),
                groups: Some(a.user.groups.clone()),
                extra: (!a.user.extra.is_empty())
                    .then(|| a.user.extra.clone().into_iter().collect()),
                resource_attributes: Some(ResourceAttributes {
                    verb: Some(a.verb.clone()),
                    group: Some(String::new()),
                    version: Some("v1".into()),
                    resource: Some(a.resource.clone()),
                    subresource: Some(a.subresource.clone()),
                    name: Some(a.name.clone()),
                    namespace: Some(String::new()),
                    ..ResourceAttributes::default()
                }),
                ..SubjectAccessReviewSpec::default()
            },
            ..SubjectAccessReview::default()
        };
        let api: kube::Api<SubjectAccessReview> = kube::Api::all(self.client.clone());
        let answer = api
            .create(&kube::api::PostParams::default(), &review)
            .await
            .map_err(|e| AuthError::Webhook {
                call: "SubjectAccessReview",
                message: e.to_string(),
            })?;
        Ok(answer.status.is_some_and(|s| s.allowed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn subresources(method: hyper::Method, path: &str) -> Vec<(String, String)> {
        request_attributes(&UserInfo::anonymous(), &method, path, "n1")
            .into_iter()
            .map(|a| {
                assert_eq!((a.resource.as_str(), a.name.as_str()), ("nodes", "n1"));
                (a.verb, a.subresource)
            })
            .collect()
    }

    #[test]
    fn attributes_follow_upstreams_paths() {
        let one = |v: &str, s: &str| vec![(v.to_owned(), s.to_owned())];
        let two = |v: &str, s: &str| {
            vec![
                (v.to_owned(), s.to_owned()),
                (v.to_owned(), "proxy".to_owned()),
            ]
        };
        use hyper::Method as M;
        assert_eq!(subresources(M::GET, "/stats/summary"), one("get", "stats"));
        assert_eq!(subresources(M::GET, "/stats"), one("get", "stats"));
        assert_eq!(
            subresources(M::GET, "/metrics/cadvisor"),
            one("get", "metrics")
        );
        assert_eq!(subresources(M::GET, "/logs/syslog"), one("get", "log"));
        assert_eq!(
            subresources(M::POST, "/checkpoint/a/b/c"),
            one("create", "checkpoint")
        );
        assert_eq!(subresources(M::GET, "/pods"), two("get", "pods"));
        assert_eq!(subresources(M::GET, "/runningpods/"), two("get", "pods"));
        assert_eq!(
            subresources(M::GET, "/healthz/syncloop"),
            two("get", "healthz")
        );
        assert_eq!(subresources(M::GET, "/configz"), two("get", "configz"));
        assert_eq!(
            subresources(M::GET, "/containerLogs/ns/p/c"),
            one("get", "proxy")
        );
        assert_eq!(
            subresources(M::POST, "/exec/ns/p/c"),
            one("create", "proxy")
        );
        // A prefix is a path component, not a string prefix.
        assert_eq!(subresources(M::GET, "/statsx"), one("get", "proxy"));
        assert_eq!(subresources(M::GET, "/podsecrets"), one("get", "proxy"));
        assert_eq!(subresources(M::OPTIONS, "/pods"), two("", "pods"));
    }

    struct Tokens(AtomicUsize);

    #[async_trait]
    impl TokenReviewer for Tokens {
        async fn review(&self, token: &str) -> Result<Option<UserInfo>, AuthError> {
            self.0.fetch_add(1, Ordering::SeqCst);
            match token {
                "good" => Ok(Some(UserInfo {
                    name: "alice".into(),
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

    #[tokio::test]
    async fn credentials_are_tried_strongest_first_and_a_bad_token_fails() {
        let tokens = Arc::new(Tokens(AtomicUsize::new(0)));
        let auth = NodeAuthenticator::new()
            .with_tokens(tokens.clone())
            .with_anonymous(true);
        let cert_user = UserInfo {
            name: "kube-apiserver-kubelet-client".into(),
            groups: vec!["system:masters".into()],
            ..UserInfo::default()
        };
        let got = auth
            .authenticate(&Credentials {
                client_certificate: Some(&cert_user),
                bearer_token: Some("bad"),
            })
            .await;
        assert_eq!(got, Ok(Some(cert_user.clone())));
        assert_eq!(tokens.0.load(Ordering::SeqCst), 0, "no review with a cert");
        let token = |t: &'static str| Credentials {
            client_certificate: None,
            bearer_token: Some(t),
        };
        assert_eq!(
            auth.authenticate(&token("good"))
                .await
                .map(|u| u.map(|u| u.name)),
            Ok(Some("alice".into()))
        );
        assert_eq!(
            auth.authenticate(&token("bad")).await,
            Err(AuthError::InvalidToken),
            "a rejected token is not anonymous"
        );
        assert!(auth.authenticate(&token("down")).await.is_err());
        assert_eq!(
            auth.authenticate(&Credentials::default()).await,
            Ok(Some(UserInfo::anonymous()))
        );
        let closed = NodeAuthenticator::new().with_tokens(tokens.clone());
        assert_eq!(closed.authenticate(&Credentials::default()).await, Ok(None));
    }

    #[tokio::test]
    async fn token_answers_are_cached_but_errors_are_not() {
        let tokens = Arc::new(Tokens(AtomicUsize::new(0)));
        let cached = CachedTokenReviewer::new(tokens.clone(), Duration::from_secs(60));
        for _ in 0..3 {
            assert!(cached.review("good").await.expect("good").is_some());
            assert!(cached.review("bad").await.expect("bad").is_none());
            assert!(cached.review("down").await.is_err());
        }
        // good and bad once each, down every time.
        assert_eq!(tokens.0.load(Ordering::SeqCst), 2 + 3);
        let uncached = CachedTokenReviewer::new(tokens.clone(), Duration::ZERO);
        uncached.review("good").await.expect("good");
        uncached.review("good").await.expect("good");
        assert_eq!(tokens.0.load(Ordering::SeqCst), 7);
    }

    struct Access(AtomicUsize);

    #[async_trait]
    impl AccessReviewer for Access {
        async fn review(&self, a: &Attributes) -> Result<bool, AuthError> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Ok(a.subresource == "stats")
        }
    }

    #[tokio::test]
    async fn decisions_are_cached_for_their_own_ttl() {
        let access = Arc::new(Access(AtomicUsize::new(0)));
        let authz =
            WebhookAuthorizer::new(access.clone(), Duration::from_secs(300), Duration::ZERO);
        let user = UserInfo::anonymous();
        let stats = &request_attributes(&user, &hyper::Method::GET, "/stats/summary", "n")[0];
        let proxy = &request_attributes(&user, &hyper::Method::POST, "/exec/a/b/c", "n")[0];
        for _ in 0..3 {
            assert_eq!(authz.authorize(stats).await, Ok(true));
            assert_eq!(authz.authorize(proxy).await, Ok(false));
        }
        // Allowed once (cached), denied every time (no TTL).
        assert_eq!(access.0.load(Ordering::SeqCst), 1 + 3);
    }

    #[test]
    fn the_cache_stays_bounded() {
        let cache: TtlCache<u32, u32> = TtlCache::new(4);
        let now = Instant::now();
        for i in 0..100 {
            cache.insert(i, i, Duration::from_secs(10), now);
        }
        let len = cache.entries.lock().expect("lock").len();
        assert!(len <= 4, "{len}");
        assert_eq!(cache.get(&99, now), Some(99));
        assert_eq!(cache.get(&99, now + Duration::from_secs(11)), None);
    }
}
