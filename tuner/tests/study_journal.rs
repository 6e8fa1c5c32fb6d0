//! The journal file on its own: round trip, torn last line, corruption.

use polytune::study::{header, Journal, RowState, TrialRecord};
use polytune::trial::TrialPhase;

fn row(trial: u64, eps: Vec<f64>, state: RowState, error: &str) -> TrialRecord {
    let finished = state == RowState::Finished;
    TrialRecord {
        trial,
        phase: if trial < 100 {
            TrialPhase::Search
        } else {
            TrialPhase::Confirm
        },
        state,
        epsilon: eps,
        val_accuracy: finished.then_some(0.1 + 0.2),
        val_loss: finished.then_some(1.0 / 3.0),
        train_loss: finished.then_some(f64::MIN_POSITIVE),
        epochs: finished.then_some(7),
        seed: u64::MAX,
        start_time: "2026-01-02T03:04:05Z".into(),
        duration_s: 12.345,
        attempt: if state == RowState::Retry { 2 } else { 1 },
        error: error.into(),
    }
}

#[test]
fn rows_round_trip_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("trials.csv");
    let rows = vec![
        row(0, vec![0.0, -0.0], RowState::Finished, ""),
        row(
            1,
            vec![2.0, 1e-300],
            RowState::Failed,
            "exit status 3: \"quoted\", comma",
        ),
        row(
            2,
            vec![0.1 + 0.2, -1.0 / 3.0],
            RowState::Cancelled,
            "cancelled by shutdown",
        ),
        row(
            4,
            vec![0.5, 0.5],
            RowState::Retry,
            "killed by signal 9 (SIGKILL; out of memory?)",
        ),
        row(100, vec![9.999999999999998, 5e-324], RowState::Finished, ""),
    ];
    {
        let opened = Journal::open(&path, 2).unwrap();
        assert!(opened.rows.is_empty());
        let mut j = opened.journal;
        for r in &rows {
            j.append(r).unwrap();
        }
    }
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(text.lines().next().unwrap(), header(2));
    assert_eq!(
        header(2),
        "trial,phase,state,eps_1,eps_2,val_accuracy,val_loss,train_loss,epochs,seed,start_time,duration_s,attempt,error"
    );
    let back = Journal::open(&path, 2).unwrap();
    assert!(back.dropped_torn_line.is_none());
    assert_eq!(back.rows, rows);
    for (a, b) in back.rows.iter().zip(&rows) {
        for (x, y) in a.epsilon.iter().zip(&b.epsilon) {
            assert_eq!(x.to_bits(), y.to_bits());
        }
    }
    // A reason with newlines stays on one line.
    let mut j = back.journal;
    j.append(&row(
        3,
        vec![1.0, 1.0],
        RowState::Failed,
        "line one\nline two\r\n",
    ))
    .unwrap();
    let again = Journal::open(&path, 2).unwrap();
    assert_eq!(
        again.rows.last().unwrap().error,
        "line one | line two |  | "
    );
    assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 7);
}

#[test]
fn a_torn_last_line_is_cut_off_and_appends_continue_cleanly() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("trials.csv");
    let mut j = Journal::open(&path, 1).unwrap().journal;
    j.append(&row(0, vec![0.0], RowState::Finished, ""))
        .unwrap();
    drop(j);
    let good = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, format!("{good}1,search,fini")).unwrap();
    let opened = Journal::open(&path, 1).unwrap();
    assert_eq!(opened.dropped_torn_line.as_deref(), Some("1,search,fini"));
    assert_eq!(opened.rows.len(), 1);
    assert_eq!(std::fs::read_to_string(&path).unwrap(), good);
    let mut j = opened.journal;
    j.append(&row(1, vec![2.0], RowState::Finished, ""))
        .unwrap();
    let rows = Journal::open(&path, 1).unwrap().rows;
    assert_eq!(rows.iter().map(|r| r.trial).collect::<Vec<_>>(), vec![0, 1]);
    // A torn header of a brand-new journal is replaced by the header.
    let fresh = tmp.path().join("fresh.csv");
    std::fs::write(&fresh, "trial,pha").unwrap();
    let o = Journal::open(&fresh, 1).unwrap();
    assert!(o.rows.is_empty());
    assert_eq!(
        std::fs::read_to_string(&fresh).unwrap(),
        format!("{}\n", header(1))
    );
}

