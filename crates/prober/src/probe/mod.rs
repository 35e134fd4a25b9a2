//! The probe mechanisms themselves (upstream `pkg/probe`): each runs one
//! check and reports an [`Outcome`] with a human-readable output.
//!
//! - [`exec`]: a command in the container through CRI `ExecSync`
//!   (`pkg/probe/exec/exec.go`);
//! - [`http`]: an HTTP(S) GET (`pkg/probe/http/http.go`, `request.go`);
//! - [`tcp`]: a TCP connect (`pkg/probe/tcp/tcp.go`);
//! - [`grpc`]: `grpc.health.v1.Health/Check` (`pkg/probe/grpc/grpc.go`).
//!
//! A probe that *ran* returns `Ok((outcome, output))`, failures included; an
//! `Err` means it could not be run at all (upstream's non-nil `err`).

use k8s_openapi::api::core::v1::Container;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::Error;

pub mod exec;
pub mod grpc;
pub mod http;
pub mod tcp;

/// The outcome of one probe run (upstream `probe.Result`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The check passed.
    Success,
    /// The check passed with a warning (an HTTP redirect that was not
    /// followed); counted as a success.
    Warning,
    /// The check failed.
    Failure,
    /// The check could not tell.
    Unknown,
}

/// The upper bound on how much of a probe's output is kept: 10 KiB, as
/// upstream's `maxReadLength` (exec) and `maxRespBodyLength` (HTTP). Unbounded
/// exec output has exhausted runtimes' memory before.
pub const MAX_OUTPUT_LENGTH: usize = 10 * 1024;

/// The user agent of HTTP and gRPC probes: `kube-probe/<major.minor>`
/// (upstream `userAgent("probe")`).
pub fn user_agent(kube_version: &str) -> String {
    format!("kube-probe/{kube_version}")
}

/// Resolves a probe's port: a number, the name of one of the container's
/// ports, or a number written as a string; it must be in 1..=65535
/// (upstream `pkg/probe/util.go` `ResolveContainerPort`, `findPortByName`).
pub fn resolve_container_port(port: &IntOrString, container: &Container) -> Result<u16, Error> {
    let invalid = |reason: String| Error::InvalidPort {
        port: match port {
            IntOrString::Int(i) => i.to_string(),
            IntOrString::String(s) => s.clone(),
        },
        container: container.name.clone(),
        reason,
    };
    let number: i64 = match port {
        IntOrString::Int(i) => i64::from(*i),
        IntOrString::String(name) => {
            let by_name = container
                .ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref() == Some(name.as_str()))
                .map(|p| i64::from(p.container_port));
            match by_name {
                Some(n) => n,
                // Last ditch effort - maybe it was an int stored as string?
                None => name
                    .parse::<i64>()
                    .map_err(|_| invalid(format!("port {name} not found")))?,
            }
        }
    };
    if (1..=65535).contains(&number) {
        u16::try_from(number).map_err(|_| invalid(format!("invalid port number: {number}")))
    } else {
        Err(invalid(format!("invalid port number: {number}")))
    }
}

/// Joins a host and port as Go's `net.JoinHostPort` does (IPv6 literals in
/// brackets).
pub(crate) fn join_host_port(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Truncates `bytes` to [`MAX_OUTPUT_LENGTH`] and makes it a string.
pub(crate) fn capped_output(bytes: &[u8]) -> String {
    let end = bytes.len().min(MAX_OUTPUT_LENGTH);
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ContainerPort;

    fn container() -> Container {
        Container {
            name: "app".into(),
            ports: Some(vec![ContainerPort {
                name: Some("http".into()),
                container_port: 8080,
                host_port: Some(80),
                ..Default::default()
            }]),
            ..Default::default()
        }
    }

    #[test]
    fn ports_resolve_by_number_name_and_numeric_string() {
        let c = container();
        assert_eq!(
            resolve_container_port(&IntOrString::Int(81), &c).unwrap(),
            81
        );
        // The container port, not the host port.
        let by_name = resolve_container_port(&IntOrString::String("http".into()), &c);
        assert_eq!(by_name.unwrap(), 8080);
        let numeric = resolve_container_port(&IntOrString::String("9090".into()), &c);
        assert_eq!(numeric.unwrap(), 9090);
    }

    #[test]
    fn bad_ports_are_errors() {
        let c = container();
        for p in [
            IntOrString::Int(0),
            IntOrString::Int(65536),
            IntOrString::Int(-1),
            IntOrString::String("metrics".into()),
            IntOrString::String("70000".into()),
        ] {
            let err = resolve_container_port(&p, &c).unwrap_err();
            assert!(matches!(err, Error::InvalidPort { .. }), "{p:?}: {err}");
        }
    }

    #[test]
    fn host_port_joining_brackets_ipv6() {
        assert_eq!(join_host_port("10.0.0.1", 80), "10.0.0.1:80");
        assert_eq!(join_host_port("fd00::1", 80), "[fd00::1]:80");
        assert_eq!(join_host_port("example.com", 443), "example.com:443");
    }

    #[test]
    fn output_is_capped() {
        let big = vec![b'x'; MAX_OUTPUT_LENGTH * 3];
        assert_eq!(capped_output(&big).len(), MAX_OUTPUT_LENGTH);
        assert_eq!(capped_output(b"ok"), "ok");
    }
}
