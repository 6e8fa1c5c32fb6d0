//! Compiles the project's CUDA kernels (`src/**/*.cu`) to PTX when the `cuda`
//! feature is on: one PTX per kernel file and GPU architecture, so one build
//! runs on every GPU from Turing on.
//!
//! - Architectures: `CUDA_ARCHS` (e.g. `"80 90"`, `"8.0,9.0"` or `"sm_80"`),
//!   default 75, 80, 86, 89, 90, capped at what the installed nvcc supports.
//! - For each `foo.cu`, `$OUT_DIR/foo.ptx.rs` is a Rust expression
//!   `&[(arch, ptx), ..]` (ascending arch) that the op's `cuda_kernel.rs`
//!   `include!`s; `device::cuda::load_module` picks the newest arch the GPU's
//!   compute capability can run (PTX JIT-compiles forward to newer GPUs).
//! - `$OUT_DIR/launch.rs` holds `BLOCK`, the threads per block, read from
//!   `POLY_BLOCK` in `src/device/launch.cuh` (the kernels' `__launch_bounds__`),
//!   so the Rust launch sizes and the CUDA bounds cannot drift apart.
//! - Rebuilds when a kernel, `NVCC` (path of nvcc, default `nvcc` on `PATH`),
//!   the nvcc binary itself (a toolkit update), `CUDA_ARCHS`, `CUDA_PATH` or
//!   `CUDA_HOME` changes.
//!
//! With `ci-check` no toolkit is needed: empty PTX is embedded so the CUDA
//! code type-checks (the resulting binary cannot launch kernels).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The architectures built when `CUDA_ARCHS` is not set.
const DEFAULT_ARCHS: [u32; 5] = [75, 80, 86, 89, 90];
/// Where the block size is defined for the kernels and the launch code.
const LAUNCH_HEADER: &str = "src/device/launch.cuh";

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    if std::env::var_os("CARGO_FEATURE_CUDA").is_none() {
        return;
    }
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    write_launch_constants(&out_dir);

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
    includes.push(PathBuf::from("src/loss"));
    includes.sort();
    includes.dedup();

    if std::env::var_os("CARGO_FEATURE_CI_CHECK").is_some() {
        for k in &kernels {
            write_ptx_table(&out_dir, k, &[]);
        }
        return;
    }

    for var in ["NVCC", "CUDA_ARCHS", "CUDA_PATH", "CUDA_HOME"] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    let nvcc = std::env::var("NVCC").unwrap_or_else(|_| "nvcc".into());
    if let Some(path) = resolve_on_path(&nvcc) {
        // A reinstalled or updated toolkit changes the binary's mtime.
        println!("cargo:rerun-if-changed={}", path.display());
    }
    let version = nvcc_output(&nvcc, &["--version"]);
    let archs = select_archs(&nvcc, &version);

    // One nvcc per (kernel, arch), a few at a time.
    let jobs: Vec<(PathBuf, u32)> = kernels
        .iter()
        .flat_map(|k| archs.iter().map(move |&a| (k.clone(), a)))
        .collect();
    let parallel = std::thread::available_parallelism().map_or(2, |n| n.get().min(8));
    for chunk in jobs.chunks(parallel) {
        std::thread::scope(|s| {
            for (k, a) in chunk {
                let (nvcc, includes, out_dir) = (&nvcc, &includes, &out_dir);
                s.spawn(move || compile(nvcc, k, *a, includes, out_dir));
            }
        });
    }
    for k in &kernels {
        write_ptx_table(&out_dir, k, &archs);
    }
}

