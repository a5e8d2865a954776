//! The storage API over HTTP: every endpoint's happy path, its error codes, the access
//! matrix, presigned URL checks, and the effects on the edge.

use http::Method;
use imgedge::db::Visibility;
use imgedge::key::ObjectKey;
use serde_json::{Value, json};

use crate::support::{OTHER_PK, PK, SK, TestServer, fixture};

/// presign → PUT → register, as a user; returns the registered file object.
pub(crate) async fn upload(s: &TestServer, user: &str, name: &str, visibility: &str) -> Value {
    upload_with(s, user, name, visibility, json!({})).await
}

pub(crate) async fn upload_with(
    s: &TestServer,
    user: &str,
    name: &str,
    visibility: &str,
    extra: Value,
) -> Value {
    upload_bytes(s, user, name, fixture(name), visibility, extra).await
}

/// `upload_with`, of bytes made by the test (`name` gives the file name and type).
pub(crate) async fn upload_bytes(
    s: &TestServer,
    user: &str,
    name: &str,
    bytes: Vec<u8>,
    visibility: &str,
    extra: Value,
) -> Value {
    let ct = content_type(name);
    let r = s
        .api(
            Method::POST,
            "/v1/files/presigned-url",
            PK,
            Some(user),
            Some(json!({ "filename": name, "contentType": ct, "fileSize": bytes.len() })),
        )
        .await;
    assert_eq!(
        r.status,
        200,
        "presign: {}",
        String::from_utf8_lossy(&r.body)
    );
    let presigned = r.json();
    let url = presigned["url"].as_str().unwrap();
    let put = s
        .send(Method::PUT, url, &[("content-type", ct)], bytes.clone())
        .await;
    assert_eq!(
        put.status,
        200,
        "PUT: {}",
        String::from_utf8_lossy(&put.body)
    );
    let mut body = json!({
        "s3Key": presigned["key"],
        "originalName": name,
        "mimeType": ct,
        "size": bytes.len(),
        "visibility": visibility,
    });
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    let r = s
        .api(Method::POST, "/v1/files", PK, Some(user), Some(body))
        .await;
    assert_eq!(
        r.status,
        201,
        "register: {}",
        String::from_utf8_lossy(&r.body)
    );
    r.json()
}

fn content_type(name: &str) -> &'static str {
    match name.rsplit('.').next() {
        Some("png") => "image/png",
        Some("webp") => "image/webp",
        Some("gif") => "image/gif",
        _ => "image/jpeg",
    }
}

fn code(r: &crate::support::Resp) -> String {
    let body = r.json();
    assert_eq!(body["success"], false, "{body}");
    body["error"]["code"].as_str().unwrap_or("").to_owned()
}

/// A 400x300 noisy WebP of over 128 KiB, lossless, in the extended format with
/// an EXIF orientation of 6 (upright it is 300x400) after the pixels, where encoders put
/// it; without `exif`, the same pixels in the simple format.
fn big_webp(exif: bool) -> Vec<u8> {
    let mut state = 0x9E37_79B9_u32;
    let noise = image::RgbImage::from_fn(400, 300, |x, _| {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        // Red on the left half, so that the upright picture can be checked.
        let base = if x < 200 {
            [180, 20, 20]
        } else {
            [20, 20, 180]
        };
        let mut noise = state;
        image::Rgb(base.map(|c: u8| {
            noise >>= 6;
            c + (noise & 63) as u8
        }))
    });
    let simple = webp::Encoder::from_rgb(noise.as_raw(), 400, 300)
        .encode_lossless()
        .to_vec();
    if !exif {
        return simple;
    }
    let riff = |kind: &[u8], data: &[u8]| {
        let mut c = kind.to_vec();
        c.extend_from_slice(&(data.len() as u32).to_le_bytes());
        c.extend_from_slice(data);
        if data.len() % 2 == 1 {
            c.push(0);
        }
        c
    };
    // The VP8L chunk of the simple file, then the EXIF chunk; VP8X flags 0x08 = EXIF.
    let vp8l = &simple[12..];
    let (w, h) = (399u32.to_le_bytes(), 299u32.to_le_bytes());
    let mut body = b"WEBP".to_vec();
    body.extend(riff(
        b"VP8X",
        &[0x08, 0, 0, 0, w[0], w[1], w[2], h[0], h[1], h[2]],
    ));
    body.extend_from_slice(vp8l);
    let mut exif = b"Exif\0\0MM\0\x2a\0\0\0\x08\0\x01".to_vec();
    exif.extend_from_slice(&[0x01, 0x12, 0, 3, 0, 0, 0, 1, 0, 6, 0, 0, 0, 0, 0, 0]);
    body.extend(riff(b"EXIF", &exif));
    let mut file = b"RIFF".to_vec();
    file.extend_from_slice(&(body.len() as u32).to_le_bytes());
    file.extend(body);
    file
}

#[tokio::test]
async fn registration_reads_the_header_and_finds_an_orientation_stored_after_the_pixels() {
    let s = TestServer::start().await;
    let rotated = big_webp(true);
    assert!(
        rotated.len() > 128 << 10,
        "{} bytes: larger than the header prefix read",
        rotated.len()
    );
    let file = upload_bytes(&s, "alice", "turned.webp", rotated, "public", json!({})).await;
    assert_eq!(
        (&file["width"], &file["height"]),
        (&json!(300), &json!(400))
    );
    // The edge turns it upright the same way: the red half is now on top.
    let key = file["s3Key"].as_str().unwrap();
    let img = s
        .get(&format!("/unsafe/filters:format(png)/{key}"))
        .await
        .image()
        .to_rgb8();
    assert_eq!(img.dimensions(), (300, 400));
    let (top, bottom) = (img.get_pixel(150, 20).0, img.get_pixel(150, 380).0);
    assert!(top[0] > 170 && top[2] < 90, "top {top:?}");
    assert!(bottom[2] > 170 && bottom[0] < 90, "bottom {bottom:?}");

    let plain = upload_bytes(
        &s,
        "alice",
        "plain.webp",
        big_webp(false),
        "public",
        json!({}),
    )
    .await;
    assert_eq!(
        (&plain["width"], &plain["height"]),
        (&json!(400), &json!(300))
    );
    s.stop().await;
}

