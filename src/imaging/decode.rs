//! Decoding of source images (their headers are read first, by `probe`).
//!
//! Invariants: decoding always yields RGB8 (opaque) or RGBA8, after `probe` has refused
//! what is too large from the headers alone.
//! JPEG goes through libjpeg-turbo (DCT-scaled decoding); PNG, WebP and GIF go through the
//! `image` crate with an allocation limit as a second guard.

use std::io::Cursor;

use image::metadata::Orientation;
use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader};
use moxcms::{ColorProfile, DataColorSpace, Layout, TransformOptions};
use turbojpeg::{Colorspace, Decompressor, PixelFormat, ScalingFactor};

use super::probe::{SourceFormat, SourceInfo, jpeg_header};
use super::{ImagingError, undecodable};

/// How much of a progressive JPEG's coefficient precision a decode keeps. Ordered: a
/// `Full` decode serves whoever asks for `Visible`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Precision {
    /// What a lossy re-encode of a downscale can show: the scans that refine the last bit
    /// of a finely quantized file's AC coefficients may be skipped (`scans::without_last_bit`).
    Visible,
    /// Every bit in the file.
    Full,
}

/// Decoded pixels plus what is still needed to interpret them.
pub struct Decoded {
    /// Always `ImageRgb8` or `ImageRgba8`, in stored orientation.
    pub image: DynamicImage,
    /// The embedded RGB ICC profile, when it is not (close to) sRGB.
    pub icc: Option<ColorProfile>,
    /// The DCT scale denominator the JPEG was decoded with (1 for other formats).
    pub shrink: u32,
    /// `Visible` when last-bit refinement scans were actually skipped.
    pub precision: Precision,
    /// The upright size of the bytes decoded, before DCT scaling.
    pub source_size: (u32, u32),
}

/// Decodes the first frame, at 1/`shrink` scale for JPEG, keeping `precision` of a
/// progressive JPEG's coefficients (`Visible` takes effect at 1/2 scale and below only).
/// `max_alloc` bounds the decoder's allocations as a second guard behind the header check.
pub fn decode(
    bytes: &[u8],
    info: &SourceInfo,
    shrink: u32,
    precision: Precision,
    max_alloc: u64,
) -> Result<Decoded, ImagingError> {
    let (image, icc, shrink, precision) = match info.format {
        SourceFormat::Jpeg => decode_jpeg(bytes, shrink, precision)?,
        SourceFormat::Png => {
            let stripped = without_oversized_iccp(bytes);
            let bytes = stripped.as_deref().unwrap_or(bytes);
            decode_with_image(bytes, ImageFormat::Png, max_alloc)?
        }
        SourceFormat::Webp => decode_with_image(bytes, ImageFormat::WebP, max_alloc)?,
        SourceFormat::Gif => decode_with_image(bytes, ImageFormat::Gif, max_alloc)?,
        SourceFormat::Tiff => decode_with_image(bytes, ImageFormat::Tiff, max_alloc)?,
        SourceFormat::Bmp => decode_with_image(bytes, ImageFormat::Bmp, max_alloc)?,
    };
    let icc = icc
        .and_then(|bytes| ColorProfile::new_from_slice(&bytes).ok())
        .filter(needs_conversion);
    Ok(Decoded {
        image: normalize(image),
        icc,
        shrink,
        precision,
        source_size: info.oriented_size(),
    })
}

/// Turns the image upright according to its EXIF orientation (1..=8).
pub fn orient(image: &mut DynamicImage, orientation: u8) {
    if let Some(o) = Orientation::from_exif(orientation) {
        image.apply_orientation(o);
    }
}

/// Converts pixels from the source's ICC profile to sRGB in place. Run on the resized image:
/// the transform is per pixel, so doing it after the resize costs a fraction of the work and
/// the resize's slight mixing of colours in the source space is far below visibility.
/// A profile that parses but cannot be used is ignored, as browsers ignore it: the pixels
/// are left as they are and false is returned.
pub fn to_srgb(image: &mut DynamicImage, profile: &ColorProfile) -> bool {
    let srgb = ColorProfile::new_srgb();
    let layout = match image {
        DynamicImage::ImageRgb8(_) => Layout::Rgb,
        _ => Layout::Rgba,
    };
    let transform =
        match profile.create_transform_8bit(layout, &srgb, layout, TransformOptions::default()) {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(error = %e, "unusable ICC profile ignored");
                return false;
            }
        };
    let src = image.as_bytes().to_vec();
    let dst = match image {
        DynamicImage::ImageRgb8(img) => img.as_mut(),
        DynamicImage::ImageRgba8(img) => img.as_mut(),
        _ => unreachable!("the working image is always RGB8 or RGBA8"),
    };
    match transform.transform(&src, dst) {
        Ok(()) => true,
        Err(e) => {
            // The transform writes as it goes: put the source pixels back.
            dst.copy_from_slice(&src);
            tracing::warn!(error = %e, "ICC transform failed; profile ignored");
            false
        }
    }
}

