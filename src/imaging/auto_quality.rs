//! `quality(auto)`: per image, the lowest quality whose output reaches a perceptual score.
//!
//! The score is SSIMULACRA2 (`fast-ssim2`) of the decoded output against the pixels that
//! were encoded. It is measured on a sample: the whole output up to `WHOLE_PIXELS`
//! (800x600), otherwise a mosaic of `TILE`-pixel tiles taken on an even grid, each aligned
//! to the 16-pixel macroblock grid, which aims `MOSAIC_AIM` higher (a mosaic scores high).
//! Scoring costs more than encoding (30-40 ms for an 800x533 sample against 3 ms for its
//! JPEG), so the search measures once and predicts: it encodes the sample at a probe
//! quality (`PROBE_JPEG`, `PROBE_WEBP`), scores it, and takes the image's distortion
//! (100 - score) as the bench corpus's mean curve (`MEAN_JPEG`, `MEAN_WEBP`, or
//! `MEAN_WEBP_SHARP_YUV` with that tuning) scaled by the factor that probe measured; the
//! answer is the lowest quality predicted to reach the target plus a margin (`AIM_JPEG`,
//! `AIM_WEBP`). A prediction more than `FAR` steps from the probe is probed too, and
//! predicted again from both probes (the factor running linearly between them), which
//! follows images unlike the photos (graphics). The probes' bounds hold: never above a
//! probe that reached the target, never at or below one that fell short. The chosen
//! quality is encoded unmeasured unless it is a probe's ([`measure`] scores it; `meta/`
//! does). Everything is deterministic: the same pixels give the same quality.
//!
//! AVIF probes are decoded with libaom's decoder (`aom-decode`; image's `avif-native`
//! needs a newer dav1d than Debian 12 has) and aim at the JPEG target.

use std::sync::atomic::{AtomicBool, Ordering};

use fast_ssim2::{PixelDescriptor, PixelSlice, Ssimulacra2Reference};
use image::{DynamicImage, GenericImageView, RgbImage};

use super::ImagingError;
use super::encode::{self, Tuning};
use super::probe::SourceFormat;
use super::recipe::Format;

/// The scores `quality(auto)` aims for, per output format (a quality means different things
/// in each: sharp's and Thumbor's fixed q80 give JPEGs scoring 77-84 on the bench photos and
/// WebPs 72-77).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AutoTarget {
    /// JPEG and AVIF: `auto_quality_target`.
    pub jpeg: f64,
    /// WebP: `auto_quality_target_webp`.
    pub webp: f64,
}

impl AutoTarget {
    pub fn for_format(&self, format: Format) -> f64 {
        match format {
            Format::Webp => self.webp,
            _ => self.jpeg,
        }
    }
}

impl Default for AutoTarget {
    /// SSIMULACRA2 79 for JPEG and 72 for WebP: at or above the worst bench photo of sharp's
    /// fixed quality 80 in each format (JPEG 76.7 at fit-in/300x200 and 78.5 at 800 wide,
    /// WebP 71.8 at 400x300; `loadtest/quality.py`).
    fn default() -> Self {
        AutoTarget {
            jpeg: DEFAULT_TARGET,
            webp: DEFAULT_TARGET_WEBP,
        }
    }
}

