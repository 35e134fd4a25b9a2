//! `KubeletConfiguration` (`kubelet.config.k8s.io/v1beta1`): the config
//! file, upstream's defaults, command-line overrides and validation.
//!
//! Mirrors upstream `pkg/kubelet/apis/config/v1beta1/defaults.go`,
//! `pkg/kubelet/apis/config/validation/validation.go` and the precedence
//! of `cmd/kubelet/app/server.go`: defaults < file < flags. Invalid
//! configuration is refused at start with the field and the reason; unknown
//! fields are reported and ignored, as upstream's lenient decoding does.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The API version of the file.
pub const API_VERSION: &str = "kubelet.config.k8s.io/v1beta1";
/// The kind of the file.
pub const KIND: &str = "KubeletConfiguration";

/// A configuration error: the field and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration: {field}: {reason}")]
pub struct ConfigError {
    /// The field, as spelled in the file (`cgroupDriver`).
    pub field: String,
    /// What is wrong.
    pub reason: String,
}

fn invalid(field: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError {
        field: field.into(),
        reason: reason.into(),
    }
}

/// The fields of upstream's `KubeletConfiguration` this kubelet uses.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct KubeletConfiguration {
    /// `kubelet.config.k8s.io/v1beta1`.
    pub api_version: String,
    /// `KubeletConfiguration`.
    pub kind: String,
    /// The static pod directory or file (`--pod-manifest-path`).
    pub static_pod_path: Option<PathBuf>,
    /// The CRI endpoint (`--container-runtime-endpoint`).
    pub container_runtime_endpoint: String,
    /// `cgroupfs` or `systemd` (`--cgroup-driver`).
    pub cgroup_driver: String,
    /// QoS-level cgroups (`--cgroups-per-qos`).
    #[serde(rename = "cgroupsPerQOS")]
    pub cgroups_per_qos: bool,
    /// The root cgroup for pods (`--cgroup-root`).
    pub cgroup_root: String,
    /// Image GC starts above this share of the image filesystem
    /// (`imageGCHighThresholdPercent`, 85; 100 disables it).
    #[serde(rename = "imageGCHighThresholdPercent")]
    pub image_gc_high_threshold_percent: u32,
    /// Image GC frees down to this share (`imageGCLowThresholdPercent`, 80).
    #[serde(rename = "imageGCLowThresholdPercent")]
    pub image_gc_low_threshold_percent: u32,
    /// Images younger than this are kept (`imageMinimumGCAge`, `2m`).
    #[serde(rename = "imageMinimumGCAge")]
    pub image_minimum_gc_age: String,
    /// A container log is rotated past this size (`containerLogMaxSize`, `10Mi`).
    pub container_log_max_size: String,
    /// Log files kept per container, the live one included
    /// (`containerLogMaxFiles`, 5).
    pub container_log_max_files: usize,
    /// Whether the node API server runs (`--enable-server`).
    pub enable_server: bool,
    /// The node API's address (`--address`). Upstream's default is
    /// `0.0.0.0`; ours is loopback, because the server has no
    /// authentication yet.
    pub address: std::net::IpAddr,
    /// The node API's port (`--port`, 10250).
    pub port: u16,
    /// The cluster's DNS domain (`--cluster-domain`), for pods' managed
    /// `/etc/hosts`. Upstream's default is empty; ours is `cluster.local`.
    pub cluster_domain: String,
    /// Resources reserved for Kubernetes daemons (`--kube-reserved`).
    pub kube_reserved: BTreeMap<String, String>,
    /// Resources reserved for the system (`--system-reserved`).
    pub system_reserved: BTreeMap<String, String>,
    /// Hard eviction thresholds (`--eviction-hard`).
    pub eviction_hard: BTreeMap<String, String>,
    /// `none` or `static` (`--cpu-manager-policy`).
    pub cpu_manager_policy: String,
    /// How often the CPU manager pushes cpusets to running containers
    /// (`--cpu-manager-reconcile-period`, a Go duration, `10s`; zero means
    /// the default, as upstream defaults it to the node status period).
    pub cpu_manager_reconcile_period: String,
    /// CPUs reserved for the system (`--reserved-cpus`).
    #[serde(rename = "reservedSystemCPUs")]
    pub reserved_system_cpus: String,
    /// `None` or `Static` (`--memory-manager-policy`).
    pub memory_manager_policy: String,
    /// `none`, `best-effort`, `restricted`, `single-numa-node`
    /// (`--topology-manager-policy`).
    pub topology_manager_policy: String,
    /// The most pods this node runs (`--max-pods`).
    pub max_pods: i64,
    /// Where pod logs go.
    pub pod_logs_dir: PathBuf,
    /// Other fields of upstream's file, which this kubelet ignores.
    #[serde(flatten, skip_serializing)]
    pub unknown: BTreeMap<String, serde_json::Value>,
}

