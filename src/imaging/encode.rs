//! Encoders for every output format, and the `max_bytes` quality search.
//!
//! No metadata is ever written: no EXIF (so no GPS), no ICC profile (pixels are already
//! sRGB, see `decode::to_srgb`). `strip_exif()` and `strip_icc()` are therefore always
//! satisfied. The input is RGB8 or RGBA8; JPEG input has been flattened to RGB8 already.

use std::borrow::Cow;

use image::codecs::gif::GifEncoder;
use image::codecs::png::{CompressionType, FilterType, PngEncoder};
use image::{DynamicImage, ImageEncoder, RgbImage};
use turbojpeg::{Compressor, PixelFormat, Subsamp};

use super::ImagingError;
use super::recipe::Format;

/// rav1e speed preset, 1 (slowest) ..= 10 (fastest). Measured on an 800x600 photo at
/// quality 80 (dev build with dependencies at opt-level 3, 2 cores): speed 6 748 ms /
/// 42.0 KB, speed 8 647 ms / 42.3 KB, speed 9 275 ms / 43.3 KB, speed 10 104 ms / 46.8 KB.
/// 9 keeps files within 3% of the slow presets at well under half their time; AVIF is an
/// operator opt-in and its outputs are cached.
const AVIF_SPEED: u8 = 9;
/// NeuQuant sampling factor for GIF palettes, 1 (best) ..= 30 (fastest).
pub(super) const GIF_SPEED: i32 = 10;
/// `max_bytes` never goes below this quality.
const FLOOR_QUALITY: u8 = 10;
/// `max_bytes` tries at most this many extra encodes.
const MAX_TRIES: u32 = 6;

/// Encoder choices the operator makes once (configuration), the same for every render.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tuning {
    /// WebP: libwebp's sharp RGB to YUV conversion (`webp_sharp_yuv`), which picks the luma
    /// that best survives 4:2:0 chroma at edges: at 400x300 it needs 0.91x the bytes at
    /// equal SSIMULACRA2 on the W3 photos (0.96x over eleven bench photos), for 1.45x the
    /// encode time (see README, "Smaller images").
    pub webp_sharp_yuv: bool,
}

/// Encodes once at `quality` (ignored by the lossless PNG and GIF encoders) with the
/// default [`Tuning`].
pub fn encode(image: &DynamicImage, format: Format, quality: u8) -> Result<Vec<u8>, ImagingError> {
    encode_tuned(image, format, quality, Tuning::default())
}

/// [`encode`] with the operator's `tuning`.
pub fn encode_tuned(
    image: &DynamicImage,
    format: Format,
    quality: u8,
    tuning: Tuning,
) -> Result<Vec<u8>, ImagingError> {
    let quality = quality.clamp(1, 100);
    match format {
        Format::Jpeg => jpeg(image, quality),
        Format::Png => png(image),
        Format::Webp => webp(image, quality, tuning),
        Format::Avif => avif(image, quality),
        Format::Gif => gif(image),
    }
}

/// Encodes at `quality`, then, if the result is over `max_bytes`, bisects the quality down
/// (at most `MAX_TRIES` more encodes, never below `FLOOR_QUALITY`) and keeps the best
/// quality that fits; if none fits, the smallest attempt. Lossless formats encode once.
pub fn encode_within(
    image: &DynamicImage,
    format: Format,
    quality: u8,
    max_bytes: Option<u64>,
    tuning: Tuning,
) -> Result<Vec<u8>, ImagingError> {
    let first = encode_tuned(image, format, quality, tuning)?;
    fit_within(image, format, quality, max_bytes, tuning, first)
}

