//! The container manager of a kubelet: QoS classes and cgroups, node
//! allocatable, CPU, memory and topology managers.
//!
//! Mirrors upstream `pkg/kubelet/cm` (and the pieces of
//! `pkg/kubelet/kuberuntime/kuberuntime_container_linux.go`,
//! `pkg/kubelet/qos` and `pkg/apis/core/v1/helper/qos` it needs). Its central
//! trait is [`ContainerManager`]; [`NodeContainerManager`] implements it on
//! Linux cgroups v1 (hybrid hosts count as v1) and v2.
//!
//! - Pure computations, usable on their own (another crate's `kuberuntime`
//!   calls them): [`pod_qos_class`], [`container_oom_score_adj`],
//!   [`pod_resource_config`], [`container_linux_resources`],
//!   [`pod_cgroup_name`], [`CgroupName`] with cgroupfs and systemd forms, and
//!   an exact [`quantity`] parser.
//! - [`cgroup`]: the [`CgroupDriver`] and [`CgroupManager`] traits and
//!   [`FsCgroupManager`], which creates `kubepods`, the QoS and the pod
//!   cgroups without adding processes; every I/O error names its file.
//! - [`machine`] and [`node`]: capacity from a sysfs/procfs root, node
//!   allocatable and its enforcement on `kubepods`.
//! - [`cpumanager`], [`memorymanager`], [`topologymanager`]: the static CPU
//!   and memory policies with checksummed [`checkpoint`]s, and NUMA admission.
//!
//! # Example
//!
//! ```no_run
//! use kubelet_cm::{
//!     ContainerManager, ContainerManagerConfig, ContainerResources, MachineInfo,
//!     NodeContainerManager,
//! };
//!
//! # fn demo(pod: &k8s_openapi::api::core::v1::Pod) -> kubelet_cm::Result<()> {
//! let cm = NodeContainerManager::new(ContainerManagerConfig::default(), MachineInfo::host()?)?;
//! cm.start()?; // kubepods, kubepods/burstable, kubepods/besteffort
//! cm.admit(pod)?; // topology, CPU and memory managers
//! cm.ensure_pod_cgroup(pod)?; // kubepods/<qos>/pod<uid>
//! let report = cm.explain(pod);
//! println!("{report}");
//! let spec = pod.spec.as_ref().expect("pods have a spec");
//! let lcr = cm.container_resources(pod, &spec.containers[0]);
//! println!("{} {}", report.cgroup_parent, lcr.memory_limit_in_bytes);
//! # Ok(())
//! # }
//! ```

pub mod cgroup;
pub mod cgroup_name;
pub mod checkpoint;
pub mod cpumanager;
pub mod cpuset;
pub mod error;
pub mod machine;
pub mod manager;
pub mod memorymanager;
pub mod node;
use kubelet_container::podres;
pub mod resources;
pub mod topologymanager;

pub use cgroup::{
    CgroupDriver, CgroupFile, CgroupManager, CgroupVersion, Cgroupfs, FsCgroupManager, Systemd,
    cgroup_files, detect_cgroup_version,
};
pub use cgroup_name::{CgroupDriverKind, CgroupName};
pub use cpumanager::{CpuManager, CpuPolicy, ReservedCpus};
pub use cpuset::CpuSet;
pub use error::{Error, Result};
pub use kubelet_container::ContainerResources;
pub use kubelet_container::qos::{
    self as qos, QosClass, compute_pod_qos, container_oom_score_adj, pod_qos_class,
};
pub use kubelet_container::quantity;
pub use machine::{CpuInfo, CpuTopology, MachineInfo, NumaNode, ResourceList};
pub use manager::{
    ContainerExplanation, ContainerManager, ContainerManagerConfig, NodeContainerManager,
    PodExplanation, ProcessKiller, qos_cgroup_configs,
};
pub use memorymanager::{MemoryManager, MemoryPolicy};
pub use node::NodeAllocatableConfig;
pub use resources::{
    ContainerResourceOptions, ResourceConfig, StaticResources, container_linux_resources,
    container_linux_resources_with_hugepage_sizes, milli_cpu_to_quota, milli_cpu_to_shares,
    pod_cgroup_name, pod_resource_config, qos_cgroup_name, validate_pod_resources,
};
pub use topologymanager::{HintProvider, TopologyHint, TopologyManager, TopologyPolicy};

#[cfg(test)]
mod contract_tests;
#[cfg(test)]
mod manager_tests;
#[cfg(test)]
mod testutil;
