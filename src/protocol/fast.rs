//! The fast path of [`super::parse_request`] for the line a bulk load sends most: a
//! well-formed `activity`.
//!
//! The general parser builds a `serde_json::Value` tree of the whole line (an allocation
//! per key, string and container), takes the fields out of it and serialises `details`
//! back to compact text. This one scans the line once and copies `details` into its
//! compact form directly. It accepts only lines whose result it can give exactly as the
//! general parser would: the same command, the same `details` text byte for byte. It
//! answers `None` for anything else (another op, a field it does not know or that is
//! given twice, a `null`, a string with an escape it does not copy, a number that is not
//! a plain integer, a bad id, bad JSON, a limit reached), and the general parser then
//! reads the line and gives the result or the error it always gave. The tests compare
//! the two on every line they parse.

use crate::command::Command;
use crate::types::{JsonText, MAX_JSON_DEPTH, MAX_JSON_LEN, SessionId};

/// Objects with more keys than this are left to the general parser.
const MAX_KEYS: usize = 64;

/// The command of a plain `activity` line, or `None` when the general parser must read it.
pub(super) fn activity(line: &str) -> Option<Command> {
    if line.len() > super::MAX_LINE_LEN {
        return None;
    }
    let mut s = Scan {
        b: line.as_bytes(),
        i: 0,
    };
    s.ws();
    s.eat(b'{')?;
    let (mut op, mut id, mut sid, mut action, mut details) = (None, None, None, None, None);
    s.ws();
    if s.peek()? != b'}' {
        loop {
            s.ws();
            let key = s.plain_string()?;
            s.ws();
            s.eat(b':')?;
            s.ws();
            let slot = match key {
                "op" => &mut op,
                "id" => &mut id,
                "session_id" => &mut sid,
                "action" => &mut action,
                "details" => {
                    if details.is_some() {
                        return None;
                    }
                    let mut out = String::with_capacity(64);
                    s.value(&mut out)?;
                    if out.len() > MAX_JSON_LEN || out == "null" {
                        return None;
                    }
                    details = Some(out);
                    s.ws();
                    if s.next_is(b',') {
                        continue;
                    }
                    break;
                }
                _ => return None,
            };
            if slot.is_some() {
                return None;
            }
            *slot = Some(s.plain_string()?);
            s.ws();
            if !s.next_is(b',') {
                break;
            }
        }
    }
    s.eat(b'}')?;
    s.ws();
    if s.i != s.b.len() || op? != "activity" {
        return None;
    }
    let session = match (id, sid) {
        (Some(a), Some(b)) if a != b => return None,
        (Some(x), _) | (None, Some(x)) => SessionId::new(x).ok()?,
        (None, None) => return None,
    };
    Some(Command::RecordActivity {
        session,
        action: action?.to_owned(),
        details: details.map(JsonText::from_compact),
    })
}

