//! Pixel operations after (and around) the resize: the `PixelFilter`s, flips, padding onto a
//! canvas (`fill`), flattening alpha onto a background, and finding the box that `trim` keeps.
//!
//! Every function takes and returns the working image, which is RGB8 or RGBA8. The `image`
//! crate's imageops are used where they exist; the rest is written here.

use image::{DynamicImage, GenericImageView, Rgba, RgbaImage, imageops};

use super::ImagingError;
use super::geometry::{Size, rotated_size};
use super::recipe::{
    Background, Color, Fill, Milli, PixelFilter, Place, Rect, Rotation, Trim, TrimCorner, Watermark,
};
use super::resize::{CropBox, resize};

/// Applies one pixel filter. `watermark()` and `frame()` need their overlay's pixels and are
/// applied with [`watermark`] and [`frame`] instead (by `render::transform`); here they
/// change nothing.
pub fn apply(image: DynamicImage, filter: &PixelFilter) -> DynamicImage {
    match *filter {
        PixelFilter::Watermark(_) | PixelFilter::Frame { .. } => image,
        PixelFilter::RotateBy(angle) => rotate_by(image, angle),
        PixelFilter::Rgb { r, g, b } => {
            let delta = [r, g, b].map(|v| i32::from(v) * 255 / 100);
            map_rgb(image, |px| {
                for (c, d) in px.iter_mut().zip(delta) {
                    *c = (i32::from(*c) + d).clamp(0, 255) as u8;
                }
            })
        }
        PixelFilter::Saturation(change) => {
            let change = change.as_f32();
            map_rgb(image, |px| {
                let [r, g, b] = px.map(f32::from);
                let p = (r * r * 0.299 + g * g * 0.587 + b * b * 0.114).sqrt();
                for c in px.iter_mut() {
                    // Truncation as in Thumbor's C filter.
                    *c = (p + (f32::from(*c) - p) * change).clamp(0.0, 255.0) as u8;
                }
            })
        }
        PixelFilter::Equalize => equalize(image),
        PixelFilter::Noise { amount, seed } => noise(image, amount, seed),
        PixelFilter::Colorize { percent, color } => {
            let target = [color.r, color.g, color.b];
            map_rgb(image, |px| {
                for ((c, p), t) in px.iter_mut().zip(percent).zip(target) {
                    let p = f32::from(p);
                    *c = ((f32::from(*c) * (100.0 - p) + f32::from(t) * p) / 100.0)
                        .clamp(0.0, 255.0) as u8;
                }
            })
        }
        PixelFilter::Convolution {
            ref kernel,
            columns,
            normalize,
        } => convolve(image, kernel, usize::from(columns), normalize),
        PixelFilter::Curve {
            ref all,
            ref r,
            ref g,
            ref b,
        } => {
            let [all, r, g, b] = [all, r, g, b].map(|points| curve_table(points));
            map_rgb(image, |px| {
                for (c, table) in px.iter_mut().zip([&r, &g, &b]) {
                    *c = all[usize::from(table[usize::from(*c)])];
                }
            })
        }
        PixelFilter::Blur { radius: 0, .. } => image,
        PixelFilter::Blur { radius, sigma } => {
            image.fast_blur(sigma.map_or(radius as f32, |s| s.as_f32()))
        }
        PixelFilter::Sharpen {
            amount,
            radius,
            luminance_only,
        } => sharpen(image, amount.as_f32(), radius.as_f32(), luminance_only),
        PixelFilter::Grayscale => grayscale(image),
        PixelFilter::Brightness(v) => image.brighten(i32::from(v) * 255 / 100),
        PixelFilter::Contrast(v) => image.adjust_contrast(f32::from(v)),
        // Thumbor (after PIL) rotates counter-clockwise.
        PixelFilter::Rotate(Rotation::R90) => image.rotate270(),
        PixelFilter::Rotate(Rotation::R180) => image.rotate180(),
        PixelFilter::Rotate(Rotation::R270) => image.rotate90(),
        PixelFilter::RoundCorner {
            rx,
            ry,
            color,
            transparent,
        } => round_corners(image, rx, ry, color, transparent),
    }
}

/// Mirrors the image as the URL's `-W` / `-H` ask.
pub fn flip(image: DynamicImage, horizontal: bool, vertical: bool) -> DynamicImage {
    let image = if horizontal { image.fliph() } else { image };
    if vertical { image.flipv() } else { image }
}

/// The part of the image that is not border, the border being every pixel within
/// `trim.tolerance` (Euclidean RGB(A) distance) of the chosen corner's colour. `None` when
/// the whole image is border: a uniform image is left untouched.
pub fn trim_box(image: &DynamicImage, trim: Trim) -> Option<Rect> {
    let (w, h) = image.dimensions();
    let ch = channels(image);
    let bytes = image.as_bytes();
    let corner = match trim.corner {
        TrimCorner::TopLeft => 0,
        TrimCorner::BottomRight => (w as usize * h as usize - 1) * ch,
    };
    let reference = &bytes[corner..corner + ch];
    let limit = u32::from(trim.tolerance).pow(2);
    let is_content = |px: &[u8]| {
        let d: u32 = px
            .iter()
            .zip(reference)
            .map(|(&a, &b)| u32::from(a.abs_diff(b)).pow(2))
            .sum();
        d > limit
    };
    let (mut left, mut top, mut right, mut bottom) = (u32::MAX, u32::MAX, 0, 0);
    for (i, px) in bytes.chunks_exact(ch).enumerate() {
        if is_content(px) {
            let (x, y) = ((i % w as usize) as u32, (i / w as usize) as u32);
            left = left.min(x);
            right = right.max(x + 1);
            top = top.min(y);
            bottom = bottom.max(y + 1);
        }
    }
    (left != u32::MAX).then_some(Rect {
        left,
        top,
        right,
        bottom,
    })
}

/// Centres the image on a canvas of `canvas` size filled as `fill` says. The image's own
/// transparent parts stay transparent unless `through` (`fill(colour,true)`) lets the fill
/// show through them, as Thumbor's second `fill` argument does.
pub fn pad(
    image: DynamicImage,
    canvas: Size,
    fill: Fill,
    through: bool,
) -> Result<DynamicImage, ImagingError> {
    let (w, h) = image.dimensions();
    let opaque = !image.color().has_alpha();
    if (opaque || !through) && (w, h) == (canvas.width, canvas.height) {
        return Ok(image);
    }
    let mut background = match fill {
        Fill::Color(c) => {
            RgbaImage::from_pixel(canvas.width, canvas.height, Rgba([c.r, c.g, c.b, c.a]))
        }
        Fill::Transparent => RgbaImage::new(canvas.width, canvas.height),
        Fill::Auto => {
            let c = mean_color(&image);
            RgbaImage::from_pixel(canvas.width, canvas.height, Rgba([c.r, c.g, c.b, 255]))
        }
        Fill::Blur => blurred_cover(&image, canvas)?,
    };
    let x = i64::from((canvas.width - w.min(canvas.width)) / 2);
    let y = i64::from((canvas.height - h.min(canvas.height)) / 2);
    match &image {
        DynamicImage::ImageRgba8(top) if through => imageops::overlay(&mut background, top, x, y),
        other => imageops::replace(&mut background, &other.to_rgba8(), x, y),
    }
    Ok(drop_opaque_alpha(DynamicImage::ImageRgba8(background)))
}

