//! Reading the committed JSON goldens of `tests/reference/` (shared by the
//! GP and paired-CI tests).

use serde_json::Value;

/// `tests/reference/<name>`, parsed.
pub fn golden(name: &str) -> Value {
    let path = format!("{}/tests/reference/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(&path).expect("read golden"))
        .expect("parse golden")
}

/// A JSON number.
pub fn f(v: &Value) -> f64 {
    v.as_f64().expect("number")
}

/// A JSON array of numbers.
pub fn vec_f(v: &Value) -> Vec<f64> {
    v.as_array().expect("array").iter().map(f).collect()
}