/// [`encode_within`] when the encode at `quality` is already made (`first`, exactly what
/// `encode_tuned(image, format, quality, tuning)` gives; `quality(auto)`'s search has it).
pub fn fit_within(
    image: &DynamicImage,
    format: Format,
    quality: u8,
    max_bytes: Option<u64>,
    tuning: Tuning,
    first: Vec<u8>,
) -> Result<Vec<u8>, ImagingError> {
    let Some(limit) = max_bytes else {
        return Ok(first);
    };
    let lossy = format.is_lossy();
    if first.len() as u64 <= limit || !lossy || quality <= FLOOR_QUALITY {
        return Ok(first);
    }
    let (mut low, mut high) = (FLOOR_QUALITY, quality - 1);
    let mut fitting: Option<Vec<u8>> = None;
    let mut smallest = first;
    for _ in 0..MAX_TRIES {
        if low > high {
            break;
        }
        let q = low + (high - low) / 2;
        let bytes = encode_tuned(image, format, q, tuning)?;
        if bytes.len() as u64 <= limit {
            fitting = Some(bytes);
            low = q + 1;
        } else {
            if bytes.len() < smallest.len() {
                smallest = bytes;
            }
            if q == FLOOR_QUALITY {
                break;
            }
            high = q - 1;
        }
    }
    Ok(fitting.unwrap_or(smallest))
}

/// `image` as RGB8: borrowed when it is, converted otherwise (alpha dropped).
pub(super) fn rgb8(image: &DynamicImage) -> Cow<'_, RgbImage> {
    match image {
        DynamicImage::ImageRgb8(img) => Cow::Borrowed(img),
        other => Cow::Owned(other.to_rgb8()),
    }
}

fn failed(format: Format, e: impl std::fmt::Display) -> ImagingError {
    ImagingError::Encode(format!("{}: {e}", format.name()))
}

/// Outputs of this many pixels up to `PROGRESSIVE_MAX_PIXELS` are progressive JPEGs;
/// smaller and larger ones sequential. In small outputs the progressive scans' own headers
/// outweigh what they save (the same coefficients, so the same picture): on five bench
/// photos at q80, progressive was 1.19x the sequential bytes at 48 px, 1.10x at 80 px, 1.04x
/// at 128 px, 1.00x at 256x171 px and 0.996x at 300x200 px; the two cross near 50,000
/// pixels, and W1's 300x169 to 300x200 outputs measured 1% more bytes at equal SSIMULACRA2
/// as sequential.
const PROGRESSIVE_MIN_PIXELS: u32 = 48 * 1024;
/// See `PROGRESSIVE_MIN_PIXELS`.
const PROGRESSIVE_MAX_PIXELS: u32 = 320 * 1000;

/// Output JPEGs: jpegli (adaptive quantisation), 4:4:4, optimised Huffman tables,
/// progressive from `PROGRESSIVE_MIN_PIXELS` up to `PROGRESSIVE_MAX_PIXELS`. Chosen from the
/// routes measured at equal SSIMULACRA2 on the W1/W2 photos (README, "Smaller images": about
/// 0.88x / 0.91-0.93x libjpeg-turbo 4:2:0's bytes; jpegli 4:2:0 and mozjpeg do worse); at
/// 800 wide progressive would buy 2.5% for twice the encode time, which W2's CPU target
/// cannot spare.
fn jpeg(image: &DynamicImage, quality: u8) -> Result<Vec<u8>, ImagingError> {
    let rgb = rgb8(image);
    let pixels = rgb.width() * rgb.height();
    let progressive = (PROGRESSIVE_MIN_PIXELS..=PROGRESSIVE_MAX_PIXELS).contains(&pixels);
    jpegli(&rgb, quality, progressive)
}

fn jpegli(rgb: &RgbImage, quality: u8, progressive: bool) -> Result<Vec<u8>, ImagingError> {
    let (w, h) = rgb.dimensions();
    let capacity = (w as usize * h as usize / 4).max(4096);
    // jpegli reports errors by unwinding (libjpeg's error_exit cannot return).
    let result = std::panic::catch_unwind(|| -> std::io::Result<Vec<u8>> {
        let mut compress = jpegli::Compress::new(jpegli::ColorSpace::JCS_RGB);
        compress.set_size(w as usize, h as usize);
        compress.set_quality(f32::from(quality));
        compress.set_chroma_sampling_pixel_sizes((1, 1), (1, 1));
        if progressive {
            compress.set_progressive_mode();
        }
        compress.set_optimize_coding(true);
        let mut started = compress.start_compress(Vec::with_capacity(capacity))?;
        started.write_scanlines(rgb.as_raw())?;
        started.finish()
    });
    match result {
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(e)) => Err(failed(Format::Jpeg, e)),
        Err(_) => Err(failed(Format::Jpeg, "jpegli failed")),
    }
}

