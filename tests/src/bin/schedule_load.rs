//! Scheduler benchmark (printed, never timed in CI): N simulated agents × D
//! domains, all on one policy whose cron fires for every domain at the same
//! minute, against one real controller process with its scheduler on. Each
//! simulated agent holds a job for JOB_SECONDS, then reports it failed (no
//! retries), so the controller's spread (splay), caps (`agent_jobs`,
//! `fleet_jobs`) and queue are what is measured.
//!
//!   cargo run --release -p cairn-tests --bin cairn-schedule-load -- [AGENTS] [DOMAINS] [JOB_SECONDS] [SPLAY]

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cairn_proto::admin::v1 as admin;
use cairn_tests::cluster::{Cluster, ClusterOptions};
use cairn_tests::sim::{self, pct, proc_stat, Controller};
use chrono::{Timelike, Utc};

const AGENT_JOBS: usize = 4;
const FLEET_JOBS: usize = 64;

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// What the simulated fleet saw, shared by every agent task.
#[derive(Default)]
struct Seen {
    /// job id → unix time the job reached its agent
    arrivals: Mutex<HashMap<String, f64>>,
    running: AtomicUsize,
    peak: AtomicUsize,
    /// The most jobs any one agent held at once.
    peak_per_agent: AtomicUsize,
    done: AtomicUsize,
}

