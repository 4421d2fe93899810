//! The database schema, kept by hand to match `migrations/sqlite` and `migrations/postgres`.
//!
//! Only types both backends share: BIGINT milliseconds for timestamps, SMALLINT classification
//! ranks, BOOLEAN, TEXT. Row types derive their column types from these declarations.

diesel::table! {
    /// Ingested rooms, one row per (organisation, Matrix room).
    rooms (id) {
        /// Storage id.
        id -> BigInt,
        /// Owning organisation.
        org_id -> Text,
        /// Matrix room id.
        room_id -> Text,
        /// Homeserver the room was read from.
        homeserver_url -> Text,
        /// `m.room.name`.
        name -> Nullable<Text>,
        /// `m.room.topic`.
        topic -> Nullable<Text>,
        /// `m.room.canonical_alias`.
        canonical_alias -> Nullable<Text>,
        /// Joined members at the last ingestion.
        member_count -> BigInt,
        /// End-to-end encrypted.
        encrypted -> Bool,
        /// Classification rank, never lowered.
        classification -> SmallInt,
        /// First ingestion, UTC ms.
        first_seen_at -> BigInt,
        /// Last ingestion, UTC ms.
        last_ingested_at -> BigInt,
        /// Forward resume token.
        resume_token -> Nullable<Text>,
        /// Where older history continues (`dir=b`).
        backfill_token -> Nullable<Text>,
        /// The start of the room was reached.
        history_complete -> Bool,
        /// The room this one replaced.
        predecessor_room_id -> Nullable<Text>,
        /// The room that replaced this one.
        successor_room_id -> Nullable<Text>,
        /// `m.room.create` `room_version`.
        room_version -> Nullable<Text>,
        /// `m.room.retention` `max_lifetime`, ms.
        retention_max_lifetime_ms -> Nullable<BigInt>,
        /// `m.room.retention` `min_lifetime`, ms.
        retention_min_lifetime_ms -> Nullable<BigInt>,
        /// `im.vector.room.access_rules` `rule`.
        access_rule -> Nullable<Text>,
        /// Joined members on external homeservers at the last ingestion.
        external_member_count -> BigInt,
        /// The history is complete since then, UTC ms (with `history_complete`).
        history_since -> Nullable<BigInt>,
    }
}

diesel::table! {
    /// Ingestion runs under way, from their start to their audit record.
    ingestion_runs (id) {
        /// Storage id.
        id -> BigInt,
        /// Owning organisation.
        org_id -> Text,
        /// Who runs it.
        actor -> Text,
        /// The Matrix room id.
        room_id -> Text,
        /// The homeserver's origin.
        homeserver_url -> Text,
        /// Classification rank asked for.
        classification -> SmallInt,
        /// Start, UTC ms.
        started_at -> BigInt,
        /// Until when its process holds it, UTC ms; past it, the run is taken as interrupted.
        lease_until -> BigInt,
        /// Messages its committed pages stored.
        message_count -> BigInt,
        /// Run by the scheduler for a watched room.
        scheduled -> Bool,
    }
}

diesel::table! {
    /// Stored messages, unique per (organisation, event id).
    messages (id) {
        /// Storage id.
        id -> BigInt,
        /// Owning organisation.
        org_id -> Text,
        /// The room's storage id.
        room_pk -> BigInt,
        /// Matrix event id.
        event_id -> Text,
        /// Sender user id.
        sender -> Text,
        /// `msgtype`.
        msgtype -> Nullable<Text>,
        /// Plain-text body.
        body -> Nullable<Text>,
        /// `origin_server_ts`, UTC ms.
        sent_at -> BigInt,
        /// An edit was applied.
        edited -> Bool,
        /// When the applied edit was sent, UTC ms.
        edited_at -> Nullable<BigInt>,
        /// Redacted.
        redacted -> Bool,
        /// Arrived as `m.room.encrypted`, decrypted or not.
        encrypted -> Bool,
        /// Arrived encrypted, decrypted from the key backup (`encrypted` is set too).
        decrypted -> Bool,
        /// Why it stayed encrypted although a recovery key was given.
        undecryptable -> Nullable<Text>,
        /// Replied-to event id.
        reply_to -> Nullable<Text>,
        /// Thread root event id.
        thread_root -> Nullable<Text>,
        /// The attachment reference (URI, MIME type, size) as JSON.
        media -> Nullable<Text>,
        /// Classification rank, never lowered.
        classification -> SmallInt,
        /// Legal hold: the body as captured, kept when a later redaction purged it; read only
        /// through the read gate, for `tchap:redacted`.
        held_body -> Nullable<Text>,
        /// Legal hold: the attachment reference as captured (JSON), kept likewise.
        held_media -> Nullable<Text>,
        /// What the connector's device knew of the sending device (`SenderTrust` code); NULL:
        /// stored before devices existed.
        sender_trust -> Nullable<Text>,
    }
}

