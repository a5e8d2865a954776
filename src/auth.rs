//! Credentials of the storage API (SPEC §2.1): `X-API-Key` checked against configured
//! SHA-256 hashes, and an optional `Authorization: Bearer <JWT>` verified with a
//! configured HS256 secret and/or an RS256/ES256 public key; the [`Caller`] they prove.
//!
//! Below `config` and `app`, which hold the key ring and verifier built once at start;
//! the API only asks it who is calling (`api::body::caller`), and the `keys` command
//! mints keys with it. It uses nothing else of the crate.
//!
//! This module owns the credential formats and their checks. It does no network I/O
//! and picks no HTTP status codes (that is `error.rs`'s job); the only file it reads is
//! a PEM public key named by `jwt_public_key`, once, at start-up. Keys are never held
//! in clear, and nothing here prints a secret or a full hash in `Debug` output.
//!
//! JWT invariants: the token's `alg` header only *selects* among the algorithms the
//! operator configured, it never widens them; `none` does not exist for us; `exp` is
//! required; `nbf` is honoured when present; clocks may disagree by [`LEEWAY_SECS`].

use std::fmt;
use std::time::Duration;

use http::HeaderMap;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Header carrying the project API key.
pub const API_KEY_HEADER: &str = "x-api-key";
/// Clock skew tolerated on `exp` and `nbf`, in seconds.
pub const LEEWAY_SECS: u64 = 30;
/// Shortest accepted HS256 secret, in bytes (RFC 7518 §3.2: at least the hash size).
pub const MIN_SECRET_BYTES: usize = 32;
/// Longest accepted `sub` claim, in characters.
pub const MAX_SUB_CHARS: usize = 256;
/// Longest bearer token looked at, in bytes; longer ones are refused unparsed.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

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
pub struct JwtVerifier {
    hmac: Option<HmacKeys>,
    public: Option<(Algorithm, DecodingKey)>,
}

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

/// Why a caller was not authenticated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("the X-API-Key header is required")]
    MissingApiKey,
    #[error(
        "the X-API-Key header is malformed: expected pk_ or sk_ followed by 64 lowercase \
         hexadecimal characters"
    )]
    MalformedApiKey,
    #[error("the API key is not recognised")]
    UnknownApiKey,
    #[error("authentication required: send Authorization: Bearer <JWT>")]
    MissingToken,
    #[error("the Authorization header must be `Bearer <JWT>`")]
    MalformedAuthorization,
    #[error("invalid bearer token: {0}")]
    InvalidToken(String),
    #[error("the bearer token has expired")]
    ExpiredToken,
    #[error("bearer tokens are not accepted: no JWT secret or public key is configured")]
    NoVerifierConfigured,
}

/// Who is calling, after authentication. `user` is the JWT `sub` when a valid bearer
/// token was sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub project: String,
    pub key: KeyKind,
    pub user: Option<String>,
}

impl Caller {
    /// Whether the call was made with a secret (server-side, full-access) key.
    pub fn is_secret(&self) -> bool {
        self.key == KeyKind::Secret
    }

    /// The user id, or `AuthError::MissingToken`: for endpoints that require a token
    /// (writes, presign).
    pub fn require_user(&self) -> Result<&str, AuthError> {
        self.user.as_deref().ok_or(AuthError::MissingToken)
    }
}

/// Reads `X-API-Key` (required) and `Authorization: Bearer <jwt>` (optional; when
/// present it must verify: a bad token is an error, never anonymous access) from the
/// request headers. A header sent twice is malformed rather than guessed at.
pub fn authenticate(
    headers: &HeaderMap,
    keys: &KeyRing,
    jwt: Option<&JwtVerifier>,
) -> Result<Caller, AuthError> {
    let key = match single(headers, API_KEY_HEADER) {
        Single::Absent => return Err(AuthError::MissingApiKey),
        Single::Many => return Err(AuthError::MalformedApiKey),
        Single::One(value) => value.to_str().map_err(|_| AuthError::MalformedApiKey)?,
    };
    let api_key = keys.authenticate(key)?;
    let user = match single(headers, http::header::AUTHORIZATION.as_str()) {
        Single::Absent => None,
        Single::Many => return Err(AuthError::MalformedAuthorization),
        Single::One(value) => {
            let text = value
                .to_str()
                .map_err(|_| AuthError::MalformedAuthorization)?;
            let token = bearer_token(text).ok_or(AuthError::MalformedAuthorization)?;
            let verifier = jwt.ok_or(AuthError::NoVerifierConfigured)?;
            Some(verifier.verify(token)?.sub)
        }
    };
    Ok(Caller {
        project: api_key.project,
        key: api_key.kind,
        user,
    })
}

