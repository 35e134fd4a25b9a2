//! Upstream's `EventCorrelator`
//! (`staging/src/k8s.io/client-go/tools/record/events_cache.go`), without
//! I/O: every event goes through
//!
//! 1. the aggregator: more than [`AGGREGATE_MAX_EVENTS`] − 1 events that
//!    differ only by message within [`AGGREGATE_INTERVAL`] of each other
//!    become one event with the message `(combined from similar events):
//!    <latest message>`, counted from then on;
//! 2. the logger: an event seen before (same source, object, type, reason,
//!    message) is the earlier one with `count` + 1 and a new
//!    `lastTimestamp`, written as a strategic merge PATCH of `count`,
//!    `lastTimestamp` and `message`;
//! 3. the spam filter: a token bucket per source and object, 25 events of
//!    burst, one more every 5 minutes (the core crate's
//!    [`KeyedTokenBucket`]); an event over it is dropped.
//!
//! The caches hold 4096 entries, least recently used first out, as
//! upstream's.

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime};

use governor::clock::Clock as GovClock;
use k8s_openapi::api::core::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kubelet_container::flowcontrol::KeyedTokenBucket;
use kubelet_container::flowcontrol::ratelimit::{EVENT_SPAM_BURST, EVENT_SPAM_PERIOD};
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::lru::Lru;

/// Entries of each of the correlator's caches (upstream
/// `maxLruCacheEntries`).
pub const LRU_CACHE_ENTRIES: usize = 4096;

/// Similar events (differing only by message) within
/// [`AGGREGATE_INTERVAL`] before they are combined: the tenth is the first
/// combined one (upstream `defaultAggregateMaxEvents`).
pub const AGGREGATE_MAX_EVENTS: usize = 10;

/// How recent a similar event must be to count towards aggregation
/// (upstream `defaultAggregateIntervalInSeconds`).
pub const AGGREGATE_INTERVAL: Duration = Duration::from_secs(600);

/// The prefix of a combined event's message (upstream
/// `EventAggregatorByReasonMessageFunc`).
pub const AGGREGATE_MESSAGE_PREFIX: &str = "(combined from similar events): ";

/// Keys are fields joined by a separator no field holds, so that two
/// different events never share a key (upstream joins them with nothing).
const SEP: &str = "\u{1f}";

fn s(v: &Option<String>) -> &str {
    v.as_deref().unwrap_or_default()
}

/// Source and involved object (upstream `getSpamKey`).
fn spam_key(e: &Event) -> String {
    let src = e.source.as_ref();
    let o = &e.involved_object;
    [
        src.map(|x| s(&x.component)).unwrap_or_default(),
        src.map(|x| s(&x.host)).unwrap_or_default(),
        s(&o.kind),
        s(&o.namespace),
        s(&o.name),
        s(&o.uid),
        s(&o.api_version),
    ]
    .join(SEP)
}

/// Everything that makes two events the same one (upstream `getEventKey`).
fn event_key(e: &Event) -> String {
    let src = e.source.as_ref();
    let o = &e.involved_object;
    [
        src.map(|x| s(&x.component)).unwrap_or_default(),
        src.map(|x| s(&x.host)).unwrap_or_default(),
        s(&o.kind),
        s(&o.namespace),
        s(&o.name),
        s(&o.field_path),
        s(&o.uid),
        s(&o.api_version),
        s(&e.type_),
        s(&e.reason),
        s(&e.message),
    ]
    .join(SEP)
}

/// What makes events similar, and what tells similar events apart
/// (upstream `EventAggregatorByReasonFunc`).
fn aggregate_keys(e: &Event) -> (String, String) {
    let src = e.source.as_ref();
    let o = &e.involved_object;
    let key = [
        src.map(|x| s(&x.component)).unwrap_or_default(),
        src.map(|x| s(&x.host)).unwrap_or_default(),
        s(&o.kind),
        s(&o.namespace),
        s(&o.name),
        s(&o.uid),
        s(&o.api_version),
        s(&e.type_),
        s(&e.reason),
        s(&e.reporting_component),
        s(&e.reporting_instance),
    ]
    .join(SEP);
    (key, s(&e.message).to_owned())
}

struct AggregateRecord {
    /// The messages seen, at most [`AGGREGATE_MAX_EVENTS`] − 1 kept.
    local_keys: BTreeSet<String>,
    /// When the last similar event was seen.
    last: Instant,
}

/// What the logger knows of an event written before (upstream `eventLog`).
#[derive(Clone)]
struct EventLog {
    count: i32,
    first_timestamp: Option<Time>,
    name: Option<String>,
    resource_version: Option<String>,
}

impl EventLog {
    fn of(e: &Event) -> Self {
        Self {
            count: e.count.unwrap_or(1),
            first_timestamp: e.first_timestamp.clone(),
            name: e.metadata.name.clone(),
            resource_version: e.metadata.resource_version.clone(),
        }
    }
}

