//! The image edge over HTTP: resize modes, filters, formats, headers, access rules and
//! error statuses.

use image::{GenericImageView, ImageFormat};
use imgedge::db::Visibility;

use crate::support::{TestServer, fixture};

async fn server_with_landscape() -> TestServer {
    let s = TestServer::start().await;
    s.add("photos/landscape.jpg", "landscape.jpg", Visibility::Public)
        .await;
    s
}

#[tokio::test]
async fn resize_modes_give_the_documented_dimensions() {
    let s = server_with_landscape().await;
    // landscape.jpg is 640x427.
    let cases: &[(&str, (u32, u32))] = &[
        ("/photos/landscape.jpg", (640, 427)),
        ("/300x200/photos/landscape.jpg", (300, 200)),
        ("/unsafe/300x200/photos/landscape.jpg", (300, 200)),
        ("/100x100/photos/landscape.jpg", (100, 100)),
        ("/300x0/photos/landscape.jpg", (300, 200)),
        ("/x100/photos/landscape.jpg", (150, 100)),
        ("/0x100/photos/landscape.jpg", (150, 100)),
        ("/origx100/photos/landscape.jpg", (640, 100)),
        // An all-zero crop box is no crop (Thumbor's reading).
        ("/0x0:0x0/photos/landscape.jpg", (640, 427)),
        ("/0x0:0x0/300x200/photos/landscape.jpg", (300, 200)),
        ("/-300x200/photos/landscape.jpg", (300, 200)),
        ("/300x-200/photos/landscape.jpg", (300, 200)),
        ("/fit-in/300x300/photos/landscape.jpg", (300, 200)),
        ("/fit-in/1000x1000/photos/landscape.jpg", (640, 427)),
        (
            "/fit-in/1000x1000/filters:upscale()/photos/landscape.jpg",
            (1000, 667),
        ),
        ("/full-fit-in/300x300/photos/landscape.jpg", (450, 300)),
        ("/adaptive-fit-in/300x600/photos/landscape.jpg", (450, 300)),
        ("/fit-in/300x600/photos/landscape.jpg", (300, 200)),
        (
            "/adaptive-full-fit-in/200x100/photos/landscape.jpg",
            (200, 133),
        ),
        ("/10x10:330x223/photos/landscape.jpg", (320, 213)),
        ("/10x10:330x226/160x0/photos/landscape.jpg", (160, 108)),
        ("/300x200/left/top/photos/landscape.jpg", (300, 200)),
        ("/300x200/right/bottom/photos/landscape.jpg", (300, 200)),
        ("/300x200/smart/photos/landscape.jpg", (300, 200)),
        (
            "/fit-in/100x100/filters:fill(white)/photos/landscape.jpg",
            (100, 100),
        ),
        (
            "/fit-in/300x300/filters:rotate(90)/photos/landscape.jpg",
            (200, 300),
        ),
        (
            // Each side over the source shrinks to it (Thumbor's rule), no square crop.
            "/1000x1000/filters:no_upscale()/photos/landscape.jpg",
            (640, 427),
        ),
    ];
    for (path, (w, h)) in cases {
        let r = s.get(path).await;
        assert_eq!(
            r.status,
            200,
            "{path}: {}",
            String::from_utf8_lossy(&r.body)
        );
        let img = r.image();
        assert_eq!(img.dimensions(), (*w, *h), "{path}");
        assert_eq!(r.format(), ImageFormat::Jpeg, "{path}");
    }
    s.stop().await;
}

#[tokio::test]
async fn trim_removes_a_uniform_border() {
    let s = TestServer::start().await;
    // A 50x30 red block inside a 10 px white border.
    let mut img = image::RgbImage::from_pixel(70, 50, image::Rgb([255, 255, 255]));
    for y in 10..40 {
        for x in 10..60 {
            img.put_pixel(x, y, image::Rgb([200, 0, 0]));
        }
    }
    let mut png = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut png), ImageFormat::Png)
        .unwrap();
    s.add_bytes("bordered.png", png, Visibility::Public).await;
    assert_eq!(
        s.get("/trim/bordered.png").await.image().dimensions(),
        (50, 30)
    );
    assert_eq!(
        s.get("/trim:bottom-right:10/bordered.png")
            .await
            .image()
            .dimensions(),
        (50, 30)
    );
    assert_eq!(s.get("/bordered.png").await.image().dimensions(), (70, 50));
    s.stop().await;
}

#[tokio::test]
async fn every_filter_renders() {
    let s = server_with_landscape().await;
    let filters = [
        "quality(40)",
        "blur(3)",
        "blur(2,1.5)",
        "sharpen(1.5,1,true)",
        "grayscale()",
        "brightness(30)",
        "contrast(-20)",
        "rotate(180)",
        "fill(red)",
        "fill(transparent):format(png)",
        "fill(auto)",
        "fill(blur)",
        "background_color(00ff00)",
        "no_upscale()",
        "upscale()",
        "strip_exif()",
        "strip_icc()",
        "max_bytes(4000)",
        "proportion(0.5)",
        "focal(100x100:200x200)",
        "round_corner(20,255,255,255)",
        "round_corner(20|10,0,0,0,transparent):format(png)",
        "max_age(60)",
    ];
    for f in filters {
        let path = format!("/fit-in/200x200/filters:{f}/photos/landscape.jpg");
        let r = s.get(&path).await;
        assert_eq!(
            r.status,
            200,
            "{path}: {}",
            String::from_utf8_lossy(&r.body)
        );
        r.image();
    }
    s.stop().await;
}

#[tokio::test]
async fn filters_change_pixels_as_documented() {
    let s = server_with_landscape().await;
    let gray = s
        .get("/fit-in/100x100/filters:grayscale():format(png)/photos/landscape.jpg")
        .await
        .image()
        .to_rgb8();
    assert!(gray.pixels().all(|p| p[0] == p[1] && p[1] == p[2]));
    let r = s
        .get("/fit-in/200x200/filters:max_bytes(3000)/photos/landscape.jpg")
        .await;
    assert!(r.body.len() <= 3000, "{} bytes", r.body.len());
    let half = s
        .get("/300x200/filters:proportion(0.5)/photos/landscape.jpg")
        .await
        .image();
    assert_eq!(half.dimensions(), (150, 100));
    s.stop().await;
}

