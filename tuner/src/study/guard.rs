//! Outputs never overwrite inputs: `--out` is checked against the config,
//! the weights, the data's files and the study's own files before any
//! trial runs (a study that would end by destroying its journal or the
//! user's config is refused at the start, not after hours of trials).
//!
//! Paths are compared after resolving symlinks and `..` (a file that does
//! not exist yet is compared by its resolved directory and name), and
//! existing files by device and inode, which also catches hard links.

use std::path::Path;

use super::config::StudyConfig;
use super::dir::{CONFIG_FILE, LOCK_FILE, META_FILE, PLOT_FILE, SUMMARY_FILE, TRIALS_FILE};
use super::inputs::{image_files, index_files};
use super::{StudyError, StudyOptions};
use crate::fs::{resolve, same_file};

fn refuse(out: &Path, what: String) -> StudyError {
    StudyError::Output {
        path: out.to_path_buf(),
        message: format!(
            "refusing to write the tuned TOML here: this is {what}; choose another --out"
        ),
    }
}

/// Refuses an `opts.out` that is the config, an input file of the study
/// (weights, label/split files, manifest, images) or one of the study
/// directory's files (`tuned.toml` itself is allowed: it gets the same
/// content), or that is a directory.
pub(crate) fn check_outputs(cfg: &StudyConfig, opts: &StudyOptions) -> Result<(), StudyError> {
    let Some(out) = &opts.out else {
        return Ok(());
    };
    if out.is_dir() {
        return Err(refuse(out, "a directory".into()));
    }
    let out_r = resolve(out);
    let study_r = resolve(&opts.study_dir);
    for (name, what) in [
        (CONFIG_FILE, "the study's config"),
        (META_FILE, "the study's record"),
        (TRIALS_FILE, "the study's journal"),
        (PLOT_FILE, "the study's plot"),
        (SUMMARY_FILE, "the study's summary"),
        (LOCK_FILE, "the study's lock file"),
    ] {
        let f = opts.study_dir.join(name);
        if out_r == study_r.join(name) || same_file(out, &f) {
            return Err(refuse(out, format!("{what} {}", f.display())));
        }
    }
    let config = Path::new(&opts.config_source);
    if out_r == resolve(config) || same_file(out, config) {
        return Err(refuse(
            out,
            format!("the study config {}", config.display()),
        ));
    }
    if !out.exists() {
        // A new file cannot be one of the (existing) inputs.
        return Ok(());
    }
    for f in index_files(cfg, &opts.config_source)? {
        if same_file(out, &f.path) {
            return Err(refuse(
                out,
                format!("an input of the study ({} {})", f.role, f.path.display()),
            ));
        }
    }
    for img in image_files(cfg, &opts.config_source)? {
        if same_file(out, &img) {
            return Err(refuse(
                out,
                format!("an image of the data set ({})", img.display()),
            ));
        }
    }
    Ok(())
}
