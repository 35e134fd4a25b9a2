//! The kubelet's settings that shape its Node object (upstream `Kubelet`
//! fields set from `KubeletConfiguration` and flags: `nodeName`,
//! `hostname`, `nodeIPs`, `nodeLabels`, `registerWithTaints`,
//! `registerSchedulable`, `nodeStatusMaxImages`,
//! `nodeStatusUpdateFrequency`, `nodeStatusReportFrequency`, ...).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use k8s_openapi::api::core::v1::Taint;

/// What the kubelet was told about the Node it registers and keeps current.
///
/// [`NodeConfig::new`] fills upstream's defaults; every field is public so a
/// caller sets what its flags say.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeConfig {
    /// The Node's name (upstream `kl.nodeName`: `--hostname-override` or
    /// the host name, lower-cased).
    pub node_name: String,
    /// The value of the `kubernetes.io/hostname` label and of the `Hostname`
    /// address (upstream `kl.hostname`). [`NodeConfig::new`] sets it to the
    /// node name.
    pub hostname: String,
    /// `--node-ip`: at most one address per family, the first is the
    /// primary. Empty means "detect" (the `host_ips` of the
    /// [`NodeSnapshot`](crate::NodeSnapshot)); an unspecified address
    /// (`0.0.0.0` or `::`) also means "detect", preferring its family, as
    /// upstream.
    pub node_ips: Vec<IpAddr>,
    /// `--node-labels`: set at registration, overriding the default labels
    /// of the same key (upstream logs and overrides too).
    pub node_labels: BTreeMap<String, String>,
    /// `--register-with-taints`.
    pub register_with_taints: Vec<Taint>,
    /// `--register-schedulable` (deprecated upstream, default true); false
    /// registers the Node with `spec.unschedulable` and the
    /// `node.kubernetes.io/unschedulable:NoSchedule` taint.
    pub register_schedulable: bool,
    /// `--register-node` (default true): create the Node if it does not
    /// exist. When false the Node must be created by someone else and only
    /// its status is kept current.
    pub register_node: bool,
    /// `--enable-controller-attach-detach` (default true): the Node carries
    /// `volumes.kubernetes.io/controller-managed-attach-detach: "true"`.
    pub enable_controller_attach_detach: bool,
    /// `spec.providerID` (`--provider-id`), if any.
    pub provider_id: Option<String>,
    /// `nodeStatusMaxImages` (default 50); -1 reports every image.
    pub node_status_max_images: i32,
    /// `nodeStatusUpdateFrequency` (default 10 s): how often the status is
    /// computed and compared with the API server's; less than a second is
    /// taken as a second.
    pub node_status_update_frequency: Duration,
    /// `nodeStatusReportFrequency` (default 5 min): how often the status is
    /// patched even when nothing changed.
    pub node_status_report_frequency: Duration,
    /// `nodeInfo.kubeletVersion` (upstream `version.Get().String()`).
    pub kubelet_version: String,
    /// The `kubernetes.io/os` label and `nodeInfo.operatingSystem`, in Go's
    /// names (upstream `runtime.GOOS`); defaults to this build's target.
    pub os: String,
    /// The `kubernetes.io/arch` label and `nodeInfo.architecture`, in Go's
    /// names (upstream `runtime.GOARCH`: `amd64`, `arm64`, ...); defaults to
    /// this build's target.
    pub arch: String,
    /// `localStorageCapacityIsolation` (default true): the Node is not Ready
    /// without an `ephemeral-storage` capacity.
    pub local_storage_capacity_isolation: bool,
    /// Register the Node again when a status update finds it deleted
    /// (default true). Upstream keeps `registrationCompleted` forever and
    /// never re-registers (kubernetes#71398); re-registering was proposed in
    /// kubernetes#123535. Set false to keep upstream's behaviour.
    pub reregister_on_not_found: bool,
}

impl NodeConfig {
    /// The settings of a kubelet that registers `node_name` with upstream's
    /// defaults.
    pub fn new(node_name: impl Into<String>) -> Self {
        let node_name = node_name.into();
        NodeConfig {
            hostname: node_name.clone(),
            node_name,
            node_ips: Vec::new(),
            node_labels: BTreeMap::new(),
            register_with_taints: Vec::new(),
            register_schedulable: true,
            register_node: true,
            enable_controller_attach_detach: true,
            provider_id: None,
            node_status_max_images: 50,
            node_status_update_frequency: Duration::from_secs(10),
            node_status_report_frequency: Duration::from_secs(5 * 60),
            kubelet_version: format!("v{}.0", kubelet_container::KUBE_VERSION),
            os: go_os(std::env::consts::OS).to_owned(),
            arch: go_arch(std::env::consts::ARCH).to_owned(),
            local_storage_capacity_isolation: true,
            reregister_on_not_found: true,
        }
    }
}

/// Go's name (`GOOS`) of a Rust target OS (`std::env::consts::OS`).
pub fn go_os(rust_os: &str) -> &str {
    match rust_os {
        "macos" => "darwin",
        other => other,
    }
}

/// Go's name (`GOARCH`) of a Rust target architecture
/// (`std::env::consts::ARCH`): `x86_64` is `amd64`, `aarch64` is `arm64`.
pub fn go_arch(rust_arch: &str) -> &str {
    match rust_arch {
        "x86_64" => "amd64",
        "x86" => "386",
        "aarch64" => "arm64",
        "powerpc64" if cfg!(target_endian = "little") => "ppc64le",
        "powerpc64" => "ppc64",
        "loongarch64" => "loong64",
        "mips64" if cfg!(target_endian = "little") => "mips64le",
        "mips" if cfg!(target_endian = "little") => "mipsle",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_upstreams() {
        let c = NodeConfig::new("n1");
        assert_eq!(c.hostname, "n1");
        assert_eq!(c.node_status_max_images, 50);
        assert_eq!(c.node_status_update_frequency, Duration::from_secs(10));
        assert_eq!(c.node_status_report_frequency, Duration::from_secs(300));
        assert!(c.register_node && c.register_schedulable);
        assert!(c.kubelet_version.starts_with("v1."));
    }

    #[test]
    fn go_names() {
        assert_eq!(go_arch("x86_64"), "amd64");
        assert_eq!(go_arch("aarch64"), "arm64");
        assert_eq!(go_arch("s390x"), "s390x");
        assert_eq!(go_os("linux"), "linux");
    }
}
