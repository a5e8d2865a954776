//! Reduced copies (derivatives): built in the background after registration, used by the
//! edge when they have at least twice the output's pixels, invisible in the output, deleted
//! with the file; and one decode for a burst of sizes of the same source.

use std::sync::atomic::AtomicBool;

use bytes::Bytes;
use http::Method;
use image::{DynamicImage, GenericImageView};
use imgedge::edge::url::parse;
use imgedge::imaging::{self, FormatChoice, Job, Limits, Size};
use imgedge::key::ObjectKey;
use imgedge::storage::StorageError;

use crate::api::upload;
use crate::support::{PK, Resp, TestServer, eventually, eventually_async, fixture, occupy_cpu};

/// Peak signal-to-noise ratio over RGB, in dB (identical images: infinity).
fn psnr(a: &DynamicImage, b: &DynamicImage) -> f64 {
    assert_eq!(a.dimensions(), b.dimensions());
    let (a, b) = (a.to_rgb8(), b.to_rgb8());
    let sum: f64 = a
        .as_raw()
        .iter()
        .zip(b.as_raw())
        .map(|(&x, &y)| (f64::from(x) - f64::from(y)).powi(2))
        .sum();
    let mse = sum / a.as_raw().len() as f64;
    10.0 * (255.0f64 * 255.0 / mse).log10()
}

/// What the edge would serve when rendering `path` from the original bytes (as the edge
/// does without an `Accept` header: the recipe's format, else the source's).
fn render_original(bytes: &[u8], path: &str) -> imaging::Encoded {
    let recipe = parse(path).unwrap().recipe;
    imaging::render(&Job {
        bytes: Bytes::copy_from_slice(bytes),
        recipe: recipe.clone(),
        output: match recipe.filters.format {
            Some(format) => FormatChoice::Explicit(format),
            None => FormatChoice::Auto {
                webp: false,
                avif: false,
            },
        },
        default_quality: imaging::Quality::Fixed(80),
        auto_quality_target: imaging::auto_quality::AutoTarget::default(),
        tuning: imaging::Tuning::default(),
        limits: Limits::default(),
        reduced: None,
        overlays: Vec::new(),
    })
    .unwrap()
}

/// The same, decoded.
fn from_original(bytes: &[u8], path: &str) -> DynamicImage {
    image::load_from_memory(&render_original(bytes, path).bytes).unwrap()
}

/// A server whose `landscape.jpg` (640x427, uploaded public by alice) has its 256- and
/// 128-wide copies built: the server and the file's key.
async fn landscape_with_copies() -> (TestServer, String) {
    let s = TestServer::start_with(|c| c.derivative_sizes = "256,128".into()).await;
    let file = upload(&s, "alice", "landscape.jpg", "public").await;
    let key = file["s3Key"].as_str().unwrap().to_owned();
    let m = s.app.metrics.clone();
    eventually(|| m.derivatives_built.get() == 1).await;
    (s, key)
}

/// Sends `paths` together while both CPU slots are held, so that all of them are queued
/// (and have joined the decode share) before one decodes, as when a browser sends a
/// srcset's sizes together.
async fn burst(s: &TestServer, paths: [&str; 3]) -> [Resp; 3] {
    let m = &s.app.metrics;
    let release = occupy_cpu(&s.app, 2).await;
    let waiter = async {
        eventually_async(std::time::Duration::from_secs(10), || async {
            m.queue_depth.get() == 3
        })
        .await;
        drop(release);
    };
    let (a, b, c, ()) = tokio::join!(s.get(paths[0]), s.get(paths[1]), s.get(paths[2]), waiter);
    [a, b, c]
}

