//! Instructions per call, counted by valgrind's callgrind: a figure that stays the same on a busy
//! machine, unlike CPU time, so a change to the request path shows in it however noisy the run.
//!
//! Each gateway (the bare relay, and Doorman local, signed in, signed in with layer 2) runs under
//! `valgrind --tool=callgrind --instr-atstart=no`. For each protocol generation one client warms
//! up over a kept-alive connection (connections, sessions, caches), then the bench turns
//! instrumentation on, zeroes the counters, sends `calls` calls one after another, and dumps
//! (`callgrind_control`). The dump's total, divided by the calls, is the user-space instructions
//! the gateway spent per call, every thread included (background tasks that ran meanwhile too,
//! which the number of calls makes small).

use std::path::Path;

use serde_json::{Value, json};
use tokio::process::Command;

use crate::{
    layer2,
    load::{Sequential, Target},
    procs::{self, Binaries, Running, SignIn, UpstreamSpec},
    signin,
};

/// How many calls are counted, after how many uncounted ones.
pub struct Plan {
    pub warmup: usize,
    pub calls: usize,
}

impl Plan {
    pub fn full() -> Self {
        Self {
            warmup: 200,
            calls: 2000,
        }
    }

    pub fn smoke() -> Self {
        Self {
            warmup: 5,
            calls: 20,
        }
    }
}

/// Whether valgrind's callgrind can be run here.
pub async fn available() -> bool {
    let ok = |out: std::io::Result<std::process::Output>| out.is_ok_and(|o| o.status.success());
    ok(Command::new("valgrind").arg("--version").output().await)
        && ok(Command::new("callgrind_control").arg("-h").output().await)
}

async fn control(pid: u32, args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("callgrind_control")
        .args(args)
        .arg(pid.to_string())
        .output()
        .await?;
    anyhow::ensure!(
        out.status.success(),
        "callgrind_control {args:?} {pid}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// The total of the newest dump of process `pid` in `dir`.
fn last_dump_total(dir: &Path, pid: u32) -> anyhow::Result<u64> {
    let prefix = format!("callgrind.out.{pid}.");
    let newest = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let n: u64 = name.strip_prefix(&prefix)?.parse().ok()?;
            Some((n, e.path()))
        })
        .max_by_key(|(n, _)| *n)
        .ok_or_else(|| anyhow::anyhow!("no callgrind dump of {pid} in {}", dir.display()))?;
    let text = std::fs::read_to_string(&newest.1)?;
    text.lines()
        .find_map(|l| {
            l.strip_prefix("totals:")
                .or_else(|| l.strip_prefix("summary:"))
        })
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no total in {}", newest.1.display()))
}

/// Instructions `gateway` spends per call of `target`.
async fn per_call(
    gateway: &Running,
    target: &Target,
    plan: &Plan,
    dir: &Path,
) -> anyhow::Result<f64> {
    let pid = gateway.pid();
    let mut client = Sequential::new(target).await?;
    client.calls(plan.warmup).await?;
    control(pid, &["-i", "on"]).await?;
    control(pid, &["-z"]).await?;
    client.calls(plan.calls).await?;
    control(pid, &["-d"]).await?;
    control(pid, &["-i", "off"]).await?;
    Ok(last_dump_total(dir, pid)? as f64 / plan.calls as f64)
}

