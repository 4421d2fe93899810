//! What Tchap says about a room in its state, beyond name and topic: its room version, its
//! retention policy (`m.room.retention`), its access rule (`im.vector.room.access_rules`) and
//! how many joined members are on external homeservers; and the rule that tells when a room's
//! retention policy may purge events before they are captured.

use std::time::Duration;

/// The longest lifetime kept from `m.room.retention`, in milliseconds (a thousand years): a
/// larger value is taken as malformed.
pub const MAX_LIFETIME_MS: u64 = 1000 * 365 * 24 * 3600 * 1000;

/// The longest access rule kept verbatim when it is not one of Tchap's.
pub const MAX_ACCESS_RULE_LEN: usize = 64;

/// The smallest margin kept before the expiry of the oldest uncaptured event.
pub const MIN_RETENTION_MARGIN: Duration = Duration::from_secs(60);

/// A room's retention policy, from `m.room.retention`: a homeserver that enforces it stops
/// serving, then purges, events older than `max_lifetime`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Retention {
    /// `max_lifetime`, in milliseconds: how long an event is kept at most.
    pub max_lifetime_ms: Option<u64>,
    /// `min_lifetime`, in milliseconds: how long an event is kept at least.
    pub min_lifetime_ms: Option<u64>,
}

impl Retention {
    /// The policy from the two values as the state gave them: each kept when it is a whole
    /// number of milliseconds from 1 to [`MAX_LIFETIME_MS`]; `None` when neither is.
    ///
    /// ```
    /// use argus_domain::Retention;
    /// let r = Retention::from_state(Some(&serde_json::json!(86_400_000)), Some(&serde_json::json!("x")));
    /// assert_eq!(r, Some(Retention { max_lifetime_ms: Some(86_400_000), min_lifetime_ms: None }));
    /// assert_eq!(Retention::from_state(Some(&serde_json::json!(-1)), None), None);
    /// ```
    pub fn from_state(max: Option<&serde_json::Value>, min: Option<&serde_json::Value>) -> Option<Self> {
        let bounded = |v: Option<&serde_json::Value>| {
            v.and_then(serde_json::Value::as_u64).filter(|ms| (1..=MAX_LIFETIME_MS).contains(ms))
        };
        let retention = Self { max_lifetime_ms: bounded(max), min_lifetime_ms: bounded(min) };
        (retention != Self::default()).then_some(retention)
    }

    /// The policy as stored (positive milliseconds); a value out of range is left out.
    pub fn from_stored(max_ms: Option<i64>, min_ms: Option<i64>) -> Option<Self> {
        let bounded = |v: Option<i64>| {
            v.and_then(|ms| u64::try_from(ms).ok()).filter(|ms| (1..=MAX_LIFETIME_MS).contains(ms))
        };
        let retention = Self { max_lifetime_ms: bounded(max_ms), min_lifetime_ms: bounded(min_ms) };
        (retention != Self::default()).then_some(retention)
    }

    /// How long after a run that reached the end of the timeline the room must be read again
    /// so that no event expires uncaptured: `max_lifetime` less a margin of 10 % of it, and at
    /// least [`MIN_RETENTION_MARGIN`]. `None` without a `max_lifetime`; zero when the lifetime
    /// is no longer than the margin (the room can never be read often enough).
    ///
    /// ```
    /// use std::time::Duration;
    /// use argus_domain::Retention;
    /// let day = Retention { max_lifetime_ms: Some(86_400_000), min_lifetime_ms: None };
    /// assert_eq!(day.capture_within(), Some(Duration::from_secs(77_760)));
    /// let short = Retention { max_lifetime_ms: Some(300_000), min_lifetime_ms: None };
    /// assert_eq!(short.capture_within(), Some(Duration::from_secs(240)));
    /// ```
    pub fn capture_within(&self) -> Option<Duration> {
        let lifetime = Duration::from_millis(self.max_lifetime_ms?);
        let margin = (lifetime / 10).max(MIN_RETENTION_MARGIN);
        Some(lifetime.saturating_sub(margin))
    }

