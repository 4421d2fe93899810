//! Decrypting a page's `m.room.encrypted` events before they are normalised: oldest first
//! (a megolm session ratchets forwards cheaply), by the run's [`Decryptor`]; what a ciphertext
//! carried is then normalised like a plaintext event with the cleartext relation kept, or the
//! event stays encrypted with its reason.

use std::collections::{HashMap, hash_map::Entry};

use argus_crypto::{
    Decryptor,
    megolm::{DecryptedEvent, EncryptedContent, EncryptedEvent, Undecryptable},
};
use argus_domain::SenderTrust;
use ruma::{events::AnyTimelineEvent, serde::Raw};
use serde::Deserialize;

/// The decryption of a run's pages.
pub(super) struct Decrypting {
    keys: Box<dyn Decryptor>,
    /// Whether pages list their events newest first (a backwards read).
    pages_newest_first: bool,
    /// The event each decrypted ciphertext (session, message index) was first served as.
    ciphertexts: HashMap<(String, u32), String>,
}

impl Decrypting {
    pub(super) fn new(keys: Box<dyn Decryptor>, pages_newest_first: bool) -> Self {
        Self { keys, pages_newest_first, ciphertexts: HashMap::new() }
    }

    /// For each event of `chunk` (read from `room_id`), in the page's order: `None` when it is
    /// not an encrypted event with a ciphertext, else the JSON of the event it carried with what
    /// is known of its sending device, or why it stays encrypted.
    pub(super) async fn decrypt_page(
        &mut self,
        room_id: &str,
        chunk: &[Raw<AnyTimelineEvent>],
    ) -> Vec<Option<Result<(String, SenderTrust), Undecryptable>>> {
        // Decrypt oldest first (over the cores); the caller takes the events in the page's order.
        let order: Vec<usize> = if self.pages_newest_first {
            (0..chunk.len()).rev().collect()
        } else {
            (0..chunk.len()).collect()
        };
        let mut decrypted: Vec<Option<Result<(String, SenderTrust), Undecryptable>>> =
            vec![None; chunk.len()];
        let mut wanted = Vec::new();
        let mut contents = Vec::new();
        for i in order {
            match encrypted_content(chunk[i].json().get()) {
                Some(Ok((content, relates_to))) => {
                    wanted.push((i, relates_to));
                    contents.push(content);
                }
                Some(Err(reason)) => decrypted[i] = Some(Err(reason)),
                None => {}
            }
        }
        let events: Vec<EncryptedEvent<'_>> = wanted
            .iter()
            .zip(contents)
            .map(|((i, _), content)| EncryptedEvent { json: chunk[*i].json().get(), content })
            .collect();
        let results = self.keys.decrypt_all(room_id, &events).await;
        for (((i, relates_to), event), result) in wanted.into_iter().zip(&events).zip(results) {
            let content = &event.content;
            let json = event.json;
            let result = result.and_then(|event| {
                let trust = event.sender_trust;
                let full: serde_json::Map<String, serde_json::Value> =
                    serde_json::from_str(json).map_err(|_| Undecryptable::Malformed)?;
                // A ciphertext is one event: served again under another event id, it is a replay.
                let id =
                    full.get("event_id").and_then(serde_json::Value::as_str).unwrap_or_default().to_owned();
                let slot = (content.session_id.clone().unwrap_or_default(), event.message_index);
                match self.ciphertexts.entry(slot) {
                    Entry::Occupied(first) if *first.get() != id => {
                        return Err(Undecryptable::Replayed);
                    }
                    Entry::Occupied(_) => {}
                    Entry::Vacant(slot) => {
                        slot.insert(id);
                    }
                }
                plain_event(full, event, relates_to).map(|plain| (plain, trust))
            });
            decrypted[i] = Some(result);
        }
        decrypted
    }
}

/// What became of an `m.room.encrypted` event when keys were given.
#[derive(Debug, Clone, Copy)]
pub(super) enum Decryption {
    /// Decrypted; what is known of the device that sent it.
    Decrypted(SenderTrust),
    /// Still encrypted, and why.
    Failed(Undecryptable),
}

/// The envelope of an encrypted event, as far as decryption needs it.
#[derive(Deserialize)]
struct EncryptedView {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    content: Option<serde_json::Map<String, serde_json::Value>>,
}

