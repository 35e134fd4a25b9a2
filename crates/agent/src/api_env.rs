//! What a pod's containers read from the API server beyond their volumes:
//! the Secrets and ConfigMaps of their environment, fetched before each
//! sync ([`fetch_env_objects`]), and the docker configs of the pod's
//! `imagePullSecrets` ([`ApiPullSecrets`]).
//!
//! Mirrors upstream's secret and configMap managers as
//! `makeEnvironmentVariables` and `getPullSecretsForPod`
//! (`pkg/kubelet/kubelet_pods.go`) use them: each object is read through
//! the kubelet's [`ApiObjects`] (the watch-based managers of
//! [`kubelet_volumemanager::objcache`] by default, as the node's
//! `configMapAndSecretChangeDetectionStrategy` says), a missing object is
//! "not found", and any other failure is that object's error.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use kubelet_container::env::{EnvObjects, Lookup, env_references};
use kubelet_kuberuntime::credentials::{PullSecrets, secret_docker_config};
use kubelet_volumemanager::ApiObjects;

/// The Secrets and ConfigMaps `pod`'s env refers to, as the API server
/// has them now, from the pod's namespace.
pub async fn fetch_env_objects(api: &dyn ApiObjects, pod: &Pod) -> EnvObjects {
    let refs = env_references(pod);
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let mut objects = EnvObjects::default();
    for name in refs.secrets {
        let found = match api.get_secret(namespace, &name).await {
            Ok(Some(secret)) => Lookup::Found(secret_data(secret.data)),
            Ok(None) => Lookup::NotFound,
            Err(e) => Lookup::Failed(e.to_string()),
        };
        objects.secrets.insert(name, found);
    }
    for name in refs.config_maps {
        let found = match api.get_config_map(namespace, &name).await {
            Ok(Some(cm)) => Lookup::Found(cm.data.unwrap_or_default()),
            Ok(None) => Lookup::NotFound,
            Err(e) => Lookup::Failed(e.to_string()),
        };
        objects.config_maps.insert(name, found);
    }
    objects
}

fn secret_data(
    data: Option<BTreeMap<String, k8s_openapi::ByteString>>,
) -> BTreeMap<String, Vec<u8>> {
    data.unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.0))
        .collect()
}

/// The pods' pull secrets: read through the kubelet's secret manager
/// `api` in cluster mode, none for a standalone kubelet (`None`).
pub fn pull_secrets(api: Option<Arc<dyn ApiObjects>>) -> Arc<dyn PullSecrets> {
    Arc::new(ApiPullSecrets { api })
}

/// [`PullSecrets`] over the API server: each named secret of type
/// `kubernetes.io/dockerconfigjson` or `kubernetes.io/dockercfg`, read when
/// an image is pulled. A missing or unreadable secret is logged and
/// skipped, as upstream (`Unable to retrieve pull secret, the image pull
/// may not succeed.`). Without an API server there are none.
pub struct ApiPullSecrets {
    api: Option<Arc<dyn ApiObjects>>,
}

impl std::fmt::Debug for ApiPullSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiPullSecrets").finish_non_exhaustive()
    }
}

impl ApiPullSecrets {
    /// Reads pull secrets through `api`.
    pub fn new(api: Arc<dyn ApiObjects>) -> Self {
        Self { api: Some(api) }
    }
}

