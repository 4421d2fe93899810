//! Keyset pagination: a request for the next `first` items after a cursor, and a page.

/// A request for up to `first` items after `after` (exclusive).
///
/// `C` is the keyset position type of the list being read; the store defines it and the API
/// layer encodes it into opaque cursors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageRequest<C> {
    /// How many items at most.
    pub first: u32,
    /// Start after this position; `None` for the first page.
    pub after: Option<C>,
}

impl<C> PageRequest<C> {
    /// The first page of `first` items.
    pub fn first(first: u32) -> Self {
        Self { first, after: None }
    }
}

/// One page of a list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    /// The items, in list order.
    pub items: Vec<T>,
    /// Whether more items follow the last one.
    pub has_next_page: bool,
    /// How many items the whole (filtered) list has.
    pub total_count: i64,
}
