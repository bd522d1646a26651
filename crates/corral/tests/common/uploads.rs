//! Helpers of the uploaded-scene tests (`remote.rs`, `storage.rs`, `submit_upload.rs`,
//! `submit_deps.rs`): a plain Blender render to compare frames with, decoded pixels, a
//! command's output for a failure message, the job id `corral submit` printed, a folder's
//! entries and an answer's header.

use reqwest::blocking::Response;
use std::path::Path;
use std::process::{Command, Output, Stdio};

/// Frame `frame` of `blend` rendered by plain Blender (Cycles, one thread), as the artist
/// has it: the PNG's bytes.
pub fn plain_render(blend: &Path, frame: i64, out: &Path) -> Vec<u8> {
    let status = Command::new("blender")
        .arg("-b")
        .arg(blend)
        .arg("-o")
        .arg(out.join("ref_####"))
        .args(["-E", "CYCLES", "-f", &frame.to_string(), "-t", "1"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("run blender");
    assert!(
        status.success(),
        "blender -b {} -f {frame}",
        blend.display()
    );
    std::fs::read(out.join(format!("ref_{frame:04}.png"))).expect("the reference frame")
}

/// A PNG's decoded pixels (RGBA, 8 bits): the same image in another encoding compares equal.
pub fn pixels(png: &[u8]) -> Vec<u8> {
    image::load_from_memory(png)
        .expect("a PNG")
        .to_rgba8()
        .into_raw()
}

/// A finished command's status, stdout and stderr, for a failure message.
pub fn text(out: &Output) -> String {
    format!(
        "status {:?}\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The job id from `submit --wait`'s `Rendering ... · job ID` line.
pub fn job_of(out: &Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find(|l| l.starts_with("Rendering "))
        .unwrap_or_else(|| panic!("no Rendering line:\n{}", text(out)));
    line.rsplit(' ').next().unwrap_or_default().to_string()
}

/// The names in `dir`, sorted (none when it does not exist).
pub fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.map(|e| {
                e.expect("a folder entry")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// An answer's header as text.
pub fn header(resp: &Response, name: &str) -> Option<String> {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}