impl Default for KubeletConfiguration {
    /// Upstream's defaults (`defaults.go`).
    fn default() -> Self {
        Self {
            api_version: API_VERSION.into(),
            kind: KIND.into(),
            static_pod_path: None,
            container_runtime_endpoint: "unix:///run/containerd/containerd.sock".into(),
            cgroup_driver: "cgroupfs".into(),
            cgroups_per_qos: true,
            cgroup_root: "/".into(),
            kube_reserved: BTreeMap::new(),
            system_reserved: BTreeMap::new(),
            eviction_hard: BTreeMap::from([
                ("memory.available".into(), "100Mi".into()),
                ("nodefs.available".into(), "10%".into()),
                ("nodefs.inodesFree".into(), "5%".into()),
                ("imagefs.available".into(), "15%".into()),
            ]),
            cpu_manager_policy: "none".into(),
            cpu_manager_reconcile_period: "10s".into(),
            reserved_system_cpus: String::new(),
            memory_manager_policy: "None".into(),
            topology_manager_policy: "none".into(),
            max_pods: 110,
            pod_logs_dir: PathBuf::from("/var/log/pods"),
            cluster_domain: "cluster.local".into(),
            image_gc_high_threshold_percent: 85,
            image_gc_low_threshold_percent: 80,
            image_minimum_gc_age: "2m".into(),
            container_log_max_size: "10Mi".into(),
            container_log_max_files: 5,
            enable_server: true,
            address: std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
            port: 10250,
            unknown: BTreeMap::new(),
        }
    }
}

/// Command-line flags with upstream's names; `None` where not given.
#[derive(Debug, Clone, Default)]
pub struct Flags {
    /// `--pod-manifest-path`.
    pub pod_manifest_path: Option<PathBuf>,
    /// `--container-runtime-endpoint`.
    pub container_runtime_endpoint: Option<String>,
    /// `--cgroup-driver`.
    pub cgroup_driver: Option<String>,
    /// `--cgroups-per-qos`.
    pub cgroups_per_qos: Option<bool>,
    /// `--cgroup-root`.
    pub cgroup_root: Option<String>,
    /// `--kube-reserved` (`cpu=100m,memory=100Mi`).
    pub kube_reserved: Option<String>,
    /// `--system-reserved`.
    pub system_reserved: Option<String>,
    /// `--eviction-hard` (`memory.available<100Mi,...`).
    pub eviction_hard: Option<String>,
    /// `--cpu-manager-policy`.
    pub cpu_manager_policy: Option<String>,
    /// `--cpu-manager-reconcile-period` (`10s`).
    pub cpu_manager_reconcile_period: Option<String>,
    /// `--reserved-cpus`.
    pub reserved_cpus: Option<String>,
    /// `--memory-manager-policy`.
    pub memory_manager_policy: Option<String>,
    /// `--topology-manager-policy`.
    pub topology_manager_policy: Option<String>,
    /// `--max-pods`.
    pub max_pods: Option<i64>,
    /// `--enable-server`.
    pub enable_server: Option<bool>,
    /// `--address`.
    pub address: Option<std::net::IpAddr>,
    /// `--port`.
    pub port: Option<u16>,
}

fn parse_map(field: &str, text: &str, sep: char) -> Result<BTreeMap<String, String>, ConfigError> {
    let mut map = BTreeMap::new();
    for pair in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((k, v)) = pair.split_once(sep) else {
            return Err(invalid(field, format!("{pair:?} is not key{sep}value")));
        };
        map.insert(k.trim().to_owned(), v.trim().to_owned());
    }
    Ok(map)
}