#[tokio::test]
async fn output_formats_follow_filter_then_accept_then_source() {
    let s = server_with_landscape().await;
    s.add("alpha.png", "alpha.png", Visibility::Public).await;
    s.add("anim.gif", "animated.gif", Visibility::Public).await;
    s.add("photo.webp", "photo.webp", Visibility::Public).await;
    let chrome = "image/avif,image/webp,image/apng,*/*;q=0.8";
    let cases: &[(&str, &str, ImageFormat, bool)] = &[
        (
            "/fit-in/100x100/photos/landscape.jpg",
            "*/*",
            ImageFormat::Jpeg,
            true,
        ),
        (
            "/fit-in/100x100/photos/landscape.jpg",
            chrome,
            ImageFormat::WebP,
            true,
        ),
        (
            "/fit-in/100x100/filters:format(png)/photos/landscape.jpg",
            chrome,
            ImageFormat::Png,
            false,
        ),
        (
            "/fit-in/100x100/filters:format(jpg)/alpha.png",
            chrome,
            ImageFormat::Jpeg,
            false,
        ),
        (
            "/fit-in/100x100/filters:format(gif)/photos/landscape.jpg",
            "*/*",
            ImageFormat::Gif,
            false,
        ),
        (
            "/fit-in/100x100/filters:format(avif)/photos/landscape.jpg",
            "*/*",
            ImageFormat::Avif,
            false,
        ),
        (
            "/fit-in/100x100/filters:format(webp)/alpha.png",
            "*/*",
            ImageFormat::WebP,
            false,
        ),
        ("/fit-in/100x100/alpha.png", "*/*", ImageFormat::Png, true),
        ("/fit-in/100x100/anim.gif", "*/*", ImageFormat::Gif, true),
        ("/fit-in/100x100/photo.webp", "*/*", ImageFormat::WebP, true),
    ];
    for (path, accept, format, vary) in cases {
        let r = s.get_with(path, &[("accept", accept)]).await;
        assert_eq!(
            r.status,
            200,
            "{path}: {}",
            String::from_utf8_lossy(&r.body)
        );
        assert_eq!(r.format(), *format, "{path} with {accept}");
        assert_eq!(r.header("vary") == "Accept", *vary, "{path}");
        assert_eq!(r.header("content-type"), format.to_mime_type(), "{path}");
    }
    // AVIF is never chosen from Accept alone unless the operator enables it.
    let r = s
        .get_with(
            "/fit-in/100x100/photos/landscape.jpg",
            &[("accept", chrome)],
        )
        .await;
    assert_ne!(r.format(), ImageFormat::Avif);
    s.stop().await;
}

/// Every frame of an animated GIF or WebP answer: its size, delay in ms and centre colour.
fn frames(body: &[u8]) -> Vec<(u32, u32, u32, [u8; 4])> {
    use image::AnimationDecoder;
    let cursor = std::io::Cursor::new(body);
    let frames = match image::guess_format(body).unwrap() {
        ImageFormat::Gif => image::codecs::gif::GifDecoder::new(cursor)
            .unwrap()
            .into_frames(),
        ImageFormat::WebP => image::codecs::webp::WebPDecoder::new(cursor)
            .unwrap()
            .into_frames(),
        other => panic!("{other:?} does not animate"),
    };
    frames
        .map(|f| {
            let f = f.unwrap();
            let (n, d) = f.delay().numer_denom_ms();
            let b = f.buffer();
            let c = b.get_pixel(b.width() / 2, b.height() / 2).0;
            (b.width(), b.height(), n / d, c)
        })
        .collect()
}

fn close(a: [u8; 4], b: [u8; 4]) -> bool {
    a.iter().zip(b).all(|(x, y)| x.abs_diff(y) <= 24)
}

#[tokio::test]
async fn animations_stay_animated_frame_by_frame() {
    let s = TestServer::start().await;
    // fixtures/animated.gif: 32x32, red, green, blue, 100 ms each, looping.
    s.add("anim.gif", "animated.gif", Visibility::Public).await;
    // conformance/images/animated.webp: 120x80, three frames of 100, 200 and 300 ms.
    let webp = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/conformance/images/animated.webp"
    ))
    .unwrap();
    s.add_bytes("anim.webp", webp, Visibility::Public).await;
    let rgb = [[255, 0, 0, 255], [0, 255, 0, 255], [0, 0, 255, 255]];
    let chrome = "image/avif,image/webp,image/apng,*/*;q=0.8";

    // GIF stays GIF for a client without WebP; every frame resized, delays kept.
    for (path, accept, format) in [
        ("/fit-in/16x16/anim.gif", "*/*", ImageFormat::Gif),
        ("/fit-in/16x16/anim.gif", chrome, ImageFormat::WebP),
        (
            "/fit-in/16x16/filters:format(webp)/anim.gif",
            "*/*",
            ImageFormat::WebP,
        ),
    ] {
        let r = s.get_with(path, &[("accept", accept)]).await;
        assert_eq!(r.status, 200, "{path}");
        assert_eq!(r.format(), format, "{path} with {accept}");
        let got = frames(&r.body);
        assert_eq!(got.len(), 3, "{path} with {accept}");
        for ((w, h, delay, c), want) in got.into_iter().zip(rgb) {
            assert_eq!((w, h, delay), (16, 16, 100), "{path} with {accept}");
            assert!(close(c, want), "{path}: {c:?} vs {want:?}");
        }
    }
    // Cropped and flipped frame by frame: the right half of each frame, mirrored.
    let got = frames(&s.get("/-8x16/filters:grayscale()/anim.gif").await.body);
    assert_eq!(got.len(), 3);
    for (w, h, _, c) in got {
        assert_eq!((w, h), (8, 16));
        assert!(c[0].abs_diff(c[2]) < 8, "grey: {c:?}");
    }
    // Animated WebP in, animated GIF out, with each frame's own delay.
    let got = frames(
        &s.get("/fit-in/60x60/filters:format(gif)/anim.webp")
            .await
            .body,
    );
    let delays: Vec<u32> = got.iter().map(|f| f.2).collect();
    assert_eq!(delays, [100, 200, 300]);
    assert!(got.iter().all(|f| (f.0, f.1) == (60, 40)));

    // meta/ tells the frames in and out.
    let meta = s.get("/meta/fit-in/16x16/anim.gif").await.json();
    assert_eq!(meta["source"]["frames"], 3);
    assert_eq!(meta["output"]["frames"], 3);
    assert_eq!(meta["output"]["animated"], true);
    s.stop().await;

    // Over the frame budget (3 frames of 16x16 are 768 pixels): the first frame only.
    let s = TestServer::start_with(|c| c.max_animation_pixels = 767).await;
    s.add("anim.gif", "animated.gif", Visibility::Public).await;
    let r = s.get("/fit-in/16x16/anim.gif").await;
    assert_eq!(r.format(), ImageFormat::Gif);
    let got = frames(&r.body);
    assert_eq!(got.len(), 1);
    assert!(close(got[0].3, rgb[0]), "the first frame: {:?}", got[0].3);
    let meta = s.get("/meta/fit-in/16x16/anim.gif").await.json();
    assert_eq!(meta["output"]["frames"], 1);
    let steps = meta["operations"].to_string();
    assert!(steps.contains("frame budget"), "{steps}");
    // A smaller output fits the budget again.
    assert_eq!(frames(&s.get("/fit-in/8x8/anim.gif").await.body).len(), 3);
    s.stop().await;
}

