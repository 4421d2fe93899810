//! Paging `/messages`: several pages, empty pages, caps, repeated tokens, resume tokens.

use argus_domain::RoomId;
use argus_matrix::{Connector, ConnectorConfig, FetchOptions, Session};
use serde_json::json;

use crate::mock::{MockHomeserver as Hs, ROOM, ev};

#[tokio::test]
async fn reads_several_pages_until_end_is_absent() {
    let hs = Hs::start().await;
    hs.state(ROOM)
        .events(vec![
            json!({"type": "m.room.name", "state_key": "", "content": {"name": "Cellule de crise"}, "sender": ev::ALICE, "event_id": "$n", "origin_server_ts": 1}),
            json!({"type": "m.room.member", "state_key": ev::ALICE, "content": {"membership": "join"}, "sender": ev::ALICE, "event_id": "$m1", "origin_server_ts": 1}),
            json!({"type": "m.room.member", "state_key": ev::BOB, "content": {"membership": "join"}, "sender": ev::BOB, "event_id": "$m2", "origin_server_ts": 1}),
        ])
        .mount()
        .await;
    hs.messages(ROOM).start("s_live").page(ev::texts_newest_first(20, 10)).end("t1").mount().await;
    // An empty chunk with an `end` is not the end of the room.
    hs.messages(ROOM).from("t1").start("t1").page(vec![]).end("t2").mount().await;
    hs.messages(ROOM).from("t2").start("t2").page(ev::texts_newest_first(10, 10)).end("t3").mount().await;
    hs.messages(ROOM).from("t3").start("t3").page(ev::texts_newest_first(0, 10)).mount().await;

    let mut pages_seen = Vec::new();
    let snapshot = Hs::connector()
        .fetch_room_with_progress(&hs.session(), &Hs::room(), &FetchOptions::default(), &mut |r| {
            pages_seen.push(r.pages)
        })
        .await
        .unwrap();
    assert_eq!(pages_seen, [1, 2, 3, 4]);
    assert_eq!(snapshot.name.as_deref(), Some("Cellule de crise"));
    assert_eq!(snapshot.member_count, 2);
    assert!(!snapshot.encrypted);
    assert_eq!(snapshot.messages.len(), 30);
    let ids: Vec<_> = snapshot.messages.iter().map(|m| m.event_id.as_str().to_owned()).collect();
    let expected: Vec<_> = (0..30).map(|i| format!("$e{i}")).collect();
    assert_eq!(ids, expected, "oldest first");
    assert_eq!(snapshot.resume_token.as_deref(), Some("s_live"));
    assert_eq!(snapshot.report.pages, 4);
    assert_eq!(snapshot.report.events_fetched, 30);
    assert_eq!(snapshot.report.messages, 30);
    assert!(!snapshot.report.truncated);
}

#[tokio::test]
async fn requests_use_dir_b_and_a_bounded_limit() {
    let hs = Hs::start().await;
    hs.empty_state(ROOM).await;
    hs.messages(ROOM).page(ev::texts_newest_first(0, 3)).mount().await;
    let options = FetchOptions { max_messages: 50_000, since: None, ..FetchOptions::default() };
    Hs::connector().fetch_room(&hs.session(), &Hs::room(), &options).await.unwrap();
    let requests = hs.server().received_requests().await.unwrap();
    let page = requests.iter().find(|r| r.url.path().ends_with("/messages")).unwrap();
    let query: std::collections::HashMap<_, _> = page.url.query_pairs().into_owned().collect();
    assert_eq!(query.get("dir").map(String::as_str), Some("b"));
    assert_eq!(query.get("limit").map(String::as_str), Some("1000"));
}

