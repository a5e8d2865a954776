//! The playground in a real headless Chromium (Debian `chromium`), driven over the DevTools
//! protocol: the real binary serves `--demo` on ephemeral ports, the page loads without a
//! JavaScript error, its preview comes from the CDN listener, editing the width changes
//! the URL and the preview, and a broken option shows the CDN's 400 next to its control.
//!
//! Chromium is installed by `scripts/test.sh` and `.ci/run`, which set
//! `TEST_REQUIRE_BROWSER=1`: there a missing browser fails the test. A developer's
//! plain `cargo test` without Chromium skips it with a message instead.
//! `TEST_SCREENSHOTS=<dir>` also writes the README's screenshots from this run.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tungstenite::{Message, WebSocket, stream::MaybeTlsStream};

use crate::cli::{free_addr, imgedge};

/// `imgedge serve --demo` on ephemeral ports, killed on drop.
struct Server {
    child: Child,
    api: SocketAddr,
}

impl Server {
    fn start(data: &Path) -> Server {
        let (cdn, api) = (free_addr(), free_addr());
        let child = imgedge()
            .args(["serve", "--demo", "--data-dir"])
            .arg(data)
            .args([
                "--cdn-addr",
                &cdn.to_string(),
                "--api-addr",
                &api.to_string(),
            ])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let give_up = Instant::now() + Duration::from_secs(60);
        while TcpStream::connect(api).is_err() || TcpStream::connect(cdn).is_err() {
            assert!(Instant::now() < give_up, "the server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Server { child, api }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A headless Chromium and one page of it, over the DevTools protocol (flattened sessions).
struct Browser {
    child: Child,
    socket: WebSocket<MaybeTlsStream<TcpStream>>,
    session: String,
    next_id: u64,
    /// Every event received so far (exceptions and console errors are read from here).
    events: Vec<Value>,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// `None` when Chromium is not installed (and not required).
    fn launch() -> Option<Browser> {
        let binary = ["chromium", "chromium-browser", "google-chrome"]
            .into_iter()
            .find(|b| {
                Command::new(b)
                    .arg("--version")
                    .output()
                    .is_ok_and(|o| o.status.success())
            });
        let Some(binary) = binary else {
            let required = std::env::var("TEST_REQUIRE_BROWSER").is_ok_and(|v| v == "1");
            assert!(
                !required,
                "TEST_REQUIRE_BROWSER=1 but no chromium is installed"
            );
            eprintln!("skipped: no chromium installed (scripts/test.sh installs it)");
            return None;
        };
        let profile = tempfile::tempdir().unwrap();
        let mut child = Command::new(binary)
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--no-default-browser-check",
                "--remote-debugging-port=0",
                "--window-size=1280,900",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Chromium prints `DevTools listening on ws://127.0.0.1:<port>/devtools/browser/<id>`.
        let stderr = BufReader::new(child.stderr.take().unwrap());
        let mut endpoint = None;
        for line in stderr.lines() {
            let line = line.unwrap();
            if let Some(url) = line.strip_prefix("DevTools listening on ") {
                endpoint = Some(url.trim().to_owned());
                break;
            }
        }
        let endpoint = endpoint.expect("chromium printed no DevTools address");
        let (socket, _) = tungstenite::connect(endpoint.as_str()).unwrap();
        let mut browser = Browser {
            child,
            socket,
            session: String::new(),
            next_id: 0,
            events: Vec::new(),
            _profile: profile,
        };
        let target = browser.browser_call("Target.createTarget", json!({ "url": "about:blank" }));
        let attached = browser.browser_call(
            "Target.attachToTarget",
            json!({ "targetId": target["targetId"], "flatten": true }),
        );
        browser.session = attached["sessionId"].as_str().unwrap().to_owned();
        for domain in ["Runtime.enable", "Page.enable", "Log.enable"] {
            browser.call(domain, json!({}));
        }
        Some(browser)
    }

    fn send(&mut self, method: &str, params: Value, session: Option<&str>) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut message = json!({ "id": id, "method": method, "params": params });
        if let Some(session) = session {
            message["sessionId"] = json!(session);
        }
        self.socket
            .send(Message::text(message.to_string()))
            .unwrap();
        loop {
            let Message::Text(text) = self.socket.read().unwrap() else {
                continue;
            };
            let value: Value = serde_json::from_str(text.as_str()).unwrap();
            if value["id"] == json!(id) {
                assert!(value.get("error").is_none(), "{method}: {value}");
                return value["result"].clone();
            }
            self.events.push(value);
        }
    }

    fn browser_call(&mut self, method: &str, params: Value) -> Value {
        self.send(method, params, None)
    }

    fn call(&mut self, method: &str, params: Value) -> Value {
        let session = self.session.clone();
        self.send(method, params, Some(&session))
    }

    /// Evaluates `expression` in the page and gives back its (JSON) value.
    fn eval(&mut self, expression: &str) -> Value {
        let result = self.call(
            "Runtime.evaluate",
            json!({ "expression": expression, "returnByValue": true, "awaitPromise": true }),
        );
        assert!(
            result.get("exceptionDetails").is_none(),
            "{expression}: {result}"
        );
        result["result"]["value"].clone()
    }

    /// Waits until `expression` is true in the page (at most 30 s, for slow machines).
    fn wait_for(&mut self, expression: &str) {
        let give_up = Instant::now() + Duration::from_secs(30);
        while self.eval(expression) != json!(true) {
            assert!(
                Instant::now() < give_up,
                "never true in the page: {expression}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// JavaScript exceptions and console errors seen so far.
    fn errors(&self) -> Vec<String> {
        self.events
            .iter()
            .filter_map(|e| match e["method"].as_str()? {
                "Runtime.exceptionThrown" => Some(e["params"]["exceptionDetails"].to_string()),
                "Runtime.consoleAPICalled" if e["params"]["type"] == "error" => {
                    Some(e["params"]["args"].to_string())
                }
                // Network entries (a 400 the page asked for on purpose) are not JavaScript's.
                "Log.entryAdded"
                    if e["params"]["entry"]["level"] == "error"
                        && e["params"]["entry"]["source"] == "javascript" =>
                {
                    Some(e["params"]["entry"].to_string())
                }
                _ => None,
            })
            .collect()
    }

    fn screenshot(&mut self, dir: &Path, name: &str) {
        use base64::Engine as _;
        let shot = self.call("Page.captureScreenshot", json!({ "format": "png" }));
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().unwrap())
            .unwrap();
        std::fs::write(dir.join(name), png).unwrap();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sets an input's value as a person typing would, so the page's listeners run.
fn type_into(id: &str, value: &str) -> String {
    format!(
        "(() => {{ const el = document.getElementById({id:?}); el.value = {value:?}; \
         el.dispatchEvent(new Event('input', {{ bubbles: true }})); return true; }})()"
    )
}

#[test]
fn the_playground_works_in_a_real_browser() {
    let Some(mut browser) = Browser::launch() else {
        return;
    };
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(data.path());
    let page = format!("http://{}/playground", server.api);
    browser.call("Page.navigate", json!({ "url": page }));

    // It loads, lists the demo's public images, picks one and previews it from the CDN.
    browser.wait_for("document.readyState === 'complete'");
    browser.wait_for("document.getElementById('images').options.length > 3");
    browser.wait_for("document.getElementById('preview').naturalWidth > 0");
    let url = browser.eval("document.getElementById('url').textContent");
    let url = url.as_str().unwrap();
    assert!(url.contains("/unsafe/300x200/demo/"), "{url}");
    assert_eq!(
        browser.eval("document.getElementById('preview').naturalWidth"),
        json!(300)
    );
    let facts = browser.eval("document.getElementById('out-bytes').textContent");
    assert!(facts.as_str().unwrap().ends_with(" B"), "{facts}");
    // meta/ arrives after the preview: its placeholder and JSON are shown.
    browser.wait_for("document.getElementById('dominant').textContent.startsWith('#')");
    browser.wait_for("document.getElementById('meta').textContent.includes('\"placeholder\"')");
    if let Ok(dir) = std::env::var("TEST_SCREENSHOTS") {
        browser.screenshot(Path::new(&dir), "playground.png");
    }

    // Editing the width changes the URL and the preview.
    assert_eq!(browser.eval(&type_into("width", "123")), json!(true));
    browser.wait_for("document.getElementById('url').textContent.includes('/123x200/')");
    browser.wait_for("document.getElementById('preview').naturalWidth === 123");

    // A broken option shows our 400 message next to the control it names.
    assert_eq!(browser.eval(&type_into("quality", "150")), json!(true));
    browser.wait_for("document.getElementById('error').textContent.includes('quality')");
    let message = browser.eval("document.getElementById('error').textContent");
    assert!(message.as_str().unwrap().contains("1..=100"), "{message}");
    assert_eq!(
        browser.eval("document.getElementById('quality').classList.contains('has-error')"),
        json!(true)
    );
    if let Ok(dir) = std::env::var("TEST_SCREENSHOTS") {
        browser.screenshot(Path::new(&dir), "playground-error.png");
    }

    // A pasted URL (another host, signed or not) is read back into the controls.
    let pasted = "https://cdn.example/unsafe/fit-in/160x90/right/filters:blur(2):format(png)/demo/bridge.jpg";
    assert_eq!(browser.eval(&type_into("paste", pasted)), json!(true));
    browser.eval("document.getElementById('paste-go').click(), true");
    browser.wait_for("document.getElementById('width').value === '160'");
    let controls = browser.eval(
        "['mode', 'height', 'halign', 'format', 'quality', 'key'].map((id) => document.getElementById(id).value)",
    );
    assert_eq!(
        controls,
        json!(["fit-in", "90", "right", "png", "", "demo/bridge.jpg"])
    );
    assert_eq!(
        browser.eval("document.querySelector('#filters .filter').dataset.name"),
        json!("blur")
    );
    browser.wait_for("document.getElementById('error').textContent === ''");
    browser.wait_for("document.getElementById('preview').naturalWidth === 160");

    let errors = browser.errors();
    assert!(
        errors.is_empty(),
        "JavaScript errors in the page: {errors:#?}"
    );
}