/// The default `auto_quality_target` (see `AutoTarget::default`).
pub const DEFAULT_TARGET: f64 = 79.0;
/// The default `auto_quality_target_webp`.
pub const DEFAULT_TARGET_WEBP: f64 = 72.0;
/// `auto_quality_target` accepts this range (below 30 images are visibly broken; above
/// 90 the search would rarely stop short of its highest quality).
pub const TARGET_RANGE: std::ops::RangeInclusive<f64> = 30.0..=90.0;
/// The search stays within these qualities. 90 is the highest at which a decode may skip
/// the last bit of a fine progressive JPEG (`render::VISIBLE_MAX_QUALITY`).
pub const LOWEST: u8 = 30;
pub const HIGHEST: u8 = 90;
/// The quality of the first probe, per format: near where the bench photos reach the
/// default targets (JPEG 61-83, WebP 72-82), so that predictions are short.
const PROBE_JPEG: u8 = 75;
const PROBE_WEBP: u8 = 80;
/// AVIF (rav1e through ravif): the bench photos reach 79 at 75-88.
const PROBE_AVIF: u8 = 80;
/// Predictions aim this far above the target: a prediction is served without being measured,
/// and the score is not smooth in quality (+-0.5 between neighbours in JPEG, +-1.5 in WebP).
/// With these margins every bench photo's served score reached the target (worst 79.0 W1,
/// 79.6 W2, 73.2 W3 in `loadtest/quality.py`; 79.4 / 79.5 / 72.3 when each photo was
/// predicted from a mean curve of the others).
const AIM_JPEG: f64 = 0.5;
const AIM_WEBP: f64 = 1.0;
/// AVIF's curve bends between 80 and 85, where the table is straight: at 0.5 two of the
/// four W3 photos were served at 78.4 and 78.9, at 1.5 all at 80.1 or more (replayed by
/// `loadtest/auto-sim.py --target AVIF` on a sweep by 1, `quality-20261208-004757.json`).
const AIM_AVIF: f64 = 1.5;
/// A prediction further than this many steps from the probe is probed itself (the model is
/// least sure far from its measurement).
const FAR: u8 = 10;
/// Probes (an encode, a decode and a score of the sample each), at most.
const TRIES: usize = 2;
/// Mean SSIMULACRA2 of the bench photos' outputs at qualities 40, 45, ..., 95 (imgedge's
/// own renders, scored against its lossless render of the same URL): JPEG over W1
/// (fit-in/300x200) and W2 (800 wide), WebP over W3 (fit-in/400x300). From
/// `python3 loadtest/auto-model.py loadtest/results/quality-20261207-182747.json` (results
/// files are not committed; the renders and scores are deterministic, and the run at
/// a86411d gave the same table to the last digit).
const MEAN_JPEG: [f64; 12] = [
    68.46, 69.96, 71.73, 72.99, 75.02, 76.38, 78.30, 80.00, 82.16, 84.51, 87.66, 91.27,
];
const MEAN_WEBP: [f64; 12] = [
    55.60, 58.34, 60.82, 62.81, 65.17, 67.05, 68.50, 70.03, 74.54, 78.32, 82.14, 84.84,
];
/// WebP with `webp_sharp_yuv` over the same photos: higher at every quality, and bent
/// differently (with the plain table its predictions served 71.3 at worst against the 72
/// target). From `python3 loadtest/quality.py --targets W3 --no-thumbor --imgedge-env
/// IMGEDGE_WEBP_SHARP_YUV=true --qualities 30:95:1` (`quality-20261208-025416.json`), every
/// fifth quality of the sweep.
const MEAN_WEBP_SHARP_YUV: [f64; 12] = [
    57.43, 59.87, 61.87, 64.73, 66.71, 68.56, 69.79, 72.08, 77.14, 80.59, 84.75, 88.38,
];
/// AVIF (imgedge's rav1e encoder, 10 bits, decoded by libaom) over the W3 photos at
/// fit-in/400x300, from `python3 loadtest/quality.py --targets AVIF --no-thumbor`
/// (`quality-20261208-004053.json`).
const MEAN_AVIF: [f64; 12] = [
    50.85, 55.26, 59.98, 63.51, 66.42, 70.06, 72.60, 74.87, 77.40, 83.02, 88.16, 93.01,
];
/// Side of a mosaic tile; a multiple of 16 (JPEG and WebP macroblocks).
const TILE: u32 = 128;
/// Outputs up to this many pixels (800x600) are scored whole; larger ones by a mosaic of
/// about `MOSAIC_PIXELS`. Mosaics score high: on the W2 photos at 800 wide, 8 tiles of
/// 128 scored -0.5..+3.7 above the whole image, 16 of 64 up to +4.7, 2 of 256 -3.1..+5.4
/// (the pooled score is led by the worst regions, which a sample can miss); hence
/// `MOSAIC_AIM`. Scoring is most of the search's cost (about 4 ms for 300x200, 30 ms for
/// 800x533).
const WHOLE_PIXELS: u32 = 800 * 600;
const MOSAIC_PIXELS: u32 = 8 * TILE * TILE;
/// What a mosaic aims above the target, on top of `AIM_JPEG` or `AIM_WEBP`.
const MOSAIC_AIM: f64 = 3.0;
/// Memory per sample pixel while scoring: the sample, its encode and decode, and
/// SSIMULACRA2's planes for both images at six scales. Measured with `imgedge score`: peak
/// RSS 76 MB at 800x450 and 207 MB at 1600x900, about 140 bytes per pixel.
const SCORE_BYTES_PER_PIXEL: u64 = 150;

/// What reading an AVIF probe back adds per sample pixel: libaom's 10-bit frame (4:4:4,
/// 6 bytes), its 16-bit RGB conversion (6) and the 8-bit copy (3).
const AVIF_DECODE_BYTES_PER_PIXEL: u64 = 16;

/// The memory the search needs for `format` output of `pixels`, beyond the render's own
/// (nothing for the formats it does not search).
pub fn memory_need(format: Format, pixels: u64) -> u64 {
    let sample = if pixels <= u64::from(WHOLE_PIXELS) {
        pixels
    } else {
        u64::from(MOSAIC_PIXELS)
    };
    let per_pixel = match format {
        Format::Jpeg | Format::Webp => SCORE_BYTES_PER_PIXEL,
        Format::Avif => SCORE_BYTES_PER_PIXEL + AVIF_DECODE_BYTES_PER_PIXEL,
        Format::Png | Format::Gif => 0,
    };
    sample.saturating_mul(per_pixel)
}