#[tokio::test]
async fn single_upload_lifecycle_and_edge_effects() {
    let s = TestServer::start().await;
    let file = upload(&s, "alice", "landscape.jpg", "public").await;
    let id = file["id"].as_str().unwrap();
    let key = file["s3Key"].as_str().unwrap();
    assert!(
        key.starts_with("default/images/") && key.ends_with(".jpg"),
        "{key}"
    );
    assert_eq!(file["width"], 640);
    assert_eq!(file["height"], 427);
    assert_eq!(file["ownerId"], "alice");
    assert_eq!(file["ownerType"], "user");
    assert_eq!(file["visibility"], "public");
    assert_eq!(file["originalName"], "landscape.jpg");
    let cdn_url = file["cdnUrl"].as_str().unwrap();
    assert_eq!(cdn_url, format!("http://{}/{key}", s.cdn));

    // The edge serves it.
    let path = format!("/fit-in/100x100/{key}");
    assert_eq!(s.get(&path).await.status, 200);

    // Detail and listing.
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
    assert_eq!(r.json()["id"], id);
    let r = s.api(Method::GET, "/v1/files", PK, None, None).await;
    assert_eq!(r.json()["pagination"]["total"], 1);

    // Download URL, then GET it.
    let r = s
        .api(
            Method::POST,
            &format!("/v1/files/{id}/download-url"),
            PK,
            Some("alice"),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let dl = r.json();
    assert_eq!(dl["filename"], "landscape.jpg");
    assert_eq!(dl["contentType"], "image/jpeg");
    assert_eq!(dl["size"], fixture("landscape.jpg").len());
    let got = s
        .send(Method::GET, dl["url"].as_str().unwrap(), &[], "")
        .await;
    assert_eq!(got.status, 200);
    assert_eq!(got.body, fixture("landscape.jpg"));
    assert!(got.header("content-disposition").contains("landscape.jpg"));

    // PATCH to private: the edge stops at once (cached variant included).
    let r = s
        .api(
            Method::PATCH,
            &format!("/v1/files/{id}"),
            PK,
            Some("alice"),
            Some(
                json!({ "visibility": "private", "metadata": { "tags": ["sea"], "alt": "a bay" } }),
            ),
        )
        .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["visibility"], "private");
    assert_eq!(r.json()["metadata"]["tags"], json!(["sea"]));
    assert!(r.json().get("cdnUrl").is_none());
    assert_eq!(s.get(&path).await.status, 404);
    // Back to public: servable again.
    let r = s
        .api(
            Method::PATCH,
            &format!("/v1/files/{id}"),
            PK,
            Some("alice"),
            Some(json!({ "visibility": "public" })),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.json()["metadata"]["alt"],
        "a bay",
        "metadata survives a partial patch"
    );
    assert_eq!(s.get(&path).await.status, 200);

    // DELETE removes metadata, the object, and the edge variant.
    let r = s
        .api(
            Method::DELETE,
            &format!("/v1/files/{id}"),
            PK,
            Some("alice"),
            None,
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json(), json!({}));
    assert_eq!(s.get(&path).await.status, 404);
    let gone = s
        .send(Method::GET, dl["url"].as_str().unwrap(), &[], "")
        .await;
    assert_eq!(gone.status, 404);
    let k = ObjectKey::parse(key).unwrap();
    assert!(s.app.storage.head(&k).await.is_err());
    let r = s
        .api(
            Method::GET,
            &format!("/v1/files/{id}"),
            PK,
            Some("alice"),
            None,
        )
        .await;
    assert_eq!(code(&r), "file/not-found");
    s.stop().await;
}

#[tokio::test]
async fn multipart_upload_with_three_parts() {
    let s = TestServer::start_with(|c| c.max_image_bytes = 16 << 20).await;
    // S3's rule (kept by the local store too): every part but the last is at least 5 MiB.
    // A JPEG padded after its end marker still decodes as the photo.
    let mut bytes = fixture("landscape.jpg");
    bytes.resize(11 << 20, 0);
    let r = s
        .api(
            Method::POST,
            "/v1/files/multipart/init",
            PK,
            Some("alice"),
            Some(json!({ "filename": "big.jpg", "contentType": "image/jpeg", "fileSize": bytes.len(), "visibility": "public" })),
        )
        .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let init = r.json();
    let (upload_id, key) = (
        init["uploadId"].as_str().unwrap(),
        init["key"].as_str().unwrap(),
    );
    assert_eq!(init["filename"], "big.jpg");
    let chunks: Vec<&[u8]> = bytes.chunks(5 << 20).collect();
    assert_eq!(chunks.len(), 3);
    let mut parts = Vec::new();
    for (i, chunk) in chunks.iter().enumerate() {
        let n = i + 1;
        let r = s
            .api(
                Method::POST,
                "/v1/files/multipart/presigned-url",
                PK,
                Some("alice"),
                Some(json!({ "key": key, "uploadId": upload_id, "partNumber": n })),
            )
            .await;
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        assert_eq!(r.json()["partNumber"], n);
        let put = s
            .send(
                Method::PUT,
                r.json()["url"].as_str().unwrap(),
                &[],
                chunk.to_vec(),
            )
            .await;
        assert_eq!(put.status, 200, "{}", String::from_utf8_lossy(&put.body));
        let etag = put.header("etag").to_owned();
        assert!(etag.starts_with('"'), "{etag}");
        parts.push(json!({ "partNumber": n, "etag": etag }));
    }
    // A wrong ETag is refused and nothing is assembled. (s3s-fs, the S3 server of the
    // test runs, reports no part ETags and checks none, so only the local store and real
    // S3 can refuse it; there the check is the store's own.)
    let missing = json!({ "partNumber": 7, "etag": parts[0]["etag"] });
    let mut refused = vec![
        json!([parts[0], missing]),
        // Part 3 (1 MiB) may only come last.
        json!([parts[2], missing]),
    ];
    if !s.is_s3() {
        let mut wrong = parts.clone();
        wrong[1]["etag"] = json!("\"0000\"");
        refused.push(json!(wrong));
    }
    for bad in refused {
        let r = s
            .api(
                Method::POST,
                "/v1/files/multipart/complete",
                PK,
                Some("alice"),
                Some(json!({ "key": key, "uploadId": upload_id, "parts": bad })),
            )
            .await;
        assert_eq!(code(&r), "file/invalid-parts-array", "{bad}");
    }
    let r = s
        .api(
            Method::POST,
            "/v1/files/multipart/complete",
            PK,
            Some("alice"),
            Some(json!({ "key": key, "uploadId": upload_id, "parts": parts })),
        )
        .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["key"], key);
    assert!(r.json()["location"].as_str().unwrap().ends_with(key));
    let r = s
        .api(
            Method::POST,
            "/v1/files",
            PK,
            Some("alice"),
            Some(json!({ "s3Key": key, "originalName": "big.jpg", "mimeType": "image/jpeg", "size": bytes.len() })),
        )
        .await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let img = s.get(&format!("/{key}")).await.image();
    assert_eq!((img.width(), img.height()), (640, 427));
    let stored = s
        .app
        .storage
        .get(&ObjectKey::parse(key).unwrap(), 64 << 20)
        .await
        .unwrap();
    assert_eq!(stored, bytes, "parts joined in order");
    s.stop().await;
}

