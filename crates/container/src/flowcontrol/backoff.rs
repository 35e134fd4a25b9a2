//! Keyed exponential backoff: the crash-loop and image-pull backoff of a
//! kubelet.
//!
//! Mirrors upstream `staging/src/k8s.io/client-go/util/flowcontrol/backoff.go`
//! (`Backoff`, `Next`, `IsInBackOffSince`, `IsInBackOffSinceUpdate`, `GC`,
//! jitter and `HasExpiredFunc` of newer client-go), with the key rules of
//! `pkg/kubelet/kuberuntime/kuberuntime_container.go` (`GetStableKey`,
//! used by `doBackOff` in `kuberuntime_manager.go`) and
//! `pkg/kubelet/images/image_manager.go`.
//!
//! # The rule
//!
//! Each key has a current delay. [`Backoff::next`] records a failure: a key
//! seen for the first time, or whose last recorded failure is *expired*,
//! starts at the initial delay; otherwise the delay doubles, capped at the
//! maximum. An entry is expired when the new event happened more than the
//! *expiry* after the last update (strictly more, as upstream). The expiry is
//! `2 * max` for [`Backoff::new`] (upstream's `hasExpired`), and 600 s for
//! [`Backoff::crash_loop`] (upstream's kubelet sets `HasExpiredFunc` to
//! `> 600 s`, which with the default 300 s maximum is the same). So with the
//! kubelet's values a crash-looping container waits 10, 20, 40, 80, 160, 300,
//! 300, ... seconds, and a container that has not failed for ten minutes
//! starts again at 10 s. [`Backoff::gc`] drops every entry whose last update
//! is more than the expiry ago; keys are independent of one another.
//!
//! # Time
//!
//! All times are read from a [`Clock`], so tests never sleep ([`FakeClock`]).
//! Upstream's times are wall-clock `time.Time`s; here the monotonic
//! [`Instant`] is the primary type, and every method that takes an event time
//! has a `*_system_time` twin taking a [`SystemTime`] — what the CRI reports
//! as a container's `finished_at` (nanoseconds since the epoch; see
//! [`system_time_from_unix_nanos`]). The twins convert through the clock's
//! pair of readings (`now` and `system_now`), so they never underflow an
//! `Instant` and stay consistent under a fake clock. The crash-loop check of
//! upstream `doBackOff` is then:
//!
//! ```
//! use kubelet_container::flowcontrol::{Backoff, crash_loop_key, system_time_from_unix_nanos};
//! let backoff = Backoff::crash_loop();
//! let key = crash_loop_key("web", "default", "uid-1", "app", "1a2b3c");
//! let finished_at = system_time_from_unix_nanos(1_700_000_000_000_000_000);
//! if backoff.is_in_backoff_since_system_time(&key, finished_at) {
//!     // ErrCrashLoopBackOff: "back-off {delay} restarting failed container=..."
//!     let _delay = backoff.get(&key);
//! } else {
//!     backoff.next_at_system_time(&key, finished_at);
//!     // start the container
//! }
//! ```
//!
//! Where we do better: upstream's `Backoff` embeds a `sync.Mutex` that
//! callers can (and the kubelet does) lock from outside; ours is private, and
//! the jitter source is seeded per instance without a shared global.

use std::collections::HashMap;
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Upstream `containerBackOffPeriod` (`pkg/kubelet/kubelet.go`): the first
/// crash-loop delay.
pub const CONTAINER_BACKOFF_PERIOD: Duration = Duration::from_secs(10);
/// Upstream `MaxContainerBackOff`: the crash-loop cap.
pub const MAX_CONTAINER_BACKOFF: Duration = Duration::from_secs(300);
/// Upstream `imageBackOffPeriod`: the first image-pull delay.
pub const IMAGE_BACKOFF_PERIOD: Duration = Duration::from_secs(10);
/// Upstream `MaxImageBackOff`: the image-pull cap.
pub const MAX_IMAGE_BACKOFF: Duration = Duration::from_secs(300);
/// The kubelet's crash-loop `HasExpiredFunc`: a container that has not
/// failed for this long starts again at the initial delay.
pub const CRASH_LOOP_RESET_AFTER: Duration = Duration::from_secs(600);

