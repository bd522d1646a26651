//! Reads Blender's console output one line at a time and turns it into progress events.
//!
//! Lines understood (Blender 3.x/4.x plain form, and Blender 5's form where each line is
//! prefixed with the elapsed time and a log category, `00:00.327  render  | ...`):
//! - `Fra:12 Mem:... | ... | Sample 3/16` (Cycles) or `... | Rendering 3 / 64 samples` (EEVEE)
//! - `Saved: '/path/to/frame_0012.png'`
//! - `Error: ...` (Blender reports failures this way and sometimes still exits 0)

use corral_core::node_api::SampleProgress;

/// What one line of Blender output means to the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParsedLine {
    /// Blender is working on `frame`; `sample` when the line carries sample progress.
    Progress {
        frame: i64,
        sample: Option<SampleProgress>,
    },
    /// A file was written for `frame` (the frame of the last progress line, if any).
    Saved { frame: Option<i64>, path: String },
    /// Blender reported an error.
    Error(String),
    /// Anything else: kept in the log, not interpreted.
    Other,
}

/// Parses a stream of lines, remembering the frame being rendered so that a `Saved:` line
/// can be attributed to it.
#[derive(Debug, Default)]
pub struct OutputParser {
    current_frame: Option<i64>,
}

impl OutputParser {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn current_frame(&self) -> Option<i64> {
        self.current_frame
    }

    pub fn parse(&mut self, raw: &str) -> ParsedLine {
        let line = strip_log_prefix(raw.trim_end_matches(['\r', '\n']));
        if let Some(rest) = line.strip_prefix("Fra:") {
            let digits_end = rest
                .char_indices()
                .find(|&(i, c)| !(c.is_ascii_digit() || (i == 0 && c == '-')))
                .map_or(rest.len(), |(i, _)| i);
            if let Ok(frame) = rest[..digits_end].parse::<i64>() {
                self.current_frame = Some(frame);
                return ParsedLine::Progress {
                    frame,
                    sample: sample_progress(rest),
                };
            }
            return ParsedLine::Other;
        }
        if let Some(rest) = line.strip_prefix("Saved:") {
            let path = rest.trim().trim_matches(|c| c == '\'' || c == '"');
            if !path.is_empty() {
                return ParsedLine::Saved {
                    frame: self.current_frame,
                    path: path.to_string(),
                };
            }
            return ParsedLine::Other;
        }
        if let Some(rest) = line.strip_prefix("Error:") {
            return ParsedLine::Error(rest.trim().to_string());
        }
        // Blender 5 logs errors as `ERROR <message>` after the category prefix.
        if let Some(rest) = line.strip_prefix("ERROR ") {
            return ParsedLine::Error(rest.trim().to_string());
        }
        ParsedLine::Other
    }
}

/// Removes Blender 5's `MM:SS.mmm  category  | ` prefix, if present.
fn strip_log_prefix(line: &str) -> &str {
    let Some((head, rest)) = line.split_once(" | ") else {
        return line;
    };
    let mut words = head.split_whitespace();
    let (Some(time), Some(_category), None) = (words.next(), words.next(), words.next()) else {
        return line;
    };
    let is_time = time.contains(':')
        && time.contains('.')
        && time
            .chars()
            .all(|c| c.is_ascii_digit() || c == ':' || c == '.');
    if is_time {
        rest.trim_start()
    } else {
        line
    }
}

/// Finds `Sample a/b` or `Rendering a / b samples` in the `|`-separated fields of a
/// progress line.
fn sample_progress(line: &str) -> Option<SampleProgress> {
    line.split('|').rev().find_map(|field| {
        let field = field.trim();
        if let Some(rest) = field.strip_prefix("Sample ") {
            let (done, total) = rest.split_once('/')?;
            return pair(done, total);
        }
        if let Some(rest) = field.strip_prefix("Rendering ") {
            let rest = rest.strip_suffix(" samples")?;
            let (done, total) = rest.split_once('/')?;
            return pair(done, total);
        }
        None
    })
}