enum Single<'a> {
    Absent,
    One(&'a http::HeaderValue),
    Many,
}

fn single<'a>(headers: &'a HeaderMap, name: &str) -> Single<'a> {
    let mut values = headers.get_all(name).iter();
    match (values.next(), values.next()) {
        (None, _) => Single::Absent,
        (Some(value), None) => Single::One(value),
        (Some(_), Some(_)) => Single::Many,
    }
}

/// The token of a `Bearer <token>` value; the scheme is case-insensitive (RFC 7235).
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, rest) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let token = rest.trim_matches(' ');
    (!token.is_empty() && !token.contains(' ')).then_some(token)
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
    use super::*;
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use http::HeaderValue;

    const SECRET: &str = "0123456789abcdef0123456789abcdef-test-only";

    // Generated once with `openssl genrsa 2048 | openssl pkcs8 -topk8 -nocrypt` and
    // `openssl ecparam -name prime256v1 -genkey -noout | openssl pkcs8 -topk8 -nocrypt`;
    // public halves with `openssl pkey -pubout`. Test-only keys.
    const RSA_PRIVATE: &str = "-----BEGIN PRIVATE KEY-----
MIIEvAIBADANBgkqhkiG9w0BAQEFAASCBKYwggSiAgEAAoIBAQCaWISXJsJSx7QZ
JF8TN6TebR932tnBqA2Ic6wPHDfJvSCWE2yg6haFtRsbLfux2+qa1+8d73L4XA7N
Ev7z7Dr3WX4rURvjLDlVgmBcH+xzaWOu5idfsyF2XP1IsFgtU2wh9Fc0hOdHAyeY
zap7jH5hNEUkd3Y5BOZh722eFObbsyrgezTDvO/olm6Znh+++alx2zjJc6JIsKVH
ILXDtrzpYsjkh3oWpsRSqLVMs88BpGO/ywuQhpLeYmjfD9IH0nCIjyZrIcwl8ruu
bbW1zrtOINacqbELg/nM520y4YvKJOn5bZPbtt6x/bkmBGKZ0RFi6+AxaF8yi7Wc
U/mgNia7AgMBAAECggEAP4MdTHWOkTHMUmw9E1NabIzK3i8YXDAjIXs32h/qdQF2
X0su8ChjjDGyLcUGRXIRYBZrNw5JaRm4nXqrnwQeX5pb6Mc/ioOwNBeqPz6Dthow
AtCCc0brBiHNuBOYtU4WuQIqwFnQMdCCgsZe2Og/ORChQxhFdcEmbDZyDRLczJqR
8oWCT55lIfQrNlHWoerPe+7eFKGMPxkx/ngOg49+Nw7ZtEPQX8kEa1ZzlqrbfRfc
ZsMDViDzOWoHgcs2AkYkqJRtL4Oj5aQM+qVJ/CyGZWGdJfXCVDAA/ROXfzi4Uqtp
qRbh0iwPSEVmxQlOg843ezDQsYq76rI5mCApQV0CAQKBgQDKpPPgtSznJANcqhkN
VThwms6sDPgF3g60hiEXfrtbLv1Ad7Uad9Az7/kYn+jm6m5Znyma0DqmCR6E57p/
AUb5jD1oJrOorzKLg+xfM06kUmdT7dbxFxor7z5y7gNG+lugyKxH9iOHmXerCB8y
FRSvotT8E5XwOS9J3warTSFZ4QKBgQDC/AvggCo6IHOoM3CYt/YQc23P6V42koa+
LggTkLcEaMl3FK1FFSRwwJlLmK7Jo3GjxVqkiFzY6fKMSv7UExyZjSFQRB5eALzS
Y+VPNJkgTllrhlGR6l3oeSVAQr1j6mgKCj9VE2N7qJ3o9UQB13ey/qmmWneOInaU
f3f44B8sGwKBgBFu22Qrce94k6l3IKya9j4Js1nty7CFh/JTz6j7yBZyFmtjYPsj
749oR5+sshabeF7RaHzfCQyboDqCzPJ8I6T4QZgiLDaIy+pgsQcHnO5aAHWh8mnP
OPsqm867VyDWDOfqG5gdPrU9qKPYEQb39U2ezn/ZF38RDFZoj2RRQFtBAoGAEyUy
eVm8S7bSBGsAnE474AOlfau5b3xVtKjKbDlibxFm7sVd+hGIYXXX139nci8VQnJn
Yw5sp3PZOANJIEO8JCuiYMI/hRVndPUQGAXfHzfyOceXjM9JZ0E18ihbdksW6h11
eIIN25+D2dLzWYbxnua4e7gYUyF5KT2W5x4CkY8CgYBGXdSXgWm9r0hNjPpWFsBj
vhQx1BLD8SzkOSdB9UneD09vnuBAyG1aRynfOFOWLpxQ6Zzg0Sq2T/PW1ypp1d0M
4He39DSTyddtA/LiYwQS37cvmP/1/Pna36nBZp4qEXrISdhgwtH1FBj6bdmDP/yr
bKirJDaqrlZgSyiIaw6T2w==
-----END PRIVATE KEY-----
";
    const RSA_PUBLIC: &str = "-----BEGIN PUBLIC KEY-----
MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAmliElybCUse0GSRfEzek
3m0fd9rZwagNiHOsDxw3yb0glhNsoOoWhbUbGy37sdvqmtfvHe9y+FwOzRL+8+w6
91l+K1Eb4yw5VYJgXB/sc2ljruYnX7Mhdlz9SLBYLVNsIfRXNITnRwMnmM2qe4x+
YTRFJHd2OQTmYe9tnhTm27Mq4Hs0w7zv6JZumZ4fvvmpcds4yXOiSLClRyC1w7a8
6WLI5Id6FqbEUqi1TLPPAaRjv8sLkIaS3mJo3w/SB9JwiI8mayHMJfK7rm21tc67
TiDWnKmxC4P5zOdtMuGLyiTp+W2T27besf25JgRimdERYuvgMWhfMou1nFP5oDYm
uwIDAQAB
-----END PUBLIC KEY-----
";
    const EC_PRIVATE: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgPl2FxoOGCaWGuq7i
UtJP2d98GzijSXV2+EdqrlWPsO2hRANCAAQQYDtsZh4kKV9PAZ4rQxZR/oUfjefA
l3MNjUdOx0bDNgV6KRDkrVH06wHZtyWfpAtbYTsdsDOsAYVI+BLi89nF
-----END PRIVATE KEY-----
";
    const EC_PUBLIC: &str = "-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEEGA7bGYeJClfTwGeK0MWUf6FH43n
wJdzDY1HTsdGwzYFeikQ5K1R9OsB2bcln6QLW2E7HbAzrAGFSPgS4vPZxQ==
-----END PUBLIC KEY-----
";
    const EC_P384_PUBLIC: &str = "-----BEGIN PUBLIC KEY-----
