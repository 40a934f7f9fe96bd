//! What every Calendar v3 answer goes through after its handler: the `fields` partial response
//! and gzip.
//!
//! - `fields` is parsed and checked against the discovery schema of the method's response before
//!   the handler runs, so a bad mask is a 400 (see [`crate::fields::invalid_selection`]) and a
//!   write with a bad mask changes nothing. A 2xx JSON answer is then cut down to the mask; error
//!   bodies are never masked. The mask is checked before authentication: a request with a bad
//!   mask and no token is a 400, not a 401 (Google's order is not documented).
//! - gzip, as Google's "Performance tips" page for the Calendar API says: "In order to receive a
//!   gzip-encoded response you must do two things: Set an Accept-Encoding header, and modify your
//!   user agent to contain the string gzip" (`Accept-Encoding: gzip`, `User-Agent: my program
//!   (gzip)`). With both, every answer with a body, errors included, is gzip-encoded with
//!   `Content-Encoding: gzip` (at [`crate::EmulatorConfig::gzip_level`]); with only one of the
//!   two the body is sent as is. Every answer with a body carries `Vary: Accept-Encoding`.

use std::io::Write;

use axum::body::{Body, HttpBody};
use std::sync::Arc;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::fields::FieldMask;
use crate::{Shared, schema};

/// The v3 router's middleware (see the module documentation).
pub(crate) async fn partial_and_gzip(
    State(shared): State<Arc<Shared>>,
    req: Request,
    next: Next,
) -> Response {
    let gzip = wants_gzip(req.headers()).then(|| {
        shared
            .config
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .gzip_level
            .min(9)
    });
    let mask = match mask_for(&req) {
        Ok(mask) => mask,
        Err(error) => return encode(error.into_response(), gzip).await,
    };
    let response = next.run(req).await;
    let response = match mask {
        Some(mask) if response.status().is_success() && is_json(response.headers()) => {
            masked(response, &mask).await
        }
        _ => response,
    };
    encode(response, gzip).await
}

/// The request's `fields` mask, checked against its method's response schema.
fn mask_for(req: &Request) -> Result<Option<FieldMask>, crate::ApiError> {
    let Some(text) = req.uri().query().and_then(|q| {
        form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == "fields")
            .map(|(_, v)| v.into_owned())
    }) else {
        return Ok(None);
    };
    let Some(mask) = FieldMask::parse(&text)? else {
        return Ok(None);
    };
    let template = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().trim_start_matches("/calendar/v3/").to_owned());
    if let Some(schema) =
        template.and_then(|path| schema::response_schema(req.method().as_str(), &path))
    {
        mask.check(schema)?;
    }
    Ok(Some(mask))
}

/// Google's two conditions: `gzip` accepted (and not with `q=0`) and `gzip` in the user agent.
pub fn wants_gzip(headers: &HeaderMap) -> bool {
    let agent = headers
        .get_all(header::USER_AGENT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("gzip"));
    let accepted = headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|coding| {
            let mut parts = coding.split(';').map(str::trim);
            let name = parts.next().unwrap_or("");
            let refused = parts.any(|p| {
                p.strip_prefix("q=")
                    .and_then(|q| q.trim().parse::<f32>().ok())
                    .is_some_and(|q| q <= 0.0)
            });
            name.eq_ignore_ascii_case("gzip") && !refused
        });
    agent && accepted
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"))
}

async fn masked(response: Response, mask: &FieldMask) -> Response {
    let (mut parts, body) = response.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, usize::MAX).await else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    let text = match std::str::from_utf8(&bytes) {
        Ok(text) => mask.apply_str(text),
        Err(_) => return Response::from_parts(parts, Body::from(bytes)),
    };
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(text))
}

/// Adds `Vary`, and gzip-encodes at `gzip` level when asked.
async fn encode(response: Response, gzip: Option<u32>) -> Response {
    let (mut parts, body) = response.into_parts();
    if body.size_hint().exact() == Some(0) {
        return Response::from_parts(parts, body);
    }
    parts
        .headers
        .append(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    let Some(level) = gzip else {
        return Response::from_parts(parts, body);
    };
    let Ok(bytes) = axum::body::to_bytes(body, usize::MAX).await else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    let compressed = compress(&bytes, level);
    parts.headers.remove(header::CONTENT_LENGTH);
    parts
        .headers
        .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    Response::from_parts(parts, Body::from(compressed))
}

/// gzip at `level` (0 to 9).
pub fn compress(bytes: &[u8], level: u32) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(
        Vec::with_capacity(bytes.len() / 4 + 64),
        flate2::Compression::new(level.min(9)),
    );
    // Writing to a Vec cannot fail.
    let _ = encoder.write_all(bytes);
    encoder.finish().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn gzip_needs_the_accept_header_and_the_user_agent() {
        let ua = ("user-agent", "confsync/0.1.0 (gzip)");
        assert!(wants_gzip(&headers(&[("accept-encoding", "gzip"), ua])));
        assert!(wants_gzip(&headers(&[
            ("accept-encoding", "br, GZIP;q=0.5"),
            ua
        ])));
        assert!(wants_gzip(&headers(&[
            ("accept-encoding", "identity"),
            ("accept-encoding", "gzip, deflate"),
            ua
        ])));
        assert!(!wants_gzip(&headers(&[("accept-encoding", "gzip")])));
        assert!(!wants_gzip(&headers(&[
            ("accept-encoding", "gzip"),
            ("user-agent", "my program")
        ])));
        assert!(!wants_gzip(&headers(&[ua])));
        assert!(!wants_gzip(&headers(&[
            ("accept-encoding", "gzip;q=0"),
            ua
        ])));
        assert!(!wants_gzip(&headers(&[
            ("accept-encoding", "x-gzip, br"),
            ua
        ])));
    }

    #[test]
    fn compressed_bodies_decompress_to_the_original() {
        use std::io::Read;
        let body = "{\"items\": []}".repeat(100);
        for level in [1, 6, 9] {
            let compressed = compress(body.as_bytes(), level);
            assert!(compressed.len() < body.len() / 4);
            let mut back = String::new();
            flate2::read::GzDecoder::new(compressed.as_slice())
                .read_to_string(&mut back)
                .unwrap();
            assert_eq!(back, body);
        }
        let compressed = compress(body.as_bytes(), 0);
        let mut back = String::new();
        flate2::read::GzDecoder::new(compressed.as_slice())
            .read_to_string(&mut back)
            .unwrap();
        assert_eq!(back, body);
    }
}
