//! A fake API server for the status syncer's tests: pods in memory, the
//! requests it saw, GET / PATCH (strategic merge, UID precondition) /
//! DELETE (UID precondition) as the real one answers them.
#![allow(dead_code, missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::{Request, Response};
use k8s_openapi::api::core::v1::{Pod, PodStatus};
use kube::client::Body;
use kubelet_status::{PodDeletionSafetyProvider, PodManager, PodSyncReport, StatusSync};
use serde_json::{Map, Value, json};

pub const WAIT: Duration = Duration::from_secs(10);

pub type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

/// One request as the API server saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    /// Path and query.
    pub uri: String,
    pub content_type: String,
    pub body: Value,
}

impl Seen {
    pub fn verb_path(&self) -> String {
        format!(
            "{} {}",
            self.method,
            self.uri.split('?').next().unwrap_or_default()
        )
    }
}

pub async fn seen_of(req: Request<Body>) -> Seen {
    let method = req.method().to_string();
    let uri = req.uri().to_string();
    let content_type = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let bytes = req.into_body().collect_bytes().await.expect("request body");
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).expect("JSON request body")
    };
    Seen {
        method,
        uri,
        content_type,
        body,
    }
}

pub fn api_status(code: u16, reason: &str, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": message, "reason": reason, "code": code})
}

/// Pods by `namespace/name`, and every request seen.
#[derive(Default)]
pub struct FakeApi {
    pub pods: Mutex<BTreeMap<String, Value>>,
    pub seen: Mutex<Vec<Seen>>,
    /// Answer everything with this code (503, 403...) while set.
    pub fail_with: Mutex<Option<u16>>,
    /// PATCHes that changed nothing.
    pub useless_patches: Mutex<u32>,
}

/// Drops `null`, `""`, `[]` and `{}`, recursively.
pub fn prune(v: &mut Value) -> bool {
    match v {
        Value::Null => false,
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => {
            for x in a.iter_mut() {
                prune(x);
            }
            !a.is_empty()
        }
        Value::Object(m) => {
            m.retain(|_, x| prune(x));
            !m.is_empty()
        }
        _ => true,
    }
}

pub fn pruned(v: &Value) -> Value {
    let mut v = v.clone();
    if !prune(&mut v) {
        return Value::Null;
    }
    v
}

fn merge_key(field: &str) -> Option<&'static str> {
    match field {
        "conditions" => Some("type"),
        "podIPs" | "hostIPs" => Some("ip"),
        "resourceClaimStatuses" => Some("name"),
        _ => None,
    }
}

fn no_key(_: &str) -> Option<&'static str> {
    None
}

/// Applies a strategic merge patch to a map, as the API server does for
/// the directives the kubelet sends.
pub fn apply_map(
    target: &mut Map<String, Value>,
    patch: &Map<String, Value>,
    keys: fn(&str) -> Option<&'static str>,
) {
    for (k, v) in patch {
        if k.starts_with("$setElementOrder/") {
            continue;
        }
        match (v, keys(k)) {
            (Value::Null, _) => {
                target.remove(k);
            }
            (Value::Array(items), Some(mk)) => {
                let list = target
                    .entry(k.clone())
                    .or_insert_with(|| Value::Array(vec![]));
                if !list.is_array() {
                    *list = Value::Array(vec![]);
                }
                let list = list.as_array_mut().unwrap();
                for p in items {
                    let key = p.get(mk).cloned();
                    if p.get("$patch").and_then(Value::as_str) == Some("delete") {
                        list.retain(|x| x.get(mk) != key.as_ref());
                    } else if let Some(existing) =
                        list.iter_mut().find(|x| x.get(mk) == key.as_ref())
                    {
                        let (Value::Object(e), Value::Object(pm)) = (existing, p) else {
                            panic!("list item not an object")
                        };
                        apply_map(e, pm, no_key);
                    } else {
                        list.push(p.clone());
                    }
                }
            }
            (Value::Object(pm), _) if target.get(k).is_some_and(Value::is_object) => {
                let Some(Value::Object(t)) = target.get_mut(k) else {
                    unreachable!()
                };
                apply_map(t, pm, no_key);
            }
            _ => {
                target.insert(k.clone(), v.clone());
            }
        }
    }
    for (k, order) in patch {
        let Some(field) = k.strip_prefix("$setElementOrder/") else {
            continue;
        };
        let (Some(mk), Some(Value::Array(list)), Value::Array(order)) =
            (keys(field), target.get_mut(field), order)
        else {
            continue;
        };
        let mut sorted = Vec::new();
        for o in order {
            if let Some(pos) = list.iter().position(|x| x.get(mk) == o.get(mk)) {
                sorted.push(list.remove(pos));
            }
        }
        sorted.append(list);
        *list = sorted;
    }
    target.retain(|_, v| !v.is_null());
}

