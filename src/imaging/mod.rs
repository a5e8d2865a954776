//! Image processing: bytes + typed `Recipe` in, encoded bytes out.
//!
//! Everything here is synchronous and CPU-bound: no async, no HTTP, no global locks. The
//! caller runs `render` on the CPU pool's own threads (`cpu`), never on the async runtime,
//! and maps `ImagingError` to a status code.
//!
//! Code map, in pipeline order:
//! - `recipe`   the typed operations (the contract with `edge::url`).
//! - `decode`   format sniffing, header-only `probe`, pixel limits, decoding, orientation, ICC.
//! - `geometry` pure sizing math: source window, resize size, canvas, shrink-on-load factor.
//! - `smart`    content-aware placement of the crop window.
//! - `resize`   fast_image_resize with a crop box, premultiplied alpha.
//! - `filters`  pixel filters, fill/canvas, trim, flattening.
//! - `encode`   JPEG, PNG, WebP, AVIF, GIF encoders and the `max_bytes` search.
//! - `animation` the frames of animated GIF/WebP sources, animated GIF/WebP outputs.
//! - `webp_anim` animated WebP through libwebp (the library's only `unsafe` code).
//! - `render`   the orchestration, readable top to bottom.
//! - `pyramid`  reduced copies (derivatives) built once per file, and their text form.
//! - `share`    one decode for concurrent renders of the same source (srcset bursts).

mod animation;
pub mod auto_quality;
mod decode;
mod encode;
mod filters;
mod geometry;
mod placeholder;
mod probe;
mod pyramid;
pub mod recipe;
mod render;
mod resize;
mod scans;
mod share;
mod smart;
mod webp_anim;

/// A test image of the Thumbor replay (`conformance/images/<name>`).
#[cfg(test)]
pub(crate) fn conformance_image(name: &str) -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("conformance/images")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

use std::time::Duration;

pub use decode::Precision;
pub use encode::Tuning;
pub use geometry::Size;
pub use probe::{SourceFormat, SourceInfo, oriented_size_from_prefix, probe};
pub use pyramid::{
    Level, Original, Pyramid, build as build_pyramid, memory_need as pyramid_memory_need,
};
pub use recipe::*;
pub use render::{
    DecodeNeed, Job, Preflight, Run, describe, describe_planned, preflight, render, render_planned,
};
pub use resize::forget_scratch;
pub use share::{DecodeShare, Source, Ticket};

/// The pipeline's stages one by one, for the benchmarks (`benches/pipeline.rs`). Not part of
/// the stable API: `render` is.
#[doc(hidden)]
pub mod stages {
    pub use super::decode::{Decoded, decode};
    pub use super::encode::encode;
    pub use super::resize::{CropBox, resize};
}

/// Resource bounds for one render, from the operator's configuration.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest accepted `width * height` of a source, checked from the header.
    pub max_source_pixels: u64,
    /// Largest accepted output width or height.
    pub max_output_side: u32,
    /// Largest `frames * output width * output height` of an animation; beyond it only the
    /// first frame is served.
    pub max_animation_pixels: u64,
}

impl Default for Limits {
    /// 100 megapixels in, 8192 px per side out, 50 megapixels over all frames out.
    fn default() -> Self {
        Limits {
            max_source_pixels: 100_000_000,
            max_output_side: 8192,
            max_animation_pixels: 50_000_000,
        }
    }
}

/// The output format the caller wants; `Auto` is resolved per source inside `render`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FormatChoice {
    /// `format(...)` was given: always this format.
    Explicit(Format),
    /// Negotiated from `Accept` (and the operator's AVIF switch).
    Auto { webp: bool, avif: bool },
}

impl FormatChoice {
    /// Picks the output format for a source (SPEC §1.2): the explicit choice; otherwise AVIF
    /// when allowed, else WebP when allowed, else the source's own format. An animation is
    /// never negotiated to AVIF (which would drop all frames but the first): it becomes an
    /// animated WebP when allowed (a fraction of a GIF's bytes) and otherwise keeps its own
    /// format.
    pub fn resolve(&self, src: &SourceInfo) -> Format {
        let animation =
            src.animated && matches!(src.format, SourceFormat::Gif | SourceFormat::Webp);
        match *self {
            FormatChoice::Explicit(format) => format,
            FormatChoice::Auto { webp: true, .. } if animation => Format::Webp,
            FormatChoice::Auto { .. } if animation && src.format == SourceFormat::Gif => {
                Format::Gif
            }
            FormatChoice::Auto { .. } if animation => Format::Webp,
            FormatChoice::Auto { avif: true, .. } => Format::Avif,
            FormatChoice::Auto { webp: true, .. } => Format::Webp,
            FormatChoice::Auto { .. } => match src.format {
                SourceFormat::Jpeg => Format::Jpeg,
                SourceFormat::Png => Format::Png,
                SourceFormat::Webp => Format::Webp,
                SourceFormat::Gif => Format::Gif,
                SourceFormat::Tiff => Format::Png,
                SourceFormat::Bmp if src.has_alpha => Format::Png,
                SourceFormat::Bmp => Format::Jpeg,
            },
        }
    }
}

/// Wall-clock time spent in each stage of one render.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StageTimings {
    pub decode: Duration,
    pub transform: Duration,
    pub encode: Duration,
}

/// One encoded output image.
#[derive(Debug, Clone)]
pub struct Encoded {
    pub bytes: Vec<u8>,
    pub format: Format,
    pub width: u32,
    pub height: u32,
    pub timings: StageTimings,
}

/// Every way a render can fail, classified so the caller can pick a status code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImagingError {
    /// Not JPEG, PNG, WebP, GIF, TIFF or BMP (sniffed from the bytes). HTTP 415.
    #[error("unsupported source format (expected JPEG, PNG, WebP, GIF, TIFF or BMP)")]
    UnsupportedFormat,
    /// The header declares more pixels than allowed; nothing was decoded. HTTP 422.
    #[error("source is {width}x{height}, more than the limit of {limit} pixels")]
    TooManyPixels { width: u32, height: u32, limit: u64 },
    /// Corrupt or truncated source. HTTP 422.
    #[error("source image cannot be decoded: {0}")]
    Undecodable(String),
    /// The requested output would exceed the side limit. HTTP 400.
    #[error("output would be {width}x{height}, a side is larger than the limit of {limit} px")]
    OutputTooLarge { width: u32, height: u32, limit: u32 },
    /// The caller's deadline passed or the client went away.
    #[error("render cancelled")]
    Cancelled,
    /// An encoder failed: our fault. HTTP 500.
    #[error("encoding failed: {0}")]
    Encode(String),
}

/// A corrupt or truncated source, saying what was found wrong.
pub(crate) fn undecodable(msg: impl Into<String>) -> ImagingError {
    ImagingError::Undecodable(msg.into())
}
