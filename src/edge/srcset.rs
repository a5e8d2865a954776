//! Responsive images: the `src`, `srcset` and `sizes` attributes for one image URL at a
//! list of widths (`imgedge url --srcset 320,640,960 <ops> <key>`, and the playground).
//! Each width replaces the URL's size; a URL with both sides keeps its aspect ratio.

use crate::edge::access::Signing;
use crate::edge::url::{self, UrlError};
use crate::imaging::recipe::Dim;

/// Most widths in one `srcset`.
pub const MAX_WIDTHS: usize = 16;

/// What is wrong with a `--srcset` request, for the person who typed it.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SrcsetError {
    #[error("{0}")]
    Url(#[from] UrlError),
    #[error("srcset widths: {0}")]
    Widths(String),
    #[error("srcset: {0}")]
    Conflict(&'static str),
}

/// Parses `320,640,960`: whole pixels 1..=`max_side`, at most `MAX_WIDTHS`; sorted and
/// without repeats.
pub fn parse_widths(text: &str, max_side: u32) -> Result<Vec<u32>, SrcsetError> {
    let bad = |why: String| Err(SrcsetError::Widths(why));
    let mut widths = Vec::new();
    for item in text.split(',').map(str::trim) {
        let digits =
            !item.is_empty() && item.len() <= 6 && item.bytes().all(|b| b.is_ascii_digit());
        match item.parse::<u32>() {
            Ok(w) if digits && (1..=max_side).contains(&w) => widths.push(w),
            _ => return bad(format!("`{item}` is not a width in pixels 1..={max_side}")),
        }
    }
    widths.sort_unstable();
    widths.dedup();
    if widths.len() > MAX_WIDTHS {
        return bad(format!("{} widths; at most {MAX_WIDTHS}", widths.len()));
    }
    Ok(widths)
}

/// `src="…" srcset="… 320w, … 640w" sizes="…"` for `path` (options and key, without a
/// signature; `unsafe/` is accepted) at each width, every URL signed as `signing` does.
/// `src` is the widest, for the rare browser without `srcset`; `sizes` says the image
/// fills the viewport up to its widest variant, which a page with a narrower layout
/// replaces with its own.
pub fn attributes(
    signing: &Signing,
    cdn_base: &str,
    path: &str,
    widths: &[u32],
) -> Result<String, SrcsetError> {
    // The parser drops a leading `/` and the signature segment (`unsafe/` or a signature).
    let parsed = url::parse(path)?;
    if parsed.meta {
        return Err(SrcsetError::Conflict(
            "a `meta/` URL describes an image; drop `meta/`",
        ));
    }
    if parsed.recipe.filters.dpr.is_some() {
        return Err(SrcsetError::Conflict(
            "`dpr()` and srcset both choose the width; use one of them",
        ));
    }
    let widest = *widths
        .last()
        .ok_or(SrcsetError::Widths("no width given".into()))?;
    let url_at = |width: u32| {
        let mut recipe = parsed.recipe.clone();
        recipe.height = match (recipe.width, recipe.height) {
            (Dim::Px(w), Dim::Px(h)) if w > 0 => Dim::Px(
                ((u64::from(h) * u64::from(width) + u64::from(w) / 2) / u64::from(w)).max(1) as u32,
            ),
            (_, Dim::Orig) => Dim::Orig,
            _ => Dim::Auto,
        };
        recipe.width = Dim::Px(width);
        let path = url::canonical(&recipe, false, &parsed.key);
        format!(
            "{}/{}",
            cdn_base.trim_end_matches('/'),
            signing.sign_path(&path)
        )
    };
    let srcset: Vec<String> = widths
        .iter()
        .map(|&w| format!("{} {w}w", url_at(w)))
        .collect();
    Ok(format!(
        "src=\"{}\" srcset=\"{}\" sizes=\"(max-width: {widest}px) 100vw, {widest}px\"",
        url_at(widest),
        srcset.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const CDN: &str = "https://img.example";

    #[test]
    fn widths_are_checked_sorted_and_deduplicated() {
        assert_eq!(
            parse_widths("640, 320,960,320", 4000),
            Ok(vec![320, 640, 960])
        );
        for bad in ["", "0", "320,", "abc", "-1", "5000", "1.5", "320;640"] {
            assert!(parse_widths(bad, 4000).is_err(), "{bad}");
        }
        let many: Vec<String> = (1..=17).map(|w| (w * 100).to_string()).collect();
        assert!(parse_widths(&many.join(","), 4000).is_err());
    }

    #[test]
    fn each_width_replaces_the_size_and_keeps_the_aspect_ratio() {
        let unsigned = Signing::new("", false);
        let out = attributes(
            &unsigned,
            CDN,
            "fit-in/300x200/filters:quality(80)/a.jpg",
            &[320, 640],
        )
        .unwrap();
        assert_eq!(
            out,
            "src=\"https://img.example/unsafe/fit-in/640x427/filters:quality(80)/a.jpg\" \
             srcset=\"https://img.example/unsafe/fit-in/320x213/filters:quality(80)/a.jpg 320w, \
             https://img.example/unsafe/fit-in/640x427/filters:quality(80)/a.jpg 640w\" \
             sizes=\"(max-width: 640px) 100vw, 640px\""
        );
        // Only a width in the URL (or none): the height follows the image.
        let out = attributes(&unsigned, CDN, "unsafe/0x300/a.jpg", &[100]).unwrap();
        assert!(
            out.starts_with("src=\"https://img.example/unsafe/100x/a.jpg\""),
            "{out}"
        );
        let out = attributes(&unsigned, CDN, "photos/a.jpg", &[100]).unwrap();
        assert!(
            out.starts_with("src=\"https://img.example/unsafe/100x/photos/a.jpg\""),
            "{out}"
        );
    }

    #[test]
    fn urls_are_signed_when_a_key_is_configured() {
        let signing = Signing::new("MY_SECURE_KEY", true);
        let out = attributes(&signing, CDN, "fit-in/300x0/a.jpg", &[320]).unwrap();
        let expected = format!("{CDN}/{}", signing.sign_path("fit-in/320x/a.jpg"));
        assert!(out.starts_with(&format!("src=\"{expected}\"")), "{out}");
        assert!(!out.contains("unsafe"), "{out}");
    }

    #[test]
    fn conflicting_urls_are_refused() {
        let unsigned = Signing::new("", false);
        assert!(matches!(
            attributes(&unsigned, CDN, "meta/a.jpg", &[1]),
            Err(SrcsetError::Conflict(_))
        ));
        assert!(matches!(
            attributes(&unsigned, CDN, "filters:dpr()/a.jpg", &[1]),
            Err(SrcsetError::Conflict(_))
        ));
        assert!(matches!(
            attributes(&unsigned, CDN, "filters:quality(0)/a.jpg", &[1]),
            Err(SrcsetError::Url(_))
        ));
    }
}
