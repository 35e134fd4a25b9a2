//! The kubelet's stats summary: one model for the eviction manager and for
//! `GET /stats/summary`.
//!
//! Mirrors upstream `staging/src/k8s.io/kubelet/pkg/apis/stats/v1alpha1/types.go`
//! field for field, with the same JSON names and the same omissions:
//! optional (pointer) fields are left out when `None`, and the required
//! timestamps (`metav1.Time` values) serialize as `null` when `None`, as
//! Go's zero `metav1.Time` does. [`SummaryProvider`] is upstream's
//! `pkg/kubelet/server/stats` `SummaryProvider`.
//!
//! Left out: the deprecated `accelerators` and `userDefinedMetrics` of
//! `ContainerStats`, and the fields newer than this model (swap, pressure
//! stall information).
//!
//! # Timestamps
//!
//! Every `time` is an `Option<`[`Time`]`>`: `k8s-openapi`'s `metav1.Time`,
//! a wall-clock [`jiff::Timestamp`](k8s_openapi::jiff::Timestamp) with
//! nanosecond precision. It serializes as upstream's RFC 3339 string
//! (whole seconds, as Go's `metav1.Time` marshals) and is totally ordered,
//! so the eviction manager judges freshness as upstream's
//! `thresholdsUpdatedStats` does (`observed.time.After(last.time)`) on the
//! full in-memory precision. A monotonic `Instant` would survive clock
//! steps but cannot be serialized; a wall-clock step backwards costs one
//! eviction pass (the stats look stale once, then the new time is the
//! baseline), as upstream. `None` is upstream's zero time: "always fresh".
//!
//! ```
//! use kubelet_container::stats::{self, MemoryStats, NodeStats, Summary};
//!
//! let t = stats::now();
//! let s = Summary {
//!     node: NodeStats {
//!         node_name: "n1".into(),
//!         memory: Some(MemoryStats {
//!             time: Some(t.clone()),
//!             working_set_bytes: Some(1 << 20),
//!             ..MemoryStats::default()
//!         }),
//!         ..NodeStats::default()
//!     },
//!     pods: vec![],
//! };
//! let json = serde_json::to_value(&s).unwrap();
//! assert_eq!(json["node"]["memory"]["workingSetBytes"], 1 << 20);
//! assert!(json["node"]["memory"]["time"].as_str().unwrap().ends_with('Z'));
//! ```

use std::time::SystemTime;

use async_trait::async_trait;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde::{Deserialize, Serialize};

use crate::Error;

/// The system container tracking the kubelet's usage (upstream
/// `SystemContainerKubelet`).
pub const SYSTEM_CONTAINER_KUBELET: &str = "kubelet";
/// The system container tracking the runtime's usage (upstream
/// `SystemContainerRuntime`).
pub const SYSTEM_CONTAINER_RUNTIME: &str = "runtime";
/// The system container tracking non-Kubernetes processes (upstream
/// `SystemContainerMisc`).
pub const SYSTEM_CONTAINER_MISC: &str = "misc";
/// The system container tracking user pods, the cgroup holding every pod
/// (upstream `SystemContainerPods`): the source of
/// `allocatableMemory.available`.
pub const SYSTEM_CONTAINER_PODS: &str = "pods";

/// The current wall-clock time as a stats timestamp.
pub fn now() -> Time {
    // `SystemTime::now()` is never before 1970 on a sane host; the epoch
    // is the fallback rather than a panic.
    from_system_time(SystemTime::now()).unwrap_or(Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH))
}

/// `t` as a stats timestamp; `None` before 1970 or beyond jiff's range.
pub fn from_system_time(t: SystemTime) -> Option<Time> {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).ok()?;
    let secs = i64::try_from(d.as_secs()).ok()?;
    let nanos = i32::try_from(d.subsec_nanos()).ok()?;
    k8s_openapi::jiff::Timestamp::new(secs, nanos)
        .ok()
        .map(Time)
}

/// The source of [`Summary`]s (upstream `pkg/kubelet/server/stats`
/// `SummaryProvider`).
#[async_trait]
pub trait SummaryProvider: Send + Sync + 'static {
    /// Reads the node's current stats. `update_stats` asks the provider to
    /// refresh cached values first (upstream's `updateStats`).
    async fn get(&self, update_stats: bool) -> Result<Summary, Error>;

    /// The CPU and memory stats only (upstream `GetCPUAndMemoryStats`):
    /// by default [`get`](Self::get) without refreshing, trimmed by
    /// [`Summary::cpu_and_memory_only`].
    async fn get_cpu_and_memory_stats(&self) -> Result<Summary, Error> {
        Ok(self.get(false).await?.cpu_and_memory_only())
    }
}

/// Node and pod stats: the body of `GET /stats/summary`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    /// Overall node stats.
    pub node: NodeStats,
    /// Per-pod stats.
    #[serde(default)]
    pub pods: Vec<PodStats>,
}

/// Node-level stats.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
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
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RlimitStats {
    /// When these stats were updated.
    pub time: Option<Time>,
    /// The PID limit (`maxpid`; on Linux `min(pid_max, threads-max)`).
    #[serde(rename = "maxpid", default, skip_serializing_if = "Option::is_none")]
    pub max_pid: Option<i64>,
    /// The number of running processes (threads) on the node (`curproc`).
    #[serde(rename = "curproc", default, skip_serializing_if = "Option::is_none")]
    pub num_of_running_processes: Option<i64>,
}

