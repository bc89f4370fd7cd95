//! The kernels' host build as a `Backend`: the `.cu` sources compiled as C++ (build.rs) run
//! every launch over its grid on the CPU, buffers are host vectors (fresh ones filled with
//! NaN, so an element no kernel wrote shows), and the batched products follow cuBLAS's
//! column-major definition literally. The public functions run one op's CUDA launch sequence
//! on host slices; the CPU tests compare them with the CPU kernels.

use std::cell::RefCell;
use std::ffi::c_void;

use candle_core::{bail, DType, Result};

use super::batch_norm::{BnGrad, BnIn, RunningAddrs};
use super::depthwise::Dw;
use super::launch::{BnArgs, Launch};
use super::sep::Sep;
use super::stage::Stage;
use super::{Args, Backend, Elem, Gemm, Kernel};
use crate::cpu::Float;
use crate::depthwise::{DwGeom, DwParams};
use crate::partial::PcGeom;
use crate::pointwise::{PwGeom, PwParams};
use crate::pool::{PoolGeom, PoolKind, ValidGeom};
use crate::sep::SepGeom;
use crate::stage::Sizes;

type HostEntry = unsafe extern "C" fn(*mut *mut c_void);

extern "C" {
    fn nas_host_set_launch(gx: u32, gy: u32, gz: u32, bx: u32, by: u32, bz: u32);
}

