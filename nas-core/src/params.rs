//! Named parameters. A `ParamStore` keeps every trainable weight and every buffer (batch-norm
//! running statistics) as a candle `Var`, in creation order, under dotted names built with
//! `ParamBuilder::pp` — the same names PyTorch's `state_dict` uses for the same module tree, so
//! checkpoints and golden values move between the two by name. Weights and architecture
//! parameters live in separate stores; buffers are never handed to an optimiser.
//!
//! Weights that one op always uses together can be packed (`ParamBuilder::packed`): one flat
//! `Var` holds them end to end and each keeps its own name and shape as a piece of it. The op
//! then takes the flat tensor as it is (no concatenation per step, no split of its gradient),
//! and the optimiser sees one parameter where there were several; checkpoints still store each
//! piece under its own name.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use candle_core::{DType, Device, Shape, Tensor, Var};
use rand::Rng as _;
use rand_distr::{Distribution, StandardNormal};

use crate::error::{Error, Result};
use crate::rng::{self, Purpose, Rng};

/// Whether a parameter is optimised (weight) or only carried along (buffer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamKind {
    Weight,
    Buffer,
}

/// How a new parameter is filled. Values are drawn on the host from the store's seeded stream,
/// in creation order, so a model is reproducible from its seed on any device.
#[derive(Debug, Clone, Copy)]
pub enum Init {
    Const(f64),
    /// U(−bound, bound); PyTorch's default for conv and linear layers is bound = 1/√fan_in.
    Uniform(f64),
    /// N(0, std²).
    Normal(f64),
}

/// A named parameter: a whole `Var`, or a piece of a packed one.
#[derive(Debug, Clone)]
pub struct Param {
    pub name: String,
    /// The variable holding the parameter (the flat one for a piece).
    pub var: Var,
    pub kind: ParamKind,
    /// For a piece of a packed variable: its offset in the flat variable and its shape.
    pub piece: Option<(usize, Shape)>,
}

impl Param {
    /// The parameter's current value (a view into the variable; no copy).
    pub fn value(&self) -> candle_core::Result<Tensor> {
        match &self.piece {
            None => Ok(self.var.as_tensor().clone()),
            Some((off, shape)) => self.var.as_tensor().narrow(0, *off, shape.elem_count())?.reshape(shape),
        }
    }

    /// The parameter's gradient in `grads` (the matching piece of its variable's gradient).
    pub fn grad(&self, grads: &candle_core::backprop::GradStore) -> candle_core::Result<Option<Tensor>> {
        let Some(g) = grads.get(self.var.as_tensor()) else { return Ok(None) };
        match &self.piece {
            None => Ok(Some(g.clone())),
            Some((off, shape)) => Ok(Some(g.narrow(0, *off, shape.elem_count())?.reshape(shape)?)),
        }
    }

    pub fn elem_count(&self) -> usize {
        match &self.piece {
            None => self.var.elem_count(),
            Some((_, shape)) => shape.elem_count(),
        }
    }

    pub fn dims(&self) -> &[usize] {
        match &self.piece {
            None => self.var.dims(),
            Some((_, shape)) => shape.dims(),
        }
    }

    /// `t` as a value of this parameter: its shape checked, in the variable's dtype and on its
    /// device.
    fn conform(&self, t: &Tensor) -> Result<Tensor> {
        if t.dims() != self.dims() {
            return Err(Error::Invalid(format!(
                "tensor `{}` has shape {:?}, expected {:?}",
                self.name,
                t.dims(),
                self.dims()
            )));
        }
        Ok(t.to_dtype(self.var.dtype())?.to_device(self.var.device())?)
    }

    /// Whether this entry stands for its variable in the list of variables (a whole variable,
    /// or the first piece of a packed one).
    fn owns_var(&self) -> bool {
        self.piece.as_ref().is_none_or(|(off, _)| *off == 0)
    }
}

struct Inner {
    params: Vec<Param>,
    index: HashMap<String, usize>,
    rng: Rng,
}

/// An ordered, shareable collection of named `Var`s.
#[derive(Clone)]
pub struct ParamStore {
    inner: Arc<Mutex<Inner>>,
}

