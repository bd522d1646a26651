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

/// A task a job starts with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Planned {
    pub range: FrameRange,
    /// Rendered before the rest (the first, middle and last frames of a job that asked).
    pub preview: bool,
    /// Cut into pieces as it is dispatched (the farm sizes the job's tasks).
    pub splittable: bool,
}

/// A job's tasks at submission. With `preview_first`, its first, middle and last frames
/// are one-frame tasks of their own, ahead of the rest. The rest is cut into `chunk`-frame
/// tasks, or, without a chunk size, kept in as few pieces as the preview frames leave,
/// each cut at dispatch to a size the farm measures ([`crate::schedule::auto_chunk`]).
pub fn plan(range: FrameRange, chunk: Option<u64>, preview_first: bool) -> Vec<Planned> {
    let mut previews: Vec<i64> = Vec::new();
    if preview_first {
        let middle = range.from() + (range.to() - range.from()) / 2;
        for f in [range.from(), middle, range.to()] {
            if !previews.contains(&f) {
                previews.push(f);
            }
        }
    }
    let mut tasks: Vec<Planned> = previews
        .iter()
        .filter_map(|f| FrameRange::new(*f, *f).ok())
        .map(|range| Planned {
            range,
            preview: true,
            splittable: false,
        })
        .collect();
    let mut sorted = previews.clone();
    sorted.sort_unstable();
    // The stretches of frames between the preview frames.
    let mut start = range.from();
    let mut stretches = Vec::new();
    for f in sorted.iter().chain(std::iter::once(&(range.to() + 1))) {
        if *f > start {
            if let Ok(stretch) = FrameRange::new(start, f - 1) {
                stretches.push(stretch);
            }
        }
        start = f + 1;
    }
    for stretch in stretches {
        match chunk {
            Some(size) => tasks.extend(split(stretch, size).into_iter().map(|range| Planned {
                range,
                preview: false,
                splittable: false,
            })),
            None => tasks.push(Planned {
                range: stretch,
                preview: false,
                splittable: true,
            }),
        }
    }
    tasks
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ranges(plan: &[Planned]) -> Vec<(i64, i64, bool, bool)> {
        plan.iter()
            .map(|p| (p.range.from(), p.range.to(), p.preview, p.splittable))
            .collect()
    }

    #[test]
    fn plans_put_preview_frames_first_and_cover_every_frame_once() {
        assert_eq!(
            ranges(&plan(r(1, 10), Some(4), true)),
            [
                (1, 1, true, false),
                (5, 5, true, false),
                (10, 10, true, false),
                (2, 4, false, false),
                (6, 9, false, false)
            ]
        );
        assert_eq!(ranges(&plan(r(1, 10), None, false)), [(1, 10, false, true)]);
        assert_eq!(
            ranges(&plan(r(1, 10), None, true)),
            [
                (1, 1, true, false),
                (5, 5, true, false),
                (10, 10, true, false),
                (2, 4, false, true),
                (6, 9, false, true)
            ]
        );
        assert_eq!(ranges(&plan(r(7, 7), None, true)), [(7, 7, true, false)]);
        assert_eq!(
            ranges(&plan(r(7, 8), Some(5), true)),
            [(7, 7, true, false), (8, 8, true, false)]
        );
        for (chunk, preview) in [
            (Some(3), true),
            (None, true),
            (Some(1), false),
            (None, false),
        ] {
            let mut frames: Vec<i64> = plan(r(0, 40), chunk, preview)
                .iter()
                .flat_map(|p| p.range.frames())
                .collect();
            frames.sort_unstable();
            assert_eq!(frames, (0..=40).collect::<Vec<_>>(), "{chunk:?} {preview}");
        }
    }

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