#[tokio::test]
async fn multipart_abort_drops_the_upload() {
    let s = TestServer::start().await;
    let r = s
        .api(
            Method::POST,
            "/v1/files/multipart/init",
            PK,
            Some("alice"),
            Some(json!({ "filename": "x.jpg", "contentType": "image/jpeg", "fileSize": 100 })),
        )
        .await;
    let init = r.json();
    let body = json!({ "key": init["key"], "uploadId": init["uploadId"] });
    let r = s
        .api(
            Method::POST,
            "/v1/files/multipart/abort",
            PK,
            Some("alice"),
            Some(body.clone()),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json(), json!({ "success": true, "key": init["key"] }));
    let r = s
        .api(
            Method::POST,
            "/v1/files/multipart/abort",
            PK,
            Some("alice"),
            Some(body),
        )
        .await;
    assert_eq!(code(&r), "file/not-found");
    s.stop().await;
}

#[tokio::test]
async fn error_codes_of_every_endpoint() {
    let s = TestServer::start().await;
    let presign = |body: Value| async {
        s.api(
            Method::POST,
            "/v1/files/presigned-url",
            PK,
            Some("alice"),
            Some(body),
        )
        .await
    };
    let cases: Vec<(Value, &str)> = vec![
        (
            json!({ "filename": "", "contentType": "image/jpeg" }),
            "file/invalid-name",
        ),
        (
            json!({ "filename": "a/b.jpg", "contentType": "image/jpeg" }),
            "file/invalid-name",
        ),
        (
            json!({ "filename": "a.pdf", "contentType": "application/pdf", "category": "images" }),
            "file/invalid-format",
        ),
        (
            json!({ "filename": "a.jpg", "contentType": "jpeg" }),
            "file/invalid-format",
        ),
        (
            json!({ "filename": "a.jpg", "contentType": format!("image/{}", "x".repeat(300)) }),
            "file/mime-type-too-long",
        ),
        (
            json!({ "filename": "a.jpg", "contentType": "image/jpeg", "fileSize": -5 }),
            "file/size-negative",
        ),
        (
            json!({ "filename": "a.jpg", "contentType": "image/jpeg", "fileSize": 0 }),
            "file/file-too-small",
        ),
        (
            json!({ "filename": "a.jpg", "contentType": "image/jpeg", "fileSize": 10_000_001 }),
            "file/file-too-large",
        ),
        (
            json!({ "filename": "a.jpg", "contentType": "image/jpeg", "bogus": 1 }),
            "data/validation-error",
        ),
        (json!({ "filename": "a.jpg" }), "data/validation-error"),
        (
            json!({ "filename": "a.jpg", "contentType": "image/jpeg", "category": "nope" }),
            "data/validation-error",
        ),
        (
            json!({ "filename": "a.jpg", "contentType": "image/jpeg", "visibility": "secret" }),
            "data/validation-error",
        ),
    ];
    for (body, expected) in cases {
        let r = presign(body.clone()).await;
        assert_eq!(code(&r), expected, "{body}");
        assert_eq!(r.status, 400, "{body}");
    }
    // Authentication.
    let body = json!({ "filename": "a.jpg", "contentType": "image/jpeg" });
    let r = s
        .api(
            Method::POST,
            "/v1/files/presigned-url",
            PK,
            None,
            Some(body.clone()),
        )
        .await;
    assert_eq!(
        (r.status.as_u16(), code(&r).as_str()),
        (401, "common/authentication-required")
    );
    let bad_key = format!("pk_{}", "9".repeat(64));
    let r = s
        .api(
            Method::POST,
            "/v1/files/presigned-url",
            &bad_key,
            Some("alice"),
            Some(body.clone()),
        )
        .await;
    assert_eq!(r.status, 401);
    let r = s
        .send(Method::GET, &format!("http://{}/v1/files", s.api), &[], "")
        .await;
    assert_eq!(
        (r.status.as_u16(), code(&r).as_str()),
        (401, "common/authentication-required")
    );
    let r = s
        .send(
            Method::GET,
            &format!("http://{}/v1/files", s.api),
            &[("x-api-key", PK), ("authorization", "Bearer not.a.jwt")],
            "",
        )
        .await;
    assert_eq!(r.status, 401);
    // Body problems.
    let r = s
        .send(
            Method::POST,
            &format!("http://{}/v1/files/presigned-url", s.api),
            &[
                ("x-api-key", PK),
                ("authorization", &format!("Bearer {}", s.token("alice"))),
                ("content-type", "application/json"),
            ],
            "{not json",
        )
        .await;
    assert_eq!(code(&r), "data/validation-error");
    let huge = format!("{{\"filename\": \"{}\"}}", "a".repeat(100_000));
    let r = s
        .send(
            Method::POST,
            &format!("http://{}/v1/files/presigned-url", s.api),
            &[
                ("x-api-key", PK),
                ("authorization", &format!("Bearer {}", s.token("alice"))),
                ("content-type", "application/json"),
            ],
            huge,
        )
        .await;
    assert_eq!(code(&r), "common/invalid-parameters");

    // Multipart part numbers and parts arrays.
    let init = s
        .api(
            Method::POST,
            "/v1/files/multipart/init",
            PK,
            Some("alice"),
            Some(json!({ "filename": "m.jpg", "contentType": "image/jpeg", "fileSize": 100 })),
        )
        .await
        .json();
    for n in [0, 10_001, -1] {
        let r = s
            .api(
                Method::POST,
                "/v1/files/multipart/presigned-url",
                PK,
                Some("alice"),
                Some(json!({ "key": init["key"], "uploadId": init["uploadId"], "partNumber": n })),
            )
            .await;
        assert_eq!(code(&r), "file/invalid-part-number-range", "{n}");
    }
    for parts in [
        json!([]),
        json!([{ "partNumber": 2, "etag": "\"a\"" }, { "partNumber": 1, "etag": "\"b\"" }]),
        json!([{ "partNumber": 1, "etag": "\"nope\"" }]),
    ] {
        let r = s
            .api(
                Method::POST,
                "/v1/files/multipart/complete",
                PK,
                Some("alice"),
                Some(json!({ "key": init["key"], "uploadId": init["uploadId"], "parts": parts })),
            )
            .await;
        assert_eq!(code(&r), "file/invalid-parts-array", "{parts}");
    }
    let r = s
        .api(
            Method::POST,
            "/v1/files/multipart/init",
            PK,
            Some("alice"),
            Some(json!({ "filename": "m.jpg", "contentType": "image/jpeg" })),
        )
        .await;
    assert_eq!(code(&r), "data/validation-error");
    let r = s
        .api(
            Method::POST,
            "/v1/files/multipart/presigned-url",
            PK,
            Some("bob"),
            Some(json!({ "key": init["key"], "uploadId": init["uploadId"], "partNumber": 1 })),
        )
        .await;
    assert_eq!(code(&r), "file/access-denied");

    // Registration.
    let file = upload(&s, "alice", "landscape.jpg", "private").await;
    let presigned = s
        .api(
            Method::POST,
            "/v1/files/presigned-url",
            PK,
            Some("alice"),
            Some(json!({ "filename": "b.jpg", "contentType": "image/jpeg", "fileSize": fixture("landscape.jpg").len() })),
        )
        .await
        .json();
    let srv = &s;
    let reg = |user: &'static str, body: Value| async move {
        srv.api(Method::POST, "/v1/files", PK, Some(user), Some(body))
            .await
    };
    let base = json!({ "s3Key": presigned["key"], "originalName": "b.jpg", "mimeType": "image/jpeg", "size": 10 });
    let with = |k: &str, v: Value| {
        let mut b = base.clone();
        b[k] = v;
        b
    };
    let reg_cases: Vec<(&str, Value, &str, u16)> = vec![
        (
            "alice",
            with("s3Key", json!("k".repeat(1025))),
            "file/s3-key-too-long",
            400,
        ),
        (
            "alice",
            with("s3Key", json!("../etc/passwd")),
            "file/invalid-path",
            400,
        ),
        (
            "alice",
            with("originalName", json!("n".repeat(256))),
            "file/original-name-too-long",
            400,
        ),
        (
            "alice",
            with("mimeType", json!(format!("image/{}", "x".repeat(300)))),
            "file/mime-type-too-long",
            400,
        ),
        ("alice", with("size", json!(-1)), "file/size-negative", 400),
        (
            "alice",
            with("bucket", json!("Else Where")),
            "data/validation-error",
            400,
        ),
        ("alice", base.clone(), "file/not-found", 404),
        ("bob", base.clone(), "file/access-denied", 403),
        (
            "alice",
            with("s3Key", json!("default/images/never-issued.jpg")),
            "file/access-denied",
            403,
        ),
        (
            "alice",
            with("s3Key", file["s3Key"].clone()),
            "file/s3-key-already-exists",
            409,
        ),
    ];
    for (user, body, expected, status) in reg_cases {
        let r = reg(user, body.clone()).await;
        assert_eq!(code(&r), expected, "{body}");
        assert_eq!(r.status.as_u16(), status, "{body}");
    }
    // Uploaded but with another size than declared.
    let put = s
        .send(
            Method::PUT,
            presigned["url"].as_str().unwrap(),
            &[("content-type", "image/jpeg")],
            fixture("landscape.jpg"),
        )
        .await;
    assert_eq!(put.status, 200);
    let r = reg("alice", base.clone()).await;
    assert_eq!(code(&r), "data/validation-error");

    // Listing parameters.
    for q in [
        "limit=0",
        "limit=101",
        "sortBy=nope",
        "sortDirection=sideways",
        "page=0",
        "visibility=x",
        "wat=1",
    ] {
        let r = s
            .api(
                Method::GET,
                &format!("/v1/files?{q}"),
                PK,
                Some("alice"),
                None,
            )
            .await;
        assert_eq!(code(&r), "common/invalid-parameters", "{q}");
    }
    // Unknown ids and routes.
    let r = s
        .api(Method::GET, "/v1/files/nope", PK, Some("alice"), None)
        .await;
    assert_eq!(
        (r.status.as_u16(), code(&r).as_str()),
        (404, "file/not-found")
    );
    let r = s
        .api(
            Method::PATCH,
            "/v1/files/nope",
            PK,
            Some("alice"),
            Some(json!({})),
        )
        .await;
    assert_eq!(code(&r), "file/not-found");
    let r = s
        .api(Method::PUT, "/v1/files", PK, Some("alice"), None)
        .await;
    assert_eq!(r.status, 405);
    s.stop().await;
}

