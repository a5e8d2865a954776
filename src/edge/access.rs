//! Who may ask for an edge URL: the Thumbor URL signature. (Which files may be seen, their
//! visibility, is the edge's check against the metadata store, not this module's.)
//!
//! A signature is `base64url(HMAC-SHA1(security_key, signed_path))` with `=` padding, exactly
//! as Thumbor's `libthumbor`/`CryptoURL` computes it; `signed_path` is everything after the
//! signature segment as received (still percent-encoded, see `edge::url::ParsedUrl`).
//! `Signing` is the operator's policy built once from the configuration; `authorize_url`
//! applies it to a parsed URL. File visibility is checked by the edge against the metadata
//! store. This module does no I/O.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE;
use hmac::{Hmac, Mac};
use sha1::Sha1;

use super::url::{ParsedUrl, Signature};
use crate::error::EdgeError;

/// The operator's signing policy, built once from the configuration.
#[derive(Clone)]
pub struct Signing {
    key: Option<Vec<u8>>,
    required: bool,
}

impl std::fmt::Debug for Signing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the key.
        f.debug_struct("Signing")
            .field("enabled", &self.key.is_some())
            .field("required", &self.required)
            .finish()
    }
}

impl Signing {
    pub fn new(security_key: &str, required: bool) -> Signing {
        let key = (!security_key.is_empty()).then(|| security_key.as_bytes().to_vec());
        Signing { key, required }
    }

    /// Whether unsigned (bare or `unsafe/`) URLs are refused.
    pub fn requires_signature(&self) -> bool {
        self.required
    }

    /// The signed path for `path`, or `unsafe/<path>` when no key is configured.
    pub fn sign_path(&self, path: &str) -> String {
        let path = path.trim_start_matches('/');
        match &self.key {
            Some(key) => format!("{}/{path}", sign(key, path)),
            None => format!("unsafe/{path}"),
        }
    }

    /// The path of a link the service hands out (`cdnUrl`, `location`): signed when
    /// signatures are required, since the edge would refuse it unsigned; else as is.
    pub fn link_path(&self, path: &str) -> String {
        let path = path.trim_start_matches('/');
        match &self.key {
            Some(key) if self.required => format!("{}/{path}", sign(key, path)),
            _ => path.to_owned(),
        }
    }
}

/// Checks a parsed URL against the policy: a signature, when present, must verify (if a key
/// is configured); unsigned URLs pass unless signatures are required.
pub fn authorize_url(signing: &Signing, url: &ParsedUrl) -> Result<(), EdgeError> {
    match (&url.signature, &signing.key) {
        (Signature::Hmac(sig), Some(key)) => {
            if verify(key, &url.signed_path, sig) {
                Ok(())
            } else {
                Err(EdgeError::BadSignature)
            }
        }
        // A signature we cannot check (no key configured) proves nothing.
        (Signature::Hmac(_), None) => Ok(()),
        (Signature::None | Signature::Unsafe, _) if signing.required => {
            Err(EdgeError::SignatureRequired)
        }
        (Signature::None | Signature::Unsafe, _) => Ok(()),
    }
}
type HmacSha1 = Hmac<Sha1>;

/// Signs `signed_path` the way Thumbor does: padded base64url of HMAC-SHA1 (28 characters).
pub fn sign(security_key: &[u8], signed_path: &str) -> String {
    let mac = mac_over(security_key, signed_path);
    URL_SAFE.encode(mac.finalize().into_bytes())
}

/// Whether `signature` is the Thumbor signature of `signed_path` under `security_key`.
///
/// The comparison is constant-time. A signature that is not canonical padded base64url
/// (wrong length, bad padding, non-zero trailing bits) is rejected, so every accepted
/// signature has exactly one spelling.
pub fn verify(security_key: &[u8], signed_path: &str, signature: &str) -> bool {
    let Ok(expected) = URL_SAFE.decode(signature) else {
        return false;
    };
    mac_over(security_key, signed_path)
        .verify_slice(&expected)
        .is_ok()
}

fn mac_over(security_key: &[u8], signed_path: &str) -> HmacSha1 {
    let mut mac = HmacSha1::new_from_slice(security_key).expect("HMAC accepts keys of any length");
    mac.update(signed_path.as_bytes());
    mac
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"MY_SECURE_KEY";
    const PATH: &str = "300x200/smart/thumbor.globo.com/img/logo.png";

    /// Computed with Python's `hmac` + `base64.urlsafe_b64encode`, as libthumbor does.
    #[test]
    fn matches_thumbor_vectors() {
        let cases = [
            (PATH, "PHEMMIzCmPT6v5U_pUQs20_og0A="),
            (
                "fit-in/300x200/filters:quality(80):format(webp)/a/b%20c.jpg",
                "a4wUCNleHW0UsWaLNZ3UxT13qwk=",
            ),
        ];
        for (path, expected) in cases {
            assert_eq!(sign(KEY, path), expected, "{path}");
            assert!(verify(KEY, path, expected), "{path}");
        }
    }

    #[test]
    fn rejects_tampering() {
        let good = sign(KEY, PATH);
        assert!(!verify(
            KEY,
            "300x201/smart/thumbor.globo.com/img/logo.png",
            &good
        ));
        assert!(!verify(b"OTHER_KEY", PATH, &good));
        assert!(!verify(KEY, PATH, "QHEMMIzCmPT6v5U_pUQs20_og0A="));
        // Same bytes spelled differently: unpadded, standard alphabet, non-zero trailing bits.
        assert!(!verify(KEY, PATH, "PHEMMIzCmPT6v5U_pUQs20_og0A"));
        assert!(!verify(KEY, PATH, "PHEMMIzCmPT6v5U/pUQs20/og0A="));
        assert!(!verify(KEY, PATH, "PHEMMIzCmPT6v5U_pUQs20_og0B="));
        assert!(!verify(KEY, PATH, ""));
        assert!(!verify(KEY, PATH, "not base64 at all!"));
    }

    #[test]
    fn signature_has_thumbor_shape() {
        let sig = sign(b"", "");
        assert_eq!(sig.len(), 28);
        assert!(sig.ends_with('='));
        assert!(verify(b"", "", &sig));
    }
}
