//! An account given instead of a homeserver URL (ingest, joined rooms, watch, post): exactly
//! one of the two; the account is resolved to its homeserver
//! ([`argus_matrix::Connector::resolve_account`]) and the token confirmed to be the account's
//! ([`argus_matrix::Connector::confirm_account`]) before anything is read or stored. The
//! resolved URL then takes the place of the caller's `homeserver_url`, so it is what the call
//! records, audits, seals into a watch's binding and locks the room to, as a URL given
//! directly is.
//!
//! A call whose account cannot be used (malformed, not resolved, another account's token) is a
//! refusal, like malformed input: nothing of a room was read, nothing is stored, and it is
//! counted and logged rather than audited (the permanent trail is not for refusals anyone can
//! repeat). Two exceptions: an account whose discovery the outbound policy refuses (a server
//! name, or the homeserver its `.well-known` file names, on a private address or off the
//! allow-list) is audited FAILED like a `homeserverUrl` the policy refuses, its record naming
//! `https://{server name}` ([`Unresolved::audit_as`]); and a post, every one of which is
//! audited, sent or refused (see [`crate::post`]). The resolution happens after the scope check
//! and the caller's rate, so a caller without the scope cannot make the server reach out.

use argus_matrix::{
    Session,
    discovery::{Account, Resolved},
};

use crate::{Error, Result, Services};

/// What the caller named the homeserver with: exactly one of a non-empty `homeserver_url` and
/// an `account`; `None` when it is the URL, the parsed account otherwise.
pub(crate) fn chosen(homeserver_url: &str, account: Option<&str>) -> Result<Option<Account>> {
    match (homeserver_url.trim().is_empty(), account) {
        (false, None) => Ok(None),
        (true, Some(account)) => account.parse().map(Some).map_err(|e| match e {
            argus_matrix::Error::InvalidInput(message) => Error::InvalidInput(message),
            other => Error::Connector(other),
        }),
        _ => Err(Error::InvalidInput("give exactly one of homeserverUrl and account".into())),
    }
}

/// An account that could not be resolved.
#[derive(Debug)]
pub(crate) struct Unresolved {
    /// Why.
    pub(crate) error: Error,
    /// `https://{server name}` when the outbound policy refused the account's discovery: the
    /// call is then audited as a homeserver URL the policy refuses is, under this name.
    pub(crate) audit_as: Option<String>,
}

impl From<Error> for Unresolved {
    fn from(error: Error) -> Self {
        Self { error, audit_as: None }
    }
}

/// Applies the rule of [`chosen`] and, for an account, resolves it: `homeserver_url` is then
/// the homeserver found. `None` when the caller gave the URL.
pub(crate) async fn resolve(
    services: &Services,
    homeserver_url: &mut String,
    account: Option<&str>,
) -> std::result::Result<Option<Resolved>, Unresolved> {
    let Some(account) = chosen(homeserver_url, account)? else { return Ok(None) };
    let connector = &services.connector;
    let server = connector.server_of(&account).await.map_err(Error::from)?;
    let resolved = connector.resolve_on(&account, &server).await.map_err(|e| {
        let audit_as =
            matches!(e, argus_matrix::Error::OutboundPolicy(_)).then(|| format!("https://{server}"));
        Unresolved { error: e.into(), audit_as }
    })?;
    resolved.homeserver.as_str().clone_into(homeserver_url);
    Ok(Some(resolved))
}

/// Confirms that `session`'s token belongs to the resolved account (any session: its token
/// source renews as on every call).
pub(crate) async fn confirm(services: &Services, session: &Session, resolved: &Resolved) -> Result<()> {
    Ok(services.connector.confirm_account(session, &resolved.owner).await?)
}

#[cfg(test)]
mod tests {
    use super::chosen;

    #[test]
    fn exactly_one_of_the_url_and_the_account() {
        assert!(matches!(chosen("https://matrix.agent.tchap.gouv.fr", None), Ok(None)));
        assert!(matches!(chosen("", Some("@jean:agent.tchap.gouv.fr")), Ok(Some(_))));
        assert!(matches!(chosen("  ", Some("jean@finances.gouv.fr")), Ok(Some(_))));
        for (url, account) in [
            ("", None),
            (" ", None),
            ("https://matrix.agent.tchap.gouv.fr", Some("@jean:agent.tchap.gouv.fr")),
        ] {
            let err = chosen(url, account).unwrap_err();
            assert_eq!(err.code(), "INVALID_INPUT");
            let message = err.to_string();
            assert!(message.contains("homeserverUrl") && message.contains("account"), "{message}");
        }
        let err = chosen("", Some("jean")).unwrap_err();
        assert!(matches!(err, crate::Error::InvalidInput(_)), "{err:?}");
    }
}
