use super::*;

#[test]
fn file_names_parse_back() {
    let p = ProjectionPaths::new(Path::new("d"));
    let id = SessionId::new("a.b-c").unwrap();
    let name = |p: PathBuf| p.file_name().unwrap().to_str().unwrap().to_owned();
    assert_eq!(
        session_id_of_file(&name(p.session_file(&id))),
        Some(id.clone())
    );
    assert_eq!(session_id_of_log(&name(p.log_file(&id))), Some(id.clone()));
    assert_eq!(
        rotated_log_of(&name(p.rotated_log_file(&id, 7))),
        Some((id.clone(), 7))
    );
    let agent = AgentId::new("agent-1").unwrap();
    assert_eq!(
        agent_of_chain_file(&name(p.chain_file(&agent))),
        Some(agent)
    );
    assert_eq!(session_id_of_file("registry.json"), None);
    assert_eq!(session_id_of_file("session_.json"), None);
}

#[test]
fn chain_timestamps_have_no_offset_and_microseconds() {
    let t = Timestamp(1_762_597_800_000_005);
    assert_eq!(chain_timestamp(t), "2025-11-08T10:30:00.000005");
}

#[test]
fn garbage_markers_are_not_markers() {
    assert_eq!(
        Marker::parse(&serde_json::to_vec(&Marker::new(7)).unwrap()),
        Some(7)
    );
    assert_eq!(Marker::parse(b""), None);
    assert_eq!(Marker::parse(b"{\"lsn\":3}"), None);
    assert_eq!(
        Marker::parse(br#"{"format":"other","version":1,"lsn":3}"#),
        None
    );
}
