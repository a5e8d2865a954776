//! The Thumbor URL grammar: a raw request path becomes a typed [`ParsedUrl`], and a
//! [`Recipe`] prints back to its canonical path (the variant cache key).
//!
//! Pure: no I/O, no configuration, no signature checking (`edge::access` owns that) and no
//! output-size limits (checked against config elsewhere). Every number is bounded here so
//! arithmetic downstream cannot overflow.
//!
//! # Grammar
//!
//! ```text
//! [SIGNATURE|unsafe/][meta/][trim[:top-left|:bottom-right][:TOLERANCE]/][AxB:CxD/]
//! [fit-in/|full-fit-in/|adaptive-fit-in/|adaptive-full-fit-in/][-][W]x[-][H]/
//! [left|center|right/][top|middle|bottom/][smart/][filters:NAME(ARGS)[:NAME(ARGS)...]/]<file key>
//! ```
//!
//! The first segment is a signature when it is `unsafe` or has the shape of a Thumbor
//! signature (27 base64url characters and `=`). Unpadded signatures are not recognised.
//!
//! # Where the options end and the key begins
//!
//! Segments are read left to right. Each one is either
//! 1. a valid option: an exact keyword (`meta`, `fit-in`, `left`, `smart`, ...), `trim` or
//!    `trim:...`, `filters:...`, a size such as `300x200`, `-x-`, `origx` or a crop `AxB:CxD`;
//! 2. an attempted option, an error that says what is wrong and the expected form: anything
//!    starting with `filters:` / `trim:` (or a misspelt `filter:` / `Filters:`), `unsafe`
//!    after the first segment, a size look-alike (`[-]W x [-]H` where each side is empty,
//!    starts with a digit, or is `orig`/`auto` in any case: `300X200`, `1.5x2`, `300x200px`,
//!    `999999x1`) or a crop look-alike (a number, `x`, then a `:`: `10x10:5`, `-1x0:9x9`).
//!    A segment ending in a file extension is never an attempt: `x.jpg`, `2x.png` and
//!    `100x100.jpg` are keys, and so are `3xl` and `linux` (a side is not numeric);
//! 3. anything else: the key starts here and runs to the end of the path, `/` included,
//!    so `300x200/photos/smart/a.jpg` is the key `photos/smart/a.jpg`.
//!
//! Options must come in grammar order, each at most once; an option after a later one
//! (`smart/300x200/k.jpg`) is an error naming both and the order. A path that ends while
//! still reading options (`fit-in/300x200`, `300x200/`) has no key: an error.
//!
//! Options are matched on the raw text (the one exception: `filters%3A` reads as `filters:`)
//! and only the key is percent-decoded. So a key whose first segment would read as an option
//! (a folder called `smart`, `2x` or `4x4`) is written with its first character
//! percent-encoded: `%73mart/a.jpg` is the key `smart/a.jpg`. [`canonical`] does this itself.
//!
//! # Filters
//!
//! Filter names are lowercase, as in Thumbor. The text after `filters:` is percent-decoded
//! before parsing (browsers and tools encode `#`, `|`, spaces and sometimes `:`/`(`), spaces
//! around arguments are ignored, an empty list or entry (`filters:`, `a():`, `::`) is a 400,
//! and filters without arguments may omit the parentheses (`grayscale`). Settings are
//! last-one-wins; pixel filters keep URL order. `rotate` takes any whole angle, normalised
//! modulo 360 (Thumbor applies only multiples of 90); `rotate(0)` is no filter. `blur(r,s)`
//! with `s == r` is `blur(r)`; a radius over 150 is 150, as in Thumbor. Arguments are split at
//! commas outside brackets, so `curve([(0,0),(255,255)],...)` reads as Thumbor writes it.
//! Colour arguments and `format`/`fill` keywords are case-insensitive.

mod canonical;
mod filters;

pub use canonical::canonical;
pub use filters::FILTERS;
use filters::parse_filters;

use std::borrow::Cow;
use std::sync::LazyLock;

use percent_encoding::{AsciiSet, CONTROLS, percent_decode_str, utf8_percent_encode};
use regex::{Captures, Regex};

use crate::imaging::recipe::{
    Background, Color, CurvePoints, Dim, Dpr, Fill, Filters, Fit, Format, HAlign, Milli,
    PixelFilter, Place, Quality, Recipe, Rect, Rotation, Trim, TrimCorner, Upscale, VAlign,
    Watermark,
};
use crate::key::{ObjectKey, quote};

/// Largest number of pixels accepted in a size, crop, focal or corner radius.
pub const MAX_PIXELS: u32 = 100_000;
/// Most filters one URL may list.
pub const MAX_FILTERS: usize = 32;
/// Longest accepted `filters:` segment, in bytes as received.
pub const MAX_FILTERS_SEGMENT_BYTES: usize = 2048;
/// Longest accepted path, in bytes as received.
pub const MAX_PATH_BYTES: usize = 8192;

const MAX_TRIM_TOLERANCE: u16 = 442;
const ORDER: &str = "[SIGNATURE|unsafe/][meta/][trim/][AxB:CxD/][fit-in/][WxH/]\
                     [left|center|right/][top|middle|bottom/][smart/][filters:.../]<file key>";

/// How the URL claims to be authorised. Checking an HMAC is `edge::access`'s job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signature {
    /// No signature segment: the bare form the original product uses.
    None,
    /// The literal `unsafe/` segment.
    Unsafe,
    /// A Thumbor signature segment, as received (28 characters, padded base64url).
    Hmac(String),
}

/// A request path understood: who signed it, what to do, and to which object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedUrl {
    pub signature: Signature,
    /// `meta/`: answer with JSON describing the operations instead of the image.
    pub meta: bool,
    pub recipe: Recipe,
    pub key: ObjectKey,
    /// Everything after the signature segment exactly as received (still percent-encoded),
    /// i.e. what the Thumbor HMAC covers.
    pub signed_path: String,
}

/// A malformed URL: which segment (or filter call) and what was expected instead.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[error("segment `{segment}`: {reason}")]
pub struct UrlError {
    /// The offending text as received, cut to a bounded length.
    pub segment: String,
    /// What was wrong and what was expected, for the person who wrote the URL.
    pub reason: String,
}

impl UrlError {
    fn new(segment: &str, reason: impl Into<String>) -> UrlError {
        UrlError {
            segment: quote(segment),
            reason: reason.into(),
        }
    }
}

/// Parses a raw request path (with or without the leading `/`, without the query string).
pub fn parse(path: &str) -> Result<ParsedUrl, UrlError> {
    let path = path.strip_prefix('/').unwrap_or(path);
    if path.len() > MAX_PATH_BYTES {
        let reason = format!("the path is {} bytes; at most {MAX_PATH_BYTES}", path.len());
        return Err(UrlError::new(path, reason));
    }
    let (signature, signed_path) = split_signature(path);
    let mut options = parse_options(signed_path)?;
    let mut raw_key = options.raw_key;
    if std::mem::take(&mut options.recipe.filters.extract_focal)
        && let Some((crop, inner)) = extract_focal(raw_key)
    {
        options.recipe.filters.focal.push(crop);
        raw_key = inner;
    }
    let key = key_from_url(raw_key)?;
    Ok(ParsedUrl {
        signature,
        meta: options.meta,
        recipe: options.recipe,
        key,
        signed_path: signed_path.to_owned(),
    })
}

fn split_signature(path: &str) -> (Signature, &str) {
    let (first, rest) = path.split_once('/').unwrap_or((path, ""));
    if first == "unsafe" {
        (Signature::Unsafe, rest)
    } else if is_signature_shaped(first) {
        (Signature::Hmac(first.to_owned()), rest)
    } else {
        (Signature::None, path)
    }
}

/// Thumbor signatures are 20 HMAC-SHA1 bytes in padded base64url: 27 characters and `=`.
fn is_signature_shaped(segment: &str) -> bool {
    segment.len() == 28
        && segment.ends_with('=')
        && segment[..27]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

// ---------------------------------------------------------------------------------------
// Options: segment classification and order.
// ---------------------------------------------------------------------------------------

/// The grammar positions, in the order they must appear.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Stage {
    Meta,
    Trim,
    Crop,
    Fit,
    Size,
    HAlign,
    VAlign,
    Smart,
    Filters,
}

impl Stage {
    fn name(self) -> &'static str {
        match self {
            Stage::Meta => "meta",
            Stage::Trim => "trim",
            Stage::Crop => "crop (AxB:CxD)",
            Stage::Fit => "fit-in mode",
            Stage::Size => "size (WxH)",
            Stage::HAlign => "horizontal alignment (left|center|right)",
            Stage::VAlign => "vertical alignment (top|middle|bottom)",
            Stage::Smart => "smart",
            Stage::Filters => "filters",
        }
    }
}

/// The flip and dimensions of a size segment.
#[derive(Debug, Clone, Copy)]
struct Size {
    width: Dim,
    height: Dim,
    flip_h: bool,
    flip_v: bool,
}

/// One recognised option segment.
#[derive(Debug)]
enum UrlOption {
    Meta,
    Trim(Trim),
    /// A manual crop; `None` for `0x0:0x0`, which Thumbor reads as no crop at all.
    Crop(Option<Rect>),
    Fit(Fit),
    Size(Size),
    HAlign(HAlign),
    VAlign(VAlign),
    Smart,
    Filters(Filters),
}

impl UrlOption {
    fn stage(&self) -> Stage {
        match self {
            UrlOption::Meta => Stage::Meta,
            UrlOption::Trim(_) => Stage::Trim,
            UrlOption::Crop(_) => Stage::Crop,
            UrlOption::Fit(_) => Stage::Fit,
            UrlOption::Size(_) => Stage::Size,
            UrlOption::HAlign(_) => Stage::HAlign,
            UrlOption::VAlign(_) => Stage::VAlign,
            UrlOption::Smart => Stage::Smart,
            UrlOption::Filters(_) => Stage::Filters,
        }
    }
}

/// The options read so far, and the last one (for order errors).
#[derive(Default)]
struct OptionReader<'a> {
    recipe: Recipe,
    meta: bool,
    last: Option<(Stage, &'a str)>,
}

struct Options<'a> {
    recipe: Recipe,
    meta: bool,
    raw_key: &'a str,
}

