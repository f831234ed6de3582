//! What `import PATH` can take over, told apart by what PATH is, and the readers that turn
//! each kind into one command (so an import is all or nothing).
//!
//! * a regular file: an export bundle ([`crate::export`]);
//! * a directory with a `sessions/` folder: an amplihack runtime directory
//!   ([`amplihack`]).
//!
//! A new kind of source is one more [`ImportKind`] variant, a test in [`detect`], and its
//! reader.

pub mod amplihack;

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::storage::{FileKind, Storage};

/// What is at an import path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ImportKind {
    /// An export bundle file (or a file of no kind: the bundle reader then says why it is
    /// not one).
    Bundle,
    /// An amplihack runtime directory (the folder holding `sessions/` and `logs/`,
    /// `.claude/runtime` by default).
    AmplihackRuntime,
}

fn invalid(path: &Path, reason: impl Into<String>) -> Error {
    Error::InvalidImport {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// Tells what `path` holds, changing nothing. The path itself may be a symbolic link (the
/// user named it); what an importer reads inside a directory may not.
pub fn detect(storage: &dyn Storage, path: &Path) -> Result<ImportKind> {
    let io = |e| Error::io("inspect import path", path, e);
    match storage.kind(path).map_err(io)? {
        // The bundle reader says what is missing.
        None => Ok(ImportKind::Bundle),
        Some(FileKind::Dir | FileKind::Symlink) if storage.list_dir(path).is_ok() => {
            if storage.kind(&path.join("sessions")).map_err(io)? == Some(FileKind::Dir) {
                Ok(ImportKind::AmplihackRuntime)
            } else {
                Err(invalid(
                    path,
                    "a directory to import must be an amplihack runtime directory, which \
                     holds a sessions/ folder (amplihack's default is .claude/runtime)",
                ))
            }
        }
        Some(FileKind::Other) => Err(invalid(path, "not a regular file or a directory")),
        Some(_) => Ok(ImportKind::Bundle),
    }
}

/// Whether `a` and `b` name the same directory, compared as absolute paths with `.` and
/// `..` resolved (without reading the file system, so two names of one folder through a
/// symbolic link count as different).
pub fn same_dir(a: &Path, b: &Path) -> bool {
    fn normal(p: &Path) -> Option<PathBuf> {
        let abs = std::path::absolute(p).ok()?;
        let mut out = PathBuf::new();
        for c in abs.components() {
            match c {
                std::path::Component::CurDir => {}
                std::path::Component::ParentDir => {
                    out.pop();
                }
                other => out.push(other),
            }
        }
        Some(out)
    }
    normal(a).is_some_and(|x| normal(b).is_some_and(|y| x == y))
}

/// Adopts the amplihack runtime directory `source` into the data directory `data_dir`,
/// which may be `source` itself (the usual case: amplihack's `.claude/runtime` is the
/// engine's default data directory), and returns the manager, open with projections, and
/// the adopted ids. The projections are in the `amplihack` format unless the directory
/// records (or `options` asks for) another; adopting a directory in place in another
/// format is refused, since amplihack's files would not be the engine's.
///
/// The directory is read and checked before anything is written; then the engine opens
/// without a projector (one starting first would find amplihack's files in its paths),
/// commits the adoption as one event and closes, and reopens with its projector, which
/// takes the adopted files over (see the projector's adoption hook) and writes them back
/// unchanged. Bad input, a format mismatch or a taken id changes nothing in the data
/// directory beyond what opening an engine there creates.
pub fn adopt_amplihack(
    data_dir: &Path,
    options: crate::ManagerOptions,
    source: &Path,
) -> Result<(crate::SessionManager, Vec<crate::SessionId>)> {
    use crate::projection::{ProjectionFormat, ProjectionOptions, ProjectionPaths, format};
    let storage = std::sync::Arc::clone(&options.engine.storage);
    let read = amplihack::read_runtime_dir(&*storage, source)?;
    let requested = options.projections.as_ref().and_then(|p| p.format);
    let recorded = match storage.kind(&format::format_file(data_dir)) {
        Ok(None) => None,
        _ => format::recorded(&*storage, data_dir)?,
    };
    let paths = ProjectionPaths::new(data_dir);
    let has_projections = storage.exists(&paths.marker).unwrap_or(false);
    let format = requested.or(recorded).unwrap_or(if has_projections {
        ProjectionFormat::Seed
    } else {
        ProjectionFormat::Amplihack
    });
    if let Some(r) = recorded.or(has_projections.then_some(ProjectionFormat::Seed))
        && r != format
    {
        return Err(Error::ProjectionFormatMismatch {
            dir: data_dir.to_path_buf(),
            recorded: r.as_str(),
            requested: format.as_str(),
        });
    }
    if same_dir(source, data_dir) && format != ProjectionFormat::Amplihack {
        return Err(invalid(
            source,
            format!(
                "adopting a runtime directory in place needs the amplihack projection format \
                 (this directory's is {format}): its files would stay amplihack's"
            ),
        ));
    }
    let bare = crate::ManagerOptions {
        engine: options.engine.clone(),
        projections: None,
    };
    let manager = crate::SessionManager::open(data_dir, bare)?;
    let committed =
        crate::projection::resolve_format(manager.engine(), Some(format)).and_then(|_| {
            let c = manager
                .engine()
                .execute(crate::Command::AdoptAmplihack(Box::new(read.adoption)))?;
            match c.outcome {
                crate::Outcome::Sessions(ids) => Ok(ids),
                other => Err(Error::Poisoned {
                    cause: format!("internal error: unexpected command outcome {other:?}"),
                }),
            }
        });
    manager.close()?;
    let ids = committed?;
    let projections = ProjectionOptions {
        format: Some(format),
        ..options.projections.unwrap_or_default()
    };
    let manager = crate::SessionManager::open(
        data_dir,
        crate::ManagerOptions {
            engine: options.engine,
            projections: Some(projections),
        },
    )?;
    Ok((manager, ids))
}