#[async_trait::async_trait]
impl PullSecrets for ApiPullSecrets {
    async fn docker_configs(&self, namespace: &str, names: &[String]) -> Vec<(String, Vec<u8>)> {
        let mut configs = Vec::new();
        let Some(api) = &self.api else {
            return configs;
        };
        for name in names.iter().filter(|n| !n.is_empty()) {
            let secret = match api.get_secret(namespace, name).await {
                Ok(Some(s)) => s,
                Ok(None) => {
                    tracing::info!(secret = %format!("{namespace}/{name}"), "Unable to retrieve pull secret, the image pull may not succeed: not found");
                    continue;
                }
                Err(e) => {
                    tracing::info!(secret = %format!("{namespace}/{name}"), error = %e, "Unable to retrieve pull secret, the image pull may not succeed");
                    continue;
                }
            };
            let data = secret_data(secret.data);
            match secret_docker_config(secret.type_.as_deref(), &data) {
                Some(config) => configs.push((format!("secret {namespace}/{name}"), config)),
                None => {
                    tracing::debug!(secret = %format!("{namespace}/{name}"), kind = ?secret.type_, "pull secret holds no docker config")
                }
            }
        }
        configs
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{ConfigMap, Secret};
    use kubelet_volumemanager::{Error, IssuedToken, ServiceAccountTokenRequest};
    use std::sync::Mutex;

    /// Objects by `namespace/name`; `broken` fails; every read is recorded.
    #[derive(Default)]
    struct Fake {
        secrets: BTreeMap<String, Secret>,
        config_maps: BTreeMap<String, ConfigMap>,
        reads: Mutex<Vec<String>>,
    }

    #[async_trait::async_trait]
    impl ApiObjects for Fake {
        async fn get_secret(&self, namespace: &str, name: &str) -> Result<Option<Secret>, Error> {
            let key = format!("{namespace}/{name}");
            self.reads
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push(format!("secret {key}"));
            if name == "broken" {
                return Err(Error::Api {
                    what: format!("get secret {key}"),
                    source: "connection refused".into(),
                });
            }
            Ok(self.secrets.get(&key).cloned())
        }

        async fn get_config_map(
            &self,
            namespace: &str,
            name: &str,
        ) -> Result<Option<ConfigMap>, Error> {
            let key = format!("{namespace}/{name}");
            self.reads
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push(format!("configmap {key}"));
            Ok(self.config_maps.get(&key).cloned())
        }

        async fn request_token(
            &self,
            _: &ServiceAccountTokenRequest,
        ) -> Result<IssuedToken, Error> {
            Err(Error::Api {
                what: "token".into(),
                source: "not here".into(),
            })
        }
    }

    fn secret(kind: &str, data: &[(&str, &[u8])]) -> Secret {
        Secret {
            type_: Some(kind.into()),
            data: Some(
                data.iter()
                    .map(|(k, v)| ((*k).to_owned(), k8s_openapi::ByteString(v.to_vec())))
                    .collect(),
            ),
            ..Default::default()
        }
    }

    fn fake() -> Fake {
        let mut f = Fake::default();
        f.secrets
            .insert("ns/db".into(), secret("Opaque", &[("password", b"s3cret")]));
        f.secrets.insert(
            "ns/regcred".into(),
            secret(
                "kubernetes.io/dockerconfigjson",
                &[(".dockerconfigjson", br#"{"auths": {}}"#)],
            ),
        );
        f.secrets.insert(
            "ns/legacy".into(),
            secret("kubernetes.io/dockercfg", &[(".dockercfg", b"{}")]),
        );
        f.config_maps.insert(
            "ns/settings".into(),
            ConfigMap {
                data: Some([("MODE".to_owned(), "fast".to_owned())].into()),
                ..Default::default()
            },
        );
        f
    }

    #[tokio::test]
    async fn env_objects_are_fetched_from_the_pod_namespace_by_reference() {
        let f = fake();
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web", "namespace": "ns"},
            "spec": {"containers": [{"name": "c",
                "envFrom": [{"configMapRef": {"name": "settings"}}, {"secretRef": {"name": "broken"}}],
                "env": [
                    {"name": "A", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}},
                    {"name": "B", "valueFrom": {"secretKeyRef": {"name": "db", "key": "other"}}},
                    {"name": "C", "valueFrom": {"configMapKeyRef": {"name": "gone", "key": "k"}}}
                ]}]}
        }))
        .expect("pod");
        let objects = fetch_env_objects(&f, &pod).await;
        assert_eq!(
            objects.secrets.get("db"),
            Some(&Lookup::Found(
                [("password".to_owned(), b"s3cret".to_vec())].into()
            ))
        );
        assert!(
            matches!(objects.secrets.get("broken"), Some(Lookup::Failed(m)) if m.contains("connection refused")),
            "{objects:?}"
        );
        assert_eq!(objects.config_maps.get("gone"), Some(&Lookup::NotFound));
        assert_eq!(
            objects.config_maps.get("settings"),
            Some(&Lookup::Found(
                [("MODE".to_owned(), "fast".to_owned())].into()
            ))
        );
        // Each object once, however many references.
        let reads = f.reads.lock().expect("reads").clone();
        assert_eq!(
            reads,
            [
                "secret ns/broken",
                "secret ns/db",
                "configmap ns/gone",
                "configmap ns/settings"
            ]
        );
        // A pod without references reads nothing.
        let plain: Pod = serde_json::from_value(
            serde_json::json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c"}]}}),
        )
        .expect("pod");
        let before = f.reads.lock().expect("reads").len();
        assert_eq!(fetch_env_objects(&f, &plain).await, EnvObjects::default());
        assert_eq!(f.reads.lock().expect("reads").len(), before);
    }

    #[tokio::test]
    async fn pull_secrets_are_the_docker_configs_of_existing_docker_secrets() {
        let p = ApiPullSecrets::new(Arc::new(fake()));
        let names: Vec<String> = ["regcred", "missing", "db", "broken", "legacy", ""]
            .map(String::from)
            .to_vec();
        let configs = p.docker_configs("ns", &names).await;
        assert_eq!(
            configs,
            [
                ("secret ns/regcred".to_owned(), br#"{"auths": {}}"#.to_vec()),
                ("secret ns/legacy".to_owned(), b"{}".to_vec()),
            ]
        );
        // Standalone: none, and nothing asked.
        assert!(
            pull_secrets(None)
                .docker_configs("ns", &names)
                .await
                .is_empty()
        );
    }
}
