//! `polytune serve` end to end: the real binary as a daemon, driven over
//! HTTP by the library client and the `submit` / `fetch` / `status` /
//! `cancel` commands, with the external fixture trial
//! (`fixtures/trial_ok.sh`: an analytic accuracy of ε and seed,
//! `FIXTURE_SLEEP` seconds long, `FIXTURE_LOG` counts launches) copied
//! under the daemon's data root. The dashboard test loads `/` in headless
//! Chromium.
//!
//! Kill and cancel points are events (rows in the journal), never sleeps.

use crate::common;
use crate::db;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{fixture, ok, tuned_core};
use polytune::serve::client::{Client, ClientError};

const BIN: &str = env!("CARGO_BIN_EXE_polytune");
const TOKEN: &str = "s3cret-token-for-the-tests-0123456789";

fn config(budget: u64, workers: usize) -> String {
    format!(
        r#"
[study]
budget = {budget}
seed = 0
confirm_seeds = 2
workers = {workers}
interrupt_grace_s = 1

[search]
solver = "bayes"
terms = 1
lower = [-1.0]
upper = [10.0]

[trial]
command = ["./trial_ok.sh"]
"#
    )
}

/// A data root with the fixture trial program and a study config, and a
/// daemon directory beside it.
struct Site {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    dir: PathBuf,
}

impl Site {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::copy(fixture("trial_ok.sh"), root.join("trial_ok.sh")).unwrap();
        let dir = tmp.path().join("daemon");
        Self {
            root,
            dir,
            _tmp: tmp,
        }
    }

    fn launches(&self) -> usize {
        std::fs::read_to_string(self.root.join("launches.log"))
            .map(|t| t.lines().count())
            .unwrap_or(0)
    }

    fn command(&self, args: &[&str], sleep: &str) -> Command {
        let mut c = Command::new(BIN);
        c.current_dir(&self.root)
            .args(args)
            .env("FIXTURE_SLEEP", sleep)
            .env("FIXTURE_LOG", self.root.join("launches.log"))
            .env_remove("RUST_LOG")
            .env_remove("POLYTUNE_TOKEN")
            .stdin(Stdio::null());
        c
    }

    /// Starts a daemon and waits until it answers.
    fn serve(&self, extra: &[&str], sleep: &str) -> Daemon {
        let _ = std::fs::remove_file(self.dir.join("serve.addr"));
        let root = self.root.display().to_string();
        let dir = self.dir.display().to_string();
        let mut args = vec![
            "serve",
            "--dir",
            &dir,
            "--data-root",
            &root,
            "--listen",
            "127.0.0.1:0",
            "--allow-trial-command",
            "--grace-s",
            "2",
        ];
        args.extend(extra);
        let child = self
            .command(&args, sleep)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut d = Daemon {
            child: Some(child),
            url: String::new(),
        };
        let addr_file = self.dir.join("serve.addr");
        let start = Instant::now();
        loop {
            if let Ok(a) = std::fs::read_to_string(&addr_file) {
                if a.ends_with('\n') {
                    d.url = format!("http://{}", a.trim());
                    break;
                }
            }
            if let Some(status) = d.child.as_mut().unwrap().try_wait().unwrap() {
                let out = d.child.take().unwrap().wait_with_output().unwrap();
                panic!(
                    "the daemon exited ({status}): {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            assert!(start.elapsed() < Duration::from_secs(60), "no serve.addr");
            std::thread::sleep(Duration::from_millis(20));
        }
        d
    }

    /// The journal's rows of study `id`: (phase, trial) → states in order.
    fn journal(&self, id: u64) -> BTreeMap<(String, u64), Vec<String>> {
        let path = self.dir.join(format!("runs/study-{id}/trials.csv"));
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let mut out: BTreeMap<(String, u64), Vec<String>> = BTreeMap::new();
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split(',').collect();
            out.entry((f[1].to_string(), f[0].parse().unwrap()))
                .or_default()
                .push(f[2].to_string());
        }
        out
    }

    fn finished_trials(&self, id: u64) -> usize {
        self.journal(id)
            .values()
            .filter(|s| s.iter().any(|s| s == "finished"))
            .count()
    }
}

