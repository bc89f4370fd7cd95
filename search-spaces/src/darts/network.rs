//! The derived (discrete) network that is retrained from scratch, in DARTS' two skeletons
//! (`model.py`), chosen by `DerivedNetworkConfig::net`:
//! - `NetworkCIFAR`: stem conv3×3 (3 → 3C) + BN; the auxiliary head (after cell 2L/3) is
//!   ReLU, avgpool 5/3, conv1×1 128, BN, ReLU, conv2×2 768, BN, ReLU, linear (8×8 maps).
//! - `NetworkImageNet`: stem0 = conv3×3 s2 (3 → C/2), BN, ReLU, conv3×3 s2 (C/2 → C), BN;
//!   stem1 = ReLU, conv3×3 s2 (C → C), BN; cell 0 takes stem0 and stem1 and treats stem0 as a
//!   reduced input (FactorizedReduce); the auxiliary head is ReLU, avgpool 5/2, conv1×1 128, BN,
//!   ReLU, conv2×2 768, ReLU, linear (the 768-channel BN stays commented out in DARTS, as in its
//!   experiments). A 224×224 image is 56×56 after stem0, 28×28 after stem1, 7×7 at the end.
//!   The stems are `stem.rs`'s, shared with the search supernet.
//!
//! Both: L cells built from a genotype (reductions at L/3 and 2L/3), every node the sum of its
//! two ops, affine BN everywhere, drop path on every non-identity op, global average pooling
//! (ImageNet's AvgPool2d(7) on the 7×7 maps of 224×224 images) and a linear classifier.
//! Parameter names follow the original code (`cells.3._ops.2.op.5.weight`, `stem0.3.weight`,
//! `auxiliary_head.features.2.weight`).
//!
//! `mult_adds` counts a network's multiply-accumulates by walking its layers with the sizes
//! their inputs have, the way the forward pass does, without running it.

use std::sync::Arc;

use candle_core::{DType, Device, Result, Tensor};
use nas_core::nn::{BatchNorm2d, Conv1x1, Conv2d, Linear, Mode};
use nas_core::onnx::Graph;
use nas_core::ops::{self, PoolKind};
use nas_core::params::{ParamBuilder, ParamStore};
use serde::{Deserialize, Serialize};

use super::cell::Preprocess;
use super::genotype::{DartsGenotype, Edge};
use super::ops::{OpModule, RandomStream, ReluConvBn};
use super::stem::Stem;
use crate::error::Error;
use crate::eval_network::EvalNetwork;
use crate::model_config::NetKind;

/// A map's height and width.
type Size = (usize, usize);

/// The largest image side `mult_adds` counts for (far beyond any network of the papers).
const MAX_SIDE: usize = 1 << 20;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DerivedNetworkConfig {
    pub channels: usize,
    pub layers: usize,
    pub num_classes: usize,
    pub auxiliary: bool,
    pub in_channels: usize,
    /// `NetworkCIFAR` or `NetworkImageNet` (CIFAR when absent).
    #[serde(default)]
    pub net: NetKind,
}

impl DerivedNetworkConfig {
    pub fn reduction_layers(&self) -> [usize; 2] {
        [self.layers / 3, 2 * self.layers / 3]
    }
}

/// An edge's op on its input state `states[i]`, times its drop-path factors, plus `acc`. A pool
/// without batch norm pools its state once per cell forward (`pooled`, keyed by the state, the
/// kind and the stride): DARTS_V2's reduction cell max-pools s1 on three edges and s0 on two,
/// the same values each time. Their gradients meet at the shared pool's output, so the
/// pool's backward also runs once per distinct pooling.
#[allow(clippy::too_many_arguments)]
fn edge(
    op: &OpModule,
    i: usize,
    states: &[Tensor],
    pooled: &mut Vec<((usize, PoolKind, usize), Tensor)>,
    mode: Mode,
    drop: Option<&Tensor>,
    acc: Option<&Tensor>,
) -> Result<Tensor> {
    let x = &states[i];
    let Some((kind, stride)) = op.plain_pool() else { return op.forward_into(x, None, mode, drop, acc) };
    let key = (i, kind, stride);
    let y = match pooled.iter().find(|(k, _)| *k == key) {
        Some((_, y)) => y.clone(),
        None => {
            let y = ops::pool3x3(x, kind, stride)?;
            pooled.push((key, y.clone()));
            y
        }
    };
    OpModule::pooled_into(y, drop, acc)
}

