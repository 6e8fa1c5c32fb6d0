//! Opens a CUDA device the way the trainer does and runs one fused PolyLoss
//! on it, or says plainly why it cannot (no driver, no such device):
//!
//! ```sh
//! cargo run --example cuda_devices --features cuda [-- ORDINAL]
//! ```
//!
//! Exits 0 with the loss, 1 with the reason. `scripts/link-check.sh` runs it
//! against stub CUDA libraries to see the "no driver" error instead of a panic.

#[cfg(feature = "cuda")]
fn main() -> std::process::ExitCode {
    use dfdx::prelude::*;
    use poly_loss::prelude::*;

    let ordinal = match std::env::args().nth(1).map(|a| a.parse::<usize>()) {
        None => 0,
        Some(Ok(n)) => n,
        Some(Err(e)) => {
            eprintln!("error: the device ordinal must be a number: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let dev = match poly_loss::try_open_cuda(ordinal, 0) {
        Ok(dev) => dev,
        Err(e) => {
            eprintln!("error: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let logits: Tensor<Rank2<2, 3>, f32, _> = dev.tensor([[2.0, 0.5, -1.0], [0.1, 0.2, 3.0]]);
    let loss = poly_loss(logits, &[0usize, 2], [1.0]);
    println!(
        "CUDA device {ordinal}: Poly-1 loss of a 2×3 batch = {}",
        loss.array()
    );
    std::process::ExitCode::SUCCESS
}

#[cfg(not(feature = "cuda"))]
fn main() {
    eprintln!("built without the `cuda` feature: cargo run --example cuda_devices --features cuda");
    std::process::exit(1);
}