struct Daemon {
    child: Option<Child>,
    url: String,
}

impl Daemon {
    fn client(&self, token: Option<&str>) -> Client {
        Client::new(
            &self.url,
            token.map(str::to_string),
            Duration::from_secs(30),
        )
    }

    fn pid(&self) -> i32 {
        self.child.as_ref().unwrap().id() as i32
    }

    fn signal(&mut self, sig: i32) -> Output {
        // SAFETY: kill(2) on our own child's pid has no memory effects.
        unsafe { libc::kill(self.pid(), sig) };
        self.child.take().unwrap().wait_with_output().unwrap()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn state(c: &Client, id: u64) -> String {
    c.study(id).unwrap().summary.state
}

/// The single-process study of the same config, for comparison.
fn reference(site: &Site, cfg: &str) -> PathBuf {
    std::fs::write(site.root.join("reference.toml"), cfg).unwrap();
    let dir = site.root.join("reference-study");
    let d = dir.display().to_string();
    ok(site
        .command(&["--config", "reference.toml", "--study-dir", &d], "0")
        .output()
        .unwrap());
    dir
}

#[test]
fn a_submitted_study_runs_and_its_fetched_toml_equals_the_single_process_result() {
    let site = Site::new();
    let cfg = config(8, 2);
    let reference = reference(&site, &cfg);
    let before = site.launches();
    let daemon = site.serve(&[], "0");
    std::fs::write(site.root.join("study.toml"), &cfg).unwrap();
    let submitted = ok(site
        .command(
            &[
                "submit",
                "study.toml",
                "--server",
                &daemon.url,
                "--name",
                "fixture",
            ],
            "0",
        )
        .output()
        .unwrap());
    assert!(submitted.starts_with("study 1 (fixture) "), "{submitted}");
    let c = daemon.client(None);
    wait_for("the study to finish", Duration::from_secs(120), || {
        state(&c, 1) == "finished"
    });
    let d = c.study(1).unwrap();
    assert_eq!((d.summary.search_done, d.summary.confirm_done), (8, 4));
    assert_eq!(d.trials.len(), 12);
    assert!(
        d.summary.result.contains("cross-entropy"),
        "{}",
        d.summary.result
    );
    assert_eq!(site.launches() - before, 12);

    let out = site.root.join("fetched.toml");
    let o = out.display().to_string();
    ok(site
        .command(&["fetch", "1", "--server", &daemon.url, "--out", &o], "0")
        .output()
        .unwrap());
    assert_eq!(tuned_core(&out), tuned_core(&reference.join("tuned.toml")));
    assert_eq!(
        d.tuned_toml.as_deref(),
        Some(std::fs::read_to_string(&out).unwrap().as_str())
    );
    // The same trials as the single-process study, trial by trial.
    let want = common::journal_rows(&reference);
    let got = common::journal_rows(&site.dir.join("runs/study-1"));
    assert_eq!(got, want);

    let status = ok(site
        .command(&["status", "--server", &daemon.url], "0")
        .output()
        .unwrap());
    assert!(
        status.contains("fixture") && status.contains("finished"),
        "{status}"
    );
    assert!(status.contains("search 8/8  confirm 4/4"), "{status}");
    // The listing and a second fetch of an unknown id.
    let e = site
        .command(&["fetch", "9", "--server", &daemon.url, "--out", &o], "0")
        .output()
        .unwrap();
    assert!(!e.status.success());
    assert!(String::from_utf8_lossy(&e.stderr).contains("no study 9"));
}

#[test]
fn bad_configs_paths_outside_the_root_and_big_bodies_are_refused() {
    let site = Site::new();
    std::fs::create_dir_all(site.root.join("data/a")).unwrap();
    let daemon = site.serve(&["--max-body-bytes", "4096"], "0");
    let c = daemon.client(None);
    // One daemon per directory.
    let d = site.dir.display().to_string();
    let second = site
        .command(&["serve", "--dir", &d, "--listen", "127.0.0.1:0"], "0")
        .output()
        .unwrap();
    assert!(!second.status.success());
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(
        err.contains("another polytune serve runs on this directory"),
        "{err}"
    );
    let refused = |body: &str| match c.submit(body, None) {
        Err(ClientError::Refused {
            status, message, ..
        }) => (status, message),
        other => panic!("accepted: {other:?}"),
    };
    let (s, m) = refused("[study]\nbudgett = 3\n");
    assert_eq!(s, 400);
    assert!(m.contains("budgett"), "{m}");
    let (s, m) = refused("[study\nbudget = 3\n");
    assert_eq!(s, 400);
    assert!(m.contains("submitted config"), "{m}");
    let (s, m) = refused("[study]\nbudget = 0\n");
    assert_eq!(s, 400);
    assert!(m.contains("budget"), "{m}");
    for (body, key) in [
        (
            "[data]\nsource = \"folders\"\npath = \"/etc\"\n",
            "data.path",
        ),
        (
            "[data]\nsource = \"csv\"\npath = \"../../../../etc/passwd\"\n",
            "data.path",
        ),
        (
            "[train]\nweights = \"/etc/passwd\"\n[data]\nsource = \"digits\"\n",
            "train.weights",
        ),
        (
            "[provenance]\nweights = \"../../../../../etc/shadow\"\n",
            "provenance.weights",
        ),
        (
            "[trial]\ncommand = [\"/bin/sh\", \"-c\", \"id\"]\n",
            "trial.command",
        ),
        (
            "[data]\nsource = \"digits\"\ncache_dir = \"../../x\"\n",
            "data.cache_dir",
        ),
    ] {
        let (s, m) = refused(body);
        assert_eq!(s, 400, "{body}: {m}");
        assert!(m.contains(key), "{body}: {m}");
        assert!(!m.contains("root:x:0"), "{m}");
    }
    assert!(c.studies().unwrap().is_empty());
    // Over the body cap: 413, and nothing queued.
    let big = format!("{}\n[study]\nbudget = 3\n", "#".repeat(5000));
    let (s, _) = refused(&big);
    assert_eq!(s, 413);
    assert!(c.studies().unwrap().is_empty());
    assert!(matches!(
        c.study(3),
        Err(ClientError::Refused { status: 404, .. })
    ));
}

#[test]
fn tokens_are_required_off_loopback_and_checked() {
    let site = Site::new();
    // No token on a non-loopback address: refused before anything starts.
    let out = site
        .command(
            &[
                "serve",
                "--dir",
                "d",
                "--listen",
                "0.0.0.0:0",
                "--data-root",
                ".",
            ],
            "0",
        )
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not a loopback address"), "{err}");
    assert!(!site.root.join("d").exists(), "it created its directory");

    let token_file = site.root.join("token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let t = token_file.display().to_string();
    let daemon = site.serve(&["--token-file", &t, "--log-format", "json"], "0");
    let refused = |c: &Client| match c.studies() {
        Err(ClientError::Refused { status, .. }) => status,
        other => panic!("{other:?}"),
    };
    assert_eq!(refused(&daemon.client(None)), 401);
    assert_eq!(
        refused(&daemon.client(Some("wrong-token-wrong-token"))),
        401
    );
    assert_eq!(
        refused(&daemon.client(Some(&TOKEN[..TOKEN.len() - 1]))),
        401
    );
    assert!(daemon.client(Some(TOKEN)).studies().unwrap().is_empty());
    // The health check needs no token; the CLI reads the token file.
    let health = ureq::get(&format!("{}/healthz", daemon.url))
        .call()
        .unwrap();
    assert_eq!(health.status().as_u16(), 200);
    let out = ok(site
        .command(
            &["status", "--server", &daemon.url, "--token-file", &t],
            "0",
        )
        .output()
        .unwrap());
    assert!(out.contains("no studies yet"), "{out}");
    let mut daemon = daemon;
    let out = daemon.signal(libc::SIGTERM);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(!log.contains(TOKEN), "the token leaked into the log: {log}");
    assert_eq!(out.status.code(), Some(143), "{log}");
    // --log-format json: every line one JSON object with a level and message.
    assert!(log.lines().count() >= 2, "{log}");
    for line in log.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(
            v["level"].is_string() && v["fields"]["message"].is_string(),
            "{line}"
        );
    }
}

#[test]
fn cancel_stops_the_running_trials_and_marks_the_study() {
    let site = Site::new();
    let daemon = site.serve(&[], "1");
    let c = daemon.client(None);
    let s = c.submit(&config(40, 2), Some("long")).unwrap();
    // A second study waits in the queue (one runs at a time) and is
    // cancelled before it starts.
    let queued = c.submit(&config(5, 1), None).unwrap();
    assert_eq!(queued.state, "queued");
    assert_eq!(c.cancel(queued.id).unwrap().summary.state, "cancelled");
    wait_for("a finished trial", Duration::from_secs(60), || {
        site.finished_trials(s.id) >= 1
    });
    // Marked once its trials have stopped: still running in the answer,
    // unless the coordinator ended before the answer was written.
    let d = c.cancel(s.id).unwrap();
    assert!(
        ["running", "cancelled"].contains(&d.summary.state.as_str()),
        "{}",
        d.summary.state
    );
    wait_for("the cancel", Duration::from_secs(20), || {
        state(&c, s.id) == "cancelled"
    });
    let launched = site.launches();
    let d = c.study(s.id).unwrap();
    assert!(d.summary.search_done < 40, "it ran to the end");
    assert!(
        d.summary.result.contains("cancelled"),
        "{}",
        d.summary.result
    );
    assert_eq!(state(&c, queued.id), "cancelled");
    match c.cancel(s.id) {
        Err(ClientError::Refused { status: 409, .. }) => {}
        other => panic!("{other:?}"),
    }
    // Nothing runs any more: no launches, no fixture process left.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(site.launches(), launched);
    let ps = Command::new("ps").args(["-eo", "args"]).output().unwrap();
    let procs = String::from_utf8_lossy(&ps.stdout);
    let root = site.root.display().to_string();
    assert!(
        !procs
            .lines()
            .any(|l| l.contains(&root) && l.contains("trial_ok.sh")),
        "a trial still runs"
    );
    // Already cancelled: the CLI fails with the daemon's reason.
    let cli = site
        .command(&["cancel", "1", "--server", &daemon.url], "0")
        .output()
        .unwrap();
    assert!(!cli.status.success());
    let err = String::from_utf8_lossy(&cli.stderr);
    assert!(err.contains("study 1 is already cancelled"), "{err}");
    assert!(matches!(
        c.tuned_toml(s.id),
        Err(ClientError::Refused { status: 404, .. })
    ));
}

#[test]
fn sigterm_and_kill_9_mid_study_lose_and_repeat_no_trial() {
    let site = Site::new();
    let cfg = config(10, 2);
    let reference = reference(&site, &cfg);
    let mut daemon = site.serve(&[], "0.3");
    let id = daemon.client(None).submit(&cfg, None).unwrap().id;
    wait_for("2 trials", Duration::from_secs(60), || {
        site.finished_trials(id) >= 2
    });
    // SIGTERM: exit 143, the study left resumable.
    let out = daemon.signal(libc::SIGTERM);
    assert_eq!(
        out.status.code(),
        Some(143),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let record = std::fs::read_to_string(site.dir.join(format!("queue/{id}.json"))).unwrap();
    assert!(record.contains("\"running\""), "{record}");
    // Restart; kill -9 after more trials; restart again.
    let mut daemon = site.serve(&[], "0.3");
    let done = site.finished_trials(id);
    wait_for("more trials", Duration::from_secs(60), || {
        site.finished_trials(id) >= done + 2
    });
    daemon.signal(libc::SIGKILL);
    let daemon = site.serve(&[], "0");
    let c = daemon.client(None);
    wait_for("the study to finish", Duration::from_secs(120), || {
        state(&c, id) == "finished"
    });
    // Each trial finished exactly once; the results are the single-process ones.
    for (k, states) in site.journal(id) {
        assert_eq!(
            states.iter().filter(|s| *s == "finished").count(),
            1,
            "{k:?}: {states:?}"
        );
    }
    assert_eq!(site.finished_trials(id), 14);
    let fetched = site.root.join("t.toml");
    std::fs::write(&fetched, c.tuned_toml(id).unwrap()).unwrap();
    assert_eq!(
        tuned_core(&fetched),
        tuned_core(&reference.join("tuned.toml"))
    );
}

/// Headless Chromium, if installed (`.ci/run` installs Debian's).
fn chromium() -> Option<PathBuf> {
    for name in ["chromium", "chromium-browser", "google-chrome"] {
        if let Ok(out) = Command::new("sh")
            .args(["-c", &format!("command -v {name}")])
            .output()
        {
            let p = String::from_utf8_lossy(&out.stdout).trim().to_string();
            if out.status.success() && !p.is_empty() {
                return Some(PathBuf::from(p));
            }
        }
    }
    None
}

fn headless(browser: &Path, profile: &Path, args: &[&str]) -> String {
    let out = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--virtual-time-budget=8000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn trial_rows(dom: &str) -> usize {
    dom.matches("<tr class=\"trial\"").count()
}

#[test]
fn the_dashboard_shows_the_study_and_its_trials_in_a_real_browser() {
    let Some(browser) = chromium() else {
        assert!(
            std::env::var("CI").is_err(),
            "CI must have chromium (.ci/run installs it)"
        );
        println!("skipped: no chromium / chromium-browser on PATH (apt install chromium)");
        return;
    };
    let site = Site::new();
    let daemon = site.serve(&[], "0.5");
    let c = daemon.client(None);
    let id = c.submit(&config(6, 1), Some("dash-study")).unwrap().id;
    wait_for("2 trials", Duration::from_secs(60), || {
        site.finished_trials(id) >= 2
    });
    let profile = site.root.join("chromium-profile");
    let page = format!("{}/#study={id}", daemon.url);
    let dom = headless(&browser, &profile, &["--dump-dom", &page]);
    assert!(dom.contains("dash-study"), "{dom}");
    let first = trial_rows(&dom);
    assert!(first >= 2, "{first} trial rows: {dom}");
    assert!(dom.contains("class=\"point\""), "no plotted point: {dom}");
    // After more trials finish, a reload shows them.
    wait_for("the study to finish", Duration::from_secs(120), || {
        state(&c, id) == "finished"
    });
    let dom = headless(&browser, &profile, &["--dump-dom", &page]);
    assert_eq!(trial_rows(&dom), 10, "{dom}");
    assert!(dom.contains("[loss]"), "no tuned TOML: {dom}");
    assert!(dom.contains("finished"), "{dom}");
    // A screenshot, kept as a test artifact.
    let shot = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("serve-dashboard.png");
    let _ = std::fs::remove_file(&shot);
    headless(
        &browser,
        &profile,
        &[
            "--window-size=1200,1400",
            &format!("--screenshot={}", shot.display()),
            &page,
        ],
    );
    let png = std::fs::read(&shot).unwrap();
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "{}",
        png.len()
    );
    println!("dashboard screenshot: {}", shot.display());
}

#[test]
fn with_postgresql_storage_the_daemon_s_workers_run_the_study() {
    let Some(url) = db::server() else { return };
    let url = db::fresh_db(&url, "pt_serve");
    let site = Site::new();
    let cfg = config(8, 2);
    let reference = reference(&site, &cfg);
    let daemon = site.serve(&["--storage", &url], "0");
    let c = daemon.client(None);
    let id = c.submit(&cfg, Some("pg")).unwrap().id;
    wait_for("the study to finish", Duration::from_secs(120), || {
        state(&c, id) == "finished"
    });
    let d = c.study(id).unwrap();
    assert_eq!((d.summary.search_done, d.summary.confirm_done), (8, 4));
    // The database has the trials (no journal) and the workers that ran them.
    assert!(!site
        .dir
        .join(format!("runs/study-{id}/trials.csv"))
        .exists());
    assert!(
        d.trials.iter().all(|t| t.worker.is_some()),
        "{:?}",
        d.trials
    );
    assert!(!d.workers.is_empty());
    let fetched = site.root.join("t.toml");
    std::fs::write(&fetched, c.tuned_toml(id).unwrap()).unwrap();
    assert_eq!(
        tuned_core(&fetched),
        tuned_core(&reference.join("tuned.toml"))
    );
    let mut daemon = daemon;
    let out = daemon.signal(libc::SIGTERM);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(!log.contains("polytune-test"), "the password leaked: {log}");
    assert!(log.contains("***"), "{log}");
}
