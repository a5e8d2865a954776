//! S3-compatible object storage (AWS S3, MinIO, Ceph, R2, s3s-fs…) through aws-sdk-s3.
//!
//! - Reads are streamed and size-capped: the declared length is checked first, then the
//!   bytes actually received, so an object that grows under us is still refused.
//! - Every call runs under the SDK's connect timeout and an overall timeout
//!   (`storage_timeout_ms`, retries included); throttling, 5xx answers and dropped
//!   connections are retried with bounded, jittered backoff (`MAX_ATTEMPTS`), so a
//!   struggling endpoint is given a chance and an unreachable or stalled one fails in
//!   bounded time.
//! - Presigned URLs are SigV4 query-signed by the SDK. They are signed for
//!   `s3_public_endpoint` when one is set (clients may reach the store under another name
//!   than this node does); the signed content type must be sent as given.
//! - An optional key prefix maps object key `a/b.jpg` to `<prefix>a/b.jpg` in the bucket.

use std::time::Duration;

use aws_sdk_s3::Client;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use bytes::{Bytes, BytesMut};
use time::OffsetDateTime;

use super::presign::Permit;
use super::{ObjectHead, StorageError};
use crate::key::ObjectKey;
use crate::secret::Secret;

/// Attempts per call (the first and up to three retries).
pub const MAX_ATTEMPTS: u32 = 4;

/// Where and how to reach the bucket.
#[derive(Debug, Clone, Default)]
pub struct S3Settings {
    /// Endpoint URL (`http://127.0.0.1:9000`); empty means AWS's regional endpoint.
    pub endpoint: String,
    /// Endpoint presigned URLs are signed for; empty means `endpoint`.
    pub public_endpoint: String,
    pub bucket: String,
    pub region: String,
    /// Prepended to every key (`tenant-a/`); empty for none.
    pub prefix: String,
    pub path_style: bool,
    /// Static credentials; both empty means the standard AWS chain (environment, profile,
    /// web identity, container and instance metadata).
    pub access_key_id: String,
    pub secret_access_key: Secret,
    pub connect_timeout: Duration,
    /// Timeout of every call, retries included (and so of each attempt).
    pub attempt_timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct S3Storage {
    client: Client,
    /// Signs presigned URLs (same as `client` unless a public endpoint is set).
    presigner: Client,
    bucket: String,
    prefix: String,
    endpoint: String,
}

/// One object found by `list`.
#[derive(Debug, Clone)]
pub struct Listed {
    pub key: String,
    pub size: u64,
}

impl S3Storage {
    /// Builds the clients; nothing is contacted until `check` or the first call.
    pub async fn connect(s: &S3Settings) -> S3Storage {
        let mut loader = aws_config::defaults(BehaviorVersion::latest());
        if !s.region.is_empty() {
            loader = loader.region(Region::new(s.region.clone()));
        }
        if !s.access_key_id.is_empty() {
            loader = loader.credentials_provider(Credentials::new(
                s.access_key_id.clone(),
                s.secret_access_key.to_string(),
                None,
                None,
                "imgedge-settings",
            ));
        }
        let shared = loader.load().await;
        let build = |endpoint: &str| {
            let mut b = aws_sdk_s3::config::Builder::from(&shared)
                .force_path_style(s.path_style)
                // Throttling (503 SlowDown), 5xx answers and dropped connections are tried
                // again with jittered exponential backoff, but the whole call, retries
                // included, ends within the storage timeout: callers have their own deadline
                // and want an answer, not a wait.
                .retry_config(
                    RetryConfig::standard()
                        .with_max_attempts(MAX_ATTEMPTS)
                        .with_initial_backoff(Duration::from_millis(50))
                        .with_max_backoff(Duration::from_millis(800)),
                )
                .timeout_config(
                    TimeoutConfig::builder()
                        .connect_timeout(s.connect_timeout)
                        .operation_attempt_timeout(s.attempt_timeout)
                        .operation_timeout(s.attempt_timeout)
                        .build(),
                );
            if shared.region().is_none() {
                b = b.region(Region::new("us-east-1"));
            }
            if !endpoint.is_empty() {
                b = b.endpoint_url(endpoint);
            }
            Client::from_conf(b.build())
        };
        let client = build(&s.endpoint);
        let presigner = if s.public_endpoint.is_empty() {
            client.clone()
        } else {
            build(&s.public_endpoint)
        };
        let mut prefix = s.prefix.trim_matches('/').to_owned();
        if !prefix.is_empty() {
            prefix.push('/');
        }
        S3Storage {
            client,
            presigner,
            bucket: s.bucket.clone(),
            prefix,
            endpoint: if s.endpoint.is_empty() {
                "the AWS endpoint".into()
            } else {
                s.endpoint.clone()
            },
        }
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    fn full(&self, key: &ObjectKey) -> String {
        format!("{}{}", self.prefix, key.as_str())
    }

    pub async fn get(&self, key: &ObjectKey, max_bytes: u64) -> Result<Bytes, StorageError> {
        let out = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(self.full(key))
            .send()
            .await
            .map_err(|e| self.error("GetObject", e))?;
        let declared = out.content_length().and_then(|n| u64::try_from(n).ok());
        if let Some(size) = declared.filter(|n| *n > max_bytes) {
            return Err(StorageError::TooLarge {
                size,
                limit: max_bytes,
            });
        }
        let mut buf = BytesMut::with_capacity(declared.unwrap_or(0) as usize);
        let mut body = out.body;
        while let Some(chunk) = body
            .try_next()
            .await
            .map_err(|e| StorageError::Unavailable(format!("reading the object body: {e}")))?
        {
            if (buf.len() + chunk.len()) as u64 > max_bytes {
                return Err(StorageError::TooLarge {
                    size: (buf.len() + chunk.len()) as u64,
                    limit: max_bytes,
                });
            }
            buf.extend_from_slice(&chunk);
        }
        Ok(buf.freeze())
    }

    /// A ranged GetObject; the body is still cut at `len` should a store ignore the range.
    pub async fn get_prefix(&self, key: &ObjectKey, len: u64) -> Result<Bytes, StorageError> {
        if len == 0 {
            return Ok(Bytes::new());
        }
        let out = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(self.full(key))
            .range(format!("bytes=0-{}", len - 1))
            .send()
            .await;
        let out = match out {
            Ok(out) => out,
            // An empty object has no byte 0: the range cannot be satisfied.
            Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 416) => {
                return Ok(Bytes::new());
            }
            Err(e) => return Err(self.error("GetObject", e)),
        };
        let mut buf = BytesMut::new();
        let mut body = out.body;
        while let Some(chunk) = body
            .try_next()
            .await
            .map_err(|e| StorageError::Unavailable(format!("reading the object body: {e}")))?
        {
            let room = (len as usize).saturating_sub(buf.len());
            buf.extend_from_slice(&chunk[..chunk.len().min(room)]);
            if buf.len() as u64 >= len {
                break;
            }
        }
        Ok(buf.freeze())
    }

