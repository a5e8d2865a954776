//! Criterion micro-benchmarks on real photos (from `../shared/bench-images`, or
//! `IMGEDGE_BENCH_IMAGES`):
//! - `parse`: URL parsing;
//! - `decode`: per format, and for JPEG per shrink-on-load scale (1, 1/2, 1/4, 1/8),
//!   baseline and progressive;
//! - `resize`: a 12 MP photo decoded at 1/2 to 300x225, per convolution filter, and through
//!   our `resize` (which picks the filter by factor);
//! - `encode`: an 800x533 photo per output format;
//! - `render`: the full pipeline per workload (W1–W5 of issue 5, every file), from the
//!   original, and W1/W2 from the reduced copies the derivative builder makes;
//! - `auto`: what `quality(auto)` adds to the encode of a W1/W2 (JPEG) and W3 (WebP) output:
//!   the fixed-quality encode against the search plus its final encode.
//!
//! Run: `cargo bench --bench pipeline` (add `-- render/w1` to run only matching ones).

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use fast_image_resize::images::Image;
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};
use imgedge::edge::negotiate::{Policy, negotiate};
use imgedge::edge::url;
use imgedge::imaging::stages::{CropBox, decode, encode, resize};
use imgedge::imaging::{
    self, Format, Job, Limits, Original, Precision, Pyramid, Size, build_pyramid, probe,
};

#[allow(clippy::disallowed_methods)] // the benchmark's own knob, not a setting
fn bench_images() -> PathBuf {
    std::env::var_os("IMGEDGE_BENCH_IMAGES").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/bench-images"),
        PathBuf::from,
    )
}

fn read(file: &str) -> Option<Vec<u8>> {
    let path = bench_images().join(file);
    match std::fs::read(&path) {
        Ok(bytes) => Some(bytes),
        Err(_) => {
            eprintln!("skipping {file}: {} not found", path.display());
            None
        }
    }
}

const MAX_ALLOC: u64 = 1 << 31;
const LARGE: [&str; 5] = [
    "kleiber.jpg",
    "seeding.jpg",
    "dragonfly.jpg",
    "sunset.jpg",
    "phone_12mp.jpg",
];
const MEDIUM: [&str; 4] = ["storm.jpg", "raindrops.jpg", "dune.jpg", "brushes.jpg"];
const ALPHA: [&str; 3] = ["emerald_logo.png", "swirlaxy.png", "camera_icon.png"];

fn parse(c: &mut Criterion) {
    let urls = [
        "/fit-in/300x200/filters:quality(80)/photos/2024/a.jpg",
        "/unsafe/10x20:300x400/-300x-200/left/top/smart/filters:format(webp):blur(2,1.5):round_corner(20|10,255,255,255)/some%20key/with/slashes.png",
        "/meta/trim:bottom-right:10/full-fit-in/origx0/filters:fill(blur):focal(10x10:20x20)/k.jpg",
    ];
    let mut group = c.benchmark_group("parse");
    for (i, u) in urls.iter().enumerate() {
        group.bench_function(format!("url{i}"), |b| {
            b.iter(|| url::parse(std::hint::black_box(u)))
        });
    }
    group.finish();
}

fn decoding(c: &mut Criterion) {
    let mut group = c.benchmark_group("decode");
    group.sample_size(10);
    // Baseline 4:2:0 and progressive 4:2:0 JPEGs at every DCT scale.
    for file in ["phone_12mp.jpg", "seeding.jpg"] {
        let Some(bytes) = read(file) else { continue };
        let info = probe(&bytes).unwrap();
        for shrink in [1u32, 2, 4, 8] {
            group.bench_with_input(
                BenchmarkId::new(file, format!("1/{shrink}")),
                &shrink,
                |b, &s| b.iter(|| decode(&bytes, &info, s, Precision::Full, MAX_ALLOC).unwrap()),
            );
        }
    }
    for file in ["emerald_logo.png", "kite_small.webp", "tcltk_logo.gif"] {
        let Some(bytes) = read(file) else { continue };
        let info = probe(&bytes).unwrap();
        group.bench_function(file, |b| {
            b.iter(|| decode(&bytes, &info, 1, Precision::Full, MAX_ALLOC).unwrap())
        });
    }
    group.finish();
}

fn resizing(c: &mut Criterion) {
    let Some(bytes) = read("phone_12mp.jpg") else {
        return;
    };
    let info = probe(&bytes).unwrap();
    let src = decode(&bytes, &info, 2, Precision::Full, MAX_ALLOC)
        .unwrap()
        .image;
    let rgb = src.to_rgb8();
    let (w, h) = rgb.dimensions();
    let mut group = c.benchmark_group("resize");
    group.sample_size(20);
    let filters = [
        ("lanczos3", FilterType::Lanczos3),
        ("catmull_rom", FilterType::CatmullRom),
        ("bilinear", FilterType::Bilinear),
        ("box", FilterType::Box),
    ];
    for (name, filter) in filters {
        group.bench_function(format!("{w}x{h}_to_300x225_{name}"), |b| {
            let from =
                fast_image_resize::images::ImageRef::new(w, h, rgb.as_raw(), PixelType::U8x3)
                    .unwrap();
            let mut resizer = Resizer::new();
            let options = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(filter));
            b.iter(|| {
                let mut to = Image::new(300, 225, PixelType::U8x3);
                resizer.resize(&from, &mut to, &options).unwrap();
                to
            })
        });
    }
    for (tw, th) in [(300, 225), (800, 600), (1200, 900)] {
        group.bench_function(format!("ours_{w}x{h}_to_{tw}x{th}"), |b| {
            b.iter(|| resize(&src, CropBox::whole(&src), Size::new(tw, th)).unwrap())
        });
    }
    group.finish();
}