/// A source of time. The backoff and the eviction manager read every time
/// through one, so tests can drive time by hand ([`FakeClock`]).
pub trait Clock: Send + Sync + 'static {
    /// The monotonic now.
    fn now(&self) -> Instant;
    /// The wall-clock now, read at the same moment as [`Clock::now`] would
    /// be. Used to convert wall-clock event times (CRI timestamps). The
    /// default reads [`SystemTime::now`].
    fn system_now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// The real clock: [`Instant::now`] and [`SystemTime::now`].
#[derive(Debug, Clone, Copy, Default)]
pub struct RealClock;

impl Clock for RealClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// A clock that moves only when told to: for tests. Its monotonic and
/// wall-clock readings advance together.
#[derive(Debug)]
pub struct FakeClock {
    base: Instant,
    base_system: SystemTime,
    offset: Mutex<Duration>,
}

impl Default for FakeClock {
    fn default() -> Self {
        Self::new()
    }
}

impl FakeClock {
    /// A fake clock reading the real now, frozen.
    pub fn new() -> Self {
        Self::at(Instant::now(), SystemTime::now())
    }

    /// A fake clock frozen at the given pair of readings.
    pub fn at(now: Instant, system_now: SystemTime) -> Self {
        Self {
            base: now,
            base_system: system_now,
            offset: Mutex::new(Duration::ZERO),
        }
    }

    fn offset(&self) -> MutexGuard<'_, Duration> {
        self.offset.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Moves the clock forward by `d`.
    pub fn advance(&self, d: Duration) {
        let mut off = self.offset();
        *off = off.saturating_add(d);
    }

    /// Sets the clock to `t`. Times before the clock's creation are clamped
    /// to it (a fake clock never goes below its base).
    pub fn set(&self, t: Instant) {
        *self.offset() = t.saturating_duration_since(self.base);
    }
}

impl Clock for FakeClock {
    fn now(&self) -> Instant {
        self.base + *self.offset()
    }
    fn system_now(&self) -> SystemTime {
        self.base_system + *self.offset()
    }
}

/// Converts a CRI timestamp (nanoseconds since the Unix epoch, as in
/// `ContainerStatus.finished_at`) to a [`SystemTime`]. Negative values are
/// before the epoch.
pub fn system_time_from_unix_nanos(nanos: i64) -> SystemTime {
    let abs = Duration::from_nanos(nanos.unsigned_abs());
    if nanos >= 0 {
        UNIX_EPOCH + abs
    } else {
        UNIX_EPOCH.checked_sub(abs).unwrap_or(UNIX_EPOCH)
    }
}

/// Upstream `GetStableKey` (`pkg/kubelet/kuberuntime/kuberuntime_container.go`):
/// `"<podName>_<ns>_<podUID>_<containerName>_<hash>"`, so that a change of
/// the container's spec (its hash) starts a fresh backoff. `container_hash`
/// is the container hash in hex, as the kuberuntime crate records it.
pub fn crash_loop_key(
    pod_name: &str,
    namespace: &str,
    pod_uid: &str,
    container_name: &str,
    container_hash: &str,
) -> String {
    format!("{pod_name}_{namespace}_{pod_uid}_{container_name}_{container_hash}")
}

/// Upstream `image_manager.go`'s backoff key: `"<podUID>_<image>"`.
pub fn image_pull_key(pod_uid: &str, image: &str) -> String {
    format!("{pod_uid}_{image}")
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    backoff: Duration,
    last_update: Instant,
}

#[derive(Debug)]
struct State {
    entries: HashMap<String, Entry>,
    rng: u64,
}

