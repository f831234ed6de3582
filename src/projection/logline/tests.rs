use super::*;

#[test]
fn positions_are_read_from_our_lines_only() {
    assert_eq!(
        parse_key(br#"{"lsn":7,"sub":2,"event":"x"}"#),
        Some((Lsn(7), 2))
    );
    assert_eq!(
            parse_key(br#"{"timestamp": 1.0, "component": "session_engine", "metadata": {"lsn": 9, "details": {}}}"#),
            Some((Lsn(9), 0))
        );
    // An adopted line of amplihack's own, whatever its metadata says.
    assert_eq!(
        parse_key(br#"{"timestamp": 1.0, "component": "session_toolkit", "metadata": {"lsn": 9}}"#),
        None
    );
    assert_eq!(
        parse_key(br#"{"component": "session_engine", "metadata": {}}"#),
        None
    );
    assert_eq!(parse_key(b"not json"), None);
}

/// The general path of a seed line (the details as a `Value` tree), which the
/// activity fast path must match byte for byte.
fn general_seed_line(id: &SessionId, at: Timestamp, body: &EventBody, key: (Lsn, u32)) -> String {
    seed_line(id, at, body, key, details(id, body)).unwrap()
}

#[test]
fn seed_activity_lines_match_the_general_rendering() {
    let id = SessionId::new("s-1").unwrap();
    let at = Timestamp::from_secs(1_700_000_000);
    let texts = [
        None,
        Some(
            r#"{"z":1,"a":[1.5,-0.0,1e300,12345678901234567890],"m":{"k":"é\u0001\"\\"},"n":null}"#,
        ),
        Some(r#""just a string""#),
        Some("3.0"),
        Some(r#"[true,false,{"b":2,"a":1}]"#),
    ];
    for (i, t) in texts.iter().enumerate() {
        let details = t.map(|t| crate::types::JsonText::parse(t).unwrap());
        let body = EventBody::ActivityRecorded {
            session: id.clone(),
            action: "tool \"use\"".into(),
            details,
        };
        for key in [(Lsn(i as u64 + 1), 0), (Lsn(9), 3)] {
            let fast = seed_activity_line(&id, at, &body, key).expect("well-formed details");
            assert_eq!(
                fast,
                general_seed_line(&id, at, &body, key),
                "details {t:?}"
            );
        }
    }
}

#[test]
fn amplihack_activity_lines_match_the_general_rendering() {
    let id = SessionId::new("s-1").unwrap();
    let at = Timestamp(1_700_000_000_123_456);
    let texts = [
        None,
        Some(
            r#"{"z":1,"a":[1.5,-0.0,1e300,0.1,12345678901234567890,123456789012345678901234],"m":{"k":"é\u0001\"\\ 😀 \u2028"},"n":null,"neg":-7}"#,
        ),
        Some(r#""just a string""#),
        Some("3.0"),
        Some("1E5"),
        Some(r#"[true,false,{"b":2,"a":1},[],{}]"#),
        Some(r#"{"deep":{"er":{"est":[1,[2,[3]]]}}}"#),
    ];
    for (i, t) in texts.iter().enumerate() {
        let details = t.map(|t| crate::types::JsonText::parse(t).unwrap());
        let body = EventBody::ActivityRecorded {
            session: id.clone(),
            action: "tool \"use\" ü".into(),
            details,
        };
        for key in [(Lsn(i as u64 + 1), 0), (Lsn(9), 3)] {
            let fast = amplihack_activity_line(&id, at, &body, key).expect("well-formed details");
            let general = amplihack_line(&id, at, &body, key, super::details(&id, &body)).unwrap();
            assert_eq!(fast, general, "details {t:?}");
            assert!(fast.is_ascii(), "{fast}");
        }
    }
}
