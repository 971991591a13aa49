//! Local accounts: argon2id passwords, optional TOTP (RFC 6238), and sign-in with backoff and
//! lockout that look the same whether or not the submitted name exists.
//!
//! Failed attempts are counted per submitted name (the SHA-256 of its normalized form) in
//! `sign_in_failures`, for unknown names as for real ones. After `max_failed_sign_ins`
//! consecutive failures the name is locked for `lockout`; every failure waits a little longer
//! before it is answered; an unknown name still costs one argon2 verification. So neither the
//! answer, the lockout nor the timing tells an attacker whether an account exists.
//!
//! Under attack: each attempt is counted *before* its password is checked (a reservation, given
//! back only when the password was right), so concurrent guesses cannot all be evaluated
//! before the lockout lands; and at most [`HASHING_AT_ONCE`] argon2 checks (19 MiB each) run at
//! once, with at most [`HASHING_QUEUE`] waiting, beyond which the answer is `429` with
//! `Retry-After`, so floods cost bounded memory.

use std::{sync::Arc, time::Duration};

use argon2::{
    Algorithm, Argon2, Params, PasswordHash, PasswordHasher, PasswordVerifier, Version,
    password_hash::SaltString,
};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use secrecy::{ExposeSecret, SecretString};
use totp_rs::{Rfc6238, TOTP};
use zeroize::Zeroizing;

use crate::{
    clock::SharedClock,
    config::SignInConfig,
    crypto::{KeyRing, constant_time_eq, random_token, sha256_hex},
    store::{LOCAL_ISSUER, SignInFailureRow, Store, UserRow, normalize_username},
};

/// Passwords shorter than this (in characters) are refused.
pub const MIN_PASSWORD_CHARS: usize = 8;
/// Passwords longer than this (in characters) are refused.
pub const MAX_PASSWORD_CHARS: usize = 1024;

/// The issuer shown in authenticator apps.
const TOTP_ISSUER: &str = "Doorman";
/// RFC 6238 time step, in seconds.
const TOTP_STEP_SECS: i64 = 30;
/// Steps accepted either side of the current one (clock drift between phone and server).
const TOTP_SKEW_STEPS: i64 = 1;
/// Seed length: 160 bits, as RFC 4226 §4 recommends.
const TOTP_SEED_BYTES: usize = 20;

/// Delay before answering a failed sign-in, per failure counted so far ...
const BACKOFF_UNIT: Duration = Duration::from_millis(100);
/// ... and at most this.
const BACKOFF_CAP: Duration = Duration::from_secs(2);

/// A well-formed argon2id hash, with the same parameters as real hashes, that no known password
/// produces: verified against when the name is unknown, so that costs as much as a real account.
const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$\
    c2lnbi1pbi1kdW1teS1zYWx0$KmLUXDZmY8rrG6bm0gQwTk1XFgmixaxBMY3/iIGpo9E";

/// argon2id with the OWASP minimum parameters: 19 MiB, 2 iterations, 1 lane.
fn argon2id() -> Argon2<'static> {
    let params = Params::new(19_456, 2, 1, None).expect("the argon2 parameters are valid");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// Hashes a password with argon2id and a fresh random salt; returns the PHC string.
pub fn hash_password(password: &SecretString) -> String {
    let salt_bytes = URL_SAFE_NO_PAD
        .decode(random_token(16))
        .expect("random_token is base64url");
    let salt = SaltString::encode_b64(&salt_bytes).expect("16 bytes make a valid salt");
    argon2id()
        .hash_password(password.expose_secret().as_bytes(), &salt)
        .expect("argon2 hashing with valid parameters does not fail")
        .to_string()
}

/// Whether `password` matches a PHC hash made by [`hash_password`] (false for a malformed hash).
pub fn verify_password(password: &SecretString, hash: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(hash) else {
        return false;
    };
    // The hash carries its own parameters; argon2 uses those.
    argon2id()
        .verify_password(password.expose_secret().as_bytes(), &parsed)
        .is_ok()
}

