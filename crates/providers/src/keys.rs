//! Descriptors of configuration keys: for every table of the configuration file, each key's
//! name, type, default, bounds and what it does.
//!
//! They are the one source the CLI's parser (known keys, bounds, environment overrides),
//! `confsync config example` and README's table come from. Each adapter's config struct has
//! a [`Section`] next to it (`zoom::CONFIG`, ...); tests check that its serde fields and the
//! section's keys are the same set, and that the documented defaults and bounds are the ones the
//! code applies, so a key cannot be added, renamed or re-defaulted without its descriptor.
//!
//! Literals (`example`, defaults) are written in the common subset of TOML and JSON: double-quoted
//! strings without escapes other than `\"` and `\\`, integers, `true`/`false` and arrays of those.

use std::fmt;

/// What a key holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Type {
    /// Free text.
    String,
    /// An http(s) URL.
    Url,
    /// A file path.
    Path,
    /// A credential: the value itself, `env:NAME` or `file:/path` (see [`crate::http::Secret`]).
    Secret,
    /// A whole number.
    Integer,
    Bool,
    /// An array of strings.
    Strings,
    /// One of these strings.
    OneOf(&'static [&'static str]),
}

impl fmt::Display for Type {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Type::String => f.write_str("string"),
            Type::Url => f.write_str("URL"),
            Type::Path => f.write_str("path"),
            Type::Secret => f.write_str("secret"),
            Type::Integer => f.write_str("integer"),
            Type::Bool => f.write_str("boolean"),
            Type::Strings => f.write_str("list of strings"),
            Type::OneOf(values) => {
                let quoted: Vec<String> = values.iter().map(|v| format!("\"{v}\"")).collect();
                write!(f, "one of {}", quoted.join(", "))
            }
        }
    }
}

/// What a key is when left out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presence {
    /// It must be set (when its table is there).
    Required,
    /// This value (a literal).
    Default(&'static str),
    /// Unset; the doc says what that means.
    Optional,
}

/// One key of a table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Key {
    pub name: &'static str,
    pub ty: Type,
    pub presence: Presence,
    /// The value `confsync config example` shows (the default when there is one).
    pub example: &'static str,
    /// What it does (one or more sentences).
    pub doc: &'static str,
    /// The accepted range of an integer, both ends included.
    pub bounds: Option<(i64, i64)>,
    /// The environment variable that overrides it.
    pub env: Option<&'static str>,
}

impl Key {
    /// A key that must be set; `example` is shown in the example.
    pub const fn required(
        name: &'static str,
        ty: Type,
        example: &'static str,
        doc: &'static str,
    ) -> Key {
        Key {
            name,
            ty,
            presence: Presence::Required,
            example,
            doc,
            bounds: None,
            env: None,
        }
    }

    /// A key with a default (a literal).
    pub const fn defaulted(
        name: &'static str,
        ty: Type,
        default: &'static str,
        doc: &'static str,
    ) -> Key {
        Key {
            name,
            ty,
            presence: Presence::Default(default),
            example: default,
            doc,
            bounds: None,
            env: None,
        }
    }

    /// A key that may be left unset; `example` is shown, commented out, in the example.
    pub const fn optional(
        name: &'static str,
        ty: Type,
        example: &'static str,
        doc: &'static str,
    ) -> Key {
        Key {
            name,
            ty,
            presence: Presence::Optional,
            example,
            doc,
            bounds: None,
            env: None,
        }
    }

    /// An integer with a default and its accepted range (both ends included).
    pub const fn bounded(
        name: &'static str,
        default: &'static str,
        low: i64,
        high: i64,
        doc: &'static str,
    ) -> Key {
        Key {
            bounds: Some((low, high)),
            ..Key::defaulted(name, Type::Integer, default, doc)
        }
    }

    /// `key`, overridden by the environment variable `var`.
    pub const fn with_env(var: &'static str, key: Key) -> Key {
        Key {
            env: Some(var),
            ..key
        }
    }

