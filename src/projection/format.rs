//! Which projection format a data directory uses, and where that is recorded.
//!
//! A directory's projections are in one format, chosen at its first writable open and
//! recorded in `projection-format.json` at its root; only a rebuild
//! ([`crate::projection::Projector::rebuild_as`], the CLI's `rebuild-projections
//! --projections F`) changes it. The file is the engine's own, written atomically and
//! durably (temporary file, fsync, rename, fsync of the directory):
//!
//! ```json
//! {"format":"session-engine-projection-format","version":1,"projections":"amplihack"}
//! ```
//!
//! | field         | type    | meaning |
//! | ------------- | ------- | ------- |
//! | `format`      | string  | always `session-engine-projection-format` |
//! | `version`     | integer | 1 |
//! | `projections` | string  | `seed` or `amplihack` ([`ProjectionFormat`]) |
//!
//! Opening with a format other than the recorded one is
//! [`Error::ProjectionFormatMismatch`] and changes nothing; opening without asking for one
//! uses the recorded one. A directory with projections but no record (written before the
//! format was recorded) is in the `seed` format.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::storage::{FileKind, Storage, write_atomic};

/// The name of the record under the data directory.
pub const FORMAT_FILE: &str = "projection-format.json";

const RECORD_FORMAT: &str = "session-engine-projection-format";
const RECORD_VERSION: u32 = 1;

/// The formats the projections can be written in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProjectionFormat {
    /// Seed 001's documented files (`sessions/session_<id>.json`, ...), the default.
    #[default]
    Seed,
    /// The files the real amplihack toolkit reads and writes (`sessions/<id>.json`, ...;
    /// see [`crate::projection::schema::amplihack`]).
    Amplihack,
}

impl ProjectionFormat {
    /// Every format.
    pub const ALL: [ProjectionFormat; 2] = [ProjectionFormat::Seed, ProjectionFormat::Amplihack];

    /// The name on the command line and in the record.
    pub fn as_str(self) -> &'static str {
        match self {
            ProjectionFormat::Seed => "seed",
            ProjectionFormat::Amplihack => "amplihack",
        }
    }
}

impl fmt::Display for ProjectionFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ProjectionFormat {
    type Err = Error;

    fn from_str(s: &str) -> Result<ProjectionFormat> {
        ProjectionFormat::ALL
            .into_iter()
            .find(|f| f.as_str() == s)
            .ok_or_else(|| {
                Error::invalid(
                    "projection format",
                    format!("{s:?} is not one of \"seed\", \"amplihack\""),
                )
            })
    }
}

#[derive(Serialize, Deserialize)]
struct Record {
    format: String,
    version: u32,
    projections: String,
}

/// The path of the record under `root`.
pub fn format_file(root: &Path) -> PathBuf {
    root.join(FORMAT_FILE)
}

fn damaged(path: &Path, reason: impl Into<String>) -> Error {
    Error::corruption(path, 0, reason)
}

/// The format recorded in the data directory at `root`, `None` when none is.
pub fn recorded(storage: &dyn Storage, root: &Path) -> Result<Option<ProjectionFormat>> {
    let path = format_file(root);
    match storage
        .kind(&path)
        .map_err(|e| Error::io("inspect the projection format file", &path, e))?
    {
        None => return Ok(None),
        Some(FileKind::File) => {}
        Some(other) => {
            return Err(damaged(
                &path,
                format!("the projection format file is a {other}, not a regular file"),
            ));
        }
    }
    let bytes = storage
        .read(&path)
        .map_err(|e| Error::io("read the projection format file", &path, e))?;
    let r: Record = serde_json::from_slice(&bytes)
        .map_err(|e| damaged(&path, format!("not a projection format record: {e}")))?;
    if r.format != RECORD_FORMAT {
        return Err(damaged(
            &path,
            format!(
                "its format marker is {:?}, expected {RECORD_FORMAT:?}",
                r.format
            ),
        ));
    }
    if r.version != RECORD_VERSION {
        return Err(Error::UnsupportedVersion {
            file: path,
            found: r.version,
            supported: RECORD_VERSION,
        });
    }
    r.projections.parse().map(Some).map_err(|_| {
        damaged(
            &path,
            format!("unknown projection format {:?}", r.projections),
        )
    })
}

