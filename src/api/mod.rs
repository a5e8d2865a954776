//! The API listener: health, readiness, metrics, the storage API (SPEC §2) and, for the
//! embedded local store, the presigned upload/download endpoints themselves.
//!
//! Requests are first parsed into a typed `Endpoint` (method + path), then handled. Every
//! failure is an `ApiError` rendered by `error.rs` in the spec's JSON envelope.

mod body;
mod context;
mod files;
mod objects;
mod playground;
mod uploads;
mod view;

/// Entry points for the fuzz targets (`fuzz/`, README "Fuzzing"): what the API does with a
/// request body or query string before anything reaches storage or the database. Not part
/// of the library's interface.
#[doc(hidden)]
pub mod fuzz {
    use super::{body, files, uploads};

    /// Parses `bytes` as every JSON body the API accepts; errors are expected, panics not.
    pub fn bodies(bytes: &[u8]) {
        let _ = body::parse_json::<files::RegisterRequest>(bytes);
        let _ = body::parse_json::<files::PatchRequest>(bytes);
        let _ = body::parse_json::<uploads::UploadRequest>(bytes);
        let _ = body::parse_json::<uploads::PartUrlRequest>(bytes);
        let _ = body::parse_json::<uploads::CompleteRequest>(bytes);
        let _ = body::parse_json::<uploads::AbortRequest>(bytes);
    }

    /// Parses `query` as the listing's query string and as plain pairs.
    pub fn query(query: &str) {
        let _ = files::ListQuery::parse(Some(query));
        let _ = body::query_pairs(Some(query));
    }
}

use std::sync::atomic::Ordering;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};

use crate::error::{ApiCode, ApiError};
use crate::http_body::{Body, full};
pub use context::{Api, Settings};

/// The OpenAPI 3 document of this API, kept in the repository and served as is.
pub const OPENAPI: &str = include_str!("../../openapi.json");

/// Every route of the API listener.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Endpoint {
    Health,
    Ready,
    Metrics,
    OpenApi,
    Presign,
    MultipartInit,
    MultipartPart,
    MultipartComplete,
    MultipartAbort,
    Register,
    List,
    Get(String),
    Patch(String),
    Delete(String),
    DownloadUrl(String),
    ObjectPut,
    ObjectGet,
    PartPut,
    Playground,
    PlaygroundImages,
    PlaygroundUrl,
}

fn route(method: &Method, path: &str) -> Result<Endpoint, ApiError> {
    use Endpoint::*;
    let not_allowed = || {
        Err(ApiError::new(
            ApiCode::MethodNotAllowed,
            format!("{method} is not allowed on {path}"),
        ))
    };
    let get = method == Method::GET || method == Method::HEAD;
    let post = method == Method::POST;
    let fixed = match path {
        "/healthz" => Some((get, Health)),
        "/readyz" => Some((get, Ready)),
        "/metrics" => Some((get, Metrics)),
        "/v1/openapi.json" => Some((get, OpenApi)),
        "/playground" => Some((get, Playground)),
        "/playground/images" => Some((get, PlaygroundImages)),
        "/playground/url" => Some((get, PlaygroundUrl)),
        "/v1/files/presigned-url" => Some((post, Presign)),
        "/v1/files/multipart/init" => Some((post, MultipartInit)),
        "/v1/files/multipart/presigned-url" => Some((post, MultipartPart)),
        "/v1/files/multipart/complete" => Some((post, MultipartComplete)),
        "/v1/files/multipart/abort" => Some((post, MultipartAbort)),
        crate::storage::presign::OBJECT_PATH => {
            return match *method {
                Method::PUT => Ok(ObjectPut),
                Method::GET | Method::HEAD => Ok(ObjectGet),
                _ => not_allowed(),
            };
        }
        crate::storage::presign::PART_PATH => Some((method == Method::PUT, PartPut)),
        "/v1/files" => {
            return match *method {
                Method::GET => Ok(List),
                Method::POST => Ok(Register),
                _ => not_allowed(),
            };
        }
        _ => None,
    };
    if let Some((allowed, endpoint)) = fixed {
        return if allowed { Ok(endpoint) } else { not_allowed() };
    }
    let Some(rest) = path.strip_prefix("/v1/files/") else {
        return Err(ApiError::new(
            ApiCode::RouteNotFound,
            format!("no route for {path}"),
        ));
    };
    let (id, action) = rest.split_once('/').unwrap_or((rest, ""));
    let id = id.to_owned();
    match (action, method) {
        ("", &Method::GET | &Method::HEAD) => Ok(Get(id)),
        ("", &Method::PATCH) => Ok(Patch(id)),
        ("", &Method::DELETE) => Ok(Delete(id)),
        ("download-url", &Method::POST) => Ok(DownloadUrl(id)),
        ("" | "download-url", _) => not_allowed(),
        _ => Err(ApiError::new(
            ApiCode::RouteNotFound,
            format!("no route for {path}"),
        )),
    }
}

