use super::*;

#[test]
fn integers_past_64_bits_are_found_outside_strings_only() {
    assert_eq!(
        inexact_integer(r#"{"a": 1, "b": -9223372036854775808, "c": 18446744073709551615}"#),
        None
    );
    assert_eq!(
        inexact_integer(r#"{"a": 18446744073709551616}"#),
        Some("18446744073709551616")
    );
    assert_eq!(
        inexact_integer(r#"{"a": "99999999999999999999", "b": 1e400}"#),
        None
    );
    assert_eq!(
        inexact_integer(r#"["\"", -99999999999999999999]"#),
        Some("-99999999999999999999")
    );
}