/// The largest ICC profile a PNG's `iCCP` chunk may inflate to. Real profiles are a few
/// KB, LUT-based ones up to about 1 MB; a 280 KB chunk can inflate to 256 MB.
pub const MAX_ICC_BYTES: usize = 4 << 20;

/// When a PNG's `iCCP` chunk inflates past [`MAX_ICC_BYTES`] (or not at all), the file
/// without that chunk: the profile is ignored, as browsers ignore a broken one, and the
/// decoder never inflates it. `None` when the file can be decoded as it is.
fn without_oversized_iccp(b: &[u8]) -> Option<Vec<u8>> {
    let mut pos = 8;
    let mut bad = None;
    while let Some(head) = b.get(pos..pos + 8) {
        let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
        let end = pos.checked_add(12)?.checked_add(len)?;
        match &head[4..8] {
            b"iCCP" => {
                let data = b.get(pos + 8..pos + 8 + len)?;
                // Name (1-79 bytes), NUL, compression method, then the zlib stream.
                let stream = data
                    .iter()
                    .position(|&c| c == 0)
                    .and_then(|nul| data.get(nul + 2..));
                let fits = stream
                    .is_some_and(|z| fdeflate::decompress_to_vec_bounded(z, MAX_ICC_BYTES).is_ok());
                if !fits {
                    bad = Some(pos..end.min(b.len()));
                }
                break;
            }
            b"IDAT" | b"IEND" => break,
            _ => {}
        }
        pos = end;
    }
    let bad = bad?;
    tracing::warn!("PNG iCCP chunk unusable or over {MAX_ICC_BYTES} bytes inflated; ignored");
    Some(without_ranges(b, &[bad]))
}

/// `b` without the given byte ranges (in order, not overlapping).
fn without_ranges(b: &[u8], cuts: &[std::ops::Range<usize>]) -> Vec<u8> {
    let mut out = Vec::with_capacity(b.len());
    let mut from = 0;
    for cut in cuts {
        out.extend_from_slice(&b[from..cut.start]);
        from = cut.end;
    }
    out.extend_from_slice(&b[from..]);
    out
}

/// True for RGB profiles whose primaries differ from sRGB's (sRGB-tagged photos are the
/// common case and are left alone; converting them would cost time for no visible change).
fn needs_conversion(profile: &ColorProfile) -> bool {
    if profile.color_space != DataColorSpace::Rgb {
        return false;
    }
    let srgb = ColorProfile::new_srgb();
    let close = |a: moxcms::Xyzd, b: moxcms::Xyzd| {
        (a.x - b.x).abs() + (a.y - b.y).abs() + (a.z - b.z).abs() < 0.005
    };
    let srgb_primaries = close(profile.red_colorant, srgb.red_colorant)
        && close(profile.green_colorant, srgb.green_colorant)
        && close(profile.blue_colorant, srgb.blue_colorant);
    let has_luts =
        profile.lut_a_to_b_perceptual.is_some() || profile.lut_a_to_b_colorimetric.is_some();
    has_luts || !srgb_primaries
}

/// Any decoder output → RGB8 when opaque, RGBA8 when some pixel is not.
pub(super) fn normalize(image: DynamicImage) -> DynamicImage {
    let rgba = match image {
        DynamicImage::ImageRgb8(_) => return image,
        DynamicImage::ImageRgba8(img) => img,
        other if !other.color().has_alpha() => return DynamicImage::ImageRgb8(other.to_rgb8()),
        other => other.to_rgba8(),
    };
    if rgba.pixels().all(|p| p.0[3] == 255) {
        DynamicImage::ImageRgb8(DynamicImage::ImageRgba8(rgba).to_rgb8())
    } else {
        DynamicImage::ImageRgba8(rgba)
    }
}

/// The image, its ICC profile, the DCT scale denominator and the precision kept.
type RawDecode = (DynamicImage, Option<Vec<u8>>, u32, Precision);

