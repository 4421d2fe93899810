//! The edges of a page of messages, resolved in one pass when their selection is plain.
//!
//! Juniper resolves every field of every edge through its own sub-executor: on a page of 100
//! messages that is 1,200 executors, argument maps and ordered-map inserts, most of a request's
//! cost (docs/benchmarks.md). When the selection below `edges` holds only plain fields (no
//! arguments, directives, fragments or repeated response keys) of the message's scalar fields,
//! this module writes the same values in the same order directly; any other selection (the
//! `versions` list, the `attachment` object, a fragment, `@skip`, an alias used twice) goes
//! through Juniper as before.
//! The test `plain_edges_answer_as_the_executor_does` holds the two to the same output.

use juniper::{Executor, Object, ScalarValue, Selection, Value};

use super::{
    message::{TchapMessage, TchapMessageEdge},
    scalars::{DateTime, date_time_text, opaque_id},
    sync_list::ResolvePlain,
};
use crate::Context;

impl<S: ScalarValue> ResolvePlain<S> for TchapMessageEdge {
    fn resolve_plain(
        items: &[Self],
        selection_set: Option<&[Selection<'_, S>]>,
        executor: &Executor<'_, '_, Context, S>,
    ) -> Option<Value<S>> {
        resolve(items, selection_set, executor.context())
    }
}

/// A field of `TchapMessage` this module resolves.
#[derive(Debug, Clone, Copy)]
enum NodeField {
    Typename,
    Id,
    EventId,
    RoomId,
    Sender,
    Msgtype,
    Body,
    SentAt,
    Classification,
    Edited,
    Redacted,
    Encrypted,
    Decrypted,
    UndecryptableReason,
    SenderTrust,
    ReplyTo,
    ThreadRoot,
    MediaUri,
    MediaMimetype,
    RedactedBy,
    RedactedAt,
    RedactionReason,
    HeldBody,
    HeldMediaUri,
    HeldMediaMimetype,
}

/// Every field of `TchapMessage` this module resolves, by name. The test
/// `the_fast_path_and_the_schema_list_the_same_message_fields` holds it to the type's fields in
/// the schema, so that neither side gains a field the other lacks.
const NODE_FIELDS: [(&str, NodeField); 25] = [
    ("__typename", NodeField::Typename),
    ("id", NodeField::Id),
    ("eventId", NodeField::EventId),
    ("roomId", NodeField::RoomId),
    ("sender", NodeField::Sender),
    ("msgtype", NodeField::Msgtype),
    ("body", NodeField::Body),
    ("sentAt", NodeField::SentAt),
    ("classification", NodeField::Classification),
    ("edited", NodeField::Edited),
    ("redacted", NodeField::Redacted),
    ("encrypted", NodeField::Encrypted),
    ("decrypted", NodeField::Decrypted),
    ("undecryptableReason", NodeField::UndecryptableReason),
    ("senderTrust", NodeField::SenderTrust),
    ("replyTo", NodeField::ReplyTo),
    ("threadRoot", NodeField::ThreadRoot),
    ("mediaUri", NodeField::MediaUri),
    ("mediaMimetype", NodeField::MediaMimetype),
    ("redactedBy", NodeField::RedactedBy),
    ("redactedAt", NodeField::RedactedAt),
    ("redactionReason", NodeField::RedactionReason),
    ("heldBody", NodeField::HeldBody),
    ("heldMediaUri", NodeField::HeldMediaUri),
    ("heldMediaMimetype", NodeField::HeldMediaMimetype),
];

impl NodeField {
    fn of(name: &str) -> Option<Self> {
        NODE_FIELDS.iter().find(|(known, _)| *known == name).map(|(_, field)| *field)
    }

