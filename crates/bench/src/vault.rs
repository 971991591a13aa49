//! The vault with many stored connections (`doorman-bench vault`, and the last part of a full
//! run): lookup latency through the store and through the vault's in-memory cache, on SQLite
//! and on PostgreSQL, with Doorman's own store, key ring and vault used as a library.
//!
//! Data: `connections / 10` people with one connection each to 10 resources (`binding = "user"`,
//! a sealed access and refresh token each, no expiry), bulk-inserted with multi-row `INSERT`s
//! in transactions on a connection of the bench's own (the store applied its migrations first),
//! then `ANALYZE`d (PostgreSQL: `VACUUM (ANALYZE)`, as autovacuum would leave it). Then, on the
//! store Doorman opened, in rounds that take turns (so that each meets the same machine):
//! - store: `Store::connections_of(person, resource)` for random pairs;
//! - vault, cache miss: `Vault::credential` for a pair not looked up before (the store query,
//!   opening the sealed token, building the header, noting the use for the `last_used_at`
//!   writer: each connection was last used a day ago, so every miss has a use to write);
//! - vault, cache hit: `Vault::credential` again for pairs looked up in the last few hundred
//!   milliseconds (the vault keeps opened credentials 5 s); each lookup's outcome is checked
//!   against Doorman's `vault_lookups` counter.

use std::{
    str::FromStr,
    sync::Arc,
    time::{Duration, Instant},
};

use doorman::{
    clock::SystemClock,
    config::Config,
    crypto::{KeyRing, random_token},
    metrics::OutcomeLabels,
    net::HttpClient,
    store::Store,
    vault::{Credential, Holder, Need, Vault, oauth::ResourceClient, tokens},
};
use serde_json::{Value, json};
use sqlx::{
    Connection, PgConnection, PgPool, SqlitePool,
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous},
};

/// Resources each person has connected.
pub const RESOURCES_PER_PERSON: usize = 10;
/// People per multi-row `INSERT` (so 1,000 connection rows, 6 bound values each).
const PEOPLE_PER_STATEMENT: usize = 100;
/// Statements per transaction.
const STATEMENTS_PER_TRANSACTION: usize = 10;
/// Pairs looked up (missed) together before they are looked up again (hit): well inside the
/// cache's 5 s even on a slow store.
const MISS_BATCH: usize = 200;

/// How much to insert and measure.
#[derive(Clone, Debug)]
pub struct Plan {
    pub connections: usize,
    pub store_lookups: usize,
    pub vault_misses: usize,
    pub hits_per_miss: usize,
}

impl Plan {
    pub fn full(connections: usize) -> Self {
        Self {
            connections,
            store_lookups: 20_000,
            vault_misses: 10_000,
            hits_per_miss: 10,
        }
    }

    pub fn smoke() -> Self {
        Self {
            connections: 1_000,
            store_lookups: 200,
            vault_misses: 200,
            hits_per_miss: 10,
        }
    }

    fn people(&self) -> usize {
        self.connections / RESOURCES_PER_PERSON
    }
}

/// Pair number `k` as (person, resource).
fn pair(k: u32) -> (usize, usize) {
    let k = k as usize;
    (k / RESOURCES_PER_PERSON, k % RESOURCES_PER_PERSON)
}

/// One `Vault::credential` for `person` at `rc`, as the gateway asks it, and the nanoseconds it
/// took.
async fn timed_credential(
    vault: &Vault,
    person: &str,
    rc: &ResourceClient,
) -> anyhow::Result<(u64, Result<Credential, Need>)> {
    let caller = Holder {
        user_id: person,
        grant: "bench",
        session_hash: None,
    };
    let began = Instant::now();
    let got = vault
        .credential(&caller, rc, None, Default::default())
        .await?;
    Ok((began.elapsed().as_nanos() as u64, got))
}

fn resource_name(r: usize) -> String {
    format!("res{r}")
}

/// A small deterministic generator (xorshift64*): the bench needs no crypto-grade randomness
/// to pick whom to look up.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Nanosecond latencies.
#[derive(Default)]
struct Latencies(Vec<u64>);

