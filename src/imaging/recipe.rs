//! The typed description of one transformation: what the URL asked for, nothing more.
//!
//! `edge::url` is the only producer of a `Recipe` from user input; `imaging::render` is its
//! consumer. Every field is already validated, so nothing downstream re-checks ranges. All
//! types are `Eq + Hash` (decimals are fixed-point `Milli`), so equal recipes mean equal
//! output and the canonical print of a recipe is the variant cache key.

use std::fmt;

/// A non-negative or signed decimal stored in thousandths, so recipes stay `Eq + Hash`.
/// `Milli(1500)` is 1.5. Parsing accepts at most three decimals.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Milli(pub i32);

impl Milli {
    pub fn as_f32(self) -> f32 {
        self.0 as f32 / 1000.0
    }
}

impl fmt::Display for Milli {
    /// Canonical form: no trailing zeros, no trailing dot (`1.5`, `2`, `-0.25`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "" };
        let abs = self.0.unsigned_abs();
        let (int, frac) = (abs / 1000, abs % 1000);
        if frac == 0 {
            write!(f, "{sign}{int}")
        } else {
            let digits = format!("{frac:03}");
            write!(f, "{sign}{int}.{}", digits.trim_end_matches('0'))
        }
    }
}

/// One requested output dimension.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Dim {
    /// `0` or omitted: derived from the other dimension keeping the aspect ratio.
    #[default]
    Auto,
    /// `orig`: the source's own size on that axis (after crop/trim).
    Orig,
    /// An explicit size in pixels (>= 1).
    Px(u32),
}

/// How the source is fitted to the requested box.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Fit {
    /// No fit-in: cover the box, then crop to exactly WxH (alignment / smart / focal).
    #[default]
    Crop,
    /// `fit-in`: fit inside the box, never crop.
    FitIn,
    /// `full-fit-in`: cover the box (the smaller side reaches it), never crop.
    FullFitIn,
    /// `adaptive-fit-in`: `fit-in` with W/H swapped when that suits the source orientation.
    AdaptiveFitIn,
    /// `adaptive-full-fit-in`.
    AdaptiveFullFitIn,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum HAlign {
    Left,
    #[default]
    Center,
    Right,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum VAlign {
    Top,
    #[default]
    Middle,
    Bottom,
}

/// Which corner's colour defines the border that `trim` removes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum TrimCorner {
    #[default]
    TopLeft,
    BottomRight,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Trim {
    pub corner: TrimCorner,
    /// Maximum Euclidean RGB distance still counted as border colour (0..=442).
    pub tolerance: u16,
}

/// A rectangle given by its edges, in source pixels: left/top inclusive, right/bottom exclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Rect {
    pub left: u32,
    pub top: u32,
    pub right: u32,
    pub bottom: u32,
}

impl Rect {
    pub fn width(&self) -> u32 {
        self.right.saturating_sub(self.left)
    }
    pub fn height(&self) -> u32 {
        self.bottom.saturating_sub(self.top)
    }
}

/// Output encodings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    Jpeg,
    Png,
    Webp,
    Avif,
    Gif,
}

impl Format {
    /// JPEG, WebP and AVIF: the formats a quality applies to.
    pub fn is_lossy(self) -> bool {
        matches!(self, Format::Jpeg | Format::Webp | Format::Avif)
    }

    pub fn mime(self) -> &'static str {
        match self {
            Format::Jpeg => "image/jpeg",
            Format::Png => "image/png",
            Format::Webp => "image/webp",
            Format::Avif => "image/avif",
            Format::Gif => "image/gif",
        }
    }
    /// The canonical filter argument (`format(jpeg)`); `jpg` parses to `Jpeg`.
    pub fn name(self) -> &'static str {
        match self {
            Format::Jpeg => "jpeg",
            Format::Png => "png",
            Format::Webp => "webp",
            Format::Avif => "avif",
            Format::Gif => "gif",
        }
    }
    /// Whether the encoding can carry an alpha channel.
    pub fn has_alpha(self) -> bool {
        !matches!(self, Format::Jpeg)
    }
}

/// An 8-bit RGBA colour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Color {
    pub r: u8,
    pub g: u8,
    pub b: u8,
    pub a: u8,
}

impl Color {
    pub const WHITE: Color = Color {
        r: 255,
        g: 255,
        b: 255,
        a: 255,
    };
    pub const BLACK: Color = Color {
        r: 0,
        g: 0,
        b: 0,
        a: 255,
    };
}

