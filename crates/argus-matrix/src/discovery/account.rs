//! An account as an analyst knows it: a Matrix user id or an e-mail address.

use std::{fmt, str::FromStr};

use ruma::OwnedUserId;

use crate::Error;

/// The longest e-mail address accepted (RFC 5321's path limit, less the brackets).
pub const MAX_EMAIL_LEN: usize = 254;

/// The longest local part of an e-mail address (RFC 5321).
const MAX_LOCAL_LEN: usize = 64;

/// An account given instead of a homeserver URL: a Matrix user id, whose server name leads to
/// its homeserver by server discovery, or an e-mail address, which the configured identity
/// server maps to a server name first.
///
/// ```
/// use argus_matrix::discovery::Account;
///
/// let user: Account = "@jean.dupont-finances.gouv.fr:agent.finances.tchap.gouv.fr".parse()?;
/// assert_eq!(user.server_name().map(|s| s.as_str()), Some("agent.finances.tchap.gouv.fr"));
/// let mail: Account = "jean.dupont@finances.gouv.fr".parse()?;
/// assert!(matches!(mail, Account::Email(_)));
/// assert!("jean.dupont".parse::<Account>().is_err());
/// # Ok::<(), argus_matrix::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Account {
    /// A Matrix user id (`@localpart:server.name`).
    User(OwnedUserId),
    /// An e-mail address (`name@domain.tld`), as written (surrounding spaces removed).
    Email(String),
}

impl Account {
    /// The server name of a user id (an e-mail address has none until it is looked up).
    pub fn server_name(&self) -> Option<&ruma::ServerName> {
        match self {
            Self::User(user) => Some(user.server_name()),
            Self::Email(_) => None,
        }
    }
}

impl fmt::Display for Account {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::User(user) => f.write_str(user.as_str()),
            Self::Email(address) => f.write_str(address),
        }
    }
}

impl FromStr for Account {
    type Err = Error;

    /// Parses a user id (it starts with `@`) or an e-mail address; anything else is
    /// [`Error::InvalidInput`]. The text is not echoed in the error.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.starts_with('@') {
            return OwnedUserId::try_from(s)
                .ok()
                .filter(|user| is_localpart(user.localpart()))
                .map(Self::User)
                .ok_or_else(|| {
                    Error::InvalidInput("account: not a valid Matrix user id (@name:server)".into())
                });
        }
        if is_email(s) {
            return Ok(Self::Email(s.to_owned()));
        }
        Err(Error::InvalidInput(
            "account must be a Matrix user id (@name:server) or an e-mail address".into(),
        ))
    }
}

/// A localpart as the specification's historical grammar allows it: printable ASCII but `:`,
/// not empty (the parser is more lenient).
fn is_localpart(localpart: &str) -> bool {
    !localpart.is_empty() && localpart.bytes().all(|b| (0x21..=0x7e).contains(&b) && b != b':')
}

/// A simple, bounded check of an e-mail address: one `@`, a local part of 1 to 64 printable
/// characters without spaces, quotes or angle brackets, and a domain of at least two labels of
/// letters, digits and hyphens.
fn is_email(s: &str) -> bool {
    if s.is_empty() || s.len() > MAX_EMAIL_LEN {
        return false;
    }
    let Some((local, domain)) = s.split_once('@') else { return false };
    let local_ok = !local.is_empty()
        && local.len() <= MAX_LOCAL_LEN
        && local.chars().all(|c| c.is_ascii_graphic() && !"\"<>()[]\\,;:@".contains(c))
        && !local.starts_with('.')
        && !local.ends_with('.');
    let labels: Vec<&str> = domain.split('.').collect();
    let domain_ok = labels.len() >= 2
        && labels.iter().all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
    local_ok && domain_ok
}

/// Who the token of a resolved account must belong to.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Owner {
    /// Exactly this user (compared without regard to ASCII case): the user id given, or for an
    /// e-mail address the user id Tchap derives from it ([`tchap_localpart`]) on the server
    /// the identity server named.
    User(OwnedUserId),
}

/// The localpart Tchap gives the account of an e-mail address: the address with its `@`
/// replaced by `-`, lowercased, keeping only the characters a localpart may hold
/// (`a`–`z`, `0`–`9`, `_-./=`). This is the rule of Tchap's Matrix Authentication Service
/// (`email_to_mxid_localpart`), which makes `@jean.dupont-finances.gouv.fr:…` of
/// `jean.dupont@finances.gouv.fr`.
///
/// ```
/// use argus_matrix::discovery::tchap_localpart;
///
/// assert_eq!(tchap_localpart("Jean.Dupont@Finances.gouv.fr"), "jean.dupont-finances.gouv.fr");
/// assert_eq!(tchap_localpart("jean+tchap@finances.gouv.fr"), "jeantchap-finances.gouv.fr");
/// ```
pub fn tchap_localpart(address: &str) -> String {
    address
        .trim()
        .replace('@', "-")
        .to_lowercase()
        .chars()
        .filter(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_-./=".contains(*c))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_ids_and_addresses_are_told_apart() {
        let user: Account = " @jean.dupont-finances.gouv.fr:agent.finances.tchap.gouv.fr ".parse().unwrap();
        assert_eq!(user.to_string(), "@jean.dupont-finances.gouv.fr:agent.finances.tchap.gouv.fr");
        assert_eq!(user.server_name().unwrap().as_str(), "agent.finances.tchap.gouv.fr");
        let with_port: Account = "@alice:127.0.0.1:8008".parse().unwrap();
        assert_eq!(with_port.server_name().unwrap().as_str(), "127.0.0.1:8008");
        let mail: Account = "Jean.Dupont+tchap@finances.gouv.fr".parse().unwrap();
        assert_eq!(mail, Account::Email("Jean.Dupont+tchap@finances.gouv.fr".into()));
        assert_eq!(mail.server_name(), None);
    }

    #[test]
    fn anything_else_is_invalid_input_without_echo() {
        let long_local = format!("{}@finances.gouv.fr", "a".repeat(65));
        let long_domain = format!("a@{}.fr", "b".repeat(250));
        for bad in [
            "",
            "jean.dupont",
            "@jean",
            "@:agent.tchap.gouv.fr",
            "@jean dupont:agent.tchap.gouv.fr",
            "jean@localhost",
            "jean@@finances.gouv.fr",
            "jean@finances..gouv.fr",
            "jean@-finances.gouv.fr",
            "je an@finances.gouv.fr",
            "<jean@finances.gouv.fr>",
            ".jean@finances.gouv.fr",
            "jean@finances.gouv.fr/path",
            "https://matrix.agent.tchap.gouv.fr",
            "syt_secret_token",
            long_local.as_str(),
            long_domain.as_str(),
        ] {
            let err = bad.parse::<Account>().unwrap_err();
            assert_eq!(err.code(), "INVALID_INPUT", "{bad:?}");
            assert!(bad.trim().is_empty() || !err.to_string().contains(bad.trim()), "{bad:?} echoed");
        }
    }
}
