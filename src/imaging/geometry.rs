//! Pure sizing math: from a source size and a `Recipe` to a `Plan` (which window of the
//! source to take, what size to resize it to, what canvas to pad it onto).
//!
//! Nothing here touches pixels, so every rule is cheap to test exhaustively. All sizes are
//! in pixels of the *base* image: the source after orientation, trim and manual crop, at
//! full resolution. Shrink-on-load scaling is applied by the caller afterwards.

use super::ImagingError;
use super::recipe::{
    Dim, Fit, HAlign, Milli, PixelFilter, Recipe, Rect, Rotation, Upscale, VAlign,
};

/// A width and height in pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size {
    pub width: u32,
    pub height: u32,
}

impl Size {
    pub fn new(width: u32, height: u32) -> Size {
        Size { width, height }
    }

    fn full_rect(self) -> Rect {
        Rect {
            left: 0,
            top: 0,
            right: self.width,
            bottom: self.height,
        }
    }
}

/// What to do with the base image, decided before any pixel is touched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// The part of the base image that is used, placed by alignment. Crop mode may move it
    /// afterwards (focal point, smart) with `place`; its size never changes.
    pub window: Rect,
    /// The size the window is resized to.
    pub resize: Size,
    /// The final canvas when `fill` pads a fitted image to exactly the box.
    pub canvas: Option<Size>,
    pub flip_h: bool,
    pub flip_v: bool,
}

impl Plan {
    /// The size finally encoded: the canvas (or the resized window) after the rotations.
    pub fn output_size(&self, recipe: &Recipe) -> Size {
        turned(self.canvas.unwrap_or(self.resize), recipe)
    }

    /// Whether the window is smaller than the base, so that its placement matters.
    pub fn crops(&self, base: Size) -> bool {
        self.window.width() < base.width || self.window.height() < base.height
    }
}

/// Where a crop window is placed inside the base image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Anchor {
    Align(HAlign, VAlign),
    /// Centre the window on this region of interest (base coordinates), as far as it fits.
    Focus(Rect),
}

/// Computes the plan for a base image of `base` pixels. Fails only when the output would
/// have a side longer than `max_side`.
pub fn plan(base: Size, recipe: &Recipe, max_side: u32) -> Result<Plan, ImagingError> {
    debug_assert!(
        base.width >= 1 && base.height >= 1,
        "the base image is never empty"
    );
    let fit = recipe.fit;
    let (mut box_w, mut box_h) = (
        requested(recipe.width, base.width),
        requested(recipe.height, base.height),
    );
    if let (Some(w), Some(h)) = (box_w, box_h)
        && is_adaptive(fit)
        && orientation_differs(base, w, h)
    {
        (box_w, box_h) = (Some(h), Some(w));
    }
    // Thumbor's defaults: the modes that fill their box enlarge to do so; `fit-in` does not.
    let may_upscale = match recipe.filters.upscale {
        Upscale::Never => false,
        Upscale::Allow => true,
        Upscale::Default => matches!(fit, Fit::Crop | Fit::FullFitIn | Fit::AdaptiveFullFitIn),
    };
    // A crop box that would need enlarging, with enlarging forbidden, shrinks to the
    // source on each side that exceeds it (Thumbor and imagor do the same):
    // `1000x1000/filters:no_upscale()/` of an 800x600 image is 800x600, not a 600x600 crop.
    if fit == Fit::Crop
        && !may_upscale
        && let (Some(w), Some(h)) = (box_w, box_h)
    {
        (box_w, box_h) = (Some(w.min(base.width)), Some(h.min(base.height)));
    }

    let (window, mut resize) = match (fit, box_w, box_h) {
        // `stretch()`: the whole base, distorted to the box.
        (Fit::Crop, Some(w), Some(h)) if recipe.filters.stretch => {
            (base.full_rect(), Size::new(w, h))
        }
        (Fit::Crop, Some(w), Some(h)) => cover_and_crop(
            base,
            Size::new(w, h),
            may_upscale,
            Anchor::Align(recipe.halign, recipe.valign),
        ),
        (Fit::Crop | Fit::FitIn | Fit::AdaptiveFitIn, _, _) => (
            base.full_rect(),
            scale_to_box(base, box_w, box_h, Cover::Inside, may_upscale),
        ),
        (Fit::FullFitIn | Fit::AdaptiveFullFitIn, _, _) => (
            base.full_rect(),
            scale_to_box(base, box_w, box_h, Cover::Outside, may_upscale),
        ),
    };

    let pads = matches!(fit, Fit::FitIn | Fit::AdaptiveFitIn) && recipe.filters.fill.is_some();
    let mut canvas = pads.then(|| {
        Size::new(
            box_w.unwrap_or(resize.width).max(resize.width),
            box_h.unwrap_or(resize.height).max(resize.height),
        )
    });

    if let Some(p) = recipe.filters.proportion {
        resize = scale_size(resize, p);
        canvas = canvas.map(|c| scale_size(c, p));
    }

    // Turning by an angle that is not a quarter turn grows the canvas (up to 1.42x a side):
    // the limit holds for what is finally encoded.
    let out = turned(canvas.unwrap_or(resize), recipe);
    if out.width > max_side || out.height > max_side {
        return Err(ImagingError::OutputTooLarge {
            width: out.width,
            height: out.height,
            limit: max_side,
        });
    }
    Ok(Plan {
        window,
        resize,
        canvas,
        flip_h: recipe.flip_h,
        flip_v: recipe.flip_v,
    })
}

