//! Mirror pods: a static pod's stand-in in the API server.
//!
//! Mirrors upstream `pkg/kubelet/pod/mirror_client.go` and the mirror pod
//! steps of `pkg/kubelet/kubelet.go` (`SyncPod`'s "create mirror pod for
//! static pod", `HandlePodCleanups`' `deleteOrphanedMirrorPods`). A mirror
//! pod is a copy of the static pod with the `kubernetes.io/config.mirror`
//! annotation set to the static pod's `kubernetes.io/config.hash`, owned by
//! the Node (so it goes when the Node goes). The API server's
//! NodeRestriction admission lets a node create exactly such pods, bound to
//! itself. The kubelet never runs a mirror pod: it writes the static pod's
//! status to it, recreates it when a user deletes it, replaces it when the
//! static pod changes, and deletes it when the static pod goes.

use std::collections::BTreeMap;

use async_trait::async_trait;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, DeleteParams, PostParams, Preconditions};
use kubelet_container::pod::{
    CONFIG_HASH_ANNOTATION, CONFIG_MIRROR_ANNOTATION, build_pod_full_name, pod_full_name,
};

/// Why a mirror pod call failed: the pod, the verb and the API's answer.
#[derive(Debug, thiserror::Error)]
#[error("mirror pod {pod}: {verb}: {reason}")]
pub struct MirrorError {
    /// The pod's full name (`name_namespace`).
    pub pod: String,
    /// `create`, `delete` or `get node`.
    pub verb: &'static str,
    /// The API server's answer.
    pub reason: String,
}

/// Creates and deletes mirror pods (upstream `MirrorClient`).
#[async_trait]
pub trait MirrorClient: Send + Sync {
    /// Creates the mirror pod of static pod `pod`. An existing mirror pod
    /// with the same hash is success, as upstream.
    async fn create_mirror_pod(&self, pod: &Pod) -> Result<(), MirrorError>;

    /// Deletes the mirror pod `full_name` (grace period 0), only if its UID
    /// is still `uid` when given. Returns whether a pod was deleted; a pod
    /// already gone is `Ok(false)`.
    async fn delete_mirror_pod(
        &self,
        full_name: &str,
        uid: Option<&str>,
    ) -> Result<bool, MirrorError>;
}

/// The static pod's hash (upstream `getPodHash`).
pub fn static_pod_hash(pod: &Pod) -> Option<&str> {
    pod.metadata
        .annotations
        .as_ref()?
        .get(CONFIG_HASH_ANNOTATION)
        .map(String::as_str)
}

/// The hash a mirror pod carries (upstream `getHashFromMirrorPod`).
pub fn mirror_pod_hash(pod: &Pod) -> Option<&str> {
    pod.metadata
        .annotations
        .as_ref()?
        .get(CONFIG_MIRROR_ANNOTATION)
        .map(String::as_str)
}

/// Whether `mirror` is the mirror pod of static pod `pod`: same full name
/// and the hash of this version of it (upstream `IsMirrorPodOf`).
pub fn is_mirror_pod_of(mirror: &Pod, pod: &Pod) -> bool {
    pod_full_name(mirror) == pod_full_name(pod)
        && mirror_pod_hash(mirror).is_some()
        && mirror_pod_hash(mirror) == static_pod_hash(pod)
}

/// The mirror pod of `pod` as it is created: a copy with the mirror
/// annotation and the Node as controlling owner; the fields the API server
/// sets itself are cleared.
pub fn mirror_pod_for(pod: &Pod, node_name: &str, node_uid: &str) -> Pod {
    let mut mirror = pod.clone();
    let hash = static_pod_hash(pod).unwrap_or_default().to_owned();
    let annotations = mirror
        .metadata
        .annotations
        .get_or_insert_with(BTreeMap::new);
    annotations.insert(CONFIG_MIRROR_ANNOTATION.into(), hash);
    mirror.metadata.owner_references = Some(vec![OwnerReference {
        api_version: "v1".into(),
        kind: "Node".into(),
        name: node_name.into(),
        uid: node_uid.into(),
        controller: Some(true),
        block_owner_deletion: None,
    }]);
    mirror.metadata.uid = None;
    mirror.metadata.resource_version = None;
    mirror.metadata.creation_timestamp = None;
    mirror.metadata.managed_fields = None;
    mirror.status = None;
    mirror
}

/// [`MirrorClient`] over the API server.
#[derive(Clone)]
pub struct ApiMirrorClient {
    client: kube::Client,
    node_name: String,
}

impl std::fmt::Debug for ApiMirrorClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiMirrorClient")
            .field("node_name", &self.node_name)
            .finish()
    }
}

