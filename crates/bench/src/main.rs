//! `doorman-bench`: what Doorman costs against the direct path, measured in one run.
//!
//! Starts two `bench-echo` upstreams (2026-07-28 stateless and 2025-11-25 stateful) and two
//! Doormen in front of them (local mode; accounts mode, where the bench signs in once through the
//! real authorization code flow and sends the access token on every call, and where a second pair
//! of upstream entries, on the same two echo servers, is tied to a resource the signed-in person
//! has a stored connection to), then drives `tools/call` directly and through each configuration
//! with the same load generator, alternating them in rounds so machine drift hits all alike.
//! Also counts the instructions each gateway spends per call with callgrind (`callgrind.rs`;
//! alone: `doorman-bench instructions`), measures Doorman's resident memory with idle stateful
//! sessions, its start-up time to ready, and vault lookups with many stored connections
//! (`vault.rs`; alone: `doorman-bench vault`). With `--peers`, other MCP gateways are rows of
//! the same table (`peers.rs`). Last, one node at scale: 1,000,000 stored connections and
//! 100,000 live sessions, and its throughput while they exist (`scale.rs`; alone:
//! `doorman-bench scale`).
//! Writes `latest.md` and `latest.json` into the output directory; `bench/chart.py` draws the PNG.

mod callgrind;
mod layer2;
mod load;
mod peers;
mod procs;
mod scale;
mod signin;
mod vault;

use std::{path::PathBuf, time::Duration};

use clap::{Parser, Subcommand};
use serde_json::{Value, json};

use load::{Round, Stats, Target};
use procs::UpstreamSpec;

#[derive(Parser)]
#[command(about = "Benchmark Doorman against the direct path")]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,
    /// Seconds of load per round and side.
    #[arg(long, default_value_t = 4.0)]
    seconds: f64,
    /// Rounds per configuration (direct and the Doorman configurations alternate inside each).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Concurrency levels.
    #[arg(long, value_delimiter = ',', default_value = "1,16,64")]
    concurrency: Vec<usize>,
    /// Idle session counts for the memory measurement.
    #[arg(long, value_delimiter = ',', default_value = "10000,100000")]
    sessions: Vec<usize>,
    /// Stored connections for the vault measurement.
    #[arg(long, default_value_t = 1_000_000)]
    vault_connections: usize,
    /// PostgreSQL server for the vault measurement (a fresh database is created and dropped);
    /// without it, SQLite only. `bench/run` starts one with `scripts/pg`.
    #[arg(long, env = "DOORMAN_BENCH_POSTGRES_URL")]
    postgres: Option<String>,
    /// A few seconds in all: checks the benchmark works, measures nothing worth reading.
    #[arg(long)]
    smoke: bool,
    /// Only the throughput rows (no memory, start-up or vault measurement): for working on the
    /// request path, e.g. `--throughput-only --concurrency 16 --generations 2026-07-28 --out /tmp/b`.
    #[arg(long)]
    throughput_only: bool,
    /// Protocol generations measured (2026-07-28, 2025-11-25).
    #[arg(long, value_delimiter = ',', default_value = "2026-07-28,2025-11-25")]
    generations: Vec<String>,
    /// Other gateways as rows of the throughput table: ContextForge and LiteLLM, installed and
    /// started by `bench/peers/start-*.sh` (about 1 GB of Python on first use).
    #[arg(long)]
    peers: bool,
    /// Seconds of load per round for each peer (they serve tens of calls a second).
    #[arg(long, default_value_t = 10.0)]
    peer_seconds: f64,
    /// Live stateful sessions on the node at scale.
    #[arg(long, default_value_t = 100_000)]
    scale_sessions: usize,
    /// Stored connections on the node at scale.
    #[arg(long, default_value_t = 1_000_000)]
    scale_connections: usize,
    /// Where results go.
    #[arg(long, default_value = "bench/results")]
    out: PathBuf,
}

