//! A user registered on the test homeserver and the client-server API calls tests build rooms
//! with.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, anyhow};
use reqwest::{Method, Url};
use serde_json::{Value, json};

use super::checked_json;

/// A user registered on the test homeserver, with helpers over the client-server API.
///
/// Holds its own HTTP client: use a `TestUser` inside the async runtime (test) that created it.
/// `Debug` leaves out the access token.
#[derive(Clone)]
pub struct TestUser {
    /// Full Matrix user id, e.g. `@alice_123_0:127.0.0.1:8008`.
    pub user_id: String,
    /// The user's access token.
    pub access_token: String,
    /// The device id of the registration login.
    pub device_id: String,
    pub(super) password: String,
    pub(super) base_url: String,
    pub(super) client: reqwest::Client,
}

/// A login with a refresh token ([`TestUser::login_refreshable`]). `Debug` leaves out the tokens.
#[derive(Clone)]
pub struct RefreshableLogin {
    /// The access token, expiring after `expires_in_ms`.
    pub access_token: String,
    /// The refresh token that renews it (once).
    pub refresh_token: String,
    /// The login's device.
    pub device_id: String,
    /// The access token's lifetime, as the homeserver said.
    pub expires_in_ms: Option<u64>,
}

impl fmt::Debug for RefreshableLogin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RefreshableLogin")
            .field("device_id", &self.device_id)
            .field("expires_in_ms", &self.expires_in_ms)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for TestUser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestUser")
            .field("user_id", &self.user_id)
            .field("device_id", &self.device_id)
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

impl TestUser {
    /// The user's password (for a client of this test kit that logs in again or answers
    /// user-interactive authentication).
    pub(crate) fn password(&self) -> &str {
        &self.password
    }

    /// Sends an authenticated request to `/_matrix/client/v3/<segments…>` (each segment is
    /// percent-encoded) with optional query and JSON body; returns the JSON response, or an error
    /// naming the status and Matrix error body on a non-2xx answer.
    pub async fn request(
        &self,
        method: Method,
        segments: &[&str],
        query: &[(&str, &str)],
        body: Option<&Value>,
    ) -> anyhow::Result<Value> {
        let mut url = Url::parse(&self.base_url).context("parsing the homeserver base URL")?;
        url.path_segments_mut()
            .map_err(|()| anyhow!("base URL cannot have a path"))?
            .pop_if_empty()
            .extend(["_matrix", "client", "v3"])
            .extend(segments);
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        let what = format!("{method} /{}", segments.join("/"));
        let mut request = self.client.request(method, url).bearer_auth(&self.access_token);
        if let Some(body) = body {
            request = request.json(body);
        }
        checked_json(request.send().await?, &what).await
    }

