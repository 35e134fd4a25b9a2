//! The kubelet-managed `/etc/hosts` of a pod's containers (upstream
//! `pkg/kubelet/kubelet_pods.go`: `makeHostsMount`, `ensureHostsFile`,
//! `managedHostsFileContent`, `nodeHostsFileContent`).

use std::path::Path;

use k8s_openapi::api::core::v1::{Container, Pod};

use crate::Error;

/// Where the managed file is mounted.
pub const ETC_HOSTS_PATH: &str = "/etc/hosts";

/// The pod's hostname and domain (upstream `GeneratePodHostNameAndDomain`):
/// `spec.hostname` or the pod name, at most 63 characters; with a
/// subdomain, `<subdomain>.<namespace>.svc.<cluster domain>`.
pub fn pod_hostname_and_domain(pod: &Pod, cluster_domain: &str) -> (String, Option<String>) {
    let spec = pod.spec.as_ref();
    let hostname = spec
        .and_then(|s| s.hostname.clone())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| pod.metadata.name.clone().unwrap_or_default())
        .chars()
        .take(63)
        .collect();
    let domain = spec
        .and_then(|s| s.subdomain.as_deref())
        .filter(|s| !s.is_empty())
        .map(|sub| {
            let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
            format!("{sub}.{ns}.svc.{cluster_domain}")
        });
    (hostname, domain)
}

fn host_aliases(pod: &Pod) -> String {
    let aliases = pod
        .spec
        .as_ref()
        .and_then(|s| s.host_aliases.as_deref())
        .unwrap_or_default();
    if aliases.is_empty() {
        return String::new();
    }
    let mut out = String::from("\n# Entries added by HostAliases.\n");
    for a in aliases {
        out.push_str(&format!(
            "{}\t{}\n",
            a.ip,
            a.hostnames.clone().unwrap_or_default().join("\t")
        ));
    }
    out
}

/// The file's content, byte for byte as upstream writes it. `node_hosts` is
/// the node's `/etc/hosts`, used for host-network pods.
pub fn hosts_file_content(
    pod: &Pod,
    pod_ips: &[String],
    cluster_domain: &str,
    node_hosts: Option<&str>,
) -> String {
    let host_network = pod
        .spec
        .as_ref()
        .and_then(|s| s.host_network)
        .unwrap_or(false);
    if host_network {
        return format!(
            "# Kubernetes-managed hosts file (host network).\n{}{}",
            node_hosts.unwrap_or_default(),
            host_aliases(pod)
        );
    }
    let (hostname, domain) = pod_hostname_and_domain(pod, cluster_domain);
    let mut out = String::from(
        "# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n",
    );
    for ip in pod_ips {
        match &domain {
            Some(d) => out.push_str(&format!("{ip}\t{hostname}.{d}\t{hostname}\n")),
            None => out.push_str(&format!("{ip}\t{hostname}\n")),
        }
    }
    out.push_str(&host_aliases(pod));
    out
}

/// Whether `container` gets the managed file: not when it mounts something
/// at `/etc/hosts` itself, and not before the pod has an IP (upstream
/// `shouldMountHostsFile`); host-network pods always get it.
pub fn should_mount_hosts_file(pod: &Pod, container: &Container, pod_ips: &[String]) -> bool {
    let host_network = pod
        .spec
        .as_ref()
        .and_then(|s| s.host_network)
        .unwrap_or(false);
    let own = container
        .volume_mounts
        .iter()
        .flatten()
        .any(|m| m.mount_path.trim_end_matches('/') == ETC_HOSTS_PATH);
    !own && (host_network || !pod_ips.is_empty())
}

/// Writes the file at `path` (mode 0644), replacing it atomically.
pub fn ensure_hosts_file(
    path: &Path,
    pod: &Pod,
    pod_ips: &[String],
    cluster_domain: &str,
) -> Result<(), Error> {
    let node_hosts = std::fs::read_to_string(ETC_HOSTS_PATH).ok();
    let content = hosts_file_content(pod, pod_ips, cluster_domain, node_hosts.as_deref());
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| Error::Io { path, source }
    };
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, content).map_err(io(&tmp))?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644)).map_err(io(&tmp))?;
    }
    std::fs::rename(&tmp, path).map_err(io(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(json: serde_json::Value) -> Pod {
        serde_json::from_value(json).expect("pod")
    }

    #[test]
    fn managed_content_matches_upstream() {
        let p = pod(serde_json::json!({
            "metadata": {"name": "web-node", "namespace": "ns"},
            "spec": {"containers": [], "subdomain": "sub",
                     "hostAliases": [{"ip": "10.1.2.3", "hostnames": ["a", "b"]}]}
        }));
        assert_eq!(
            hosts_file_content(&p, &["10.88.0.5".into()], "cluster.local", None),
            "# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n10.88.0.5\tweb-node.sub.ns.svc.cluster.local\tweb-node\n\n# Entries added by HostAliases.\n10.1.2.3\ta\tb\n"
        );
        let host = pod(serde_json::json!({
            "metadata": {"name": "h"}, "spec": {"containers": [], "hostNetwork": true}
        }));
        assert_eq!(
            hosts_file_content(&host, &[], "cluster.local", Some("127.0.0.1 node\n")),
            "# Kubernetes-managed hosts file (host network).\n127.0.0.1 node\n"
        );
    }

    #[test]
    fn a_container_mounting_its_own_hosts_file_keeps_it() {
        let p = pod(serde_json::json!({
            "metadata": {"name": "p"},
            "spec": {"containers": [
                {"name": "a"},
                {"name": "b", "volumeMounts": [{"name": "v", "mountPath": "/etc/hosts"}]}
            ]}
        }));
        let spec = p.spec.as_ref().expect("spec");
        let ips = ["10.0.0.1".to_owned()];
        assert!(should_mount_hosts_file(&p, &spec.containers[0], &ips));
        assert!(!should_mount_hosts_file(&p, &spec.containers[1], &ips));
        assert!(!should_mount_hosts_file(&p, &spec.containers[0], &[]));
    }
}
