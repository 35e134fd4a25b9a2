//! The status PATCH the kubelet sends: a two-way strategic merge patch from
//! the API server's status to the merged one, with the pod's UID as a
//! precondition in `metadata.uid` (upstream `PatchPodStatus` and
//! `preparePatchBytesForPodStatus`, `pkg/util/pod/pod.go`, over
//! `strategicpatch.CreateTwoWayMergePatch`).
//!
//! Only the patch strategies of `PodStatus` are known: `conditions` merge
//! by `type`, `podIPs` and `hostIPs` by `ip`, `resourceClaimStatuses` by
//! `name`; every other list (container statuses among them) is replaced
//! whole, as the API's `listType=atomic` says. Changed list elements carry
//! their merge key and only their changed fields, removed ones a
//! `{"$patch": "delete"}` directive, and a `$setElementOrder/<list>`
//! directive gives the new order, as upstream's diff does.

use k8s_openapi::api::core::v1::PodStatus;
use serde_json::{Map, Value, json};

use crate::merge::pruned_json;

/// The merge key of a list directly under `status`, if it merges.
fn status_merge_key(field: &str) -> Option<&'static str> {
    match field {
        "conditions" => Some("type"),
        "podIPs" | "hostIPs" => Some("ip"),
        "resourceClaimStatuses" => Some("name"),
        _ => None,
    }
}

/// The patch that takes `old` to `new` in a pod's status, wrapped as
/// `{"metadata": {"uid": uid}, "status": ...}` so that the API server
/// refuses it for a pod recreated under the same name; `None` when the
/// status would not change (upstream's `unchanged`: the patch is the
/// precondition alone).
///
/// Both sides are compared as the API server stores them: `null`, `""`,
/// `[]` and `{}` mean absent, and times are whole seconds.
pub fn status_patch(uid: &str, old: &PodStatus, new: &PodStatus) -> Option<Value> {
    let empty = Map::new();
    let old = pruned_json(old);
    let new = pruned_json(new);
    let old = old.as_object().unwrap_or(&empty);
    let new = new.as_object().unwrap_or(&empty);
    let diff = diff_maps(old, new, status_merge_key);
    if diff.is_empty() {
        return None;
    }
    Some(json!({"metadata": {"uid": uid}, "status": Value::Object(diff)}))
}

/// Upstream `diffMaps`: changed keys with their new value (objects
/// recursed into, merging lists diffed by key), removed keys as `null`.
fn diff_maps(
    old: &Map<String, Value>,
    new: &Map<String, Value>,
    merge_key: fn(&str) -> Option<&'static str>,
) -> Map<String, Value> {
    let mut patch = Map::new();
    for (key, n) in new {
        let Some(o) = old.get(key) else {
            patch.insert(key.clone(), n.clone());
            continue;
        };
        if o == n {
            continue;
        }
        match (o, n) {
            (Value::Object(om), Value::Object(nm)) => {
                let d = diff_maps(om, nm, no_merge_key);
                if !d.is_empty() {
                    patch.insert(key.clone(), Value::Object(d));
                }
            }
            (Value::Array(ol), Value::Array(nl)) => match merge_key(key) {
                Some(mk) if keyed(ol, mk) && keyed(nl, mk) => {
                    let (list, order) = diff_keyed_lists(ol, nl, mk);
                    if let Some(order) = order {
                        patch.insert(format!("$setElementOrder/{key}"), Value::Array(order));
                    }
                    if !list.is_empty() {
                        patch.insert(key.clone(), Value::Array(list));
                    }
                }
                _ => {
                    patch.insert(key.clone(), n.clone());
                }
            },
            _ => {
                patch.insert(key.clone(), n.clone());
            }
        }
    }
    for key in old.keys() {
        if !new.contains_key(key) {
            patch.insert(key.clone(), Value::Null);
        }
    }
    patch
}

fn no_merge_key(_: &str) -> Option<&'static str> {
    None
}

/// Every element is an object with the merge key (else the list is
/// replaced whole, where upstream would fail).
fn keyed(list: &[Value], key: &str) -> bool {
    list.iter().all(|v| v.get(key).is_some())
}

