//! Bearer tokens: verification with the configured HS256 secret and/or RS256/ES256 public
//! key (the token's `alg` only selects among them), and minting development tokens.

use std::fmt;
use std::time::Duration;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use super::{AuthError, LEEWAY_SECS, MAX_SUB_CHARS, MAX_TOKEN_BYTES, MIN_SECRET_BYTES};

/// A verified bearer token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    pub sub: String,
    pub exp: i64,
}

/// Verifies bearer tokens with the configured keys, and mints development tokens when
/// an HS256 secret is configured.
///
/// Both a secret and a public key may be configured at once (for example while moving
/// from development tokens to an identity provider): the token header's `alg` then
/// picks which one is used, and any other `alg` is refused.
#[derive(Clone)]
pub struct JwtVerifier {
    hmac: Option<HmacKeys>,
    public: Option<(Algorithm, DecodingKey)>,
}

#[derive(Clone)]
struct HmacKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
}

impl fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtVerifier")
            .field("algorithms", &self.algorithms())
            .finish_non_exhaustive()
    }
}

/// What the claims of an incoming token may hold; checked further by `verify`.
#[derive(Deserialize)]
struct IncomingClaims {
    sub: Option<String>,
    exp: Option<serde_json::Value>,
}

/// What a development token carries.
#[derive(Serialize)]
struct MintedClaims<'a> {
    sub: &'a str,
    iat: u64,
    exp: u64,
}

impl JwtVerifier {
    /// Builds the verifier from the `jwt_secret` (HS256) and `jwt_public_key` settings.
    /// The public key is PEM text, or a path to a PEM file when the value does not start
    /// with `-----BEGIN`; an RSA key means RS256 and an EC P-256 key means ES256.
    /// Returns `Ok(None)` when neither is set. Errors name the setting at fault.
    pub fn from_settings(
        jwt_secret: &str,
        jwt_public_key: &str,
    ) -> Result<Option<JwtVerifier>, String> {
        let hmac = if jwt_secret.is_empty() {
            None
        } else if jwt_secret.len() < MIN_SECRET_BYTES {
            return Err(format!(
                "jwt_secret (IMGEDGE_JWT_SECRET) must be at least {MIN_SECRET_BYTES} bytes, \
                 it has {}; generate one with `openssl rand -hex 32`",
                jwt_secret.len()
            ));
        } else {
            Some(HmacKeys {
                encoding: EncodingKey::from_secret(jwt_secret.as_bytes()),
                decoding: DecodingKey::from_secret(jwt_secret.as_bytes()),
            })
        };
        let public = match jwt_public_key.trim() {
            "" => None,
            value => Some(
                public_key(value)
                    .map_err(|e| format!("jwt_public_key (IMGEDGE_JWT_PUBLIC_KEY): {e}"))?,
            ),
        };
        if hmac.is_none() && public.is_none() {
            return Ok(None);
        }
        Ok(Some(JwtVerifier { hmac, public }))
    }

    /// The algorithms this verifier accepts, in a fixed order.
    pub fn algorithms(&self) -> Vec<Algorithm> {
        let hmac = self.hmac.as_ref().map(|_| Algorithm::HS256);
        let public = self.public.as_ref().map(|(alg, _)| *alg);
        hmac.into_iter().chain(public).collect()
    }

