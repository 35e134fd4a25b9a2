//! The container manager of a kubelet: QoS classes and cgroups, node
//! allocatable, CPU and memory managers.
//!
//! Mirrors upstream `pkg/kubelet/cm`.
//!
//! The container manager computes each pod's QoS class, builds the `kubepods`
//! cgroup tree, turns requests and limits into the CRI's
//! `LinuxContainerResources`, and reserves node allocatable.
//!
//! - [`qos`]: [`QosClass`], [`pod_qos_class`], [`container_oom_score_adj`].
//! - [`cgroup_name`]: [`CgroupName`] with cgroupfs and systemd forms.
//! - [`resources`]: [`pod_resource_config`], [`container_linux_resources`],
//!   [`pod_cgroup_name`].
//! - [`quantity`]: an exact parser of Kubernetes quantities.
//!
//! # Example
//!
//! ```no_run
//! use kubelet_cm::{CgroupName, ContainerResourceOptions, container_linux_resources, pod_cgroup_name, pod_qos_class};
//! # fn demo(pod: &k8s_openapi::api::core::v1::Pod) {
//! let class = pod_qos_class(pod);
//! let cgroup = pod_cgroup_name(&CgroupName::root(), pod);
//! let opts = ContainerResourceOptions { memory_capacity_bytes: 8 << 30, ..Default::default() };
//! let spec = pod.spec.as_ref().unwrap();
//! let lcr = container_linux_resources(pod, &spec.containers[0], &opts);
//! println!("{class} {} {}", cgroup.to_cgroupfs(), lcr.memory_limit_in_bytes);
//! # }
//! ```

pub mod cgroup_name;
pub mod error;
mod podres;
pub mod qos;
pub mod quantity;
pub mod resources;

#[cfg(test)]
mod testutil;

pub use cgroup_name::{CgroupDriverKind, CgroupName};
pub use error::{Error, Result};
pub use qos::{QosClass, compute_pod_qos, container_oom_score_adj, pod_qos_class};
pub use resources::{
    ContainerResourceOptions, ResourceConfig, container_linux_resources,
    container_linux_resources_with_hugepage_sizes, milli_cpu_to_quota, milli_cpu_to_shares,
    pod_cgroup_name, pod_resource_config, qos_cgroup_name, validate_pod_resources,
};

#[cfg(test)]
mod contract_tests;
