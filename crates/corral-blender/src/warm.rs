//! A warm worker: Blender kept running with Corral's driver script (`warm_driver.py`,
//! embedded here), and the channel the node drives it over. The channel is a socket pair,
//! Blender's end open as file descriptor [`CHANNEL_FD`]: nothing Blender or a scene prints
//! can be mistaken for a message. Messages are a 4-byte big-endian length and JSON; every
//! message from the worker is input from outside, bounded in size and parsed into a typed
//! [`WorkerEvent`] or refused.

use crate::process::{BlenderProcess, SpawnError, CHANNEL_FD};
use serde::{Deserialize, Serialize};
use std::ffi::OsString;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::OwnedWriteHalf;
use tokio::sync::mpsc;

/// The driver script Blender runs in a warm worker.
pub const DRIVER_SCRIPT: &str = include_str!("warm_driver.py");

/// The name the driver is written under in the node's data folder.
pub const DRIVER_FILE_NAME: &str = "warm-driver.py";

/// Largest message accepted from a worker (they are a few hundred bytes).
pub const MAX_MESSAGE_BYTES: u32 = 1 << 20;

/// The line the driver prints on stdout and stderr after a task, so the node knows it
/// has read every line Blender printed for it: this, a space, and the task's id.
pub const TASK_END_MARKER: &str = "corral-task-end";

/// Writes the driver script into `dir` (through a temporary file and a rename, so a
/// worker never starts a half-written script) and returns its path.
pub fn write_driver(dir: &Path) -> io::Result<PathBuf> {
    let path = dir.join(DRIVER_FILE_NAME);
    let tmp = dir.join(format!(".{DRIVER_FILE_NAME}.{}.tmp", std::process::id()));
    std::fs::write(&tmp, DRIVER_SCRIPT)?;
    std::fs::rename(&tmp, &path)?;
    Ok(path)
}

/// Blender's arguments for a warm worker: background, no audio, scripts stored in scene
/// files disabled (`-Y`: a worker outlives the scene it renders), the driver, and where
/// its channel is. User preferences are read as for a cold render, so both render alike
/// (GPU settings included).
pub fn worker_args(driver: &Path) -> Vec<OsString> {
    vec![
        "-b".into(),
        "-noaudio".into(),
        "-Y".into(),
        "--python".into(),
        driver.as_os_str().to_owned(),
        "--".into(),
        "--corral-fd".into(),
        CHANNEL_FD.to_string().into(),
    ]
}

/// What the node asks a worker to render: a cold `blender -b SCENE -o OUTPUT -E ENGINE
/// [-F FORMAT] -s FROM -e TO -j 1 -t THREADS -a`, on a scene that may already be loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderRequest {
    /// Names the task in the worker's answers and in its end-of-task marker.
    pub task: String,
    pub scene: PathBuf,
    /// Equal keys promise the same file content: the worker may keep the scene loaded.
    pub scene_key: Option<String>,
    /// Blender's engine name (`CYCLES`, ...).
    pub engine: String,
    /// Blender's image format name, when the task sets one.
    pub format: Option<String>,
    /// 0 keeps the scene's own thread setting, as `-t 0` does.
    pub threads: u32,
    pub from: i64,
    pub to: i64,
    /// Output pattern with `#` for the frame number, absolute.
    pub output: PathBuf,
}

#[derive(Serialize)]
struct RenderMessage<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    task: &'a str,
    scene_hex: String,
    scene_key: Option<&'a str>,
    engine: &'a str,
    format: Option<&'a str>,
    threads: u32,
    from: i64,
    to: i64,
    output_hex: String,
}

/// The hex of a path's bytes, as paths travel to a worker.
pub fn path_hex(path: &Path) -> String {
    hex(path)
}

