//! One node at scale (`doorman-bench scale`, and the last part of a full run): a signed-in
//! Doorman on SQLite holding 1,000,000 stored connections and 100,000 live stateful sessions,
//! its resident memory per idle session, and its signed-in `tools/call` throughput and CPU per
//! call at c=16 on both generations while they exist, against an empty node of the same
//! configuration measured in the same rounds.
//!
//! - Both nodes: accounts mode as the signed-in rows (durable audit), in front of the two echo
//!   servers, with `server.max_sessions_per_person = 0` (no cap: every session is the bench
//!   person's) and the ten resources of the vault measurement configured.
//! - Connections: the vault measurement's bulk load (`vault::populate`: people × 10 resources,
//!   tokens sealed under the node's own key ring) into the running node's database, counted
//!   afterwards.
//! - Sessions: `initialize` (2025-11-25) with the person's access token, 16 at a time; they
//!   are checked live with the node's `doorman_live_sessions` before and after the load.
//! - Memory per session: the node's `VmRSS` after the sessions minus before, divided by them
//!   (the sessions' share of SQLite's page cache included).
//! - Throughput: the two nodes take turns in each round, each going first in every other one.

use std::time::{Duration, Instant};

use doorman::{config::Config, crypto::KeyRing};
use serde_json::{Value, json};

use crate::{
    load::{self, Round, Stats, Target},
    procs::{self, Binaries, Running, SignIn, UpstreamSpec},
    signin, vault,
};

/// How big, and how long the load.
pub struct Plan {
    pub sessions: usize,
    pub connections: usize,
    pub seconds: f64,
    pub rounds: usize,
    pub concurrency: usize,
    /// Least time between the sign-in and the resident size the sessions are measured from:
    /// the password check runs on one of tokio's blocking threads, which keeps the hash's
    /// 19 MiB until it exits after 10 s idle (the bulk load usually takes longer anyway).
    pub settle_after_sign_in: Duration,
}

impl Plan {
    pub fn full(sessions: usize, connections: usize, seconds: f64, rounds: usize) -> Self {
        Self {
            sessions,
            connections,
            seconds,
            rounds,
            concurrency: 16,
            settle_after_sign_in: Duration::from_secs(11),
        }
    }

    pub fn smoke() -> Self {
        Self {
            sessions: 200,
            connections: 1_000,
            seconds: 0.3,
            rounds: 1,
            concurrency: 16,
            settle_after_sign_in: Duration::ZERO,
        }
    }
}

/// Lets the allocator and SQLite settle before a resident size is read.
const SETTLE: Duration = Duration::from_millis(500);

