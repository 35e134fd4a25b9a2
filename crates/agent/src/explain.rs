//! `kubelet explain`: everything this kubelet will do with a pod, computed
//! without running it.
//!
//! It answers the question every Kubernetes user asks — "how is my memory
//! limit actually enforced?" — for any manifest and this node's
//! configuration: the QoS class, the pod cgroup under both drivers, the CRI
//! `LinuxContainerResources` per container, the `oom_score_adj` the kernel
//! will hold, every cgroup file with the value that will be written (the pod
//! cgroup by this kubelet, each container's cgroup by the runtime), the CPUs
//! the CPU manager would assign, and how the pod ranks for eviction under
//! memory pressure.
//!
//! Nothing here touches the node: the container manager is built without a
//! state directory and never started, so admission's CPU and memory
//! assignments are made against an empty node (no other pod holds exclusive
//! CPUs). Upstream has no such command; its answers are spread over
//! `pkg/kubelet/cm/helpers_linux.go` (`ResourceConfigForPod`),
//! `pkg/kubelet/kuberuntime/kuberuntime_container_linux.go`
//! (`generateLinuxContainerResources`), `pkg/kubelet/qos/policy.go`
//! (`GetContainerOOMScoreAdjust`) and `pkg/kubelet/eviction/helpers.go`
//! (`rankMemoryPressure`). Each value here comes from the same function the
//! running kubelet calls, so the prediction cannot drift from the behaviour.

use std::fmt;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::Pod;
use kubelet_cm::{
    CgroupDriverKind, CgroupName, CgroupVersion, ContainerManager, MachineInfo,
    NodeContainerManager, ResourceConfig, cgroup_files,
};
use kubelet_podconfig::ManifestOrigin;
use serde::Serialize;

use crate::config::KubeletConfiguration;

/// Why a pod cannot be explained.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExplainError {
    /// The manifest is not a valid static pod.
    #[error("{0}")]
    Manifest(#[from] kubelet_podconfig::Error),
    /// The manifest could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The manifest.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The configuration cannot build a container manager.
    #[error("configuration: {0}")]
    Config(String),
}

/// The host facts an explanation depends on.
#[derive(Debug, Clone)]
pub struct Host {
    /// CPUs, memory and huge pages (the `oom_score_adj` of a burstable
    /// container depends on the memory capacity).
    pub machine: MachineInfo,
    /// The cgroup version of `cgroup_mount_root`.
    pub cgroup_version: CgroupVersion,
    /// Where cgroups are mounted (`/sys/fs/cgroup`).
    pub cgroup_mount_root: PathBuf,
}

impl Host {
    /// This machine, read from `/sys` and `/proc`.
    pub fn current() -> Result<Self, ExplainError> {
        let machine = MachineInfo::host().map_err(|e| ExplainError::Config(e.to_string()))?;
        let root = PathBuf::from("/sys/fs/cgroup");
        Ok(Self {
            machine,
            cgroup_version: kubelet_cm::detect_cgroup_version(&root),
            cgroup_mount_root: root,
        })
    }
}

/// One cgroup file and the value that will be written to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PlannedFile {
    /// The full path of the file.
    pub path: PathBuf,
    /// The value written.
    pub value: String,
}

/// The pod's cgroup.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PodCgroupPlan {
    /// With the cgroupfs driver (`/kubepods/burstable/pod<uid>`).
    pub cgroupfs: String,
    /// With the systemd driver (`/kubepods.slice/...-pod<uid>.slice`).
    pub systemd: String,
    /// The configured driver's form: the sandbox's CRI `cgroup_parent`.
    pub cgroup_parent: String,
    /// Files this kubelet writes, with their values.
    pub files: Vec<PlannedFile>,
}

/// The CRI `LinuxContainerResources` of one container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CriResources {
    /// `cpu_shares`.
    pub cpu_shares: i64,
    /// `cpu_quota` (0: none).
    pub cpu_quota: i64,
    /// `cpu_period` (0: none).
    pub cpu_period: i64,
    /// `memory_limit_in_bytes` (0: none).
    pub memory_limit_in_bytes: i64,
    /// `oom_score_adj` as asked.
    pub oom_score_adj: i64,
    /// `cpuset_cpus` (empty: the shared pool).
    pub cpuset_cpus: String,
    /// `cpuset_mems`.
    pub cpuset_mems: String,
}