/// JPEG at `quality` without chroma subsampling, by libjpeg-turbo (the fastest encoder):
/// for reduced copies that are resampled again later, so colour edges stay as sharp as the
/// luma.
pub fn jpeg_full_chroma(image: &DynamicImage, quality: u8) -> Result<Vec<u8>, ImagingError> {
    jpeg_with(image, quality, Subsamp::None)
}

fn jpeg_with(image: &DynamicImage, quality: u8, subsamp: Subsamp) -> Result<Vec<u8>, ImagingError> {
    let rgb = rgb8(image);
    let err = |e| failed(Format::Jpeg, e);
    let mut compressor = Compressor::new().map_err(err)?;
    compressor.set_quality(i32::from(quality)).map_err(err)?;
    compressor.set_subsamp(subsamp).map_err(err)?;
    // Optimised Huffman tables: a few percent smaller for little CPU. Progressive would save
    // a little more but costs noticeably more time.
    compressor.set_optimize(true).map_err(err)?;
    let (w, h) = rgb.dimensions();
    let input = turbojpeg::Image {
        pixels: rgb.as_raw().as_slice(),
        width: w as usize,
        pitch: w as usize * 3,
        height: h as usize,
        format: PixelFormat::RGB,
    };
    compressor.compress_to_vec(input).map_err(err)
}

fn png(image: &DynamicImage) -> Result<Vec<u8>, ImagingError> {
    png_with(image, CompressionType::Default)
}

/// PNG with fast compression: for reduced copies, written once and read many times.
pub fn png_fast(image: &DynamicImage) -> Result<Vec<u8>, ImagingError> {
    png_with(image, CompressionType::Fast)
}

fn png_with(image: &DynamicImage, compression: CompressionType) -> Result<Vec<u8>, ImagingError> {
    let mut out = Vec::new();
    let encoder = PngEncoder::new_with_quality(&mut out, compression, FilterType::Adaptive);
    encoder
        .write_image(
            image.as_bytes(),
            image.width(),
            image.height(),
            image.color().into(),
        )
        .map_err(|e| failed(Format::Png, e))?;
    Ok(out)
}

fn webp(image: &DynamicImage, quality: u8, tuning: Tuning) -> Result<Vec<u8>, ImagingError> {
    let (w, h) = (image.width(), image.height());
    let encoder = match image {
        DynamicImage::ImageRgba8(img) => webp::Encoder::from_rgba(img.as_raw(), w, h),
        DynamicImage::ImageRgb8(img) => webp::Encoder::from_rgb(img.as_raw(), w, h),
        _ => unreachable!("the working image is always RGB8 or RGBA8"),
    };
    let mut config = webp::WebPConfig::new().map_err(|()| failed(Format::Webp, "bad config"))?;
    config.quality = f32::from(quality);
    config.method = 4;
    config.use_sharp_yuv = i32::from(tuning.webp_sharp_yuv);
    let memory = encoder
        .encode_advanced(&config)
        .map_err(|e| failed(Format::Webp, format!("{e:?}")))?;
    Ok(memory.to_vec())
}

fn avif(image: &DynamicImage, quality: u8) -> Result<Vec<u8>, ImagingError> {
    use rgb::FromSlice;
    let (w, h) = (image.width() as usize, image.height() as usize);
    let encoder = ravif::Encoder::new()
        .with_quality(f32::from(quality))
        .with_alpha_quality(f32::from(quality))
        .with_speed(AVIF_SPEED);
    let encoded = match image {
        DynamicImage::ImageRgba8(img) => {
            encoder.encode_rgba(ravif::Img::new(img.as_raw().as_rgba(), w, h))
        }
        DynamicImage::ImageRgb8(img) => {
            encoder.encode_rgb(ravif::Img::new(img.as_raw().as_rgb(), w, h))
        }
        _ => unreachable!("the working image is always RGB8 or RGBA8"),
    };
    Ok(encoded.map_err(|e| failed(Format::Avif, e))?.avif_file)
}

