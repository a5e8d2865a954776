//! Sniffing, header-only probing and decoding of source images.
//!
//! Invariants: the format comes from magic bytes, never from a file name; `probe` reads
//! headers only and allocates nothing in proportion to the declared size, so a pixel bomb is
//! refused before any pixel buffer exists; decoding always yields RGB8 (opaque) or RGBA8.
//! JPEG goes through libjpeg-turbo (DCT-scaled decoding); PNG, WebP and GIF go through the
//! `image` crate with an allocation limit as a second guard.

use std::io::Cursor;

use image::metadata::Orientation;
use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader};
use moxcms::{ColorProfile, DataColorSpace, Layout, TransformOptions};
use turbojpeg::{Colorspace, Decompressor, PixelFormat, ScalingFactor};

use super::ImagingError;

/// A decodable source format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SourceFormat {
    Jpeg,
    Png,
    Webp,
    Gif,
    /// Served as PNG by default, as Thumbor does; the first page only.
    Tiff,
    /// Served as JPEG by default (PNG with alpha), as Thumbor does.
    Bmp,
}

impl SourceFormat {
    /// The media type files of this format are stored with.
    pub fn mime(self) -> &'static str {
        match self {
            SourceFormat::Jpeg => "image/jpeg",
            SourceFormat::Png => "image/png",
            SourceFormat::Webp => "image/webp",
            SourceFormat::Gif => "image/gif",
            SourceFormat::Tiff => "image/tiff",
            SourceFormat::Bmp => "image/bmp",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            SourceFormat::Jpeg => "jpeg",
            SourceFormat::Png => "png",
            SourceFormat::Webp => "webp",
            SourceFormat::Gif => "gif",
            SourceFormat::Tiff => "tiff",
            SourceFormat::Bmp => "bmp",
        }
    }
}

/// Facts about a source read from its header alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourceInfo {
    pub format: SourceFormat,
    /// Width as stored, before EXIF orientation.
    pub width: u32,
    /// Height as stored, before EXIF orientation.
    pub height: u32,
    /// EXIF orientation, 1..=8 (1 when absent or invalid).
    pub orientation: u8,
    pub has_alpha: bool,
    /// More than one frame (GIF, animated WebP, APNG).
    pub animated: bool,
    /// Frames in the file (1 for a still image), counted from the headers.
    pub frames: u32,
    /// How many times an animation plays, 0 for forever (1 for a still image).
    pub plays: u16,
    pub has_icc: bool,
    /// Bytes per pixel of the decoder's own output, before it becomes RGB8 or RGBA8 (3 for
    /// a YCbCr JPEG, 8 for a 16-bit RGBA PNG). Used to reserve memory before decoding.
    pub sample_bytes: u8,
    /// Memory the decoder keeps for the whole image whatever the output scale: a
    /// progressive (or multi-scan) JPEG's DCT coefficients, 2 bytes each, at full size.
    pub coefficient_bytes: u64,
}

impl SourceInfo {
    /// A header parser's starting point: size unknown (0x0, refused unless filled in),
    /// upright, opaque, still, no profile.
    fn header_start(format: SourceFormat) -> SourceInfo {
        SourceInfo {
            format,
            width: 0,
            height: 0,
            orientation: 1,
            has_alpha: false,
            animated: false,
            frames: 1,
            plays: 1,
            has_icc: false,
            sample_bytes: 4,
            coefficient_bytes: 0,
        }
    }

    /// The most memory a decode at 1/`shrink` (JPEG; 1 for other formats) holds at once:
    /// the decoder's output, its conversion to RGB8/RGBA8, and a progressive JPEG's
    /// coefficients. An estimate from the headers, on the high side.
    pub fn decode_bytes(&self, shrink: u32) -> u64 {
        let shrink = u64::from(shrink.max(1));
        // Saturating: a header may claim 4 billion pixels a side (refused later by the
        // pixel limit, but estimated first).
        let px = u64::from(self.width)
            .div_ceil(shrink)
            .saturating_mul(u64::from(self.height).div_ceil(shrink));
        // The conversion copy that lives next to the decoder's output: none for 8-bit RGB,
        // RGB for 8-bit RGBA (dropped when every pixel is opaque) and CMYK, RGBA otherwise.
        let converted = match self.sample_bytes {
            3 => 0,
            4 => 3,
            _ => 4,
        };
        px.saturating_mul(u64::from(self.sample_bytes) + converted)
            .saturating_add(self.coefficient_bytes)
    }