macro_rules! host_table {
    ($($variant:ident $name:ident $source:ident,)*) => {
        mod entry_f32 {
            extern "C" {
                $(#[link_name = concat!("host_", stringify!($name), "_f32")] pub fn $name(args: *mut *mut std::ffi::c_void);)*
            }
        }
        mod entry_f64 {
            extern "C" {
                $(#[link_name = concat!("host_", stringify!($name), "_f64")] pub fn $name(args: *mut *mut std::ffi::c_void);)*
            }
        }
        fn entry(k: Kernel, dtype: DType) -> Result<HostEntry> {
            Ok(match (k, dtype) {
                $((Kernel::$variant, DType::F32) => entry_f32::$name as HostEntry,
                  (Kernel::$variant, DType::F64) => entry_f64::$name as HostEntry,)*
                (k, d) => bail!("{}: no host kernel for {d:?}", k.name()),
            })
        }
    };
}
super::with_kernels!(host_table);

/// The host backend. It records the launches it makes, for the geometry tests.
#[derive(Default)]
pub struct Host {
    log: RefCell<Vec<(Kernel, Launch)>>,
}

impl Host {
    /// The launches so far, in order.
    pub fn launches(&self) -> Vec<(Kernel, Launch)> {
        self.log.borrow().clone()
    }
}

impl Backend for Host {
    type Buf<T: Elem> = Vec<T>;

    fn alloc<T: Elem>(&self, n: usize) -> Result<Vec<T>> {
        Ok(vec![T::POISON; n])
    }

    fn zeros<T: Elem>(&self, n: usize) -> Result<Vec<T>> {
        Ok(vec![T::ZERO; n])
    }

    fn addr<T: Elem>(&self, b: &Vec<T>) -> u64 {
        b.as_ptr() as u64
    }

    fn launch(&self, k: Kernel, dtype: DType, l: Launch, mut args: Args) -> Result<()> {
        let f = entry(k, dtype)?;
        self.log.borrow_mut().push((k, l));
        let mut ptrs = args.pointers();
        // SAFETY: the kernel reads its arguments from `ptrs` (alive for the call) and touches
        // the buffers they address, which the op's launch sequence allocated with the sizes
        // the kernel indexes (the tests check outputs element by element).
        unsafe {
            nas_host_set_launch(l.grid[0], l.grid[1], l.grid[2], l.block[0], l.block[1], l.block[2]);
            f(ptrs.as_mut_ptr());
        }
        Ok(())
    }

    fn gemm<T: Float>(&self, g: &Gemm) -> Result<()> {
        let (a, b, c) = (g.a as *const T, g.b as *const T, g.c as *mut T);
        for bi in 0..g.batch {
            for j in 0..g.n {
                for i in 0..g.m {
                    let mut s = T::zero();
                    for l in 0..g.k {
                        let ai = if g.trans_a { l + i * g.lda } else { i + l * g.lda };
                        let bj = if g.trans_b { j + l * g.ldb } else { l + j * g.ldb };
                        // SAFETY: as in `launch`: the operands cover every index of the
                        // product's definition (their sizes are set by the same arguments).
                        unsafe { s += *a.add(bi * g.stride_a + ai) * *b.add(bi * g.stride_b + bj) };
                    }
                    // SAFETY: as above.
                    unsafe { *c.add(bi * g.stride_c + i + j * g.ldc) = s };
                }
            }
        }
        Ok(())
    }
}

fn addr<T>(s: &[T]) -> u64 {
    s.as_ptr() as u64
}

fn opt_addr<T>(s: Option<&[T]>) -> Option<u64> {
    s.map(addr)
}

/// Every gradient of a launch sequence that was asked for all of them.
fn all<B, const N: usize>(g: [Option<B>; N], what: &str) -> Result<[B; N]> {
    if g.iter().any(Option::is_none) {
        bail!("{what}: missing gradient");
    }
    Ok(g.map(|g| g.expect("checked above")))
}

/// ReLU: 0 where x < 0, x otherwise (NaN kept).
pub fn relu<T: Float>(x: &[T]) -> Result<Vec<T>> {
    super::elementwise::relu(&Host::default(), addr(x), x.len())
}

/// 0 where y ≤ 0, g otherwise (NaN passes g).
pub fn relu_backward<T: Float>(y: &[T], g: &[T]) -> Result<Vec<T>> {
    super::elementwise::relu_backward(&Host::default(), addr(y), addr(g), y.len())
}

/// acc + w·y, or w·y.
pub fn axpy<T: Float>(acc: Option<&[T]>, y: &[T], w: T) -> Result<Vec<T>> {
    let w = [w];
    super::elementwise::axpy(&Host::default(), opt_addr(acc), addr(y), addr(&w), y.len())
}

/// (w·g, Σ g·y): the gradients of y and w of `axpy`.
pub fn weighted_backward<T: Float>(y: &[T], w: T, g: &[T]) -> Result<(Vec<T>, T)> {
    let w = [w];
    let grads = super::elementwise::weighted_backward(&Host::default(), [y, &w, g].map(addr), y.len(), [true; 2])?;
    let [gy, gw] = all(grads, "weighted_backward")?;
    Ok((gy, gw[0]))
}

/// x[i]·m[i / per].
pub fn scale_samples<T: Float>(x: &[T], m: &[T]) -> Result<Vec<T>> {
    super::elementwise::scale_samples(&Host::default(), addr(x), addr(m), x.len(), m.len())
}

/// The depthwise convolution of x (dims) with w (C, 1, K, K).
pub fn depthwise<T: Float>(x: &[T], dims: [usize; 4], w: &[T], k: usize, p: DwParams, relu: bool) -> Result<Vec<T>> {
    let g = DwGeom::new(&dims, &[dims[1], 1, k, k], p)?;
    super::depthwise::forward(&Host::default(), &Dw { x: addr(x), w: addr(w), g: &g, relu })
}

/// (∂x, ∂w) of the depthwise convolution.
pub fn depthwise_backward<T: Float>(
    x: &[T],
    dims: [usize; 4],
    w: &[T],
    k: usize,
    p: DwParams,
    gy: &[T],
    relu: bool,
) -> Result<(Vec<T>, Vec<T>)> {
    let g = DwGeom::new(&dims, &[dims[1], 1, k, k], p)?;
    let d = Dw { x: addr(x), w: addr(w), g: &g, relu };
    let [gx, gw] = all(super::depthwise::backward(&Host::default(), &d, addr(gy), [true; 2])?, "depthwise_backward")?;
    Ok((gx, gw))
}

/// The shapes of a fused depthwise + 1×1 convolution: input dims, kernel size, output
/// channels, the depthwise parameters and whether x is ReLU'd.
#[derive(Debug, Clone, Copy)]
pub struct SepShape {
    pub dims: [usize; 4],
    pub k: usize,
    pub co: usize,
    pub p: DwParams,
    pub relu: bool,
}

impl SepShape {
    fn geom(&self) -> Result<SepGeom> {
        let c = self.dims[1];
        SepGeom::new(&self.dims, &[c, 1, self.k, self.k], &[self.co, c, 1, 1], self.p)
    }
}

/// pw(dw([ReLU] x)) with w_dw (C, 1, K, K) and w_pw (Co, C).
pub fn dw_pw<T: Float>(x: &[T], sh: SepShape, w_dw: &[T], w_pw: &[T]) -> Result<Vec<T>> {
    let g = sh.geom()?;
    let sep = Sep { x: addr(x), w_dw: addr(w_dw), w_pw: addr(w_pw), g: &g, relu: sh.relu };
    Ok(super::sep::forward::<_, T>(&Host::default(), &sep)?.0)
}

/// (∂x, ∂w_dw, ∂w_pw) of `dw_pw`, with the depthwise output kept by the forward.
pub fn dw_pw_backward<T: Float>(x: &[T], sh: SepShape, w_dw: &[T], w_pw: &[T], gy: &[T]) -> Result<[Vec<T>; 3]> {
    let (g, be) = (sh.geom()?, Host::default());
    let sep = Sep { x: addr(x), w_dw: addr(w_dw), w_pw: addr(w_pw), g: &g, relu: sh.relu };
    let (_, t) = super::sep::forward::<_, T>(&be, &sep)?;
    all(super::sep::backward(&be, &sep, Some(be.addr(&t)), addr(gy), [true; 3])?, "dw_pw_backward")
}

/// What the stage forward produces and keeps.
pub struct StageForward<T> {
    pub y: Vec<T>,
    pub dw: Vec<T>,
    pub pre: Vec<T>,
    pub stats: Vec<f64>,
    pub running: Option<(Vec<T>, Vec<T>)>,
}

/// The shapes of a stage: input dims, kernel size, output channels, affine γβ.
#[derive(Debug, Clone, Copy)]
pub struct StageShape {
    pub dims: [usize; 4],
    pub k: usize,
    pub co: usize,
    pub affine: bool,
    pub p: DwParams,
    pub relu: bool,
}

impl StageShape {
    fn geom(&self) -> Result<(SepGeom, Sizes)> {
        let sep = SepShape { dims: self.dims, k: self.k, co: self.co, p: self.p, relu: self.relu };
        Ok((sep.geom()?, Sizes { c: self.dims[1], k: self.k, co: self.co, affine: self.affine }))
    }
}

/// Host copies of the running statistics and their addresses with momentum 0.1.
type RunningCopy<T> = Option<(Vec<T>, Vec<T>)>;

fn running_copy<T: Float>(running: Option<(&[T], &[T])>) -> (RunningCopy<T>, Option<RunningAddrs>) {
    let mut run = running.map(|(rm, rv)| (rm.to_vec(), rv.to_vec()));
    let rp = run.as_mut().map(|(rm, rv)| (rm.as_mut_ptr() as u64, rv.as_mut_ptr() as u64, 0.1));
    (run, rp)
}

/// acc + m·BN(pw(dw([ReLU] x))) with the flat weights [w_dw | w_pw | γ | β], updating the
/// running statistics (momentum 0.1) when given.
pub fn stage<T: Float>(
    x: &[T],
    sh: StageShape,
    params: &[T],
    m: Option<&[T]>,
    acc: Option<&[T]>,
    running: Option<(&[T], &[T])>,
    eps: f64,
) -> Result<StageForward<T>> {
    let (g, sizes) = sh.geom()?;
    let (run, rp) = running_copy(running);
    let st = Stage { g: &g, s: &sizes, relu: sh.relu, eps, m: opt_addr(m) };
    let out = super::stage::forward::<_, T>(&Host::default(), &st, [addr(x), addr(params)], opt_addr(acc), rp)?;
    Ok(StageForward { y: out.y, dw: out.dw, pre: out.pre, stats: out.stats, running: run })
}

/// (∂x, ∂weights flat) of `stage` from what its forward kept.
pub fn stage_backward<T: Float>(
    x: &[T],
    sh: StageShape,
    params: &[T],
    m: Option<&[T]>,
    fwd: &StageForward<T>,
    gy: &[T],
    eps: f64,
) -> Result<(Vec<T>, Vec<T>)> {
    let (g, sizes) = sh.geom()?;
    let kept = [addr(&fwd.dw), addr(&fwd.pre), addr(&fwd.stats)];
    let st = Stage { g: &g, s: &sizes, relu: sh.relu, eps, m: opt_addr(m) };
    let (gx, gp) = super::stage::backward::<_, T>(&Host::default(), &st, [x, params, gy].map(addr), kept, true)?;
    match gx {
        Some(gx) => Ok((gx, gp)),
        None => bail!("stage_backward: missing gradient"),
    }
}

/// Training-mode batch norm of x (dims (B, C, …)): y = acc + m[b]·(γ·x̂ + β) with optional
/// γβ (2·C), factors m (B) and accumulator; the running statistics (from `running`, momentum
/// 0.1) come back updated, with the batch mean and variance.
pub struct BnForward<T> {
    pub y: Vec<T>,
    pub mean: Vec<f64>,
    pub var: Vec<f64>,
    pub running: Option<(Vec<T>, Vec<T>)>,
}

pub fn batch_norm<T: Float>(
    x: &[T],
    dims: &[usize],
    gamma_beta: Option<&[T]>,
    m: Option<&[T]>,
    acc: Option<&[T]>,
    running: Option<(&[T], &[T])>,
    eps: f64,
) -> Result<BnForward<T>> {
    let a = BnArgs::new(dims)?;
    let c = a.c as usize;
    let (gamma, beta) = match gamma_beta {
        Some(gb) => (Some(addr(&gb[..c])), Some(addr(&gb[c..]))),
        None => (None, None),
    };
    let (run, running) = running_copy(running);
    let i = BnIn { x: addr(x), gamma, beta, m: opt_addr(m), acc: opt_addr(acc), running };
    let f = super::batch_norm::forward::<_, T>(&Host::default(), &i, &a, eps)?;
    let (mean, var) = f.stats.split_at(c);
    Ok(BnForward { y: f.y, mean: mean.to_vec(), var: var.to_vec(), running: run })
}

/// ∂x and, with `gamma_beta`, ∂γβ of `batch_norm` from its saved mean/var: without affine
/// parameters from the output x̂ (`u`), with them from the input x (`u`) and the factors m.
#[allow(clippy::too_many_arguments)]
pub fn batch_norm_backward<T: Float>(
    u: &[T],
    dims: &[usize],
    gamma_beta: Option<&[T]>,
    m: Option<&[T]>,
    mean: &[f64],
    var: &[f64],
    g: &[T],
    eps: f64,
) -> Result<(Vec<T>, Option<Vec<T>>)> {
    let a = BnArgs::new(dims)?;
    let stats: Vec<f64> = mean.iter().chain(var).copied().collect();
    let gamma = gamma_beta.map(|gb| addr(&gb[..a.c as usize]));
    let affine = gamma_beta.is_some();
    let i = BnGrad { u: addr(u), gr: addr(g), gamma, m: opt_addr(m), stats: addr(&stats), affine };
    super::batch_norm::backward::<_, T>(&Host::default(), &i, &a, eps, affine)
}

/// y = x·scale[c] + shift[c].
pub fn channel_affine<T: Float>(x: &[T], dims: &[usize], scale: &[T], shift: &[T]) -> Result<Vec<T>> {
    let a = BnArgs::new(dims)?;
    super::batch_norm::channel_affine(&Host::default(), addr(x), addr(scale), Some(addr(shift)), &a)
}

/// (∂x, ∂scale, ∂shift) of `channel_affine`.
pub fn channel_affine_backward<T: Float>(x: &[T], dims: &[usize], scale: &[T], g: &[T]) -> Result<[Vec<T>; 3]> {
    let a = BnArgs::new(dims)?;
    let grads = super::batch_norm::channel_affine_backward(&Host::default(), [x, scale, g].map(addr), &a, [true; 3])?;
    all(grads, "channel_affine_backward")
}

/// 3×3 pooling with padding 1: the output and, for max pooling, each output's tap.
pub fn pool<T: Float>(x: &[T], dims: [usize; 4], kind: PoolKind, stride: usize) -> Result<(Vec<T>, Option<Vec<u8>>)> {
    super::pool::forward(&Host::default(), addr(x), &PoolGeom::new(&dims, stride)?, kind)
}

/// ∂x of `pool` (the taps for max pooling).
pub fn pool_backward<T: Float>(
    gy: &[T],
    taps: Option<&[u8]>,
    dims: [usize; 4],
    kind: PoolKind,
    stride: usize,
) -> Result<Vec<T>> {
    super::pool::backward(&Host::default(), addr(gy), opt_addr(taps), &PoolGeom::new(&dims, stride)?, kind)
}

/// k×k average pooling with stride s, no padding.
pub fn avg_pool_valid<T: Float>(x: &[T], dims: [usize; 4], k: usize, s: usize) -> Result<Vec<T>> {
    super::pool::avg_valid_forward(&Host::default(), addr(x), &ValidGeom::new(&dims, k, s)?)
}

/// ∂x of `avg_pool_valid`.
pub fn avg_pool_valid_backward<T: Float>(gy: &[T], dims: [usize; 4], k: usize, s: usize) -> Result<Vec<T>> {
    super::pool::avg_valid_backward(&Host::default(), addr(gy), &ValidGeom::new(&dims, k, s)?)
}

/// The 1×1 convolution of x (dims) with w (Co, Ci), sampled at offset + stride·i.
pub fn conv1x1<T: Float>(x: &[T], dims: [usize; 4], w: &[T], co: usize, p: PwParams, relu: bool) -> Result<Vec<T>> {
    let g = PwGeom::new(&dims, &[co, dims[1], 1, 1], p)?;
    super::pointwise::forward(&Host::default(), addr(x), addr(w), &g, relu)
}

/// (∂x, ∂w) of `conv1x1`.
pub fn conv1x1_backward<T: Float>(
    x: &[T],
    dims: [usize; 4],
    w: &[T],
    co: usize,
    p: PwParams,
    gy: &[T],
    relu: bool,
) -> Result<(Vec<T>, Vec<T>)> {
    let g = PwGeom::new(&dims, &[co, dims[1], 1, 1], p)?;
    let grads = super::pointwise::backward(&Host::default(), [x, w, gy].map(addr), &g, relu, [true; 2])?;
    let [gx, gw] = all(grads, "conv1x1_backward")?;
    Ok((gx, gw))
}

/// The PC-DARTS merge of y (B, C/K, Ho, Wo) and x (dims).
pub fn pc_merge<T: Float>(y: &[T], x: &[T], dims: [usize; 4], k: usize, stride: usize) -> Result<Vec<T>> {
    super::partial::forward(&Host::default(), addr(y), addr(x), &pc_geom(&dims, k, stride)?)
}

/// (∂y, ∂x) of `pc_merge`.
pub fn pc_merge_backward<T: Float>(
    x: &[T],
    dims: [usize; 4],
    k: usize,
    stride: usize,
    gout: &[T],
) -> Result<[Vec<T>; 2]> {
    let g = pc_geom(&dims, k, stride)?;
    all(super::partial::backward(&Host::default(), addr(x), addr(gout), &g, [true; 2])?, "pc_merge_backward")
}

fn pc_geom(dims: &[usize; 4], k: usize, stride: usize) -> Result<PcGeom> {
    let (ho, wo) = if stride == 2 { (dims[2] / 2, dims[3] / 2) } else { (dims[2], dims[3]) };
    PcGeom::new(&[dims[0], dims[1] / k.max(1), ho, wo], dims, k, stride)
}

/// The size of each argument struct as the C++ compiler lays it out, in common.cuh's order
/// (`launch::ARG_STRUCTS`), for the layout test.
pub fn c_struct_sizes() -> [usize; super::launch::ARG_STRUCTS.len()] {
    extern "C" {
        fn nas_host_struct_sizes(out: *mut u64);
    }
    let mut out = [0u64; super::launch::ARG_STRUCTS.len()];
    // SAFETY: the (generated) function writes one value per struct of ARG_STRUCTS.
    unsafe { nas_host_struct_sizes(out.as_mut_ptr()) };
    out.map(|v| v as usize)
}

/// How often the grid-stride loop of launch `l` over `n` elements visits each index.
pub fn visits_elementwise(l: Launch, n: usize) -> Vec<i64> {
    extern "C" {
        fn nas_host_count_elementwise(counts: *mut i64, n: i64);
    }
    let mut counts = vec![0i64; n];
    // SAFETY: the loop visits indices below n only (which the test checks by the counts).
    unsafe {
        nas_host_set_launch(l.grid[0], l.grid[1], l.grid[2], l.block[0], l.block[1], l.block[2]);
        nas_host_count_elementwise(counts.as_mut_ptr(), n as i64);
    }
    counts
}

/// How often the chunk loops of a (C, splits) launch `l` visit each (channel, value) of
/// `per_c` values per channel, chunks of `chunk`.
pub fn visits_chunks(l: Launch, per_c: usize, chunk: usize) -> Vec<i64> {
    extern "C" {
        fn nas_host_count_chunks(counts: *mut i64, per_c: i64, chunk: i64);
    }
    let mut counts = vec![0i64; l.grid[0] as usize * per_c];
    // SAFETY: each block writes only within its channel's per_c values.
    unsafe {
        nas_host_set_launch(l.grid[0], l.grid[1], l.grid[2], l.block[0], l.block[1], l.block[2]);
        nas_host_count_chunks(counts.as_mut_ptr(), per_c as i64, chunk as i64);
    }
    counts
}

/// One multi-tensor SGD step on host vectors (updated in place) with the global-norm clip
/// `max_norm` (none when ≤ 0); returns (factor, norm) when clipping.
pub fn sgd_step<T: Float>(
    params: &mut [Vec<T>],
    grads: &[Vec<T>],
    moms: &mut [Vec<T>],
    (lr, momentum, weight_decay): (f64, f64, f64),
    max_norm: f64,
) -> Result<Option<(f64, f64)>> {
    if params.len() != grads.len() || params.len() != moms.len() {
        bail!("sgd_step: {} params, {} grads, {} buffers", params.len(), grads.len(), moms.len());
    }
    let entries: Vec<_> = params
        .iter_mut()
        .zip(grads)
        .zip(moms.iter_mut())
        .map(|((p, g), m)| (p.as_mut_ptr() as u64, addr(g), m.as_mut_ptr() as u64, p.len()))
        .collect();
    let s = super::optim::SgdStep { lr, momentum, weight_decay, max_norm: Some(max_norm) };
    let out = super::optim::sgd_step::<_, T>(&Host::default(), &entries, &s)?;
    Ok(out.map(|v| (v[0], v[1])))
}
