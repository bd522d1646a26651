//! Everything Corral knows about driving Blender: the argument vector ([`args`]), the
//! output parser ([`parse`]), the child process and its process group ([`process`]), the
//! supervisor Blender runs under ([`reaper`]), a warm worker and its channel ([`warm`]),
//! and the start-up probe ([`probe`]).

pub mod args;
pub mod parse;
pub mod probe;
pub mod process;
pub mod reaper;
pub mod warm;

pub use args::{RenderArgs, RenderArgsError};
pub use parse::{OutputParser, ParsedLine};
pub use probe::{probe_blender, BlenderInfo, ProbeError};
pub use process::{BlenderProcess, ExitOutcome, SpawnError};