/// The encrypted content of an `m.room.encrypted` event with a ciphertext, and its cleartext
/// `m.relates_to` (the specification has relations outside the ciphertext); `None` for another
/// event (or a redacted one).
fn encrypted_content(
    json: &str,
) -> Option<Result<(EncryptedContent, Option<serde_json::Value>), Undecryptable>> {
    let view: EncryptedView = serde_json::from_str(json).ok()?;
    if view.kind != "m.room.encrypted" {
        return None;
    }
    let content = view.content.filter(|c| c.contains_key("ciphertext"))?;
    let relates_to = content.get("m.relates_to").cloned();
    Some(
        serde_json::from_value(serde_json::Value::Object(content))
            .map(|c| (c, relates_to))
            .map_err(|_| Undecryptable::Malformed),
    )
}

/// The event `full` (parsed once by the caller) as the decrypted `event` it carried, with its
/// cleartext relation kept.
fn plain_event(
    mut full: serde_json::Map<String, serde_json::Value>,
    event: DecryptedEvent,
    relates_to: Option<serde_json::Value>,
) -> Result<String, Undecryptable> {
    // Only messages and stickers: a redaction or state event inside a ciphertext was never
    // applied by the homeserver, and the archive must not apply it either.
    if !matches!(event.event_type.as_str(), "m.room.message" | "m.sticker") {
        return Err(Undecryptable::UnsupportedEventType);
    }
    let mut inner = event.content;
    let object = inner.as_object_mut().ok_or(Undecryptable::Malformed)?;
    // Relations are the cleartext ones, as clients show them; one inside the ciphertext is
    // ignored (it could make the archive apply an edit or a reply no client ever showed).
    object.remove("m.relates_to");
    if let Some(relation) = relates_to {
        object.insert("m.relates_to".to_owned(), relation);
    }
    full.insert("type".to_owned(), serde_json::Value::String(event.event_type));
    full.insert("content".to_owned(), inner);
    Ok(serde_json::Value::Object(full).to_string())
}

#[cfg(test)]
mod tests {
    use ruma::{events::AnyTimelineEvent, serde::Raw};
    use serde_json::{Value, json, value::RawValue};
    use vodozemac::megolm::{GroupSession, InboundGroupSession, SessionConfig};

    use super::super::{
        Normalised, Normaliser,
        tests::{ROOM, event},
    };
    use argus_domain::FetchReport;

    /// A sending device's megolm session and the keys a run is given for it.
    struct Device {
        out: GroupSession,
        keys: Option<argus_crypto::megolm::SessionKeys>,
    }

    impl Device {
        fn new() -> Self {
            let out = GroupSession::new(SessionConfig::version_1());
            let mut keys = argus_crypto::megolm::SessionKeys::default();
            keys.insert(InboundGroupSession::new(&out.session_key(), SessionConfig::version_1()));
            Self { out, keys: Some(keys) }
        }

        /// An `m.room.encrypted` content carrying an `m.room.message` of `content`, with
        /// `relates_to` in clear beside the ciphertext when given.
        fn encrypt(&mut self, content: Value, relates_to: Option<Value>) -> Value {
            let payload = json!({ "type": "m.room.message", "room_id": ROOM, "content": content });
            let mut wire = json!({ "algorithm": argus_crypto::megolm::MEGOLM_ALGORITHM,
                "session_id": self.out.session_id(),
                "ciphertext": self.out.encrypt(payload.to_string()).to_base64() });
            if let Some(relation) = relates_to {
                wire["m.relates_to"] = relation;
            }
            wire
        }

        /// Normalises `events` (oldest first) as one page of a run given this device's keys.
        async fn read(&mut self, events: &[String]) -> (Normalised, FetchReport) {
            let raws: Vec<Raw<AnyTimelineEvent>> = events
                .iter()
                .map(|e| Raw::from_json(RawValue::from_string(e.clone()).unwrap_or_else(|e| panic!("{e}"))))
                .collect();
            let keys = self.keys.take().unwrap_or_else(|| panic!("one read per device"));
            let mut n = Normaliser::new(ROOM).with_keys(Box::new(keys), false);
            n.push_page(&raws).await;
            n.finish(false)
        }
    }

    const A: &str = "@a:a.fr";