diesel::table! {
    /// Every version of an edited message (the original, then each applied edit), unique per
    /// (organisation, event id); read only through its message.
    message_versions (id) {
        /// Storage id.
        id -> BigInt,
        /// Owning organisation.
        org_id -> Text,
        /// The message's storage id.
        message_pk -> BigInt,
        /// The event that carried this version.
        event_id -> Text,
        /// Its sender.
        sender -> Text,
        /// Its `origin_server_ts`, UTC ms.
        sent_at -> BigInt,
        /// Its msgtype; NULL once redacted.
        msgtype -> Nullable<Text>,
        /// Its body; NULL once redacted.
        body -> Nullable<Text>,
        /// Legal hold: its msgtype as captured, kept when a later redaction purged it.
        held_msgtype -> Nullable<Text>,
        /// Legal hold: its body as captured, kept likewise.
        held_body -> Nullable<Text>,
    }
}

diesel::table! {
    /// The audit trail: one hash chain per organisation, append-only.
    ingestions (id) {
        /// Storage id.
        id -> BigInt,
        /// Owning organisation (the chain).
        org_id -> Text,
        /// Position in the chain, from 1, gapless.
        seq -> BigInt,
        /// Who ran the ingestion.
        actor -> Text,
        /// Room id as requested.
        room_id -> Text,
        /// Homeserver as requested.
        homeserver_url -> Text,
        /// Messages newly stored.
        message_count -> BigInt,
        /// Classification rank requested.
        classification -> SmallInt,
        /// Start, UTC ms.
        started_at -> BigInt,
        /// End, UTC ms.
        finished_at -> Nullable<BigInt>,
        /// `SUCCEEDED` or `FAILED`.
        outcome -> Text,
        /// Why it failed.
        error -> Nullable<Text>,
        /// Hex SHA-256 of the previous record.
        prev_hash -> Text,
        /// Hex SHA-256 of this record.
        hash -> Text,
        /// `INGEST`, `POST` (a note posted into the room) or `REHOME` (the room moved to another
        /// homeserver).
        action -> Text,
        /// A post's event id, when the homeserver gave one.
        event_id -> Nullable<Text>,
        /// A post's body digest, hex SHA-256.
        body_sha256 -> Nullable<Text>,
        /// A post's body length, in bytes.
        body_length -> Nullable<BigInt>,
        /// Run by the scheduler for a watched room.
        scheduled -> Bool,
        /// A `REHOME` record's homeserver the room answered to until then.
        previous_homeserver_url -> Nullable<Text>,
        /// A run's record: the storage id of its run (`run_versions.run_id`).
        run_id -> Nullable<BigInt>,
        /// A run's record: the RFC 9162 root (hex) over the versions it stored.
        events_root -> Nullable<Text>,
        /// A run's record: how many versions it stored.
        events_count -> Nullable<BigInt>,
    }
}

diesel::table! {
    /// The transparency log: one per organisation, append-only, indexed from 0 without gaps.
    log_entries (id) {
        /// Storage id.
        id -> BigInt,
        /// Owning organisation (the log).
        org_id -> Text,
        /// Position in the log, from 0.
        idx -> BigInt,
        /// `AUDIT`, `ACCESS` or `ATTACHMENT`.
        kind -> Text,
        /// The canonical bytes (UTF-8 JSON): the leaf's data.
        leaf -> Text,
        /// Classification rank of what the entry records.
        classification -> SmallInt,
        /// When, UTC ms.
        at -> BigInt,
        /// Who (none for a held file).
        actor -> Nullable<Text>,
        /// An audit record's or an access's action.
        action -> Nullable<Text>,
        /// A search's query text.
        query -> Nullable<Text>,
        /// How many items an access returned.
        item_count -> Nullable<BigInt>,
        /// An audit entry's position in the hash chain.
        seq -> Nullable<BigInt>,
        /// A held file's message (event id).
        event_id -> Nullable<Text>,
    }
}

diesel::table! {
    /// The rooms each access entry read.
    log_entry_rooms (org_id, room_id, idx) {
        /// Owning organisation.
        org_id -> Text,
        /// The entry's position in the log.
        idx -> BigInt,
        /// A room it read.
        room_id -> Text,
    }
}

