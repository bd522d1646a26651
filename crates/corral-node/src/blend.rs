//! Recognises a .blend file by its first bytes, so that a scene the node cannot read, or
//! that is no scene at all, is refused when the job is submitted rather than failing later.

use std::io::Read;
use std::path::Path;

/// Bytes read from the start of a scene file.
const HEADER_LEN: usize = 12;

/// Checks that `path` can be opened for reading and starts like a .blend file: Blender's
/// own 12-byte header (`BLENDER`, `_` or `-` for the pointer size, `v` or `V` for the byte
/// order, three version digits), or a gzip or Zstandard stream (Blender saves compressed
/// files that way). Says nothing about the rest of the file: Blender reads that.
pub fn check_blend_file(path: &Path) -> Result<(), String> {
    let mut file =
        std::fs::File::open(path).map_err(|e| format!("cannot be opened for reading: {e}"))?;
    let mut header = Vec::with_capacity(HEADER_LEN);
    file.by_ref()
        .take(HEADER_LEN as u64)
        .read_to_end(&mut header)
        .map_err(|e| format!("cannot be read: {e}"))?;
    if looks_like_blend(&header) {
        Ok(())
    } else {
        Err("is not a .blend file (it starts with neither Blender's header nor a gzip or Zstandard one)".into())
    }
}

fn looks_like_blend(header: &[u8]) -> bool {
    let Some(header) = header.get(..HEADER_LEN) else {
        return false;
    };
    match header {
        [b'B', b'L', b'E', b'N', b'D', b'E', b'R', size, order, version @ ..] => {
            matches!(size, b'_' | b'-')
                && matches!(order, b'v' | b'V')
                && version.iter().all(u8::is_ascii_digit)
        }
        [0x1f, 0x8b, ..] => true,
        [0x28, 0xb5, 0x2f, 0xfd, ..] => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blend_headers_are_recognised() {
        assert!(looks_like_blend(b"BLENDER-v304REND"));
        assert!(looks_like_blend(b"BLENDER_V293"));
        assert!(looks_like_blend(&[
            0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3, 1, 2
        ]));
        assert!(looks_like_blend(&[
            0x28, 0xb5, 0x2f, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0
        ]));
        assert!(!looks_like_blend(b"BLENDER-v30"), "too short");
        assert!(!looks_like_blend(b"BLENDER-x304"));
        assert!(!looks_like_blend(b"BLENDER-vabc"));
        assert!(!looks_like_blend(b"not a blend file"));
        assert!(!looks_like_blend(&[0x1f, 0x8b]));
        assert!(!looks_like_blend(b""));
    }

    #[test]
    fn files_are_opened_and_read() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good.blend");
        std::fs::write(&good, b"BLENDER-v304REND\0\0\0\0").unwrap();
        assert_eq!(check_blend_file(&good), Ok(()));
        let text = dir.path().join("text.blend");
        std::fs::write(&text, b"hello").unwrap();
        assert!(check_blend_file(&text)
            .unwrap_err()
            .contains("not a .blend"));
        let missing = check_blend_file(&dir.path().join("missing.blend")).unwrap_err();
        assert!(missing.contains("cannot be opened"), "{missing}");
        // A folder opens on Linux but cannot be read.
        assert!(check_blend_file(dir.path()).is_err());
    }
}