#[tokio::test]
async fn overlays_come_from_public_files_of_the_store_only() {
    let s = server_with_landscape().await;
    let blue = image::RgbaImage::from_pixel(20, 10, image::Rgba([0, 0, 255, 255]));
    let mut png = Vec::new();
    image::DynamicImage::ImageRgba8(blue)
        .write_to(&mut std::io::Cursor::new(&mut png), ImageFormat::Png)
        .unwrap();
    s.add_bytes("brand/logo.png", png.clone(), Visibility::Public)
        .await;
    s.add_bytes("brand/secret.png", png, Visibility::Private)
        .await;
    let plain = s.get("/fit-in/300x200/photos/landscape.jpg").await.image();
    let path = "/fit-in/300x200/filters:watermark(brand/logo.png,-0,-0,0)/photos/landscape.jpg";
    let r = s.get(path).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let marked = r.image();
    assert_eq!(marked.dimensions(), plain.dimensions());
    let (w, h) = marked.dimensions();
    // The overlay sits in the bottom-right corner; the rest of the picture is untouched.
    let corner = marked.get_pixel(w - 5, h - 5).0;
    assert!(corner[2] > 200 && corner[0] < 60, "corner is {corner:?}");
    let near = |a: [u8; 4], b: [u8; 4]| a.iter().zip(b).all(|(x, y)| x.abs_diff(y) <= 12);
    assert!(near(marked.get_pixel(10, 10).0, plain.get_pixel(10, 10).0));
    // meta/ names it among the operations.
    let meta = s
        .get("/meta/fit-in/300x200/filters:watermark(brand/logo.png,-0,-0,0)/photos/landscape.jpg")
        .await
        .json();
    assert!(
        meta["operations"]
            .to_string()
            .contains("watermark brand/logo.png")
    );
    // A private or missing overlay is the URL's mistake, and both read the same.
    for overlay in ["brand/secret.png", "brand/missing.png"] {
        for (filter, call) in [
            ("watermark", format!("watermark({overlay},0,0,0)")),
            ("frame", format!("frame({overlay})")),
        ] {
            let path = format!("/fit-in/300x200/filters:{call}/photos/landscape.jpg");
            let r = s.get(&path).await;
            assert_eq!(r.status, 400, "{path}");
            let body = String::from_utf8_lossy(&r.body);
            assert!(
                body.contains(&format!(
                    "the {filter} image `{overlay}` is not a public file"
                )),
                "{body}"
            );
        }
    }

    // frame(): a nine-patch (red ring, transparent hole, stretchy middle, padding 2 on
    // every side) drawn round the picture, which grows by the padding.
    let patch = image::RgbaImage::from_fn(12, 12, |x, y| {
        let marked = |v: u32, lo: u32, hi: u32| (lo..=hi).contains(&v);
        let black = image::Rgba([0, 0, 0, 255]);
        match (x, y) {
            (_, 0) if marked(x, 5, 6) => black,
            (0, _) if marked(y, 5, 6) => black,
            (_, 11) if marked(x, 3, 8) => black,
            (11, _) if marked(y, 3, 8) => black,
            (0 | 11, _) | (_, 0 | 11) => image::Rgba([0, 0, 0, 0]),
            _ if !marked(x, 4, 7) || !marked(y, 4, 7) => image::Rgba([255, 0, 0, 255]),
            _ => image::Rgba([0, 0, 0, 0]),
        }
    });
    let mut png = Vec::new();
    image::DynamicImage::ImageRgba8(patch)
        .write_to(&mut std::io::Cursor::new(&mut png), ImageFormat::Png)
        .unwrap();
    s.add_bytes("frames/ring.png", png, Visibility::Public)
        .await;
    let r = s
        .get("/fit-in/300x200/filters:frame(frames/ring.png):format(png)/photos/landscape.jpg")
        .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let framed = r.image().to_rgb8();
    let (w, h) = plain.dimensions();
    assert_eq!(framed.dimensions(), (w + 4, h + 4));
    for (x, y) in [
        (0, 0),
        (w + 3, 0),
        (0, h + 3),
        (w + 3, h + 3),
        (w / 2, 1),
        (1, h / 2),
    ] {
        assert_eq!(framed.get_pixel(x, y).0, [255, 0, 0], "ring at ({x},{y})");
    }
    let inside = framed.get_pixel(w / 2 + 2, h / 2 + 2).0;
    let want = plain.get_pixel(w / 2, h / 2).0;
    assert!(
        inside.iter().zip(want).all(|(a, b)| a.abs_diff(b) <= 12),
        "the picture shows through the hole: {inside:?} vs {want:?}"
    );
    s.stop().await;
}

#[tokio::test]
async fn auto_avif_when_enabled() {
    let s = TestServer::start_with(|c| c.auto_avif = true).await;
    s.add("a.jpg", "landscape.jpg", Visibility::Public).await;
    let r = s
        .get_with(
            "/fit-in/64x64/a.jpg",
            &[("accept", "image/avif,image/webp")],
        )
        .await;
    assert_eq!(r.format(), ImageFormat::Avif);
    s.stop().await;
}

#[tokio::test]
async fn exif_orientation_is_applied_before_geometry() {
    let s = TestServer::start().await;
    s.add("r.jpg", "exif_rotated.jpg", Visibility::Public).await;
    // Stored 300x200 with Orientation=6: displays 200x300, red at the top.
    let img = s.get("/r.jpg").await.image();
    assert_eq!(img.dimensions(), (200, 300));
    let img = s.get("/fit-in/100x100/r.jpg").await.image().to_rgb8();
    assert_eq!(img.dimensions(), (67, 100));
    let top = img.get_pixel(33, 3);
    assert!(top[0] > 180 && top[1] < 80 && top[2] < 80, "top is {top:?}");
    s.stop().await;
}

