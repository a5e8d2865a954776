//! The pipeline, top to bottom, in named stages:
//! - `preflight` (once per job, before the CPU queue): probe → pixel limit → output format →
//!   plan (for shrink-on-load) → animate or not → memory and decode needs;
//! - decode (`decode_still`, or an animation's first frame) → orient;
//! - `place`: trim → manual crop → plan → focal/smart placement;
//! - `transform`: resize → ICC → flips → fill → background → pixel filters → flatten;
//! - encode (`animate` for the frames after the first, each placed and transformed as the
//!   first was).
//!
//! `render` and `describe` share `prepare`, so `meta/` reports exactly what `render` does.
//! The `cancel` flag is checked between stages and frames; a stage itself is never
//! interrupted.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use bytes::Bytes;
use image::{DynamicImage, RgbaImage};
use serde_json::json;

use moxcms::ColorProfile;

use super::auto_quality::{self, AutoTarget, Found};
use super::decode::{self, Decoded, Precision};
use super::geometry::{self, Anchor, Size};
use super::probe::{SourceFormat, SourceInfo, probe};
use super::pyramid::Original;
use super::recipe::{Background, Color, Fill, Format, PixelFilter, Place, Quality, Recipe, Rect};
use super::resize::{CropBox, resize};
use super::share::{Source, Ticket};
use super::{
    Encoded, FormatChoice, ImagingError, Limits, StageTimings, animation, encode, filters, smart,
};

/// One render request, owned so that it can move to the CPU pool as it is: built once by
/// the caller, checked once by [`preflight`], run once by [`render_planned`].
#[derive(Debug, Clone)]
pub struct Job {
    /// The source file.
    pub bytes: Bytes,
    pub recipe: Recipe,
    pub output: FormatChoice,
    /// Used when the recipe has no `quality(...)`.
    pub default_quality: Quality,
    /// The SSIMULACRA2 scores `quality(auto)` aims for.
    pub auto_quality_target: AutoTarget,
    /// The operator's encoder choices.
    pub tuning: encode::Tuning,
    pub limits: Limits,
    /// Set when `bytes` are a reduced copy of the original (a pyramid level): planning,
    /// crops and format negotiation then follow the original, as if the copy were a
    /// shrink-on-load decode of it.
    pub reduced: Option<Original>,
    /// The files `watermark()` and `frame()` filters name, as `(key, bytes)`, read by the
    /// caller.
    pub overlays: Vec<(String, Bytes)>,
}

/// How one run of a job goes: when to stop, and with whom it shares its decode.
#[derive(Debug, Clone, Copy, Default)]
pub struct Run<'a> {
    /// Set by the caller when the deadline passes or the client goes away.
    pub cancel: Option<&'a AtomicBool>,
    /// Shares the decode with concurrent renders of the same bytes.
    pub share: Option<&'a Ticket>,
}

/// What decode a render needs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DecodeNeed {
    /// Decoded pixels per original pixel along the tighter axis (1 for a full decode of the
    /// original).
    pub scale: f64,
    pub precision: Precision,
}

/// What a job's headers say, read once before anything is decoded (see [`preflight`]): the
/// caller asks it for the memory and the decode to reserve, then hands it to
/// [`render_planned`] or [`describe_planned`] with the same job.
#[derive(Debug, Clone, Copy)]
pub struct Preflight {
    info: SourceInfo,
    format: Format,
    /// The original's upright size (also when decoding a reduced copy).
    full: Size,
    shrink: u32,
    precision: Precision,
    /// Decode and encode every frame (the frame budget is checked once the output size is
    /// known).
    animate: bool,
    /// The geometry, when it is known before decoding (not for `trim`, whose base size
    /// needs pixels).
    plan: Option<geometry::Plan>,
}

impl Preflight {
    /// How large and how precise a decode the job needs; `None` for an animation, whose
    /// frames are decoded one by one and never shared. Used to join a `DecodeShare`.
    pub fn decode_need(&self) -> Option<DecodeNeed> {
        let (w, h) = self.info.oriented_size();
        (!self.animate).then(|| DecodeNeed {
            scale: scale_of((w, h), self.shrink, self.full),
            precision: self.precision,
        })
    }
}

/// The highest output quality at which a decode may skip the last bit of a finely
/// quantized progressive JPEG (`Precision::Visible`).
const VISIBLE_MAX_QUALITY: u8 = 90;

/// `Visible` when the last bit that `scans::without_last_bit` skips cannot show: the output
/// is a lossy encode at `VISIBLE_MAX_QUALITY` or below of a decode at 1/2 scale or less
/// (so the image is downscaled at least twofold overall), and no pixel filter could
/// sharpen the difference.
fn precision_for(job: &Job, format: Format, shrink: u32) -> Precision {
    let filters = &job.recipe.filters;
    // `auto` stays at or below `auto_quality::HIGHEST`, which is `VISIBLE_MAX_QUALITY`.
    let quality = match filters.quality.unwrap_or(job.default_quality) {
        Quality::Fixed(q) => q,
        Quality::Auto => auto_quality::HIGHEST,
    };
    let lossy = format.is_lossy();
    if lossy && quality <= VISIBLE_MAX_QUALITY && shrink >= 2 && filters.pixel.is_empty() {
        Precision::Visible
    } else {
        Precision::Full
    }
}

/// Decoded pixels per original pixel, along the tighter axis, of a decode of `stored`
/// (upright) bytes at 1/`shrink` when the original is `full`.
fn scale_of(stored: (u32, u32), shrink: u32, full: Size) -> f64 {
    let s = f64::from(shrink);
    (f64::from(stored.0) / s / f64::from(full.width))
        .min(f64::from(stored.1) / s / f64::from(full.height))
}

/// [`preflight`] and [`render_planned`], never cancelled, sharing nothing.
pub fn render(job: &Job) -> Result<Encoded, ImagingError> {
    render_planned(job, &preflight(job)?, Run::default())
}

/// Decodes, transforms and encodes one image (every frame of an animation), as its
/// preflight planned. Synchronous and CPU-bound.
pub fn render_planned(job: &Job, preflight: &Preflight, run: Run) -> Result<Encoded, ImagingError> {
    guarded(|| {
        let mut timings = Timings::default();
        let mut prepared = prepare(job, preflight, run, &mut timings, &mut Log::Off)?;
        checkpoint(run)?;
        let started = Instant::now();
        let filters = &job.recipe.filters;
        let (quality, found) = resolve_quality(job, run, &prepared)?;
        let searched = found.and_then(|f| f.encoded);
        let (width, height) = (prepared.image.width(), prepared.image.height());
        let (image, format, max_bytes) = (&prepared.image, prepared.format, filters.max_bytes);
        let bytes = match (prepared.frames.take(), searched) {
            (Some(frames), _) => animate(job, run, &prepared, frames, quality, &mut timings)?,
            // `quality(auto)` already encoded the output at the quality it chose.
            (None, Some(first)) => {
                encode::fit_within(image, format, quality, max_bytes, job.tuning, first)?
            }
            (None, None) => encode::encode_within(image, format, quality, max_bytes, job.tuning)?,
        };
        timings.encode += started.elapsed().saturating_sub(timings.transform_frames);
        Ok(Encoded {
            bytes,
            format: prepared.format,
            width,
            height,
            timings: timings.into(),
        })
    })
}

/// Encodes the prepared first frame, then decodes, transforms and encodes the others one
/// by one, each shown for its own delay. `max_bytes` does not apply (one frame's quality
/// cannot be traded against another's).
fn animate(
    job: &Job,
    run: Run,
    prepared: &Prepared,
    frames: Frames,
    quality: u8,
    timings: &mut Timings,
) -> Result<Vec<u8>, ImagingError> {
    let Frames {
        mut reader,
        first_delay,
    } = frames;
    let (width, height) = (prepared.image.width(), prepared.image.height());
    let info = &prepared.info;
    let mut writer = animation::Writer::new(prepared.format, width, height, info.plays, quality)?;
    writer.add(&prepared.image, first_delay)?;
    while let Some(frame) = reader.next_frame() {
        checkpoint(run)?;
        let started = Instant::now();
        let animation::Still {
            mut image,
            delay_ms,
        } = frame?;
        if info.orientation > 1 {
            decode::orient(&mut image, info.orientation);
        }
        let image = transform(
            job,
            run,
            &prepared.shape,
            &image,
            None,
            &prepared.overlays,
            &mut Log::Off,
        )?;
        timings.transform_frames += started.elapsed();
        writer.add(&image, delay_ms)?;
    }
    writer.finish()
}

/// [`preflight`] and [`describe_planned`], never cancelled, sharing nothing.
pub fn describe(job: &Job) -> Result<serde_json::Value, ImagingError> {
    describe_planned(job, &preflight(job)?, Run::default())
}

