//! The network-node entity: one per room and organisation, versioned, with its JSON Schema.

use argus_domain::{Classification, HomeserverUrl, OrgId, RoomId, StoredRoom};
use time::{OffsetDateTime, UtcOffset};
use uuid::Uuid;

/// The namespace of every network-node id (UUIDv5). Fixed forever: changing it changes every
/// entity id the fusion layer knows.
pub const NETWORK_NODE_NAMESPACE: Uuid = Uuid::from_u128(0x07aa_e91b_fb91_465a_bafe_021e_896d_8bdf);

/// The version of the entity's JSON shape; bumped on any incompatible change of
/// `docs/network-node.schema.json`.
pub const SCHEMA_VERSION: i64 = 1;

/// The value of the `type` field.
pub const ENTITY_TYPE: &str = "network-node";

/// The value of the `source` field.
pub const ENTITY_SOURCE: &str = "tchap";

/// The JSON Schema (draft 2020-12) every emitted entity conforms to; the same text as
/// `docs/network-node.schema.json`.
const SCHEMA: &str = include_str!("../../../docs/network-node.schema.json");

/// The JSON Schema (draft 2020-12) of [`NetworkNode`], as text.
///
/// ```
/// let schema: serde_json::Value = serde_json::from_str(argus_fusion::network_node_schema())?;
/// assert_eq!(schema["properties"]["type"]["const"], "network-node");
/// # Ok::<(), serde_json::Error>(())
/// ```
pub fn network_node_schema() -> &'static str {
    SCHEMA
}

/// A Tchap room as the fusion layer sees it: a node of the communication network of one
/// organisation.
///
/// Serialised as one flat JSON object (see [`network_node_schema`]); every timestamp is
/// RFC 3339 in UTC with a `Z` suffix. Two entities with the same `id` describe the same room
/// of the same organisation; the one with the higher `version` is newer.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NetworkNode {
    /// Stable id: UUIDv5 of organisation, homeserver and room id in
    /// [`NETWORK_NODE_NAMESPACE`].
    pub id: Uuid,
    /// Always [`ENTITY_TYPE`].
    #[serde(rename = "type")]
    pub entity_type: String,
    /// Always [`ENTITY_SOURCE`].
    pub source: String,
    /// [`SCHEMA_VERSION`] at emission.
    pub schema_version: i64,
    /// The audit sequence number of the ingestion that produced this version; increases with
    /// every ingestion of the organisation.
    pub version: i64,
    /// The organisation that owns this copy of the room.
    pub organisation: OrgId,
    /// The room's classification (contract name, e.g. `RESTRICTED`).
    pub classification: Classification,
    /// The French protection marking of `classification`, e.g. `DIFFUSION RESTREINTE`.
    pub marking: String,
    /// From `m.room.name`.
    pub name: Option<String>,
    /// From `m.room.topic`.
    pub topic: Option<String>,
    /// From `m.room.canonical_alias`.
    pub canonical_alias: Option<String>,
    /// Whether the room is end-to-end encrypted.
    pub encrypted: bool,
    /// Joined members at the last ingestion.
    pub joined_member_count: i64,
    /// Messages stored for this room.
    pub message_count: i64,
    /// The homeserver the room was read from.
    pub homeserver: HomeserverUrl,
    /// The Matrix room id.
    pub room_id: RoomId,
    /// When the room was first ingested.
    #[serde(with = "time::serde::rfc3339")]
    pub first_seen: OffsetDateTime,
    /// When the room was last ingested.
    #[serde(with = "time::serde::rfc3339")]
    pub last_seen: OffsetDateTime,
    /// When the newest stored message was sent; `null` for a room without messages.
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_activity: Option<OffsetDateTime>,
}

impl NetworkNode {
    /// The stable id of a room of an organisation.
    ///
    /// ```
    /// use argus_fusion::NetworkNode;
    /// let hs = "https://matrix.agent.tchap.gouv.fr".parse()?;
    /// let room = "!abc:agent.tchap.gouv.fr".parse()?;
    /// let a = NetworkNode::stable_id(&"dgsi".parse()?, &hs, &room);
    /// assert_eq!(a, NetworkNode::stable_id(&"dgsi".parse()?, &hs, &room));
    /// assert_ne!(a, NetworkNode::stable_id(&"anssi".parse()?, &hs, &room));
    /// # Ok::<(), argus_domain::Error>(())
    /// ```
    pub fn stable_id(org: &OrgId, homeserver: &HomeserverUrl, room_id: &RoomId) -> Uuid {
        // None of the three may contain a newline, so the joined name is unambiguous.
        let name = format!("{org}\n{homeserver}\n{room_id}");
        Uuid::new_v5(&NETWORK_NODE_NAMESPACE, name.as_bytes())
    }

    /// Builds the entity of a stored room (the outbox payload) at `version`, the audit sequence
    /// number of the ingestion that stored it. Pure: no I/O, no clock.
    pub fn from_room(room: &StoredRoom, version: i64) -> Self {
        Self {
            id: Self::stable_id(&room.org, &room.homeserver_url, &room.room_id),
            entity_type: ENTITY_TYPE.to_owned(),
            source: ENTITY_SOURCE.to_owned(),
            schema_version: SCHEMA_VERSION,
            version,
            organisation: room.org.clone(),
            classification: room.classification,
            marking: room.classification.french_marking().to_owned(),
            name: room.name.clone(),
            topic: room.topic.clone(),
            canonical_alias: room.canonical_alias.clone(),
            encrypted: room.encrypted,
            joined_member_count: room.member_count.max(0),
            message_count: room.message_count.max(0),
            homeserver: room.homeserver_url.clone(),
            room_id: room.room_id.clone(),
            first_seen: utc(room.first_seen_at),
            last_seen: utc(room.last_ingested_at),
            last_activity: room.last_activity_at.map(utc),
        }
    }

    /// The `Idempotency-Key` of this version of the entity: `<id>:<version>`.
    pub fn idempotency_key(&self) -> String {
        format!("{}:{}", self.id, self.version)
    }
}

/// Normalises a timestamp to UTC at millisecond precision (the storage precision), so it
/// serialises with a `Z` suffix.
fn utc(t: OffsetDateTime) -> OffsetDateTime {
    let t = t.to_offset(UtcOffset::UTC);
    let ms = t.millisecond();
    t.replace_millisecond(ms).unwrap_or(t)
}