/// Stats of the container runtime.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
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
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessStats {
    /// Number of processes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process_count: Option<u64>,
}

/// Pod-level stats.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
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
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
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
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
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
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
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
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
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
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
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
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
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
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
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

impl NodeStats {
    /// The system container named `name` (one of the `SYSTEM_CONTAINER_*`
    /// names; upstream eviction's `getSysContainer`).
    pub fn system_container(&self, name: &str) -> Option<&ContainerStats> {
        self.system_containers.iter().find(|c| c.name == name)
    }

    /// The runtime's image filesystem (`runtime.imageFs`).
    pub fn image_fs(&self) -> Option<&FsStats> {
        self.runtime.as_ref()?.image_fs.as_ref()
    }

    /// The runtime's writable-layer filesystem when split from the image
    /// filesystem (`runtime.containerFs`).
    pub fn container_fs(&self) -> Option<&FsStats> {
        self.runtime.as_ref()?.container_fs.as_ref()
    }
}

impl PodStats {
    /// The working set of the pod cgroup (`memory.workingSetBytes`).
    pub fn memory_working_set_bytes(&self) -> Option<u64> {
        self.memory.as_ref()?.working_set_bytes
    }

    /// The processes in the pod cgroup (`process_stats.process_count`).
    pub fn process_count(&self) -> Option<u64> {
        self.process_stats.as_ref()?.process_count
    }
}

impl ContainerStats {
    /// The container's working set (`memory.workingSetBytes`).
    pub fn memory_working_set_bytes(&self) -> Option<u64> {
        self.memory.as_ref()?.working_set_bytes
    }
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

    #[test]
    fn rlimit_runtime_and_system_containers_use_upstream_names() {
        let t =
            from_system_time(SystemTime::UNIX_EPOCH + std::time::Duration::new(1_500_000_000, 250))
                .expect("time");
        let node = NodeStats {
            node_name: "n".into(),
            system_containers: vec![ContainerStats {
                name: SYSTEM_CONTAINER_PODS.into(),
                memory: Some(MemoryStats {
                    time: Some(t.clone()),
                    available_bytes: Some(1),
                    ..MemoryStats::default()
                }),
                ..ContainerStats::default()
            }],
            runtime: Some(RuntimeStats {
                image_fs: Some(FsStats {
                    inodes_free: Some(3),
                    ..FsStats::default()
                }),
                container_fs: None,
            }),
            rlimit: Some(RlimitStats {
                time: Some(t.clone()),
                max_pid: Some(100),
                num_of_running_processes: Some(7),
            }),
            ..NodeStats::default()
        };
        let v = serde_json::to_value(&node).expect("json");
        assert_eq!(v["rlimit"]["maxpid"], 100);
        assert_eq!(v["rlimit"]["curproc"], 7);
        // RFC 3339 in whole seconds, as Go's metav1.Time marshals.
        assert_eq!(v["rlimit"]["time"], "2017-07-14T02:40:00Z");
        assert_eq!(v["systemContainers"][0]["name"], "pods");
        assert_eq!(v["systemContainers"][0]["memory"]["availableBytes"], 1);
        assert_eq!(v["runtime"]["imageFs"]["inodesFree"], 3);
        assert!(v["runtime"].get("containerFs").is_none());
        assert_eq!(
            node.system_container(SYSTEM_CONTAINER_PODS)
                .and_then(|c| c.memory_working_set_bytes()),
            None
        );
        assert!(node.system_container(SYSTEM_CONTAINER_KUBELET).is_none());
        assert_eq!(node.image_fs().and_then(|f| f.inodes_free), Some(3));
        assert!(node.container_fs().is_none());
    }

    #[test]
    fn timestamps_keep_nanoseconds_in_memory_and_order() {
        let base = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
        let a = from_system_time(base).expect("a");
        let b = from_system_time(base + std::time::Duration::from_nanos(1)).expect("b");
        assert!(b > a, "a nanosecond later is fresher");
        assert!(
            from_system_time(SystemTime::UNIX_EPOCH - std::time::Duration::from_secs(1)).is_none()
        );
        assert!(now() > a);
    }

    #[test]
    fn pod_accessors_read_the_nested_fields() {
        let p = PodStats {
            memory: Some(MemoryStats {
                working_set_bytes: Some(42),
                ..MemoryStats::default()
            }),
            process_stats: Some(ProcessStats {
                process_count: Some(3),
            }),
            ..PodStats::default()
        };
        assert_eq!(p.memory_working_set_bytes(), Some(42));
        assert_eq!(p.process_count(), Some(3));
        assert_eq!(PodStats::default().memory_working_set_bytes(), None);
    }

    struct Fixed(Summary);

    #[async_trait]
    impl SummaryProvider for Fixed {
        async fn get(&self, _update_stats: bool) -> Result<Summary, Error> {
            Ok(self.0.clone())
        }
    }

    #[tokio::test]
    async fn cpu_and_memory_stats_by_default_trim_get() {
        let p = Fixed(Summary {
            node: NodeStats {
                fs: Some(FsStats::default()),
                cpu: Some(CpuStats::default()),
                ..NodeStats::default()
            },
            pods: vec![],
        });
        let s = p.get_cpu_and_memory_stats().await.expect("stats");
        assert!(s.node.fs.is_none());
        assert!(s.node.cpu.is_some());
        assert!(p.get(true).await.expect("stats").node.fs.is_some());
    }
}
