//! `tchapMessagesAdded`: a message stored after the subscription started arrives, journaled
//! like a read of `tchapMessages`; what the caller's `tchapMessages` would not return never
//! does (another organisation's, above the clearance, another room when one is named); the
//! scope, the cap per caller, the token's expiry and a journal that cannot be written end it.

use std::{sync::Arc, time::Duration};

use argus_domain::{
    Classification, Scope, Viewer,
    testing::{MessageRecordBuilder, RoomSnapshotBuilder},
};
use argus_graphql::{Context, schema::subscription::MAX_SUBSCRIPTIONS_PER_CALLER};
use futures::StreamExt as _;
use juniper::{DefaultScalarValue, ValuesStream, Variables};
use serde_json::{Value, json};

use crate::harness::{Harness, Restricted, Secret, TopSecret, Unclassified, ok, viewer};

const FIELDS: &str = "eventId roomId body classification";

/// Longer than the subscription's poll interval: what would arrive has arrived by then.
const SETTLED: Duration = Duration::from_millis(2_500);

fn document(room: Option<&str>) -> String {
    match room {
        Some(room) => format!("subscription {{ tchapMessagesAdded(roomId: \"{room}\") {{ {FIELDS} }} }}"),
        None => format!("subscription {{ tchapMessagesAdded {{ {FIELDS} }} }}"),
    }
}

/// Starts the subscription; its errors when it does not start.
pub(crate) async fn subscribe<'a>(
    h: &'a Harness,
    context: &'a Context,
    document: &'a str,
) -> Result<ValuesStream<'a, DefaultScalarValue>, Value> {
    let (value, errors) = juniper::resolve_into_stream(document, None, &h.schema, &Variables::new(), context)
        .await
        .map_err(|e| json!(e.to_string()))?;
    if !errors.is_empty() {
        return Err(serde_json::to_value(&errors).unwrap_or_default());
    }
    let field =
        value.into_object().and_then(|o| o.into_iter().find(|(name, _)| name == "tchapMessagesAdded"));
    match field {
        Some((_, juniper::Value::Scalar(stream))) => Ok(stream),
        other => Err(json!(format!("no stream: {}", other.is_some()))),
    }
}

/// The next item within `wait`: `Some(Ok(message))`, `Some(Err(code))`, or `None` (ended or
/// nothing within `wait`: `ended` tells).
pub(crate) async fn next_item(
    stream: &mut ValuesStream<'_, DefaultScalarValue>,
    wait: Duration,
) -> (Option<Result<Value, String>>, bool) {
    match tokio::time::timeout(wait, stream.next()).await {
        Err(_) => (None, false),
        Ok(None) => (None, true),
        Ok(Some(Ok(value))) => (Some(Ok(serde_json::to_value(&value).unwrap_or_default())), false),
        Ok(Some(Err(e))) => {
            let error = serde_json::to_value(&e).unwrap_or_default();
            let error = if error.is_array() { error[0].clone() } else { error };
            let code = error["extensions"]["code"].as_str().map_or_else(|| error.to_string(), str::to_owned);
            (Some(Err(code)), false)
        }
    }
}

async fn store(h: &Harness, owner: &Viewer, classification: Classification, room: &str, event: &str) {
    let message = MessageRecordBuilder::new(event).body(format!("body of {event}")).build();
    h.store_snapshot(owner, classification, RoomSnapshotBuilder::new(room).messages([message]).build()).await;
}

pub(crate) fn context(h: &Harness, viewer: &Viewer) -> Context {
    Context::new(viewer.clone(), Arc::clone(&h.services))
}

