//! Token-bucket rate limiters for registry pulls and events, built on
//! [`governor`].
//!
//! Upstream: `pkg/kubelet/images/puller.go` / `image_manager.go` wrap the
//! image service in a `flowcontrol.NewTokenBucketRateLimiter(registryPullQPS,
//! registryBurst)` (defaults 5 QPS, burst 10; QPS 0 means no limit) and
//! refuse a pull with `"pull QPS exceeded"` when no token is left
//! (`TryAccept`). Events go through the client's QPS (`eventRecordQPS` 50,
//! `eventBurst` 100) and client-go's per-object spam filter
//! (`staging/src/k8s.io/client-go/tools/record/events_cache.go`,
//! `EventSourceObjectSpamFilter`: burst 25, one token per 5 minutes per
//! source and object).
//!
//! The limiters are generic over governor's clock, so tests drive them with
//! [`governor::clock::FakeRelativeClock`] and never sleep.

use std::hash::Hash;
use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock as GovClock, DefaultClock, ReasonablyRealtime};
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};

use crate::Error;

/// Upstream `registryPullQPS` default.
pub const REGISTRY_PULL_QPS: u32 = 5;
/// Upstream `registryBurst` default.
pub const REGISTRY_BURST: u32 = 10;
/// Upstream `eventRecordQPS` default.
pub const EVENT_RECORD_QPS: u32 = 50;
/// Upstream `eventBurst` default.
pub const EVENT_BURST: u32 = 100;
/// client-go's per-object event spam filter burst (`defaultSpamBurst`).
pub const EVENT_SPAM_BURST: u32 = 25;
/// client-go's per-object event spam filter refill period (`defaultSpamQPS`
/// = 1/300).
pub const EVENT_SPAM_PERIOD: Duration = Duration::from_secs(300);

type Direct<C> = RateLimiter<NotKeyed, InMemoryState, C, NoOpMiddleware<<C as GovClock>::Instant>>;

/// A token bucket of `qps` tokens a second holding at most `burst` (upstream
/// `flowcontrol.NewTokenBucketRateLimiter`). A QPS of 0 means no limit, as
/// the kubelet's `registryPullQPS`.
pub struct TokenBucket<C: GovClock = DefaultClock> {
    inner: Option<Direct<C>>,
    qps: u32,
    burst: u32,
}

impl<C: GovClock> std::fmt::Debug for TokenBucket<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenBucket")
            .field("qps", &self.qps)
            .field("burst", &self.burst)
            .finish()
    }
}

fn quota(qps: u32, burst: u32) -> Result<Option<Quota>, Error> {
    let Some(qps) = NonZeroU32::new(qps) else {
        return Ok(None);
    };
    let burst = NonZeroU32::new(burst).ok_or_else(|| {
        Error::InvalidConfig(format!(
            "rate limit burst must be positive when QPS is {qps}"
        ))
    })?;
    Ok(Some(Quota::per_second(qps).allow_burst(burst)))
}

impl TokenBucket<DefaultClock> {
    /// A bucket on the real clock. Errors when `qps > 0` and `burst == 0`.
    pub fn new(qps: u32, burst: u32) -> Result<Self, Error> {
        Self::with_clock(qps, burst, DefaultClock::default())
    }

    /// The kubelet's registry pull limiter: 5 QPS, burst 10.
    pub fn registry_pulls() -> Self {
        Self::from_valid(REGISTRY_PULL_QPS, REGISTRY_BURST)
    }

    /// The kubelet's event limiter: 50 QPS, burst 100.
    pub fn events() -> Self {
        Self::from_valid(EVENT_RECORD_QPS, EVENT_BURST)
    }

    fn from_valid(qps: u32, burst: u32) -> Self {
        let inner = NonZeroU32::new(qps)
            .zip(NonZeroU32::new(burst))
            .map(|(q, b)| {
                RateLimiter::direct_with_clock(
                    Quota::per_second(q).allow_burst(b),
                    DefaultClock::default(),
                )
            });
        Self { inner, qps, burst }
    }
}

impl<C: GovClock> TokenBucket<C> {
    /// A bucket on the given governor clock (for tests:
    /// [`governor::clock::FakeRelativeClock`]).
    pub fn with_clock(qps: u32, burst: u32, clock: C) -> Result<Self, Error> {
        let inner = quota(qps, burst)?.map(|q| RateLimiter::direct_with_clock(q, clock));
        Ok(Self { inner, qps, burst })
    }

    /// Takes a token if one is there (upstream `TryAccept`). Always true
    /// without a limit.
    pub fn try_acquire(&self) -> bool {
        self.inner.as_ref().is_none_or(|l| l.check().is_ok())
    }

    /// The configured QPS (0: unlimited).
    pub fn qps(&self) -> u32 {
        self.qps
    }

    /// The configured burst.
    pub fn burst(&self) -> u32 {
        self.burst
    }
}

