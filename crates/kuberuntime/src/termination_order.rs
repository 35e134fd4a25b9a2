//! The termination order of a pod with sidecars (upstream
//! `terminationOrdering`,
//! `pkg/kubelet/kuberuntime/kuberuntime_termination_order.go`): when the
//! pod is killed, sidecars wait for every app container to stop, and each
//! sidecar for the sidecars declared after it, within its grace period.

use std::collections::HashMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kubelet_container::podres::is_restartable_init;
use tokio::sync::watch;

/// Who waits for whom while a pod's containers stop.
#[derive(Debug)]
pub(crate) struct TerminationOrdering {
    /// Per container name: set once it stopped (set from the start for
    /// containers that do not run).
    terminated: HashMap<String, watch::Sender<bool>>,
    /// Per container name: the containers it waits for.
    prereqs: HashMap<String, Vec<watch::Receiver<bool>>>,
}

impl TerminationOrdering {
    /// The ordering of `pod` whose running containers are `running`
    /// (upstream `newTerminationOrdering`).
    pub(crate) fn new<'a>(pod: &Pod, running: impl IntoIterator<Item = &'a str>) -> Self {
        let running: Vec<&str> = running.into_iter().collect();
        let mut terminated = HashMap::new();
        let mut prereqs: HashMap<String, Vec<watch::Receiver<bool>>> = HashMap::new();
        let mut channel = |name: &str| {
            let (tx, rx) = watch::channel(!running.contains(&name));
            terminated.insert(name.to_owned(), tx);
            rx
        };
        let Some(spec) = pod.spec.as_ref() else {
            return Self {
                terminated,
                prereqs,
            };
        };
        let apps: Vec<_> = spec.containers.iter().map(|c| channel(&c.name)).collect();
        let mut later_sidecar: Option<watch::Receiver<bool>> = None;
        for ic in spec.init_containers.iter().flatten().rev() {
            let rx = channel(&ic.name);
            if is_restartable_init(ic) {
                let waits = prereqs.entry(ic.name.clone()).or_default();
                waits.extend(apps.iter().cloned());
                waits.extend(later_sidecar.take());
                later_sidecar = Some(rx);
            }
        }
        Self {
            terminated,
            prereqs,
        }
    }

    /// Waits until `name` may stop, at most `grace_seconds` (no wait when
    /// it is 0 or less), and returns how long it waited (upstream
    /// `waitForTurn`).
    pub(crate) async fn wait_for_turn(&self, name: &str, grace_seconds: i64) -> Duration {
        let start = tokio::time::Instant::now();
        if grace_seconds <= 0 {
            return Duration::ZERO;
        }
        let deadline = start + Duration::from_secs(grace_seconds.unsigned_abs());
        for rx in self.prereqs.get(name).into_iter().flatten() {
            let mut rx = rx.clone();
            if tokio::time::timeout_at(deadline, rx.wait_for(|done| *done))
                .await
                .is_err()
            {
                // The grace period ran out.
                break;
            }
        }
        start.elapsed()
    }

    /// Records that `name` stopped (upstream `containerTerminated`).
    pub(crate) fn container_terminated(&self, name: &str) {
        if let Some(tx) = self.terminated.get(name) {
            tx.send_replace(true);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod() -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p"},
            "spec": {
                "initContainers": [
                    {"name": "s1", "restartPolicy": "Always"},
                    {"name": "init"},
                    {"name": "s2", "restartPolicy": "Always"}
                ],
                "containers": [{"name": "a"}, {"name": "b"}]
            }
        }))
        .expect("pod")
    }

    #[tokio::test(start_paused = true)]
    async fn app_containers_go_first_then_sidecars_in_reverse() {
        let o = TerminationOrdering::new(&pod(), ["a", "b", "s1", "s2"]);
        assert_eq!(o.wait_for_turn("a", 30).await, Duration::ZERO);
        let s1 = o.wait_for_turn("s1", 30);
        let s2 = o.wait_for_turn("s2", 30);
        tokio::pin!(s1, s2);
        let step = |d| tokio::time::sleep(Duration::from_secs(d));
        tokio::select! {
            _ = &mut s2 => panic!("s2 before the app containers"),
            _ = step(1) => {}
        }
        o.container_terminated("a");
        o.container_terminated("b");
        tokio::select! {
            _ = &mut s1 => panic!("s1 before s2"),
            waited = &mut s2 => assert_eq!(waited, Duration::from_secs(1)),
        }
        tokio::select! {
            _ = &mut s1 => panic!("s1 before s2 stopped"),
            _ = step(2) => {}
        }
        o.container_terminated("s2");
        // First polled when the app containers had stopped.
        assert_eq!(s1.await, Duration::from_secs(2));
    }

    #[tokio::test(start_paused = true)]
    async fn the_wait_ends_with_the_grace_period_and_stopped_containers_do_not_count() {
        let o = TerminationOrdering::new(&pod(), ["a", "s1", "s2"]);
        assert_eq!(o.wait_for_turn("s2", 5).await, Duration::from_secs(5));
        assert_eq!(o.wait_for_turn("s2", 0).await, Duration::ZERO);
        o.container_terminated("a");
        // b never ran: nothing waits for it.
        assert_eq!(o.wait_for_turn("s2", 5).await, Duration::ZERO);
        // A regular init container waits for nothing.
        assert_eq!(o.wait_for_turn("init", 5).await, Duration::ZERO);
    }
}
