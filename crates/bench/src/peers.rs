//! Other MCP gateways in the same run (`--peers`; `bench/run` passes it in full mode only):
//! IBM's ContextForge and LiteLLM's MCP gateway, each started by its script in `bench/peers/`
//! (which installs it into a venv of its own when missing, configures authentication on every
//! call, registers the echo upstream and checks a `tools/call` in each generation; the
//! configuration is written down in `bench/peers/README.md`), then measured as rows of the
//! throughput table with the same load generator and a bearer token, as the signed-in rows are.
//!
//! For each generation a peer is started in front of that generation's echo server when it can
//! speak to it (LiteLLM's upstream side speaks only `initialize`: the 2025-11-25 echo), and
//! stopped when the generation is done. A peer that does not install, start, or answer a
//! generation (LiteLLM refuses 2026-07-28) gives a skipped row and its reason, never a failed
//! run. Its CPU time is its whole process group's (the scripts start it with `setsid`).

use std::{path::PathBuf, process::Stdio, time::Duration};

use serde_json::{Value, json};

use crate::{load::Target, procs};

/// Highest concurrency a peer is measured at: at 15–75 calls a second, 64 clients would
/// measure the peer's queue (about a second per call), not its work.
pub const MAX_CONCURRENCY: usize = 16;

/// Longest a start script may take, a first install included (about 25 s for ContextForge and
/// 50 s for LiteLLM here, more on a slow network).
const START_TIMEOUT: Duration = Duration::from_secs(900);

/// Longest `stop` may take (SIGTERM, then SIGKILL after 10 s).
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// One peer gateway.
pub struct Kind {
    pub name: &'static str,
    script: &'static str,
    /// Speaks 2026-07-28 to its upstream (`server/discover`); otherwise only `initialize`.
    modern_upstream: bool,
    /// Where its configuration is written down.
    configuration: &'static str,
}

pub const KINDS: [Kind; 2] = [
    Kind {
        name: "ContextForge",
        script: "start-contextforge.sh",
        modern_upstream: true,
        configuration: "bench/peers/README.md, \"ContextForge: the configuration\"",
    },
    Kind {
        name: "LiteLLM",
        script: "start-litellm.sh",
        modern_upstream: false,
        configuration: "bench/peers/README.md, \"LiteLLM: the configuration\"",
    },
];

fn scripts_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../bench/peers"))
}

/// What a start script printed: the gateway ready, authentication on.
struct Started {
    url: String,
    token: String,
    tool: String,
    protocols: Vec<String>,
    /// Its process-group leader.
    pgid: u32,
    version: String,
}

/// A peer started (or not) for one generation; stopped when dropped.
pub struct Peer {
    pub kind: &'static Kind,
    generation: &'static str,
    port: u16,
    /// Which echo server it is in front of.
    upstream: &'static str,
    started: Option<Started>,
    /// Its start script's log (stderr).
    log: Vec<String>,
    /// Why it has no row (or no more rows) in this generation.
    pub skipped: Option<String>,
}

/// Starts every peer for `generation`, in front of `echo_urls` (`[2026-07-28, 2025-11-25]`).
pub async fn start(generation: &'static str, echo_urls: [&str; 2]) -> Vec<Peer> {
    let mut peers = Vec::new();
    for kind in &KINDS {
        let modern = generation == "2026-07-28" && kind.modern_upstream;
        let (upstream, url) = if modern {
            ("2026-07-28 echo", echo_urls[0])
        } else {
            ("2025-11-25 echo", echo_urls[1])
        };
        let mut peer = Peer {
            kind,
            generation,
            port: 0,
            upstream,
            started: None,
            log: Vec::new(),
            skipped: None,
        };
        match peer.start(url).await {
            Ok(s) if s.protocols.iter().any(|p| p == generation) => {
                eprintln!(
                    "peers: {} {} ready on port {} in front of the {upstream}",
                    kind.name, s.version, peer.port
                );
                peer.started = Some(s);
            }
            Ok(s) => {
                peer.skipped = Some(format!(
                    "{} {} answered no {generation} `tools/call` (its start script's check: {})",
                    kind.name,
                    s.version,
                    peer.refusal(generation)
                ));
                peer.started = Some(s);
                peer.stop();
            }
            Err(e) => {
                peer.skipped = Some(format!("{} did not start: {e:#}", kind.name));
                peer.stop();
            }
        }
        if let Some(reason) = &peer.skipped {
            eprintln!("peers: skipped: {reason}");
        }
        peers.push(peer);
    }
    peers
}

