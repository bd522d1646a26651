//! The start-up probe: is Blender there, and which version is it?

use crate::process::{BlenderProcess, ExitOutcome, SpawnError};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// What the node learned about its Blender at start-up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlenderInfo {
    pub path: PathBuf,
    /// E.g. `3.4.1`.
    pub version: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error(transparent)]
    Spawn(#[from] SpawnError),
    #[error("`{} --version` did not answer within {timeout:?}", path.display())]
    Timeout { path: PathBuf, timeout: Duration },
    #[error("`{} --version` failed ({outcome:?}); is it Blender?", .path.display())]
    Failed { path: PathBuf, outcome: ExitOutcome },
    #[error("`{} --version` printed no `Blender X.Y` line; is it Blender?", .0.display())]
    NoVersion(PathBuf),
    #[error("`{} --version`: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Runs `blender --version` and reads the version from its first `Blender X.Y.Z` line.
pub async fn probe_blender(program: &Path, timeout: Duration) -> Result<BlenderInfo, ProbeError> {
    let process = BlenderProcess::spawn(program, &["--version".into()])?;
    let mut version = None;
    let run = process.run(std::future::pending(), |line| {
        if version.is_none() {
            version = parse_version_line(line);
        }
    });
    let outcome = tokio::time::timeout(timeout, run)
        .await
        .map_err(|_| ProbeError::Timeout {
            path: program.to_path_buf(),
            timeout,
        })?
        .map_err(|source| ProbeError::Io {
            path: program.to_path_buf(),
            source,
        })?;
    if outcome != ExitOutcome::Exited(0) {
        return Err(ProbeError::Failed {
            path: program.to_path_buf(),
            outcome,
        });
    }
    let version = version.ok_or_else(|| ProbeError::NoVersion(program.to_path_buf()))?;
    Ok(BlenderInfo {
        path: program.to_path_buf(),
        version,
    })
}

fn parse_version_line(line: &str) -> Option<String> {
    let rest = line.trim().strip_prefix("Blender ")?;
    let version = rest.split_whitespace().next()?;
    version
        .chars()
        .next()
        .filter(char::is_ascii_digit)
        .map(|_| version.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_lines() {
        assert_eq!(parse_version_line("Blender 3.4.1"), Some("3.4.1".into()));
        assert_eq!(
            parse_version_line("Blender 4.2.0 LTS"),
            Some("4.2.0".into())
        );
        assert_eq!(parse_version_line("Blender quit"), None);
        assert_eq!(parse_version_line("\tbuild date: 2023"), None);
    }
}