/// For `meta/`: the source facts, the operations `render` would run (human-readable), and
/// the output format, size and frame count, and a placeholder (BlurHash and dominant
/// colour) of the output. Decodes and transforms the first frame only, and encodes nothing
/// (but the trial encodes of `quality(auto)`).
pub fn describe_planned(
    job: &Job,
    preflight: &Preflight,
    run: Run,
) -> Result<serde_json::Value, ImagingError> {
    guarded(|| {
        let mut steps = Vec::new();
        let prepared = prepare(
            job,
            preflight,
            run,
            &mut Timings::default(),
            &mut Log::On(&mut steps),
        )?;
        let info = prepared.info;
        let (quality, found) = resolve_quality(job, run, &prepared)?;
        // A predicted quality is served unmeasured; meta/ measures it, so the score it
        // reports is the output's (its sample's, above 800x600).
        let chosen = match found.map(|f| f.chosen) {
            Some(c) => {
                let score = match c.score {
                    Some(score) => score,
                    None => {
                        checkpoint(run)?;
                        auto_quality::measure(
                            &prepared.image,
                            prepared.format,
                            c.quality,
                            job.tuning,
                        )?
                    }
                };
                Some((c, score))
            }
            None => None,
        };
        let target = job.auto_quality_target.for_format(prepared.format);
        let auto = chosen.map(|(c, score)| {
            json!({
                "target": target,
                "quality": c.quality,
                "score": score,
                "predicted": c.predicted,
                "tries": c.tries,
                "measured": true,
            })
        });
        steps.push(match chosen {
            Some((_, score)) => format!(
                "encode {} at quality {quality} (auto: SSIMULACRA2 {score:.1}, target {target})",
                prepared.format.name(),
            ),
            None => format!("encode {} at quality {quality}", prepared.format.name()),
        });
        let frames = match prepared.frames {
            Some(_) => info.frames,
            None => 1,
        };
        Ok(json!({
            "source": {
                "format": info.format.name(),
                "width": info.width,
                "height": info.height,
                "orientation": info.orientation,
                "has_alpha": info.has_alpha,
                "animated": info.animated,
                "frames": info.frames,
                "has_icc": info.has_icc,
            },
            "operations": steps,
            "output": {
                "format": prepared.format.name(),
                "mime": prepared.format.mime(),
                "width": prepared.image.width(),
                "height": prepared.image.height(),
                "animated": frames > 1,
                "frames": frames,
                "quality": prepared.format.is_lossy().then_some(quality),
                "auto_quality": auto,
            },
            "placeholder": super::placeholder::placeholder(&prepared.image),
        }))
    })
}

/// The quality to encode `prepared` at, and for `quality(auto)` what the search chose (on
/// an animation's first frame, for all of them; lossless formats ignore the quality) and,
/// when the search encoded the output itself, those bytes.
fn resolve_quality(
    job: &Job,
    run: Run,
    prepared: &Prepared,
) -> Result<(u8, Option<Found>), ImagingError> {
    match job.recipe.filters.quality.unwrap_or(job.default_quality) {
        Quality::Fixed(q) => Ok((q, None)),
        Quality::Auto => {
            let found = auto_quality::choose_encoded(
                &prepared.image,
                prepared.format,
                job.auto_quality_target.for_format(prepared.format),
                job.tuning,
                run.cancel,
            )?;
            // `None` for the lossless formats, which ignore the quality.
            let quality = found
                .as_ref()
                .map_or(auto_quality::HIGHEST, |f| f.chosen.quality);
            Ok((quality, found))
        }
    }
}

/// The image ready for encoding: a still, or an animation's first frame with the rest
/// still to read.
struct Prepared<'a> {
    info: SourceInfo,
    image: DynamicImage,
    format: Format,
    shape: Shape,
    frames: Option<Frames<'a>>,
    overlays: Overlays,
}

/// The frames after the first.
struct Frames<'a> {
    reader: animation::Reader<'a>,
    first_delay: u32,
}

/// Stage timings while rendering. The frames after the first are decoded and transformed
/// while encoding; that time counts as transform.
#[derive(Default)]
struct Timings {
    decode: std::time::Duration,
    transform: std::time::Duration,
    transform_frames: std::time::Duration,
    encode: std::time::Duration,
}

impl From<Timings> for StageTimings {
    fn from(t: Timings) -> StageTimings {
        StageTimings {
            decode: t.decode,
            transform: t.transform + t.transform_frames,
            encode: t.encode,
        }
    }
}

/// Where `prepare` writes the operations it runs (only for `describe`).
enum Log<'a> {
    Off,
    On(&'a mut Vec<String>),
}

impl Log<'_> {
    fn step(&mut self, line: impl FnOnce() -> String) {
        if let Log::On(lines) = self {
            lines.push(line());
        }
    }
}

/// Reads the job's headers, once: refuses pixel bombs and oversized outputs before any
/// pixel buffer exists, picks the output format, plans the geometry (for shrink-on-load)
/// and decides whether the frames of an animation are kept. Cheap: no pixel is decoded.
pub fn preflight(job: &Job) -> Result<Preflight, ImagingError> {
    guarded(|| preflight_of(job))
}

fn preflight_of(job: &Job) -> Result<Preflight, ImagingError> {
    let recipe = &job.recipe;
    let info = probe(&job.bytes)?;
    let limit = job.limits.max_source_pixels;
    if u64::from(info.width) * u64::from(info.height) > limit {
        return Err(ImagingError::TooManyPixels {
            width: info.width,
            height: info.height,
            limit,
        });
    }
    let stored = {
        let (w, h) = info.oriented_size();
        Size::new(w, h)
    };
    let (format, full) = match job.reduced {
        Some(r) => (
            job.output.resolve(&SourceInfo {
                format: r.format,
                ..info
            }),
            Size::new(r.width, r.height),
        ),
        None => (job.output.resolve(&info), stored),
    };

    // Planning before decoding refuses oversized outputs early and gives the JPEG
    // shrink-on-load factor. Trim needs pixels to know the base size, so a trimmed image is
    // planned after decoding only, and decoded at full size.
    let early_plan = match recipe.trim {
        None => {
            let base = recipe
                .crop
                .and_then(|c| geometry::clamp_rect(c, full))
                .map_or(full, size_of);
            Some(geometry::plan(base, recipe, job.limits.max_output_side)?)
        }
        Some(_) => None,
    };
    // A reduced copy is decoded whole: it already has only a few pixels per output pixel
    // (`geometry::LEVEL_MARGIN`), and a DCT-scaled decode of it followed by a second
    // resampling lost about a point of SSIMULACRA2 against a render from the original.
    let shrink = match early_plan {
        Some(plan) if info.format == SourceFormat::Jpeg && job.reduced.is_none() => {
            // The window in pixels of the bytes at hand (a reduced copy has fewer).
            let window = size_of(plan.window);
            let in_source = |v: u32, have: u32, full: u32| {
                (u64::from(v) * u64::from(have) / u64::from(full)) as u32
            };
            let window = Size::new(
                in_source(window.width, stored.width, full.width),
                in_source(window.height, stored.height, full.height),
            );
            geometry::shrink_factor(window, plan.resize)
        }
        _ => 1,
    };
    // An animation stays one when the output format can animate, and all its frames
    // together are no more pixels than one still may have. Reduced copies are never made of
    // animations.
    let animate = info.animated
        && matches!(info.format, SourceFormat::Gif | SourceFormat::Webp)
        && matches!(format, Format::Gif | Format::Webp)
        && job.reduced.is_none()
        && u64::from(info.frames) * u64::from(info.width) * u64::from(info.height) <= limit;
    Ok(Preflight {
        info,
        format,
        full,
        shrink,
        precision: precision_for(job, format, shrink),
        animate,
        plan: early_plan,
    })
}

/// Memory for what `render` allocates besides the pixel buffers: encoder state, tables,
/// the response.
const RENDER_SLACK: u64 = 4 << 20;

