//! `doorman users …`: local accounts for operators (add, list, disable, enable, reset a password,
//! TOTP). Passwords are read from standard input only, never from arguments (which other users
//! of the machine can see in the process list) or the environment.

use std::{io::BufRead, sync::Arc};

use anyhow::{Context, bail};
use secrecy::SecretString;
use serde_json::json;
use zeroize::Zeroizing;

use crate::{
    clock::SystemClock,
    clock::utc,
    config::Config,
    sign_in::accounts::Accounts,
    store::{Store, UserRow},
};

/// `doorman users …`.
#[derive(Debug, clap::Subcommand)]
pub enum UsersCommand {
    /// Create a local account (the password is read from standard input).
    Add {
        /// The username: letters, digits, '.', '_', '-' or '@' (stored lowercased).
        name: String,
        /// Read the password from the first line of standard input (required).
        #[arg(long)]
        password_stdin: bool,
        /// The person's email address.
        #[arg(long, value_name = "EMAIL")]
        email: Option<String>,
        /// Make the person an administrator.
        #[arg(long)]
        admin: bool,
    },
    /// List people.
    List {
        /// Print a JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Refuse a person's sign-ins, revoke their grants and end their browser sign-ins. The
    /// person: username, email or Doorman id; a service client as `client:{client_id}`.
    Disable { name: String },
    /// Let a disabled person (or service client) sign in again.
    Enable { name: String },
    /// Set a new password (read from standard input) and lift any lockout.
    ResetPassword {
        name: String,
        /// Read the password from the first line of standard input (required).
        #[arg(long)]
        password_stdin: bool,
    },
    /// Turn TOTP (authenticator app codes) on or off for a local account: `enable` prints a
    /// new seed, `confirm --code N` makes it take effect, `disable` removes TOTP.
    Totp {
        name: String,
        #[arg(value_enum)]
        action: TotpAction,
        /// With `confirm`: the 6-digit code the authenticator app shows for the new seed.
        #[arg(long)]
        code: Option<String>,
    },
}

/// What `users totp NAME …` does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TotpAction {
    /// Give the account a new seed and print its otpauth:// URI (in force once confirmed).
    Enable,
    /// Make the new seed take effect, given a current code from it (`--code`).
    Confirm,
    /// Remove the account's TOTP.
    Disable,
}

/// Runs one `users` command against the configured store.
pub async fn run(cmd: UsersCommand, config: &Config) -> anyhow::Result<()> {
    super::with_store(config, async |store, keys| {
        let accounts = Accounts::new(
            store.clone(),
            Arc::new(SystemClock),
            keys.clone(),
            &config.sign_in,
        );
        execute(cmd, store, &accounts).await
    })
    .await
}

async fn execute(cmd: UsersCommand, store: &Store, accounts: &Accounts) -> anyhow::Result<()> {
    match cmd {
        UsersCommand::Add {
            name,
            password_stdin,
            email,
            admin,
        } => {
            let password = read_password(password_stdin)?;
            let user = accounts
                .create_local_user(&name, &password, email.as_deref(), admin)
                .await?;
            println!("created user {} (id {})", display_name(&user), user.id);
        }
        UsersCommand::List { json } => {
            let users = store.users().await?;
            if json {
                let list: Vec<serde_json::Value> = users.iter().map(user_json).collect();
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                print!("{}", table(&users));
            }
        }
        UsersCommand::Disable { name } => {
            let user = accounts.set_disabled(&name, true).await?;
            println!(
                "disabled user {} (its grants are revoked)",
                display_name(&user)
            );
        }
        UsersCommand::Enable { name } => {
            let user = accounts.set_disabled(&name, false).await?;
            println!("enabled user {}", display_name(&user));
        }
        UsersCommand::ResetPassword {
            name,
            password_stdin,
        } => {
            let password = read_password(password_stdin)?;
            accounts.reset_password(&name, &password).await?;
            println!(
                "password reset for user {}; their sign-ins at clients were revoked",
                name.trim().to_ascii_lowercase()
            );
        }
        UsersCommand::Totp { name, action, code } => {
            let user = store
                .user_by_username(&name)
                .await?
                .with_context(|| format!("no such user: {:?}", name.trim().to_ascii_lowercase()))?;
            match action {
                TotpAction::Enable => {
                    anyhow::ensure!(
                        code.is_none(),
                        "--code goes with `users totp NAME confirm`, after `enable`"
                    );
                    println!("{}", accounts.enable_totp(&user.id).await?);
                    eprintln!(
                        "Load this URI into the authenticator app, then run `doorman users totp {} confirm --code CODE` \
                         with the code it shows. Until then sign-in works as before.",
                        display_name(&user)
                    );
                }
                TotpAction::Confirm => {
                    let code = code.context(
                        "`users totp NAME confirm` needs --code CODE: the 6-digit code the authenticator app shows",
                    )?;
                    accounts.confirm_totp(&user.id, &code).await?;
                    println!(
                        "TOTP enabled for user {}: sign-in now needs a code",
                        display_name(&user)
                    );
                }
                TotpAction::Disable => {
                    accounts.disable_totp(&user.id).await?;
                    println!("TOTP disabled for user {}", display_name(&user));
                }
            }
        }
    }
    Ok(())
}

