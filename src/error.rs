//! The one place that turns a failure into an HTTP status and body.
//!
//! Every failure is classified by who is at fault: the client (4xx, with a message saying
//! exactly what is wrong), the origin storage (502/504), overload (503 + Retry-After), or
//! us (500, body says only "internal error"; the cause is logged once, here).

use std::sync::Arc;

use http::{HeaderValue, Response, StatusCode, header};
use serde_json::json;

use crate::budget::BudgetError;
use crate::cpu::CpuError;
use crate::db::DbError;
use crate::edge::url::UrlError;
use crate::http_body::{Body, json_no_store};
use crate::imaging::ImagingError;
use crate::storage::StorageError;

/// Everything that can go wrong on the image edge's data path.
#[derive(Debug, Clone, thiserror::Error)]
pub enum EdgeError {
    #[error("{0}")]
    Url(#[from] UrlError),
    #[error("method not allowed: the image edge answers GET and HEAD")]
    MethodNotAllowed,
    #[error("this server requires signed URLs")]
    SignatureRequired,
    #[error("URL signature does not match")]
    BadSignature,
    #[error("no such image")]
    NotFound,
    /// The requested key is missing or not public (the two answer alike), named back to the
    /// person who typed the URL, with what its first segments resemble when they look like
    /// a mistyped option.
    #[error("no public image has the key `{key}`{}", hint.as_ref().map(|h| format!("; {h}")).unwrap_or_default())]
    KeyNotServed { key: String, hint: Option<String> },
    #[error("output {width}x{height} exceeds the limit of {limit} pixels per side")]
    OutputTooLarge { width: u32, height: u32, limit: u32 },
    #[error("source image is {size} bytes, over the limit of {limit}")]
    SourceTooLarge { size: u64, limit: u64 },
    /// Not JPEG, PNG, WebP, GIF, TIFF or BMP (sniffed from the bytes).
    #[error("unsupported source format (expected JPEG, PNG, WebP, GIF, TIFF or BMP)")]
    UnsupportedFormat,
    /// The header declares more pixels than allowed; nothing was decoded.
    #[error("source is {width}x{height}, more than the limit of {limit} pixels")]
    TooManyPixels { width: u32, height: u32, limit: u64 },
    /// Corrupt or truncated source.
    #[error("source image cannot be decoded: {0}")]
    Undecodable(String),
    /// An encoder failed: our fault.
    #[error("encoding failed: {0}")]
    Encode(String),
    #[error(
        "rendering this image needs about {} MiB of memory, more than the server's budget of {} MiB (memory_budget_bytes)",
        need.div_ceil(1 << 20),
        budget >> 20
    )]
    OverMemoryBudget { need: u64, budget: u64 },
    #[error("server busy: transform queue is full")]
    Overloaded,
    #[error("storage did not answer in time")]
    StorageTimeout,
    /// The cause is kept (`source()`), shared: coalesced waiters all receive the error.
    #[error("storage failed: {0}")]
    Storage(#[source] Arc<StorageError>),
    #[error("the metadata store is unavailable")]
    MetadataUnavailable(#[source] Arc<DbError>),
    #[error("the transform did not finish before the deadline")]
    Deadline,
    #[error("internal: {0}")]
    Internal(String),
}

impl From<ImagingError> for EdgeError {
    fn from(e: ImagingError) -> Self {
        match e {
            ImagingError::OutputTooLarge {
                width,
                height,
                limit,
            } => EdgeError::OutputTooLarge {
                width,
                height,
                limit,
            },
            ImagingError::Cancelled => EdgeError::Deadline,
            ImagingError::UnsupportedFormat => EdgeError::UnsupportedFormat,
            ImagingError::TooManyPixels {
                width,
                height,
                limit,
            } => EdgeError::TooManyPixels {
                width,
                height,
                limit,
            },
            ImagingError::Undecodable(why) => EdgeError::Undecodable(why),
            ImagingError::Encode(why) => EdgeError::Encode(why),
        }
    }
}

impl From<CpuError> for EdgeError {
    fn from(e: CpuError) -> Self {
        match e {
            CpuError::Overloaded => EdgeError::Overloaded,
            CpuError::Deadline => EdgeError::Deadline,
            CpuError::Panicked => EdgeError::Internal("transform thread panicked".into()),
        }
    }
}

impl From<BudgetError> for EdgeError {
    fn from(e: BudgetError) -> Self {
        match e {
            BudgetError::TooLarge { need, budget } => EdgeError::OverMemoryBudget { need, budget },
            BudgetError::Busy => EdgeError::Overloaded,
        }
    }
}

impl From<StorageError> for EdgeError {
    fn from(e: StorageError) -> Self {
        match e {
            StorageError::NotFound => EdgeError::NotFound,
            StorageError::TooLarge { size, limit } => EdgeError::SourceTooLarge { size, limit },
            StorageError::Timeout => EdgeError::StorageTimeout,
            other @ (StorageError::Io(_)
            | StorageError::Full
            | StorageError::Unavailable(_)
            | StorageError::BucketMissing(_)
            | StorageError::Incomplete(_)
            | StorageError::TooSlow { .. }
            | StorageError::PartMismatch { .. }
            | StorageError::PartTooSmall { .. }
            | StorageError::Empty) => EdgeError::Storage(Arc::new(other)),
        }
    }
}

impl EdgeError {
    /// The status table: the only place statuses are chosen for edge failures.
    pub fn status(&self) -> StatusCode {
        match self {
            EdgeError::Url(_) | EdgeError::OutputTooLarge { .. } => StatusCode::BAD_REQUEST,
            EdgeError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            EdgeError::SignatureRequired | EdgeError::BadSignature => StatusCode::FORBIDDEN,
            EdgeError::NotFound | EdgeError::KeyNotServed { .. } => StatusCode::NOT_FOUND,
            EdgeError::SourceTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            EdgeError::UnsupportedFormat => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            EdgeError::OverMemoryBudget { .. }
            | EdgeError::TooManyPixels { .. }
            | EdgeError::Undecodable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            EdgeError::Overloaded | EdgeError::MetadataUnavailable(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            EdgeError::StorageTimeout | EdgeError::Deadline => StatusCode::GATEWAY_TIMEOUT,
            EdgeError::Storage(_) => StatusCode::BAD_GATEWAY,
            EdgeError::Encode(_) | EdgeError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// A stable machine-readable code for the JSON body.
    pub fn code(&self) -> &'static str {
        match self {
            EdgeError::Url(_) => "url/invalid",
            EdgeError::MethodNotAllowed => "http/method-not-allowed",
            EdgeError::SignatureRequired => "url/signature-required",
            EdgeError::BadSignature => "url/bad-signature",
            EdgeError::NotFound | EdgeError::KeyNotServed { .. } => "image/not-found",
            EdgeError::OutputTooLarge { .. } => "image/output-too-large",
            EdgeError::SourceTooLarge { .. } => "image/source-too-large",
            EdgeError::OverMemoryBudget { .. } => "image/over-memory-budget",
            EdgeError::UnsupportedFormat => "image/unsupported-format",
            EdgeError::TooManyPixels { .. } => "image/too-many-pixels",
            EdgeError::Undecodable(_) => "image/undecodable",
            EdgeError::Encode(_) => "internal",
            EdgeError::Overloaded => "server/overloaded",
            EdgeError::StorageTimeout => "storage/timeout",
            EdgeError::Storage(_) => "storage/failed",
            EdgeError::MetadataUnavailable(_) => "metadata/unavailable",
            EdgeError::Deadline => "image/deadline",
            EdgeError::Internal(_) => "internal",
        }
    }

    /// The response, logging server-side faults once with their cause.
    pub fn into_response(self, request_id: &str) -> Response<Body> {
        let status = self.status();
        if let EdgeError::MetadataUnavailable(cause) = &self {
            tracing::warn!(request_id, error = %cause, "metadata store unavailable");
        }
        let message = if status.is_server_error() && status != StatusCode::SERVICE_UNAVAILABLE {
            tracing::error!(request_id, error = %self, "request failed");
            match status {
                StatusCode::INTERNAL_SERVER_ERROR => "internal error".to_owned(),
                _ => self.to_string(),
            }
        } else {
            self.to_string()
        };
        let mut body =
            json!({ "status": status.as_u16(), "code": self.code(), "message": message });
        if let EdgeError::Url(u) = &self {
            body["segment"] = json!(u.segment);
            body["reason"] = json!(u.reason);
        }
        if let EdgeError::KeyNotServed { key, hint } = &self {
            body["key"] = json!(key);
            if let Some(hint) = hint {
                body["hint"] = json!(hint);
            }
        }
        let mut resp = json_no_store(status, json!({ "error": body }).to_string());
        let h = resp.headers_mut();
        crate::http_body::allow_any_origin(h);
        if status == StatusCode::SERVICE_UNAVAILABLE {
            h.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_follow_the_spec() {
        let cases: Vec<(EdgeError, u16)> = vec![
            (
                EdgeError::Url(UrlError {
                    segment: "x".into(),
                    reason: "y".into(),
                }),
                400,
            ),
            (EdgeError::BadSignature, 403),
            (EdgeError::NotFound, 404),
            (EdgeError::SourceTooLarge { size: 2, limit: 1 }, 413),
            (EdgeError::from(ImagingError::UnsupportedFormat), 415),
            (
                EdgeError::from(ImagingError::TooManyPixels {
                    width: 1,
                    height: 1,
                    limit: 0,
                }),
                422,
            ),
            (EdgeError::from(ImagingError::Undecodable("x".into())), 422),
            (
                EdgeError::from(ImagingError::OutputTooLarge {
                    width: 9000,
                    height: 1,
                    limit: 8192,
                }),
                400,
            ),
            (EdgeError::from(ImagingError::Cancelled), 504),
            (EdgeError::from(ImagingError::Encode("x".into())), 500),
            (
                EdgeError::from(BudgetError::TooLarge {
                    need: 300 << 20,
                    budget: 256 << 20,
                }),
                422,
            ),
            (EdgeError::from(BudgetError::Busy), 503),
            (EdgeError::Overloaded, 503),
            (
                EdgeError::Storage(Arc::new(StorageError::Unavailable("x".into()))),
                502,
            ),
            (
                EdgeError::MetadataUnavailable(Arc::new(DbError::Corrupt("x".into()))),
                503,
            ),
            (EdgeError::StorageTimeout, 504),
            (EdgeError::Deadline, 504),
            (EdgeError::from(ImagingError::Cancelled), 504),
        ];
        for (err, status) in cases {
            assert_eq!(err.status().as_u16(), status, "{err:?}");
        }
    }

    #[tokio::test]
    async fn internal_errors_hide_their_cause_and_overload_says_when_to_retry() {
        use http_body_util::BodyExt;
        let resp = EdgeError::Internal("secret path /etc".into()).into_response("r1");
        assert_eq!(resp.status(), 500);
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let text = String::from_utf8_lossy(&body);
        assert!(
            text.contains("internal error") && !text.contains("/etc"),
            "{text}"
        );
        let resp = EdgeError::Overloaded.into_response("r2");
        assert_eq!(resp.headers()[header::RETRY_AFTER], "1");
    }
}

/// The storage API's stable error codes (SPEC §2.4), plus the few generic ones every HTTP
/// API needs. `status()` is the only status table for the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiCode {
    FileNotFound,
    InvalidName,
    FileTooLarge,
    FileTooSmall,
    InvalidFormat,
    InvalidPath,
    BucketNotConfigured,
    InvalidPartNumberRange,
    UploadInitFailed,
    InvalidPartsArray,
    AccessDenied,
    S3KeyAlreadyExists,
    S3KeyTooLong,
    OriginalNameTooLong,
    MimeTypeTooLong,
    SizeNegative,
    AuthenticationRequired,
    InvalidParameters,
    ValidationError,
    RouteNotFound,
    MethodNotAllowed,
    RequestTimeout,
    Internal,
    Unavailable,
    InsufficientStorage,
}

impl ApiCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ApiCode::FileNotFound => "file/not-found",
            ApiCode::InvalidName => "file/invalid-name",
            ApiCode::FileTooLarge => "file/file-too-large",
            ApiCode::FileTooSmall => "file/file-too-small",
            ApiCode::InvalidFormat => "file/invalid-format",
            ApiCode::InvalidPath => "file/invalid-path",
            ApiCode::BucketNotConfigured => "file/bucket-not-configured",
            ApiCode::InvalidPartNumberRange => "file/invalid-part-number-range",
            ApiCode::UploadInitFailed => "file/upload-init-failed",
            ApiCode::InvalidPartsArray => "file/invalid-parts-array",
            ApiCode::AccessDenied => "file/access-denied",
            ApiCode::S3KeyAlreadyExists => "file/s3-key-already-exists",
            ApiCode::S3KeyTooLong => "file/s3-key-too-long",
            ApiCode::OriginalNameTooLong => "file/original-name-too-long",
            ApiCode::MimeTypeTooLong => "file/mime-type-too-long",
            ApiCode::SizeNegative => "file/size-negative",
            ApiCode::AuthenticationRequired => "common/authentication-required",
            ApiCode::InvalidParameters => "common/invalid-parameters",
            ApiCode::ValidationError => "data/validation-error",
            ApiCode::RouteNotFound => "common/not-found",
            ApiCode::MethodNotAllowed => "common/method-not-allowed",
            ApiCode::RequestTimeout => "common/request-timeout",
            ApiCode::Internal => "common/internal-error",
            ApiCode::Unavailable => "common/service-unavailable",
            ApiCode::InsufficientStorage => "common/insufficient-storage",
        }
    }

    pub fn status(self) -> StatusCode {
        match self {
            ApiCode::FileNotFound | ApiCode::RouteNotFound => StatusCode::NOT_FOUND,
            ApiCode::InvalidName
            | ApiCode::FileTooLarge
            | ApiCode::FileTooSmall
            | ApiCode::InvalidFormat
            | ApiCode::InvalidPath
            | ApiCode::InvalidPartNumberRange
            | ApiCode::InvalidPartsArray
            | ApiCode::S3KeyTooLong
            | ApiCode::OriginalNameTooLong
            | ApiCode::MimeTypeTooLong
            | ApiCode::SizeNegative
            | ApiCode::InvalidParameters
            | ApiCode::ValidationError => StatusCode::BAD_REQUEST,
            ApiCode::AccessDenied => StatusCode::FORBIDDEN,
            ApiCode::S3KeyAlreadyExists => StatusCode::CONFLICT,
            ApiCode::AuthenticationRequired => StatusCode::UNAUTHORIZED,
            ApiCode::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiCode::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            ApiCode::BucketNotConfigured | ApiCode::UploadInitFailed | ApiCode::Internal => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
            ApiCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ApiCode::InsufficientStorage => StatusCode::INSUFFICIENT_STORAGE,
        }
    }
}

/// A failed API call: a stable code and a message saying exactly what was wrong, and for a
/// server-side fault its cause, which the client never sees and which is logged once, when
/// the response is made (`into_response`).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{code:?}: {message}")]
pub struct ApiError {
    pub code: ApiCode,
    pub message: String,
    #[source]
    pub cause: Option<Arc<dyn std::error::Error + Send + Sync>>,
}

impl ApiError {
    pub fn new(code: ApiCode, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            message: message.into(),
            cause: None,
        }
    }

    /// Keeps `cause` for the log (never for the body).
    pub fn caused_by(mut self, cause: impl std::error::Error + Send + Sync + 'static) -> ApiError {
        self.cause = Some(Arc::new(cause));
        self
    }

    /// A server-side fault, reported as "internal error"; its cause is logged at the response.
    pub fn internal(cause: impl std::fmt::Display) -> ApiError {
        ApiError::new(ApiCode::Internal, "internal error").caused_by(Cause(cause.to_string()))
    }

    /// 507: the server has no room to store what was sent.
    pub fn full() -> ApiError {
        ApiError::new(
            ApiCode::InsufficientStorage,
            "the server's storage is full: nothing was stored; retry once space is freed",
        )
    }

    /// `{"success": false, "error": {"code", "message"}}` with the code's status. A
    /// server-side fault is logged here, once, with its cause and the request id.
    pub fn into_response(self, request_id: &str) -> Response<Body> {
        if self.code.status().is_server_error() {
            match &self.cause {
                Some(cause) => {
                    tracing::error!(request_id, code = self.code.as_str(), error = %cause, "API request failed")
                }
                None => {
                    tracing::error!(request_id, code = self.code.as_str(), message = %self.message, "API request failed")
                }
            }
        }
        let body = json!({
            "success": false,
            "error": { "code": self.code.as_str(), "message": self.message },
        });
        json_no_store(self.code.status(), body.to_string())
    }
}

