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
//!
//! `keys` holds the API-key formats and the ring, `jwt` the token verifier; this file the
//! [`Caller`] and `authenticate`, which reads the request headers.

mod jwt;
mod keys;

use http::HeaderMap;

pub use jwt::{Claims, JwtVerifier};
pub use keys::{ApiKey, KeyKind, KeyRing, is_project_name, mint_key, sha256_hex};

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

/// Keys, secrets and helpers the tests of every `auth` file share.
#[cfg(test)]
mod fixtures {
    pub(super) use super::*;
    pub(super) use jsonwebtoken::{Algorithm, EncodingKey, Header};

    pub(super) const SECRET: &str = "0123456789abcdef0123456789abcdef-test-only";

    // Generated once with `openssl genrsa 2048 | openssl pkcs8 -topk8 -nocrypt` and
    // `openssl ecparam -name prime256v1 -genkey -noout | openssl pkcs8 -topk8 -nocrypt`;
    // public halves with `openssl pkey -pubout`. Test-only keys.
    pub(super) const RSA_PRIVATE: &str = "-----BEGIN PRIVATE KEY-----
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
    pub(super) const RSA_PUBLIC: &str = "-----BEGIN PUBLIC KEY-----
MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAmliElybCUse0GSRfEzek
3m0fd9rZwagNiHOsDxw3yb0glhNsoOoWhbUbGy37sdvqmtfvHe9y+FwOzRL+8+w6
91l+K1Eb4yw5VYJgXB/sc2ljruYnX7Mhdlz9SLBYLVNsIfRXNITnRwMnmM2qe4x+
YTRFJHd2OQTmYe9tnhTm27Mq4Hs0w7zv6JZumZ4fvvmpcds4yXOiSLClRyC1w7a8
6WLI5Id6FqbEUqi1TLPPAaRjv8sLkIaS3mJo3w/SB9JwiI8mayHMJfK7rm21tc67
TiDWnKmxC4P5zOdtMuGLyiTp+W2T27besf25JgRimdERYuvgMWhfMou1nFP5oDYm
uwIDAQAB
-----END PUBLIC KEY-----
";
    pub(super) const EC_PRIVATE: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgPl2FxoOGCaWGuq7i
UtJP2d98GzijSXV2+EdqrlWPsO2hRANCAAQQYDtsZh4kKV9PAZ4rQxZR/oUfjefA
l3MNjUdOx0bDNgV6KRDkrVH06wHZtyWfpAtbYTsdsDOsAYVI+BLi89nF
-----END PRIVATE KEY-----
";
    pub(super) const EC_PUBLIC: &str = "-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEEGA7bGYeJClfTwGeK0MWUf6FH43n
wJdzDY1HTsdGwzYFeikQ5K1R9OsB2bcln6QLW2E7HbAzrAGFSPgS4vPZxQ==
-----END PUBLIC KEY-----
";
    pub(super) const EC_P384_PUBLIC: &str = "-----BEGIN PUBLIC KEY-----
MHYwEAYHKoZIzj0CAQYFK4EEACIDYgAEdDZJcWI9/muW72eHUe6+Z4j/gTWGtr6Z
xIrxcZv3h+P2ICKU/igr4jnBsh/U73z6ImPvbgObSRnyxMG0TlGjKd0HkrkcuNHD
/BV0RD1kpGOjIAQqrTGG8qW8jGA7Pfi9
-----END PUBLIC KEY-----
";

    pub(super) const PK: &str =
        "pk_00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
    pub(super) const SK: &str =
        "sk_ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100";

    pub(super) fn ring() -> KeyRing {
        let setting = format!(
            " alpha:{} , beta:{},",
            sha256_hex(PK),
            sha256_hex(SK).to_uppercase()
        );
        KeyRing::parse(&setting).unwrap()
    }

    pub(super) fn now() -> i64 {
        jsonwebtoken::get_current_timestamp() as i64
    }

    pub(super) fn hs256() -> JwtVerifier {
        JwtVerifier::from_settings(SECRET, "").unwrap().unwrap()
    }

    pub(super) fn sign(alg: Algorithm, key: &EncodingKey, claims: serde_json::Value) -> String {
        jsonwebtoken::encode(&Header::new(alg), &claims, key).unwrap()
    }

    pub(super) fn hs_key(secret: &str) -> EncodingKey {
        EncodingKey::from_secret(secret.as_bytes())
    }

    pub(super) fn claims(sub: &str, exp_in: i64) -> serde_json::Value {
        serde_json::json!({ "sub": sub, "exp": now() + exp_in })
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::*;
    use http::HeaderValue;
    use std::time::Duration;

    #[test]
    fn debug_output_hides_hashes_and_secrets() {
        let text = format!("{:?}", ring());
        assert!(text.contains("alpha:") && text.contains("beta:"), "{text}");
        assert!(!text.contains(&sha256_hex(PK)), "{text}");
        let text = format!("{:?}", hs256());
        assert!(text.contains("HS256") && !text.contains(SECRET), "{text}");
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
                Err(AuthError::InvalidToken("malformed token".into())),
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
