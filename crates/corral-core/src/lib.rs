//! Corral's domain core: the types every other crate agrees on, with no I/O.
//!
//! Everything here is pure: frame ranges and their limits, render settings, job states and
//! their status texts, typed ids, the farm's task lifecycle and scheduling policy, and the
//! APIs' wire types with the validation that turns an untrusted JSON body into a typed
//! request.

pub mod chunk;
pub mod frames;
pub mod ids;
pub mod job;
pub mod lifecycle;
pub mod manifest;
pub mod node_api;
pub mod orchestrator_api;
pub mod problem;
pub mod render;
pub mod schedule;
pub mod tls;
pub mod validate;

pub use frames::{FrameRange, FrameRangeError};
pub use ids::{LeaseId, NodeId, NodeJobId, OrchestratorId, TaskId};
pub use job::{JobId, JobState};
pub use manifest::{BlobHash, Manifest};
pub use problem::Problem;
pub use render::{Engine, ImageFormat};
pub use validate::FieldError;
