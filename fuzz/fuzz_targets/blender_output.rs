//! Blender's console output, any bytes, through `OutputParser`: it must never panic, and
//! what it reports must come from the line it read (a path or an error message is a part
//! of the line) and agree with its own memory of the frame being rendered.
#![no_main]

use corral_blender::{OutputParser, ParsedLine};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The node reads Blender's output lossily, one line at a time, as here.
    let text = String::from_utf8_lossy(data);
    let mut parser = OutputParser::new();
    let mut last_frame = None;
    for line in text.split('\n') {
        match parser.parse(line) {
            ParsedLine::Progress { frame, sample } => {
                last_frame = Some(frame);
                assert_eq!(parser.current_frame(), Some(frame));
                assert!(line.contains("Fra:"), "{line:?}");
                let digits = frame.unsigned_abs().to_string();
                assert!(line.contains(&digits), "frame {frame} is not in {line:?}");
                if let Some(sample) = sample {
                    assert!(line.contains(&sample.done.to_string()));
                    assert!(line.contains(&sample.total.to_string()));
                }
            }
            ParsedLine::Saved { frame, path } => {
                assert_eq!(
                    frame, last_frame,
                    "a saved file belongs to the frame in progress"
                );
                assert!(!path.is_empty());
                assert!(line.contains(path.as_str()), "{path:?} is not in {line:?}");
                assert!(!path.starts_with(['\'', '"']) && !path.ends_with(['\'', '"']));
            }
            ParsedLine::Error(message) => {
                assert!(
                    line.contains(message.as_str()),
                    "{message:?} is not in {line:?}"
                );
            }
            ParsedLine::Other => assert_eq!(parser.current_frame(), last_frame),
        }
    }
});
