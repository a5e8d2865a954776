//! JSON shapes of the API's responses (camelCase, as the original product) and the access
//! rules of SPEC §2.3 that decide which records, and which fields, a caller sees.

use serde::Serialize;
use time::format_description::well_known::Rfc3339;

use crate::auth::Caller;
use crate::db::{FileRecord, OwnerType, Visibility};
use crate::edge::access::Signing;

/// Whether `caller` owns `rec` (a user file whose owner is the token's subject).
pub fn is_owner(caller: &Caller, rec: &FileRecord) -> bool {
    rec.owner_type == OwnerType::User && caller.user.as_deref() == Some(rec.owner_id.as_str())
}

/// Read access: detail, download URL (listing applies the same rule in SQL).
pub fn can_read(caller: &Caller, rec: &FileRecord) -> bool {
    if caller.is_secret() || is_owner(caller, rec) {
        return true;
    }
    match rec.visibility {
        Visibility::Public => true,
        Visibility::Protected => caller.user.is_some(),
        Visibility::Shared => caller
            .user
            .as_ref()
            .is_some_and(|u| rec.shared_with.iter().any(|s| s == u)),
        Visibility::Private => false,
    }
}

/// Edit and delete: the owner, or a secret key.
pub fn can_edit(caller: &Caller, rec: &FileRecord) -> bool {
    caller.is_secret() || is_owner(caller, rec)
}

/// A file object. Non-owners get the public fields only: no `sharedWith`, and no
/// `custom` / `relatedEntityId` inside `metadata`. `bucket` is the app's grouping label,
/// which listings filter by, so every reader sees it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FileView {
    pub id: String,
    pub s3_key: String,
    pub original_name: String,
    pub mime_type: String,
    pub size: u64,
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub visibility: &'static str,
    pub bucket: String,
    pub owner_id: String,
    pub owner_type: &'static str,
    pub metadata: serde_json::Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shared_with: Option<Vec<String>>,
    pub created_at: String,
    pub updated_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cdn_url: Option<String>,
}

impl FileView {
    pub fn new(rec: &FileRecord, caller: &Caller, links: CdnLinks<'_>) -> FileView {
        let full = can_edit(caller, rec);
        let mut metadata = rec.metadata.clone();
        if !full && let Some(m) = metadata.as_object_mut() {
            m.remove("custom");
            m.remove("relatedEntityId");
        }
        let time = |t: time::OffsetDateTime| t.format(&Rfc3339).unwrap_or_default();
        FileView {
            id: rec.id.clone(),
            s3_key: rec.key.to_string(),
            original_name: rec.original_name.clone(),
            mime_type: rec.mime_type.clone(),
            size: rec.size,
            width: rec.width,
            height: rec.height,
            visibility: rec.visibility.as_str(),
            bucket: rec.bucket.clone(),
            owner_id: rec.owner_id.clone(),
            owner_type: rec.owner_type.as_str(),
            metadata,
            shared_with: full.then(|| rec.shared_with.clone()),
            created_at: time(rec.created_at),
            updated_at: time(rec.updated_at),
            cdn_url: (rec.visibility == Visibility::Public).then(|| links.to(&rec.key)),
        }
    }
}

/// Where the API's CDN links point, and how they are signed.
#[derive(Debug, Clone, Copy)]
pub struct CdnLinks<'a> {
    pub base: &'a str,
    pub signing: &'a Signing,
}

impl CdnLinks<'_> {
    /// The CDN URL of the untransformed image (key percent-encoded where needed), signed
    /// when the edge requires signatures.
    pub fn to(&self, key: &crate::key::ObjectKey) -> String {
        let path =
            crate::edge::url::canonical(&crate::imaging::recipe::Recipe::default(), false, key);
        format!("{}/{}", self.base, self.signing.link_path(&path))
    }
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Pagination {
    pub total: u64,
    pub page: u32,
    pub limit: u32,
    pub total_pages: u64,
    pub has_next_page: bool,
    pub has_prev_page: bool,
}

impl Pagination {
    pub fn new(total: u64, page: u32, limit: u32) -> Pagination {
        let total_pages = total.div_ceil(u64::from(limit.max(1)));
        Pagination {
            total,
            page,
            limit,
            total_pages,
            has_next_page: u64::from(page) < total_pages,
            has_prev_page: page > 1,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct ListView {
    pub items: Vec<FileView>,
    pub pagination: Pagination,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pagination_math() {
        let p = Pagination::new(45, 2, 20);
        assert_eq!(
            (p.total_pages, p.has_next_page, p.has_prev_page),
            (3, true, true)
        );
        let p = Pagination::new(0, 1, 20);
        assert_eq!(
            (p.total_pages, p.has_next_page, p.has_prev_page),
            (0, false, false)
        );
        let p = Pagination::new(40, 2, 20);
        assert!(!p.has_next_page);
    }
}
