//! PostgreSQL storage and `polytune worker` against a real server
//! (`scripts/pg-test-cluster.sh`, started by `.ci/run`): every test gets a
//! database of its own and drives the real `polytune` binary with the
//! external fixture trial (`fixtures/trial_ok.sh`: an analytic accuracy of
//! ε and seed, `FIXTURE_SLEEP` seconds long, `FIXTURE_LOG` counts launches).
//!
//! Without `POLYTUNE_TEST_PG_URL` the tests print why and return — except
//! under `CI=true`, where a missing server is a failure.
//!
//! Kill points are events (rows in the database), never sleeps.

use crate::common;
use crate::db;
use crate::load;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{fixture, ok, tuned_core};
use db::{fresh_db, rt, server};
use load::{run_load, LoadTrial};
use polytune::storage::pg::{PgStore, StudyRow};
use polytune::storage::PgTarget;
use polytune::trial::TrialPhase;

/// (phase, trial, ε, seed, accuracy) of an ended trial, as text.
type Outcome = (String, u64, String, u64, String);

const BIN: &str = env!("CARGO_BIN_EXE_polytune");

fn config(budget: u64, workers: usize) -> String {
    format!(
        r#"
[study]
budget = {budget}
seed = 0
confirm_seeds = 2
workers = {workers}
lease_s = 2
max_retries = 2
interrupt_grace_s = 1

[search]
solver = "bayes"
terms = 1
lower = [-1.0]
upper = [10.0]

[trial]
command = ["{}"]
"#,
        fixture("trial_ok.sh").display()
    )
}

struct Study {
    _tmp: tempfile::TempDir,
    cwd: PathBuf,
}

impl Study {
    fn new(cfg: &str) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let cwd = tmp.path().to_path_buf();
        std::fs::write(cwd.join("study.toml"), cfg).unwrap();
        Self { _tmp: tmp, cwd }
    }

    fn dir(&self, name: &str) -> PathBuf {
        self.cwd.join(name)
    }

    fn command(&self, args: &[&str], sleep: &str) -> Command {
        let mut c = Command::new(BIN);
        c.current_dir(&self.cwd)
            .args(args)
            .env("FIXTURE_SLEEP", sleep)
            .env("FIXTURE_LOG", self.cwd.join("launches.log"))
            .env_remove("RUST_LOG")
            .stdin(Stdio::null());
        c
    }

    fn search(&self, study: &str, storage: Option<&str>, extra: &[&str], sleep: &str) -> Command {
        let mut args = vec!["--config", "study.toml", "--study-dir", study];
        if let Some(s) = storage {
            args.extend(["--storage", s]);
        }
        args.extend(extra);
        self.command(&args, sleep)
    }

    fn launches(&self) -> usize {
        std::fs::read_to_string(self.cwd.join("launches.log"))
            .map(|t| t.lines().count())
            .unwrap_or(0)
    }
}

