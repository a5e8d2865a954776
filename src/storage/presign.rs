//! Presigned URLs for the embedded local store: the API listener itself answers them at
//! `/storage/...`, after checking an HMAC-SHA256 signature and the expiry carried in the
//! query string. What a URL permits (method, key, content type, size cap, part) is part of
//! the signed text, so none of it can be changed without breaking the signature.

use hmac::{Hmac, Mac};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use sha2::Sha256;
use time::OffsetDateTime;

use crate::key::ObjectKey;

type HmacSha256 = Hmac<Sha256>;

/// Path prefix of object PUT/GET URLs on the API listener.
pub const OBJECT_PATH: &str = "/storage/object";
/// Path prefix of multipart part PUT URLs on the API listener.
pub const PART_PATH: &str = "/storage/part";

/// Query values keep `-._~` raw and encode everything else.
const QUERY: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// What a presigned URL allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Permit {
    /// Upload one object with exactly this content type and at most `max_size` bytes
    /// (exactly `max_size` on S3, see `Storage::signs_exact_size`).
    Put {
        key: ObjectKey,
        content_type: String,
        max_size: u64,
    },
    /// Download one object, served with this file name and content type.
    Get {
        key: ObjectKey,
        filename: String,
        content_type: String,
    },
    /// Upload part `part` of multipart upload `upload_id`.
    Part {
        key: ObjectKey,
        upload_id: String,
        part: u32,
        max_size: u64,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PresignError {
    #[error("the presigned URL is malformed: {0}")]
    Malformed(String),
    #[error("the presigned URL has expired")]
    Expired,
    #[error("the presigned URL signature does not match")]
    BadSignature,
}

/// Signs and checks local presigned URLs.
#[derive(Clone)]
pub struct LocalSigner {
    secret: Vec<u8>,
    base_url: String,
}

impl std::fmt::Debug for LocalSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalSigner")
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

fn enc(value: &str) -> String {
    utf8_percent_encode(value, QUERY).to_string()
}

impl LocalSigner {
    pub fn new(secret: Vec<u8>, base_url: &str) -> LocalSigner {
        LocalSigner {
            secret,
            base_url: base_url.trim_end_matches('/').to_owned(),
        }
    }

    /// A URL granting `permit` until `expires`.
    pub fn url(&self, permit: &Permit, expires: OffsetDateTime) -> String {
        let exp = expires.unix_timestamp();
        let sig = self.signature(permit, exp);
        match permit {
            Permit::Put {
                key,
                content_type,
                max_size,
            } => format!(
                "{}{OBJECT_PATH}?key={}&ct={}&max={max_size}&exp={exp}&sig={sig}",
                self.base_url,
                enc(key.as_str()),
                enc(content_type)
            ),
            Permit::Get {
                key,
                filename,
                content_type,
            } => format!(
                "{}{OBJECT_PATH}?key={}&ct={}&name={}&exp={exp}&sig={sig}",
                self.base_url,
                enc(key.as_str()),
                enc(content_type),
                enc(filename)
            ),
            Permit::Part {
                key,
                upload_id,
                part,
                max_size,
            } => format!(
                "{}{PART_PATH}?key={}&upload={}&part={part}&max={max_size}&exp={exp}&sig={sig}",
                self.base_url,
                enc(key.as_str()),
                enc(upload_id)
            ),
        }
    }

    /// Checks a request to a storage path: the method and path pick the permit kind, the
    /// query supplies its fields, and the signature and expiry must hold at `now`.
    pub fn verify(
        &self,
        method: &http::Method,
        path: &str,
        query: &str,
        now: OffsetDateTime,
    ) -> Result<Permit, PresignError> {
        let q = Query::parse(query)?;
        let key = ObjectKey::parse(q.get("key")?)
            .map_err(|e| PresignError::Malformed(format!("key: {e}")))?;
        let permit = match (method, path) {
            (&http::Method::PUT, OBJECT_PATH) => Permit::Put {
                key,
                content_type: q.get("ct")?.to_owned(),
                max_size: q.number("max")?,
            },
            (&http::Method::GET | &http::Method::HEAD, OBJECT_PATH) => Permit::Get {
                key,
                filename: q.get("name")?.to_owned(),
                content_type: q.get("ct")?.to_owned(),
            },
            (&http::Method::PUT, PART_PATH) => Permit::Part {
                key,
                upload_id: q.get("upload")?.to_owned(),
                part: u32::try_from(q.number("part")?)
                    .map_err(|_| PresignError::Malformed("part".into()))?,
                max_size: q.number("max")?,
            },
            _ => return Err(PresignError::Malformed(format!("{method} {path}"))),
        };
        let exp =
            i64::try_from(q.number("exp")?).map_err(|_| PresignError::Malformed("exp".into()))?;
        let given = hex::decode(q.get("sig")?).map_err(|_| PresignError::BadSignature)?;
        self.mac(&permit, exp)
            .verify_slice(&given)
            .map_err(|_| PresignError::BadSignature)?;
        if now.unix_timestamp() > exp {
            return Err(PresignError::Expired);
        }
        Ok(permit)
    }

    fn signature(&self, permit: &Permit, exp: i64) -> String {
        hex::encode(self.mac(permit, exp).finalize().into_bytes())
    }

    fn mac(&self, permit: &Permit, exp: i64) -> HmacSha256 {
        let text = match permit {
            Permit::Put {
                key,
                content_type,
                max_size,
            } => format!("PUT\n{key}\n{content_type}\n{max_size}\n{exp}"),
            Permit::Get {
                key,
                filename,
                content_type,
            } => format!("GET\n{key}\n{content_type}\n{filename}\n{exp}"),
            Permit::Part {
                key,
                upload_id,
                part,
                max_size,
            } => format!("PART\n{key}\n{upload_id}\n{part}\n{max_size}\n{exp}"),
        };
        let mut mac =
            HmacSha256::new_from_slice(&self.secret).expect("invariant: HMAC takes any key length");
        mac.update(text.as_bytes());
        mac
    }
}

/// Decoded query parameters; a repeated parameter is malformed (no ambiguity to exploit).
struct Query(Vec<(String, String)>);

impl Query {
    fn parse(query: &str) -> Result<Query, PresignError> {
        let mut pairs: Vec<(String, String)> = Vec::new();
        for part in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = part.split_once('=').unwrap_or((part, ""));
            let decode = |s: &str| {
                percent_decode_str(&s.replace('+', " "))
                    .decode_utf8()
                    .map(|c| c.into_owned())
                    .map_err(|_| PresignError::Malformed(format!("{k} is not UTF-8")))
            };
            let (k, v) = (decode(k)?, decode(v)?);
            if pairs.iter().any(|(seen, _)| *seen == k) {
                return Err(PresignError::Malformed(format!("{k} given twice")));
            }
            pairs.push((k, v));
        }
        Ok(Query(pairs))
    }

    fn get(&self, name: &str) -> Result<&str, PresignError> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .ok_or_else(|| PresignError::Malformed(format!("{name} is missing")))
    }

    fn number(&self, name: &str) -> Result<u64, PresignError> {
        self.get(name)?
            .parse()
            .map_err(|_| PresignError::Malformed(format!("{name} is not a number")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Method;
    use time::Duration;

    fn signer() -> LocalSigner {
        LocalSigner::new(b"secret".to_vec(), "http://127.0.0.1:8081/")
    }

    fn split(url: &str) -> (&str, &str) {
        let rest = url.strip_prefix("http://127.0.0.1:8081").unwrap();
        rest.split_once('?').unwrap()
    }

    fn put() -> Permit {
        Permit::Put {
            key: ObjectKey::parse("p/2026/a b+c.jpg").unwrap(),
            content_type: "image/jpeg".into(),
            max_size: 1000,
        }
    }

    #[test]
    fn round_trips_every_permit() {
        let s = signer();
        let now = OffsetDateTime::now_utc();
        let permits = [
            put(),
            Permit::Get {
                key: ObjectKey::parse("p/x.png").unwrap(),
                filename: "Ünïcode & co.png".into(),
                content_type: "image/png".into(),
            },
            Permit::Part {
                key: ObjectKey::parse("p/big.mp4").unwrap(),
                upload_id: "abc-123".into(),
                part: 7,
                max_size: 5_000_000,
            },
        ];
        for permit in permits {
            let url = s.url(&permit, now + Duration::minutes(15));
            let (path, query) = split(&url);
            let method = match permit {
                Permit::Get { .. } => Method::GET,
                _ => Method::PUT,
            };
            assert_eq!(s.verify(&method, path, query, now), Ok(permit));
        }
    }

    #[test]
    fn tampering_expiry_and_wrong_method_are_refused() {
        let s = signer();
        let now = OffsetDateTime::now_utc();
        let url = s.url(&put(), now + Duration::minutes(15));
        let (path, query) = split(&url);
        for (from, to) in [
            ("max=1000", "max=1001"),
            ("ct=image%2Fjpeg", "ct=image%2Fpng"),
            ("key=p%2F2026", "key=q%2F2026"),
        ] {
            let tampered = query.replace(from, to);
            assert_ne!(tampered, query, "{from}");
            assert_eq!(
                s.verify(&Method::PUT, path, &tampered, now),
                Err(PresignError::BadSignature),
                "{from}"
            );
        }
        assert_eq!(
            s.verify(&Method::PUT, path, query, now + Duration::minutes(16)),
            Err(PresignError::Expired)
        );
        assert!(matches!(
            s.verify(&Method::GET, path, query, now),
            Err(PresignError::Malformed(_))
        ));
        let other = LocalSigner::new(b"other".to_vec(), "http://127.0.0.1:8081");
        assert_eq!(
            other.verify(&Method::PUT, path, query, now),
            Err(PresignError::BadSignature)
        );
        let doubled = format!("{query}&max=5");
        assert!(matches!(
            s.verify(&Method::PUT, path, &doubled, now),
            Err(PresignError::Malformed(_))
        ));
    }
}
