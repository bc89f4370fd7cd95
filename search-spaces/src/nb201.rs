//! The NAS-Bench-201 search space (Dong & Yang 2020, "NAS-Bench-201: Extending the Scope of
//! Reproducible Neural Architecture Search", §2; AutoDL's `search_model_darts.py` for the search network).
//!
//! Ops (the column order of α): none, skip_connect, nor_conv_1x1, nor_conv_3x3, avg_pool_3x3,
//! where nor_conv_k is ReLU → conv k×k (pad k/2, no bias) → BN and avg_pool_3x3 is a 3×3
//! average pool (pad 1, padding excluded from the count). A cell has 4 nodes; node 0 is the
//! cell input and node i sums one edge from every earlier node, 6 edges in the order
//! 1←0, 2←0, 2←1, 3←0, 3←1, 3←2 (the rows of α). The cell outputs node 3.
//!
//! Skeleton (AutoDL's `TinyNetwork`): stem conv3×3 (→ C) + BN, N cells at C, a residual
//! reduction block (ReLU-conv3×3 s2-BN, ReLU-conv3×3-BN, shortcut avgpool 2×2 + conv1×1) to
//! 2C, N cells, another to 4C, N cells, BN-ReLU, global average pooling, linear. In the search
//! network every edge is a softmax(α)-weighted mixture of the five ops (one α (6, 5) shared by
//! all cells, BN without affine in the cells); the derived network keeps one op per edge with
//! affine BN. Parameter names follow AutoDL (`cells.3.edges.2<-1.3.op.1.weight`, residual
//! blocks `cells.5.conv_a.op.1.weight`, `lastact.0.weight`).
//!
//! Shapes: input (B, 3, H, W) → logits (B, classes).

use std::fmt;
use std::str::FromStr;

use candle_core::{DType, Device, Result, Tensor};
use nas_core::nn::{softmax_last_dim, BatchNorm2d, Conv1x1, Conv2d, Linear, Mode};
use nas_core::ops::{self, PoolKind};
use nas_core::params::{Init, ParamBuilder, ParamStore};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::error::{Error, Result as SsResult};

/// Intermediate nodes of a cell, counting the input node.
pub const NODES: usize = 4;
/// Edges of a cell.
pub const EDGES: usize = 6;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Nb201Op {
    None,
    SkipConnect,
    NorConv1x1,
    NorConv3x3,
    AvgPool3x3,
}

impl Nb201Op {
    pub const ALL: [Nb201Op; 5] =
        [Nb201Op::None, Nb201Op::SkipConnect, Nb201Op::NorConv1x1, Nb201Op::NorConv3x3, Nb201Op::AvgPool3x3];

    pub fn name(self) -> &'static str {
        match self {
            Nb201Op::None => "none",
            Nb201Op::SkipConnect => "skip_connect",
            Nb201Op::NorConv1x1 => "nor_conv_1x1",
            Nb201Op::NorConv3x3 => "nor_conv_3x3",
            Nb201Op::AvgPool3x3 => "avg_pool_3x3",
        }
    }

    pub fn index(self) -> usize {
        Self::ALL.iter().position(|&o| o == self).unwrap_or(0)
    }
}

impl FromStr for Nb201Op {
    type Err = Error;

    fn from_str(s: &str) -> std::result::Result<Self, Error> {
        Self::ALL.iter().copied().find(|o| o.name() == s).ok_or_else(|| {
            let names: Vec<_> = Self::ALL.iter().map(|o| o.name()).collect();
            Error::Genotype(format!("unknown op `{s}` for the nb201 space (expected one of {})", names.join(", ")))
        })
    }
}

impl fmt::Display for Nb201Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// (to, from) of edge `e`.
pub fn edge_nodes(e: usize) -> (usize, usize) {
    let mut k = 0;
    for to in 1..NODES {
        for from in 0..to {
            if k == e {
                return (to, from);
            }
            k += 1;
        }
    }
    (NODES, 0)
}

/// A derived NAS-Bench-201 cell: the op of every edge, in edge order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Nb201Genotype {
    pub edges: [Nb201Op; EDGES],
}

