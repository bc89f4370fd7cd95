//! Named parameters. A `ParamStore` keeps every trainable weight and every buffer (batch-norm
//! running statistics) as a candle `Var`, in creation order, under dotted names built with
//! `ParamBuilder::pp` — the same names PyTorch's `state_dict` uses for the same module tree, so
//! checkpoints and golden values move between the two by name. Weights and architecture
//! parameters live in separate stores; buffers are never handed to an optimiser.

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

#[derive(Debug, Clone)]
pub struct Param {
    pub name: String,
    pub var: Var,
    pub kind: ParamKind,
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

    /// The trainable weights in creation order.
    pub fn weights(&self) -> Vec<Var> {
        self.lock().params.iter().filter(|p| p.kind == ParamKind::Weight).map(|p| p.var.clone()).collect()
    }

    pub fn get(&self, name: &str) -> Option<Var> {
        let inner = self.lock();
        inner.index.get(name).map(|&i| inner.params[i].var.clone())
    }

    /// Number of scalar weights (buffers excluded).
    pub fn num_weight_elements(&self) -> usize {
        self.lock().params.iter().filter(|p| p.kind == ParamKind::Weight).map(|p| p.var.elem_count()).sum()
    }

    /// Copies values into the parameters by name. Every parameter of the store must be present
    /// with the same shape; `skip_missing_buffers` tolerates absent running statistics.
    pub fn load(&self, tensors: &HashMap<String, Tensor>, skip_missing_buffers: bool) -> Result<()> {
        for p in self.params() {
            let Some(t) = tensors.get(&p.name) else {
                if skip_missing_buffers && p.kind == ParamKind::Buffer {
                    continue;
                }
                return Err(Error::Invalid(format!("missing tensor `{}`", p.name)));
            };
            if t.shape() != p.var.shape() {
                return Err(Error::Invalid(format!(
                    "tensor `{}` has shape {:?}, expected {:?}",
                    p.name,
                    t.dims(),
                    p.var.dims()
                )));
            }
            let t = t.to_dtype(p.var.dtype())?.to_device(p.var.device())?;
            p.var.set(&t)?;
        }
        Ok(())
    }

    /// Every parameter's current value (shared, not copied) named `prefix` + its name, for a
    /// checkpoint.
    pub fn named_tensors(&self, prefix: &str) -> Vec<(String, Tensor)> {
        self.params().into_iter().map(|p| (format!("{prefix}{}", p.name), p.var.as_tensor().clone())).collect()
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
        let n = shape.elem_count();
        let values: Vec<f64> = match init {
            Init::Const(c) => vec![c; n],
            Init::Uniform(b) => (0..n).map(|_| inner.rng.random_range(-b..b)).collect(),
            Init::Normal(s) => (0..n)
                .map(|_| {
                    let z: f64 = StandardNormal.sample(&mut inner.rng);
                    s * z
                })
                .collect(),
        };
        let t = Tensor::from_vec(values, shape, &Device::Cpu)?.to_dtype(dtype)?.to_device(device)?;
        let var = Var::from_tensor(&t)?;
        let idx = inner.params.len();
        inner.params.push(Param { name: name.clone(), var: var.clone(), kind });
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
        let w = store.get("cells.0.weight").unwrap().as_tensor().flatten_all()?.to_vec1::<f32>()?;
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
        assert_eq!(store.get("w").unwrap().as_tensor().sum_all()?.to_scalar::<f32>()?, 4.0);
        Ok(())
    }
}