    /// Width and height as displayed, after EXIF orientation.
    pub fn oriented_size(&self) -> (u32, u32) {
        if self.orientation >= 5 {
            (self.height, self.width)
        } else {
            (self.width, self.height)
        }
    }
}

/// The format named by the magic bytes, if it is one we decode.
pub fn sniff(bytes: &[u8]) -> Option<SourceFormat> {
    if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        Some(SourceFormat::Jpeg)
    } else if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some(SourceFormat::Png)
    } else if bytes.starts_with(b"GIF87a") || bytes.starts_with(b"GIF89a") {
        Some(SourceFormat::Gif)
    } else if bytes.len() >= 12 && &bytes[0..4] == b"RIFF" && &bytes[8..12] == b"WEBP" {
        Some(SourceFormat::Webp)
    } else if bytes.starts_with(b"II*\0") || bytes.starts_with(b"MM\0*") {
        Some(SourceFormat::Tiff)
    } else if bytes.starts_with(b"BM")
        && bytes
            .get(14..18)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .is_some_and(|dib| matches!(dib, 12 | 40 | 52 | 56 | 64 | 108 | 124))
    {
        Some(SourceFormat::Bmp)
    } else {
        None
    }
}

/// Reads the source's format, size, orientation, alpha, animation and ICC presence from its
/// headers without decoding pixels.
pub fn probe(bytes: &[u8]) -> Result<SourceInfo, ImagingError> {
    let format = sniff(bytes).ok_or(ImagingError::UnsupportedFormat)?;
    let info = match format {
        SourceFormat::Jpeg => {
            let h = jpeg_header(bytes)?;
            SourceInfo {
                format,
                width: h.width,
                height: h.height,
                orientation: h.orientation,
                has_alpha: false,
                animated: false,
                frames: 1,
                plays: 1,
                has_icc: !h.icc.is_empty(),
                sample_bytes: if h.components == 4 { 4 } else { 3 },
                coefficient_bytes: h.coefficient_bytes,
            }
        }
        SourceFormat::Png => png_header(bytes)?,
        SourceFormat::Gif => gif_header(bytes)?,
        SourceFormat::Webp => webp_header(bytes)?,
        SourceFormat::Tiff => tiff_header(bytes)?,
        SourceFormat::Bmp => bmp_header(bytes)?,
    };
    if info.width == 0 || info.height == 0 {
        return Err(undecodable("zero width or height in header"));
    }
    Ok(info)
}

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

