//! The embedded local store's presigned endpoints (`/storage/object`, `/storage/part`):
//! what S3 would answer for presigned URLs, answered by the API listener itself after
//! checking the URL's signature and expiry. Uploads stream to disk (never buffered whole)
//! and appear only when complete.

use bytes::Bytes;
use futures_util::TryStreamExt;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use time::OffsetDateTime;
use tokio_util::io::ReaderStream;

use super::Api;
use super::json;
use crate::error::{ApiCode, ApiError};
use crate::http_body::{Body, empty};
use crate::storage::presign::{LocalSigner, Permit, PresignError};
use crate::storage::{FsStorage, Storage};

fn presign_error(e: PresignError) -> ApiError {
    ApiError::new(ApiCode::AccessDenied, e.to_string())
}

/// The local store and its signer; these endpoints do not exist with S3 storage.
fn local(api: &Api) -> Result<(&FsStorage, &LocalSigner), ApiError> {
    match &api.storage {
        Storage::Fs(fs, signer) => Ok((fs, signer)),
        Storage::S3(_) => Err(ApiError::new(
            ApiCode::RouteNotFound,
            "this node stores objects in S3; presigned URLs point there",
        )),
    }
}

fn permit<B>(api: &Api, req: &Request<B>) -> Result<Permit, ApiError> {
    local(api)?
        .1
        .verify(
            req.method(),
            req.uri().path(),
            req.uri().query().unwrap_or(""),
            OffsetDateTime::now_utc(),
        )
        .map_err(presign_error)
}

fn declared_length<B>(req: &Request<B>) -> Option<u64> {
    req.headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

fn too_large(size: u64, limit: u64) -> ApiError {
    ApiError::new(
        ApiCode::FileTooLarge,
        format!("{size} bytes is over the limit of {limit} bytes for this upload"),
    )
}

pub async fn put<B>(api: &Api, req: Request<B>) -> Result<Response<Body>, ApiError>
where
    B: hyper::body::Body<Data = Bytes>,
    B::Error: std::fmt::Display,
{
    let Permit::Put {
        key,
        content_type,
        max_size,
    } = permit(api, &req)?
    else {
        return Err(presign_error(PresignError::Malformed(
            "not an upload URL".into(),
        )));
    };
    let sent_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        });
    if sent_type.as_deref() != Some(content_type.as_str()) {
        return Err(ApiError::new(
            ApiCode::InvalidFormat,
            format!(
                "Content-Type must be `{content_type}` as declared, got `{}`",
                sent_type.unwrap_or_default()
            ),
        ));
    }
    if let Some(len) = declared_length(&req).filter(|len| *len > max_size) {
        return Err(too_large(len, max_size));
    }
    // A grant swept after expiry or consumed by registration no longer admits uploads.
    let grant = api.db.find_upload(&key).await?;
    if grant.as_ref().is_none_or(|g| g.registered) {
        return Err(ApiError::new(
            ApiCode::AccessDenied,
            "this upload is no longer open (registered or expired)",
        ));
    }
    let (fs, _) = local(api)?;
    let size = fs
        .put_stream(&key, req.into_body(), max_size, api.settings.body_pace)
        .await?;
    Ok(json(
        StatusCode::OK,
        &serde_json::json!({ "key": key.as_str(), "size": size }),
    ))
}

pub async fn put_part<B>(api: &Api, req: Request<B>) -> Result<Response<Body>, ApiError>
where
    B: hyper::body::Body<Data = Bytes>,
    B::Error: std::fmt::Display,
{
    let Permit::Part {
        key,
        upload_id,
        part,
        max_size,
    } = permit(api, &req)?
    else {
        return Err(presign_error(PresignError::Malformed(
            "not a part URL".into(),
        )));
    };
    if let Some(len) = declared_length(&req).filter(|len| *len > max_size) {
        return Err(too_large(len, max_size));
    }
    let open = api
        .db
        .find_upload(&key)
        .await?
        .is_some_and(|g| g.multipart_id.as_deref() == Some(upload_id.as_str()) && !g.completed);
    if !open {
        return Err(ApiError::new(
            ApiCode::AccessDenied,
            "this multipart upload is no longer open",
        ));
    }
    let (fs, _) = local(api)?;
    let etag = fs
        .put_part(
            &upload_id,
            part,
            req.into_body(),
            max_size,
            api.settings.body_pace,
        )
        .await?;
    let mut resp = json(
        StatusCode::OK,
        &serde_json::json!({ "partNumber": part, "etag": etag }),
    );
    resp.headers_mut().insert(
        header::ETAG,
        HeaderValue::from_str(&etag).map_err(ApiError::internal)?,
    );
    Ok(resp)
}

pub async fn get<B>(api: &Api, req: Request<B>) -> Result<Response<Body>, ApiError> {
    let Permit::Get {
        key,
        filename,
        content_type,
    } = permit(api, &req)?
    else {
        return Err(presign_error(PresignError::Malformed(
            "not a download URL".into(),
        )));
    };
    let (fs, _) = local(api)?;
    let (file, len) = fs.open_object(&key).await?;
    let body = if req.method() == Method::HEAD {
        empty()
    } else {
        let stream = ReaderStream::new(file).map_ok(Frame::data);
        BodyExt::boxed(StreamBody::new(stream))
    };
    let mut resp = Response::new(body);
    *resp.status_mut() = StatusCode::OK;
    let h = resp.headers_mut();
    h.insert(header::CONTENT_LENGTH, len.into());
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(&content_type)
            .unwrap_or(HeaderValue::from_static("application/octet-stream")),
    );
    h.insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_str(&crate::storage::content_disposition(&filename))
            .unwrap_or(HeaderValue::from_static("attachment")),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, no-store"),
    );
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_disposition_is_safe_for_any_name() {
        assert_eq!(
            crate::storage::content_disposition("a b.jpg"),
            "attachment; filename=\"a b.jpg\"; filename*=UTF-8''a%20b%2Ejpg"
        );
        let d = crate::storage::content_disposition("ü\"x\r\n.png");
        assert!(HeaderValue::from_str(&d).is_ok(), "{d}");
        assert!(d.starts_with("attachment; filename=\"__x__.png\""), "{d}");
    }
}
