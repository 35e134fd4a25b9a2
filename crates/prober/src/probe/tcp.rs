//! TCP socket probes (upstream `pkg/probe/tcp/tcp.go`).

use std::time::Duration;

use tokio::net::TcpStream;

use super::{Outcome, join_host_port};

/// Opens a TCP connection to `host:port` within `timeout`: success if it
/// opens, failure (with the error as output) otherwise; the connection is
/// closed at once (upstream `DoTCPProbe`).
pub async fn probe(host: &str, port: u16, timeout: Duration) -> (Outcome, String) {
    let addr = join_host_port(host, port);
    match tokio::time::timeout(timeout, TcpStream::connect((host, port))).await {
        Ok(Ok(stream)) => {
            drop(stream);
            (Outcome::Success, String::new())
        }
        Ok(Err(e)) => (Outcome::Failure, format!("dial tcp {addr}: {e}")),
        Err(_) => (
            Outcome::Failure,
            format!("dial tcp {addr}: i/o timeout after {timeout:?}"),
        ),
    }
}
