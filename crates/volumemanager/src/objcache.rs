//! The kubelet's secret and configMap managers: the Secrets and ConfigMaps
//! of the pods the kubelet runs, kept as the node's
//! `configMapAndSecretChangeDetectionStrategy` says (upstream
//! `pkg/kubelet/util/manager/watch_based_manager.go`,
//! `cache_based_manager.go`, `manager.go`,
//! `pkg/kubelet/secret/secret_manager.go`,
//! `pkg/kubelet/configmap/configmap_manager.go`).
//!
//! - `Watch` (the default, [`WatchStore`]): each object a registered pod
//!   refers to is watched on its own (a list and watch with the field
//!   selector `metadata.name=<name>` in its namespace), reference-counted
//!   across pods; a lookup answers from the watch once it has synced. A
//!   watch that fails is started again after a back-off (0.8 s doubling to
//!   30 s, reset by any event, as client-go's reflector). An object seen
//!   with `immutable: true` is not watched any more: the cached copy
//!   serves from then on.
//! - `Cache` ([`TtlStore`]): a lookup reads the API server when the cached
//!   answer is older than its TTL (one minute, upstream's default; the
//!   node's `node.alpha.kubernetes.io/ttl` annotation is not read), and
//!   registering a pod invalidates its objects. Immutable objects are
//!   never read again.
//! - `Get` ([`KubeApiObjects`](crate::KubeApiObjects)): every lookup reads
//!   the API server.
//!
//! Pods are registered by the kubelet when they are synced and
//! unregistered when they terminate, as upstream's `SyncPod` and
//! `SyncTerminatedPod` do ([`ApiObjects::register_pod`]); a pod registered
//! again drops the references it no longer makes, after adding its new
//! ones. Upstream answers a lookup of an object no registered pod refers
//! to with an error; here it is read from the API server, as is a lookup
//! whose watch has not synced within a second (upstream waits that long,
//! then fails). Upstream also stops watches unused for five sync periods
//! and restarts them on the next lookup; here a watch lives as long as a
//! pod refers to its object.
//!
//! Propagation: nothing here resyncs a pod when an object changes, as
//! upstream: a changed Secret or ConfigMap reaches a pod's volumes on its
//! next periodic sync (`syncFrequency`, 1 minute, plus up to half of it as
//! jitter), so within about `syncFrequency × 1.5` plus the watch's own
//! delay (milliseconds) — or the TTL under `Cache`.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use futures::StreamExt;
use futures::stream::BoxStream;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use kubelet_container::env::pod_object_references;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::Error;
use crate::api::{ApiObjects, IssuedToken, ServiceAccountTokenRequest};

/// Upstream `configMapAndSecretChangeDetectionStrategy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ChangeDetectionStrategy {
    /// A watch per referenced object (upstream's default).
    #[default]
    Watch,
    /// A TTL cache of answers.
    Cache,
    /// A `GET` on every lookup.
    Get,
}

impl std::str::FromStr for ChangeDetectionStrategy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "Watch" => Ok(Self::Watch),
            "Cache" => Ok(Self::Cache),
            "Get" => Ok(Self::Get),
            other => Err(format!("must be Watch, Cache or Get, not {other:?}")),
        }
    }
}

/// A kind the managers keep: Secrets and ConfigMaps.
pub trait ManagedObject: Clone + Send + Sync + std::fmt::Debug + 'static {
    /// The kind as upstream's messages spell it (`secret`, `configmap`).
    const KIND: &'static str;
    /// `immutable: true` (upstream `isSecretImmutable`,
    /// `isConfigMapImmutable`).
    fn is_immutable(&self) -> bool;
}

impl ManagedObject for Secret {
    const KIND: &'static str = "secret";
    fn is_immutable(&self) -> bool {
        self.immutable == Some(true)
    }
}

impl ManagedObject for ConfigMap {
    const KIND: &'static str = "configmap";
    fn is_immutable(&self) -> bool {
        self.immutable == Some(true)
    }
}

/// What one watch reports: the object as it is now, `None` when it does
/// not exist (after the initial list, and on deletion).
pub type ObjectStream<T> = BoxStream<'static, Result<Option<T>, Error>>;

/// Where the stores read objects (upstream `listObjectFunc`,
/// `watchObjectFunc` and `GetObjectFunc`).
#[async_trait::async_trait]
pub trait ObjectSource<T>: Send + Sync + 'static {
    /// The object now; `Ok(None)`: it does not exist.
    async fn get(&self, namespace: &str, name: &str) -> Result<Option<T>, Error>;
    /// A list and watch of the one object: its state after the list, then
    /// after each change. An error ends the watch (it is started again).
    fn watch(&self, namespace: &str, name: &str) -> ObjectStream<T>;
}