/// Records `format` in the data directory at `root`, atomically and durably.
pub fn record(storage: &dyn Storage, root: &Path, format: ProjectionFormat) -> Result<()> {
    let path = format_file(root);
    if storage.kind(&path).ok().flatten() == Some(FileKind::Symlink) {
        return Err(damaged(
            &path,
            "the projection format file is a symbolic link",
        ));
    }
    let mut bytes = serde_json::to_vec(&Record {
        format: RECORD_FORMAT.into(),
        version: RECORD_VERSION,
        projections: format.as_str().into(),
    })
    .map_err(|e| Error::invalid("projection format", e.to_string()))?;
    bytes.push(b'\n');
    write_atomic(storage, &path, &bytes)
        .map_err(|e| Error::io("write the projection format file", &path, e))
}

/// The format of the data directory at `root` for a writable open that asks for
/// `requested` (`None`: whatever is recorded). With nothing recorded it records the
/// requested format (`seed` when none is), unless the directory already has projections
/// (`marker` exists): those were written in the `seed` format before formats were
/// recorded, so `seed` is recorded. A request for another format than the directory's is
/// [`Error::ProjectionFormatMismatch`], and nothing is written.
pub fn resolve(
    storage: &dyn Storage,
    root: &Path,
    marker: &Path,
    requested: Option<ProjectionFormat>,
) -> Result<ProjectionFormat> {
    let (format, known) = decide(storage, root, marker, requested)?;
    if !known {
        record(storage, root, format)?;
    }
    Ok(format)
}

/// [`resolve`] without recording: the format, and whether the directory records it
/// already (when not, the caller records it once the open is sure to go on).
pub fn decide(
    storage: &dyn Storage,
    root: &Path,
    marker: &Path,
    requested: Option<ProjectionFormat>,
) -> Result<(ProjectionFormat, bool)> {
    let (format, known) = match recorded(storage, root)? {
        Some(f) => (f, true),
        None if storage.exists(marker).unwrap_or(false) => (ProjectionFormat::Seed, false),
        None => (requested.unwrap_or_default(), false),
    };
    if let Some(r) = requested
        && r != format
    {
        return Err(Error::ProjectionFormatMismatch {
            dir: root.to_path_buf(),
            recorded: format.as_str(),
            requested: r.as_str(),
        });
    }
    Ok((format, known))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::MemStorage;

    #[test]
    fn the_first_open_records_the_format_and_later_ones_must_agree() {
        let m = MemStorage::new();
        let root = Path::new("d");
        m.create_dir_all(root).unwrap();
        let marker = root.join("projections.json");
        assert_eq!(recorded(&m, root).unwrap(), None);
        assert_eq!(
            resolve(&m, root, &marker, Some(ProjectionFormat::Amplihack)).unwrap(),
            ProjectionFormat::Amplihack
        );
        assert_eq!(
            resolve(&m, root, &marker, None).unwrap(),
            ProjectionFormat::Amplihack
        );
        let before = m.read(&format_file(root)).unwrap().to_vec();
        match resolve(&m, root, &marker, Some(ProjectionFormat::Seed)) {
            Err(Error::ProjectionFormatMismatch {
                recorded,
                requested,
                ..
            }) => assert_eq!((recorded, requested), ("amplihack", "seed")),
            other => panic!("{other:?}"),
        }
        assert_eq!(m.read(&format_file(root)).unwrap().to_vec(), before);
    }

    #[test]
    fn a_directory_with_older_projections_is_seed_and_garbage_is_refused() {
        let m = MemStorage::new();
        let root = Path::new("d");
        m.create_dir_all(root).unwrap();
        let marker = root.join("projections.json");
        write_atomic(&m, &marker, b"{}").unwrap();
        assert!(matches!(
            resolve(&m, root, &marker, Some(ProjectionFormat::Amplihack)),
            Err(Error::ProjectionFormatMismatch { .. })
        ));
        assert_eq!(
            recorded(&m, root).unwrap(),
            None,
            "a refusal wrote the record"
        );
        assert_eq!(
            resolve(&m, root, &marker, None).unwrap(),
            ProjectionFormat::Seed
        );
        write_atomic(&m, &format_file(root), b"{\"projections\":\"seed\"}").unwrap();
        assert!(matches!(recorded(&m, root), Err(Error::Corruption { .. })));
    }
}
