//! The kubelet's predicate admission: whether a pod fits this node next to
//! the pods already admitted (upstream `predicateAdmitHandler.Admit` in
//! `pkg/kubelet/lifecycle/predicate.go`, which runs the scheduler's
//! `AdmissionCheck`: `noderesources.Fits`, `nodeports.Fits`, and the
//! `NoExecute` taint check).
//!
//! A pod bound past the scheduler (`spec.nodeName` set by its author, a
//! static pod, or a race with another scheduler) can ask for more than the
//! node has left: it is rejected here with upstream's reason (`OutOfcpu`,
//! `OutOfmemory`, `OutOfpods`, `OutOf<resource>`, `NodePorts`,
//! `TaintToleration`) and message, and the API shows it `Failed`.
//!
//! Left out, as the kubelet does not have the inputs: ephemeral-storage
//! requests (the node's ephemeral-storage allocatable is computed for the
//! Node status only), node affinity and the OS label checks (pods reach
//! this kubelet only through its own `spec.nodeName` watch or its static
//! sources).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Pod, Taint};
use kubelet_container::podres::{milli_to_value, pod_requests};

/// Why a pod does not fit: upstream's `PodAdmitResult` reason and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// `OutOfcpu`, `OutOfmemory`, `OutOfpods`, `NodePorts`, ...
    pub reason: String,
    /// Worded as upstream (`Node didn't have enough resource: cpu,
    /// requested: 2000, used: 500, capacity: 1000`).
    pub message: String,
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.reason, self.message)
    }
}

/// What the node offers: allocatable in the container manager's units
/// (`cpu` in millicores, other resources in whole units), the pod
/// capacity (`maxPods`), and its taints.
#[derive(Debug, Clone)]
pub struct NodeFit<'a> {
    /// Allocatable by resource name (`pid` is ignored).
    pub allocatable: &'a BTreeMap<String, i64>,
    /// At most this many pods (upstream `allowedPodNumber`).
    pub max_pods: usize,
    /// The Node's taints (only `NoExecute` ones matter to the kubelet).
    pub taints: &'a [Taint],
}

/// Upstream `InsufficientResourceError.Error()`.
fn insufficient(name: &str, requested: i64, used: i64, capacity: i64) -> Rejection {
    let reason = match name {
        "cpu" => "OutOfcpu".to_owned(),
        "memory" => "OutOfmemory".to_owned(),
        "pods" => "OutOfpods".to_owned(),
        other => format!("OutOf{other}"),
    };
    Rejection {
        reason,
        message: format!(
            "Node didn't have enough resource: {name}, requested: {requested}, used: {used}, capacity: {capacity}"
        ),
    }
}

/// A request in the units upstream reports: millicores for `cpu`, whole
/// units (rounded up) otherwise.
fn in_node_units(name: &str, milli: i64) -> i64 {
    if name == "cpu" {
        milli
    } else {
        milli_to_value(milli)
    }
}

/// Whether `pod` fits `node` next to `others`, the pods already admitted
/// and not terminated (upstream `generalFilter` over a `NodeInfo` of
/// `attrs.OtherPods`). The first failure is returned, in upstream's order:
/// pods, cpu, memory, other resources (by name), host ports, then an
/// untolerated `NoExecute` taint (not for static pods).
pub fn admit(pod: &Pod, others: &[&Pod], node: &NodeFit<'_>) -> Result<(), Rejection> {
    admit_os(pod)?;
    if others.len() >= node.max_pods {
        return Err(insufficient(
            "pods",
            1,
            others.len() as i64,
            node.max_pods as i64,
        ));
    }
    resources_fit(pod, others, node.allocatable)?;
    if !host_ports_fit(pod, others) {
        return Err(Rejection {
            reason: "NodePorts".into(),
            message: "Predicate NodePorts failed: node(s) didn't have free ports for the requested pod ports".into(),
        });
    }
    if !kubelet_container::pod::is_static_pod(pod) && untolerated_no_execute(pod, node.taints) {
        return Err(Rejection {
            reason: "TaintToleration".into(),
            message:
                "Predicate TaintToleration failed: node(s) had taints that the pod didn't tolerate"
                    .into(),
        });
    }
    Ok(())
}

