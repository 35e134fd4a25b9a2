//! The summary API types, mirroring upstream's
//! `staging/src/k8s.io/kubelet/pkg/apis/stats/v1alpha1/types.go` field for
//! field, with the same JSON names and the same omissions: optional
//! (pointer) fields are left out when `None`, the required timestamps
//! (`metav1.Time` values) serialize as `null` when `None`, as Go's zero
//! `metav1.Time` does.
//!
//! Left out: the deprecated `accelerators` and `userDefinedMetrics` of
//! `ContainerStats`.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde::{Deserialize, Serialize};

/// Node and pod stats: the body of `GET /stats/summary`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Overall node stats.
    pub node: NodeStats,
    /// Per-pod stats.
    #[serde(default)]
    pub pods: Vec<PodStats>,
}

/// Node-level stats.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeStats {
    /// The node's name.
    pub node_name: String,
    /// Stats of system daemons tracked as raw containers (`kubelet`, `runtime`, `misc`, `pods`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub system_containers: Vec<ContainerStats>,
    /// When data collection for the node-scoped stats (re)started.
    pub start_time: Option<Time>,
    /// CPU.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<CpuStats>,
    /// Memory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<MemoryStats>,
    /// Network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<NetworkStats>,
    /// The node filesystem (nodefs) used by Kubernetes components.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fs: Option<FsStats>,
    /// Stats of the container runtime.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<RuntimeStats>,
    /// Process limits of the OS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rlimit: Option<RlimitStats>,
}

/// Process limits of the OS.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RlimitStats {
    /// When these stats were updated.
    pub time: Option<Time>,
    /// The maximum PID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maxpid: Option<i64>,
    /// The number of running processes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub curproc: Option<i64>,
}

/// Stats of the container runtime.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RuntimeStats {
    /// The filesystem holding images (imagefs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_fs: Option<FsStats>,
    /// The filesystem holding container writable layers, when split from imagefs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_fs: Option<FsStats>,
}

/// Process stats of a pod.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ProcessStats {
    /// Number of processes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process_count: Option<u64>,
}

/// Pod-level stats.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodStats {
    /// The pod.
    pub pod_ref: PodReference,
    /// When data collection for the pod-scoped stats (re)started.
    pub start_time: Option<Time>,
    /// Per-container stats.
    #[serde(default)]
    pub containers: Vec<ContainerStats>,
    /// CPU of the pod cgroup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<CpuStats>,
    /// Memory of the pod cgroup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<MemoryStats>,
    /// Network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<NetworkStats>,
    /// Per-volume filesystem usage.
    #[serde(rename = "volume", default, skip_serializing_if = "Vec::is_empty")]
    pub volume_stats: Vec<VolumeStats>,
    /// Containers' and emptyDir volumes' total filesystem usage.
    #[serde(
        rename = "ephemeral-storage",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub ephemeral_storage: Option<FsStats>,
    /// Process stats.
    #[serde(
        rename = "process_stats",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub process_stats: Option<ProcessStats>,
}

/// Container-level stats.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerStats {
    /// The container's name.
    pub name: String,
    /// When data collection for this container (re)started.
    pub start_time: Option<Time>,
    /// CPU.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<CpuStats>,
    /// Memory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<MemoryStats>,
    /// The container's writable layer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rootfs: Option<FsStats>,
    /// The container's logs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logs: Option<FsStats>,
}

/// Identifies a pod.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodReference {
    /// Name.
    pub name: String,
    /// Namespace.
    pub namespace: String,
    /// UID.
    pub uid: String,
}

/// Counters of one network interface.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InterfaceStats {
    /// Interface name.
    pub name: String,
    /// Bytes received.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rx_bytes: Option<u64>,
    /// Receive errors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rx_errors: Option<u64>,
    /// Bytes sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tx_bytes: Option<u64>,
    /// Transmit errors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tx_errors: Option<u64>,
}

/// Network stats: the default interface inline, plus all interfaces.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct NetworkStats {
    /// When these stats were updated.
    pub time: Option<Time>,
    /// The default interface (inlined, as upstream's `json:",inline"`).
    #[serde(flatten)]
    pub default_interface: InterfaceStats,
    /// All interfaces.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<InterfaceStats>,
}

/// CPU usage.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CpuStats {
    /// When these stats were updated.
    pub time: Option<Time>,
    /// Usage averaged over the sample window, in nanocores.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage_nano_cores: Option<u64>,
    /// Cumulative usage, in core-nanoseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage_core_nano_seconds: Option<u64>,
}

