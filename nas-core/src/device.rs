//! Device selection: `cpu`, `cuda` or `cuda:N`, parsed once and opened with a clear error when
//! CUDA is asked for but not compiled in or not present.

use std::fmt;
use std::str::FromStr;

use candle_core::Device;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum DeviceSpec {
    #[default]
    Cpu,
    Cuda(usize),
}

impl DeviceSpec {
    /// Opens the device. CUDA without the `cuda` feature, or without a GPU, is an error. In a
    /// data-parallel run each process of a machine takes its own GPU: `cuda:i` is GPU
    /// i + the process's local rank (`dist::local_rank`), unless the launcher left it one
    /// visible GPU (CUDA_VISIBLE_DEVICES of one entry, as Slurm's GPU binding does).
    pub fn open(self) -> Result<Device> {
        match self {
            DeviceSpec::Cpu => Ok(Device::Cpu),
            DeviceSpec::Cuda(i) => {
                let one_visible =
                    std::env::var("CUDA_VISIBLE_DEVICES").is_ok_and(|v| !v.is_empty() && !v.contains(','));
                let offset = if one_visible { 0 } else { crate::dist::local_rank() };
                open_cuda(i + offset)
            }
        }
    }

    pub fn is_cuda(self) -> bool {
        matches!(self, DeviceSpec::Cuda(_))
    }
}

#[cfg(feature = "cuda")]
fn open_cuda(i: usize) -> Result<Device> {
    let device = Device::new_cuda(i).map_err(|e| Error::Device(format!("cannot open CUDA device {i}: {e}")))?;
    if let Device::Cuda(dev) = &device {
        // candle allocates with cuMemAllocAsync from the device's default pool, which hands
        // freed memory back to the driver at every synchronisation unless told to keep it:
        // then every step allocates afresh from the driver. Keep it, as PyTorch's caching
        // allocator does.
        if let Some(pool) = memory_pool(dev) {
            let mut keep = u64::MAX;
            // SAFETY: a valid pool and an attribute whose value is a u64.
            unsafe {
                cuda_sys::cuMemPoolSetAttribute(
                    pool,
                    cuda_sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD,
                    (&mut keep as *mut u64).cast(),
                )
            };
        }
    }
    Ok(device)
}

#[cfg(feature = "cuda")]
use candle_core::cuda_backend::cudarc::driver::sys as cuda_sys;

/// The default memory pool of the device candle allocates from.
#[cfg(feature = "cuda")]
fn memory_pool(dev: &candle_core::CudaDevice) -> Option<cuda_sys::CUmemoryPool> {
    let mut pool = std::ptr::null_mut();
    let cu_device = dev.cuda_stream().context().cu_device();
    // SAFETY: writes the pool handle of a valid device.
    let r = unsafe { cuda_sys::cuDeviceGetDefaultMemPool(&mut pool, cu_device) };
    (r == cuda_sys::CUresult::CUDA_SUCCESS).then_some(pool)
}

/// The most device memory the run had allocated at once since the last `reset_peak_memory`
/// (the pool's high-water mark, as `torch.cuda.max_memory_allocated` reports PyTorch's);
/// None on the CPU.
pub fn peak_memory(device: &Device) -> Option<u64> {
    #[cfg(feature = "cuda")]
    if let Device::Cuda(dev) = device {
        let pool = memory_pool(dev)?;
        let mut v = 0u64;
        // SAFETY: a valid pool and an attribute whose value is a u64.
        let r = unsafe {
            cuda_sys::cuMemPoolGetAttribute(
                pool,
                cuda_sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_USED_MEM_HIGH,
                (&mut v as *mut u64).cast(),
            )
        };
        return (r == cuda_sys::CUresult::CUDA_SUCCESS).then_some(v);
    }
    let _ = device;
    None
}

/// Restarts `peak_memory` from the memory in use now.
pub fn reset_peak_memory(device: &Device) {
    #[cfg(feature = "cuda")]
    if let Device::Cuda(dev) = device {
        if let Some(pool) = memory_pool(dev) {
            let mut zero = 0u64;
            // SAFETY: as in peak_memory; resetting the high-water mark takes the value 0.
            unsafe {
                cuda_sys::cuMemPoolSetAttribute(
                    pool,
                    cuda_sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_USED_MEM_HIGH,
                    (&mut zero as *mut u64).cast(),
                )
            };
        }
    }
    let _ = device;
}

#[cfg(not(feature = "cuda"))]
fn open_cuda(i: usize) -> Result<Device> {
    Err(Error::Device(format!(
        "device cuda:{i} requested, but this binary was built without CUDA support \
         (rebuild with `--features cuda`)"
    )))
}

impl FromStr for DeviceSpec {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "cpu" => Ok(DeviceSpec::Cpu),
            "cuda" | "gpu" => Ok(DeviceSpec::Cuda(0)),
            _ => s
                .strip_prefix("cuda:")
                .and_then(|i| i.parse().ok())
                .map(DeviceSpec::Cuda)
                .ok_or_else(|| Error::DeviceSpec(s.to_string())),
        }
    }
}

impl TryFrom<String> for DeviceSpec {
    type Error = Error;
    fn try_from(s: String) -> Result<Self> {
        s.parse()
    }
}

impl From<DeviceSpec> for String {
    fn from(d: DeviceSpec) -> String {
        d.to_string()
    }
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceSpec::Cpu => write!(f, "cpu"),
            DeviceSpec::Cuda(i) => write!(f, "cuda:{i}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_device_specs() {
        assert_eq!("cpu".parse::<DeviceSpec>().unwrap(), DeviceSpec::Cpu);
        assert_eq!("cuda".parse::<DeviceSpec>().unwrap(), DeviceSpec::Cuda(0));
        assert_eq!("cuda:3".parse::<DeviceSpec>().unwrap(), DeviceSpec::Cuda(3));
        for bad in ["", "tpu", "cuda:", "cuda:x", "cuda:-1"] {
            assert!(bad.parse::<DeviceSpec>().is_err(), "{bad}");
        }
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn cuda_without_feature_is_a_clear_error() {
        let err = DeviceSpec::Cuda(0).open().unwrap_err().to_string();
        assert!(err.contains("without CUDA support"), "{err}");
    }
}