/// Composites the image onto its background colour (`background_color()`): transparent
/// parts take the colour, and the result is opaque.
pub fn underlay(image: DynamicImage, background: Background) -> DynamicImage {
    if !image.color().has_alpha() {
        return image;
    }
    let color = match background {
        Background::Color(c) => c,
        Background::Auto => mean_color(&image),
    };
    if color.a == 255 {
        return flatten(image, color);
    }
    let (w, h) = image.dimensions();
    let mut canvas = RgbaImage::from_pixel(w, h, Rgba([color.r, color.g, color.b, color.a]));
    imageops::overlay(&mut canvas, &image.to_rgba8(), 0, 0);
    drop_opaque_alpha(DynamicImage::ImageRgba8(canvas))
}

/// The colour `auto` means for `fill` and `background_color`: the mean of every pixel's
/// colour channels, transparent ones included, truncated, as Thumbor's `_fill` computes it.
pub fn mean_color(image: &DynamicImage) -> Color {
    let ch = channels(image);
    let mut sums = [0u64; 3];
    let mut n = 0u64;
    for px in image.as_bytes().chunks_exact(ch) {
        for (sum, &v) in sums.iter_mut().zip(&px[..3]) {
            *sum += u64::from(v);
        }
        n += 1;
    }
    let avg = |c: usize| (sums[c] / n.max(1)) as u8;
    Color {
        r: avg(0),
        g: avg(1),
        b: avg(2),
        a: 255,
    }
}

/// Composites RGBA onto an opaque background colour, giving RGB8 (for JPEG output).
pub fn flatten(image: DynamicImage, background: Color) -> DynamicImage {
    let DynamicImage::ImageRgba8(rgba) = image else {
        return image;
    };
    let bg = [background.r, background.g, background.b];
    let rgb = image::RgbImage::from_fn(rgba.width(), rgba.height(), |x, y| {
        let p = rgba.get_pixel(x, y).0;
        let a = u32::from(p[3]);
        image::Rgb(std::array::from_fn(|c| {
            ((u32::from(p[c]) * a + u32::from(bg[c]) * (255 - a) + 127) / 255) as u8
        }))
    });
    DynamicImage::ImageRgb8(rgb)
}

/// RGBA whose every pixel is opaque → RGB8; anything else unchanged.
pub fn drop_opaque_alpha(image: DynamicImage) -> DynamicImage {
    match image {
        DynamicImage::ImageRgba8(ref rgba) if rgba.pixels().all(|p| p.0[3] == 255) => {
            DynamicImage::ImageRgb8(image.to_rgb8())
        }
        other => other,
    }
}

fn channels(image: &DynamicImage) -> usize {
    usize::from(image.color().channel_count())
}

fn bytes_mut(image: &mut DynamicImage) -> &mut [u8] {
    match image {
        DynamicImage::ImageRgb8(img) => img,
        DynamicImage::ImageRgba8(img) => img,
        _ => unreachable!("the working image is always RGB8 or RGBA8"),
    }
}

/// Applies `f` to the RGB part of every pixel.
fn map_rgb(mut image: DynamicImage, mut f: impl FnMut(&mut [u8; 3])) -> DynamicImage {
    let ch = channels(&image);
    for px in bytes_mut(&mut image).chunks_exact_mut(ch) {
        let rgb: &mut [u8; 3] = (&mut px[..3])
            .try_into()
            .expect("pixels have 3 or 4 channels");
        f(rgb);
    }
    image
}

/// Histogram equalisation per colour channel (Thumbor's `equalize`): each value maps to
/// (cdf(v) - cdf_min) / (area - cdf_min) x 255.
fn equalize(image: DynamicImage) -> DynamicImage {
    let ch = channels(&image);
    let mut hist = [[0u64; 256]; 3];
    for px in image.as_bytes().chunks_exact(ch) {
        for c in 0..3 {
            hist[c][usize::from(px[c])] += 1;
        }
    }
    let area: u64 = hist[0].iter().sum();
    let tables: Vec<[u8; 256]> = hist
        .iter()
        .map(|h| {
            let mut cdf = [0u64; 256];
            let mut sum = 0;
            for (v, &n) in h.iter().enumerate() {
                sum += n;
                cdf[v] = sum;
            }
            let min = h
                .iter()
                .zip(&cdf)
                .find(|(n, _)| **n > 0)
                .map_or(0, |(_, c)| *c);
            let span = area.saturating_sub(min).max(1) as f64;
            std::array::from_fn(|v| {
                (cdf[v].saturating_sub(min) as f64 / span * 255.0).clamp(0.0, 255.0) as u8
            })
        })
        .collect();
    map_rgb(image, |px| {
        for (c, table) in px.iter_mut().zip(&tables) {
            *c = table[usize::from(*c)];
        }
    })
}

/// The same offset, uniform in -amount/2..amount/2, added to the three channels of a pixel;
/// a fixed pseudo-random sequence per seed, so a URL always renders the same bytes.
fn noise(image: DynamicImage, amount: u8, seed: u32) -> DynamicImage {
    if amount == 0 {
        return image;
    }
    // SplitMix64: tiny, well distributed, and reproducible everywhere.
    let mut state = u64::from(seed) ^ 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    let amount = u64::from(amount);
    map_rgb(image, |px| {
        let offset = (next() % amount) as i32 - (amount >> 1) as i32;
        for c in px.iter_mut() {
            *c = (i32::from(*c) + offset).clamp(0, 255) as u8;
        }
    })
}

/// Convolves every channel (alpha included) with an odd-sided kernel, edges clamped.
fn convolve(
    image: DynamicImage,
    kernel: &[Milli],
    columns: usize,
    normalize: bool,
) -> DynamicImage {
    let mut weights: Vec<f64> = kernel.iter().map(|m| f64::from(m.0) / 1000.0).collect();
    let sum: f64 = weights.iter().sum();
    if normalize && sum != 0.0 {
        weights.iter_mut().for_each(|w| *w /= sum);
    }
    let rows = weights.len() / columns;
    let (mid_x, mid_y) = ((columns / 2) as i64, (rows / 2) as i64);
    let ch = channels(&image);
    let (w, h) = (image.width() as i64, image.height() as i64);
    let source = image.as_bytes().to_vec();
    let mut image = image;
    let out = bytes_mut(&mut image);
    for y in 0..h {
        for x in 0..w {
            let mut acc = [0f64; 4];
            for (k, weight) in weights.iter().enumerate() {
                let sx = (x + (k % columns) as i64 - mid_x).clamp(0, w - 1);
                let sy = (y + (k / columns) as i64 - mid_y).clamp(0, h - 1);
                let at = ((sy * w + sx) as usize) * ch;
                for c in 0..ch {
                    acc[c] += f64::from(source[at + c]) * weight;
                }
            }
            let at = ((y * w + x) as usize) * ch;
            for c in 0..ch {
                // Truncation toward zero, then clamping, as Thumbor's C filter does.
                out[at + c] = (acc[c] as i64).clamp(0, 255) as u8;
            }
        }
    }
    image
}

