//! Device pixel ratio and client hints. `filters:dpr(2)` multiplies the URL's sizes by a
//! fixed ratio; `filters:dpr()` takes the ratio, and for a URL without a size the width,
//! from the browser's client hints when `client_hints` is on. Both are resolved here into
//! sizes in device pixels before the variant cache key is made, so `300x200/filters:dpr(2)`
//! and `600x400` share one cached variant. Pure: no I/O.
//!
//! Hint values are rounded up to steps (ratios 1, 1.5, 2, 3, 4; widths to 16 px below
//! 128 and to an eighth of the power of two below them above, at most 12.5% more), so a
//! few dozen variants at most exist per URL, whatever devices ask. The headers a response
//! may depend on are given back for `Vary`: every hint the URL's form reads, present in
//! this request or not, so that a shared cache never answers one browser with a variant
//! made for another's hints.

use http::HeaderMap;

use crate::imaging::recipe::{Dim, Dpr, Milli, Recipe};

/// The hints the edge asks browsers for (`Accept-CH`).
pub const ACCEPT_CH: &str = "Sec-CH-DPR, Sec-CH-Width, Sec-CH-Viewport-Width";

const DPR: &str = "Sec-CH-DPR";
const WIDTH: &str = "Sec-CH-Width";
const VIEWPORT_WIDTH: &str = "Sec-CH-Viewport-Width";

/// The device pixel ratios hints are rounded up to.
const DPR_STEPS: [Milli; 5] = [
    Milli(1000),
    Milli(1500),
    Milli(2000),
    Milli(3000),
    Milli(4000),
];

/// A recipe with its `dpr()` resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// `dpr` cleared, sizes in device pixels.
    pub recipe: Recipe,
    /// The ratio applied (1 when there was none).
    pub dpr: Milli,
    /// The request headers this answer depended on, for `Vary` (empty unless the URL
    /// asked for hints and the server reads them).
    pub vary: &'static [&'static str],
}

/// Resolves `recipe`'s `dpr` filter against the request's headers. `max_side` caps sizes
/// that hints made (sizes the URL made are checked against it as usual, a 400 when over).
pub fn resolve(
    recipe: &Recipe,
    headers: &HeaderMap,
    client_hints: bool,
    max_side: u32,
) -> Resolved {
    let mut resolved = recipe.clone();
    let Some(dpr) = resolved.filters.dpr.take() else {
        return Resolved {
            recipe: resolved,
            dpr: Milli(1000),
            vary: &[],
        };
    };
    match dpr {
        Dpr::Fixed(ratio) => {
            scale(&mut resolved, ratio, u32::MAX);
            Resolved {
                recipe: resolved,
                dpr: ratio,
                vary: &[],
            }
        }
        Dpr::Hints if !client_hints => Resolved {
            recipe: resolved,
            dpr: Milli(1000),
            vary: &[],
        },
        Dpr::Hints => {
            let ratio = header_number(headers, DPR).map_or(Milli(1000), dpr_step);
            if resolved.width == Dim::Auto && resolved.height == Dim::Auto {
                let width = header_width(headers, WIDTH).or_else(|| {
                    let css = header_width(headers, VIEWPORT_WIDTH)?;
                    Some((u64::from(css) * ratio.0 as u64).div_ceil(1000) as u32)
                });
                if let Some(width) = width {
                    resolved.width = Dim::Px(width_step(width).min(max_side));
                }
                return Resolved {
                    recipe: resolved,
                    dpr: ratio,
                    vary: &[DPR, WIDTH, VIEWPORT_WIDTH],
                };
            }
            scale(&mut resolved, ratio, max_side);
            Resolved {
                recipe: resolved,
                dpr: ratio,
                vary: &[DPR],
            }
        }
    }
}

