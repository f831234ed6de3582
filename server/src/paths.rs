//! Path validation for seed 002's `validate-path`, `validate-paths` and `navigate`: read
//! only, it never writes, creates or opens anything but a `.git` file and a `HEAD`
//! (regular files, never through a link, at most 4 KiB).
//!
//! The rules, in order ([`check`]):
//!
//! 1. The path is absolute (a relative one would be relative to the server's own working
//!    directory, which means nothing to a client) and has no `..` component (traversal is
//!    refused, not resolved). Either refusal is made before the file system is looked at.
//! 2. It is resolved with `realpath(3)`: every symbolic link is followed, and every later
//!    check is made on that canonical target, which the report names
//!    (`canonical_path`), so a link never leads somewhere the report does not say.
//! 3. It exists and is a directory.
//! 4. Neither the path as given nor its canonical target is a restricted system path
//!    ([`RESTRICTED`]) or inside the engine's data directory.
//! 5. Permissions are those of the server's effective user (`faccessat(AT_EACCESS)`;
//!    root passes them all): readable and searchable, and writable, are errors or
//!    warnings as the caller [`Require`]s.
//! 6. Git: the nearest enclosing directory holding `.git` (a folder, or a worktree's
//!    `gitdir:` file), with the branch `HEAD` names. Free space: `statvfs(3)` of the
//!    target; below [`LOW_SPACE_BYTES`] is a warning.

use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};

use nix::sys::statvfs::statvfs;
use nix::unistd::{AccessFlags, faccessat};
use serde::Serialize;

use crate::api::ApiError;

/// The longest path accepted, in bytes (`PATH_MAX`).
pub const MAX_PATH_BYTES: usize = 4096;

/// Free space below which a warning is given.
pub const LOW_SPACE_BYTES: u64 = 1 << 30;

/// System folders a session may not work in: the folder itself and everything under it,
/// except [`ALLOWED_UNDER_RESTRICTED`]. `/` itself is restricted too (but not what is
/// under it). Seed 002 names no list ("prevents access to system directories"); this is
/// the Linux file system hierarchy's system folders and macOS's.
pub const RESTRICTED: &[&str] = &[
    "/bin",
    "/boot",
    "/dev",
    "/etc",
    "/lib",
    "/lib32",
    "/lib64",
    "/libx32",
    "/proc",
    "/root",
    "/run",
    "/sbin",
    "/sys",
    "/usr",
    "/var",
    "/System",
    "/Library",
    "/private/etc",
    "/private/var",
];

/// Temporary folders under a restricted one that stay usable.
pub const ALLOWED_UNDER_RESTRICTED: &[&str] = &[
    "/var/tmp",
    "/var/folders",
    "/private/var/tmp",
    "/private/var/folders",
];

/// One reason a path is refused, or a warning.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Problem {
    /// A machine-readable code (`not_absolute`, `traversal`, `not_found`,
    /// `not_directory`, `restricted`, `data_directory`, `not_readable`, `not_writable`,
    /// `unresolvable`, `not_utf8`; warnings: `symlink`, `low_disk_space`, and
    /// `not_readable` or `not_writable` when that permission is not [`Require`]d).
    pub code: &'static str,
    /// What it means.
    pub message: String,
}

fn problem(code: &'static str, message: impl Into<String>) -> Problem {
    Problem {
        code,
        message: message.into(),
    }
}

/// The server's effective permissions on the target.
#[derive(Clone, Debug, Serialize)]
pub struct Permissions {
    /// `R_OK`.
    pub readable: bool,
    /// `W_OK`.
    pub writable: bool,
    /// `X_OK` (for a directory: may be entered).
    pub executable: bool,
}

/// The git repository the target is in.
#[derive(Clone, Debug, Serialize)]
pub struct Git {
    /// Whether one was found.
    pub is_repository: bool,
    /// The folder holding `.git`.
    pub root: Option<String>,
    /// The repository's git directory, canonical (a worktree's is elsewhere).
    pub git_dir: Option<String>,
    /// The branch `HEAD` points at, if it names one.
    pub branch: Option<String>,
    /// The commit `HEAD` holds when it names no branch (detached).
    pub head: Option<String>,
}

/// Free space of the file system holding the target.
#[derive(Clone, Debug, Serialize)]
pub struct Disk {
    /// Bytes an unprivileged user may still write (`f_bavail × f_frsize`).
    pub available_bytes: u64,
    /// The file system's size (`f_blocks × f_frsize`).
    pub total_bytes: u64,
    /// `available_bytes` below [`LOW_SPACE_BYTES`].
    pub low_space: bool,
}

