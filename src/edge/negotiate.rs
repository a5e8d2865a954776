//! Output-format negotiation: the `format()` filter wins; otherwise the client's `Accept`
//! header may allow WebP (and AVIF, where the operator enabled it), and the response must
//! then say `Vary: Accept`. Pure: no I/O.

use http::HeaderValue;

use crate::imaging::recipe::Recipe;
use crate::imaging::{Format, FormatChoice};

/// What the operator allows the edge to pick on its own.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    pub auto_webp: bool,
    pub auto_avif: bool,
}

/// The outcome of negotiation for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Negotiated {
    pub choice: FormatChoice,
    /// Whether the answer depended on `Accept` (then responses carry `Vary: Accept`).
    pub vary: bool,
}

impl Negotiated {
    /// A short tag naming the choice, part of the variant cache key.
    pub fn cache_tag(&self) -> String {
        match self.choice {
            FormatChoice::Explicit(f) => format!("f={}", f.name()),
            FormatChoice::Auto { webp, avif } => {
                format!(
                    "a={}{}",
                    if webp { "w" } else { "" },
                    if avif { "a" } else { "" }
                )
            }
        }
    }
}

pub fn negotiate(recipe: &Recipe, accept: Option<&HeaderValue>, policy: Policy) -> Negotiated {
    if let Some(format) = recipe.filters.format {
        return Negotiated {
            choice: FormatChoice::Explicit(format),
            vary: false,
        };
    }
    let accepted = accept.and_then(|v| v.to_str().ok()).unwrap_or("");
    Negotiated {
        choice: FormatChoice::Auto {
            webp: policy.auto_webp && accepts(accepted, Format::Webp),
            avif: policy.auto_avif && accepts(accepted, Format::Avif),
        },
        vary: true,
    }
}

/// Whether `accept` lists the format's media type with a non-zero quality. Wildcards
/// (`*/*`, `image/*`) do not count: clients that say only that may not decode WebP.
fn accepts(accept: &str, format: Format) -> bool {
    accept.split(',').any(|range| {
        let mut parts = range.split(';').map(str::trim);
        let media = parts.next().unwrap_or("");
        if !media.eq_ignore_ascii_case(format.mime()) {
            return false;
        }
        let zero_q = parts.any(|p| {
            p.strip_prefix("q=")
                .and_then(|q| q.trim().parse::<f32>().ok())
                .is_some_and(|q| q <= 0.0)
        });
        !zero_q
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOTH: Policy = Policy {
        auto_webp: true,
        auto_avif: true,
    };
    const WEBP_ONLY: Policy = Policy {
        auto_webp: true,
        auto_avif: false,
    };

    fn check(accept: &str, policy: Policy, webp: bool, avif: bool) {
        let r = Recipe::default();
        let n = negotiate(&r, Some(&HeaderValue::from_str(accept).unwrap()), policy);
        assert_eq!(n.choice, FormatChoice::Auto { webp, avif }, "{accept}");
        assert!(n.vary);
    }

    #[test]
    fn accept_table() {
        let chrome = "image/avif,image/webp,image/apng,image/svg+xml,image/*,*/*;q=0.8";
        check(chrome, BOTH, true, true);
        check(chrome, WEBP_ONLY, true, false);
        check("*/*", BOTH, false, false);
        check("image/*", BOTH, false, false);
        check("image/webp;q=0", BOTH, false, false);
        check("IMAGE/WEBP ; q=0.5", BOTH, true, false);
        check("text/html, image/webp", BOTH, true, false);
        check("", BOTH, false, false);
    }

    #[test]
    fn explicit_format_wins_and_does_not_vary() {
        let mut r = Recipe::default();
        r.filters.format = Some(Format::Png);
        let n = negotiate(&r, Some(&HeaderValue::from_static("image/webp")), BOTH);
        assert_eq!(n.choice, FormatChoice::Explicit(Format::Png));
        assert!(!n.vary);
        assert_eq!(n.cache_tag(), "f=png");
    }
}