#[derive(Subcommand)]
enum Command {
    /// Only the instruction counts (callgrind): each gateway's instructions per call, with its
    /// ratio to the relay's. Prints its Markdown table and JSON.
    Instructions {
        /// Calls counted per mode and generation.
        #[arg(long, default_value_t = 2000)]
        calls: usize,
        /// Protocol generations measured (2026-07-28, 2025-11-25).
        #[arg(long, value_delimiter = ',', default_value = "2026-07-28,2025-11-25")]
        generations: Vec<String>,
    },
    /// Only the vault measurement: lookups through the store and through the vault's cache,
    /// on SQLite and (with --postgres) PostgreSQL. Prints its Markdown table and JSON.
    Vault {
        /// Stored connections (people × 10 resources).
        #[arg(long, default_value_t = 1_000_000)]
        connections: usize,
        /// PostgreSQL server (a fresh database is created and dropped); without it, SQLite only.
        #[arg(long, env = "DOORMAN_BENCH_POSTGRES_URL")]
        postgres: Option<String>,
        /// Smoke-test sizes (1,000 connections, a few hundred lookups).
        #[arg(long)]
        smoke: bool,
    },
    /// Only the node at scale: stored connections and live sessions on one Doorman, its memory
    /// per session, and its signed-in throughput at c=16 against an empty node. Prints its
    /// Markdown and JSON.
    Scale {
        /// Live stateful (2025-11-25) sessions.
        #[arg(long, default_value_t = 100_000)]
        sessions: usize,
        /// Stored connections (people × 10 resources).
        #[arg(long, default_value_t = 1_000_000)]
        connections: usize,
        /// Seconds of load per round and node.
        #[arg(long, default_value_t = 4.0)]
        seconds: f64,
        /// Rounds (the empty and the loaded node alternate inside each).
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// Smoke-test sizes (200 sessions, 1,000 connections, rounds of 0.3 s).
        #[arg(long)]
        smoke: bool,
    },
}

/// One way of reaching the echo tool other than directly: through Doorman, or through the bare
/// relay (one per echo server, in the order of the generations).
struct Side<'a> {
    mode: &'static str,
    via: Via<'a>,
    bearer: Option<String>,
    /// Prefix of the upstream names (`vault_`: the entries tied to the resource).
    upstream_prefix: &'static str,
}

