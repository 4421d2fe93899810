//! What the store's benchmarks share: their caller and a room of generated messages.

use std::ops::Range;

use argus_domain::{
    Classification, MessageRecord, RoomSnapshot, Scope, Viewer, from_unix_ms,
    testing::{RoomSnapshotBuilder, ViewerBuilder},
};

/// Result of a benchmark step.
pub(crate) type BenchResult<T = ()> = Result<T, Box<dyn std::error::Error>>;

/// A caller of `org` at `clearance` who may read and ingest.
pub(crate) fn viewer(org: &str, clearance: Classification) -> BenchResult<Viewer> {
    Ok(ViewerBuilder::new(org)
        .actor("bench")
        .clearance(clearance)
        .scopes([Scope::Read, Scope::Ingest])
        .build())
}

/// A snapshot of `room` holding messages `range` (ids `$<tag><i>…`), one second apart from
/// `start_ms`, from one sender, with `body(i)` as the text of message `i`.
pub(crate) fn snapshot(
    room: &str,
    tag: &str,
    range: Range<usize>,
    start_ms: i64,
    mut body: impl FnMut(usize) -> String,
) -> BenchResult<RoomSnapshot> {
    let sender = "@jean.dupont-interieur.gouv.fr:agent.tchap.gouv.fr".parse()?;
    let messages = range
        .map(|i| {
            Ok(MessageRecord::text(
                format!("${tag}{i:09}_acR1l0raoZnm60CBwAVgqbZqoO").parse()?,
                Clone::clone(&sender),
                body(i),
                from_unix_ms(start_ms + i as i64 * 1000)?,
            ))
        })
        .collect::<BenchResult<Vec<_>>>()?;
    Ok(RoomSnapshotBuilder::new(room).name("Cellule de crise").member_count(40).messages(messages).build())
}
