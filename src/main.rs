//! The `imgedge` binary: parses flags, loads configuration, initialises logging, binds
//! the listeners and calls the library. `anyhow` lives only here.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};

use imgedge::api::auth::{JwtVerifier, KeyKind, KeyRing, is_project_name, mint_key};
use imgedge::config::Config;
use imgedge::db::Visibility;
use imgedge::import::{ImportOptions, ImportSource, import};
use imgedge::{App, Listeners, telemetry};

// mimalloc: lower fragmentation than glibc malloc for many short-lived, large image
// buffers allocated on different threads, which keeps RSS flat under load. With the
// `override` feature of libmimalloc-sys (Cargo.toml) it serves the C codecs' malloc too.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc v3's `mi_option_purge_delay` (its option enum keeps retired entries, so the
/// numbers stay put; libmimalloc-sys names only the v2 ones).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// How long mimalloc keeps freed memory before handing it back to the OS, in milliseconds.
/// A render frees large buffers (a progressive JPEG's coefficients: about 50 MB for a 16 MP
/// file) that the next render on the same CPU thread needs again 100-200 ms later. Kept,
/// they are reused; handed back at once, every render pays page faults and zeroing for
/// them. Kept too long, buffers of different sizes pile up between reuses.
///
/// Measured with the CPU pool on its own threads and no originals cache for the fs backend
/// (the defaults), 60 s of W1 at 8 connections and 20 s of W3 at 4 (issue 5):
///
/// | delay | W1 CPU-ms/req | W1 peak RSS | W3 CPU-ms/req |
/// |---|---|---|---|
/// | 0 | 39.3 | 192 MB | 32.4 |
/// | 250 | 32.5-33.2 | 274 MB | 28.8 |
/// | 500 | 32.2 | 308 MB | 28.3 |
/// | 1000 (mimalloc's default) | 31.2 | 306 MB (345 MB in a 10-minute soak) | 27.7 |
///
/// 250 ms keeps most of the CPU saving and stays well inside the W1 memory target (0.25x
/// sharp's 1.2-1.3 GB). `MIMALLOC_PURGE_DELAY` in the environment still decides.
const PURGE_DELAY_MS: std::ffi::c_long = 250;

// mimalloc's own variables, which decide over our defaults; not imgedge settings.
#[allow(clippy::disallowed_methods)]
fn tune_allocator() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: mi_option_set stores an integer in mimalloc's option table; it is
        // thread-safe and may be called at any time.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS) };
    }
    // The purge delay only runs out inside later allocations and frees; a quiet process
    // would keep its peak for good. The library calls this on each worker thread once the
    // heavy work has gone quiet (`imgedge::memory`).
    let huge_pages = std::env::var_os("MIMALLOC_ALLOW_THP").is_none();
    imgedge::memory::set_hooks(imgedge::memory::Hooks {
        release: release_memory,
        settle: if huge_pages { huge_pages_off } else { || {} },
        resume: if huge_pages { huge_pages_on } else { || {} },
    });
}

/// Transparent huge pages, while idle: off.
///
/// mimalloc marks its arenas `MADV_HUGEPAGE`. The kernel's khugepaged then, every 10 s,
/// collapses any 2 MiB stretch of an arena that still has one page in use back into a
/// whole huge page, faulting in again what [`release_memory`] handed back: an idle server
/// after a W1 run grew from 49 to 62 MB of anonymous memory in 80 s (42 to 79 MB in 140 s
/// in another run), in steps 10 s apart, all of it `AnonHugePages` in mimalloc's arena
/// (/proc/PID/smaps); with huge pages off it stayed at 9-10 MB. But under load they save
/// CPU: W1 at 8 connections, three interleaved 20 s runs each, 36.0 CPU-ms/req with them
/// against 40.1 without. So they are on for work and off in between (`imgedge::memory`
/// calls these two). `MIMALLOC_ALLOW_THP` set in the environment leaves them alone.
fn huge_pages_off() {
    set_huge_pages(false);
}

fn huge_pages_on() {
    set_huge_pages(true);
}

fn set_huge_pages(on: bool) {
    // SAFETY: prctl(PR_SET_THP_DISABLE) takes integer arguments only and changes nothing
    // but this process's huge-page policy. A kernel without THP refuses it, and then there
    // is nothing to switch.
    let _ = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, libc::c_ulong::from(!on), 0, 0, 0) };
}