/// What the search chose.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Chosen {
    pub quality: u8,
    /// SSIMULACRA2 of the sample at `quality` (the whole output up to 800x600) when a probe
    /// measured it; `None` when `quality` was predicted and not measured ([`measure`] gives
    /// it).
    pub score: Option<f64>,
    /// The score the model predicted for `quality` (the measured one when it was probed).
    pub predicted: f64,
    /// Probes it took (an encode and a score of the sample each).
    pub tries: usize,
}

/// The lowest quality in `LOWEST..=HIGHEST` at which `image` encoded as `format` is
/// predicted to reach SSIMULACRA2 `target`, from one probe of its sample (two when the first
/// prediction is far from the probe); `None` for the lossless formats, where quality means
/// nothing. Outputs larger than 800x600 aim `MOSAIC_AIM` higher (their sample is a mosaic).
pub fn choose(
    image: &DynamicImage,
    format: Format,
    target: f64,
    tuning: Tuning,
    cancel: Option<&AtomicBool>,
) -> Result<Option<Chosen>, ImagingError> {
    Ok(choose_encoded(image, format, target, tuning, cancel)?.map(|found| found.chosen))
}

/// What [`choose_encoded`] found.
#[derive(Debug, Clone, PartialEq)]
pub struct Found {
    pub chosen: Chosen,
    /// The output encoded at the chosen quality, when the search's sample was the output.
    pub encoded: Option<Vec<u8>>,
}

/// [`choose`], and the probe's encode when the chosen quality is a probe's and the sample
/// is the output itself (the whole image, without alpha): exactly the bytes
/// `encode::encode_tuned` gives `image` at the chosen quality with `tuning`, so the caller
/// need not encode it again.
pub fn choose_encoded(
    image: &DynamicImage,
    format: Format,
    target: f64,
    tuning: Tuning,
    cancel: Option<&AtomicBool>,
) -> Result<Option<Found>, ImagingError> {
    let (probe, aim) = match format {
        Format::Png | Format::Gif => return Ok(None),
        Format::Jpeg => (PROBE_JPEG, AIM_JPEG),
        Format::Webp => (PROBE_WEBP, AIM_WEBP),
        Format::Avif => (PROBE_AVIF, AIM_AVIF),
    };
    let whole = image.width() * image.height() <= WHOLE_PIXELS;
    let target = if whole { target } else { target + MOSAIC_AIM };
    let sample = DynamicImage::ImageRgb8(sample(image));
    // The sample's encodes are the output's when the sample is the image, pixel for pixel.
    let is_output = whole && matches!(image, DynamicImage::ImageRgb8(_));
    let rgb = sample.as_rgb8().expect("the sample is RGB8");
    let reference = Ssimulacra2Reference::new(&slice(rgb)?).map_err(scoring)?;
    let table = mean_table(format, tuning);
    let mut probes: Vec<(u8, f64, Vec<u8>)> = Vec::with_capacity(TRIES);
    let mut quality = probe;
    let (mut floor, mut ceiling) = (LOWEST, HIGHEST);
    let predicted = loop {
        if cancel.is_some_and(|c| c.load(Ordering::Relaxed)) {
            return Err(ImagingError::Cancelled);
        }
        let (bytes, score) = probe_at(&reference, &sample, format, quality, tuning)?;
        probes.push((quality, score, bytes));
        match score >= target {
            true => ceiling = ceiling.min(quality),
            false => floor = floor.max(quality.saturating_add(1)).min(HIGHEST),
        }
        let measured: Vec<(u8, f64)> = probes.iter().map(|(q, s, _)| (*q, *s)).collect();
        let (next, expected) = predict(table, &measured, target + aim, floor, ceiling);
        if probes.len() < TRIES && next.abs_diff(quality) > FAR {
            quality = next;
            continue;
        }
        break (next, expected);
    };
    let (quality, expected) = predicted;
    // A probe at the predicted quality is served as it is, with its measured score.
    let probed = probes.iter().position(|(q, _, _)| *q == quality);
    let chosen = Chosen {
        quality,
        score: probed.map(|at| probes[at].1),
        predicted: expected,
        tries: probes.len(),
    };
    let encoded = probed
        .filter(|_| is_output)
        .map(|at| probes.swap_remove(at).2);
    Ok(Some(Found { chosen, encoded }))
}

