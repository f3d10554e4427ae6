//! `cairn-controller`: `init` once, then `run` (as the systemd service).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use cairn_controller::config::{Config, DataPath, RepositoryConfig};
use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(name = "cairn-controller", version, about = "Cairn's fleet controller")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum Mode {
    ViaController,
    Direct,
}

#[derive(Subcommand)]
enum Command {
    /// Create the CA, certificates, controller.toml and cairnctl.toml (and the
    /// repository when it does not exist) under STATE_DIR.
    Init {
        #[arg(long, default_value = "/var/lib/cairn/controller")]
        state_dir: PathBuf,
        #[arg(long, default_value = "0.0.0.0:7443")]
        listen: SocketAddr,
        #[arg(long, default_value = "127.0.0.1:7480")]
        web_listen: SocketAddr,
        /// The URL agents and cairnctl dial, https://HOST:PORT.
        #[arg(long)]
        public_url: String,
        /// Extra host names or IPs for the server certificate (the public
        /// URL's host, localhost and 127.0.0.1 are always in).
        #[arg(long = "san")]
        sans: Vec<String>,
        /// Repository: a directory or s3://BUCKET/PREFIX.
        #[arg(long)]
        repo: String,
        /// File with the repository passphrase (else $CAIRN_PASSPHRASE).
        #[arg(long, env = "CAIRN_PASSPHRASE_FILE")]
        passphrase_file: Option<PathBuf>,
        #[arg(long, value_enum, default_value = "via-controller")]
        data_path: Mode,
        /// KEY=VALUE storage credentials (S3), mode 0600.
        #[arg(long)]
        env_file: Option<PathBuf>,
    },
    /// Re-read every fleet snapshot from the repository into the catalog
    /// (after the catalog was lost or restored from an old copy). Run it with
    /// the controller stopped.
    RebuildCatalog {
        #[arg(
            long,
            short,
            env = "CAIRN_CONTROLLER_CONFIG",
            default_value = "/var/lib/cairn/controller/controller.toml"
        )]
        config: PathBuf,
    },
    /// Serve agents, cairnctl and the status page until SIGTERM.
    Run {
        #[arg(
            long,
            short,
            env = "CAIRN_CONTROLLER_CONFIG",
            default_value = "/var/lib/cairn/controller/controller.toml"
        )]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("CAIRN_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Init {
            state_dir,
            listen,
            web_listen,
            public_url,
            mut sans,
            repo,
            passphrase_file,
            data_path,
            env_file,
        } => {
            let host = public_url.strip_prefix("https://").and_then(|r| {
                r.rsplit_once(':')
                    .map(|(h, _)| h.trim_matches(['[', ']']).to_string())
            });
            sans.extend(host);
            sans.extend(["localhost".to_string(), "127.0.0.1".to_string()]);
            sans.sort();
            sans.dedup();
            let o = cairn_controller::InitOptions {
                state_dir,
                listen,
                web_listen,
                public_url,
                sans,
                repository: RepositoryConfig {
                    location: repo,
                    passphrase_file,
                    data_path: match data_path {
                        Mode::ViaController => DataPath::ViaController,
                        Mode::Direct => DataPath::Direct,
                    },
                    env_file,
                    presign_seconds: 60,
                },
            };
            cairn_controller::init(&o).map(|p| {
                println!("initialized; config: {}", p.display());
                println!(
                    "cairnctl: export CAIRN_CONFIG={}",
                    o.state_dir.join("cairnctl.toml").display()
                );
            })
        }
        Command::RebuildCatalog { config } => Config::load(&config)
            .and_then(|cfg| cairn_controller::rebuild_catalog(&cfg))
            .map(|r| {
                println!(
                    "catalog rebuilt: {} snapshots added, {} already known, {} not from the fleet skipped",
                    r.snapshots_added, r.snapshots_known, r.snapshots_skipped
                )
            }),
        Command::Run { config } => Config::load(&config).and_then(|cfg| {
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?
                .block_on(cairn_controller::run(cfg))
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cairn-controller: {e:#}");
            ExitCode::from(1)
        }
    }
}
