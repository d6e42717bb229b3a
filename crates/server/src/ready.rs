//! The readiness file (`--ready-file`): [`tether_proto::ready::Ready`] as JSON, written
//! once every listener is bound, so scripts and tests learn the bound addresses without
//! parsing the banner. It is written to a temporary file beside the target and renamed
//! over it, so a reader never sees half of it.

use std::path::Path;

use tether_proto::ready::Ready;

use crate::Server;

/// The facts of a built server.
pub fn of(server: &Server) -> Ready {
    Ready {
        url: server.access_url().to_string(),
        http_address: server.http_address(),
        tls_address: server.tls_address(),
        stun_address: server.stun_address(),
        prometheus_address: server.prometheus_address(),
        data_dir: server.data_dir().to_path_buf(),
        pid: std::process::id(),
        version: env!("CARGO_PKG_VERSION").to_string(),
    }
}

/// Writes `ready` as JSON to `path` atomically (a temporary file beside it, renamed).
pub fn write(ready: &Ready, path: &Path) -> Result<(), String> {
    let fail = |e: std::io::Error| {
        format!(
            "could not write the ready file {} (--ready-file): {e}",
            path.display()
        )
    };
    let mut json = serde_json::to_vec_pretty(ready)
        .map_err(|e| format!("could not encode the ready file: {e}"))?;
    json.push(b'\n');
    let name = path
        .file_name()
        .ok_or_else(|| format!("--ready-file {} names no file", path.display()))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".{}.tmp", std::process::id()));
    let tmp = path.with_file_name(tmp_name);
    std::fs::write(&tmp, &json).map_err(fail)?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        fail(e)
    })
}

/// Removes a ready file left by an earlier run, so nobody mistakes it for this one.
pub fn remove_stale(path: &Path) -> Result<(), String> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(format!(
            "could not remove the old ready file {} (--ready-file): {e}",
            path.display()
        )),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn sample(dir: &Path) -> Ready {
        Ready {
            url: "http://127.0.0.1:4000/".into(),
            http_address: "127.0.0.1:4000".parse().unwrap(),
            tls_address: None,
            stun_address: Some("127.0.0.1:4001".parse().unwrap()),
            prometheus_address: Some("127.0.0.1:9100".parse().unwrap()),
            data_dir: dir.to_path_buf(),
            pid: 7,
            version: "0.1.0".into(),
        }
    }

    #[test]
    fn written_atomically_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ready.json");
        std::fs::write(&path, "stale").unwrap();
        remove_stale(&path).unwrap();
        assert!(!path.exists());
        remove_stale(&path).unwrap();
        let ready = sample(dir.path());
        write(&ready, &path).unwrap();
        let back: Ready = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(back, ready);
        // Only the file itself is left: the temporary one was renamed over it.
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, [std::ffi::OsString::from("ready.json")]);
    }

    #[test]
    fn an_unwritable_path_is_one_sentence() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing").join("ready.json");
        let err = write(&sample(dir.path()), &path).unwrap_err();
        assert!(err.contains("--ready-file"), "{err}");
        assert!(err.contains("could not write the ready file"), "{err}");
    }
}
