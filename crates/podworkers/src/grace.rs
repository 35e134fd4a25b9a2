//! The effective grace period and the jitter of retry delays.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;

/// The grace period a terminating pod gets, and whether it shortened the
/// current one (upstream `calculateEffectiveGracePeriod`).
///
/// `current` is the grace period already in force (0 before termination).
/// It can only go down: the minimum of `current`, the pod's
/// `deletionGracePeriodSeconds` (the API server's word) and `override_seconds`
/// (the kubelet's, e.g. eviction). When neither overrides, the pod's
/// `spec.terminationGracePeriodSeconds` is used. The result is at least 1.
/// `pod` is `None` for a runtime-only pod, which has no spec.
pub fn calculate_effective_grace_period(
    current: i64,
    pod: Option<&Pod>,
    override_seconds: Option<i64>,
) -> (i64, bool) {
    let mut grace = current;
    let mut overridden = false;
    let deletion = pod.and_then(|p| p.metadata.deletion_grace_period_seconds);
    for candidate in [deletion, override_seconds].into_iter().flatten() {
        if grace == 0 || candidate < grace {
            grace = candidate;
            overridden = true;
        }
    }
    if !overridden
        && grace == 0
        && let Some(spec) = pod
            .and_then(|p| p.spec.as_ref())
            .and_then(|s| s.termination_grace_period_seconds)
    {
        grace = spec;
    }
    if grace < 1 {
        grace = 1;
    }
    (grace, current != 0 && current != grace)
}

/// A small, lock-free pseudo-random source for jitter (splitmix64).
#[derive(Debug)]
pub(crate) struct Jitter {
    state: AtomicU64,
}

impl Jitter {
    pub(crate) fn new(seed: u64) -> Self {
        Self {
            state: AtomicU64::new(seed),
        }
    }

    /// A value in [0, 1).
    fn next_unit(&self) -> f64 {
        let mut z = self
            .state
            .fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed)
            .wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }

    /// `d` plus a random part of up to `factor·d` (upstream `wait.Jitter`).
    pub(crate) fn jitter(&self, d: Duration, factor: f64) -> Duration {
        d + d.mul_f64(factor * self.next_unit())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::PodSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn pod(spec: Option<i64>, deletion: Option<i64>) -> Pod {
        Pod {
            metadata: ObjectMeta {
                deletion_grace_period_seconds: deletion,
                ..Default::default()
            },
            spec: Some(PodSpec {
                termination_grace_period_seconds: spec,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    // Cases of upstream Test_calculateEffectiveGracePeriod.
    #[test]
    fn effective_grace_period_cases() {
        type Case = (i64, Option<i64>, Option<i64>, Option<i64>, (i64, bool));
        let cases: &[Case] = &[
            // current, spec, deletion, override, expected
            (0, Some(30), None, None, (30, false)),
            (0, Some(30), Some(5), None, (5, false)),
            (0, Some(30), None, Some(2), (2, false)),
            (0, Some(30), Some(5), Some(2), (2, false)),
            (0, Some(0), None, None, (1, false)),
            (0, None, None, None, (1, false)),
            (0, Some(30), Some(0), None, (1, false)),
            (0, Some(30), None, Some(0), (1, false)),
            (30, Some(30), Some(5), None, (5, true)),
            (5, Some(30), None, Some(10), (5, false)),
            (5, Some(30), None, None, (5, false)),
            (5, Some(30), None, Some(2), (2, true)),
        ];
        for (i, &(current, spec, deletion, ov, expected)) in cases.iter().enumerate() {
            let p = pod(spec, deletion);
            assert_eq!(
                calculate_effective_grace_period(current, Some(&p), ov),
                expected,
                "case {i}"
            );
        }
        assert_eq!(calculate_effective_grace_period(0, None, None), (1, false));
        assert_eq!(
            calculate_effective_grace_period(0, None, Some(7)),
            (7, false)
        );
    }

    #[test]
    fn jitter_stays_in_range() {
        let j = Jitter::new(42);
        let d = Duration::from_secs(60);
        let mut min = Duration::MAX;
        let mut max = Duration::ZERO;
        for _ in 0..10_000 {
            let v = j.jitter(d, 0.5);
            assert!(v >= d && v < Duration::from_secs(90), "{v:?}");
            min = min.min(v);
            max = max.max(v);
        }
        assert!(min < Duration::from_secs(61) && max > Duration::from_secs(89));
    }
}
