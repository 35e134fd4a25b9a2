//! `KubeletConfiguration` (`kubelet.config.k8s.io/v1beta1`): the config
//! file, upstream's defaults, command-line overrides and validation.
//!
//! Mirrors upstream `pkg/kubelet/apis/config/v1beta1/defaults.go`,
//! `pkg/kubelet/apis/config/validation/validation.go` and the precedence
//! of `cmd/kubelet/app/server.go`: defaults < file < flags.
//!
//! The configuration never lies: every field this kubelet accepts changes
//! what it does, and every other upstream field (from
//! `staging/src/k8s.io/kubelet/config/v1beta1/types.go`) is in
//! [`UNIMPLEMENTED_FIELDS`], either ignored because that is harmless (the
//! table says why; [`KubeletConfiguration::check_for_start`] logs them in one
//! line) or refused because a user relying on it would be misled (an error
//! naming the field and why). A field that upstream does not have at all is
//! an error naming it.
//!
//! On unknown fields this deliberately takes upstream's strict path only.
//! Upstream `pkg/kubelet/kubeletconfig/util/codec/codec.go`
//! (`DecodeKubeletConfiguration`) decodes strictly first and, for
//! `v1beta1`, on a strict-decoding error (unknown or duplicate field) falls
//! back to lenient decoding with an info log, a fallback its comment says
//! "is to be dropped when support for v1beta1 is dropped". This kubelet has
//! no old files to stay compatible with, and a silently ignored typo
//! (`maxPod: 5`) is the lie this module exists to prevent; so unknown and
//! duplicate fields are errors.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

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
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
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
    /// The node API's address (`--address`). Unset: `0.0.0.0` (upstream's
    /// default) when the node API authenticates its requests, loopback
    /// when it serves anonymous requests with `AlwaysAllow` (see
    /// [`KubeletConfiguration::node_api_security`]).
    pub address: Option<std::net::IpAddr>,
    /// The node API's serving certificate (`tlsCertFile`,
    /// `--tls-cert-file`); empty: a self-signed pair in `--cert-dir`.
    pub tls_cert_file: String,
    /// Its key (`tlsPrivateKeyFile`, `--tls-private-key-file`).
    pub tls_private_key_file: String,
    /// The lowest TLS version (`tlsMinVersion`: `VersionTLS12`, the
    /// default, or `VersionTLS13`).
    pub tls_min_version: String,
    /// TLS 1.2 cipher suites by their Go names (`tlsCipherSuites`); empty:
    /// rustls's defaults (all AEAD).
    pub tls_cipher_suites: Vec<String>,
    /// How node API requests are authenticated (`authentication`).
    pub authentication: KubeletAuthentication,
    /// How node API requests are authorized (`authorization`).
    pub authorization: KubeletAuthorization,
    /// The node API's port (`--port`, 10250).
    pub port: u16,
    /// The cluster's DNS domain (`--cluster-domain`), for pods' managed
    /// `/etc/hosts` and the DNS search path of cluster-first pods
    /// (`<ns>.svc.<domain> svc.<domain> <domain>`). Upstream's default is
    /// empty; ours is `cluster.local`.
    pub cluster_domain: String,
    /// The cluster DNS servers' IP addresses (`--cluster-dns`): the
    /// nameservers of `dnsPolicy: ClusterFirst` pods. Empty (the default):
    /// such pods fall back to `Default` (the host's resolver file), with a
    /// `MissingClusterDNS` warning event, as upstream.
    #[serde(rename = "clusterDNS")]
    pub cluster_dns: Vec<String>,
    /// The host's resolver file (`--resolv-conf`, `/etc/resolv.conf`): the
    /// DNS of `dnsPolicy: Default` pods and the search path cluster-first
    /// pods inherit. Empty: none (such pods get a local nameserver and the
    /// search path `.`).
    pub resolv_conf: String,
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
    /// Where pod logs go (`podLogsDir`).
    pub pod_logs_dir: PathBuf,
    /// The most processes in one pod (`podPidsLimit`; -1: unlimited): the
    /// pod cgroup's `pids.max`.
    pub pod_pids_limit: i64,
    /// Pods from this URL (`staticPodURL`, `--manifest-url`): upstream's
    /// HTTP pod source, polled every 20 s. Empty: none.
    #[serde(rename = "staticPodURL")]
    pub static_pod_url: String,
    /// Register this node with the API server (`registerNode`, true). Only
    /// read in cluster mode (with `--kubeconfig`).
    pub register_node: bool,
    /// The taints the node registers with (`registerWithTaints`).
    pub register_with_taints: Vec<k8s_openapi::api::core::v1::Taint>,
    /// How often the node status is computed and, when changed, posted
    /// (`nodeStatusUpdateFrequency`, `10s`).
    pub node_status_update_frequency: String,
    /// How often an unchanged node status is still posted
    /// (`nodeStatusReportFrequency`, `5m`).
    pub node_status_report_frequency: String,
    /// The node lease's duration (`nodeLeaseDurationSeconds`, 40); it is
    /// renewed every quarter of it.
    pub node_lease_duration_seconds: i32,
    /// The most images listed in the node status (`nodeStatusMaxImages`,
    /// 50; -1: all).
    pub node_status_max_images: i32,
    /// API requests per second to the API server (`kubeAPIQPS`, 50).
    #[serde(rename = "kubeAPIQPS")]
    pub kube_api_qps: i32,
    /// API request burst (`kubeAPIBurst`, 100).
    #[serde(rename = "kubeAPIBurst")]
    pub kube_api_burst: i32,
    /// How often `staticPodURL` is polled (`httpCheckFrequency`, `20s`).
    pub http_check_frequency: String,
    /// Headers sent with every `staticPodURL` request
    /// (`staticPodURLHeader`).
    #[serde(rename = "staticPodURLHeader")]
    pub static_pod_url_header: BTreeMap<String, Vec<String>>,
    /// The node's provider ID (`providerID`), set on the Node it registers.
    #[serde(rename = "providerID")]
    pub provider_id: String,
    /// Events written to the API server per second (`eventRecordQPS`, 50;
    /// cluster mode).
    #[serde(rename = "eventRecordQPS")]
    pub event_record_qps: i32,
    /// Event write burst (`eventBurst`, 100).
    pub event_burst: i32,
    /// How a running pod is synced again when nothing happened to it
    /// (`syncFrequency`, `1m`): the pod workers' resync period, which is
    /// also how soon a changed Secret or ConfigMap reaches its volumes.
    pub sync_frequency: String,
    /// How the kubelet keeps the Secrets and ConfigMaps of its pods
    /// (`configMapAndSecretChangeDetectionStrategy`): `Watch` (default),
    /// `Cache` or `Get` (cluster mode).
    pub config_map_and_secret_change_detection_strategy: String,
    /// Upstream fields of the file that this kubelet ignores as harmless
    /// (see [`UNIMPLEMENTED_FIELDS`]), in name order.
    #[serde(skip)]
    pub ignored: Vec<&'static str>,
}

/// `authentication` (upstream `KubeletAuthentication`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct KubeletAuthentication {
    /// Client certificates.
    pub x509: KubeletX509Authentication,
    /// Bearer tokens reviewed by the API server.
    pub webhook: KubeletWebhookAuthentication,
    /// Requests without credentials.
    pub anonymous: KubeletAnonymousAuthentication,
}

/// `authentication.x509`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct KubeletX509Authentication {
    /// The CA bundle client certificates are verified against
    /// (`clientCAFile`, `--client-ca-file`); empty: none are accepted.
    #[serde(rename = "clientCAFile")]
    pub client_ca_file: String,
}

/// `authentication.webhook`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct KubeletWebhookAuthentication {
    /// Review bearer tokens with the TokenReview API (`enabled`). Unset:
    /// on in cluster mode (upstream's config file default), off without
    /// an API server.
    pub enabled: Option<bool>,
    /// How long a review is kept (`cacheTTL`, `2m`).
    #[serde(rename = "cacheTTL")]
    pub cache_ttl: String,
}

/// `authentication.anonymous`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct KubeletAnonymousAuthentication {
    /// Serve requests without credentials as `system:anonymous`
    /// (`enabled`). Unset: off in cluster mode (upstream's config file
    /// default), on without an API server (upstream's flag default; such a
    /// node API stays on loopback).
    pub enabled: Option<bool>,
}

/// `authorization` (upstream `KubeletAuthorization`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct KubeletAuthorization {
    /// `AlwaysAllow` or `Webhook` (SubjectAccessReview). Empty: `Webhook`
    /// in cluster mode (upstream's config file default), `AlwaysAllow`
    /// without an API server.
    pub mode: String,
    /// The webhook's caches.
    pub webhook: KubeletWebhookAuthorization,
}

