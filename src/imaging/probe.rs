//! Sniffing and header-only probing of source images: the format from magic bytes (never
//! from a file name), and size, orientation, alpha, frames and the memory a decode needs,
//! read from the headers. Pure and allocation-bounded: nothing is allocated in proportion
//! to a declared size, so a pixel bomb is refused before any pixel buffer exists. A fuzz
//! target (`fuzz/fuzz_targets/probe.rs`).

use image::metadata::Orientation;

use super::{ImagingError, undecodable};

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

/// The upright size of a file of `total` bytes from its first bytes alone, for callers that
/// want only that (registration): `Ok(Some(..))` when `prefix` certainly holds everything
/// [`probe`] reads for it, `Ok(None)` when more of the file is needed (JPEG segments or a
/// TIFF directory that run past the prefix, or an extended WebP that announces EXIF, and
/// with it the orientation, after the pixels), `Err` when the file is no image we read.
pub fn oriented_size_from_prefix(
    prefix: &[u8],
    total: u64,
) -> Result<Option<(u32, u32)>, ImagingError> {
    let whole = prefix.len() as u64 >= total;
    let info = match probe(prefix) {
        Ok(info) => info,
        Err(e) if whole => return Err(e),
        Err(ImagingError::UnsupportedFormat) if prefix.len() >= 16 => {
            return Err(ImagingError::UnsupportedFormat);
        }
        Err(_) => return Ok(None),
    };
    // VP8X flags: 0x08 says an EXIF chunk follows, usually after the image data.
    let exif_announced = info.format == SourceFormat::Webp
        && prefix.get(12..16) == Some(b"VP8X")
        && prefix.get(20).is_some_and(|flags| flags & 0x08 != 0);
    if !whole && exif_announced && info.orientation == 1 {
        return Ok(None);
    }
    Ok(Some(info.oriented_size()))
}

/// What the JPEG marker segments before the first scan say.
#[derive(Debug, Default)]
pub(super) struct JpegHeader {
    pub(super) width: u32,
    pub(super) height: u32,
    pub(super) orientation: u8,
    /// The ICC profile reassembled from its APP2 chunks (empty when absent or broken).
    pub(super) icc: Vec<u8>,
    /// Where the APP2 ICC segments are, when their chunks are broken: libjpeg-turbo
    /// refuses such a file ("bad ICC marker"), so they are cut out before decoding.
    pub(super) broken_icc: Vec<std::ops::Range<usize>>,
    /// An Adobe APP14 marker is present (CMYK values are then stored inverted).
    pub(super) adobe: bool,
    /// Colour components in the frame (1 grey, 3 YCbCr, 4 CMYK/YCCK).
    pub(super) components: u8,
    /// The whole-image coefficient buffer libjpeg keeps for a progressive file, or a
    /// sequential one whose first scan does not hold every component; 0 otherwise.
    pub(super) coefficient_bytes: u64,
}

/// Walks the JPEG marker segments up to the first SOS. Reads only what the segments hold.
pub(super) fn jpeg_header(b: &[u8]) -> Result<JpegHeader, ImagingError> {
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