impl<C: ReasonablyRealtime> TokenBucket<C> {
    /// Waits for a token (upstream `Accept`).
    pub async fn acquire(&self) {
        if let Some(l) = &self.inner {
            l.until_ready().await;
        }
    }
}

/// A per-key token bucket, such as client-go's event spam filter (one bucket
/// per event source and involved object).
pub struct KeyedTokenBucket<K: Hash + Eq + Clone, C: GovClock = DefaultClock> {
    inner: RateLimiter<K, DefaultKeyedStateStore<K>, C, NoOpMiddleware<C::Instant>>,
}

impl<K: Hash + Eq + Clone, C: GovClock> std::fmt::Debug for KeyedTokenBucket<K, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyedTokenBucket").finish_non_exhaustive()
    }
}

impl<K: Hash + Eq + Clone> KeyedTokenBucket<K, DefaultClock> {
    /// client-go's event spam filter: burst 25, one token per 5 minutes, per
    /// key.
    pub fn event_spam_filter() -> Self {
        Self::with_period(EVENT_SPAM_BURST, EVENT_SPAM_PERIOD, DefaultClock::default())
    }
}

impl<K: Hash + Eq + Clone, C: GovClock> KeyedTokenBucket<K, C> {
    /// A bucket per key holding `burst` tokens (at least 1), refilled one
    /// every `period` (at least 1 ns), on the given clock.
    pub fn with_period(burst: u32, period: Duration, clock: C) -> Self {
        let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
        let period = period.max(Duration::from_nanos(1));
        let quota = Quota::with_period(period)
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
            .allow_burst(burst);
        Self {
            inner: RateLimiter::new(quota, DefaultKeyedStateStore::default(), clock),
        }
    }

    /// Takes a token from `key`'s bucket if one is there.
    pub fn try_acquire(&self, key: &K) -> bool {
        self.inner.check_key(key).is_ok()
    }

    /// Forgets keys whose buckets are full again (call periodically).
    pub fn retain_recent(&self) {
        self.inner.retain_recent();
    }

    /// The number of keys tracked.
    pub fn len(&self) -> usize {
        self.inner.len()
    }

    /// Whether no key is tracked.
    pub fn is_empty(&self) -> bool {
        self.inner.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use governor::clock::FakeRelativeClock;

    #[test]
    fn registry_pulls_burst_10_then_5_per_second() {
        let clock = FakeRelativeClock::default();
        let b = TokenBucket::with_clock(REGISTRY_PULL_QPS, REGISTRY_BURST, clock.clone())
            .expect("valid");
        let granted = (0..20).filter(|_| b.try_acquire()).count();
        assert_eq!(granted, 10, "burst");
        clock.advance(Duration::from_millis(1000));
        let granted = (0..20).filter(|_| b.try_acquire()).count();
        assert_eq!(granted, 5, "one second refills 5");
        clock.advance(Duration::from_millis(199));
        assert!(!b.try_acquire());
        clock.advance(Duration::from_millis(1));
        assert!(b.try_acquire(), "one token per 200 ms");
    }

    #[test]
    fn zero_qps_is_unlimited_and_zero_burst_is_an_error() {
        let b = TokenBucket::new(0, 0).expect("unlimited");
        assert!((0..1000).all(|_| b.try_acquire()));
        let err = TokenBucket::new(5, 0).expect_err("burst 0");
        assert!(err.to_string().contains("burst"), "{err}");
    }

    #[test]
    fn defaults() {
        let p = TokenBucket::registry_pulls();
        assert_eq!((p.qps(), p.burst()), (5, 10));
        let e = TokenBucket::events();
        assert_eq!((e.qps(), e.burst()), (50, 100));
        assert_eq!((0..200).filter(|_| e.try_acquire()).count(), 100);
    }

    #[tokio::test]
    async fn acquire_waits_for_a_token() {
        let b = TokenBucket::new(1000, 1).expect("valid");
        b.acquire().await;
        let t = std::time::Instant::now();
        b.acquire().await;
        assert!(
            t.elapsed() >= Duration::from_micros(500),
            "{:?}",
            t.elapsed()
        );
    }

    #[test]
    fn keyed_spam_filter_per_object() {
        let clock = FakeRelativeClock::default();
        let f = KeyedTokenBucket::with_period(EVENT_SPAM_BURST, EVENT_SPAM_PERIOD, clock.clone());
        let a = "kubelet/pod-a".to_string();
        let b = "kubelet/pod-b".to_string();
        assert_eq!((0..30).filter(|_| f.try_acquire(&a)).count(), 25);
        assert!(f.try_acquire(&b), "other objects are independent");
        clock.advance(Duration::from_secs(299));
        assert!(!f.try_acquire(&a));
        clock.advance(Duration::from_secs(1));
        assert!(f.try_acquire(&a));
        assert_eq!(f.len(), 2);
    }
}