fn spawn(mut c: Command) -> Child {
    c.stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn store(url: &str) -> (tokio::runtime::Runtime, PgStore) {
    let rt = rt();
    let s = rt
        .block_on(PgStore::open(
            &PgTarget::parse(url).unwrap(),
            "polytune test",
        ))
        .unwrap();
    (rt, s)
}

/// Waits (polling the database) until `pred` holds for the study's rows.
fn wait_for(
    url: &str,
    study: &str,
    what: &str,
    pred: impl Fn(&[polytune::storage::pg::QueueRow]) -> bool,
) {
    let (rt, store) = store(url);
    let start = Instant::now();
    loop {
        let rows = rt.block_on(async {
            match store.study(study).await.unwrap() {
                Some(s) => store.queue(s.id).await.unwrap(),
                None => Vec::new(),
            }
        });
        if pred(&rows) {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn study_row(url: &str, name: &str) -> StudyRow {
    let (rt, store) = store(url);
    rt.block_on(store.study(name)).unwrap().unwrap()
}

/// (phase, trial, ε, seed, accuracy) of every ended trial, sorted.
fn pg_results(url: &str, name: &str) -> Vec<Outcome> {
    let (rt, store) = store(url);
    let id = rt.block_on(store.study(name)).unwrap().unwrap().id;
    outcomes(rt.block_on(store.final_records(id)).unwrap())
}

/// The sorted outcomes of ended records.
fn outcomes(records: Vec<polytune::study::TrialRecord>) -> Vec<Outcome> {
    let mut v: Vec<_> = records
        .into_iter()
        .filter(|r| r.is_finished() || r.state == polytune::study::RowState::Failed)
        .map(|r| {
            (
                r.phase.as_str().to_string(),
                r.trial,
                format!("{:?}", r.epsilon),
                r.seed,
                format!("{:?}", r.val_accuracy),
            )
        })
        .collect();
    v.sort();
    v
}

fn journal_results(dir: &Path) -> Vec<Outcome> {
    let cfg = polytune::study::StudyConfig::load(dir.join("config.toml")).unwrap();
    let text = std::fs::read_to_string(dir.join("trials.csv")).unwrap();
    let rows =
        polytune::study::Journal::parse_rows(&dir.join("trials.csv"), &text, cfg.search.terms)
            .unwrap();
    outcomes(rows)
}

/// The same study in journal mode, for comparison.
fn journal_reference(cfg: &str) -> (Study, Vec<Outcome>) {
    let s = Study::new(cfg);
    ok(s.search("ref", None, &[], "0").output().unwrap());
    let r = journal_results(&s.dir("ref"));
    (s, r)
}

#[test]
fn three_workers_give_the_trials_and_result_of_the_journal_study() {
    let Some(url) = server() else { return };
    let url = fresh_db(&url, "pt_equal");
    let cfg = config(12, 3);
    let (reference, want) = journal_reference(&cfg);
    assert_eq!(want.iter().filter(|r| r.0 == "search").count(), 12);

    let s = Study::new(&cfg);
    let stdout = ok(s.search("eq", Some(&url), &[], "0").output().unwrap());
    assert!(stdout.contains("verdict:"), "{stdout}");
    assert_eq!(pg_results(&url, "eq"), want);
    assert_eq!(
        tuned_core(&s.dir("eq").join("tuned.toml")),
        tuned_core(&reference.dir("ref").join("tuned.toml"))
    );
    // No journal in PostgreSQL mode; every launch is one recorded attempt.
    assert!(!s.dir("eq").join("trials.csv").exists());
    let row = study_row(&url, "eq");
    assert_eq!(row.state, "finished");
    let (rt, store) = store(&url);
    let attempts = rt.block_on(store.attempts(row.id)).unwrap();
    assert_eq!(attempts.len(), want.len());
    assert_eq!(s.launches(), want.len());
    // Three local workers ran them.
    let workers: std::collections::BTreeSet<String> =
        attempts.iter().map(|a| a.worker.clone()).collect();
    assert!(workers.len() >= 2, "{workers:?}");

    // A second run resumes everything from the database: nothing runs.
    let again = ok(s.search("eq", Some(&url), &[], "0").output().unwrap());
    assert!(again.contains("(0 run now, 16 recorded before)"), "{again}");
    assert_eq!(s.launches(), want.len());

    // `polytune status` reads the same numbers.
    let st = ok(s
        .command(&["status", "--storage", &url, "eq"], "0")
        .output()
        .unwrap());
    assert!(st.contains("study eq: finished"), "{st}");
    assert!(st.contains("search finished    12"), "{st}");
    assert!(st.contains("confirm finished   4"), "{st}");
    assert!(!st.contains("polytune-test"), "the password leaked: {st}");
    // And the journal study's status from its directory.
    let js = ok(reference.command(&["status", "ref"], "0").output().unwrap());
    assert!(js.contains("search finished    12"), "{js}");
    assert!(js.contains("confirm finished   4"), "{js}");
    assert!(js.contains("study ref: finished"), "{js}");
}

/// Starts a coordinator without local workers and one worker, SIGKILLs the
/// worker while it runs a trial of `study`; returns the coordinator and the
/// killed worker's id suffix (`:pid`).
fn coordinator_and_killed_worker(s: &Study, url: &str, study: &str) -> (Child, String) {
    let coord = spawn(s.search(study, Some(url), &["--local-workers", "0"], "0.3"));
    let mut victim = spawn(s.command(&["worker", "--storage", url], "0.3"));
    let victim_id = format!(":{}", victim.id());
    wait_for(url, study, "the victim to run a trial", |rows| {
        rows.iter().any(|r| {
            r.state == "running" && r.worker.as_deref().is_some_and(|w| w.ends_with(&victim_id))
        })
    });
    victim.kill().unwrap();
    victim.wait().unwrap();
    (coord, victim_id)
}

#[test]
fn a_killed_worker_s_trial_is_requeued_and_finished_by_another() {
    let Some(url) = server() else { return };
    let url = fresh_db(&url, "pt_worker_kill");
    let cfg = config(6, 2);
    let (_reference, want) = journal_reference(&cfg);
    let s = Study::new(&cfg);
    // Kill a worker while it runs a trial; then a second worker joins.
    let (coord, victim_id) = coordinator_and_killed_worker(&s, &url, "wk");
    let mut rescuer = spawn(s.command(&["worker", "--storage", &url], "0.3"));
    let out = coord.wait_with_output().unwrap();
    ok(out);
    rescuer.kill().unwrap();
    rescuer.wait().unwrap();

    assert_eq!(pg_results(&url, "wk"), want);
    let row = study_row(&url, "wk");
    let (rt, store) = store(&url);
    let attempts = rt.block_on(store.attempts(row.id)).unwrap();
    let lost: Vec<_> = attempts
        .iter()
        .filter(|a| a.worker.ends_with(&victim_id) && a.state == "retry")
        .collect();
    assert_eq!(lost.len(), 1, "{attempts:?}");
    assert!(
        lost[0].error.contains("lost: no heartbeat for 2 s"),
        "{}",
        lost[0].error
    );
    // The same trial then finished on its second attempt, by the rescuer.
    let redo = attempts
        .iter()
        .find(|a| a.phase == lost[0].phase && a.trial == lost[0].trial && a.state == "finished")
        .expect("the lost trial finished");
    assert_eq!(redo.attempt, 2);
    assert!(!redo.worker.ends_with(&victim_id));
    // Each trial finished exactly once.
    let finished = attempts.iter().filter(|a| a.state == "finished").count();
    assert_eq!(finished, want.len());
}

#[test]
fn a_lost_trial_fails_once_its_retries_are_spent_and_workers_stop_at_max_trials() {
    let Some(url) = server() else { return };
    let url = fresh_db(&url, "pt_retries");
    let cfg = config(5, 1).replace("max_retries = 2", "max_retries = 0");
    let s = Study::new(&cfg);
    let (coord, victim_id) = coordinator_and_killed_worker(&s, &url, "mr");
    // A worker limited to 2 trials stops by itself after them.
    let limited = ok(s
        .command(&["worker", "--storage", &url, "--max-trials", "2"], "0.3")
        .output()
        .unwrap());
    assert!(limited.contains("worker: 2 trial(s) run"), "{limited}");
    let mut rest = spawn(s.command(&["worker", "--storage", &url], "0.3"));
    ok(coord.wait_with_output().unwrap());
    rest.kill().unwrap();
    rest.wait().unwrap();

    let row = study_row(&url, "mr");
    let (rt, store) = store(&url);
    let attempts = rt.block_on(store.attempts(row.id)).unwrap();
    let lost: Vec<_> = attempts
        .iter()
        .filter(|a| a.worker.ends_with(&victim_id))
        .collect();
    assert_eq!(lost.len(), 1, "{attempts:?}");
    // max_retries = 0: no second attempt, the trial failed with the reason.
    assert_eq!(lost[0].state, "failed");
    assert!(
        lost[0]
            .error
            .contains("lost: no heartbeat for 2 s (gave up after 1 attempts)"),
        "{}",
        lost[0].error
    );
    let queue = rt.block_on(store.queue(row.id)).unwrap();
    let t = queue
        .iter()
        .find(|q| q.phase == lost[0].phase && q.trial == lost[0].trial)
        .unwrap();
    assert_eq!((t.state.as_str(), t.attempt), ("failed", 1));
    assert!(
        attempts
            .iter()
            .filter(|a| a.phase == t.phase && a.trial == t.trial)
            .count()
            == 1
    );
    // Everything else finished once.
    assert!(queue
        .iter()
        .all(|q| q.state == "finished" || (q.phase == t.phase && q.trial == t.trial)));
}

#[test]
fn a_killed_coordinator_resumes_without_losing_or_repeating_trials() {
    let Some(url) = server() else { return };
    let url = fresh_db(&url, "pt_coord_kill");
    let cfg = config(10, 2);
    let (reference, want) = journal_reference(&cfg);
    let s = Study::new(&cfg);
    let mut first = spawn(s.search("ck", Some(&url), &[], "0.2"));
    wait_for(&url, "ck", "4 finished search trials", |rows| {
        rows.iter()
            .filter(|r| r.phase == TrialPhase::Search && r.state == "finished")
            .count()
            >= 4
    });
    first.kill().unwrap();
    first.wait().unwrap();
    let out = s.search("ck", Some(&url), &[], "0.2").output().unwrap();
    let stdout = ok(out);
    assert!(stdout.contains("verdict:"), "{stdout}");
    assert_eq!(pg_results(&url, "ck"), want);
    assert_eq!(
        tuned_core(&s.dir("ck").join("tuned.toml")),
        tuned_core(&reference.dir("ref").join("tuned.toml"))
    );
    let row = study_row(&url, "ck");
    let (rt, store) = store(&url);
    let attempts = rt.block_on(store.attempts(row.id)).unwrap();
    // Every trial finished once; any extra attempt is a recorded retry of
    // a trial the kill orphaned; every launch left an attempt row.
    let finished = attempts.iter().filter(|a| a.state == "finished").count();
    assert_eq!(finished, want.len(), "{attempts:?}");
    assert!(
        attempts
            .iter()
            .all(|a| a.state == "finished" || a.state == "retry"),
        "{attempts:?}"
    );
    assert!(
        s.launches() <= attempts.len(),
        "{} launches, {} attempts",
        s.launches(),
        attempts.len()
    );
    assert!(s.launches() >= want.len());
}

#[test]
fn workers_and_coordinator_ride_out_a_server_restart() {
    let Some(url) = server() else { return };
    let Ok(restart) = std::env::var("POLYTUNE_TEST_PG_RESTART") else {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("CI runs the restart test: POLYTUNE_TEST_PG_RESTART is not set");
        }
        eprintln!("skipping the restart test: POLYTUNE_TEST_PG_RESTART is not set");
        return;
    };
    let url = fresh_db(&url, "pt_restart");
    let cfg = config(8, 2);
    let (_reference, want) = journal_reference(&cfg);
    let s = Study::new(&cfg);
    let coord = spawn(s.search("rs", Some(&url), &[], "0.3"));
    wait_for(&url, "rs", "3 finished search trials", |rows| {
        rows.iter()
            .filter(|r| r.phase == TrialPhase::Search && r.state == "finished")
            .count()
            >= 3
    });
    let st = Command::new("sh").args(["-c", &restart]).output().unwrap();
    assert!(
        st.status.success(),
        "restart failed: {}",
        String::from_utf8_lossy(&st.stderr)
    );
    let out = coord.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    ok(out);
    assert!(
        stderr.contains("retrying in") || stderr.contains("reconnected"),
        "no reconnect seen:\n{stderr}"
    );
    assert_eq!(pg_results(&url, "rs"), want);
}

#[test]
fn a_second_coordinator_of_the_same_study_is_refused() {
    let Some(url) = server() else { return };
    let url = fresh_db(&url, "pt_second");
    let s = Study::new(&config(6, 1));
    // Long trials: the first coordinator holds the study throughout.
    let mut first = spawn(s.search("two", Some(&url), &[], "5"));
    wait_for(&url, "two", "a running trial", |rows| {
        rows.iter().any(|r| r.state == "running")
    });
    let out = s.search("two", Some(&url), &[], "0").output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success());
    assert!(
        stderr.contains("another polytune process is running this study")
            || stderr.contains("already being coordinated by polytune coordinator"),
        "{stderr}"
    );
    // From another directory of the same name (another machine, say): the
    // database lock refuses it.
    let other = Study::new(&config(6, 1));
    let out = other.search("two", Some(&url), &[], "0").output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("study \"two\" is already being coordinated by polytune coordinator"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("polytune-test"),
        "password leaked: {stderr}"
    );
    first.kill().unwrap();
    first.wait().unwrap();
}

#[test]
fn bad_urls_passwords_and_newer_schemas_fail_clearly_and_write_nothing() {
    let Some(url) = server() else { return };
    let s = Study::new(&config(4, 1));
    let cases: Vec<(String, &str)> = vec![
        (
            "postgresql://polytune:x@127.0.0.1:1/polytune".into(),
            "cannot connect",
        ),
        (
            url.replace("polytune-test", "wrong-pass-123"),
            "authentication failed",
        ),
        (
            "mysql://polytune:secret-9@127.0.0.1/x".into(),
            "a storage URL starts with postgresql://",
        ),
    ];
    for (bad, want) in &cases {
        let out = s.search("bad", Some(bad), &[], "0").output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(!out.status.success(), "{bad}: {stderr}");
        assert!(stderr.contains(want), "{stderr}");
        for secret in ["wrong-pass-123", "secret-9", "polytune-test"] {
            assert!(!stderr.contains(secret), "password shown: {stderr}");
        }
        assert!(
            !s.dir("bad").exists(),
            "{bad}: the study directory was created"
        );
    }
    // A database from a newer polytune: refused before anything is written.
    let newer = fresh_db(&url, "pt_newer");
    let target = PgTarget::parse(&newer).unwrap();
    rt().block_on(async {
        let c = target.connect("polytune test").await.unwrap();
        c.batch_execute("CREATE TABLE polytune_schema (version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now()); INSERT INTO polytune_schema (version) VALUES (999)")
            .await
            .unwrap();
    });
    let out = s.search("bad", Some(&newer), &[], "0").output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success());
    assert!(
        stderr.contains("schema version 999, newer than this polytune's 1"),
        "{stderr}"
    );
    assert!(!s.dir("bad").exists());
    let tables: i64 = rt().block_on(async {
        let c = target.connect("polytune test").await.unwrap();
        c.query_one("SELECT count(*) FROM information_schema.tables WHERE table_name IN ('studies', 'trials')", &[])
            .await
            .unwrap()
            .get(0)
    });
    assert_eq!(tables, 0, "a migration ran on a newer schema");
    // A worker too.
    let out = s
        .command(&["worker", "--storage", &newer], "0")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("newer than this polytune's"));
}

#[test]
fn many_trials_through_eight_workers_none_lost_none_twice() {
    let Some(url) = server() else { return };
    let url = fresh_db(&url, "pt_load");
    let (rt, store) = store(&url);
    for (name, trial) in [
        ("inproc", LoadTrial::InProcess),
        ("child", LoadTrial::Command(fixture("trial_sleep5ms.sh"))),
    ] {
        let r = rt.block_on(run_load(&store, name, 200, 8, trial));
        assert_eq!(r.finished, 200, "{name}: {r:?}");
        assert_eq!(r.attempts, 200, "{name}: {r:?}");
        assert_eq!(r.duplicated, 0, "{name}: {r:?}");
        eprintln!("{name}: 200 trials in {:.2} s", r.seconds);
    }
}