#[tokio::test]
async fn stops_at_max_messages_and_reports_truncation() {
    let hs = Hs::start().await;
    hs.empty_state(ROOM).await;
    hs.messages(ROOM).page(ev::texts_newest_first(95, 5)).end("t1").mount().await;
    hs.messages(ROOM).from("t1").page(ev::texts_newest_first(90, 5)).end("t2").mount().await;
    let options = FetchOptions { max_messages: 7, since: None, ..FetchOptions::default() };
    let connector = Connector::new(ConnectorConfig { page_size: 5, ..Hs::config() }).unwrap();
    let snapshot = connector.fetch_room(&hs.session(), &Hs::room(), &options).await.unwrap();
    assert_eq!(snapshot.messages.len(), 7);
    assert_eq!(snapshot.messages[0].event_id.as_str(), "$e93");
    assert!(snapshot.report.truncated);
    // The second page asked for just what was missing.
    let requests = hs.server().received_requests().await.unwrap();
    let last = requests.last().unwrap();
    assert!(last.url.query().unwrap().contains("limit=2"), "{:?}", last.url.query());
}

#[tokio::test]
async fn a_repeated_end_token_stops_the_run() {
    let hs = Hs::start().await;
    hs.empty_state(ROOM).await;
    hs.messages(ROOM).page(ev::texts_newest_first(10, 2)).end("t1").mount().await;
    hs.messages(ROOM).from("t1").page(ev::texts_newest_first(8, 2)).end("t2").mount().await;
    hs.messages(ROOM).from("t2").page(ev::texts_newest_first(6, 2)).end("t1").mount().await;
    let err = hs.read_with(&Hs::connector()).await.unwrap_err();
    assert_eq!(err.code(), "MALFORMED_RESPONSE");
    assert!(err.to_string().contains("repeated a pagination token"), "{err}");
}

#[tokio::test]
async fn an_endless_timeline_stops_at_the_page_cap() {
    let hs = Hs::start().await;
    hs.empty_state(ROOM).await;
    hs.messages(ROOM).page(vec![]).end("t0").mount().await;
    for i in 0..10 {
        hs.messages(ROOM).from(&format!("t{i}")).page(vec![]).end(&format!("t{}", i + 1)).mount().await;
    }
    let connector = Connector::new(ConnectorConfig { max_pages: 5, ..Hs::config() }).unwrap();
    let snapshot = hs.read_with(&connector).await.unwrap();
    assert_eq!(snapshot.report.pages, 5);
    assert!(snapshot.report.truncated);
    assert!(snapshot.messages.is_empty());
}

#[tokio::test]
async fn resume_token_reads_forward_without_gaps_or_duplicates() {
    let hs = Hs::start().await;
    hs.empty_state(ROOM).await;
    let mut forward = ev::texts_newest_first(100, 3);
    forward.reverse();
    hs.messages(ROOM).from("s_live").start("s_live").page(forward).end("s_next").mount().await;
    hs.messages(ROOM).from("s_next").start("s_next").page(vec![]).end("s_next").mount().await;
    let options = FetchOptions { since: Some("s_live".into()), ..FetchOptions::default() };
    let snapshot = Hs::connector().fetch_room(&hs.session(), &Hs::room(), &options).await.unwrap();
    let ids: Vec<_> = snapshot.messages.iter().map(|m| m.event_id.as_str()).collect();
    assert_eq!(ids, ["$e100", "$e101", "$e102"]);
    assert_eq!(snapshot.resume_token.as_deref(), Some("s_next"));
    assert!(!snapshot.report.truncated);
    let requests = hs.server().received_requests().await.unwrap();
    assert!(
        requests.iter().filter(|r| r.url.path().ends_with("/messages")).all(|r| r
            .url
            .query()
            .unwrap()
            .contains("dir=f"))
    );
}

#[tokio::test]
async fn forward_read_with_nothing_new_keeps_the_token() {
    let hs = Hs::start().await;
    hs.empty_state(ROOM).await;
    hs.messages(ROOM).from("s_live").start("s_live").page(vec![]).mount().await;
    let options = FetchOptions { since: Some("s_live".into()), ..FetchOptions::default() };
    let snapshot = Hs::connector().fetch_room(&hs.session(), &Hs::room(), &options).await.unwrap();
    assert!(snapshot.messages.is_empty());
    assert_eq!(snapshot.resume_token.as_deref(), Some("s_live"));
}