    pub async fn head(&self, key: &ObjectKey) -> Result<ObjectHead, StorageError> {
        let out = self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(self.full(key))
            .send()
            .await
            .map_err(|e| self.error("HeadObject", e))?;
        let size = out
            .content_length()
            .and_then(|n| u64::try_from(n).ok())
            .ok_or_else(|| StorageError::Unavailable("HeadObject gave no length".into()))?;
        Ok(ObjectHead { size })
    }

    pub async fn put(&self, key: &ObjectKey, bytes: Bytes) -> Result<(), StorageError> {
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(self.full(key))
            .body(ByteStream::from(bytes))
            .send()
            .await
            .map_err(|e| self.error("PutObject", e))?;
        Ok(())
    }

    pub async fn delete(&self, key: &ObjectKey) -> Result<(), StorageError> {
        match self
            .client
            .delete_object()
            .bucket(&self.bucket)
            .key(self.full(key))
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => match self.error("DeleteObject", e) {
                StorageError::NotFound => Ok(()),
                other => Err(other),
            },
        }
    }

    /// Checks the bucket exists and these credentials may use it, with a message that
    /// says which of endpoint, bucket or credentials is wrong.
    pub async fn check(&self) -> Result<(), StorageError> {
        match self.client.head_bucket().bucket(&self.bucket).send().await {
            Ok(_) => Ok(()),
            Err(e) => {
                let status = e.raw_response().map(|r| r.status().as_u16());
                let why = match (status, &e) {
                    (Some(404), _) => format!(
                        "bucket `{}` does not exist at {} (create it, or fix IMGEDGE_S3_BUCKET)",
                        self.bucket, self.endpoint
                    ),
                    (Some(403), _) | (Some(401), _) => format!(
                        "access to bucket `{}` at {} is denied: check the credentials \
                         (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or the AWS profile)",
                        self.bucket, self.endpoint
                    ),
                    (Some(301), _) | (Some(400), _) => format!(
                        "bucket `{}` at {} refused the request ({}): check IMGEDGE_S3_REGION \
                         and IMGEDGE_S3_PATH_STYLE",
                        self.bucket,
                        self.endpoint,
                        status.unwrap_or_default()
                    ),
                    (_, SdkError::DispatchFailure(_) | SdkError::TimeoutError(_)) => format!(
                        "cannot reach {} ({}); check IMGEDGE_S3_ENDPOINT",
                        self.endpoint,
                        describe(&e)
                    ),
                    _ => format!(
                        "bucket `{}` at {}: {}",
                        self.bucket,
                        self.endpoint,
                        describe(&e)
                    ),
                };
                Err(StorageError::Unavailable(why))
            }
        }
    }