impl<'a> OptionReader<'a> {
    fn accept(&mut self, segment: &'a str, option: UrlOption) -> Result<(), UrlError> {
        let stage = option.stage();
        if let Some((last_stage, last_segment)) = self.last
            && stage <= last_stage
        {
            return Err(order_error(segment, stage, last_stage, last_segment));
        }
        self.last = Some((stage, segment));
        let recipe = &mut self.recipe;
        match option {
            UrlOption::Meta => self.meta = true,
            UrlOption::Trim(trim) => recipe.trim = Some(trim),
            UrlOption::Crop(rect) => recipe.crop = rect,
            UrlOption::Fit(fit) => recipe.fit = fit,
            UrlOption::Size(size) => {
                (recipe.width, recipe.height) = (size.width, size.height);
                (recipe.flip_h, recipe.flip_v) = (size.flip_h, size.flip_v);
            }
            UrlOption::HAlign(align) => recipe.halign = align,
            UrlOption::VAlign(align) => recipe.valign = align,
            UrlOption::Smart => recipe.smart = true,
            UrlOption::Filters(filters) => recipe.filters = filters,
        }
        Ok(())
    }

    fn finish(self, raw_key: &'a str) -> Options<'a> {
        Options {
            recipe: self.recipe,
            meta: self.meta,
            raw_key,
        }
    }
}

fn order_error(segment: &str, stage: Stage, last: Stage, last_segment: &str) -> UrlError {
    let reason = if stage == last {
        format!(
            "the {} is given twice (first as `{last_segment}`)",
            stage.name()
        )
    } else {
        format!(
            "the {} must come before `{last_segment}` ({}); options go in this order: {ORDER}",
            stage.name(),
            last.name()
        )
    };
    UrlError::new(segment, reason)
}

/// Reads option segments up to the first key segment (see the module docs).
fn parse_options(path: &str) -> Result<Options<'_>, UrlError> {
    let mut reader = OptionReader::default();
    let mut rest = path;
    loop {
        let (segment, tail) = split_segment(rest);
        let Some(option) = classify(segment)? else {
            return Ok(reader.finish(rest));
        };
        reader.accept(segment, option)?;
        let Some(tail) = tail else {
            let reason = "the file key is missing: this segment reads as an option, so put the \
                          file key after it (a key that looks like an option is written with its \
                          first character percent-encoded, e.g. `%73mart`)";
            return Err(UrlError::new(segment, reason));
        };
        rest = tail;
    }
}

/// The first segment of `rest` and what follows its `/`. A `filters:` segment ends at the
/// first `/` outside parentheses, so that a filter argument may be a key with folders
/// (`filters:watermark(logos/brand.png,10,10,0)`).
fn split_segment(rest: &str) -> (&str, Option<&str>) {
    let end = if rest.starts_with("filters:") {
        let mut depth = 0i32;
        rest.bytes().position(|b| {
            match b {
                b'(' => depth += 1,
                b')' => depth -= 1,
                b'/' if depth <= 0 => return true,
                _ => {}
            }
            false
        })
    } else {
        rest.find('/')
    };
    match end {
        Some(i) => (&rest[..i], Some(&rest[i + 1..])),
        None => (rest, None),
    }
}

/// `extract_focal()`: when the key is itself a Thumbor URL with a manual crop
/// (`thumbor.example/unsafe/400x0:600x130/photo.jpg`, nested up to ten deep), the image is
/// the inner key and the crop becomes a focal region, as Thumbor documents the filter. As
/// in Thumbor, the first segment (a host, with or without `http(s)://`) is dropped and the
/// rest must be `unsafe/` or signed. Gives the crop and the inner raw key.
fn extract_focal(raw_key: &str) -> Option<(Rect, &str)> {
    let mut url = raw_key;
    for _ in 0..10 {
        let without_scheme = url
            .strip_prefix("https://")
            .or_else(|| url.strip_prefix("http://"))
            .unwrap_or(url);
        let (_, rest) = without_scheme.split_once('/')?;
        let (signature, signed) = split_signature(rest);
        if signature == Signature::None {
            return None;
        }
        let inner = parse_options(signed).ok()?;
        if let Some(crop) = inner.recipe.crop {
            return Some((crop, inner.raw_key));
        }
        url = inner.raw_key;
    }
    None
}

/// `Ok(None)`: not an option, the key starts here. `Err`: an option written wrongly.
fn classify(segment: &str) -> Result<Option<UrlOption>, UrlError> {
    let fail = |reason: String| UrlError::new(segment, reason);
    if let Some(option) = keyword(segment) {
        return Ok(Some(option));
    }
    if segment == "unsafe" {
        return Err(fail(
            "`unsafe` must be the first segment of the path".into(),
        ));
    }
    if segment == "trim" || segment.starts_with("trim:") {
        return parse_trim(segment)
            .map(|t| Some(UrlOption::Trim(t)))
            .map_err(fail);
    }
    if let Some(body) = strip_filters_prefix(segment) {
        return parse_filters(segment, body).map(|f| Some(UrlOption::Filters(f)));
    }
    if is_misspelt_filters(segment) {
        return Err(fail(
            "write the filters segment as `filters:` (lowercase, plural)".into(),
        ));
    }
    if has_file_extension(segment) {
        return Ok(None);
    }
    if CROP_LIKE.is_match(segment) {
        if segment.bytes().all(|b| matches!(b, b'0' | b'x' | b':')) {
            return Ok(Some(UrlOption::Crop(None)));
        }
        return parse_rect(segment, "crop")
            .map(|r| Some(UrlOption::Crop(Some(r))))
            .map_err(fail);
    }
    match SIZE_LIKE.captures(segment) {
        Some(caps) if is_size_attempt(&caps) => parse_size(&caps)
            .map(|s| Some(UrlOption::Size(s)))
            .map_err(fail),
        _ => Ok(None),
    }
}

/// The option keywords, for `misplaced_option_hint`.
const KEYWORDS: &[&str] = &[
    "meta",
    "trim",
    "fit-in",
    "full-fit-in",
    "adaptive-fit-in",
    "adaptive-full-fit-in",
    "left",
    "center",
    "right",
    "top",
    "middle",
    "bottom",
    "smart",
    "unsafe",
];

/// For a 404: when the first segments of a key that is not served look like an option
/// mistyped or out of place (`fitin/300x200/a.jpg`, `300x200/filterz:quality(80)/a.jpg`,
/// `300x200/fit-in/a.jpg`), says which option it resembles. Reads the key's text only, so
/// a private file gets the same answer as a missing one.
pub fn misplaced_option_hint(key: &ObjectKey) -> Option<String> {
    let segments: Vec<&str> = key.as_str().split('/').collect();
    let (_, folders) = segments.split_last()?;
    folders
        .iter()
        .take(6)
        .enumerate()
        .find_map(|(i, &segment)| {
            let hint = segment_hint(segment)?;
            let before = match i {
                0 => String::new(),
                _ => format!(" (after `{}`)", segments[..i].join("/")),
            };
            Some(format!(
                "`{}`{before} {hint}; options go before the key, in this order: {ORDER}",
                quote(segment)
            ))
        })
}

/// What one key segment resembles, if it looks like an option.
fn segment_hint(segment: &str) -> Option<String> {
    match classify(segment) {
        Ok(Some(option)) => {
            return Some(format!(
                "is an option ({}), but it came where the key had already begun, so the URL \
                 was read as a file key",
                option.stage().name()
            ));
        }
        Err(e) => return Some(format!("reads as an option written wrongly: {}", e.reason)),
        Ok(None) => {}
    }
    let lower = segment.to_ascii_lowercase();
    if let Some((head, _)) = lower.split_once([':', '(']) {
        let head = head.trim_end_matches(':');
        if head.len() >= 5 && strsim::damerau_levenshtein(head, "filters") <= 2 {
            return Some(
                "looks like the option `filters:` (lowercase, plural, then a colon)".into(),
            );
        }
    }
    if segment.len() < 4 || has_file_extension(segment) {
        return None;
    }
    let squashed: String = lower.chars().filter(|c| c.is_ascii_alphabetic()).collect();
    KEYWORDS
        .iter()
        .filter(|&&word| {
            squashed == word.replace('-', "")
                || (word.len() >= 5 && strsim::damerau_levenshtein(&lower, word) <= 2)
        })
        .min_by_key(|&&word| strsim::damerau_levenshtein(&lower, word))
        .map(|word| format!("looks like the option `{word}`"))
}

fn keyword(segment: &str) -> Option<UrlOption> {
    Some(match segment {
        "meta" => UrlOption::Meta,
        "fit-in" => UrlOption::Fit(Fit::FitIn),
        "full-fit-in" => UrlOption::Fit(Fit::FullFitIn),
        "adaptive-fit-in" => UrlOption::Fit(Fit::AdaptiveFitIn),
        "adaptive-full-fit-in" => UrlOption::Fit(Fit::AdaptiveFullFitIn),
        "left" => UrlOption::HAlign(HAlign::Left),
        "center" => UrlOption::HAlign(HAlign::Center),
        "right" => UrlOption::HAlign(HAlign::Right),
        "top" => UrlOption::VAlign(VAlign::Top),
        "middle" => UrlOption::VAlign(VAlign::Middle),
        "bottom" => UrlOption::VAlign(VAlign::Bottom),
        "smart" => UrlOption::Smart,
        _ => return None,
    })
}

/// `filters:`, also forgiven as `filters%3A` (an encoded colon).
fn strip_filters_prefix(segment: &str) -> Option<&str> {
    ["filters:", "filters%3A", "filters%3a"]
        .iter()
        .find_map(|prefix| segment.strip_prefix(prefix))
}

fn is_misspelt_filters(segment: &str) -> bool {
    let starts_with = |prefix: &str| {
        segment
            .get(..prefix.len())
            .is_some_and(|head| head.eq_ignore_ascii_case(prefix))
    };
    starts_with("filters:") || starts_with("filter:")
}

/// `name.ext` with a short alphanumeric extension starting with a letter.
fn has_file_extension(segment: &str) -> bool {
    segment.rsplit_once('.').is_some_and(|(_, ext)| {
        (1..=8).contains(&ext.len())
            && ext.starts_with(|c: char| c.is_ascii_alphabetic())
            && ext.bytes().all(|b| b.is_ascii_alphanumeric())
    })
}

/// A number followed by `x` and, later, a `:`: meant as `AxB:CxD`.
static CROP_LIKE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^-?[0-9][0-9A-Za-z.]*[xX][0-9A-Za-z.:-]*:").expect("CROP_LIKE is a valid regex")
});

/// `[-]W x [-]H`, split at the first `x`, each side a word; [`is_size_attempt`] decides.
static SIZE_LIKE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^(-?)([0-9A-WYZa-wyz.]*)([xX])(-?)([0-9A-Za-z.]*)$")
        .expect("SIZE_LIKE is a valid regex")
});

