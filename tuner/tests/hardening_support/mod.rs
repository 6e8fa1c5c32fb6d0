//! Helpers of the hardening tests: a counting analytic runner, the real
//! binary on a tiny digits study, and hostile files (a PNG that declares
//! 16000×16000 pixels in a few hundred KB, weights with a NaN).
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use polytune::orchestrator::{FnRunner, TrialOutcome, TrialRunner};

use polytune::trial::TrialSpec;

pub const BIN: &str = env!("CARGO_BIN_EXE_polytune");

/// A quick study on the embedded digits: 1 + 1 epochs per trial.
pub const SMALL: &str = r#"
[study]
budget = 2
seed = 0
confirm_seeds = 2
workers = 1
interrupt_grace_s = 0

[train]
model = "small-resnet"
freeze_epochs = 1
epochs = 1
base_lr = 0.04
lr_mult = 2

[data]
source = "digits"
"#;

/// The analytic runner of `common`, counting the trials it runs.
pub fn counting_runner(
    analytic: fn(&TrialSpec) -> TrialOutcome,
) -> (Arc<dyn TrialRunner>, Arc<AtomicUsize>) {
    let count = Arc::new(AtomicUsize::new(0));
    let c = count.clone();
    let runner = FnRunner::new(move |spec: &TrialSpec| {
        c.fetch_add(1, Ordering::SeqCst);
        analytic(spec)
    });
    (Arc::new(runner), count)
}

/// `polytune ARGS` in `cwd` (no RUST_LOG, stdin closed).
pub fn polytune(cwd: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.current_dir(cwd)
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null());
    c
}

/// Runs `polytune ARGS` in `cwd` to the end.
pub fn run(cwd: &Path, args: &[&str]) -> Output {
    polytune(cwd, args).output().unwrap()
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A working directory holding `name` with `text`.
pub fn workdir(name: &str, text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join(name);
    std::fs::write(&cfg, text).unwrap();
    (dir, cfg)
}

/// A PNG chunk: length, type, data, CRC-32 of type and data.
fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    let mut crc = flate2::Crc::new();
    crc.update(kind);
    crc.update(data);
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    out.extend_from_slice(&crc.sum().to_be_bytes());
}

/// A valid, all-black 8-bit grayscale PNG of `w`×`h` pixels, written row by
/// row (never holding the image): 16000×16000 is about 250 KB.
pub fn black_gray_png(w: u32, h: u32) -> Vec<u8> {
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
    let row = vec![0u8; 1 + w as usize]; // filter byte 0, then the pixels
    for _ in 0..h {
        z.write_all(&row).unwrap();
    }
    let idat = z.finish().unwrap();
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&w.to_be_bytes());
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 0, 0, 0, 0]); // 8-bit gray, deflate, no filter, no interlace
    chunk(&mut png, b"IHDR", &ihdr);
    chunk(&mut png, b"IDAT", &idat);
    chunk(&mut png, b"IEND", &[]);
    png
}

/// The tensors of a fresh small ResNet (10 classes) as (name, shape,
/// values), in visiting order.
pub fn small_resnet_tensors() -> Vec<(String, Vec<usize>, Vec<f32>)> {
    use dfdx::prelude::*;
    use poly_loss::nn::pretrained::{visit_model, ModelItem};
    use poly_loss::nn::resnet::builders;
    let dev = Cpu::default();
    let net = dev.build_module::<builders::SmallResNet<10>, f32>();
    let mut out = Vec::new();
    visit_model(&net, |item| {
        if let ModelItem::Tensor {
            name,
            shape,
            values,
        } = item
        {
            out.push((name, shape, values()));
        }
    });
    out
}

/// Writes `tensors` as an F32 safetensors file.
pub fn write_safetensors(path: &Path, tensors: &[(String, Vec<usize>, Vec<f32>)]) {
    use safetensors::tensor::{Dtype, TensorView};
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(n, s, v)| {
            (
                n.clone(),
                s.clone(),
                v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            )
        })
        .collect();
    let views: Vec<(String, TensorView<'_>)> = bytes
        .iter()
        .map(|(n, s, b)| {
            (
                n.clone(),
                TensorView::new(Dtype::F32, s.clone(), b).unwrap(),
            )
        })
        .collect();
    std::fs::write(path, safetensors::tensor::serialize(views, &None).unwrap()).unwrap();
}

/// Files in `dir` whose names start with `prefix`.
pub fn names_starting(dir: &Path, prefix: &str) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(prefix))
        .collect();
    v.sort();
    v
}