/// Multiplies the pixel sizes by `ratio`, keeping the larger side within `max_side`
/// (the ratio shrinks to fit; sizes already over it are left to the usual check).
fn scale(recipe: &mut Recipe, ratio: Milli, max_side: u32) {
    let px = |d: Dim| match d {
        Dim::Px(n) => n,
        Dim::Auto | Dim::Orig => 0,
    };
    let larger = u64::from(px(recipe.width).max(px(recipe.height)));
    let ratio = u64::try_from(ratio.0).unwrap_or(1000);
    // The factor as a fraction: the ratio, or what brings the larger side to `max_side`
    // (1 when it is there already: the usual check answers for the URL's own size).
    let max_side = u64::from(max_side);
    let (num, den) = if larger == 0 || larger * ratio <= max_side * 1000 {
        (ratio, 1000)
    } else if larger >= max_side {
        (1, 1)
    } else {
        (max_side, larger)
    };
    let times = |d: Dim| match d {
        Dim::Px(n) => {
            Dim::Px(u32::try_from((u64::from(n) * num + den / 2) / den).unwrap_or(u32::MAX))
        }
        other => other,
    };
    recipe.width = times(recipe.width);
    recipe.height = times(recipe.height);
}

/// The smallest ratio step at or above `value` (clamped to 1..=4).
fn dpr_step(value: Milli) -> Milli {
    DPR_STEPS
        .into_iter()
        .find(|step| *step >= value)
        .unwrap_or(DPR_STEPS[DPR_STEPS.len() - 1])
}

/// `width` rounded up to its step: 16 px up to 128, then an eighth of the power of two at
/// or below it (32 px from 256, 64 from 512, 128 from 1024, ...).
pub fn width_step(width: u32) -> u32 {
    let width = width.max(1);
    let step = if width <= 128 {
        16
    } else {
        (1u32 << (31 - width.leading_zeros())) / 8
    };
    width.div_ceil(step).saturating_mul(step)
}

/// A hint header as a positive decimal (`2`, `2.625`), in thousandths; `None` when absent
/// or not such a number (a malformed hint is ignored, never an error: browsers send them).
fn header_number(headers: &HeaderMap, name: &str) -> Option<Milli> {
    let text = last(headers, name)?;
    let value: f64 = text.parse().ok()?;
    (value.is_finite() && value > 0.0).then(|| Milli((value.min(100.0) * 1000.0).round() as i32))
}

/// A hint's value; when a header is repeated the last one counts (as browsers specify).
fn last<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    Some(
        headers
            .get_all(name)
            .iter()
            .next_back()?
            .to_str()
            .ok()?
            .trim(),
    )
}

