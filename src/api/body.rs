//! Request plumbing shared by the API handlers: authentication of the caller, JSON bodies
//! (size-capped, strictly typed) and query strings.

use bytes::Bytes;
use http::{Request, header};
use http_body_util::{BodyExt, Limited};
use percent_encoding::percent_decode_str;
use serde::de::DeserializeOwned;

use super::Api;
use crate::auth::{self, AuthError, Caller};
use crate::error::{ApiCode, ApiError};

/// Largest JSON body accepted by any endpoint.
pub const MAX_JSON_BYTES: usize = 64 * 1024;

/// Authenticates the request's `X-API-Key` and optional bearer token.
pub fn caller<B>(api: &Api, req: &Request<B>) -> Result<Caller, ApiError> {
    auth::authenticate(req.headers(), &api.keys, api.jwt.as_ref()).map_err(auth_error)
}

/// Maps an authentication failure to the spec's 401.
pub fn auth_error(e: AuthError) -> ApiError {
    ApiError::new(ApiCode::AuthenticationRequired, e.to_string())
}

/// Reads a JSON body of at most `MAX_JSON_BYTES` into `T`; unknown fields, wrong types and
/// missing fields are `data/validation-error` naming the field (`parse_json`).
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
    parse_json(&bytes)
}

/// Parses a JSON document into `T`. A refusal names the field by its path
/// (`metadata.tags[2]`) and says what was expected and what was found, in words a client
/// developer reads without knowing Rust's types: `fileSize: expected an integer, got a
/// string`.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    // Every body is an object; serde would also read a struct from an array, and say so in
    // terms of positions no client wrote.
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(ApiError::new(
            ApiCode::ValidationError,
            "the request body must be a JSON object",
        ));
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = field_path(e.path());
        let inner = e.into_inner();
        ApiError::new(ApiCode::ValidationError, describe_json_error(&path, &inner))
    })?;
    de.end().map_err(|e| {
        ApiError::new(
            ApiCode::ValidationError,
            format!("invalid JSON: {}", without_position(&e)),
        )
    })?;
    Ok(value)
}

/// `metadata.tags[2]`, or an empty string for the document itself.
fn field_path(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut out = String::new();
    for segment in path {
        match segment {
            Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            Segment::Map { key } | Segment::Enum { variant: key } => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            Segment::Unknown => {}
        }
    }
    out
}

/// serde_json's message without its trailing ` at line L column C`.
fn without_position(e: &serde_json::Error) -> String {
    let text = e.to_string();
    match text.rfind(" at line ") {
        Some(at) if e.line() > 0 => text[..at].to_owned(),
        _ => text,
    }
}

/// The client-facing text of a body error at `path`.
fn describe_json_error(path: &str, e: &serde_json::Error) -> String {
    use serde_json::error::Category;
    let message = without_position(e);
    if matches!(
        e.classify(),
        Category::Syntax | Category::Eof | Category::Io
    ) {
        return format!(
            "invalid JSON at line {} column {}: {message}",
            e.line(),
            e.column()
        );
    }
    let at = |field: &str| match (path.is_empty(), field.is_empty()) {
        (true, _) => field.to_owned(),
        (false, true) => path.to_owned(),
        // serde_path_to_error may already have stepped into the unknown key.
        (false, false) if path == field || path.ends_with(&format!(".{field}")) => path.to_owned(),
        (false, false) => format!("{path}.{field}"),
    };
    if let Some(rest) = message.strip_prefix("missing field `") {
        let field = rest.trim_end_matches('`');
        return format!("{}: is required", at(field));
    }
    if let Some(rest) = message.strip_prefix("unknown field `") {
        let (field, expected) = rest.split_once('`').unwrap_or((rest, ""));
        let known = expected
            .trim_start_matches(", expected one of ")
            .trim_start_matches(", expected ")
            .replace('`', "");
        return if known.is_empty() || known.starts_with("there are no fields") {
            format!("{}: is not a known field", at(field))
        } else {
            format!(
                "{}: is not a known field (expected one of {known})",
                at(field)
            )
        };
    }
    for prefix in ["invalid type: ", "invalid value: "] {
        if let Some(rest) = message.strip_prefix(prefix)
            && let Some((found, expected)) = rest.rsplit_once(", expected ")
        {
            let what = format!(
                "expected {}, got {}",
                expected_words(expected),
                found_words(found)
            );
            return if path.is_empty() {
                format!("the request body: {what}")
            } else {
                format!("{path}: {what}")
            };
        }
    }
    if path.is_empty() {
        format!("the request body: {message}")
    } else {
        format!("{path}: {message}")
    }
}

/// serde's name of an expected type, in JSON's words.
fn expected_words(expected: &str) -> String {
    match expected {
        "i8" | "i16" | "i32" | "i64" | "i128" | "isize" => "an integer".into(),
        "u8" | "u16" | "u64" | "u128" | "usize" => "a non-negative integer".into(),
        "u32" => "an integer from 0 to 4294967295".into(),
        "f32" | "f64" => "a number".into(),
        "a sequence" => "an array".into(),
        "a map" => "an object".into(),
        other if other.starts_with("struct ") => "an object".into(),
        other => other.into(),
    }
}

