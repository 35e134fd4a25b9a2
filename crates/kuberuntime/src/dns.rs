//! Pod DNS: the resolver configuration a pod's sandbox gets, handed to the
//! runtime as the sandbox's CRI `DNSConfig` (containerd writes the
//! sandbox's `/etc/resolv.conf` from it).
//!
//! Mirrors upstream `pkg/kubelet/network/dns/dns.go` (`Configurer`,
//! `GetPodDNS`, `CheckLimitsForResolvConf`), with the limits of
//! `pkg/apis/core/validation` (`ExpandedDNSConfig`, GA since 1.28: 32
//! search paths of at most 2048 characters, 3 nameservers).
//!
//! Per `dnsPolicy` ([`pod_dns_type`]):
//!
//! - `ClusterFirst` (not on the host network) and `ClusterFirstWithHostNet`:
//!   the `clusterDNS` servers only, the search path
//!   `<namespace>.svc.<domain> svc.<domain> <domain>` followed by the host's
//!   searches, and `options ndots:5`. Without `clusterDNS` the pod falls
//!   back to `Default`, with Warning `MissingClusterDNS` events on the node
//!   and the pod.
//! - `Default` (and `ClusterFirst` on the host network): the host's
//!   resolver configuration (`resolvConf`, `/etc/resolv.conf`); with
//!   `resolvConf: ""`, a local nameserver (`127.0.0.1`, `::1` for an IPv6
//!   node IP) and the search path `.`.
//! - `None`: nothing but the pod's `dnsConfig`.
//!
//! The pod's `dnsConfig` is then appended (nameservers and searches without
//! duplicates, options merged by name with the pod's winning), and the
//! result trimmed to the limits with a Warning `DNSConfigForming` event.
//!
//! A configuration with no server, search or option at all (`None`
//! without `dnsConfig`) makes containerd copy the host's
//! `/etc/resolv.conf`, as it does for upstream's kubelet.
//!
//! The host file is read on every call, as upstream does, so an edit takes
//! effect for the next sandbox; a file that cannot be read or has a
//! `nameserver` line without an address is an error ([`DnsError`]), which
//! fails the sandbox as upstream's `GeneratePodSandboxConfig` does.
//!
//! ```
//! use std::sync::Arc;
//! use kubelet_container::events::{node_ref, FakeRecorder};
//! use kubelet_kuberuntime::dns::Configurer;
//! use k8s_openapi::api::core::v1::{Pod, PodSpec};
//!
//! let recorder = Arc::new(FakeRecorder::new());
//! let dns = Configurer::new(
//!     recorder.clone(),
//!     node_ref("node-1"),
//!     vec![],
//!     vec!["10.96.0.10".parse().unwrap()],
//!     "cluster.local".into(),
//!     None,
//! );
//! let mut pod = Pod::default();
//! pod.metadata.namespace = Some("shop".into());
//! pod.spec = Some(PodSpec { dns_policy: Some("ClusterFirst".into()), ..Default::default() });
//! let config = dns.get_pod_dns(&pod).unwrap();
//! assert_eq!(config.servers, ["10.96.0.10"]);
//! assert_eq!(config.searches, ["shop.svc.cluster.local", "svc.cluster.local", "cluster.local"]);
//! assert_eq!(config.options, ["ndots:5"]);
//! ```

use std::io::Read;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Pod, PodDNSConfig, PodDNSConfigOption};
use kubelet_container::events::{EventRecorder, EventType, ObjectReference, pod_desc, pod_ref};
use kubelet_cri_client::api;

/// The host's resolver file unless configured otherwise (upstream
/// `kubetypes.ResolvConfDefault`).
pub const DEFAULT_RESOLV_CONF: &str = "/etc/resolv.conf";
/// The most nameservers a pod gets (upstream `validation.MaxDNSNameservers`).
pub const MAX_DNS_NAMESERVERS: usize = 3;
/// The most search paths a pod gets (upstream
/// `validation.MaxDNSSearchPathsExpanded`).
pub const MAX_DNS_SEARCH_PATHS: usize = 32;
/// The longest search line, in characters, paths joined by one space
/// (upstream `validation.MaxDNSSearchListCharsExpanded`).
pub const MAX_DNS_SEARCH_LIST_CHARS: usize = 2048;
/// The longest single search path (upstream
/// `utilvalidation.DNS1123SubdomainMaxLength`): glibc 2.28 aborts on a
/// longer one.
pub const DNS1123_SUBDOMAIN_MAX_LENGTH: usize = 253;
/// The largest host resolver file read (upstream `maxResolveConfLength`,
/// 10 MiB).
pub const MAX_RESOLV_CONF_LENGTH: u64 = 10 << 20;
/// The options of a cluster-first pod (upstream `defaultDNSOptions`).
pub const DEFAULT_DNS_OPTIONS: &[&str] = &["ndots:5"];

/// The event reasons of this module (string literals in upstream's
/// `dns.go`).
pub mod reason {
    /// A cluster-first pod on a kubelet without `clusterDNS`.
    pub const MISSING_CLUSTER_DNS: &str = "MissingClusterDNS";
    /// The pod's nameservers or search paths were trimmed to the limits.
    pub const DNS_CONFIG_FORMING: &str = "DNSConfigForming";
    /// The host's resolver file cannot be read or exceeds the limits.
    pub const CHECK_LIMITS_FOR_RESOLV_CONF: &str = "CheckLimitsForResolvConf";
}

