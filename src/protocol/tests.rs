use super::*;
use crate::command::{Committed, Outcome};
use crate::error::Error;
use crate::types::{AgentId, Lsn, MAX_JSON_DEPTH};

#[test]
fn the_written_answer_is_answer_ok_serialised() {
    let id = SessionId::new("s1").unwrap();
    let outcomes = [
        Outcome::Done,
        Outcome::Session(id.clone()),
        Outcome::Checkpoint(3),
        Outcome::Sessions(vec![id.clone(), SessionId::new("s2").unwrap()]),
        Outcome::Chains(vec![AgentId::new("a").unwrap()]),
        Outcome::Run(RunId(4)),
    ];
    for outcome in outcomes {
        for appended in [true, false] {
            for lsn in [0, 1, 17, u64::MAX] {
                let c = Committed {
                    lsn: Lsn(lsn),
                    appended,
                    outcome: outcome.clone(),
                };
                let mut text = String::from("before ");
                write_answer_ok(&c, &mut text);
                assert_eq!(text, format!("before {}", answer_ok(&c)), "{c:?}");
            }
        }
    }
}

#[test]
fn every_op_parses() {
    for line in [
        r#"{"op":"create"}"#,
        r#"{"op":"create","id":"s1","name":"n","timeout":10,"meta":{"a":1},"config":{"max_retries":5}}"#,
        r#"{"op":"activity","id":"s1","action":"x","details":{"k":[1]}}"#,
        r#"{"op":"activity","session_id":"s1","action":"x"}"#,
        r#"{"op":"meta","id":"s1","key":"k","value":"v"}"#,
        r#"{"op":"unmeta","id":"s1","key":"k"}"#,
        r#"{"op":"pause","id":"s1"}"#,
        r#"{"op":"resume","id":"s1"}"#,
        r#"{"op":"end","id":"s1"}"#,
        r#"{"op":"archive","id":"s1"}"#,
        r#"{"op":"checkpoint","id":"s1","label":"l"}"#,
        r#"{"op":"restore","id":"s1"}"#,
        r#"{"op":"restore","id":"s1","index":0}"#,
        r#"{"op":"decision","id":"s1","what":"w","why":"y","alternatives":"a"}"#,
        r#"{"op":"command","id":"s1","command":"ls","success":false,"error":"e","duration_ms":5}"#,
        r#"{"op":"chain_link","agent":"a","external_id":"e","prompt":"p","response":"r"}"#,
        r#"{"op":"chain_link","agent":"a","link":"e"}"#,
        r#"{"op":"chain_reset","agent":"a"}"#,
        r#"{"op":"cleanup","max_age_days":30}"#,
        r#"{"op":"clone","id":"s1","new_id":"s2"}"#,
    ] {
        parse_line(line).unwrap_or_else(|e| panic!("{line}: {e}"));
    }
}

