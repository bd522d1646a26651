//! `corral`: one binary whose subcommands start the parts of the farm (`up`, `node`,
//! `orchestrator`) and drive it (`submit`, `fetch`, `status`, `jobs`, `nodes`, `cancel`,
//! `logs`) and manage its tokens (`token`).

mod bench;
mod client_cmds;
mod fetch;
mod health_cmd;
mod node_cmd;
mod orchestrator_cmd;
mod pack;
mod progress;
mod scene;
mod table;
mod token_cmd;
mod up_cmd;
mod up_scenes;
mod upload;

use clap::{CommandFactory, Parser, Subcommand};
use std::process::ExitCode;

/// Exit statuses besides 0 (success) and 1 (an error, printed as one `error:` line).
pub mod exit {
    /// Bad command-line usage (clap's convention).
    pub const USAGE: u8 = 2;
    /// The job followed by `submit --wait` or `status --watch` failed.
    pub const JOB_FAILED: u8 = 3;
    /// The job followed was cancelled.
    pub const JOB_CANCELLED: u8 = 4;
    /// Ctrl-C: the command stopped following; the job goes on.
    pub const INTERRUPTED: u8 = 130;
}

const EXAMPLES: &str = "\
Examples:
  corral up                              # a farm on this machine; keep it running
  corral submit scene.blend --wait       # render the scene's frames with a progress bar
  corral submit shot.blend --upload --wait   # send the scene's files; frames come back
  corral jobs                            # every job, newest first
  corral status JOB --watch              # follow one job
  corral node --orchestrator http://farm:4000   # add this machine to a farm

Exit status: 0 success, 1 error, 2 bad usage, 3 job failed, 4 job cancelled,
130 interrupted (the job keeps running).";

/// Corral: a distributed render farm for Blender.
#[derive(Debug, Parser)]
#[command(name = "corral", version, about, long_about = None, after_help = EXAMPLES)]
struct Cli {
    /// More log output (-v: debug, -vv: trace). `RUST_LOG` overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a whole farm in this process: an orchestrator and local render nodes.
    #[command(after_help = up_cmd::EXAMPLES)]
    Up(up_cmd::UpArgs),
    /// Submit a .blend file for rendering; with --wait, follow it with a progress bar.
    #[command(after_help = client_cmds::SUBMIT_EXAMPLES)]
    Submit(client_cmds::SubmitArgs),
    /// Download a job's rendered frames: those missing here or differing from the farm's.
    #[command(after_help = fetch::FETCH_EXAMPLES)]
    Fetch(fetch::FetchArgs),
    /// Show one job: progress, tasks, where its frames are; --watch follows it.
    #[command(after_help = client_cmds::STATUS_EXAMPLES)]
    Status(client_cmds::StatusArgs),
    /// List jobs, newest first.
    #[command(after_help = client_cmds::JOBS_EXAMPLES)]
    Jobs(client_cmds::JobsArgs),
    /// List the farm's render nodes.
    #[command(after_help = client_cmds::NODES_EXAMPLES)]
    Nodes(client_cmds::NodesArgs),
    /// Cancel a job: queued tasks are dropped, running renders are killed.
    #[command(after_help = client_cmds::CANCEL_EXAMPLES)]
    Cancel(client_cmds::CancelArgs),
    /// Show the end of Blender's output for a job's tasks.
    #[command(after_help = client_cmds::LOGS_EXAMPLES)]
    Logs(client_cmds::LogsArgs),
    /// Run a render node: the tutorial's node API over a queue of Blender jobs.
    #[command(after_help = node_cmd::EXAMPLES)]
    Node(node_cmd::NodeArgs),
    /// Run the orchestrator: the tutorial's /render and /status, the /api/v1 API, the
    /// scheduler and its SQLite database.
    #[command(after_help = orchestrator_cmd::EXAMPLES)]
    Orchestrator(orchestrator_cmd::OrchestratorArgs),
    /// Manage the farm's tokens (list, create, revoke) on its database directly.
    #[command(after_help = token_cmd::EXAMPLES)]
    Token(token_cmd::TokenArgs),
    /// Measure: the scheduler with simulated nodes, or real renders on this machine.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// A container's health probe: 200 from this server's PATH on loopback.
    #[command(hide = true)]
    Healthcheck(health_cmd::HealthArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    #[command(after_help = COMPLETIONS_EXAMPLES)]
    Completions {
        /// The shell to complete for.
        shell: clap_complete::Shell,
    },
}

const COMPLETIONS_EXAMPLES: &str = "\
Examples:
  corral completions bash > ~/.local/share/bash-completion/completions/corral
  corral completions zsh > ~/.zfunc/_corral
  corral completions fish > ~/.config/fish/completions/corral.fish";

fn main() -> ExitCode {
    // The supervisor every Blender runs under (see corral_blender::reaper): dispatched
    // before anything else, with no runtime, logging or argument parsing of its own.
    let mut args = std::env::args_os();
    if args
        .nth(1)
        .is_some_and(|a| a == corral_blender::reaper::SUBCOMMAND)
    {
        let code = corral_blender::reaper::main(args);
        return ExitCode::from(u8::try_from(code).unwrap_or(1));
    }
    // /proc/self/exe is this very binary even if the file was replaced or deleted since.
    corral_blender::process::use_reaper("/proc/self/exe".into());
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(e),
    };
    init_tracing(cli.verbose, default_log_level(&cli.command));
    // Not for the servers, nor for `submit` and `fetch`, which stream files over sockets:
    // a farm that closes a connection mid-upload (an orchestrator restarting) must be an
    // error they resume from, not a SIGPIPE that kills them (hyper writes with writev,
    // which raises SIGPIPE on a closed socket).
    if !matches!(
        cli.command,
        Command::Up(_)
            | Command::Node(_)
            | Command::Orchestrator(_)
            | Command::Submit(_)
            | Command::Fetch(_)
    ) {
        die_quietly_on_broken_pipe();
    }
    if let Command::Completions { shell } = cli.command {
        clap_complete::generate(shell, &mut Cli::command(), "corral", &mut std::io::stdout());
        return ExitCode::SUCCESS;
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Up(args) => up_cmd::run(args).await.map(|()| ExitCode::SUCCESS),
            Command::Submit(args) => client_cmds::submit(args).await,
            Command::Fetch(args) => fetch::fetch(args).await,
            Command::Status(args) => client_cmds::status(args).await,
            Command::Jobs(args) => client_cmds::jobs(args).await,
            Command::Nodes(args) => client_cmds::nodes(args).await,
            Command::Cancel(args) => client_cmds::cancel(args).await,
            Command::Logs(args) => client_cmds::logs(args).await,
            Command::Node(args) => node_cmd::run(args).await.map(|()| ExitCode::SUCCESS),
            Command::Orchestrator(args) => orchestrator_cmd::run(args)
                .await
                .map(|()| ExitCode::SUCCESS),
            Command::Token(args) => token_cmd::run(args).await,
            Command::Bench(command) => bench::run(command).await,
            Command::Healthcheck(args) => health_cmd::run(args).await,
            Command::Completions { .. } => Ok(ExitCode::SUCCESS),
        }
    });
    // Client commands may leave a poll or a Blender probe in flight (Ctrl-C): do not wait.
    runtime.shutdown_background();
    match result {
        Ok(code) => code,
        Err(e) => {
            // One line: what went wrong and why, without a backtrace.
            eprintln!("error: {}", one_line(&format!("{e:#}")));
            ExitCode::FAILURE
        }
    }
}

