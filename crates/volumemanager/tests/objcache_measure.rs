//! Measures of the secret and configMap managers (`objcache`), printed by
//! tests that are ignored by default (timings and RSS are meaningless
//! under a loaded test run):
//!
//! ```text
//! cargo test --release -p kubelet-volumemanager --test objcache_measure -- --ignored --nocapture --test-threads 1
//! ```
//!
//! - `volume_set_up_with_cached_objects`: the set-up of a pod's five API
//!   volumes (3 configMaps, 2 secrets, 10 keys of 1 KiB each) once the
//!   objects are cached by the watch-based manager (a fake watcher: no API
//!   read is timed), first set-up of 300 pods and 300 resyncs of one pod,
//!   p50/p99. Directories, not tmpfs (`memory_backed(false)`): no mount.
//! - `memory_per_watched_config_map_fake_watcher`: the process's RSS
//!   growth for 200 watched ConfigMaps of 10 KiB each, per object, against
//!   a fake watcher (the cache alone). The same against the test bed's
//!   control plane, through the kubelet's API client, is
//!   `crates/agent/tests/api_watch_memory.rs`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use kubelet_volumemanager::objcache::{ObjectSource, ObjectStream, WatchStore};
use kubelet_volumemanager::{
    ApiObjects, ApiVolumes, Error, KubeApiObjects, ObjectManager, VolumeContext,
    prepare_api_volumes,
};
use serde_json::json;

/// Objects in memory; a watch reports the object once, then nothing.
#[derive(Default)]
struct Memory {
    secrets: Mutex<BTreeMap<String, Secret>>,
    config_maps: Mutex<BTreeMap<String, ConfigMap>>,
}

fn lookup<T: Clone>(m: &Mutex<BTreeMap<String, T>>, ns: &str, name: &str) -> Option<T> {
    m.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .get(&format!("{ns}/{name}"))
        .cloned()
}

#[async_trait::async_trait]
impl ObjectSource<Secret> for Memory {
    async fn get(&self, ns: &str, name: &str) -> Result<Option<Secret>, Error> {
        Ok(lookup(&self.secrets, ns, name))
    }
    fn watch(&self, ns: &str, name: &str) -> ObjectStream<Secret> {
        let o = lookup(&self.secrets, ns, name);
        futures::stream::once(async move { Ok(o) })
            .chain(futures::stream::pending())
            .boxed()
    }
}

#[async_trait::async_trait]
impl ObjectSource<ConfigMap> for Memory {
    async fn get(&self, ns: &str, name: &str) -> Result<Option<ConfigMap>, Error> {
        Ok(lookup(&self.config_maps, ns, name))
    }
    fn watch(&self, ns: &str, name: &str) -> ObjectStream<ConfigMap> {
        let o = lookup(&self.config_maps, ns, name);
        futures::stream::once(async move { Ok(o) })
            .chain(futures::stream::pending())
            .boxed()
    }
}

/// A kube client that answers nothing: the tokens are never asked here.
fn no_tokens() -> Arc<dyn ApiObjects> {
    let (mock, _handle) = tower_test::mock::pair::<
        hyper::Request<kube::client::Body>,
        hyper::Response<kube::client::Body>,
    >();
    Arc::new(KubeApiObjects::new(kube::Client::new(mock, "default")))
}

fn data(keys: usize, size: usize) -> BTreeMap<String, String> {
    (0..keys)
        .map(|i| (format!("key-{i}"), "x".repeat(size)))
        .collect()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn pod(uid: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": uid, "namespace": "ns", "uid": uid},
        "spec": {"containers": [{"name": "c"}], "volumes": [
            {"name": "c1", "configMap": {"name": "cm-1"}},
            {"name": "c2", "configMap": {"name": "cm-2"}},
            {"name": "c3", "configMap": {"name": "cm-3"}},
            {"name": "s1", "secret": {"secretName": "s-1"}},
            {"name": "s2", "secret": {"secretName": "s-2"}}
        ]}
    }))
    .expect("pod")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measure: run with --ignored --nocapture"]
