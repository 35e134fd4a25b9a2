//! gRPC health probes (upstream `pkg/probe/grpc/grpc.go`): one
//! `grpc.health.v1.Health/Check` call with the probe's service name, over
//! plaintext HTTP/2 (upstream: "credentials are currently not supported").
//! Every failure is a probe failure, never an error, to mimic the
//! `grpc_health_probe` tool.

use std::time::Duration;

use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Endpoint;

use super::{Outcome, join_host_port};

/// `grpc.health.v1.HealthCheckRequest`.
#[derive(Clone, PartialEq, prost::Message)]
struct HealthCheckRequest {
    #[prost(string, tag = "1")]
    service: String,
}

/// `grpc.health.v1.HealthCheckResponse`.
#[derive(Clone, PartialEq, prost::Message)]
struct HealthCheckResponse {
    #[prost(int32, tag = "1")]
    status: i32,
}

/// `HealthCheckResponse.ServingStatus.SERVING`.
const SERVING: i32 = 1;

fn status_name(status: i32) -> String {
    match status {
        0 => "UNKNOWN".to_owned(),
        1 => "SERVING".to_owned(),
        2 => "NOT_SERVING".to_owned(),
        3 => "SERVICE_UNKNOWN".to_owned(),
        other => other.to_string(),
    }
}

/// Calls `Health/Check` for `service` on `host:port` within `timeout`
/// (connection included); success only when the answer is `SERVING`.
pub async fn probe(
    host: &str,
    service: &str,
    port: u16,
    timeout: Duration,
    user_agent: &str,
) -> (Outcome, String) {
    let addr = join_host_port(host, port);
    match tokio::time::timeout(timeout, check(&addr, service, timeout, user_agent)).await {
        Ok(r) => r,
        Err(_) => (
            Outcome::Failure,
            format!("timeout: health rpc did not complete within {timeout:?}"),
        ),
    }
}

async fn check(
    addr: &str,
    service: &str,
    timeout: Duration,
    user_agent: &str,
) -> (Outcome, String) {
    let endpoint = match Endpoint::from_shared(format!("http://{addr}")) {
        Ok(e) => e.connect_timeout(timeout).timeout(timeout),
        Err(e) => {
            return (
                Outcome::Failure,
                format!("error: failed to connect service at {addr:?}: {e}"),
            );
        }
    };
    let endpoint = match endpoint.user_agent(user_agent) {
        Ok(e) => e,
        Err(e) => return (Outcome::Failure, format!("error: invalid user agent: {e}")),
    };
    let channel = match endpoint.connect().await {
        Ok(c) => c,
        Err(e) => {
            return (
                Outcome::Failure,
                format!("error: failed to connect service at {addr:?}: {e}"),
            );
        }
    };
    let mut client = tonic::client::Grpc::new(channel);
    if let Err(e) = client.ready().await {
        return (
            Outcome::Failure,
            format!("error: failed to connect service at {addr:?}: {e}"),
        );
    }
    let codec = tonic_prost::ProstCodec::<HealthCheckRequest, HealthCheckResponse>::default();
    let path = PathAndQuery::from_static("/grpc.health.v1.Health/Check");
    let request = tonic::Request::new(HealthCheckRequest {
        service: service.to_owned(),
    });
    match client.unary(request, path, codec).await {
        Ok(resp) => {
            let status = resp.into_inner().status;
            if status == SERVING {
                (Outcome::Success, "service healthy".to_owned())
            } else {
                (
                    Outcome::Failure,
                    format!(
                        "service unhealthy (responded with {:?})",
                        status_name(status)
                    ),
                )
            }
        }
        Err(status) => match status.code() {
            tonic::Code::Unimplemented => (
                Outcome::Failure,
                format!(
                    "error: this server does not implement the grpc health protocol (grpc.health.v1.Health): {}",
                    status.message()
                ),
            ),
            tonic::Code::DeadlineExceeded => (
                Outcome::Failure,
                format!("timeout: health rpc did not complete within {timeout:?}"),
            ),
            _ => (
                Outcome::Failure,
                format!("error: health rpc probe failed: {status}"),
            ),
        },
    }
}