/// Runs nvcc for one kernel file and architecture.
fn compile(nvcc: &str, kernel: &Path, arch: u32, includes: &[PathBuf], out_dir: &Path) {
    let mut cmd = Command::new(nvcc);
    cmd.arg(format!("--gpu-architecture=compute_{arch}"))
        .arg("--ptx")
        .args(["--default-stream", "per-thread"])
        .arg("-O3")
        .arg("--use_fast_math")
        .arg("-o")
        .arg(ptx_path(out_dir, kernel, arch));
    for inc in includes {
        cmd.arg(format!("-I{}", inc.display()));
    }
    cmd.arg(kernel);
    let out = cmd.output().unwrap_or_else(|e| {
        panic!(
            "could not start {nvcc} for {}: {e}. Put the CUDA toolkit's nvcc on PATH or set NVCC",
            kernel.display()
        )
    });
    assert!(
        out.status.success(),
        "nvcc failed on {} for sm_{arch}:\n{}\n{}",
        kernel.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `CUDA_ARCHS` (all must be supported by nvcc), or the default list capped
/// at what nvcc supports.
fn select_archs(nvcc: &str, version: &str) -> Vec<u32> {
    let supported = supported_archs(nvcc, version);
    let mut archs = match std::env::var("CUDA_ARCHS") {
        Ok(list) if !list.trim().is_empty() => {
            let archs: Vec<u32> = list
                .split(|c: char| c == ',' || c == ';' || c.is_whitespace())
                .filter(|s| !s.is_empty())
                .map(|s| {
                    let digits: String = s.chars().filter(char::is_ascii_digit).collect();
                    digits.parse().unwrap_or_else(|_| {
                        panic!("CUDA_ARCHS: {s:?} is not an architecture like 80, 8.0 or sm_80")
                    })
                })
                .collect();
            for a in &archs {
                assert!(
                    supported.contains(a),
                    "CUDA_ARCHS: this nvcc cannot build sm_{a} (it supports {supported:?})"
                );
            }
            archs
        }
        _ => {
            let archs: Vec<u32> = DEFAULT_ARCHS
                .iter()
                .copied()
                .filter(|a| supported.contains(a))
                .collect();
            assert!(
                !archs.is_empty(),
                "nvcc supports none of sm_{DEFAULT_ARCHS:?} (it supports {supported:?}); set CUDA_ARCHS"
            );
            archs
        }
    };
    archs.sort_unstable();
    archs.dedup();
    archs
}

/// The `compute_XY` targets nvcc lists; for nvcc older than 11.1 (no
/// `--list-gpu-arch`), those its release is known to support.
fn supported_archs(nvcc: &str, version: &str) -> Vec<u32> {
    if let Ok(out) = Command::new(nvcc).arg("--list-gpu-arch").output() {
        if out.status.success() {
            let listed: Vec<u32> = String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter_map(|l| l.trim().strip_prefix("compute_"))
                .filter_map(|n| n.parse().ok())
                .collect();
            if !listed.is_empty() {
                return listed;
            }
        }
    }
    let release = version
        .split("release ")
        .nth(1)
        .and_then(|r| r.split(',').next())
        .and_then(|r| {
            let (major, minor) = r.trim().split_once('.')?;
            Some((major.parse::<u32>().ok()?, minor.parse::<u32>().ok()?))
        })
        .unwrap_or((0, 0));
    let max = if release >= (11, 8) {
        90
    } else if release >= (11, 1) {
        86
    } else if release >= (11, 0) {
        80
    } else {
        75
    };
    [75, 80, 86, 89, 90]
        .into_iter()
        .filter(|&a| a <= max)
        .collect()
}

fn nvcc_output(nvcc: &str, args: &[&str]) -> String {
    let out = Command::new(nvcc).args(args).output().unwrap_or_else(|e| {
        panic!("could not start {nvcc}: {e}. Put the CUDA toolkit's nvcc on PATH or set NVCC")
    });
    assert!(out.status.success(), "{nvcc} {args:?} failed");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn resolve_on_path(program: &str) -> Option<PathBuf> {
    let p = Path::new(program);
    if p.components().count() > 1 {
        return p.is_file().then(|| p.to_path_buf());
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(program))
        .find(|c| c.is_file())
}

fn ptx_path(out_dir: &Path, kernel: &Path, arch: u32) -> PathBuf {
    let stem = kernel.file_stem().expect("kernel file has a name");
    out_dir.join(format!("{}.sm{arch}.ptx", stem.to_string_lossy()))
}

/// `$OUT_DIR/<stem>.ptx.rs`: `&[(arch, include_str!(ptx)), ..]`; with no
/// archs (ci-check), one empty placeholder entry.
fn write_ptx_table(out_dir: &Path, kernel: &Path, archs: &[u32]) {
    let stem = kernel.file_stem().expect("kernel file has a name");
    let mut src = String::from("&[");
    if archs.is_empty() {
        src.push_str("(0u32, \"\")");
    }
    for &a in archs {
        let ptx = ptx_path(out_dir, kernel, a);
        write!(
            src,
            "({a}u32, include_str!({:?})),",
            ptx.display().to_string()
        )
        .expect("write to String");
    }
    src.push(']');
    let table = out_dir.join(format!("{}.ptx.rs", stem.to_string_lossy()));
    std::fs::write(&table, src).expect("write the PTX table");
}

/// `$OUT_DIR/launch.rs` from `#define POLY_BLOCK n` in [`LAUNCH_HEADER`].
fn write_launch_constants(out_dir: &Path) {
    println!("cargo:rerun-if-changed={LAUNCH_HEADER}");
    let header = std::fs::read_to_string(LAUNCH_HEADER)
        .unwrap_or_else(|e| panic!("cannot read {LAUNCH_HEADER}: {e}"));
    let block: u32 = header
        .lines()
        .find_map(|l| l.trim().strip_prefix("#define POLY_BLOCK "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("{LAUNCH_HEADER} has no `#define POLY_BLOCK <n>`"));
    assert!(
        block.is_power_of_two() && (32..=1024).contains(&block),
        "{LAUNCH_HEADER}: POLY_BLOCK = {block} must be a power of two in 32..=1024 (the block reductions need it)"
    );
    let src = format!(
        "/// Threads per block of every project kernel (`POLY_BLOCK` in `{LAUNCH_HEADER}`,\n\
         /// the kernels' `__launch_bounds__`).\npub(crate) const BLOCK: u32 = {block};\n"
    );
    std::fs::write(out_dir.join("launch.rs"), src).expect("write launch.rs");
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
