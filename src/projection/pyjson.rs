//! JSON text exactly as Python's `json.dumps` writes it, for the files of the `amplihack`
//! format (written by amplihack with `json.dumps(data, indent=2, sort_keys=True,
//! ensure_ascii=False)`, its log lines with `json.dumps(entry)`).
//!
//! Python and serde_json agree on almost everything: the same escapes (`\"`, `\\`, `\b`,
//! `\f`, `\n`, `\r`, `\t`, `\u00XX` in lower case for the other control characters), the
//! same indentation, `{}` and `[]` for empty containers. They differ in three places,
//! which this module does Python's way:
//! * **floats**: Python's `repr(float)` (the shortest digits that round-trip, as Rust's
//!   `{:e}` gives them, written in fixed notation when the decimal exponent is in
//!   `-4 < decpt <= 16` and otherwise as `1e-05`, `1.5e+16`), where serde_json writes
//!   `1e-5` and `1e16`;
//! * **separators** without indentation: `", "` and `": "` (serde_json: `","` and `":"`);
//! * **`ensure_ascii=True`**: every character outside `' '..='~'` becomes `\uXXXX` (a pair
//!   of surrogates past U+FFFF), DEL included.
//!
//! Keys are sorted by code point (`sort_keys=True`) by [`Sorted`], which sorts each
//! object's keys while it writes them (Rust's `str` order is code point order).

use std::io;

use serde::Serialize;
use serde::ser::{SerializeMap, SerializeSeq, Serializer};
use serde_json::Value;
use serde_json::ser::Formatter;

/// Python's `repr()` of a finite float.
pub fn float_repr(x: f64) -> String {
    if x == 0.0 {
        return if x.is_sign_negative() { "-0.0" } else { "0.0" }.to_string();
    }
    if !x.is_finite() {
        // JSON cannot hold these; serde_json writes `null` before it gets here.
        return "null".to_string();
    }
    let sci = shortest_closest(x.abs());
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    let n = digits.len() as i32;
    let decpt = exp + 1;
    let mut out = String::with_capacity(24);
    if x < 0.0 {
        out.push('-');
    }
    if decpt > -4 && decpt <= 16 {
        if decpt <= 0 {
            out.push_str("0.");
            out.extend(std::iter::repeat_n('0', (-decpt) as usize));
            out.push_str(&digits);
        } else if decpt >= n {
            out.push_str(&digits);
            out.extend(std::iter::repeat_n('0', (decpt - n) as usize));
            out.push_str(".0");
        } else {
            out.push_str(&digits[..decpt as usize]);
            out.push('.');
            out.push_str(&digits[decpt as usize..]);
        }
    } else {
        out.push_str(&digits[..1]);
        if n > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        out.push('e');
        out.push(if exp < 0 { '-' } else { '+' });
        out.push_str(&format!("{:02}", exp.unsigned_abs()));
    }
    out
}

/// `x` in scientific notation with the fewest digits that read back as `x`, and of those
/// the one closest to `x` (ties to an even last digit), as Python's `repr` picks it.
/// Rust's `{:e}` finds the fewest digits but, when two such strings are equally close
/// (`971494685127620.25` lies halfway between `...620.2` and `...620.3`), may pick the
/// other one; formatting with that many digits, correctly rounded, settles it.
fn shortest_closest(x: f64) -> String {
    let shortest = format!("{x:e}");
    let digits = shortest
        .split_once('e')
        .map_or(0, |(m, _)| m.bytes().filter(u8::is_ascii_digit).count());
    let rounded = format!("{x:.prec$e}", prec = digits.saturating_sub(1));
    if rounded.parse::<f64>() == Ok(x) {
        rounded
    } else {
        shortest
    }
}

/// A `serde_json` formatter that writes what Python's `json.dumps` writes.
#[derive(Clone, Debug)]
pub struct PyFormatter {
    /// `Some(n)`: `indent=n`; `None`: one line with `", "` and `": "`.
    indent: Option<usize>,
    ensure_ascii: bool,
    level: usize,
    has_value: bool,
}

