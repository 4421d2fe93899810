//! Legal hold through the API: a message its sender redacted after it was archived reads as
//! redacted for everyone, and its captured content (`heldBody`, `heldMedia*`, the versions'
//! `heldBody`/`heldMsgtype`) only for a caller with `tchap:redacted`.

use argus_domain::{
    MediaRef, MessageEdit, MessageRecord, MessageRedaction, Redaction, RoomSnapshot, Scope, from_unix_ms,
};
use serde_json::{Value, json};

use crate::harness::{ALL, Harness, Restricted, Secret, TopSecret, error_code, ok, viewer};

const ROOM: &str = "!hold:tchap.test";

const MESSAGES: &str = r"query($room: String!) {
  tchapMessages(roomId: $room, first: 10) {
    edges { node { eventId body redacted mediaUri heldBody heldMediaUri heldMediaMimetype
      versions { eventId body msgtype heldBody heldMsgtype } } }
  }
}";

/// The plain selection (answered by the fast path when nothing is edited or redacted).
const PLAIN: &str = r"query($room: String!) {
  tchapMessages(roomId: $room, first: 10) { edges { node { eventId body redacted heldBody heldMediaUri } } }
}";

fn snapshot(messages: Vec<MessageRecord>) -> RoomSnapshot {
    let room = ROOM.parse().unwrap_or_else(|e| panic!("{e}"));
    let homeserver = "https://matrix.tchap.test".parse().unwrap_or_else(|e| panic!("{e}"));
    RoomSnapshot {
        name: Some("Salle".into()),
        member_count: 2,
        messages,
        ..RoomSnapshot::new(room, homeserver)
    }
}

