//! The API contract (`crates/service/openapi.json`, served at `GET /v1/openapi.json`) against
//! the handlers:
//! - the routes: every documented path and method is served, every other method on a documented
//!   path is a 405, and every route the service's source registers (`.route(...)` under the
//!   `.nest(...)` prefixes it uses) that answers under `/v1` or `/webhooks` is documented, so a
//!   new route cannot go undocumented;
//! - the answers: a live service (the emulator behind it) is driven through creates, reads,
//!   status, admin changes, webhooks and every error we can provoke; each answer's status must
//!   be documented for its operation, its content type listed, its required headers present and
//!   its body valid against the document's schema;
//! - the document itself: OpenAPI 3.1.0, every `$ref` resolves, every schema uses only keywords
//!   the checker below implements (or pure annotations), path parameters match the templates;
//! - README's API table names exactly the documented routes.
//!
//! Schemas are checked by a small JSON Schema checker for the subset the document uses (type,
//! with `null` in type arrays, required, properties, additionalProperties, enum, const, items,
//! $ref, oneOf, anyOf, allOf, minimum, maximum, minLength, maxLength), tested here too.
//! Schemathesis checks the same document against `confsync serve` (tests/api/run.sh).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use confsync_service::hash_api_key;
use reqwest::Method;
use serde_json::{Value, json};

const ALICE: &str = "alice@example.com";
const ADDON: &str = "cs_openapi-test-addon-key";
const ADMIN: &str = "cs_openapi-test-admin-key";
const READER: &str = "cs_openapi-test-read-key";

const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

fn document() -> Value {
    serde_json::from_str(confsync_service::openapi::DOCUMENT).expect("openapi.json is JSON")
}

/// A JSON Schema checker for the subset of draft 2020-12 the document uses.
mod schema {
    use serde_json::Value;

    /// Keywords that only annotate: they never make a value invalid.
    pub const ANNOTATIONS: &[&str] = &[
        "description",
        "title",
        "format",
        "examples",
        "example",
        "default",
        "deprecated",
        "readOnly",
        "writeOnly",
        "$comment",
    ];
    /// Keywords [`check`] implements.
    pub const ASSERTIONS: &[&str] = &[
        "type",
        "required",
        "properties",
        "additionalProperties",
        "enum",
        "const",
        "items",
        "$ref",
        "oneOf",
        "anyOf",
        "allOf",
        "minimum",
        "maximum",
        "minLength",
        "maxLength",
    ];

    /// Keywords of `schema` (and of the schemas inside it) that are neither implemented nor
    /// annotations, with where they are.
    pub fn unknown_keywords(schema: &Value, at: &str, found: &mut Vec<String>) {
        let Some(map) = schema.as_object() else {
            if !schema.is_boolean() {
                found.push(format!("{at}: a schema must be an object or a boolean"));
            }
            return;
        };
        for (key, value) in map {
            if !ASSERTIONS.contains(&key.as_str()) && !ANNOTATIONS.contains(&key.as_str()) {
                found.push(format!("{at}/{key}"));
            }
            match key.as_str() {
                "properties" => {
                    for (name, sub) in value.as_object().into_iter().flatten() {
                        unknown_keywords(sub, &format!("{at}/properties/{name}"), found);
                    }
                }
                "items" | "additionalProperties" => {
                    unknown_keywords(value, &format!("{at}/{key}"), found)
                }
                "oneOf" | "anyOf" | "allOf" => {
                    for (i, sub) in value.as_array().into_iter().flatten().enumerate() {
                        unknown_keywords(sub, &format!("{at}/{key}/{i}"), found);
                    }
                }
                _ => {}
            }
        }
    }

    fn type_matches(name: &str, value: &Value) -> bool {
        match name {
            "null" => value.is_null(),
            "boolean" => value.is_boolean(),
            "string" => value.is_string(),
            "array" => value.is_array(),
            "object" => value.is_object(),
            "number" => value.is_number(),
            // JSON Schema: a number with a zero fractional part is an integer (2.0 too).
            "integer" => {
                value.is_i64() || value.is_u64() || value.as_f64().is_some_and(|f| f.fract() == 0.0)
            }
            other => panic!("unknown type {other:?} in the document"),
        }
    }