    /// A SigV4 presigned URL for what `permit` allows, valid until `expires`.
    pub async fn presign(
        &self,
        permit: &Permit,
        expires: OffsetDateTime,
    ) -> Result<String, StorageError> {
        // A URL that expires at `expires`: valid from a second before it (so an expiry in
        // the past yields an already-expired URL, as the local store's does).
        let start = std::time::SystemTime::from(expires) - Duration::from_secs(1);
        let config = PresigningConfig::builder()
            .start_time(start.min(std::time::SystemTime::now()))
            .expires_in(
                (expires - OffsetDateTime::from(start.min(std::time::SystemTime::now())))
                    .try_into()
                    .unwrap_or(Duration::from_secs(1)),
            )
            .build()
            .map_err(|e| StorageError::Unavailable(format!("presigning: {e}")))?;
        let c = &self.presigner;
        let presigned = match permit {
            // The exact length is a signed header: S3 refuses a body of any other size
            // (the API requires `fileSize` on S3 for this, `Storage::signs_exact_size`).
            Permit::Put {
                key,
                content_type,
                max_size,
            } => c
                .put_object()
                .bucket(&self.bucket)
                .key(self.full(key))
                .content_type(content_type)
                .content_length(i64::try_from(*max_size).unwrap_or(i64::MAX))
                .presigned(config)
                .await
                .map_err(|e| self.error("presign PutObject", e))?,
            Permit::Get {
                key,
                filename,
                content_type,
            } => c
                .get_object()
                .bucket(&self.bucket)
                .key(self.full(key))
                .response_content_type(content_type)
                .response_content_disposition(super::content_disposition(filename))
                .response_cache_control("private, no-store")
                .presigned(config)
                .await
                .map_err(|e| self.error("presign GetObject", e))?,
            Permit::Part {
                key,
                upload_id,
                part,
                ..
            } => c
                .upload_part()
                .bucket(&self.bucket)
                .key(self.full(key))
                .upload_id(upload_id)
                .part_number(i32::try_from(*part).unwrap_or(i32::MAX))
                .presigned(config)
                .await
                .map_err(|e| self.error("presign UploadPart", e))?,
        };
        Ok(presigned.uri().to_owned())
    }

    pub async fn create_multipart(
        &self,
        key: &ObjectKey,
        content_type: &str,
    ) -> Result<String, StorageError> {
        let out = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(self.full(key))
            .content_type(content_type)
            .send()
            .await
            .map_err(|e| self.error("CreateMultipartUpload", e))?;
        out.upload_id()
            .map(str::to_owned)
            .ok_or_else(|| StorageError::Unavailable("CreateMultipartUpload gave no id".into()))
    }

