//! The NAS-Bench-201 network (AutoDL's `TinyNetwork`): stem conv3×3 (→ C) + BN, N cells at
//! C, a residual reduction block (ReLU-conv3×3 s2-BN, ReLU-conv3×3-BN, shortcut avgpool 2×2 +
//! conv1×1) to 2C, N cells, another to 4C, N cells, BN-ReLU, global average pooling, linear.
//! The search network carries α (6, 5), shared by all cells; a derived network carries a
//! genotype instead. Parameter names follow AutoDL (`cells.3.edges.2<-1.3.op.1.weight`,
//! residual blocks `cells.5.conv_a.op.1.weight`, `lastact.0.weight`).
//!
//! Shapes: input (B, 3, H, W) → logits (B, classes).

use candle_core::{DType, Device, Result, Tensor};
use nas_core::nn::{softmax_last_dim, BatchNorm2d, Conv1x1, Conv2d, Linear, Mode};
use nas_core::onnx::Graph;
use nas_core::ops;
use nas_core::params::{Init, ParamBuilder, ParamKind, ParamStore};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::cell::Cell;
use super::edges::{edge_index, EDGES};
use super::genotype::Nb201Genotype;
use super::ops::{Nb201Op, ReluConvBn};
use crate::children::ChildShape;
use crate::error::{Error, Result as SsResult};
use crate::eval_network::EvalNetwork;
use crate::genotype::Genotype;
use crate::supernet::{ArchSample, Child, OpCost, Supernet};

/// The residual reduction block (AutoDL `ResNetBasicblock`, stride 2).
#[derive(Debug, Clone)]
struct ResBlock {
    conv_a: ReluConvBn,
    conv_b: ReluConvBn,
    downsample: Conv1x1,
}

impl ResBlock {
    fn new(pb: &ParamBuilder, ci: usize, co: usize) -> nas_core::Result<Self> {
        Ok(Self {
            conv_a: ReluConvBn::new(&pb.pp("conv_a"), ci, co, 3, 2, true)?,
            conv_b: ReluConvBn::new(&pb.pp("conv_b"), co, co, 3, 1, true)?,
            downsample: Conv1x1::new(&pb.pp("downsample").pp(1), ci, co, 1)?,
        })
    }

    fn forward(&self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        let a = self.conv_a.forward_relu(&ops::relu(x)?, mode)?;
        let b = self.conv_b.forward_relu(&ops::relu(&a)?, mode)?;
        let shortcut = self.downsample.forward(&ops::avg_pool_valid(x, 2, 2)?, mode)?;
        b + shortcut
    }

    /// `forward` in evaluation mode as ONNX nodes.
    fn onnx(&self, g: &mut Graph, x: &str) -> nas_core::Result<String> {
        let a = g.scoped("conv_a", |g| self.conv_a.onnx(g, x))?;
        let b = g.scoped("conv_b", |g| self.conv_b.onnx(g, &a))?;
        let pooled = g.pool("AveragePool", x, 2, 2, 0);
        let shortcut = g.scoped("downsample", |g| g.scoped(1, |g| self.downsample.onnx(g, &pooled)))?;
        Ok(g.add(&b, &shortcut))
    }
}

