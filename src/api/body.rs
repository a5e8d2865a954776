//! Request plumbing shared by the API handlers: authentication of the caller, JSON bodies
//! (size-capped, strictly typed) and query strings.

use bytes::Bytes;
use http::{Request, header};
use http_body_util::{BodyExt, Limited};
use percent_encoding::percent_decode_str;
use serde::de::DeserializeOwned;

use super::auth::{self, AuthError, Caller};
use crate::app::App;
use crate::error::{ApiCode, ApiError};

/// Largest JSON body accepted by any endpoint.
pub const MAX_JSON_BYTES: usize = 64 * 1024;

/// Authenticates the request's `X-API-Key` and optional bearer token.
pub fn caller<B>(app: &App, req: &Request<B>) -> Result<Caller, ApiError> {
    auth::authenticate(req.headers(), &app.keys, app.jwt.as_ref()).map_err(auth_error)
}

/// Maps an authentication failure to the spec's 401.
pub fn auth_error(e: AuthError) -> ApiError {
    ApiError::new(ApiCode::AuthenticationRequired, e.to_string())
}

/// Reads a JSON body of at most `MAX_JSON_BYTES` into `T`; unknown fields, wrong types and
/// missing fields are `data/validation-error` with serde's message naming the field.
pub async fn json<T, B>(req: Request<B>) -> Result<T, ApiError>
where
    T: DeserializeOwned,
    B: hyper::body::Body<Data = Bytes>,
    B::Error: std::fmt::Display,
{
    if let Some(ct) = req.headers().get(header::CONTENT_TYPE) {
        let ct = ct.to_str().unwrap_or("");
        let essence = ct.split(';').next().unwrap_or("").trim();
        if !essence.eq_ignore_ascii_case("application/json") {
            return Err(ApiError::new(
                ApiCode::InvalidParameters,
                format!("Content-Type must be application/json, got `{ct}`"),
            ));
        }
    }
    let limited = Limited::new(req.into_body().map_err(|e| e.to_string()), MAX_JSON_BYTES);
    let bytes = match limited.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) => {
            let message = if e.is::<http_body_util::LengthLimitError>() {
                format!("request body is larger than {MAX_JSON_BYTES} bytes")
            } else {
                format!("could not read the request body: {e}")
            };
            return Err(ApiError::new(ApiCode::InvalidParameters, message));
        }
    };
    if bytes.is_empty() {
        return Err(ApiError::new(
            ApiCode::ValidationError,
            "request body must be a JSON object",
        ));
    }
    serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::new(ApiCode::ValidationError, format!("invalid body: {e}")))
}

/// Decoded `name=value` pairs of a query string. Repeated names are refused.
pub fn query_pairs(query: Option<&str>) -> Result<Vec<(String, String)>, ApiError> {
    let mut pairs: Vec<(String, String)> = Vec::new();
    for part in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = part.split_once('=').unwrap_or((part, ""));
        let decode = |s: &str| {
            percent_decode_str(&s.replace('+', " "))
                .decode_utf8()
                .map(|c| c.into_owned())
                .map_err(|_| {
                    ApiError::new(
                        ApiCode::InvalidParameters,
                        format!("query parameter `{k}` is not valid UTF-8"),
                    )
                })
        };
        let (k, v) = (decode(k)?, decode(v)?);
        if pairs.iter().any(|(seen, _)| *seen == k) {
            return Err(ApiError::new(
                ApiCode::InvalidParameters,
                format!("query parameter `{k}` is given more than once"),
            ));
        }
        pairs.push((k, v));
    }
    Ok(pairs)
}