/// The status after the kubelet's patch, as the API server would store it.
pub fn apply_status_patch(status: &PodStatus, patch: &Value) -> PodStatus {
    let mut v = serde_json::to_value(status).unwrap();
    if let (Value::Object(t), Some(Value::Object(p))) = (&mut v, patch.get("status")) {
        apply_map(t, p, merge_key);
    }
    serde_json::from_value(v).expect("patched status")
}

impl FakeApi {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    pub fn put(&self, pod: Value) {
        let key = format!(
            "{}/{}",
            pod["metadata"]["namespace"].as_str().unwrap_or("default"),
            pod["metadata"]["name"].as_str().unwrap()
        );
        self.pods.lock().unwrap().insert(key, pod);
    }

    pub fn pod(&self, namespace: &str, name: &str) -> Option<Pod> {
        self.pods
            .lock()
            .unwrap()
            .get(&format!("{namespace}/{name}"))
            .map(|v| serde_json::from_value(v.clone()).unwrap())
    }

    pub fn pod_by_uid(&self, uid: &str) -> Option<Pod> {
        self.pods
            .lock()
            .unwrap()
            .values()
            .find(|p| p["metadata"]["uid"] == uid)
            .map(|v| serde_json::from_value(v.clone()).unwrap())
    }

    pub fn take_seen(&self) -> Vec<Seen> {
        std::mem::take(&mut *self.seen.lock().unwrap())
    }

    /// Answers one request: `(status code, JSON body)`.
    pub fn answer(&self, seen: &Seen) -> (u16, Value) {
        self.seen.lock().unwrap().push(seen.clone());
        if let Some(code) = *self.fail_with.lock().unwrap() {
            return (code, api_status(code, "Failure", "injected failure"));
        }
        let path = seen.uri.split('?').next().unwrap_or_default();
        let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        // api v1 namespaces <ns> pods <name> [status]
        let (ns, name) = match parts.as_slice() {
            ["api", "v1", "namespaces", ns, "pods", name, ..] => (*ns, *name),
            _ => return (404, api_status(404, "NotFound", "no such path")),
        };
        let key = format!("{ns}/{name}");
        let mut pods = self.pods.lock().unwrap();
        let Some(pod) = pods.get_mut(&key) else {
            return (
                404,
                api_status(404, "NotFound", &format!("pods \"{name}\" not found")),
            );
        };
        let uid = pod["metadata"]["uid"].clone();
        match (seen.method.as_str(), parts.len()) {
            ("GET", 6) => (200, pod.clone()),
            ("PATCH", 7) => {
                if seen.body["metadata"]["uid"] != uid {
                    return (
                        409,
                        api_status(409, "Conflict", "Precondition failed: UID in precondition"),
                    );
                }
                let status = pod
                    .as_object_mut()
                    .unwrap()
                    .entry("status")
                    .or_insert_with(|| json!({}));
                let before = pruned(status);
                if let (Value::Object(t), Some(Value::Object(p))) =
                    (&mut *status, seen.body.get("status"))
                {
                    apply_map(t, p, merge_key);
                }
                if pruned(status) == before {
                    *self.useless_patches.lock().unwrap() += 1;
                }
                (200, pod.clone())
            }
            ("DELETE", 6) => {
                if seen.body["preconditions"]["uid"] != uid {
                    return (
                        409,
                        api_status(409, "Conflict", "Precondition failed: UID in precondition"),
                    );
                }
                let gone = pods.remove(&key).unwrap();
                (200, gone)
            }
            _ => (
                405,
                api_status(405, "MethodNotAllowed", "unexpected request"),
            ),
        }
    }
}