    /// The default as README shows it: the literal, `required` or `unset`.
    pub fn default_text(&self) -> &'static str {
        match self.presence {
            Presence::Required => "required",
            Presence::Default(value) => value,
            Presence::Optional => "unset",
        }
    }

    /// The type with its range or values, e.g. `integer, 1 to 64`.
    pub fn type_text(&self) -> String {
        match self.bounds {
            Some((low, high)) => format!("{}, {low} to {high}", self.ty),
            None => self.ty.to_string(),
        }
    }
}

/// One table of the configuration file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Section {
    /// The table's dotted path, e.g. `provider.zoom`.
    pub path: &'static str,
    /// What the table is for.
    pub doc: &'static str,
    /// The table may be left out (the example shows it commented out).
    pub optional: bool,
    pub keys: &'static [Key],
}

impl Section {
    pub fn key(&self, name: &str) -> Option<&'static Key> {
        self.keys.iter().find(|k| k.name == name)
    }
}

/// Every provider adapter's tables, in the order the example shows them.
pub const PROVIDER_SECTIONS: [&Section; 8] = [
    &crate::zoom::CONFIG,
    &crate::teams::CONFIG,
    &crate::webex::CONFIG,
    &crate::daily::CONFIG,
    &crate::jitsi::CONFIG,
    &crate::jitsi::JWT_CONFIG,
    &crate::bigbluebutton::CONFIG,
    &crate::webhook::CONFIG,
];

