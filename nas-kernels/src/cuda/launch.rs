//! Launch geometry of the CUDA kernels and their argument structs, device-independent so
//! that the CPU tests check it and run the kernels' host builds over exactly the grids the
//! GPU gets. The structs mirror `cuda/common.cuh` field for field (64-bit each).
//!
//! Elementwise kernels are grid-stride loops over 64-bit indices: `BLOCK` threads per block
//! and at most `MAX_BLOCKS` blocks, so any size is covered and no grid limit is reached.
//! Reductions use blocks of `REDUCE_THREADS` threads and a static shared buffer of as many
//! f64; per-channel reductions run on a (C, splits) grid, each block a fixed chunk of the
//! channel, and are finished in chunk order (deterministic).

use crate::batch_norm::bn_dims;
use crate::depthwise::DwGeom;
use crate::partial::PcGeom;
use crate::pointwise::PwGeom;
use crate::pool::{PoolGeom, ValidGeom};

/// Threads per block of the elementwise kernels.
pub const BLOCK: u32 = 256;
/// Upper bound on the blocks of an elementwise grid (a few waves of a large GPU).
pub const MAX_BLOCKS: u64 = 4096;
/// Threads per block of the reduction kernels (`NAS_REDUCE_THREADS` in common.cuh).
pub const REDUCE_THREADS: u32 = 256;
/// Static shared memory of a reduction block (one f64 per thread).
pub const REDUCE_SHARED_BYTES: usize = REDUCE_THREADS as usize * 8;
/// Largest filter the filter-gradient kernel keeps in registers (`NAS_MAX_TAPS`).
pub const MAX_TAPS: usize = 25;
/// CUDA's limits on grid dimensions.
pub const MAX_GRID_X: u64 = (1 << 31) - 1;
pub const MAX_GRID_YZ: u64 = 65535;
/// Shared memory a block may use without opting in.
pub const SHARED_LIMIT: usize = 48 * 1024;

// The reduction blocks' shared buffer fits without opting in, and the tree reduction needs a
// power of two threads; blocks stay within CUDA's 1024 threads.
const _: () = assert!(REDUCE_SHARED_BYTES <= SHARED_LIMIT);
const _: () = assert!(REDUCE_THREADS.is_power_of_two() && REDUCE_THREADS <= 1024 && BLOCK <= 1024);

/// A kernel launch: blocks and threads per block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Launch {
    pub grid: [u32; 3],
    pub block: [u32; 3],
}

impl Launch {
    pub fn threads(&self) -> u64 {
        self.grid.iter().chain(&self.block).map(|&v| v as u64).product()
    }
}

/// A grid-stride loop over `n` elements.
pub fn elementwise(n: usize) -> Launch {
    let blocks = (n as u64).div_ceil(BLOCK as u64).clamp(1, MAX_BLOCKS);
    Launch { grid: [blocks as u32, 1, 1], block: [BLOCK, 1, 1] }
}

/// A one-dimensional reduction of `n` elements into `grid[0]` block partial sums (at least
/// 4096 elements per block, at most 1024 blocks).
pub fn reduce_1d(n: usize) -> Launch {
    let blocks = (n as u64).div_ceil(4096).clamp(1, 1024);
    Launch { grid: [blocks as u32, 1, 1], block: [REDUCE_THREADS, 1, 1] }
}

/// How a per-channel reduction of `per_channel` values splits each of `c` channels: enough
/// blocks to fill a large GPU (about 512 in all), chunks of at least 2048 values. Returns
/// (splits, chunk) with splits·chunk ≥ per_channel and no empty chunk.
pub fn channel_splits(c: usize, per_channel: usize) -> (usize, usize) {
    let per_channel = per_channel.max(1);
    let want = 512usize.div_ceil(c.max(1));
    let most = per_channel.div_ceil(2048);
    let splits = want.min(most).clamp(1, MAX_GRID_YZ as usize);
    let chunk = per_channel.div_ceil(splits);
    (per_channel.div_ceil(chunk), chunk)
}

/// The (C, splits) grid of a per-channel reduction.
pub fn channel_reduce(c: usize, splits: usize) -> Launch {
    Launch { grid: [c as u32, splits as u32, 1], block: [REDUCE_THREADS, 1, 1] }
}

/// `cuda/common.cuh` DwArgs.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DwArgs {
    pub b: i64,
    pub c: i64,
    pub h: i64,
    pub w: i64,
    pub k: i64,
    pub stride: i64,
    pub pad: i64,
    pub dil: i64,
    pub oh: i64,
    pub ow: i64,
    pub splits: i64,
    pub chunk: i64,
}

