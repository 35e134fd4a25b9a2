//! A measure, ignored by default: the kubelet's RSS growth per watched
//! ConfigMap against the test bed's control plane, through the kubelet's
//! own API client (`apiclient::client_from_kubeconfig`: HTTP/2, every watch
//! a stream of one connection) and the watch-based configMap manager
//! (upstream `watch_based_manager.go`). Goal (issue 14): less than the
//! objects' own size.
//!
//! ```text
//! CI=true cargo test --release -p kubelet-agent --test api_watch_memory -- --ignored --nocapture
//! ```

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kubelet_volumemanager::api_objects;
use kubelet_volumemanager::objcache::ChangeDetectionStrategy;

const OBJECTS: usize = 200;
const OBJECT_SIZE: usize = 10 * 1024;

fn cm_pod(i: usize) -> Pod {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": format!("p-{i}"), "namespace": "default", "uid": format!("uid-{i}")},
        "spec": {"containers": [{"name": "c"}], "volumes": [
            {"name": "v", "configMap": {"name": format!("big-{i}")}}
        ]}
    }))
    .expect("pod")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measure: run with --ignored --nocapture"]
async fn memory_per_watched_config_map_through_the_kubelets_client() {
    let Some(cp) = kubelet_testbed::ControlPlane::start("watch-memory") else {
        return;
    };
    let client =
        kubelet_agent::apiclient::client_from_kubeconfig(&cp.admin_kubeconfig(), 1000, 1000, None)
            .await
            .expect("client");
    let api: kube::Api<ConfigMap> = kube::Api::namespaced(client.clone(), "default");
    for i in 0..OBJECTS {
        let c: ConfigMap = serde_json::from_value(serde_json::json!({
            "metadata": {"name": format!("big-{i}")},
            "data": {"payload": "x".repeat(OBJECT_SIZE)}
        }))
        .expect("configmap");
        api.create(&Default::default(), &c).await.expect("create");
    }
    // Warm the client (its connection, TLS) before the first reading.
    api.get("big-0").await.expect("get");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let manager = api_objects(ChangeDetectionStrategy::Watch, client);
    let before = kubelet_testbed::rss_bytes();
    let started = Instant::now();
    for i in 0..OBJECTS {
        manager.register_pod(&cm_pod(i));
    }
    for i in 0..OBJECTS {
        let c = manager
            .get_config_map("default", &format!("big-{i}"))
            .await
            .expect("get")
            .expect("exists");
        assert_eq!(c.data.map(|d| d.len()), Some(1));
    }
    let synced = started.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let per_object = kubelet_testbed::rss_bytes().saturating_sub(before) / OBJECTS as u64;
    println!(
        "real control plane, the kubelet's API client: {OBJECTS} ConfigMaps of {OBJECT_SIZE} B: \
         RSS +{per_object} B per watched object ({:.2}x the object), synced in {synced:?}",
        per_object as f64 / OBJECT_SIZE as f64
    );
    manager.shutdown().await;
}
