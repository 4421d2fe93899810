//! Relay connections over the store's keyset pages, with authenticated cursors.

use argus_domain::{Page, PageRequest, Viewer};
use argus_store::Store;
use serde::{Serialize, de::DeserializeOwned};

use crate::{Context, CursorKind, Error, Result};

/// A connection type built from cursor/node pairs.
pub(crate) trait Connection {
    /// The node type.
    type Node;
    /// Builds the connection.
    fn build(edges: Vec<(String, Self::Node)>, has_next_page: bool, total_count: i64) -> Self;
}

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
            Error::InvalidInput(format!("first must be between 0 and {}", limits.max_page_size))
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
    let edges = page.items.into_iter().map(|item| (signer.encode(&position(&item)), node(item))).collect();
    C::build(edges, page.has_next_page, page.total_count)
}