#[tokio::test]
async fn a_message_stored_after_subscribing_arrives_journaled_and_nothing_else_does() {
    let h = Harness::new().await;
    let (writer, other_org) =
        (viewer("dgsi", TopSecret, &[Scope::Read]), viewer("anssi", TopSecret, &[Scope::Read]));
    let reader = viewer("dgsi", Restricted, &[Scope::Read]);
    store(&h, &writer, Restricted, "!a:tchap.test", "$before").await;
    let (ctx, doc) = (context(&h, &reader), document(None));
    let mut stream = subscribe(&h, &ctx, &doc).await.unwrap_or_else(|e| panic!("{e}"));
    // Running: it has read nothing and waits.
    let (nothing, ended) = next_item(&mut stream, Duration::from_millis(200)).await;
    assert!(nothing.is_none() && !ended, "{nothing:?}");

    store(&h, &other_org, Unclassified, "!a:tchap.test", "$other-org").await;
    store(&h, &writer, Secret, "!s:tchap.test", "$above").await;
    store(&h, &writer, Restricted, "!a:tchap.test", "$permitted").await;
    // A local commit wakes the subscriber before its poll would (another replica's is found by
    // the poll).
    h.services.app.new_messages.notify();
    let (first, _) = next_item(&mut stream, Duration::from_millis(500)).await;
    let first = first.unwrap_or_else(|| panic!("nothing arrived")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        first,
        json!({ "eventId": "$permitted", "roomId": "!a:tchap.test", "body": "body of $permitted",
                "classification": "RESTRICTED" })
    );
    let (more, ended) = next_item(&mut stream, SETTLED).await;
    assert!(more.is_none() && !ended, "{more:?}");
    // A message stored later, without a local signal, is found by the poll.
    store(&h, &writer, Restricted, "!b:tchap.test", "$polled").await;
    let (polled, _) = next_item(&mut stream, SETTLED).await;
    assert_eq!(polled.and_then(Result::ok).map(|v| v["eventId"].clone()), Some(json!("$polled")));

    // Each delivery was journaled like a read of tchapMessages.
    let auditor = viewer("dgsi", TopSecret, &[Scope::Audit]);
    let log = ok(h
        .run(
            &auditor,
            "{ tchapAccessLog { edges { node { actor action roomIds itemCount classification } } } }",
            json!({}),
        )
        .await);
    let entries: Vec<Value> = log["tchapAccessLog"]["edges"]
        .as_array()
        .map(|edges| edges.iter().map(|e| e["node"].clone()).collect())
        .unwrap_or_default();
    let entry = |room: &str| {
        json!({ "actor": "agent@dgsi", "action": "READ_MESSAGES", "roomIds": [room], "itemCount": 1,
                "classification": "RESTRICTED" })
    };
    assert_eq!(entries, vec![entry("!b:tchap.test"), entry("!a:tchap.test")]);
}

#[tokio::test]
async fn a_room_named_narrows_and_a_room_not_visible_looks_empty() {
    let h = Harness::new().await;
    let writer = viewer("dgsi", TopSecret, &[Scope::Read]);
    let reader = viewer("dgsi", Restricted, &[Scope::Read]);
    store(&h, &writer, Secret, "!s:tchap.test", "$secret-before").await;
    let ctx = context(&h, &reader);
    let (in_a, in_s, in_none) = (
        document(Some("!a:tchap.test")),
        document(Some("!s:tchap.test")),
        document(Some("!none:tchap.test")),
    );
    let mut a = subscribe(&h, &ctx, &in_a).await.unwrap_or_else(|e| panic!("{e}"));
    // A withheld room and a missing one start alike, without an error.
    let mut s = subscribe(&h, &ctx, &in_s).await.unwrap_or_else(|e| panic!("{e}"));
    let mut none = subscribe(&h, &ctx, &in_none).await.unwrap_or_else(|e| panic!("{e}"));

    store(&h, &writer, Restricted, "!b:tchap.test", "$in-b").await;
    store(&h, &writer, Secret, "!s:tchap.test", "$in-s").await;
    store(&h, &writer, Restricted, "!a:tchap.test", "$in-a").await;
    h.services.app.new_messages.notify();
    let (got, _) = next_item(&mut a, SETTLED).await;
    assert_eq!(got.and_then(Result::ok).map(|v| v["eventId"].clone()), Some(json!("$in-a")));
    for stream in [&mut a, &mut s, &mut none] {
        let (more, ended) = next_item(stream, SETTLED).await;
        assert!(more.is_none() && !ended, "{more:?}");
    }
}