impl KubeletConfiguration {
    /// Reads a config file: YAML or JSON with upstream's field names.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| invalid("--config", format!("{}: {e}", path.display())))?;
        Self::from_yaml(&text)
    }

    /// Parses a config document.
    pub fn from_yaml(text: &str) -> Result<Self, ConfigError> {
        let config: Self =
            serde_yaml::from_str(text).map_err(|e| invalid("--config", e.to_string()))?;
        for field in config.unknown.keys() {
            tracing::warn!(field, "unknown KubeletConfiguration field ignored");
        }
        Ok(config)
    }

    /// Applies command-line flags over the file's values (flags win).
    pub fn apply_flags(&mut self, flags: &Flags) -> Result<(), ConfigError> {
        if let Some(v) = &flags.pod_manifest_path {
            self.static_pod_path = Some(v.clone());
        }
        if let Some(v) = &flags.container_runtime_endpoint {
            self.container_runtime_endpoint = v.clone();
        }
        if let Some(v) = &flags.cgroup_driver {
            self.cgroup_driver = v.clone();
        }
        if let Some(v) = flags.cgroups_per_qos {
            self.cgroups_per_qos = v;
        }
        if let Some(v) = &flags.cgroup_root {
            self.cgroup_root = v.clone();
        }
        if let Some(v) = &flags.kube_reserved {
            self.kube_reserved = parse_map("kubeReserved", v, '=')?;
        }
        if let Some(v) = &flags.system_reserved {
            self.system_reserved = parse_map("systemReserved", v, '=')?;
        }
        if let Some(v) = &flags.eviction_hard {
            self.eviction_hard = parse_map("evictionHard", v, '<')?;
        }
        if let Some(v) = &flags.cpu_manager_policy {
            self.cpu_manager_policy = v.clone();
        }
        if let Some(v) = &flags.cpu_manager_reconcile_period {
            self.cpu_manager_reconcile_period = v.clone();
        }
        if let Some(v) = &flags.reserved_cpus {
            self.reserved_system_cpus = v.clone();
        }
        if let Some(v) = &flags.memory_manager_policy {
            self.memory_manager_policy = v.clone();
        }
        if let Some(v) = &flags.topology_manager_policy {
            self.topology_manager_policy = v.clone();
        }
        if let Some(v) = flags.max_pods {
            self.max_pods = v;
        }
        if let Some(v) = flags.enable_server {
            self.enable_server = v;
        }
        if let Some(v) = flags.address {
            self.address = v;
        }
        if let Some(v) = flags.port {
            self.port = v;
        }
        Ok(())
    }

    /// The eviction thresholds of `evictionHard`, parsed once for both the
    /// eviction manager and node allocatable (upstream
    /// `eviction.ParseThresholdConfig` with `enforceNodeAllocatable: [pods]`,
    /// which adds `allocatableMemory.available`).
    pub fn eviction_thresholds(
        &self,
    ) -> Result<Vec<kubelet_container::threshold::Threshold>, ConfigError> {
        kubelet_container::threshold::ThresholdConfig {
            hard: self.eviction_hard.clone(),
            enforce_node_allocatable: vec![
                kubelet_container::threshold::NODE_ALLOCATABLE_ENFORCEMENT_KEY.into(),
            ],
            ..Default::default()
        }
        .parse()
        .map_err(|e| invalid("evictionHard", e.to_string()))
    }

    /// Upstream's validation: the first invalid field and why.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.api_version != API_VERSION {
            return Err(invalid(
                "apiVersion",
                format!("must be {API_VERSION:?}, not {:?}", self.api_version),
            ));
        }
        if self.kind != KIND {
            return Err(invalid(
                "kind",
                format!("must be {KIND:?}, not {:?}", self.kind),
            ));
        }
        if !self.container_runtime_endpoint.starts_with("unix://") {
            return Err(invalid(
                "containerRuntimeEndpoint",
                "must be a unix socket (unix:///path)",
            ));
        }
        if !["cgroupfs", "systemd"].contains(&self.cgroup_driver.as_str()) {
            return Err(invalid("cgroupDriver", "must be cgroupfs or systemd"));
        }
        if !self.cgroup_root.starts_with('/') {
            return Err(invalid("cgroupRoot", "must be an absolute cgroup path"));
        }
        if !["none", "static"].contains(&self.cpu_manager_policy.as_str()) {
            return Err(invalid("cpuManagerPolicy", "must be none or static"));
        }
        if !["None", "Static"].contains(&self.memory_manager_policy.as_str()) {
            return Err(invalid("memoryManagerPolicy", "must be None or Static"));
        }
        if !["none", "best-effort", "restricted", "single-numa-node"]
            .contains(&self.topology_manager_policy.as_str())
        {
            return Err(invalid(
                "topologyManagerPolicy",
                "must be none, best-effort, restricted or single-numa-node",
            ));
        }
        if self.max_pods <= 0 {
            return Err(invalid("maxPods", "must be greater than 0"));
        }
        for (field, map) in [
            ("kubeReserved", &self.kube_reserved),
            ("systemReserved", &self.system_reserved),
        ] {
            for (k, v) in map {
                let parsed = if k == "cpu" {
                    kubelet_cm::quantity::milli_value(v).map(drop)
                } else {
                    kubelet_cm::quantity::value(v).map(drop)
                };
                if !["cpu", "memory", "ephemeral-storage", "pid"].contains(&k.as_str()) {
                    return Err(invalid(field, format!("unknown resource {k:?}")));
                }
                parsed.map_err(|e| invalid(field, format!("{k}={v}: {e}")))?;
            }
        }
        self.eviction_thresholds()?;
        if self.cpu_manager_policy == "static"
            && self.reserved_system_cpus.is_empty()
            && !self.kube_reserved.contains_key("cpu")
            && !self.system_reserved.contains_key("cpu")
        {
            return Err(invalid(
                "cpuManagerPolicy",
                "the static policy needs reserved CPUs (reservedSystemCPUs, or cpu in kubeReserved/systemReserved)",
            ));
        }
        Ok(())
    }
}