/// [`ObjectSource`] over a `kube::Client`: `GET` (a 404 is `None`) and
/// `kube::runtime::watcher` with the field selector
/// `metadata.name=<name>` ([`kube::runtime::watcher::watch_object`]).
#[derive(Clone)]
pub struct KubeObjectSource {
    client: kube::Client,
}

impl std::fmt::Debug for KubeObjectSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeObjectSource").finish_non_exhaustive()
    }
}

impl KubeObjectSource {
    /// Reads through `client`.
    pub fn new(client: kube::Client) -> Self {
        Self { client }
    }
}

#[async_trait::async_trait]
impl<T> ObjectSource<T> for KubeObjectSource
where
    T: ManagedObject
        + kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + serde::de::DeserializeOwned,
{
    async fn get(&self, namespace: &str, name: &str) -> Result<Option<T>, Error> {
        kube::Api::<T>::namespaced(self.client.clone(), namespace)
            .get_opt(name)
            .await
            .map_err(|e| Error::Api {
                what: format!("get {} {namespace}/{name}", T::KIND),
                source: Box::new(e),
            })
    }

    fn watch(&self, namespace: &str, name: &str) -> ObjectStream<T> {
        let what = format!("watch {} {namespace}/{name}", T::KIND);
        let api = kube::Api::<T>::namespaced(self.client.clone(), namespace);
        kube::runtime::watcher::watch_object(api, name)
            .map(move |r| {
                r.map_err(|e| Error::Api {
                    what: what.clone(),
                    source: Box::new(e),
                })
            })
            .boxed()
    }
}

/// Upstream `manager.Store`: objects referenced by registered pods.
#[async_trait::async_trait]
pub trait ObjectStore<T>: Send + Sync {
    /// One more pod refers to `namespace/name`.
    fn add_reference(&self, namespace: &str, name: &str);
    /// One pod fewer refers to `namespace/name`.
    fn delete_reference(&self, namespace: &str, name: &str);
    /// The object; `Ok(None)`: it does not exist.
    async fn get(&self, namespace: &str, name: &str) -> Result<Option<T>, Error>;
    /// Stops every background task and waits for each.
    async fn shutdown(&self) {}
}

type Key = (String, String);

fn key(namespace: &str, name: &str) -> Key {
    (namespace.to_owned(), name.to_owned())
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The state of one watched object: `None` until the watch has synced,
/// then `Some(None)` (absent) or `Some(Some(object))`.
type Synced<T> = Option<Option<Arc<T>>>;

struct WatchItem<T> {
    refs: usize,
    state: watch::Receiver<Synced<T>>,
    task: Option<JoinHandle<()>>,
}

/// The back-off of a failing watch (client-go's reflector: 800 ms doubling
/// to 30 s).
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    /// The first delay.
    pub initial: Duration,
    /// The longest delay.
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(800),
            max: Duration::from_secs(30),
        }
    }
}

/// Upstream `objectCache` (`watch_based_manager.go`): one watch per
/// referenced object, owned by the store (aborted when the last reference
/// goes, and on [`shutdown`](ObjectStore::shutdown) or drop).
pub struct WatchStore<T> {
    source: Arc<dyn ObjectSource<T>>,
    items: Mutex<HashMap<Key, WatchItem<T>>>,
    sync_timeout: Duration,
    backoff: Backoff,
}

impl<T> std::fmt::Debug for WatchStore<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WatchStore")
            .field("objects", &lock(&self.items).len())
            .finish_non_exhaustive()
    }
}

impl<T: ManagedObject> WatchStore<T> {
    /// Watches through `source`; a lookup waits up to a second for a new
    /// watch to sync (upstream's `PollImmediate(10ms, 1s)`).
    pub fn new(source: Arc<dyn ObjectSource<T>>) -> Self {
        Self {
            source,
            items: Mutex::new(HashMap::new()),
            sync_timeout: Duration::from_secs(1),
            backoff: Backoff::default(),
        }
    }

    /// Uses this back-off for failing watches.
    pub fn with_backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// How many pods refer to `namespace/name` (0: not registered).
    pub fn references(&self, namespace: &str, name: &str) -> usize {
        lock(&self.items)
            .get(&key(namespace, name))
            .map_or(0, |i| i.refs)
    }