/// (who, API key, user, visibilities they may read, whether they may edit).
type Caller = (
    &'static str,
    &'static str,
    Option<&'static str>,
    &'static [&'static str],
    bool,
);

#[tokio::test]
async fn access_matrix() {
    let s = TestServer::start().await;
    let mut ids = Vec::new();
    for vis in ["public", "protected", "shared", "private"] {
        let extra = if vis == "shared" {
            json!({ "sharedWith": ["carol"] })
        } else {
            json!({})
        };
        let f = upload_with(&s, "alice", "landscape.jpg", vis, extra).await;
        ids.push((vis, f["id"].as_str().unwrap().to_owned()));
    }
    // (who, key, user) → which visibilities they may read, and whether they may edit.
    let callers: &[Caller] = &[
        (
            "owner",
            PK,
            Some("alice"),
            &["public", "protected", "shared", "private"],
            true,
        ),
        (
            "other user",
            PK,
            Some("bob"),
            &["public", "protected"],
            false,
        ),
        (
            "shared-with user",
            PK,
            Some("carol"),
            &["public", "protected", "shared"],
            false,
        ),
        ("anonymous", PK, None, &["public"], false),
        (
            "secret key + token",
            SK,
            Some("zed"),
            &["public", "protected", "shared", "private"],
            true,
        ),
        (
            "secret key, no token",
            SK,
            None,
            &["public", "protected", "shared", "private"],
            true,
        ),
        ("other project", OTHER_PK, Some("alice"), &[], false),
    ];
    for (who, key, user, readable, can_edit) in callers {
        for (vis, id) in &ids {
            let may_read = readable.contains(vis);
            let detail = s
                .api(Method::GET, &format!("/v1/files/{id}"), key, *user, None)
                .await;
            assert_eq!(
                detail.status == 200,
                may_read,
                "{who} reads {vis}: {}",
                detail.status
            );
            if may_read {
                let shows_private_fields = detail.json().get("sharedWith").is_some();
                assert_eq!(
                    shows_private_fields, *can_edit,
                    "{who} sees sharedWith of {vis}"
                );
            } else {
                assert_eq!(code(&detail), "file/not-found", "{who} {vis}");
            }
            let dl = s
                .api(
                    Method::POST,
                    &format!("/v1/files/{id}/download-url"),
                    key,
                    *user,
                    None,
                )
                .await;
            assert_eq!(dl.status == 200, may_read, "{who} download-url {vis}");
            // An empty patch changes nothing but exercises the permission check.
            let p = s
                .api(
                    Method::PATCH,
                    &format!("/v1/files/{id}"),
                    key,
                    *user,
                    Some(json!({})),
                )
                .await;
            let expected = match (may_read, *can_edit, user.is_some()) {
                (_, _, false) => 401,
                (false, _, _) => 404,
                (true, false, _) => 403,
                (true, true, _) => 200,
            };
            assert_eq!(
                p.status.as_u16(),
                expected,
                "{who} patches {vis}: {}",
                String::from_utf8_lossy(&p.body)
            );
            if expected == 403 {
                assert_eq!(code(&p), "file/access-denied");
            }
        }
        let list = s
            .api(Method::GET, "/v1/files?limit=100", key, *user, None)
            .await;
        let mut seen: Vec<String> = list.json()["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["visibility"].as_str().unwrap().to_owned())
            .collect();
        seen.sort();
        let mut want: Vec<String> = readable.iter().map(|v| v.to_string()).collect();
        want.sort();
        assert_eq!(seen, want, "{who} lists");
    }
    // Delete: others are refused, the owner succeeds.
    let (_, private_id) = &ids[3];
    let r = s
        .api(
            Method::DELETE,
            &format!("/v1/files/{}", ids[1].1),
            PK,
            Some("bob"),
            None,
        )
        .await;
    assert_eq!(code(&r), "file/access-denied");
    let r = s
        .api(
            Method::DELETE,
            &format!("/v1/files/{private_id}"),
            PK,
            Some("bob"),
            None,
        )
        .await;
    assert_eq!(code(&r), "file/not-found");
    let r = s
        .api(
            Method::DELETE,
            &format!("/v1/files/{private_id}"),
            PK,
            Some("alice"),
            None,
        )
        .await;
    assert_eq!(r.status, 200);
    let r = s
        .api(
            Method::DELETE,
            &format!("/v1/files/{}", ids[2].1),
            SK,
            Some("zed"),
            None,
        )
        .await;
    assert_eq!(r.status, 200);
    s.stop().await;
}

#[tokio::test]
async fn listing_filters_sorting_and_pagination() {
    let s = TestServer::start().await;
    upload(&s, "alice", "landscape.jpg", "public").await;
    upload(&s, "alice", "alpha.png", "public").await;
    upload(&s, "alice", "photo.webp", "private").await;
    upload(&s, "bob", "animated.gif", "public").await;
    upload(&s, "bob", "exif_rotated.jpg", "protected").await;
    let srv = &s;
    let list = |q: &'static str| async move {
        let r = srv
            .api(
                Method::GET,
                &format!("/v1/files?{q}"),
                PK,
                Some("alice"),
                None,
            )
            .await;
        assert_eq!(r.status, 200, "{q}: {}", String::from_utf8_lossy(&r.body));
        r.json()
    };
    let names = |v: &Value| -> Vec<String> {
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["originalName"].as_str().unwrap().to_owned())
            .collect()
    };
    let all = list("").await;
    assert_eq!(all["pagination"]["total"], 5);
    assert_eq!(
        names(&all)[0],
        "exif_rotated.jpg",
        "newest first by default"
    );
    assert_eq!(
        names(&list("sortBy=originalName&sortDirection=asc").await),
        [
            "alpha.png",
            "animated.gif",
            "exif_rotated.jpg",
            "landscape.jpg",
            "photo.webp"
        ]
    );
    let by_size = list("sortBy=size&sortDirection=desc").await;
    let sizes: Vec<u64> = by_size["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["size"].as_u64().unwrap())
        .collect();
    assert!(sizes.windows(2).all(|w| w[0] >= w[1]), "{sizes:?}");
    assert_eq!(names(&list("visibility=private").await), ["photo.webp"]);
    assert_eq!(list("ownerId=bob").await["pagination"]["total"], 2);
    assert_eq!(list("ownerType=user").await["pagination"]["total"], 5);
    assert_eq!(list("ownerType=service").await["pagination"]["total"], 0);
    assert_eq!(names(&list("mimeType=image%2Fpng").await), ["alpha.png"]);
    assert_eq!(names(&list("search=ROTAT").await), ["exif_rotated.jpg"]);
    assert_eq!(
        list("search=%25").await["pagination"]["total"],
        0,
        "LIKE wildcards are literal"
    );
    assert_eq!(list("bucket=default").await["pagination"]["total"], 5);
    let p1 = list("limit=2&page=1&sortBy=originalName&sortDirection=asc").await;
    let p3 = list("limit=2&page=3&sortBy=originalName&sortDirection=asc").await;
    assert_eq!(
        p1["pagination"],
        json!({ "total": 5, "page": 1, "limit": 2, "totalPages": 3, "hasNextPage": true, "hasPrevPage": false })
    );
    assert_eq!(names(&p3), ["photo.webp"]);
    assert_eq!(p3["pagination"]["hasNextPage"], false);
    assert_eq!(p3["pagination"]["hasPrevPage"], true);
    s.stop().await;
}

