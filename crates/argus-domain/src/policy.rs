//! The clearance policy as pure functions: who sees what, and how classifications change.
//!
//! The store applies the same rule inside its SQL (`org_id = viewer.org AND classification <=
//! viewer.clearance`); these functions are the reference it is tested against.

use time::{Duration, OffsetDateTime};

use crate::{Classification, Error, OrgId, Result, Scope, UserId, Viewer};

/// How recent the newest message of a room must be for the room to count as active.
pub const ACTIVE_WINDOW: Duration = Duration::hours(24);

/// Whether `viewer` may see a record of organisation `org` classified `level`
/// (same organisation, and no read up).
///
/// ```
/// use argus_domain::{policy, Classification, OrgId, Scope, Viewer};
/// let org: OrgId = "dgsi".parse()?;
/// let v = Viewer::new("bob".parse()?, org.clone(), Classification::Secret, [Scope::Read]);
/// assert!(policy::is_visible(&v, &org, Classification::Secret));
/// assert!(!policy::is_visible(&v, &org, Classification::TopSecret));
/// # Ok::<(), argus_domain::Error>(())
/// ```
pub fn is_visible(viewer: &Viewer, org: &OrgId, level: Classification) -> bool {
    &viewer.org == org && level <= viewer.clearance
}

/// The classification a room keeps when it is ingested again at `requested`: never lower
/// than what it had.
///
/// ```
/// use argus_domain::{policy::merge_classification, Classification::*};
/// assert_eq!(merge_classification(Some(Secret), Restricted), Secret);
/// assert_eq!(merge_classification(Some(Restricted), Secret), Secret);
/// assert_eq!(merge_classification(None, Restricted), Restricted);
/// ```
pub fn merge_classification(stored: Option<Classification>, requested: Classification) -> Classification {
    stored.map_or(requested, |s| s.max(requested))
}

/// Whether an edit (`m.replace`) sent by `editor` may replace the content of `original`: only
/// its own sender may, and never that of an original whose content is unknown (`undecrypted`:
/// it arrived encrypted and was not decrypted, so its type cannot be checked) or that was
/// redacted (Matrix specification, event replacements). A decrypted original is edited like a
/// plaintext one. The same rule holds within one fetch and across fetches.
///
/// ```
/// use argus_domain::{policy, MessageRecord, UserId};
/// let ana: UserId = "@ana:agent.tchap.gouv.fr".parse()?;
/// let eve: UserId = "@eve:agent.tchap.gouv.fr".parse()?;
/// let m = MessageRecord::text("$1".parse()?, ana.clone(), "rdv 10h", time::OffsetDateTime::UNIX_EPOCH);
/// assert!(policy::may_edit(&m.sender, m.undecrypted(), m.redacted, &ana));
/// assert!(!policy::may_edit(&m.sender, m.undecrypted(), m.redacted, &eve));
/// assert!(!policy::may_edit(&m.sender, true, false, &ana));
/// # Ok::<(), argus_domain::Error>(())
/// ```
pub fn may_edit(original_sender: &UserId, undecrypted: bool, redacted: bool, editor: &UserId) -> bool {
    original_sender == editor && !undecrypted && !redacted
}

/// Whether a redaction sent by `redactor` may purge a message sent by `original_sender`: when
/// the homeserver confirms it (it serves the target as redacted: it checked the redactor's
/// power level), or when the redactor is the message's own sender.
///
/// ```
/// use argus_domain::{policy, UserId};
/// let ana: UserId = "@ana:agent.tchap.gouv.fr".parse()?;
/// let eve: UserId = "@eve:agent.tchap.gouv.fr".parse()?;
/// assert!(policy::may_redact(&ana, &ana, false));
/// assert!(policy::may_redact(&ana, &eve, true));
/// assert!(!policy::may_redact(&ana, &eve, false));
/// # Ok::<(), argus_domain::Error>(())
/// ```
pub fn may_redact(original_sender: &UserId, redactor: &UserId, confirmed: bool) -> bool {
    confirmed || original_sender == redactor
}

/// Refuses to let a caller classify material above their own clearance.
///
/// ```
/// use argus_domain::{policy, Classification, Scope, Viewer};
/// let v = Viewer::new("a".parse()?, "o".parse()?, Classification::Restricted, [Scope::Ingest]);
/// assert!(policy::check_may_classify(&v, Classification::Restricted).is_ok());
/// assert!(policy::check_may_classify(&v, Classification::Secret).is_err());
/// # Ok::<(), argus_domain::Error>(())
/// ```
pub fn check_may_classify(viewer: &Viewer, requested: Classification) -> Result<()> {
    if requested > viewer.clearance {
        return Err(Error::AboveClearance { requested, clearance: viewer.clearance });
    }
    Ok(())
}

/// Refuses an action when the caller lacks its scope.
pub fn require_scope(viewer: &Viewer, scope: Scope) -> Result<()> {
    if viewer.has_scope(scope) { Ok(()) } else { Err(Error::MissingScope(scope)) }
}

/// Whether a room whose newest visible message was sent at `last_activity` counts as active
/// at `now`.
pub fn is_active(last_activity: Option<OffsetDateTime>, now: OffsetDateTime) -> bool {
    last_activity.is_some_and(|t| t > now - ACTIVE_WINDOW)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn level() -> impl Strategy<Value = Classification> {
        (0usize..5).prop_map(|i| Classification::ALL[i])
    }

    proptest! {
        #[test]
        fn merge_never_lowers(a in level(), b in level()) {
            let m = merge_classification(Some(a), b);
            prop_assert!(m >= a && m >= b);
            prop_assert!(m == a || m == b);
        }

        #[test]
        fn visibility_is_org_and_no_read_up(clear in level(), rec in level(), same_org: bool) {
            let org: OrgId = "o1".parse().map_err(|e| TestCaseError::fail(format!("{e}")))?;
            let other: OrgId = "o2".parse().map_err(|e| TestCaseError::fail(format!("{e}")))?;
            let v = Viewer::new("a".parse().map_err(|e| TestCaseError::fail(format!("{e}")))?, org.clone(), clear, []);
            let rec_org = if same_org { &org } else { &other };
            prop_assert_eq!(is_visible(&v, rec_org, rec), same_org && rec <= clear);
        }
    }

    #[test]
    fn active_window() {
        let now = OffsetDateTime::now_utc();
        assert!(is_active(Some(now - Duration::hours(23)), now));
        assert!(!is_active(Some(now - Duration::hours(25)), now));
        assert!(!is_active(None, now));
    }

    #[test]
    fn scope_required() {
        let v = Viewer::new(
            "a".parse().unwrap_or_else(|_| unreachable!()),
            "o".parse().unwrap_or_else(|_| unreachable!()),
            Classification::Secret,
            [Scope::Read],
        );
        assert!(require_scope(&v, Scope::Read).is_ok());
        assert_eq!(require_scope(&v, Scope::Ingest), Err(Error::MissingScope(Scope::Ingest)));
    }
}
