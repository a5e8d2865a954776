//! The `imgedge` binary as users' scripts drive it.

use std::process::Command;

use crate::support::{TestServer, fixture_path, test_config};

fn imgedge() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_imgedge"));
    // Keep the developer's own IMGEDGE_* settings out of the tests.
    for (k, _) in std::env::vars() {
        if k.starts_with("IMGEDGE_") {
            cmd.env_remove(k);
        }
    }
    cmd
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
        let out = imgedge()
            .arg("import")
            .arg(tree.path())
            .args([
                "--visibility",
                visibility,
                "--prefix",
                "legacy/",
                "--data-dir",
            ])
            .arg(data.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
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
    let out = imgedge()
        .arg("import")
        .arg(tree.path())
        .arg("--data-dir")
        .arg(data.path())
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("(private)"));
}

#[test]
fn url_command_signs_when_a_key_is_configured() {
    let out = imgedge()
        .args([
            "url",
            "fit-in/300x200/a.jpg",
            "--security-key",
            "MY_SECURE_KEY",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let url = String::from_utf8_lossy(&out.stdout).trim().to_owned();
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
