//! Request-body validation against Google's discovery document.
//!
//! The emulator ships the discovery document (`discovery/calendar.v3.json`, revision 20261030) and
//! checks every JSON body against the named schema: unknown fields and wrong JSON types are
//! rejected with the exact path of the offending value, so a client that would be rejected by
//! Google (or whose payload Google would silently misread) finds out here. Semantic checks
//! (times, enums, conference data) live with the operations that need them.

use std::collections::HashMap;
use std::sync::OnceLock;

use serde_json::Value;

use crate::error::ApiError;

static DISCOVERY: OnceLock<Value> = OnceLock::new();

/// The discovery document, parsed once.
pub fn discovery() -> &'static Value {
    DISCOVERY.get_or_init(|| {
        serde_json::from_str(include_str!("../discovery/calendar.v3.json"))
            .expect("the bundled discovery document is valid JSON")
    })
}

/// The schema of what a method answers (`Events` for `GET calendars/{calendarId}/events`), by
/// HTTP method and path template as the discovery document writes them (relative to
/// `calendar/v3/`). None for methods without a response body or paths the document lacks.
pub fn response_schema(http_method: &str, path: &str) -> Option<&'static str> {
    static RESPONSES: OnceLock<HashMap<(String, String), String>> = OnceLock::new();
    let responses = RESPONSES.get_or_init(|| {
        let mut responses = HashMap::new();
        let mut stack = vec![discovery()];
        while let Some(node) = stack.pop() {
            if let Some(methods) = node.get("methods").and_then(Value::as_object) {
                for method in methods.values() {
                    let (Some(verb), Some(path), Some(schema)) = (
                        method.get("httpMethod").and_then(Value::as_str),
                        method.get("path").and_then(Value::as_str),
                        method.pointer("/response/$ref").and_then(Value::as_str),
                    ) else {
                        continue;
                    };
                    responses.insert((verb.to_owned(), path.to_owned()), schema.to_owned());
                }
            }
            if let Some(resources) = node.get("resources").and_then(Value::as_object) {
                stack.extend(resources.values());
            }
        }
        responses
    });
    responses
        .get(&(http_method.to_owned(), path.to_owned()))
        .map(String::as_str)
}

/// Checks `value` against the schema `name` (e.g. `"Event"`). `null` is accepted for any field:
/// in a PATCH it clears the field, elsewhere it means "absent".
pub fn validate(name: &str, value: &Value) -> Result<(), ApiError> {
    let schema = &discovery()["schemas"][name];
    if schema.is_null() {
        return Err(ApiError::bad_request(format!("no schema named {name}")));
    }
    let root = name.to_ascii_lowercase();
    check(schema, value, &root)
}

fn resolve(schema: &Value) -> &Value {
    match schema.get("$ref").and_then(Value::as_str) {
        Some(name) => &discovery()["schemas"][name],
        None => schema,
    }
}

fn check(schema: &Value, value: &Value, path: &str) -> Result<(), ApiError> {
    if value.is_null() {
        return Ok(());
    }
    let schema = resolve(schema);
    let kind = schema.get("type").and_then(Value::as_str).unwrap_or("any");
    let mismatch = |expected: &str| {
        ApiError::invalid(format!(
            "Invalid value at '{path}': expected {expected}, got {}",
            describe(value)
        ))
        .at("parameter", path.to_owned())
    };
    match kind {
        "object" => {
            let Some(map) = value.as_object() else {
                return Err(mismatch("an object"));
            };
            let properties = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties");
            for (key, child) in map {
                let child_path = format!("{path}.{key}");
                if let Some(property) = properties.and_then(|p| p.get(key)) {
                    check(property, child, &child_path)?;
                } else if let Some(additional) = additional {
                    check(additional, child, &child_path)?;
                } else if properties.is_some() {
                    return Err(ApiError::invalid(format!(
                        "Invalid JSON payload received. Unknown name \"{key}\" at '{path}': Cannot find field."
                    ))
                    .at("parameter", child_path));
                }
            }
            Ok(())
        }
        "array" => {
            let Some(items) = value.as_array() else {
                return Err(mismatch("an array"));
            };
            let item_schema = schema.get("items").unwrap_or(&Value::Null);
            for (i, item) in items.iter().enumerate() {
                check(item_schema, item, &format!("{path}[{i}]"))?;
            }
            Ok(())
        }
        "string" => {
            let format = schema.get("format").and_then(Value::as_str);
            match (value, format) {
                (Value::String(_), _) => Ok(()),
                // int64 values are strings on the wire, but Google also takes JSON numbers.
                (Value::Number(n), Some("int64" | "uint64")) if n.is_i64() || n.is_u64() => Ok(()),
                _ => Err(mismatch("a string")),
            }
        }
        "integer" => match value {
            Value::Number(n) if n.is_i64() || n.is_u64() => Ok(()),
            Value::String(s) if s.parse::<i64>().is_ok() => Ok(()),
            _ => Err(mismatch("an integer")),
        },
        "number" => match value {
            Value::Number(_) => Ok(()),
            _ => Err(mismatch("a number")),
        },
        "boolean" => match value {
            Value::Bool(_) => Ok(()),
            _ => Err(mismatch("a boolean")),
        },
        _ => Ok(()),
    }
}