diesel::table! {
    /// The hashes of every complete subtree of each log, by tlog stored-hash index.
    log_hashes (org_id, hash_index) {
        /// Owning organisation (the log).
        org_id -> Text,
        /// The stored-hash index.
        hash_index -> BigInt,
        /// The hash, hex.
        hash -> Text,
    }
}

diesel::table! {
    /// The versions each run stored, in order (the leaves of its `eventsRoot`).
    run_versions (id) {
        /// Storage id.
        id -> BigInt,
        /// Owning organisation.
        org_id -> Text,
        /// The run (`ingestion_runs.id`, then `ingestions.run_id`).
        run_id -> BigInt,
        /// Position among the run's leaves, from 0.
        idx -> BigInt,
        /// The message it is a version of.
        message_pk -> BigInt,
        /// `ORIGINAL`, `EDIT` or `REDACTION`.
        kind -> Text,
        /// The `message_versions` row it was built from, if any.
        version_pk -> Nullable<BigInt>,
        /// The `message_redactions` row it was built from, if any.
        redaction_pk -> Nullable<BigInt>,
        /// Its leaf hash when stored, hex.
        leaf_hash -> Text,
        /// Recorded without content (a message stored while still encrypted): rebuilt with no
        /// body, message type or attachment.
        without_content -> Bool,
    }
}

diesel::table! {
    /// Redactions of edits kept as versions (the edit withdrawn, the message not redacted).
    version_redactions (id) {
        /// Storage id.
        id -> BigInt,
        /// Owning organisation.
        org_id -> Text,
        /// The message the edit is a version of.
        message_pk -> BigInt,
        /// The edit's `message_versions` row.
        version_pk -> BigInt,
        /// Sender of the `m.room.redaction`.
        redacted_by -> Text,
        /// Its `origin_server_ts`, UTC ms.
        redacted_at -> BigInt,
        /// The reason it gave.
        reason -> Nullable<Text>,
    }
}

diesel::table! {
    /// Edits whose original is not stored yet.
    pending_edits (id) {
        /// Storage id.
        id -> BigInt,
        /// Owning organisation.
        org_id -> Text,
        /// The room's storage id.
        room_pk -> BigInt,
        /// The original's event id.
        target -> Text,
        /// The edit's event id.
        event_id -> Text,
        /// Who sent the edit.
        sender -> Text,
        /// When, UTC ms.
        sent_at -> BigInt,
        /// The new `msgtype`.
        msgtype -> Nullable<Text>,
        /// The new body.
        body -> Nullable<Text>,
    }
}

diesel::table! {
    /// Redactions whose target is not stored yet.
    pending_redactions (id) {
        /// Storage id.
        id -> BigInt,
        /// Owning organisation.
        org_id -> Text,
        /// The room's storage id.
        room_pk -> BigInt,
        /// The redacted event's id.
        target -> Text,
        /// Who redacted.
        redacted_by -> Text,
        /// When, UTC ms.
        redacted_at -> BigInt,
        /// The reason given.
        reason -> Nullable<Text>,
        /// The homeserver confirmed it.
        confirmed -> Bool,
    }
}

diesel::table! {
    /// Watched rooms: kept current by the scheduler with a sealed token.
    watches (id) {
        /// Storage id.
        id -> BigInt,
        /// Owning organisation.
        org_id -> Text,
        /// Who watches (scheduled runs are audited as theirs).
        owner -> Text,
        /// The Matrix room id.
        room_id -> Text,
        /// The homeserver it is read from.
        homeserver_url -> Text,
        /// Classification rank of every run.
        classification -> SmallInt,
        /// Seconds between runs.
        interval_secs -> BigInt,
        /// Which key sealed the token.
        token_key_id -> Text,
        /// The token's nonce, base64.
        token_nonce -> Text,
        /// The token's ciphertext and tag, base64.
        token_ciphertext -> Text,
        /// `ACTIVE`, `PAUSED`, `ACCOUNT_EXPIRED` or `ACCOUNT_LOCKED`.
        status -> Text,
        /// Why it is not run.
        status_reason -> Nullable<Text>,
        /// When it is due, UTC ms.
        next_run_at -> BigInt,
        /// The replica running it.
        lease_owner -> Nullable<Text>,
        /// Until when that replica holds it, UTC ms.
        lease_until -> Nullable<BigInt>,
        /// When it last ran, UTC ms.
        last_run_at -> Nullable<BigInt>,
        /// How its last run ended.
        last_outcome -> Nullable<Text>,
        /// Why its last run failed.
        last_error -> Nullable<Text>,
        /// Creation, UTC ms.
        created_at -> BigInt,
        /// Whether its sealed credentials hold a recovery key (its runs decrypt).
        decrypts -> Bool,
        /// Every run captures only what was sent at or after this time, UTC ms.
        history_since -> Nullable<BigInt>,
        /// The account credential whose pair its runs use (`NULL`: its own sealed token).
        credential_id -> Nullable<BigInt>,
    }
}