/// `authorization.webhook`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct KubeletWebhookAuthorization {
    /// How long an allowed decision is kept (`cacheAuthorizedTTL`, `5m`).
    #[serde(rename = "cacheAuthorizedTTL")]
    pub cache_authorized_ttl: String,
    /// How long a denied decision is kept (`cacheUnauthorizedTTL`, `30s`).
    #[serde(rename = "cacheUnauthorizedTTL")]
    pub cache_unauthorized_ttl: String,
}

/// How the node API is to be secured, from `authentication`,
/// `authorization`, the `tls*` fields and whether there is an API server
/// ([`KubeletConfiguration::node_api_security`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeApiSecurity {
    /// Serve TLS and check every request; `false`: plain HTTP on loopback
    /// (anonymous requests, `AlwaysAllow`, nothing else configured).
    pub secure: bool,
    /// The address to bind.
    pub address: std::net::IpAddr,
    /// `tlsCertFile` and `tlsPrivateKeyFile`; `None`: self-signed.
    pub cert_and_key: Option<(PathBuf, PathBuf)>,
    /// `authentication.x509.clientCAFile`.
    pub client_ca_file: Option<PathBuf>,
    /// Bearer tokens through TokenReview, with this cache TTL.
    pub token_webhook: Option<std::time::Duration>,
    /// Anonymous requests accepted.
    pub anonymous: bool,
    /// SubjectAccessReview with these authorized and unauthorized cache
    /// TTLs; `None`: `AlwaysAllow`.
    pub authorization_webhook: Option<(std::time::Duration, std::time::Duration)>,
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
            cluster_dns: Vec::new(),
            resolv_conf: "/etc/resolv.conf".into(),
            image_gc_high_threshold_percent: 85,
            image_gc_low_threshold_percent: 80,
            image_minimum_gc_age: "2m".into(),
            container_log_max_size: "10Mi".into(),
            container_log_max_files: 5,
            enable_server: true,
            address: None,
            tls_cert_file: String::new(),
            tls_private_key_file: String::new(),
            tls_min_version: String::new(),
            tls_cipher_suites: Vec::new(),
            authentication: KubeletAuthentication::default(),
            authorization: KubeletAuthorization::default(),
            port: 10250,
            pod_pids_limit: -1,
            static_pod_url: String::new(),
            register_node: true,
            register_with_taints: Vec::new(),
            node_status_update_frequency: "10s".into(),
            node_status_report_frequency: "5m".into(),
            node_lease_duration_seconds: 40,
            node_status_max_images: 50,
            kube_api_qps: 50,
            kube_api_burst: 100,
            http_check_frequency: "20s".into(),
            static_pod_url_header: BTreeMap::new(),
            provider_id: String::new(),
            event_record_qps: 50,
            event_burst: 100,
            sync_frequency: "1m".into(),
            config_map_and_secret_change_detection_strategy: "Watch".into(),
            ignored: Vec::new(),
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
    /// `--tls-cert-file`.
    pub tls_cert_file: Option<String>,
    /// `--tls-private-key-file`.
    pub tls_private_key_file: Option<String>,
    /// `--client-ca-file`.
    pub client_ca_file: Option<String>,
    /// `--anonymous-auth`.
    pub anonymous_auth: Option<bool>,
    /// `--authentication-token-webhook`.
    pub authentication_token_webhook: Option<bool>,
    /// `--authorization-mode` (`AlwaysAllow` or `Webhook`).
    pub authorization_mode: Option<String>,
    /// `--manifest-url`.
    pub manifest_url: Option<String>,
    /// `--register-node`.
    pub register_node: Option<bool>,
    /// `--register-with-taints` (`key=value:Effect,key:Effect`).
    pub register_with_taints: Option<String>,
    /// `--cluster-dns` (`10.96.0.10,fd00::a`).
    pub cluster_dns: Option<Vec<String>>,
    /// `--cluster-domain`.
    pub cluster_domain: Option<String>,
    /// `--resolv-conf` (`""` for none).
    pub resolv_conf: Option<String>,
}

/// Taints as `--register-with-taints` spells them (upstream
/// `pkg/util/taints.ParseTaints`): `key=value:Effect` or `key:Effect`,
/// comma separated, effect one of `NoSchedule`, `PreferNoSchedule`,
/// `NoExecute`.
pub fn parse_taints(text: &str) -> Result<Vec<k8s_openapi::api::core::v1::Taint>, ConfigError> {
    let field = "registerWithTaints";
    let mut taints = Vec::new();
    for spec in text.split(',').map(str::trim).filter(|t| !t.is_empty()) {
        let Some((kv, effect)) = spec.rsplit_once(':') else {
            return Err(invalid(field, format!("{spec:?}: want key=value:Effect")));
        };
        if !["NoSchedule", "PreferNoSchedule", "NoExecute"].contains(&effect) {
            return Err(invalid(
                field,
                format!(
                    "{spec:?}: effect {effect:?} is not NoSchedule, PreferNoSchedule or NoExecute"
                ),
            ));
        }
        let (key, value) = match kv.split_once('=') {
            Some((k, v)) => (k, Some(v.to_owned())),
            None => (kv, None),
        };
        if key.is_empty() {
            return Err(invalid(field, format!("{spec:?}: the key is empty")));
        }
        taints.push(k8s_openapi::api::core::v1::Taint {
            key: key.to_owned(),
            value,
            effect: effect.to_owned(),
            time_added: None,
        });
    }
    Ok(taints)
}

/// Node labels as `--node-labels` spells them (`key=value,key=value`).
/// Upstream (`cmd/kubelet/app/options`) also refuses labels in the
/// `kubernetes.io`/`k8s.io` namespaces that a kubelet may not set
/// (`kubeletapis.IsKubeletLabel`); this does the same for the common
/// case: such a label must be one of upstream's allowed ones or under
/// `node.kubernetes.io/` or `kubelet.kubernetes.io/`.
pub fn parse_node_labels(text: &str) -> Result<BTreeMap<String, String>, ConfigError> {
    let labels = parse_map("--node-labels", text, '=')?;
    for key in labels.keys() {
        let (prefix, _) = key.split_once('/').unwrap_or(("", key));
        let restricted = prefix == "kubernetes.io"
            || prefix.ends_with(".kubernetes.io")
            || prefix == "k8s.io"
            || prefix.ends_with(".k8s.io");
        let allowed = prefix == "kubelet.kubernetes.io"
            || prefix.ends_with(".kubelet.kubernetes.io")
            || prefix == "node.kubernetes.io"
            || prefix.ends_with(".node.kubernetes.io")
            || KUBELET_LABELS.contains(&key.as_str());
        if restricted && !allowed {
            return Err(invalid(
                "--node-labels",
                format!(
                    "{key:?}: a kubelet may not set labels in the kubernetes.io or k8s.io namespaces but node.kubernetes.io/, kubelet.kubernetes.io/ and the well-known node labels"
                ),
            ));
        }
    }
    Ok(labels)
}

/// The labels in restricted namespaces a kubelet may set (upstream
/// `pkg/kubelet/apis/well_known_labels.go` `kubeletLabels`).
const KUBELET_LABELS: &[&str] = &[
    "kubernetes.io/hostname",
    "topology.kubernetes.io/zone",
    "topology.kubernetes.io/region",
    "failure-domain.beta.kubernetes.io/zone",
    "failure-domain.beta.kubernetes.io/region",
    "beta.kubernetes.io/instance-type",
    "node.kubernetes.io/instance-type",
    "beta.kubernetes.io/os",
    "beta.kubernetes.io/arch",
    "kubernetes.io/os",
    "kubernetes.io/arch",
];

