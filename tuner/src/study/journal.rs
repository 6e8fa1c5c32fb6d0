//! `trials.csv`: the append-only, fsynced record of every trial.
//!
//! Columns: `trial, phase, state, eps_1..eps_N, val_accuracy, val_loss,
//! train_loss, epochs, seed, start_time, duration_s, attempt, error`. One
//! row per attempt of a trial that ended (`finished`, `failed`, `retry` —
//! lost to an outside signal or a timeout and run again — or `cancelled`
//! by a shutdown);
//! each row is one line written with one `write` call and then fsynced, so a
//! crash leaves at most a torn last line, which [`Journal::open`] cuts off
//! (that trial simply runs again). ε is written in Rust's shortest
//! round-trip form, so a replay compares exact values.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::search::{failed_cost, trial_cost};
use crate::trial::TrialPhase;

/// How a journaled trial ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowState {
    /// Valid result.
    Finished,
    /// Failed for good (the reason is in `error`).
    Failed,
    /// Lost to something outside the trial (a signal it did not cause, a
    /// timeout); this attempt is kept and the trial runs again, up to
    /// `study.max_retries` more times.
    Retry,
    /// Stopped by a shutdown; ignored on resume (it runs again).
    Cancelled,
}

impl RowState {
    /// The journal spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            RowState::Finished => "finished",
            RowState::Failed => "failed",
            RowState::Retry => "retry",
            RowState::Cancelled => "cancelled",
        }
    }
}

/// One trial as journaled (and as reported).
#[derive(Debug, Clone, PartialEq)]
pub struct TrialRecord {
    /// Index within the phase (search: 0 = baseline).
    pub trial: u64,
    /// Search or confirmation.
    pub phase: TrialPhase,
    /// How it ended.
    pub state: RowState,
    /// ε.
    pub epsilon: Vec<f64>,
    /// Validation top-1 accuracy (finished trials).
    pub val_accuracy: Option<f64>,
    /// Validation loss (finished trials).
    pub val_loss: Option<f64>,
    /// Last training loss (finished trials).
    pub train_loss: Option<f64>,
    /// Epochs trained (finished trials).
    pub epochs: Option<u32>,
    /// The trial's seed.
    pub seed: u64,
    /// When it started (RFC 3339, UTC).
    pub start_time: String,
    /// Wall time in seconds as the parent measured it.
    pub duration_s: f64,
    /// Which attempt of this trial the row records (1 = first).
    pub attempt: u32,
    /// Failure reason (empty when finished).
    pub error: String,
}

impl TrialRecord {
    /// The search cost of this trial ([`trial_cost`] or [`failed_cost`]).
    pub fn cost(&self) -> f64 {
        match (self.state, self.val_accuracy, self.val_loss) {
            (RowState::Finished, Some(a), Some(l)) => trial_cost(a, l),
            _ => failed_cost(&self.epsilon),
        }
    }

    /// True for a finished trial with metrics.
    pub fn is_finished(&self) -> bool {
        self.state == RowState::Finished && self.val_accuracy.is_some()
    }
}

/// A journal that cannot be read or written; names the file and line.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// I/O failed.
    #[error("{path}: {source}")]
    Io {
        /// The journal.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A complete line is not a valid row (not a torn last line).
    #[error("{path}: line {line}: {message}")]
    Corrupt {
        /// The journal.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        message: String,
    },
}

/// What [`Journal::open`] found.
#[derive(Debug)]
pub struct Opened {
    /// The journal, ready to append.
    pub journal: Journal,
    /// Every complete row, in file order.
    pub rows: Vec<TrialRecord>,
    /// The torn last line that was cut off, if any.
    pub dropped_torn_line: Option<String>,
}

/// The open journal (append only).
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    file: File,
    terms: usize,
}

/// The header line for N coefficients.
pub fn header(terms: usize) -> String {
    let mut h = vec!["trial".to_string(), "phase".into(), "state".into()];
    h.extend((1..=terms).map(|j| format!("eps_{j}")));
    h.extend(
        [
            "val_accuracy",
            "val_loss",
            "train_loss",
            "epochs",
            "seed",
            "start_time",
            "duration_s",
            "attempt",
            "error",
        ]
        .map(String::from),
    );
    h.join(",")
}

