//! The `doorman` command.

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};
use doorman::{
    cli::{
        grants::{ClientsCommand, GrantsCommand, KeysCommand},
        users::UsersCommand,
    },
    config::Config,
};

/// mimalloc: a proxy allocates and frees many small buffers per request, where it is measurably
/// cheaper than the system allocator (see bench/README.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Doorman: a two-layer authentication gateway for MCP.
#[derive(Parser)]
#[command(name = "doorman", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway (no config needed: 127.0.0.1:8421, data in ./doorman-data).
    Serve {
        /// The configuration file (TOML); see doorman.example.toml.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Check a configuration file and exit: non-zero, naming the key, on the first error.
    CheckConfig {
        /// The configuration file to check.
        file: PathBuf,
    },
    /// Local accounts: add, list, disable, enable, reset-password, totp (enable, confirm, disable).
    Users {
        #[command(subcommand)]
        cmd: UsersCommand,
        /// The configuration file (TOML) of the Doorman to act on (its data directory or
        /// database_url, and key ring); see doorman.example.toml. Default: no file.
        #[arg(long, value_name = "FILE", global = true)]
        config: Option<PathBuf>,
    },
    /// OAuth clients: list, revoke.
    Clients {
        #[command(subcommand)]
        cmd: ClientsCommand,
        /// The configuration file (TOML) of the Doorman to act on (its data directory or
        /// database_url, and key ring); see doorman.example.toml. Default: no file.
        #[arg(long, value_name = "FILE", global = true)]
        config: Option<PathBuf>,
    },
    /// People's sign-ins at clients (grants): list, revoke.
    Grants {
        #[command(subcommand)]
        cmd: GrantsCommand,
        /// The configuration file (TOML) of the Doorman to act on (its data directory or
        /// database_url, and key ring); see doorman.example.toml. Default: no file.
        #[arg(long, value_name = "FILE", global = true)]
        config: Option<PathBuf>,
    },
    /// The audit trail: tool calls, prompt gets, resource reads, and security events.
    Audit {
        #[command(flatten)]
        args: doorman::cli::audit::AuditArgs,
        /// The configuration file (TOML) of the Doorman to act on (its data directory or
        /// database_url, and key ring); see doorman.example.toml. Default: no file.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// People's connections to resources (layer 2): list, add (for a service client), revoke.
    Connections {
        #[command(subcommand)]
        cmd: doorman::cli::connections::ConnectionsCommand,
        /// The configuration file (TOML) of the Doorman to act on (its data directory or
        /// database_url, and key ring); see doorman.example.toml. Default: no file.
        #[arg(long, value_name = "FILE", global = true)]
        config: Option<PathBuf>,
    },
    /// Back up the SQLite database to a file, consistently, while Doorman runs (PostgreSQL:
    /// use pg_dump). The key ring is not in it: back that up apart.
    Backup {
        /// Where to write the copy (a new file; it must not exist).
        to: PathBuf,
        /// The configuration file (TOML) of the Doorman to back up (its data directory or
        /// database_url); see doorman.example.toml. Default: no file.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Keys: rotate (access-token signing keys), add-sealing-key (the key ring that seals secrets at rest).
    Keys {
        #[command(subcommand)]
        cmd: KeysCommand,
        /// The configuration file (TOML) of the Doorman to act on (its data directory or
        /// database_url, and key ring); see doorman.example.toml. Default: no file.
        #[arg(long, value_name = "FILE", global = true)]
        config: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::CheckConfig { file } => Config::load(Some(&file))
            .map(|_| {
                println!("{}: ok", file.display());
            })
            .map_err(|e| anyhow::anyhow!("{}: {e}", file.display())),
        Command::Serve { config } => serve(config),
        Command::Users { cmd, config } => operate(config, |c| async move {
            doorman::cli::users::run(cmd, &c).await
        }),
        Command::Clients { cmd, config } => operate(config, |c| async move {
            doorman::cli::grants::clients(cmd, &c).await
        }),
        Command::Grants { cmd, config } => operate(config, |c| async move {
            doorman::cli::grants::grants(cmd, &c).await
        }),
        Command::Audit { args, config } => operate(config, |c| async move {
            doorman::cli::audit::run(args, &c).await
        }),
        Command::Connections { cmd, config } => operate(config, |c| async move {
            doorman::cli::connections::run(cmd, &c).await
        }),
        Command::Backup { to, config } => {
            operate(
                config,
                |c| async move { doorman::cli::backup(&c, &to).await },
            )
        }
        Command::Keys { cmd, config } => operate(config, |c| async move {
            doorman::cli::grants::keys(cmd, &c).await
        }),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("doorman: error: {}", format!("{e:#}").replace('\n', " "));
            ExitCode::FAILURE
        }
    }
}

fn serve(config_path: Option<PathBuf>) -> anyhow::Result<()> {
    let config = Config::load(config_path.as_deref()).map_err(anyhow::Error::from)?;
    doorman::server::init_logging(&config);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(doorman::server::serve(config))
}

/// Runs an operator command: loads the config, then the command on a small runtime.
fn operate<F, Fut>(config_path: Option<PathBuf>, command: F) -> anyhow::Result<()>
where
    F: FnOnce(Config) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let config = Config::load(config_path.as_deref()).map_err(anyhow::Error::from)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(command(config))
}