fn hex(path: &Path) -> String {
    path.as_os_str()
        .as_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn unhex(text: &str) -> Option<PathBuf> {
    let bytes = text
        .as_bytes()
        .chunks(2)
        .map(|pair| match pair {
            [high, low] => u8::from_str_radix(std::str::from_utf8(&[*high, *low]).ok()?, 16).ok(),
            _ => None,
        })
        .collect::<Option<Vec<u8>>>()?;
    Some(PathBuf::from(OsString::from_vec(bytes)))
}

/// A message from a worker, as it arrives.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
enum WireEvent {
    Hello {
        pid: u32,
        version: String,
    },
    Frame {
        task: String,
        frame: i64,
    },
    Saved {
        task: String,
        frame: i64,
        path_hex: String,
    },
    Done {
        task: String,
        ok: bool,
        error: Option<String>,
    },
}

/// A message from a worker, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WorkerEvent {
    /// The driver runs and reads the channel.
    Hello { pid: u32, version: String },
    /// The worker would render `frame` of `task` next, and waits for
    /// [`WarmWorker::answer_frame`].
    Frame { task: String, frame: i64 },
    /// The file of `frame` is completely written at `path`.
    Saved {
        task: String,
        frame: i64,
        path: PathBuf,
    },
    /// `task` is over: `error` says why it failed, if it did.
    Done { task: String, error: Option<String> },
}

/// Parses one message body.
pub fn parse_event(body: &[u8]) -> Result<WorkerEvent, String> {
    let wire: WireEvent =
        serde_json::from_slice(body).map_err(|e| format!("unreadable message: {e}"))?;
    Ok(match wire {
        WireEvent::Hello { pid, version } => WorkerEvent::Hello { pid, version },
        WireEvent::Frame { task, frame } => WorkerEvent::Frame { task, frame },
        WireEvent::Saved {
            task,
            frame,
            path_hex,
        } => WorkerEvent::Saved {
            task,
            frame,
            path: unhex(&path_hex).ok_or("a saved path that is not hex")?,
        },
        WireEvent::Done { task, ok, error } => WorkerEvent::Done {
            task,
            error: match (ok, error) {
                (true, _) => None,
                (false, Some(error)) => Some(error),
                (false, None) => Some("the worker reported a failure without a reason".into()),
            },
        },
    })
}

/// A running warm worker.
pub struct WarmWorker {
    pub process: BlenderProcess,
    /// Blender's output lines, as [`BlenderProcess::take_lines`] gives them.
    pub lines: mpsc::Receiver<String>,
    /// Messages from the driver, in order; an `Err` (a message that broke the protocol)
    /// is the last. The channel closes when the worker's end does.
    pub events: mpsc::Receiver<Result<WorkerEvent, String>>,
    writer: OwnedWriteHalf,
}

impl WarmWorker {
    /// Starts `blender` with the driver at `driver`; returns at once (the driver answers
    /// `hello` once Blender has started, about a second later; requests sent before then
    /// wait in the channel). Must be called within a Tokio runtime.
    pub fn start(blender: &Path, driver: &Path) -> Result<WarmWorker, SpawnError> {
        let (ours, theirs) =
            std::os::unix::net::UnixStream::pair().map_err(|source| SpawnError::Io {
                path: blender.to_path_buf(),
                source,
            })?;
        let mut process = BlenderProcess::spawn_with_channel(
            blender,
            &worker_args(driver),
            OwnedFd::from(theirs),
        )?;
        let lines = process.take_lines().ok_or_else(|| SpawnError::Io {
            path: blender.to_path_buf(),
            source: io::Error::other("no output to read"),
        })?;
        let stream = ours
            .set_nonblocking(true)
            .and_then(|()| tokio::net::UnixStream::from_std(ours))
            .map_err(|source| SpawnError::Io {
                path: blender.to_path_buf(),
                source,
            })?;
        let (mut reader, writer) = stream.into_split();
        let (tx, events) = mpsc::channel(256);
        tokio::spawn(async move {
            loop {
                let event = match read_message(&mut reader).await {
                    Ok(Some(body)) => parse_event(&body),
                    Ok(None) => return,
                    Err(e) => Err(e),
                };
                let stop = event.is_err();
                if tx.send(event).await.is_err() || stop {
                    return;
                }
            }
        });
        Ok(WarmWorker {
            process,
            lines,
            events,
            writer,
        })
    }

    /// Sends a render request.
    pub async fn send(&mut self, request: &RenderRequest) -> io::Result<()> {
        let message = RenderMessage {
            kind: "render",
            task: &request.task,
            scene_hex: hex(&request.scene),
            scene_key: request.scene_key.as_deref(),
            engine: &request.engine,
            format: request.format.as_deref(),
            threads: request.threads,
            from: request.from,
            to: request.to,
            output_hex: hex(&request.output),
        };
        self.write(&message).await
    }

