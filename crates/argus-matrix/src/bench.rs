//! Entry points for the crate's benchmarks; not part of the supported API.

use ruma::api::IncomingResponseExt;

use crate::{Error, Result, api::get_message_events::Page, normalise::Normaliser};

/// Parses one `/messages` response body and normalises its events exactly as a read does;
/// returns the number of messages kept.
pub fn normalise_page(body: &[u8], room_id: &str) -> Result<usize> {
    let page = parse(body)?;
    let mut norm = Normaliser::new(room_id);
    // Without keys nothing awaits: the page is normalised on this thread, as a read does.
    futures::executor::block_on(norm.push_page(&page.chunk));
    let (normalised, _) = norm.finish(true);
    Ok(normalised.messages.len())
}

/// Parses one `/messages` response body into the Ruma response type only (no normalisation);
/// returns the number of events.
pub fn parse_page(body: &[u8]) -> Result<usize> {
    Ok(parse(body)?.chunk.len())
}

fn parse(body: &[u8]) -> Result<Page> {
    Page::try_from_http_response(http::Response::new(body))
        .map_err(|_| Error::malformed("not a /messages response"))
}

/// Normalises `bodies` (consecutive backwards pages of `room_id`) into one snapshot of a batch,
/// as a streamed read hands it over (no positions, no state): what a store benchmark commits.
pub fn normalise_batch(
    bodies: &[Vec<u8>],
    room_id: &argus_domain::RoomId,
    homeserver: &argus_domain::HomeserverUrl,
) -> Result<argus_domain::RoomSnapshot> {
    let mut norm = Normaliser::new(room_id.as_str());
    for body in bodies {
        futures::executor::block_on(norm.push_page(&parse(body)?.chunk));
    }
    let (normalised, report) = norm.finish(true);
    Ok(argus_domain::RoomSnapshot {
        room_id: room_id.clone(),
        homeserver_url: homeserver.clone(),
        name: None,
        topic: None,
        canonical_alias: None,
        member_count: 0,
        encrypted: false,
        messages: normalised.messages,
        edits: normalised.edits,
        redactions: normalised.redactions,
        resume_token: None,
        history: argus_domain::HistoryPosition::Unchanged,
        predecessor: None,
        successor: None,
        metadata: argus_domain::RoomMetadata::default(),
        history_since: None,
        report,
    })
}
