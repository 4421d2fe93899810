//! Posting a note into a room: an `m.text` message with an HTML form when the note is
//! Markdown, as a reply (in the thread of the message it answers, when that one is in a
//! thread), sent with `PUT /rooms/{roomId}/send/m.room.message/{txnId}`
//! ([`crate::api::send_message_event`]), whose transaction id makes a retry idempotent.

use argus_domain::{EventId, RoomId};
use ruma::{
    OwnedEventId, OwnedRoomId,
    events::{
        relation::{InReplyTo, Reply, Thread},
        room::message::{Relation, RoomMessageEventContent},
    },
};

use crate::{Connector, Error, Result, Session, api::send_message_event};

/// The longest transaction id accepted.
pub const MAX_TXN_ID_LEN: usize = 64;

/// A note to post.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutgoingNote {
    /// The plain-text body, as clients without HTML show it.
    pub body: String,
    /// The HTML form (`org.matrix.custom.html`), when the note has formatting.
    pub html: Option<String>,
    /// The message it answers.
    pub reply_to: Option<EventId>,
    /// The thread of that message, when it is in one: the reply then goes into the thread.
    pub thread_root: Option<EventId>,
}

/// The HTML of a Markdown note, or `None` when it is plain text (its HTML would say nothing
/// more than the body). Raw HTML in the note is escaped, never passed through, links keep their
/// target only for `http`, `https` and `mailto`, and images are reduced to their alt text (no
/// remote fetch by the readers' clients): what the note says is what every client shows.
///
/// ```
/// use argus_matrix::markdown_to_html;
/// assert_eq!(markdown_to_html("plain words").as_deref(), None);
/// assert_eq!(markdown_to_html("**vite**").as_deref(), Some("<p><strong>vite</strong></p>"));
/// assert_eq!(markdown_to_html("<b>x</b> *y*").as_deref(), Some("<p>&lt;b&gt;x&lt;/b&gt; <em>y</em></p>"));
/// assert_eq!(markdown_to_html("[a](javascript:alert(1)) *b*").as_deref(), Some("<p>a <em>b</em></p>"));
/// assert_eq!(markdown_to_html("![plan](https://x.example/p.png) *b*").as_deref(), Some("<p>plan <em>b</em></p>"));
/// assert_eq!(
///     markdown_to_html("[doc](https://x.gouv.fr/d)").as_deref(),
///     Some("<p><a href=\"https://x.gouv.fr/d\">doc</a></p>")
/// );
/// ```
pub fn markdown_to_html(markdown: &str) -> Option<String> {
    use pulldown_cmark::{Event, Options, Parser, Tag, TagEnd, html};
    let allowed = |url: &str| {
        let scheme = url.split_once(':').map(|(s, _)| s.to_ascii_lowercase());
        matches!(scheme.as_deref(), Some("http" | "https" | "mailto"))
    };
    let mut plain = true;
    // For each open link, whether it was dropped (its end is dropped too).
    let mut links: Vec<bool> = Vec::new();
    let events = Parser::new_ext(markdown, Options::ENABLE_STRIKETHROUGH | Options::ENABLE_TABLES)
        .filter_map(|e| {
            let e = match e {
                Event::Html(raw) | Event::InlineHtml(raw) => Event::Text(raw),
                Event::Start(Tag::Link { dest_url, .. }) if !allowed(&dest_url) => {
                    links.push(true);
                    return None;
                }
                Event::Start(link @ Tag::Link { .. }) => {
                    links.push(false);
                    Event::Start(link)
                }
                Event::End(TagEnd::Link) if links.pop().unwrap_or(false) => return None,
                Event::Start(Tag::Image { .. }) | Event::End(TagEnd::Image) => return None,
                other => other,
            };
            match &e {
                Event::Text(_)
                | Event::SoftBreak
                | Event::Start(Tag::Paragraph)
                | Event::End(TagEnd::Paragraph) => {}
                _ => plain = false,
            }
            Some(e)
        });
    let mut out = String::with_capacity(markdown.len() + 32);
    html::push_html(&mut out, events);
    let out = out.trim_end().to_owned();
    (!plain).then_some(out)
}

/// `text` as HTML text (escaped by pulldown-cmark's own escaper, as in [`markdown_to_html`]).
///
/// ```
/// assert_eq!(argus_matrix::escape_html("[DR] <b>&"), "[DR] &lt;b&gt;&amp;");
/// ```
pub fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 8);
    pulldown_cmark::html::push_html(&mut out, std::iter::once(pulldown_cmark::Event::Text(text.into())));
    out
}

/// Checks a transaction id: 1 to 64 characters of `A-Z a-z 0-9 . _ ~ -`.
pub fn check_transaction_id(txn_id: &str) -> Result<()> {
    let ok = !txn_id.is_empty()
        && txn_id.len() <= MAX_TXN_ID_LEN
        && txn_id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'~' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidInput(format!(
            "the transaction id must be 1 to {MAX_TXN_ID_LEN} characters of A-Z, a-z, 0-9, '.', '_', '~', '-'"
        )))
    }
}

impl Connector {
    /// Posts `note` into `room_id` under transaction `txn_id`, with the session's token, under
    /// the outbound policy; returns the event id the homeserver gave it. Sending the same
    /// transaction again with the same token returns the same event.
    pub async fn post_note(
        &self,
        session: &Session,
        room_id: &RoomId,
        txn_id: &str,
        note: &OutgoingNote,
    ) -> Result<EventId> {
        check_transaction_id(txn_id)?;
        let room = OwnedRoomId::try_from(room_id.as_str())
            .map_err(|_| Error::InvalidInput("the room id is not a valid Matrix room id".into()))?;
        let event = |id: &EventId| {
            OwnedEventId::try_from(id.as_str())
                .map_err(|_| Error::InvalidInput("replyTo is not a valid Matrix event id".into()))
        };
        let mut content = match &note.html {
            Some(html) => RoomMessageEventContent::text_html(note.body.clone(), html.clone()),
            None => RoomMessageEventContent::text_plain(note.body.clone()),
        };
        content.relates_to = match (&note.reply_to, &note.thread_root) {
            (Some(reply), Some(root)) => Some(Relation::Thread(Thread::reply(event(root)?, event(reply)?))),
            (Some(reply), None) => Some(Relation::Reply(Reply::new(InReplyTo::new(event(reply)?)))),
            (None, _) => None,
        };
        let client = self.http();
        let target = client.target(session, client.config.run_deadline)?;
        let event_id = send_message_event::send(client, &target, room, txn_id, &content).await?;
        event_id.as_str().parse().map_err(|_| Error::malformed("the homeserver gave an invalid event id"))
    }
}
