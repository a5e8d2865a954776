//! File metadata: registration of uploaded objects, detail, listing, partial update,
//! deletion and download URLs, under the access rules of SPEC §2.3. Changes of visibility
//! and deletions purge the edge's caches for the key at once.

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use time::{Duration, OffsetDateTime};

use super::Api;
use super::uploads::{check_content_type, check_filename, parse_visibility, rfc3339};
use super::view::{CdnLinks, FileView, ListView, Pagination, can_edit, can_read};
use super::{body, json};
use crate::auth::Caller;
use crate::db::{
    Direction, FileExtras, FileFilter, FilePatch, FileRecord, NewFile, OwnerType, Reader, SortBy,
    UploadGrant, Visibility,
};
use crate::error::{ApiCode, ApiError};
use crate::http_body::Body;
use crate::imaging;
use crate::key::ObjectKey;
use crate::storage::presign::Permit;

/// Download URLs are valid this long (SPEC §2.2).
const DOWNLOAD_URL_TTL: Duration = Duration::hours(1);
const MAX_KEY: usize = 1024;
const MAX_NAME: usize = 255;
const MAX_SHARED_WITH: usize = 100;
const MAX_METADATA_BYTES: usize = 16 * 1024;

fn bad(code: ApiCode, message: impl Into<String>) -> ApiError {
    ApiError::new(code, message)
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct RegisterRequest {
    s3_key: String,
    original_name: String,
    mime_type: String,
    size: i64,
    width: Option<u32>,
    height: Option<u32>,
    visibility: Option<String>,
    bucket: Option<String>,
    metadata: Option<Value>,
    shared_with: Option<Vec<String>>,
}

/// `POST /v1/files`: registers an uploaded object as a file. Three steps: the request is
/// checked on its own (`Registration::parse`), then against who may register the key
/// (`grant_for`), then against what storage holds (`check_object`); only then is the row
/// written.
pub async fn register<B>(api: &Api, req: Request<B>) -> Result<Response<Body>, ApiError>
where
    B: hyper::body::Body<Data = Bytes>,
    B::Error: std::fmt::Display,
{
    let caller = body::caller(api, &req)?;
    let Some(user) = caller.user.clone() else {
        return Err(bad(
            ApiCode::AuthenticationRequired,
            "a Bearer token is required to register files",
        ));
    };
    let input: RegisterRequest = body::json(req).await?;
    let reg = Registration::parse(api, input)?;
    let grant = grant_for(api, &caller, &user, &reg.key).await?;
    check_object(api, &grant, &reg.key, reg.size).await?;
    let (width, height) = match reg.dimensions {
        Some((w, h)) => (Some(w), Some(h)),
        None => probe_dimensions(api, &reg.key, &reg.mime_type, reg.size).await,
    };
    let key = reg.key;
    let new = NewFile {
        project: caller.project.clone(),
        key: key.clone(),
        original_name: reg.original_name,
        mime_type: reg.mime_type,
        size: reg.size,
        width,
        height,
        // The visibility given at registration, else the one given when presigning.
        visibility: reg.visibility.unwrap_or(grant.visibility),
        owner_id: grant.owner_id,
        owner_type: grant.owner_type,
    };
    let rec = api.db.register_file(new, reg.extras, true).await?;
    api.caches.purge(&key).await;
    api.builder.wanted.notify_one();
    Ok(json(StatusCode::CREATED, &view(api, &rec, &caller)))
}

/// A registration request, every field checked on its own.
struct Registration {
    key: ObjectKey,
    original_name: String,
    mime_type: String,
    size: u64,
    /// Both given by the caller; otherwise read from the image's header.
    dimensions: Option<(u32, u32)>,
    visibility: Option<Visibility>,
    extras: FileExtras,
}

impl Registration {
    fn parse(api: &Api, input: RegisterRequest) -> Result<Registration, ApiError> {
        if input.s3_key.len() > MAX_KEY {
            return Err(bad(
                ApiCode::S3KeyTooLong,
                "s3Key must be at most 1024 bytes",
            ));
        }
        let key = ObjectKey::parse(&input.s3_key)
            .map_err(|e| bad(ApiCode::InvalidPath, format!("s3Key: {e}")))?;
        if input.original_name.chars().count() > MAX_NAME {
            return Err(bad(
                ApiCode::OriginalNameTooLong,
                "originalName must be at most 255 characters",
            ));
        }
        let original_name = check_filename("originalName", &input.original_name)?;
        let mime_type = check_content_type("mimeType", &input.mime_type)?;
        if input.size < 0 {
            return Err(bad(ApiCode::SizeNegative, "size must not be negative"));
        }
        let visibility = input
            .visibility
            .as_deref()
            .map(parse_visibility)
            .transpose()?;
        let extras = FileExtras {
            bucket: check_bucket(api, input.bucket.as_deref())?,
            metadata: input.metadata.map(check_metadata).transpose()?,
            shared_with: check_shared_with(input.shared_with.unwrap_or_default())?,
        };
        Ok(Registration {
            key,
            original_name,
            mime_type,
            size: input.size.unsigned_abs(),
            dimensions: input.width.zip(input.height),
            visibility,
            extras,
        })
    }
}

/// The upload grant that lets `caller` register `key`: the key is not registered yet, was
/// issued to the caller's project, and to this user (a secret key may register any).
async fn grant_for(
    api: &Api,
    caller: &Caller,
    user: &str,
    key: &ObjectKey,
) -> Result<UploadGrant, ApiError> {
    if api.db.find_by_key(key).await?.is_some() {
        return Err(bad(
            ApiCode::S3KeyAlreadyExists,
            format!("a file is already registered for key {key}"),
        ));
    }
    let grant = api
        .db
        .find_upload(key)
        .await?
        .filter(|g| g.project == caller.project)
        .ok_or_else(|| bad(ApiCode::AccessDenied, "this key was not issued to you"))?;
    let owned = grant.owner_type == OwnerType::User && grant.owner_id == user;
    if !owned && !caller.is_secret() {
        return Err(bad(ApiCode::AccessDenied, "this key was not issued to you"));
    }
    Ok(grant)
}

/// The stored object is complete, within the grant's limit, and of the declared `size`.
async fn check_object(
    api: &Api,
    grant: &UploadGrant,
    key: &ObjectKey,
    size: u64,
) -> Result<(), ApiError> {
    let head = match api.storage.head(key).await {
        Ok(head) => head,
        Err(crate::storage::StorageError::NotFound)
            if grant.multipart_id.is_some() && !grant.completed =>
        {
            return Err(bad(
                ApiCode::ValidationError,
                "the multipart upload for this key is not complete",
            ));
        }
        Err(crate::storage::StorageError::NotFound) => {
            return Err(bad(
                ApiCode::FileNotFound,
                "nothing has been uploaded to this key yet",
            ));
        }
        Err(other) => return Err(other.into()),
    };
    if grant.multipart_id.is_some() && !grant.completed {
        // The object appears only once a complete has joined the parts (the local store
        // renames the joined file into place; S3 shows it after CompleteMultipartUpload),
        // so it being there means the upload is complete: the node that completed it died
        // before recording that.
        api.db.mark_upload_completed(key).await?;
    }
    if head.size > grant.max_size {
        // The stores refuse such bodies themselves (S3 signs the declared length, the
        // local store caps the stream); this is the last line for objects written some
        // other way: the object goes, and the key cannot be registered.
        if let Err(e) = api.storage.delete(key).await {
            tracing::warn!(key = %key, error = %e, "could not remove an oversize upload");
        }
        return Err(bad(
            ApiCode::FileTooLarge,
            format!(
                "the stored object has {} bytes, over the limit of {} for this upload",
                head.size, grant.max_size
            ),
        ));
    }
    if head.size != size {
        return Err(bad(
            ApiCode::ValidationError,
            format!(
                "size is {size} but the stored object has {} bytes",
                head.size
            ),
        ));
    }
    Ok(())
}

/// How much of an object registration reads to find its size: the headers of nearly every
/// image, without reading the pixels.
const HEADER_PREFIX: u64 = 64 << 10;

/// Upright width and height from the image header, when the object of `size` bytes is an
/// image we can read. Reads the first `HEADER_PREFIX` bytes, and the whole object (up to
/// the source limit) only when the header runs past them.
async fn probe_dimensions(
    api: &Api,
    key: &ObjectKey,
    mime: &str,
    size: u64,
) -> (Option<u32>, Option<u32>) {
    if !mime.starts_with("image/") {
        return (None, None);
    }
    let Ok(prefix) = api.storage.get_prefix(key, HEADER_PREFIX).await else {
        return (None, None);
    };
    let found = match imaging::oriented_size_from_prefix(&prefix, size) {
        Ok(Some(upright)) => Some(upright),
        Ok(None) => match api.storage.get(key, api.settings.max_source_bytes).await {
            Ok(bytes) => imaging::probe(&bytes).ok().map(|i| i.oriented_size()),
            Err(_) => None,
        },
        Err(_) => None,
    };
    found.map_or((None, None), |(w, h)| (Some(w), Some(h)))
}

/// The file's `bucket` label: the app's own grouping, any valid name; absent, the
/// configured default.
fn check_bucket(api: &Api, bucket: Option<&str>) -> Result<String, ApiError> {
    match bucket {
        None => Ok(api.settings.bucket.clone()),
        Some(b) => match crate::db::check_bucket(b) {
            Ok(()) => Ok(b.to_owned()),
            Err(why) => Err(bad(ApiCode::ValidationError, format!("bucket: {why}"))),
        },
    }
}

/// What kind of JSON value `v` is, for error messages.
fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

const METADATA_FIELDS: &str = "category, tags, description, alt, relatedEntityId, custom";
const MAX_TAGS: usize = 50;

/// `metadata`: an object with optional `category` (string), `tags` (strings),
/// `description`, `alt`, `relatedEntityId` (strings) and `custom` (object). A refusal names
/// the field by its path (`metadata.tags[2]`).
fn check_metadata(value: Value) -> Result<Value, ApiError> {
    let invalid = |path: &str, why: String| bad(ApiCode::ValidationError, format!("{path}: {why}"));
    let expected = |path: &str, what: &str, v: &Value| {
        invalid(path, format!("expected {what}, got {}", json_kind(v)))
    };
    let Value::Object(map) = &value else {
        return Err(expected("metadata", "an object", &value));
    };
    for (k, v) in map {
        let path = format!("metadata.{k}");
        match (k.as_str(), v) {
            (_, Value::Null) => {}
            ("category" | "description" | "alt" | "relatedEntityId", Value::String(_)) => {}
            ("category" | "description" | "alt" | "relatedEntityId", other) => {
                return Err(expected(&path, "a string", other));
            }
            ("tags", Value::Array(tags)) => {
                if tags.len() > MAX_TAGS {
                    return Err(invalid(
                        &path,
                        format!("at most {MAX_TAGS} tags, got {}", tags.len()),
                    ));
                }
                if let Some((i, tag)) = tags.iter().enumerate().find(|(_, t)| !t.is_string()) {
                    return Err(expected(&format!("{path}[{i}]"), "a string", tag));
                }
            }
            ("tags", other) => return Err(expected(&path, "an array of strings", other)),
            ("custom", Value::Object(_)) => {}
            ("custom", other) => return Err(expected(&path, "an object", other)),
            (_, _) => {
                return Err(invalid(
                    &path,
                    format!("is not a known field (expected one of {METADATA_FIELDS})"),
                ));
            }
        }
    }
    let size = value.to_string().len();
    if size > MAX_METADATA_BYTES {
        return Err(invalid(
            "metadata",
            format!("must be at most {MAX_METADATA_BYTES} bytes of JSON, got {size}"),
        ));
    }
    Ok(value)
}

fn check_shared_with(users: Vec<String>) -> Result<Vec<String>, ApiError> {
    if users.len() > MAX_SHARED_WITH {
        return Err(bad(
            ApiCode::ValidationError,
            format!(
                "sharedWith: at most {MAX_SHARED_WITH} users, got {}",
                users.len()
            ),
        ));
    }
    for (i, user) in users.iter().enumerate() {
        let why = if user.is_empty() || user.len() > 256 {
            "must be a user id of 1 to 256 bytes"
        } else if user.chars().any(char::is_control) {
            "must not contain control characters"
        } else {
            continue;
        };
        return Err(bad(
            ApiCode::ValidationError,
            format!("sharedWith[{i}]: {why}"),
        ));
    }
    Ok(users)
}

fn view(api: &Api, rec: &FileRecord, caller: &Caller) -> FileView {
    let links = CdnLinks {
        base: &api.settings.cdn_base_url,
        signing: &api.signing,
    };
    FileView::new(rec, caller, links)
}

/// The file, if it exists in the caller's project and the caller may read it; otherwise a
/// 404 that does not reveal whether it exists.
async fn readable(api: &Api, caller: &Caller, id: &str) -> Result<FileRecord, ApiError> {
    let rec = api.db.find_by_id(&caller.project, id).await?;
    rec.filter(|r| can_read(caller, r))
        .ok_or_else(|| bad(ApiCode::FileNotFound, format!("no file {id}")))
}

async fn editable(api: &Api, caller: &Caller, id: &str) -> Result<FileRecord, ApiError> {
    let rec = readable(api, caller, id).await?;
    if !can_edit(caller, &rec) {
        return Err(bad(
            ApiCode::AccessDenied,
            "only the owner may change this file",
        ));
    }
    Ok(rec)
}

pub async fn get<B>(api: &Api, req: Request<B>, id: &str) -> Result<Response<Body>, ApiError> {
    let caller = body::caller(api, &req)?;
    let rec = readable(api, &caller, id).await?;
    Ok(json(StatusCode::OK, &view(api, &rec, &caller)))
}

pub async fn list<B>(api: &Api, req: Request<B>) -> Result<Response<Body>, ApiError> {
    let caller = body::caller(api, &req)?;
    let q = ListQuery::parse(req.uri().query())?;
    let reader = match (&caller.user, caller.is_secret()) {
        (_, true) => Reader::Service,
        (Some(user), false) => Reader::User(user.clone()),
        (None, false) => Reader::Anonymous,
    };
    let listing = api
        .db
        .list_files(
            &caller.project,
            &reader,
            &q.filter,
            q.sort,
            q.direction,
            q.page,
            q.limit,
        )
        .await?;
    let items = listing
        .items
        .iter()
        .map(|r| view(api, r, &caller))
        .collect();
    Ok(json(
        StatusCode::OK,
        &ListView {
            items,
            pagination: Pagination::new(listing.total, q.page, q.limit),
        },
    ))
}

pub(crate) struct ListQuery {
    page: u32,
    limit: u32,
    sort: SortBy,
    direction: Direction,
    filter: FileFilter,
}

impl ListQuery {
    pub(crate) fn parse(query: Option<&str>) -> Result<ListQuery, ApiError> {
        let invalid = |name: &str, why: &str| {
            bad(
                ApiCode::InvalidParameters,
                format!("query parameter `{name}`: {why}"),
            )
        };
        let mut q = ListQuery {
            page: 1,
            limit: 20,
            sort: SortBy::CreatedAt,
            direction: Direction::Desc,
            filter: FileFilter::default(),
        };
        for (name, value) in body::query_pairs(query)? {
            let number = |lo: u32, hi: u32| {
                value
                    .parse::<u32>()
                    .ok()
                    .filter(|n| (lo..=hi).contains(n))
                    .ok_or_else(|| invalid(&name, &format!("must be an integer {lo}..={hi}")))
            };
            match name.as_str() {
                "page" => q.page = number(1, 1_000_000)?,
                "limit" => q.limit = number(1, 100)?,
                "sortBy" => {
                    q.sort = match value.as_str() {
                        "createdAt" => SortBy::CreatedAt,
                        "updatedAt" => SortBy::UpdatedAt,
                        "originalName" => SortBy::OriginalName,
                        "size" => SortBy::Size,
                        "bucket" => SortBy::Bucket,
                        "mimeType" => SortBy::MimeType,
                        _ => {
                            return Err(invalid(
                                &name,
                                "must be createdAt, updatedAt, originalName, size, bucket or mimeType",
                            ));
                        }
                    }
                }
                "sortDirection" => {
                    q.direction = match value.as_str() {
                        "asc" => Direction::Asc,
                        "desc" => Direction::Desc,
                        _ => return Err(invalid(&name, "must be asc or desc")),
                    }
                }
                "visibility" => {
                    q.filter.visibility =
                        Some(value.parse().map_err(|e: String| invalid(&name, &e))?)
                }
                "ownerType" => {
                    q.filter.owner_type =
                        Some(value.parse().map_err(|e: String| invalid(&name, &e))?)
                }
                "ownerId" if value.len() <= 256 => q.filter.owner_id = Some(value),
                "ownerId" => return Err(invalid(&name, "must be at most 256 bytes")),
                "bucket" => {
                    crate::db::check_bucket(&value).map_err(|why| invalid(&name, &why))?;
                    q.filter.bucket = Some(value)
                }
                "mimeType" if value.len() <= 255 => q.filter.mime_type = Some(value),
                "mimeType" => return Err(invalid(&name, "must be at most 255 bytes")),
                "search" if value.len() <= 255 => q.filter.search = Some(value),
                "search" => return Err(invalid(&name, "must be at most 255 characters")),
                _ => return Err(invalid(&name, "is not a known parameter")),
            }
        }
        Ok(q)
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct PatchRequest {
    original_name: Option<String>,
    visibility: Option<String>,
    metadata: Option<Value>,
    shared_with: Option<Vec<String>>,
}

pub async fn patch<B>(api: &Api, req: Request<B>, id: &str) -> Result<Response<Body>, ApiError>
where
    B: hyper::body::Body<Data = Bytes>,
    B::Error: std::fmt::Display,
{
    let caller = body::caller(api, &req)?;
    require_writer(&caller)?;
    let input: PatchRequest = body::json(req).await?;
    let rec = editable(api, &caller, id).await?;
    let original_name = match input.original_name {
        Some(name) if name.chars().count() > MAX_NAME => {
            return Err(bad(
                ApiCode::OriginalNameTooLong,
                "originalName must be at most 255 characters",
            ));
        }
        Some(name) => Some(check_filename("originalName", &name)?),
        None => None,
    };
    let visibility = input
        .visibility
        .as_deref()
        .map(parse_visibility)
        .transpose()?;
    let metadata = match input.metadata {
        Some(patch) => Some(check_metadata(merge(&rec.metadata, patch)?)?),
        None => None,
    };
    let shared_with = input.shared_with.map(check_shared_with).transpose()?;
    let patch = FilePatch {
        original_name,
        visibility,
        metadata,
        shared_with,
    };
    let updated = api
        .db
        .update_file(&caller.project, id, patch)
        .await?
        .ok_or_else(|| bad(ApiCode::FileNotFound, format!("no file {id}")))?;
    api.caches.purge(&updated.key).await;
    Ok(json(StatusCode::OK, &view(api, &updated, &caller)))
}

/// Top-level merge of a metadata patch: a `null` value removes the field.
fn merge(current: &Value, patch: Value) -> Result<Value, ApiError> {
    let Value::Object(patch) = patch else {
        return Err(bad(
            ApiCode::ValidationError,
            format!("metadata: expected an object, got {}", json_kind(&patch)),
        ));
    };
    let mut merged: Map<String, Value> = current.as_object().cloned().unwrap_or_default();
    for (k, v) in patch {
        if v.is_null() {
            merged.remove(&k);
        } else {
            merged.insert(k, v);
        }
    }
    Ok(Value::Object(merged))
}

/// Every write needs a user token (SPEC §2.1); a secret key only widens what may be edited.
fn require_writer(caller: &Caller) -> Result<(), ApiError> {
    if caller.user.is_some() {
        Ok(())
    } else {
        Err(bad(
            ApiCode::AuthenticationRequired,
            "a Bearer token is required for this change",
        ))
    }
}

pub async fn delete<B>(api: &Api, req: Request<B>, id: &str) -> Result<Response<Body>, ApiError> {
    let caller = body::caller(api, &req)?;
    require_writer(&caller)?;
    let rec = editable(api, &caller, id).await?;
    // The row first, and with it an entry in the deletion outbox, in one transaction: from
    // then on the file is gone for everyone. Then the objects; if this node fails to remove
    // them (or dies first), housekeeping finishes from the outbox.
    if let Some(pending) = api.db.delete_file(&caller.project, &rec.id).await? {
        api.caches.purge(&rec.key).await;
        crate::derivatives::finish_deletion(&api.builder, &pending).await;
    }
    Ok(json(StatusCode::OK, &json!({})))
}

pub async fn download_url<B>(
    api: &Api,
    req: Request<B>,
    id: &str,
) -> Result<Response<Body>, ApiError> {
    let caller = body::caller(api, &req)?;
    let rec = readable(api, &caller, id).await?;
    let expires = OffsetDateTime::now_utc() + DOWNLOAD_URL_TTL;
    let url = api
        .storage
        .presign(
            &Permit::Get {
                key: rec.key.clone(),
                filename: rec.original_name.clone(),
                content_type: rec.mime_type.clone(),
            },
            expires,
        )
        .await?;
    Ok(json(
        StatusCode::OK,
        &json!({
            "url": url,
            "filename": rec.original_name,
            "contentType": rec.mime_type,
            "size": rec.size,
            "expiresAt": rfc3339(expires),
        }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_merge_and_checks() {
        let cur = json!({"category": "images", "tags": ["a"], "alt": "x"});
        let merged = merge(
            &cur,
            json!({"tags": ["b", "c"], "alt": null, "description": "d"}),
        )
        .unwrap();
        assert_eq!(
            merged,
            json!({"category": "images", "tags": ["b", "c"], "description": "d"})
        );
        assert!(check_metadata(merged).is_ok());
        for bad_meta in [
            json!([1]),
            json!({"nope": 1}),
            json!({"tags": "x"}),
            json!({"custom": 3}),
            json!({"alt": 1}),
        ] {
            assert_eq!(
                check_metadata(bad_meta.clone()).unwrap_err().code,
                ApiCode::ValidationError,
                "{bad_meta}"
            );
        }
    }

    #[test]
    fn list_query_parsing() {
        let q = ListQuery::parse(Some(
            "page=2&limit=5&sortBy=size&sortDirection=asc&visibility=public&search=cat%20pic",
        ))
        .unwrap();
        assert_eq!(
            (q.page, q.limit, q.sort, q.direction),
            (2, 5, SortBy::Size, Direction::Asc)
        );
        assert_eq!(q.filter.search.as_deref(), Some("cat pic"));
        for bad_q in [
            "limit=0",
            "limit=101",
            "page=0",
            "sortBy=id",
            "sortDirection=up",
            "nope=1",
            "visibility=secret",
            "page=1&page=2",
        ] {
            assert_eq!(
                ListQuery::parse(Some(bad_q)).err().map(|e| e.code),
                Some(ApiCode::InvalidParameters),
                "{bad_q}"
            );
        }
    }
}