impl Preflight {
    /// An estimate, on the high side, of the most memory `render` (or `describe`) holds at
    /// once for `job`, from the headers only: what the caller reserves from the memory budget
    /// before the job may start. Counts the source bytes and up to two edited copies of them,
    /// the decode (`SourceInfo::decode_bytes`), the upright or trimmed copy, the resizer's
    /// intermediate rows, and the output twice (resized, then filtered or encoded).
    /// An animation counts its canvas, never a frame's rectangle: the decoder composes every
    /// frame on a full canvas and keeps the previous one for disposal.
    pub fn memory_need(&self, job: &Job) -> u64 {
        let f = self;
        let info = &f.info;
        // `preflight` has checked the pixel limit, but the limit is configurable: saturate.
        let source = 3 * job.bytes.len() as u64;
        let canvas = u64::from(info.width).saturating_mul(u64::from(info.height));
        let shrink = u64::from(f.shrink.max(1));
        let (decoded_w, decoded_h) = {
            let (w, h) = info.oriented_size();
            (u64::from(w).div_ceil(shrink), u64::from(h).div_ceil(shrink))
        };
        let decoded = decoded_w.saturating_mul(decoded_h);
        let (out_w, output) = f
            .plan
            .map(|p| p.output_size(&job.recipe))
            .map_or((decoded_w, decoded), |s| {
                (u64::from(s.width), u64::from(s.height) * u64::from(s.width))
            });
        // `quality(auto)` scores trial encodes (the first frame's, for an animation).
        let auto = job.recipe.filters.quality.unwrap_or(job.default_quality) == Quality::Auto;
        let scoring = if auto {
            auto_quality::memory_need(f.format, output)
        } else {
            0
        };
        let pixels = if f.animate {
            // Five canvases of RGBA: the decoder's canvas, the frame it decodes into (and
            // its YUV planes for lossy WebP), the copy it hands out and the one kept for
            // disposal. Measured: a 4000x4000 animated WebP took about 20 bytes per canvas
            // pixel. Each output frame is resized, encoded and dropped. The decoder is alive
            // while the first frame is scored.
            canvas
                .saturating_mul(5 * 4)
                .saturating_add(output * 4 * 4)
                .saturating_add(scoring)
        } else {
            // A copy of the decode when it is turned upright or trimmed, and the resizer's
            // intermediate rows (output width by decoded height).
            let bpp = if info.has_alpha { 4 } else { 3 };
            let copy = if info.orientation > 1 || job.recipe.trim.is_some() {
                decoded.saturating_mul(bpp)
            } else {
                0
            };
            let rows = out_w
                .min(decoded_w)
                .saturating_mul(decoded_h)
                .saturating_mul(bpp);
            // The resized image and one more copy (a filter's, or the encoder's input);
            // AVIF's encoder holds its planes and reference frames besides.
            let encoder = if f.format == Format::Avif { 16 } else { 0 };
            let decoding = info
                .decode_bytes(f.shrink)
                .saturating_add(copy.saturating_add(rows))
                .saturating_add(output * (2 * bpp + encoder));
            // The search starts once the decoder's buffers are gone: the output and its copy,
            // the decoded pixels (which a shared decode may still keep) and the scoring.
            let searching = decoded
                .saturating_mul(bpp)
                .saturating_add(output * 2 * bpp)
                .saturating_add(scoring);
            decoding.max(searching)
        };
        let overlays = job
            .overlays
            .iter()
            .map(|(_, bytes)| overlay_need(bytes))
            .fold(0, u64::saturating_add);
        pixels
            .saturating_add(overlays)
            .saturating_add(source + RENDER_SLACK)
    }
}

/// An overlay's share of a render's memory (`watermark()`, `frame()`), held for the whole
/// render: its bytes, its full-size decode, and its upright RGBA copy plus the conversion
/// to it. An overlay whose header cannot be read fails in `decode_overlays`, holding only
/// its bytes.
fn overlay_need(bytes: &[u8]) -> u64 {
    let len = bytes.len() as u64;
    match probe(bytes) {
        Ok(info) => {
            let pixels = u64::from(info.width).saturating_mul(u64::from(info.height));
            len.saturating_add(info.decode_bytes(1))
                .saturating_add(pixels.saturating_mul(8))
        }
        Err(_) => len,
    }
}

/// Everything before encoding, in named stages: the preflight (headers: limits, plan,
/// shrink-on-load, animate or not) → decode (`decode_still`, or `first_frame` of an
/// animation) → `place` (orient, trim, crop, plan, focal/smart) → the frame budget →
/// `transform` (resize, pixel filters, overlays, flatten). Encoding follows in `render`.
fn prepare<'a>(
    job: &'a Job,
    preflight: &Preflight,
    run: Run,
    timings: &mut Timings,
    log: &mut Log,
) -> Result<Prepared<'a>, ImagingError> {
    let started = Instant::now();
    let Preflight {
        info,
        format,
        full,
        shrink,
        precision,
        animate,
        plan,
    } = *preflight;
    if let Some(r) = job.reduced {
        log.step(|| {
            format!(
                "source: the {}x{} reduced copy of the {}x{} original",
                info.width, info.height, r.width, r.height
            )
        });
    }
    checkpoint(run)?;

    let max_alloc = max_alloc(job);
    let (decoded, used, frames) = if animate {
        let (decoded, frames) = first_frame(job, &info, max_alloc)?;
        (decoded, None, Some(frames))
    } else {
        let (decoded, used) =
            decode_still(job, run.share, &info, full, shrink, precision, max_alloc)?;
        (decoded, used, None)
    };
    log_decode(log, &info, &decoded, used.as_deref(), frames.is_some());
    timings.decode = started.elapsed();
    checkpoint(run)?;
    let started = Instant::now();

    let shape = place(job, &decoded, full, plan, format, log)?;
    let overlays = decode_overlays(job)?;
    let frames = frames.filter(|_| within_frame_budget(job, &info, &shape, log));
    let image = transform(
        job,
        run,
        &shape,
        &decoded.image,
        decoded.icc.as_ref(),
        &overlays,
        log,
    )?;
    if frames.is_some() {
        log.step(|| {
            let plays = match info.plays {
                0 => "forever".to_owned(),
                1 => "once".to_owned(),
                n => format!("{n} times"),
            };
            format!(
                "animate: each of the {} frames decoded and transformed as above, encoded with \
                 its own delay; plays {plays}",
                info.frames
            )
        });
    }
    timings.transform = started.elapsed();
    Ok(Prepared {
        info,
        image,
        format,
        shape,
        frames,
        overlays,
    })
}

/// An animation's first frame, upright (it decides trim, smart placement and the frame
/// budget), and the reader that yields the others one by one while encoding.
fn first_frame<'a>(
    job: &'a Job,
    info: &SourceInfo,
    max_alloc: u64,
) -> Result<(Arc<Decoded>, Frames<'a>), ImagingError> {
    let mut reader = animation::Reader::new(&job.bytes, info, max_alloc)?;
    let first = reader
        .next_frame()
        .unwrap_or_else(|| Err(ImagingError::Undecodable("no frames".to_owned())))?;
    let mut image = first.image;
    if info.orientation > 1 {
        decode::orient(&mut image, info.orientation);
    }
    let decoded = Decoded {
        source_size: (image.width(), image.height()),
        image,
        icc: None,
        shrink: 1,
        precision: Precision::Full,
    };
    let frames = Frames {
        reader,
        first_delay: first.delay_ms,
    };
    Ok((Arc::new(decoded), frames))
}

/// The `meta/` lines of the decode stage: which source, at which scale, turned upright.
fn log_decode(
    log: &mut Log,
    info: &SourceInfo,
    decoded: &Decoded,
    used: Option<&Source>,
    animated: bool,
) {
    let image = &decoded.image;
    if let Some(used) = used {
        log.step(|| match used.reduced {
            Some(_) => format!(
                "shared decode: a concurrent render's larger reduced copy ({}x{})",
                decoded.source_size.0, decoded.source_size.1
            ),
            None => "shared decode: a concurrent render's original".to_owned(),
        });
    }
    log.step(|| {
        let mut scale = if decoded.shrink > 1 {
            format!(" at 1/{} (DCT scaling)", decoded.shrink)
        } else {
            String::new()
        };
        if decoded.precision == Precision::Visible {
            scale.push_str(" without the last-bit refinement scans");
        }
        let which = if animated {
            format!("the first of {} frames of ", info.frames)
        } else {
            String::new()
        };
        format!(
            "decode {which}{} {}x{}{scale} → {}x{}",
            info.format.name(),
            decoded.source_size.0,
            decoded.source_size.1,
            image.width(),
            image.height()
        )
    });
    if info.orientation > 1 && used.is_none() {
        log.step(|| {
            format!(
                "orient: EXIF orientation {} → {}x{}",
                info.orientation,
                image.width(),
                image.height()
            )
        });
    }
}

/// Whether all of an animation's frames at the planned output size fit the frame budget;
/// over it, only the first frame is served (and `meta/` says so).
fn within_frame_budget(job: &Job, info: &SourceInfo, shape: &Shape, log: &mut Log) -> bool {
    let out = shape.plan.output_size(&job.recipe);
    let pixels = u64::from(info.frames) * u64::from(out.width) * u64::from(out.height);
    let budget = job.limits.max_animation_pixels;
    if pixels <= budget {
        return true;
    }
    log.step(|| {
        format!(
            "animation: {} frames of {}x{} are {pixels} pixels, over the frame budget \
             of {budget}: only the first frame is served",
            info.frames, out.width, out.height
        )
    });
    false
}

/// The `watermark()` and `frame()` overlays, decoded once per render (every frame of an animation uses
/// them): `(key, pixels)`, upright and in sRGB.
type Overlays = Vec<(String, RgbaImage)>;

fn decode_overlays(job: &Job) -> Result<Overlays, ImagingError> {
    let mut overlays: Overlays = Vec::new();
    for (filter, key) in job.recipe.filters.overlay_keys() {
        if overlays.iter().any(|(k, _)| k == key) {
            continue;
        }
        let named =
            |e: ImagingError| ImagingError::Undecodable(format!("the {filter} image `{key}`: {e}"));
        let bytes = job
            .overlays
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, bytes)| bytes)
            .ok_or_else(|| named(ImagingError::Undecodable("not read".to_owned())))?;
        let info = probe(bytes).map_err(named)?;
        let limit = job.limits.max_source_pixels;
        if u64::from(info.width) * u64::from(info.height) > limit {
            return Err(named(ImagingError::TooManyPixels {
                width: info.width,
                height: info.height,
                limit,
            }));
        }
        let mut decoded =
            decode::decode(bytes, &info, 1, Precision::Full, max_alloc(job)).map_err(named)?;
        if info.orientation > 1 {
            decode::orient(&mut decoded.image, info.orientation);
        }
        if let Some(profile) = &decoded.icc {
            decode::to_srgb(&mut decoded.image, profile);
        }
        overlays.push((key.to_owned(), decoded.image.into_rgba8()));
    }
    Ok(overlays)
}

