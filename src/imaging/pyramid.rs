//! Reduced copies of an original (derivatives, an image pyramid), built once per file so
//! that most renders start from a few hundred kilopixels instead of 12–20 megapixels.
//!
//! A level is the whole original, upright (EXIF orientation applied) and in sRGB, resized
//! so its long edge is one of the configured sizes: JPEG at `LEVEL_QUALITY` without chroma
//! subsampling for opaque images, fast-compressed PNG when there is alpha. Levels are only
//! made where they save real work: the original's long edge must be at least
//! `MIN_REDUCTION` times the level's. Animated images get no levels (renders keep the first
//! frame of the original).
//!
//! `Pyramid` is what the metadata store keeps per file: the original's format and upright
//! size and the size of each level, in a short text form (`jpeg 6028x3391 640x360 2560x1440`).

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};

use image::DynamicImage;

use super::decode;
use super::geometry::{self, Size};
use super::probe::{SourceFormat, SourceInfo, probe};
use super::recipe::Recipe;
use super::resize::{CropBox, resize};
use super::{ImagingError, Limits, encode};

/// JPEG quality of opaque levels: visually lossless once resampled again (see README,
/// "How derivative quality was checked").
pub const LEVEL_QUALITY: u8 = 90;
/// A level is built only if the original's long edge is at least this many times its own.
pub const MIN_REDUCTION: f64 = 1.5;

/// The reduced copies a file has: `levels` ascending, sizes upright.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pyramid {
    /// The original's format (output format negotiation keeps following the original).
    pub format: SourceFormat,
    pub width: u32,
    pub height: u32,
    pub levels: Vec<Size>,
}

/// The original a reduced copy stands in for, as a render needs it: its upright size and
/// its format (planning, crops and format negotiation follow the original).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Original {
    pub width: u32,
    pub height: u32,
    pub format: SourceFormat,
}

impl Pyramid {
    /// The original its levels were made from.
    pub fn original(&self) -> Original {
        Original {
            width: self.width,
            height: self.height,
            format: self.format,
        }
    }

    /// The level to render `recipe` from: the smallest with `geometry::LEVEL_MARGIN` source
    /// pixels per output pixel; `None` means the original. Trims need the original's pixels.
    pub fn level_for(&self, recipe: &Recipe, max_side: u32) -> Option<Size> {
        if recipe.trim.is_some() || self.levels.is_empty() {
            return None;
        }
        let full = Size::new(self.width, self.height);
        let base = recipe
            .crop
            .and_then(|c| geometry::clamp_rect(c, full))
            .map_or(full, |r| Size::new(r.width(), r.height()));
        let plan = geometry::plan(base, recipe, max_side).ok()?;
        let window = Size::new(plan.window.width(), plan.window.height());
        // The window of a manual crop is a part of the base, itself a part of the original.
        geometry::pick_level(full, &self.levels, window, plan.resize).map(|i| self.levels[i])
    }

    /// A level's long edge: the name it is stored under.
    pub fn long_edge(level: Size) -> u32 {
        level.width.max(level.height)
    }
}

impl fmt::Display for Pyramid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}x{}", self.format.name(), self.width, self.height)?;
        for l in &self.levels {
            write!(f, " {}x{}", l.width, l.height)?;
        }
        Ok(())
    }
}

impl std::str::FromStr for Pyramid {
    type Err = String;

    fn from_str(s: &str) -> Result<Pyramid, String> {
        let bad = || format!("not a pyramid description: `{s}`");
        let mut parts = s.split(' ');
        let format = match parts.next() {
            Some("jpeg") => SourceFormat::Jpeg,
            Some("png") => SourceFormat::Png,
            Some("webp") => SourceFormat::Webp,
            Some("gif") => SourceFormat::Gif,
            Some("tiff") => SourceFormat::Tiff,
            Some("bmp") => SourceFormat::Bmp,
            _ => return Err(bad()),
        };
        let size = |p: &str| -> Option<Size> {
            let (w, h) = p.split_once('x')?;
            let (w, h) = (w.parse().ok()?, h.parse().ok()?);
            (w > 0 && h > 0).then(|| Size::new(w, h))
        };
        let full = parts.next().and_then(size).ok_or_else(bad)?;
        let levels = parts
            .map(|p| size(p).ok_or_else(bad))
            .collect::<Result<Vec<_>, _>>()?;
        if !levels.windows(2).all(|w| w[0].width < w[1].width) {
            return Err(bad());
        }
        Ok(Pyramid {
            format,
            width: full.width,
            height: full.height,
            levels,
        })
    }
}

