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

use candle_core::{bail, CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};

use super::cpu;

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

struct PcMerge {
    k: usize,
    stride: usize,
}

impl CustomOp2 for PcMerge {
    fn name(&self) -> &'static str {
        "pc_merge"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let g = PcGeom::new(l1.dims(), l2.dims(), self.k, self.stride)?;
        Ok((cpu::partial::forward_storage(s1, l1, s2, l2, &g)?, g.out_shape()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        let g = PcGeom::new(l1.dims(), l2.dims(), self.k, self.stride)?;
        Ok((super::cuda::partial::glue::forward(s1, l1, s2, l2, &g)?, g.out_shape()))
    }

    fn bwd(&self, y: &Tensor, x: &Tensor, _res: &Tensor, gout: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let g = PcGeom::new(y.dims(), x.dims(), self.k, self.stride)?;
        #[cfg(feature = "cuda")]
        if x.device().is_cuda() {
            return super::cuda::partial::glue::backward(y, x, gout, &g);
        }
        cpu::partial::backward_tensors(y, x, gout, &g)
    }
}

/// shuffle(cat[y, bypass(x[:, C/K:])], K), differentiable in y and x.
pub fn pc_merge(y: &Tensor, x: &Tensor, k: usize, stride: usize) -> Result<Tensor> {
    PcGeom::new(y.dims(), x.dims(), k, stride)?;
    y.contiguous()?.apply_op2(&x.contiguous()?, PcMerge { k, stride })
}