/// Why a pod's DNS configuration could not be formed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DnsError {
    /// The host's resolver file cannot be read.
    #[error("reading the resolver configuration {}: {source}", path.display())]
    Read {
        /// The file (`resolvConf`).
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The host's resolver file is larger than [`MAX_RESOLV_CONF_LENGTH`].
    #[error("the resolver configuration {} is larger than {limit} bytes", path.display())]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// The limit.
        limit: u64,
    },
    /// The host's resolver file has malformed lines.
    #[error("parsing the resolver configuration {}: {}", path.display(), problems.join("; "))]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong, one entry per bad line.
        problems: Vec<String>,
    },
}

/// The parts of a resolver file a pod's DNS is made from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResolvConf {
    /// `nameserver` lines, in order (they accumulate).
    pub nameservers: Vec<String>,
    /// The last `search` line's domains, without a trailing dot.
    pub searches: Vec<String>,
    /// The last `options` line's options.
    pub options: Vec<String>,
}

/// Parses a resolver file (upstream `parseResolvConf`): `nameserver`
/// lines accumulate, the last `search` and `options` lines win, `#` starts
/// a comment line, other lines are skipped. A `nameserver` line without an
/// address is an error, listed with every other one.
pub fn parse_resolv_conf(text: &str) -> Result<ResolvConf, Vec<String>> {
    let mut conf = ResolvConf::default();
    let mut problems = Vec::new();
    for line in text.split('\n') {
        let trimmed = line.trim();
        if trimmed.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = trimmed.split_whitespace().collect();
        match fields.first().copied() {
            Some("nameserver") => match fields.get(1) {
                Some(server) => conf.nameservers.push((*server).to_owned()),
                None => problems.push("nameserver list is empty".to_owned()),
            },
            Some("search") => {
                // The same domain with and without its trailing dot counts
                // once, so that it does not eat into the limits.
                conf.searches = fields[1..]
                    .iter()
                    .map(|s| s.strip_suffix('.').unwrap_or(s).to_owned())
                    .collect();
            }
            Some("options") => {
                conf.options = fields[1..].iter().map(|s| (*s).to_owned()).collect();
            }
            _ => {}
        }
    }
    if problems.is_empty() {
        Ok(conf)
    } else {
        Err(problems)
    }
}

/// Reads and parses the resolver file at `path`, at most
/// [`MAX_RESOLV_CONF_LENGTH`] bytes of it.
pub fn read_resolv_conf(path: &Path) -> Result<ResolvConf, DnsError> {
    let file = std::fs::File::open(path).map_err(|source| DnsError::Read {
        path: path.to_owned(),
        source,
    })?;
    let mut data = Vec::new();
    file.take(MAX_RESOLV_CONF_LENGTH + 1)
        .read_to_end(&mut data)
        .map_err(|source| DnsError::Read {
            path: path.to_owned(),
            source,
        })?;
    if data.len() as u64 > MAX_RESOLV_CONF_LENGTH {
        return Err(DnsError::TooLarge {
            path: path.to_owned(),
            limit: MAX_RESOLV_CONF_LENGTH,
        });
    }
    parse_resolv_conf(&String::from_utf8_lossy(&data)).map_err(|problems| DnsError::Parse {
        path: path.to_owned(),
        problems,
    })
}

/// Which DNS a pod gets (upstream `podDNSType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PodDnsType {
    /// The cluster's DNS (`clusterDNS`, cluster search path).
    Cluster,
    /// The host's resolver configuration.
    Host,
    /// Only the pod's `dnsConfig`.
    None,
}

/// The pod's DNS type from its `dnsPolicy` and `hostNetwork` (upstream
/// `getPodDNSType`): `ClusterFirst` on the host network is `Default`. An
/// unknown or missing policy (the API server defaults and validates it, so
/// only a hand-made pod has one) is an error carrying the policy; the
/// caller falls back to [`PodDnsType::Cluster`], as upstream does.
pub fn pod_dns_type(pod: &Pod) -> Result<PodDnsType, String> {
    let spec = pod.spec.as_ref();
    let policy = spec.and_then(|s| s.dns_policy.as_deref()).unwrap_or("");
    let host_network = spec.and_then(|s| s.host_network).unwrap_or(false);
    match policy {
        "None" => Ok(PodDnsType::None),
        "ClusterFirstWithHostNet" => Ok(PodDnsType::Cluster),
        "ClusterFirst" if !host_network => Ok(PodDnsType::Cluster),
        "ClusterFirst" | "Default" => Ok(PodDnsType::Host),
        other => Err(other.to_owned()),
    }
}

/// `strs` without repeats, first occurrence kept (upstream
/// `omitDuplicates`).
fn omit_duplicates(strs: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    strs.into_iter()
        .filter(|s| seen.insert(s.clone()))
        .collect()
}

/// Merges the pod's `dnsConfig` options into `existing` (upstream
/// `mergeDNSOptions`): by name (the part before the first `:`), the pod's
/// value winning. Upstream rebuilds the list from a Go map, in no
/// particular order; here each name keeps the place of its first
/// appearance, which is the same set in a stable order.
pub fn merge_dns_options(existing: &[String], pod_options: &[PodDNSConfigOption]) -> Vec<String> {
    let mut merged: Vec<(String, String)> = Vec::new();
    let mut set = |name: &str, value: &str| match merged.iter_mut().find(|(n, _)| n == name) {
        Some(entry) => entry.1 = value.to_owned(),
        None => merged.push((name.to_owned(), value.to_owned())),
    };
    for op in existing {
        match op.split_once(':') {
            Some((name, value)) => set(name, value),
            None => set(op, ""),
        }
    }
    for op in pod_options {
        let name = op.name.as_deref().unwrap_or_default();
        set(name, op.value.as_deref().unwrap_or_default());
    }
    merged
        .into_iter()
        .map(|(name, value)| {
            if value.is_empty() {
                name
            } else {
                format!("{name}:{value}")
            }
        })
        .collect()
}

