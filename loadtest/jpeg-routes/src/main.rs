//! Bytes at equal SSIMULACRA2 for JPEG encoder routes (issue 20): each photo of the bench
//! corpus is resized (Lanczos3) to the W1 (fit-in 300x200) and W2 (800 wide) sizes, encoded
//! by every route over a quality sweep, decoded and scored against the resized pixels.
//! Prints `file, target, route, quality, bytes, score, encode ms` rows; `analyse.py` turns
//! them into bytes at libjpeg-turbo q80's score, per route.
//!
//! ROUTES (comma-separated, default all): turbo, moz, moz_trellis, moz_prog, moz_max,
//! jpegli420, jpegli444, jpegli420prog, jpegli444prog, and jpegli's own API through
//! jpegli-sys: jpegli444raw (what jpegli444 does, as a check of this path), jpegli444dist
//! and jpegli444distprog (`jpegli_set_distance` at the quality's distance: separate Cb and
//! Cr tables, as cjpegli; `jpegli_set_quality` shares the Cr table for both), and
//! jpegli444stdprog (the standard Annex K tables with adaptive quantisation).
//! WebP routes (libwebp through the webp crate, decoded by libwebp as browsers do): `webp`
//! (method 4, libwebp's defaults: what imgedge and sharp use) and `webp_<option>_...` with
//! options `m<method>`, `sns<strength>`, `f<filter strength>`, `sh<filter sharpness>`, `af`
//! (autofilter), `syuv` (sharp RGB->YUV), `seg<segments>`, `pre` (segment smoothing), `p<passes>`.
//! SIZES (comma-separated `WxH`, `Wx0` for a width; default `300x200,800x0`).
//! QSTEP: the sweep's step over 30..=95 (default 5; the anchor's 80 must be on it).
//! BENCH_IMAGES: the corpus directory.

use std::time::Instant;

use fast_ssim2::{compute_ssimulacra2, PixelDescriptor, PixelSlice};
use image::RgbImage;
use jpegli_sys as sys;
use mozjpeg_rs::{Encoder, TrellisConfig};

const ROUTES: &str =
    "turbo,moz,moz_trellis,moz_prog,moz_max,jpegli420,jpegli444,jpegli420prog,jpegli444prog,\
jpegli444raw,jpegli444dist,jpegli444distprog,jpegli444stdprog";

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
    let sub = if route.contains("420") {
        (2, 2)
    } else {
        (1, 1)
    };
    c.set_chroma_sampling_pixel_sizes(sub, sub);
    if route.ends_with("prog") {
        c.set_progressive_mode();
    }
    c.set_optimize_coding(true);
    let mut started = c.start_compress(Vec::new()).unwrap();
    started.write_scanlines(img.as_raw()).unwrap();
    started.finish().unwrap()
}

// In jpegli's static library (lib/jpegli/encode.h) but not declared by jpegli-sys 0.1.
extern "C" {
    fn jpegli_set_distance(
        cinfo: *mut sys::jpegli_compress_struct,
        distance: f32,
        force_baseline: sys::boolean,
    );
    fn jpegli_quality_to_distance(quality: std::os::raw::c_int) -> f32;
    fn jpegli_use_standard_quant_tables(cinfo: *mut sys::jpegli_compress_struct);
}

/// jpegli through its C API: 4:4:4, optimised Huffman tables; `route` picks the tables.
fn jpegli_raw(img: &RgbImage, q: u8, route: &str) -> Vec<u8> {
    let (w, h) = img.dimensions();
    // SAFETY: the libjpeg calling sequence on zeroed structs that outlive it; jpegli's
    // standard error handler exits the process on error (a benchmark may).
    unsafe {
        let mut err: sys::jpegli_error_mgr = std::mem::zeroed();
        let mut cinfo: sys::jpegli_compress_struct = std::mem::zeroed();
        cinfo.common.err = sys::jpegli_std_error(&mut err);
        sys::jpegli_create_compress(&mut cinfo);
        let mut buf: *mut u8 = std::ptr::null_mut();
        let mut size: std::os::raw::c_ulong = 0;
        sys::jpegli_mem_dest(&mut cinfo, &mut buf, &mut size);
        cinfo.image_width = w;
        cinfo.image_height = h;
        cinfo.input_components = 3;
        cinfo.in_color_space = sys::J_COLOR_SPACE::JCS_RGB;
        if route.contains("std") {
            jpegli_use_standard_quant_tables(&mut cinfo);
        }
        sys::jpegli_set_defaults(&mut cinfo);
        if route.contains("dist") {
            jpegli_set_distance(&mut cinfo, jpegli_quality_to_distance(i32::from(q)), 0);
        } else {
            sys::jpegli_set_quality(&mut cinfo, i32::from(q), 0);
        }
        // "_c1.25": chroma table scaled by 1.25; "_h0.3": luma table scaled by 1 + 0.3 *
        // (row + column) / 14, coarser towards high frequencies.
        for part in route.split('_').skip(1) {
            let (what, factor) = part.split_at(1);
            let factor: f64 = factor.parse().expect("a factor");
            let (table, tilt) = match what {
                "c" => (1, false),
                "h" => (0, true),
                other => panic!("unknown table tweak {other}"),
            };
            let t = &mut *cinfo.quant_tbl_ptrs[table];
            for (k, v) in t.quantval.iter_mut().enumerate() {
                let scale = if tilt {
                    1.0 + factor * ((k / 8 + k % 8) as f64) / 14.0
                } else {
                    factor
                };
                *v = (f64::from(*v) * scale).round().clamp(1.0, 255.0) as u16;
            }
        }
        for c in 0..3 {
            let comp = &mut *cinfo.comp_info.add(c);
            comp.h_samp_factor = 1;
            comp.v_samp_factor = 1;
        }
        if route.contains("prog") {
            sys::jpegli_simple_progression(&mut cinfo);
        }
        cinfo.optimize_coding = 1;
        sys::jpegli_start_compress(&mut cinfo, 1);
        let stride = w as usize * 3;
        for row in img.as_raw().chunks(stride) {
            let ptr = row.as_ptr();
            sys::jpegli_write_scanlines(&mut cinfo, &ptr, 1);
        }
        sys::jpegli_finish_compress(&mut cinfo);
        let out = std::slice::from_raw_parts(buf, size as usize).to_vec();
        sys::jpegli_destroy_compress(&mut cinfo);
        libc_free(buf.cast());
        out
    }
}