#[tokio::test]
async fn local_presigned_urls_are_checked_and_uploads_are_atomic() {
    let s = TestServer::start().await;
    if s.is_s3() {
        // The store checks S3 URLs: backends::s3_presigned_urls_are_checked_by_the_store.
        return s.stop().await;
    }
    let presigned = s
        .api(
            Method::POST,
            "/v1/files/presigned-url",
            PK,
            Some("alice"),
            Some(json!({ "filename": "a.jpg", "contentType": "image/jpeg", "fileSize": 1000 })),
        )
        .await
        .json();
    let url = presigned["url"].as_str().unwrap().to_owned();
    let key = ObjectKey::parse(presigned["key"].as_str().unwrap()).unwrap();
    let jpeg = [("content-type", "image/jpeg")];
    // Tampered: a larger size cap, another key, another signature.
    for tampered in [
        url.replace("max=1000", "max=9999999"),
        url.replace("key=default", "key=other"),
        {
            // Flip the signature's last hex digit (always a different digit).
            let last = if url.ends_with('0') { '1' } else { '0' };
            format!("{}{last}", &url[..url.len() - 1])
        },
    ] {
        assert_ne!(tampered, url);
        let r = s.send(Method::PUT, &tampered, &jpeg, vec![1u8; 10]).await;
        assert_eq!(
            (r.status.as_u16(), code(&r).as_str()),
            (403, "file/access-denied"),
            "{tampered}"
        );
    }
    // Expired.
    let expired = s
        .app
        .storage
        .presign(
            &imgedge::storage::presign::Permit::Put {
                key: key.clone(),
                content_type: "image/jpeg".into(),
                max_size: 1000,
            },
            time::OffsetDateTime::now_utc() - time::Duration::seconds(1),
        )
        .await
        .unwrap();
    let r = s.send(Method::PUT, &expired, &jpeg, vec![1u8; 10]).await;
    assert_eq!(r.status, 403);
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("expired")
    );
    // Wrong content type, oversize body.
    let r = s
        .send(
            Method::PUT,
            &url,
            &[("content-type", "image/png")],
            vec![1u8; 10],
        )
        .await;
    assert_eq!(code(&r), "file/invalid-format");
    let r = s.send(Method::PUT, &url, &jpeg, vec![1u8; 1001]).await;
    assert_eq!(code(&r), "file/file-too-large");
    assert!(
        s.app.storage.head(&key).await.is_err(),
        "no object after a refused upload"
    );

    // A PUT that breaks off mid-body leaves nothing behind.
    let (path_and_query, host) = {
        let rest = url.strip_prefix("http://").unwrap();
        let (host, pq) = rest.split_once('/').unwrap();
        (format!("/{pq}"), host.to_owned())
    };
    {
        use tokio::io::AsyncWriteExt;
        let mut tcp = tokio::net::TcpStream::connect(s.api).await.unwrap();
        let head = format!(
            "PUT {path_and_query} HTTP/1.1\r\nHost: {host}\r\nContent-Type: image/jpeg\r\nContent-Length: 900\r\n\r\n"
        );
        tcp.write_all(head.as_bytes()).await.unwrap();
        tcp.write_all(&[7u8; 300]).await.unwrap();
        tcp.flush().await.unwrap();
        drop(tcp);
    }
    // The server notices the broken body; then the key has no object and no temp file.
    let data_dir = s.app.config.data_dir.clone();
    crate::support::eventually(|| crate::support::temporary_files(&data_dir).is_empty()).await;
    assert!(s.app.storage.head(&key).await.is_err());

    // The genuine upload still works, and a registered key can't be overwritten.
    let r = s
        .send(
            Method::PUT,
            &url,
            &jpeg,
            fixture("landscape.jpg")[..1000].to_vec(),
        )
        .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let r = s
        .api(Method::POST, "/v1/files", PK, Some("alice"), Some(json!({ "s3Key": key.as_str(), "originalName": "a.jpg", "mimeType": "image/jpeg", "size": 1000, "width": 1, "height": 1 })))
        .await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let r = s.send(Method::PUT, &url, &jpeg, vec![1u8; 10]).await;
    assert_eq!(code(&r), "file/access-denied");
    // A download URL can't be turned into an upload.
    let file_id = s
        .api(Method::GET, "/v1/files", PK, Some("alice"), None)
        .await
        .json()["items"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let dl = s
        .api(
            Method::POST,
            &format!("/v1/files/{file_id}/download-url"),
            PK,
            Some("alice"),
            None,
        )
        .await
        .json();
    let r = s
        .send(
            Method::PUT,
            dl["url"].as_str().unwrap(),
            &jpeg,
            vec![1u8; 10],
        )
        .await;
    assert_eq!(code(&r), "file/access-denied");
    s.stop().await;
}

