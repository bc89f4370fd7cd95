//! The derived (discrete) network that is retrained from scratch (DARTS `NetworkCIFAR`): stem
//! conv3×3 (3 → 3C) + BN, L cells built from a genotype (reductions at L/3 and 2L/3), every
//! node the sum of its two ops, affine BN everywhere, an optional auxiliary head after cell
//! 2L/3 (ReLU, avgpool 5/3, conv1×1 128, BN, ReLU, conv2×2 768, BN, ReLU, linear), global
//! average pooling and a linear classifier. Parameter names follow the original code
//! (`cells.3._ops.2.op.5.weight`, `auxiliary_head.features.2.weight`).

use std::sync::Arc;

use candle_core::{DType, Device, Result, Tensor};
use nas_core::nn::{BatchNorm2d, Conv1x1, Conv2d, Linear, Mode};
use nas_core::ops;
use nas_core::params::ParamStore;
use serde::{Deserialize, Serialize};

use super::cell::Preprocess;
use super::genotype::{DartsGenotype, Edge};
use super::ops::{OpModule, RandomStream, ReluConvBn};
use crate::error::Error;
use crate::eval_network::EvalNetwork;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DerivedNetworkConfig {
    pub channels: usize,
    pub layers: usize,
    pub num_classes: usize,
    pub auxiliary: bool,
    pub in_channels: usize,
}

impl DerivedNetworkConfig {
    pub fn reduction_layers(&self) -> [usize; 2] {
        [self.layers / 3, 2 * self.layers / 3]
    }
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
        for pair in 0..self.ops.len() / 2 {
            // Masks in edge order; the node's sum is formed inside whichever op can take it
            // (a + b is exact in either order).
            let (e1, e2) = (2 * pair, 2 * pair + 1);
            let mut mask = |e: usize| if self.ops[e].is_identity() { Ok(None) } else { masks() };
            let (m1, m2) = (mask(e1)?, mask(e2)?);
            let swap = !self.ops[e2].fuses_acc() && self.ops[e1].fuses_acc();
            let (first, second, mf, ms) = if swap { (e2, e1, m2, m1) } else { (e1, e2, m1, m2) };
            let h = self.ops[first].forward_dropped(&states[self.inputs[first]], None, mode, mf.as_ref())?;
            let x2 = &states[self.inputs[second]];
            states.push(self.ops[second].forward_into(x2, None, mode, ms.as_ref(), Some(&h))?);
        }
        let outs: Vec<&Tensor> = self.concat.iter().map(|&i| &states[i]).collect();
        Tensor::cat(&outs, 1)
    }
}

#[derive(Debug, Clone)]
struct AuxHead {
    conv1: Conv1x1,
    bn1: BatchNorm2d,
    conv2: Conv2d,
    bn2: BatchNorm2d,
    classifier: Linear,
}

impl AuxHead {
    fn forward(&self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        let y = ops::avg_pool_valid(&x.relu()?, 5, 3)?;
        let y = self.bn1.forward(&self.conv1.forward(&y, mode)?, mode)?.relu()?;
        let y = self.bn2.forward(&self.conv2.forward(&y, mode)?, mode)?.relu()?;
        self.classifier.forward(&y.flatten_from(1)?, mode)
    }
}

pub struct DerivedNetwork {
    cfg: DerivedNetworkConfig,
    stem_conv: Conv2d,
    stem_bn: BatchNorm2d,
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
        let c_stem = 3 * cfg.channels;
        let stem_conv = Conv2d::new(&pb.pp("stem").pp(0), cfg.in_channels, c_stem, 3, 1, 1)?;
        let stem_bn = BatchNorm2d::new(&pb.pp("stem").pp(1), c_stem, true)?;
        let (mut cpp, mut cp, mut c) = (c_stem, c_stem, cfg.channels);
        let mut cells = Vec::with_capacity(cfg.layers);
        let mut reduction_prev = false;
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
                let ab = pb.pp("auxiliary_head");
                let fb = ab.pp("features");
                aux = Some(AuxHead {
                    conv1: Conv1x1::new(&fb.pp(2), cp, 128, 1)?,
                    bn1: BatchNorm2d::new(&fb.pp(3), 128, true)?,
                    conv2: Conv2d::new(&fb.pp(5), 128, 768, 2, 1, 0)?,
                    bn2: BatchNorm2d::new(&fb.pp(6), 768, true)?,
                    classifier: Linear::new(&ab.pp("classifier"), 768, cfg.num_classes)?,
                });
            }
        }
        let classifier = Linear::new(&pb.pp("classifier"), cp, cfg.num_classes)?;
        Ok(Self { cfg, stem_conv, stem_bn, cells, aux_at, aux, classifier, weights, random })
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
        let s = self.stem_bn.forward(&self.stem_conv.forward(x, mode)?, mode)?;
        let (mut s0, mut s1) = (s.clone(), s);
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

    fn stream_position(&self) -> u64 {
        self.random.position()
    }

    fn set_stream_position(&self, draws: u64) {
        self.random.set_position(draws);
    }
}
