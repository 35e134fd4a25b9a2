//! The strategic merge patch of a Node's status (upstream
//! `PatchNodeStatus` and `preparePatchBytesforNodeStatus`,
//! `component-helpers/node/util/status.go`).
//!
//! Upstream computes a two-way strategic merge patch between the Node it
//! read and the Node it wants, with `spec` reset to the old one (the status
//! subresource ignores it), and sends it to `nodes/<name>/status`; metadata
//! changes (labels, annotations) go along, which is how registration
//! reconciles an existing Node. This is the same patch for the fields a
//! kubelet changes: maps are merged with `null` for removed keys,
//! `status.conditions` is merged by `type` with `$setElementOrder` and
//! `$patch: delete` directives, `status.addresses` is replaced as a whole
//! (`$patch: replace`, as upstream's `fixupPatchForNodeStatusAddresses`
//! does because its merge key is wrong), and every other list is replaced.

use k8s_openapi::api::core::v1::Node;
use serde_json::{Map, Value};

/// The strategic merge patch that turns `old` into `new`, `spec` left out.
/// An empty object means nothing changed.
pub fn node_status_patch(old: &Node, new: &Node) -> Result<Value, serde_json::Error> {
    let old_value = serde_json::to_value(old)?;
    let new_value = serde_json::to_value(new)?;
    let mut patch = Map::new();
    for key in ["metadata", "status"] {
        let empty = Value::Object(Map::new());
        let old_part = old_value.get(key).unwrap_or(&empty);
        let new_part = new_value.get(key).unwrap_or(&empty);
        if let Some(d) = diff(old_part, new_part, key) {
            patch.insert(key.to_owned(), d);
        }
    }
    Ok(Value::Object(patch))
}

/// The patch of one value at `path` (dotted), or `None` when equal.
fn diff(old: &Value, new: &Value, path: &str) -> Option<Value> {
    if old == new {
        return None;
    }
    match (old, new) {
        (Value::Object(o), Value::Object(n)) => Some(Value::Object(diff_map(o, n, path))),
        _ => Some(new.clone()),
    }
}

fn diff_map(old: &Map<String, Value>, new: &Map<String, Value>, path: &str) -> Map<String, Value> {
    let mut out = Map::new();
    for (key, new_value) in new {
        let child = format!("{path}.{key}");
        let Some(old_value) = old.get(key) else {
            out.insert(key.clone(), new_value.clone());
            continue;
        };
        if old_value == new_value {
            continue;
        }
        match (child.as_str(), old_value, new_value) {
            ("status.conditions", Value::Array(o), Value::Array(n)) => {
                out.insert(key.clone(), Value::Array(merge_list(o, n, "type")));
                let order = n
                    .iter()
                    .map(|e| {
                        let mut m = Map::new();
                        m.insert("type".into(), e.get("type").cloned().unwrap_or(Value::Null));
                        Value::Object(m)
                    })
                    .collect();
                out.insert(format!("$setElementOrder/{key}"), Value::Array(order));
            }
            ("status.addresses", Value::Array(o), Value::Array(n)) if !o.is_empty() => {
                let mut list = n.clone();
                let mut replace = Map::new();
                replace.insert("$patch".into(), Value::String("replace".into()));
                list.push(Value::Object(replace));
                out.insert(key.clone(), Value::Array(list));
            }
            _ => {
                if let Some(d) = diff(old_value, new_value, &child) {
                    out.insert(key.clone(), d);
                }
            }
        }
    }
    for key in old.keys() {
        if !new.contains_key(key) {
            out.insert(key.clone(), Value::Null);
        }
    }
    out
}

