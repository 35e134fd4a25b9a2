//! Pod sandbox and container configs for the CRI, from a pod spec.
//!
//! Mirrors upstream `generatePodSandboxConfig`
//! (`pkg/kubelet/kuberuntime/kuberuntime_sandbox.go`) and
//! `generateContainerConfig` (`kuberuntime_container.go`,
//! `kuberuntime_container_linux.go`).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{Container, Pod};
use std::sync::Arc;

use kubelet_container::ContainerResources;
use kubelet_container::env::{
    EnvError, EnvSources, Lookup, ServiceEnv, container_resource_value,
    convert_downward_api_field_label, extract_field_path_as_string,
};
use kubelet_cri_client::api;

use crate::Error;
use crate::labels::{
    ContainerType, new_container_annotations, new_container_labels, new_pod_annotations,
    new_pod_labels,
};

/// Node-wide settings the configs depend on.
#[derive(Clone)]
pub struct ConfigOptions {
    /// Where pod logs go (upstream `podLogsDir`, default `/var/log/pods`).
    pub pod_logs_dir: PathBuf,
    /// The node's name, for the downward API.
    pub node_name: String,
    /// The cluster's DNS domain (upstream `clusterDomain`), for the hostname
    /// entry of the managed `/etc/hosts` and the search path of
    /// cluster-first pods ([`crate::dns`]).
    pub cluster_domain: String,
    /// The cluster's DNS servers (upstream `clusterDNS`): the only
    /// nameservers of cluster-first pods. Empty: such pods fall back to the
    /// `Default` policy, with a `MissingClusterDNS` warning.
    pub cluster_dns: Vec<std::net::IpAddr>,
    /// The host's resolver file (upstream `resolvConf`, default
    /// `/etc/resolv.conf`), the base of `Default` pods' DNS and the search
    /// path cluster-first pods inherit; `None` for `resolvConf: ""`.
    pub resolv_conf: Option<PathBuf>,
    /// The node's configured addresses (`--node-ip`; may be empty): with
    /// `resolv_conf: None`, host DNS is `127.0.0.1` or `::1` per family.
    pub node_ips: Vec<std::net::IpAddr>,
    /// Decides the pod's cgroup parent and each container's resources (with
    /// the CPU and memory managers' cpusets): the container manager of
    /// `kubelet-cm`, or its `StaticResources` without those managers.
    pub container_manager: Arc<dyn ContainerResources>,
}

impl ConfigOptions {
    /// Upstream's defaults (`/var/log/pods`, `cluster.local`, no cluster
    /// DNS, `/etc/resolv.conf`), with `container_manager` placing and
    /// sizing the containers.
    pub fn new(container_manager: Arc<dyn ContainerResources>) -> Self {
        Self {
            pod_logs_dir: PathBuf::from("/var/log/pods"),
            node_name: String::new(),
            cluster_domain: "cluster.local".into(),
            cluster_dns: Vec::new(),
            resolv_conf: Some(PathBuf::from(crate::dns::DEFAULT_RESOLV_CONF)),
            node_ips: Vec::new(),
            container_manager,
        }
    }

    /// The pods' DNS configurer for these options (upstream
    /// `dns.NewConfigurer` in `NewMainKubelet`), recording its events
    /// through `recorder` (node events about the node `node_name`).
    pub fn dns_configurer(
        &self,
        recorder: Arc<dyn kubelet_container::events::EventRecorder>,
    ) -> crate::dns::Configurer {
        crate::dns::Configurer::new(
            recorder,
            kubelet_container::events::node_ref(&self.node_name),
            self.node_ips.clone(),
            self.cluster_dns.clone(),
            self.cluster_domain.clone(),
            self.resolv_conf.clone(),
        )
    }
}

impl std::fmt::Debug for ConfigOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfigOptions")
            .field("pod_logs_dir", &self.pod_logs_dir)
            .field("node_name", &self.node_name)
            .field("cluster_domain", &self.cluster_domain)
            .field("cluster_dns", &self.cluster_dns)
            .field("resolv_conf", &self.resolv_conf)
            .field("node_ips", &self.node_ips)
            .finish_non_exhaustive()
    }
}

/// Every init and app container of the pod.
pub(crate) fn all_containers(pod: &Pod) -> impl Iterator<Item = &Container> {
    pod.spec.iter().flat_map(|s| {
        s.containers
            .iter()
            .chain(s.init_containers.iter().flatten())
    })
}

/// The pod's supplemental groups: the spec's plus `fsGroup`.
fn supplemental_groups(
    pod_sc: Option<&k8s_openapi::api::core::v1::PodSecurityContext>,
) -> Vec<i64> {
    pod_sc
        .and_then(|s| s.supplemental_groups.clone())
        .unwrap_or_default()
        .into_iter()
        .chain(pod_sc.and_then(|s| s.fs_group))
        .collect()
}

fn meta(pod: &Pod) -> (&str, &str, &str) {
    let m = &pod.metadata;
    (
        m.name.as_deref().unwrap_or_default(),
        m.namespace.as_deref().unwrap_or("default"),
        m.uid.as_deref().unwrap_or_default(),
    )
}

/// The pod's log directory: `<podLogsDir>/<namespace>_<name>_<uid>`
/// (upstream `BuildPodLogsDirectory`).
pub fn pod_log_dir(logs_dir: &Path, pod: &Pod) -> PathBuf {
    let (name, namespace, uid) = meta(pod);
    logs_dir.join(format!("{namespace}_{name}_{uid}"))
}

/// The pod's cgroup, spelled for the runtime (the container manager's
/// choice).
pub fn pod_cgroup_parent(opts: &ConfigOptions, pod: &Pod) -> String {
    opts.container_manager.pod_cgroup_parent(pod)
}

fn namespace_options(pod: &Pod) -> api::NamespaceOption {
    let spec = pod.spec.as_ref();
    let mode = |host: bool| {
        if host {
            api::NamespaceMode::Node as i32
        } else {
            api::NamespaceMode::Pod as i32
        }
    };
    let share_pid = spec
        .and_then(|s| s.share_process_namespace)
        .unwrap_or(false);
    api::NamespaceOption {
        network: mode(spec.and_then(|s| s.host_network).unwrap_or(false)),
        pid: if spec.and_then(|s| s.host_pid).unwrap_or(false) {
            api::NamespaceMode::Node as i32
        } else if share_pid {
            api::NamespaceMode::Pod as i32
        } else {
            api::NamespaceMode::Container as i32
        },
        ipc: mode(spec.and_then(|s| s.host_ipc).unwrap_or(false)),
        ..Default::default()
    }
}

