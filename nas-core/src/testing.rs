//! Helpers for tests that compare against ground truth (golden values, finite differences).

use candle_core::{DType, Result, Tensor};

pub use crate::ops::testing::max_rel_err;

/// Metric records without their wall-clock field, for comparing two runs.
pub fn without_time(mut records: Vec<serde_json::Value>) -> Vec<serde_json::Value> {
    for r in &mut records {
        if let Some(o) = r.as_object_mut() {
            o.remove("seconds");
        }
    }
    records
}

/// The CUDA device the device tests run on: NAS_TEST_DEVICE=cuda (or cuda:N) names it; without
/// it the tests return at once, so a machine without a GPU never calls into the driver.
pub fn cuda_test_device() -> Option<candle_core::Device> {
    let spec = std::env::var("NAS_TEST_DEVICE").ok().filter(|s| s.starts_with("cuda"))?;
    let spec: crate::DeviceSpec = spec.parse().expect("NAS_TEST_DEVICE");
    Some(spec.open().expect("open the CUDA device"))
}

/// The largest difference between the two runs' values of `after`, relative to the largest
/// update either made from `before` (a step is small next to the weights, so comparing the
/// values alone would hide errors in it).
pub fn update_rel_err(before: &Tensor, after_a: &Tensor, after_b: &Tensor) -> Result<f64> {
    let f = |t: &Tensor| t.to_device(&candle_core::Device::Cpu)?.to_dtype(DType::F64)?.flatten_all();
    let (b, x, y) = (f(before)?, f(after_a)?, f(after_b)?);
    let diff = (&x - &y)?.abs()?.max(0)?.to_scalar::<f64>()?;
    let step = (&x - &b)?.abs()?.max(0)?.to_scalar::<f64>()?.max((&y - &b)?.abs()?.max(0)?.to_scalar::<f64>()?);
    Ok(diff / step.max(1e-30))
}