    #[tokio::test]
    async fn a_decrypted_message_says_it_was_encrypted() {
        let mut device = Device::new();
        let hello = device.encrypt(json!({ "msgtype": "m.text", "body": "bonjour" }), None);
        let lost = Device::new().encrypt(json!({ "msgtype": "m.text", "body": "perdu" }), None);
        let (n, report) = device
            .read(&[
                event("m.room.encrypted", "$1", A, 1, hello),
                event("m.room.encrypted", "$2", A, 2, lost),
                event("m.room.message", "$3", A, 3, json!({ "msgtype": "m.text", "body": "en clair" })),
            ])
            .await;
        let flags: Vec<_> =
            n.messages.iter().map(|m| (m.encrypted, m.decrypted, m.body.as_deref())).collect();
        assert_eq!(
            flags,
            [(true, true, Some("bonjour")), (true, false, None), (false, false, Some("en clair"))]
        );
        // Kept without body: only the undecrypted one.
        assert_eq!((report.encrypted, report.decrypted), (1, 1));
    }

    /// A decryptor standing for a device: every ciphertext whose session it knows decrypts into
    /// a message with `trust`, the others stay encrypted for `reason`.
    struct Trusting {
        session: String,
        trust: argus_domain::SenderTrust,
        reason: argus_crypto::megolm::Undecryptable,
    }

    #[async_trait::async_trait]
    impl argus_crypto::Decryptor for Trusting {
        async fn decrypt_all(
            &mut self,
            _room_id: &str,
            events: &[argus_crypto::megolm::EncryptedEvent<'_>],
        ) -> Vec<argus_crypto::megolm::Decrypted> {
            events
                .iter()
                .enumerate()
                .map(|(i, e)| {
                    // The whole event is handed over, not only its content.
                    let whole: Value = serde_json::from_str(e.json).unwrap_or_default();
                    assert_eq!(whole["content"]["ciphertext"].as_str(), e.content.ciphertext.as_deref());
                    if e.content.session_id.as_deref() != Some(self.session.as_str()) {
                        return Err(self.reason);
                    }
                    Ok(argus_crypto::megolm::DecryptedEvent {
                        event_type: "m.room.message".to_owned(),
                        content: json!({ "msgtype": "m.text", "body": format!("n{i}") }),
                        message_index: u32::try_from(i).unwrap_or(u32::MAX),
                        sender_trust: self.trust,
                    })
                })
                .collect()
        }
    }

    #[tokio::test]
    async fn a_decrypted_message_carries_its_devices_trust_and_a_sealed_one_an_unknown_device() {
        use argus_domain::SenderTrust;
        let sealed = |session: &str| {
            json!({ "algorithm": argus_crypto::megolm::MEGOLM_ALGORITHM, "session_id": session,
                    "ciphertext": "AwgA", "sender_key": "k" })
        };
        let raws: Vec<Raw<AnyTimelineEvent>> = [
            event("m.room.encrypted", "$known", A, 1, sealed("known")),
            event("m.room.encrypted", "$withheld", A, 2, sealed("other")),
            event("m.room.message", "$clear", A, 3, json!({ "msgtype": "m.text", "body": "en clair" })),
        ]
        .iter()
        .map(|e| Raw::from_json(RawValue::from_string(e.clone()).unwrap_or_else(|e| panic!("{e}"))))
        .collect();
        let device = Trusting {
            session: "known".to_owned(),
            trust: SenderTrust::Verified,
            reason: argus_crypto::megolm::Undecryptable::WithheldUnverified,
        };
        let mut n = Normaliser::new(ROOM).with_keys(Box::new(device), false);
        n.push_page(&raws).await;
        let (norm, report) = n.finish(false);
        let seen: Vec<_> = norm
            .messages
            .iter()
            .map(|m| (m.event_id.as_str(), m.sender_trust, m.undecryptable.as_deref()))
            .collect();
        assert_eq!(
            seen,
            [
                ("$known", SenderTrust::Verified, None),
                ("$withheld", SenderTrust::UnknownDevice, Some("WITHHELD_UNVERIFIED")),
                ("$clear", SenderTrust::NotEncrypted, None),
            ]
        );
        assert_eq!(report.undecryptable.get("WITHHELD_UNVERIFIED"), Some(&1));

        // Without any decryptor, a ciphertext is an unknown device's too.
        let mut n = Normaliser::new(ROOM);
        n.push(&event("m.room.encrypted", "$x", A, 1, sealed("known")));
        let (norm, _) = n.finish(false);
        assert_eq!(norm.messages[0].sender_trust, SenderTrust::UnknownDevice);
    }