pub async fn handle<B>(api: &Api, req: Request<B>, request_id: &str) -> Response<Body>
where
    B: hyper::body::Body<Data = Bytes> + Send,
    B::Error: std::fmt::Display,
{
    let endpoint = match route(req.method(), req.uri().path()) {
        Ok(Endpoint::Playground | Endpoint::PlaygroundImages | Endpoint::PlaygroundUrl)
            if !api.settings.playground =>
        {
            let path = req.uri().path();
            let off = format!("no route for {path} (the playground is off: playground = false)");
            return ApiError::new(ApiCode::RouteNotFound, off).into_response(request_id);
        }
        Ok(e) => e,
        Err(e) => return e.into_response(request_id),
    };
    let result = match endpoint {
        Endpoint::Health => Ok(text(StatusCode::OK, "ok\n")),
        Endpoint::Ready => Ok(readiness(api).await),
        Endpoint::Metrics => Ok(metrics(api)),
        Endpoint::OpenApi => Ok(crate::http_body::json_no_store(StatusCode::OK, OPENAPI)),
        Endpoint::Presign => uploads::presign(api, req).await,
        Endpoint::MultipartInit => uploads::multipart_init(api, req).await,
        Endpoint::MultipartPart => uploads::multipart_part_url(api, req).await,
        Endpoint::MultipartComplete => uploads::multipart_complete(api, req).await,
        Endpoint::MultipartAbort => uploads::multipart_abort(api, req).await,
        Endpoint::Register => files::register(api, req).await,
        Endpoint::List => files::list(api, req).await,
        Endpoint::Get(id) => files::get(api, req, &id).await,
        Endpoint::Patch(id) => files::patch(api, req, &id).await,
        Endpoint::Delete(id) => files::delete(api, req, &id).await,
        Endpoint::DownloadUrl(id) => files::download_url(api, req, &id).await,
        Endpoint::ObjectPut => objects::put(api, req).await,
        Endpoint::ObjectGet => objects::get(api, req).await,
        Endpoint::PartPut => objects::put_part(api, req).await,
        Endpoint::Playground => Ok(playground::page(api)),
        Endpoint::PlaygroundImages => playground::images(api, req).await,
        Endpoint::PlaygroundUrl => playground::url(api, req, request_id).await,
    };
    result.unwrap_or_else(|e| e.into_response(request_id))
}

fn metrics(api: &Api) -> Response<Body> {
    let (variants, originals) = api.caches.weighted_sizes();
    let gauge = |cache| {
        api.metrics
            .cache_bytes
            .get_or_create(&crate::telemetry::CacheName { cache })
            .clone()
    };
    gauge("variant").set(i64::try_from(variants).unwrap_or(i64::MAX));
    gauge("original").set(i64::try_from(originals).unwrap_or(i64::MAX));
    let mut resp = text(StatusCode::OK, api.metrics.render());
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    resp
}

/// Ready when not draining and both the metadata store and object storage answer.
async fn readiness(api: &Api) -> Response<Body> {
    if api.draining.load(Ordering::Relaxed) {
        return text(StatusCode::SERVICE_UNAVAILABLE, "draining\n");
    }
    if let Err(e) = api.db.ping().await {
        return text(StatusCode::SERVICE_UNAVAILABLE, format!("database: {e}\n"));
    }
    if let Err(e) = api.storage.check().await {
        return text(StatusCode::SERVICE_UNAVAILABLE, format!("storage: {e}\n"));
    }
    text(StatusCode::OK, "ready\n")
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut resp = Response::new(full(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

/// A JSON response from a serializable value.
fn json<T: serde::Serialize>(status: StatusCode, value: &T) -> Response<Body> {
    let text = serde_json::to_string(value).expect("invariant: API views serialize to JSON");
    crate::http_body::json_no_store(status, text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        use Endpoint::*;
        let ok: &[(Method, &str, Endpoint)] = &[
            (Method::GET, "/healthz", Health),
            (Method::GET, "/v1/openapi.json", OpenApi),
            (Method::POST, "/v1/files/presigned-url", Presign),
            (
                Method::POST,
                "/v1/files/multipart/complete",
                MultipartComplete,
            ),
            (Method::POST, "/v1/files", Register),
            (Method::GET, "/v1/files", List),
            (Method::GET, "/v1/files/abc", Get("abc".into())),
            (Method::PATCH, "/v1/files/abc", Patch("abc".into())),
            (Method::DELETE, "/v1/files/abc", Delete("abc".into())),
            (
                Method::POST,
                "/v1/files/abc/download-url",
                DownloadUrl("abc".into()),
            ),
            (Method::PUT, "/storage/object", ObjectPut),
            (Method::GET, "/storage/object", ObjectGet),
            (Method::PUT, "/storage/part", PartPut),
        ];
        for (m, p, e) in ok {
            assert_eq!(route(m, p).unwrap(), *e, "{m} {p}");
        }
        let bad: &[(Method, &str, ApiCode)] = &[
            (
                Method::GET,
                "/v1/files/presigned-url",
                ApiCode::MethodNotAllowed,
            ),
            (Method::PUT, "/v1/files", ApiCode::MethodNotAllowed),
            (Method::POST, "/v1/files/abc", ApiCode::MethodNotAllowed),
            (Method::GET, "/v1/files/abc/nope", ApiCode::RouteNotFound),
            (Method::GET, "/nope", ApiCode::RouteNotFound),
            (Method::DELETE, "/storage/object", ApiCode::MethodNotAllowed),
        ];
        for (m, p, code) in bad {
            assert_eq!(route(m, p).unwrap_err().code, *code, "{m} {p}");
        }
    }
}
