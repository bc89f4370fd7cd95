//! One stage of a sep_conv or dil_conv in training as a single differentiable op:
//! [ReLU →] depthwise k×k → 1×1 → batch norm (batch statistics, affine γ, β or none) → times
//! the drop-path factor m[b] [→ plus `acc`, the other edge into the same node]. The stage
//! leaves one tensor in the autograd graph where the separate ops left two (and their sum a
//! third): candle's backward gives every graph tensor a zeroed gradient buffer and adds into
//! it, so each tensor that is not there saves a clear and an add pass over its size (and, on
//! CUDA, two kernel launches).
//!
//! Shapes: x (B, C, H, W); the weights travel as one flat tensor
//! [w_dw (C·K²) | w_pw (Co·C) | γ (Co) | β (Co)] (γ, β only with `affine`); m (B,) has no
//! gradient; acc and the output (B, Co, Ho, Wo). The BN input is kept for the backward pass
//! (and on CUDA the depthwise output too; the CPU recomputes it).

use std::sync::Mutex;

use candle_core::{bail, CpuStorage, Result, Tensor};

#[cfg(feature = "cuda")]
use crate::batch_norm::device_state::{device_stats, saved, tensor_addr, with_running};
use crate::batch_norm::{finish_running, Running, RunningStats, StatsSlot};
use crate::cpu::{self, stage as kernels};
#[cfg(feature = "cuda")]
use crate::cuda::{device, stage as launch, stage::Stage};
use crate::depthwise::DwParams;
#[cfg(feature = "cuda")]
use crate::op::CudaIn;
use crate::op::{dtype, grads, passed, with_float, CpuIn, Kernels, Op};
use crate::sep::SepGeom;
#[cfg(feature = "cuda")]
use candle_core::CudaStorage;

#[derive(Debug, Clone, Copy)]
pub(crate) struct Sizes {
    pub c: usize,
    pub k: usize,
    pub co: usize,
    pub affine: bool,
}

impl Sizes {
    pub fn params_len(&self) -> usize {
        self.c * self.k * self.k + self.co * self.c + if self.affine { 2 * self.co } else { 0 }
    }

    /// (w_dw, w_pw, γβ) of the flat weight vector; γβ empty without affine.
    pub fn split<'a, T>(&self, v: &'a [T]) -> [&'a [T]; 3] {
        let (dw, rest) = v.split_at(self.c * self.k * self.k);
        let (pw, gb) = rest.split_at(self.co * self.c);
        [dw, pw, gb]
    }
}

#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
pub(crate) struct DwPwBnStage {
    /// The shapes of the depthwise and 1×1 convolutions.
    pub g: SepGeom,
    pub relu: bool,
    pub eps: f64,
    pub sizes: Sizes,
    /// The drop-path factors m (B,) of x's dtype; None is all ones.
    pub m: Option<Tensor>,
    pub stats: StatsSlot,
    pub running: Option<Running>,
    /// What the forward pass keeps for the backward pass: the BN input, and on CUDA the
    /// depthwise output.
    pub saved: Mutex<Option<Vec<Tensor>>>,
}

impl DwPwBnStage {
    pub fn keep(&self, t: Vec<Tensor>) {
        *self.saved.lock().unwrap_or_else(|e| e.into_inner()) = Some(t);
    }

    pub fn kept(&self) -> Result<Vec<Tensor>> {
        match self.saved.lock().unwrap_or_else(|e| e.into_inner()).clone() {
            Some(t) => Ok(t),
            None => bail!("dw_pw_bn: backward before forward"),
        }
    }
}

