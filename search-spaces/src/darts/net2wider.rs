//! DrNAS' Net2Wider between the stages of its progressive search (xiangning-chen/DrNAS
//! `net2wider.py` and the `wider` methods of `DARTS-space/operations.py`): when the partial
//! channels shrink from K to K' (6 then 4), every op of every edge works on C/K' channels instead
//! of C/K, and its parameters grow to match. The reference keeps the old channels and appends
//! copies of randomly chosen old ones (`torch.randint`), without rescaling (this is not the
//! function-preserving Net2Wider of Chen et al. 2016, and it does not try to be):
//!
//! - a depthwise filter (C, 1, k, k) gets copies of random old filters (its output index);
//! - the pointwise filter after it gets the same copies along its input (that index) and copies
//!   of random old filters along its output (a new index), which the batch norm after it takes
//!   too (running statistics; γ, β with affine BN) — per stage of a separable convolution, and
//!   for the dilated convolution's one stage;
//! - the batch norm after a pooling op takes copies of random old channels;
//! - FactorizedReduce (skip_connect on reducing edges): each of its two 1×1 convolutions grows
//!   along its input and its output with its own random indices; its batch norm appends the old
//!   channels at both indices in turn (`torch.cat([index1, index2])`), both drawn below the old
//!   *half* width, so the appended statistics of the second half's new channels come from the
//!   first half — the reference's indexing, followed here;
//! - the identity, `none` and everything outside the ops (stems, preprocessing, classifier:
//!   their widths do not depend on K) stay as they are.
//!
//! The momentum of every weight grows with the same indices as the weight (the reference's
//! `configure_optimizer`). The indices come from this crate's own stream (`Purpose::Widen`),
//! drawn op by op in parameter order, not from PyTorch's generator.
//!
//! The op columns follow the op names: after pruning, column c of an edge is the op of that
//! name in the previous stage's list (`column_map`).

use std::collections::HashMap;

use candle_core::Tensor;
use nas_core::rng::Rng;
use rand::Rng as _;

use super::ops::DartsOp;
use crate::error::{Error, Result};
use crate::supernet::{column_map, NamedState};

/// `count` random indices below `old` (the old channels the new ones copy).
fn draw(rng: &mut Rng, old: usize, count: usize) -> Vec<u32> {
    (0..count).map(|_| rng.random_range(0..old) as u32).collect()
}

/// `t` with the slices at `idx` along `dim` appended along `dim`.
fn grow(t: &Tensor, dim: usize, idx: &[u32]) -> Result<Tensor> {
    if idx.is_empty() {
        return Ok(t.clone());
    }
    let index = Tensor::new(idx, t.device())?;
    Ok(Tensor::cat(&[t, &t.index_select(&index, dim)?], dim)?)
}

/// A parameter's value and momentum, grown alike.
fn grow_both((v, m): &(Tensor, Option<Tensor>), dim: usize, idx: &[u32]) -> Result<(Tensor, Option<Tensor>)> {
    Ok((grow(v, dim, idx)?, m.as_ref().map(|m| grow(m, dim, idx)).transpose()?))
}

/// One op's parameters: `rest` (the name after the op's prefix) → its old value and momentum,
/// and the shape the new supernet gives it.
struct OpParams<'a> {
    what: String,
    old: HashMap<&'a str, &'a (Tensor, Option<Tensor>)>,
    new_dims: HashMap<&'a str, &'a [usize]>,
    out: HashMap<&'a str, (Tensor, Option<Tensor>)>,
}

impl<'a> OpParams<'a> {
    /// `rest`'s entry in the previous stage: the key as the op's tables hold it (their
    /// lifetime) and the value and momentum.
    fn entry(&self, rest: &str) -> Result<(&'a str, &'a (Tensor, Option<Tensor>))> {
        self.old
            .get_key_value(rest)
            .map(|(k, v)| (*k, *v))
            .ok_or_else(|| Error::Config(format!("{}: no `{rest}` in the previous stage", self.what)))
    }

