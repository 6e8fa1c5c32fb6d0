//! Load on `polytune serve`: 50 concurrent API clients poll a running
//! study's status (`GET /api/v1/studies/{id}`, every fifth request the list)
//! for 30 s while the daemon runs its trials. Reports requests, errors and
//! latency percentiles, and the trials the study finished meanwhile.
//!
//! `cargo bench -p polytune --bench serve_load` (env `SERVE_LOAD_CLIENTS`,
//! `SERVE_LOAD_S` change the 50 clients / 30 s).

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use polytune::serve::client::Client;

const BIN: &str = env!("CARGO_BIN_EXE_polytune");

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn main() {
    let clients = env_or("SERVE_LOAD_CLIENTS", 50) as usize;
    let seconds = env_or("SERVE_LOAD_S", 30);
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    std::fs::create_dir_all(&root).unwrap();
    let fixture = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/trial_ok.sh");
    std::fs::copy(fixture, root.join("trial_ok.sh")).unwrap();
    let dir = tmp.path().join("daemon");
    let mut daemon = Command::new(BIN)
        .current_dir(&root)
        .args(["serve", "--listen", "127.0.0.1:0", "--allow-trial-command"])
        .arg("--dir")
        .arg(&dir)
        .arg("--data-root")
        .arg(&root)
        .env("FIXTURE_SLEEP", "0.3")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let addr_file = dir.join("serve.addr");
    let start = Instant::now();
    let url = loop {
        if let Ok(a) = std::fs::read_to_string(&addr_file) {
            if a.ends_with('\n') {
                break format!("http://{}", a.trim());
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the daemon did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let config = r#"
[study]
budget = 200
seed = 0
confirm_seeds = 2
workers = 2

[search]
solver = "bayes"
terms = 1
lower = [-1.0]
upper = [10.0]

[trial]
command = ["./trial_ok.sh"]
"#;
    let admin = Client::new(&url, None, Duration::from_secs(30));
    let id = admin.submit(config, Some("load")).unwrap().id;
    while admin.study(id).unwrap().summary.search_done < 2 {
        std::thread::sleep(Duration::from_millis(50));
    }
    let done_before = admin.study(id).unwrap().summary.search_done;

    let barrier = Arc::new(Barrier::new(clients));
    let deadline = Duration::from_secs(seconds);
    let workers: Vec<_> = (0..clients)
        .map(|k| {
            let url = url.clone();
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                let c = Client::new(&url, None, Duration::from_secs(30));
                let mut lat = Vec::new();
                let mut errors = Vec::new();
                barrier.wait();
                let t0 = Instant::now();
                let mut i = k;
                while t0.elapsed() < deadline {
                    let t = Instant::now();
                    let r = if i % 5 == 0 {
                        c.studies().map(|_| ())
                    } else {
                        c.study(id).map(|_| ())
                    };
                    lat.push(t.elapsed().as_secs_f64() * 1e3);
                    if let Err(e) = r {
                        errors.push(e.to_string());
                    }
                    i += 1;
                }
                (lat, errors)
            })
        })
        .collect();
    let mut lat = Vec::new();
    let mut errors = Vec::new();
    for w in workers {
        let (l, e) = w.join().unwrap();
        lat.extend(l);
        errors.extend(e);
    }
    let d = admin.study(id).unwrap();
    let _ = admin.cancel(id);
    // SAFETY: kill(2) on our own child's pid has no memory effects.
    unsafe { libc::kill(daemon.id() as i32, libc::SIGTERM) };
    let status = daemon.wait().unwrap();
    lat.sort_by(f64::total_cmp);
    let n = lat.len();
    println!("serve_load: {clients} clients polling study status for {seconds} s (daemon running a 2-worker study meanwhile)");
    println!("| requests | errors | req/s | p50 ms | p90 ms | p99 ms | max ms | trials finished during the load |");
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    println!(
        "| {n} | {} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} | {} |",
        errors.len(),
        n as f64 / seconds as f64,
        percentile(&lat, 50.0),
        percentile(&lat, 90.0),
        percentile(&lat, 99.0),
        lat[n - 1],
        d.summary.search_done - done_before
    );
    println!("daemon exit: {status}");
    if let Some(e) = errors.first() {
        println!("first error: {e}");
    }
    assert!(errors.is_empty(), "{} errors", errors.len());
}
