//! The `doorman` command.

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};
use doorman::config::Config;

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
