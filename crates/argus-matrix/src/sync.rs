//! Live capture's `/sync`: one long-poll of all of an account's rooms ([`Connector::sync`]),
//! through the archive's filter ([`Connector::create_sync_filter`]), reduced to what the live
//! loop needs: the position to continue from, the joined rooms with new events (to be read by
//! the room reader from their own positions), the rooms left or banned from, and the invites;
//! and what the answer says to the account's device ([`SyncChanges`]: its to-device events as
//! raw JSON, device list changes, key counts). No room event body is kept: the filter asks for
//! none (to-device events cannot be filtered, and none is left out).
//!
//! A long-poll is bounded apart from other requests: each request may last the poll's timeout
//! plus the configured request timeout (the homeserver computes its answer after the poll), and
//! its answer may be as large as [`MAX_SYNC_RESPONSE_BYTES`] (a first sync lists every joined
//! room with up to 20 events each).

use std::time::Duration;

use argus_crypto::device::SyncChanges;
use argus_domain::{Membership, RoomId};
use ruma::{
    MilliSecondsSinceUnixEpoch, OwnedRoomId, OwnedUserId, UserId,
    api::client::sync::sync_events::v3::{Rooms, State},
    events::{
        StrippedStateEvent,
        room::{
            member::{MembershipState, PossiblyRedactedRoomMemberEventContent},
            tombstone::PossiblyRedactedRoomTombstoneEventContent,
        },
    },
    serde::Raw,
};
use time::OffsetDateTime;

use crate::{
    Connector, Error, MAX_JOINED_ROOMS, Result, Session,
    api::{create_filter, sync_events, whoami},
    transport::RequestBounds,
};

/// The largest `/sync` answer accepted, in bytes (unless the configured
/// [`max_response_bytes`](crate::ConnectorConfig::max_response_bytes) is larger): more than a
/// page of messages, since a first sync lists every joined room with its latest events (their
/// bodies left out by the filter). Past it the sync fails with
/// [`Error::ResponseTooLarge`].
pub const MAX_SYNC_RESPONSE_BYTES: usize = 32 * 1024 * 1024;

/// The longest long-poll timeout a [`SyncRequest`] may ask for.
pub const MAX_SYNC_TIMEOUT: Duration = Duration::from_secs(300);

/// The longest `since` position, filter id or `prev_batch` taken or handed over, in bytes.
const MAX_POSITION_LEN: usize = 1024;

/// The most to-device events one answer hands over ([`SyncUpdate::device`]); the rest are
/// left out, counted in [`SyncUpdate::to_device_dropped`] and warned about. (A homeserver
/// sends at most 100 an answer, Synapse's limit; refusing a larger answer instead would stop the
/// account's loop for good, since the same position would bring the same answer.)
pub const MAX_TO_DEVICE_EVENTS: usize = 1_000;

/// One `/sync` to make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncRequest {
    /// The position to continue from (the `next_batch` of the previous sync); `None`: the
    /// first sync, which lists every joined room and answers at once.
    pub since: Option<String>,
    /// The stored filter ([`Connector::create_sync_filter`]); `None`: the homeserver's default
    /// (every event, whole bodies).
    pub filter_id: Option<String>,
    /// How long the homeserver may hold the request open while nothing happens (at most
    /// [`MAX_SYNC_TIMEOUT`]; zero answers at once).
    pub timeout: Duration,
}

/// What a `/sync` answered, reduced to what the live loop needs (no event bodies are kept: the
/// rooms are read by the room reader).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncUpdate {
    /// Where the next sync continues from (`since`).
    pub next_batch: String,
    /// Every joined room of the answer (the first sync: every joined room), by room id.
    pub joined: Vec<JoinedRoomUpdate>,
    /// The rooms left, kicked from or banned from since `since`, by room id.
    pub left: Vec<LeftRoom>,
    /// The rooms the account was invited to, by room id (never accepted).
    pub invited: Vec<InvitedRoom>,
    /// Timeline events of the answer's joined and left rooms.
    pub events: u64,
    /// What the homeserver gave that is not valid and was left out: a room id of a section, a
    /// tombstone's replacement room, a membership event that is not one.
    pub malformed_skipped: u64,
    /// What the answer says to the account's device: its to-device events (at most
    /// [`MAX_TO_DEVICE_EVENTS`], each its raw JSON), whose device lists changed or left, its
    /// one-time key counts and unused fallback key types, and the answer's `next_batch`.
    pub device: SyncChanges,
    /// To-device events left out past [`MAX_TO_DEVICE_EVENTS`].
    pub to_device_dropped: u64,
}