    fn old(&self, rest: &str) -> Result<&'a (Tensor, Option<Tensor>)> {
        Ok(self.entry(rest)?.1)
    }

    /// The growth of `rest` along `dim`: the new channels' count, checked against the old.
    fn extra(&self, rest: &str, dim: usize) -> Result<(usize, usize)> {
        let old = self.old(rest)?.0.dims().to_vec();
        let new = self.new_dims.get(rest).ok_or_else(|| Error::Config(format!("{}: no `{rest}` now", self.what)))?;
        match (old.get(dim), new.get(dim)) {
            (Some(&o), Some(&n)) if n >= o && o > 0 => Ok((o, n - o)),
            _ => Err(Error::Config(format!(
                "{}: `{rest}` cannot widen from {old:?} to {new:?} along dimension {dim}",
                self.what
            ))),
        }
    }

    /// Grows `rest` along `dim` at `idx` (from what was already grown, if anything).
    fn grow(&mut self, rest: &'a str, dim: usize, idx: &[u32]) -> Result<()> {
        let cur = match self.out.remove(rest) {
            Some(c) => c,
            None => self.old(rest)?.clone(),
        };
        self.out.insert(rest, grow_both(&cur, dim, idx)?);
        Ok(())
    }

    /// A batch norm at `bn` (running statistics, and γ, β when affine) grown at `idx`.
    fn grow_bn(&mut self, bn: &str, idx: &[u32]) -> Result<()> {
        let names: Vec<&'a str> = self
            .old
            .keys()
            .copied()
            .filter(|r| r.strip_prefix(bn).and_then(|s| s.strip_prefix('.')).is_some_and(|s| !s.contains('.')))
            .collect();
        if names.is_empty() {
            return Err(Error::Config(format!("{}: no batch norm `{bn}` in the previous stage", self.what)));
        }
        for r in names {
            self.grow(r, 0, idx)?;
        }
        Ok(())
    }

    /// A depthwise → pointwise → batch norm stage at `op.{f}`, `op.{f+1}`, `op.{f+2}`.
    fn dw_pw_bn(&mut self, f: usize, rng: &mut Rng) -> Result<()> {
        let (dw, pw) = (format!("op.{f}.weight"), format!("op.{}.weight", f + 1));
        let (dw, pw): (&'a str, &'a str) = (self.key(&dw)?, self.key(&pw)?);
        let (old, n) = self.extra(dw, 0)?;
        let a = draw(rng, old, n);
        self.grow(dw, 0, &a)?;
        self.grow(pw, 1, &a)?;
        let (old, n) = self.extra(pw, 0)?;
        let b = draw(rng, old, n);
        self.grow(pw, 0, &b)?;
        self.grow_bn(&format!("op.{}", f + 2), &b)
    }

    /// FactorizedReduce: `conv_1`, `conv_2` and `bn`.
    fn factorized_reduce(&mut self, rng: &mut Rng) -> Result<()> {
        let mut bn_idx = Vec::new();
        for conv in ["conv_1.weight", "conv_2.weight"] {
            let conv: &'a str = self.key(conv)?;
            let (old, n) = self.extra(conv, 1)?;
            let i = draw(rng, old, n);
            self.grow(conv, 1, &i)?;
            let (old, n) = self.extra(conv, 0)?;
            let o = draw(rng, old, n);
            self.grow(conv, 0, &o)?;
            bn_idx.extend(o);
        }
        self.grow_bn("bn", &bn_idx)
    }

    /// The batch norm after a pooling op (`1`).
    fn pool_bn(&mut self, rng: &mut Rng) -> Result<()> {
        let mean: &'a str = self.key("1.running_mean")?;
        let (old, n) = self.extra(mean, 0)?;
        let idx = draw(rng, old, n);
        self.grow_bn("1", &idx)
    }

    /// `rest` as the key the op's tables hold (their lifetime).
    fn key(&self, rest: &str) -> Result<&'a str> {
        Ok(self.entry(rest)?.0)
    }
}

/// (cell, edge, column) of an op of a supernet.
type OpKey = (usize, usize, usize);

/// A parameter of a new op: its name after the op's prefix, and its shape.
type NewParam<'a> = (&'a str, &'a [usize]);

