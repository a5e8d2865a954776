//! The canonical printer: a recipe back to its one canonical path (the variant cache
//! key), the inverse of `parse` (`parse(canonical(..))` gives the same recipe back).

use super::*;

/// The canonical path of a request: no leading `/`, no signature, defaults omitted, settings
/// filters in a fixed order then pixel filters in URL order, and the key percent-encoded
/// minimally (plus one escaped character when its first segment would read as an option),
/// so that `parse(canonical(..))` gives back the same recipe, meta flag and key.
pub fn canonical(recipe: &Recipe, meta: bool, key: &ObjectKey) -> String {
    let mut parts: Vec<String> = Vec::new();
    if meta {
        parts.push("meta".into());
    }
    parts.extend(recipe.trim.map(print_trim));
    parts.extend(recipe.crop.map(print_rect));
    parts.extend(fit_keyword(recipe.fit).map(String::from));
    parts.extend(print_size(recipe));
    parts.extend(halign_keyword(recipe.halign).map(String::from));
    parts.extend(valign_keyword(recipe.valign).map(String::from));
    if recipe.smart {
        parts.push("smart".into());
    }
    parts.extend(print_filters(&recipe.filters));
    parts.push(encode_key(key));
    parts.join("/")
}

fn print_trim(trim: Trim) -> String {
    let corner = match trim.corner {
        TrimCorner::TopLeft => "",
        TrimCorner::BottomRight => ":bottom-right",
    };
    match trim.tolerance {
        0 => format!("trim{corner}"),
        tolerance => format!("trim{corner}:{tolerance}"),
    }
}

fn print_rect(rect: Rect) -> String {
    format!("{}x{}:{}x{}", rect.left, rect.top, rect.right, rect.bottom)
}

fn fit_keyword(fit: Fit) -> Option<&'static str> {
    match fit {
        Fit::Crop => None,
        Fit::FitIn => Some("fit-in"),
        Fit::FullFitIn => Some("full-fit-in"),
        Fit::AdaptiveFitIn => Some("adaptive-fit-in"),
        Fit::AdaptiveFullFitIn => Some("adaptive-full-fit-in"),
    }
}

fn print_size(recipe: &Recipe) -> Option<String> {
    let omitted =
        recipe.width == Dim::Auto && recipe.height == Dim::Auto && !recipe.flip_h && !recipe.flip_v;
    if omitted {
        return None;
    }
    let dim = |dim: Dim| match dim {
        Dim::Auto => String::new(),
        Dim::Orig => "orig".into(),
        Dim::Px(n) => n.to_string(),
    };
    let flip = |flipped: bool| if flipped { "-" } else { "" };
    Some(format!(
        "{}{}x{}{}",
        flip(recipe.flip_h),
        dim(recipe.width),
        flip(recipe.flip_v),
        dim(recipe.height)
    ))
}

fn halign_keyword(align: HAlign) -> Option<&'static str> {
    match align {
        HAlign::Left => Some("left"),
        HAlign::Center => None,
        HAlign::Right => Some("right"),
    }
}

fn valign_keyword(align: VAlign) -> Option<&'static str> {
    match align {
        VAlign::Top => Some("top"),
        VAlign::Middle => None,
        VAlign::Bottom => Some("bottom"),
    }
}

fn print_filters(filters: &Filters) -> Option<String> {
    let mut calls: Vec<String> = Vec::new();
    calls.extend(filters.quality.map(|q| format!("quality({q})")));
    calls.extend(filters.format.map(|f| format!("format({})", f.name())));
    calls.extend(filters.fill.map(|fill| {
        let through = if filters.fill_transparent {
            ",true"
        } else {
            ""
        };
        format!("fill({}{through})", print_fill(fill))
    }));
    calls.extend(filters.background.map(|b| match b {
        Background::Color(c) => format!("background_color({})", print_color(c)),
        Background::Auto => "background_color(auto)".to_owned(),
    }));
    match filters.upscale {
        Upscale::Default => {}
        Upscale::Never => calls.push("no_upscale()".into()),
        Upscale::Allow => calls.push("upscale()".into()),
    }
    if filters.strip_exif {
        calls.push("strip_exif()".into());
    }
    if filters.strip_icc {
        calls.push("strip_icc()".into());
    }
    if filters.stretch {
        calls.push("stretch()".into());
    }
    calls.extend(filters.max_bytes.map(|n| format!("max_bytes({n})")));
    calls.extend(filters.proportion.map(|p| format!("proportion({p})")));
    calls.extend(
        filters
            .focal
            .iter()
            .map(|r| format!("focal({})", print_rect(*r))),
    );
    calls.extend(filters.max_age.map(|s| format!("max_age({s})")));
    calls.extend(filters.dpr.map(|dpr| match dpr {
        Dpr::Hints => "dpr()".to_owned(),
        Dpr::Fixed(ratio) => format!("dpr({ratio})"),
    }));
    calls.extend(filters.pixel.iter().map(print_pixel_filter));
    (!calls.is_empty()).then(|| format!("filters:{}", calls.join(":")))
}