/// Why an operator's account change was refused.
#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    #[error("invalid username {0:?}: use 1 to 64 letters, digits, '.', '_', '-' or '@'")]
    InvalidUsername(String),
    #[error("user {0:?} already exists")]
    UsernameTaken(String),
    #[error("invalid email address {0:?}")]
    InvalidEmail(String),
    #[error("the password is too short: at least {MIN_PASSWORD_CHARS} characters")]
    PasswordTooShort,
    #[error("the password is too long: at most {MAX_PASSWORD_CHARS} characters")]
    PasswordTooLong,
    #[error("no such user: {0:?}")]
    NotFound(String),
    #[error("user {0:?} signs in through {1}, not with a local password")]
    NotLocal(String, String),
    #[error("no new TOTP seed is waiting for confirmation: run `users totp NAME enable` first")]
    NoPendingTotp,
    #[error(
        "that code does not match the new TOTP seed (check the authenticator app's clock, and use the newest code)"
    )]
    TotpCodeWrong,
    #[error(transparent)]
    Store(#[from] anyhow::Error),
}

/// Why a sign-in was refused. The messages are what the person sees.
#[derive(Debug, thiserror::Error)]
pub enum SignInError {
    /// Unknown name, wrong password or disabled person: deliberately one answer.
    #[error("The username or password is incorrect.")]
    Invalid,
    /// The password was right; the account has TOTP and no code was given.
    #[error("Enter the 6-digit code from your authenticator app.")]
    TotpRequired,
    /// The password was right; the code was wrong, stale or already used.
    #[error("The authenticator code is incorrect.")]
    TotpInvalid,
    /// Too many failures for this name (existing or not).
    #[error("Too many failed attempts. Try again in {}.", minutes(*retry_after))]
    Locked { retry_after: Duration },
    /// Too many sign-ins are being checked right now (anyone's): try again shortly.
    #[error("Too many sign-ins at once. Try again in a few seconds.")]
    Busy { retry_after: Duration },
    /// The store failed; the detail is for the log, not for the person.
    #[error("Signing in is not possible right now. Try again later.")]
    Unavailable(anyhow::Error),
}

impl SignInError {
    /// A short label for logs (never the submitted name or password).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Invalid => "invalid_credentials",
            Self::TotpRequired => "totp_required",
            Self::TotpInvalid => "totp_invalid",
            Self::Locked { .. } => "locked",
            Self::Busy { .. } => "busy",
            Self::Unavailable(_) => "store_unavailable",
        }
    }
}

impl From<anyhow::Error> for SignInError {
    fn from(e: anyhow::Error) -> Self {
        Self::Unavailable(e)
    }
}

/// "N minutes", rounded up, at least one.
fn minutes(d: Duration) -> String {
    let n = d.as_secs().div_ceil(60).max(1);
    if n == 1 {
        "1 minute".into()
    } else {
        format!("{n} minutes")
    }
}

/// Local accounts over the store.
#[derive(Clone)]
pub struct Accounts {
    store: Store,
    clock: SharedClock,
    keys: Arc<KeyRing>,
    max_failed: u32,
    lockout: Duration,
    backoff_unit: Duration,
    /// Password checks running or waiting (shared by every clone).
    hashing: Arc<HashGate>,
    /// Password checks made since start (shared by every clone).
    checks: Arc<std::sync::atomic::AtomicU64>,
}

/// Argon2 checks allowed to run at once (each holds 19 MiB while it runs).
pub const HASHING_AT_ONCE: usize = 4;
/// Checks allowed to wait for one of those; more get `Busy`.
pub const HASHING_QUEUE: usize = 32;

/// Bounds the password checks in flight: a semaphore, and a count of who waits for it.
struct HashGate {
    running: tokio::sync::Semaphore,
    waiting: std::sync::atomic::AtomicUsize,
}

