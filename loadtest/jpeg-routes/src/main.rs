//! Bytes at equal SSIMULACRA2 for JPEG encoder routes (issue 20): each photo of the bench
//! corpus is resized (Lanczos3) to the W1 (fit-in 300x200) and W2 (800 wide) sizes, encoded
//! by every route over a quality sweep, decoded and scored against the resized pixels.
//! Prints `file, target, route, quality, bytes, score, encode ms` rows; `analyse.py` turns
//! them into bytes at libjpeg-turbo q80's score, per route.
//!
//! ROUTES (comma-separated, default all): turbo, moz, moz_trellis, moz_prog, moz_max,
//! jpegli420, jpegli444, jpegli420prog, jpegli444prog. BENCH_IMAGES: the corpus directory.

use std::time::Instant;

use fast_ssim2::{PixelDescriptor, PixelSlice, compute_ssimulacra2};
use image::RgbImage;
use mozjpeg_rs::{Encoder, TrellisConfig};

const ROUTES: &str = "turbo,moz,moz_trellis,moz_prog,moz_max,jpegli420,jpegli444,jpegli420prog,jpegli444prog";

fn slice(i: &RgbImage) -> PixelSlice<'_> {
    let (w, h) = i.dimensions();
    PixelSlice::new(i.as_raw(), w, h, w as usize * 3, PixelDescriptor::RGB8_SRGB).unwrap()
}

fn score(a: &RgbImage, b: &RgbImage) -> f64 {
    compute_ssimulacra2(&slice(a), &slice(b)).unwrap()
}

fn turbo(img: &RgbImage, q: u8) -> Vec<u8> {
    let mut c = turbojpeg::Compressor::new().unwrap();
    c.set_quality(i32::from(q)).unwrap();
    c.set_subsamp(turbojpeg::Subsamp::Sub2x2).unwrap();
    c.set_optimize(true).unwrap();
    let (w, h) = img.dimensions();
    c.compress_to_vec(turbojpeg::Image {
        pixels: img.as_raw().as_slice(),
        width: w as usize,
        pitch: w as usize * 3,
        height: h as usize,
        format: turbojpeg::PixelFormat::RGB,
    })
    .unwrap()
}

fn moz(img: &RgbImage, q: u8, route: &str) -> Vec<u8> {
    let (w, h) = img.dimensions();
    let encoder = match route {
        "moz" => Encoder::baseline_optimized().trellis(TrellisConfig::disabled()),
        "moz_trellis" => Encoder::baseline_optimized(),
        "moz_prog" => Encoder::progressive_balanced(),
        "moz_max" => Encoder::max_compression(),
        other => panic!("unknown route {other}"),
    };
    encoder.quality(q).encode_rgb(img.as_raw(), w, h).unwrap()
}

fn jpegli(img: &RgbImage, q: u8, route: &str) -> Vec<u8> {
    let (w, h) = img.dimensions();
    let mut c = jpegli::Compress::new(jpegli::ColorSpace::JCS_RGB);
    c.set_size(w as usize, h as usize);
    c.set_quality(f32::from(q));
    let sub = if route.contains("420") { (2, 2) } else { (1, 1) };
    c.set_chroma_sampling_pixel_sizes(sub, sub);
    if route.ends_with("prog") {
        c.set_progressive_mode();
    }
    c.set_optimize_coding(true);
    let mut started = c.start_compress(Vec::new()).unwrap();
    started.write_scanlines(img.as_raw()).unwrap();
    started.finish().unwrap()
}

fn main() {
    let dir = std::env::var("BENCH_IMAGES").unwrap_or_else(|_| "/work/shared/bench-images".into());
    let routes = std::env::var("ROUTES").unwrap_or_else(|_| ROUTES.into());
    let files: Vec<String> = std::env::args().skip(1).collect();
    for f in &files {
        let full = image::open(format!("{dir}/{f}")).unwrap();
        let (w, h) = (full.width(), full.height());
        for (tw, th) in [(300u32, 200u32), (800, 0)] {
            let (ow, oh) = if th == 0 {
                (tw, (f64::from(h) * f64::from(tw) / f64::from(w)).round() as u32)
            } else {
                let s = (f64::from(tw) / f64::from(w)).min(f64::from(th) / f64::from(h));
                ((f64::from(w) * s).round() as u32, (f64::from(h) * s).round() as u32)
            };
            let small = full
                .resize_exact(ow, oh, image::imageops::FilterType::Lanczos3)
                .to_rgb8();
            for route in routes.split(',') {
                for q in (30..=95).step_by(5) {
                    let started = Instant::now();
                    let out = match route {
                        "turbo" => turbo(&small, q),
                        r if r.starts_with("jpegli") => jpegli(&small, q, r),
                        r => moz(&small, q, r),
                    };
                    let ms = started.elapsed().as_secs_f64() * 1000.0;
                    let decoded = image::load_from_memory(&out).unwrap().to_rgb8();
                    let s = score(&small, &decoded);
                    println!("{f}\t{tw}x{th}\t{route}\t{q}\t{}\t{s:.3}\t{ms:.2}", out.len());
                }
            }
        }
    }
}