#[tokio::test]
async fn derivatives_are_built_in_the_background_used_and_deleted_with_the_file() {
    // Small levels, so that the 640x427 fixture gets two of them.
    let s = TestServer::start_with(|c| c.derivative_sizes = "256,128".into()).await;
    let file = upload(&s, "alice", "landscape.jpg", "public").await;
    let key = ObjectKey::parse(file["s3Key"].as_str().unwrap()).unwrap();
    let m = s.app.metrics.clone();

    // Built after registration, without any request asking for it.
    eventually(|| m.derivatives_built.get() == 1).await;
    let facts = s.app.db.edge_facts(&key).await.unwrap().unwrap();
    let pyramid = facts.pyramid.expect("the pyramid is recorded");
    assert_eq!((pyramid.width, pyramid.height), (640, 427));
    assert_eq!(
        pyramid.levels,
        vec![Size::new(128, 85), Size::new(256, 171)]
    );
    for long_edge in [128, 256] {
        let stored = s.app.storage.get(&key.derivative(long_edge), 1 << 20).await;
        assert!(
            stored.is_ok(),
            "level {long_edge} is stored beside the original"
        );
    }
    eventually(|| m.derivative_backlog.get() == 0).await;

    // 100 wide needs 200 source pixels: the 256 level serves it, and looks the same.
    let path = format!("/fit-in/100x0/filters:quality(95)/{key}");
    let r = s.get(&path).await;
    assert_eq!(m.derivative_renders.get(), 1);
    let served = r.image();
    assert_eq!(served.dimensions(), (100, 67));
    let reference = from_original(&fixture("landscape.jpg"), &path);
    let db = psnr(&served, &reference);
    assert!(
        db > 35.0,
        "rendering from the level lost quality: {db:.1} dB"
    );
    // meta/ says where the render starts.
    let meta = s.get(&format!("/meta{path}")).await.json();
    let steps = meta["operations"].to_string();
    assert!(steps.contains("reduced copy"), "{steps}");
    assert_eq!(meta["output"]["width"], 100);

    // 200 wide needs 400: only the original will do.
    let r = s.get(&format!("/fit-in/200x0/{key}")).await;
    assert_eq!(r.image().width(), 200);
    assert_eq!(
        m.derivative_renders.get(),
        2,
        "the meta/ render counted, this one not"
    );

    // Deleting the file deletes its levels.
    let id = file["id"].as_str().unwrap();
    let r = s
        .api(
            Method::DELETE,
            &format!("/v1/files/{id}"),
            PK,
            Some("alice"),
            None,
        )
        .await;
    assert_eq!(r.status, 200);
    for long_edge in [128, 256] {
        let gone = s.app.storage.get(&key.derivative(long_edge), 1 << 20).await;
        assert!(
            matches!(gone, Err(StorageError::NotFound)),
            "level {long_edge} is deleted"
        );
    }
    assert_eq!(s.get(&path).await.status, 404);
    s.stop().await;
}

#[tokio::test]
async fn files_that_cannot_have_derivatives_are_marked_and_served_from_the_original() {
    let s = TestServer::start_with(|c| c.derivative_sizes = "256".into()).await;
    // Too small for a 256 level (needs a long edge of 384), and an animation.
    let small = upload(&s, "alice", "photo.webp", "public").await;
    let gif = upload(&s, "alice", "animated.gif", "public").await;
    let m = s.app.metrics.clone();
    eventually(|| m.derivatives_built.get() == 2).await;
    for file in [&small, &gif] {
        let key = ObjectKey::parse(file["s3Key"].as_str().unwrap()).unwrap();
        let facts = s.app.db.edge_facts(&key).await.unwrap().unwrap();
        assert!(facts.pyramid.is_none_or(|p| p.levels.is_empty()), "{key}");
        assert_eq!(s.get(&format!("/fit-in/50x50/{key}")).await.status, 200);
    }
    assert_eq!(m.derivative_renders.get(), 0);
    assert_eq!(s.app.db.derivative_backlog().await.unwrap(), 0);
    s.stop().await;
}

#[tokio::test]
async fn keys_under_the_reserved_prefix_cannot_be_served_or_registered() {
    let (s, key) = landscape_with_copies().await;
    // The level exists, but it is not a file: the URL is refused before any lookup.
    let r = s.get(&format!("/.imgedge/d256/{key}")).await;
    assert_eq!(r.status, 400);
    assert!(
        r.json()["error"]["message"]
            .to_string()
            .contains("reserved")
    );
    s.stop().await;
}