#[derive(Debug, Clone)]
enum Block {
    Cell(Cell),
    Res(ResBlock),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Nb201Config {
    /// Channels of the first stage C (16 in the benchmark).
    pub channels: usize,
    /// Cells per stage N (5 in the benchmark).
    pub cells_per_stage: usize,
    pub num_classes: usize,
    pub in_channels: usize,
}

impl Default for Nb201Config {
    fn default() -> Self {
        Self { channels: 16, cells_per_stage: 5, num_classes: 10, in_channels: 3 }
    }
}

impl Nb201Config {
    pub fn validate(&self) -> SsResult<()> {
        for (name, v) in [
            ("channels", self.channels),
            ("cells per stage", self.cells_per_stage),
            ("num_classes", self.num_classes),
            ("in_channels", self.in_channels),
        ] {
            if v == 0 {
                return Err(Error::Config(format!("{name} must be positive")));
            }
        }
        Ok(())
    }
}

/// The NAS-Bench-201 network: the search supernet (with α) or a derived network.
pub struct Nb201Network {
    cfg: Nb201Config,
    genotype: Option<Nb201Genotype>,
    stem_conv: Conv2d,
    stem_bn: BatchNorm2d,
    blocks: Vec<Block>,
    last_bn: BatchNorm2d,
    classifier: Linear,
    alphas: Option<Tensor>,
    weights: ParamStore,
    arch: ParamStore,
}

impl Nb201Network {
    /// The search network, α (6, 5) drawn as 1e-3·N(0, 1).
    pub fn search(cfg: Nb201Config, seed: u64, dtype: DType, device: &Device) -> SsResult<Self> {
        Self::build(cfg, None, seed, dtype, device)
    }

    /// The network of one derived cell, for retraining.
    pub fn derived(
        cfg: Nb201Config,
        genotype: &Nb201Genotype,
        seed: u64,
        dtype: DType,
        device: &Device,
    ) -> SsResult<Self> {
        Self::build(cfg, Some(*genotype), seed, dtype, device)
    }

    fn build(
        cfg: Nb201Config,
        genotype: Option<Nb201Genotype>,
        seed: u64,
        dtype: DType,
        device: &Device,
    ) -> SsResult<Self> {
        cfg.validate()?;
        let weights = ParamStore::new(seed, 0);
        let arch = ParamStore::new(seed, 1);
        let pb = weights.builder(dtype, device);
        let c = cfg.channels;
        let stem_conv = Conv2d::new(&pb.pp("stem").pp(0), cfg.in_channels, c, 3, 1, 1)?;
        let stem_bn = BatchNorm2d::new(&pb.pp("stem").pp(1), c, true)?;
        let mut blocks = Vec::new();
        let mut c_prev = c;
        for stage in 0..3 {
            let c_cur = c << stage;
            if stage > 0 {
                blocks.push(Block::Res(ResBlock::new(&pb.pp("cells").pp(blocks.len()), c_prev, c_cur)?));
            }
            for _ in 0..cfg.cells_per_stage {
                blocks.push(Block::Cell(Cell::new(&pb.pp("cells").pp(blocks.len()), c_cur, genotype.as_ref())?));
            }
            c_prev = c_cur;
        }
        let last_bn = BatchNorm2d::new(&pb.pp("lastact").pp(0), c_prev, true)?;
        let classifier = Linear::new(&pb.pp("classifier"), c_prev, cfg.num_classes)?;
        let alphas = match genotype {
            None => Some(arch.builder(dtype, device).weight(
                "arch_parameters",
                (EDGES, Nb201Op::ALL.len()),
                Init::Normal(1e-3),
            )?),
            Some(_) => None,
        };
        Ok(Self { cfg, genotype, stem_conv, stem_bn, blocks, last_bn, classifier, alphas, weights, arch })
    }

    pub fn config(&self) -> &Nb201Config {
        &self.cfg
    }

    pub fn weights(&self) -> &ParamStore {
        &self.weights
    }

    pub fn arch(&self) -> &ParamStore {
        &self.arch
    }

    /// Logits (B, classes).
    pub fn forward(&self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        let w = self.alphas.as_ref().map(|a| softmax_last_dim(&mode.arch(a))).transpose()?;
        let mut h = self.stem_bn.forward(&self.stem_conv.forward(x, mode)?, mode)?;
        for b in &self.blocks {
            h = match b {
                Block::Cell(c) => c.forward(&h, w.as_ref(), mode)?,
                Block::Res(r) => r.forward(&h, mode)?,
            };
        }
        let h = ops::relu(&self.last_bn.forward(&h, mode)?)?;
        self.classifier.forward(&h.mean((2, 3))?, mode)
    }

