//! The `sftp` subsystem: a [`russh_sftp::server::Handler`] over the real filesystem, run
//! with the agent's own permissions. Relative paths are resolved against the home
//! directory, as OpenSSH's `sftp-server` does.

use std::collections::HashMap;
use std::fs::{self, FileTimes, Metadata};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use russh_sftp::protocol::{
    Attrs, Data, File, FileAttributes, Handle, Name, OpenFlags, Status, StatusCode, Version,
};
use russh_sftp::server::StatusReply;

/// Largest read answered at once (OpenSSH asks for 32 KiB..256 KiB).
const MAX_READ: u32 = 256 * 1024;
/// Directory entries per `SSH_FXP_NAME` reply.
const DIR_BATCH: usize = 128;

enum OpenHandle {
    File(Arc<fs::File>),
    Dir(Vec<File>),
}

/// Filesystem-backed SFTP handler.
pub(crate) struct FsSftp {
    home: PathBuf,
    handles: HashMap<String, OpenHandle>,
    next_handle: u64,
    /// Dropped with the handler, which the SFTP server task drops when it ends: that
    /// is how the session learns the subsystem is over.
    _ended: tokio::sync::oneshot::Sender<()>,
}

fn io_status(e: &io::Error) -> StatusReply {
    let code = match e.kind() {
        io::ErrorKind::NotFound => StatusCode::NoSuchFile,
        io::ErrorKind::PermissionDenied => StatusCode::PermissionDenied,
        _ => StatusCode::Failure,
    };
    code.with_message(e.to_string())
}

fn ok(id: u32) -> Status {
    Status {
        id,
        status_code: StatusCode::Ok,
        error_message: "Ok".to_string(),
        language_tag: "en-US".to_string(),
    }
}

fn attrs_of(meta: &Metadata) -> FileAttributes {
    FileAttributes {
        size: Some(meta.len()),
        uid: Some(meta.uid()),
        user: None,
        gid: Some(meta.gid()),
        group: None,
        permissions: Some(meta.mode()),
        atime: u32::try_from(meta.atime()).ok(),
        mtime: u32::try_from(meta.mtime()).ok(),
    }
}

/// Lexical normalisation for paths that do not exist (yet).
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in path.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(p) => out.push(p),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    out
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> Result<T, StatusReply> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map_err(|e| io_status(&e)),
        Err(_) => Err(StatusCode::Failure.with_message("filesystem task failed")),
    }
}

fn apply_attrs(path: &Path, file: Option<&fs::File>, attrs: &FileAttributes) -> io::Result<()> {
    if let Some(size) = attrs.size {
        match file {
            Some(f) => f.set_len(size)?,
            None => fs::OpenOptions::new()
                .write(true)
                .open(path)?
                .set_len(size)?,
        }
    }
    if let Some(mode) = attrs.permissions {
        let perms = fs::Permissions::from_mode(mode & 0o7777);
        match file {
            Some(f) => f.set_permissions(perms)?,
            None => fs::set_permissions(path, perms)?,
        }
    }
    if attrs.uid.is_some() || attrs.gid.is_some() {
        std::os::unix::fs::chown(path, attrs.uid, attrs.gid)?;
    }
    if attrs.atime.is_some() || attrs.mtime.is_some() {
        let mut times = FileTimes::new();
        if let Some(a) = attrs.atime {
            times = times.set_accessed(UNIX_EPOCH + Duration::from_secs(a.into()));
        }
        if let Some(m) = attrs.mtime {
            times = times.set_modified(UNIX_EPOCH + Duration::from_secs(m.into()));
        }
        match file {
            Some(f) => f.set_times(times)?,
            None => fs::File::open(path)?.set_times(times)?,
        }
    }
    Ok(())
}

impl FsSftp {
    /// A handler rooted (for relative paths) at `home`; `ended` closes when the handler
    /// is dropped.
    pub(crate) fn new(home: PathBuf, ended: tokio::sync::oneshot::Sender<()>) -> Self {
        Self {
            home,
            handles: HashMap::new(),
            next_handle: 0,
            _ended: ended,
        }
    }

    fn resolve(&self, path: &str) -> PathBuf {
        if path.is_empty() {
            self.home.clone()
        } else {
            self.home.join(path)
        }
    }