/// Appends the pod's `dnsConfig` to `config` (upstream `appendDNSConfig`):
/// nameservers and searches without duplicates, options merged.
pub fn append_dns_config(mut config: api::DnsConfig, pod_config: &PodDNSConfig) -> api::DnsConfig {
    config.servers = omit_duplicates(
        config
            .servers
            .into_iter()
            .chain(pod_config.nameservers.iter().flatten().cloned()),
    );
    config.searches = omit_duplicates(
        config
            .searches
            .into_iter()
            .chain(pod_config.searches.iter().flatten().cloned()),
    );
    config.options = merge_dns_options(
        &config.options,
        pod_config.options.as_deref().unwrap_or_default(),
    );
    config
}

/// Sets up the resolver configuration of pods (upstream `dns.Configurer`).
#[derive(Clone)]
pub struct Configurer {
    recorder: Arc<dyn EventRecorder>,
    node_ref: ObjectReference,
    node_ips: Vec<IpAddr>,
    cluster_dns: Vec<IpAddr>,
    cluster_domain: String,
    resolver_config: Option<PathBuf>,
}

impl std::fmt::Debug for Configurer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Configurer")
            .field("node_ref", &self.node_ref)
            .field("node_ips", &self.node_ips)
            .field("cluster_dns", &self.cluster_dns)
            .field("cluster_domain", &self.cluster_domain)
            .field("resolver_config", &self.resolver_config)
            .finish_non_exhaustive()
    }
}

impl Configurer {
    /// A configurer (upstream `NewConfigurer`): events go to `recorder`,
    /// node events about `node_ref`; `node_ips` are the node's configured
    /// addresses (`--node-ip`, may be empty), `cluster_dns` the cluster's
    /// DNS servers, `cluster_domain` its domain (may be empty), and
    /// `resolver_config` the host's resolver file (`resolvConf`; `None` for
    /// `resolvConf: ""`).
    pub fn new(
        recorder: Arc<dyn EventRecorder>,
        node_ref: ObjectReference,
        node_ips: Vec<IpAddr>,
        cluster_dns: Vec<IpAddr>,
        cluster_domain: String,
        resolver_config: Option<PathBuf>,
    ) -> Self {
        Self {
            recorder,
            node_ref,
            node_ips,
            cluster_dns,
            cluster_domain,
            resolver_config,
        }
    }

    /// The host's resolver file, if any.
    pub fn resolver_config(&self) -> Option<&Path> {
        self.resolver_config.as_deref()
    }

    /// The pod's DNS configuration (upstream `GetPodDNS`), as the sandbox's
    /// CRI `DNSConfig`. Records `MissingClusterDNS` and `DNSConfigForming`
    /// warnings as upstream does.
    pub fn get_pod_dns(&self, pod: &Pod) -> Result<api::DnsConfig, DnsError> {
        let mut config = self.host_dns_config()?;
        let dns_type = pod_dns_type(pod).unwrap_or_else(|policy| {
            tracing::error!(
                pod = %crate::pod_name(pod),
                policy,
                "Failed to get DNS type for pod: invalid DNSPolicy. Falling back to DNSClusterFirst policy."
            );
            PodDnsType::Cluster
        });
        let mut use_host = dns_type == PodDnsType::Host;
        match dns_type {
            PodDnsType::None => config = api::DnsConfig::default(),
            PodDnsType::Cluster if !self.cluster_dns.is_empty() => {
                // The cluster DNS server is the pod's only nameserver; it
                // forwards what it cannot answer itself.
                config.servers = self.cluster_dns.iter().map(ToString::to_string).collect();
                config.searches =
                    self.searches_for_cluster_first(std::mem::take(&mut config.searches), pod);
                config.options = DEFAULT_DNS_OPTIONS
                    .iter()
                    .map(|s| (*s).to_owned())
                    .collect();
            }
            PodDnsType::Cluster => {
                let node_message = "kubelet does not have ClusterDNS IP configured and cannot create Pod using \"ClusterFirst\" policy. Falling back to \"Default\" policy.";
                self.recorder.event(
                    &self.node_ref,
                    EventType::Warning,
                    reason::MISSING_CLUSTER_DNS,
                    node_message.to_owned(),
                );
                self.recorder.event(
                    &pod_ref(pod),
                    EventType::Warning,
                    reason::MISSING_CLUSTER_DNS,
                    format!("pod: {:?}. {node_message}", pod_desc(pod)),
                );
                use_host = true;
            }
            PodDnsType::Host => {}
        }
        if use_host && self.resolver_config.is_none() {
            // `resolvConf: ""`: the nameserver on the local machine, which
            // is what a resolver without nameservers uses; the search path
            // `.` keeps the runtime from copying the host's.
            config.servers.extend(
                self.node_ips
                    .iter()
                    .map(|ip| if ip.is_ipv6() { "::1" } else { "127.0.0.1" }.to_owned()),
            );
            if config.servers.is_empty() {
                config.servers.push("127.0.0.1".into());
            }
            config.searches = vec![".".into()];
        }
        if let Some(pod_config) = pod.spec.as_ref().and_then(|s| s.dns_config.as_ref()) {
            config = append_dns_config(config, pod_config);
        }
        Ok(self.form_dns_config_fits_limits(config, pod))
    }

