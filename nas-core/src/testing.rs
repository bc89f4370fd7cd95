//! Helpers for tests that compare against ground truth (golden values, finite differences).

use candle_core::{DType, Result, Tensor};

/// max |a − b| / max |b|: the error relative to the reference tensor's scale (f64).
pub fn max_rel_err(a: &Tensor, reference: &Tensor) -> Result<f64> {
    let a = a.to_dtype(DType::F64)?.flatten_all()?;
    let b = reference.to_dtype(DType::F64)?.flatten_all()?;
    let diff = (a - &b)?.abs()?.max(0)?.to_scalar::<f64>()?;
    let scale = b.abs()?.max(0)?.to_scalar::<f64>()?;
    Ok(diff / scale.max(1e-30))
}

/// Metric records without their wall-clock field, for comparing two runs.
pub fn without_time(mut records: Vec<serde_json::Value>) -> Vec<serde_json::Value> {
    for r in &mut records {
        if let Some(o) = r.as_object_mut() {
            o.remove("seconds");
        }
    }
    records
}