impl Latencies {
    fn summary(&mut self) -> Value {
        self.0.sort_unstable();
        let at = |p: f64| {
            if self.0.is_empty() {
                return 0.0;
            }
            let i = ((p / 100.0) * (self.0.len() - 1) as f64).round() as usize;
            (self.0[i] as f64 / 100.0).round() / 10.0
        };
        json!({ "count": self.0.len(), "p50_us": at(50.0), "p99_us": at(99.0) })
    }
}

/// Measures every engine: SQLite always, PostgreSQL when `postgres` (a server URL whose
/// credentials may create databases) is given; a fresh database each, dropped afterwards.
pub async fn measure(plan: &Plan, postgres: Option<&str>) -> anyhow::Result<Value> {
    anyhow::ensure!(
        plan.people() > 0 && plan.vault_misses <= plan.connections,
        "the vault measurement needs at least {RESOURCES_PER_PERSON} connections, and no more misses than connections"
    );
    let mut engines = Vec::new();
    let dir = tempfile::tempdir()?;
    let sqlite = format!("sqlite://{}", dir.path().join("doorman.db").display());
    engines.push(measure_engine("sqlite", &sqlite, plan).await?);
    drop(dir);
    match postgres {
        Some(base) => {
            let (url, name) = fresh_postgres(base).await?;
            let measured = measure_engine("postgres", &url, plan).await;
            drop_postgres(base, &name).await;
            engines.push(measured?);
        }
        None => eprintln!("vault: no PostgreSQL URL given, SQLite only"),
    }
    Ok(json!({
        "connections": plan.people() * RESOURCES_PER_PERSON,
        "people": plan.people(),
        "resources_per_person": RESOURCES_PER_PERSON,
        "engines": engines,
    }))
}