    /// A real client's encrypted edit: the relation in clear beside the ciphertext (some clients
    /// keep it inside too), the fallback body `"* …"` and `m.new_content` inside. The new
    /// content is applied, as for an edit in clear, to the message and to its version; an edit
    /// of a decrypted original outside the batch carries the new content to the store.
    #[tokio::test]
    async fn an_encrypted_edit_applies_its_new_content_not_its_fallback() {
        let mut device = Device::new();
        let edit = |device: &mut Device, target: &str, new: &str, inside: bool| {
            let relation = json!({ "rel_type": "m.replace", "event_id": target });
            let mut content = json!({ "msgtype": "m.text", "body": format!("* {new}"),
                                      "m.new_content": { "msgtype": "m.text", "body": new } });
            if inside {
                content["m.relates_to"] = relation.clone();
            }
            device.encrypt(content, Some(relation))
        };
        let original = device
            .encrypt(json!({ "msgtype": "m.text", "body": "Réunion chiffrée à 14h — préfecture" }), None);
        let first = edit(&mut device, "$o", "Réunion chiffrée à 15h — préfecture", false);
        let second = edit(&mut device, "$o", "Réunion chiffrée à 16h — préfecture", true);
        let outside = edit(&mut device, "$earlier", "Point à 17h", true);
        let clear = json!({ "msgtype": "m.text", "body": "* Point en clair à 18h",
                            "m.new_content": { "msgtype": "m.text", "body": "Point en clair à 18h" },
                            "m.relates_to": { "rel_type": "m.replace", "event_id": "$c" } });
        let (n, report) = device
            .read(&[
                event("m.room.encrypted", "$o", A, 1, original),
                event("m.room.encrypted", "$e1", A, 2, first),
                event("m.room.encrypted", "$e2", A, 3, second),
                event("m.room.encrypted", "$e3", A, 4, outside),
                event("m.room.message", "$c", A, 5, json!({ "msgtype": "m.text", "body": "Point en clair" })),
                event("m.room.message", "$e4", A, 6, clear),
            ])
            .await;
        assert_eq!(n.messages.len(), 2, "edits are not messages");
        let m = &n.messages[0];
        assert_eq!(m.body.as_deref(), Some("Réunion chiffrée à 16h — préfecture"));
        assert!(m.edited && m.encrypted && m.decrypted);
        let versions: Vec<_> = m.versions.iter().map(|v| v.body.as_deref()).collect();
        assert_eq!(
            versions,
            [
                Some("Réunion chiffrée à 14h — préfecture"),
                Some("Réunion chiffrée à 15h — préfecture"),
                Some("Réunion chiffrée à 16h — préfecture"),
            ]
        );
        assert_eq!(n.messages[1].body.as_deref(), Some("Point en clair à 18h"));
        let outside: Vec<_> = n.edits.iter().map(|e| (e.target.as_str(), e.body.as_deref())).collect();
        assert_eq!(outside, [("$earlier", Some("Point à 17h"))]);
        assert_eq!(report.edits_applied, 3);
    }