/// A keyed exponential backoff (upstream `flowcontrol.Backoff`). `Send +
/// Sync`; share it behind an [`Arc`]. See the [module docs](self) for the
/// rule.
pub struct Backoff {
    clock: Arc<dyn Clock>,
    initial: Duration,
    max: Duration,
    expiry: Duration,
    max_jitter_factor: f64,
    state: Mutex<State>,
}

impl std::fmt::Debug for Backoff {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backoff")
            .field("initial", &self.initial)
            .field("max", &self.max)
            .field("expiry", &self.expiry)
            .field("max_jitter_factor", &self.max_jitter_factor)
            .field("entries", &self.len())
            .finish()
    }
}

/// Signed nanoseconds `a - b` of two instants.
fn signed_nanos(a: Instant, b: Instant) -> i128 {
    match a.checked_duration_since(b) {
        Some(d) => d.as_nanos() as i128,
        None => -(b.duration_since(a).as_nanos() as i128),
    }
}

fn signed_nanos_system(a: SystemTime, b: SystemTime) -> i128 {
    match a.duration_since(b) {
        Ok(d) => d.as_nanos() as i128,
        Err(e) => -(e.duration().as_nanos() as i128),
    }
}

fn seed() -> u64 {
    let mut h = RandomState::new().build_hasher();
    h.write_u64(0x9e37_79b9_7f4a_7c15);
    h.finish() | 1
}

