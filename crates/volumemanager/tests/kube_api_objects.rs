//! `KubeApiObjects` against kube-rs's mock service (`tower-test`): the
//! paths it asks, a 404 as `None`, another error as an error, and the
//! TokenRequest it posts (audiences, expirationSeconds, boundObjectRef).

use std::time::{Duration, SystemTime};

use hyper::{Request, Response};
use kube::client::Body;
use kubelet_volumemanager::{ApiObjects, KubeApiObjects, ServiceAccountTokenRequest};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(10);

type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

/// Takes the next request, answers it, and returns its method, URI and
/// body.
async fn answer(
    handle: &mut Handle,
    status: u16,
    body: serde_json::Value,
) -> (String, String, serde_json::Value) {
    let (request, send) = tokio::time::timeout(WAIT, handle.next_request())
        .await
        .expect("no request was made")
        .expect("mock closed");
    let method = request.method().to_string();
    let uri = request.uri().to_string();
    let bytes = request
        .into_body()
        .collect_bytes()
        .await
        .expect("request body");
    let sent = if bytes.is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_slice(&bytes).expect("a JSON body")
    };
    send.send_response(
        Response::builder()
            .status(status)
            .body(Body::from(serde_json::to_vec(&body).expect("json")))
            .expect("response"),
    );
    (method, uri, sent)
}

fn status(code: u16, reason: &str) -> serde_json::Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": reason, "reason": reason, "code": code})
}

#[tokio::test]
async fn secrets_and_config_maps_are_read_and_404_is_none() {
    let (mock, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let api = KubeApiObjects::new(kube::Client::new(mock, "default"));
    let server = tokio::spawn(async move {
        let (m, uri, _) = answer(
            &mut handle,
            200,
            json!({"apiVersion": "v1", "kind": "Secret",
                   "metadata": {"name": "db", "namespace": "team"}, "data": {"user": "YWRtaW4="}}),
        )
        .await;
        assert_eq!(
            (m.as_str(), uri.as_str()),
            ("GET", "/api/v1/namespaces/team/secrets/db")
        );
        let (m, uri, _) = answer(&mut handle, 404, status(404, "NotFound")).await;
        assert_eq!(
            (m.as_str(), uri.as_str()),
            ("GET", "/api/v1/namespaces/team/configmaps/gone")
        );
        let (_, uri, _) = answer(&mut handle, 403, status(403, "Forbidden")).await;
        assert_eq!(uri, "/api/v1/namespaces/team/configmaps/secret-ish");
        let (_, uri, _) = answer(
            &mut handle,
            200,
            json!({"apiVersion": "v1", "kind": "ConfigMap",
                   "metadata": {"name": "kube-root-ca.crt", "namespace": "team"}, "data": {"ca.crt": "CA"}}),
        )
        .await;
        assert_eq!(uri, "/api/v1/namespaces/team/configmaps/kube-root-ca.crt");
    });
    let secret = api
        .get_secret("team", "db")
        .await
        .expect("get")
        .expect("found");
    assert_eq!(
        secret
            .data
            .as_ref()
            .and_then(|d| d.get("user"))
            .map(|b| b.0.as_slice()),
        Some(&b"admin"[..])
    );
    assert!(
        api.get_config_map("team", "gone")
            .await
            .expect("404 is not an error")
            .is_none()
    );
    let err = api
        .get_config_map("team", "secret-ish")
        .await
        .expect_err("403 is an error");
    assert!(
        err.to_string().contains("get configmap team/secret-ish"),
        "{err}"
    );
    let cm = api
        .get_config_map("team", "kube-root-ca.crt")
        .await
        .expect("get")
        .expect("found");
    assert_eq!(
        cm.data.and_then(|d| d.get("ca.crt").cloned()).as_deref(),
        Some("CA")
    );
    server.await.expect("server");
}

#[tokio::test]
async fn the_token_request_is_bound_to_the_pod() {
    let (mock, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let api = KubeApiObjects::new(kube::Client::new(mock, "default"));
    let server = tokio::spawn(async move {
        let (method, uri, body) = answer(
            &mut handle,
            201,
            json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                   "metadata": {"name": "builder", "namespace": "team"},
                   "spec": {"audiences": ["https://kubernetes.default.svc"], "expirationSeconds": 3607,
                            "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": "web-0", "uid": "u-1"}},
                   "status": {"token": "eyJhbGciOi.jwt", "expirationTimestamp": "2024-01-01T01:00:07Z"}}),
        )
        .await;
        assert_eq!(method, "POST");
        assert!(
            uri.starts_with("/api/v1/namespaces/team/serviceaccounts/builder/token"),
            "{uri}"
        );
        assert_eq!(body["apiVersion"], "authentication.k8s.io/v1");
        assert_eq!(body["kind"], "TokenRequest");
        assert_eq!(body["spec"]["audiences"], json!(["vault"]));
        assert_eq!(body["spec"]["expirationSeconds"], 3607);
        assert_eq!(
            body["spec"]["boundObjectRef"],
            json!({"apiVersion": "v1", "kind": "Pod", "name": "web-0", "uid": "u-1"})
        );
        // A TokenRequest without a status is an error.
        let (_, _, _) = answer(
            &mut handle,
            201,
            json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                   "metadata": {}, "spec": {"audiences": []}}),
        )
        .await;
        let (_, _, _) = answer(&mut handle, 404, status(404, "NotFound")).await;
    });
    let request = ServiceAccountTokenRequest {
        namespace: "team".into(),
        service_account: "builder".into(),
        audiences: vec!["vault".into()],
        expiration_seconds: 3607,
        pod_name: "web-0".into(),
        pod_uid: "u-1".into(),
    };
    let token = api.request_token(&request).await.expect("token");
    assert_eq!(token.token, "eyJhbGciOi.jwt");
    assert_eq!(
        token.expiration_timestamp,
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_704_070_807)
    );
    assert_eq!(token.expiration_seconds, 3607);
    let err = api.request_token(&request).await.expect_err("no status");
    assert!(err.to_string().contains("team/builder"), "{err}");
    let err = api
        .request_token(&request)
        .await
        .expect_err("no such account");
    assert!(err.to_string().contains("team/builder"), "{err}");
    server.await.expect("server");
}