/// What [`check`] found.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// The path as given.
    pub path: String,
    /// Its canonical target (every link followed), when it resolves.
    pub canonical_path: Option<String>,
    /// No error.
    pub valid: bool,
    /// It resolves to something.
    pub exists: bool,
    /// Its target is a directory.
    pub is_directory: bool,
    /// The path given is itself a symbolic link.
    pub is_symlink: bool,
    /// It or its target is a restricted system path or inside the data directory.
    pub restricted: bool,
    /// The server's permissions on the target.
    pub permissions: Option<Permissions>,
    /// The git repository around the target.
    pub git: Option<Git>,
    /// Free space where the target is.
    pub disk: Option<Disk>,
    /// Why it is not valid.
    pub errors: Vec<Problem>,
    /// What a client should know.
    pub warnings: Vec<Problem>,
}

/// Which missing permissions are errors (the others are warnings).
#[derive(Clone, Copy, Debug, Default)]
pub struct Require {
    /// Readable and searchable.
    pub read: bool,
    /// Writable.
    pub write: bool,
}

/// A path from a request: non-empty, no NUL byte, at most [`MAX_PATH_BYTES`]; else 400.
pub fn parse(path: &str) -> Result<&Path, ApiError> {
    if path.is_empty() {
        return Err(ApiError::bad_request("the path is empty"));
    }
    if path.len() > MAX_PATH_BYTES {
        return Err(ApiError::bad_request(format!(
            "the path is longer than {MAX_PATH_BYTES} bytes"
        )));
    }
    if path.contains('\0') {
        return Err(ApiError::bad_request("the path holds a NUL byte"));
    }
    Ok(Path::new(path))
}

/// Whether `p` (absolute, without `..`) is a restricted system path.
pub fn is_restricted(p: &Path) -> bool {
    if p == Path::new("/") {
        return true;
    }
    let under = |roots: &[&str]| roots.iter().any(|r| p.starts_with(r));
    under(RESTRICTED) && !under(ALLOWED_UNDER_RESTRICTED)
}

/// Checks `path` (already through [`parse`]) as the module documentation says.
/// `data_dir` is the engine's data directory, canonical if it resolves.
pub fn check(path: &str, data_dir: &Path, require: Require) -> Report {
    let given = Path::new(path);
    let mut r = Report {
        path: path.to_owned(),
        canonical_path: None,
        valid: false,
        exists: false,
        is_directory: false,
        is_symlink: false,
        restricted: false,
        permissions: None,
        git: None,
        disk: None,
        errors: Vec::new(),
        warnings: Vec::new(),
    };
    if !given.is_absolute() {
        r.errors
            .push(problem("not_absolute", "the path must be absolute"));
        return r;
    }
    if given.components().any(|c| c == Component::ParentDir) {
        r.errors.push(problem(
            "traversal",
            "the path has a `..` component (directory traversal is refused)",
        ));
        return r;
    }
    r.is_symlink = std::fs::symlink_metadata(given).is_ok_and(|m| m.file_type().is_symlink());
    let canonical = match std::fs::canonicalize(given) {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            r.errors
                .push(problem("not_found", "nothing is at this path"));
            return r;
        }
        Err(e) => {
            r.errors.push(problem(
                "unresolvable",
                format!("the path cannot be resolved ({})", e.kind()),
            ));
            return r;
        }
    };
    r.exists = true;
    match canonical.to_str() {
        Some(c) => r.canonical_path = Some(c.to_owned()),
        None => r
            .errors
            .push(problem("not_utf8", "the canonical path is not UTF-8")),
    }
    if r.is_symlink || canonical != given {
        r.warnings.push(problem(
            "symlink",
            "the path resolves elsewhere; every check is made on canonical_path",
        ));
    }
    r.is_directory = std::fs::metadata(&canonical).is_ok_and(|m| m.is_dir());
    if !r.is_directory {
        r.errors
            .push(problem("not_directory", "the path is not a directory"));
    }
    if is_restricted(given) || is_restricted(&canonical) {
        r.restricted = true;
        r.errors.push(problem(
            "restricted",
            "the path is a restricted system directory",
        ));
    }
    if canonical.starts_with(data_dir) {
        // An agent working there could change the engine's own files.
        r.restricted = true;
        r.errors.push(problem(
            "data_directory",
            "the path is inside the engine's data directory",
        ));
    }
    let can = |mode| {
        faccessat(
            nix::fcntl::AT_FDCWD,
            &canonical,
            mode,
            nix::fcntl::AtFlags::AT_EACCESS,
        )
        .is_ok()
    };
    let perms = Permissions {
        readable: can(AccessFlags::R_OK),
        writable: can(AccessFlags::W_OK),
        executable: can(AccessFlags::X_OK),
    };
    let mut permission = |required: bool, p: Problem| {
        if required {
            r.errors.push(p);
        } else {
            r.warnings.push(p);
        }
    };
    if !perms.readable || !perms.executable {
        let p = problem(
            "not_readable",
            "the server may not read or enter this directory",
        );
        permission(require.read, p);
    }
    if !perms.writable {
        let p = problem("not_writable", "the server may not write in this directory");
        permission(require.write, p);
    }
    r.permissions = Some(perms);
    if r.is_directory {
        r.git = Some(git(&canonical));
        if let Ok(s) = statvfs(&canonical) {
            let frsize = widen(s.fragment_size()).max(1);
            let available = widen(s.blocks_available()).saturating_mul(frsize);
            let d = Disk {
                available_bytes: available,
                total_bytes: widen(s.blocks()).saturating_mul(frsize),
                low_space: available < LOW_SPACE_BYTES,
            };
            if d.low_space {
                r.warnings.push(problem(
                    "low_disk_space",
                    format!("{available} bytes free (below {LOW_SPACE_BYTES})"),
                ));
            }
            r.disk = Some(d);
        }
    }
    r.valid = r.errors.is_empty();
    r
}

