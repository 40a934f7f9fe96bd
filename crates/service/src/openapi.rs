//! The API contract: the OpenAPI 3.1 document of `/v1` and `/webhooks`
//! (`crates/service/openapi.json`), served at `GET /v1/openapi.json` without a key (it is
//! static and costs nothing). `tests/openapi.rs` checks it against the router and the handlers'
//! answers; `tests/api/run.sh` runs Schemathesis with it against a live `confsync serve`.

use axum::http::header;
use axum::response::{IntoResponse, Response};

/// The document, as kept in the repository.
pub const DOCUMENT: &str = include_str!("../openapi.json");

/// `GET /v1/openapi.json`.
pub async fn document() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], DOCUMENT).into_response()
}