/// One built level, ready to store.
#[derive(Debug)]
pub struct Level {
    pub size: Size,
    pub bytes: Vec<u8>,
    pub mime: &'static str,
}

/// What a build of `bytes` needs: the source's headers, its upright size, the levels wanted
/// (ascending) and the JPEG shrink-on-load factor. `None` for an animation (no levels).
struct Plan {
    info: SourceInfo,
    full: Size,
    wanted: Vec<Size>,
    shrink: u32,
}

fn plan(bytes: &[u8], sizes: &[u32], limits: &Limits) -> Result<Option<Plan>, ImagingError> {
    let info = probe(bytes)?;
    if u64::from(info.width) * u64::from(info.height) > limits.max_source_pixels {
        return Err(ImagingError::TooManyPixels {
            width: info.width,
            height: info.height,
            limit: limits.max_source_pixels,
        });
    }
    if info.animated {
        return Ok(None);
    }
    let (ow, oh) = info.oriented_size();
    let full = Size::new(ow, oh);
    let long = ow.max(oh);
    let wanted: Vec<Size> = sizes
        .iter()
        .filter(|&&s| f64::from(long) >= MIN_REDUCTION * f64::from(s))
        .map(|&s| fit_long_edge(full, s))
        .collect();
    // Shrink-on-load down to at least the largest level, then one Lanczos pass per level,
    // each from the next larger one.
    let shrink = match wanted.last() {
        Some(&largest) if info.format == SourceFormat::Jpeg => {
            geometry::shrink_factor(full, largest)
        }
        _ => 1,
    };
    Ok(Some(Plan {
        info,
        full,
        wanted,
        shrink,
    }))
}

/// An estimate, on the high side, of the most memory [`build`] holds at once: the source and
/// an edited copy, the decode, its upright or sRGB copy, and the largest level twice (the
/// resized level, then the next level resized from it). What the builder reserves from the
/// memory budget first.
pub fn memory_need(bytes: &[u8], sizes: &[u32], limits: &Limits) -> Result<u64, ImagingError> {
    let source = 2 * bytes.len() as u64;
    let Some(plan) = plan(bytes, sizes, limits)? else {
        return Ok(source);
    };
    let Some(largest) = plan.wanted.last() else {
        return Ok(source);
    };
    let info = &plan.info;
    let shrink = u64::from(plan.shrink);
    let decoded = u64::from(info.width)
        .div_ceil(shrink)
        .saturating_mul(u64::from(info.height).div_ceil(shrink));
    let bpp = if info.has_alpha { 4 } else { 3 };
    // Turning the decode upright or into sRGB works on a copy of it.
    let copy = if info.orientation > 1 || info.has_icc {
        decoded.saturating_mul(bpp)
    } else {
        0
    };
    let level = u64::from(largest.width) * u64::from(largest.height);
    Ok(info
        .decode_bytes(plan.shrink)
        .saturating_add(copy)
        .saturating_add(source + level * bpp * 2 + (4 << 20)))
}