/// Stores `snapshots` one ingestion each, as a dgsi ingester at SECRET.
async fn record(h: &Harness, snapshots: Vec<RoomSnapshot>) {
    let store = h.services.app.store.clone();
    let run = argus_store::IngestionRun {
        viewer: viewer("dgsi", TopSecret, &ALL),
        classification: Secret,
        started_at: time::OffsetDateTime::now_utc(),
    };
    tokio::task::spawn_blocking(move || {
        for s in &snapshots {
            store.record_ingestion(&run, s).unwrap_or_else(|e| panic!("{e}"));
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
}

/// A text, an image and an edited text stored; then their sender redacts the first two and the
/// third's edit.
async fn redacted_after_capture() -> Harness {
    let h = Harness::new().await;
    let at = |s: i64| from_unix_ms(1_767_225_600_000 + s * 1_000).unwrap_or_else(|e| panic!("{e}"));
    let suspect = "@suspect:tchap.test";
    let text = |i: i64, body: &str| {
        MessageRecord::text(
            format!("$h{i}:tchap.test").parse().unwrap_or_else(|e| panic!("{e}")),
            suspect.parse().unwrap_or_else(|e| panic!("{e}")),
            body,
            at(i),
        )
    };
    let confession = text(0, "J'ai effacé les journaux du serveur");
    let mut image = text(1, "badge.jpg");
    image.msgtype = Some("m.image".into());
    image.media = Some(MediaRef {
        uri: Some("mxc://tchap.test/badge".into()),
        mimetype: Some("image/jpeg".into()),
        size: None,
        ..Default::default()
    });
    let meeting = text(2, "Rendez-vous à 10h");
    let mut later = snapshot(Vec::new());
    later.edits = vec![MessageEdit {
        event_id: "$h2-edit:tchap.test".parse().unwrap_or_else(|e| panic!("{e}")),
        sender: meeting.sender.clone(),
        target: meeting.event_id.clone(),
        msgtype: Some("m.text".into()),
        body: Some("Rendez-vous à 10h au parking nord".into()),
        edited_at: at(5),
    }];
    let redaction = |target: &str| MessageRedaction {
        target: target.parse().unwrap_or_else(|e| panic!("{e}")),
        redaction: Redaction {
            redacted_by: suspect.parse().unwrap_or_else(|e| panic!("{e}")),
            redacted_at: at(60),
            reason: None,
        },
        confirmed: true,
    };
    let mut erase = snapshot(Vec::new());
    erase.redactions =
        vec![redaction("$h0:tchap.test"), redaction("$h1:tchap.test"), redaction("$h2-edit:tchap.test")];
    record(&h, vec![snapshot(vec![confession, image, meeting]), later, erase]).await;
    h
}

fn nodes(data: &Value) -> Vec<Value> {
    data["tchapMessages"]["edges"]
        .as_array()
        .map(|edges| edges.iter().map(|e| e["node"].clone()).collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn redacted_content_is_held_and_shown_only_with_the_redacted_scope() {
    let h = redacted_after_capture().await;
    let vars = json!({ "room": ROOM });
    let analyst = viewer("dgsi", Secret, &[Scope::Read]);
    let oversight = viewer("dgsi", Secret, &[Scope::Read, Scope::Redacted]);

    // Everyone: redacted, as before; nothing held shows.
    let seen = nodes(&ok(h.run(&analyst, MESSAGES, vars.clone()).await));
    assert_eq!(seen.len(), 3);
    for n in &seen {
        assert!(
            n["heldBody"].is_null() && n["heldMediaUri"].is_null() && n["heldMediaMimetype"].is_null(),
            "{n}"
        );
        for v in n["versions"].as_array().into_iter().flatten() {
            assert!(v["heldBody"].is_null() && v["heldMsgtype"].is_null(), "{v}");
        }
    }
    assert_eq!((&seen[0]["redacted"], &seen[0]["body"]), (&json!(true), &Value::Null));
    assert_eq!((&seen[1]["body"], &seen[1]["mediaUri"]), (&Value::Null, &Value::Null));
    assert_eq!(seen[2]["body"], "Rendez-vous à 10h", "the withdrawn edit is gone for everyone");
    assert_eq!(seen[2]["versions"][1]["body"], Value::Null);

    // Oversight: the same fields, and what was captured.
    let sealed = nodes(&ok(h.run(&oversight, MESSAGES, vars.clone()).await));
    for (with, without) in sealed.iter().zip(&seen) {
        for field in ["eventId", "body", "redacted", "mediaUri"] {
            assert_eq!(with[field], without[field], "{field}");
        }
    }
    assert_eq!(sealed[0]["heldBody"], "J'ai effacé les journaux du serveur");
    assert_eq!(sealed[1]["heldBody"], "badge.jpg");
    assert_eq!(sealed[1]["heldMediaUri"], "mxc://tchap.test/badge");
    assert_eq!(sealed[1]["heldMediaMimetype"], "image/jpeg");
    assert_eq!(sealed[2]["heldBody"], Value::Null, "the message itself was not redacted");
    assert_eq!(sealed[2]["versions"][0]["heldBody"], Value::Null, "its original was never purged");
    assert_eq!(sealed[2]["versions"][1]["heldBody"], "Rendez-vous à 10h au parking nord");
    assert_eq!(sealed[2]["versions"][1]["heldMsgtype"], "m.text");

    // The plain selection answers the same as the executor, for both.
    for (who, full) in [(&analyst, &seen), (&oversight, &sealed)] {
        let plain = nodes(&ok(h.run(who, PLAIN, vars.clone()).await));
        for (p, f) in plain.iter().zip(full.iter()) {
            for field in ["eventId", "body", "redacted", "heldBody", "heldMediaUri"] {
                assert_eq!(p[field], f[field], "{field}");
            }
        }
    }

    // The scope opens nothing else: not another organisation, not above the clearance, not
    // without tchap:read.
    let foreign = viewer("anssi", TopSecret, &[Scope::Read, Scope::Redacted]);
    assert!(nodes(&ok(h.run(&foreign, MESSAGES, vars.clone()).await)).is_empty());
    let low = viewer("dgsi", Restricted, &[Scope::Read, Scope::Redacted]);
    assert!(nodes(&ok(h.run(&low, MESSAGES, vars.clone()).await)).is_empty());
    let unread = viewer("dgsi", Secret, &[Scope::Redacted]);
    assert_eq!(error_code(&h.run(&unread, MESSAGES, vars.clone()).await), Some("FORBIDDEN"));
}