    /// The derived network in evaluation mode as ONNX nodes on `x`: the logits' name. An
    /// error for the search network.
    pub fn onnx(&self, g: &mut Graph, x: &str) -> SsResult<String> {
        if self.genotype.is_none() {
            return Err(Error::Config("the nb201 search network has no ONNX form; export a derived network".into()));
        }
        let mut h = g.scoped("stem", |g| -> nas_core::Result<String> {
            let h = g.scoped(0, |g| self.stem_conv.onnx(g, x))?;
            g.scoped(1, |g| self.stem_bn.onnx(g, &h))
        })?;
        for (i, b) in self.blocks.iter().enumerate() {
            h = g.scoped("cells", |g| {
                g.scoped(i, |g| match b {
                    Block::Cell(c) => c.onnx(g, &h),
                    Block::Res(r) => r.onnx(g, &h),
                })
            })?;
        }
        let h = g.scoped("lastact", |g| g.scoped(0, |g| self.last_bn.onnx(g, &h)))?;
        let h = g.relu(&h);
        let pooled = g.node("GlobalAveragePool", &[&h], vec![]);
        let flat = g.node("Flatten", &[&pooled], vec![]);
        Ok(g.scoped("classifier", |g| self.classifier.onnx(g, &flat))?)
    }

    /// Logits (B, classes) with the ops of `sample` (one α tensor) in every cell.
    pub fn forward_sampled(&self, x: &Tensor, mode: Mode, sample: &ArchSample) -> Result<Tensor> {
        let mut h = self.stem_bn.forward(&self.stem_conv.forward(x, mode)?, mode)?;
        for b in &self.blocks {
            h = match b {
                Block::Cell(c) => c.forward_sampled(&h, sample, mode)?,
                Block::Res(r) => r.forward(&h, mode)?,
            };
        }
        let h = ops::relu(&self.last_bn.forward(&h, mode)?)?;
        self.classifier.forward(&h.mean((2, 3))?, mode)
    }

    /// softmax(α) on the host (6 × 5); None for a derived network.
    pub fn op_weights(&self) -> Result<Option<Vec<Vec<f32>>>> {
        self.alphas.as_ref().map(|a| softmax_last_dim(&a.detach())?.to_dtype(DType::F32)?.to_vec2::<f32>()).transpose()
    }

    /// The derived cell: arg-max per edge of the search network, or the fixed cell.
    pub fn genotype(&self) -> Result<Nb201Genotype> {
        match (&self.genotype, self.op_weights()?) {
            (Some(g), _) => Ok(*g),
            (None, Some(w)) => Ok(Nb201Genotype::derive(&w)),
            (None, None) => candle_core::bail!("nb201 network without α nor genotype"),
        }
    }

    pub fn arch_json(&self) -> Result<Value> {
        match &self.alphas {
            Some(a) => Ok(json!({"arch_parameters": a.to_dtype(DType::F32)?.to_vec2::<f32>()?})),
            None => Ok(Value::Null),
        }
    }
}

impl Supernet for Nb201Network {
    fn forward(&self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        Nb201Network::forward(self, x, mode)
    }

    fn weights(&self) -> &ParamStore {
        Nb201Network::weights(self)
    }

    fn arch(&self) -> &ParamStore {
        Nb201Network::arch(self)
    }

    fn genotype(&self) -> SsResult<Genotype> {
        Ok(Nb201Network::genotype(self)?.into())
    }

    fn arch_json(&self) -> SsResult<Value> {
        Ok(Nb201Network::arch_json(self)?)
    }

    fn op_logits(&self, mode: Mode) -> Result<Vec<Tensor>> {
        match &self.alphas {
            Some(a) => Ok(vec![mode.arch(a)]),
            None => candle_core::bail!("a derived nb201 network has no α"),
        }
    }

    fn edge_ops(&self) -> Vec<Vec<Vec<&'static str>>> {
        vec![vec![Nb201Op::ALL.iter().map(|o| o.name()).collect(); EDGES]]
    }

