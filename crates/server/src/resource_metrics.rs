//! `/metrics/resource`: the CPU and memory figures metrics-server scrapes,
//! rendered from the stats summary (upstream
//! `pkg/kubelet/metrics/collectors/resource_metrics.go`, served from
//! `InstallAuthNotRequiredHandlers` in `pkg/kubelet/server/server.go`).
//!
//! Names, help texts, stability prefixes, labels and explicit sample
//! timestamps (the time each figure was read, in milliseconds) are
//! upstream's. The swap series (`node_swap_usage_bytes`,
//! `container_swap_usage_bytes`, `container_swap_limit_bytes`,
//! `pod_swap_usage_bytes`) are absent: the core crate's summary carries no
//! swap figures, and upstream leaves a series out when its figure is absent.
//! `scrape_error` is absent too: deprecated in 1.29, component-base hides it
//! from 1.30 on, so upstream's 1.35 kubelet does not serve it either.

use kubelet_container::stats::{ContainerStats, CpuStats, MemoryStats, PodStats, Summary};
use prometheus::proto::{Counter, Gauge, LabelPair, Metric, MetricFamily, MetricType};

use crate::Error;

/// One family being built: its name, help, type and samples.
struct Family {
    name: &'static str,
    help: &'static str,
    kind: MetricType,
    samples: Vec<Metric>,
}

impl Family {
    fn new(name: &'static str, help: &'static str, kind: MetricType) -> Family {
        Family {
            name,
            help,
            kind,
            samples: Vec::new(),
        }
    }

    /// Adds a sample with labels given as (name, value), already in
    /// upstream's order; `timestamp_ms` 0 means none.
    fn push(&mut self, value: f64, labels: &[(&str, &str)], timestamp_ms: i64) {
        let mut m = Metric::default();
        let mut pairs: Vec<LabelPair> = labels
            .iter()
            .map(|(k, v)| {
                let mut p = LabelPair::default();
                p.set_name((*k).to_owned());
                p.set_value((*v).to_owned());
                p
            })
            .collect();
        // The Go registry writes label pairs sorted by name.
        pairs.sort_by(|a, b| a.name().cmp(b.name()));
        m.set_label(pairs);
        match self.kind {
            MetricType::COUNTER => {
                let mut c = Counter::default();
                c.set_value(value);
                m.set_counter(c);
            }
            _ => {
                let mut g = Gauge::default();
                g.set_value(value);
                m.set_gauge(g);
            }
        }
        if timestamp_ms != 0 {
            m.set_timestamp_ms(timestamp_ms);
        }
        self.samples.push(m);
    }

    fn into_proto(mut self) -> MetricFamily {
        // The Go registry sorts a family's samples by their label values.
        self.samples.sort_by(|a, b| {
            let values = |m: &Metric| {
                m.get_label()
                    .iter()
                    .map(|l| l.value().to_owned())
                    .collect::<Vec<_>>()
            };
            values(a).cmp(&values(b))
        });
        let mut f = MetricFamily::default();
        f.set_name(self.name.to_owned());
        f.set_help(self.help.to_owned());
        f.set_field_type(self.kind);
        f.set_metric(self.samples);
        f
    }
}

fn millis(t: &Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>) -> i64 {
    t.as_ref().map(|t| t.0.as_millisecond()).unwrap_or(0)
}

fn cpu_seconds(cpu: &Option<CpuStats>) -> Option<(f64, i64)> {
    let cpu = cpu.as_ref()?;
    let ns = cpu.usage_core_nano_seconds?;
    Some((ns as f64 / 1e9, millis(&cpu.time)))
}

fn working_set(memory: &Option<MemoryStats>) -> Option<(f64, i64)> {
    let memory = memory.as_ref()?;
    let bytes = memory.working_set_bytes?;
    Some((bytes as f64, millis(&memory.time)))
}