    fn value<S: ScalarValue>(self, node: &TchapMessage, context: &Context) -> Value<S> {
        let m = &node.0.message;
        let text = |s: Option<&str>| s.map_or_else(Value::null, |s| Value::scalar(s.to_owned()));
        match self {
            Self::Typename => Value::scalar("TchapMessage".to_owned()),
            Self::Id => {
                Value::scalar(Box::<str>::from(opaque_id(context, "TchapMessage", node.0.id)).into_string())
            }
            Self::EventId => Value::scalar(m.event_id.as_str().to_owned()),
            Self::RoomId => Value::scalar(node.0.room_id.as_str().to_owned()),
            Self::Sender => Value::scalar(m.sender.as_str().to_owned()),
            Self::Msgtype => text(m.msgtype.as_deref()),
            Self::Body => text(m.body.as_deref()),
            Self::SentAt => Value::scalar(date_time_text(&DateTime(m.sent_at))),
            // The enum's GraphQL names are the contract names (`GqlClassification`).
            Self::Classification => Value::scalar(node.0.classification.as_str().to_owned()),
            Self::Edited => Value::scalar(m.edited),
            Self::Redacted => Value::scalar(m.redacted),
            Self::Encrypted => Value::scalar(m.was_encrypted()),
            Self::Decrypted => Value::scalar(m.decrypted),
            Self::UndecryptableReason => text(m.undecryptable.as_deref()),
            // The enum's GraphQL names are the codes (`GqlSenderTrust`).
            Self::SenderTrust => Value::scalar(m.sender_trust.code().to_owned()),
            Self::ReplyTo => text(m.reply_to.as_ref().map(|e| e.as_str())),
            Self::ThreadRoot => text(m.thread_root.as_ref().map(|e| e.as_str())),
            Self::MediaUri => text(m.media.as_ref().and_then(|x| x.uri.as_deref())),
            Self::MediaMimetype => text(m.media.as_ref().and_then(|x| x.mimetype.as_deref())),
            Self::RedactedBy => text(m.redaction.as_ref().map(|r| r.redacted_by.as_str())),
            Self::RedactedAt => m
                .redaction
                .as_ref()
                .map_or_else(Value::null, |r| Value::scalar(date_time_text(&DateTime(r.redacted_at)))),
            Self::RedactionReason => text(m.redaction.as_ref().and_then(|r| r.reason.as_deref())),
            // Held content is in the record only when the store read it for a caller who may see it.
            Self::HeldBody => text(node.0.held.as_ref().and_then(|h| h.body.as_deref())),
            Self::HeldMediaUri => {
                text(node.0.held.as_ref().and_then(|h| h.media.as_ref()).and_then(|x| x.uri.as_deref()))
            }
            Self::HeldMediaMimetype => {
                text(node.0.held.as_ref().and_then(|h| h.media.as_ref()).and_then(|x| x.mimetype.as_deref()))
            }
        }
    }
}

/// A field of `TchapMessageEdge`.
#[derive(Debug)]
enum EdgeField<'a> {
    Typename,
    Cursor,
    Node(Vec<(&'a str, NodeField)>),
}

/// One plain field: its response key, its name, the selection below it.
type PlainField<'a, S> = (&'a str, &'a str, Option<&'a [Selection<'a, S>]>);

/// The response key and the selection below each field of `set`, when every selection in it
/// is a field without arguments or directives and no response key repeats.
fn plain<'a, S>(set: &'a [Selection<'a, S>]) -> Option<Vec<PlainField<'a, S>>> {
    let mut out: Vec<PlainField<'a, S>> = Vec::with_capacity(set.len());
    for selection in set {
        let Selection::Field(field) = selection else {
            return None;
        };
        let field = &field.item;
        if field.arguments.is_some() || field.directives.is_some() {
            return None;
        }
        let key = field.alias.as_ref().map_or(field.name.item, |a| a.item);
        if out.iter().any(|(k, _, _)| *k == key) {
            return None;
        }
        out.push((key, field.name.item, field.selection_set.as_deref()));
    }
    Some(out)
}

/// The edges as Juniper would answer them, or `None` when the selection is not plain.
fn resolve<S: ScalarValue>(
    edges: &[TchapMessageEdge],
    selection: Option<&[Selection<'_, S>]>,
    context: &Context,
) -> Option<Value<S>> {
    let mut plan = Vec::new();
    for (key, name, below) in plain(selection?)? {
        let field = match (name, below) {
            ("__typename", None) => EdgeField::Typename,
            ("cursor", None) => EdgeField::Cursor,
            ("node", Some(below)) => {
                let node = plain(below)?
                    .into_iter()
                    .map(|(key, name, below)| match below {
                        None => NodeField::of(name).map(|f| (key, f)),
                        Some(_) => None,
                    })
                    .collect::<Option<Vec<_>>>()?;
                EdgeField::Node(node)
            }
            _ => return None,
        };
        plan.push((key, field));
    }
    let items = edges
        .iter()
        .map(|edge| {
            let mut object = Object::with_capacity(plan.len());
            for (key, field) in &plan {
                let value = match field {
                    EdgeField::Typename => Value::scalar("TchapMessageEdge".to_owned()),
                    EdgeField::Cursor => Value::scalar(edge.cursor.clone()),
                    EdgeField::Node(fields) => {
                        let mut node = Object::with_capacity(fields.len());
                        for (key, f) in fields {
                            node.add_field(*key, f.value(&edge.node, context));
                        }
                        Value::object(node)
                    }
                };
                object.add_field(*key, value);
            }
            Value::object(object)
        })
        .collect();
    Some(Value::list(items))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use juniper::meta::MetaType;

    use super::NODE_FIELDS;
    use crate::{SchemaOptions, build_schema};

    /// The fields of `TchapMessage` the fast path leaves to the executor (not plain values).
    const EXECUTOR_ONLY: [&str; 2] = ["versions", "attachment"];

    #[test]
    fn the_fast_path_and_the_schema_list_the_same_message_fields() {
        let schema = build_schema(SchemaOptions::default());
        let Some(MetaType::Object(message)) = schema.schema.concrete_type_by_name("TchapMessage") else {
            panic!("TchapMessage is not an object type of the schema");
        };
        let registered: BTreeSet<&str> = message.fields.iter().map(|f| f.name.as_str()).collect();
        let fast: BTreeSet<&str> = NODE_FIELDS.iter().map(|(name, _)| *name).collect();
        let executor: BTreeSet<&str> = EXECUTOR_ONLY.into_iter().collect();
        assert!(fast.is_disjoint(&executor));
        assert_eq!(registered, &fast | &executor, "a field of TchapMessage is on one side only");
        // What the fast path answers is a plain value: no arguments, a scalar or enum, no list.
        for field in message.fields.iter().filter(|f| fast.contains(f.name.as_str())) {
            let leaf = schema.schema.concrete_type_by_name(field.field_type.innermost_name());
            assert!(field.arguments.is_none(), "{} takes arguments", field.name);
            assert!(leaf.is_some_and(MetaType::is_leaf), "{} is not a scalar or an enum", field.name);
            assert!(!field.field_type.is_list(), "{} is a list", field.name);
        }
    }
}