#[tokio::test]
async fn without_the_read_scope_or_past_the_cap_a_subscription_does_not_start() {
    let h = Harness::new().await;
    let doc = document(None);
    let ingester = context(&h, &viewer("dgsi", TopSecret, &[Scope::Ingest]));
    let refused = subscribe(&h, &ingester, &doc).await.err().unwrap_or_else(|| panic!("started"));
    assert_eq!(refused[0]["extensions"]["code"], "FORBIDDEN", "{refused}");
    let bad = document(Some("not a room"));
    let reader = context(&h, &viewer("dgsi", TopSecret, &[Scope::Read]));
    let refused = subscribe(&h, &reader, &bad).await.err().unwrap_or_else(|| panic!("started"));
    assert_eq!(refused[0]["extensions"]["code"], "INVALID_INPUT", "{refused}");

    let mut open = Vec::new();
    for _ in 0..MAX_SUBSCRIPTIONS_PER_CALLER {
        open.push(subscribe(&h, &reader, &doc).await.unwrap_or_else(|e| panic!("{e}")));
    }
    assert_eq!(h.services.open_subscriptions(), MAX_SUBSCRIPTIONS_PER_CALLER);
    let refused = subscribe(&h, &reader, &doc).await.err().unwrap_or_else(|| panic!("started"));
    assert_eq!(refused[0]["extensions"]["code"], "TOO_MANY_SUBSCRIPTIONS", "{refused}");
    // Another caller of the same organisation has slots of their own.
    let colleague = argus_domain::testing::ViewerBuilder::new("dgsi")
        .actor("colleague@dgsi")
        .clearance(TopSecret)
        .scopes([Scope::Read])
        .build();
    let colleague = context(&h, &colleague);
    let theirs = subscribe(&h, &colleague, &doc).await.unwrap_or_else(|e| panic!("{e}"));
    // One closed gives its slot back.
    drop(open.pop());
    let again = subscribe(&h, &reader, &doc).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(h.services.open_subscriptions(), MAX_SUBSCRIPTIONS_PER_CALLER + 1);
    drop((open, theirs, again));
    assert_eq!(h.services.open_subscriptions(), 0);
}

#[tokio::test]
async fn the_subscription_ends_when_the_token_expires() {
    let h = Harness::new().await;
    let reader = viewer("dgsi", TopSecret, &[Scope::Read]);
    let expires = time::OffsetDateTime::now_utc() + time::Duration::milliseconds(1_500);
    let ctx = context(&h, &reader).with_expiry(expires);
    let doc = document(None);
    let mut stream = subscribe(&h, &ctx, &doc).await.unwrap_or_else(|e| panic!("{e}"));
    let (item, _) = next_item(&mut stream, Duration::from_secs(5)).await;
    assert!(time::OffsetDateTime::now_utc() >= expires, "ended before the expiry");
    assert_eq!(item, Some(Err("UNAUTHENTICATED".to_owned())));
    let (after, ended) = next_item(&mut stream, Duration::from_secs(1)).await;
    assert!(after.is_none() && ended, "{after:?}");
    // Nothing is delivered to an expired token, stored before or after.
    let writer = viewer("dgsi", TopSecret, &[Scope::Read]);
    store(&h, &writer, Restricted, "!a:tchap.test", "$late").await;
    let late = context(&h, &reader).with_expiry(time::OffsetDateTime::now_utc() - time::Duration::seconds(1));
    let mut stream = subscribe(&h, &late, &doc).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        next_item(&mut stream, Duration::from_secs(2)).await.0,
        Some(Err("UNAUTHENTICATED".to_owned()))
    );
}

#[tokio::test]
async fn a_delivery_that_cannot_be_journaled_ends_the_subscription_unavailable() {
    let h = Harness::new().await;
    let writer = viewer("dgsi", TopSecret, &[Scope::Read]);
    let ctx = context(&h, &viewer("dgsi", TopSecret, &[Scope::Read]));
    let doc = document(None);
    // The stream reads nothing before it is first polled: the message is there when it does.
    let mut stream = subscribe(&h, &ctx, &doc).await.unwrap_or_else(|e| panic!("{e}"));
    store(&h, &writer, Restricted, "!a:tchap.test", "$unjournaled").await;
    if crate::access::refuse_log_writes(&h).is_none() {
        return;
    }
    h.services.app.new_messages.notify();
    let (item, _) = next_item(&mut stream, SETTLED).await;
    assert_eq!(item, Some(Err("UNAVAILABLE".to_owned())), "the message left without its entry");
    let (after, ended) = next_item(&mut stream, Duration::from_secs(1)).await;
    assert!(after.is_none() && ended, "{after:?}");
}
