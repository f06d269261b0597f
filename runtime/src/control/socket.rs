//! Where the control socket is when nobody says: the system one the packaged
//! service uses, or one of the user's own on a development machine, so that
//! `edgefn run` and `edgefn deploy` started by the same user meet with no flag.
//!
//! The gateway listens on, in order: `edgefn run --socket` (or `EDGEFN_SOCKET`),
//! `gateway.control_socket`, [`SYSTEM`] when its directory exists and this user
//! may write it (systemd makes `/run/edgefn` for the service), else [`user`].
//! A client command takes `--socket` (or `EDGEFN_SOCKET`), else the first of
//! [`user`] and [`SYSTEM`] where a gateway answers.

use std::path::{Path, PathBuf};

/// The packaged service's socket (`RuntimeDirectory=edgefn`).
pub const SYSTEM: &str = "/run/edgefn/control.sock";

/// This user's socket: `$XDG_RUNTIME_DIR/edgefn/control.sock` (the login
/// session's private runtime directory), else `/tmp/edgefn-<uid>/control.sock`.
pub fn user() -> PathBuf {
    let dir = match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(runtime) if Path::new(&runtime).is_absolute() => PathBuf::from(runtime).join("edgefn"),
        _ => PathBuf::from(format!("/tmp/edgefn-{}", uid())),
    };
    dir.join("control.sock")
}

/// The socket a gateway listens on when neither `--socket` nor the
/// configuration names one.
pub fn to_serve() -> PathBuf {
    let system = Path::new(SYSTEM);
    match system.parent() {
        Some(dir) if dir.is_dir() && crate::config::disk::writable(dir) => system.to_owned(),
        _ => user(),
    }
}

/// The socket a client command talks to when `--socket` is not given: the
/// first of [`user`] and [`SYSTEM`] that a gateway answers on (the user's own
/// gateway first: it is the more specific), else [`SYSTEM`] to name in the error.
pub fn to_reach() -> PathBuf {
    [user(), PathBuf::from(SYSTEM)]
        .into_iter()
        .find(|path| std::os::unix::net::UnixStream::connect(path).is_ok())
        .unwrap_or_else(|| PathBuf::from(SYSTEM))
}

/// Makes the directory of `socket` when it is this user's own (`/tmp/edgefn-<uid>`,
/// or under `$XDG_RUNTIME_DIR`), private to the user; refuses one that another
/// user made, which could hand them the socket.
pub fn prepare_dir(socket: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    let Some(dir) = socket.parent() else { return Ok(()) };
    if socket != user() || dir.is_dir() && dir.metadata()?.uid() == uid() {
        return Ok(());
    }
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err(std::io::Error::other(format!(
            "{} belongs to another user: remove it, or pass --socket PATH",
            dir.display()
        ))),
        Err(e) => Err(e),
    }
}

fn uid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_user_socket_is_under_the_runtime_directory_and_made_private() {
        let dir = tempfile::tempdir().unwrap();
        // Only this test in the crate sets XDG_RUNTIME_DIR.
        std::env::set_var("XDG_RUNTIME_DIR", dir.path());
        let socket = user();
        assert_eq!(socket, dir.path().join("edgefn/control.sock"));
        prepare_dir(&socket).unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("edgefn")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        // Idempotent: a second gateway start finds it ready.
        prepare_dir(&socket).unwrap();
    }
}