#[derive(Debug, Clone)]
struct DerivedCell {
    preprocess0: Preprocess,
    preprocess1: ReluConvBn,
    ops: Vec<OpModule>,
    inputs: Vec<usize>,
    concat: Vec<usize>,
}

impl DerivedCell {
    /// `masks` hands out the drop-path factors (B,) of the next droppable op.
    fn forward(
        &self,
        s0: &Tensor,
        s1: &Tensor,
        mode: Mode,
        masks: &mut dyn FnMut() -> Result<Option<Tensor>>,
    ) -> Result<Tensor> {
        let mut states = vec![self.preprocess0.forward(s0, mode)?, self.preprocess1.forward(s1, mode)?];
        let mut pooled = Vec::new();
        for pair in 0..self.ops.len() / 2 {
            // Masks in edge order; the node's sum is formed inside whichever op can take it
            // (a + b is exact in either order).
            let (e1, e2) = (2 * pair, 2 * pair + 1);
            let mut mask = |e: usize| if self.ops[e].is_identity() { Ok(None) } else { masks() };
            let (m1, m2) = (mask(e1)?, mask(e2)?);
            let swap = !self.ops[e2].fuses_acc() && self.ops[e1].fuses_acc();
            let (first, second, mf, ms) = if swap { (e2, e1, m2, m1) } else { (e1, e2, m1, m2) };
            let h = edge(&self.ops[first], self.inputs[first], &states, &mut pooled, mode, mf.as_ref(), None)?;
            let x2 = self.inputs[second];
            let node = edge(&self.ops[second], x2, &states, &mut pooled, mode, ms.as_ref(), Some(&h))?;
            states.push(node);
        }
        let outs: Vec<&Tensor> = self.concat.iter().map(|&i| &states[i]).collect();
        Tensor::cat(&outs, 1)
    }

    /// `forward` in evaluation mode as ONNX nodes (no drop path): every node the sum of its
    /// two ops, the output the concat of `concat`'s states.
    fn onnx(&self, g: &mut Graph, s0: &str, s1: &str) -> nas_core::Result<String> {
        let mut states = vec![
            g.scoped("preprocess0", |g| self.preprocess0.onnx(g, s0))?,
            g.scoped("preprocess1", |g| self.preprocess1.onnx(g, s1))?,
        ];
        for pair in 0..self.ops.len() / 2 {
            let mut outs = Vec::with_capacity(2);
            for e in [2 * pair, 2 * pair + 1] {
                let x = states[self.inputs[e]].clone();
                outs.push(g.scoped("_ops", |g| g.scoped(e, |g| self.ops[e].onnx(g, &x)))?);
            }
            states.push(g.add(&outs[0], &outs[1]));
        }
        let outs: Vec<String> = self.concat.iter().map(|&i| states[i].clone()).collect();
        Ok(g.concat(&outs, 1))
    }

    /// The output size and mult-adds of the cell for inputs of sizes `s0`, `s1`, the states
    /// formed as `forward` forms them; an error says where the sizes stop fitting.
    fn mult_adds(&self, s0: Size, s1: Size) -> std::result::Result<(Size, u128), String> {
        let (p0, m0) = self.preprocess0.mult_adds(s0).ok_or("its input c_{k-2} cannot be preprocessed")?;
        let (p1, m1) = self.preprocess1.mult_adds(s1).ok_or("its input c_{k-1} cannot be preprocessed")?;
        if p0 != p1 {
            return Err(format!("its preprocessed inputs differ in size ({}x{} and {}x{})", p0.0, p0.1, p1.0, p1.1));
        }
        let mut states = vec![p0, p1];
        let mut total = m0 + m1;
        for (node, pair) in self.ops.chunks(2).enumerate() {
            let mut sizes = Vec::with_capacity(2);
            for (k, op) in pair.iter().enumerate() {
                let input = self.inputs[2 * node + k];
                let (hw, m) = op.mult_adds(states[input]).ok_or_else(|| format!("node {node} cannot apply its ops"))?;
                sizes.push(hw);
                total += m;
            }
            if sizes[0] != sizes[1] {
                return Err(format!(
                    "node {node} would add {}x{} to {}x{}",
                    sizes[0].0, sizes[0].1, sizes[1].0, sizes[1].1
                ));
            }
            states.push(sizes[0]);
        }
        let out = states[self.concat[0]];
        if self.concat.iter().any(|&i| states[i] != out) {
            return Err("its output nodes differ in size".into());
        }
        Ok((out, total))
    }
}