diesel::table! {
    /// One account's sealed refresh-token pair, shared by its watches and renewed once per
    /// expiry under the row's own lease.
    account_credentials (id) {
        /// Storage id.
        id -> BigInt,
        /// Owning organisation.
        org_id -> Text,
        /// The Argus user who gave it.
        owner -> Text,
        /// The homeserver it is used at.
        homeserver_url -> Text,
        /// The Matrix user id of the session.
        user_id -> Text,
        /// Which key sealed the pair.
        token_key_id -> Text,
        /// The pair's nonce, base64.
        token_nonce -> Text,
        /// The pair's ciphertext and tag, base64.
        token_ciphertext -> Text,
        /// The renewer holding it (replica and nonce), only while it renews.
        lease_owner -> Nullable<Text>,
        /// Until when, UTC ms.
        lease_until -> Nullable<BigInt>,
        /// When the pair was last replaced, UTC ms.
        updated_at -> BigInt,
    }
}

diesel::table! {
    /// Watched accounts (live capture): every joined room of one Matrix account (or the listed
    /// ones) kept current by one `/sync` loop, run by one replica at a time under a lease.
    account_watches (id) {
        /// Storage id.
        id -> BigInt,
        /// Owning organisation.
        org_id -> Text,
        /// Who watches (the loop's runs are audited as theirs).
        owner -> Text,
        /// Where the account lives.
        homeserver_url -> Text,
        /// The Matrix user the token belongs to (`whoami`).
        user_id -> Text,
        /// Classification rank of every room captured.
        classification -> SmallInt,
        /// The long-poll timeout of each `/sync`, in seconds.
        timeout_secs -> BigInt,
        /// Only these rooms, a JSON array of room ids (`NULL`: every joined room).
        rooms -> Nullable<Text>,
        /// A room's history is captured from this time, UTC ms.
        history_since -> Nullable<BigInt>,
        /// Which key sealed the credentials.
        token_key_id -> Text,
        /// The credentials' nonce, base64.
        token_nonce -> Text,
        /// The credentials' ciphertext and tag, base64.
        token_ciphertext -> Text,
        /// Whether the sealed credentials hold a recovery key.
        decrypts -> Bool,
        /// The account credential holding its refresh-token pair (`NULL`: none).
        credential_id -> Nullable<BigInt>,
        /// `ACTIVE`, `PAUSED`, `ACCOUNT_EXPIRED` or `ACCOUNT_LOCKED`.
        status -> Text,
        /// Why it is not run.
        status_reason -> Nullable<Text>,
        /// Where the next `/sync` resumes (`since`).
        sync_token -> Nullable<Text>,
        /// The stored `/sync` filter's id.
        filter_id -> Nullable<Text>,
        /// When its last `/sync` answered and was stored, UTC ms.
        last_sync_at -> Nullable<BigInt>,
        /// Creation, UTC ms.
        created_at -> BigInt,
        /// The replica running its loop.
        lease_owner -> Nullable<Text>,
        /// Until when that replica holds it, UTC ms.
        lease_until -> Nullable<BigInt>,
    }
}

diesel::table! {
    /// The rooms an account watch follows or followed, with the account's membership.
    account_watch_rooms (watch_id, room_id) {
        /// The account watch.
        watch_id -> BigInt,
        /// The Matrix room id.
        room_id -> Text,
        /// `JOIN`, `LEAVE`, `BAN` or `INVITE`.
        membership -> Text,
        /// Who changed it (the inviter, who kicked or banned).
        by_user -> Nullable<Text>,
        /// When it changed, UTC ms.
        changed_at -> BigInt,
        /// The room still has to be captured.
        due -> Bool,
    }
}

