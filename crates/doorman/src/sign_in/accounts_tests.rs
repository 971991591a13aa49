//! Tests of `accounts.rs`.

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
/// Gives `user_id` a TOTP seed and confirms it with a code of the previous step (leaving the
/// current step's code usable for a sign-in); returns the seed's URI.
async fn enable_and_confirm(e: &Engine, user_id: &str) -> String {
    let uri = e.accounts.enable_totp(user_id).await.unwrap();
    let previous = e.clock.now_ms() - 30_000;
    e.accounts
        .confirm_totp(user_id, &code_at(&uri, previous))
        .await
        .unwrap();
    uri
}

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

        let create = |name: &'static str, password: &'static str, email: Option<&'static str>| {
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
        // Not in force until a code from it confirms it: the password alone still signs in.
        assert!(!e.accounts.totp_enabled(&a.id).await.unwrap(), "{engine}");
        e.accounts
            .sign_in("alice", &secret(PASSWORD), None)
            .await
            .unwrap();
        // The waiting seed is stored sealed, bound to its owner.
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
            .totp_pending_sealed
            .unwrap();
        assert!(!sealed.contains(b32), "{engine}");
        assert!(e.accounts.keys.open(&sealed, "totp:someone-else").is_err());
        e.accounts
            .keys
            .open(&sealed, &format!("totp:{}", a.id))
            .unwrap();
        // Confirmation: a wrong code changes nothing; a code of the previous step (the app's
        // clock a little behind) confirms it, once.
        let before = e.clock.now_ms();
        let r = e
            .accounts
            .confirm_totp(&a.id, &wrong(&code_at(&uri, before)))
            .await;
        assert!(
            matches!(r, Err(AccountError::TotpCodeWrong)),
            "{engine}: {r:?}"
        );
        assert!(!e.accounts.totp_enabled(&a.id).await.unwrap(), "{engine}");
        e.accounts
            .confirm_totp(&a.id, &code_at(&uri, before - 30_000))
            .await
            .unwrap();
        assert!(e.accounts.totp_enabled(&a.id).await.unwrap(), "{engine}");
        let creds = e.store.local_credentials(&a.id).await.unwrap().unwrap();
        assert_eq!(
            creds.totp_secret_sealed.as_deref(),
            Some(sealed.as_str()),
            "{engine}"
        );
        assert_eq!(creds.totp_pending_sealed, None, "{engine}");
        let r = e.accounts.confirm_totp(&a.id, &code_at(&uri, before)).await;
        assert!(
            matches!(r, Err(AccountError::NoPendingTotp)),
            "{engine}: {r:?}"
        );
        // The confirming code is spent like a sign-in's: its step is the last one accepted.
        assert_eq!(
            creds.totp_last_step,
            Some((before - 30_000) / 1000 / 30),
            "{engine}"
        );

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
        let again = enable_and_confirm(&e, &a.id).await;
        assert_ne!(again, uri, "{engine}");
        // A newer seed waits for its confirmation while the one in force keeps working.
        e.clock.advance(Duration::from_secs(60));
        let newer = e.accounts.enable_totp(&a.id).await.unwrap();
        let now = e.clock.now_ms();
        let r = e.accounts.sign_in("alice", &pw, None).await;
        assert!(
            matches!(r, Err(SignInError::TotpRequired)),
            "{engine}: {r:?}"
        );
        let r = e
            .accounts
            .sign_in("alice", &pw, Some(&code_at(&newer, now)))
            .await;
        assert!(
            matches!(r, Err(SignInError::TotpInvalid)),
            "{engine}: {r:?}"
        );
        e.accounts
            .sign_in("alice", &pw, Some(&code_at(&again, now)))
            .await
            .unwrap();
        // Disabling forgets the waiting seed too.
        e.accounts.disable_totp(&a.id).await.unwrap();
        let r = e.accounts.confirm_totp(&a.id, &code_at(&newer, now)).await;
        assert!(
            matches!(r, Err(AccountError::NoPendingTotp)),
            "{engine}: {r:?}"
        );
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
            groups: crate::store::Groups(vec!["staff".into()]),
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
            groups: Default::default(),
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

/// Under a flood of concurrent guesses, no more than the allowance is ever checked (each
/// attempt is counted before its password is), the right password sent right after is refused,
/// and at most `HASHING_AT_ONCE + HASHING_QUEUE` checks are in flight: the rest get `Busy`.
#[tokio::test]
async fn concurrent_wrong_guesses_are_counted_before_they_are_checked() {
    for e in engines().await {
        let engine = e.name();
        alice(&e).await;
        let guesses = (0..39).map(|i| {
            let accounts = e.accounts.clone();
            tokio::spawn(async move {
                accounts
                    .sign_in("alice", &secret(&format!("wrong guess {i}")), None)
                    .await
            })
        });
        let outcomes: Vec<_> = futures_util::future::join_all(guesses)
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
        let kinds = |k: &str| {
            outcomes
                .iter()
                .filter(|r| r.as_ref().err().map(SignInError::kind) == Some(k))
                .count()
        };
        let (invalid, locked, busy) =
            (kinds("invalid_credentials"), kinds("locked"), kinds("busy"));
        assert_eq!(invalid + locked + busy, 39, "{engine}: {outcomes:?}");
        // Only the allowed attempts cost an argon2 run; the rest were refused before it.
        assert_eq!(
            e.accounts.password_checks(),
            u64::from(MAX_FAILED),
            "{engine}"
        );
        // MAX_FAILED attempts are allowed; the last of them answers "locked" itself.
        assert_eq!(invalid, MAX_FAILED as usize - 1, "{engine}: checked ones");
        assert!(
            busy <= 39 - HASHING_AT_ONCE - HASHING_QUEUE,
            "{engine}: {busy} busy"
        );
        let right = e.accounts.sign_in("alice", &secret(PASSWORD), None).await;
        assert!(
            matches!(right, Err(SignInError::Locked { .. })),
            "{engine}: {right:?}"
        );
        assert_eq!(
            e.accounts.password_checks(),
            u64::from(MAX_FAILED),
            "{engine}: the right password, while locked, is not checked"
        );
        e.close().await;
    }
}

/// A right password whose account needs a second factor gives its attempt back: asking for
/// the code never counts towards the lockout, while wrong codes do.
#[tokio::test]
async fn a_right_password_awaiting_its_code_is_not_counted_but_wrong_codes_are() {
    for e in engines().await {
        let engine = e.name();
        let user = alice(&e).await;
        let seed_url = enable_and_confirm(&e, &user.id).await;
        assert!(seed_url.starts_with("otpauth://"), "{engine}");
        for _ in 0..MAX_FAILED * 2 {
            let r = e.accounts.sign_in("alice", &secret(PASSWORD), None).await;
            assert!(
                matches!(r, Err(SignInError::TotpRequired)),
                "{engine}: {r:?}"
            );
        }
        for _ in 1..MAX_FAILED {
            let r = e
                .accounts
                .sign_in("alice", &secret(PASSWORD), Some("000000"))
                .await;
            assert!(
                matches!(
                    r,
                    Err(SignInError::TotpInvalid | SignInError::Locked { .. })
                ),
                "{engine}: {r:?}"
            );
        }
        let r = e
            .accounts
            .sign_in("alice", &secret(PASSWORD), Some("000000"))
            .await;
        assert!(
            matches!(r, Err(SignInError::Locked { .. })),
            "{engine}: {r:?}"
        );
        e.close().await;
    }
}