fn undecodable(msg: impl Into<String>) -> ImagingError {
    ImagingError::Undecodable(msg.into())
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

/// What the JPEG marker segments before the first scan say.
#[derive(Debug, Default)]
struct JpegHeader {
    width: u32,
    height: u32,
    orientation: u8,
    /// The ICC profile reassembled from its APP2 chunks (empty when absent or broken).
    icc: Vec<u8>,
    /// Where the APP2 ICC segments are, when their chunks are broken: libjpeg-turbo
    /// refuses such a file ("bad ICC marker"), so they are cut out before decoding.
    broken_icc: Vec<std::ops::Range<usize>>,
    /// An Adobe APP14 marker is present (CMYK values are then stored inverted).
    adobe: bool,
    /// Colour components in the frame (1 grey, 3 YCbCr, 4 CMYK/YCCK).
    components: u8,
    /// The whole-image coefficient buffer libjpeg keeps for a progressive file, or a
    /// sequential one whose first scan does not hold every component; 0 otherwise.
    coefficient_bytes: u64,
}

/// Walks the JPEG marker segments up to the first SOS. Reads only what the segments hold.
fn jpeg_header(b: &[u8]) -> Result<JpegHeader, ImagingError> {
    let truncated = || undecodable("truncated JPEG header");
    let mut header = JpegHeader {
        orientation: 1,
        ..JpegHeader::default()
    };
    // (sequence number from 1, chunk count, data) of each APP2 ICC segment.
    let mut icc_chunks: Vec<(u8, u8, &[u8])> = Vec::new();
    let mut icc_segments = Vec::new();
    let mut seen_frame = false;
    // (horizontal, vertical) sampling factor of each component, and whether the frame is
    // progressive.
    let mut sampling: Vec<(u8, u8)> = Vec::new();
    let mut progressive = false;
    let mut pos = 2;
    loop {
        let segment_start = pos;
        // Markers are 0xFF followed by a code; any number of 0xFF fill bytes may precede it.
        if *b.get(pos).ok_or_else(truncated)? != 0xFF {
            return Err(undecodable("JPEG marker expected"));
        }
        while b.get(pos) == Some(&0xFF) {
            pos += 1;
        }
        let marker = *b.get(pos).ok_or_else(truncated)?;
        pos += 1;
        if marker == 0x01 || (0xD0..=0xD8).contains(&marker) {
            continue; // Stand-alone markers without a length.
        }
        if marker == 0xD9 {
            return Err(undecodable("JPEG ends before any image data"));
        }
        let len = usize::from(u16::from_be_bytes([
            *b.get(pos).ok_or_else(truncated)?,
            *b.get(pos + 1).ok_or_else(truncated)?,
        ]));
        if len < 2 {
            return Err(undecodable("bad JPEG segment length"));
        }
        let seg = b.get(pos + 2..pos + len).ok_or_else(truncated)?;
        pos += len;
        match marker {
            // SOF0..SOF15 except DHT (C4), JPG (C8) and DAC (CC).
            0xC0..=0xCF if !matches!(marker, 0xC4 | 0xC8 | 0xCC) => {
                if seg.len() < 6 {
                    return Err(truncated());
                }
                header.height = u32::from(u16::from_be_bytes([seg[1], seg[2]]));
                header.width = u32::from(u16::from_be_bytes([seg[3], seg[4]]));
                header.components = seg[5];
                sampling = seg[6..]
                    .chunks_exact(3)
                    .take(usize::from(seg[5]))
                    .map(|c| (c[1] >> 4, c[1] & 15))
                    .collect();
                progressive = matches!(marker, 0xC2 | 0xC6 | 0xCA | 0xCE);
                seen_frame = true;
            }
            0xE1 if seg.starts_with(b"Exif\0\0") => {
                if let Some(o) = Orientation::from_exif_chunk(&seg[6..]) {
                    header.orientation = o.to_exif();
                }
            }
            0xE2 if seg.starts_with(b"ICC_PROFILE\0") => {
                icc_segments.push(segment_start..pos);
                match seg.get(12..14) {
                    Some(&[seq, count]) => icc_chunks.push((seq, count, &seg[14..])),
                    // Too short to be a chunk: the whole profile is broken.
                    _ => icc_chunks.push((0, 0, &[])),
                }
            }
            0xEE if seg.starts_with(b"Adobe") => header.adobe = true,
            0xDA => {
                let in_scan = seg.first().copied().unwrap_or(0);
                if progressive || in_scan < header.components {
                    header.coefficient_bytes =
                        coefficient_bytes(header.width, header.height, &sampling);
                }
                break;
            }
            _ => {}
        }
    }
    if !seen_frame {
        return Err(undecodable("JPEG has no frame header"));
    }
    icc_chunks.sort_by_key(|&(seq, _, _)| seq);
    // Browsers ignore a profile whose chunks are missing, misnumbered or disagree on the
    // count: so does this (the pixels are then taken as sRGB).
    let count = icc_chunks.len();
    let whole = icc_chunks
        .iter()
        .enumerate()
        .all(|(i, &(seq, total, _))| usize::from(seq) == i + 1 && usize::from(total) == count);
    if whole {
        header.icc = icc_chunks
            .into_iter()
            .flat_map(|(_, _, data)| data.iter().copied())
            .collect();
    } else {
        tracing::warn!("JPEG ICC profile chunks missing or misnumbered; profile ignored");
        header.broken_icc = icc_segments;
    }
    Ok(header)
}

/// The bytes of a whole-image DCT coefficient buffer: 64 coefficients of 2 bytes per 8x8
/// block of each component, at the component's sampling.
fn coefficient_bytes(width: u32, height: u32, sampling: &[(u8, u8)]) -> u64 {
    let h_max = sampling.iter().map(|s| s.0).max().unwrap_or(1).max(1);
    let v_max = sampling.iter().map(|s| s.1).max().unwrap_or(1).max(1);
    sampling
        .iter()
        .map(|&(h, v)| {
            let cols = (u64::from(width) * u64::from(h)).div_ceil(u64::from(h_max) * 8);
            let rows = (u64::from(height) * u64::from(v)).div_ceil(u64::from(v_max) * 8);
            // libjpeg pads each component to whole MCUs.
            cols.next_multiple_of(u64::from(h.max(1)))
                * rows.next_multiple_of(u64::from(v.max(1)))
                * 128
        })
        .sum()
}

/// Reads the first IFD of a TIFF: size (tags 256/257), orientation (274), and whether an
/// extra sample (338) or a fourth/second sample per pixel (277) carries alpha.
fn tiff_header(b: &[u8]) -> Result<SourceInfo, ImagingError> {
    let truncated = || undecodable("truncated TIFF header");
    let little = b.starts_with(b"II");
    let u16_at = |at: usize| -> Option<u32> {
        let x = b.get(at..at + 2)?;
        Some(u32::from(if little {
            u16::from_le_bytes([x[0], x[1]])
        } else {
            u16::from_be_bytes([x[0], x[1]])
        }))
    };
    let u32_at = |at: usize| -> Option<u32> {
        let x: [u8; 4] = b.get(at..at + 4)?.try_into().ok()?;
        Some(if little {
            u32::from_le_bytes(x)
        } else {
            u32::from_be_bytes(x)
        })
    };
    let ifd = u32_at(4).ok_or_else(truncated)? as usize;
    let count = u16_at(ifd).ok_or_else(truncated)? as usize;
    let mut info = SourceInfo::header_start(SourceFormat::Tiff);
    let mut samples = 1;
    let mut bits = 8;
    for i in 0..count.min(1024) {
        let at = ifd + 2 + i * 12;
        let tag = u16_at(at).ok_or_else(truncated)?;
        let kind = u16_at(at + 2).ok_or_else(truncated)?;
        // SHORT values sit in the first two bytes of the value field, LONG in all four.
        let value = match kind {
            3 => u16_at(at + 8),
            4 => u32_at(at + 8),
            _ => None,
        };
        match (tag, value) {
            (256, Some(v)) => info.width = v,
            (257, Some(v)) => info.height = v,
            (274, Some(v @ 1..=8)) => info.orientation = v as u8,
            (277, Some(v)) => samples = v,
            (258, _) => {
                // BitsPerSample: one SHORT per sample, in the entry when two fit.
                let count = u32_at(at + 4).unwrap_or(0);
                let first = if count <= 2 {
                    u16_at(at + 8)
                } else {
                    u32_at(at + 8).and_then(|off| u16_at(off as usize))
                };
                bits = first.unwrap_or(32);
            }
            (338, _) => info.has_alpha = true,
            (34675, _) => info.has_icc = true,
            _ => {}
        }
    }
    info.has_alpha |= samples == 2 || samples >= 4;
    info.sample_bytes =
        u8::try_from(samples.clamp(1, 4) * bits.clamp(8, 32).div_ceil(8)).unwrap_or(16);
    Ok(info)
}

/// Reads a BMP's DIB header: width, height (negative when stored top-down) and bit depth.
fn bmp_header(b: &[u8]) -> Result<SourceInfo, ImagingError> {
    let truncated = || undecodable("truncated BMP header");
    let dib = u32::from_le_bytes(
        b.get(14..18)
            .ok_or_else(truncated)?
            .try_into()
            .expect("4 bytes"),
    );
    let (width, height, bits) = if dib == 12 {
        let x = b.get(18..26).ok_or_else(truncated)?;
        (
            u32::from(u16::from_le_bytes([x[0], x[1]])),
            u32::from(u16::from_le_bytes([x[2], x[3]])),
            u16::from_le_bytes([x[6], x[7]]),
        )
    } else {
        let x = b.get(18..30).ok_or_else(truncated)?;
        let w = i32::from_le_bytes([x[0], x[1], x[2], x[3]]);
        let h = i32::from_le_bytes([x[4], x[5], x[6], x[7]]);
        (
            w.unsigned_abs(),
            h.unsigned_abs(),
            u16::from_le_bytes([x[10], x[11]]),
        )
    };
    Ok(SourceInfo {
        width,
        height,
        has_alpha: bits == 32,
        ..SourceInfo::header_start(SourceFormat::Bmp)
    })
}

/// Reads IHDR and the ancillary chunks before the first IDAT.
fn png_header(b: &[u8]) -> Result<SourceInfo, ImagingError> {
    let truncated = || undecodable("truncated PNG header");
    let mut info = SourceInfo::header_start(SourceFormat::Png);
    // Bytes per sample as decoded (16-bit stays 16-bit).
    let mut depth = 1;
    let mut pos = 8;
    loop {
        let head = b.get(pos..pos + 8).ok_or_else(truncated)?;
        let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
        let kind = &head[4..8];
        let data = b.get(pos + 8..pos + 8 + len).ok_or_else(truncated)?;
        pos += 12 + len;
        match kind {
            b"IHDR" => {
                if len < 13 {
                    return Err(undecodable("bad PNG IHDR"));
                }
                info.width = u32::from_be_bytes([data[0], data[1], data[2], data[3]]);
                info.height = u32::from_be_bytes([data[4], data[5], data[6], data[7]]);
                info.has_alpha = matches!(data[9], 4 | 6);
                // The decoder expands palettes to RGB and depths below 8 to 8 bits.
                let channels = match data[9] {
                    0 => 1,
                    4 => 2,
                    6 => 4,
                    _ => 3,
                };
                depth = if data[8] == 16 { 2 } else { 1 };
                info.sample_bytes = channels * depth;
            }
            _ if info.width == 0 => return Err(undecodable("PNG does not start with IHDR")),
            b"tRNS" => {
                // Transparency adds an alpha channel of the samples' depth.
                if !info.has_alpha {
                    info.sample_bytes += depth;
                }
                info.has_alpha = true;
            }
            b"iCCP" => info.has_icc = true,
            b"acTL" => {
                // An APNG: its frames are counted, but only its default image is decoded.
                if let Some(n) = data.get(0..4) {
                    info.frames = u32::from_be_bytes([n[0], n[1], n[2], n[3]]).max(1);
                    info.animated = info.frames > 1;
                }
            }
            b"eXIf" => {
                if let Some(o) = Orientation::from_exif_chunk(data) {
                    info.orientation = o.to_exif();
                }
            }
            b"IDAT" | b"IEND" => break,
            _ => {}
        }
    }
    Ok(info)
}

/// Reads the logical screen and walks every block to count the frames and find the loop
/// count (the NETSCAPE2.0 extension). Block contents are skipped, never decompressed.
fn gif_header(b: &[u8]) -> Result<SourceInfo, ImagingError> {
    let truncated = || undecodable("truncated GIF header");
    let screen = b.get(6..13).ok_or_else(truncated)?;
    let mut info = SourceInfo {
        width: u32::from(u16::from_le_bytes([screen[0], screen[1]])),
        height: u32::from(u16::from_le_bytes([screen[2], screen[3]])),
        frames: 0,
        ..SourceInfo::header_start(SourceFormat::Gif)
    };
    let table_len = |flags: u8| {
        if flags & 0x80 != 0 {
            3usize << ((flags & 7) + 1)
        } else {
            0
        }
    };
    let mut pos = 13 + table_len(screen[4]);
    let skip_sub_blocks = |mut pos: usize| -> Option<usize> {
        loop {
            let n = usize::from(*b.get(pos)?);
            pos += 1 + n;
            if n == 0 {
                return Some(pos);
            }
        }
    };
    // A file cut short after its first frame still has a usable header: the frames
    // counted are the ones present.
    loop {
        match b.get(pos) {
            Some(0x21) => {
                let label = *b.get(pos + 1).ok_or_else(truncated)?;
                // The graphic control extension of the first frame says whether it has a
                // transparent colour.
                if label == 0xF9
                    && info.frames == 0
                    && b.get(pos + 3).is_some_and(|flags| flags & 1 != 0)
                {
                    info.has_alpha = true;
                }
                // NETSCAPE2.0 (or ANIMEXTS1.0): sub-block 1 holds the repeat count, where
                // 0 is forever and n plays the animation n more times after the first.
                if label == 0xFF
                    && let Some(id) = b.get(pos + 2..pos + 14)
                    && (id == b"\x0bNETSCAPE2.0" || id == b"\x0bANIMEXTS1.0")
                    && let Some(&[3, 1, lo, hi]) = b.get(pos + 14..pos + 18)
                {
                    info.plays = match u16::from_le_bytes([lo, hi]) {
                        0 => 0,
                        n => n.saturating_add(1),
                    };
                }
                match skip_sub_blocks(pos + 2) {
                    Some(next) => pos = next,
                    None if info.frames > 0 => break,
                    None => return Err(truncated()),
                }
            }
            Some(0x2C) => {
                let flags = *b.get(pos + 9).ok_or_else(truncated)?;
                pos += 10 + table_len(flags) + 1; // Descriptor, local table, LZW code size.
                info.frames += 1;
                match skip_sub_blocks(pos) {
                    Some(next) => pos = next,
                    None => break,
                }
            }
            Some(0x3B) | None if info.frames > 0 => break,
            // Bytes after the last frame that are not a block: what decoders ignore.
            Some(_) if info.frames > 0 => break,
            None => return Err(truncated()),
            _ => return Err(undecodable("malformed GIF block")),
        }
    }
    info.animated = info.frames > 1;
    if !info.animated {
        info.plays = 1;
    }
    Ok(info)
}

/// Reads the RIFF chunk headers of a WebP file (payloads are skipped by their sizes).
fn webp_header(b: &[u8]) -> Result<SourceInfo, ImagingError> {
    let truncated = || undecodable("truncated WebP header");
    let mut info = SourceInfo::header_start(SourceFormat::Webp);
    let mut pos = 12;
    let mut first = true;
    while let Some(head) = b.get(pos..pos + 8) {
        let kind = &head[0..4];
        let len = u32::from_le_bytes([head[4], head[5], head[6], head[7]]) as usize;
        // The payload may be cut short only after the first chunk has given the size.
        let data = match b.get(pos + 8..pos + 8 + len) {
            Some(data) => data,
            None if !first => break,
            None => b.get(pos + 8..).ok_or_else(truncated)?,
        };
        match kind {
            b"VP8 " if first => {
                if data.len() < 10 || data[3..6] != [0x9D, 0x01, 0x2A] {
                    return Err(undecodable("bad VP8 frame header"));
                }
                info.width = u32::from(u16::from_le_bytes([data[6], data[7]]) & 0x3FFF);
                info.height = u32::from(u16::from_le_bytes([data[8], data[9]]) & 0x3FFF);
                return Ok(info); // A simple-format file has nothing else to say.
            }
            b"VP8L" if first => {
                if data.len() < 5 || data[0] != 0x2F {
                    return Err(undecodable("bad VP8L header"));
                }
                let bits = u32::from_le_bytes([data[1], data[2], data[3], data[4]]);
                info.width = (bits & 0x3FFF) + 1;
                info.height = ((bits >> 14) & 0x3FFF) + 1;
                info.has_alpha = (bits >> 28) & 1 == 1;
                return Ok(info);
            }
            b"VP8X" if first => {
                if data.len() < 10 {
                    return Err(truncated());
                }
                let flags = data[0];
                info.has_icc = flags & 0x20 != 0;
                info.has_alpha = flags & 0x10 != 0;
                info.animated = flags & 0x02 != 0;
                if info.animated {
                    info.frames = 0;
                }
                info.width = u32::from_le_bytes([data[4], data[5], data[6], 0]) + 1;
                info.height = u32::from_le_bytes([data[7], data[8], data[9], 0]) + 1;
            }
            b"ANIM" if info.animated => {
                if let Some(&[lo, hi]) = data.get(4..6) {
                    info.plays = u16::from_le_bytes([lo, hi]);
                }
            }
            b"ANMF" if info.animated => info.frames += 1,
            b"EXIF" => {
                let tiff = data.strip_prefix(b"Exif\0\0").unwrap_or(data);
                if let Some(o) = Orientation::from_exif_chunk(tiff) {
                    info.orientation = o.to_exif();
                }
            }
            _ if first => return Err(undecodable("WebP does not start with VP8, VP8L or VP8X")),
            _ => {}
        }
        first = false;
        pos += 8 + len + (len & 1);
    }
    if first {
        return Err(truncated());
    }
    if info.animated {
        // Frames cut off at the end are not counted; one frame is a still image.
        info.frames = info.frames.max(1);
        info.animated = info.frames > 1;
        if !info.animated {
            info.plays = 1;
        }
    }
    Ok(info)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::imaging::conformance_image;

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

        let riff = |kind: &[u8], data: &[u8]| {
            let mut c = kind.to_vec();
            c.extend_from_slice(&(data.len() as u32).to_le_bytes());
            c.extend_from_slice(data);
            if data.len() % 2 == 1 {
                c.push(0);
            }
            c
        };
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