/// The checks of upstream's predicate handler that preemption would not
/// help, which come first (`pkg/kubelet/lifecycle/predicate.go`): a pod
/// whose `kubernetes.io/os` label names another OS than the node's
/// (`PodOSSelectorNodeLabelDoesNotMatch`; the node here is always `linux`,
/// the label this kubelet registers), or whose `spec.os.name` is not
/// `linux` (`PodOSNotSupported`).
pub fn admit_os(pod: &Pod) -> Result<(), Rejection> {
    let label = pod
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get("kubernetes.io/os"));
    if label.is_some_and(|os| os != "linux") {
        return Err(Rejection {
            reason: "PodOSSelectorNodeLabelDoesNotMatch".into(),
            message: "Failed to admit pod as the `kubernetes.io/os` label doesn't match node label"
                .into(),
        });
    }
    let os = pod.spec.as_ref().and_then(|s| s.os.as_ref());
    if os.is_some_and(|os| os.name != "linux") {
        return Err(Rejection {
            reason: "PodOSNotSupported".into(),
            message: "Failed to admit pod as the OS field doesn't match node OS".into(),
        });
    }
    Ok(())
}

/// The sysctls every pod may set (upstream `SafeSysctlAllowlist`,
/// `pkg/kubelet/sysctl/safe_sysctls.go`; those upstream gates on a kernel
/// version need 4.15 at most, older than any kernel this kubelet supports).
pub const SAFE_SYSCTLS: &[&str] = &[
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
    "net.ipv4.tcp_rmem",
    "net.ipv4.tcp_wmem",
];

/// Upstream `utilsysctl.NormalizeName`: a name whose first separator is
/// `/` (`net/ipv4/conf/eno2.100/rp_filter`) has its `.` and `/` swapped.
pub fn normalize_sysctl_name(name: &str) -> String {
    match name.find(['.', '/']) {
        Some(i) if name.as_bytes()[i] == b'/' => name
            .chars()
            .map(|c| match c {
                '.' => '/',
                '/' => '.',
                c => c,
            })
            .collect(),
        _ => name.to_owned(),
    }
}

/// Upstream's sysctl admit handler (`patternAllowlist.Admit`,
/// `pkg/kubelet/sysctl/allowlist.go`) with the safe sysctls only
/// (`allowedUnsafeSysctls` is refused by the config): a pod setting
/// another sysctl, or a net sysctl with `hostNetwork` (`kernel.shm_*` with
/// `hostIPC`), is rejected with reason `SysctlForbidden`.
pub fn admit_sysctls(pod: &Pod) -> Result<(), Rejection> {
    let Some(spec) = pod.spec.as_ref() else {
        return Ok(());
    };
    let sysctls = spec
        .security_context
        .as_ref()
        .and_then(|s| s.sysctls.as_deref())
        .unwrap_or_default();
    for s in sysctls {
        let name = normalize_sysctl_name(&s.name);
        let error = if !SAFE_SYSCTLS.contains(&name.as_str()) {
            Some(format!("{name:?} not allowlisted"))
        } else if name.starts_with("net.") && spec.host_network == Some(true) {
            Some(format!("{name:?} not allowed with host net enabled"))
        } else if name.starts_with("kernel.shm") && spec.host_ipc == Some(true) {
            Some(format!("{name:?} not allowed with host ipc enabled"))
        } else {
            None
        };
        if let Some(e) = error {
            return Err(Rejection {
                reason: "SysctlForbidden".into(),
                message: format!("forbidden sysctl: {e}"),
            });
        }
    }
    Ok(())
}