    /// Checks `value` against `schema`; `root` resolves `$ref`s (`#/...` pointers). The error
    /// names where in the value it failed.
    pub fn check(root: &Value, schema: &Value, value: &Value, at: &str) -> Result<(), String> {
        let map = match schema {
            Value::Bool(true) => return Ok(()),
            Value::Bool(false) => return Err(format!("{at}: no value is allowed here")),
            Value::Object(map) => map,
            other => return Err(format!("{at}: the schema {other} is not a schema")),
        };
        if let Some(reference) = map.get("$ref").and_then(Value::as_str) {
            let target = reference
                .strip_prefix('#')
                .and_then(|p| root.pointer(p))
                .ok_or_else(|| format!("{at}: unresolved $ref {reference}"))?;
            check(root, target, value, at)?;
        }
        if let Some(types) = map.get("type") {
            let names: Vec<&str> = match types {
                Value::String(s) => vec![s.as_str()],
                Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
                _ => return Err(format!("{at}: bad type keyword {types}")),
            };
            if !names.iter().any(|n| type_matches(n, value)) {
                return Err(format!("{at}: {value} is not of type {types}"));
            }
        }
        if let Some(allowed) = map.get("enum").and_then(Value::as_array)
            && !allowed.contains(value)
        {
            return Err(format!("{at}: {value} is not one of {allowed:?}"));
        }
        if let Some(constant) = map.get("const")
            && constant != value
        {
            return Err(format!("{at}: {value} is not {constant}"));
        }
        if let Some(n) = value.as_f64() {
            if let Some(min) = map.get("minimum").and_then(Value::as_f64)
                && n < min
            {
                return Err(format!("{at}: {n} is below {min}"));
            }
            if let Some(max) = map.get("maximum").and_then(Value::as_f64)
                && n > max
            {
                return Err(format!("{at}: {n} is above {max}"));
            }
        }
        if let Some(s) = value.as_str() {
            let len = s.chars().count() as u64;
            if let Some(min) = map.get("minLength").and_then(Value::as_u64)
                && len < min
            {
                return Err(format!("{at}: shorter than {min}"));
            }
            if let Some(max) = map.get("maxLength").and_then(Value::as_u64)
                && len > max
            {
                return Err(format!("{at}: longer than {max}"));
            }
        }
        if let Some(object) = value.as_object() {
            for name in map
                .get("required")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
            {
                if !object.contains_key(name) {
                    return Err(format!("{at}: required property {name:?} is missing"));
                }
            }
            let properties = map.get("properties").and_then(Value::as_object);
            for (name, property) in object {
                let at = format!("{at}/{name}");
                match properties.and_then(|p| p.get(name)) {
                    Some(sub) => check(root, sub, property, &at)?,
                    None => {
                        if let Some(extra) = map.get("additionalProperties") {
                            check(root, extra, property, &at)
                                .map_err(|e| format!("{e} (an additional property)"))?;
                        }
                    }
                }
            }
        }
        if let (Some(items), Some(array)) = (map.get("items"), value.as_array()) {
            for (i, item) in array.iter().enumerate() {
                check(root, items, item, &format!("{at}/{i}"))?;
            }
        }
        if let Some(all) = map.get("allOf").and_then(Value::as_array) {
            for sub in all {
                check(root, sub, value, at)?;
            }
        }
        if let Some(any) = map.get("anyOf").and_then(Value::as_array)
            && !any.iter().any(|sub| check(root, sub, value, at).is_ok())
        {
            return Err(format!("{at}: {value} matches none of anyOf"));
        }
        if let Some(one) = map.get("oneOf").and_then(Value::as_array) {
            let errors: Vec<String> = one
                .iter()
                .filter_map(|sub| check(root, sub, value, at).err())
                .collect();
            let matched = one.len() - errors.len();
            if matched != 1 {
                return Err(format!(
                    "{at}: {value} matches {matched} of oneOf, not exactly one ({errors:?})"
                ));
            }
        }
        Ok(())
    }
}

#[test]
fn the_schema_checker_accepts_and_refuses_what_json_schema_says() {
    let root = json!({"components": {"schemas": {
        "When": {"oneOf": [
            {"type": "object", "required": ["at"], "properties": {"at": {"type": "string"}}, "additionalProperties": false},
            {"type": "object", "required": ["day"], "properties": {"day": {"type": "string"}}, "additionalProperties": false}
        ]},
        "Thing": {
            "type": "object",
            "required": ["id", "kind"],
            "properties": {
                "id": {"type": "integer", "minimum": 1, "maximum": 10},
                "kind": {"type": "string", "enum": ["a", "b"]},
                "note": {"type": ["string", "null"], "maxLength": 3, "minLength": 1},
                "when": {"$ref": "#/components/schemas/When"},
                "tags": {"type": "array", "items": {"type": "string"}},
                "flag": {"const": true},
                "either": {"anyOf": [{"type": "integer"}, {"type": "boolean"}]},
                "both": {"allOf": [{"type": "object", "required": ["x"]}, {"type": "object", "required": ["y"]}]}
            },
            "additionalProperties": false
        },
        "Map": {"type": "object", "additionalProperties": {"type": "string"}}
    }}});
    let thing = json!({"$ref": "#/components/schemas/Thing"});
    let ok = |v: Value| schema::check(&root, &thing, &v, "").map_err(|e| format!("{v}: {e}"));
    for good in [
        json!({"id": 1, "kind": "a"}),
        json!({"id": 10.0, "kind": "b", "note": null}),
        json!({"id": 2, "kind": "b", "note": "abc", "when": {"at": "x"}, "tags": ["t"], "flag": true}),
        json!({"id": 2, "kind": "b", "when": {"day": "x"}, "either": false, "both": {"x": 1, "y": 2}}),
    ] {
        ok(good).unwrap();
    }
    for bad in [
        json!([]),
        json!({"kind": "a"}),                          // required
        json!({"id": 1, "kind": "c"}),                 // enum
        json!({"id": 1.5, "kind": "a"}),               // integer
        json!({"id": "1", "kind": "a"}),               // type
        json!({"id": 0, "kind": "a"}),                 // minimum
        json!({"id": 11, "kind": "a"}),                // maximum
        json!({"id": 1, "kind": "a", "note": ""}),     // minLength
        json!({"id": 1, "kind": "a", "note": "abcd"}), // maxLength
        json!({"id": 1, "kind": "a", "note": 3}),      // type array
        json!({"id": 1, "kind": "a", "other": 1}),     // additionalProperties: false
        json!({"id": 1, "kind": "a", "when": {}}),     // oneOf: none
        json!({"id": 1, "kind": "a", "when": {"at": "x", "day": "y"}}), // oneOf: no branch allows both
        json!({"id": 1, "kind": "a", "tags": [1]}),                     // items
        json!({"id": 1, "kind": "a", "flag": false}),                   // const
        json!({"id": 1, "kind": "a", "either": "x"}),                   // anyOf
        json!({"id": 1, "kind": "a", "both": {"x": 1}}),                // allOf
    ] {
        assert!(ok(bad.clone()).is_err(), "accepted {bad}");
    }
    // oneOf means exactly one: a value two branches accept is refused.
    let two = json!({"oneOf": [{"type": "integer"}, {"type": "number"}]});
    assert!(schema::check(&root, &two, &json!(1), "").is_err());
    assert!(schema::check(&root, &two, &json!(1.5), "").is_ok());
    // additionalProperties as a schema.
    let map = json!({"$ref": "#/components/schemas/Map"});
    assert!(schema::check(&root, &map, &json!({"a": "x"}), "").is_ok());
    assert!(schema::check(&root, &map, &json!({"a": 1}), "").is_err());
    // An unresolvable $ref is an error, not a pass.
    assert!(schema::check(&root, &json!({"$ref": "#/nowhere"}), &json!(1), "").is_err());
    // Keywords it does not implement are reported.
    let mut unknown = Vec::new();
    schema::unknown_keywords(
        &json!({"type": "object", "properties": {"a": {"type": "string", "pattern": "^x$"}}, "items": {"uniqueItems": true}}),
        "#",
        &mut unknown,
    );
    assert_eq!(
        unknown,
        vec![
            "#/properties/a/pattern".to_owned(),
            "#/items/uniqueItems".to_owned()
        ]
    );
}

