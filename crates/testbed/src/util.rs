//! Polling with a deadline, file reads and test logging.

use std::future::Future;
use std::path::Path;
use std::time::{Duration, Instant};

/// How often [`wait_for`] and [`wait_for_file`] look again.
const POLL: Duration = Duration::from_millis(100);

/// Polls `check` every 100 ms until it returns `Some`, and returns that;
/// panics naming `what` once `limit` has passed (a hang guard, not a
/// performance bound).
pub async fn wait_for<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// Waits until the file at `path` contains `content`; panics after `limit`.
pub async fn wait_for_file(path: &Path, content: &str, limit: Duration) {
    let what = format!("{content:?} in {}", path.display());
    wait_for(&what, limit, || async {
        std::fs::read_to_string(path)
            .is_ok_and(|s| s.contains(content))
            .then_some(())
    })
    .await;
}

/// The content of the file at `path`, trimmed (cgroup files end in a
/// newline); panics naming the file when it cannot be read.
pub fn read_trimmed(path: impl AsRef<Path>) -> String {
    let path = path.as_ref();
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
        .trim()
        .to_owned()
}

/// Installs a `tracing` subscriber that writes through the test harness
/// (shown for failing tests), filtered by `RUST_LOG` (default: off). Safe
/// to call from every test: only the first call installs it.
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "off".into()))
        .with_test_writer()
        .try_init();
}

/// This process's resident set in bytes (`VmRSS` of `/proc/self/status`;
/// 0 when it cannot be read), for memory measures.
pub fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// `GET path` on `127.0.0.1:port` in plain HTTP/1.0 (the body ends with
/// the connection, never chunked): the status code and the body. Both
/// kubelets answer this on a loopback port without credentials when they
/// serve anonymous requests with `AlwaysAllow` (upstream's on its
/// `readOnlyPort`).
pub async fn http_get(port: u16, path: &str) -> Result<(u16, String), String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let exchange = async {
        let mut conn = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .map_err(|e| format!("connect to 127.0.0.1:{port}: {e}"))?;
        conn.write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())
            .await
            .map_err(|e| format!("GET {path}: {e}"))?;
        let mut response = Vec::new();
        conn.read_to_end(&mut response)
            .await
            .map_err(|e| format!("GET {path}: {e}"))?;
        Ok::<_, String>(String::from_utf8_lossy(&response).into_owned())
    };
    let response = tokio::time::timeout(Duration::from_secs(30), exchange)
        .await
        .map_err(|_| format!("GET {path}: no answer within 30 s"))??;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("GET {path}: no end of headers"))?;
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("GET {path}: bad status line {:?}", head.lines().next()))?;
    Ok((code, body.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn wait_for_returns_the_first_some() {
        let mut n = 0;
        let v = wait_for("n to reach 3", Duration::from_secs(5), || {
            n += 1;
            let now = n;
            async move { (now >= 3).then_some(now) }
        })
        .await;
        assert_eq!(v, 3);
    }

    #[tokio::test]
    #[should_panic(expected = "timed out after")]
    async fn wait_for_panics_after_its_limit() {
        wait_for::<(), _, _>("never", Duration::from_millis(50), || async { None }).await;
    }

    #[tokio::test]
    async fn wait_for_file_sees_content_written_later() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("f");
        let writer = path.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(150)).await;
            std::fs::write(writer, "hello world\n").expect("write");
        });
        wait_for_file(&path, "world", Duration::from_secs(5)).await;
        assert_eq!(read_trimmed(&path), "hello world");
    }
}