impl From<crate::db::DbError> for ApiError {
    fn from(e: crate::db::DbError) -> Self {
        match e {
            crate::db::DbError::DuplicateKey(key) => ApiError::new(
                ApiCode::S3KeyAlreadyExists,
                format!("a file is already registered for key {key}"),
            ),
            crate::db::DbError::Sqlx(
                e @ (sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed),
            ) => ApiError::new(
                ApiCode::Unavailable,
                "the metadata store is unavailable; retry shortly",
            )
            .caused_by(e),
            crate::db::DbError::Sqlx(sqlx::Error::Database(e))
                if disk_full(e.code().as_deref()) =>
            {
                ApiError::full().caused_by(crate::db::DbError::Sqlx(sqlx::Error::Database(e)))
            }
            other => ApiError::internal(other),
        }
    }
}

/// A cause known only by its text (`ApiError::internal`).
#[derive(Debug)]
struct Cause(String);

impl std::fmt::Display for Cause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Cause {}

/// SQLite's `SQLITE_FULL` (13) or PostgreSQL's `disk_full` (53100).
fn disk_full(code: Option<&str>) -> bool {
    matches!(code, Some("13" | "53100"))
}

impl From<StorageError> for ApiError {
    fn from(e: StorageError) -> Self {
        match e {
            StorageError::NotFound => {
                ApiError::new(ApiCode::FileNotFound, "the object is not in storage")
            }
            StorageError::TooLarge { size, limit } => ApiError::new(
                ApiCode::FileTooLarge,
                format!("{size} bytes is over the limit of {limit} bytes"),
            ),
            StorageError::PartMismatch { part } => ApiError::new(
                ApiCode::InvalidPartsArray,
                format!("part {part} was not uploaded or its etag does not match"),
            ),
            e @ StorageError::PartTooSmall { .. } => {
                ApiError::new(ApiCode::InvalidPartsArray, e.to_string())
            }
            StorageError::Empty => ApiError::new(ApiCode::FileTooSmall, "the upload is empty"),
            e @ StorageError::Full => ApiError::full().caused_by(e),
            e @ StorageError::TooSlow { .. } => {
                ApiError::new(ApiCode::RequestTimeout, e.to_string())
            }
            StorageError::Incomplete(why) => ApiError::new(
                ApiCode::InvalidParameters,
                format!("the upload broke off before the end: {why}"),
            ),
            e @ StorageError::BucketMissing(_) => ApiError::new(
                ApiCode::BucketNotConfigured,
                "this server's object storage is not configured (its bucket is missing)",
            )
            .caused_by(e),
            other @ (StorageError::Unavailable(_) | StorageError::Timeout) => ApiError::new(
                ApiCode::Unavailable,
                "object storage is unavailable; retry shortly",
            )
            .caused_by(other),
            other => ApiError::internal(other),
        }
    }
}
