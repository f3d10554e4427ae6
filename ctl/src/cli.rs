//! Command-line flags.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "cairnctl",
    version,
    about = "Cairn: backups for fleets of web servers"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Work on a repository directly, without a controller (DR-3).
    Repo(RepoArgs),
}

#[derive(Debug, Args)]
pub struct RepoArgs {
    /// Repository: a directory, or s3://BUCKET/PREFIX (with AWS_ACCESS_KEY_ID,
    /// AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL, AWS_REGION).
    #[arg(long, short = 'r', env = "CAIRN_REPO", global = true)]
    pub repo: Option<String>,
    /// File holding the passphrase (else $CAIRN_PASSPHRASE).
    #[arg(long, env = "CAIRN_PASSPHRASE_FILE", global = true)]
    pub passphrase_file: Option<PathBuf>,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: RepoCommand,
}

#[derive(Debug, Subcommand)]
pub enum RepoCommand {
    /// Create a new repository.
    Init,
    /// Manage the passphrases (key files) that open the repository.
    #[command(subcommand)]
    Key(KeyCommand),
    /// Back up a directory as a snapshot of a domain.
    Backup {
        #[arg(long)]
        domain: String,
        #[arg(long, default_value = "incremental")]
        kind: cairn_repo::snapshot::Kind,
        /// Exclude glob (repeatable); added to the default excludes.
        #[arg(long = "exclude", short = 'e')]
        excludes: Vec<String>,
        /// Do not apply the default excludes (cache/, logs/, *.log, node_modules/ …).
        #[arg(long)]
        no_default_excludes: bool,
        #[arg(long = "tag")]
        tags: Vec<String>,
        /// Host name recorded in the snapshot (default: this machine's).
        #[arg(long)]
        host: Option<String>,
        dir: PathBuf,
    },
    /// List snapshots.
    Snapshots {
        #[arg(long)]
        domain: Option<String>,
    },
    /// List the entries of a snapshot (below PATH).
    Ls {
        snapshot: String,
        path: Option<String>,
        #[arg(long)]
        domain: Option<String>,
        /// Show mode, size and mtime.
        #[arg(long, short = 'l')]
        long: bool,
    },
    /// Restore a snapshot, or chosen paths of it, into a directory.
    Restore {
        snapshot: String,
        #[arg(long)]
        target: PathBuf,
        #[arg(long = "path")]
        paths: Vec<String>,
        #[arg(long)]
        domain: Option<String>,
    },
    /// Write a snapshot (or paths in it) to stdout as a tar stream.
    Export {
        snapshot: String,
        #[arg(long = "path")]
        paths: Vec<String>,
        #[arg(long)]
        domain: Option<String>,
    },
    /// Show what changed between two snapshots.
    Diff {
        a: String,
        b: String,
        #[arg(long)]
        domain: Option<String>,
    },
    /// Check the repository's structure, and with --read-data every byte.
    Check {
        #[arg(long)]
        read_data: bool,
        /// Read only this share of the packs, e.g. 10%.
        #[arg(long, value_name = "N%")]
        read_data_subset: Option<String>,
    },
    /// Delete snapshots (their data goes at the next gc).
    Forget {
        #[arg(required = true)]
        snapshots: Vec<String>,
        #[arg(long)]
        domain: Option<String>,
    },
    /// Delete unreferenced data and repack sparse packs.
    Gc {
        #[arg(long)]
        dry_run: bool,
        /// Never touch packs younger than this (e.g. 30m, 1h, 2d).
        #[arg(long, default_value = "1h")]
        grace: String,
    },
    /// Remove stale locks left by killed processes.
    Unlock {
        /// Remove every lock, even live ones.
        #[arg(long)]
        remove_all: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Add a passphrase (from --new-passphrase-file or $CAIRN_NEW_PASSPHRASE).
    Add(NewPassphrase),
    /// List key files.
    List,
    /// Remove a key file (not the one in use, not the last).
    Remove { id: String },
    /// Change the passphrase of the key file in use.
    Passwd(NewPassphrase),
}

#[derive(Debug, Args)]
pub struct NewPassphrase {
    #[arg(long, env = "CAIRN_NEW_PASSPHRASE_FILE")]
    pub new_passphrase_file: Option<PathBuf>,
}