/// The 256-entry lookup table of a tone curve through `points` (Thumbor's natural cubic
/// spline); no points is the identity.
fn curve_table(points: &[(u8, u8)]) -> [u8; 256] {
    if points.len() < 2 {
        return std::array::from_fn(|v| v as u8);
    }
    let n = points.len();
    let (xs, ys): (Vec<f64>, Vec<f64>) = points
        .iter()
        .map(|&(x, y)| (f64::from(x), f64::from(y)))
        .unzip();
    // Second derivatives of the natural spline (tridiagonal system, Thomas algorithm).
    let mut lower = vec![0.0; n];
    let mut diag = vec![1.0; n];
    let mut upper = vec![0.0; n];
    let mut rhs = vec![0.0; n];
    for i in 1..n - 1 {
        lower[i] = (xs[i] - xs[i - 1]) / 6.0;
        diag[i] = (xs[i + 1] - xs[i - 1]) / 3.0;
        upper[i] = (xs[i + 1] - xs[i]) / 6.0;
        rhs[i] =
            (ys[i + 1] - ys[i]) / (xs[i + 1] - xs[i]) - (ys[i] - ys[i - 1]) / (xs[i] - xs[i - 1]);
    }
    for i in 1..n {
        let k = lower[i] / diag[i - 1];
        diag[i] -= k * upper[i - 1];
        rhs[i] -= k * rhs[i - 1];
    }
    let mut second = vec![0.0; n];
    second[n - 1] = rhs[n - 1] / diag[n - 1];
    for i in (0..n - 1).rev() {
        second[i] = (rhs[i] - upper[i] * second[i + 1]) / diag[i];
    }
    let mut table = [points[0].1; 256];
    for i in 0..n - 1 {
        let h = xs[i + 1] - xs[i];
        for x in points[i].0..points[i + 1].0 {
            let t = (f64::from(x) - xs[i]) / h;
            let (a, b) = (1.0 - t, t);
            let y = a * ys[i]
                + b * ys[i + 1]
                + (h * h / 6.0) * ((a * a * a - a) * second[i] + (b * b * b - b) * second[i + 1]);
            table[usize::from(x)] = y.round().clamp(0.0, 255.0) as u8;
        }
    }
    table[usize::from(points[n - 1].0)..].fill(points[n - 1].1);
    table
}

/// Turns the image `angle` degrees counter-clockwise about its centre onto a canvas that
/// holds all of it; the corners are transparent. Bilinear sampling.
fn rotate_by(image: DynamicImage, angle: u16) -> DynamicImage {
    let source = image.to_rgba8();
    let (w, h) = (f64::from(source.width()), f64::from(source.height()));
    let (sin, cos) = f64::from(angle).to_radians().sin_cos();
    let out = rotated_size(Size::new(source.width(), source.height()), angle);
    let (out_w, out_h) = (f64::from(out.width), f64::from(out.height));
    let (cx, cy, ocx, ocy) = (w / 2.0, h / 2.0, out_w / 2.0, out_h / 2.0);
    let sample = |x: f64, y: f64| -> [f64; 4] {
        // Premultiplied bilinear sampling; outside the source is transparent.
        let (x0, y0) = (x.floor(), y.floor());
        let (fx, fy) = (x - x0, y - y0);
        let mut acc = [0f64; 4];
        for (dx, dy, weight) in [
            (0.0, 0.0, (1.0 - fx) * (1.0 - fy)),
            (1.0, 0.0, fx * (1.0 - fy)),
            (0.0, 1.0, (1.0 - fx) * fy),
            (1.0, 1.0, fx * fy),
        ] {
            let (sx, sy) = (x0 + dx, y0 + dy);
            if weight == 0.0 || sx < 0.0 || sy < 0.0 || sx >= w || sy >= h {
                continue;
            }
            let p = source.get_pixel(sx as u32, sy as u32).0;
            let a = f64::from(p[3]) / 255.0;
            for c in 0..3 {
                acc[c] += f64::from(p[c]) * a * weight;
            }
            acc[3] += a * weight;
        }
        acc
    };
    let out = RgbaImage::from_fn(out_w as u32, out_h as u32, |x, y| {
        // Counter-clockwise on screen (y down): the source point is the output point turned
        // clockwise back.
        let (dx, dy) = (f64::from(x) + 0.5 - ocx, f64::from(y) + 0.5 - ocy);
        let sx = dx * cos - dy * sin + cx - 0.5;
        let sy = dx * sin + dy * cos + cy - 0.5;
        let acc = sample(sx, sy);
        if acc[3] <= 0.0 {
            return Rgba([0, 0, 0, 0]);
        }
        let channel = |c: usize| (acc[c] / acc[3]).round().clamp(0.0, 255.0) as u8;
        Rgba([
            channel(0),
            channel(1),
            channel(2),
            (acc[3] * 255.0).round() as u8,
        ])
    });
    DynamicImage::ImageRgba8(out)
}

/// Rec. 601 luma, as PIL computes it.
fn luma(px: &[u8]) -> f32 {
    0.299 * f32::from(px[0]) + 0.587 * f32::from(px[1]) + 0.114 * f32::from(px[2])
}

/// Grey in all three channels (the image stays RGB so later steps need no special case).
fn grayscale(image: DynamicImage) -> DynamicImage {
    map_rgb(image, |px| {
        let y = luma(px).round() as u8;
        px.fill(y);
    })
}

/// Unsharp mask: `p + amount * (p - blur(p))`, on each channel or on luma only.
fn sharpen(
    mut image: DynamicImage,
    amount: f32,
    radius: f32,
    luminance_only: bool,
) -> DynamicImage {
    if amount <= 0.0 || radius <= 0.0 {
        return image;
    }
    let blurred = image.blur(radius);
    let ch = channels(&image);
    let soft = blurred.as_bytes();
    for (px, b) in bytes_mut(&mut image)
        .chunks_exact_mut(ch)
        .zip(soft.chunks_exact(ch))
    {
        if luminance_only {
            let delta = amount * (luma(px) - luma(b));
            for c in &mut px[..3] {
                *c = (f32::from(*c) + delta).round().clamp(0.0, 255.0) as u8;
            }
        } else {
            for (c, &s) in px[..3].iter_mut().zip(&b[..3]) {
                *c = (f32::from(*c) + amount * (f32::from(*c) - f32::from(s)))
                    .round()
                    .clamp(0.0, 255.0) as u8;
            }
        }
    }
    image
}