/// The decoded pixels of the overlay a `watermark()` or `frame()` names.
fn overlay<'a>(
    overlays: &'a [(String, RgbaImage)],
    filter: &str,
    key: &str,
) -> Result<&'a RgbaImage, ImagingError> {
    overlays
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, pixels)| pixels)
        .ok_or_else(|| ImagingError::Undecodable(format!("the {filter} image `{key}`: not read")))
}

/// The largest allocation a decoder may make: a second guard behind the header check.
fn max_alloc(job: &Job) -> u64 {
    job.limits
        .max_source_pixels
        .saturating_mul(8)
        .saturating_add(64 << 20)
}

/// Decodes a still image (or an animation's first frame only), upright, sharing the decode
/// with concurrent renders of the same file when the job has a ticket. Also says whose
/// source was decoded when it was another member's.
fn decode_still(
    job: &Job,
    share: Option<&Ticket>,
    info: &SourceInfo,
    full: Size,
    shrink: u32,
    precision: Precision,
    max_alloc: u64,
) -> Result<(Arc<Decoded>, Option<Arc<Source>>), ImagingError> {
    let decode_now = |bytes: &[u8], info: &SourceInfo, shrink: u32, precision: Precision| {
        let mut decoded = decode::decode(bytes, info, shrink, precision, max_alloc)?;
        if info.orientation > 1 {
            decode::orient(&mut decoded.image, info.orientation);
        }
        Ok::<_, ImagingError>(decoded)
    };
    match share {
        // Possibly another member's source (a larger copy, or the original).
        Some(ticket) => {
            let (decoded, used) = ticket.decoded(|source, scale, precision| {
                // This job's own bytes were read by its preflight; another member's are not.
                let own = std::ptr::eq(source.bytes.as_ptr(), job.bytes.as_ptr());
                let info = if own { *info } else { probe(&source.bytes)? };
                let stored = info.oriented_size();
                // The smallest decode still at `scale` (what this source's own render
                // would pick when `scale` is its own need).
                let shrink = match (info.format, job.recipe.trim) {
                    (SourceFormat::Jpeg, None) => [8, 4, 2]
                        .into_iter()
                        .find(|&k| scale_of(stored, k, full) >= scale * (1.0 - 1e-3))
                        .unwrap_or(1),
                    _ => 1,
                };
                decode_now(&source.bytes, &info, shrink, precision)
            })?;
            let own = std::ptr::eq(used.bytes.as_ptr(), job.bytes.as_ptr());
            Ok((decoded, (!own).then_some(used)))
        }
        None => Ok((
            Arc::new(decode_now(&job.bytes, info, shrink, precision)?),
            None,
        )),
    }
}

/// Where the output comes from, how large it is and its format: the same for every frame.
struct Shape {
    plan: geometry::Plan,
    format: Format,
    /// The resize window, in the decoded image's pixels.
    crop: CropBox,
}

/// Trim, manual crop, the plan and the crop window's placement (focal regions, smart), from
/// the decoded image (an animation's first frame). `planned` is the preflight's plan, made
/// from the same base when nothing is trimmed.
fn place(
    job: &Job,
    decoded: &Decoded,
    full: Size,
    planned: Option<geometry::Plan>,
    format: Format,
    log: &mut Log,
) -> Result<Shape, ImagingError> {
    let recipe = &job.recipe;
    let image = &decoded.image;
    let (ow, oh) = (full.width, full.height);
    // Working pixels per full-resolution pixel (1 unless shrink-on-load happened or the
    // bytes are a reduced copy). From the exact scaled size, not the decoded one: a DCT-scaled
    // decode rounds its size up (427 rows at 1/2 give 214 rows holding 213.5 rows of
    // content), and using the rounded size would stretch the picture by up to half a pixel.
    let (sw, sh) = decoded.source_size;
    let shrunk = f64::from(decoded.shrink);
    let scale = (
        f64::from(sw) / shrunk / f64::from(ow),
        f64::from(sh) / shrunk / f64::from(oh),
    );

    // The base image: trimmed, then manually cropped, in full-resolution coordinates.
    let mut base = Rect {
        left: 0,
        top: 0,
        right: ow,
        bottom: oh,
    };
    if let Some(trim) = recipe.trim {
        if let Some(found) = filters::trim_box(image, trim) {
            base = found;
        }
        log.step(|| {
            format!(
                "trim {:?} (tolerance {}) → {}",
                trim.corner,
                trim.tolerance,
                show_rect(base)
            )
        });
    }
    if let Some(crop) = recipe.crop {
        // The box is in the untrimmed image's coordinates (as in Thumbor), kept inside what
        // trim left; without trim that is clamping to the image.
        if let Some(c) = geometry::intersect(crop, base) {
            base = c;
            log.step(|| format!("crop → {}", show_rect(base)));
        } else {
            log.step(|| "crop: nothing of it lies inside the image, ignored".to_owned());
        }
    }

    let base_size = size_of(base);
    let plan = match planned {
        Some(plan) => plan,
        None => geometry::plan(base_size, recipe, job.limits.max_output_side)?,
    };
    let window_size = size_of(plan.window);
    let to_working = |r: Rect| CropBox {
        left: f64::from(base.left + r.left) * scale.0,
        top: f64::from(base.top + r.top) * scale.1,
        width: f64::from(r.width()) * scale.0,
        height: f64::from(r.height()) * scale.1,
    };
    let mut crop = to_working(plan.window);
    if plan.crops(base_size) {
        if let Some((cx, cy)) = geometry::centre_of_mass(&recipe.filters.focal) {
            let (x, y) = (cx.saturating_sub(base.left), cy.saturating_sub(base.top));
            let relative = Rect {
                left: x,
                top: y,
                right: x,
                bottom: y,
            };
            crop = to_working(geometry::place(
                base_size,
                window_size,
                Anchor::Focus(relative),
            ));
            log.step(|| {
                let regions: Vec<String> =
                    recipe.filters.focal.iter().map(|r| show_rect(*r)).collect();
                format!(
                    "place crop on the centre of focal region(s) {} at {cx},{cy}",
                    regions.join(", ")
                )
            });
        } else if recipe.smart {
            let region = to_working(Rect {
                left: 0,
                top: 0,
                right: base_size.width,
                bottom: base_size.height,
            });
            match smart::place(image, region, (crop.width, crop.height))? {
                Some((dx, dy)) => {
                    crop.left = region.left + dx;
                    crop.top = region.top + dy;
                    log.step(|| "place crop by content (smart)".to_owned());
                }
                None => log.step(|| "smart: nothing stands out, using the alignment".to_owned()),
            }
        }
    }
    log.step(|| {
        let full_res = |v: f64, s: f64| (v / s).round() as u32;
        format!(
            "resize window {}x{} at ({}, {}) → {}x{}",
            full_res(crop.width, scale.0),
            full_res(crop.height, scale.1),
            full_res(crop.left, scale.0),
            full_res(crop.top, scale.1),
            plan.resize.width,
            plan.resize.height
        )
    });
    Ok(Shape { plan, format, crop })
}

/// Resize, colour conversion, flips, fill, background, pixel filters and flattening: what
/// turns one decoded picture (a still, or any frame of an animation) into the output.
fn transform(
    job: &Job,
    run: Run,
    shape: &Shape,
    image: &DynamicImage,
    icc: Option<&ColorProfile>,
    overlays: &[(String, RgbaImage)],
    log: &mut Log,
) -> Result<DynamicImage, ImagingError> {
    let recipe = &job.recipe;
    let plan = &shape.plan;
    let format = shape.format;
    let mut image = resize(image, shape.crop, plan.resize)?;
    checkpoint(run)?;

    if let Some(profile) = icc {
        if decode::to_srgb(&mut image, profile) {
            log.step(|| "convert colours from the embedded ICC profile to sRGB".to_owned());
        } else {
            log.step(|| "ignore the embedded ICC profile: it cannot be used".to_owned());
        }
    }
    if plan.flip_h || plan.flip_v {
        image = filters::flip(image, plan.flip_h, plan.flip_v);
        log.step(|| {
            format!(
                "flip{}{}",
                if plan.flip_h { " horizontally" } else { "" },
                if plan.flip_v { " vertically" } else { "" }
            )
        });
    }
    if let (Some(canvas), Some(fill)) = (plan.canvas, recipe.filters.fill) {
        image = filters::pad(image, canvas, fill, recipe.filters.fill_transparent)?;
        log.step(|| {
            format!(
                "fill {} → {}x{}",
                show_fill(fill),
                canvas.width,
                canvas.height
            )
        });
    }
    if let Some(background) = recipe.filters.background
        && image.color().has_alpha()
    {
        image = filters::underlay(image, background);
        log.step(|| format!("paint transparent parts {}", show_background(background)));
    }
    for filter in &recipe.filters.pixel {
        image = match filter {
            PixelFilter::Watermark(w) => {
                filters::watermark(image, overlay(overlays, "watermark", &w.key)?, w)?
            }
            PixelFilter::Frame { key } => filters::frame(
                image,
                overlay(overlays, "frame", key)?,
                job.limits.max_output_side,
            )?,
            other => filters::apply(image, other),
        };
        log.step(|| format!("filter {}", show_filter(filter)));
        checkpoint(run)?;
    }
    if !format.has_alpha() && image.color().has_alpha() {
        let background = match recipe.filters.background {
            Some(Background::Color(c)) => Color { a: 255, ..c },
            Some(Background::Auto) => filters::mean_color(&image),
            None => Color::WHITE,
        };
        image = filters::flatten(image, background);
        log.step(|| format!("flatten alpha on {}", show_color(background)));
    }
    Ok(image)
}