enum Via<'a> {
    Doorman(&'a procs::Running),
    Relay([&'a procs::Running; 2]),
}

impl Side<'_> {
    /// The process doing the gateway's work for generation `g` (0: 2026-07-28, 1: 2025-11-25).
    fn process(&self, g: usize) -> &procs::Running {
        match &self.via {
            Via::Doorman(d) => d,
            Via::Relay(r) => r[g],
        }
    }
}

/// The reference row's mode name.
pub(crate) const RELAY: &str = "bare HTTP relay (reference)";

/// The layer-2 configuration's mode name.
pub(crate) const LAYER2: &str = "signed in + layer 2 (vault)";
/// Signed in, the answer not waiting for its audit record (`[audit] durable = false`).
pub(crate) const NOT_DURABLE: &str = "signed in, audit not durable";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = Args::parse();
    if let Some(Command::Vault {
        connections,
        postgres,
        smoke,
    }) = &args.command
    {
        let plan = if *smoke {
            vault::Plan::smoke()
        } else {
            vault::Plan::full(*connections)
        };
        let v = vault::measure(&plan, postgres.as_deref()).await?;
        println!("{}", vault::markdown(&v));
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    if let Some(Command::Scale {
        sessions,
        connections,
        seconds,
        rounds,
        smoke,
    }) = &args.command
    {
        let plan = if *smoke {
            scale::Plan::smoke()
        } else {
            scale::Plan::full(*sessions, *connections, *seconds, *rounds)
        };
        let v = scale::measure(&procs::Binaries::beside_this_executable()?, &plan).await?;
        println!("{}", scale::markdown(&v));
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    if let Some(Command::Instructions { calls, generations }) = &args.command {
        let bins = procs::Binaries::beside_this_executable()?;
        let token = format!("bench-resource-{}", signin::random_token(24)?);
        let stateless = procs::start_echo(&bins, "stateless", &token).await?;
        let stateful = procs::start_echo(&bins, "stateful", &token).await?;
        let plan = callgrind::Plan {
            calls: *calls,
            ..callgrind::Plan::full()
        };
        let v =
            callgrind::measure(&bins, [&stateless, &stateful], &token, generations, &plan).await?;
        println!("{}", callgrind::markdown(&v));
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    if args.smoke {
        args.seconds = 0.3;
        args.rounds = 1;
        args.concurrency = vec![1, 4];
        args.sessions = vec![200];
    }
    let bins = procs::Binaries::beside_this_executable()?;
    // The token the person's layer-2 connection holds; the echo servers count who sends it.
    let resource_token = format!("bench-resource-{}", signin::random_token(24)?);
    let stateless = procs::start_echo(&bins, "stateless", &resource_token).await?;
    let stateful = procs::start_echo(&bins, "stateful", &resource_token).await?;
    let relays = [
        procs::start_relay(&bins, &stateless).await?,
        procs::start_relay(&bins, &stateful).await?,
    ];
    let plain = |name, port| UpstreamSpec {
        name,
        port,
        tied: false,
    };
    let tied = |name, port| UpstreamSpec {
        name,
        port,
        tied: true,
    };
    let local = procs::start_doorman(
        &bins,
        &[
            plain("modern", stateless.port),
            plain("legacy", stateful.port),
        ],
        procs::SignIn::Local,
    )
    .await?;
    let accounts = procs::start_doorman(
        &bins,
        &[
            plain("modern", stateless.port),
            plain("legacy", stateful.port),
            tied("vault_modern", stateless.port),
            tied("vault_legacy", stateful.port),
        ],
        procs::SignIn::Accounts {
            durable_audit: true,
        },
    )
    .await?;
    // The same without waiting for audit records: what `[audit] durable` costs.
    let undurable = procs::start_doorman(
        &bins,
        &[
            plain("modern", stateless.port),
            plain("legacy", stateful.port),
        ],
        procs::SignIn::Accounts {
            durable_audit: false,
        },
    )
    .await?;
    let password = signin::random_token(18)?;
    procs::add_person(&bins, &accounts, "bench", &password).await?;
    let token = signin::access_token(&accounts.base_url(), "bench", &password).await?;
    procs::add_person(&bins, &undurable, "bench", &password).await?;
    let undurable_token = signin::access_token(&undurable.base_url(), "bench", &password).await?;
    layer2::connect(&accounts, "bench", &resource_token).await?;
    // The sides measured against direct, in the order they run inside each round.
    let sides = [
        Side {
            mode: RELAY,
            via: Via::Relay([&relays[0], &relays[1]]),
            bearer: None,
            upstream_prefix: "",
        },
        Side {
            mode: "local",
            via: Via::Doorman(&local),
            bearer: None,
            upstream_prefix: "",
        },
        Side {
            mode: "signed in (token check)",
            via: Via::Doorman(&accounts),
            bearer: Some(token.clone()),
            upstream_prefix: "",
        },
        Side {
            mode: NOT_DURABLE,
            via: Via::Doorman(&undurable),
            bearer: Some(undurable_token),
            upstream_prefix: "",
        },
        Side {
            mode: LAYER2,
            via: Via::Doorman(&accounts),
            bearer: Some(token),
            upstream_prefix: "vault_",
        },
    ];

    let mut rows = Vec::new();
    // Each peer started, per generation: its configuration, or why it has no rows.
    let mut peer_notes = Vec::new();
    // Requests each echo server answered in the layer-2 rows (warm-up calls not counted).
    let mut layer2_requests = [0usize; 2];
    for (g, (generation, upstream, name)) in [
        ("2026-07-28", &stateless, "modern"),
        ("2025-11-25", &stateful, "legacy"),
    ]
    .into_iter()
    .enumerate()
    .filter(|(_, (generation, _, _))| args.generations.iter().any(|g| g == generation))
    {
        let direct = Target {
            url: upstream.mcp_url(),
            tool: "echo".into(),
            generation,
            bearer: None,
        };
        let through: Vec<Target> = sides
            .iter()
            .map(|side| Target {
                url: match side.via {
                    Via::Doorman(d) => d.mcp_url(),
                    Via::Relay(r) => r[g].mcp_url(),
                },
                tool: match side.via {
                    Via::Doorman(_) => format!("{}{name}_echo", side.upstream_prefix),
                    Via::Relay(_) => "echo".into(),
                },
                generation,
                bearer: side.bearer.clone(),
            })
            .collect();
        let seconds = Duration::from_secs_f64(args.seconds);
        let peer_seconds = Duration::from_secs_f64(args.peer_seconds);
        let mut peers = if args.peers {
            peers::start(generation, [&stateless.mcp_url(), &stateful.mcp_url()]).await
        } else {
            Vec::new()
        };
        for &c in &args.concurrency {
            let mut d = Stats::default();
            let mut t: Vec<Stats> = through.iter().map(|_| Stats::default()).collect();
            let mut p: Vec<Stats> = peers.iter().map(|_| Stats::default()).collect();
            for round in 0..args.rounds {
                d.merge(load::run(&direct, &Round::new(c, seconds)).await?);
                for (i, (stats, target)) in t.iter_mut().zip(&through).enumerate() {
                    // CPU time the gateway (Doorman, or the relay) used for the side's calls.
                    let cpu = || sides[i].process(g).cpu_time();
                    stats.merge(load::run(target, &Round::new(c, seconds).with_cpu(&cpu)).await?);
                }
                for (stats, peer) in p.iter_mut().zip(&mut peers) {
                    let Some(target) = peer.target().filter(|_| c <= peers::MAX_CONCURRENCY) else {
                        continue;
                    };
                    let cpu = || peer.cpu_time();
                    // One warm-up call per worker: at tens of calls a second five would take
                    // longer than the round.
                    let measured = Round {
                        warmup_calls: 1,
                        ..Round::new(c, peer_seconds).with_cpu(&cpu)
                    };
                    match load::run(&target, &measured).await {
                        Ok(s) => stats.merge(s),
                        Err(e) => peer.fail(format!("failed at c={c}, round {}: {e:#}", round + 1)),
                    }
                }
            }
            let mut line = format!("{generation} c={c}: direct {:.0} req/s", d.rps());
            for (side, stats) in sides.iter().zip(&t) {
                line.push_str(&format!(", {} {:.0} req/s", side.mode, stats.rps()));
            }
            for (peer, stats) in peers.iter().zip(&p).filter(|(_, s)| s.requests() > 0) {
                line.push_str(&format!(", {} {:.1} req/s", peer.mode(), stats.rps()));
            }
            eprintln!("{line}");
            // One row per configuration, each against the direct figures measured in the same
            // rounds.
            let (direct_summary, direct_rps) = (d.summary(), d.rps());
            let direct_p50 = d.percentile(50.0) as i64;
            let mut row = |mode: &str, stats: &mut Stats, peer: bool| {
                rows.push(json!({
                    "gateway_cpu_us_per_call": stats.cpu_us_per_call(),
                    "generation": generation, "concurrency": c, "mode": mode, "peer": peer,
                    "direct": direct_summary.clone(), "doorman": stats.summary(),
                    "throughput_ratio": stats.rps() / direct_rps,
                    "added_p50_us": stats.percentile(50.0) as i64 - direct_p50,
                }));
            };
            for (side, mut stats) in sides.iter().zip(t) {
                if side.mode == LAYER2 {
                    layer2_requests[g] += stats.requests();
                }
                row(side.mode, &mut stats, false);
            }
            // A peer that failed in a round has no row at this concurrency.
            for (peer, mut stats) in peers.iter().zip(p) {
                if peer.target().is_some() && stats.requests() > 0 {
                    row(&peer.mode(), &mut stats, true);
                }
            }
        }
        peer_notes.extend(peers.iter().map(peers::Peer::describe));
        // Stopped before the next generation's are started.
        drop(peers);
    }
    // The layer-2 rows measured the real path: the upstream received the connection's token
    // (at least once per measured call), and never any other Authorization (Doorman's own
    // access token does not go upstream, in any configuration).
    let mut upstream_saw = serde_json::Map::new();
    for (upstream, generation, measured) in [
        (&stateless, "2026-07-28", layer2_requests[0]),
        (&stateful, "2025-11-25", layer2_requests[1]),
    ] {
        let saw = upstream.echo_stats().await?;
        let count = |k: &str| saw[k].as_u64().unwrap_or(0) as usize;
        anyhow::ensure!(
            count("with_other_authorization") == 0,
            "the {generation} upstream received an Authorization that is not the resource token: {saw}"
        );
        if !args.generations.iter().any(|g| g == generation) {
            continue;
        }
        anyhow::ensure!(
            measured > 0 && count("with_resource_token") >= measured,
            "the {generation} upstream received the resource token {} times for {measured} layer-2 calls",
            count("with_resource_token")
        );
        upstream_saw.insert(generation.into(), saw);
    }
    // And through the vault's cache, as a client calling repeatedly does: Doorman's own count.
    let lookups = layer2::vault_lookups(&accounts).await?;
    let (hits, misses) = (
        lookups["hit"].as_u64().unwrap_or(0) as usize,
        lookups["miss"].as_u64().unwrap_or(0) as usize,
    );
    anyhow::ensure!(
        hits + misses >= layer2_requests.iter().sum::<usize>() && hits > misses,
        "Doorman counted {hits} vault cache hits and {misses} misses for {layer2_requests:?} layer-2 calls"
    );
    eprintln!("layer 2: Doorman's vault lookups: {hits} cache hits, {misses} misses");
    drop((local, accounts, relays));
    if args.throughput_only {
        let report = json!({ "rows": rows, "peers": peer_notes,
            "peer_seconds_per_round": args.peer_seconds });
        println!("{}", markdown_rows(&report));
        return Ok(());
    }

    let instructions = if callgrind::available().await {
        let plan = if args.smoke {
            callgrind::Plan::smoke()
        } else {
            callgrind::Plan::full()
        };
        callgrind::measure(
            &bins,
            [&stateless, &stateful],
            &resource_token,
            &args.generations,
            &plan,
        )
        .await?
    } else {
        eprintln!(
            "bench: valgrind's callgrind is not installed (scripts/setup-test-env installs it); no instruction counts"
        );
        Value::Null
    };
    let memory = procs::measure_memory(&bins, &args.sessions).await?;
    let startup = procs::measure_startup(&bins, if args.smoke { 1 } else { 5 }).await?;
    let plan = if args.smoke {
        vault::Plan::smoke()
    } else {
        vault::Plan::full(args.vault_connections)
    };
    let vault = vault::measure(&plan, args.postgres.as_deref()).await?;
    drop((stateless, stateful));
    let plan = if args.smoke {
        scale::Plan::smoke()
    } else {
        scale::Plan::full(
            args.scale_sessions,
            args.scale_connections,
            args.seconds,
            args.rounds,
        )
    };
    let scale = scale::measure(&bins, &plan).await?;
    let report = json!({ "rows": rows, "peers": peer_notes, "instructions": instructions,
        "memory": memory, "startup_ms": startup, "vault": vault, "scale": scale,
        "upstream_saw": upstream_saw, "doorman_vault_lookups": lookups, "smoke": args.smoke,
        "seconds_per_round": args.seconds, "peer_seconds_per_round": args.peer_seconds,
        "rounds": args.rounds });
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
    let mut s = markdown_rows(r);
    if !r["instructions"].is_null() {
        s.push_str(&callgrind::markdown(&r["instructions"]));
    }
    s.push_str(
        "\n## Memory: Doorman's resident size with idle stateful sessions\n\n\
         Local mode, 2025-11-25 sessions opened and left idle. *Per session*: the growth since \
         the empty node, divided by the sessions open; it includes what fills once (SQLite's page \
         caches, up to 2 MiB for each of its connections). *Per added session*: the growth since \
         the row above, divided by the sessions added since.\n\n\
         | sessions | RSS MiB | bytes per session | bytes per added session |\n|---:|---:|---:|---:|\n",
    );
    let bytes = |v: &Value| v.as_i64().map_or("—".into(), |b| b.to_string());
    for m in r["memory"].as_array().into_iter().flatten() {
        s.push_str(&format!(
            "| {} | {:.1} | {} | {} |\n",
            m["sessions"],
            m["rss_bytes"].as_f64().unwrap_or(0.0) / 1048576.0,
            bytes(&m["bytes_per_session"]),
            bytes(&m["bytes_per_added_session"]),
        ));
    }
    s.push_str(&format!(
        "\n## Start-up to ready\n\nmedian {} ms (fresh data directory, `/healthz` answering)\n",
        r["startup_ms"]
    ));
    s.push_str(&vault::markdown(&r["vault"]));
    s.push_str(&scale::markdown(&r["scale"]));
    s
}

/// The throughput table.
fn markdown_rows(r: &Value) -> String {
    let mut s = String::from(
        "## Throughput and latency: `tools/call` on `echo`, direct vs through Doorman\n\n\
         Modes: `local` (no sign-in), `signed in (token check)` (accounts mode: a bearer access \
         token on every request; each answer waits until its audit record is stored, `[audit] \
         durable`, the default), `signed in, audit not durable` (the same with `durable = false`: \
         what durability costs), `signed in + layer 2 (vault)` (the same, to an upstream tied to \
         a resource: the person's stored connection is looked up, its token opened and injected \
         as the upstream's `Authorization`), and for reference a bare HTTP relay (`bench-relay`: \
         hyper's server and pooled client passing requests through untouched, no JSON, no \
         checks), the ceiling any HTTP gateway approaches on this machine. For each protocol and \
         concurrency, direct and all the others ran alternately in the same rounds; each ratio is \
         to that direct. The last column is the gateway's CPU time (user and system, all threads) \
         during the measured windows, per call.\n\n",
    );
    s.push_str("| protocol | conc. | mode | direct req/s | through req/s | ratio | direct p50/p90/p99 µs | through p50/p90/p99 µs | added p50 µs | gateway CPU µs/call |\n");
    s.push_str("|---|---:|---|---:|---:|---:|---|---|---:|---:|\n");
    for row in r["rows"].as_array().into_iter().flatten() {
        let lat = |side: &str| {
            format!(
                "{}/{}/{}",
                row[side]["p50_us"], row[side]["p90_us"], row[side]["p99_us"]
            )
        };
        s.push_str(&format!(
            "| {} | {} | {} | {:.0} | {:.0} | {:.0}% | {} | {} | {} | {:.0} |\n",
            row["generation"].as_str().unwrap_or(""),
            row["concurrency"],
            row["mode"].as_str().unwrap_or(""),
            row["direct"]["rps"].as_f64().unwrap_or(0.0),
            row["doorman"]["rps"].as_f64().unwrap_or(0.0),
            row["throughput_ratio"].as_f64().unwrap_or(0.0) * 100.0,
            lat("direct"),
            lat("doorman"),
            row["added_p50_us"],
            row["gateway_cpu_us_per_call"].as_f64().unwrap_or(0.0),
        ));
    }
    s.push_str(&peers::markdown(r));
    s
}
