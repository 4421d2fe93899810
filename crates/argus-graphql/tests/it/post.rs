//! `postTchapMessage` against the mock homeserver: what is sent (marking, HTML form, reply,
//! transaction id), every refusal decided before any network call, and every call audited in
//! the chain with the body's digest and length only.

use argus_domain::{Classification, Scope};
use argus_testkit::homeserver::MATRIX_TOKEN;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use crate::harness::{
    ALL, Confidential, Harness, Restricted, Secret, TopSecret, Unclassified, error_code, ok, viewer,
};

const POST: &str = r"mutation($input: PostTchapMessageInput!) {
  postTchapMessage(input: $input) {
    eventId transactionId body
    audit { action outcome eventId bodySha256 bodyLength classification roomId error actor }
  }
}";

const AUDIT: &str = r"{ tchapIngestions(first: 100) { edges { node { action outcome roomId classification error eventId bodySha256 bodyLength } } } }";

/// dgsi holds !r (RESTRICTED), !s (SECRET) and !u (UNCLASSIFIED).
async fn archive() -> Harness {
    let h = Harness::new().await;
    let top = viewer("dgsi", TopSecret, &ALL);
    for (room, level) in
        [("!r:tchap.test", Restricted), ("!s:tchap.test", Secret), ("!u:tchap.test", Unclassified)]
    {
        ok(h.ingest(&top, room, level).await);
    }
    h
}

fn input(room: &str, body: &str, level: Classification) -> Value {
    json!({
        "homeserverUrl": "", "accessToken": MATRIX_TOKEN, "roomId": room, "body": body,
        "classification": level.as_str(),
    })
}

async fn post(h: &Harness, who: &argus_domain::Viewer, mut input: Value) -> Value {
    if input["homeserverUrl"] == "" {
        input["homeserverUrl"] = json!(h.hs.uri());
    }
    h.run(who, POST, json!({ "input": input })).await
}

fn poster(clearance: Classification) -> argus_domain::Viewer {
    viewer("dgsi", clearance, &[Scope::Post, Scope::Audit, Scope::Read])
}

#[tokio::test]
async fn a_note_is_sent_marked_formatted_and_audited_by_digest() {
    let h = archive().await;
    let who = poster(Secret);
    let data = ok(post(&h, &who, input("!r:tchap.test", "**RDV** 10h <b>quai</b>", Restricted)).await);
    let done = &data["postTchapMessage"];
    let body = "[DIFFUSION RESTREINTE] **RDV** 10h <b>quai</b>";
    assert_eq!(done["body"], body);
    let sent = h.hs.sent().await;
    assert_eq!(sent.len(), 1);
    let (room, txn, content) = &sent[0];
    assert_eq!(room, "!r:tchap.test");
    assert_eq!(done["transactionId"], txn.as_str());
    assert_eq!(content["msgtype"], "m.text");
    assert_eq!(content["body"], body);
    assert_eq!(content["format"], "org.matrix.custom.html");
    assert_eq!(
        content["formatted_body"],
        "[DIFFUSION RESTREINTE] <p><strong>RDV</strong> 10h &lt;b&gt;quai&lt;/b&gt;</p>"
    );
    let audit = &done["audit"];
    assert_eq!(audit["action"], "POST");
    assert_eq!(audit["outcome"], "SUCCEEDED");
    assert_eq!(audit["eventId"], done["eventId"]);
    assert_eq!(audit["bodySha256"], hex::encode(Sha256::digest(body.as_bytes())));
    assert_eq!(audit["bodyLength"], body.len());
    assert_eq!(audit["classification"], "RESTRICTED");
    // The body itself is nowhere in the trail.
    let trail = ok(h.run(&who, AUDIT, json!({})).await).to_string();
    assert!(!trail.contains("RDV"));

    // The same call again is the same transaction: the homeserver answers the same event.
    let again = ok(post(&h, &who, input("!r:tchap.test", "**RDV** 10h <b>quai</b>", Restricted)).await);
    assert_eq!(again["postTchapMessage"]["eventId"], done["eventId"]);
    let sent = h.hs.sent().await;
    assert_eq!(sent[1].1, sent[0].1);
    // A caller's own key is used as given.
    let mut keyed = input("!r:tchap.test", "plain", Unclassified);
    keyed["transactionId"] = json!("note-1");
    let keyed = ok(post(&h, &who, keyed).await);
    let txn = keyed["postTchapMessage"]["transactionId"].as_str().unwrap_or_default().to_owned();
    assert!(txn.starts_with("note-1-"), "{txn}");
    let sent = h.hs.sent().await;
    assert_eq!(sent[2].1, txn);
    // The same key for another note is another transaction.
    let mut other = input("!r:tchap.test", "another", Unclassified);
    other["transactionId"] = json!("note-1");
    let other = ok(post(&h, &who, other).await);
    assert_ne!(other["postTchapMessage"]["transactionId"], txn.as_str());
    assert_ne!(other["postTchapMessage"]["eventId"], keyed["postTchapMessage"]["eventId"]);
    assert_eq!(sent[2].2["body"], "[NON PROTÉGÉ] plain");
    assert!(sent[2].2.get("formatted_body").is_none());
}