/// `AuxiliaryHeadCIFAR` (pool stride 3, a BN after the 2×2 conv) or `AuxiliaryHeadImageNet`
/// (pool stride 2, no BN there).
#[derive(Debug, Clone)]
struct AuxHead {
    pool_stride: usize,
    conv1: Conv1x1,
    bn1: BatchNorm2d,
    conv2: Conv2d,
    bn2: Option<BatchNorm2d>,
    classifier: Linear,
}

impl AuxHead {
    fn new(pb: &ParamBuilder, net: NetKind, ci: usize, classes: usize) -> crate::Result<Self> {
        let fb = pb.pp("features");
        Ok(Self {
            pool_stride: if net == NetKind::ImageNet { 2 } else { 3 },
            conv1: Conv1x1::new(&fb.pp(2), ci, 128, 1)?,
            bn1: BatchNorm2d::new(&fb.pp(3), 128, true)?,
            conv2: Conv2d::new(&fb.pp(5), 128, 768, 2, 1, 0)?,
            bn2: if net == NetKind::ImageNet { None } else { Some(BatchNorm2d::new(&fb.pp(6), 768, true)?) },
            classifier: Linear::new(&pb.pp("classifier"), 768, classes)?,
        })
    }

    fn forward(&self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        let y = ops::avg_pool_valid(&x.relu()?, 5, self.pool_stride)?;
        let y = self.bn1.forward(&self.conv1.forward(&y, mode)?, mode)?.relu()?;
        let y = self.conv2.forward(&y, mode)?;
        let y = match &self.bn2 {
            Some(bn) => bn.forward(&y, mode)?,
            None => y,
        };
        self.classifier.forward(&y.relu()?.flatten_from(1)?, mode)
    }
}

pub struct DerivedNetwork {
    cfg: DerivedNetworkConfig,
    stem: Stem,
    cells: Vec<DerivedCell>,
    aux_at: usize,
    aux: Option<AuxHead>,
    classifier: Linear,
    weights: ParamStore,
    random: Arc<RandomStream>,
}

impl DerivedNetwork {
    pub fn new(
        genotype: &DartsGenotype,
        cfg: DerivedNetworkConfig,
        seed: u64,
        dtype: DType,
        device: &Device,
    ) -> crate::Result<Self> {
        genotype.validate()?;
        if cfg.channels == 0 || cfg.layers == 0 || cfg.num_classes == 0 {
            return Err(Error::Config("channels, layers and classes must be positive".into()));
        }
        let weights = ParamStore::new(seed, 0);
        let random = RandomStream::new(seed);
        let pb = weights.builder(dtype, device);
        if cfg.net == NetKind::ImageNet && cfg.channels < 2 {
            return Err(Error::Config(
                "an ImageNet network needs 2 or more channels (its stem starts with C/2)".into(),
            ));
        }
        // NetworkCIFAR's stem gives 3C channels, NetworkImageNet's C.
        let c_stem = if cfg.net == NetKind::ImageNet { cfg.channels } else { 3 * cfg.channels };
        let stem = Stem::new(&pb, cfg.net, cfg.in_channels, c_stem)?;
        let (mut cpp, mut cp) = (c_stem, c_stem);
        let mut c = cfg.channels;
        let mut cells = Vec::with_capacity(cfg.layers);
        // ImageNet's s0 (stem0) is twice the size of s1 (stem1), as after a reduction.
        let mut reduction_prev = cfg.net == NetKind::ImageNet;
        let aux_at = 2 * cfg.layers / 3;
        let mut aux = None;
        for i in 0..cfg.layers {
            let reduction = cfg.reduction_layers().contains(&i);
            if reduction {
                c *= 2;
            }
            let cb = pb.pp("cells").pp(i);
            let (edges, concat): (&[Edge], &[usize]) = if reduction {
                (&genotype.reduce, &genotype.reduce_concat)
            } else {
                (&genotype.normal, &genotype.normal_concat)
            };
            let mut ops = Vec::with_capacity(edges.len());
            for (e, &(op, input)) in edges.iter().enumerate() {
                let stride = if reduction && input < 2 { 2 } else { 1 };
                ops.push(OpModule::new(op, &cb.pp("_ops").pp(e), c, stride, true, false, &random)?);
            }
            cells.push(DerivedCell {
                preprocess0: Preprocess::new(&cb.pp("preprocess0"), cpp, c, reduction_prev, true)?,
                preprocess1: ReluConvBn::new(&cb.pp("preprocess1"), cp, c, true)?,
                ops,
                inputs: edges.iter().map(|&(_, i)| i).collect(),
                concat: concat.to_vec(),
            });
            reduction_prev = reduction;
            (cpp, cp) = (cp, concat.len() * c);
            if i == aux_at && cfg.auxiliary {
                aux = Some(AuxHead::new(&pb.pp("auxiliary_head"), cfg.net, cp, cfg.num_classes)?);
            }
        }
        let classifier = Linear::new(&pb.pp("classifier"), cp, cfg.num_classes)?;
        Ok(Self { cfg, stem, cells, aux_at, aux, classifier, weights, random })
    }

