//! `repo check [--read-data | --read-data-subset N%]`.

use anyhow::Result;
use cairn_repo::check::{self, CheckOptions};

use super::open;
use crate::cli::RepoArgs;
use crate::{output, usage, Exit, EXIT_FAILURE};

pub fn run(args: &RepoArgs, read_data: bool, subset: Option<&str>) -> Result<()> {
    let subset = match subset {
        None => 1.0,
        Some(s) => {
            let n: f64 = s.trim_end_matches('%').parse().map_err(|_| {
                usage(format!(
                    "--read-data-subset {s:?}: expected a percentage such as 10%"
                ))
            })?;
            if !(n > 0.0 && n <= 100.0) {
                return Err(usage(format!(
                    "--read-data-subset {s:?}: must be in (0, 100]"
                )));
            }
            n / 100.0
        }
    };
    let repo = open(args)?;
    let read_data = read_data || subset < 1.0;
    let r = check::check(&repo, CheckOptions { read_data, subset })?;
    if args.json {
        output::json(&r)?;
    } else {
        println!(
            "checked {} snapshots, {} packs, {} blobs{}",
            r.snapshots,
            r.packs,
            r.blobs,
            if read_data {
                format!(", read {} packs", r.packs_read)
            } else {
                String::new()
            }
        );
        for w in &r.warnings {
            println!("warning: {}", output::safe(&w.to_string()));
        }
        for e in &r.errors {
            println!("error: {}", output::safe(&e.to_string()));
        }
        for b in &r.bad_packs {
            println!("error: pack {} is damaged: {}", b.pack, b.reason);
            if b.affected.is_empty() {
                println!("  no snapshot needs it");
            }
            for (snap, files) in &b.affected {
                println!("  snapshot {} loses {} file(s):", snap.short(), files.len());
                for f in files {
                    println!("    {}", output::safe(&f.to_string()));
                }
            }
        }
    }
    if r.ok() {
        if !args.json {
            println!("no errors found");
        }
        Ok(())
    } else {
        Err(Exit(
            EXIT_FAILURE,
            anyhow::anyhow!(
                "check found {} error(s) and {} damaged pack(s)",
                r.errors.len(),
                r.bad_packs.len()
            ),
        )
        .into())
    }
}
