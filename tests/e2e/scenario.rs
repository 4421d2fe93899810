//! The scenario, written once and run on every backend: ingest as two organisations at three
//! classifications, read back through every query as five viewers, check failures, the audit
//! trail, concurrent ingestions and the fusion relay's JSON Lines.

use std::{collections::HashSet, path::Path};

use anyhow::{Context as _, Result, anyhow, ensure};
use argus_domain::{
    Classification::{self, Restricted, Secret, TopSecret, Unclassified},
    Scope,
};
use argus_testkit::synapse::Synapse;
use serde_json::{Value, json};
use time::{OffsetDateTime, format_description::well_known::Rfc3339};

use crate::{
    harness::{FUSION_FILE, Server},
    outputs::{check_chains, check_fusion},
    world::{self, Room, World},
};

/// First organisation.
const ORG_A: &str = "dgsi";
/// Second organisation.
const ORG_B: &str = "anssi";

/// What an ingesting caller holds here: the payload's room and audit record are gated by the
/// read and audit scopes, and its chain position by the chain scope.
const INGESTER: [Scope; 4] = [Scope::Ingest, Scope::Read, Scope::Audit, Scope::AuditChain];

/// An oversight auditor: the trail and each record's place in the chain.
const AUDITOR: [Scope; 2] = [Scope::Audit, Scope::AuditChain];

const INGEST: &str = r"mutation($input: IngestTchapRoomInput!) {
  ingestTchapRoom(input: $input) {
    messagesFetched messagesStored
    room { roomId name topic memberCount classification messageCount }
    ingestion { seq actor roomId messageCount classification outcome error }
  }
}";

const ROOM_FIELDS: &str = "id roomId homeserverUrl name topic memberCount classification lastActivityAt lastIngestedAt messageCount";

const MESSAGE_FIELDS: &str =
    "id eventId roomId sender msgtype body sentAt classification edited redacted encrypted replyTo";

const INGESTIONS: &str = r"query($after: String) {
  tchapIngestions(first: 50, after: $after) {
    totalCount pageInfo { hasNextPage endCursor }
    edges { cursor node { id seq hash actor roomId homeserverUrl messageCount classification startedAt finishedAt outcome error } }
  }
}";

/// An ingestion expected in the audit trail.
struct Audited<'a> {
    actor: &'a str,
    room: &'a str,
    classification: Classification,
    succeeded: bool,
    message_count: usize,
}

/// A room as one viewer must see it.
struct Visible<'a> {
    room: &'a Room,
    classification: Classification,
}

/// Runs the scenario on `database_url` (data directory `dir`). Returns every secret used (the
/// Matrix tokens, valid or not) for the caller's scans of the database and files.
pub(crate) async fn run(synapse: &Synapse, database_url: &str, dir: &Path) -> Result<Vec<String>> {
    let world = world::build(synapse).await.context("building the rooms on Synapse")?;
    let hs = synapse.base_url().to_owned();
    let bad_token = format!("syt_ZTJlX2ZvcmdlZA_{}", "Qk9HVVNUT0tFTg".repeat(2));
    let secrets = vec![world.alice.access_token.clone(), world.bob.access_token.clone(), bad_token.clone()];

    let server = Server::start(database_url, dir).await?;
    let outcome = scenario(&server, &world, &hs, &bad_token, database_url, dir).await;
    let responses = server.responses();
    server.stop().await?;
    outcome?;
    // No response body, successful or not, ever carried a token.
    let responses = responses?;
    ensure!(responses.len() > 50, "only {} responses recorded", responses.len());
    for (i, body) in responses.iter().enumerate() {
        for secret in &secrets {
            ensure!(!body.contains(secret.as_str()), "a Matrix token is in response #{i}: {body}");
        }
    }
    Ok(secrets)
}

