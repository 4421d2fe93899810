//! The STIX 2.1 rendering: bundle shape, deterministic ids, markings from the classification.

use argus_domain::Classification;
use argus_fusion::{INFRASTRUCTURE_TYPE, NetworkNode, tlp_name, to_stix_bundle};
use serde_json::Value;

use crate::support::{bare_room, room};

fn objects_of<'a>(bundle: &'a Value, kind: &str) -> Vec<&'a Value> {
    bundle["objects"].as_array().map(|o| o.iter().filter(|x| x["type"] == kind).collect()).unwrap_or_default()
}

fn is_stix_id(id: &Value, kind: &str) -> bool {
    id.as_str()
        .and_then(|s| s.strip_prefix(kind))
        .and_then(|s| s.strip_prefix("--"))
        .is_some_and(|u| uuid::Uuid::parse_str(u).is_ok())
}

#[test]
fn bundle_holds_a_marked_infrastructure() -> anyhow::Result<()> {
    let node =
        NetworkNode::from_room(&room("dgsi", "!abc:agent.tchap.gouv.fr", Classification::Restricted)?, 5);
    let bundle = to_stix_bundle(&node);
    assert_eq!(bundle["type"], "bundle");
    assert!(is_stix_id(&bundle["id"], "bundle"));
    assert!(bundle.get("spec_version").is_none(), "STIX 2.1 bundles carry no spec_version");

    let infra = objects_of(&bundle, "infrastructure");
    assert_eq!(infra.len(), 1);
    let infra = infra[0];
    assert_eq!(infra["spec_version"], "2.1");
    assert_eq!(infra["id"], format!("infrastructure--{}", node.id));
    assert_eq!(infra["name"], "Cellule de crise");
    assert_eq!(infra["description"], node.topic.clone().unwrap_or_default());
    assert_eq!(infra["infrastructure_types"], serde_json::json!([INFRASTRUCTURE_TYPE]));
    assert_eq!(infra["created"], "2026-03-01T06:00:00.123Z");
    assert_eq!(infra["modified"], "2026-03-02T08:00:00Z");
    assert_eq!(infra["external_references"][0]["external_id"], "!abc:agent.tchap.gouv.fr");
    assert_eq!(infra["x_argus_organisation"], "dgsi");
    assert_eq!(infra["x_argus_entity_version"], 5);

    // Every marking the infrastructure references is defined in the bundle.
    let markings = objects_of(&bundle, "marking-definition");
    let refs = infra["object_marking_refs"].as_array().cloned().unwrap_or_default();
    assert_eq!(refs.len(), 2);
    for r in &refs {
        assert!(is_stix_id(r, "marking-definition"));
        assert!(markings.iter().any(|m| &m["id"] == r), "marking {r} is not in the bundle");
    }
    let tlp = markings.iter().find(|m| m["definition_type"] == "tlp").copied();
    assert_eq!(tlp.map(|m| m["name"].clone()), Some("TLP:AMBER".into()));
    assert_eq!(tlp.map(|m| m["definition"]["tlp"].clone()), Some("amber".into()));
    let statement = markings.iter().find(|m| m["definition_type"] == "statement").copied();
    assert_eq!(statement.map(|m| m["definition"]["statement"].clone()), Some("DIFFUSION RESTREINTE".into()));
    for m in markings {
        assert_eq!(m["spec_version"], "2.1");
        assert!(m["created"].as_str().is_some_and(|s| s.ends_with('Z')));
    }
    Ok(())
}

#[test]
fn classification_maps_to_tlp_and_french_marking() -> anyhow::Result<()> {
    let expected = [
        (Classification::Unclassified, "TLP:WHITE", "NON PROTÉGÉ"),
        (Classification::Restricted, "TLP:AMBER", "DIFFUSION RESTREINTE"),
        (Classification::Confidential, "TLP:RED", "CONFIDENTIEL"),
        (Classification::Secret, "TLP:RED", "SECRET"),
        (Classification::TopSecret, "TLP:RED", "TRÈS SECRET"),
    ];
    let mut statement_ids = std::collections::BTreeSet::new();
    for (classification, tlp, french) in expected {
        assert_eq!(tlp_name(classification), tlp);
        let node = NetworkNode::from_room(&room("dgsi", "!abc:agent.tchap.gouv.fr", classification)?, 1);
        let bundle = to_stix_bundle(&node);
        let markings = objects_of(&bundle, "marking-definition");
        assert!(markings.iter().any(|m| m["name"] == tlp));
        let statement = markings.iter().find(|m| m["definition_type"] == "statement");
        assert_eq!(statement.map(|m| m["definition"]["statement"].clone()), Some(french.into()));
        statement_ids.insert(statement.map(|m| m["id"].to_string()));
    }
    assert_eq!(statement_ids.len(), 5, "each classification has its own statement marking");
    Ok(())
}

#[test]
fn rendering_is_deterministic_and_versioned() -> anyhow::Result<()> {
    let r = bare_room("dgsi")?;
    let v1 = NetworkNode::from_room(&r, 1);
    let v2 = NetworkNode::from_room(&r, 2);
    assert_eq!(to_stix_bundle(&v1), to_stix_bundle(&v1));
    let (b1, b2) = (to_stix_bundle(&v1), to_stix_bundle(&v2));
    assert_ne!(b1["id"], b2["id"], "each entity version is its own bundle");
    assert_eq!(b1["objects"][0]["id"], b2["objects"][0]["id"], "the infrastructure id is stable");
    // A room without a name is named by its id; without activity last_seen is the ingestion.
    let infra = &b1["objects"][0];
    assert_eq!(infra["name"], r.room_id.as_str());
    assert!(infra.get("description").is_none());
    assert!(infra["last_seen"].as_str() >= infra["first_seen"].as_str());
    Ok(())
}
