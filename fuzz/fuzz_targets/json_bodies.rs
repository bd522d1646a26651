//! Request bodies, any bytes, through the validators the node (`JobSpec::from_body`) and
//! the orchestrator (`JobSubmission::from_body`, `from_render_body`) run at the edge: they
//! never panic; a refusal names a field and becomes a problem body that serializes; an
//! accepted job is within every bound and turns into a Blender argument vector with no
//! extra option, every path absolute and inside its folder.
#![no_main]

use corral_blender::RenderArgs;
use corral_core::node_api::JobSpec;
use corral_core::orchestrator_api::{JobSubmission, SubmitLimits};
use corral_core::validate::parse_json_object;
use corral_core::{FieldError, Problem};
use libfuzzer_sys::fuzz_target;
use std::path::{Component, Path};

const MAX_FRAMES: u64 = 10_000;

fn refused(e: &FieldError) {
    assert!(!e.message.is_empty(), "{e:?}");
    // A field is named, except a key that is itself the empty string (`{"": 1}`), which
    // is reported as the unknown field `` (known, harmless; see the hardening report).
    assert!(
        !e.field.is_empty() || e.message.starts_with("unknown field ``"),
        "{e:?}"
    );
    let problem = Problem::invalid_field(e.clone());
    assert_eq!(problem.status, 400);
    let json = serde_json::to_vec(&problem).expect("a problem serializes");
    let back: serde_json::Value = serde_json::from_slice(&json).expect("and parses");
    assert_eq!(back["field"], e.field.as_str());
}

fn below(root: &Path, path: &Path) -> bool {
    path.strip_prefix(root)
        .map(|rest| rest.components().all(|c| matches!(c, Component::Normal(_))))
        .unwrap_or(false)
}

fuzz_target!(|data: &[u8]| {
    let object = parse_json_object::<serde_json::Map<String, serde_json::Value>>(data);

    match JobSpec::from_body(data, MAX_FRAMES) {
        Ok(spec) => {
            assert!(
                object.is_ok(),
                "a job came from something that is not a JSON object"
            );
            assert!(spec.range.len() <= MAX_FRAMES);
            let scenes = Path::new("/srv/scenes");
            let out = Path::new("/srv/out");
            let args = RenderArgs {
                blend: scenes.join(spec.scene.as_deref().unwrap_or("default.blend")),
                output_pattern: out.join(&spec.output),
                engine: spec.engine,
                format: spec.format,
                range: spec.range,
                threads: spec.threads.unwrap_or(0),
            };
            assert!(below(scenes, &args.blend), "{:?}", args.blend);
            assert!(
                below(out, &args.output_pattern),
                "{:?}",
                args.output_pattern
            );
            let argv = args.to_argv().expect("absolute paths");
            let argv: Vec<String> = argv
                .iter()
                .map(|a| a.to_str().expect("UTF-8 argument").to_string())
                .collect();
            // Options and values alternate, options from a fixed set, `-a` last.
            let (last, pairs) = argv.split_last().expect("arguments");
            assert_eq!(last, "-a");
            assert_eq!(pairs.len() % 2, 0, "{argv:?}");
            for pair in pairs.chunks(2) {
                let (option, value) = (&pair[0], &pair[1]);
                assert!(
                    ["-b", "-o", "-E", "-F", "-s", "-e", "-j", "-t"].contains(&option.as_str()),
                    "{argv:?}"
                );
                assert!(
                    !value.starts_with('-'),
                    "a value read as an option: {argv:?}"
                );
            }
        }
        Err(e) => refused(&e),
    }

    // With a farm-wide default chunk size, and without one (the farm sizes the tasks).
    for default_chunk_size in [Some(5), None] {
        let limits = SubmitLimits {
            max_frames: MAX_FRAMES,
            default_chunk_size,
        };
        for submission in [
            JobSubmission::from_body(data, limits),
            JobSubmission::from_render_body(data, limits),
        ] {
            match submission {
                Ok(job) => {
                    assert!(object.is_ok());
                    assert!(job.range.len() <= MAX_FRAMES);
                    assert!(job.chunk_size.is_none_or(|c| c >= 1));
                    assert!(default_chunk_size.is_none() || job.chunk_size.is_some());
                    assert!((-1000..=1000).contains(&job.priority));
                }
                Err(e) => refused(&e),
            }
        }
    }
});