    fn forward_sampled(&self, x: &Tensor, mode: Mode, sample: &ArchSample) -> Result<Tensor> {
        Nb201Network::forward_sampled(self, x, mode, sample)
    }

    /// One op per edge.
    fn genotype_of(&self, chosen: &[Vec<Vec<usize>>]) -> SsResult<Genotype> {
        let bad = |m: String| Error::Genotype(format!("sampled nb201 architecture: {m}"));
        let [rows] = chosen else { return Err(bad(format!("{} α tensors, expected 1", chosen.len()))) };
        if rows.len() != EDGES {
            return Err(bad(format!("{} edges, expected {EDGES}", rows.len())));
        }
        let mut edges = [Nb201Op::None; EDGES];
        for (e, cols) in rows.iter().enumerate() {
            let [col] = cols[..] else { return Err(bad(format!("edge {e} has {} ops, expected 1", cols.len()))) };
            edges[e] = *Nb201Op::ALL.get(col).ok_or_else(|| bad(format!("column {col} of edge {e}")))?;
        }
        Ok(Nb201Genotype { edges }.into())
    }

    /// Weights named `cells.{i}.edges.{to}<-{from}.{c}.…` belong to op c of that edge in cell
    /// i, at the resolution of its stage.
    fn op_costs(&self, height: usize, width: usize) -> Vec<Vec<Vec<OpCost>>> {
        let mut costs = vec![vec![vec![OpCost::default(); Nb201Op::ALL.len()]; EDGES]];
        let mut pixels = Vec::with_capacity(self.blocks.len());
        let (mut h, mut w) = (height, width);
        for b in &self.blocks {
            if matches!(b, Block::Res(_)) {
                (h, w) = (h.div_ceil(2), w.div_ceil(2));
            }
            pixels.push(h * w);
        }
        for p in self.weights.params().into_iter().filter(|p| p.kind == ParamKind::Weight) {
            let mut parts = p.name.split('.');
            let (Some("cells"), Some(i), Some("edges"), Some(edge), Some(c)) =
                (parts.next(), parts.next(), parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            let Some((to, from)) = edge.split_once("<-") else { continue };
            let (Ok(i), Ok(to), Ok(from), Ok(c)) =
                (i.parse::<usize>(), to.parse::<usize>(), from.parse::<usize>(), c.parse::<usize>())
            else {
                continue;
            };
            let Some(&px) = pixels.get(i).filter(|_| from < to) else { continue };
            if let Some(cost) = costs[0].get_mut(edge_index(to, from)).and_then(|r| r.get_mut(c)) {
                cost.add(p.dims(), px);
            }
        }
        costs
    }

    fn child_shape(&self) -> ChildShape {
        ChildShape::OneOpPerEdge
    }

    fn child_of(&self, genotype: &Genotype) -> SsResult<Child> {
        let Genotype::Nb201(g) = genotype else {
            return Err(Error::Genotype(format!("a {} genotype on an nb201 supernet", genotype.space())));
        };
        Ok(vec![g.edges.iter().map(|op| vec![op.index()]).collect()])
    }
}

/// The benchmark's networks have neither an auxiliary head nor drop path.
impl EvalNetwork for Nb201Network {
    fn weights(&self) -> &ParamStore {
        Nb201Network::weights(self)
    }

    fn num_params_without_aux(&self) -> usize {
        self.weights.num_weight_elements()
    }

    fn num_drop_path_ops(&self) -> usize {
        0
    }

    fn forward(&self, x: &Tensor, mode: Mode, _drop_path: Option<&Tensor>) -> Result<(Tensor, Option<Tensor>)> {
        Ok((Nb201Network::forward(self, x, mode)?, None))
    }

    fn onnx(&self, g: &mut Graph, x: &str) -> SsResult<String> {
        Nb201Network::onnx(self, g, x)
    }
}