#[tokio::test]
async fn cmyk_jpeg_keeps_its_colours() {
    let s = TestServer::start().await;
    s.add("cmyk.jpg", "cmyk.jpg", Visibility::Public).await;
    let img = s.get("/cmyk.jpg").await.image().to_rgb8();
    let (w, h) = img.dimensions();
    let left = img.get_pixel(w / 4, h / 2);
    let right = img.get_pixel(3 * w / 4, h / 2);
    assert!(
        left[0] > 150 && left[2] < 100,
        "left should be red, is {left:?}"
    );
    assert!(
        right[2] > 150 && right[0] < 100,
        "right should be blue, is {right:?}"
    );
    s.stop().await;
}

#[tokio::test]
async fn alpha_is_flattened_on_the_background_for_jpeg() {
    let s = TestServer::start().await;
    s.add("alpha.png", "alpha.png", Visibility::Public).await;
    let src = image::load_from_memory(&fixture("alpha.png"))
        .unwrap()
        .to_rgba8();
    let (tx, ty) = src
        .enumerate_pixels()
        .find(|(_, _, p)| p[3] == 0)
        .map(|(x, y, _)| (x, y))
        .expect("alpha.png has a transparent pixel");
    let white = s
        .get("/filters:format(jpeg)/alpha.png")
        .await
        .image()
        .to_rgb8();
    let p = white.get_pixel(tx, ty);
    assert!(p.0.iter().all(|&c| c > 240), "expected white, got {p:?}");
    let red = s
        .get("/filters:format(jpeg):background_color(ff0000)/alpha.png")
        .await
        .image()
        .to_rgb8();
    let p = red.get_pixel(tx, ty);
    assert!(
        p[0] > 230 && p[1] < 30 && p[2] < 30,
        "expected red, got {p:?}"
    );
    // PNG keeps the alpha channel.
    let png = s.get("/alpha.png").await.image();
    assert!(png.color().has_alpha());
    s.stop().await;
}

#[tokio::test]
async fn sixteen_bit_png_is_served() {
    let s = TestServer::start().await;
    s.add("g.png", "gray16.png", Visibility::Public).await;
    let r = s.get("/fit-in/50x50/g.png").await;
    assert_eq!(r.format(), ImageFormat::Png);
    r.image();
    s.stop().await;
}

#[tokio::test]
async fn http_caching_headers_304_and_head() {
    let s = server_with_landscape().await;
    let path = "/fit-in/120x120/photos/landscape.jpg";
    let first = s.get(path).await;
    assert_eq!(first.status, 200);
    let etag = first.header("etag").to_owned();
    assert!(etag.starts_with('"') && etag.len() > 10, "{etag}");
    assert_eq!(first.header("cache-control"), "public, max-age=86400");
    assert_eq!(first.header("content-length"), first.body.len().to_string());
    assert!(!first.header("x-request-id").is_empty());
    let again = s.get(path).await;
    assert_eq!(again.header("etag"), etag);
    assert_eq!(again.body, first.body);
    let not_modified = s.get_with(path, &[("if-none-match", &etag)]).await;
    assert_eq!(not_modified.status, 304);
    assert!(not_modified.body.is_empty());
    let other = s.get_with(path, &[("if-none-match", "\"nope\"")]).await;
    assert_eq!(other.status, 200);
    let head = s.head(path).await;
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    assert_eq!(head.header("content-length"), first.body.len().to_string());
    let short = s
        .get("/fit-in/120x120/filters:max_age(60)/photos/landscape.jpg")
        .await;
    assert_eq!(short.header("cache-control"), "public, max-age=60");
    s.stop().await;
}

#[tokio::test]
async fn only_public_files_are_served_and_private_ones_look_missing() {
    let s = TestServer::start().await;
    for (key, vis) in [
        ("pub.jpg", Visibility::Public),
        ("priv.jpg", Visibility::Private),
        ("prot.jpg", Visibility::Protected),
        ("shared.jpg", Visibility::Shared),
    ] {
        s.add(key, "landscape.jpg", vis).await;
    }
    assert_eq!(s.get("/fit-in/50x50/pub.jpg").await.status, 200);
    let missing = s.get("/fit-in/50x50/nope.jpg").await;
    assert_eq!(missing.status, 404);
    let missing_body = String::from_utf8(missing.body.to_vec()).unwrap();
    for key in ["priv.jpg", "prot.jpg", "shared.jpg"] {
        let r = s.get(&format!("/fit-in/50x50/{key}")).await;
        assert_eq!(r.status, 404, "{key}");
        // Indistinguishable from a key that does not exist: the same answer, naming the key.
        let expected = missing_body.replace("nope.jpg", key);
        assert_eq!(
            String::from_utf8(r.body.to_vec()).unwrap(),
            expected,
            "{key}"
        );
        for header in ["content-type", "cache-control"] {
            assert_eq!(r.header(header), missing.header(header), "{key} {header}");
        }
    }
    s.stop().await;
}

#[tokio::test]
async fn a_404_names_the_key_and_the_option_it_resembles() {
    let s = TestServer::start().await;
    s.add("photos/secret.jpg", "landscape.jpg", Visibility::Private)
        .await;

    let plain = s.get("/fit-in/50x50/photos/nope.jpg").await;
    assert_eq!(plain.status, 404);
    let error = &plain.json()["error"];
    assert_eq!(error["code"], "image/not-found");
    assert_eq!(error["key"], "photos/nope.jpg");
    assert_eq!(
        error["message"],
        "no public image has the key `photos/nope.jpg`"
    );
    assert!(error.get("hint").is_none(), "{error}");

    // `fitin` is read as the first folder of the key; the answer says what it resembles.
    let typo = s.get("/fitin/300x200/photos/landscape.jpg").await;
    assert_eq!(typo.status, 404);
    let error = &typo.json()["error"];
    assert_eq!(error["key"], "fitin/300x200/photos/landscape.jpg");
    let hint = error["hint"].as_str().unwrap();
    assert!(
        hint.starts_with("`fitin` looks like the option `fit-in`"),
        "{hint}"
    );
    assert!(
        error["message"].as_str().unwrap().ends_with(hint),
        "{error}"
    );

    // A misspelt filters segment after a valid size.
    let filters = s
        .get("/300x200/filterz:quality(80)/photos/landscape.jpg")
        .await;
    assert_eq!(filters.status, 404);
    let error = &filters.json()["error"];
    assert_eq!(error["key"], "filterz:quality(80)/photos/landscape.jpg");
    assert!(
        error["hint"]
            .as_str()
            .unwrap()
            .starts_with("`filterz:quality(80)` looks like the option `filters:`"),
        "{error}"
    );

    // An option after a folder: the key had already begun.
    let late = s.get("/photos/300x200/landscape.jpg").await;
    let hint = late.json()["error"]["hint"].as_str().unwrap().to_owned();
    assert!(
        hint.starts_with("`300x200` (after `photos`) is an option (size (WxH))"),
        "{hint}"
    );

    // A private file with a typo-like folder answers exactly like a missing one.
    s.add("fitin/a.jpg", "landscape.jpg", Visibility::Private)
        .await;
    let private = s.get("/fitin/a.jpg").await;
    let missing = s.get("/fitin/b.jpg").await;
    assert_eq!(private.status, 404);
    assert_eq!(
        String::from_utf8(private.body.to_vec()).unwrap(),
        String::from_utf8(missing.body.to_vec())
            .unwrap()
            .replace("b.jpg", "a.jpg")
    );
    s.stop().await;
}

