//! `[post]`: notes posted into Tchap rooms.

use serde::Deserialize;

use argus_domain::{Classification, PostPolicy};

use crate::{Error, Result};

/// Notes posted into Tchap rooms (`postTchapMessage`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PostConfig {
    /// The highest classification a note may carry out of the archive; Tchap is accredited up
    /// to RESTRICTED (*Diffusion Restreinte*), the default.
    pub max_classification: Classification,
    /// Put in front of every note: `{marking}` becomes the French protection marking
    /// (`DIFFUSION RESTREINTE`), `{level}` the contract name (`RESTRICTED`). Default
    /// `[{marking}] `.
    pub marking: String,
}

impl Default for PostConfig {
    fn default() -> Self {
        let policy = PostPolicy::default();
        Self { max_classification: policy.ceiling, marking: policy.marking }
    }
}

impl PostConfig {
    /// The policy the use-case applies.
    pub fn policy(&self) -> PostPolicy {
        PostPolicy { ceiling: self.max_classification, marking: self.marking.clone() }
    }

    /// Checks what typing alone cannot.
    pub(super) fn validate(&self) -> Result<()> {
        self.policy().validate().map_err(|e| Error::Config(format!("post: {e}")))
    }
}
