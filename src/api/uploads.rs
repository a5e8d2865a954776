//! Issuing uploads: presigned single uploads and the multipart flow (init, part URLs,
//! complete, abort). Every key is generated here, recorded as an `UploadGrant` for the
//! caller, and later consumed by registration.

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::json;
use time::{Duration, OffsetDateTime};

use super::Api;
use super::{body, json};
use crate::auth::Caller;
use crate::db::{OwnerType, UploadGrant, Visibility};
use crate::error::{ApiCode, ApiError};
use crate::http_body::Body;
use crate::key::ObjectKey;
use crate::storage::presign::Permit;

/// Presigned upload URLs are valid this long (SPEC §2.2).
pub const UPLOAD_URL_TTL: Duration = Duration::minutes(15);
const MAX_NAME: usize = 255;
const MAX_PARTS: u32 = 10_000;

/// File categories (SPEC, after the original product).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Category {
    Images,
    Documents,
    Media,
    Attachments,
    Exports,
    Backups,
    Temp,
}

impl Category {
    pub fn parse(s: &str) -> Result<Category, ApiError> {
        Ok(match s {
            "images" => Category::Images,
            "documents" => Category::Documents,
            "media" => Category::Media,
            "attachments" => Category::Attachments,
            "exports" => Category::Exports,
            "backups" => Category::Backups,
            "temp" => Category::Temp,
            other => {
                return Err(ApiError::new(
                    ApiCode::ValidationError,
                    format!(
                        "category: `{other}` is unknown; expected images, documents, media, \
                         attachments, exports, backups or temp"
                    ),
                ));
            }
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Category::Images => "images",
            Category::Documents => "documents",
            Category::Media => "media",
            Category::Attachments => "attachments",
            Category::Exports => "exports",
            Category::Backups => "backups",
            Category::Temp => "temp",
        }
    }

    /// The category a content type falls into when the caller names none.
    fn of_content_type(ct: &str) -> Category {
        if ct.starts_with("image/") {
            Category::Images
        } else if ct.starts_with("video/") || ct.starts_with("audio/") {
            Category::Media
        } else {
            Category::Documents
        }
    }

    fn limit(self, api: &Api) -> u64 {
        match self {
            Category::Images => api.settings.max_image_bytes,
            Category::Media => api.settings.max_media_bytes,
            _ => api.settings.max_document_bytes,
        }
    }
}

/// Image types the edge can serve; the `images` category accepts only these.
const IMAGE_TYPES: &[&str] = &["image/jpeg", "image/png", "image/webp", "image/gif"];

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UploadRequest {
    filename: String,
    content_type: String,
    file_size: Option<i64>,
    visibility: Option<String>,
    category: Option<String>,
}

/// A validated upload request.
struct Checked {
    filename: String,
    visibility: Visibility,
    content_type: String,
    category: Category,
    max_size: u64,
}

/// Checks name, type, category and size against SPEC §2.4's codes.
fn check(api: &Api, req: &UploadRequest, size: SizeRule) -> Result<Checked, ApiError> {
    let filename = check_filename("filename", &req.filename)?;
    let content_type = check_content_type("contentType", &req.content_type)?;
    let visibility = match &req.visibility {
        Some(v) => parse_visibility(v)?,
        None => Visibility::default(),
    };
    let category = match &req.category {
        Some(c) => Category::parse(c)?,
        None => Category::of_content_type(&content_type),
    };
    if category == Category::Images && !IMAGE_TYPES.contains(&content_type.as_str()) {
        return Err(ApiError::new(
            ApiCode::InvalidFormat,
            format!(
                "contentType `{content_type}` is not accepted for images; expected one of {}",
                IMAGE_TYPES.join(", ")
            ),
        ));
    }
    let limit = category.limit(api);
    let max_size = match req.file_size {
        None if size == SizeRule::Required => {
            return Err(ApiError::new(
                ApiCode::ValidationError,
                "fileSize: is required for multipart uploads",
            ));
        }
        None if size == SizeRule::Signed => {
            return Err(ApiError::new(
                ApiCode::ValidationError,
                "fileSize: is required by this server: its object store (S3) accepts only \
                 an upload of the exact size the URL was signed for",
            ));
        }
        None => limit,
        Some(n) => check_size(n, limit, category)?,
    };
    Ok(Checked {
        filename,
        visibility,
        content_type,
        category,
        max_size,
    })
}

fn check_size(n: i64, limit: u64, category: Category) -> Result<u64, ApiError> {
    if n < 0 {
        return Err(ApiError::new(
            ApiCode::SizeNegative,
            format!("fileSize must not be negative, got {n}"),
        ));
    }
    let n = n.unsigned_abs();
    if n == 0 {
        return Err(ApiError::new(
            ApiCode::FileTooSmall,
            "fileSize must be at least 1 byte",
        ));
    }
    if n > limit {
        return Err(ApiError::new(
            ApiCode::FileTooLarge,
            format!(
                "fileSize {n} is over the {} limit of {limit} bytes",
                category.as_str()
            ),
        ));
    }
    Ok(n)
}

/// A file name: 1..=255 characters, no path separators, no control characters.
pub fn check_filename(field: &str, name: &str) -> Result<String, ApiError> {
    let bad = |why: &str| ApiError::new(ApiCode::InvalidName, format!("{field} {why}"));
    let name = name.trim();
    if name.is_empty() {
        return Err(bad("must not be empty"));
    }
    if name.chars().count() > MAX_NAME {
        return Err(bad("must be at most 255 characters"));
    }
    if name == "." || name == ".." || name.contains(['/', '\\']) {
        return Err(bad("must not contain path separators or be `.`/`..`"));
    }
    if name.chars().any(char::is_control) {
        return Err(bad("must not contain control characters"));
    }
    Ok(name.to_owned())
}

/// A MIME type `type/subtype` (parameters dropped, lower-cased).
pub fn check_content_type(field: &str, ct: &str) -> Result<String, ApiError> {
    if ct.len() > MAX_NAME {
        return Err(ApiError::new(
            ApiCode::MimeTypeTooLong,
            format!("{field} must be at most 255 characters"),
        ));
    }
    let essence = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let token = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$&^_.+-".contains(&b))
    };
    match essence.split_once('/') {
        Some((t, s)) if token(t) && token(s) => Ok(essence),
        _ => Err(ApiError::new(
            ApiCode::InvalidFormat,
            format!("{field}: `{ct}` is not a MIME type (expected type/subtype)"),
        )),
    }
}

