//! The environment layer: `ARGUS_<KEY>` sets a top-level key, `ARGUS_<SECTION>_<KEY>` a key of a
//! section. Keys hold underscores, so a variable cannot be split blindly: the top-level keys and
//! the sections are read from the configuration's own serde declaration (a section is a field
//! that deserialises as a struct), and a new key or section needs no list kept by hand.

use std::{fmt, sync::LazyLock};

use figment::providers::Env;
use serde::{
    Deserialize, Deserializer,
    de::{self, DeserializeSeed, MapAccess, Visitor, value::StrDeserializer},
    forward_to_deserialize_any,
};

use super::Config;

/// The top-level keys of [`Config`] that take a value, and its sections.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Layout {
    /// Keys set by `ARGUS_<KEY>`.
    pub(super) keys: Vec<&'static str>,
    /// Sections whose keys are set by `ARGUS_<SECTION>_<KEY>`.
    pub(super) sections: Vec<&'static str>,
}

/// The layout of [`Config`], read once from its declaration.
pub(super) static LAYOUT: LazyLock<Layout> = LazyLock::new(layout::<Config>);

/// Reads the top-level layout of a struct deserialised with serde's derive.
pub(super) fn layout<'de, T: Deserialize<'de>>() -> Layout {
    let fields = match T::deserialize(Ask) {
        Err(Answer::Struct(fields)) => fields,
        _ => &[],
    };
    let (mut keys, mut sections) = (Vec::new(), Vec::new());
    for &field in fields {
        match T::deserialize(OneField(Some(field))) {
            Err(Answer::Struct(_)) => sections.push(field),
            _ => keys.push(field),
        }
    }
    Layout { keys, sections }
}

/// Maps an environment variable name (without `ARGUS_`, any case) to a configuration key:
/// `JWT_ISSUER` -> `jwt.issuer`, `DATABASE_URL` -> `database_url`. Other variables are ignored.
///
/// ```
/// use argus_server::config::env_key;
/// assert_eq!(env_key("JWT_HS256_SECRET").as_deref(), Some("jwt.hs256_secret"));
/// assert_eq!(env_key("database_url").as_deref(), Some("database_url"));
/// assert_eq!(env_key("CONFIG"), None);
/// ```
pub fn env_key(name: &str) -> Option<String> {
    let lower = name.to_ascii_lowercase();
    if LAYOUT.keys.contains(&lower.as_str()) {
        return Some(lower);
    }
    LAYOUT.sections.iter().find_map(|section| {
        lower
            .strip_prefix(section)
            .and_then(|rest| rest.strip_prefix('_'))
            .filter(|rest| !rest.is_empty())
            .map(|rest| format!("{section}.{rest}"))
    })
}

/// The `ARGUS_*` provider.
pub(super) fn provider() -> Env {
    Env::prefixed("ARGUS_").filter_map(|key| env_key(key.as_str()).map(Into::into))
}

/// What a type asked of [`Ask`]: a struct (with its fields) or anything else.
#[derive(Debug)]
enum Answer {
    Struct(&'static [&'static str]),
    Other,
}

impl fmt::Display for Answer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a probe of the configuration's shape")
    }
}

impl std::error::Error for Answer {}

impl de::Error for Answer {
    fn custom<T: fmt::Display>(_: T) -> Self {
        Self::Other
    }
}

/// A deserializer that gives no value and answers with what was asked of it.
struct Ask;

impl<'de> Deserializer<'de> for Ask {
    type Error = Answer;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Answer> {
        Err(Answer::Other)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        fields: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, Answer> {
        Err(Answer::Struct(fields))
    }

    forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option
        unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier ignored_any
    }
}

/// A map holding one field, whose value is [`Ask`]: deserialising a struct from it answers
/// what that field's type asked.
struct OneField(Option<&'static str>);

impl<'de> Deserializer<'de> for OneField {
    type Error = Answer;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Answer> {
        visitor.visit_map(self)
    }

    forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option
        unit unit_struct newtype_struct seq tuple tuple_struct map struct enum identifier ignored_any
    }
}

impl<'de> MapAccess<'de> for OneField {
    type Error = Answer;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, Answer> {
        self.0.take().map(|field| seed.deserialize(StrDeserializer::new(field))).transpose()
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Answer> {
        seed.deserialize(Ask)
    }
}

#[cfg(test)]
mod tests {
    use super::{LAYOUT, Layout};

    #[test]
    fn sections_and_keys_come_from_the_declaration() {
        let expected = Layout {
            keys: vec!["bind", "database_url", "data_dir", "allow_remote_development"],
            sections: vec![
                "jwt",
                "oauth",
                "matrix",
                "graphql",
                "fusion",
                "audit",
                "post",
                "watch",
                "evidence",
                "media",
                "oversight",
            ],
        };
        assert_eq!(*LAYOUT, expected);
    }
}