impl ParamStore {
    /// A new store whose initialisers draw from the `Init` stream of `seed`; `stream` tells
    /// apart several stores made from one seed (weights, architecture parameters).
    pub fn new(seed: u64, stream: u64) -> Self {
        let inner =
            Inner { params: Vec::new(), index: HashMap::new(), rng: rng::stream(seed, Purpose::Init, stream, 0) };
        Self { inner: Arc::new(Mutex::new(inner)) }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn builder(&self, dtype: DType, device: &Device) -> ParamBuilder {
        ParamBuilder { store: self.clone(), path: Vec::new(), dtype, device: device.clone() }
    }

    /// Every parameter, weights and buffers, in creation order.
    pub fn params(&self) -> Vec<Param> {
        self.lock().params.clone()
    }

    /// The trainable weight variables in creation order (a packed variable once).
    pub fn weights(&self) -> Vec<Var> {
        self.lock()
            .params
            .iter()
            .filter(|p| p.kind == ParamKind::Weight && p.owns_var())
            .map(|p| p.var.clone())
            .collect()
    }

    /// The buffer variables (batch-norm running statistics) in creation order.
    pub fn buffers(&self) -> Vec<Var> {
        self.lock().params.iter().filter(|p| p.kind == ParamKind::Buffer).map(|p| p.var.clone()).collect()
    }

    /// The parameter called `name`.
    pub fn get(&self, name: &str) -> Option<Param> {
        let inner = self.lock();
        inner.index.get(name).map(|&i| inner.params[i].clone())
    }

    /// Number of scalar weights (buffers excluded).
    pub fn num_weight_elements(&self) -> usize {
        self.lock().params.iter().filter(|p| p.kind == ParamKind::Weight).map(|p| p.elem_count()).sum()
    }

    /// Copies values into the parameters by name. Every parameter of the store must be present
    /// with the same shape; `skip_missing_buffers` tolerates absent running statistics.
    pub fn load(&self, tensors: &HashMap<String, Tensor>, skip_missing_buffers: bool) -> Result<()> {
        // The pieces of the packed variable being assembled, flattened, in order.
        let mut pieces: Vec<Tensor> = Vec::new();
        let params = self.params();
        for (i, p) in params.iter().enumerate() {
            let Some(t) = tensors.get(&p.name) else {
                if skip_missing_buffers && p.kind == ParamKind::Buffer {
                    continue;
                }
                return Err(Error::Invalid(format!("missing tensor `{}`", p.name)));
            };
            let t = p.conform(t)?;
            if p.piece.is_none() {
                p.var.set(&t)?;
                continue;
            }
            pieces.push(t.flatten_all()?);
            let last = params.get(i + 1).is_none_or(|n| n.piece.is_none() || n.owns_var());
            if last {
                p.var.set(&Tensor::cat(&pieces, 0)?)?;
                pieces.clear();
            }
        }
        Ok(())
    }

    /// Per-variable tensors laid out like the weight variables (`weights()`' order and shapes,
    /// an optimiser's buffers) cut into the pieces of each parameter, by name; a variable
    /// without a tensor gives nothing.
    pub fn split_by_param(&self, per_var: &[Option<Tensor>]) -> Result<Vec<(String, Tensor)>> {
        let mut out = Vec::new();
        let mut var = None;
        for p in self.params().into_iter().filter(|p| p.kind == ParamKind::Weight) {
            if p.owns_var() {
                var = Some(var.map_or(0, |v: usize| v + 1));
            }
            let i = var.ok_or_else(|| Error::Invalid("a packed piece before its variable".to_string()))?;
            let Some(t) = per_var.get(i).ok_or_else(|| {
                Error::Invalid(format!("{} per-variable tensors for more weight variables", per_var.len()))
            })?
            else {
                continue;
            };
            let piece = match &p.piece {
                None => t.clone(),
                Some((off, shape)) => t.narrow(0, *off, shape.elem_count())?.reshape(shape)?,
            };
            out.push((p.name, piece));
        }
        Ok(out)
    }

    /// The inverse of `split_by_param`: one tensor per weight variable from its parameters'
    /// pieces in `named`; None for a variable none of whose pieces is there. A variable with only
    /// some of its pieces, or a piece of the wrong shape, is an error.
    pub fn join_by_var(&self, named: &HashMap<String, Tensor>) -> Result<Vec<Option<Tensor>>> {
        let weights: Vec<Param> = self.params().into_iter().filter(|p| p.kind == ParamKind::Weight).collect();
        let mut out = Vec::new();
        let mut k = 0;
        while k < weights.len() {
            // The parameters of the variable starting at k: itself, or its packed pieces.
            let end = if weights[k].piece.is_none() {
                k + 1
            } else {
                k + 1 + weights[k + 1..].iter().take_while(|p| !p.owns_var()).count()
            };
            let group = &weights[k..end];
            let found: Vec<Option<&Tensor>> = group.iter().map(|p| named.get(&p.name)).collect();
            if found.iter().all(Option::is_none) {
                out.push(None);
            } else {
                let mut pieces = Vec::with_capacity(group.len());
                for (p, t) in group.iter().zip(found) {
                    let t = t.ok_or_else(|| Error::Invalid(format!("missing tensor `{}`", p.name)))?;
                    pieces.push(p.conform(t)?);
                }
                out.push(Some(match group[0].piece {
                    None => pieces.remove(0),
                    Some(_) => Tensor::cat(
                        &pieces.iter().map(|t| t.flatten_all()).collect::<candle_core::Result<Vec<_>>>()?,
                        0,
                    )?,
                }));
            }
            k = end;
        }
        Ok(out)
    }

    /// Every parameter's current value (shared, not copied) named `prefix` + its name, for a
    /// checkpoint.
    pub fn named_tensors(&self, prefix: &str) -> Vec<(String, Tensor)> {
        self.params()
            .into_iter()
            .map(|p| {
                let v = p.value().unwrap_or_else(|_| p.var.as_tensor().clone());
                (format!("{prefix}{}", p.name), v)
            })
            .collect()
    }

    /// Every parameter's gradient in `grads` by name (pieces of packed variables included).
    pub fn named_grads(&self, grads: &candle_core::backprop::GradStore) -> Result<Vec<(String, Tensor)>> {
        let mut out = Vec::new();
        for p in self.params() {
            if let Some(g) = p.grad(grads)? {
                out.push((p.name.clone(), g));
            }
        }
        Ok(out)
    }

    /// Draws the values of a parameter from the store's stream.
    fn draw(inner: &mut Inner, n: usize, init: Init) -> Vec<f64> {
        match init {
            Init::Const(c) => vec![c; n],
            Init::Uniform(b) => (0..n).map(|_| inner.rng.random_range(-b..b)).collect(),
            Init::Normal(s) => (0..n)
                .map(|_| {
                    let z: f64 = StandardNormal.sample(&mut inner.rng);
                    s * z
                })
                .collect(),
        }
    }

    /// One flat weight variable holding the named `pieces` end to end, drawn in order.
    fn insert_packed(&self, pieces: Vec<(String, Shape, Init)>, dtype: DType, device: &Device) -> Result<Var> {
        let mut inner = self.lock();
        let mut values = Vec::new();
        for (name, shape, init) in &pieces {
            if inner.index.contains_key(name) {
                return Err(Error::Invalid(format!("parameter `{name}` defined twice")));
            }
            let v = Self::draw(&mut inner, shape.elem_count(), *init);
            values.extend(v);
        }
        let n = values.len();
        let var = Var::from_tensor(&Tensor::from_vec(values, n, &Device::Cpu)?.to_dtype(dtype)?.to_device(device)?)?;
        let mut off = 0;
        for (name, shape, _) in pieces {
            let idx = inner.params.len();
            let len = shape.elem_count();
            inner.params.push(Param {
                name: name.clone(),
                var: var.clone(),
                kind: ParamKind::Weight,
                piece: Some((off, shape)),
            });
            inner.index.insert(name, idx);
            off += len;
        }
        Ok(var)
    }

    fn insert(
        &self,
        name: String,
        shape: Shape,
        init: Init,
        kind: ParamKind,
        dtype: DType,
        device: &Device,
    ) -> Result<Var> {
        let mut inner = self.lock();
        if inner.index.contains_key(&name) {
            return Err(Error::Invalid(format!("parameter `{name}` defined twice")));
        }
        let values = Self::draw(&mut inner, shape.elem_count(), init);
        let t = Tensor::from_vec(values, shape, &Device::Cpu)?.to_dtype(dtype)?.to_device(device)?;
        let var = Var::from_tensor(&t)?;
        let idx = inner.params.len();
        inner.params.push(Param { name: name.clone(), var: var.clone(), kind, piece: None });
        inner.index.insert(name, idx);
        Ok(var)
    }
}

/// Creates parameters under a dotted path, like candle's `VarBuilder`.
#[derive(Clone)]
pub struct ParamBuilder {
    store: ParamStore,
    path: Vec<String>,
    dtype: DType,
    device: Device,
}

impl ParamBuilder {
    /// Pushes a path segment (`vb.pp("cells").pp(3)`).
    pub fn pp(&self, segment: impl ToString) -> Self {
        let mut b = self.clone();
        b.path.push(segment.to_string());
        b
    }

