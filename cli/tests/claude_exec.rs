//! `exec ID --claude PROMPT [--resume]` through the binary, with a stand-in `claude` (a
//! shell script that writes its arguments to a file and prints Claude Code's result
//! message): the arguments it is given, the link recorded in the agent's chain, and the
//! turns that record none.
#![allow(clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_session-engine");

/// The stand-in: each call writes its arguments, one per line, to `$FAKE_DIR/argv.N`
/// (N counts the calls) and answers as `$FAKE_MODE` says.
const FAKE: &str = r#"#!/bin/sh
n=$(cat "$FAKE_DIR/count" 2>/dev/null || echo 0)
n=$((n + 1))
echo "$n" > "$FAKE_DIR/count"
for a in "$@"; do printf '%s\n' "$a"; done > "$FAKE_DIR/argv.$n"
echo "thinking on stderr" >&2
case "$FAKE_MODE" in
  malformed) echo 'this is not JSON'; exit 0 ;;
  wrongtype) echo '{"type":"assistant","session_id":"x"}'; exit 0 ;;
  error) printf '{"type":"result","subtype":"error_max_turns","is_error":true,"duration_ms":5,"num_turns":3,"session_id":"sess-%s","total_cost_usd":0.01}\n' "$n"; exit 1 ;;
  errorzero) printf '{"type":"result","subtype":"error_during_execution","is_error":true,"session_id":"sess-%s"}\n' "$n"; exit 0 ;;
  crash) echo 'partial'; exit 3 ;;
  sleep) sleep 30 ;;
  flaky) if [ "$n" = 1 ]; then echo '{"type":"result","partial'; exit 3; fi ;;
esac
printf '{"type":"result","subtype":"success","is_error":false,"duration_ms":12,"duration_api_ms":10,"num_turns":2,"result":"answer %s","stop_reason":"end_turn","session_id":"sess-%s","total_cost_usd":0.0123,"usage":{"input_tokens":3,"output_tokens":5},"permission_denials":[],"uuid":"u-%s"}\n' "$n" "$n" "$n"
"#;

struct Fixture {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    bin: PathBuf,
    fake: PathBuf,
}

