//! The load generator: `concurrency` workers, each calling `tools/call` in a loop for a fixed
//! time, on its own keep-alive connection; every latency is kept.
//!
//! Every call is bounded: [`CALL_TIMEOUT`] for the set-up and warm-up calls, and the round's end
//! for the measured ones (a call still in flight then is dropped, not counted), so a slow
//! gateway (a peer at tens of calls a second) cannot hold a run.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// Where to send calls, and which protocol generation to speak.
#[derive(Clone)]
pub struct Target {
    pub url: String,
    pub tool: String,
    pub generation: &'static str,
    /// An access token sent as `Authorization: Bearer` on every request (the signed-in side).
    pub bearer: Option<String>,
}

/// The longest any one call may take before the round fails.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// Reads the CPU time a gateway has used so far (a process, or a peer's process group).
pub type CpuClock<'a> = &'a dyn Fn() -> anyhow::Result<Duration>;

/// One round of load.
pub struct Round<'a> {
    pub concurrency: usize,
    /// The measured window, after the warm-up.
    pub duration: Duration,
    /// Uncounted calls each worker makes first (connections, sessions, caches).
    pub warmup_calls: usize,
    /// The gateway's CPU clock, read when the measured window opens and when it closes.
    pub cpu: Option<CpuClock<'a>>,
}

impl<'a> Round<'a> {
    /// Five warm-up calls per worker, no CPU reading.
    pub fn new(concurrency: usize, duration: Duration) -> Self {
        Self {
            concurrency,
            duration,
            warmup_calls: 5,
            cpu: None,
        }
    }

    /// The same, with the gateway's CPU read around the measured window.
    pub fn with_cpu(self, cpu: CpuClock<'a>) -> Self {
        Self {
            cpu: Some(cpu),
            ..self
        }
    }
}

/// Latencies (µs), the wall time they took, and the gateway's CPU time meanwhile.
#[derive(Default)]
pub struct Stats {
    latencies_us: Vec<u32>,
    elapsed: Duration,
    cpu: Duration,
}

impl Stats {
    pub fn merge(&mut self, other: Stats) {
        self.latencies_us.extend(other.latencies_us);
        self.elapsed += other.elapsed;
        self.cpu += other.cpu;
    }

    /// The gateway's CPU time per measured call, in µs (0 when it was not read).
    pub fn cpu_us_per_call(&self) -> f64 {
        self.cpu.as_secs_f64() * 1e6 / self.latencies_us.len().max(1) as f64
    }

    pub fn requests(&self) -> usize {
        self.latencies_us.len()
    }

    pub fn rps(&self) -> f64 {
        self.latencies_us.len() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    pub fn percentile(&mut self, p: f64) -> u32 {
        if self.latencies_us.is_empty() {
            return 0;
        }
        self.latencies_us.sort_unstable();
        let i = ((p / 100.0) * (self.latencies_us.len() - 1) as f64).round() as usize;
        self.latencies_us[i]
    }

    pub fn summary(&mut self) -> Value {
        json!({
            "requests": self.latencies_us.len(),
            "rps": self.rps(),
            "p50_us": self.percentile(50.0),
            "p90_us": self.percentile(90.0),
            "p99_us": self.percentile(99.0),
        })
    }
}

fn call_body(t: &Target, i: u64) -> Value {
    let mut params = json!({ "name": t.tool, "arguments": { "message": "benchmark" } });
    if t.generation == "2026-07-28" {
        params["_meta"] = json!({
            "io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientCapabilities": {},
        });
    }
    json!({ "jsonrpc": "2.0", "id": i, "method": "tools/call", "params": params })
}

/// One worker's client: its own connection, and a session when the generation needs one.
async fn worker_client(
    t: &Target,
) -> anyhow::Result<(reqwest::Client, reqwest::header::HeaderMap)> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(1)
        .timeout(CALL_TIMEOUT)
        .build()?;
    let mut h = reqwest::header::HeaderMap::new();
    h.insert("content-type", "application/json".parse()?);
    h.insert("accept", "application/json, text/event-stream".parse()?);
    h.insert("mcp-protocol-version", t.generation.parse()?);
    if let Some(token) = &t.bearer {
        h.insert("authorization", format!("Bearer {token}").parse()?);
    }
    if t.generation == "2026-07-28" {
        h.insert("mcp-method", "tools/call".parse()?);
        h.insert("mcp-name", t.tool.parse()?);
    } else {
        let init = json!({ "jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": t.generation, "capabilities": {}, "clientInfo": { "name": "bench", "version": "1" } } });
        let r = client
            .post(&t.url)
            .headers(h.clone())
            .body(init.to_string())
            .send()
            .await?;
        let Some(sid) = r.headers().get("mcp-session-id").cloned() else {
            let status = r.status();
            let body = r.text().await.unwrap_or_default();
            anyhow::bail!("no session id from {}: {status} {body:.300}", t.url);
        };
        r.bytes().await?;
        h.insert("mcp-session-id", sid);
    }
    Ok((client, h))
}

