//! The real amplihack toolkit against the engine's `amplihack` projection format.
//!
//! amplihack's session toolkit (rysweet/amplihack, `.claude/tools/amplihack/session/` at
//! commit 8639ee48486e0497ccaebe0cb61afe10917c51c9, stdlib-only Python 3.10+) carries no
//! license file, so it is not part of this repository. These tests run it when
//! `AMPLIHACK_SESSION_DIR` names a copy of that folder (or the folder above it) and
//! `python3` is on the PATH, and skip with a message otherwise:
//!
//! ```sh
//! AMPLIHACK_SESSION_DIR=/path/to/amplihack/.claude/tools/amplihack/session \
//!     cargo test --test amplihack_real -- --nocapture
//! ```
//!
//! * The engine writes sessions in the amplihack format (through the library; the command
//!   line writes the same files, `amplihack_cli.rs`);
//!   the real `SessionManager` must list them, resume each by id and read its statistics,
//!   configuration, state and command history with the engine's values, and
//!   `SessionToolkit(runtime).session(name)` must find each by name (resuming, not
//!   creating). Python's `json.dumps` must write every file and log line byte for byte as
//!   the engine did.
//! * The toolkit writes a runtime directory; the engine adopts it in place (what `import
//!   DIR` does, `import::adopt_amplihack`) and writes it back: every file equal, as JSON values, to what amplihack wrote, and
//!   amplihack reads the adopted sessions as before.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use session_engine::projection::{ProjectionFormat, ProjectionOptions};
use session_engine::{
    CommandRun, FileStorage, JsonText, ManagerOptions, ManualClock, NewSession, Options,
    SessionConfig, SessionId, SessionManager, State, Status, Timestamp,
};

/// Where the toolkit is: the folder to put on `sys.path` and the package's name.
struct Toolkit {
    path: PathBuf,
    package: String,
}

fn toolkit() -> Option<Toolkit> {
    let Some(dir) = std::env::var_os("AMPLIHACK_SESSION_DIR").map(PathBuf::from) else {
        eprintln!(
            "skipped: set AMPLIHACK_SESSION_DIR to a copy of amplihack's \
             .claude/tools/amplihack/session/ (see the module documentation) to run the \
             real-amplihack check"
        );
        return None;
    };
    let (path, package) = if dir.join("session_manager.py").is_file() {
        (
            dir.parent().unwrap().to_path_buf(),
            dir.file_name().unwrap().to_string_lossy().into_owned(),
        )
    } else if dir.join("session/session_manager.py").is_file() {
        (dir.clone(), "session".to_string())
    } else {
        panic!(
            "AMPLIHACK_SESSION_DIR={} holds no session_manager.py (nor session/session_manager.py)",
            dir.display()
        );
    };
    let python = Command::new("python3").arg("--version").output();
    if !python.is_ok_and(|o| o.status.success()) {
        eprintln!("skipped: python3 is not available to run the real-amplihack check");
        return None;
    }
    Some(Toolkit { path, package })
}

/// The Python side: `write RUNTIME` makes a runtime directory with the toolkit; `read
/// RUNTIME COPY IDS_JSON` reads one as amplihack does and prints what it saw.
const SCRIPT: &str = r#"
import copy, importlib, json, logging, shutil, sys, time
from dataclasses import asdict
from pathlib import Path

path, package, mode, runtime = sys.argv[1], sys.argv[2], sys.argv[3], Path(sys.argv[4])
sys.path.insert(0, path)
sm = importlib.import_module(package + ".session_manager")
cs = importlib.import_module(package + ".claude_session")
tk = importlib.import_module(package + ".session_toolkit")
tl = importlib.import_module(package + ".toolkit_logger")
logging.disable(logging.CRITICAL)

def manager(d):
    m = sm.SessionManager(d)
    m.auto_save_enabled = False
    m._shutdown_event.set()
    return m