    fn insert(&mut self, handle: OpenHandle) -> String {
        self.next_handle += 1;
        let name = format!("h{}", self.next_handle);
        self.handles.insert(name.clone(), handle);
        name
    }

    fn file(&self, handle: &str) -> Result<Arc<fs::File>, StatusReply> {
        match self.handles.get(handle) {
            Some(OpenHandle::File(f)) => Ok(Arc::clone(f)),
            Some(OpenHandle::Dir(_)) => Err(StatusCode::Failure.with_message("not a file handle")),
            None => Err(StatusCode::Failure.with_message("invalid handle")),
        }
    }
}

impl russh_sftp::server::Handler for FsSftp {
    type Error = StatusReply;

    fn unimplemented(&self) -> Self::Error {
        StatusCode::OpUnsupported.into()
    }

    async fn init(
        &mut self,
        version: u32,
        _extensions: HashMap<String, String>,
    ) -> Result<Version, Self::Error> {
        tracing::debug!(version, "sftp session started");
        Ok(Version::new())
    }

    async fn open(
        &mut self,
        id: u32,
        filename: String,
        pflags: OpenFlags,
        attrs: FileAttributes,
    ) -> Result<Handle, Self::Error> {
        let path = self.resolve(&filename);
        let mut opts: fs::OpenOptions = pflags.into();
        opts.mode(attrs.permissions.map_or(0o666, |m| m & 0o7777));
        let file = blocking(move || opts.open(path)).await?;
        let handle = self.insert(OpenHandle::File(Arc::new(file)));
        Ok(Handle { id, handle })
    }

    async fn close(&mut self, id: u32, handle: String) -> Result<Status, Self::Error> {
        match self.handles.remove(&handle) {
            Some(_) => Ok(ok(id)),
            None => Err(StatusCode::Failure.with_message("invalid handle")),
        }
    }

    async fn read(
        &mut self,
        id: u32,
        handle: String,
        offset: u64,
        len: u32,
    ) -> Result<Data, Self::Error> {
        let file = self.file(&handle)?;
        let len = usize::try_from(len.min(MAX_READ)).unwrap_or(0);
        let data = blocking(move || {
            let mut buf = vec![0u8; len];
            let mut filled = 0;
            while filled < len {
                let n = file.read_at(&mut buf[filled..], offset + filled as u64)?;
                if n == 0 {
                    break;
                }
                filled += n;
            }
            buf.truncate(filled);
            Ok(buf)
        })
        .await?;
        if data.is_empty() && len > 0 {
            return Err(StatusCode::Eof.into());
        }
        Ok(Data { id, data })
    }

    async fn write(
        &mut self,
        id: u32,
        handle: String,
        offset: u64,
        data: Vec<u8>,
    ) -> Result<Status, Self::Error> {
        let file = self.file(&handle)?;
        blocking(move || file.write_all_at(&data, offset)).await?;
        Ok(ok(id))
    }

    async fn lstat(&mut self, id: u32, path: String) -> Result<Attrs, Self::Error> {
        let path = self.resolve(&path);
        let meta = blocking(move || fs::symlink_metadata(path)).await?;
        Ok(Attrs {
            id,
            attrs: attrs_of(&meta),
        })
    }

    async fn stat(&mut self, id: u32, path: String) -> Result<Attrs, Self::Error> {
        let path = self.resolve(&path);
        let meta = blocking(move || fs::metadata(path)).await?;
        Ok(Attrs {
            id,
            attrs: attrs_of(&meta),
        })
    }

    async fn fstat(&mut self, id: u32, handle: String) -> Result<Attrs, Self::Error> {
        let file = self.file(&handle)?;
        let meta = blocking(move || file.metadata()).await?;
        Ok(Attrs {
            id,
            attrs: attrs_of(&meta),
        })
    }

    async fn setstat(
        &mut self,
        id: u32,
        path: String,
        attrs: FileAttributes,
    ) -> Result<Status, Self::Error> {
        let path = self.resolve(&path);
        blocking(move || apply_attrs(&path, None, &attrs)).await?;
        Ok(ok(id))
    }

    async fn fsetstat(
        &mut self,
        id: u32,
        handle: String,
        attrs: FileAttributes,
    ) -> Result<Status, Self::Error> {
        let file = self.file(&handle)?;
        // chown needs a path; fchown is not in std, so the path-less variant skips it.
        let attrs = FileAttributes {
            uid: None,
            gid: None,
            ..attrs
        };
        blocking(move || apply_attrs(Path::new(""), Some(&file), &attrs)).await?;
        Ok(ok(id))
    }

