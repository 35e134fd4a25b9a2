//! The simulation's one clock: virtual time that runs on across kubelet
//! restarts, read by the fake runtime's timestamps and the kubelet's
//! backoffs alike.
//!
//! Each kubelet incarnation runs on its own paused tokio runtime (dropping
//! the runtime ends every task of the old kubelet mid-call, as a killed
//! process does). A paused runtime's clock starts anew, so the simulation
//! keeps the virtual time already spent in `offset` and adds the current
//! runtime's elapsed time to it.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use kubelet_container::flowcontrol::Clock;

/// Where the simulated wall clock starts: 2025-06-15T14:13:20Z, any fixed
/// moment will do.
pub const EPOCH_SECS: u64 = 1_750_000_000;

#[derive(Debug, Default)]
struct State {
    /// Virtual time spent by earlier incarnations.
    offset: Duration,
    /// When the current incarnation's runtime started, on its own clock.
    base: Option<tokio::time::Instant>,
}

/// The virtual clock (clones share it).
#[derive(Debug, Clone)]
pub struct SimClock {
    state: Arc<Mutex<State>>,
    /// A fixed real instant the monotonic readings are counted from.
    origin: Instant,
}

impl Default for SimClock {
    fn default() -> Self {
        Self::new()
    }
}

impl SimClock {
    /// A clock at virtual time zero.
    pub fn new() -> Self {
        Self {
            state: Arc::default(),
            origin: Instant::now(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Virtual time since the simulation began. Must be read inside the
    /// current incarnation's runtime (tokio's paused clock is per runtime).
    pub fn elapsed(&self) -> Duration {
        let state = self.lock();
        state.offset + state.base.map(|b| b.elapsed()).unwrap_or_default()
    }

    /// Starts counting on the current runtime's clock (a new incarnation).
    pub fn attach(&self) {
        self.lock().base = Some(tokio::time::Instant::now());
    }

    /// Stops counting on the current runtime (before it is dropped),
    /// keeping the time spent.
    pub fn detach(&self) {
        let mut state = self.lock();
        if let Some(base) = state.base.take() {
            state.offset += base.elapsed();
        }
    }

    /// The simulated wall clock.
    pub fn wall(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(EPOCH_SECS) + self.elapsed()
    }

    /// The simulated wall clock in Unix nanoseconds (the CRI's timestamps).
    pub fn wall_nanos(&self) -> i64 {
        let d = Duration::from_secs(EPOCH_SECS) + self.elapsed();
        i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
    }
}

impl Clock for SimClock {
    fn now(&self) -> Instant {
        self.origin + self.elapsed()
    }

    fn system_now(&self) -> SystemTime {
        self.wall()
    }
}

/// The prober's wall clock (for `initialDelaySeconds`).
impl kubelet_prober::Clock for SimClock {
    fn now(&self) -> SystemTime {
        self.wall()
    }
}
