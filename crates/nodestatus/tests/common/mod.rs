//! A fake API server over kube-rs's mock service (`tower-test`): requests
//! are read one by one and answered by the test, and a small strategic
//! merge applier keeps the Node the way the API server would.
#![allow(dead_code, missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use hyper::{Request, Response};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::client::Body;
use kubelet_nodestatus::{
    ImageInfo, MachineInfo, NodeResources, NodeSnapshot, Pressure, RuntimeHealth, RuntimeVersion,
};
use serde_json::{Value, json};

pub type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;
pub type Sender = tower_test::mock::SendResponse<Response<Body>>;

/// Long enough for any wait of the code under test: with paused time it
/// costs nothing.
pub const WAIT: Duration = Duration::from_secs(3600);

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter("kubelet_nodestatus=debug")
        .try_init();
}

pub fn client() -> (kube::Client, Handle) {
    let (mock, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    (kube::Client::new(mock, "default"), handle)
}

/// One request the code under test made.
pub struct Req {
    pub method: String,
    pub uri: String,
    pub content_type: String,
    pub body: Value,
    send: Sender,
}

impl std::fmt::Debug for Req {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.method, self.uri)
    }
}

impl Req {
    pub fn respond(self, status: u16, body: &Value) {
        self.send.send_response(
            Response::builder()
                .status(status)
                .header("content-type", "application/json")
                .body(Body::from(serde_json::to_vec(body).unwrap()))
                .unwrap(),
        );
    }

    /// Asserts the method and path (query string excluded).
    pub fn expect(&self, method: &str, path: &str) {
        let got = self.uri.split('?').next().unwrap_or_default();
        assert_eq!((self.method.as_str(), got), (method, path), "{self:?}");
    }
}

pub async fn next(handle: &mut Handle) -> Req {
    let (request, send) = tokio::time::timeout(WAIT, handle.next_request())
        .await
        .expect("no request")
        .expect("mock closed");
    let method = request.method().to_string();
    let uri = request.uri().to_string();
    let content_type = request
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let bytes = request.into_body().collect_bytes().await.unwrap();
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap()
    };
    Req {
        method,
        uri,
        content_type,
        body,
        send,
    }
}

/// The output of a spawned task, failing (not hanging) when it does not
/// finish: with paused time a task stuck on a request nobody answers would
/// otherwise wait forever.
pub async fn done<T>(task: tokio::task::JoinHandle<T>) -> T {
    tokio::time::timeout(WAIT, task)
        .await
        .expect("the task did not finish")
        .expect("the task panicked")
}

pub fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": code, "reason": reason, "message": message})
}

/// Applies the strategic merge patches the crate sends: maps merge with
/// `null` deleting, `conditions` merge by `type` (with `$patch: delete` and
/// `$setElementOrder`), a list ending in `$patch: replace` replaces, other
/// lists replace.
pub fn apply_patch(target: &mut Value, patch: &Value) {
    let (Some(t), Some(p)) = (target.as_object_mut(), patch.as_object()) else {
        *target = patch.clone();
        return;
    };
    for (key, value) in p {
        if key.starts_with("$setElementOrder/") {
            continue;
        }
        if value.is_null() {
            t.remove(key);
            continue;
        }
        match value {
            Value::Object(_) => {
                let entry = t.entry(key.clone()).or_insert_with(|| json!({}));
                if !entry.is_object() {
                    *entry = json!({});
                }
                apply_patch(entry, value);
            }
            Value::Array(items) if key == "conditions" => {
                let list = t.entry(key.clone()).or_insert_with(|| json!([]));
                let list = list.as_array_mut().unwrap();
                for item in items {
                    let ty = item.get("type").cloned();
                    let pos = list.iter().position(|e| e.get("type").cloned() == ty);
                    if item.get("$patch") == Some(&json!("delete")) {
                        if let Some(i) = pos {
                            list.remove(i);
                        }
                        continue;
                    }
                    match pos {
                        Some(i) => apply_patch(&mut list[i], item),
                        None => list.push(item.clone()),
                    }
                }
                if let Some(order) = p.get(&format!("$setElementOrder/{key}")) {
                    let order: Vec<Value> = order
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|o| o["type"].clone())
                        .collect();
                    list.sort_by_key(|e| order.iter().position(|o| *o == e["type"]));
                }
            }
            Value::Array(items) => {
                let list: Vec<Value> = items
                    .iter()
                    .filter(|i| i.get("$patch") != Some(&json!("replace")))
                    .cloned()
                    .collect();
                t.insert(key.clone(), Value::Array(list));
            }
            other => {
                t.insert(key.clone(), other.clone());
            }
        }
    }
}

pub fn q(s: &str) -> Quantity {
    Quantity(s.to_owned())
}

/// A healthy node.
pub fn snapshot() -> NodeSnapshot {
    NodeSnapshot {
        machine: Ok(MachineInfo {
            num_cores: 2,
            memory_capacity_bytes: 4 << 30,
            machine_id: "mid".into(),
            system_uuid: "uuid".into(),
            boot_id: "boot".into(),
            kernel_version: "6.1.0".into(),
            os_image: "Debian GNU/Linux 12 (bookworm)".into(),
        }),
        resources: NodeResources {
            capacity: BTreeMap::from([
                ("pods".to_owned(), q("110")),
                ("ephemeral-storage".to_owned(), q("20Gi")),
            ]),
            allocatable: BTreeMap::new(),
        },
        runtime_version: RuntimeVersion {
            runtime_name: "containerd".into(),
            version: Ok("1.7.24".into()),
        },
        runtime_health: RuntimeHealth::ready(),
        pleg_health: Ok(()),
        pressure: Pressure::default(),
        images: Ok(vec![ImageInfo {
            repo_digests: vec![],
            repo_tags: vec!["pause:3.10".into()],
            size_bytes: 700_000,
        }]),
        daemon_endpoint_port: 10250,
        host_ips: vec!["10.1.2.3".parse().unwrap()],
    }
}

/// The condition of `ty` in a Node's JSON.
pub fn condition<'a>(node: &'a Value, ty: &str) -> &'a Value {
    node["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == ty)
        .unwrap_or_else(|| panic!("no {ty} condition in {node}"))
}