/// Paints the outside of elliptical corners (radii `rx`, `ry`) with `color`, or makes it
/// transparent. The edge is anti-aliased over about one pixel.
fn round_corners(
    image: DynamicImage,
    rx: u32,
    ry: u32,
    color: Color,
    transparent: bool,
) -> DynamicImage {
    let (w, h) = image.dimensions();
    let (rx, ry) = (rx.min(w / 2), ry.min(h / 2));
    if rx == 0 || ry == 0 {
        return image;
    }
    let mut image = if transparent {
        DynamicImage::ImageRgba8(image.to_rgba8())
    } else {
        image
    };
    let ch = channels(&image);
    let paint = [color.r, color.g, color.b];
    let bytes = bytes_mut(&mut image);
    let (rxf, ryf) = (rx as f32, ry as f32);
    for y in 0..h {
        // Distance into the corner region, measured from the ellipse centre.
        let dy = if y < ry {
            ry - y
        } else if y >= h - ry {
            y + ry + 1 - h
        } else {
            continue;
        };
        for x in (0..rx).chain(w - rx..w) {
            let dx = if x < rx { rx - x } else { x + rx + 1 - w };
            let (fx, fy) = ((dx as f32 - 0.5) / rxf, (dy as f32 - 0.5) / ryf);
            // Approximate signed distance to the ellipse, in pixels.
            let outside = ((fx * fx + fy * fy).sqrt() - 1.0) * rxf.min(ryf);
            let cover = (outside + 0.5).clamp(0.0, 1.0);
            if cover == 0.0 {
                continue;
            }
            let i = (y as usize * w as usize + x as usize) * ch;
            let px = &mut bytes[i..i + ch];
            if transparent {
                px[3] = (f32::from(px[3]) * (1.0 - cover)).round() as u8;
            } else {
                for (c, &p) in px[..3].iter_mut().zip(&paint) {
                    *c = (f32::from(*c) * (1.0 - cover) + f32::from(p) * cover).round() as u8;
                }
            }
        }
    }
    image
}

/// The image scaled to cover the canvas, centred, and blurred heavily.
fn blurred_cover(image: &DynamicImage, canvas: Size) -> Result<RgbaImage, ImagingError> {
    let (w, h) = (f64::from(image.width()), f64::from(image.height()));
    let aspect = f64::from(canvas.width) / f64::from(canvas.height);
    let (cw, ch) = if w / h > aspect {
        (h * aspect, h)
    } else {
        (w, w / aspect)
    };
    let crop = CropBox {
        left: (w - cw) / 2.0,
        top: (h - ch) / 2.0,
        width: cw,
        height: ch,
    };
    let cover = resize(image, crop, canvas)?;
    let sigma = canvas.width.max(canvas.height) as f32 / 25.0;
    Ok(cover.fast_blur(sigma.max(2.0)).to_rgba8())
}

/// Lays `overlay` over `image` as Thumbor's `watermark()` does: the overlay's alpha lowered
/// by `255 * alpha / 100`, scaled to fit the ratios (when given), placed by `x` and `y`
/// (pixels from either edge, percentages, centred, or tiled) and composited "over", so
/// the overlay's transparent parts leave the image as it was.
pub fn watermark(
    image: DynamicImage,
    overlay: &RgbaImage,
    w: &Watermark,
) -> Result<DynamicImage, ImagingError> {
    let (iw, ih) = (image.width(), image.height());
    let delta = (255 * u32::from(w.alpha) / 100) as u8;
    let mut mark = overlay.clone();
    for p in mark.pixels_mut() {
        p.0[3] = p.0[3].saturating_sub(delta);
    }
    if w.width_ratio.is_some() || w.height_ratio.is_some() {
        let (mw, mh) = watermark_size((iw, ih), mark.dimensions(), w.width_ratio, w.height_ratio);
        if mw == 0 || mh == 0 {
            return Ok(image);
        }
        let source = DynamicImage::ImageRgba8(mark);
        mark = resize(&source, CropBox::whole(&source), Size::new(mw, mh))?.into_rgba8();
    }
    let (mw, mh) = mark.dimensions();
    let both_tiled = w.x == Place::Repeat && w.y == Place::Repeat;
    let xs = placements(w.x, iw, mw, both_tiled);
    let ys = placements(w.y, ih, mh, both_tiled);
    let mut image = image;
    for &y in &ys {
        for &x in &xs {
            composite_over(&mut image, &mark, x, y);
        }
    }
    Ok(image)
}

/// Thumbor's `frame()`: the image on a white canvas grown by the nine-patch's padding (its
/// right column and bottom row markers), then the nine-patch drawn over it, its fixed
/// cells at their size and its stretchy ones (marked by opaque black in the top row and
/// left column) stretched to fill the rest. The result is opaque. Fails when the padding
/// would grow a side past `max_side`.
pub fn frame(
    image: DynamicImage,
    patch: &RgbaImage,
    max_side: u32,
) -> Result<DynamicImage, ImagingError> {
    let (pw, ph) = patch.dimensions();
    if pw < 3 || ph < 3 {
        return Ok(image);
    }
    let stretchy = |x: u32, y: u32| patch.get_pixel(x, y).0 == [0, 0, 0, 255];
    // Padding: the first and last marked pixels of the bottom row and right column.
    let inner_x = 1..pw - 1;
    let inner_y = 1..ph - 1;
    let left = inner_x
        .clone()
        .find(|&x| stretchy(x, ph - 1))
        .map_or(0, |x| x - 1);
    let right = inner_x
        .clone()
        .rev()
        .find(|&x| stretchy(x, ph - 1))
        .map_or(0, |x| pw - 2 - x);
    let top = inner_y
        .clone()
        .find(|&y| stretchy(pw - 1, y))
        .map_or(0, |y| y - 1);
    let bottom = inner_y
        .clone()
        .rev()
        .find(|&y| stretchy(pw - 1, y))
        .map_or(0, |y| ph - 2 - y);

    let (iw, ih) = (image.width(), image.height());
    let (tw, th) = (iw + left + right, ih + top + bottom);
    if tw > max_side || th > max_side {
        return Err(ImagingError::OutputTooLarge {
            width: tw,
            height: th,
            limit: max_side,
        });
    }
    let mut canvas =
        DynamicImage::ImageRgb8(image::RgbImage::from_pixel(tw, th, image::Rgb([255; 3])));
    composite_over(
        &mut canvas,
        &image.to_rgba8(),
        i64::from(left),
        i64::from(top),
    );
    let DynamicImage::ImageRgb8(mut target) = canvas else {
        unreachable!("built as RGB8 just above")
    };

    let stretchy_cols = inner_x.clone().filter(|&x| stretchy(x, 0)).count() as u32;
    let stretchy_rows = inner_y.clone().filter(|&y| stretchy(0, y)).count() as u32;
    let spare_w = f64::from(tw.saturating_sub(pw - 2 - stretchy_cols));
    let spare_h = f64::from(th.saturating_sub(ph - 2 - stretchy_rows));
    // Runs of equal stretchiness along the top row (columns) or left column (rows).
    let runs = |len: u32, is: &dyn Fn(u32) -> bool| {
        let mut out = Vec::new();
        let mut start = 1;
        while start < len - 1 {
            let mut end = start + 1;
            while end < len - 1 && is(end) == is(start) {
                end += 1;
            }
            out.push((start, end - start, is(start)));
            start = end;
        }
        out
    };
    let cols = runs(pw, &|x| stretchy(x, 0));
    let rows = runs(ph, &|y| stretchy(0, y));
    let scaled = |size: u32, stretch: bool, total: u32, spare: f64| {
        if stretch {
            (f64::from(size) / f64::from(total) * spare + 0.5) as u32
        } else {
            size
        }
    };
    let mut ty = 0;
    for &(sy, sh, row_stretchy) in &rows {
        let cell_h = scaled(sh, row_stretchy, stretchy_rows, spare_h);
        let mut tx = 0;
        for &(sx, sw, col_stretchy) in &cols {
            let cell_w = scaled(sw, col_stretchy, stretchy_cols, spare_w);
            paste_cell(
                patch,
                (sx, sy, sw, sh),
                &mut target,
                (tx, ty, cell_w, cell_h),
            );
            tx += cell_w;
        }
        ty += cell_h;
    }
    Ok(DynamicImage::ImageRgb8(target))
}

