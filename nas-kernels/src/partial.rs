//! The output side of a PC-DARTS partial-channel edge as one op: given the op mixture y on the
//! first C/K channels and the edge input x, builds shuffle(cat[y, bypass(x[:, C/K:])], K)
//! where the bypass is the identity, or 2×2 max pooling with stride 2 on reducing edges
//! (floor mode; ties go to the first maximum in row-major order, as in PyTorch). One pass
//! over memory instead of a narrow, a pooling, a concat and a transposed copy.
//!
//! Shapes: y (B, C/K, Ho, Wo), x (B, C, H, W) with Ho = H, Wo = W (stride 1) or Ho = ⌊H/2⌋,
//! Wo = ⌊W/2⌋ (stride 2); output (B, C, Ho, Wo). Concatenated channel q = g·(C/K) + i goes to
//! output channel i·K + g. Kernels: `cpu::partial`, `cuda::partial` (one thread per output
//! forward; both gradients are gathers).

use candle_core::{bail, CpuStorage, Result, Shape, Tensor};

use crate::cpu::partial as kernels;
#[cfg(feature = "cuda")]
use crate::cuda::partial as launch;
#[cfg(feature = "cuda")]
use crate::op::CudaIn;
use crate::op::{forward, grads, CpuIn, Kernels, Op};
#[cfg(feature = "cuda")]
use candle_core::CudaStorage;

#[derive(Debug, Clone, Copy)]
pub(crate) struct PcGeom {
    pub b: usize,
    pub c: usize,
    pub ca: usize,
    pub k: usize,
    pub h: usize,
    pub w: usize,
    pub ho: usize,
    pub wo: usize,
    pub stride: usize,
}

impl PcGeom {
    pub fn new(y: &[usize], x: &[usize], k: usize, stride: usize) -> Result<Self> {
        let &[b, c, h, w] = x else { bail!("pc_merge: x must be (B, C, H, W), got {x:?}") };
        if k == 0 || c % k != 0 {
            bail!("pc_merge: K={k} must divide C={c}");
        }
        let ca = c / k;
        let (ho, wo) = match stride {
            1 => (h, w),
            2 => (h / 2, w / 2),
            s => bail!("pc_merge: stride {s} (expected 1 or 2)"),
        };
        if y != [b, ca, ho, wo] {
            bail!("pc_merge: y is {y:?}, expected {:?} for x {x:?} with K={k}, stride {stride}", [b, ca, ho, wo]);
        }
        Ok(Self { b, c, ca, k, h, w, ho, wo, stride })
    }

    /// Concatenated channel feeding output channel o.
    pub fn source(&self, o: usize) -> usize {
        (o % self.k) * (self.c / self.k) + o / self.k
    }

    pub fn out_shape(&self) -> Shape {
        (self.b, self.c, self.ho, self.wo).into()
    }
}

struct PcMerge(PcGeom);

impl Kernels<2> for PcMerge {
    fn cpu_fwd(&self, s: [CpuIn<'_>; 2]) -> Result<CpuStorage> {
        forward!(cpu: "pc_merge", s, |T, [y, x]| Ok(kernels::forward::<T>(y, x, &self.0)))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(&self, s: [CudaIn<'_>; 2]) -> Result<CudaStorage> {
        forward!(cuda: "pc_merge", s, |T, be, [y, x]| launch::forward::<_, T>(be, y, x, &self.0))
    }

    fn bwd(&self, [y, x]: [&Tensor; 2], _: &Tensor, gout: &Tensor) -> Result<[Option<Tensor>; 2]> {
        let want = [y.track_op(), x.track_op()];
        #[cfg(feature = "cuda")]
        if x.device().is_cuda() {
            return grads!(cuda: "pc_merge", [x, gout], [y, x], |T, be, [x, gout]| {
                launch::backward::<_, T>(be, x, gout, &self.0, want)
            });
        }
        grads!(cpu: "pc_merge", [x, gout], [y, x], |T, [x, gout]| Ok(kernels::backward::<T>(x, gout, &self.0, want)))
    }
}

/// The output of a PC-DARTS partial-channel edge: shuffle(cat[y, bypass(x[:, C/K:])], K) with
/// y (B, C/K, Ho, Wo) the op mixture on the first C/K channels of x (B, C, H, W) and the
/// bypass the identity (stride 1) or 2×2 max pooling (stride 2); differentiable in y and x.
pub fn pc_merge(y: &Tensor, x: &Tensor, k: usize, stride: usize) -> Result<Tensor> {
    if !crate::fast(x) {
        return crate::composed::pc_merge(y, x, k, stride);
    }
    let g = PcGeom::new(y.dims(), x.dims(), k, stride)?;
    y.contiguous()?.apply_op2(&x.contiguous()?, Op::shaped("pc_merge", PcMerge(g), |op, _| op.0.out_shape()))
}