/// Upstream `noderesources.Fits` without the pod count: each resource the
/// pod requests against allocatable minus what `others` request. A
/// resource the node does not list is skipped, as upstream's
/// `removeMissingExtendedResources` does for extended resources; cpu and
/// memory are always listed by the container manager.
fn resources_fit(
    pod: &Pod,
    others: &[&Pod],
    allocatable: &BTreeMap<String, i64>,
) -> Result<(), Rejection> {
    let wanted = pod_requests(pod);
    if wanted.iter().all(|(_, v)| v == 0) {
        return Ok(());
    }
    let mut used: BTreeMap<&str, i64> = BTreeMap::new();
    for other in others {
        for (name, v) in pod_requests(other).iter() {
            if let Some((key, _)) = allocatable.get_key_value(name) {
                *used.entry(key.as_str()).or_default() += v;
            }
        }
    }
    // Upstream's order: cpu, memory, then the scalar resources.
    let mut names: Vec<&str> = wanted.iter().map(|(k, _)| k).collect();
    names.sort_by_key(|n| match *n {
        "cpu" => (0, *n),
        "memory" => (1, *n),
        _ => (2, *n),
    });
    for name in names {
        if name == "pid" || name == "pods" || name == "ephemeral-storage" {
            continue;
        }
        let Some(&capacity) = allocatable.get(name) else {
            continue;
        };
        let requested = in_node_units(name, wanted.get(name).copied().unwrap_or(0));
        let used = in_node_units(name, used.get(name).copied().unwrap_or(0));
        if requested > 0 && requested > capacity - used {
            return Err(insufficient(name, requested, used, capacity));
        }
    }
    Ok(())
}

/// One host port a container asks for (upstream `schedutil.HostPortInfo`).
#[derive(Debug, PartialEq, Eq)]
struct HostPort {
    ip: String,
    protocol: String,
    port: i32,
}

fn host_ports(pod: &Pod) -> Vec<HostPort> {
    let Some(spec) = pod.spec.as_ref() else {
        return Vec::new();
    };
    spec.init_containers
        .iter()
        .flatten()
        .chain(&spec.containers)
        .flat_map(|c| c.ports.iter().flatten())
        .filter_map(|p| {
            let port = p.host_port.filter(|&h| h > 0)?;
            Some(HostPort {
                ip: p
                    .host_ip
                    .clone()
                    .filter(|ip| !ip.is_empty())
                    .unwrap_or_else(|| "0.0.0.0".into()),
                protocol: p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                port,
            })
        })
        .collect()
}

/// Upstream `nodeports.Fits` / `HostPortInfo.CheckConflict`: the same
/// port and protocol on the same address, or on any address when either
/// side binds `0.0.0.0`.
fn host_ports_fit(pod: &Pod, others: &[&Pod]) -> bool {
    let wanted = host_ports(pod);
    if wanted.is_empty() {
        return true;
    }
    let taken: Vec<HostPort> = others.iter().flat_map(|p| host_ports(p)).collect();
    !wanted.iter().any(|w| {
        taken.iter().any(|t| {
            t.port == w.port
                && t.protocol == w.protocol
                && (t.ip == w.ip || t.ip == "0.0.0.0" || w.ip == "0.0.0.0")
        })
    })
}

/// Upstream `FindMatchingUntoleratedTaint` over the `NoExecute` taints
/// (`k8s.io/component-helpers/scheduling/corev1`, `ToleratesTaint`).
fn untolerated_no_execute(pod: &Pod, taints: &[Taint]) -> bool {
    let tolerations = pod
        .spec
        .as_ref()
        .and_then(|s| s.tolerations.as_deref())
        .unwrap_or_default();
    taints
        .iter()
        .filter(|t| t.effect == "NoExecute")
        .any(|taint| {
            !tolerations.iter().any(|tol| {
                let effect_ok = tol
                    .effect
                    .as_deref()
                    .is_none_or(|e| e.is_empty() || e == taint.effect);
                let key_ok = tol
                    .key
                    .as_deref()
                    .is_none_or(|k| k.is_empty() || k == taint.key);
                let value_ok = match tol.operator.as_deref() {
                    Some("Exists") => true,
                    None | Some("" | "Equal") => {
                        tol.value.as_deref().unwrap_or_default()
                            == taint.value.as_deref().unwrap_or_default()
                    }
                    Some(_) => false,
                };
                effect_ok && key_ok && value_ok
            })
        })
}

#[cfg(test)]
mod tests {

