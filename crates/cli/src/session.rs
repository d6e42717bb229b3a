//! Login state under the config dir (`~/.config/tether` or `--global-config`): the
//! server URL in `url` and the session token in `session` (mode 0600).

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use url::Url;

/// The config directory and what it holds.
pub struct ConfigDir {
    /// The directory.
    pub path: PathBuf,
}

impl ConfigDir {
    /// `--global-config`, else `~/.config/tether`.
    pub fn new(explicit: Option<PathBuf>) -> Self {
        let path = explicit.unwrap_or_else(|| {
            dirs::config_dir()
                .unwrap_or_else(|| PathBuf::from("."))
                .join("tether")
        });
        Self { path }
    }

    fn read(&self, name: &str) -> Result<Option<String>> {
        match fs::read_to_string(self.path.join(name)) {
            Ok(s) => Ok(Some(s.trim().to_string()).filter(|s| !s.is_empty())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => {
                Err(e).with_context(|| format!("could not read {}", self.path.join(name).display()))
            }
        }
    }

    /// The stored server URL.
    pub fn url(&self) -> Result<Option<Url>> {
        match self.read("url")? {
            Some(s) => Ok(Some(Url::parse(&s).with_context(|| {
                format!(
                    "{} holds an invalid URL; run `tether login <url>` again",
                    self.path.join("url").display()
                )
            })?)),
            None => Ok(None),
        }
    }

    /// The stored session token.
    pub fn session(&self) -> Result<Option<String>> {
        self.read("session")
    }

    /// Stores URL and token; the token file is created with mode 0600.
    pub fn save(&self, url: &Url, token: &str) -> Result<()> {
        create_private_dir(&self.path)?;
        write_private(&self.path.join("url"), url.as_str().as_bytes())?;
        write_private(&self.path.join("session"), token.as_bytes())?;
        Ok(())
    }

    /// Forgets the token (keeps the URL for the next login).
    pub fn clear_session(&self) -> Result<bool> {
        match fs::remove_file(self.path.join("session")) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e).with_context(|| {
                format!("could not remove {}", self.path.join("session").display())
            }),
        }
    }
}

fn create_private_dir(path: &Path) -> Result<()> {
    let mut b = fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
    b.create(path)
        .with_context(|| format!("could not create {}", path.display()))
}

fn write_private(path: &Path, data: &[u8]) -> Result<()> {
    // Write a sibling and rename, so a full disk never leaves a truncated token behind.
    let tmp = path.with_extension("tmp");
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts
        .open(&tmp)
        .with_context(|| format!("could not write {}", tmp.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        f.set_permissions(fs::Permissions::from_mode(0o600))?;
    }
    f.write_all(data)
        .and_then(|()| f.sync_all())
        .with_context(|| format!("could not write {}", tmp.display()))?;
    fs::rename(&tmp, path).with_context(|| format!("could not write {}", path.display()))?;
    Ok(())
}

/// Fails with the standard "not logged in" sentence.
pub fn not_logged_in<T>() -> Result<T> {
    bail!(
        "you are not logged in; run `tether login <url>` first (or set TETHER_URL and TETHER_SESSION_TOKEN)"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn save_and_read_back_private() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = ConfigDir::new(Some(dir.path().join("cfg")));
        assert!(cfg.session().expect("read").is_none());
        let url = Url::parse("http://127.0.0.1:3000/").expect("url");
        cfg.save(&url, "secret-token").expect("save");
        assert_eq!(cfg.url().expect("url"), Some(url));
        assert_eq!(
            cfg.session().expect("session").as_deref(),
            Some("secret-token")
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(cfg.path.join("session"))
                .expect("meta")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert!(cfg.clear_session().expect("clear"));
        assert!(cfg.session().expect("session").is_none());
    }
}
