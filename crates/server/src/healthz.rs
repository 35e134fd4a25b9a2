//! `/healthz`, as upstream's `k8s.io/apiserver/pkg/server/healthz` installs
//! it for the kubelet (`InstallAuthNotRequiredHandlers` in
//! `pkg/kubelet/server/server.go`) with the checks `ping`, `log` and
//! `syncloop`.

use std::time::{Duration, Instant};

/// The health checks, in upstream's order. `/healthz/{name}` serves one.
pub const HEALTHZ_CHECKS: [HealthCheck; 4] = [
    HealthCheck::Ping,
    HealthCheck::Log,
    HealthCheck::SyncLoop,
    HealthCheck::Pleg,
];

/// One named health check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HealthCheck {
    /// `ping`: always passes (`healthz.PingHealthz`).
    Ping,
    /// `log`: upstream checks that klog flushed recently; `tracing` has no
    /// such flush loop, so it always passes (`healthz.LogHealthz`).
    Log,
    /// `syncloop`: fails when the sync loop last started an iteration more
    /// than the threshold ago (`Kubelet.SyncLoopHealthCheck`).
    SyncLoop,
    /// `pleg`: fails while the PLEG is unhealthy (upstream's
    /// `pleg.Healthy`, which upstream reports through the node's Ready
    /// condition; a kubelet in standalone mode has no Node, so `/healthz`
    /// carries it too, as upstream's kubelet did before 1.26).
    Pleg,
}

impl HealthCheck {
    /// The check's name, as in `/healthz/{name}`.
    pub fn name(self) -> &'static str {
        match self {
            HealthCheck::Ping => "ping",
            HealthCheck::Log => "log",
            HealthCheck::SyncLoop => "syncloop",
            HealthCheck::Pleg => "pleg",
        }
    }

    /// The check named `name`.
    pub fn from_name(name: &str) -> Option<HealthCheck> {
        HEALTHZ_CHECKS.into_iter().find(|c| c.name() == name)
    }

    /// Runs the check. `last_sync` is when the sync loop last started an
    /// iteration (never is healthy, as upstream's zero time).
    pub(crate) fn run(
        self,
        last_sync: Option<Instant>,
        pleg: &Result<(), String>,
        threshold: Duration,
        now: Instant,
    ) -> Result<(), String> {
        match self {
            HealthCheck::Ping | HealthCheck::Log => Ok(()),
            HealthCheck::Pleg => pleg.clone(),
            HealthCheck::SyncLoop => match last_sync {
                Some(t) if now.saturating_duration_since(t) > threshold => {
                    Err("sync Loop took longer than expected".to_string())
                }
                _ => Ok(()),
            },
        }
    }
}

/// The outcome of `/healthz`: the status and the text body.
pub(crate) struct HealthzResponse {
    pub ok: bool,
    pub body: String,
}

/// Upstream's `handleRootHealth`: `ok`, or, when a check fails, 500 with
/// `[+]name ok` / `[-]name failed: reason withheld` lines and
/// `healthz check failed`. `?verbose` lists the checks on success too;
/// `?exclude=name` skips a check.
pub(crate) fn root(
    query: Option<&str>,
    last_sync: Option<Instant>,
    pleg: &Result<(), String>,
    threshold: Duration,
    now: Instant,
) -> HealthzResponse {
    let mut verbose = false;
    let mut excluded: Vec<String> = Vec::new();
    if let Some(q) = query {
        for (k, v) in form_urlencoded::parse(q.as_bytes()) {
            match k.as_ref() {
                "verbose" => verbose = true,
                "exclude" => excluded.push(v.into_owned()),
                _ => {}
            }
        }
    }
    let mut out = String::new();
    let mut failed = Vec::new();
    for check in HEALTHZ_CHECKS {
        if let Some(pos) = excluded.iter().position(|e| e == check.name()) {
            excluded.remove(pos);
            out.push_str(&format!("[+]{} excluded: ok\n", check.name()));
            continue;
        }
        match check.run(last_sync, pleg, threshold, now) {
            Ok(()) => out.push_str(&format!("[+]{} ok\n", check.name())),
            Err(e) => {
                out.push_str(&format!("[-]{} failed: reason withheld\n", check.name()));
                tracing::debug!(check = check.name(), error = %e, "healthz check failed");
                failed.push(check.name());
            }
        }
    }
    if !excluded.is_empty() {
        let quoted: Vec<String> = excluded.iter().map(|e| format!("{e:?}")).collect();
        out.push_str(&format!(
            "warn: some health checks cannot be excluded: no matches for {}\n",
            quoted.join(",")
        ));
    }
    if !failed.is_empty() {
        out.push_str("healthz check failed\n");
        return HealthzResponse {
            ok: false,
            body: out,
        };
    }
    if !verbose {
        return HealthzResponse {
            ok: true,
            body: "ok".to_string(),
        };
    }
    out.push_str("healthz check passed\n");
    HealthzResponse {
        ok: true,
        body: out,
    }
}

/// Upstream's `adaptCheckToHandler`: `ok`, or 500 `internal server error: <err>`.
pub(crate) fn single(
    check: HealthCheck,
    last_sync: Option<Instant>,
    pleg: &Result<(), String>,
    threshold: Duration,
    now: Instant,
) -> HealthzResponse {
    match check.run(last_sync, pleg, threshold, now) {
        Ok(()) => HealthzResponse {
            ok: true,
            body: "ok".to_string(),
        },
        Err(e) => HealthzResponse {
            ok: false,
            body: format!("internal server error: {e}\n"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Duration = Duration::from_secs(300);

    #[test]
    fn never_synced_is_healthy_and_stale_is_not() {
        let now = Instant::now() + Duration::from_secs(1000);
        assert!(root(None, None, &Ok(()), T, now).ok);
        assert_eq!(root(None, Some(now), &Ok(()), T, now).body, "ok");
        let stale = now - Duration::from_secs(301);
        let r = root(None, Some(stale), &Ok(()), T, now);
        assert!(!r.ok);
        assert_eq!(
            r.body,
            "[+]ping ok\n[+]log ok\n[-]syncloop failed: reason withheld\n[+]pleg ok\nhealthz check failed\n"
        );
        assert!(!single(HealthCheck::SyncLoop, Some(stale), &Ok(()), T, now).ok);
        assert!(single(HealthCheck::Ping, Some(stale), &Ok(()), T, now).ok);
    }

    #[test]
    fn verbose_and_exclude() {
        let now = Instant::now() + Duration::from_secs(1000);
        let stale = now - Duration::from_secs(301);
        let r = root(
            Some("exclude=syncloop&verbose"),
            Some(stale),
            &Ok(()),
            T,
            now,
        );
        assert!(r.ok);
        assert_eq!(
            r.body,
            "[+]ping ok\n[+]log ok\n[+]syncloop excluded: ok\n[+]pleg ok\nhealthz check passed\n"
        );
        let r = root(Some("exclude=nope"), None, &Ok(()), T, now);
        assert!(r.ok);
        assert_eq!(r.body, "ok");
    }

    #[test]
    fn an_unhealthy_pleg_fails_healthz() {
        let now = Instant::now();
        let pleg: Result<(), String> = Err("pleg has yet to be successful".into());
        let r = root(None, Some(now), &pleg, T, now);
        assert!(!r.ok);
        assert!(
            r.body.contains("[-]pleg failed: reason withheld"),
            "{}",
            r.body
        );
        let one = single(HealthCheck::Pleg, Some(now), &pleg, T, now);
        assert!(!one.ok);
        assert!(
            one.body.contains("pleg has yet to be successful"),
            "{}",
            one.body
        );
    }
}