/// A joined room in a `/sync` answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinedRoomUpdate {
    /// The room.
    pub room_id: RoomId,
    /// Events of its timeline in the answer (at most the filter's limit, 20: more happened when
    /// `limited`).
    pub new_events: u32,
    /// The timeline has a gap: events between `since` and it were left out (read them from the
    /// room's own position, or backwards from `prev_batch`).
    pub limited: bool,
    /// Where its timeline in the answer begins, as a `/messages` token (backwards from it lies
    /// what was left out).
    pub prev_batch: Option<String>,
    /// The room that replaces it (`m.room.tombstone` in its timeline or state).
    pub successor: Option<RoomId>,
}

/// A room the account left or was removed from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeftRoom {
    /// The room.
    pub room_id: RoomId,
    /// [`Membership::Ban`] when the account was banned, else [`Membership::Leave`] (left or
    /// kicked).
    pub membership: Membership,
    /// Who changed the account's membership (the account itself when it left), if the answer
    /// carried the event.
    pub by: Option<String>,
    /// When, as that event's `origin_server_ts` says.
    pub at: Option<OffsetDateTime>,
    /// That event's id, if the answer carried it: a read of the room's timeline up to the
    /// account's departure stops there ([`crate::FetchOptions::stop_after`]).
    pub event_id: Option<String>,
}

/// A room the account was invited to (the invite is never accepted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvitedRoom {
    /// The room.
    pub room_id: RoomId,
    /// Who invited the account, if the invite's state carried the event.
    pub inviter: Option<String>,
    /// When, if the homeserver gave the invite's timestamp.
    pub at: Option<OffsetDateTime>,
}

impl Connector {
    /// One `/sync` (long-poll up to `request.timeout`).
    ///
    /// Each request may last `request.timeout` plus the configured request timeout, the whole
    /// call (retries included) `request.timeout` plus the configured run deadline; the answer
    /// may be up to [`MAX_SYNC_RESPONSE_BYTES`]. At most [`MAX_JOINED_ROOMS`] rooms per section
    /// ([`Error::BudgetExceeded`] past it). Rooms left or invited to are told apart by the
    /// account's own membership event: when the answer has any, the account is asked for with
    /// `whoami` (one request more).
    pub async fn sync(&self, session: &Session, request: &SyncRequest) -> Result<SyncUpdate> {
        request.check()?;
        let client = self.http();
        let config = &client.config;
        let bounds = RequestBounds {
            timeout: request.timeout + config.request_timeout,
            max_response_bytes: config.max_response_bytes.max(MAX_SYNC_RESPONSE_BYTES),
        };
        let within = request.timeout + config.run_deadline.max(config.request_timeout);
        let target = client.target_with(session, within, bounds)?;
        let (response, unstable) = sync_events::fetch(
            client,
            &target,
            request.since.clone(),
            request.filter_id.clone(),
            request.timeout,
        )
        .await?;
        let rooms = &response.rooms;
        check_counts(rooms)?;
        let own = if rooms.leave.is_empty() && rooms.invite.is_empty() {
            None
        } else {
            let target = client.target(session, config.run_deadline)?;
            Some(whoami::fetch(client, &target).await?)
        };
        let update = reduce(response, unstable, own.as_deref())?;
        if update.to_device_dropped > 0 {
            tracing::warn!(
                kept = MAX_TO_DEVICE_EVENTS,
                dropped = update.to_device_dropped,
                "the sync answer had more to-device events than are taken; the rest were left out"
            );
        }
        tracing::debug!(
            joined = update.joined.len(),
            left = update.left.len(),
            invited = update.invited.len(),
            events = update.events,
            to_device = update.device.to_device.len(),
            changed_devices = update.device.changed_devices.len(),
            malformed = update.malformed_skipped,
            "synced"
        );
        Ok(update)
    }