    fn full_name(&self, name: &str) -> String {
        let mut s = self.path.join(".");
        if !s.is_empty() {
            s.push('.');
        }
        s.push_str(name);
        s
    }

    /// A trainable weight; the returned tensor is the `Var`'s own, so gradients find it.
    pub fn weight(&self, name: &str, shape: impl Into<Shape>, init: Init) -> Result<Tensor> {
        let var =
            self.store.insert(self.full_name(name), shape.into(), init, ParamKind::Weight, self.dtype, &self.device)?;
        Ok(var.as_tensor().clone())
    }

    /// Weights that one op uses together, packed into one flat variable: `pieces` are (name
    /// relative to this builder, shape, init), drawn in order. Returns the flat tensor (the
    /// variable's own, so gradients find it).
    pub fn packed(&self, pieces: &[(String, Shape, Init)]) -> Result<Tensor> {
        let full = pieces.iter().map(|(n, s, i)| (self.full_name(n), s.clone(), *i)).collect();
        Ok(self.store.insert_packed(full, self.dtype, &self.device)?.as_tensor().clone())
    }

    /// A buffer (running statistics): saved and loaded, never optimised or perturbed.
    pub fn buffer(&self, name: &str, shape: impl Into<Shape>, init: Init) -> Result<Var> {
        self.store.insert(self.full_name(name), shape.into(), init, ParamKind::Buffer, self.dtype, &self.device)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_order_and_kinds() -> Result<()> {
        let store = ParamStore::new(0, 0);
        let b = store.builder(DType::F32, &Device::Cpu);
        b.pp("cells").pp(0).weight("weight", (2, 3), Init::Uniform(0.5))?;
        b.pp("bn").buffer("running_mean", 3, Init::Const(0.0))?;
        b.weight("bias", 3, Init::Const(1.0))?;
        let names: Vec<_> = store.params().into_iter().map(|p| (p.name, p.kind)).collect();
        assert_eq!(
            names,
            vec![
                ("cells.0.weight".to_string(), ParamKind::Weight),
                ("bn.running_mean".to_string(), ParamKind::Buffer),
                ("bias".to_string(), ParamKind::Weight),
            ]
        );
        assert_eq!(store.weights().len(), 2);
        assert_eq!(store.num_weight_elements(), 9);
        assert!(b.weight("bias", 3, Init::Const(0.0)).is_err());
        let w = store.get("cells.0.weight").unwrap().value()?.flatten_all()?.to_vec1::<f32>()?;
        assert!(w.iter().all(|v| v.abs() <= 0.5) && w.iter().any(|v| *v != w[0]));
        Ok(())
    }

    #[test]
    fn same_seed_same_values() -> Result<()> {
        let make = |seed| -> Result<Vec<f32>> {
            let store = ParamStore::new(seed, 0);
            let t = store.builder(DType::F32, &Device::Cpu).weight("w", 16, Init::Normal(1.0))?;
            Ok(t.to_vec1()?)
        };
        assert_eq!(make(1)?, make(1)?);
        assert_ne!(make(1)?, make(2)?);
        Ok(())
    }

    #[test]
    fn load_checks_names_and_shapes() -> Result<()> {
        let store = ParamStore::new(0, 0);
        store.builder(DType::F32, &Device::Cpu).weight("w", (2, 2), Init::Const(0.0))?;
        let mut m = HashMap::new();
        assert!(store.load(&m, false).is_err());
        m.insert("w".to_string(), Tensor::ones(3, DType::F32, &Device::Cpu)?);
        assert!(store.load(&m, false).is_err());
        m.insert("w".to_string(), Tensor::ones((2, 2), DType::F32, &Device::Cpu)?);
        store.load(&m, false)?;
        assert_eq!(store.get("w").unwrap().value()?.sum_all()?.to_scalar::<f32>()?, 4.0);
        Ok(())
    }

    /// An optimiser's per-variable buffers cut into named pieces and joined back give the same
    /// tensors; the pieces carry the values at their offsets; a partial variable is an error.
    #[test]
    fn split_by_param_and_join_by_var_are_inverse() -> Result<()> {
        let store = ParamStore::new(0, 0);
        let b = store.builder(DType::F64, &Device::Cpu);
        b.weight("a", 2, Init::Const(0.0))?;
        b.buffer("running", 2, Init::Const(1.0))?;
        b.packed(&[
            ("p.x".to_string(), Shape::from((2, 2)), Init::Const(0.0)),
            ("p.y".to_string(), 3.into(), Init::Const(0.0)),
        ])?;
        b.weight("c", 1, Init::Const(0.0))?;
        let dev = Device::Cpu;
        let per_var = vec![Some(Tensor::new(&[1.0f64, 2.0], &dev)?), Some(Tensor::arange(0.0f64, 7.0, &dev)?), None];
        let named = store.split_by_param(&per_var)?;
        let names: Vec<&str> = named.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["a", "p.x", "p.y"]);
        assert_eq!(named[1].1.to_vec2::<f64>()?, [[0.0, 1.0], [2.0, 3.0]]);
        assert_eq!(named[2].1.to_vec1::<f64>()?, [4.0, 5.0, 6.0]);
        let map: HashMap<String, Tensor> = named.into_iter().collect();
        let back = store.join_by_var(&map)?;
        assert_eq!(back.len(), 3);
        assert!(back[2].is_none());
        for (got, want) in back.iter().zip(&per_var).take(2) {
            assert_eq!(got.as_ref().unwrap().to_vec1::<f64>()?, want.as_ref().unwrap().to_vec1::<f64>()?);
        }
        let mut partial = map.clone();
        partial.remove("p.y");
        assert!(store.join_by_var(&partial).unwrap_err().to_string().contains("p.y"));
        Ok(())
    }