    /// Completes the upload from the listed parts. The parts are checked first against
    /// what the store holds (present, ETag when the store reports one, S3's 5 MiB minimum
    /// for all but the last, total within `max_bytes`), so a refused completion leaves the
    /// upload intact. Returns the object's size.
    pub async fn complete_multipart(
        &self,
        key: &ObjectKey,
        upload_id: &str,
        parts: &[(u32, String)],
        max_bytes: u64,
    ) -> Result<u64, StorageError> {
        let mut stored = std::collections::HashMap::new();
        let mut pages = self
            .client
            .list_parts()
            .bucket(&self.bucket)
            .key(self.full(key))
            .upload_id(upload_id)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| self.error("ListParts", e))?;
            for part in page.parts() {
                if let Some(n) = part.part_number().and_then(|n| u32::try_from(n).ok()) {
                    let size = part.size().and_then(|s| u64::try_from(s).ok()).unwrap_or(0);
                    stored.insert(n, (size, part.e_tag().map(str::to_owned)));
                }
            }
        }
        // Parts never uploaded (or with another ETag) first, then the size rules.
        for (n, etag) in parts {
            let Some((_, stored_etag)) = stored.get(n) else {
                return Err(StorageError::PartMismatch { part: *n });
            };
            if stored_etag
                .as_deref()
                .is_some_and(|e| e.trim_matches('"') != etag.trim_matches('"'))
            {
                return Err(StorageError::PartMismatch { part: *n });
            }
        }
        let mut total = 0u64;
        for (i, (n, _)) in parts.iter().enumerate() {
            let size = stored.get(n).map_or(&0, |(size, _)| size);
            if i + 1 < parts.len() && *size < super::MIN_PART_BYTES {
                return Err(StorageError::PartTooSmall {
                    part: *n,
                    size: *size,
                });
            }
            total += size;
        }
        if total > max_bytes {
            return Err(StorageError::TooLarge {
                size: total,
                limit: max_bytes,
            });
        }
        let completed = parts
            .iter()
            .map(|(n, etag)| {
                CompletedPart::builder()
                    .part_number(i32::try_from(*n).unwrap_or(i32::MAX))
                    .e_tag(etag)
                    .build()
            })
            .collect::<Vec<_>>();
        let done = self
            .client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(self.full(key))
            .upload_id(upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(completed))
                    .build(),
            )
            .send()
            .await;
        if let Err(e) = done {
            let code = e.as_service_error().and_then(|s| s.code()).unwrap_or("");
            if matches!(code, "InvalidPart" | "InvalidPartOrder" | "EntityTooSmall") {
                // Which part is not reported in a portable way; the first is a fair pointer.
                return Err(StorageError::PartMismatch {
                    part: parts.first().map_or(1, |p| p.0),
                });
            }
            return Err(self.error("CompleteMultipartUpload", e));
        }
        let size = self.head(key).await?.size;
        if size > max_bytes {
            self.delete(key).await?;
            return Err(StorageError::TooLarge {
                size,
                limit: max_bytes,
            });
        }
        Ok(size)
    }

    /// Aborts a multipart upload; an upload that is already gone is not an error.
    pub async fn abort_multipart(
        &self,
        key: &ObjectKey,
        upload_id: &str,
    ) -> Result<(), StorageError> {
        match self
            .client
            .abort_multipart_upload()
            .bucket(&self.bucket)
            .key(self.full(key))
            .upload_id(upload_id)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => match self.error("AbortMultipartUpload", e) {
                StorageError::NotFound => Ok(()),
                other => Err(other),
            },
        }
    }

    /// Every object under `prefix` (relative to the configured key prefix), page by page.
    pub async fn list(&self, prefix: &str) -> Result<Vec<Listed>, StorageError> {
        let full_prefix = format!("{}{}", self.prefix, prefix.trim_start_matches('/'));
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(&full_prefix)
            .into_paginator()
            .send();
        let mut out = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| self.error("ListObjectsV2", e))?;
            for object in page.contents() {
                let (Some(key), Some(size)) = (object.key(), object.size()) else {
                    continue;
                };
                let Some(relative) = key.strip_prefix(&self.prefix) else {
                    continue;
                };
                out.push(Listed {
                    key: relative.to_owned(),
                    size: u64::try_from(size).unwrap_or(0),
                });
            }
        }
        Ok(out)
    }

    /// Maps an SDK error to a storage error: 404-ish answers are `NotFound`, timeouts are
    /// `Timeout`, everything else is `Unavailable` with what S3 said.
    fn error<E, R>(&self, op: &str, e: SdkError<E, R>) -> StorageError
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
        R: std::fmt::Debug + HasStatus,
    {
        if let SdkError::TimeoutError(_) = e {
            return StorageError::Timeout;
        }
        let status = e.raw_response().map(HasStatus::status);
        let code = e.as_service_error().and_then(|s| s.code()).unwrap_or("");
        if code == "NoSuchBucket" {
            return StorageError::BucketMissing(self.bucket.clone());
        }
        if status == Some(404) || matches!(code, "NoSuchKey" | "NotFound" | "NoSuchUpload") {
            return StorageError::NotFound;
        }
        StorageError::Unavailable(format!(
            "{op} on bucket `{}` at {}: {}",
            self.bucket,
            self.endpoint,
            describe(&e)
        ))
    }
}

/// The status of a raw response, whatever its concrete type.
pub trait HasStatus {
    fn status(&self) -> u16;
}

impl HasStatus for aws_sdk_s3::config::http::HttpResponse {
    fn status(&self) -> u16 {
        self.status().as_u16()
    }
}

/// The SDK's `Display` says only "service error"; this adds code, message and source.
fn describe<E, R>(e: &SdkError<E, R>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    match e {
        SdkError::ServiceError(s) => {
            let err = s.err();
            format!(
                "{} ({})",
                err.code().unwrap_or("error"),
                err.message().unwrap_or("no message")
            )
        }
        other => {
            let mut text = other.to_string();
            let mut source = std::error::Error::source(other);
            while let Some(s) = source {
                text.push_str(": ");
                text.push_str(&s.to_string());
                source = s.source();
            }
            text
        }
    }
}
