//! Criterion micro-benchmarks: URL parsing, and decode → resize → encode of real photos
//! (from `../shared/bench-images`, or `IMGEDGE_BENCH_IMAGES`) for the workloads.
//!
//! Run: `cargo bench --bench pipeline` (add `-- render` to run only the render group).

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

use criterion::{Criterion, criterion_group, criterion_main};
use imgedge::edge::url;
use imgedge::imaging::{self, FormatChoice, Job, Limits};

fn bench_images() -> PathBuf {
    std::env::var_os("IMGEDGE_BENCH_IMAGES").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/bench-images"),
        PathBuf::from,
    )
}

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

fn render(c: &mut Criterion) {
    let dir = bench_images();
    let workloads = [
        (
            "w1_phone_12mp_fit300x200_q80",
            "phone_12mp.jpg",
            "/fit-in/300x200/filters:quality(80)/k",
        ),
        (
            "w1_kleiber_20mp_fit300x200_q80",
            "kleiber.jpg",
            "/fit-in/300x200/filters:quality(80)/k",
        ),
        (
            "w2_phone_12mp_fit800x0_q85",
            "phone_12mp.jpg",
            "/fit-in/800x0/filters:quality(85)/k",
        ),
        (
            "w3_storm_fit400x300_webp",
            "storm.jpg",
            "/fit-in/400x300/filters:quality(80):format(webp)/k",
        ),
        ("w4_storm_80x80_smart", "storm.jpg", "/80x80/smart/k"),
        (
            "w5_emerald_fit200x200_webp",
            "emerald_logo.png",
            "/fit-in/200x200/filters:format(webp)/k",
        ),
    ];
    let limits = Limits {
        max_source_pixels: 100_000_000,
        max_output_side: 8192,
    };
    let cancel = AtomicBool::new(false);
    let mut group = c.benchmark_group("render");
    group.sample_size(10);
    for (name, file, path) in workloads {
        let Ok(bytes) = std::fs::read(dir.join(file)) else {
            eprintln!("skipping {name}: {} not found", dir.join(file).display());
            continue;
        };
        let parsed = url::parse(path).expect("benchmark URLs parse");
        group.bench_function(name, |b| {
            b.iter(|| {
                imaging::render(&Job {
                    bytes: &bytes,
                    recipe: &parsed.recipe,
                    output: FormatChoice::Auto {
                        webp: false,
                        avif: false,
                    },
                    default_quality: 80,
                    limits: &limits,
                    cancel: &cancel,
                    reduced: None,
                    share: None,
                })
                .expect("benchmark render succeeds")
            })
        });
    }
    group.finish();
}

criterion_group!(benches, parse, render);
criterion_main!(benches);