#[tokio::test]
async fn a_srcset_burst_of_one_source_decodes_once() {
    let s = TestServer::start_with(|c| c.derivative_sizes = String::new()).await;
    s.add(
        "burst.jpg",
        "landscape.jpg",
        imgedge::db::Visibility::Public,
    )
    .await;
    let m = s.app.metrics.clone();
    let responses = burst(
        &s,
        ["/100x0/burst.jpg", "/200x0/burst.jpg", "/300x0/burst.jpg"],
    )
    .await;
    let widths: Vec<u32> = responses.iter().map(|r| r.image().width()).collect();
    assert_eq!(widths, vec![100, 200, 300]);
    assert_eq!(m.decodes.get(), 1, "one decode for the burst");
    assert_eq!(m.decodes_shared.get(), 2);
    assert_eq!(
        s.app.edge.decodes.active(),
        0,
        "decoded pixels are dropped after the burst"
    );

    // A later request decodes on its own (nothing is kept beyond the burst).
    assert_eq!(s.get("/150x0/burst.jpg").await.status, 200);
    assert_eq!(m.decodes.get(), 2);
    s.stop().await;
}

#[tokio::test]
async fn a_burst_over_different_copies_decodes_once_from_the_best_of_them() {
    // 640x427 original; copies 256 and 128 wide. With two copy pixels per output pixel,
    // 60 wide renders from the 128 copy on its own, 100 and 120 wide from the 256 one.
    let (s, key) = landscape_with_copies().await;
    let m = s.app.metrics.clone();
    let paths = [60, 100, 120].map(|w| format!("/{w}x0/{key}"));
    let responses = burst(&s, [&paths[0], &paths[1], &paths[2]]).await;
    let widths: Vec<u32> = responses.iter().map(|r| r.image().width()).collect();
    assert_eq!(widths, vec![60, 100, 120]);
    assert_eq!(
        m.decodes.get(),
        1,
        "one decode (of the 256 copy) for the burst"
    );
    assert_eq!(m.decodes_shared.get(), 2);
    assert_eq!(m.derivative_renders.get(), 3);

    // Alone, the 60-wide render uses the 128 copy (another decode).
    assert_eq!(s.get(&format!("/61x0/{key}")).await.status, 200);
    assert_eq!(m.decodes.get(), 2);
    s.stop().await;
}

/// How quality was checked (README, "Performance"): every W1/W2 render of the bench photos
/// is compared with an ideal reference (full-resolution decode, one high-quality resize,
/// no encode), once as served from the original and once as served from the reduced copy
/// the edge picks. The copy must be as close to the reference as the original path is
/// (within 1 dB PSNR). Needs the bench photos (`../shared/bench-images` or
/// `IMGEDGE_BENCH_IMAGES`), hence ignored by default:
/// `cargo test --test it -- --ignored --nocapture reduced_copies_look`
#[tokio::test]
#[ignore = "needs ../shared/bench-images; run by hand, see the README"]
async fn reduced_copies_look_like_the_original_on_the_bench_photos() {
    use imgedge::imaging::stages;
    let dir = std::env::var_os("IMGEDGE_BENCH_IMAGES").map_or_else(
        || std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/bench-images"),
        std::path::PathBuf::from,
    );
    let limits = Limits::default();
    let never = AtomicBool::new(false);
    let render = |bytes: &[u8], path: &str, reduced| {
        let recipe = parse(path).unwrap().recipe;
        let out = imaging::render(&Job {
            bytes: Bytes::copy_from_slice(bytes),
            recipe: recipe.clone(),
            output: FormatChoice::Auto {
                webp: false,
                avif: false,
            },
            default_quality: imgedge::imaging::Quality::Fixed(80),
            auto_quality_target: imgedge::imaging::auto_quality::AutoTarget::default(),
            tuning: imgedge::imaging::Tuning::default(),
            limits: limits.clone(),
            reduced,
            overlays: Vec::new(),
        })
        .unwrap();
        image::load_from_memory(&out.bytes).unwrap()
    };
    println!("| file | URL | level | PSNR from original | PSNR from level |");
    println!("|---|---|---|---|---|");
    let mut worst = f64::INFINITY;
    for file in [
        "kleiber.jpg",
        "seeding.jpg",
        "dragonfly.jpg",
        "sunset.jpg",
        "phone_12mp.jpg",
    ] {
        let bytes = std::fs::read(dir.join(file)).expect("bench photos are present");
        let info = imaging::probe(&bytes).unwrap();
        let full = stages::decode(&bytes, &info, 1, imaging::Precision::Full, 1 << 31)
            .unwrap()
            .image;
        let sizes = imgedge::config::Config::default().derivative_sizes();
        let (pyramid, levels) = imaging::build_pyramid(&bytes, &sizes, &limits, &never)
            .unwrap()
            .unwrap();
        let reduced = Some(pyramid.original());
        for path in [
            "/fit-in/300x200/filters:quality(80)/k",
            "/fit-in/800x0/filters:quality(85)/k",
        ] {
            let level = pyramid
                .level_for(&parse(path).unwrap().recipe, 8192)
                .expect("W1 and W2 are served from a level");
            let copy = &levels.iter().find(|l| l.size == level).unwrap().bytes;
            let from_original = render(&bytes, path, None);
            let from_level = render(copy, path, reduced);
            let (w, h) = from_original.dimensions();
            let reference =
                stages::resize(&full, stages::CropBox::whole(&full), Size::new(w, h)).unwrap();
            let (a, b) = (
                psnr(&from_original, &reference),
                psnr(&from_level, &reference),
            );
            worst = worst.min(b - a);
            println!(
                "| {file} | `{path}` | {} | {a:.1} dB | {b:.1} dB |",
                imgedge::imaging::Pyramid::long_edge(level)
            );
        }
    }
    assert!(
        worst > -1.0,
        "a level is {:.1} dB further from the reference",
        -worst
    );
}

