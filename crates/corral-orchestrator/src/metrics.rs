//! `/metrics` in Prometheus text format: latencies observed as they happen, counts of jobs,
//! tasks, nodes and frames read from the database at scrape time (from the jobs' tallies,
//! so a scrape costs the same however many tasks the farm holds).

use crate::store::Counts;
use corral_core::orchestrator_api::{JobState, TaskStateKind};
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::Mutex;
use std::time::Duration;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: String,
}

/// The orchestrator's metrics.
pub struct Metrics {
    registry: Mutex<Registry>,
    jobs: Family<StateLabel, Gauge>,
    tasks: Family<StateLabel, Gauge>,
    nodes_up: Gauge,
    nodes_known: Gauge,
    frames: Gauge,
    dispatch: Histogram,
    completion: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let jobs = Family::<StateLabel, Gauge>::default();
        let tasks = Family::<StateLabel, Gauge>::default();
        let nodes_up = Gauge::default();
        let nodes_known = Gauge::default();
        let frames = Gauge::default();
        // 1 ms .. ~16 s
        let dispatch = Histogram::new(exponential_buckets(0.001, 2.0, 15));
        let completion = Histogram::new(exponential_buckets(0.001, 2.0, 15));
        let mut registry = Registry::with_prefix("corral");
        registry.register("jobs", "Jobs by state", jobs.clone());
        registry.register("tasks", "Tasks by state", tasks.clone());
        registry.register(
            "nodes_up",
            "Render nodes answering probes",
            nodes_up.clone(),
        );
        registry.register("nodes_known", "Render nodes known", nodes_known.clone());
        registry.register(
            "frames_rendered",
            "Frames reported saved by nodes",
            frames.clone(),
        );
        registry.register(
            "dispatch_seconds",
            "Time for a node to accept a task (POST /job)",
            dispatch.clone(),
        );
        registry.register(
            "completion_notice_seconds",
            "Delay between a task ending on its node and the orchestrator learning of it",
            completion.clone(),
        );
        Metrics {
            registry: Mutex::new(registry),
            jobs,
            tasks,
            nodes_up,
            nodes_known,
            frames,
            dispatch,
            completion,
        }
    }

    pub fn observe_dispatch(&self, d: Duration) {
        self.dispatch.observe(d.as_secs_f64());
    }

    pub fn observe_completion_notice(&self, d: Duration) {
        self.completion.observe(d.as_secs_f64());
    }

    /// Sets the gauges from fresh counts and renders everything.
    pub fn render(&self, counts: &Counts) -> String {
        let n = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        self.jobs.clear();
        for state in JobState::ALL {
            let count = counts.jobs.get(&state).copied().unwrap_or(0);
            self.jobs
                .get_or_create(&StateLabel {
                    state: state.as_str().to_string(),
                })
                .set(n(count));
        }
        self.tasks.clear();
        for (state, count) in TaskStateKind::ALL.iter().zip(counts.tasks) {
            self.tasks
                .get_or_create(&StateLabel {
                    state: state.as_str().to_string(),
                })
                .set(n(count));
        }
        self.nodes_up.set(n(counts.nodes_up));
        self.nodes_known.set(n(counts.nodes_known));
        self.frames.set(n(counts.frames_done));
        let mut out = String::new();
        if let Ok(registry) = self.registry.lock() {
            let _ = encode(&mut out, &registry);
        }
        out
    }
}