async fn measure_engine(engine: &str, url: &str, plan: &Plan) -> anyhow::Result<Value> {
    let store = Store::open(url).await?;
    let ring = Arc::new(KeyRing::parse(&format!("bench {}\n", random_token(32)))?);
    let started = Instant::now();
    let people = populate(url, &ring, plan.people()).await?;
    let insert_seconds = started.elapsed().as_secs_f64();
    let n = people.len() * RESOURCES_PER_PERSON;
    eprintln!(
        "vault/{engine}: {n} connections of {} people inserted in {insert_seconds:.1} s ({:.0} rows/s)",
        people.len(),
        n as f64 / insert_seconds
    );
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);

    // Through the store: 100 lookups that warm the readers' connections and statement caches,
    // then the measured ones in rounds with the vault's below, so that both meet the same
    // machine (page cache, other work) rather than one of them its quieter minute.
    let store_lookup = |people: &[String], p: usize, r: usize| {
        let (person, resource) = (people[p].clone(), resource_name(r));
        let store = store.clone();
        async move {
            let began = Instant::now();
            let rows = store.connections_of(&person, &resource).await?;
            let took = began.elapsed().as_nanos() as u64;
            anyhow::ensure!(rows.len() == 1, "{} rows for one pair", rows.len());
            Ok::<_, anyhow::Error>(took)
        }
    };
    for _ in 0..100 {
        let (p, r) = (rng.below(people.len()), rng.below(RESOURCES_PER_PERSON));
        store_lookup(&people, p, r).await?;
    }
    let mut store_lat = Latencies::default();
    // On PostgreSQL, the floor in the same rounds: an empty query (`SELECT 1`, prepared once,
    // as the lookup's statement is) on a connection of its own: one round trip to the server,
    // what every lookup pays before the index is read.
    let mut floor = match url.starts_with("postgres") {
        true => Some(PgConnection::connect(url).await?),
        false => None,
    };
    let round_trip = async |conn: &mut PgConnection| {
        let began = Instant::now();
        let (one,): (i32,) = sqlx::query_as("SELECT 1").fetch_one(&mut *conn).await?;
        let took = began.elapsed().as_nanos() as u64;
        anyhow::ensure!(one == 1, "SELECT 1 gave {one}");
        Ok::<_, anyhow::Error>(took)
    };
    if let Some(conn) = floor.as_mut() {
        for _ in 0..100 {
            round_trip(conn).await?;
        }
    }
    let mut floor_lat = Latencies::default();

    // Through the vault: misses, then hits on what was just looked up.
    let vault = Vault::new(
        &Config::from_toml(&vault_config()).map_err(|e| anyhow::anyhow!("{e}"))?,
        store.clone(),
        ring.clone(),
        Arc::new(SystemClock),
        HttpClient::new()?,
    )?;
    let rcs: Vec<_> = (0..RESOURCES_PER_PERSON)
        .map(|r| vault.resource(&resource_name(r)).expect("configured"))
        .collect();
    // Pairs never looked up through the vault before, in random order (partial Fisher-Yates).
    let mut order: Vec<u32> = (0..n as u32).collect();
    for i in 0..plan.vault_misses {
        let j = i + rng.below(n - i);
        order.swap(i, j);
    }
    let counter = |outcome: &str| {
        doorman::metrics::get()
            .vault_lookups
            .get_or_create(&OutcomeLabels {
                outcome: outcome.into(),
            })
            .get()
    };
    let (hits_before, misses_before) = (counter("hit"), counter("miss"));
    let (mut miss_lat, mut hit_lat) = (Latencies::default(), Latencies::default());
    let batches = plan.vault_misses.div_ceil(MISS_BATCH).max(1);
    for (b, batch) in order[..plan.vault_misses].chunks(MISS_BATCH).enumerate() {
        let lookups = plan.store_lookups * (b + 1) / batches - plan.store_lookups * b / batches;
        for _ in 0..lookups {
            let (p, r) = (rng.below(people.len()), rng.below(RESOURCES_PER_PERSON));
            store_lat.0.push(store_lookup(&people, p, r).await?);
            if let Some(conn) = floor.as_mut() {
                floor_lat.0.push(round_trip(conn).await?);
            }
        }
        let batch_started = Instant::now();
        for &k in batch {
            let (p, r) = pair(k);
            let (took, got) = timed_credential(&vault, &people[p], &rcs[r]).await?;
            miss_lat.0.push(took);
            let credential = got.map_err(|need| anyhow::anyhow!("no credential: {need:?}"))?;
            let value = credential.header.1.to_str().unwrap_or("");
            anyhow::ensure!(
                value.starts_with(&format!("Bearer at-{p}-{r}-")),
                "the vault opened someone else's token"
            );
        }
        for _ in 0..batch.len() * plan.hits_per_miss {
            let (p, r) = pair(batch[rng.below(batch.len())]);
            let (took, got) = timed_credential(&vault, &people[p], &rcs[r]).await?;
            hit_lat.0.push(took);
            anyhow::ensure!(got.is_ok(), "no credential on a repeated lookup");
        }
        anyhow::ensure!(
            batch_started.elapsed() < Duration::from_secs(4),
            "a batch took longer than the vault's cache keeps credentials"
        );
    }
    let (hits, misses) = (
        counter("hit") - hits_before,
        counter("miss") - misses_before,
    );
    anyhow::ensure!(
        hits == hit_lat.0.len() as u64 && misses == miss_lat.0.len() as u64,
        "Doorman counted {hits} cache hits and {misses} misses, the bench expected {} and {}",
        hit_lat.0.len(),
        miss_lat.0.len()
    );
    drop(vault);
    if let Some(conn) = floor {
        conn.close().await?;
    }
    store.close().await;
    let mut out = json!({
        "engine": engine,
        "insert_seconds": insert_seconds,
        "store": store_lat.summary(),
        "vault_miss": miss_lat.summary(),
        "vault_hit": hit_lat.summary(),
    });
    if !floor_lat.0.is_empty() {
        out["round_trip"] = floor_lat.summary();
    }
    eprintln!(
        "vault/{engine}: store p50/p99 {}/{} µs, miss {}/{} µs, hit {}/{} µs",
        out["store"]["p50_us"],
        out["store"]["p99_us"],
        out["vault_miss"]["p50_us"],
        out["vault_miss"]["p99_us"],
        out["vault_hit"]["p50_us"],
        out["vault_hit"]["p99_us"]
    );
    Ok(out)
}

/// The resources the stored connections are to (endpoints never contacted: no token expires).
fn vault_config() -> String {
    let mut s = String::from(
        "[server]\npublic_url = \"http://127.0.0.1:8421/\"\n[sign_in]\nmode = \"accounts\"\ndevelopment = true\n",
    );
    s.push_str(&resources_toml());
    s
}

/// The `[[resources]]` tables of the resources [`populate`] connects people to.
pub fn resources_toml() -> String {
    let mut s = String::new();
    for r in 0..RESOURCES_PER_PERSON {
        s.push_str(&format!(
            "[[resources]]\nname = \"{}\"\nauthorization_endpoint = \"http://127.0.0.1:1/authorize\"\n\
             token_endpoint = \"http://127.0.0.1:1/token\"\nclient_id = \"bench\"\nbinding = \"user\"\n",
            resource_name(r)
        ));
    }
    s
}

