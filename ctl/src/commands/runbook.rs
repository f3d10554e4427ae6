//! `cairnctl runbook DOMAIN`: the exact commands that bring one site back,
//! written from the catalog (DR-2): through the controller, onto a new
//! server, and from the repository alone when the controller is gone.

use anyhow::Result;
use cairn_proto::admin::v1 as pb;

use super::fleet::{status, time, Client};

/// What a runbook is written from.
#[derive(Debug, Default, Clone)]
pub struct Facts {
    pub domain: String,
    pub agent: String,
    pub hostname: String,
    pub path: String,
    pub site_type: String,
    /// `engine:name`, as agents report them.
    pub databases: Vec<String>,
    pub repository: String,
    /// How far point-in-time restores reach, or why they are off.
    pub point_in_time: String,
    pub files: Option<pb::SnapshotInfo>,
    pub database: Option<pb::SnapshotInfo>,
    /// The newest test restore run: (job, when it ended, seconds it took).
    pub measured: Option<(String, i64, i64)>,
    pub generated: i64,
}

enum Block {
    Heading(String),
    Text(String),
    Commands(Vec<String>),
}

fn blocks(f: &Facts) -> Vec<Block> {
    use Block::*;
    let mut b = vec![Heading(format!("Restore runbook: {}", f.domain))];
    b.push(Text(format!(
        "Written {} UTC from the Cairn catalog. Site: {} on {} (agent {}), directory {}{}.",
        time(f.generated),
        f.domain,
        f.hostname,
        f.agent,
        f.path,
        if f.site_type.is_empty() {
            String::new()
        } else {
            format!(", {}", f.site_type)
        }
    )));
    let db_name = f
        .databases
        .first()
        .and_then(|d| d.split_once(':'))
        .map(|(_, n)| n.to_string());
    let (Some(files), database) = (&f.files, &f.database) else {
        b.push(Text(
            "No file snapshot of this site yet: nothing to restore. Run `cairnctl backup` first."
                .into(),
        ));
        return b;
    };
    let run = database
        .as_ref()
        .filter(|d| !files.run_id.is_empty() && d.run_id == files.run_id)
        .map(|_| files.run_id.clone());
    let what = run.clone().unwrap_or_else(|| files.snapshot_id.clone());
    b.push(Text(format!(
        "Newest copy: files {} of {} ({} bytes){}.",
        files.snapshot_id,
        time(files.time),
        files.total_bytes,
        match database {
            Some(d) => format!(
                ", database {} of {} ({} bytes){}",
                d.snapshot_id,
                time(d.time),
                d.total_bytes,
                if run.is_some() { ", one run" } else { "" }
            ),
            None => String::new(),
        }
    )));
    b.push(Text(match f.measured {
        Some((ref job, at, secs)) => format!(
            "Measured recovery time: {secs} s (test restore {job}, {} UTC).",
            time(at)
        ),
        None => format!(
            "Recovery time not measured yet: `cairnctl restore {what} --test --wait` measures it."
        ),
    }));

    b.push(Heading("On the same server, through the controller".into()));
    b.push(Text(
        "Preview, then restore in place: a safety backup of what is there now, the copy \
         restored beside the site and checked, then swapped in at once. Roll back with the \
         restore's job id if needed."
            .into(),
    ));
    b.push(Commands(vec![
        format!("cairnctl restore {what} --dry-run"),
        format!("cairnctl restore {what} --in-place --wait"),
        "cairnctl rollback JOB --wait".into(),
    ]));
    if f.point_in_time.starts_with("on:") {
        b.push(Text(format!(
            "Back to the minute before the damage: the newest copies before that moment, the \
             database brought forward to it with the shipped binary log ({}).",
            f.point_in_time.trim_start_matches("on: ")
        )));
        b.push(Commands(vec![format!(
            "cairnctl restore {} --at \"YYYY-MM-DD HH:MM\" --in-place --wait",
            f.domain
        )]));
    }

    b.push(Heading("On a new server, through the controller".into()));
    b.push(Text(
        "Install the agent there and enroll it with a new token (the join command is printed \
         by the first line); restore the files into the web root, let the agent find the \
         restored site, then restore its database."
            .into(),
    ));
    let mut cmds = vec![
        "cairnctl token create".into(),
        format!(
            "cairnctl restore {} --agent NEW_AGENT --target {} --wait",
            files.snapshot_id, f.path
        ),
    ];
    if let Some(d) = database {
        cmds.push("ssh NEW_SERVER sudo systemctl restart cairn-agent".into());
        cmds.push(format!(
            "cairnctl restore {} --agent NEW_AGENT --wait",
            d.snapshot_id
        ));
    }
    b.push(Commands(cmds));

    b.push(Heading("Without the controller".into()));
    b.push(Text(
        "On any machine with cairnctl, the repository's passphrase and (for S3) its \
         credentials in AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL and \
         AWS_REGION:"
            .into(),
    ));
    let mut cmds = vec![
        format!("export CAIRN_REPO={}", f.repository),
        "export CAIRN_PASSPHRASE_FILE=/root/cairn.pass".into(),
        format!("cairnctl repo snapshots --domain {}", f.domain),
        format!(
            "cairnctl repo restore {} --target {}",
            files.snapshot_id, f.path
        ),
    ];
    if let Some(d) = database {
        cmds.push(format!(
            "cairnctl repo restore-db {} --database {} --db-socket /run/mysqld/mysqld.sock --db-user root",
            d.snapshot_id,
            db_name.as_deref().unwrap_or("DATABASE")
        ));
    }
    b.push(Commands(cmds));
    b
}