/// One container.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerPlan {
    /// Its name.
    pub name: String,
    /// An init container (sidecars included).
    pub init: bool,
    /// What the CRI gets.
    pub resources: CriResources,
    /// The `oom_score_adj` the kernel will hold: a runtime without
    /// `CAP_SYS_RESOURCE` cannot go below its own.
    pub effective_oom_score_adj: i64,
    /// Exclusive CPUs from the static CPU manager.
    pub exclusive_cpus: Option<String>,
    /// NUMA nodes from the static memory manager.
    pub memory_nodes: Option<String>,
    /// The container's own cgroup: the pod cgroup plus the ID the runtime
    /// assigns at creation (containerd with cgroupfs: `<parent>/<id>`).
    pub cgroup: String,
    /// Files the runtime writes there, with their values (`<id>` stands for
    /// the container ID).
    pub files: Vec<PlannedFile>,
}

/// How the pod ranks when the node runs short of memory.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EvictionPlan {
    /// The pod's memory request in bytes (sum over containers).
    pub memory_request_bytes: i64,
    /// The pod's priority.
    pub priority: i32,
    /// Upstream's order, spelled out for this pod.
    pub rule: String,
}

/// Everything the kubelet will do with one pod.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Explanation {
    /// `namespace/name` as the kubelet names the static pod.
    pub pod: String,
    /// The pod's UID (a static pod's is a hash of its manifest and node).
    pub uid: String,
    /// `Guaranteed`, `Burstable` or `BestEffort`.
    pub qos_class: String,
    /// `cgroupfs` or `systemd`.
    pub cgroup_driver: String,
    /// `v1` or `v2`.
    pub cgroup_version: String,
    /// The pod cgroup.
    pub pod_cgroup: PodCgroupPlan,
    /// Init containers first, then app containers.
    pub containers: Vec<ContainerPlan>,
    /// Admission by the topology, CPU and memory managers: `None` when it
    /// would pass, the reason otherwise.
    pub admission_error: Option<String>,
    /// Eviction under memory pressure.
    pub eviction: EvictionPlan,
    /// The node's allocatable (what `kubepods` is sized from).
    pub node_allocatable: std::collections::BTreeMap<String, i64>,
}

