//! The `filters:` segment: the filter list Thumbor defines (and ours), each call's
//! arguments checked and turned into the recipe's settings and pixel filters. Pure, like
//! the rest of the grammar; errors name the call and the expected form.

use super::*;

/// Every filter with its usage, for error messages (and the playground's filter list).
pub const FILTERS: &[(&str, &str)] = &[
    ("quality", "quality(1..=100|auto)"),
    ("format", "format(jpeg|jpg|png|webp|avif|gif)"),
    ("blur", "blur(radius 0..=150[,sigma])"),
    (
        "sharpen",
        "sharpen(amount 0..=10,radius 0..=10,luminance_only true|false)",
    ),
    ("grayscale", "grayscale()"),
    ("brightness", "brightness(-100..=100)"),
    ("contrast", "contrast(-100..=100)"),
    ("rotate", "rotate(angle in whole degrees)"),
    ("rgb", "rgb(r,g,b), each -100..=100"),
    ("saturation", "saturation(-100..=100)"),
    ("equalize", "equalize()"),
    ("noise", "noise(amount 0..=100[,seed])"),
    ("colorize", "colorize(r%,g%,b%,rrggbb), percentages 0..=100"),
    (
        "convolution",
        "convolution(m1;m2;...,columns,normalize true|false), odd sides up to 7x7",
    ),
    (
        "curve",
        "curve([(x,y),...],[(x,y),...],[(x,y),...],[(x,y),...]) for all, r, g, b",
    ),
    ("stretch", "stretch()"),
    (
        "fill",
        "fill(colour|transparent|auto|blur[,fill_transparent true|false])",
    ),
    ("background_color", "background_color(colour|auto)"),
    ("no_upscale", "no_upscale()"),
    ("upscale", "upscale()"),
    ("strip_exif", "strip_exif()"),
    ("strip_icc", "strip_icc()"),
    ("max_bytes", "max_bytes(bytes >= 1)"),
    ("proportion", "proportion(0 < p <= 1)"),
    ("focal", "focal(AxB:CxD)"),
    ("round_corner", "round_corner(a[|b],r,g,b[,transparent])"),
    ("max_age", "max_age(seconds)"),
    (
        "dpr",
        "dpr() for the browser's client hints, or dpr(ratio 1..=4); sizes are then CSS pixels",
    ),
    (
        "watermark",
        "watermark(key,x,y,alpha 0..=100[,w_ratio,h_ratio]); x and y: px, -px, Np, center or \
         repeat; ratios: percent 0..=100 or none",
    ),
    ("extract_focal", "extract_focal()"),
    ("frame", "frame(key of a nine-patch image)"),
];

/// One `name(args)` call as written (after percent-decoding).
struct Call<'a> {
    text: &'a str,
    name: &'a str,
    args: Vec<&'a str>,
}

pub(super) fn parse_filters(segment: &str, body: &str) -> Result<Filters, UrlError> {
    if segment.len() > MAX_FILTERS_SEGMENT_BYTES {
        let reason = format!(
            "the filters segment is {} bytes; at most {MAX_FILTERS_SEGMENT_BYTES}",
            segment.len()
        );
        return Err(UrlError::new(segment, reason));
    }
    let decoded = decode_percent(body, "the filters").map_err(|r| UrlError::new(segment, r))?;
    let mut filters = Filters::default();
    let mut count = 0;
    if decoded.trim().is_empty() {
        let reason = "the filter list is empty: write filters:name(args)[:name(args)...] or drop the segment";
        return Err(UrlError::new(segment, reason));
    }
    let mut rest: &str = &decoded;
    while !rest.is_empty() {
        let (call, tail) = next_call(rest)?;
        let empty = call.name.is_empty() && call.args.is_empty();
        if empty || (tail.is_empty() && rest.ends_with(':')) {
            let reason = "an empty filter (`::` or a trailing `:`) in the filter list";
            return Err(UrlError::new(segment, reason));
        }
        rest = tail;
        count += 1;
        if count > MAX_FILTERS {
            let reason = format!("too many filters; at most {MAX_FILTERS}");
            return Err(UrlError::new(segment, reason));
        }
        apply_filter(&mut filters, &call).map_err(|reason| UrlError::new(call.text, reason))?;
    }
    Ok(filters)
}

