//! What a container's environment reads beyond its pod spec, and the
//! downward API's field and resource values.
//!
//! Upstream `makeEnvironmentVariables` (`pkg/kubelet/kubelet_pods.go`)
//! reads Secrets and ConfigMaps through the kubelet's secret and configMap
//! managers, the node's IPs and the node's allocatable. Here those inputs
//! are one value, [`EnvSources`], that the kubelet fills before each sync
//! of a pod (a snapshot of the objects the pod's env refers to, as
//! upstream's managers hold them for each registered pod) and hands to the
//! runtime manager, which stays synchronous while it builds container
//! configs and never talks to the API server. The service variables
//! (upstream `envvars.FromServices` and `getServiceEnvVarMap`:
//! [`from_services`], [`service_env_var_map`]) are made here from the
//! Services the kubelet's reflector holds, and carried in
//! [`EnvSources::services`].
//!
//! The pure parts of upstream's downward API live here too, for the env
//! and for `downwardAPI` volumes alike:
//!
//! - [`convert_downward_api_field_label`] (upstream
//!   `pkg/apis/core/pods/helpers.go` `ConvertDownwardAPIFieldLabel`),
//! - [`extract_field_path_as_string`] (upstream `pkg/fieldpath/fieldpath.go`),
//! - [`container_resource_value`] (upstream `pkg/api/v1/resource/helpers.go`
//!   `ExtractContainerResourceValue`, with the limits defaulted to the
//!   node's allocatable as `defaultPodLimitsForDownwardAPI` in
//!   `pkg/kubelet/kubelet_resources.go` does).

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{Container, Pod, ResourceFieldSelector, Service};

use crate::quantity;

/// One object as the kubelet's secret or configMap manager answered for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup<T> {
    /// The object, by its data.
    Found(T),
    /// The API server says it does not exist.
    NotFound,
    /// It could not be read; what went wrong.
    Failed(String),
}

/// The Secrets and ConfigMaps of one namespace that a pod's env refers to,
/// by name: each Secret's `data`, each ConfigMap's `data`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EnvObjects {
    /// Secrets by name.
    pub secrets: BTreeMap<String, Lookup<BTreeMap<String, Vec<u8>>>>,
    /// ConfigMaps by name.
    pub config_maps: BTreeMap<String, Lookup<BTreeMap<String, String>>>,
}

/// What the environment of a pod's containers reads beyond the pod spec.
/// The default is a standalone kubelet's: no API server (a reference to a
/// Secret or ConfigMap fails its container), no known node IP, no
/// allocatable to default limits to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EnvSources {
    /// The referenced Secrets and ConfigMaps, fetched before the sync;
    /// `None` without an API server (upstream: no `kubeClient`).
    pub objects: Option<EnvObjects>,
    /// The node's IPs, primary first (`status.hostIP`, `status.hostIPs`).
    pub host_ips: Vec<String>,
    /// The node's allocatable, in the container manager's units: `cpu` in
    /// millicores, everything else in whole units (bytes). A
    /// `resourceFieldRef` to an unset limit of `cpu`, `memory` or
    /// `ephemeral-storage` reads this instead.
    pub allocatable: BTreeMap<String, i64>,
    /// The service environment variables of the pod (upstream
    /// `getServiceEnvVarMap`, made by [`service_env_var_map`]).
    pub services: ServiceEnv,
}

/// The service environment variables a pod's containers get (upstream
/// `getServiceEnvVarMap`, `pkg/kubelet/kubelet_pods.go`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum ServiceEnv {
    /// No service lister: no variables (upstream: a kubelet without an
    /// API server, `serviceLister == nil`).
    #[default]
    None,
    /// The services have not been listed once yet: a pod from the API
    /// server cannot have its env made (upstream `serviceHasSynced`).
    NotSynced,
    /// The variables, in the order [`service_env_var_map`] made them.
    Vars(Vec<(String, String)>),
}