/// Builds the levels for `sizes` (long edges, ascending). `Ok(None)`: the file gets no
/// pyramid at all (animated). Synchronous and CPU-bound; `cancel` is checked between levels.
pub fn build(
    bytes: &[u8],
    sizes: &[u32],
    limits: &Limits,
    cancel: &AtomicBool,
) -> Result<Option<(Pyramid, Vec<Level>)>, ImagingError> {
    let Some(Plan {
        info,
        full,
        wanted,
        shrink,
    }) = plan(bytes, sizes, limits)?
    else {
        return Ok(None);
    };
    let mut pyramid = Pyramid {
        format: info.format,
        width: full.width,
        height: full.height,
        levels: Vec::new(),
    };
    if wanted.is_empty() {
        return Ok(Some((pyramid, Vec::new())));
    }
    let max_alloc = limits
        .max_source_pixels
        .saturating_mul(8)
        .saturating_add(64 << 20);
    let decoded = decode::decode(bytes, &info, shrink, decode::Precision::Full, max_alloc)?;
    let mut image = decoded.image;
    if info.orientation > 1 {
        decode::orient(&mut image, info.orientation);
    }
    if let Some(profile) = &decoded.icc {
        decode::to_srgb(&mut image, profile);
    }
    let mut built = Vec::with_capacity(wanted.len());
    let mut from: DynamicImage = image;
    for &size in wanted.iter().rev() {
        if cancel.load(Ordering::Relaxed) {
            return Err(ImagingError::Cancelled);
        }
        let level = resize(&from, CropBox::whole(&from), size)?;
        let (bytes, mime) = if level.color().has_alpha() {
            (encode::png_fast(&level)?, "image/png")
        } else {
            (
                encode::jpeg_full_chroma(&level, LEVEL_QUALITY)?,
                "image/jpeg",
            )
        };
        built.push(Level { size, bytes, mime });
        from = level;
    }
    built.reverse();
    pyramid.levels = built.iter().map(|l| l.size).collect();
    Ok(Some((pyramid, built)))
}

