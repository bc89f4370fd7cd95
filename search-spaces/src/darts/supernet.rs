//! The DARTS search network (`Network` in the original code): a stem, L search cells with
//! reductions at L/3 and 2L/3 (channels doubled there), global average pooling and a linear
//! classifier. The stem (`stem.rs`, `DartsSupernetConfig::net`) is `model_search.py`'s
//! conv3×3 (3 → 3C) + BN, or PC-DARTS' ImageNet stems (`model_search_imagenet.py`): stem0 =
//! two stride-2 conv3×3 (3 → 3C/2 → 3C) giving s0, stem1 = one more (3C → 3C) giving s1, so
//! the first cell takes s0 as a reduced input (FactorizedReduce) and a 224×224 image reaches
//! the cells at 56×56 (s0) and 28×28 (s1). BN is affine only in the stem. α_normal and α_reduce
//! (E × 8, init 1e-3·N(0,1)) are shared by all cells of their type and live in their own
//! parameter store. With PC-DARTS edge normalisation β_normal and β_reduce (E, init
//! 1e-3·N(0,1)) join them: every node weights its incoming edges by the softmax of their β,
//! and the derivation multiplies each edge's op weights by its edge weight. With op sets
//! (`model.ops`) each row of α has one column per op of its edge; when a cell type's edges have
//! lists of different lengths, α is as wide as the longest and the padding columns get a
//! softmax weight of exactly zero.
//!
//! Shapes: input (B, 3, H, W) → logits (B, classes); H and W divisible by 4 (CIFAR stem) or 32
//! (ImageNet stems), as `Darts::check_search_input_size` checks.

use std::sync::Arc;

use candle_core::{DType, Device, Result, Tensor};
use nas_core::nn::{softmax_last_dim, Linear, Mode};
use nas_core::params::{Init, ParamKind, ParamStore};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::cell::SearchCell;
use super::derive::{cap_skip_connections, derive_cell};
use super::edges::{node_edges, num_edges};
use super::genotype::DartsGenotype;
use super::op_sets::DartsOpSets;
use super::ops::{DartsOp, RandomStream};
use super::stem::Stem;
use super::{net2wider, pdarts};
use crate::children::ChildShape;
use crate::error::Error;
use crate::genotype::Genotype;
use crate::model_config::{NetKind, OpsConfig};
use crate::supernet::{ArchSample, Child, NamedState, OpCost, Supernet};
use nas_core::rng::Rng;

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
    /// The ops of every edge; None: the eight primitives everywhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ops: Option<OpsConfig>,
    /// The stem: CIFAR's one conv, or PC-DARTS' ImageNet stems (three stride-2 convs).
    #[serde(default, skip_serializing_if = "NetKind::is_cifar")]
    pub net: NetKind,
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
            ops: None,
            net: NetKind::Cifar,
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
        if !self.channels.is_multiple_of(k) {
            return Err(Error::Config(format!("partial channels K={k} must divide channels C={}", self.channels)));
        }
        if self.net == NetKind::ImageNet && !self.channels.is_multiple_of(2) {
            return Err(Error::Config(format!(
                "an ImageNet supernet needs even channels (its first cell reduces the stem's output to C), got C={}",
                self.channels
            )));
        }
        if self.multiplier == 0 || self.multiplier > self.steps {
            return Err(Error::Config(format!("multiplier must be in 1..={}", self.steps)));
        }
        self.op_sets()?;
        Ok(())
    }

    /// The resolved op lists of every edge.
    pub fn op_sets(&self) -> crate::Result<DartsOpSets> {
        DartsOpSets::from_config(self.ops.as_ref(), self.steps).map_err(|e| Error::Config(format!("ops: {e}")))
    }

    /// Indices of the reduction cells: L/3 and 2L/3.
    pub fn reduction_layers(&self) -> [usize; 2] {
        [self.layers / 3, 2 * self.layers / 3]
    }
}

pub struct DartsSupernet {
    cfg: DartsSupernetConfig,
    stem: Stem,
    cells: Vec<SearchCell>,
    classifier: Linear,
    alphas_normal: Tensor,
    alphas_reduce: Tensor,
    op_sets: DartsOpSets,
    /// Added to α before the softmax where a cell type's edges have lists of different
    /// lengths: 0 on an edge's columns, −∞ on its padding (normal, reduce).
    masks: [Option<Tensor>; 2],
    random: Arc<RandomStream>,
    /// β_normal, β_reduce with edge normalisation.
    betas: Option<[Tensor; 2]>,
    weights: ParamStore,
    arch: ParamStore,
}

