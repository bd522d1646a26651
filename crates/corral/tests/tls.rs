//! HTTPS off loopback, for real: a `corral orchestrator` listening on every address makes
//! its certificate and prints join strings; a `corral node` joins with one and serves
//! HTTPS itself; `corral submit --upload` renders a scene on it (real Blender) and gets
//! the frames back, all through pinned certificates. And the refusals: plain HTTP, a
//! client or a node pinning another fingerprint, and a node URL whose server presents a
//! certificate other than the one registered for it.

// Panicking on an unexpected answer is how these tests fail.
#![allow(clippy::unwrap_used)]

mod common;

use common::{describe, eventually, scene, Scene, CORRAL};
use corral_core::tls::{Fingerprint, JoinString};
use corral_http::tls::TlsIdentity;
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

/// A `corral` server process, killed when dropped (its stderr printed if the test fails).
struct Server {
    child: Child,
    /// What its first stdout line says it listens on.
    url: String,
    stderr: PathBuf,
}

impl Server {
    fn start(args: &[&str], stderr: PathBuf) -> Server {
        let file = std::fs::File::create(&stderr).unwrap();
        let mut child = Command::new(CORRAL)
            .args(args)
            .env(
                "RUST_LOG",
                "info,corral_orchestrator=debug,corral_http=debug",
            )
            .stdout(Stdio::piped())
            .stderr(file)
            .spawn()
            .unwrap();
        let mut line = String::new();
        let _ = BufReader::new(child.stdout.take().unwrap()).read_line(&mut line);
        let url = line
            .rsplit(' ')
            .next()
            .unwrap_or_default()
            .trim()
            .to_string();
        assert!(
            url.contains("://"),
            "{args:?} did not start: {line:?}\n{}",
            std::fs::read_to_string(&stderr).unwrap_or_default()
        );
        Server { child, url, stderr }
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    fn port(&self) -> u16 {
        self.url.rsplit(':').next().unwrap().parse().unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("---- {} ----\n{}", self.url, self.stderr());
        }
    }
}

fn corral(args: &[&str], cwd: &Path) -> Output {
    Command::new(CORRAL)
        .args(args)
        .current_dir(cwd)
        .env_remove("CORRAL_TOKEN")
        .env_remove("CORRAL_SERVER")
        .output()
        .unwrap()
}

/// The join string printed after `label` (`corral submit --server '` or `corral node
/// --orchestrator '`), pointed at 127.0.0.1:`port` (the farm prints this machine's name).
fn printed_join(stderr: &str, label: &str, port: u16) -> JoinString {
    let line = stderr
        .lines()
        .find(|l| l.trim_start().starts_with(label))
        .unwrap_or_else(|| panic!("no `{label}` line in:\n{stderr}"));
    let start = line.find("'corral://").unwrap() + 1;
    let end = start + line[start..].find('\'').unwrap();
    let mut join = JoinString::parse(&line[start..end]).unwrap();
    join.addresses = vec![format!("127.0.0.1:{port}")];
    join
}

