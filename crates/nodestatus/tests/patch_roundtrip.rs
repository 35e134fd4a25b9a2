//! The status patch, applied as the API server applies a strategic merge
//! patch, turns the old Node into the new one.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kubelet_nodestatus::{
    NodeConfig, RuntimeSync, initial_node, node_status_patch, reconcile_existing, set_node_status,
};
use serde_json::Value;

fn at(secs: i64) -> Time {
    Time(Timestamp::from_second(1_700_000_000 + secs).unwrap())
}

fn roundtrip(old: &Node, new: &Node) {
    let patch = node_status_patch(old, new).unwrap();
    let mut applied = serde_json::to_value(old).unwrap();
    apply_patch(&mut applied, &patch);
    let mut want = serde_json::to_value(new).unwrap();
    // The status subresource keeps the old spec.
    want["spec"] = applied["spec"].clone();
    assert_eq!(applied, want, "patch was {patch}");
}

#[test]
fn status_changes_roundtrip() {
    let config = NodeConfig::new("n");
    let mut s = snapshot();
    let (first, _) = initial_node(&config, &s, at(0));

    // Heartbeat only.
    let mut second = first.clone();
    set_node_status(&mut second, &config, &s, at(10));
    roundtrip(&first, &second);

    // Pressure, not ready, fewer images, another address.
    s.pressure.disk = true;
    s.runtime_health.sync = RuntimeSync::Down;
    s.images = Ok(vec![]);
    s.host_ips = vec!["10.9.9.9".parse().unwrap()];
    let mut third = second.clone();
    set_node_status(&mut third, &config, &s, at(20));
    roundtrip(&second, &third);

    // A condition someone else added is dropped, a capacity removed.
    let mut fourth_old = third.clone();
    let mut extra: Vec<_> = fourth_old
        .status
        .as_ref()
        .unwrap()
        .conditions
        .clone()
        .unwrap();
    extra.insert(
        0,
        k8s_openapi::api::core::v1::NodeCondition {
            type_: "NetworkUnavailable".into(),
            status: "False".into(),
            ..Default::default()
        },
    );
    fourth_old.status.as_mut().unwrap().conditions = Some(extra);
    fourth_old
        .status
        .as_mut()
        .unwrap()
        .capacity
        .as_mut()
        .unwrap()
        .insert("example.com/dongle".into(), q("1"));
    roundtrip(&fourth_old, &third);
}

#[test]
fn reconcile_roundtrip() {
    let config = NodeConfig::new("n");
    let (initial, _) = initial_node(&config, &snapshot(), at(0));
    let mut existing: Node = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "n", "labels": {"kubernetes.io/hostname": "old", "team": "a"}},
        "spec": {"podCIDR": "10.244.0.0/24"},
        "status": {"capacity": {"cpu": "2"}, "allocatable": {"cpu": "2"}}
    }))
    .unwrap();
    let original = existing.clone();
    assert!(reconcile_existing(&mut existing, &initial));
    roundtrip(&original, &existing);
    let patch = node_status_patch(&original, &existing).unwrap();
    assert_eq!(patch["metadata"]["labels"]["kubernetes.io/hostname"], "n");
    assert_eq!(patch["metadata"]["labels"].get("team"), None::<&Value>);
}