/// Every `$ref` in `value`.
fn refs(value: &Value, found: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                if k == "$ref" {
                    found.extend(v.as_str().map(str::to_owned));
                }
                refs(v, found);
            }
        }
        Value::Array(a) => a.iter().for_each(|v| refs(v, found)),
        _ => {}
    }
}

/// Follows a `$ref` to components (responses, parameters, headers), once.
fn resolve<'a>(doc: &'a Value, value: &'a Value) -> &'a Value {
    match value.get("$ref").and_then(Value::as_str) {
        Some(r) => doc
            .pointer(r.strip_prefix('#').unwrap())
            .unwrap_or_else(|| panic!("unresolved {r}")),
        None => value,
    }
}

/// (method, path template) of every documented operation.
fn operations(doc: &Value) -> BTreeSet<(String, String)> {
    let mut all = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            if METHODS.contains(&method.as_str()) {
                all.insert((method.clone(), path.clone()));
            }
        }
    }
    all
}

#[test]
fn the_document_is_openapi_3_1_and_uses_only_what_the_checker_knows() {
    let doc = document();
    assert_eq!(doc["openapi"], "3.1.0");
    let mut found = Vec::new();
    refs(&doc, &mut found);
    for r in &found {
        assert!(
            r.starts_with("#/") && doc.pointer(&r[1..]).is_some(),
            "unresolved $ref {r}"
        );
    }
    // Every schema in the document, checked for keywords the checker would ignore.
    let mut unknown = Vec::new();
    for (name, s) in doc["components"]["schemas"].as_object().unwrap() {
        schema::unknown_keywords(s, &format!("#/components/schemas/{name}"), &mut unknown);
    }
    let mut operation_ids = BTreeSet::new();
    let schemes: BTreeSet<&String> = doc["components"]["securitySchemes"]
        .as_object()
        .unwrap()
        .keys()
        .collect();
    for (path, item) in doc["paths"].as_object().unwrap() {
        let shared: Vec<&Value> = item
            .get("parameters")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .collect();
        for (method, op) in item.as_object().unwrap() {
            if !METHODS.contains(&method.as_str()) {
                assert_eq!(method, "parameters", "{path}: unexpected key {method}");
                continue;
            }
            let at = format!("{method} {path}");
            assert!(
                operation_ids.insert(op["operationId"].as_str().unwrap().to_owned()),
                "{at}: duplicate operationId"
            );
            let parameters: Vec<&Value> = shared
                .iter()
                .copied()
                .chain(
                    op.get("parameters")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten(),
                )
                .map(|p| resolve(&doc, p))
                .collect();
            for p in &parameters {
                schema::unknown_keywords(
                    &p["schema"],
                    &format!("{at} {}", p["name"]),
                    &mut unknown,
                );
            }
            // Path parameters: exactly the template's.
            let in_template: BTreeSet<String> = path
                .split('/')
                .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
                .map(str::to_owned)
                .collect();
            let declared: BTreeSet<String> = parameters
                .iter()
                .filter(|p| p["in"] == "path")
                .map(|p| {
                    assert_eq!(p["required"], true, "{at}: path parameters are required");
                    p["name"].as_str().unwrap().to_owned()
                })
                .collect();
            assert_eq!(in_template, declared, "{at}: path parameters");
            if let Some(body) = op.get("requestBody") {
                for (media, content) in body["content"].as_object().unwrap() {
                    schema::unknown_keywords(
                        &content["schema"],
                        &format!("{at} body {media}"),
                        &mut unknown,
                    );
                }
            }
            let security = op.get("security").unwrap_or(&doc["security"]);
            let secured = !security.as_array().unwrap().is_empty();
            for requirement in security.as_array().unwrap() {
                for scheme in requirement.as_object().unwrap().keys() {
                    assert!(schemes.contains(scheme), "{at}: unknown scheme {scheme}");
                }
            }
            let responses = op["responses"].as_object().unwrap();
            assert!(
                !secured || responses.contains_key("401"),
                "{at}: behind a key, so a 401 is possible"
            );
            for (status, response) in responses {
                let response = resolve(&doc, response);
                assert!(
                    status.len() == 3 && status.parse::<u16>().is_ok(),
                    "{at}: status {status}"
                );
                assert!(
                    response["description"].is_string(),
                    "{at} {status}: description"
                );
                for (media, content) in response
                    .get("content")
                    .and_then(Value::as_object)
                    .into_iter()
                    .flatten()
                {
                    schema::unknown_keywords(
                        &content["schema"],
                        &format!("{at} {status} {media}"),
                        &mut unknown,
                    );
                }
                // Errors explain themselves: a JSON body of one of the error shapes.
                if status.as_str() >= "400" {
                    let schema = &response["content"]["application/json"]["schema"]["$ref"];
                    assert!(
                        [
                            "#/components/schemas/ConferenceError",
                            "#/components/schemas/JsonError",
                            "#/components/schemas/UnknownCalendar"
                        ]
                        .contains(&schema.as_str().unwrap_or_default()),
                        "{at} {status}: an error answer needs an error body, not {schema}"
                    );
                    // Under /v1 the add-on's shape (but for the sync route's unknown calendar).
                    if path.starts_with("/v1/") && schema != "#/components/schemas/UnknownCalendar"
                    {
                        assert_eq!(
                            schema, "#/components/schemas/ConferenceError",
                            "{at} {status}"
                        );
                    }
                }
            }
        }
    }
    assert!(
        unknown.is_empty(),
        "keywords the checker does not implement: {unknown:?}"
    );
}