/// A port free right now on every address (for a node, which must say where it is
/// reached before it listens).
fn free_port() -> u16 {
    std::net::TcpListener::bind("0.0.0.0:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn nodes(client_join: &str, cwd: &Path) -> Vec<Value> {
    let out = corral(&["nodes", "--json", "--server", client_join], cwd);
    assert!(out.status.success(), "{}", describe(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn start_node(dir: &Path, name: &str, port: u16, orchestrator: &str) -> Server {
    let listen = format!("0.0.0.0:{port}");
    let advertise = format!("https://127.0.0.1:{port}");
    let data = dir.join(name).join("data");
    let output = dir.join(name).join("out");
    Server::start(
        &[
            "node",
            "--listen",
            &listen,
            "--advertise",
            &advertise,
            "--orchestrator",
            orchestrator,
            "--data",
            data.to_str().unwrap(),
            "--output",
            output.to_str().unwrap(),
            "--threads",
            "1",
            "--render-mode",
            "cold",
        ],
        dir.join(format!("{name}.stderr")),
    )
}

#[test]
fn a_farm_off_loopback_serves_https_and_is_reached_only_through_its_pinned_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    let data = work.join("orchestrator");
    let orchestrator = Server::start(
        &[
            "orchestrator",
            "--listen",
            "0.0.0.0:0",
            "--data",
            data.to_str().unwrap(),
        ],
        work.join("orchestrator.stderr"),
    );
    assert!(
        orchestrator.url.starts_with("https://"),
        "{}",
        orchestrator.url
    );
    let port = orchestrator.port();
    assert!(eventually(Duration::from_secs(10), || orchestrator
        .stderr()
        .contains("corral node --orchestrator '")));
    let stderr = orchestrator.stderr();
    let client = printed_join(&stderr, "corral submit --server '", port);
    let join = printed_join(&stderr, "corral node --orchestrator '", port);

    // The certificate made on first start is what the join strings pin, and its key is
    // readable by the orchestrator's user only.
    let identity =
        TlsIdentity::from_pem_files(&data.join("tls/cert.pem"), &data.join("tls/key.pem")).unwrap();
    assert_eq!(client.fingerprints, [identity.fingerprint()]);
    assert_eq!(join.fingerprints, [identity.fingerprint()]);
    let mode = std::fs::metadata(data.join("tls/key.pem"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o077, 0, "key mode {mode:o}");
    assert!(stderr.contains(&identity.fingerprint().to_string()));

    // Through the pinned join string the farm answers; over plain HTTP, or pinning any
    // other certificate, nothing is read (the token is never sent to an impostor).
    let client_str = client.to_string();
    assert!(nodes(&client_str, work).is_empty());
    let token = client.token.clone().unwrap();
    let plain = corral(
        &[
            "jobs",
            "--server",
            &format!("http://127.0.0.1:{port}"),
            "--token",
            &token,
        ],
        work,
    );
    assert!(!plain.status.success(), "{}", describe(&plain));
    let impostor = JoinString {
        fingerprints: vec![Fingerprint::of_der(b"another certificate")],
        ..client.clone()
    };
    let out = corral(&["jobs", "--server", &impostor.to_string()], work);
    assert!(!out.status.success(), "{}", describe(&out));
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains(&identity.fingerprint().to_string()) && said.contains("not the farm's"),
        "{said}"
    );
    assert_eq!(said.lines().count(), 1, "one line: {said}");
    // `https://` with --fingerprint is the same pin, spelt out.
    let out = corral(
        &[
            "jobs",
            "--server",
            &format!("https://127.0.0.1:{port}"),
            "--token",
            &token,
            "--fingerprint",
            &identity.fingerprint().to_string(),
        ],
        work,
    );
    assert!(out.status.success(), "{}", describe(&out));
    // A bare HOST:PORT with a pin means HTTPS; an http:// address with a pin is refused
    // before anything (the token) is sent.
    let fp = identity.fingerprint().to_string();
    let bare = format!("127.0.0.1:{port}");
    let out = corral(
        &[
            "jobs",
            "--server",
            &bare,
            "--token",
            &token,
            "--fingerprint",
            &fp,
        ],
        work,
    );
    assert!(out.status.success(), "{}", describe(&out));
    let plain_url = format!("http://127.0.0.1:{port}");
    let out = corral(
        &[
            "jobs",
            "--server",
            &plain_url,
            "--token",
            &token,
            "--fingerprint",
            &fp,
        ],
        work,
    );
    assert!(!out.status.success(), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("plain HTTP"),
        "{}",
        describe(&out)
    );
    // A mistyped join string is refused without repeating its token.
    let typo = client_str.replacen('?', "&", 1);
    let out = corral(&["jobs", "--server", &typo], work);
    assert!(!out.status.success(), "{}", describe(&out));
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains(&token),
        "{}",
        describe(&out)
    );

    // A node pinning another certificate never registers: it does not trust the farm.
    let wrong_port = free_port();
    let wrong = JoinString {
        fingerprints: vec![Fingerprint::of_der(b"not the farm")],
        ..join.clone()
    };
    let wrong_node = start_node(work, "wrong", wrong_port, &wrong.to_string());
    assert!(eventually(Duration::from_secs(15), || wrong_node
        .stderr()
        .contains("cannot register")));
    assert!(wrong_node.stderr().contains("not the farm's"));

    // A node joining with the join string serves HTTPS itself, and registers the
    // fingerprint of the certificate it made.
    let node_port = free_port();
    let node = start_node(work, "node", node_port, &join.to_string());
    assert!(node.url.starts_with("https://"), "{}", node.url);
    let node_url = format!("https://127.0.0.1:{node_port}");
    assert!(
        eventually(Duration::from_secs(30), || nodes(&client_str, work)
            .iter()
            .any(|n| n["url"] == node_url.as_str() && n["state"] == "up")),
        "{:?}",
        nodes(&client_str, work)
    );
    assert_eq!(
        nodes(&client_str, work).len(),
        1,
        "the wrong node is not on the farm"
    );
    let node_identity = TlsIdentity::from_pem_files(
        &work.join("node/data/tls/cert.pem"),
        &work.join("node/data/tls/key.pem"),
    )
    .unwrap();
    // The node's API is not served over plain HTTP.
    let plain = reqwest::blocking::Client::new()
        .get(format!("http://127.0.0.1:{node_port}/info"))
        .timeout(Duration::from_secs(5))
        .send();
    assert!(
        plain.map_or(true, |r| !r.status().is_success()),
        "the node answered plain HTTP"
    );

    // A scene uploaded through the pinned farm renders on the TLS node, and its frames
    // come back.
    let blend = scene(Scene::Small);
    let shot = work.join("shot.blend");
    std::fs::copy(&blend, &shot).unwrap();
    let out = corral(
        &[
            "submit",
            shot.to_str().unwrap(),
            "--upload",
            "--frames",
            "1-3",
            "--wait",
            "--download",
            "dl",
            "--server",
            &client_str,
        ],
        work,
    );
    assert!(out.status.success(), "{}", describe(&out));
    let mut frames: Vec<String> = std::fs::read_dir(work.join("dl"))
        .unwrap()
        .flat_map(|e| {
            let path = e.unwrap().path();
            if path.is_dir() {
                std::fs::read_dir(path)
                    .unwrap()
                    .map(|f| f.unwrap().file_name().to_string_lossy().into_owned())
                    .collect::<Vec<_>>()
            } else {
                vec![path.file_name().unwrap().to_string_lossy().into_owned()]
            }
        })
        .filter(|name| name.ends_with(".png"))
        .collect();
    frames.sort();
    assert_eq!(frames.len(), 3, "{frames:?}\n{}", describe(&out));

    // The Blender add-on's farm client (plain Python, run here without Blender) takes
    // the same join string: it reads the job through the pinned certificate, and refuses
    // a farm presenting another one before sending its token.
    let out = corral(&["jobs", "--json", "--server", &client_str], work);
    assert!(out.status.success(), "{}", describe(&out));
    let jobs: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    let job_id = jobs[0]["id"].as_str().unwrap().to_string();
    let addon = |address: &str| {
        Command::new("python3")
            .arg("-c")
            .arg(
                "import sys, farm\n\
                 f = farm.Farm(sys.argv[1])\n\
                 try:\n    print(f.scenes_folder(), f.job(sys.argv[2])['state'])\n\
                 except farm.FarmError as e:\n    print('FarmError:', e)\n",
            )
            .arg(address)
            .arg(&job_id)
            .env(
                "PYTHONPATH",
                common::repo_root().join("addon/corral_submit"),
            )
            .output()
            .unwrap()
    };
    let out = addon(&client_str);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "None completed",
        "{}",
        describe(&out)
    );
    let out = addon(&impostor.to_string());
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.starts_with("FarmError:") && said.contains("not the one in the farm address"),
        "{}",
        describe(&out)
    );

    // A URL registered with a fingerprint its server does not present is never called
    // into work: the orchestrator refuses the handshake. Here a second real node (its
    // own certificate, its own secret) is registered, with the join token, under the
    // first node's fingerprint: it stays down. Registered again under its own
    // certificate's fingerprint, the same node comes up, so nothing but the certificate
    // kept it out.
    let other_port = free_port();
    let bogus = JoinString {
        token: Some("corral_not-a-token".into()),
        ..join.clone()
    };
    let other = start_node(work, "other", other_port, &bogus.to_string());
    let other_url = format!("https://127.0.0.1:{other_port}");
    let other_secret = std::fs::read_to_string(work.join("other/data/node-secret")).unwrap();
    let other_identity = TlsIdentity::from_pem_files(
        &work.join("other/data/tls/cert.pem"),
        &work.join("other/data/tls/key.pem"),
    )
    .unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let register = |fp: Fingerprint| {
        runtime.block_on(async {
            let pins = corral_client::Pins(join.fingerprints.clone());
            let api = corral_client::OrchestratorClient::pinned(&join.bases(), &pins).unwrap();
            api.set_token(join.token.clone());
            api.register_node(&other_url, Some(other_secret.trim()), Some(&fp))
                .await
        })
    };
    let registered = register(node_identity.fingerprint());
    assert!(registered.is_ok(), "{registered:?}");
    let state_of_other = || {
        nodes(&client_str, work)
            .iter()
            .find(|n| n["url"] == other_url.as_str())
            .map(|n| n["state"].clone())
    };
    assert!(
        !eventually(Duration::from_secs(5), || state_of_other()
            == Some(Value::from("up"))),
        "a node behind the wrong certificate came up"
    );
    let registered = register(other_identity.fingerprint());
    assert!(registered.is_ok(), "{registered:?}");
    assert!(
        eventually(Duration::from_secs(20), || state_of_other()
            == Some(Value::from("up"))),
        "{:?}\n{}",
        state_of_other(),
        other.stderr()
    );
}
