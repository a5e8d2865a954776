//! API keys: their `pk_`/`sk_` format, the configured ring of SHA-256 hashes (never keys
//! in clear) and the constant-time check of a presented key, and minting new ones.

use std::fmt;

use sha2::{Digest, Sha256};

use super::AuthError;

const KEY_HEX_LEN: usize = 64;
const MAX_PROJECT_LEN: usize = 64;

/// The two kinds of API key (SPEC §2.1). Publishable keys may ship in apps and are
/// subject to row-level rules; secret keys are for servers and have full access.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    Publishable,
    Secret,
}

impl KeyKind {
    /// The prefix every key of this kind starts with.
    pub fn prefix(self) -> &'static str {
        match self {
            KeyKind::Publishable => "pk_",
            KeyKind::Secret => "sk_",
        }
    }
}

/// A verified API key: which project it belongs to and its kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKey {
    pub project: String,
    pub kind: KeyKind,
}

/// Configured keys, by SHA-256 hash (never stored in clear).
#[derive(Clone, Default)]
pub struct KeyRing {
    entries: Vec<KeyEntry>,
}

#[derive(Clone)]
struct KeyEntry {
    project: String,
    hash: [u8; 32],
}

impl fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Hashes are not secrets, but a short prefix is enough to tell entries apart.
        let mut list = f.debug_list();
        for entry in &self.entries {
            list.entry(&format_args!(
                "{}:{}…",
                entry.project,
                &hex::encode(entry.hash)[..8]
            ));
        }
        list.finish()
    }
}

impl KeyRing {
    /// Parses the `api_keys` setting: comma-separated `PROJECT:SHA256HEX` entries
    /// (whitespace tolerated, empty = no keys). Project names: `[A-Za-z0-9_-]{1,64}`.
    /// The hash may be in either case. Errors name the bad entry.
    pub fn parse(setting: &str) -> Result<KeyRing, String> {
        let mut entries: Vec<KeyEntry> = Vec::new();
        for (index, raw) in setting.split(',').enumerate() {
            let text = raw.trim();
            if text.is_empty() {
                // Tolerates trailing commas and an empty setting.
                continue;
            }
            let number = index + 1;
            let Some((project, hash)) = text.split_once(':') else {
                return Err(format!(
                    "entry {number} `{text}`: expected PROJECT:SHA256HEX"
                ));
            };
            let (project, hash) = (project.trim(), hash.trim());
            if !is_project_name(project) {
                return Err(format!(
                    "entry {number} `{text}`: project name must be 1 to {MAX_PROJECT_LEN} \
                     characters of A-Z, a-z, 0-9, `_` or `-`"
                ));
            }
            if hash.starts_with("pk_") || hash.starts_with("sk_") {
                // Do not echo it: this is a key in clear, pasted where its hash belongs.
                return Err(format!(
                    "entry {number} (project `{project}`): that is an API key, not its hash; \
                     configure its SHA-256 as printed by `imgedge keys new`"
                ));
            }
            let Some(hash) = parse_hash(hash) else {
                return Err(format!(
                    "entry {number} `{text}`: the hash must be 64 hexadecimal characters (SHA-256)"
                ));
            };
            if let Some(other) = entries.iter().find(|e| e.hash == hash) {
                return Err(format!(
                    "entry {number} `{text}`: this hash is already listed for project `{}`",
                    other.project
                ));
            }
            entries.push(KeyEntry {
                project: project.to_owned(),
                hash,
            });
        }
        Ok(KeyRing { entries })
    }

    /// Number of configured keys.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no key is configured (then every API call is refused).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Checks a presented `X-API-Key`: shape first (`pk_` or `sk_` + exactly 64
    /// lowercase hex characters), then a constant-time lookup of the SHA-256 of the
    /// whole key (prefix included). The kind comes from the prefix, which the hash
    /// covers, so a publishable key cannot be promoted by editing its prefix.
    pub fn authenticate(&self, presented: &str) -> Result<ApiKey, AuthError> {
        let kind = key_shape(presented).ok_or(AuthError::MalformedApiKey)?;
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        // Compare against every entry without stopping early, so the time taken does
        // not depend on where (or whether) the key is listed.
        let mut found: Option<&KeyEntry> = None;
        for entry in &self.entries {
            if constant_time_eq(&entry.hash, &digest) {
                found = Some(entry);
            }
        }
        let entry = found.ok_or(AuthError::UnknownApiKey)?;
        Ok(ApiKey {
            project: entry.project.clone(),
            kind,
        })
    }
}

/// Whether `name` is a valid project name: 1 to 64 characters of `[A-Za-z0-9_-]`.
pub fn is_project_name(name: &str) -> bool {
    (1..=MAX_PROJECT_LEN).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn parse_hash(text: &str) -> Option<[u8; 32]> {
    if text.len() != KEY_HEX_LEN {
        return None;
    }
    let mut out = [0u8; 32];
    for (byte, pair) in out.iter_mut().zip(text.as_bytes().chunks_exact(2)) {
        let pair = std::str::from_utf8(pair).ok()?;
        *byte = u8::from_str_radix(pair, 16).ok()?;
    }
    Some(out)
}

/// The kind of a well-formed key, or `None` when its shape is wrong.
fn key_shape(presented: &str) -> Option<KeyKind> {
    let (kind, rest) = if let Some(rest) = presented.strip_prefix("pk_") {
        (KeyKind::Publishable, rest)
    } else if let Some(rest) = presented.strip_prefix("sk_") {
        (KeyKind::Secret, rest)
    } else {
        return None;
    };
    let lower_hex = |b: u8| b.is_ascii_digit() || (b'a'..=b'f').contains(&b);
    (rest.len() == KEY_HEX_LEN && rest.bytes().all(lower_hex)).then_some(kind)
}

fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// A new random key: `pk_`/`sk_` + 64 hex characters from the OS generator, and the
/// SHA-256 hex of the whole key, which is what the configuration holds.
pub fn mint_key(kind: KeyKind) -> (String, String) {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)
        .expect("invariant: the operating system's random number generator is available");
    let key = format!("{}{}", kind.prefix(), hex::encode(bytes));
    let hash = sha256_hex(&key);
    (key, hash)
}

