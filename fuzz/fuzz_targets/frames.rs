//! Frame ranges from any pair of integers, as a request could send them: `FrameRange::new`
//! and its JSON form accept exactly the ranges Blender can render, and what they accept
//! behaves (length, bounds, display, JSON round trip); `frame_list` writes any sorted set
//! of frames as runs that read back to the same set.
#![no_main]

use corral_core::frames::{frame_list, MAX_FRAME, MIN_FRAME};
use corral_core::FrameRange;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((head, rest)) = data.split_first_chunk::<16>() else {
        return;
    };
    let from = i64::from_le_bytes(head[..8].try_into().expect("8 bytes"));
    let to = i64::from_le_bytes(head[8..].try_into().expect("8 bytes"));
    let valid = (MIN_FRAME..=MAX_FRAME).contains(&from)
        && (MIN_FRAME..=MAX_FRAME).contains(&to)
        && from <= to;
    let json = format!(r#"{{"from":{from},"to":{to}}}"#);
    let parsed = serde_json::from_str::<FrameRange>(&json);
    match FrameRange::new(from, to) {
        Ok(range) => {
            assert!(valid, "{from}..={to} accepted");
            assert_eq!(range.len(), (to - from) as u64 + 1);
            assert!(range.contains(from) && range.contains(to));
            assert!(!range.contains(from - 1) && !range.contains(to + 1));
            assert_eq!(range.to_string(), format!("{from}-{to}"));
            assert_eq!(parsed.expect("JSON form accepted too"), range);
            let back: FrameRange =
                serde_json::from_str(&serde_json::to_string(&range).expect("serialize"))
                    .expect("round trip");
            assert_eq!(back, range);
        }
        Err(e) => {
            assert!(!valid, "{from}..={to} refused: {e}");
            assert!(matches!(e.field(), "from" | "to"));
            assert!(parsed.is_err(), "JSON form accepted what new() refused");
        }
    }

    // The rest of the input: a set of frames (small numbers, so runs happen).
    let mut frames: Vec<i64> = rest.iter().map(|b| i64::from(*b % 64)).collect();
    frames.sort_unstable();
    frames.dedup();
    let text = frame_list(&frames);
    let mut read: Vec<i64> = Vec::new();
    for part in text.split(", ").filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (i64, i64) =
                    (a.parse().expect("run start"), b.parse().expect("run end"));
                assert!(a < b, "a run of one frame is written alone: {text}");
                read.extend(a..=b);
            }
            None => read.push(part.parse().expect("frame")),
        }
    }
    assert_eq!(read, frames, "{text}");
});
