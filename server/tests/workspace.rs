//! navigate, validate-path, validate-paths and agent-types through a real client on
//! loopback: the checks, and bad input of every kind answered with its status and
//! nothing changed.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::{Harness, assert_error, body};
use reqwest::Method;
use serde_json::{Value, json};
use session_engine::{ManagerOptions, SessionManager};

/// A git repository (`.git/HEAD` on branch `feature`) with a folder `src` in it.
fn repo(root: &Path) -> std::path::PathBuf {
    std::fs::create_dir_all(root.join("repo/.git")).expect("mkdir");
    std::fs::write(root.join("repo/.git/HEAD"), "ref: refs/heads/feature\n").expect("HEAD");
    std::fs::create_dir_all(root.join("repo/src")).expect("mkdir");
    std::fs::canonicalize(root.join("repo")).expect("canonical")
}

fn codes(report: &Value, list: &str) -> Vec<String> {
    report[list]
        .as_array()
        .expect("list")
        .iter()
        .map(|p| p["code"].as_str().expect("code").to_owned())
        .collect()
}

async fn validate(h: &Harness, path: &str) -> Value {
    let (st, v) = h
        .post("/api/claude/validate-path", json!({ "path": path }))
        .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["success"], true, "{v}");
    v["data"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validate_path_reports_the_canonical_target_git_permissions_and_space() {
    let h = Harness::start().await;
    let tmp = tempfile::tempdir().expect("tempdir");
    let repo = repo(tmp.path());
    let src = repo.join("src");

    let r = validate(&h, src.to_str().expect("utf8")).await;
    assert_eq!(r["valid"], true, "{r}");
    assert_eq!(r["canonical_path"], src.to_str().expect("utf8"));
    assert_eq!(r["is_directory"], true);
    assert_eq!(r["is_symlink"], false);
    assert_eq!(r["restricted"], false);
    assert_eq!(r["permissions"]["readable"], true);
    assert_eq!(r["git"]["is_repository"], true, "{r}");
    assert_eq!(r["git"]["root"], repo.to_str().expect("utf8"));
    assert_eq!(r["git"]["branch"], "feature");
    assert!(r["disk"]["total_bytes"].as_u64().expect("total") > 0, "{r}");
    assert!(
        r["disk"]["available_bytes"].as_u64().expect("available")
            <= r["disk"]["total_bytes"].as_u64().expect("total")
    );

    // A worktree's `.git` file names its git directory; a detached HEAD is a commit.
    std::fs::create_dir_all(tmp.path().join("gitdirs/wt")).expect("mkdir");
    std::fs::write(
        tmp.path().join("gitdirs/wt/HEAD"),
        format!("{}\n", "ab".repeat(20)),
    )
    .expect("HEAD");
    std::fs::create_dir_all(tmp.path().join("wt")).expect("mkdir");
    std::fs::write(tmp.path().join("wt/.git"), "gitdir: ../gitdirs/wt\n").expect(".git");
    let r = validate(&h, tmp.path().join("wt").to_str().expect("utf8")).await;
    assert_eq!(r["git"]["is_repository"], true, "{r}");
    assert_eq!(r["git"]["branch"], Value::Null);
    assert_eq!(r["git"]["head"], "ab".repeat(20));
    let gitdir = std::fs::canonicalize(tmp.path().join("gitdirs/wt")).expect("canonical");
    assert_eq!(r["git"]["git_dir"], gitdir.to_str().expect("utf8"));

    // Outside any repository.
    let plain = tempfile::tempdir().expect("tempdir");
    let r = validate(&h, plain.path().to_str().expect("utf8")).await;
    assert_eq!(r["valid"], true, "{r}");
    assert_eq!(r["git"]["is_repository"], false, "{r}");

    // A link is reported with its canonical target, every check made on the target.
    let link = tmp.path().join("link-to-src");
    std::os::unix::fs::symlink(&src, &link).expect("symlink");
    let r = validate(&h, link.to_str().expect("utf8")).await;
    assert_eq!(r["is_symlink"], true);
    assert_eq!(r["canonical_path"], src.to_str().expect("utf8"));
    assert_eq!(r["valid"], true);
    assert!(codes(&r, "warnings").contains(&"symlink".to_owned()), "{r}");
    // A link into a system folder is restricted, whatever its own name.
    let etc = tmp.path().join("innocent");
    std::os::unix::fs::symlink("/etc", &etc).expect("symlink");
    let r = validate(&h, etc.to_str().expect("utf8")).await;
    assert_eq!(r["canonical_path"], "/etc");
    assert_eq!(r["restricted"], true);
    assert_eq!(r["valid"], false);
    assert_eq!(codes(&r, "errors"), ["restricted"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validate_path_refusals() {
    let h = Harness::start().await;
    let tmp = tempfile::tempdir().expect("tempdir");
    let base = tmp.path().to_str().expect("utf8").to_owned();
    let file = tmp.path().join("file");
    std::fs::write(&file, "x").expect("write");
    let cases: Vec<(String, &str)> = vec![
        ("relative/path".into(), "not_absolute"),
        ("~/x".into(), "not_absolute"),
        (format!("{base}/../../etc"), "traversal"),
        ("/tmp/..".into(), "traversal"),
        (format!("{base}/missing"), "not_found"),
        (file.to_str().expect("utf8").into(), "not_directory"),
        ("/".into(), "restricted"),
        ("/etc".into(), "restricted"),
        ("/proc/self".into(), "restricted"),
        ("/usr/lib".into(), "restricted"),
        (
            h.data_dir().to_str().expect("utf8").into(),
            "data_directory",
        ),
    ];
    for (path, code) in cases {
        let r = validate(&h, &path).await;
        assert_eq!(r["valid"], false, "{path}: {r}");
        assert!(
            codes(&r, "errors").contains(&code.to_owned()),
            "{path}: {r}"
        );
    }
    // A traversal is refused before anything is looked up: no canonical path.
    let r = validate(
        &h,
        &format!(
            "{base}/../{}",
            tmp.path().file_name().unwrap().to_str().unwrap()
        ),
    )
    .await;
    assert_eq!(r["canonical_path"], Value::Null, "{r}");

    // Writable: a warning, or an error when required. (Root may write anywhere.)
    let ro = tmp.path().join("read-only");
    std::fs::create_dir(&ro).expect("mkdir");
    std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o555)).expect("chmod");
    if std::fs::write(ro.join("probe"), "x").is_err() {
        let r = validate(&h, ro.to_str().expect("utf8")).await;
        assert_eq!(r["valid"], true, "{r}");
        assert_eq!(r["permissions"]["writable"], false);
        assert_eq!(codes(&r, "warnings"), ["not_writable"]);
        let (_, v) = h
            .post(
                "/api/claude/validate-path",
                json!({ "path": ro, "require_writable": true }),
            )
            .await;
        assert_eq!(v["data"]["valid"], false, "{v}");
        assert_eq!(codes(&v["data"], "errors"), ["not_writable"]);
    }

    // Bad requests: 400 for a path that is no path or JSON that is no JSON, 422 for the
    // wrong shape.
    for (body, status) in [
        (json!({ "path": "" }), 400),
        (json!({ "path": "/tmp/a\u{0}b" }), 400),
        (json!({ "path": format!("/{}", "a".repeat(5000)) }), 400),
        (json!({ "path": 5 }), 422),
        (json!({ "path": ["/tmp"] }), 422),
        (json!({}), 422),
        (json!({ "path": "/tmp", "follow": true }), 422),
        (json!({ "path": "/tmp", "require_writable": "yes" }), 422),
    ] {
        let (st, v) = h.post("/api/claude/validate-path", body.clone()).await;
        assert_eq!(st, status, "{body}: {v}");
        assert_error(&v);
    }
    let (st, v) = body(
        h.req(Method::POST, "/api/claude/validate-path")
            .header("content-type", "application/json")
            .body("{\"path\": ")
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert_eq!(st, 400, "{v}");
    assert_error(&v);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validate_paths_checks_each_and_bounds_the_list() {
    let h = Harness::start().await;
    let tmp = tempfile::tempdir().expect("tempdir");
    let base = tmp.path().to_str().expect("utf8").to_owned();
    let paths = json!([base, "/etc", format!("{base}/nope"), "rel"]);
    let (st, v) = h
        .post("/api/claude/validate-paths", json!({ "paths": paths }))
        .await;
    assert_eq!(st, 200, "{v}");
    let d = &v["data"];
    assert_eq!(d["total"], 4);
    assert_eq!(d["valid_count"], 1);
    assert_eq!(d["invalid_count"], 3);
    let results = d["results"].as_array().expect("results");
    assert_eq!(results[0]["valid"], true);
    assert_eq!(codes(&results[1], "errors"), ["restricted"]);
    assert_eq!(codes(&results[2], "errors"), ["not_found"]);
    assert_eq!(codes(&results[3], "errors"), ["not_absolute"]);
    for (i, r) in results.iter().enumerate() {
        assert_eq!(r["path"], paths[i]);
    }
    let (_, v) = h
        .post("/api/claude/validate-paths", json!({ "paths": [] }))
        .await;
    assert_eq!(v["data"]["total"], 0, "{v}");

    let many: Vec<String> = (0..101).map(|_| base.clone()).collect();
    for (body, status) in [
        (json!({ "paths": many }), 400),
        (json!({ "paths": [base, ""] }), 400),
        (json!({ "paths": base }), 422),
        (json!({ "paths": [1, 2] }), 422),
        (json!({ "path": base }), 422),
    ] {
        let (st, v) = h.post("/api/claude/validate-paths", body.clone()).await;
        assert_eq!(st, status, "{body}: {v}");
        assert_error(&v);
    }
}

async fn metadata(h: &Harness, id: &str) -> Value {
    let (st, v) = h.get(&format!("/api/claude/sessions/{id}/metadata")).await;
    assert_eq!(st, 200, "{v}");
    v["data"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn navigate_records_the_canonical_directory_durably() {
    let mut h = Harness::start().await;
    let tmp = tempfile::tempdir().expect("tempdir");
    let repo = repo(tmp.path());
    let id = h.create("nav").await;
    let link = tmp.path().join("to-src");
    std::os::unix::fs::symlink(repo.join("src"), &link).expect("symlink");
    let before = h.lsn();
    let url = format!("/api/claude/sessions/{id}/navigate");
    let r = h
        .req(Method::POST, &url)
        .json(&json!({ "path": link, "validate_permissions": true, "update_git_state": true }))
        .send()
        .await
        .expect("send");
    let etag = r.headers()["etag"].to_str().expect("etag").to_owned();
    let (st, v) = body(r).await;
    assert_eq!(st, 200, "{v}");
    let src = repo.join("src").to_str().expect("utf8").to_owned();
    assert_eq!(v["data"]["working_directory"], src.as_str());
    assert_eq!(v["data"]["previous_working_directory"], Value::Null);
    assert_eq!(v["data"]["validation"]["is_symlink"], true);
    // Two events: the directory and the git state.
    assert_eq!(h.lsn(), before + 2);
    assert_eq!(etag, format!("\"{}\"", before + 2));
    let m = metadata(&h, &id).await;
    assert_eq!(m["working_directory"], src.as_str());
    assert_eq!(m["git"]["branch"], "feature");
    assert_eq!(m["git"]["root"], repo.to_str().expect("utf8"));

    // Without the git state: one event; the previous directory is reported.
    let other = tempfile::tempdir().expect("tempdir");
    let other_path = std::fs::canonicalize(other.path()).expect("canonical");
    let (st, v) = h
        .post(
            &url,
            json!({ "path": other_path, "update_git_state": false }),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["data"]["previous_working_directory"], src.as_str());
    assert_eq!(h.lsn(), before + 3);

    // If-Match with a stale version: 409, nothing written.
    let (st, v) = body(
        h.req(Method::POST, &url)
            .header("if-match", etag)
            .json(&json!({ "path": src }))
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert_eq!(st, 409, "{v}");
    assert_eq!(h.lsn(), before + 3);

    // Durable: a fresh open of the data directory has it.
    let server = h.server.take().expect("server");
    server.shutdown().await.expect("shutdown");
    h.manager.close().expect("close");
    let m = SessionManager::open_read_only(h.data_dir(), ManagerOptions::default().engine)
        .expect("reopen");
    let s = m.get_session(&id).expect("session");
    assert_eq!(
        s.get_metadata("working_directory").expect("meta"),
        Some(Value::String(other_path.to_str().expect("utf8").to_owned()))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn navigate_refusals_change_nothing() {
    let h = Harness::start().await;
    let tmp = tempfile::tempdir().expect("tempdir");
    let base = tmp.path().to_str().expect("utf8").to_owned();
    let id = h.create("nav").await;
    let url = format!("/api/claude/sessions/{id}/navigate");
    let escape = tmp.path().join("escape");
    std::os::unix::fs::symlink("/etc", &escape).expect("symlink");
    let file = tmp.path().join("file");
    std::fs::write(&file, "x").expect("write");
    let before = h.lsn();
    let meta_before = metadata(&h, &id).await;
    let cases = [
        (
            json!({ "path": format!("{base}/../..") }),
            400,
            Some("traversal"),
        ),
        (json!({ "path": escape }), 400, Some("restricted")),
        (json!({ "path": "/" }), 400, Some("restricted")),
        (
            json!({ "path": format!("{base}/missing") }),
            400,
            Some("not_found"),
        ),
        (json!({ "path": file }), 400, Some("not_directory")),
        (json!({ "path": "relative" }), 400, Some("not_absolute")),
        (json!({ "path": h.data_dir() }), 400, Some("data_directory")),
        (json!({ "path": "" }), 400, None),
        (json!({ "path": "/tmp\u{0}" }), 400, None),
        (json!({ "path": 7 }), 422, None),
        (
            json!({ "path": base, "validate_permissions": "no" }),
            422,
            None,
        ),
        (json!({ "path": base, "cd": true }), 422, None),
        (json!({}), 422, None),
    ];
    for (b, status, code) in cases {
        let (st, v) = h.post(&url, b.clone()).await;
        assert_eq!(st, status, "{b}: {v}");
        assert_error(&v);
        if let Some(code) = code {
            assert_eq!(v["error_kind"], "invalid_path", "{v}");
            let errors = codes(&v["data"]["validation"], "errors");
            assert!(errors.contains(&code.to_owned()), "{b}: {v}");
        }
    }
    // The link's target is what the refusal names.
    let (_, v) = h.post(&url, json!({ "path": escape })).await;
    assert_eq!(v["data"]["validation"]["canonical_path"], "/etc");
    let (st, v) = body(
        h.req(Method::POST, &url)
            .header("content-type", "application/json")
            .body("{\"path\": \"/tmp\"")
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert_eq!(st, 400, "{v}");
    // Sessions: unknown is 404, an id that is no id 400, an archived one 409.
    let (st, _) = h
        .post(
            "/api/claude/sessions/nope/navigate",
            json!({ "path": base }),
        )
        .await;
    assert_eq!(st, 404);
    let (st, _) = h
        .post(
            "/api/claude/sessions/a%2Fb/navigate",
            json!({ "path": base }),
        )
        .await;
    assert_eq!(st, 400);
    assert_eq!(h.lsn(), before, "a refused navigate wrote");
    assert_eq!(metadata(&h, &id).await, meta_before);
    h.manager.archive_session(&id).expect("archive");
    let archived = h.lsn();
    let (st, v) = h.post(&url, json!({ "path": base })).await;
    assert_eq!(st, 409, "{v}");
    assert_eq!(h.lsn(), archived);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_types_are_seed_002s_twelve() {
    let h = Harness::start().await;
    let (st, v) = h.get("/api/claude/agent-types").await;
    assert_eq!(st, 200, "{v}");
    let names: Vec<&str> = v["data"]["agent_types"]
        .as_array()
        .expect("types")
        .iter()
        .map(|t| t["type"].as_str().expect("type"))
        .collect();
    assert_eq!(
        names,
        [
            "ORCHESTRATOR",
            "FRONTEND",
            "BACKEND",
            "DATABASE",
            "API",
            "MIDDLEWARE",
            "DEVOPS",
            "SECURITY",
            "PERFORMANCE",
            "QUALITY",
            "DOCUMENTATION",
            "MONITORING"
        ]
    );
    assert_eq!(v["data"]["count"], 12);
    assert_eq!(
        v["data"]["agent_types"][0]["capabilities"],
        json!(["master-orchestrator", "smart-orchestrator"])
    );
}