/// The lowest quality in `floor..=ceiling` predicted to score `aim`, and its predicted
/// score, from the `(quality, score)` probes measured so far: the image's distortion
/// (100 - score) is taken as the corpus mean's (`MEAN_JPEG`, `MEAN_WEBP`) scaled by a
/// factor, the one the probe measured (on the bench photos' curves this predicted better
/// than a shift of the mean curve); with two probes the factor runs linearly in quality
/// from one probe's to the other's, which follows an image whose curve has another shape
/// than a photo's (graphics). `ceiling` when nothing in range is predicted to reach it.
fn predict(table: &[f64], probes: &[(u8, f64)], aim: f64, floor: u8, ceiling: u8) -> (u8, f64) {
    let mean = |q: u8| mean_score(table, q);
    let factor_of = |&(q, s): &(u8, f64)| (100.0 - s).max(0.0) / (100.0 - mean(q)).max(1.0);
    let factor = |q: u8| match probes {
        [(qa, _), (qb, _)] if qa != qb => {
            let (ka, kb) = (factor_of(&probes[0]), factor_of(&probes[1]));
            let t = (f64::from(q) - f64::from(*qa)) / (f64::from(*qb) - f64::from(*qa));
            (ka + t * (kb - ka)).max(0.0)
        }
        _ => probes.last().map_or(1.0, factor_of),
    };
    let at = |q: u8| match probes.iter().find(|(p, _)| *p == q) {
        Some(&(_, score)) => score,
        None => 100.0 - factor(q) * (100.0 - mean(q)),
    };
    let floor = floor.min(ceiling);
    (floor..=ceiling)
        .find(|&q| at(q) >= aim)
        .map_or((ceiling, at(ceiling)), |q| (q, at(q)))
}

/// The corpus's mean curve for `format` encoded with `tuning`, at qualities 40, 45, ..., 95.
fn mean_table(format: Format, tuning: Tuning) -> &'static [f64] {
    match format {
        Format::Webp if tuning.webp_sharp_yuv => &MEAN_WEBP_SHARP_YUV,
        Format::Webp => &MEAN_WEBP,
        Format::Avif => &MEAN_AVIF,
        _ => &MEAN_JPEG,
    }
}

/// A mean curve's score at `quality` (linear between the table's steps of 5, and
/// continued with its first step's slope below 40).
fn mean_score(table: &[f64], quality: u8) -> f64 {
    let steps = (f64::from(quality) - 40.0) / 5.0;
    let below = steps.floor().clamp(0.0, (table.len() - 2) as f64) as usize;
    table[below] + (steps - below as f64) * (table[below + 1] - table[below])
}

/// SSIMULACRA2 of `image`'s sample (the whole image up to 800x600) encoded as `format` at
/// `quality`: what [`choose`] measures for its probes, for a quality it predicted.
pub fn measure(
    image: &DynamicImage,
    format: Format,
    quality: u8,
    tuning: Tuning,
) -> Result<f64, ImagingError> {
    let sample = DynamicImage::ImageRgb8(sample(image));
    let rgb = sample.as_rgb8().expect("the sample is RGB8");
    let reference = Ssimulacra2Reference::new(&slice(rgb)?).map_err(scoring)?;
    Ok(probe_at(&reference, &sample, format, quality, tuning)?.1)
}

/// The sample (an RGB8 image) encoded as `format` at `quality`, and its SSIMULACRA2 against
/// `reference` once decoded as browsers decode it.
fn probe_at(
    reference: &Ssimulacra2Reference,
    sample: &DynamicImage,
    format: Format,
    quality: u8,
    tuning: Tuning,
) -> Result<(Vec<u8>, f64), ImagingError> {
    let bytes = encode::encode_tuned(sample, format, quality, tuning)?;
    let decoded = decode(&bytes, format)?;
    let score = reference.compare(&slice(&decoded)?).map_err(scoring)?;
    Ok((bytes, score))
}

/// The pixels the score is measured on: the whole image when it is small enough,
/// otherwise a mosaic of tiles on an even grid.
fn sample(image: &DynamicImage) -> RgbImage {
    let (w, h) = image.dimensions();
    if w * h <= WHOLE_PIXELS || w < TILE || h < TILE {
        return image.to_rgb8();
    }
    let tiles = MOSAIC_PIXELS / (TILE * TILE);
    let aspect = f64::from(w) / f64::from(h);
    let across = ((f64::from(tiles) * aspect).sqrt().round() as u32).clamp(1, w / TILE);
    let down = (tiles / across).clamp(1, h / TILE);
    let mut mosaic = RgbImage::new(across * TILE, down * TILE);
    // Tile origins on the 16-pixel grid, centred in equal slices of the image.
    let origin = |i: u32, n: u32, side: u32| {
        let slack = u64::from(side - TILE);
        let at = (slack * u64::from(2 * i + 1) / u64::from(2 * n)) as u32;
        (at / 16 * 16).min(side - TILE)
    };
    let rgb = encode::rgb8(image);
    for ty in 0..down {
        for tx in 0..across {
            let (x0, y0) = (origin(tx, across, w), origin(ty, down, h));
            for y in 0..TILE {
                let from = ((y0 + y) * w + x0) as usize * 3;
                let to = ((ty * TILE + y) * across * TILE + tx * TILE) as usize * 3;
                let len = TILE as usize * 3;
                mosaic.as_mut()[to..to + len].copy_from_slice(&rgb.as_raw()[from..from + len]);
            }
        }
    }
    mosaic
}

