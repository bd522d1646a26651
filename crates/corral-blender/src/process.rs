//! A running Blender: spawned from an argument vector in its own process group, its
//! output streamed line by line, and everything it started killed on every exit path.
//!
//! Architecture invariant: Blender never outlives the process that started it, and
//! neither does anything Blender (or a wrapper script given as `--blender`) started. When
//! the binary has enabled it ([`use_reaper`]), Blender runs under a small supervisor, the
//! binary itself re-executed as `corral __reaper` (see [`crate::reaper`]): the node holds
//! one end of a socket that is the supervisor's standard input, and when that end closes
//! (cancel, the handle dropped, the node killed by SIGKILL: the kernel closes it), the
//! supervisor kills Blender's process group and every process left under it, which it
//! inherits as a child subreaper, then exits. Without the supervisor (library tests),
//! Blender is killed with its process group on cancel and drop, and by the kernel
//! (`PR_SET_PDEATHSIG`) when the node dies; processes that left its group then survive.

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use std::collections::BTreeSet;
use std::ffi::OsString;
use std::future::Future;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

/// Longest output line kept; the rest of a longer one is dropped, and the line says so
/// (see [`cut_marker`]). Blender's lines are short, but its output is input from outside
/// and must not grow memory, or the job's log file, without bound.
pub const MAX_LINE_BYTES: usize = 16 * 1024;

/// The file descriptor a control channel is given as in Blender (see
/// [`BlenderProcess::spawn_with_channel`]).
pub const CHANNEL_FD: i32 = 3;

/// How long a supervisor gets to kill Blender and exit once told to, before it is killed.
const SUPERVISOR_GRACE: Duration = Duration::from_secs(5);

/// How long the output may go on after Blender has exited (a process that left its group
/// and kept the pipe open cannot hold a run up for longer).
const OUTPUT_GRACE: Duration = Duration::from_secs(2);

/// What ends a line that was cut at [`MAX_LINE_BYTES`].
pub fn cut_marker(dropped: u64) -> String {
    format!(" [corral: line cut, {dropped} more bytes dropped]")
}

/// The program started as Blender's supervisor, when the binary has one.
static REAPER: OnceLock<PathBuf> = OnceLock::new();

/// Runs every Blender from now on under `program __reaper` (the calling binary, which
/// must dispatch that subcommand to [`crate::reaper::main`] before anything else).
pub fn use_reaper(program: PathBuf) {
    let _ = REAPER.set(program);
}

/// Children this module started and has not reaped yet; [`reap_orphans`] leaves them be.
static CHILDREN: Mutex<BTreeSet<i32>> = Mutex::new(BTreeSet::new());

fn children() -> std::sync::MutexGuard<'static, BTreeSet<i32>> {
    CHILDREN.lock().unwrap_or_else(|p| p.into_inner())
}

/// Whether [`become_subreaper`] succeeded.
static SUBREAPER: OnceLock<()> = OnceLock::new();

/// Makes this process a child subreaper (`PR_SET_CHILD_SUBREAPER`): a process whose parent
/// dies (a wrapper's helper whose supervisor was killed) becomes this process's child
/// instead of init's, so [`reap_orphans`] can kill and reap it.
pub fn become_subreaper() -> io::Result<()> {
    nix::sys::prctl::set_child_subreaper(true).map_err(io::Error::from)?;
    let _ = SUBREAPER.set(());
    Ok(())
}

/// Kills and reaps children of this process that it did not start through this module:
/// orphans handed to it as a subreaper. Does nothing unless [`become_subreaper`] was
/// called. The process must start children only through this module.
pub fn reap_orphans() -> usize {
    if SUBREAPER.get().is_none() {
        return 0;
    }
    let me = nix::unistd::getpid().as_raw();
    // Held while scanning, so a child being spawned is registered before it is seen.
    let known = children();
    let mut reaped = 0;
    for pid in children_of(me) {
        if known.contains(&pid) {
            continue;
        }
        let pid = Pid::from_raw(pid);
        let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
        // Killed just now: it is a zombie at once or within a moment; the next sweep
        // reaps it if not.
        for _ in 0..50 {
            match nix::sys::wait::waitpid(pid, Some(nix::sys::wait::WaitPidFlag::WNOHANG)) {
                Ok(nix::sys::wait::WaitStatus::StillAlive) | Err(nix::errno::Errno::EINTR) => {
                    std::thread::sleep(Duration::from_millis(1));
                }
                _ => {
                    reaped += 1;
                    break;
                }
            }
        }
    }
    reaped
}

