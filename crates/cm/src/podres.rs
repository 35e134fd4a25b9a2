//! Pod-level sums of requests and limits (upstream
//! `staging/src/k8s.io/component-helpers/resource/helpers.go`, `PodRequests`
//! and `PodLimits`), in milli-units.
//!
//! Quantities that do not parse count as zero and are logged: the API server
//! validates them before a pod reaches a kubelet, and the functions built on
//! these sums (QoS class, cgroup values) have no error to return upstream
//! either. [`crate::validate_pod_resources`] reports them as errors.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Pod, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use crate::quantity;

/// Resource name → amount in thousandths (milli-CPU for `cpu`, milli-bytes for memory).
pub(crate) type MilliList = BTreeMap<String, i64>;

/// The amount of `name` in `list`, in thousandths (0 when absent or invalid).
pub(crate) fn milli_of(list: Option<&BTreeMap<String, Quantity>>, name: &str) -> i64 {
    list.and_then(|l| l.get(name))
        .map(|q| parse_milli(name, q))
        .unwrap_or(0)
}

/// Whether `name` is present in `list` at all (even as zero).
pub(crate) fn has(list: Option<&BTreeMap<String, Quantity>>, name: &str) -> bool {
    list.is_some_and(|l| l.contains_key(name))
}

pub(crate) fn parse_milli(name: &str, q: &Quantity) -> i64 {
    match quantity::milli_value(&q.0) {
        Ok(v) => v,
        Err(err) => {
            tracing::warn!(resource = name, %err, "ignoring invalid quantity");
            0
        }
    }
}

/// Whole units from thousandths, rounded up as upstream's `Value()`.
pub(crate) fn milli_to_value(m: i64) -> i64 {
    if m >= 0 {
        m.saturating_add(999) / 1000
    } else {
        -((-m).saturating_add(999) / 1000)
    }
}

pub(crate) fn to_milli_list(list: Option<&BTreeMap<String, Quantity>>) -> MilliList {
    list.map(|l| {
        l.iter()
            .map(|(k, q)| (k.clone(), parse_milli(k, q)))
            .collect()
    })
    .unwrap_or_default()
}

fn add_into(dst: &mut MilliList, src: &MilliList) {
    for (k, v) in src {
        let e = dst.entry(k.clone()).or_insert(0);
        *e = e.saturating_add(*v);
    }
}

fn max_into(dst: &mut MilliList, src: &MilliList) {
    for (k, v) in src {
        let e = dst.entry(k.clone()).or_insert(*v);
        if *v > *e {
            *e = *v;
        }
    }
}

/// Whether an init container is a sidecar (`restartPolicy: Always`).
pub(crate) fn is_restartable_init(c: &Container) -> bool {
    c.restart_policy.as_deref() == Some("Always")
}

fn requirements_list(c: &Container, limits: bool) -> MilliList {
    let r: Option<&ResourceRequirements> = c.resources.as_ref();
    to_milli_list(r.and_then(|r| {
        if limits {
            r.limits.as_ref()
        } else {
            r.requests.as_ref()
        }
    }))
}

/// Upstream's pod request/limit aggregation: sum of app containers and
/// sidecars, at least the largest init container (plus the sidecars started
/// before it), plus the pod overhead. `visit` sees every container's list
/// (upstream's `ContainerFn`).
fn aggregate(pod: &Pod, limits: bool, visit: &mut dyn FnMut(&MilliList)) -> MilliList {
    let Some(spec) = pod.spec.as_ref() else {
        return MilliList::new();
    };
    let mut sum = MilliList::new();
    for c in &spec.containers {
        let l = requirements_list(c, limits);
        visit(&l);
        add_into(&mut sum, &l);
    }
    let mut restartable = MilliList::new();
    let mut init_max = MilliList::new();
    for c in spec.init_containers.iter().flatten() {
        let l = requirements_list(c, limits);
        visit(&l);
        if is_restartable_init(c) {
            add_into(&mut sum, &l);
            add_into(&mut restartable, &l);
            max_into(&mut init_max, &restartable);
        } else {
            let mut tmp = l;
            add_into(&mut tmp, &restartable);
            max_into(&mut init_max, &tmp);
        }
    }
    max_into(&mut sum, &init_max);
    if let Some(overhead) = spec.overhead.as_ref() {
        let overhead = to_milli_list(Some(overhead));
        if limits {
            // Overhead only raises limits that are set (upstream PodLimits).
            for (k, v) in &overhead {
                if let Some(e) = sum.get_mut(k) {
                    *e = e.saturating_add(*v);
                }
            }
        } else {
            add_into(&mut sum, &overhead);
        }
    }
    sum
}

/// The pod's effective requests (upstream `resource.PodRequests`).
pub(crate) fn pod_requests(pod: &Pod) -> MilliList {
    let mut reqs = aggregate(pod, false, &mut |_| {});
    if let Some(r) = pod_level(pod) {
        // Pod-level resources (KEP 2837) replace the aggregate for cpu and memory.
        for name in ["cpu", "memory"] {
            if has(r.requests.as_ref(), name) {
                reqs.insert(name.into(), milli_of(r.requests.as_ref(), name));
            }
        }
    }
    reqs
}

/// The pod's effective limits (upstream `resource.PodLimits`) and whether
/// every container declared a cpu limit and a memory limit.
pub(crate) fn pod_limits(pod: &Pod) -> (MilliList, bool, bool) {
    let mut cpu_declared = true;
    let mut mem_declared = true;
    let mut limits = aggregate(pod, true, &mut |l| {
        if l.get("cpu").copied().unwrap_or(0) == 0 {
            cpu_declared = false;
        }
        if l.get("memory").copied().unwrap_or(0) == 0 {
            mem_declared = false;
        }
    });
    if let Some(r) = pod_level(pod) {
        for (name, declared) in [("cpu", &mut cpu_declared), ("memory", &mut mem_declared)] {
            if has(r.limits.as_ref(), name) {
                limits.insert(name.into(), milli_of(r.limits.as_ref(), name));
                *declared = true;
            }
        }
    }
    (limits, cpu_declared, mem_declared)
}

/// Pod-level `spec.resources` when it sets cpu or memory.
pub(crate) fn pod_level(pod: &Pod) -> Option<&ResourceRequirements> {
    let r = pod.spec.as_ref()?.resources.as_ref()?;
    let sets = |l: Option<&BTreeMap<String, Quantity>>| {
        l.is_some_and(|l| l.contains_key("cpu") || l.contains_key("memory"))
    };
    (sets(r.requests.as_ref()) || sets(r.limits.as_ref())).then_some(r)
}