    /// How many watches run now (immutable objects' have ended).
    pub fn running_watches(&self) -> usize {
        lock(&self.items)
            .values()
            .filter(|i| i.task.as_ref().is_some_and(|t| !t.is_finished()))
            .count()
    }
}

/// One object's watch: its state into `tx`, started again after a
/// back-off when it fails or ends; it returns once the object is seen
/// immutable (upstream stops the reflector then).
async fn run_watch<T: ManagedObject>(
    source: Arc<dyn ObjectSource<T>>,
    namespace: String,
    name: String,
    tx: watch::Sender<Synced<T>>,
    backoff: Backoff,
) {
    let mut delay = backoff.initial;
    loop {
        let mut stream = source.watch(&namespace, &name);
        let failure = loop {
            match stream.next().await {
                Some(Ok(object)) => {
                    let immutable = object.as_ref().is_some_and(ManagedObject::is_immutable);
                    tx.send_replace(Some(object.map(Arc::new)));
                    delay = backoff.initial;
                    if immutable {
                        tracing::debug!(kind = T::KIND, object = %format!("{namespace}/{name}"), "Stopped watching for changes - object is immutable");
                        return;
                    }
                }
                Some(Err(e)) => break e.to_string(),
                None => break "the watch ended".to_owned(),
            }
        };
        drop(stream);
        tracing::warn!(kind = T::KIND, object = %format!("{namespace}/{name}"), error = %failure, retry_in = ?delay, "watch failed; starting it again");
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(backoff.max);
    }
}

#[async_trait::async_trait]
impl<T: ManagedObject> ObjectStore<T> for WatchStore<T> {
    fn add_reference(&self, namespace: &str, name: &str) {
        let mut items = lock(&self.items);
        let item = items.entry(key(namespace, name)).or_insert_with(|| {
            let (tx, rx) = watch::channel(None);
            // Upstream's AddReference only starts the reflector: the first
            // lookup waits for it to sync.
            let task = match tokio::runtime::Handle::try_current() {
                Ok(handle) => Some(handle.spawn(run_watch(
                    self.source.clone(),
                    namespace.to_owned(),
                    name.to_owned(),
                    tx,
                    self.backoff,
                ))),
                Err(_) => {
                    tracing::warn!(
                        kind = T::KIND,
                        "no async runtime: the object is read on each lookup"
                    );
                    None
                }
            };
            WatchItem {
                refs: 0,
                state: rx,
                task,
            }
        });
        item.refs += 1;
    }

    fn delete_reference(&self, namespace: &str, name: &str) {
        let mut items = lock(&self.items);
        let k = key(namespace, name);
        if let Some(item) = items.get_mut(&k) {
            item.refs = item.refs.saturating_sub(1);
            if item.refs == 0
                && let Some(task) = items.remove(&k).and_then(|i| i.task)
            {
                task.abort();
            }
        }
    }

    async fn get(&self, namespace: &str, name: &str) -> Result<Option<T>, Error> {
        let state = lock(&self.items)
            .get(&key(namespace, name))
            .map(|i| i.state.clone());
        if let Some(mut state) = state {
            let synced = tokio::time::timeout(self.sync_timeout, async {
                state
                    .wait_for(Option::is_some)
                    .await
                    .ok()
                    .and_then(|s| s.clone())
            })
            .await;
            if let Ok(Some(object)) = synced {
                return Ok(object.map(|o| (*o).clone()));
            }
            tracing::debug!(kind = T::KIND, object = %format!("{namespace}/{name}"), "watch not synced; reading the object");
        }
        self.source.get(namespace, name).await
    }

    async fn shutdown(&self) {
        let tasks: Vec<JoinHandle<()>> = lock(&self.items)
            .drain()
            .filter_map(|(_, i)| i.task)
            .collect();
        for task in tasks {
            task.abort();
            let _ = task.await;
        }
    }
}

impl<T> Drop for WatchStore<T> {
    fn drop(&mut self) {
        for item in lock(&self.items).values() {
            if let Some(task) = &item.task {
                task.abort();
            }
        }
    }
}

/// Upstream `defaultTTL` of the `Cache` strategy.
pub const DEFAULT_TTL: Duration = Duration::from_secs(60);

struct TtlItem<T> {
    refs: usize,
    /// When read, and what: invalidated (`None`) by each new reference.
    data: Option<(Instant, Option<Arc<T>>)>,
}