    pub fn config(&self) -> &DerivedNetworkConfig {
        &self.cfg
    }

    pub fn weights(&self) -> &ParamStore {
        &self.weights
    }

    /// How many op outputs drop path applies to in one forward pass (every op but identity).
    pub fn num_drop_path_ops(&self) -> usize {
        self.cells.iter().map(|c| c.ops.iter().filter(|o| !o.is_identity()).count()).sum()
    }

    /// Whether the network has an auxiliary head.
    pub fn has_auxiliary(&self) -> bool {
        self.aux.is_some()
    }

    /// Number of weights without the auxiliary head (how DARTS reports model size).
    pub fn num_params_without_aux(&self) -> usize {
        self.weights
            .params()
            .iter()
            .filter(|p| p.kind == nas_core::ParamKind::Weight && !p.name.starts_with("auxiliary_head."))
            .map(|p| p.elem_count())
            .sum()
    }

    /// Logits and, in training mode with an auxiliary head, the auxiliary logits. `drop_path`
    /// (ops, B) holds per-sample factors for the output of every non-identity op in forward
    /// order (`num_drop_path_ops` rows); None disables drop path.
    pub fn forward_with(&self, x: &Tensor, mode: Mode, drop_path: Option<&Tensor>) -> Result<(Tensor, Option<Tensor>)> {
        let rows = self.num_drop_path_ops();
        if let Some(m) = drop_path {
            if m.dims().first() != Some(&rows) {
                candle_core::bail!("drop path: {:?} factors for {rows} droppable ops", m.dims());
            }
        }
        let mut next = 0;
        let mut masks = || -> Result<Option<Tensor>> {
            let Some(m) = drop_path else { return Ok(None) };
            next += 1;
            m.get(next - 1).map(Some)
        };
        let drop = &mut masks;
        let (mut s0, mut s1) = self.stem.forward(x, mode)?;
        let mut aux_logits = None;
        for (i, cell) in self.cells.iter().enumerate() {
            let out = cell.forward(&s0, &s1, mode, drop)?;
            (s0, s1) = (s1, out);
            if i == self.aux_at && mode.train {
                if let Some(aux) = &self.aux {
                    aux_logits = Some(aux.forward(&s1, mode)?);
                }
            }
        }
        Ok((self.classifier.forward(&s1.mean((2, 3))?, mode)?, aux_logits))
    }

    /// Multiply-accumulates of one forward pass on one `height`×`width` image, auxiliary head
    /// excluded (as DARTS and its successors report mult-adds): every convolution counts
    /// K²·C_in/groups·C_out·H_out·W_out (depthwise and pointwise parts of sep_conv and dil_conv
    /// each), the classifier in·out; batch norm, ReLU, pooling, additions, concatenations and
    /// biases count nothing. This is the convention of the mobile-setting figures (DARTS
    /// 574M, PC-DARTS 597M at C=48, L=14, 224×224).
    ///
    /// The count walks the network's own layers with the size each one's input has, as the
    /// forward pass would see it, without running anything; an input size the network cannot
    /// take (an odd side at a factorized reduction, a window larger than its input) is an
    /// error naming where it stops fitting.
    pub fn mult_adds(&self, height: usize, width: usize) -> crate::Result<u128> {
        let bad = |why: String| Error::InputSize(format!("a {height}x{width} input does not fit the network: {why}"));
        if height == 0 || width == 0 {
            return Err(bad("an image side is 0".into()));
        }
        if height.max(width) > MAX_SIDE {
            return Err(bad(format!("the count takes image sides up to {MAX_SIDE} pixels")));
        }
        let (mut s0, mut s1, mut total) =
            self.stem.mult_adds((height, width)).ok_or_else(|| bad("the stem's windows do not fit".into()))?;
        for (i, cell) in self.cells.iter().enumerate() {
            let (out, m) = cell.mult_adds(s0, s1).map_err(|why| bad(format!("cell {i}: {why}")))?;
            (s0, s1) = (s1, out);
            total += m;
        }
        Ok(total + self.classifier.mult_adds())
    }

