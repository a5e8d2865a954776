//! The three in-memory caches, all moka, all bounded:
//! - variants: rendered images, weighed by their bytes, with a TTL; `variant`
//!   coalesces concurrent identical misses into one render (moka runs one init future per
//!   key; if that caller is dropped, a waiting caller takes over, so nobody hangs);
//! - originals: source bytes, weighed by bytes, so a burst of sizes of one image fetches
//!   it from storage once;
//! - visibility: a key's visibility for a short TTL. A change made through this node purges
//!   the key from all three at once; the TTL bounds staleness on other nodes.
//!
//! Keys of the variant cache are canonical recipe prints, never raw URLs.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use moka::future::Cache;

use crate::db::EdgeFacts;
use crate::imaging::Format;
use crate::key::ObjectKey;

/// One rendered image, ready to send.
#[derive(Debug, Clone)]
pub struct Variant {
    pub key: ObjectKey,
    pub bytes: Bytes,
    pub format: Format,
    pub width: u32,
    pub height: u32,
    /// Strong validator: a digest of `bytes`, quoted as HTTP wants it.
    pub etag: String,
    /// How long decoding, transforming and encoding it took (`Server-Timing`).
    pub render_time: std::time::Duration,
}

/// Sizes of the caches.
#[derive(Debug, Clone, Copy)]
pub struct CacheSizes {
    pub variant_bytes: u64,
    pub variant_ttl: Duration,
    pub original_bytes: u64,
    pub visibility_ttl: Duration,
}

#[derive(Clone)]
pub struct Caches {
    variants: Cache<String, Arc<Variant>>,
    originals: Cache<ObjectKey, Bytes>,
    visibility: Cache<ObjectKey, Option<Arc<EdgeFacts>>>,
}

impl std::fmt::Debug for Caches {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Caches")
            .field("variants", &self.variants.entry_count())
            .field("originals", &self.originals.entry_count())
            .finish()
    }
}

fn weight(len: usize) -> u32 {
    u32::try_from(len).unwrap_or(u32::MAX).max(1)
}

impl Caches {
    pub fn new(sizes: CacheSizes) -> Caches {
        let variants = Cache::builder()
            .max_capacity(sizes.variant_bytes)
            .weigher(|k: &String, v: &Arc<Variant>| weight(k.len() + v.bytes.len()))
            .time_to_live(sizes.variant_ttl)
            .support_invalidation_closures()
            .build();
        let originals = Cache::builder()
            .max_capacity(sizes.original_bytes)
            .weigher(|_: &ObjectKey, v: &Bytes| weight(v.len()))
            .time_to_live(Duration::from_secs(300))
            .support_invalidation_closures()
            .build();
        let visibility = Cache::builder()
            .max_capacity(100_000)
            .time_to_live(sizes.visibility_ttl)
            .build();
        Caches {
            variants,
            originals,
            visibility,
        }
    }

    /// The cached variant, or the result of `render`, run once for all concurrent callers
    /// of the same key. Errors are shared with the waiters and not cached.
    pub async fn variant<E, F>(&self, key: String, render: F) -> Result<Arc<Variant>, Arc<E>>
    where
        F: Future<Output = Result<Arc<Variant>, E>>,
        E: Send + Sync + 'static,
    {
        self.variants.try_get_with(key, render).await
    }

    /// Whether a variant is cached (for the hit/miss metric; racy by nature).
    pub fn has_variant(&self, key: &str) -> bool {
        self.variants.contains_key(key)
    }

    pub async fn original<E, F>(&self, key: &ObjectKey, fetch: F) -> Result<Bytes, Arc<E>>
    where
        F: Future<Output = Result<Bytes, E>>,
        E: Send + Sync + 'static,
    {
        self.originals.try_get_with_by_ref(key, fetch).await
    }

    /// What the edge knows about `key` (visibility, derivatives), looked up at most once
    /// per TTL and coalesced across concurrent requests.
    pub async fn visibility<E, F>(
        &self,
        key: &ObjectKey,
        lookup: F,
    ) -> Result<Option<Arc<EdgeFacts>>, Arc<E>>
    where
        F: Future<Output = Result<Option<Arc<EdgeFacts>>, E>>,
        E: Send + Sync + 'static,
    {
        self.visibility.try_get_with_by_ref(key, lookup).await
    }

    /// Forgets everything cached about `key`: its visibility, its original, its reduced
    /// copies and every variant rendered from it. Called when a file changes visibility, is
    /// replaced or is deleted.
    pub async fn purge(&self, key: &ObjectKey) {
        self.visibility.invalidate(key).await;
        self.originals.invalidate(key).await;
        let original = key.clone();
        self.originals
            .invalidate_entries_if(move |k, _| k.is_derivative_of(&original))
            .expect("invariant: the originals cache supports invalidation closures");
        let key = key.clone();
        self.variants
            .invalidate_entries_if(move |_, v| v.key == key)
            .expect("invariant: the variant cache supports invalidation closures");
    }

    /// Forgets every cached visibility (announcements from other nodes may have been
    /// missed); the next request for each key asks the metadata store again.
    pub fn forget_all_visibility(&self) {
        self.visibility.invalidate_all();
    }

    /// Approximate bytes held by the variant and original caches.
    pub fn weighted_sizes(&self) -> (u64, u64) {
        (
            self.variants.weighted_size(),
            self.originals.weighted_size(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn caches() -> Caches {
        Caches::new(CacheSizes {
            variant_bytes: 1 << 20,
            variant_ttl: Duration::from_secs(60),
            original_bytes: 1 << 20,
            visibility_ttl: Duration::from_secs(60),
        })
    }

    fn variant(key: &str) -> Arc<Variant> {
        Arc::new(Variant {
            key: ObjectKey::parse(key).unwrap(),
            bytes: Bytes::from_static(b"img"),
            format: Format::Jpeg,
            width: 1,
            height: 1,
            etag: "\"x\"".into(),
            render_time: Duration::ZERO,
        })
    }

    #[tokio::test]
    async fn concurrent_misses_render_once() {
        let c = caches();
        let renders = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..16)
            .map(|_| {
                let c = c.clone();
                let renders = renders.clone();
                tokio::spawn(async move {
                    c.variant::<(), _>("k".into(), async {
                        renders.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        Ok(variant("a.jpg"))
                    })
                    .await
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        assert_eq!(renders.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn purge_drops_every_variant_of_a_key() {
        let c = caches();
        for (k, src) in [("a1", "a.jpg"), ("a2", "a.jpg"), ("b1", "b.jpg")] {
            c.variant::<(), _>(k.into(), async { Ok(variant(src)) })
                .await
                .unwrap();
        }
        c.purge(&ObjectKey::parse("a.jpg").unwrap()).await;
        c.variants.run_pending_tasks().await;
        assert!(!c.has_variant("a1"));
        assert!(!c.has_variant("a2"));
        assert!(c.has_variant("b1"));
    }
}
