//! Runs a container's probe once and turns the outcome into a cached
//! result (upstream `pkg/kubelet/prober/prober.go`), with the probe field
//! defaults of `pkg/apis/core/v1/defaults.go` (`SetDefaults_Probe`).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Pod, PodStatus, Probe};
use kubelet_container::events::{EventRecorder, EventType, NoopRecorder, container_ref, reason};
use kubelet_cri_client::RuntimeService;

use crate::Error;
use crate::probe::{self, Outcome, http::HttpProber, http::HttpRequest};
use crate::results::{ContainerId, ProbeResult};

/// The Kubernetes `major.minor` the probes' user agent names by default
/// (the API version this workspace builds against).
pub const DEFAULT_KUBE_VERSION: &str = kubelet_container::KUBE_VERSION;

/// How often a probe that could not run is retried before the attempt is
/// dropped (upstream `maxProbeRetries`).
pub const MAX_PROBE_RETRIES: usize = 3;

/// Which of a container's probes (upstream `probeType`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ProbeType {
    /// `livenessProbe`: a failure restarts the container.
    Liveness,
    /// `readinessProbe`: decides `containerStatuses[].ready`.
    Readiness,
    /// `startupProbe`: holds the other two back until it succeeds.
    Startup,
}

impl ProbeType {
    /// The probe of this type in a container's spec.
    pub fn spec_of(self, container: &Container) -> Option<&Probe> {
        match self {
            ProbeType::Liveness => container.liveness_probe.as_ref(),
            ProbeType::Readiness => container.readiness_probe.as_ref(),
            ProbeType::Startup => container.startup_probe.as_ref(),
        }
    }

    /// The value the result cache holds for a new container before its
    /// first conclusive probe: readiness Failure, liveness Success, startup
    /// Unknown (upstream `newWorker`).
    pub fn initial_value(self) -> ProbeResult {
        match self {
            ProbeType::Readiness => ProbeResult::Failure,
            ProbeType::Liveness => ProbeResult::Success,
            ProbeType::Startup => ProbeResult::Unknown,
        }
    }
}

impl fmt::Display for ProbeType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ProbeType::Liveness => "Liveness",
            ProbeType::Readiness => "Readiness",
            ProbeType::Startup => "Startup",
        })
    }
}

/// A probe's timing and thresholds with upstream's defaults applied:
/// `timeoutSeconds` 1, `periodSeconds` 10, `successThreshold` 1,
/// `failureThreshold` 3, `initialDelaySeconds` 0. A missing, zero or
/// negative value takes the default (upstream defaults zero; validation
/// rejects negatives, which a static pod may skip).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProbeTiming {
    /// Seconds after the container started before the first probe.
    pub initial_delay: Duration,
    /// How long one probe may take.
    pub timeout: Duration,
    /// Time between probes.
    pub period: Duration,
    /// Consecutive successes needed to record Success.
    pub success_threshold: u32,
    /// Consecutive failures needed to record Failure.
    pub failure_threshold: u32,
}

impl ProbeTiming {
    /// The timing of `probe`, defaulted.
    pub fn of(probe: &Probe) -> Self {
        let positive = |v: Option<i32>, default: u32| -> u32 {
            v.and_then(|v| u32::try_from(v).ok())
                .filter(|v| *v > 0)
                .unwrap_or(default)
        };
        let secs =
            |v: Option<i32>, default: u32| Duration::from_secs(u64::from(positive(v, default)));
        Self {
            initial_delay: Duration::from_secs(
                probe
                    .initial_delay_seconds
                    .and_then(|v| u64::try_from(v).ok())
                    .unwrap_or(0),
            ),
            timeout: secs(probe.timeout_seconds, 1),
            period: secs(probe.period_seconds, 10),
            success_threshold: positive(probe.success_threshold, 1),
            failure_threshold: positive(probe.failure_threshold, 3),
        }
    }
}

/// Runs probes: exec through the runtime, HTTP, TCP and gRPC over the
/// network. Cheap to clone.
#[derive(Clone)]
pub struct Prober {
    runtime: Arc<dyn RuntimeService>,
    http: HttpProber,
    user_agent: String,
    recorder: Arc<dyn EventRecorder>,
}

