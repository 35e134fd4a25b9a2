//! Pod-level sums of requests and limits (upstream
//! `staging/src/k8s.io/component-helpers/resource/helpers.go`, `PodRequests`
//! and `PodLimits`), in milli-units.
//!
//! Quantities that do not parse count as zero and are logged: the API server
//! validates them before a pod reaches a kubelet, and the functions built on
//! these sums (QoS class, cgroup values) have no error to return upstream
//! either. `kubelet-cm`'s `validate_pod_resources` reports them as errors,
//! and the pod config refuses such static pods.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Pod, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use crate::quantity;

/// Resource name → amount in thousandths (milli-CPU for `cpu`, milli-bytes
/// for memory). Names are borrowed from the pod, and the few entries a pod
/// has live in a small vector: no allocation per name, no tree.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MilliList<'a>(Vec<(&'a str, i64)>);

impl<'a> MilliList<'a> {
    /// The amount of `name`, if listed.
    pub fn get(&self, name: &str) -> Option<&i64> {
        self.0.iter().find(|(k, _)| *k == name).map(|(_, v)| v)
    }

    /// Every entry, in the order listed.
    pub fn iter(&self) -> impl Iterator<Item = (&'a str, i64)> + '_ {
        self.0.iter().copied()
    }

    /// Sets the amount of `name`.
    pub fn insert(&mut self, name: &'a str, v: i64) {
        match self.0.iter_mut().find(|(k, _)| *k == name) {
            Some(e) => e.1 = v,
            None => self.0.push((name, v)),
        }
    }

    fn add(&mut self, name: &'a str, v: i64) {
        match self.0.iter_mut().find(|(k, _)| *k == name) {
            Some(e) => e.1 = e.1.saturating_add(v),
            None => self.0.push((name, v)),
        }
    }

    fn add_all(&mut self, other: &MilliList<'a>) {
        for (k, v) in other.iter() {
            self.add(k, v);
        }
    }

    fn max_all(&mut self, other: &MilliList<'a>) {
        for (k, v) in other.iter() {
            match self.0.iter_mut().find(|(n, _)| *n == k) {
                Some(e) => e.1 = e.1.max(v),
                None => self.0.push((k, v)),
            }
        }
    }
}

/// The amount of `name` in `list`, in thousandths (0 when absent or invalid).
pub fn milli_of(list: Option<&BTreeMap<String, Quantity>>, name: &str) -> i64 {
    list.and_then(|l| l.get(name))
        .map(|q| parse_milli(name, q))
        .unwrap_or(0)
}

/// Whether `name` is present in `list` at all (even as zero).
pub fn has(list: Option<&BTreeMap<String, Quantity>>, name: &str) -> bool {
    list.is_some_and(|l| l.contains_key(name))
}

/// `q` in thousandths; an invalid quantity counts as 0 and is logged
/// naming the resource.
pub fn parse_milli(name: &str, q: &Quantity) -> i64 {
    match quantity::milli_value(&q.0) {
        Ok(v) => v,
        Err(err) => {
            tracing::warn!(resource = name, %err, "ignoring invalid quantity");
            0
        }
    }
}

/// Whole units from thousandths, rounded up as upstream's `Value()`.
pub fn milli_to_value(m: i64) -> i64 {
    if m >= 0 {
        m.saturating_add(999) / 1000
    } else {
        -((-m).saturating_add(999) / 1000)
    }
}

/// Every entry of `list` in thousandths.
pub fn to_milli_list(list: Option<&BTreeMap<String, Quantity>>) -> MilliList<'_> {
    MilliList(
        list.map(|l| {
            l.iter()
                .map(|(k, q)| (k.as_str(), parse_milli(k, q)))
                .collect()
        })
        .unwrap_or_default(),
    )
}

/// Whether an init container is a sidecar (`restartPolicy: Always`).
pub fn is_restartable_init(c: &Container) -> bool {
    c.restart_policy.as_deref() == Some("Always")
}