fn pair(done: &str, total: &str) -> Option<SampleProgress> {
    let done = done.trim().parse().ok()?;
    let total = total.trim().parse().ok()?;
    Some(SampleProgress { done, total })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cycles_sample_lines() {
        let mut p = OutputParser::new();
        let line = "Fra:12 Mem:10.68M (Peak 10.68M) | Time:00:00.17 | Mem:0.00M, Peak:0.00M | Scene, ViewLayer | Sample 3/16";
        assert_eq!(
            p.parse(line),
            ParsedLine::Progress {
                frame: 12,
                sample: Some(SampleProgress { done: 3, total: 16 })
            }
        );
        assert_eq!(p.current_frame(), Some(12));
    }

    #[test]
    fn eevee_sample_lines_and_negative_frames() {
        let mut p = OutputParser::new();
        let line = "Fra:-4 Mem:40.00M (Peak 41.00M) | Time:00:01.20 | Rendering 5 / 64 samples";
        assert_eq!(
            p.parse(line),
            ParsedLine::Progress {
                frame: -4,
                sample: Some(SampleProgress { done: 5, total: 64 })
            }
        );
    }

    #[test]
    fn progress_without_samples() {
        let mut p = OutputParser::new();
        let line = "Fra:3 Mem:10.68M (Peak 10.68M) | Time:00:00.01 | Syncing Cube";
        assert_eq!(
            p.parse(line),
            ParsedLine::Progress {
                frame: 3,
                sample: None
            }
        );
    }

    #[test]
    fn saved_lines_belong_to_the_current_frame() {
        let mut p = OutputParser::new();
        assert_eq!(
            p.parse("Saved: '/tmp/a/blender-render_0001.png'"),
            ParsedLine::Saved {
                frame: None,
                path: "/tmp/a/blender-render_0001.png".into()
            }
        );
        p.parse("Fra:7 Mem:1M | Sample 1/1");
        assert_eq!(
            p.parse("Saved: '/tmp/it's here/f_0007.png'\n"),
            ParsedLine::Saved {
                frame: Some(7),
                path: "/tmp/it's here/f_0007.png".into()
            }
        );
    }

    #[test]
    fn errors_and_other_lines() {
        let mut p = OutputParser::new();
        assert_eq!(
            p.parse("Error: Cannot read file '/x.blend': No such file or directory"),
            ParsedLine::Error("Cannot read file '/x.blend': No such file or directory".into())
        );
        assert_eq!(p.parse("Blender quit"), ParsedLine::Other);
        assert_eq!(p.parse("Fra:abc"), ParsedLine::Other);
        assert_eq!(p.parse("Saved:"), ParsedLine::Other);
        assert_eq!(p.parse(""), ParsedLine::Other);
        assert_eq!(
            p.parse(" Time: 00:00.52 (Saving: 00:00.00)"),
            ParsedLine::Other
        );
    }

    #[test]
    fn blender_5_prefixed_lines() {
        let mut p = OutputParser::new();
        assert_eq!(
            p.parse("00:00.120  render  | Fra:2 Mem:1M | Sample 4/4"),
            ParsedLine::Progress {
                frame: 2,
                sample: Some(SampleProgress { done: 4, total: 4 })
            }
        );
        assert_eq!(
            p.parse("00:00.327  render  | Saved: '/tmp/blender-render_0002.png'"),
            ParsedLine::Saved {
                frame: Some(2),
                path: "/tmp/blender-render_0002.png".into()
            }
        );
        assert_eq!(
            p.parse("00:00.010  blend  | ERROR Cannot read file"),
            ParsedLine::Error("Cannot read file".into())
        );
        // A plain line that happens to contain " | " is not mistaken for a prefix.
        assert_eq!(p.parse("Scene, ViewLayer | Saved: x"), ParsedLine::Other);
    }
}
