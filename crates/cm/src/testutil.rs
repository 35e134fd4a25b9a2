//! Pods for tests, built from compact descriptions.

use k8s_openapi::api::core::v1::{Container, Pod};
use serde_json::{Map, Value, json};

/// `[(name, value)]` → a resource list object.
fn list(pairs: &[(&str, &str)]) -> Value {
    let mut m = Map::new();
    for (k, v) in pairs {
        m.insert((*k).to_owned(), Value::String((*v).to_owned()));
    }
    Value::Object(m)
}

/// A container with requests and limits.
pub(crate) fn ctr(name: &str, requests: &[(&str, &str)], limits: &[(&str, &str)]) -> Value {
    json!({"name": name, "image": "busybox", "resources": {"requests": list(requests), "limits": list(limits)}})
}

/// A pod with UID `uid`, the given containers and init containers.
pub(crate) fn pod(uid: &str, containers: Vec<Value>, init: Vec<Value>) -> Pod {
    let v = json!({
        "metadata": {"name": "p", "namespace": "default", "uid": uid},
        "spec": {"containers": containers, "initContainers": init},
    });
    serde_json::from_value(v).expect("test pod")
}

/// The seed-004 pod: one container, requests 10Mi/250m, limits 64Mi/500m.
pub(crate) fn seed004() -> Pod {
    pod(
        "0f4c3a2e-1b2d-4c5e-9f00-aabbccddeeff",
        vec![ctr(
            "app",
            &[("memory", "10Mi"), ("cpu", "250m")],
            &[("memory", "64Mi"), ("cpu", "500m")],
        )],
        vec![],
    )
}

/// The pod's first app container.
pub(crate) fn first(p: &Pod) -> &Container {
    &p.spec.as_ref().expect("spec").containers[0]
}
