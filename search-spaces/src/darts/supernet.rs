//! The DARTS search network (`Network` in the original code): stem conv3×3 (3 → 3C) + BN,
//! L search cells with reductions at L/3 and 2L/3 (channels doubled there), global average
//! pooling and a linear classifier. BN is affine only in the stem. α_normal and α_reduce
//! (E × 8, init 1e-3·N(0,1)) are shared by all cells of their type and live in their own
//! parameter store. With PC-DARTS edge normalisation β_normal and β_reduce (E, init
//! 1e-3·N(0,1)) join them: every node weights its incoming edges by the softmax of their β,
//! and the derivation multiplies each edge's op weights by its edge weight.
//!
//! Shapes: input (B, 3, H, W) → logits (B, classes).

use candle_core::{DType, Device, Result, Tensor};
use nas_core::nn::{softmax_last_dim, BatchNorm2d, Conv2d, Linear, Mode};
use nas_core::params::{Init, ParamStore};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::cell::SearchCell;
use super::derive::{cap_skip_connections, derive_cell};
use super::edges::{node_edges, num_edges};
use super::genotype::DartsGenotype;
use super::ops::DartsOp;
use crate::error::Error;
use crate::genotype::Genotype;
use crate::supernet::Supernet;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DartsSupernetConfig {
    pub channels: usize,
    pub layers: usize,
    pub num_classes: usize,
    pub steps: usize,
    pub multiplier: usize,
    pub stem_multiplier: usize,
    pub in_channels: usize,
    /// PC-DARTS partial-channel factor K (1: all channels).
    #[serde(default = "one")]
    pub partial_channels: usize,
    /// PC-DARTS edge normalisation (β).
    #[serde(default)]
    pub edge_norm: bool,
    /// Cap on skip connections in the derived normal cell (P-DARTS); None: no cap.
    #[serde(default)]
    pub max_skip_connect: Option<usize>,
}

fn one() -> usize {
    1
}

impl Default for DartsSupernetConfig {
    fn default() -> Self {
        Self {
            channels: 16,
            layers: 8,
            num_classes: 10,
            steps: 4,
            multiplier: 4,
            stem_multiplier: 3,
            in_channels: 3,
            partial_channels: 1,
            edge_norm: false,
            max_skip_connect: None,
        }
    }
}

impl DartsSupernetConfig {
    pub fn validate(&self) -> crate::Result<()> {
        let positive = [
            ("channels", self.channels),
            ("layers", self.layers),
            ("num_classes", self.num_classes),
            ("steps", self.steps),
            ("stem_multiplier", self.stem_multiplier),
            ("in_channels", self.in_channels),
            ("partial_channels", self.partial_channels),
        ];
        for (name, v) in positive {
            if v == 0 {
                return Err(Error::Config(format!("{name} must be positive")));
            }
        }
        let k = self.partial_channels;
        if self.channels % k != 0 {
            return Err(Error::Config(format!("partial channels K={k} must divide channels C={}", self.channels)));
        }
        if self.multiplier == 0 || self.multiplier > self.steps {
            return Err(Error::Config(format!("multiplier must be in 1..={}", self.steps)));
        }
        Ok(())
    }

    /// Indices of the reduction cells: L/3 and 2L/3.
    pub fn reduction_layers(&self) -> [usize; 2] {
        [self.layers / 3, 2 * self.layers / 3]
    }
}

pub struct DartsSupernet {
    cfg: DartsSupernetConfig,
    stem_conv: Conv2d,
    stem_bn: BatchNorm2d,
    cells: Vec<SearchCell>,
    classifier: Linear,
    alphas_normal: Tensor,
    alphas_reduce: Tensor,
    /// β_normal, β_reduce with edge normalisation.
    betas: Option<[Tensor; 2]>,
    weights: ParamStore,
    arch: ParamStore,
}

impl DartsSupernet {
    /// Builds the network with weights and α drawn from `seed`.
    pub fn new(cfg: DartsSupernetConfig, seed: u64, dtype: DType, device: &Device) -> crate::Result<Self> {
        cfg.validate()?;
        let weights = ParamStore::new(seed, 0);
        let arch = ParamStore::new(seed, 1);
        let pb = weights.builder(dtype, device);
        let c_stem = cfg.stem_multiplier * cfg.channels;
        let stem_conv = Conv2d::new(&pb.pp("stem").pp(0), cfg.in_channels, c_stem, 3, 1, 1)?;
        let stem_bn = BatchNorm2d::new(&pb.pp("stem").pp(1), c_stem, true)?;
        let (mut cpp, mut cp, mut c) = (c_stem, c_stem, cfg.channels);
        let mut cells = Vec::with_capacity(cfg.layers);
        let mut reduction_prev = false;
        for i in 0..cfg.layers {
            let reduction = cfg.reduction_layers().contains(&i);
            if reduction {
                c *= 2;
            }
            let cell = SearchCell::new(
                &pb.pp("cells").pp(i),
                cfg.steps,
                cfg.multiplier,
                cpp,
                cp,
                c,
                reduction,
                reduction_prev,
                cfg.partial_channels,
            )?;
            cells.push(cell);
            reduction_prev = reduction;
            (cpp, cp) = (cp, cfg.multiplier * c);
        }
        let classifier = Linear::new(&pb.pp("classifier"), cp, cfg.num_classes)?;
        let ab = arch.builder(dtype, device);
        let e = num_edges(cfg.steps);
        let alphas_normal = ab.weight("alphas_normal", (e, DartsOp::ALL.len()), Init::Normal(1e-3))?;
        let alphas_reduce = ab.weight("alphas_reduce", (e, DartsOp::ALL.len()), Init::Normal(1e-3))?;
        let betas = if cfg.edge_norm {
            Some([ab.weight("betas_normal", e, Init::Normal(1e-3))?, ab.weight("betas_reduce", e, Init::Normal(1e-3))?])
        } else {
            None
        };
        Ok(Self { cfg, stem_conv, stem_bn, cells, classifier, alphas_normal, alphas_reduce, betas, weights, arch })
    }