struct Scan<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Scan<'a> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.i += 1;
        }
    }

    fn eat(&mut self, c: u8) -> Option<()> {
        (self.peek()? == c).then(|| self.i += 1)
    }

    /// Consumes `c` if it is next.
    fn next_is(&mut self, c: u8) -> bool {
        self.eat(c).is_some()
    }

    /// A string without escapes or control characters, returned without its quotes.
    fn plain_string(&mut self) -> Option<&'a str> {
        self.eat(b'"')?;
        let start = self.i;
        loop {
            match self.peek()? {
                b'"' => break,
                b'\\' => return None,
                c if c < 0x20 => return None,
                _ => self.i += 1,
            }
        }
        let text = std::str::from_utf8(&self.b[start..self.i]).ok()?;
        self.i += 1;
        Some(text)
    }

    /// A string, copied to `out` as serde_json writes it: the escapes `\"`, `\\`, `\b`,
    /// `\f`, `\n`, `\r`, `\t` kept, `\/` written `/`; any `\u` escape gives up.
    fn string(&mut self, out: &mut String) -> Option<()> {
        self.eat(b'"')?;
        out.push('"');
        let mut start = self.i;
        loop {
            match self.peek()? {
                b'"' => break,
                b'\\' => {
                    out.push_str(std::str::from_utf8(&self.b[start..self.i]).ok()?);
                    let esc = *self.b.get(self.i + 1)?;
                    match esc {
                        b'"' | b'\\' | b'b' | b'f' | b'n' | b'r' | b't' => {
                            out.push('\\');
                            out.push(esc as char);
                        }
                        b'/' => out.push('/'),
                        _ => return None,
                    }
                    self.i += 2;
                    start = self.i;
                }
                c if c < 0x20 => return None,
                _ => self.i += 1,
            }
        }
        out.push_str(std::str::from_utf8(&self.b[start..self.i]).ok()?);
        self.i += 1;
        out.push('"');
        Some(())
    }

    /// An integer that serde_json keeps as an `i64` or `u64` (so prints as written):
    /// no fraction, no exponent, no `-0`, at most 18 digits.
    fn integer(&mut self, out: &mut String) -> Option<()> {
        let start = self.i;
        let neg = self.next_is(b'-');
        let digits = self.i;
        while let Some(b'0'..=b'9') = self.peek() {
            self.i += 1;
        }
        let n = self.i - digits;
        if n == 0 || n > 18 || (self.b[digits] == b'0' && (n > 1 || neg)) {
            return None;
        }
        if let Some(b'.' | b'e' | b'E') = self.peek() {
            return None;
        }
        out.push_str(std::str::from_utf8(&self.b[start..self.i]).ok()?);
        Some(())
    }

    fn literal(&mut self, word: &'static str, out: &mut String) -> Option<()> {
        let end = self.i + word.len();
        (self.b.get(self.i..end)? == word.as_bytes()).then_some(())?;
        self.i = end;
        out.push_str(word);
        Some(())
    }

    /// One JSON value in compact form, arrays and objects at most [`MAX_JSON_DEPTH`]
    /// levels deep, no object with a key twice. Iterative: a stack of the open
    /// containers, each object with the keys seen so far.
    fn value(&mut self, out: &mut String) -> Option<()> {
        let mut stack: Vec<Open<'a>> = Vec::new();
        loop {
            // A value is expected here.
            self.ws();
            match self.peek()? {
                b'{' | b'[' if stack.len() == MAX_JSON_DEPTH => return None,
                b'{' => {
                    self.i += 1;
                    out.push('{');
                    self.ws();
                    if self.next_is(b'}') {
                        out.push('}');
                    } else {
                        stack.push(Open::Object(Vec::new()));
                        self.key(&mut stack, out)?;
                        continue;
                    }
                }
                b'[' => {
                    self.i += 1;
                    out.push('[');
                    self.ws();
                    if self.next_is(b']') {
                        out.push(']');
                    } else {
                        stack.push(Open::Array);
                        continue;
                    }
                }
                b'"' => self.string(out)?,
                b't' => self.literal("true", out)?,
                b'f' => self.literal("false", out)?,
                b'n' => self.literal("null", out)?,
                b'-' | b'0'..=b'9' => self.integer(out)?,
                _ => return None,
            }
            // A value ended: close containers until one goes on or none is open.
            loop {
                let Some(open) = stack.last() else {
                    return Some(());
                };
                self.ws();
                if self.next_is(b',') {
                    out.push(',');
                    if let Open::Object(_) = open {
                        self.ws();
                        self.key(&mut stack, out)?;
                    }
                    break;
                }
                match open {
                    Open::Array => {
                        self.eat(b']')?;
                        out.push(']');
                    }
                    Open::Object(_) => {
                        self.eat(b'}')?;
                        out.push('}');
                    }
                }
                stack.pop();
            }
        }
    }

    /// An object's key (a plain string) and its colon, for the object on top of
    /// `stack`; a key seen before in the same object gives up.
    fn key(&mut self, stack: &mut [Open<'a>], out: &mut String) -> Option<()> {
        let key = self.plain_string()?;
        let Some(Open::Object(keys)) = stack.last_mut() else {
            return None;
        };
        // Many keys: the general parser checks them (this check is quadratic).
        if keys.len() >= MAX_KEYS || keys.contains(&key) {
            return None;
        }
        keys.push(key);
        self.ws();
        self.eat(b':')?;
        out.push('"');
        out.push_str(key);
        out.push_str("\":");
        Some(())
    }
}

