//! `PodConfig` with user sources plugged in through the trait and through
//! `channel`: readiness, `seen_all_sources`, `sync`, cross-source UID
//! conflicts, the update stream and shutdown.

// Test code: a panic is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashSet;
use std::time::Duration;

use async_trait::async_trait;
use common::*;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Container, Pod, PodSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kubelet_podconfig::{Error, PodConfig, PodOperation, PodSource, SourceSink};
use tokio::sync::mpsc;

const WAIT: Duration = Duration::from_secs(5);

fn pod(name: &str, uid: &str) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("ns".into()),
            uid: Some(uid.into()),
            ..Default::default()
        },
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "c".into(),
                image: Some("i".into()),
                ..Default::default()
            }],
            ..Default::default()
        }),
        status: None,
    }
}

/// A user's own source: forwards snapshots it is told to send.
struct Scripted {
    name: &'static str,
    rx: mpsc::Receiver<Vec<Pod>>,
}

#[async_trait]
impl PodSource for Scripted {
    fn name(&self) -> &str {
        self.name
    }

    async fn run(mut self: Box<Self>, sink: SourceSink) {
        while let Some(pods) = self.rx.recv().await {
            if sink.set(pods).await.is_err() {
                return;
            }
        }
    }
}

fn scripted(name: &'static str) -> (Scripted, mpsc::Sender<Vec<Pod>>) {
    let (tx, rx) = mpsc::channel(8);
    (Scripted { name, rx }, tx)
}

#[tokio::test]
async fn custom_sources_readiness_sync_and_uid_conflicts() {
    init_tracing();
    let (one, one_tx) = scripted("one");
    let (two, two_tx) = scripted("two");
    let (config, mut updates) = PodConfig::builder("n").source(one).source(two).start();
    assert_eq!(config.sources(), ["one", "two"]);
    assert!(!config.sources_ready());

    one_tx.send(vec![pod("a", "u1")]).await.unwrap();
    let add = expect(&mut updates, WAIT, PodOperation::Add, &["a"]).await;
    assert_eq!(add.source, "one");
    let mut seen = HashSet::from([add.source.clone()]);
    assert!(!config.seen_all_sources(&seen), "two has not sent a SET");

    // two claims u1 too: rejected, and two is ready with nothing.
    two_tx
        .send(vec![pod("a-copy", "u1"), pod("b", "u2")])
        .await
        .unwrap();
    let add = expect(&mut updates, WAIT, PodOperation::Add, &["b"]).await;
    seen.insert(add.source.clone());
    assert!(config.seen_all_sources(&seen));
    assert!(
        !config.seen_all_sources(&HashSet::from(["one".to_string()])),
        "the consumer must have seen both"
    );
    let rejected = config.rejected_manifests();
    assert_eq!(rejected.len(), 1);
    assert!(
        matches!(&*rejected[0].error, Error::UidConflict { owner, uid, .. } if owner == "one" && uid == "u1")
    );
    assert_eq!(rejected[0].origin, "pod a-copy_ns");

    // The next SET of two without the conflict clears the rejection.
    two_tx.send(vec![pod("b", "u2")]).await.unwrap();
    config.sync().await.unwrap();
    let sync = expect(&mut updates, WAIT, PodOperation::Set, &["a", "b"]).await;
    assert_eq!(sync.source, "*");
    assert!(config.rejected_manifests().is_empty());

    // A source registered later through channel() counts too.
    let three = config.channel("three");
    assert!(!config.sources_ready());
    three
        .send(PodOperation::Add, vec![pod("c", "u3")])
        .await
        .unwrap();
    expect(&mut updates, WAIT, PodOperation::Add, &["c"]).await;
    assert!(!config.sources_ready(), "an ADD is not a SET");
    three.set(vec![pod("c", "u3")]).await.unwrap();
    // No change, but the first SET says "ready" with an empty ADD.
    let ready = expect(&mut updates, WAIT, PodOperation::Add, &[]).await;
    assert_eq!(ready.source, "three");
    assert!(config.sources_ready());

    // Shutdown ends the stream and closes the sinks.
    config.shutdown();
    let rest: Vec<_> = tokio::time::timeout(WAIT, updates.collect::<Vec<_>>())
        .await
        .unwrap();
    assert!(
        rest.is_empty(),
        "{:?}",
        rest.iter().map(summary).collect::<Vec<_>>()
    );
    assert!(matches!(three.set(vec![]).await, Err(Error::Closed)));
}

#[tokio::test]
async fn backpressure_keeps_order_and_loses_nothing() {
    init_tracing();
    let (config, mut updates) = PodConfig::builder("n").updates_capacity(1).start();
    let sink = config.channel("s");
    let producer = tokio::spawn(async move {
        for i in 0..200 {
            sink.send(
                PodOperation::Add,
                vec![pod(&format!("p{i:03}"), &format!("u{i}"))],
            )
            .await
            .unwrap();
        }
    });
    for i in 0..200 {
        let u = tokio::time::timeout(WAIT, updates.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(summary(&u), (PodOperation::Add, vec![format!("p{i:03}")]));
    }
    producer.await.unwrap();
    assert_eq!(config.merged_pods().len(), 200);
}