    /// The network in evaluation mode (no drop path, no auxiliary head) as ONNX nodes on the
    /// images `x`: the name of the logits (B, classes).
    pub fn onnx(&self, g: &mut Graph, x: &str) -> crate::Result<String> {
        let (mut s0, mut s1) = self.stem.onnx(g, x)?;
        for (i, cell) in self.cells.iter().enumerate() {
            let out = g.scoped("cells", |g| g.scoped(i, |g| cell.onnx(g, &s0, &s1)))?;
            (s0, s1) = (s1, out);
        }
        let pooled = g.node("GlobalAveragePool", &[&s1], vec![]);
        let flat = g.node("Flatten", &[&pooled], vec![]);
        Ok(g.scoped("classifier", |g| self.classifier.onnx(g, &flat))?)
    }

    /// Forward without drop path.
    pub fn forward(&self, x: &Tensor, mode: Mode) -> Result<(Tensor, Option<Tensor>)> {
        self.forward_with(x, mode, None)
    }
}

impl EvalNetwork for DerivedNetwork {
    fn weights(&self) -> &ParamStore {
        DerivedNetwork::weights(self)
    }

    fn num_params_without_aux(&self) -> usize {
        DerivedNetwork::num_params_without_aux(self)
    }

    fn num_drop_path_ops(&self) -> usize {
        DerivedNetwork::num_drop_path_ops(self)
    }

    fn forward(&self, x: &Tensor, mode: Mode, drop_path: Option<&Tensor>) -> Result<(Tensor, Option<Tensor>)> {
        self.forward_with(x, mode, drop_path)
    }

    fn mult_adds(&self, height: usize, width: usize) -> Option<crate::Result<u128>> {
        Some(DerivedNetwork::mult_adds(self, height, width))
    }

    fn onnx(&self, g: &mut Graph, x: &str) -> crate::Result<String> {
        DerivedNetwork::onnx(self, g, x)
    }

    fn stream_position(&self) -> u64 {
        self.random.position()
    }

    fn set_stream_position(&self, draws: u64) {
        self.random.set_position(draws);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Edges that pool one state the same way share one pooling, and each still gets its own
    /// drop-path factors and node sum; another kind, stride or state pools anew. Each output
    /// against the pooling computed on its own, scaled per sample and added.
    #[test]
    fn edges_pooling_one_state_share_the_pooling_and_keep_their_factors() {
        let dev = Device::Cpu;
        let x0 = Tensor::arange(0f32, 2.0 * 3.0 * 36.0, &dev).unwrap().reshape((2, 3, 6, 6)).unwrap();
        let x0 = (x0 * 0.37).unwrap().sin().unwrap();
        let states = [x0.clone(), (&x0 * -0.5).unwrap()];
        let pool = |kind, stride| OpModule::Pool { kind, stride, bn: None };
        let factors = |a: f32, b: f32| Tensor::new(&[a, b], &dev).unwrap();
        let acc = (states[0].ones_like().unwrap() * 0.5).unwrap().narrow(2, 0, 3).unwrap().narrow(3, 0, 3).unwrap();
        let want = |i: usize, kind, stride, m: &Tensor, acc: Option<&Tensor>| {
            let y = ops::pool3x3(&states[i], kind, stride).unwrap();
            let y = y.broadcast_mul(&m.reshape((2, 1, 1, 1)).unwrap()).unwrap();
            let y = match acc {
                Some(a) => (a + y).unwrap(),
                None => y,
            };
            y.flatten_all().unwrap().to_vec1::<f32>().unwrap()
        };
        let mut pooled = Vec::new();
        let cases = [
            (0, PoolKind::Max, 2, factors(2.0, 0.0), None, 1),
            (0, PoolKind::Max, 2, factors(0.0, 2.0), Some(&acc), 1),
            (0, PoolKind::Avg, 2, factors(1.25, 1.25), None, 2),
            (1, PoolKind::Max, 2, factors(2.0, 2.0), Some(&acc), 3),
            (0, PoolKind::Max, 2, factors(1.0, 3.0), None, 3),
        ];
        for (n, (i, kind, stride, m, acc, distinct)) in cases.into_iter().enumerate() {
            let got = edge(&pool(kind, stride), i, &states, &mut pooled, Mode::TRAIN_ALL, Some(&m), acc).unwrap();
            assert_eq!(
                got.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                want(i, kind, stride, &m, acc),
                "edge {n}"
            );
            assert_eq!(pooled.len(), distinct, "poolings after edge {n}");
        }
    }
}