if mode == "write":
    m = manager(runtime / "sessions")
    a = m.create_session("analysis", metadata={"user": "alice", "ratio": 0.1, "tags": ["x", "é"]})
    s = m.get_session(a)
    s.execute_command("analyze", files=3, deep=True)
    try:
        s.execute_command("slow", timeout=0.001)
    except Exception:
        pass
    m.save_session(a)
    b = m.create_session("to archive", config=cs.SessionConfig(timeout=120.0, log_level="DEBUG"))
    m.get_session(b).execute_command("build")
    m.save_session(b)
    m.archive_session(b)
    c = m.create_session("stopped", metadata={"big": 12345678901234567})
    m.get_session(c).stop()
    m.save_session(c)
    m._save_session_registry()
    log = tl.ToolkitLogger(session_id=a, component="check", log_dir=runtime / "logs",
                           enable_console=False, enable_file=False)
    h = tl.FileRotatingHandler(runtime / "logs" / (a + ".log"), rotate_daily=False)
    h.setFormatter(tl.StructuredFormatter())
    log.logger.addHandler(h)
    log.info("started ü", metadata={"k": 1.25})
    with log.operation("work"):
        log.warning("careful")
    print(json.dumps({"ids": [a, b, c]}))
    sys.exit(0)

ids = json.loads(sys.argv[6])
out = {"listed": [], "resumed": {}, "found": {}, "logs": {}, "exact": {}}
m = manager(runtime / "sessions")
for info in m.list_sessions():
    out["listed"].append({k: info.get(k) for k in ("session_id", "name", "status", "created_at")})
for i in ids:
    s = m.resume_session(i)
    if s is None:
        out["resumed"][i] = None
        continue
    t0 = time.time()
    st = s.get_statistics()
    t1 = time.time()
    out["resumed"][i] = {
        "registry_status": m._session_metadata[i]["status"],
        "state": asdict(s.state), "config": asdict(s.config), "statistics": st,
        "t0": t0, "t1": t1, "history": s.get_command_history(limit=1000),
        "history10": s.get_command_history(),
    }
    logger = tl.ToolkitLogger(session_id=i, log_dir=runtime / "logs",
                              enable_console=False, enable_file=False)
    out["logs"][i] = logger.get_session_logs()
for f in sorted(runtime.rglob("*")):
    if f.suffix == ".json" and "snapshots" not in f.parts and f.name != "projections.json" \
            and f.name != "projection-format.json" and not f.name.endswith(".retired"):
        text = f.read_text()
        out["exact"][str(f.relative_to(runtime))] = \
            json.dumps(json.loads(text), indent=2, sort_keys=True, ensure_ascii=False) == text
    elif f.suffix == ".log" and f.parent.name == "logs" and f.name != "toolkit.log":
        lines = f.read_text().splitlines()
        out["exact"][str(f.relative_to(runtime))] = all(json.dumps(json.loads(l)) == l for l in lines)
copy_dir = Path(sys.argv[5])
shutil.copytree(runtime, copy_dir)
for i in ids:
    name = m._session_metadata.get(i, {}).get("name")
    if name is None:
        continue
    before = sorted(p.name for p in (copy_dir / "sessions").glob("*.json"))
    toolkit = tk.SessionToolkit(copy_dir, auto_save=False)
    with toolkit.session(name) as session:
        got = session.state.session_id
    after = sorted(p.name for p in (copy_dir / "sessions").glob("*.json"))
    out["found"][name] = {"session_id": got, "created_nothing": before == after}
print(json.dumps(out))
"#;

fn python(t: &Toolkit, args: &[&str]) -> Value {
    let tmp = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(tmp.path(), SCRIPT).unwrap();
    let o = Command::new("python3")
        .arg(tmp.path())
        .arg(&t.path)
        .arg(&t.package)
        .args(args)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "python failed: {}\n{}",
        String::from_utf8_lossy(&o.stderr),
        String::from_utf8_lossy(&o.stdout)
    );
    let stdout = String::from_utf8(o.stdout).unwrap();
    let last = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(last).unwrap_or_else(|e| panic!("python printed {stdout:?}: {e}"))
}

fn secs(t: Timestamp) -> f64 {
    t.micros() as f64 / 1e6
}

fn now() -> Timestamp {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    Timestamp(d.as_micros() as i64)
}

/// The engine's sessions in the order and shape amplihack's own fields take, computed from
/// the state (not from the projection files).
fn expected_history(state: &State, id: &SessionId) -> Vec<Value> {
    let s = state.session(id).unwrap();
    let n = s.body.commands.len();
    s.body
        .commands
        .iter()
        .skip(n.saturating_sub(100))
        .map(|c| {
            let mut v = json!({
                "command": &*c.command,
                "timestamp": secs(c.timestamp),
                "kwargs": c.args.as_ref().map_or(json!({}), JsonText::to_value),
                "result": if c.success { "success" } else { "error" },
                "duration": c.duration_ms as f64 / 1000.0,
            });
            if !c.success {
                v["error"] = json!(c.error.as_deref());
            }
            v
        })
        .collect()
}

