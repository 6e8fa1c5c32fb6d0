//! Compiles the project's CUDA kernels (`src/**/*.cu`) to PTX when the `cuda`
//! feature is on. Each `foo.cu` becomes `$OUT_DIR/foo.ptx`, which the op's
//! `cuda_kernel.rs` embeds with `include_str!`.
//!
//! With `ci-check` no toolkit is needed: empty PTX files are written so the
//! CUDA code type-checks (the resulting binary cannot launch kernels).

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    if std::env::var_os("CARGO_FEATURE_CUDA").is_none() {
        return;
    }
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let mut kernels = Vec::new();
    collect_kernels(Path::new("src"), &mut kernels);
    kernels.sort();
    for k in &kernels {
        println!("cargo:rerun-if-changed={}", k.display());
    }
    let mut includes: Vec<PathBuf> = kernels
        .iter()
        .filter_map(|k| k.parent().map(Path::to_path_buf))
        .collect();
    includes.push(PathBuf::from("src/device"));
    includes.sort();
    includes.dedup();

    if std::env::var_os("CARGO_FEATURE_CI_CHECK").is_some() {
        for k in &kernels {
            std::fs::File::create(ptx_path(&out_dir, k))
                .expect("write placeholder PTX for ci-check");
        }
        return;
    }

    println!("cargo:rerun-if-env-changed=CUDA_COMPUTE_CAP");
    let arch = std::env::var("CUDA_COMPUTE_CAP")
        .ok()
        .map(|s| s.replace('.', ""))
        .unwrap_or_else(query_compute_cap);
    for k in &kernels {
        let mut cmd = Command::new("nvcc");
        cmd.arg(format!("--gpu-architecture=sm_{arch}"))
            .arg("--ptx")
            .args(["--default-stream", "per-thread"])
            .arg("-O3")
            .arg("--use_fast_math")
            .arg("-o")
            .arg(ptx_path(&out_dir, k));
        for inc in &includes {
            cmd.arg(format!("-I{}", inc.display()));
        }
        cmd.arg(k);
        let out = cmd.output().unwrap_or_else(|e| {
            panic!(
                "could not start nvcc for {}: {e}. Is the CUDA toolkit on PATH?",
                k.display()
            )
        });
        assert!(
            out.status.success(),
            "nvcc failed on {}:\n{}\n{}",
            k.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

fn ptx_path(out_dir: &Path, kernel: &Path) -> PathBuf {
    let stem = kernel.file_stem().expect("kernel file has a name");
    out_dir.join(stem).with_extension("ptx")
}

fn collect_kernels(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect_kernels(&path, out);
        } else if path.extension().is_some_and(|e| e == "cu") {
            out.push(path);
        } else if path.extension().is_some_and(|e| e == "cuh") {
            println!("cargo:rerun-if-changed={}", path.display());
        }
    }
}

fn query_compute_cap() -> String {
    let out = Command::new("nvidia-smi")
        .args(["--query-gpu=compute_cap", "--format=csv,noheader"])
        .output()
        .expect("nvidia-smi failed: set CUDA_COMPUTE_CAP (e.g. 90) or put nvidia-smi on PATH");
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .next()
        .map(|l| l.trim().replace('.', ""))
        .filter(|s| !s.is_empty())
        .expect("nvidia-smi printed no compute capability; set CUDA_COMPUTE_CAP")
}
