//! What a scenario run leaves behind, checked from outside the API: every audit chain in the
//! store verifies and ends at the newest record the trail shows, and the fusion relay delivered
//! exactly one entity per successful ingestion, describing each room as stored.

use std::{
    collections::HashSet,
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, anyhow, ensure};
use argus_domain::Classification;
use argus_store::Store;
use serde_json::{Value, json};

use crate::{scenario::same_instant, world::Room};

/// Verifies every chain in the store, and that each organisation's newest record (as shown by
/// `tchapIngestions`) is its chain's head.
pub(crate) async fn check_chains(database_url: &str, expected: &[(&str, &[Value])]) -> Result<()> {
    let url = database_url.to_owned();
    let (heads, verification) = tokio::task::spawn_blocking(move || -> Result<_> {
        let store = Store::open(&url)?;
        let heads = store.audit_heads()?;
        let verification = store.audit_verify(&heads)?;
        Ok((heads, verification))
    })
    .await??;
    ensure!(verification.len() == expected.len(), "chains: {verification:?}");
    ensure!(verification.iter().all(argus_store::ChainVerification::is_ok), "chain broken: {verification:?}");
    for (org, nodes) in expected {
        let head = heads
            .iter()
            .find(|h| h.org.as_str() == *org)
            .ok_or_else(|| anyhow!("no chain for {org}: {heads:?}"))?;
        let newest = nodes.first().ok_or_else(|| anyhow!("empty trail for {org}"))?;
        ensure!(newest["seq"] == head.seq, "{org}: newest seq {newest} vs head {head}");
        ensure!(newest["hash"] == hex(&head.hash), "{org}: newest hash {newest} vs head {head}");
        let v = verification.iter().find(|v| v.org.as_str() == *org).ok_or_else(|| anyhow!("{org}"))?;
        ensure!(
            v.length == i64::try_from(nodes.len())?,
            "{org}: chain length {v:?} vs trail {}",
            nodes.len()
        );
    }
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Waits until the fusion relay has delivered every outbox row (the server exposes no signal for
/// it, so the store's outbox is polled, with a deadline), then checks the JSON Lines file: exactly
/// one entity per successful ingestion (`version` = its audit `seq`), and each room's newest
/// entity describes the room as stored for its organisation.
pub(crate) async fn check_fusion(
    database_url: &str,
    jsonl: &Path,
    trails: &[(&str, &[Value])],
    latest: &[(&str, &Room, Classification)],
    hs: &str,
) -> Result<()> {
    let url = database_url.to_owned();
    let store = tokio::task::spawn_blocking(move || Store::open(&url)).await??;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = store.clone();
        let status = tokio::task::spawn_blocking(move || s.outbox_status()).await??;
        ensure!(status.parked == 0, "outbox rows parked: {status:?}");
        if status.pending == 0 {
            break;
        }
        ensure!(Instant::now() < deadline, "the fusion relay left rows pending: {status:?}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }

    let text = std::fs::read_to_string(jsonl).with_context(|| format!("reading {}", jsonl.display()))?;
    let entities: Vec<Value> =
        text.lines().map(serde_json::from_str).collect::<Result<_, _>>().context("a line is not JSON")?;
    let mut got: Vec<(String, i64)> = entities
        .iter()
        .map(|e| (e["organisation"].as_str().unwrap_or("?").to_owned(), e["version"].as_i64().unwrap_or(-1)))
        .collect();
    got.sort();
    let mut want: Vec<(String, i64)> = trails
        .iter()
        .flat_map(|(org, nodes)| {
            nodes
                .iter()
                .filter(|n| n["outcome"] == "SUCCEEDED")
                .map(|n| ((*org).to_owned(), n["seq"].as_i64().unwrap_or(-2)))
        })
        .collect();
    want.sort();
    ensure!(got == want, "entities (organisation, version):\n got  {got:?}\n want {want:?}");

    for (org, room, level) in latest {
        let newest = entities
            .iter()
            .filter(|e| e["organisation"] == *org && e["room_id"] == room.room_id.as_str())
            .max_by_key(|e| e["version"].as_i64())
            .ok_or_else(|| anyhow!("no entity for {org} / {}", room.room_id))?;
        let ctx = || format!("{org} / {}: {newest}", room.room_id);
        ensure!(newest["type"].as_str().is_some_and(|t| !t.is_empty()), "type {}", ctx());
        ensure!(newest["classification"] == level.as_str(), "classification {}", ctx());
        ensure!(newest["marking"].as_str().is_some_and(|m| !m.is_empty()), "marking {}", ctx());
        ensure!(
            newest["name"] == json!(room.name) && newest["topic"] == json!(room.topic),
            "name/topic {}",
            ctx()
        );
        ensure!(newest["joined_member_count"] == room.members, "joined_member_count {}", ctx());
        ensure!(newest["message_count"] == room.messages.len(), "message_count {}", ctx());
        ensure!(newest["encrypted"] == false, "encrypted {}", ctx());
        ensure!(
            newest["homeserver"]
                .as_str()
                .is_some_and(|u| u.trim_end_matches('/') == hs.trim_end_matches('/')),
            "homeserver {}",
            ctx()
        );
        let last = room.last_activity_ms().ok_or_else(|| anyhow!("room without messages"))?;
        ensure!(same_instant(&newest["last_activity"], last)?, "last_activity {}", ctx());
    }
    // One stable id per room of an organisation, never shared across organisations.
    let ids: HashSet<(&str, &str)> =
        entities.iter().filter_map(|e| Some((e["id"].as_str()?, e["organisation"].as_str()?))).collect();
    let distinct: HashSet<&str> = ids.iter().map(|(id, _)| *id).collect();
    ensure!(ids.len() == latest.len() && distinct.len() == latest.len(), "entity ids: {ids:?}");
    Ok(())
}