/// What to do with an event (upstream `EventCorrelateResult`).
#[derive(Debug)]
pub(crate) enum Correlated {
    /// The spam filter dropped it.
    Skip,
    /// Create it.
    Create(Event),
    /// PATCH the existing event with `patch`; if it is gone, create
    /// `event` (which carries the count).
    Patch {
        /// The event as it now is.
        event: Event,
        /// `count`, `lastTimestamp` and `message`.
        patch: Value,
    },
}

/// The time of one correlation: the monotonic clock for the aggregation
/// window, the wall clock for a combined event's timestamps, and where its
/// name's unique nanosecond suffix comes from.
pub(crate) struct Now<'a> {
    pub(crate) mono: Instant,
    pub(crate) wall: SystemTime,
    pub(crate) unique_nanos: &'a (dyn Fn(SystemTime) -> u64 + Send + Sync),
}

/// Upstream's `EventCorrelator` with its default options.
pub(crate) struct Correlator<C: GovClock> {
    spam: KeyedTokenBucket<String, C>,
    aggregates: Lru<String, AggregateRecord>,
    logs: Lru<String, EventLog>,
    seen: u64,
}

impl<C: GovClock> Correlator<C> {
    /// A correlator whose spam filter runs on `clock`.
    pub(crate) fn new(clock: C) -> Self {
        Self {
            spam: KeyedTokenBucket::with_period(EVENT_SPAM_BURST, EVENT_SPAM_PERIOD, clock),
            aggregates: Lru::new(LRU_CACHE_ENTRIES),
            logs: Lru::new(LRU_CACHE_ENTRIES),
            seen: 0,
        }
    }

    /// Aggregates, counts and filters one event (upstream
    /// `EventCorrelate`).
    pub(crate) fn correlate(&mut self, event: Event, now: &Now) -> Correlated {
        self.seen += 1;
        if self.seen.is_multiple_of(1024) {
            // Buckets that are full again are as good as new: forget them.
            self.spam.retain_recent();
        }
        let (event, key) = self.aggregate(event, now);
        let (event, patch) = self.observe(event, key);
        if !self.spam.try_acquire(&spam_key(&event)) {
            return Correlated::Skip;
        }
        match patch {
            Some(patch) => Correlated::Patch { event, patch },
            None => Correlated::Create(event),
        }
    }

    /// Upstream `EventAggregate`: the event, or the combined event once
    /// similar ones are too many; and the key the logger counts it under.
    fn aggregate(&mut self, event: Event, now: &Now) -> (Event, String) {
        let key = event_key(&event);
        let (aggregate_key, local_key) = aggregate_keys(&event);
        let fresh = || AggregateRecord {
            local_keys: BTreeSet::new(),
            last: now.mono,
        };
        let mut record = match self.aggregates.get(&aggregate_key) {
            Some(r) if now.mono.saturating_duration_since(r.last) <= AGGREGATE_INTERVAL => {
                AggregateRecord {
                    local_keys: r.local_keys.clone(),
                    last: r.last,
                }
            }
            _ => fresh(),
        };
        record.local_keys.insert(local_key);
        record.last = now.mono;
        if record.local_keys.len() < AGGREGATE_MAX_EVENTS {
            self.aggregates.put(aggregate_key, record);
            return (event, key);
        }
        // Do not let the set grow any larger than the maximum.
        record.local_keys.pop_first();
        self.aggregates.put(aggregate_key.clone(), record);
        let message = format!("{AGGREGATE_MESSAGE_PREFIX}{}", s(&event.message));
        let wall = Time(Timestamp::try_from(now.wall).unwrap_or(Timestamp::UNIX_EPOCH));
        let combined = Event {
            metadata: ObjectMeta {
                name: Some(format!(
                    "{}.{:x}",
                    s(&event.involved_object.name),
                    (now.unique_nanos)(now.wall)
                )),
                namespace: event.metadata.namespace.clone(),
                ..Default::default()
            },
            count: Some(1),
            first_timestamp: Some(wall.clone()),
            last_timestamp: Some(wall),
            message: Some(message),
            ..event
        };
        (combined, aggregate_key)
    }

    /// Upstream `eventObserve`: an event seen before under `key` becomes
    /// the earlier one counted once more, with the PATCH that says so.
    fn observe(&mut self, mut event: Event, key: String) -> (Event, Option<Value>) {
        let mut patch = None;
        if let Some(last) = self.logs.get(&key).filter(|l| l.count > 0).cloned() {
            event.metadata.name = last.name;
            event.metadata.resource_version = last.resource_version;
            event.first_timestamp = last.first_timestamp;
            event.count = Some(last.count.saturating_add(1));
            patch = Some(json!({
                "count": event.count,
                "lastTimestamp": event.last_timestamp,
                "message": event.message,
            }));
        }
        self.logs.put(key, EventLog::of(&event));
        (event, patch)
    }