/// Collects the calling thread's heap and purges every freed page process-wide now.
fn release_memory() {
    // SAFETY: mi_collect(true) only frees memory mimalloc itself holds unused; it is safe
    // to call from any thread at any time.
    unsafe { libmimalloc_sys::mi_collect(true) };
}

#[derive(Parser)]
#[command(
    name = "imgedge",
    version,
    about = "Image-optimization CDN edge with a storage API"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Settings shared by every command that opens the store.
#[derive(Args)]
struct Common {
    /// TOML configuration file (settings: see README; env IMGEDGE_* overrides it).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Data directory for embedded storage and SQLite (IMGEDGE_DATA_DIR, default ./data).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the CDN and API listeners.
    Serve {
        #[command(flatten)]
        common: Common,
        /// CDN listen address (IMGEDGE_CDN_ADDR, default 127.0.0.1:8080).
        #[arg(long)]
        cdn_addr: Option<String>,
        /// API listen address (IMGEDGE_API_ADDR, default 127.0.0.1:8081).
        #[arg(long)]
        api_addr: Option<String>,
        /// Thumbor security key for HMAC-signed URLs (IMGEDGE_SECURITY_KEY).
        #[arg(long)]
        security_key: Option<String>,
        /// Refuse unsigned URLs (IMGEDGE_REQUIRE_SIGNATURE).
        #[arg(long)]
        require_signature: bool,
        /// Log format: text or json (IMGEDGE_LOG_FORMAT).
        #[arg(long)]
        log_format: Option<String>,
        /// Seed a few public sample images and print URLs to open.
        #[arg(long)]
        demo: bool,
    },
    /// Register existing images as files: every image under a directory (keyed by PREFIX +
    /// its relative path), or every object under `s3://bucket/prefix` in the configured
    /// bucket (keyed by its own key).
    Import {
        /// Directory to import recursively, or `s3://bucket/prefix`.
        source: String,
        #[command(flatten)]
        common: Common,
        /// Visibility of the imported files: public, private, protected or shared.
        #[arg(long, default_value = "private")]
        visibility: String,
        /// Prefix for every key (e.g. `legacy/`).
        #[arg(long, default_value = "")]
        prefix: String,
        /// Owner id recorded on the files.
        #[arg(long, default_value = "import")]
        owner: String,
        /// Project the files belong to.
        #[arg(long, default_value = "default")]
        project: String,
    },
    /// Check that the metadata store and the object store agree: the database's own
    /// integrity check, every registered file's object at its registered size, every
    /// recorded reduced copy. Exits 1 when something is wrong (each problem on a line).
    Check {
        #[command(flatten)]
        common: Common,
    },
    /// Print the full CDN URL for a path such as `fit-in/300x200/photos/a.jpg`, signed when
    /// a security key is configured.
    Url {
        path: String,
        #[command(flatten)]
        common: Common,
        #[arg(long)]
        security_key: Option<String>,
    },
    /// Manage storage API keys.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Print a development bearer token (HS256), signed with the configured jwt_secret.
    Token {
        /// The user id to put in the token's `sub` claim.
        #[arg(long)]
        sub: String,
        /// Lifetime: a number followed by s, m, h or d (30s, 15m, 1h, 7d).
        #[arg(long, default_value = "1h", value_parser = parse_ttl)]
        ttl: Duration,
        #[command(flatten)]
        common: Common,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Create an API key: prints it once and the hash to add to the configuration.
    New {
        /// Project the key gives access to ([A-Za-z0-9_-], at most 64 characters).
        #[arg(long)]
        project: String,
        /// Create a secret key (`sk_`, server side, full access) instead of a
        /// publishable one (`pk_`).
        #[arg(long)]
        secret: bool,
        /// Add the entry to `api_keys` in this TOML file (created when missing).
        #[arg(long, value_name = "FILE")]
        append_to: Option<PathBuf>,
    },
}

fn load(common: &Common, mut flags: Vec<(&'static str, String)>) -> anyhow::Result<Config> {
    if let Some(dir) = &common.data_dir {
        flags.push(("data_dir", dir.display().to_string()));
    }
    Config::from_process(common.config.as_deref(), flags).context("configuration")
}

fn main() -> anyhow::Result<()> {
    tune_allocator();
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .on_thread_park(imgedge::memory::on_park)
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async_main(cli))
}

async fn async_main(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve {
            common,
            cdn_addr,
            api_addr,
            security_key,
            require_signature,
            log_format,
            demo,
        } => {
            let mut flags = Vec::new();
            let optional = [
                ("cdn_addr", cdn_addr),
                ("api_addr", api_addr),
                ("security_key", security_key),
                ("log_format", log_format),
            ];
            flags.extend(optional.into_iter().filter_map(|(k, v)| v.map(|v| (k, v))));
            if require_signature {
                flags.push(("require_signature", "true".into()));
            }
            let config = load(&common, flags)?;
            telemetry::init_logging(config.log_format);
            serve(config, demo).await
        }
        Command::Import {
            source,
            common,
            visibility,
            prefix,
            owner,
            project,
        } => {
            let config = load(&common, Vec::new())?;
            telemetry::init_logging(config.log_format);
            let visibility: Visibility = visibility
                .parse()
                .map_err(|e: String| anyhow::anyhow!(e))
                .context("--visibility")?;
            let source = ImportSource::parse(&source)?;
            let app = App::build(config).await?;
            let options = ImportOptions {
                source,
                prefix,
                visibility,
                project,
                owner_id: owner,
            };
            let report = import(&app, &options).await?;
            for (path, reason) in &report.skipped {
                eprintln!("skipped {}: {reason}", path.display());
            }
            println!(
                "imported {} new, {} refreshed, {} unchanged, {} skipped ({})",
                report.added,
                report.refreshed,
                report.unchanged,
                report.skipped.len(),
                visibility
            );
            app.db.close().await;
            Ok(())
        }
        Command::Check { common } => {
            let config = load(&common, Vec::new())?;
            telemetry::init_logging(config.log_format);
            let app = App::build(config).await?;
            let report = imgedge::check::check(&app).await?;
            app.db.close().await;
            println!("{report}");
            if !report.is_sound() {
                std::process::exit(1);
            }
            Ok(())
        }
        Command::Url {
            path,
            common,
            security_key,
        } => {
            let flags = security_key
                .map(|k| ("security_key", k))
                .into_iter()
                .collect();
            let config = load(&common, flags)?;
            let signing =
                imgedge::edge::access::Signing::new(&config.security_key, config.require_signature);
            // Check the path parses before printing it, so typos surface here, not in a browser.
            let signed = signing.sign_path(&path);
            imgedge::edge::url::parse(&signed).context("the path is not a valid image URL")?;
            println!("{}/{signed}", config.cdn_base_url());
            Ok(())
        }
        Command::Keys {
            command:
                KeysCommand::New {
                    project,
                    secret,
                    append_to,
                },
        } => {
            let kind = if secret {
                KeyKind::Secret
            } else {
                KeyKind::Publishable
            };
            new_key(&project, kind, append_to.as_deref())
        }
        Command::Token { sub, ttl, common } => {
            let config = load(&common, Vec::new())?;
            let verifier = JwtVerifier::from_settings(&config.jwt_secret, &config.jwt_public_key)
                .map_err(|e| anyhow::anyhow!(e))?;
            let Some(verifier) = verifier.filter(|v| v.can_mint()) else {
                anyhow::bail!(
                    "no HS256 secret is configured: set IMGEDGE_JWT_SECRET (at least 32 bytes, \
                     e.g. `openssl rand -hex 32`) or jwt_secret in the --config file"
                );
            };
            let token = verifier.mint(&sub, ttl)?;
            println!("{token}");
            Ok(())
        }
    }
}