fn decode_with_image(
    bytes: &[u8],
    format: ImageFormat,
    max_alloc: u64,
) -> Result<RawDecode, ImagingError> {
    let mut limits = image::Limits::default();
    limits.max_alloc = Some(max_alloc);
    let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
    reader.limits(limits);
    let mut decoder = reader
        .into_decoder()
        .map_err(|e| undecodable(e.to_string()))?;
    let icc = decoder.icc_profile().ok().flatten();
    let image = DynamicImage::from_decoder(decoder).map_err(|e| undecodable(e.to_string()))?;
    Ok((image, icc, 1, Precision::Full))
}

fn decode_jpeg(bytes: &[u8], shrink: u32, precision: Precision) -> Result<RawDecode, ImagingError> {
    let header = jpeg_header(bytes)?;
    let cleaned =
        (!header.broken_icc.is_empty()).then(|| without_ranges(bytes, &header.broken_icc));
    let bytes = cleaned.as_deref().unwrap_or(bytes);
    let tj = |e: turbojpeg::Error| undecodable(e.to_string());
    let mut decompressor = Decompressor::new().map_err(tj)?;
    // A progressive JPEG with thousands of scans is a CPU bomb; real files have a dozen.
    decompressor.set_scan_limit(500).map_err(tj)?;
    let tj_header = decompressor.read_header(bytes).map_err(tj)?;
    let shrink = if tj_header.is_lossless {
        1
    } else {
        shrink.clamp(1, 8)
    };
    let factor = ScalingFactor::new(1, shrink as usize);
    decompressor.set_scaling_factor(factor).map_err(tj)?;
    let scaled = tj_header.scaled(factor);
    let is_cmyk = matches!(tj_header.colorspace, Colorspace::CMYK | Colorspace::YCCK);
    let format = if is_cmyk {
        PixelFormat::CMYK
    } else {
        PixelFormat::RGB
    };
    let mut pixels = vec![0u8; scaled.width * scaled.height * format.size()];
    let image = turbojpeg::Image {
        pixels: pixels.as_mut_slice(),
        width: scaled.width,
        pitch: scaled.width * format.size(),
        height: scaled.height,
        format,
    };
    // At 1/8 most of a progressive file's scans are invisible: skip them (same pixels).
    let eighth = (shrink == 8)
        .then(|| super::scans::for_eighth_scale(bytes))
        .flatten();
    let stream = eighth.as_deref().unwrap_or(bytes);
    // For a downscale that is re-encoded lossily, the last bit is invisible too.
    let slim = (precision == Precision::Visible && shrink >= 2)
        .then(|| super::scans::without_last_bit(stream))
        .flatten();
    let precision = if slim.is_some() {
        Precision::Visible
    } else {
        Precision::Full
    };
    decompressor
        .decompress(slim.as_deref().unwrap_or(stream), image)
        .map_err(tj)?;
    let (w, h) = (scaled.width as u32, scaled.height as u32);
    if is_cmyk {
        let rgb = cmyk_to_rgb(&pixels, header.adobe, &header.icc)?;
        let img =
            image::RgbImage::from_raw(w, h, rgb).expect("CMYK conversion yields 3 bytes per pixel");
        // The CMYK profile (if any) has been used already; the result is sRGB.
        return Ok((DynamicImage::ImageRgb8(img), None, shrink, precision));
    }
    let img = image::RgbImage::from_raw(w, h, pixels).expect("buffer was sized from the header");
    let icc = (!header.icc.is_empty()).then_some(header.icc);
    Ok((DynamicImage::ImageRgb8(img), icc, shrink, precision))
}