/// The stage as an op of (x, params) (N = 2) or (x, params, acc) (N = 3).
impl<const N: usize> Kernels<N> for DwPwBnStage {
    fn cpu_fwd(&self, s: [CpuIn<'_>; N]) -> Result<CpuStorage> {
        const { assert!(N == 2 || N == 3) };
        with_float!("dw_pw_bn", dtype(s[0]), |T| {
            cpu::forward::<T, N>("dw_pw_bn", s, |v| kernels::forward::<T>(self, v[0], v[1], v.get(2).copied()))
        })
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(&self, s: [CudaIn<'_>; N]) -> Result<CudaStorage> {
        let g = &self.g;
        with_float!("dw_pw_bn", dtype(s[0]), |T| {
            device::forward::<T, N>(s, |be, a| {
                let st = Stage { g, s: &self.sizes, relu: self.relu, eps: self.eps, m: self.factors::<T>()? };
                let out = with_running(self.running.as_ref(), |r| {
                    launch::forward::<_, T>(be, &st, [a[0], a[1]], a.get(2).copied(), r)
                })?;
                let dw_shape = (g.dw.b, g.dw.c, g.dw.oh, g.dw.ow);
                self.keep(vec![be.tensor(out.dw, dw_shape)?, be.tensor(out.pre, g.out_shape())?]);
                self.stats.put(saved(be, out.stats, g.co)?);
                Ok(out.y)
            })
        })
    }

    fn bwd(&self, args: [&Tensor; N], _: &Tensor, gy: &Tensor) -> Result<[Option<Tensor>; N]> {
        let (x, params) = (args[0], args[1]);
        let want = [x.track_op(), params.track_op()];
        let kept = self.kept()?;
        #[cfg(feature = "cuda")]
        let [gx, gp] = if x.device().is_cuda() {
            let [dw, pre] = kept.as_slice() else { bail!("dw_pw_bn: the forward kept {} tensors", kept.len()) };
            let stats = device_stats(&self.stats.get("dw_pw_bn")?)?;
            grads!(cuda: "dw_pw_bn", [x, params, gy, dw, pre], [x, params], |T, be, [x, p, gy, dw, pre]| {
                let st = Stage { g: &self.g, s: &self.sizes, relu: self.relu, eps: self.eps, m: self.factors::<T>()? };
                let (gx, gp) = launch::backward::<_, T>(be, &st, [x, p, gy], [dw, pre, tensor_addr::<f64>(&stats)?], want[0])?;
                Ok([gx, want[1].then_some(gp)])
            })?
        } else {
            self.cpu_grads([x, params, gy], &kept, want)?
        };
        #[cfg(not(feature = "cuda"))]
        let [gx, gp] = self.cpu_grads([x, params, gy], &kept, want)?;
        let mut out: [Option<Tensor>; N] = std::array::from_fn(|_| None);
        (out[0], out[1]) = (gx, gp);
        if let Some(acc) = args.get(2) {
            out[2] = passed(acc, gy);
        }
        Ok(out)
    }
}

impl DwPwBnStage {
    /// (∂x, ∂params) on the CPU from what the forward kept (the BN input).
    fn cpu_grads(
        &self,
        [x, params, gy]: [&Tensor; 3],
        kept: &[Tensor],
        want: [bool; 2],
    ) -> Result<[Option<Tensor>; 2]> {
        let Some(t) = kept.first() else { bail!("dw_pw_bn: the forward kept no BN input") };
        grads!(cpu: "dw_pw_bn", [x, params, gy, t], [x, params], |T, [x, p, gy, t]| {
            kernels::backward::<T>(self, [x, p, gy, t], want)
        })
    }

    /// The address of the drop-path factors (None: all ones).
    #[cfg(feature = "cuda")]
    fn factors<T: crate::cuda::Elem>(&self) -> Result<Option<u64>> {
        self.m.as_ref().map(tensor_addr::<T>).transpose()
    }
}

/// The weights of a stage: one flat tensor [w_dw | w_pw | γ | β] (γ, β only when `affine`),
/// with the depthwise kernel size `k` and the output channels `co`.
pub struct StageWeights<'a> {
    pub flat: &'a Tensor,
    pub k: usize,
    pub co: usize,
    pub affine: bool,
}

/// The parts of a stage's flat weights: w_dw, w_pw, and (γ, β) when affine.
pub type StageParts = (Tensor, Tensor, Option<(Tensor, Tensor)>);

impl StageWeights<'_> {
    /// The parts of the flat weights for an input of `c` channels: w_dw (C, 1, K, K),
    /// w_pw (Co, C, 1, 1), and (γ, β) (Co,) when `affine`.
    pub fn split(&self, c: usize) -> Result<StageParts> {
        let (k, co) = (self.k, self.co);
        let (n_dw, n_pw) = (c * k * k, co * c);
        let w_dw = self.flat.narrow(0, 0, n_dw)?.reshape((c, 1, k, k))?;
        let w_pw = self.flat.narrow(0, n_dw, n_pw)?.reshape((co, c, 1, 1))?;
        let gb = match self.affine {
            true => Some((self.flat.narrow(0, n_dw + n_pw, co)?, self.flat.narrow(0, n_dw + n_pw + co, co)?)),
            false => None,
        };
        Ok((w_dw, w_pw, gb))
    }
}

/// One sep_conv/dil_conv stage in training, `acc + m·BN(pw(dw([ReLU] x)))` as one op: BN
/// with the affine γ, β of `w` when it has them; `sample_scale` m (B,) has no gradient, `acc`
/// is an optional tensor of the output's shape added at the end (the node's other edge).
/// Updates the running statistics `running`.
#[allow(clippy::too_many_arguments)]
pub fn dw_pw_bn_train(
    x: &Tensor,
    w: StageWeights<'_>,
    p: DwParams,
    relu: bool,
    sample_scale: Option<&Tensor>,
    acc: Option<&Tensor>,
    eps: f64,
    running: Option<RunningStats<'_>>,
) -> Result<Tensor> {
    if !crate::fast(x) {
        // The separate ops (composed where no kernel handles x).
        let (w_dw, w_pw, gb) = w.split(x.dim(1)?)?;
        let t = if relu { crate::relu_dw_pw(x, &w_dw, &w_pw, p)? } else { crate::dw_pw(x, &w_dw, &w_pw, p)? };
        let y = if let Some((gamma, beta)) = gb {
            crate::batch_norm_affine_train(&t, &gamma, &beta, sample_scale, eps, running)?
        } else {
            let y = crate::batch_norm_train(&t, eps, running)?;
            match sample_scale {
                Some(m) => crate::scale_samples(&y, m)?,
                None => y,
            }
        };
        return match acc {
            Some(a) => a + y,
            None => Ok(y),
        };
    }
    let (b, c, _, _) = x.dims4()?;
    let sizes = Sizes { c, k: w.k, co: w.co, affine: w.affine };
    if w.flat.rank() != 1 || w.flat.elem_count() != sizes.params_len() {
        bail!("dw_pw_bn: {:?} weights for {c} channels, k={} and {} outputs", w.flat.dims(), w.k, w.co);
    }
    let m = match sample_scale {
        Some(m) if m.elem_count() == b => Some(m.detach().to_dtype(x.dtype())?.contiguous()?),
        Some(m) => bail!("dw_pw_bn: {} sample factors for a batch of {b}", m.elem_count()),
        None => None,
    };
    let stats = StatsSlot::default();
    let g = SepGeom::new(x.dims(), &[c, 1, w.k, w.k], &[w.co, c, 1, 1], p)?;
    let out = g.out_shape();
    let op = DwPwBnStage {
        g,
        relu,
        eps,
        sizes,
        m,
        stats: stats.clone(),
        running: Running::new(running),
        saved: Mutex::new(None),
    };
    let x = x.contiguous()?;
    let y = match acc {
        Some(a) if a.shape() == &out => x.apply_op3(
            &w.flat.contiguous()?,
            &a.contiguous()?,
            Op::shaped("dw_pw_bn_acc", op, |op, _| op.g.out_shape()),
        )?,
        Some(a) => bail!("dw_pw_bn: accumulator {:?} does not match the output {:?}", a.dims(), out),
        None => x.apply_op2(&w.flat.contiguous()?, Op::shaped("dw_pw_bn", op, |op, _| op.g.out_shape()))?,
    };
    finish_running(&x, &stats, running, "dw_pw_bn")?;
    Ok(y)
}
