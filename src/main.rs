//! The `imgedge` binary: the command line only. It parses flags, loads configuration,
//! initialises logging, binds the listeners and calls the library; the allocator set-up
//! (`alloc`) and the API-key file editing of `keys new` (`keys_file`) are modules of their
//! own. `anyhow` lives only in the binary.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};

use imgedge::auth::KeyKind;
use imgedge::config::Config;
use imgedge::db::Visibility;
use imgedge::import::{ImportOptions, ImportSource, import};
use imgedge::{App, Listeners, telemetry};

mod alloc;
mod keys_file;

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
    /// a security key is configured. The options and the key may also be given apart
    /// (`imgedge url fit-in/300x200 photos/a.jpg`).
    Url {
        #[arg(required = true, num_args = 1..)]
        path: Vec<String>,
        #[command(flatten)]
        common: Common,
        #[arg(long)]
        security_key: Option<String>,
        /// Print `src`, `srcset` and `sizes` attributes for these widths instead
        /// (comma-separated pixels, e.g. 320,640,960,1280): each width replaces the size.
        #[arg(long, value_name = "WIDTHS")]
        srcset: Option<String>,
    },
    /// Print the SSIMULACRA2 score of each DISTORTED image against REFERENCE, one per line
    /// (JPEG, PNG or WebP files of the same size; alpha is ignored): the metric
    /// `quality(auto)` aims with and `loadtest/quality.py` reports. 100 is identical; 90 is
    /// very high quality, 70 high, 50 medium.
    Score {
        reference: PathBuf,
        #[arg(required = true, num_args = 1..)]
        distorted: Vec<PathBuf>,
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
    alloc::tune_allocator();
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
            srcset,
        } => {
            let flags = security_key
                .map(|k| ("security_key", k))
                .into_iter()
                .collect();
            let config = load(&common, flags)?;
            let signing =
                imgedge::edge::access::Signing::new(&config.security_key, config.require_signature);
            let path = path
                .iter()
                .map(|part| part.trim_matches('/'))
                .collect::<Vec<_>>()
                .join("/");
            if let Some(widths) = srcset {
                use imgedge::edge::srcset;
                let widths = srcset::parse_widths(&widths, config.max_output_side)?;
                let base = config.cdn_base_url();
                println!("{}", srcset::attributes(&signing, &base, &path, &widths)?);
                return Ok(());
            }
            // Check the path parses before printing it, so typos surface here, not in a browser.
            let signed = signing.sign_path(&path);
            imgedge::edge::url::parse(&signed).context("the path is not a valid image URL")?;
            println!("{}/{signed}", config.cdn_base_url());
            Ok(())
        }
        Command::Score {
            reference,
            distorted,
        } => {
            let read = |path: &PathBuf| {
                std::fs::read(path).with_context(|| format!("reading {}", path.display()))
            };
            let reference_bytes = read(&reference)?;
            for path in &distorted {
                let score = imgedge::imaging::auto_quality::score(&reference_bytes, &read(path)?)
                    .with_context(|| format!("scoring {}", path.display()))?;
                println!("{score:.4}");
            }
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
            keys_file::new_key(&project, kind, append_to.as_deref())
        }
        Command::Token { sub, ttl, common } => {
            let config = load(&common, Vec::new())?;
            let verifier = config.credentials()?.jwt;
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
        if app.config.playground {
            println!(
                "\nPlayground (build resize URLs and see the result): {}/playground",
                app.config.api_base_url()
            );
        }
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