/// A recorded copy that has gone from storage is not looked for on every request: the
/// first render that misses it serves from the original and sends the file back to the
/// builder, which makes the copy again; renders use it from then on.
#[tokio::test]
async fn a_missing_copy_is_rebuilt_and_served_from_the_original_meanwhile() {
    let (s, key) = landscape_with_copies().await;
    let key = ObjectKey::parse(&key).unwrap();
    let m = s.app.metrics.clone();
    s.app.storage.delete(&key.derivative(256)).await.unwrap();

    let path = format!("/fit-in/100x0/filters:quality(95)/{key}");
    let rs = futures_join3(&s, &path).await;
    for r in &rs {
        let served = r.image();
        assert_eq!(served.dimensions(), (100, 67));
        let db = psnr(&served, &from_original(&fixture("landscape.jpg"), &path));
        assert!(db > 35.0, "served from the original: {db:.1} dB");
    }
    assert_eq!(
        m.derivative_renders.get(),
        0,
        "no render used the lost copy"
    );
    // Sent back once (not once per request), and rebuilt.
    eventually(|| m.derivatives_built.get() == 2).await;
    assert!(s.app.storage.head(&key.derivative(256)).await.is_ok());
    let r = s.get(&format!("/fit-in/101x0/{key}")).await;
    assert_eq!(r.image().width(), 101);
    assert_eq!(m.derivative_renders.get(), 1, "the copy is used again");
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(m.derivatives_built.get(), 2, "built again exactly once");
    s.stop().await;
}

async fn futures_join3(s: &TestServer, path: &str) -> [Resp; 3] {
    let (a, b, c) = tokio::join!(s.get(path), s.get(path), s.get(path));
    [a, b, c]
}