/// Renders the families of upstream's resource metrics collector from a
/// summary (`None` when the summary could not be read: only the scrape
/// error gauges, set to 1), in the Prometheus text format 0.0.4.
pub(crate) fn render(summary: Option<&Summary>) -> Result<String, Error> {
    use MetricType::{COUNTER, GAUGE};
    let mut node_cpu = Family::new(
        "node_cpu_usage_seconds_total",
        "[STABLE] Cumulative cpu time consumed by the node in core-seconds",
        COUNTER,
    );
    let mut node_memory = Family::new(
        "node_memory_working_set_bytes",
        "[STABLE] Current working set of the node in bytes",
        GAUGE,
    );
    let mut container_start = Family::new(
        "container_start_time_seconds",
        "[STABLE] Start time of the container since unix epoch in seconds",
        GAUGE,
    );
    let mut container_cpu = Family::new(
        "container_cpu_usage_seconds_total",
        "[STABLE] Cumulative cpu time consumed by the container in core-seconds",
        COUNTER,
    );
    let mut container_memory = Family::new(
        "container_memory_working_set_bytes",
        "[STABLE] Current working set of the container in bytes",
        GAUGE,
    );
    let mut pod_cpu = Family::new(
        "pod_cpu_usage_seconds_total",
        "[STABLE] Cumulative cpu time consumed by the pod in core-seconds",
        COUNTER,
    );
    let mut pod_memory = Family::new(
        "pod_memory_working_set_bytes",
        "[STABLE] Current working set of the pod in bytes",
        GAUGE,
    );
    let mut resource_scrape_error = Family::new(
        "resource_scrape_error",
        "[STABLE] 1 if there was an error while getting container metrics, 0 otherwise",
        GAUGE,
    );
    let errors = if summary.is_some() { 0.0 } else { 1.0 };
    resource_scrape_error.push(errors, &[], 0);

    if let Some(s) = summary {
        if let Some((v, ts)) = cpu_seconds(&s.node.cpu) {
            node_cpu.push(v, &[], ts);
        }
        if let Some((v, ts)) = working_set(&s.node.memory) {
            node_memory.push(v, &[], ts);
        }
        for pod in &s.pods {
            let PodStats {
                pod_ref,
                containers,
                ..
            } = pod;
            let (name, ns) = (pod_ref.name.as_str(), pod_ref.namespace.as_str());
            for c in containers {
                let ContainerStats {
                    name: container,
                    start_time,
                    ..
                } = c;
                let labels = [
                    ("container", container.as_str()),
                    ("pod", name),
                    ("namespace", ns),
                ];
                // Upstream skips a start time at or before the epoch.
                if let Some(t) = start_time
                    && t.0.as_second() > 0
                {
                    let seconds = t.0.as_nanosecond() as f64 / 1e9;
                    container_start.push(seconds, &labels, 0);
                }
                if let Some((v, ts)) = cpu_seconds(&c.cpu) {
                    container_cpu.push(v, &labels, ts);
                }
                if let Some((v, ts)) = working_set(&c.memory) {
                    container_memory.push(v, &labels, ts);
                }
            }
            let labels = [("pod", name), ("namespace", ns)];
            if let Some((v, ts)) = cpu_seconds(&pod.cpu) {
                pod_cpu.push(v, &labels, ts);
            }
            if let Some((v, ts)) = working_set(&pod.memory) {
                pod_memory.push(v, &labels, ts);
            }
        }
    }

    let mut families: Vec<MetricFamily> = [
        node_cpu,
        node_memory,
        container_start,
        container_cpu,
        container_memory,
        pod_cpu,
        pod_memory,
        resource_scrape_error,
    ]
    .into_iter()
    .filter(|f| !f.samples.is_empty())
    .map(Family::into_proto)
    .collect();
    // As the Go registry's Gather: families sorted by name.
    families.sort_by(|a, b| a.name().cmp(b.name()));
    let mut buf = Vec::with_capacity(4096);
    prometheus::Encoder::encode(&prometheus::TextEncoder::new(), &families, &mut buf)?;
    String::from_utf8(buf).map_err(|e| Error::Host(format!("metrics are not UTF-8: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use kubelet_container::stats::{NodeStats, PodReference};

    fn at(ms: i64) -> Option<Time> {
        Some(Time(
            k8s_openapi::jiff::Timestamp::from_millisecond(ms).expect("valid time"),
        ))
    }

    fn cpu(ns: u64, ms: i64) -> Option<CpuStats> {
        Some(CpuStats {
            time: at(ms),
            usage_core_nano_seconds: Some(ns),
            ..CpuStats::default()
        })
    }

    fn mem(bytes: u64, ms: i64) -> Option<MemoryStats> {
        Some(MemoryStats {
            time: at(ms),
            working_set_bytes: Some(bytes),
            ..MemoryStats::default()
        })
    }

    /// The samples of upstream's `TestCollectResourceMetrics` ("arbitrary
    /// container metrics for different container, pods and namespaces"),
    /// with the same expected lines.
    #[test]
    fn renders_upstreams_expected_text() {
        const T: i64 = 1_624_396_278_302;
        let container = |name: &str| ContainerStats {
            name: name.into(),
            start_time: at(1_624_396_278_302),
            cpu: cpu(10_000_000_000, T),
            memory: mem(1000, T),
            ..ContainerStats::default()
        };
        let pod = |name: &str, ns: &str, containers: Vec<ContainerStats>| PodStats {
            pod_ref: PodReference {
                name: name.into(),
                namespace: ns.into(),
                uid: "uid".into(),
            },
            containers,
            cpu: cpu(10_000_000_000, T),
            memory: mem(1000, T),
            ..PodStats::default()
        };
        let summary = Summary {
            node: NodeStats {
                cpu: cpu(10_000_000_000, T),
                memory: mem(1000, T),
                ..NodeStats::default()
            },
            pods: vec![
                pod(
                    "pod_a",
                    "namespace_a",
                    vec![container("container_a"), container("container_b")],
                ),
                pod("pod_b", "namespace_b", vec![container("container_a")]),
            ],
        };
        let text = render(Some(&summary)).expect("renders");
        for line in [
            "# HELP container_cpu_usage_seconds_total [STABLE] Cumulative cpu time consumed by the container in core-seconds",
            "# TYPE container_cpu_usage_seconds_total counter",
            "container_cpu_usage_seconds_total{container=\"container_a\",namespace=\"namespace_a\",pod=\"pod_a\"} 10 1624396278302",
            "container_cpu_usage_seconds_total{container=\"container_a\",namespace=\"namespace_b\",pod=\"pod_b\"} 10 1624396278302",
            "container_cpu_usage_seconds_total{container=\"container_b\",namespace=\"namespace_a\",pod=\"pod_a\"} 10 1624396278302",
            "container_memory_working_set_bytes{container=\"container_a\",namespace=\"namespace_a\",pod=\"pod_a\"} 1000 1624396278302",
            "container_start_time_seconds{container=\"container_a\",namespace=\"namespace_a\",pod=\"pod_a\"} 1624396278.302",
            "# TYPE node_cpu_usage_seconds_total counter",
            "node_cpu_usage_seconds_total 10 1624396278302",
            "node_memory_working_set_bytes 1000 1624396278302",
            "pod_cpu_usage_seconds_total{namespace=\"namespace_a\",pod=\"pod_a\"} 10 1624396278302",
            "pod_memory_working_set_bytes{namespace=\"namespace_b\",pod=\"pod_b\"} 1000 1624396278302",
            "resource_scrape_error 0",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
        // Families in name order, as Go's registry gathers them.
        let names: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split(' ').next())
            .collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted);
    }

    #[test]
    fn a_summary_error_is_a_scrape_error_and_absent_figures_are_absent() {
        let text = render(None).expect("renders");
        assert!(
            text.lines().any(|l| l == "resource_scrape_error 1"),
            "{text}"
        );
        assert!(!text.contains("node_cpu"), "{text}");
        let text = render(Some(&Summary::default())).expect("renders");
        assert!(
            text.lines().any(|l| l == "resource_scrape_error 0"),
            "{text}"
        );
        assert!(!text.contains("node_memory_working_set_bytes"), "{text}");
    }
}
