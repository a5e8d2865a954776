//! The `imgedge` binary as users' scripts drive it.

use std::process::Command;

use crate::support::{TestServer, fixture_path, test_config};

pub(crate) fn imgedge() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_imgedge"));
    // Keep the developer's own IMGEDGE_* settings out of the tests.
    for (k, _) in std::env::vars() {
        if k.starts_with("IMGEDGE_") {
            cmd.env_remove(k);
        }
    }
    cmd
}

/// Runs a command that must succeed; (stdout, stderr).
fn succeed(cmd: &mut Command) -> (String, String) {
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stderr}");
    (String::from_utf8_lossy(&out.stdout).into_owned(), stderr)
}

/// `imgedge import <tree> --data-dir <data> <args>`, which must succeed; (stdout, stderr).
fn import(tree: &std::path::Path, data: &std::path::Path, args: &[&str]) -> (String, String) {
    succeed(
        imgedge()
            .arg("import")
            .arg(tree)
            .args(args)
            .arg("--data-dir")
            .arg(data),
    )
}

#[tokio::test]
async fn import_registers_a_tree_and_is_idempotent() {
    let data = tempfile::tempdir().unwrap();
    let tree = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(tree.path().join("2024/summer")).unwrap();
    std::fs::copy(
        fixture_path("landscape.jpg"),
        tree.path().join("2024/summer/beach.jpg"),
    )
    .unwrap();
    std::fs::copy(fixture_path("alpha.png"), tree.path().join("logo.png")).unwrap();
    std::fs::copy(
        fixture_path("not_an_image.txt"),
        tree.path().join("notes.txt"),
    )
    .unwrap();

    let run = |visibility: &str| {
        import(
            tree.path(),
            data.path(),
            &["--visibility", visibility, "--prefix", "legacy/"],
        )
    };
    let (stdout, stderr) = run("public");
    assert!(
        stdout.contains("imported 2 new, 0 refreshed, 0 unchanged, 1 skipped"),
        "{stdout}"
    );
    assert!(stderr.contains("notes.txt"), "{stderr}");
    let (stdout, _) = run("public");
    assert!(
        stdout.contains("imported 0 new, 0 refreshed, 2 unchanged"),
        "{stdout}"
    );

    let config = test_config(data.path());
    let s = TestServer::start_in(data, config).await;
    let r = s.get("/fit-in/100x100/legacy/2024/summer/beach.jpg").await;
    assert_eq!(r.status, 200);
    assert_eq!(s.get("/legacy/logo.png").await.status, 200);
    assert_eq!(s.get("/legacy/notes.txt").await.status, 404);
    s.stop().await;
}

#[test]
fn import_defaults_to_private() {
    let data = tempfile::tempdir().unwrap();
    let tree = tempfile::tempdir().unwrap();
    std::fs::copy(fixture_path("landscape.jpg"), tree.path().join("a.jpg")).unwrap();
    let (stdout, _) = import(tree.path(), data.path(), &[]);
    assert!(stdout.contains("(private)"), "{stdout}");
}

#[test]
fn url_command_signs_when_a_key_is_configured() {
    let (url, _) = succeed(imgedge().args([
        "url",
        "fit-in/300x200/a.jpg",
        "--security-key",
        "MY_SECURE_KEY",
    ]));
    let url = url.trim();
    assert!(url.starts_with("http://127.0.0.1:8080/"), "{url}");
    assert!(url.ends_with("=/fit-in/300x200/a.jpg"), "{url}");
    let out = imgedge()
        .args(["url", "fit-in/300x200/a.jpg"])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "http://127.0.0.1:8080/unsafe/fit-in/300x200/a.jpg"
    );
    let out = imgedge()
        .args(["url", "fit-in/300x200/filters:quality(500)/a.jpg"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("quality"));
}

#[test]
fn url_srcset_prints_ready_attributes() {
    let (out, _) = succeed(imgedge().args([
        "url",
        "--srcset",
        "640,320,960,1280",
        "fit-in/300x200/filters:quality(80)",
        "photos/a.jpg",
    ]));
    let base = "http://127.0.0.1:8080/unsafe";
    assert_eq!(
        out.trim(),
        format!(
            "src=\"{base}/fit-in/1280x853/filters:quality(80)/photos/a.jpg\" \
             srcset=\"{base}/fit-in/320x213/filters:quality(80)/photos/a.jpg 320w, \
             {base}/fit-in/640x427/filters:quality(80)/photos/a.jpg 640w, \
             {base}/fit-in/960x640/filters:quality(80)/photos/a.jpg 960w, \
             {base}/fit-in/1280x853/filters:quality(80)/photos/a.jpg 1280w\" \
             sizes=\"(max-width: 1280px) 100vw, 1280px\""
        )
    );
    // Signed when a key is configured: every URL carries its own signature.
    let (out, _) = succeed(
        imgedge()
            .args(["url", "--srcset", "320,640", "fit-in/300x0", "a.jpg"])
            .env("IMGEDGE_SECURITY_KEY", "MY_SECURE_KEY"),
    );
    assert!(!out.contains("unsafe"), "{out}");
    assert_eq!(out.matches("=/fit-in/").count(), 3, "{out}");
    // Bad widths name the culprit.
    let out = imgedge()
        .args(["url", "--srcset", "320,wide", "fit-in/300x0", "a.jpg"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("`wide` is not a width"));
}

#[test]
fn invalid_configuration_fails_with_a_clear_message() {
    let out = imgedge()
        .args(["serve"])
        .env("IMGEDGE_CDN_ADDR", "not-an-address")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not-an-address"), "{err}");
    let out = imgedge()
        .args(["serve"])
        .env("IMGEDGE_CDN_PORT", "1")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("IMGEDGE_CDN_PORT"));
}