#[expect(clippy::too_many_lines, reason = "the scenario reads best as one story")]
async fn scenario(
    server: &Server,
    world: &World,
    hs: &str,
    bad_token: &str,
    database_url: &str,
    dir: &Path,
) -> Result<()> {
    let (crisis, intel, shared) = (&world.crisis, &world.intel, &world.shared);
    ensure!(crisis.members == 3 - 1, "alice and bob stay, carol left: {crisis:?}");
    ensure!(crisis.messages.iter().filter(|m| m.edited).count() == 1, "{crisis:?}");
    ensure!(crisis.messages.iter().filter(|m| m.redacted).count() == 1, "{crisis:?}");
    ensure!(crisis.messages.iter().filter(|m| m.reply_to.is_some()).count() == 1, "{crisis:?}");

    let ingest_a = server.jwt("ingest@dgsi", ORG_A, Secret, &INGESTER)?;
    let ingest_b = server.jwt("ingest@anssi", ORG_B, Restricted, &INGESTER)?;

    // --- Ingestions. ---
    let p = ingest(server, &ingest_a, hs, &world.alice.access_token, &crisis.room_id, Restricted).await?;
    check_payload(&p, crisis, Restricted, crisis.messages.len(), "ingest@dgsi")
        .context("A ingests crisis")?;
    let p = ingest(server, &ingest_a, hs, &world.alice.access_token, &intel.room_id, Secret).await?;
    check_payload(&p, intel, Secret, intel.messages.len(), "ingest@dgsi").context("A ingests intel")?;
    let p = ingest(server, &ingest_b, hs, &world.bob.access_token, &crisis.room_id, Unclassified).await?;
    check_payload(&p, crisis, Unclassified, crisis.messages.len(), "ingest@anssi")
        .context("B ingests crisis")?;

    // Re-ingestion at a lower level: nothing new stored, the classification stays RESTRICTED.
    let p = ingest(server, &ingest_a, hs, &world.alice.access_token, &crisis.room_id, Unclassified).await?;
    ensure!(p["messagesStored"] == 0, "re-ingestion stored messages again: {p}");
    ensure!(p["room"]["classification"] == "RESTRICTED", "re-ingestion lowered the level: {p}");
    ensure!(p["room"]["messageCount"] == crisis.messages.len(), "{p}");
    // Its audit record is filed at the room's effective level, not the one asked for.
    ensure!(
        p["ingestion"]["outcome"] == "SUCCEEDED" && p["ingestion"]["classification"] == "RESTRICTED",
        "{p}"
    );

    // Above the caller's clearance: refused before anything is fetched, audited as FAILED.
    let (code, body) = server
        .error_code(&ingest_b, INGEST, ingest_input(hs, &world.bob.access_token, &intel.room_id, Secret))
        .await?;
    ensure!(code == "ABOVE_CLEARANCE", "above clearance: {body}");
    ensure!(body["data"].is_null(), "above clearance returned data: {body}");

    // A bad Matrix token: the homeserver refuses it; stable code, FAILED record, nothing stored.
    let (code, body) = server
        .error_code(&ingest_a, INGEST, ingest_input(hs, bad_token, &crisis.room_id, Restricted))
        .await?;
    ensure!(code == "HOMESERVER_UNAUTHORIZED", "bad Matrix token: {body}");
    let message = body["errors"][0]["message"].as_str().unwrap_or_default();
    ensure!(!message.is_empty() && !message.contains(bad_token), "bad Matrix token message: {body}");

    // A room the Matrix user is not in: the homeserver forbids it; stable code, FAILED record.
    let (code, body) = server
        .error_code(&ingest_b, INGEST, ingest_input(hs, &world.bob.access_token, &intel.room_id, Restricted))
        .await?;
    ensure!(code == "ROOM_FORBIDDEN", "room the Matrix user is not in: {body}");
    ensure!(body["data"].is_null(), "forbidden room returned data: {body}");

    // --- Reads, as four viewers. ---
    // The test homeserver's own server name (a user id's, after its first colon).
    let server_name = world.alice.user_id.split_once(':').map_or("", |(_, server)| server);
    let missing = format!("!absent{}:{server_name}", std::process::id());
    let viewers: [(&str, Classification, Vec<Visible<'_>>, Vec<&Room>); 5] = [
        (ORG_A, Unclassified, vec![], vec![crisis, intel]),
        (ORG_A, Restricted, vec![Visible { room: crisis, classification: Restricted }], vec![intel]),
        (
            ORG_A,
            Secret,
            vec![
                Visible { room: intel, classification: Secret },
                Visible { room: crisis, classification: Restricted },
            ],
            vec![],
        ),
        (ORG_B, TopSecret, vec![Visible { room: crisis, classification: Unclassified }], vec![intel]),
        (ORG_B, Unclassified, vec![Visible { room: crisis, classification: Unclassified }], vec![intel]),
    ];
    for (org, clearance, visible, hidden) in &viewers {
        let jwt = server.jwt(&format!("reader@{org}"), org, *clearance, &[Scope::Read])?;
        check_reads(server, &jwt, hs, visible, hidden, &missing)
            .await
            .with_context(|| format!("reader {org}/{}", clearance.as_str()))?;
    }

    // A cursor of one organisation is useless to the other.
    let secret_a = server.jwt("reader@dgsi", ORG_A, Secret, &[Scope::Read])?;
    let page = server
        .data(
            &secret_a,
            "query($r: String!) { tchapMessages(roomId: $r, first: 2) { edges { cursor } } }",
            json!({ "r": crisis.room_id }),
            "tchapMessages",
        )
        .await?;
    let cursor = page["edges"][0]["cursor"].as_str().ok_or_else(|| anyhow!("no cursor: {page}"))?.to_owned();
    let reader_b = server.jwt("reader@anssi", ORG_B, TopSecret, &[Scope::Read])?;
    let body = server
        .graphql(
            &reader_b,
            &format!(
                "query($r: String!, $a: String) {{ tchapMessages(roomId: $r, first: 50, after: $a) {{ edges {{ node {{ {MESSAGE_FIELDS} }} }} }} }}"
            ),
            json!({ "r": crisis.room_id, "a": cursor }),
        )
        .await?;
    if body.get("errors").is_none() {
        // Harmless at most: only B's own copy, UNCLASSIFIED, never A's RESTRICTED rows.
        for edge in body["data"]["tchapMessages"]["edges"].as_array().into_iter().flatten() {
            ensure!(edge["node"]["classification"] == "UNCLASSIFIED", "A's row reached B: {body}");
        }
    } else {
        ensure!(body["errors"][0]["extensions"]["code"] == "BAD_CURSOR", "foreign cursor: {body}");
    }

    // --- The audit trail. ---
    let no_audit = server.jwt("reader@dgsi", ORG_A, TopSecret, &[Scope::Read, Scope::Ingest])?;
    let (code, body) = server.error_code(&no_audit, INGESTIONS, json!({})).await?;
    ensure!(code == "FORBIDDEN", "tchapIngestions without tchap:audit: {body}");
    ensure!(body["data"].is_null(), "{body}");

    let trail_a = [
        Audited {
            actor: "ingest@dgsi",
            room: &crisis.room_id,
            classification: Restricted,
            succeeded: false,
            message_count: 0,
        },
        // Asked "at UNCLASSIFIED", filed at the room's stored RESTRICTED.
        Audited {
            actor: "ingest@dgsi",
            room: &crisis.room_id,
            classification: Restricted,
            succeeded: true,
            message_count: 0,
        },
        Audited {
            actor: "ingest@dgsi",
            room: &intel.room_id,
            classification: Secret,
            succeeded: true,
            message_count: intel.messages.len(),
        },
        Audited {
            actor: "ingest@dgsi",
            room: &crisis.room_id,
            classification: Restricted,
            succeeded: true,
            message_count: crisis.messages.len(),
        },
    ];
    let trail_b = [
        Audited {
            actor: "ingest@anssi",
            room: &intel.room_id,
            classification: Restricted,
            succeeded: false,
            message_count: 0,
        },
        Audited {
            actor: "ingest@anssi",
            room: &intel.room_id,
            classification: Secret,
            succeeded: false,
            message_count: 0,
        },
        Audited {
            actor: "ingest@anssi",
            room: &crisis.room_id,
            classification: Unclassified,
            succeeded: true,
            message_count: crisis.messages.len(),
        },
    ];
    let auditor_a = server.jwt("auditor@dgsi", ORG_A, TopSecret, &AUDITOR)?;
    let auditor_b = server.jwt("auditor@anssi", ORG_B, TopSecret, &AUDITOR)?;
    let nodes_a = check_trail(server, &auditor_a, hs, &trail_a).await.context("dgsi trail")?;
    let nodes_b = check_trail(server, &auditor_b, hs, &trail_b).await.context("anssi trail")?;
    // The audit trail is gated by clearance too: a RESTRICTED auditor does not see the SECRET run.
    let low_auditor = server.jwt("auditor@dgsi", ORG_A, Restricted, &AUDITOR)?;
    let low: Vec<&Audited<'_>> = trail_a.iter().filter(|a| a.classification <= Restricted).collect();
    let trail = server.data(&low_auditor, INGESTIONS, json!({}), "tchapIngestions").await?;
    ensure!(trail["totalCount"] == low.len(), "RESTRICTED auditor: {trail}");
    ensure!(
        trail["edges"].as_array().is_some_and(|e| e.iter().all(|e| e["node"]["classification"] != "SECRET")),
        "RESTRICTED auditor sees a SECRET record: {trail}"
    );
    check_chains(database_url, &[(ORG_A, &nodes_a), (ORG_B, &nodes_b)])
        .await
        .context("chains after reads")?;

    // --- Two ingestions of one room at once by two callers of the same organisation. ---
    let one = server.jwt("ingest@dgsi", ORG_A, Secret, &INGESTER)?;
    let two = server.jwt("ingest2@dgsi", ORG_A, Restricted, &INGESTER)?;
    let input = ingest_input(hs, &world.alice.access_token, &shared.room_id, Restricted);
    let (first, second) =
        tokio::join!(server.graphql(&one, INGEST, input.clone()), server.graphql(&two, INGEST, input));
    let (first, second) = (first?, second?);
    ensure!(
        first.get("errors").is_none() && second.get("errors").is_none(),
        "concurrent: {first} / {second}"
    );
    let (p1, p2) = (&first["data"]["ingestTchapRoom"], &second["data"]["ingestTchapRoom"]);
    let stored =
        p1["messagesStored"].as_u64().unwrap_or(u64::MAX) + p2["messagesStored"].as_u64().unwrap_or(0);
    ensure!(stored == shared.messages.len() as u64, "concurrent runs stored {stored}: {p1} / {p2}");
    let reader = server.jwt("reader@dgsi", ORG_A, Restricted, &[Scope::Read])?;
    let edges = all_messages(server, &reader, &shared.room_id, 5).await?;
    let ids: HashSet<&str> = edges.iter().filter_map(|n| n["eventId"].as_str()).collect();
    ensure!(ids.len() == edges.len(), "duplicate messages after concurrent ingestions");
    check_messages(&edges, shared, Restricted).context("shared room after concurrent ingestions")?;
    let room = server
        .data(
            &reader,
            &format!("query($r: String!) {{ tchapRoom(roomId: $r) {{ {ROOM_FIELDS} }} }}"),
            json!({ "r": shared.room_id }),
            "tchapRoom",
        )
        .await?;
    check_room(&room, shared, Restricted, hs).context("shared room")?;
    let mut trail_a2: Vec<Audited<'_>> = [1, 2]
        .map(|_| Audited {
            actor: "",
            room: &shared.room_id,
            classification: Restricted,
            succeeded: true,
            message_count: usize::MAX,
        })
        .into_iter()
        .collect();
    trail_a2.extend(trail_a);
    let nodes_a =
        check_trail(server, &auditor_a, hs, &trail_a2).await.context("dgsi trail after concurrency")?;
    let actors: HashSet<&str> = nodes_a[..2].iter().filter_map(|n| n["actor"].as_str()).collect();
    ensure!(actors == HashSet::from(["ingest@dgsi", "ingest2@dgsi"]), "concurrent actors: {actors:?}");
    let counted: u64 = nodes_a[..2].iter().filter_map(|n| n["messageCount"].as_u64()).sum();
    ensure!(counted == shared.messages.len() as u64, "concurrent audit message counts: {nodes_a:?}");
    check_chains(database_url, &[(ORG_A, &nodes_a), (ORG_B, &nodes_b)]).await.context("chains at the end")?;

    // Stats at the end, for the SECRET reader of A: three rooms now.
    let stats = server
        .data(
            &secret_a,
            "{ tchapStats { totalRooms totalMessages activeRoomsLast24h } }",
            json!({}),
            "tchapStats",
        )
        .await?;
    let total = crisis.messages.len() + intel.messages.len() + shared.messages.len();
    ensure!(
        stats == json!({ "totalRooms": 3, "totalMessages": total, "activeRoomsLast24h": 3 }),
        "final stats: {stats}"
    );

    // The fusion relay delivered one network-node entity per successful ingestion.
    let latest = [
        (ORG_A, crisis, Restricted),
        (ORG_A, intel, Secret),
        (ORG_A, shared, Restricted),
        (ORG_B, crisis, Unclassified),
    ];
    check_fusion(database_url, &dir.join(FUSION_FILE), &[(ORG_A, &nodes_a), (ORG_B, &nodes_b)], &latest, hs)
        .await
        .context("fusion JSON Lines")?;
    Ok(())
}

fn ingest_input(hs: &str, token: &str, room: &str, level: Classification) -> Value {
    json!({ "input": {
        "homeserverUrl": hs, "accessToken": token, "roomId": room, "classification": level.as_str()
    } })
}

async fn ingest(
    server: &Server,
    jwt: &str,
    hs: &str,
    token: &str,
    room: &str,
    level: Classification,
) -> Result<Value> {
    server.data(jwt, INGEST, ingest_input(hs, token, room, level), "ingestTchapRoom").await
}

fn check_payload(p: &Value, room: &Room, level: Classification, stored: usize, actor: &str) -> Result<()> {
    ensure!(p["messagesFetched"] == room.messages.len(), "messagesFetched: {p}");
    ensure!(p["messagesStored"] == stored, "messagesStored: {p}");
    let r = &p["room"];
    ensure!(r["roomId"] == room.room_id.as_str() && r["classification"] == level.as_str(), "room: {p}");
    ensure!(r["name"] == json!(room.name) && r["topic"] == json!(room.topic), "name/topic: {p}");
    ensure!(r["memberCount"] == room.members && r["messageCount"] == room.messages.len(), "counts: {p}");
    let i = &p["ingestion"];
    ensure!(i["outcome"] == "SUCCEEDED" && i["error"].is_null() && i["actor"] == actor, "ingestion: {p}");
    ensure!(i["messageCount"] == stored && i["classification"] == level.as_str(), "ingestion: {p}");
    Ok(())
}

fn timestamp_ms(value: &Value) -> Result<i64> {
    let text = value.as_str().ok_or_else(|| anyhow!("not a DateTime: {value}"))?;
    let t = OffsetDateTime::parse(text, &Rfc3339).with_context(|| format!("not RFC 3339: {text}"))?;
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).context("timestamp")
}