#[tokio::test]
async fn abandoned_uploads_are_swept() {
    let s = TestServer::start().await;
    // Registered: survives. Uploaded but never registered: swept.
    let kept = upload(&s, "alice", "landscape.jpg", "public").await;
    let presigned = s
        .api(
            Method::POST,
            "/v1/files/presigned-url",
            PK,
            Some("alice"),
            Some(json!({ "filename": "o.jpg", "contentType": "image/jpeg", "fileSize": fixture("landscape.jpg").len() })),
        )
        .await
        .json();
    let put = s
        .send(
            Method::PUT,
            presigned["url"].as_str().unwrap(),
            &[("content-type", "image/jpeg")],
            fixture("landscape.jpg"),
        )
        .await;
    assert_eq!(put.status, 200);
    let init = s
        .api(
            Method::POST,
            "/v1/files/multipart/init",
            PK,
            Some("alice"),
            Some(json!({ "filename": "m.jpg", "contentType": "image/jpeg", "fileSize": 100 })),
        )
        .await
        .json();
    let orphan = ObjectKey::parse(presigned["key"].as_str().unwrap()).unwrap();
    assert!(s.app.storage.head(&orphan).await.is_ok());
    // Nothing is old enough yet.
    let now = time::OffsetDateTime::now_utc();
    let report = imgedge::housekeeping::sweep(&s.app, now).await.unwrap();
    assert_eq!(report.uploads, 0);
    // A day later, the orphans go.
    let later = now + time::Duration::seconds(s.app.config.upload_ttl_secs as i64 + 1);
    let report = imgedge::housekeeping::sweep(&s.app, later).await.unwrap();
    assert_eq!(
        report,
        imgedge::housekeeping::SweepReport {
            uploads: 2,
            multipart: 1,
            ..Default::default()
        }
    );
    assert!(s.app.storage.head(&orphan).await.is_err());
    let kept_key = ObjectKey::parse(kept["s3Key"].as_str().unwrap()).unwrap();
    assert!(s.app.storage.head(&kept_key).await.is_ok());
    assert_eq!(s.get(&format!("/{kept_key}")).await.status, 200);
    // The swept multipart upload no longer takes parts.
    let r = s
        .api(
            Method::POST,
            "/v1/files/multipart/presigned-url",
            PK,
            Some("alice"),
            Some(json!({ "key": init["key"], "uploadId": init["uploadId"], "partNumber": 1 })),
        )
        .await;
    assert_eq!(code(&r), "file/not-found");
    s.stop().await;
}