/// Upstream `objectStore` (`cache_based_manager.go`): answers cached for a
/// TTL, refreshed on the first lookup after it or after a new reference.
pub struct TtlStore<T> {
    source: Arc<dyn ObjectSource<T>>,
    items: Mutex<HashMap<Key, TtlItem<T>>>,
    ttl: Duration,
}

impl<T> std::fmt::Debug for TtlStore<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TtlStore")
            .field("objects", &lock(&self.items).len())
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl<T: ManagedObject> TtlStore<T> {
    /// Reads through `source`, answers kept for `ttl`.
    pub fn new(source: Arc<dyn ObjectSource<T>>, ttl: Duration) -> Self {
        Self {
            source,
            items: Mutex::new(HashMap::new()),
            ttl,
        }
    }

    /// How many pods refer to `namespace/name`.
    pub fn references(&self, namespace: &str, name: &str) -> usize {
        lock(&self.items)
            .get(&key(namespace, name))
            .map_or(0, |i| i.refs)
    }
}

#[async_trait::async_trait]
impl<T: ManagedObject> ObjectStore<T> for TtlStore<T> {
    fn add_reference(&self, namespace: &str, name: &str) {
        let mut items = lock(&self.items);
        let item = items.entry(key(namespace, name)).or_insert(TtlItem {
            refs: 0,
            data: None,
        });
        item.refs += 1;
        // Upstream: the next Get fetches.
        item.data = None;
    }

    fn delete_reference(&self, namespace: &str, name: &str) {
        let mut items = lock(&self.items);
        let k = key(namespace, name);
        if let Some(item) = items.get_mut(&k) {
            item.refs = item.refs.saturating_sub(1);
            if item.refs == 0 {
                items.remove(&k);
            }
        }
    }

    async fn get(&self, namespace: &str, name: &str) -> Result<Option<T>, Error> {
        let k = key(namespace, name);
        let now = Instant::now();
        let cached = lock(&self.items).get(&k).and_then(|i| i.data.clone());
        if let Some((at, object)) = cached {
            let immutable = object.as_deref().is_some_and(ManagedObject::is_immutable);
            if immutable || now.duration_since(at) < self.ttl {
                return Ok(object.map(|o| (*o).clone()));
            }
        }
        let object = self.source.get(namespace, name).await?;
        if let Some(item) = lock(&self.items).get_mut(&k) {
            item.data = Some((now, object.clone().map(Arc::new)));
        }
        Ok(object)
    }
}

/// The references each registered pod makes, by pod.
#[derive(Default)]
struct PodRefs {
    namespace: String,
    secrets: BTreeSet<String>,
    config_maps: BTreeSet<String>,
}

/// The secret and configMap managers behind [`ApiObjects`] (upstream
/// `cacheBasedManager` around a `Store`, for both kinds): pods register
/// what they refer to, lookups go to the stores, token requests to
/// `tokens`.
pub struct ObjectManager {
    secrets: Arc<dyn ObjectStore<Secret>>,
    config_maps: Arc<dyn ObjectStore<ConfigMap>>,
    tokens: Arc<dyn ApiObjects>,
    pods: Mutex<HashMap<String, PodRefs>>,
}

impl std::fmt::Debug for ObjectManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectManager")
            .field("pods", &lock(&self.pods).len())
            .finish_non_exhaustive()
    }
}

impl ObjectManager {
    /// Lookups from `secrets` and `config_maps`, service account tokens
    /// from `tokens`.
    pub fn new(
        secrets: Arc<dyn ObjectStore<Secret>>,
        config_maps: Arc<dyn ObjectStore<ConfigMap>>,
        tokens: Arc<dyn ApiObjects>,
    ) -> Self {
        Self {
            secrets,
            config_maps,
            tokens,
            pods: Mutex::new(HashMap::new()),
        }
    }

    /// How many pods are registered.
    pub fn registered_pods(&self) -> usize {
        lock(&self.pods).len()
    }
}