impl fmt::Debug for Prober {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Prober")
            .field("user_agent", &self.user_agent)
            .finish_non_exhaustive()
    }
}

impl Prober {
    /// A prober that execs through `runtime` and identifies itself as
    /// `kube-probe/<kube_version>`.
    pub fn new(runtime: Arc<dyn RuntimeService>, kube_version: &str) -> Self {
        Self {
            runtime,
            http: HttpProber::new(),
            user_agent: probe::user_agent(kube_version),
            recorder: Arc::new(NoopRecorder),
        }
    }

    /// Records upstream's probe events through `recorder` (default: none):
    /// a Warning `Unhealthy` event for every probe that fails (`Liveness
    /// probe failed: <output>`) or cannot run (`Readiness probe errored
    /// and resulted in unknown state: <error>`), and a Warning
    /// `ProbeWarning` for a success with a warning (`Startup probe
    /// warning: <output>`), about the container (upstream
    /// `prober.recordContainerEvent`). Every failed probe is recorded, not
    /// only the one that crosses `failureThreshold`, as upstream: the event
    /// recorder counts repeats.
    pub fn with_event_recorder(mut self, recorder: Arc<dyn EventRecorder>) -> Self {
        self.recorder = recorder;
        self
    }

    fn record(&self, pod: &Pod, container: &Container, reason: &str, message: String) {
        self.recorder.event(
            &container_ref(pod, &container.name),
            EventType::Warning,
            reason,
            message,
        );
    }

    /// Probes the container once (upstream `prober.probe`): no probe of
    /// this type is a success; a probe that could not run is retried
    /// [`MAX_PROBE_RETRIES`] times and then returned as `Err`; Success and
    /// Warning are [`ProbeResult::Success`], Failure and Unknown
    /// [`ProbeResult::Failure`]. Failures are logged at `debug` and
    /// recorded as upstream's events (see [`Prober::with_event_recorder`]).
    pub async fn probe(
        &self,
        probe_type: ProbeType,
        pod: &Pod,
        status: &PodStatus,
        container: &Container,
        container_id: &ContainerId,
    ) -> Result<ProbeResult, Error> {
        let Some(spec) = probe_type.spec_of(container) else {
            tracing::warn!(%probe_type, container = %container.name, "probe is nil");
            return Ok(ProbeResult::Success);
        };
        let pod_name = pod.metadata.name.as_deref().unwrap_or_default();
        let mut last = None;
        for _ in 0..MAX_PROBE_RETRIES {
            match self.run_probe(spec, status, container, container_id).await {
                Ok(r) => {
                    last = Some(Ok(r));
                    break;
                }
                Err(e) => last = Some(Err(e)),
            }
        }
        match last {
            Some(Ok((Outcome::Success, output))) => {
                tracing::trace!(%probe_type, pod = pod_name, container = %container.name, %output, "probe succeeded");
                Ok(ProbeResult::Success)
            }
            Some(Ok((Outcome::Warning, output))) => {
                tracing::debug!(%probe_type, pod = pod_name, container = %container.name, %output, "probe succeeded with a warning");
                self.record(
                    pod,
                    container,
                    reason::CONTAINER_PROBE_WARNING,
                    format!("{probe_type} probe warning: {output}"),
                );
                Ok(ProbeResult::Success)
            }
            Some(Ok((Outcome::Failure, output))) => {
                tracing::debug!(%probe_type, pod = pod_name, container = %container.name, %output, "probe failed");
                self.record(
                    pod,
                    container,
                    reason::CONTAINER_UNHEALTHY,
                    format!("{probe_type} probe failed: {output}"),
                );
                Ok(ProbeResult::Failure)
            }
            Some(Ok((outcome, output))) => {
                // Unknown without an error: upstream logs it, no event.
                tracing::debug!(%probe_type, pod = pod_name, container = %container.name, ?outcome, %output, "probe failed");
                Ok(ProbeResult::Failure)
            }
            Some(Err(e)) => {
                tracing::debug!(%probe_type, pod = pod_name, container = %container.name, error = %e, "probe errored");
                self.record(
                    pod,
                    container,
                    reason::CONTAINER_UNHEALTHY,
                    format!("{probe_type} probe errored and resulted in unknown state: {e}"),
                );
                Err(e)
            }
            None => Err(Error::MissingHandler(container.name.clone())),
        }
    }