/// The sandbox config for `pod` (upstream `generatePodSandboxConfig`),
/// its `dns_config` from `dns` (upstream `runtimeHelper.GetPodDNS`), for
/// every pod, host-network ones included.
pub fn pod_sandbox_config(
    pod: &Pod,
    attempt: u32,
    opts: &ConfigOptions,
    dns: &crate::dns::Configurer,
) -> Result<api::PodSandboxConfig, Error> {
    let (name, namespace, uid) = meta(pod);
    if name.is_empty() || uid.is_empty() {
        return Err(Error::InvalidPod {
            pod: crate::pod_name(pod),
            reason: "a pod needs a name and a UID".into(),
        });
    }
    let dns_config = dns.get_pod_dns(pod).map_err(|source| Error::Dns {
        pod: crate::pod_name(pod),
        source,
    })?;
    let spec = pod.spec.as_ref();
    let host_network = spec.and_then(|s| s.host_network).unwrap_or(false);
    // Upstream GeneratePodHostNameAndDomain: spec.hostname or the pod name,
    // truncated to 63 characters.
    let hostname: String = spec
        .and_then(|s| s.hostname.clone())
        .unwrap_or_else(|| name.to_owned())
        .chars()
        .take(63)
        .collect();
    let mut port_mappings = Vec::new();
    for c in spec.map(|s| s.containers.as_slice()).unwrap_or_default() {
        for p in c.ports.iter().flatten() {
            let protocol = match p.protocol.as_deref() {
                Some("UDP") => api::Protocol::Udp,
                Some("SCTP") => api::Protocol::Sctp,
                _ => api::Protocol::Tcp,
            };
            port_mappings.push(api::PortMapping {
                protocol: protocol as i32,
                container_port: p.container_port,
                host_port: p.host_port.unwrap_or(0),
                host_ip: p.host_ip.clone().unwrap_or_default(),
            });
        }
    }
    let sysctls = spec
        .and_then(|s| s.security_context.as_ref())
        .and_then(|sc| sc.sysctls.as_ref())
        .map(|list| {
            list.iter()
                .map(|s| (s.name.clone(), s.value.clone()))
                .collect()
        })
        .unwrap_or_default();
    let pod_sc = spec.and_then(|s| s.security_context.as_ref());
    let privileged = all_containers(pod).any(|c| {
        c.security_context
            .as_ref()
            .and_then(|sc| sc.privileged)
            .unwrap_or(false)
    });
    Ok(api::PodSandboxConfig {
        metadata: Some(api::PodSandboxMetadata {
            name: name.into(),
            namespace: namespace.into(),
            uid: uid.into(),
            attempt,
        }),
        hostname: if host_network {
            String::new()
        } else {
            hostname
        },
        log_directory: pod_log_dir(&opts.pod_logs_dir, pod).display().to_string(),
        dns_config: Some(dns_config),
        port_mappings,
        labels: new_pod_labels(pod),
        annotations: new_pod_annotations(pod),
        linux: Some(api::LinuxPodSandboxConfig {
            cgroup_parent: pod_cgroup_parent(opts, pod),
            security_context: Some(api::LinuxSandboxSecurityContext {
                namespace_options: Some(namespace_options(pod)),
                privileged,
                run_as_user: pod_sc
                    .and_then(|s| s.run_as_user)
                    .map(|value| api::Int64Value { value }),
                run_as_group: pod_sc
                    .and_then(|s| s.run_as_group)
                    .map(|value| api::Int64Value { value }),
                supplemental_groups: supplemental_groups(pod_sc),
                seccomp: Some(api::SecurityProfile {
                    profile_type: api::security_profile::ProfileType::RuntimeDefault as i32,
                    localhost_ref: String::new(),
                }),
                ..Default::default()
            }),
            sysctls,
            ..Default::default()
        }),
        ..Default::default()
    })
}

/// Expands `$(VAR)` references from `env`; `$$` escapes a `$`, and an
/// unknown reference stays as written (upstream `expansion.Expand`).
pub fn expand(input: &str, env: &HashMap<String, String>) -> String {
    expand_with(input, |name| env.get(name).map(String::as_str))
}

/// A `subPathExpr` expanded from the container's environment (upstream
/// `ExpandContainerVolumeMounts`, `pkg/kubelet/container/helpers.go`): a
/// reference to a variable that is unset or empty is an error naming them.
pub fn expand_sub_path_expr(expr: &str, env: &HashMap<String, String>) -> Result<String, String> {
    let mut missing = std::collections::BTreeSet::new();
    let expanded = expand_with(expr, |name| match env.get(name) {
        Some(v) if !v.is_empty() => Some(v.as_str()),
        _ => {
            missing.insert(name.to_owned());
            Some("")
        }
    });
    if missing.is_empty() {
        Ok(expanded)
    } else {
        let names: Vec<String> = missing.into_iter().collect();
        Err(format!("missing value for {}", names.join(", ")))
    }
}

/// [`expand`] with `lookup` for the values; `None` keeps `$(name)`.
fn expand_with<'a>(input: &str, mut lookup: impl FnMut(&str) -> Option<&'a str>) -> String {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(body) = after.strip_prefix('(') {
            match body.find(')') {
                Some(end) => {
                    let name = &body[..end];
                    match lookup(name) {
                        Some(v) => out.push_str(v),
                        None => {
                            out.push_str("$(");
                            out.push_str(name);
                            out.push(')');
                        }
                    }
                    rest = &body[end + 1..];
                }
                None => {
                    out.push_str("$(");
                    rest = body;
                }
            }
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// The object `name` of `kind` among those the agent fetched before the
/// sync: `Ok(None)` when the API server has none; an error when there is
/// no API server (`objects` is `None`), or the fetch failed or was not made.
fn fetched<'a, T>(
    objects: Option<&'a BTreeMap<String, Lookup<T>>>,
    kind: &'static str,
    namespace: &str,
    name: &str,
) -> Result<Option<&'a T>, EnvError> {
    let Some(objects) = objects else {
        return Err(EnvError::NoApiServer {
            kind,
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        });
    };
    let failed = |message: String| EnvError::Fetch {
        kind,
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        message,
    };
    match objects.get(name) {
        Some(Lookup::Found(data)) => Ok(Some(data)),
        Some(Lookup::NotFound) => Ok(None),
        Some(Lookup::Failed(message)) => Err(failed(message.clone())),
        None => Err(failed("not fetched before the sync".into())),
    }
}