/// Places a window of `window` size inside `base` according to `anchor`; always inside.
pub fn place(base: Size, window: Size, anchor: Anchor) -> Rect {
    let (free_x, free_y) = (base.width - window.width, base.height - window.height);
    let (left, top) = match anchor {
        Anchor::Align(h, v) => {
            let left = match h {
                HAlign::Left => 0,
                HAlign::Center => free_x / 2,
                HAlign::Right => free_x,
            };
            let top = match v {
                VAlign::Top => 0,
                VAlign::Middle => free_y / 2,
                VAlign::Bottom => free_y,
            };
            (left, top)
        }
        Anchor::Focus(focus) => {
            let cx = (u64::from(focus.left) + u64::from(focus.right)) / 2;
            let cy = (u64::from(focus.top) + u64::from(focus.bottom)) / 2;
            let left = cx
                .saturating_sub(u64::from(window.width) / 2)
                .min(u64::from(free_x));
            let top = cy
                .saturating_sub(u64::from(window.height) / 2)
                .min(u64::from(free_y));
            (left as u32, top as u32)
        }
    };
    Rect {
        left,
        top,
        right: left + window.width,
        bottom: top + window.height,
    }
}

/// Clamps a rectangle to an image of `size`; `None` when nothing of it remains.
pub fn clamp_rect(rect: Rect, size: Size) -> Option<Rect> {
    intersect(rect, size.full_rect())
}

/// `size` after the recipe's rotation filters.
fn turned(size: Size, recipe: &Recipe) -> Size {
    recipe
        .filters
        .pixel
        .iter()
        .fold(size, |size, filter| match filter {
            PixelFilter::Rotate(Rotation::R90 | Rotation::R270) => {
                Size::new(size.height, size.width)
            }
            PixelFilter::RotateBy(angle) => rotated_size(size, *angle),
            _ => size,
        })
}

/// The canvas that holds a `size` picture turned by `angle` degrees.
pub fn rotated_size(size: Size, angle: u16) -> Size {
    let (sin, cos) = f64::from(angle).to_radians().sin_cos();
    let (w, h) = (f64::from(size.width), f64::from(size.height));
    let side = |v: f64| (v.round() as u32).max(1);
    Size::new(
        side(w * cos.abs() + h * sin.abs()),
        side(w * sin.abs() + h * cos.abs()),
    )
}

/// The part of `rect` inside `within`, if any.
pub fn intersect(rect: Rect, within: Rect) -> Option<Rect> {
    let inside = Rect {
        left: rect.left.max(within.left),
        top: rect.top.max(within.top),
        right: rect.right.min(within.right),
        bottom: rect.bottom.min(within.bottom),
    };
    (inside.width() > 0 && inside.height() > 0).then_some(inside)
}

