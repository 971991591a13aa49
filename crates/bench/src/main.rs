//! `doorman-bench`: what Doorman costs against the direct path, measured in one run.
//!
//! Starts two `bench-echo` upstreams (2026-07-28 stateless and 2025-11-25 stateful) and two
//! Doormen in front of them (local mode; accounts mode, where the bench signs in once through the
//! real authorization code flow and sends the access token on every call), then drives
//! `tools/call` directly and through each Doorman with the same load generator, alternating the
//! three in rounds so machine drift hits all alike. Also measures Doorman's resident memory with
//! idle stateful sessions and its start-up time to ready.
//! Writes `latest.md` and `latest.json` into the output directory; `bench/chart.py` draws the PNG.

mod load;
mod procs;
mod signin;

use std::{path::PathBuf, time::Duration};

use clap::Parser;
use serde_json::{Value, json};

use load::{Stats, Target};

#[derive(Parser)]
#[command(about = "Benchmark Doorman against the direct path")]
struct Args {
    /// Seconds of load per round and side.
    #[arg(long, default_value_t = 4.0)]
    seconds: f64,
    /// Rounds per configuration (direct, local mode and signed in alternate inside each).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Concurrency levels.
    #[arg(long, value_delimiter = ',', default_value = "1,16,64")]
    concurrency: Vec<usize>,
    /// Idle session counts for the memory measurement.
    #[arg(long, value_delimiter = ',', default_value = "10000,100000")]
    sessions: Vec<usize>,
    /// A few seconds in all: checks the benchmark works, measures nothing worth reading.
    #[arg(long)]
    smoke: bool,
    /// Where results go.
    #[arg(long, default_value = "bench/results")]
    out: PathBuf,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = Args::parse();
    if args.smoke {
        args.seconds = 0.3;
        args.rounds = 1;
        args.concurrency = vec![1, 4];
        args.sessions = vec![200];
    }
    let bins = procs::Binaries::beside_this_executable()?;
    let stateless = procs::start_echo(&bins, "stateless").await?;
    let stateful = procs::start_echo(&bins, "stateful").await?;
    let upstreams = [("modern", stateless.port), ("legacy", stateful.port)];
    let local = procs::start_doorman(&bins, &upstreams, procs::SignIn::Local).await?;
    let accounts = procs::start_doorman(&bins, &upstreams, procs::SignIn::Accounts).await?;
    let password = signin::random_token(18)?;
    procs::add_person(&bins, &accounts, "bench", &password).await?;
    let token = signin::access_token(&accounts.base_url(), "bench", &password).await?;
    // The sides measured against direct, in the order they run inside each round.
    let sides = [
        ("local", &local, None),
        ("signed in (token check)", &accounts, Some(token)),
    ];

    let mut rows = Vec::new();
    for (generation, upstream, tool) in [
        ("2026-07-28", &stateless, "modern_echo"),
        ("2025-11-25", &stateful, "legacy_echo"),
    ] {
        let direct = Target {
            url: upstream.mcp_url(),
            tool: "echo".into(),
            generation,
            bearer: None,
        };
        let through: Vec<Target> = sides
            .iter()
            .map(|(_, doorman, bearer)| Target {
                url: doorman.mcp_url(),
                tool: tool.into(),
                generation,
                bearer: bearer.clone(),
            })
            .collect();
        let seconds = Duration::from_secs_f64(args.seconds);
        for &c in &args.concurrency {
            let mut d = Stats::default();
            let mut t: Vec<Stats> = through.iter().map(|_| Stats::default()).collect();
            for _ in 0..args.rounds {
                d.merge(load::run(&direct, c, seconds).await?);
                for (stats, target) in t.iter_mut().zip(&through) {
                    stats.merge(load::run(target, c, seconds).await?);
                }
            }
            let mut line = format!("{generation} c={c}: direct {:.0} req/s", d.rps());
            for ((mode, _, _), stats) in sides.iter().zip(&t) {
                line.push_str(&format!(", {mode} {:.0} req/s", stats.rps()));
            }
            eprintln!("{line}");
            // One row per Doorman configuration, each against the direct figures measured in
            // the same rounds.
            let direct_summary = d.summary();
            for ((mode, _, _), mut stats) in sides.iter().zip(t) {
                rows.push(json!({
                    "generation": generation, "concurrency": c, "mode": mode,
                    "direct": direct_summary, "doorman": stats.summary(),
                    "throughput_ratio": stats.rps() / d.rps(),
                    "added_p50_us": stats.percentile(50.0) as i64 - d.percentile(50.0) as i64,
                }));
            }
        }
    }
    drop((local, accounts));

    let memory = procs::measure_memory(&bins, &args.sessions).await?;
    let startup = procs::measure_startup(&bins, if args.smoke { 1 } else { 5 }).await?;
    let report = json!({ "rows": rows, "memory": memory, "startup_ms": startup, "smoke": args.smoke,
        "seconds_per_round": args.seconds, "rounds": args.rounds });
    std::fs::create_dir_all(&args.out)?;
    std::fs::write(
        args.out.join("latest.json"),
        serde_json::to_string_pretty(&report)?,
    )?;
    let md = markdown(&report);
    std::fs::write(args.out.join("latest.md"), &md)?;
    println!("{md}");
    Ok(())
}

fn markdown(r: &Value) -> String {
    let mut s = String::from(
        "## Throughput and latency: `tools/call` on `echo`, direct vs through Doorman\n\n\
         Modes: `local` (no sign-in), `signed in (token check)` (accounts mode: a bearer access \
         token on every request). For each protocol and concurrency, direct and both modes ran \
         alternately in the same rounds; each ratio is to that direct.\n\n",
    );
    s.push_str("| protocol | conc. | mode | direct req/s | Doorman req/s | ratio | direct p50/p90/p99 µs | Doorman p50/p90/p99 µs | added p50 µs |\n");
    s.push_str("|---|---:|---|---:|---:|---:|---|---|---:|\n");
    for row in r["rows"].as_array().into_iter().flatten() {
        let lat = |side: &str| {
            format!(
                "{}/{}/{}",
                row[side]["p50_us"], row[side]["p90_us"], row[side]["p99_us"]
            )
        };
        s.push_str(&format!(
            "| {} | {} | {} | {:.0} | {:.0} | {:.0}% | {} | {} | {} |\n",
            row["generation"].as_str().unwrap_or(""),
            row["concurrency"],
            row["mode"].as_str().unwrap_or(""),
            row["direct"]["rps"].as_f64().unwrap_or(0.0),
            row["doorman"]["rps"].as_f64().unwrap_or(0.0),
            row["throughput_ratio"].as_f64().unwrap_or(0.0) * 100.0,
            lat("direct"),
            lat("doorman"),
            row["added_p50_us"],
        ));
    }
    s.push_str("\n## Memory: Doorman's resident size with idle stateful sessions\n\n| sessions | RSS MiB | bytes per session |\n|---:|---:|---:|\n");
    for m in r["memory"].as_array().into_iter().flatten() {
        s.push_str(&format!(
            "| {} | {:.1} | {} |\n",
            m["sessions"],
            m["rss_bytes"].as_f64().unwrap_or(0.0) / 1048576.0,
            m["bytes_per_session"]
                .as_i64()
                .map_or("—".into(), |b| b.to_string()),
        ));
    }
    s.push_str(&format!(
        "\n## Start-up to ready\n\nmedian {} ms (fresh data directory, `/healthz` answering)\n",
        r["startup_ms"]
    ));
    s
}