async fn volume_set_up_with_cached_objects() {
    let memory = Arc::new(Memory::default());
    for i in 1..=3 {
        let c = ConfigMap {
            data: Some(data(10, 1024)),
            ..Default::default()
        };
        memory
            .config_maps
            .lock()
            .expect("lock")
            .insert(format!("ns/cm-{i}"), c);
    }
    for i in 1..=2 {
        let s = Secret {
            data: Some(
                data(10, 1024)
                    .into_iter()
                    .map(|(k, v)| (k, k8s_openapi::ByteString(v.into_bytes())))
                    .collect(),
            ),
            ..Default::default()
        };
        memory
            .secrets
            .lock()
            .expect("lock")
            .insert(format!("ns/s-{i}"), s);
    }
    let manager = Arc::new(ObjectManager::new(
        Arc::new(WatchStore::<Secret>::new(memory.clone())),
        Arc::new(WatchStore::<ConfigMap>::new(memory.clone())),
        no_tokens(),
    ));
    let volumes = ApiVolumes::new(manager.clone()).memory_backed(false);
    let root = tempfile::tempdir().expect("tmp");
    let ctx = VolumeContext::default();
    let mut first = Vec::new();
    for n in 0..300 {
        let p = pod(&format!("pod-{n}"));
        manager.register_pod(&p);
        // The watches sync (the first lookup waits for them), untimed.
        for i in 1..=3 {
            manager
                .get_config_map("ns", &format!("cm-{i}"))
                .await
                .expect("cached");
        }
        let started = Instant::now();
        prepare_api_volumes(root.path(), &p, &ctx, &volumes)
            .await
            .expect("set up");
        first.push(started.elapsed());
    }
    let p = pod("pod-0");
    let mut resync = Vec::new();
    for _ in 0..300 {
        let started = Instant::now();
        prepare_api_volumes(root.path(), &p, &ctx, &volumes)
            .await
            .expect("set up");
        resync.push(started.elapsed());
    }
    first.sort();
    resync.sort();
    println!(
        "5 API volumes (3 configMaps + 2 secrets, 10 x 1 KiB keys each), objects cached:\n  first set-up: p50 {:?} p99 {:?} max {:?} (300 pods)\n  resync (unchanged): p50 {:?} p99 {:?} max {:?} (300 syncs)",
        percentile(&first, 0.5),
        percentile(&first, 0.99),
        first[first.len() - 1],
        percentile(&resync, 0.5),
        percentile(&resync, 0.99),
        resync[resync.len() - 1],
    );
    // A measure, not a check: on a shared machine the tail is the disk's.
    assert!(first.len() == 300 && resync.len() == 300);
    manager.shutdown().await;
}

use kubelet_testbed::rss_bytes as rss;

// The same measure against the test bed's control plane, through the
// kubelet's own API client, is `crates/agent/tests/api_watch_memory.rs`.
const OBJECTS: usize = 200;
const OBJECT_SIZE: usize = 10 * 1024;

fn cm_pod(i: usize) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": format!("p-{i}"), "namespace": "default", "uid": format!("uid-{i}")},
        "spec": {"containers": [{"name": "c"}], "volumes": [
            {"name": "v", "configMap": {"name": format!("big-{i}")}}
        ]}
    }))
    .expect("pod")
}

/// Registers one pod per ConfigMap and waits until every watch answered;
/// the RSS growth per object.
async fn rss_growth_per_object(manager: &dyn ApiObjects) -> (u64, Duration) {
    let before = rss();
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
    let after = rss();
    (after.saturating_sub(before) / OBJECTS as u64, synced)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measure: run with --ignored --nocapture"]
async fn memory_per_watched_config_map_fake_watcher() {
    let memory = Arc::new(Memory::default());
    for i in 0..OBJECTS {
        let c = ConfigMap {
            data: Some(data(1, OBJECT_SIZE)),
            ..Default::default()
        };
        memory
            .config_maps
            .lock()
            .expect("lock")
            .insert(format!("default/big-{i}"), c);
    }
    let manager = ObjectManager::new(
        Arc::new(WatchStore::<Secret>::new(memory.clone())),
        Arc::new(WatchStore::<ConfigMap>::new(memory.clone())),
        no_tokens(),
    );
    let (per_object, synced) = rss_growth_per_object(&manager).await;
    println!(
        "fake watcher: {OBJECTS} ConfigMaps of {OBJECT_SIZE} B: RSS +{per_object} B per watched object ({:.2}x the object), synced in {synced:?}",
        per_object as f64 / OBJECT_SIZE as f64
    );
    manager.shutdown().await;
}