/// The manager for `strategy` over `client`: an [`ObjectManager`] on
/// watches (`Watch`) or a TTL cache (`Cache`), or a `GET` per lookup
/// (`Get`, [`KubeApiObjects`](crate::KubeApiObjects)).
pub fn api_objects(strategy: ChangeDetectionStrategy, client: kube::Client) -> Arc<dyn ApiObjects> {
    let direct = Arc::new(crate::KubeApiObjects::new(client.clone()));
    let source = Arc::new(KubeObjectSource::new(client));
    match strategy {
        ChangeDetectionStrategy::Get => direct,
        ChangeDetectionStrategy::Watch => Arc::new(ObjectManager::new(
            Arc::new(WatchStore::<Secret>::new(source.clone())),
            Arc::new(WatchStore::<ConfigMap>::new(source)),
            direct,
        )),
        ChangeDetectionStrategy::Cache => Arc::new(ObjectManager::new(
            Arc::new(TtlStore::<Secret>::new(source.clone(), DEFAULT_TTL)),
            Arc::new(TtlStore::<ConfigMap>::new(source, DEFAULT_TTL)),
            direct,
        )),
    }
}

fn pod_key(pod: &Pod) -> String {
    match pod.metadata.uid.as_deref() {
        Some(uid) if !uid.is_empty() => uid.to_owned(),
        _ => format!(
            "{}/{}",
            pod.metadata.namespace.as_deref().unwrap_or_default(),
            pod.metadata.name.as_deref().unwrap_or_default()
        ),
    }
}

#[async_trait::async_trait]
impl ApiObjects for ObjectManager {
    async fn get_secret(&self, namespace: &str, name: &str) -> Result<Option<Secret>, Error> {
        self.secrets.get(namespace, name).await
    }

    async fn get_config_map(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<ConfigMap>, Error> {
        self.config_maps.get(namespace, name).await
    }

    async fn request_token(
        &self,
        request: &ServiceAccountTokenRequest,
    ) -> Result<IssuedToken, Error> {
        self.tokens.request_token(request).await
    }

    /// Upstream `RegisterPod`: the new references first, then the previous
    /// ones dropped, so an object still referenced keeps its watch.
    fn register_pod(&self, pod: &Pod) {
        let refs = pod_object_references(pod);
        let new = PodRefs {
            namespace: pod.metadata.namespace.clone().unwrap_or_default(),
            secrets: refs.secrets,
            config_maps: refs.config_maps,
        };
        let mut pods = lock(&self.pods);
        for name in &new.secrets {
            self.secrets.add_reference(&new.namespace, name);
        }
        for name in &new.config_maps {
            self.config_maps.add_reference(&new.namespace, name);
        }
        if let Some(prev) = pods.insert(pod_key(pod), new) {
            self.drop_references(&prev);
        }
    }

    /// Upstream `UnregisterPod`.
    fn unregister_pod(&self, pod: &Pod) {
        if let Some(prev) = lock(&self.pods).remove(&pod_key(pod)) {
            self.drop_references(&prev);
        }
    }

    async fn shutdown(&self) {
        lock(&self.pods).clear();
        self.secrets.shutdown().await;
        self.config_maps.shutdown().await;
    }
}

impl ObjectManager {
    fn drop_references(&self, refs: &PodRefs) {
        for name in &refs.secrets {
            self.secrets.delete_reference(&refs.namespace, name);
        }
        for name in &refs.config_maps {
            self.config_maps.delete_reference(&refs.namespace, name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::channel::mpsc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    type Sender<T> = mpsc::UnboundedSender<Result<Option<T>, Error>>;

    /// Objects by key; each watch gets the current state, then every
    /// change; every `get` and `watch` is counted, and `open` counts the
    /// watch streams not yet dropped. `silent`: watches never report.
    struct Fake<T> {
        objects: Mutex<HashMap<Key, T>>,
        watchers: Mutex<Vec<(Key, Sender<T>)>>,
        gets: AtomicUsize,
        watches: AtomicUsize,
        open: Arc<AtomicUsize>,
        silent: std::sync::atomic::AtomicBool,
    }

    impl<T: ManagedObject> Fake<T> {
        fn new() -> Arc<Self> {
            Arc::new(Self {
                objects: Mutex::new(HashMap::new()),
                watchers: Mutex::new(Vec::new()),
                gets: AtomicUsize::new(0),
                watches: AtomicUsize::new(0),
                open: Arc::new(AtomicUsize::new(0)),
                silent: Default::default(),
            })
        }

        fn set(&self, name: &str, object: Option<T>) {
            let k = key("ns", name);
            match &object {
                Some(o) => lock(&self.objects).insert(k.clone(), o.clone()),
                None => lock(&self.objects).remove(&k),
            };
            for (wk, tx) in lock(&self.watchers).iter() {
                if *wk == k {
                    let _ = tx.unbounded_send(Ok(object.clone()));
                }
            }
        }

        fn fail(&self, name: &str) {
            for (wk, tx) in lock(&self.watchers).iter() {
                if *wk == key("ns", name) {
                    let _ = tx.unbounded_send(Err(Error::Api {
                        what: "watch".into(),
                        source: "connection reset".into(),
                    }));
                }
            }
        }

        fn open(&self) -> usize {
            self.open.load(Ordering::SeqCst)
        }
    }

    struct Guard(Arc<AtomicUsize>);
    impl Drop for Guard {
        fn drop(&mut self) {
            self.0.fetch_sub(1, Ordering::SeqCst);
        }
    }

    #[async_trait::async_trait]
    impl<T: ManagedObject> ObjectSource<T> for Fake<T> {
        async fn get(&self, namespace: &str, name: &str) -> Result<Option<T>, Error> {
            self.gets.fetch_add(1, Ordering::SeqCst);
            Ok(lock(&self.objects).get(&key(namespace, name)).cloned())
        }

        fn watch(&self, namespace: &str, name: &str) -> ObjectStream<T> {
            self.watches.fetch_add(1, Ordering::SeqCst);
            self.open.fetch_add(1, Ordering::SeqCst);
            let guard = Guard(self.open.clone());
            let (tx, rx) = mpsc::unbounded();
            let k = key(namespace, name);
            if !self.silent.load(Ordering::SeqCst) {
                let _ = tx.unbounded_send(Ok(lock(&self.objects).get(&k).cloned()));
            }
            lock(&self.watchers).push((k, tx));
            rx.map(move |x| {
                let _ = &guard;
                x
            })
            .boxed()
        }
    }

    #[async_trait::async_trait]
    impl ApiObjects for Fake<ConfigMap> {
        async fn get_secret(&self, _: &str, _: &str) -> Result<Option<Secret>, Error> {
            Ok(None)
        }
        async fn get_config_map(&self, ns: &str, name: &str) -> Result<Option<ConfigMap>, Error> {
            ObjectSource::get(self, ns, name).await
        }
        async fn request_token(
            &self,
            _: &ServiceAccountTokenRequest,
        ) -> Result<IssuedToken, Error> {
            Err(Error::Api {
                what: "token".into(),
                source: "none".into(),
            })
        }
    }

    fn cm(value: &str, immutable: bool) -> ConfigMap {
        ConfigMap {
            data: Some([("k".to_owned(), value.to_owned())].into()),
            immutable: immutable.then_some(true),
            ..Default::default()
        }
    }

    fn value(c: Option<ConfigMap>) -> Option<String> {
        c?.data?.remove("k")
    }

    fn pod(uid: &str, config_maps: &[&str]) -> Pod {
        let volumes: Vec<serde_json::Value> = config_maps
            .iter()
            .map(|n| serde_json::json!({"name": n, "configMap": {"name": n}}))
            .collect();
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": uid, "namespace": "ns", "uid": uid},
            "spec": {"containers": [{"name": "c"}], "volumes": volumes}
        }))
        .expect("pod")
    }

