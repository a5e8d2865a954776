//! The crate's core identifier: a file's storage key, validated once wherever it comes
//! from (a URL, an API body, an import, a stored row). A leaf: storage, the database,
//! caches, the API and the edge all name objects by it without depending on each other.

use std::fmt;

/// Longest accepted file key, in bytes after percent-decoding.
pub const MAX_KEY_BYTES: usize = 1024;

/// The first key segment kept for the service's own objects (derivatives).
pub const RESERVED_SEGMENT: &str = ".imgedge";

/// Longest key text quoted back in an error.
const MAX_QUOTED_BYTES: usize = 120;

/// A validated, decoded storage key: relative, no `.`/`..`/empty segments, no control
/// characters or backslashes, at most [`MAX_KEY_BYTES`] bytes, not under
/// [`RESERVED_SEGMENT`] (unless built by [`ObjectKey::derivative`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ObjectKey(String);

/// A key refused: the text as received (cut to a bounded length) and what is wrong with it.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[error("segment `{key}`: {reason}")]
pub struct KeyError {
    pub key: String,
    pub reason: String,
}

impl KeyError {
    fn new(key: &str, reason: impl Into<String>) -> KeyError {
        KeyError {
            key: quote(key),
            reason: reason.into(),
        }
    }
}

/// Cuts long text on a character boundary so error bodies stay small.
pub(crate) fn quote(text: &str) -> String {
    if text.len() <= MAX_QUOTED_BYTES {
        return text.to_owned();
    }
    let mut end = MAX_QUOTED_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

impl ObjectKey {
    /// Validates an already-decoded key (from a URL once decoded, an import, the API, a row).
    pub fn parse(raw: &str) -> Result<ObjectKey, KeyError> {
        validate(raw).map_err(|reason| KeyError::new(raw, reason))?;
        Ok(ObjectKey(raw.to_owned()))
    }

    /// Where the reduced copy with long edge `long_edge` of this file is stored:
    /// `.imgedge/d<long_edge>/<key>`, under a first segment no file key may use.
    pub fn derivative(&self, long_edge: u32) -> ObjectKey {
        ObjectKey(format!("{RESERVED_SEGMENT}/d{long_edge}/{}", self.0))
    }

    /// Whether this is where one of `original`'s reduced copies is stored.
    pub fn is_derivative_of(&self, original: &ObjectKey) -> bool {
        self.0
            .strip_prefix(RESERVED_SEGMENT)
            .and_then(|rest| rest.strip_prefix("/d"))
            .and_then(|rest| rest.split_once('/'))
            .is_some_and(|(size, key)| {
                size.bytes().all(|b| b.is_ascii_digit()) && key == original.0
            })
    }

    /// The decoded key, as stored.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn validate(key: &str) -> Result<(), String> {
    if key.is_empty() {
        return Err("the file key is missing: add it after the options".into());
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(format!(
            "the file key is {} bytes; at most {MAX_KEY_BYTES}",
            key.len()
        ));
    }
    if let Some(c) = key.chars().find(|c| c.is_control()) {
        return Err(format!(
            "the file key contains control character U+{:04X}",
            u32::from(c)
        ));
    }
    if key.contains('\\') {
        return Err("the file key contains a backslash".into());
    }
    if key.starts_with('/') {
        return Err("the file key must be relative, not start with `/`".into());
    }
    if key.split('/').next() == Some(RESERVED_SEGMENT) {
        return Err(format!(
            "the file key starts with `{RESERVED_SEGMENT}/`, which is reserved for derived images"
        ));
    }
    for segment in key.split('/') {
        match segment {
            "" => return Err("the file key has an empty segment (`//` or a trailing `/`)".into()),
            "." | ".." => {
                return Err(format!(
                    "the file key has a `{segment}` segment; not allowed"
                ));
            }
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_keeps_good_keys_and_names_the_bad_ones() {
        for ok in ["a.jpg", "a/b/c d.jpg", "写真/猫.png", "a%20b", "x"] {
            let key = ObjectKey::parse(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
            assert_eq!(key.as_str(), ok);
            assert_eq!(key.to_string(), ok);
        }
        for bad in [
            "",
            "/a",
            "a/",
            "a//b",
            "..",
            "a/./b",
            "a\u{0}b",
            "a\\b",
            "a\u{7f}",
            ".imgedge/d1/a.jpg",
        ] {
            let err = ObjectKey::parse(bad).expect_err(bad);
            assert_eq!(err.key, bad);
        }
        let long = "a".repeat(MAX_KEY_BYTES + 1);
        let err = ObjectKey::parse(&long).unwrap_err();
        assert_eq!(err.reason, "the file key is 1025 bytes; at most 1024");
        assert!(err.key.len() < 130, "the key is quoted cut short");
        assert!(ObjectKey::parse(&long[1..]).is_ok());
    }

    #[test]
    fn a_reduced_copy_lives_under_the_reserved_segment() {
        let key = ObjectKey::parse("p/a.jpg").unwrap();
        let copy = key.derivative(1024);
        assert_eq!(copy.as_str(), ".imgedge/d1024/p/a.jpg");
        assert!(copy.is_derivative_of(&key));
        assert!(!copy.is_derivative_of(&ObjectKey::parse("a.jpg").unwrap()));
        assert!(!key.is_derivative_of(&key));
    }
}