impl Nb201Genotype {
    /// The benchmark's string form `|op~0|+|op~0|op~1|+|op~0|op~1|op~2|`.
    pub fn arch_string(&self) -> String {
        let mut nodes = Vec::new();
        let mut e = 0;
        for to in 1..NODES {
            let mut s = String::from("|");
            for from in 0..to {
                s.push_str(&format!("{}~{from}|", self.edges[e]));
                e += 1;
            }
            nodes.push(s);
        }
        nodes.join("+")
    }

    /// Parses the string form; every node must list its inputs 0, 1, … in order.
    pub fn parse(s: &str) -> SsResult<Self> {
        let bad = |m: String| Error::Genotype(format!("nb201 arch `{s}`: {m}"));
        let nodes: Vec<&str> = s.split('+').collect();
        if nodes.len() != NODES - 1 {
            return Err(bad(format!("expected {} nodes separated by `+`, found {}", NODES - 1, nodes.len())));
        }
        let mut edges = [Nb201Op::None; EDGES];
        let mut e = 0;
        for (n, node) in nodes.iter().enumerate() {
            let to = n + 1;
            let inner = node
                .strip_prefix('|')
                .and_then(|x| x.strip_suffix('|'))
                .ok_or_else(|| bad(format!("node {to} must be written |op~j|…|")))?;
            let items: Vec<&str> = inner.split('|').collect();
            if items.len() != to {
                return Err(bad(format!("node {to} needs {to} inputs, found {}", items.len())));
            }
            for (from, item) in items.iter().enumerate() {
                let (op, j) = item.split_once('~').ok_or_else(|| bad(format!("`{item}` is not op~input")))?;
                let j: usize = j.parse().map_err(|_| bad(format!("`{j}` is not an input index")))?;
                if j != from {
                    return Err(bad(format!("node {to}: input {from} is written as {j}")));
                }
                edges[e] = op.parse::<Nb201Op>()?;
                e += 1;
            }
        }
        Ok(Self { edges })
    }

    pub fn to_json(&self) -> Value {
        json!({"space": "nb201", "arch": self.arch_string()})
    }

    pub fn from_json(v: &Value) -> SsResult<Self> {
        let obj = v.as_object().ok_or_else(|| Error::Genotype("a genotype must be a JSON object".into()))?;
        for k in obj.keys() {
            if k != "space" && k != "arch" {
                return Err(Error::Genotype(format!("unknown field `{k}` in an nb201 genotype")));
            }
        }
        let arch = v
            .get("arch")
            .and_then(Value::as_str)
            .ok_or_else(|| Error::Genotype("an nb201 genotype needs `arch`, a string".into()))?;
        Self::parse(arch)
    }

    /// Arg-max per edge over all five ops (`none` included); ties go to the lower column.
    pub fn derive(weights: &[Vec<f32>]) -> Self {
        let mut edges = [Nb201Op::None; EDGES];
        for (e, row) in weights.iter().take(EDGES).enumerate() {
            let mut best = 0;
            for (k, &v) in row.iter().enumerate() {
                if v > row[best] {
                    best = k;
                }
            }
            edges[e] = Nb201Op::ALL[best.min(Nb201Op::ALL.len() - 1)];
        }
        Self { edges }
    }
}

impl fmt::Display for Nb201Genotype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "nb201 cell {}", self.arch_string())?;
        for to in 1..NODES {
            let ins: Vec<String> = (0..to)
                .map(|from| {
                    let e = (0..to - 1).map(|i| i + 1).sum::<usize>() + from;
                    format!("{} <- node {from}", self.edges[e])
                })
                .collect();
            writeln!(f, "  node {to}: {}", ins.join(", "))?;
        }
        Ok(())
    }
}

/// ReLU → conv k×k → BN (`op.1`, `op.2`).
#[derive(Debug, Clone)]
enum NorConv {
    K1(Conv1x1),
    K3(Conv2d),
}

#[derive(Debug, Clone)]
struct ReluConvBn {
    conv: NorConv,
    bn: BatchNorm2d,
}

impl ReluConvBn {
    fn new(pb: &ParamBuilder, ci: usize, co: usize, k: usize, stride: usize, affine: bool) -> nas_core::Result<Self> {
        let pb = pb.pp("op");
        let conv = if k == 1 {
            NorConv::K1(Conv1x1::new(&pb.pp(1), ci, co, stride)?)
        } else {
            NorConv::K3(Conv2d::new(&pb.pp(1), ci, co, k, stride, k / 2)?)
        };
        Ok(Self { conv, bn: BatchNorm2d::new(&pb.pp(2), co, affine)? })
    }

