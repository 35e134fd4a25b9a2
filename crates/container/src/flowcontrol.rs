//! Flow control: the keyed exponential backoff of crash loops and image
//! pulls, and token buckets (upstream `client-go/util/flowcontrol`).

pub mod backoff;
pub mod ratelimit;

pub use backoff::{
    Backoff, Clock, FakeClock, RealClock, crash_loop_key, image_pull_key,
    system_time_from_unix_nanos,
};
pub use ratelimit::{KeyedTokenBucket, TokenBucket};