    /// The host's resolver configuration (upstream `getHostDNSConfig`):
    /// empty without a resolver file.
    fn host_dns_config(&self) -> Result<api::DnsConfig, DnsError> {
        let Some(path) = &self.resolver_config else {
            return Ok(api::DnsConfig::default());
        };
        let conf = read_resolv_conf(path)?;
        Ok(api::DnsConfig {
            servers: conf.nameservers,
            searches: conf.searches,
            options: conf.options,
        })
    }

    /// `<ns>.svc.<domain> svc.<domain> <domain>` then the host's searches,
    /// without duplicates (upstream `generateSearchesForDNSClusterFirst`);
    /// only the host's without a cluster domain.
    fn searches_for_cluster_first(&self, host_search: Vec<String>, pod: &Pod) -> Vec<String> {
        let domain = &self.cluster_domain;
        if domain.is_empty() {
            return host_search;
        }
        let namespace = pod.metadata.namespace.as_deref().unwrap_or_default();
        omit_duplicates(
            [
                format!("{namespace}.svc.{domain}"),
                format!("svc.{domain}"),
                domain.clone(),
            ]
            .into_iter()
            .chain(host_search),
        )
    }

    fn form_dns_config_fits_limits(&self, mut config: api::DnsConfig, pod: &Pod) -> api::DnsConfig {
        config.servers = self.form_dns_nameservers_fits_limits(config.servers, pod);
        config.searches = self.form_dns_search_fits_limits(config.searches, pod);
        config
    }

    /// The first [`MAX_DNS_NAMESERVERS`] nameservers, with a
    /// `DNSConfigForming` warning when some were dropped (upstream
    /// `formDNSNameserversFitsLimits`).
    pub fn form_dns_nameservers_fits_limits(
        &self,
        mut nameservers: Vec<String>,
        pod: &Pod,
    ) -> Vec<String> {
        if nameservers.len() > MAX_DNS_NAMESERVERS {
            nameservers.truncate(MAX_DNS_NAMESERVERS);
            let message = format!(
                "Nameserver limits were exceeded, some nameservers have been omitted, the applied nameserver line is: {}",
                nameservers.join(" ")
            );
            tracing::error!(pod = %crate::pod_name(pod), "{message}");
            self.recorder.event(
                &pod_ref(pod),
                EventType::Warning,
                reason::DNS_CONFIG_FORMING,
                message,
            );
        }
        nameservers
    }

    /// The search paths within the limits (upstream
    /// `formDNSSearchFitsLimits`): the first [`MAX_DNS_SEARCH_PATHS`], then
    /// without those longer than [`DNS1123_SUBDOMAIN_MAX_LENGTH`], then
    /// without trailing ones until the line fits
    /// [`MAX_DNS_SEARCH_LIST_CHARS`]; a `DNSConfigForming` warning names
    /// the line applied when anything was dropped.
    pub fn form_dns_search_fits_limits(&self, mut search: Vec<String>, pod: &Pod) -> Vec<String> {
        let mut exceeded = false;
        if search.len() > MAX_DNS_SEARCH_PATHS {
            search.truncate(MAX_DNS_SEARCH_PATHS);
            exceeded = true;
        }
        let before = search.len();
        search.retain(|s| s.len() <= DNS1123_SUBDOMAIN_MAX_LENGTH);
        exceeded |= search.len() != before;
        let line_len = search.join(" ").len();
        if line_len > MAX_DNS_SEARCH_LIST_CHARS {
            let mut cut = 0;
            let mut cut_len = 0;
            for s in search.iter().rev() {
                cut_len += s.len() + 1;
                cut += 1;
                if line_len - cut_len.min(line_len) <= MAX_DNS_SEARCH_LIST_CHARS {
                    break;
                }
            }
            search.truncate(search.len() - cut);
            exceeded = true;
        }
        if exceeded {
            let message = format!(
                "Search Line limits were exceeded, some search paths have been omitted, the applied search line is: {}",
                search.join(" ")
            );
            tracing::error!(pod = %crate::pod_name(pod), "{message}");
            self.recorder.event(
                &pod_ref(pod),
                EventType::Warning,
                reason::DNS_CONFIG_FORMING,
                message,
            );
        }
        search
    }

