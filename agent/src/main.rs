//! `cairn-agent`: `enroll` once, then `run` (as the systemd service).

use std::path::PathBuf;
use std::process::ExitCode;

use cairn_agent::analysis::Report;
use cairn_agent::config::Config;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "cairn-agent",
    version,
    about = "Cairn's per-server backup agent"
)]
struct Cli {
    #[arg(
        long,
        short,
        global = true,
        env = "CAIRN_AGENT_CONFIG",
        default_value = "/etc/cairn/agent.toml"
    )]
    config: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Enroll with a controller using a single-use token from `cairnctl token
    /// create` (read from $CAIRN_TOKEN or --token-file, never from arguments).
    Enroll {
        /// https://HOST:PORT of the controller; saved into the config.
        #[arg(long)]
        controller: String,
        /// SHA-256 of the controller's CA certificate, as `token create` printed it.
        #[arg(long)]
        ca_sha256: String,
        #[arg(long)]
        token_file: Option<PathBuf>,
        /// A label policies can select this server by, as KEY=VALUE (repeatable).
        #[arg(long = "label", value_parser = parse_label)]
        labels: Vec<(String, String)>,
    },
    /// Keep a session with the controller and run its jobs until SIGTERM.
    Run,
    /// Discover and analyze this server's domains now, as the daemon reports
    /// them (records today's sample in the activity history).
    Analyze {
        #[arg(long)]
        json: bool,
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
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let result = match cli.command {
        Command::Enroll {
            controller,
            ca_sha256,
            token_file,
            labels,
        } => (|| {
            let token = match token_file {
                Some(f) => std::fs::read_to_string(&f)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", f.display()))?
                    .trim()
                    .to_string(),
                None => std::env::var("CAIRN_TOKEN").unwrap_or_default(),
            };
            if token.is_empty() {
                anyhow::bail!("no enrollment token: set CAIRN_TOKEN or pass --token-file");
            }
            let mut cfg = Config::load(&cli.config)?;
            let id = rt.block_on(cairn_agent::daemon::enroll(
                &cfg,
                &controller,
                &token,
                &ca_sha256,
                labels.into_iter().collect(),
            ))?;
            if cfg.controller != controller {
                cfg.controller = controller;
                save_controller(&cli.config, &cfg.controller)?;
            }
            println!("enrolled as {id}; start the service: systemctl enable --now cairn-agent");
            Ok(())
        })(),
        Command::Run => {
            Config::load(&cli.config).and_then(|cfg| rt.block_on(cairn_agent::daemon::run(cfg)))
        }
        Command::Analyze { json } => Config::load(&cli.config).and_then(|cfg| {
            let reports = cairn_agent::daemon::analyze_all(&cfg);
            print_reports(&reports, json)
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cairn-agent: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn parse_label(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| format!("label {s:?}: expected KEY=VALUE"))
}

/// Sets `controller = …` in the config file, keeping the rest as written.
fn save_controller(path: &std::path::Path, url: &str) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(path)?;
    let line = format!("controller = {url:?}");
    let mut found = false;
    let mut out: Vec<String> = text
        .lines()
        .map(|l| {
            if !found && l.trim_start().starts_with("controller") && l.contains('=') {
                found = true;
                line.clone()
            } else {
                l.to_string()
            }
        })
        .collect();
    if !found {
        out.insert(0, line);
    }
    std::fs::write(path, out.join("\n") + "\n")?;
    Ok(())
}

#[derive(serde::Serialize)]
struct DatabaseView<'a> {
    engine: &'a str,
    name: &'a str,
    table_prefix: Option<&'a str>,
}

/// What `analyze --json` prints: the report without any credential.
#[derive(serde::Serialize)]
struct ReportView<'a> {
    name: &'a str,
    aliases: &'a [String],
    root: &'a std::path::Path,
    source: &'a str,
    root_missing: bool,
    site_type: &'a str,
    database: Option<DatabaseView<'a>>,
    files: u64,
    size_bytes: u64,
    changes_24h: u64,
    avg_daily_changes: f64,
    trend: &'a str,
    requests_24h: Option<u64>,
    duration_ms: u128,
}

fn print_reports(reports: &[Report], json: bool) -> anyhow::Result<()> {
    if json {
        let v: Vec<ReportView> = reports
            .iter()
            .map(|r| ReportView {
                name: &r.site.name,
                aliases: &r.site.aliases,
                root: &r.site.root,
                source: &r.site.source,
                root_missing: r.site.root_missing,
                site_type: r.site_type.as_str(),
                database: r.database.as_ref().map(|d| DatabaseView {
                    engine: &d.engine,
                    name: &d.name,
                    table_prefix: d.table_prefix.as_deref(),
                }),
                files: r.files,
                size_bytes: r.size_bytes,
                changes_24h: r.changes_24h,
                avg_daily_changes: r.avg_daily_changes,
                trend: r.trend.as_str(),
                requests_24h: r.requests_24h,
                duration_ms: r.took.as_millis(),
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!(
        "{:<30} {:<9} {:>8} {:>12} {:>8} {:<7} {:>9}  root",
        "domain", "type", "files", "bytes", "changes", "trend", "requests"
    );
    for r in reports {
        let requests = r.requests_24h.map_or("-".to_string(), |n| n.to_string());
        let root = if r.site.root_missing {
            format!("{} (missing)", r.site.root.display())
        } else {
            r.site.root.display().to_string()
        };
        println!(
            "{:<30} {:<9} {:>8} {:>12} {:>8} {:<7} {:>9}  {root}",
            r.site.name,
            r.site_type.as_str(),
            r.files,
            r.size_bytes,
            r.changes_24h,
            r.trend.as_str(),
            requests,
        );
    }
    Ok(())
}
