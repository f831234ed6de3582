//! `History` against the session's own vectors: counts, ranges, newest first, the
//! point-in-time view, an empty session, refused ranges.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use super::*;
use crate::manager::{ClaudeSession, CommandRun, ManagerOptions, SessionManager};
use crate::state::Details;
use crate::{NewSession, Status};

fn open() -> (tempfile::TempDir, SessionManager) {
    let dir = tempfile::tempdir().unwrap();
    let m = SessionManager::open(dir.path(), ManagerOptions::default()).unwrap();
    (dir, m)
}

fn create(m: &SessionManager, id: &str) -> ClaudeSession {
    m.create_session(NewSession {
        id: Some(SessionId::new(id).unwrap()),
        ..NewSession::default()
    })
    .unwrap()
}

fn actions(it: impl Iterator<Item = Result<Entry<Activity>>>) -> Vec<(usize, String)> {
    it.map(|e| {
        let e = e.unwrap();
        (e.index, e.value.action.to_string())
    })
    .collect()
}

/// Every activity, command and decision of `h`, compared with the session's vectors.
fn assert_matches_state(h: &History, s: &Session) {
    let a: Vec<_> = h.activities().iter().map(|e| e.unwrap().value).collect();
    let want: Vec<_> = s.body.activity_log.iter().cloned().collect();
    assert_eq!(a.len(), want.len());
    for (got, want) in a.iter().zip(&want) {
        assert_eq!((&got.action, got.timestamp), (&want.action, want.timestamp));
        // Details in the log are read; those in memory (or none) are as the state has them.
        match &want.details {
            Details::InLog(_) => assert!(matches!(got.details, Details::Inline(_))),
            d => assert_eq!(&got.details, d),
        }
    }
    let c: Vec<_> = h.commands().iter().map(|e| e.unwrap().value).collect();
    assert_eq!(c, s.body.commands.iter().cloned().collect::<Vec<_>>());
    let d: Vec<_> = h.decisions().iter().map(|e| e.unwrap().value).collect();
    assert_eq!(d, s.body.decisions.iter().cloned().collect::<Vec<_>>());
    assert_eq!(h.activities().len(), s.body.activity_log.len());
    assert_eq!(h.commands().len(), s.body.commands.len());
    assert_eq!(h.decisions().len(), s.body.decisions.len());
}