/// Process ids whose parent is `parent`, read from `/proc`.
pub(crate) fn children_of(parent: i32) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|stat| parent_in_stat(&stat))
                == Some(parent)
        })
        .collect()
}

/// The parent process id in a `/proc/PID/stat` line: the second field after the command
/// name, which is in parentheses and may itself contain spaces and parentheses.
fn parent_in_stat(stat: &str) -> Option<i32> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let _state = fields.next()?;
    fields.next()?.parse().ok()
}

/// How a Blender run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitOutcome {
    /// Blender exited by itself with this code.
    Exited(i32),
    /// Blender was killed by this signal, not by us.
    Signalled(i32),
    /// We killed it because the run was cancelled.
    Cancelled,
}

#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("Blender not found at `{}` (install it, e.g. `apt-get install blender`, or pass --blender PATH)", .0.display())]
    NotFound(PathBuf),
    #[error("Blender at `{}` is not executable: {source}", path.display())]
    NotExecutable { path: PathBuf, source: io::Error },
    #[error("could not start Blender at `{}`: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
}

/// A Blender child process (or its supervisor). Dropping it before it has been waited
/// for kills Blender and everything it started.
#[derive(Debug)]
pub struct BlenderProcess {
    child: Child,
    /// The direct child: the supervisor, or Blender itself.
    child_pid: u32,
    /// Our end of the supervisor's standard input; closing it stops everything.
    lifeline: Option<BufReader<tokio::net::UnixStream>>,
    blender_pid: Option<u32>,
    lines: Option<mpsc::Receiver<String>>,
    reaped: bool,
}

impl BlenderProcess {
    /// Starts `program` with `args` (never through a shell) in a new process group, with
    /// stdin closed and stdout/stderr read line by line.
    pub fn spawn(program: &Path, args: &[OsString]) -> Result<Self, SpawnError> {
        Self::start(program, args, None)
    }

    /// Like [`spawn`](Self::spawn), with `channel` (one end of a socket pair) open in
    /// Blender as file descriptor [`CHANNEL_FD`]: a way to talk to a Python script in
    /// Blender that nothing Blender prints can disturb.
    pub fn spawn_with_channel(
        program: &Path,
        args: &[OsString],
        channel: OwnedFd,
    ) -> Result<Self, SpawnError> {
        Self::start(program, args, Some(channel))
    }

