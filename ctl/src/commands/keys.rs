//! `repo init` and `repo key add|list|remove|passwd`.

use anyhow::Result;
use cairn_repo::config::RepoConfig;
use cairn_repo::keys::{self, KdfParams};
use cairn_repo::{Id, Repository};

use super::{open, open_storage, passphrase, read_passphrase};
use crate::cli::{KeyCommand, NewPassphrase, RepoArgs};
use crate::{output, usage};

pub fn init(args: &RepoArgs) -> Result<()> {
    let storage = open_storage(args)?;
    let pass = passphrase(args)?;
    let repo = Repository::init(storage, &pass, RepoConfig::new(), KdfParams::default())?;
    if args.json {
        output::json(
            &serde_json::json!({"id": repo.config().id, "location": repo.storage().location()}),
        )
    } else {
        println!(
            "created repository {} at {}",
            repo.config().id.short(),
            repo.storage().location()
        );
        println!("Keep the passphrase safe: without it the data cannot be read.");
        Ok(())
    }
}

fn new_passphrase(n: &NewPassphrase) -> Result<Vec<u8>> {
    read_passphrase(n.new_passphrase_file.as_deref(), "CAIRN_NEW_PASSPHRASE")
}

/// Writes a key file for the new passphrase; returns its id.
fn add_key(repo: &Repository, n: &NewPassphrase) -> Result<Id> {
    Ok(keys::add(
        &**repo.storage(),
        repo.key(),
        &new_passphrase(n)?,
        KdfParams::default(),
    )?)
}

pub fn key(args: &RepoArgs, cmd: &KeyCommand) -> Result<()> {
    let repo = open(args)?;
    let storage = repo.storage().clone();
    match cmd {
        KeyCommand::Add(n) => {
            let id = add_key(&repo, n)?;
            println!("added key {}", id.short());
        }
        KeyCommand::List => {
            let list = keys::list(&*storage)?;
            if args.json {
                let rows: Vec<_> = list
                    .iter()
                    .map(|(id, k)| serde_json::json!({"id": id, "current": *id == repo.key_file(), "created": k.created, "hostname": k.hostname, "username": k.username}))
                    .collect();
                return output::json(&rows);
            }
            println!(" {:<10} {:<26} {:<20} USER", "ID", "CREATED", "HOST");
            for (id, k) in list {
                let cur = if id == repo.key_file() { "*" } else { " " };
                println!(
                    "{cur}{:<10} {:<26} {:<20} {}",
                    id.short(),
                    k.created.format("%Y-%m-%d %H:%M:%S UTC"),
                    k.hostname,
                    k.username
                );
            }
        }
        KeyCommand::Remove { id } => {
            let list = keys::list(&*storage)?;
            let matches: Vec<Id> = list
                .iter()
                .map(|(i, _)| *i)
                .filter(|i| i.to_hex().starts_with(&id.to_ascii_lowercase()))
                .collect();
            let target = match matches.as_slice() {
                [one] => *one,
                [] => return Err(anyhow::anyhow!("no key file matches {id:?}")),
                _ => return Err(usage(format!("key id prefix {id:?} is ambiguous"))),
            };
            if target == repo.key_file() {
                return Err(usage("refusing to remove the key in use; open the repository with another passphrase to remove it"));
            }
            if list.len() <= 1 {
                return Err(usage("refusing to remove the last key"));
            }
            storage.delete(&format!("keys/{target}"))?;
            println!("removed key {}", target.short());
        }
        KeyCommand::Passwd(n) => {
            // The new key file is durable before the old one goes.
            let id = add_key(&repo, n)?;
            storage.delete(&format!("keys/{}", repo.key_file()))?;
            println!(
                "changed passphrase: key {} replaces {}",
                id.short(),
                repo.key_file().short()
            );
        }
    }
    Ok(())
}