/// libwebp with `route`'s options over its defaults (see the module comment).
fn webp(img: &RgbImage, q: u8, route: &str) -> Vec<u8> {
    let (w, h) = img.dimensions();
    let mut config = webp::WebPConfig::new().unwrap();
    config.quality = f32::from(q);
    config.method = 4;
    for part in route.split('_').skip(1) {
        let digits = part.trim_start_matches(|c: char| c.is_ascii_alphabetic());
        let name = &part[..part.len() - digits.len()];
        let n = || digits.parse::<i32>().expect("a number");
        match name {
            "m" => config.method = n(),
            "sns" => config.sns_strength = n(),
            "f" => config.filter_strength = n(),
            "sh" => config.filter_sharpness = n(),
            "af" => config.autofilter = 1,
            "syuv" => config.use_sharp_yuv = 1,
            "seg" => config.segments = n(),
            "pre" => config.preprocessing = 1,
            "p" => config.pass = n(),
            other => panic!("unknown WebP option {other}"),
        }
    }
    webp::Encoder::from_rgb(img.as_raw(), w, h)
        .encode_advanced(&config)
        .unwrap()
        .to_vec()
}

fn decode(out: &[u8]) -> RgbImage {
    if out.starts_with(b"RIFF") {
        let d = webp::Decoder::new(out).decode().unwrap();
        assert!(!d.is_alpha());
        return RgbImage::from_raw(d.width(), d.height(), d.to_vec()).unwrap();
    }
    image::load_from_memory(out).unwrap().to_rgb8()
}

extern "C" {
    #[link_name = "free"]
    fn libc_free(p: *mut std::ffi::c_void);
}

fn main() {
    let dir = std::env::var("BENCH_IMAGES").unwrap_or_else(|_| "/work/shared/bench-images".into());
    let routes = std::env::var("ROUTES").unwrap_or_else(|_| ROUTES.into());
    let sizes = std::env::var("SIZES").unwrap_or_else(|_| "300x200,800x0".into());
    let sizes: Vec<(u32, u32)> = sizes
        .split(',')
        .map(|s| {
            let (a, b) = s.split_once('x').expect("WxH");
            (a.parse().unwrap(), b.parse().unwrap())
        })
        .collect();
    let qstep: usize = std::env::var("QSTEP").map_or(5, |s| s.parse().expect("QSTEP: a step"));
    let files: Vec<String> = std::env::args().skip(1).collect();
    for f in &files {
        let full = image::open(format!("{dir}/{f}")).unwrap();
        let (w, h) = (full.width(), full.height());
        for &(tw, th) in &sizes {
            let (ow, oh) = if th == 0 {
                (
                    tw,
                    (f64::from(h) * f64::from(tw) / f64::from(w)).round() as u32,
                )
            } else {
                let s = (f64::from(tw) / f64::from(w)).min(f64::from(th) / f64::from(h));
                (
                    (f64::from(w) * s).round() as u32,
                    (f64::from(h) * s).round() as u32,
                )
            };
            let small = full
                .resize_exact(ow, oh, image::imageops::FilterType::Lanczos3)
                .to_rgb8();
            for route in routes.split(',') {
                for q in (30..=95).step_by(qstep) {
                    let started = Instant::now();
                    let out = match route {
                        "turbo" => turbo(&small, q),
                        r if r.starts_with("jpegli444")
                            && r != "jpegli444"
                            && r != "jpegli444prog" =>
                        {
                            jpegli_raw(&small, q, r)
                        }
                        r if r.starts_with("jpegli") => jpegli(&small, q, r),
                        r if r.starts_with("webp") => webp(&small, q, r),
                        r => moz(&small, q, r),
                    };
                    let ms = started.elapsed().as_secs_f64() * 1000.0;
                    let decoded = decode(&out);
                    let s = score(&small, &decoded);
                    println!(
                        "{f}\t{tw}x{th}\t{route}\t{q}\t{}\t{s:.3}\t{ms:.2}",
                        out.len()
                    );
                }
            }
        }
    }
}
