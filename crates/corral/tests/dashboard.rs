//! The web dashboard in a real browser: a real `corral up` with real Blender, driven
//! through Debian's headless Chromium by chromedriver (WebDriver, with fantoccini). It
//! submits through the form (a bad field first), watches the progress bar and the frame
//! grid reach completed without a reload, sees thumbnails and the preview video's link,
//! cancels a running job, sees the nodes with their Blender version, restarts the farm
//! under an open page and sees it recover, and answers the token question. Screenshots of
//! every page are saved to `target/dashboard-screenshots/` (printed at the end).

mod common;

use common::{eventually, scene, Scene, CORRAL};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `corral up` on a fixed loopback port (so the page can find it again after a
/// restart), in its own folders. Killed (SIGKILL) when dropped.
struct Farm {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
}

impl Farm {
    fn start() -> Farm {
        let dir = tempfile::Builder::new()
            .prefix("corral-dash-")
            .tempdir()
            .expect("temp dir");
        std::fs::create_dir_all(dir.path().join("scenes")).expect("scenes folder");
        let port = free_port();
        let mut farm = Farm {
            child: None,
            port,
            dir,
        };
        farm.launch();
        farm
    }

    fn launch(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("up.log"))
            .expect("log file");
        let child = Command::new(CORRAL)
            .args(["up", "--nodes", "2", "--threads", "1", "--batch-size", "6"])
            .arg("--listen")
            .arg(format!("127.0.0.1:{}", self.port))
            .arg("--scenes")
            .arg(self.dir.path().join("scenes"))
            .arg("--output")
            .arg(self.dir.path().join("out"))
            .arg("--data")
            .arg(self.dir.path().join("data"))
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .expect("start corral up");
        self.child = Some(child);
        let ready = eventually(Duration::from_secs(60), || {
            http_get(&format!("{}/readyz", self.url())).is_some()
        });
        assert!(ready, "corral up did not answer:\n{}", self.log());
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("up.log")).unwrap_or_default()
    }

    fn add_scene(&self, which: Scene, name: &str) {
        std::fs::copy(scene(which), self.dir.path().join("scenes").join(name)).expect("copy scene");
    }

    fn submit(&self, body: Value) -> String {
        tokio::task::block_in_place(|| {
            let client = reqwest::blocking::Client::new();
            let res = client
                .post(format!("{}/api/v1/jobs", self.url()))
                .json(&body)
                .send()
                .expect("submit");
            assert_eq!(res.status(), 202, "submit {body}");
            let job: Value = res.json().expect("job JSON");
            job["id"].as_str().expect("job id").to_string()
        })
    }
}

impl Drop for Farm {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("---- corral up ----\n{}", self.log());
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// GET `url`: the body of a 2xx answer. (reqwest's blocking client, kept off the test's
/// async workers.)
fn http_get(url: &str) -> Option<bytes_body::Body> {
    tokio::task::block_in_place(|| {
        let res = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .ok()?
            .get(url)
            .send()
            .ok()
            .filter(|r| r.status().is_success())?;
        res.bytes().ok().map(|b| bytes_body::Body(b.to_vec()))
    })
}

/// The status and content type of GET `url`.
fn http_head(url: &str) -> (u16, String) {
    tokio::task::block_in_place(|| {
        let res = reqwest::blocking::get(url).expect("GET");
        let kind = res
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        (res.status().as_u16(), kind)
    })
}

mod bytes_body {
    /// An answer's body.
    pub struct Body(pub Vec<u8>);