fn requirements(c: &Container, limits: bool) -> Option<&BTreeMap<String, Quantity>> {
    let r: Option<&ResourceRequirements> = c.resources.as_ref();
    r.and_then(|r| {
        if limits {
            r.limits.as_ref()
        } else {
            r.requests.as_ref()
        }
    })
}

/// Upstream's pod request/limit aggregation: sum of app containers and
/// sidecars, at least the largest init container (plus the sidecars started
/// before it), plus the pod overhead. `visit` sees every container's cpu and
/// memory (upstream's `ContainerFn`).
fn aggregate<'a>(pod: &'a Pod, limits: bool, visit: &mut dyn FnMut(i64, i64)) -> MilliList<'a> {
    let Some(spec) = pod.spec.as_ref() else {
        return MilliList::default();
    };
    let mut sum = MilliList::default();
    for c in &spec.containers {
        let (mut cpu, mut mem) = (0, 0);
        for (k, q) in requirements(c, limits).into_iter().flatten() {
            let v = parse_milli(k, q);
            match k.as_str() {
                "cpu" => cpu = v,
                "memory" => mem = v,
                _ => {}
            }
            sum.add(k, v);
        }
        visit(cpu, mem);
    }
    if let Some(inits) = spec.init_containers.as_ref().filter(|i| !i.is_empty()) {
        let mut restartable = MilliList::default();
        let mut init_max = MilliList::default();
        for c in inits {
            let l = to_milli_list(requirements(c, limits));
            visit(
                l.get("cpu").copied().unwrap_or(0),
                l.get("memory").copied().unwrap_or(0),
            );
            if is_restartable_init(c) {
                sum.add_all(&l);
                restartable.add_all(&l);
                init_max.max_all(&restartable);
            } else {
                let mut tmp = l;
                tmp.add_all(&restartable);
                init_max.max_all(&tmp);
            }
        }
        sum.max_all(&init_max);
    }
    if let Some(overhead) = spec.overhead.as_ref() {
        for (k, q) in overhead {
            let v = parse_milli(k, q);
            if limits {
                // Overhead only raises limits that are set (upstream PodLimits).
                if sum.get(k).is_some() {
                    sum.add(k, v);
                }
            } else {
                sum.add(k, v);
            }
        }
    }
    sum
}

/// The pod's effective requests (upstream `resource.PodRequests`).
pub fn pod_requests(pod: &Pod) -> MilliList<'_> {
    let mut reqs = aggregate(pod, false, &mut |_, _| {});
    if let Some(r) = pod_level(pod) {
        // Pod-level resources (KEP 2837) replace the aggregate for cpu and memory.
        for name in ["cpu", "memory"] {
            if has(r.requests.as_ref(), name) {
                reqs.insert(name, milli_of(r.requests.as_ref(), name));
            }
        }
    }
    reqs
}

/// The pod's effective limits (upstream `resource.PodLimits`) and whether
/// every container declared a cpu limit and a memory limit.
pub fn pod_limits(pod: &Pod) -> (MilliList<'_>, bool, bool) {
    let mut cpu_declared = true;
    let mut mem_declared = true;
    let mut limits = aggregate(pod, true, &mut |cpu, mem| {
        if cpu == 0 {
            cpu_declared = false;
        }
        if mem == 0 {
            mem_declared = false;
        }
    });
    if let Some(r) = pod_level(pod) {
        for (name, declared) in [("cpu", &mut cpu_declared), ("memory", &mut mem_declared)] {
            if has(r.limits.as_ref(), name) {
                limits.insert(name, milli_of(r.limits.as_ref(), name));
                *declared = true;
            }
        }
    }
    (limits, cpu_declared, mem_declared)
}

/// Pod-level `spec.resources` when it sets cpu or memory.
pub fn pod_level(pod: &Pod) -> Option<&ResourceRequirements> {
    let r = pod.spec.as_ref()?.resources.as_ref()?;
    let sets = |l: Option<&BTreeMap<String, Quantity>>| {
        l.is_some_and(|l| l.contains_key("cpu") || l.contains_key("memory"))
    };
    (sets(r.requests.as_ref()) || sets(r.limits.as_ref())).then_some(r)
}
