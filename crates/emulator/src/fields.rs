//! Partial responses: Google's `fields` system parameter.
//!
//! Syntax (Google's "Performance tips" page for the Calendar API and the Drive guide "Return
//! specific fields", which describe the same system parameter):
//!
//! - `a,b` selects several fields;
//! - `a/b/c` selects `c` inside `b` inside `a` (through arrays: `items/id` is each item's `id`);
//! - `a(b,c)` selects `b` and `c` of `a` (of each element when `a` is an array); groups nest:
//!   `items(id,conferenceData(conferenceId,entryPoints(uri)))`;
//! - `*` selects every field of its object (`items/start/*`, `items(*)`, or `*` for everything).
//!
//! Spaces around names are ignored (`name, mimeType` in Google's own example). A mask is checked
//! against the discovery schema of the method's response before the method runs: a name the
//! schema does not have, a sub-selection of a string, or bad syntax is a 400 (see
//! [`invalid_selection`]). Error bodies are never masked.
//!
//! What a mask keeps, where Google documents nothing (the emulator's choice, tested): fields keep
//! the order the full response has them in; a field the resource does not carry is left out (no
//! `null`); an object field whose selected sub-fields are all absent is left out; an array
//! element whose selected fields are all absent stays as `{}` (elements keep their positions).

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::de::{
    Deserialize, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor,
};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::error::ApiError;
use crate::schema;

/// What a mask selects at one level of the response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    /// The whole value.
    All,
    /// Only these fields (`*` stands for every field), each with its own selection.
    Fields(BTreeMap<String, Selection>),
}

/// A parsed `fields` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldMask {
    root: Selection,
}

/// The 400 Google answers for a `fields` value it cannot use: reason `invalidParameter`,
/// location `fields`, message `Invalid field selection <name>` naming the offending name.
///
/// Seen in public reports: the Calendar API answered `fields=pagetoken,items(id)` with 400
/// "Invalid field selection pagetoken" (googleapis/google-api-dotnet-client#1444); Drive answers
/// `files(id,capabilities,canAddChildren)` with "Invalid field selection canAddChildren" (Drive
/// guide "Return specific fields") and `starred` on `files.list` with 400 "Invalid field
/// selection starred" (google/googleapis.dart#23); a captured Drive v3 body for
/// `fields=nonexistentfield` is `{"error":{"code":400,"message":"Invalid field selection
/// nonexistentfield","errors":[{"message":...,"domain":"global","reason":"invalidParameter",
/// "location":"fields","locationType":"parameter"}]}}`. For a syntax error (unbalanced
/// parentheses, an empty name) Google's exact message is not documented; the emulator answers
/// the same envelope naming the text where parsing stopped.
pub fn invalid_selection(what: &str) -> ApiError {
    ApiError::new(
        400,
        "global",
        "invalidParameter",
        format!("Invalid field selection {what}"),
    )
    .at("parameter", "fields")
}

impl FieldMask {
    /// Parses a `fields` value. None for an empty one (no mask: the whole response).
    pub fn parse(text: &str) -> Result<Option<FieldMask>, ApiError> {
        if text.trim().is_empty() {
            return Ok(None);
        }
        let mut parser = Parser {
            text,
            chars: text.char_indices().peekable(),
        };
        let root = parser.list(0)?;
        if let Some((at, _)) = parser.chars.peek() {
            return Err(invalid_selection(text[*at..].trim()));
        }
        Ok(Some(FieldMask {
            root: Selection::Fields(root),
        }))
    }

    /// Checks every name against the discovery schema `schema_name` (e.g. `Events`).
    pub fn check(&self, schema_name: &str) -> Result<(), ApiError> {
        let schema = &schema::discovery()["schemas"][schema_name];
        if schema.is_null() {
            return Ok(());
        }
        check(&self.root, schema)
    }

    /// The selected part of `value`.
    pub fn apply(&self, value: &Value) -> Value {
        serde_json::from_str(&self.apply_str(&value.to_string()))
            .unwrap_or_else(|_| Value::Object(Map::new()))
    }