    /// Runs the probe's handler once (upstream `runProbe`).
    pub async fn run_probe(
        &self,
        spec: &Probe,
        status: &PodStatus,
        container: &Container,
        container_id: &ContainerId,
    ) -> Result<(Outcome, String), Error> {
        let timeout = ProbeTiming::of(spec).timeout;
        let pod_ip = status.pod_ip.as_deref().unwrap_or_default();
        if let Some(exec) = &spec.exec {
            let cmd = probe::exec::expand_command(
                exec.command.as_deref().unwrap_or_default(),
                container.env.as_deref(),
            );
            tracing::trace!(container = %container.name, ?cmd, "exec probe");
            return probe::exec::probe(self.runtime.as_ref(), &container_id.id, cmd, timeout).await;
        }
        if let Some(get) = &spec.http_get {
            let req = HttpRequest::for_http_get_action(get, container, pod_ip, &self.user_agent)?;
            tracing::trace!(container = %container.name, url = %req.url(), "HTTP probe");
            return self.http.probe(&req, timeout).await;
        }
        if let Some(tcp) = &spec.tcp_socket {
            let port = probe::resolve_container_port(&tcp.port, container)?;
            let host = match tcp.host.as_deref() {
                Some(h) if !h.is_empty() => h,
                _ if !pod_ip.is_empty() => pod_ip,
                _ => return Err(Error::NoPodIp(container.name.clone())),
            };
            tracing::trace!(container = %container.name, host, port, "TCP probe");
            return Ok(probe::tcp::probe(host, port, timeout).await);
        }
        if let Some(grpc) = &spec.grpc {
            if pod_ip.is_empty() {
                return Err(Error::NoPodIp(container.name.clone()));
            }
            let port = u16::try_from(grpc.port)
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| Error::InvalidPort {
                    port: grpc.port.to_string(),
                    container: container.name.clone(),
                    reason: format!("invalid port number: {}", grpc.port),
                })?;
            let service = grpc.service.as_deref().unwrap_or_default();
            tracing::trace!(container = %container.name, host = pod_ip, port, service, "gRPC probe");
            return Ok(probe::grpc::probe(pod_ip, service, port, timeout, &self.user_agent).await);
        }
        tracing::warn!(container = %container.name, "failed to find probe builder for container");
        Err(Error::MissingHandler(container.name.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timing_defaults_match_upstream() {
        let t = ProbeTiming::of(&Probe::default());
        assert_eq!(t.initial_delay, Duration::ZERO);
        assert_eq!(t.timeout, Duration::from_secs(1));
        assert_eq!(t.period, Duration::from_secs(10));
        assert_eq!(t.success_threshold, 1);
        assert_eq!(t.failure_threshold, 3);

        let zeros = Probe {
            timeout_seconds: Some(0),
            period_seconds: Some(0),
            success_threshold: Some(-1),
            failure_threshold: Some(0),
            initial_delay_seconds: Some(-5),
            ..Default::default()
        };
        assert_eq!(ProbeTiming::of(&zeros), t);

        let set = Probe {
            timeout_seconds: Some(4),
            period_seconds: Some(2),
            success_threshold: Some(2),
            failure_threshold: Some(5),
            initial_delay_seconds: Some(7),
            ..Default::default()
        };
        let t = ProbeTiming::of(&set);
        assert_eq!(t.initial_delay, Duration::from_secs(7));
        assert_eq!(t.timeout, Duration::from_secs(4));
        assert_eq!(t.period, Duration::from_secs(2));
        assert_eq!((t.success_threshold, t.failure_threshold), (2, 5));
    }

    #[test]
    fn initial_values_match_upstream() {
        assert_eq!(ProbeType::Readiness.initial_value(), ProbeResult::Failure);
        assert_eq!(ProbeType::Liveness.initial_value(), ProbeResult::Success);
        assert_eq!(ProbeType::Startup.initial_value(), ProbeResult::Unknown);
    }
}