/// Why a container's environment cannot be made. The messages are
/// upstream's: they become the container's waiting message
/// (`CreateContainerConfigError`) and its `Failed` event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EnvError {
    /// The Secret does not exist and its reference is not optional.
    #[error("secret {name:?} not found")]
    SecretNotFound {
        /// The Secret's name.
        name: String,
    },
    /// The ConfigMap does not exist and its reference is not optional.
    #[error("configmap {name:?} not found")]
    ConfigMapNotFound {
        /// The ConfigMap's name.
        name: String,
    },
    /// The Secret has no such key and the reference is not optional.
    #[error("couldn't find key {key} in Secret {namespace}/{name}")]
    SecretKeyNotFound {
        /// The key.
        key: String,
        /// The Secret's namespace.
        namespace: String,
        /// The Secret's name.
        name: String,
    },
    /// The ConfigMap has no such key and the reference is not optional.
    #[error("couldn't find key {key} in ConfigMap {namespace}/{name}")]
    ConfigMapKeyNotFound {
        /// The key.
        key: String,
        /// The ConfigMap's namespace.
        namespace: String,
        /// The ConfigMap's name.
        name: String,
    },
    /// No API server to read the object from (a standalone kubelet).
    #[error("couldn't get {kind} {namespace}/{name}, no kubeClient defined")]
    NoApiServer {
        /// `secret` or `configMap`, as upstream spells it.
        kind: &'static str,
        /// The object's namespace.
        namespace: String,
        /// The object's name.
        name: String,
    },
    /// Reading the object failed (other than its absence).
    #[error("couldn't get {kind} {namespace}/{name}: {message}")]
    Fetch {
        /// `secret` or `configMap`.
        kind: &'static str,
        /// The object's namespace.
        namespace: String,
        /// The object's name.
        name: String,
        /// What went wrong.
        message: String,
    },
    /// A `fieldRef` the kubelet cannot resolve (upstream's
    /// `ConvertDownwardAPIFieldLabel` and `ExtractFieldPathAsString` errors).
    #[error("{0}")]
    FieldPath(String),
    /// A `resourceFieldRef` the kubelet cannot resolve.
    #[error("{0}")]
    Resource(String),
    /// The services have not been listed once yet (upstream
    /// `serviceHasSynced`).
    #[error("services have not yet been read at least once, cannot construct envvars")]
    ServicesNotSynced,
    /// `status.hostIP(s)` asked for, and the node's IPs are unknown
    /// (upstream `GetNodeHostIPs`).
    #[error("host IP unknown; known addresses: []")]
    HostIpUnknown,
}

/// The names of the Secrets and ConfigMaps that a pod's containers' env
/// refers to (`envFrom` and `valueFrom` of init, app and ephemeral
/// containers; upstream `VisitPodSecretNames` / `VisitPodConfigmapNames`
/// restricted to env).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EnvReferences {
    /// Secret names.
    pub secrets: BTreeSet<String>,
    /// ConfigMap names.
    pub config_maps: BTreeSet<String>,
}

impl EnvReferences {
    /// Whether the pod's env refers to no Secret or ConfigMap.
    pub fn is_empty(&self) -> bool {
        self.secrets.is_empty() && self.config_maps.is_empty()
    }
}

/// The Secrets and ConfigMaps `pod`'s env refers to.
pub fn env_references(pod: &Pod) -> EnvReferences {
    let mut refs = EnvReferences::default();
    let Some(spec) = pod.spec.as_ref() else {
        return refs;
    };
    let ephemeral = spec.ephemeral_containers.iter().flatten();
    let lists = spec
        .init_containers
        .iter()
        .flatten()
        .chain(&spec.containers)
        .map(|c| (c.env_from.as_deref(), c.env.as_deref()))
        .chain(ephemeral.map(|c| (c.env_from.as_deref(), c.env.as_deref())));
    for (env_from, env) in lists {
        for from in env_from.into_iter().flatten() {
            if let Some(s) = &from.secret_ref {
                refs.secrets.insert(s.name.clone());
            }
            if let Some(c) = &from.config_map_ref {
                refs.config_maps.insert(c.name.clone());
            }
        }
        for var in env.into_iter().flatten() {
            let Some(from) = &var.value_from else {
                continue;
            };
            if let Some(s) = &from.secret_key_ref {
                refs.secrets.insert(s.name.clone());
            }
            if let Some(c) = &from.config_map_key_ref {
                refs.config_maps.insert(c.name.clone());
            }
        }
    }
    refs.secrets.retain(|n| !n.is_empty());
    refs.config_maps.retain(|n| !n.is_empty());
    refs
}

/// The services whose variables every pod gets, from the `default`
/// namespace, whatever its `enableServiceLinks` (upstream `masterServices`).
pub const MASTER_SERVICES: &[&str] = &["kubernetes"];

/// Upstream `IsServiceIPSet`: a cluster IP that is neither empty nor
/// `None` (headless).
pub fn is_service_ip_set(service: &Service) -> bool {
    service
        .spec
        .as_ref()
        .and_then(|s| s.cluster_ip.as_deref())
        .is_some_and(|ip| !ip.is_empty() && ip != "None")
}

/// Upstream `getServiceEnvVarMap` (`pkg/kubelet/kubelet_pods.go`): the
/// variables of the master services of the `default` namespace (always),
/// and of the services of `namespace` when `enable_service_links`; a
/// service of `namespace` wins over a master service of the same name.
/// Services without a cluster IP are skipped. Upstream returns a map; here
/// the services are taken in name order and a later variable of the same
/// name replaces an earlier one in place.
pub fn service_env_var_map<'a>(
    services: impl IntoIterator<Item = &'a Service>,
    namespace: &str,
    enable_service_links: bool,
) -> Vec<(String, String)> {
    let mut by_name: BTreeMap<&str, &Service> = BTreeMap::new();
    for service in services {
        if !is_service_ip_set(service) {
            continue;
        }
        let Some(name) = service.metadata.name.as_deref() else {
            continue;
        };
        let ns = service.metadata.namespace.as_deref().unwrap_or_default();
        if ns == "default" && MASTER_SERVICES.contains(&name) {
            by_name.entry(name).or_insert(service);
        } else if ns == namespace && enable_service_links {
            by_name.insert(name, service);
        }
    }
    let mut vars: Vec<(String, String)> = Vec::new();
    let mut index: std::collections::HashMap<String, usize> = Default::default();
    for (name, value) in from_services(by_name.into_values()) {
        match index.get(&name) {
            Some(&i) => vars[i].1 = value,
            None => {
                index.insert(name.clone(), vars.len());
                vars.push((name, value));
            }
        }
    }
    vars
}

