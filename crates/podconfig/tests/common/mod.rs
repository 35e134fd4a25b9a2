//! Helpers shared by the integration tests.
#![allow(dead_code, missing_docs)]

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kubelet_podconfig::{PodOperation, PodUpdate, PodUpdates};

pub fn manifest(name: &str, image: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  containers:\n  - name: c\n    image: {image}\n"
    )
}

pub fn names(pods: &[Pod]) -> Vec<String> {
    let mut v: Vec<_> = pods
        .iter()
        .map(|p| p.metadata.name.clone().unwrap_or_default())
        .collect();
    v.sort();
    v
}

pub fn summary(u: &PodUpdate) -> (PodOperation, Vec<String>) {
    (u.op, names(&u.pods))
}

/// Reads updates until one satisfies `pred`; panics with what was seen after
/// `timeout`.
pub async fn wait_for(
    updates: &mut PodUpdates,
    timeout: Duration,
    mut pred: impl FnMut(&PodUpdate) -> bool,
) -> PodUpdate {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut seen = Vec::new();
    loop {
        match tokio::time::timeout_at(deadline, updates.recv()).await {
            Ok(Some(u)) => {
                if pred(&u) {
                    return u;
                }
                seen.push(summary(&u));
            }
            Ok(None) => panic!("update stream ended; saw {seen:?}"),
            Err(_) => panic!("no matching update within {timeout:?}; saw {seen:?}"),
        }
    }
}

/// Waits for an update with `op` whose pods are exactly `names`.
pub async fn expect(
    updates: &mut PodUpdates,
    timeout: Duration,
    op: PodOperation,
    expected: &[&str],
) -> PodUpdate {
    wait_for(updates, timeout, |u| {
        u.op == op && names(&u.pods) == expected
    })
    .await
}

/// Asserts that no update arrives within `quiet`.
pub async fn expect_quiet(updates: &mut PodUpdates, quiet: Duration) {
    if let Ok(Some(u)) = tokio::time::timeout(quiet, updates.recv()).await {
        panic!("expected no update, got {:?}", summary(&u));
    }
}

pub use kubelet_testbed::init_tracing;
