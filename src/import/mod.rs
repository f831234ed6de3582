//! Adoption of files other tools wrote: what `session-engine import PATH` takes, told
//! apart by [`detect`].
//!
//! * an export bundle of this engine (`crate::export`): one session's events;
//! * a seed 003 tracker file, `<agent>_sessions.json`, or a directory of them (seed
//!   003's persistence directory `~/.claude-agent/sessions`, a data directory's
//!   `chains/`): [`seed003`], one chain per file, kept field for field.
//!
//! Every kind is read without writing anything; a refused input changes nothing.

pub mod seed003;

use std::path::Path;

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
        Some(FileKind::Dir) => {
            if seed003::has_chain_files(storage, path)? {
                Ok(ImportKind::ChainDir)
            } else {
                Err(Error::invalid(
                    "import path",
                    format!(
                        "{} is a directory without seed 003 tracker files \
                         (<agent>_sessions.json); name a bundle file, a tracker file, or a \
                         directory of tracker files",
                        path.display()
                    ),
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
