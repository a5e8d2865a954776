//! The storage API as a client written from the original product's documentation uses it
//! (SPEC §2, issue 17): `bucket` as the app's own label, refusals that name the field or
//! parameter, uploads held to what was declared, multipart parts checked, and the CDN
//! links the API hands out. Every test runs on whatever backends the environment names, so
//! `scripts/test.sh` runs them on local store + SQLite, S3 + SQLite and S3 + PostgreSQL.

use http::Method;
use imgedge::key::ObjectKey;
use serde_json::{Value, json};

use crate::api::upload_with;
use crate::support::{PK, Resp, SK, TestServer, fixture};

const PRESIGN: &str = "/v1/files/presigned-url";

/// POSTs `body` to `path` as alice, with the publishable key.
async fn post(s: &TestServer, path: &str, body: Value) -> Resp {
    s.api(Method::POST, path, PK, Some("alice"), Some(body))
        .await
}

fn error(r: &Resp) -> (u16, String, String) {
    let body = r.json();
    assert_eq!(body["success"], false, "{body}");
    (
        r.status.as_u16(),
        body["error"]["code"].as_str().unwrap_or("").to_owned(),
        body["error"]["message"].as_str().unwrap_or("").to_owned(),
    )
}

async fn list(s: &TestServer, query: &str) -> Value {
    let r = s
        .api(Method::GET, &format!("/v1/files?{query}"), SK, None, None)
        .await;
    assert_eq!(
        r.status,
        200,
        "{query}: {}",
        String::from_utf8_lossy(&r.body)
    );
    r.json()
}