fn positive_duration(field: &str, text: &str) -> Result<std::time::Duration, ConfigError> {
    kubelet_container::duration::parse_go_duration(text).map_err(|e| invalid(field, e.to_string()))
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
    /// Errors that are not about one field name the file.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| invalid("--config", format!("{}: {e}", path.display())))?;
        Self::from_yaml(&text).map_err(|e| {
            if e.field == "--config" {
                invalid("--config", format!("{}: {}", path.display(), e.reason))
            } else {
                e
            }
        })
    }

    /// Parses a config document: one YAML (or JSON) mapping. Known fields
    /// are read; each other key is looked up in [`UNIMPLEMENTED_FIELDS`]
    /// (ignored fields are recorded in [`Self::ignored`], refused ones are
    /// an error); a key upstream does not have is an error. A `null` value
    /// is an unset field, as upstream reads it.
    pub fn from_yaml(text: &str) -> Result<Self, ConfigError> {
        let value: serde_json::Value = serde_saphyr::from_str_with_options(text, yaml_options())
            .map_err(|e| invalid("--config", e.to_string()))?;
        let map = match value {
            serde_json::Value::Object(map) => map,
            serde_json::Value::Null => serde_json::Map::new(),
            other => {
                return Err(invalid(
                    "--config",
                    format!("a KubeletConfiguration is a mapping, not {other}"),
                ));
            }
        };
        let mut known = serde_json::Map::new();
        let mut ignored = Vec::new();
        for (key, value) in map {
            if value.is_null() {
                continue;
            }
            if KNOWN_FIELDS.contains(&key.as_str()) {
                known.insert(key, value);
                continue;
            }
            let Some(field) = UNIMPLEMENTED_FIELDS.iter().find(|f| f.name == key) else {
                return Err(invalid(
                    &key,
                    "unknown field: not a KubeletConfiguration (kubelet.config.k8s.io/v1beta1) field",
                ));
            };
            match field.verdict {
                Verdict::Ignore(_) => ignored.push(field.name),
                Verdict::Refuse(why) => return Err(invalid(field.name, why)),
                Verdict::IgnoreIf {
                    harmless, refused, ..
                } => {
                    if harmless(&value) {
                        ignored.push(field.name);
                    } else {
                        return Err(invalid(field.name, refused));
                    }
                }
            }
        }
        let mut config: Self =
            match serde_json::from_value(serde_json::Value::Object(known.clone())) {
                Ok(c) => c,
                Err(e) => {
                    // Name the field whose value does not fit.
                    for (key, value) in known {
                        let one = serde_json::Value::Object(serde_json::Map::from_iter([(
                            key.clone(),
                            value,
                        )]));
                        if let Err(e) = serde_json::from_value::<Self>(one) {
                            return Err(invalid(&key, e.to_string()));
                        }
                    }
                    return Err(invalid("--config", e.to_string()));
                }
            };
        config.ignored = ignored;
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
            self.address = Some(v);
        }
        if let Some(v) = &flags.tls_cert_file {
            self.tls_cert_file = v.clone();
        }
        if let Some(v) = &flags.tls_private_key_file {
            self.tls_private_key_file = v.clone();
        }
        if let Some(v) = &flags.client_ca_file {
            self.authentication.x509.client_ca_file = v.clone();
        }
        if let Some(v) = flags.anonymous_auth {
            self.authentication.anonymous.enabled = Some(v);
        }
        if let Some(v) = flags.authentication_token_webhook {
            self.authentication.webhook.enabled = Some(v);
        }
        if let Some(v) = &flags.authorization_mode {
            self.authorization.mode = v.clone();
        }
        if let Some(v) = flags.port {
            self.port = v;
        }
        if let Some(v) = &flags.manifest_url {
            self.static_pod_url = v.clone();
        }
        if let Some(v) = flags.register_node {
            self.register_node = v;
        }
        if let Some(v) = &flags.register_with_taints {
            self.register_with_taints = parse_taints(v)?;
        }
        if let Some(v) = &flags.cluster_dns {
            // `--cluster-dns=""` is no servers, as upstream's string slice.
            self.cluster_dns = v
                .iter()
                .map(|ip| ip.trim())
                .filter(|ip| !ip.is_empty())
                .map(str::to_owned)
                .collect();
        }
        if let Some(v) = &flags.cluster_domain {
            self.cluster_domain = v.clone();
        }
        if let Some(v) = &flags.resolv_conf {
            self.resolv_conf = v.clone();
        }
        Ok(())
    }

    /// How the node API is secured (upstream `BuildAuth` in
    /// `cmd/kubelet/app/auth.go` and `InitializeTLS`), with `cluster`
    /// saying whether there is an API server. Unset fields take upstream's
    /// config file defaults in cluster mode (webhook authentication and
    /// authorization, no anonymous requests) and its flag defaults without
    /// one (anonymous, `AlwaysAllow`); webhooks without an API server are
    /// refused as upstream refuses them ("no client provided"). Anonymous
    /// requests with `AlwaysAllow` and nothing else are served over plain
    /// HTTP on loopback only: such a node API on the network is the
    /// unauthenticated kubelet of many incidents, so a non-loopback
    /// `address` is refused for it.
    pub fn node_api_security(&self, cluster: bool) -> Result<NodeApiSecurity, ConfigError> {
        let ttl = |field: &str, text: &str, default: u64| {
            if text.is_empty() {
                return Ok(std::time::Duration::from_secs(default));
            }
            kubelet_container::duration::parse_go_duration(text)
                .map_err(|e| invalid(field, e.to_string()))
        };
        let token_webhook = self.authentication.webhook.enabled.unwrap_or(cluster);
        if token_webhook && !cluster {
            return Err(invalid(
                "authentication.webhook.enabled",
                "no client provided, cannot use webhook authentication: there is no API server \
                 (kubeconfig) to review tokens with",
            ));
        }
        let mode = match self.authorization.mode.as_str() {
            "" if cluster => "Webhook",
            "" => "AlwaysAllow",
            m @ ("Webhook" | "AlwaysAllow") => m,
            other => {
                return Err(invalid(
                    "authorization.mode",
                    format!("{other:?} is not supported: AlwaysAllow or Webhook"),
                ));
            }
        };
        if mode == "Webhook" && !cluster {
            return Err(invalid(
                "authorization.mode",
                "no client provided, cannot use webhook authorization: there is no API server \
                 (kubeconfig) to ask",
            ));
        }
        let anonymous = self.authentication.anonymous.enabled.unwrap_or(!cluster);
        let client_ca = &self.authentication.x509.client_ca_file;
        let cert_and_key = match (
            self.tls_cert_file.is_empty(),
            self.tls_private_key_file.is_empty(),
        ) {
            (true, true) => None,
            (false, false) => Some((
                PathBuf::from(&self.tls_cert_file),
                PathBuf::from(&self.tls_private_key_file),
            )),
            (false, true) => {
                return Err(invalid(
                    "tlsPrivateKeyFile",
                    "tlsCertFile is set: its key is needed too",
                ));
            }
            (true, false) => {
                return Err(invalid(
                    "tlsCertFile",
                    "tlsPrivateKeyFile is set: its certificate is needed too",
                ));
            }
        };
        let open = anonymous && mode == "AlwaysAllow";
        let secure = !open || token_webhook || !client_ca.is_empty() || cert_and_key.is_some();
        let loopback = std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);
        let address = match self.address {
            Some(a) if open && !a.is_loopback() => {
                return Err(invalid(
                    "address",
                    format!(
                        "{a} is not loopback, and the node API would serve anyone: anonymous \
                         requests (authentication.anonymous.enabled) with authorization.mode \
                         AlwaysAllow; set authentication and authorization, or a loopback address"
                    ),
                ));
            }
            Some(a) => a,
            None if open => loopback,
            None => std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
        };
        Ok(NodeApiSecurity {
            secure,
            address,
            cert_and_key,
            client_ca_file: (!client_ca.is_empty()).then(|| PathBuf::from(client_ca)),
            token_webhook: token_webhook
                .then(|| {
                    ttl(
                        "authentication.webhook.cacheTTL",
                        &self.authentication.webhook.cache_ttl,
                        120,
                    )
                })
                .transpose()?,
            anonymous,
            authorization_webhook: if mode == "Webhook" {
                Some((
                    ttl(
                        "authorization.webhook.cacheAuthorizedTTL",
                        &self.authorization.webhook.cache_authorized_ttl,
                        300,
                    )?,
                    ttl(
                        "authorization.webhook.cacheUnauthorizedTTL",
                        &self.authorization.webhook.cache_unauthorized_ttl,
                        30,
                    )?,
                ))
            } else {
                None
            },
        })
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
        if self.cgroup_driver == "systemd" {
            // kubelet_cm's systemd driver only spells cgroups as slices and
            // writes them itself; nothing talks to systemd, so on a systemd
            // host the slices would not be units and systemd could move or
            // reset them.
            return Err(invalid(
                "cgroupDriver",
                "systemd is not supported: this kubelet only names cgroups as systemd slices and never talks to systemd; use cgroupfs (and SystemdCgroup = false in containerd)",
            ));
        }
        if self.cgroup_driver != "cgroupfs" {
            return Err(invalid("cgroupDriver", "must be cgroupfs or systemd"));
        }
        if !self.cgroup_root.starts_with('/') {
            return Err(invalid("cgroupRoot", "must be an absolute cgroup path"));
        }
        if !["none", "static"].contains(&self.cpu_manager_policy.as_str()) {
            return Err(invalid("cpuManagerPolicy", "must be none or static"));
        }
        if self.memory_manager_policy == "Static" {
            return Err(invalid(
                "memoryManagerPolicy",
                "Static is not supported: it needs reservedMemory, which this kubelet does not read; use None",
            ));
        }
        if self.memory_manager_policy != "None" {
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
        if self.pod_pids_limit < -1 || self.pod_pids_limit == 0 {
            return Err(invalid(
                "podPidsLimit",
                "must be -1 (unlimited) or greater than 0",
            ));
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
                if k == "ephemeral-storage" {
                    // Upstream it lowers allocatable storage for the
                    // scheduler and resource-fit admission; this kubelet
                    // has neither, so the reservation would change nothing.
                    return Err(invalid(
                        field,
                        "ephemeral-storage cannot be reserved: this kubelet has no node status and no resource-fit admission to apply it to",
                    ));
                }
                if !["cpu", "memory", "pid"].contains(&k.as_str()) {
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
        // Cluster-mode settings (upstream `validation.go`).
        for (field, text) in [
            (
                "nodeStatusUpdateFrequency",
                &self.node_status_update_frequency,
            ),
            (
                "nodeStatusReportFrequency",
                &self.node_status_report_frequency,
            ),
            ("httpCheckFrequency", &self.http_check_frequency),
            ("syncFrequency", &self.sync_frequency),
        ] {
            if positive_duration(field, text)?.is_zero() {
                return Err(invalid(field, "must be greater than zero"));
            }
        }
        self.change_detection_strategy()?;
        if self.node_lease_duration_seconds <= 0 {
            return Err(invalid(
                "nodeLeaseDurationSeconds",
                "must be greater than 0",
            ));
        }
        if self.node_status_max_images < -1 {
            return Err(invalid("nodeStatusMaxImages", "must be -1 or more"));
        }
        if self.kube_api_qps < 0 {
            return Err(invalid("kubeAPIQPS", "must not be negative"));
        }
        if self.event_record_qps < 0 {
            return Err(invalid("eventRecordQPS", "must not be negative"));
        }
        if self.event_burst < 0 {
            return Err(invalid("eventBurst", "must not be negative"));
        }
        if self.kube_api_burst < 0 {
            return Err(invalid("kubeAPIBurst", "must not be negative"));
        }
        self.cluster_dns_ips()?;
        let url = &self.static_pod_url;
        if !url.is_empty() && !url.starts_with("http://") && !url.starts_with("https://") {
            return Err(invalid(
                "staticPodURL",
                "must be an http:// or https:// URL",
            ));
        }
        Ok(())
    }

    /// `clusterDNS` as addresses (validated). Upstream logs and skips an
    /// entry that is not an IP; here [`Self::validate`] refuses it, so that
    /// a typo does not silently leave pods without cluster DNS.
    pub fn cluster_dns_ips(&self) -> Result<Vec<std::net::IpAddr>, ConfigError> {
        self.cluster_dns
            .iter()
            .enumerate()
            .map(|(i, ip)| {
                ip.trim().parse().map_err(|_| {
                    invalid(
                        &format!("clusterDNS[{i}]"),
                        format!("{ip:?} is not an IP address"),
                    )
                })
            })
            .collect()
    }

    /// `resolvConf` as a path: `None` when empty.
    pub fn resolv_conf_path(&self) -> Option<PathBuf> {
        (!self.resolv_conf.is_empty()).then(|| PathBuf::from(&self.resolv_conf))
    }

    /// `nodeStatusUpdateFrequency` as a duration (validated).
    pub fn node_status_update_period(&self) -> Result<std::time::Duration, ConfigError> {
        positive_duration(
            "nodeStatusUpdateFrequency",
            &self.node_status_update_frequency,
        )
    }

    /// `nodeStatusReportFrequency` as a duration (validated).
    pub fn node_status_report_period(&self) -> Result<std::time::Duration, ConfigError> {
        positive_duration(
            "nodeStatusReportFrequency",
            &self.node_status_report_frequency,
        )
    }

    /// `syncFrequency` as a duration (validated).
    pub fn sync_period(&self) -> Result<std::time::Duration, ConfigError> {
        positive_duration("syncFrequency", &self.sync_frequency)
    }

    /// `configMapAndSecretChangeDetectionStrategy` (validated).
    pub fn change_detection_strategy(
        &self,
    ) -> Result<kubelet_volumemanager::ChangeDetectionStrategy, ConfigError> {
        self.config_map_and_secret_change_detection_strategy
            .parse()
            .map_err(|e: String| invalid("configMapAndSecretChangeDetectionStrategy", e))
    }

    /// `httpCheckFrequency` as a duration (validated).
    pub fn http_check_period(&self) -> Result<std::time::Duration, ConfigError> {
        positive_duration("httpCheckFrequency", &self.http_check_frequency)
    }
}

/// What the host is, as far as the configuration's checks need it. Probed
/// once at start ([`HostFacts::probe`]); tests build it by hand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostFacts {
    /// The cgroup hierarchy the memory controller is on.
    pub memory_cgroup: kubelet_cm::CgroupVersion,
}