    /// The selected part of a JSON text (unchanged when it is not JSON). The text is walked
    /// without building a tree: at each level the values are borrowed as raw JSON, the selected
    /// ones copied as they are (or cut down further), the others skipped.
    pub fn apply_str(&self, text: &str) -> String {
        let mut out = String::with_capacity(text.len() / 2);
        match apply_raw(&self.root, text, &mut out) {
            Ok(true) => out,
            Ok(false) => "{}".to_owned(),
            Err(_) => text.to_owned(),
        }
    }
}

struct Parser<'a> {
    text: &'a str,
    chars: std::iter::Peekable<std::str::CharIndices<'a>>,
}

impl Parser<'_> {
    /// `selection (',' selection)*`, up to a `)` (depth > 0) or the end.
    fn list(&mut self, depth: usize) -> Result<BTreeMap<String, Selection>, ApiError> {
        let mut fields = BTreeMap::new();
        loop {
            let (path, sub) = self.selection(depth)?;
            insert(&mut fields, &path, sub);
            self.skip_spaces();
            match self.chars.peek().copied() {
                Some((_, ',')) => {
                    self.chars.next();
                }
                Some((_, ')')) if depth > 0 => return Ok(fields),
                None if depth == 0 => return Ok(fields),
                None => return Err(invalid_selection(self.text.trim())),
                Some((at, _)) => return Err(invalid_selection(self.text[at..].trim())),
            }
        }
    }

    /// `name ('/' name)* ['(' list ')']`.
    fn selection(&mut self, depth: usize) -> Result<(Vec<String>, Selection), ApiError> {
        let mut path = vec![self.name()?];
        loop {
            self.skip_spaces();
            match self.chars.peek().copied() {
                Some((_, '/')) => {
                    self.chars.next();
                    path.push(self.name()?);
                }
                Some((_, '(')) => {
                    self.chars.next();
                    let inner = self.list(depth + 1)?;
                    match self.chars.next() {
                        Some((_, ')')) => return Ok((path, Selection::Fields(inner))),
                        _ => return Err(invalid_selection(self.text.trim())),
                    }
                }
                _ => return Ok((path, Selection::All)),
            }
        }
    }

    fn name(&mut self) -> Result<String, ApiError> {
        self.skip_spaces();
        let start = match self.chars.peek() {
            Some((at, _)) => *at,
            None => return Err(invalid_selection(self.text.trim())),
        };
        let mut end = start;
        while let Some((at, c)) = self.chars.peek().copied() {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '$' | '*' | '.' | '@') {
                end = at + c.len_utf8();
                self.chars.next();
            } else {
                break;
            }
        }
        let name = &self.text[start..end];
        if name.is_empty() || (name.contains('*') && name != "*") {
            let rest = self.text[start..].trim();
            return Err(invalid_selection(if rest.is_empty() {
                self.text.trim()
            } else {
                rest
            }));
        }
        Ok(name.to_owned())
    }

    fn skip_spaces(&mut self) {
        while self.chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
    }
}

/// Adds `path` with `sub` at its end, merging with what is there (`All` wins).
fn insert(fields: &mut BTreeMap<String, Selection>, path: &[String], sub: Selection) {
    let Some((first, rest)) = path.split_first() else {
        return;
    };
    let wanted = if rest.is_empty() {
        sub
    } else {
        let mut inner = BTreeMap::new();
        insert(&mut inner, rest, sub);
        Selection::Fields(inner)
    };
    match fields.remove(first) {
        None => {
            fields.insert(first.clone(), wanted);
        }
        Some(existing) => {
            fields.insert(first.clone(), merge(existing, wanted));
        }
    }
}

fn merge(a: Selection, b: Selection) -> Selection {
    match (a, b) {
        (Selection::All, _) | (_, Selection::All) => Selection::All,
        (Selection::Fields(mut a), Selection::Fields(b)) => {
            for (name, sub) in b {
                let merged = match a.remove(&name) {
                    Some(existing) => merge(existing, sub),
                    None => sub,
                };
                a.insert(name, merged);
            }
            Selection::Fields(a)
        }
    }
}