/// The operation documented for a concrete path: the template whose literal segments match.
fn template_of(doc: &Value, path: &str) -> Option<String> {
    let segments: Vec<&str> = path.split('/').collect();
    doc["paths"]
        .as_object()
        .unwrap()
        .keys()
        .find(|template| {
            let t: Vec<&str> = template.split('/').collect();
            t.len() == segments.len()
                && t.iter().zip(&segments).all(|(t, s)| {
                    (t.starts_with('{') && t.ends_with('}') && !s.is_empty()) || t == s
                })
        })
        .cloned()
}

/// One answer, as the network gave it.
struct Answer {
    method: Method,
    path: String,
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Vec<u8>,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

/// Whether an answer is what the document says its operation answers: a documented status,
/// its required headers, a listed content type, a body valid against the schema.
fn conforms(doc: &Value, answer: &Answer) -> Result<(String, String), String> {
    let path = answer.path.split('?').next().unwrap();
    let method = answer.method.as_str().to_ascii_lowercase();
    let template = template_of(doc, path).ok_or_else(|| format!("{path}: not documented"))?;
    let op = doc["paths"][&template]
        .get(&method)
        .ok_or_else(|| format!("{method} {template}: not documented"))?;
    let status = answer.status.to_string();
    let response = op["responses"]
        .get(&status)
        .or_else(|| op["responses"].get("default"))
        .map(|r| resolve(doc, r))
        .ok_or_else(|| format!("{method} {template}: status {status} is not documented"))?;
    for (name, header) in response
        .get("headers")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
    {
        let header = resolve(doc, header);
        if header["required"] == true && !answer.headers.contains_key(name.as_str()) {
            return Err(format!(
                "{method} {template} {status}: header {name} is missing"
            ));
        }
    }
    let Some(content) = response.get("content").and_then(Value::as_object) else {
        return if answer.body.is_empty() {
            Ok((method, template))
        } else {
            Err(format!(
                "{method} {template} {status}: a body where none is documented"
            ))
        };
    };
    let media = answer
        .headers
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    let documented = content.get(&media).ok_or_else(|| {
        format!("{method} {template} {status}: content type {media:?} is not documented")
    })?;
    let value = if media == "application/json" {
        serde_json::from_slice(&answer.body)
            .map_err(|e| format!("{method} {template} {status}: not JSON: {e}"))?
    } else {
        Value::String(String::from_utf8_lossy(&answer.body).into_owned())
    };
    schema::check(doc, &documented["schema"], &value, "")
        .map_err(|e| format!("{method} {template} {status}: {e}\nbody: {value}"))?;
    Ok((method, template))
}

#[test]
fn answers_the_document_does_not_describe_are_refused_by_the_conformance_check() {
    let doc = document();
    let answer = |method: Method, path: &str, status: u16, body: Value| {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert("content-type", "application/json".parse().unwrap());
        headers.insert("x-request-id", "r1".parse().unwrap());
        Answer {
            method,
            path: path.into(),
            status,
            headers,
            body: body.to_string().into_bytes(),
        }
    };
    let good = json!({"name": "ops", "revoked": true});
    conforms(
        &doc,
        &answer(Method::DELETE, "/v1/admin/keys/ops", 200, good.clone()),
    )
    .unwrap();
    for (a, why) in [
        (
            answer(Method::DELETE, "/v1/admin/keys/ops", 418, good.clone()),
            "status",
        ),
        (
            answer(Method::GET, "/v1/admin/keys/ops", 200, good.clone()),
            "method",
        ),
        (
            answer(Method::DELETE, "/v1/admin/nothing/ops", 200, good.clone()),
            "path",
        ),
        (
            answer(
                Method::DELETE,
                "/v1/admin/keys/ops",
                200,
                json!({"name": "ops"}),
            ),
            "required",
        ),
        (
            answer(
                Method::DELETE,
                "/v1/admin/keys/ops",
                200,
                json!({"name": "ops", "revoked": false}),
            ),
            "enum",
        ),
        (
            answer(
                Method::DELETE,
                "/v1/admin/keys/ops",
                200,
                json!({"name": "ops", "revoked": true, "x": 1}),
            ),
            "extra",
        ),
        (
            answer(
                Method::DELETE,
                "/v1/admin/keys/ops",
                404,
                json!({"error": {"code": 404, "message": "m"}}),
            ),
            "error shape",
        ),
    ] {
        assert!(conforms(&doc, &a).is_err(), "accepted: {why}");
    }
    let mut no_id = answer(Method::DELETE, "/v1/admin/keys/ops", 200, good.clone());
    no_id.headers.remove("x-request-id");
    assert!(
        conforms(&doc, &no_id).is_err(),
        "accepted without x-request-id"
    );
    let mut text = answer(Method::DELETE, "/v1/admin/keys/ops", 200, good);
    text.headers
        .insert("content-type", "text/plain".parse().unwrap());
    assert!(conforms(&doc, &text).is_err(), "accepted a text answer");
}

/// A concrete path for a template: ids that pass validation.
fn sample(template: &str) -> String {
    template
        .split('/')
        .map(|s| match s {
            "{calendarId}" => ALICE,
            "{id}" => "1",
            "{name}" => "nobody-probe",
            s if s.starts_with('{') => "probe",
            s => s,
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// The literals the service's source passes to `.route("...")` and `.nest("...")`.
fn source_literals() -> (Vec<String>, Vec<String>) {
    fn literals(text: &str, call: &str) -> Vec<String> {
        text.match_indices(call)
            .filter_map(|(at, _)| {
                let rest = &text[at + call.len()..];
                rest.find('"').map(|end| rest[..end].to_owned())
            })
            .collect()
    }
    let (mut routes, mut nests) = (Vec::new(), Vec::new());
    let mut dirs = vec![std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                routes.extend(literals(&text, ".route(\""));
                nests.extend(literals(&text, ".nest(\""));
            }
        }
    }
    (routes, nests)
}

/// Whether the router serves `method path`: not the fallback's 404, not a 405.
async fn served(r: &common::Running, method: &str, path: &str) -> bool {
    let method = Method::from_bytes(method.to_ascii_uppercase().as_bytes()).unwrap();
    let response = r
        .http
        .request(method, format!("{}{}", r.service, &path[1..]))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    !(status == 405 || (status == 404 && body["error"]["message"] == "no such endpoint"))
}

#[tokio::test]
async fn documented_routes_are_served_and_served_routes_are_documented() {
    let r = common::start(
        ADDON,
        Some(common::Push::new(None, Duration::from_secs(3600))),
    )
    .await;
    r.store
        .api_key_create_scoped("ops", &hash_api_key(ADMIN), "admin", 0)
        .await
        .unwrap();
    let doc = document();
    let documented = operations(&doc);
    for (method, template) in &documented {
        assert!(
            served(&r, method, &sample(template)).await,
            "{method} {template} is documented but not served"
        );
    }
    // No other method on a documented path.
    let paths: BTreeSet<&String> = documented.iter().map(|(_, p)| p).collect();
    for template in &paths {
        for method in METHODS {
            if !documented.contains(&(method.to_owned(), (*template).clone())) {
                assert!(
                    !served(&r, method, &sample(template)).await,
                    "{method} {template} is served but not documented"
                );
            }
        }
    }
    // Every route the source registers, under every nesting prefix it uses.
    let (routes, nests) = source_literals();
    assert!(
        nests.contains(&"/v1".to_owned()),
        "the scan finds the nests: {nests:?}"
    );
    let mut prefixes: BTreeSet<String> = [String::new()].into();
    for a in &nests {
        prefixes.insert(a.clone());
        for b in &nests {
            prefixes.insert(format!("{a}{b}"));
        }
    }
    let mut candidates = BTreeSet::new();
    for route in &routes {
        for prefix in &prefixes {
            let path = format!("{prefix}{route}");
            if path.starts_with("/v1/") || path.starts_with("/webhooks/") {
                candidates.insert(path);
            }
        }
    }
    for template in &paths {
        assert!(
            candidates.contains(*template),
            "{template}: documented, but no route in the source has that template (the router's parameter names are the document's)"
        );
    }
    for path in &candidates {
        for method in METHODS {
            if served(&r, method, &sample(path)).await {
                assert!(
                    documented.contains(&(method.to_owned(), path.clone())),
                    "{method} {path} is served but not documented in openapi.json"
                );
            }
        }
    }
}

/// Drives a live service and checks every answer against the document.
struct Driver<'a> {
    r: &'a common::Running,
    doc: Value,
    /// (method, template) -> statuses seen.
    seen: BTreeMap<(String, String), BTreeSet<u16>>,
}

impl Driver<'_> {
    async fn send(
        &mut self,
        request: reqwest::RequestBuilder,
        method: Method,
        path: &str,
    ) -> Answer {
        let response = request.send().await.unwrap();
        let answer = Answer {
            method,
            path: format!("/{path}"),
            status: response.status().as_u16(),
            headers: response.headers().clone(),
            body: response.bytes().await.unwrap().to_vec(),
        };
        match conforms(&self.doc, &answer) {
            Ok(op) => {
                self.seen.entry(op).or_default().insert(answer.status);
            }
            Err(e) => panic!(
                "{} /{path} answered {} {}: {e}",
                answer.method,
                answer.status,
                String::from_utf8_lossy(&answer.body)
            ),
        }
        answer
    }