    /// Logs in again with the user's password asking for a refresh token (`POST
    /// /_matrix/client/v3/login`, `m.login.password`, `refresh_token: true`): a new device whose
    /// access token expires (after 4 s on the test homeserver) and renews with its refresh token.
    pub async fn login_refreshable(&self) -> anyhow::Result<RefreshableLogin> {
        let url = format!("{}/_matrix/client/v3/login", self.base_url.trim_end_matches('/'));
        let body = serde_json::json!({
            "type": "m.login.password",
            "identifier": { "type": "m.id.user", "user": self.user_id },
            "password": self.password,
            "refresh_token": true,
        });
        let answer = checked_json(self.client.post(url).json(&body).send().await?, "POST /login").await?;
        let field = |name: &str| {
            answer[name]
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| anyhow!("`{name}` missing from the login answer"))
        };
        Ok(RefreshableLogin {
            access_token: field("access_token")?,
            refresh_token: field("refresh_token")?,
            device_id: field("device_id")?,
            expires_in_ms: answer["expires_in_ms"].as_u64(),
        })
    }

    /// Uploads `bytes` as `content_type` (`POST /_matrix/media/v3/upload`) and returns the
    /// `mxc://` URI the homeserver gave it.
    pub async fn upload(&self, bytes: Vec<u8>, content_type: &str) -> anyhow::Result<String> {
        let mut url = Url::parse(&self.base_url).context("parsing the homeserver base URL")?;
        url.path_segments_mut()
            .map_err(|()| anyhow!("base URL cannot have a path"))?
            .pop_if_empty()
            .extend(["_matrix", "media", "v3", "upload"]);
        let request = self
            .client
            .post(url)
            .bearer_auth(&self.access_token)
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .body(bytes);
        let answer = checked_json(request.send().await?, "POST /upload").await?;
        answer["content_uri"].as_str().map(str::to_owned).ok_or_else(|| anyhow!("upload: no content_uri"))
    }

    /// Creates a private (invite-only) room and returns its id. `encrypted` adds an
    /// `m.room.encryption` state event (megolm) to the initial state.
    pub async fn create_room(
        &self,
        name: Option<&str>,
        topic: Option<&str>,
        encrypted: bool,
    ) -> anyhow::Result<String> {
        let mut body = json!({ "preset": "private_chat" });
        if let Some(name) = name {
            body["name"] = json!(name);
        }
        if let Some(topic) = topic {
            body["topic"] = json!(topic);
        }
        if encrypted {
            body["initial_state"] = json!([{
                "type": "m.room.encryption",
                "state_key": "",
                "content": { "algorithm": "m.megolm.v1.aes-sha2" }
            }]);
        }
        self.create_room_with(&body).await
    }

    /// Creates a room from a raw `/createRoom` body and returns its id.
    pub async fn create_room_with(&self, body: &Value) -> anyhow::Result<String> {
        let response = self.request(Method::POST, &["createRoom"], &[], Some(body)).await?;
        string_field(&response, "room_id")
    }

    /// Invites `user_id` into `room`.
    pub async fn invite(&self, room: &str, user_id: &str) -> anyhow::Result<()> {
        let body = json!({ "user_id": user_id });
        self.request(Method::POST, &["rooms", room, "invite"], &[], Some(&body)).await.map(drop)
    }

    /// Joins `room` (a room id).
    pub async fn join(&self, room: &str) -> anyhow::Result<()> {
        self.request(Method::POST, &["rooms", room, "join"], &[], Some(&json!({}))).await.map(drop)
    }

    /// Leaves `room`.
    pub async fn leave(&self, room: &str) -> anyhow::Result<()> {
        self.request(Method::POST, &["rooms", room, "leave"], &[], Some(&json!({}))).await.map(drop)
    }

    /// Sends a state event and returns its event id.
    pub async fn set_state(
        &self,
        room: &str,
        event_type: &str,
        state_key: &str,
        content: &Value,
    ) -> anyhow::Result<String> {
        let response = self
            .request(Method::PUT, &["rooms", room, "state", event_type, state_key], &[], Some(content))
            .await?;
        string_field(&response, "event_id")
    }

    /// Renames `room` (`m.room.name`) and returns the state event id.
    pub async fn set_name(&self, room: &str, name: &str) -> anyhow::Result<String> {
        self.set_state(room, "m.room.name", "", &json!({ "name": name })).await
    }

    /// Sets the topic of `room` (`m.room.topic`) and returns the state event id.
    pub async fn set_topic(&self, room: &str, topic: &str) -> anyhow::Result<String> {
        self.set_state(room, "m.room.topic", "", &json!({ "topic": topic })).await
    }

    /// Sends a room event of any type and returns its event id.
    pub async fn send_event(&self, room: &str, event_type: &str, content: &Value) -> anyhow::Result<String> {
        let txn = transaction_id();
        let response =
            self.request(Method::PUT, &["rooms", room, "send", event_type, &txn], &[], Some(content)).await?;
        string_field(&response, "event_id")
    }

    /// Creates a key backup version (`POST /room_keys/version`) with `auth_data` and returns
    /// its version.
    pub async fn create_key_backup(&self, algorithm: &str, auth_data: &Value) -> anyhow::Result<String> {
        let body = json!({ "algorithm": algorithm, "auth_data": auth_data });
        let response = self.request(Method::POST, &["room_keys", "version"], &[], Some(&body)).await?;
        string_field(&response, "version")
    }

    /// Uploads one backed-up session (`PUT /room_keys/keys/{room}/{session}?version=`).
    pub async fn upload_room_key(
        &self,
        version: &str,
        room: &str,
        session_id: &str,
        key_data: &Value,
    ) -> anyhow::Result<()> {
        self.request(
            Method::PUT,
            &["room_keys", "keys", room, session_id],
            &[("version", version)],
            Some(key_data),
        )
        .await
        .map(drop)
    }

    /// Sets global account data of type `kind` (`PUT /user/{userId}/account_data/{type}`).
    pub async fn set_account_data(&self, kind: &str, content: &Value) -> anyhow::Result<()> {
        self.request(Method::PUT, &["user", &self.user_id, "account_data", kind], &[], Some(content))
            .await
            .map(drop)
    }

    /// Sends an `m.room.message` with arbitrary content (notice, emote, image, file, location,
    /// replies, threads…) and returns its event id.
    pub async fn send_message(&self, room: &str, content: &Value) -> anyhow::Result<String> {
        self.send_event(room, "m.room.message", content).await
    }

    /// Sends an `m.text` message and returns its event id.
    pub async fn send_text(&self, room: &str, body: &str) -> anyhow::Result<String> {
        self.send_message(room, &json!({ "msgtype": "m.text", "body": body })).await
    }

    /// Sends `count` `m.text` messages (`"{prefix} 00000"`, `"{prefix} 00001"`, …), at most
    /// `in_flight` at a time (at least one), and returns their event ids in numbering order.
    ///
    /// Building a large room one message at a time is slow; Synapse orders concurrent sends
    /// itself, so the timeline order of messages sent in the same batch is not the numbering
    /// order. Must run inside a multi-threaded or current-thread Tokio runtime.
    pub async fn send_texts(
        &self,
        room: &str,
        prefix: &str,
        count: usize,
        in_flight: usize,
    ) -> anyhow::Result<Vec<String>> {
        let in_flight = in_flight.max(1);
        let mut ids: Vec<Option<String>> = vec![None; count];
        let mut tasks = tokio::task::JoinSet::new();
        let mut next = 0;
        while next < count || !tasks.is_empty() {
            while next < count && tasks.len() < in_flight {
                let (user, room, body) = (self.clone(), room.to_owned(), format!("{prefix} {next:05}"));
                let i = next;
                tasks.spawn(async move { (i, user.send_text(&room, &body).await) });
                next += 1;
            }
            if let Some(joined) = tasks.join_next().await {
                let (i, sent) = joined.context("send task")?;
                ids[i] = Some(sent.with_context(|| format!("sending message {i}"))?);
            }
        }
        Ok(ids.into_iter().flatten().collect())
    }

    /// Sends an `m.text` reply (`m.in_reply_to`) to `parent` and returns its event id.
    pub async fn reply(&self, room: &str, parent: &str, body: &str) -> anyhow::Result<String> {
        let content = json!({
            "msgtype": "m.text",
            "body": body,
            "m.relates_to": { "m.in_reply_to": { "event_id": parent } }
        });
        self.send_message(room, &content).await
    }

    /// Sends an `m.text` message in the thread rooted at `root` (`m.thread`) and returns its id.
    pub async fn send_in_thread(&self, room: &str, root: &str, body: &str) -> anyhow::Result<String> {
        let content = json!({
            "msgtype": "m.text",
            "body": body,
            "m.relates_to": {
                "rel_type": "m.thread",
                "event_id": root,
                "is_falling_back": true,
                "m.in_reply_to": { "event_id": root }
            }
        });
        self.send_message(room, &content).await
    }

    /// Edits `original` (an `m.replace` relation with `m.new_content`) and returns the edit's id.
    pub async fn edit(&self, room: &str, original: &str, new_body: &str) -> anyhow::Result<String> {
        let content = json!({
            "msgtype": "m.text",
            "body": format!("* {new_body}"),
            "m.new_content": { "msgtype": "m.text", "body": new_body },
            "m.relates_to": { "rel_type": "m.replace", "event_id": original }
        });
        self.send_message(room, &content).await
    }

    /// Redacts `event_id` with an optional reason and returns the redaction's event id.
    pub async fn redact(&self, room: &str, event_id: &str, reason: Option<&str>) -> anyhow::Result<String> {
        let txn = transaction_id();
        let body = reason.map_or_else(|| json!({}), |reason| json!({ "reason": reason }));
        let response =
            self.request(Method::PUT, &["rooms", room, "redact", event_id, &txn], &[], Some(&body)).await?;
        string_field(&response, "event_id")
    }

    /// One raw page of `/rooms/{room}/messages` (`dir` is `"b"` or `"f"`), as a Matrix client
    /// sees it.
    pub async fn messages(&self, room: &str, dir: &str, limit: u32) -> anyhow::Result<Value> {
        self.messages_from(room, None, dir, limit).await
    }

    /// One raw page of `/rooms/{room}/messages` starting at the pagination token `from`.
    pub async fn messages_from(
        &self,
        room: &str,
        from: Option<&str>,
        dir: &str,
        limit: u32,
    ) -> anyhow::Result<Value> {
        let limit = limit.to_string();
        let mut query = vec![("dir", dir), ("limit", limit.as_str())];
        if let Some(from) = from {
            query.push(("from", from));
        }
        self.request(Method::GET, &["rooms", room, "messages"], &query, None).await
    }

    /// Every event of the room's timeline visible to this user, newest first, read backwards
    /// with `/messages` until the start of the room.
    pub async fn all_messages(&self, room: &str) -> anyhow::Result<Vec<Value>> {
        let mut events = Vec::new();
        let mut from: Option<String> = None;
        loop {
            let page = self.messages_from(room, from.as_deref(), "b", 1000).await?;
            if let Some(chunk) = page["chunk"].as_array() {
                events.extend(chunk.iter().cloned());
            }
            match page["end"].as_str() {
                Some(end) if page["chunk"].as_array().is_some_and(|chunk| !chunk.is_empty()) => {
                    from = Some(end.to_owned());
                }
                _ => return Ok(events),
            }
        }
    }

    /// Raw `/rooms/{room}/joined_members` (`{"joined": {user_id: {display_name, avatar_url}}}`).
    pub async fn joined_members(&self, room: &str) -> anyhow::Result<Value> {
        self.request(Method::GET, &["rooms", room, "joined_members"], &[], None).await
    }

    /// Raw `/rooms/{room}/state` (every current state event).
    pub async fn state(&self, room: &str) -> anyhow::Result<Value> {
        self.request(Method::GET, &["rooms", room, "state"], &[], None).await
    }

    /// Raw `/rooms/{room}/event/{event_id}`.
    pub async fn event(&self, room: &str, event_id: &str) -> anyhow::Result<Value> {
        self.request(Method::GET, &["rooms", room, "event", event_id], &[], None).await
    }
}

fn string_field(value: &Value, name: &str) -> anyhow::Result<String> {
    value[name].as_str().map(str::to_owned).ok_or_else(|| anyhow!("`{name}` missing from {value}"))
}

fn transaction_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |duration| duration.as_nanos());
    format!("argus-{}-{nanos}-{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed))
}