    /// `relu` is ReLU(x).
    fn forward_relu(&self, relu: &Tensor, mode: Mode) -> Result<Tensor> {
        let y = match &self.conv {
            NorConv::K1(c) => c.forward(relu, mode)?,
            NorConv::K3(c) => c.forward(relu, mode)?,
        };
        self.bn.forward(&y, mode)
    }
}

#[derive(Debug, Clone)]
enum EdgeOp {
    Skip,
    Conv(ReluConvBn),
    AvgPool,
}

impl EdgeOp {
    /// None for `none`, which is never computed.
    fn new(op: Nb201Op, pb: &ParamBuilder, c: usize, affine: bool) -> nas_core::Result<Option<Self>> {
        Ok(match op {
            Nb201Op::None => None,
            Nb201Op::SkipConnect => Some(EdgeOp::Skip),
            Nb201Op::NorConv1x1 => Some(EdgeOp::Conv(ReluConvBn::new(pb, c, c, 1, 1, affine)?)),
            Nb201Op::NorConv3x3 => Some(EdgeOp::Conv(ReluConvBn::new(pb, c, c, 3, 1, affine)?)),
            Nb201Op::AvgPool3x3 => Some(EdgeOp::AvgPool),
        })
    }

    fn forward(&self, x: &Tensor, relu: Option<&Tensor>, mode: Mode) -> Result<Tensor> {
        match self {
            EdgeOp::Skip => Ok(x.clone()),
            EdgeOp::Conv(m) => match relu {
                Some(r) => m.forward_relu(r, mode),
                None => m.forward_relu(&ops::relu(x)?, mode),
            },
            EdgeOp::AvgPool => ops::pool3x3(x, PoolKind::Avg, 1),
        }
    }
}

/// One cell: per edge the (α column, op) pairs it computes.
#[derive(Debug, Clone)]
struct Cell {
    edges: Vec<Vec<(usize, EdgeOp)>>,
}

impl Cell {
    /// The search cell (all ops on every edge) when `genotype` is None, else the derived one.
    fn new(pb: &ParamBuilder, c: usize, genotype: Option<&Nb201Genotype>) -> nas_core::Result<Self> {
        let mut edges = Vec::with_capacity(EDGES);
        for e in 0..EDGES {
            let (to, from) = edge_nodes(e);
            let epb = pb.pp("edges").pp(format!("{to}<-{from}"));
            let mut ops = Vec::new();
            match genotype {
                None => {
                    for (col, &op) in Nb201Op::ALL.iter().enumerate() {
                        if let Some(m) = EdgeOp::new(op, &epb.pp(col), c, false)? {
                            ops.push((col, m));
                        }
                    }
                }
                Some(g) => {
                    if let Some(m) = EdgeOp::new(g.edges[e], &epb, c, true)? {
                        ops.push((g.edges[e].index(), m));
                    }
                }
            }
            edges.push(ops);
        }
        Ok(Self { edges })
    }

    /// `weights` (6, 5) = softmax(α) in the search network, None in the derived one.
    fn forward(&self, x: &Tensor, weights: Option<&Tensor>, mode: Mode) -> Result<Tensor> {
        let mut nodes = vec![x.clone()];
        let mut relus: Vec<Option<Tensor>> = vec![None];
        let mut e = 0;
        for to in 1..NODES {
            let mut acc: Option<Tensor> = None;
            for from in 0..to {
                let ops_e = &self.edges[e];
                if relus[from].is_none() && ops_e.iter().any(|(_, m)| matches!(m, EdgeOp::Conv(_))) {
                    relus[from] = Some(ops::relu(&nodes[from])?);
                }
                let w = weights.map(|w| w.get(e)).transpose()?;
                for (col, op) in ops_e {
                    let y = op.forward(&nodes[from], relus[from].as_ref(), mode)?;
                    let wk = w.as_ref().map(|w| w.narrow(0, *col, 1)).transpose()?;
                    acc = Some(ops::accumulate(acc, y, wk.as_ref())?);
                }
                e += 1;
            }
            nodes.push(match acc {
                Some(a) => a,
                None => x.zeros_like()?,
            });
            relus.push(None);
        }
        Ok(nodes.pop().unwrap_or_else(|| x.clone()))
    }
}

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