/// The bulk loader's connection to the store's database.
enum Loader {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Runs the same code on either pool (as the store's `on_pool!`).
macro_rules! on_loader {
    ($loader:expr, $pool:ident => $body:expr) => {
        match &$loader {
            Loader::Sqlite($pool) => $body,
            Loader::Postgres($pool) => $body,
        }
    };
}

/// Inserts `people` people with [`RESOURCES_PER_PERSON`] connections each; returns their ids
/// (person `p`'s connection to resource `r` holds the access token `at-{p}-{r}-…`).
pub async fn populate(url: &str, ring: &KeyRing, people: usize) -> anyhow::Result<Vec<String>> {
    let loader = if url.starts_with("postgres") {
        Loader::Postgres(PgPool::connect(url).await?)
    } else {
        // One writer; a large page cache for the bulk load only (Doorman's pool keeps its own).
        let options = SqliteConnectOptions::from_str(url)?
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .pragma("cache_size", "-262144");
        Loader::Sqlite(
            SqlitePoolOptions::new()
                .max_connections(1)
                .connect_with(options)
                .await?,
        )
    };
    let ids: Vec<String> = (0..people).map(|_| random_token(16)).collect();
    let now = crate::layer2::now_ms();
    // Last used a day ago: each cache miss records its use (`last_used_at`), as a person's
    // first call of the day does; a use from minutes ago would need no write.
    let used = now - 24 * 3600 * 1000;
    let chunks: Vec<_> = (0..people)
        .step_by(PEOPLE_PER_STATEMENT)
        .map(|start| start..(start + PEOPLE_PER_STATEMENT).min(people))
        .collect();
    for group in chunks.chunks(STATEMENTS_PER_TRANSACTION) {
        // Sealed before the transaction opens, so the database waits on nothing.
        let rows: Vec<Vec<[String; 6]>> = group
            .iter()
            .map(|chunk| {
                chunk
                    .clone()
                    .flat_map(|p| (0..RESOURCES_PER_PERSON).map(move |r| (p, r)))
                    .map(|(p, r)| connection_values(ring, &ids[p], p, r))
                    .collect()
            })
            .collect();
        on_loader!(loader, pool => async {
            let mut tx = pool.begin().await?;
            for (chunk, rows) in group.iter().zip(&rows) {
                let q = multi_row(
                    "INSERT INTO users (id, issuer, subject, username, created_at) VALUES ",
                    chunk.len(),
                    3,
                    |v| format!("({}, 'local', {}, {}, {now})", v[0], v[1], v[2]),
                );
                let mut query = sqlx::query(sqlx::AssertSqlSafe(q));
                for p in chunk.clone() {
                    query = query.bind(&ids[p]).bind(&ids[p]).bind(format!("person{p}"));
                }
                query.execute(&mut *tx).await?;
                let q = multi_row(
                    "INSERT INTO connections (id, user_id, resource, account, access_token_sealed, \
                     refresh_token_sealed, scopes, authorized_at, expires_at, binding, binding_target, \
                     created_at, updated_at, selected_at, last_used_at) VALUES ",
                    rows.len(),
                    6,
                    |v| format!(
                        "({}, {}, {}, {}, {}, {}, 'read write', {now}, NULL, 'user', NULL, {now}, {now}, {now}, {used})",
                        v[0], v[1], v[2], v[3], v[4], v[5]
                    ),
                );
                let mut query = sqlx::query(sqlx::AssertSqlSafe(q));
                for row in rows {
                    for v in row {
                        query = query.bind(v);
                    }
                }
                query.execute(&mut *tx).await?;
            }
            tx.commit().await?;
            Ok::<_, sqlx::Error>(())
        }
        .await)?;
    }
    // What a long-running deployment's tables would be: statistics (`PRAGMA optimize`), and on
    // PostgreSQL what autovacuum leaves (the visibility map and hint bits set). Otherwise
    // autovacuum starts on the million new rows while lookups are measured, and each first read
    // of a page sets its hint bits.
    match &loader {
        Loader::Sqlite(pool) => sqlx::query("ANALYZE").execute(pool).await.map(|_| ())?,
        Loader::Postgres(pool) => sqlx::query("VACUUM (ANALYZE)")
            .execute(pool)
            .await
            .map(|_| ())?,
    }
    on_loader!(loader, pool => pool.close().await);
    Ok(ids)
}

/// One connection's bound values: id, person, resource, account, sealed access and refresh
/// tokens (the access token names its pair, so a lookup can check it got the right one).
fn connection_values(ring: &KeyRing, user: &str, p: usize, r: usize) -> [String; 6] {
    let id = random_token(16);
    let resource = resource_name(r);
    let access = format!("at-{p}-{r}-{}", random_token(24));
    let refresh = format!("rt-{}", random_token(24));
    let access = tokens::seal(ring, tokens::Which::Access, &id, user, &resource, &access);
    let refresh = tokens::seal(ring, tokens::Which::Refresh, &id, user, &resource, &refresh);
    let account = format!("person{p}@{resource}");
    [id, user.to_owned(), resource, account, access, refresh]
}

/// `head` followed by `rows` groups, each formatted by `group` from its `width` placeholders.
fn multi_row(head: &str, rows: usize, width: usize, group: impl Fn(&[String]) -> String) -> String {
    let mut q = String::from(head);
    for i in 0..rows {
        if i > 0 {
            q.push_str(", ");
        }
        let slots: Vec<String> = (1..=width).map(|k| format!("${}", i * width + k)).collect();
        q.push_str(&group(&slots));
    }
    q
}

/// Creates an empty database on the server at `base` (as the store's tests do); returns its URL
/// and name.
async fn fresh_postgres(base: &str) -> anyhow::Result<(String, String)> {
    let admin = PgPool::connect(base).await?;
    let name = format!(
        "doorman_bench_{}",
        random_token(9).to_lowercase().replace('-', "_")
    );
    // The name is made of random url-safe characters only.
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&admin)
        .await?;
    admin.close().await;
    let (prefix, _) = base
        .rsplit_once('/')
        .ok_or_else(|| anyhow::anyhow!("a PostgreSQL URL has a database path"))?;
    Ok((format!("{prefix}/{name}"), name))
}

async fn drop_postgres(base: &str, name: &str) {
    let dropped = async {
        let admin = PgPool::connect(base).await?;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {name}"
        )))
        .execute(&admin)
        .await?;
        admin.close().await;
        Ok::<_, anyhow::Error>(())
    }
    .await;
    if let Err(e) = dropped {
        eprintln!("vault: could not drop the bench database {name}: {e}");
    }
}