#[test]
fn keys_new_prints_the_key_once_and_appends_its_hash() {
    use imgedge::auth::{KeyKind, KeyRing};

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("imgedge.toml");
    std::fs::write(&file, "# mine\ncdn_addr = \"127.0.0.1:9090\" # keep\n").unwrap();
    let new_key = |args: &[&str]| {
        let out = imgedge().args(["keys", "new"]).args(args).output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        (out.status.success(), stdout, stderr)
    };
    let key_in = |stdout: &str| {
        stdout
            .split_whitespace()
            .find(|w| w.starts_with("pk_") || w.starts_with("sk_"))
            .unwrap()
            .to_owned()
    };

    let (ok, stdout, stderr) = new_key(&["--project", "web"]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("will not be shown again"), "{stdout}");
    assert!(stdout.contains("api_keys = \"web:"), "{stdout}");
    assert!(stdout.contains("IMGEDGE_API_KEYS=web:"), "{stdout}");
    let printed = key_in(&stdout);
    assert!(printed.starts_with("pk_"), "{printed}");

    let file_arg = file.to_str().unwrap();
    let (ok, first, stderr) = new_key(&["--project", "web", "--secret", "--append-to", file_arg]);
    assert!(ok, "{stderr}");
    let (ok, second, stderr) = new_key(&["--project", "app", "--append-to", file_arg]);
    assert!(ok, "{stderr}");
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(
        text.starts_with("# mine\ncdn_addr = \"127.0.0.1:9090\" # keep\n"),
        "{text}"
    );
    let config = imgedge::config::Config::load(Some(&file), Vec::new(), []).unwrap();
    let ring = KeyRing::parse(&config.api_keys).unwrap();
    let secret = ring.authenticate(&key_in(&first)).unwrap();
    assert_eq!(
        (secret.project.as_str(), secret.kind),
        ("web", KeyKind::Secret)
    );
    let publishable = ring.authenticate(&key_in(&second)).unwrap();
    assert_eq!(publishable.project, "app");
    // Keys are never written in clear.
    assert!(!text.contains(&key_in(&first)), "{text}");

    let (ok, _, stderr) = new_key(&["--project", "no spaces"]);
    assert!(!ok);
    assert!(stderr.contains("--project"), "{stderr}");
}