impl Journal {
    /// Opens (or creates) the journal of a study with N = `terms`, cuts off
    /// a torn last line, and returns the rows already in it.
    pub fn open(path: &Path, terms: usize) -> Result<Opened, JournalError> {
        let io = |source| JournalError::Io {
            path: path.to_path_buf(),
            source,
        };
        // O_NOFOLLOW: a symlink planted at the journal's name is refused
        // (ELOOP), never followed to append rows to another file.
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)
            .map_err(io)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(io)?;
        let want = header(terms);
        // Everything after the last newline is a torn write.
        let complete = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        let torn = (complete < bytes.len())
            .then(|| String::from_utf8_lossy(&bytes[complete..]).into_owned());
        if torn.is_some() {
            file.set_len(complete as u64).map_err(io)?;
            file.sync_all().map_err(io)?;
        }
        let text = std::str::from_utf8(&bytes[..complete]).map_err(|e| JournalError::Corrupt {
            path: path.to_path_buf(),
            line: 1 + bytes[..e.valid_up_to()]
                .iter()
                .filter(|&&b| b == b'\n')
                .count(),
            message: "not UTF-8".into(),
        })?;
        let mut lines = text.lines();
        let mut rows = Vec::new();
        match lines.next() {
            None => {
                // New (or only a torn header): write the header.
                file.seek(SeekFrom::End(0)).map_err(io)?;
                file.write_all(format!("{want}\n").as_bytes()).map_err(io)?;
                file.sync_all().map_err(io)?;
                if let Some(dir) = path.parent() {
                    crate::fs::sync_dir_best_effort(dir);
                }
            }
            Some(h) if h == want => {
                for (i, line) in lines.enumerate() {
                    rows.push(
                        parse_row(line, terms).map_err(|message| JournalError::Corrupt {
                            path: path.to_path_buf(),
                            line: i + 2,
                            message,
                        })?,
                    );
                }
            }
            Some(h) => {
                return Err(JournalError::Corrupt {
                    path: path.to_path_buf(),
                    line: 1,
                    message: format!(
                        "header {h:?} is not the header of a {terms}-term study ({want:?})"
                    ),
                })
            }
        }
        Ok(Opened {
            journal: Journal {
                path: path.to_path_buf(),
                file,
                terms,
            },
            rows,
            dropped_torn_line: torn,
        })
    }

    /// The complete rows of a journal's text (read only: a torn last line
    /// is left out, not cut off), for readers such as `polytune status`.
    pub fn parse_rows(
        path: &Path,
        text: &str,
        terms: usize,
    ) -> Result<Vec<TrialRecord>, JournalError> {
        let complete = text.rfind('\n').map_or("", |i| &text[..=i]);
        let mut lines = complete.lines();
        let want = header(terms);
        match lines.next() {
            None => Ok(Vec::new()),
            Some(h) if h == want => lines
                .enumerate()
                .map(|(i, line)| {
                    parse_row(line, terms).map_err(|message| JournalError::Corrupt {
                        path: path.to_path_buf(),
                        line: i + 2,
                        message,
                    })
                })
                .collect(),
            Some(h) => Err(JournalError::Corrupt {
                path: path.to_path_buf(),
                line: 1,
                message: format!(
                    "header {h:?} is not the header of a {terms}-term study ({want:?})"
                ),
            }),
        }
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one row with a single write and fsyncs it.
    pub fn append(&mut self, row: &TrialRecord) -> Result<(), JournalError> {
        assert_eq!(
            row.epsilon.len(),
            self.terms,
            "row with the wrong number of coefficients"
        );
        let line = format_row(row);
        self.file
            .write_all(line.as_bytes())
            .and_then(|_| self.file.sync_data())
            .map_err(|source| JournalError::Io {
                path: self.path.clone(),
                source,
            })
    }
}

fn opt<T: ToString>(v: &Option<T>) -> String {
    v.as_ref().map(T::to_string).unwrap_or_default()
}