/// The runbook as Markdown (for a wiki) or plain text (for a terminal).
pub fn render(f: &Facts, markdown: bool) -> String {
    let mut out = String::new();
    for block in blocks(f) {
        match block {
            Block::Heading(h) if markdown => {
                let level = if out.is_empty() { "#" } else { "##" };
                out.push_str(&format!("{level} {h}\n\n"));
            }
            Block::Heading(h) => {
                out.push_str(&format!("{h}\n{}\n\n", "=".repeat(h.chars().count())))
            }
            Block::Text(t) => out.push_str(&format!("{t}\n\n")),
            Block::Commands(cmds) if markdown => {
                out.push_str("```sh\n");
                for c in cmds {
                    out.push_str(&format!("{c}\n"));
                }
                out.push_str("```\n\n");
            }
            Block::Commands(cmds) => {
                for c in cmds {
                    out.push_str(&format!("    {c}\n"));
                }
                out.push('\n');
            }
        }
    }
    out
}

/// Gathers the facts of `domain` through the controller and prints its runbook.
pub async fn runbook(
    c: &mut Client,
    domain: String,
    agent: Option<String>,
    markdown: bool,
) -> Result<()> {
    let detail = c
        .get_domain(pb::GetDomainRequest {
            name: domain.clone(),
            agent_id: agent.unwrap_or_default(),
        })
        .await
        .map_err(status)?
        .into_inner();
    let d = detail.domain.unwrap_or_default();
    let agents = c
        .list_agents(pb::ListAgentsRequest {})
        .await
        .map_err(status)?
        .into_inner()
        .agents;
    let snaps: Vec<pb::SnapshotInfo> = c
        .list_snapshots(pb::ListSnapshotsRequest {
            domain: domain.clone(),
        })
        .await
        .map_err(status)?
        .into_inner()
        .snapshots
        .into_iter()
        .filter(|s| s.agent_id == d.agent_id)
        .collect();
    let newest = |database: bool| {
        snaps
            .iter()
            .filter(|s| (s.content == "database") == database)
            .max_by_key(|s| s.time)
            .cloned()
    };
    let jobs = c
        .list_jobs(pb::ListJobsRequest {
            domain: domain.clone(),
            state: "succeeded".into(),
        })
        .await
        .map_err(status)?
        .into_inner()
        .jobs;
    // The newest test restore run, all its jobs summed.
    let measured = jobs
        .iter()
        .filter(|j| j.test && j.agent_id == d.agent_id && j.started_at > 0)
        .max_by_key(|j| j.finished_at)
        .map(|last| {
            let run: Vec<&pb::JobInfo> = jobs
                .iter()
                .filter(|j| {
                    j.test
                        && j.started_at > 0
                        && if last.run_id.is_empty() {
                            j.job_id == last.job_id
                        } else {
                            j.run_id == last.run_id
                        }
                })
                .collect();
            let start = run.iter().map(|j| j.started_at).min().unwrap_or(0);
            let end = run.iter().map(|j| j.finished_at).max().unwrap_or(0);
            (last.job_id.clone(), end, (end - start).max(1))
        });
    let facts = Facts {
        hostname: agents
            .iter()
            .find(|a| a.agent_id == d.agent_id)
            .map(|a| a.hostname.clone())
            .unwrap_or_else(|| d.agent_id.clone()),
        domain: d.name,
        agent: d.agent_id,
        path: d.path,
        site_type: d.site_type,
        databases: d.databases,
        repository: detail.repository,
        point_in_time: detail.point_in_time,
        files: newest(false),
        database: newest(true),
        measured,
        generated: chrono::Utc::now().timestamp(),
    };
    print!("{}", render(&facts, markdown));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> Facts {
        Facts {
            domain: "shop.test".into(),
            agent: "a1".into(),
            hostname: "web1".into(),
            path: "/var/www/shop".into(),
            site_type: "wordpress".into(),
            databases: vec!["mariadb:shop".into()],
            repository: "s3://backups/cairn".into(),
            point_in_time: "on: binary log shipped up to 2023-11-14 22:15:00 UTC (12 s ago)".into(),
            files: Some(pb::SnapshotInfo {
                snapshot_id: "f1".into(),
                run_id: "j7".into(),
                content: "files".into(),
                time: 1_700_000_000,
                ..Default::default()
            }),
            database: Some(pb::SnapshotInfo {
                snapshot_id: "d1".into(),
                run_id: "j7".into(),
                content: "database".into(),
                time: 1_700_000_001,
                ..Default::default()
            }),
            measured: Some(("j9".into(), 1_700_000_100, 42)),
            generated: 1_700_000_200,
        }
    }

    #[test]
    fn a_runbook_names_the_run_the_commands_and_the_measured_time() {
        let md = render(&facts(), true);
        assert!(md.starts_with("# Restore runbook: shop.test\n"), "{md}");
        for line in [
            "cairnctl restore j7 --in-place --wait",
            "cairnctl restore f1 --agent NEW_AGENT --target /var/www/shop --wait",
            "cairnctl restore d1 --agent NEW_AGENT --wait",
            "export CAIRN_REPO=s3://backups/cairn",
            "cairnctl repo restore f1 --target /var/www/shop",
            "cairnctl repo restore-db d1 --database shop",
            "Measured recovery time: 42 s (test restore j9",
            "cairnctl restore shop.test --at \"YYYY-MM-DD HH:MM\" --in-place --wait",
            "```sh",
        ] {
            assert!(md.contains(line), "{line}: {md}");
        }
        let text = render(&facts(), false);
        assert!(
            !text.contains("```") && text.contains("\n    cairnctl repo restore f1"),
            "{text}"
        );
    }

    #[test]
    fn without_a_database_or_a_measurement_it_says_so() {
        let f = Facts {
            database: None,
            measured: None,
            ..facts()
        };
        let md = render(
            &Facts {
                point_in_time: "off: the server's binary log is off".into(),
                ..f.clone()
            },
            true,
        );
        assert!(!md.contains("restore-db"), "{md}");
        assert!(!md.contains("--at"), "point in time is off: {md}");
        assert!(md.contains("cairnctl restore f1 --test --wait"), "{md}");
        let none = render(&Facts { files: None, ..f }, true);
        assert!(none.contains("No file snapshot"), "{none}");
    }
}