#[test]
fn an_empty_session_has_empty_histories_and_only_the_empty_range() {
    let (_d, m) = open();
    create(&m, "e");
    let h = m.history("e").unwrap();
    assert_eq!(h.session_id().as_str(), "e");
    assert_eq!(h.as_of(), m.last_lsn());
    for (len, empty) in [
        (h.activities().len(), h.activities().is_empty()),
        (h.commands().len(), h.commands().is_empty()),
        (h.decisions().len(), h.decisions().is_empty()),
    ] {
        assert_eq!(len, 0);
        assert!(empty);
    }
    assert_eq!(h.activities().iter().count(), 0);
    assert_eq!(h.activities().range(..).unwrap().count(), 0);
    assert_eq!(h.activities().range(0..0).unwrap().count(), 0);
    assert_eq!(h.decisions().iter().rev().count(), 0);
    assert!(h.activities().get(0).unwrap().is_none());
    assert_eq!(h.commands().page(5, 10).count(), 0);
    let err = h.activities().range(0..1).unwrap_err();
    assert!(
        matches!(
            err,
            Error::InvalidInput {
                field: "history range",
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("0 activities"), "{err}");
}

#[test]
fn counts_ranges_and_newest_first_follow_the_sessions_vectors() {
    let (_d, m) = open();
    let s = create(&m, "s");
    for i in 0..10 {
        s.record_activity(&format!("a{i}"), Some(serde_json::json!({ "i": i })))
            .unwrap();
    }
    s.record_command(CommandRun::succeeded("ls", Duration::from_millis(3)))
        .unwrap();
    s.record_command(CommandRun::failed("make", "boom", Duration::from_millis(9)))
        .unwrap();
    s.log_decision("use imbl", "cheap clones", Some("Vec"))
        .unwrap();
    let h = m.history("s").unwrap();
    let snap = s.snapshot().unwrap();
    assert_matches_state(&h, &snap);
    assert_eq!(h.activities().len(), 10);
    assert_eq!(h.commands().len(), 2);
    assert_eq!(h.decisions().len(), 1);

    let acts = h.activities();
    let want = |r: std::ops::Range<usize>| -> Vec<(usize, String)> {
        r.map(|i| (i, format!("a{i}"))).collect()
    };
    assert_eq!(actions(acts.range(3..6).unwrap()), want(3..6));
    assert_eq!(actions(acts.range(3..=5).unwrap()), want(3..6));
    assert_eq!(actions(acts.range(7..).unwrap()), want(7..10));
    assert_eq!(actions(acts.range(..2).unwrap()), want(0..2));
    assert_eq!(actions(acts.range(10..10).unwrap()), vec![]);
    let mut rev = want(0..10);
    rev.reverse();
    assert_eq!(actions(acts.iter().rev()), rev);
    let mut rev = want(4..8);
    rev.reverse();
    assert_eq!(actions(acts.range(4..8).unwrap().rev()), rev);
    assert_eq!(acts.range(4..8).unwrap().len(), 4);
    // Both ends of one iterator meet in the middle, nothing twice.
    let mut it = acts.range(0..3).unwrap();
    assert_eq!(it.next().unwrap().unwrap().index, 0);
    assert_eq!(it.next_back().unwrap().unwrap().index, 2);
    assert_eq!(it.next().unwrap().unwrap().index, 1);
    assert!(it.next().is_none() && it.next_back().is_none());
    assert_eq!(acts.iter().nth(9).unwrap().unwrap().index, 9);
    assert!(acts.iter().nth(10).is_none());
    assert_eq!(acts.iter().nth_back(2).unwrap().unwrap().index, 7);
    // Paging is the clamped form.
    assert_eq!(actions(acts.page(8, 5)), want(8..10));
    assert_eq!(actions(acts.page(11, 5)), vec![]);
    assert_eq!(actions(acts.page(2, 0)), vec![]);
    assert_eq!(actions(acts.page(usize::MAX, usize::MAX)), vec![]);
    // Point reads.
    let e = acts.get(4).unwrap().unwrap();
    assert_eq!((e.index, &*e.value.action), (4, "a4"));
    assert_eq!(e.value.details.text().unwrap().as_str(), r#"{"i":4}"#);
    assert!(acts.get(10).unwrap().is_none());
    // The other kinds.
    let c: Vec<_> = h.commands().iter().rev().map(|e| e.unwrap()).collect();
    assert_eq!((c[0].index, &*c[0].value.command), (1, "make"));
    assert!(!c[0].value.success);
    assert_eq!(c[0].value.error.as_deref(), Some("boom"));
    assert_eq!((c[1].index, &*c[1].value.command), (0, "ls"));
    let d = h.decisions().get(0).unwrap().unwrap();
    assert_eq!(&*d.value.what, "use imbl");
    assert_eq!(d.value.alternatives.as_deref(), Some("Vec"));
}

#[test]
fn ranges_out_of_bounds_are_typed_errors_before_anything_is_read() {
    let (_d, m) = open();
    let s = create(&m, "s");
    for i in 0..3 {
        s.record_activity(&format!("a{i}"), None).unwrap();
    }
    let h = m.history("s").unwrap();
    let acts = h.activities();
    #[allow(clippy::reversed_empty_ranges)]
    let bad: Vec<Result<Iter<'_, Activity>>> = vec![
        acts.range(0..4),
        acts.range(4..),
        acts.range(2..1),
        acts.range(..=3),
        acts.range(..=usize::MAX),
        acts.range((Bound::Excluded(usize::MAX), Bound::Unbounded)),
    ];
    for r in bad {
        let err = r.unwrap_err();
        assert!(
            matches!(
                err,
                Error::InvalidInput {
                    field: "history range",
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("3 activities"), "{err}");
    }
    assert_eq!(acts.range(3..).unwrap().count(), 0);
    assert_eq!(
        h.decisions().range(0..1).unwrap_err().kind(),
        "invalid_input"
    );
}

#[test]
fn a_view_does_not_change_with_later_commits_and_a_restore_cuts_later_views() {
    let (_d, m) = open();
    let s = create(&m, "s");
    s.record_activity("one", None).unwrap();
    s.save_checkpoint(Some("cp")).unwrap();
    s.record_activity("two", None).unwrap();
    let before = s.history().unwrap();
    s.record_activity("three", None).unwrap();
    assert_eq!(actions(before.activities().iter()).len(), 2);
    let all = m.history("s").unwrap();
    assert_eq!(
        actions(all.activities().iter()),
        [(0, "one".into()), (1, "two".into()), (2, "three".into())]
    );
    s.restore_checkpoint(None).unwrap();
    let after = m.history("s").unwrap();
    assert_eq!(actions(after.activities().iter()), [(0, "one".into())]);
    assert_matches_state(&after, &s.snapshot().unwrap());
    // The earlier views keep what they saw.
    assert_eq!(all.activities().len(), 3);
    assert_eq!(all.as_of().0 + 1, after.as_of().0);
}

#[test]
fn the_point_in_time_view_is_the_session_as_of_that_lsn() {
    let (_d, m) = open();
    let s = create(&m, "s");
    let mut lsns = vec![m.last_lsn()];
    for i in 0..4 {
        lsns.push(s.record_activity(&format!("a{i}"), None).unwrap());
    }
    lsns.push(
        s.record_command(CommandRun::succeeded("ls", Duration::ZERO))
            .unwrap(),
    );
    lsns.push(s.log_decision("w", "y", None).unwrap());
    s.end().unwrap();
    assert_eq!(s.status().unwrap(), Status::Ended);
    for &lsn in &lsns {
        let h = m.history_at("s", lsn).unwrap();
        assert_eq!(h.as_of(), lsn);
        let then = m.session_at("s", lsn).unwrap().unwrap();
        assert_matches_state(&h, &then);
    }
    let h = m.history_at("s", lsns[2]).unwrap();
    assert_eq!(
        actions(h.activities().iter().rev()),
        [(1, "a1".into()), (0, "a0".into())]
    );
    assert_eq!(h.commands().len(), 0);
    // The current view equals the view as of the last LSN.
    let now = m.history("s").unwrap();
    let at_last = m.history_at("s", m.last_lsn()).unwrap();
    assert_eq!(now.as_of(), at_last.as_of());
    assert_matches_state(&at_last, &s.snapshot().unwrap());
    assert_matches_state(&now, &s.snapshot().unwrap());
}

#[test]
fn unknown_sessions_lsns_past_the_end_and_bad_ids_are_typed_errors() {
    let (_d, m) = open();
    create(&m, "s");
    create(&m, "t");
    assert!(matches!(
        m.history("nope"),
        Err(Error::NotFound {
            kind: "session",
            ..
        })
    ));
    assert!(matches!(m.history("../x"), Err(Error::InvalidInput { .. })));
    // `t` did not exist yet right after LSN 1.
    let err = m.history_at("t", Lsn(1)).unwrap_err();
    assert_eq!(err.to_string(), "session not found: t at LSN 1");
    assert!(matches!(
        m.history_at("s", Lsn(0)),
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        m.history_at("s", Lsn(99)),
        Err(Error::LsnOutOfRange { .. })
    ));
}

#[test]
fn a_history_of_a_body_in_memory_reads_that_body() {
    let (_d, m) = open();
    let s = create(&m, "s");
    s.record_activity("x", None).unwrap();
    let snap = s.snapshot().unwrap();
    let h = History::of_body(snap.id.clone(), Lsn(7), &snap.body);
    assert_eq!(h.as_of(), Lsn(7));
    assert_matches_state(&h, &snap);
}