fn resolve(schema: &Value) -> &Value {
    match schema.get("$ref").and_then(Value::as_str) {
        Some(name) => &schema::discovery()["schemas"][name],
        None => schema,
    }
}

/// Sub-selections go through arrays to their elements' schema.
fn element(schema: &Value) -> &Value {
    let mut schema = resolve(schema);
    while schema.get("type").and_then(Value::as_str) == Some("array") {
        schema = resolve(schema.get("items").unwrap_or(&Value::Null));
    }
    schema
}

fn check(selection: &Selection, schema: &Value) -> Result<(), ApiError> {
    let Selection::Fields(fields) = selection else {
        return Ok(());
    };
    let schema = element(schema);
    let kind = schema.get("type").and_then(Value::as_str);
    let properties = schema.get("properties").and_then(Value::as_object);
    let additional = schema.get("additionalProperties");
    for (name, sub) in fields {
        if kind != Some("object") && kind.is_some() {
            // A sub-selection of a string, number or boolean.
            return Err(invalid_selection(name));
        }
        if kind.is_none() && properties.is_none() {
            // `any`: nothing to check against.
            continue;
        }
        if name == "*" {
            // Every field: what follows is checked against each one that could have it.
            if let Selection::Fields(_) = sub {
                let candidates: Vec<&Value> = properties
                    .into_iter()
                    .flat_map(|p| p.values())
                    .chain(additional)
                    .collect();
                if !candidates.iter().any(|c| check(sub, c).is_ok()) {
                    return Err(first_name(sub)
                        .map_or_else(|| invalid_selection("*"), |n| invalid_selection(&n)));
                }
            }
            continue;
        }
        let child = match properties.and_then(|p| p.get(name)) {
            Some(child) => child,
            None => match additional {
                Some(additional) => additional,
                None => return Err(invalid_selection(name)),
            },
        };
        check(sub, child)?;
    }
    Ok(())
}

fn first_name(selection: &Selection) -> Option<String> {
    match selection {
        Selection::All => None,
        Selection::Fields(fields) => fields.keys().next().cloned(),
    }
}

/// An object key as written: borrowed unless it had escapes.
struct Key<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object key")
            }
            fn visit_borrowed_str<E: serde::de::Error>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
        }
        d.deserialize_str(KeyVisitor)
    }
}

/// Writes the selected part of the JSON `text` to `out`; false (and nothing written) when
/// nothing selected is there. One pass over the text: unselected values are skipped, wholly
/// selected ones copied as written.
fn apply_raw(selection: &Selection, text: &str, out: &mut String) -> serde_json::Result<bool> {
    let mut de = serde_json::Deserializer::from_str(text);
    let written = Filter { selection, out }.deserialize(&mut de)?;
    de.end()?;
    Ok(written)
}

/// Writes the selected part of the next value; false (and nothing written) when nothing
/// selected is there.
struct Filter<'s, 'o> {
    selection: &'s Selection,
    out: &'o mut String,
}

impl<'de> DeserializeSeed<'de> for Filter<'_, '_> {
    type Value = bool;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        match self.selection {
            Selection::All => {
                let raw = <&RawValue>::deserialize(d)?;
                self.out.push_str(raw.get());
                Ok(true)
            }
            Selection::Fields(fields) => d.deserialize_any(FilterVisitor {
                selection: self.selection,
                fields,
                out: self.out,
            }),
        }
    }
}

struct FilterVisitor<'s, 'o> {
    /// `Selection::Fields(fields)`, for the elements of an array.
    selection: &'s Selection,
    fields: &'s BTreeMap<String, Selection>,
    out: &'o mut String,
}

