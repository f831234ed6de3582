//! Adoption of files other tools wrote: what `session-engine import PATH` takes, told
//! apart by [`detect`], and the readers that turn each kind into one command (so an
//! import is all or nothing).
//!
//! * an export bundle of this engine (`crate::export`): one session's events;
//! * a seed 003 tracker file, `<agent>_sessions.json`, or a directory of them (seed
//!   003's persistence directory `~/.claude-agent/sessions`, a data directory's
//!   `chains/`): [`seed003`], one chain per file, kept field for field;
//! * a directory with a `sessions/` folder: an amplihack runtime directory
//!   ([`amplihack`]), its sessions, registry and logs kept field for field.
//!
//! Every kind is read without writing anything; a refused input changes nothing. A new
//! kind of source is one more [`ImportKind`] variant, a test in [`detect`], and its reader.

pub mod amplihack;
pub mod seed003;

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::storage::{FileKind, Storage};

/// What is at an import path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ImportKind {
    /// An export bundle (`crate::export`), or a file that is neither kind: the bundle
    /// reader then says why it is not one.
    Bundle,
    /// A seed 003 tracker file.
    ChainFile,
    /// A directory holding seed 003 tracker files (`*_sessions.json`).
    ChainDir,
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

/// Tells what `path` holds, changing nothing. A file is a tracker file when its top-level
/// object has `agent_id` and `sessions` and no bundle `format`, or when its name is
/// `<agent>_sessions.json` and it is not a bundle (so that a damaged tracker file is
/// reported as one); anything else is read as a bundle (whose reader says why it is not
/// one). A directory must hold tracker files. A missing path, a symbolic link or a device
/// named like a tracker file goes to the tracker file reader, which reports it (a link is
/// refused, never followed); otherwise a missing path goes to the bundle reader, and
/// anything else that is not a regular file or a directory is refused here.
pub fn detect(storage: &dyn Storage, path: &Path) -> Result<ImportKind> {
    let named = path
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(seed003::is_chain_file_name);
    match storage
        .kind(path)
        .map_err(|e| Error::io("inspect import path", path, e))?
    {
        // Read as what its name says, whose reader reports it missing.
        None if named => Ok(ImportKind::ChainFile),
        None => Ok(ImportKind::Bundle),
        // The path itself may be a symbolic link to a directory (the user named it);
        // what an importer reads inside a directory may not be.
        Some(FileKind::Dir | FileKind::Symlink) if !named && storage.list_dir(path).is_ok() => {
            let io = |e| Error::io("inspect import path", path, e);
            if storage.kind(&path.join("sessions")).map_err(io)? == Some(FileKind::Dir) {
                Ok(ImportKind::AmplihackRuntime)
            } else if seed003::has_chain_files(storage, path)? {
                Ok(ImportKind::ChainDir)
            } else {
                Err(invalid(
                    path,
                    "a directory to import must be an amplihack runtime directory, which \
                     holds a sessions/ folder (amplihack's default is .claude/runtime), or \
                     hold seed 003 tracker files (<agent>_sessions.json)",
                ))
            }
        }
        Some(FileKind::File) => {
            let bytes = storage
                .read(path)
                .map_err(|e| Error::io("read import file", path, e))?;
            if bytes.len() as u64 > seed003::MAX_CHAIN_FILE_BYTES {
                // Too large to be a tracker file: not worth a look.
                return Ok(if named {
                    ImportKind::ChainFile
                } else {
                    ImportKind::Bundle
                });
            }
            Ok(match seed003::sniff(&bytes) {
                seed003::Sniffed::Bundle => ImportKind::Bundle,
                seed003::Sniffed::Chain => ImportKind::ChainFile,
                seed003::Sniffed::Neither if named => ImportKind::ChainFile,
                seed003::Sniffed::Neither => ImportKind::Bundle,
            })
        }
        // A link (or a device) named like a tracker file: its reader refuses it, typed.
        Some(_) if named => Ok(ImportKind::ChainFile),
        Some(kind) => Err(Error::invalid(
            "import path",
            format!(
                "{} is {kind}, not a regular file or a directory; name the file itself",
                path.display()
            ),
        )),
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
