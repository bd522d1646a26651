//! Keeps frames inside the node's output folder when folders in it are symbolic links:
//! an output folder is checked when a job is submitted, again when it starts, and each
//! frame is moved into place through a handle on the folder that was checked.

use nix::fcntl::renameat;
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Checks that `dir` (inside `root`, which is canonical), or the part of it that already
/// exists, resolves to a folder inside `root` once every symbolic link in it is followed.
/// The missing rest is made of plain names, which `create_dir_all` makes as real folders.
pub fn check_output_dir(root: &Path, dir: &Path) -> Result<(), String> {
    let mut existing = dir;
    let resolved = loop {
        match existing.symlink_metadata() {
            Ok(_) => {
                break existing
                    .canonicalize()
                    .map_err(|e| format!("`{}` cannot be followed: {e}", shown(root, existing)))?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                existing = existing
                    .parent()
                    .ok_or_else(|| format!("`{}` does not exist", dir.display()))?;
            }
            Err(e) => return Err(format!("`{}` cannot be read: {e}", shown(root, existing))),
        }
    };
    if !resolved.starts_with(root) {
        return Err(format!(
            "`{}` leads outside the node's output folder (through a symbolic link)",
            shown(root, existing)
        ));
    }
    if !resolved.is_dir() {
        return Err(format!("`{}` is not a folder", shown(root, existing)));
    }
    Ok(())
}

/// An open folder that was inside the output folder when it was opened. Renaming through
/// it cannot be redirected by a symbolic link swapped in later.
pub struct ConfinedDir {
    file: File,
    pub path: PathBuf,
}

/// Opens `dir` and checks, on the open handle, where it really is.
pub fn open_confined_dir(root: &Path, dir: &Path) -> Result<ConfinedDir, String> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_DIRECTORY)
        .open(dir)
        .map_err(|e| format!("cannot open folder `{}`: {e}", dir.display()))?;
    let real = std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd()))
        .map_err(|e| format!("cannot tell where `{}` is: {e}", dir.display()))?;
    if !real.starts_with(root) {
        return Err(format!(
            "`{}` now leads outside the node's output folder (to `{}`)",
            dir.display(),
            real.display()
        ));
    }
    Ok(ConfinedDir { file, path: real })
}

impl ConfinedDir {
    /// Moves `name` from folder `from` into this folder under the same name.
    pub fn rename_from(&self, from: &ConfinedDir, name: &Path) -> Result<(), String> {
        renameat(from.file.as_fd(), name, self.file.as_fd(), name)
            .map_err(|e| format!("cannot move `{}` into place: {e}", name.display()))
    }
}

/// `path` relative to `root` when it is inside, for messages that do not reveal the
/// node's folders.
fn shown(root: &Path, path: &Path) -> String {
    path.strip_prefix(root)
        .unwrap_or(path)
        .display()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn setup() -> (tempfile::TempDir, PathBuf, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("out");
        std::fs::create_dir(&root).unwrap();
        let root = root.canonicalize().unwrap();
        (dir, root, tempfile::tempdir().unwrap())
    }

    #[test]
    fn symbolic_links_out_of_the_output_folder_are_refused() {
        let (_dir, root, elsewhere) = setup();
        symlink(elsewhere.path(), root.join("escape")).unwrap();
        std::fs::create_dir(root.join("real")).unwrap();
        symlink(root.join("real"), root.join("inside")).unwrap();
        symlink("/nonexistent/corral", root.join("dangling")).unwrap();
        std::fs::write(root.join("file"), b"x").unwrap();

        assert_eq!(check_output_dir(&root, &root), Ok(()));
        assert_eq!(check_output_dir(&root, &root.join("new/deeper")), Ok(()));
        assert_eq!(check_output_dir(&root, &root.join("inside/new")), Ok(()));
        for bad in ["escape", "escape/new/deeper", "dangling/new", "file/new"] {
            let err = check_output_dir(&root, &root.join(bad)).expect_err(bad);
            assert!(!err.contains(&*root.to_string_lossy()), "{err}");
        }
    }

    #[test]
    fn a_folder_swapped_for_a_symbolic_link_is_not_renamed_into() {
        let (_dir, root, elsewhere) = setup();
        let final_dir = root.join("shot");
        let partial = final_dir.join(".corral-partial-x");
        std::fs::create_dir_all(&partial).unwrap();
        std::fs::write(partial.join("f_0001.png"), b"frame").unwrap();
        let from = open_confined_dir(&root, &partial).unwrap();
        let to = open_confined_dir(&root, &final_dir).unwrap();
        to.rename_from(&from, Path::new("f_0001.png")).unwrap();
        assert!(final_dir.join("f_0001.png").is_file());

        // The folder is replaced by a link out: opening it again is refused...
        std::fs::rename(&final_dir, root.join("moved")).unwrap();
        symlink(elsewhere.path(), &final_dir).unwrap();
        let err = open_confined_dir(&root, &final_dir).err().unwrap();
        assert!(err.contains("outside"), "{err}");
        // ...and a handle opened before the swap still renames into the real folder.
        let from = open_confined_dir(&root, &root.join("moved/.corral-partial-x")).unwrap();
        std::fs::write(root.join("moved/.corral-partial-x/f_0002.png"), b"frame").unwrap();
        to.rename_from(&from, Path::new("f_0002.png")).unwrap();
        assert!(root.join("moved/f_0002.png").is_file());
        assert_eq!(std::fs::read_dir(elsewhere.path()).unwrap().count(), 0);
    }
}