/// Prints help and version as clap does; any other parse error as one line naming what
/// was wrong and where to read more (clap's own form spans several lines with a usage
/// block that buries the reason).
fn usage_error(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(
        e.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        // clap prints to stdout and exits 0 for help, 2 for a bare `corral`.
        e.exit();
    }
    let text = e.render().to_string();
    let mut paragraphs = text.split("\n\n");
    let reason = paragraphs.next().unwrap_or_default();
    let reason = reason.strip_prefix("error: ").unwrap_or(reason);
    let mut line = one_line(reason);
    for paragraph in paragraphs {
        if let Some(tip) = paragraph.trim().strip_prefix("tip: ") {
            line.push_str(&format!(" ({})", one_line(tip)));
        }
    }
    // Point at the subcommand's help when one was named: that is where its examples are.
    let subcommand = std::env::args().nth(1).filter(|arg| {
        Cli::command()
            .get_subcommands()
            .any(|c| c.get_name() == arg.as_str())
    });
    let command = match subcommand {
        Some(name) => format!("corral {name}"),
        None => "corral".to_string(),
    };
    eprintln!("error: {line} (see `{command} --help`)");
    ExitCode::from(exit::USAGE)
}

/// Restores the default SIGPIPE action, so `corral jobs | head` ends quietly when `head`
/// stops reading, as other command-line tools do, instead of panicking on the next print.
/// Only for client commands that send no files: servers, `submit` and `fetch` keep Rust's
/// default (a closed socket is an error to handle, never a reason to die).
fn die_quietly_on_broken_pipe() {
    use nix::sys::signal::{signal, SigHandler, Signal};
    // SAFETY: installs the default action (no handler code runs in signal context); called
    // before the async runtime starts any thread.
    #[allow(unsafe_code)]
    let _ = unsafe { signal(Signal::SIGPIPE, SigHandler::SigDfl) };
}

/// Folds a message onto one line: error chains from libraries sometimes carry newlines.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Servers log what they do; client commands speak for themselves and log only trouble.
fn default_log_level(command: &Command) -> &'static str {
    match command {
        Command::Node(_) | Command::Orchestrator(_) => "info",
        // The local farm's terminal shows what Corral's own crates do (jobs, tasks, nodes),
        // not the chatter of the libraries below them.
        Command::Up(_) => "warn,corral=info",
        _ => "warn",
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

fn init_tracing(verbose: u8, default: &str) {
    let default = match verbose {
        0 => default,
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
