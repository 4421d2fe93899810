//! An optional STIX 2.1 rendering of a network-node entity, for platforms that speak STIX.
//!
//! The bundle holds one `infrastructure` object (the room) and the marking definitions it
//! references: the predefined TLP marking mapped from the classification, and a `statement`
//! marking carrying the French protection marking.

use argus_domain::Classification;
use serde_json::{Value, json};
use time::format_description::well_known::Rfc3339;
use uuid::Uuid;

use crate::NetworkNode;

/// The `infrastructure_types` value of a Tchap room. The STIX 2.1 `infrastructure-type-ov`
/// vocabulary is open and has no entry for a messaging channel, so a descriptive value is used.
pub const INFRASTRUCTURE_TYPE: &str = "communication-channel";

/// Creation time of the statement marking definitions (fixed, so their ids and bodies are
/// stable across emissions).
const MARKING_CREATED: &str = "2026-01-01T00:00:00.000Z";

/// A predefined STIX 2.1 TLP marking definition (STIX 2.1 section 7.2.1.4).
struct Tlp {
    id: &'static str,
    name: &'static str,
    tlp: &'static str,
}

const TLP_WHITE: Tlp =
    Tlp { id: "marking-definition--613f2e26-407d-48c7-9eca-b8e91df99dc9", name: "TLP:WHITE", tlp: "white" };
const TLP_AMBER: Tlp =
    Tlp { id: "marking-definition--f88d31f6-486f-44da-b317-01333bde0b82", name: "TLP:AMBER", tlp: "amber" };
const TLP_RED: Tlp =
    Tlp { id: "marking-definition--5e57c739-391a-4eb3-b6be-7d15ca92d5ed", name: "TLP:RED", tlp: "red" };

/// The TLP level of a classification: `NON PROTÉGÉ` may be shared freely (WHITE), `DIFFUSION
/// RESTREINTE` only on a need-to-know basis within the organisations concerned (AMBER),
/// anything classified no further than the named recipients (RED).
fn tlp_for(c: Classification) -> &'static Tlp {
    match c {
        Classification::Unclassified => &TLP_WHITE,
        Classification::Restricted => &TLP_AMBER,
        Classification::Confidential | Classification::Secret | Classification::TopSecret => &TLP_RED,
    }
}

/// The TLP marking name (`TLP:WHITE`, `TLP:AMBER`, `TLP:RED`) a classification maps to.
pub fn tlp_name(c: Classification) -> &'static str {
    tlp_for(c).name
}

/// The deterministic id of the statement marking of a classification.
fn statement_marking_id(c: Classification) -> String {
    let uuid = Uuid::new_v5(&crate::NETWORK_NODE_NAMESPACE, format!("marking\n{}", c.as_str()).as_bytes());
    format!("marking-definition--{uuid}")
}

fn stix_time(t: time::OffsetDateTime) -> String {
    // Entity timestamps are UTC, so RFC 3339 ends in `Z` as STIX requires.
    t.format(&Rfc3339).unwrap_or_default()
}

/// Renders an entity as a STIX 2.1 bundle: an `infrastructure` object with id
/// `infrastructure--<entity id>` marked with the TLP level and French marking of its
/// classification.
///
/// The rendering is deterministic: the same entity version gives the same bundle.
///
/// ```
/// use argus_domain::{Classification, StoredRoom};
/// use argus_fusion::{NetworkNode, to_stix_bundle};
/// use time::macros::datetime;
///
/// let room = StoredRoom {
///     id: 1,
///     org: "dgsi".parse()?,
///     room_id: "!abc:agent.tchap.gouv.fr".parse()?,
///     homeserver_url: "https://matrix.agent.tchap.gouv.fr".parse()?,
///     name: Some("Cellule de crise".into()),
///     topic: None,
///     canonical_alias: None,
///     member_count: 12,
///     encrypted: true,
///     classification: Classification::Restricted,
///     first_seen_at: datetime!(2026-03-01 08:00 UTC),
///     last_activity_at: None,
///     last_ingested_at: datetime!(2026-03-02 08:00 UTC),
///     message_count: 0,
///     resume_token: None,
///     backfill_token: None,
///     history_complete: false,
///     predecessor: None,
///     successor: None,
///     metadata: Default::default(),
///     history_since: None,
///     watched: false,
/// };
/// let node = NetworkNode::from_room(&room, 7);
/// let bundle = to_stix_bundle(&node);
/// let infra = &bundle["objects"][0];
/// assert_eq!(infra["type"], "infrastructure");
/// assert_eq!(infra["id"], format!("infrastructure--{}", node.id));
/// assert_eq!(infra["object_marking_refs"].as_array().map(Vec::len), Some(2));
/// # Ok::<(), argus_domain::Error>(())
/// ```
pub fn to_stix_bundle(node: &NetworkNode) -> Value {
    let tlp = tlp_for(node.classification);
    let statement_id = statement_marking_id(node.classification);
    let bundle_id = Uuid::new_v5(&crate::NETWORK_NODE_NAMESPACE, node.idempotency_key().as_bytes());
    let mut infrastructure = json!({
        "type": "infrastructure",
        "spec_version": "2.1",
        "id": format!("infrastructure--{}", node.id),
        "created": stix_time(node.first_seen),
        // STIX requires modified >= created, whatever the clocks did.
        "modified": stix_time(node.last_seen.max(node.first_seen)),
        "name": node.name.clone().unwrap_or_else(|| node.room_id.to_string()),
        "infrastructure_types": [INFRASTRUCTURE_TYPE],
        "first_seen": stix_time(node.first_seen),
        "last_seen": stix_time(node.last_activity.unwrap_or(node.last_seen).max(node.first_seen)),
        "object_marking_refs": [tlp.id, statement_id],
        "external_references": [{
            "source_name": "tchap",
            "external_id": node.room_id.as_str(),
            "url": node.homeserver.as_str(),
        }],
        "x_argus_organisation": node.organisation.as_str(),
        "x_argus_classification": node.classification.as_str(),
        "x_argus_entity_version": node.version,
        "x_argus_joined_member_count": node.joined_member_count,
        "x_argus_message_count": node.message_count,
        "x_argus_encrypted": node.encrypted,
    });
    if let (Some(topic), Some(obj)) = (&node.topic, infrastructure.as_object_mut()) {
        obj.insert("description".to_owned(), Value::String(topic.clone()));
    }
    json!({
        "type": "bundle",
        "id": format!("bundle--{bundle_id}"),
        "objects": [
            infrastructure,
            {
                "type": "marking-definition",
                "spec_version": "2.1",
                "id": tlp.id,
                "created": "2017-01-20T00:00:00.000Z",
                "definition_type": "tlp",
                "name": tlp.name,
                "definition": { "tlp": tlp.tlp },
            },
            {
                "type": "marking-definition",
                "spec_version": "2.1",
                "id": statement_id,
                "created": MARKING_CREATED,
                "definition_type": "statement",
                "name": node.classification.french_marking(),
                "definition": { "statement": node.classification.french_marking() },
            },
        ],
    })
}
