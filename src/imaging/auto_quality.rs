//! `quality(auto)`: per image, the lowest quality whose output reaches a perceptual score.
//!
//! The score is SSIMULACRA2 (`fast-ssim2`) of the decoded output against the pixels that
//! were encoded. It is measured on a sample: the whole output up to `WHOLE_PIXELS`
//! (800x600), otherwise a mosaic of `TILE`-pixel tiles taken on an even grid, each aligned
//! to the 16-pixel macroblock grid, which aims `MOSAIC_AIM` higher (a mosaic scores high).
//! The search is a secant search on quality with at most `TRIES` encodes of the sample; the
//! answer is the lowest tried quality whose score reaches the target (else the best
//! tried). Everything is deterministic: the same pixels give the same quality.
//!
//! AVIF output has no decoder in this build (image's `avif-native` needs a newer dav1d
//! than Debian 12 has), so its score cannot be measured: `auto` encodes AVIF at
//! `AVIF_FALLBACK` and says so.

use std::sync::atomic::{AtomicBool, Ordering};

use fast_ssim2::{PixelDescriptor, PixelSlice, Ssimulacra2Reference};
use image::{DynamicImage, GenericImageView, RgbImage};

use super::ImagingError;
use super::encode;
use super::probe::SourceFormat;
use super::recipe::Format;

/// The scores `quality(auto)` aims for, per output format (a quality means different things
/// in each: sharp's and Thumbor's fixed q80 give JPEGs scoring 77-84 on the bench photos and
/// WebPs 72-77).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AutoTarget {
    /// JPEG (and AVIF, when it can be measured): `auto_quality_target`.
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
/// The first quality tried: where the corpus's median image reaches the default target.
const FIRST: u8 = 75;
/// SSIMULACRA2 points per quality step near the target, for the first prediction
/// (JPEG and WebP on the corpus: 0.4-0.7).
const PRIOR_SLOPE: f64 = 0.5;
/// Predictions aim this far above the target: the score is not smooth in quality (+-0.5
/// between neighbours), and a try that falls just short costs a whole encode.
const AIM: f64 = 0.5;
/// Encodes of the sample, at most.
const TRIES: usize = 3;
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
/// What a mosaic aims above the target, on top of `AIM`.
const MOSAIC_AIM: f64 = 3.0;
/// Memory per sample pixel while scoring: the sample, its encode and decode, and
/// SSIMULACRA2's planes for both images at six scales. Measured with `imgedge score`: peak
/// RSS 76 MB at 800x450 and 207 MB at 1600x900, about 140 bytes per pixel.
const SCORE_BYTES_PER_PIXEL: u64 = 150;

/// The memory the search needs for an output of `pixels`, beyond the render's own.
pub fn memory_need(pixels: u64) -> u64 {
    let sample = if pixels <= u64::from(WHOLE_PIXELS) {
        pixels
    } else {
        u64::from(MOSAIC_PIXELS)
    };
    sample.saturating_mul(SCORE_BYTES_PER_PIXEL)
}
/// The quality `auto` gives AVIF output (see the module comment).
pub const AVIF_FALLBACK: u8 = 80;

/// What the search chose.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Chosen {
    pub quality: u8,
    /// SSIMULACRA2 of the sample at `quality` (the whole output up to 800x600); `None` when
    /// it was not measured (AVIF).
    pub score: Option<f64>,
    /// Encodes of the sample it took.
    pub tries: usize,
}

/// The lowest quality in `LOWEST..=HIGHEST` at which `image` encoded as `format` reaches
/// SSIMULACRA2 `target`, as far as `TRIES` encodes of its sample find; `None` for the
/// lossless formats, where quality means nothing. Outputs larger than 800x600 aim
/// `MOSAIC_AIM` higher (their sample is a mosaic).
pub fn choose(
    image: &DynamicImage,
    format: Format,
    target: f64,
    cancel: Option<&AtomicBool>,
) -> Result<Option<Chosen>, ImagingError> {
    Ok(choose_encoded(image, format, target, cancel)?.map(|found| found.chosen))
}

/// What [`choose_encoded`] found.
#[derive(Debug, Clone, PartialEq)]
pub struct Found {
    pub chosen: Chosen,
    /// The output encoded at the chosen quality, when the search's sample was the output.
    pub encoded: Option<Vec<u8>>,
}

/// [`choose`], and the encode of the chosen try when it is the output itself (the sample
/// was the whole image, without alpha): exactly the bytes `encode::encode` gives `image`
/// at the chosen quality, so the caller need not encode it again.
pub fn choose_encoded(
    image: &DynamicImage,
    format: Format,
    target: f64,
    cancel: Option<&AtomicBool>,
) -> Result<Option<Found>, ImagingError> {
    match format {
        Format::Png | Format::Gif => return Ok(None),
        Format::Avif => {
            let chosen = Chosen {
                quality: AVIF_FALLBACK,
                score: None,
                tries: 0,
            };
            return Ok(Some(Found {
                chosen,
                encoded: None,
            }));
        }
        Format::Jpeg | Format::Webp => {}
    }
    let whole = image.width() * image.height() <= WHOLE_PIXELS;
    let target = if whole { target } else { target + MOSAIC_AIM };
    let sample = DynamicImage::ImageRgb8(sample(image));
    // The sample's encodes are the output's when the sample is the image, pixel for pixel.
    let is_output = whole && matches!(image, DynamicImage::ImageRgb8(_));
    let rgb = sample.as_rgb8().expect("the sample is RGB8");
    let reference = Ssimulacra2Reference::new(&slice(rgb)?).map_err(scoring)?;
    let mut tried: Vec<(u8, f64)> = Vec::with_capacity(TRIES);
    let mut encodes: Vec<Vec<u8>> = Vec::with_capacity(TRIES);
    let mut quality = FIRST;
    while tried.len() < TRIES {
        if cancel.is_some_and(|c| c.load(Ordering::Relaxed)) {
            return Err(ImagingError::Cancelled);
        }
        let bytes = encode::encode(&sample, format, quality)?;
        let decoded = decode(&bytes, format)?;
        let score = reference.compare(&slice(&decoded)?).map_err(scoring)?;
        tried.push((quality, score));
        encodes.push(bytes);
        match next(&tried, target) {
            Some(q) => quality = q,
            None => break,
        }
    }
    let reaching = tried
        .iter()
        .enumerate()
        .filter(|(_, (_, s))| *s >= target)
        .min_by_key(|(_, (q, _))| *q);
    let best = tried
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.1.total_cmp(&b.1.1));
    let (at, &(quality, score)) = reaching.or(best).expect("at least one try");
    let chosen = Chosen {
        quality,
        score: Some(score),
        tries: tried.len(),
    };
    let encoded = is_output.then(|| encodes.swap_remove(at));
    Ok(Some(Found { chosen, encoded }))
}