    /// `method path` with `key` (if any) and a JSON body (if any), expecting `status`.
    async fn call(
        &mut self,
        method: Method,
        path: &str,
        key: Option<&str>,
        body: Option<Value>,
        status: u16,
    ) -> Value {
        let mut request = self
            .r
            .http
            .request(method.clone(), format!("{}{path}", self.r.service));
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let answer = self.send(request, method.clone(), path).await;
        assert_eq!(
            answer.status,
            status,
            "{method} {path}: {}",
            String::from_utf8_lossy(&answer.body)
        );
        answer.json()
    }

    /// A raw body.
    async fn call_raw(&mut self, path: &str, key: &str, body: Vec<u8>, status: u16) -> Value {
        let request = self
            .r
            .http
            .post(format!("{}{path}", self.r.service))
            .bearer_auth(key)
            .header("content-type", "application/json")
            .body(body);
        let answer = self.send(request, Method::POST, path).await;
        assert_eq!(
            answer.status,
            status,
            "POST {path}: {}",
            String::from_utf8_lossy(&answer.body)
        );
        answer.json()
    }

    /// A push notification with these headers.
    async fn push(&mut self, headers: &[(&str, &str)], status: u16) -> Answer {
        let mut request = self
            .r
            .http
            .post(format!("{}webhooks/google", self.r.service));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let answer = self.send(request, Method::POST, "webhooks/google").await;
        assert_eq!(
            answer.status,
            status,
            "{}",
            String::from_utf8_lossy(&answer.body)
        );
        answer
    }
}