    /// Verifies the signature with only the configured algorithm(s), requires `exp`,
    /// honours `nbf` when present (both with [`LEEWAY_SECS`] of leeway) and requires a
    /// non-empty string `sub` of at most [`MAX_SUB_CHARS`] characters.
    ///
    /// `aud` and `iss` are not checked: there are no settings naming an audience or an
    /// issuer, and tokens from identity providers routinely carry both.
    pub fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(invalid("the token is too long"));
        }
        let header = jsonwebtoken::decode_header(token).map_err(|e| from_jwt(e.kind()))?;
        if header.crit.is_some() {
            // RFC 7515 §4.1.11: critical extensions we do not understand mean "reject".
            return Err(invalid("the token header lists critical extensions"));
        }
        let key = self.key_for(header.alg).ok_or_else(|| {
            invalid(&format!(
                "algorithm {:?} is not accepted (accepted: {:?})",
                header.alg,
                self.algorithms()
            ))
        })?;
        let mut validation = Validation::new(header.alg);
        validation.leeway = LEEWAY_SECS;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.validate_aud = false;
        validation.set_required_spec_claims(&["exp", "sub"]);
        let data = jsonwebtoken::decode::<IncomingClaims>(token, key, &validation)
            .map_err(|e| from_jwt(e.kind()))?;
        let sub = data.claims.sub.unwrap_or_default();
        check_sub(&sub)?;
        let exp = data
            .claims
            .exp
            .and_then(|n| n.as_i64().or_else(|| n.as_f64().map(|f| f.round() as i64)))
            .ok_or_else(|| invalid("the `exp` claim is not a number"))?;
        Ok(Claims { sub, exp })
    }

    fn key_for(&self, alg: Algorithm) -> Option<&DecodingKey> {
        if alg == Algorithm::HS256 {
            return self.hmac.as_ref().map(|k| &k.decoding);
        }
        match &self.public {
            Some((configured, key)) if *configured == alg => Some(key),
            _ => None,
        }
    }

    /// Whether development tokens can be minted (an HS256 secret is configured).
    pub fn can_mint(&self) -> bool {
        self.hmac.is_some()
    }

    /// An HS256 development token with `sub`, `iat` and `exp = now + ttl`.
    pub fn mint(&self, sub: &str, ttl: Duration) -> Result<String, AuthError> {
        let keys = self.hmac.as_ref().ok_or(AuthError::NoVerifierConfigured)?;
        check_sub(sub)?;
        let iat = jsonwebtoken::get_current_timestamp();
        let claims = MintedClaims {
            sub,
            iat,
            exp: iat.saturating_add(ttl.as_secs()),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &keys.encoding)
            .map_err(|e| AuthError::InvalidToken(format!("cannot sign: {e}")))
    }
}

/// Reads a PEM public key (inline or from a file) and picks its algorithm.
fn public_key(value: &str) -> Result<(Algorithm, DecodingKey), String> {
    let pem = if value.starts_with("-----BEGIN") {
        // Environment variables often carry PEM text with `\n` escapes instead of
        // line breaks; the PEM parser needs the real ones.
        if value.contains('\n') {
            value.to_owned()
        } else {
            value.replace("\\n", "\n")
        }
    } else {
        std::fs::read_to_string(value)
            .map_err(|e| format!("cannot read PEM file `{value}`: {e}"))?
    };
    if pem.contains("PRIVATE KEY-----") {
        return Err("this is a private key; configure its public half \
                    (`openssl pkey -in key.pem -pubout`)"
            .to_owned());
    }
    if let Ok(key) = DecodingKey::from_rsa_pem(pem.as_bytes()) {
        return Ok((Algorithm::RS256, key));
    }
    let key = DecodingKey::from_ec_pem(pem.as_bytes())
        .map_err(|_| "not a PEM-encoded RSA or EC P-256 public key".to_owned())?;
    // The SEC1 point of a P-256 key is 65 bytes uncompressed or 33 compressed; other
    // curves (P-384: 97/49) would make every ES256 verification fail, so refuse now.
    let point = key
        .try_get_as_bytes()
        .map_err(|_| "unreadable EC public key".to_owned())?;
    match (point.len(), point.first()) {
        (65, Some(4)) | (33, Some(2 | 3)) => Ok((Algorithm::ES256, key)),
        _ => Err("only EC keys on the P-256 curve (ES256) are supported".to_owned()),
    }
}

fn check_sub(sub: &str) -> Result<(), AuthError> {
    let chars = sub.chars().count();
    if chars == 0 || chars > MAX_SUB_CHARS {
        return Err(invalid(&format!(
            "the `sub` claim must be 1 to {MAX_SUB_CHARS} characters"
        )));
    }
    Ok(())
}

fn invalid(reason: &str) -> AuthError {
    AuthError::InvalidToken(reason.to_owned())
}