/// A DateTime that stands for `expected_ms` (to the millisecond, or truncated to the second).
pub(crate) fn same_instant(value: &Value, expected_ms: i64) -> Result<bool> {
    let got = timestamp_ms(value)?;
    Ok(got == expected_ms || got == expected_ms - expected_ms.rem_euclid(1000))
}

fn check_room(node: &Value, room: &Room, level: Classification, hs: &str) -> Result<()> {
    ensure!(node["id"].as_str().is_some_and(|id| !id.is_empty()), "id: {node}");
    ensure!(node["roomId"] == room.room_id.as_str(), "roomId: {node}");
    ensure!(
        node["homeserverUrl"].as_str().is_some_and(|u| u.trim_end_matches('/') == hs.trim_end_matches('/')),
        "homeserverUrl: {node}"
    );
    ensure!(node["name"] == json!(room.name), "name: {node}");
    ensure!(node["topic"] == json!(room.topic), "topic (the latest m.room.topic): {node}");
    ensure!(node["memberCount"] == room.members, "memberCount (joined members): {node}");
    ensure!(node["classification"] == level.as_str(), "classification: {node}");
    ensure!(node["messageCount"] == room.messages.len(), "messageCount: {node}");
    let last = room.last_activity_ms().ok_or_else(|| anyhow!("room without messages"))?;
    ensure!(
        same_instant(&node["lastActivityAt"], last)?,
        "lastActivityAt (newest message at {last} ms): {node}"
    );
    timestamp_ms(&node["lastIngestedAt"]).context("lastIngestedAt")?;
    Ok(())
}