MHYwEAYHKoZIzj0CAQYFK4EEACIDYgAEdDZJcWI9/muW72eHUe6+Z4j/gTWGtr6Z
xIrxcZv3h+P2ICKU/igr4jnBsh/U73z6ImPvbgObSRnyxMG0TlGjKd0HkrkcuNHD
/BV0RD1kpGOjIAQqrTGG8qW8jGA7Pfi9
-----END PUBLIC KEY-----
";

    const PK: &str = "pk_00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
    const SK: &str = "sk_ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100";

    fn ring() -> KeyRing {
        let setting = format!(
            " alpha:{} , beta:{},",
            sha256_hex(PK),
            sha256_hex(SK).to_uppercase()
        );
        KeyRing::parse(&setting).unwrap()
    }

    fn now() -> i64 {
        jsonwebtoken::get_current_timestamp() as i64
    }

    fn hs256() -> JwtVerifier {
        JwtVerifier::from_settings(SECRET, "").unwrap().unwrap()
    }

    fn sign(alg: Algorithm, key: &EncodingKey, claims: serde_json::Value) -> String {
        jsonwebtoken::encode(&Header::new(alg), &claims, key).unwrap()
    }

    fn hs_key(secret: &str) -> EncodingKey {
        EncodingKey::from_secret(secret.as_bytes())
    }

    fn claims(sub: &str, exp_in: i64) -> serde_json::Value {
        serde_json::json!({ "sub": sub, "exp": now() + exp_in })
    }

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

    #[test]
    fn debug_output_hides_hashes_and_secrets() {
        let text = format!("{:?}", ring());
        assert!(text.contains("alpha:") && text.contains("beta:"), "{text}");
        assert!(!text.contains(&sha256_hex(PK)), "{text}");
        let text = format!("{:?}", hs256());
        assert!(text.contains("HS256") && !text.contains(SECRET), "{text}");
    }

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

    #[test]
    fn authenticate_headers() {
        let ring = ring();
        let v = hs256();
        let token = v.mint("user-7", Duration::from_secs(60)).unwrap();
        let expired = sign(Algorithm::HS256, &hs_key(SECRET), claims("u", -3600));
        let caller = |user: Option<&str>| Caller {
            project: "alpha".into(),
            key: KeyKind::Publishable,
            user: user.map(str::to_owned),
        };
        let bearer = format!("Bearer {token}");
        let lower = format!("bearer  {token}");
        let expired = format!("Bearer {expired}");
        let basic = "Basic dXNlcjpwYXNz".to_owned();
        type Headers<'a> = Vec<(&'static str, &'a str)>;
        let cases: Vec<(Headers, Result<Caller, AuthError>)> = vec![
            (vec![], Err(AuthError::MissingApiKey)),
            (
                vec![("authorization", &bearer)],
                Err(AuthError::MissingApiKey),
            ),
            (vec![("x-api-key", "nope")], Err(AuthError::MalformedApiKey)),
            (
                vec![("x-api-key", PK), ("x-api-key", PK)],
                Err(AuthError::MalformedApiKey),
            ),
            (vec![("x-api-key", PK)], Ok(caller(None))),
            (
                vec![("x-api-key", PK), ("authorization", &bearer)],
                Ok(caller(Some("user-7"))),
            ),
            (
                vec![("x-api-key", PK), ("authorization", &lower)],
                Ok(caller(Some("user-7"))),
            ),
            (
                vec![("x-api-key", PK), ("authorization", &basic)],
                Err(AuthError::MalformedAuthorization),
            ),
            (
                vec![("x-api-key", PK), ("authorization", "Bearer")],
                Err(AuthError::MalformedAuthorization),
            ),
            (
                vec![("x-api-key", PK), ("authorization", "Bearer ")],
                Err(AuthError::MalformedAuthorization),
            ),
            (
                vec![("x-api-key", PK), ("authorization", &token)],
                Err(AuthError::MalformedAuthorization),
            ),
            (
                vec![("x-api-key", PK), ("authorization", &expired)],
                Err(AuthError::ExpiredToken),
            ),
            (
                vec![("x-api-key", PK), ("authorization", "Bearer a.b.c")],
                Err(invalid("malformed token")),
            ),
        ];
        for (pairs, expected) in cases {
            let mut headers = HeaderMap::new();
            for (name, value) in &pairs {
                headers.append(*name, HeaderValue::from_str(value).unwrap());
            }
            let got = authenticate(&headers, &ring, Some(&v));
            match (&got, &expected) {
                // The exact wording of a JSON error is serde's business.
                (Err(AuthError::InvalidToken(_)), Err(AuthError::InvalidToken(_))) => {}
                _ => assert_eq!(got, expected, "{pairs:?}"),
            }
        }

        let mut headers = HeaderMap::new();
        headers.insert("x-api-key", HeaderValue::from_static(SK));
        let c = authenticate(&headers, &ring, None).unwrap();
        assert!(c.is_secret());
        assert_eq!(c.require_user(), Err(AuthError::MissingToken));
        headers.insert("authorization", HeaderValue::from_str(&bearer).unwrap());
        assert_eq!(
            authenticate(&headers, &ring, None),
            Err(AuthError::NoVerifierConfigured)
        );
        let c = authenticate(&headers, &ring, Some(&v)).unwrap();
        assert_eq!(c.require_user(), Ok("user-7"));
        assert!(c.is_secret());
        headers.insert("x-api-key", HeaderValue::from_bytes(b"pk_\xff").unwrap());
        assert_eq!(
            authenticate(&headers, &ring, Some(&v)),
            Err(AuthError::MalformedApiKey)
        );
    }
}