/// `imgedge keys new`: mints a key, prints it once, and prints or appends its entry.
fn new_key(project: &str, kind: KeyKind, append_to: Option<&Path>) -> anyhow::Result<()> {
    let (key, hash) = mint_key(kind);
    // Refuse a bad project name before showing a key that could never be configured.
    if !is_project_name(project) {
        anyhow::bail!(
            "--project `{project}`: a project name is 1 to 64 characters of A-Z, a-z, 0-9, \
             `_` or `-`"
        );
    }
    let entry = format!("{project}:{hash}");
    if let Some(path) = append_to {
        let old = match std::fs::read_to_string(path) {
            Ok(text) => Some(text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let new = append_api_key(old.as_deref(), &entry)
            .with_context(|| format!("cannot add the key to {}", path.display()))?;
        check_appended(&new, &key)
            .with_context(|| format!("refusing to write {}", path.display()))?;
        std::fs::write(path, new).with_context(|| format!("writing {}", path.display()))?;
    }
    let kind_name = match kind {
        KeyKind::Publishable => "publishable",
        KeyKind::Secret => "secret",
    };
    println!("New {kind_name} API key for project `{project}` (it will not be shown again):");
    println!();
    println!("    {key}");
    println!();
    match append_to {
        Some(path) => {
            println!("Its hash was added to api_keys in {}.", path.display());
            println!("(IMGEDGE_API_KEYS, when set, replaces that list.)");
        }
        None => {
            println!("Add its hash to the configuration (comma-separate several entries):");
            println!("    TOML:        api_keys = \"{entry}\"");
            println!("    environment: IMGEDGE_API_KEYS={entry}");
        }
    }
    Ok(())
}

/// Adds `entry` to the `api_keys` string of a TOML document, changing nothing else:
/// the existing value line is rewritten in place (its trailing comment kept), or a new
/// line is added before the first table. `None` means the file does not exist yet.
fn append_api_key(text: Option<&str>, entry: &str) -> anyhow::Result<String> {
    let Some(text) = text else {
        return Ok(format!("api_keys = {}\n", toml_string(entry)));
    };
    let table: toml::Table = text.parse().context("the file is not valid TOML")?;
    let current = match table.get("api_keys") {
        None => None,
        Some(toml::Value::String(s)) => Some(s.as_str()),
        Some(_) => anyhow::bail!("api_keys must be a string"),
    };
    let Some(current) = current else {
        let line = format!("api_keys = {}\n", toml_string(entry));
        // Keys after a `[table]` header would belong to that table: insert before it.
        let mut offset = 0;
        for l in text.split_inclusive('\n') {
            if l.trim_start().starts_with('[') {
                return Ok(format!("{}{line}{}", &text[..offset], &text[offset..]));
            }
            offset += l.len();
        }
        let separator = if text.is_empty() || text.ends_with('\n') {
            ""
        } else {
            "\n"
        };
        return Ok(format!("{text}{separator}{line}"));
    };
    let kept = current.trim().trim_end_matches(',').trim_end();
    let value = if kept.is_empty() {
        entry.to_owned()
    } else {
        format!("{kept},{entry}")
    };
    // Find the one line `api_keys = <string>` whose value parses back to `current`.
    let mut found = None;
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        if let Some(span) = value_span(line, current) {
            if found.is_some() {
                anyhow::bail!("api_keys appears on several lines; add `{entry}` by hand");
            }
            found = Some((offset + span.start)..(offset + span.end));
        }
        offset += line.len();
    }
    let Some(span) = found else {
        anyhow::bail!(
            "api_keys is not a one-line string this tool can edit; add `{entry}` by hand"
        );
    };
    Ok(format!(
        "{}{}{}",
        &text[..span.start],
        toml_string(&value),
        &text[span.end..]
    ))
}

/// Where, in `line`, the string value of an `api_keys = ...` assignment equal to
/// `expected` sits: the shortest prefix of the text after `=` that parses as it.
fn value_span(line: &str, expected: &str) -> Option<std::ops::Range<usize>> {
    let rest = line.trim_start().strip_prefix("api_keys")?;
    let rest = rest.trim_start().strip_prefix('=')?;
    let start = line.len() - rest.len();
    let start = start + (rest.len() - rest.trim_start().len());
    let tail = &line[start..];
    for (end, c) in tail.char_indices() {
        if end == 0 || (c != '"' && c != '\'') {
            continue;
        }
        let candidate = &tail[..=end];
        let parsed: Result<toml::Table, _> = format!("v = {candidate}").parse();
        if let Ok(table) = parsed
            && table.get("v").and_then(toml::Value::as_str) == Some(expected)
        {
            return Some(start..start + end + 1);
        }
    }
    None
}

/// A TOML basic string holding `text`.
fn toml_string(text: &str) -> String {
    toml::Value::String(text.to_owned()).to_string()
}

/// Re-reads the edited document as the service would and checks the new key works.
fn check_appended(text: &str, key: &str) -> anyhow::Result<()> {
    let table: toml::Table = text.parse().context("the edit produced invalid TOML")?;
    let value = table
        .get("api_keys")
        .and_then(toml::Value::as_str)
        .context("the edit lost api_keys")?;
    let ring = KeyRing::parse(value)
        .map_err(|e| anyhow::anyhow!(e))
        .context("api_keys")?;
    ring.authenticate(key)
        .context("the new key does not authenticate against the edited api_keys")?;
    Ok(())
}

/// Parses a lifetime such as `30s`, `15m`, `1h` or `7d` (at most 365 days).
fn parse_ttl(text: &str) -> Result<Duration, String> {
    let usage =
        || format!("`{text}`: expected a number followed by s, m, h or d (30s, 15m, 1h, 7d)");
    let text = text.trim();
    let unit = text.chars().last().ok_or_else(usage)?;
    let number = &text[..text.len() - unit.len_utf8()];
    let unit_secs = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86_400,
        _ => return Err(usage()),
    };
    let number: u64 = number.parse().map_err(|_| usage())?;
    let secs = number.saturating_mul(unit_secs);
    if secs == 0 || secs > 365 * 86_400 {
        return Err(format!(
            "`{text}`: the lifetime must be between 1s and 365d"
        ));
    }
    Ok(Duration::from_secs(secs))
}