/// Maps a jsonwebtoken failure to a reason a client can act on, without echoing the
/// token or any key material.
fn from_jwt(kind: &ErrorKind) -> AuthError {
    match kind {
        ErrorKind::ExpiredSignature => AuthError::ExpiredToken,
        ErrorKind::ImmatureSignature => invalid("the token is not valid yet (nbf)"),
        ErrorKind::InvalidSignature => invalid("bad signature"),
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
            invalid("algorithm not accepted")
        }
        ErrorKind::MissingRequiredClaim(claim) => {
            // jsonwebtoken also reports a claim of the wrong type as missing.
            invalid(&format!("the `{claim}` claim is missing or malformed"))
        }
        ErrorKind::InvalidClaimFormat(claim) => {
            invalid(&format!("the `{claim}` claim is malformed"))
        }
        ErrorKind::Json(e) => invalid(&format!("malformed token: {e}")),
        _ => invalid("malformed token"),
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use super::*;
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    #[test]
    fn hs256_round_trip() {
        let v = hs256();
        assert!(v.can_mint());
        let token = v.mint("user-1", Duration::from_secs(3600)).unwrap();
        let claims = v.verify(&token).unwrap();
        assert_eq!(claims.sub, "user-1");
        assert!((claims.exp - (now() + 3600)).abs() <= 2, "{claims:?}");
        assert!(v.mint("", Duration::from_secs(60)).is_err());
        assert!(v.mint(&"u".repeat(257), Duration::from_secs(60)).is_err());
    }

    #[test]
    fn hs256_claims_are_checked() {
        let v = hs256();
        let key = hs_key(SECRET);
        let t = now();
        let cases: Vec<(serde_json::Value, Result<&str, AuthError>)> = vec![
            (claims("u", 60), Ok("u")),
            // Within the leeway.
            (claims("u", -10), Ok("u")),
            (claims("u", -120), Err(AuthError::ExpiredToken)),
            (
                serde_json::json!({ "sub": "u" }),
                Err(invalid("the `exp` claim is missing or malformed")),
            ),
            (
                serde_json::json!({ "exp": t + 60 }),
                Err(invalid("the `sub` claim is missing or malformed")),
            ),
            (
                serde_json::json!({ "sub": "", "exp": t + 60 }),
                Err(invalid("the `sub` claim must be 1 to 256 characters")),
            ),
            (
                serde_json::json!({ "sub": "u".repeat(257), "exp": t + 60 }),
                Err(invalid("the `sub` claim must be 1 to 256 characters")),
            ),
            (
                serde_json::json!({ "sub": "u", "exp": "tomorrow" }),
                Err(invalid("the `exp` claim is missing or malformed")),
            ),
            (
                serde_json::json!({ "sub": "u", "exp": t + 60, "nbf": t + 3600 }),
                Err(invalid("the token is not valid yet (nbf)")),
            ),
            (
                serde_json::json!({ "sub": "u", "exp": t + 60, "nbf": t - 5 }),
                Ok("u"),
            ),
            // No audience is configured, so a token from an identity provider that
            // names one is still accepted.
            (
                serde_json::json!({ "sub": "u", "exp": t + 60, "aud": "authenticated" }),
                Ok("u"),
            ),
        ];
        for (claims, expected) in cases {
            let token = sign(Algorithm::HS256, &key, claims.clone());
            let got = v.verify(&token);
            match expected {
                Ok(sub) => assert_eq!(got.map(|c| c.sub), Ok(sub.to_owned()), "{claims}"),
                Err(e) => assert_eq!(got, Err(e), "{claims}"),
            }
        }
        // A string `sub` is required: a number is a malformed token.
        let token = sign(
            Algorithm::HS256,
            &key,
            serde_json::json!({ "sub": 42, "exp": t + 60 }),
        );
        assert!(matches!(v.verify(&token), Err(AuthError::InvalidToken(_))));
    }

    #[test]
    fn forged_and_confused_tokens_are_refused() {
        let v = hs256();
        let wrong = sign(
            Algorithm::HS256,
            &hs_key("another-secret-another-secret-000"),
            claims("u", 60),
        );
        assert_eq!(v.verify(&wrong), Err(invalid("bad signature")));

        // `alg: none` with an empty signature.
        let b64 = |v: serde_json::Value| URL_SAFE_NO_PAD.encode(v.to_string());
        let none = format!(
            "{}.{}.",
            b64(serde_json::json!({ "alg": "none", "typ": "JWT" })),
            b64(claims("u", 60))
        );
        assert!(matches!(v.verify(&none), Err(AuthError::InvalidToken(_))));

        // Classic alg confusion: HS256 signed with the RSA public key as the secret,
        // presented to a verifier that only has that public key.
        let rs_only = JwtVerifier::from_settings("", RSA_PUBLIC).unwrap().unwrap();
        let confused = sign(Algorithm::HS256, &hs_key(RSA_PUBLIC), claims("u", 60));
        assert!(matches!(
            rs_only.verify(&confused),
            Err(AuthError::InvalidToken(m)) if m.contains("not accepted")
        ));
        assert!(!rs_only.can_mint());
        assert_eq!(
            rs_only.mint("u", Duration::from_secs(60)),
            Err(AuthError::NoVerifierConfigured)
        );

        // Algorithms we never configure, and critical header extensions.
        let hs384 = sign(Algorithm::HS384, &hs_key(SECRET), claims("u", 60));
        assert!(matches!(v.verify(&hs384), Err(AuthError::InvalidToken(_))));
        let mut header = Header::new(Algorithm::HS256);
        header.crit = Some(vec!["exp".into()]);
        let crit = jsonwebtoken::encode(&header, &claims("u", 60), &hs_key(SECRET)).unwrap();
        assert!(matches!(v.verify(&crit), Err(AuthError::InvalidToken(_))));

        let long = "x".repeat(MAX_TOKEN_BYTES + 1);
        for garbage in ["", "a.b", "a.b.c", "not a token", long.as_str()] {
            assert!(
                matches!(v.verify(garbage), Err(AuthError::InvalidToken(_))),
                "{garbage:?}"
            );
        }
    }

    #[test]
    fn rs256_and_es256_round_trips() {
        let cases = [
            (RSA_PUBLIC, RSA_PRIVATE, Algorithm::RS256),
            (EC_PUBLIC, EC_PRIVATE, Algorithm::ES256),
        ];
        for (public, private, alg) in cases {
            let v = JwtVerifier::from_settings("", public).unwrap().unwrap();
            assert_eq!(v.algorithms(), vec![alg]);
            let key = match alg {
                Algorithm::RS256 => EncodingKey::from_rsa_pem(private.as_bytes()).unwrap(),
                _ => EncodingKey::from_ec_pem(private.as_bytes()).unwrap(),
            };
            let token = sign(alg, &key, claims("idp-user", 60));
            assert_eq!(v.verify(&token).unwrap().sub, "idp-user", "{alg:?}");
            let expired = sign(alg, &key, claims("idp-user", -3600));
            assert_eq!(v.verify(&expired), Err(AuthError::ExpiredToken), "{alg:?}");
            // A tampered payload breaks the signature.
            let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
            parts[1] = URL_SAFE_NO_PAD.encode(claims("admin", 60).to_string());
            assert_eq!(
                v.verify(&parts.join(".")),
                Err(invalid("bad signature")),
                "{alg:?}"
            );
        }
        // RS256 tokens are not accepted by an ES256 verifier and vice versa.
        let es = JwtVerifier::from_settings("", EC_PUBLIC).unwrap().unwrap();
        let rs_token = sign(
            Algorithm::RS256,
            &EncodingKey::from_rsa_pem(RSA_PRIVATE.as_bytes()).unwrap(),
            claims("u", 60),
        );
        assert!(matches!(
            es.verify(&rs_token),
            Err(AuthError::InvalidToken(_))
        ));
    }

    #[test]
    fn both_secret_and_public_key_pick_by_alg() {
        let v = JwtVerifier::from_settings(SECRET, EC_PUBLIC)
            .unwrap()
            .unwrap();
        assert_eq!(v.algorithms(), vec![Algorithm::HS256, Algorithm::ES256]);
        let hs = v.mint("dev", Duration::from_secs(60)).unwrap();
        assert_eq!(v.verify(&hs).unwrap().sub, "dev");
        let es = sign(
            Algorithm::ES256,
            &EncodingKey::from_ec_pem(EC_PRIVATE.as_bytes()).unwrap(),
            claims("idp", 60),
        );
        assert_eq!(v.verify(&es).unwrap().sub, "idp");
    }

    #[test]
    fn from_settings() {
        assert!(JwtVerifier::from_settings("", "").unwrap().is_none());
        assert!(JwtVerifier::from_settings("", "  ").unwrap().is_none());
        // PEM with `\n` escapes, as environment variables often carry it.
        let escaped = EC_PUBLIC.trim_end().replace('\n', "\\n");
        let v = JwtVerifier::from_settings("", &escaped).unwrap().unwrap();
        assert_eq!(v.algorithms(), vec![Algorithm::ES256]);
        // A path to a PEM file.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key.pem");
        std::fs::write(&path, RSA_PUBLIC).unwrap();
        let v = JwtVerifier::from_settings("", path.to_str().unwrap())
            .unwrap()
            .unwrap();
        assert_eq!(v.algorithms(), vec![Algorithm::RS256]);

        let missing = dir.path().join("missing.pem");
        let bad: &[(&str, &str, &str)] = &[
            ("short", "", "jwt_secret"),
            (&"x".repeat(31), "", "at least 32 bytes"),
            (
                "",
                "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
                "jwt_public_key",
            ),
            ("", RSA_PRIVATE, "private key"),
            ("", EC_PRIVATE, "private key"),
            ("", EC_P384_PUBLIC, "P-256"),
            ("", missing.to_str().unwrap(), "cannot read PEM file"),
        ];
        for (secret, public, needle) in bad {
            let err = JwtVerifier::from_settings(secret, public).unwrap_err();
            assert!(err.contains(needle), "{secret:?} {public:?}: {err}");
        }
        assert!(JwtVerifier::from_settings(&"x".repeat(32), "").is_ok());
    }
}
