//! Local accounts: argon2id passwords, optional TOTP (RFC 6238), and sign-in with backoff and
//! lockout that look the same whether or not the submitted name exists.
//!
//! Failed attempts are counted per submitted name (the SHA-256 of its normalized form) in
//! `sign_in_failures`, for unknown names as for real ones. After `max_failed_sign_ins`
//! consecutive failures the name is locked for `lockout`; every failure waits a little longer
//! before it is answered; an unknown name still costs one argon2 verification. So neither the
//! answer, the lockout nor the timing tells an attacker whether an account exists.

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
    store::{LOCAL_ISSUER, Store, UserRow, normalize_username},
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
    /// The store failed; the detail is for the log, not for the person.
    #[error("Signing in is not possible right now. Try again later.")]
    Unavailable(anyhow::Error),
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
        }
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
            groups: "[]".into(),
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
        let password_ok = verify_blocking(password.clone(), hash).await?;
        let (user, credentials) = match (user, credentials) {
            (Some(u), Some(c)) if password_ok && u.disabled_at.is_none() => (u, c),
            _ => return Err(self.fail(&name_hash, now, SignInError::Invalid).await),
        };

        if let Some(sealed) = &credentials.totp_secret_sealed {
            let Some(code) = totp.map(str::trim).filter(|c| !c.is_empty()) else {
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
                return Err(self.fail(&name_hash, now, SignInError::TotpInvalid).await);
            }
        }

        self.store.clear_sign_in_failures(&name_hash).await?;
        Ok(user)
    }

    /// Counts a failure, waits the backoff, and says what to answer: `error`, or `Locked` when
    /// this failure locked the name.
    async fn fail(&self, name_hash: &str, now: i64, error: SignInError) -> SignInError {
        let lockout_ms = i64::try_from(self.lockout.as_millis()).unwrap_or(i64::MAX / 4);
        let row = match self
            .store
            .record_sign_in_failure(name_hash, now, i64::from(self.max_failed), lockout_ms)
            .await
        {
            Ok(row) => row,
            Err(e) => return SignInError::Unavailable(e),
        };
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
    pub async fn set_disabled(
        &self,
        username: &str,
        disabled: bool,
    ) -> Result<UserRow, AccountError> {
        let user = self
            .store
            .user_by_username(username)
            .await?
            .ok_or_else(|| AccountError::NotFound(username.trim().to_ascii_lowercase()))?;
        let at = disabled.then(|| self.clock.now_ms());
        if !self.store.set_user_disabled(&user.id, at).await? {
            return Err(AccountError::NotFound(username.trim().to_ascii_lowercase()));
        }
        Ok(UserRow {
            disabled_at: at,
            ..user
        })
    }

    /// Gives a local account a new TOTP seed (replacing any earlier one) and returns the
    /// `otpauth://` URI to load into an authenticator app. From now on sign-in needs a code.
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
            .update_local_totp(&user.id, Some(&sealed), self.clock.now_ms())
            .await?
        {
            return Err(not_local(&user));
        }
        let label = user.username.as_deref().unwrap_or(&user.id);
        Ok(otpauth_uri(label, &totp_for(&seed).get_secret_base32()))
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
mod tests {
    //! On SQLite and, with `DOORMAN_TEST_POSTGRES_URL`, on PostgreSQL (as `store/tests.rs`).

    use super::*;
    use crate::{
        clock::{Clock, ManualClock},
        config::ConfigDuration,
        store::SignInFailureRow,
    };

    /// 2026-01-01T00:00:00Z.
    const START_MS: i64 = 1_767_225_600_000;
    const LOCKOUT: Duration = Duration::from_secs(600);
    const MAX_FAILED: u32 = 3;

    struct Engine {
        store: Store,
        clock: ManualClock,
        accounts: Accounts,
        _dir: Option<tempfile::TempDir>,
    }

    impl Engine {
        fn name(&self) -> &'static str {
            self.store.engine()
        }

        async fn close(self) {
            self.store.close().await;
        }
    }

    fn accounts_for(store: &Store, clock: &ManualClock) -> Accounts {
        let keys = KeyRing::parse(&format!("k1 {}\n", random_token(32))).unwrap();
        let config = SignInConfig {
            max_failed_sign_ins: MAX_FAILED,
            lockout: ConfigDuration(LOCKOUT),
            ..SignInConfig::default()
        };
        Accounts::new(
            store.clone(),
            Arc::new(clock.clone()),
            Arc::new(keys),
            &config,
        )
        .with_backoff_unit(Duration::ZERO)
    }

    /// One fresh database per engine.
    async fn engines() -> Vec<Engine> {
        let mut out = Vec::new();
        for (store, dir) in crate::store::testing::engines().await {
            let clock = ManualClock::new(START_MS);
            out.push(Engine {
                accounts: accounts_for(&store, &clock),
                store,
                clock,
                _dir: dir,
            });
        }
        out
    }

    fn secret(s: &str) -> SecretString {
        SecretString::from(s)
    }

    const PASSWORD: &str = "correct horse battery";

    async fn alice(e: &Engine) -> UserRow {
        e.accounts
            .create_local_user("alice", &secret(PASSWORD), Some("alice@example.com"), false)
            .await
            .unwrap()
    }

    fn is_invalid(r: &Result<UserRow, SignInError>) -> bool {
        matches!(r, Err(SignInError::Invalid))
    }

    fn retry_after(r: Result<UserRow, SignInError>) -> Duration {
        match r {
            Err(SignInError::Locked { retry_after }) => retry_after,
            other => panic!("expected Locked, got {other:?}"),
        }
    }

    /// The code an authenticator app shows at `ms` for the seed in an otpauth URI.
    fn code_at(uri: &str, ms: i64) -> String {
        let b32 = uri
            .split_once("secret=")
            .unwrap()
            .1
            .split('&')
            .next()
            .unwrap();
        let seed = totp_rs::Secret::Encoded(b32.to_owned()).to_bytes().unwrap();
        totp_for(&seed).generate((ms / 1000) as u64)
    }

    /// A six-digit code that is not `right`.
    fn wrong(right: &str) -> String {
        let n: u32 = right.parse().unwrap();
        format!("{:06}", (n + 1) % 1_000_000)
    }

    #[test]
    fn passwords_are_argon2id_with_owasp_parameters() {
        let hash = hash_password(&secret(PASSWORD));
        assert!(
            hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{hash}"
        );
        assert!(verify_password(&secret(PASSWORD), &hash));
        assert!(!verify_password(&secret("correct horse battery!"), &hash));
        assert!(!verify_password(&secret(PASSWORD), "not a hash"));
        // Two hashes of one password differ (fresh salt).
        assert_ne!(hash, hash_password(&secret(PASSWORD)));
        // The dummy hash parses and costs what a real one does.
        let dummy = PasswordHash::new(DUMMY_HASH).unwrap();
        let real = PasswordHash::new(&hash).unwrap();
        assert_eq!(dummy.algorithm, real.algorithm);
        assert_eq!(dummy.version, real.version);
        assert_eq!(dummy.params, real.params);
        assert_eq!(
            dummy.hash.unwrap().len(),
            real.hash.unwrap().len(),
            "same output length"
        );
        assert!(!verify_password(&secret(PASSWORD), DUMMY_HASH));
    }

    #[test]
    fn usernames_are_normalized_and_checked() {
        assert_eq!(
            normalize_username("  Alice.Smith@Example.COM "),
            Some("alice.smith@example.com".into())
        );
        assert_eq!(normalize_username("a_b-c.d@e"), Some("a_b-c.d@e".into()));
        assert_eq!(normalize_username(&"x".repeat(64)), Some("x".repeat(64)));
        for bad in ["", "   ", "a b", "ali:ce", "älice", "a/b", "a%b"] {
            assert_eq!(normalize_username(bad), None, "{bad:?}");
        }
        assert_eq!(normalize_username(&"x".repeat(65)), None);
    }

    #[test]
    fn lockout_messages_count_minutes() {
        let locked = |s| SignInError::Locked {
            retry_after: Duration::from_secs(s),
        };
        assert_eq!(
            locked(600).to_string(),
            "Too many failed attempts. Try again in 10 minutes."
        );
        assert_eq!(
            locked(61).to_string(),
            "Too many failed attempts. Try again in 2 minutes."
        );
        assert_eq!(
            locked(5).to_string(),
            "Too many failed attempts. Try again in 1 minute."
        );
    }

    #[test]
    fn totp_codes_follow_rfc_6238() {
        // RFC 6238 Appendix B, SHA-1 seed "12345678901234567890", last 6 of the 8 digits.
        let seed = b"12345678901234567890";
        let totp = totp_for(seed);
        assert_eq!(totp.generate(59), "287082");
        assert_eq!(totp.generate(1_111_111_109), "081804");
        assert_eq!(totp.generate(1_234_567_890), "005924");
        // ±1 step accepted, and the step is reported.
        assert_eq!(matching_step(seed, "287082", 59_000), Some(1));
        assert_eq!(matching_step(seed, "287082", 89_000), Some(1));
        assert_eq!(matching_step(seed, "287082", 29_000), Some(1));
        assert_eq!(matching_step(seed, "287082", 120_000), None);
        assert_eq!(matching_step(seed, "28708", 59_000), None);
        assert_eq!(matching_step(seed, "2870822", 59_000), None);
    }

    #[tokio::test]
    async fn right_and_wrong_passwords_unknown_names_look_the_same() {
        for e in engines().await {
            let engine = e.name();
            let a = alice(&e).await;
            assert_eq!(a.issuer, "local", "{engine}");
            assert_eq!(a.subject, a.id, "{engine}");
            assert_eq!(a.username.as_deref(), Some("alice"), "{engine}");
            assert_eq!(a.email.as_deref(), Some("alice@example.com"), "{engine}");
            assert!(!a.is_admin, "{engine}");
            assert_eq!(
                e.store.user(&a.id).await.unwrap(),
                Some(a.clone()),
                "{engine}"
            );

            let ok = e.accounts.sign_in("alice", &secret(PASSWORD), None).await;
            assert_eq!(ok.unwrap().id, a.id, "{engine}");

            let wrong_password = e
                .accounts
                .sign_in("alice", &secret("nope nope"), None)
                .await;
            let unknown = e.accounts.sign_in("mallory", &secret(PASSWORD), None).await;
            let malformed = e
                .accounts
                .sign_in("not a name!", &secret(PASSWORD), None)
                .await;
            for r in [&wrong_password, &unknown, &malformed] {
                assert!(is_invalid(r), "{engine}: {r:?}");
                assert_eq!(
                    r.as_ref().unwrap_err().to_string(),
                    "The username or password is incorrect.",
                    "{engine}"
                );
            }
            // Failures are counted for the unknown name just as for the real one.
            for name in ["alice", "mallory"] {
                let f = e
                    .store
                    .sign_in_failure(&sha256_hex(name))
                    .await
                    .unwrap()
                    .unwrap();
                assert_eq!(f.failures, 1, "{engine} {name}");
            }
            // A success clears the counter.
            e.accounts
                .sign_in(" ALICE ", &secret(PASSWORD), None)
                .await
                .unwrap();
            assert_eq!(
                e.store.sign_in_failure(&sha256_hex("alice")).await.unwrap(),
                None,
                "{engine}"
            );
            e.close().await;
        }
    }

    #[tokio::test]
    async fn usernames_passwords_and_emails_are_checked_on_creation() {
        for e in engines().await {
            let engine = e.name();
            let a = e
                .accounts
                .create_local_user(
                    "  Alice.Smith@Example.COM ",
                    &secret(PASSWORD),
                    Some(" "),
                    true,
                )
                .await
                .unwrap();
            assert_eq!(a.username.as_deref(), Some("alice.smith@example.com"));
            assert_eq!(a.email, None, "{engine}: a blank email is none");
            assert!(a.is_admin, "{engine}");
            // Found and signed in whatever the case and spacing.
            assert_eq!(
                e.store
                    .user_by_username("ALICE.smith@example.com ")
                    .await
                    .unwrap()
                    .map(|u| u.id),
                Some(a.id.clone()),
                "{engine}"
            );
            e.accounts
                .sign_in("Alice.Smith@EXAMPLE.com", &secret(PASSWORD), None)
                .await
                .unwrap();

            let create =
                |name: &'static str, password: &'static str, email: Option<&'static str>| {
                    let accounts = e.accounts.clone();
                    async move {
                        accounts
                            .create_local_user(name, &secret(password), email, false)
                            .await
                    }
                };
            assert!(matches!(
                create("ALICE.SMITH@example.com", PASSWORD, None).await,
                Err(AccountError::UsernameTaken(n)) if n == "alice.smith@example.com"
            ));
            assert!(matches!(
                create("bob smith", PASSWORD, None).await,
                Err(AccountError::InvalidUsername(_))
            ));
            assert!(matches!(
                create("bob", "1234567", None).await,
                Err(AccountError::PasswordTooShort)
            ));
            let long: &'static str = Box::leak("x".repeat(1025).into_boxed_str());
            assert!(matches!(
                create("bob", long, None).await,
                Err(AccountError::PasswordTooLong)
            ));
            assert!(matches!(
                create("bob", PASSWORD, Some("not-an-address")).await,
                Err(AccountError::InvalidEmail(_))
            ));
            // Eight characters, counted as characters (not bytes), is enough.
            create("bob", "éééééééé", None).await.unwrap();
            assert_eq!(e.store.count_users().await.unwrap(), 2, "{engine}");
            e.close().await;
        }
    }

    #[tokio::test]
    async fn lockout_after_repeated_failures_for_real_and_unknown_names_alike() {
        for e in engines().await {
            let engine = e.name();
            alice(&e).await;
            for name in ["alice", "nobody"] {
                for n in 1..MAX_FAILED {
                    let r = e
                        .accounts
                        .sign_in(name, &secret("wrong password"), None)
                        .await;
                    assert!(is_invalid(&r), "{engine} {name} failure {n}: {r:?}");
                }
                // The failure that reaches the limit already answers "locked".
                let r = e
                    .accounts
                    .sign_in(name, &secret("wrong password"), None)
                    .await;
                assert_eq!(retry_after(r), LOCKOUT, "{engine} {name}");
            }
            // While locked, even the right password is refused, without being checked, and the
            // answer is the same for both names.
            e.clock.advance(Duration::from_secs(60));
            let real = e.accounts.sign_in("alice", &secret(PASSWORD), None).await;
            let unknown = e.accounts.sign_in("nobody", &secret(PASSWORD), None).await;
            assert_eq!(
                real.as_ref().unwrap_err().to_string(),
                unknown.as_ref().unwrap_err().to_string(),
                "{engine}"
            );
            assert_eq!(
                real.as_ref().unwrap_err().to_string(),
                "Too many failed attempts. Try again in 9 minutes.",
                "{engine}"
            );
            assert_eq!(retry_after(real), Duration::from_secs(540), "{engine}");
            // Locked attempts are not counted: the lockout does not grow.
            let f = e
                .store
                .sign_in_failure(&sha256_hex("alice"))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(f.failures, i64::from(MAX_FAILED), "{engine}");
            assert_eq!(f.locked_until, Some(START_MS + 600_000), "{engine}");

            // The window ends: the right password works, and the unknown name gets a fresh
            // count (one failure is not a lockout).
            e.clock.advance(Duration::from_secs(540));
            e.accounts
                .sign_in("alice", &secret(PASSWORD), None)
                .await
                .unwrap();
            let r = e.accounts.sign_in("nobody", &secret(PASSWORD), None).await;
            assert!(is_invalid(&r), "{engine}: {r:?}");
            let f = e
                .store
                .sign_in_failure(&sha256_hex("nobody"))
                .await
                .unwrap()
                .unwrap();
            assert_eq!((f.failures, f.locked_until), (1, None), "{engine}");

            // Failures spread wider apart than the window do not add up.
            for _ in 0..MAX_FAILED + 1 {
                e.clock.advance(LOCKOUT + Duration::from_secs(1));
                let r = e
                    .accounts
                    .sign_in("alice", &secret("wrong password"), None)
                    .await;
                assert!(is_invalid(&r), "{engine}: {r:?}");
            }
            e.close().await;
        }
    }

    #[tokio::test]
    async fn failures_are_answered_after_a_growing_delay() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_sqlite_in(dir.path()).await.unwrap();
        let clock = ManualClock::new(START_MS);
        let accounts = accounts_for(&store, &clock).with_backoff_unit(Duration::from_millis(60));
        for n in 1..=2u32 {
            let started = std::time::Instant::now();
            let r = accounts.sign_in("nobody", &secret(PASSWORD), None).await;
            assert!(is_invalid(&r), "{r:?}");
            assert!(
                started.elapsed() >= Duration::from_millis(60) * n,
                "failure {n} answered after {:?}",
                started.elapsed()
            );
        }
        store.close().await;
    }

    #[tokio::test]
    async fn totp_required_invalid_valid_and_replayed() {
        for e in engines().await {
            let engine = e.name();
            let a = alice(&e).await;
            assert!(!e.accounts.totp_enabled(&a.id).await.unwrap(), "{engine}");
            let uri = e.accounts.enable_totp(&a.id).await.unwrap();
            assert!(
                uri.starts_with("otpauth://totp/Doorman:alice?secret="),
                "{engine}: {uri}"
            );
            assert!(
                uri.ends_with("&issuer=Doorman&algorithm=SHA1&digits=6&period=30"),
                "{engine}: {uri}"
            );
            assert!(e.accounts.totp_enabled(&a.id).await.unwrap(), "{engine}");
            // The seed is stored sealed, bound to its owner.
            let b32 = uri
                .split_once("secret=")
                .unwrap()
                .1
                .split('&')
                .next()
                .unwrap();
            assert_eq!(b32.len(), 32, "{engine}: 160 bits");
            let sealed = e
                .store
                .local_credentials(&a.id)
                .await
                .unwrap()
                .unwrap()
                .totp_secret_sealed
                .unwrap();
            assert!(!sealed.contains(b32), "{engine}");
            assert!(e.accounts.keys.open(&sealed, "totp:someone-else").is_err());
            e.accounts
                .keys
                .open(&sealed, &format!("totp:{}", a.id))
                .unwrap();

            let pw = secret(PASSWORD);
            // Password right, code missing (or blank): asked for it, nothing counted.
            for code in [None, Some(""), Some("  ")] {
                let r = e.accounts.sign_in("alice", &pw, code).await;
                assert!(
                    matches!(r, Err(SignInError::TotpRequired)),
                    "{engine}: {r:?}"
                );
            }
            // Password wrong: the code is never looked at.
            let now = e.clock.now_ms();
            let code = code_at(&uri, now);
            let r = e
                .accounts
                .sign_in("alice", &secret("wrong password"), Some(&code))
                .await;
            assert!(is_invalid(&r), "{engine}: {r:?}");
            // Wrong code.
            let r = e.accounts.sign_in("alice", &pw, Some(&wrong(&code))).await;
            assert!(
                matches!(r, Err(SignInError::TotpInvalid)),
                "{engine}: {r:?}"
            );
            // Right code (spaces around it are fine), once.
            let ok = e
                .accounts
                .sign_in("alice", &pw, Some(&format!(" {code} ")))
                .await;
            assert_eq!(ok.unwrap().id, a.id, "{engine}");
            let replay = e.accounts.sign_in("alice", &pw, Some(&code)).await;
            assert!(
                matches!(replay, Err(SignInError::TotpInvalid)),
                "{engine}: {replay:?}"
            );

            // A code of the next step (phone clock ahead) is accepted; afterwards the codes of
            // the steps before it are refused, even if still inside the window.
            e.clock.advance(Duration::from_secs(30));
            let now = e.clock.now_ms();
            let ahead = code_at(&uri, now + 30_000);
            let current = code_at(&uri, now);
            e.accounts
                .sign_in("alice", &pw, Some(&ahead))
                .await
                .unwrap();
            let r = e.accounts.sign_in("alice", &pw, Some(&current)).await;
            assert!(
                matches!(r, Err(SignInError::TotpInvalid)),
                "{engine}: {r:?}"
            );
            // A code two steps old is out of the window.
            e.clock.advance(Duration::from_secs(120));
            let now = e.clock.now_ms();
            let stale = code_at(&uri, now - 60_000);
            let r = e.accounts.sign_in("alice", &pw, Some(&stale)).await;
            assert!(
                matches!(r, Err(SignInError::TotpInvalid)),
                "{engine}: {r:?}"
            );
            e.accounts
                .sign_in("alice", &pw, Some(&code_at(&uri, now)))
                .await
                .unwrap();

            // Wrong codes count towards the lockout: the password alone cannot get past TOTP.
            for n in 1..=MAX_FAILED {
                let r = e.accounts.sign_in("alice", &pw, Some("000000x")).await;
                if n < MAX_FAILED {
                    assert!(
                        matches!(r, Err(SignInError::TotpInvalid)),
                        "{engine}: {r:?}"
                    );
                } else {
                    retry_after(r);
                }
            }
            e.clock.advance(LOCKOUT);

            // Disabled: the password alone is enough again.
            e.accounts.disable_totp(&a.id).await.unwrap();
            assert!(!e.accounts.totp_enabled(&a.id).await.unwrap(), "{engine}");
            e.accounts.sign_in("alice", &pw, None).await.unwrap();
            // Enabling again gives a new seed.
            let again = e.accounts.enable_totp(&a.id).await.unwrap();
            assert_ne!(again, uri, "{engine}");
            e.close().await;
        }
    }

    #[tokio::test]
    async fn a_disabled_person_is_refused_and_loses_grants_and_sessions() {
        for e in engines().await {
            let engine = e.name();
            let a = alice(&e).await;
            let b = e
                .accounts
                .create_local_user("bob", &secret(PASSWORD), None, false)
                .await
                .unwrap();
            for (id, user, revoked_at, reason) in [
                ("g1", &a.id, None, None),
                ("g2", &a.id, Some(START_MS - 5), Some("client revoked")),
                ("g3", &b.id, None, None),
            ] {
                crate::store::on_pool!(e.store, pool => sqlx::query(
                    "INSERT INTO grants (id, user_id, client_id, scope, resource, auth_time, \
                     created_at, expires_at, last_used_at, revoked_at, revoked_reason) \
                     VALUES ($1, $2, 'client', 'mcp', 'http://x/mcp', 0, 0, $3, 0, $4, $5)",
                )
                .bind(id)
                .bind(user)
                .bind(START_MS + 86_400_000)
                .bind(revoked_at)
                .bind(reason)
                .execute(pool)
                .await
                .map(|_| ())
                .unwrap());
            }
            for (id, user) in [("s1", &a.id), ("s2", &b.id)] {
                crate::store::on_pool!(e.store, pool => sqlx::query(
                    "INSERT INTO browser_sessions (id_hash, user_id, auth_time, created_at, \
                     expires_at) VALUES ($1, $2, 0, 0, $3)",
                )
                .bind(id)
                .bind(user)
                .bind(START_MS + 86_400_000)
                .execute(pool)
                .await
                .map(|_| ())
                .unwrap());
            }

            e.clock.advance(Duration::from_secs(5));
            let disabled = e.accounts.set_disabled("ALICE", true).await.unwrap();
            let at = START_MS + 5_000;
            assert_eq!(disabled.disabled_at, Some(at), "{engine}");
            assert_eq!(
                e.store.user(&a.id).await.unwrap().unwrap().disabled_at,
                Some(at),
                "{engine}"
            );

            let r = e.accounts.sign_in("alice", &secret(PASSWORD), None).await;
            assert!(is_invalid(&r), "{engine}: {r:?}");

            let grants: Vec<(String, Option<i64>, Option<String>)> = crate::store::on_pool!(e.store, pool =>
                sqlx::query_as("SELECT id, revoked_at, revoked_reason FROM grants ORDER BY id")
                    .fetch_all(pool)
                    .await
                    .unwrap());
            assert_eq!(
                grants,
                vec![
                    ("g1".into(), Some(at), Some("user disabled".into())),
                    (
                        "g2".into(),
                        Some(START_MS - 5),
                        Some("client revoked".into())
                    ),
                    ("g3".into(), None, None),
                ],
                "{engine}"
            );
            let sessions: Vec<(String,)> = crate::store::on_pool!(e.store, pool =>
                sqlx::query_as("SELECT id_hash FROM browser_sessions ORDER BY id_hash")
                    .fetch_all(pool)
                    .await
                    .unwrap());
            assert_eq!(sessions, vec![("s2".to_owned(),)], "{engine}");

            // Enabled again: signs in; revoked grants stay revoked.
            let enabled = e.accounts.set_disabled("alice", false).await.unwrap();
            assert_eq!(enabled.disabled_at, None, "{engine}");
            e.accounts
                .sign_in("alice", &secret(PASSWORD), None)
                .await
                .unwrap();
            let (revoked,): (Option<i64>,) = crate::store::on_pool!(e.store, pool =>
                sqlx::query_as("SELECT revoked_at FROM grants WHERE id = 'g1'")
                    .fetch_one(pool)
                    .await
                    .unwrap());
            assert_eq!(revoked, Some(at), "{engine}");
            assert!(matches!(
                e.accounts.set_disabled("nobody", true).await,
                Err(AccountError::NotFound(_))
            ));
            e.close().await;
        }
    }

    #[tokio::test]
    async fn reset_password_replaces_it_and_lifts_the_lockout() {
        for e in engines().await {
            let engine = e.name();
            alice(&e).await;
            for _ in 0..MAX_FAILED {
                let _ = e
                    .accounts
                    .sign_in("alice", &secret("wrong password"), None)
                    .await;
            }
            retry_after(e.accounts.sign_in("alice", &secret(PASSWORD), None).await);

            let new = secret("a brand new password");
            assert!(matches!(
                e.accounts.reset_password("alice", &secret("short")).await,
                Err(AccountError::PasswordTooShort)
            ));
            e.accounts.reset_password(" Alice", &new).await.unwrap();
            e.accounts.sign_in("alice", &new, None).await.unwrap();
            let old = e.accounts.sign_in("alice", &secret(PASSWORD), None).await;
            assert!(is_invalid(&old), "{engine}: {old:?}");
            assert!(matches!(
                e.accounts.reset_password("nobody", &new).await,
                Err(AccountError::NotFound(_))
            ));
            e.close().await;
        }
    }

    #[tokio::test]
    async fn people_from_a_provider_have_no_password() {
        for e in engines().await {
            let engine = e.name();
            let sso = UserRow {
                id: random_token(16),
                issuer: "https://idp.example.com".into(),
                subject: "248289761001".into(),
                username: Some("carol".into()),
                email: Some("carol@example.com".into()),
                name: Some("Carol".into()),
                groups: r#"["staff"]"#.into(),
                is_admin: false,
                disabled_at: None,
                created_at: START_MS,
            };
            assert!(e.store.insert_user(&sso).await.unwrap(), "{engine}");
            // The same (issuer, subject) again is refused, quietly.
            let again = UserRow {
                id: random_token(16),
                username: None,
                ..sso.clone()
            };
            assert!(!e.store.insert_user(&again).await.unwrap(), "{engine}");
            let r = e.accounts.sign_in("carol", &secret(PASSWORD), None).await;
            assert!(is_invalid(&r), "{engine}: {r:?}");
            assert!(matches!(
                e.accounts.reset_password("carol", &secret(PASSWORD)).await,
                Err(AccountError::NotLocal(..))
            ));
            assert!(matches!(
                e.accounts.enable_totp(&sso.id).await,
                Err(AccountError::NotLocal(..))
            ));
            e.close().await;
        }
    }

    #[tokio::test]
    async fn store_lists_people_by_username_and_counts_failures() {
        for e in engines().await {
            let engine = e.name();
            for name in ["zoe", "Bob", "alice"] {
                e.accounts
                    .create_local_user(name, &secret(PASSWORD), None, false)
                    .await
                    .unwrap();
                e.clock.advance(Duration::from_millis(1));
            }
            let nameless = UserRow {
                id: "sso-1".into(),
                issuer: "https://idp.example.com".into(),
                subject: "s".into(),
                username: None,
                email: None,
                name: None,
                groups: "[]".into(),
                is_admin: false,
                disabled_at: None,
                created_at: START_MS,
            };
            assert!(e.store.insert_user(&nameless).await.unwrap());
            let listed: Vec<Option<String>> = e
                .store
                .users()
                .await
                .unwrap()
                .into_iter()
                .map(|u| u.username)
                .collect();
            assert_eq!(
                listed,
                vec![
                    Some("alice".into()),
                    Some("bob".into()),
                    Some("zoe".into()),
                    None
                ],
                "{engine}"
            );
            assert_eq!(e.store.count_users().await.unwrap(), 4, "{engine}");
            assert_eq!(e.store.user("missing").await.unwrap(), None, "{engine}");
            assert!(!e.store.set_user_disabled("missing", Some(1)).await.unwrap());

            // The failure counter on its own: counts, locks at the limit, keeps the lock.
            let h = "h";
            let rec = |now| e.store.record_sign_in_failure(h, now, 2, 1_000);
            let row = |failures, last, locked| SignInFailureRow {
                name_hash: h.into(),
                failures,
                last_failure_at: last,
                locked_until: locked,
            };
            assert_eq!(rec(10).await.unwrap(), row(1, 10, None), "{engine}");
            assert_eq!(rec(20).await.unwrap(), row(2, 20, Some(1_020)), "{engine}");
            assert_eq!(rec(30).await.unwrap(), row(3, 30, Some(1_020)), "{engine}");
            // Once the lock is over, counting starts again.
            assert_eq!(rec(1_020).await.unwrap(), row(1, 1_020, None), "{engine}");
            // A failure older than the window does not count.
            assert_eq!(rec(2_020).await.unwrap(), row(1, 2_020, None), "{engine}");
            assert_eq!(
                rec(2_021).await.unwrap(),
                row(2, 2_021, Some(3_021)),
                "{engine}"
            );
            e.store.clear_sign_in_failures(h).await.unwrap();
            assert_eq!(e.store.sign_in_failure(h).await.unwrap(), None, "{engine}");
            e.close().await;
        }
    }
}
