//! Secrecy levels and their names (contract names and French protection markings).

use std::{fmt, str::FromStr};

use crate::Error;

/// Secrecy level of a room or message, lowest first.
///
/// The order is total: a viewer sees a record only if `record <= viewer clearance`.
/// Parsing accepts the contract names (`UNCLASSIFIED`, `TOP_SECRET`, ...) and the French
/// markings (`NON PROTÉGÉ`, `DIFFUSION RESTREINTE`, `SECRET`, `TRÈS SECRET`), case-insensitive,
/// with or without accents.
///
/// ```
/// use argus_domain::Classification;
///
/// assert_eq!("DIFFUSION RESTREINTE".parse::<Classification>()?, Classification::Restricted);
/// assert_eq!("très secret".parse::<Classification>()?, Classification::TopSecret);
/// assert_eq!("TOP_SECRET".parse::<Classification>()?, Classification::TopSecret);
/// assert!(Classification::Restricted < Classification::Secret);
/// assert!("COSMIC".parse::<Classification>().is_err());
/// # Ok::<(), argus_domain::Error>(())
/// ```
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Classification {
    /// Not protected ("NON PROTÉGÉ").
    #[default]
    Unclassified,
    /// Restricted distribution ("DIFFUSION RESTREINTE").
    Restricted,
    /// Confidential (the former "CONFIDENTIEL DÉFENSE").
    Confidential,
    /// Secret ("SECRET").
    Secret,
    /// Top secret ("TRÈS SECRET").
    TopSecret,
}

impl Classification {
    /// Every level, lowest first.
    pub const ALL: [Self; 5] =
        [Self::Unclassified, Self::Restricted, Self::Confidential, Self::Secret, Self::TopSecret];

    /// The storage rank: 0 for UNCLASSIFIED up to 4 for TOP_SECRET.
    pub const fn rank(self) -> i16 {
        self as i16
    }

    /// The level of a storage rank.
    ///
    /// ```
    /// use argus_domain::Classification;
    /// assert_eq!(Classification::from_rank(3)?, Classification::Secret);
    /// assert!(Classification::from_rank(9).is_err());
    /// # Ok::<(), argus_domain::Error>(())
    /// ```
    pub fn from_rank(rank: i64) -> Result<Self, Error> {
        usize::try_from(rank)
            .ok()
            .and_then(|r| Self::ALL.get(r).copied())
            .ok_or(Error::UnknownClassificationRank(rank))
    }

    /// The contract (GraphQL) name, e.g. `TOP_SECRET`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Unclassified => "UNCLASSIFIED",
            Self::Restricted => "RESTRICTED",
            Self::Confidential => "CONFIDENTIAL",
            Self::Secret => "SECRET",
            Self::TopSecret => "TOP_SECRET",
        }
    }

    /// The French protection marking, e.g. `TRÈS SECRET`.
    pub const fn french_marking(self) -> &'static str {
        match self {
            Self::Unclassified => "NON PROTÉGÉ",
            Self::Restricted => "DIFFUSION RESTREINTE",
            Self::Confidential => "CONFIDENTIEL",
            Self::Secret => "SECRET",
            Self::TopSecret => "TRÈS SECRET",
        }
    }
}

impl fmt::Display for Classification {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Classification {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        // Fold case, accents and separators so "Très Secret", "TRES_SECRET" and "très-secret" agree.
        let folded: String = s
            .trim()
            .chars()
            .map(|c| match c {
                'é' | 'É' | 'è' | 'È' | 'ê' | 'Ê' => 'E',
                '_' | '-' => ' ',
                c => c.to_ascii_uppercase(),
            })
            .collect();
        let folded = folded.split_whitespace().collect::<Vec<_>>().join(" ");
        match folded.as_str() {
            "UNCLASSIFIED" | "NON PROTEGE" => Ok(Self::Unclassified),
            "RESTRICTED" | "DIFFUSION RESTREINTE" => Ok(Self::Restricted),
            "CONFIDENTIAL" | "CONFIDENTIEL" | "CONFIDENTIEL DEFENSE" => Ok(Self::Confidential),
            "SECRET" => Ok(Self::Secret),
            "TOP SECRET" | "TRES SECRET" => Ok(Self::TopSecret),
            _ => Err(Error::UnknownClassification(truncate_for_message(s))),
        }
    }
}

/// Keeps user input in error messages short.
pub(crate) fn truncate_for_message(s: &str) -> String {
    s.chars().take(64).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for c in Classification::ALL {
            assert_eq!(c.as_str().parse::<Classification>(), Ok(c));
            assert_eq!(c.french_marking().parse::<Classification>(), Ok(c));
            assert_eq!(Classification::from_rank(i64::from(c.rank())), Ok(c));
        }
    }

    #[test]
    fn order_is_rank_order() {
        for w in Classification::ALL.windows(2) {
            assert!(w[0] < w[1]);
            assert!(w[0].rank() < w[1].rank());
        }
    }

    #[test]
    fn rejects_unknown_and_negative() {
        assert!("".parse::<Classification>().is_err());
        assert!("SECRET DEFENSE X".parse::<Classification>().is_err());
        assert!(Classification::from_rank(-1).is_err());
        assert!(Classification::from_rank(5).is_err());
        let long = "x".repeat(10_000);
        match long.parse::<Classification>() {
            Err(Error::UnknownClassification(s)) => assert_eq!(s.len(), 64),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn serde_uses_contract_names() {
        let json = serde_json::to_string(&Classification::TopSecret).unwrap_or_default();
        assert_eq!(json, "\"TOP_SECRET\"");
    }
}