impl PyFormatter {
    /// `json.dumps(indent=2, ensure_ascii=False)`.
    pub fn pretty() -> PyFormatter {
        PyFormatter {
            indent: Some(2),
            ensure_ascii: false,
            level: 0,
            has_value: false,
        }
    }

    /// `json.dumps()` with its defaults: one line, `ensure_ascii=True`.
    pub fn line() -> PyFormatter {
        PyFormatter {
            indent: None,
            ensure_ascii: true,
            level: 0,
            has_value: false,
        }
    }

    fn newline<W: ?Sized + io::Write>(&self, w: &mut W) -> io::Result<()> {
        if let Some(n) = self.indent {
            w.write_all(b"\n")?;
            for _ in 0..self.level * n {
                w.write_all(b" ")?;
            }
        }
        Ok(())
    }

    /// Opens an array or object (`bracket`): one level deeper, nothing in it yet.
    fn open<W: ?Sized + io::Write>(&mut self, w: &mut W, bracket: &[u8]) -> io::Result<()> {
        self.level += 1;
        self.has_value = false;
        w.write_all(bracket)
    }

    /// Closes an array or object (`bracket`), on a line of its own if it holds anything.
    fn close<W: ?Sized + io::Write>(&mut self, w: &mut W, bracket: &[u8]) -> io::Result<()> {
        self.level -= 1;
        if self.has_value {
            self.newline(w)?;
        }
        w.write_all(bracket)
    }

    fn separator<W: ?Sized + io::Write>(&self, w: &mut W, first: bool) -> io::Result<()> {
        if !first {
            w.write_all(if self.indent.is_some() { b"," } else { b", " })?;
        }
        self.newline(w)
    }
}

impl Formatter for PyFormatter {
    fn write_f64<W: ?Sized + io::Write>(&mut self, w: &mut W, value: f64) -> io::Result<()> {
        w.write_all(float_repr(value).as_bytes())
    }

    fn write_f32<W: ?Sized + io::Write>(&mut self, w: &mut W, value: f32) -> io::Result<()> {
        self.write_f64(w, f64::from(value))
    }

    fn begin_array<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.open(w, b"[")
    }

    fn end_array<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.close(w, b"]")
    }

    fn begin_array_value<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> io::Result<()> {
        self.separator(w, first)
    }

    fn end_array_value<W: ?Sized + io::Write>(&mut self, _w: &mut W) -> io::Result<()> {
        self.has_value = true;
        Ok(())
    }

    fn begin_object<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.open(w, b"{")
    }

    fn end_object<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.close(w, b"}")
    }

    fn begin_object_key<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> io::Result<()> {
        self.separator(w, first)
    }

    fn begin_object_value<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        w.write_all(b": ")
    }

    fn end_object_value<W: ?Sized + io::Write>(&mut self, _w: &mut W) -> io::Result<()> {
        self.has_value = true;
        Ok(())
    }

    fn write_string_fragment<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        if !self.ensure_ascii || fragment.bytes().all(|b| (b' '..=b'~').contains(&b)) {
            return w.write_all(fragment.as_bytes());
        }
        let mut units = [0u16; 2];
        for c in fragment.chars() {
            if (' '..='~').contains(&c) {
                let mut buf = [0u8; 4];
                w.write_all(c.encode_utf8(&mut buf).as_bytes())?;
            } else {
                for u in c.encode_utf16(&mut units) {
                    write!(w, "\\u{u:04x}")?;
                }
            }
        }
        Ok(())
    }
}

/// A JSON value written with its object keys sorted (Python's `sort_keys=True`), at every
/// level, without copying it.
pub struct Sorted<'a>(pub &'a Value);

