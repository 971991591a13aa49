//! `users`, `local_credentials` and `sign_in_failures`: the people who sign in to Doorman, the
//! passwords and TOTP seeds of local accounts, and the failed-attempt counters per submitted name.

use super::{Invalidation, Store, on_pool};

/// The issuer of local accounts (their subject is their id).
pub const LOCAL_ISSUER: &str = "local";

/// The issuer of service clients' principals (their subject is the client id): no person
/// signs in as one, since no sign-in path issues for this issuer.
pub const SERVICE_ISSUER: &str = "client";

/// The longest username accepted.
pub const MAX_USERNAME_LEN: usize = 64;

/// The stored form of a username: trimmed and lowercased, 1–64 ASCII letters, digits, `.`, `_`,
/// `-` or `@`; `None` when the name cannot be one.
pub fn normalize_username(raw: &str) -> Option<String> {
    let name = raw.trim().to_ascii_lowercase();
    let valid = !name.is_empty()
        && name.len() <= MAX_USERNAME_LEN
        && name
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-' | b'@'));
    valid.then_some(name)
}

/// One person as stored.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct UserRow {
    pub id: String,
    /// `local` for local accounts; the provider's issuer for SSO people.
    pub issuer: String,
    pub subject: String,
    pub username: Option<String>,
    pub email: Option<String>,
    pub name: Option<String>,
    /// The person's groups (a JSON list of strings in the database).
    pub groups: super::Groups,
    pub is_admin: bool,
    pub disabled_at: Option<i64>,
    pub created_at: i64,
}

/// A local account's credentials as stored.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct LocalCredentialRow {
    pub user_id: String,
    /// An argon2id PHC string.
    pub password_hash: String,
    /// The TOTP seed, sealed with the key ring (aad `totp:{user_id}`); `None`: no TOTP.
    pub totp_secret_sealed: Option<String>,
    /// The time step of the last TOTP code accepted.
    pub totp_last_step: Option<i64>,
    /// A new TOTP seed (sealed like the active one) waiting for a code that confirms it.
    pub totp_pending_sealed: Option<String>,
    pub updated_at: i64,
}

/// Failed sign-ins for one submitted name (by its SHA-256), whether or not the account exists.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct SignInFailureRow {
    pub name_hash: String,
    pub failures: i64,
    pub last_failure_at: i64,
    pub locked_until: Option<i64>,
}

/// The columns of [`UserRow`], as a literal for `concat!`.
macro_rules! user_columns {
    () => {
        "id, issuer, subject, username, email, name, groups, is_admin, disabled_at, created_at"
    };
}

/// A stored failure counter that no longer matters: its lockout is over, or its last failure is
/// older than the lockout window (`$2` now, `$4` the window). In `SET`, `sign_in_failures.*` are
/// the values before the update, on both engines.
macro_rules! failures_restart {
    () => {
        "(sign_in_failures.locked_until <= $2 OR (sign_in_failures.locked_until IS NULL \
         AND sign_in_failures.last_failure_at <= $2 - $4))"
    };
}

const INSERT_USER: &str = "INSERT INTO users (id, issuer, subject, username, email, name, groups, \
     is_admin, disabled_at, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
     ON CONFLICT DO NOTHING";

impl Store {
    /// Inserts a person; false (and nothing written) when the id, the username or the
    /// (issuer, subject) pair is already taken.
    pub async fn insert_user(&self, row: &UserRow) -> anyhow::Result<bool> {
        let n = on_pool!(self, pool => sqlx::query(INSERT_USER)
            .bind(&row.id)
            .bind(&row.issuer)
            .bind(&row.subject)
            .bind(&row.username)
            .bind(&row.email)
            .bind(&row.name)
            .bind(&row.groups)
            .bind(row.is_admin)
            .bind(row.disabled_at)
            .bind(row.created_at)
            .execute(pool)
            .await
            .map(|r| r.rows_affected()))?;
        Ok(n > 0)
    }