/// A file replaced by a smaller picture gets the copies its new size calls for, and the
/// larger copies of the old content go.
#[tokio::test]
async fn a_replaced_file_keeps_no_stale_larger_copies() {
    let (s, key) = landscape_with_copies().await;
    let key = ObjectKey::parse(&key).unwrap();
    let m = s.app.metrics.clone();
    assert!(s.app.storage.head(&key.derivative(256)).await.is_ok());
    // The same key, now 200x133: only the 128 copy fits under it.
    let small = image::DynamicImage::ImageRgb8(image::RgbImage::from_fn(200, 133, |x, y| {
        image::Rgb([x as u8, y as u8, 90])
    }));
    let mut bytes = Vec::new();
    small
        .write_to(
            &mut std::io::Cursor::new(&mut bytes),
            image::ImageFormat::Jpeg,
        )
        .unwrap();
    let size = bytes.len() as u64;
    s.app.storage.put(&key, bytes.into()).await.unwrap();
    let rec = s.app.db.find_by_key(&key).await.unwrap().unwrap();
    s.app
        .db
        .refresh_file(&imgedge::db::NewFile {
            project: rec.project,
            key: key.clone(),
            original_name: rec.original_name,
            mime_type: "image/jpeg".into(),
            size,
            width: Some(200),
            height: Some(133),
            visibility: rec.visibility,
            owner_id: rec.owner_id,
            owner_type: rec.owner_type,
        })
        .await
        .unwrap();
    s.app.builder.wanted.notify_one();
    eventually(|| m.derivatives_built.get() == 2).await;
    let facts = s.app.db.edge_facts(&key).await.unwrap().unwrap();
    let pyramid = facts.pyramid.expect("rebuilt");
    assert_eq!(pyramid.levels, vec![Size::new(128, 85)]);
    assert!(s.app.storage.head(&key.derivative(128)).await.is_ok());
    assert!(
        matches!(
            s.app.storage.head(&key.derivative(256)).await,
            Err(StorageError::NotFound)
        ),
        "the old 256 copy is gone"
    );
    s.stop().await;
}