    /// Upstream `rejectPodAdmissionBasedOnOSField` and
    /// `rejectPodAdmissionBasedOnOSSelector`, checked by the
    /// [NodeConformance] spec "PodOSRejection should reject pod when the node
    /// OS doesn't match pod's OS" (`common/node/pod_admission.go`).
    #[test]
    fn pods_for_another_os_are_rejected() {
        let with = |v: serde_json::Value| -> Pod { serde_json::from_value(v).expect("pod") };
        let windows = with(serde_json::json!({
            "metadata": {"name": "p"}, "spec": {"containers": [], "os": {"name": "windows"}}
        }));
        assert_eq!(
            admit_os(&windows).expect_err("windows").reason,
            "PodOSNotSupported"
        );
        let labelled = with(serde_json::json!({
            "metadata": {"name": "p", "labels": {"kubernetes.io/os": "windows"}}, "spec": {"containers": []}
        }));
        assert_eq!(
            admit_os(&labelled).expect_err("label").reason,
            "PodOSSelectorNodeLabelDoesNotMatch"
        );
        let linux = with(serde_json::json!({
            "metadata": {"name": "p", "labels": {"kubernetes.io/os": "linux"}},
            "spec": {"containers": [], "os": {"name": "linux"}}
        }));
        assert!(admit_os(&linux).is_ok());
    }