impl Serialize for Sorted<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Value::Object(m) => {
                let mut keys: Vec<&String> = m.keys().collect();
                keys.sort_unstable();
                let mut map = s.serialize_map(Some(keys.len()))?;
                for k in keys {
                    map.serialize_entry(k, &Sorted(&m[k]))?;
                }
                map.end()
            }
            Value::Array(a) => {
                let mut seq = s.serialize_seq(Some(a.len()))?;
                for v in a {
                    seq.serialize_element(&Sorted(v))?;
                }
                seq.end()
            }
            other => other.serialize(s),
        }
    }
}

/// `json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False)`: amplihack's
/// `safe_write_json`. No newline at the end, as Python writes none.
pub fn to_pretty_sorted(value: &Value) -> serde_json::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(256);
    let mut ser = serde_json::Serializer::with_formatter(&mut out, PyFormatter::pretty());
    Sorted(value).serialize(&mut ser)?;
    Ok(out)
}

/// `json.dumps(value)` with its defaults (keys in the order given, `ensure_ascii=True`):
/// amplihack's log lines.
pub fn to_line(value: &impl Serialize) -> serde_json::Result<String> {
    let mut out = Vec::with_capacity(256);
    let mut ser = serde_json::Serializer::with_formatter(&mut out, PyFormatter::line());
    value.serialize(&mut ser)?;
    // The formatter writes only ASCII or the UTF-8 of the strings it was given.
    String::from_utf8(out).map_err(|e| serde::ser::Error::custom(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// What CPython 3.11's `repr()` prints for these floats.
    #[test]
    #[allow(clippy::excessive_precision)] // the exact halfway values are the point
    fn floats_are_written_as_python_repr_writes_them() {
        for (x, py) in [
            (1762597800.123456, "1762597800.123456"),
            (300.0, "300.0"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (1.5e-7, "1.5e-07"),
            (1e16, "1e+16"),
            (1e15, "1000000000000000.0"),
            (1.2345678901234567e17, "1.2345678901234566e+17"),
            (0.1, "0.1"),
            (2.0 / 3.0, "0.6666666666666666"),
            (5e-324, "5e-324"),
            (1.7976931348623157e308, "1.7976931348623157e+308"),
            (-0.0, "-0.0"),
            (-2.5, "-2.5"),
            (0.30512309074401855, "0.30512309074401855"),
            (123.0, "123.0"),
            (1e22, "1e+22"),
            // Halfway between two shortest candidates: Python takes the even one.
            (971494685127620.25, "971494685127620.2"),
            (134758100070256.125, "134758100070256.12"),
        ] {
            assert_eq!(float_repr(x), py, "{x:e}");
        }
    }

    /// amplihack wrote these (`time.time()` values); serde_json without its
    /// `float_roundtrip` feature read them one unit in the last place off, and they came
    /// back as `...483`, `...84`.
    #[test]
    fn floats_read_from_a_document_are_written_back_as_they_were() {
        for text in [
            "1796176073.8593485",
            "1796176074.3676841",
            "1796176073.8684719",
        ] {
            let v: Value = serde_json::from_str(text).unwrap();
            assert_eq!(
                String::from_utf8(to_pretty_sorted(&v).unwrap()).unwrap(),
                text
            );
            assert_eq!(crate::types::JsonText::parse(text).unwrap().as_str(), text);
        }
    }

    #[test]
    fn documents_are_written_as_json_dumps_writes_them() {
        let v = json!({"b": [1, 2.0, {}], "a": {"z": null, "é": "ü\n"}, "c": []});
        assert_eq!(
            String::from_utf8(to_pretty_sorted(&v).unwrap()).unwrap(),
            "{\n  \"a\": {\n    \"z\": null,\n    \"é\": \"ü\\n\"\n  },\n  \"b\": [\n    1,\n    \
             2.0,\n    {}\n  ],\n  \"c\": []\n}"
        );
        assert_eq!(
            to_line(&json!({"m": "ü😀\u{7f}", "n": [1e-5, true]})).unwrap(),
            r#"{"m": "\u00fc\ud83d\ude00\u007f", "n": [1e-05, true]}"#
        );
    }
}