    async fn opendir(&mut self, id: u32, path: String) -> Result<Handle, Self::Error> {
        let path = self.resolve(&path);
        let entries = blocking(move || {
            let mut out = Vec::new();
            for entry in fs::read_dir(&path)? {
                let entry = entry?;
                let name = entry.file_name().to_string_lossy().into_owned();
                let attrs = match entry.path().symlink_metadata() {
                    Ok(m) => attrs_of(&m),
                    Err(_) => FileAttributes::empty(),
                };
                out.push(File::new(name, attrs));
            }
            out.sort_by(|a, b| a.filename.cmp(&b.filename));
            out.reverse(); // popped from the back in order
            Ok(out)
        })
        .await?;
        let handle = self.insert(OpenHandle::Dir(entries));
        Ok(Handle { id, handle })
    }

    async fn readdir(&mut self, id: u32, handle: String) -> Result<Name, Self::Error> {
        match self.handles.get_mut(&handle) {
            Some(OpenHandle::Dir(entries)) => {
                if entries.is_empty() {
                    return Err(StatusCode::Eof.into());
                }
                let take = entries.len().min(DIR_BATCH);
                let files = entries
                    .split_off(entries.len() - take)
                    .into_iter()
                    .rev()
                    .collect();
                Ok(Name { id, files })
            }
            Some(OpenHandle::File(_)) => {
                Err(StatusCode::Failure.with_message("not a directory handle"))
            }
            None => Err(StatusCode::Failure.with_message("invalid handle")),
        }
    }

    async fn remove(&mut self, id: u32, filename: String) -> Result<Status, Self::Error> {
        let path = self.resolve(&filename);
        blocking(move || fs::remove_file(path)).await?;
        Ok(ok(id))
    }

    async fn mkdir(
        &mut self,
        id: u32,
        path: String,
        attrs: FileAttributes,
    ) -> Result<Status, Self::Error> {
        let path = self.resolve(&path);
        let mode = attrs.permissions.map_or(0o777, |m| m & 0o7777);
        blocking(move || {
            use std::os::unix::fs::DirBuilderExt;
            fs::DirBuilder::new().mode(mode).create(path)
        })
        .await?;
        Ok(ok(id))
    }

    async fn rmdir(&mut self, id: u32, path: String) -> Result<Status, Self::Error> {
        let path = self.resolve(&path);
        blocking(move || fs::remove_dir(path)).await?;
        Ok(ok(id))
    }

    async fn realpath(&mut self, id: u32, path: String) -> Result<Name, Self::Error> {
        let path = self.resolve(&path);
        let real =
            blocking(move || Ok(fs::canonicalize(&path).unwrap_or_else(|_| normalize(&path))))
                .await?;
        Ok(Name {
            id,
            files: vec![File::dummy(real.to_string_lossy())],
        })
    }

    async fn rename(
        &mut self,
        id: u32,
        oldpath: String,
        newpath: String,
    ) -> Result<Status, Self::Error> {
        let from = self.resolve(&oldpath);
        let to = self.resolve(&newpath);
        blocking(move || fs::rename(from, to)).await?;
        Ok(ok(id))
    }

    async fn readlink(&mut self, id: u32, path: String) -> Result<Name, Self::Error> {
        let path = self.resolve(&path);
        let target = blocking(move || fs::read_link(path)).await?;
        Ok(Name {
            id,
            files: vec![File::dummy(target.to_string_lossy())],
        })
    }

    async fn symlink(
        &mut self,
        id: u32,
        linkpath: String,
        targetpath: String,
    ) -> Result<Status, Self::Error> {
        // OpenSSH sends (target, link) in that order, the reverse of the draft; follow
        // OpenSSH, which is the client that matters.
        let target = PathBuf::from(linkpath);
        let link = self.resolve(&targetpath);
        blocking(move || std::os::unix::fs::symlink(target, link)).await?;
        Ok(ok(id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_handles_dots() {
        assert_eq!(
            normalize(Path::new("/a/b/../c/./d")),
            PathBuf::from("/a/c/d")
        );
        assert_eq!(normalize(Path::new("/../x")), PathBuf::from("/x"));
    }
}
