//! A real `corral up` (orchestrator and render nodes in one process) in its own temporary
//! folder, for tests that need what only `corral up` serves (scene uploads, the local farm's
//! scenes folder). Its output is printed when a test fails.

use super::{eventually, CORRAL};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// `corral up` with `scenes/` (its --scenes), `out/` and `data/` in `dir`; killed (SIGKILL)
/// when dropped.
pub struct Up {
    pub child: Child,
    pub url: String,
    pub dir: tempfile::TempDir,
}

impl Up {
    /// Starts `corral up --listen 127.0.0.1:0 --nodes N --threads 1` in a new folder and
    /// waits for its listening line.
    pub fn start(nodes: u32) -> Up {
        let dir = tempfile::Builder::new()
            .prefix("corral-up-")
            .tempdir()
            .expect("temp dir");
        Up::start_in(dir, nodes)
    }

    /// Starts `corral up` on the folders of `dir`, which may hold an earlier run's data.
    pub fn start_in(dir: tempfile::TempDir, nodes: u32) -> Up {
        std::fs::create_dir_all(dir.path().join("scenes")).expect("scenes folder");
        // stdout goes to a file, not a pipe: a pipe nobody drains would block or break the
        // farm's later prints. stderr is appended to, so an earlier run's log stays.
        let stdout_path = dir.path().join("up.stdout");
        let stdout = std::fs::File::create(&stdout_path).expect("stdout file");
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.path().join("up.stderr"))
            .expect("stderr file");
        let mut child = Command::new(CORRAL)
            .args(["up", "--listen", "127.0.0.1:0", "--threads", "1", "--nodes"])
            .arg(nodes.to_string())
            .arg("--scenes")
            .arg(dir.path().join("scenes"))
            .arg("--output")
            .arg(dir.path().join("out"))
            .arg("--data")
            .arg(dir.path().join("data"))
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .expect("start corral up");
        let mut url = None;
        let started = eventually(Duration::from_secs(60), || {
            if let Ok(Some(_)) = child.try_wait() {
                return true;
            }
            let text = std::fs::read_to_string(&stdout_path).unwrap_or_default();
            url = text
                .lines()
                .next()
                .and_then(|l| l.strip_prefix("corral up listening on "))
                .map(str::to_string);
            url.is_some()
        });
        let up = |url| Up { child, url, dir };
        match url.filter(|_| started) {
            Some(url) => up(url),
            None => {
                let up = up(String::new());
                panic!("corral up did not start:\n{}", up.logs());
            }
        }
    }

    pub fn scenes(&self) -> PathBuf {
        self.dir.path().join("scenes")
    }

    pub fn out(&self) -> PathBuf {
        self.dir.path().join("out")
    }

    pub fn logs(&self) -> String {
        let read = |name: &str| std::fs::read_to_string(self.dir.path().join(name));
        format!(
            "{}\n{}",
            read("up.stdout").unwrap_or_default(),
            read("up.stderr").unwrap_or_default()
        )
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("---- corral up ({}) ----\n{}", self.url, self.logs());
        }
    }
}
