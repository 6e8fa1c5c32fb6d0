//! Trials as child processes.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;
use tokio::sync::watch;

use super::{BoxFuture, StopLevel, TrialOutcome, TrialRunner};
use crate::trial::{TrialResult, TrialSpec};

/// How much of a child's stdout / stderr is kept (the tail).
const KEEP_BYTES: usize = 64 * 1024;
/// How many stderr lines go into a failure reason.
const STDERR_LINES: usize = 4;

/// The program a trial runs: `program args…`, with the spec JSON on stdin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildCommand {
    /// The executable.
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<OsString>,
    /// Extra environment variables.
    pub env: Vec<(OsString, OsString)>,
}

impl ChildCommand {
    /// `program args…` with no extra environment.
    pub fn new(
        program: impl Into<PathBuf>,
        args: impl IntoIterator<Item = impl Into<OsString>>,
    ) -> Self {
        Self {
            program: program.into(),
            args: args.into_iter().map(Into::into).collect(),
            env: Vec::new(),
        }
    }

    /// The product's child: `<current exe> trial --spec -`.
    pub fn polytune_trial() -> std::io::Result<Self> {
        Ok(Self::new(
            std::env::current_exe()?,
            ["trial", "--spec", "-"],
        ))
    }

    fn display(&self) -> String {
        let mut s = self.program.display().to_string();
        for a in &self.args {
            s.push(' ');
            s.push_str(&a.to_string_lossy());
        }
        s
    }
}

/// Runs each trial as a child process in its own process group.
///
/// * The spec goes to the child's stdin as JSON; the last non-empty stdout
///   line must be a [`TrialResult`].
/// * Timeout: the whole process group gets SIGKILL and the trial fails.
/// * Shutdown ([`StopLevel::Kill`]): SIGTERM to the group, SIGKILL after
///   `term_grace`; the trial is `Cancelled`.
/// * Own process group: a terminal's Ctrl-C reaches polytune only, which
///   decides what happens to its children. On Linux the child also gets
///   SIGKILL if polytune dies (parent-death signal), so a SIGKILLed study
///   leaves no orphaned fine-tunes holding a GPU.
#[derive(Debug, Clone)]
pub struct ChildRunner {
    command: ChildCommand,
    timeout: Option<Duration>,
    term_grace: Duration,
}

impl ChildRunner {
    /// A runner for `command` with no timeout and a 5 s SIGTERM → SIGKILL grace.
    pub fn new(command: ChildCommand) -> Self {
        Self {
            command,
            timeout: None,
            term_grace: Duration::from_secs(5),
        }
    }