impl KubeletConfiguration {
    /// The container manager's configuration (upstream
    /// `NodeConfig`, built in `cmd/kubelet/app/server.go`).
    pub fn container_manager_config(
        &self,
        state_dir: &Path,
    ) -> Result<kubelet_cm::manager::ContainerManagerConfig, ConfigError> {
        use kubelet_cm::{CgroupDriverKind, CgroupName, CpuPolicy, ReservedCpus};
        let list = |field: &str, map: &BTreeMap<String, String>| {
            let mut out = kubelet_cm::ResourceList::new();
            for (k, v) in map {
                let n = if k == "cpu" {
                    kubelet_cm::quantity::milli_value(v)
                } else {
                    kubelet_cm::quantity::value(v)
                }
                .map_err(|e| invalid(field, format!("{k}={v}: {e}")))?;
                out.insert(k.clone(), n);
            }
            Ok::<_, ConfigError>(out)
        };
        let kube_reserved = list("kubeReserved", &self.kube_reserved)?;
        let system_reserved = list("systemReserved", &self.system_reserved)?;
        let thresholds = self.eviction_thresholds()?;
        let cpu_policy = match self.cpu_manager_policy.as_str() {
            "static" if !self.reserved_system_cpus.is_empty() => CpuPolicy::Static {
                reserved: ReservedCpus::List(
                    kubelet_cm::CpuSet::parse(&self.reserved_system_cpus)
                        .map_err(|e| invalid("reservedSystemCPUs", e.to_string()))?,
                ),
            },
            "static" => {
                let milli = kube_reserved.get("cpu").copied().unwrap_or(0)
                    + system_reserved.get("cpu").copied().unwrap_or(0);
                CpuPolicy::Static {
                    reserved: ReservedCpus::Count(
                        usize::try_from((milli + 999) / 1000).unwrap_or(0),
                    ),
                }
            }
            _ => CpuPolicy::None,
        };
        if self.memory_manager_policy == "Static" {
            return Err(invalid(
                "memoryManagerPolicy",
                "Static needs reservedMemory, which this kubelet does not read yet",
            ));
        }
        let topology_policy = kubelet_cm::TopologyPolicy::parse(&self.topology_manager_policy)
            .map_err(|e| invalid("topologyManagerPolicy", e.to_string()))?;
        Ok(kubelet_cm::manager::ContainerManagerConfig {
            cgroup_root: CgroupName::from_cgroupfs(&self.cgroup_root),
            cgroup_driver: if self.cgroup_driver == "systemd" {
                CgroupDriverKind::Systemd
            } else {
                CgroupDriverKind::Cgroupfs
            },
            cgroups_per_qos: self.cgroups_per_qos,
            node_allocatable: kubelet_cm::NodeAllocatableConfig {
                kube_reserved,
                system_reserved,
                hard_eviction_thresholds: thresholds,
                ..Default::default()
            },
            cpu_policy,
            topology_policy,
            state_dir: Some(state_dir.to_path_buf()),
            ..Default::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_values_win_over_defaults_and_flags_win_over_the_file() {
        let mut c = KubeletConfiguration::from_yaml(
            "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\nmaxPods: 20\ncgroupDriver: cgroupfs\nstaticPodPath: /etc/manifests\nfeatureGates: {X: true}\n",
        )
        .expect("parse");
        assert_eq!(c.max_pods, 20);
        assert!(c.cgroups_per_qos, "default kept");
        assert!(c.unknown.contains_key("featureGates"));
        c.apply_flags(&Flags {
            max_pods: Some(5),
            eviction_hard: Some("memory.available<200Mi".into()),
            ..Default::default()
        })
        .expect("flags");
        assert_eq!(c.max_pods, 5);
        assert_eq!(
            c.static_pod_path.as_deref(),
            Some(Path::new("/etc/manifests"))
        );
        assert_eq!(
            c.eviction_hard.get("memory.available").map(String::as_str),
            Some("200Mi")
        );
        c.validate().expect("valid");
    }

    #[test]
    fn invalid_fields_are_named() {
        let cases = [
            ("cgroupDriver: docker", "cgroupDriver"),
            ("maxPods: 0", "maxPods"),
            ("cpuManagerPolicy: dynamic", "cpuManagerPolicy"),
            ("kubeReserved: {memory: lots}", "kubeReserved"),
            ("evictionHard: {memory.free: 1Gi}", "evictionHard"),
            (
                "containerRuntimeEndpoint: tcp://x:1",
                "containerRuntimeEndpoint",
            ),
            ("kind: Pod", "kind"),
            ("cpuManagerPolicy: static", "cpuManagerPolicy"),
        ];
        for (yaml, field) in cases {
            let err = KubeletConfiguration::from_yaml(yaml)
                .and_then(|c| c.validate())
                .expect_err(yaml);
            assert_eq!(err.field, field, "{yaml}: {err}");
        }
        let err = KubeletConfiguration::from_yaml("maxPods: [1]").expect_err("type");
        assert_eq!(err.field, "--config");
    }

    #[test]
    fn the_container_manager_gets_the_node_settings() {
        let mut c = KubeletConfiguration::default();
        c.apply_flags(&Flags {
            kube_reserved: Some("cpu=500m,memory=100Mi".into()),
            system_reserved: Some("cpu=600m".into()),
            cpu_manager_policy: Some("static".into()),
            cgroup_root: Some("/custom".into()),
            ..Default::default()
        })
        .expect("flags");
        c.validate().expect("valid");
        let cm = c
            .container_manager_config(Path::new("/tmp/state"))
            .expect("cm config");
        assert_eq!(cm.cgroup_root.to_cgroupfs(), "/custom");
        assert_eq!(cm.node_allocatable.kube_reserved.get("cpu"), Some(&500));
        assert_eq!(
            cm.node_allocatable.kube_reserved.get("memory"),
            Some(&(100 << 20))
        );
        // 500m + 600m rounds up to 2 reserved CPUs, as upstream.
        assert_eq!(
            cm.cpu_policy,
            kubelet_cm::CpuPolicy::Static {
                reserved: kubelet_cm::ReservedCpus::Count(2)
            }
        );
        // The four of evictionHard, plus allocatableMemory.available that
        // enforceNodeAllocatable=pods derives from memory.available: the
        // same parsed list the eviction manager gets.
        let signals: Vec<String> = cm
            .node_allocatable
            .hard_eviction_thresholds
            .iter()
            .map(|t| t.signal.to_string())
            .collect();
        assert_eq!(signals.len(), 5, "{signals:?}");
        assert!(signals.contains(&"allocatableMemory.available".to_owned()));
        c.memory_manager_policy = "Static".into();
        let err = c
            .container_manager_config(Path::new("/tmp"))
            .expect_err("no reservedMemory");
        assert_eq!(err.field, "memoryManagerPolicy");
    }
}
