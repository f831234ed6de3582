//! The command line's side of the projection formats and of adoption: `--projections`
//! and `SESSION_ENGINE_PROJECTIONS`, `rebuild-projections --projections F`, and `import
//! DIR` of an amplihack runtime directory, with their exit statuses. (It runs the binary,
//! so it lives apart from the library's tests of the same things in `amplihack_format.rs`
//! and `amplihack_import.rs`.)
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_session-engine");

struct Cli {
    _tmp: tempfile::TempDir,
    data: PathBuf,
}

fn cli() -> Cli {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("runtime");
    Cli { _tmp: tmp, data }
}

impl Cli {
    fn run(&self, env: Option<&str>, args: &[&str]) -> Output {
        let mut c = Command::new(BIN);
        c.env_remove("SESSION_ENGINE_DIR")
            .env_remove("SESSION_ENGINE_PROJECTIONS")
            .env_remove("RUST_LOG")
            .arg("--data-dir")
            .arg(&self.data)
            .args(args);
        if let Some(f) = env {
            c.env("SESSION_ENGINE_PROJECTIONS", f);
        }
        c.output().unwrap()
    }

    fn ok(&self, env: Option<&str>, args: &[&str]) -> String {
        let o = self.run(env, args);
        assert!(
            o.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8(o.stdout).unwrap()
    }
}

#[test]
fn the_cli_takes_the_format_from_the_flag_or_the_environment_and_refuses_another() {
    let d = cli();
    d.ok(
        Some("amplihack"),
        &["create", "--id", "e1", "--name", "env"],
    );
    assert!(d.data.join("sessions/e1.json").exists());
    d.ok(None, &["create", "--id", "e2"]);
    assert!(
        d.data.join("sessions/e2.json").exists(),
        "the recorded format is used"
    );
    let registry = std::fs::read(d.data.join("sessions/registry.json")).unwrap();
    let o = d.run(None, &["--projections", "seed", "create", "--id", "e3"]);
    assert_eq!(o.status.code(), Some(5));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("amplihack format") && err.contains("rebuild-projections --projections seed"),
        "{err}"
    );
    assert!(!d.data.join("sessions/e3.json").exists());
    assert_eq!(
        std::fs::read(d.data.join("sessions/registry.json")).unwrap(),
        registry
    );
    let o = d.run(Some("seed"), &["list"]);
    assert!(
        o.status.success(),
        "a read-only command writes nothing and checks nothing"
    );
    let o = d.run(None, &["--projections", "nonsense", "list"]);
    assert_eq!(o.status.code(), Some(2));
    // The rebuild is the way to change it.
    let out = d.ok(None, &["--projections", "seed", "rebuild-projections"]);
    assert!(
        out.contains("(seed format)") && out.contains("projections-attic"),
        "{out}"
    );
    assert!(d.data.join("sessions/session_e1.json").exists());
    // The old format's file is in the attic, not deleted.
    let in_attic = std::fs::read_dir(d.data.join("projections-attic"))
        .unwrap()
        .any(|f| f.unwrap().path().join("sessions/e1.json").exists());
    assert!(in_attic);
    assert!(!d.data.join("sessions/e1.json").exists());
    d.ok(None, &["create", "--id", "e4"]);
    assert!(d.data.join("sessions/session_e4.json").exists());
}

/// Every file under `sessions/` and `logs/` but the command line's own log, by relative
/// path.
fn amplihack_files(root: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    for dir in ["sessions", "sessions/archive", "logs"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir)) else {
            continue;
        };
        for e in entries {
            let e = e.unwrap();
            let name = e.file_name().to_string_lossy().into_owned();
            if e.file_type().unwrap().is_file() && name != "toolkit.log" {
                out.insert(format!("{dir}/{name}"), std::fs::read(e.path()).unwrap());
            }
        }
    }
    out
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

/// The sessions of `tests/fixtures/amplihack_runtime` (see `amplihack_import.rs`).
const IDS: [&str; 5] = [
    "claude_session_1762597800_0a1b2c3d",
    "claude_session_1762597900_1b2c3d4e",
    "claude_session_1762598000_2c3d4e5f",
    "claude_session_1762598100_3d4e5f60",
    "claude_session_1762598200_4e5f6071",
];

#[test]
fn the_cli_adopts_a_directory_given_to_import() {
    let d = cli();
    copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/amplihack_runtime"),
        &d.data,
    );
    let before = amplihack_files(&d.data);
    let dir = d.data.to_str().unwrap();
    let o = d.run(None, &["--projections", "seed", "import", dir]);
    assert_eq!(
        o.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("amplihack projection format"));
    assert!(
        !d.data.join("wal").exists(),
        "a refused import opened the engine"
    );
    let out = d.ok(None, &["import", dir]);
    assert_eq!(out, IDS.map(|s| format!("{s}\n")).concat());
    assert_eq!(
        amplihack_files(&d.data),
        before,
        "the files are not as they were"
    );
    let o = d.run(None, &["import", dir]);
    assert_eq!(o.status.code(), Some(5), "the ids are taken");
    assert!(String::from_utf8_lossy(&o.stderr).contains("already exists"));
    assert_eq!(amplihack_files(&d.data), before);
    let listed: Value = serde_json::from_str(&d.ok(None, &["--json", "list"])).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 5);
    let o = d.run(None, &["import", d.data.join("logs").to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&o.stderr).contains("sessions/ folder"));
}