/// The centre of several focal regions, each weighted by its area (Thumbor's centre of mass
/// of `focal()` points); `None` without regions.
pub fn centre_of_mass(regions: &[Rect]) -> Option<(u32, u32)> {
    let mut weight = 0f64;
    let (mut x, mut y) = (0f64, 0f64);
    for r in regions {
        let area = f64::from(r.width()) * f64::from(r.height());
        weight += area;
        x += (f64::from(r.left) + f64::from(r.width()) / 2.0) * area;
        y += (f64::from(r.top) + f64::from(r.height()) / 2.0) * area;
    }
    (weight > 0.0).then(|| ((x / weight).round() as u32, (y / weight).round() as u32))
}

/// The JPEG DCT scale denominator (1, 2, 4 or 8) to decode with: the largest one that still
/// leaves the window at least as large as the resize target on both axes.
///
/// Why 1x and not 2x headroom: libjpeg-turbo's DCT scaling is itself a proper low-pass
/// (it drops high-frequency coefficients rather than skipping pixels), so it does not alias
/// the way nearest-neighbour subsampling would; the Lanczos pass after it then only has to
/// cover the remaining factor, which is between 1x and 2x. Comparisons on the bench photos
/// showed no visible difference against a full decode, at a fraction of the cost.
pub fn shrink_factor(window: Size, resize: Size) -> u32 {
    [8u32, 4, 2]
        .into_iter()
        .find(|&d| {
            f64::from(window.width) / f64::from(d) >= f64::from(resize.width)
                && f64::from(window.height) / f64::from(d) >= f64::from(resize.height)
        })
        .unwrap_or(1)
}

/// How many pixels of a reduced copy (derivative) there must at least be per output pixel,
/// along each axis, for the copy to stand in for the original: the resize from it is then a
/// real downscale by two or more, so the copy's own softness never shows.
pub const LEVEL_MARGIN: f64 = 2.0;