fn checkpoint(run: Run) -> Result<(), ImagingError> {
    if run.cancel.is_some_and(|c| c.load(Ordering::Relaxed)) {
        Err(ImagingError::Cancelled)
    } else {
        Ok(())
    }
}

/// Last line of defence: a decoder that panics on hostile input fails this request only.
fn guarded<T>(work: impl FnOnce() -> Result<T, ImagingError>) -> Result<T, ImagingError> {
    catch_unwind(AssertUnwindSafe(work)).unwrap_or_else(|_| {
        Err(ImagingError::Undecodable(
            "the decoder failed on this input".to_owned(),
        ))
    })
}

fn size_of(r: Rect) -> Size {
    Size::new(r.width(), r.height())
}

fn show_rect(r: Rect) -> String {
    format!("{}x{}:{}x{}", r.left, r.top, r.right, r.bottom)
}

fn show_color(c: Color) -> String {
    if c.a == 255 {
        format!("#{:02x}{:02x}{:02x}", c.r, c.g, c.b)
    } else {
        format!("#{:02x}{:02x}{:02x}{:02x}", c.r, c.g, c.b, c.a)
    }
}

fn show_background(background: Background) -> String {
    match background {
        Background::Color(c) => show_color(c),
        Background::Auto => "with the image's mean colour".to_owned(),
    }
}

fn show_fill(fill: Fill) -> String {
    match fill {
        Fill::Color(c) => show_color(c),
        Fill::Transparent => "transparent".to_owned(),
        Fill::Auto => "auto (the image's mean colour)".to_owned(),
        Fill::Blur => "blur (blurred copy behind)".to_owned(),
    }
}

