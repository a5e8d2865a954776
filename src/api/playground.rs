//! The playground (`GET /playground` on the API listener): one page, embedded in the binary,
//! to build resize URLs with controls and see what the CDN answers; and the two JSON calls
//! it makes: the public images to pick from, and a URL checked, printed and signed.
//! On by default; `playground = false` answers 404 on every path here. A URL is signed for
//! the page only when the operator sets `playground_signing = true`; the key never leaves
//! the server.

use http::{HeaderValue, Request, Response, StatusCode, header};
use serde_json::json;

use super::Api;
use super::body::query_pairs;
use super::json;
use crate::edge::access::Signing;
use crate::edge::srcset;
use crate::edge::url;
use crate::error::{ApiCode, ApiError, EdgeError};
use crate::http_body::{Body, full};
use crate::imaging::recipe::Recipe;
use crate::key::ObjectKey;

/// The page, with `CONFIG_JSON` replaced at serve time.
const PAGE: &str = include_str!("playground.html");

/// Most public images one call lists.
const IMAGES_PAGE: u32 = 100;

/// The page, with the CDN's address, whether URLs are signed, and the filter table.
pub fn page(api: &Api) -> Response<Body> {
    let filters: Vec<[&str; 2]> = url::FILTERS.iter().map(|(n, u)| [*n, *u]).collect();
    let config = json!({
        "cdn": api.settings.cdn_base_url.clone(),
        "signing": signs(api).is_some(),
        "filters": filters,
    });
    // `</` inside a script element would end it; JSON allows `<\/`.
    let config = config.to_string().replace("</", "<\\/");
    let mut resp = Response::new(full(PAGE.replace("CONFIG_JSON", &config)));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // Only its own scripts and styles, images from anywhere the page points (the CDN).
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
             img-src * blob: data:; connect-src *",
        ),
    );
    resp
}

/// `GET /playground/images[?after=KEY]`: public image keys in key order, a page at a time.
pub async fn images<B>(api: &Api, req: Request<B>) -> Result<Response<Body>, ApiError> {
    let mut after = String::new();
    for (name, value) in query_pairs(req.uri().query())? {
        match name.as_str() {
            "after" if value.len() <= url::MAX_PATH_BYTES => after = value,
            "after" => return Err(invalid("after", "is longer than a key can be")),
            other => return Err(invalid(other, "is not a parameter of this call (after)")),
        }
    }
    let keys = api.db.public_images(&after, IMAGES_PAGE).await?;
    let next = (keys.len() == IMAGES_PAGE as usize).then(|| keys.last().map(ObjectKey::to_string));
    let items: Vec<_> = keys.iter().map(|k| json!({ "key": k.as_str() })).collect();
    Ok(json(
        StatusCode::OK,
        &json!({ "items": items, "next": next.flatten() }),
    ))
}

/// `GET /playground/url?path=P[&srcset=W,W]`: the URL checked by the CDN's own parser and
/// printed in its canonical form, as a bare and (when enabled) a signed CDN URL, with the
/// untransformed and `meta/` URLs and the srcset attributes. A malformed URL answers 400
/// with the CDN's own error body (`segment`, `reason`), so the page can show it in place.
pub async fn url<B>(
    api: &Api,
    req: Request<B>,
    request_id: &str,
) -> Result<Response<Body>, ApiError> {
    let mut path = None;
    let mut widths = None;
    for (name, value) in query_pairs(req.uri().query())? {
        match name.as_str() {
            "path" => path = Some(value),
            "srcset" => widths = Some(value),
            other => {
                return Err(invalid(
                    other,
                    "is not a parameter of this call (path, srcset)",
                ));
            }
        }
    }
    let path = path.ok_or_else(|| invalid("path", "is required"))?;
    let parsed = match url::parse(strip_origin(&path)) {
        Ok(parsed) => parsed,
        Err(e) => return Ok(EdgeError::Url(e).into_response(request_id)),
    };
    let canonical = url::canonical(&parsed.recipe, false, &parsed.key);
    let cdn = &api.settings.cdn_base_url;
    let unsigned = Signing::new("", false);
    let signing = signs(api).unwrap_or(&unsigned);
    let at = |path: &str| format!("{cdn}/{}", signing.sign_path(path));
    let original = url::canonical(&Recipe::default(), false, &parsed.key);
    let srcset = match widths.filter(|w| !w.is_empty()) {
        None => json!(null),
        Some(widths) => srcset::parse_widths(&widths, api.settings.max_output_side)
            .and_then(|widths| srcset::attributes(signing, cdn, &canonical, &widths))
            .map_or_else(|e| json!({ "error": e.to_string() }), |s| json!(s)),
    };
    Ok(json(
        StatusCode::OK,
        &json!({
            "canonical": canonical,
            "bare": format!("{cdn}/unsafe/{canonical}"),
            "url": at(&canonical),
            "original": at(&original),
            "meta": at(&format!("meta/{canonical}")),
            "srcset": srcset,
        }),
    ))
}

/// The signing the playground may use: the server's, when `playground_signing` is on and a
/// key is configured.
fn signs(api: &Api) -> Option<&Signing> {
    api.settings.playground_signs.then_some(&api.signing)
}

/// A pasted URL's path: scheme and host dropped.
fn strip_origin(text: &str) -> &str {
    let text = text.trim();
    for scheme in ["https://", "http://"] {
        if let Some(rest) = text.strip_prefix(scheme) {
            return rest.split_once('/').map_or("", |(_, path)| path);
        }
    }
    text
}

fn invalid(name: &str, why: &str) -> ApiError {
    ApiError::new(
        ApiCode::InvalidParameters,
        format!("query parameter `{name}` {why}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pasted_urls_lose_their_origin() {
        assert_eq!(
            strip_origin("https://img.example/unsafe/300x200/a.jpg"),
            "unsafe/300x200/a.jpg"
        );
        assert_eq!(
            strip_origin(" http://127.0.0.1:8080/fit-in/a.jpg "),
            "fit-in/a.jpg"
        );
        assert_eq!(strip_origin("fit-in/300x200/a.jpg"), "fit-in/300x200/a.jpg");
        assert_eq!(strip_origin("https://img.example"), "");
    }

    #[test]
    fn the_page_has_its_config_slot() {
        assert_eq!(PAGE.matches("CONFIG_JSON").count(), 1);
    }
}