fn buckets_of(listing: &Value) -> Vec<String> {
    listing["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["bucket"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn bucket_is_the_apps_own_label() {
    let s = TestServer::start().await;
    for (name, bucket) in [
        ("landscape.jpg", Some("avatars")),
        ("alpha.png", Some("images")),
        ("photo.webp", Some("avatars")),
        ("exif_rotated.jpg", Some("documents.v2")),
        ("cmyk.jpg", None),
    ] {
        let extra = match bucket {
            Some(b) => json!({ "bucket": b }),
            None => json!({}),
        };
        let file = upload_with(&s, "alice", name, "public", extra).await;
        assert_eq!(file["bucket"], bucket.unwrap_or("default"), "{name}");
    }

    // Filter.
    let avatars = list(&s, "bucket=avatars").await;
    assert_eq!(avatars["pagination"]["total"], 2);
    assert_eq!(buckets_of(&avatars), ["avatars", "avatars"]);
    assert_eq!(list(&s, "bucket=images").await["pagination"]["total"], 1);
    assert_eq!(list(&s, "bucket=default").await["pagination"]["total"], 1);
    assert_eq!(
        list(&s, "bucket=nothing-here").await["pagination"]["total"],
        0
    );
    // Sort, both ways.
    let asc = list(&s, "sortBy=bucket&sortDirection=asc").await;
    assert_eq!(
        buckets_of(&asc),
        ["avatars", "avatars", "default", "documents.v2", "images"]
    );
    let desc = list(&s, "sortBy=bucket&sortDirection=desc").await;
    assert_eq!(
        buckets_of(&desc),
        ["images", "documents.v2", "default", "avatars", "avatars"]
    );
    // Anonymous readers of public files see the label too, and can filter by it.
    let r = s
        .api(Method::GET, "/v1/files?bucket=images", PK, None, None)
        .await;
    assert_eq!(buckets_of(&r.json()), ["images"]);

    // The objects themselves all live in the operator's store, whatever the label.
    for item in list(&s, "").await["items"].as_array().unwrap() {
        let key = ObjectKey::parse(item["s3Key"].as_str().unwrap()).unwrap();
        s.app.storage.head(&key).await.expect("stored");
    }

    // Bad labels, at registration and in listings, name the field and say why.
    for bad in [
        "Avatars",
        "",
        "with space",
        "ünïcode",
        &"x".repeat(64),
        "a/b",
    ] {
        let presigned = post(
            &s,
            PRESIGN,
            json!({ "filename": "b.jpg", "contentType": "image/jpeg", "fileSize": 10 }),
        )
        .await
        .json();
        let r = s
            .api(
                Method::POST,
                "/v1/files",
                PK,
                Some("alice"),
                Some(json!({ "s3Key": presigned["key"], "originalName": "b.jpg",
                    "mimeType": "image/jpeg", "size": 10, "bucket": bad })),
            )
            .await;
        let (status, code, message) = error(&r);
        assert_eq!(
            (status, code.as_str()),
            (400, "data/validation-error"),
            "{bad:?}"
        );
        assert!(message.starts_with("bucket: "), "{bad:?}: {message}");
        let r = s
            .api(
                Method::GET,
                &format!(
                    "/v1/files?bucket={}",
                    percent_encoding::utf8_percent_encode(bad, percent_encoding::NON_ALPHANUMERIC)
                ),
                SK,
                None,
                None,
            )
            .await;
        let (status, code, message) = error(&r);
        assert_eq!((status, code.as_str()), (400, "common/invalid-parameters"));
        assert!(message.contains("`bucket`"), "{bad:?}: {message}");
    }
    s.stop().await;
}

/// Registration and presign bodies: every refusal names the field by its path and says
/// what was expected and what came.
#[tokio::test]
async fn body_errors_name_the_field() {
    let s = TestServer::start().await;
    let presign_cases: Vec<(Value, &str)> = vec![
        (
            json!({ "filename": "a.jpg", "contentType": "image/jpeg", "fileSize": "big" }),
            "fileSize: expected an integer, got a string",
        ),
        (
            json!({ "filename": "a.jpg", "contentType": "image/jpeg", "fileSize": 1.5 }),
            "fileSize: expected an integer, got 1.5",
        ),
        (
            json!({ "filename": "a.jpg", "contentType": "image/jpeg", "fileSize": 1e300 }),
            "fileSize: expected an integer, got 1e+300",
        ),
        (json!({ "filename": "a.jpg" }), "contentType: is required"),
        (
            json!({ "filename": null, "contentType": "image/jpeg" }),
            "filename: expected a string, got null",
        ),
        (
            json!({ "filename": ["a.jpg"], "contentType": "image/jpeg" }),
            "filename: expected a string, got an array",
        ),
        (
            json!({ "filename": "a.jpg", "contentType": "image/jpeg", "colour": "red" }),
            "colour: is not a known field (expected one of filename, contentType, fileSize, visibility, category)",
        ),
        (json!(["a.jpg"]), "the request body must be a JSON object"),
        (json!("a.jpg"), "the request body must be a JSON object"),
    ];
    for (body, expected) in presign_cases {
        let (status, code, message) = error(&post(&s, PRESIGN, body.clone()).await);
        assert_eq!(
            (status, code.as_str(), message.as_str()),
            (400, "data/validation-error", expected),
            "{body}"
        );
    }
    // Broken JSON says where.
    let r = s
        .send(
            Method::POST,
            &format!("http://{}/v1/files/presigned-url", s.api),
            &[
                ("x-api-key", PK),
                ("authorization", &format!("Bearer {}", s.token("alice"))),
                ("content-type", "application/json"),
            ],
            "{\"filename\": \"a.jpg\",\n \"contentType\": ",
        )
        .await;
    let (status, code, message) = error(&r);
    assert_eq!((status, code.as_str()), (400, "data/validation-error"));
    assert!(
        message.starts_with("invalid JSON at line 2 column"),
        "{message}"
    );

    // Registration: nested fields by path.
    let presigned = post(
        &s,
        PRESIGN,
        json!({ "filename": "b.jpg", "contentType": "image/jpeg", "fileSize": 10 }),
    )
    .await
    .json();
    let base = json!({ "s3Key": presigned["key"], "originalName": "b.jpg", "mimeType": "image/jpeg", "size": 10 });
    let with = |k: &str, v: Value| {
        let mut b = base.clone();
        b[k] = v;
        b
    };
    let register_cases: Vec<(Value, &str)> = vec![
        (
            with("size", json!("10")),
            "size: expected an integer, got a string",
        ),
        (
            with("size", json!(null)),
            "size: expected an integer, got null",
        ),
        (
            with("width", json!(-1)),
            "width: expected an integer from 0 to 4294967295, got -1",
        ),
        (
            with("metadata", json!({ "tags": ["a", "b", 5] })),
            "metadata.tags[2]: expected a string, got a number",
        ),
        (
            with("metadata", json!({ "tags": "a,b" })),
            "metadata.tags: expected an array of strings, got a string",
        ),
        (
            with("metadata", json!({ "alt": true })),
            "metadata.alt: expected a string, got a boolean",
        ),
        (
            with("metadata", json!({ "colour": "red" })),
            "metadata.colour: is not a known field (expected one of category, tags, description, alt, relatedEntityId, custom)",
        ),
        (
            with("metadata", json!([1])),
            "metadata: expected an object, got an array",
        ),
        (
            with("sharedWith", json!("bob")),
            "sharedWith: expected an array, got a string",
        ),
        (
            with("sharedWith", json!(["bob", 7])),
            "sharedWith[1]: expected a string, got 7",
        ),
        (
            with("sharedWith", json!(["bob", ""])),
            "sharedWith[1]: must be a user id of 1 to 256 bytes",
        ),
        (
            with("sharedWith", json!(["bob", "eve\u{0}"])),
            "sharedWith[1]: must not contain control characters",
        ),
        (
            with("visibility", json!(3)),
            "visibility: expected a string, got 3",
        ),
    ];
    for (body, expected) in register_cases {
        let r = s
            .api(
                Method::POST,
                "/v1/files",
                PK,
                Some("alice"),
                Some(body.clone()),
            )
            .await;
        let (status, code, message) = error(&r);
        assert_eq!(
            (status, code.as_str(), message.as_str()),
            (400, "data/validation-error", expected),
            "{body}"
        );
    }
    s.stop().await;
}

#[tokio::test]
async fn query_errors_name_the_parameter() {
    let s = TestServer::start().await;
    upload_with(&s, "alice", "landscape.jpg", "public", json!({})).await;
    for (query, parameter) in [
        ("mimeType=%00", "mimeType"),
        ("search=cat%00dog", "search"),
        ("sortBy=%00", "sortBy"),
        ("ownerId=%01", "ownerId"),
        ("ownerId=%ff", "ownerId"),
        ("bucket=%ff%fe", "bucket"),
        ("mimeType=image%2Fjpeg%0a", "mimeType"),
        ("limit=%00", "limit"),
        ("page=1e3", "page"),
        ("visibility=%00public", "visibility"),
    ] {
        for key in [PK, SK] {
            let r = s
                .api(Method::GET, &format!("/v1/files?{query}"), key, None, None)
                .await;
            let (status, code, message) = error(&r);
            assert_eq!(
                (status, code.as_str()),
                (400, "common/invalid-parameters"),
                "{query}: {message}"
            );
            assert!(
                message.contains(&format!("`{parameter}`")),
                "{query}: {message}"
            );
        }
    }
    // Text that is merely unusual is a filter like any other.
    for query in [
        "search=%25_%5C%27%22",
        "mimeType=image%2Fjpeg%3B%20q%3D1",
        "ownerId=%E2%9C%93",
    ] {
        let r = s
            .api(Method::GET, &format!("/v1/files?{query}"), SK, None, None)
            .await;
        assert_eq!(
            r.status,
            200,
            "{query}: {}",
            String::from_utf8_lossy(&r.body)
        );
    }
    s.stop().await;
}

/// A small deterministic generator (xorshift64*), so a failing case can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn bytes(&mut self) -> Vec<u8> {
        let len = self.below(12);
        (0..len)
            .map(|_| match self.below(4) {
                // Control bytes and bytes that are not UTF-8 on their own.
                0 => self.below(32) as u8,
                1 => 0x80 + self.below(128) as u8,
                _ => {
                    let text = b" azAZ09%_\\'\"/.-+&=;";
                    text[self.below(text.len())]
                }
            })
            .collect()
    }

    /// A JSON value of any type, strings included control characters and NUL.
    fn value(&mut self, depth: u32) -> Value {
        match self.below(if depth > 2 { 6 } else { 8 }) {
            0 => Value::Null,
            1 => json!(self.below(2) == 0),
            2 => json!(self.next() as i64),
            3 => json!((self.next() as f64) * 1e300),
            4 | 5 => json!(String::from_utf8_lossy(&self.bytes()).into_owned()),
            6 => Value::Array((0..self.below(4)).map(|_| self.value(depth + 1)).collect()),
            _ => {
                let mut map = serde_json::Map::new();
                for name in ["category", "tags", "alt", "custom", "x\u{0}"] {
                    if self.below(2) == 0 {
                        map.insert(name.into(), self.value(depth + 1));
                    }
                }
                Value::Object(map)
            }
        }
    }
}