#[test]
fn run_ops_parse_as_requests_and_are_no_commands() {
    use crate::manager::CancelTarget;
    let r = parse_request(r#"{"op":"runs","id":"s1","status":"running"}"#).unwrap();
    assert!(
        matches!(r, Request::Runs { run: None, session: Some(ref s), status: Some(RunStatus::Running) } if s.as_str() == "s1"),
        "{r:?}"
    );
    let r = parse_request(r#"{"op":"runs","run":3}"#).unwrap();
    assert!(
        matches!(
            r,
            Request::Runs {
                run: Some(RunId(3)),
                ..
            }
        ),
        "{r:?}"
    );
    let r = parse_request(r#"{"op":"cancel","all":true,"wait":0.5}"#).unwrap();
    assert!(
        matches!(
            r,
            Request::Cancel {
                target: CancelTarget::All,
                wait_ms: 500
            }
        ),
        "{r:?}"
    );
    let r = parse_request(r#"{"op":"cancel","run":2}"#).unwrap();
    assert!(
        matches!(
            r,
            Request::Cancel {
                target: CancelTarget::Run(RunId(2)),
                wait_ms: 10_000
            }
        ),
        "{r:?}"
    );
    assert!(matches!(
        parse_request(r#"{"op":"resume_runs"}"#).unwrap(),
        Request::ResumeRuns
    ));
    let r = parse_request(r#"{"op":"health"}"#).unwrap();
    assert!(
        matches!(
            r,
            Request::Health {
                stale_after_ms: 300_000
            }
        ),
        "{r:?}"
    );
    let r = parse_request(r#"{"op":"health","stale_after":1.5}"#).unwrap();
    assert!(
        matches!(
            r,
            Request::Health {
                stale_after_ms: 1500
            }
        ),
        "{r:?}"
    );
    assert!(matches!(
        parse_request(r#"{"op":"pause","id":"s1"}"#).unwrap(),
        Request::Command(Command::Pause(_))
    ));
    for (line, needle) in [
        (r#"{"op":"cancel"}"#, "not both"),
        (r#"{"op":"cancel","run":1,"all":true}"#, "not both"),
        (r#"{"op":"cancel","run":0}"#, "start at 1"),
        (r#"{"op":"cancel","all":true,"wait":-1}"#, "seconds"),
        (r#"{"op":"health","stale_after":"x"}"#, "must be a number"),
        (r#"{"op":"runs","status":"dreaming"}"#, "no run status"),
        (r#"{"op":"runs","extra":1}"#, "unknown field"),
        (r#"{"op":"resume_runs","run":1}"#, "unknown field"),
    ] {
        let e = parse_request(line).unwrap_err();
        assert!(e.to_string().contains(needle), "{line}: {e}");
    }
    for line in [
        r#"{"op":"runs"}"#,
        r#"{"op":"health"}"#,
        r#"{"op":"logs","run":1}"#,
        r#"{"op":"exec","id":"s1","program":"true"}"#,
        r#"{"op":"resume_runs"}"#,
    ] {
        let e = parse_line(line).unwrap_err();
        assert!(
            e.to_string().contains("not an engine command"),
            "{line}: {e}"
        );
    }
}

#[test]
fn bad_lines_are_typed_errors() {
    for (line, needle) in [
        ("", "malformed JSON"),
        ("[]", "must be a JSON object"),
        (r#"{"id":"s1"}"#, "op: missing"),
        (r#"{"op":"fly"}"#, "unknown op"),
        (
            r#"{"op":"activity","id":"../x","action":"a"}"#,
            "session id",
        ),
        (r#"{"op":"activity","id":"s1"}"#, "action: missing"),
        (
            r#"{"op":"activity","id":"s1","action":7}"#,
            "must be a string",
        ),
        (
            r#"{"op":"pause","id":"s1","extra":1}"#,
            "unknown field \"extra\"",
        ),
        (r#"{"op":"restore","id":"s1","index":-1}"#, "non-negative"),
        (r#"{"op":"meta","id":"s1","key":"k"}"#, "value: missing"),
        (
            r#"{"op":"create","config":{"timeout":"x"}}"#,
            "timeout must be a number",
        ),
    ] {
        let e = parse_line(line).unwrap_err();
        assert!(matches!(e, Error::InvalidInput { .. }), "{line}: {e}");
        assert!(e.to_string().contains(needle), "{line}: {e}");
    }
}

/// Issue 12, defect 11: a duplicate key was accepted, the last value winning.
#[test]
fn duplicate_keys_are_refused_at_every_level_of_a_line() {
    for line in [
        r#"{"op":"pause","id":"s1","id":"s2"}"#,
        r#"{"op":"pause","op":"pause","id":"s1"}"#,
        r#"{"op":"pause","id":"s1","session_id":"s1","id":"s1"}"#,
        r#"{"op":"activity","id":"s1","action":"a","action":"b"}"#,
        r#"{"op":"create","meta":{"k":1,"k":2}}"#,
        r#"{"op":"create","config":{"timeout":1,"timeout":2}}"#,
        r#"{"op":"activity","id":"s1","action":"a","details":{"k":1,"k":1}}"#,
        r#"{"op":"activity","id":"s1","action":"a","details":[{"x":{"k":1,"j":2,"k":3}}]}"#,
        r#"{"op":"meta","id":"s1","key":"k","value":{"a":null,"a":null}}"#,
        r#"{"op":"command","id":"s1","command":"c","success":true,"args":{"a":1,"a":1}}"#,
        r#"{"op":"chain_link","agent":"a","link":"e","metadata":{"m":1,"m":2}}"#,
    ] {
        let e = parse_line(line).unwrap_err();
        assert!(matches!(e, Error::InvalidInput { .. }), "{line}: {e}");
        assert!(e.to_string().contains("duplicate key"), "{line}: {e}");
    }
    // The same keys once each are fine.
    parse_line(r#"{"op":"activity","id":"s1","action":"a","details":{"k":{"k":1}}}"#).unwrap();
}

fn nested_text(depth: usize) -> String {
    format!("{}0{}", "[".repeat(depth), "]".repeat(depth))
}

/// Issue 12, defect 6: one nesting limit for every JSON value, refused at the input.
#[test]
fn json_values_nested_past_the_limit_are_refused_per_line_not_a_crash() {
    const LIMIT: usize = MAX_JSON_DEPTH;
    let lines = |d: &str| {
        [
            format!(r#"{{"op":"activity","id":"s1","action":"a","details":{d}}}"#),
            format!(r#"{{"op":"meta","id":"s1","key":"k","value":{d}}}"#),
            format!(r#"{{"op":"create","meta":{{"k":{d}}}}}"#),
            format!(r#"{{"op":"command","id":"s1","command":"c","success":true,"args":{d}}}"#),
            format!(r#"{{"op":"chain_link","agent":"a","link":"e","metadata":{d}}}"#),
        ]
    };
    for line in lines(&nested_text(LIMIT)) {
        parse_line(&line).unwrap_or_else(|e| panic!("{}: {e}", &line[..40]));
    }
    for depth in [LIMIT + 1, 126, 127, 128, 10_000, 1_000_000] {
        for line in lines(&nested_text(depth)) {
            let e = parse_line(&line).unwrap_err();
            assert!(matches!(e, Error::InvalidInput { .. }), "{depth}: {e}");
            assert!(e.to_string().contains("nested"), "{depth}: {e}");
        }
    }
}