#[tokio::test]
async fn room_version_12_ids_without_server_part_work() {
    let hs = Hs::start().await;
    let v12 = "!31hneApxJ_1o-63DmFrpeqnkFfWppnzWso1JvH3ogLM";
    hs.empty_state(v12).await;
    let mut event = ev::text("$v12", 1_700_000_000_000, "bonjour");
    event["room_id"] = json!(v12);
    hs.messages(v12).page(vec![event]).mount().await;
    let room: RoomId = v12.parse().unwrap();
    let snapshot = Hs::connector().fetch_room(&hs.session(), &room, &FetchOptions::default()).await.unwrap();
    assert_eq!(snapshot.room_id, room);
    assert_eq!(snapshot.messages.len(), 1);
    assert_eq!(snapshot.report.foreign_dropped, 0);
}

#[tokio::test]
async fn invalid_options_are_refused_before_any_request() {
    let hs = Hs::start().await;
    let c = Hs::connector();
    for options in [
        FetchOptions { max_messages: 0, since: None, ..FetchOptions::default() },
        FetchOptions {
            max_messages: argus_matrix::HARD_MAX_MESSAGES + 1,
            since: None,
            ..FetchOptions::default()
        },
        FetchOptions { max_messages: 10, since: Some(String::new()), ..FetchOptions::default() },
    ] {
        let err = c.fetch_room(&hs.session(), &Hs::room(), &options).await.unwrap_err();
        assert_eq!(err.code(), "INVALID_INPUT");
    }
    let err = c
        .fetch_room(
            &Session::with_token(hs.url(), argus_domain::AccessToken::new("bad token\n")),
            &Hs::room(),
            &FetchOptions::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), "INVALID_INPUT");
    assert_eq!(hs.request_count().await, 0);
}

/// Pages of edits (or any non-message event) count against the run: they never make the message
/// cap wait forever while memory grows. Past the run's event budget (four events per message it
/// may return, plus a page) or its byte budget, the run fails with `LIMIT_EXCEEDED`.
#[tokio::test]
async fn edits_and_other_events_are_budgeted_in_events_and_bytes() {
    let hs = Hs::start().await;
    hs.empty_state(ROOM).await;
    // 60 pages of 100 edits of a message stored earlier: no message at all.
    for p in 0..60 {
        let edits: Vec<_> = (0..100)
            .map(|i| ev::edit(&format!("$ed{p}_{i}"), 1_000_000 - p * 1_000 - i, "$old", "encore"))
            .collect();
        let from = (p > 0).then(|| format!("t{p}"));
        let mut mock = hs.messages(ROOM).page(edits).end(&format!("t{}", p + 1));
        if let Some(from) = &from {
            mock = mock.from(from);
        }
        mock.mount().await;
    }
    let options = FetchOptions { max_messages: 100, since: None, ..FetchOptions::default() };
    let err = Hs::connector().fetch_room(&hs.session(), &Hs::room(), &options).await.unwrap_err();
    assert_eq!(err.code(), "LIMIT_EXCEEDED", "{err}");
    assert!(err.to_string().contains("1400 events"), "{err}");
    // It stopped at the budget (400 + one page of 1,000 events): 15 pages, not sixty.
    let pages = hs.requests_to("messages").await;
    assert!((14..=16).contains(&pages), "{pages} pages read");

    // The byte budget holds whatever the event count.
    let tight = Connector::new(ConnectorConfig { max_bytes: 100_000, ..Hs::config() }).unwrap();
    let options = FetchOptions { max_messages: 100_000, since: None, ..FetchOptions::default() };
    let err = tight.fetch_room(&hs.session(), &Hs::room(), &options).await.unwrap_err();
    assert_eq!(err.code(), "LIMIT_EXCEEDED", "{err}");
    assert!(err.to_string().contains("bytes"), "{err}");
}
