//! Notes posted back into a Tchap room: the write-down guard, the protection marking put in
//! front of every note, and what the audit trail keeps of a post.
//!
//! Tchap is accredited up to *Diffusion Restreinte*: a note classified above the configured
//! ceiling (default RESTRICTED) never leaves. Nor does a note above the caller's clearance, or
//! above the level the archive holds the room at: the note comes back into the archive with the
//! room's next ingestion, at the room's level, and must not be written down by doing so. All of
//! this is decided before any network call.

use sha2::{Digest as _, Sha256};

use crate::{Classification, Error, Result, Viewer};

/// The longest note accepted, in bytes (before the marking).
pub const MAX_NOTE_BYTES: usize = 32 * 1024;

/// The default marking put in front of a note: `[DIFFUSION RESTREINTE] `.
pub const DEFAULT_MARKING: &str = "[{marking}] ";

/// The write-down guard and marking of posted notes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostPolicy {
    /// The highest level a note may carry out of the archive.
    pub ceiling: Classification,
    /// What goes in front of every note: `{marking}` becomes the French protection marking
    /// (`DIFFUSION RESTREINTE`), `{level}` the contract name (`RESTRICTED`).
    pub marking: String,
}

impl Default for PostPolicy {
    fn default() -> Self {
        Self { ceiling: Classification::Restricted, marking: DEFAULT_MARKING.to_owned() }
    }
}

impl PostPolicy {
    /// Checks a note of `level` by `viewer` into a room the archive holds at `room_level`.
    ///
    /// ```
    /// use argus_domain::{post::PostPolicy, Classification::*, Scope, Viewer};
    /// let policy = PostPolicy::default();
    /// let v = Viewer::new("ana".parse()?, "dgsi".parse()?, Secret, [Scope::Post]);
    /// assert!(policy.check(&v, Restricted, Restricted).is_ok());
    /// assert!(policy.check(&v, Confidential, Secret).is_err()); // above the ceiling
    /// assert!(policy.check(&v, Restricted, Unclassified).is_err()); // written down in the archive
    /// # Ok::<(), argus_domain::Error>(())
    /// ```
    pub fn check(&self, viewer: &Viewer, level: Classification, room_level: Classification) -> Result<()> {
        if level > viewer.clearance {
            return Err(Error::AboveClearance { requested: level, clearance: viewer.clearance });
        }
        if level > self.ceiling {
            return Err(Error::WriteDown { level, limit: self.ceiling, what: "the ceiling for posting" });
        }
        if level > room_level {
            return Err(Error::WriteDown { level, limit: room_level, what: "the room's classification" });
        }
        Ok(())
    }

    /// `body` with the marking of `level` in front of it.
    ///
    /// ```
    /// use argus_domain::{post::PostPolicy, Classification};
    /// let policy = PostPolicy::default();
    /// assert_eq!(policy.marked(Classification::Restricted, "RDV 10h"), "[DIFFUSION RESTREINTE] RDV 10h");
    /// ```
    pub fn marked(&self, level: Classification, body: &str) -> String {
        format!("{}{body}", self.marking_of(level))
    }

    /// The marking of `level` alone.
    pub fn marking_of(&self, level: Classification) -> String {
        self.marking.replace("{marking}", level.french_marking()).replace("{level}", level.as_str())
    }

    /// Checks the configured marking: it must name the level, and be short.
    pub fn validate(&self) -> Result<()> {
        if !(self.marking.contains("{marking}") || self.marking.contains("{level}")) {
            return Err(Error::invalid("post marking", "must contain {marking} or {level}"));
        }
        if self.marking.len() > 256 || self.marking.chars().any(|c| c.is_control() && c != ' ') {
            return Err(Error::invalid(
                "post marking",
                "must be at most 256 bytes, without control characters",
            ));
        }
        Ok(())
    }
}

/// What the audit trail keeps of a post: never the body, only its digest and length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostEvidence {
    /// The event id the homeserver gave the note; `None` when it was not sent.
    pub event_id: Option<String>,
    /// SHA-256 of the body as sent (marking included).
    pub body_sha256: [u8; 32],
    /// Length of the body as sent, in bytes.
    pub body_length: i64,
}

impl PostEvidence {
    /// The evidence of `body` (as sent), before the homeserver answered.
    pub fn of(body: &str) -> Self {
        Self {
            event_id: None,
            body_sha256: Sha256::digest(body.as_bytes()).into(),
            body_length: i64::try_from(body.len()).unwrap_or(i64::MAX),
        }
    }
}