/// serde's description of a found value, in JSON's words (strings are not echoed: they
/// can be long, and the client has them).
fn found_words(found: &str) -> String {
    let quoted = |s: &str| {
        s.split_once('`')
            .map(|(_, v)| v.trim_end_matches('`').to_owned())
    };
    if found.starts_with("string ") || found == "string" {
        "a string".into()
    } else if found.starts_with("integer ") || found.starts_with("floating point ") {
        // serde prints floats in full (1e300 has 301 digits).
        quoted(found)
            .filter(|n| n.len() <= 24)
            .unwrap_or_else(|| "a number out of range".into())
    } else if found.starts_with("boolean ") {
        quoted(found).unwrap_or_else(|| "a boolean".into())
    } else if found == "unit value" || found == "null" {
        "null".into()
    } else if found == "sequence" {
        "an array".into()
    } else if found == "map" {
        "an object".into()
    } else {
        found.into()
    }
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
                        format!("query parameter `{}` is not valid UTF-8", k.escape_debug()),
                    )
                })
        };
        let (k, v) = (decode(k)?, decode(v)?);
        // PostgreSQL text cannot hold NUL, and no parameter has a use for control
        // characters: refused here, naming the parameter, before any query sees them.
        if k.chars().chain(v.chars()).any(char::is_control) {
            return Err(ApiError::new(
                ApiCode::InvalidParameters,
                format!(
                    "query parameter `{}` must not contain control characters",
                    k.escape_debug()
                ),
            ));
        }
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

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    #[allow(dead_code)]
    struct Sample {
        name: String,
        file_size: Option<i64>,
        width: Option<u32>,
        tags: Option<Vec<String>>,
        inner: Option<Inner>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        depth: u8,
    }

    fn check(body: &str, expected: &str) {
        let e = parse_json::<Sample>(body.as_bytes()).unwrap_err();
        assert_eq!(e.code, ApiCode::ValidationError, "{body}");
        assert_eq!(e.message, expected, "{body}");
    }

    #[test]
    fn body_errors_name_the_field_and_the_types() {
        check(
            r#"{"name": "a", "fileSize": "big"}"#,
            "fileSize: expected an integer, got a string",
        );
        check(r#"{"name": 5}"#, "name: expected a string, got 5");
        check(r#"{"name": null}"#, "name: expected a string, got null");
        check(r#"{"name": {}}"#, "name: expected a string, got an object");
        check(r#"{"name": false}"#, "name: expected a string, got false");
        check(r#"{}"#, "name: is required");
        check(
            r#"{"name": "a", "width": -3}"#,
            "width: expected an integer from 0 to 4294967295, got -3",
        );
        check(
            r#"{"name": "a", "width": 4294967296}"#,
            "width: expected an integer from 0 to 4294967295, got 4294967296",
        );
        check(
            r#"{"name": "a", "tags": ["x", 2]}"#,
            "tags[1]: expected a string, got 2",
        );
        check(
            r#"{"name": "a", "inner": {"depth": 300}}"#,
            "inner.depth: expected a non-negative integer, got 300",
        );
        check(r#"{"name": "a", "inner": {}}"#, "inner.depth: is required");
        check(
            r#"{"name": "a", "inner": {"deep": 1}}"#,
            "inner.deep: is not a known field (expected one of depth)",
        );
        // An unknown key that happens to end the parent's name is still its own field.
        check(
            r#"{"name": "a", "inner": {"ner": 1}}"#,
            "inner.ner: is not a known field (expected one of depth)",
        );
        check(
            r#"{"name": "a", "nope": 1}"#,
            "nope: is not a known field (expected one of name, fileSize, width, tags, inner)",
        );
        check("[1]", "the request body must be a JSON object");
        check("", "the request body must be a JSON object");
        check("{\"name\": \"a\"} x", "invalid JSON: trailing characters");
        let e = parse_json::<Sample>(b"{\"name\":\n \"a").unwrap_err();
        assert!(
            e.message.starts_with("invalid JSON at line 2 column"),
            "{}",
            e.message
        );
    }

    proptest! {
        /// Any bytes: a typed value or a validation error, never a panic.
        #[test]
        fn any_body_parses_or_is_refused(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            if let Err(e) = parse_json::<Sample>(&bytes) {
                prop_assert_eq!(e.code, ApiCode::ValidationError);
            }
        }

        /// Any query string: pairs free of control characters, or a refusal of invalid
        /// parameters.
        #[test]
        fn any_query_is_decoded_or_refused(query in "[a-zA-Z=&%0-9\\x00-\\x1f\u{80}-\u{10ffff}]{0,60}") {
            match query_pairs(Some(&query)) {
                Ok(pairs) => {
                    for (k, v) in pairs {
                        prop_assert!(!k.chars().chain(v.chars()).any(char::is_control));
                    }
                }
                Err(e) => prop_assert_eq!(e.code, ApiCode::InvalidParameters),
            }
        }
    }
}