    /// Edge weights (E,) from β: a softmax over each node's incoming edges.
    fn edge_weights(&self, beta: &Tensor) -> Result<Tensor> {
        let mut parts = Vec::with_capacity(self.cfg.steps);
        for node in 0..self.cfg.steps {
            let edges = node_edges(node);
            parts.push(softmax_last_dim(&beta.narrow(0, edges.start, edges.len())?)?);
        }
        Tensor::cat(&parts, 0)
    }

    pub fn config(&self) -> &DartsSupernetConfig {
        &self.cfg
    }

    pub fn weights(&self) -> &ParamStore {
        &self.weights
    }

    pub fn arch(&self) -> &ParamStore {
        &self.arch
    }

    /// Logits (B, classes) of images x (B, C_in, H, W).
    pub fn forward(&self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        let w_normal = softmax_last_dim(&mode.arch(&self.alphas_normal))?;
        let w_reduce = softmax_last_dim(&mode.arch(&self.alphas_reduce))?;
        let edges = match &self.betas {
            Some([bn, br]) => Some([self.edge_weights(&mode.arch(bn))?, self.edge_weights(&mode.arch(br))?]),
            None => None,
        };
        let s = self.stem_bn.forward(&self.stem_conv.forward(x, mode)?, mode)?;
        let (mut s0, mut s1) = (s.clone(), s);
        for cell in &self.cells {
            let w = if cell.reduction { &w_reduce } else { &w_normal };
            let edge = edges.as_ref().map(|[n, r]| if cell.reduction { r } else { n });
            let out = cell.forward(&s0, &s1, w, edge, mode)?;
            (s0, s1) = (s1, out);
        }
        let pooled = s1.mean((2, 3))?;
        self.classifier.forward(&pooled, mode)
    }

    /// softmax(α) of both cell types on the host, (E, 8) each; with edge normalisation each
    /// row is multiplied by its edge weight (the weights the derivation ranks).
    pub fn op_weights(&self) -> Result<[Vec<Vec<f32>>; 2]> {
        let host = |a: &Tensor, b: Option<&Tensor>| {
            let mut w = softmax_last_dim(&a.detach())?;
            if let Some(b) = b {
                w = w.broadcast_mul(&self.edge_weights(&b.detach())?.unsqueeze(1)?)?;
            }
            w.to_dtype(DType::F32)?.to_vec2::<f32>()
        };
        let (bn, br) = match &self.betas {
            Some([n, r]) => (Some(n), Some(r)),
            None => (None, None),
        };
        Ok([host(&self.alphas_normal, bn)?, host(&self.alphas_reduce, br)?])
    }

    /// The derived genotype; `max_skip` caps skip connections in the normal cell.
    pub fn genotype(&self, max_skip: Option<usize>) -> Result<DartsGenotype> {
        let [wn, wr] = self.op_weights()?;
        let mut normal = derive_cell(&wn, self.cfg.steps);
        if let Some(m) = max_skip {
            cap_skip_connections(&mut normal, &wn, m);
        }
        let concat: Vec<usize> = (2 + self.cfg.steps - self.cfg.multiplier..2 + self.cfg.steps).collect();
        Ok(DartsGenotype {
            normal,
            normal_concat: concat.clone(),
            reduce: derive_cell(&wr, self.cfg.steps),
            reduce_concat: concat,
        })
    }

    /// Raw α of both cell types, for the metrics log.
    pub fn arch_json(&self) -> Result<Value> {
        let host = |a: &Tensor| a.to_dtype(DType::F32)?.to_vec2::<f32>();
        let mut v = json!({"alphas_normal": host(&self.alphas_normal)?, "alphas_reduce": host(&self.alphas_reduce)?});
        if let Some([bn, br]) = &self.betas {
            v["betas_normal"] = json!(bn.to_dtype(DType::F32)?.to_vec1::<f32>()?);
            v["betas_reduce"] = json!(br.to_dtype(DType::F32)?.to_vec1::<f32>()?);
        }
        Ok(v)
    }
}

impl Supernet for DartsSupernet {
    fn forward(&self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        DartsSupernet::forward(self, x, mode)
    }

    fn weights(&self) -> &ParamStore {
        DartsSupernet::weights(self)
    }

    fn arch(&self) -> &ParamStore {
        DartsSupernet::arch(self)
    }

    fn genotype(&self) -> crate::Result<Genotype> {
        Ok(DartsSupernet::genotype(self, self.cfg.max_skip_connect)?.into())
    }

    fn arch_json(&self) -> crate::Result<Value> {
        Ok(DartsSupernet::arch_json(self)?)
    }
}
