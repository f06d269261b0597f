//! A small tmpfs for tests where a disk fills and frees again. Shared by the
//! integration tests (tests/support) and the outbox's unit tests, which include
//! this file by path.
#![allow(dead_code)]

/// A small tmpfs mounted for one test, so a disk can fill and free again;
/// unmounted when dropped. Mounting needs root: CI runs as root and must
/// manage it, elsewhere the test is skipped with a loud message. Built by a user
/// other than root, such a test is `#[ignore]`d (runtime/build/test_tools.rs).
pub struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    pub fn mount(bytes: u64) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().unwrap();
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
            .arg(dir.path())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        match mounted {
            true => Some(Tmpfs { dir }),
            false if std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false") => {
                panic!("CI must be able to mount a tmpfs (it runs as root)")
            }
            false => {
                eprintln!("SKIPPED: mounting a tmpfs needs root; `bash .ci/run` runs this test");
                None
            }
        }
    }

    pub fn path(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// Writes a file until the disk is full; returns its path.
    pub fn fill(&self) -> std::path::PathBuf {
        use std::io::Write;
        let path = self.path().join("filler");
        let mut f = std::fs::File::create(&path).unwrap();
        let chunk = vec![0xA5u8; 64 << 10];
        while f.write_all(&chunk).is_ok() {}
        path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(self.dir.path()).status();
    }
}