/// `statvfs` fields are `c_ulong`/`fsblkcnt_t`: 32 or 64 bits by platform.
fn widen<T: Into<u64>>(v: T) -> u64 {
    v.into()
}

/// Reads a small regular file, never through a link: at most 4 KiB, else `None`.
fn read_small(path: &Path) -> Option<String> {
    if !std::fs::symlink_metadata(path).is_ok_and(|m| m.is_file()) {
        return None;
    }
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags((nix::fcntl::OFlag::O_NOFOLLOW | nix::fcntl::OFlag::O_NONBLOCK).bits())
        .open(path)
        .ok()?;
    let mut s = String::new();
    f.take(4096).read_to_string(&mut s).ok()?;
    Some(s)
}

/// The repository around `dir` (canonical): the nearest ancestor holding `.git`.
fn git(dir: &Path) -> Git {
    let none = Git {
        is_repository: false,
        root: None,
        git_dir: None,
        branch: None,
        head: None,
    };
    for d in dir.ancestors() {
        let dot = d.join(".git");
        let Ok(meta) = std::fs::symlink_metadata(&dot) else {
            continue;
        };
        let git_dir: Option<PathBuf> = if meta.is_dir() {
            Some(dot)
        } else if meta.is_file() {
            read_small(&dot)
                .and_then(|s| s.strip_prefix("gitdir:").map(|g| d.join(g.trim())))
                .filter(|g| g.is_dir())
        } else {
            None
        };
        let Some(git_dir) = git_dir.and_then(|g| std::fs::canonicalize(g).ok()) else {
            continue;
        };
        let head = read_small(&git_dir.join("HEAD")).unwrap_or_default();
        let head = head.trim();
        let (branch, detached) = match head.strip_prefix("ref:") {
            Some(r) => (
                Some(r.trim().trim_start_matches("refs/heads/").to_owned()),
                None,
            ),
            None if !head.is_empty() && head.bytes().all(|b| b.is_ascii_hexdigit()) => {
                (None, Some(head.to_owned()))
            }
            None => (None, None),
        };
        return Git {
            is_repository: true,
            root: d.to_str().map(str::to_owned),
            git_dir: git_dir.to_str().map(str::to_owned),
            branch,
            head: detached,
        };
    }
    none
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restricted_paths() {
        for p in [
            "/",
            "/etc",
            "/etc/ssh",
            "/usr/local/src",
            "/var/lib",
            "/proc/1",
        ] {
            assert!(is_restricted(Path::new(p)), "{p}");
        }
        for p in [
            "/tmp",
            "/home/me",
            "/var/tmp/x",
            "/opt/x",
            "/etcetera",
            "/srv",
        ] {
            assert!(!is_restricted(Path::new(p)), "{p}");
        }
    }
}