/// Draws the `source` cell (x, y, w, h) of the nine-patch into the `target` cell, scaled
/// bilinearly and composited over it, as Thumbor's nine-patch code samples it. A cell that
/// does not fit inside the target is skipped, as there.
fn paste_cell(
    patch: &RgbaImage,
    (sx, sy, sw, sh): (u32, u32, u32, u32),
    target: &mut image::RgbImage,
    (tx, ty, tw, th): (u32, u32, u32, u32),
) {
    if tw == 0 || th == 0 || tx + tw > target.width() || ty + th > target.height() {
        return;
    }
    let x_ratio = (f64::from(sw) - 1.0) / f64::from(tw);
    let y_ratio = (f64::from(sh) - 1.0) / f64::from(th);
    let sample = |x: u32, y: u32, fx: f64, fy: f64, c: usize| -> f64 {
        let get = |x: u32, y: u32| {
            f64::from(
                patch
                    .get_pixel(x.min(patch.width() - 1), y.min(patch.height() - 1))
                    .0[c],
            )
        };
        let (a, b, cc, d) = (get(x, y), get(x + 1, y), get(x, y + 1), get(x + 1, y + 1));
        if a == b && a == cc && a == d {
            return a;
        }
        a * (1.0 - fx) * (1.0 - fy) + b * fx * (1.0 - fy) + cc * (1.0 - fx) * fy + d * fx * fy
    };
    for y in 0..th {
        let src_y = (y_ratio * f64::from(y)).max(0.0);
        let (py, fy) = (src_y as u32, src_y - src_y.floor());
        for x in 0..tw {
            let src_x = (x_ratio * f64::from(x)).max(0.0);
            let (px, fx) = (src_x as u32, src_x - src_x.floor());
            let alpha = sample(sx + px, sy + py, fx, fy, 3).clamp(0.0, 255.0) as u32;
            let a = f64::from(alpha) / 255.0;
            let dst = target.get_pixel_mut(tx + x, ty + y);
            for c in 0..3 {
                let s = sample(sx + px, sy + py, fx, fy, c).clamp(0.0, 255.0) as u32;
                let v = a * f64::from(s) + f64::from(dst.0[c]) * (1.0 - a);
                dst.0[c] = v.clamp(0.0, 255.0) as u8;
            }
        }
    }
}

/// Thumbor's watermark size for ratios given in percent: the overlay scaled (up or down) to
/// the largest size within `ratio` of the image on each bounded side, keeping its shape.
fn watermark_size(
    image: (u32, u32),
    mark: (u32, u32),
    width_ratio: Option<u16>,
    height_ratio: Option<u16>,
) -> (u32, u32) {
    let (mw, mh) = (f64::from(mark.0), f64::from(mark.1));
    let bound =
        |side: u32, ratio: Option<u16>| ratio.map(|r| f64::from(side) * f64::from(r) / 100.0);
    let (max_w, max_h) = match (bound(image.0, width_ratio), bound(image.1, height_ratio)) {
        (Some(w), Some(h)) => (w, h),
        (Some(w), None) => (w, mh * w / mw),
        (None, Some(h)) => (mw * h / mh, h),
        (None, None) => (mw, mh),
    };
    let round = |v: f64| v.round_ties_even().max(0.0) as u32;
    if mw / max_w >= mh / max_h {
        (round(max_w), round(mh * max_w / mw))
    } else {
        (round(mw * max_h / mh), round(max_h))
    }
}

/// Where copies of an overlay `mark` pixels long go along an image side `side` pixels long
/// (Thumbor's arithmetic, including its gaps for `repeat` and its cap of 6x6 copies when
/// both axes repeat into more than 100).
fn placements(place: Place, side: u32, mark: u32, both_tiled: bool) -> Vec<i64> {
    let (side_i, mark_i) = (i64::from(side), i64::from(mark));
    match place {
        Place::Px { offset, from_end } => {
            let offset = i64::from(offset);
            vec![if from_end {
                side_i - mark_i - offset
            } else {
                offset
            }]
        }
        Place::Percent { percent, from_end } => {
            let offset = (f64::from(side) * f64::from(percent) / 100.0 + 1e-5).round_ties_even();
            placements(
                Place::Px {
                    offset: offset as u32,
                    from_end,
                },
                side,
                mark,
                both_tiled,
            )
        }
        // Python's int() of a float: towards zero.
        Place::Center => vec![((side_i - mark_i) as f64 / 2.0).trunc() as i64],
        Place::Repeat if mark == 0 => Vec::new(),
        Place::Repeat => {
            let (mut count, mut gap_total) = if side_i < 2 * mark_i {
                ((side_i + mark_i - 1) / mark_i, 10)
            } else {
                (side_i / mark_i, side_i % mark_i)
            };
            if both_tiled && count * count > 100 {
                count = count.min(6);
                gap_total = side_i - count * mark_i;
            }
            let gap = gap_total.div_euclid(count.max(2) - 1);
            (0..count).map(|i| i * (gap + mark_i)).collect()
        }
    }
}