#[test]
fn token_needs_an_hs256_secret() {
    use imgedge::auth::JwtVerifier;

    let out = imgedge()
        .args(["token", "--sub", "user-1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("IMGEDGE_JWT_SECRET"), "{err}");

    let secret = "a-development-secret-of-32-bytes!";
    let (token, _) = succeed(
        imgedge()
            .args(["token", "--sub", "user-1", "--ttl", "15m"])
            .env("IMGEDGE_JWT_SECRET", secret),
    );
    let token = token.trim();
    let verifier = JwtVerifier::from_settings(secret, "").unwrap().unwrap();
    let claims = verifier.verify(token).unwrap();
    assert_eq!(claims.sub, "user-1");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!((claims.exp - now - 900).abs() <= 5, "{claims:?}");

    let out = imgedge()
        .args(["token", "--sub", "user-1", "--ttl", "2w"])
        .env("IMGEDGE_JWT_SECRET", secret)
        .output()
        .unwrap();
    assert!(!out.status.success());
}

/// One blocking HTTP/1.1 GET; the status code.
fn http_status(addr: std::net::SocketAddr, path: &str) -> u16 {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).unwrap();
    let head = String::from_utf8_lossy(&response[..response.len().min(12)]).into_owned();
    head.split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {head:?}"))
}

pub(crate) fn free_addr() -> std::net::SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

#[cfg(target_os = "linux")]
/// A number from /proc/PID/status (`None` when this kernel does not report the field).
fn status_number(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

fn resident_kb(pid: u32, field: &str) -> u64 {
    status_number(pid, field).unwrap()
}

/// Whether the process may get transparent huge pages, when the kernel can give them
/// at all.
fn huge_pages_allowed(pid: u32) -> Option<bool> {
    let system = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled").ok()?;
    if system.contains("[never]") {
        return None;
    }
    status_number(pid, "THP_enabled:").map(|on| on == 1)
}

/// Renders from four clients at once, each a different size (nothing shared); `round`
/// keeps the sizes of different bursts apart.
fn render_burst(cdn: std::net::SocketAddr, round: u32) {
    std::thread::scope(|s| {
        for client in 0..4u32 {
            s.spawn(move || {
                for n in 0..3u32 {
                    let size = 3900 - round * 100 - client * 10 - n;
                    let path = format!("/fit-in/{size}x{size}/filters:quality(80)/big.jpg");
                    assert_eq!(http_status(cdn, &path), 200, "{path}");
                }
            });
        }
    });
}

/// Kills the server however the test ends.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The allocator keeps freed memory only while work goes on: once the renders stop, the
/// server hands its peak back instead of sitting on it (`imgedge::memory`).
#[cfg(target_os = "linux")]
#[test]
fn the_server_hands_memory_back_once_quiet() {
    use std::time::{Duration, Instant};

    // A 12 MP photo-like JPEG: every render decodes it whole (36 MB of pixels).
    let tree = tempfile::tempdir().unwrap();
    let (w, h) = (4000u32, 3000u32);
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        let n = x.wrapping_mul(2_654_435_761).rotate_left(y % 31) ^ y.wrapping_mul(40_503);
        image::Rgb([(x / 16) as u8, (y / 12) as u8, (n >> 24) as u8])
    });
    img.save(tree.path().join("big.jpg")).unwrap();
    let data = tempfile::tempdir().unwrap();
    import(tree.path(), data.path(), &["--visibility", "public"]);

    let (cdn, api) = (free_addr(), free_addr());
    let server = Child(
        imgedge()
            .arg("serve")
            .arg("--data-dir")
            .arg(data.path())
            .args([
                "--cdn-addr",
                &cdn.to_string(),
                "--api-addr",
                &api.to_string(),
            ])
            .env("IMGEDGE_VARIANT_CACHE_BYTES", "0")
            .env("IMGEDGE_DERIVATIVE_SIZES", "")
            // Room for four near-full-size renders at once: this is about what the
            // allocator gives back afterwards, not about admission.
            .env("IMGEDGE_MEMORY_BUDGET_BYTES", "1073741824")
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let pid = server.0.id();
    let give_up = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(api).is_err() {
        assert!(Instant::now() < give_up, "the server did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(http_status(api, "/healthz"), 200);
    let before = resident_kb(pid, "VmRSS:");

    render_burst(cdn, 0);
    let peak = resident_kb(pid, "VmHWM:");
    assert!(
        peak > before + 60_000,
        "renders should have raised the peak: {before} kB -> {peak} kB"
    );

    // Quiet now: the resident set falls back to within an eighth of the way up. (Without
    // the release it stays near the peak for seconds, and then at about 30%.)
    let settled = before + (peak - before) / 8;
    let give_up = Instant::now() + Duration::from_secs(30);
    loop {
        let now = resident_kb(pid, "VmRSS:");
        if now < settled {
            eprintln!("resident: start {before} kB, peak {peak} kB, quiet {now} kB");
            break;
        }
        assert!(
            Instant::now() < give_up,
            "still {now} kB resident 30 s after the renders (start {before} kB, peak {peak} kB)"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // Huge pages are off while quiet (or khugepaged would fill the arena back in)...
    if huge_pages_allowed(pid).is_none() {
        eprintln!("no transparent huge pages on this kernel: nothing more to check");
        return;
    }
    let give_up = Instant::now() + Duration::from_secs(30);
    while huge_pages_allowed(pid) != Some(false) {
        assert!(Instant::now() < give_up, "huge pages still on while quiet");
        std::thread::sleep(Duration::from_millis(100));
    }
    // ...and on again for the next work.
    let mut seen_on = false;
    std::thread::scope(|s| {
        // A failed render ends the burst too (and the scope passes its panic on).
        let burst = s.spawn(|| render_burst(cdn, 1));
        while !burst.is_finished() {
            seen_on |= huge_pages_allowed(pid) == Some(true);
            std::thread::sleep(Duration::from_millis(2));
        }
    });
    assert!(seen_on, "huge pages stayed off through a burst of renders");
}

/// The README's storage-API walk-through, as `scripts/walkthrough.sh` runs it against the
/// real binary: two buckets, a listing of one, a named error, a resize URL.
#[test]
fn walkthrough_script_succeeds() {
    if Command::new("curl").arg("--version").output().is_err() {
        eprintln!("walkthrough_script_succeeds: skipped here, needs curl");
        return;
    }
    let out = Command::new("bash")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/scripts/walkthrough.sh"
        ))
        .arg(env!("CARGO_BIN_EXE_imgedge"))
        .arg(fixture_path("landscape.jpg"))
        .arg(fixture_path("alpha.png"))
        .env("IMGEDGE_CDN_ADDR", free_addr().to_string())
        .env("IMGEDGE_API_ADDR", free_addr().to_string())
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("walk-through OK"),
        "stdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("\"bucket\":\"avatars\""), "{stdout}");
}
