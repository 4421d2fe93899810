//! `TchapAccess`: one entry of the organisation's access journal (a read of content, a
//! search, a download, a disclosure), and the connection of entries (`tchapAccessLog`), gated
//! like the audit trail: the caller's organisation, at or below their clearance.

use argus_domain::{PageRequest, Viewer, from_unix_ms, oversight::AccessAction};
use argus_store::{AccessCursor, AccessFilter, AccessRecord, Store};
use juniper::{GraphQLEnum, GraphQLObject, ID, graphql_object};

use super::{
    paging::{PageInfo, connection},
    scalars::{DateTime, GqlClassification, opaque_id},
};
use crate::{Context, CursorKind, Error, Result};

/// What a journaled read was.
#[derive(GraphQLEnum, Debug, Clone, Copy, PartialEq, Eq)]
#[graphql(name = "AccessAction")]
pub enum GqlAccessAction {
    /// Messages of a room were read (`tchapMessages`, a room's `messages`).
    #[graphql(name = "READ_MESSAGES")]
    ReadMessages,
    /// A full-text search (`tchapSearch`); `query` holds its text.
    #[graphql(name = "SEARCH")]
    Search,
    /// An attachment was downloaded.
    #[graphql(name = "DOWNLOAD")]
    Download,
    /// A disclosure package was written.
    #[graphql(name = "DISCLOSE")]
    Disclose,
}

impl From<AccessAction> for GqlAccessAction {
    fn from(a: AccessAction) -> Self {
        match a {
            AccessAction::ReadMessages => Self::ReadMessages,
            AccessAction::Search => Self::Search,
            AccessAction::Download => Self::Download,
            AccessAction::Disclose => Self::Disclose,
        }
    }
}

/// One entry of the access journal.
#[derive(Debug, Clone)]
pub struct TchapAccess(pub AccessRecord);

#[graphql_object(context = Context)]
impl TchapAccess {
    /// Opaque, stable id.
    fn id(&self, context: &Context) -> ID {
        opaque_id(context, "TchapAccess", self.0.id)
    }

    /// JWT sub of the caller who read.
    fn actor(&self) -> &str {
        &self.0.entry.actor
    }

    /// What was read.
    fn action(&self) -> GqlAccessAction {
        self.0.entry.action.into()
    }

    /// The rooms whose content was returned, sorted.
    fn room_ids(&self) -> &[String] {
        &self.0.entry.room_ids
    }

    /// A search's query text, as given.
    fn query(&self) -> Option<&str> {
        self.0.entry.query.as_deref()
    }

    /// How many items were returned (messages, results, files, or a package's messages).
    fn item_count(&self) -> i32 {
        i32::try_from(self.0.entry.item_count).unwrap_or(i32::MAX)
    }

    /// The highest classification among what was returned (the lowest when nothing was); the entry is filed at that level.
    fn classification(&self) -> GqlClassification {
        self.0.entry.classification.into()
    }

    /// When it was read.
    fn at(&self) -> Result<DateTime> {
        from_unix_ms(self.0.entry.at).map(DateTime).map_err(|_| Error::Service(argus_ingest::Error::Internal))
    }
}

/// An edge to one access.
#[derive(GraphQLObject, Debug, Clone)]
#[graphql(context = Context)]
pub struct TchapAccessEdge {
    /// Opaque cursor of this edge.
    pub cursor: String,
    /// The access.
    pub node: TchapAccess,
}

/// A page of the access journal.
#[derive(GraphQLObject, Debug, Clone)]
#[graphql(context = Context)]
pub struct TchapAccessConnection {
    /// The edges of this page.
    pub edges: Vec<TchapAccessEdge>,
    /// Where this page ends.
    pub page_info: PageInfo,
    /// How many entries the whole (filtered) journal has, as the caller may see it.
    pub total_count: i32,
}

impl TchapAccessConnection {
    /// The caller's page of the access journal, newest first.
    pub(crate) async fn load(
        context: &Context,
        first: Option<i32>,
        after: Option<String>,
        filter: AccessFilter,
    ) -> Result<Self> {
        let read = move |store: &Store, viewer: &Viewer, request: &PageRequest<AccessCursor>| {
            store.access_log(viewer, request, &filter)
        };
        let position = |r: &AccessRecord| AccessCursor { index: r.index };
        connection(context, CursorKind::AccessLog, first, after, read, position, TchapAccess).await
    }
}

super::paging::relay_connection!(TchapAccessConnection, TchapAccessEdge, TchapAccess);