/// A list merged by `merge_key`: changed or new elements as their own patch
/// (with the key), removed ones as `$patch: delete`.
fn merge_list(old: &[Value], new: &[Value], merge_key: &str) -> Vec<Value> {
    let key_of = |v: &Value| v.get(merge_key).cloned();
    let mut out = Vec::new();
    for n in new {
        let k = key_of(n);
        match old.iter().find(|o| key_of(o) == k) {
            None => out.push(n.clone()),
            Some(o) if o == n => {}
            Some(o) => {
                if let (Value::Object(om), Value::Object(nm)) = (o, n) {
                    let mut element = diff_map(om, nm, "");
                    if let Some(k) = k {
                        element.insert(merge_key.to_owned(), k);
                    }
                    out.push(Value::Object(element));
                } else {
                    out.push(n.clone());
                }
            }
        }
    }
    for o in old {
        let k = key_of(o);
        if !new.iter().any(|n| key_of(n) == k) {
            let mut element = Map::new();
            if let Some(k) = k {
                element.insert(merge_key.to_owned(), k);
            }
            element.insert("$patch".into(), Value::String("delete".into()));
            out.push(Value::Object(element));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use serde_json::json;

    fn node(v: Value) -> Node {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn unchanged_is_empty() {
        let n = node(json!({"metadata": {"name": "n"}, "status": {"phase": "Running"}}));
        assert_eq!(node_status_patch(&n, &n).unwrap(), json!({}));
    }

    #[test]
    fn spec_is_left_out_and_maps_use_null() {
        let old = node(json!({
            "metadata": {"name": "n", "labels": {"a": "1", "gone": "x"}},
            "spec": {"unschedulable": true},
            "status": {"capacity": {"cpu": "4", "example.com/gpu": "1"}}
        }));
        let new = node(json!({
            "metadata": {"name": "n", "labels": {"a": "2"}},
            "spec": {"unschedulable": false},
            "status": {"capacity": {"cpu": "4"}}
        }));
        assert_eq!(
            node_status_patch(&old, &new).unwrap(),
            json!({
                "metadata": {"labels": {"a": "2", "gone": null}},
                "status": {"capacity": {"example.com/gpu": null}}
            })
        );
    }

    #[test]
    fn conditions_merge_by_type() {
        let old = node(json!({"metadata": {"name": "n"}, "status": {"conditions": [
            {"type": "MemoryPressure", "status": "False", "reason": "a", "message": "m", "lastHeartbeatTime": "2024-01-01T00:00:00Z"},
            {"type": "Gone", "status": "True"},
            {"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "x", "lastHeartbeatTime": "2024-01-01T00:00:00Z"}
        ]}}));
        let new = node(json!({"metadata": {"name": "n"}, "status": {"conditions": [
            {"type": "MemoryPressure", "status": "False", "reason": "a", "message": "m", "lastHeartbeatTime": "2024-01-01T00:00:10Z"},
            {"type": "Ready", "status": "False", "reason": "KubeletNotReady", "lastHeartbeatTime": "2024-01-01T00:00:10Z"}
        ]}}));
        assert_eq!(
            node_status_patch(&old, &new).unwrap(),
            json!({"status": {
                "$setElementOrder/conditions": [{"type": "MemoryPressure"}, {"type": "Ready"}],
                "conditions": [
                    {"type": "MemoryPressure", "lastHeartbeatTime": "2024-01-01T00:00:10Z"},
                    {"type": "Ready", "status": "False", "reason": "KubeletNotReady", "message": null, "lastHeartbeatTime": "2024-01-01T00:00:10Z"},
                    {"type": "Gone", "$patch": "delete"}
                ]
            }})
        );
    }

    #[test]
    fn addresses_are_replaced() {
        let old = node(json!({"metadata": {"name": "n"}, "status": {"addresses": [
            {"type": "InternalIP", "address": "10.0.0.1"}, {"type": "InternalIP", "address": "fd00::1"}
        ]}}));
        let new = node(json!({"metadata": {"name": "n"}, "status": {"addresses": [
            {"type": "InternalIP", "address": "10.0.0.2"}, {"type": "Hostname", "address": "n"}
        ]}}));
        assert_eq!(
            node_status_patch(&old, &new).unwrap(),
            json!({"status": {"addresses": [
                {"type": "InternalIP", "address": "10.0.0.2"}, {"type": "Hostname", "address": "n"},
                {"$patch": "replace"}
            ]}})
        );
    }
}