/// Both sides of the `x` look like dimensions (empty, a number, `orig`, `auto`), so
/// `3xl` or `linux` stay keys while `300x200px` or `300X200` are reported.
fn is_size_attempt(caps: &Captures<'_>) -> bool {
    let numeric = |side: &str| {
        side.is_empty()
            || side.starts_with(|c: char| c.is_ascii_digit() || c == '.')
            || ["orig", "auto"]
                .iter()
                .any(|word| side.eq_ignore_ascii_case(word))
    };
    numeric(&caps[2]) && numeric(&caps[5])
}

fn parse_size(caps: &Captures<'_>) -> Result<Size, String> {
    if &caps[3] == "X" {
        return Err("write the size as WxH with a lowercase `x`".into());
    }
    Ok(Size {
        width: parse_dim(&caps[2], "width")?,
        height: parse_dim(&caps[5], "height")?,
        flip_h: !caps[1].is_empty(),
        flip_v: !caps[4].is_empty(),
    })
}

fn parse_dim(text: &str, axis: &str) -> Result<Dim, String> {
    match text {
        "" => return Ok(Dim::Auto),
        "orig" => return Ok(Dim::Orig),
        _ => {}
    }
    if !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "{axis} must be a whole number of pixels 0..={MAX_PIXELS}, `orig`, or empty \
             (empty or 0 keeps the aspect ratio), got `{text}`"
        ));
    }
    match pixels(text) {
        Some(0) => Ok(Dim::Auto),
        Some(n) => Ok(Dim::Px(n)),
        None => Err(format!("{axis} {text} is too large; at most {MAX_PIXELS}")),
    }
}

/// Decimal digits only (leading zeros allowed), at most [`MAX_PIXELS`].
fn pixels(text: &str) -> Option<u32> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    match text.trim_start_matches('0') {
        "" => Some(0),
        digits if digits.len() <= 6 => digits.parse().ok().filter(|n| *n <= MAX_PIXELS),
        _ => None,
    }
}

fn parse_trim(segment: &str) -> Result<Trim, String> {
    const SYNTAX: &str = "trim takes trim[:top-left|:bottom-right][:TOLERANCE]";
    let mut parts = segment.split(':').skip(1);
    let mut trim = Trim {
        corner: TrimCorner::TopLeft,
        tolerance: 0,
    };
    let mut next = parts.next();
    if let Some(corner @ ("top-left" | "bottom-right")) = next {
        if corner == "bottom-right" {
            trim.corner = TrimCorner::BottomRight;
        }
        next = parts.next();
    }
    if let Some(text) = next {
        trim.tolerance = int_in(text, "the tolerance", 0, MAX_TRIM_TOLERANCE.into())
            .map_err(|reason| format!("{reason}; {SYNTAX}"))? as u16;
    }
    if let Some(extra) = parts.next() {
        return Err(format!("unexpected `:{extra}`; {SYNTAX}"));
    }
    Ok(trim)
}

/// `AxB:CxD` as a rectangle with right > left and bottom > top.
fn parse_rect(text: &str, what: &str) -> Result<Rect, String> {
    let point = |part: &str| {
        let (x, y) = part.split_once('x')?;
        Some((pixels(x)?, pixels(y)?))
    };
    let corners = text
        .split_once(':')
        .and_then(|(a, b)| Some((point(a)?, point(b)?)));
    let Some(((left, top), (right, bottom))) = corners else {
        return Err(format!(
            "{what} must be AxB:CxD (left x top : right x bottom, whole pixels \
             0..={MAX_PIXELS}), got `{text}`"
        ));
    };
    if right <= left {
        return Err(format!(
            "{what} right edge {right} must be greater than left edge {left}"
        ));
    }
    if bottom <= top {
        return Err(format!(
            "{what} bottom edge {bottom} must be greater than top edge {top}"
        ));
    }
    Ok(Rect {
        left,
        top,
        right,
        bottom,
    })
}

// ---------------------------------------------------------------------------------------
// Argument scalars.
// ---------------------------------------------------------------------------------------

/// An optionally negative decimal integer of at most 18 digits (no `+`, no spaces).
fn int(text: &str) -> Option<i64> {
    let digits = text.strip_prefix('-').unwrap_or(text);
    if digits.is_empty() || digits.len() > 18 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

fn int_in(text: &str, what: &str, lo: i64, hi: i64) -> Result<i64, String> {
    int(text)
        .filter(|n| (lo..=hi).contains(n))
        .ok_or_else(|| format!("{what} must be an integer {lo}..={hi}, got `{text}`"))
}

/// A decimal with at most three decimals and magnitude at most 1,000,000.
fn milli(text: &str) -> Option<Milli> {
    let (negative, body) = match text.strip_prefix('-') {
        Some(body) => (true, body),
        None => (false, text),
    };
    let (whole, frac) = body.split_once('.').unwrap_or((body, ""));
    let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.len() + frac.len() == 0 || whole.len() > 7 || frac.len() > 3 {
        return None;
    }
    if !all_digits(whole) || !all_digits(frac) {
        return None;
    }
    let whole: i32 = if whole.is_empty() {
        0
    } else {
        whole.parse().ok()?
    };
    let frac: i32 = format!("{frac:0<3}").parse().ok()?;
    let value = whole.checked_mul(1000)?.checked_add(frac)?;
    (value <= 1_000_000_000).then_some(Milli(if negative { -value } else { value }))
}

fn milli_in(text: &str, what: &str, lo: Milli, hi: Milli) -> Result<Milli, String> {
    milli(text)
        .filter(|m| (lo..=hi).contains(m))
        .ok_or_else(|| {
            format!("{what} must be a number {lo}..={hi} with at most 3 decimals, got `{text}`")
        })
}

fn bool_arg(text: &str, what: &str) -> Result<bool, String> {
    match text.to_ascii_lowercase().as_str() {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        _ => Err(format!("{what} must be true, false, 1 or 0, got `{text}`")),
    }
}

fn color_arg(text: &str, what: &str) -> Result<Color, String> {
    parse_color(text).ok_or_else(|| {
        format!(
            "{what} must be a colour: a CSS basic name (white, black, red, ...), rrggbb, \
             #rrggbb, rgb or rrggbbaa, got `{text}`"
        )
    })
}

/// CSS basic names, `rgb`, `rrggbb`, `rrggbbaa`, each with an optional `#`; any case.
fn parse_color(text: &str) -> Option<Color> {
    let lower = text.to_ascii_lowercase();
    if let Some(color) = named_color(&lower) {
        return Some(color);
    }
    let hex = lower.strip_prefix('#').unwrap_or(&lower);
    if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let byte = |i: usize| u8::from_str_radix(&hex[i..i + 2], 16).ok();
    let nibble = |i: usize| u8::from_str_radix(&hex[i..=i], 16).ok().map(|n| n * 17);
    match hex.len() {
        3 => Some(Color {
            r: nibble(0)?,
            g: nibble(1)?,
            b: nibble(2)?,
            a: 255,
        }),
        6 => Some(Color {
            r: byte(0)?,
            g: byte(2)?,
            b: byte(4)?,
            a: 255,
        }),
        8 => Some(Color {
            r: byte(0)?,
            g: byte(2)?,
            b: byte(4)?,
            a: byte(6)?,
        }),
        _ => None,
    }
}

fn named_color(name: &str) -> Option<Color> {
    let rgb = |r, g, b| Color { r, g, b, a: 255 };
    Some(match name {
        "white" => Color::WHITE,
        "black" => Color::BLACK,
        "red" => rgb(255, 0, 0),
        "green" => rgb(0, 128, 0),
        "blue" => rgb(0, 0, 255),
        "yellow" => rgb(255, 255, 0),
        "gray" | "grey" => rgb(128, 128, 128),
        "silver" => rgb(192, 192, 192),
        "maroon" => rgb(128, 0, 0),
        "purple" => rgb(128, 0, 128),
        "fuchsia" => rgb(255, 0, 255),
        "lime" => rgb(0, 255, 0),
        "olive" => rgb(128, 128, 0),
        "navy" => rgb(0, 0, 128),
        "teal" => rgb(0, 128, 128),
        "aqua" => rgb(0, 255, 255),
        "orange" => rgb(255, 165, 0),
        "transparent" => Color {
            r: 0,
            g: 0,
            b: 0,
            a: 0,
        },
        _ => return None,
    })
}

// ---------------------------------------------------------------------------------------
// Keys.
// ---------------------------------------------------------------------------------------

/// Percent-decodes `text`, rejecting `%` not followed by two hex digits and invalid UTF-8.
fn decode_percent<'a>(text: &'a str, what: &str) -> Result<Cow<'a, str>, String> {
    let bytes = text.as_bytes();
    for (i, _) in text.match_indices('%') {
        let escape = bytes.get(i + 1..i + 3);
        if !escape.is_some_and(|pair| pair.iter().all(u8::is_ascii_hexdigit)) {
            return Err(format!(
                "{what} has a `%` that does not start an escape like `%20`; write `%` as `%25`"
            ));
        }
    }
    percent_decode_str(text)
        .decode_utf8()
        .map_err(|_| format!("{what} is not valid UTF-8 after percent-decoding"))
}

