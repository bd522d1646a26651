//! Frame ranges: inclusive `from..=to` spans of Blender frame numbers, valid by construction.

use serde::{Deserialize, Serialize};

/// Lowest frame Blender renders. A scene's `frame_start` cannot go below 0, and on the
/// command line `-s -3` does not mean frame -3: Blender reads a leading sign as an offset
/// from the scene's own start (`-s -3` is "three before the start").
pub const MIN_FRAME: i64 = 0;
/// Highest frame Blender accepts (`MAXFRAME`).
pub const MAX_FRAME: i64 = 1_048_574;

/// An inclusive range of frames that Blender can render. Constructed only through
/// [`FrameRange::new`], so `from <= to` and both ends are within Blender's limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "RawRange", into = "RawRange")]
pub struct FrameRange {
    from: i64,
    to: i64,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct RawRange {
    from: i64,
    to: i64,
}

/// Why a pair of numbers is not a frame range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameRangeError {
    #[error("`from` ({from}) is after `to` ({to})")]
    Reversed { from: i64, to: i64 },
    #[error("frame {frame} is outside Blender's render range {MIN_FRAME}..={MAX_FRAME}")]
    OutOfBounds { frame: i64, field: &'static str },
}

impl FrameRangeError {
    /// The request field the error is about, for problem bodies.
    pub fn field(&self) -> &'static str {
        match self {
            FrameRangeError::Reversed { .. } => "to",
            FrameRangeError::OutOfBounds { field, .. } => field,
        }
    }
}

impl FrameRange {
    pub fn new(from: i64, to: i64) -> Result<Self, FrameRangeError> {
        for (frame, field) in [(from, "from"), (to, "to")] {
            if !(MIN_FRAME..=MAX_FRAME).contains(&frame) {
                return Err(FrameRangeError::OutOfBounds { frame, field });
            }
        }
        if from > to {
            return Err(FrameRangeError::Reversed { from, to });
        }
        Ok(FrameRange { from, to })
    }

    pub fn from(&self) -> i64 {
        self.from
    }

    pub fn to(&self) -> i64 {
        self.to
    }

    /// Number of frames in the range (never zero).
    pub fn len(&self) -> u64 {
        (self.to - self.from) as u64 + 1
    }

    /// A frame range is never empty; provided for clippy's `len_without_is_empty`.
    pub fn is_empty(&self) -> bool {
        false
    }

    pub fn contains(&self, frame: i64) -> bool {
        (self.from..=self.to).contains(&frame)
    }

    pub fn frames(&self) -> impl Iterator<Item = i64> {
        self.from..=self.to
    }
}

impl TryFrom<RawRange> for FrameRange {
    type Error = FrameRangeError;
    fn try_from(raw: RawRange) -> Result<Self, Self::Error> {
        FrameRange::new(raw.from, raw.to)
    }
}

impl From<FrameRange> for RawRange {
    fn from(r: FrameRange) -> Self {
        RawRange {
            from: r.from,
            to: r.to,
        }
    }
}

impl std::fmt::Display for FrameRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.from, self.to)
    }
}

/// `1-3, 7, 9-10`: a sorted list of frames written as runs, for messages.
pub fn frame_list(frames: &[i64]) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut iter = frames.iter().copied().peekable();
    while let Some(start) = iter.next() {
        let mut end = start;
        while iter.peek() == Some(&(end + 1)) {
            end += 1;
            iter.next();
        }
        parts.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
    }
    parts.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_lists_collapse_runs() {
        assert_eq!(frame_list(&[1, 2, 3, 7, 9, 10]), "1-3, 7, 9-10");
        assert_eq!(frame_list(&[4]), "4");
        assert_eq!(frame_list(&[]), "");
    }

    #[test]
    fn valid_ranges_report_their_length() {
        assert_eq!(FrameRange::new(1, 1).map(|r| r.len()), Ok(1));
        assert_eq!(FrameRange::new(1, 20).map(|r| r.len()), Ok(20));
        assert_eq!(FrameRange::new(0, 5).map(|r| r.len()), Ok(6));
        let full = FrameRange::new(MIN_FRAME, MAX_FRAME).map(|r| r.len());
        assert_eq!(full, Ok(1_048_575));
    }

    #[test]
    fn reversed_and_out_of_bounds_ranges_are_rejected() {
        assert_eq!(
            FrameRange::new(5, 4),
            Err(FrameRangeError::Reversed { from: 5, to: 4 })
        );
        let err = FrameRange::new(MAX_FRAME + 1, MAX_FRAME + 2).unwrap_err();
        assert_eq!(err.field(), "from");
        let err = FrameRange::new(1, MAX_FRAME + 1).unwrap_err();
        assert_eq!(err.field(), "to");
        // Negative frames cannot be rendered (see MIN_FRAME).
        assert_eq!(FrameRange::new(-3, -1).unwrap_err().field(), "from");
        assert_eq!(FrameRange::new(-1, 5).unwrap_err().field(), "from");
    }

    #[test]
    fn deserializing_validates() {
        let ok: FrameRange = serde_json::from_str(r#"{"from":1,"to":3}"#).unwrap();
        assert_eq!(ok.frames().collect::<Vec<_>>(), vec![1, 2, 3]);
        assert!(serde_json::from_str::<FrameRange>(r#"{"from":3,"to":1}"#).is_err());
    }
}