    /// Upstream `pkg/kubelet/sysctl/allowlist.go`, checked by the
    /// [NodeConformance] spec "Sysctls should not launch unsafe, but not
    /// explicitly enabled sysctls on the node" (`common/node/sysctl.go`).
    #[test]
    fn only_safe_sysctls_are_admitted() {
        let with = |name: &str, host_network: bool| -> Pod {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": "p", "uid": "u"},
                "spec": {"containers": [], "hostNetwork": host_network,
                    "securityContext": {"sysctls": [{"name": name, "value": "1"}]}}
            }))
            .expect("pod")
        };
        let err = admit_sysctls(&with("kernel.msgmax", false)).expect_err("unsafe");
        assert_eq!(err.reason, "SysctlForbidden");
        assert_eq!(
            err.message,
            "forbidden sysctl: \"kernel.msgmax\" not allowlisted"
        );
        assert!(admit_sysctls(&with("kernel.shm_rmid_forced", false)).is_ok());
        assert!(
            admit_sysctls(&with("kernel/shm_rmid_forced", false)).is_ok(),
            "slashes"
        );
        assert!(admit_sysctls(&with("net.ipv4.tcp_syncookies", false)).is_ok());
        assert!(
            admit_sysctls(&with("net.ipv4.tcp_syncookies", true)).is_err(),
            "host net"
        );
        assert_eq!(
            normalize_sysctl_name("net/ipv4/conf/eno2.100/rp_filter"),
            "net.ipv4.conf.eno2/100.rp_filter"
        );
    }
    use super::*;
    use k8s_openapi::api::core::v1::{
        Container, ContainerPort, PodSpec, ResourceRequirements, Toleration,
    };
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

    fn pod(name: &str, cpu: &str, memory: &str) -> Pod {
        let mut requests = BTreeMap::new();
        if !cpu.is_empty() {
            requests.insert("cpu".to_owned(), Quantity(cpu.into()));
        }
        if !memory.is_empty() {
            requests.insert("memory".to_owned(), Quantity(memory.into()));
        }
        Pod {
            metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                name: Some(name.into()),
                namespace: Some("default".into()),
                uid: Some(format!("uid-{name}")),
                ..Default::default()
            },
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "app".into(),
                    resources: Some(ResourceRequirements {
                        requests: Some(requests),
                        ..Default::default()
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn node(alloc: &BTreeMap<String, i64>) -> NodeFit<'_> {
        NodeFit {
            allocatable: alloc,
            max_pods: 110,
            taints: &[],
        }
    }

    fn alloc() -> BTreeMap<String, i64> {
        BTreeMap::from([
            ("cpu".to_owned(), 2000),
            ("memory".to_owned(), 1 << 30),
            ("pid".to_owned(), 1000),
        ])
    }

    #[test]
    fn a_pod_asking_more_cpu_than_left_is_out_of_cpu_with_upstreams_message() {
        let a = alloc();
        let running = pod("a", "1500m", "");
        let err = admit(&pod("b", "1", ""), &[&running], &node(&a)).unwrap_err();
        assert_eq!(err.reason, "OutOfcpu");
        assert_eq!(
            err.message,
            "Node didn't have enough resource: cpu, requested: 1000, used: 1500, capacity: 2000"
        );
        assert!(admit(&pod("c", "500m", ""), &[&running], &node(&a)).is_ok());
    }

    #[test]
    fn memory_is_checked_in_bytes_after_cpu() {
        let a = alloc();
        let err = admit(&pod("b", "100m", "2Gi"), &[], &node(&a)).unwrap_err();
        assert_eq!(err.reason, "OutOfmemory");
        assert_eq!(
            err.message,
            "Node didn't have enough resource: memory, requested: 2147483648, used: 0, capacity: 1073741824"
        );
        // Both short: cpu is named first, as upstream.
        let err = admit(&pod("c", "3", "2Gi"), &[], &node(&a)).unwrap_err();
        assert_eq!(err.reason, "OutOfcpu");
    }

    #[test]
    fn a_pod_without_requests_always_fits_and_the_pod_count_comes_first() {
        let a = alloc();
        let hog = pod("hog", "2", "1Gi");
        assert!(admit(&pod("free", "", ""), &[&hog], &node(&a)).is_ok());
        let full = NodeFit {
            max_pods: 1,
            ..node(&a)
        };
        let err = admit(&pod("free", "", ""), &[&hog], &full).unwrap_err();
        assert_eq!(err.reason, "OutOfpods");
        assert_eq!(
            err.message,
            "Node didn't have enough resource: pods, requested: 1, used: 1, capacity: 1"
        );
    }

    #[test]
    fn an_extended_resource_the_node_lacks_is_skipped_and_one_it_has_is_counted() {
        let mut a = alloc();
        let mut p = pod("gpu", "", "");
        p.spec.as_mut().unwrap().containers[0]
            .resources
            .as_mut()
            .unwrap()
            .requests
            .as_mut()
            .unwrap()
            .insert("example.com/gpu".into(), Quantity("2".into()));
        assert!(admit(&p, &[], &node(&a)).is_ok());
        a.insert("example.com/gpu".into(), 1);
        let err = admit(&p, &[], &node(&a)).unwrap_err();
        assert_eq!(err.reason, "OutOfexample.com/gpu");
    }

    fn with_port(mut p: Pod, host_ip: Option<&str>, port: i32) -> Pod {
        p.spec.as_mut().unwrap().containers[0].ports = Some(vec![ContainerPort {
            container_port: 80,
            host_port: Some(port),
            host_ip: host_ip.map(Into::into),
            ..Default::default()
        }]);
        p
    }

    #[test]
    fn a_host_port_taken_on_the_same_or_any_address_conflicts() {
        let a = alloc();
        let web = with_port(pod("web", "", ""), None, 8080);
        let err = admit(
            &with_port(pod("b", "", ""), Some("10.0.0.1"), 8080),
            &[&web],
            &node(&a),
        )
        .unwrap_err();
        assert_eq!(err.reason, "NodePorts");
        assert!(admit(&with_port(pod("c", "", ""), None, 8081), &[&web], &node(&a)).is_ok());
        let one = with_port(pod("one", "", ""), Some("10.0.0.1"), 9000);
        assert!(
            admit(
                &with_port(pod("d", "", ""), Some("10.0.0.2"), 9000),
                &[&one],
                &node(&a)
            )
            .is_ok()
        );
    }

    #[test]
    fn an_untolerated_no_execute_taint_rejects_but_no_schedule_does_not() {
        let a = alloc();
        let taints = [
            Taint {
                key: "dedicated".into(),
                value: Some("db".into()),
                effect: "NoExecute".into(),
                ..Default::default()
            },
            Taint {
                key: "other".into(),
                effect: "NoSchedule".into(),
                ..Default::default()
            },
        ];
        let n = NodeFit {
            taints: &taints,
            ..node(&a)
        };
        let err = admit(&pod("p", "", ""), &[], &n).unwrap_err();
        assert_eq!(err.reason, "TaintToleration");
        let mut tolerant = pod("t", "", "");
        tolerant.spec.as_mut().unwrap().tolerations = Some(vec![Toleration {
            key: Some("dedicated".into()),
            operator: Some("Equal".into()),
            value: Some("db".into()),
            effect: Some("NoExecute".into()),
            ..Default::default()
        }]);
        assert!(admit(&tolerant, &[], &n).is_ok());
        let mut everything = pod("e", "", "");
        everything.spec.as_mut().unwrap().tolerations = Some(vec![Toleration {
            operator: Some("Exists".into()),
            ..Default::default()
        }]);
        assert!(admit(&everything, &[], &n).is_ok());
    }
}