/// Decodes and validates the key part of a URL path. Errors quote the key as written.
fn key_from_url(encoded: &str) -> Result<ObjectKey, UrlError> {
    let fail = |reason: String| UrlError::new(encoded, reason);
    let decoded = decode_percent(encoded, "the file key").map_err(fail)?;
    // A `.` segment names the same place as none (Thumbor serves `./a.jpg` as `a.jpg`);
    // `..` and empty segments stay refused.
    let key = if decoded.split('/').any(|segment| segment == ".") {
        let kept: Vec<&str> = decoded.split('/').filter(|s| *s != ".").collect();
        Cow::Owned(kept.join("/"))
    } else {
        decoded
    };
    ObjectKey::parse(&key).map_err(|e| fail(e.reason))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::MAX_KEY_BYTES;
    use proptest::prelude::*;

    #[test]
    fn hints_for_keys_that_look_like_mistyped_options() {
        let hint = |path: &str| {
            let key = parse(path).expect(path).key;
            misplaced_option_hint(&key).map(|h| h.split(';').next().unwrap().to_owned())
        };
        let table: &[(&str, Option<&str>)] = &[
            (
                "fitin/300x200/a.jpg",
                Some("`fitin` looks like the option `fit-in`"),
            ),
            (
                "Fit_In/300x200/a.jpg",
                Some("`Fit_In` looks like the option `fit-in`"),
            ),
            (
                "ful-fit-in/a.jpg",
                Some("`ful-fit-in` looks like the option `full-fit-in`"),
            ),
            (
                "300x200/centre/a.jpg",
                Some("`centre` looks like the option `center`"),
            ),
            ("smrat/a.jpg", Some("`smrat` looks like the option `smart`")),
            (
                "300x200/filterz:quality(80)/a.jpg",
                Some(
                    "`filterz:quality(80)` looks like the option `filters:` (lowercase, plural, then a colon)",
                ),
            ),
            (
                "fltrs:quality(80)/a.jpg",
                Some(
                    "`fltrs:quality(80)` looks like the option `filters:` (lowercase, plural, then a colon)",
                ),
            ),
            ("notes:2024/a.jpg", None),
            (
                "photos/fit-in/a.jpg",
                Some(
                    "`fit-in` (after `photos`) is an option (fit-in mode), but it came where the key had already begun, so the URL was read as a file key",
                ),
            ),
            (
                "photos/2024/300X200/a.jpg",
                Some(
                    "`300X200` (after `photos/2024`) reads as an option written wrongly: write the size as WxH with a lowercase `x`",
                ),
            ),
            // Ordinary folders and file names are left alone.
            ("photos/2024/holiday/a.jpg", None),
            ("a.jpg", None),
            ("smart.jpg", None),
            ("images/left-side/a.jpg", None),
            ("metal/a.jpg", None),
        ];
        for (path, expected) in table {
            assert_eq!(hint(path).as_deref(), *expected, "{path}");
        }
    }

    /// `expected` is the canonical print, or `error: <segment> => <part of the reason>`.
    /// Every accepted URL must also re-parse from its canonical print to the same value.
    fn check(input: &str, expected: &str) {
        let parsed = parse(input);
        match (parsed, expected.strip_prefix("error: ")) {
            (Ok(p), None) => {
                let printed = canonical(&p.recipe, p.meta, &p.key);
                assert_eq!(printed, expected, "input: {input}");
                let again = parse(&printed).unwrap_or_else(|e| panic!("{printed}: {e}"));
                assert_eq!(
                    (&again.recipe, again.meta, &again.key),
                    (&p.recipe, p.meta, &p.key)
                );
            }
            (Err(e), Some(want)) => {
                let (segment, reason) = want.split_once(" => ").expect("`segment => reason`");
                assert_eq!(e.segment, segment, "input: {input}, error: {e}");
                assert!(
                    e.reason.contains(reason),
                    "input: {input}\n got: {e}\nwant: {reason}"
                );
            }
            (Ok(p), Some(_)) => {
                let printed = canonical(&p.recipe, p.meta, &p.key);
                panic!("input: {input}: expected an error, parsed as `{printed}`");
            }
            (Err(e), None) => panic!("input: {input}: expected `{expected}`, got error {e}"),
        }
    }

    const ACCEPTED: &[(&str, &str)] = &[
        // Signatures and the bare form.
        ("/photo.jpg", "photo.jpg"),
        ("photo.jpg", "photo.jpg"),
        ("unsafe/photo.jpg", "photo.jpg"),
        (
            "/PHEMMIzCmPT6v5U_pUQs20_og0A=/300x200/smart/thumbor.globo.com/img/logo.png",
            "300x200/smart/thumbor.globo.com/img/logo.png",
        ),
        ("AAAAAAAAAAAAAAAAAAAAAAAAAAA=/a.jpg", "a.jpg"),
        // Sizes, flips, orig.
        ("300x200/a.jpg", "300x200/a.jpg"),
        ("0x0/a.jpg", "a.jpg"),
        ("x/a.jpg", "a.jpg"),
        ("300x/a.jpg", "300x/a.jpg"),
        ("300x0/a.jpg", "300x/a.jpg"),
        ("x200/a.jpg", "x200/a.jpg"),
        ("0x200/a.jpg", "x200/a.jpg"),
        ("0300x0200/a.jpg", "300x200/a.jpg"),
        ("0000000000x00000000000200/a.jpg", "x200/a.jpg"),
        ("-300x200/a.jpg", "-300x200/a.jpg"),
        ("300x-200/a.jpg", "300x-200/a.jpg"),
        ("-300x-200/a.jpg", "-300x-200/a.jpg"),
        ("-0x/a.jpg", "-x/a.jpg"),
        ("-x-/a.jpg", "-x-/a.jpg"),
        ("-0x-0/a.jpg", "-x-/a.jpg"),
        ("origx100/a.jpg", "origx100/a.jpg"),
        ("-origx-orig/a.jpg", "-origx-orig/a.jpg"),
        ("100000x100000/a.jpg", "100000x100000/a.jpg"),
        ("2x/icon.png", "2x/icon.png"),
        // Fit modes.
        ("fit-in/300x200/a.jpg", "fit-in/300x200/a.jpg"),
        ("full-fit-in/300x200/a.jpg", "full-fit-in/300x200/a.jpg"),
        (
            "adaptive-fit-in/300x200/a.jpg",
            "adaptive-fit-in/300x200/a.jpg",
        ),
        (
            "adaptive-full-fit-in/x200/a.jpg",
            "adaptive-full-fit-in/x200/a.jpg",
        ),
        ("fit-in/a.jpg", "fit-in/a.jpg"),
        // Alignment and smart.
        ("300x200/center/middle/a.jpg", "300x200/a.jpg"),
        ("300x200/left/top/a.jpg", "300x200/left/top/a.jpg"),
        ("300x200/right/bottom/a.jpg", "300x200/right/bottom/a.jpg"),
        ("300x200/middle/a.jpg", "300x200/a.jpg"),
        ("300x200/bottom/a.jpg", "300x200/bottom/a.jpg"),
        ("300x200/smart/a.jpg", "300x200/smart/a.jpg"),
        ("left/smart/a.jpg", "left/smart/a.jpg"),
        // Meta, trim, crop.
        ("meta/300x200/a.jpg", "meta/300x200/a.jpg"),
        ("unsafe/meta/a.jpg", "meta/a.jpg"),
        ("trim/a.jpg", "trim/a.jpg"),
        ("trim:top-left/a.jpg", "trim/a.jpg"),
        ("trim:bottom-right/a.jpg", "trim:bottom-right/a.jpg"),
        ("trim:50/a.jpg", "trim:50/a.jpg"),
        ("trim:top-left:0/a.jpg", "trim/a.jpg"),
        ("trim:bottom-right:442/a.jpg", "trim:bottom-right:442/a.jpg"),
        ("10x20:110x220/a.jpg", "10x20:110x220/a.jpg"),
        ("0x0:1x1/a.jpg", "0x0:1x1/a.jpg"),
        // Thumbor reads an all-zero box as no crop.
        ("0x0:0x0/a.jpg", "a.jpg"),
        ("0x0:0x0/200x200/a.jpg", "200x200/a.jpg"),
        ("00x0:0x000/fit-in/10x10/a.jpg", "fit-in/10x10/a.jpg"),
        (
            "unsafe/meta/trim:bottom-right:10/10x20:300x400/fit-in/-300x-200/left/top/smart/\
             filters:quality(80)/dir/a.jpg",
            "meta/trim:bottom-right:10/10x20:300x400/fit-in/-300x-200/left/top/smart/\
             filters:quality(80)/dir/a.jpg",
        ),
        // Filters: settings, last one wins.
        ("filters:quality(80)/a.jpg", "filters:quality(80)/a.jpg"),
        (
            "filters:quality(1):quality(100)/a.jpg",
            "filters:quality(100)/a.jpg",
        ),
        ("filters:quality(auto)/a.jpg", "filters:quality(auto)/a.jpg"),
        (
            "filters:quality(auto):quality(70)/a.jpg",
            "filters:quality(70)/a.jpg",
        ),
        (
            "filters:quality(70):quality(auto)/a.jpg",
            "filters:quality(auto)/a.jpg",
        ),
        ("filters:format(jpg)/a.jpg", "filters:format(jpeg)/a.jpg"),
        ("filters:format(WEBP)/a.jpg", "filters:format(webp)/a.jpg"),
        (
            "filters:format(png):format(avif):format(gif)/a.jpg",
            "filters:format(gif)/a.jpg",
        ),
        ("filters:fill(white)/a.jpg", "filters:fill(ffffff)/a.jpg"),
        ("filters:fill(%23FFF)/a.jpg", "filters:fill(ffffff)/a.jpg"),
        ("filters:fill(#aBc)/a.jpg", "filters:fill(aabbcc)/a.jpg"),
        (
            "filters:fill(ff000080)/a.jpg",
            "filters:fill(ff000080)/a.jpg",
        ),
        (
            "filters:fill(transparent)/a.jpg",
            "filters:fill(transparent)/a.jpg",
        ),
        ("filters:fill(auto)/a.jpg", "filters:fill(auto)/a.jpg"),
        (
            "filters:fill(red,true)/a.jpg",
            "filters:fill(ff0000,true)/a.jpg",
        ),
        ("filters:fill(red,0)/a.jpg", "filters:fill(ff0000)/a.jpg"),
        (
            "filters:background_color(AUTO)/a.jpg",
            "filters:background_color(auto)/a.jpg",
        ),
        ("filters:fill(BLUR)/a.jpg", "filters:fill(blur)/a.jpg"),
        (
            "filters:background_color(Orange)/a.jpg",
            "filters:background_color(ffa500)/a.jpg",
        ),
        (
            "filters:background_color(grey)/a.jpg",
            "filters:background_color(808080)/a.jpg",
        ),
        (
            "filters:background_color(transparent)/a.jpg",
            "filters:background_color(00000000)/a.jpg",
        ),
        ("filters:no_upscale()/a.jpg", "filters:no_upscale()/a.jpg"),
        (
            "filters:no_upscale():upscale()/a.jpg",
            "filters:upscale()/a.jpg",
        ),
        (
            "filters:strip_icc():strip_exif()/a.jpg",
            "filters:strip_exif():strip_icc()/a.jpg",
        ),
        (
            "filters:max_bytes(50000)/a.jpg",
            "filters:max_bytes(50000)/a.jpg",
        ),
        (
            "filters:proportion(0.5)/a.jpg",
            "filters:proportion(0.5)/a.jpg",
        ),
        (
            "filters:proportion(.125)/a.jpg",
            "filters:proportion(0.125)/a.jpg",
        ),
        (
            "filters:proportion(1.000)/a.jpg",
            "filters:proportion(1)/a.jpg",
        ),
        (
            "filters:focal(10x20:30x40)/a.jpg",
            "filters:focal(10x20:30x40)/a.jpg",
        ),
        (
            "filters:focal(10x20%3A30x40)/a.jpg",
            "filters:focal(10x20:30x40)/a.jpg",
        ),
        // Several focal regions are all kept, in URL order (their centre of mass is used).
        (
            "filters:focal(0x0:5x5):focal(10x20:30x40)/a.jpg",
            "filters:focal(0x0:5x5):focal(10x20:30x40)/a.jpg",
        ),
        ("filters:max_age(3600)/a.jpg", "filters:max_age(3600)/a.jpg"),
        ("filters:max_age(0)/a.jpg", "filters:max_age(0)/a.jpg"),
        // Filters: pixel filters, in URL order.
        ("filters:blur(5)/a.jpg", "filters:blur(5)/a.jpg"),
        ("filters:blur(0)/a.jpg", "filters:blur(0)/a.jpg"),
        ("filters:blur(5,2.5)/a.jpg", "filters:blur(5,2.5)/a.jpg"),
        ("filters:blur(5,5.000)/a.jpg", "filters:blur(5)/a.jpg"),
        (
            "filters:sharpen(1.5,0.5,true)/a.jpg",
            "filters:sharpen(1.5,0.5,true)/a.jpg",
        ),
        (
            "filters:sharpen(2,1,0)/a.jpg",
            "filters:sharpen(2,1,false)/a.jpg",
        ),
        (
            "filters:sharpen(.25,1.,TRUE)/a.jpg",
            "filters:sharpen(0.25,1,true)/a.jpg",
        ),
        ("filters:grayscale()/a.jpg", "filters:grayscale()/a.jpg"),
        ("filters:grayscale/a.jpg", "filters:grayscale()/a.jpg"),
        (
            "filters:brightness(-100):contrast(100)/a.jpg",
            "filters:brightness(-100):contrast(100)/a.jpg",
        ),
        ("filters:brightness(0)/a.jpg", "filters:brightness(0)/a.jpg"),
        ("filters:rotate(90)/a.jpg", "filters:rotate(90)/a.jpg"),
        ("filters:rotate(0)/a.jpg", "a.jpg"),
        ("filters:rotate(-90)/a.jpg", "filters:rotate(270)/a.jpg"),
        (
            "filters:rotate(450):rotate(360):rotate(180)/a.jpg",
            "filters:rotate(90):rotate(180)/a.jpg",
        ),
        (
            "filters:round_corner(20,255,255,255)/a.jpg",
            "filters:round_corner(20,255,255,255)/a.jpg",
        ),
        (
            "filters:round_corner(20|10,0,0,0,1)/a.jpg",
            "filters:round_corner(20|10,0,0,0,true)/a.jpg",
        ),
        (
            "filters:round_corner(20%7C20,1,2,3,false)/a.jpg",
            "filters:round_corner(20,1,2,3)/a.jpg",
        ),
        (
            "filters:grayscale():max_age(60):blur(2):quality(80):format(jpg):grayscale/a.jpg",
            "filters:quality(80):format(jpeg):max_age(60):grayscale():blur(2):grayscale()/a.jpg",
        ),
        // Forgiving filter syntax: spaces around arguments, no parentheses when empty.
        (
            "filters:quality(%2080%20):grayscale/a.jpg",
            "filters:quality(80):grayscale()/a.jpg",
        ),
        ("filters%3Aquality(80)/a.jpg", "filters:quality(80)/a.jpg"),
        // Keys.
        ("a/b/c.jpg", "a/b/c.jpg"),
        // Thumbor 7.8's other filters, in Thumbor's argument forms.
        (
            "filters:rgb(20,-20,0):saturation(1.5):equalize():noise(20,7):noise(5)/a.jpg",
            "filters:rgb(20,-20,0):saturation(1.5):equalize():noise(20,7):noise(5)/a.jpg",
        ),
        (
            "filters:colorize(40,80,20,00FF00):stretch()/a.jpg",
            "filters:stretch():colorize(40,80,20,00ff00)/a.jpg",
        ),
        // watermark(): a key with folders inside the parentheses (the `/` does not end the
        // filters segment), every position form, ratios given or `none`.
        (
            "fit-in/300x200/filters:watermark(logos/brand.png,10,-10,50)/a.jpg",
            "fit-in/300x200/filters:watermark(logos/brand.png,10,-10,50)/a.jpg",
        ),
        (
            "filters:watermark(w.png,center,repeat,0,20,none):watermark(w.png,50p,-0p,100,0,30)/a.jpg",
            "filters:watermark(w.png,center,repeat,0,20,none):watermark(w.png,50p,-0p,100,none,30)/a.jpg",
        ),
        (
            "filters:watermark(w%20mark.png,0,0,0)/a.jpg",
            "filters:watermark(w%20mark.png,0,0,0)/a.jpg",
        ),
        (
            "fit-in/200x200/filters:frame(frames/wood.png):grayscale()/a.jpg",
            "fit-in/200x200/filters:frame(frames/wood.png):grayscale()/a.jpg",
        ),
        // extract_focal(): an embedded Thumbor URL's crop is the focal region of its key.
        (
            "300x300/filters:extract_focal()/thumbor.example/unsafe/400x0:600x130/landscape.jpg",
            "300x300/filters:focal(400x0:600x130)/landscape.jpg",
        ),
        (
            "300x300/filters:extract_focal()/https://t.example/unsafe/fit-in/t2.example/unsafe/10x20:30x40/smart/a.jpg",
            "300x300/filters:focal(10x20:30x40)/a.jpg",
        ),
        // Without an embedded crop (or without `unsafe/` or a signature) nothing changes.
        (
            "300x300/filters:extract_focal()/landscape.jpg",
            "300x300/landscape.jpg",
        ),
        (
            "300x300/filters:extract_focal()/host/400x0:600x130/a.jpg",
            "300x300/host/400x0:600x130/a.jpg",
        ),
        (
            "filters:convolution(1;2;1;2;4;2;1;2;1,3,true):convolution(-1;-1;-1;-1;8;-1;-1;-1;-1,3,false)/a.jpg",
            "filters:convolution(1;2;1;2;4;2;1;2;1,3,true):convolution(-1;-1;-1;-1;8;-1;-1;-1;-1,3,false)/a.jpg",
        ),
        (
            "filters:convolution(1;2;1,3)/a.jpg",
            "filters:convolution(1;2;1,3,true)/a.jpg",
        ),
        (
            "filters:curve([(0,0),(255,255)],[(0,60),(255,255)],[],[(0,0),(128,200),(255,255)])/a.jpg",
            "filters:curve([(0,0),(255,255)],[(0,60),(255,255)],[],[(0,0),(128,200),(255,255)])/a.jpg",
        ),
        (
            "filters:rotate(45):rotate(-30):rotate(450)/a.jpg",
            "filters:rotate(45):rotate(330):rotate(90)/a.jpg",
        ),
        // Thumbor caps a blur radius at 150.
        ("filters:blur(500)/a.jpg", "filters:blur(150)/a.jpg"),
        // `.` segments are dropped, as Thumbor serves them.
        ("./a.jpg", "a.jpg"),
        ("a/%2E/./b.jpg", "a/b.jpg"),
        ("300x200/./a.jpg", "300x200/a.jpg"),
        ("a%20b.jpg", "a%20b.jpg"),
        ("a b.jpg", "a%20b.jpg"),
        ("%61.jpg", "a.jpg"),
        ("caf%C3%A9.jpg", "caf%C3%A9.jpg"),
        ("café/写真.jpg", "caf%C3%A9/%E5%86%99%E7%9C%9F.jpg"),
        ("a%2Fb.jpg", "a/b.jpg"),
        ("a%3Fb%23c.jpg", "a%3Fb%23c.jpg"),
        ("100%25.jpg", "100%25.jpg"),
        ("a+b(1):c=d.jpg", "a+b(1):c=d.jpg"),
        ("2024/05/a.jpg", "2024/05/a.jpg"),
        (
            "uuid-like-key-without-extension",
            "uuid-like-key-without-extension",
        ),
        ("x.jpg", "x.jpg"),
        ("2x.png", "2x.png"),
        ("100x100.jpg", "100x100.jpg"),
        ("300x200/100x100.jpg", "300x200/100x100.jpg"),
        ("3xl/shirt.jpg", "3xl/shirt.jpg"),
        ("linux/box.png", "linux/box.png"),
        ("12:30/a.jpg", "12:30/a.jpg"),
        ("photos/smart/a.jpg", "photos/smart/a.jpg"),
        (
            "300x200/photos/300x200/a.jpg",
            "300x200/photos/300x200/a.jpg",
        ),
        ("x/unsafe.jpg", "unsafe.jpg"),
        // Keys that read as options stay keys through an escaped first character.
        ("%73mart/a.jpg", "%73mart/a.jpg"),
        ("%33%30%30x200/a.jpg", "%3300x200/a.jpg"),
        ("%75nsafe/a.jpg", "%75nsafe/a.jpg"),
        ("meta/%6Deta/a.jpg", "meta/%6Deta/a.jpg"),
        ("%2Dx-/a.jpg", "%2Dx-/a.jpg"),
        ("%66ilters:x/a.jpg", "%66ilters:x/a.jpg"),
        (
            "%41AAAAAAAAAAAAAAAAAAAAAAAAAA=/a.jpg",
            "%41AAAAAAAAAAAAAAAAAAAAAAAAAA=/a.jpg",
        ),
    ];

    const REJECTED: &[(&str, &str)] = &[
        // An empty filter list or an empty filter (issue 18; Thumbor: 404 or skipped).
        (
            "filters:/a.jpg",
            "error: filters: => the filter list is empty",
        ),
        (
            "filters:quality(80):/a.jpg",
            "error: filters:quality(80): => an empty filter (`::` or a trailing `:`)",
        ),
        (
            "filters:quality(80)::grayscale()/a.jpg",
            "error: filters:quality(80)::grayscale() => an empty filter",
        ),
        // Missing key.
        ("", "error:  => file key is missing"),
        ("/", "error:  => file key is missing"),
        ("unsafe", "error:  => file key is missing"),
        ("unsafe/", "error:  => file key is missing"),
        ("300x200", "error: 300x200 => file key is missing"),
        ("fit-in/300x200/", "error:  => file key is missing"),
        ("300x200/smart", "error: smart => file key is missing"),
        // Options out of order or repeated.
        (
            "smart/300x200/k.jpg",
            "error: 300x200 => the size (WxH) must come before `smart` (smart); options go in this order: [SIGNATURE|unsafe/][meta/]",
        ),
        (
            "300x200/fit-in/k.jpg",
            "error: fit-in => fit-in mode must come before `300x200` (size (WxH))",
        ),
        (
            "middle/center/k.jpg",
            "error: center => options go in this order",
        ),
        (
            "top/left/k.jpg",
            "error: left => must come before `top` (vertical alignment",
        ),
        (
            "300x200/300x200/k.jpg",
            "error: 300x200 => size (WxH) is given twice",
        ),
        (
            "filters:quality(80)/smart/k.jpg",
            "error: smart => must come before `filters:quality(80)` (filters)",
        ),
        (
            "fit-in/meta/k.jpg",
            "error: meta => meta must come before `fit-in`",
        ),
        (
            "300x200/trim/k.jpg",
            "error: trim => trim must come before `300x200`",
        ),
        (
            "10x10:20x20/trim:5/k.jpg",
            "error: trim:5 => must come before `10x10:20x20` (crop (AxB:CxD))",
        ),
        ("meta/meta/k.jpg", "error: meta => given twice"),
        (
            "fit-in/unsafe/k.jpg",
            "error: unsafe => must be the first segment",
        ),
        // Sizes.
        ("300X200/k.jpg", "error: 300X200 => lowercase `x`"),
        (
            "300x200px/k.jpg",
            "error: 300x200px => height must be a whole number of pixels",
        ),
        (
            "1.5x2/k.jpg",
            "error: 1.5x2 => width must be a whole number of pixels",
        ),
        (
            "200000x1/k.jpg",
            "error: 200000x1 => width 200000 is too large; at most 100000",
        ),
        (
            "1x99999999999999999999/k.jpg",
            "error: 1x99999999999999999999 => height 99999999999999999999 is too large",
        ),
        ("autox100/k.jpg", "error: autox100 => got `auto`"),
        ("ORIGx100/k.jpg", "error: ORIGx100 => width must be"),
        // Crops.
        (
            "10x10:5x20/k.jpg",
            "error: 10x10:5x20 => right edge 5 must be greater than left edge 10",
        ),
        (
            "10x10:20x10/k.jpg",
            "error: 10x10:20x10 => bottom edge 10 must be greater than top edge 10",
        ),
        ("10x10:20/k.jpg", "error: 10x10:20 => crop must be AxB:CxD"),
        (
            "-10x10:20x20/k.jpg",
            "error: -10x10:20x20 => crop must be AxB:CxD",
        ),
        (
            "10x10:200000x20/k.jpg",
            "error: 10x10:200000x20 => 0..=100000",
        ),
        // Trim.
        (
            "trim:left/k.jpg",
            "error: trim:left => the tolerance must be an integer 0..=442, got `left`",
        ),
        (
            "trim:500/k.jpg",
            "error: trim:500 => trim[:top-left|:bottom-right][:TOLERANCE]",
        ),
        (
            "trim:top-left:5:6/k.jpg",
            "error: trim:top-left:5:6 => unexpected `:6`",
        ),
        ("trim:/k.jpg", "error: trim: => got ``"),
        // Filters segment.
        (
            "filter:quality(80)/k.jpg",
            "error: filter:quality(80) => `filters:` (lowercase, plural)",
        ),
        (
            "Filters:quality(80)/k.jpg",
            "error: Filters:quality(80) => `filters:`",
        ),
        (
            // An open parenthesis runs to the end (a `/` inside parentheses is an argument's).
            "filters:quality(80/k.jpg",
            "error: quality(80/k.jpg => missing its closing `)`",
        ),
        (
            "filters:quality(80)x/k.jpg",
            "error: quality(80)x => expected `:` between filters",
        ),
        (
            "filters:(80)/k.jpg",
            "error: (80) => filter name is missing",
        ),
        (
            "filters:Quality(80)/k.jpg",
            "error: Quality(80) => filter names are lowercase: write `quality`",
        ),
        (
            "filters:redeye(a.png)/k.jpg",
            "error: redeye(a.png) => unknown filter `redeye`; known filters: quality",
        ),
        (
            "filters:fill(%ZZ)/k.jpg",
            "error: filters:fill(%ZZ) => does not start an escape",
        ),
        (
            "filters:fill(%FF)/k.jpg",
            "error: filters:fill(%FF) => not valid UTF-8",
        ),
        // Filter arguments.
        (
            "filters:quality(150)/k.jpg",
            "error: quality(150) => quality must be an integer 1..=100 or `auto`, got `150`",
        ),
        ("filters:quality(0)/k.jpg", "error: quality(0) => 1..=100"),
        (
            "filters:quality(8.5)/k.jpg",
            "error: quality(8.5) => got `8.5`",
        ),
        (
            "filters:quality()/k.jpg",
            "error: quality() => `quality` takes quality(1..=100|auto), got 0 arguments",
        ),
        (
            "filters:quality/k.jpg",
            "error: quality => takes quality(1..=100|auto)",
        ),
        (
            "filters:quality(1,2)/k.jpg",
            "error: quality(1,2) => got 2 arguments",
        ),
        (
            "filters:format(bmp)/k.jpg",
            "error: format(bmp) => format must be one of jpeg, jpg, png, webp, avif, gif",
        ),
        (
            "filters:colorize(10,10,10,f00)/k.jpg",
            "error: colorize(10,10,10,f00) => colorize colour must be six hex digits",
        ),
        (
            "filters:watermark(w.png,left,0,0)/k.jpg",
            "error: watermark(w.png,left,0,0) => watermark x `left`: expected pixels",
        ),
        (
            "filters:watermark(w.png,0,150p,0)/k.jpg",
            "error: watermark(w.png,0,150p,0) => a percentage is 0..=100",
        ),
        (
            "filters:watermark(w.png,0,0,101)/k.jpg",
            "error: watermark(w.png,0,0,101) => watermark alpha",
        ),
        (
            "filters:watermark(../w.png,0,0,0)/k.jpg",
            "error: watermark(../w.png,0,0,0) => the watermark image `../w.png`",
        ),
        (
            "filters:watermark(w.png,0,0,0,20)/k.jpg",
            "error: watermark(w.png,0,0,0,20) => watermark(key,x,y,alpha",
        ),
        (
            "filters:watermark(w.png,0,0,0,20,abc)/k.jpg",
            "error: watermark(w.png,0,0,0,20,abc) => watermark height ratio",
        ),
        (
            "filters:convolution(1;2;1;2,3,true)/k.jpg",
            "error: convolution(1;2;1;2,3,true) => 4 items do not make rows of 3",
        ),
        (
            "filters:convolution(1;2;1,0,true)/k.jpg",
            "error: convolution(1;2;1,0,true) => convolution columns must be an integer 1..=7",
        ),
        (
            "filters:curve(abc)/k.jpg",
            "error: curve(abc) => `curve` takes",
        ),
        (
            "filters:curve([(0,0),(10)],[],[],[])/k.jpg",
            "error: curve([(0,0),(10)],[],[],[]) => curve (all channels) must be [(x,y),...]",
        ),
        (
            "filters:curve([(9,0),(3,4)],[],[],[])/k.jpg",
            "error: curve([(9,0),(3,4)],[],[],[]) => x ascending",
        ),
        (
            "filters:noise(-5)/k.jpg",
            "error: noise(-5) => noise amount must be an integer 0..=100",
        ),
        (
            "filters:rgb(10,10)/k.jpg",
            "error: rgb(10,10) => `rgb` takes rgb(r,g,b)",
        ),
        (
            "filters:rotate(1.5)/k.jpg",
            "error: rotate(1.5) => rotate angle (whole degrees) must be an integer",
        ),
        (
            "filters:blur(-1)/k.jpg",
            "error: blur(-1) => blur radius must be an integer 0..=4294967295",
        ),
        (
            "filters:blur(5,-1)/k.jpg",
            "error: blur(5,-1) => blur sigma must be a number 0..=150",
        ),
        ("filters:blur()/k.jpg", "error: blur() => takes blur(radius"),
        (
            "filters:blur(1,2,3)/k.jpg",
            "error: blur(1,2,3) => got 3 arguments",
        ),
        (
            "filters:sharpen(1,1)/k.jpg",
            "error: sharpen(1,1) => `sharpen` takes sharpen(amount",
        ),
        (
            "filters:sharpen(11,1,true)/k.jpg",
            "error: sharpen(11,1,true) => sharpen amount must be a number 0..=10",
        ),
        (
            "filters:sharpen(1,1,yes)/k.jpg",
            "error: sharpen(1,1,yes) => luminance_only must be true, false, 1 or 0",
        ),
        (
            "filters:sharpen(1.0001,1,1)/k.jpg",
            "error: sharpen(1.0001,1,1) => at most 3 decimals",
        ),
        (
            "filters:grayscale(1)/k.jpg",
            "error: grayscale(1) => takes grayscale()",
        ),
        (
            "filters:brightness(101)/k.jpg",
            "error: brightness(101) => brightness must be an integer -100..=100",
        ),
        (
            "filters:contrast(-101)/k.jpg",
            "error: contrast(-101) => contrast must be an integer -100..=100",
        ),
        (
            "filters:fill(notacolor)/k.jpg",
            "error: fill(notacolor) => fill must be a colour",
        ),
        (
            "filters:fill(ffff)/k.jpg",
            "error: fill(ffff) => `auto` or `blur`",
        ),
        (
            "filters:background_color(gg0000)/k.jpg",
            "error: background_color(gg0000) => must be a colour",
        ),
        ("filters:max_bytes(0)/k.jpg", "error: max_bytes(0) => >= 1"),
        (
            "filters:max_bytes(+5)/k.jpg",
            "error: max_bytes(+5) => whole number of bytes",
        ),
        (
            "filters:proportion(0)/k.jpg",
            "error: proportion(0) => 0 < p <= 1",
        ),
        (
            "filters:proportion(1.5)/k.jpg",
            "error: proportion(1.5) => 0 < p <= 1",
        ),
        (
            "filters:proportion(0.0005)/k.jpg",
            "error: proportion(0.0005) => at most 3 decimals",
        ),
        (
            "filters:focal(10x10:5x5)/k.jpg",
            "error: focal(10x10:5x5) => focal right edge 5 must be greater",
        ),
        (
            "filters:focal(abc)/k.jpg",
            "error: focal(abc) => focal must be AxB:CxD",
        ),
        (
            "filters:round_corner(20,255,255)/k.jpg",
            "error: round_corner(20,255,255) => takes round_corner(a[|b],r,g,b[,transparent])",
        ),
        (
            "filters:round_corner(20,256,0,0)/k.jpg",
            "error: round_corner(20,256,0,0) => red must be an integer 0..=255",
        ),
        (
            "filters:round_corner(x|5,0,0,0)/k.jpg",
            "error: round_corner(x|5,0,0,0) => radius a must be an integer",
        ),
        (
            "filters:round_corner(5,0,0,0,maybe)/k.jpg",
            "error: round_corner(5,0,0,0,maybe) => transparent must be true",
        ),
        (
            "filters:max_age(-1)/k.jpg",
            "error: max_age(-1) => max_age must be an integer 0..=4294967295",
        ),
        (
            "filters:max_age(99999999999)/k.jpg",
            "error: max_age(99999999999) => 0..=4294967295",
        ),
        // Keys.
        (
            "../etc/passwd",
            "error: ../etc/passwd => has a `..` segment",
        ),
        ("a/../b.jpg", "error: a/../b.jpg => `..` segment"),
        ("300x200/../a.jpg", "error: ../a.jpg => `..` segment"),
        (
            "%2e%2e/etc/passwd",
            "error: %2e%2e/etc/passwd => `..` segment",
        ),
        ("a%2F..%2Fb", "error: a%2F..%2Fb => `..` segment"),
        ("a/%2E%2E/b.jpg", "error: a/%2E%2E/b.jpg => `..` segment"),
        ("//etc/passwd", "error: /etc/passwd => must be relative"),
        (
            "unsafe//etc/passwd",
            "error: /etc/passwd => must be relative",
        ),
        ("%2Fetc/passwd", "error: %2Fetc/passwd => must be relative"),
        ("a//b.jpg", "error: a//b.jpg => empty segment"),
        ("a%2F%2Fb.jpg", "error: a%2F%2Fb.jpg => empty segment"),
        ("a/b/", "error: a/b/ => empty segment"),
        ("a%00.jpg", "error: a%00.jpg => control character U+0000"),
        ("a%7F.jpg", "error: a%7F.jpg => control character U+007F"),
        ("a%0Ab.jpg", "error: a%0Ab.jpg => control character U+000A"),
        (
            "a%C2%85.jpg",
            "error: a%C2%85.jpg => control character U+0085",
        ),
        ("a\\b.jpg", "error: a\\b.jpg => backslash"),
        ("a%5Cb.jpg", "error: a%5Cb.jpg => backslash"),
        ("%FF.jpg", "error: %FF.jpg => not valid UTF-8"),
        (
            "a%2.jpg",
            "error: a%2.jpg => does not start an escape like `%20`",
        ),
        ("a%zz.jpg", "error: a%zz.jpg => write `%` as `%25`"),
        (
            ".imgedge/d640/a.jpg",
            "error: .imgedge/d640/a.jpg => reserved for derived images",
        ),
        (
            "fit-in/10x10/%2Eimgedge/x.jpg",
            "error: %2Eimgedge/x.jpg => reserved for derived images",
        ),
    ];

    #[test]
    fn accepted_urls() {
        for (input, expected) in ACCEPTED {
            check(input, expected);
        }
    }

    #[test]
    fn rejected_urls() {
        for (input, expected) in REJECTED {
            check(input, expected);
        }
    }

    #[test]
    fn limits() {
        let long_key = "a".repeat(MAX_KEY_BYTES + 1);
        let err = parse(&long_key).unwrap_err();
        assert!(err.reason.contains("1025 bytes; at most 1024"), "{err}");
        assert!(
            err.segment.ends_with('…') && err.segment.len() < 200,
            "{err}"
        );
        assert!(parse(&"a".repeat(MAX_KEY_BYTES)).is_ok());

        let err = parse(&"a/".repeat(MAX_PATH_BYTES)).unwrap_err();
        assert!(err.reason.contains("at most 8192"), "{err}");

        let many = vec!["grayscale()"; MAX_FILTERS + 1].join(":");
        let err = parse(&format!("filters:{many}/k.jpg")).unwrap_err();
        assert!(err.reason.contains("too many filters; at most 32"), "{err}");
        let enough = vec!["grayscale()"; MAX_FILTERS].join(":");
        assert!(parse(&format!("filters:{enough}/k.jpg")).is_ok());

        let long = format!("filters:quality(80{})/k.jpg", "%20".repeat(700));
        let err = parse(&long).unwrap_err();
        assert!(err.reason.contains("at most 2048"), "{err}");
    }

    #[test]
    fn signature_and_signed_path() {
        let sig = "PHEMMIzCmPT6v5U_pUQs20_og0A=";
        let cases = [
            ("/a%20b.jpg", Signature::None, "a%20b.jpg"),
            (
                "unsafe/fit-in/x/a%20b.jpg",
                Signature::Unsafe,
                "fit-in/x/a%20b.jpg",
            ),
            (
                "/PHEMMIzCmPT6v5U_pUQs20_og0A=/300x200/smart/thumbor.globo.com/img/logo.png",
                Signature::Hmac(sig.into()),
                "300x200/smart/thumbor.globo.com/img/logo.png",
            ),
            // Wrong shape (no padding): not a signature, so it is the start of the key.
            (
                "PHEMMIzCmPT6v5U_pUQs20_og0A/a.jpg",
                Signature::None,
                "PHEMMIzCmPT6v5U_pUQs20_og0A/a.jpg",
            ),
        ];
        for (input, signature, signed_path) in cases {
            let parsed = parse(input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(parsed.signature, signature, "{input}");
            assert_eq!(parsed.signed_path, signed_path, "{input}");
        }
    }

    #[test]
    fn typed_fields() {
        let p = parse("meta/trim:bottom-right:7/fit-in/-300x-orig/left/bottom/smart/a/b.jpg")
            .expect("valid");
        let expected = Recipe {
            trim: Some(Trim {
                corner: TrimCorner::BottomRight,
                tolerance: 7,
            }),
            fit: Fit::FitIn,
            width: Dim::Px(300),
            height: Dim::Orig,
            flip_h: true,
            flip_v: true,
            halign: HAlign::Left,
            valign: VAlign::Bottom,
            smart: true,
            ..Recipe::default()
        };
        assert_eq!(p.recipe, expected);
        assert!(p.meta);
        assert_eq!(p.key.as_str(), "a/b.jpg");

        let p =
            parse("filters:fill(red):round_corner(4|2,1,2,3,1):sharpen(1.5,2,0)/k").expect("valid");
        let filters = Filters {
            fill: Some(Fill::Color(Color {
                r: 255,
                g: 0,
                b: 0,
                a: 255,
            })),
            pixel: vec![
                PixelFilter::RoundCorner {
                    rx: 4,
                    ry: 2,
                    color: Color {
                        r: 1,
                        g: 2,
                        b: 3,
                        a: 255,
                    },
                    transparent: true,
                },
                PixelFilter::Sharpen {
                    amount: Milli(1500),
                    radius: Milli(2000),
                    luminance_only: false,
                },
            ],
            ..Filters::default()
        };
        assert_eq!(p.recipe.filters, filters);
        assert_eq!(p.recipe.crop, None);
        let p = parse("1x2:3x4/k").expect("valid");
        assert_eq!(
            p.recipe.crop,
            Some(Rect {
                left: 1,
                top: 2,
                right: 3,
                bottom: 4
            })
        );
    }

    #[test]
    fn equivalent_urls_parse_equal() {
        let groups: &[&[&str]] = &[
            &[
                "a.jpg",
                "/unsafe/a.jpg",
                "AAAAAAAAAAAAAAAAAAAAAAAAAAA=/0x0/center/middle/filters:rotate(0)/%61.jpg",
                "x/center/a.jpg",
            ],
            &[
                "300x200/filters:format(jpg):fill(%23FFF)/caf%C3%A9.jpg",
                "300x0200/middle/filters:fill(white):format(JPEG)/café.jpg",
                "0300x200/center/filters:fill(ffffff):format(png):format(jpeg)/caf%c3%a9.jpg",
            ],
            &[
                "filters:quality(90):blur(3,3)/k",
                "filters:blur(3):quality(50):quality(90)/k",
                "filters:quality(90):blur(3,3.0):rotate(0)/k",
            ],
        ];
        for group in groups {
            let printed: Vec<String> = group
                .iter()
                .map(|input| parse(input).unwrap_or_else(|e| panic!("{input}: {e}")))
                .map(|p| canonical(&p.recipe, p.meta, &p.key))
                .collect();
            assert!(
                printed.windows(2).all(|w| w[0] == w[1]),
                "{group:?} → {printed:?}"
            );
        }
        // Near misses stay distinct.
        let distinct = [
            "a.jpg",
            "trim/a.jpg",
            "trim:1/a.jpg",
            "x200/a.jpg",
            "-x/a.jpg",
            "A.jpg",
        ];
        let printed: std::collections::HashSet<String> = distinct
            .iter()
            .map(|input| parse(input).expect("valid"))
            .map(|p| canonical(&p.recipe, p.meta, &p.key))
            .collect();
        assert_eq!(printed.len(), distinct.len());
    }

    #[test]
    fn error_display() {
        let err = parse("filters:quality(150)/k.jpg").unwrap_err();
        assert_eq!(
            err.to_string(),
            "segment `quality(150)`: quality must be an integer 1..=100 or `auto`, got `150`"
        );
    }

    // ------------------------------------------------------------------------------------
    // Properties.
    // ------------------------------------------------------------------------------------

    fn arb_dim() -> impl Strategy<Value = Dim> {
        prop_oneof![
            Just(Dim::Auto),
            Just(Dim::Orig),
            (1..=MAX_PIXELS).prop_map(Dim::Px)
        ]
    }

    fn arb_rect() -> impl Strategy<Value = Rect> {
        (0..MAX_PIXELS, 0..MAX_PIXELS)
            .prop_flat_map(|(left, top)| {
                (
                    Just(left),
                    Just(top),
                    left + 1..=MAX_PIXELS,
                    top + 1..=MAX_PIXELS,
                )
            })
            .prop_map(|(left, top, right, bottom)| Rect {
                left,
                top,
                right,
                bottom,
            })
    }

    fn arb_color() -> impl Strategy<Value = Color> {
        any::<[u8; 4]>().prop_map(|[r, g, b, a]| Color { r, g, b, a })
    }

    fn arb_pixel_filter() -> impl Strategy<Value = PixelFilter> {
        let blur = (0..=150u32, proptest::option::of(0..=150_000i32)).prop_map(|(radius, s)| {
            let sigma = s
                .filter(|s| i64::from(*s) != i64::from(radius) * 1000)
                .map(Milli);
            PixelFilter::Blur { radius, sigma }
        });
        let sharpen =
            (0..=10_000, 0..=10_000, any::<bool>()).prop_map(|(a, r, l)| PixelFilter::Sharpen {
                amount: Milli(a),
                radius: Milli(r),
                luminance_only: l,
            });
        let corner = (
            0..=MAX_PIXELS,
            0..=MAX_PIXELS,
            any::<[u8; 3]>(),
            any::<bool>(),
        )
            .prop_map(
                |(rx, ry, [r, g, b], transparent)| PixelFilter::RoundCorner {
                    rx,
                    ry,
                    color: Color { r, g, b, a: 255 },
                    transparent,
                },
            );
        prop_oneof![
            blur,
            sharpen,
            Just(PixelFilter::Grayscale),
            (-100..=100i8).prop_map(PixelFilter::Brightness),
            (-100..=100i8).prop_map(PixelFilter::Contrast),
            prop_oneof![
                Just(Rotation::R90),
                Just(Rotation::R180),
                Just(Rotation::R270)
            ]
            .prop_map(PixelFilter::Rotate),
            corner,
            (1..360u16)
                .prop_filter("not a quarter turn", |a| a % 90 != 0)
                .prop_map(PixelFilter::RotateBy),
            any::<[i8; 3]>().prop_map(|[r, g, b]| PixelFilter::Rgb {
                r: r.clamp(-100, 100),
                g: g.clamp(-100, 100),
                b: b.clamp(-100, 100),
            }),
            (-100_000..=100_000i32).prop_map(|v| PixelFilter::Saturation(Milli(v))),
            Just(PixelFilter::Equalize),
            (0..=100u8, any::<u32>())
                .prop_map(|(amount, seed)| PixelFilter::Noise { amount, seed }),
            (any::<[u8; 3]>(), any::<[u8; 3]>()).prop_map(|(p, [r, g, b])| PixelFilter::Colorize {
                percent: p.map(|v| v % 101),
                color: Color { r, g, b, a: 255 },
            }),
            (
                prop_oneof![Just(1u8), Just(3), Just(5), Just(7)],
                prop_oneof![Just(1usize), Just(3), Just(5), Just(7)],
                proptest::collection::vec(-1_000_000..=1_000_000i32, 49),
                any::<bool>()
            )
                .prop_map(|(columns, rows, items, normalize)| {
                    PixelFilter::Convolution {
                        kernel: items[..usize::from(columns) * rows]
                            .iter()
                            .map(|v| Milli(*v))
                            .collect(),
                        columns,
                        normalize,
                    }
                }),
            proptest::collection::vec(arb_curve(), 4).prop_map(|c| PixelFilter::Curve {
                all: c[0].clone(),
                r: c[1].clone(),
                g: c[2].clone(),
                b: c[3].clone(),
            }),
        ]
    }

    fn arb_curve() -> impl Strategy<Value = CurvePoints> {
        proptest::collection::btree_map(any::<u8>(), any::<u8>(), 0..6).prop_map(|points| {
            let points: CurvePoints = points.into_iter().collect();
            if points.len() < 2 { Vec::new() } else { points }
        })
    }

    fn arb_filters() -> impl Strategy<Value = Filters> {
        let format = prop_oneof![
            Just(Format::Jpeg),
            Just(Format::Png),
            Just(Format::Webp),
            Just(Format::Avif),
            Just(Format::Gif)
        ];
        let fill = prop_oneof![
            arb_color().prop_map(Fill::Color),
            Just(Fill::Transparent),
            Just(Fill::Auto),
            Just(Fill::Blur)
        ];
        let upscale = prop_oneof![
            Just(Upscale::Default),
            Just(Upscale::Never),
            Just(Upscale::Allow)
        ];
        let settings = (
            proptest::option::of(prop_oneof![
                (1..=100u8).prop_map(Quality::Fixed),
                Just(Quality::Auto)
            ]),
            proptest::option::of(format),
            proptest::option::of(fill),
            proptest::option::of(prop_oneof![
                arb_color().prop_map(Background::Color),
                Just(Background::Auto)
            ]),
            upscale,
            any::<(bool, bool, bool, bool)>(),
        );
        let more = (
            proptest::option::of(1..=u64::MAX),
            proptest::option::of((1..=1000).prop_map(Milli)),
            proptest::collection::vec(arb_rect(), 0..3),
            proptest::option::of(any::<u32>()),
            proptest::collection::vec(arb_pixel_filter(), 0..8),
            proptest::option::of(prop_oneof![
                Just(Dpr::Hints),
                (1000..=4000).prop_map(|r| Dpr::Fixed(Milli(r)))
            ]),
        );
        (settings, more).prop_map(
            |(
                (
                    quality,
                    format,
                    fill,
                    background,
                    upscale,
                    (strip_exif, strip_icc, stretch, through),
                ),
                (max_bytes, proportion, focal, max_age, pixel, dpr),
            )| Filters {
                quality,
                format,
                fill,
                fill_transparent: through && fill.is_some(),
                background,
                upscale,
                strip_exif,
                strip_icc,
                stretch,
                max_bytes,
                proportion,
                focal,
                max_age,
                dpr,
                extract_focal: false,
                pixel,
            },
        )
    }

    fn arb_recipe() -> impl Strategy<Value = Recipe> {
        let corner = prop_oneof![Just(TrimCorner::TopLeft), Just(TrimCorner::BottomRight)];
        let trim = (corner, 0..=MAX_TRIM_TOLERANCE)
            .prop_map(|(corner, tolerance)| Trim { corner, tolerance });
        let fit = prop_oneof![
            Just(Fit::Crop),
            Just(Fit::FitIn),
            Just(Fit::FullFitIn),
            Just(Fit::AdaptiveFitIn),
            Just(Fit::AdaptiveFullFitIn)
        ];
        let halign = prop_oneof![
            Just(HAlign::Left),
            Just(HAlign::Center),
            Just(HAlign::Right)
        ];
        let valign = prop_oneof![
            Just(VAlign::Top),
            Just(VAlign::Middle),
            Just(VAlign::Bottom)
        ];
        let geometry = (
            proptest::option::of(trim),
            proptest::option::of(arb_rect()),
            fit,
            (arb_dim(), arb_dim()),
            any::<(bool, bool)>(),
        );
        let placement = (halign, valign, any::<bool>(), arb_filters());
        (geometry, placement).prop_map(
            |(
                (trim, crop, fit, (width, height), (flip_h, flip_v)),
                (halign, valign, smart, filters),
            )| {
                Recipe {
                    trim,
                    crop,
                    fit,
                    width,
                    height,
                    flip_h,
                    flip_v,
                    halign,
                    valign,
                    smart,
                    filters,
                }
            },
        )
    }

    /// Segments that read as options, to exercise canonical's escaping of the key.
    const TRICKY_SEGMENTS: &[&str] = &[
        "300x200",
        "smart",
        "unsafe",
        "meta",
        "fit-in",
        "left",
        "bottom",
        "trim",
        "trim:5",
        "filters:quality(5)",
        "filter:x",
        "-x-",
        "x",
        "2x",
        "1.5x2",
        "10x10:20x20",
        "12:30",
        "AAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        "2x.png",
        "3xl",
        "%41",
        "%",
        "a b",
        "?q",
        "#f",
        "写真",
    ];

    fn arb_key() -> impl Strategy<Value = ObjectKey> {
        let segment = prop_oneof![
            "[a-zA-Z0-9 ._%#?:()@+=,;~!$&'*\\[\\]<>{}|^`\"-]{1,12}",
            "\\PC{1,6}",
            proptest::sample::select(TRICKY_SEGMENTS).prop_map(String::from),
        ];
        proptest::collection::vec(segment, 1..5).prop_filter_map("valid key", |segments| {
            ObjectKey::parse(&segments.join("/")).ok()
        })
    }

    /// Fragments of URLs, valid and not, glued together by the never-panics property.
    const FRAGMENTS: &[&str] = &[
        "unsafe",
        "meta",
        "trim",
        "trim:",
        "trim:bottom-right:",
        "fit-in",
        "adaptive-fit-in",
        "x",
        "-",
        "0",
        "100000",
        "999999999999",
        "orig",
        ":",
        "x:",
        "left",
        "top",
        "smart",
        "filters:",
        "quality(",
        ")",
        "(",
        ",",
        "|",
        "blur",
        "round_corner",
        "rotate(-",
        "%",
        "%2",
        "%2F",
        "%00",
        "%C3",
        "%E5%86",
        "..",
        ".",
        "/",
        "//",
        "\\",
        "é",
        "fill(#",
        "a.jpg",
    ];

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn canonical_round_trips(recipe in arb_recipe(), meta in any::<bool>(), key in arb_key()) {
            let printed = canonical(&recipe, meta, &key);
            let parsed = parse(&printed).map_err(|e| TestCaseError::fail(format!("{printed}: {e}")))?;
            prop_assert_eq!(&parsed.recipe, &recipe, "{}", printed);
            prop_assert_eq!(parsed.meta, meta);
            prop_assert_eq!(&parsed.key, &key);
            prop_assert_eq!(parsed.signature, Signature::None);
            prop_assert_eq!(canonical(&parsed.recipe, parsed.meta, &parsed.key), printed);
        }

        #[test]
        fn parse_never_panics_on_strings(input in "\\PC{0,64}|.{0,64}") {
            let _ = parse(&input);
        }

        #[test]
        fn parse_never_panics_on_encoded_bytes(
            prefix in "[a-z:/()0-9x-]{0,20}",
            bytes in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let encoded = percent_encoding::percent_encode(&bytes, percent_encoding::NON_ALPHANUMERIC);
            let _ = parse(&format!("{prefix}{encoded}"));
            let _ = parse(&format!("{prefix}{}", String::from_utf8_lossy(&bytes)));
        }

        /// Whatever parses, its canonical print parses to the same value.
        #[test]
        fn accepted_input_is_stable(pieces in proptest::collection::vec(proptest::sample::select(FRAGMENTS), 0..12)) {
            let input = pieces.concat();
            if let Ok(p) = parse(&input) {
                let printed = canonical(&p.recipe, p.meta, &p.key);
                let again = parse(&printed).map_err(|e| TestCaseError::fail(format!("{input} → {printed}: {e}")))?;
                prop_assert_eq!(again.recipe, p.recipe);
                prop_assert_eq!(again.meta, p.meta);
                prop_assert_eq!(again.key, p.key);
            }
        }
    }
}
