//! The recycle report: one JSON file written before exit, atomically (temp + rename),
//! mode 0600, created with O_EXCL|O_NOFOLLOW so a planted symlink is never followed.

use std::path::{Path, PathBuf};

use serde_json::Value;

/// `self-recycle-<pid>-<start ms>.json` inside `dir`: unique per process lifetime.
pub fn report_path(dir: &str, started_epoch_ms: u64) -> PathBuf {
    Path::new(dir).join(format!(
        "self-recycle-{}-{started_epoch_ms}.json",
        std::process::id()
    ))
}

/// Writes `report` as pretty JSON to `path` (see `write_bytes_atomically`).
pub fn write_atomically(path: &Path, report: &Value) -> Result<(), String> {
    let mut body = serde_json::to_vec_pretty(report).map_err(|e| e.to_string())?;
    body.push(b'\n');
    write_bytes_atomically(path, &body)
}

#[cfg(not(unix))]
pub fn write_bytes_atomically(path: &Path, _body: &[u8]) -> Result<(), String> {
    Err(format!(
        "0600 atomic files are not supported on this platform ({})",
        path.display()
    ))
}

#[cfg(not(unix))]
pub fn private_dir(dir: &Path) -> Result<(), String> {
    Err(format!(
        "private directories need unix permissions ({})",
        dir.display()
    ))
}

/// Makes sure `dir` is a directory this process may trust: created 0700 if missing; never
/// a symlink (an attacker's link would send our files elsewhere); owned by this user; not
/// writable by group or others (anyone else could plant files in it).
#[cfg(unix)]
pub fn private_dir(dir: &Path) -> Result<(), String> {
    use std::fs;
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};

    if fs::symlink_metadata(dir).is_err() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    let meta =
        fs::symlink_metadata(dir).map_err(|e| format!("cannot stat {}: {e}", dir.display()))?;
    if meta.file_type().is_symlink() {
        return Err(format!(
            "{} is a symlink; it is not followed",
            dir.display()
        ));
    }
    if !meta.is_dir() {
        return Err(format!("{} is not a directory", dir.display()));
    }
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    if meta.uid() != me {
        return Err(format!(
            "{} belongs to uid {}, not to this process's uid {me}",
            dir.display(),
            meta.uid()
        ));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(format!(
            "{} is writable by group or others (mode {:o}); use mode 0700",
            dir.display(),
            meta.mode() & 0o777
        ));
    }
    Ok(())
}

/// Writes `body` to `path`, 0600, through a temp file and a rename, in a private directory
/// (see `private_dir`). A symlink already at `path` is replaced, never followed.
#[cfg(unix)]
pub fn write_bytes_atomically(path: &Path, body: &[u8]) -> Result<(), String> {
    use std::fs::{self, OpenOptions};
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;

    let dir = path
        .parent()
        .ok_or_else(|| format!("{} has no parent directory", path.display()))?;
    private_dir(dir)?;
    let file_name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| format!("{} has no file name", path.display()))?;
    let temporary = dir.join(format!(".{file_name}.{}.tmp", std::process::id()));
    let written = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&temporary)
        .and_then(|mut file| {
            file.write_all(body)?;
            file.sync_all()
        });
    if let Err(error) = written {
        let _ = fs::remove_file(&temporary);
        return Err(format!("cannot write {}: {error}", temporary.display()));
    }
    // rename() replaces whatever is at `path`, a symlink included, without following it.
    fs::rename(&temporary, path).map_err(|e| {
        let _ = fs::remove_file(&temporary);
        format!("cannot rename into {}: {e}", path.display())
    })
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use serde_json::json;
    use std::fs;
    use std::os::unix::fs::{symlink, PermissionsExt};

    fn scratch(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("self-recycle-report-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn writes_0600_json() {
        let dir = scratch("mode");
        let path = report_path(dir.to_str().expect("utf8"), 1);
        write_atomically(&path, &json!({ "reason": "rss" })).expect("written");
        let text = fs::read_to_string(&path).expect("readable");
        let parsed: Value = serde_json::from_str(&text).expect("json");
        assert_eq!(parsed["reason"], "rss");
        let mode = fs::metadata(&path).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_symlinked_or_shared_directory_is_refused() {
        let dir = scratch("dirs");
        fs::create_dir_all(&dir).expect("dir");
        let elsewhere = dir.join("elsewhere");
        fs::create_dir_all(&elsewhere).expect("target");
        let link = dir.join("link");
        symlink(&elsewhere, &link).expect("symlink");
        let error = write_atomically(&link.join("r.json"), &json!({})).expect_err("symlink");
        assert!(error.contains("is a symlink"), "{error}");
        assert!(
            fs::read_dir(&elsewhere).expect("list").next().is_none(),
            "nothing written through it"
        );
        let open = dir.join("open");
        fs::create_dir_all(&open).expect("dir");
        fs::set_permissions(&open, fs::Permissions::from_mode(0o777)).expect("chmod");
        let error = write_atomically(&open.join("r.json"), &json!({})).expect_err("shared");
        assert!(error.contains("writable by group or others"), "{error}");
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_planted_symlink_is_replaced_not_followed() {
        let dir = scratch("symlink");
        fs::create_dir_all(&dir).expect("dir");
        let victim = dir.join("victim");
        fs::write(&victim, "untouched").expect("victim");
        let path = report_path(dir.to_str().expect("utf8"), 2);
        symlink(&victim, &path).expect("symlink");
        write_atomically(&path, &json!({ "ok": true })).expect("written");
        assert_eq!(fs::read_to_string(&victim).expect("victim"), "untouched");
        assert!(!fs::symlink_metadata(&path)
            .expect("stat")
            .file_type()
            .is_symlink());
        let _ = fs::remove_dir_all(&dir);
    }
}