impl Backoff {
    /// A backoff starting at `initial`, doubling up to `max`, on the real
    /// clock. Entries expire after `2 * max` (upstream `NewBackOff`).
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self::with_clock(initial, max, Arc::new(RealClock))
    }

    /// As [`Backoff::new`], on the given clock (upstream `NewFakeBackOff`).
    pub fn with_clock(initial: Duration, max: Duration, clock: Arc<dyn Clock>) -> Self {
        Self {
            clock,
            initial,
            max,
            expiry: max.saturating_mul(2),
            max_jitter_factor: 0.0,
            state: Mutex::new(State {
                entries: HashMap::new(),
                rng: seed(),
            }),
        }
    }

    /// The kubelet's crash-loop backoff: 10 s, doubling to 300 s, reset
    /// after 600 s without a failure (upstream `kubelet.go`:
    /// `containerBackOffPeriod`, `MaxContainerBackOff` and the
    /// `HasExpiredFunc` of 600 s).
    pub fn crash_loop() -> Self {
        Self::new(CONTAINER_BACKOFF_PERIOD, MAX_CONTAINER_BACKOFF)
            .with_expiry(CRASH_LOOP_RESET_AFTER)
    }

    /// The crash-loop backoff with a configured maximum (upstream
    /// `maxContainerRestartPeriod` behind the `KubeletCrashLoopBackOffMax`
    /// gate): when `max` is below 10 s the initial delay is lowered to it.
    pub fn crash_loop_with_max(max: Duration) -> Self {
        Self::new(CONTAINER_BACKOFF_PERIOD.min(max), max).with_expiry(CRASH_LOOP_RESET_AFTER)
    }

    /// The kubelet's image-pull backoff: 10 s, doubling to 300 s
    /// (`imageBackOffPeriod`, `MaxImageBackOff`), expiry `2 * max` = 600 s.
    pub fn image_pull() -> Self {
        Self::new(IMAGE_BACKOFF_PERIOD, MAX_IMAGE_BACKOFF)
    }

    /// Replaces the clock (builder form of [`Backoff::with_clock`]).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Adds jitter as newer client-go does: each new delay gets up to
    /// `max_jitter_factor` times the previous delay added (the first delay
    /// up to that fraction of `initial`), still capped at the maximum.
    /// Factors that are not positive finite numbers mean no jitter.
    pub fn with_jitter(mut self, max_jitter_factor: f64) -> Self {
        self.max_jitter_factor = if max_jitter_factor.is_finite() && max_jitter_factor > 0.0 {
            max_jitter_factor
        } else {
            0.0
        };
        self
    }

    /// Sets how long after its last update an entry expires (upstream
    /// `HasExpiredFunc` with `eventTime - lastUpdate > expiry`). Default
    /// `2 * max`.
    pub fn with_expiry(mut self, expiry: Duration) -> Self {
        self.expiry = expiry;
        self
    }

    /// The initial delay.
    pub fn initial(&self) -> Duration {
        self.initial
    }

    /// The maximum delay.
    pub fn max(&self) -> Duration {
        self.max
    }

    /// The expiry (see [`Backoff::with_expiry`]).
    pub fn expiry(&self) -> Duration {
        self.expiry
    }

    /// The clock this backoff reads.
    pub fn clock_ref(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The current delay of `key`; zero if it has none (upstream `Get`).
    pub fn get(&self, key: &str) -> Duration {
        self.lock()
            .entries
            .get(key)
            .map_or(Duration::ZERO, |e| e.backoff)
    }

    /// The number of keys held.
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `event - last_update > expiry`, with the event given as its age
    /// (`now - event`, signed nanoseconds).
    fn expired(&self, now: Instant, event_age: i128, entry: &Entry) -> bool {
        let since_update = signed_nanos(now, entry.last_update) - event_age;
        since_update > self.expiry.as_nanos() as i128
    }

    fn jitter(&self, state: &mut State, delay: Duration) -> Duration {
        if self.max_jitter_factor == 0.0 {
            return Duration::ZERO;
        }
        // xorshift64*: plenty for jitter, no global state.
        let mut x = state.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        state.rng = x;
        let r = (x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64;
        Duration::try_from_secs_f64(r * self.max_jitter_factor * delay.as_secs_f64())
            .unwrap_or(Duration::ZERO)
    }

    fn next_aged(&self, key: &str, event_age: i128) {
        let now = self.clock.now();
        let mut state = self.lock();
        let existing = state.entries.get(key).copied();
        let backoff = match existing {
            Some(e) if !self.expired(now, event_age, &e) => {
                let delay = e.backoff.saturating_mul(2) + self.jitter(&mut state, e.backoff);
                delay.min(self.max)
            }
            _ => (self.initial + self.jitter(&mut state, self.initial))
                .min(self.max.max(self.initial)),
        };
        tracing::trace!(key, ?backoff, "backoff next");
        state.entries.insert(
            key.to_owned(),
            Entry {
                backoff,
                last_update: now,
            },
        );
    }

    /// Records a failure of `key` that happened at `event_time` (upstream
    /// `Next`): a new or expired entry starts at the initial delay,
    /// otherwise the delay doubles up to the maximum. The entry's last
    /// update is the clock's now, as upstream.
    pub fn next(&self, key: &str, event_time: Instant) {
        let age = signed_nanos(self.clock.now(), event_time);
        self.next_aged(key, age);
    }

    /// [`Backoff::next`] with a wall-clock event time, such as a CRI
    /// container's `finished_at`.
    pub fn next_at_system_time(&self, key: &str, event_time: SystemTime) {
        let age = signed_nanos_system(self.clock.system_now(), event_time);
        self.next_aged(key, age);
    }

    /// [`Backoff::next`] at the clock's now (the image manager's form).
    pub fn next_now(&self, key: &str) {
        self.next_aged(key, 0);
    }

    fn in_backoff_since_aged(&self, key: &str, event_age: i128) -> bool {
        let now = self.clock.now();
        let state = self.lock();
        let Some(entry) = state.entries.get(key) else {
            return false;
        };
        if self.expired(now, event_age, entry) {
            return false;
        }
        event_age < entry.backoff.as_nanos() as i128
    }

    /// Whether less than the current delay has passed since `event_time`
    /// (upstream `IsInBackOffSince`: `now - eventTime < backoff`). False for
    /// unknown and expired keys.
    pub fn is_in_backoff_since(&self, key: &str, event_time: Instant) -> bool {
        let age = signed_nanos(self.clock.now(), event_time);
        self.in_backoff_since_aged(key, age)
    }

    /// [`Backoff::is_in_backoff_since`] with a wall-clock event time, such
    /// as a CRI container's `finished_at`: upstream `doBackOff`'s check.
    pub fn is_in_backoff_since_system_time(&self, key: &str, event_time: SystemTime) -> bool {
        let age = signed_nanos_system(self.clock.system_now(), event_time);
        self.in_backoff_since_aged(key, age)
    }

    fn in_backoff_since_update_aged(&self, key: &str, event_age: i128) -> bool {
        let now = self.clock.now();
        let state = self.lock();
        let Some(entry) = state.entries.get(key) else {
            return false;
        };
        if self.expired(now, event_age, entry) {
            return false;
        }
        let since_update = signed_nanos(now, entry.last_update) - event_age;
        since_update < entry.backoff.as_nanos() as i128
    }

    /// Whether `event_time` is less than the current delay after the last
    /// update (upstream `IsInBackOffSinceUpdate`: `eventTime - lastUpdate <
    /// backoff`). False for unknown and expired keys.
    pub fn is_in_backoff_since_update(&self, key: &str, event_time: Instant) -> bool {
        let age = signed_nanos(self.clock.now(), event_time);
        self.in_backoff_since_update_aged(key, age)
    }

    /// [`Backoff::is_in_backoff_since_update`] at the clock's now: the image
    /// manager's check before pulling.
    pub fn is_in_backoff_now(&self, key: &str) -> bool {
        self.in_backoff_since_update_aged(key, 0)
    }

    /// Forgets `key` (upstream `Reset` and `DeleteEntry`).
    pub fn reset(&self, key: &str) {
        self.lock().entries.remove(key);
    }

    /// Drops every entry not updated for longer than the expiry (upstream
    /// `GC`). The kubelet calls it after each successful image pull and
    /// periodically for crash loops.
    pub fn gc(&self) {
        let now = self.clock.now();
        let mut state = self.lock();
        let before = state.entries.len();
        state.entries.retain(|_, e| !self.expired(now, 0, e));
        let dropped = before - state.entries.len();
        if dropped > 0 {
            tracing::debug!(dropped, "backoff gc");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    fn fake() -> (Arc<FakeClock>, Backoff) {
        let clock = Arc::new(FakeClock::new());
        let b = Backoff::crash_loop().clock(clock.clone());
        (clock, b)
    }

    #[test]
    fn crash_loop_sequence_doubles_to_300s() {
        let (clock, b) = fake();
        let mut seen = Vec::new();
        for _ in 0..8 {
            b.next("k", clock.now());
            seen.push(b.get("k").as_secs());
            // the container restarts when its delay is over and crashes again at once
            clock.advance(b.get("k"));
        }
        assert_eq!(seen, vec![10, 20, 40, 80, 160, 300, 300, 300]);
    }

    #[test]
    fn upstream_slow_and_fast_cases() {
        // flowcontrol/backoff_test.go TestSlowBackoff / TestBackoffReset shape.
        let clock = Arc::new(FakeClock::new());
        let b = Backoff::with_clock(secs(1), secs(120), clock.clone());
        for i in 0..10u32 {
            b.next("id", clock.now());
            let want = secs(1).saturating_mul(1 << i).min(secs(120));
            assert_eq!(b.get("id"), want, "step {i}");
            clock.advance(secs(10));
        }
    }

    #[test]
    fn reset_after_ten_minutes_without_failure() {
        let (clock, b) = fake();
        for _ in 0..4 {
            b.next("k", clock.now());
        }
        assert_eq!(b.get("k"), secs(80));
        // exactly 600 s later is not yet expired (strictly greater, as upstream)
        clock.advance(secs(600));
        b.next("k", clock.now());
        assert_eq!(b.get("k"), secs(160));
        clock.advance(secs(601));
        b.next("k", clock.now());
        assert_eq!(b.get("k"), secs(10));
    }

    #[test]
    fn generic_expiry_is_twice_max() {
        let clock = Arc::new(FakeClock::new());
        let b = Backoff::with_clock(secs(1), secs(5), clock.clone());
        b.next("k", clock.now());
        b.next("k", clock.now());
        assert_eq!(b.get("k"), secs(2));
        clock.advance(secs(11));
        b.next("k", clock.now());
        assert_eq!(b.get("k"), secs(1));
        assert_eq!(b.expiry(), secs(10));
    }

    #[test]
    fn keys_are_independent() {
        let (clock, b) = fake();
        b.next("a", clock.now());
        b.next("a", clock.now());
        b.next("a", clock.now());
        b.next("b", clock.now());
        assert_eq!(b.get("a"), secs(40));
        assert_eq!(b.get("b"), secs(10));
        assert_eq!(b.get("c"), Duration::ZERO);
        b.reset("a");
        assert_eq!(b.get("a"), Duration::ZERO);
        assert_eq!(b.get("b"), secs(10));
        assert!(!b.is_in_backoff_since("a", clock.now()));
    }

    #[test]
    fn in_backoff_since_event_time() {
        let (clock, b) = fake();
        let finished = clock.now();
        assert!(!b.is_in_backoff_since("k", finished), "unknown key");
        b.next("k", finished);
        assert!(b.is_in_backoff_since("k", finished));
        clock.advance(secs(9));
        assert!(b.is_in_backoff_since("k", finished));
        clock.advance(secs(1));
        assert!(
            !b.is_in_backoff_since("k", finished),
            "now - event == backoff is out"
        );
    }

    #[test]
    fn in_backoff_since_update() {
        let (clock, b) = fake();
        b.next_now("img");
        assert!(b.is_in_backoff_now("img"));
        clock.advance(secs(9));
        assert!(b.is_in_backoff_since_update("img", clock.now()));
        clock.advance(secs(1));
        assert!(!b.is_in_backoff_now("img"));
        // a later failure doubles it
        b.next_now("img");
        clock.advance(secs(19));
        assert!(b.is_in_backoff_now("img"));
        clock.advance(secs(1));
        assert!(!b.is_in_backoff_now("img"));
    }

    #[test]
    fn expired_entry_is_not_in_backoff() {
        let (clock, b) = fake();
        let t0 = clock.now();
        b.next("k", t0);
        clock.advance(secs(700));
        // an event long after the last update: expired, so no backoff
        assert!(!b.is_in_backoff_since("k", clock.now()));
        assert!(!b.is_in_backoff_now("k"));
    }

    #[test]
    fn gc_drops_idle_entries_only() {
        let (clock, b) = fake();
        b.next("old", clock.now());
        clock.advance(secs(500));
        b.next("young", clock.now());
        clock.advance(secs(100));
        b.gc();
        assert_eq!(b.len(), 2, "old is exactly 600 s idle: kept");
        clock.advance(secs(1));
        b.gc();
        assert_eq!(b.get("old"), Duration::ZERO);
        assert_eq!(b.get("young"), secs(10));
        assert_eq!(b.len(), 1);
    }

    #[test]
    fn crash_loop_with_cri_finished_at() {
        let clock = Arc::new(FakeClock::at(
            Instant::now(),
            system_time_from_unix_nanos(1_700_000_000_000_000_000),
        ));
        let b = Backoff::crash_loop().clock(clock.clone());
        let key = crash_loop_key("web", "default", "uid", "app", "abc");
        // The container exited 2 s ago (CRI finished_at), first failure.
        let finished = clock.system_now() - secs(2);
        assert!(!b.is_in_backoff_since_system_time(&key, finished));
        b.next_at_system_time(&key, finished);
        // It restarts, crashes 1 s later:
        clock.advance(secs(3));
        let finished = clock.system_now();
        assert!(b.is_in_backoff_since_system_time(&key, finished));
        clock.advance(secs(10));
        assert!(!b.is_in_backoff_since_system_time(&key, finished));
        b.next_at_system_time(&key, finished);
        assert_eq!(b.get(&key), secs(20));
        // A finish time before the epoch or far before boot does not panic.
        assert!(!b.is_in_backoff_since_system_time(&key, system_time_from_unix_nanos(-5)));
        assert!(!b.is_in_backoff_since_system_time(&key, UNIX_EPOCH));
    }

    #[test]
    fn future_event_time_does_not_panic() {
        let (clock, b) = fake();
        b.next("k", clock.now() + secs(5));
        assert_eq!(b.get("k"), secs(10));
        assert!(b.is_in_backoff_since("k", clock.now() + secs(5)));
    }

    #[test]
    fn jitter_stays_within_bounds() {
        let clock = Arc::new(FakeClock::new());
        let b = Backoff::with_clock(secs(10), secs(300), clock.clone()).with_jitter(0.5);
        let mut prev = Duration::ZERO;
        let mut jittered = false;
        for i in 0..10 {
            b.next("k", clock.now());
            let d = b.get("k");
            if i == 0 {
                assert!(d >= secs(10) && d <= secs(15), "{d:?}");
            } else {
                let lo = (prev * 2).min(secs(300));
                let hi = (prev * 2 + prev / 2).min(secs(300));
                assert!(d >= lo && d <= hi, "{d:?} not in [{lo:?}, {hi:?}]");
            }
            jittered |= d != secs(10) * (1 << i);
            prev = d;
        }
        assert!(jittered, "jitter added nothing");
        assert_eq!(b.get("k"), secs(300));
    }

    #[test]
    fn crash_loop_with_low_max_lowers_initial() {
        let clock = Arc::new(FakeClock::new());
        let b = Backoff::crash_loop_with_max(secs(4)).clock(clock.clone());
        b.next("k", clock.now());
        assert_eq!(b.get("k"), secs(4));
        b.next("k", clock.now());
        assert_eq!(b.get("k"), secs(4));
        assert_eq!(b.expiry(), secs(600));
    }

    #[test]
    fn invalid_jitter_means_none() {
        let clock = Arc::new(FakeClock::new());
        let b = Backoff::with_clock(secs(10), secs(300), clock.clone()).with_jitter(f64::NAN);
        b.next("k", clock.now());
        assert_eq!(b.get("k"), secs(10));
    }

    #[test]
    fn keys_as_upstream() {
        assert_eq!(
            crash_loop_key("web", "ns", "1234", "app", "5f3a"),
            "web_ns_1234_app_5f3a"
        );
        assert_eq!(image_pull_key("1234", "busybox:1.36"), "1234_busybox:1.36");
    }

    #[test]
    fn fake_clock_set_and_pair() {
        let c = FakeClock::new();
        let t0 = c.now();
        let s0 = c.system_now();
        c.set(t0 + secs(42));
        assert_eq!(c.now() - t0, secs(42));
        assert_eq!(c.system_now().duration_since(s0).ok(), Some(secs(42)));
        c.set(t0); // back to base
        assert_eq!(c.now(), t0);
    }

    #[test]
    fn backoff_is_send_sync_and_shared() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Backoff>();
        let (clock, b) = fake();
        let b = Arc::new(b);
        let handles: Vec<_> = (0..4)
            .map(|i| {
                let b = b.clone();
                let now = clock.now();
                std::thread::spawn(move || b.next(&format!("k{i}"), now))
            })
            .collect();
        for h in handles {
            assert!(h.join().is_ok());
        }
        assert_eq!(b.len(), 4);
    }

    #[test]
    fn system_time_conversion() {
        assert_eq!(system_time_from_unix_nanos(0), UNIX_EPOCH);
        assert_eq!(
            system_time_from_unix_nanos(1_500_000_000),
            UNIX_EPOCH + Duration::from_millis(1500)
        );
    }
}