/// Memory usage.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MemoryStats {
    /// When these stats were updated.
    pub time: Option<Time>,
    /// Limit minus working set; omitted without a limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub available_bytes: Option<u64>,
    /// All memory in use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage_bytes: Option<u64>,
    /// Working set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_set_bytes: Option<u64>,
    /// Anonymous and swap cache memory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rss_bytes: Option<u64>,
    /// Minor page faults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page_faults: Option<u64>,
    /// Major page faults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub major_page_faults: Option<u64>,
}

/// Filesystem usage of one volume.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumeStats {
    /// The usage (inlined).
    #[serde(flatten)]
    pub fs: FsStats,
    /// The volume's name.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// The PVC behind it, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pvc_ref: Option<PvcReference>,
}

/// Identifies a PVC.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PvcReference {
    /// Name.
    pub name: String,
    /// Namespace.
    pub namespace: String,
}

/// Filesystem usage.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FsStats {
    /// When these stats were updated.
    pub time: Option<Time>,
    /// Bytes available.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub available_bytes: Option<u64>,
    /// Capacity in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity_bytes: Option<u64>,
    /// Bytes used for this purpose.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub used_bytes: Option<u64>,
    /// Free inodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inodes_free: Option<u64>,
    /// Total inodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inodes: Option<u64>,
    /// Inodes used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inodes_used: Option<u64>,
}

impl Summary {
    /// The subset served for `/stats/summary?only_cpu_and_memory=true`:
    /// upstream's `SummaryProvider.GetCPUAndMemoryStats` keeps the node's and
    /// system containers' CPU and memory, and each pod's and container's CPU
    /// and memory.
    pub fn cpu_and_memory_only(self) -> Summary {
        fn container(c: ContainerStats) -> ContainerStats {
            ContainerStats {
                name: c.name,
                start_time: c.start_time,
                cpu: c.cpu,
                memory: c.memory,
                rootfs: None,
                logs: None,
            }
        }
        Summary {
            node: NodeStats {
                node_name: self.node.node_name,
                system_containers: self
                    .node
                    .system_containers
                    .into_iter()
                    .map(container)
                    .collect(),
                start_time: self.node.start_time,
                cpu: self.node.cpu,
                memory: self.node.memory,
                ..NodeStats::default()
            },
            pods: self
                .pods
                .into_iter()
                .map(|p| PodStats {
                    pod_ref: p.pod_ref,
                    start_time: p.start_time,
                    containers: p.containers.into_iter().map(container).collect(),
                    cpu: p.cpu,
                    memory: p.memory,
                    ..PodStats::default()
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_names_and_omissions_match_upstream() {
        let summary = Summary {
            node: NodeStats {
                node_name: "n1".into(),
                cpu: Some(CpuStats {
                    time: None,
                    usage_nano_cores: Some(5),
                    usage_core_nano_seconds: None,
                }),
                ..NodeStats::default()
            },
            pods: vec![PodStats {
                pod_ref: PodReference {
                    name: "p".into(),
                    namespace: "ns".into(),
                    uid: "u".into(),
                },
                ephemeral_storage: Some(FsStats {
                    used_bytes: Some(7),
                    ..FsStats::default()
                }),
                ..PodStats::default()
            }],
        };
        let v = serde_json::to_value(&summary).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "node": {"nodeName": "n1", "startTime": null, "cpu": {"time": null, "usageNanoCores": 5}},
                "pods": [{
                    "podRef": {"name": "p", "namespace": "ns", "uid": "u"},
                    "startTime": null,
                    "containers": [],
                    "ephemeral-storage": {"time": null, "usedBytes": 7}
                }]
            })
        );
        let back: Summary = serde_json::from_value(v).unwrap();
        assert_eq!(back, summary);
    }

    #[test]
    fn cpu_and_memory_only_drops_filesystems() {
        let s = Summary {
            node: NodeStats {
                node_name: "n".into(),
                fs: Some(FsStats::default()),
                memory: Some(MemoryStats::default()),
                ..NodeStats::default()
            },
            pods: vec![PodStats {
                containers: vec![ContainerStats {
                    name: "c".into(),
                    rootfs: Some(FsStats::default()),
                    ..ContainerStats::default()
                }],
                ephemeral_storage: Some(FsStats::default()),
                ..PodStats::default()
            }],
        }
        .cpu_and_memory_only();
        assert!(s.node.fs.is_none());
        assert!(s.node.memory.is_some());
        assert!(s.pods[0].ephemeral_storage.is_none());
        assert!(s.pods[0].containers[0].rootfs.is_none());
        assert_eq!(s.pods[0].containers[0].name, "c");
    }
}