/// What fills the area around a fitted image (`fill(...)`), making the output exactly WxH.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Fill {
    Color(Color),
    Transparent,
    /// The mean colour of the image (Thumbor's `auto`).
    Auto,
    /// A blurred, cover-scaled copy of the image itself.
    Blur,
}

/// What `background_color()` paints under the transparent parts of the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Background {
    Color(Color),
    /// The mean colour of the image (`background_color(auto)`).
    Auto,
}

/// Upscaling policy. `Default` means: crop modes may upscale, fit-in modes may not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Upscale {
    #[default]
    Default,
    /// `no_upscale()`: never enlarge the source.
    Never,
    /// `upscale()`: fit-in modes may enlarge too.
    Allow,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rotation {
    R90,
    R180,
    R270,
}

/// One channel's control points for `curve()`: `(input, output)` pairs, inputs ascending.
pub type CurvePoints = Vec<(u8, u8)>;

/// Pixel filters, applied after resizing in the order the URL gives them.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PixelFilter {
    /// `blur(radius[,sigma])`: Gaussian blur; radius 0..=150, sigma defaults to radius.
    Blur {
        radius: u32,
        sigma: Option<Milli>,
    },
    /// `sharpen(amount,radius,luminance_only)`: unsharp mask; amount 0..=10, radius 0..=10.
    Sharpen {
        amount: Milli,
        radius: Milli,
        luminance_only: bool,
    },
    Grayscale,
    /// -100..=100
    Brightness(i8),
    /// -100..=100
    Contrast(i8),
    /// `rotate(90|180|270)`; `rotate(0)` parses to no filter at all.
    Rotate(Rotation),
    /// `rotate(a)` for any other whole angle (1..=359 after reduction), counter-clockwise:
    /// the canvas grows to hold the turned picture and its corners are transparent (or the
    /// background colour where the output has no alpha). Thumbor 7.8 ignores such angles.
    RotateBy(u16),
    /// `rgb(r,g,b)`: adds r/g/b percent of 255 to each channel, -100..=100 each.
    Rgb {
        r: i8,
        g: i8,
        b: i8,
    },
    /// `saturation(f)`: scales each pixel's distance from its luminance by f (-100..=100).
    Saturation(Milli),
    /// `equalize()`: histogram equalisation of each colour channel.
    Equalize,
    /// `noise(amount[,seed])`: adds the same pseudo-random offset, uniform in
    /// -amount/2..amount/2, to the three channels of each pixel; deterministic for a seed.
    Noise {
        amount: u8,
        seed: u32,
    },
    /// `colorize(r%,g%,b%,rrggbb)`: blends each channel towards the colour by its percentage.
    Colorize {
        percent: [u8; 3],
        color: Color,
    },
    /// `convolution(m1;m2;...,columns,normalize)`: a convolution kernel of odd width and
    /// height, at most 7x7, applied to every channel (alpha too) with clamped edges.
    Convolution {
        kernel: Vec<Milli>,
        columns: u8,
        normalize: bool,
    },
    /// `curve(all,r,g,b)`: cubic-spline tone curves per channel, then one for all channels.
    Curve {
        all: CurvePoints,
        r: CurvePoints,
        g: CurvePoints,
        b: CurvePoints,
    },
    /// `round_corner(a[|b],r,g,b[,transparent])`: rounded corners with radii a (horizontal)
    /// and b (vertical, defaults to a), painted with the colour or left transparent.
    RoundCorner {
        rx: u32,
        ry: u32,
        color: Color,
        transparent: bool,
    },
    /// `watermark(key,x,y,alpha[,w_ratio,h_ratio])`: another public file of the same store
    /// laid over the image.
    Watermark(Box<Watermark>),
    /// `frame(key)`: a nine-patch image (another public file of the same store) drawn
    /// around the image, as Thumbor's `frame()`.
    Frame {
        key: String,
    },
}

/// A `watermark()` overlay (Thumbor's argument forms).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Watermark {
    /// The overlay's object key (validated like any key): only a public file is used.
    pub key: String,
    pub x: Place,
    pub y: Place,
    /// 0..=100: how much more transparent the overlay is made (100 hides it); each alpha
    /// value is lowered by `255 * alpha / 100`, as Thumbor does.
    pub alpha: u8,
    /// Largest share of the image's width / height the overlay may take, in percent: the
    /// overlay is scaled (up or down) to fit. `None`: no bound on that side.
    pub width_ratio: Option<u16>,
    pub height_ratio: Option<u16>,
}

