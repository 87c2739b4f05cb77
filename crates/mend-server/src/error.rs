//! API errors as RFC 9457 problem details (`application/problem+json`), each with a message a
//! person can act on: which field, what was expected, what to do.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use mend::StoreError;
use serde::Serialize;

/// An error answer of the API.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Short, stable slug for the `type` URI (`invalid-field`, `not-found`...).
    pub kind: &'static str,
    /// What went wrong and what to do.
    pub detail: String,
    /// The offending field, when one is to blame.
    pub field: Option<String>,
}

/// The problem+json body.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Problem {
    /// A URI naming the problem type.
    #[serde(rename = "type")]
    pub type_: String,
    /// The status's reason phrase.
    pub title: String,
    /// The HTTP status.
    pub status: u16,
    /// What went wrong and what to do.
    pub detail: String,
    /// The offending field.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// The request id (also in the `x-request-id` header), to find the request in the logs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

/// Media type of error bodies.
pub const PROBLEM_JSON: &str = "application/problem+json";

impl ApiError {
    /// A 400/422-class error about one field.
    pub fn invalid(field: impl Into<String>, detail: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            kind: "invalid-field",
            detail: detail.into(),
            field: Some(field.into()),
        }
    }

    /// 400 with a message.
    pub fn bad_request(kind: &'static str, detail: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            kind,
            detail: detail.into(),
            field: None,
        }
    }

    /// 404.
    pub fn not_found(detail: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::NOT_FOUND,
            kind: "not-found",
            detail: detail.into(),
            field: None,
        }
    }

    /// 409.
    pub fn conflict(detail: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::CONFLICT,
            kind: "conflict",
            detail: detail.into(),
            field: None,
        }
    }

    /// Any status.
    pub fn new(status: StatusCode, kind: &'static str, detail: impl Into<String>) -> Self {
        ApiError {
            status,
            kind,
            detail: detail.into(),
            field: None,
        }
    }

    /// The body for this error.
    pub fn problem(&self, request_id: Option<String>) -> Problem {
        Problem {
            type_: format!("https://mend.dev/problems/{}", self.kind),
            title: self.status.canonical_reason().unwrap_or("Error").to_owned(),
            status: self.status.as_u16(),
            detail: self.detail.clone(),
            field: self.field.clone(),
            request_id,
        }
    }

    /// The response, with the request id when known.
    pub fn into_response_with_id(self, request_id: Option<String>) -> Response {
        let status = self.status;
        let body = serde_json::to_vec(&self.problem(request_id)).unwrap_or_default();
        let mut resp = (status, body).into_response();
        resp.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        resp
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        // The request-id middleware fills `request_id` in on the way out (see `app`).
        self.into_response_with_id(None)
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::InvalidJob(inv) => ApiError::invalid(inv.field, inv.to_string()),
            // Unique jobs: a retry whose key another job holds changed nothing.
            e @ StoreError::UniqueKeyHeld { .. } => ApiError::conflict(e.to_string()),
            StoreError::Locked { .. } => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "store-busy",
                format!("{e}; retry the request shortly"),
            ),
            other => {
                tracing::error!(error = %other, "store error while serving a request");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "store-unavailable",
                    format!("the job store failed: {other}"),
                )
            }
        }
    }
}

impl From<mend::ClientError> for ApiError {
    fn from(e: mend::ClientError) -> Self {
        match e {
            mend::ClientError::Store(e) => e.into(),
            other => ApiError::invalid("args", other.to_string()),
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        match r {
            JsonRejection::JsonDataError(e) => ApiError {
                status: StatusCode::UNPROCESSABLE_ENTITY,
                kind: "invalid-body",
                // serde's message names the field and what was expected.
                detail: format!(
                    "the JSON body does not match the expected shape: {}",
                    e.body_text()
                ),
                field: None,
            },
            JsonRejection::JsonSyntaxError(e) => ApiError::bad_request(
                "malformed-json",
                format!("the body is not valid JSON: {}", e.body_text()),
            ),
            JsonRejection::MissingJsonContentType(_) => ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "content-type",
                "send the body as JSON with the header `Content-Type: application/json`",
            ),
            JsonRejection::BytesRejection(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                too_large()
            }
            other => ApiError::bad_request("invalid-body", other.body_text()),
        }
    }
}

/// The 413 answer.
pub fn too_large() -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "body-too-large",
        "the request body is larger than the server's limit (--max-body-bytes, 1 MiB by default); send fewer jobs per batch or raise the limit",
    )
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        ApiError::bad_request(
            "invalid-query",
            format!("bad query string: {}", r.body_text()),
        )
    }
}

impl From<PathRejection> for ApiError {
    fn from(r: PathRejection) -> Self {
        ApiError::bad_request(
            "invalid-path",
            format!("bad path parameter: {}", r.body_text()),
        )
    }
}
