//! Turns a rendered variant into an HTTP response: headers, strong ETag, conditional
//! requests (`If-None-Match` → 304), `HEAD`, `Cache-Control` and `Vary`. Pure: no I/O.

use http::{HeaderMap, HeaderName, HeaderValue, Method, Response, StatusCode, header};

use crate::cache::Variant;
use crate::http_body::{Body, empty, full};

/// How the response may be cached and which request headers it depended on.
#[derive(Debug, Clone, Copy)]
pub struct Caching {
    pub max_age: u32,
    /// The format was chosen from `Accept`.
    pub vary_accept: bool,
    /// The client hints the size was read from (`edge::hints`); also sent as `Critical-CH`.
    pub vary_hints: &'static [&'static str],
    /// The server reads client hints: ask for them (`Accept-CH`).
    pub accept_hints: bool,
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
    let vary: Vec<&str> = caching
        .vary_accept
        .then_some("Accept")
        .into_iter()
        .chain(caching.vary_hints.iter().copied())
        .collect();
    if let Some(vary) = header_list(&vary) {
        h.insert(header::VARY, vary);
    }
    if caching.accept_hints {
        h.insert(
            HeaderName::from_static("accept-ch"),
            HeaderValue::from_static(super::hints::ACCEPT_CH),
        );
    }
    if let Some(critical) = header_list(caching.vary_hints) {
        h.insert(HeaderName::from_static("critical-ch"), critical);
    }
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    let timing = format!(
        "render;dur={:.1}",
        variant.render_time.as_secs_f64() * 1000.0
    );
    h.insert(
        HeaderName::from_static("server-timing"),
        HeaderValue::from_str(&timing).expect("invariant: digits are a valid header"),
    );
    crate::http_body::allow_any_origin(h);
    resp
}

/// A list of header names as one value (`Vary`, `Critical-CH`); `None` when empty.
pub fn header_list(names: &[&str]) -> Option<HeaderValue> {
    (!names.is_empty()).then(|| {
        HeaderValue::from_str(&names.join(", "))
            .expect("invariant: header names are a valid header value")
    })
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
    use crate::imaging::Format;
    use crate::key::ObjectKey;
    use bytes::Bytes;

    fn variant() -> Variant {
        Variant {
            key: ObjectKey::parse("a.jpg").unwrap(),
            bytes: Bytes::from_static(b"12345"),
            format: Format::Webp,
            width: 1,
            height: 1,
            etag: "\"abc\"".into(),
            render_time: std::time::Duration::from_micros(12_340),
        }
    }

    const CACHING: Caching = Caching {
        max_age: 60,
        vary_accept: true,
        vary_hints: &[],
        accept_hints: false,
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
        assert_eq!(h["server-timing"], "render;dur=12.3");
        assert_eq!(h[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");
        assert!(h.get("accept-ch").is_none());
        assert!(h.get("critical-ch").is_none());
    }

    #[test]
    fn hints_join_accept_in_vary_and_are_asked_for() {
        let caching = Caching {
            vary_hints: &["Sec-CH-DPR", "Sec-CH-Width"],
            accept_hints: true,
            ..CACHING
        };
        let r = image(&Method::GET, &HeaderMap::new(), &variant(), caching);
        let h = r.headers();
        assert_eq!(h[header::VARY], "Accept, Sec-CH-DPR, Sec-CH-Width");
        assert_eq!(h["critical-ch"], "Sec-CH-DPR, Sec-CH-Width");
        assert_eq!(h["accept-ch"], super::super::hints::ACCEPT_CH);
        let not_negotiated = Caching {
            vary_accept: false,
            vary_hints: &[],
            ..caching
        };
        let r = image(&Method::GET, &HeaderMap::new(), &variant(), not_negotiated);
        assert!(r.headers().get(header::VARY).is_none());
        assert!(r.headers().get("critical-ch").is_none());
        assert_eq!(r.headers()["accept-ch"], super::super::hints::ACCEPT_CH);
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