impl HashGate {
    fn new() -> Self {
        Self {
            running: tokio::sync::Semaphore::new(HASHING_AT_ONCE),
            waiting: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    /// A turn to hash, or `Busy` when the queue is full.
    async fn turn(&self) -> Result<tokio::sync::SemaphorePermit<'_>, SignInError> {
        use std::sync::atomic::Ordering;
        if let Ok(p) = self.running.try_acquire() {
            return Ok(p);
        }
        if self.waiting.fetch_add(1, Ordering::SeqCst) >= HASHING_QUEUE {
            self.waiting.fetch_sub(1, Ordering::SeqCst);
            return Err(SignInError::Busy {
                retry_after: Duration::from_secs(2),
            });
        }
        let permit = self.running.acquire().await;
        self.waiting.fetch_sub(1, Ordering::SeqCst);
        permit.map_err(|_| SignInError::Unavailable(anyhow::anyhow!("the password gate closed")))
    }
}

impl Accounts {
    pub fn new(
        store: Store,
        clock: SharedClock,
        keys: Arc<KeyRing>,
        config: &SignInConfig,
    ) -> Self {
        Self {
            store,
            clock,
            keys,
            max_failed: config.max_failed_sign_ins.max(1),
            lockout: config.lockout.0,
            backoff_unit: BACKOFF_UNIT,
            hashing: Arc::new(HashGate::new()),
            checks: Arc::default(),
        }
    }