/// A width hint: a whole number of pixels 1..=100000.
fn header_width(headers: &HeaderMap, name: &str) -> Option<u32> {
    let text = last(headers, name)?;
    let digits = !text.is_empty() && text.len() <= 6 && text.bytes().all(|b| b.is_ascii_digit());
    let width: u32 = text.parse().ok().filter(|_| digits)?;
    (1..=100_000).contains(&width).then_some(width)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::edge::url;
    use http::HeaderValue;

    fn resolve_url(
        path: &str,
        hints: &[(&str, &str)],
        on: bool,
    ) -> (String, Milli, &'static [&'static str]) {
        let parsed = url::parse(path).unwrap();
        let mut headers = HeaderMap::new();
        for (name, value) in hints {
            headers.insert(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        let r = resolve(&parsed.recipe, &headers, on, 4000);
        (url::canonical(&r.recipe, false, &parsed.key), r.dpr, r.vary)
    }

    #[test]
    fn width_steps_overshoot_by_at_most_an_eighth() {
        let table = [
            (1, 16),
            (100, 112),
            (128, 128),
            (129, 144),
            (300, 320),
            (320, 320),
            (1000, 1024),
            (1300, 1408),
            (1920, 1920),
            (4000, 4096),
        ];
        for (width, step) in table {
            assert_eq!(width_step(width), step, "{width}");
        }
        for width in 1..=20_000 {
            let step = width_step(width);
            let most = if width <= 128 {
                width + 15
            } else {
                width + width / 8
            };
            assert!(step >= width && step <= most, "{width} -> {step}");
        }
        let distinct: std::collections::BTreeSet<u32> = (1..=4096).map(width_step).collect();
        assert!(distinct.len() <= 48, "{}", distinct.len());
    }

    #[test]
    fn a_fixed_ratio_multiplies_the_size_and_reads_no_header() {
        let hints = [("Sec-CH-DPR", "3")];
        assert_eq!(
            resolve_url("300x200/filters:dpr(2)/a.jpg", &hints, true),
            ("600x400/a.jpg".into(), Milli(2000), &[][..])
        );
        assert_eq!(
            resolve_url("fit-in/300x0/filters:dpr(1.5)/a.jpg", &[], true).0,
            "fit-in/450x/a.jpg"
        );
        assert_eq!(
            resolve_url("0x0/filters:dpr(2)/a.jpg", &[], true).0,
            "a.jpg"
        );
    }

    #[test]
    fn hints_decide_only_when_the_server_reads_them() {
        let hints = [("Sec-CH-DPR", "2"), ("Sec-CH-Width", "900")];
        assert_eq!(
            resolve_url("300x200/filters:dpr()/a.jpg", &hints, false),
            ("300x200/a.jpg".into(), Milli(1000), &[][..])
        );
        assert_eq!(
            resolve_url("300x200/filters:dpr()/a.jpg", &hints, true),
            ("600x400/a.jpg".into(), Milli(2000), &["Sec-CH-DPR"][..])
        );
        assert_eq!(
            resolve_url("300x200/filters:dpr()/a.jpg", &[], true),
            ("300x200/a.jpg".into(), Milli(1000), &["Sec-CH-DPR"][..])
        );
    }

    #[test]
    fn a_url_without_size_takes_its_width_from_the_hints() {
        let all = &["Sec-CH-DPR", "Sec-CH-Width", "Sec-CH-Viewport-Width"][..];
        // Sec-CH-Width is in device pixels already; rounded up to its step.
        assert_eq!(
            resolve_url(
                "fit-in/0x0/filters:dpr()/a.jpg",
                &[("Sec-CH-DPR", "2"), ("Sec-CH-Width", "900")],
                true
            ),
            ("fit-in/960x/a.jpg".into(), Milli(2000), all)
        );
        // Without it, the viewport (CSS pixels) times the ratio.
        assert_eq!(
            resolve_url(
                "0x0/filters:dpr()/a.jpg",
                &[("Sec-CH-DPR", "2.625"), ("Sec-CH-Viewport-Width", "412")],
                true
            )
            .0,
            "1280x/a.jpg"
        );
        // No hint at all: the original size, and still Vary on all three.
        assert_eq!(
            resolve_url("0x0/filters:dpr()/a.jpg", &[], true),
            ("a.jpg".into(), Milli(1000), all)
        );
        // Capped at the server's largest side.
        assert_eq!(
            resolve_url(
                "0x0/filters:dpr()/a.jpg",
                &[("Sec-CH-Width", "99999")],
                true
            )
            .0,
            "4000x/a.jpg"
        );
    }

    #[test]
    fn hostile_or_odd_hint_values_are_ignored_or_clamped() {
        for (value, ratio) in [
            ("1", 1000),
            ("1.25", 1500),
            ("2.625", 3000),
            ("9", 4000),
            ("0.5", 1000),
            ("-2", 1000),
            ("NaN", 1000),
            ("inf", 1000),
            ("2x", 1000),
            ("", 1000),
        ] {
            assert_eq!(
                resolve_url("100x0/filters:dpr()/a.jpg", &[("Sec-CH-DPR", value)], true).1,
                Milli(ratio),
                "{value}"
            );
        }
        for value in ["0", "-5", "1e3", "100001", "12345678", "9x", " "] {
            assert_eq!(
                resolve_url("0x0/filters:dpr()/a.jpg", &[("Sec-CH-Width", value)], true).0,
                "a.jpg",
                "{value}"
            );
        }
        // A repeated header: the last one counts.
        let parsed = url::parse("100x0/filters:dpr()/a.jpg").unwrap();
        let mut headers = HeaderMap::new();
        headers.append("sec-ch-dpr", HeaderValue::from_static("3"));
        headers.append("sec-ch-dpr", HeaderValue::from_static("2"));
        assert_eq!(
            resolve(&parsed.recipe, &headers, true, 4000).dpr,
            Milli(2000)
        );
        // Hints never push a URL's own size over the largest side: the ratio shrinks.
        assert_eq!(
            resolve_url(
                "3000x1500/filters:dpr()/a.jpg",
                &[("Sec-CH-DPR", "2")],
                true
            )
            .0,
            "4000x2000/a.jpg"
        );
    }
}
