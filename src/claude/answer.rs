//! The answer of `claude -p --output-format json`: one JSON object, Claude Code's result
//! message, on stdout.
//!
//! ```json
//! {"type":"result","subtype":"success","is_error":false,"duration_ms":2712,
//!  "duration_api_ms":2550,"num_turns":1,"result":"The answer.","stop_reason":"end_turn",
//!  "session_id":"5b2f0a3e-...","total_cost_usd":0.00064,
//!  "usage":{"input_tokens":560,"output_tokens":24},"modelUsage":{...},
//!  "permission_denials":[],"uuid":"..."}
//! ```
//!
//! `subtype` is `success`, or `error_max_turns`, `error_during_execution` and others
//! (an error result may carry no `result`). [`parse_answer`] requires `type` `"result"`,
//! a boolean `is_error`, a string `subtype` and a non-empty string `session_id` (the id a
//! later `--resume` takes); the other fields are read when present and of their type,
//! and anything else is ignored, so fields Claude Code adds later do not break it.

use serde_json::Value;

/// Most bytes of stdout kept for the answer; a longer answer is refused as malformed.
pub const MAX_ANSWER_BYTES: usize = 16 << 20;

/// Claude Code's result message, the fields the engine uses.
#[derive(Clone, Debug, PartialEq)]
pub struct ClaudeAnswer {
    /// `success`, `error_max_turns`, `error_during_execution`, ...
    pub subtype: String,
    /// Whether Claude Code reports the turn as failed.
    pub is_error: bool,
    /// The answer's text (absent from some error results).
    pub result: Option<String>,
    /// The Claude Code session this turn ran as (the next link of the agent's chain).
    pub session_id: String,
    /// What the turn cost, in US dollars.
    pub total_cost_usd: Option<f64>,
    /// The turn's wall-clock time, milliseconds.
    pub duration_ms: Option<u64>,
    /// Time spent in API calls, milliseconds.
    pub duration_api_ms: Option<u64>,
    /// Model turns taken.
    pub num_turns: Option<u64>,
    /// Token usage, as Claude Code gave it.
    pub usage: Option<Value>,
}

/// Why an answer is not a result message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AnswerError(pub String);

impl std::fmt::Display for AnswerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for AnswerError {}