/// Compares message nodes (oldest first) with the ground truth of `room`.
fn check_messages(nodes: &[Value], room: &Room, level: Classification) -> Result<()> {
    let got: Vec<&str> = nodes.iter().map(|n| n["eventId"].as_str().unwrap_or("?")).collect();
    let want: Vec<&str> = room.messages.iter().map(|m| m.event_id.as_str()).collect();
    ensure!(got == want, "event ids (timeline order) differ:\n got  {got:?}\n want {want:?}");
    for (node, m) in nodes.iter().zip(&room.messages) {
        let ctx = || format!("message {}: {node}\n expected {m:?}", m.event_id);
        ensure!(node["roomId"] == room.room_id.as_str(), "{}", ctx());
        ensure!(node["sender"] == m.sender.as_str(), "sender {}", ctx());
        ensure!(node["msgtype"] == json!(m.msgtype), "msgtype {}", ctx());
        ensure!(node["body"] == json!(m.body), "body {}", ctx());
        ensure!(node["edited"] == m.edited, "edited {}", ctx());
        ensure!(node["redacted"] == m.redacted, "redacted {}", ctx());
        ensure!(node["encrypted"] == false, "encrypted {}", ctx());
        ensure!(node["classification"] == level.as_str(), "classification {}", ctx());
        ensure!(node["replyTo"] == json!(m.reply_to), "replyTo {}", ctx());
        ensure!(same_instant(&node["sentAt"], m.sent_at_ms)?, "sentAt {}", ctx());
        ensure!(node["id"].as_str().is_some_and(|id| !id.is_empty()), "id {}", ctx());
    }
    let ids: HashSet<&str> = nodes.iter().filter_map(|n| n["id"].as_str()).collect();
    ensure!(ids.len() == nodes.len(), "message ids are not unique");
    Ok(())
}