/// The container's environment, as upstream `makeEnvironmentVariables`
/// (`pkg/kubelet/kubelet_pods.go`) makes it:
///
/// 1. `envFrom` first, in order: every key of the ConfigMap's `data` or the
///    Secret's `data`, with `prefix` prepended. Keys are taken as they are
///    (upstream no longer drops keys that are not C identifiers; the API
///    server already checked them). A missing object is skipped when the
///    reference is `optional`.
/// 2. then `env`, in order, a later variable replacing an earlier one of
///    the same name (so `env` wins over `envFrom`): a non-empty `value` with
///    its `$(VAR)` references expanded from the variables set so far; else
///    its `valueFrom` — `fieldRef` (`metadata.name`, `namespace`, `uid`,
///    `labels['k']`, `annotations['k']`, `spec.nodeName`,
///    `spec.serviceAccountName`, `status.hostIP(s)`, `status.podIP(s)`),
///    `resourceFieldRef` (limits defaulted to the node's allocatable),
///    `secretKeyRef` or `configMapKeyRef`; an `optional` reference to a
///    missing object or key leaves the variable out.
///
/// 3. then the service variables of `sources.services` (upstream
///    `getServiceEnvVarMap`) whose names the container does not set: the
///    pod's own env wins. `$(VAR)` in step 2 also reads them. While the
///    services have not been listed once, the env cannot be made
///    ([`EnvError::ServicesNotSynced`]).
///
/// The result keeps the order in which names were first set (upstream
/// returns them in map order). Secrets and ConfigMaps come from
/// `sources.objects`; without an API server (`None`) any reference to one
/// is an error, as upstream without a `kubeClient`. The error is the
/// container's: its message is upstream's.
pub fn container_env(
    pod: &Pod,
    container: &Container,
    pod_ips: &[String],
    sources: &EnvSources,
    opts: &ConfigOptions,
) -> Result<Vec<(String, String)>, EnvError> {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let service_env: &[(String, String)] = match &sources.services {
        ServiceEnv::None => &[],
        ServiceEnv::NotSynced => return Err(EnvError::ServicesNotSynced),
        ServiceEnv::Vars(vars) => vars,
    };
    let mut env = OrderedEnv::default();
    let objects = sources.objects.as_ref();
    let secret = |name: &str| fetched(objects.map(|o| &o.secrets), "secret", namespace, name);
    let config_map = |name: &str| {
        fetched(
            objects.map(|o| &o.config_maps),
            "configMap",
            namespace,
            name,
        )
    };
    for from in container.env_from.iter().flatten() {
        let prefix = from.prefix.as_deref().unwrap_or_default();
        if let Some(r) = &from.config_map_ref {
            match config_map(&r.name)? {
                Some(data) => {
                    for (k, v) in data {
                        env.set(format!("{prefix}{k}"), v.clone());
                    }
                }
                None if r.optional.unwrap_or(false) => {}
                None => {
                    return Err(EnvError::ConfigMapNotFound {
                        name: r.name.clone(),
                    });
                }
            }
        } else if let Some(r) = &from.secret_ref {
            match secret(&r.name)? {
                Some(data) => {
                    for (k, v) in data {
                        env.set(
                            format!("{prefix}{k}"),
                            String::from_utf8_lossy(v).into_owned(),
                        );
                    }
                }
                None if r.optional.unwrap_or(false) => {}
                None => {
                    return Err(EnvError::SecretNotFound {
                        name: r.name.clone(),
                    });
                }
            }
        }
    }
    // `$(VAR)` reads the container's variables, then the services'
    // (upstream `expansion.MappingFuncFor(tmpEnv, serviceEnv)`).
    let mut scope: HashMap<String, String> = service_env.iter().cloned().collect();
    scope.extend(env.lookup.iter().map(|(k, v)| (k.clone(), v.clone())));
    for var in container.env.iter().flatten() {
        let literal = var.value.as_deref().unwrap_or_default();
        let value = if !literal.is_empty() {
            expand(literal, &scope)
        } else if let Some(from) = &var.value_from {
            if let Some(f) = &from.field_ref {
                pod_field_value(
                    pod,
                    f.api_version.as_deref().unwrap_or_default(),
                    &f.field_path,
                    pod_ips,
                    sources,
                    opts,
                )?
            } else if let Some(r) = &from.resource_field_ref {
                container_resource_value(r, pod, container, &sources.allocatable)?
            } else if let Some(r) = &from.config_map_key_ref {
                let optional = r.optional.unwrap_or(false);
                match config_map(&r.name)?.map(|data| data.get(&r.key)) {
                    Some(Some(v)) => v.clone(),
                    None | Some(None) if optional => continue,
                    None => {
                        return Err(EnvError::ConfigMapNotFound {
                            name: r.name.clone(),
                        });
                    }
                    Some(None) => {
                        return Err(EnvError::ConfigMapKeyNotFound {
                            key: r.key.clone(),
                            namespace: namespace.to_owned(),
                            name: r.name.clone(),
                        });
                    }
                }
            } else if let Some(r) = &from.secret_key_ref {
                let optional = r.optional.unwrap_or(false);
                match secret(&r.name)?.map(|data| data.get(&r.key)) {
                    Some(Some(v)) => String::from_utf8_lossy(v).into_owned(),
                    None | Some(None) if optional => continue,
                    None => {
                        return Err(EnvError::SecretNotFound {
                            name: r.name.clone(),
                        });
                    }
                    Some(None) => {
                        return Err(EnvError::SecretKeyNotFound {
                            key: r.key.clone(),
                            namespace: namespace.to_owned(),
                            name: r.name.clone(),
                        });
                    }
                }
            } else {
                String::new()
            }
        } else {
            String::new()
        };
        scope.insert(var.name.clone(), value.clone());
        env.set(var.name.clone(), value);
    }
    // Then the service variables the container does not set itself.
    for (name, value) in service_env {
        if !env.lookup.contains_key(name) {
            env.set(name.clone(), value.clone());
        }
    }
    Ok(env.vars)
}

/// Variables in the order their names were first set, a later value
/// replacing an earlier one in place.
#[derive(Default)]
struct OrderedEnv {
    vars: Vec<(String, String)>,
    lookup: HashMap<String, String>,
}

impl OrderedEnv {
    fn set(&mut self, name: String, value: String) {
        match self.lookup.insert(name.clone(), value.clone()) {
            Some(_) => {
                if let Some(slot) = self.vars.iter_mut().find(|(n, _)| *n == name) {
                    slot.1 = value;
                }
            }
            None => self.vars.push((name, value)),
        }
    }
}

/// Upstream `podFieldSelectorRuntimeValue`: the value of a `fieldRef`. The
/// pod's IPs are ordered as upstream's `sortPodIPs` (one of the node's
/// primary family first, then one of the other); the host IPs are the
/// node's.
fn pod_field_value(
    pod: &Pod,
    api_version: &str,
    path: &str,
    pod_ips: &[String],
    sources: &EnvSources,
    opts: &ConfigOptions,
) -> Result<String, EnvError> {
    let path = convert_downward_api_field_label(api_version, path)?;
    let spec = pod.spec.as_ref();
    let pod_ips = sort_pod_ips(pod_ips, sources.host_ips.first().map(String::as_str));
    Ok(match path.as_str() {
        "spec.nodeName" => spec
            .and_then(|s| s.node_name.clone())
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| opts.node_name.clone()),
        "spec.serviceAccountName" => spec
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_default(),
        "status.hostIP" => sources
            .host_ips
            .first()
            .cloned()
            .ok_or(EnvError::HostIpUnknown)?,
        "status.hostIPs" => {
            if sources.host_ips.is_empty() {
                return Err(EnvError::HostIpUnknown);
            }
            sources.host_ips.join(",")
        }
        "status.podIP" => pod_ips.first().cloned().unwrap_or_default(),
        "status.podIPs" => pod_ips.join(","),
        other => extract_field_path_as_string(pod, other)?,
    })
}