    impl Body {
        pub fn json(&self) -> serde_json::Result<serde_json::Value> {
            serde_json::from_slice(&self.0)
        }
    }
}

/// chromedriver on a free port, killed when dropped.
struct Driver {
    child: Child,
    url: String,
}

impl Driver {
    fn start() -> Driver {
        let port = free_port();
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver (scripts/install-deps.sh installs chromium-driver)");
        let url = format!("http://127.0.0.1:{port}");
        let up = eventually(Duration::from_secs(30), || {
            http_get(&format!("{url}/status")).is_some()
        });
        assert!(up, "chromedriver did not start");
        Driver { child, url }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn screenshot_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("target folder")
        .join("dashboard-screenshots");
    std::fs::create_dir_all(&dir).expect("screenshot folder");
    dir
}

async fn shoot(browser: &Client, name: &str) {
    let png = browser.screenshot().await.expect("screenshot");
    let path = screenshot_dir().join(format!("{name}.png"));
    std::fs::write(&path, png).expect("write screenshot");
}

/// Polls `check` (a JavaScript expression answering true when done) in the page.
async fn until(browser: &Client, what: &str, timeout: Duration, check: &str) {
    let deadline = Instant::now() + timeout;
    let script = format!("return !!({check});");
    loop {
        match browser.execute(&script, vec![]).await {
            Ok(Value::Bool(true)) => return,
            Ok(_) | Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            other => {
                let body = browser
                    .execute("return document.body.innerText;", vec![])
                    .await
                    .unwrap_or_default();
                shoot(browser, &format!("failed-{}", what.replace(' ', "-"))).await;
                panic!("{what}: not within {timeout:?} ({other:?}); the page said:\n{body}");
            }
        }
    }
}

async fn js(browser: &Client, script: &str) -> Value {
    browser.execute(script, vec![]).await.expect("script")
}

/// The text of the element `css` finds now (read in the page: live views replace their
/// elements, so a WebDriver element reference may be stale by the time it is read).
async fn text(browser: &Client, css: &str) -> String {
    let script = "const e = document.querySelector(arguments[0]); return e ? e.innerText : null;";
    match browser.execute(script, vec![json!(css)]).await {
        Ok(Value::String(s)) => s,
        other => panic!("{css}: {other:?}"),
    }
}

/// Clicks what `css` finds, finding it again if a live update replaced it meanwhile.
async fn click(browser: &Client, css: &str) {
    let mut last = None;
    for _ in 0..5 {
        match browser.find(Locator::Css(css)).await {
            Ok(el) => match el.click().await {
                Ok(()) => return,
                Err(e) => last = Some(e.to_string()),
            },
            Err(e) => last = Some(e.to_string()),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("click {css}: {last:?}");
}

/// Chooses `path` in the file input `css`.
async fn send_file(browser: &Client, css: &str, path: &Path) {
    let el = browser
        .find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"));
    el.send_keys(&path.display().to_string())
        .await
        .expect("choose a file");
}

async fn set_field(browser: &Client, css: &str, value: &str) {
    let el = browser
        .find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"));
    el.clear().await.expect("clear");
    el.send_keys(value).await.expect("type");
}

async fn browser(driver: &Driver) -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": "/usr/bin/chromium",
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1440,1000", "--hide-scrollbars", "--autoplay-policy=no-user-gesture-required"]
        }),
    );
    // chromedriver is on loopback: plain HTTP.
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    ClientBuilder::new(connector)
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .expect("a Chromium session through chromedriver")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_in_a_real_browser() {
    let started = Instant::now();
    let mut farm = Farm::start();
    farm.add_scene(Scene::Showcase, "showcase.blend");
    farm.add_scene(Scene::Slow, "slow.blend");
    let driver = Driver::start();
    let b = browser(&driver).await;
    let base = farm.url();

    // ---- submit through the form: a bad field first, shown beside it ----
    b.goto(&format!("{base}/submit"))
        .await
        .expect("open /submit");
    until(
        &b,
        "scenes listed",
        Duration::from_secs(10),
        "document.querySelector('#scene-list option[value=\"showcase.blend\"]')",
    )
    .await;
    // A scene uploaded through the form (a file that is no .blend is refused beside the
    // scene field first).
    let junk = farm.dir.path().join("notes.blend");
    std::fs::write(&junk, b"not a scene").expect("junk file");
    send_file(&b, "#f-upload", &junk).await;
    until(
        &b,
        "the refused upload's problem",
        Duration::from_secs(10),
        "!document.querySelector('#err-scene').hidden",
    )
    .await;
    assert!(text(&b, "#err-scene").await.contains("not a .blend"));
    let shot = farm.dir.path().join("shot-010.blend");
    std::fs::copy(scene(Scene::Showcase), &shot).expect("copy scene");
    send_file(&b, "#f-upload", &shot).await;
    until(
        &b,
        "the uploaded scene named in the form",
        Duration::from_secs(20),
        "document.querySelector('#f-scene').value === 'uploads/shot-010.blend'",
    )
    .await;
    assert!(farm
        .dir
        .path()
        .join("scenes/uploads/shot-010.blend")
        .is_file());
    // The scene's own range (1-24), which corral up reads with Blender, is the default.
    assert_eq!(
        js(&b, "return document.querySelector('#range-own').checked").await,
        json!(true)
    );
    set_field(&b, "#f-chunk_size", "6").await;
    set_field(&b, "#f-priority", "5000").await;
    set_field(&b, "#f-fps", "12").await;
    click(&b, "#submit-button").await;
    until(
        &b,
        "the priority problem beside its field",
        Duration::from_secs(10),
        "!document.querySelector('#err-priority').hidden",
    )
    .await;
    let problem = text(&b, "#err-priority").await;
    assert!(problem.contains("between -1000 and 1000"), "{problem}");
    assert_eq!(
        js(
            &b,
            "return document.querySelector('#f-priority').getAttribute('aria-invalid')"
        )
        .await,
        json!("true")
    );
    shoot(&b, "submit-problem").await;
    set_field(&b, "#f-priority", "10").await;
    click(&b, "#submit-button").await;
    until(
        &b,
        "the job's page",
        Duration::from_secs(10),
        "location.pathname.startsWith('/jobs/') && document.querySelector('#frame-grid .cell')",
    )
    .await;
    let job = js(&b, "return location.pathname.split('/')[2]").await;
    let job = job.as_str().expect("job id in the address").to_string();
    // Nothing below may reload the page: this mark would be gone.
    js(&b, "window.__noReload = 1; return 1").await;

    // ---- the job renders: bar and grid fill in live ----
    until(
        &b,
        "some frames done",
        Duration::from_secs(90),
        "document.querySelectorAll('#frame-grid .cell.s-done').length >= 5",
    )
    .await;
    b.set_window_size(1440, 1500).await.expect("window size");
    shoot(&b, "job-rendering").await;
    until(
        &b,
        "the job completed",
        Duration::from_secs(120),
        "document.querySelector('.job-head .badge')?.dataset.state === 'completed'",
    )
    .await;
    until(
        &b,
        "every cell done",
        Duration::from_secs(10),
        "document.querySelectorAll('#frame-grid .cell.s-done').length === 24",
    )
    .await;
    assert!(text(&b, "#frames-text").await.contains("24 / 24"));
    let bar = js(&b, "return document.querySelector('.big-bar [role=progressbar]').getAttribute('aria-valuenow')").await;
    assert_eq!(bar, json!("24"));
    until(&b, "24 thumbnails loaded", Duration::from_secs(30),
        "[...document.querySelectorAll('#thumbnails img')].filter(i => i.complete && i.naturalWidth === 160).length === 24").await;
    until(
        &b,
        "the preview video's link",
        Duration::from_secs(60),
        "document.querySelector('#preview-link')",
    )
    .await;
    assert_eq!(
        js(&b, "return window.__noReload").await,
        json!(1),
        "the page reloaded"
    );
    let href = js(&b, "return document.querySelector('#preview-link').href").await;
    let href = href.as_str().expect("link").to_string();
    assert!(
        href.ends_with(&format!("/api/v1/jobs/{job}/preview.mp4")),
        "{href}"
    );
    let mp4 = http_get(&href).expect("the preview video").0;
    assert_eq!(mp4.get(4..8), Some(&b"ftyp"[..]), "an MP4");
    let preview: Value = http_get(&format!("{base}/api/v1/jobs/{job}/preview"))
        .expect("preview state")
        .json()
        .expect("JSON");
    assert_eq!(preview["state"], "ready");
    // The media API: a thumbnail and a full frame by content type; a frame not rendered
    // is a problem, not a guess.
    let frame =
        |n: i64, what: &str| http_head(&format!("{base}/api/v1/jobs/{job}/frames/{n}/{what}"));
    assert_eq!(frame(3, "thumbnail"), (200, "image/png".into()));
    assert_eq!(frame(3, "image"), (200, "image/png".into()));
    assert_eq!(frame(99, "image"), (404, "application/problem+json".into()));
    assert_eq!(frame(99, "thumbnail").0, 404);
    // A task's whole Blender log, a click away (fetched from its node).
    let log_link = js(
        &b,
        "return document.querySelector('#tasks-table a.full-log[data-log=\"0\"]').href",
    )
    .await;
    let log = http_get(log_link.as_str().expect("the log link")).expect("the full log");
    let log = String::from_utf8_lossy(&log.0);
    assert!(log.contains("Saved:") && log.contains("Blender"), "{log}");
    assert_eq!(preview["fps"], 12.0);
    until(
        &b,
        "the video's metadata",
        Duration::from_secs(10),
        "document.querySelector('video.preview-video')?.readyState >= 1",
    )
    .await;
    js(
        &b,
        "const v = document.querySelector('video.preview-video'); v.preload = 'auto'; v.load(); \
         v.addEventListener('canplaythrough', () => { v.currentTime = 1; }, { once: true }); return 1",
    )
    .await;
    // The video decodes: it plays up to a second in.
    until(
        &b,
        "the video showing a frame a second in",
        Duration::from_secs(15),
        "(v => v.readyState >= 3 && !v.seeking && v.currentTime >= 0.9)(document.querySelector('video.preview-video'))",
    )
    .await;
    shoot(&b, "job-completed").await;

    // A thumbnail opens the full frame.
    click(&b, "#thumbnails a.thumb[data-thumb='12']").await;
    until(&b, "the frame viewer", Duration::from_secs(5),
        "document.querySelector('#frame-dialog').open && document.querySelector('#frame-image').naturalWidth === 160").await;
    shoot(&b, "frame-viewer").await;
    b.execute(
        "document.querySelector('#frame-dialog').close(); return 1",
        vec![],
    )
    .await
    .expect("close");

    // ---- a running job: sample progress in the grid, then cancel it ----
    let slow = farm.submit(
        json!({"scene": "slow.blend", "from": 1, "to": 40, "chunk_size": 4, "priority": 5}),
    );
    click(&b, "nav a[data-nav=jobs]").await;
    until(
        &b,
        "the new job in the list",
        Duration::from_secs(10),
        &format!("document.querySelector('tr[data-job=\"{slow}\"]')"),
    )
    .await;
    until(
        &b,
        "the slow job running",
        Duration::from_secs(30),
        &format!(
            "document.querySelector('tr[data-job=\"{slow}\"] .badge')?.dataset.state === 'running'"
        ),
    )
    .await;
    shoot(&b, "jobs").await;
    click(&b, &format!("tr[data-job=\"{slow}\"] .job-name a")).await;
    until(&b, "a frame rendering with its samples", Duration::from_secs(30),
        "[...document.querySelectorAll('#frame-grid .cell.s-rendering')].some(c => c.style.getPropertyValue('--p'))").await;
    let label = js(&b, "return document.querySelector('#frame-grid .cell.s-rendering[style]').getAttribute('aria-label')").await;
    assert!(label.as_str().unwrap_or("").contains("samples"), "{label}");
    shoot(&b, "job-running").await;

    // ---- nodes, with their Blender version and the chunk each renders ----
    click(&b, "nav a[data-nav=nodes]").await;
    until(
        &b,
        "two nodes rendering the slow job",
        Duration::from_secs(15),
        "[...document.querySelectorAll('#nodes .node')].filter(n => n.dataset.state === 'rendering' && n.querySelector('.chunk a')).length === 2",
    )
    .await;
    let version = text(&b, "#nodes .node .blender-version").await;
    assert!(
        version.starts_with("3.") || version.starts_with("4."),
        "Blender version: {version}"
    );
    until(
        &b,
        "a node's current frame and samples",
        Duration::from_secs(15),
        "document.querySelector('#nodes .chunk')?.innerText.includes('samples')",
    )
    .await;
    b.set_window_size(1440, 900).await.expect("window size");
    shoot(&b, "nodes").await;
    b.back().await.expect("back to the job");
    until(
        &b,
        "the slow job's page again",
        Duration::from_secs(10),
        "document.querySelector('.job-head [data-action=cancel]')",
    )
    .await;
    // Its priority changes from the page.
    set_field(&b, "#priority-input", "7").await;
    click(&b, ".job-head [data-action=priority]").await;
    until(
        &b,
        "the new priority shown",
        Duration::from_secs(10),
        "[...document.querySelectorAll('#job-stats div')].some(d => d.innerText.startsWith('PRIORITY') && d.innerText.endsWith('7'))",
    )
    .await;
    click(&b, ".job-head [data-action=cancel]").await;
    assert_eq!(
        text(&b, ".job-head [data-action=cancel]").await,
        "Confirm cancel"
    );
    click(&b, ".job-head [data-action=cancel]").await;
    until(
        &b,
        "the job cancelled",
        Duration::from_secs(20),
        "document.querySelector('.job-head .badge')?.dataset.state === 'cancelled'",
    )
    .await;
    assert!(text(&b, ".job-head .badge").await.contains("Cancelled"));
    // A cancelled job can be requeued from its page (and is cancelled again at once, so
    // the farm is free for what follows).
    click(&b, ".job-head [data-action=requeue]").await;
    until(
        &b,
        "the job requeued and running",
        Duration::from_secs(20),
        "document.querySelector('.job-head .badge')?.dataset.state === 'running'",
    )
    .await;
    click(&b, ".job-head [data-action=cancel]").await;
    click(&b, ".job-head [data-action=cancel]").await;
    until(
        &b,
        "the job cancelled again",
        Duration::from_secs(20),
        "document.querySelector('.job-head .badge')?.dataset.state === 'cancelled'",
    )
    .await;

    // The cancelled renders were stopped: both nodes go idle, live.
    click(&b, "nav a[data-nav=nodes]").await;
    until(
        &b,
        "both nodes idle",
        Duration::from_secs(20),
        "[...document.querySelectorAll('#nodes .node')].every(n => n.dataset.state === 'idle')",
    )
    .await;
    // Drain a node, then enable it again.
    click(&b, "#nodes .node [data-action=drain]").await;
    until(
        &b,
        "a node draining",
        Duration::from_secs(10),
        "document.querySelector('#nodes .node[data-state=draining] .badge')?.innerText === 'Draining'",
    )
    .await;
    click(&b, "#nodes .node [data-action=enable]").await;
    until(
        &b,
        "no node draining",
        Duration::from_secs(10),
        "!document.querySelector('#nodes .node[data-state=draining]')",
    )
    .await;

    // ---- the farm restarts under an open page, which recovers by itself ----
    click(&b, "nav a[data-nav=jobs]").await;
    until(
        &b,
        "live",
        Duration::from_secs(10),
        "document.querySelector('#live').dataset.state === 'live'",
    )
    .await;
    farm.kill();
    until(
        &b,
        "the page notices",
        Duration::from_secs(15),
        "document.querySelector('#live').dataset.state !== 'live'",
    )
    .await;
    shoot(&b, "reconnecting").await;
    farm.launch();
    until(
        &b,
        "live again",
        Duration::from_secs(40),
        "document.querySelector('#live').dataset.state === 'live'",
    )
    .await;
    // An EXR job: its thumbnails are tone-mapped, and it gets a note instead of a video.
    let again = farm.submit(
        json!({"scene": "showcase.blend", "from": 1, "to": 3, "chunk_size": 3, "format": "OPEN_EXR"}),
    );
    until(
        &b,
        "a job submitted after the restart, shown without a reload",
        Duration::from_secs(15),
        &format!("document.querySelector('tr[data-job=\"{again}\"]')"),
    )
    .await;
    assert_eq!(
        js(&b, "return window.__noReload").await,
        json!(1),
        "the page reloaded"
    );

    click(&b, &format!("tr[data-job=\"{again}\"] .job-name a")).await;
    until(
        &b,
        "the EXR job's note instead of a video",
        Duration::from_secs(60),
        "document.querySelector('#preview-state')?.dataset.state === 'unavailable'",
    )
    .await;
    assert!(text(&b, "#preview-state").await.contains("OpenEXR"));
    until(
        &b,
        "tone-mapped EXR thumbnails",
        Duration::from_secs(20),
        "[...document.querySelectorAll('#thumbnails img')].filter(i => i.complete && i.naturalWidth === 160).length === 3",
    )
    .await;
    shoot(&b, "job-exr").await;

    // ---- a phone ----
    b.set_window_size(390, 1200).await.expect("window size");
    click(&b, "nav a[data-nav=jobs]").await;
    until(
        &b,
        "the jobs on a phone",
        Duration::from_secs(10),
        "document.querySelectorAll('#jobs-table tbody tr[data-job]').length === 3",
    )
    .await;
    shoot(&b, "phone-jobs").await;
    b.goto(&format!("{base}/jobs/{job}"))
        .await
        .expect("job page");
    until(
        &b,
        "the job page on a phone",
        Duration::from_secs(10),
        "document.querySelectorAll('#frame-grid .cell.s-done').length === 24",
    )
    .await;
    shoot(&b, "phone-job").await;
    b.set_window_size(1440, 1000).await.expect("window size");

    // ---- keyboard: Tab reaches the skip link first, then the pages; Enter on a frame
    // opens the viewer and Escape closes it ----
    let tab = String::from(char::from(fantoccini::key::Key::Tab));
    js(
        &b,
        "document.activeElement && document.activeElement.blur(); window.scrollTo(0, 0); return 1",
    )
    .await;
    let body = b.find(Locator::Css("body")).await.expect("body");
    body.send_keys(&tab).await.expect("Tab");
    assert_eq!(
        js(&b, "return document.activeElement.className").await,
        json!("skip")
    );
    b.active_element()
        .await
        .expect("focus")
        .send_keys(&tab)
        .await
        .expect("Tab");
    assert_eq!(
        js(&b, "return document.activeElement.className").await,
        json!("brand")
    );
    let cell = b
        .find(Locator::Css("#frame-grid .cell[data-frame='5']"))
        .await
        .expect("a done frame's cell");
    cell.send_keys(&String::from(char::from(fantoccini::key::Key::Enter)))
        .await
        .expect("Enter");
    until(
        &b,
        "the viewer opened by Enter",
        Duration::from_secs(5),
        "document.querySelector('#frame-dialog').open",
    )
    .await;
    b.active_element()
        .await
        .expect("focus")
        .send_keys(&String::from(char::from(fantoccini::key::Key::Escape)))
        .await
        .expect("Escape");
    until(
        &b,
        "the viewer closed by Escape",
        Duration::from_secs(5),
        "!document.querySelector('#frame-dialog').open",
    )
    .await;

    // ---- a token: the question on a 401, asked once, the answer sent as a Bearer ----
    js(&b, r#"
        window.__seen = [];
        const real = window.fetch;
        // Only this test's own request is answered 401 (the page's own requests go on).
        window.fetch = (url, opts) => {
            if (!String(url).includes('token-test')) return real(url, opts);
            window.__seen.push((opts && opts.headers && opts.headers.Authorization) || '');
            if (window.__seen.length === 1) return Promise.resolve(new Response('{"title":"Unauthorized"}', {status: 401}));
            return real(url, opts);
        };
        window.__token = import('/ui/api.js').then(m => m.api('/api/v1/nodes?token-test=1')).then(n => n.length);
        return 1;
    "#).await;
    until(
        &b,
        "the token question",
        Duration::from_secs(5),
        "document.querySelector('#token-dialog').open",
    )
    .await;
    shoot(&b, "token").await;
    set_field(&b, "#token-input", "s3cret").await;
    click(&b, "#token-form button").await;
    let answer = b
        .execute_async(
            "const done = arguments[0]; window.__token.then(done, e => done(String(e)));",
            vec![],
        )
        .await
        .expect("token result");
    assert_eq!(answer, json!(2), "nodes read after the token was given");
    assert_eq!(
        js(&b, "return window.__seen").await,
        json!(["", "Bearer s3cret"])
    );
    assert_eq!(
        js(&b, "return sessionStorage.getItem('corral.token')").await,
        json!("s3cret")
    );

    b.close().await.expect("close the browser");
    eprintln!(
        "dashboard test took {:.1} s; screenshots in {}",
        started.elapsed().as_secs_f64(),
        screenshot_dir().display()
    );
}