/// Splits the first call off `rest`; returns it and the text after its `:` separator.
fn next_call(rest: &str) -> Result<(Call<'_>, &str), UrlError> {
    let name_end = rest.find(['(', ':']).unwrap_or(rest.len());
    let name = rest[..name_end].trim();
    if !rest[name_end..].starts_with('(') {
        let tail = rest.get(name_end + 1..).unwrap_or("");
        return Ok((
            Call {
                text: name,
                name,
                args: Vec::new(),
            },
            tail,
        ));
    }
    let Some(close) = matching_close(rest, name_end) else {
        let reason = format!("filter `{name}` is missing its closing `)`");
        return Err(UrlError::new(rest, reason));
    };
    let text = &rest[..=close];
    let after = &rest[close + 1..];
    let tail = match after.strip_prefix(':') {
        Some(tail) => tail,
        None if after.is_empty() => after,
        None => {
            let reason = format!("expected `:` between filters after `{text}`, got `{after}`");
            return Err(UrlError::new(rest, reason));
        }
    };
    let inner = rest[name_end + 1..close].trim();
    let args = if inner.is_empty() {
        Vec::new()
    } else {
        split_args(inner)
    };
    Ok((Call { text, name, args }, tail))
}

/// The `)` that closes the `(` at `open`, counting nested brackets (`curve([(0,0)],...)`).
fn matching_close(text: &str, open: usize) -> Option<usize> {
    let mut depth = 0usize;
    for (i, b) in text.bytes().enumerate().skip(open) {
        match b {
            b'(' | b'[' => depth += 1,
            b')' | b']' => {
                depth = depth.checked_sub(1)?;
                if depth == 0 {
                    return (b == b')').then_some(i);
                }
            }
            _ => {}
        }
    }
    None
}