/// SSIMULACRA2 of `distorted` against `reference`, both encoded images (JPEG, PNG or WebP)
/// of the same size; alpha is ignored. JPEG and WebP are decoded as the search decodes its
/// trials (libjpeg-turbo, libwebp), so a score of the served bytes is the score `meta/`
/// reports. For `imgedge score` and the quality benchmark.
pub fn score(reference: &[u8], distorted: &[u8]) -> Result<f64, ImagingError> {
    let read = |bytes: &[u8]| {
        let format = match super::probe::sniff(bytes) {
            Some(SourceFormat::Jpeg) => Some(Format::Jpeg),
            Some(SourceFormat::Webp) => Some(Format::Webp),
            _ if is_avif(bytes) => Some(Format::Avif),
            _ => None,
        };
        match format {
            Some(format) => decode(bytes, format).map_err(|_| {
                ImagingError::Undecodable(format!("not a readable {}", format.name()))
            }),
            None => image::load_from_memory(bytes)
                .map(|image| image.to_rgb8())
                .map_err(|e| ImagingError::Undecodable(e.to_string())),
        }
    };
    score_pixels(&read(reference)?, &read(distorted)?)
}

/// SSIMULACRA2 of `distorted` against `reference` (the same size).
pub fn score_pixels(a: &RgbImage, b: &RgbImage) -> Result<f64, ImagingError> {
    if a.dimensions() != b.dimensions() {
        return Err(ImagingError::Undecodable(format!(
            "the images differ in size: {:?} and {:?}",
            a.dimensions(),
            b.dimensions()
        )));
    }
    let reference = Ssimulacra2Reference::new(&slice(a)?).map_err(scoring)?;
    reference.compare(&slice(b)?).map_err(scoring)
}

/// Decodes a trial encode as browsers do: libjpeg-turbo for JPEG, libwebp for WebP,
/// libaom for AVIF (Chrome and Firefox use dav1d; AV1 decoding is bit-exact, so the YUV
/// samples are the same, and only the conversion to RGB may round a unit differently).
fn decode(bytes: &[u8], format: Format) -> Result<RgbImage, ImagingError> {
    let failed =
        |e: String| ImagingError::Encode(format!("decoding its own output to score it: {e}"));
    let (width, height, pixels) = match format {
        Format::Jpeg => {
            let image = turbojpeg::decompress(bytes, turbojpeg::PixelFormat::RGB)
                .map_err(|e| failed(e.to_string()))?;
            if image.pitch != image.width * 3 {
                return Err(failed("unexpected row padding".to_owned()));
            }
            (image.width as u32, image.height as u32, image.pixels)
        }
        Format::Avif => avif_rgb(bytes).map_err(failed)?,
        Format::Webp => {
            let image = webp::Decoder::new(bytes)
                .decode()
                .ok_or_else(|| failed("libwebp could not decode it".to_owned()))?;
            let pixels = match image.is_alpha() {
                true => image
                    .chunks_exact(4)
                    .flat_map(|p| [p[0], p[1], p[2]])
                    .collect(),
                false => image.to_vec(),
            };
            (image.width(), image.height(), pixels)
        }
        other => return Err(failed(format!("{} is not scored", other.name()))),
    };
    RgbImage::from_raw(width, height, pixels).ok_or_else(|| failed("short pixel buffer".to_owned()))
}

/// An AVIF file's pixels as RGB8 (alpha dropped), by libaom's decoder on the calling
/// thread, converted with the matrix and range its header names.
fn avif_rgb(bytes: &[u8]) -> Result<(u32, u32, Vec<u8>), String> {
    use aom_decode::avif::{Avif, Image};
    let mut avif =
        Avif::decode(bytes, &aom_decode::Config { threads: 1 }).map_err(|e| e.to_string())?;
    let image = avif.convert().map_err(|e| e.to_string())?;
    // rav1e writes 10 bits; libaom's conversion gives them at 16 bits, rounded to the 8
    // bits a browser displays here.
    let (w, h, pixels): (usize, usize, Vec<u8>) = match image {
        Image::RGB8(i) => (
            i.width(),
            i.height(),
            i.pixels().flat_map(|p| [p.r, p.g, p.b]).collect(),
        ),
        Image::RGBA8(i) => (
            i.width(),
            i.height(),
            i.pixels().flat_map(|p| [p.r, p.g, p.b]).collect(),
        ),
        Image::RGB16(i) => (
            i.width(),
            i.height(),
            i.pixels().flat_map(|p| [p.r, p.g, p.b].map(to8)).collect(),
        ),
        Image::RGBA16(i) => (
            i.width(),
            i.height(),
            i.pixels().flat_map(|p| [p.r, p.g, p.b].map(to8)).collect(),
        ),
        Image::Gray8(_) | Image::Gray16(_) => {
            return Err("grey AVIF output is not scored".to_owned());
        }
    };
    let side = |n: usize| u32::try_from(n).map_err(|_| "too large".to_owned());
    Ok((side(w)?, side(h)?, pixels))
}