pub fn parse_visibility(v: &str) -> Result<Visibility, ApiError> {
    v.parse()
        .map_err(|e: String| ApiError::new(ApiCode::ValidationError, format!("visibility: {e}")))
}

/// Who an issued key belongs to: the token's user. Every presign and write needs a
/// Bearer token (SPEC §2.1), secret keys included; a secret key only widens what the user
/// may edit (SPEC §2.3).
fn owner_of(caller: &Caller) -> Result<(String, OwnerType), ApiError> {
    match &caller.user {
        Some(user) => Ok((user.clone(), OwnerType::User)),
        None => Err(ApiError::new(
            ApiCode::AuthenticationRequired,
            "a Bearer token is required to upload",
        )),
    }
}

/// An unguessable key under the project's prefix that keeps the file's extension:
/// `<project>/<category>/<32 hex>.<ext>`.
fn new_key(project: &str, category: Category, filename: &str) -> Result<ObjectKey, ApiError> {
    let ext = filename
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .filter(|e| !e.is_empty() && e.len() <= 10 && e.bytes().all(|b| b.is_ascii_alphanumeric()));
    let id = uuid::Uuid::new_v4().simple().to_string();
    let key = match ext {
        Some(ext) => format!("{project}/{}/{id}.{ext}", category.as_str()),
        None => format!("{project}/{}/{id}", category.as_str()),
    };
    ObjectKey::parse(&key).map_err(ApiError::internal)
}

