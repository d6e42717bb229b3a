//! Who may read the database: it holds password hashes and the relay's private key, so
//! on Unix its directory is 0700 and its files 0600. New ones are created so; existing
//! ones with wider modes are narrowed at open, with a log line.

use std::io;
use std::path::{Path, PathBuf};

/// The mode of a directory holding secrets.
#[cfg(unix)]
const DIR_MODE: u32 = 0o700;
/// The mode of a file holding secrets.
#[cfg(unix)]
const FILE_MODE: u32 = 0o600;

/// Creates `dir` (and missing parents) with mode 0700, or narrows an existing `dir` to
/// 0700 if group or others may use it. Parents that already exist are left alone.
pub fn private_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        if !dir.exists() {
            return std::fs::DirBuilder::new()
                .recursive(true)
                .mode(DIR_MODE)
                .create(dir);
        }
        narrow(dir, DIR_MODE)
    }
    #[cfg(not(unix))]
    std::fs::create_dir_all(dir)
}

/// The database file and the two SQLite keeps beside it in WAL mode.
pub(crate) fn database_files(db: &Path) -> [PathBuf; 3] {
    let with = |suffix: &str| {
        let mut name = db.as_os_str().to_owned();
        name.push(suffix);
        PathBuf::from(name)
    };
    [db.to_path_buf(), with("-wal"), with("-shm")]
}

/// Narrows each of the database files that exists to 0600.
pub(crate) fn private_files(db: &Path) -> io::Result<()> {
    #[cfg(unix)]
    for f in database_files(db) {
        match narrow(&f, FILE_MODE) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            other => other?,
        }
    }
    #[cfg(not(unix))]
    let _ = db;
    Ok(())
}

/// Sets `path` to `mode` if its mode grants more than `mode`, logging the change.
#[cfg(unix)]
fn narrow(path: &Path, mode: u32) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let old = std::fs::metadata(path)?.permissions().mode() & 0o777;
    if old & !mode == 0 {
        return Ok(());
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    tracing::info!(
        path = %path.display(),
        old = format_args!("{old:o}"),
        new = format_args!("{mode:o}"),
        "narrowed the mode of a file holding secrets"
    );
    Ok(())
}

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).expect("metadata").permissions().mode() & 0o777
    }

    #[test]
    fn new_dirs_are_private_and_existing_parents_untouched() {
        let tmp = tempfile::tempdir().expect("tempdir");
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        let dir = tmp.path().join("a/b");
        private_dir(&dir).expect("create");
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&tmp.path().join("a")), 0o700);
        assert_eq!(mode(tmp.path()), 0o755);
    }

    #[test]
    fn wide_modes_are_narrowed_and_narrower_ones_kept() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("data");
        std::fs::create_dir(&dir).expect("mkdir");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        private_dir(&dir).expect("narrow");
        assert_eq!(mode(&dir), 0o700);

        let db = dir.join("tether.db");
        let [_, wal, shm] = database_files(&db);
        assert!(wal.ends_with("tether.db-wal") && shm.ends_with("tether.db-shm"));
        std::fs::write(&db, b"").expect("db");
        std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        std::fs::write(&wal, b"").expect("wal");
        std::fs::set_permissions(&wal, std::fs::Permissions::from_mode(0o400)).expect("chmod");
        // No -shm: a missing file is not an error.
        private_files(&db).expect("narrow");
        assert_eq!(mode(&db), 0o600);
        assert_eq!(mode(&wal), 0o400);
    }
}
