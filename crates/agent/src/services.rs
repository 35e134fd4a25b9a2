//! The cluster's Services, for the containers' service environment
//! variables (upstream `serviceLister` and `serviceHasSynced` in
//! `pkg/kubelet/kubelet.go`: an informer on Services of every namespace,
//! read by `getServiceEnvVarMap` in `pkg/kubelet/kubelet_pods.go`).
//!
//! A reflector over `kube::runtime::watcher` keeps every Service in
//! memory ([`ServiceReflector::run`], a task of the kubelet, restarted
//! with kube-rs's default back-off when the watch fails);
//! [`ServiceLister::service_env`] makes a pod's variables from it. A
//! standalone kubelet has none: its pods get no service variables, as
//! upstream's without a `kubeClient`.

use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kubelet_container::env::{ServiceEnv, service_env_var_map};
use tokio::sync::watch;

/// The Services as last listed and watched.
#[derive(Clone)]
pub struct ServiceLister {
    store: Store<Service>,
}

impl std::fmt::Debug for ServiceLister {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceLister")
            .field("services", &self.store.len())
            .field("synced", &self.has_synced())
            .finish()
    }
}

/// The task that fills a [`ServiceLister`].
pub struct ServiceReflector {
    client: kube::Client,
    writer: reflector::store::Writer<Service>,
}

impl std::fmt::Debug for ServiceReflector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceReflector").finish_non_exhaustive()
    }
}

/// A lister of the Services of every namespace and the reflector that
/// fills it through `client`.
pub fn service_reflector(client: kube::Client) -> (ServiceLister, ServiceReflector) {
    let (store, writer) = reflector::store();
    (ServiceLister { store }, ServiceReflector { client, writer })
}

impl ServiceReflector {
    /// Lists and watches Services until `stop` turns true; a failed watch
    /// is logged and started again after kube-rs's default back-off.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let api = kube::Api::<Service>::all(self.client);
        let mut stream = std::pin::pin!(
            reflector::reflector(self.writer, watcher(api, watcher::Config::default()))
                .default_backoff()
        );
        loop {
            tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                event = stream.next() => match event {
                    None => return,
                    Some(Err(e)) => tracing::warn!(error = %e, "service watch failed; retrying"),
                    Some(Ok(_)) => {}
                },
            }
        }
    }
}

impl ServiceLister {
    /// Whether the Services were listed at least once (upstream
    /// `serviceHasSynced`).
    pub fn has_synced(&self) -> bool {
        matches!(self.store.wait_until_ready().now_or_never(), Some(Ok(())))
    }

    /// The service variables of `pod` (upstream `getServiceEnvVarMap`):
    /// [`ServiceEnv::NotSynced`] while the Services have not been listed
    /// once, unless the pod is a static pod (upstream only waits for the
    /// lister for pods from the API server).
    pub fn service_env(&self, pod: &Pod) -> ServiceEnv {
        if !self.has_synced() && !kubelet_container::pod::is_static_pod(pod) {
            return ServiceEnv::NotSynced;
        }
        let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
        // The API server defaults `enableServiceLinks` to true.
        let links = pod
            .spec
            .as_ref()
            .and_then(|s| s.enable_service_links)
            .unwrap_or(true);
        let services = self.store.state();
        ServiceEnv::Vars(service_env_var_map(
            services.iter().map(AsRef::as_ref),
            namespace,
            links,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(ns: &str, name: &str, ip: &str) -> Service {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": ns},
            "spec": {"clusterIP": ip, "ports": [{"port": 443, "protocol": "TCP"}]}
        }))
        .expect("service")
    }

    fn pod(ns: &str, links: Option<bool>, static_pod: bool) -> Pod {
        let mut annotations = serde_json::Map::new();
        if static_pod {
            annotations.insert("kubernetes.io/config.source".into(), "file".into());
        }
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": ns, "annotations": annotations},
            "spec": {"containers": [{"name": "c"}], "enableServiceLinks": links}
        }))
        .expect("pod")
    }

    #[test]
    fn the_lister_answers_once_synced_and_follows_enable_service_links() {
        let (store, mut writer) = reflector::store::<Service>();
        let lister = ServiceLister { store };
        assert_eq!(
            lister.service_env(&pod("team", None, false)),
            ServiceEnv::NotSynced
        );
        assert_eq!(
            lister.service_env(&pod("team", None, true)),
            ServiceEnv::Vars(vec![]),
            "static pods do not wait"
        );
        writer.apply_watcher_event(&watcher::Event::Init);
        for s in [
            service("default", "kubernetes", "10.96.0.1"),
            service("team", "db", "10.96.0.7"),
            service("other", "cache", "10.96.0.8"),
        ] {
            writer.apply_watcher_event(&watcher::Event::InitApply(s));
        }
        writer.apply_watcher_event(&watcher::Event::InitDone);
        assert!(lister.has_synced());
        let hosts = |env: ServiceEnv| -> Vec<String> {
            match env {
                ServiceEnv::Vars(v) => v
                    .into_iter()
                    .filter(|(n, _)| n.ends_with("_SERVICE_HOST"))
                    .map(|(n, v)| format!("{n}={v}"))
                    .collect(),
                other => panic!("{other:?}"),
            }
        };
        assert_eq!(
            hosts(lister.service_env(&pod("team", None, false))),
            [
                "DB_SERVICE_HOST=10.96.0.7",
                "KUBERNETES_SERVICE_HOST=10.96.0.1"
            ]
        );
        assert_eq!(
            hosts(lister.service_env(&pod("team", Some(false), false))),
            ["KUBERNETES_SERVICE_HOST=10.96.0.1"]
        );
    }
}