#[tokio::test]
async fn openapi_document_is_served_and_lists_every_endpoint() {
    let s = TestServer::start().await;
    let r = s.api_get("/v1/openapi.json").await;
    assert_eq!(r.status, 200);
    let doc = r.json();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    for (path, method) in [
        ("/v1/files/presigned-url", "post"),
        ("/v1/files/multipart/init", "post"),
        ("/v1/files/multipart/presigned-url", "post"),
        ("/v1/files/multipart/complete", "post"),
        ("/v1/files/multipart/abort", "post"),
        ("/v1/files", "post"),
        ("/v1/files", "get"),
        ("/v1/files/{fileId}", "get"),
        ("/v1/files/{fileId}", "patch"),
        ("/v1/files/{fileId}", "delete"),
        ("/v1/files/{fileId}/download-url", "post"),
    ] {
        assert!(
            doc["paths"][path][method].is_object(),
            "{method} {path} missing"
        );
    }
    // The served document is the one kept in the repository.
    let on_disk: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(doc, on_disk);
    s.stop().await;
}

/// Parts that can no longer be completed (a node died between joining them and removing
/// them, and the file was registered since) are removed by housekeeping once idle; the
/// parts of an upload still open are kept.
#[tokio::test]
async fn leftover_multipart_parts_are_swept_and_open_ones_kept() {
    let s = TestServer::start().await;
    if s.is_s3() {
        // S3 keeps and expires parts itself.
        s.stop().await;
        return;
    }
    let bytes = fixture("landscape.jpg");
    let mut ids = Vec::new();
    for _ in 0..2 {
        let init = s
            .api(
                Method::POST,
                "/v1/files/multipart/init",
                PK,
                Some("alice"),
                Some(json!({ "filename": "m.jpg", "contentType": "image/jpeg", "fileSize": bytes.len() })),
            )
            .await
            .json();
        let (key, id) = (init["key"].clone(), init["uploadId"].clone());
        let part = s
            .api(
                Method::POST,
                "/v1/files/multipart/presigned-url",
                PK,
                Some("alice"),
                Some(json!({ "key": key, "uploadId": id, "partNumber": 1 })),
            )
            .await
            .json();
        let put = s
            .send(
                Method::PUT,
                part["url"].as_str().unwrap(),
                &[],
                bytes.clone(),
            )
            .await;
        assert_eq!(put.status, 200);
        ids.push((
            key,
            id.as_str().unwrap().to_owned(),
            put.header("etag").to_owned(),
        ));
    }
    // The first is completed and registered; the second stays open.
    let (key, id, etag) = &ids[0];
    let r = s
        .api(
            Method::POST,
            "/v1/files/multipart/complete",
            PK,
            Some("alice"),
            Some(
                json!({ "key": key, "uploadId": id, "parts": [{ "partNumber": 1, "etag": etag }] }),
            ),
        )
        .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let r = s
        .api(
            Method::POST,
            "/v1/files",
            PK,
            Some("alice"),
            Some(json!({ "s3Key": key, "originalName": "m.jpg", "mimeType": "image/jpeg", "size": bytes.len() })),
        )
        .await;
    assert_eq!(r.status, 201);
    // What a node killed after the join leaves: the parts directory, long untouched.
    let parts = s.app.config.data_dir.join("objects.work").join("parts");
    std::fs::create_dir(parts.join(id)).unwrap();
    std::fs::write(parts.join(id).join("1"), &bytes).unwrap();
    let long_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(7200);
    for id in [id, &ids[1].1] {
        std::fs::File::open(parts.join(id))
            .unwrap()
            .set_modified(long_ago)
            .unwrap();
    }
    let report = imgedge::housekeeping::sweep(&s.app, time::OffsetDateTime::now_utc())
        .await
        .unwrap();
    assert_eq!(report.temporary, 1);
    assert!(
        !parts.join(id).exists(),
        "the completed upload's parts are gone"
    );
    assert!(
        parts.join(&ids[1].1).exists(),
        "the open upload's parts are kept"
    );
    s.stop().await;
}

