//! Every API error becomes a response here, in one place: a status and a JSON body
//! `{"message": "...", "detail": "..."}` whose message is one sentence for the user.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use tether_proto::api::ErrorBody;
use tether_store::StoreError;

use crate::passwords::PasswordError;

/// An error a handler returns.
#[derive(Debug)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// One sentence for the user.
    pub message: String,
    /// More detail, when there is any.
    pub detail: String,
    /// Seconds for a `Retry-After` header (429 and 503).
    pub retry_after: Option<u64>,
}

impl ApiError {
    /// An error with a status and message.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            detail: String::new(),
            retry_after: None,
        }
    }
    /// 400.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
    /// 401.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, message)
    }
    /// 403.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, message)
    }
    /// 404.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }
    /// 409.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, message)
    }
    /// Asks the client to retry after `after` (rounded up to whole seconds, at least 1).
    pub fn with_retry_after(mut self, after: std::time::Duration) -> Self {
        self.retry_after = Some(whole_secs(after));
        self
    }
    /// Adds detail.
    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = detail.into();
        self
    }
}

/// `d` rounded up to whole seconds, at least 1.
fn whole_secs(d: std::time::Duration) -> u64 {
    (d.as_secs() + u64::from(d.subsec_nanos() > 0)).max(1)
}

impl From<PasswordError> for ApiError {
    fn from(e: PasswordError) -> Self {
        match e {
            PasswordError::Limited { retry_after } => ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                format!(
                    "Too many failed logins; try again in {} s.",
                    whole_secs(retry_after)
                ),
            )
            .with_retry_after(retry_after),
            PasswordError::Busy => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "The server is busy checking other passwords; try again in a moment.",
            )
            .with_retry_after(std::time::Duration::from_secs(1)),
            PasswordError::Hash(e) => e.into(),
            other => {
                tracing::error!(error = %other, "password hashing failed");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Password hashing failed.",
                )
                .with_detail(other.to_string())
            }
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict(msg) => ApiError::conflict(msg),
            StoreError::Unavailable(msg) => {
                tracing::error!(error = %msg, "database unavailable");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "The database is unavailable; nothing was changed.",
                )
                .with_detail(msg)
            }
            other => {
                tracing::error!(error = %other, "database error");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Internal database error; nothing was changed.",
                )
                .with_detail(other.to_string())
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            message: self.message,
            detail: self.detail,
        };
        let mut resp = (self.status, axum::Json(body)).into_response();
        if let Some(secs) = self.retry_after {
            resp.headers_mut()
                .insert(axum::http::header::RETRY_AFTER, secs.into());
        }
        resp
    }
}

/// A JSON request body whose rejection (malformed JSON, wrong content type) is a 400
/// with a readable message rather than axum's plain-text default.
pub struct ApiJson<T>(pub T);

impl<S, T> axum::extract::FromRequest<S> for ApiJson<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, ApiError> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(Self(v)),
            Err(rej) => Err(ApiError::bad_request(
                "The request body is not valid JSON for this endpoint.",
            )
            .with_detail(rej.body_text())),
        }
    }
}

/// A path parameter whose rejection (a segment that is not UTF-8 after percent-decoding,
/// a value of the wrong type) is a 400 with the JSON error shape rather than axum's
/// plain-text default.
pub struct ApiPath<T>(pub T);

impl<S, T> axum::extract::FromRequestParts<S> for ApiPath<T>
where
    T: serde::de::DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, ApiError> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(v)) => Ok(Self(v)),
            Err(rej) => Err(
                ApiError::bad_request("The URL path is not valid for this endpoint.")
                    .with_detail(rej.body_text()),
            ),
        }
    }
}
