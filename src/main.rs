//! The `imgedge` binary: parses flags, loads configuration, initialises logging, binds
//! the listeners and calls the library. `anyhow` lives only here.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};

use imgedge::config::Config;
use imgedge::db::Visibility;
use imgedge::import::{ImportOptions, import_dir};
use imgedge::{App, Listeners, telemetry};

// mimalloc: lower fragmentation than glibc malloc for many short-lived, large image
// buffers allocated on different threads, which keeps RSS flat under load.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    /// Register every image under DIR as a file, keyed by PREFIX + its relative path.
    Import {
        /// Directory to import, recursively.
        dir: PathBuf,
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
    /// Print the full CDN URL for a path such as `fit-in/300x200/photos/a.jpg`, signed when
    /// a security key is configured.
    Url {
        path: String,
        #[command(flatten)]
        common: Common,
        #[arg(long)]
        security_key: Option<String>,
    },
}

fn load(common: &Common, mut flags: Vec<(&'static str, String)>) -> anyhow::Result<Config> {
    if let Some(dir) = &common.data_dir {
        flags.push(("data_dir", dir.display().to_string()));
    }
    Config::from_process(common.config.as_deref(), flags).context("configuration")
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
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
            dir,
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
            let app = App::build(config).await?;
            let options = ImportOptions {
                dir,
                prefix,
                visibility,
                project,
                owner_id: owner,
            };
            let report = import_dir(&app, &options).await?;
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
    }
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