impl<'de> Visitor<'de> for FilterVisitor<'_, '_> {
    type Value = bool;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
        let out = self.out;
        let star = self.fields.get("*");
        let start = out.len();
        out.push('{');
        let mut any = false;
        while let Some(key) = map.next_key::<Key<'de>>()? {
            let merged;
            let sub = match (self.fields.get(key.0.as_ref()), star) {
                (Some(sub), None) | (None, Some(sub)) => sub,
                (Some(sub), Some(all)) => {
                    merged = merge(sub.clone(), all.clone());
                    &merged
                }
                (None, None) => {
                    map.next_value::<IgnoredAny>()?;
                    continue;
                }
            };
            let mark = out.len();
            if any {
                out.push(',');
            }
            push_key(out, &key.0);
            out.push(':');
            if map.next_value_seed(Filter {
                selection: sub,
                out: &mut *out,
            })? {
                any = true;
            } else {
                out.truncate(mark);
            }
        }
        if any {
            out.push('}');
        } else {
            out.truncate(start);
        }
        Ok(any)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<bool, A::Error> {
        let out = self.out;
        out.push('[');
        let mut first = true;
        loop {
            let mark = out.len();
            if !first {
                out.push(',');
            }
            match seq.next_element_seed(Filter {
                selection: self.selection,
                out: &mut *out,
            })? {
                None => {
                    out.truncate(mark);
                    break;
                }
                Some(true) => {}
                // An element with nothing selected keeps its place as `{}`.
                Some(false) => out.push_str("{}"),
            }
            first = false;
        }
        out.push(']');
        Ok(true)
    }

    // A sub-selection of a scalar selects nothing.
    fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_str<E: serde::de::Error>(self, _: &str) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_unit<E: serde::de::Error>(self) -> Result<bool, E> {
        Ok(false)
    }
}