    /// Uploads the archive's filter for `user_id`; its id.
    ///
    /// The filter keeps each room's timeline to the events the archive keeps (messages,
    /// encrypted events, redactions, stickers, and the state events the room reader reads), at
    /// most 20 per room, members lazily loaded; presence, account data, receipts and typing
    /// left out; of each event only its type, state key, sender, time, id, and the membership
    /// or replacement room of its content.
    pub async fn create_sync_filter(&self, session: &Session, user_id: &str) -> Result<String> {
        let user = OwnedUserId::try_from(user_id)
            .map_err(|_| Error::InvalidInput("the user id is not a valid Matrix user id".into()))?;
        let client = self.http();
        let target = client.target(session, client.config.run_deadline)?;
        let id = create_filter::create(client, &target, user, create_filter::archive_filter()).await?;
        if !is_filter_id(&id) {
            return Err(Error::malformed("the homeserver gave a filter id that cannot be used"));
        }
        Ok(id)
    }
}

impl SyncRequest {
    /// Refuses a request that cannot be sent: a position or filter id empty, too long or with
    /// control characters, a timeout over [`MAX_SYNC_TIMEOUT`].
    fn check(&self) -> Result<()> {
        if self.since.as_deref().is_some_and(|s| !is_position(s)) {
            return Err(Error::InvalidInput(format!(
                "the sync position must be 1 to {MAX_POSITION_LEN} printable bytes"
            )));
        }
        if self.filter_id.as_deref().is_some_and(|f| !is_filter_id(f)) {
            return Err(Error::InvalidInput("the filter id is not one a homeserver gives".into()));
        }
        if self.timeout > MAX_SYNC_TIMEOUT {
            return Err(Error::InvalidInput(format!(
                "the sync timeout must be at most {} s",
                MAX_SYNC_TIMEOUT.as_secs()
            )));
        }
        Ok(())
    }
}

/// A position (`since`, `next_batch`, `prev_batch`) that can be stored and sent back.
fn is_position(token: &str) -> bool {
    !token.is_empty() && token.len() <= MAX_POSITION_LEN && !token.chars().any(char::is_control)
}

/// A filter id that can be sent back: a position, and not what a homeserver would read as a
/// whole filter definition (JSON).
fn is_filter_id(id: &str) -> bool {
    is_position(id) && !id.starts_with('{')
}

/// Refuses an answer with more than [`MAX_JOINED_ROOMS`] rooms in a section.
fn check_counts(rooms: &Rooms) -> Result<()> {
    for (what, count) in [
        ("joined rooms", rooms.join.len()),
        ("left rooms", rooms.leave.len()),
        ("invited rooms", rooms.invite.len()),
    ] {
        if count > MAX_JOINED_ROOMS {
            return Err(Error::BudgetExceeded { what, limit: MAX_JOINED_ROOMS as u64 });
        }
    }
    Ok(())
}