/// The smallest of `levels` (reduced copies of a `full`-sized image, ascending) that still
/// has `LEVEL_MARGIN` pixels per output pixel when `window` (full-size pixels) is resized to
/// `resize`; `None` when only the original is good enough.
pub fn pick_level(full: Size, levels: &[Size], window: Size, resize: Size) -> Option<usize> {
    let needed = |level: u32, full: u32, window: u32, resize: u32| {
        // level / full >= MARGIN * resize / window, without dividing.
        f64::from(level) * f64::from(window) >= LEVEL_MARGIN * f64::from(resize) * f64::from(full)
    };
    levels.iter().position(|l| {
        l.width < full.width
            && needed(l.width, full.width, window.width, resize.width)
            && needed(l.height, full.height, window.height, resize.height)
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cover {
    /// Fit inside the box (`fit-in`).
    Inside,
    /// Cover the box; the smaller side reaches it (`full-fit-in`).
    Outside,
}

fn requested(dim: Dim, source: u32) -> Option<u32> {
    match dim {
        Dim::Auto => None,
        Dim::Orig => Some(source),
        Dim::Px(n) => Some(n.max(1)),
    }
}

fn is_adaptive(fit: Fit) -> bool {
    matches!(fit, Fit::AdaptiveFitIn | Fit::AdaptiveFullFitIn)
}

/// True when the box is landscape and the source portrait, or the other way round.
fn orientation_differs(base: Size, w: u32, h: u32) -> bool {
    (base.width > base.height && w < h) || (base.width < base.height && w > h)
}

/// Crop mode with both sides given: the largest window with the box's aspect ratio, placed
/// by the URL's alignment (centre by default; `smart` and `focal` move it later), resized
/// to exactly the box (or left at window size when upscaling is not allowed).
fn cover_and_crop(base: Size, target: Size, may_upscale: bool, anchor: Anchor) -> (Rect, Size) {
    let aspect = f64::from(target.width) / f64::from(target.height);
    let base_aspect = f64::from(base.width) / f64::from(base.height);
    let window = if base_aspect > aspect {
        Size::new(
            round_px(f64::from(base.height) * aspect).min(base.width),
            base.height,
        )
    } else {
        Size::new(
            base.width,
            round_px(f64::from(base.width) / aspect).min(base.height),
        )
    };
    let resize = if !may_upscale && target.width > window.width {
        window
    } else {
        target
    };
    (place(base, window, anchor), resize)
}

/// Scales the whole base so that it fits inside (or covers) the box; a missing side follows
/// the aspect ratio, and no side at all keeps the source size.
fn scale_to_box(
    base: Size,
    box_w: Option<u32>,
    box_h: Option<u32>,
    cover: Cover,
    may_upscale: bool,
) -> Size {
    let sx = box_w.map(|w| f64::from(w) / f64::from(base.width));
    let sy = box_h.map(|h| f64::from(h) / f64::from(base.height));
    let scale = match (sx, sy, cover) {
        (Some(x), Some(y), Cover::Inside) => x.min(y),
        (Some(x), Some(y), Cover::Outside) => x.max(y),
        (Some(x), None, _) => x,
        (None, Some(y), _) => y,
        (None, None, _) => 1.0,
    };
    let scale = if may_upscale { scale } else { scale.min(1.0) };
    let mut out = Size::new(
        round_px(f64::from(base.width) * scale),
        round_px(f64::from(base.height) * scale),
    );
    // Rounding must never push a fitted image past its box.
    if cover == Cover::Inside {
        out.width = out.width.min(box_w.unwrap_or(u32::MAX));
        out.height = out.height.min(box_h.unwrap_or(u32::MAX));
    }
    out
}

fn scale_size(size: Size, p: Milli) -> Size {
    let p = f64::from(p.0) / 1000.0;
    Size::new(
        round_px(f64::from(size.width) * p),
        round_px(f64::from(size.height) * p),
    )
}

/// Rounds to whole pixels, never below one pixel.
fn round_px(v: f64) -> u32 {
    v.round().clamp(1.0, f64::from(u32::MAX)) as u32
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::imaging::recipe::{Color, Fill, Filters};
    use proptest::prelude::*;

    fn rect(left: u32, top: u32, right: u32, bottom: u32) -> Rect {
        Rect {
            left,
            top,
            right,
            bottom,
        }
    }

    #[test]
    fn focal_regions_meet_at_their_area_weighted_centre() {
        assert_eq!(centre_of_mass(&[]), None);
        assert_eq!(centre_of_mass(&[rect(10, 20, 30, 60)]), Some((20, 40)));
        // A 50x50 region outweighs a 10x10 one 25 to 1.
        let (x, y) = centre_of_mass(&[rect(0, 0, 50, 50), rect(550, 350, 560, 360)]).unwrap();
        assert_eq!((x, y), (45, 38));
        // Equal areas: the midpoint of their centres.
        let (x, y) = centre_of_mass(&[rect(0, 0, 10, 10), rect(590, 390, 600, 400)]).unwrap();
        assert_eq!((x, y), (300, 200));
    }

    #[test]
    fn a_turned_picture_counts_against_the_output_limit() {
        assert_eq!(rotated_size(Size::new(300, 200), 45), Size::new(354, 354));
        assert_eq!(rotated_size(Size::new(300, 200), 90), Size::new(200, 300));
        let mut r = recipe(Fit::Crop, Dim::Px(4000), Dim::Px(4000));
        assert!(plan(Size::new(4000, 4000), &r, 5000).is_ok());
        r.filters.pixel = vec![PixelFilter::RotateBy(45)];
        assert!(matches!(
            plan(Size::new(4000, 4000), &r, 5000),
            Err(ImagingError::OutputTooLarge {
                width: 5657,
                height: 5657,
                limit: 5000
            })
        ));
    }

    #[test]
    fn a_crop_is_kept_inside_the_trimmed_box() {
        let trimmed = rect(40, 20, 220, 140);
        assert_eq!(
            intersect(rect(10, 10, 200, 150), trimmed),
            Some(rect(40, 20, 200, 140))
        );
        assert_eq!(intersect(rect(0, 0, 30, 30), trimmed), None);
    }

    fn recipe(fit: Fit, width: Dim, height: Dim) -> Recipe {
        Recipe {
            fit,
            width,
            height,
            ..Recipe::default()
        }
    }

    #[test]
    fn the_smallest_level_with_twice_the_output_pixels_is_picked() {
        let full = Size::new(6000, 4000);
        let levels = [Size::new(640, 427), Size::new(2560, 1707)];
        let whole = Size::new(6000, 4000);
        // 300x200 needs 600x400 of source pixels: 640 is enough.
        assert_eq!(
            pick_level(full, &levels, whole, Size::new(300, 200)),
            Some(0)
        );
        // 330x220 needs 660 wide: only 2560.
        assert_eq!(
            pick_level(full, &levels, whole, Size::new(330, 220)),
            Some(1)
        );
        assert_eq!(
            pick_level(full, &levels, whole, Size::new(1200, 800)),
            Some(1)
        );
        // 1300 wide needs 2600: the original.
        assert_eq!(pick_level(full, &levels, whole, Size::new(1300, 867)), None);
        // A crop window of a quarter of the width needs four times the scale.
        let quarter = Size::new(1500, 1000);
        assert_eq!(
            pick_level(full, &levels, quarter, Size::new(300, 200)),
            Some(1)
        );
        assert_eq!(
            pick_level(full, &levels, quarter, Size::new(700, 466)),
            None
        );
        // No levels, or levels not smaller than the original: the original.
        assert_eq!(pick_level(full, &[], whole, Size::new(10, 10)), None);
        let small = Size::new(500, 300);
        assert_eq!(
            pick_level(small, &[Size::new(640, 384)], small, Size::new(10, 6)),
            None
        );
    }

    proptest! {
        #[test]
        fn a_picked_level_always_has_the_margin(
            fw in 100u32..10_000, fh in 100u32..10_000,
            lw in 16u32..4000,
            rw in 1u32..2000, rh in 1u32..2000,
        ) {
            let full = Size::new(fw, fh);
            let lh = ((u64::from(lw) * u64::from(fh)) / u64::from(fw)).max(1) as u32;
            let levels = [Size::new(lw, lh)];
            if let Some(i) = pick_level(full, &levels, full, Size::new(rw, rh)) {
                let l = levels[i];
                prop_assert!(l.width < fw);
                prop_assert!(f64::from(l.width) >= 2.0 * f64::from(rw) * 0.999);
                prop_assert!(f64::from(l.height) >= 2.0 * f64::from(rh) * 0.999);
            }
        }
    }

    fn check(
        base: (u32, u32),
        r: Recipe,
        window: (u32, u32, u32, u32),
        resize: (u32, u32),
        canvas: Option<(u32, u32)>,
    ) {
        let plan = plan(Size::new(base.0, base.1), &r, 10_000).expect("plan");
        let w = plan.window;
        assert_eq!(
            (w.left, w.top, w.width(), w.height()),
            window,
            "window for {r:?}"
        );
        assert_eq!(
            (plan.resize.width, plan.resize.height),
            resize,
            "resize for {r:?}"
        );
        assert_eq!(
            plan.canvas.map(|c| (c.width, c.height)),
            canvas,
            "canvas for {r:?}"
        );
    }

    #[test]
    fn sizing_table() {
        use Dim::{Auto, Orig, Px};
        let with = |mut r: Recipe, f: fn(&mut Filters)| {
            f(&mut r.filters);
            r
        };
        // Crop mode: cover, then crop the middle.
        check(
            (800, 600),
            recipe(Fit::Crop, Px(300), Px(300)),
            (100, 0, 600, 600),
            (300, 300),
            None,
        );
        check(
            (600, 800),
            recipe(Fit::Crop, Px(300), Px(100)),
            (0, 300, 600, 200),
            (300, 100),
            None,
        );
        // Crop mode upscales by default, not with no_upscale().
        check(
            (100, 50),
            recipe(Fit::Crop, Px(400), Px(400)),
            (25, 0, 50, 50),
            (400, 400),
            None,
        );
        // With no_upscale(), each side of the box that exceeds the source shrinks to it
        // (Thumbor's rule): the whole 100x50, not a 50x50 crop.
        check(
            (100, 50),
            with(recipe(Fit::Crop, Px(400), Px(400)), |f| {
                f.upscale = Upscale::Never
            }),
            (0, 0, 100, 50),
            (100, 50),
            None,
        );
        check(
            (202, 259),
            with(recipe(Fit::Crop, Px(500), Px(400)), |f| {
                f.upscale = Upscale::Never
            }),
            (0, 0, 202, 259),
            (202, 259),
            None,
        );
        // Only the side that exceeds shrinks; the other still crops.
        check(
            (202, 259),
            with(recipe(Fit::Crop, Px(300), Px(100)), |f| {
                f.upscale = Upscale::Never
            }),
            (0, 79, 202, 100),
            (202, 100),
            None,
        );
        // adaptive-full-fit-in enlarges like full-fit-in: the box turns to suit the
        // portrait source (400x500) and the source covers it.
        check(
            (202, 259),
            recipe(Fit::AdaptiveFullFitIn, Px(500), Px(400)),
            (0, 0, 202, 259),
            (400, 513),
            None,
        );
        // One side given: keep the aspect ratio.
        check(
            (800, 600),
            recipe(Fit::Crop, Px(400), Auto),
            (0, 0, 800, 600),
            (400, 300),
            None,
        );
        check(
            (800, 600),
            recipe(Fit::Crop, Auto, Px(150)),
            (0, 0, 800, 600),
            (200, 150),
            None,
        );
        // Nothing given: the source size.
        check(
            (800, 600),
            recipe(Fit::Crop, Auto, Auto),
            (0, 0, 800, 600),
            (800, 600),
            None,
        );
        check(
            (800, 600),
            recipe(Fit::FitIn, Auto, Auto),
            (0, 0, 800, 600),
            (800, 600),
            None,
        );
        // orig takes the source dimension.
        check(
            (800, 600),
            recipe(Fit::Crop, Orig, Px(100)),
            (0, 250, 800, 100),
            (800, 100),
            None,
        );
        // fit-in: inside the box, no upscale by default.
        check(
            (800, 600),
            recipe(Fit::FitIn, Px(300), Px(200)),
            (0, 0, 800, 600),
            (267, 200),
            None,
        );
        check(
            (80, 60),
            recipe(Fit::FitIn, Px(300), Px(200)),
            (0, 0, 80, 60),
            (80, 60),
            None,
        );
        check(
            (80, 60),
            with(recipe(Fit::FitIn, Px(300), Px(200)), |f| {
                f.upscale = Upscale::Allow
            }),
            (0, 0, 80, 60),
            (267, 200),
            None,
        );
        // full-fit-in: cover the box, may upscale.
        check(
            (800, 600),
            recipe(Fit::FullFitIn, Px(300), Px(200)),
            (0, 0, 800, 600),
            (300, 225),
            None,
        );
        check(
            (80, 60),
            recipe(Fit::FullFitIn, Px(300), Px(200)),
            (0, 0, 80, 60),
            (300, 225),
            None,
        );
        // adaptive: a portrait source in a landscape box swaps the box.
        check(
            (600, 800),
            recipe(Fit::AdaptiveFitIn, Px(300), Px(200)),
            (0, 0, 600, 800),
            (200, 267),
            None,
        );
        check(
            (600, 800),
            recipe(Fit::FitIn, Px(300), Px(200)),
            (0, 0, 600, 800),
            (150, 200),
            None,
        );
        // fill pads a fitted image to exactly the box.
        let fill = |r: Recipe| with(r, |f| f.fill = Some(Fill::Color(Color::BLACK)));
        check(
            (800, 600),
            fill(recipe(Fit::FitIn, Px(300), Px(300))),
            (0, 0, 800, 600),
            (300, 225),
            Some((300, 300)),
        );
        check(
            (80, 60),
            fill(recipe(Fit::FitIn, Px(300), Px(300))),
            (0, 0, 80, 60),
            (80, 60),
            Some((300, 300)),
        );
        check(
            (800, 600),
            fill(recipe(Fit::FitIn, Px(300), Auto)),
            (0, 0, 800, 600),
            (300, 225),
            Some((300, 225)),
        );
        // proportion scales the output.
        check(
            (800, 600),
            with(recipe(Fit::Crop, Px(300), Px(300)), |f| {
                f.proportion = Some(Milli(500))
            }),
            (100, 0, 600, 600),
            (150, 150),
            None,
        );
        // Extreme aspect ratios never produce a zero side.
        check(
            (10_000, 1),
            recipe(Fit::FitIn, Px(100), Px(100)),
            (0, 0, 10_000, 1),
            (100, 1),
            None,
        );
        check(
            (1, 10_000),
            recipe(Fit::Crop, Px(100), Px(1)),
            (0, 4999, 1, 1),
            (100, 1),
            None,
        );
    }

    #[test]
    fn output_side_limit() {
        let r = recipe(Fit::Crop, Dim::Px(5000), Dim::Px(100));
        let err = plan(Size::new(800, 600), &r, 4096).unwrap_err();
        assert!(matches!(
            err,
            ImagingError::OutputTooLarge {
                width: 5000,
                height: 100,
                limit: 4096
            }
        ));
    }

    #[test]
    fn placement() {
        let base = Size::new(100, 50);
        let win = Size::new(40, 50);
        let left = |a| place(base, win, a).left;
        assert_eq!(left(Anchor::Align(HAlign::Left, VAlign::Top)), 0);
        assert_eq!(left(Anchor::Align(HAlign::Center, VAlign::Top)), 30);
        assert_eq!(left(Anchor::Align(HAlign::Right, VAlign::Top)), 60);
        let focus = |l, r| {
            Anchor::Focus(Rect {
                left: l,
                top: 0,
                right: r,
                bottom: 10,
            })
        };
        assert_eq!(left(focus(0, 10)), 0);
        assert_eq!(left(focus(40, 60)), 30);
        assert_eq!(left(focus(90, 100)), 60);
    }

    /// Regression: the crop window ignored the URL's alignment and was always centred
    /// (`100x300/left/` of a landscape gave the centre strip).
    #[test]
    fn crop_window_follows_the_alignment() {
        let base = Size::new(600, 400);
        let window = |w, h, halign, valign| {
            let mut r = recipe(Fit::Crop, Dim::Px(w), Dim::Px(h));
            r.halign = halign;
            r.valign = valign;
            plan(base, &r, 4096).unwrap().window
        };
        let strip = |left| Rect {
            left,
            top: 0,
            right: left + 133,
            bottom: 400,
        };
        assert_eq!(window(100, 300, HAlign::Left, VAlign::Middle), strip(0));
        assert_eq!(window(100, 300, HAlign::Center, VAlign::Middle), strip(233));
        assert_eq!(window(100, 300, HAlign::Right, VAlign::Middle), strip(467));
        let band = |top| Rect {
            left: 0,
            top,
            right: 600,
            bottom: top + 200,
        };
        assert_eq!(window(300, 100, HAlign::Center, VAlign::Top), band(0));
        assert_eq!(window(300, 100, HAlign::Center, VAlign::Middle), band(100));
        assert_eq!(window(300, 100, HAlign::Center, VAlign::Bottom), band(200));
        // Where the box has the source's aspect, there is nothing to place.
        assert_eq!(
            window(300, 200, HAlign::Right, VAlign::Bottom),
            base.full_rect()
        );
    }

    #[test]
    fn shrink_factors() {
        let s = Size::new;
        assert_eq!(shrink_factor(s(4032, 3024), s(300, 225)), 8);
        assert_eq!(shrink_factor(s(4032, 3024), s(600, 450)), 4);
        assert_eq!(shrink_factor(s(4032, 3024), s(1100, 825)), 2);
        assert_eq!(shrink_factor(s(4032, 3024), s(2100, 100)), 1);
        assert_eq!(shrink_factor(s(100, 100), s(400, 400)), 1);
    }

    #[test]
    fn clamping() {
        let r = |l, t, ri, b| Rect {
            left: l,
            top: t,
            right: ri,
            bottom: b,
        };
        assert_eq!(
            clamp_rect(r(10, 10, 500, 500), Size::new(100, 80)),
            Some(r(10, 10, 100, 80))
        );
        assert_eq!(clamp_rect(r(200, 0, 300, 10), Size::new(100, 80)), None);
        assert_eq!(clamp_rect(r(50, 50, 50, 60), Size::new(100, 80)), None);
    }

    fn dim() -> impl Strategy<Value = Dim> {
        prop_oneof![
            Just(Dim::Auto),
            Just(Dim::Orig),
            (1u32..3000).prop_map(Dim::Px)
        ]
    }

    fn fit() -> impl Strategy<Value = Fit> {
        prop_oneof![
            Just(Fit::Crop),
            Just(Fit::FitIn),
            Just(Fit::FullFitIn),
            Just(Fit::AdaptiveFitIn),
            Just(Fit::AdaptiveFullFitIn)
        ]
    }

    fn upscale() -> impl Strategy<Value = Upscale> {
        prop_oneof![
            Just(Upscale::Default),
            Just(Upscale::Never),
            Just(Upscale::Allow)
        ]
    }

    proptest! {
        #[test]
        fn plans_are_sane(bw in 1u32..5000, bh in 1u32..5000, fit in fit(), w in dim(), h in dim(), up in upscale()) {
            let mut r = recipe(fit, w, h);
            r.filters.upscale = up;
            let base = Size::new(bw, bh);
            let plan = plan(base, &r, u32::MAX).unwrap();
            let (win, out) = (plan.window, plan.resize);
            // No zero sides, the window lies inside the base.
            prop_assert!(out.width >= 1 && out.height >= 1);
            prop_assert!(win.width() >= 1 && win.height() >= 1);
            prop_assert!(win.right <= bw && win.bottom <= bh);
            let (mut box_w, mut box_h) = (requested(w, bw), requested(h, bh));
            if let (Fit::Crop, Upscale::Never, Some(tw), Some(th)) = (fit, up, box_w, box_h) {
                // No enlarging: each side over the source shrinks to it.
                (box_w, box_h) = (Some(tw.min(bw)), Some(th.min(bh)));
            }
            match fit {
                Fit::FitIn => {
                    // Never exceeds the box.
                    prop_assert!(out.width <= box_w.unwrap_or(u32::MAX));
                    prop_assert!(out.height <= box_h.unwrap_or(u32::MAX));
                }
                Fit::Crop => {
                    if let (Some(tw), Some(th), false) = (box_w, box_h, up == Upscale::Never) {
                        prop_assert_eq!((out.width, out.height), (tw, th));
                    }
                }
                _ => {}
            }
            // Outside crop mode, the aspect ratio of the window is kept within a pixel (one-pixel
            // sides aside). Crop mode instead gives exactly the box, checked above and below.
            let exact_box = fit == Fit::Crop && box_w.is_some() && box_h.is_some();
            let expected_h = f64::from(out.width) * f64::from(win.height()) / f64::from(win.width());
            let expected_w = f64::from(out.height) * f64::from(win.width()) / f64::from(win.height());
            let fits = (f64::from(out.height) - expected_h).abs() <= 1.0
                || (f64::from(out.width) - expected_w).abs() <= 1.0;
            prop_assert!(exact_box || fits || out.width == 1 || out.height == 1, "aspect: {:?} from {:?}", out, win);
            if exact_box {
                // The crop window has the target aspect within a pixel.
                let (tw, th) = (f64::from(box_w.unwrap()), f64::from(box_h.unwrap()));
                let want_h = f64::from(win.width()) * th / tw;
                let want_w = f64::from(win.height()) * tw / th;
                prop_assert!((f64::from(win.height()) - want_h).abs() <= 1.0 || (f64::from(win.width()) - want_w).abs() <= 1.0);
            }
        }

        #[test]
        fn shrink_keeps_target(ww in 1u32..8000, wh in 1u32..8000, rw in 1u32..3000, rh in 1u32..3000) {
            let d = shrink_factor(Size::new(ww, wh), Size::new(rw, rh));
            prop_assert!([1, 2, 4, 8].contains(&d));
            if d > 1 {
                prop_assert!(ww / d >= rw && wh / d >= rh);
            }
        }
    }
}
