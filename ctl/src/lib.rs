//! cairnctl, the operator's CLI. `cairnctl repo …` opens a repository directly
//! with only its location and passphrase (DR-3), restic-style.
//!
//! Exit codes: 0 ok, 1 failure (or a waited-for job that did not succeed),
//! 3 wrong passphrase, 64 usage or configuration error, 69 controller
//! unreachable, 77 refused by the controller.

mod cli;
mod commands;
mod output;

use std::process::ExitCode;

use clap::Parser;

pub use cli::Cli;

pub const EXIT_FAILURE: u8 = 1;
pub const EXIT_WRONG_PASSPHRASE: u8 = 3;
pub const EXIT_USAGE: u8 = 64;
/// The controller could not be reached (sysexits EX_UNAVAILABLE).
pub const EXIT_UNAVAILABLE: u8 = 69;
/// The controller refused our certificate (sysexits EX_NOPERM).
pub const EXIT_NOPERM: u8 = 77;

/// An error that chooses its exit code.
#[derive(Debug)]
pub struct Exit(pub u8, pub anyhow::Error);

pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = match e.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => 0,
                _ => EXIT_USAGE,
            };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("CAIRN_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    match commands::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            let (code, err) = classify(err);
            if output::is_broken_pipe(&err) {
                return ExitCode::SUCCESS;
            }
            eprintln!("cairnctl: error: {err:#}");
            ExitCode::from(code)
        }
    }
}

fn classify(err: anyhow::Error) -> (u8, anyhow::Error) {
    let err = match err.downcast::<Exit>() {
        Ok(Exit(code, inner)) => return (code, inner),
        Err(e) => e,
    };
    for cause in err.chain() {
        if let Some(cairn_dump::DbError::Invalid(_)) = cause.downcast_ref() {
            return (EXIT_USAGE, err);
        }
        if let Some(e) = cause.downcast_ref::<cairn_repo::Error>() {
            match e {
                cairn_repo::Error::WrongPassphrase { .. } => return (EXIT_WRONG_PASSPHRASE, err),
                cairn_repo::Error::Invalid(_) => return (EXIT_USAGE, err),
                _ => {}
            }
        }
    }
    (EXIT_FAILURE, err)
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:#}", self.1)
    }
}

impl std::error::Error for Exit {}

/// A usage error (exit 64).
pub fn usage(msg: impl std::fmt::Display) -> anyhow::Error {
    Exit(EXIT_USAGE, anyhow::anyhow!("{msg}")).into()
}
