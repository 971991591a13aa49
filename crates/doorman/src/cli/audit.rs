//! `doorman audit`: query the audit trail.

use std::str::FromStr;

use anyhow::{Context, bail};
use clap::Args;

use super::{table, utc};
use crate::{
    audit::AuditFilter,
    clock::{Clock, SystemClock},
    config::{Config, ConfigDuration},
};

#[derive(Debug, Args)]
pub struct AuditArgs {
    /// A person: username, email or Doorman id; a service client as `client:{client_id}`.
    #[arg(long)]
    user: Option<String>,
    /// A tool, prompt or resource URI as clients see it; `*` matches any run of characters.
    #[arg(long)]
    tool: Option<String>,
    /// A resource (layer 2) by name.
    #[arg(long)]
    resource: Option<String>,
    /// `allowed`, `denied`, `connection_required` or `step_up_required`.
    #[arg(long)]
    decision: Option<String>,
    /// `call` (tool calls, prompt gets, resource reads) or `security` (sign-ins, consents,
    /// connections, key rotations).
    #[arg(long)]
    kind: Option<String>,
    /// From this time: RFC 3339 (`2026-11-27T09:00:00Z`), a date (`2026-11-27`), or a
    /// duration ago (`1h`, `7d`).
    #[arg(long)]
    since: Option<String>,
    /// Until this time (same forms as --since).
    #[arg(long)]
    until: Option<String>,
    /// At most this many records, newest first.
    #[arg(long, default_value_t = 100)]
    limit: i64,
    /// One JSON array instead of a table.
    #[arg(long)]
    json: bool,
}

/// `2026-11-27T09:00:00Z`, `2026-11-27`, or a duration ago (`90m`).
fn time_arg(s: &str, now_ms: i64) -> anyhow::Result<i64> {
    if let Ok(d) = ConfigDuration::from_str(s) {
        return Ok(now_ms - d.0.as_millis() as i64);
    }
    let (date, time) = s
        .trim_end_matches('Z')
        .split_once('T')
        .unwrap_or((s, "00:00:00"));
    let num = |v: &str| {
        v.parse::<i64>()
            .with_context(|| format!("{s:?} is not a time"))
    };
    let d: Vec<&str> = date.split('-').collect();
    let t: Vec<&str> = time.split(':').collect();
    if d.len() != 3 || t.len() != 3 {
        bail!("{s:?} is not a time: use 2026-11-27T09:00:00Z, 2026-11-27 or a duration like 1h");
    }
    let (y, m, day) = (num(d[0])?, num(d[1])?, num(d[2])?);
    let (h, mi, sec) = (
        num(t[0])?,
        num(t[1])?,
        num(t[2].split('.').next().unwrap_or("0"))?,
    );
    if !(1..=12).contains(&m) || !(1..=31).contains(&day) || h > 23 || mi > 59 || sec > 60 {
        bail!("{s:?} is not a valid time");
    }
    // Days from the civil date (H. Hinnant's algorithm, proleptic Gregorian).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Ok(((days * 86_400) + h * 3600 + mi * 60 + sec) * 1000)
}

pub async fn run(args: AuditArgs, config: &Config) -> anyhow::Result<()> {
    super::with_store(config, async |store, _ring| {
        let now = SystemClock.now_ms();
        let person_id = match &args.user {
            Some(u) => Some(
                store
                    .person_named(u)
                    .await?
                    .map_or_else(|| u.clone(), |p| p.id),
            ),
            None => None,
        };
        let filter = AuditFilter {
            person_id,
            name: args.tool.clone(),
            resource: args.resource.clone(),
            decision: args.decision.clone(),
            kind: args.kind.clone(),
            since: args
                .since
                .as_deref()
                .map(|s| time_arg(s, now))
                .transpose()?,
            until: args
                .until
                .as_deref()
                .map(|s| time_arg(s, now))
                .transpose()?,
            limit: args.limit.clamp(1, 100_000),
        };
        let rows = store.audit_events(&filter).await?;
        if args.json {
            println!("{}", serde_json::to_string_pretty(&rows)?);
            return Ok(());
        }
        let cells: Vec<[String; 8]> = rows
            .iter()
            .map(|e| {
                let o = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
                [
                    utc(e.at),
                    o(&e.person),
                    e.event.clone(),
                    o(&e.name),
                    match (&e.resource, &e.account) {
                        (Some(r), Some(a)) => format!("{r}:{a}"),
                        (Some(r), None) => r.clone(),
                        _ => "-".into(),
                    },
                    match (&e.decision, &e.policy) {
                        (Some(d), Some(p)) => format!("{d} ({p})"),
                        (Some(d), None) => d.clone(),
                        _ => "-".into(),
                    },
                    o(&e.outcome),
                    e.latency_us
                        .map_or("-".into(), |us| format!("{:.1}ms", us as f64 / 1000.0)),
                ]
            })
            .collect();
        print!(
            "{}",
            table(
                [
                    "TIME", "PERSON", "EVENT", "NAME", "RESOURCE", "DECISION", "OUTCOME", "LATENCY"
                ],
                &cells
            )
        );
        Ok(())
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_read_as_dates_instants_or_durations_ago() {
        assert_eq!(time_arg("1970-01-01", 0).unwrap(), 0);
        assert_eq!(
            time_arg("2026-11-27T18:00:00Z", 0).unwrap(),
            1_795_802_400_000
        );
        assert_eq!(
            super::super::utc(time_arg("2024-02-29T23:59:59Z", 0).unwrap()),
            "2024-02-29T23:59:59Z"
        );
        assert_eq!(time_arg("1h", 10_000_000).unwrap(), 10_000_000 - 3_600_000);
        assert!(time_arg("yesterday", 0).is_err());
        assert!(time_arg("2026-13-01", 0).is_err());
    }
}
