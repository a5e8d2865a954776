//! Demo mode (`imgedge serve --demo`): seeds a few public sample images, embedded in the
//! binary so it works from any directory, and returns ready-to-open resize URLs.

use bytes::Bytes;

use crate::app::App;
use crate::db::{DbError, NewFile, OwnerType, Visibility};
use crate::imaging;
use crate::key::ObjectKey;
use crate::storage::StorageError;

/// The embedded samples: (key, bytes).
const SAMPLES: &[(&str, &[u8])] = &[
    (
        "demo/bridge.jpg",
        include_bytes!("../fixtures/demo/bridge.jpg"),
    ),
    (
        "demo/seeding.jpg",
        include_bytes!("../fixtures/demo/seeding.jpg"),
    ),
    (
        "demo/sunset.jpg",
        include_bytes!("../fixtures/demo/sunset.jpg"),
    ),
    // A transparent PNG (for fill, background_color, round_corner, rotate by any angle),
    // a nine-patch picture frame (for frame()) and a small animated GIF.
    ("demo/logo.png", include_bytes!("../fixtures/demo/logo.png")),
    (
        "demo/frame.png",
        include_bytes!("../fixtures/demo/frame.png"),
    ),
    (
        "demo/animated.gif",
        include_bytes!("../fixtures/demo/animated.gif"),
    ),
];

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("embedded sample {0} is not a usable image")]
    BadSample(&'static str),
}

/// Stores and registers the samples (idempotent) and returns example URLs.
pub async fn seed(app: &App) -> Result<Vec<String>, DemoError> {
    for (name, bytes) in SAMPLES {
        let key = ObjectKey::parse(name).map_err(|_| DemoError::BadSample(name))?;
        let info = imaging::probe(bytes).map_err(|_| DemoError::BadSample(name))?;
        app.storage.put(&key, Bytes::from_static(bytes)).await?;
        if app.db.find_by_key(&key).await?.is_none() {
            app.db
                .insert_file(NewFile {
                    project: "default".into(),
                    key: key.clone(),
                    original_name: name.rsplit('/').next().unwrap_or(name).into(),
                    mime_type: info.format.mime().to_owned(),
                    size: bytes.len() as u64,
                    width: Some(info.width),
                    height: Some(info.height),
                    visibility: Visibility::Public,
                    owner_id: "demo".into(),
                    owner_type: OwnerType::Service,
                })
                .await?;
        } else {
            app.db.set_visibility(&key, Visibility::Public).await?;
        }
        app.caches.purge(&key).await;
    }
    let base = app.config.cdn_base_url();
    let examples = [
        "fit-in/300x200/filters:quality(80)",
        "400x400/smart",
        "fit-in/600x0/filters:format(webp)",
        "meta/300x200",
    ];
    Ok(SAMPLES
        .iter()
        .zip(examples.iter().cycle())
        .map(|((key, _), ops)| {
            format!(
                "{base}/{}",
                app.edge.signing.sign_path(&format!("{ops}/{key}"))
            )
        })
        .collect())
}