/// An array or object open in [`Scan::value`].
enum Open<'k> {
    Array,
    Object(Vec<&'k str>),
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fast path's answer for `line`, checked against the general parser: where it
    /// answers, the general parser gives the same command.
    fn fast(line: &str) -> Option<Command> {
        let got = activity(line);
        if let Some(cmd) = &got {
            let general = super::super::parse::parse_line_general(line)
                .unwrap_or_else(|e| panic!("fast path took {line:?}, the general parser: {e}"));
            assert_eq!(cmd, &general, "{line}");
        }
        got
    }

    fn details_of(cmd: &Command) -> Option<&str> {
        match cmd {
            Command::RecordActivity { details, .. } => details.as_ref().map(JsonText::as_str),
            other => panic!("not an activity: {other:?}"),
        }
    }

    #[test]
    fn plain_activities_take_the_fast_path_and_equal_the_general_parser() {
        let lines = [
            r#"{"op":"activity","id":"s1","action":"tool_use","details":{"tool":"Edit","file":"src/a.rs","lines":[1,17],"ok":true,"tokens":-42,"note":"x"}}"#,
            r#"{"op":"activity","id":"s1","action":"a"}"#,
            r#"{"action":"a","details":[],"session_id":"s1","op":"activity"}"#,
            r#"{"op":"activity","id":"s1","session_id":"s1","action":"a","details":{}}"#,
            r#"  { "op" : "activity" , "id" : "s1", "action": "a" , "details" : { "b" : [ 1 , [ ] , { } , null , false ] , "a" : "é \" \\ \/ \n \t \b \f \r" } }  "#,
            r#"{"op":"activity","id":"s1","action":"a","details":"just text"}"#,
            r#"{"op":"activity","id":"s1","action":"a","details":0}"#,
            r#"{"op":"activity","id":"s1","action":"a","details":-123456789012345678}"#,
            r#"{"op":"activity","id":"s1","action":"a","details":[[{"x":[{"y":{}}]}]]}"#,
            r#"{"op":"activity","id":"s1","action":"a","details":{"a":{"a":1},"b":{"a":2}}}"#,
        ];
        for line in lines {
            assert!(fast(line).is_some(), "not taken: {line}");
        }
        let cmd = fast(lines[4]).unwrap();
        assert_eq!(
            details_of(&cmd),
            Some(r#"{"b":[1,[],{},null,false],"a":"é \" \\ / \n \t \b \f \r"}"#)
        );
    }

    #[test]
    fn anything_else_is_left_to_the_general_parser() {
        let lines = [
            // Not an activity, or not only the fields it knows.
            r#"{"op":"create","id":"s1"}"#,
            r#"{"op":"activity","id":"s1","action":"a","extra":1}"#,
            r#"{"id":"s1","action":"a"}"#,
            r#"{"op":"activity","action":"a"}"#,
            r#"{"op":"activity","id":"s1"}"#,
            // Given twice, or disagreeing.
            r#"{"op":"activity","id":"s1","id":"s2","action":"a"}"#,
            r#"{"op":"activity","id":"s1","action":"a","details":1,"details":2}"#,
            r#"{"op":"activity","id":"s1","session_id":"s2","action":"a"}"#,
            r#"{"op":"activity","id":"s1","action":"a","details":{"k":1,"k":2}}"#,
            // Nulls, escapes it does not copy, numbers it does not keep as written.
            r#"{"op":"activity","id":"s1","action":"a","details":null}"#,
            r#"{"op":"activity","id":null,"session_id":"s1","action":"a"}"#,
            r#"{"op":"activity","id":"s1","action":"a\n"}"#,
            r#"{"op":"activity","id":"s1","action":"a","details":"\u00e9"}"#,
            r#"{"op":"activity","id":"s1","action":"a","details":{"\n":1}}"#,
            r#"{"op":"activity","id":"s1","action":"a","details":1.5}"#,
            r#"{"op":"activity","id":"s1","action":"a","details":1e3}"#,
            r#"{"op":"activity","id":"s1","action":"a","details":-0}"#,
            r#"{"op":"activity","id":"s1","action":"a","details":1234567890123456789}"#,
            // Bad ids, bad JSON.
            r#"{"op":"activity","id":"../x","action":"a"}"#,
            r#"{"op":"activity","id":"s1","action":"a","details":01}"#,
            r#"{"op":"activity","id":"s1","action":"a","details":[1,]}"#,
            r#"{"op":"activity","id":"s1","action":"a","details":{"a":1,}}"#,
            r#"{"op":"activity","id":"s1","action":"a",}"#,
            r#"{"op":"activity","id":"s1","action":"a"} x"#,
            r#"{"op":"activity","id":"s1","action":"a","details":tru}"#,
            r#"{"op":"activity","id":"s1","action":"a","details":[1 2]}"#,
            r#"{"op":"activity","id":"s1","action":"a","details":"a	b"}"#,
            r#"{"op":"activity","id":"s1","action":"a","details":{"a"}}"#,
            r#"{"op":"activity","id":"s1","action":"a""#,
            "",
            "[]",
        ];
        for line in lines {
            assert!(activity(line).is_none(), "taken: {line}");
        }
    }

    #[test]
    fn the_depth_limit_is_the_general_parsers() {
        let nested = |n: usize| {
            format!(
                r#"{{"op":"activity","id":"s1","action":"a","details":{}1{}}}"#,
                "[".repeat(n),
                "]".repeat(n)
            )
        };
        assert!(fast(&nested(MAX_JSON_DEPTH)).is_some());
        assert!(activity(&nested(MAX_JSON_DEPTH + 1)).is_none());
        assert!(super::super::parse_line(&nested(MAX_JSON_DEPTH + 1)).is_err());
        let wide: Vec<String> = (0..MAX_KEYS + 1).map(|i| format!("\"k{i}\":{i}")).collect();
        let line = format!(
            r#"{{"op":"activity","id":"s1","action":"a","details":{{{}}}}}"#,
            wide.join(",")
        );
        assert!(activity(&line).is_none());
        assert!(super::super::parse_line(&line).is_ok());
    }

    /// Generated lines (a small deterministic generator, no dependency): wherever the
    /// fast path answers, it equals the general parser ([`fast`] checks), and it answers
    /// for every line built only of what it copies.
    #[test]
    fn generated_lines_agree_with_the_general_parser() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        fn gen_value(
            next: &mut dyn FnMut(u64) -> u64,
            depth: usize,
            out: &mut String,
            plain: &mut bool,
        ) {
            let atoms = [
                "1",
                "-7",
                "0",
                "true",
                "false",
                "null",
                "\"x\"",
                "\"a\\\"b\"",
                "\"\\u0041\"",
                "2.5",
                "\"é/\\/\"",
                "123456789012345678",
            ];
            match next(if depth > 4 { 1 } else { 3 }) {
                0 => {
                    let a = atoms[next(atoms.len() as u64) as usize];
                    if a.contains("\\u") || a.contains('.') {
                        *plain = false;
                    }
                    out.push_str(a);
                }
                1 => {
                    out.push_str("[ ");
                    for i in 0..next(4) {
                        if i > 0 {
                            out.push_str(" ,");
                        }
                        gen_value(next, depth + 1, out, plain);
                    }
                    out.push(']');
                }
                _ => {
                    out.push('{');
                    let n = next(4);
                    for i in 0..n {
                        if i > 0 {
                            out.push(',');
                        }
                        let k = next(3);
                        out.push_str(&format!("\"k{k}_{i}\" : "));
                        gen_value(next, depth + 1, out, plain);
                    }
                    out.push('}');
                }
            }
        }
        let mut taken = 0;
        for _ in 0..2_000 {
            let mut details = String::new();
            let mut plain = true;
            gen_value(&mut next, 0, &mut details, &mut plain);
            let line =
                format!(r#"{{"op":"activity","id":"s1","action":"a","details": {details} }}"#);
            let got = fast(&line);
            if plain && details != "null" {
                assert!(got.is_some(), "not taken: {line}");
            }
            taken += usize::from(got.is_some());
        }
        assert!(taken > 500, "only {taken} lines took the fast path");
    }
}