    fn start(
        program: &Path,
        args: &[OsString],
        channel: Option<OwnedFd>,
    ) -> Result<Self, SpawnError> {
        let program = resolve_program(program)?;
        let spawn_error = |e: io::Error| match e.kind() {
            io::ErrorKind::NotFound => SpawnError::NotFound(program.clone()),
            io::ErrorKind::PermissionDenied => SpawnError::NotExecutable {
                path: program.clone(),
                source: e,
            },
            _ => SpawnError::Io {
                path: program.clone(),
                source: e,
            },
        };
        let reaper = REAPER.get();
        let mut cmd = match reaper {
            Some(reaper) => {
                let mut cmd = Command::new(reaper);
                cmd.arg0("corral").arg(crate::reaper::SUBCOMMAND);
                if channel.is_some() {
                    cmd.args(["--keep-fd", &CHANNEL_FD.to_string()]);
                }
                cmd.arg("--").arg(&program);
                cmd
            }
            None => Command::new(&program),
        };
        cmd.args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(false);
        let mut lifeline = None;
        if reaper.is_some() {
            let (ours, theirs) = std::os::unix::net::UnixStream::pair().map_err(spawn_error)?;
            cmd.stdin(Stdio::from(OwnedFd::from(theirs)));
            lifeline = Some(ours);
        } else {
            cmd.stdin(Stdio::null());
        }
        let channel_fd = channel.as_ref().map(AsRawFd::as_raw_fd);
        let parent = nix::unistd::getpid();
        let with_pdeathsig = reaper.is_none();
        // SAFETY: the closure runs in the forked child before exec and only makes
        // async-signal-safe system calls (dup2, fcntl, prctl, getppid); it allocates
        // nothing.
        #[allow(unsafe_code)]
        unsafe {
            cmd.pre_exec(move || {
                if let Some(fd) = channel_fd {
                    if fd == CHANNEL_FD {
                        // Already in place: only clear close-on-exec.
                        if nix::libc::fcntl(fd, nix::libc::F_SETFD, 0) == -1 {
                            return Err(io::Error::last_os_error());
                        }
                    } else if nix::libc::dup2(fd, CHANNEL_FD) == -1 {
                        return Err(io::Error::last_os_error());
                    }
                }
                if with_pdeathsig {
                    // The kernel sends SIGKILL to Blender when the thread that forked it
                    // dies. Tokio's worker threads live as long as the runtime, i.e. the
                    // node. (A supervisor must outlive the node to clean up: it watches
                    // its standard input instead.)
                    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(io::Error::from)?;
                    // The parent may have died between fork and prctl; then nobody would
                    // signal us, so refuse to exec at all.
                    if nix::unistd::getppid() != parent {
                        return Err(io::Error::other("parent exited before Blender started"));
                    }
                }
                Ok(())
            });
        }
        let mut child = {
            let mut known = children();
            let child = cmd.spawn().map_err(spawn_error)?;
            if let Some(pid) = child.id() {
                known.insert(pid as i32);
            }
            child
        };
        // The child has its copy of the channel now.
        drop(channel);
        let child_pid = child.id().ok_or_else(|| SpawnError::Io {
            path: program.clone(),
            source: io::Error::other("the child has no process id"),
        })?;
        let lifeline = match lifeline {
            Some(stream) => {
                let stream = stream
                    .set_nonblocking(true)
                    .and_then(|()| tokio::net::UnixStream::from_std(stream))
                    .map_err(spawn_error)?;
                Some(BufReader::new(stream))
            }
            None => None,
        };
        let (tx, lines) = mpsc::channel::<String>(256);
        if let Some(out) = child.stdout.take() {
            tokio::spawn(forward_lines(out, tx.clone()));
        }
        if let Some(err) = child.stderr.take() {
            tokio::spawn(forward_lines(err, tx));
        }
        Ok(BlenderProcess {
            blender_pid: lifeline.is_none().then_some(child_pid),
            child,
            child_pid,
            lifeline,
            lines: Some(lines),
            reaped: false,
        })
    }

    /// The process id of the direct child: Blender's supervisor, or Blender itself.
    pub fn child_pid(&self) -> u32 {
        self.child_pid
    }

    /// Blender's own process id. Under a supervisor it is reported by the supervisor once
    /// Blender has started; if that report does not come, the supervisor's id.
    pub async fn blender_pid(&mut self) -> u32 {
        if let Some(pid) = self.blender_pid {
            return pid;
        }
        let mut reported = None;
        if let Some(lifeline) = self.lifeline.as_mut() {
            let mut line = String::new();
            let read = tokio::time::timeout(
                Duration::from_secs(10),
                (&mut *lifeline).take(64).read_line(&mut line),
            )
            .await;
            if let Ok(Ok(_)) = read {
                reported = line
                    .trim()
                    .strip_prefix("pid ")
                    .and_then(|pid| pid.parse().ok());
            }
        }
        let pid = reported.unwrap_or(self.child_pid);
        self.blender_pid = Some(pid);
        pid
    }

    /// Blender's output lines (stdout and stderr, lossily decoded, cut at
    /// [`MAX_LINE_BYTES`]), for a caller that reads them itself instead of [`run`](Self::run).
    /// The channel closes when both streams have.
    pub fn take_lines(&mut self) -> Option<mpsc::Receiver<String>> {
        self.lines.take()
    }

    /// Waits until the direct child exits by itself and reaps it.
    pub async fn wait(&mut self) -> io::Result<ExitOutcome> {
        let status = self.child.wait().await?;
        self.reaped();
        use std::os::unix::process::ExitStatusExt;
        Ok(match (status.code(), status.signal()) {
            (Some(code), _) => ExitOutcome::Exited(code),
            (None, Some(sig)) => ExitOutcome::Signalled(sig),
            (None, None) => ExitOutcome::Exited(-1),
        })
    }

