//! `corral bench`: measurements anyone can rerun. `sim` drives the real orchestrator with
//! SIMULATED nodes (the scheduler at a scale no machine renders); `local` renders a real
//! scene with real Blender on this machine, side by side with one plain Blender.

mod local;
mod sim;
mod sim_node;

use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// SIMULATED nodes (no Blender) driven by the real orchestrator: efficiency,
    /// dispatches per second, completion latency, requeue after node loss, memory.
    #[command(after_help = sim::EXAMPLES)]
    Sim(sim::SimArgs),
    /// Real Blender on this machine: one plain `blender -a`, then `corral up` warm and
    /// cold on the same frames; wall times and ratios.
    #[command(after_help = local::EXAMPLES)]
    Local(local::LocalArgs),
}

pub async fn run(command: BenchCommand) -> anyhow::Result<std::process::ExitCode> {
    match command {
        BenchCommand::Sim(args) => sim::run(args).await,
        BenchCommand::Local(args) => local::run(args).await,
    }
}
