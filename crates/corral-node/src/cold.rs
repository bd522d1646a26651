//! The cold backend: a Blender process per task, `blender -b SCENE -o OUT -E ENGINE
//! [-F FORMAT] -s FROM -e TO -j 1 -t N -a`, which exits when the task is done. Saved frames
//! are known from its `Saved:` lines.

use crate::backend::{BoxFuture, RenderBackend, RenderMode, RenderTask, TaskEnd, TaskEvents};
use corral_blender::{BlenderProcess, ExitOutcome, RenderArgs};
use corral_core::node_api::WorkerInfo;
use std::path::PathBuf;
use tokio_util::sync::CancellationToken;

pub struct ColdBackend {
    blender: PathBuf,
}

impl ColdBackend {
    pub fn new(blender: PathBuf) -> Self {
        ColdBackend { blender }
    }

    async fn run(
        &self,
        task: &RenderTask,
        events: &mut dyn TaskEvents,
        cancel: CancellationToken,
    ) -> TaskEnd {
        let args = RenderArgs {
            blend: task.scene.clone(),
            output_pattern: task.output_pattern.clone(),
            engine: task.engine,
            format: task.format,
            range: task.range,
            threads: task.threads,
        };
        let argv = match args.to_argv() {
            Ok(argv) => argv,
            Err(e) => return TaskEnd::Failed(e.to_string()),
        };
        let mut process = match BlenderProcess::spawn(&self.blender, &argv) {
            Ok(process) => process,
            Err(e) => return TaskEnd::Failed(e.to_string()),
        };
        let blender_pid = process.blender_pid().await;
        let command_line: Vec<_> = argv.iter().map(|a| a.to_string_lossy()).collect();
        events.started(
            blender_pid,
            &format!("# {} {}", self.blender.display(), command_line.join(" ")),
        );
        match process
            .run(cancel.cancelled_owned(), |line| events.line(line))
            .await
        {
            Ok(ExitOutcome::Exited(code)) => TaskEnd::Exited(code),
            Ok(ExitOutcome::Signalled(sig)) => TaskEnd::Signalled(sig),
            Ok(ExitOutcome::Cancelled) => TaskEnd::Cancelled,
            Err(e) => TaskEnd::Failed(format!("lost track of Blender: {e}")),
        }
    }
}

impl RenderBackend for ColdBackend {
    fn mode(&self) -> RenderMode {
        RenderMode::Cold
    }

    fn asks_before_each_frame(&self) -> bool {
        false
    }

    fn saves_from_output(&self) -> bool {
        true
    }

    fn render<'a>(
        &'a self,
        task: &'a RenderTask,
        events: &'a mut dyn TaskEvents,
        cancel: CancellationToken,
    ) -> BoxFuture<'a, TaskEnd> {
        Box::pin(self.run(task, events, cancel))
    }

    fn workers(&self) -> Vec<WorkerInfo> {
        Vec::new()
    }

    fn shut_down(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
}