    /// Checks the host's resolver file against the limits, recording a
    /// Warning `CheckLimitsForResolvConf` event on the node for the first
    /// problem (upstream `CheckLimitsForResolvConf`, run once as the sync
    /// loop starts). The search paths a cluster-first pod adds (3, with a
    /// cluster domain) count against the limit. Nothing to check without a
    /// resolver file.
    pub fn check_limits_for_resolv_conf(&self) {
        let Some(path) = &self.resolver_config else {
            return;
        };
        let warn = |message: String| {
            tracing::debug!("Check limits for resolv.conf failed: {message}");
            self.recorder.event(
                &self.node_ref,
                EventType::Warning,
                reason::CHECK_LIMITS_FOR_RESOLV_CONF,
                message,
            );
        };
        let conf = match read_resolv_conf(path) {
            Ok(conf) => conf,
            Err(e) => return warn(e.to_string()),
        };
        let mut domain_count_limit = MAX_DNS_SEARCH_PATHS;
        if !self.cluster_domain.is_empty() {
            domain_count_limit -= 3;
        }
        let path = path.display();
        if conf.searches.len() > domain_count_limit {
            return warn(format!(
                "Resolv.conf file '{path}' contains search line consisting of more than {domain_count_limit} domains!"
            ));
        }
        if conf
            .searches
            .iter()
            .any(|s| s.len() > DNS1123_SUBDOMAIN_MAX_LENGTH)
        {
            return warn(format!(
                "Resolv.conf file \"{path}\" contains a search path which length is more than allowed {DNS1123_SUBDOMAIN_MAX_LENGTH} chars!"
            ));
        }
        if conf.searches.join(" ").len() > MAX_DNS_SEARCH_LIST_CHARS {
            warn(format!(
                "Resolv.conf file '{path}' contains search line which length is more than allowed {MAX_DNS_SEARCH_LIST_CHARS} chars!"
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::PodSpec;
    use kubelet_container::events::{FakeRecorder, node_ref};

    fn configurer(
        cluster_dns: &[&str],
        domain: &str,
        resolver: Option<PathBuf>,
    ) -> (Configurer, Arc<FakeRecorder>) {
        let recorder = Arc::new(FakeRecorder::new());
        let c = Configurer::new(
            recorder.clone(),
            node_ref("testNode"),
            Vec::new(),
            cluster_dns.iter().map(|s| s.parse().expect("ip")).collect(),
            domain.into(),
            resolver,
        );
        (c, recorder)
    }

    fn pod(namespace: &str, policy: &str, host_network: bool) -> Pod {
        let mut pod = Pod::default();
        pod.metadata.name = Some("test_pod".into());
        pod.metadata.namespace = Some(namespace.into());
        pod.metadata.uid = Some("uid-1".into());
        pod.spec = Some(PodSpec {
            dns_policy: (!policy.is_empty()).then(|| policy.to_owned()),
            host_network: Some(host_network),
            ..Default::default()
        });
        pod
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    fn resolv_file(text: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().expect("temp file");
        std::io::Write::write_all(&mut f, text.as_bytes()).expect("write");
        f
    }

    #[test]
    fn parse_resolv_conf_as_upstream() {
        // (data, nameservers, searches, options, error): upstream
        // TestParseResolvConf.
        type Case<'a> = (&'a str, &'a [&'a str], &'a [&'a str], &'a [&'a str], bool);
        let cases: &[Case] = &[
            ("", &[], &[], &[], false),
            (" ", &[], &[], &[], false),
            ("\n", &[], &[], &[], false),
            ("\t\n\t", &[], &[], &[], false),
            ("#comment\n", &[], &[], &[], false),
            (" #comment\n", &[], &[], &[], false),
            ("#comment\n#comment", &[], &[], &[], false),
            ("#comment\nnameserver", &[], &[], &[], true),
            ("#comment\nnameserver\nsearch", &[], &[], &[], true),
            (
                "#comment\nnameserver 1.2.3.4\nsearch",
                &["1.2.3.4"],
                &[],
                &[],
                false,
            ),
            ("nameserver 1.2.3.4", &["1.2.3.4"], &[], &[], false),
            (" nameserver 1.2.3.4", &["1.2.3.4"], &[], &[], false),
            ("\tnameserver 1.2.3.4", &["1.2.3.4"], &[], &[], false),
            ("nameserver\t1.2.3.4", &["1.2.3.4"], &[], &[], false),
            ("nameserver \t 1.2.3.4", &["1.2.3.4"], &[], &[], false),
            (
                "nameserver 1.2.3.4\nnameserver 5.6.7.8",
                &["1.2.3.4", "5.6.7.8"],
                &[],
                &[],
                false,
            ),
            ("nameserver 1.2.3.4 #comment", &["1.2.3.4"], &[], &[], false),
            ("search ", &[], &[], &[], false),
            ("search foo", &[], &["foo"], &[], false),
            ("search foo bar", &[], &["foo", "bar"], &[], false),
            ("search foo. bar", &[], &["foo", "bar"], &[], false),
            (
                "search foo bar bat\n",
                &[],
                &["foo", "bar", "bat"],
                &[],
                false,
            ),
            ("search foo\nsearch bar", &[], &["bar"], &[], false),
            (
                "nameserver 1.2.3.4\nsearch foo bar",
                &["1.2.3.4"],
                &["foo", "bar"],
                &[],
                false,
            ),
            (
                "nameserver 1.2.3.4\nsearch foo\nnameserver 5.6.7.8\nsearch bar",
                &["1.2.3.4", "5.6.7.8"],
                &["bar"],
                &[],
                false,
            ),
            (
                "#comment\nnameserver 1.2.3.4\n#comment\nsearch foo\ncomment",
                &["1.2.3.4"],
                &["foo"],
                &[],
                false,
            ),
            ("options ", &[], &[], &[], false),
            (
                "options ndots:5 attempts:2",
                &[],
                &[],
                &["ndots:5", "attempts:2"],
                false,
            ),
            (
                "options ndots:1\noptions ndots:5 attempts:3",
                &[],
                &[],
                &["ndots:5", "attempts:3"],
                false,
            ),
            (
                "nameserver 1.2.3.4\nsearch foo\nnameserver 5.6.7.8\nsearch bar\noptions ndots:5 attempts:4",
                &["1.2.3.4", "5.6.7.8"],
                &["bar"],
                &["ndots:5", "attempts:4"],
                false,
            ),
        ];
        for (data, ns, search, options, is_err) in cases {
            match parse_resolv_conf(data) {
                Ok(conf) => {
                    assert!(!is_err, "{data:?}: want an error, got {conf:?}");
                    assert_eq!(conf.nameservers, strings(ns), "{data:?}");
                    assert_eq!(conf.searches, strings(search), "{data:?}");
                    assert_eq!(conf.options, strings(options), "{data:?}");
                }
                Err(problems) => {
                    assert!(is_err, "{data:?}: unexpected error {problems:?}");
                    assert_eq!(problems, ["nameserver list is empty"], "{data:?}");
                }
            }
        }
    }

    #[test]
    fn a_missing_or_bad_resolver_file_is_an_error_naming_it() {
        let (c, _) = configurer(&[], "", Some("/nonexistent/resolv.conf".into()));
        let err = c
            .get_pod_dns(&pod("ns", "Default", false))
            .expect_err("missing file");
        assert!(matches!(err, DnsError::Read { .. }), "{err}");
        assert!(
            err.to_string().contains("/nonexistent/resolv.conf"),
            "{err}"
        );

        let f = resolv_file("nameserver 1.2.3.4\nnameserver\n");
        let (c, _) = configurer(&["10.0.0.10"], "cluster.local", Some(f.path().into()));
        let err = c
            .get_pod_dns(&pod("ns", "ClusterFirst", false))
            .expect_err("bad file");
        assert!(
            err.to_string().ends_with("nameserver list is empty"),
            "{err}"
        );

        let big = tempfile::NamedTempFile::new().expect("temp");
        big.as_file()
            .set_len(MAX_RESOLV_CONF_LENGTH + 1)
            .expect("grow");
        let (c, _) = configurer(&[], "", Some(big.path().into()));
        assert!(matches!(
            c.get_pod_dns(&pod("ns", "Default", false)),
            Err(DnsError::TooLarge { .. })
        ));
    }

    #[test]
    fn search_paths_fit_the_limits_as_upstream() {
        let (c, recorder) = configurer(&[], "TEST", None);
        let p = pod("testNS", "ClusterFirst", false);
        let list_2048: Vec<String> = std::iter::once("A".repeat(128))
            .chain(std::iter::repeat_n("A".repeat(127), 15))
            .collect();
        assert_eq!(list_2048.join(" ").len(), 2048);
        let paths_32: Vec<String> = ["testNS.svc.TEST", "svc.TEST", "TEST"]
            .into_iter()
            .map(String::from)
            .chain((4..=32).map(|i| i.to_string()))
            .collect();
        let long = "B".repeat(256);
        let warn = |line: &str| {
            vec![format!(
                "Warning DNSConfigForming Search Line limits were exceeded, some search paths have been omitted, the applied search line is: {line}"
            )]
        };
        type Case<'a> = (&'a str, Vec<String>, Vec<String>, Vec<String>);
        let cases: Vec<Case> = vec![
            (
                "valid: 3 search paths",
                strings(&["testNS.svc.TEST", "svc.TEST", "TEST"]),
                strings(&["testNS.svc.TEST", "svc.TEST", "TEST"]),
                vec![],
            ),
            (
                "valid: 5 search paths",
                strings(&["testNS.svc.TEST", "svc.TEST", "TEST", "AAA", "BBB"]),
                strings(&["testNS.svc.TEST", "svc.TEST", "TEST", "AAA", "BBB"]),
                vec![],
            ),
            (
                "invalid: a search path longer than 253 characters",
                strings(&["testNS.svc.TEST", "svc.TEST", "TEST", "AAA", &long, "BBB"]),
                strings(&["testNS.svc.TEST", "svc.TEST", "TEST", "AAA", "BBB"]),
                warn("testNS.svc.TEST svc.TEST TEST AAA BBB"),
            ),
            (
                "valid: 2048 characters in the search line",
                list_2048.clone(),
                list_2048.clone(),
                vec![],
            ),
            (
                "invalid: 2050 characters in the search line",
                list_2048.iter().cloned().chain(["B".to_owned()]).collect(),
                list_2048.clone(),
                warn(&list_2048.join(" ")),
            ),
            (
                "valid: 32 search paths",
                paths_32.clone(),
                paths_32.clone(),
                vec![],
            ),
            (
                "invalid: 33 search paths",
                paths_32.iter().cloned().chain(["33".to_owned()]).collect(),
                paths_32.clone(),
                warn(&paths_32.join(" ")),
            ),
        ];
        for (desc, input, want, events) in cases {
            assert_eq!(c.form_dns_search_fits_limits(input, &p), want, "{desc}");
            assert_eq!(recorder.strings(), events, "{desc}");
            for e in recorder.take() {
                assert_eq!(e.object, pod_ref(&p), "{desc}: the event is on the pod");
            }
        }
    }

