//! Splitting a job's frame range into chunks (tasks), the tutorial's `splitFramesIntoChunks`.

use crate::frames::FrameRange;

/// Largest chunk size accepted: one chunk is one Blender process.
pub const MAX_CHUNK_SIZE: u64 = 100_000;

/// Splits `range` into consecutive chunks of `size` frames; the last may be shorter.
/// `size` is at least 1 (a zero is treated as 1).
pub fn split(range: FrameRange, size: u64) -> Vec<FrameRange> {
    let size = size.clamp(1, MAX_CHUNK_SIZE) as i64;
    let mut chunks = Vec::with_capacity(range.len().div_ceil(size as u64) as usize);
    let mut start = range.from();
    while start <= range.to() {
        let end = (start + size - 1).min(range.to());
        // Both ends lie inside `range`, so this cannot fail.
        if let Ok(chunk) = FrameRange::new(start, end) {
            chunks.push(chunk);
        }
        start = end + 1;
    }
    chunks
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(a: i64, b: i64) -> FrameRange {
        FrameRange::new(a, b).unwrap()
    }

    #[test]
    fn splits_like_the_tutorial() {
        assert_eq!(
            split(r(1, 20), 5),
            vec![r(1, 5), r(6, 10), r(11, 15), r(16, 20)]
        );
        assert_eq!(split(r(1, 7), 5), vec![r(1, 5), r(6, 7)]);
        assert_eq!(split(r(3, 3), 5), vec![r(3, 3)]);
        assert_eq!(split(r(0, 4), 2), vec![r(0, 1), r(2, 3), r(4, 4)]);
        assert_eq!(split(r(1, 3), 0), vec![r(1, 1), r(2, 2), r(3, 3)]);
        assert_eq!(split(r(1, 3), 100), vec![r(1, 3)]);
    }

    #[test]
    fn chunks_cover_the_range_exactly_once() {
        for size in 1..12 {
            let range = r(0, 31);
            let frames: Vec<i64> = split(range, size).iter().flat_map(|c| c.frames()).collect();
            assert_eq!(frames, range.frames().collect::<Vec<_>>(), "size {size}");
        }
    }
}