fn encoding(c: &mut Criterion) {
    let Some(bytes) = read("sunset.jpg") else {
        return;
    };
    let info = probe(&bytes).unwrap();
    let src = decode(&bytes, &info, 4, Precision::Full, MAX_ALLOC)
        .unwrap()
        .image;
    let image = resize(&src, CropBox::whole(&src), Size::new(800, 533)).unwrap();
    let mut group = c.benchmark_group("encode");
    group.sample_size(10);
    for (format, quality) in [
        (Format::Jpeg, 80),
        (Format::Webp, 80),
        (Format::Png, 0),
        (Format::Avif, 80),
    ] {
        group.bench_function(format!("800x533_{}", format.name()), |b| {
            b.iter(|| encode(&image, format, quality).unwrap())
        });
    }
    group.finish();
}

fn job(bytes: &[u8], recipe: &imaging::Recipe, reduced: Option<Original>, limits: &Limits) -> Job {
    Job {
        bytes: Bytes::copy_from_slice(bytes),
        recipe: recipe.clone(),
        // As the edge picks it for a client that sends no Accept.
        output: negotiate(
            recipe,
            None,
            Policy {
                auto_webp: false,
                auto_avif: false,
            },
        )
        .choice,
        default_quality: imgedge::imaging::Quality::Fixed(80),
        auto_quality_target: imgedge::imaging::auto_quality::AutoTarget::default(),
        tuning: imgedge::imaging::Tuning::default(),
        limits: limits.clone(),
        reduced,
        overlays: Vec::new(),
    }
}

fn render(c: &mut Criterion) {
    let workloads: [(&str, &[&str], &str); 5] = [
        ("w1", &LARGE, "/fit-in/300x200/filters:quality(80)/k"),
        ("w2", &LARGE, "/fit-in/800x0/filters:quality(85)/k"),
        (
            "w3",
            &MEDIUM,
            "/fit-in/400x300/filters:quality(80):format(webp)/k",
        ),
        ("w4", &MEDIUM, "/80x80/smart/k"),
        ("w5", &ALPHA, "/fit-in/200x200/filters:format(webp)/k"),
    ];
    let limits = Limits::default();
    let cancel = AtomicBool::new(false);
    // The copies a server on the embedded defaults builds, so that the `_from_d*` rows use
    // the copy the edge itself would pick.
    let sizes = imgedge::config::Config::default().derivative_sizes();
    let mut group = c.benchmark_group("render");
    group.sample_size(10);
    for (name, files, path) in workloads {
        let recipe = url::parse(path).expect("benchmark URLs parse").recipe;
        for file in files {
            let Some(bytes) = read(file) else { continue };
            let from_original = job(&bytes, &recipe, None, &limits);
            group.bench_function(BenchmarkId::new(name, file), |b| {
                b.iter(|| imaging::render(&from_original).unwrap())
            });
            if name != "w1" && name != "w2" {
                continue;
            }
            // The same render from the reduced copy the edge would pick.
            let (pyramid, levels) = build_pyramid(&bytes, &sizes, &limits, &cancel)
                .unwrap()
                .unwrap();
            let Some(level) = pyramid.level_for(&recipe, limits.max_output_side) else {
                continue;
            };
            let copy = &levels.iter().find(|l| l.size == level).unwrap().bytes;
            let reduced = Some(pyramid.original());
            let id = format!("{name}_from_d{}", Pyramid::long_edge(level));
            let from_copy = job(copy, &recipe, reduced, &limits);
            group.bench_function(BenchmarkId::new(id, file), |b| {
                b.iter(|| imaging::render(&from_copy).unwrap())
            });
        }
    }
    group.finish();
}

fn auto(c: &mut Criterion) {
    use imgedge::imaging::Tuning;
    use imgedge::imaging::auto_quality::{AutoTarget, choose};
    let targets: [(&str, &[&str], u32, u32, Format); 3] = [
        ("w1", &LARGE[..2], 300, 200, Format::Jpeg),
        ("w2", &LARGE[..2], 800, 0, Format::Jpeg),
        ("w3", &MEDIUM[..2], 400, 300, Format::Webp),
    ];
    let aim = AutoTarget::default();
    let mut group = c.benchmark_group("auto");
    group.sample_size(10);
    for (name, files, w, h, format) in targets {
        for file in files {
            let Some(bytes) = read(file) else { continue };
            let info = probe(&bytes).unwrap();
            let src = decode(&bytes, &info, 1, Precision::Full, MAX_ALLOC)
                .unwrap()
                .image;
            // The output size of `fit-in/WxH` (H 0: by width only).
            let (sw, sh) = (src.width() as f64, src.height() as f64);
            let scale = match h {
                0 => w as f64 / sw,
                _ => (w as f64 / sw).min(h as f64 / sh),
            };
            let size = Size::new((sw * scale).round() as u32, (sh * scale).round() as u32);
            let image = resize(&src, CropBox::whole(&src), size).unwrap();
            group.bench_function(BenchmarkId::new(format!("{name}_fixed"), file), |b| {
                b.iter(|| encode(&image, format, 80).unwrap())
            });
            group.bench_function(BenchmarkId::new(format!("{name}_auto"), file), |b| {
                b.iter(|| {
                    let chosen = choose(
                        &image,
                        format,
                        aim.for_format(format),
                        Tuning::default(),
                        None,
                    )
                    .unwrap()
                    .unwrap();
                    encode(&image, format, chosen.quality).unwrap()
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, parse, decoding, resizing, encoding, render, auto);
criterion_main!(benches);