    fn manager(
        source: &Arc<Fake<ConfigMap>>,
        store: Arc<dyn ObjectStore<ConfigMap>>,
    ) -> ObjectManager {
        ObjectManager::new(
            Arc::new(WatchStore::<Secret>::new(Fake::<Secret>::new())),
            store,
            source.clone(),
        )
    }

    /// Lets the watch tasks run.
    async fn settle() {
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn references_are_counted_per_object_across_pods() {
        let source = Fake::<ConfigMap>::new();
        source.set("shared", Some(cm("s1", false)));
        source.set("only-a", Some(cm("a1", false)));
        let store = Arc::new(WatchStore::<ConfigMap>::new(source.clone()));
        let m = manager(&source, store.clone());
        m.register_pod(&pod("a", &["shared", "only-a"]));
        m.register_pod(&pod("b", &["shared"]));
        settle().await;
        assert_eq!(store.references("ns", "shared"), 2);
        assert_eq!(store.references("ns", "only-a"), 1);
        assert_eq!(
            source.watches.load(Ordering::SeqCst),
            2,
            "one watch per object"
        );
        assert_eq!(source.open(), 2);
        // A pod registered again with other references: the new ones are
        // added, the dropped ones released, the kept ones keep their watch.
        m.register_pod(&pod("a", &["shared", "new"]));
        settle().await;
        assert_eq!(store.references("ns", "shared"), 2);
        assert_eq!(store.references("ns", "only-a"), 0);
        assert_eq!(store.references("ns", "new"), 1);
        assert_eq!(source.watches.load(Ordering::SeqCst), 3);
        assert_eq!(source.open(), 2, "only-a's watch ended");
        m.unregister_pod(&pod("a", &[]));
        settle().await;
        assert_eq!(store.references("ns", "shared"), 1);
        assert_eq!(store.references("ns", "new"), 0);
        assert_eq!(source.open(), 1);
        // Unregistering twice changes nothing.
        m.unregister_pod(&pod("a", &[]));
        assert_eq!(store.references("ns", "shared"), 1);
        m.unregister_pod(&pod("b", &[]));
        settle().await;
        assert_eq!(source.open(), 0, "no watch left");
        assert_eq!(m.registered_pods(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn lookups_answer_from_the_watch_and_follow_changes() {
        let source = Fake::<ConfigMap>::new();
        source.set("cfg", Some(cm("v1", false)));
        let store = Arc::new(WatchStore::<ConfigMap>::new(source.clone()));
        let m = manager(&source, store.clone());
        m.register_pod(&pod("a", &["cfg", "absent"]));
        assert_eq!(
            value(m.get_config_map("ns", "cfg").await.expect("get")),
            Some("v1".into())
        );
        assert_eq!(m.get_config_map("ns", "absent").await.expect("get"), None);
        assert_eq!(
            source.gets.load(Ordering::SeqCst),
            0,
            "served by the watches"
        );
        source.set("cfg", Some(cm("v2", false)));
        source.set("absent", Some(cm("here", false)));
        settle().await;
        assert_eq!(
            value(m.get_config_map("ns", "cfg").await.expect("get")),
            Some("v2".into())
        );
        assert_eq!(
            value(m.get_config_map("ns", "absent").await.expect("get")),
            Some("here".into())
        );
        source.set("cfg", None);
        settle().await;
        assert_eq!(
            m.get_config_map("ns", "cfg").await.expect("get"),
            None,
            "deleted"
        );
        assert_eq!(source.gets.load(Ordering::SeqCst), 0);
        // An object no pod refers to is read from the API server.
        source.set("other", Some(cm("o", false)));
        assert_eq!(
            value(m.get_config_map("ns", "other").await.expect("get")),
            Some("o".into())
        );
        assert_eq!(source.gets.load(Ordering::SeqCst), 1);
        m.shutdown().await;
        assert_eq!(source.open(), 0, "shutdown ends every watch");
    }

    #[tokio::test(start_paused = true)]
    async fn a_watch_that_has_not_synced_falls_back_to_a_get() {
        let source = Fake::<ConfigMap>::new();
        source.silent.store(true, Ordering::SeqCst);
        source.set("cfg", Some(cm("v1", false)));
        let store = Arc::new(WatchStore::<ConfigMap>::new(source.clone()));
        let m = manager(&source, store);
        m.register_pod(&pod("a", &["cfg"]));
        let started = Instant::now();
        assert_eq!(
            value(m.get_config_map("ns", "cfg").await.expect("get")),
            Some("v1".into())
        );
        assert_eq!(source.gets.load(Ordering::SeqCst), 1);
        assert!(
            started.elapsed() >= Duration::from_secs(1),
            "waited for the sync first"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_watch_restarts_after_a_backoff_keeping_its_object() {
        let source = Fake::<ConfigMap>::new();
        source.set("cfg", Some(cm("v1", false)));
        let store = Arc::new(WatchStore::<ConfigMap>::new(source.clone()));
        let m = manager(&source, store.clone());
        m.register_pod(&pod("a", &["cfg"]));
        settle().await;
        source.fail("cfg");
        settle().await;
        assert_eq!(source.open(), 0, "the failed stream is dropped");
        assert_eq!(
            value(m.get_config_map("ns", "cfg").await.expect("get")),
            Some("v1".into())
        );
        assert_eq!(
            source.gets.load(Ordering::SeqCst),
            0,
            "the last state still serves"
        );
        // The object changes while no watch runs; after the back-off
        // (800 ms) a new watch lists it.
        source.set("cfg", Some(cm("v2", false)));
        tokio::time::sleep(Duration::from_millis(700)).await;
        settle().await;
        assert_eq!(
            source.watches.load(Ordering::SeqCst),
            1,
            "not before the back-off"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        settle().await;
        assert_eq!(source.watches.load(Ordering::SeqCst), 2);
        assert_eq!(
            value(m.get_config_map("ns", "cfg").await.expect("get")),
            Some("v2".into())
        );
        // Failing again right away: the next delay is the first one again
        // (the watch made progress), then it doubles.
        source.fail("cfg");
        settle().await;
        tokio::time::sleep(Duration::from_millis(810)).await;
        settle().await;
        assert_eq!(source.watches.load(Ordering::SeqCst), 3);
        source.silent.store(true, Ordering::SeqCst);
        source.fail("cfg");
        settle().await;
        tokio::time::sleep(Duration::from_millis(810)).await;
        settle().await;
        assert_eq!(source.watches.load(Ordering::SeqCst), 4);
        source.fail("cfg");
        settle().await;
        tokio::time::sleep(Duration::from_millis(1500)).await;
        settle().await;
        assert_eq!(
            source.watches.load(Ordering::SeqCst),
            4,
            "no event since: 1.6 s now"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        settle().await;
        assert_eq!(source.watches.load(Ordering::SeqCst), 5);
        assert_eq!(store.running_watches(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn immutable_objects_stop_being_watched() {
        let source = Fake::<ConfigMap>::new();
        source.set("frozen", Some(cm("v1", true)));
        let store = Arc::new(WatchStore::<ConfigMap>::new(source.clone()));
        let m = manager(&source, store.clone());
        m.register_pod(&pod("a", &["frozen"]));
        assert_eq!(
            value(m.get_config_map("ns", "frozen").await.expect("get")),
            Some("v1".into())
        );
        settle().await;
        assert_eq!(store.running_watches(), 0);
        assert_eq!(source.open(), 0, "its watch ended");
        assert_eq!(store.references("ns", "frozen"), 1);
        assert_eq!(
            value(m.get_config_map("ns", "frozen").await.expect("get")),
            Some("v1".into())
        );
        assert_eq!(
            source.gets.load(Ordering::SeqCst),
            0,
            "served from the cache"
        );
        assert_eq!(
            source.watches.load(Ordering::SeqCst),
            1,
            "not watched again"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_cache_strategy_reads_again_after_its_ttl_or_a_new_reference() {
        let source = Fake::<ConfigMap>::new();
        source.set("cfg", Some(cm("v1", false)));
        source.set("frozen", Some(cm("f", true)));
        let store = Arc::new(TtlStore::<ConfigMap>::new(source.clone(), DEFAULT_TTL));
        let m = manager(&source, store.clone());
        m.register_pod(&pod("a", &["cfg", "frozen"]));
        let gets = || source.gets.load(Ordering::SeqCst);
        assert_eq!(
            value(m.get_config_map("ns", "cfg").await.expect("get")),
            Some("v1".into())
        );
        assert_eq!(
            value(m.get_config_map("ns", "frozen").await.expect("get")),
            Some("f".into())
        );
        assert_eq!(gets(), 2);
        source.set("cfg", Some(cm("v2", false)));
        tokio::time::sleep(Duration::from_secs(59)).await;
        assert_eq!(
            value(m.get_config_map("ns", "cfg").await.expect("get")),
            Some("v1".into()),
            "within the TTL"
        );
        assert_eq!(gets(), 2);
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(
            value(m.get_config_map("ns", "cfg").await.expect("get")),
            Some("v2".into())
        );
        assert_eq!(
            value(m.get_config_map("ns", "frozen").await.expect("get")),
            Some("f".into())
        );
        assert_eq!(gets(), 3, "immutable objects are not read again");
        // A pod registering invalidates its objects.
        source.set("cfg", Some(cm("v3", false)));
        m.register_pod(&pod("b", &["cfg"]));
        assert_eq!(store.references("ns", "cfg"), 2);
        assert_eq!(
            value(m.get_config_map("ns", "cfg").await.expect("get")),
            Some("v3".into())
        );
        m.unregister_pod(&pod("a", &[]));
        m.unregister_pod(&pod("b", &[]));
        assert_eq!(store.references("ns", "cfg"), 0);
    }

    #[test]
    fn strategies_parse_as_upstream_spells_them() {
        assert_eq!("Watch".parse(), Ok(ChangeDetectionStrategy::Watch));
        assert_eq!("Cache".parse(), Ok(ChangeDetectionStrategy::Cache));
        assert_eq!("Get".parse(), Ok(ChangeDetectionStrategy::Get));
        assert!("watch".parse::<ChangeDetectionStrategy>().is_err());
        assert_eq!(
            ChangeDetectionStrategy::default(),
            ChangeDetectionStrategy::Watch
        );
    }
}
