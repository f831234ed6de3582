use super::*;

#[test]
fn arbitrary_bytes_give_errors_not_panics() {
    let mut rng = crate::storage::SplitMix64::new(7);
    for len in [0usize, 1, 2, 7, 64, 300] {
        for _ in 0..200 {
            let mut buf = vec![0u8; len];
            rng.fill(&mut buf);
            assert!(parse_bundle(&buf).is_err());
        }
    }
    for text in [
        "",
        "[]",
        "null",
        "{}",
        "{\"format\":1}",
        "{\"format\":\"session-engine-bundle\"}",
        "{\"format\":\"session-engine-bundle\",\"version\":\"1\"}",
        "{\"format\":\"session-engine-bundle\",\"version\":2}",
        "{\"format\":\"session-engine-bundle\",\"version\":1,\"event_schema\":1,\
             \"events\":[],\"checksum\":\"crc32:00000000\"}",
    ] {
        assert!(parse_bundle(text.as_bytes()).is_err(), "{text:?} accepted");
    }
}

#[test]
fn foreign_and_future_files_are_told_apart() {
    assert!(matches!(
        parse_bundle(b"[1,2]"),
        Err(BundleError::Foreign { found: None })
    ));
    assert!(matches!(
        parse_bundle(br#"{"sessions":{}}"#),
        Err(BundleError::Foreign { found: None })
    ));
    assert!(matches!(
        parse_bundle(br#"{"format":"other"}"#),
        Err(BundleError::Foreign { found: Some(f) }) if f == "other"
    ));
    assert!(matches!(
        parse_bundle(br#"{"format":"session-engine-bundle","version":9}"#),
        Err(BundleError::UnsupportedVersion { found: 9 })
    ));
    assert!(matches!(
        parse_bundle(b"{\"format\""),
        Err(BundleError::NotJson { .. })
    ));
}