#[test]
fn the_real_toolkit_lists_resumes_and_finds_what_the_engine_wrote() {
    let Some(t) = toolkit() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let runtime = tmp.path().join("runtime");
    let clock = ManualClock::new(now());
    let opts = |format| ManagerOptions {
        engine: Options {
            storage: Arc::new(FileStorage::new()),
            clock: Arc::new(clock.clone()),
            watchdog_interval: None,
            ..Options::default()
        },
        projections: Some(ProjectionOptions {
            format,
            ..ProjectionOptions::default()
        }),
    };
    // The first open records the format; the second finds it recorded.
    let m = SessionManager::open(&runtime, opts(Some(ProjectionFormat::Amplihack))).unwrap();
    let s = m
        .create_session(NewSession {
            id: Some(SessionId::new("claude_session_1762597800_0a1b2c3d").unwrap()),
            name: Some("first".into()),
            metadata: vec![("user".into(), JsonText::string("bob").unwrap())],
            ..NewSession::default()
        })
        .unwrap();
    clock.advance_micros(2_500_123);
    s.record_command(
        CommandRun::failed("cargo test", "2 tests failed", Duration::from_millis(8123))
            .with_args(json!({"release": true})),
    )
    .unwrap();
    s.record_command(CommandRun::succeeded(
        "cargo build",
        Duration::from_millis(250),
    ))
    .unwrap();
    m.close().unwrap();
    let m = SessionManager::open(&runtime, opts(None)).unwrap();
    assert_eq!(m.projection_format(), Some(ProjectionFormat::Amplihack));
    let new = |id: &str, name: &str, timeout: u64| {
        m.create_session(NewSession {
            id: Some(SessionId::new(id).unwrap()),
            name: Some(name.into()),
            timeout_secs: timeout,
            config: SessionConfig {
                timeout: 90.5,
                max_retries: 7,
                ..SessionConfig::default()
            },
            metadata: vec![("n".into(), JsonText::parse(r#"{"a":[1,2.5,"ü"]}"#).unwrap())],
            ..NewSession::default()
        })
        .unwrap()
    };
    let busy = new("busy", "many commands", 0);
    for i in 0..130 {
        clock.advance_micros(1_234_567);
        let run = if i % 40 == 3 {
            CommandRun::failed(
                format!("step {i}"),
                format!("failure {i}"),
                Duration::from_micros(1500),
            )
        } else {
            CommandRun::succeeded(format!("step {i}"), Duration::from_millis(i))
                .with_args(json!({"i": i}))
        };
        busy.record_command(run).unwrap();
    }
    busy.save_checkpoint(Some("cp")).unwrap();
    new("paused", "paused one", 0).pause().unwrap();
    new("ended", "ended one", 0).end().unwrap();
    new("idle", "timed out one", 30);
    new("old", "archived one", 0).archive().unwrap();
    clock.advance_secs(31);
    assert_eq!(
        m.expire_idle().unwrap(),
        vec![SessionId::new("idle").unwrap()]
    );
    m.close().unwrap();

    let m = SessionManager::open_read_only(&runtime, Options::default()).unwrap();
    let state = m.state();
    let ids: Vec<String> = state.sessions.keys().map(|k| k.to_string()).collect();
    let copy = tmp.path().join("copy");
    let out = python(
        &t,
        &[
            "read",
            runtime.to_str().unwrap(),
            copy.to_str().unwrap(),
            &serde_json::to_string(&ids).unwrap(),
        ],
    );

    // Every file and log line is what Python's json.dumps writes for it.
    let exact = out["exact"].as_object().unwrap();
    assert!(exact.len() >= 8, "{exact:?}");
    for (file, same) in exact {
        assert_eq!(
            same,
            &json!(true),
            "{file} is not byte for byte what json.dumps writes"
        );
    }
    // list_sessions shows every session but the archived one (and, as amplihack does,
    // registry.json itself, which its glob of *.json picks up).
    let listed: BTreeMap<String, Value> = out["listed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| (v["session_id"].as_str().unwrap().to_string(), v.clone()))
        .collect();
    for s in state.sessions.values() {
        let id = s.id.as_str();
        if s.status() == Status::Archived {
            assert!(!listed.contains_key(id), "{id} is archived");
            continue;
        }
        let l = &listed[id];
        assert_eq!(l["name"], json!(&*s.name), "{id}");
        assert_eq!(l["status"], s.status().as_str(), "{id}");
        assert_eq!(l["created_at"], json!(secs(s.created_at)), "{id}");
    }
    assert_eq!(listed.len(), state.sessions.len() - 1 + 1, "{listed:?}");
    // resume_session(id) of each: same id, the engine's values.
    for s in state.sessions.values() {
        let id = s.id.as_str();
        let r = &out["resumed"][id];
        if s.status() == Status::Archived {
            assert!(r.is_null(), "{id}: amplihack resumes only from sessions/");
            continue;
        }
        assert_eq!(
            r["registry_status"], "resumed",
            "{id}: its registry entry was found"
        );
        let commands = s.body.commands.len() as u64;
        let errors = s.body.command_errors;
        let last_error = if s.status() == Status::TimedOut {
            json!(format!("Session timeout after {}.0s", s.timeout_secs))
        } else {
            json!(
                s.body
                    .commands
                    .iter()
                    .rev()
                    .find(|c| !c.success)
                    .and_then(|c| c.error.as_deref())
            )
        };
        assert_eq!(
            r["state"],
            json!({
                "session_id": id, "start_time": secs(s.created_at),
                "last_activity": secs(s.last_activity), "is_active": s.status() == Status::Active,
                "command_count": commands, "error_count": errors, "last_error": last_error,
                "metadata": {}
            }),
            "{id}"
        );
        assert_eq!(
            r["config"],
            json!({
                "timeout": s.config.timeout, "max_retries": s.config.max_retries,
                "retry_delay": s.config.retry_delay,
                "heartbeat_interval": s.config.heartbeat_interval,
                "enable_logging": s.config.enable_logging, "log_level": "INFO",
                "session_id": id, "auto_save_interval": s.config.auto_save_interval
            }),
            "{id}"
        );
        let st = &r["statistics"];
        assert_eq!(st["session_id"], id);
        assert_eq!(st["command_count"], commands, "{id}");
        assert_eq!(st["error_count"], errors, "{id}");
        assert_eq!(
            st["error_rate"],
            json!(errors as f64 / commands.max(1) as f64),
            "{id}"
        );
        assert_eq!(st["is_active"], s.status() == Status::Active, "{id}");
        assert_eq!(st["last_activity"], json!(secs(s.last_activity)), "{id}");
        // amplihack keeps checkpoints in memory only: a resumed session has none.
        assert_eq!(st["checkpoints"], 0, "{id}");
        let (t0, t1) = (r["t0"].as_f64().unwrap(), r["t1"].as_f64().unwrap());
        let uptime = st["uptime"].as_f64().unwrap();
        let start = secs(s.created_at);
        assert!(
            t0 - start <= uptime && uptime <= t1 - start,
            "{id}: uptime {uptime}"
        );
        let history = expected_history(&state, &s.id);
        assert_eq!(r["history"], json!(history), "{id}");
        assert_eq!(
            r["history10"],
            json!(history[history.len().saturating_sub(10)..]),
            "{id}"
        );
        // Its log, as ToolkitLogger.get_session_logs reads it.
        let logs = out["logs"][id].as_array().unwrap();
        assert!(!logs.is_empty(), "{id}");
        assert_eq!(logs[0]["operation"], "session_created", "{id}");
        assert_eq!(logs[0]["timestamp"], json!(secs(s.created_at)), "{id}");
        for l in logs {
            assert_eq!(l["session_id"], id);
            assert_eq!(l["component"], "session_engine");
        }
        let failed: Vec<&Value> = logs.iter().filter(|l| l["level"] == "ERROR").collect();
        assert_eq!(failed.len() as u64, errors, "{id}");
    }
    assert_eq!(
        out["resumed"]["busy"]["history"].as_array().unwrap().len(),
        100,
        "the file holds the last 100 commands"
    );
    // SessionToolkit.session(name) resumes the session of that name.
    for s in state
        .sessions
        .values()
        .filter(|s| s.status() != Status::Archived)
    {
        let f = &out["found"][&*s.name];
        assert_eq!(f["session_id"], s.id.as_str(), "{}", s.name);
        assert_eq!(
            f["created_nothing"], true,
            "{}: it created a session",
            s.name
        );
    }
}

#[test]
fn a_runtime_directory_the_toolkit_wrote_is_adopted_and_written_back_unchanged() {
    let Some(t) = toolkit() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let runtime = tmp.path().join("runtime");
    let ids = python(&t, &["write", runtime.to_str().unwrap()])["ids"].clone();
    let ids: Vec<String> = serde_json::from_value(ids).unwrap();
    let before = files(&runtime);
    assert!(
        before.keys().any(|k| k.starts_with("sessions/archive/")),
        "{before:?}"
    );
    assert!(
        before.contains_key(&format!("logs/{}.log", ids[0])),
        "{before:?}"
    );
    let options = ManagerOptions {
        engine: Options {
            storage: Arc::new(FileStorage::new()),
            watchdog_interval: None,
            ..Options::default()
        },
        projections: Some(ProjectionOptions::default()),
    };
    let (m, adopted) =
        session_engine::import::adopt_amplihack(&runtime, options.clone(), &runtime).unwrap();
    m.close().unwrap();
    let mut adopted: Vec<String> = adopted.iter().map(|i| i.to_string()).collect();
    adopted.sort_unstable();
    let mut want = ids.clone();
    want.sort_unstable();
    assert_eq!(adopted, want);
    // Open again and rebuild from the log: the same files.
    let m = SessionManager::open(&runtime, options).unwrap();
    m.rebuild_projections().unwrap();
    m.close().unwrap();
    let after = files(&runtime);
    for (rel, bytes) in &before {
        let now = after.get(rel).unwrap_or_else(|| panic!("{rel} is gone"));
        if rel.ends_with(".json") {
            let a: Value = serde_json::from_slice(bytes).unwrap();
            let b: Value = serde_json::from_slice(now).unwrap();
            assert_eq!(a, b, "{rel} differs as JSON");
        }
        assert!(bytes == now, "{rel} differs in its bytes");
    }
    // amplihack still reads them as it wrote them.
    let copy = tmp.path().join("copy");
    let out = python(
        &t,
        &[
            "read",
            runtime.to_str().unwrap(),
            copy.to_str().unwrap(),
            &serde_json::to_string(&ids).unwrap(),
        ],
    );
    let first = &out["resumed"][&ids[0]];
    assert_eq!(first["state"]["session_id"], ids[0].as_str());
    assert_eq!(first["state"]["command_count"], 2);
    assert_eq!(first["state"]["error_count"], 1);
    assert_eq!(first["history"].as_array().unwrap().len(), 2);
    assert_eq!(
        first["history"][0]["kwargs"],
        json!({"files": 3, "deep": true})
    );
    assert_eq!(out["logs"][&ids[0]].as_array().unwrap().len(), 4);
    assert!(
        out["resumed"][&ids[1]].is_null(),
        "the archived one stays archived"
    );
    assert_eq!(out["found"]["analysis"]["session_id"], ids[0].as_str());
    // The engine sees them with amplihack's values.
    let m = SessionManager::open_read_only(&runtime, Options::default()).unwrap();
    let st = m.state();
    let a = st.session(&SessionId::new(&ids[0]).unwrap()).unwrap();
    assert_eq!(&*a.name, "analysis");
    assert_eq!(a.body.commands.len(), 2);
    assert_eq!(a.status(), Status::Active);
    let b = st.session(&SessionId::new(&ids[1]).unwrap()).unwrap();
    assert_eq!(b.status(), Status::Archived);
    assert_eq!(b.config.timeout, 120.0);
    let c = st.session(&SessionId::new(&ids[2]).unwrap()).unwrap();
    assert_eq!(c.status(), Status::Ended);
}

/// Every file of a runtime directory amplihack reads, by relative path.
fn files(root: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    for dir in ["sessions", "sessions/archive", "logs"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir)) else {
            continue;
        };
        for e in entries {
            let e = e.unwrap();
            let name = e.file_name().to_string_lossy().into_owned();
            if e.file_type().unwrap().is_file()
                && name != "toolkit.log"
                && !name.ends_with(".retired")
            {
                out.insert(format!("{dir}/{name}"), std::fs::read(e.path()).unwrap());
            }
        }
    }
    out
}