    /// Whether the direct child has exited (it is reaped if so).
    pub fn has_exited(&mut self) -> bool {
        if self.reaped {
            return true;
        }
        match self.child.try_wait() {
            Ok(Some(_)) => {
                self.reaped();
                true
            }
            Ok(None) => false,
            Err(_) => true,
        }
    }

    /// Kills Blender and everything it started, and reaps the direct child.
    pub async fn kill(&mut self) -> io::Result<()> {
        if self.reaped {
            return Ok(());
        }
        if self.lifeline.take().is_some() {
            // The supervisor sees its standard input close, kills Blender's group and
            // whatever else is left under it, and exits.
            if let Ok(status) = tokio::time::timeout(SUPERVISOR_GRACE, self.child.wait()).await {
                status?;
                self.reaped();
                return Ok(());
            }
        }
        self.kill_group();
        self.child.wait().await?;
        self.reaped();
        Ok(())
    }

    fn reaped(&mut self) {
        self.reaped = true;
        children().remove(&(self.child_pid as i32));
    }

    /// Streams every output line to `on_line` until Blender exits or `cancel` completes;
    /// on cancel, Blender and everything it started are killed (and the child reaped)
    /// before this returns.
    pub async fn run(
        mut self,
        cancel: impl Future<Output = ()>,
        mut on_line: impl FnMut(&str),
    ) -> io::Result<ExitOutcome> {
        let Some(mut lines) = self.lines.take() else {
            return Err(io::Error::other("the output was already taken"));
        };
        tokio::pin!(cancel);
        let mut open = true;
        let outcome = loop {
            tokio::select! {
                biased;
                () = &mut cancel => {
                    self.kill().await?;
                    return Ok(ExitOutcome::Cancelled);
                }
                line = lines.recv(), if open => match line {
                    Some(line) => on_line(&line),
                    None => open = false,
                },
                outcome = self.wait() => break outcome?,
            }
        };
        // What Blender printed before it exited may still be in the pipes.
        let deadline = tokio::time::Instant::now() + OUTPUT_GRACE;
        while open {
            match tokio::time::timeout_at(deadline, lines.recv()).await {
                Ok(Some(line)) => on_line(&line),
                Ok(None) | Err(_) => open = false,
            }
        }
        Ok(outcome)
    }

