//! A running Blender: spawned from an argument vector in its own process group, with a
//! parent-death signal, its output streamed line by line, and the whole group killed on
//! cancel or when the handle is dropped.
//!
//! Architecture invariant: Blender never outlives the process that started it. Three
//! mechanisms cover the exit paths: cancel kills the process group; dropping a
//! [`BlenderProcess`] that has not been reaped kills the group (this covers an orderly
//! shutdown that drops running tasks); and `PR_SET_PDEATHSIG` makes the kernel kill
//! Blender if the node dies without unwinding (SIGKILL, a crash).

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use std::ffi::OsString;
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

/// Longest output line kept; the rest of a longer one is dropped, and the line says so
/// (see [`cut_marker`]). Blender's lines are short, but its output is input from outside
/// and must not grow memory, or the job's log file, without bound.
pub const MAX_LINE_BYTES: usize = 16 * 1024;

/// What ends a line that was cut at [`MAX_LINE_BYTES`].
pub fn cut_marker(dropped: u64) -> String {
    format!(" [corral: line cut, {dropped} more bytes dropped]")
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

/// A Blender child process. Dropping it before it has been waited for kills its group.
#[derive(Debug)]
pub struct BlenderProcess {
    child: Child,
    pid: u32,
    reaped: bool,
}

impl BlenderProcess {
    /// Starts `program` with `args` (never through a shell) as the leader of a new process
    /// group, with stdin closed and stdout/stderr piped.
    pub fn spawn(program: &Path, args: &[OsString]) -> Result<Self, SpawnError> {
        let mut cmd = Command::new(program);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        let parent = nix::unistd::getpid();
        // SAFETY: the closure runs in the forked child before exec and only makes two
        // async-signal-safe system calls (prctl, getppid); it allocates nothing.
        #[allow(unsafe_code)]
        unsafe {
            cmd.pre_exec(move || {
                // The kernel sends SIGKILL to Blender when the thread that forked it dies.
                // Tokio's worker threads live as long as the runtime, i.e. the node.
                nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(io::Error::from)?;
                // The parent may have died between fork and prctl; then nobody would
                // signal us, so refuse to exec at all.
                if nix::unistd::getppid() != parent {
                    return Err(io::Error::other("parent exited before Blender started"));
                }
                Ok(())
            });
        }
        let child = cmd.spawn().map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => SpawnError::NotFound(program.to_path_buf()),
            io::ErrorKind::PermissionDenied => SpawnError::NotExecutable {
                path: program.to_path_buf(),
                source: e,
            },
            _ => SpawnError::Io {
                path: program.to_path_buf(),
                source: e,
            },
        })?;
        let pid = child.id().ok_or_else(|| SpawnError::Io {
            path: program.to_path_buf(),
            source: io::Error::other("the child has no process id"),
        })?;
        Ok(BlenderProcess {
            child,
            pid,
            reaped: false,
        })
    }

    /// The operating-system id of Blender, which is also its process group id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Streams every output line (stdout and stderr, lossily decoded) to `on_line` until
    /// Blender exits or `cancel` completes; on cancel the whole process group is killed
    /// and reaped before this returns.
    pub async fn run(
        mut self,
        cancel: impl Future<Output = ()>,
        mut on_line: impl FnMut(&str),
    ) -> io::Result<ExitOutcome> {
        let (tx, mut lines) = mpsc::channel::<String>(256);
        if let Some(out) = self.child.stdout.take() {
            tokio::spawn(forward_lines(out, tx.clone()));
        }
        if let Some(err) = self.child.stderr.take() {
            tokio::spawn(forward_lines(err, tx.clone()));
        }
        drop(tx);
        tokio::pin!(cancel);
        loop {
            tokio::select! {
                biased;
                () = &mut cancel => return self.kill_and_reap().await,
                line = lines.recv() => match line {
                    Some(line) => on_line(&line),
                    None => break,
                },
            }
        }
        // Both streams are closed: Blender is exiting (or closed them and kept running).
        tokio::select! {
            biased;
            () = &mut cancel => self.kill_and_reap().await,
            status = self.child.wait() => {
                self.reaped = true;
                let status = status?;
                use std::os::unix::process::ExitStatusExt;
                Ok(match (status.code(), status.signal()) {
                    (Some(code), _) => ExitOutcome::Exited(code),
                    (None, Some(sig)) => ExitOutcome::Signalled(sig),
                    (None, None) => ExitOutcome::Exited(-1),
                })
            }
        }
    }

    async fn kill_and_reap(&mut self) -> io::Result<ExitOutcome> {
        self.kill_group();
        self.child.wait().await?;
        self.reaped = true;
        Ok(ExitOutcome::Cancelled)
    }

    /// SIGKILL to the whole group. Only called while Blender is unreaped, so the group id
    /// cannot have been reused by an unrelated process.
    fn kill_group(&self) {
        if let Ok(pid) = i32::try_from(self.pid) {
            // ESRCH (already gone) is fine.
            let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
}

impl Drop for BlenderProcess {
    fn drop(&mut self) {
        if !self.reaped {
            self.kill_group();
        }
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