    /// The rule the scheduler follows for a watched room with this policy: how long after a
    /// run's start the room is due again at the latest (the watch's own interval, when shorter,
    /// wins). `floor` is the shortest wait any watch may have (the watch limits' minimum
    /// interval, and at least the scheduler's tick): the room's state, which its
    /// administrators set, never makes a watch run more often than its owner could have asked.
    ///
    /// - No `max_lifetime`, or one no longer than its margin ([`Retention::capture_within`] is
    ///   zero: no schedule can keep up, which [`Retention::at_risk`] reports): `None`, the
    ///   interval alone.
    /// - A run that read to the end (it succeeded, was not cut short by its message cap, and
    ///   left no older history to read): [`Retention::capture_within`], no shorter than
    ///   `floor`. The oldest event not captured then is at least as new as the run.
    /// - A run that did not (it failed, was cut short, or older history remains): `floor`.
    ///   What it left uncaptured may be much older than the run, so it is read again as soon
    ///   as the floor allows.
    ///
    /// ```
    /// use std::time::Duration;
    /// use argus_domain::Retention;
    /// let policy = |ms| Retention { max_lifetime_ms: Some(ms), min_lifetime_ms: None };
    /// let floor = Duration::from_secs(60);
    /// assert_eq!(policy(86_400_000).due_within(true, floor), Some(Duration::from_secs(77_760)));
    /// assert_eq!(policy(86_400_000).due_within(false, floor), Some(floor));
    /// // 61 s: captured within a second, but never sooner than the floor.
    /// assert_eq!(policy(61_000).due_within(true, floor), Some(floor));
    /// // 1 ms: no schedule keeps up; the watch keeps its interval.
    /// assert_eq!(policy(1).due_within(true, floor), None);
    /// assert_eq!(policy(1).due_within(false, floor), None);
    /// ```
    pub fn due_within(&self, read_to_the_end: bool, floor: Duration) -> Option<Duration> {
        let within = self.capture_within().filter(|within| !within.is_zero())?;
        Some(if read_to_the_end { within.max(floor) } else { floor })
    }

    /// Whether capture cannot keep up with this policy for a room whose history is
    /// `history_complete` (back to its start, or to the start date asked for) and which an
    /// active watch keeps current (`watched`): the policy has a `max_lifetime` and the room is
    /// not watched, or older history is not captured yet, or the lifetime is no longer than its
    /// margin (no schedule can read it in time). The interval of a watch does not count: the
    /// scheduler reads a watched room again in time ([`Retention::due_within`]), unless the
    /// lifetime is shorter than the floor of the watch limits (the minimum interval): then an
    /// event may expire before it is read, which this does not report.
    ///
    /// ```
    /// use argus_domain::Retention;
    /// let day = Retention { max_lifetime_ms: Some(86_400_000), min_lifetime_ms: None };
    /// assert!(day.at_risk(false, true) && day.at_risk(true, false) && !day.at_risk(true, true));
    /// let none = Retention { max_lifetime_ms: None, min_lifetime_ms: Some(1) };
    /// assert!(!none.at_risk(false, false));
    /// ```
    pub fn at_risk(&self, watched: bool, history_complete: bool) -> bool {
        match self.capture_within() {
            None => false,
            Some(within) => !watched || !history_complete || within.is_zero(),
        }
    }
}

/// An access rule as `im.vector.room.access_rules` gave it: Tchap's (`restricted`,
/// `unrestricted`, `direct`) as they are; another kept only when it is short
/// ([`MAX_ACCESS_RULE_LEN`]) and printable, else `None`.
///
/// ```
/// use argus_domain::access_rule;
/// assert_eq!(access_rule("restricted").as_deref(), Some("restricted"));
/// assert_eq!(access_rule("org.example.rule").as_deref(), Some("org.example.rule"));
/// assert_eq!(access_rule("bad\u{0}rule"), None);
/// assert_eq!(access_rule(""), None);
/// ```
pub fn access_rule(rule: &str) -> Option<String> {
    let printable = rule.chars().all(|c| !c.is_control() && !c.is_whitespace());
    (!rule.is_empty() && rule.len() <= MAX_ACCESS_RULE_LEN && printable).then(|| rule.to_owned())
}

/// What a room's state says of it beyond name, topic, alias and members.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RoomMetadata {
    /// The room version (`m.room.create` `room_version`; `1` when it says none).
    #[serde(default)]
    pub room_version: Option<String>,
    /// `m.room.retention`, when it holds a valid lifetime.
    #[serde(default)]
    pub retention: Option<Retention>,
    /// `im.vector.room.access_rules` `rule` ([`access_rule`]).
    #[serde(default)]
    pub access_rule: Option<String>,
    /// Joined members whose user id's server name is one of the configured external
    /// homeservers (Tchap's `agent.externe.tchap.gouv.fr`: people outside government).
    #[serde(default)]
    pub external_member_count: u32,
}