#[tokio::test]
async fn the_cdn_root_is_a_text_page_that_points_onwards() {
    let s = TestServer::start().await;
    let root = s.get("/").await;
    assert_eq!(root.status, 200);
    assert_eq!(root.header("content-type"), "text/plain; charset=utf-8");
    assert_eq!(root.header("cache-control"), "no-store");
    let text = String::from_utf8(root.body.to_vec()).unwrap();
    assert!(text.contains("/unsafe/fit-in/300x200/"), "{text}");
    assert!(text.contains("/v1/openapi.json"), "{text}");
    assert!(
        text.contains(&format!("http://{}/playground", s.api)),
        "{text}"
    );
    let head = s.head("/").await;
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    s.stop().await;
}

#[tokio::test]
async fn visibility_change_applies_to_cached_variants_at_once() {
    let s = TestServer::start().await;
    s.add("flip.jpg", "landscape.jpg", Visibility::Public).await;
    let path = "/fit-in/80x80/flip.jpg";
    assert_eq!(s.get(path).await.status, 200);
    assert_eq!(s.get(path).await.status, 200); // now a cache hit
    s.set_visibility("flip.jpg", Visibility::Private).await;
    assert_eq!(s.get(path).await.status, 404);
    s.set_visibility("flip.jpg", Visibility::Public).await;
    assert_eq!(s.get(path).await.status, 200);
    s.stop().await;
}

#[tokio::test]
async fn signatures_are_checked() {
    let s = TestServer::start_with(|c| c.security_key = "MY_SECURE_KEY".into()).await;
    s.add("a.jpg", "landscape.jpg", Visibility::Public).await;
    let signed = s.app.edge.signing.sign_path("fit-in/60x60/a.jpg");
    assert_eq!(s.get(&format!("/{signed}")).await.status, 200);
    let (sig, rest) = signed.split_once('/').unwrap();
    let tampered = format!("/{sig}/fit-in/61x60/a.jpg");
    let r = s.get(&tampered).await;
    assert_eq!(r.status, 403);
    assert_eq!(r.json()["error"]["code"], "url/bad-signature");
    let mut bad_sig = sig.to_owned();
    bad_sig.replace_range(0..1, if sig.starts_with('A') { "B" } else { "A" });
    assert_eq!(s.get(&format!("/{bad_sig}/{rest}")).await.status, 403);
    // Unsigned URLs are still accepted unless signatures are required.
    assert_eq!(s.get("/unsafe/fit-in/60x60/a.jpg").await.status, 200);
    assert_eq!(s.get("/fit-in/60x60/a.jpg").await.status, 200);
    s.stop().await;

    let s = TestServer::start_with(|c| {
        c.security_key = "MY_SECURE_KEY".into();
        c.require_signature = true;
    })
    .await;
    s.add("a.jpg", "landscape.jpg", Visibility::Public).await;
    assert_eq!(s.get("/unsafe/fit-in/60x60/a.jpg").await.status, 403);
    assert_eq!(s.get("/fit-in/60x60/a.jpg").await.status, 403);
    let signed = s.app.edge.signing.sign_path("fit-in/60x60/a.jpg");
    assert_eq!(s.get(&format!("/{signed}")).await.status, 200);
    s.stop().await;
}

#[tokio::test]
async fn malformed_urls_are_400_naming_the_segment() {
    let s = server_with_landscape().await;
    let cases: &[(&str, &str)] = &[
        (
            "/fit-in/300x200/filters:quality(150)/photos/landscape.jpg",
            "quality",
        ),
        (
            "/fit-in/300x200/filters:nosuch(1)/photos/landscape.jpg",
            "nosuch",
        ),
        (
            "/fit-in/300x200/filters:format(bmp)/photos/landscape.jpg",
            "bmp",
        ),
        ("/../etc/passwd", ".."),
        ("/%2e%2e/etc/passwd", ".."),
        ("/fit-in/10x10/a//b.jpg", ""),
        ("/fit-in/10x10/a%00b.jpg", ""),
    ];
    for (path, needle) in cases {
        let r = s.get(path).await;
        assert_eq!(
            r.status,
            400,
            "{path}: {}",
            String::from_utf8_lossy(&r.body)
        );
        let body = r.json();
        assert_eq!(body["error"]["code"], "url/invalid", "{path}");
        let text = body.to_string();
        assert!(text.contains(needle), "{path}: {text}");
        assert!(body["error"]["segment"].is_string(), "{path}");
    }
    // A box the output would fill is refused before any I/O...
    for path in [
        "/20000x200/photos/landscape.jpg",
        "/full-fit-in/20000x200/photos/landscape.jpg",
        "/fit-in/20000x200/filters:upscale()/photos/landscape.jpg",
        "/fit-in/20000x200/filters:fill(white)/photos/landscape.jpg",
    ] {
        let r = s.get(path).await;
        assert_eq!(r.status, 400, "{path}");
        assert_eq!(
            r.json()["error"]["code"],
            "image/output-too-large",
            "{path}"
        );
    }
    // ...but fit-in never enlarges, so its box is no output size (Thumbor serves these).
    for (path, size) in [
        ("/fit-in/20000x200/photos/landscape.jpg", (300, 200)),
        ("/fit-in/99999x99999/photos/landscape.jpg", (640, 427)),
        (
            "/adaptive-fit-in/99999x99999/photos/landscape.jpg",
            (640, 427),
        ),
    ] {
        let img = s.get(path).await.image();
        assert_eq!((img.width(), img.height()), size, "{path}");
    }
    s.stop().await;
}

