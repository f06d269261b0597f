//! What validation asks of the machine the gateway will run on: that a data
//! directory is one (or can be made), and that the free-space reserve fits the
//! filesystem it is kept on. `edgefn check` and `edgefn run` refuse a
//! configuration that could only fail later, with the key that says why.

use std::path::{Path, PathBuf};

/// Why `dir` cannot serve as a directory the gateway writes in, if it cannot:
/// it is something else, or it does not exist and cannot be made (a file on
/// its path, or a parent this user may not write).
pub fn unusable_dir(dir: &Path) -> Option<String> {
    if dir.is_dir() {
        return None;
    }
    if dir.exists() {
        return Some(format!("{} exists and is not a directory", dir.display()));
    }
    let parent = existing_ancestor(dir);
    if !parent.is_dir() {
        return Some(format!("{} cannot be made: {} is not a directory", dir.display(), parent.display()));
    }
    if !writable(&parent) {
        return Some(format!(
            "{} does not exist and cannot be made: this user may not write {}",
            dir.display(),
            parent.display()
        ));
    }
    None
}

/// The size of the filesystem `path` is (or would be) on, in bytes.
pub fn filesystem_bytes(path: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let at = std::ffi::CString::new(existing_ancestor(path).as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs only writes into `stat`; `at` is NUL-terminated and outlives the call.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(at.as_ptr(), &mut stat) } != 0 {
        return None;
    }
    Some((stat.f_blocks as u64).saturating_mul(stat.f_frsize as u64))
}

/// `path` or its nearest ancestor that exists (`/` at worst).
fn existing_ancestor(path: &Path) -> PathBuf {
    path.ancestors().find(|p| p.exists()).map_or_else(|| PathBuf::from("/"), Path::to_path_buf)
}

/// Whether this user may create entries in `dir`.
pub(crate) fn writable(dir: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(path) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else { return false };
    // SAFETY: `path` is a valid NUL-terminated string for the duration of the call.
    unsafe { libc::access(path.as_ptr(), libc::W_OK | libc::X_OK) == 0 }
}

/// Whether `host` is a host name (letters, digits, '-' and '_' in dot-separated
/// labels of at most 63 bytes, 253 in all) or an IP address: not a URL, a
/// host:port pair, or a name with spaces in it.
pub fn valid_host(host: &str) -> bool {
    if host.parse::<std::net::IpAddr>().is_ok() {
        return true;
    }
    let label = |l: &str| {
        (1..=63).contains(&l.len())
            && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    host.len() <= 253 && host.trim_end_matches('.').split('.').all(label)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_and_addresses_pass_urls_and_ports_do_not() {
        for good in ["localhost", "broker.local", "mqtt-1.example.com", "10.0.0.7", "::1", "fd00::1", "my_broker"] {
            assert!(valid_host(good), "{good}");
        }
        for bad in ["mqtt://broker", "broker:1883", "my broker", "-broker", "a..b", "", "[::1]"] {
            assert!(!valid_host(bad), "{bad}");
        }
    }

    #[test]
    fn a_file_is_no_directory_and_nothing_is_made_under_one() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("file");
        std::fs::write(&file, b"x").unwrap();
        assert!(unusable_dir(dir.path()).is_none());
        assert!(unusable_dir(&dir.path().join("new/deeper")).is_none());
        assert!(unusable_dir(&file).unwrap().contains("is not a directory"));
        assert!(unusable_dir(&file.join("outbox")).unwrap().contains("cannot be made"));
        assert!(filesystem_bytes(&dir.path().join("not/yet")).is_some_and(|b| b > 0));
    }
}