    /// Inserts a local account and its password in one transaction; false (and nothing written)
    /// when the person is already taken as in [`Store::insert_user`].
    pub async fn insert_local_user(
        &self,
        row: &UserRow,
        password_hash: &str,
        now_ms: i64,
    ) -> anyhow::Result<bool> {
        let inserted = on_pool!(self, pool => async {
            let mut tx = pool.begin().await?;
            let n = sqlx::query(INSERT_USER)
                .bind(&row.id)
                .bind(&row.issuer)
                .bind(&row.subject)
                .bind(&row.username)
                .bind(&row.email)
                .bind(&row.name)
                .bind(&row.groups)
                .bind(row.is_admin)
                .bind(row.disabled_at)
                .bind(row.created_at)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if n == 0 {
                tx.rollback().await?;
                return Ok::<_, sqlx::Error>(false);
            }
            sqlx::query(
                "INSERT INTO local_credentials (user_id, password_hash, updated_at) \
                 VALUES ($1, $2, $3)",
            )
            .bind(&row.id)
            .bind(password_hash)
            .bind(now_ms)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(true)
        }
        .await)?;
        Ok(inserted)
    }

    pub async fn user(&self, id: &str) -> anyhow::Result<Option<UserRow>> {
        let row = on_pool!(self, pool => sqlx::query_as::<_, UserRow>(
            concat!("SELECT ", user_columns!(), " FROM users WHERE id = $1"),
        )
        .bind(id)
        .fetch_optional(pool)
        .await)?;
        Ok(row)
    }

    /// The person with this username (compared in its stored form: trimmed, lowercased).
    pub async fn user_by_username(&self, username: &str) -> anyhow::Result<Option<UserRow>> {
        let name = username.trim().to_ascii_lowercase();
        let row = on_pool!(self, pool => sqlx::query_as::<_, UserRow>(
            concat!("SELECT ", user_columns!(), " FROM users WHERE username = $1"),
        )
        .bind(&name)
        .fetch_optional(pool)
        .await)?;
        Ok(row)
    }

    /// The first person with this email (case-insensitive), for operator lookups.
    pub async fn user_by_email(&self, email: &str) -> anyhow::Result<Option<UserRow>> {
        let row = on_pool!(self, pool => sqlx::query_as::<_, UserRow>(
            concat!("SELECT ", user_columns!(), " FROM users WHERE lower(email) = lower($1) ORDER BY created_at LIMIT 1"),
        )
        .bind(email.trim())
        .fetch_optional(pool)
        .await)?;
        Ok(row)
    }

    /// The principal of a service client (issuer [`SERVICE_ISSUER`], subject the client id):
    /// found, or made now. Nodes that make it at once agree on the stored one.
    pub async fn service_principal(
        &self,
        client_id: &str,
        name: Option<&str>,
        now_ms: i64,
    ) -> anyhow::Result<UserRow> {
        let find = async || -> anyhow::Result<Option<UserRow>> {
            Ok(on_pool!(self, pool => sqlx::query_as(
                concat!("SELECT ", user_columns!(), " FROM users WHERE issuer = $1 AND subject = $2"),
            )
            .bind(SERVICE_ISSUER)
            .bind(client_id)
            .fetch_optional(pool)
            .await)?)
        };
        if let Some(u) = find().await? {
            return Ok(u);
        }
        self.insert_user(&UserRow {
            id: crate::crypto::random_token(16),
            issuer: SERVICE_ISSUER.to_owned(),
            subject: client_id.to_owned(),
            username: None,
            email: None,
            name: name.map(str::to_owned),
            groups: Default::default(),
            is_admin: false,
            disabled_at: None,
            created_at: now_ms,
        })
        .await?;
        find().await?.ok_or_else(|| {
            anyhow::anyhow!("the principal of service client {client_id:?} was not stored")
        })
    }

