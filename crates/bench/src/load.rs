//! The load generator: `concurrency` workers, each calling `tools/call` in a loop for a fixed
//! time, on its own keep-alive connection; every latency is kept.

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

/// Latencies (µs) and the wall time they took.
#[derive(Default)]
pub struct Stats {
    latencies_us: Vec<u32>,
    elapsed: Duration,
}

impl Stats {
    pub fn merge(&mut self, other: Stats) {
        self.latencies_us.extend(other.latencies_us);
        self.elapsed += other.elapsed;
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
        let sid = r
            .headers()
            .get("mcp-session-id")
            .cloned()
            .ok_or_else(|| anyhow::anyhow!("no session id from {}", t.url))?;
        r.bytes().await?;
        h.insert("mcp-session-id", sid);
    }
    Ok((client, h))
}

/// Runs `concurrency` workers against `t` for `duration`.
pub async fn run(t: &Target, concurrency: usize, duration: Duration) -> anyhow::Result<Stats> {
    let mut clients = Vec::new();
    for _ in 0..concurrency {
        let (client, headers) = worker_client(t).await?;
        // Warm-up: connections open, upstream sessions created, caches filled.
        for i in 0..5 {
            send(&client, &t.url, &headers, call_body(t, i)).await?;
        }
        clients.push((client, headers));
    }
    let start = Instant::now();
    let deadline = start + duration;
    let mut tasks = Vec::new();
    for (client, headers) in clients {
        let url = t.url.clone();
        let bodies: Vec<String> = (0..64).map(|i| call_body(t, i).to_string()).collect();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut i = 0usize;
            while Instant::now() < deadline {
                let began = Instant::now();
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
                lat.push(began.elapsed().as_micros().min(u32::MAX as u128) as u32);
                i += 1;
            }
            Ok::<_, anyhow::Error>(lat)
        }));
    }
    let mut stats = Stats::default();
    for task in tasks {
        stats.latencies_us.extend(task.await??);
    }
    stats.elapsed = start.elapsed();
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