/// Arbitrary bytes in every query parameter and arbitrary values in every body field
/// never reach the metadata store as a fault: each answer is a 2xx or a 4xx.
#[tokio::test]
async fn hostile_queries_and_bodies_never_get_a_5xx() {
    let s = TestServer::start().await;
    let file = upload_with(&s, "alice", "landscape.jpg", "public", json!({})).await;
    let id = file["id"].as_str().unwrap().to_owned();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let params = [
        "page",
        "limit",
        "sortBy",
        "sortDirection",
        "visibility",
        "ownerType",
        "ownerId",
        "bucket",
        "mimeType",
        "search",
    ];
    let enc = |b: &[u8]| {
        percent_encoding::percent_encode(b, percent_encoding::NON_ALPHANUMERIC).to_string()
    };
    for round in 0..150 {
        let mut query = String::new();
        for _ in 0..1 + rng.below(3) {
            let name = params[rng.below(params.len())];
            let value = rng.bytes();
            if !query.is_empty() {
                query.push('&');
            }
            query.push_str(&format!("{name}={}", enc(&value)));
        }
        for (key, user) in [(SK, None), (PK, Some("alice"))] {
            let r = s
                .api(Method::GET, &format!("/v1/files?{query}"), key, user, None)
                .await;
            assert!(
                r.status.is_success() || r.status.is_client_error(),
                "round {round}: GET /v1/files?{query} answered {}: {}",
                r.status,
                String::from_utf8_lossy(&r.body)
            );
        }
    }
    let fields = [
        "originalName",
        "visibility",
        "metadata",
        "sharedWith",
        "bucket",
        "mimeType",
        "size",
        "width",
    ];
    for round in 0..150 {
        let mut body = serde_json::Map::new();
        for _ in 0..1 + rng.below(3) {
            let field = fields[rng.below(fields.len())];
            body.insert(field.into(), rng.value(0));
        }
        // PATCH knows the first four fields; the rest are refused as unknown.
        let r = s
            .api(
                Method::PATCH,
                &format!("/v1/files/{id}"),
                PK,
                Some("alice"),
                Some(Value::Object(body.clone())),
            )
            .await;
        assert!(
            r.status.is_success() || r.status.is_client_error(),
            "round {round}: PATCH {} answered {}: {}",
            Value::Object(body.clone()),
            r.status,
            String::from_utf8_lossy(&r.body)
        );
        let mut register = json!({ "s3Key": file["s3Key"], "originalName": "a.jpg", "mimeType": "image/jpeg", "size": 1 });
        for (k, v) in &body {
            register[k] = v.clone();
        }
        let r = s
            .api(
                Method::POST,
                "/v1/files",
                PK,
                Some("alice"),
                Some(register.clone()),
            )
            .await;
        assert!(
            r.status.is_client_error(),
            "round {round}: POST /v1/files {register} answered {}: {}",
            r.status,
            String::from_utf8_lossy(&r.body)
        );
    }
    // The file is still readable after all that.
    let r = s
        .api(
            Method::GET,
            &format!("/v1/files/{id}"),
            PK,
            Some("alice"),
            None,
        )
        .await;
    assert_eq!(r.status, 200);
    s.stop().await;
}