/// The first line of standard input, without its line ending.
fn read_password(password_stdin: bool) -> anyhow::Result<SecretString> {
    if !password_stdin {
        bail!(
            "give the password on standard input with --password-stdin \
             (for example: printf '%s\\n' \"$PASSWORD\" | doorman users …)"
        );
    }
    let mut line = Zeroizing::new(String::new());
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("cannot read the password from standard input")?;
    let password = line.strip_suffix('\n').unwrap_or(&line);
    let password = password.strip_suffix('\r').unwrap_or(password);
    if password.is_empty() {
        bail!("no password on standard input");
    }
    Ok(SecretString::from(password))
}

fn display_name(user: &UserRow) -> &str {
    user.username.as_deref().unwrap_or(&user.id)
}

fn user_json(user: &UserRow) -> serde_json::Value {
    json!({
        "id": user.id,
        "username": user.username,
        "issuer": user.issuer,
        "subject": user.subject,
        "email": user.email,
        "name": user.name,
        "groups": user.groups,
        "admin": user.is_admin,
        "disabled": user.disabled_at.is_some(),
        "disabled_at": user.disabled_at.map(utc),
        "created_at": utc(user.created_at),
    })
}

/// Columns: username, email, admin, disabled, created.
fn table(users: &[UserRow]) -> String {
    let rows: Vec<[String; 5]> = users
        .iter()
        .map(|u| {
            [
                display_name(u).to_owned(),
                u.email.clone().unwrap_or_else(|| "-".into()),
                if u.is_admin { "yes" } else { "no" }.into(),
                u.disabled_at.map_or_else(|| "no".into(), utc),
                utc(u.created_at),
            ]
        })
        .collect();
    super::table(["USERNAME", "EMAIL", "ADMIN", "DISABLED", "CREATED"], &rows)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(subcommand)]
        cmd: UsersCommand,
    }

    fn parse(args: &[&str]) -> Result<UsersCommand, clap::Error> {
        Cli::try_parse_from(std::iter::once("users").chain(args.iter().copied())).map(|c| c.cmd)
    }

    #[test]
    fn commands_parse() {
        assert!(matches!(
            parse(&["add", "alice", "--password-stdin", "--email", "a@x.org", "--admin"]).unwrap(),
            UsersCommand::Add { name, password_stdin: true, email: Some(e), admin: true }
                if name == "alice" && e == "a@x.org"
        ));
        assert!(matches!(
            parse(&["list", "--json"]).unwrap(),
            UsersCommand::List { json: true }
        ));
        assert!(matches!(
            parse(&["reset-password", "bob", "--password-stdin"]).unwrap(),
            UsersCommand::ResetPassword {
                password_stdin: true,
                ..
            }
        ));
        assert!(matches!(
            parse(&["totp", "bob", "enable"]).unwrap(),
            UsersCommand::Totp {
                action: TotpAction::Enable,
                ..
            }
        ));
        assert!(matches!(
            parse(&["totp", "bob", "disable"]).unwrap(),
            UsersCommand::Totp {
                action: TotpAction::Disable,
                ..
            }
        ));
        assert!(matches!(
            parse(&["totp", "bob", "confirm", "--code", "123456"]).unwrap(),
            UsersCommand::Totp {
                action: TotpAction::Confirm,
                code: Some(c),
                ..
            } if c == "123456"
        ));
        assert!(parse(&["totp", "bob", "maybe"]).is_err());
        assert!(parse(&["add"]).is_err());
    }

    #[test]
    fn passwords_come_only_from_stdin() {
        let err = read_password(false).unwrap_err().to_string();
        assert!(err.contains("--password-stdin"), "{err}");
    }

    #[test]
    fn times_print_as_utc() {
        use crate::clock::utc;
        assert_eq!(utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc(951_782_400_000), "2000-02-29T00:00:00Z");
        assert_eq!(utc(1_767_225_599_999), "2025-12-31T23:59:59Z");
        assert_eq!(utc(1_767_225_600_000), "2026-01-01T00:00:00Z");
        assert_eq!(utc(4_107_542_400_000), "2100-03-01T00:00:00Z");
        assert_eq!(utc(-1_000), "1969-12-31T23:59:59Z");
    }

    #[test]
    fn the_table_lines_up() {
        let user = |name: &str, email: Option<&str>, admin, disabled_at| UserRow {
            id: format!("id-{name}"),
            issuer: "local".into(),
            subject: format!("id-{name}"),
            username: Some(name.into()),
            email: email.map(Into::into),
            name: None,
            groups: Default::default(),
            is_admin: admin,
            disabled_at,
            created_at: 0,
        };
        let text = table(&[
            user("alice", Some("alice@example.com"), true, None),
            user("bo", None, false, Some(86_400_000)),
        ]);
        assert_eq!(
            text,
            "USERNAME  EMAIL              ADMIN  DISABLED              CREATED\n\
             alice     alice@example.com  yes    no                    1970-01-01T00:00:00Z\n\
             bo        -                  no     1970-01-02T00:00:00Z  1970-01-01T00:00:00Z\n"
        );
    }
}
