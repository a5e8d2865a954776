//! Turns a rendered variant into an HTTP response: headers, strong ETag, conditional
//! requests (`If-None-Match` → 304), `HEAD`, `Cache-Control` and `Vary`. Pure: no I/O.

use http::{HeaderMap, HeaderValue, Method, Response, StatusCode, header};

use crate::cache::Variant;
use crate::server::{Body, empty, full};

/// How the response may be cached and whether it depended on `Accept`.
#[derive(Debug, Clone, Copy)]
pub struct Caching {
    pub max_age: u32,
    pub vary_accept: bool,
}

pub fn image(
    method: &Method,
    request_headers: &HeaderMap,
    variant: &Variant,
    caching: Caching,
) -> Response<Body> {
    let not_modified = request_headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| etag_matches(v, &variant.etag));
    let (status, body) = if not_modified {
        (StatusCode::NOT_MODIFIED, empty())
    } else if method == Method::HEAD {
        (StatusCode::OK, empty())
    } else {
        (StatusCode::OK, full(variant.bytes.clone()))
    };
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    if status == StatusCode::OK {
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(variant.format.mime()),
        );
        h.insert(header::CONTENT_LENGTH, variant.bytes.len().into());
    }
    if let Ok(etag) = HeaderValue::from_str(&variant.etag) {
        h.insert(header::ETAG, etag);
    }
    let cache_control = format!("public, max-age={}", caching.max_age);
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_str(&cache_control).expect("invariant: digits are a valid header"),
    );
    if caching.vary_accept {
        h.insert(header::VARY, HeaderValue::from_static("Accept"));
    }
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    resp
}

/// `If-None-Match` uses the weak comparison (RFC 9110 §13.1.2): `W/` prefixes are ignored.
fn etag_matches(if_none_match: &str, etag: &str) -> bool {
    let ours = etag.trim_start_matches("W/");
    if_none_match
        .split(',')
        .map(str::trim)
        .any(|tag| tag == "*" || tag.trim_start_matches("W/") == ours)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::edge::url::ObjectKey;
    use crate::imaging::Format;
    use bytes::Bytes;

    fn variant() -> Variant {
        Variant {
            key: ObjectKey::parse("a.jpg").unwrap(),
            bytes: Bytes::from_static(b"12345"),
            format: Format::Webp,
            width: 1,
            height: 1,
            etag: "\"abc\"".into(),
        }
    }

    const CACHING: Caching = Caching {
        max_age: 60,
        vary_accept: true,
    };

    #[test]
    fn get_carries_every_header() {
        let r = image(&Method::GET, &HeaderMap::new(), &variant(), CACHING);
        assert_eq!(r.status(), 200);
        let h = r.headers();
        assert_eq!(h[header::CONTENT_TYPE], "image/webp");
        assert_eq!(h[header::CONTENT_LENGTH], "5");
        assert_eq!(h[header::ETAG], "\"abc\"");
        assert_eq!(h[header::CACHE_CONTROL], "public, max-age=60");
        assert_eq!(h[header::VARY], "Accept");
    }

    #[test]
    fn conditional_requests() {
        for (inm, status) in [
            ("\"abc\"", 304),
            ("W/\"abc\"", 304),
            ("\"x\", \"abc\"", 304),
            ("*", 304),
            ("\"abd\"", 200),
        ] {
            let mut headers = HeaderMap::new();
            headers.insert(header::IF_NONE_MATCH, HeaderValue::from_static(inm));
            let r = image(&Method::GET, &headers, &variant(), CACHING);
            assert_eq!(r.status(), status, "{inm}");
        }
    }

    #[test]
    fn head_has_length_but_no_body() {
        use hyper::body::Body as _;
        let r = image(&Method::HEAD, &HeaderMap::new(), &variant(), CACHING);
        assert_eq!(r.headers()[header::CONTENT_LENGTH], "5");
        assert_eq!(r.body().size_hint().exact(), Some(0));
    }
}
