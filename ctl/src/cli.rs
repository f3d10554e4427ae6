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
    #[command(flatten)]
    pub conn: Connection,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Work on a repository directly, without a controller.
    Repo(Box<RepoArgs>),
    /// Enrolled agents.
    #[command(subcommand)]
    Agents(AgentsCommand),
    /// Domains the agents report.
    #[command(subcommand)]
    Domains(DomainsCommand),
    /// Snapshots in the controller's catalog.
    #[command(subcommand)]
    Snapshots(SnapshotsCommand),
    /// Enrollment tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Delete snapshots from the fleet repository; their data goes at the next gc.
    Forget {
        /// Snapshot ids or unique prefixes.
        #[arg(required = true)]
        snapshots: Vec<String>,
    },
    /// Delete data no snapshot needs, while backups keep running.
    Gc {
        /// Show what would be deleted; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Never touch packs younger than this (e.g. 30m, 1h, 2d).
        #[arg(long, default_value = "1h")]
        grace: String,
    },
    /// Back up a domain on the agent that reports it: its files and, when
    /// the site's config names one, its database, as one run.
    Backup {
        domain: String,
        #[arg(long, default_value = "incremental", value_parser = ["full", "incremental", "differential"])]
        kind: String,
        /// The agent whose copy of the domain to back up (needed when two
        /// servers report the same domain name).
        #[arg(long)]
        agent: Option<String>,
        /// Follow the job with a progress bar until it ends; exit 1 if it fails.
        #[arg(long)]
        wait: bool,
        /// Only the site's files.
        #[arg(long, conflicts_with = "db_only")]
        files_only: bool,
        /// Dump the database the site's own config names (wp-config.php or
        /// .env on its server; the credentials never leave it).
        #[arg(long)]
        db_only: bool,
    },
    /// Restore a snapshot, or a whole run (a site's files and database at
    /// one time), or a domain as it was at a moment (--at), through an
    /// agent on its server. Files go into --target; a database goes back
    /// into the database the site's config names (credentials stay on the
    /// server), or into --into-database.
    Restore {
        /// A snapshot id, or a run id (as `jobs list` and `snapshots list`
        /// show); with --at, a domain.
        #[arg(value_name = "SNAPSHOT_OR_RUN")]
        snapshot: String,
        /// The domain as it was at this moment ("2026-11-30 14:05" in local
        /// time, or RFC 3339): its newest files and dump from then or
        /// before, and the database brought forward to that second with the
        /// server's shipped binary log where there is one (MariaDB/MySQL).
        #[arg(long, value_name = "TIME")]
        at: Option<String>,
        /// The agent that restores (default: the one that made the snapshot).
        #[arg(long)]
        agent: Option<String>,
        /// Absolute directory on the agent's server, for files.
        #[arg(long)]
        target: Option<String>,
        /// Only these paths of the snapshot (repeatable).
        #[arg(long = "path")]
        paths: Vec<String>,
        /// Of a run, only the files.
        #[arg(long, conflicts_with = "db_only")]
        files_only: bool,
        /// Of a run, only the database.
        #[arg(long)]
        db_only: bool,
        /// Only this table of the database, with what it needs to load (repeatable).
        #[arg(long = "table", value_name = "TABLE")]
        tables: Vec<String>,
        /// Restore the database into this one (created if missing) instead
        /// of the site's own.
        #[arg(long, value_name = "NAME")]
        into_database: Option<String>,
        /// A test restore: files into a scratch directory on the agent,
        /// every byte checked against the snapshot; a database into a
        /// scratch database on the site's server, every table and row count
        /// checked. Both are removed afterwards; the job's duration is the
        /// site's measured recovery time.
        #[arg(long, conflicts_with_all = ["into_database", "target"])]
        test: bool,
        /// Restore over the live site (--target, default: the domain's
        /// directory on the agent): first a backup of what is there now, then
        /// the snapshot is restored beside the site, checked file by file and
        /// swapped in at once. The replaced tree is kept for `cairnctl
        /// rollback` (7 days by default, scheduler.keep_rollback).
        #[arg(long, conflicts_with_all = ["paths", "test"])]
        in_place: bool,
        /// Show what a restore over the live site would add, change and
        /// remove (compared by size, time and mode), writing nothing.
        #[arg(long, conflicts_with_all = ["paths", "test"])]
        dry_run: bool,
        /// Follow the jobs until they end; exit 1 if one fails.
        #[arg(long)]
        wait: bool,
    },
    /// Print the exact commands that restore a site (same server, a new
    /// server, or with no controller at all) and its measured recovery time.
    Runbook {
        domain: String,
        /// The agent whose copy of the domain (when several report it).
        #[arg(long)]
        agent: Option<String>,
        /// text for a terminal, md (Markdown) for a wiki.
        #[arg(long, default_value = "text", value_parser = ["text", "md"])]
        format: String,
    },
    /// Undo an in-place restore: the site's tree from before it goes back
    /// in, in one step (the restored tree is removed; it is still in the
    /// repository).
    Rollback {
        /// The in-place restore job.
        job: String,
        /// Follow the job until it ends; exit 1 if it fails.
        #[arg(long)]
        wait: bool,
    },
    /// Backup and restore jobs.
    #[command(subcommand)]
    Jobs(JobsCommand),
    /// Fleet-wide policies: which domains get which schedule, retention,
    /// excludes and database settings.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Runs the controller will start, fleet-wide, soonest first.
    Schedule {
        /// How far ahead to look (e.g. 6h, 24h, 7d).
        #[arg(long, default_value = "24h")]
        next: String,
    },
    /// Legal holds: snapshots retention and forget must never delete.
    #[command(subcommand)]
    Hold(HoldCommand),
    /// What retention keeps and forgets.
    #[command(subcommand)]
    Retention(RetentionCommand),
    /// What needs attention: failed backups and dumps, overdue domains,
    /// offline agents, failed test restores.
    #[command(subcommand)]
    Alerts(AlertsCommand),
    /// Where alerts are sent: the channels of controller.toml.
    #[command(subcommand)]
    Notify(NotifyCommand),
    /// Who may use cairnctl: each user holds a certificate with a role
    /// (admin: everything; operator: backups, restores, jobs, holds, no
    /// deletes or grants; auditor: read only).
    #[command(subcommand)]
    User(UserCommand),
    /// The controller's audit log: every change and every refused call,
    /// with who made it.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Print the versions of cairnctl and of the controller it talks to.
    Version,
    /// Print a shell completion script: `source <(cairnctl completions bash)`,
    /// or save it where your shell loads completions from.
    Completions { shell: clap_complete::Shell },
    /// Write man pages for cairnctl and each of its commands into DIR.
    Man { dir: PathBuf },
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Issue a certificate for a new user; writes NAME.key (kept here, never
    /// sent), NAME.pem, ca.pem and cairnctl.toml into --out.
    Add {
        name: String,
        /// admin, operator or auditor.
        #[arg(long)]
        role: String,
        /// Directory to write into (default: ./NAME); must not hold a key yet.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Users and their roles, revoked ones last.
    List,
    /// Refuse a user's certificate from now on.
    Revoke { name: String },
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Entries, oldest first.
    List {
        /// Only entries newer than this: a duration back (24h, 7d) or a
        /// date (2026-11-30 or 2026-11-30T14:05:00Z).
        #[arg(long)]
        since: Option<String>,
        /// The newest this many (0: all).
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// Check the hash chain; exit 1 if an entry was edited, removed or
    /// reordered.
    Verify,
}

#[derive(Debug, Subcommand)]
pub enum NotifyCommand {
    /// Channels with what waits in their queues and their last error.
    List,
    /// Send a test message through one channel now; exit 1 if it fails.
    Test { channel: String },
}

#[derive(Debug, Subcommand)]
pub enum AlertsCommand {
    /// Alerts firing now (with --all, resolved ones too), firing first.
    List {
        #[arg(long)]
        all: bool,
    },
    /// Record that someone is on it; the alert stays until it resolves.
    Ack { alert: String },
}

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Create or replace a policy from a TOML file (the same file twice changes nothing).
    Apply {
        /// The policy document (`-` reads standard input).
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
        /// Show which domains' settings would change; store nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Policies, in the order they apply.
    List,
    /// One policy's document and the domains it selects.
    Show { name: String },
    /// Delete a policy; the domains it selected fall back to the others.
    Delete {
        name: String,
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum HoldCommand {
    /// Hold every snapshot of a domain, or one snapshot.
    Add {
        #[arg(
            long,
            conflicts_with = "snapshot",
            required_unless_present = "snapshot"
        )]
        domain: Option<String>,
        /// A snapshot id or unique prefix.
        #[arg(long)]
        snapshot: Option<String>,
        /// Why (a case number, a ticket); shown with the hold.
        #[arg(long)]
        reason: String,
    },
    /// Release a hold; retention may forget what it kept at its next run.
    Remove {
        hold: String,
    },
    List,
}

#[derive(Debug, Subcommand)]
pub enum RetentionCommand {
    /// What the next retention run would forget, and the bytes it would free.
    Preview {
        #[arg(long)]
        domain: Option<String>,
    },
    /// Apply retention and collect garbage now, as the maintenance window does.
    Apply,
}

/// How cairnctl reaches the controller (flags shared by the fleet commands).
#[derive(Debug, Args, Clone)]
pub struct Connection {
    /// cairnctl.toml written by `cairn-controller init` (controller, ca, cert, key).
    #[arg(long, env = "CAIRN_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    /// Overrides the config's controller URL.
    #[arg(long, env = "CAIRN_CONTROLLER", global = true)]
    pub controller: Option<String>,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum AgentsCommand {
    List,
    /// Set (KEY=VALUE) or remove (KEY-) labels policies select agents by.
    Label {
        agent: String,
        #[arg(required = true)]
        labels: Vec<String>,
    },
    /// Revoke an agent's certificate at once and forget its domains.
    Remove {
        agent: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum DomainsCommand {
    /// Every domain with its type, size class, activity, traffic and strategy.
    List {
        #[arg(long)]
        agent: Option<String>,
    },
    /// One domain: why its strategy, its database, its daily history and
    /// every change of plan.
    Show {
        domain: String,
        /// The agent, when several report the same domain.
        #[arg(long)]
        agent: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum SnapshotsCommand {
    List {
        #[arg(long)]
        domain: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// A single-use enrollment token and the command that uses it.
    Create {
        /// Lifetime: 900, 900s, 15m, 1h (at most 7 days).
        #[arg(long, default_value = "15m")]
        ttl: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum JobsCommand {
    List {
        #[arg(long)]
        domain: Option<String>,
        /// Only jobs in this state.
        #[arg(long, value_parser = ["queued", "running", "succeeded", "failed", "cancelled"])]
        state: Option<String>,
    },
    Show {
        job: String,
    },
    Cancel {
        job: String,
    },
    /// Follow a job with a progress bar until it ends.
    Watch {
        job: String,
    },
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
    /// Set from the global `--json`.
    #[arg(skip)]
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
    /// Dump a database (MariaDB/MySQL, PostgreSQL, SQLite) into a snapshot of a domain.
    BackupDb(BackupDbArgs),
    /// Restore a database snapshot (whole, or chosen tables) into a database,
    /// or test-restore it into a scratch database that is dropped afterwards.
    RestoreDb(RestoreDbArgs),
    /// List the audit log the controller copied into the repository (who
    /// did what), and check its hash chain: exit 1 if an entry was edited
    /// or removed. Works without the controller.
    Audit,
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
        /// Over a live directory: restore beside it, check every file, swap
        /// the two at once; the replaced tree is kept beside it.
        #[arg(long, conflicts_with_all = ["paths", "dry_run"])]
        in_place: bool,
        /// Show what a restore over --target would add, change and remove;
        /// write nothing.
        #[arg(long, conflicts_with = "paths")]
        dry_run: bool,
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

/// How to reach a database server. The password comes from a file or the
/// environment, never from a flag.
#[derive(Debug, Args, Clone)]
pub struct DbConnArgs {
    #[arg(long)]
    pub db_host: Option<String>,
    #[arg(long)]
    pub db_port: Option<u16>,
    /// Unix socket of the server.
    #[arg(long)]
    pub db_socket: Option<PathBuf>,
    #[arg(long)]
    pub db_user: Option<String>,
    /// File holding the database password (else $CAIRN_DB_PASSWORD, else none).
    #[arg(long, env = "CAIRN_DB_PASSWORD_FILE")]
    pub db_password_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct BackupDbArgs {
    #[arg(long)]
    pub domain: String,
    /// mariadb (also MySQL), postgres or sqlite.
    #[arg(long)]
    pub engine: cairn_dump::Engine,
    /// Database name; for SQLite, the database file.
    #[arg(long)]
    pub database: String,
    #[command(flatten)]
    pub conn: DbConnArgs,
    /// What the application may lose: wordpress skips transients and cache
    /// tables, laravel skips sessions, cache, jobs and failed_jobs.
    #[arg(long, default_value = "none")]
    pub profile: cairn_dump::Profile,
    /// WordPress table prefix (wp-config.php's $table_prefix).
    #[arg(long)]
    pub table_prefix: Option<String>,
    /// Only these tables (repeatable).
    #[arg(long = "table")]
    pub tables: Vec<String>,
    /// Keep this table's structure, not its rows (repeatable, globs).
    #[arg(long = "skip-data")]
    pub skip_data: Vec<String>,
    #[arg(long, conflicts_with = "data_only")]
    pub structure_only: bool,
    #[arg(long)]
    pub data_only: bool,
    /// Store an existing dump (a file, or - for stdin) instead of running the
    /// dump tool: mysqldump SQL or a pg_dump custom-format archive.
    #[arg(long, value_name = "FILE")]
    pub from_file: Option<PathBuf>,
    #[arg(long = "tag")]
    pub tags: Vec<String>,
    /// Host name recorded in the snapshot (default: this machine's).
    #[arg(long)]
    pub host: Option<String>,
}

#[derive(Debug, Args)]
pub struct RestoreDbArgs {
    pub snapshot: String,
    #[arg(long)]
    pub domain: Option<String>,
    /// Database to restore into (default: the one that was dumped). Created
    /// when missing; for SQLite, the file to write.
    #[arg(long)]
    pub database: Option<String>,
    /// Only these tables (repeatable); reads only their part of the dump.
    #[arg(long = "table")]
    pub tables: Vec<String>,
    /// Restore into a scratch database, check tables, row counts and the
    /// engine's own checks, then drop it.
    #[arg(long, conflicts_with = "database")]
    pub test: bool,
    /// Which dump of the snapshot (its database name), when it holds several.
    #[arg(long)]
    pub dump: Option<String>,
    /// Over a MariaDB/MySQL database that already has tables, skip loading
    /// the dump into a scratch database first (which proves it loads on this
    /// server before a table of the target is replaced).
    #[arg(long, conflicts_with = "test")]
    pub no_rehearsal: bool,
    #[command(flatten)]
    pub conn: DbConnArgs,
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