/// Upstream `envvars.FromServices` (`pkg/kubelet/envvars/envvars.go`): for
/// each service with a cluster IP, `{SVC}_SERVICE_HOST`,
/// `{SVC}_SERVICE_PORT` (the first port), `{SVC}_SERVICE_PORT_{NAME}` for
/// each named port, then the Docker link variables (`{SVC}_PORT` for the
/// first port, and `{SVC}_PORT_{port}_{PROTO}` with `_PROTO`, `_PORT` and
/// `_ADDR` for each), in that order.
pub fn from_services<'a>(services: impl IntoIterator<Item = &'a Service>) -> Vec<(String, String)> {
    let mut result = Vec::new();
    for service in services {
        if !is_service_ip_set(service) {
            continue;
        }
        let Some(spec) = service.spec.as_ref() else {
            continue;
        };
        let ip = spec.cluster_ip.as_deref().unwrap_or_default();
        let prefix = env_var_name(service.metadata.name.as_deref().unwrap_or_default());
        let ports = spec.ports.as_deref().unwrap_or_default();
        result.push((format!("{prefix}_SERVICE_HOST"), ip.to_owned()));
        // Validation gives a service with a cluster IP at least one port.
        let Some(first) = ports.first() else {
            continue;
        };
        let port_var = format!("{prefix}_SERVICE_PORT");
        result.push((port_var.clone(), first.port.to_string()));
        for port in ports {
            if let Some(name) = port.name.as_deref().filter(|n| !n.is_empty()) {
                result.push((
                    format!("{port_var}_{}", env_var_name(name)),
                    port.port.to_string(),
                ));
            }
        }
        // Docker-compatible link variables (upstream `makeLinkVariables`).
        for (i, port) in ports.iter().enumerate() {
            let protocol = port
                .protocol
                .as_deref()
                .filter(|p| !p.is_empty())
                .unwrap_or("TCP");
            let lower = protocol.to_lowercase();
            let url = format!("{lower}://{ip}:{}", port.port);
            if i == 0 {
                result.push((format!("{prefix}_PORT"), url.clone()));
            }
            let port_prefix = format!("{prefix}_PORT_{}_{}", port.port, protocol.to_uppercase());
            result.push((port_prefix.clone(), url));
            result.push((format!("{port_prefix}_PROTO"), lower));
            result.push((format!("{port_prefix}_PORT"), port.port.to_string()));
            result.push((format!("{port_prefix}_ADDR"), ip.to_owned()));
        }
    }
    result
}

/// Upstream `makeEnvVariableName`: upper case, `-` as `_` (upstream
/// leaves dots and leading digits as they are).
fn env_var_name(name: &str) -> String {
    name.replace('-', "_").to_uppercase()
}

/// Every Secret and ConfigMap `pod` refers to, as the kubelet's secret and
/// configMap managers register them (upstream `VisitPodSecretNames` and
/// `VisitPodConfigmapNames`, `pkg/api/v1/pod/util.go`): its
/// `imagePullSecrets`, its containers' env ([`env_references`]), and its
/// `secret`, `configMap`, `projected` and CSI (`nodePublishSecretRef`)
/// volumes. The legacy in-tree volume plugins' secret references are left
/// out: this kubelet does not run those plugins.
pub fn pod_object_references(pod: &Pod) -> EnvReferences {
    let mut refs = env_references(pod);
    let Some(spec) = pod.spec.as_ref() else {
        return refs;
    };
    for s in spec.image_pull_secrets.iter().flatten() {
        refs.secrets.insert(s.name.clone());
    }
    for volume in spec.volumes.iter().flatten() {
        if let Some(name) = volume.secret.as_ref().and_then(|s| s.secret_name.clone()) {
            refs.secrets.insert(name);
        }
        if let Some(c) = &volume.config_map {
            refs.config_maps.insert(c.name.clone());
        }
        if let Some(r) = volume
            .csi
            .as_ref()
            .and_then(|c| c.node_publish_secret_ref.as_ref())
        {
            refs.secrets.insert(r.name.clone());
        }
        for source in volume
            .projected
            .iter()
            .flat_map(|p| p.sources.iter().flatten())
        {
            if let Some(s) = &source.secret {
                refs.secrets.insert(s.name.clone());
            }
            if let Some(c) = &source.config_map {
                refs.config_maps.insert(c.name.clone());
            }
        }
    }
    refs.secrets.retain(|n| !n.is_empty());
    refs.config_maps.retain(|n| !n.is_empty());
    refs
}

