//! Scene paths and output patterns from requests: whatever `confined_relative_path` and
//! `output_pattern` accept stays inside the folder it is joined to, has no character that
//! could split Blender's output lines or be read as an option, and fits the file system.
#![no_main]

use corral_core::validate::{confined_relative_path, output_pattern, MAX_NAME_BYTES};
use libfuzzer_sys::fuzz_target;
use std::path::{Component, Path};

fuzz_target!(|data: &[u8]| {
    let Ok(value) = std::str::from_utf8(data) else {
        return;
    };
    let confined = confined_relative_path("scene", value);
    let pattern = output_pattern("output", value);
    if pattern.is_ok() {
        assert!(
            confined.is_ok(),
            "an output pattern is a confined path: {value:?}"
        );
        assert!(!value.ends_with('/'), "{value:?}");
    }
    match confined {
        Ok(()) => {
            assert!(!value.is_empty() && value.len() <= 1024, "{value:?}");
            assert!(!value.contains('\\'), "{value:?}");
            assert!(!value.chars().any(char::is_control), "{value:?}");
            let root = Path::new("/srv/scenes");
            let joined = root.join(value);
            assert!(joined.starts_with(root), "{value:?} leaves the root");
            let below = joined.strip_prefix(root).expect("below the root");
            assert!(
                below.components().all(|c| match c {
                    Component::Normal(name) => name.len() <= MAX_NAME_BYTES,
                    _ => false,
                }),
                "{value:?} is not plain names below the root"
            );
            // Blender reads an argument starting with `-` as an option: joined to an
            // absolute root, no accepted value can start one.
            assert!(joined.to_string_lossy().starts_with('/'));
            assert!(!value.split('/').any(|part| part == ".."), "{value:?}");
        }
        Err(e) => {
            assert_eq!(e.field, "scene");
            assert!(pattern.is_err(), "{value:?}");
        }
    }
});