/// The vault section of `latest.md`.
pub fn markdown(v: &Value) -> String {
    let mut s = format!(
        "\n## Vault lookups: {} stored connections ({} people × {} resources)\n\n\
         One lookup = one person's active connection to one resource. Store: \
         `Store::connections_of`; vault, cache miss: `Vault::credential` for a pair not looked up \
         in the last 5 s (store query, decryption, header, the use noted for the `last_used_at` \
         writer; each connection was last used a day ago); vault, cache hit: the same pair again \
         within 5 s. The three take turns in rounds. Empty round trip (PostgreSQL): a prepared \
         `SELECT 1` on a connection of the bench's own, after each store lookup: the floor any \
         lookup on that server pays, measured in the same minute.\n\n\
         | engine | store p50/p99 µs | vault, cache miss p50/p99 µs | vault, cache hit p50/p99 µs | empty round trip p50/p99 µs | lookups (store/miss/hit) | bulk insert |\n\
         |---|---|---|---|---|---|---:|\n",
        v["connections"], v["people"], v["resources_per_person"]
    );
    for e in v["engines"].as_array().into_iter().flatten() {
        let pair = |k: &str| format!("{}/{}", e[k]["p50_us"], e[k]["p99_us"]);
        let floor = match e.get("round_trip") {
            Some(_) => pair("round_trip"),
            None => "—".to_owned(),
        };
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} | {}/{}/{} | {:.1} s |\n",
            e["engine"].as_str().unwrap_or(""),
            pair("store"),
            pair("vault_miss"),
            pair("vault_hit"),
            floor,
            e["store"]["count"],
            e["vault_miss"]["count"],
            e["vault_hit"]["count"],
            e["insert_seconds"].as_f64().unwrap_or(0.0),
        ));
    }
    s
}