/// Upstream `fieldpath.SplitMaybeSubscriptedPath`: `metadata.labels['k']`
/// is `("metadata.labels", "k")`.
pub fn split_maybe_subscripted_path(path: &str) -> Option<(&str, &str)> {
    let s = path.strip_suffix("']")?;
    let (head, key) = s.split_once("['")?;
    (!head.is_empty()).then_some((head, key))
}

/// Upstream `ConvertDownwardAPIFieldLabel` (`pkg/apis/core/pods/helpers.go`):
/// the pod field a downward API selector names, checked against the fields
/// a pod supports (`spec.host` is the old name of `spec.nodeName`). An
/// empty `api_version` is `v1`, as the API server defaults it.
pub fn convert_downward_api_field_label(
    api_version: &str,
    label: &str,
) -> Result<String, EnvError> {
    if !api_version.is_empty() && api_version != "v1" {
        return Err(EnvError::FieldPath(format!(
            "unsupported pod version: {api_version}"
        )));
    }
    if let Some((path, _)) = split_maybe_subscripted_path(label) {
        return match path {
            "metadata.annotations" | "metadata.labels" => Ok(label.to_owned()),
            _ => Err(EnvError::FieldPath(format!(
                "field label does not support subscript: {label}"
            ))),
        };
    }
    match label {
        "metadata.annotations"
        | "metadata.labels"
        | "metadata.name"
        | "metadata.namespace"
        | "metadata.uid"
        | "spec.nodeName"
        | "spec.restartPolicy"
        | "spec.serviceAccountName"
        | "spec.schedulerName"
        | "status.phase"
        | "status.hostIP"
        | "status.hostIPs"
        | "status.podIP"
        | "status.podIPs" => Ok(label.to_owned()),
        "spec.host" => Ok("spec.nodeName".into()),
        _ => Err(EnvError::FieldPath(format!(
            "field label not supported: {label}"
        ))),
    }
}