/// One row as a CSV line (with the newline). Error text is kept on one line.
pub fn format_row(r: &TrialRecord) -> String {
    let mut fields = vec![
        r.trial.to_string(),
        r.phase.as_str().into(),
        r.state.as_str().into(),
    ];
    fields.extend(r.epsilon.iter().map(f64::to_string));
    fields.extend([
        opt(&r.val_accuracy),
        opt(&r.val_loss),
        opt(&r.train_loss),
        opt(&r.epochs),
        r.seed.to_string(),
        r.start_time.clone(),
        r.duration_s.to_string(),
        r.attempt.to_string(),
        r.error.replace(['\n', '\r'], " | "),
    ]);
    let mut w = csv::WriterBuilder::new()
        .has_headers(false)
        .from_writer(Vec::new());
    w.write_record(&fields).expect("writing to memory");
    String::from_utf8(w.into_inner().expect("writing to memory")).expect("UTF-8 in, UTF-8 out")
}

/// Parses one line (without newline).
pub fn parse_row(line: &str, terms: usize) -> Result<TrialRecord, String> {
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(false)
        .from_reader(line.as_bytes());
    let rec = rdr
        .records()
        .next()
        .ok_or("empty line")?
        .map_err(|e| e.to_string())?;
    let want = terms + 12;
    if rec.len() != want {
        return Err(format!("{} fields, expected {want}", rec.len()));
    }
    let f = |i: usize| rec.get(i).unwrap_or("");
    fn num<T: std::str::FromStr>(s: &str, name: &str) -> Result<T, String> {
        s.parse()
            .map_err(|_| format!("{name} = {s:?} is not a number"))
    }
    fn optnum<T: std::str::FromStr>(s: &str, name: &str) -> Result<Option<T>, String> {
        if s.is_empty() {
            Ok(None)
        } else {
            num(s, name).map(Some)
        }
    }
    let phase = match f(1) {
        "search" => TrialPhase::Search,
        "confirm" => TrialPhase::Confirm,
        p => return Err(format!("phase = {p:?} is not search or confirm")),
    };
    let state = match f(2) {
        "finished" => RowState::Finished,
        "failed" => RowState::Failed,
        "retry" => RowState::Retry,
        "cancelled" => RowState::Cancelled,
        s => {
            return Err(format!(
                "state = {s:?} is not finished, failed, retry or cancelled"
            ))
        }
    };
    let epsilon = (0..terms)
        .map(|j| num::<f64>(f(3 + j), &format!("eps_{}", j + 1)))
        .collect::<Result<Vec<_>, _>>()?;
    let b = 3 + terms;
    let row = TrialRecord {
        trial: num(f(0), "trial")?,
        phase,
        state,
        epsilon,
        val_accuracy: optnum(f(b), "val_accuracy")?,
        val_loss: optnum(f(b + 1), "val_loss")?,
        train_loss: optnum(f(b + 2), "train_loss")?,
        epochs: optnum(f(b + 3), "epochs")?,
        seed: num(f(b + 4), "seed")?,
        start_time: f(b + 5).to_string(),
        duration_s: num(f(b + 6), "duration_s")?,
        attempt: num(f(b + 7), "attempt")?,
        error: f(b + 8).to_string(),
    };
    if row.state == RowState::Finished && (row.val_accuracy.is_none() || row.val_loss.is_none()) {
        return Err("a finished row without val_accuracy / val_loss".into());
    }
    // Hand-edited or damaged metrics must not steer the result.
    if let Some(a) = row.val_accuracy.filter(|a| !(0.0..=1.0).contains(a)) {
        return Err(format!("val_accuracy = {a} is outside [0, 1]"));
    }
    if let Some(l) = row.val_loss.filter(|l| !(l.is_finite() && *l >= 0.0)) {
        return Err(format!("val_loss = {l} is not a finite number >= 0"));
    }
    if let Some(t) = row.train_loss.filter(|t| !t.is_finite()) {
        return Err(format!("train_loss = {t} is not finite"));
    }
    if let Some(e) = row.epsilon.iter().find(|e| !e.is_finite()) {
        return Err(format!("an epsilon of {e} is not finite"));
    }
    if !(row.duration_s.is_finite() && row.duration_s >= 0.0) {
        return Err(format!(
            "duration_s = {} is not a finite number >= 0",
            row.duration_s
        ));
    }
    Ok(row)
}

/// Formats a time as RFC 3339 UTC with seconds (no external date crate).
pub fn rfc3339(t: std::time::SystemTime) -> String {
    let secs = t
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's civil-from-days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn rfc3339_known_values() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(951_782_400)),
            "2000-02-29T00:00:00Z"
        );
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(1_700_000_000)),
            "2023-11-14T22:13:20Z"
        );
    }
}