    /// Remembers the event as the API server returned it (its name and
    /// resource version; upstream `UpdateState`).
    pub(crate) fn update_state(&mut self, event: &Event) {
        self.logs.put(event_key(event), EventLog::of(event));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use governor::clock::FakeRelativeClock;
    use k8s_openapi::api::core::v1::{EventSource, ObjectReference};

    fn event(object: &str, reason: &str, message: &str) -> Event {
        Event {
            metadata: ObjectMeta {
                name: Some(format!("{object}.1")),
                namespace: Some("default".into()),
                ..Default::default()
            },
            involved_object: ObjectReference {
                kind: Some("Pod".into()),
                name: Some(object.into()),
                namespace: Some("default".into()),
                ..Default::default()
            },
            reason: Some(reason.into()),
            message: Some(message.into()),
            type_: Some("Normal".into()),
            count: Some(1),
            source: Some(EventSource {
                component: Some("kubelet".into()),
                host: Some("node-a".into()),
            }),
            ..Default::default()
        }
    }

    fn nanos(n: u64) -> impl Fn(SystemTime) -> u64 + Send + Sync {
        move |_| n
    }

    fn now(at: Instant, n: &(dyn Fn(SystemTime) -> u64 + Send + Sync)) -> Now<'_> {
        Now {
            mono: at,
            wall: SystemTime::UNIX_EPOCH,
            unique_nanos: n,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn same_event_is_patched_with_its_count() {
        let mut c = Correlator::new(FakeRelativeClock::default());
        let t = Instant::now();
        let Correlated::Create(first) =
            c.correlate(event("web", "Pulled", "m"), &now(t, &nanos(1)))
        else {
            panic!("first is created");
        };
        let mut stored = first.clone();
        stored.metadata.resource_version = Some("7".into());
        c.update_state(&stored);
        let Correlated::Patch { event, patch } =
            c.correlate(event("web", "Pulled", "m"), &now(t, &nanos(2)))
        else {
            panic!("second is patched");
        };
        assert_eq!(event.count, Some(2));
        assert_eq!(event.metadata.name.as_deref(), Some("web.1"));
        assert_eq!(event.metadata.resource_version.as_deref(), Some("7"));
        assert_eq!(patch["count"], 2);
        assert_eq!(patch["message"], "m");
    }

    #[tokio::test(start_paused = true)]
    async fn tenth_similar_event_is_combined_and_the_window_expires() {
        let mut c = Correlator::new(FakeRelativeClock::default());
        let t = Instant::now();
        for i in 0..9 {
            let r = c.correlate(
                event("web", "Unhealthy", &format!("m{i}")),
                &now(t, &nanos(i)),
            );
            assert!(matches!(r, Correlated::Create(_)), "{i}: {r:?}");
        }
        let Correlated::Create(combined) =
            c.correlate(event("web", "Unhealthy", "m9"), &now(t, &nanos(0xab)))
        else {
            panic!("the tenth is combined");
        };
        assert_eq!(
            combined.message.as_deref(),
            Some("(combined from similar events): m9")
        );
        assert_eq!(combined.metadata.name.as_deref(), Some("web.ab"));
        let r = c.correlate(event("web", "Unhealthy", "m10"), &now(t, &nanos(0xac)));
        let Correlated::Patch {
            event: counted,
            patch,
        } = r
        else {
            panic!("the next is counted on the combined one: {r:?}");
        };
        assert_eq!(counted.metadata.name.as_deref(), Some("web.ab"));
        assert_eq!(patch["count"], 2);
        assert_eq!(patch["message"], "(combined from similar events): m10");
        // Ten minutes and a second later the window starts again.
        let later = t + AGGREGATE_INTERVAL + Duration::from_secs(1);
        let r = c.correlate(event("web", "Unhealthy", "m11"), &now(later, &nanos(1)));
        assert!(
            matches!(r, Correlated::Create(ref e) if e.message.as_deref() == Some("m11")),
            "{r:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn spam_filter_allows_25_per_object_then_one_per_five_minutes() {
        let clock = FakeRelativeClock::default();
        let mut c = Correlator::new(clock.clone());
        let t = Instant::now();
        let passed = (0..30)
            .filter(|i| {
                !matches!(
                    c.correlate(event("web", &format!("R{i}"), "m"), &now(t, &nanos(0))),
                    Correlated::Skip
                )
            })
            .count();
        assert_eq!(passed, 25);
        assert!(!matches!(
            c.correlate(event("other", "R", "m"), &now(t, &nanos(0))),
            Correlated::Skip
        ));
        clock.advance(EVENT_SPAM_PERIOD);
        assert!(!matches!(
            c.correlate(event("web", "R99", "m"), &now(t, &nanos(0))),
            Correlated::Skip
        ));
        assert!(matches!(
            c.correlate(event("web", "R100", "m"), &now(t, &nanos(0))),
            Correlated::Skip
        ));
    }
}