#[tokio::test]
async fn bad_sources_get_clean_client_errors() {
    let s = TestServer::start_with(|c| c.max_source_bytes = 200_000).await;
    s.add("trunc.jpg", "truncated.jpg", Visibility::Public)
        .await;
    s.add("corrupt.png", "corrupt.png", Visibility::Public)
        .await;
    s.add("text.jpg", "not_an_image.txt", Visibility::Public)
        .await;
    s.add("bomb.png", "bomb.png", Visibility::Public).await;
    s.add("bomb.jpg", "bomb.jpg", Visibility::Public).await;
    s.add_bytes("huge.jpg", vec![0xff; 300_000], Visibility::Public)
        .await;
    let cases: &[(&str, u16, &str)] = &[
        ("/fit-in/50x50/trunc.jpg", 422, "image/undecodable"),
        ("/fit-in/50x50/corrupt.png", 422, "image/undecodable"),
        ("/fit-in/50x50/text.jpg", 415, "image/unsupported-format"),
        ("/fit-in/50x50/bomb.png", 422, "image/too-many-pixels"),
        ("/fit-in/50x50/bomb.jpg", 422, "image/too-many-pixels"),
        ("/fit-in/50x50/huge.jpg", 413, "image/source-too-large"),
    ];
    for (path, status, code) in cases {
        let r = s.get(path).await;
        assert_eq!(
            r.status,
            *status,
            "{path}: {}",
            String::from_utf8_lossy(&r.body)
        );
        assert_eq!(r.json()["error"]["code"], *code, "{path}");
    }
    // The service is still healthy afterwards.
    assert_eq!(s.api_get("/healthz").await.status, 200);
    s.stop().await;
}

#[tokio::test]
async fn meta_describes_the_operations() {
    let s = server_with_landscape().await;
    let r = s.get("/meta/fit-in/300x300/photos/landscape.jpg").await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.header("content-type"), "application/json");
    let text = r.json().to_string();
    for needle in ["640", "427", "300", "200", "jpeg"] {
        assert!(text.contains(needle), "{needle} missing in {text}");
    }
    s.stop().await;
}

#[tokio::test]
async fn embedded_icc_profiles_are_converted_to_srgb() {
    let s = TestServer::start().await;
    s.add("icc.jpg", "icc_adobergb.jpg", Visibility::Public)
        .await;
    let r = s.get("/fit-in/64x64/icc.jpg").await;
    assert_eq!(r.format(), ImageFormat::Jpeg);
    r.image();
    let meta = s.get("/meta/fit-in/64x64/icc.jpg").await.json();
    assert_eq!(meta["source"]["has_icc"], true, "{meta}");
    s.stop().await;
}

/// A 600x400 PNG of three vertical bands (red, green, blue) or three horizontal ones.
fn bands(vertical: bool) -> Vec<u8> {
    let img = image::RgbImage::from_fn(600, 400, |x, y| {
        let band = if vertical { x / 200 } else { y * 3 / 400 };
        match band {
            0 => image::Rgb([220, 30, 30]),
            1 => image::Rgb([30, 200, 30]),
            _ => image::Rgb([30, 30, 220]),
        }
    });
    let mut png = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut png), ImageFormat::Png)
        .unwrap();
    png
}

/// Which band's colour dominates the rendered image: 0 red, 1 green, 2 blue.
fn dominant(img: &image::DynamicImage) -> usize {
    let rgb = img.to_rgb8();
    let mut sums = [0u64; 3];
    for p in rgb.pixels() {
        for c in 0..3 {
            sums[c] += u64::from(p[c]);
        }
    }
    (0..3).max_by_key(|&c| sums[c]).unwrap()
}

/// Regression (issue 16): the alignment was parsed and printed but the crop was always
/// the centre. What is kept must be the part the URL names, and `meta/` must say so.
#[tokio::test]
async fn crops_keep_the_part_the_alignment_names() {
    let s = TestServer::start().await;
    s.add_bytes("bands/vertical.png", bands(true), Visibility::Public)
        .await;
    s.add_bytes("bands/horizontal.png", bands(false), Visibility::Public)
        .await;
    let cases: &[(&str, usize)] = &[
        ("/100x300/left/bands/vertical.png", 0),
        ("/100x300/bands/vertical.png", 1),
        ("/100x300/center/bands/vertical.png", 1),
        ("/100x300/right/bands/vertical.png", 2),
        ("/100x300/right/bottom/bands/vertical.png", 2),
        ("/-100x300/left/bands/vertical.png", 0),
        ("/300x100/top/bands/horizontal.png", 0),
        ("/300x100/middle/bands/horizontal.png", 1),
        ("/300x100/bottom/bands/horizontal.png", 2),
        ("/300x100/left/bottom/bands/horizontal.png", 2),
        ("/100x100/right/bottom/bands/vertical.png", 2),
    ];
    for (path, band) in cases {
        let img = s.get(path).await.image();
        assert_eq!(dominant(&img), *band, "{path}");
    }
    // meta/ reports the window the render uses.
    let meta = s.get("/meta/100x300/left/bands/vertical.png").await.json();
    let text = meta.to_string();
    assert!(text.contains("left"), "{text}");
    let meta_right = s.get("/meta/100x300/right/bands/vertical.png").await.json();
    assert_ne!(
        meta, meta_right,
        "the crop window differs with the alignment"
    );
    // Its placeholder is that of the part kept: the left crop is red, the right one blue.
    assert_eq!(meta["placeholder"]["dominant_color"], "#dc1e1e");
    assert_eq!(meta_right["placeholder"]["dominant_color"], "#1e1edc");
    // The whole picture, a third each: 4x3 components, a hash unlike the red crop's, and
    // one of the bands as the dominant colour.
    let whole = s.get("/meta/bands/vertical.png").await.json();
    let hash = whole["placeholder"]["blurhash"].as_str().unwrap();
    assert_eq!(hash.len(), 4 + 2 * 4 * 3, "{hash}");
    assert!(
        ["#dc1e1e", "#1ec81e", "#1e1edc"]
            .contains(&whole["placeholder"]["dominant_color"].as_str().unwrap()),
        "{whole}"
    );
    assert_ne!(hash, meta["placeholder"]["blurhash"].as_str().unwrap());
    s.stop().await;
}