    /// Kills a trial that runs longer than `timeout` (and fails it).
    pub fn with_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.timeout = timeout;
        self
    }

    /// Time between SIGTERM and SIGKILL when a shutdown cancels a trial.
    pub fn with_term_grace(mut self, grace: Duration) -> Self {
        self.term_grace = grace;
        self
    }

    async fn run_child(
        self,
        spec: TrialSpec,
        mut stop: watch::Receiver<StopLevel>,
    ) -> TrialOutcome {
        let cmd = &self.command;
        let mut command = Command::new(&cmd.program);
        command
            .args(&cmd.args)
            .envs(cmd.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        #[cfg(target_os = "linux")]
        // SAFETY: prctl is async-signal-safe and touches no memory of the
        // parent. The signal fires when the spawning thread exits; spawns
        // happen on tokio's long-lived worker threads.
        unsafe {
            command.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = match command.spawn() {
            Ok(c) => c,
            Err(e) => {
                return TrialOutcome::Failed(format!("cannot start `{}`: {e}", cmd.display()))
            }
        };
        let pgid = child.id().map(|id| id as i32);
        let json = spec.to_json();
        let mut stdin = child.stdin.take().expect("stdin is piped");
        let writer = tokio::spawn(async move {
            // A child that exits without reading its spec closes the pipe: fine.
            let _ = stdin.write_all(json.as_bytes()).await;
            let _ = stdin.shutdown().await;
        });
        let out = tokio::spawn(read_tail(child.stdout.take().expect("stdout is piped")));
        let err = tokio::spawn(read_tail(child.stderr.take().expect("stderr is piped")));

        let timeout = async {
            match self.timeout {
                Some(t) => tokio::time::sleep(t).await,
                None => std::future::pending().await,
            }
        };
        enum End {
            Exited(std::io::Result<ExitStatus>),
            TimedOut,
            Cancelled,
        }
        let end = tokio::select! {
            status = child.wait() => End::Exited(status),
            _ = timeout => End::TimedOut,
            _ = stop.wait_for(|l| *l >= StopLevel::Kill) => End::Cancelled,
        };
        let status = match end {
            End::Exited(s) => s,
            End::TimedOut => {
                kill_group(pgid, libc::SIGKILL);
                let _ = child.wait().await;
                writer.abort();
                let secs = self.timeout.map(|t| t.as_secs_f64()).unwrap_or_default();
                return TrialOutcome::Transient(format!("timed out after {secs:.1} s (killed)"));
            }
            End::Cancelled => {
                kill_group(pgid, libc::SIGTERM);
                if tokio::time::timeout(self.term_grace, child.wait())
                    .await
                    .is_err()
                {
                    kill_group(pgid, libc::SIGKILL);
                    let _ = child.wait().await;
                }
                writer.abort();
                return TrialOutcome::Cancelled;
            }
        };
        // The child is gone; a grandchild may still hold the pipes open.
        let collect = async { (out.await.unwrap_or_default(), err.await.unwrap_or_default()) };
        let (stdout, stderr) = match tokio::time::timeout(Duration::from_secs(5), collect).await {
            Ok(v) => v,
            Err(_) => {
                kill_group(pgid, libc::SIGKILL);
                (
                    Vec::new(),
                    b"(output pipes held open by a leftover process; killed)".to_vec(),
                )
            }
        };
        writer.abort();
        let status = match status {
            Ok(s) => s,
            Err(e) => return TrialOutcome::Failed(format!("waiting for the child failed: {e}")),
        };
        judge(status, &stdout, &stderr, &spec)
    }
}

impl TrialRunner for ChildRunner {
    fn run(&self, spec: TrialSpec, stop: watch::Receiver<StopLevel>) -> BoxFuture<TrialOutcome> {
        Box::pin(self.clone().run_child(spec, stop))
    }
}

/// Turns a finished child into an outcome.
fn judge(status: ExitStatus, stdout: &[u8], stderr: &[u8], spec: &TrialSpec) -> TrialOutcome {
    use std::os::unix::process::ExitStatusExt;
    let stderr = String::from_utf8_lossy(stderr);
    let tail: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    let tail = tail[tail.len().saturating_sub(STDERR_LINES)..].join(" | ");
    let with_tail = |msg: String| {
        if tail.is_empty() {
            msg
        } else {
            format!("{msg}: {tail}")
        }
    };
    if !status.success() {
        let msg = match (status.code(), status.signal()) {
            (Some(code), _) => format!("exit status {code}"),
            (None, Some(sig)) => format!("killed by signal {sig} ({})", signal_name(sig)),
            _ => format!("ended abnormally ({status})"),
        };
        // Killed from outside (OOM killer, an operator): not the trial's
        // fault, so worth another attempt. Crash signals are the trial's own.
        let outside = matches!(
            status.signal(),
            Some(libc::SIGKILL | libc::SIGTERM | libc::SIGINT | libc::SIGHUP)
        );
        return if outside {
            TrialOutcome::Transient(with_tail(msg))
        } else {
            TrialOutcome::Failed(with_tail(msg))
        };
    }
    match TrialResult::parse_stdout(&String::from_utf8_lossy(stdout)) {
        Ok(TrialResult {
            seed: Some(seed), ..
        }) if seed != spec.seed => TrialOutcome::Failed(format!(
            "the child used seed {seed} but the spec asked for {}",
            spec.seed
        )),
        Ok(r) => TrialOutcome::Finished(r),
        Err(e) => TrialOutcome::Failed(with_tail(e.to_string())),
    }
}

fn signal_name(sig: i32) -> &'static str {
    match sig {
        libc::SIGKILL => "SIGKILL; out of memory?",
        libc::SIGABRT => "SIGABRT",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGBUS => "SIGBUS",
        libc::SIGTERM => "SIGTERM",
        libc::SIGINT => "SIGINT",
        libc::SIGFPE => "SIGFPE",
        libc::SIGILL => "SIGILL",
        _ => "signal",
    }
}

/// Sends `sig` to the process group `pgid` (ignores a group that is gone).
fn kill_group(pgid: Option<i32>, sig: i32) {
    if let Some(pgid) = pgid.filter(|p| *p > 0) {
        // SAFETY: kill(2) with a negative pid signals a process group we created.
        unsafe {
            libc::kill(-pgid, sig);
        }
    }
}

/// Reads a stream to its end, keeping only the last `KEEP_BYTES`.
async fn read_tail(mut r: impl AsyncRead + Unpin) -> Vec<u8> {
    let mut keep = Vec::new();
    let mut buf = vec![0u8; 8192];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                keep.extend_from_slice(&buf[..n]);
                if keep.len() > 2 * KEEP_BYTES {
                    keep.drain(..keep.len() - KEEP_BYTES);
                }
            }
        }
    }
    if keep.len() > KEEP_BYTES {
        keep.drain(..keep.len() - KEEP_BYTES);
    }
    keep
}