async fn serve(config: Config, demo: bool) -> anyhow::Result<()> {
    let listeners = Listeners::bind(&config).await?;
    let app = Arc::new(App::build(config).await?);
    tracing::info!(
        cdn = %listeners.cdn.local_addr()?,
        api = %listeners.api.local_addr()?,
        data_dir = %app.config.data_dir.display(),
        "imgedge listening"
    );
    if demo {
        let urls = imgedge::demo::seed(&app).await?;
        println!("\nDemo images are public. Open, for example:");
        for url in urls {
            println!("  {url}");
        }
        println!();
    }
    imgedge::serve(app, listeners, shutdown_signal()).await;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ENTRY: &str = "web:abc";

    #[test]
    fn append_api_key_edits_only_that_value() {
        let cases: &[(Option<&str>, &str)] = &[
            (None, "api_keys = \"web:abc\"\n"),
            (Some(""), "api_keys = \"web:abc\"\n"),
            (
                Some("# imgedge\ndata_dir = \"/srv\""),
                "# imgedge\ndata_dir = \"/srv\"\napi_keys = \"web:abc\"\n",
            ),
            (
                Some("a = 1\n[table]\nb = 2\n"),
                "a = 1\napi_keys = \"web:abc\"\n[table]\nb = 2\n",
            ),
            (
                Some("# keys\napi_keys = \"\"  # none yet\nauto_avif = true\n"),
                "# keys\napi_keys = \"web:abc\"  # none yet\nauto_avif = true\n",
            ),
            (
                Some("  api_keys='app:1, ' # 'quoted'\n"),
                "  api_keys=\"app:1,web:abc\" # 'quoted'\n",
            ),
            (
                Some("api_keys = \"app:1\" # \"x\"\r\nother = \"api_keys = \\\"app:1\\\"\"\r\n"),
                "api_keys = \"app:1,web:abc\" # \"x\"\r\nother = \"api_keys = \\\"app:1\\\"\"\r\n",
            ),
        ];
        for (old, expected) in cases {
            assert_eq!(append_api_key(*old, ENTRY).unwrap(), *expected, "{old:?}");
        }
        let refused: &[(&str, &str)] = &[
            ("api_keys = [\"a\"]\n", "must be a string"),
            ("api_keys = \"\"\"\na:1\"\"\"\n", "by hand"),
            ("not toml = = 1", "not valid TOML"),
        ];
        for (old, needle) in refused {
            let err = format!("{:#}", append_api_key(Some(old), ENTRY).unwrap_err());
            assert!(err.contains(needle), "{old:?}: {err}");
        }
    }

    #[test]
    fn appended_keys_authenticate() {
        let (key, hash) = mint_key(KeyKind::Secret);
        let text = append_api_key(Some("api_keys = \"\"\n"), &format!("p:{hash}")).unwrap();
        check_appended(&text, &key).unwrap();
        assert!(check_appended(&text, &mint_key(KeyKind::Secret).0).is_err());
    }

    #[test]
    fn ttl() {
        let ok: &[(&str, u64)] = &[("30s", 30), ("15m", 900), ("1h", 3600), ("7d", 604_800)];
        for (text, secs) in ok {
            assert_eq!(parse_ttl(text), Ok(Duration::from_secs(*secs)), "{text}");
        }
        for text in [
            "",
            "h",
            "1",
            "1é",
            "0s",
            "1w",
            "-1h",
            "1.5h",
            "366d",
            "99999999999999999999d",
        ] {
            assert!(parse_ttl(text).is_err(), "{text}");
        }
    }
}