    /// Packed pieces keep their names, shapes, values and draw order; the optimiser sees one
    /// variable; load writes each piece by name and a gradient splits back into the pieces.
    #[test]
    fn packed_pieces_behave_like_separate_parameters() -> Result<()> {
        let draw = |packed: bool| -> Result<ParamStore> {
            let store = ParamStore::new(3, 0);
            let b = store.builder(DType::F64, &Device::Cpu);
            b.weight("first", 2, Init::Uniform(1.0))?;
            let pieces = [("op.1.weight", Shape::from((2, 3))), ("op.2.weight", Shape::from(4))];
            if packed {
                b.packed(&pieces.map(|(n, s)| (n.to_string(), s, Init::Uniform(0.5))))?;
            } else {
                for (n, s) in pieces {
                    b.weight(n, s, Init::Uniform(0.5))?;
                }
            }
            b.buffer("running", 2, Init::Const(1.0))?;
            Ok(store)
        };
        let (sep, packed) = (draw(false)?, draw(true)?);
        assert_eq!(packed.weights().len(), 2);
        assert_eq!(packed.num_weight_elements(), sep.num_weight_elements());
        type Named = Vec<(String, Vec<usize>, Vec<f64>)>;
        let values = |s: &ParamStore| -> Result<Named> {
            s.named_tensors("")
                .into_iter()
                .map(|(n, t)| Ok((n, t.dims().to_vec(), t.flatten_all()?.to_vec1::<f64>()?)))
                .collect()
        };
        assert_eq!(values(&packed)?, values(&sep)?);
        let mut m: HashMap<String, Tensor> = sep.named_tensors("").into_iter().collect();
        m.insert("op.2.weight".into(), Tensor::new(&[9.0f64, 8.0, 7.0, 6.0], &Device::Cpu)?);
        packed.load(&m, false)?;
        let p2 = packed.get("op.2.weight").unwrap();
        assert_eq!(p2.value()?.to_vec1::<f64>()?, vec![9.0, 8.0, 7.0, 6.0]);
        let flat = packed.weights()[1].clone();
        let loss = (flat.as_tensor() * Tensor::arange(0f64, 10.0, &Device::Cpu)?)?.sum_all()?;
        let g = packed.named_grads(&loss.backward()?)?;
        let g2 = g.iter().find(|(n, _)| n == "op.2.weight").unwrap();
        assert_eq!(g2.1.to_vec1::<f64>()?, vec![6.0, 7.0, 8.0, 9.0]);
        Ok(())
    }
}