pub async fn measure(bins: &Binaries, plan: &Plan) -> anyhow::Result<Value> {
    let people = plan.connections / vault::RESOURCES_PER_PERSON;
    anyhow::ensure!(
        people > 0 && plan.sessions > 0,
        "the scale measurement needs at least {} connections and one session",
        vault::RESOURCES_PER_PERSON
    );
    let echo_token = format!("bench-resource-{}", signin::random_token(24)?);
    let stateless = procs::start_echo(bins, "stateless", &echo_token).await?;
    let stateful = procs::start_echo(bins, "stateful", &echo_token).await?;
    let upstreams = [
        UpstreamSpec {
            name: "modern",
            port: stateless.port,
            tied: false,
        },
        UpstreamSpec {
            name: "legacy",
            port: stateful.port,
            tied: false,
        },
    ];
    let resources = vault::resources_toml();
    let node = || {
        procs::start_doorman_with(
            bins,
            &upstreams,
            SignIn::Accounts {
                durable_audit: true,
            },
            None,
            "max_sessions_per_person = 0\n",
            &resources,
        )
    };
    let (empty, loaded) = (node().await?, node().await?);
    let password = signin::random_token(18)?;
    let mut tokens = Vec::new();
    for n in [&empty, &loaded] {
        procs::add_person(bins, n, "bench", &password).await?;
        tokens.push(signin::access_token(&n.base_url(), "bench", &password).await?);
    }
    let signed_in = Instant::now();
    tokio::time::sleep(SETTLE).await;
    let rss_start = procs::rss_bytes(loaded.pid())?;

    // The stored connections, into the running node's database.
    let config = Config::load(Some(&loaded.config_path()?)).map_err(|e| anyhow::anyhow!("{e}"))?;
    let (ring, _, _) = KeyRing::load(&config.key_ring_path())?;
    let started = Instant::now();
    vault::populate(&config.database_url(), &ring, people).await?;
    let populate_seconds = started.elapsed().as_secs_f64();
    let stored = stored_connections(&config.database_url()).await?;
    anyhow::ensure!(
        stored >= people * vault::RESOURCES_PER_PERSON,
        "{stored} connections stored, expected {}",
        people * vault::RESOURCES_PER_PERSON
    );
    let files_after_populate = database_files(&loaded)?;
    eprintln!(
        "scale: {stored} connections stored in {populate_seconds:.1} s; {files_after_populate}"
    );

    // The live sessions.
    tokio::time::sleep(
        SETTLE.max(
            plan.settle_after_sign_in
                .saturating_sub(signed_in.elapsed()),
        ),
    )
    .await;
    let rss_before = procs::rss_bytes(loaded.pid())?;
    let started = Instant::now();
    procs::open_sessions(&loaded.mcp_url(), plan.sessions, Some(&tokens[1])).await?;
    let sessions_seconds = started.elapsed().as_secs_f64();
    tokio::time::sleep(SETTLE).await;
    let rss_after = procs::rss_bytes(loaded.pid())?;
    let live_before = live_sessions(&loaded).await?;
    let files_after_sessions = database_files(&loaded)?;
    anyhow::ensure!(
        live_before >= plan.sessions as u64,
        "the node counts {live_before} live sessions after {} were opened",
        plan.sessions
    );
    let bytes_per_session = rss_after.saturating_sub(rss_before) / plan.sessions as u64;
    eprintln!(
        "scale: {live_before} live sessions opened in {sessions_seconds:.1} s; RSS {:.1} → {:.1} MiB, {bytes_per_session} bytes per session; {files_after_sessions}",
        rss_before as f64 / 1048576.0,
        rss_after as f64 / 1048576.0
    );

    // The throughput of both nodes, alternating in the same rounds.
    let nodes = [
        ("empty", &empty, &tokens[0]),
        ("loaded", &loaded, &tokens[1]),
    ];
    let mut rows = Vec::new();
    for (generation, upstream) in [("2026-07-28", "modern"), ("2025-11-25", "legacy")] {
        let mut stats = [Stats::default(), Stats::default()];
        for round in 0..plan.rounds {
            // Each node goes first in every other round, so whatever the order costs (the
            // machine's other work, the echo servers' state) falls on both alike.
            let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
            for i in order {
                let (_, node, token) = nodes[i];
                let target = Target {
                    url: node.mcp_url(),
                    tool: format!("{upstream}_echo"),
                    generation,
                    bearer: Some(token.to_string()),
                };
                let cpu = || node.cpu_time();
                let round = Round::new(plan.concurrency, Duration::from_secs_f64(plan.seconds))
                    .with_cpu(&cpu);
                stats[i].merge(load::run(&target, &round).await?);
            }
        }
        let empty_rps = stats[0].rps();
        for ((name, _, _), mut s) in nodes.iter().zip(stats) {
            eprintln!(
                "scale: {generation} c={} {name} node: {:.0} req/s, {:.0} µs CPU per call",
                plan.concurrency,
                s.rps(),
                s.cpu_us_per_call()
            );
            rows.push(json!({
                "generation": generation, "node": name, "concurrency": plan.concurrency,
                "through": s.summary(), "gateway_cpu_us_per_call": s.cpu_us_per_call(),
                "throughput_ratio_to_empty": s.rps() / empty_rps,
            }));
        }
    }
    let files_after_load = database_files(&loaded)?;
    let empty_files_after_load = database_files(&empty)?;
    eprintln!(
        "scale: after the load: loaded node {files_after_load}, empty node {empty_files_after_load}"
    );
    let live_after = live_sessions(&loaded).await?;
    anyhow::ensure!(
        live_after >= plan.sessions as u64,
        "the node counts {live_after} live sessions after the load, {} were opened",
        plan.sessions
    );
    Ok(json!({
        "sessions": plan.sessions, "connections": stored, "people": people,
        "populate_seconds": populate_seconds, "sessions_seconds": sessions_seconds,
        "rss_start_bytes": rss_start, "rss_before_sessions_bytes": rss_before,
        "rss_after_sessions_bytes": rss_after, "bytes_per_session": bytes_per_session,
        "live_sessions_before_load": live_before, "live_sessions_after_load": live_after,
        "seconds_per_round": plan.seconds, "rounds": plan.rounds, "rows": rows,
        "database_after_populate": files_after_populate,
        "database_after_sessions": files_after_sessions, "database_after_load": files_after_load,
        "empty_node_database_after_load": empty_files_after_load,
    }))
}

