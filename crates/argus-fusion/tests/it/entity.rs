//! The network-node entity: stable ids, serialisation, and conformance to its JSON Schema.

use argus_domain::Classification;
use argus_fusion::{NETWORK_NODE_NAMESPACE, NetworkNode, SCHEMA_VERSION};
use serde_json::{Value, json};

use crate::support::{assert_valid, bare_room, room, validator};

#[test]
fn id_is_stable_across_versions_and_ingestions() -> anyhow::Result<()> {
    let r = room("dgsi", "!abc:agent.tchap.gouv.fr", Classification::Secret)?;
    let a = NetworkNode::from_room(&r, 1);
    let mut later = r.clone();
    later.name = Some("renamed".to_owned());
    later.member_count = 3;
    later.classification = Classification::TopSecret;
    let b = NetworkNode::from_room(&later, 9);
    assert_eq!(a.id, b.id);
    assert_eq!(a.id.get_version_num(), 5);
    assert_eq!((a.version, b.version), (1, 9));
    // Fixed forever: a change of namespace or name layout would re-key the fusion layer.
    let expected = uuid::Uuid::new_v5(
        &NETWORK_NODE_NAMESPACE,
        b"dgsi\nhttps://matrix.agent.tchap.gouv.fr\n!abc:agent.tchap.gouv.fr",
    );
    assert_eq!(a.id, expected);
    assert_eq!(NETWORK_NODE_NAMESPACE.to_string(), "07aae91b-fb91-465a-bafe-021e896d8bdf");
    Ok(())
}

#[test]
fn id_separates_organisations_homeservers_and_rooms() -> anyhow::Result<()> {
    let base = room("dgsi", "!abc:agent.tchap.gouv.fr", Classification::Restricted)?;
    let other_org = room("anssi", "!abc:agent.tchap.gouv.fr", Classification::Restricted)?;
    let other_room = room("dgsi", "!abd:agent.tchap.gouv.fr", Classification::Restricted)?;
    let mut other_hs = base.clone();
    other_hs.homeserver_url = "https://matrix.education.tchap.gouv.fr".parse()?;
    let ids: std::collections::BTreeSet<_> = [&base, &other_org, &other_room, &other_hs]
        .into_iter()
        .map(|r| NetworkNode::from_room(r, 1).id)
        .collect();
    assert_eq!(ids.len(), 4);
    let a = NetworkNode::from_room(&base, 1);
    let b = NetworkNode::from_room(&other_org, 1);
    assert_eq!(a.organisation.as_str(), "dgsi");
    assert_eq!(b.organisation.as_str(), "anssi");
    Ok(())
}

#[test]
fn serialises_every_field_in_utc() -> anyhow::Result<()> {
    let r = room("dgsi", "!abc:agent.tchap.gouv.fr", Classification::Restricted)?;
    let node = NetworkNode::from_room(&r, 17);
    let v = serde_json::to_value(&node)?;
    assert_eq!(v["type"], "network-node");
    assert_eq!(v["source"], "tchap");
    assert_eq!(v["schema_version"], SCHEMA_VERSION);
    assert_eq!(v["version"], 17);
    assert_eq!(v["organisation"], "dgsi");
    assert_eq!(v["classification"], "RESTRICTED");
    assert_eq!(v["marking"], "DIFFUSION RESTREINTE");
    assert_eq!(v["name"], "Cellule de crise");
    assert_eq!(v["joined_member_count"], 42);
    assert_eq!(v["message_count"], 1234);
    assert_eq!(v["homeserver"], "https://matrix.agent.tchap.gouv.fr");
    assert_eq!(v["room_id"], "!abc:agent.tchap.gouv.fr");
    // 08:00:00.123 at +02:00 is 06:00:00.123Z.
    assert_eq!(v["first_seen"], "2026-03-01T06:00:00.123Z");
    assert_eq!(v["last_seen"], "2026-03-02T08:00:00Z");
    assert_eq!(v["last_activity"], "2026-03-02T07:59:59Z");
    assert!(v.get("resume_token").is_none(), "storage internals must not leak");
    let back: NetworkNode = serde_json::from_value(v)?;
    assert_eq!(back, node);
    assert_eq!(node.idempotency_key(), format!("{}:17", node.id));
    Ok(())
}

#[test]
fn every_entity_conforms_to_the_schema() -> anyhow::Result<()> {
    let validator = validator()?;
    for classification in Classification::ALL {
        for r in [room("dgsi", "!abc:localhost:8448", classification)?, bare_room("police-nationale.fr")?] {
            let mut r = r;
            r.classification = classification;
            let v = serde_json::to_value(NetworkNode::from_room(&r, 1))?;
            assert_valid(&validator, &v)?;
        }
    }
    Ok(())
}

#[test]
fn schema_rejects_incomplete_or_malformed_entities() -> anyhow::Result<()> {
    let validator = validator()?;
    let good = serde_json::to_value(NetworkNode::from_room(
        &room("dgsi", "!abc:agent.tchap.gouv.fr", Classification::Secret)?,
        3,
    ))?;
    assert!(validator.is_valid(&good));
    let Value::Object(fields) = &good else { anyhow::bail!("entity is not an object") };
    for key in fields.keys() {
        let mut missing = good.clone();
        if let Some(obj) = missing.as_object_mut() {
            obj.remove(key);
        }
        assert!(!validator.is_valid(&missing), "an entity without {key} passed");
    }
    for (key, bad) in [
        ("type", json!("room")),
        ("source", json!("matrix")),
        ("classification", json!("COSMIC")),
        ("version", json!(0)),
        ("joined_member_count", json!(-1)),
        ("first_seen", json!("2026-03-01T08:00:00+02:00")),
        ("last_activity", json!("yesterday")),
        ("room_id", json!("#alias:example.org")),
        ("id", json!("not-a-uuid")),
    ] {
        let mut wrong = good.clone();
        wrong[key] = bad;
        assert!(!validator.is_valid(&wrong), "an entity with a bad {key} passed");
    }
    let mut extra = good.clone();
    extra["body"] = json!("secret content");
    assert!(!validator.is_valid(&extra), "unknown fields must be rejected");
    Ok(())
}

#[test]
fn embedded_schema_is_the_documented_one() -> anyhow::Result<()> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/network-node.schema.json");
    assert_eq!(std::fs::read_to_string(path)?, argus_fusion::network_node_schema());
    let schema: Value = serde_json::from_str(argus_fusion::network_node_schema())?;
    assert_eq!(schema["$schema"], "https://json-schema.org/draft/2020-12/schema");
    assert_eq!(schema["properties"]["schema_version"]["const"], SCHEMA_VERSION);
    Ok(())
}