    #[test]
    fn nameservers_fit_the_limits_as_upstream() {
        let (c, recorder) = configurer(&[], "TEST", None);
        let p = pod("testNS", "ClusterFirst", false);
        let cases: &[(&[&str], &[&str], bool)] = &[
            (&["127.0.0.1"], &["127.0.0.1"], false),
            (
                &["127.0.0.1", "10.0.0.10", "8.8.8.8"],
                &["127.0.0.1", "10.0.0.10", "8.8.8.8"],
                false,
            ),
            (
                &["127.0.0.1", "10.0.0.10", "8.8.8.8", "1.2.3.4"],
                &["127.0.0.1", "10.0.0.10", "8.8.8.8"],
                true,
            ),
        ];
        for (input, want, event) in cases {
            assert_eq!(
                c.form_dns_nameservers_fits_limits(strings(input), &p),
                strings(want)
            );
            let got = recorder.strings();
            if *event {
                assert_eq!(
                    got,
                    [
                        "Warning DNSConfigForming Nameserver limits were exceeded, some nameservers have been omitted, the applied nameserver line is: 127.0.0.1 10.0.0.10 8.8.8.8"
                    ]
                );
            } else {
                assert!(got.is_empty(), "{input:?}: {got:?}");
            }
            recorder.take();
        }
    }