#[tokio::test]
async fn a_reply_names_the_message_it_answers() {
    let h = archive().await;
    let who = poster(Secret);
    let mut reply = input("!r:tchap.test", "vu", Restricted);
    reply["replyTo"] = json!("$m1-rtchaptest");
    ok(post(&h, &who, reply).await);
    let sent = h.hs.sent().await;
    assert_eq!(sent[0].2["m.relates_to"]["m.in_reply_to"]["event_id"], "$m1-rtchaptest");
    // A message that is not one of the room's, visible to the caller, is refused unsent.
    let mut stray = input("!r:tchap.test", "vu", Restricted);
    stray["replyTo"] = json!("$m1-stchaptest");
    assert_eq!(error_code(&post(&h, &who, stray).await), Some("NOT_FOUND"));
    assert_eq!(h.hs.sent().await.len(), 1);
}

#[tokio::test]
async fn every_refusal_is_decided_before_any_network_call_and_audited() {
    let h = archive().await;
    let cases: Vec<(argus_domain::Viewer, Value, &str)> = vec![
        // Above the posting ceiling, though within clearance and the room's level.
        (poster(TopSecret), input("!s:tchap.test", "x", Confidential), "WRITE_DOWN"),
        // Above the room's stored level: the note would come back into the archive lower.
        (poster(Secret), input("!u:tchap.test", "x", Restricted), "WRITE_DOWN"),
        // Above the caller's clearance.
        (poster(Unclassified), input("!u:tchap.test", "x", Restricted), "ABOVE_CLEARANCE"),
        // A room withheld from the caller answers as a room not in the archive.
        (poster(Restricted), input("!s:tchap.test", "x", Unclassified), "NOT_FOUND"),
        (poster(Restricted), input("!nope:tchap.test", "x", Unclassified), "NOT_FOUND"),
        // Without the scope.
        (
            viewer("dgsi", Secret, &[Scope::Read, Scope::Ingest]),
            input("!r:tchap.test", "x", Restricted),
            "FORBIDDEN",
        ),
        // Malformed.
        (poster(Secret), input("!r:tchap.test", "   ", Restricted), "INVALID_INPUT"),
        (poster(Secret), input("not-a-room", "x", Restricted), "INVALID_INPUT"),
        (poster(Secret), input("!r:tchap.test", &"x".repeat(40_000), Restricted), "INVALID_INPUT"),
        (poster(Secret), input("!r:tchap.test", "a\u{7}b", Restricted), "INVALID_INPUT"),
        // Another homeserver than the one the room was archived from.
        (
            poster(Secret),
            json!({
                "homeserverUrl": "https://other.tchap.test", "accessToken": MATRIX_TOKEN, "roomId": "!r:tchap.test",
                "body": "x", "classification": "RESTRICTED",
            }),
            "INVALID_INPUT",
        ),
    ];
    for (who, input, code) in &cases {
        let response = post(&h, who, input.clone()).await;
        assert_eq!(error_code(&response), Some(*code), "{input}: {response}");
    }
    assert!(h.hs.sent().await.is_empty(), "a refused note reached the homeserver");
    let mut bad_txn = input("!r:tchap.test", "x", Restricted);
    bad_txn["transactionId"] = json!("../../evil");
    assert_eq!(error_code(&post(&h, &poster(Secret), bad_txn).await), Some("INVALID_INPUT"));

    // Every refusal is a FAILED post record; the one naming the SECRET room is filed there.
    let top = viewer("dgsi", TopSecret, &ALL);
    let trail = ok(h.run(&top, AUDIT, json!({})).await);
    let posts: Vec<&Value> = trail["tchapIngestions"]["edges"]
        .as_array()
        .map(|e| e.iter().map(|e| &e["node"]).filter(|n| n["action"] == "POST").collect())
        .unwrap_or_default();
    assert_eq!(posts.len(), cases.len() + 1);
    assert!(
        posts
            .iter()
            .all(|p| p["outcome"] == "FAILED" && p["eventId"].is_null() && p["bodySha256"].is_string())
    );
    let withheld = posts.iter().filter(|p| p["roomId"] == "!s:tchap.test").collect::<Vec<_>>();
    assert!(withheld.iter().all(|p| p["classification"] == "SECRET" || p["classification"] == "TOP_SECRET"));
    let low = ok(h.run(&viewer("dgsi", Restricted, &ALL), AUDIT, json!({})).await);
    assert!(!low.to_string().contains("!s:tchap.test"));
}

#[tokio::test]
async fn a_token_the_homeserver_rejects_fails_audited_without_the_token() {
    let h = archive().await;
    let mut bad = input("!r:tchap.test", "x", Restricted);
    bad["accessToken"] = json!("syt_bm90IGEgdG9rZW4_WRONGwrongWRONG_9z8y7x");
    let response = post(&h, &poster(Secret), bad).await;
    assert_eq!(error_code(&response), Some("HOMESERVER_UNAUTHORIZED"));
    let trail = ok(h.run(&viewer("dgsi", TopSecret, &ALL), AUDIT, json!({})).await).to_string();
    assert!(trail.contains("FAILED"));
    assert!(!trail.contains("WRONGwrong") && !response.to_string().contains("WRONGwrong"));
}