#[tokio::test]
async fn live_answers_match_the_document() {
    use Method as M;
    let r = common::start(
        ADDON,
        Some(common::Push::new(None, Duration::from_secs(3600))),
    )
    .await;
    for (name, key, scope) in [("ops", ADMIN, "admin"), ("viewer", READER, "read-only")] {
        r.store
            .api_key_create_scoped(name, &hash_api_key(key), scope, 0)
            .await
            .unwrap();
    }
    let mut d = Driver {
        r: &r,
        doc: document(),
        seen: BTreeMap::new(),
    };

    // The document itself, without a key: the repository's file, byte for byte.
    let answer = d
        .send(
            r.http.get(format!("{}v1/openapi.json", r.service)),
            M::GET,
            "v1/openapi.json",
        )
        .await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.body, confsync_service::openapi::DOCUMENT.as_bytes());

    // The add-on's create, again (idempotent), and reads.
    let body = json!({"calendarId": ALICE, "eventId": "openapievent01", "requestId": "req-1"});
    let created = d
        .call(
            M::POST,
            "v1/conferences",
            Some(ADDON),
            Some(body.clone()),
            200,
        )
        .await;
    let id = created["conferenceId"].as_str().unwrap().to_owned();
    let again = d
        .call(M::POST, "v1/conferences", Some(ADMIN), Some(body), 200)
        .await;
    assert_eq!(again["conferenceId"], id.as_str());
    let got = d
        .call(
            M::GET,
            &format!("v1/conferences/{id}"),
            Some(ADDON),
            None,
            200,
        )
        .await;
    assert!(got["meeting"].is_object(), "{got}");
    d.call(
        M::GET,
        "v1/conferences/no-such-conference",
        Some(ADDON),
        None,
        404,
    )
    .await;
    d.call(M::GET, "v1/conferences/%C3%A9", Some(ADDON), None, 400)
        .await;
    d.call(
        M::GET,
        &format!("v1/conferences/{id}"),
        Some(READER),
        None,
        403,
    )
    .await;

    // Refused creates: bodies, ids, keys, size.
    d.call_raw("v1/conferences", ADDON, b"{".to_vec(), 400)
        .await;
    d.call(
        M::POST,
        "v1/conferences",
        Some(ADDON),
        Some(json!({"calendarId": ALICE, "eventId": "e1", "x": 1})),
        400,
    )
    .await;
    d.call(
        M::POST,
        "v1/conferences",
        Some(ADDON),
        Some(json!({"calendarId": "primary", "eventId": "e1"})),
        400,
    )
    .await;
    d.call(
        M::POST,
        "v1/conferences",
        Some(ADDON),
        Some(json!({"calendarId": ALICE, "eventId": "a/b"})),
        400,
    )
    .await;
    d.call(
        M::POST,
        "v1/conferences",
        None,
        Some(json!({"calendarId": ALICE, "eventId": "e1"})),
        401,
    )
    .await;
    d.call(
        M::POST,
        "v1/conferences",
        Some("cs_not-a-key"),
        Some(json!({"calendarId": ALICE, "eventId": "e1"})),
        401,
    )
    .await;
    d.call(
        M::POST,
        "v1/conferences",
        Some(READER),
        Some(json!({"calendarId": ALICE, "eventId": "e1"})),
        403,
    )
    .await;
    let mut big =
        br#"{"calendarId": "alice@example.com", "eventId": "e1", "requestId": ""#.to_vec();
    big.extend(std::iter::repeat_n(b'x', 70 * 1024));
    big.extend(br#""}"#);
    d.call_raw("v1/conferences", ADDON, big, 413).await;

    // The sync trigger.
    d.call(
        M::POST,
        &format!("v1/calendars/{ALICE}/sync"),
        Some(ADDON),
        None,
        202,
    )
    .await;
    let unknown = d
        .call(
            M::POST,
            "v1/calendars/bob@example.com/sync",
            Some(ADDON),
            None,
            404,
        )
        .await;
    assert_eq!(unknown["error"]["calendarId"], "bob@example.com");
    d.call(M::POST, "v1/calendars/primary/sync", Some(ADDON), None, 400)
        .await;
    d.call(
        M::POST,
        &format!("v1/calendars/{ALICE}/sync"),
        Some(READER),
        None,
        403,
    )
    .await;

    // Status once Alice's calendar has synced (its fields filled in), a page at a time.
    let mut synced = false;
    for _ in 0..100 {
        let status = d.call(M::GET, "v1/status", Some(READER), None, 200).await;
        if status["calendars"][0]["synced"] == true {
            synced = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(synced, "Alice's calendar synced");
    d.call(
        M::GET,
        "v1/status?limit=1&search=alice",
        Some(ADDON),
        None,
        200,
    )
    .await;
    d.call(M::GET, "v1/status?limit=0", Some(ADDON), None, 400)
        .await;
    d.call(M::GET, "v1/status?limit=x", Some(ADDON), None, 400)
        .await;
    d.call(M::GET, "v1/status?bogus=1", Some(ADDON), None, 400)
        .await;
    d.call(M::GET, "v1/status", None, None, 401).await;

    // Admin: listings, retry, drop, resync, keys.
    let action = common::failed_action(&r, "openapimtg").await;
    let listed = d
        .call(M::GET, "v1/admin/actions", Some(READER), None, 200)
        .await;
    assert_eq!(listed["items"][0]["id"], action);
    d.call(
        M::GET,
        &format!("v1/admin/actions?state=pending&calendarId={ALICE}&limit=5"),
        Some(ADMIN),
        None,
        200,
    )
    .await;
    d.call(
        M::GET,
        "v1/admin/actions?state=bogus",
        Some(ADMIN),
        None,
        400,
    )
    .await;
    d.call(
        M::GET,
        "v1/admin/actions?limit=100000",
        Some(ADMIN),
        None,
        400,
    )
    .await;
    d.call(M::GET, "v1/admin/actions", Some(ADDON), None, 403)
        .await;
    d.call(M::GET, "v1/admin/actions", None, None, 401).await;
    let retry = format!("v1/admin/actions/{action}/retry");
    let drop = format!("v1/admin/actions/{action}/drop");
    d.call(M::POST, &retry, Some(READER), None, 403).await;
    d.call(M::POST, &retry, Some(ADMIN), None, 200).await;
    d.call(M::POST, &drop, Some(ADMIN), None, 200).await;
    d.call(M::POST, &retry, Some(ADMIN), None, 409).await;
    d.call(M::POST, &drop, Some(ADMIN), None, 409).await;
    d.call(
        M::POST,
        "v1/admin/actions/987654/retry",
        Some(ADMIN),
        None,
        404,
    )
    .await;
    d.call(
        M::POST,
        "v1/admin/actions/987654/drop",
        Some(ADMIN),
        None,
        404,
    )
    .await;
    d.call(M::POST, "v1/admin/actions/x/retry", Some(ADMIN), None, 400)
        .await;
    d.call(M::POST, "v1/admin/actions/x/drop", Some(ADMIN), None, 400)
        .await;
    d.call(
        M::POST,
        &format!("v1/admin/calendars/{ALICE}/resync"),
        Some(ADMIN),
        None,
        202,
    )
    .await;
    d.call(
        M::POST,
        "v1/admin/calendars/bob@example.com/resync",
        Some(ADMIN),
        None,
        404,
    )
    .await;
    d.call(
        M::POST,
        "v1/admin/calendars/primary/resync",
        Some(ADMIN),
        None,
        400,
    )
    .await;
    d.call(
        M::POST,
        &format!("v1/admin/calendars/{ALICE}/resync"),
        Some(READER),
        None,
        403,
    )
    .await;
    let keys = d
        .call(M::GET, "v1/admin/keys", Some(READER), None, 200)
        .await;
    assert_eq!(keys["items"].as_array().unwrap().len(), 3, "{keys}");
    d.call(M::GET, "v1/admin/keys", Some(ADDON), None, 403)
        .await;
    // Moving meetings to the current provider: counts, a dry run, a real (empty) run.
    d.call(
        M::GET,
        "v1/admin/provider/migration",
        Some(READER),
        None,
        200,
    )
    .await;
    d.call(
        M::GET,
        &format!("v1/admin/provider/migration?calendarId={ALICE}&limit=5"),
        Some(ADMIN),
        None,
        200,
    )
    .await;
    d.call(
        M::GET,
        "v1/admin/provider/migration?limit=0",
        Some(ADMIN),
        None,
        400,
    )
    .await;
    d.call(
        M::GET,
        "v1/admin/provider/migration?calendarId=primary",
        Some(ADMIN),
        None,
        400,
    )
    .await;
    d.call(
        M::GET,
        "v1/admin/provider/migration?bogus=1",
        Some(ADMIN),
        None,
        400,
    )
    .await;
    d.call(
        M::GET,
        "v1/admin/provider/migration",
        Some(ADDON),
        None,
        403,
    )
    .await;
    d.call(
        M::POST,
        "v1/admin/provider/migrate?dryRun=true",
        Some(ADMIN),
        None,
        200,
    )
    .await;
    d.call(M::POST, "v1/admin/provider/migrate", Some(ADMIN), None, 200)
        .await;
    d.call(
        M::POST,
        "v1/admin/provider/migrate?limit=x",
        Some(ADMIN),
        None,
        400,
    )
    .await;
    d.call(
        M::POST,
        "v1/admin/provider/migrate?dryRun=true",
        Some(READER),
        None,
        403,
    )
    .await;
    // Forgetting a calendar: refusals here, Alice's at the end.
    d.call(
        M::POST,
        "v1/admin/calendars/bob@example.com/forget",
        Some(ADMIN),
        None,
        404,
    )
    .await;
    d.call(
        M::POST,
        "v1/admin/calendars/primary/forget",
        Some(ADMIN),
        None,
        400,
    )
    .await;
    d.call(
        M::POST,
        &format!("v1/admin/calendars/{ALICE}/forget"),
        Some(READER),
        None,
        403,
    )
    .await;
    d.call(M::DELETE, "v1/admin/keys/nobody", Some(ADMIN), None, 404)
        .await;
    d.call(M::DELETE, "v1/admin/keys/viewer", Some(READER), None, 403)
        .await;
    d.call(M::DELETE, "v1/admin/keys/%FF", Some(ADMIN), None, 400)
        .await;
    d.call(M::DELETE, "v1/admin/keys/viewer", Some(ADMIN), None, 200)
        .await;
    d.call(M::GET, "v1/admin/keys", Some(READER), None, 401)
        .await;

    // Push notifications: malformed, a channel of ours the store does not know (stopped), a
    // live channel with the wrong token.
    d.push(&[], 400).await;
    let minted = common::channel_key().new_id();
    let orphan = [
        ("x-goog-channel-id", minted.as_str()),
        ("x-goog-resource-id", "res-1"),
        ("x-goog-resource-state", "sync"),
        ("x-goog-message-number", "1"),
    ];
    d.push(&orphan, 200).await;
    let mut zero = orphan;
    zero[3].1 = "0";
    d.push(&zero, 400).await;
    d.push(
        &[
            ("x-goog-channel-id", "made-up"),
            ("x-goog-resource-id", "r"),
            ("x-goog-resource-state", "exists"),
            ("x-goog-message-number", "2"),
        ],
        400,
    )
    .await;
    let mut live = Vec::new();
    for _ in 0..100 {
        live = r
            .store
            .live_channels(chrono::Utc::now().timestamp_millis())
            .await
            .unwrap();
        if !live.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let channel = live.first().expect("the create opened a push channel");
    d.push(
        &[
            ("x-goog-channel-id", channel.channel_id.as_str()),
            ("x-goog-resource-id", channel.resource_id.as_str()),
            ("x-goog-resource-state", "exists"),
            ("x-goog-message-number", "99"),
            ("x-goog-channel-token", "not-the-token"),
        ],
        401,
    )
    .await;

    // Alice's calendar forgotten (409 while a worker syncs it: both answers are checked).
    let mut forgotten = false;
    for _ in 0..50 {
        let path = format!("v1/admin/calendars/{ALICE}/forget");
        let request = r
            .http
            .post(format!("{}{path}", r.service))
            .bearer_auth(ADMIN);
        let answer = d.send(request, M::POST, &path).await;
        if answer.status == 200 {
            assert_eq!(answer.json()["forgotten"], true);
            forgotten = true;
            break;
        }
        assert_eq!(
            answer.status,
            409,
            "{}",
            String::from_utf8_lossy(&answer.body)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(forgotten, "Alice's calendar was forgotten");

    // Without push channels the webhook is a 404.
    let quiet = common::start(ADDON, None).await;
    let mut q = Driver {
        r: &quiet,
        doc: document(),
        seen: BTreeMap::new(),
    };
    q.push(&orphan, 404).await;
    d.seen
        .entry(("post".into(), "/webhooks/google".into()))
        .or_default()
        .extend(q.seen.into_values().flatten());

    // Every operation was exercised, with its success answer.
    for (method, template) in operations(&d.doc) {
        let statuses = d.seen.get(&(method.clone(), template.clone()));
        let success = statuses.is_some_and(|s| s.iter().any(|s| (200..300).contains(s)));
        assert!(
            success,
            "{method} {template}: no success answer checked ({statuses:?})"
        );
    }
    for ((method, template), statuses) in &d.seen {
        println!("{method} {template}: {statuses:?}");
    }
}

#[test]
fn readme_api_table_names_the_documented_routes() {
    let readme = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md"),
    )
    .unwrap();
    let mut listed = BTreeSet::new();
    for line in readme.lines().filter(|l| l.starts_with("| `")) {
        for (i, span) in line.split('`').enumerate() {
            if i % 2 == 0 {
                continue; // outside backticks
            }
            let Some((method, rest)) = span.split_once(' ') else {
                continue;
            };
            if !METHODS.contains(&method.to_ascii_lowercase().as_str()) {
                continue;
            }
            let path = rest.split(['?', '[', ' ']).next().unwrap();
            if path.starts_with("/v1/") || path.starts_with("/webhooks/") {
                listed.insert((method.to_ascii_lowercase(), path.to_owned()));
            }
        }
    }
    assert_eq!(
        listed,
        operations(&document()),
        "README's API table against openapi.json"
    );
}