fn nodes(connection: &Value) -> Result<Vec<Value>> {
    let edges = connection["edges"].as_array().ok_or_else(|| anyhow!("no edges in {connection}"))?;
    Ok(edges.iter().map(|e| e["node"].clone()).collect())
}

/// Every message of a room through `tchapMessages`, `page` at a time, following the cursors.
async fn all_messages(server: &Server, jwt: &str, room_id: &str, page: usize) -> Result<Vec<Value>> {
    let query = format!(
        "query($r: String!, $n: Int, $a: String) {{ tchapMessages(roomId: $r, first: $n, after: $a) {{
           totalCount pageInfo {{ hasNextPage endCursor }} edges {{ cursor node {{ {MESSAGE_FIELDS} }} }} }} }}"
    );
    let mut all = Vec::new();
    let mut after: Option<String> = None;
    for _ in 0..100 {
        let c =
            server.data(jwt, &query, json!({ "r": room_id, "n": page, "a": after }), "tchapMessages").await?;
        let got = nodes(&c)?;
        ensure!(got.len() <= page, "page larger than first: {c}");
        all.extend(got);
        if c["pageInfo"]["hasNextPage"] == true {
            after = Some(
                c["pageInfo"]["endCursor"].as_str().ok_or_else(|| anyhow!("no endCursor: {c}"))?.to_owned(),
            );
        } else {
            ensure!(c["totalCount"] == all.len(), "totalCount vs paged rows: {c}");
            return Ok(all);
        }
    }
    Err(anyhow!("pagination does not end"))
}