    /// SIGKILL to the direct child's process group. Only called while the child is
    /// unreaped, so the group id cannot have been reused by an unrelated process.
    fn kill_group(&self) {
        if let Ok(pid) = i32::try_from(self.child_pid) {
            // ESRCH (already gone) is fine.
            let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
}

impl Drop for BlenderProcess {
    fn drop(&mut self) {
        if self.reaped {
            return;
        }
        // Closing the lifeline stops a supervisor and everything under it; without one,
        // Blender's group is killed here.
        if self.lifeline.take().is_none() {
            self.kill_group();
        }
    }
}

/// Finds `program` as `execvp` would (a path with a `/` as it is, a bare name on `PATH`),
/// so that a missing or non-executable Blender is reported as such even when a supervisor
/// is what actually gets started.
fn resolve_program(program: &Path) -> Result<PathBuf, SpawnError> {
    use std::os::unix::fs::PermissionsExt;
    let candidates: Vec<PathBuf> = if program.as_os_str().to_string_lossy().contains('/') {
        vec![program.to_path_buf()]
    } else {
        std::env::var_os("PATH")
            .map(|path| {
                std::env::split_paths(&path)
                    .map(|dir| dir.join(program))
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut not_executable = None;
    for candidate in candidates {
        match std::fs::metadata(&candidate) {
            Ok(meta) if meta.is_file() && meta.permissions().mode() & 0o111 != 0 => {
                return Ok(candidate)
            }
            Ok(_) => {
                not_executable.get_or_insert(candidate);
            }
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                return Err(SpawnError::NotExecutable {
                    path: candidate,
                    source: e,
                })
            }
            Err(_) => {}
        }
    }
    match not_executable {
        Some(path) => Err(SpawnError::NotExecutable {
            path,
            source: io::Error::from(io::ErrorKind::PermissionDenied),
        }),
        None => Err(SpawnError::NotFound(program.to_path_buf())),
    }
}

async fn forward_lines(stream: impl AsyncRead + Unpin, tx: mpsc::Sender<String>) {
    let mut reader = BufReader::new(stream);
    let mut buf = Vec::new();
    while let Ok(Some(line)) = next_line(&mut reader, &mut buf).await {
        if tx.send(line).await.is_err() {
            return;
        }
    }
}

/// Reads one line (without its line ending, lossily decoded), keeping at most
/// [`MAX_LINE_BYTES`] of it: the rest, up to the next newline, is read and dropped, and
/// the kept part ends with [`cut_marker`]. `None` at the end of the stream.
pub async fn next_line<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    buf: &mut Vec<u8>,
) -> io::Result<Option<String>> {
    buf.clear();
    let read = (&mut *reader)
        .take(MAX_LINE_BYTES as u64)
        .read_until(b'\n', buf)
        .await?;
    if read == 0 {
        return Ok(None);
    }
    let complete = buf.ends_with(b"\n") || read < MAX_LINE_BYTES;
    let mut line = String::from_utf8_lossy(buf)
        .trim_end_matches(['\n', '\r'])
        .to_string();
    if !complete {
        let mut dropped = 0u64;
        loop {
            let available = reader.fill_buf().await?;
            if available.is_empty() {
                break;
            }
            if let Some(end) = available.iter().position(|&b| b == b'\n') {
                dropped += end as u64;
                reader.consume(end + 1);
                break;
            }
            let len = available.len();
            dropped += len as u64;
            reader.consume(len);
        }
        if dropped > 0 {
            line.push_str(&cut_marker(dropped));
        }
    }
    Ok(Some(line))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_parent_is_read_past_the_command_name() {
        assert_eq!(parent_in_stat("42 (blender) S 7 42 42 0"), Some(7));
        assert_eq!(parent_in_stat("42 (a) b) (c) R 9 1 1"), Some(9));
        assert_eq!(parent_in_stat("garbage"), None);
    }

    #[test]
    fn missing_and_non_executable_programs_are_told_apart() {
        assert!(matches!(
            resolve_program(Path::new("/nonexistent/blender")),
            Err(SpawnError::NotFound(_))
        ));
        let plain = std::env::temp_dir().join(format!("corral-plain-{}", std::process::id()));
        std::fs::write(&plain, b"not a program").unwrap();
        let result = resolve_program(&plain);
        let _ = std::fs::remove_file(&plain);
        assert!(matches!(result, Err(SpawnError::NotExecutable { .. })));
        assert!(matches!(
            resolve_program(Path::new("corral-surely-not-on-path")),
            Err(SpawnError::NotFound(_))
        ));
        assert_eq!(
            resolve_program(Path::new("sh"))
                .unwrap()
                .file_name()
                .unwrap(),
            "sh"
        );
    }

    async fn lines(input: &[u8]) -> Vec<String> {
        let mut reader = BufReader::new(input);
        let mut buf = Vec::new();
        let mut out = Vec::new();
        while let Some(line) = next_line(&mut reader, &mut buf).await.unwrap() {
            out.push(line);
        }
        out
    }

    #[tokio::test]
    async fn long_lines_are_cut_and_marked_and_the_rest_is_dropped() {
        let mut input = b"Fra:1 short\r\n".to_vec();
        input.extend(std::iter::repeat_n(b'x', 5 * MAX_LINE_BYTES + 10));
        input.extend(b"\nSaved: 'a.png'\nno newline at the end");
        let got = lines(&input).await;
        assert_eq!(
            got.len(),
            4,
            "{:?}",
            got.iter().map(String::len).collect::<Vec<_>>()
        );
        assert_eq!(got[0], "Fra:1 short");
        let expected_cut = format!(
            "{}{}",
            "x".repeat(MAX_LINE_BYTES),
            cut_marker(4 * MAX_LINE_BYTES as u64 + 10)
        );
        assert_eq!(got[1], expected_cut);
        assert_eq!(got[2], "Saved: 'a.png'");
        assert_eq!(got[3], "no newline at the end");
    }

    #[tokio::test]
    async fn a_line_of_exactly_the_limit_is_not_cut() {
        let mut input = vec![b'y'; MAX_LINE_BYTES];
        input.extend(b"\nnext\n");
        assert_eq!(
            lines(&input).await,
            ["y".repeat(MAX_LINE_BYTES), "next".into()]
        );
    }
}
