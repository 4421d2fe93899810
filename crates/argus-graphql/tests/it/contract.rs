//! The generated schema contains every type, field, argument (with its type and default),
//! enum value and input field of the contract.

use std::collections::BTreeSet;

use graphql_parser::schema::{Definition, Document, TypeDefinition, TypeExtension, parse_schema};

const CONTRACT: &str = include_str!("../contract.graphql");

/// The additions fixed by this round's issues (`extend` of the contract's types, and new types).
const NEXT: &str = include_str!("../next.graphql");

/// Where the sections of issues not served yet start in [`NEXT`], if any: what comes before is
/// served (every section, when `None`).
const NOT_YET_SERVED: Option<&str> = None;

/// An input field's type as the contract states it: a required input the contract names may be
/// served as optional (a caller giving it is still answered), as `next.graphql` makes
/// `homeserverUrl` optional where `account` is given.
fn input_type(field: &graphql_parser::schema::InputValue<'_, String>) -> String {
    field.value_type.to_string().trim_end_matches('!').to_owned()
}

/// One line per contract element, e.g. `Query.tchapRooms(first: Int = 50)`.
fn signatures(doc: &Document<'_, String>) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for def in &doc.definitions {
        let Definition::TypeDefinition(def) = def else { continue };
        match def {
            TypeDefinition::Scalar(s) => {
                out.insert(format!("scalar {}", s.name));
            }
            TypeDefinition::Object(o) => {
                out.insert(format!("type {}", o.name));
                for f in &o.fields {
                    out.insert(format!("{}.{}: {}", o.name, f.name, f.field_type));
                    for a in &f.arguments {
                        let default = a.default_value.as_ref().map(|d| format!(" = {d}")).unwrap_or_default();
                        out.insert(format!("{}.{}({}: {}{})", o.name, f.name, a.name, a.value_type, default));
                    }
                }
            }
            TypeDefinition::Enum(e) => {
                out.insert(format!("enum {}", e.name));
                for v in &e.values {
                    out.insert(format!("{}.{}", e.name, v.name));
                }
            }
            TypeDefinition::InputObject(i) => {
                out.insert(format!("input {}", i.name));
                for f in &i.fields {
                    out.insert(format!("{}.{}: {}", i.name, f.name, input_type(f)));
                }
            }
            TypeDefinition::Interface(_) | TypeDefinition::Union(_) => {}
        }
    }
    for def in &doc.definitions {
        let Definition::TypeExtension(ext) = def else { continue };
        match ext {
            TypeExtension::Object(o) => {
                for f in &o.fields {
                    out.insert(format!("{}.{}: {}", o.name, f.name, f.field_type));
                    for a in &f.arguments {
                        let default = a.default_value.as_ref().map(|d| format!(" = {d}")).unwrap_or_default();
                        out.insert(format!("{}.{}({}: {}{})", o.name, f.name, a.name, a.value_type, default));
                    }
                }
            }
            TypeExtension::InputObject(i) => {
                for f in &i.fields {
                    out.insert(format!("{}.{}: {}", i.name, f.name, input_type(f)));
                }
            }
            _ => {}
        }
    }
    out
}

#[test]
fn every_contract_name_exists_with_its_type() {
    let contract = parse_schema::<String>(CONTRACT).unwrap();
    let sdl = argus_graphql::schema_sdl();
    let ours = parse_schema::<String>(&sdl).unwrap();
    let (want, have) = (signatures(&contract), signatures(&ours));
    assert!(want.len() > 80, "the contract parsed into {} signatures", want.len());
    let missing: Vec<_> = want.difference(&have).collect();
    assert!(missing.is_empty(), "missing from the schema: {missing:#?}");
}

#[test]
fn every_served_addition_of_this_round_exists_with_its_type() {
    let served = NOT_YET_SERVED.map_or(NEXT, |marker| NEXT.split_once(marker).unwrap().0);
    let next = parse_schema::<String>(served).unwrap();
    let sdl = argus_graphql::schema_sdl();
    let ours = parse_schema::<String>(&sdl).unwrap();
    let (want, have) = (signatures(&next), signatures(&ours));
    assert!(want.len() > 40, "the served additions parsed into {} signatures", want.len());
    let missing: Vec<_> = want.difference(&have).collect();
    assert!(missing.is_empty(), "missing from the schema: {missing:#?}");
}

#[test]
fn the_contract_copies_match_the_shared_contract() {
    for (name, copy) in [("schema.graphql", CONTRACT), ("next.graphql", NEXT)] {
        let shared = format!("{}/../../../shared/contract/{name}", env!("CARGO_MANIFEST_DIR"));
        if let Ok(text) = std::fs::read_to_string(shared) {
            assert_eq!(text, copy, "tests/{name} is out of date");
        }
    }
}

#[test]
fn the_committed_sdl_is_current() {
    let committed = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/schema.graphql");
    let sdl = argus_graphql::schema_sdl();
    if std::env::var_os("ARGUS_UPDATE_SCHEMA").is_some() {
        std::fs::write(committed, format!("{}\n", sdl.trim_end())).unwrap();
    }
    let text = std::fs::read_to_string(committed).unwrap();
    assert_eq!(
        text.trim_end(),
        sdl.trim_end(),
        "docs/schema.graphql is stale: run `argus-tchap schema > docs/schema.graphql` (or the tests with ARGUS_UPDATE_SCHEMA=1)"
    );
}

/// The section "Attachments as evidence" of the next contract (`shared/contract/next.graphql`),
/// its `extend type TchapMessage` written as the field it adds.
const NEXT_ATTACHMENTS: &str = r#"
type TchapMessage {
  "The file this message carries, as the archive holds it; null when it carries none."
  attachment: TchapAttachment
}

type TchapAttachment {
  mxcUri: String!
  filename: String
  declaredMimetype: String
  encrypted: Boolean!
  status: AttachmentStatus!
  "Why it is not STORED; never contains a token."
  statusReason: String
  "Lowercase hex SHA-256 of the file as sent (decrypted where it was encrypted)."
  sha256: String
  size: Int
  "The signature the scanner found, when INFECTED."
  threat: String
  fetchedAt: DateTime
  "Path on this server to download the bytes with the same bearer token; only when STORED."
  downloadUrl: String
}

enum AttachmentStatus { STORED PENDING INFECTED TOO_LARGE TAMPERED UNAVAILABLE UNDECRYPTABLE }
"#;

#[test]
fn the_attachment_names_of_the_next_contract_are_served() {
    let sdl = argus_graphql::schema_sdl();
    let next = parse_schema::<String>(NEXT_ATTACHMENTS).unwrap();
    let ours = parse_schema::<String>(&sdl).unwrap();
    let (want, have) = (signatures(&next), signatures(&ours));
    let missing: Vec<_> = want.difference(&have).collect();
    assert!(missing.is_empty(), "missing from the schema: {missing:#?}");
    // The contract's descriptions are served as written.
    for line in NEXT_ATTACHMENTS.lines().map(str::trim).filter(|l| l.starts_with('"')) {
        assert!(sdl.contains(line), "description not served: {line}");
    }
    // The copy above is the shared section, when the shared contract is at hand.
    let shared = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/contract/next.graphql");
    if let Ok(text) = std::fs::read_to_string(shared) {
        for line in NEXT_ATTACHMENTS.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('}')) {
            let line = line.replace("type TchapMessage {", "extend type TchapMessage {");
            assert!(text.contains(&line), "not in the shared next contract: {line}");
        }
    }
}
