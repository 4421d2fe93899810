//! Argus Tchap connector: the GraphQL schema of the contract and its resolvers, which check
//! the caller's input and scope and call the application's use-cases ([`argus_ingest`]). No
//! HTTP here: the server crate authenticates the caller, builds a [`Context`] and
//! executes requests against [`Schema`].
//!
//! - Reads (`tchapRooms`, `tchapRoom`, `tchapMessages`, `TchapRoom.messages`,
//!   `TchapRoom.stateHistory`, `tchapStats`)
//!   need the scope `tchap:read`, `tchapIngestions` needs `tchap:audit`, the mutation
//!   `ingestTchapRoom` needs `tchap:ingest`, `tchapSearch` needs `tchap:read`, the mutation
//!   `postTchapMessage` needs `tchap:post`, `tchapAccessLog` needs `tchap:audit`,
//!   `discloseTchapRoom` needs `tchap:disclose`; otherwise the error has `extensions.code =
//!   "FORBIDDEN"`.
//! - The subscription `tchapMessagesAdded` ([`schema::subscription`]) needs `tchap:read` too: it
//!   delivers the messages stored after it started that the caller's `tchapMessages` would
//!   return, each journaled like that read; the server serves it over GraphQL over WebSocket
//!   with a [`Context`] that ends with the caller's token ([`Context::with_expiry`]).
//! - Every read goes through the store's gated reads for the caller's organisation and
//!   clearance; pagination cursors are opaque and authenticated ([`CursorKey`]). The content a
//!   message had when captured, held after a later redaction (`TchapMessage.heldBody`,
//!   `heldMediaUri`, `heldMediaMimetype`, `TchapMessageVersion.heldBody`, `heldMsgtype`), is
//!   read only for a caller who also holds `tchap:redacted`, and is null for everyone else.
//! - Every root field is charged what it asks for before it runs ([`schema::charged`]): the
//!   items of every connection and list below it, in queries and mutation payloads alike, and
//!   the searches it runs, against the limits of the request ([`Limits`]); past either, the
//!   error has `extensions.code = "LIMIT_EXCEEDED"`.
//! - Errors carry a stable `extensions.code` ([`Error::code`]) and never a token, SQL or path.
//!
//! ```
//! let sdl = argus_graphql::schema_sdl();
//! assert!(sdl.contains("ingestTchapRoom(input: IngestTchapRoomInput!): IngestTchapRoomPayload!"));
//! ```

#[cfg(feature = "bench")]
#[doc(hidden)]
pub mod bench;
mod context;
mod cost;
mod cursor;
mod error;
pub mod oversight;
pub mod schema;

pub use argus_ingest::{Admission, AdmissionLimits, Admitted, Metrics, ingest};
pub use context::{Context, Limits, Services};
pub use cursor::{CursorKey, CursorKind};
pub use error::{Error, Result};
pub use schema::attachment::MEDIA_ROUTE_PREFIX;
pub use schema::disclose::PACKAGES_ROUTE_PREFIX;
pub use schema::{ReadOnlySchema, Schema, SchemaOptions, build_read_only_schema, build_schema, schema_sdl};