pub fn respond(code: u16, body: &Value) -> Response<Body> {
    Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(Body::from(serde_json::to_vec(body).unwrap()))
        .unwrap()
}

/// Runs one `sync_batch(all)`, answering its requests with `api`, and
/// returns the reports and the requests in order. Fails if the batch does
/// not finish in time (it made a request nobody expected to block on).
pub async fn round(
    sync: &mut StatusSync,
    handle: &mut Handle,
    api: &FakeApi,
    all: bool,
) -> (Vec<PodSyncReport>, Vec<Seen>) {
    let work = async {
        let batch = sync.sync_batch(all);
        tokio::pin!(batch);
        let mut seen = Vec::new();
        loop {
            tokio::select! {
                reports = &mut batch => break (reports, seen),
                r = handle.next_request() => {
                    let (req, send) = r.expect("mock closed");
                    let s = seen_of(req).await;
                    let (code, body) = api.answer(&s);
                    send.send_response(respond(code, &body));
                    seen.push(s);
                }
            }
        }
    };
    tokio::time::timeout(WAIT, work)
        .await
        .expect("the sync round did not finish")
}

/// The kubelet's pods: what the fake API server has (as a watch would
/// deliver), plus static pods and their mirror pods' names.
pub struct FakePods {
    pub api: Arc<FakeApi>,
    pub static_pods: Mutex<BTreeMap<String, Pod>>,
}

impl FakePods {
    pub fn new(api: &Arc<FakeApi>) -> Arc<Self> {
        Arc::new(Self {
            api: Arc::clone(api),
            static_pods: Mutex::new(BTreeMap::new()),
        })
    }
}

impl PodManager for FakePods {
    fn pod_by_uid(&self, uid: &str) -> Option<Pod> {
        if let Some(p) = self.static_pods.lock().unwrap().get(uid) {
            return Some(p.clone());
        }
        self.api
            .pod_by_uid(uid)
            .filter(|p| !kubelet_container::pod::is_mirror_pod(p))
    }

    fn mirror_pod_by_pod(&self, pod: &Pod) -> Option<Pod> {
        let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
        let name = pod.metadata.name.as_deref()?;
        self.api
            .pod(ns, name)
            .filter(kubelet_container::pod::is_mirror_pod)
    }
}

/// Whether containers could run, switchable.
#[derive(Default)]
pub struct Safety {
    pub could_run: AtomicBool,
}

impl Safety {
    pub fn new(could_run: bool) -> Arc<Self> {
        Arc::new(Self {
            could_run: AtomicBool::new(could_run),
        })
    }

    pub fn set(&self, could_run: bool) {
        self.could_run.store(could_run, Ordering::SeqCst);
    }
}

impl PodDeletionSafetyProvider for Safety {
    fn pod_could_have_running_containers(&self, _pod: &Pod) -> bool {
        self.could_run.load(Ordering::SeqCst)
    }
}

pub fn pod_json(name: &str, uid: &str, phase: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "team", "uid": uid, "resourceVersion": "1"},
        "spec": {"nodeName": "node-1", "restartPolicy": "Never",
                 "containers": [{"name": "app", "image": "busybox"}]},
        "status": {"phase": phase}
    })
}

pub fn pod_of(v: &Value) -> Pod {
    serde_json::from_value(v.clone()).unwrap()
}