fn print_fill(fill: Fill) -> String {
    match fill {
        Fill::Color(color) => print_color(color),
        Fill::Transparent => "transparent".into(),
        Fill::Auto => "auto".into(),
        Fill::Blur => "blur".into(),
    }
}

fn print_color(c: Color) -> String {
    match c.a {
        255 => format!("{:02x}{:02x}{:02x}", c.r, c.g, c.b),
        a => format!("{:02x}{:02x}{:02x}{a:02x}", c.r, c.g, c.b),
    }
}

fn print_pixel_filter(filter: &PixelFilter) -> String {
    match filter {
        PixelFilter::Blur {
            radius,
            sigma: None,
        } => format!("blur({radius})"),
        PixelFilter::Blur {
            radius,
            sigma: Some(sigma),
        } => format!("blur({radius},{sigma})"),
        PixelFilter::Sharpen {
            amount,
            radius,
            luminance_only,
        } => {
            format!("sharpen({amount},{radius},{luminance_only})")
        }
        PixelFilter::Grayscale => "grayscale()".into(),
        PixelFilter::Brightness(v) => format!("brightness({v})"),
        PixelFilter::Contrast(v) => format!("contrast({v})"),
        PixelFilter::Rotate(Rotation::R90) => "rotate(90)".into(),
        PixelFilter::Rotate(Rotation::R180) => "rotate(180)".into(),
        PixelFilter::Rotate(Rotation::R270) => "rotate(270)".into(),
        PixelFilter::RotateBy(angle) => format!("rotate({angle})"),
        PixelFilter::Rgb { r, g, b } => format!("rgb({r},{g},{b})"),
        PixelFilter::Saturation(v) => format!("saturation({v})"),
        PixelFilter::Equalize => "equalize()".into(),
        PixelFilter::Noise { amount, seed: 0 } => format!("noise({amount})"),
        PixelFilter::Noise { amount, seed } => format!("noise({amount},{seed})"),
        PixelFilter::Colorize { percent, color } => format!(
            "colorize({},{},{},{:02x}{:02x}{:02x})",
            percent[0], percent[1], percent[2], color.r, color.g, color.b
        ),
        PixelFilter::Convolution {
            kernel,
            columns,
            normalize,
        } => {
            let items: Vec<String> = kernel.iter().map(Milli::to_string).collect();
            format!("convolution({},{columns},{normalize})", items.join(";"))
        }
        PixelFilter::Curve { all, r, g, b } => {
            let print = |points: &CurvePoints| {
                let pairs: Vec<String> = points.iter().map(|(x, y)| format!("({x},{y})")).collect();
                format!("[{}]", pairs.join(","))
            };
            format!(
                "curve({},{},{},{})",
                print(all),
                print(r),
                print(g),
                print(b)
            )
        }
        PixelFilter::RoundCorner {
            rx,
            ry,
            color,
            transparent,
        } => {
            let radii = if rx == ry {
                rx.to_string()
            } else {
                format!("{rx}|{ry}")
            };
            let tail = if *transparent { ",true" } else { "" };
            format!(
                "round_corner({radii},{},{},{}{tail})",
                color.r, color.g, color.b
            )
        }
        PixelFilter::Frame { key } => format!("frame({})", utf8_percent_encode(key, KEY_ESCAPES)),
        PixelFilter::Watermark(w) => {
            let place = |p: Place| match p {
                Place::Px { offset, from_end } => {
                    format!("{}{offset}", if from_end { "-" } else { "" })
                }
                Place::Percent { percent, from_end } => {
                    format!("{}{percent}p", if from_end { "-" } else { "" })
                }
                Place::Center => "center".into(),
                Place::Repeat => "repeat".into(),
            };
            let ratio = |r: Option<u16>| r.map_or("none".to_owned(), |r| r.to_string());
            let key = utf8_percent_encode(&w.key, KEY_ESCAPES);
            let (x, y, alpha) = (place(w.x), place(w.y), w.alpha);
            match (w.width_ratio, w.height_ratio) {
                (None, None) => format!("watermark({key},{x},{y},{alpha})"),
                (wr, hr) => format!(
                    "watermark({key},{x},{y},{alpha},{},{})",
                    ratio(wr),
                    ratio(hr)
                ),
            }
        }
    }
}

/// Characters that cannot appear raw in a URL path, plus `%` itself; everything non-ASCII is
/// encoded too. `/` stays raw: keys may contain it.
const KEY_ESCAPES: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'`')
    .add(b'{')
    .add(b'}');

fn encode_key(key: &ObjectKey) -> String {
    let encoded = utf8_percent_encode(key.as_str(), KEY_ESCAPES).to_string();
    let first = encoded.split('/').next().unwrap_or("");
    let reads_as_option =
        first == "unsafe" || is_signature_shaped(first) || !matches!(classify(first), Ok(None));
    match encoded.as_bytes().first() {
        // An escaped first byte (`%xx`) never matches any option, so the key stays a key.
        Some(&byte) if reads_as_option && byte.is_ascii() => {
            format!("%{byte:02X}{}", &encoded[1..])
        }
        _ => encoded,
    }
}
