//! Writing a network as an ONNX model: a graph builder the layers add their nodes to
//! (`Conv2d::onnx`, `BatchNorm2d::onnx`, …, each next to its forward pass), and the model
//! file around the graph (opset 13, one float32 input with a symbolic batch dimension, one
//! output, string metadata).
//!
//! Names follow the network's state_dict: a layer adds its weights under the scope its parent
//! opened (`cells.3._ops.2.op.1.weight`), and a node's output is named after its scope and
//! op type (`cells.3._ops.2/Conv_4`).

pub mod proto;

use std::collections::HashSet;

use candle_core::{DType, Tensor};
use prost::Message as _;

use proto::*;

/// The operator set the nodes are written for.
pub const OPSET: i64 = 13;
/// The IR version of opset 13's release (ONNX 1.8).
const IR_VERSION: i64 = 7;

/// A node attribute.
#[derive(Debug, Clone)]
pub enum Attr {
    Int(&'static str, i64),
    Ints(&'static str, Vec<i64>),
    Float(&'static str, f32),
    /// A tensor attribute of float32 values with its dims (ConstantOfShape's value).
    Floats(&'static str, Vec<f32>, Vec<i64>),
}

impl Attr {
    fn proto(self) -> AttributeProto {
        let base = |name: &str, r#type| AttributeProto { name: name.into(), r#type, ..Default::default() };
        match self {
            Attr::Int(n, i) => AttributeProto { i, ..base(n, ATTR_INT) },
            Attr::Ints(n, ints) => AttributeProto { ints, ..base(n, ATTR_INTS) },
            Attr::Float(n, f) => AttributeProto { f, ..base(n, ATTR_FLOAT) },
            Attr::Floats(n, v, dims) => AttributeProto { t: Some(f32_tensor("", &v, dims)), ..base(n, ATTR_TENSOR) },
        }
    }
}

fn f32_tensor(name: &str, values: &[f32], dims: Vec<i64>) -> TensorProto {
    TensorProto {
        dims,
        data_type: FLOAT,
        name: name.into(),
        raw_data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
    }
}

/// A dimension of the graph's input or output: a fixed size or a named symbol (the batch).
#[derive(Debug, Clone)]
pub enum Dim {
    Fixed(usize),
    Symbol(&'static str),
}

/// The nodes and weights of a graph as the layers add them.
#[derive(Debug, Default)]
pub struct Graph {
    nodes: Vec<NodeProto>,
    initializers: Vec<TensorProto>,
    names: HashSet<String>,
    scope: Vec<String>,
}

impl Graph {
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs `f` with `part` added to the name scope.
    pub fn scoped<T>(&mut self, part: impl std::fmt::Display, f: impl FnOnce(&mut Self) -> T) -> T {
        self.scope.push(part.to_string());
        let out = f(self);
        self.scope.pop();
        out
    }

    /// `name` under the current scope, made unique among the graph's names.
    fn unique(&mut self, name: &str, sep: char) -> String {
        let base =
            if self.scope.is_empty() { name.to_string() } else { format!("{}{sep}{name}", self.scope.join(".")) };
        let mut out = base.clone();
        let mut k = 1;
        while !self.names.insert(out.clone()) {
            out = format!("{base}_{k}");
            k += 1;
        }
        out
    }

    /// Adds `t` (any float dtype, written as float32) as a weight named `name` under the scope;
    /// returns the name nodes refer to it by.
    pub fn weight(&mut self, name: &str, t: &Tensor) -> crate::Result<String> {
        let values = t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        let dims = t.dims().iter().map(|&d| d as i64).collect();
        Ok(self.constant(name, &values, dims))
    }

    /// A float32 constant of `dims`.
    pub fn constant(&mut self, name: &str, values: &[f32], dims: Vec<i64>) -> String {
        let name = self.unique(name, '.');
        self.initializers.push(f32_tensor(&name, values, dims));
        name
    }

    /// An int64 constant (the starts, ends and axes of a Slice).
    pub fn constant_i64(&mut self, name: &str, values: &[i64]) -> String {
        let name = self.unique(name, '.');
        self.initializers.push(TensorProto {
            dims: vec![values.len() as i64],
            data_type: INT64,
            name: name.clone(),
            raw_data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        });
        name
    }

    /// A node of `op_type` on `inputs`; returns its (one) output's name.
    pub fn node(&mut self, op_type: &str, inputs: &[&str], attrs: Vec<Attr>) -> String {
        let out = self.unique(op_type, '/');
        self.nodes.push(NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![out.clone()],
            name: out.clone(),
            op_type: op_type.into(),
            attribute: attrs.into_iter().map(Attr::proto).collect(),
        });
        out
    }

    pub fn relu(&mut self, x: &str) -> String {
        self.node("Relu", &[x], vec![])
    }

    pub fn add(&mut self, a: &str, b: &str) -> String {
        self.node("Add", &[a, b], vec![])
    }

    /// A 2-D convolution of `x` with the weight named `w` (no bias).
    pub fn conv(&mut self, x: &str, w: &str, k: usize, p: ConvParams) -> String {
        let ConvParams { stride, padding, dilation, groups } = p;
        let (s, pd, d) = (stride as i64, padding as i64, dilation as i64);
        self.node(
            "Conv",
            &[x, w],
            vec![
                Attr::Ints("kernel_shape", vec![k as i64; 2]),
                Attr::Ints("strides", vec![s, s]),
                Attr::Ints("pads", vec![pd; 4]),
                Attr::Ints("dilations", vec![d, d]),
                Attr::Int("group", groups as i64),
            ],
        )
    }

    /// A k×k pooling window (`MaxPool` or `AveragePool`, padding left out of the average's
    /// count).
    pub fn pool(&mut self, op_type: &str, x: &str, k: usize, stride: usize, padding: usize) -> String {
        let p = padding as i64;
        let mut attrs = vec![
            Attr::Ints("kernel_shape", vec![k as i64; 2]),
            Attr::Ints("strides", vec![stride as i64; 2]),
            Attr::Ints("pads", vec![p; 4]),
        ];
        if op_type == "AveragePool" {
            attrs.push(Attr::Int("count_include_pad", 0));
        }
        self.node(op_type, &[x], attrs)
    }

    /// x[:, :, start::step, start::step].
    pub fn subsample(&mut self, x: &str, start: usize, step: usize) -> String {
        if (start, step) == (0, 1) {
            return x.to_string();
        }
        let starts = self.constant_i64("starts", &[start as i64; 2]);
        let ends = self.constant_i64("ends", &[i64::MAX; 2]);
        let axes = self.constant_i64("axes", &[2, 3]);
        let steps = self.constant_i64("steps", &[step as i64; 2]);
        self.node("Slice", &[x, &starts, &ends, &axes, &steps], vec![])
    }

    /// Zeros of `x`'s shape (no NaN of `x` passes, unlike x·0).
    pub fn zeros_like(&mut self, x: &str) -> String {
        let shape = self.node("Shape", &[x], vec![]);
        self.node("ConstantOfShape", &[&shape], vec![Attr::Floats("value", vec![0.0], vec![1])])
    }

    pub fn concat(&mut self, xs: &[String], axis: i64) -> String {
        if let [x] = xs {
            return x.clone();
        }
        let inputs: Vec<&str> = xs.iter().map(String::as_str).collect();
        self.node("Concat", &inputs, vec![Attr::Int("axis", axis)])
    }

    /// The model file: this graph with `input` (float32 of `input_dims`) and `output` (float32
    /// of `output_dims`), the producer, a description and string metadata.
    pub fn into_model(self, io: ModelIo<'_>, doc: &str, metadata: &[(String, String)]) -> Vec<u8> {
        let value = |name: &str, dims: &[Dim]| ValueInfoProto {
            name: name.into(),
            r#type: Some(TypeProto {
                tensor_type: Some(TypeProtoTensor {
                    elem_type: FLOAT,
                    shape: Some(TensorShapeProto {
                        dim: dims
                            .iter()
                            .map(|d| Dimension {
                                value: Some(match d {
                                    Dim::Fixed(n) => DimValue::Value(*n as i64),
                                    Dim::Symbol(s) => DimValue::Param(s.to_string()),
                                }),
                            })
                            .collect(),
                    }),
                }),
            }),
        };
        let model = ModelProto {
            ir_version: IR_VERSION,
            opset_import: vec![OperatorSetIdProto { domain: String::new(), version: OPSET }],
            producer_name: "nas".into(),
            producer_version: env!("CARGO_PKG_VERSION").into(),
            doc_string: doc.into(),
            graph: Some(GraphProto {
                node: self.nodes,
                name: "network".into(),
                initializer: self.initializers,
                input: vec![value(io.input, io.input_dims)],
                output: vec![value(io.output, io.output_dims)],
            }),
            metadata_props: metadata
                .iter()
                .map(|(k, v)| StringStringEntryProto { key: k.clone(), value: v.clone() })
                .collect(),
        };
        model.encode_to_vec()
    }

    /// Renames the node output `from` to `to` (the graph's input and output get fixed names).
    pub fn rename(&mut self, from: &str, to: &str) {
        for n in &mut self.nodes {
            for s in n.input.iter_mut().chain(n.output.iter_mut()) {
                if s == from {
                    *s = to.to_string();
                }
            }
        }
    }

    /// Number of nodes so far.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }
}

/// A convolution's stride, padding, dilation and groups.
#[derive(Debug, Clone, Copy)]
pub struct ConvParams {
    pub stride: usize,
    pub padding: usize,
    pub dilation: usize,
    pub groups: usize,
}

impl ConvParams {
    /// Dense, undilated.
    pub fn dense(stride: usize, padding: usize) -> Self {
        Self { stride, padding, dilation: 1, groups: 1 }
    }
}

/// The graph's input and output tensors.
#[derive(Debug, Clone, Copy)]
pub struct ModelIo<'a> {
    pub input: &'a str,
    pub input_dims: &'a [Dim],
    pub output: &'a str,
    pub output_dims: &'a [Dim],
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_scoped_and_unique() {
        let mut g = Graph::new();
        let a = g.scoped("cells", |g| g.scoped(3, |g| g.constant("weight", &[1.0], vec![1])));
        let b = g.scoped("cells", |g| g.scoped(3, |g| g.constant("weight", &[2.0], vec![1])));
        assert_eq!(a, "cells.3.weight");
        assert_eq!(b, "cells.3.weight_1");
        let r = g.scoped("stem", |g| g.relu("x"));
        assert_eq!(r, "stem/Relu");
        assert_eq!(g.len(), 1);
    }

    #[test]
    fn model_decodes_back() {
        let mut g = Graph::new();
        let w = g.constant("w", &[0.5; 4], vec![1, 1, 2, 2]);
        let y = g.conv("input", &w, 2, ConvParams::dense(1, 0));
        let io = ModelIo {
            input: "input",
            input_dims: &[Dim::Symbol("batch"), Dim::Fixed(1), Dim::Fixed(2), Dim::Fixed(2)],
            output: &y,
            output_dims: &[Dim::Symbol("batch"), Dim::Fixed(1), Dim::Fixed(1), Dim::Fixed(1)],
        };
        let bytes = g.into_model(io, "doc", &[("k".into(), "v".into())]);
        let m = ModelProto::decode(bytes.as_slice()).unwrap();
        assert_eq!(m.opset_import[0].version, OPSET);
        let graph = m.graph.unwrap();
        assert_eq!(graph.node[0].op_type, "Conv");
        assert_eq!(graph.initializer[0].raw_data.len(), 16);
        assert_eq!(m.metadata_props[0].value, "v");
    }
}