/// Runs `round.concurrency` workers against `t` for `round.duration`, after their warm-up.
pub async fn run(t: &Target, round: &Round<'_>) -> anyhow::Result<Stats> {
    let mut clients = Vec::new();
    for _ in 0..round.concurrency {
        let (client, headers) = worker_client(t).await?;
        for i in 0..round.warmup_calls {
            send(&client, &t.url, &headers, call_body(t, i as u64)).await?;
        }
        clients.push((client, headers));
    }
    let cpu_before = round.cpu.map(|read| read()).transpose()?;
    let start = tokio::time::Instant::now();
    let deadline = start + round.duration;
    let mut tasks = Vec::new();
    for (client, headers) in clients {
        let url = t.url.clone();
        let bodies: Vec<String> = (0..64).map(|i| call_body(t, i).to_string()).collect();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut i = 0usize;
            while tokio::time::Instant::now() < deadline {
                let began = Instant::now();
                let call = async {
                    let r = client
                        .post(&url)
                        .headers(headers.clone())
                        .body(bodies[i % bodies.len()].clone())
                        .send()
                        .await?;
                    let status = r.status();
                    let body = r.bytes().await?;
                    if !status.is_success() || !body.windows(9).any(|w| w == b"benchmark") {
                        anyhow::bail!(
                            "unexpected answer {status}: {}",
                            String::from_utf8_lossy(&body)
                        );
                    }
                    Ok(())
                };
                // Still in flight when the round ends: dropped, not counted.
                let Ok(answered) = tokio::time::timeout_at(deadline, call).await else {
                    break;
                };
                answered?;
                lat.push(began.elapsed().as_micros().min(u32::MAX as u128) as u32);
                i += 1;
            }
            Ok::<_, anyhow::Error>((lat, client, headers))
        }));
    }
    tokio::time::sleep_until(deadline).await;
    let cpu_after = round.cpu.map(|read| read()).transpose()?;
    let mut stats = Stats::default();
    let mut ended = Vec::new();
    for task in tasks {
        let (lat, client, headers) = task.await??;
        stats.latencies_us.extend(lat);
        ended.push((client, headers));
    }
    // Sessions are ended as a client leaving would (`DELETE`), outside the measured window: a
    // person may hold only so many (`server.max_sessions_per_person`), and rounds add up.
    for (client, headers) in ended {
        if headers.contains_key("mcp-session-id") {
            let _ = client.delete(&t.url).headers(headers).send().await;
        }
    }
    stats.elapsed = round.duration;
    if let (Some(before), Some(after)) = (cpu_before, cpu_after) {
        stats.cpu = after.saturating_sub(before);
    }
    Ok(stats)
}

/// One client calling one after another over one kept-alive connection (a session too, when
/// the generation needs one): what an instruction count per call is measured with.
pub struct Sequential {
    client: reqwest::Client,
    headers: reqwest::header::HeaderMap,
    t: Target,
    sent: u64,
}

impl Sequential {
    pub async fn new(t: &Target) -> anyhow::Result<Self> {
        let (client, headers) = worker_client(t).await?;
        Ok(Self {
            client,
            headers,
            t: t.clone(),
            sent: 0,
        })
    }

    /// `n` calls, each checked.
    pub async fn calls(&mut self, n: usize) -> anyhow::Result<()> {
        for _ in 0..n {
            self.sent += 1;
            let body = call_body(&self.t, self.sent);
            send(&self.client, &self.t.url, &self.headers, body).await?;
        }
        Ok(())
    }
}

async fn send(
    client: &reqwest::Client,
    url: &str,
    headers: &reqwest::header::HeaderMap,
    body: Value,
) -> anyhow::Result<()> {
    let r = client
        .post(url)
        .headers(headers.clone())
        .body(body.to_string())
        .send()
        .await?;
    let status = r.status();
    let text = r.text().await?;
    anyhow::ensure!(
        status.is_success() && text.contains("benchmark"),
        "warm-up call failed: {status} {text}"
    );
    Ok(())
}