/// Deleting a file removes its row first, with an outbox entry, in one transaction: when
/// the objects cannot be removed then (here the local store finds a directory where the
/// object was), the call still succeeds, the file is gone for everyone, and housekeeping
/// removes the objects later. Never a file registered without its object.
#[tokio::test]
async fn a_deletion_cut_short_is_finished_by_housekeeping() {
    let (s, key_text) = landscape_with_copies().await;
    if s.is_s3() {
        // The fault below is the local store's; the S3 path is the same code.
        s.stop().await;
        return;
    }
    let key = ObjectKey::parse(&key_text).unwrap();
    let file = s.app.db.find_by_key(&key).await.unwrap().unwrap();
    let object = s.app.config.data_dir.join("objects").join(key.as_str());
    let saved = std::fs::read(&object).unwrap();
    std::fs::remove_file(&object).unwrap();
    std::fs::create_dir_all(object.join("in-the-way")).unwrap();

    let r = s
        .api(
            Method::DELETE,
            &format!("/v1/files/{}", file.id),
            PK,
            Some("alice"),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert!(s.app.db.find_by_key(&key).await.unwrap().is_none());
    assert_eq!(s.get(&format!("/{key}")).await.status, 404);
    assert_eq!(s.app.db.deletion_backlog().await.unwrap(), 1);

    // The fault goes; the next sweep after the grace finishes the deletion.
    std::fs::remove_dir_all(&object).unwrap();
    std::fs::write(&object, &saved).unwrap();
    let now = time::OffsetDateTime::now_utc();
    let report = imgedge::housekeeping::sweep(&s.app, now).await.unwrap();
    assert_eq!(report.deletions, 0, "not before the grace");
    let later = now + time::Duration::seconds(61);
    let report = imgedge::housekeeping::sweep(&s.app, later).await.unwrap();
    assert_eq!(report.deletions, 1);
    assert!(!object.exists());
    for long_edge in [128, 256] {
        assert!(matches!(
            s.app.storage.head(&key.derivative(long_edge)).await,
            Err(StorageError::NotFound)
        ));
    }
    assert_eq!(s.app.db.deletion_backlog().await.unwrap(), 0);
    let report = imgedge::check::check(&s.app).await.unwrap();
    assert!(report.is_sound(), "{report}");
    s.stop().await;
}

/// A build that stored copies and died before recording them, while the file was deleted
/// through another node (whose deletion ran before the copies existed), leaves a guard in
/// the deletion outbox: housekeeping removes the copies. A guard of a file that still
/// exists just goes.
#[tokio::test]
async fn copies_of_a_build_cut_short_after_its_file_was_deleted_are_removed() {
    let (s, key_text) = landscape_with_copies().await;
    let key = ObjectKey::parse(&key_text).unwrap();
    let file = s.app.db.find_by_key(&key).await.unwrap().unwrap();
    let r = s
        .api(
            Method::DELETE,
            &format!("/v1/files/{}", file.id),
            PK,
            Some("alice"),
            None,
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(s.app.db.deletion_backlog().await.unwrap(), 0);
    // What the other node's builder did before it died: guard, then store a copy.
    s.app.db.guard_copies(&key).await.unwrap();
    s.app
        .storage
        .put(&key.derivative(256), fixture("landscape.jpg").into())
        .await
        .unwrap();
    let later = time::OffsetDateTime::now_utc() + time::Duration::seconds(61);
    let report = imgedge::housekeeping::sweep(&s.app, later).await.unwrap();
    assert_eq!(report.deletions, 1);
    assert!(matches!(
        s.app.storage.head(&key.derivative(256)).await,
        Err(StorageError::NotFound)
    ));

    // The guard of a file that exists removes nothing.
    let other = crate::api::upload(&s, "alice", "landscape.jpg", "public").await;
    let other = ObjectKey::parse(other["s3Key"].as_str().unwrap()).unwrap();
    let m = s.app.metrics.clone();
    eventually(|| m.derivatives_built.get() == 2).await;
    s.app.db.guard_copies(&other).await.unwrap();
    let report = imgedge::housekeeping::sweep(&s.app, later).await.unwrap();
    assert_eq!(report.deletions, 0, "nothing removed");
    assert!(s.app.storage.head(&other).await.is_ok());
    assert!(s.app.storage.head(&other.derivative(256)).await.is_ok());
    assert_eq!(s.app.db.deletion_backlog().await.unwrap(), 0);
    s.stop().await;
}

/// A render from a reduced copy scores like the same render from the original, at the same
/// bytes: both are scored (SSIMULACRA2) against one reference, a resize of the full
/// decode of the original.
#[tokio::test]
async fn a_render_from_a_copy_scores_like_one_from_the_original() {
    use imgedge::imaging::{auto_quality, stages};
    let (s, key) = landscape_with_copies().await;
    let m = s.app.metrics.clone();
    eventually(|| m.derivative_backlog.get() == 0).await;
    let original = fixture("landscape.jpg");
    let info = imaging::probe(&original).unwrap();
    let full = stages::decode(&original, &info, 1, imaging::Precision::Full, 1 << 28)
        .unwrap()
        .image;
    for (n, options) in [
        "fit-in/100x0",
        "fit-in/120x80/filters:quality(60)",
        "fit-in/110x0/filters:format(webp)",
        "fit-in/100x0/filters:quality(auto)",
    ]
    .into_iter()
    .enumerate()
    {
        let path = format!("/{options}/{key}");
        let served = s.get(&path).await;
        assert_eq!(served.status, 200, "{path}");
        assert_eq!(
            m.derivative_renders.get(),
            n as u64 + 1,
            "{path} is from a copy"
        );
        let direct = render_original(&original, &path);
        let (a, b) = (
            served.image(),
            image::load_from_memory(&direct.bytes).unwrap(),
        );
        assert_eq!(a.dimensions(), b.dimensions(), "{path}");
        let (w, h) = a.dimensions();
        let reference = stages::resize(&full, stages::CropBox::whole(&full), Size::new(w, h))
            .unwrap()
            .to_rgb8();
        let from_copy = auto_quality::score_pixels(&reference, &a.to_rgb8()).unwrap();
        let from_original = auto_quality::score_pixels(&reference, &b.to_rgb8()).unwrap();
        // No worse than from the original, within noise (the copy may score higher: its
        // resize starts from pixels DCT scaling did not make). The bench photos at W1/W2
        // sizes are in loadtest/quality.py.
        println!("{path}: from the copy {from_copy:.2}, from the original {from_original:.2}");
        assert!(
            from_copy >= from_original - 1.0,
            "{path}: SSIMULACRA2 from the copy {from_copy:.2}, from the original {from_original:.2}"
        );
        let ratio = served.body.len() as f64 / direct.bytes.len() as f64;
        assert!(
            (0.93..=1.07).contains(&ratio),
            "{path}: bytes from the copy / from the original = {ratio:.3}"
        );
    }
    s.stop().await;
}
