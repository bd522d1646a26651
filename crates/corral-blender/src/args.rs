//! Builds Blender's command line as an argument vector. Nothing here ever meets a shell.

use corral_core::{Engine, FrameRange, ImageFormat};
use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// What one Blender render needs. Paths must be absolute: Blender treats an argument that
/// starts with `-` as an option, and an absolute path cannot start with one.
#[derive(Debug, Clone)]
pub struct RenderArgs {
    pub blend: PathBuf,
    /// Output pattern with `#` for the frame number, as Blender's `-o` takes it.
    pub output_pattern: PathBuf,
    pub engine: Engine,
    pub format: Option<ImageFormat>,
    pub range: FrameRange,
    /// Blender's `-t`; 0 uses every core.
    pub threads: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderArgsError {
    #[error("{what} path must be absolute: {path}")]
    NotAbsolute { what: &'static str, path: String },
}

impl RenderArgs {
    /// The tutorial's command, `-b FILE -o OUT -E ENGINE -s FROM -e TO -t N -a`, plus:
    /// `-F` when a format is chosen, and `-j 1` so a scene saved with a frame step still
    /// renders every frame it was asked for (the node checks that each one was written).
    pub fn to_argv(&self) -> Result<Vec<OsString>, RenderArgsError> {
        check_absolute("scene", &self.blend)?;
        check_absolute("output", &self.output_pattern)?;
        let mut argv: Vec<OsString> = vec![
            "-b".into(),
            self.blend.clone().into(),
            "-o".into(),
            self.output_pattern.clone().into(),
            "-E".into(),
            self.engine.blender_name().into(),
        ];
        if let Some(format) = self.format {
            argv.extend(["-F".into(), format.blender_name().into()]);
        }
        argv.extend([
            "-s".into(),
            self.range.from().to_string().into(),
            "-e".into(),
            self.range.to().to_string().into(),
            "-j".into(),
            "1".into(),
            "-t".into(),
            self.threads.to_string().into(),
            "-a".into(),
        ]);
        Ok(argv)
    }
}

fn check_absolute(what: &'static str, path: &Path) -> Result<(), RenderArgsError> {
    if path.is_absolute() {
        Ok(())
    } else {
        Err(RenderArgsError::NotAbsolute {
            what,
            path: path.display().to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> RenderArgs {
        RenderArgs {
            blend: "/scenes/shot 1; rm -rf ~.blend".into(),
            output_pattern: "/out/blender-render_####".into(),
            engine: Engine::Cycles,
            format: None,
            range: FrameRange::new(1, 5).unwrap(),
            threads: 0,
        }
    }

    fn strings(argv: Vec<OsString>) -> Vec<String> {
        argv.into_iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn builds_the_tutorial_command_as_a_vector() {
        let argv = strings(args().to_argv().unwrap());
        assert_eq!(
            argv,
            [
                "-b",
                "/scenes/shot 1; rm -rf ~.blend",
                "-o",
                "/out/blender-render_####",
                "-E",
                "CYCLES",
                "-s",
                "1",
                "-e",
                "5",
                "-j",
                "1",
                "-t",
                "0",
                "-a"
            ]
        );
    }

    #[test]
    fn format_engine_and_frame_zero() {
        let mut a = args();
        a.format = Some(ImageFormat::OpenExr);
        a.engine = Engine::Eevee;
        a.range = FrameRange::new(0, 3).unwrap();
        a.threads = 2;
        let argv = strings(a.to_argv().unwrap());
        let joined = argv.join(" ");
        assert!(
            joined.contains("-E BLENDER_EEVEE -F OPEN_EXR -s 0 -e 3"),
            "{joined}"
        );
        assert!(joined.ends_with("-t 2 -a"), "{joined}");
    }

    #[test]
    fn relative_paths_are_refused() {
        let mut a = args();
        a.blend = "-P evil.py".into();
        assert!(matches!(
            a.to_argv(),
            Err(RenderArgsError::NotAbsolute { what: "scene", .. })
        ));
        let mut a = args();
        a.output_pattern = "out/x_####".into();
        assert!(a.to_argv().is_err());
    }
}