impl Peer {
    /// Runs the start script; on success its `KEY=value` lines.
    async fn start(&mut self, upstream_url: &str) -> anyhow::Result<Started> {
        let script = scripts_dir().join(self.kind.script);
        anyhow::ensure!(script.exists(), "{} is missing", script.display());
        self.port = procs::free_port()?;
        eprintln!(
            "peers: starting {} on port {} (installs it on first use)",
            self.kind.name, self.port
        );
        let child = tokio::process::Command::new(&script)
            .arg(self.port.to_string())
            .arg(upstream_url)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let out = tokio::time::timeout(START_TIMEOUT, child.wait_with_output())
            .await
            .map_err(|_| anyhow::anyhow!("its start script took over {START_TIMEOUT:?}"))??;
        let stderr = String::from_utf8_lossy(&out.stderr);
        self.log = stderr.lines().map(String::from).collect();
        anyhow::ensure!(
            out.status.success(),
            "{}",
            self.log
                .iter()
                .rev()
                .find(|l| !l.trim().is_empty())
                .map_or("its start script failed", String::as_str)
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        let value = |key: &str| {
            stdout
                .lines()
                .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
                .map(str::to_owned)
                .ok_or_else(|| anyhow::anyhow!("its start script printed no {key}="))
        };
        Ok(Started {
            url: value("URL")?,
            token: value("TOKEN")?,
            tool: value("TOOL")?,
            protocols: value("PROTOCOLS")?.split(',').map(str::to_owned).collect(),
            pgid: value("PID")?.parse()?,
            version: value("VERSION")?,
        })
    }

    /// What the start script logged about `generation`'s check, if anything.
    fn refusal(&self, generation: &str) -> String {
        let tag = format!("{generation} tools/call: ");
        self.log
            .iter()
            .find_map(|l| l.split_once(&tag).map(|(_, answer)| answer.trim()))
            .map_or_else(|| "no answer logged".into(), |a| truncate(a, 200))
    }

    /// Where to send calls, while it is measured.
    pub fn target(&self) -> Option<Target> {
        let s = self.started.as_ref().filter(|_| self.skipped.is_none())?;
        Some(Target {
            url: s.url.clone(),
            tool: s.tool.clone(),
            generation: self.generation,
            bearer: Some(s.token.clone()),
        })
    }

    /// Its process group's CPU time so far.
    pub fn cpu_time(&self) -> anyhow::Result<Duration> {
        let s = self
            .started
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("not started"))?;
        procs::group_cpu_time(s.pgid)
    }

    /// The row's mode name.
    pub fn mode(&self) -> String {
        match &self.started {
            Some(s) => format!("{} {} (peer)", self.kind.name, s.version),
            None => format!("{} (peer)", self.kind.name),
        }
    }

    /// Stops measuring it in this generation: its remaining rows are skipped for `reason`.
    pub fn fail(&mut self, reason: String) {
        eprintln!("peers: {}: {reason}", self.kind.name);
        self.skipped = Some(reason);
    }

    /// What the report says about it: version, upstream, where its configuration is written.
    pub fn describe(&self) -> Value {
        json!({
            "peer": self.kind.name,
            "generation": self.generation,
            "version": self.started.as_ref().map(|s| s.version.clone()),
            "upstream": self.upstream,
            "protocols": self.started.as_ref().map(|s| s.protocols.clone()),
            "configuration": self.kind.configuration,
            "skipped": self.skipped,
        })
    }

    /// `script stop PORT`, waited for (bounded).
    fn stop(&mut self) {
        if self.port == 0 {
            return;
        }
        let script = scripts_dir().join(self.kind.script);
        // Blocking: this runs between rounds, nothing else is being measured.
        let stopped = std::process::Command::new(&script)
            .args(["stop", &self.port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .and_then(|mut child| {
                let until = std::time::Instant::now() + STOP_TIMEOUT;
                loop {
                    if let Some(status) = child.try_wait()? {
                        return Ok(status.success());
                    }
                    if std::time::Instant::now() > until {
                        let _ = child.kill();
                        return Ok(false);
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            });
        if !matches!(stopped, Ok(true)) {
            eprintln!(
                "peers: could not stop {} on port {} ({})",
                self.kind.name,
                self.port,
                script.display()
            );
        }
        self.port = 0;
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn truncate(s: &str, n: usize) -> String {
    match s.char_indices().nth(n) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_owned(),
    }
}

/// The notes under the throughput table: each peer's configuration, and each skipped row.
pub fn markdown(r: &Value) -> String {
    let peers = r["peers"].as_array().map(Vec::as_slice).unwrap_or_default();
    if peers.is_empty() {
        return String::new();
    }
    let mut s = format!(
        "\nPeers (rows marked `(peer)`): other MCP gateways in front of the same echo servers, \
         authentication checked on every call, driven by the same load generator with their \
         bearer token, in rounds of {} s alternating with the others in the same rounds, at \
         concurrencies up to {MAX_CONCURRENCY} (beyond, a gateway serving tens of calls a second \
         would measure its queue); their CPU is their whole process group's, during the measured \
         window only. Started by `bench/peers/start-*.sh`, configured as written in \
         `bench/peers/README.md`.\n\n",
        r["peer_seconds_per_round"]
    );
    for p in peers {
        let version = p["version"].as_str().unwrap_or("?");
        match p["skipped"].as_str() {
            None => s.push_str(&format!(
                "- {} {version}, {}: in front of the {}; configuration: {}.\n",
                p["peer"].as_str().unwrap_or(""),
                p["generation"].as_str().unwrap_or(""),
                p["upstream"].as_str().unwrap_or(""),
                p["configuration"].as_str().unwrap_or(""),
            )),
            Some(reason) => s.push_str(&format!(
                "- {}, {}: **skipped**: {reason}\n",
                p["peer"].as_str().unwrap_or(""),
                p["generation"].as_str().unwrap_or(""),
            )),
        }
    }
    s
}
