//! The node API's authentication and authorization per request with warm
//! caches (issue 15's goal: under 50 µs), as `check_auth` runs them: the
//! authenticator (a client certificate's user, or a bearer token through
//! the cached TokenReview), upstream's request attributes for the path,
//! then the SubjectAccessReview cache of the webhook authorizer. The
//! reviewers behind the caches count their calls: a warm run must make
//! none.
//!
//! `cargo bench -p kubelet-server --bench authz`

use std::collections::BTreeMap;
use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use criterion::Criterion;
use kubelet_server::auth::{
    AccessReviewer, Attributes, AuthError, Authenticator, Authorizer, CachedTokenReviewer,
    Credentials, NodeAuthenticator, TokenReviewer, UserInfo, WebhookAuthorizer, request_attributes,
};

#[derive(Default)]
struct Reviews(AtomicUsize);

#[async_trait]
impl TokenReviewer for Reviews {
    async fn review(&self, _token: &str) -> Result<Option<UserInfo>, AuthError> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Ok(Some(UserInfo {
            name: "system:serviceaccount:monitoring:metrics-server".into(),
            uid: "0d9e6a0c-1111-4222-8333-444455556666".into(),
            groups: vec![
                "system:serviceaccounts".into(),
                "system:serviceaccounts:monitoring".into(),
                "system:authenticated".into(),
            ],
            extra: BTreeMap::new(),
        }))
    }
}

#[async_trait]
impl AccessReviewer for Reviews {
    async fn review(&self, _attributes: &Attributes) -> Result<bool, AuthError> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Ok(true)
    }
}

/// One request's checks, as the server runs them.
async fn check(
    authn: &NodeAuthenticator,
    authz: &WebhookAuthorizer,
    credentials: &Credentials<'_>,
    method: &hyper::Method,
    path: &str,
) -> bool {
    let Ok(Some(user)) = authn.authenticate(credentials).await else {
        return false;
    };
    for a in request_attributes(&user, method, path, "node-1") {
        if authz.authorize(&a).await == Ok(true) {
            return true;
        }
    }
    false
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let reviews = Arc::new(Reviews::default());
    let authn = NodeAuthenticator::new().with_tokens(Arc::new(CachedTokenReviewer::new(
        reviews.clone(),
        Duration::from_secs(120),
    )));
    let authz = WebhookAuthorizer::new(
        reviews.clone(),
        Duration::from_secs(300),
        Duration::from_secs(30),
    );
    let apiserver = UserInfo {
        name: "kube-apiserver-kubelet-client".into(),
        uid: String::new(),
        groups: vec!["system:masters".into(), "system:authenticated".into()],
        extra: BTreeMap::new(),
    };
    let token = "eyJhbGciOiJSUzI1NiIsImtpZCI6ImFiYyJ9.eyJhdWQiOlsiaHR0cHM6Ly9rdWJlcm5ldGVzLmRlZmF1bHQuc3ZjIl19.c2lnbmF0dXJlLXNpZ25hdHVyZS1zaWduYXR1cmUtc2lnbmF0dXJl";
    let cert = Credentials {
        client_certificate: Some(&apiserver),
        bearer_token: None,
    };
    let bearer = Credentials {
        client_certificate: None,
        bearer_token: Some(token),
    };
    let get = hyper::Method::GET;
    let logs = "/containerLogs/default/web-7d4b9c6f5-x2x9k/app";
    let resource = "/metrics/resource";
    // Warm both caches.
    rt.block_on(async {
        assert!(check(&authn, &authz, &cert, &get, logs).await);
        assert!(check(&authn, &authz, &bearer, &get, resource).await);
    });
    let warm = reviews.0.load(Ordering::SeqCst);

    let mut c = Criterion::default().configure_from_args();
    c.bench_function("authz/client_cert_logs_warm", |b| {
        b.iter(|| rt.block_on(check(&authn, &authz, &cert, &get, black_box(logs))))
    });
    c.bench_function("authz/bearer_token_metrics_resource_warm", |b| {
        b.iter(|| rt.block_on(check(&authn, &authz, &bearer, &get, black_box(resource))))
    });
    // The floor in the same run: the attributes alone, no cache lookup.
    c.bench_function("authz/request_attributes_only", |b| {
        b.iter(|| request_attributes(&apiserver, &get, black_box(logs), "node-1"))
    });
    c.final_summary();
    assert_eq!(
        reviews.0.load(Ordering::SeqCst),
        warm,
        "a warm request asked the API server"
    );
}
