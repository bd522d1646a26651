//! One job's Blender log file: every output line, each cut at a bounded length, and a
//! clear end when the file cannot be written any more (a full disk must not cut a log
//! short without saying so, nor fail the render).

use corral_blender::process::{cut_marker, MAX_LINE_BYTES};
use std::fs::File;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::Path;

/// Bytes cut from the end of a log that cannot take its closing marker, to make room for
/// it (a file system page or block, so that the space really comes free).
const ROOM_FOR_MARKER: u64 = 4096;

/// Appends lines to a job's log. Writing stops at the first failure, which is reported
/// once (by the `Err` of [`JobLog::line`]) and leaves the file ending with a marker line
/// when there is any way to write one.
pub struct JobLog {
    file: Option<BufWriter<File>>,
    failed: bool,
}

impl JobLog {
    /// Creates (truncates) the log at `path`. A log that cannot be created is reported
    /// like a failed write; the job runs without it.
    pub fn create(path: &Path) -> (JobLog, Option<String>) {
        match File::create(path) {
            Ok(file) => (
                JobLog {
                    file: Some(BufWriter::new(file)),
                    failed: false,
                },
                None,
            ),
            Err(e) => (
                JobLog {
                    file: None,
                    failed: true,
                },
                Some(format!("cannot create the log `{}`: {e}", path.display())),
            ),
        }
    }

    /// Writes one line (cut at [`MAX_LINE_BYTES`] bytes, marked) and flushes it, so the
    /// log can be read while the job runs. Returns the reason the first time writing fails;
    /// after that, lines are dropped silently.
    pub fn line(&mut self, text: &str) -> Result<(), String> {
        let Some(writer) = self.file.as_mut() else {
            return Ok(());
        };
        let text = capped(text);
        let written = writeln!(writer, "{text}").and_then(|()| writer.flush());
        match written {
            Ok(()) => Ok(()),
            Err(e) => {
                let reason = format!("cannot write the log: {e}");
                self.fail(&reason);
                Err(reason)
            }
        }
    }

    /// Stops writing after a failure, ending the file with a line saying so: if even that
    /// line does not fit, the last few kilobytes are cut to make room for it.
    fn fail(&mut self, reason: &str) {
        self.failed = true;
        let Some(writer) = self.file.take() else {
            return;
        };
        // Whatever is still buffered could not be written: drop it rather than retry.
        let (mut file, _) = writer.into_parts();
        let marker = format!(
            "\n# corral: {reason}; the rest of Blender's output is not in this file (the job's log_tail has its last lines)\n"
        );
        let appended = file
            .seek(SeekFrom::End(0))
            .and_then(|_| file.write_all(marker.as_bytes()));
        if appended.is_ok() {
            return;
        }
        let _ = (|| -> std::io::Result<()> {
            let len = file.metadata()?.len();
            let keep = len.saturating_sub(ROOM_FOR_MARKER + marker.len() as u64);
            file.set_len(keep)?;
            file.seek(SeekFrom::End(0))?;
            file.write_all(marker.as_bytes())
        })();
    }

    #[cfg(test)]
    pub fn has_failed(&self) -> bool {
        self.failed
    }
}

/// `text` cut at [`MAX_LINE_BYTES`] bytes (on a character boundary) and marked. Lines from
/// Blender's output arrive cut already; this bounds the node's own lines too.
fn capped(text: &str) -> std::borrow::Cow<'_, str> {
    if text.len() <= MAX_LINE_BYTES + 64 {
        return text.into();
    }
    let mut end = MAX_LINE_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{}", &text[..end], cut_marker((text.len() - end) as u64)).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_written_and_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("job.log");
        let (mut log, err) = JobLog::create(&path);
        assert!(err.is_none());
        log.line("Fra:1 Mem:1M | Sample 1/4").unwrap();
        log.line(&"é".repeat(MAX_LINE_BYTES)).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<_> = text.lines().collect();
        assert_eq!(lines[0], "Fra:1 Mem:1M | Sample 1/4");
        assert!(lines[1].len() < MAX_LINE_BYTES + 100, "{}", lines[1].len());
        assert!(lines[1].ends_with("more bytes dropped]"));
    }

    #[test]
    fn a_failed_write_is_reported_once_and_writing_stops() {
        // Every write to /dev/full fails with ENOSPC, as on a full disk.
        let (mut log, err) = JobLog::create(Path::new("/dev/full"));
        assert!(err.is_none());
        let first = log.line("Fra:1").unwrap_err();
        assert!(first.contains("No space left"), "{first}");
        assert!(log.has_failed());
        assert_eq!(log.line("Fra:2"), Ok(()));
    }

    #[test]
    fn a_log_that_cannot_be_created_is_reported_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, err) = JobLog::create(&dir.path().join("missing/job.log"));
        assert!(err.unwrap().contains("cannot create the log"));
        assert!(log.has_failed());
        assert_eq!(log.line("dropped"), Ok(()));
    }
}