/// A key as a JSON string.
fn push_key(out: &mut String, key: &str) {
    if key.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.push('"');
        out.push_str(key);
        out.push('"');
    } else {
        out.push_str(&serde_json::to_string(key).unwrap_or_default());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn mask(text: &str) -> FieldMask {
        FieldMask::parse(text).unwrap().unwrap()
    }

    fn bad(text: &str) -> String {
        FieldMask::parse(text).unwrap_err().message
    }

    #[test]
    fn paths_groups_and_wildcards_parse_to_one_tree() {
        let a = mask("items(id,start/dateTime),nextPageToken");
        let b = mask("nextPageToken, items/id ,items(start(dateTime))");
        assert_eq!(a, b);
        assert_eq!(mask("a,a/b"), mask("a"));
        assert_eq!(mask("a/b,a"), mask("a"));
        assert_eq!(mask("a(b(c(d)))"), mask("a/b/c/d"));
        assert!(FieldMask::parse("").unwrap().is_none());
        assert!(FieldMask::parse("  ").unwrap().is_none());
    }

    #[test]
    fn syntax_errors_name_where_parsing_stopped() {
        assert_eq!(bad("items(id"), "Invalid field selection items(id");
        assert_eq!(bad("items)"), "Invalid field selection )");
        assert_eq!(bad("items(,id)"), "Invalid field selection ,id)");
        assert_eq!(bad("a,,b"), "Invalid field selection ,b");
        assert_eq!(bad("a/"), "Invalid field selection a/");
        assert_eq!(bad("a b"), "Invalid field selection b");
        assert_eq!(bad("ite*ms"), "Invalid field selection ite*ms");
        assert_eq!(bad("items()"), "Invalid field selection )");
        let error = FieldMask::parse("(").unwrap_err();
        assert_eq!(
            (error.status, error.reason.as_str()),
            (400, "invalidParameter")
        );
        assert_eq!(error.location, Some(("parameter", "fields".to_owned())));
    }

    #[test]
    fn names_are_checked_against_the_response_schema() {
        for good in [
            "*",
            "items",
            "items(*)",
            "items/start/*",
            "nextPageToken,nextSyncToken,items(id,etag,start/dateTime)",
            "items(conferenceData(conferenceSolution/key/type,entryPoints(uri)))",
            "items/extendedProperties/private/anyKeyAtAll",
            "items/conferenceData/parameters/addOnParameters/parameters/meetingId",
            "items/attendees/email",
            "items/*/email",
            "items(organizer/*,creator(*))",
        ] {
            assert_eq!(mask(good).check("Events"), Ok(()), "{good}");
        }
        for (bad, name) in [
            ("pagetoken,items(id)", "pagetoken"),
            ("items(id,nope)", "nope"),
            ("items/summary/x", "x"),
            ("items/start/dateTime/x", "x"),
            ("items(attendees(mail))", "mail"),
            ("*/nothingHasThis", "nothingHasThis"),
        ] {
            let error = mask(bad).check("Events").unwrap_err();
            assert_eq!(
                error.message,
                format!("Invalid field selection {name}"),
                "{bad}"
            );
            assert_eq!(error.reason, "invalidParameter");
        }
        assert_eq!(mask("id,summary").check("Event"), Ok(()));
        assert!(mask("items").check("Event").is_err());
    }

    #[test]
    fn a_mask_keeps_only_what_it_names_in_response_order() {
        let page = json!({
            "kind": "calendar#events",
            "nextPageToken": "p2",
            "items": [
                {"kind": "calendar#event", "id": "a", "summary": "S",
                 "start": {"dateTime": "2026-12-01T10:00:00Z", "timeZone": "UTC"},
                 "attendees": [{"email": "x@example.com", "responseStatus": "accepted"}],
                 "conferenceData": {"conferenceId": "c1", "notes": "n"}},
                {"kind": "calendar#event", "id": "b", "status": "cancelled"}
            ]
        });
        assert_eq!(
            mask(
                "items(id,start/dateTime,attendees/email,conferenceData/conferenceId),nextPageToken"
            )
            .apply(&page),
            json!({
                "nextPageToken": "p2",
                "items": [
                    {"id": "a", "start": {"dateTime": "2026-12-01T10:00:00Z"},
                     "attendees": [{"email": "x@example.com"}],
                     "conferenceData": {"conferenceId": "c1"}},
                    {"id": "b"}
                ]
            })
        );
        // Absent fields are left out; an element with nothing selected stays `{}`; an object
        // with nothing selected goes.
        assert_eq!(
            mask("items(location,conferenceData/signature)").apply(&page),
            json!({"items": [{}, {}]})
        );
        assert_eq!(mask("nextSyncToken").apply(&page), json!({}));
        assert_eq!(mask("*").apply(&page), page);
        assert_eq!(mask("items(*)").apply(&page)["items"], page["items"]);
        assert_eq!(
            mask("items/start/*").apply(&page),
            json!({"items": [{"start": {"dateTime": "2026-12-01T10:00:00Z", "timeZone": "UTC"}}, {}]})
        );
        // `*` with a path: that field of every field that has it.
        assert_eq!(
            mask("*/id").apply(&json!({"a": {"id": 1, "x": 2}, "b": [{"id": 3}], "c": 4})),
            json!({"a": {"id": 1}, "b": [{"id": 3}]})
        );
        // Escaped keys are matched by what they say; selected values are copied as written.
        assert_eq!(
            mask("aA,b")
                .apply_str(" {\"a\\u0041\" : {\"x\": \"\\u00e9\\n\"}, \"b\": [1, 2], \"c\": 3} "),
            "{\"aA\":{\"x\": \"\\u00e9\\n\"},\"b\":[1, 2]}"
        );
        // Broken JSON is left as it is.
        assert_eq!(mask("c").apply_str("{\"c\": tru"), "{\"c\": tru");
        // A named field and `*` together: the named one gets both selections.
        assert_eq!(
            mask("a/x,*/id")
                .apply(&json!({"a": {"id": 1, "x": 2, "y": 3}, "b": {"id": 4, "x": 5}})),
            json!({"a": {"id": 1, "x": 2}, "b": {"id": 4}})
        );
    }
}
