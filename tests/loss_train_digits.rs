//! Training with `poly_loss::<1>` learns on real data (UCI digits): the
//! training loss falls and validation accuracy ends far above chance (10%).

use crate::digits;

#[test]
fn poly1_learns_digits() {
    let data = digits::load(0);
    let (hist, m) = digits::train(&data, digits::Loss::Poly1(2.0), 6, 1);
    assert!(hist.iter().all(|v| v.is_finite()));
    assert!(
        hist[5] < 0.5 * hist[0],
        "training loss did not fall: {hist:?}"
    );
    assert!(
        m.val_acc > 0.85,
        "validation accuracy {} (chance is 0.10)",
        m.val_acc
    );
    assert!(m.val_ce < 0.6, "validation CE {}", m.val_ce);
}