/// Composites `mark` (straight alpha) over `image` with its top-left corner at `(x, y)`,
/// clipped to the image. An opaque image stays opaque.
fn composite_over(image: &mut DynamicImage, mark: &RgbaImage, x: i64, y: i64) {
    let (iw, ih) = (i64::from(image.width()), i64::from(image.height()));
    let ch = channels(image);
    let (mw, mh) = (i64::from(mark.width()), i64::from(mark.height()));
    let (x0, y0) = (x.max(0), y.max(0));
    let (x1, y1) = ((x + mw).min(iw), (y + mh).min(ih));
    if x0 >= x1 || y0 >= y1 {
        return;
    }
    let row = iw as usize * ch;
    let bytes = bytes_mut(image);
    for py in y0..y1 {
        for px in x0..x1 {
            let src = mark.get_pixel((px - x) as u32, (py - y) as u32).0;
            let sa = f32::from(src[3]) / 255.0;
            if sa <= 0.0 {
                continue;
            }
            let at = py as usize * row + px as usize * ch;
            let dst = &mut bytes[at..at + ch];
            let da = if ch == 4 {
                f32::from(dst[3]) / 255.0
            } else {
                1.0
            };
            let out_a = sa + da * (1.0 - sa);
            for c in 0..3 {
                let v = (f32::from(src[c]) * sa + f32::from(dst[c]) * da * (1.0 - sa)) / out_a;
                dst[c] = v.round().clamp(0.0, 255.0) as u8;
            }
            if ch == 4 {
                dst[3] = (out_a * 255.0).round().clamp(0.0, 255.0) as u8;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{Rgb, RgbImage};

    fn pixel(image: &DynamicImage, x: u32, y: u32) -> [u8; 4] {
        image.get_pixel(x, y).0
    }

    #[test]
    fn watermark_places_as_thumbor_does() {
        let px = |offset, from_end| Place::Px { offset, from_end };
        assert_eq!(placements(px(10, false), 300, 50, false), [10]);
        assert_eq!(placements(px(10, true), 300, 50, false), [240]);
        assert_eq!(placements(px(0, true), 300, 50, false), [250]);
        // 50p of 300 is 150, from either edge.
        let pct = |percent, from_end| Place::Percent { percent, from_end };
        assert_eq!(placements(pct(50, false), 300, 50, false), [150]);
        assert_eq!(placements(pct(50, true), 300, 50, false), [100]);
        // Centred, truncated towards zero (also when the overlay is the larger).
        assert_eq!(placements(Place::Center, 301, 50, false), [125]);
        assert_eq!(placements(Place::Center, 50, 55, false), [-2]);
        // Tiled: whole copies with the remainder spread between them...
        assert_eq!(
            placements(Place::Repeat, 320, 50, false),
            [0, 54, 108, 162, 216, 270]
        );
        // ...two copies 10 px apart when fewer than two fit...
        assert_eq!(placements(Place::Repeat, 70, 50, false), [0, 60]);
        // ...and at most 6 a side when both axes tile into more than 100.
        assert_eq!(placements(Place::Repeat, 1000, 10, true).len(), 6);
        assert_eq!(placements(Place::Repeat, 1000, 10, false).len(), 100);
        // Ratios scale the overlay to fit, up or down, keeping its shape.
        assert_eq!(
            watermark_size((300, 200), (100, 50), Some(50), None),
            (150, 75)
        );
        assert_eq!(
            watermark_size((300, 200), (100, 50), None, Some(10)),
            (40, 20)
        );
        assert_eq!(
            watermark_size((300, 200), (100, 50), Some(20), Some(20)),
            (60, 30)
        );
    }

    #[test]
    fn watermark_composites_over_the_image() {
        let red = DynamicImage::ImageRgb8(RgbImage::from_pixel(10, 10, Rgb([255, 0, 0])));
        let mut blue = RgbaImage::from_pixel(4, 4, Rgba([0, 0, 255, 255]));
        blue.put_pixel(0, 0, Rgba([0, 255, 0, 0]));
        let mark = |x, y, alpha| Watermark {
            key: "w.png".into(),
            x,
            y,
            alpha,
            width_ratio: None,
            height_ratio: None,
        };
        let corner = Place::Px {
            offset: 0,
            from_end: true,
        };
        let out = watermark(red.clone(), &blue, &mark(corner, corner, 0)).unwrap();
        assert!(
            matches!(out, DynamicImage::ImageRgb8(_)),
            "stays opaque RGB"
        );
        assert_eq!(pixel(&out, 9, 9), [0, 0, 255, 255]);
        assert_eq!(pixel(&out, 7, 7), [0, 0, 255, 255]);
        assert_eq!(pixel(&out, 5, 5), [255, 0, 0, 255], "outside the overlay");
        assert_eq!(pixel(&out, 6, 6), [255, 0, 0, 255], "its transparent pixel");
        // alpha(50) lowers the overlay's alpha by 127: about half of each.
        let out = watermark(red.clone(), &blue, &mark(corner, corner, 50)).unwrap();
        let p = pixel(&out, 9, 9);
        assert!(p[0].abs_diff(127) <= 2 && p[2].abs_diff(128) <= 2, "{p:?}");
        // alpha(100) hides it.
        let out = watermark(red.clone(), &blue, &mark(corner, corner, 100)).unwrap();
        assert_eq!(pixel(&out, 9, 9), [255, 0, 0, 255]);
        // Partly outside the image: clipped, no panic.
        let far = Place::Px {
            offset: 8,
            from_end: false,
        };
        let out = watermark(red.clone(), &blue, &mark(far, far, 0)).unwrap();
        assert_eq!(pixel(&out, 9, 9), [0, 0, 255, 255]);
        assert_eq!(
            pixel(&out, 8, 8),
            [255, 0, 0, 255],
            "the transparent corner"
        );
        // Over transparent pixels the overlay shows as it is.
        let clear = DynamicImage::ImageRgba8(RgbaImage::from_pixel(10, 10, Rgba([0, 0, 0, 0])));
        let out = watermark(clear, &blue, &mark(corner, corner, 0)).unwrap();
        assert_eq!(pixel(&out, 9, 9), [0, 0, 255, 255]);
        assert_eq!(pixel(&out, 1, 1)[3], 0);
        // Tiled over the whole image, scaled to 20% of its width (2 px).
        let tiled = Watermark {
            width_ratio: Some(20),
            ..mark(Place::Repeat, Place::Repeat, 0)
        };
        let out = watermark(
            red,
            &RgbaImage::from_pixel(4, 4, Rgba([0, 0, 255, 255])),
            &tiled,
        )
        .unwrap();
        assert_eq!(pixel(&out, 0, 0), [0, 0, 255, 255]);
        assert_eq!(pixel(&out, 8, 8), [0, 0, 255, 255]);
    }

    #[test]
    fn thumbor_colour_filters_move_channels_as_thumbor_does() {
        let img = gradient(16, 16);
        // rgb(20,-20,0): +51 red, -51 green, blue unchanged; clamped at 0 and 255.
        let out = apply(
            img.clone(),
            &PixelFilter::Rgb {
                r: 20,
                g: -20,
                b: 0,
            },
        );
        assert_eq!(pixel(&out, 3, 0), [24 + 51, 0, 128, 255]);
        assert_eq!(pixel(&out, 15, 15), [120 + 51, 120 - 51, 128, 255]);
        // saturation(0) is grey at the pixel's perceived brightness; saturation(1) is a no-op.
        let grey = apply(img.clone(), &PixelFilter::Saturation(Milli(0)));
        let [r, g, b, _] = pixel(&grey, 15, 0);
        assert!(r == g && g == b, "{r},{g},{b}");
        assert_eq!(
            apply(img.clone(), &PixelFilter::Saturation(Milli(1000))),
            img
        );
        // colorize(100,0,0,ff0000): red fully replaced, green and blue untouched.
        let red = Color {
            r: 255,
            g: 0,
            b: 0,
            a: 255,
        };
        let out = apply(
            img.clone(),
            &PixelFilter::Colorize {
                percent: [100, 0, 0],
                color: red,
            },
        );
        assert_eq!(pixel(&out, 5, 7), [255, 56, 128, 255]);
        // equalize spreads a narrow range over 0..=255.
        let narrow = DynamicImage::ImageRgb8(RgbImage::from_fn(4, 1, |x, _| {
            Rgb([100 + x as u8, 100, 100])
        }));
        let out = apply(narrow, &PixelFilter::Equalize);
        let reds: Vec<u8> = (0..4).map(|x| pixel(&out, x, 0)[0]).collect();
        assert_eq!(reds, [0, 85, 170, 255]);
    }

    #[test]
    fn noise_is_bounded_and_repeatable() {
        let img = DynamicImage::ImageRgb8(RgbImage::from_pixel(32, 32, Rgb([128, 128, 128])));
        let noisy = apply(
            img.clone(),
            &PixelFilter::Noise {
                amount: 20,
                seed: 7,
            },
        );
        assert_eq!(
            noisy,
            apply(
                img.clone(),
                &PixelFilter::Noise {
                    amount: 20,
                    seed: 7
                }
            )
        );
        assert_ne!(
            noisy,
            apply(
                img.clone(),
                &PixelFilter::Noise {
                    amount: 20,
                    seed: 8
                }
            )
        );
        for px in noisy.to_rgb8().pixels() {
            let [r, g, b] = px.0;
            assert!((118..138).contains(&r), "{r}");
            assert!(r == g && g == b, "one offset per pixel");
        }
    }

    #[test]
    fn convolution_and_curve_identities_change_nothing_and_their_effects_show() {
        let img = gradient(16, 16);
        let mut identity = vec![Milli(0); 9];
        identity[4] = Milli(1000);
        let same = PixelFilter::Convolution {
            kernel: identity,
            columns: 3,
            normalize: false,
        };
        assert_eq!(apply(img.clone(), &same), img);
        // A box blur of a vertical edge gives the mean at the edge.
        let edge = DynamicImage::ImageRgb8(RgbImage::from_fn(4, 3, |x, _| {
            Rgb(if x < 2 { [0, 0, 0] } else { [90, 90, 90] })
        }));
        let blur = PixelFilter::Convolution {
            kernel: vec![Milli(1000); 3],
            columns: 3,
            normalize: true,
        };
        assert_eq!(pixel(&apply(edge, &blur), 1, 1), [30, 30, 30, 255]);
        let straight = vec![(0, 0), (255, 255)];
        let curve = PixelFilter::Curve {
            all: straight.clone(),
            r: straight.clone(),
            g: vec![],
            b: vec![(0, 255), (255, 0)],
        };
        let out = apply(img.clone(), &curve);
        assert_eq!(pixel(&out, 3, 2), [24, 16, 127, 255]);
    }

    #[test]
    fn rotate_by_any_angle_grows_the_canvas_and_turns_counter_clockwise() {
        // Red on the right half: after a quarter turn counter-clockwise, red is on top.
        let img = DynamicImage::ImageRgb8(RgbImage::from_fn(40, 20, |x, _| {
            Rgb(if x >= 20 { [255, 0, 0] } else { [0, 0, 255] })
        }));
        let out = apply(img.clone(), &PixelFilter::RotateBy(89));
        assert_eq!((out.width(), out.height()), (21, 40));
        assert!(pixel(&out, 10, 5)[0] > 200 && pixel(&out, 10, 35)[2] > 200);
        let out = apply(img, &PixelFilter::RotateBy(45));
        assert_eq!((out.width(), out.height()), (42, 42));
        assert_eq!(pixel(&out, 0, 0)[3], 0, "corners are transparent");
        assert_eq!(pixel(&out, 21, 21)[3], 255);
    }

    fn gradient(w: u32, h: u32) -> DynamicImage {
        DynamicImage::ImageRgb8(RgbImage::from_fn(w, h, |x, y| {
            Rgb([(x * 8) as u8, (y * 8) as u8, 128])
        }))
    }

    fn mean(image: &DynamicImage) -> f64 {
        let b = image.to_rgb8();
        b.iter().map(|&v| f64::from(v)).sum::<f64>() / b.len() as f64
    }

    fn variance(image: &DynamicImage) -> f64 {
        let m = mean(image);
        let b = image.to_rgb8();
        b.iter().map(|&v| (f64::from(v) - m).powi(2)).sum::<f64>() / b.len() as f64
    }

    fn checkerboard() -> DynamicImage {
        DynamicImage::ImageRgb8(RgbImage::from_fn(32, 32, |x, y| {
            Rgb(if (x / 2 + y / 2) % 2 == 0 {
                [0; 3]
            } else {
                [255; 3]
            })
        }))
    }

    #[test]
    fn grayscale_equalizes_channels() {
        let out = apply(gradient(20, 20), &PixelFilter::Grayscale);
        assert!(
            out.to_rgb8()
                .pixels()
                .all(|p| p.0[0] == p.0[1] && p.0[1] == p.0[2])
        );
    }

    #[test]
    fn brightness_and_contrast() {
        let img = gradient(20, 20);
        assert!(mean(&apply(img.clone(), &PixelFilter::Brightness(50))) > mean(&img) + 50.0);
        assert!(mean(&apply(img.clone(), &PixelFilter::Brightness(-50))) < mean(&img) - 50.0);
        assert!(variance(&apply(img.clone(), &PixelFilter::Contrast(50))) > variance(&img));
        assert!(variance(&apply(img.clone(), &PixelFilter::Contrast(-50))) < variance(&img));
    }

    #[test]
    fn blur_and_sharpen_change_variance() {
        let img = checkerboard();
        let blurred = apply(
            img.clone(),
            &PixelFilter::Blur {
                radius: 3,
                sigma: None,
            },
        );
        assert!(variance(&blurred) < variance(&img) / 2.0);
        let soft = apply(
            img.clone(),
            &PixelFilter::Blur {
                radius: 1,
                sigma: None,
            },
        );
        let sharp = apply(
            soft.clone(),
            &PixelFilter::Sharpen {
                amount: Milli(2000),
                radius: Milli(1000),
                luminance_only: false,
            },
        );
        assert!(variance(&sharp) > variance(&soft));
        let luma = apply(
            soft.clone(),
            &PixelFilter::Sharpen {
                amount: Milli(2000),
                radius: Milli(1000),
                luminance_only: true,
            },
        );
        assert!(variance(&luma) > variance(&soft));
        assert_eq!(
            apply(
                img.clone(),
                &PixelFilter::Blur {
                    radius: 0,
                    sigma: None
                }
            ),
            img
        );
    }

    #[test]
    fn rotate_is_counter_clockwise() {
        // Red top row: after a 90° counter-clockwise turn it is the left column.
        let img = DynamicImage::ImageRgb8(RgbImage::from_fn(30, 20, |_, y| {
            Rgb(if y == 0 { [255, 0, 0] } else { [0, 0, 255] })
        }));
        let out = apply(img, &PixelFilter::Rotate(Rotation::R90)).to_rgb8();
        assert_eq!(out.dimensions(), (20, 30));
        assert_eq!(out.get_pixel(0, 15).0, [255, 0, 0]);
        assert_eq!(out.get_pixel(19, 15).0, [0, 0, 255]);
    }

    #[test]
    fn flips() {
        let out = flip(gradient(10, 10), true, true).to_rgb8();
        assert_eq!(out.get_pixel(0, 0).0, [72, 72, 128]);
    }

    #[test]
    fn round_corners_paint_or_clear_the_corners() {
        let img = DynamicImage::ImageRgb8(RgbImage::from_pixel(40, 40, Rgb([0, 0, 255])));
        let filter = PixelFilter::RoundCorner {
            rx: 10,
            ry: 10,
            color: Color::WHITE,
            transparent: false,
        };
        let out = apply(img.clone(), &filter).to_rgb8();
        assert_eq!(out.get_pixel(0, 0).0, [255, 255, 255]);
        assert_eq!(out.get_pixel(39, 39).0, [255, 255, 255]);
        assert_eq!(out.get_pixel(20, 0).0, [0, 0, 255]);
        assert_eq!(out.get_pixel(5, 5).0, [0, 0, 255]);
        let filter = PixelFilter::RoundCorner {
            rx: 10,
            ry: 10,
            color: Color::WHITE,
            transparent: true,
        };
        let out = apply(img, &filter).to_rgba8();
        assert_eq!(out.get_pixel(0, 39).0[3], 0);
        assert_eq!(out.get_pixel(20, 20).0[3], 255);
    }

    #[test]
    fn trim_finds_the_content() {
        let img = RgbImage::from_fn(50, 40, |x, y| {
            let inside = (10..40).contains(&x) && (10..30).contains(&y);
            Rgb(if inside {
                [200, 30, 30]
            } else {
                [255, 255, 255]
            })
        });
        let img = DynamicImage::ImageRgb8(img);
        let tl = Trim {
            corner: TrimCorner::TopLeft,
            tolerance: 0,
        };
        assert_eq!(
            trim_box(&img, tl),
            Some(Rect {
                left: 10,
                top: 10,
                right: 40,
                bottom: 30
            })
        );
        let br = Trim {
            corner: TrimCorner::BottomRight,
            tolerance: 10,
        };
        assert_eq!(
            trim_box(&img, br),
            Some(Rect {
                left: 10,
                top: 10,
                right: 40,
                bottom: 30
            })
        );
        // A tolerance wider than the colour difference swallows everything: left alone.
        assert_eq!(
            trim_box(
                &img,
                Trim {
                    corner: TrimCorner::TopLeft,
                    tolerance: 442
                }
            ),
            None
        );
        let flat = DynamicImage::ImageRgb8(RgbImage::from_pixel(10, 10, Rgb([7, 7, 7])));
        assert_eq!(trim_box(&flat, tl), None);
    }

    #[test]
    fn pad_centres_on_the_fill() {
        let img = DynamicImage::ImageRgb8(RgbImage::from_pixel(10, 20, Rgb([0, 0, 255])));
        let red = Color {
            r: 255,
            g: 0,
            b: 0,
            a: 255,
        };
        let out = pad(img.clone(), Size::new(30, 20), Fill::Color(red), false).unwrap();
        let rgb = out.as_rgb8().expect("opaque fill stays RGB");
        assert_eq!(rgb.get_pixel(0, 0).0, [255, 0, 0]);
        assert_eq!(rgb.get_pixel(15, 10).0, [0, 0, 255]);
        let out = pad(img.clone(), Size::new(30, 20), Fill::Transparent, false)
            .unwrap()
            .to_rgba8();
        assert_eq!(out.get_pixel(0, 0).0[3], 0);
        assert_eq!(out.get_pixel(15, 10).0, [0, 0, 255, 255]);
        let framed = RgbImage::from_fn(10, 20, |x, _| {
            Rgb(if x == 0 || x == 9 {
                [0, 200, 0]
            } else {
                [9, 9, 9]
            })
        });
        let out = pad(
            DynamicImage::ImageRgb8(framed),
            Size::new(30, 20),
            Fill::Auto,
            false,
        )
        .unwrap()
        .to_rgb8();
        // The mean of the whole image, truncated: 2 columns of 10 green.
        assert_eq!(out.get_pixel(0, 0).0, [7, 47, 7]);
        let out = pad(gradient(10, 20), Size::new(30, 20), Fill::Blur, false).unwrap();
        assert_eq!((out.width(), out.height()), (30, 20));
    }

    #[test]
    fn flatten_uses_the_background() {
        let img = RgbaImage::from_fn(2, 1, |x, _| {
            Rgba(if x == 0 {
                [255, 0, 0, 0]
            } else {
                [0, 0, 255, 255]
            })
        });
        let out = flatten(DynamicImage::ImageRgba8(img), Color::WHITE).to_rgb8();
        assert_eq!(out.get_pixel(0, 0).0, [255, 255, 255]);
        assert_eq!(out.get_pixel(1, 0).0, [0, 0, 255]);
    }

    /// A 12x12 nine-patch: the interior (1..=10) is a red ring three pixels wide round a
    /// transparent hole; the top row and left column mark 5..=6 stretchy; the bottom row and
    /// right column mark 3..=8, a padding of 2 on every side.
    fn nine_patch() -> RgbaImage {
        RgbaImage::from_fn(12, 12, |x, y| {
            let black = Rgba([0, 0, 0, 255]);
            let marked = |v: u32, lo: u32, hi: u32| (lo..=hi).contains(&v);
            match (x, y) {
                (_, 0) if marked(x, 5, 6) => black,
                (0, _) if marked(y, 5, 6) => black,
                (_, 11) if marked(x, 3, 8) => black,
                (11, _) if marked(y, 3, 8) => black,
                (0 | 11, _) | (_, 0 | 11) => Rgba([0, 0, 0, 0]),
                _ if !(4..=7).contains(&x) || !(4..=7).contains(&y) => Rgba([255, 0, 0, 255]),
                _ => Rgba([0, 0, 0, 0]),
            }
        })
    }

    #[test]
    fn frame_pads_and_stretches_the_nine_patch() {
        let img = DynamicImage::ImageRgba8(RgbaImage::from_fn(20, 10, |x, _| {
            // A transparent column shows the white canvas under the image.
            Rgba(if x == 10 {
                [0, 0, 0, 0]
            } else {
                [0, 200, 0, 255]
            })
        }));
        let out = frame(img.clone(), &nine_patch(), 100).unwrap();
        let rgb = out.as_rgb8().expect("a framed image is opaque");
        // Grown by the padding: 2 on each side.
        assert_eq!(rgb.dimensions(), (24, 14));
        let red = [255, 0, 0];
        // The fixed corners at their size (4x4: a ring of 3, then the hole).
        for (x, y) in [(0, 0), (2, 2), (23, 0), (22, 1), (0, 13), (23, 13)] {
            assert_eq!(rgb.get_pixel(x, y).0, red, "corner pixel ({x},{y})");
        }
        // The stretchy middle cells: 2 source columns fill 24 - 8 = 16 target columns;
        // the ring runs along every side, the hole shows the picture.
        assert_eq!(rgb.get_pixel(12, 1).0, red);
        assert_eq!(rgb.get_pixel(1, 7).0, red);
        assert_eq!(rgb.get_pixel(6, 7).0, [0, 200, 0]);
        // The transparent column lies on white, never black.
        assert_eq!(rgb.get_pixel(12, 7).0, [255, 255, 255]);
        // The padding counts against the output limit.
        assert!(matches!(
            frame(img, &nine_patch(), 23),
            Err(ImagingError::OutputTooLarge {
                width: 24,
                height: 14,
                limit: 23
            })
        ));
    }
}