/// The next quality to try, or `None` when the answer is known: predicted from the last
/// two tries (the prior slope after the first), kept above every quality that fell short
/// and below every one that reached the target.
fn next(tried: &[(u8, f64)], target: f64) -> Option<u8> {
    let floor = tried
        .iter()
        .filter(|(_, s)| *s < target)
        .map(|(q, _)| q + 1)
        .max()
        .unwrap_or(LOWEST);
    let ceiling = tried
        .iter()
        .filter(|(_, s)| *s >= target)
        .map(|(q, _)| *q)
        .min()
        .unwrap_or(HIGHEST);
    let &(q1, s1) = tried.last()?;
    if floor > ceiling {
        return None;
    }
    let slope = match tried.len() {
        0 | 1 => PRIOR_SLOPE,
        n => {
            let (q0, s0) = tried[n - 2];
            let slope = (s1 - s0) / (f64::from(q1) - f64::from(q0));
            if slope.is_finite() && slope > 0.05 {
                slope
            } else {
                PRIOR_SLOPE
            }
        }
    };
    let predicted = (f64::from(q1) + (target + AIM - s1) / slope).ceil();
    let q = predicted.clamp(f64::from(floor), f64::from(ceiling)) as u8;
    (!tried.iter().any(|(t, _)| *t == q)).then_some(q)
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

/// Decodes a trial encode as browsers do: libjpeg-turbo for JPEG, libwebp for WebP.
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
        _ => {
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
    };
    RgbImage::from_raw(width, height, pixels).ok_or_else(|| failed("short pixel buffer".to_owned()))
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
    fn next_brackets_the_target() {
        // One try short of the target: aim up by the prior slope.
        assert_eq!(next(&[(75, 70.0)], 72.0), Some(80));
        // One try above: aim down.
        assert_eq!(next(&[(75, 76.0)], 72.0), Some(68));
        // Two tries: the secant between them, rounded up.
        assert_eq!(next(&[(75, 76.0), (68, 71.0)], 72.0), Some(71));
        // The answer is known once the prediction lands on a tried quality.
        assert_eq!(next(&[(75, 76.0), (74, 71.9)], 72.0), None);
        // Never below a quality that fell short, never above one that reached it.
        assert_eq!(next(&[(75, 60.0)], 72.0), Some(HIGHEST));
        assert_eq!(next(&[(75, 95.0)], 72.0), Some(LOWEST));
        assert_eq!(next(&[(90, 60.0), (30, 10.0)], 72.0), None);
    }

    fn photo() -> DynamicImage {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/landscape.jpg");
        image::open(path).unwrap()
    }

    #[test]
    fn auto_reaches_the_target_at_a_lower_quality_for_an_easier_target() {
        let image = photo();
        for format in [Format::Jpeg, Format::Webp] {
            let strict = choose(&image, format, 80.0, None).unwrap().unwrap();
            let loose = choose(&image, format, 65.0, None).unwrap().unwrap();
            for (chosen, target) in [(strict, 80.0), (loose, 65.0)] {
                assert!(chosen.tries <= TRIES, "{format:?} {chosen:?}");
                assert!(chosen.score.unwrap() >= target, "{format:?} {chosen:?}");
                // The photo (640x427) is scored whole: the score is that of the output.
                let bytes = encode::encode(&image, format, chosen.quality).unwrap();
                let whole = score_pixels(&image.to_rgb8(), &decode(&bytes, format).unwrap());
                assert_eq!(whole.unwrap(), chosen.score.unwrap());
            }
            assert!(
                loose.quality < strict.quality,
                "{format:?}: {loose:?} vs {strict:?}"
            );
        }
    }

    #[test]
    fn auto_is_deterministic_and_skips_what_it_cannot_measure() {
        let image = photo();
        let first = choose(&image, Format::Jpeg, DEFAULT_TARGET, None).unwrap();
        for _ in 0..3 {
            assert_eq!(
                choose(&image, Format::Jpeg, DEFAULT_TARGET, None).unwrap(),
                first
            );
        }
        assert_eq!(choose(&image, Format::Png, 70.0, None).unwrap(), None);
        assert_eq!(
            choose(&image, Format::Avif, 70.0, None).unwrap(),
            Some(Chosen {
                quality: AVIF_FALLBACK,
                score: None,
                tries: 0
            })
        );
        let cancelled = AtomicBool::new(true);
        assert!(matches!(
            choose(&image, Format::Jpeg, 70.0, Some(&cancelled)),
            Err(ImagingError::Cancelled)
        ));
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