impl DwArgs {
    pub(crate) fn new(g: &DwGeom) -> Self {
        let (splits, chunk) = channel_splits(g.c, g.b * g.oh * g.ow);
        let i = |v: usize| v as i64;
        Self {
            b: i(g.b),
            c: i(g.c),
            h: i(g.h),
            w: i(g.w),
            k: i(g.k),
            stride: i(g.p.stride),
            pad: i(g.p.padding),
            dil: i(g.p.dilation),
            oh: i(g.oh),
            ow: i(g.ow),
            splits: i(splits),
            chunk: i(chunk),
        }
    }

    pub fn out_len(&self) -> usize {
        (self.b * self.c * self.oh * self.ow) as usize
    }

    pub fn in_len(&self) -> usize {
        (self.b * self.c * self.h * self.w) as usize
    }

    pub fn taps(&self) -> usize {
        (self.k * self.k) as usize
    }
}

/// `cuda/common.cuh` PoolArgs.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolArgs {
    pub b: i64,
    pub c: i64,
    pub h: i64,
    pub w: i64,
    pub oh: i64,
    pub ow: i64,
    pub stride: i64,
}

impl PoolArgs {
    pub(crate) fn new(g: &PoolGeom) -> Self {
        let i = |v: usize| v as i64;
        Self { b: i(g.b), c: i(g.c), h: i(g.h), w: i(g.w), oh: i(g.oh), ow: i(g.ow), stride: i(g.stride) }
    }

    pub fn out_len(&self) -> usize {
        (self.b * self.c * self.oh * self.ow) as usize
    }

    pub fn in_len(&self) -> usize {
        (self.b * self.c * self.h * self.w) as usize
    }
}

/// `cuda/common.cuh` ValidArgs.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ValidArgs {
    pub planes: i64,
    pub h: i64,
    pub w: i64,
    pub k: i64,
    pub stride: i64,
    pub oh: i64,
    pub ow: i64,
}

impl ValidArgs {
    pub(crate) fn new(g: &ValidGeom) -> Self {
        let i = |v: usize| v as i64;
        Self {
            planes: i(g.planes),
            h: i(g.dims[2]),
            w: i(g.dims[3]),
            k: i(g.k),
            stride: i(g.s),
            oh: i(g.oh),
            ow: i(g.ow),
        }
    }

    pub fn out_len(&self) -> usize {
        (self.planes * self.oh * self.ow) as usize
    }

    pub fn in_len(&self) -> usize {
        (self.planes * self.h * self.w) as usize
    }
}

/// `cuda/common.cuh` PwArgs.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PwArgs {
    pub b: i64,
    pub ci: i64,
    pub h: i64,
    pub w: i64,
    pub oh: i64,
    pub ow: i64,
    pub stride: i64,
    pub offset: i64,
}

impl PwArgs {
    pub(crate) fn new(g: &PwGeom) -> Self {
        let i = |v: usize| v as i64;
        Self {
            b: i(g.b),
            ci: i(g.ci),
            h: i(g.h),
            w: i(g.w),
            oh: i(g.oh),
            ow: i(g.ow),
            stride: i(g.p.stride),
            offset: i(g.p.offset),
        }
    }

    pub fn sampled_len(&self) -> usize {
        (self.b * self.ci * self.oh * self.ow) as usize
    }

    pub fn in_len(&self) -> usize {
        (self.b * self.ci * self.h * self.w) as usize
    }
}

/// `cuda/common.cuh` BnArgs.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BnArgs {
    pub b: i64,
    pub c: i64,
    pub hw: i64,
    pub splits: i64,
    pub chunk: i64,
}

impl BnArgs {
    /// For an input of shape `dims`, (B, C, H, W) or (B, C).
    pub fn new(dims: &[usize]) -> candle_core::Result<Self> {
        let (b, c, hw) = bn_dims(dims)?;
        Ok(Self::of(b, c, hw))
    }

    pub fn of(b: usize, c: usize, hw: usize) -> Self {
        let (splits, chunk) = channel_splits(c, b * hw);
        let i = |v: usize| v as i64;
        Self { b: i(b), c: i(c), hw: i(hw), splits: i(splits), chunk: i(chunk) }
    }

    pub fn len(&self) -> usize {
        (self.b * self.c * self.hw) as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// f64 elements of the partial-sum buffer.
    pub fn partial_len(&self) -> usize {
        (self.c * self.splits * 2) as usize
    }
}

/// `cuda/common.cuh` PcArgs.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PcArgs {
    pub b: i64,
    pub c: i64,
    pub ca: i64,
    pub k: i64,
    pub h: i64,
    pub w: i64,
    pub ho: i64,
    pub wo: i64,
    pub stride: i64,
}