impl ApiMirrorClient {
    /// A client creating mirror pods owned by Node `node_name`.
    pub fn new(client: kube::Client, node_name: impl Into<String>) -> Self {
        Self {
            client,
            node_name: node_name.into(),
        }
    }
}

fn api_reason(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => format!("{} ({}): {}", s.reason, s.code, s.message),
        e => e.to_string(),
    }
}

fn is_status(e: &kube::Error, code: u16) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == code)
}

#[async_trait]
impl MirrorClient for ApiMirrorClient {
    async fn create_mirror_pod(&self, pod: &Pod) -> Result<(), MirrorError> {
        let full_name = pod_full_name(pod);
        let err = |verb, e: &kube::Error| MirrorError {
            pod: full_name.clone(),
            verb,
            reason: api_reason(e),
        };
        // Upstream refuses to create a mirror pod without the Node's UID:
        // the owner reference must name this Node.
        let node = Api::<Node>::all(self.client.clone())
            .get(&self.node_name)
            .await
            .map_err(|e| err("get node", &e))?;
        if node.metadata.deletion_timestamp.is_some() {
            return Err(MirrorError {
                pod: full_name,
                verb: "create",
                reason: format!("node {} is being deleted", self.node_name),
            });
        }
        let node_uid = node.metadata.uid.unwrap_or_default();
        let mirror = mirror_pod_for(pod, &self.node_name, &node_uid);
        let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
        let api = Api::<Pod>::namespaced(self.client.clone(), namespace);
        match api.create(&PostParams::default(), &mirror).await {
            Ok(_) => Ok(()),
            Err(e) if is_status(&e, 409) => {
                // Already there: fine when it is this version's mirror.
                let name = pod.metadata.name.as_deref().unwrap_or_default();
                match api.get(name).await {
                    Ok(existing) if mirror_pod_hash(&existing) == static_pod_hash(pod) => Ok(()),
                    Ok(_) => Err(err("create", &e)),
                    Err(e) => Err(err("create", &e)),
                }
            }
            Err(e) => Err(err("create", &e)),
        }
    }

    async fn delete_mirror_pod(
        &self,
        full_name: &str,
        uid: Option<&str>,
    ) -> Result<bool, MirrorError> {
        let Some((name, namespace)) = full_name.rsplit_once('_') else {
            return Err(MirrorError {
                pod: full_name.into(),
                verb: "delete",
                reason: "not a pod full name (name_namespace)".into(),
            });
        };
        let api = Api::<Pod>::namespaced(self.client.clone(), namespace);
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: uid.map(|uid| Preconditions {
                uid: Some(uid.to_owned()),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match api.delete(name, &params).await {
            Ok(_) => {
                tracing::info!(pod = %build_pod_full_name(name, namespace), "mirror pod deleted");
                Ok(true)
            }
            // Gone already, or replaced by another pod of that name.
            Err(e) if is_status(&e, 404) || is_status(&e, 409) => Ok(false),
            Err(e) => Err(MirrorError {
                pod: full_name.into(),
                verb: "delete",
                reason: api_reason(&e),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn static_pod(hash: &str) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some("web-node1".into()),
                namespace: Some("default".into()),
                uid: Some(hash.into()),
                annotations: Some(BTreeMap::from([
                    (CONFIG_HASH_ANNOTATION.into(), hash.into()),
                    (
                        kubelet_container::pod::CONFIG_SOURCE_ANNOTATION.into(),
                        "file".into(),
                    ),
                ])),
                ..ObjectMeta::default()
            },
            ..Pod::default()
        }
    }

    #[test]
    fn a_mirror_pod_carries_the_hash_and_the_node_as_owner() {
        let pod = static_pod("abc");
        let mirror = mirror_pod_for(&pod, "node1", "node-uid");
        assert_eq!(mirror_pod_hash(&mirror), Some("abc"));
        assert!(kubelet_container::pod::is_mirror_pod(&mirror));
        let owner = &mirror.metadata.owner_references.as_ref().expect("owner")[0];
        assert_eq!(
            (owner.kind.as_str(), owner.name.as_str(), owner.uid.as_str()),
            ("Node", "node1", "node-uid")
        );
        assert_eq!(owner.controller, Some(true));
        assert_eq!(mirror.metadata.uid, None);
        assert!(is_mirror_pod_of(&mirror, &pod));
        // Another version of the static pod has another hash.
        assert!(!is_mirror_pod_of(&mirror, &static_pod("def")));
        // A pod without the mirror annotation mirrors nothing.
        assert!(!is_mirror_pod_of(&pod, &pod));
    }
}