/// The parameter name `cells.{i}._ops.{e}._ops.{c}.{rest}` split into (i, e, c, rest).
fn op_param(name: &str) -> Option<(usize, usize, usize, &str)> {
    let rest = name.strip_prefix("cells.")?;
    let (i, rest) = rest.split_once("._ops.")?;
    let (e, rest) = rest.split_once("._ops.")?;
    let (c, rest) = rest.split_once('.')?;
    Some((i.parse().ok()?, e.parse().ok()?, c.parse().ok()?, rest))
}

/// The new supernet's parameters (`new_params`: name and shape, in creation order) from the old
/// supernet's (`old`: by name, value and momentum), for cells whose types are `reduction`, the
/// old and the new op lists `old_ops`, `new_ops` (`Supernet::edge_ops`), the new channels
/// copying random old ones drawn from `rng`.
pub fn widen(
    reduction: &[bool],
    old_ops: &[Vec<Vec<&str>>],
    new_ops: &[Vec<Vec<&str>>],
    new_params: &[(String, Vec<usize>)],
    old: &NamedState,
    rng: &mut Rng,
) -> Result<NamedState> {
    let cols = column_map(old_ops, new_ops)?;
    let mut out = NamedState::new();
    // The ops' parameters by (cell, edge, column), in the order they first appear.
    let mut ops: Vec<(OpKey, Vec<NewParam>)> = Vec::new();
    for (name, dims) in new_params {
        if let Some((i, e, c, rest)) = op_param(name) {
            match ops.last_mut() {
                Some((key, list)) if *key == (i, e, c) => list.push((rest, dims)),
                _ => ops.push(((i, e, c), vec![(rest, dims)])),
            }
            continue;
        }
        let v = old.get(name).ok_or_else(|| Error::Config(format!("no `{name}` in the previous stage")))?;
        if v.0.dims() != dims.as_slice() {
            return Err(Error::Config(format!(
                "`{name}` is {:?} in the previous stage and {dims:?} now: only the ops' channels widen",
                v.0.dims()
            )));
        }
        out.insert(name.clone(), v.clone());
    }
    for ((i, e, c), list) in ops {
        let t = usize::from(*reduction.get(i).ok_or_else(|| Error::Config(format!("no cell {i}")))?);
        let old_c = *cols
            .get(t)
            .and_then(|edges| edges.get(e))
            .and_then(|cs| cs.get(c))
            .ok_or_else(|| Error::Config(format!("no op {c} on edge {e} of cell {i}")))?;
        let op: DartsOp = new_ops[t][e][c].parse()?;
        let old_prefix = format!("cells.{i}._ops.{e}._ops.{old_c}.");
        let mut p = OpParams {
            what: format!("{op} on edge {e} of cell {i}"),
            old: old.iter().filter_map(|(n, v)| n.strip_prefix(&old_prefix).map(|r| (r, v))).collect(),
            new_dims: list.iter().map(|&(r, d)| (r, d)).collect(),
            out: HashMap::new(),
        };
        let same = list.iter().all(|(r, d)| p.old.get(r).is_some_and(|v| v.0.dims() == *d));
        if !same {
            match op {
                DartsOp::MaxPool3x3 | DartsOp::AvgPool3x3 => p.pool_bn(rng)?,
                DartsOp::SkipConnect => p.factorized_reduce(rng)?,
                DartsOp::SepConv3x3 | DartsOp::SepConv5x5 => {
                    p.dw_pw_bn(1, rng)?;
                    p.dw_pw_bn(5, rng)?;
                }
                DartsOp::DilConv3x3 | DartsOp::DilConv5x5 => p.dw_pw_bn(1, rng)?,
                DartsOp::None | DartsOp::Noise => {}
            }
        }
        for (rest, dims) in list {
            let v = match p.out.remove(rest) {
                Some(v) => v,
                None => p.old(rest)?.clone(),
            };
            if v.0.dims() != dims {
                return Err(Error::Config(format!(
                    "{}: `{rest}` came out {:?}, the new supernet has {dims:?}",
                    p.what,
                    v.0.dims()
                )));
            }
            out.insert(format!("cells.{i}._ops.{e}._ops.{c}.{rest}"), v);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device};
    use nas_core::rng::{self, Purpose};

    use super::*;
    use crate::darts::{DartsSupernet, DartsSupernetConfig};
    use crate::supernet::Supernet;

    type Rows = Vec<Vec<f64>>;

    /// A tensor's rows along `dim` (every other dimension flattened), as f64.
    fn rows(t: &Tensor, dim: usize) -> Rows {
        let t = t.to_dtype(DType::F64).unwrap().transpose(0, dim).unwrap().contiguous().unwrap();
        let n = t.dim(0).unwrap();
        t.reshape((n, ())).unwrap().to_vec2::<f64>().unwrap()
    }

    /// The old row each new row past the first `old` copies (the index Net2Wider drew).
    fn copied(new: &Rows, old: &Rows) -> Vec<usize> {
        assert_eq!(&new[..old.len()], &old[..], "the old channels stay first");
        new[old.len()..].iter().map(|r| old.iter().position(|o| o == r).expect("a copy of an old row")).collect()
    }

    /// A C=8, 3-cell supernet over max-pool, skip, sep and dil conv at partial channels K.
    fn supernet(k: usize, ops: Option<OpsConfig>) -> DartsSupernet {
        let names = ["max_pool_3x3", "skip_connect", "sep_conv_3x3", "dil_conv_3x3"];
        let ops = ops.unwrap_or_else(|| OpsConfig::Uniform(names.map(String::from).to_vec()));
        let cfg =
            DartsSupernetConfig { channels: 8, layers: 3, partial_channels: k, ops: Some(ops), ..Default::default() };
        DartsSupernet::new(cfg, 3, DType::F32, &Device::Cpu).unwrap()
    }

    use crate::model_config::OpsConfig;

    /// Widening K = 4 → 2 after dropping one op per edge: everything outside the ops and the
    /// old channels of every kept op stay; each new channel copies one old channel, and the
    /// coupled parameters copy the same one (depthwise output → pointwise input, pointwise
    /// output → batch norm, FactorizedReduce's convolutions → its batch norm at both indices in
    /// turn); every momentum grows with its weight's indices; the same seed gives the same net.
    #[test]
    fn widening_keeps_old_channels_and_copies_coupled_channels_alike() {
        let old = supernet(4, None);
        let new = supernet(2, Some(old.prune_ops(1).unwrap()));
        // Distinct running statistics, and momentum = 3 × the weight (so that it tells whether
        // it grew with the weight's indices).
        let mut state = NamedState::new();
        for (k, p) in old.weights().params().into_iter().enumerate() {
            let v = p.value().unwrap();
            let (v, m) = match p.kind {
                nas_core::params::ParamKind::Buffer => ((v.ones_like().unwrap() * k as f64).unwrap()
                    + Tensor::arange(0f32, v.elem_count() as f32, v.device()).unwrap().reshape(v.shape()).unwrap())
                .map(|v| (v, None))
                .unwrap(),
                nas_core::params::ParamKind::Weight => ((v.clone()), Some((v * 3.0).unwrap())),
            };
            state.insert(p.name.clone(), (v, m));
        }
        let widen = |seed| new.widen_from(&old, &state, &mut rng::stream(seed, Purpose::Widen, 1, 0)).unwrap();
        let out = widen(1);
        let named = |k: &str| out.get(k).unwrap_or_else(|| panic!("{k}"));
        let cols = column_map(&old.edge_ops(), &new.edge_ops()).unwrap();
        let (mut fr, mut convs, mut pools) = (0, 0, 0);
        for p in new.weights().params() {
            let (v, m) = named(&p.name);
            assert_eq!(v.dims(), p.dims(), "{}", p.name);
            if let Some(m) = m {
                let diff =
                    (m - (v * 3.0).unwrap()).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
                assert!(diff < 1e-6, "{}: momentum grown apart from the weight", p.name);
            }
            let Some((i, e, c, rest)) = op_param(&p.name) else {
                assert_eq!(rows(v, 0), rows(&state[&p.name].0, 0), "{} carried as it is", p.name);
                continue;
            };
            // Cells 1 and 2 of 3 reduce (at L/3 and 2L/3).
            let t = usize::from([1, 2].contains(&i));
            let old_name = format!("cells.{i}._ops.{e}._ops.{}.{rest}", cols[t][e][c]);
            let o = &state[&old_name].0;
            let op = format!("cells.{i}._ops.{e}._ops.{c}");
            let old_op = format!("cells.{i}._ops.{e}._ops.{}", cols[t][e][c]);
            match rest {
                // Depthwise filter → pointwise input → pointwise output → batch norm.
                "op.1.weight" | "op.5.weight" => {
                    convs += 1;
                    let f: usize = rest[3..4].parse().unwrap();
                    let a = copied(&rows(v, 0), &rows(o, 0));
                    let pw = format!("op.{}.weight", f + 1);
                    let (pw_new, pw_old) = (&named(&format!("{op}.{pw}")).0, &state[&format!("{old_op}.{pw}")].0);
                    // The pointwise filter's new input columns are the old columns at a.
                    let (cn, co) = (rows(pw_new, 1), rows(pw_old, 1));
                    let old_in = co.len();
                    for (j, &src) in a.iter().enumerate() {
                        assert_eq!(&cn[old_in + j][..co[src].len()], &co[src][..], "{op}.{pw} input {j}");
                    }
                    // Its new output rows copy old rows; the batch norm copies the same ones.
                    let b: Vec<usize> = rows(pw_new, 0)[pw_old.dim(0).unwrap()..]
                        .iter()
                        .map(|r| rows(pw_old, 0).iter().position(|o| r.starts_with(o)).expect("an old output row"))
                        .collect();
                    let bn = format!("op.{}.running_mean", f + 2);
                    let (bn_new, bn_old) = (&named(&format!("{op}.{bn}")).0, &state[&format!("{old_op}.{bn}")].0);
                    assert_eq!(copied(&rows(bn_new, 0), &rows(bn_old, 0)), b, "{op}.{bn}");
                }
                "conv_1.weight" => {
                    fr += 1;
                    let out_idx = |conv: &str| {
                        let (n, o) = (&named(&format!("{op}.{conv}")).0, &state[&format!("{old_op}.{conv}")].0);
                        let (rn, ro) = (rows(n, 0), rows(o, 0));
                        assert_eq!(rn[..ro.len()].iter().map(|r| r[..ro[0].len()].to_vec()).collect::<Rows>(), ro);
                        rn[ro.len()..]
                            .iter()
                            .map(|r| ro.iter().position(|o| r.starts_with(o)).expect("an old output row"))
                            .collect::<Vec<usize>>()
                    };
                    let mut idx = out_idx("conv_1.weight");
                    idx.extend(out_idx("conv_2.weight"));
                    let (bn_new, bn_old) =
                        (&named(&format!("{op}.bn.running_mean")).0, &state[&format!("{old_op}.bn.running_mean")].0);
                    assert_eq!(copied(&rows(bn_new, 0), &rows(bn_old, 0)), idx, "{op}.bn: conv_1's, then conv_2's");
                }
                "1.running_mean" => {
                    pools += 1;
                    let idx = copied(&rows(v, 0), &rows(o, 0));
                    let var = &named(&format!("{op}.1.running_var")).0;
                    assert_eq!(copied(&rows(var, 0), &rows(&state[&format!("{old_op}.1.running_var")].0, 0)), idx);
                }
                _ => {}
            }
        }
        assert!(fr > 0 && convs > 0 && pools > 0, "every rule ran: {fr} {convs} {pools}");
        // The same stream draws the same copies; another draws others.
        let again = widen(1);
        let other = widen(2);
        let flat = |s: &NamedState| -> Vec<f64> {
            let mut names: Vec<&String> = s.keys().collect();
            names.sort();
            names.into_iter().flat_map(|n| rows(&s[n].0, 0).concat()).collect()
        };
        assert_eq!(flat(&out), flat(&again));
        assert_ne!(flat(&out), flat(&other));
    }
}
