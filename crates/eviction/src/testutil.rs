//! Pod and stats builders for unit tests.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Pod, PodSpec, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use kubelet_container::stats::{ContainerStats, MemoryStats, PodReference, PodStats};

/// Requests of memory and ephemeral-storage ("" = none); limits equal to
/// nothing.
pub fn resources(memory: &str, ephemeral: &str) -> ResourceRequirements {
    let mut req = BTreeMap::new();
    if !memory.is_empty() {
        req.insert("memory".to_owned(), Quantity(memory.to_owned()));
    }
    if !ephemeral.is_empty() {
        req.insert(
            "ephemeral-storage".to_owned(),
            Quantity(ephemeral.to_owned()),
        );
    }
    ResourceRequirements {
        requests: (!req.is_empty()).then_some(req),
        ..Default::default()
    }
}

/// A pod named `name` (UID `uid-<name>`) with one container `c`.
pub fn pod(name: &str, priority: i32, memory_request: &str, ephemeral_request: &str) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some("default".to_owned()),
            uid: Some(format!("uid-{name}")),
            ..Default::default()
        },
        spec: Some(PodSpec {
            priority: Some(priority),
            containers: vec![Container {
                name: "c".to_owned(),
                image: Some("busybox".to_owned()),
                resources: Some(resources(memory_request, ephemeral_request)),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Stats of `pod` with a working set of `ws` bytes (pod and container `c`).
pub fn pod_stats_mem(pod: &Pod, ws: u64) -> PodStats {
    let memory = MemoryStats {
        working_set_bytes: Some(ws),
        ..Default::default()
    };
    PodStats {
        pod_ref: PodReference {
            name: pod.metadata.name.clone().unwrap_or_default(),
            namespace: pod.metadata.namespace.clone().unwrap_or_default(),
            uid: pod.metadata.uid.clone().unwrap_or_default(),
        },
        memory: Some(memory.clone()),
        containers: vec![ContainerStats {
            name: "c".to_owned(),
            memory: Some(memory),
            ..Default::default()
        }],
        ..Default::default()
    }
}
