//! `tchapSearch`: a Relay connection of the messages that match a full-text query, most
//! relevant first, each with a highlighted snippet and its room.
//!
//! Ranked results are paged by position: a cursor seals the position and is bound to the
//! search that issued it (query and filters in canonical form, the caller's organisation and
//! clearance), so it cannot page another search. Results past
//! [`argus_domain::search::MAX_SEARCH_OFFSET`] are not served.

use std::collections::HashMap;

use argus_domain::{
    RoomId, SearchHit, SearchQuery, SearchRequest, StoredRoom, UserId,
    oversight::AccessAction,
    search::{MAX_SEARCH_PAGE, snippet_html},
};
use juniper::{LookAheadSelection, ScalarValue, graphql_object};
use serde::{Deserialize, Serialize};

use super::{
    message::TchapMessage,
    paging::PageInfo,
    room::TchapRoom,
    scalars::{DateTime, date_time_text},
};
use crate::{Context, CursorKind, Error, Result, oversight::Read};

/// Where a page of search results resumes.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct SearchPosition {
    /// Results already served.
    offset: u32,
}

/// One search result.
#[derive(Debug, Clone)]
pub struct TchapSearchEdge {
    cursor: String,
    hit: SearchHit,
    room: Option<TchapRoom>,
}

/// One search result.
#[graphql_object(context = Context)]
impl TchapSearchEdge {
    /// Opaque cursor of this edge.
    fn cursor(&self) -> &str {
        &self.cursor
    }

    /// The message that matched, as its room's message list shows it.
    fn node(&self) -> TchapMessage {
        TchapMessage(self.hit.message.clone())
    }

    /// An excerpt of the message's current text around what matched, as HTML: the text
    /// escaped, each matched term in `<mark>…</mark>`.
    fn snippet(&self) -> String {
        snippet_html(&self.hit.snippet)
    }

    /// Relevance: higher is more relevant; comparable within one search only.
    fn score(&self) -> f64 {
        self.hit.score
    }

    /// The room the message belongs to.
    fn room(&self) -> Result<&TchapRoom> {
        self.room.as_ref().ok_or(Error::Service(argus_ingest::Error::Internal))
    }
}

/// A page of search results.
#[derive(Debug, Clone)]
pub struct TchapSearchConnection {
    edges: Vec<TchapSearchEdge>,
    page_info: PageInfo,
}

/// A page of search results, most relevant first. Ranked results report no total.
#[graphql_object(context = Context)]
impl TchapSearchConnection {
    /// The edges of this page.
    fn edges(&self) -> &[TchapSearchEdge] {
        &self.edges
    }

    /// Where this page ends.
    fn page_info(&self) -> &PageInfo {
        &self.page_info
    }
}

/// The arguments of `tchapSearch`, as given.
pub(crate) struct SearchArgs {
    pub(crate) query: String,
    pub(crate) room_id: Option<String>,
    pub(crate) sender: Option<String>,
    pub(crate) from: Option<DateTime>,
    pub(crate) to: Option<DateTime>,
    pub(crate) first: Option<i32>,
    pub(crate) after: Option<String>,
}

/// Whether a connection's edges select `name` (`room`: whether the rooms are read).
pub(crate) fn edges_select<S: ScalarValue>(field: &LookAheadSelection<'_, S>, name: &str) -> bool {
    field
        .children()
        .iter()
        .filter(|c| c.field_original_name() == "edges")
        .any(|edges| edges.children().iter().any(|c| c.field_original_name() == name))
}

/// The canonical form of a search, which its cursors are bound to.
fn fingerprint(request: &SearchRequest) -> String {
    let time = |t: Option<time::OffsetDateTime>| t.map(|t| date_time_text(&DateTime(t))).unwrap_or_default();
    serde_json::json!([
        request.query.to_string(),
        request.room_id.as_ref().map(RoomId::as_str),
        request.sender.as_ref().map(UserId::as_str),
        time(request.from),
        time(request.to),
    ])
    .to_string()
}

impl TchapSearchConnection {
    /// The caller's page of results; `with_rooms` when the document selects the edges' room.
    pub(crate) async fn load(context: &Context, args: SearchArgs, with_rooms: bool) -> Result<Self> {
        let query: SearchQuery = args.query.parse()?;
        let text = args.query;
        let first = match args.first {
            None => 20,
            Some(n) => {
                u32::try_from(n).ok().filter(|n| (1..=MAX_SEARCH_PAGE).contains(n)).ok_or_else(|| {
                    Error::invalid_input(format!("first must be between 1 and {MAX_SEARCH_PAGE}"))
                })?
            }
        };
        let mut request = SearchRequest {
            query,
            room_id: args.room_id.as_deref().map(str::parse).transpose()?,
            sender: args.sender.as_deref().map(str::parse).transpose()?,
            from: args.from.map(|t| t.0),
            to: args.to.map(|t| t.0),
            first,
            offset: 0,
        };
        let bound = fingerprint(&request);
        let kind = CursorKind::Search(&bound);
        let key = &context.services().cursor_key;
        if let Some(after) = &args.after {
            request.offset = key.decode::<SearchPosition>(kind, context.viewer(), after)?.offset;
        }
        let viewer = context.viewer().clone();
        let start = request.offset;
        let (page, rooms, entry) = context
            .services()
            .with_store(move |store| {
                let page = store.search(&viewer, &request)?;
                let messages = page.hits.iter().map(|hit| &hit.message);
                let entry = Read::of_messages(AccessAction::Search, Some(&text), messages).entry(&viewer);
                let mut rooms: HashMap<RoomId, Option<StoredRoom>> = HashMap::new();
                if with_rooms {
                    for hit in &page.hits {
                        let id = &hit.message.room_id;
                        if !rooms.contains_key(id) {
                            rooms.insert(id.clone(), store.room(&viewer, id)?);
                        }
                    }
                }
                Ok((page, rooms, entry))
            })
            .await?;
        // Journaled (durable) before anything of the page is answered.
        context.services().journal_entry(entry).await?;
        let mut signer = key.signer(kind, context.viewer());
        let edges: Vec<TchapSearchEdge> = page
            .hits
            .into_iter()
            .zip(start + 1..)
            .map(|(hit, offset)| TchapSearchEdge {
                cursor: signer.encode(&SearchPosition { offset }),
                room: rooms.get(&hit.message.room_id).cloned().flatten().map(TchapRoom),
                hit,
            })
            .collect();
        let end_cursor = edges.last().map(|e| e.cursor.clone());
        Ok(Self { edges, page_info: PageInfo { has_next_page: page.has_next_page, end_cursor } })
    }
}