/// The sizes of a node's SQLite database and its write-ahead log (which keeps growing while a
/// checkpoint cannot finish, and every page read then searches it).
fn database_files(node: &Running) -> anyhow::Result<Value> {
    let config = Config::load(Some(&node.config_path()?)).map_err(|e| anyhow::anyhow!("{e}"))?;
    let db = config.server.data_dir.join("doorman.db");
    let size = |p: &std::path::Path| std::fs::metadata(p).map_or(0, |m| m.len());
    Ok(json!({ "db_bytes": size(&db), "wal_bytes": size(&db.with_extension("db-wal")) }))
}

/// Rows in the `connections` table of the node's database.
async fn stored_connections(url: &str) -> anyhow::Result<usize> {
    let pool = sqlx::SqlitePool::connect(url).await?;
    let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM connections")
        .fetch_one(&pool)
        .await?;
    pool.close().await;
    Ok(n as usize)
}

/// The node's `doorman_live_sessions` gauge (`GET /metrics`).
async fn live_sessions(node: &Running) -> anyhow::Result<u64> {
    let text = reqwest::get(format!("{}/metrics", node.base_url()))
        .await?
        .error_for_status()?
        .text()
        .await?;
    let value = text
        .lines()
        .find_map(|l| l.strip_prefix("doorman_live_sessions "))
        .ok_or_else(|| anyhow::anyhow!("no doorman_live_sessions in /metrics"))?;
    Ok(value.trim().parse::<f64>()? as u64)
}

/// The scale section of `latest.md`.
pub fn markdown(v: &Value) -> String {
    if v.is_null() {
        return String::new();
    }
    let mib = |k: &str| v[k].as_f64().unwrap_or(0.0) / 1048576.0;
    let files = |k: &str| {
        let f = |b: &str| v[k][b].as_f64().unwrap_or(0.0) / 1048576.0;
        format!("{:.0} MiB ({:.0} MiB)", f("db_bytes"), f("wal_bytes"))
    };
    let mut s = format!(
        "\n## Scale: one node with {} stored connections and {} live sessions\n\n\
         A signed-in Doorman (SQLite, durable audit, `max_sessions_per_person = 0`) with {} \
         stored connections ({} people × {} resources, bulk-loaded in {:.0} s) and {} idle \
         2025-11-25 sessions of the signed-in person (opened in {:.0} s; \
         `doorman_live_sessions` {} before the load and {} after). Resident size: {:.1} MiB at \
         start, {:.1} MiB with the connections stored, {:.1} MiB with the sessions: **{} bytes \
         per idle session**. Its SQLite database (and write-ahead log): {} after the bulk load, \
         {} with the sessions, {} after the load below; the empty node's after the load: {}.\n\n\
         Signed-in `tools/call` at c={}, the loaded node and an empty one of the same \
         configuration taking turns in {} rounds of {} s (each first in every other round):\n\n\
         | protocol | node | req/s | p50/p90/p99 µs | gateway CPU µs/call | req/s vs empty |\n\
         |---|---|---:|---|---:|---:|\n",
        v["connections"],
        v["sessions"],
        v["connections"],
        v["people"],
        vault::RESOURCES_PER_PERSON,
        v["populate_seconds"].as_f64().unwrap_or(0.0),
        v["sessions"],
        v["sessions_seconds"].as_f64().unwrap_or(0.0),
        v["live_sessions_before_load"],
        v["live_sessions_after_load"],
        mib("rss_start_bytes"),
        mib("rss_before_sessions_bytes"),
        mib("rss_after_sessions_bytes"),
        v["bytes_per_session"],
        files("database_after_populate"),
        files("database_after_sessions"),
        files("database_after_load"),
        files("empty_node_database_after_load"),
        v["rows"][0]["concurrency"],
        v["rounds"],
        v["seconds_per_round"],
    );
    for r in v["rows"].as_array().into_iter().flatten() {
        let t = &r["through"];
        s.push_str(&format!(
            "| {} | {} | {:.0} | {}/{}/{} | {:.0} | {:.0}% |\n",
            r["generation"].as_str().unwrap_or(""),
            r["node"].as_str().unwrap_or(""),
            t["rps"].as_f64().unwrap_or(0.0),
            t["p50_us"],
            t["p90_us"],
            t["p99_us"],
            r["gateway_cpu_us_per_call"].as_f64().unwrap_or(0.0),
            r["throughput_ratio_to_empty"].as_f64().unwrap_or(0.0) * 100.0,
        ));
    }
    s
}