/// Upstream `fieldpath.FormatMap`: `key="value"` lines, sorted by key.
pub fn format_map(m: Option<&BTreeMap<String, String>>) -> String {
    m.into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={v:?}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Upstream `fieldpath.ExtractFieldPathAsString` on a pod: its name,
/// namespace, UID, labels and annotations (whole, as [`format_map`], or
/// one key by subscript; a missing key is empty).
pub fn extract_field_path_as_string(pod: &Pod, path: &str) -> Result<String, EnvError> {
    let m = &pod.metadata;
    if let Some((head, key)) = split_maybe_subscripted_path(path) {
        let map = match head {
            "metadata.annotations" => m.annotations.as_ref(),
            "metadata.labels" => m.labels.as_ref(),
            _ => {
                return Err(EnvError::FieldPath(format!(
                    "fieldPath {path:?} does not support subscript"
                )));
            }
        };
        return Ok(map.and_then(|m| m.get(key)).cloned().unwrap_or_default());
    }
    Ok(match path {
        "metadata.annotations" => format_map(m.annotations.as_ref()),
        "metadata.labels" => format_map(m.labels.as_ref()),
        "metadata.name" => m.name.clone().unwrap_or_default(),
        "metadata.namespace" => m.namespace.clone().unwrap_or_default(),
        "metadata.uid" => m.uid.clone().unwrap_or_default(),
        _ => {
            return Err(EnvError::FieldPath(format!(
                "unsupported fieldPath: {path}"
            )));
        }
    })
}

/// The resources whose unset (or zero) limit defaults to the node's
/// allocatable (upstream `MergeContainerResourceLimits`; hugepages never
/// do: they are never overcommitted).
const DEFAULTED_LIMITS: [&str; 3] = ["cpu", "memory", "ephemeral-storage"];

/// Upstream `containerResourceRuntimeValue`: the value of a
/// `resourceFieldRef` of `container` in `pod`, the limits of `cpu`,
/// `memory` and `ephemeral-storage` defaulted to `allocatable` (see
/// [`EnvSources::allocatable`]) where unset or zero. `containerName`, when
/// given, picks another container of the pod (app containers first, as
/// upstream's `findContainerInPod`; only app containers and `container`
/// itself get defaulted limits, as `defaultPodLimitsForDownwardAPI`).
///
/// The value is divided by the divisor (`1` when unset or zero) and
/// rounded up: CPU in millicores (`limits.cpu` of `250m` with divisor
/// `1m` is `250`, with the default divisor `1`), the others in whole
/// units.
pub fn container_resource_value(
    selector: &ResourceFieldSelector,
    pod: &Pod,
    container: &Container,
    allocatable: &BTreeMap<String, i64>,
) -> Result<String, EnvError> {
    let (target, defaulted) = match selector.container_name.as_deref() {
        None | Some("") => (container, true),
        Some(name) => {
            let spec = pod.spec.as_ref();
            let app = spec.and_then(|s| s.containers.iter().find(|c| c.name == name));
            let init =
                spec.and_then(|s| s.init_containers.iter().flatten().find(|c| c.name == name));
            match (app, init) {
                (Some(c), _) => (c, true),
                (None, Some(c)) => (c, c.name == container.name),
                (None, None) => {
                    return Err(EnvError::Resource(format!("container {name} not found")));
                }
            }
        }
    };
    let allocatable = if defaulted {
        allocatable
    } else {
        &BTreeMap::new()
    };
    let res = target.resources.as_ref();
    let bad = |what: &str, e: crate::Error| EnvError::Resource(format!("{what}: {e}"));
    let divisor = match selector.divisor.as_ref().map(|q| q.0.as_str()) {
        Some(d) if quantity::milli_value(d).map_err(|e| bad("divisor", e))? != 0 => d,
        _ => "1",
    };
    let Some((kind, name)) = selector.resource.split_once('.') else {
        return Err(unsupported(&selector.resource));
    };
    let list = match kind {
        "limits" => res.and_then(|r| r.limits.as_ref()),
        "requests" => res.and_then(|r| r.requests.as_ref()),
        _ => return Err(unsupported(&selector.resource)),
    };
    let supported =
        matches!(name, "cpu" | "memory" | "ephemeral-storage") || name.starts_with("hugepages-");
    if !supported {
        return Err(unsupported(&selector.resource));
    }
    let set = list.and_then(|l| l.get(name)).map(|q| q.0.as_str());
    let is_cpu = name == "cpu";
    let parse = |text: &str| {
        if is_cpu {
            quantity::milli_value(text)
        } else {
            quantity::value(text)
        }
    };
    let value = match set {
        Some(q) => parse(q).map_err(|e| bad(&selector.resource, e))?,
        None => 0,
    };
    let value = if kind == "limits" && value == 0 && DEFAULTED_LIMITS.contains(&name) {
        allocatable.get(name).copied().unwrap_or(0)
    } else {
        value
    };
    let d = parse(divisor).map_err(|e| bad("divisor", e))?;
    if d <= 0 {
        return Err(EnvError::Resource(format!(
            "divisor {divisor} of {} is not positive",
            selector.resource
        )));
    }
    // Upstream: math.Ceil(float64(value) / float64(divisor)).
    let (v, d) = (i128::from(value), i128::from(d));
    let ceil = if v >= 0 { (v + d - 1) / d } else { v / d };
    Ok(ceil.to_string())
}

fn unsupported(resource: &str) -> EnvError {
    EnvError::Resource(format!("unsupported container resource : {resource}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(namespace: &str, name: &str, ip: &str, ports: serde_json::Value) -> Service {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"selector": {"bar": "baz"}, "clusterIP": ip, "ports": ports}
        }))
        .expect("service")
    }

    /// Upstream `envvars_test.go` `TestFromServices`.
    #[test]
    fn from_services_makes_upstreams_variables() {
        let sl = [
            service(
                "",
                "foo-bar",
                "1.2.3.4",
                serde_json::json!([{"port": 8080, "protocol": "TCP"}]),
            ),
            service(
                "",
                "abc-123",
                "5.6.7.8",
                serde_json::json!([
                {"name": "u-d-p", "port": 8081, "protocol": "UDP"},
                {"name": "t-c-p", "port": 8081, "protocol": "TCP"}]),
            ),
            service(
                "",
                "q-u-u-x",
                "9.8.7.6",
                serde_json::json!([
                {"port": 8082, "protocol": "TCP"},
                {"name": "8083", "port": 8083, "protocol": "TCP"}]),
            ),
            service(
                "",
                "svrc-clusterip-none",
                "None",
                serde_json::json!([{"port": 8082, "protocol": "TCP"}]),
            ),
            service(
                "",
                "svrc-clusterip-empty",
                "",
                serde_json::json!([{"port": 8082, "protocol": "TCP"}]),
            ),
        ];
        let expected = [
            ("FOO_BAR_SERVICE_HOST", "1.2.3.4"),
            ("FOO_BAR_SERVICE_PORT", "8080"),
            ("FOO_BAR_PORT", "tcp://1.2.3.4:8080"),
            ("FOO_BAR_PORT_8080_TCP", "tcp://1.2.3.4:8080"),
            ("FOO_BAR_PORT_8080_TCP_PROTO", "tcp"),
            ("FOO_BAR_PORT_8080_TCP_PORT", "8080"),
            ("FOO_BAR_PORT_8080_TCP_ADDR", "1.2.3.4"),
            ("ABC_123_SERVICE_HOST", "5.6.7.8"),
            ("ABC_123_SERVICE_PORT", "8081"),
            ("ABC_123_SERVICE_PORT_U_D_P", "8081"),
            ("ABC_123_SERVICE_PORT_T_C_P", "8081"),
            ("ABC_123_PORT", "udp://5.6.7.8:8081"),
            ("ABC_123_PORT_8081_UDP", "udp://5.6.7.8:8081"),
            ("ABC_123_PORT_8081_UDP_PROTO", "udp"),
            ("ABC_123_PORT_8081_UDP_PORT", "8081"),
            ("ABC_123_PORT_8081_UDP_ADDR", "5.6.7.8"),
            ("ABC_123_PORT_8081_TCP", "tcp://5.6.7.8:8081"),
            ("ABC_123_PORT_8081_TCP_PROTO", "tcp"),
            ("ABC_123_PORT_8081_TCP_PORT", "8081"),
            ("ABC_123_PORT_8081_TCP_ADDR", "5.6.7.8"),
            ("Q_U_U_X_SERVICE_HOST", "9.8.7.6"),
            ("Q_U_U_X_SERVICE_PORT", "8082"),
            ("Q_U_U_X_SERVICE_PORT_8083", "8083"),
            ("Q_U_U_X_PORT", "tcp://9.8.7.6:8082"),
            ("Q_U_U_X_PORT_8082_TCP", "tcp://9.8.7.6:8082"),
            ("Q_U_U_X_PORT_8082_TCP_PROTO", "tcp"),
            ("Q_U_U_X_PORT_8082_TCP_PORT", "8082"),
            ("Q_U_U_X_PORT_8082_TCP_ADDR", "9.8.7.6"),
            ("Q_U_U_X_PORT_8083_TCP", "tcp://9.8.7.6:8083"),
            ("Q_U_U_X_PORT_8083_TCP_PROTO", "tcp"),
            ("Q_U_U_X_PORT_8083_TCP_PORT", "8083"),
            ("Q_U_U_X_PORT_8083_TCP_ADDR", "9.8.7.6"),
        ]
        .map(|(n, v)| (n.to_owned(), v.to_owned()));
        assert_eq!(from_services(&sl), expected);
        // No protocol is TCP.
        let plain = service("", "plain", "10.0.0.1", serde_json::json!([{"port": 80}]));
        assert_eq!(
            from_services([&plain])[..3],
            [
                ("PLAIN_SERVICE_HOST".to_owned(), "10.0.0.1".to_owned()),
                ("PLAIN_SERVICE_PORT".to_owned(), "80".to_owned()),
                ("PLAIN_PORT".to_owned(), "tcp://10.0.0.1:80".to_owned()),
            ]
        );
    }

    #[test]
    fn pod_object_references_cover_env_volumes_and_pull_secrets() {
        let p = pod(serde_json::json!({
            "metadata": {"name": "p"},
            "spec": {
                "imagePullSecrets": [{"name": "regcred"}, {"name": ""}],
                "containers": [{"name": "c", "envFrom": [{"configMapRef": {"name": "env-cm"}}]}],
                "initContainers": [{"name": "i", "env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "init-s", "key": "k"}}}]}],
                "volumes": [
                    {"name": "a", "secret": {"secretName": "vol-s"}},
                    {"name": "b", "configMap": {"name": "vol-cm"}},
                    {"name": "c", "projected": {"sources": [
                        {"secret": {"name": "proj-s"}}, {"configMap": {"name": "proj-cm"}},
                        {"serviceAccountToken": {"path": "t"}}]}},
                    {"name": "d", "csi": {"driver": "x", "nodePublishSecretRef": {"name": "csi-s"}}},
                    {"name": "e", "emptyDir": {}}
                ]
            }
        }));
        let refs = pod_object_references(&p);
        assert_eq!(
            refs.secrets.iter().map(String::as_str).collect::<Vec<_>>(),
            ["csi-s", "init-s", "proj-s", "regcred", "vol-s"]
        );
        assert_eq!(
            refs.config_maps
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>(),
            ["env-cm", "proj-cm", "vol-cm"]
        );
    }

    /// Upstream `kubelet_pods_test.go` `TestMakeEnvironmentVariables`'s
    /// service cases: the namespace's services with service links, the
    /// master services always, a namespace's own `kubernetes` winning.
    #[test]
    fn the_service_map_takes_the_namespace_and_the_master_services() {
        let tcp =
            |port: i32| serde_json::json!([{"name": "https", "port": port, "protocol": "TCP"}]);
        let services = [
            service("default", "kubernetes", "1.2.3.1", tcp(443)),
            service("test1", "test", "1.2.3.3", tcp(8083)),
            service("test2", "test", "1.2.3.4", tcp(8084)),
            service("test1", "headless", "None", tcp(80)),
            service("kubernetes", "kubernetes", "1.2.3.6", tcp(8086)),
            service("default", "not-special", "1.2.3.8", tcp(8088)),
        ];
        let names = |vars: &[(String, String)]| -> Vec<String> {
            vars.iter()
                .filter(|(n, _)| n.ends_with("_SERVICE_HOST"))
                .map(|(n, v)| format!("{n}={v}"))
                .collect()
        };
        let with_links = service_env_var_map(&services, "test1", true);
        assert_eq!(
            names(&with_links),
            [
                "KUBERNETES_SERVICE_HOST=1.2.3.1",
                "TEST_SERVICE_HOST=1.2.3.3"
            ]
        );
        assert!(with_links.contains(&("TEST_PORT_8083_TCP_ADDR".into(), "1.2.3.3".into())));
        assert_eq!(
            names(&service_env_var_map(&services, "test1", false)),
            ["KUBERNETES_SERVICE_HOST=1.2.3.1"]
        );
        // The namespace `kubernetes` has its own `kubernetes` service: it
        // wins over the master one.
        assert_eq!(
            names(&service_env_var_map(&services, "kubernetes", true)),
            ["KUBERNETES_SERVICE_HOST=1.2.3.6"]
        );
        // Pods of `default` see all its services with links.
        assert_eq!(
            names(&service_env_var_map(&services, "default", true)),
            [
                "KUBERNETES_SERVICE_HOST=1.2.3.1",
                "NOT_SPECIAL_SERVICE_HOST=1.2.3.8"
            ]
        );
        // Two services making one variable: service `b`'s port variable
        // `B_PORT_1_TCP_PORT` is also `b-port-1-tcp`'s link variable; the
        // later service by name wins, and the name appears once.
        let clash = [
            service("ns", "b-port-1-tcp", "10.0.0.3", tcp(3)),
            service("ns", "b", "10.0.0.1", tcp(1)),
        ];
        let vars = service_env_var_map(&clash, "ns", true);
        let found: Vec<_> = vars
            .iter()
            .filter(|(n, _)| n == "B_PORT_1_TCP_PORT")
            .collect();
        assert_eq!(
            found,
            [&(
                "B_PORT_1_TCP_PORT".to_owned(),
                "tcp://10.0.0.3:3".to_owned()
            )]
        );
    }

    fn pod(value: serde_json::Value) -> Pod {
        serde_json::from_value(value).expect("pod")
    }

    fn selector(
        resource: &str,
        divisor: Option<&str>,
        container: Option<&str>,
    ) -> ResourceFieldSelector {
        ResourceFieldSelector {
            resource: resource.into(),
            divisor: divisor
                .map(|d| k8s_openapi::apimachinery::pkg::api::resource::Quantity(d.into())),
            container_name: container.map(Into::into),
        }
    }

    #[test]
    fn field_labels_are_checked_as_upstream() {
        let ok = |l: &str| convert_downward_api_field_label("v1", l);
        assert_eq!(ok("metadata.name").as_deref(), Ok("metadata.name"));
        assert_eq!(ok("spec.host").as_deref(), Ok("spec.nodeName"));
        assert_eq!(
            ok("metadata.labels['app']").as_deref(),
            Ok("metadata.labels['app']")
        );
        assert_eq!(
            convert_downward_api_field_label("", "status.hostIPs").as_deref(),
            Ok("status.hostIPs")
        );
        assert_eq!(
            ok("spec.containers").unwrap_err().to_string(),
            "field label not supported: spec.containers"
        );
        assert_eq!(
            ok("metadata.name['x']").unwrap_err().to_string(),
            "field label does not support subscript: metadata.name['x']"
        );
        assert_eq!(
            convert_downward_api_field_label("v2", "metadata.name")
                .unwrap_err()
                .to_string(),
            "unsupported pod version: v2"
        );
    }

    #[test]
    fn field_paths_extract_as_upstream() {
        let p = pod(serde_json::json!({
            "metadata": {"name": "web", "namespace": "ns", "uid": "u-1",
                "labels": {"b": "2", "a": "x\"y"},
                "annotations": {"note": "hi"}},
        }));
        let get = |path: &str| extract_field_path_as_string(&p, path);
        assert_eq!(get("metadata.name").as_deref(), Ok("web"));
        assert_eq!(get("metadata.namespace").as_deref(), Ok("ns"));
        assert_eq!(get("metadata.uid").as_deref(), Ok("u-1"));
        assert_eq!(get("metadata.labels['b']").as_deref(), Ok("2"));
        assert_eq!(get("metadata.labels['missing']").as_deref(), Ok(""));
        assert_eq!(get("metadata.annotations['note']").as_deref(), Ok("hi"));
        assert_eq!(
            get("metadata.labels").as_deref(),
            Ok("a=\"x\\\"y\"\nb=\"2\"")
        );
        assert_eq!(
            get("spec.restartPolicy").unwrap_err().to_string(),
            "unsupported fieldPath: spec.restartPolicy"
        );
    }

    #[test]
    fn resource_values_follow_upstream_with_allocatable_defaults() {
        let p = pod(serde_json::json!({
            "metadata": {"name": "web"},
            "spec": {
                "initContainers": [{"name": "init", "resources": {"limits": {"cpu": "2"}}}],
                "containers": [
                    {"name": "app", "resources": {
                        "limits": {"cpu": "250m", "memory": "64Mi", "hugepages-2Mi": "4Mi"},
                        "requests": {"cpu": "100m", "memory": "32Mi", "ephemeral-storage": "1Gi"}}},
                    {"name": "free"}
                ]
            }
        }));
        let spec = p.spec.as_ref().expect("spec");
        let (app, free) = (&spec.containers[0], &spec.containers[1]);
        let init = &spec.init_containers.as_ref().expect("init")[0];
        let alloc: BTreeMap<String, i64> = [
            ("cpu".to_owned(), 3500),
            ("memory".to_owned(), 8 << 30),
            ("ephemeral-storage".to_owned(), 100 << 30),
        ]
        .into();
        let v = |c: &Container, r: &str, d: Option<&str>, n: Option<&str>| {
            container_resource_value(&selector(r, d, n), &p, c, &alloc)
        };
        // (container, resource, divisor, containerName, value)
        type Case<'a> = (
            &'a Container,
            &'a str,
            Option<&'a str>,
            Option<&'a str>,
            &'a str,
        );
        let cases: &[Case] = &[
            // Rounded up to whole cores by default.
            (app, "limits.cpu", None, None, "1"),
            (app, "limits.cpu", Some("1m"), None, "250"),
            (app, "limits.cpu", Some("0"), None, "1"),
            (app, "requests.cpu", Some("1m"), None, "100"),
            (app, "limits.memory", None, None, "67108864"),
            (app, "limits.memory", Some("1Mi"), None, "64"),
            (app, "requests.memory", Some("1Mi"), None, "32"),
            (app, "requests.ephemeral-storage", Some("1Mi"), None, "1024"),
            (app, "limits.hugepages-2Mi", Some("1Mi"), None, "4"),
            // Unset limits read the node's allocatable.
            (app, "limits.ephemeral-storage", Some("1Gi"), None, "100"),
            (free, "limits.cpu", Some("1m"), None, "3500"),
            (free, "limits.cpu", None, None, "4"),
            (free, "limits.memory", Some("1Gi"), None, "8"),
            // Unset requests are zero.
            (free, "requests.cpu", None, None, "0"),
            (free, "requests.memory", None, None, "0"),
            // Another container by name.
            (free, "limits.memory", Some("1Mi"), Some("app"), "64"),
            (app, "limits.cpu", Some("1m"), Some("free"), "3500"),
            (app, "limits.cpu", Some("1m"), Some("init"), "2000"),
            (init, "limits.memory", None, None, "8589934592"),
        ];
        for (c, r, d, n, want) in cases {
            assert_eq!(
                v(c, r, *d, *n).as_deref(),
                Ok(*want),
                "{} {r} divisor {d:?} container {n:?}",
                c.name
            );
        }
        // An init container named by another one gets no defaults.
        let init_mem = container_resource_value(
            &selector("limits.memory", None, Some("init")),
            &p,
            app,
            &alloc,
        );
        assert_eq!(init_mem.as_deref(), Ok("0"));
        assert_eq!(
            v(app, "limits.nvidia.com/gpu", None, None)
                .unwrap_err()
                .to_string(),
            "unsupported container resource : limits.nvidia.com/gpu"
        );
        assert_eq!(
            v(app, "limits.cpu", None, Some("nope"))
                .unwrap_err()
                .to_string(),
            "container nope not found"
        );
    }

    #[test]
    fn references_cover_every_container_and_source() {
        let p = pod(serde_json::json!({
            "metadata": {"name": "web"},
            "spec": {
                "initContainers": [{"name": "i", "envFrom": [{"secretRef": {"name": "s-init"}}]}],
                "containers": [{"name": "c",
                    "envFrom": [{"configMapRef": {"name": "cm-all"}, "prefix": "P_"}],
                    "env": [
                        {"name": "A", "valueFrom": {"secretKeyRef": {"name": "s-key", "key": "k"}}},
                        {"name": "B", "valueFrom": {"configMapKeyRef": {"name": "cm-key", "key": "k"}}},
                        {"name": "C", "value": "x"}
                    ]}],
                "ephemeralContainers": [{"name": "e", "env": [
                    {"name": "D", "valueFrom": {"secretKeyRef": {"name": "s-eph", "key": "k"}}}]}]
            }
        }));
        let refs = env_references(&p);
        assert_eq!(
            refs.secrets.iter().map(String::as_str).collect::<Vec<_>>(),
            ["s-eph", "s-init", "s-key"]
        );
        assert_eq!(
            refs.config_maps
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>(),
            ["cm-all", "cm-key"]
        );
        assert!(env_references(&pod(serde_json::json!({"metadata": {}}))).is_empty());
    }

    #[test]
    fn errors_print_upstream_messages() {
        let cases = [
            (
                EnvError::SecretNotFound { name: "x".into() },
                r#"secret "x" not found"#,
            ),
            (
                EnvError::ConfigMapNotFound { name: "x".into() },
                r#"configmap "x" not found"#,
            ),
            (
                EnvError::SecretKeyNotFound {
                    key: "k".into(),
                    namespace: "ns".into(),
                    name: "x".into(),
                },
                "couldn't find key k in Secret ns/x",
            ),
            (
                EnvError::ConfigMapKeyNotFound {
                    key: "k".into(),
                    namespace: "ns".into(),
                    name: "x".into(),
                },
                "couldn't find key k in ConfigMap ns/x",
            ),
            (
                EnvError::NoApiServer {
                    kind: "secret",
                    namespace: "ns".into(),
                    name: "x".into(),
                },
                "couldn't get secret ns/x, no kubeClient defined",
            ),
        ];
        for (e, want) in cases {
            assert_eq!(e.to_string(), want);
        }
    }
}