#[test]
fn corrupt_lines_and_foreign_headers_name_file_and_line() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("trials.csv");
    let mut j = Journal::open(&path, 1).unwrap().journal;
    j.append(&row(0, vec![0.0], RowState::Finished, ""))
        .unwrap();
    drop(j);
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str("1,search,finished,abc,0.5,0.1,0.1,1,0,t,1.0,1,\n");
    std::fs::write(&path, &text).unwrap();
    let e = Journal::open(&path, 1).unwrap_err().to_string();
    assert!(
        e.contains("trials.csv: line 3: eps_1 = \"abc\" is not a number"),
        "{e}"
    );
    std::fs::write(&path, "1,search,done,1.0,0.5,0.1,0.1,1,0,t,1.0,1,\n").unwrap();
    let e = Journal::open(&path, 1).unwrap_err().to_string();
    assert!(e.contains("line 1: header"), "{e}");
    let two = tmp.path().join("two.csv");
    std::fs::write(&two, format!("{}\n", header(2))).unwrap();
    let e = Journal::open(&two, 1).unwrap_err().to_string();
    assert!(e.contains("is not the header of a 1-term study"), "{e}");
    let finished_without_metrics = tmp.path().join("f.csv");
    std::fs::write(
        &finished_without_metrics,
        format!("{}\n0,search,finished,0,,,,,0,t,1.0,1,\n", header(1)),
    )
    .unwrap();
    let e = Journal::open(&finished_without_metrics, 1)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("line 2: a finished row without val_accuracy"),
        "{e}"
    );
}

#[test]
fn metrics_out_of_range_are_an_error_naming_file_line_and_value() {
    // A hand-edited journal must not steer the result (issue: NaN changed
    // the chosen trial; 1.5 was written out as `best = 1.5`).
    let tmp = tempfile::tempdir().unwrap();
    for (field, bad, want) in [
        (
            "val_accuracy",
            "NaN",
            "val_accuracy = NaN is outside [0, 1]",
        ),
        (
            "val_accuracy",
            "1.5",
            "val_accuracy = 1.5 is outside [0, 1]",
        ),
        ("val_accuracy", "-3", "val_accuracy = -3 is outside [0, 1]"),
        (
            "val_loss",
            "inf",
            "val_loss = inf is not a finite number >= 0",
        ),
        (
            "val_loss",
            "-0.5",
            "val_loss = -0.5 is not a finite number >= 0",
        ),
        (
            "duration_s",
            "NaN",
            "duration_s = NaN is not a finite number >= 0",
        ),
        ("eps_1", "inf", "an epsilon of inf is not finite"),
    ] {
        let path = tmp.path().join(format!("{field}-{bad}.csv"));
        let mut j = Journal::open(&path, 1).unwrap().journal;
        j.append(&row(0, vec![0.0], RowState::Finished, ""))
            .unwrap();
        j.append(&row(1, vec![2.0], RowState::Finished, ""))
            .unwrap();
        drop(j);
        let text = std::fs::read_to_string(&path).unwrap();
        let header_line = text.lines().next().unwrap();
        let col = header_line.split(',').position(|h| h == field).unwrap();
        let mut lines: Vec<String> = text.lines().map(String::from).collect();
        let mut f: Vec<String> = lines[2].split(',').map(String::from).collect();
        f[col] = bad.into();
        lines[2] = f.join(",");
        std::fs::write(&path, lines.join("\n") + "\n").unwrap();
        let e = Journal::open(&path, 1).unwrap_err().to_string();
        assert!(
            e.contains(&format!("{}: line 3: {want}", path.display())),
            "{field} = {bad}: {e}"
        );
    }
}

#[test]
fn a_symlink_at_the_journal_name_is_refused_not_followed() {
    let tmp = tempfile::tempdir().unwrap();
    let victim = tmp.path().join("victim.txt");
    // Empty: a followed link would get the header written into it.
    std::fs::write(&victim, "").unwrap();
    let path = tmp.path().join("trials.csv");
    std::os::unix::fs::symlink(&victim, &path).unwrap();
    let e = Journal::open(&path, 1).unwrap_err().to_string();
    assert!(e.starts_with(&format!("{}: ", path.display())), "{e}");
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "");
}
