//! The connector: reads one room (state, then timeline pages) into a [`RoomSnapshot`].

use std::{collections::HashSet, sync::Arc};

use argus_domain::{AccessToken, FetchReport, HomeserverUrl, RoomId, RoomSnapshot};
use ruma::{OwnedRoomId, api::Direction};
use tokio::time::Instant;
use tracing::Instrument;

use crate::{
    ConnectorConfig, Error, FetchOptions, HARD_MAX_MESSAGES, Result,
    api::{get_message_events, get_state_events},
    config::MAX_PAGE_SIZE,
    normalise::Normaliser,
    transport::{HttpClient, Target},
};

/// Reads Matrix rooms from homeservers under one outbound policy.
///
/// Cheap to clone (the HTTP clients and configuration are shared); `Send + Sync`.
#[derive(Debug, Clone)]
pub struct Connector {
    inner: Arc<HttpClient>,
}

impl Connector {
    /// Builds a connector; fails with [`Error::InvalidInput`] on an inconsistent configuration
    /// (page size outside 1..=1000, zero caps or timeouts, an unparsable address exception).
    pub fn new(config: ConnectorConfig) -> Result<Self> {
        let invalid = |what: &str| Err(Error::InvalidInput(format!("connector configuration: {what}")));
        if config.page_size == 0 || config.page_size > MAX_PAGE_SIZE {
            return invalid("page_size must be 1 to 1000");
        }
        if config.max_pages == 0 || config.max_response_bytes == 0 {
            return invalid("max_pages and max_response_bytes must be positive");
        }
        if config.connect_timeout.is_zero()
            || config.request_timeout.is_zero()
            || config.run_deadline.is_zero()
        {
            return invalid("timeouts must be positive");
        }
        Ok(Self { inner: Arc::new(HttpClient::new(config)?) })
    }

    /// The configuration this connector was built with.
    pub fn config(&self) -> &ConnectorConfig {
        &self.inner.config
    }

    /// Checks a homeserver URL against the outbound policy alone (scheme, user information,
    /// allow-list, IP literals), before any connection. Host names are checked again, on every
    /// address they resolve to, when a read connects.
    pub fn check_homeserver(&self, homeserver: &HomeserverUrl) -> Result<()> {
        self.inner.policy.check_url(&homeserver.url()).map(|_| ())
    }

    /// Reads a room: its state, then its timeline (backwards from the live end, or forwards from
    /// `options.since`), normalised into a snapshot.
    pub async fn fetch_room(
        &self,
        homeserver: &HomeserverUrl,
        token: &AccessToken,
        room_id: &RoomId,
        options: &FetchOptions,
    ) -> Result<RoomSnapshot> {
        self.fetch_room_with_progress(homeserver, token, room_id, options, &mut |_| {}).await
    }

    /// Like [`Connector::fetch_room`], calling `on_page` with the report so far after each page.
    pub async fn fetch_room_with_progress(
        &self,
        homeserver: &HomeserverUrl,
        token: &AccessToken,
        room_id: &RoomId,
        options: &FetchOptions,
        on_page: &mut (dyn FnMut(&FetchReport) + Send),
    ) -> Result<RoomSnapshot> {
        if options.max_messages == 0 || options.max_messages > HARD_MAX_MESSAGES {
            return Err(Error::InvalidInput(format!("max_messages must be 1 to {HARD_MAX_MESSAGES}")));
        }
        if options.since.as_ref().is_some_and(|s| s.is_empty() || s.len() > 1024) {
            return Err(Error::InvalidInput("the resume token must be 1 to 1024 bytes".into()));
        }
        if !token.is_well_formed() {
            return Err(Error::InvalidInput("the access token is empty or not a valid header value".into()));
        }
        let room = OwnedRoomId::try_from(room_id.as_str())
            .map_err(|_| Error::InvalidInput("the room id is not a valid Matrix room id".into()))?;
        let transport = self.inner.policy.check_url(&homeserver.url())?;
        let run_deadline = self.inner.config.run_deadline;
        let target = Target { homeserver, token, transport, deadline: Instant::now() + run_deadline };
        let span = tracing::info_span!("fetch_room", room = %room_id, homeserver = %homeserver);
        let run = self.run(&target, room_id, &room, options, on_page).instrument(span);
        match tokio::time::timeout_at(target.deadline, run).await {
            Ok(result) => result,
            Err(_) => Err(Error::DeadlineExceeded(run_deadline)),
        }
    }