/// Reduces an answer to what the loop needs. `own` is the account (needed when the answer has
/// left or invited rooms: their membership is the account's own event); `unstable` what the
/// answer said under unstable names only.
fn reduce(
    response: sync_events::Response,
    unstable: sync_events::Unstable,
    own: Option<&UserId>,
) -> Result<SyncUpdate> {
    if !is_position(&response.next_batch) {
        return Err(Error::malformed("the homeserver's next_batch is empty, too long or not printable"));
    }
    let to_device = response.to_device.events;
    let to_device_dropped = to_device.len().saturating_sub(MAX_TO_DEVICE_EVENTS) as u64;
    let device = SyncChanges {
        to_device: to_device.iter().take(MAX_TO_DEVICE_EVENTS).map(|e| e.json().get().to_owned()).collect(),
        changed_devices: response.device_lists.changed.into_iter().map(String::from).collect(),
        left_devices: response.device_lists.left.into_iter().map(String::from).collect(),
        one_time_keys_counts: response
            .device_one_time_keys_count
            .into_iter()
            .map(|(algorithm, count)| (algorithm.to_string(), u64::from(count)))
            .collect(),
        unused_fallback_key_types: response
            .device_unused_fallback_key_types
            .map(|types| types.into_iter().map(|t| t.to_string()).collect())
            .or(unstable.unused_fallback_key_types),
        next_batch: Some(response.next_batch.clone()),
    };
    let mut update =
        SyncUpdate { next_batch: response.next_batch, device, to_device_dropped, ..SyncUpdate::default() };
    let rooms = response.rooms;
    for (room, joined) in rooms.join {
        let Some(room_id) = domain_room(&room, &mut update.malformed_skipped) else { continue };
        let timeline = joined.timeline;
        update.events += timeline.events.len() as u64;
        // The newest tombstone: the timeline's, else the state's (before the timeline).
        let successor = successor(timeline.events.iter().rev())
            .or_else(|| successor(state_events(&joined.state).iter().rev()));
        let successor = match successor {
            Some(Ok(room)) => domain_room(&room, &mut update.malformed_skipped),
            Some(Err(())) => {
                update.malformed_skipped += 1;
                None
            }
            None => None,
        };
        update.joined.push(JoinedRoomUpdate {
            room_id,
            new_events: u32::try_from(timeline.events.len()).unwrap_or(u32::MAX),
            limited: timeline.limited,
            prev_batch: timeline.prev_batch.filter(|t| is_position(t)),
            successor,
        });
    }
    for (room, left) in rooms.leave {
        let Some(room_id) = domain_room(&room, &mut update.malformed_skipped) else { continue };
        update.events += left.timeline.events.len() as u64;
        // The newest of the account's membership events: the timeline's, else the state's.
        let skipped = &mut update.malformed_skipped;
        let member = own.and_then(|own| {
            own_membership(left.timeline.events.iter().rev(), own, skipped)
                .or_else(|| own_membership(state_events(&left.state).iter().rev(), own, skipped))
        });
        let (membership, by, at, event_id) = match member {
            Some(m) => {
                let membership =
                    if m.membership == MembershipState::Ban { Membership::Ban } else { Membership::Leave };
                (membership, Some(m.sender), m.at, m.event_id)
            }
            None => (Membership::Leave, None, None, None),
        };
        update.left.push(LeftRoom { room_id, membership, by, at, event_id });
    }
    for (room, invited) in rooms.invite {
        let Some(room_id) = domain_room(&room, &mut update.malformed_skipped) else { continue };
        let events = invited.invite_state.events.iter().rev();
        let invite = own
            .and_then(|own| own_membership(events, own, &mut update.malformed_skipped))
            .filter(|m| m.membership == MembershipState::Invite);
        update.invited.push(InvitedRoom {
            room_id,
            inviter: invite.as_ref().map(|m| m.sender.clone()),
            at: invite.and_then(|m| m.at),
        });
    }
    Ok(update)
}

/// A room id of the answer as the domain's, `None` (counted in `skipped`) when it is not valid.
fn domain_room(room: &OwnedRoomId, skipped: &mut u64) -> Option<RoomId> {
    let parsed = room.as_str().parse().ok();
    if parsed.is_none() {
        *skipped += 1;
    }
    parsed
}

/// The state events of a room's `state` (or `state_after`) section.
fn state_events(state: &State) -> &[Raw<ruma::events::AnySyncStateEvent>] {
    match state {
        State::Before(s) | State::After(s) => &s.events,
        // A form of a later version of the specification, not asked for.
        _ => &[],
    }
}

/// The event's `type`, if it has one.
fn event_type<T>(event: &Raw<T>) -> Option<String> {
    event.get_field::<String>("type").ok().flatten()
}

/// The replacement room of the first `m.room.tombstone` (state key `""`) of `events` (newest
/// first): `Err` when the event is not a valid tombstone. Only its sender, state key and content
/// are read (any state event, timeline or stripped, has them).
fn successor<'a, T: 'a>(mut events: impl Iterator<Item = &'a Raw<T>>) -> Option<Result<OwnedRoomId, ()>> {
    let is_tombstone = |e: &&Raw<T>| {
        event_type(e).as_deref() == Some("m.room.tombstone")
            && e.get_field::<String>("state_key").ok().flatten().is_some_and(|k| k.is_empty())
    };
    events.find(is_tombstone).and_then(|event| {
        match event
            .deserialize_as_unchecked::<StrippedStateEvent<PossiblyRedactedRoomTombstoneEventContent>>()
        {
            // A redacted tombstone names no room.
            Ok(tombstone) => tombstone.content.replacement_room.map(Ok),
            Err(_) => Some(Err(())),
        }
    })
}