fn gif(image: &DynamicImage) -> Result<Vec<u8>, ImagingError> {
    let mut out = Vec::new();
    {
        let mut encoder = GifEncoder::new_with_speed(&mut out, GIF_SPEED);
        let frame = image::Frame::new(image.to_rgba8());
        encoder
            .encode_frame(frame)
            .map_err(|e| failed(Format::Gif, e))?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::imaging::probe::{SourceFormat, sniff};
    use image::{Rgb, RgbImage, Rgba, RgbaImage};

    fn noisy(w: u32, h: u32) -> DynamicImage {
        DynamicImage::ImageRgb8(RgbImage::from_fn(w, h, |x, y| {
            let v =
                (x.wrapping_mul(2654435761) ^ y.wrapping_mul(40503)).wrapping_mul(2246822519) >> 24;
            Rgb([v as u8, (x * 3) as u8, (y * 5) as u8])
        }))
    }

    #[test]
    fn every_format_round_trips() {
        let rgba = DynamicImage::ImageRgba8(RgbaImage::from_fn(24, 16, |x, _| {
            Rgba([200, 10, 10, if x < 12 { 0 } else { 255 }])
        }));
        for (format, sniffed) in [
            (Format::Jpeg, Some(SourceFormat::Jpeg)),
            (Format::Png, Some(SourceFormat::Png)),
            (Format::Webp, Some(SourceFormat::Webp)),
            (Format::Gif, Some(SourceFormat::Gif)),
            (Format::Avif, None),
        ] {
            for image in [noisy(24, 16), rgba.clone()] {
                let bytes = encode(&image, format, 80).unwrap();
                assert_eq!(sniff(&bytes), sniffed, "{format:?}");
                if format == Format::Avif {
                    assert_eq!(&bytes[4..8], b"ftyp");
                    continue;
                }
                let back = image::load_from_memory(&bytes).unwrap();
                assert_eq!((back.width(), back.height()), (24, 16), "{format:?}");
                if format.has_alpha() && image.color().has_alpha() {
                    let back = back.to_rgba8();
                    assert!(back.get_pixel(0, 0).0[3] < 16, "{format:?} keeps alpha");
                    assert!(back.get_pixel(20, 0).0[3] > 240, "{format:?} keeps alpha");
                }
            }
        }
    }

    /// The frame type of a JPEG: its first SOF marker.
    fn sof(jpeg: &[u8]) -> u8 {
        let at = jpeg
            .windows(2)
            .position(|w| w[0] == 0xFF && (0xC0..=0xC2).contains(&w[1]))
            .unwrap();
        jpeg[at + 1]
    }

    #[test]
    fn jpeg_is_progressive_only_where_the_scans_pay() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/landscape.jpg");
        let photo = image::open(path).unwrap();
        let sized = |w, h| photo.resize_exact(w, h, image::imageops::FilterType::Triangle);
        // A thumbnail (80x80) and a large output (800x533) are sequential (SOF0/SOF1), a
        // 400x267 one progressive (SOF2).
        let frame = |w, h| sof(&encode(&sized(w, h), Format::Jpeg, 80).unwrap());
        assert_ne!(frame(80, 80), 0xC2);
        assert_eq!(frame(400, 267), 0xC2);
        assert_ne!(frame(800, 533), 0xC2);
        // Either way the same coefficients: the same picture, so the choice is bytes only.
        let thumb = sized(80, 80).to_rgb8();
        let decode = |bytes: Vec<u8>| image::load_from_memory(&bytes).unwrap().to_rgb8();
        let progressive = jpegli(&thumb, 80, true).unwrap();
        let sequential = jpegli(&thumb, 80, false).unwrap();
        assert!(sequential.len() < progressive.len());
        assert_eq!(decode(progressive), decode(sequential));
    }

    #[test]
    fn max_bytes_lowers_quality() {
        let image = noisy(200, 200);
        let full = encode(&image, Format::Jpeg, 95).unwrap();
        let limit = full.len() as u64 / 2;
        let small =
            encode_within(&image, Format::Jpeg, 95, Some(limit), Tuning::default()).unwrap();
        assert!((small.len() as u64) <= limit, "{} > {limit}", small.len());
        // Impossible limits give the smallest attempt rather than an error.
        let tiny = encode_within(&image, Format::Jpeg, 95, Some(10), Tuning::default()).unwrap();
        assert!(tiny.len() < small.len());
        // A limit that is already met changes nothing.
        assert_eq!(
            encode_within(&image, Format::Jpeg, 95, Some(u64::MAX), Tuning::default()).unwrap(),
            full
        );
    }
}
