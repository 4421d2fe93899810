//! What a server admin does to another account through Synapse's admin API: expire it (account
//! validity), lock it, suspend it (MSC3823), and undo each; and a raw probe of how the
//! homeserver then answers that account.
//!
//! Each call is made by a [`TestUser`] registered as an admin ([`super::Synapse::register_admin`])
//! and changes only the account it names, never the server's configuration, so tests sharing
//! the process's Synapse do not see it.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, anyhow};
use reqwest::{Method, Url};
use serde_json::{Value, json};

use super::{TestUser, checked_json};

/// How the homeserver answered a request: its HTTP status and its JSON body (`Null` when the
/// body was not JSON).
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    /// The HTTP status.
    pub status: u16,
    /// The body, parsed.
    pub body: Value,
}

impl Answer {
    /// The Matrix `errcode` of the body, if it has one.
    pub fn errcode(&self) -> Option<&str> {
        self.body["errcode"].as_str()
    }

    /// The `soft_logout` flag of the body (`false` when absent).
    pub fn soft_logout(&self) -> bool {
        self.body["soft_logout"].as_bool().unwrap_or(false)
    }
}

impl TestUser {
    /// Sets when `user_id`'s account expires (`POST /_synapse/admin/v1/account_validity/validity`):
    /// past it, the homeserver refuses the account's requests with `ORG_MATRIX_EXPIRED_ACCOUNT`.
    /// The caller must be a server admin.
    pub async fn set_account_expiry(&self, user_id: &str, expires_at: SystemTime) -> anyhow::Result<()> {
        let ms = expires_at.duration_since(UNIX_EPOCH).context("an expiry before 1970")?.as_millis();
        let ms = u64::try_from(ms).context("an expiry too far ahead")?;
        let body = json!({ "user_id": user_id, "expiration_ts": ms, "enable_renewal_emails": false });
        self.admin(Method::POST, &["v1", "account_validity", "validity"], &body).await.map(drop)
    }

    /// Expires `user_id`'s account now (its validity ended a minute ago). Admin only.
    pub async fn expire_account(&self, user_id: &str) -> anyhow::Result<()> {
        self.set_account_expiry(user_id, SystemTime::now() - Duration::from_secs(60)).await
    }

    /// Renews `user_id`'s account for a year (undoes [`TestUser::expire_account`]). Admin only.
    pub async fn renew_account(&self, user_id: &str) -> anyhow::Result<()> {
        self.set_account_expiry(user_id, SystemTime::now() + Duration::from_secs(365 * 24 * 3600)).await
    }

    /// Locks or unlocks `user_id`'s account (`PUT /_synapse/admin/v2/users/{user_id}` with
    /// `locked`): a locked account is refused with `M_USER_LOCKED`. Admin only.
    pub async fn set_account_locked(&self, user_id: &str, locked: bool) -> anyhow::Result<()> {
        self.admin(Method::PUT, &["v2", "users", user_id], &json!({ "locked": locked })).await.map(drop)
    }

    /// Suspends or reinstates `user_id`'s account (`PUT /_synapse/admin/v1/suspend/{user_id}`,
    /// MSC3823): a suspended account still reads, and is refused sending with `M_USER_SUSPENDED`.
    /// Admin only.
    pub async fn set_account_suspended(&self, user_id: &str, suspended: bool) -> anyhow::Result<()> {
        self.admin(Method::PUT, &["v1", "suspend", user_id], &json!({ "suspend": suspended })).await.map(drop)
    }

    /// Sends a request to `/_matrix/client/v3/<segments…>` with this user's token and returns the
    /// answer whatever its status: what the homeserver says to this account, errors included.
    pub async fn probe(
        &self,
        method: Method,
        segments: &[&str],
        body: Option<&Value>,
    ) -> anyhow::Result<Answer> {
        let mut url = Url::parse(&self.base_url).context("parsing the homeserver base URL")?;
        url.path_segments_mut()
            .map_err(|()| anyhow!("base URL cannot have a path"))?
            .pop_if_empty()
            .extend(["_matrix", "client", "v3"])
            .extend(segments);
        let mut request = self.client.request(method, url).bearer_auth(&self.access_token);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await?;
        let status = response.status().as_u16();
        let text = response.text().await.context("reading the body")?;
        Ok(Answer { status, body: serde_json::from_str(&text).unwrap_or(Value::Null) })
    }

    /// Sends an admin request to `/_synapse/admin/<segments…>` with a JSON body; an error names
    /// the status and body of a non-2xx answer.
    async fn admin(&self, method: Method, segments: &[&str], body: &Value) -> anyhow::Result<Value> {
        let mut url = Url::parse(&self.base_url).context("parsing the homeserver base URL")?;
        url.path_segments_mut()
            .map_err(|()| anyhow!("base URL cannot have a path"))?
            .pop_if_empty()
            .extend(["_synapse", "admin"])
            .extend(segments);
        let what = format!("{method} /_synapse/admin/{}", segments.join("/"));
        let request = self.client.request(method, url).bearer_auth(&self.access_token).json(body);
        checked_json(request.send().await?, &what).await
    }
}