/// Checks every read of one viewer: lists (paged and not), lookups, messages through both paths,
/// stats; withheld rooms answer exactly like a missing room.
async fn check_reads(
    server: &Server,
    jwt: &str,
    hs: &str,
    visible: &[Visible<'_>],
    hidden: &[&Room],
    missing: &str,
) -> Result<()> {
    // tchapRooms with TchapRoom.messages inline.
    let rooms = server
        .data(
            jwt,
            &format!(
                "{{ tchapRooms(first: 50) {{ totalCount pageInfo {{ hasNextPage }} edges {{ cursor node {{ {ROOM_FIELDS}
                   messages(first: 50) {{ totalCount edges {{ node {{ {MESSAGE_FIELDS} }} }} }} }} }} }} }}"
            ),
            json!({}),
            "tchapRooms",
        )
        .await?;
    ensure!(rooms["totalCount"] == visible.len(), "tchapRooms.totalCount: {rooms}");
    ensure!(rooms["pageInfo"]["hasNextPage"] == false, "{rooms}");
    let listed = nodes(&rooms)?;
    let got: Vec<&str> = listed.iter().map(|n| n["roomId"].as_str().unwrap_or("?")).collect();
    let want: Vec<&str> = visible.iter().map(|v| v.room.room_id.as_str()).collect();
    ensure!(got == want, "tchapRooms (most recent activity first):\n got  {got:?}\n want {want:?}");
    for (node, v) in listed.iter().zip(visible) {
        check_room(node, v.room, v.classification, hs).context("tchapRooms node")?;
        ensure!(
            node["messages"]["totalCount"] == v.room.messages.len(),
            "TchapRoom.messages.totalCount: {node}"
        );
        check_messages(&nodes(&node["messages"])?, v.room, v.classification)
            .context("tchapRooms → messages")?;
    }

    // tchapRooms one at a time.
    let mut paged = Vec::new();
    let mut after: Option<String> = None;
    for _ in 0..=visible.len() {
        let c = server
            .data(
                jwt,
                "query($a: String) { tchapRooms(first: 1, after: $a) { totalCount pageInfo { hasNextPage endCursor } edges { node { roomId } } } }",
                json!({ "a": after }),
                "tchapRooms",
            )
            .await?;
        ensure!(c["totalCount"] == visible.len(), "paged totalCount: {c}");
        paged.extend(nodes(&c)?.iter().filter_map(|n| n["roomId"].as_str().map(str::to_owned)));
        if c["pageInfo"]["hasNextPage"] != true {
            break;
        }
        after = c["pageInfo"]["endCursor"].as_str().map(str::to_owned);
    }
    ensure!(paged == want, "tchapRooms paged one by one: {paged:?} vs {want:?}");

    for v in visible {
        let room = server
            .data(
                jwt,
                &format!(
                    "query($r: String!) {{ tchapRoom(roomId: $r) {{ {ROOM_FIELDS}
                       messages(first: 50) {{ totalCount edges {{ node {{ {MESSAGE_FIELDS} }} }} }} }} }}"
                ),
                json!({ "r": v.room.room_id }),
                "tchapRoom",
            )
            .await?;
        check_room(&room, v.room, v.classification, hs).context("tchapRoom")?;
        check_messages(&nodes(&room["messages"])?, v.room, v.classification)
            .context("tchapRoom → messages")?;
        let paged = all_messages(server, jwt, &v.room.room_id, 3).await?;
        check_messages(&paged, v.room, v.classification).context("tchapMessages paged by 3")?;
        let whole = all_messages(server, jwt, &v.room.room_id, 50).await?;
        check_messages(&whole, v.room, v.classification).context("tchapMessages")?;
    }

    // Withheld = missing: the same answer.
    let lookup = "query($r: String!) { tchapRoom(roomId: $r) { roomId }
        tchapMessages(roomId: $r) { totalCount pageInfo { hasNextPage endCursor } edges { node { eventId } } } }";
    let absent = server.graphql(jwt, lookup, json!({ "r": missing })).await?;
    ensure!(
        absent["data"]["tchapRoom"].is_null() && absent["data"]["tchapMessages"]["totalCount"] == 0,
        "{absent}"
    );
    for room in hidden {
        let answer = server.graphql(jwt, lookup, json!({ "r": room.room_id })).await?;
        ensure!(
            answer == absent,
            "withheld room {} differs from a missing one: {answer} vs {absent}",
            room.room_id
        );
    }

    let stats = server
        .data(jwt, "{ tchapStats { totalRooms totalMessages activeRoomsLast24h } }", json!({}), "tchapStats")
        .await?;
    let messages: usize = visible.iter().map(|v| v.room.messages.len()).sum();
    let expected = json!({ "totalRooms": visible.len(), "totalMessages": messages, "activeRoomsLast24h": visible.len() });
    ensure!(stats == expected, "tchapStats: {stats}, expected {expected}");
    Ok(())
}