/// Where a watermark goes along one axis.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Place {
    /// `offset` pixels from the left (top) edge, or `-offset` from the right (bottom) one:
    /// the overlay's far edge is then `offset` pixels inside the image's.
    Px {
        offset: u32,
        from_end: bool,
    },
    /// `Np`: N percent of the image's side, from either edge as for `Px`.
    Percent {
        percent: u32,
        from_end: bool,
    },
    Center,
    /// Tiled across the image with even gaps (Thumbor's `repeat`).
    Repeat,
}

impl Filters {
    /// The overlays the filters read, in URL order: `(filter, key)`, where the filter is
    /// `watermark` or `frame`.
    pub fn overlay_keys(&self) -> impl Iterator<Item = (&'static str, &str)> {
        self.pixel.iter().filter_map(|f| match f {
            PixelFilter::Watermark(w) => Some(("watermark", w.key.as_str())),
            PixelFilter::Frame { key } => Some(("frame", key.as_str())),
            _ => None,
        })
    }
}

/// The device pixel ratio a `dpr()` filter asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dpr {
    /// `dpr()`: from the browser's client hints, when the server reads them (else 1).
    Hints,
    /// `dpr(2)`: a fixed ratio, 1..=4.
    Fixed(Milli),
}

/// An output quality: fixed (1..=100), or `auto`, the lowest quality whose output reaches
/// the configured perceptual score (`imaging::auto_quality`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Quality {
    Fixed(u8),
    Auto,
}

impl std::fmt::Display for Quality {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Quality::Fixed(q) => write!(f, "{q}"),
            Quality::Auto => f.write_str("auto"),
        }
    }
}

impl std::str::FromStr for Quality {
    type Err = String;

    /// `auto` or an integer 1..=100 (what `default_quality` accepts).
    fn from_str(text: &str) -> Result<Self, String> {
        if text == "auto" {
            return Ok(Quality::Auto);
        }
        match text.parse::<u8>() {
            Ok(q) if (1..=100).contains(&q) => Ok(Quality::Fixed(q)),
            _ => Err(format!(
                "must be an integer 1..=100 or `auto`, got `{text}`"
            )),
        }
    }
}

/// Everything the `filters:` segment can say. Settings are last-one-wins; pixel filters keep
/// URL order.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Filters {
    /// `quality(1..=100)` or `quality(auto)`.
    pub quality: Option<Quality>,
    pub format: Option<Format>,
    pub fill: Option<Fill>,
    /// `fill(colour,true)`: the fill shows through the image's own transparent parts too;
    /// by default (as in Thumbor) they stay transparent and only the padding is filled.
    pub fill_transparent: bool,
    /// `background_color()`: transparent parts are composited onto it (before the pixel
    /// filters); also the colour alpha is flattened onto for JPEG output (white without it).
    pub background: Option<Background>,
    pub upscale: Upscale,
    pub strip_exif: bool,
    pub strip_icc: bool,
    /// Re-encode with lower quality until the output is at most this many bytes (>= 1).
    pub max_bytes: Option<u64>,
    /// Scale the final output dimensions by this factor, 0 < p <= 1 (Milli 1..=1000).
    pub proportion: Option<Milli>,
    /// Regions of interest in source pixels, in URL order; crops are placed on their centre
    /// of mass (each weighted by its area).
    pub focal: Vec<Rect>,
    /// `stretch()`: a crop-mode resize distorts the image to exactly WxH instead of cropping
    /// (no effect with fit-in modes, as in Thumbor).
    pub stretch: bool,
    /// Lowers Cache-Control max-age for this response.
    pub max_age: Option<u32>,
    /// `dpr()`: the size is in CSS pixels, multiplied by a device pixel ratio. The edge
    /// resolves it (`edge::hints`) before anything else reads the recipe: a resolved recipe
    /// has it cleared and its sizes in device pixels.
    pub dpr: Option<Dpr>,
    /// `extract_focal()` was given. The URL parser resolves it (the key's embedded crop
    /// becomes a focal region) and clears it: a parsed recipe never has it set.
    pub extract_focal: bool,
    pub pixel: Vec<PixelFilter>,
}

/// A full transformation recipe.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Recipe {
    pub trim: Option<Trim>,
    /// Manual crop in source pixels, applied before resizing (clamped to the image).
    pub crop: Option<Rect>,
    pub fit: Fit,
    pub width: Dim,
    pub height: Dim,
    pub flip_h: bool,
    pub flip_v: bool,
    pub halign: HAlign,
    pub valign: VAlign,
    pub smart: bool,
    pub filters: Filters,
}
