//! `TchapIngestion`: one record of the organisation's audit trail (a run, a post or a room
//! moved to another homeserver), and the connection of records.

use argus_domain::{IngestionRecord, PageRequest, Scope, Viewer};
use argus_store::{IngestionCursor, Store};
use juniper::{GraphQLEnum, GraphQLObject, ID, graphql_object};

use super::{
    paging::{PageInfo, connection},
    scalars::{DateTime, GqlClassification, int, opaque_id},
};
use crate::{Context, CursorKind, Result};

/// How an ingestion ended.
#[derive(GraphQLEnum, Debug, Clone, Copy, PartialEq, Eq)]
#[graphql(name = "IngestionOutcome")]
pub enum GqlIngestionOutcome {
    /// Everything was stored.
    #[graphql(name = "SUCCEEDED")]
    Succeeded,
    /// The run stopped on an error: messageCount says what the pages it had committed stored (0: nothing but the audit record was written).
    #[graphql(name = "FAILED")]
    Failed,
}

impl From<argus_domain::IngestionOutcome> for GqlIngestionOutcome {
    fn from(o: argus_domain::IngestionOutcome) -> Self {
        match o {
            argus_domain::IngestionOutcome::Succeeded => Self::Succeeded,
            argus_domain::IngestionOutcome::Failed => Self::Failed,
        }
    }
}

/// One record of the audit trail.
#[derive(Debug, Clone)]
pub struct TchapIngestion(pub IngestionRecord);

#[graphql_object(context = Context)]
impl TchapIngestion {
    /// Opaque, stable id.
    fn id(&self, context: &Context) -> ID {
        opaque_id(context, "TchapIngestion", self.0.id)
    }

    /// Position in the organisation's audit chain, from 1. Requires scope tchap:audit:chain
    /// (gaps in what a reader sees would count the records above their clearance).
    fn seq(&self, context: &Context) -> Result<i32> {
        context.require(Scope::AuditChain)?;
        Ok(int(self.0.seq))
    }

    /// SHA-256 chain hash of this record, hex. Requires scope tchap:audit:chain.
    fn hash(&self, context: &Context) -> Result<String> {
        context.require(Scope::AuditChain)?;
        Ok(hex::encode(self.0.hash))
    }

    /// JWT sub of the caller who ran it.
    fn actor(&self) -> &str {
        self.0.entry.actor.as_str()
    }

    /// The room id as requested; `*` for the one record of a joined-rooms call that names how many of its rooms failed without a record of their own.
    fn room_id(&self) -> &str {
        &self.0.entry.room_id
    }

    /// The homeserver as requested.
    fn homeserver_url(&self) -> &str {
        &self.0.entry.homeserver_url
    }

    /// Messages newly stored.
    fn message_count(&self) -> i32 {
        int(self.0.entry.message_count)
    }

    /// The classification requested.
    fn classification(&self) -> GqlClassification {
        self.0.entry.classification.into()
    }

    /// When it started.
    fn started_at(&self) -> DateTime {
        DateTime(self.0.entry.started_at)
    }

    /// When it ended.
    fn finished_at(&self) -> Option<DateTime> {
        self.0.entry.finished_at.map(DateTime)
    }

    /// How it ended.
    fn outcome(&self) -> GqlIngestionOutcome {
        self.0.entry.outcome.into()
    }

    /// Why it failed; never contains a token.
    fn error(&self) -> Option<&str> {
        self.0.entry.error.as_deref()
    }

    /// What the record is of: an ingestion, a note posted into the room, or the room moved to another homeserver.
    fn action(&self) -> GqlAuditAction {
        match (&self.0.entry.post, &self.0.entry.rehomed_from) {
            (Some(_), _) => GqlAuditAction::Post,
            (None, Some(_)) => GqlAuditAction::Rehome,
            (None, None) => GqlAuditAction::Ingest,
        }
    }

    /// Run by the scheduler for a watched room (the actor is the watch's owner), not by a call.
    fn scheduled(&self) -> bool {
        self.0.entry.scheduled
    }

    /// For a post that was sent: the event id the homeserver gave the note.
    fn event_id(&self) -> Option<&str> {
        self.0.entry.post.as_ref().and_then(|p| p.event_id.as_deref())
    }

    /// For a post: SHA-256 of the body as sent (marking included), hex. The body is never kept.
    fn body_sha256(&self) -> Option<String> {
        self.0.entry.post.as_ref().map(|p| hex::encode(p.body_sha256))
    }

    /// For a post: the length of the body as sent, in bytes.
    fn body_length(&self) -> Option<i32> {
        self.0.entry.post.as_ref().map(|p| int(p.body_length))
    }

    /// For a run: the RFC 9162 root (hex) over the canonical encodings of the message versions
    /// it stored, as its transparency-log entry carries it.
    fn events_root(&self) -> Option<String> {
        self.0.events.map(|(root, _)| hex::encode(root))
    }

    /// For a run: how many versions are under `eventsRoot`.
    fn events_count(&self) -> Option<i32> {
        self.0.events.map(|(_, count)| i32::try_from(count).unwrap_or(i32::MAX))
    }

    /// For a room moved to another homeserver (REHOME): the homeserver it answered to until then, `scheme://host[:port]`; `homeserverUrl` is the one it answers to since.
    fn previous_homeserver_url(&self) -> Option<&str> {
        self.0.entry.rehomed_from.as_deref()
    }
}

/// What an audit record is of.
#[derive(GraphQLEnum, Debug, Clone, Copy, PartialEq, Eq)]
#[graphql(name = "AuditAction")]
pub enum GqlAuditAction {
    /// An ingestion of the room.
    #[graphql(name = "INGEST")]
    Ingest,
    /// A note posted into the room (`postTchapMessage`), sent (SUCCEEDED) or refused (FAILED).
    #[graphql(name = "POST")]
    Post,
    /// The room moved by an operator to another homeserver (`argus-tchap rooms rehome`): a stored room answers only to the homeserver it was archived from.
    #[graphql(name = "REHOME")]
    Rehome,
}

/// An edge to one ingestion.
#[derive(GraphQLObject, Debug, Clone)]
#[graphql(context = Context)]
pub struct TchapIngestionEdge {
    /// Opaque cursor of this edge.
    pub cursor: String,
    /// The ingestion.
    pub node: TchapIngestion,
}

/// A page of ingestions.
#[derive(GraphQLObject, Debug, Clone)]
#[graphql(context = Context)]
pub struct TchapIngestionConnection {
    /// The edges of this page.
    pub edges: Vec<TchapIngestionEdge>,
    /// Where this page ends.
    pub page_info: PageInfo,
    /// How many ingestions the whole list has, as the caller may see it.
    pub total_count: i32,
}

impl TchapIngestionConnection {
    /// The caller's page of audit records.
    pub(crate) async fn load(context: &Context, first: Option<i32>, after: Option<String>) -> Result<Self> {
        let read = |store: &Store, viewer: &Viewer, request: &PageRequest<IngestionCursor>| {
            store.ingestions(viewer, request)
        };
        connection(context, CursorKind::Ingestions, first, after, read, IngestionCursor::of, TchapIngestion)
            .await
    }
}

super::paging::relay_connection!(TchapIngestionConnection, TchapIngestionEdge, TchapIngestion);
