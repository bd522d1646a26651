//! The output parser against real captured Blender 3.4.1 output (and the Blender 5
//! prefixed form); see `fixtures/README.md` for how each file was made.

use corral_blender::{OutputParser, ParsedLine};
use corral_core::node_api::SampleProgress;

/// Everything the parser made of one fixture.
#[derive(Debug, Default)]
struct Summary {
    frames: Vec<i64>,
    samples: Vec<(i64, SampleProgress)>,
    saved: Vec<(Option<i64>, String)>,
    errors: Vec<String>,
}

fn summarize(name: &str) -> Summary {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let mut parser = OutputParser::new();
    let mut s = Summary::default();
    for line in text.lines() {
        match parser.parse(line) {
            ParsedLine::Progress { frame, sample } => {
                if s.frames.last() != Some(&frame) {
                    s.frames.push(frame);
                }
                if let Some(sample) = sample {
                    s.samples.push((frame, sample));
                }
            }
            ParsedLine::Saved { frame, path } => s.saved.push((frame, path)),
            ParsedLine::Error(e) => s.errors.push(e),
            ParsedLine::Other => {}
        }
    }
    s
}

fn frame_files(frames: &[i64]) -> Vec<(Option<i64>, String)> {
    frames
        .iter()
        .map(|f| {
            (
                Some(*f),
                format!("/tmp/corral-fixture/blender-render_{f:04}.png"),
            )
        })
        .collect()
}

#[test]
fn cycles_3_4_success() {
    let s = summarize("cycles_ok_3.4.txt");
    assert_eq!(s.frames, [1, 2, 3]);
    assert_eq!(s.saved, frame_files(&[1, 2, 3]));
    assert!(s.errors.is_empty(), "{:?}", s.errors);
    let last = SampleProgress { done: 4, total: 4 };
    for frame in 1..=3 {
        assert!(s.samples.contains(&(frame, last)), "{:?}", s.samples);
    }
}

#[test]
fn eevee_3_4_success() {
    let s = summarize("eevee_ok_3.4.txt");
    assert_eq!(s.frames, [1, 2, 3]);
    assert_eq!(s.saved, frame_files(&[1, 2, 3]));
    // `EGL Error (0x3001)` lines on stderr are warnings, not Blender errors.
    assert!(s.errors.is_empty(), "{:?}", s.errors);
    assert!(s
        .samples
        .contains(&(1, SampleProgress { done: 1, total: 4 })));
}

#[test]
fn workbench_3_4_success_has_no_progress_lines() {
    let s = summarize("workbench_ok_3.4.txt");
    assert!(s.frames.is_empty());
    assert_eq!(s.saved.len(), 3);
    assert!(s.saved.iter().all(|(frame, _)| frame.is_none()));
    assert!(s.errors.is_empty());
}

#[test]
fn failures_3_4_report_their_error_line() {
    let missing = summarize("missing_file_3.4.txt");
    assert_eq!(
        missing.errors,
        ["Cannot read file '/tmp/corral-fixture/missing.blend': No such file or directory"]
    );
    let corrupt = summarize("corrupt_file_3.4.txt");
    assert_eq!(
        corrupt.errors,
        ["File format is not supported in file '/tmp/corral-fixture/bad.blend'"]
    );
    let denoise = summarize("denoise_error_3.4.txt");
    assert_eq!(denoise.errors, ["Build without OpenImageDenoiser"]);
    for s in [missing, corrupt, denoise] {
        assert!(s.saved.is_empty());
    }
}

#[test]
fn blender_5_prefixed_form() {
    let s = summarize("blender5_prefixed.txt");
    assert_eq!(s.frames, [1, 2, 3]);
    assert_eq!(s.saved, frame_files(&[1, 2, 3]));
    assert!(s.errors.is_empty());
}