    /// Answers a worker's `frame` message: render it (`go`), or end the task (`stop`).
    pub async fn answer_frame(&mut self, task: &str, go: bool) -> io::Result<()> {
        #[derive(Serialize)]
        struct Answer<'a> {
            #[serde(rename = "type")]
            kind: &'static str,
            task: &'a str,
        }
        let kind = if go { "go" } else { "stop" };
        self.write(&Answer { kind, task }).await
    }

    async fn write(&mut self, message: &impl Serialize) -> io::Result<()> {
        let body = serde_json::to_vec(message).map_err(io::Error::other)?;
        let len = u32::try_from(body.len()).map_err(io::Error::other)?;
        let mut frame = Vec::with_capacity(body.len() + 4);
        frame.extend_from_slice(&len.to_be_bytes());
        frame.extend_from_slice(&body);
        self.writer.write_all(&frame).await
    }
}

/// Reads one framed message; `None` at a clean end of the stream.
async fn read_message(
    reader: &mut (impl tokio::io::AsyncRead + Unpin),
) -> Result<Option<Vec<u8>>, String> {
    let mut header = [0u8; 4];
    match reader.read_exact(&mut header).await {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(format!("cannot read the channel: {e}")),
    }
    let len = u32::from_be_bytes(header);
    if len > MAX_MESSAGE_BYTES {
        return Err(format!(
            "a message of {len} bytes (at most {MAX_MESSAGE_BYTES})"
        ));
    }
    let mut body = vec![0u8; len as usize];
    reader
        .read_exact(&mut body)
        .await
        .map_err(|e| format!("a message cut short: {e}"))?;
    Ok(Some(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_parsed_and_checked() {
        assert_eq!(
            parse_event(br#"{"type":"hello","pid":42,"version":"3.4.1"}"#),
            Ok(WorkerEvent::Hello {
                pid: 42,
                version: "3.4.1".into()
            })
        );
        assert_eq!(
            parse_event(
                br#"{"type":"saved","task":"t","frame":3,"path_hex":"2f612f625f303030332e706e67"}"#
            ),
            Ok(WorkerEvent::Saved {
                task: "t".into(),
                frame: 3,
                path: "/a/b_0003.png".into()
            })
        );
        assert_eq!(
            parse_event(br#"{"type":"done","task":"t","ok":false,"error":"Build without OpenImageDenoiser"}"#),
            Ok(WorkerEvent::Done {
                task: "t".into(),
                error: Some("Build without OpenImageDenoiser".into())
            })
        );
        assert_eq!(
            parse_event(br#"{"type":"done","task":"t","ok":true,"error":null}"#),
            Ok(WorkerEvent::Done {
                task: "t".into(),
                error: None
            })
        );
        for bad in [
            &br#"{"type":"saved","task":"t","frame":3,"path_hex":"zz"}"#[..],
            br#"{"type":"saved","task":"t","frame":3,"path_hex":"2f6"}"#,
            br#"{"type":"frame","task":"t","frame":"3"}"#,
            br#"{"type":"launch","task":"t"}"#,
            br#"{"type":"hello","pid":-1,"version":"x"}"#,
            br#"{"type":"hello","pid":1,"version":"x","extra":1}"#,
            b"not json",
        ] {
            assert!(
                parse_event(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn any_path_survives_the_hex_trip() {
        let path = PathBuf::from(OsString::from_vec(b"/out/\xff\xfe 'x'\n_####".to_vec()));
        assert_eq!(unhex(&hex(&path)), Some(path));
    }

    #[tokio::test]
    async fn oversized_and_cut_messages_are_refused() {
        let mut big = (MAX_MESSAGE_BYTES + 1).to_be_bytes().to_vec();
        big.extend(b"{}");
        assert!(read_message(&mut &big[..]).await.is_err());
        let mut cut = 10u32.to_be_bytes().to_vec();
        cut.extend(b"{}");
        assert!(read_message(&mut &cut[..]).await.is_err());
        assert_eq!(read_message(&mut &b""[..]).await, Ok(None));
        let mut ok = 2u32.to_be_bytes().to_vec();
        ok.extend(b"{}");
        assert_eq!(read_message(&mut &ok[..]).await, Ok(Some(b"{}".to_vec())));
    }
}
