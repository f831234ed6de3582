use super::*;

#[test]
fn session_ids_that_are_not_safe_file_names_are_refused() {
    for bad in [
        "",
        ".",
        "..",
        "../etc",
        "a/b",
        "a\\b",
        "-rf",
        ".hidden",
        "a b",
        "ä",
        "a\0b",
        &"x".repeat(129),
    ] {
        assert!(SessionId::new(bad).is_err(), "{bad:?} accepted");
    }
    for good in [
        "a",
        "abc-123_X.v2",
        &"x".repeat(128),
        "0190a4b6-7c3d-7e00-8000-000000000000",
    ] {
        assert!(SessionId::new(good).is_ok(), "{good:?} refused");
    }
}

#[test]
fn generated_ids_are_valid_and_distinct() {
    let a = SessionId::generate();
    let b = SessionId::generate();
    assert_ne!(a, b);
    assert!(SessionId::new(a.as_str()).is_ok());
}

#[test]
fn json_text_is_compacted_and_validated() {
    let j = JsonText::parse("{ \"a\" : [1, 2] }").unwrap();
    assert_eq!(j.as_str(), r#"{"a":[1,2]}"#);
    assert!(JsonText::parse("{").is_err());
    assert!(JsonText::parse("").is_err());
}

/// A float needing 17 digits is kept to the last bit (serde_json's `float_roundtrip`:
/// without it, `0.10200000000000001` was read as `0.102`, so an imported file or a
/// metadata value came back changed).
#[test]
fn json_text_keeps_every_float_exactly() {
    for text in [
        "0.10200000000000001",
        "1.9477003958951620e-169",
        "-1.0498824276453545e74",
    ] {
        let j = JsonText::parse(text).unwrap();
        let want: f64 = text.parse().unwrap();
        let got: f64 = j.as_str().parse().unwrap();
        assert_eq!(got.to_bits(), want.to_bits(), "{text} became {j}");
    }
}

#[test]
fn timestamps_format_as_documented() {
    let t = Timestamp::from_secs(1_762_597_800); // 2025-11-08T10:30:00Z
    assert_eq!(t.to_iso8601(), "2025-11-08T10:30:00Z");
    assert_eq!(
        Timestamp(t.0 + 5).to_iso8601_micros(),
        "2025-11-08T10:30:00.000005Z"
    );
}

fn nested_text(depth: usize) -> String {
    format!("{}0{}", "[".repeat(depth), "]".repeat(depth))
}

/// Issue 12: one nesting limit for JSON values, applied at the input as a typed error
/// (never a crash), and no duplicate keys (the stored value would lose one silently).
#[test]
fn json_text_refuses_nesting_past_the_limit_and_duplicate_keys() {
    const LIMIT: usize = MAX_JSON_DEPTH;
    assert!(JsonText::parse(&nested_text(LIMIT)).is_ok());
    for depth in [LIMIT + 1, 127, 128, 10_000, 1_000_000] {
        match JsonText::parse(&nested_text(depth)) {
            Err(Error::InvalidInput { reason, .. }) => {
                assert!(reason.contains("nested"), "{depth}: {reason}")
            }
            other => panic!("{depth}: {other:?}"),
        }
    }
    // A value built in memory obeys the same limit. (Built and dropped on a big stack:
    // serde_json's own drop of a deep value recurses.)
    std::thread::Builder::new()
        .stack_size(256 << 20)
        .spawn(|| {
            for depth in [LIMIT, LIMIT + 1, 10_000] {
                let v = (0..depth).fold(serde_json::json!(0), |v, _| {
                    serde_json::Value::Array(vec![v])
                });
                let r = JsonText::from_value(&v);
                assert_eq!(r.is_ok(), depth <= LIMIT, "{depth}: {r:?}");
                if let Err(e) = r {
                    assert!(e.to_string().contains("nested"), "{e}");
                }
            }
        })
        .unwrap()
        .join()
        .unwrap();
    for text in [
        r#"{"a":1,"a":1}"#,
        r#"{"a":1,"b":2,"a":3}"#,
        r#"[{"x":{"a":{},"a":[]}}]"#,
    ] {
        match JsonText::parse(text) {
            Err(Error::InvalidInput { reason, .. }) => {
                assert!(reason.contains("duplicate key"), "{text}: {reason}")
            }
            other => panic!("{text}: {other:?}"),
        }
    }
    // "JSON if it parses, else a string": only text that is not JSON becomes a string.
    for (text, kept) in [
        ("main", r#""main""#),
        ("{not json", r#""{not json""#),
        ("1e400", r#""1e400""#),
        (" [1, 2] ", "[1,2]"),
    ] {
        assert_eq!(JsonText::parse_or_string(text).unwrap().as_str(), kept);
    }
    for text in [r#"{"a":1,"a":2}"#, &nested_text(LIMIT + 1)] {
        assert!(JsonText::parse_or_string(text).is_err(), "{text}");
    }
    assert_eq!(
        JsonText::parse(r#"{"a":{"a":1},"b":{"a":2}}"#)
            .unwrap()
            .as_str(),
        r#"{"a":{"a":1},"b":{"a":2}}"#
    );
}
