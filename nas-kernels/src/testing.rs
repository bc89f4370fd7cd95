//! Comparisons for tests that check the kernels against ground truth (finite differences,
//! the composed ops, the CPU kernels), shared by this crate's tests and nas-core's.

use candle_core::{DType, Result, Tensor};

use crate::cpu::Float;

/// max |a − b| / max |b|: the error relative to the reference tensor's scale (f64).
pub fn max_rel_err(a: &Tensor, reference: &Tensor) -> Result<f64> {
    let a = a.to_dtype(DType::F64)?.flatten_all()?;
    let b = reference.to_dtype(DType::F64)?.flatten_all()?;
    let diff = (a - &b)?.abs()?.max(0)?.to_scalar::<f64>()?;
    let scale = b.abs()?.max(0)?.to_scalar::<f64>()?;
    Ok(diff / scale.max(1e-30))
}

/// Asserts max |got − want| / max |want| ≤ `tol`, failing on any NaN (a kernel output element
/// nothing wrote: the host emulation fills fresh buffers with NaN).
pub fn check<T: Float>(what: &str, got: &[T], want: &[f64], tol: f64) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let scale = want.iter().fold(0f64, |m, v| m.max(v.abs())).max(1e-30);
    let mut worst = 0f64;
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let g = g.to_f64();
        assert!(!g.is_nan(), "{what}: element {i} is NaN (not written?)");
        worst = worst.max((g - w).abs() / scale);
    }
    assert!(worst <= tol, "{what}: relative error {worst:e} > {tol:e}");
}

/// The CUDA device the device tests run on: NAS_TEST_DEVICE=cuda (or cuda:N) names it; without
/// it the tests return at once, so a machine without a GPU never calls into the driver.
pub fn cuda_test_device() -> Option<candle_core::Device> {
    let spec = std::env::var("NAS_TEST_DEVICE").ok().filter(|s| s.starts_with("cuda"))?;
    let ordinal = match spec.strip_prefix("cuda:") {
        Some(i) => i.parse().expect("NAS_TEST_DEVICE: cuda or cuda:N"),
        None => 0,
    };
    Some(candle_core::Device::new_cuda(ordinal).expect("open the CUDA device"))
}