/// Client hints (`client_hints = true`, `filters:dpr()`): the hints pick the size, and `Vary`
/// names every header an answer depended on, so that a shared cache keyed by URL and the
/// `Vary` headers (RFC 9111 §4.1) can never hand one browser a variant made for another's
/// hints or `Accept`. Checked over every pair of a grid of request headers.
#[tokio::test]
async fn client_hints_pick_the_size_and_vary_keeps_shared_caches_safe() {
    let s = TestServer::start_with(|c| c.client_hints = true).await;
    s.add("photos/landscape.jpg", "landscape.jpg", Visibility::Public)
        .await;

    // The shared-cache property, over a grid of browsers.
    let urls = [
        "/fit-in/0x0/filters:dpr()/photos/landscape.jpg",
        "/fit-in/160x120/filters:dpr()/photos/landscape.jpg",
        "/fit-in/0x0/filters:dpr():format(png)/photos/landscape.jpg",
        "/fit-in/160x0/filters:dpr(2)/photos/landscape.jpg",
        "/fit-in/160x0/photos/landscape.jpg",
    ];
    let accepts = [
        None,
        Some("image/webp,*/*"),
        Some("image/avif,image/webp,*/*"),
    ];
    let dprs = [None, Some("1"), Some("2"), Some("3")];
    let widths = [None, Some("300"), Some("700")];
    let viewports = [None, Some("360")];
    let mut browsers: Vec<Vec<(&str, &str)>> = Vec::new();
    for accept in accepts {
        for dpr in dprs {
            for width in widths {
                for viewport in viewports {
                    let headers = [
                        ("Accept", accept),
                        ("Sec-CH-DPR", dpr),
                        ("Sec-CH-Width", width),
                        ("Sec-CH-Viewport-Width", viewport),
                    ];
                    browsers.push(
                        headers
                            .into_iter()
                            .filter_map(|(name, value)| Some((name, value?)))
                            .collect(),
                    );
                }
            }
        }
    }
    fn value<'a>(browser: &[(&str, &'a str)], name: &str) -> Option<&'a str> {
        browser
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| *v)
    }
    for url in urls {
        let mut answers = Vec::new();
        for browser in &browsers {
            let r = s.get_with(url, browser).await;
            assert_eq!(r.status, 200, "{url} {browser:?}");
            answers.push(r);
        }
        let mut distinct = std::collections::BTreeSet::new();
        for (i, stored) in answers.iter().enumerate() {
            distinct.insert(stored.body.clone());
            let vary: Vec<&str> = stored
                .header("vary")
                .split(',')
                .map(str::trim)
                .filter(|n| !n.is_empty())
                .collect();
            for (j, asked) in answers.iter().enumerate() {
                let cache_would_serve = vary
                    .iter()
                    .all(|name| value(&browsers[i], name) == value(&browsers[j], name));
                if cache_would_serve {
                    assert!(
                        stored.body == asked.body
                            && stored.header("content-type") == asked.header("content-type"),
                        "{url}: a cache holding the answer for {:?} (Vary: {vary:?}) would serve \
                         it to {:?}, which gets a different image",
                        browsers[i],
                        browsers[j]
                    );
                }
            }
        }
        // The grid is not vacuous where the URL reads hints or Accept.
        if url.contains("dpr()") {
            assert!(distinct.len() >= 3, "{url}: {} variants", distinct.len());
        }
    }

    // What the hints do, on pixels.
    let width = |r: &crate::support::Resp| r.image().width();
    let plain = s
        .get("/fit-in/200x0/filters:dpr()/photos/landscape.jpg")
        .await;
    assert_eq!(width(&plain), 200);
    assert_eq!(plain.header("vary"), "Accept, Sec-CH-DPR");
    assert_eq!(plain.header("critical-ch"), "Sec-CH-DPR");
    assert_eq!(
        plain.header("accept-ch"),
        "Sec-CH-DPR, Sec-CH-Width, Sec-CH-Viewport-Width"
    );
    let dpr = |value: &'static str| [("Sec-CH-DPR", value)];
    let two = s
        .get_with(
            "/fit-in/200x0/filters:dpr()/photos/landscape.jpg",
            &dpr("2"),
        )
        .await;
    assert_eq!(width(&two), 400);
    // 2.625 (a common phone) rounds up to the 3x step.
    let odd = s
        .get_with(
            "/fit-in/200x0/filters:dpr()/photos/landscape.jpg",
            &dpr("2.625"),
        )
        .await;
    assert_eq!(width(&odd), 600);
    // The same variant as the explicit URL: one cache entry, the same bytes.
    let explicit = s.get("/fit-in/400x0/photos/landscape.jpg").await;
    assert_eq!(two.body, explicit.body);
    // A URL without size takes its width from Sec-CH-Width, rounded up to a step.
    let wide = s
        .get_with(
            "/fit-in/0x0/filters:dpr()/photos/landscape.jpg",
            &[("Sec-CH-Width", "300")],
        )
        .await;
    assert_eq!(width(&wide), 320);
    assert_eq!(
        wide.header("vary"),
        "Accept, Sec-CH-DPR, Sec-CH-Width, Sec-CH-Viewport-Width"
    );
    // A fixed ratio reads no hint; a URL without dpr() does not vary on hints.
    let fixed = s
        .get_with(
            "/fit-in/200x0/filters:dpr(1.5)/photos/landscape.jpg",
            &dpr("3"),
        )
        .await;
    assert_eq!(width(&fixed), 300);
    assert_eq!(fixed.header("vary"), "Accept");
    let none = s
        .get_with("/fit-in/200x0/photos/landscape.jpg", &dpr("3"))
        .await;
    assert_eq!((width(&none), none.header("vary")), (200, "Accept"));
    let pinned = s
        .get_with(
            "/fit-in/200x0/filters:format(png)/photos/landscape.jpg",
            &dpr("3"),
        )
        .await;
    assert_eq!(pinned.header("vary"), "");

    s.stop().await;
}