    /// How many passwords were checked (argon2 runs) since start.
    pub fn password_checks(&self) -> u64 {
        self.checks.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Changes the delay per counted failure (tests use zero; the cap stays 2 s).
    pub fn with_backoff_unit(mut self, unit: Duration) -> Self {
        self.backoff_unit = unit;
        self
    }

    /// Creates a local account: `issuer = "local"`, `subject = id`, the username normalized.
    pub async fn create_local_user(
        &self,
        username: &str,
        password: &SecretString,
        email: Option<&str>,
        admin: bool,
    ) -> Result<UserRow, AccountError> {
        let name = normalize_username(username)
            .ok_or_else(|| AccountError::InvalidUsername(username.to_owned()))?;
        let email = match email.map(str::trim).filter(|e| !e.is_empty()) {
            Some(e) if !valid_email(e) => return Err(AccountError::InvalidEmail(e.to_owned())),
            other => other.map(str::to_owned),
        };
        check_password(password)?;
        if self.store.user_by_username(&name).await?.is_some() {
            return Err(AccountError::UsernameTaken(name));
        }
        let hash = hash_blocking(password.clone()).await?;
        let now = self.clock.now_ms();
        let id = random_token(16);
        let row = UserRow {
            id: id.clone(),
            issuer: LOCAL_ISSUER.into(),
            subject: id,
            username: Some(name.clone()),
            email,
            name: None,
            groups: Default::default(),
            is_admin: admin,
            disabled_at: None,
            created_at: now,
        };
        if !self.store.insert_local_user(&row, &hash, now).await? {
            // Someone took the name between the check and the insert.
            return Err(AccountError::UsernameTaken(name));
        }
        Ok(row)
    }

    /// Checks a sign-in: the password, then TOTP when the account has it.
    pub async fn sign_in(
        &self,
        username: &str,
        password: &SecretString,
        totp: Option<&str>,
    ) -> Result<UserRow, SignInError> {
        let now = self.clock.now_ms();
        // Counted per submitted name, in the form a username is stored in.
        let name_hash = sha256_hex(&username.trim().to_ascii_lowercase());
        if let Some(failure) = self.store.sign_in_failure(&name_hash).await?
            && let Some(until) = failure.locked_until
            && until > now
        {
            return Err(SignInError::Locked {
                retry_after: Duration::from_millis((until - now) as u64),
            });
        }
        // A turn to hash first (a flood waits or is told to come back), then the attempt is
        // reserved: counted as a failure now, atomically, and given back only if it succeeds.
        let _turn = self.hashing.turn().await?;
        let reserved = self.reserve(&name_hash, now).await?;

        let user = match normalize_username(username) {
            Some(name) => self.store.user_by_username(&name).await?,
            None => None,
        };
        let credentials = match &user {
            Some(u) if u.issuer == LOCAL_ISSUER => self.store.local_credentials(&u.id).await?,
            _ => None,
        };
        // Unknown names cost one verification too, against a hash nobody knows the password of.
        let hash = credentials
            .as_ref()
            .map_or(DUMMY_HASH, |c| c.password_hash.as_str())
            .to_owned();
        self.checks
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let password_ok = verify_blocking(password.clone(), hash).await?;
        let (user, credentials) = match (user, credentials) {
            (Some(u), Some(c)) if password_ok && u.disabled_at.is_none() => (u, c),
            _ => return Err(self.fail(&reserved, now, SignInError::Invalid).await),
        };

        if let Some(sealed) = &credentials.totp_secret_sealed {
            let Some(code) = totp.map(str::trim).filter(|c| !c.is_empty()) else {
                // The password was right: this attempt is given back (the code is asked next).
                self.store
                    .release_sign_in_attempt(&name_hash, i64::from(self.max_failed))
                    .await?;
                return Err(SignInError::TotpRequired);
            };
            let seed = self
                .keys
                .open(sealed, &totp_aad(&user.id))
                .map_err(|e| SignInError::Unavailable(e.context("cannot open the TOTP seed")))?;
            let accepted = match matching_step(&seed, code, now) {
                Some(step) => self.store.accept_totp_step(&user.id, step).await?,
                None => false,
            };
            if !accepted {
                return Err(self.fail(&reserved, now, SignInError::TotpInvalid).await);
            }
        }

        self.store.clear_sign_in_failures(&name_hash).await?;
        Ok(user)
    }

    /// Reserves one attempt for `name_hash`: counted as a failure at once. `Locked` when the
    /// name is locked, or when earlier attempts (maybe still running) used up the allowance.
    async fn reserve(&self, name_hash: &str, now: i64) -> Result<SignInFailureRow, SignInError> {
        let lockout_ms = i64::try_from(self.lockout.as_millis()).unwrap_or(i64::MAX / 4);
        let row = self
            .store
            .record_sign_in_failure(name_hash, now, i64::from(self.max_failed), lockout_ms)
            .await?;
        if row.failures > i64::from(self.max_failed) {
            let until = row.locked_until.unwrap_or(now + lockout_ms);
            return Err(SignInError::Locked {
                retry_after: Duration::from_millis((until - now).max(0) as u64),
            });
        }
        Ok(row)
    }

    /// An attempt failed (it was counted when reserved): waits the backoff, and says what to
    /// answer: `error`, or `Locked` when this attempt used up the allowance.
    async fn fail(&self, row: &SignInFailureRow, now: i64, error: SignInError) -> SignInError {
        let failures = u32::try_from(row.failures).unwrap_or(u32::MAX);
        let delay = self.backoff_unit.saturating_mul(failures).min(BACKOFF_CAP);
        tokio::time::sleep(delay).await;
        match row.locked_until {
            Some(until) if until > now => SignInError::Locked {
                retry_after: Duration::from_millis((until - now) as u64),
            },
            _ => error,
        }
    }

    /// Sets a new password for a local account and lifts any lockout on its name.
    pub async fn reset_password(
        &self,
        username: &str,
        password: &SecretString,
    ) -> Result<(), AccountError> {
        let user = self.local_user(username).await?;
        check_password(password)?;
        let hash = hash_blocking(password.clone()).await?;
        if !self
            .store
            .update_local_password(&user.id, &hash, self.clock.now_ms())
            .await?
        {
            return Err(not_local(&user));
        }
        let name = user.username.as_deref().unwrap_or_default();
        self.store.clear_sign_in_failures(&sha256_hex(name)).await?;
        // A reset often follows a leak: whoever signed in with the old password is signed out.
        self.store
            .sign_out_everywhere(&user.id, self.clock.now_ms(), "password reset")
            .await?;
        Ok(())
    }

    /// Disables (`true`) or enables a person by username. Disabling revokes their grants and
    /// ends their browser sign-ins.
    pub async fn set_disabled(&self, who: &str, disabled: bool) -> Result<UserRow, AccountError> {
        // Anyone by the names operators use: a local username, an SSO person's email or id, a
        // service client as `client:{client_id}`.
        let user = self
            .store
            .person_named(who.trim())
            .await?
            .ok_or_else(|| AccountError::NotFound(who.trim().to_owned()))?;
        let at = disabled.then(|| self.clock.now_ms());
        if !self.store.set_user_disabled(&user.id, at).await? {
            return Err(AccountError::NotFound(who.trim().to_owned()));
        }
        Ok(UserRow {
            disabled_at: at,
            ..user
        })
    }

    /// Gives a local account a new TOTP seed and returns the `otpauth://` URI to load into an
    /// authenticator app. The seed takes effect only when [`Accounts::confirm_totp`] is given a
    /// code from it (so a seed nobody loaded cannot lock the person out); until then any
    /// earlier seed stays in force.
    pub async fn enable_totp(&self, user_id: &str) -> Result<String, AccountError> {
        let user = self.local_user_by_id(user_id).await?;
        let seed = Zeroizing::new(
            URL_SAFE_NO_PAD
                .decode(random_token(TOTP_SEED_BYTES))
                .expect("random_token is base64url"),
        );
        let sealed = self.keys.seal(&seed, &totp_aad(&user.id));
        if !self
            .store
            .set_pending_totp(&user.id, &sealed, self.clock.now_ms())
            .await?
        {
            return Err(not_local(&user));
        }
        let label = user.username.as_deref().unwrap_or(&user.id);
        Ok(otpauth_uri(label, &totp_for(&seed).get_secret_base32()))
    }

    /// Confirms the seed [`Accounts::enable_totp`] gave with a current code from it: from now
    /// on sign-in needs a code from that seed, and the confirming code is spent.
    pub async fn confirm_totp(&self, user_id: &str, code: &str) -> Result<(), AccountError> {
        let user = self.local_user_by_id(user_id).await?;
        let credentials = self
            .store
            .local_credentials(&user.id)
            .await?
            .ok_or_else(|| not_local(&user))?;
        let Some(sealed) = credentials.totp_pending_sealed else {
            return Err(AccountError::NoPendingTotp);
        };
        let seed = self
            .keys
            .open(&sealed, &totp_aad(&user.id))
            .map_err(AccountError::Store)?;
        let step = matching_step(&seed, code.trim(), self.clock.now_ms())
            .ok_or(AccountError::TotpCodeWrong)?;
        // One statement: the seed checked here is the one that becomes active, or nothing does.
        if !self
            .store
            .activate_pending_totp(&user.id, &sealed, step, self.clock.now_ms())
            .await?
        {
            return Err(AccountError::NoPendingTotp);
        }
        Ok(())
    }

    /// Removes a local account's TOTP: sign-in needs the password only.
    pub async fn disable_totp(&self, user_id: &str) -> Result<(), AccountError> {
        let user = self.local_user_by_id(user_id).await?;
        if !self
            .store
            .update_local_totp(&user.id, None, self.clock.now_ms())
            .await?
        {
            return Err(not_local(&user));
        }
        Ok(())
    }

    /// Whether a local account has TOTP.
    pub async fn totp_enabled(&self, user_id: &str) -> Result<bool, AccountError> {
        Ok(self
            .store
            .local_credentials(user_id)
            .await?
            .is_some_and(|c| c.totp_secret_sealed.is_some()))
    }

    async fn local_user(&self, username: &str) -> Result<UserRow, AccountError> {
        let user = self
            .store
            .user_by_username(username)
            .await?
            .ok_or_else(|| AccountError::NotFound(username.trim().to_ascii_lowercase()))?;
        if user.issuer != LOCAL_ISSUER {
            return Err(not_local(&user));
        }
        Ok(user)
    }

    async fn local_user_by_id(&self, user_id: &str) -> Result<UserRow, AccountError> {
        let user = self
            .store
            .user(user_id)
            .await?
            .ok_or_else(|| AccountError::NotFound(user_id.to_owned()))?;
        if user.issuer != LOCAL_ISSUER {
            return Err(not_local(&user));
        }
        Ok(user)
    }
}

fn not_local(user: &UserRow) -> AccountError {
    AccountError::NotLocal(
        user.username.clone().unwrap_or_else(|| user.id.clone()),
        user.issuer.clone(),
    )
}

fn check_password(password: &SecretString) -> Result<(), AccountError> {
    let n = password.expose_secret().chars().count();
    if n < MIN_PASSWORD_CHARS {
        return Err(AccountError::PasswordTooShort);
    }
    if n > MAX_PASSWORD_CHARS {
        return Err(AccountError::PasswordTooLong);
    }
    Ok(())
}

/// A plausible address: one `@` with something either side, no spaces or controls, ≤ 254 bytes.
fn valid_email(e: &str) -> bool {
    e.len() <= 254
        && !e.chars().any(|c| c.is_whitespace() || c.is_control())
        && e.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty() && !domain.is_empty() && !domain.contains('@')
        })
}