/// Checks an organisation's trail (newest first) against `expected`; an empty `actor` or a
/// `message_count` of `usize::MAX` matches anything. Returns the nodes.
async fn check_trail(server: &Server, jwt: &str, hs: &str, expected: &[Audited<'_>]) -> Result<Vec<Value>> {
    let trail = server.data(jwt, INGESTIONS, json!({}), "tchapIngestions").await?;
    ensure!(trail["totalCount"] == expected.len(), "totalCount: {trail}");
    let got = nodes(&trail)?;
    ensure!(got.len() == expected.len(), "{trail}");
    let mut seq = i64::MAX;
    for (node, e) in got.iter().zip(expected) {
        let ctx = || format!("record {node}");
        ensure!(e.actor.is_empty() || node["actor"] == e.actor, "actor {}", ctx());
        ensure!(node["roomId"] == e.room, "roomId {}", ctx());
        ensure!(
            node["homeserverUrl"].as_str().is_some_and(|u| u.trim_end_matches('/') == hs),
            "hs {}",
            ctx()
        );
        ensure!(node["classification"] == e.classification.as_str(), "classification {}", ctx());
        ensure!(node["outcome"] == if e.succeeded { "SUCCEEDED" } else { "FAILED" }, "outcome {}", ctx());
        ensure!(node["error"].is_null() == e.succeeded, "error {}", ctx());
        ensure!(e.message_count == usize::MAX || node["messageCount"] == e.message_count, "count {}", ctx());
        let started = timestamp_ms(&node["startedAt"])?;
        ensure!(timestamp_ms(&node["finishedAt"])? >= started, "finishedAt {}", ctx());
        let s = node["seq"].as_i64().ok_or_else(|| anyhow!("no seq: {node}"))?;
        ensure!(s < seq, "not newest first: {}", ctx());
        seq = s;
    }
    ensure!(seq == 1, "the oldest record is not seq 1: {trail}");
    Ok(got)
}
