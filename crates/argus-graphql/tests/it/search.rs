//! `tchapSearch`: gated results with snippets and rooms, cursors bound to their search, typed
//! errors for malformed queries and bounds, the cost of nested rooms counted.

use argus_domain::Scope;
use serde_json::{Value, json};

use crate::harness::{Restricted, Secret, TopSecret, error_code, ok, viewer};

const SEARCH: &str = r"query($q: String!, $room: String, $first: Int, $after: String) {
  tchapSearch(query: $q, roomId: $room, first: $first, after: $after) {
    pageInfo { hasNextPage endCursor }
    edges { cursor snippet score node { eventId roomId body classification } room { roomId classification } }
  }
}";

fn hits(data: &Value) -> Vec<(String, String)> {
    data["tchapSearch"]["edges"]
        .as_array()
        .map(|e| {
            e.iter()
                .map(|e| {
                    (
                        e["node"]["roomId"].as_str().unwrap_or_default().to_owned(),
                        e["node"]["body"].as_str().unwrap_or_default().to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn search_results_are_gated_highlighted_and_carry_their_room() {
    let h = crate::reads::two_tenants().await;
    let top = viewer("dgsi", TopSecret, &[Scope::Read]);
    let data = ok(h.run(&top, SEARCH, json!({ "q": "message" })).await);
    assert_eq!(hits(&data).len(), 6);
    let edge = &data["tchapSearch"]["edges"][0];
    assert!(edge["snippet"].as_str().unwrap_or_default().contains("<mark>message</mark>"), "{edge}");
    assert_eq!(edge["room"]["roomId"], edge["node"]["roomId"]);
    assert!(edge["score"].as_f64().is_some());

    let low = viewer("dgsi", Restricted, &[Scope::Read]);
    let data = ok(h.run(&low, SEARCH, json!({ "q": "message" })).await);
    assert!(hits(&data).iter().all(|(room, _)| room == "!r:tchap.test"));
    assert_eq!(hits(&data).len(), 2);
    // A room withheld from the caller, named as a filter, answers as a room that does not exist.
    let withheld = ok(h.run(&low, SEARCH, json!({ "q": "message", "room": "!s:tchap.test" })).await);
    let absent = ok(h.run(&low, SEARCH, json!({ "q": "message", "room": "!nope:tchap.test" })).await);
    assert_eq!(hits(&withheld), hits(&absent));
    assert!(hits(&withheld).is_empty());

    let anssi = viewer("anssi", TopSecret, &[Scope::Read]);
    let data = ok(h.run(&anssi, SEARCH, json!({ "q": "message" })).await);
    assert_eq!(hits(&data).len(), 4);
    let nobody = viewer("dgsi", TopSecret, &[Scope::Ingest]);
    assert_eq!(error_code(&h.run(&nobody, SEARCH, json!({ "q": "message" })).await), Some("FORBIDDEN"));
}

#[tokio::test]
async fn search_cursors_page_one_search_only() {
    let h = crate::reads::two_tenants().await;
    let top = viewer("dgsi", TopSecret, &[Scope::Read]);
    let all = hits(&ok(h.run(&top, SEARCH, json!({ "q": "message" })).await));
    let mut walked = Vec::new();
    let mut after = Value::Null;
    loop {
        let data = ok(h.run(&top, SEARCH, json!({ "q": "message", "first": 4, "after": after })).await);
        walked.extend(hits(&data));
        if data["tchapSearch"]["pageInfo"]["hasNextPage"] != true {
            break;
        }
        after = data["tchapSearch"]["pageInfo"]["endCursor"].clone();
    }
    assert_eq!(walked, all);

    let first = ok(h.run(&top, SEARCH, json!({ "q": "message", "first": 1 })).await);
    let cursor = first["tchapSearch"]["pageInfo"]["endCursor"].clone();
    // Another query, another filter, or another caller: the cursor does not apply.
    for (who, vars) in [
        (&top, json!({ "q": "message OR x", "after": cursor })),
        (&top, json!({ "q": "message", "room": "!s:tchap.test", "after": cursor })),
        (&viewer("dgsi", Secret, &[Scope::Read]), json!({ "q": "message", "after": cursor })),
    ] {
        assert_eq!(error_code(&h.run(who, SEARCH, vars).await), Some("BAD_CURSOR"));
    }
}

#[tokio::test]
async fn malformed_searches_are_invalid_input_without_sql() {
    let h = crate::reads::two_tenants().await;
    let top = viewer("dgsi", TopSecret, &[Scope::Read]);
    let long = "message ".repeat(1_300);
    for (q, first) in [
        ("", 10),
        ("\"open", 10),
        ("NOT message", 10),
        ("(a", 10),
        (long.as_str(), 10),
        ("message", 101),
        ("message", 0),
    ] {
        let response = h.run(&top, SEARCH, json!({ "q": q, "first": first })).await;
        assert_eq!(error_code(&response), Some("INVALID_INPUT"), "{q:.20} {first}: {response}");
        let text = response["errors"][0]["message"].as_str().unwrap_or_default().to_lowercase();
        for leak in ["select", "fts5", "syntax error", "tsquery", "sqlite", "postgres"] {
            assert!(!text.contains(leak), "{text}");
        }
    }
    let bad_room = h.run(&top, SEARCH, json!({ "q": "message", "room": "not-a-room" })).await;
    assert_eq!(error_code(&bad_room), Some("INVALID_INPUT"));
    // Nested room connections under 100 results are counted before anything is read.
    let costly = r#"{ tchapSearch(query: "message", first: 100) { edges { room { messages(first: 500) { totalCount } } } } }"#;
    assert_eq!(error_code(&h.run(&top, costly, json!({})).await), Some("LIMIT_EXCEEDED"));
}
