//! The API server source: the pods bound to this node.
//!
//! Mirrors upstream `pkg/kubelet/config/apiserver.go`: a list/watch of pods
//! with `spec.nodeName=<node>` in all namespaces. Upstream feeds a reflector
//! into an `UndeltaStore`, which pushes the whole list (a SET) on every
//! event; we use kube-rs's `watcher` with its default backoff (800 ms to
//! 30 s, reset after 2 min) and send:
//!
//! - a SET after each complete (re)list (`Init` … `InitDone`), so the source
//!   counts as seen after its initial list, and pods deleted while the watch
//!   was down are removed;
//! - per-event ADD/UPDATE (`Apply`) and REMOVE (`Delete`) in between, which
//!   costs O(1) per event instead of upstream's O(pods). A pod replaced under
//!   the same name by one with a new UID gets a REMOVE of the old UID first,
//!   as the SET diff would give.
//!
//! Upstream waits for the Node informer to sync before starting; that is the
//! kubelet's concern and not done here.

use std::collections::BTreeMap;

use async_trait::async_trait;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};

use crate::config::{PodSource, SourceSink};
use crate::error::Error;
use crate::{API_SOURCE, PodOperation};

/// Pods bound to this node, from the API server. Source name `api`.
#[derive(Clone)]
#[must_use]
pub struct ApiServerSource {
    client: kube::Client,
    node_name: String,
}

impl std::fmt::Debug for ApiServerSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiServerSource")
            .field("node_name", &self.node_name)
            .finish()
    }
}

impl ApiServerSource {
    /// A source watching the pods of `node_name` through `client`.
    pub fn new(client: kube::Client, node_name: impl Into<String>) -> Self {
        Self {
            client,
            node_name: node_name.into(),
        }
    }

    /// The field selector used: `spec.nodeName=<node>`.
    pub fn field_selector(&self) -> String {
        format!("spec.nodeName={}", self.node_name)
    }
}

type Key = (String, String);

fn key(pod: &Pod) -> Key {
    (
        pod.metadata.namespace.clone().unwrap_or_default(),
        pod.metadata.name.clone().unwrap_or_default(),
    )
}

#[async_trait]
impl PodSource for ApiServerSource {
    fn name(&self) -> &str {
        API_SOURCE
    }

    async fn run(self: Box<Self>, sink: SourceSink) {
        let api: Api<Pod> = Api::all(self.client.clone());
        let config = watcher::Config::default().fields(&self.field_selector());
        tracing::info!(node = %self.node_name, "watching pods bound to this node");
        let mut stream = watcher::watcher(api, config).default_backoff().boxed();
        let mut store: BTreeMap<Key, Pod> = BTreeMap::new();
        let mut init: Option<BTreeMap<Key, Pod>> = None;
        while let Some(event) = stream.next().await {
            let sent = match event {
                Ok(Event::Init) => {
                    init = Some(BTreeMap::new());
                    Ok(())
                }
                Ok(Event::InitApply(pod)) => {
                    if let Some(init) = init.as_mut() {
                        init.insert(key(&pod), pod);
                    }
                    Ok(())
                }
                Ok(Event::InitDone) => {
                    store = init.take().unwrap_or_default();
                    tracing::debug!(pods = store.len(), "pod list complete");
                    sink.set(store.values().cloned().collect()).await
                }
                Ok(Event::Apply(pod)) => apply(&sink, &mut store, pod).await,
                Ok(Event::Delete(pod)) => {
                    let removed = store.remove(&key(&pod)).unwrap_or(pod);
                    sink.send(PodOperation::Remove, vec![removed]).await
                }
                Err(err) => {
                    tracing::warn!(error = %err, "pod watch failed; retrying with backoff");
                    Ok(())
                }
            };
            if matches!(sent, Err(Error::Closed)) {
                return;
            }
        }
    }
}

async fn apply(sink: &SourceSink, store: &mut BTreeMap<Key, Pod>, pod: Pod) -> Result<(), Error> {
    let k = key(&pod);
    let op = match store.get(&k) {
        Some(old) if old.metadata.uid != pod.metadata.uid => {
            sink.send(PodOperation::Remove, vec![old.clone()]).await?;
            PodOperation::Add
        }
        Some(_) => PodOperation::Update,
        None => PodOperation::Add,
    };
    store.insert(k, pod.clone());
    sink.send(op, vec![pod]).await
}
