//! The caller on whose behalf a read or an ingestion runs, as established from their token.

use std::{collections::BTreeSet, fmt, str::FromStr};

use crate::{ActorId, Classification, Error, OrgId};

/// A permission carried by the caller's token (`scope` claim, space-delimited).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    /// `tchap:read`: read rooms, messages and statistics.
    Read,
    /// `tchap:ingest`: run ingestions.
    Ingest,
    /// `tchap:audit`: read the ingestion history.
    Audit,
    /// `tchap:audit:chain`: see each audit record's place in its organisation's hash chain
    /// (`seq`, `hash`), for oversight. Without it a reader cannot count, from gaps in the
    /// sequence, the records above their clearance.
    AuditChain,
    /// `tchap:post`: post notes into Tchap rooms.
    Post,
    /// `tchap:redacted`: for oversight, also read the content a message had when the archive
    /// captured it, when it was redacted afterwards (kept under legal hold; everyone else sees
    /// it redacted).
    Redacted,
    /// `tchap:quarantine`: download files the scanner found infected (always as
    /// `application/octet-stream`), for incident response; with `tchap:read` and the message's
    /// gate like any other download.
    Quarantine,
    /// `tchap:disclose`: write disclosure packages of rooms (`discloseTchapRoom`), limited to
    /// what the caller may read, and download them.
    Disclose,
}

impl Scope {
    /// The scope as it appears in a token.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Read => "tchap:read",
            Self::Ingest => "tchap:ingest",
            Self::Audit => "tchap:audit",
            Self::AuditChain => "tchap:audit:chain",
            Self::Post => "tchap:post",
            Self::Redacted => "tchap:redacted",
            Self::Quarantine => "tchap:quarantine",
            Self::Disclose => "tchap:disclose",
        }
    }

    /// Parses a space-delimited `scope` claim, ignoring scopes of other services.
    ///
    /// ```
    /// use argus_domain::Scope;
    /// let s = Scope::parse_claim("openid tchap:read  tchap:audit");
    /// assert_eq!(s.into_iter().collect::<Vec<_>>(), vec![Scope::Read, Scope::Audit]);
    /// ```
    pub fn parse_claim(claim: &str) -> BTreeSet<Scope> {
        claim.split_whitespace().filter_map(|s| s.parse().ok()).collect()
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Scope {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        match s {
            "tchap:read" => Ok(Self::Read),
            "tchap:ingest" => Ok(Self::Ingest),
            "tchap:audit" => Ok(Self::Audit),
            "tchap:audit:chain" => Ok(Self::AuditChain),
            "tchap:post" => Ok(Self::Post),
            "tchap:redacted" => Ok(Self::Redacted),
            "tchap:quarantine" => Ok(Self::Quarantine),
            "tchap:disclose" => Ok(Self::Disclose),
            other => Err(Error::UnknownScope(crate::classification::truncate_for_message(other))),
        }
    }
}

/// Who is asking: identity, organisation, clearance and scopes, all taken from the token.
///
/// Every read of stored material takes a `&Viewer`; nothing else decides the tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Viewer {
    /// The caller (`sub`).
    pub actor: ActorId,
    /// The caller's organisation; the only tenant they can see.
    pub org: OrgId,
    /// The highest level the caller may see.
    pub clearance: Classification,
    /// What the caller may do.
    pub scopes: BTreeSet<Scope>,
}

impl Viewer {
    /// Builds a viewer.
    pub fn new(
        actor: ActorId,
        org: OrgId,
        clearance: Classification,
        scopes: impl IntoIterator<Item = Scope>,
    ) -> Self {
        Self { actor, org, clearance, scopes: scopes.into_iter().collect() }
    }

    /// Whether the caller holds a scope.
    pub fn has_scope(&self, scope: Scope) -> bool {
        self.scopes.contains(&scope)
    }
}

#[cfg(test)]
mod tests {
    use super::Scope;

    /// Every scope reads back from its token form; `tchap:redacted` is its own scope, granted by
    /// nothing else.
    #[test]
    fn scopes_round_trip_and_redacted_content_has_its_own() {
        let all = [Scope::Read, Scope::Ingest, Scope::Audit, Scope::AuditChain, Scope::Post, Scope::Redacted];
        for scope in all {
            assert_eq!(scope.as_str().parse::<Scope>().ok(), Some(scope));
        }
        assert_eq!(Scope::Redacted.as_str(), "tchap:redacted");
        let oversight = Scope::parse_claim("tchap:read tchap:audit tchap:audit:chain");
        assert!(!oversight.contains(&Scope::Redacted));
        assert!(Scope::parse_claim("tchap:read tchap:redacted").contains(&Scope::Redacted));
    }
}