impl PcArgs {
    pub(crate) fn new(g: &PcGeom) -> Self {
        let i = |v: usize| v as i64;
        Self {
            b: i(g.b),
            c: i(g.c),
            ca: i(g.ca),
            k: i(g.k),
            h: i(g.h),
            w: i(g.w),
            ho: i(g.ho),
            wo: i(g.wo),
            stride: i(g.stride),
        }
    }

    pub fn out_len(&self) -> usize {
        (self.b * self.c * self.ho * self.wo) as usize
    }

    pub fn y_len(&self) -> usize {
        (self.b * self.ca * self.ho * self.wo) as usize
    }

    pub fn x_len(&self) -> usize {
        (self.b * self.c * self.h * self.w) as usize
    }
}

/// Tensors per multi-tensor launch (`NAS_MT_MAX` in optim.cu): the argument list stays under
/// the 4 KiB kernel-parameter limit.
pub const MT_MAX: usize = 120;

/// `cuda/optim.cu` MtList: addresses and lengths of up to `MT_MAX` tensors.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct MtList {
    pub n: i64,
    pub len: [i64; MT_MAX],
    pub param: [i64; MT_MAX],
    pub grad: [i64; MT_MAX],
    pub mom: [i64; MT_MAX],
}

impl Default for MtList {
    fn default() -> Self {
        Self { n: 0, len: [0; MT_MAX], param: [0; MT_MAX], grad: [0; MT_MAX], mom: [0; MT_MAX] }
    }
}

impl MtList {
    /// Lists of at most `MT_MAX` (param, grad, momentum, len) entries.
    pub fn chunks(entries: &[(u64, u64, u64, usize)]) -> Vec<MtList> {
        entries
            .chunks(MT_MAX)
            .map(|c| {
                let mut l = MtList { n: c.len() as i64, ..Default::default() };
                for (i, &(p, g, m, n)) in c.iter().enumerate() {
                    (l.param[i], l.grad[i], l.mom[i], l.len[i]) = (p as i64, g as i64, m as i64, n as i64);
                }
                l
            })
            .collect()
    }

    pub fn max_len(&self) -> usize {
        self.len[..self.n as usize].iter().copied().max().unwrap_or(0) as usize
    }
}

/// A multi-tensor launch: row y is tensor y, at most 64 blocks striding over each.
pub fn multi_tensor(l: &MtList) -> Launch {
    let x = (l.max_len() as u64).div_ceil(BLOCK as u64).clamp(1, 64);
    Launch { grid: [x as u32, l.n.max(1) as u32, 1], block: [REDUCE_THREADS, 1, 1] }
}

// The multi-tensor argument list stays under CUDA's classic 4 KiB parameter limit, and its
// blocks are reduction blocks.
const _: () = assert!(std::mem::size_of::<MtList>() < 4096 && BLOCK == REDUCE_THREADS);

#[cfg(test)]
mod tests {
    use super::*;

    /// Grids stay within CUDA's limits and, with their grid-stride loops, cover every element
    /// for sizes up to far beyond 32-bit indices.
    #[test]
    fn grids_are_legal_and_cover_any_size() {
        for n in [0usize, 1, 255, 256, 257, 1 << 20, (1 << 31) + 7, 3 << 33] {
            let l = elementwise(n);
            assert!((1..=MAX_BLOCKS).contains(&(l.grid[0] as u64)) && l.block == [BLOCK, 1, 1], "{n}");
            // Fewer threads than elements only when the grid is at its cap (the loop strides).
            assert!(l.threads() >= n as u64 || l.grid[0] as u64 == MAX_BLOCKS, "{n}");
            let r = reduce_1d(n);
            assert!((1..=1024).contains(&r.grid[0]) && r.block[0] == REDUCE_THREADS);
        }
    }

    /// Every value of every channel falls in exactly one chunk, no chunk is empty, and the
    /// (C, splits) grid is legal.
    #[test]
    fn channel_splits_tile_each_channel() {
        for c in [1usize, 3, 16, 64, 256, 4096] {
            for per in [0usize, 1, 7, 2047, 2048, 2049, 65536, 64 * 1024 * 1024, 5_000_000_000] {
                let (splits, chunk) = channel_splits(c, per);
                let per = per.max(1);
                assert!(splits >= 1 && chunk >= 1, "c {c} per {per}");
                assert!(splits * chunk >= per && (splits - 1) * chunk < per, "c {c} per {per}: {splits}×{chunk}");
                assert!(splits as u64 <= MAX_GRID_YZ && c as u64 <= MAX_GRID_X);
                let l = channel_reduce(c, splits);
                assert_eq!((l.grid[0] as usize, l.grid[1] as usize), (c, splits));
            }
        }
    }
}
