//! Files and directories that survive a power cut. A write is on disk only
//! once its file is synced, and a name (a file or directory created, renamed or
//! removed) only once the directory holding it is synced: POSIX promises no
//! more, and an SD card's filesystem may keep no more. Everything the gateway
//! keeps goes through here or syncs the same way (`tests/power_cut.rs` runs
//! the gateway on a disk that forgets the rest).

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Makes the names in `dir` (created, renamed or removed) durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Creates `dir` and any missing parents, syncing the directory that holds
/// each one it creates, so that none of them vanishes with the power.
pub fn create_dir_all(dir: &Path) -> io::Result<()> {
    let mut missing: Vec<PathBuf> = Vec::new();
    let mut at = Some(dir);
    while let Some(path) = at.filter(|p| !p.as_os_str().is_empty() && !p.is_dir()) {
        missing.push(path.to_owned());
        at = path.parent();
    }
    for path in missing.iter().rev() {
        match std::fs::create_dir(path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && path.is_dir() => continue,
            Err(e) => return Err(e),
        }
        sync_dir(parent_of(path))?;
    }
    Ok(())
}

/// Replaces `path` with `bytes` atomically and durably: a temporary file
/// beside it is written and synced, renamed over it, and the directory synced.
/// The file is, at any moment and after any crash, the old bytes or the new.
pub fn replace(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut file = File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, path)?;
    sync_dir(parent_of(path))
}

/// Removes the file at `path` and makes its removal durable.
pub fn remove_file(path: &Path) -> io::Result<()> {
    std::fs::remove_file(path)?;
    sync_dir(parent_of(path))
}

fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_dir_all_makes_every_missing_level_accepts_one_that_exists_and_refuses_a_file_in_the_way() {
        let root = tempfile::tempdir().unwrap();
        let deep = root.path().join("a/b/c");
        create_dir_all(&deep).unwrap();
        assert!(deep.is_dir());
        create_dir_all(&deep).unwrap();
        std::fs::write(root.path().join("a/file"), b"x").unwrap();
        // A file in the way is an error, not a directory taken as made.
        assert!(create_dir_all(&root.path().join("a/file/d")).is_err());
    }

    #[test]
    fn replace_leaves_the_new_bytes_and_no_temporary_file() {
        let root = tempfile::tempdir().unwrap();
        let path = root.path().join("state.json");
        replace(&path, b"old").unwrap();
        replace(&path, b"new").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
        let names: Vec<_> = std::fs::read_dir(root.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("state.json")]);
    }
}