/// Upstream `sortPodIPs`: the first pod IP of the node's primary family
/// (IPv4 when the node's is unknown), then the first of the other family.
fn sort_pod_ips(pod_ips: &[String], node_primary: Option<&str>) -> Vec<String> {
    type IpTest = fn(&str) -> bool;
    let is_v6: IpTest = |ip| ip.parse::<std::net::IpAddr>().is_ok_and(|a| a.is_ipv6());
    let is_v4: IpTest = |ip| ip.parse::<std::net::IpAddr>().is_ok_and(|a| a.is_ipv4());
    let (first, second) = if node_primary.is_some_and(is_v6) {
        (is_v6, is_v4)
    } else {
        (is_v4, is_v6)
    };
    pod_ips
        .iter()
        .find(|ip| first(ip))
        .into_iter()
        .chain(pod_ips.iter().find(|ip| second(ip)))
        .cloned()
        .collect()
}

pub use kubelet_container::PodVolumes;

/// The container config (upstream `generateContainerConfig`). `volumes`
/// maps each volume name of the pod to its directory on the host; the
/// caller (the volume manager) prepared them; its `env` holds what the
/// environment reads (see [`container_env`]). The command and args have
/// their `$(VAR)` references expanded from the final environment
/// (upstream `ExpandContainerCommandAndArgs`). An environment that cannot
/// be made is [`Error::CreateContainerConfig`].
#[allow(clippy::too_many_arguments)]
pub fn container_config(
    pod: &Pod,
    container: &Container,
    container_type: ContainerType,
    restart_count: i32,
    image_ref: &str,
    pod_ips: &[String],
    volumes: &PodVolumes,
    opts: &ConfigOptions,
) -> Result<api::ContainerConfig, Error> {
    let env = container_env(pod, container, pod_ips, &volumes.env, opts).map_err(|source| {
        Error::CreateContainerConfig {
            pod: crate::pod_name(pod),
            container: container.name.clone(),
            source: Box::new(source.into()),
        }
    })?;
    let lookup: HashMap<String, String> = env.iter().cloned().collect();
    let mut mounts = Vec::new();
    // Upstream `makeMounts` (`pkg/kubelet/kubelet_pods.go`): every error
    // here is this container's CreateContainerConfigError, not the pod's.
    let config_error = |reason: String| Error::CreateContainerConfig {
        pod: crate::pod_name(pod),
        container: container.name.clone(),
        source: Box::new(crate::ContainerConfigError::Mount(reason)),
    };
    for (index, m) in container.volume_mounts.iter().flatten().enumerate() {
        let Some(host) = volumes.volumes.get(&m.name) else {
            return Err(config_error(format!(
                "cannot find volume {:?} to mount into container {:?}",
                m.name, container.name
            )));
        };
        let sub = match m.sub_path_expr.as_deref().filter(|s| !s.is_empty()) {
            Some(expr) => expand_sub_path_expr(expr, &lookup).map_err(config_error)?,
            None => m.sub_path.clone().unwrap_or_default(),
        };
        let host_path = if sub.is_empty() {
            host.clone()
        } else {
            if sub.starts_with('/') {
                return Err(config_error(format!(
                    "error SubPath `{sub}` must not be an absolute path"
                )));
            }
            if sub.split('/').any(|p| p == "..") {
                return Err(config_error(format!(
                    "unable to provision SubPath `{sub}`: must not contain '..'"
                )));
            }
            // Only a subpath the volume manager opened beneath its volume
            // and bind-mounted: never the string joined to the volume path,
            // which a symlink inside the volume could redirect.
            let prepared = volumes.subpaths.as_ref().map(|p| {
                p.0.prepare(&kubelet_container::Subpath {
                    container: &container.name,
                    index,
                    volume: &m.name,
                    volume_path: host,
                    path: &sub,
                })
            });
            match prepared {
                Some(Ok(path)) => path,
                failed => {
                    // The details stay in the log: they describe the host
                    // (upstream reports the same plain message).
                    if let Some(Err(e)) = failed {
                        tracing::warn!(
                            pod = %crate::pod_name(pod), container = %container.name,
                            volume = %m.name, error = %e,
                            "failed to prepare subPath for volumeMount"
                        );
                    }
                    return Err(config_error(format!(
                        "failed to prepare subPath for volumeMount {:?} of container {:?}",
                        m.name, container.name
                    )));
                }
            }
        };
        mounts.push(api::Mount {
            container_path: m.mount_path.clone(),
            host_path: host_path.display().to_string(),
            readonly: m.read_only.unwrap_or(false) || volumes.read_only.contains(&m.name),
            ..Default::default()
        });
    }
    if let Some(hosts) = &volumes.etc_hosts
        && crate::hosts::should_mount_hosts_file(pod, container, pod_ips)
    {
        mounts.push(api::Mount {
            container_path: crate::hosts::ETC_HOSTS_PATH.into(),
            host_path: hosts.display().to_string(),
            readonly: false,
            ..Default::default()
        });
    }
    let sc = container.security_context.as_ref();
    let pod_sc = pod.spec.as_ref().and_then(|s| s.security_context.as_ref());
    let seccomp = sc
        .and_then(|s| s.seccomp_profile.as_ref())
        .or(pod_sc.and_then(|s| s.seccomp_profile.as_ref()));
    let seccomp = match seccomp.map(|p| (p.type_.as_str(), p.localhost_profile.as_deref())) {
        Some(("Unconfined", _)) => api::SecurityProfile {
            profile_type: api::security_profile::ProfileType::Unconfined as i32,
            localhost_ref: String::new(),
        },
        Some(("Localhost", profile)) => {
            // Fail closed: an empty localhost profile would run unconfined.
            let Some(profile) = profile.filter(|p| !p.trim().is_empty()) else {
                return Err(Error::InvalidPod {
                    pod: crate::pod_name(pod),
                    reason: format!(
                        "container {:?}: seccomp profile type Localhost needs a localhostProfile",
                        container.name
                    ),
                });
            };
            api::SecurityProfile {
                profile_type: api::security_profile::ProfileType::Localhost as i32,
                localhost_ref: profile.to_owned(),
            }
        }
        _ => api::SecurityProfile {
            profile_type: api::security_profile::ProfileType::RuntimeDefault as i32,
            localhost_ref: String::new(),
        },
    };
    let capabilities = sc
        .and_then(|s| s.capabilities.as_ref())
        .map(|c| api::Capability {
            add_capabilities: c.add.clone().unwrap_or_default(),
            drop_capabilities: c.drop.clone().unwrap_or_default(),
            ..Default::default()
        });
    let run_as_user = sc
        .and_then(|s| s.run_as_user)
        .or(pod_sc.and_then(|s| s.run_as_user));
    let run_as_group = sc
        .and_then(|s| s.run_as_group)
        .or(pod_sc.and_then(|s| s.run_as_group));
    Ok(api::ContainerConfig {
        metadata: Some(api::ContainerMetadata {
            name: container.name.clone(),
            attempt: u32::try_from(restart_count).unwrap_or(0),
        }),
        image: Some(api::ImageSpec {
            image: image_ref.to_owned(),
            user_specified_image: container.image.clone().unwrap_or_default(),
            ..Default::default()
        }),
        command: container
            .command
            .iter()
            .flatten()
            .map(|c| expand(c, &lookup))
            .collect(),
        args: container
            .args
            .iter()
            .flatten()
            .map(|a| expand(a, &lookup))
            .collect(),
        working_dir: container.working_dir.clone().unwrap_or_default(),
        envs: env
            .into_iter()
            .map(|(key, value)| api::KeyValue { key, value })
            .collect(),
        mounts,
        labels: new_container_labels(container, pod),
        annotations: new_container_annotations(container, pod, container_type, restart_count),
        log_path: format!("{}/{restart_count}.log", container.name),
        stdin: container.stdin.unwrap_or(false),
        stdin_once: container.stdin_once.unwrap_or(false),
        tty: container.tty.unwrap_or(false),
        linux: Some(api::LinuxContainerConfig {
            resources: Some(opts.container_manager.container_resources(pod, container)),
            security_context: Some(api::LinuxContainerSecurityContext {
                capabilities,
                privileged: sc.and_then(|s| s.privileged).unwrap_or(false),
                namespace_options: Some(namespace_options(pod)),
                run_as_user: run_as_user.map(|value| api::Int64Value { value }),
                run_as_group: run_as_group.map(|value| api::Int64Value { value }),
                run_as_username: String::new(),
                readonly_rootfs: sc
                    .and_then(|s| s.read_only_root_filesystem)
                    .unwrap_or(false),
                supplemental_groups: supplemental_groups(pod_sc),
                no_new_privs: !sc
                    .and_then(|s| s.allow_privilege_escalation)
                    .unwrap_or(true),
                seccomp: Some(seccomp),
                ..Default::default()
            }),
        }),
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {

    struct NoLimits;

    impl kubelet_container::ContainerResources for NoLimits {
        fn pod_cgroup_parent(&self, _: &k8s_openapi::api::core::v1::Pod) -> String {
            "/kubepods".into()
        }

        fn container_resources(
            &self,
            _: &k8s_openapi::api::core::v1::Pod,
            _: &k8s_openapi::api::core::v1::Container,
        ) -> api::LinuxContainerResources {
            api::LinuxContainerResources::default()
        }
    }

    #[test]
    fn api_volumes_are_mounted_read_only_whatever_the_container_asks() {
        let pod: k8s_openapi::api::core::v1::Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "ns", "uid": "u1"},
            "spec": {"containers": [{"name": "c", "image": "busybox", "volumeMounts": [
                {"name": "token", "mountPath": "/var/run/secrets/token", "readOnly": false},
                {"name": "scratch", "mountPath": "/scratch"}
            ]}]}
        }))
        .expect("pod");
        let container = &pod.spec.as_ref().expect("spec").containers[0];
        let volumes = PodVolumes {
            volumes: [
                ("token".to_owned(), std::path::PathBuf::from("/tmp/token")),
                (
                    "scratch".to_owned(),
                    std::path::PathBuf::from("/tmp/scratch"),
                ),
            ]
            .into(),
            read_only: ["token".to_owned()].into(),
            ..PodVolumes::default()
        };
        let opts = ConfigOptions::new(std::sync::Arc::new(NoLimits));
        let config = container_config(
            &pod,
            container,
            crate::labels::ContainerType::Regular,
            0,
            "sha256:1",
            &[],
            &volumes,
            &opts,
        )
        .expect("config");
        let ro = |path: &str| {
            config
                .mounts
                .iter()
                .find(|m| m.container_path == path)
                .map(|m| m.readonly)
        };
        assert_eq!(ro("/var/run/secrets/token"), Some(true));
        assert_eq!(ro("/scratch"), Some(false));
    }

    use super::*;

    fn env_pod(containers: serde_json::Value) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web", "namespace": "ns", "uid": "u-1",
                "labels": {"app": "demo"}, "annotations": {"team": "a"}},
            "spec": {"nodeName": "node-a", "serviceAccountName": "sa",
                "containers": containers}
        }))
        .expect("pod")
    }

    fn sources() -> EnvSources {
        let secret: BTreeMap<String, Vec<u8>> = [
            ("password".to_owned(), b"s3cret".to_vec()),
            ("user".to_owned(), b"admin".to_vec()),
        ]
        .into();
        let cm: BTreeMap<String, String> = [
            ("LOG_LEVEL".to_owned(), "debug".to_owned()),
            ("MODE".to_owned(), "fast".to_owned()),
            ("dotted.key".to_owned(), "ok".to_owned()),
        ]
        .into();
        EnvSources {
            objects: Some(kubelet_container::env::EnvObjects {
                secrets: [
                    ("db".to_owned(), Lookup::Found(secret)),
                    ("gone".to_owned(), Lookup::NotFound),
                    (
                        "broken".to_owned(),
                        Lookup::Failed("connection refused".into()),
                    ),
                ]
                .into(),
                config_maps: [
                    ("settings".to_owned(), Lookup::Found(cm)),
                    ("gone".to_owned(), Lookup::NotFound),
                ]
                .into(),
            }),
            host_ips: vec!["192.0.2.10".into(), "2001:db8::10".into()],
            allocatable: [("cpu".to_owned(), 4000), ("memory".to_owned(), 8 << 30)].into(),
            services: ServiceEnv::None,
        }
    }

    /// Upstream `TestMakeEnvironmentVariables` ("api server = Y, kubelet =
    /// Y"): the pod's env wins over a service variable, `$(VAR)` reads the
    /// service variables, the other service variables come after the
    /// pod's; services not yet listed fail the container.
    #[test]
    fn service_variables_come_after_the_pods_own() {
        let container = serde_json::json!({"name": "c", "env": [
            {"name": "FOO", "value": "BAR"},
            {"name": "TEST_SERVICE_HOST", "value": "1.2.3.3"},
            {"name": "URL", "value": "http://$(KUBERNETES_SERVICE_HOST):$(KUBERNETES_SERVICE_PORT)"}
        ]});
        let mut s = sources();
        s.services = ServiceEnv::Vars(vec![
            ("KUBERNETES_SERVICE_HOST".into(), "1.2.3.1".into()),
            ("KUBERNETES_SERVICE_PORT".into(), "8081".into()),
            ("TEST_SERVICE_HOST".into(), "9.9.9.9".into()),
            ("TEST_SERVICE_PORT".into(), "8083".into()),
        ]);
        let env = env_of(container.clone(), &s, &[]).expect("env");
        assert_eq!(
            env,
            [
                ("FOO", "BAR"),
                ("TEST_SERVICE_HOST", "1.2.3.3"),
                ("URL", "http://1.2.3.1:8081"),
                ("KUBERNETES_SERVICE_HOST", "1.2.3.1"),
                ("KUBERNETES_SERVICE_PORT", "8081"),
                ("TEST_SERVICE_PORT", "8083"),
            ]
            .map(|(n, v)| (n.to_owned(), v.to_owned()))
        );
        s.services = ServiceEnv::NotSynced;
        assert_eq!(env_of(container, &s, &[]), Err(EnvError::ServicesNotSynced));
        assert_eq!(
            EnvError::ServicesNotSynced.to_string(),
            "services have not yet been read at least once, cannot construct envvars"
        );
    }

    fn env_of(
        container: serde_json::Value,
        sources: &EnvSources,
        pod_ips: &[&str],
    ) -> Result<Vec<(String, String)>, EnvError> {
        let pod = env_pod(serde_json::json!([container]));
        let c = &pod.spec.as_ref().expect("spec").containers[0];
        let opts = ConfigOptions::new(std::sync::Arc::new(NoLimits));
        let ips: Vec<String> = pod_ips.iter().map(|s| (*s).to_owned()).collect();
        container_env(&pod, c, &ips, sources, &opts)
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    /// Upstream `TestMakeEnvironmentVariables`-style cases: each container
    /// and the environment it gets.
    #[test]
    fn env_follows_upstream_make_environment_variables() {
        let s = sources();
        // (what, container, its environment)
        type Case<'a> = (&'a str, serde_json::Value, Vec<(&'a str, &'a str)>);
        let cases: Vec<Case> = vec![
            (
                "envFrom a ConfigMap with a prefix, then env; env wins and expands from envFrom",
                serde_json::json!({"name": "c",
                "envFrom": [{"configMapRef": {"name": "settings"}, "prefix": "CFG_"}],
                "env": [
                    {"name": "CFG_MODE", "value": "slow"},
                    {"name": "SUMMARY", "value": "$(CFG_LOG_LEVEL)-$(CFG_MODE)-$(NOPE)-$$(CFG_MODE)"}
                ]}),
                vec![
                    ("CFG_LOG_LEVEL", "debug"),
                    ("CFG_MODE", "slow"),
                    ("CFG_dotted.key", "ok"),
                    ("SUMMARY", "debug-slow-$(NOPE)-$(CFG_MODE)"),
                ],
            ),
            (
                "envFrom a Secret without prefix, then a ConfigMap with one, in order",
                serde_json::json!({"name": "c", "envFrom": [
                    {"secretRef": {"name": "db"}},
                    {"configMapRef": {"name": "settings"}, "prefix": "user"}
                ]}),
                vec![
                    ("password", "s3cret"),
                    ("user", "admin"),
                    ("userLOG_LEVEL", "debug"),
                    ("userMODE", "fast"),
                    ("userdotted.key", "ok"),
                ],
            ),
            (
                "keys of Secrets and ConfigMaps, optional ones left out when missing",
                serde_json::json!({"name": "c", "env": [
                    {"name": "PW", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}},
                    {"name": "LVL", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "LOG_LEVEL"}}},
                    {"name": "OPT1", "valueFrom": {"secretKeyRef": {"name": "gone", "key": "k", "optional": true}}},
                    {"name": "OPT2", "valueFrom": {"secretKeyRef": {"name": "db", "key": "nokey", "optional": true}}},
                    {"name": "OPT3", "valueFrom": {"configMapKeyRef": {"name": "gone", "key": "k", "optional": true}}},
                    {"name": "OPT4", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "nokey", "optional": true}}},
                    {"name": "USES", "value": "$(PW)/$(OPT1)"}
                ], "envFrom": [
                    {"secretRef": {"name": "gone", "optional": true}},
                    {"configMapRef": {"name": "gone", "optional": true}}
                ]}),
                vec![
                    ("PW", "s3cret"),
                    ("LVL", "debug"),
                    ("USES", "s3cret/$(OPT1)"),
                ],
            ),
            (
                "every fieldRef upstream allows",
                serde_json::json!({"name": "c", "env": [
                    {"name": "NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                    {"name": "NS", "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}},
                    {"name": "UID", "valueFrom": {"fieldRef": {"fieldPath": "metadata.uid"}}},
                    {"name": "LABEL", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
                    {"name": "ANNO", "valueFrom": {"fieldRef": {"fieldPath": "metadata.annotations['team']"}}},
                    {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
                    {"name": "SA", "valueFrom": {"fieldRef": {"fieldPath": "spec.serviceAccountName"}}},
                    {"name": "HOST_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.hostIP"}}},
                    {"name": "HOST_IPS", "valueFrom": {"fieldRef": {"fieldPath": "status.hostIPs"}}},
                    {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                    {"name": "POD_IPS", "valueFrom": {"fieldRef": {"fieldPath": "status.podIPs"}}},
                    {"name": "EMPTY"},
                    {"name": "EMPTY_VALUE_FROM", "value": "", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}
                ]}),
                vec![
                    ("NAME", "web"),
                    ("NS", "ns"),
                    ("UID", "u-1"),
                    ("LABEL", "demo"),
                    ("ANNO", "a"),
                    ("NODE", "node-a"),
                    ("SA", "sa"),
                    ("HOST_IP", "192.0.2.10"),
                    ("HOST_IPS", "192.0.2.10,2001:db8::10"),
                    // The node's family first.
                    ("POD_IP", "10.0.0.5"),
                    ("POD_IPS", "10.0.0.5,fd00::5"),
                    ("EMPTY", ""),
                    ("EMPTY_VALUE_FROM", "web"),
                ],
            ),
            (
                "resourceFieldRef, unset limits from the node's allocatable",
                serde_json::json!({"name": "c", "resources": {"limits": {"memory": "64Mi"}, "requests": {"cpu": "250m"}},
                "env": [
                    {"name": "MEM", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}}},
                    {"name": "CPU_REQ", "valueFrom": {"resourceFieldRef": {"resource": "requests.cpu", "divisor": "1m"}}},
                    {"name": "CPU_LIM", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu"}}},
                    {"name": "CPU_LIM_M", "valueFrom": {"resourceFieldRef": {"containerName": "c", "resource": "limits.cpu", "divisor": "1m"}}}
                ]}),
                vec![
                    ("MEM", "64"),
                    ("CPU_REQ", "250"),
                    ("CPU_LIM", "4"),
                    ("CPU_LIM_M", "4000"),
                ],
            ),
        ];
        for (what, container, want) in cases {
            let got = env_of(container, &s, &["fd00::5", "10.0.0.5"]);
            assert_eq!(got, Ok(pairs(&want)), "{what}");
        }
    }

    #[test]
    fn env_errors_carry_upstream_messages() {
        let s = sources();
        let cases = [
            (
                serde_json::json!({"name": "c", "env": [{"name": "A", "valueFrom": {"secretKeyRef": {"name": "gone", "key": "k"}}}]}),
                r#"secret "gone" not found"#,
            ),
            (
                serde_json::json!({"name": "c", "env": [{"name": "A", "valueFrom": {"secretKeyRef": {"name": "db", "key": "k"}}}]}),
                "couldn't find key k in Secret ns/db",
            ),
            (
                serde_json::json!({"name": "c", "env": [{"name": "A", "valueFrom": {"configMapKeyRef": {"name": "gone", "key": "k"}}}]}),
                r#"configmap "gone" not found"#,
            ),
            (
                serde_json::json!({"name": "c", "env": [{"name": "A", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "k"}}}]}),
                "couldn't find key k in ConfigMap ns/settings",
            ),
            (
                serde_json::json!({"name": "c", "envFrom": [{"secretRef": {"name": "gone"}}]}),
                r#"secret "gone" not found"#,
            ),
            (
                serde_json::json!({"name": "c", "envFrom": [{"configMapRef": {"name": "gone"}}]}),
                r#"configmap "gone" not found"#,
            ),
            // Optional covers absence only, not a failed read.
            (
                serde_json::json!({"name": "c", "envFrom": [{"secretRef": {"name": "broken", "optional": true}}]}),
                "couldn't get secret ns/broken: connection refused",
            ),
            (
                serde_json::json!({"name": "c", "env": [{"name": "A", "valueFrom": {"fieldRef": {"fieldPath": "spec.containers"}}}]}),
                "field label not supported: spec.containers",
            ),
            (
                serde_json::json!({"name": "c", "env": [{"name": "A", "valueFrom": {"resourceFieldRef": {"resource": "limits.gpu"}}}]}),
                "unsupported container resource : limits.gpu",
            ),
        ];
        for (container, want) in cases {
            let got = env_of(container.clone(), &s, &[]);
            assert_eq!(
                got.map_err(|e| e.to_string()),
                Err(want.to_owned()),
                "{container}"
            );
        }
    }

    #[test]
    fn a_standalone_kubelet_refuses_secret_and_config_map_references() {
        let standalone = EnvSources::default();
        let e = env_of(
            serde_json::json!({"name": "c", "env": [{"name": "A", "valueFrom": {"secretKeyRef": {"name": "db", "key": "k", "optional": true}}}]}),
            &standalone,
            &[],
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "couldn't get secret ns/db, no kubeClient defined"
        );
        let e = env_of(
            serde_json::json!({"name": "c", "envFrom": [{"configMapRef": {"name": "settings"}}]}),
            &standalone,
            &[],
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "couldn't get configMap ns/settings, no kubeClient defined"
        );
        // Without the node's IPs, status.hostIP cannot be filled.
        let e = env_of(
            serde_json::json!({"name": "c", "env": [{"name": "H", "valueFrom": {"fieldRef": {"fieldPath": "status.hostIP"}}}]}),
            &standalone,
            &[],
        )
        .unwrap_err();
        assert_eq!(e, EnvError::HostIpUnknown);
        // Literal values and pod fields still work.
        assert_eq!(
            env_of(
                serde_json::json!({"name": "c", "env": [
                    {"name": "A", "value": "x"},
                    {"name": "N", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]}),
                &standalone,
                &["10.0.0.5"],
            ),
            Ok(pairs(&[("A", "x"), ("N", "web")]))
        );
    }

    #[test]
    fn command_and_args_expand_from_the_final_environment() {
        let pod = env_pod(serde_json::json!([{"name": "c", "image": "busybox",
            "command": ["sh", "-c", "echo $(GREETING) $(PW)"],
            "args": ["$(CFG_MODE)", "$$(CFG_MODE)", "$(MISSING)"],
            "envFrom": [{"configMapRef": {"name": "settings"}, "prefix": "CFG_"}],
            "env": [{"name": "GREETING", "value": "hello-$(CFG_MODE)"},
                {"name": "PW", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}}]}]));
        let c = &pod.spec.as_ref().expect("spec").containers[0];
        let volumes = PodVolumes {
            env: sources(),
            ..PodVolumes::default()
        };
        let opts = ConfigOptions::new(std::sync::Arc::new(NoLimits));
        let config = container_config(
            &pod,
            c,
            crate::labels::ContainerType::Regular,
            0,
            "sha256:1",
            &[],
            &volumes,
            &opts,
        )
        .expect("config");
        assert_eq!(config.command, ["sh", "-c", "echo hello-fast s3cret"]);
        assert_eq!(config.args, ["fast", "$(CFG_MODE)", "$(MISSING)"]);
        let env: Vec<(String, String)> = config
            .envs
            .iter()
            .map(|kv| (kv.key.clone(), kv.value.clone()))
            .collect();
        assert!(
            env.contains(&("PW".to_owned(), "s3cret".to_owned())),
            "{env:?}"
        );
        // A missing secret is the container's CreateContainerConfig error.
        let missing = PodVolumes::default();
        match container_config(
            &pod,
            c,
            crate::labels::ContainerType::Regular,
            0,
            "sha256:1",
            &[],
            &missing,
            &opts,
        ) {
            Err(Error::CreateContainerConfig {
                container, source, ..
            }) => {
                assert_eq!(container, "c");
                assert_eq!(
                    source.to_string(),
                    "couldn't get configMap ns/settings, no kubeClient defined"
                );
            }
            other => panic!("expected CreateContainerConfig, got {other:?}"),
        }
    }

    #[test]
    fn pod_ips_are_sorted_by_the_node_family() {
        let ips: Vec<String> = ["fd00::1", "10.0.0.1", "10.0.0.2"]
            .map(String::from)
            .to_vec();
        assert_eq!(sort_pod_ips(&ips, None), ["10.0.0.1", "fd00::1"]);
        assert_eq!(
            sort_pod_ips(&ips, Some("192.0.2.1")),
            ["10.0.0.1", "fd00::1"]
        );
        assert_eq!(
            sort_pod_ips(&ips, Some("2001:db8::1")),
            ["fd00::1", "10.0.0.1"]
        );
        assert!(sort_pod_ips(&[], None).is_empty());
    }

    #[test]
    fn the_sandbox_gets_the_pods_dns_config() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "shop", "uid": "u1"},
            "spec": {"dnsPolicy": "ClusterFirst", "containers": [{"name": "c", "image": "busybox"}]}
        }))
        .expect("pod");
        let opts = ConfigOptions {
            cluster_dns: vec!["10.96.0.10".parse().expect("ip")],
            resolv_conf: None,
            ..ConfigOptions::new(std::sync::Arc::new(NoLimits))
        };
        let dns = opts.dns_configurer(std::sync::Arc::new(kubelet_container::events::NoopRecorder));
        let config = pod_sandbox_config(&pod, 0, &opts, &dns).expect("config");
        assert_eq!(
            config.dns_config,
            Some(api::DnsConfig {
                servers: vec!["10.96.0.10".into()],
                searches: vec![
                    "shop.svc.cluster.local".into(),
                    "svc.cluster.local".into(),
                    "cluster.local".into()
                ],
                options: vec!["ndots:5".into()],
            })
        );

        // A resolver file that cannot be read fails the sandbox config,
        // naming the pod and the file.
        let opts = ConfigOptions {
            resolv_conf: Some("/nonexistent/resolv.conf".into()),
            ..opts
        };
        let dns = opts.dns_configurer(std::sync::Arc::new(kubelet_container::events::NoopRecorder));
        let err = pod_sandbox_config(&pod, 0, &opts, &dns).expect_err("no file");
        let text = err.to_string();
        assert!(
            text.starts_with("pod shop/p: ") && text.contains("/nonexistent/resolv.conf"),
            "{text}"
        );
    }

    #[test]
    fn expansion_follows_upstream() {
        let env = HashMap::from([("A".to_string(), "x".to_string())]);
        assert_eq!(expand("$(A)-$(B)-$$(A)-$", &env), "x-$(B)-$(A)-$");
        assert_eq!(expand("$(A", &env), "$(A");
        assert_eq!(expand("plain", &env), "plain");
    }

    #[test]
    fn sub_path_expr_needs_every_variable_set_and_non_empty() {
        let env: HashMap<String, String> = [("POD", "web"), ("EMPTY", "")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        assert_eq!(
            expand_sub_path_expr("logs/$(POD)", &env),
            Ok("logs/web".into())
        );
        assert_eq!(expand_sub_path_expr("$$(POD)", &env), Ok("$(POD)".into()));
        assert_eq!(
            expand_sub_path_expr("$(NOPE)/$(EMPTY)/$(POD)", &env),
            Err("missing value for EMPTY, NOPE".into())
        );
    }

    /// Records what it prepares; refuses the subpath `deny`.
    #[derive(Default)]
    struct RecordingSubpaths(std::sync::Mutex<Vec<(String, usize, String, String)>>);

    impl kubelet_container::PrepareSubpath for RecordingSubpaths {
        fn prepare(
            &self,
            s: &kubelet_container::Subpath<'_>,
        ) -> Result<std::path::PathBuf, Box<dyn std::error::Error + Send + Sync>> {
            if s.path == "deny" {
                return Err("/host/secret/path is a symlink out of the volume".into());
            }
            self.0.lock().expect("lock").push((
                s.container.to_owned(),
                s.index,
                s.volume.to_owned(),
                s.path.to_owned(),
            ));
            Ok(std::path::PathBuf::from(format!("/prepared/{}", s.index)))
        }
    }

    #[test]
    fn sub_paths_are_prepared_per_container_and_their_errors_are_its_own() {
        let mounts = |mounts: serde_json::Value| -> k8s_openapi::api::core::v1::Pod {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": "p", "namespace": "ns", "uid": "u1"},
                "spec": {"containers": [{"name": "c", "image": "busybox",
                    "env": [{"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                        {"name": "ABS", "value": "/etc"}, {"name": "UP", "value": "../x"}],
                    "volumeMounts": mounts}]}
            }))
            .expect("pod")
        };
        let recorder = std::sync::Arc::new(RecordingSubpaths::default());
        let volumes = PodVolumes {
            volumes: [("v".to_owned(), std::path::PathBuf::from("/vol"))].into(),
            subpaths: Some(kubelet_container::Subpaths(recorder.clone())),
            ..PodVolumes::default()
        };
        let opts = ConfigOptions::new(std::sync::Arc::new(NoLimits));
        let config = |pod: &k8s_openapi::api::core::v1::Pod, volumes: &PodVolumes| {
            container_config(
                pod,
                &pod.spec.as_ref().expect("spec").containers[0],
                crate::labels::ContainerType::Regular,
                0,
                "sha256:1",
                &[],
                volumes,
                &opts,
            )
        };
        let message = |r: Result<api::ContainerConfig, Error>| match r {
            Err(Error::CreateContainerConfig {
                container, source, ..
            }) => {
                assert_eq!(container, "c");
                source.to_string()
            }
            other => panic!("expected CreateContainerConfig, got {other:?}"),
        };

        let pod = mounts(serde_json::json!([
            {"name": "v", "mountPath": "/whole"},
            {"name": "v", "mountPath": "/sub", "subPath": "a/b"},
            {"name": "v", "mountPath": "/expr", "subPathExpr": "logs/$(POD)"}
        ]));
        let got = config(&pod, &volumes).expect("config");
        let host: Vec<&str> = got.mounts.iter().map(|m| m.host_path.as_str()).collect();
        assert_eq!(host[..3], ["/vol", "/prepared/1", "/prepared/2"]);
        assert_eq!(
            *recorder.0.lock().expect("lock"),
            [
                ("c".to_owned(), 1, "v".to_owned(), "a/b".to_owned()),
                ("c".to_owned(), 2, "v".to_owned(), "logs/p".to_owned())
            ]
        );

        for (mount, want) in [
            (
                serde_json::json!({"name": "v", "mountPath": "/x", "subPathExpr": "$(NOPE)"}),
                "missing value for NOPE",
            ),
            (
                serde_json::json!({"name": "v", "mountPath": "/x", "subPathExpr": "$(ABS)"}),
                "error SubPath `/etc` must not be an absolute path",
            ),
            (
                serde_json::json!({"name": "v", "mountPath": "/x", "subPathExpr": "$(UP)"}),
                "unable to provision SubPath `../x`: must not contain '..'",
            ),
            (
                serde_json::json!({"name": "v", "mountPath": "/x", "subPath": "deny"}),
                "failed to prepare subPath for volumeMount \"v\" of container \"c\"",
            ),
            (
                serde_json::json!({"name": "gone", "mountPath": "/x"}),
                "cannot find volume \"gone\" to mount into container \"c\"",
            ),
        ] {
            let pod = mounts(serde_json::json!([mount]));
            assert_eq!(message(config(&pod, &volumes)), want);
        }
        // Without a volume manager to prepare it, a subPath is refused.
        let pod = mounts(serde_json::json!([{"name": "v", "mountPath": "/x", "subPath": "a"}]));
        let bare = PodVolumes {
            subpaths: None,
            ..volumes.clone()
        };
        assert_eq!(
            message(config(&pod, &bare)),
            "failed to prepare subPath for volumeMount \"v\" of container \"c\""
        );
    }
}