/// The store itself refuses a body larger than declared (S3: the exact length is signed
/// into the URL; local store: the URL carries the cap), and nothing is left behind.
#[tokio::test]
async fn uploads_hold_to_what_was_declared() {
    let s = TestServer::start().await;
    let bytes = fixture("landscape.jpg");
    let declared = post(
        &s,
        PRESIGN,
        json!({ "filename": "a.jpg", "contentType": "image/jpeg", "fileSize": bytes.len() }),
    )
    .await
    .json();
    let url = declared["url"].as_str().unwrap();
    let key = ObjectKey::parse(declared["key"].as_str().unwrap()).unwrap();
    let mut doubled = bytes.clone();
    doubled.extend_from_slice(&bytes);
    let put = s
        .send(Method::PUT, url, &[("content-type", "image/jpeg")], doubled)
        .await;
    assert!(
        put.status.is_client_error(),
        "a body twice the declared size: {} {}",
        put.status,
        String::from_utf8_lossy(&put.body)
    );
    assert!(
        matches!(
            s.app.storage.head(&key).await,
            Err(imgedge::storage::StorageError::NotFound)
        ),
        "nothing stored"
    );
    // The declared size goes through the same URL.
    let put = s
        .send(
            Method::PUT,
            url,
            &[("content-type", "image/jpeg")],
            bytes.clone(),
        )
        .await;
    assert_eq!(put.status, 200, "{}", String::from_utf8_lossy(&put.body));
    assert_eq!(
        s.app.storage.head(&key).await.unwrap().size,
        bytes.len() as u64
    );

    // Undeclared: the category limit (images: 10 MB) holds.
    let eleven_mib = vec![0u8; 11 << 20];
    let r = post(
        &s,
        PRESIGN,
        json!({ "filename": "b.jpg", "contentType": "image/jpeg" }),
    )
    .await;
    if s.is_s3() {
        // S3 can only hold an upload to a length signed in advance: the size is required.
        let (status, code, message) = error(&r);
        assert_eq!((status, code.as_str()), (400, "data/validation-error"));
        assert!(message.starts_with("fileSize: is required"), "{message}");
    } else {
        let undeclared = r.json();
        let key = ObjectKey::parse(undeclared["key"].as_str().unwrap()).unwrap();
        let put = s
            .send(
                Method::PUT,
                undeclared["url"].as_str().unwrap(),
                &[("content-type", "image/jpeg")],
                eleven_mib.clone(),
            )
            .await;
        assert!(put.status.is_client_error(), "{}", put.status);
        assert!(s.app.storage.head(&key).await.is_err(), "nothing stored");
    }
    // Declaring more than the limit is refused before any URL is issued.
    let r = post(
        &s,
        PRESIGN,
        json!({ "filename": "c.jpg", "contentType": "image/jpeg", "fileSize": eleven_mib.len() }),
    )
    .await;
    assert_eq!(error(&r).1, "file/file-too-large");
    s.stop().await;
}