/// The playground's calls: public images only, URLs checked by the CDN's parser and
/// printed canonically, signed only when the operator allows it, and off entirely with
/// `playground = false`.
#[tokio::test]
async fn playground_calls_list_public_images_and_check_urls() {
    let s = TestServer::start_with(|c| {
        c.security_key = "MY_SECURE_KEY".into();
        c.playground_signing = true;
    })
    .await;
    s.add("pg/a.jpg", "landscape.jpg", Visibility::Public).await;
    s.add("pg/b.jpg", "landscape.jpg", Visibility::Private)
        .await;
    s.add("pg/c.png", "alpha.png", Visibility::Public).await;

    let page = s.api_get("/playground").await;
    assert_eq!(page.status, 200);
    assert_eq!(page.header("content-type"), "text/html; charset=utf-8");
    let html = String::from_utf8(page.body.to_vec()).unwrap();
    assert!(
        html.contains(&format!("\"cdn\":\"http://{}\"", s.cdn)),
        "config injected"
    );
    assert!(
        !html.contains("MY_SECURE_KEY"),
        "the key never reaches the page"
    );

    let images = s.api_get("/playground/images").await.json();
    let keys: Vec<&str> = images["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["key"].as_str().unwrap())
        .collect();
    assert_eq!(
        keys,
        ["pg/a.jpg", "pg/c.png"],
        "public images only, in key order"
    );
    assert_eq!(images["next"], serde_json::Value::Null);
    let after = s.api_get("/playground/images?after=pg/a.jpg").await.json();
    assert_eq!(after["items"][0]["key"], "pg/c.png");

    // A pasted URL (host, signature and all) comes back canonical, signed for the page.
    let pasted = "https://cdn.example/unsafe/fit-in/300x200/center/filters:format(jpg)/pg/a.jpg";
    let path = format!(
        "/playground/url?path={}&srcset=320,640",
        percent_encoding::utf8_percent_encode(pasted, percent_encoding::NON_ALPHANUMERIC)
    );
    let answer = s.api_get(&path).await;
    assert_eq!(answer.status, 200);
    let answer = answer.json();
    assert_eq!(
        answer["canonical"],
        "fit-in/300x200/filters:format(jpeg)/pg/a.jpg"
    );
    let cdn = format!("http://{}", s.cdn);
    assert_eq!(
        answer["bare"],
        format!("{cdn}/unsafe/fit-in/300x200/filters:format(jpeg)/pg/a.jpg")
    );
    let signed = answer["url"]
        .as_str()
        .unwrap()
        .strip_prefix(&format!("{cdn}/"))
        .unwrap();
    assert!(
        signed.ends_with("=/fit-in/300x200/filters:format(jpeg)/pg/a.jpg"),
        "{signed}"
    );
    assert_eq!(
        s.get(&format!("/{signed}")).await.status,
        200,
        "the signed URL is served"
    );
    assert!(
        answer["srcset"].as_str().unwrap().contains(" 640w"),
        "{answer}"
    );
    let meta = answer["meta"]
        .as_str()
        .unwrap()
        .strip_prefix(&cdn)
        .unwrap()
        .to_owned();
    assert_eq!(s.get(&meta).await.json()["key"], "pg/a.jpg");

    // A broken option: the CDN's own 400 body, naming the segment.
    let broken = s
        .api_get("/playground/url?path=300x200/filters:quality(150)/pg/a.jpg")
        .await;
    assert_eq!(broken.status, 400);
    let error = &broken.json()["error"];
    assert_eq!(error["code"], "url/invalid");
    assert_eq!(error["segment"], "quality(150)");
    let unknown = s.api_get("/playground/url?path=a.jpg&size=3").await;
    assert_eq!(unknown.status, 400);
    assert!(
        unknown.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("`size`")
    );

    // The CDN lets the page read what it answers.
    let image = s.get("/fit-in/50x50/pg/a.jpg").await;
    assert_eq!(image.header("access-control-allow-origin"), "*");
    assert!(
        image.header("server-timing").starts_with("render;dur="),
        "{}",
        image.header("server-timing")
    );
    s.stop().await;

    // Off: every playground path is a 404, and nothing is signed for anyone.
    let off = TestServer::start_with(|c| c.playground = false).await;
    for path in [
        "/playground",
        "/playground/images",
        "/playground/url?path=a.jpg",
    ] {
        let r = off.api_get(path).await;
        assert_eq!(r.status, 404, "{path}");
        assert_eq!(r.json()["error"]["code"], "common/not-found", "{path}");
    }
    off.stop().await;
}
