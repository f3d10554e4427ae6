//! One module per group of `cairnctl repo` commands, and what they share:
//! opening storage and reading passphrases.

mod alerts;
mod backup;
mod check;
mod db;
mod domains;
mod fleet;
mod gc;
mod keys;
mod policy;
mod restore;
mod runbook;
mod snapshots;
mod users;

use std::path::Path;
use std::sync::Arc;

use anyhow::Result;
use cairn_repo::storage::{self, Storage};
use cairn_repo::{Id, Repository};

use crate::cli::{Cli, Command, RepoArgs, RepoCommand};
use crate::usage;

pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Repo(mut args) => {
            args.json = cli.conn.json;
            repo(*args)
        }
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut cmd, "cairnctl", &mut std::io::stdout());
            Ok(())
        }
        Command::Man { dir } => man(&dir),
        Command::Version => {
            let client = env!("CARGO_PKG_VERSION");
            if !cli.conn.json {
                println!("cairnctl {client}");
            }
            fleet::version(&cli.conn, client)
        }
        other => fleet::run(&cli.conn, other),
    }
}

/// Man pages: cairnctl.1 and one per command (cairnctl-backup.1 …).
fn man(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let cmd = <Cli as clap::CommandFactory>::command();
    clap_mangen::generate_to(cmd, dir)
        .map_err(|e| anyhow::anyhow!("writing man pages into {}: {e}", dir.display()))?;
    Ok(())
}

fn repo(args: RepoArgs) -> Result<()> {
    match &args.command {
        RepoCommand::Init => keys::init(&args),
        RepoCommand::Key(k) => keys::key(&args, k),
        RepoCommand::Backup { .. } => backup::run(&args),
        RepoCommand::BackupDb(a) => db::backup(&args, a),
        RepoCommand::RestoreDb(a) => db::restore(&args, a),
        RepoCommand::Audit => users::repo_audit(&args),
        RepoCommand::Snapshots { domain } => snapshots::list(&args, domain.as_deref()),
        RepoCommand::Ls {
            snapshot,
            path,
            domain,
            long,
        } => snapshots::ls(&args, snapshot, path.as_deref(), domain.as_deref(), *long),
        RepoCommand::Diff { a, b, domain } => snapshots::diff(&args, a, b, domain.as_deref()),
        RepoCommand::Restore {
            snapshot,
            target,
            paths,
            domain,
            in_place,
            dry_run,
        } => {
            let domain = domain.as_deref();
            if *dry_run {
                restore::preview(&args, snapshot, target, domain)
            } else if *in_place {
                restore::in_place(&args, snapshot, target, domain)
            } else {
                restore::restore(&args, snapshot, target, paths, domain)
            }
        }
        RepoCommand::Export {
            snapshot,
            paths,
            domain,
        } => restore::export(&args, snapshot, paths, domain.as_deref()),
        RepoCommand::Check {
            read_data,
            read_data_subset,
        } => check::run(&args, *read_data, read_data_subset.as_deref()),
        RepoCommand::Forget { snapshots, domain } => {
            gc::forget(&args, snapshots, domain.as_deref())
        }
        RepoCommand::Gc { dry_run, grace } => gc::gc(&args, *dry_run, grace),
        RepoCommand::Unlock { remove_all } => gc::unlock(&args, *remove_all),
    }
}

pub(crate) fn open_storage(args: &RepoArgs) -> Result<Arc<dyn Storage>> {
    let loc = args
        .repo
        .as_deref()
        .ok_or_else(|| usage("no repository: pass --repo or set CAIRN_REPO"))?;
    storage::open(loc).map_err(usage)
}

/// Reads a passphrase from a file (first line; refused when others can read it)
/// or from an environment variable.
pub(crate) fn read_passphrase(file: Option<&Path>, env: &str) -> Result<Vec<u8>> {
    if let Some(f) = file {
        return cairn_repo::secret::read_file(f).map_err(|e| match e {
            cairn_repo::secret::SecretError::Io { .. } => anyhow::Error::new(e),
            other => usage(format!("passphrase file: {other}")),
        });
    }
    match std::env::var_os(env) {
        Some(v) if !v.is_empty() => Ok(std::os::unix::ffi::OsStringExt::into_vec(v)),
        _ => Err(usage(format!(
            "no passphrase: set {env} or pass a passphrase file"
        ))),
    }
}

pub(crate) fn passphrase(args: &RepoArgs) -> Result<Vec<u8>> {
    read_passphrase(args.passphrase_file.as_deref(), "CAIRN_PASSPHRASE")
}

pub(crate) fn open(args: &RepoArgs) -> Result<Repository> {
    let storage = open_storage(args)?;
    let pass = passphrase(args)?;
    Ok(Repository::open(storage, &pass)?)
}

pub(crate) fn find(
    repo: &Repository,
    spec: &str,
    domain: Option<&str>,
) -> Result<(Id, cairn_repo::snapshot::Snapshot)> {
    Ok(repo.find_snapshot(spec, domain)?)
}
