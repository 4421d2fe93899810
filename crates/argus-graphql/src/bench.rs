//! Entry points for the benchmarks; not part of the supported API.
//!
//! [`memory_schema`] answers `tchapMessages(roomId, first, after)` from a page held in memory
//! with the real connection, edge and message types (and the real cursor sealing), so that a
//! benchmark can tell the executor's and the types' cost apart from the store's.

use argus_domain::{Page, StoredMessage};
use argus_store::MessageCursor;
use juniper::{EmptyMutation, EmptySubscription, RootNode, graphql_object};

use crate::{
    Context, CursorKind,
    schema::{
        message::{TchapMessage, TchapMessageConnection},
        paging,
    },
};

/// The root of [`MemorySchema`]: one prepared page of messages.
#[derive(Debug)]
pub struct MemoryQuery {
    page: Page<StoredMessage>,
}

#[graphql_object(context = Context, name = "Query")]
impl MemoryQuery {
    /// The prepared page, whatever the room asked for; cursors sealed for the caller.
    fn tchap_messages(
        &self,
        context: &Context,
        room_id: String,
        first: Option<i32>,
        after: Option<String>,
    ) -> TchapMessageConnection {
        let _ = after;
        let first = usize::try_from(first.unwrap_or(50)).unwrap_or(0);
        let items = self.page.items.iter().take(first).cloned().collect();
        let page = Page { items, has_next_page: self.page.has_next_page, total_count: self.page.total_count };
        paging::build(context, CursorKind::Messages(&room_id), page, MessageCursor::of, TchapMessage)
    }
}

/// Turns the access journal off for `services`: what the journal costs a read is measured
/// against this.
pub fn without_journal(services: &crate::Services) {
    services.journal_off.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// A schema whose only field is `tchapMessages`, answered by [`MemoryQuery`].
pub type MemorySchema = RootNode<MemoryQuery, EmptyMutation<Context>, EmptySubscription<Context>>;

/// The schema answering every `tchapMessages` with `page`.
pub fn memory_schema(page: Page<StoredMessage>) -> MemorySchema {
    MemorySchema::new(MemoryQuery { page }, EmptyMutation::new(), EmptySubscription::new())
}