    /// A real client's encrypted attachment: the `EncryptedFile` is inside the ciphertext, known
    /// only once decrypted; a decrypted sticker keeps its file too.
    #[tokio::test]
    async fn a_decrypted_attachment_keeps_its_encrypted_file() {
        let mut device = Device::new();
        let file = json!({ "url": "mxc://a.fr/cipher", "iv": "X85+XgHN+HEAAAAAAAAAAA", "v": "v2",
            "key": { "kty": "oct", "key_ops": ["encrypt", "decrypt"], "alg": "A256CTR",
                     "k": "qcHVMSgYg-71CauWBezXI5qkaRb0LuIy-Wx5kIaHMIA", "ext": true },
            "hashes": { "sha256": "5qG4fFnbbVdlAB1Q72JDKwCagV6Dbkx9uds4rSak37c" } });
        let pdf = device.encrypt(
            json!({ "msgtype": "m.file", "body": "note.pdf", "file": file.clone(),
                    "info": { "mimetype": "application/pdf", "size": 4096 } }),
            None,
        );
        let sticker = {
            let payload = json!({ "type": "m.sticker", "room_id": ROOM,
                                  "content": { "body": "pouce", "file": file, "info": { "mimetype": "image/png" } } });
            json!({ "algorithm": argus_crypto::megolm::MEGOLM_ALGORITHM, "session_id": device.out.session_id(),
                    "ciphertext": device.out.encrypt(payload.to_string()).to_base64() })
        };
        let (n, report) = device
            .read(&[
                event("m.room.encrypted", "$pdf", A, 1, pdf),
                event("m.room.encrypted", "$sticker", A, 2, sticker),
            ])
            .await;
        assert_eq!(report.decrypted, 2);
        let media = n.messages[0].media.clone().unwrap_or_else(|| panic!("no media"));
        assert!(n.messages[0].encrypted && n.messages[0].decrypted);
        assert_eq!(media.uri, None);
        assert_eq!(media.mxc_uri(), Some("mxc://a.fr/cipher"));
        assert_eq!(
            media.file.as_ref().map(|f| f.key.k.as_str()),
            Some("qcHVMSgYg-71CauWBezXI5qkaRb0LuIy-Wx5kIaHMIA")
        );
        assert_eq!((media.filename.as_deref(), media.size), (Some("note.pdf"), Some(4096)));
        let sticker = &n.messages[1];
        assert_eq!((sticker.msgtype.as_deref(), sticker.body.as_deref()), (Some("m.sticker"), Some("pouce")));
        assert_eq!(sticker.media.as_ref().and_then(|m| m.mxc_uri()), Some("mxc://a.fr/cipher"));
    }

    #[tokio::test]
    async fn ciphertexts_are_read_as_clients_show_them() {
        let mut out = GroupSession::new(SessionConfig::version_1());
        let mut keys = argus_crypto::megolm::SessionKeys::default();
        keys.insert(InboundGroupSession::new(&out.session_key(), SessionConfig::version_1()));
        let session = out.session_id();
        let mut enc = |payload: Value| {
            json!({ "algorithm": argus_crypto::megolm::MEGOLM_ALGORITHM, "session_id": session,
                    "ciphertext": out.encrypt(payload.to_string()).to_base64() })
        };
        let hello = enc(json!({ "type": "m.room.message", "room_id": ROOM,
                                "content": { "msgtype": "m.text", "body": "bonjour" } }));
        // A relation inside the ciphertext is not the one clients show: ignored.
        let hidden_edit = enc(json!({ "type": "m.room.message", "room_id": ROOM, "content": {
            "msgtype": "m.text", "body": "* réécrit", "m.new_content": { "msgtype": "m.text", "body": "réécrit" },
            "m.relates_to": { "rel_type": "m.replace", "event_id": "$1" } } }));
        // A redaction the homeserver never applied.
        let hidden_redaction =
            enc(json!({ "type": "m.room.redaction", "room_id": ROOM, "content": { "redacts": "$1" } }));
        let a = "@a:a.fr";
        let events = [
            event("m.room.encrypted", "$1", a, 1, hello.clone()),
            event("m.room.encrypted", "$2", a, 2, hidden_edit),
            event("m.room.encrypted", "$3", a, 3, hidden_redaction),
            // The first ciphertext served again as another event.
            event("m.room.encrypted", "$4", a, 4, hello.clone()),
            // Not an object at all: refused, never a panic.
            json!(["m.room.encrypted", hello]).to_string(),
        ];
        let raws: Vec<Raw<AnyTimelineEvent>> = events
            .iter()
            .map(|e| Raw::from_json(RawValue::from_string(e.clone()).unwrap_or_else(|e| panic!("{e}"))))
            .collect();
        let mut n = Normaliser::new(ROOM).with_keys(Box::new(keys), false);
        n.push_page(&raws).await;
        let (norm, report) = n.finish(false);
        let by = |id: &str| norm.messages.iter().find(|m| m.event_id.as_str() == id).cloned();
        let first = by("$1").unwrap_or_else(|| panic!("$1"));
        assert!(first.decrypted && !first.edited && first.body.as_deref() == Some("bonjour"));
        let second = by("$2").unwrap_or_else(|| panic!("$2"));
        assert!(second.decrypted && second.body.as_deref() == Some("* réécrit"));
        assert_eq!(by("$3").and_then(|m| m.undecryptable).as_deref(), Some("UNSUPPORTED_EVENT_TYPE"));
        assert_eq!(by("$4").and_then(|m| m.undecryptable).as_deref(), Some("REPLAYED"));
        assert_eq!(report.decrypted, 2);
    }
}