    #[test]
    fn merge_dns_options_as_upstream() {
        let opt = |name: &str, value: Option<&str>| PodDNSConfigOption {
            name: Some(name.into()),
            value: value.map(Into::into),
        };
        let existing = strings(&["ndots:5", "debug"]);
        assert_eq!(merge_dns_options(&existing, &[]), existing);
        assert_eq!(
            merge_dns_options(
                &existing,
                &[opt("single-request", None), opt("attempts", Some("3"))]
            ),
            ["ndots:5", "debug", "single-request", "attempts:3"]
        );
        assert_eq!(
            merge_dns_options(
                &existing,
                &[
                    opt("ndots", Some("3")),
                    opt("debug", None),
                    opt("single-request", None),
                    opt("attempts", Some("3")),
                ]
            ),
            ["ndots:3", "debug", "single-request", "attempts:3"]
        );
    }

    #[test]
    fn pod_dns_type_as_upstream() {
        let cases = [
            ("ClusterFirst", false, Ok(PodDnsType::Cluster)),
            ("ClusterFirstWithHostNet", true, Ok(PodDnsType::Cluster)),
            ("ClusterFirstWithHostNet", false, Ok(PodDnsType::Cluster)),
            ("Default", false, Ok(PodDnsType::Host)),
            ("Default", true, Ok(PodDnsType::Host)),
            ("ClusterFirst", true, Ok(PodDnsType::Host)),
            ("None", false, Ok(PodDnsType::None)),
            ("invalidPolicy", false, Err("invalidPolicy".to_owned())),
            ("", false, Err(String::new())),
        ];
        for (policy, host_network, want) in cases {
            assert_eq!(
                pod_dns_type(&pod("ns", policy, host_network)),
                want,
                "{policy} hostNetwork={host_network}"
            );
        }
    }

    #[test]
    fn without_a_resolver_file_host_dns_is_the_local_nameserver() {
        // Upstream testGetPodDNS, resolvConf "".
        let (c, recorder) = configurer(&["203.0.113.1"], "kubernetes.io", None);
        let cases = [
            (
                "ClusterFirstWithHostNet",
                true,
                "203.0.113.1",
                ".svc.kubernetes.io",
            ),
            ("ClusterFirst", true, "127.0.0.1", "."),
            ("ClusterFirst", false, "203.0.113.1", ".svc.kubernetes.io"),
            ("Default", true, "127.0.0.1", "."),
        ];
        for (policy, host_network, server, first_search) in cases {
            let mut p = pod("", policy, host_network);
            p.metadata.namespace = None;
            let got = c.get_pod_dns(&p).expect("dns");
            assert_eq!(got.servers, [server], "{policy} {host_network}");
            assert_eq!(got.searches[0], first_search, "{policy} {host_network}");
        }
        assert!(recorder.strings().is_empty());

        // One local nameserver per node IP family, as upstream.
        let c = Configurer::new(
            recorder.clone(),
            node_ref("n"),
            vec![
                "10.0.0.2".parse().expect("ip"),
                "fd00::2".parse().expect("ip"),
            ],
            vec![],
            "cluster.local".into(),
            None,
        );
        let got = c.get_pod_dns(&pod("ns", "Default", false)).expect("dns");
        assert_eq!(got.servers, ["127.0.0.1", "::1"]);
        assert_eq!(got.searches, ["."]);
        assert!(got.options.is_empty());
    }

    #[test]
    fn get_pod_dns_per_policy_with_dns_config_as_upstream() {
        // Upstream TestGetPodDNSCustom.
        let f = resolv_file("nameserver 8.8.8.8\nsearch host.domain\noptions rotate\n");
        let (c, recorder) = configurer(&["10.0.0.10"], "kubernetes.io", Some(f.path().into()));
        let with_config = |policy: &str, host_network: bool, config: Option<PodDNSConfig>| {
            let mut p = pod("testNS", policy, host_network);
            if let Some(spec) = p.spec.as_mut() {
                spec.dns_config = config;
            }
            c.get_pod_dns(&p).expect("dns")
        };
        let custom = PodDNSConfig {
            nameservers: Some(strings(&["10.0.0.11"])),
            searches: Some(strings(&["my.domain"])),
            options: Some(vec![
                PodDNSConfigOption {
                    name: Some("ndots".into()),
                    value: Some("3".into()),
                },
                PodDNSConfigOption {
                    name: Some("debug".into()),
                    value: None,
                },
            ]),
        };
        let dns = |servers: &[&str], searches: &[&str], options: &[&str]| api::DnsConfig {
            servers: strings(servers),
            searches: strings(searches),
            options: strings(options),
        };

        // None: nothing but the pod's config.
        assert_eq!(with_config("None", false, None), api::DnsConfig::default());
        assert_eq!(
            with_config(
                "None",
                false,
                Some(PodDNSConfig {
                    nameservers: Some(strings(&["203.0.113.1"])),
                    searches: Some(strings(&["my.domain", "second.domain"])),
                    ..custom.clone()
                })
            ),
            dns(
                &["203.0.113.1"],
                &["my.domain", "second.domain"],
                &["ndots:3", "debug"]
            )
        );
        // ClusterFirst: cluster server, cluster then host searches, ndots:5
        // (the host's options are not kept), then the pod's config.
        assert_eq!(
            with_config("ClusterFirst", false, None),
            dns(
                &["10.0.0.10"],
                &[
                    "testNS.svc.kubernetes.io",
                    "svc.kubernetes.io",
                    "kubernetes.io",
                    "host.domain"
                ],
                &["ndots:5"]
            )
        );
        let cluster_custom = dns(
            &["10.0.0.10", "10.0.0.11"],
            &[
                "testNS.svc.kubernetes.io",
                "svc.kubernetes.io",
                "kubernetes.io",
                "host.domain",
                "my.domain",
            ],
            &["ndots:3", "debug"],
        );
        assert_eq!(
            with_config("ClusterFirst", false, Some(custom.clone())),
            cluster_custom
        );
        assert_eq!(
            with_config("ClusterFirstWithHostNet", true, Some(custom.clone())),
            cluster_custom
        );
        // Default, and ClusterFirst on the host network: the host's file.
        assert_eq!(
            with_config("Default", false, Some(custom.clone())),
            dns(
                &["8.8.8.8", "10.0.0.11"],
                &["host.domain", "my.domain"],
                &["rotate", "ndots:3", "debug"]
            )
        );
        assert_eq!(
            with_config("ClusterFirst", true, None),
            dns(&["8.8.8.8"], &["host.domain"], &["rotate"])
        );
        assert!(recorder.strings().is_empty(), "{:?}", recorder.strings());
    }