/// `quality(auto)` (and `default_quality = "auto"`): the same bytes from two servers, the
/// quality and score `meta/` reports are those of the served bytes, and `max_bytes` still
/// caps it.
#[tokio::test]
async fn webp_sharp_yuv_is_an_operator_choice_that_keeps_more_of_the_picture() {
    use imgedge::imaging::auto_quality;
    let plain = TestServer::start().await;
    let sharp = TestServer::start_with(|c| c.webp_sharp_yuv = true).await;
    for s in [&plain, &sharp] {
        s.add("p/landscape.jpg", "landscape.jpg", Visibility::Public)
            .await;
    }
    let path = "/fit-in/300x200/filters:format(webp)/p/landscape.jpg";
    let lossless = plain
        .get("/fit-in/300x200/filters:format(png)/p/landscape.jpg")
        .await;
    // The same resize on both (the lossless renders are equal); only the WebP encode's
    // colour conversion differs, and it scores higher against those pixels.
    assert_eq!(
        sharp
            .get("/fit-in/300x200/filters:format(png)/p/landscape.jpg")
            .await
            .body,
        lossless.body
    );
    let (a, b) = (plain.get(path).await, sharp.get(path).await);
    for r in [&a, &b] {
        assert_eq!(r.status, 200);
        assert_eq!(r.header("content-type"), "image/webp");
    }
    assert_ne!(a.body, b.body);
    let score = |bytes: &[u8]| auto_quality::score(&lossless.body, bytes).unwrap();
    assert!(
        score(&b.body) > score(&a.body),
        "{} vs {}",
        score(&b.body),
        score(&a.body)
    );
    // JPEG output is untouched.
    let jpeg = "/fit-in/300x200/p/landscape.jpg";
    assert_eq!(plain.get(jpeg).await.body, sharp.get(jpeg).await.body);
}

#[tokio::test]
async fn quality_auto_is_deterministic_measured_and_capped_by_max_bytes() {
    use imgedge::imaging::{Quality, auto_quality};
    let a = TestServer::start().await;
    let b = TestServer::start_with(|c| c.default_quality = Quality::Auto).await;
    for s in [&a, &b] {
        s.add("p/landscape.jpg", "landscape.jpg", Visibility::Public)
            .await;
    }
    let auto_path = "/fit-in/300x200/filters:quality(auto)/p/landscape.jpg";
    let auto = a.get(auto_path).await;
    assert_eq!(auto.status, 200);
    assert_eq!(auto.header("content-type"), "image/jpeg");
    // Same input, same bytes: on a second server, reached through default_quality.
    let by_default = b.get("/fit-in/300x200/p/landscape.jpg").await;
    assert_eq!(by_default.body, auto.body);

    let meta = a.get(&format!("/meta{auto_path}")).await.json();
    assert_eq!(
        meta["canonical"],
        "fit-in/300x200/filters:quality(auto)/p/landscape.jpg"
    );
    let chosen = &meta["output"]["auto_quality"];
    let quality = meta["output"]["quality"].as_u64().unwrap();
    assert_eq!(chosen["quality"], quality);
    assert_eq!(chosen["target"], auto_quality::DEFAULT_TARGET);
    assert!(
        (1..=2).contains(&chosen["tries"].as_u64().unwrap()),
        "{chosen}"
    );
    // Golden: what the search picks for this photo (a change to the search, its model or
    // the JPEG encoder shows here first).
    assert_eq!(quality, 55, "{chosen}");
    // The served quality is predicted from a probe, so its score may fall a little short
    // of the target (the prediction aims 0.5 above it); meta/ reports the measured score
    // and the prediction.
    let score = chosen["score"].as_f64().unwrap();
    let predicted = chosen["predicted"].as_f64().unwrap();
    assert!(score >= auto_quality::DEFAULT_TARGET - 1.0, "{chosen}");
    assert!((score - predicted).abs() < 2.5, "{chosen}");
    assert_eq!(chosen["measured"], true);
    // The served bytes are the encode at that quality, and a 300x200 output is scored
    // whole: SSIMULACRA2 of the served JPEG against the lossless render of the same URL is
    // the score meta/ reports.
    let explicit = a
        .get(&format!(
            "/fit-in/300x200/filters:quality({quality})/p/landscape.jpg"
        ))
        .await;
    assert_eq!(explicit.body, auto.body);
    let lossless = a
        .get("/fit-in/300x200/filters:format(png)/p/landscape.jpg")
        .await;
    let measured = auto_quality::score(&lossless.body, &auto.body).unwrap();
    assert!((measured - score).abs() < 1e-6, "{measured} vs {score}");
    // Fewer bytes than the fixed default for this photo, which is an easy one.
    let fixed = a.get("/fit-in/300x200/p/landscape.jpg").await;
    assert!(auto.body.len() < fixed.body.len());

    // max_bytes caps what auto chose.
    let cap = auto.body.len() * 2 / 3;
    let capped = a
        .get(&format!(
            "/fit-in/300x200/filters:quality(auto):max_bytes({cap})/p/landscape.jpg"
        ))
        .await;
    assert!(capped.body.len() <= cap, "{} > {cap}", capped.body.len());

    // WebP and AVIF too (AVIF aims at the JPEG target).
    let webp = b
        .get("/meta/fit-in/300x200/filters:format(webp)/p/landscape.jpg")
        .await
        .json();
    assert_eq!(webp["output"]["format"], "webp");
    let chosen = &webp["output"]["auto_quality"];
    assert_eq!(chosen["target"], auto_quality::DEFAULT_TARGET_WEBP);
    assert!(chosen["score"].as_f64().unwrap() >= auto_quality::DEFAULT_TARGET_WEBP - 1.5);
    let avif = b
        .get("/meta/fit-in/300x200/filters:format(avif)/p/landscape.jpg")
        .await
        .json();
    let chosen = &avif["output"]["auto_quality"];
    assert_eq!(avif["output"]["format"], "avif");
    assert_eq!(chosen["target"], auto_quality::DEFAULT_TARGET);
    assert_eq!(chosen["measured"], true);
    assert_eq!(avif["output"]["quality"], chosen["quality"]);
    assert!(
        chosen["score"].as_f64().unwrap() >= auto_quality::DEFAULT_TARGET - 1.5,
        "{chosen}"
    );
    // The served AVIF is the encode at that quality, and its score (decoded by libaom) is
    // the one meta/ reports.
    let served = b
        .get("/fit-in/300x200/filters:format(avif)/p/landscape.jpg")
        .await;
    let explicit = b
        .get(&format!(
            "/fit-in/300x200/filters:quality({}):format(avif)/p/landscape.jpg",
            chosen["quality"]
        ))
        .await;
    assert_eq!(served.body, explicit.body);
    let lossless = b
        .get("/fit-in/300x200/filters:format(png)/p/landscape.jpg")
        .await;
    let measured = auto_quality::score(&lossless.body, &served.body).unwrap();
    assert!(
        (measured - chosen["score"].as_f64().unwrap()).abs() < 1e-6,
        "{measured} {chosen}"
    );
    // Lossless output has no quality to choose.
    let png = b
        .get("/meta/fit-in/300x200/filters:format(png)/p/landscape.jpg")
        .await
        .json();
    assert!(png["output"]["auto_quality"].is_null(), "{png}");
    a.stop().await;
    b.stop().await;
}