diesel::table! {
    /// The fusion outbox: one row per successful ingestion, relayed in id order.
    outbox (id) {
        /// Storage id and relay order.
        id -> BigInt,
        /// Owning organisation.
        org_id -> Text,
        /// Matrix room id.
        room_id -> Text,
        /// Audit seq of the ingestion.
        version -> BigInt,
        /// The room as of commit, JSON.
        payload -> Text,
        /// Failed delivery attempts.
        attempts -> Integer,
        /// Last delivery error.
        last_error -> Nullable<Text>,
        /// Creation, UTC ms.
        created_at -> BigInt,
        /// Delivery, UTC ms.
        delivered_at -> Nullable<BigInt>,
        /// Parking (given up), UTC ms.
        parked_at -> Nullable<BigInt>,
    }
}

diesel::table! {
    /// The history of a room's state: one row per ingestion that observed it changed; never
    /// updated or deleted, read through the room's gate.
    room_states (id) {
        /// Storage id, in the order rows were appended.
        id -> BigInt,
        /// Owning organisation.
        org_id -> Text,
        /// The room's storage id.
        room_pk -> BigInt,
        /// The run that observed it.
        run_id -> BigInt,
        /// When it was observed, UTC ms.
        observed_at -> BigInt,
        /// `m.room.name`.
        name -> Nullable<Text>,
        /// `m.room.topic`.
        topic -> Nullable<Text>,
        /// End-to-end encrypted.
        encrypted -> Bool,
        /// `m.room.create` `room_version`.
        room_version -> Nullable<Text>,
        /// `m.room.retention` `max_lifetime`, ms.
        retention_max_lifetime_ms -> Nullable<BigInt>,
        /// `m.room.retention` `min_lifetime`, ms.
        retention_min_lifetime_ms -> Nullable<BigInt>,
        /// `im.vector.room.access_rules` `rule`.
        access_rule -> Nullable<Text>,
        /// Joined members on external homeservers.
        external_member_count -> BigInt,
    }
}

diesel::joinable!(messages -> rooms (room_pk));
diesel::table! {
    /// Who redacted a message, when and why: one row per redacted message whose redaction is
    /// known; read only through its message.
    message_redactions (id) {
        /// Storage id.
        id -> BigInt,
        /// Owning organisation.
        org_id -> Text,
        /// The message's storage id.
        message_pk -> BigInt,
        /// Sender of the `m.room.redaction`.
        redacted_by -> Text,
        /// Its `origin_server_ts`, UTC ms.
        redacted_at -> BigInt,
        /// The reason it gave.
        reason -> Nullable<Text>,
    }
}

diesel::table! {
    /// Per-room, per-classification message counts, kept in the same transaction as the
    /// messages: a room's `totalCount` and the statistics sum at most five rows per room.
    message_counts (org_id, room_pk, classification) {
        /// Owning organisation.
        org_id -> Text,
        /// The room's storage id.
        room_pk -> BigInt,
        /// Classification of the counted messages.
        classification -> SmallInt,
        /// How many messages of the room have that classification.
        message_count -> BigInt,
    }
}

diesel::joinable!(message_versions -> messages (message_pk));
diesel::joinable!(account_watch_rooms -> account_watches (watch_id));
diesel::allow_tables_to_appear_in_same_query!(rooms, messages, message_counts, message_versions);
diesel::allow_tables_to_appear_in_same_query!(account_watches, account_watch_rooms);

diesel::table! {
    /// The connector's end-to-end-encryption devices, one per (organisation, homeserver, Matrix
    /// user, device id); their state is in `e2ee_device_items`.
    e2ee_devices (id) {
        /// Storage id.
        id -> BigInt,
        /// Owning organisation.
        org_id -> Text,
        /// The account's homeserver.
        homeserver_url -> Text,
        /// The account's Matrix user id.
        user_id -> Text,
        /// The device id.
        device_id -> Text,
        /// When it was first written, UTC ms.
        created_at -> BigInt,
    }
}

diesel::table! {
    /// One item of a device's state, sealed at rest; removed with its device.
    e2ee_device_items (device_pk, kind, item_key) {
        /// The device's storage id.
        device_pk -> BigInt,
        /// The kind of item.
        kind -> Text,
        /// Its key within the kind.
        item_key -> Text,
        /// Id of the key that sealed it.
        key_id -> Text,
        /// The sealing nonce.
        nonce -> Text,
        /// The sealed value.
        ciphertext -> Text,
        /// When it was last written, UTC ms.
        updated_at -> BigInt,
    }
}

diesel::joinable!(e2ee_device_items -> e2ee_devices (device_pk));
diesel::allow_tables_to_appear_in_same_query!(e2ee_devices, e2ee_device_items);