/// Splits arguments at the commas that are not inside brackets.
fn split_args(inner: &str) -> Vec<&str> {
    let mut args = Vec::new();
    let (mut depth, mut start) = (0i32, 0);
    for (i, b) in inner.bytes().enumerate() {
        match b {
            b'(' | b'[' => depth += 1,
            b')' | b']' => depth -= 1,
            b',' if depth == 0 => {
                args.push(inner[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    args.push(inner[start..].trim());
    args
}

fn apply_filter(filters: &mut Filters, call: &Call<'_>) -> Result<(), String> {
    match call.name {
        "grayscale" | "brightness" | "contrast" | "blur" | "sharpen" | "rotate"
        | "round_corner" | "rgb" | "saturation" | "equalize" | "noise" | "colorize"
        | "convolution" | "curve" | "watermark" | "frame" => {
            filters.pixel.extend(pixel_filter(call)?)
        }
        _ => apply_setting(filters, call)?,
    }
    Ok(())
}

/// A pixel filter call; `None` for calls that change nothing (`rotate(0)`).
fn pixel_filter(call: &Call<'_>) -> Result<Option<PixelFilter>, String> {
    let args = call.args.as_slice();
    Ok(Some(match (call.name, args) {
        ("grayscale", []) => PixelFilter::Grayscale,
        ("brightness", [v]) => PixelFilter::Brightness(percent(v, "brightness")?),
        ("contrast", [v]) => PixelFilter::Contrast(percent(v, "contrast")?),
        ("blur", [_] | [_, _]) => parse_blur(args)?,
        ("sharpen", [amount, radius, luminance_only]) => {
            parse_sharpen(amount, radius, luminance_only)?
        }
        ("round_corner", [_, _, _, _] | [_, _, _, _, _]) => parse_round_corner(args)?,
        ("rotate", [angle]) => return parse_rotate(angle),
        ("rgb", [r, g, b]) => PixelFilter::Rgb {
            r: percent(r, "rgb red")?,
            g: percent(g, "rgb green")?,
            b: percent(b, "rgb blue")?,
        },
        ("saturation", [v]) => {
            PixelFilter::Saturation(milli_in(v, "saturation", Milli(-100_000), Milli(100_000))?)
        }
        ("equalize", []) => PixelFilter::Equalize,
        ("noise", [amount, seed @ ..]) if seed.len() <= 1 => PixelFilter::Noise {
            amount: int_in(amount, "noise amount", 0, 100)? as u8,
            seed: match seed {
                [seed] => int_in(seed, "noise seed", 0, u32::MAX.into())? as u32,
                _ => 0,
            },
        },
        ("colorize", [r, g, b, color]) => PixelFilter::Colorize {
            percent: [
                int_in(r, "colorize red percentage", 0, 100)? as u8,
                int_in(g, "colorize green percentage", 0, 100)? as u8,
                int_in(b, "colorize blue percentage", 0, 100)? as u8,
            ],
            color: parse_hex6(color, "colorize colour")?,
        },
        ("convolution", [matrix, columns]) => parse_convolution(matrix, columns, "true")?,
        ("convolution", [matrix, columns, normalize]) => {
            parse_convolution(matrix, columns, normalize)?
        }
        ("frame", [key]) => PixelFilter::Frame {
            key: ObjectKey::parse(key.trim())
                .map_err(|e| format!("the frame image `{}`: {}", e.key, e.reason))?
                .as_str()
                .to_owned(),
        },
        ("watermark", [key, x, y, alpha, ratios @ ..]) if matches!(ratios.len(), 0 | 2) => {
            parse_watermark(key, x, y, alpha, ratios)?
        }
        ("curve", [all, r, g, b]) => PixelFilter::Curve {
            all: parse_curve(all, "curve (all channels)")?,
            r: parse_curve(r, "curve red")?,
            g: parse_curve(g, "curve green")?,
            b: parse_curve(b, "curve blue")?,
        },
        _ => return Err(arg_count_error(call)),
    }))
}

fn apply_setting(filters: &mut Filters, call: &Call<'_>) -> Result<(), String> {
    match (call.name, call.args.as_slice()) {
        ("quality", [q]) => {
            filters.quality = Some(q.parse::<Quality>().map_err(|e| format!("quality {e}"))?);
        }
        ("format", [format]) => filters.format = Some(parse_format(format)?),
        ("fill", [fill]) => {
            filters.fill = Some(parse_fill(fill)?);
            filters.fill_transparent = false;
        }
        ("fill", [fill, through]) => {
            filters.fill = Some(parse_fill(fill)?);
            filters.fill_transparent =
                bool_arg(through, "fill's second argument (fill transparent parts)")?;
        }
        ("background_color", [c]) if c.eq_ignore_ascii_case("auto") => {
            filters.background = Some(Background::Auto);
        }
        ("background_color", [c]) => {
            filters.background = Some(Background::Color(color_arg(c, "the colour")?));
        }
        ("no_upscale", []) => filters.upscale = Upscale::Never,
        ("stretch", []) => filters.stretch = true,
        ("upscale", []) => filters.upscale = Upscale::Allow,
        ("strip_exif", []) => filters.strip_exif = true,
        ("strip_icc", []) => filters.strip_icc = true,
        ("max_bytes", [n]) => filters.max_bytes = Some(parse_max_bytes(n)?),
        ("proportion", [p]) => filters.proportion = Some(parse_proportion(p)?),
        ("focal", [rect]) => filters.focal.push(parse_rect(rect, "focal")?),
        ("extract_focal", []) => filters.extract_focal = true,
        ("max_age", [s]) => {
            filters.max_age = Some(int_in(s, "max_age", 0, u32::MAX.into())? as u32);
        }
        ("dpr", []) => filters.dpr = Some(Dpr::Hints),
        ("dpr", [ratio]) => {
            filters.dpr = Some(Dpr::Fixed(milli_in(
                ratio,
                "dpr",
                Milli(1000),
                Milli(4000),
            )?));
        }
        (name, _) if !usage(name).is_empty() => return Err(arg_count_error(call)),
        (name, _) => return Err(unknown_filter(name)),
    }
    Ok(())
}

fn usage(name: &str) -> &'static str {
    FILTERS
        .iter()
        .find(|(known, _)| *known == name)
        .map_or("", |(_, usage)| usage)
}

fn arg_count_error(call: &Call<'_>) -> String {
    let n = call.args.len();
    let plural = if n == 1 { "" } else { "s" };
    format!(
        "`{}` takes {}, got {n} argument{plural}",
        call.name,
        usage(call.name)
    )
}

fn unknown_filter(name: &str) -> String {
    if name.is_empty() {
        return "a filter name is missing before `(`".into();
    }
    let lower = name.to_ascii_lowercase();
    if lower != name && FILTERS.iter().any(|(known, _)| *known == lower) {
        return format!("filter names are lowercase: write `{lower}`");
    }
    let known: Vec<&str> = FILTERS.iter().map(|(known, _)| *known).collect();
    format!(
        "unknown filter `{name}`; known filters: {}",
        known.join(", ")
    )
}

fn parse_format(text: &str) -> Result<Format, String> {
    Ok(match text.to_ascii_lowercase().as_str() {
        "jpeg" | "jpg" => Format::Jpeg,
        "png" => Format::Png,
        "webp" => Format::Webp,
        "avif" => Format::Avif,
        "gif" => Format::Gif,
        _ => {
            return Err(format!(
                "format must be one of jpeg, jpg, png, webp, avif, gif, got `{text}`"
            ));
        }
    })
}

fn parse_fill(text: &str) -> Result<Fill, String> {
    Ok(match text.to_ascii_lowercase().as_str() {
        "transparent" => Fill::Transparent,
        "auto" => Fill::Auto,
        "blur" => Fill::Blur,
        _ => Fill::Color(color_arg(text, "fill").map_err(|r| format!("{r}, `auto` or `blur`"))?),
    })
}

fn parse_max_bytes(text: &str) -> Result<u64, String> {
    let digits = !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit());
    match text.parse::<u64>() {
        Ok(n) if digits && n >= 1 => Ok(n),
        _ => Err(format!(
            "max_bytes must be a whole number of bytes >= 1, got `{text}`"
        )),
    }
}

fn parse_proportion(text: &str) -> Result<Milli, String> {
    match milli(text) {
        Some(p @ Milli(1..=1000)) => Ok(p),
        _ => Err(format!(
            "proportion must be a number 0 < p <= 1 with at most 3 decimals, got `{text}`"
        )),
    }
}

fn percent(text: &str, what: &str) -> Result<i8, String> {
    Ok(int_in(text, what, -100, 100)? as i8)
}

fn parse_blur(args: &[&str]) -> Result<PixelFilter, String> {
    // Thumbor caps the radius at 150 rather than refusing a larger one.
    let radius = int_in(args[0], "blur radius", 0, i64::from(u32::MAX))?.min(150) as u32;
    let sigma = match args.get(1) {
        Some(text) => Some(milli_in(text, "blur sigma", Milli(0), Milli(150_000))?),
        None => None,
    };
    // `blur(r,r)` is `blur(r)`: sigma defaults to the radius.
    let sigma = sigma.filter(|s| i64::from(s.0) != i64::from(radius) * 1000);
    Ok(PixelFilter::Blur { radius, sigma })
}

fn parse_sharpen(amount: &str, radius: &str, luminance_only: &str) -> Result<PixelFilter, String> {
    Ok(PixelFilter::Sharpen {
        amount: milli_in(amount, "sharpen amount", Milli(0), Milli(10_000))?,
        radius: milli_in(radius, "sharpen radius", Milli(0), Milli(10_000))?,
        luminance_only: bool_arg(luminance_only, "sharpen luminance_only")?,
    })
}

fn parse_rotate(text: &str) -> Result<Option<PixelFilter>, String> {
    let angle = int_in(text, "rotate angle (whole degrees)", -1_000_000, 1_000_000)?;
    Ok(match angle.rem_euclid(360) {
        0 => None,
        90 => Some(PixelFilter::Rotate(Rotation::R90)),
        180 => Some(PixelFilter::Rotate(Rotation::R180)),
        270 => Some(PixelFilter::Rotate(Rotation::R270)),
        other => Some(PixelFilter::RotateBy(other as u16)),
    })
}

/// Largest convolution kernel side: the cost is width x height x side².
const MAX_KERNEL_SIDE: usize = 7;

fn parse_convolution(matrix: &str, columns: &str, normalize: &str) -> Result<PixelFilter, String> {
    let kernel = matrix
        .split(';')
        .map(|item| {
            milli_in(
                item.trim(),
                "convolution matrix item",
                Milli(-1_000_000),
                Milli(1_000_000),
            )
        })
        .collect::<Result<Vec<Milli>, String>>()?;
    let columns = int_in(columns, "convolution columns", 1, MAX_KERNEL_SIDE as i64)? as usize;
    let rows = kernel.len() / columns;
    if !kernel.len().is_multiple_of(columns)
        || columns.is_multiple_of(2)
        || rows.is_multiple_of(2)
        || rows > MAX_KERNEL_SIDE
    {
        return Err(format!(
            "convolution needs an odd number of columns and rows, at most \
             {MAX_KERNEL_SIDE}x{MAX_KERNEL_SIDE}: {} items do not make rows of {columns}",
            kernel.len()
        ));
    }
    Ok(PixelFilter::Convolution {
        kernel,
        columns: columns as u8,
        normalize: bool_arg(normalize, "convolution normalize")?,
    })
}

/// `[(x,y),(x,y),...]`: 0..=255 each, x strictly ascending; empty means unchanged.
fn parse_curve(text: &str, what: &str) -> Result<Vec<(u8, u8)>, String> {
    let bad =
        || format!("{what} must be [(x,y),...] with x and y 0..=255 and x ascending, got `{text}`");
    let inner = text
        .strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .ok_or_else(bad)?
        .trim();
    if inner.is_empty() {
        return Ok(Vec::new());
    }
    let mut points: Vec<(u8, u8)> = Vec::new();
    for pair in inner.split("),") {
        let pair = pair.trim().trim_start_matches('(').trim_end_matches(')');
        let (x, y) = pair.split_once(',').ok_or_else(bad)?;
        let byte = |v: &str| int(v.trim()).and_then(|n| u8::try_from(n).ok());
        let (x, y) = (byte(x).ok_or_else(bad)?, byte(y).ok_or_else(bad)?);
        if points.last().is_some_and(|&(last, _)| last >= x) {
            return Err(bad());
        }
        points.push((x, y));
    }
    if points.len() < 2 {
        return Err(format!(
            "{what} needs no points or at least two, got `{text}`"
        ));
    }
    Ok(points)
}

/// Exactly six hex digits, as Thumbor's colorize reads its colour.
/// `watermark(key,x,y,alpha[,w_ratio,h_ratio])`, with the key already percent-decoded.
fn parse_watermark(
    key: &str,
    x: &str,
    y: &str,
    alpha: &str,
    ratios: &[&str],
) -> Result<PixelFilter, String> {
    let key = ObjectKey::parse(key.trim())
        .map_err(|e| format!("the watermark image `{}`: {}", e.key, e.reason))?;
    let place = |text: &str, axis: &str| -> Result<Place, String> {
        let text = text.trim();
        match text {
            "center" => return Ok(Place::Center),
            "repeat" => return Ok(Place::Repeat),
            _ => {}
        }
        let (from_end, magnitude) = match text.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        let bad = || {
            format!(
                "watermark {axis} `{text}`: expected pixels (10, -10), a percentage (50p, -50p), center or repeat"
            )
        };
        let (digits, percent) = match magnitude.strip_suffix('p') {
            Some(digits) => (digits, true),
            None => (magnitude, false),
        };
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let value: u32 = digits.parse().map_err(|_| bad())?;
        if percent {
            if value > 100 {
                return Err(format!(
                    "watermark {axis} `{text}`: a percentage is 0..=100"
                ));
            }
            Ok(Place::Percent {
                percent: value,
                from_end,
            })
        } else {
            if value > 65_535 {
                return Err(format!("watermark {axis} `{text}`: at most 65535 pixels"));
            }
            Ok(Place::Px {
                offset: value,
                from_end,
            })
        }
    };
    let ratio = |text: &str, what: &str| -> Result<Option<u16>, String> {
        match text.trim() {
            "none" => Ok(None),
            n => match int_in(n, what, 0, 100)? {
                0 => Ok(None),
                r => Ok(Some(r as u16)),
            },
        }
    };
    let (width_ratio, height_ratio) = match ratios {
        [w, h] => (
            ratio(w, "watermark width ratio")?,
            ratio(h, "watermark height ratio")?,
        ),
        _ => (None, None),
    };
    Ok(PixelFilter::Watermark(Box::new(Watermark {
        key: key.as_str().to_owned(),
        x: place(x, "x")?,
        y: place(y, "y")?,
        alpha: int_in(alpha, "watermark alpha", 0, 100)? as u8,
        width_ratio,
        height_ratio,
    })))
}

fn parse_hex6(text: &str, what: &str) -> Result<Color, String> {
    match parse_color(text) {
        Some(color) if text.len() == 6 && text.bytes().all(|b| b.is_ascii_hexdigit()) => Ok(color),
        _ => Err(format!(
            "{what} must be six hex digits (rrggbb), got `{text}`"
        )),
    }
}

fn parse_round_corner(args: &[&str]) -> Result<PixelFilter, String> {
    let (a, b) = args[0].split_once('|').unwrap_or((args[0], args[0]));
    let radius = |text: &str, what| int_in(text.trim(), what, 0, MAX_PIXELS.into());
    let channel = |i: usize, what| int_in(args[i], what, 0, 255).map(|v| v as u8);
    let color = Color {
        r: channel(1, "red")?,
        g: channel(2, "green")?,
        b: channel(3, "blue")?,
        a: 255,
    };
    // Thumbor writes the flag as a boolean; the word itself is accepted too.
    let transparent = match args.get(4) {
        Some(text) if text.trim().eq_ignore_ascii_case("transparent") => true,
        Some(text) => bool_arg(text, "round_corner transparent")?,
        None => false,
    };
    Ok(PixelFilter::RoundCorner {
        rx: radius(a, "round_corner radius a")? as u32,
        ry: radius(b, "round_corner radius b")? as u32,
        color,
        transparent,
    })
}
