//! A real PostgreSQL server for tests: `initdb` and `pg_ctl` from Debian's `postgresql`
//! package, run as the unprivileged `postgres` user when the tests run as root (PostgreSQL
//! refuses to run as root), in a temporary folder, listening on a Unix socket in that
//! folder (no TCP port to collide with) and, for tests across processes, on a loopback
//! TCP port. Stopped and removed when dropped.
//!
//! Every command is an argument vector; nothing goes through a shell.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

/// A running PostgreSQL server.
pub struct PgServer {
    bin: PathBuf,
    dir: tempfile::TempDir,
    /// The TCP port on 127.0.0.1.
    pub port: u16,
    /// Run commands as this user (`postgres` when the tests run as root).
    user: Option<String>,
    databases: AtomicU32,
}

/// The folder holding `initdb` and `pg_ctl`: Debian keeps them out of `PATH`, under
/// `/usr/lib/postgresql/VERSION/bin`.
fn find_bin() -> PathBuf {
    if let Ok(dir) = std::env::var("CORRAL_PG_BIN") {
        return PathBuf::from(dir);
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|entries| entries.flatten().map(|e| e.path().join("bin")).collect())
        .unwrap_or_default();
    versions.retain(|p| p.join("initdb").exists());
    versions.sort();
    versions.pop().unwrap_or_else(|| {
        panic!(
            "PostgreSQL is not installed: no /usr/lib/postgresql/*/bin/initdb \
             (`make test` installs Debian's `postgresql`; or set CORRAL_PG_BIN)"
        )
    })
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

impl PgServer {
    /// Creates a cluster in a new temporary folder and starts it.
    pub fn start() -> PgServer {
        let bin = find_bin();
        let dir = tempfile::Builder::new()
            .prefix("corral-pg-")
            .tempdir()
            .unwrap_or_else(|e| panic!("temporary folder for PostgreSQL: {e}"));
        let root = nix::unistd::geteuid().is_root();
        let user = root.then(|| "postgres".to_string());
        if root {
            // The server runs as `postgres`, which must reach and own its folders.
            let _ = std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755));
            let pg = nix::unistd::User::from_name("postgres")
                .ok()
                .flatten()
                .unwrap_or_else(|| panic!("no `postgres` user to run PostgreSQL as"));
            for sub in ["data", "run"] {
                let path = dir.path().join(sub);
                std::fs::create_dir(&path).unwrap_or_else(|e| panic!("{sub} folder: {e}"));
                let _ = nix::unistd::chown(&path, Some(pg.uid), Some(pg.gid));
            }
        } else {
            for sub in ["data", "run"] {
                std::fs::create_dir(dir.path().join(sub))
                    .unwrap_or_else(|e| panic!("{sub} folder: {e}"));
            }
        }
        let server = PgServer {
            bin,
            port: free_port(),
            dir,
            user,
            databases: AtomicU32::new(0),
        };
        let data = server.data_dir();
        let out = server.run(
            "initdb",
            &[
                "-D".as_ref(),
                data.as_os_str(),
                "-U".as_ref(),
                "corral".as_ref(),
                "-A".as_ref(),
                "trust".as_ref(),
                "--no-sync".as_ref(),
            ],
        );
        assert!(out.status.success(), "initdb failed: {}", describe(&out));
        server.pg_ctl_start();
        server
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn socket_dir(&self) -> PathBuf {
        self.dir.path().join("run")
    }

    /// Runs one of PostgreSQL's programs, as the server's user.
    fn run(&self, program: &str, args: &[&std::ffi::OsStr]) -> Output {
        let path = self.bin.join(program);
        let mut cmd = match &self.user {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(&path);
                c
            }
            None => Command::new(&path),
        };
        cmd.args(args)
            .current_dir(self.dir.path())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", path.display()))
    }

    fn pg_ctl_start(&self) {
        // The options are this harness's own constants, never input.
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200",
            self.port,
            self.socket_dir().display()
        );
        let log = self.dir.path().join("run").join("server.log");
        let out = self.run(
            "pg_ctl",
            &[
                "start".as_ref(),
                "-w".as_ref(),
                "-D".as_ref(),
                self.data_dir().as_os_str(),
                "-l".as_ref(),
                log.as_os_str(),
                "-o".as_ref(),
                options.as_ref(),
            ],
        );
        assert!(
            out.status.success(),
            "pg_ctl start failed: {}\n{}",
            describe(&out),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }

    /// Stops the server (fast shutdown: clients are disconnected) and waits for it.
    pub fn stop(&self) {
        let out = self.run(
            "pg_ctl",
            &[
                "stop".as_ref(),
                "-w".as_ref(),
                "-m".as_ref(),
                "fast".as_ref(),
                "-D".as_ref(),
                self.data_dir().as_os_str(),
            ],
        );
        assert!(
            out.status.success(),
            "pg_ctl stop failed: {}",
            describe(&out)
        );
    }

    /// Starts the server again after [`PgServer::stop`], on the same port and data.
    pub fn restart(&self) {
        self.pg_ctl_start();
    }

    /// A fresh, empty database on this server; its URL (TCP on loopback).
    pub fn database(&self) -> String {
        let n = self.databases.fetch_add(1, Ordering::Relaxed);
        let name = format!("corral_{}_{n}", std::process::id());
        let createdb = self.bin.join("createdb");
        let status = Command::new(&createdb)
            .args(["-h"])
            .arg(self.socket_dir())
            .args(["-p", &self.port.to_string(), "-U", "corral", &name])
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", createdb.display()));
        assert!(
            status.status.success(),
            "createdb failed: {}",
            describe(&status)
        );
        format!("postgres://corral@127.0.0.1:{}/{name}", self.port)
    }

    /// The server's log, for a failing test's output.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("run").join("server.log")).unwrap_or_default()
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        let _ = self.run(
            "pg_ctl",
            &[
                "stop".as_ref(),
                "-m".as_ref(),
                "immediate".as_ref(),
                "-D".as_ref(),
                self.data_dir().as_os_str(),
            ],
        );
    }
}

fn describe(out: &Output) -> String {
    format!(
        "{}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}
