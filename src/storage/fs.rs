//! Local-directory object storage (the embedded default): object `a/b.jpg` lives at
//! `<root>/a/b.jpg`. Keys are validated `ObjectKey`s (no `..`, no absolute paths, no empty
//! segments), so joining them under the root cannot escape it.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use tokio::io::AsyncReadExt;

use super::{ObjectHead, StorageError};
use crate::edge::url::ObjectKey;

#[derive(Debug, Clone)]
pub struct FsStorage {
    root: PathBuf,
}

impl FsStorage {
    /// Opens (creating if needed) the storage root.
    pub fn open(root: impl Into<PathBuf>) -> std::io::Result<FsStorage> {
        let root = root.into();
        std::fs::create_dir_all(&root)?;
        std::fs::create_dir_all(root.join(".tmp"))?;
        Ok(FsStorage { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The path of an object. Safe because `ObjectKey` has no `..`/absolute/empty segments.
    pub fn path_of(&self, key: &ObjectKey) -> PathBuf {
        self.root.join(key.as_str())
    }

    pub async fn get(&self, key: &ObjectKey, max_bytes: u64) -> Result<Bytes, StorageError> {
        let path = self.path_of(key);
        let file = tokio::fs::File::open(&path).await.map_err(not_found)?;
        let meta = file.metadata().await?;
        if !meta.is_file() {
            return Err(StorageError::NotFound);
        }
        if meta.len() > max_bytes {
            return Err(StorageError::TooLarge {
                size: meta.len(),
                limit: max_bytes,
            });
        }
        // The length may change under us; read at most one byte past the limit to notice.
        let mut buf = Vec::with_capacity(meta.len() as usize);
        file.take(max_bytes + 1).read_to_end(&mut buf).await?;
        if buf.len() as u64 > max_bytes {
            return Err(StorageError::TooLarge {
                size: buf.len() as u64,
                limit: max_bytes,
            });
        }
        Ok(Bytes::from(buf))
    }

    pub async fn head(&self, key: &ObjectKey) -> Result<ObjectHead, StorageError> {
        let meta = tokio::fs::metadata(self.path_of(key))
            .await
            .map_err(not_found)?;
        if !meta.is_file() {
            return Err(StorageError::NotFound);
        }
        Ok(ObjectHead { size: meta.len() })
    }

    pub async fn put(&self, key: &ObjectKey, bytes: Bytes) -> Result<(), StorageError> {
        let dest = self.path_of(key);
        let tmp = self.temp_path();
        let result = async {
            if let Some(parent) = dest.parent() {
                tokio::fs::create_dir_all(parent).await?;
            }
            tokio::fs::write(&tmp, &bytes).await?;
            tokio::fs::rename(&tmp, &dest).await
        }
        .await;
        if result.is_err() {
            let _ = tokio::fs::remove_file(&tmp).await;
        }
        Ok(result?)
    }

    /// Adds an existing local file under `key` without copying when possible: a hard link
    /// when source and store share a filesystem, otherwise a copy through a temporary file.
    pub fn adopt(&self, key: &ObjectKey, source: &Path) -> std::io::Result<()> {
        let dest = self.path_of(key);
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent)?;
        }
        if same_file(source, &dest) {
            return Ok(());
        }
        let tmp = self.temp_path();
        let linked = std::fs::hard_link(source, &tmp);
        if linked.is_err()
            && let Err(e) = std::fs::copy(source, &tmp)
        {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        std::fs::rename(&tmp, &dest).inspect_err(|_| {
            let _ = std::fs::remove_file(&tmp);
        })
    }

    pub async fn check(&self) -> Result<(), StorageError> {
        let meta = tokio::fs::metadata(&self.root).await?;
        if meta.is_dir() {
            Ok(())
        } else {
            Err(StorageError::Io(std::io::Error::other(format!(
                "{} is not a directory",
                self.root.display()
            ))))
        }
    }

    fn temp_path(&self) -> PathBuf {
        self.root
            .join(".tmp")
            .join(uuid::Uuid::new_v4().simple().to_string())
    }
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

fn not_found(e: std::io::Error) -> StorageError {
    match e.kind() {
        ErrorKind::NotFound | ErrorKind::NotADirectory => StorageError::NotFound,
        _ => StorageError::Io(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(s: &str) -> ObjectKey {
        ObjectKey::parse(s).unwrap()
    }

    #[tokio::test]
    async fn put_get_head_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let fs = FsStorage::open(dir.path()).unwrap();
        fs.put(&key("a/b/c.jpg"), Bytes::from_static(b"hello"))
            .await
            .unwrap();
        assert_eq!(fs.head(&key("a/b/c.jpg")).await.unwrap().size, 5);
        assert_eq!(&fs.get(&key("a/b/c.jpg"), 5).await.unwrap()[..], b"hello");
    }

    #[tokio::test]
    async fn oversize_and_missing_objects_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let fs = FsStorage::open(dir.path()).unwrap();
        fs.put(&key("x.bin"), Bytes::from(vec![0u8; 100]))
            .await
            .unwrap();
        assert!(matches!(
            fs.get(&key("x.bin"), 99).await,
            Err(StorageError::TooLarge {
                size: 100,
                limit: 99
            })
        ));
        assert!(matches!(
            fs.get(&key("nope.jpg"), 10).await,
            Err(StorageError::NotFound)
        ));
        // A directory is not an object.
        fs.put(&key("d/inner.bin"), Bytes::from_static(b"1"))
            .await
            .unwrap();
        assert!(matches!(
            fs.get(&key("d"), 10).await,
            Err(StorageError::NotFound)
        ));
    }

    #[test]
    fn adopt_links_or_copies_and_is_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let fs = FsStorage::open(dir.path().join("store")).unwrap();
        let src = dir.path().join("src.jpg");
        std::fs::write(&src, b"jpeg").unwrap();
        fs.adopt(&key("imported/src.jpg"), &src).unwrap();
        fs.adopt(&key("imported/src.jpg"), &src).unwrap();
        let stored = std::fs::read(fs.path_of(&key("imported/src.jpg"))).unwrap();
        assert_eq!(stored, b"jpeg");
    }
}