/// Counts every mode on each generation; one row per (generation, mode), with its ratio to the
/// relay's count on the same generation.
pub async fn measure(
    bins: &Binaries,
    echoes: [&Running; 2],
    resource_token: &str,
    generations: &[String],
    plan: &Plan,
) -> anyhow::Result<Value> {
    // `DOORMAN_BENCH_CALLGRIND_DIR` keeps the dumps there, for `callgrind_annotate` or a
    // flame graph; otherwise they go with a temporary directory.
    let temp = tempfile::tempdir()?;
    let kept = std::env::var_os("DOORMAN_BENCH_CALLGRIND_DIR").map(std::path::PathBuf::from);
    if let Some(k) = &kept {
        std::fs::create_dir_all(k)?;
    }
    let dir_path = kept.as_deref().unwrap_or(temp.path());
    let cg = Some(dir_path);
    let relays = [
        procs::start_relay_in(bins, echoes[0], cg).await?,
        procs::start_relay_in(bins, echoes[1], cg).await?,
    ];
    let spec = |name, port, tied| UpstreamSpec { name, port, tied };
    let local = procs::start_doorman_in(
        bins,
        &[
            spec("modern", echoes[0].port, false),
            spec("legacy", echoes[1].port, false),
        ],
        SignIn::Local,
        cg,
    )
    .await?;
    let accounts = procs::start_doorman_in(
        bins,
        &[
            spec("modern", echoes[0].port, false),
            spec("legacy", echoes[1].port, false),
            spec("vault_modern", echoes[0].port, true),
            spec("vault_legacy", echoes[1].port, true),
        ],
        SignIn::Accounts {
            durable_audit: true,
        },
        cg,
    )
    .await?;
    // The same without waiting for audit records: what `[audit] durable` costs per call.
    let undurable = procs::start_doorman_in(
        bins,
        &[
            spec("modern", echoes[0].port, false),
            spec("legacy", echoes[1].port, false),
        ],
        SignIn::Accounts {
            durable_audit: false,
        },
        cg,
    )
    .await?;
    let password = signin::random_token(18)?;
    procs::add_person(bins, &accounts, "bench", &password).await?;
    let token = signin::access_token(&accounts.base_url(), "bench", &password).await?;
    procs::add_person(bins, &undurable, "bench", &password).await?;
    let undurable_token = signin::access_token(&undurable.base_url(), "bench", &password).await?;
    layer2::connect(&accounts, "bench", resource_token).await?;

    let mut rows = Vec::new();
    for (g, (generation, name)) in [("2026-07-28", "modern"), ("2025-11-25", "legacy")]
        .into_iter()
        .enumerate()
        .filter(|(_, (generation, _))| generations.iter().any(|g| g == generation))
    {
        let target = |url: String, tool: String, bearer: Option<&str>| Target {
            url,
            tool,
            generation,
            bearer: bearer.map(String::from),
        };
        let modes: [(&str, &Running, Target); 5] = [
            (
                crate::RELAY,
                &relays[g],
                target(relays[g].mcp_url(), "echo".into(), None),
            ),
            (
                "local",
                &local,
                target(local.mcp_url(), format!("{name}_echo"), None),
            ),
            (
                "signed in (token check)",
                &accounts,
                target(accounts.mcp_url(), format!("{name}_echo"), Some(&token)),
            ),
            (
                crate::NOT_DURABLE,
                &undurable,
                target(
                    undurable.mcp_url(),
                    format!("{name}_echo"),
                    Some(&undurable_token),
                ),
            ),
            (
                crate::LAYER2,
                &accounts,
                target(
                    accounts.mcp_url(),
                    format!("vault_{name}_echo"),
                    Some(&token),
                ),
            ),
        ];
        let mut relay = 0.0;
        for (mode, gateway, t) in &modes {
            let n = per_call(gateway, t, plan, dir_path).await?;
            if *mode == crate::RELAY {
                relay = n;
            }
            eprintln!("{generation}: {mode}: {n:.0} instructions per call");
            rows.push(json!({
                "generation": generation, "mode": mode,
                "instructions_per_call": n.round(),
                "ratio_to_relay": if relay > 0.0 { n / relay } else { 0.0 },
            }));
        }
    }
    Ok(json!({ "rows": rows, "warmup": plan.warmup, "calls": plan.calls }))
}

/// The instructions table.
pub fn markdown(v: &Value) -> String {
    let mut s = format!(
        "\n## Instructions per call (callgrind)\n\nUser-space instructions the gateway spends on one \
         `tools/call` of `echo`, counted by valgrind's callgrind over {} calls sent one after \
         another on a kept-alive connection, after {} uncounted ones (every thread counted; \
         the same on a busy machine). Reproduce with `doorman-bench instructions`.\n\n\
         | protocol | mode | instructions per call | × relay |\n|---|---|---:|---:|\n",
        v["calls"], v["warmup"]
    );
    for row in v["rows"].as_array().into_iter().flatten() {
        s.push_str(&format!(
            "| {} | {} | {:.0} | {:.2} |\n",
            row["generation"].as_str().unwrap_or(""),
            row["mode"].as_str().unwrap_or(""),
            row["instructions_per_call"].as_f64().unwrap_or(0.0),
            row["ratio_to_relay"].as_f64().unwrap_or(0.0),
        ));
    }
    s
}