/// The field names a serde-derived struct accepts (what `deny_unknown_fields` lets through):
/// the derived `Deserialize` names them when it asks for a struct, which this deserializer
/// records and then refuses. Empty for anything that is not a struct.
pub fn serde_fields<'de, T: serde::Deserialize<'de>>() -> &'static [&'static str] {
    use serde::de::value::Error;
    use serde::de::{Error as _, Visitor};

    struct Introspect<'a>(&'a mut &'static [&'static str]);

    impl<'de> serde::Deserializer<'de> for Introspect<'_> {
        type Error = Error;

        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Error> {
            Err(Error::custom("not a struct"))
        }

        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _name: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Error> {
            *self.0 = fields;
            Err(Error::custom("fields recorded"))
        }

        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
            option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
            ignored_any
        }
    }

    let mut fields: &'static [&'static str] = &[];
    let _ = T::deserialize(Introspect(&mut fields));
    fields
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use serde_json::{Map, Value};

    use super::*;
    use crate::{bigbluebutton, daily, jitsi, teams, webex, webhook, zoom};

    /// A literal secret long enough for every adapter's minimum.
    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    /// Each section's serde fields: its keys plus its sub-tables' names.
    fn fields(path: &str) -> &'static [&'static str] {
        match path {
            "provider.zoom" => serde_fields::<zoom::ZoomConfig>(),
            "provider.teams" => serde_fields::<teams::TeamsConfig>(),
            "provider.webex" => serde_fields::<webex::WebexConfig>(),
            "provider.daily" => serde_fields::<daily::DailyConfig>(),
            "provider.jitsi" => serde_fields::<jitsi::JitsiConfig>(),
            "provider.jitsi.jwt" => serde_fields::<jitsi::JitsiJwtConfig>(),
            "provider.bigbluebutton" => serde_fields::<bigbluebutton::BigBlueButtonConfig>(),
            "provider.webhook" => serde_fields::<webhook::WebhookConfig>(),
            other => panic!("no struct for {other}: add it here"),
        }
    }

    /// `key` of section `path` set to `literal` (a secret written as `env:`/`file:` becomes a
    /// literal one, so nothing is read from the environment).
    fn value(key: &Key, literal: &str) -> Value {
        let v: Value = serde_json::from_str(literal)
            .unwrap_or_else(|e| panic!("{}: {literal} is not a JSON literal: {e}", key.name));
        match (&key.ty, &v) {
            (Type::Secret, Value::String(s)) if s.starts_with("env:") || s.starts_with("file:") => {
                Value::String(SECRET.into())
            }
            _ => v,
        }
    }

    /// The section's required keys (their examples), plus `extra`.
    fn minimal(section: &Section, extra: &[(&str, Value)]) -> Map<String, Value> {
        let mut map = Map::new();
        for key in section.keys {
            if key.presence == Presence::Required {
                map.insert(key.name.into(), value(key, key.example));
            }
        }
        for (k, v) in extra {
            map.insert((*k).into(), v.clone());
        }
        map
    }

    /// Builds the adapter `path` names from its table (`jitsi.jwt` inside jitsi's).
    async fn build(path: &str, table: Map<String, Value>) -> Result<(), String> {
        let de = |t: Map<String, Value>| Value::Object(t);
        let store = || async { confsync_store::Store::memory().await.unwrap() };
        let err = |e: serde_json::Error| e.to_string();
        match path {
            "provider.zoom" => {
                zoom::ZoomProvider::new(serde_json::from_value(de(table)).map_err(err)?).map(drop)
            }
            "provider.teams" => {
                teams::TeamsProvider::new(serde_json::from_value(de(table)).map_err(err)?).map(drop)
            }
            "provider.webex" => {
                webex::WebexProvider::new(serde_json::from_value(de(table)).map_err(err)?).map(drop)
            }
            "provider.daily" => {
                daily::DailyProvider::new(serde_json::from_value(de(table)).map_err(err)?).map(drop)
            }
            "provider.jitsi" => jitsi::JitsiProvider::new(
                serde_json::from_value(de(table)).map_err(err)?,
                store().await,
            )
            .map(drop),
            "provider.jitsi.jwt" => {
                let mut outer = minimal(&jitsi::CONFIG, &[]);
                outer.insert("jwt".into(), de(table));
                jitsi::JitsiProvider::new(
                    serde_json::from_value(de(outer)).map_err(err)?,
                    store().await,
                )
                .map(drop)
            }
            "provider.bigbluebutton" => bigbluebutton::BigBlueButtonProvider::new(
                serde_json::from_value(de(table)).map_err(err)?,
                store().await,
            )
            .map(drop),
            "provider.webhook" => {
                webhook::WebhookProvider::new(serde_json::from_value(de(table)).map_err(err)?)
                    .map(drop)
            }
            other => panic!("no adapter for {other}"),
        }
    }

    /// The keys an adapter needs besides its required ones to be built (one way to
    /// authenticate, ...).
    fn buildable(path: &str) -> Vec<(&'static str, Value)> {
        match path {
            "provider.webex" => vec![("access_token", Value::String(SECRET.into()))],
            "provider.jitsi.jwt" => vec![("app_secret", Value::String(SECRET.into()))],
            _ => Vec::new(),
        }
    }

    /// Every key an adapter's config struct accepts has a descriptor, and every descriptor is a
    /// key it accepts.
    #[test]
    fn every_accepted_key_is_described() {
        let paths: Vec<&str> = PROVIDER_SECTIONS.iter().map(|s| s.path).collect();
        for section in PROVIDER_SECTIONS {
            let accepted: BTreeSet<&str> = fields(section.path).iter().copied().collect();
            let mut described: BTreeSet<&str> = section.keys.iter().map(|k| k.name).collect();
            // Sub-tables are sections of their own.
            for child in &paths {
                if let Some(name) = child
                    .strip_prefix(section.path)
                    .and_then(|r| r.strip_prefix('.'))
                {
                    described.insert(name);
                }
            }
            assert_eq!(
                accepted, described,
                "[{}]: serde fields vs descriptors",
                section.path
            );
            let names: Vec<&str> = section.keys.iter().map(|k| k.name).collect();
            assert_eq!(names.len(), section.keys.len());
            for key in section.keys {
                assert!(
                    !key.doc.is_empty(),
                    "{}.{} has no doc",
                    section.path,
                    key.name
                );
                assert!(
                    key.env.is_none(),
                    "provider keys take env:NAME values instead"
                );
            }
        }
    }

    /// Every key set to its example (the default, where there is one) is accepted by serde, and
    /// the documented defaults are the ones serde fills in.
    #[test]
    fn examples_parse_and_defaults_are_the_code_defaults() {
        for section in PROVIDER_SECTIONS {
            let mut every = minimal(section, &[]);
            let mut defaults = minimal(section, &[]);
            for key in section.keys {
                every.insert(key.name.into(), value(key, key.example));
                if let Presence::Default(literal) = key.presence {
                    assert_eq!(key.example, literal);
                    defaults.insert(key.name.into(), value(key, literal));
                }
            }
            let debug = |table: Map<String, Value>| -> String {
                let v = Value::Object(table);
                match section.path {
                    "provider.zoom" => {
                        format!("{:?}", serde_json::from_value::<zoom::ZoomConfig>(v))
                    }
                    "provider.teams" => {
                        format!("{:?}", serde_json::from_value::<teams::TeamsConfig>(v))
                    }
                    "provider.webex" => {
                        format!("{:?}", serde_json::from_value::<webex::WebexConfig>(v))
                    }
                    "provider.daily" => {
                        format!("{:?}", serde_json::from_value::<daily::DailyConfig>(v))
                    }
                    "provider.jitsi" => {
                        format!("{:?}", serde_json::from_value::<jitsi::JitsiConfig>(v))
                    }
                    "provider.jitsi.jwt" => {
                        format!("{:?}", serde_json::from_value::<jitsi::JitsiJwtConfig>(v))
                    }
                    "provider.bigbluebutton" => {
                        format!(
                            "{:?}",
                            serde_json::from_value::<bigbluebutton::BigBlueButtonConfig>(v)
                        )
                    }
                    "provider.webhook" => {
                        format!("{:?}", serde_json::from_value::<webhook::WebhookConfig>(v))
                    }
                    other => panic!("no struct for {other}"),
                }
            };
            let every = debug(every);
            assert!(
                every.starts_with("Ok("),
                "[{}] with every key: {every}",
                section.path
            );
            let left_out = debug(minimal(section, &[]));
            assert!(
                left_out.starts_with("Ok("),
                "[{}] minimal: {left_out}",
                section.path
            );
            assert_eq!(
                left_out,
                debug(defaults),
                "[{}]: a documented default is not the code's",
                section.path
            );
        }
    }

    /// The documented bounds are the adapter's: each end is accepted, one past it refused (by
    /// serde or by the adapter).
    #[tokio::test]
    async fn documented_bounds_are_the_adapters() {
        for section in PROVIDER_SECTIONS {
            let base = buildable(section.path);
            build(section.path, minimal(section, &base))
                .await
                .unwrap_or_else(|e| panic!("[{}] with its required keys: {e}", section.path));
            for key in section.keys {
                if let Type::OneOf(values) = key.ty {
                    for v in values {
                        let mut t = minimal(section, &base);
                        t.insert(key.name.into(), Value::String((*v).into()));
                        // JaaS needs keys of its own (an RS256 key, key_id): its error says so.
                        if let Err(e) = build(section.path, t).await {
                            assert!(
                                e.starts_with(&format!("jwt.mode = \"{v}\"")),
                                "{}.{} = {v:?}: {e}",
                                section.path,
                                key.name
                            );
                        }
                    }
                    let mut t = minimal(section, &base);
                    t.insert(key.name.into(), Value::String("no-such-value".into()));
                    assert!(
                        build(section.path, t).await.is_err(),
                        "{}.{}",
                        section.path,
                        key.name
                    );
                }
                let Some((low, high)) = key.bounds else {
                    continue;
                };
                for (v, ok) in [
                    (low, true),
                    (high, true),
                    (low - 1, false),
                    (high + 1, false),
                ] {
                    let mut t = minimal(section, &base);
                    t.insert(key.name.into(), Value::from(v));
                    let built = build(section.path, t).await;
                    assert_eq!(
                        built.is_ok(),
                        ok,
                        "{}.{} = {v}: {built:?}",
                        section.path,
                        key.name
                    );
                }
            }
        }
    }

    #[test]
    fn serde_fields_of_a_non_struct_is_empty() {
        assert!(serde_fields::<String>().is_empty());
        assert_eq!(
            serde_fields::<webhook::WebhookConfig>(),
            ["url", "secret", "timeout_secs", "name"]
        );
    }
}