    /// A person named the way operators name people: username, email or Doorman id; a service
    /// client's principal as `client:{client_id}`.
    pub async fn person_named(&self, who: &str) -> anyhow::Result<Option<UserRow>> {
        if let Some(client) = who.strip_prefix("client:") {
            let id = self.user_id_by_subject(SERVICE_ISSUER, client).await?;
            return match id {
                Some(id) => self.user(&id).await,
                None => Ok(None),
            };
        }
        if let Some(u) = self.user_by_username(who).await? {
            return Ok(Some(u));
        }
        // An email two people share (two providers, a local account) names neither: acting on
        // the wrong one (disabling it, say) would be worse than asking for the id.
        let same_email: Vec<UserRow> = on_pool!(self, pool => sqlx::query_as(
            concat!("SELECT ", user_columns!(), " FROM users WHERE lower(email) = lower($1) ORDER BY created_at LIMIT 5"),
        )
        .bind(who.trim())
        .fetch_all(pool)
        .await)?;
        match same_email.len() {
            0 => {}
            1 => return Ok(same_email.into_iter().next()),
            _ => anyhow::bail!(
                "several people have the email {who:?}; name one by its Doorman id: {}",
                same_email
                    .iter()
                    .map(|u| u.id.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
        self.user(who).await
    }

    /// Every person, by username (people without one last, oldest first).
    pub async fn users(&self) -> anyhow::Result<Vec<UserRow>> {
        let rows = on_pool!(self, pool => sqlx::query_as::<_, UserRow>(concat!(
            "SELECT ",
            user_columns!(),
            " FROM users ORDER BY username IS NULL, username, created_at, id"
        ))
        .fetch_all(pool)
        .await)?;
        Ok(rows)
    }

    pub async fn count_users(&self) -> anyhow::Result<i64> {
        let (n,): (i64,) = on_pool!(self, pool => sqlx::query_as("SELECT COUNT(*) FROM users")
            .fetch_one(pool)
            .await)?;
        Ok(n)
    }

    /// Disables (`Some(time)`) or enables (`None`) a person; returns whether they exist.
    ///
    /// Disabling also revokes every grant they hold (so every client's refresh tokens stop
    /// working) and ends their browser sign-ins, in the same transaction.
    pub async fn set_user_disabled(
        &self,
        id: &str,
        disabled_at: Option<i64>,
    ) -> anyhow::Result<bool> {
        let (found, revoked) = on_pool!(self, pool => async {
            let mut tx = pool.begin().await?;
            let n = sqlx::query("UPDATE users SET disabled_at = $2 WHERE id = $1")
                .bind(id)
                .bind(disabled_at)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            let mut revoked: Vec<(String,)> = Vec::new();
            if let (Some(at), true) = (disabled_at, n > 0) {
                revoked = sqlx::query_as(
                    "UPDATE grants SET revoked_at = $2, revoked_reason = 'user disabled' \
                     WHERE user_id = $1 AND revoked_at IS NULL RETURNING id",
                )
                .bind(id)
                .bind(at)
                .fetch_all(&mut *tx)
                .await?;
                sqlx::query("DELETE FROM browser_sessions WHERE user_id = $1")
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            Ok::<_, sqlx::Error>((n > 0, revoked))
        }
        .await)?;
        if found {
            let mut changes: Vec<Invalidation> = revoked
                .into_iter()
                .map(|(g,)| Invalidation::Grant(g))
                .collect();
            changes.push(Invalidation::Person(id.to_owned()));
            self.announce(&changes).await;
        }
        Ok(found)
    }

    /// The ids of the local accounts whose sign-in needs a TOTP code.
    pub async fn users_with_totp(&self) -> anyhow::Result<Vec<String>> {
        let rows: Vec<(String,)> = on_pool!(self, pool => sqlx::query_as(
            "SELECT user_id FROM local_credentials WHERE totp_secret_sealed IS NOT NULL",
        )
        .fetch_all(pool)
        .await)?;
        Ok(rows.into_iter().map(|(id,)| id).collect())
    }

    pub async fn local_credentials(
        &self,
        user_id: &str,
    ) -> anyhow::Result<Option<LocalCredentialRow>> {
        let row = on_pool!(self, pool => sqlx::query_as::<_, LocalCredentialRow>(
            "SELECT user_id, password_hash, totp_secret_sealed, totp_last_step, totp_pending_sealed, \
             updated_at FROM local_credentials WHERE user_id = $1",
        )
        .bind(user_id)
        .fetch_optional(pool)
        .await)?;
        Ok(row)
    }

    /// Sets a local account's password, creating its credentials row if needed (TOTP is kept).
    pub async fn upsert_local_password(
        &self,
        user_id: &str,
        password_hash: &str,
        now_ms: i64,
    ) -> anyhow::Result<()> {
        on_pool!(self, pool => sqlx::query(
            "INSERT INTO local_credentials (user_id, password_hash, updated_at) \
             VALUES ($1, $2, $3) \
             ON CONFLICT (user_id) DO UPDATE SET password_hash = excluded.password_hash, \
             updated_at = excluded.updated_at",
        )
        .bind(user_id)
        .bind(password_hash)
        .bind(now_ms)
        .execute(pool)
        .await
        .map(|_| ()))?;
        Ok(())
    }

    /// Replaces a local account's password; returns whether the account has credentials.
    pub async fn update_local_password(
        &self,
        user_id: &str,
        password_hash: &str,
        now_ms: i64,
    ) -> anyhow::Result<bool> {
        let n = on_pool!(self, pool => sqlx::query(
            "UPDATE local_credentials SET password_hash = $2, updated_at = $3 WHERE user_id = $1",
        )
        .bind(user_id)
        .bind(password_hash)
        .bind(now_ms)
        .execute(pool)
        .await
        .map(|r| r.rows_affected()))?;
        Ok(n > 0)
    }

    /// Sets (a sealed seed) or removes (`None`) a local account's TOTP, forgetting the last
    /// accepted step and any seed waiting for confirmation; returns whether the account has
    /// credentials.
    pub async fn update_local_totp(
        &self,
        user_id: &str,
        totp_secret_sealed: Option<&str>,
        now_ms: i64,
    ) -> anyhow::Result<bool> {
        let n = on_pool!(self, pool => sqlx::query(
            "UPDATE local_credentials SET totp_secret_sealed = $2, totp_last_step = NULL, \
             totp_pending_sealed = NULL, updated_at = $3 WHERE user_id = $1",
        )
        .bind(user_id)
        .bind(totp_secret_sealed)
        .bind(now_ms)
        .execute(pool)
        .await
        .map(|r| r.rows_affected()))?;
        Ok(n > 0)
    }

    /// Keeps a new sealed TOTP seed until a code confirms it (the active seed, if any, stays in
    /// force); returns whether the account has credentials.
    pub async fn set_pending_totp(
        &self,
        user_id: &str,
        sealed: &str,
        now_ms: i64,
    ) -> anyhow::Result<bool> {
        let n = on_pool!(self, pool => sqlx::query(
            "UPDATE local_credentials SET totp_pending_sealed = $2, updated_at = $3 \
             WHERE user_id = $1",
        )
        .bind(user_id)
        .bind(sealed)
        .bind(now_ms)
        .execute(pool)
        .await
        .map(|r| r.rows_affected()))?;
        Ok(n > 0)
    }

    /// Makes the waiting seed `sealed` the active one, with `step` (the confirming code's) as
    /// the last accepted step. False when that seed is no longer the one waiting (replaced or
    /// removed meanwhile), so a confirmation can never activate a seed it did not check.
    pub async fn activate_pending_totp(
        &self,
        user_id: &str,
        sealed: &str,
        step: i64,
        now_ms: i64,
    ) -> anyhow::Result<bool> {
        let n = on_pool!(self, pool => sqlx::query(
            "UPDATE local_credentials SET totp_secret_sealed = totp_pending_sealed, \
             totp_pending_sealed = NULL, totp_last_step = $3, updated_at = $4 \
             WHERE user_id = $1 AND totp_pending_sealed = $2",
        )
        .bind(user_id)
        .bind(sealed)
        .bind(step)
        .bind(now_ms)
        .execute(pool)
        .await
        .map(|r| r.rows_affected()))?;
        Ok(n > 0)
    }

    /// Records `step` as the last accepted TOTP step, only if it is later than the one stored:
    /// false means the code (or an earlier one) was already used, so it must be refused.
    /// Atomic, so two sign-ins racing with the same code cannot both win.
    pub async fn accept_totp_step(&self, user_id: &str, step: i64) -> anyhow::Result<bool> {
        let n = on_pool!(self, pool => sqlx::query(
            "UPDATE local_credentials SET totp_last_step = $2 \
             WHERE user_id = $1 AND totp_secret_sealed IS NOT NULL \
             AND (totp_last_step IS NULL OR totp_last_step < $2)",
        )
        .bind(user_id)
        .bind(step)
        .execute(pool)
        .await
        .map(|r| r.rows_affected()))?;
        Ok(n > 0)
    }

    pub async fn sign_in_failure(
        &self,
        name_hash: &str,
    ) -> anyhow::Result<Option<SignInFailureRow>> {
        let row = on_pool!(self, pool => sqlx::query_as::<_, SignInFailureRow>(
            "SELECT name_hash, failures, last_failure_at, locked_until FROM sign_in_failures \
             WHERE name_hash = $1",
        )
        .bind(name_hash)
        .fetch_optional(pool)
        .await)?;
        Ok(row)
    }

    /// Counts one failed sign-in for a name, atomically, and returns the counter after it.
    ///
    /// The count starts again from 1 when the previous lockout has ended or the previous failure
    /// is older than `lockout_ms`; when it reaches `max_failed` the name is locked until
    /// `now_ms + lockout_ms`.
    pub async fn record_sign_in_failure(
        &self,
        name_hash: &str,
        now_ms: i64,
        max_failed: i64,
        lockout_ms: i64,
    ) -> anyhow::Result<SignInFailureRow> {
        const SQL: &str = concat!(
            "INSERT INTO sign_in_failures (name_hash, failures, last_failure_at, locked_until) \
             VALUES ($1, 1, $2, CASE WHEN $3 <= 1 THEN $2 + $4 ELSE NULL END) \
             ON CONFLICT (name_hash) DO UPDATE SET failures = CASE WHEN ",
            failures_restart!(),
            " THEN 1 ELSE sign_in_failures.failures + 1 END, last_failure_at = $2, \
             locked_until = CASE WHEN ",
            failures_restart!(),
            " THEN (CASE WHEN $3 <= 1 THEN $2 + $4 ELSE NULL END) \
             WHEN sign_in_failures.locked_until IS NOT NULL THEN sign_in_failures.locked_until \
             WHEN sign_in_failures.failures + 1 >= $3 THEN $2 + $4 ELSE NULL END \
             RETURNING name_hash, failures, last_failure_at, locked_until"
        );
        let row = on_pool!(self, pool => sqlx::query_as::<_, SignInFailureRow>(SQL)
        .bind(name_hash)
        .bind(now_ms)
        .bind(max_failed)
        .bind(lockout_ms)
        .fetch_one(pool)
        .await)?;
        Ok(row)
    }

    /// Gives back one reserved attempt (its password was right, a second factor is asked
    /// next); a lock it alone caused is lifted with it.
    pub async fn release_sign_in_attempt(
        &self,
        name_hash: &str,
        max_failed: i64,
    ) -> anyhow::Result<()> {
        on_pool!(self, pool => sqlx::query(
            "UPDATE sign_in_failures SET failures = failures - 1, \
             locked_until = CASE WHEN failures - 1 >= $2 THEN locked_until ELSE NULL END \
             WHERE name_hash = $1 AND failures > 0",
        )
        .bind(name_hash)
        .bind(max_failed)
        .execute(pool)
        .await
        .map(|_| ()))?;
        Ok(())
    }

    /// Forgets a name's failed sign-ins (after a success or a password reset).
    pub async fn clear_sign_in_failures(&self, name_hash: &str) -> anyhow::Result<()> {
        on_pool!(self, pool => sqlx::query("DELETE FROM sign_in_failures WHERE name_hash = $1")
            .bind(name_hash)
            .execute(pool)
            .await
            .map(|_| ()))?;
        Ok(())
    }
}