/// Upstream `diffListsOfMaps` + `isOrderSame` + the `$setElementOrder`
/// rule: the patch list (changed and added elements in the new order, then
/// deletions) and the order directive when anything changed or moved.
fn diff_keyed_lists(old: &[Value], new: &[Value], key: &str) -> (Vec<Value>, Option<Vec<Value>>) {
    let mut list = Vec::new();
    for n in new {
        let k = n.get(key);
        match old.iter().find(|o| o.get(key) == k) {
            Some(o) if o == n => {}
            Some(Value::Object(o)) => {
                if let Value::Object(nm) = n {
                    let mut d = diff_maps(o, nm, no_merge_key);
                    if !d.is_empty() {
                        if let Some(k) = k {
                            d.insert(key.to_owned(), k.clone());
                        }
                        list.push(Value::Object(d));
                    }
                }
            }
            _ => list.push(n.clone()),
        }
    }
    for o in old {
        let k = o.get(key);
        if !new.iter().any(|n| n.get(key) == k) {
            let mut d = Map::new();
            d.insert("$patch".into(), Value::String("delete".into()));
            if let Some(k) = k {
                d.insert(key.to_owned(), k.clone());
            }
            list.push(Value::Object(d));
        }
    }
    let order_same =
        old.len() == new.len() && old.iter().zip(new).all(|(o, n)| o.get(key) == n.get(key));
    let order = (!list.is_empty() || !order_same).then(|| {
        new.iter()
            .map(|n| {
                let mut m = Map::new();
                if let Some(k) = n.get(key) {
                    m.insert(key.to_owned(), k.clone());
                }
                Value::Object(m)
            })
            .collect()
    });
    (list, order)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::PodCondition;

    fn cond(kind: &str, status: &str) -> PodCondition {
        PodCondition {
            type_: kind.into(),
            status: status.into(),
            ..Default::default()
        }
    }

    #[test]
    fn unchanged_status_gives_no_patch() {
        let s = PodStatus {
            phase: Some("Running".into()),
            conditions: Some(vec![cond("Ready", "True")]),
            reason: Some(String::new()),
            ..Default::default()
        };
        let mut same = s.clone();
        same.reason = None;
        assert_eq!(status_patch("u", &s, &same), None);
    }

    #[test]
    fn conditions_merge_by_type_with_order_and_deletions() {
        let old = PodStatus {
            phase: Some("Pending".into()),
            conditions: Some(vec![
                cond("PodScheduled", "True"),
                cond("Ready", "False"),
                cond("Gone", "True"),
            ]),
            ..Default::default()
        };
        let new = PodStatus {
            phase: Some("Running".into()),
            conditions: Some(vec![cond("PodScheduled", "True"), cond("Ready", "True")]),
            ..Default::default()
        };
        let patch = status_patch("uid-1", &old, &new).expect("a patch");
        assert_eq!(
            patch,
            json!({
                "metadata": {"uid": "uid-1"},
                "status": {
                    "phase": "Running",
                    "$setElementOrder/conditions": [{"type": "PodScheduled"}, {"type": "Ready"}],
                    "conditions": [
                        {"type": "Ready", "status": "True"},
                        {"$patch": "delete", "type": "Gone"}
                    ]
                }
            })
        );
    }

    #[test]
    fn removed_fields_are_nulled_and_atomic_lists_replaced() {
        let old = PodStatus {
            message: Some("m".into()),
            container_statuses: Some(vec![Default::default()]),
            ..Default::default()
        };
        let new = PodStatus {
            container_statuses: Some(vec![k8s_openapi::api::core::v1::ContainerStatus {
                name: "a".into(),
                ready: true,
                ..Default::default()
            }]),
            ..Default::default()
        };
        let patch = status_patch("u", &old, &new).expect("a patch");
        assert_eq!(patch["status"]["message"], Value::Null);
        let list = &patch["status"]["containerStatuses"];
        assert_eq!(list.as_array().map(Vec::len), Some(1));
        assert_eq!(list[0]["name"], "a");
        assert_eq!(list[0]["ready"], true);
    }
}