impl Fixture {
    /// A data directory with session `s1` of agent `a1` and `s2` of no agent, and the
    /// stand-in installed as `bin/claude`.
    fn new() -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        let bin = tmp.path().join("bin");
        let fake = tmp.path().join("fake");
        std::fs::create_dir(&bin).unwrap();
        std::fs::create_dir(&fake).unwrap();
        let script = bin.join("claude");
        std::fs::write(&script, FAKE).unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let f = Fixture {
            _tmp: tmp,
            dir,
            bin,
            fake,
        };
        for args in [
            &["create", "--id", "s1", "--agent", "a1"][..],
            &["create", "--id", "s2"][..],
        ] {
            let o = f.run(args, "ok");
            assert!(o.status.success(), "{o:?}");
        }
        f
    }

    fn cmd(&self, args: &[&str], mode: &str) -> Command {
        let path = format!(
            "{}:{}",
            self.bin.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let mut c = Command::new(BIN);
        c.arg("--data-dir")
            .arg(&self.dir)
            .args(args)
            .env("PATH", path)
            .env_remove("SESSION_ENGINE_CLAUDE")
            .env("FAKE_DIR", &self.fake)
            .env("FAKE_MODE", mode);
        c
    }

    fn run(&self, args: &[&str], mode: &str) -> Output {
        self.cmd(args, mode).output().unwrap()
    }

    /// The arguments of the stand-in's call `n`, if it was called that often.
    fn argv(&self, n: u32) -> Option<Vec<String>> {
        let text = std::fs::read_to_string(self.fake.join(format!("argv.{n}"))).ok()?;
        Some(text.lines().map(str::to_string).collect())
    }

    fn chain(&self, agent: &str) -> Value {
        let o = self.run(&["chain", agent], "ok");
        assert!(o.status.success(), "{o:?}");
        serde_json::from_slice(&o.stdout).unwrap()
    }

    fn runs(&self) -> Value {
        let o = self.run(&["--json", "runs"], "ok");
        assert!(o.status.success(), "{o:?}");
        serde_json::from_slice(&o.stdout).unwrap()
    }
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[test]
fn a_turn_prints_the_answer_and_links_its_session_id_then_resume_passes_the_current_link() {
    let f = Fixture::new();
    let o = f.run(&["exec", "s1", "--claude", "hello there"], "ok");
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    assert_eq!(String::from_utf8_lossy(&o.stdout), "answer 1\n");
    let err = stderr(&o);
    assert!(err.contains("thinking on stderr"), "{err}");
    assert!(err.contains("linked sess-1 into agent a1's chain"), "{err}");
    assert_eq!(
        f.argv(1).unwrap(),
        strings(&["-p", "--output-format", "json", "hello there"])
    );
    let c = f.chain("a1");
    assert_eq!(c["current_session_id"], "sess-1");
    assert_eq!(c["interaction_count"], 1);
    let link = &c["sessions"][0];
    assert_eq!(link["session_id"], "sess-1");
    assert_eq!(link["last_prompt"], "hello there");
    assert_eq!(link["last_response"], "answer 1");
    assert_eq!(link["metadata"]["run"], 1);
    assert_eq!(link["metadata"]["subtype"], "success");
    assert_eq!(link["metadata"]["total_cost_usd"], 0.0123);
    assert_eq!(link["metadata"]["num_turns"], 2);
    assert_eq!(link["metadata"]["usage"]["output_tokens"], 5);

    let o = f.run(&["exec", "s1", "--claude", "and again", "--resume"], "ok");
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    assert_eq!(String::from_utf8_lossy(&o.stdout), "answer 2\n");
    assert_eq!(
        f.argv(2).unwrap(),
        strings(&[
            "-p",
            "--output-format",
            "json",
            "--resume",
            "sess-1",
            "and again"
        ])
    );
    let c = f.chain("a1");
    assert_eq!(c["current_session_id"], "sess-2");
    assert_eq!(c["interaction_count"], 2);
    let ids: Vec<&str> = c["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["session_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["sess-1", "sess-2"]);
    // Both turns are supervised runs like any other, recorded to their end.
    let runs = f.runs();
    let runs = runs.as_array().unwrap();
    assert_eq!(runs.len(), 2);
    for r in runs {
        assert_eq!(r["status"], "completed", "{r}");
        assert_eq!(r["program"], "claude");
        assert_eq!(r["session"], "s1");
    }
    assert_eq!(runs[1]["args"][3], "--resume");
    assert_eq!(runs[1]["args"][4], "sess-1");
}

#[test]
fn a_prompt_that_looks_like_an_option_comes_after_a_double_dash() {
    let f = Fixture::new();
    let o = f.run(&["exec", "s1", "--claude=--help me"], "ok");
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    assert_eq!(
        f.argv(1).unwrap(),
        strings(&["-p", "--output-format", "json", "--", "--help me"])
    );
}

#[test]
fn a_retried_turn_reads_the_answer_of_its_last_attempt_only() {
    let f = Fixture::new();
    let o = f.run(
        &[
            "exec",
            "s1",
            "--retries",
            "1",
            "--retry-delay-ms",
            "10",
            "--claude",
            "p",
        ],
        "flaky",
    );
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    assert_eq!(String::from_utf8_lossy(&o.stdout), "answer 2\n");
    assert_eq!(f.runs()[0]["attempts"], 2);
    assert_eq!(f.chain("a1")["current_session_id"], "sess-2");
}

#[test]
fn json_prints_the_whole_turn() {
    let f = Fixture::new();
    let o = f.run(&["--json", "exec", "s1", "--claude", "hi"], "ok");
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["run"]["id"], 1);
    assert_eq!(v["run"]["status"], "completed");
    assert_eq!(v["agent"], "a1");
    assert_eq!(v["linked"], true);
    assert_eq!(v["interaction_count"], 1);
    assert_eq!(v["session_id"], "sess-1");
    assert_eq!(v["result"], "answer 1");
    assert_eq!(v["total_cost_usd"], 0.0123);
    assert_eq!(v["no_link"], Value::Null);
}

#[test]
fn resume_without_a_link_or_a_session_without_an_agent_is_refused_and_runs_nothing() {
    let f = Fixture::new();
    let o = f.run(&["exec", "s1", "--claude", "x", "--resume"], "ok");
    assert_eq!(o.status.code(), Some(5), "{o:?}");
    assert!(
        stderr(&o).contains("agent a1's chain has no current link to resume"),
        "{o:?}"
    );
    let o = f.run(&["exec", "s2", "--claude", "x"], "ok");
    assert_eq!(o.status.code(), Some(5), "{o:?}");
    assert!(stderr(&o).contains("belongs to no agent"), "{o:?}");
    let o = f.run(&["exec", "nope", "--claude", "x"], "ok");
    assert_eq!(o.status.code(), Some(3), "{o:?}");
    // --resume without --claude, or both a PROMPT and a program, are usage errors.
    let o = f.run(&["exec", "s1", "--resume", "--", "true"], "ok");
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    let o = f.run(&["exec", "s1", "--claude", "x", "--", "true"], "ok");
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    assert_eq!(f.argv(1), None, "the stand-in ran");
    assert_eq!(f.runs(), Value::Array(Vec::new()));
    assert_eq!(f.chain("a1")["interaction_count"], 0);
}

