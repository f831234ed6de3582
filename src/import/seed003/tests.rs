use super::*;

#[test]
fn created_at_parses_as_isoformat_writes_it() {
    let t = parse_created_at("2025-11-08T10:30:00.123456").unwrap();
    assert_eq!(chain_timestamp(t), "2025-11-08T10:30:00.123456");
    let t = parse_created_at("2025-11-08T10:30:00").unwrap();
    assert_eq!(chain_timestamp(t), "2025-11-08T10:30:00.000000");
    let t = parse_created_at("2025-11-08 10:30:00.5").unwrap();
    assert_eq!(chain_timestamp(t), "2025-11-08T10:30:00.500000");
    let t = parse_created_at("2025-11-08T12:30:00+02:00").unwrap();
    assert_eq!(chain_timestamp(t), "2025-11-08T10:30:00.000000");
    let t = parse_created_at("2025-11-08T10:30:00Z").unwrap();
    assert_eq!(chain_timestamp(t), "2025-11-08T10:30:00.000000");
    for bad in [
        "",
        "yesterday",
        "2025-11-08",
        "2025-13-08T10:30:00",
        "10:30:00",
    ] {
        assert_eq!(parse_created_at(bad), None, "{bad:?}");
    }
}

#[test]
fn wide_integers_are_found_outside_strings_only() {
    assert_eq!(wide_integer(r#"{"a":[1,-2,1.5e300]}"#), None);
    assert_eq!(wide_integer(r#"{"a":"123456789012345678901234"}"#), None);
    assert_eq!(wide_integer(r#"{"a\"":18446744073709551615}"#), None);
    assert_eq!(
        wide_integer(r#"{"a":18446744073709551616}"#),
        Some("18446744073709551616")
    );
    assert_eq!(
        wide_integer(r#"[-9223372036854775809]"#),
        Some("-9223372036854775809")
    );
}

#[test]
fn sniffing_tells_bundles_from_tracker_files() {
    assert!(matches!(
        sniff(br#"{"format":"session-engine-bundle","events":[]}"#),
        Sniffed::Bundle
    ));
    assert!(matches!(
        sniff(br#"{"agent_id":"a","current_session_id":null,"sessions":[]}"#),
        Sniffed::Chain
    ));
    assert!(matches!(sniff(b"[1]"), Sniffed::Neither));
    assert!(matches!(sniff(b"{"), Sniffed::Neither));
}