/// `full` scaled so that its long edge is `long_edge` (each side at least 1 px).
fn fit_long_edge(full: Size, long_edge: u32) -> Size {
    let scale = f64::from(long_edge) / f64::from(full.width.max(full.height));
    let side = |v: u32| ((f64::from(v) * scale).round() as u32).max(1);
    Size::new(side(full.width), side(full.height))
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{Rgb, RgbImage, Rgba, RgbaImage};

    fn jpeg(w: u32, h: u32) -> Vec<u8> {
        let img = RgbImage::from_fn(w, h, |x, y| Rgb([(x % 251) as u8, (y % 241) as u8, 90]));
        encode::encode(
            &DynamicImage::ImageRgb8(img),
            super::super::Format::Jpeg,
            90,
        )
        .unwrap()
    }

    #[test]
    fn a_13_mp_progressive_photo_gets_its_levels_within_the_default_budget() {
        // The 300x200 progressive test image with its frame header saying 4224x3168 (the
        // bench's dragonfly.jpg): only the headers are read.
        let mut bytes = crate::imaging::conformance_image("progressive.jpg");
        let sof = bytes.windows(2).position(|w| w == [0xFF, 0xC2]).unwrap();
        bytes[sof + 5..sof + 9].copy_from_slice(&[0x0C, 0x60, 0x10, 0x80]);
        let limits = Limits {
            max_source_pixels: 100_000_000,
            max_output_side: 8192,
            max_animation_pixels: 50_000_000,
        };
        let need = memory_need(&bytes, &[640, 1800, 2560], &limits).unwrap();
        // 40 MB of coefficients, 40 MB of pixels (no shrink-on-load to 2560), 2560x1920 twice.
        assert!(need > 4224 * 3168 * 6, "{need}");
        assert!(need < 128 << 20, "{need}");
    }

    #[test]
    fn levels_are_built_where_they_save_work() {
        let never = AtomicBool::new(false);
        let (p, levels) = build(
            &jpeg(3000, 2000),
            &[640, 1024, 2560],
            &Limits::default(),
            &never,
        )
        .unwrap()
        .unwrap();
        // 2560 is not 1.5x smaller than 3000: skipped.
        assert_eq!(p.levels, vec![Size::new(640, 427), Size::new(1024, 683)]);
        assert_eq!(
            (p.width, p.height, p.format),
            (3000, 2000, SourceFormat::Jpeg)
        );
        for level in &levels {
            let info = probe(&level.bytes).unwrap();
            assert_eq!(
                (info.width, info.height),
                (level.size.width, level.size.height)
            );
            assert_eq!(info.format, SourceFormat::Jpeg);
            assert_eq!(level.mime, "image/jpeg");
        }
        let small = build(&jpeg(800, 600), &[640], &Limits::default(), &never)
            .unwrap()
            .unwrap();
        assert!(small.0.levels.is_empty() && small.1.is_empty());
    }

    #[test]
    fn alpha_levels_are_png_and_keep_alpha() {
        let img = RgbaImage::from_fn(1200, 900, |x, _| Rgba([200, 10, 10, (x % 256) as u8]));
        let png = encode::encode(
            &DynamicImage::ImageRgba8(img),
            super::super::Format::Png,
            80,
        )
        .unwrap();
        let (_, levels) = build(&png, &[400], &Limits::default(), &AtomicBool::new(false))
            .unwrap()
            .unwrap();
        let info = probe(&levels[0].bytes).unwrap();
        assert_eq!(info.format, SourceFormat::Png);
        assert!(info.has_alpha);
        assert_eq!((info.width, info.height), (400, 300));
    }

    #[test]
    fn exif_rotated_sources_give_upright_levels() {
        let bytes = std::fs::read("fixtures/exif_rotated.jpg").unwrap();
        let info = probe(&bytes).unwrap();
        assert!(info.orientation > 1);
        let (ow, oh) = info.oriented_size();
        let sizes = [(ow.max(oh) as f64 / 2.0) as u32];
        let (p, levels) = build(&bytes, &sizes, &Limits::default(), &AtomicBool::new(false))
            .unwrap()
            .unwrap();
        assert_eq!((p.width, p.height), (ow, oh));
        let level = probe(&levels[0].bytes).unwrap();
        assert_eq!(level.orientation, 1);
        assert_eq!(ow > oh, level.width > level.height);
    }

    #[test]
    fn animated_and_oversized_sources_get_no_levels() {
        let gif = std::fs::read("fixtures/animated.gif").unwrap();
        let never = AtomicBool::new(false);
        assert!(
            build(&gif, &[64], &Limits::default(), &never)
                .unwrap()
                .is_none()
        );
        let tight = Limits {
            max_source_pixels: 100,
            ..Limits::default()
        };
        assert!(matches!(
            build(&jpeg(300, 200), &[64], &tight, &never),
            Err(ImagingError::TooManyPixels { .. })
        ));
    }

    #[test]
    fn renders_pick_the_level_with_twice_their_pixels() {
        let p: Pyramid = "jpeg 6028x3391 640x360 2560x1440".parse().unwrap();
        let url = |path: &str| crate::edge::url::parse(path).unwrap().recipe;
        let pick = |path: &str| p.level_for(&url(path), 8192);
        assert_eq!(pick("/fit-in/300x200/k.jpg"), Some(Size::new(640, 360)));
        assert_eq!(pick("/fit-in/800x0/k.jpg"), Some(Size::new(2560, 1440)));
        assert_eq!(pick("/1200x0/k.jpg"), Some(Size::new(2560, 1440)));
        assert_eq!(pick("/80x80/smart/k.jpg"), Some(Size::new(640, 360)));
        assert_eq!(pick("/1300x0/k.jpg"), None);
        assert_eq!(pick("/k.jpg"), None, "the original size needs the original");
        assert_eq!(pick("/trim/100x0/k.jpg"), None);
        // A manual crop of a tenth of the width, shown 300 wide, needs 10x the pixels.
        assert_eq!(pick("/0x0:602x339/300x0/k.jpg"), None);
        assert_eq!(
            pick("/0x0:3014x1695/300x0/k.jpg"),
            Some(Size::new(2560, 1440))
        );
    }

    #[test]
    fn the_text_form_round_trips_and_rejects_garbage() {
        let p = Pyramid {
            format: SourceFormat::Png,
            width: 1689,
            height: 1800,
            levels: vec![Size::new(601, 640)],
        };
        assert_eq!(p.to_string(), "png 1689x1800 601x640");
        assert_eq!(p.to_string().parse::<Pyramid>().unwrap(), p);
        let bare: Pyramid = "jpeg 800x600".parse().unwrap();
        assert!(bare.levels.is_empty());
        for bad in [
            "",
            "heic 1x1",
            "jpeg",
            "jpeg 0x5",
            "jpeg 9x9 5x",
            "jpeg 9x9 6x6 4x4",
        ] {
            assert!(bad.parse::<Pyramid>().is_err(), "{bad}");
        }
    }
}