impl DartsSupernet {
    /// Per cell, the pixels of its input c_{k-1} and of its output, for an s1 of `(h, w)`
    /// (a reduction cell halves the side, rounding up).
    fn cell_pixels(&self, (mut h, mut w): (usize, usize)) -> Vec<(usize, usize)> {
        self.cells
            .iter()
            .map(|cell| {
                let input = h * w;
                if cell.reduction {
                    (h, w) = (h.div_ceil(2), w.div_ceil(2));
                }
                (input, h * w)
            })
            .collect()
    }

    /// Builds the network with weights and α drawn from `seed`.
    pub fn new(cfg: DartsSupernetConfig, seed: u64, dtype: DType, device: &Device) -> crate::Result<Self> {
        cfg.validate()?;
        let op_sets = cfg.op_sets()?;
        let random = RandomStream::new(seed);
        let weights = ParamStore::new(seed, 0);
        let arch = ParamStore::new(seed, 1);
        let pb = weights.builder(dtype, device);
        let c_stem = cfg.stem_multiplier * cfg.channels;
        let stem = Stem::new(&pb, cfg.net, cfg.in_channels, c_stem)?;
        let (mut cpp, mut cp, mut c) = (c_stem, c_stem, cfg.channels);
        let mut cells = Vec::with_capacity(cfg.layers);
        // The ImageNet stems' s0 has twice the size of s1, as after a reduction.
        let mut reduction_prev = cfg.net == NetKind::ImageNet;
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
                op_sets.cell(reduction),
                &random,
            )?;
            cells.push(cell);
            reduction_prev = reduction;
            (cpp, cp) = (cp, cfg.multiplier * c);
        }
        let classifier = Linear::new(&pb.pp("classifier"), cp, cfg.num_classes)?;
        let ab = arch.builder(dtype, device);
        let e = num_edges(cfg.steps);
        let alphas_normal = ab.weight("alphas_normal", (e, op_sets.width(false)), Init::Normal(1e-3))?;
        let alphas_reduce = ab.weight("alphas_reduce", (e, op_sets.width(true)), Init::Normal(1e-3))?;
        let mask = |reduction: bool| -> Result<Option<Tensor>> {
            if !op_sets.ragged(reduction) {
                return Ok(None);
            }
            let width = op_sets.width(reduction);
            let m: Vec<f32> = op_sets
                .cell(reduction)
                .iter()
                .flat_map(|r| (0..width).map(move |k| if k < r.len() { 0.0 } else { f32::NEG_INFINITY }))
                .collect();
            Some(Tensor::from_vec(m, (e, width), device)?.to_dtype(dtype)).transpose()
        };
        let masks = [mask(false)?, mask(true)?];
        let betas = if cfg.edge_norm {
            Some([ab.weight("betas_normal", e, Init::Normal(1e-3))?, ab.weight("betas_reduce", e, Init::Normal(1e-3))?])
        } else {
            None
        };
        Ok(Self {
            cfg,
            stem,
            cells,
            classifier,
            alphas_normal,
            alphas_reduce,
            op_sets,
            masks,
            random,
            betas,
            weights,
            arch,
        })
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

    /// The op lists of every edge (the columns of α).
    pub fn op_sets(&self) -> &DartsOpSets {
        &self.op_sets
    }

    /// softmax over each edge's ops of α (`reduction`: the reduction cells'), padding masked.
    fn op_softmax(&self, alpha: &Tensor, reduction: bool) -> Result<Tensor> {
        match &self.masks[usize::from(reduction)] {
            Some(m) => softmax_last_dim(&(alpha + m)?),
            None => softmax_last_dim(alpha),
        }
    }

    /// Logits (B, classes) of images x (B, C_in, H, W).
    pub fn forward(&self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        let w_normal = self.op_softmax(&mode.arch(&self.alphas_normal), false)?;
        let w_reduce = self.op_softmax(&mode.arch(&self.alphas_reduce), true)?;
        let edges = match &self.betas {
            Some([bn, br]) => Some([self.edge_weights(&mode.arch(bn))?, self.edge_weights(&mode.arch(br))?]),
            None => None,
        };
        let (mut s0, mut s1) = self.stem.forward(x, mode)?;
        for cell in &self.cells {
            let w = if cell.reduction { &w_reduce } else { &w_normal };
            let edge = edges.as_ref().map(|[n, r]| if cell.reduction { r } else { n });
            let out = cell.forward(&s0, &s1, w, edge, mode)?;
            (s0, s1) = (s1, out);
        }
        let pooled = s1.mean((2, 3))?;
        self.classifier.forward(&pooled, mode)
    }

    /// Logits (B, classes) with the ops of `sample` (its α tensors: normal, reduce).
    /// A sample of weights alone (every op runs: SNAS, SDARTS, DrNAS) keeps PC-DARTS' edge
    /// normalisation; one that chooses ops has none.
    pub fn forward_sampled(&self, x: &Tensor, mode: Mode, sample: &ArchSample) -> Result<Tensor> {
        let edges = match (&self.betas, &sample.chosen) {
            (Some(_), Some(_)) => candle_core::bail!("a sample of ops has no edge normalisation (β)"),
            (Some([bn, br]), None) => Some([self.edge_weights(&mode.arch(bn))?, self.edge_weights(&mode.arch(br))?]),
            (None, _) => None,
        };
        let (mut s0, mut s1) = self.stem.forward(x, mode)?;
        for cell in &self.cells {
            let edge = edges.as_ref().map(|[n, r]| if cell.reduction { r } else { n });
            let out = cell.forward_sampled(&s0, &s1, sample, usize::from(cell.reduction), edge, mode)?;
            (s0, s1) = (s1, out);
        }
        let pooled = s1.mean((2, 3))?;
        self.classifier.forward(&pooled, mode)
    }

    /// The genotype of a sample that chose two (op, input) pairs per node: per cell type and
    /// edge, the chosen columns.
    pub fn genotype_of(&self, chosen: &[Vec<Vec<usize>>]) -> crate::Result<DartsGenotype> {
        let bad = |m: String| Error::Genotype(format!("sampled architecture: {m}"));
        if chosen.len() != 2 {
            return Err(bad(format!("{} cell types, expected 2", chosen.len())));
        }
        let mut cells = Vec::with_capacity(2);
        for (t, rows) in chosen.iter().enumerate() {
            let ops = self.op_sets.cell(t == 1);
            if rows.len() != ops.len() {
                return Err(bad(format!("{} edges, the cell has {}", rows.len(), ops.len())));
            }
            let mut cell = Vec::with_capacity(2 * self.cfg.steps);
            for node in 0..self.cfg.steps {
                let before = cell.len();
                for (j, e) in node_edges(node).enumerate() {
                    for &col in &rows[e] {
                        let op = *ops[e].get(col).ok_or_else(|| bad(format!("column {col} of edge {e}")))?;
                        cell.push((op, j));
                    }
                }
                if cell.len() - before != 2 {
                    return Err(bad(format!("node {node} has {} inputs, a genotype needs 2", cell.len() - before)));
                }
            }
            cells.push(cell);
        }
        let concat: Vec<usize> = (2 + self.cfg.steps - self.cfg.multiplier..2 + self.cfg.steps).collect();
        let reduce = cells.pop().unwrap_or_default();
        let normal = cells.pop().unwrap_or_default();
        Ok(DartsGenotype { normal, normal_concat: concat.clone(), reduce, reduce_concat: concat })
    }

    /// softmax(α) of both cell types on the host, one row per edge with one weight per op of
    /// its list; with edge normalisation each row is multiplied by its edge weight (the weights
    /// the derivation ranks).
    pub fn op_weights(&self) -> Result<[Vec<Vec<f32>>; 2]> {
        let host = |a: &Tensor, b: Option<&Tensor>, reduction: bool| -> Result<Vec<Vec<f32>>> {
            let mut w = self.op_softmax(&a.detach(), reduction)?;
            if let Some(b) = b {
                w = w.broadcast_mul(&self.edge_weights(&b.detach())?.unsqueeze(1)?)?;
            }
            self.host_rows(&w, reduction)
        };
        let (bn, br) = match &self.betas {
            Some([n, r]) => (Some(n), Some(r)),
            None => (None, None),
        };
        Ok([host(&self.alphas_normal, bn, false)?, host(&self.alphas_reduce, br, true)?])
    }

    /// The rows of an α-shaped matrix on the host, each cut to its edge's op list.
    fn host_rows(&self, m: &Tensor, reduction: bool) -> Result<Vec<Vec<f32>>> {
        let mut rows = m.to_dtype(DType::F32)?.to_vec2::<f32>()?;
        for (row, ops) in rows.iter_mut().zip(self.op_sets.cell(reduction)) {
            row.truncate(ops.len());
        }
        Ok(rows)
    }

    /// The derived genotype; `max_skip` caps skip connections in the normal cell.
    pub fn genotype(&self, max_skip: Option<usize>) -> Result<DartsGenotype> {
        let [wn, wr] = self.op_weights()?;
        let sets = &self.op_sets;
        let mut normal = derive_cell(&wn, &sets.normal, self.cfg.steps);
        if let Some(m) = max_skip {
            cap_skip_connections(&mut normal, &wn, &sets.normal, m);
        }
        let concat: Vec<usize> = (2 + self.cfg.steps - self.cfg.multiplier..2 + self.cfg.steps).collect();
        Ok(DartsGenotype {
            normal,
            normal_concat: concat.clone(),
            reduce: derive_cell(&wr, &sets.reduce, self.cfg.steps),
            reduce_concat: concat,
        })
    }

    /// Raw α of both cell types, for the metrics log: one row per edge with one entry per op
    /// of its list, and with op sets each row's op names (`alphas_normal_ops`, …).
    pub fn arch_json(&self) -> Result<Value> {
        let mut v = json!({
            "alphas_normal": self.host_rows(&self.alphas_normal, false)?,
            "alphas_reduce": self.host_rows(&self.alphas_reduce, true)?,
        });
        if !self.op_sets.is_default() {
            let names = |rows: &[Vec<DartsOp>]| -> Vec<Vec<&str>> {
                rows.iter().map(|r| r.iter().map(|o| o.name()).collect()).collect()
            };
            v["alphas_normal_ops"] = json!(names(&self.op_sets.normal));
            v["alphas_reduce_ops"] = json!(names(&self.op_sets.reduce));
        }
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

    fn stream_position(&self) -> u64 {
        self.random.position()
    }

    fn set_stream_position(&self, draws: u64) {
        self.random.set_position(draws);
    }

    fn set_skip_dropout(&self, p: f64) {
        self.random.set_skip_dropout(p);
    }

    fn op_logits(&self, mode: Mode) -> Result<Vec<Tensor>> {
        let mut out = Vec::with_capacity(2);
        for (a, m) in [&self.alphas_normal, &self.alphas_reduce].into_iter().zip(&self.masks) {
            let a = mode.arch(a);
            out.push(match m {
                Some(m) => (a + m)?,
                None => a,
            });
        }
        Ok(out)
    }

    fn edge_ops(&self) -> Vec<Vec<Vec<&'static str>>> {
        [false, true]
            .iter()
            .map(|&r| self.op_sets.cell(r).iter().map(|ops| ops.iter().map(|o| o.name()).collect()).collect())
            .collect()
    }

    fn forward_sampled(&self, x: &Tensor, mode: Mode, sample: &ArchSample) -> Result<Tensor> {
        DartsSupernet::forward_sampled(self, x, mode, sample)
    }

    fn genotype_of(&self, chosen: &[Vec<Vec<usize>>]) -> crate::Result<Genotype> {
        Ok(DartsSupernet::genotype_of(self, chosen)?.into())
    }

    /// Weights named `cells.{i}._ops.{e}._ops.{c}.…` belong to op c of edge e of cell i, whose
    /// output has the resolution after the reductions up to cell i.
    fn op_costs(&self, height: usize, width: usize) -> Vec<Vec<Vec<OpCost>>> {
        let mut costs: Vec<Vec<Vec<OpCost>>> = [false, true]
            .iter()
            .map(|&r| self.op_sets.cell(r).iter().map(|ops| vec![OpCost::default(); ops.len()]).collect())
            .collect();
        // The cells work at the size of s1 (the image's for CIFAR, an eighth of it for ImageNet).
        let (_, s1, _) = self.stem.mult_adds((height, width)).unwrap_or(((0, 0), (0, 0), 0));
        let pixels = self.cell_pixels(s1);
        for p in self.weights.params().into_iter().filter(|p| p.kind == ParamKind::Weight) {
            let mut parts = p.name.split('.');
            let (Some("cells"), Some(i), Some("_ops"), Some(e), Some("_ops"), Some(c)) =
                (parts.next(), parts.next(), parts.next(), parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            let (Ok(i), Ok(e), Ok(c)) = (i.parse::<usize>(), e.parse::<usize>(), c.parse::<usize>()) else { continue };
            let Some(cell) = self.cells.get(i) else { continue };
            if let Some(cost) = costs[usize::from(cell.reduction)].get_mut(e).and_then(|r| r.get_mut(c)) {
                cost.add(p.dims(), pixels[i].1);
            }
        }
        costs
    }

    /// The stem's convolutions, then every 4-d weight of cell i at the pixels it writes: its
    /// preprocessing at the size of the cell's input c_{k-1}, its ops at the cell's output
    /// size (after the reduction); the classifier's weight once.
    fn mult_adds(&self, height: usize, width: usize) -> Option<f64> {
        let (_, s1, stem) = self.stem.mult_adds((height, width))?;
        let sizes = self.cell_pixels(s1);
        let mut total = stem as f64;
        for p in self.weights.params() {
            let n: usize = p.dims().iter().product();
            let mut parts = p.name.split('.');
            match (parts.next(), parts.next().and_then(|i| i.parse::<usize>().ok()), parts.next(), p.dims().len()) {
                (Some("cells"), Some(i), Some(part), 4) => {
                    let (input, output) = *sizes.get(i)?;
                    total += (n * if part.starts_with("preprocess") { input } else { output }) as f64;
                }
                (Some("classifier"), _, _, 2) => total += n as f64,
                _ => {}
            }
        }
        Some(total)
    }

    fn child_shape(&self) -> ChildShape {
        ChildShape::TwoInputsPerNode { steps: self.cfg.steps }
    }

    /// P-DARTS' drop (`pdarts::drop_weakest`) on both cell types' op sets by softmax(α)
    /// (times the edge weights with edge normalisation).
    fn prune_ops(&self, drop: usize) -> crate::Result<OpsConfig> {
        let [wn, wr] = self.op_weights()?;
        let cell =
            |ops: &[Vec<DartsOp>], w: &[Vec<f32>]| pdarts::drop_weakest(ops, w, drop, false).map_err(Error::Config);
        let sets = DartsOpSets { normal: cell(&self.op_sets.normal, &wn)?, reduce: cell(&self.op_sets.reduce, &wr)? };
        Ok(sets.to_config())
    }

    /// DrNAS' Net2Wider (`net2wider::widen`) over the ops this supernet kept of `old`'s.
    fn widen_from(&self, old: &dyn Supernet, state: &NamedState, rng: &mut Rng) -> crate::Result<NamedState> {
        let reduction: Vec<bool> = self.cells.iter().map(|c| c.reduction).collect();
        let new_params: Vec<(String, Vec<usize>)> =
            self.weights().params().into_iter().map(|p| (p.name.clone(), p.dims().to_vec())).collect();
        net2wider::widen(&reduction, &old.edge_ops(), &self.edge_ops(), &new_params, state, rng)
    }

    /// P-DARTS' final derivation (`pdarts::derive_final`), the skip cap on the normal cell.
    fn final_genotype(&self, max_skip: Option<usize>) -> crate::Result<Genotype> {
        let [wn, wr] = self.op_weights()?;
        let steps = self.cfg.steps;
        let concat: Vec<usize> = (2..2 + steps).collect();
        Ok(DartsGenotype {
            normal: pdarts::derive_final(&self.op_sets.normal, &wn, steps, max_skip),
            normal_concat: concat.clone(),
            reduce: pdarts::derive_final(&self.op_sets.reduce, &wr, steps, None),
            reduce_concat: concat,
        }
        .into())
    }

    fn child_of(&self, genotype: &Genotype) -> crate::Result<Child> {
        let Genotype::Darts(g) = genotype else {
            return Err(Error::Genotype(format!("a {} genotype on a darts supernet", genotype.space())));
        };
        if g.steps() != self.cfg.steps {
            return Err(Error::Genotype(format!(
                "a genotype of {} nodes on a supernet of {}",
                g.steps(),
                self.cfg.steps
            )));
        }
        let mut chosen = Vec::with_capacity(2);
        for (t, edges) in [&g.normal, &g.reduce].into_iter().enumerate() {
            let ops = self.op_sets.cell(t == 1);
            let mut rows = vec![Vec::new(); ops.len()];
            for (k, &(op, input)) in edges.iter().enumerate() {
                let e = node_edges(k / 2).start + input;
                let col = ops.get(e).and_then(|l| l.iter().position(|&o| o == op)).ok_or_else(|| {
                    Error::Genotype(format!(
                        "{op} from input {input} of node {} is not in the supernet's op set",
                        k / 2
                    ))
                })?;
                rows[e].push(col);
            }
            chosen.push(rows);
        }
        Ok(chosen)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn supernet(net: NetKind) -> DartsSupernet {
        let cfg = DartsSupernetConfig { channels: 4, layers: 3, num_classes: 7, net, ..Default::default() };
        DartsSupernet::new(cfg, 0, DType::F32, &Device::Cpu).unwrap()
    }

    /// PC-DARTS' ImageNet stems take a 224×224 image to 56×56 (s0) and 28×28 (s1), 3C channels
    /// each, and the classifier gives one row of logits per image.
    #[test]
    fn imagenet_stems_give_the_documented_sizes() {
        let net = supernet(NetKind::ImageNet);
        let x = Tensor::randn(0f32, 1., (2, 3, 224, 224), &Device::Cpu).unwrap();
        let (s0, s1) = net.stem.forward(&x, Mode::EVAL).unwrap();
        assert_eq!(s0.dims4().unwrap(), (2, 12, 56, 56));
        assert_eq!(s1.dims4().unwrap(), (2, 12, 28, 28));
        assert_eq!(net.forward(&x, Mode::EVAL).unwrap().dims(), [2, 7]);
        let stem: Vec<String> =
            net.weights().params().into_iter().map(|p| p.name).filter(|n| n.starts_with("stem")).collect();
        for name in
            ["stem0.0.weight", "stem0.1.weight", "stem0.3.weight", "stem0.4.bias", "stem1.1.weight", "stem1.2.bias"]
        {
            assert!(stem.iter().any(|n| n == name), "{name} missing from {stem:?}");
        }
        let first = net.weights().params().into_iter().find(|p| p.name == "cells.0.preprocess0.conv_1.weight");
        assert_eq!(first.map(|p| p.dims().to_vec()), Some(vec![2, 12, 1, 1]), "cell 0 reduces s0 (FactorizedReduce)");
    }

    /// The cells of an ImageNet supernet see the image at an eighth of its size: their op costs
    /// at 224×224 are a CIFAR supernet's at 28×28.
    #[test]
    fn imagenet_op_costs_count_the_cells_at_the_stems_output_size() {
        let (imagenet, cifar) = (supernet(NetKind::ImageNet), supernet(NetKind::Cifar));
        assert_eq!(imagenet.op_costs(224, 224), cifar.op_costs(28, 28));
        assert_ne!(imagenet.op_costs(224, 224), cifar.op_costs(224, 224));
    }

    /// Every multiply-accumulate of a three-cell sep_conv_3x3 supernet (C=4, cells 1 and 2
    /// reducing) at 32×32, written out from the DARTS network's layout: a sep conv is two
    /// stages of a 3×3 depthwise (9C per pixel) and a 1×1 (C² per pixel) at the edge's output
    /// size, 14 edges a cell.
    #[test]
    fn mult_adds_count_every_op_of_the_relaxed_network() {
        let ops = Some(OpsConfig::Uniform(vec!["sep_conv_3x3".into()]));
        let cfg = DartsSupernetConfig { channels: 4, layers: 3, num_classes: 7, ops, ..Default::default() };
        let net = DartsSupernet::new(cfg, 0, DType::F32, &Device::Cpu).unwrap();
        let sep = |c: usize, pixels: usize| 14 * 2 * (9 * c + c * c) * pixels;
        let stem = 9 * 3 * 12 * 1024;
        // Cell 0 (normal, C=4): 1×1 preprocessing 12→4 twice at 32×32.
        let cell0 = (12 * 4 + 12 * 4) * 1024 + sep(4, 1024);
        // Cell 1 (reduction, C=8): 12→8 and 16→8 at 32×32, ops at 16×16.
        let cell1 = (12 * 8 + 16 * 8) * 1024 + sep(8, 256);
        // Cell 2 (reduction after a reduction, C=16): FactorizedReduce's two 16→8 convs and
        // 32→16, all at 16×16; ops at 8×8.
        let cell2 = (2 * 16 * 8 + 32 * 16) * 256 + sep(16, 64);
        let want = stem + cell0 + cell1 + cell2 + 64 * 7;
        assert_eq!(net.mult_adds(32, 32), Some(want as f64));
    }

    #[test]
    fn imagenet_supernets_need_even_channels() {
        let cfg = DartsSupernetConfig { channels: 5, net: NetKind::ImageNet, ..Default::default() };
        let e = DartsSupernet::new(cfg, 0, DType::F32, &Device::Cpu).err().expect("odd C").to_string();
        assert!(e.contains("even channels") && e.contains("C=5"), "{e}");
    }
}