    #[test]
    fn cluster_first_without_cluster_dns_falls_back_to_default_with_events() {
        let f = resolv_file("nameserver 8.8.8.8\nsearch host.domain\n");
        let (c, recorder) = configurer(&[], "cluster.local", Some(f.path().into()));
        let p = pod("shop", "ClusterFirst", false);
        let got = c.get_pod_dns(&p).expect("dns");
        assert_eq!(got.servers, ["8.8.8.8"]);
        assert_eq!(got.searches, ["host.domain"]);
        assert!(got.options.is_empty());
        let message = "kubelet does not have ClusterDNS IP configured and cannot create Pod using \"ClusterFirst\" policy. Falling back to \"Default\" policy.";
        let events = recorder.take();
        assert_eq!(events.len(), 2, "{events:?}");
        assert_eq!(events[0].object, node_ref("testNode"));
        assert_eq!(events[0].event_type, EventType::Warning);
        assert_eq!(events[0].reason, "MissingClusterDNS");
        assert_eq!(events[0].message, message);
        assert_eq!(events[1].object, pod_ref(&p));
        assert_eq!(
            events[1].message,
            format!("pod: \"test_pod_shop(uid-1)\". {message}")
        );
        // Default itself records nothing.
        c.get_pod_dns(&pod("shop", "Default", false)).expect("dns");
        assert!(recorder.strings().is_empty());
    }

    #[test]
    fn too_many_nameservers_and_searches_are_trimmed_with_events() {
        let f = resolv_file("nameserver 1.1.1.1\nnameserver 2.2.2.2\nsearch a b\n");
        let (c, recorder) = configurer(&[], "", Some(f.path().into()));
        let mut p = pod("ns", "Default", false);
        if let Some(spec) = p.spec.as_mut() {
            spec.dns_config = Some(PodDNSConfig {
                nameservers: Some(strings(&["3.3.3.3", "1.1.1.1", "4.4.4.4"])),
                searches: Some((0..40).map(|i| format!("d{i}")).collect()),
                options: None,
            });
        }
        let got = c.get_pod_dns(&p).expect("dns");
        // Duplicates go first, then the limit: 1.1.1.1 counts once.
        assert_eq!(got.servers, ["1.1.1.1", "2.2.2.2", "3.3.3.3"]);
        assert_eq!(got.searches.len(), MAX_DNS_SEARCH_PATHS);
        assert_eq!(got.searches[..3], ["a", "b", "d0"]);
        let reasons: Vec<String> = recorder.take().into_iter().map(|e| e.reason).collect();
        assert_eq!(reasons, ["DNSConfigForming", "DNSConfigForming"]);
    }

    #[test]
    fn check_limits_for_resolv_conf_warns_on_the_node() {
        let check = |text: &str, domain: &str| {
            let f = resolv_file(text);
            let (c, recorder) = configurer(&[], domain, Some(f.path().into()));
            c.check_limits_for_resolv_conf();
            let events = recorder.take();
            for e in &events {
                assert_eq!(e.object, node_ref("testNode"));
                assert_eq!(e.reason, "CheckLimitsForResolvConf");
            }
            events.into_iter().map(|e| e.message).collect::<Vec<_>>()
        };
        let search = |n: usize| {
            format!(
                "search {}\n",
                (0..n)
                    .map(|i| format!("d{i}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            )
        };
        assert!(check(&search(29), "cluster.local").is_empty());
        let msgs = check(&search(30), "cluster.local");
        assert_eq!(msgs.len(), 1);
        assert!(
            msgs[0].ends_with("contains search line consisting of more than 29 domains!"),
            "{msgs:?}"
        );
        assert!(check(&search(32), "").is_empty());
        let msgs = check(&format!("search {}\n", "x".repeat(254)), "");
        assert!(
            msgs[0]
                .ends_with("contains a search path which length is more than allowed 253 chars!"),
            "{msgs:?}"
        );
        let line: Vec<String> = (0..9).map(|i| format!("{i}{}", "y".repeat(250))).collect();
        let msgs = check(&format!("search {}\n", line.join(" ")), "");
        assert!(
            msgs[0].ends_with("contains search line which length is more than allowed 2048 chars!"),
            "{msgs:?}"
        );
        let msgs = check("nameserver\n", "");
        assert!(msgs[0].contains("nameserver list is empty"), "{msgs:?}");

        // No file configured: nothing checked.
        let (c, recorder) = configurer(&[], "", None);
        c.check_limits_for_resolv_conf();
        assert!(recorder.strings().is_empty());
    }
}