    async fn run(
        &self,
        target: &Target<'_>,
        room_id: &RoomId,
        room: &OwnedRoomId,
        options: &FetchOptions,
        on_page: &mut (dyn FnMut(&FetchReport) + Send),
    ) -> Result<RoomSnapshot> {
        let client = &*self.inner;
        let config = &client.config;
        let state = get_state_events::fetch(client, target, room).await?;

        let forward = options.since.is_some();
        let dir = if forward { Direction::Forward } else { Direction::Backward };
        let mut from = options.since.clone();
        let mut tokens: HashSet<String> = from.iter().cloned().collect();
        let mut resume_token = options.since.clone();
        let mut norm = Normaliser::new(room_id.as_str());
        norm.report_mut().malformed_skipped += state.malformed;
        let max_messages = options.max_messages as usize;
        let mut truncated = false;
        loop {
            let remaining = max_messages.saturating_sub(norm.message_count());
            if norm.report().pages >= config.max_pages || remaining == 0 {
                truncated = true;
                break;
            }
            let limit = u32::try_from(remaining).unwrap_or(u32::MAX).min(config.page_size);
            let page = get_message_events::fetch(client, target, room, from.clone(), dir, limit).await?;
            let report = norm.report_mut();
            report.pages += 1;
            if !forward && report.pages == 1 {
                resume_token = Some(page.start.clone());
            }
            let empty = page.chunk.is_empty();
            // A homeserver may not return more than it was asked for; the excess is not read.
            let overfull = page.chunk.len() > limit as usize;
            for raw in page.chunk.iter().take(limit as usize) {
                norm.push(raw.json().get());
            }
            tracing::debug!(page = norm.report().pages, events = page.chunk.len(), "read a page");
            on_page(norm.report());
            if overfull {
                tracing::warn!(
                    limit,
                    events = page.chunk.len(),
                    "the homeserver returned more events than asked for"
                );
                // Forwards, the events not read lie before `end`: resume from this page again.
                if forward {
                    resume_token = from.clone();
                }
                truncated = true;
                break;
            }
            match page.end {
                None => {
                    // Backwards: the start of the room. Forwards: the live end; keep the last
                    // token we read from (a later read from it finds nothing it has seen).
                    break;
                }
                Some(end) if forward && (empty || from.as_deref() == Some(end.as_str())) => {
                    if !empty {
                        return Err(Error::malformed("the homeserver repeated a pagination token"));
                    }
                    resume_token = Some(end);
                    break;
                }
                Some(end) => {
                    if !tokens.insert(end.clone()) {
                        return Err(Error::malformed("the homeserver repeated a pagination token"));
                    }
                    if forward {
                        resume_token = Some(end.clone());
                    }
                    from = Some(end);
                }
            }
        }
        let newest_first = !forward;
        let (normalised, mut report) = norm.finish(newest_first);
        report.truncated = truncated;
        tracing::info!(
            pages = report.pages,
            events = report.events_fetched,
            messages = report.messages,
            malformed = report.malformed_skipped,
            foreign = report.foreign_dropped,
            truncated = report.truncated,
            "read the room"
        );
        Ok(RoomSnapshot {
            room_id: room_id.clone(),
            homeserver_url: target.homeserver.clone(),
            name: state.name,
            topic: state.topic,
            canonical_alias: state.canonical_alias,
            member_count: state.member_count,
            encrypted: state.encrypted,
            messages: normalised.messages,
            edits: normalised.edits,
            redactions: normalised.redactions,
            resume_token,
            report,
        })
    }
}