fn show_filter(filter: &PixelFilter) -> String {
    match *filter {
        PixelFilter::Blur { radius, sigma } => match sigma {
            Some(s) => format!("blur(radius {radius}, sigma {s})"),
            None => format!("blur(radius {radius})"),
        },
        PixelFilter::Sharpen {
            amount,
            radius,
            luminance_only,
        } => {
            format!(
                "sharpen(amount {amount}, radius {radius}{})",
                if luminance_only {
                    ", luminance only"
                } else {
                    ""
                }
            )
        }
        PixelFilter::Grayscale => "grayscale".to_owned(),
        PixelFilter::Brightness(v) => format!("brightness({v})"),
        PixelFilter::Contrast(v) => format!("contrast({v})"),
        PixelFilter::Rotate(r) => format!("rotate {r:?} counter-clockwise"),
        PixelFilter::RotateBy(angle) => {
            format!("rotate {angle} degrees counter-clockwise (the canvas grows)")
        }
        PixelFilter::Rgb { r, g, b } => format!("rgb({r}%, {g}%, {b}%)"),
        PixelFilter::Saturation(v) => format!("saturation(x{v})"),
        PixelFilter::Equalize => "equalize (histogram)".to_owned(),
        PixelFilter::Noise { amount, seed } => format!("noise(amount {amount}, seed {seed})"),
        PixelFilter::Colorize { percent, color } => format!(
            "colorize({}%, {}%, {}% towards {})",
            percent[0],
            percent[1],
            percent[2],
            show_color(color)
        ),
        PixelFilter::Convolution {
            ref kernel,
            columns,
            normalize,
        } => format!(
            "convolution({}x{} kernel{})",
            columns,
            kernel.len() / usize::from(columns),
            if normalize { ", normalised" } else { "" }
        ),
        PixelFilter::Curve { .. } => "curve (tone curves)".to_owned(),
        PixelFilter::Frame { ref key } => {
            format!("frame {key} (nine-patch; the image flattened on white first)")
        }
        PixelFilter::Watermark(ref w) => {
            let place = |p: Place| match p {
                Place::Px { offset, from_end } => {
                    format!(
                        "{offset} px from the {}",
                        if from_end { "far" } else { "near" }
                    )
                }
                Place::Percent { percent, from_end } => {
                    format!(
                        "{percent}% from the {}",
                        if from_end { "far" } else { "near" }
                    )
                }
                Place::Center => "centred".to_owned(),
                Place::Repeat => "tiled".to_owned(),
            };
            let ratio = |r: Option<u16>| r.map_or("any".to_owned(), |r| format!("{r}%"));
            format!(
                "watermark {} (x: {}, y: {}, {}% more transparent, at most {} wide and {} high)",
                w.key,
                place(w.x),
                place(w.y),
                w.alpha,
                ratio(w.width_ratio),
                ratio(w.height_ratio)
            )
        }
        PixelFilter::RoundCorner {
            rx,
            ry,
            color,
            transparent,
        } => {
            let paint = if transparent {
                "transparent".to_owned()
            } else {
                show_color(color)
            };
            format!("round_corner({rx}|{ry}, {paint})")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::imaging::probe::sniff;
    use crate::imaging::recipe::{Dim, Fit, Milli, Rotation, Trim, TrimCorner, Upscale};

    fn fixture(name: &str) -> Vec<u8> {
        let path = format!("{}/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    fn run(name: &str, recipe: &Recipe, output: FormatChoice) -> Result<Encoded, ImagingError> {
        let bytes = fixture(name);
        let limits = Limits {
            max_source_pixels: 40_000_000,
            max_output_side: 4096,
            max_animation_pixels: 50_000_000,
        };
        render(&Job {
            bytes: Bytes::copy_from_slice(&bytes),
            recipe: recipe.clone(),
            output,
            default_quality: Quality::Fixed(85),
            auto_quality_target: auto_quality::AutoTarget::default(),
            tuning: encode::Tuning::default(),
            limits: limits.clone(),
            reduced: None,
            overlays: Vec::new(),
        })
    }

    fn sized(fit: Fit, w: u32, h: u32) -> Recipe {
        let px = |v| if v == 0 { Dim::Auto } else { Dim::Px(v) };
        Recipe {
            fit,
            width: px(w),
            height: px(h),
            ..Recipe::default()
        }
    }

    fn with(mut recipe: Recipe, f: impl FnOnce(&mut Recipe)) -> Recipe {
        f(&mut recipe);
        recipe
    }

    fn need(bytes: &[u8], recipe: &Recipe, output: FormatChoice) -> u64 {
        need_with(bytes, recipe, output, &[])
    }

    /// `need`, with `watermark()`/`frame()` images already read.
    fn need_with(
        bytes: &[u8],
        recipe: &Recipe,
        output: FormatChoice,
        overlays: &[(String, Bytes)],
    ) -> u64 {
        let limits = Limits {
            max_source_pixels: 100_000_000,
            max_output_side: 8192,
            max_animation_pixels: 50_000_000,
        };
        let job = Job {
            bytes: Bytes::copy_from_slice(bytes),
            recipe: recipe.clone(),
            output,
            default_quality: Quality::Fixed(80),
            auto_quality_target: auto_quality::AutoTarget::default(),
            tuning: encode::Tuning::default(),
            limits,
            reduced: None,
            overlays: overlays.to_vec(),
        };
        preflight(&job).unwrap().memory_need(&job)
    }

    /// A GIF with a `side` x `side` screen and `frames` frames of one pixel each.
    fn gif_with_screen(side: u16, frames: u16) -> Vec<u8> {
        let mut out = b"GIF89a".to_vec();
        out.extend(side.to_le_bytes());
        out.extend(side.to_le_bytes());
        out.extend([0xF0, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0xFF]);
        for i in 0..frames {
            out.extend(b"\x21\xf9\x04\x04\x02\x00\x00\x00\x2c");
            for v in [i, i, 1, 1] {
                out.extend(v.to_le_bytes());
            }
            out.extend(b"\x00\x02\x02\x4c\x01\x00");
        }
        out.push(0x3B);
        out
    }

    #[test]
    fn quality_auto_of_a_large_progressive_photo_fits_the_default_budget() {
        // Like dragonfly.jpg of the bench corpus: 4224x3168, progressive 4:2:2, whose
        // decoder keeps 54 MB of coefficients; at 800 wide, auto scores 800x600 pixels
        // (72 MB). Counted as a sum they were over the 128 MiB default budget (422 for a
        // plain photo); the search starts after the decode has ended.
        let (w, h) = (4224usize, 3168usize);
        let pixels: Vec<u8> = (0..w * h * 3).map(|i| (i % 251) as u8).collect();
        let mut c = turbojpeg::Compressor::new().unwrap();
        c.set_quality(85).unwrap();
        c.set_subsamp(turbojpeg::Subsamp::Sub2x1).unwrap();
        c.set_progressive(true).unwrap();
        let photo = c
            .compress_to_vec(turbojpeg::Image {
                pixels: pixels.as_slice(),
                width: w,
                pitch: w * 3,
                height: h,
                format: turbojpeg::PixelFormat::RGB,
            })
            .unwrap();
        let wide = |quality| {
            with(sized(Fit::FitIn, 800, 0), |r| {
                r.filters.quality = Some(quality);
            })
        };
        let fixed = need(&photo, &wide(Quality::Fixed(85)), JPEG);
        let auto = need(&photo, &wide(Quality::Auto), JPEG);
        assert!(fixed > 54 << 20, "the coefficients are counted: {fixed}");
        assert!(auto < 128 << 20, "{auto}");
        assert!(
            auto >= auto_quality::memory_need(Format::Jpeg, 800 * 600),
            "{auto}"
        );
    }

    #[test]
    fn memory_need_follows_the_decode_the_output_and_an_animations_canvas() {
        let photo = fixture("landscape.jpg"); // 640x427 baseline 4:2:0
        let small = need(&photo, &sized(Fit::FitIn, 100, 100), JPEG);
        let full = need(&photo, &sized(Fit::FitIn, 640, 640), JPEG);
        // quality(auto) scores trial encodes of the whole 640x427 output.
        let auto = need(
            &photo,
            &with(sized(Fit::FitIn, 640, 640), |r| {
                r.filters.quality = Some(Quality::Auto);
            }),
            JPEG,
        );
        // The search runs after the decoder's buffers are gone: its memory replaces the
        // decode's in the peak rather than adding to it.
        let scoring = auto_quality::memory_need(Format::Jpeg, 640 * 427);
        assert!(scoring >= 640 * 427 * 140);
        assert!(auto > full && auto < full + scoring, "{full} {auto}");
        assert!(auto >= scoring + 640 * 427 * 9, "{auto}");
        // A 100 px box decodes at 1/4 (160x107 RGB); the full size decodes whole and
        // keeps the output twice: at least 640x427 x (3 + 3 x 2) bytes more.
        assert!(full >= small + 640 * 427 * 8, "{small} {full}");
        assert!(
            small < 3 * photo.len() as u64 + RENDER_SLACK + 400_000,
            "{small}"
        );
        let avif = need(
            &photo,
            &sized(Fit::FitIn, 640, 640),
            FormatChoice::Explicit(Format::Avif),
        );
        assert!(avif >= full + 640 * 427 * 16, "{full} {avif}");

        // Two frames of one pixel on a 4000x4000 screen: the canvas is what counts.
        let gif = gif_with_screen(4000, 2);
        let anim = need(
            &gif,
            &sized(Fit::FitIn, 100, 100),
            FormatChoice::Explicit(Format::Gif),
        );
        assert!(anim >= 5 * 4000 * 4000 * 4, "{anim}");

        // A watermark's image is decoded whole and kept for the render: it counts too.
        let mark = fixture("landscape.jpg");
        let with_mark = need_with(
            &photo,
            &sized(Fit::FitIn, 640, 640),
            JPEG,
            &[("mark.jpg".to_owned(), Bytes::from(mark.clone()))],
        );
        assert!(
            with_mark >= full + 640 * 427 * (3 + 4) + mark.len() as u64,
            "{full} {with_mark}"
        );
        // As a still (2000 frames are over the animation limit) it is still the screen.
        let still = need(
            &gif_with_screen(4000, 2000),
            &sized(Fit::FitIn, 100, 100),
            JPEG,
        );
        assert!(still >= 4000 * 4000 * (4 + 3), "{still}");
    }

    const JPEG: FormatChoice = FormatChoice::Explicit(Format::Jpeg);
    const PNG: FormatChoice = FormatChoice::Explicit(Format::Png);
    const AUTO: FormatChoice = FormatChoice::Auto {
        webp: false,
        avif: false,
    };
    const AUTO_WEBP: FormatChoice = FormatChoice::Auto {
        webp: true,
        avif: false,
    };

    type Probe = (u32, u32, [u8; 3]);

    /// Golden render checks: output format (sniffed), size, and pixel colours (±tolerance).
    #[test]
    fn golden() {
        let red = [255, 0, 0];
        let blue = [0, 0, 255];
        let white = [255, 255, 255];
        #[allow(clippy::type_complexity)]
        let table: Vec<(
            &str,
            Recipe,
            FormatChoice,
            Option<SourceFormat>,
            (u32, u32),
            Vec<Probe>,
        )> = vec![
            (
                "landscape.jpg",
                sized(Fit::FitIn, 300, 200),
                AUTO,
                Some(SourceFormat::Jpeg),
                (300, 200),
                vec![],
            ),
            (
                "landscape.jpg",
                sized(Fit::Crop, 100, 100),
                AUTO_WEBP,
                Some(SourceFormat::Webp),
                (100, 100),
                vec![],
            ),
            (
                "landscape.jpg",
                sized(Fit::Crop, 0, 0),
                PNG,
                Some(SourceFormat::Png),
                (640, 427),
                vec![],
            ),
            // Displayed 200x300 with a red top: orientation applied before everything else.
            (
                "exif_rotated.jpg",
                sized(Fit::Crop, 0, 0),
                AUTO,
                Some(SourceFormat::Jpeg),
                (200, 300),
                vec![(100, 10, red), (100, 200, blue)],
            ),
            (
                "exif_rotated.jpg",
                sized(Fit::FitIn, 100, 100),
                AUTO,
                Some(SourceFormat::Jpeg),
                (67, 100),
                vec![(33, 5, red), (33, 80, blue)],
            ),
            (
                "cmyk.jpg",
                sized(Fit::Crop, 0, 0),
                AUTO,
                Some(SourceFormat::Jpeg),
                (64, 32),
                vec![(8, 16, red), (56, 16, blue)],
            ),
            // Transparent left half → white on JPEG, or the background colour.
            (
                "alpha.png",
                sized(Fit::Crop, 0, 0),
                JPEG,
                Some(SourceFormat::Jpeg),
                (64, 48),
                vec![(8, 24, white), (56, 24, blue)],
            ),
            (
                "alpha.png",
                with(sized(Fit::Crop, 0, 0), |r| {
                    r.filters.background = Some(Background::Color(Color {
                        r: 0,
                        g: 255,
                        b: 0,
                        a: 255,
                    }))
                }),
                JPEG,
                Some(SourceFormat::Jpeg),
                (64, 48),
                vec![(8, 24, [0, 255, 0])],
            ),
            (
                "alpha.png",
                sized(Fit::FitIn, 32, 32),
                AUTO,
                Some(SourceFormat::Png),
                (32, 24),
                vec![],
            ),
            (
                "gray16.png",
                sized(Fit::Crop, 24, 16),
                AUTO,
                Some(SourceFormat::Png),
                (24, 16),
                vec![],
            ),
            (
                "photo.webp",
                sized(Fit::FitIn, 160, 160),
                AUTO,
                Some(SourceFormat::Webp),
                (160, 90),
                vec![],
            ),
            (
                "animated.gif",
                sized(Fit::Crop, 16, 16),
                AUTO,
                Some(SourceFormat::Gif),
                (16, 16),
                vec![(8, 8, red)],
            ),
            // An animated GIF becomes an animated WebP under negotiation.
            (
                "animated.gif",
                sized(Fit::Crop, 16, 16),
                AUTO_WEBP,
                Some(SourceFormat::Webp),
                (16, 16),
                vec![],
            ),
            (
                "landscape.jpg",
                with(sized(Fit::FitIn, 200, 200), |r| {
                    r.filters.fill = Some(Fill::Color(Color {
                        r: 255,
                        g: 0,
                        b: 0,
                        a: 255,
                    }))
                }),
                AUTO,
                Some(SourceFormat::Jpeg),
                (200, 200),
                vec![(100, 5, red), (100, 195, red)],
            ),
            (
                "landscape.jpg",
                with(sized(Fit::Crop, 300, 100), |r| {
                    r.filters.proportion = Some(Milli(500))
                }),
                AUTO,
                Some(SourceFormat::Jpeg),
                (150, 50),
                vec![],
            ),
            (
                "landscape.jpg",
                with(sized(Fit::Crop, 300, 100), |r| {
                    r.filters.pixel = vec![PixelFilter::Rotate(Rotation::R90)]
                }),
                AUTO,
                Some(SourceFormat::Jpeg),
                (100, 300),
                vec![],
            ),
            // Manual crop of the red house (250..330 x 250..320 in the source).
            (
                "landscape.jpg",
                with(sized(Fit::Crop, 0, 0), |r| {
                    r.crop = Some(Rect {
                        left: 260,
                        top: 260,
                        right: 320,
                        bottom: 310,
                    })
                }),
                PNG,
                Some(SourceFormat::Png),
                (60, 50),
                vec![(30, 25, [200, 40, 40])],
            ),
            (
                "landscape.jpg",
                with(sized(Fit::Crop, 64, 64), |r| r.smart = true),
                AUTO,
                Some(SourceFormat::Jpeg),
                (64, 64),
                vec![],
            ),
            (
                "landscape.jpg",
                sized(Fit::Crop, 80, 60),
                FormatChoice::Explicit(Format::Avif),
                None,
                (80, 60),
                vec![],
            ),
        ];
        for (name, recipe, output, sniffed, size, probes) in table {
            let out =
                run(name, &recipe, output).unwrap_or_else(|e| panic!("{name} {recipe:?}: {e}"));
            assert_eq!(sniff(&out.bytes), sniffed, "{name} {recipe:?}");
            assert_eq!((out.width, out.height), size, "{name} {recipe:?}");
            if sniffed.is_none() {
                continue;
            }
            let decoded = image::load_from_memory(&out.bytes).unwrap().to_rgb8();
            assert_eq!(decoded.dimensions(), size, "{name} {recipe:?}");
            for (x, y, want) in probes {
                let got = decoded.get_pixel(x, y).0;
                let close = got.iter().zip(want).all(|(&g, w)| g.abs_diff(w) <= 40);
                assert!(
                    close,
                    "{name} {recipe:?}: pixel ({x},{y}) is {got:?}, want ≈{want:?}"
                );
            }
        }
    }

    #[test]
    fn failures() {
        let recipe = sized(Fit::FitIn, 100, 100);
        let err = |name| run(name, &recipe, AUTO).unwrap_err();
        assert!(matches!(
            err("bomb.png"),
            ImagingError::TooManyPixels {
                width: 50_000,
                height: 50_000,
                limit: 40_000_000
            }
        ));
        assert!(matches!(
            err("bomb.jpg"),
            ImagingError::TooManyPixels {
                width: 50_000,
                height: 50_000,
                ..
            }
        ));
        assert!(matches!(err("truncated.jpg"), ImagingError::Undecodable(_)));
        assert!(matches!(err("corrupt.png"), ImagingError::Undecodable(_)));
        assert!(matches!(
            err("not_an_image.txt"),
            ImagingError::UnsupportedFormat
        ));
        let huge = sized(Fit::Crop, 5000, 100);
        assert!(matches!(
            run("landscape.jpg", &huge, AUTO),
            Err(ImagingError::OutputTooLarge { limit: 4096, .. })
        ));
    }

    #[test]
    fn cancelled_before_work() {
        let bytes = fixture("landscape.jpg");
        let limits = Limits::default();
        let cancel = AtomicBool::new(true);
        let recipe = Recipe::default();
        let job = Job {
            bytes: Bytes::copy_from_slice(&bytes),
            recipe: recipe.clone(),
            output: AUTO,
            default_quality: Quality::Fixed(80),
            auto_quality_target: auto_quality::AutoTarget::default(),
            tuning: encode::Tuning::default(),
            limits: limits.clone(),
            reduced: None,
            overlays: Vec::new(),
        };
        let run = Run {
            cancel: Some(&cancel),
            share: None,
        };
        let planned = preflight(&job).unwrap();
        assert!(matches!(
            render_planned(&job, &planned, run),
            Err(ImagingError::Cancelled)
        ));
    }

    #[test]
    fn trim_then_fit() {
        // A 10 px white border around the landscape: trim removes exactly it.
        let inner = image::load_from_memory(&fixture("landscape.jpg"))
            .unwrap()
            .to_rgb8();
        let mut framed = image::RgbImage::from_pixel(660, 447, image::Rgb([255, 255, 255]));
        image::imageops::replace(&mut framed, &inner, 10, 10);
        let mut bytes = Vec::new();
        DynamicImage::ImageRgb8(framed)
            .write_to(
                &mut std::io::Cursor::new(&mut bytes),
                image::ImageFormat::Png,
            )
            .unwrap();
        let recipe = with(sized(Fit::Crop, 0, 0), |r| {
            r.trim = Some(Trim {
                corner: TrimCorner::TopLeft,
                tolerance: 20,
            })
        });
        let limits = Limits::default();
        let job = Job {
            bytes: Bytes::copy_from_slice(&bytes),
            recipe: recipe.clone(),
            output: AUTO,
            default_quality: Quality::Fixed(80),
            auto_quality_target: auto_quality::AutoTarget::default(),
            tuning: encode::Tuning::default(),
            limits: limits.clone(),
            reduced: None,
            overlays: Vec::new(),
        };
        let out = render(&job).unwrap();
        assert_eq!((out.width, out.height), (640, 427));
    }

    #[test]
    fn describe_lists_operations() {
        let bytes = fixture("exif_rotated.jpg");
        let limits = Limits::default();
        let recipe = with(sized(Fit::FitIn, 100, 100), |r| {
            r.filters.upscale = Upscale::Never;
            r.filters.pixel = vec![PixelFilter::Grayscale];
        });
        let job = Job {
            bytes: Bytes::copy_from_slice(&bytes),
            recipe: recipe.clone(),
            output: AUTO_WEBP,
            default_quality: Quality::Fixed(80),
            auto_quality_target: auto_quality::AutoTarget::default(),
            tuning: encode::Tuning::default(),
            limits: limits.clone(),
            reduced: None,
            overlays: Vec::new(),
        };
        let meta = describe(&job).unwrap();
        assert_eq!(meta["source"]["format"], "jpeg");
        assert_eq!(meta["source"]["orientation"], 6);
        assert_eq!(meta["output"]["format"], "webp");
        assert_eq!(meta["output"]["width"], 67);
        assert_eq!(meta["output"]["height"], 100);
        let ops: Vec<String> = serde_json::from_value(meta["operations"].clone()).unwrap();
        assert!(ops.iter().any(|o| o.starts_with("orient")), "{ops:?}");
        assert!(ops.iter().any(|o| o == "filter grayscale"), "{ops:?}");
        assert!(ops.last().unwrap().starts_with("encode webp"), "{ops:?}");
    }

    #[test]
    fn the_last_bit_is_skipped_only_where_it_cannot_show() {
        // A real photo as a finely quantized (quality 97) progressive JPEG.
        let photo = image::load_from_memory(&fixture("demo/sunset.jpg"))
            .unwrap()
            .to_rgb8();
        let mut c = turbojpeg::Compressor::new().unwrap();
        c.set_quality(97).unwrap();
        c.set_progressive(true).unwrap();
        let fine = c
            .compress_to_vec(turbojpeg::Image {
                pixels: photo.as_raw().as_slice(),
                width: 800,
                pitch: 800 * 3,
                height: 533,
                format: turbojpeg::PixelFormat::RGB,
            })
            .unwrap();
        let baseline = fixture("demo/sunset.jpg");
        let limits = Limits::default();
        // Whether the decode skipped the last bit; the render's own answer to the share
        // (`decode_need`) must agree with what it did.
        let skips = |bytes: &[u8], recipe: &Recipe, output, quality| {
            let job = Job {
                bytes: Bytes::copy_from_slice(bytes),
                recipe: recipe.clone(),
                output,
                default_quality: Quality::Fixed(quality),
                auto_quality_target: auto_quality::AutoTarget::default(),
                tuning: encode::Tuning::default(),
                limits: limits.clone(),
                reduced: None,
                overlays: Vec::new(),
            };
            let ops: Vec<String> =
                serde_json::from_value(describe(&job).unwrap()["operations"].clone()).unwrap();
            let skipped = ops.iter().any(|o| o.contains("without the last-bit"));
            if skipped {
                assert_eq!(
                    preflight(&job).unwrap().decode_need().unwrap().precision,
                    Precision::Visible
                );
                let out = render(&job).unwrap();
                assert!(out.width <= 400 && out.height <= 400, "a downscale");
            }
            skipped
        };
        let small = sized(Fit::FitIn, 300, 300); // decoded at 1/2
        let webp = FormatChoice::Explicit(Format::Webp);
        assert!(skips(&fine, &small, webp, 80));
        assert!(skips(&fine, &small, JPEG, 90));
        assert!(skips(&fine, &sized(Fit::Crop, 80, 80), JPEG, 80), "1/4");
        assert!(!skips(&fine, &small, PNG, 80), "lossless output");
        assert!(!skips(&fine, &small, webp, 91), "quality above 90");
        let filtered = with(small.clone(), |r| {
            r.filters.pixel = vec![PixelFilter::Grayscale]
        });
        assert!(!skips(&fine, &filtered, webp, 80), "a pixel filter");
        assert!(
            !skips(&fine, &sized(Fit::FitIn, 500, 500), webp, 80),
            "full-size decode"
        );
        // A baseline file has no such scans: nothing to skip, whatever the render allows.
        assert!(!skips(&baseline, &small, webp, 80), "baseline");
    }

    /// A frame of an animated answer: width, height, delay and the colour at its centre.
    type SeenFrame = (u32, u32, u32, [u8; 4]);

    /// The loop count and every frame of an animated answer.
    fn frames_of(bytes: &[u8]) -> (u16, Vec<SeenFrame>) {
        let info = probe(bytes).unwrap();
        let mut reader = animation::Reader::new(bytes, &info, 1 << 30).unwrap();
        let frames = std::iter::from_fn(|| reader.next_frame())
            .map(|f| {
                let f = f.unwrap();
                let (w, h) = (f.image.width(), f.image.height());
                let c = f.image.to_rgba8().get_pixel(w / 2, h / 2).0;
                (w, h, f.delay_ms, c)
            })
            .collect();
        (info.plays, frames)
    }

    fn near(a: [u8; 4], b: [u8; 4]) -> bool {
        a.iter().zip(b).all(|(x, y)| x.abs_diff(y) <= 24)
    }

    #[test]
    fn animations_keep_every_frame_delay_and_loop() {
        // fixtures/animated.gif: 32x32, red, green, blue, 100 ms each, looping forever.
        let colours = [[255, 0, 0, 255], [0, 255, 0, 255], [0, 0, 255, 255]];
        for (output, want) in [
            (AUTO, Format::Gif),
            (FormatChoice::Explicit(Format::Gif), Format::Gif),
            (FormatChoice::Explicit(Format::Webp), Format::Webp),
            (AUTO_WEBP, Format::Webp),
        ] {
            let out = run("animated.gif", &sized(Fit::FitIn, 16, 16), output).unwrap();
            assert_eq!(out.format, want);
            assert_eq!((out.width, out.height), (16, 16));
            let (plays, frames) = frames_of(&out.bytes);
            assert_eq!(plays, 0, "{want:?} loops forever");
            assert_eq!(frames.len(), 3, "{want:?}");
            for ((w, h, delay, c), colour) in frames.into_iter().zip(colours) {
                assert_eq!((w, h, delay), (16, 16, 100), "{want:?}");
                assert!(near(c, colour), "{want:?}: {c:?} vs {colour:?}");
            }
        }
        // Filters and flips apply to every frame.
        let recipe = with(sized(Fit::Crop, 8, 4), |r| {
            r.flip_h = true;
            r.filters.pixel.push(PixelFilter::Grayscale);
        });
        let out = run("animated.gif", &recipe, AUTO).unwrap();
        let (_, frames) = frames_of(&out.bytes);
        assert_eq!(frames.len(), 3);
        for (w, h, _, c) in frames {
            assert_eq!((w, h), (8, 4));
            assert!(
                c[0].abs_diff(c[1]) < 8 && c[1].abs_diff(c[2]) < 8,
                "grey: {c:?}"
            );
        }
        // A format that cannot animate gets the first frame.
        let out = run("animated.gif", &sized(Fit::FitIn, 16, 16), PNG).unwrap();
        assert_eq!(probe(&out.bytes).unwrap().frames, 1);
    }

    #[test]
    fn over_the_frame_budget_the_first_frame_is_served_and_meta_says_so() {
        let bytes = fixture("animated.gif");
        let recipe = sized(Fit::FitIn, 16, 16);
        let job = |limits: &Limits| Job {
            bytes: Bytes::copy_from_slice(&bytes),
            recipe: recipe.clone(),
            output: AUTO,
            default_quality: Quality::Fixed(85),
            auto_quality_target: auto_quality::AutoTarget::default(),
            tuning: encode::Tuning::default(),
            limits: limits.clone(),
            reduced: None,
            overlays: Vec::new(),
        };
        // 3 frames of 16x16 are 768 pixels.
        let at = |budget| Limits {
            max_animation_pixels: budget,
            ..Limits::default()
        };
        let fits = at(768);
        let over = at(767);
        assert_eq!(frames_of(&render(&job(&fits)).unwrap().bytes).1.len(), 3);
        let out = render(&job(&over)).unwrap();
        assert_eq!(out.format, Format::Gif);
        let (_, frames) = frames_of(&out.bytes);
        assert_eq!(frames.len(), 1);
        assert!(near(frames[0].3, [255, 0, 0, 255]), "the first frame");

        let meta = describe(&job(&fits)).unwrap();
        assert_eq!(meta["source"]["frames"], 3);
        assert_eq!(meta["output"]["frames"], 3);
        assert_eq!(meta["output"]["animated"], true);
        let meta = describe(&job(&over)).unwrap();
        assert_eq!(meta["output"]["frames"], 1);
        assert_eq!(meta["output"]["animated"], false);
        let steps = meta["operations"].to_string();
        assert!(steps.contains("over the frame budget of 767"), "{steps}");
        // An animation is never shared with other renders' decodes.
        assert_eq!(preflight(&job(&fits)).unwrap().decode_need(), None);
    }

    #[test]
    fn resolve_formats() {
        let info = |format, animated, has_alpha| SourceInfo {
            format,
            width: 10,
            height: 10,
            orientation: 1,
            has_alpha,
            animated,
            frames: if animated { 4 } else { 1 },
            plays: 0,
            has_icc: false,
            sample_bytes: 4,
            coefficient_bytes: 0,
        };
        use SourceFormat::*;
        let both = FormatChoice::Auto {
            webp: true,
            avif: true,
        };
        assert_eq!(both.resolve(&info(Jpeg, false, false)), Format::Avif);
        assert_eq!(AUTO_WEBP.resolve(&info(Png, false, true)), Format::Webp);
        // Animations: WebP when allowed (it animates), never AVIF, else their own format.
        assert_eq!(AUTO_WEBP.resolve(&info(Gif, true, false)), Format::Webp);
        assert_eq!(both.resolve(&info(Gif, true, false)), Format::Webp);
        assert_eq!(both.resolve(&info(Webp, true, false)), Format::Webp);
        let avif_only = FormatChoice::Auto {
            webp: false,
            avif: true,
        };
        assert_eq!(avif_only.resolve(&info(Gif, true, false)), Format::Gif);
        assert_eq!(AUTO.resolve(&info(Gif, true, false)), Format::Gif);
        assert_eq!(AUTO.resolve(&info(Webp, true, false)), Format::Webp);
        assert_eq!(AUTO_WEBP.resolve(&info(Gif, false, false)), Format::Webp);
        assert_eq!(AUTO.resolve(&info(Png, false, true)), Format::Png);
        assert_eq!(AUTO.resolve(&info(Webp, false, false)), Format::Webp);
        assert_eq!(JPEG.resolve(&info(Gif, true, false)), Format::Jpeg);
    }

    /// Prints per-stage timings for the bench photos; asserts nothing about time. Run with
    /// `cargo test --lib stage_timings -- --ignored --nocapture`.
    #[test]
    #[ignore = "needs /work/shared/bench-images; prints timings only"]
    #[allow(clippy::disallowed_methods)] // the test's own knob, not a setting
    fn stage_timings() {
        let dir = std::env::var("IMGEDGE_BENCH_IMAGES")
            .unwrap_or_else(|_| "/work/shared/bench-images".to_owned());
        let cases = [
            ("phone_12mp.jpg", sized(Fit::FitIn, 300, 200), JPEG),
            ("phone_12mp.jpg", sized(Fit::FitIn, 800, 0), JPEG),
            (
                "phone_12mp.jpg",
                sized(Fit::FitIn, 300, 200),
                FormatChoice::Explicit(Format::Webp),
            ),
            (
                "phone_12mp.jpg",
                sized(Fit::FitIn, 800, 0),
                FormatChoice::Explicit(Format::Avif),
            ),
            (
                "storm.jpg",
                with(sized(Fit::Crop, 80, 80), |r| r.smart = true),
                JPEG,
            ),
            (
                "emerald_logo.png",
                sized(Fit::FitIn, 200, 200),
                FormatChoice::Explicit(Format::Webp),
            ),
        ];
        let limits = Limits::default();
        for (file, recipe, output) in cases {
            let Ok(bytes) = std::fs::read(format!("{dir}/{file}")) else {
                continue;
            };
            for _ in 0..2 {
                let job = Job {
                    bytes: Bytes::copy_from_slice(&bytes),
                    recipe: recipe.clone(),
                    output,
                    default_quality: Quality::Fixed(80),
                    auto_quality_target: auto_quality::AutoTarget::default(),
                    tuning: encode::Tuning::default(),
                    limits: limits.clone(),
                    reduced: None,
                    overlays: Vec::new(),
                };
                let out = render(&job).unwrap();
                let t = out.timings;
                println!(
                    "{file} {:?} {}x{} → {:?} {}x{} {} B: decode {:?}, transform {:?}, encode {:?}",
                    recipe.fit,
                    recipe.width.clone_px(),
                    recipe.height.clone_px(),
                    out.format,
                    out.width,
                    out.height,
                    out.bytes.len(),
                    t.decode,
                    t.transform,
                    t.encode
                );
            }
        }
    }

    trait ClonePx {
        fn clone_px(&self) -> u32;
    }

    impl ClonePx for Dim {
        fn clone_px(&self) -> u32 {
            if let Dim::Px(v) = self { *v } else { 0 }
        }
    }
}