impl HostFacts {
    /// Probes this host: cgroup v2 when `/sys/fs/cgroup` is a unified
    /// hierarchy, v1 otherwise (a hybrid host keeps memory on v1).
    pub fn probe() -> Self {
        Self {
            memory_cgroup: kubelet_cm::detect_cgroup_version(Path::new("/sys/fs/cgroup")),
        }
    }
}

impl KubeletConfiguration {
    /// The checks that need the host: eviction needs the memory controller
    /// on cgroup v1, because the eviction manager's stats
    /// (`kubelet_eviction::cgroup_summary`) read only v1 files. On a v2
    /// host every stats read fails and the manager never evicts, so
    /// eviction thresholds there are refused rather than silently dead.
    pub fn validate_host(&self, host: &HostFacts) -> Result<(), ConfigError> {
        if !self.eviction_hard.is_empty() && host.memory_cgroup == kubelet_cm::CgroupVersion::V2 {
            return Err(invalid(
                "evictionHard",
                "the memory controller is on cgroup v2, where this kubelet cannot read node stats, so no threshold would ever evict; set evictionHard: {} (--eviction-hard=\"\") to run without eviction",
            ));
        }
        Ok(())
    }

    /// What the kubelet runs once at start: [`Self::validate`],
    /// [`Self::validate_host`], then one log line listing every ignored
    /// field.
    pub fn check_for_start(&self, host: &HostFacts) -> Result<(), ConfigError> {
        self.validate()?;
        self.validate_host(host)?;
        if !self.ignored.is_empty() {
            tracing::warn!(
                fields = %self.ignored.join(", "),
                "KubeletConfiguration fields ignored (harmless here; see kubelet_agent::config::UNIMPLEMENTED_FIELDS for why)"
            );
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
            pod_pids_limit: self.pod_pids_limit,
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

/// The YAML reader's settings for the file: the same budgets as the
/// manifest decoder's (`kubelet_podconfig::decode`; depth 32, 50,000
/// replayed alias events), one document, duplicate keys refused (upstream's
/// strict decoding), and scalars as `serde_yaml` read them (YAML 1.2 core:
/// `yes` is a string).
fn yaml_options() -> serde_saphyr::Options {
    let mut budget = serde_saphyr::Budget::default();
    budget.max_depth = 32;
    budget.flow_nesting_limit = 32;
    budget.max_documents = 1;
    let mut alias_limits = serde_saphyr::options::AliasLimits::default();
    alias_limits.max_total_replayed_events = 50_000;
    alias_limits.max_replay_stack_depth = 16;
    let mut options = serde_saphyr::Options::default();
    options.budget = Some(budget);
    options.alias_limits = alias_limits;
    options.duplicate_keys = serde_saphyr::DuplicateKeyPolicy::Error;
    options.strict_booleans = true;
    options.leading_zero_numbers_as_strings = true;
    options.underscored_numbers_as_strings = true;
    options.with_snippet = false;
    options
}

/// The fields [`KubeletConfiguration`] reads (a unit test keeps this in
/// step with the struct).
pub const KNOWN_FIELDS: &[&str] = &[
    "apiVersion",
    "tlsCertFile",
    "tlsPrivateKeyFile",
    "tlsMinVersion",
    "tlsCipherSuites",
    "authentication",
    "authorization",
    "kind",
    "staticPodPath",
    "containerRuntimeEndpoint",
    "cgroupDriver",
    "cgroupsPerQOS",
    "cgroupRoot",
    "imageGCHighThresholdPercent",
    "imageGCLowThresholdPercent",
    "imageMinimumGCAge",
    "containerLogMaxSize",
    "containerLogMaxFiles",
    "enableServer",
    "address",
    "port",
    "clusterDomain",
    "clusterDNS",
    "resolvConf",
    "kubeReserved",
    "systemReserved",
    "evictionHard",
    "cpuManagerPolicy",
    "cpuManagerReconcilePeriod",
    "reservedSystemCPUs",
    "memoryManagerPolicy",
    "topologyManagerPolicy",
    "maxPods",
    "podLogsDir",
    "podPidsLimit",
    "staticPodURL",
    "registerNode",
    "registerWithTaints",
    "nodeStatusUpdateFrequency",
    "nodeStatusReportFrequency",
    "nodeLeaseDurationSeconds",
    "nodeStatusMaxImages",
    "kubeAPIQPS",
    "kubeAPIBurst",
    "httpCheckFrequency",
    "staticPodURLHeader",
    "providerID",
    "eventRecordQPS",
    "eventBurst",
    "syncFrequency",
    "configMapAndSecretChangeDetectionStrategy",
];

/// What this kubelet does with an upstream field it does not implement.
#[derive(Debug, Clone, Copy)]
pub enum Verdict {
    /// Ignored whatever its value, for the reason given.
    Ignore(&'static str),
    /// Refused whatever its value, for the reason given.
    Refuse(&'static str),
    /// Ignored when `harmless(value)` (the value asks for what this kubelet
    /// does anyway), refused otherwise.
    IgnoreIf {
        /// Whether the value asks for what this kubelet does anyway.
        harmless: fn(&serde_json::Value) -> bool,
        /// Why such a value is harmless.
        why: &'static str,
        /// Why any other value is refused.
        refused: &'static str,
    },
}

/// An upstream `KubeletConfiguration` field this kubelet does not
/// implement, and what it does with it.
#[derive(Debug, Clone, Copy)]
pub struct UnimplementedField {
    /// The field, as spelled in the file.
    pub name: &'static str,
    /// Ignored or refused, and why.
    pub verdict: Verdict,
}

const fn ignore(name: &'static str, why: &'static str) -> UnimplementedField {
    UnimplementedField {
        name,
        verdict: Verdict::Ignore(why),
    }
}

const fn refuse(name: &'static str, why: &'static str) -> UnimplementedField {
    UnimplementedField {
        name,
        verdict: Verdict::Refuse(why),
    }
}

const fn ignore_if(
    name: &'static str,
    harmless: fn(&serde_json::Value) -> bool,
    why: &'static str,
    refused: &'static str,
) -> UnimplementedField {
    UnimplementedField {
        name,
        verdict: Verdict::IgnoreIf {
            harmless,
            why,
            refused,
        },
    }
}

fn is_true(v: &Value) -> bool {
    v.as_bool() == Some(true)
}

fn is_false(v: &Value) -> bool {
    v.as_bool() == Some(false)
}

fn is_zero(v: &Value) -> bool {
    v.as_f64() == Some(0.0)
}

fn is_empty(v: &Value) -> bool {
    match v {
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        _ => false,
    }
}

fn duration_is(v: &Value, want: std::time::Duration) -> bool {
    v.as_str()
        .and_then(|s| kubelet_container::duration::parse_go_duration(s).ok())
        == Some(want)
}

fn is_zero_duration(v: &Value) -> bool {
    is_empty(v) || duration_is(v, std::time::Duration::ZERO)
}

/// Every field of upstream's `KubeletConfiguration` (v1beta1, `types.go`)
/// this kubelet does not read. Fields needing an API server are ignored, as
/// upstream's standalone kubelet ignores them too.
pub const UNIMPLEMENTED_FIELDS: &[UnimplementedField] = &[
    ignore(
        "fileCheckFrequency",
        "a timing knob: the file source watches the directory (inotify)",
    ),
    ignore_if(
        "readOnlyPort",
        is_zero,
        "0: no read-only server, as here",
        "there is no read-only server: nothing would listen on that port",
    ),
    ignore_if(
        "tlsCurvePreferences",
        is_empty,
        "empty",
        "the node API's curves are rustls's defaults (X25519, P-256, P-384): they cannot be restricted",
    ),
    ignore(
        "rotateCertificates",
        "client certificates come from an API server, which a standalone kubelet (this one or upstream's) has not",
    ),
    ignore_if(
        "serverTLSBootstrap",
        is_false,
        "false",
        "serving certificates are not requested from the API server (no CSR): set tlsCertFile and tlsPrivateKeyFile, or let the kubelet make a self-signed pair in --cert-dir",
    ),
    ignore_if(
        "registryPullQPS",
        |v| v.as_f64() == Some(5.0),
        "5: the pull rate this kubelet uses",
        "pulls are limited to 5 per second (burst 10), not configurable yet",
    ),
    ignore_if(
        "registryBurst",
        |v| v.as_f64() == Some(10.0),
        "10: the pull burst this kubelet uses",
        "pulls are limited to 5 per second (burst 10), not configurable yet",
    ),
    ignore(
        "imagePullCredentialsVerificationPolicy",
        "static pods have no pull secrets (only node-wide credentials), so every policy admits the same images",
    ),
    ignore(
        "preloadedImagesVerificationAllowlist",
        "static pods have no pull secrets (see imagePullCredentialsVerificationPolicy)",
    ),
    ignore_if(
        "enableDebuggingHandlers",
        is_true,
        "true: of the debugging handlers, /containerLogs is served; the others answer 404, visibly",
        "/containerLogs is served whatever this says",
    ),
    ignore(
        "enableContentionProfiling",
        "there is no profiling endpoint",
    ),
    ignore_if(
        "healthzPort",
        is_zero,
        "0: no separate healthz server, as here",
        "there is no separate healthz server: /healthz is on the node API (address:port)",
    ),
    ignore(
        "healthzBindAddress",
        "there is no separate healthz server (see healthzPort)",
    ),
    refuse(
        "oomScoreAdj",
        "this kubelet does not set its own oom_score_adj; set OOMScoreAdjust in its service unit",
    ),
    ignore(
        "streamingConnectionIdleTimeout",
        "deprecated upstream, no effect there either",
    ),
    ignore_if(
        "imageMaximumGCAge",
        is_zero_duration,
        "0s: no age-based image GC, as here",
        "image GC by age is not wired: old unused images would stay",
    ),
    ignore("volumeStatsAggPeriod", "a timing knob of volume stats"),
    ignore_if(
        "kubeletCgroups",
        is_empty,
        "empty",
        "the kubelet does not move itself into a cgroup",
    ),
    ignore_if(
        "systemCgroups",
        is_empty,
        "empty",
        "the kubelet does not move system processes into a cgroup",
    ),
    ignore_if(
        "singleProcessOOMKill",
        is_true,
        "true: what this kubelet does (it never sets memory.oom.group)",
        "memory.oom.group is never set: an OOM kills one process, not the container",
    ),
    ignore_if(
        "cpuManagerPolicyOptions",
        is_empty,
        "empty",
        "CPU manager policy options are not implemented",
    ),
    ignore(
        "draManagerReconcilePeriod",
        "dynamic resource allocation is not implemented; a timing knob of it",
    ),
    ignore_if(
        "topologyManagerScope",
        |v| v.as_str() == Some("container"),
        "container: the scope this kubelet uses",
        "only the container scope is implemented",
    ),
    ignore_if(
        "topologyManagerPolicyOptions",
        is_empty,
        "empty",
        "topology manager policy options are not implemented",
    ),
    ignore_if(
        "qosReserved",
        is_empty,
        "empty",
        "memory reservation for QoS tiers (qosReserved) is not implemented",
    ),
    ignore(
        "runtimeRequestTimeout",
        "a timing knob: the CRI client has its own timeouts",
    ),
    ignore(
        "hairpinMode",
        "with a CRI runtime, hairpin is the CNI plugin's setting",
    ),
    ignore(
        "podCIDR",
        "only read upstream when there is no API server and the runtime asks; containerd's CNI config has its own ranges",
    ),
    ignore_if(
        "runOnce",
        is_false,
        "false",
        "run-once mode is not implemented: the kubelet would keep running",
    ),
    ignore_if(
        "cpuCFSQuota",
        is_true,
        "true: CPU limits are enforced with CFS quota, as here",
        "CPU limits are always enforced with CFS quota",
    ),
    ignore_if(
        "cpuCFSQuotaPeriod",
        |v| duration_is(v, std::time::Duration::from_millis(100)),
        "100ms: the period used here",
        "the CFS period is always 100ms",
    ),
    ignore(
        "maxOpenFiles",
        "the kubelet's own file limit: set LimitNOFILE in its service unit",
    ),
    ignore(
        "contentType",
        "API server traffic, which a standalone kubelet has not",
    ),
    ignore_if(
        "serializeImagePulls",
        is_true,
        "true: images are pulled one at a time, as here",
        "images are always pulled one at a time",
    ),
    ignore_if(
        "maxParallelImagePulls",
        |v| v.as_f64() == Some(1.0),
        "1: one pull at a time, as here",
        "images are always pulled one at a time",
    ),
    ignore_if(
        "evictionSoft",
        is_empty,
        "empty",
        "soft eviction thresholds are not wired: nothing would be evicted at them",
    ),
    ignore_if(
        "evictionSoftGracePeriod",
        is_empty,
        "empty",
        "soft eviction thresholds are not wired (see evictionSoft)",
    ),
    ignore(
        "evictionPressureTransitionPeriod",
        "a timing knob: pressure conditions clear after upstream's default 5m",
    ),
    ignore(
        "evictionMaxPodGracePeriod",
        "applies to soft eviction only, which is refused when configured",
    ),
    ignore_if(
        "evictionMinimumReclaim",
        is_empty,
        "empty",
        "minimum reclaim is not wired: eviction stops at the threshold",
    ),
    ignore_if(
        "mergeDefaultEvictionSettings",
        is_false,
        "false: evictionHard in the file replaces the defaults, as here",
        "evictionHard in the file replaces the defaults; they are not merged",
    ),
    ignore_if(
        "podsPerCore",
        is_zero,
        "0: no per-core limit, as here",
        "a per-core pod limit is not implemented; use maxPods",
    ),
    ignore(
        "enableControllerAttachDetach",
        "attach/detach is the API server's controllers' business",
    ),
    ignore_if(
        "protectKernelDefaults",
        is_false,
        "false",
        "kernel settings are not checked at start",
    ),
    ignore(
        "makeIPTablesUtilChains",
        "a hint chain for other components; nothing here reads it",
    ),
    ignore(
        "iptablesMasqueradeBit",
        "deprecated upstream, no effect there either",
    ),
    ignore(
        "iptablesDropBit",
        "deprecated upstream, no effect there either",
    ),
    ignore_if(
        "featureGates",
        is_empty,
        "empty",
        "this kubelet has no feature gates: a gate turned on may name a feature it lacks, one turned off a feature it still runs",
    ),
    ignore_if(
        "failSwapOn",
        is_false,
        "false: the kubelet starts with swap on, as here",
        "swap is not checked at start: the kubelet would run with swap on",
    ),
    ignore_if(
        "memorySwap",
        |v| {
            v.get("swapBehavior")
                .and_then(Value::as_str)
                .is_none_or(|b| b.is_empty() || b == "NoSwap")
        },
        "NoSwap: containers get no swap setting, as here",
        "swap for containers (LimitedSwap) is not implemented",
    ),
    ignore(
        "containerLogMaxWorkers",
        "how many logs are rotated in parallel; rotation here is sequential",
    ),
    ignore(
        "containerLogMonitorInterval",
        "a timing knob: logs are checked every 10s",
    ),
    ignore("showHiddenMetricsForVersion", "metrics visibility only"),
    ignore_if(
        "systemReservedCgroup",
        is_empty,
        "empty",
        "systemReserved is not enforced on a system cgroup, only subtracted from pods' allocatable",
    ),
    ignore_if(
        "kubeReservedCgroup",
        is_empty,
        "empty",
        "kubeReserved is not enforced on a kube cgroup, only subtracted from pods' allocatable",
    ),
    ignore_if(
        "enforceNodeAllocatable",
        |v| {
            v.as_array()
                .is_some_and(|a| a.len() == 1 && a[0].as_str() == Some("pods"))
        },
        "[pods]: allocatable is enforced on the pods cgroup, as here",
        "only [pods] is implemented: allocatable is always enforced on the pods cgroup, never on system or kube cgroups",
    ),
    ignore_if(
        "allowedUnsafeSysctls",
        is_empty,
        "empty",
        "an allow-list of unsafe sysctls is not implemented: only the safe sysctls are admitted",
    ),
    ignore(
        "volumePluginDir",
        "flex volume plugins are not supported (pods using them are refused)",
    ),
    ignore(
        "kernelMemcgNotification",
        "memory threshold notifications are always attached on cgroup v1",
    ),
    ignore(
        "logging",
        "log format and verbosity are set with -v and RUST_LOG",
    ),
    ignore(
        "enableSystemLogHandler",
        "there is no /logs endpoint (it answers 404)",
    ),
    ignore(
        "enableSystemLogQuery",
        "there is no /logs endpoint (it answers 404)",
    ),
    ignore_if(
        "shutdownGracePeriod",
        is_zero_duration,
        "0s: no graceful node shutdown, as here",
        "graceful node shutdown is not implemented: pods would not be stopped before the node shuts down",
    ),
    ignore_if(
        "shutdownGracePeriodCriticalPods",
        is_zero_duration,
        "0s",
        "graceful node shutdown is not implemented (see shutdownGracePeriod)",
    ),
    ignore_if(
        "shutdownGracePeriodByPodPriority",
        is_empty,
        "empty",
        "graceful node shutdown is not implemented (see shutdownGracePeriod)",
    ),
    ignore_if(
        "crashLoopBackOff",
        |v| {
            v.get("maxContainerRestartPeriod")
                .is_none_or(Value::is_null)
        },
        "no maxContainerRestartPeriod: the 300s cap, as here",
        "the crash loop back-off cap is fixed at 300s",
    ),
    ignore_if(
        "reservedMemory",
        is_empty,
        "empty",
        "per-NUMA memory reservations are not read (the Static memory manager is refused)",
    ),
    ignore(
        "enableProfilingHandler",
        "there is no /debug/pprof endpoint (it answers 404)",
    ),
    ignore(
        "enableDebugFlagsHandler",
        "there is no /debug/flags endpoint (it answers 404)",
    ),
    ignore_if(
        "seccompDefault",
        is_true,
        "true: containers without a profile get RuntimeDefault, as here",
        "containers without a seccomp profile always get RuntimeDefault, never Unconfined",
    ),
    ignore(
        "memoryThrottlingFactor",
        "MemoryQoS (memory.high) is a feature gate, off upstream and not implemented",
    ),
    ignore_if(
        "memoryReservationPolicy",
        |v| v.as_str() == Some("None"),
        "None: no memory.min/memory.low, as here",
        "memory reservations (memory.min/memory.low) are not implemented",
    ),
    ignore(
        "tracing",
        "OpenTelemetry tracing is not implemented; only observability is lost",
    ),
    ignore_if(
        "localStorageCapacityIsolation",
        is_true,
        "true: ephemeral-storage limits and emptyDir sizeLimit are enforced, as here",
        "ephemeral-storage limits and emptyDir sizeLimit are always enforced by eviction",
    ),
    ignore_if(
        "imageServiceEndpoint",
        is_empty,
        "empty: images go through containerRuntimeEndpoint, as here",
        "images are always pulled through containerRuntimeEndpoint",
    ),
    ignore_if(
        "failCgroupV1",
        is_false,
        "false: the kubelet runs on cgroup v1, as here",
        "this kubelet runs on cgroup v1 (its eviction stats need it) and does not refuse it",
    ),
    ignore_if(
        "userNamespaces",
        |v| {
            v.get("idsPerPod")
                .is_none_or(|n| n.is_null() || n.as_f64() == Some(65536.0))
        },
        "idsPerPod 65536: the default",
        "a user namespace size other than 65536 is not implemented",
    ),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_values_win_over_defaults_and_flags_win_over_the_file() {
        let mut c = KubeletConfiguration::from_yaml(
            "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\nmaxPods: 20\ncgroupDriver: cgroupfs\nstaticPodPath: /etc/manifests\nrotateCertificates: true\nimageMinimumGCAge: null\n",
        )
        .expect("parse");
        assert_eq!(c.max_pods, 20);
        assert!(c.cgroups_per_qos, "default kept");
        assert_eq!(c.image_minimum_gc_age, "2m", "null is unset");
        assert_eq!(c.ignored, ["rotateCertificates"]);
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
    fn dns_fields_are_read_from_the_file_and_the_flags() {
        let c = KubeletConfiguration::default();
        assert!(c.cluster_dns_ips().expect("ips").is_empty());
        assert_eq!(
            c.resolv_conf_path().as_deref(),
            Some(Path::new("/etc/resolv.conf"))
        );
        let mut c = KubeletConfiguration::from_yaml(&format!(
            "{HEAD}clusterDNS: [10.96.0.10, 'fd00::a']\nclusterDomain: example.org\nresolvConf: /run/systemd/resolve/resolv.conf\n"
        ))
        .expect("parse");
        assert!(c.ignored.is_empty(), "{:?}", c.ignored);
        c.validate().expect("valid");
        assert_eq!(
            c.cluster_dns_ips().expect("ips"),
            [
                "10.96.0.10".parse::<std::net::IpAddr>().expect("ip"),
                "fd00::a".parse().expect("ip")
            ]
        );
        assert_eq!(c.cluster_domain, "example.org");
        assert_eq!(
            c.resolv_conf_path().as_deref(),
            Some(Path::new("/run/systemd/resolve/resolv.conf"))
        );
        c.apply_flags(&Flags {
            cluster_dns: Some(vec!["10.0.0.10".into(), String::new()]),
            cluster_domain: Some("cluster.test".into()),
            resolv_conf: Some(String::new()),
            ..Default::default()
        })
        .expect("flags");
        assert_eq!(c.cluster_dns, ["10.0.0.10"]);
        assert_eq!(c.cluster_domain, "cluster.test");
        assert_eq!(c.resolv_conf_path(), None, "\"\" is no file");

        let err = KubeletConfiguration::from_yaml("clusterDNS: [10.96.0.10, kube-dns]")
            .and_then(|c| c.validate())
            .expect_err("not an IP");
        assert_eq!(err.field, "clusterDNS[1]", "{err}");
        assert!(err.reason.contains("\"kube-dns\""), "{err}");
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
            (
                "configMapAndSecretChangeDetectionStrategy: Poll",
                "configMapAndSecretChangeDetectionStrategy",
            ),
            ("syncFrequency: 0s", "syncFrequency"),
            ("syncFrequency: soon", "syncFrequency"),
        ];
        for (yaml, field) in cases {
            let err = KubeletConfiguration::from_yaml(yaml)
                .and_then(|c| c.validate())
                .expect_err(yaml);
            assert_eq!(err.field, field, "{yaml}: {err}");
        }
        let err = KubeletConfiguration::from_yaml("maxPods: [1]").expect_err("type");
        assert_eq!(err.field, "maxPods", "{err}");
        let err = KubeletConfiguration::from_yaml("maxPods: [1").expect_err("syntax");
        assert_eq!(err.field, "--config", "{err}");
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
        assert_eq!(cm.pod_pids_limit, -1);
        c.pod_pids_limit = 1024;
        c.validate().expect("valid");
        let cm = c
            .container_manager_config(Path::new("/tmp/state"))
            .expect("cm config");
        assert_eq!(cm.pod_pids_limit, 1024);
    }

    const HEAD: &str = "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n";

    /// Parses and validates `body` on a cgroup v1 host; the error's field.
    fn refused_field(body: &str) -> String {
        let host = HostFacts {
            memory_cgroup: kubelet_cm::CgroupVersion::V1,
        };
        let err = KubeletConfiguration::from_yaml(&format!("{HEAD}{body}"))
            .and_then(|c| c.check_for_start(&host))
            .expect_err(body);
        assert!(!err.reason.is_empty(), "{body}: {err}");
        assert!(err.to_string().contains(&err.field), "{err}");
        err.field
    }

    #[test]
    fn memory_manager_static_is_refused_at_validation() {
        assert_eq!(
            refused_field("memoryManagerPolicy: Static\n"),
            "memoryManagerPolicy"
        );
        let mut c = KubeletConfiguration::default();
        c.apply_flags(&Flags {
            memory_manager_policy: Some("Static".into()),
            ..Default::default()
        })
        .expect("flags");
        let err = c.validate().expect_err("Static");
        assert_eq!(err.field, "memoryManagerPolicy");
        assert!(err.reason.contains("reservedMemory"), "{err}");
    }

    #[test]
    fn the_systemd_cgroup_driver_is_refused() {
        assert_eq!(refused_field("cgroupDriver: systemd\n"), "cgroupDriver");
        let err = KubeletConfiguration {
            cgroup_driver: "systemd".into(),
            ..Default::default()
        }
        .validate()
        .expect_err("systemd");
        assert!(err.reason.contains("never talks to systemd"), "{err}");
    }

    #[test]
    fn eviction_on_a_cgroup_v2_memory_controller_is_refused() {
        let v2 = HostFacts {
            memory_cgroup: kubelet_cm::CgroupVersion::V2,
        };
        let v1 = HostFacts {
            memory_cgroup: kubelet_cm::CgroupVersion::V1,
        };
        // Upstream's default thresholds count as configured.
        let c = KubeletConfiguration::default();
        c.check_for_start(&v1).expect("v1 evicts");
        let err = c.check_for_start(&v2).expect_err("v2 never evicts");
        assert_eq!(err.field, "evictionHard");
        assert!(err.reason.contains("cgroup v2"), "{err}");
        // Eviction turned off runs on v2.
        let off =
            KubeletConfiguration::from_yaml(&format!("{HEAD}evictionHard: {{}}\n")).expect("parse");
        off.check_for_start(&v2).expect("no eviction configured");
        let mut flags_off = KubeletConfiguration::default();
        flags_off
            .apply_flags(&Flags {
                eviction_hard: Some(String::new()),
                ..Default::default()
            })
            .expect("flags");
        flags_off
            .check_for_start(&v2)
            .expect("--eviction-hard=\"\"");
    }

    #[test]
    fn reserving_ephemeral_storage_is_refused() {
        assert_eq!(
            refused_field("kubeReserved: {ephemeral-storage: 1Gi}\n"),
            "kubeReserved"
        );
        assert_eq!(
            refused_field("systemReserved: {ephemeral-storage: 1Gi}\n"),
            "systemReserved"
        );
    }

    #[test]
    fn a_field_upstream_does_not_have_is_an_error_naming_it() {
        assert_eq!(refused_field("maxPod: 5\n"), "maxPod");
        let err = KubeletConfiguration::from_yaml(&format!("{HEAD}frobnicate: true\n"))
            .expect_err("unknown");
        assert!(err.reason.contains("unknown field"), "{err}");
        // Duplicate keys are refused, as upstream's strict decoding does.
        let err = KubeletConfiguration::from_yaml(&format!("{HEAD}maxPods: 5\nmaxPods: 6\n"))
            .expect_err("duplicate");
        assert_eq!(err.field, "--config");
        assert!(err.reason.contains("maxPods"), "{err}");
    }

    #[test]
    fn unimplemented_fields_that_matter_are_refused_naming_the_field() {
        let cases = [
            ("tlsCurvePreferences: [CurveP256]\n", "tlsCurvePreferences"),
            ("serverTLSBootstrap: true\n", "serverTLSBootstrap"),
            ("featureGates: {SidecarContainers: true}\n", "featureGates"),
            ("featureGates: {SidecarContainers: false}\n", "featureGates"),
            ("serializeImagePulls: false\n", "serializeImagePulls"),
            (
                "systemReservedCgroup: /system.slice\n",
                "systemReservedCgroup",
            ),
            (
                "enforceNodeAllocatable: [pods, system-reserved]\n",
                "enforceNodeAllocatable",
            ),
            ("enforceNodeAllocatable: []\n", "enforceNodeAllocatable"),
            ("protectKernelDefaults: true\n", "protectKernelDefaults"),
            ("readOnlyPort: 10255\n", "readOnlyPort"),
            ("healthzPort: 10248\n", "healthzPort"),
            ("oomScoreAdj: -999\n", "oomScoreAdj"),
            ("failSwapOn: true\n", "failSwapOn"),
            ("shutdownGracePeriod: 30s\n", "shutdownGracePeriod"),
            ("evictionSoft: {memory.available: 1Gi}\n", "evictionSoft"),
            ("seccompDefault: false\n", "seccompDefault"),
            ("cpuCFSQuota: false\n", "cpuCFSQuota"),
            ("imageMaximumGCAge: 24h\n", "imageMaximumGCAge"),
            ("podPidsLimit: 0\n", "podPidsLimit"),
        ];
        for (body, field) in cases {
            assert_eq!(refused_field(body), field, "{body}");
        }
    }

    #[test]
    fn the_node_api_is_secured_as_upstream_defaults_say() {
        use std::net::IpAddr;
        use std::time::Duration;
        let parse =
            |body: &str| KubeletConfiguration::from_yaml(&format!("{HEAD}{body}")).expect(body);
        // Cluster mode, nothing said: upstream's config file defaults.
        let s = parse("").node_api_security(true).expect("cluster");
        assert!(s.secure && !s.anonymous);
        assert_eq!(s.address, IpAddr::from([0, 0, 0, 0]));
        assert_eq!(s.token_webhook, Some(Duration::from_secs(120)));
        assert_eq!(
            s.authorization_webhook,
            Some((Duration::from_secs(300), Duration::from_secs(30)))
        );
        assert_eq!(s.cert_and_key, None, "self-signed");
        // Standalone, nothing said: anonymous with AlwaysAllow, plain HTTP
        // on loopback.
        let s = parse("").node_api_security(false).expect("standalone");
        assert!(!s.secure && s.anonymous && s.authorization_webhook.is_none());
        assert_eq!(s.address, IpAddr::from([127, 0, 0, 1]));
        // ... and never on the network.
        let e = parse("address: 0.0.0.0\n")
            .node_api_security(false)
            .expect_err("open on the network");
        assert_eq!(e.field, "address");
        // Webhooks need an API server, as upstream ("no client provided").
        for (body, field) in [
            (
                "authentication: {webhook: {enabled: true}}\n",
                "authentication.webhook.enabled",
            ),
            ("authorization: {mode: Webhook}\n", "authorization.mode"),
        ] {
            let e = parse(body).node_api_security(false).expect_err(body);
            assert_eq!(e.field, field);
            assert!(e.reason.contains("no client provided"), "{e}");
        }
        let e = parse("authorization: {mode: Node}\n")
            .node_api_security(true)
            .expect_err("mode");
        assert_eq!(e.field, "authorization.mode");
        // Standalone with client certificates: TLS, any address.
        let s = parse(
            "authentication: {x509: {clientCAFile: /ca.crt}, anonymous: {enabled: false}}\n\
             tlsCertFile: /t.crt\ntlsPrivateKeyFile: /t.key\naddress: 10.0.0.1\n",
        )
        .node_api_security(false)
        .expect("x509");
        assert!(s.secure && !s.anonymous);
        assert_eq!(s.client_ca_file.as_deref(), Some(Path::new("/ca.crt")));
        assert_eq!(
            s.cert_and_key,
            Some((PathBuf::from("/t.crt"), PathBuf::from("/t.key")))
        );
        assert_eq!(s.address, IpAddr::from([10, 0, 0, 1]));
        let e = parse("tlsCertFile: /t.crt\n")
            .node_api_security(true)
            .expect_err("no key");
        assert_eq!(e.field, "tlsPrivateKeyFile");
        let e = parse("authentication: {webhook: {cacheTTL: soon}}\n")
            .node_api_security(true)
            .expect_err("ttl");
        assert_eq!(e.field, "authentication.webhook.cacheTTL");
        // Flags set the same fields.
        let mut c = KubeletConfiguration::default();
        c.apply_flags(&Flags {
            anonymous_auth: Some(false),
            authorization_mode: Some("Webhook".into()),
            client_ca_file: Some("/ca.crt".into()),
            ..Flags::default()
        })
        .expect("flags");
        let s = c.node_api_security(true).expect("flags");
        assert!(!s.anonymous && s.authorization_webhook.is_some() && s.client_ca_file.is_some());
    }

    #[test]
    fn harmless_upstream_fields_are_ignored_and_listed() {
        let c = KubeletConfiguration::from_yaml(&format!(
            "{HEAD}serializeImagePulls: true\nenforceNodeAllocatable: [pods]\nhealthzPort: 0\nsyncFrequency: 1m\nconfigMapAndSecretChangeDetectionStrategy: Cache\ncpuCFSQuotaPeriod: 100ms\nlogging: {{format: text}}\npodPidsLimit: 4096\n"
        ))
        .expect("parse");
        assert_eq!(
            c.ignored,
            [
                "cpuCFSQuotaPeriod",
                "enforceNodeAllocatable",
                "healthzPort",
                "logging",
                "serializeImagePulls",
            ]
        );
        assert_eq!(c.pod_pids_limit, 4096);
        assert_eq!(c.sync_period(), Ok(std::time::Duration::from_secs(60)));
        assert_eq!(
            c.change_detection_strategy(),
            Ok(kubelet_volumemanager::ChangeDetectionStrategy::Cache)
        );
        c.check_for_start(&HostFacts {
            memory_cgroup: kubelet_cm::CgroupVersion::V1,
        })
        .expect("valid");
    }

    #[test]
    fn the_field_tables_are_consistent() {
        // KNOWN_FIELDS is exactly what the struct reads.
        let serialized = serde_json::to_value(KubeletConfiguration::default()).expect("json");
        let mut keys: Vec<&str> = serialized
            .as_object()
            .expect("object")
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort_unstable();
        let mut known = KNOWN_FIELDS.to_vec();
        known.sort_unstable();
        assert_eq!(keys, known);
        let mut seen = std::collections::BTreeSet::new();
        for f in UNIMPLEMENTED_FIELDS {
            assert!(seen.insert(f.name), "{} twice", f.name);
            assert!(!KNOWN_FIELDS.contains(&f.name), "{} is known", f.name);
            let why = match f.verdict {
                Verdict::Ignore(why) | Verdict::Refuse(why) => why,
                Verdict::IgnoreIf { why, refused, .. } => {
                    assert!(!refused.is_empty(), "{}", f.name);
                    why
                }
            };
            assert!(!why.is_empty(), "{}", f.name);
        }
        // Together they cover upstream's v1beta1 field list (types.go: 126
        // fields besides apiVersion and kind).
        assert_eq!(seen.len() + KNOWN_FIELDS.len(), 128);
    }

    #[test]
    fn cluster_mode_fields_are_read_and_validated() {
        let c = KubeletConfiguration::from_yaml(&format!(
            "{HEAD}registerNode: false\nregisterWithTaints: [{{key: dedicated, value: infra, effect: NoSchedule}}]\nnodeStatusUpdateFrequency: 4s\nnodeStatusReportFrequency: 1m\nnodeLeaseDurationSeconds: 20\nnodeStatusMaxImages: 3\nkubeAPIQPS: 5\nkubeAPIBurst: 10\nstaticPodURL: http://127.0.0.1:1/pods\nstaticPodURLHeader: {{X-Token: [a]}}\nhttpCheckFrequency: 5s\nproviderID: demo://node-1\n"
        ))
        .expect("parse");
        c.validate().expect("valid");
        assert!(!c.register_node);
        assert_eq!(c.register_with_taints[0].key, "dedicated");
        assert_eq!(
            c.node_status_update_period().expect("period"),
            std::time::Duration::from_secs(4)
        );
        assert_eq!(
            c.node_status_report_period().expect("period"),
            std::time::Duration::from_secs(60)
        );
        assert_eq!(c.node_lease_duration_seconds, 20);
        assert_eq!((c.kube_api_qps, c.kube_api_burst), (5, 10));
        assert_eq!(c.static_pod_url_header["X-Token"], ["a"]);
        assert_eq!(c.provider_id, "demo://node-1");
        assert!(c.ignored.is_empty(), "{:?}", c.ignored);
        for (body, field) in [
            (
                "nodeStatusUpdateFrequency: 0s\n",
                "nodeStatusUpdateFrequency",
            ),
            (
                "nodeStatusReportFrequency: soon\n",
                "nodeStatusReportFrequency",
            ),
            ("nodeLeaseDurationSeconds: 0\n", "nodeLeaseDurationSeconds"),
            ("nodeStatusMaxImages: -2\n", "nodeStatusMaxImages"),
            ("kubeAPIQPS: -1\n", "kubeAPIQPS"),
            ("kubeAPIBurst: -1\n", "kubeAPIBurst"),
            ("staticPodURL: ftp://x/pods\n", "staticPodURL"),
            ("httpCheckFrequency: 0s\n", "httpCheckFrequency"),
        ] {
            assert_eq!(refused_field(body), field, "{body}");
        }
    }

    #[test]
    fn node_labels_in_restricted_namespaces_are_refused() {
        let labels =
            parse_node_labels("role=edge,node.kubernetes.io/pool=a,topology.kubernetes.io/zone=z")
                .expect("labels");
        assert_eq!(labels["role"], "edge");
        assert_eq!(labels.len(), 3);
        for bad in [
            "node-role.kubernetes.io/master=",
            "foo.k8s.io/x=y",
            "novalue",
        ] {
            assert_eq!(
                parse_node_labels(bad).expect_err(bad).field,
                "--node-labels"
            );
        }
    }

    #[test]
    fn taints_parse_as_upstream_spells_them() {
        let taints = parse_taints("a=b:NoSchedule, c:NoExecute").expect("taints");
        assert_eq!(taints.len(), 2);
        assert_eq!(
            (
                taints[0].key.as_str(),
                taints[0].value.as_deref(),
                taints[0].effect.as_str()
            ),
            ("a", Some("b"), "NoSchedule")
        );
        assert_eq!(
            (taints[1].key.as_str(), taints[1].value.as_deref()),
            ("c", None)
        );
        for bad in ["a=b", "a=b:Sometimes", "=b:NoSchedule"] {
            let e = parse_taints(bad).expect_err(bad);
            assert_eq!(e.field, "registerWithTaints");
        }
        let mut c = KubeletConfiguration::default();
        c.apply_flags(&Flags {
            register_with_taints: Some("x=y:PreferNoSchedule".into()),
            manifest_url: Some("http://127.0.0.1:9/pods".into()),
            register_node: Some(false),
            ..Flags::default()
        })
        .expect("flags");
        assert_eq!(c.register_with_taints[0].effect, "PreferNoSchedule");
        assert_eq!(c.static_pod_url, "http://127.0.0.1:9/pods");
        assert!(!c.register_node);
    }
}
