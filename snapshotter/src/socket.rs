//! The socket: only for root (0600 inside a 0700 directory); a stale one is
//! replaced, a live one refused.

use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::path::Path;

/// Makes the socket's directory (0700) and clears a stale socket; refuses
/// when a live server answers on `path` or `path` is not a socket.
pub fn prepare(path: &Path) -> Result<(), String> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| format!("chmod {}: {e}", dir.display()))?;
    }
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(format!("{}: {e}", path.display())),
        Ok(m) if !m.file_type().is_socket() => Err(format!(
            "{} exists and is not a socket; refusing to replace it",
            path.display()
        )),
        Ok(_) => match std::os::unix::net::UnixStream::connect(path) {
            Ok(_) => Err(format!(
                "another server (a dmthin-snapshotter?) is serving {}; stop it first",
                path.display()
            )),
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                log::info!("replacing stale socket {}", path.display());
                std::fs::remove_file(path).map_err(|e| format!("removing {}: {e}", path.display()))
            }
            Err(e) => Err(format!("probing {}: {e}", path.display())),
        },
    }
}

/// Restricts the bound socket to its owner.
pub fn restrict(path: &Path) -> Result<(), String> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| format!("chmod {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_socket_is_replaced_live_one_refused() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("sub/s.sock");
        prepare(&sock).unwrap();
        let mode = std::fs::metadata(dir.path().join("sub"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700);
        let live = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        let err = prepare(&sock).unwrap_err();
        assert!(err.contains("another server"), "{err}");
        drop(live);
        prepare(&sock).unwrap();
        assert!(!sock.exists());
        std::fs::write(&sock, b"x").unwrap();
        assert!(prepare(&sock).unwrap_err().contains("not a socket"));
    }
}