/// Parses the whole of a `claude -p --output-format json` stdout (surrounding white space
/// aside) as its result message.
pub fn parse_answer(stdout: &[u8]) -> Result<ClaudeAnswer, AnswerError> {
    let bad = |s: String| Err(AnswerError(s));
    if stdout.len() > MAX_ANSWER_BYTES {
        return bad(format!(
            "it is more than {MAX_ANSWER_BYTES} bytes long ({} bytes)",
            stdout.len()
        ));
    }
    let text = match std::str::from_utf8(stdout) {
        Ok(t) => t.trim(),
        Err(e) => return bad(format!("it is not UTF-8 ({e})")),
    };
    if text.is_empty() {
        return bad("the program printed nothing on stdout".into());
    }
    let value: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => return bad(format!("it is not one JSON value ({e})")),
    };
    let Value::Object(o) = value else {
        return bad("it is not a JSON object".into());
    };
    match o.get("type") {
        Some(Value::String(t)) if t == "result" => {}
        Some(t) => return bad(format!("its \"type\" is {t}, not \"result\"")),
        None => return bad("it has no \"type\" field".into()),
    }
    let string = |k: &str| -> Result<Option<String>, AnswerError> {
        match o.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(v) => Err(AnswerError(format!("its \"{k}\" is {v}, not a string"))),
        }
    };
    let number = |k: &str| -> Result<Option<u64>, AnswerError> {
        match o.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v.as_u64().map(Some).ok_or_else(|| {
                AnswerError(format!("its \"{k}\" is {v}, not a whole number from 0"))
            }),
        }
    };
    let is_error = match o.get("is_error") {
        Some(Value::Bool(b)) => *b,
        Some(v) => return bad(format!("its \"is_error\" is {v}, not true or false")),
        None => return bad("it has no \"is_error\" field".into()),
    };
    let Some(subtype) = string("subtype")? else {
        return bad("it has no \"subtype\" field".into());
    };
    let session_id = match string("session_id")? {
        Some(s) if !s.is_empty() => s,
        _ => return bad("it has no \"session_id\" (or an empty one)".into()),
    };
    let total_cost_usd =
        match o.get("total_cost_usd") {
            None | Some(Value::Null) => None,
            Some(v) => Some(v.as_f64().ok_or_else(|| {
                AnswerError(format!("its \"total_cost_usd\" is {v}, not a number"))
            })?),
        };
    let usage = match o.get("usage") {
        None | Some(Value::Null) => None,
        Some(v @ Value::Object(_)) => Some(v.clone()),
        Some(v) => return bad(format!("its \"usage\" is {v}, not an object")),
    };
    Ok(ClaudeAnswer {
        subtype,
        is_error,
        result: string("result")?,
        session_id,
        total_cost_usd,
        duration_ms: number("duration_ms")?,
        duration_api_ms: number("duration_api_ms")?,
        num_turns: number("num_turns")?,
        usage,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// Shaped like a real answer (fields as Claude Code 2.x prints them).
    const OK: &str = r#"{"type":"result","subtype":"success","is_error":false,"duration_ms":2712,"duration_api_ms":2550,"num_turns":1,"result":"Hello.","stop_reason":"end_turn","session_id":"00000000-0000-4000-8000-000000000001","total_cost_usd":0.00064,"usage":{"input_tokens":560,"output_tokens":24},"modelUsage":{"claude-haiku-4-5":{"inputTokens":560}},"permission_denials":[],"uuid":"u"}"#;

    #[test]
    fn a_result_message_parses_with_its_fields() {
        let a = parse_answer(format!("\n{OK}\n").as_bytes()).unwrap();
        assert_eq!(a.subtype, "success");
        assert!(!a.is_error);
        assert_eq!(a.result.as_deref(), Some("Hello."));
        assert_eq!(a.session_id, "00000000-0000-4000-8000-000000000001");
        assert_eq!(a.total_cost_usd, Some(0.00064));
        assert_eq!(a.duration_ms, Some(2712));
        assert_eq!(a.duration_api_ms, Some(2550));
        assert_eq!(a.num_turns, Some(1));
        assert_eq!(a.usage.unwrap()["output_tokens"], 24);
    }

    #[test]
    fn an_error_result_without_text_parses() {
        let a = parse_answer(
            br#"{"type":"result","subtype":"error_max_turns","is_error":true,"session_id":"s"}"#,
        )
        .unwrap();
        assert!(a.is_error);
        assert_eq!(a.result, None);
        assert_eq!(a.subtype, "error_max_turns");
    }

    #[test]
    fn anything_else_is_refused_with_a_reason() {
        let cases: &[(&[u8], &str)] = &[
            (b"", "printed nothing"),
            (b"  \n", "printed nothing"),
            (b"not json", "not one JSON value"),
            (b"[1]", "not a JSON object"),
            (
                br#"{"type":"assistant","is_error":false,"subtype":"x","session_id":"s"}"#,
                "not \"result\"",
            ),
            (
                br#"{"is_error":false,"subtype":"x","session_id":"s"}"#,
                "no \"type\"",
            ),
            (
                br#"{"type":"result","subtype":"x","session_id":"s"}"#,
                "no \"is_error\"",
            ),
            (
                br#"{"type":"result","is_error":"no","subtype":"x","session_id":"s"}"#,
                "not true or false",
            ),
            (
                br#"{"type":"result","is_error":false,"session_id":"s"}"#,
                "no \"subtype\"",
            ),
            (
                br#"{"type":"result","is_error":false,"subtype":"x"}"#,
                "no \"session_id\"",
            ),
            (
                br#"{"type":"result","is_error":false,"subtype":"x","session_id":""}"#,
                "empty one",
            ),
            (
                br#"{"type":"result","is_error":false,"subtype":"x","session_id":7}"#,
                "not a string",
            ),
            (
                br#"{"type":"result","is_error":false,"subtype":"x","session_id":"s","num_turns":-1}"#,
                "not a whole number",
            ),
            (
                br#"{"type":"result","is_error":false,"subtype":"x","session_id":"s","total_cost_usd":"1"}"#,
                "not a number",
            ),
            (
                br#"{"type":"result","is_error":false,"subtype":"x","session_id":"s"} {}"#,
                "not one JSON value",
            ),
            (b"\xff\xfe", "not UTF-8"),
        ];
        for (bytes, want) in cases {
            let e = parse_answer(bytes).unwrap_err();
            assert!(
                e.0.contains(want),
                "{:?}: {e}",
                String::from_utf8_lossy(bytes)
            );
        }
        let big = vec![b' '; MAX_ANSWER_BYTES + 1];
        assert!(parse_answer(&big).unwrap_err().0.contains("bytes long"));
    }
}