/// Explains the manifest at `path` for `config` on `host`, naming the pod for
/// `node_name` as the file source does.
pub fn explain_manifest(
    config: &KubeletConfiguration,
    path: &Path,
    node_name: &str,
    host: &Host,
) -> Result<Explanation, ExplainError> {
    let data = std::fs::read(path).map_err(|source| ExplainError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let origin = ManifestOrigin::file(path);
    let pod = kubelet_podconfig::decode_static_pod(&data, &origin, node_name)?;
    explain(config, &pod, host)
}

/// Explains `pod` (already defaulted, with a UID) for `config` on `host`.
pub fn explain(
    config: &KubeletConfiguration,
    pod: &Pod,
    host: &Host,
) -> Result<Explanation, ExplainError> {
    let mut cm_config = config
        .container_manager_config(Path::new("/nonexistent"))
        .map_err(|e| ExplainError::Config(e.to_string()))?;
    // Read-only: no checkpoint is loaded or written.
    cm_config.state_dir = None;
    cm_config.cgroup_mount_root = host.cgroup_mount_root.clone();
    let driver = cm_config.cgroup_driver;
    let cm = NodeContainerManager::new(cm_config, host.machine.clone())
        .map_err(|e| ExplainError::Config(e.to_string()))?;
    let admission_error = cm.admit(pod).err().map(|e| e.to_string());
    let report = cm.explain(pod);

    let version = host.cgroup_version;
    let file_path = |controller: &str, literal: &str, file: &str| {
        let rel = literal.trim_start_matches('/');
        match version {
            CgroupVersion::V1 => host.cgroup_mount_root.join(controller).join(rel).join(file),
            CgroupVersion::V2 => host.cgroup_mount_root.join(rel).join(file),
        }
    };
    let planned = |literal: &str, cfg: &ResourceConfig| {
        cgroup_files(version, cfg)
            .into_iter()
            .map(|f| PlannedFile {
                path: file_path(f.controller, literal, &f.file),
                value: f.value,
            })
            .collect::<Vec<_>>()
    };
    let pod_literal = driver.name(&report.pod_cgroup);
    let containers = report
        .containers
        .iter()
        .map(|c| {
            let r = &c.resources;
            let cgroup = container_cgroup(driver, &report.pod_cgroup);
            let mut files = planned(&cgroup, &ResourceConfig::from_linux_resources(r));
            if !r.cpuset_cpus.is_empty() {
                files.push(PlannedFile {
                    path: file_path("cpuset", &cgroup, "cpuset.cpus"),
                    value: r.cpuset_cpus.clone(),
                });
            }
            ContainerPlan {
                name: c.name.clone(),
                init: c.init,
                resources: CriResources {
                    cpu_shares: r.cpu_shares,
                    cpu_quota: r.cpu_quota,
                    cpu_period: r.cpu_period,
                    memory_limit_in_bytes: r.memory_limit_in_bytes,
                    oom_score_adj: r.oom_score_adj,
                    cpuset_cpus: r.cpuset_cpus.clone(),
                    cpuset_mems: r.cpuset_mems.clone(),
                },
                effective_oom_score_adj: c.effective_oom_score_adj,
                exclusive_cpus: c.exclusive_cpus.as_ref().map(ToString::to_string),
                memory_nodes: c.memory_nodes.clone(),
                cgroup,
                files,
            }
        })
        .collect();

    let request = kubelet_eviction::rank::pod_request(pod, "memory");
    let priority = kubelet_eviction::rank::pod_priority(pod);
    let rule = if request == 0 {
        format!(
            "no memory request: as soon as it uses any memory it is among the first pods evicted \
             (pods over their requests go first, then by priority {priority}, lowest first, then \
             by usage above request, largest first)"
        )
    } else {
        format!(
            "within its request of {request} bytes it is evicted only after every pod that is \
             over its request; over it, it ranks with them by priority {priority} (lowest \
             first), then by how far its working set exceeds {request} bytes (largest first)"
        )
    };
    Ok(Explanation {
        pod: format!(
            "{}/{}",
            pod.metadata.namespace.as_deref().unwrap_or("default"),
            pod.metadata.name.as_deref().unwrap_or_default()
        ),
        uid: pod.metadata.uid.clone().unwrap_or_default(),
        qos_class: report.qos_class.to_string(),
        cgroup_driver: driver.as_str().to_owned(),
        cgroup_version: match version {
            CgroupVersion::V1 => "v1".to_owned(),
            CgroupVersion::V2 => "v2".to_owned(),
        },
        pod_cgroup: PodCgroupPlan {
            cgroupfs: report.pod_cgroup.to_cgroupfs(),
            systemd: report.pod_cgroup.to_systemd(),
            files: planned(&pod_literal, &report.pod_cgroup_config),
            cgroup_parent: report.cgroup_parent.clone(),
        },
        containers,
        admission_error,
        eviction: EvictionPlan {
            memory_request_bytes: request,
            priority,
            rule,
        },
        node_allocatable: report.node_allocatable.into_iter().collect(),
    })
}

/// The container's cgroup as containerd names it under the pod cgroup:
/// `<parent>/<id>` with cgroupfs, `<parent slice>/cri-containerd-<id>.scope`
/// with systemd (containerd's `cri-containerd` prefix).
fn container_cgroup(driver: CgroupDriverKind, pod: &CgroupName) -> String {
    match driver {
        CgroupDriverKind::Cgroupfs => format!("{}/<id>", pod.to_cgroupfs()),
        CgroupDriverKind::Systemd => format!("{}/cri-containerd-<id>.scope", pod.to_systemd()),
    }
}

fn bytes(v: i64) -> String {
    const MI: i64 = 1 << 20;
    if v > 0 && v % MI == 0 {
        format!("{v} ({} MiB)", v / MI)
    } else {
        v.to_string()
    }
}

impl fmt::Display for Explanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "Pod {} (uid {})", self.pod, self.uid)?;
        writeln!(f, "QoS class: {}", self.qos_class)?;
        if let Some(e) = &self.admission_error {
            writeln!(f, "Admission: REJECTED: {e}")?;
        } else {
            writeln!(f, "Admission: accepted")?;
        }
        writeln!(
            f,
            "Pod cgroup ({} driver, cgroup {}): {}",
            self.cgroup_driver, self.cgroup_version, self.pod_cgroup.cgroup_parent
        )?;
        writeln!(f, "  cgroupfs form: {}", self.pod_cgroup.cgroupfs)?;
        writeln!(f, "  systemd form:  {}", self.pod_cgroup.systemd)?;
        writeln!(f, "  written by the kubelet:")?;
        for file in &self.pod_cgroup.files {
            writeln!(f, "    {} = {}", file.path.display(), file.value)?;
        }
        for c in &self.containers {
            let r = &c.resources;
            writeln!(
                f,
                "{} {}:",
                if c.init {
                    "Init container"
                } else {
                    "Container"
                },
                c.name
            )?;
            writeln!(
                f,
                "  CRI LinuxContainerResources: cpu_shares={} cpu_quota={} cpu_period={} memory_limit_in_bytes={} oom_score_adj={} cpuset_cpus={:?} cpuset_mems={:?}",
                r.cpu_shares,
                r.cpu_quota,
                r.cpu_period,
                r.memory_limit_in_bytes,
                r.oom_score_adj,
                r.cpuset_cpus,
                r.cpuset_mems
            )?;
            writeln!(
                f,
                "  oom_score_adj held by the kernel: {}",
                c.effective_oom_score_adj
            )?;
            if let Some(cpus) = &c.exclusive_cpus {
                writeln!(f, "  exclusive CPUs (static CPU manager): {cpus}")?;
            }
            if let Some(nodes) = &c.memory_nodes {
                writeln!(f, "  NUMA nodes (static memory manager): {nodes}")?;
            }
            writeln!(f, "  cgroup: {} (written by the runtime)", c.cgroup)?;
            for file in &c.files {
                writeln!(f, "    {} = {}", file.path.display(), file.value)?;
            }
            if r.memory_limit_in_bytes > 0 {
                writeln!(
                    f,
                    "  memory limit: the kernel's memory cgroup caps the container at {}; past it, \
                     reclaim fails and the OOM killer kills a process inside the container \
                     (exit code 137, reason OOMKilled), and the kubelet restarts it with backoff",
                    bytes(r.memory_limit_in_bytes)
                )?;
            } else {
                writeln!(
                    f,
                    "  memory limit: none of its own; bounded by the pod and QoS cgroups and \
                     node allocatable, then by eviction"
                )?;
            }
        }
        writeln!(
            f,
            "Eviction under memory pressure: request {}, priority {}: {}",
            bytes(self.eviction.memory_request_bytes),
            self.eviction.priority,
            self.eviction.rule
        )?;
        write!(f, "Node allocatable: ")?;
        let mut first = true;
        for (k, v) in &self.node_allocatable {
            if !first {
                write!(f, ", ")?;
            }
            first = false;
            if k == "cpu" {
                write!(f, "{k}={v}m")?;
            } else {
                write!(f, "{k}={v}")?;
            }
        }
        writeln!(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kubelet_cm::CpuTopology;

    const SEED_004: &str = "apiVersion: v1\nkind: Pod\nmetadata: {name: frontend}\nspec:\n  containers:\n  - name: app\n    image: busybox\n    resources:\n      requests: {memory: 10Mi, cpu: 250m}\n      limits: {memory: 64Mi, cpu: 500m}\n";

    fn host(version: CgroupVersion) -> Host {
        Host {
            machine: MachineInfo::synthetic(CpuTopology::synthetic(1, 2, 2, 1), 4 << 30),
            cgroup_version: version,
            cgroup_mount_root: PathBuf::from("/sys/fs/cgroup"),
        }
    }

    fn pod(yaml: &str) -> Pod {
        let origin = ManifestOrigin::file(Path::new("/etc/kubernetes/manifests/p.yaml"));
        kubelet_podconfig::decode_static_pod(yaml.as_bytes(), &origin, "node-a").unwrap()
    }

    fn values(files: &[PlannedFile]) -> Vec<String> {
        files
            .iter()
            .map(|f| format!("{}={}", f.path.display(), f.value))
            .collect()
    }

    #[test]
    fn seed_004_on_cgroup_v1() {
        let pod = pod(SEED_004);
        let uid = pod.metadata.uid.clone().unwrap();
        let e = explain(
            &KubeletConfiguration::default(),
            &pod,
            &host(CgroupVersion::V1),
        )
        .unwrap();
        assert_eq!(e.qos_class, "Burstable");
        assert_eq!(e.pod, "default/frontend-node-a");
        assert_eq!(
            e.pod_cgroup.cgroupfs,
            format!("/kubepods/burstable/pod{uid}")
        );
        assert_eq!(
            e.pod_cgroup.systemd,
            format!(
                "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice",
                uid.replace('-', "_")
            )
        );
        let app = &e.containers[0];
        assert_eq!(app.resources.cpu_shares, 256);
        assert_eq!(app.resources.cpu_quota, 50_000);
        assert_eq!(app.resources.cpu_period, 100_000);
        assert_eq!(app.resources.memory_limit_in_bytes, 64 << 20);
        // 1000 - 1000 * 10Mi / 4Gi, rounded down as upstream.
        assert_eq!(app.resources.oom_score_adj, 998);
        let dir = format!("/kubepods/burstable/pod{uid}/<id>");
        assert_eq!(
            values(&app.files),
            [
                format!("/sys/fs/cgroup/cpu{dir}/cpu.shares=256"),
                format!("/sys/fs/cgroup/cpu{dir}/cpu.cfs_period_us=100000"),
                format!("/sys/fs/cgroup/cpu{dir}/cpu.cfs_quota_us=50000"),
                format!("/sys/fs/cgroup/memory{dir}/memory.limit_in_bytes=67108864"),
            ]
        );
        assert!(values(&e.pod_cgroup.files).contains(&format!(
            "/sys/fs/cgroup/cpu/kubepods/burstable/pod{uid}/cpu.shares=256"
        )));
        assert_eq!(e.eviction.memory_request_bytes, 10 << 20);
        assert!(e.admission_error.is_none());
        let text = e.to_string();
        assert!(text.contains("memory.limit_in_bytes = 67108864"), "{text}");
        let json = serde_json::to_value(&e).unwrap();
        assert_eq!(json["containers"][0]["resources"]["cpuShares"], 256);
    }

    #[test]
    fn cgroup_v2_and_the_systemd_driver() {
        let config = KubeletConfiguration {
            cgroup_driver: "systemd".into(),
            ..Default::default()
        };
        let e = explain(&config, &pod(SEED_004), &host(CgroupVersion::V2)).unwrap();
        assert_eq!(e.cgroup_driver, "systemd");
        let app = &e.containers[0];
        assert!(
            app.cgroup.ends_with("/cri-containerd-<id>.scope"),
            "{}",
            app.cgroup
        );
        let files = values(&app.files);
        assert!(
            files.iter().any(|f| f.ends_with("/cpu.weight=10")),
            "{files:?}"
        );
        assert!(files.iter().any(|f| f.ends_with("/cpu.max=50000 100000")));
        assert!(files.iter().any(|f| f.ends_with("/memory.max=67108864")));
        assert!(
            files
                .iter()
                .all(|f| f.starts_with("/sys/fs/cgroup/kubepods.slice/"))
        );
    }

    #[test]
    fn static_cpu_manager_assigns_exclusive_cpus_to_a_guaranteed_pod() {
        let config = KubeletConfiguration {
            cpu_manager_policy: "static".into(),
            reserved_system_cpus: "0".into(),
            ..Default::default()
        };
        let yaml = "apiVersion: v1\nkind: Pod\nmetadata: {name: g}\nspec:\n  containers:\n  - name: app\n    image: busybox\n    resources:\n      limits: {memory: 64Mi, cpu: 2}\n";
        let e = explain(&config, &pod(yaml), &host(CgroupVersion::V1)).unwrap();
        assert_eq!(e.qos_class, "Guaranteed");
        let app = &e.containers[0];
        let cpus = app.exclusive_cpus.as_deref().unwrap();
        assert!(
            !cpus.contains('0'),
            "reserved CPU 0 is never exclusive: {cpus}"
        );
        assert_eq!(kubelet_cm::CpuSet::parse(cpus).unwrap().len(), 2);
        assert_eq!(app.resources.cpuset_cpus, cpus);
        assert_eq!(app.resources.oom_score_adj, -997);
        assert!(
            values(&app.files)
                .iter()
                .any(|f| f.ends_with(&format!("cpuset.cpus={cpus}")))
        );
    }

    #[test]
    fn too_many_exclusive_cpus_is_an_admission_error_not_a_failure() {
        let config = KubeletConfiguration {
            cpu_manager_policy: "static".into(),
            reserved_system_cpus: "0".into(),
            ..Default::default()
        };
        let yaml = "apiVersion: v1\nkind: Pod\nmetadata: {name: g}\nspec:\n  containers:\n  - name: app\n    image: busybox\n    resources:\n      limits: {memory: 64Mi, cpu: 64}\n";
        let e = explain(&config, &pod(yaml), &host(CgroupVersion::V1)).unwrap();
        assert!(e.admission_error.is_some());
        assert!(e.to_string().contains("REJECTED"));
    }
}