/// The account's membership as one of its `m.room.member` events says.
struct OwnMembership {
    event_id: Option<String>,
    membership: MembershipState,
    sender: String,
    at: Option<OffsetDateTime>,
}

/// The first of `events` (newest first) that is `own`'s membership event; one that is not a
/// valid membership event is skipped and counted.
fn own_membership<'a, T: 'a>(
    events: impl Iterator<Item = &'a Raw<T>>,
    own: &UserId,
    skipped: &mut u64,
) -> Option<OwnMembership> {
    for event in events {
        if event_type(event).as_deref() != Some("m.room.member")
            || event.get_field::<String>("state_key").ok().flatten().as_deref() != Some(own.as_str())
        {
            continue;
        }
        let Ok(member) =
            event.deserialize_as_unchecked::<StrippedStateEvent<PossiblyRedactedRoomMemberEventContent>>()
        else {
            *skipped += 1;
            continue;
        };
        let at = event
            .get_field::<MilliSecondsSinceUnixEpoch>("origin_server_ts")
            .ok()
            .flatten()
            .and_then(|ts| i64::try_from(u64::from(ts.get())).ok())
            .and_then(|ms| argus_domain::from_unix_ms(ms).ok());
        let event_id = event.get_field::<String>("event_id").ok().flatten().filter(|id| id.starts_with('$'));
        return Some(OwnMembership {
            event_id,
            membership: member.content.membership,
            sender: member.sender.into(),
            at,
        });
    }
    None
}

#[cfg(test)]
mod tests {
    use ruma::{api::IncomingResponseExt as _, owned_user_id};
    use serde_json::{Value, json};

    use super::*;

    const ME: &str = "@moi:a.fr";