/// A 16-bit sample rounded to 8 bits.
fn to8(v: u16) -> u8 {
    ((u32::from(v) + 128) / 257) as u8
}

/// Whether `bytes` start as an AVIF file (an ISO-BMFF `ftyp` box of brand avif or avis).
fn is_avif(bytes: &[u8]) -> bool {
    bytes.len() >= 12 && &bytes[4..8] == b"ftyp" && matches!(&bytes[8..12], b"avif" | b"avis")
}

fn slice(image: &RgbImage) -> Result<PixelSlice<'_>, ImagingError> {
    let (w, h) = image.dimensions();
    PixelSlice::new(
        image.as_raw(),
        w,
        h,
        w as usize * 3,
        PixelDescriptor::RGB8_SRGB,
    )
    .map_err(|e| ImagingError::Encode(format!("SSIMULACRA2 input: {e}")))
}

fn scoring(e: fast_ssim2::Ssimulacra2Error) -> ImagingError {
    ImagingError::Encode(format!("SSIMULACRA2: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn predict_scales_the_mean_curve_and_keeps_within_the_probes_bounds() {
        let mean = |q| mean_score(&MEAN_JPEG, q);
        // The table's points, linear between them, its first slope continued below 40.
        assert_eq!(mean(75), MEAN_JPEG[7]);
        assert!((mean(77) - (MEAN_JPEG[7] + 0.4 * (MEAN_JPEG[8] - MEAN_JPEG[7]))).abs() < 1e-9);
        assert!((mean(35) - (2.0 * MEAN_JPEG[0] - MEAN_JPEG[1])).abs() < 1e-9);
        // A probe on the mean curve predicts where the mean reaches the aim (80.0 at 75).
        let (q, expected) = predict(&MEAN_JPEG, &[(70, mean(70))], 80.0, LOWEST, HIGHEST);
        assert_eq!(q, 75);
        assert!((expected - 80.0).abs() < 1e-9);
        // Twice the mean's distortion: a higher quality; half of it: a lower one.
        let (hard, _) = predict(
            &MEAN_JPEG,
            &[(75, 100.0 - 2.0 * (100.0 - mean(75)))],
            80.0,
            LOWEST,
            HIGHEST,
        );
        let (easy, _) = predict(
            &MEAN_JPEG,
            &[(75, 100.0 - 0.5 * (100.0 - mean(75)))],
            80.0,
            LOWEST,
            HIGHEST,
        );
        assert!(easy < 60 && hard == HIGHEST, "{easy} {hard}");
        // No distortion at all: the lowest allowed quality.
        assert_eq!(predict(&MEAN_WEBP, &[(80, 100.0)], 72.0, 41, 80).0, 41);
        // Never above a probe that reached the aim, never below one that fell short.
        assert_eq!(predict(&MEAN_JPEG, &[(75, 60.0)], 80.0, 76, 78).0, 78);
        assert_eq!(predict(&MEAN_JPEG, &[(75, 99.0)], 80.0, 70, 75).0, 70);
        // Two probes: the factor runs from one's to the other's, so each is met exactly and
        // a score between theirs lands between them.
        let probes = [(60, 70.0), (80, 80.0)];
        let (q, expected) = predict(&MEAN_JPEG, &probes, 75.0, 61, 80);
        assert!((61..80).contains(&q) && expected >= 75.0, "{q} {expected}");
        assert_eq!(predict(&MEAN_JPEG, &probes, 80.0, 61, 80), (80, 80.0));
        // Sharp WebP conversion has its own curve.
        let sharp = Tuning {
            webp_sharp_yuv: true,
        };
        assert_eq!(mean_table(Format::Webp, sharp), MEAN_WEBP_SHARP_YUV);
        assert_eq!(mean_table(Format::Webp, Tuning::default()), MEAN_WEBP);
        assert_eq!(mean_table(Format::Jpeg, sharp), MEAN_JPEG);
    }

    fn photo() -> DynamicImage {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/landscape.jpg");
        image::open(path).unwrap()
    }

    #[test]
    fn auto_reaches_the_target_at_a_lower_quality_for_an_easier_target() {
        let image = photo();
        for format in [Format::Jpeg, Format::Webp, Format::Avif] {
            let strict = choose(&image, format, 80.0, Tuning::default(), None)
                .unwrap()
                .unwrap();
            let loose = choose(&image, format, 65.0, Tuning::default(), None)
                .unwrap()
                .unwrap();
            for (chosen, target) in [(strict, 80.0), (loose, 65.0)] {
                assert!((1..=TRIES).contains(&chosen.tries), "{format:?} {chosen:?}");
                // The photo (640x427) is scored whole: what `measure` gives is the
                // output's score, the probe's when the quality was probed.
                let bytes = encode::encode(&image, format, chosen.quality).unwrap();
                let whole = score_pixels(&image.to_rgb8(), &decode(&bytes, format).unwrap());
                let measured = measure(&image, format, chosen.quality, Tuning::default()).unwrap();
                assert_eq!(whole.unwrap(), measured);
                if let Some(score) = chosen.score {
                    assert_eq!(score, measured);
                }
                // A prediction lands near the target (the margins absorb the model's error
                // on this photo), and near what it predicted.
                let predicted = chosen.predicted;
                assert!(
                    measured >= target - 1.0,
                    "{format:?} {chosen:?}: {measured}"
                );
                assert!(
                    (measured - predicted).abs() < 2.5,
                    "{format:?} {chosen:?}: {measured}"
                );
            }
            assert!(
                loose.quality < strict.quality,
                "{format:?}: {loose:?} vs {strict:?}"
            );
        }
    }

    #[test]
    fn auto_far_from_a_photo_probes_twice_and_still_lands_near_the_target() {
        // A smooth gradient (JPEG's easiest case) and hard-edged graphics (its hardest): far
        // from the photos the mean curve was measured on, so the first prediction is far
        // from the probe and a second probe decides.
        let gradient = DynamicImage::ImageRgb8(RgbImage::from_fn(320, 240, |x, y| {
            image::Rgb([(x * 255 / 319) as u8, (y * 255 / 239) as u8, 128])
        }));
        let stripes = DynamicImage::ImageRgb8(RgbImage::from_fn(320, 240, |x, y| {
            let on = (x / 3 + y / 5) % 2 == 0;
            image::Rgb(if on { [20, 20, 20] } else { [240, 230, 40] })
        }));
        for (name, image) in [("gradient", &gradient), ("stripes", &stripes)] {
            for format in [Format::Jpeg, Format::Webp] {
                let target = DEFAULT_TARGET;
                let chosen = choose(image, format, target, Tuning::default(), None)
                    .unwrap()
                    .unwrap();
                let measured = measure(image, format, chosen.quality, Tuning::default()).unwrap();
                assert!(chosen.tries <= TRIES, "{name} {format:?} {chosen:?}");
                // Either the target is reached, or nothing in range reaches it and the
                // highest quality is served.
                assert!(
                    measured >= target - 1.0 || chosen.quality == HIGHEST,
                    "{name} {format:?} {chosen:?}: {measured}"
                );
                eprintln!("{name} {format:?} {chosen:?} measured {measured:.2}");
            }
        }
    }

    #[test]
    fn auto_is_deterministic_and_skips_lossless_formats() {
        let image = photo();
        for format in [Format::Jpeg, Format::Avif] {
            let first = choose(&image, format, DEFAULT_TARGET, Tuning::default(), None).unwrap();
            assert!(first.is_some_and(|c| c.tries >= 1), "{format:?} {first:?}");
            for _ in 0..2 {
                assert_eq!(
                    choose(&image, format, DEFAULT_TARGET, Tuning::default(), None).unwrap(),
                    first
                );
            }
        }
        assert_eq!(
            choose(&image, Format::Png, 70.0, Tuning::default(), None).unwrap(),
            None
        );
        assert_eq!(
            choose(&image, Format::Gif, 70.0, Tuning::default(), None).unwrap(),
            None
        );
        let cancelled = AtomicBool::new(true);
        assert!(matches!(
            choose(
                &image,
                Format::Jpeg,
                70.0,
                Tuning::default(),
                Some(&cancelled)
            ),
            Err(ImagingError::Cancelled)
        ));
    }

    #[test]
    fn sharp_yuv_keeps_colour_edges_and_auto_serves_what_it_measured() {
        let sharp = Tuning {
            webp_sharp_yuv: true,
        };
        // Saturated colour edges (red text-like strokes on blue, a green grid on magenta):
        // where 4:2:0 chroma bleeds and the sharp conversion earns its cost.
        let edges = DynamicImage::ImageRgb8(RgbImage::from_fn(240, 160, |x, y| {
            let stroke = (x / 2 + y / 7) % 5 == 0 || (x % 11 < 2 && y % 13 < 9);
            let grid = x % 16 == 0 || y % 16 == 0;
            image::Rgb(match (y < 80, stroke || grid) {
                (true, true) => [230, 20, 30],
                (true, false) => [20, 40, 210],
                (false, true) => [30, 220, 40],
                (false, false) => [210, 30, 200],
            })
        }));
        let image = photo();
        // The strokes lose their colour without it (-27 against 11 at quality 80); the
        // photo gains a little.
        for (name, image, gain) in [("edges", &edges, 30.0), ("photo", &image, 0.0)] {
            let rgb = image.to_rgb8();
            let at = |tuning| {
                let bytes = encode::encode_tuned(image, Format::Webp, 80, tuning).unwrap();
                let score = score_pixels(&rgb, &decode(&bytes, Format::Webp).unwrap()).unwrap();
                (bytes, score)
            };
            let (plain, plain_score) = at(Tuning::default());
            let (sharpened, sharp_score) = at(sharp);
            assert_ne!(plain, sharpened, "{name}");
            assert!(
                sharp_score > plain_score + gain,
                "{name}: {sharp_score} vs {plain_score}"
            );
            // JPEG and AVIF do not depend on it.
            for format in [Format::Jpeg, Format::Avif] {
                assert_eq!(
                    encode::encode_tuned(image, format, 80, sharp).unwrap(),
                    encode::encode(image, format, 80).unwrap()
                );
            }
        }
        // quality(auto) probes with the same conversion it serves: a served probe is the
        // sharp encode, and the measured score is that of the sharp output.
        let target = DEFAULT_TARGET_WEBP;
        let found = choose_encoded(&image, Format::Webp, target, sharp, None)
            .unwrap()
            .unwrap();
        let quality = found.chosen.quality;
        let served = encode::encode_tuned(&image, Format::Webp, quality, sharp).unwrap();
        if let Some(encoded) = &found.encoded {
            assert_eq!(encoded, &served);
        }
        let measured = measure(&image, Format::Webp, quality, sharp).unwrap();
        let whole = score_pixels(&image.to_rgb8(), &decode(&served, Format::Webp).unwrap());
        assert_eq!(whole.unwrap(), measured);
        assert!(measured >= target - 1.0, "{found:?}: {measured}");
    }

    #[test]
    fn score_is_100_for_identical_images_and_lower_for_a_coarse_encode() {
        let image = photo();
        let png = encode::encode(&image, Format::Png, 100).unwrap();
        let coarse = encode::encode(&image, Format::Jpeg, 20).unwrap();
        let fine = encode::encode(&image, Format::Jpeg, 90).unwrap();
        assert!((score(&png, &png).unwrap() - 100.0).abs() < 1e-6);
        let (c, f) = (score(&png, &coarse).unwrap(), score(&png, &fine).unwrap());
        assert!(c < f && f < 100.0, "q20 {c:.1}, q90 {f:.1}");
        // AVIF (10 bits, read back by libaom and rounded to 8): a fine encode keeps the
        // colours (scored high), a coarse one loses detail.
        let avif = |q| score(&png, &encode::encode(&image, Format::Avif, q).unwrap()).unwrap();
        let (c, f) = (avif(20), avif(90));
        assert!(
            c < f && f > 85.0 && f < 100.0,
            "AVIF q20 {c:.1}, q90 {f:.1}"
        );
        let other = encode::encode(&image.thumbnail(100, 100), Format::Png, 100).unwrap();
        assert!(matches!(
            score(&png, &other),
            Err(ImagingError::Undecodable(_))
        ));
    }

    #[test]
    fn sample_is_the_whole_small_image_and_a_tile_mosaic_of_a_large_one() {
        let small = DynamicImage::new_rgb8(300, 200);
        assert_eq!(sample(&small).dimensions(), (300, 200));
        let wide = DynamicImage::ImageRgb8(RgbImage::from_fn(1600, 900, |x, y| {
            image::Rgb([(x % 256) as u8, (y % 256) as u8, ((x / 256) * 40) as u8])
        }));
        let mosaic = sample(&wide);
        let (mw, mh) = mosaic.dimensions();
        assert_eq!((mw % TILE, mh % TILE), (0, 0));
        assert!(
            mw * mh <= MOSAIC_PIXELS && mw * mh >= MOSAIC_PIXELS / 2,
            "{mw}x{mh}"
        );
        // Each tile is a copy of the source at a 16-aligned origin.
        let tile = mosaic.get_pixel(0, 0);
        assert_eq!(u32::from(tile[0]) % 16, 0, "x origin aligned: {tile:?}");
        assert_eq!(u32::from(tile[1]) % 16, 0, "y origin aligned: {tile:?}");
        assert_eq!(mosaic.get_pixel(5, 7)[0], tile[0] + 5);
    }
}