async fn agent(
    c: Arc<Controller>,
    token: String,
    n: usize,
    domains: usize,
    hold: Duration,
    seen: Arc<Seen>,
) -> anyhow::Result<()> {
    let host = format!("sim{n:04}");
    let names = (0..domains)
        .map(|k| sim::domain(format!("d{n:04}-{k}.load")))
        .collect();
    let session = sim::connect(&c, token, &host, names).await?;
    let mine = Arc::new(AtomicUsize::new(0));
    session
        .serve(|j, tx| {
            seen.arrivals
                .lock()
                .unwrap()
                .insert(j.job_id.clone(), unix_now());
            let now = seen.running.fetch_add(1, Ordering::SeqCst) + 1;
            seen.peak.fetch_max(now, Ordering::SeqCst);
            let here = mine.fetch_add(1, Ordering::SeqCst) + 1;
            seen.peak_per_agent.fetch_max(here, Ordering::SeqCst);
            let (tx, seen, mine) = (tx.clone(), seen.clone(), mine.clone());
            tokio::spawn(async move {
                tokio::time::sleep(hold).await;
                // Counted free before the controller hears of it, so a job
                // it hands out next never overlaps this one here.
                mine.fetch_sub(1, Ordering::SeqCst);
                seen.running.fetch_sub(1, Ordering::SeqCst);
                let _ = tx.send(sim::failed(j.job_id)).await;
                seen.done.fetch_add(1, Ordering::SeqCst);
            });
        })
        .await
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let num = |i: usize, default: u64| {
        args.get(i)
            .map(|a| a.parse::<u64>().expect("a number"))
            .unwrap_or(default)
    };
    let n = num(0, 500) as usize;
    let domains = num(1, 5) as usize;
    let hold = Duration::from_secs(num(2, 5));
    let splay = args.get(3).cloned().unwrap_or_else(|| "2m".into());
    let total = n * domains;
    std::env::set_var("CAIRN_CONTROLLER_LOG", "warn");
    let c = Cluster::start(ClusterOptions {
        heartbeat_seconds: 15,
        scheduler: Some(format!(
            "agent_jobs = {AGENT_JOBS}\nfleet_jobs = {FLEET_JOBS}\nmaintenance = \"0 5 1 1 *\"\n"
        )),
        ..Default::default()
    });
    let pid = c.controller_pid();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let _g = rt.enter();
    let (mut adm, controller) = rt.block_on(sim::admin(&c))?;
    let seen = Arc::new(Seen::default());
    let shared = Arc::new(controller);
    sim::spawn_agents(&rt, &mut adm, n, |i, token| {
        agent(shared.clone(), token, i, domains, hold, seen.clone())
    })?;
    rt.block_on(sim::all_online(&mut adm, n, Duration::from_secs(600)))?;

    // One cron minute for the whole fleet, far enough ahead that the
    // scheduler has seen every domain before it comes.
    let fire = Utc::now() + chrono::Duration::seconds(75);
    let policy = format!(
        "name = \"load\"\ntimezone = \"UTC\"\nsplay = \"{splay}\"\ndatabase = false\nretries = 0\n\
         [schedule]\nfull = \"{} {} * * *\"\n",
        fire.minute(),
        fire.hour()
    );
    rt.block_on(adm.apply_policy(admin::ApplyPolicyRequest {
        document: policy,
        dry_run: false,
    }))?;
    let occurrence = fire.with_second(0).unwrap().timestamp() as f64;
    while unix_now() < occurrence - 2.0 {
        std::thread::sleep(Duration::from_millis(200));
    }
    let (cpu0, _) = proc_stat(pid);
    let t0 = Instant::now();
    let mut peak_rss = 0;
    let limit = Duration::from_secs(3600);
    while seen.done.load(Ordering::SeqCst) < total {
        anyhow::ensure!(
            t0.elapsed() < limit,
            "only {} of {total} jobs finished",
            seen.done.load(Ordering::SeqCst)
        );
        peak_rss = peak_rss.max(proc_stat(pid).1);
        std::thread::sleep(Duration::from_millis(500));
    }
    let (cpu1, rss_end) = proc_stat(pid);
    let busy = t0.elapsed();
    let cpu = (cpu1 - cpu0) as f64 / sim::TICKS_PER_SECOND;

    let jobs = rt
        .block_on(adm.list_jobs(admin::ListJobsRequest::default()))?
        .into_inner()
        .jobs;
    let arrivals = seen.arrivals.lock().unwrap();
    let scheduled: Vec<&admin::JobInfo> = jobs.iter().filter(|j| j.trigger == "schedule").collect();
    let per_domain: std::collections::HashSet<&str> =
        scheduled.iter().map(|j| j.domain.as_str()).collect();
    // Start offsets: when the scheduler queued each run, after its cron time.
    let mut offsets: Vec<i64> = scheduled
        .iter()
        .map(|j| j.created_at - j.scheduled_for)
        .collect();
    offsets.sort();
    // Queue wait: from queued to in the agent's hands.
    let mut waits: Vec<f64> = scheduled
        .iter()
        .filter_map(|j| Some(arrivals.get(&j.job_id)? - j.created_at as f64))
        .map(|w| w.max(0.0))
        .collect();
    waits.sort_by(f64::total_cmp);
    let last = arrivals.values().cloned().fold(0.0, f64::max);
    anyhow::ensure!(!waits.is_empty(), "no scheduled job reached an agent");

    println!(
        "scheduler load: {n} simulated agents × {domains} domains = {total} domains on one cron minute, \
         splay {splay}, each job held {}s; agent_jobs {AGENT_JOBS}, fleet_jobs {FLEET_JOBS}",
        hold.as_secs()
    );
    println!(
        "  runs queued {} (domains {}), reached agents {}, finished {}",
        scheduled.len(),
        per_domain.len(),
        arrivals.len(),
        seen.done.load(Ordering::SeqCst)
    );
    println!(
        "  start offsets after the cron time: min {} s  p50 {} s  max {} s",
        offsets[0],
        pct(&offsets, 0.5),
        offsets.last().unwrap()
    );
    println!(
        "  queue wait (queued → at agent): p50 {:.1} s  p99 {:.1} s  max {:.1} s",
        pct(&waits, 0.5),
        pct(&waits, 0.99),
        waits.last().unwrap()
    );
    println!(
        "  peak concurrent jobs: fleet {} (cap {FLEET_JOBS}), one agent {} (cap {AGENT_JOBS})",
        seen.peak.load(Ordering::SeqCst),
        seen.peak_per_agent.load(Ordering::SeqCst)
    );
    println!(
        "  last job handed out {:.0} s after the cron time; ideal at the cap {:.0} s",
        last - occurrence,
        (total as f64 / FLEET_JOBS as f64).ceil() * hold.as_secs_f64()
    );
    println!(
        "  controller CPU {:.1} s over {:.0} s ({:.1} % of one core); RSS peak {:.1} MB, end {:.1} MB",
        cpu,
        busy.as_secs_f64(),
        cpu / busy.as_secs_f64() * 100.0,
        peak_rss as f64 / 1024.0,
        rss_end as f64 / 1024.0
    );
    drop(c);
    Ok(())
}
