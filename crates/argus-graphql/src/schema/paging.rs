//! Relay connections over the store's keyset pages, with authenticated cursors: `PageInfo`,
//! and the one builder of every connection type (`build`, over the `Connection` trait).

use argus_domain::{Page, PageRequest, Viewer};
use argus_store::Store;
use juniper::GraphQLObject;
use serde::{Serialize, de::DeserializeOwned};

use super::scalars::int;
use crate::{Context, CursorKind, Error, Result};

/// Relay page information.
#[derive(GraphQLObject, Debug, Clone)]
#[graphql(context = Context)]
pub struct PageInfo {
    /// Whether more items follow this page.
    pub has_next_page: bool,
    /// The cursor of the last edge; pass it as `after` for the next page.
    pub end_cursor: Option<String>,
}

/// A Relay connection type: its edges (a cursor and a node each), where the page ends, and how
/// many items the whole list has. Implemented by [`relay_connection!`].
pub(crate) trait Connection {
    /// The node type.
    type Node;
    /// The edge type.
    type Edge;
    /// The edge to `node`, at `cursor`.
    fn edge(cursor: String, node: Self::Node) -> Self::Edge;
    /// The connection of one page's `edges`.
    fn of(edges: Vec<Self::Edge>, page_info: PageInfo, total_count: i32) -> Self;
}

/// Implements [`Connection`] for `$connection` (fields `edges`, `page_info`, `total_count`)
/// whose edges `$edge` (fields `cursor`, `node`) lead to `$node`.
macro_rules! relay_connection {
    ($connection:ty, $edge:ident, $node:ty) => {
        impl $crate::schema::paging::Connection for $connection {
            type Node = $node;
            type Edge = $edge;
            fn edge(cursor: String, node: $node) -> $edge {
                $edge { cursor, node }
            }
            fn of(edges: Vec<$edge>, page_info: $crate::schema::paging::PageInfo, total_count: i32) -> Self {
                Self { edges: edges.into(), page_info, total_count }
            }
        }
    };
}
pub(crate) use relay_connection;

/// Checks `first` and decodes `after` for the caller.
pub(crate) fn page_request<P: DeserializeOwned>(
    context: &Context,
    kind: CursorKind<'_>,
    first: Option<i32>,
    after: Option<&str>,
) -> Result<PageRequest<P>> {
    let limits = context.services().limits;
    let first = match first {
        None => limits.default_page_size,
        Some(n) => u32::try_from(n).ok().filter(|n| *n <= limits.max_page_size).ok_or_else(|| {
            Error::invalid_input(format!("first must be between 0 and {}", limits.max_page_size))
        })?,
    };
    let after = after
        .map(|cursor| context.services().cursor_key.decode::<P>(kind, context.viewer(), cursor))
        .transpose()?;
    Ok(PageRequest { first, after })
}

/// One page of the list `kind`: `read` is the store's gated read for the caller, `position`
/// the keyset position of an item, `node` its GraphQL type.
pub(crate) async fn connection<P, T, C>(
    context: &Context,
    kind: CursorKind<'_>,
    first: Option<i32>,
    after: Option<String>,
    read: impl FnOnce(&Store, &Viewer, &PageRequest<P>) -> argus_store::Result<Page<T>> + Send + 'static,
    position: impl Fn(&T) -> P,
    node: impl Fn(T) -> C::Node,
) -> Result<C>
where
    P: Serialize + DeserializeOwned + Send + 'static,
    T: Send + 'static,
    C: Connection,
{
    let request = page_request::<P>(context, kind, first, after.as_deref())?;
    let viewer = context.viewer().clone();
    let page = context.services().with_store(move |store| read(store, &viewer, &request)).await?;
    Ok(build(context, kind, page, position, node))
}

/// The connection of one page: an edge per item, its cursor sealed for the caller.
pub(crate) fn build<P, T, C>(
    context: &Context,
    kind: CursorKind<'_>,
    page: Page<T>,
    position: impl Fn(&T) -> P,
    node: impl Fn(T) -> C::Node,
) -> C
where
    P: Serialize,
    C: Connection,
{
    let mut signer = context.services().cursor_key.signer(kind, context.viewer());
    let edges: Vec<(String, C::Node)> =
        page.items.into_iter().map(|item| (signer.encode(&position(&item)), node(item))).collect();
    let end_cursor = edges.last().map(|(cursor, _)| cursor.clone());
    let edges = edges.into_iter().map(|(cursor, node)| C::edge(cursor, node)).collect();
    C::of(edges, PageInfo { has_next_page: page.has_next_page, end_cursor }, int(page.total_count))
}