#[test]
fn a_malformed_answer_or_a_failed_run_records_no_link_and_says_why() {
    let f = Fixture::new();
    let cases = [
        // (mode, exit status, what stderr says)
        (
            "malformed",
            1,
            "no link recorded: the answer is not Claude Code's JSON result: it is not one JSON value",
        ),
        (
            "wrongtype",
            1,
            "its \"type\" is \"assistant\", not \"result\"",
        ),
        ("error", 1, "no link recorded: the run failed (exit code 1)"),
        (
            "errorzero",
            1,
            "no link recorded: Claude Code answered an error (subtype error_during_execution)",
        ),
        ("crash", 3, "no link recorded: the run failed (exit code 3)"),
    ];
    for (i, (mode, code, why)) in cases.iter().enumerate() {
        let o = f.run(&["exec", "s1", "--claude", "p"], mode);
        assert_eq!(o.status.code(), Some(*code), "{mode}: {o:?}");
        assert!(stderr(&o).contains(why), "{mode}: {}", stderr(&o));
        assert!(
            f.argv(i as u32 + 1).is_some(),
            "{mode}: the stand-in did not run"
        );
        let c = f.chain("a1");
        assert_eq!(c["interaction_count"], 0, "{mode}: {c}");
        assert_eq!(c["current_session_id"], Value::Null, "{mode}");
    }
    let runs = f.runs();
    let status: Vec<&str> = runs
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        status,
        ["completed", "completed", "failed", "completed", "failed"]
    );
}

#[test]
fn the_timeout_applies_to_a_turn_and_it_records_no_link() {
    let f = Fixture::new();
    let o = f.run(
        &[
            "exec",
            "s1",
            "--timeout",
            "0.5",
            "--grace-ms",
            "200",
            "--claude",
            "p",
        ],
        "sleep",
    );
    assert_eq!(o.status.code(), Some(128 + 15), "{o:?}");
    assert!(
        stderr(&o).contains("no link recorded: the run timeout"),
        "{}",
        stderr(&o)
    );
    assert_eq!(f.runs()[0]["status"], "timeout");
    assert_eq!(f.chain("a1")["interaction_count"], 0);
}

#[test]
fn the_program_is_found_in_path_or_named_by_the_environment_or_the_flag() {
    let f = Fixture::new();
    // Not in PATH: refused before anything is recorded.
    let mut c = f.cmd(&["exec", "s1", "--claude", "p"], "ok");
    c.env("PATH", "/usr/bin:/bin");
    let o = c.output().unwrap();
    assert_eq!(o.status.code(), Some(3), "{o:?}");
    assert!(stderr(&o).contains("claude"), "{o:?}");
    assert_eq!(f.runs(), Value::Array(Vec::new()));

    // Named by SESSION_ENGINE_CLAUDE, then by --claude-program (which wins).
    let other = f.bin.parent().unwrap().join("other-claude");
    std::fs::copy(f.bin.join("claude"), &other).unwrap();
    let named = |c: &mut Command| {
        c.env("PATH", "/usr/bin:/bin")
            .env("SESSION_ENGINE_CLAUDE", other.as_os_str());
    };
    let mut c = f.cmd(&["exec", "s1", "--claude", "p"], "ok");
    named(&mut c);
    let o = c.output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    assert_eq!(f.runs()[0]["program"], other.to_str().unwrap());
    let mut c = f.cmd(
        &[
            "exec",
            "s1",
            "--claude",
            "p",
            "--claude-program",
            f.bin.join("claude").to_str().unwrap(),
        ],
        "ok",
    );
    named(&mut c);
    let o = c.output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    assert_eq!(
        f.runs()[1]["program"],
        f.bin.join("claude").to_str().unwrap()
    );
    assert_eq!(f.chain("a1")["interaction_count"], 2);
    let missing: &Path = Path::new("/nonexistent/claude");
    let o = f.run(
        &[
            "exec",
            "s1",
            "--claude",
            "p",
            "--claude-program",
            missing.to_str().unwrap(),
        ],
        "ok",
    );
    assert_eq!(o.status.code(), Some(3), "{o:?}");
}
