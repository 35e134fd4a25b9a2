//! Exec probes: a command run in the container through the runtime
//! (upstream `pkg/probe/exec/exec.go`, with `RunInContainer` of
//! `pkg/kubelet/kuberuntime/kuberuntime_container.go` and `ExecSync` of
//! `staging/src/k8s.io/cri-client/pkg/remote_runtime.go`).

use std::time::Duration;

use kubelet_cri_client::{Error as CriError, RuntimeService};

use super::{Outcome, capped_output};
use crate::Error;

/// How much longer than the probe's timeout this side waits for the
/// runtime's answer before calling it a timeout. The runtime enforces the
/// timeout itself (it is in the `ExecSync` request); this bound only keeps a
/// worker from hanging on a runtime that never answers.
pub const EXEC_TIMEOUT_GRACE: Duration = Duration::from_secs(1);

/// Runs `cmd` in the container and maps the reply as upstream:
///
/// - exit code 0: [`Outcome::Success`]; any other: [`Outcome::Failure`];
///   the output is stdout then stderr, capped at
///   [`super::MAX_OUTPUT_LENGTH`];
/// - a timeout (the runtime's `DeadlineExceeded`, or no answer within
///   `timeout` + [`EXEC_TIMEOUT_GRACE`]): [`Outcome::Failure`] (upstream's
///   `ExecProbeTimeout`, GA since 1.20);
/// - any other runtime error: `Err` (upstream: `Unknown` with the error,
///   which the prober retries and the worker then ignores).
pub async fn probe(
    runtime: &dyn RuntimeService,
    container_id: &str,
    cmd: Vec<String>,
    timeout: Duration,
) -> Result<(Outcome, String), Error> {
    let shown = cmd.join(" ");
    let call = runtime.exec_sync(container_id, cmd, timeout);
    match tokio::time::timeout(timeout + EXEC_TIMEOUT_GRACE, call).await {
        Ok(Ok(reply)) => {
            let mut data = reply.stdout;
            if data.len() < super::MAX_OUTPUT_LENGTH {
                data.extend_from_slice(&reply.stderr);
            }
            let output = capped_output(&data);
            tracing::trace!(container_id, exit_code = reply.exit_code, %output, "exec probe response");
            if reply.exit_code == 0 {
                Ok((Outcome::Success, output))
            } else {
                Ok((Outcome::Failure, output))
            }
        }
        Ok(Err(CriError::DeadlineExceeded { .. })) | Err(_) => Ok((
            Outcome::Failure,
            format!("command {shown:?} timed out after {timeout:?}"),
        )),
        Ok(Err(e)) => Err(Error::Runtime(e)),
    }
}

/// Expands `$(VAR)` references in an exec probe's command with the
/// container's literal `env` values (upstream
/// `kubecontainer.ExpandContainerCommandOnlyStatic` and
/// `third_party/forked/golang/expansion`): `$$` is an escaped `$`, an unknown
/// or unterminated reference is kept as written. Values from `valueFrom`
/// are not expanded (upstream neither).
pub fn expand_command(
    cmd: &[String],
    env: Option<&[k8s_openapi::api::core::v1::EnvVar]>,
) -> Vec<String> {
    let lookup = |name: &str| -> Option<String> {
        env?.iter()
            .rev()
            .find(|e| e.name == name && e.value_from.is_none())
            .map(|e| e.value.clone().unwrap_or_default())
    };
    cmd.iter().map(|arg| expand(arg, &lookup)).collect()
}

fn expand(input: &str, lookup: &dyn Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(stripped) = after.strip_prefix('$') {
            out.push('$');
            rest = stripped;
        } else if let Some(inner) = after.strip_prefix('(') {
            match inner.find(')') {
                Some(end) => {
                    let name = &inner[..end];
                    match lookup(name) {
                        Some(value) => out.push_str(&value),
                        None => {
                            out.push_str("$(");
                            out.push_str(name);
                            out.push(')');
                        }
                    }
                    rest = &inner[end + 1..];
                }
                None => {
                    out.push_str("$(");
                    rest = inner;
                }
            }
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{EnvVar, EnvVarSource, ObjectFieldSelector};

    #[test]
    fn commands_expand_static_env_only() {
        let env = vec![
            EnvVar {
                name: "PORT".into(),
                value: Some("8080".into()),
                ..Default::default()
            },
            EnvVar {
                name: "NODE".into(),
                value_from: Some(EnvVarSource {
                    field_ref: Some(ObjectFieldSelector {
                        field_path: "spec.nodeName".into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            },
        ];
        let cmd: Vec<String> = [
            "check",
            "--port=$(PORT)",
            "$(NODE)",
            "$$(PORT)",
            "$(MISSING",
            "a$b",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(
            expand_command(&cmd, Some(&env)),
            [
                "check",
                "--port=8080",
                "$(NODE)",
                "$(PORT)",
                "$(MISSING",
                "a$b"
            ]
        );
        assert_eq!(expand_command(&cmd[..2], None), ["check", "--port=$(PORT)"]);
    }
}