/// argon2 costs tens of milliseconds of CPU: off the async workers.
async fn hash_blocking(password: SecretString) -> anyhow::Result<String> {
    Ok(tokio::task::spawn_blocking(move || hash_password(&password)).await?)
}

async fn verify_blocking(password: SecretString, hash: String) -> anyhow::Result<bool> {
    Ok(tokio::task::spawn_blocking(move || verify_password(&password, &hash)).await?)
}

fn totp_aad(user_id: &str) -> String {
    format!("totp:{user_id}")
}

/// RFC 6238 with its defaults: HMAC-SHA-1, 6 digits, 30-second steps.
fn totp_for(seed: &[u8]) -> TOTP {
    let rfc = Rfc6238::with_defaults(seed.to_vec()).expect("a 160-bit seed and 6 digits are valid");
    TOTP::from_rfc6238(rfc).expect("RFC 6238 defaults make a valid TOTP")
}

/// The step (Unix seconds / 30) whose code `code` is, within ±1 step of `now_ms`.
/// Every candidate is compared, in constant time, whatever matched before.
fn matching_step(seed: &[u8], code: &str, now_ms: i64) -> Option<i64> {
    let totp = totp_for(seed);
    let current = now_ms.div_euclid(1000).div_euclid(TOTP_STEP_SECS);
    let mut found = None;
    for step in current - TOTP_SKEW_STEPS..=current + TOTP_SKEW_STEPS {
        let Ok(time) = u64::try_from(step * TOTP_STEP_SECS) else {
            continue;
        };
        let expected = Zeroizing::new(totp.generate(time));
        if constant_time_eq(expected.as_bytes(), code.as_bytes()) {
            found = Some(step);
        }
    }
    found
}

/// The key URI authenticator apps read (`otpauth://totp/ISSUER:LABEL?secret=…`).
fn otpauth_uri(label: &str, secret_base32: &str) -> String {
    let label: String = form_urlencoded::byte_serialize(label.as_bytes()).collect();
    format!(
        "otpauth://totp/{TOTP_ISSUER}:{label}?secret={secret_base32}&issuer={TOTP_ISSUER}\
         &algorithm=SHA1&digits=6&period={TOTP_STEP_SECS}"
    )
}

#[cfg(test)]
#[path = "accounts_tests.rs"]
mod tests;