/// CMYK (as libjpeg returns it) → sRGB. With an embedded CMYK profile, moxcms does it
/// properly; otherwise the usual naive formula. Files with an Adobe APP14 marker (Photoshop
/// and nearly every other writer) store inverted values, 255 meaning no ink.
fn cmyk_to_rgb(cmyk: &[u8], adobe: bool, icc: &[u8]) -> Result<Vec<u8>, ImagingError> {
    let profile = (!icc.is_empty())
        .then(|| ColorProfile::new_from_slice(icc).ok())
        .flatten()
        .filter(|p| p.color_space == DataColorSpace::Cmyk);
    if let Some(profile) = profile {
        // ICC CMYK profiles expect ink amounts (0 = no ink).
        let ink: Vec<u8> = if adobe {
            cmyk.iter().map(|v| 255 - v).collect()
        } else {
            cmyk.to_vec()
        };
        let srgb = ColorProfile::new_srgb();
        let mut rgb = vec![0u8; cmyk.len() / 4 * 3];
        // A profile that cannot be used is ignored (the formula below), as browsers do.
        let converted = profile
            .create_transform_8bit(
                Layout::Rgba,
                &srgb,
                Layout::Rgb,
                TransformOptions::default(),
            )
            .and_then(|t| t.transform(&ink, &mut rgb));
        match converted {
            Ok(()) => return Ok(rgb),
            Err(e) => tracing::warn!(error = %e, "unusable CMYK profile ignored"),
        }
    }
    let mut rgb = Vec::with_capacity(cmyk.len() / 4 * 3);
    for px in cmyk.chunks_exact(4) {
        // `keep` is the fraction of light each channel lets through, 0..=255.
        let keep = |v: u8| {
            if adobe {
                u32::from(v)
            } else {
                255 - u32::from(v)
            }
        };
        let k = keep(px[3]);
        for &c in &px[..3] {
            rgb.push(((keep(c) * k + 127) / 255) as u8);
        }
    }
    Ok(rgb)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::imaging::conformance_image;
    use crate::imaging::probe::probe;

    #[test]
    fn a_header_of_billions_of_pixels_is_estimated_without_overflow() {
        // Found by `fuzz/run.sh` (target `probe`): a BMP whose header claims 1922355207 x
        // 2172627623 pixels overflowed the estimate (a panic with debug assertions).
        let mut bmp = b"BM\x66\x07\0\0\x10\0\0\0\x36\0\0\0\x28\0\0\0".to_vec();
        bmp.extend([
            0x07, 0x50, 0x94, 0x72, 0x17, 0xa5, 0xff, 0x81, 0x01, 0x00, 0x18, 0x00,
        ]);
        bmp.extend([0u8; 40]);
        let info = probe(&bmp).unwrap();
        assert_eq!((info.width, info.height), (0x7294_5007, 0x7e00_5ae9));
        assert_eq!(info.decode_bytes(1), u64::MAX);
    }

    #[test]
    fn decode_memory_is_read_from_the_headers() {
        let progressive = probe(&conformance_image("progressive.jpg")).unwrap();
        // 300x200 4:2:0: 38x25 luma blocks padded to whole MCUs (38x26), 19x13 of each
        // chroma component, 64 coefficients of 2 bytes per block, kept at any scale.
        let coefficients = (38 * 26 + 2 * 19 * 13) * 128;
        assert_eq!(progressive.coefficient_bytes, coefficients);
        assert_eq!(progressive.decode_bytes(1), coefficients + 300 * 200 * 3);
        assert_eq!(progressive.decode_bytes(8), coefficients + 38 * 25 * 3);
        let baseline = probe(&conformance_image("landscape.jpg")).unwrap();
        assert_eq!(baseline.coefficient_bytes, 0);
        assert_eq!(baseline.decode_bytes(2), 300 * 200 * 3);
        // CMYK: 4 bytes from the decoder, 3 after conversion.
        let cmyk = probe(&conformance_image("cmyk.jpg")).unwrap();
        assert_eq!(cmyk.decode_bytes(1), 300 * 200 * 7);
        // 16-bit grey PNG: 2 bytes per pixel, then RGB(A) 8-bit.
        let gray16 = std::fs::read(format!(
            "{}/fixtures/gray16.png",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap();
        let gray16 = probe(&gray16).unwrap();
        assert_eq!(gray16.sample_bytes, 2);
        let px = u64::from(gray16.width) * u64::from(gray16.height);
        assert_eq!(gray16.decode_bytes(1), px * 6);
    }

    #[test]
    fn tiff_and_bmp_are_probed_from_their_headers_and_decoded() {
        for (name, format, size) in [
            ("image.tiff", SourceFormat::Tiff, (300, 200)),
            ("image.bmp", SourceFormat::Bmp, (30, 20)),
        ] {
            let bytes = conformance_image(name);
            let info = probe(&bytes).unwrap();
            assert_eq!(
                (info.format, info.width, info.height),
                (format, size.0, size.1)
            );
            assert!(!info.has_alpha, "{name}");
            let decoded = decode(&bytes, &info, 1, Precision::Full, 1 << 30).unwrap();
            assert_eq!((decoded.image.width(), decoded.image.height()), size);
        }
        // A big-endian header with a LONG width, SHORT height and orientation 6.
        let mut tiff = b"MM\0*\0\0\0\x08\0\x03".to_vec();
        for (tag, kind, value) in [
            (256u16, 4u16, 70_000u32),
            (257, 3, 9 << 16),
            (274, 3, 6 << 16),
        ] {
            tiff.extend(tag.to_be_bytes());
            tiff.extend(kind.to_be_bytes());
            tiff.extend(1u32.to_be_bytes());
            tiff.extend(value.to_be_bytes());
        }
        let info = probe(&tiff).unwrap();
        assert_eq!((info.width, info.height, info.orientation), (70_000, 9, 6));
        // Truncated headers are undecodable, not a panic.
        assert!(probe(&tiff[..20]).is_err());
        assert!(probe(&conformance_image("image.bmp")[..20]).is_err());
    }

    fn fixture(name: &str) -> Vec<u8> {
        let path = format!("{}/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    fn info(
        format: SourceFormat,
        w: u32,
        h: u32,
        orientation: u8,
        alpha: bool,
        animated: bool,
        icc: bool,
    ) -> SourceInfo {
        SourceInfo {
            format,
            width: w,
            height: h,
            orientation,
            has_alpha: alpha,
            animated,
            frames: if animated { 3 } else { 1 },
            plays: if animated { 0 } else { 1 },
            has_icc: icc,
            sample_bytes: 3,
            coefficient_bytes: 0,
        }
    }

    #[test]
    fn probe_fixtures() {
        use SourceFormat::*;
        let table = [
            (
                "landscape.jpg",
                info(Jpeg, 640, 427, 1, false, false, false),
            ),
            (
                "exif_rotated.jpg",
                info(Jpeg, 300, 200, 6, false, false, false),
            ),
            ("cmyk.jpg", info(Jpeg, 64, 32, 1, false, false, false)),
            (
                "icc_adobergb.jpg",
                info(Jpeg, 64, 32, 1, false, false, true),
            ),
            ("alpha.png", info(Png, 64, 48, 1, true, false, false)),
            ("gray16.png", info(Png, 48, 32, 1, false, false, false)),
            ("photo.webp", info(Webp, 320, 180, 1, false, false, false)),
            ("animated.gif", info(Gif, 32, 32, 1, false, true, false)),
            (
                "bomb.png",
                info(Png, 50_000, 50_000, 1, false, false, false),
            ),
            (
                "bomb.jpg",
                info(Jpeg, 50_000, 50_000, 1, false, false, false),
            ),
        ];
        // Bytes per pixel the decoder hands out, in the same order.
        let samples = [3, 3, 4, 3, 4, 2, 4, 4, 3, 3];
        for ((name, want), sample_bytes) in table.into_iter().zip(samples) {
            let got = probe(&fixture(name)).unwrap();
            assert_eq!(got.sample_bytes, sample_bytes, "{name}");
            let got = SourceInfo {
                sample_bytes: 3,
                coefficient_bytes: 0,
                ..got
            };
            assert_eq!(got, want, "{name}");
        }
    }

    #[test]
    fn frames_and_loops_are_counted_from_the_headers() {
        for (name, frames, plays) in [
            ("animated.gif", 4, 0),
            ("animated_alpha.gif", 3, 0),
            ("animated.webp", 3, 0),
            ("still.gif", 1, 1),
            ("image.webp", 1, 1),
        ] {
            let info = probe(&conformance_image(name)).unwrap();
            assert_eq!((info.frames, info.plays), (frames, plays), "{name}");
            assert_eq!(info.animated, frames > 1, "{name}");
        }
        // The NETSCAPE2.0 count is the number of repeats after the first play; a GIF
        // without it plays once.
        let gif = conformance_image("animated.gif");
        let at = gif.windows(11).position(|w| w == b"NETSCAPE2.0").unwrap();
        let mut thrice = gif.clone();
        thrice[at + 13..at + 15].copy_from_slice(&2u16.to_le_bytes());
        assert_eq!(probe(&thrice).unwrap().plays, 3);
        let mut once = gif[..at - 3].to_vec();
        once.extend_from_slice(&gif[at + 16..]);
        let info = probe(&once).unwrap();
        assert_eq!((info.frames, info.plays), (4, 1));
        // Cut short: the frames whose descriptors are present are counted, no error.
        let cut = probe(&gif[..gif.len() * 3 / 4]).unwrap();
        assert!((2..4).contains(&cut.frames), "{}", cut.frames);
    }

    #[test]
    fn probe_failures() {
        assert!(matches!(
            probe(&fixture("not_an_image.txt")),
            Err(ImagingError::UnsupportedFormat)
        ));
        assert!(matches!(
            probe(&fixture("corrupt.png")),
            Err(ImagingError::Undecodable(_))
        ));
        assert!(matches!(probe(b""), Err(ImagingError::UnsupportedFormat)));
        assert!(matches!(
            probe(&[0xFF, 0xD8, 0xFF]),
            Err(ImagingError::Undecodable(_))
        ));
        assert!(matches!(
            probe(b"GIF89a\x01"),
            Err(ImagingError::Undecodable(_))
        ));
        assert!(matches!(
            probe(b"RIFF\0\0\0\0WEBPVP8 "),
            Err(ImagingError::Undecodable(_))
        ));
        // Every prefix of a valid file is either a valid header or an error, never a panic.
        for name in ["landscape.jpg", "alpha.png", "photo.webp", "animated.gif"] {
            let bytes = fixture(name);
            for n in 0..bytes.len().min(400) {
                let _ = probe(&bytes[..n]);
            }
        }
    }

    /// A big-endian TIFF block holding only Orientation = `value`.
    fn exif_orientation(value: u8) -> Vec<u8> {
        let mut t = b"MM\0\x2a\0\0\0\x08\0\x01".to_vec();
        t.extend_from_slice(&[0x01, 0x12, 0, 3, 0, 0, 0, 1, 0, value, 0, 0, 0, 0, 0, 0]);
        t
    }

    /// A RIFF chunk (WebP): kind, little-endian length, data, padding to an even length.
    fn riff(kind: &[u8], data: &[u8]) -> Vec<u8> {
        let mut c = kind.to_vec();
        c.extend_from_slice(&(data.len() as u32).to_le_bytes());
        c.extend_from_slice(data);
        if data.len() % 2 == 1 {
            c.push(0);
        }
        c
    }

    #[test]
    fn orientation_from_png_and_webp_exif() {
        let chunk = |kind: &[u8], data: &[u8]| {
            let mut c = (data.len() as u32).to_be_bytes().to_vec();
            c.extend_from_slice(kind);
            c.extend_from_slice(data);
            c.extend_from_slice(&[0; 4]); // The CRC is not checked by the header walk.
            c
        };
        let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
        png.extend(chunk(b"IHDR", &[0, 0, 0, 30, 0, 0, 0, 20, 8, 2, 0, 0, 0]));
        png.extend(chunk(b"eXIf", &exif_orientation(6)));
        png.extend(chunk(b"IDAT", &[]));
        assert_eq!(probe(&png).unwrap().orientation, 6);
        assert_eq!(probe(&png).unwrap().oriented_size(), (20, 30));

        let mut body = b"WEBP".to_vec();
        body.extend(riff(b"VP8X", &[0x08 | 0x10, 0, 0, 0, 29, 0, 0, 19, 0, 0]));
        body.extend(riff(b"VP8L", &[0x2F, 0, 0, 0, 0]));
        let mut exif = b"Exif\0\0".to_vec();
        exif.extend(exif_orientation(8));
        body.extend(riff(b"EXIF", &exif));
        let mut webp = b"RIFF".to_vec();
        webp.extend_from_slice(&(body.len() as u32).to_le_bytes());
        webp.extend(body);
        let info = probe(&webp).unwrap();
        assert_eq!(
            (info.width, info.height, info.orientation, info.has_alpha),
            (30, 20, 8, true)
        );
    }

    #[test]
    fn the_upright_size_from_a_prefix_only_when_the_prefix_is_enough() {
        use crate::imaging::probe::oriented_size_from_prefix as from_prefix;
        // An extended 30x20 WebP whose EXIF chunk (orientation 8: upright it is 20x30) comes
        // after 100 KiB of image data, as encoders write it.
        let webp = |flags: u8, exif: bool| {
            let mut body = b"WEBP".to_vec();
            body.extend(riff(b"VP8X", &[flags, 0, 0, 0, 29, 0, 0, 19, 0, 0]));
            let mut pixels = vec![0x2F, 0, 0, 0, 0];
            pixels.resize(100 << 10, 0);
            body.extend(riff(b"VP8L", &pixels));
            if exif {
                let mut exif = b"Exif\0\0".to_vec();
                exif.extend(exif_orientation(8));
                body.extend(riff(b"EXIF", &exif));
            }
            let mut file = b"RIFF".to_vec();
            file.extend_from_slice(&(body.len() as u32).to_le_bytes());
            file.extend(body);
            file
        };
        let prefix = 64 << 10;
        let rotated = webp(0x08, true);
        let total = rotated.len() as u64;
        assert_eq!(
            from_prefix(&rotated[..prefix], total),
            Ok(None),
            "EXIF comes later"
        );
        assert_eq!(from_prefix(&rotated, total), Ok(Some((20, 30))));
        let plain = webp(0, false);
        let total = plain.len() as u64;
        assert_eq!(from_prefix(&plain[..prefix], total), Ok(Some((30, 20))));

        // A JPEG is read up to its first scan: the EXIF orientation comes before it.
        let jpeg = fixture("exif_rotated.jpg");
        let upright = probe(&jpeg).unwrap().oriented_size();
        let cut = &jpeg[..jpeg.len() - 200];
        assert_eq!(from_prefix(cut, jpeg.len() as u64), Ok(Some(upright)));
        // Unless a large segment (here a 60 KiB comment) runs past the prefix.
        let mut padded = jpeg[..2].to_vec();
        padded.extend_from_slice(&[0xFF, 0xFE, 0xF0, 0x02]);
        padded.resize(padded.len() + 0xF000, b' ');
        padded.extend_from_slice(&jpeg[2..]);
        let total = padded.len() as u64;
        assert_eq!(from_prefix(&padded[..4096], total), Ok(None));
        assert_eq!(from_prefix(&padded, total), Ok(Some(upright)));

        let text = fixture("not_an_image.txt");
        assert!(from_prefix(&text, text.len() as u64).is_err());
    }

    #[test]
    fn cmyk_patches_come_out_red_and_blue() {
        let bytes = fixture("cmyk.jpg");
        let decoded = decode(&bytes, &probe(&bytes).unwrap(), 1, Precision::Full, 1 << 24).unwrap();
        let img = decoded.image.to_rgb8();
        let red = img.get_pixel(8, 16).0;
        let blue = img.get_pixel(56, 16).0;
        assert!(red[0] > 200 && red[1] < 50 && red[2] < 50, "left {red:?}");
        assert!(
            blue[0] < 50 && blue[1] < 50 && blue[2] > 200,
            "right {blue:?}"
        );
    }

    #[test]
    fn normalizes_to_8_bit() {
        let bytes = fixture("gray16.png");
        let decoded = decode(&bytes, &probe(&bytes).unwrap(), 1, Precision::Full, 1 << 24).unwrap();
        let img = decoded.image.as_rgb8().expect("opaque gray becomes RGB8");
        assert_eq!(img.get_pixel(0, 0).0, [0, 0, 0]);
        assert_eq!(img.get_pixel(47, 0).0, [255, 255, 255]);
        let bytes = fixture("alpha.png");
        let decoded = decode(&bytes, &probe(&bytes).unwrap(), 1, Precision::Full, 1 << 24).unwrap();
        assert!(decoded.image.as_rgba8().is_some());
    }

    #[test]
    fn jpeg_dct_scaling() {
        let bytes = fixture("landscape.jpg");
        let decoded = decode(&bytes, &probe(&bytes).unwrap(), 4, Precision::Full, 1 << 24).unwrap();
        assert_eq!(
            (
                decoded.image.width(),
                decoded.image.height(),
                decoded.shrink
            ),
            (160, 107, 4)
        );
    }

    #[test]
    fn broken_files_are_undecodable() {
        for name in ["truncated.jpg", "corrupt.png"] {
            let bytes = fixture(name);
            let result =
                probe(&bytes).and_then(|info| decode(&bytes, &info, 1, Precision::Full, 1 << 24));
            assert!(
                matches!(result, Err(ImagingError::Undecodable(_))),
                "{name}"
            );
        }
    }

    #[test]
    fn adobe_rgb_is_converted() {
        let bytes = fixture("icc_adobergb.jpg");
        let mut decoded =
            decode(&bytes, &probe(&bytes).unwrap(), 1, Precision::Full, 1 << 24).unwrap();
        let profile = decoded.icc.take().expect("Adobe RGB needs conversion");
        assert!(to_srgb(&mut decoded.image, &profile));
        let img = decoded.image.to_rgb8();
        // littleCMS gives (0,161,48) and (231,79,57) for the stored (60,160,60) and (200,80,60).
        let near = |a: [u8; 3], b: [u8; 3]| a.iter().zip(b).all(|(x, y)| x.abs_diff(y) <= 6);
        assert!(
            near(img.get_pixel(8, 16).0, [0, 161, 48]),
            "{:?}",
            img.get_pixel(8, 16)
        );
        assert!(
            near(img.get_pixel(56, 16).0, [231, 79, 57]),
            "{:?}",
            img.get_pixel(56, 16)
        );
    }

    /// A 16x8 red PNG carrying `icc` as its iCCP profile.
    fn png_with_icc(icc: Vec<u8>) -> Vec<u8> {
        use image::ImageEncoder;
        let mut out = Vec::new();
        let mut encoder = image::codecs::png::PngEncoder::new(&mut out);
        encoder.set_icc_profile(icc).unwrap();
        let pixels: Vec<u8> = [200u8, 30, 30].repeat(16 * 8);
        encoder
            .write_image(&pixels, 16, 8, image::ExtendedColorType::Rgb8)
            .unwrap();
        out
    }

    #[test]
    fn an_iccp_chunk_that_inflates_past_the_cap_is_ignored_not_inflated() {
        // 8 MiB of zeros compress to a few KB: the shape of a decompression bomb.
        let bomb = png_with_icc(vec![0; 2 * MAX_ICC_BYTES]);
        assert!(bomb.len() < 64 * 1024, "{} bytes", bomb.len());
        let stripped = without_oversized_iccp(&bomb).expect("the chunk is over the cap");
        assert!(!stripped.windows(4).any(|w| w == b"iCCP"));
        let decoded = decode(&bomb, &probe(&bomb).unwrap(), 1, Precision::Full, 1 << 30).unwrap();
        assert!(decoded.icc.is_none());
        assert_eq!(decoded.image.to_rgb8().get_pixel(3, 3).0, [200, 30, 30]);

        // A real profile under the cap is kept.
        let srgb = png_with_icc(fixture_icc());
        assert!(without_oversized_iccp(&srgb).is_none());
        assert!(probe(&srgb).unwrap().has_icc);
    }

    /// The Adobe RGB profile of `icc_adobergb.jpg`, reassembled.
    fn fixture_icc() -> Vec<u8> {
        jpeg_header(&fixture("icc_adobergb.jpg")).unwrap().icc
    }

    #[test]
    fn jpeg_icc_chunks_missing_or_misnumbered_are_ignored_as_browsers_do() {
        let bytes = fixture("icc_adobergb.jpg");
        let whole = jpeg_header(&bytes).unwrap().icc;
        assert!(!whole.is_empty());
        let at = memchr::memmem::find(&bytes, b"ICC_PROFILE\0").unwrap();
        // The fixture's profile is one chunk, "1 of 1". Renumber it, or claim a second.
        for (seq, count) in [(2u8, 1u8), (1, 2), (0, 1)] {
            let mut broken = bytes.clone();
            broken[at + 12] = seq;
            broken[at + 13] = count;
            assert!(
                jpeg_header(&broken).unwrap().icc.is_empty(),
                "{seq} of {count}"
            );
            let decoded = decode(
                &broken,
                &probe(&broken).unwrap(),
                1,
                Precision::Full,
                1 << 24,
            )
            .unwrap();
            assert!(decoded.icc.is_none());
        }
        // A broken EXIF block (an APP1 `Exif` segment of garbage) is ignored too.
        let mut bad_exif = bytes[..2].to_vec();
        bad_exif.extend_from_slice(&[0xFF, 0xE1, 0, 18]);
        bad_exif.extend_from_slice(b"Exif\0\0MM\0\x2a\xff\xff\xff\xf0\x01\x02");
        bad_exif.extend_from_slice(&bytes[2..]);
        let info = probe(&bad_exif).unwrap();
        assert_eq!(info.orientation, 1);
        let decoded = decode(&bad_exif, &info, 1, Precision::Full, 1 << 24).unwrap();
        assert_eq!(decoded.image.width(), 64);
        // A truncated profile (the chunk cut short, the segment length kept consistent) is
        // served too: it fails to parse or to convert, and the pixels are left as stored.
        let len_at = at - 2;
        let len = usize::from(u16::from_be_bytes([bytes[len_at], bytes[len_at + 1]]));
        let cut = 200;
        let mut truncated = bytes[..len_at].to_vec();
        truncated.extend_from_slice(&((len - cut) as u16).to_be_bytes());
        truncated.extend_from_slice(&bytes[at..len_at + len - cut]);
        truncated.extend_from_slice(&bytes[len_at + len..]);
        let mut decoded = decode(
            &truncated,
            &probe(&truncated).unwrap(),
            1,
            Precision::Full,
            1 << 24,
        )
        .unwrap();
        if let Some(profile) = decoded.icc.take() {
            to_srgb(&mut decoded.image, &profile);
        }
        assert_eq!(decoded.image.width(), 64);
    }
}