async fn issue(
    api: &Api,
    caller: &Caller,
    key: ObjectKey,
    checked: &Checked,
    multipart_id: Option<String>,
) -> Result<UploadGrant, ApiError> {
    let (owner_id, owner_type) = owner_of(caller)?;
    let grant = UploadGrant {
        key,
        project: caller.project.clone(),
        owner_id,
        owner_type,
        filename: checked.filename.clone(),
        content_type: checked.content_type.clone(),
        max_size: checked.max_size,
        category: checked.category.as_str().to_owned(),
        visibility: checked.visibility,
        multipart_id,
        completed: false,
        registered: false,
        created_at: OffsetDateTime::now_utc(),
    };
    api.db.insert_upload(&grant).await?;
    Ok(grant)
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PresignView {
    url: String,
    key: String,
    filename: String,
    content_type: String,
    method: &'static str,
    expires_at: String,
}

/// Whether an upload request must declare its `fileSize`.
#[derive(Clone, Copy, PartialEq, Eq)]
enum SizeRule {
    Optional,
    /// Multipart: the size decides the part plan.
    Required,
    /// The store signs the exact length into the URL (S3), so it must be known.
    Signed,
}

/// The common start of presign and multipart init: authenticate (a token is required),
/// read the body, validate it.
async fn read_upload_request<B>(
    api: &Api,
    req: Request<B>,
    size: SizeRule,
) -> Result<(Caller, Checked), ApiError>
where
    B: hyper::body::Body<Data = Bytes>,
    B::Error: std::fmt::Display,
{
    let caller = body::caller(api, &req)?;
    owner_of(&caller)?;
    let input: UploadRequest = body::json(req).await?;
    let checked = check(api, &input, size)?;
    Ok((caller, checked))
}

pub async fn presign<B>(api: &Api, req: Request<B>) -> Result<Response<Body>, ApiError>
where
    B: hyper::body::Body<Data = Bytes>,
    B::Error: std::fmt::Display,
{
    let rule = if api.storage.signs_exact_size() {
        SizeRule::Signed
    } else {
        SizeRule::Optional
    };
    let (caller, checked) = read_upload_request(api, req, rule).await?;
    let key = new_key(&caller.project, checked.category, &checked.filename)?;
    let grant = issue(api, &caller, key, &checked, None).await?;
    let expires = OffsetDateTime::now_utc() + UPLOAD_URL_TTL;
    let url = api
        .storage
        .presign(
            &Permit::Put {
                key: grant.key.clone(),
                content_type: grant.content_type.clone(),
                max_size: grant.max_size,
            },
            expires,
        )
        .await?;
    Ok(json(
        StatusCode::OK,
        &PresignView {
            url,
            key: grant.key.to_string(),
            filename: grant.filename,
            content_type: grant.content_type,
            method: "PUT",
            expires_at: rfc3339(expires),
        },
    ))
}

pub async fn multipart_init<B>(api: &Api, req: Request<B>) -> Result<Response<Body>, ApiError>
where
    B: hyper::body::Body<Data = Bytes>,
    B::Error: std::fmt::Display,
{
    let (caller, checked) = read_upload_request(api, req, SizeRule::Required).await?;
    let key = new_key(&caller.project, checked.category, &checked.filename)?;
    let upload_id = api
        .storage
        .create_multipart(&key, &checked.content_type)
        .await
        .map_err(|e| {
            ApiError::new(
                ApiCode::UploadInitFailed,
                "could not start the multipart upload",
            )
            .caused_by(e)
        })?;
    let grant = issue(api, &caller, key, &checked, Some(upload_id.clone())).await?;
    Ok(json(
        StatusCode::OK,
        &json!({ "uploadId": upload_id, "key": grant.key.as_str(), "filename": grant.filename }),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct PartUrlRequest {
    key: String,
    upload_id: String,
    part_number: i64,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct PartRef {
    part_number: i64,
    etag: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct CompleteRequest {
    key: String,
    upload_id: String,
    parts: Vec<PartRef>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct AbortRequest {
    key: String,
    upload_id: String,
}

/// The caller's multipart grant for `key` + `upload_id`, or 404/403.
async fn multipart_grant(
    api: &Api,
    caller: &Caller,
    key: &str,
    upload_id: &str,
) -> Result<UploadGrant, ApiError> {
    let key = ObjectKey::parse(key)
        .map_err(|e| ApiError::new(ApiCode::InvalidPath, format!("key: {e}")))?;
    let grant = api
        .db
        .find_upload(&key)
        .await?
        .filter(|g| g.multipart_id.as_deref() == Some(upload_id) && g.project == caller.project)
        .ok_or_else(|| {
            ApiError::new(
                ApiCode::FileNotFound,
                "no such multipart upload for this key",
            )
        })?;
    let (owner_id, owner_type) = owner_of(caller)?;
    if grant.owner_id != owner_id || grant.owner_type != owner_type {
        return Err(ApiError::new(
            ApiCode::AccessDenied,
            "this multipart upload was issued to another caller",
        ));
    }
    if grant.completed {
        return Err(ApiError::new(
            ApiCode::ValidationError,
            "this multipart upload is already complete",
        ));
    }
    Ok(grant)
}

fn part_number(n: i64) -> Result<u32, ApiError> {
    u32::try_from(n)
        .ok()
        .filter(|n| (1..=MAX_PARTS).contains(n))
        .ok_or_else(|| {
            ApiError::new(
                ApiCode::InvalidPartNumberRange,
                format!("partNumber must be 1..=10000, got {n}"),
            )
        })
}

pub async fn multipart_part_url<B>(api: &Api, req: Request<B>) -> Result<Response<Body>, ApiError>
where
    B: hyper::body::Body<Data = Bytes>,
    B::Error: std::fmt::Display,
{
    let caller = body::caller(api, &req)?;
    owner_of(&caller)?;
    let input: PartUrlRequest = body::json(req).await?;
    let part = part_number(input.part_number)?;
    let grant = multipart_grant(api, &caller, &input.key, &input.upload_id).await?;
    let expires = OffsetDateTime::now_utc() + UPLOAD_URL_TTL;
    let url = api
        .storage
        .presign(
            &Permit::Part {
                key: grant.key.clone(),
                upload_id: input.upload_id,
                part,
                max_size: grant.max_size,
            },
            expires,
        )
        .await?;
    Ok(json(
        StatusCode::OK,
        &json!({ "url": url, "partNumber": part, "expiresAt": rfc3339(expires) }),
    ))
}

pub async fn multipart_complete<B>(api: &Api, req: Request<B>) -> Result<Response<Body>, ApiError>
where
    B: hyper::body::Body<Data = Bytes>,
    B::Error: std::fmt::Display,
{
    let caller = body::caller(api, &req)?;
    owner_of(&caller)?;
    let input: CompleteRequest = body::json(req).await?;
    let parts = check_parts(&input.parts)?;
    let grant = multipart_grant(api, &caller, &input.key, &input.upload_id).await?;
    api.storage
        .complete_multipart(&grant.key, &input.upload_id, &parts, grant.max_size)
        .await?;
    api.db.mark_upload_completed(&grant.key).await?;
    let location = super::view::CdnLinks {
        base: &api.settings.cdn_base_url,
        signing: &api.signing,
    }
    .to(&grant.key);
    Ok(json(
        StatusCode::OK,
        &json!({ "key": grant.key.as_str(), "location": location }),
    ))
}

/// Parts must be non-empty, in strictly ascending order, in range, with non-empty etags;
/// a refusal names the entry (`parts[2].partNumber`).
fn check_parts(parts: &[PartRef]) -> Result<Vec<(u32, String)>, ApiError> {
    let bad = |why: String| ApiError::new(ApiCode::InvalidPartsArray, why);
    if parts.is_empty() {
        return Err(bad("parts: must list at least one part".into()));
    }
    let mut out: Vec<(u32, String)> = Vec::with_capacity(parts.len());
    for (i, p) in parts.iter().enumerate() {
        let n = u32::try_from(p.part_number)
            .ok()
            .filter(|n| (1..=MAX_PARTS).contains(n))
            .ok_or_else(|| {
                bad(format!(
                    "parts[{i}].partNumber: must be 1..=10000, got {}",
                    p.part_number
                ))
            })?;
        if out.last().is_some_and(|(prev, _)| *prev >= n) {
            return Err(bad(format!(
                "parts[{i}].partNumber: parts must be in strictly ascending partNumber order \
                 ({n} follows {})",
                out.last().map_or(0, |(prev, _)| *prev)
            )));
        }
        if p.etag.trim().is_empty() {
            return Err(bad(format!(
                "parts[{i}].etag: must not be empty (part {n})"
            )));
        }
        out.push((n, p.etag.clone()));
    }
    Ok(out)
}

pub async fn multipart_abort<B>(api: &Api, req: Request<B>) -> Result<Response<Body>, ApiError>
where
    B: hyper::body::Body<Data = Bytes>,
    B::Error: std::fmt::Display,
{
    let caller = body::caller(api, &req)?;
    owner_of(&caller)?;
    let input: AbortRequest = body::json(req).await?;
    let grant = multipart_grant(api, &caller, &input.key, &input.upload_id).await?;
    api.storage
        .abort_multipart(&grant.key, &input.upload_id)
        .await?;
    api.db.delete_upload(&grant.key).await?;
    Ok(json(
        StatusCode::OK,
        &json!({ "success": true, "key": grant.key.as_str() }),
    ))
}

pub fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filenames() {
        for ok in ["a.jpg", "  spaced name.png ", "ünï.webp"] {
            assert!(check_filename("filename", ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "  ",
            "a/b.jpg",
            "a\\b",
            "..",
            "a\u{0}b",
            &"x".repeat(256),
        ] {
            assert_eq!(
                check_filename("filename", bad).unwrap_err().code,
                ApiCode::InvalidName,
                "{bad}"
            );
        }
    }

    #[test]
    fn content_types() {
        assert_eq!(
            check_content_type("contentType", "Image/JPEG; q=1").unwrap(),
            "image/jpeg"
        );
        assert_eq!(
            check_content_type("contentType", "nope").unwrap_err().code,
            ApiCode::InvalidFormat
        );
        assert_eq!(
            check_content_type("contentType", &format!("image/{}", "x".repeat(300)))
                .unwrap_err()
                .code,
            ApiCode::MimeTypeTooLong
        );
    }

    #[test]
    fn sizes() {
        assert_eq!(
            check_size(-1, 10, Category::Images).unwrap_err().code,
            ApiCode::SizeNegative
        );
        assert_eq!(
            check_size(0, 10, Category::Images).unwrap_err().code,
            ApiCode::FileTooSmall
        );
        assert_eq!(
            check_size(11, 10, Category::Images).unwrap_err().code,
            ApiCode::FileTooLarge
        );
        assert_eq!(check_size(10, 10, Category::Images).unwrap(), 10);
    }

    #[test]
    fn parts_lists() {
        let p = |n: i64| PartRef {
            part_number: n,
            etag: "\"e\"".into(),
        };
        assert!(check_parts(&[p(1), p(2), p(5)]).is_ok());
        for bad in [
            vec![],
            vec![p(2), p(1)],
            vec![p(1), p(1)],
            vec![p(0)],
            vec![p(10_001)],
        ] {
            assert_eq!(
                check_parts(&bad).unwrap_err().code,
                ApiCode::InvalidPartsArray
            );
        }
    }

    #[test]
    fn keys_keep_the_extension_under_the_project() {
        let k = new_key("proj", Category::Images, "Holiday.JPG").unwrap();
        assert!(k.as_str().starts_with("proj/images/"), "{k}");
        assert!(k.as_str().ends_with(".jpg"), "{k}");
        let k2 = new_key("proj", Category::Images, "Holiday.JPG").unwrap();
        assert_ne!(k, k2);
        let k = new_key("proj", Category::Documents, "README").unwrap();
        assert!(!k.as_str().contains('.'), "{k}");
    }
}