#[tokio::test]
async fn multipart_complete_refuses_parts_never_uploaded() {
    let s = TestServer::start().await;
    let init = post(
        &s,
        "/v1/files/multipart/init",
        json!({ "filename": "v.jpg", "contentType": "image/jpeg", "fileSize": 100_000 }),
    )
    .await
    .json();
    let (key, upload_id) = (init["key"].clone(), init["uploadId"].clone());
    // Nothing uploaded yet.
    let r = post(&s,
        "/v1/files/multipart/complete",
        json!({ "key": key, "uploadId": upload_id, "parts": [{ "partNumber": 1, "etag": "\"abc\"" }] }),
    )
    .await;
    let (status, code, message) = error(&r);
    assert_eq!(
        (status, code.as_str()),
        (400, "file/invalid-parts-array"),
        "{message}"
    );
    assert!(message.contains("part 1"), "{message}");
    // Part 1 uploaded, part 2 never.
    let part_url = post(
        &s,
        "/v1/files/multipart/presigned-url",
        json!({ "key": key, "uploadId": upload_id, "partNumber": 1 }),
    )
    .await
    .json();
    let put = s
        .send(
            Method::PUT,
            part_url["url"].as_str().unwrap(),
            &[],
            fixture("landscape.jpg"),
        )
        .await;
    assert_eq!(put.status, 200, "{}", String::from_utf8_lossy(&put.body));
    let etag = put.header("etag").to_owned();
    let r = post(
        &s,
        "/v1/files/multipart/complete",
        json!({ "key": key, "uploadId": upload_id, "parts": [
            { "partNumber": 1, "etag": etag }, { "partNumber": 2, "etag": etag }] }),
    )
    .await;
    let (status, code, message) = error(&r);
    assert_eq!(
        (status, code.as_str()),
        (400, "file/invalid-parts-array"),
        "{message}"
    );
    assert!(message.contains("part 2"), "{message}");
    // The refusals left the upload intact: the real part list completes.
    let r = post(
        &s,
        "/v1/files/multipart/complete",
        json!({ "key": key, "uploadId": upload_id, "parts": [{ "partNumber": 1, "etag": etag }] }),
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    s.stop().await;
}

/// With `require_signature`, the links the API hands out are signed, and the CDN serves
/// them.
#[tokio::test]
async fn cdn_links_are_signed_when_signatures_are_required() {
    let s = TestServer::start_with(|c| {
        c.security_key = "links-key".into();
        c.require_signature = true;
    })
    .await;
    let file = upload_with(&s, "alice", "landscape.jpg", "public", json!({})).await;
    let key = file["s3Key"].as_str().unwrap();
    let cdn_url = file["cdnUrl"].as_str().unwrap().to_owned();
    let base = format!("http://{}/", s.cdn);
    let path = cdn_url.strip_prefix(&base).expect("points at the CDN");
    assert_eq!(path.len(), 28 + 1 + key.len(), "signature/key: {path}");
    let img = s.get(&format!("/{path}")).await.image();
    assert_eq!((img.width(), img.height()), (640, 427));
    // Unsigned, the same key is refused: the signature is what makes the link work.
    assert_eq!(s.get(&format!("/{key}")).await.status, 403);
    // The listing and the detail carry the same link.
    let detail = s
        .api(
            Method::GET,
            &format!("/v1/files/{}", file["id"].as_str().unwrap()),
            PK,
            None,
            None,
        )
        .await
        .json();
    assert_eq!(detail["cdnUrl"], cdn_url);
    let listed = list(&s, "").await;
    assert_eq!(listed["items"][0]["cdnUrl"], cdn_url);
    s.stop().await;
}

/// Without signatures required, links stay bare (shorter, and every client can build them).
#[tokio::test]
async fn cdn_links_are_bare_when_signatures_are_optional() {
    let s = TestServer::start_with(|c| c.security_key = "links-key".into()).await;
    let file = upload_with(&s, "alice", "landscape.jpg", "public", json!({})).await;
    let key = file["s3Key"].as_str().unwrap();
    assert_eq!(file["cdnUrl"], format!("http://{}/{key}", s.cdn));
    assert_eq!(s.get(&format!("/{key}")).await.status, 200);
    s.stop().await;
}