fn describe(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn accepts_a_full_event() {
        let event = json!({
            "summary": "Standup",
            "start": {"dateTime": "2026-12-01T10:00:00+01:00", "timeZone": "Europe/Berlin"},
            "end": {"dateTime": "2026-12-01T10:15:00+01:00"},
            "attendees": [{"email": "b@example.com", "responseStatus": "accepted", "additionalGuests": 1}],
            "extendedProperties": {"private": {"k": "v"}},
            "conferenceData": {"conferenceId": "x", "parameters": {"addOnParameters": {"parameters": {"a": "b"}}}},
            "sequence": 3,
        });
        assert_eq!(validate("Event", &event), Ok(()));
    }

    #[test]
    fn rejects_unknown_fields_with_their_path() {
        let err = validate(
            "Event",
            &json!({"attendees": [{"email": "a@b.c", "rsvp": true}]}),
        )
        .unwrap_err();
        assert_eq!(err.status, 400);
        assert!(err.message.contains("\"rsvp\""), "{}", err.message);
        assert!(
            err.message.contains("event.attendees[0]"),
            "{}",
            err.message
        );
    }

    #[test]
    fn rejects_wrong_types() {
        let err = validate("Event", &json!({"summary": 5})).unwrap_err();
        assert!(err.message.contains("event.summary"), "{}", err.message);
        let err = validate(
            "Event",
            &json!({"extendedProperties": {"private": {"k": 1}}}),
        )
        .unwrap_err();
        assert!(
            err.message.contains("event.extendedProperties.private.k"),
            "{}",
            err.message
        );
        assert!(validate("Event", &json!({"sequence": "x"})).is_err());
        assert!(validate("Event", &json!([])).is_err());
    }

    #[test]
    fn response_schemas_come_from_the_discovery_document() {
        let cases = [
            ("GET", "calendars/{calendarId}/events", Some("Events")),
            (
                "GET",
                "calendars/{calendarId}/events/{eventId}",
                Some("Event"),
            ),
            (
                "GET",
                "calendars/{calendarId}/events/{eventId}/instances",
                Some("Events"),
            ),
            (
                "PATCH",
                "calendars/{calendarId}/events/{eventId}",
                Some("Event"),
            ),
            ("GET", "users/me/calendarList", Some("CalendarList")),
            ("DELETE", "calendars/{calendarId}/events/{eventId}", None),
            ("GET", "nowhere", None),
        ];
        for (verb, path, schema) in cases {
            assert_eq!(response_schema(verb, path), schema, "{verb} {path}");
        }
    }

    #[test]
    fn int64_strings_and_numbers_are_both_accepted() {
        assert_eq!(
            validate("Channel", &json!({"expiration": "1700000000000"})),
            Ok(())
        );
        assert_eq!(
            validate("Channel", &json!({"expiration": 1700000000000_i64})),
            Ok(())
        );
    }
}