    fn answer(body: &Value) -> sync_events::Response {
        let body = body.to_string();
        let response =
            http::Response::builder().status(200).body(body.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
        sync_events::Response::try_from_http_response(response).unwrap_or_else(|e| panic!("{e}"))
    }

    fn reduced(body: &Value) -> SyncUpdate {
        let unstable = serde_json::from_value(body.clone()).unwrap_or_else(|e| panic!("{e}"));
        reduce(answer(body), unstable, Some(&owned_user_id!("@moi:a.fr"))).unwrap_or_else(|e| panic!("{e}"))
    }

    fn member(who: &str, sender: &str, membership: &str, ts: i64) -> Value {
        json!({"type": "m.room.member", "state_key": who, "sender": sender, "origin_server_ts": ts,
               "event_id": format!("$m{ts}"), "content": {"membership": membership}})
    }

    fn event(kind: &str, ts: i64) -> Value {
        json!({"type": kind, "sender": "@a:a.fr", "origin_server_ts": ts, "event_id": format!("$e{ts}")})
    }

    fn tombstone(room: &str, ts: i64) -> Value {
        json!({"type": "m.room.tombstone", "state_key": "", "sender": "@a:a.fr", "origin_server_ts": ts,
               "event_id": format!("$t{ts}"), "content": {"replacement_room": room}})
    }

    #[test]
    fn joined_rooms_count_their_events_and_name_their_successor() {
        let update = reduced(&json!({"next_batch": "s2", "rooms": {"join": {
            "!b:a.fr": {"timeline": {"events": [event("m.room.message", 1), event("m.room.message", 2)],
                                     "limited": true, "prev_batch": "t1"}},
            "!a:a.fr": {"timeline": {"events": [tombstone("!new:a.fr", 3)]}},
            "!c:a.fr": {"state": {"events": [tombstone("!later:a.fr", 4)]}, "timeline": {"events": [
                // Not the room's tombstone (a state key).
                {"type": "m.room.tombstone", "state_key": "x", "sender": "@a:a.fr", "content": {"replacement_room": "!x:a.fr"}},
            ]}},
        }}}));
        assert_eq!(update.next_batch, "s2");
        assert_eq!(update.events, 4);
        let rooms: Vec<_> = update.joined.iter().map(|r| r.room_id.as_str()).collect();
        assert_eq!(rooms, ["!a:a.fr", "!b:a.fr", "!c:a.fr"]);
        let [a, b, c] = &update.joined[..] else { panic!("{update:?}") };
        assert_eq!(a.successor.as_ref().map(RoomId::as_str), Some("!new:a.fr"));
        assert_eq!(
            (b.new_events, b.limited, b.prev_batch.as_deref(), b.successor.as_ref()),
            (2, true, Some("t1"), None)
        );
        assert_eq!((c.new_events, c.successor.as_ref().map(RoomId::as_str)), (1, Some("!later:a.fr")));
        assert_eq!(update.malformed_skipped, 0);
    }

    #[test]
    fn ban_kick_and_leave_are_told_apart_by_the_accounts_own_event() {
        let update = reduced(&json!({"next_batch": "s3", "rooms": {"leave": {
            // Someone else was banned earlier; the account was kicked.
            "!kick:a.fr": {"timeline": {"events": [member("@x:a.fr", "@a:a.fr", "ban", 1), member(ME, "@a:a.fr", "leave", 2)]}},
            "!ban:a.fr": {"timeline": {"events": [member(ME, "@a:a.fr", "ban", 3), event("m.room.message", 4)]}},
            "!self:a.fr": {"state": {"events": [member(ME, ME, "leave", 5)]}, "timeline": {"events": []}},
            "!none:a.fr": {"timeline": {"events": []}},
        }}}));
        let left: Vec<_> = update
            .left
            .iter()
            .map(|l| (l.room_id.as_str(), l.membership, l.by.as_deref(), l.at.map(argus_domain::to_unix_ms)))
            .collect();
        assert_eq!(
            left,
            [
                ("!ban:a.fr", Membership::Ban, Some("@a:a.fr"), Some(3)),
                ("!kick:a.fr", Membership::Leave, Some("@a:a.fr"), Some(2)),
                ("!none:a.fr", Membership::Leave, None, None),
                ("!self:a.fr", Membership::Leave, Some(ME), Some(5)),
            ]
        );
        assert_eq!(update.events, 4);
    }

    #[test]
    fn an_invite_names_its_inviter_from_the_stripped_state() {
        let stripped = json!({"type": "m.room.member", "state_key": ME, "sender": "@a:a.fr", "content": {"membership": "invite"}});
        let update = reduced(&json!({"next_batch": "s4", "rooms": {"invite": {
            "!i:a.fr": {"invite_state": {"events": [
                {"type": "m.room.name", "state_key": "", "sender": "@a:a.fr", "content": {"name": "Crise"}},
                member(ME, "@a:a.fr", "invite", 7),
            ]}},
            "!j:a.fr": {"invite_state": {"events": [stripped]}},
            "!k:a.fr": {"invite_state": {"events": []}},
        }}}));
        let invited: Vec<_> = update
            .invited
            .iter()
            .map(|i| (i.room_id.as_str(), i.inviter.as_deref(), i.at.map(argus_domain::to_unix_ms)))
            .collect();
        assert_eq!(
            invited,
            [
                ("!i:a.fr", Some("@a:a.fr"), Some(7)),
                ("!j:a.fr", Some("@a:a.fr"), None),
                ("!k:a.fr", None, None)
            ]
        );
    }

    #[test]
    fn what_is_not_valid_is_skipped_and_counted() {
        let update = reduced(&json!({"next_batch": "s5", "rooms": {
            "join": {
                // Valid for Ruma, not for the archive (a `/` in it).
                "!a/b:a.fr": {"timeline": {"events": [event("m.room.message", 1)]}},
                "!ok:a.fr": {"timeline": {"events": [tombstone("!bad/room:a.fr", 2)], "prev_batch": ""}},
                "!ok2:a.fr": {"timeline": {"events": [{"type": "m.room.tombstone", "state_key": "", "content": {"replacement_room": 5}}]}},
            },
            "leave": {"!gone:a.fr": {"timeline": {"events": [{"type": "m.room.member", "state_key": ME, "content": {}}]}}},
        }}));
        let rooms: Vec<_> = update.joined.iter().map(|r| r.room_id.as_str()).collect();
        assert_eq!(rooms, ["!ok2:a.fr", "!ok:a.fr"]);
        assert!(update.joined.iter().all(|r| r.successor.is_none() && r.prev_batch.is_none()));
        assert_eq!(update.left.len(), 1);
        assert_eq!((update.left[0].membership, update.left[0].by.as_deref()), (Membership::Leave, None));
        assert_eq!(update.malformed_skipped, 4, "{update:?}");
    }

    #[test]
    fn what_is_said_to_the_device_is_kept_raw_and_bounded() {
        let message = |i: usize| {
            json!({"type": "m.room.encrypted", "sender": "@a:a.fr",
                   "content": {"algorithm": "m.olm.v1.curve25519-aes-sha2", "ciphertext": {}, "n": i}})
        };
        let update = reduced(&json!({"next_batch": "s6",
            "to_device": {"events": (0..MAX_TO_DEVICE_EVENTS + 3).map(message).collect::<Vec<_>>()},
            "device_lists": {"changed": ["@a:a.fr", "@b:a.fr"], "left": ["@c:a.fr"]},
            "device_one_time_keys_count": {"signed_curve25519": 49},
            "org.matrix.msc2732.device_unused_fallback_key_types": ["signed_curve25519"]}));
        let device = &update.device;
        assert_eq!(device.to_device.len(), MAX_TO_DEVICE_EVENTS);
        assert_eq!(update.to_device_dropped, 3);
        let first: Value = serde_json::from_str(&device.to_device[0]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(first, message(0));
        let last: Value = serde_json::from_str(&device.to_device[MAX_TO_DEVICE_EVENTS - 1])
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(last["content"]["n"], json!(MAX_TO_DEVICE_EVENTS - 1), "oldest kept, in order");
        assert_eq!(device.changed_devices, ["@a:a.fr", "@b:a.fr"]);
        assert_eq!(device.left_devices, ["@c:a.fr"]);
        assert_eq!(device.one_time_keys_counts.get("signed_curve25519"), Some(&49));
        assert_eq!(device.unused_fallback_key_types.as_deref(), Some(&["signed_curve25519".to_owned()][..]));
        assert_eq!(device.next_batch.as_deref(), Some("s6"));

        // The stable name wins; no field at all is no fallback key support.
        let stable = reduced(&json!({"next_batch": "s7", "device_unused_fallback_key_types": [],
            "org.matrix.msc2732.device_unused_fallback_key_types": ["signed_curve25519"]}));
        assert_eq!(stable.device.unused_fallback_key_types, Some(vec![]));
        let none = reduced(&json!({"next_batch": "s8"}));
        assert_eq!((none.device.unused_fallback_key_types, none.to_device_dropped), (None, 0));
    }

    #[test]
    fn each_section_is_bounded() {
        let mut rooms = Rooms::new();
        let id = |i: usize| OwnedRoomId::try_from(format!("!r{i}:a.fr")).unwrap_or_else(|e| panic!("{e}"));
        for i in 0..MAX_JOINED_ROOMS {
            rooms.join.insert(id(i), Default::default());
            rooms.leave.insert(id(i), Default::default());
        }
        assert!(check_counts(&rooms).is_ok());
        rooms.leave.insert(id(MAX_JOINED_ROOMS), Default::default());
        let err = check_counts(&rooms).unwrap_err();
        assert!(matches!(err, Error::BudgetExceeded { what: "left rooms", limit: 10_000 }), "{err:?}");
    }

    #[test]
    fn a_position_that_cannot_be_sent_back_is_refused() {
        for next_batch in [String::new(), "s".repeat(MAX_POSITION_LEN + 1), "s\n1".into()] {
            let err =
                reduce(answer(&json!({"next_batch": next_batch})), Default::default(), None).unwrap_err();
            assert_eq!(err.code(), "MALFORMED_RESPONSE");
        }
        let request = |since: Option<&str>, filter_id: Option<&str>, timeout: u64| SyncRequest {
            since: since.map(str::to_owned),
            filter_id: filter_id.map(str::to_owned),
            timeout: Duration::from_secs(timeout),
        };
        assert!(request(Some("s1"), Some("0"), 300).check().is_ok());
        for bad in
            [request(Some(""), None, 0), request(None, Some("{\"room\":{}}"), 0), request(None, None, 301)]
        {
            assert_eq!(bad.check().unwrap_err().code(), "INVALID_INPUT", "{bad:?}");
        }
    }
}
