//! `corral`: one binary whose subcommands start the parts of the farm.

mod node_cmd;
mod orchestrator_cmd;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// Corral: a distributed render farm for Blender.
#[derive(Debug, Parser)]
#[command(name = "corral", version, about, long_about = None)]
struct Cli {
    /// More log output (-v: debug, -vv: trace). `RUST_LOG` overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a render node: the tutorial's node API over a queue of Blender jobs.
    #[command(after_help = node_cmd::EXAMPLES)]
    Node(node_cmd::NodeArgs),
    /// Run the orchestrator: the tutorial's /render and /status, the /api/v1 API, the
    /// scheduler and its SQLite database.
    #[command(after_help = orchestrator_cmd::EXAMPLES)]
    Orchestrator(orchestrator_cmd::OrchestratorArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.verbose);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Node(args) => node_cmd::run(args).await,
            Command::Orchestrator(args) => orchestrator_cmd::run(args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line: what went wrong and why, without a backtrace.
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// A future that completes on the next SIGTERM or SIGINT. The handlers are installed
/// when this is called, not when the future is first polled: a signal that arrives right
/// after start-up must not hit the default action (immediate death, Blender orphaned).
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{signal, SignalKind};
    let streams = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    );
    async move {
        let (Ok(mut term), Ok(mut int)) = streams else {
            tracing::error!("cannot listen for signals; stop with SIGKILL");
            return std::future::pending().await;
        };
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received"),
            _ = int.recv() => tracing::info!("SIGINT received"),
        }
    }
}

fn init_tracing(verbose: u8) {
    let default = match verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}