/// Lowercase hex SHA-256 of `text`.
pub fn sha256_hex(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use super::*;

    #[test]
    fn key_shapes() {
        let ring = ring();
        let hex64 = "0".repeat(64);
        let cases: Vec<(String, Result<ApiKey, AuthError>)> = vec![
            (
                PK.into(),
                Ok(ApiKey {
                    project: "alpha".into(),
                    kind: KeyKind::Publishable,
                }),
            ),
            (
                SK.into(),
                Ok(ApiKey {
                    project: "beta".into(),
                    kind: KeyKind::Secret,
                }),
            ),
            // Well formed but not configured.
            (format!("pk_{hex64}"), Err(AuthError::UnknownApiKey)),
            // The hash covers the prefix: a publishable key cannot become secret.
            (PK.replacen("pk_", "sk_", 1), Err(AuthError::UnknownApiKey)),
            (PK[..PK.len() - 1].into(), Err(AuthError::MalformedApiKey)),
            (format!("{PK}0"), Err(AuthError::MalformedApiKey)),
            (PK.to_uppercase(), Err(AuthError::MalformedApiKey)),
            (
                format!("pk_{}", &PK[3..].to_uppercase()),
                Err(AuthError::MalformedApiKey),
            ),
            (
                PK.replacen("pk_", "xk_", 1),
                Err(AuthError::MalformedApiKey),
            ),
            (
                PK.replacen("pk_", "pk-", 1),
                Err(AuthError::MalformedApiKey),
            ),
            (
                format!("pk_{}g", &hex64[1..]),
                Err(AuthError::MalformedApiKey),
            ),
            (format!(" {PK}"), Err(AuthError::MalformedApiKey)),
            ("".into(), Err(AuthError::MalformedApiKey)),
            ("pk_".into(), Err(AuthError::MalformedApiKey)),
        ];
        for (presented, expected) in cases {
            assert_eq!(ring.authenticate(&presented), expected, "{presented:?}");
        }
    }

    #[test]
    fn keys_are_scoped_to_their_project() {
        let (pk_a, hash_a) = mint_key(KeyKind::Publishable);
        let (sk_b, hash_b) = mint_key(KeyKind::Secret);
        let ring = KeyRing::parse(&format!("a:{hash_a},b:{hash_b}")).unwrap();
        assert_eq!(ring.len(), 2);
        assert_eq!(ring.authenticate(&pk_a).unwrap().project, "a");
        assert_eq!(ring.authenticate(&sk_b).unwrap().project, "b");
        let only_a = KeyRing::parse(&format!("a:{hash_a}")).unwrap();
        assert_eq!(only_a.authenticate(&sk_b), Err(AuthError::UnknownApiKey));
        assert_eq!(
            KeyRing::default().authenticate(&pk_a),
            Err(AuthError::UnknownApiKey)
        );
    }

    #[test]
    fn known_hash_and_minted_keys() {
        // Known-answer test for the hash of the empty string.
        assert_eq!(
            sha256_hex(""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        let (pk, hash) = mint_key(KeyKind::Publishable);
        assert!(pk.starts_with("pk_") && pk.len() == 67, "{pk}");
        assert_eq!(hash, sha256_hex(&pk));
        assert_eq!(key_shape(&pk), Some(KeyKind::Publishable));
        let (sk, _) = mint_key(KeyKind::Secret);
        assert_eq!(key_shape(&sk), Some(KeyKind::Secret));
        assert_ne!(mint_key(KeyKind::Secret).0, sk);
    }

    #[test]
    fn key_ring_parse() {
        let h = sha256_hex(PK);
        let ok: &[(&str, usize)] = &[
            ("", 0),
            ("  ", 0),
            (",", 0),
            (&format!("p:{h}"), 1),
            (&format!(" p : {h} ,\n q-2_X:{}", h.replace('a', "b")), 2),
        ];
        for (setting, count) in ok {
            assert_eq!(
                KeyRing::parse(setting).unwrap().len(),
                *count,
                "{setting:?}"
            );
        }
        let long = "x".repeat(65);
        let bad: &[(String, &str)] = &[
            (format!("p{h}"), "entry 1"),
            (format!("p:{h},nocolon"), "entry 2 `nocolon`"),
            (format!(":{h}"), "project name"),
            (format!("{long}:{h}"), "project name"),
            (format!("p q:{h}"), "project name"),
            (format!("p/q:{h}"), "project name"),
            ("p:abc".into(), "64 hexadecimal"),
            (format!("p:{h}0"), "64 hexadecimal"),
            (
                format!("p:{}", h.replacen(|_| true, "z", 1)),
                "64 hexadecimal",
            ),
            (format!("p:{h},q:{h}"), "already listed for project `p`"),
            (format!("p:{PK}"), "not its hash"),
        ];
        for (setting, needle) in bad {
            let err = KeyRing::parse(setting).unwrap_err();
            assert!(err.contains(needle), "{setting:?}: {err}");
        }
        // A key pasted in place of its hash is not echoed back.
        assert!(!KeyRing::parse(&format!("p:{PK}")).unwrap_err().contains(PK));
    }
}
