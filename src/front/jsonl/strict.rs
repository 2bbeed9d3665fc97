//! Strict JSON objects for the request parser: a key given twice is an error naming it, and an
//! error inside a member's value names the member.
//!
//! Why not `serde_json::Value` (or a `BTreeMap` field): both keep the *last* of two equal keys,
//! while other JSON parsers keep the first or refuse the text. A request must mean one thing to
//! every reader (a client's validator, a log filter, this helper), so which `dest` is written
//! can never depend on the parser: a repeated key makes the line invalid. And serde's messages
//! about a value ("invalid value: integer `-1`, expected u64") do not say where it was; here
//! every such message is prefixed with the member's name.
//!
//! A line is read once into its members, each value left as unparsed text ([`RawValue`]); the
//! request structs are then deserialized from those members, so serde's derive still reports
//! unknown and missing fields, and each value is parsed exactly once.

use std::collections::{BTreeMap, HashSet};
use std::fmt;

use serde::de::value::{MapAccessDeserializer, StrDeserializer};
use serde::de::{self, Deserialize, DeserializeSeed, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

/// The members of one JSON object, in order, each value unparsed.
pub(super) struct Members<'a>(Vec<(String, &'a RawValue)>);

impl<'a> Members<'a> {
    /// Read `text` as one JSON object. A syntax error, or JSON that is not an object (a
    /// [`serde_json::error::Category::Data`] error), comes back as serde_json's error.
    pub fn parse(text: &'a str) -> Result<Members<'a>, serde_json::Error> {
        serde_json::from_str(text)
    }

    /// The first key that is given again, if any.
    pub fn repeated(&self) -> Option<&str> {
        // A set, not a scan of the earlier keys: a hostile 1 MiB line can hold 100,000 keys.
        let mut seen = HashSet::with_capacity(self.0.len());
        self.0
            .iter()
            .map(|(key, _)| key.as_str())
            .find(|key| !seen.insert(*key))
    }

    /// The (first) value of `key`.
    pub fn get(&self, key: &str) -> Option<&'a RawValue> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|&(_, value)| value)
    }

    /// `T` deserialized from the members whose key `keep` accepts, as if they were the whole
    /// object. An error in a member's value names the member.
    pub fn deserialize<T: Deserialize<'a>>(
        &self,
        keep: impl Fn(&str) -> bool,
    ) -> Result<T, serde_json::Error> {
        let members = self.0.iter().filter(|(key, _)| keep(key));
        T::deserialize(MapAccessDeserializer::new(Named {
            members,
            value: None,
        }))
    }
}

impl<'de> Deserialize<'de> for Members<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Object;
        impl<'de> Visitor<'de> for Object {
            type Value = Members<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Members<'de>, A::Error> {
                let mut members = Vec::new();
                while let Some(key) = map.next_key::<String>()? {
                    members.push((key, map.next_value()?));
                }
                Ok(Members(members))
            }
        }
        deserializer.deserialize_map(Object)
    }
}

/// The members as serde's `MapAccess`, remembering the key of the value about to be read.
struct Named<'s, 'a, I: Iterator<Item = &'s (String, &'a RawValue)>>
where
    'a: 's,
{
    members: I,
    value: Option<(&'s str, &'a RawValue)>,
}

impl<'s, 'a: 's, I: Iterator<Item = &'s (String, &'a RawValue)>> MapAccess<'a>
    for Named<'s, 'a, I>
{
    type Error = serde_json::Error;

    fn next_key_seed<K: DeserializeSeed<'a>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, serde_json::Error> {
        let Some((key, value)) = self.members.next() else {
            return Ok(None);
        };
        self.value = Some((key, value));
        seed.deserialize(StrDeserializer::new(key)).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'a>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, serde_json::Error> {
        let (key, value) = self
            .value
            .take()
            .expect("serde reads a key before its value");
        seed.deserialize(value).map_err(|e| in_member(key, &e))
    }
}

/// `error`, said to be about member `key`. serde_json's position is dropped: it counts from
/// the start of the member's value, not of the line, and would only mislead.
fn in_member(key: &str, error: &serde_json::Error) -> serde_json::Error {
    let message = error.to_string();
    let at = format!(" at line {} column {}", error.line(), error.column());
    let message = message.strip_suffix(&at).unwrap_or(&message);
    de::Error::custom(format_args!("`{key}`: {message}"))
}

/// For `#[serde(deserialize_with)]`: an object of strings in which no key repeats (`hashes`).
pub(super) fn distinct_keys<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<BTreeMap<String, String>, D::Error> {
    deserializer.deserialize_map(DistinctKeys { fold_case: false })
}

/// For `#[serde(deserialize_with)]`: an object of strings in which no key repeats, ignoring
/// ASCII case (`headers`: HTTP header names are case-insensitive, so `X-A` and `x-a` would be
/// two values for one header, and which one a server honours is anybody's guess).
pub(super) fn distinct_header_names<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<BTreeMap<String, String>, D::Error> {
    deserializer.deserialize_map(DistinctKeys { fold_case: true })
}

struct DistinctKeys {
    fold_case: bool,
}

impl<'de> Visitor<'de> for DistinctKeys {
    type Value = BTreeMap<String, String>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object of strings")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut entries = BTreeMap::new();
        let mut seen = HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            let folded = if self.fold_case {
                key.to_ascii_lowercase()
            } else {
                key.clone()
            };
            if !seen.insert(folded) {
                let note = if self.fold_case {
                    " (header names are case-insensitive)"
                } else {
                    ""
                };
                return Err(de::Error::custom(format_args!(
                    "duplicate key `{key}`{note}"
                )));
            }
            let value = map.next_value()?;
            entries.insert(key, value);
        }
        Ok(entries)
    }
}
