//! ONNX export of a trained network (`nas export`): the evaluation network of the genotype
//! (darts CIFAR and ImageNet networks, the nb201 network) with its trained weights, in
//! evaluation mode (batch norm with its running statistics, no drop path), the auxiliary head
//! left out, as an opset-13 model with a symbolic batch dimension.
//!
//! The model takes what a deploying user has: float32 NCHW images with pixels scaled to
//! [0, 1]. Its first nodes are the run's per-channel normalisation, (x − mean)/std, as the
//! data loader applied it in training; its output is the logits (batch, classes). The class
//! names, the genotype and the normalisation go into the model's metadata.

use std::path::{Path, PathBuf};

use candle_core::Device;
use nas_core::checkpoint::{load_tensors, LoadedTensors};
use nas_core::data::{Dataset, Normalize};
use nas_core::onnx::{Dim, Graph, ModelIo};
use nas_core::run_dir::{RunDir, CHECKPOINT, CONFIG, DATASET, WEIGHTS};
use serde_json::Value;

use crate::config::{TrainConfig, ValidTrainConfig};
use crate::model::EvalModel;
use crate::train::load_data;
use crate::{Error, Result};

/// The model's input and output names.
pub const INPUT: &str = "images";
pub const OUTPUT: &str = "logits";

/// What an exported network needs to know of its data: the normalisation, the image shape
/// (C, H, W), the number of classes and their names (empty when the data names none).
#[derive(Debug, Clone, PartialEq)]
pub struct DataInfo {
    pub normalize: Normalize,
    pub image_shape: (usize, usize, usize),
    pub num_classes: usize,
    pub class_names: Vec<String>,
}

impl DataInfo {
    pub fn of(ds: &Dataset) -> Self {
        Self {
            normalize: ds.normalize.clone(),
            image_shape: ds.train.shape(),
            num_classes: ds.num_classes,
            class_names: ds.class_names.clone(),
        }
    }

    /// From a run's dataset.json; None when it does not record all of it (a run written
    /// before it recorded the normalisation and the image shape).
    fn from_record(v: &Value) -> Option<Self> {
        let shape: [usize; 3] = serde_json::from_value(v.get("image_shape")?.clone()).ok()?;
        Some(Self {
            normalize: serde_json::from_value(v.get("normalize")?.clone()).ok()?,
            image_shape: (shape[0], shape[1], shape[2]),
            num_classes: v.get("num_classes")?.as_u64()? as usize,
            class_names: serde_json::from_value(v.get("class_names")?.clone()).ok()?,
        })
    }
}

/// A trained network, its configuration and what it was trained on.
pub struct Trained {
    pub cfg: ValidTrainConfig,
    pub model: EvalModel,
    pub data: DataInfo,
}

/// The weights file of a `nas train` run directory and the prefix of the network's tensors in
/// it: the final weights, else the last checkpoint.
pub(crate) fn run_weights(dir: &RunDir) -> Result<(PathBuf, &'static str)> {
    if dir.file(WEIGHTS).exists() {
        Ok((dir.file(WEIGHTS), ""))
    } else if dir.file(CHECKPOINT).exists() {
        Ok((dir.file(CHECKPOINT), "weights."))
    } else {
        Err(Error::run_dir(dir.path(), "no weights.safetensors nor checkpoint.safetensors to evaluate"))
    }
}

/// A run directory's configuration, or an error saying it is not a retraining run.
pub(crate) fn run_config(dir: &RunDir) -> Result<TrainConfig> {
    let v: Value = dir.read_json(CONFIG)?;
    if v.get("search").is_some() || v.get("method").is_some() {
        return Err(Error::run_dir(
            dir.path(),
            "this is a search run; retrain its genotype first (nas train --genotype DIR) and use that run",
        ));
    }
    TrainConfig::from_json_value(v).map_err(|e| Error::run_dir(dir.file(CONFIG), e.to_string()))
}

/// The network of `cfg` for `data` with the tensors of `loaded` (read from `path`) under
/// `prefix`.
pub(crate) fn load_model(
    cfg: &ValidTrainConfig,
    data: &DataInfo,
    (path, loaded): (&Path, &LoadedTensors),
    prefix: &str,
    device: &Device,
) -> Result<EvalModel> {
    let task = search_spaces::TaskShape { num_classes: data.num_classes, in_channels: data.image_shape.0 };
    let model = EvalModel::new(&cfg.genotype, &cfg.model, task, cfg.seed, device)?;
    model.weights().load(&loaded.with_prefix(prefix), false).map_err(|e| {
        Error::run_dir(path, format!("{e} (was the network trained on data with the same classes and image size?)"))
    })?;
    Ok(model)
}

impl Trained {
    /// The trained network of a `nas train` run directory, on the CPU. What it was trained on
    /// comes from the run's dataset.json, or from loading its data when that file predates
    /// the fields.
    pub fn from_run(dir: &RunDir) -> Result<Self> {
        let cfg = run_config(dir)?.validate()?;
        let recorded = match dir.file(DATASET).exists() {
            true => DataInfo::from_record(&dir.read_json(DATASET)?),
            false => None,
        };
        let data = match recorded {
            Some(d) => d,
            None => DataInfo::of(&load_data(&cfg, &cfg.data.spec)?.0),
        };
        let (path, prefix) = run_weights(dir)?;
        let model = load_model(&cfg, &data, (&path, &load_tensors(&path, &Device::Cpu)?), prefix, &Device::Cpu)?;
        Ok(Self { cfg, model, data })
    }

    /// The network of `cfg` with the weights of `path` (a weights file, or a checkpoint whose
    /// network tensors are under `weights.`), on the CPU; its data is loaded for the
    /// normalisation, the image shape and the classes.
    pub fn from_weights(cfg: TrainConfig, path: &Path) -> Result<Self> {
        let cfg = cfg.validate()?;
        let data = DataInfo::of(&load_data(&cfg, &cfg.data.spec)?.0);
        let loaded = load_tensors(path, &Device::Cpu)?;
        let prefix = if loaded.tensors.keys().any(|k| k.starts_with("weights.")) { "weights." } else { "" };
        let model = load_model(&cfg, &data, (path, &loaded), prefix, &Device::Cpu)?;
        Ok(Self { cfg, model, data })
    }

    /// The ONNX model file's bytes.
    pub fn onnx(&self) -> Result<Vec<u8>> {
        let (c, h, w) = self.data.image_shape;
        self.cfg.check_input_size(h, w)?;
        let Normalize { mean, std } = &self.data.normalize;
        let mut g = Graph::new();
        let dims = |v: &[f32]| vec![1, v.len() as i64, 1, 1];
        let m = g.constant("normalize.mean", mean, dims(mean));
        let s = g.constant("normalize.std", std, dims(std));
        let centred = g.node("Sub", &[INPUT, &m], vec![]);
        let x = g.node("Div", &[&centred, &s], vec![]);
        let logits = self.model.onnx(&mut g, &x)?;
        g.rename(&logits, OUTPUT);
        let metadata = vec![
            ("genotype".to_string(), self.cfg.config.genotype.to_string()),
            ("class_names".to_string(), serde_json::json!(self.data.class_names).to_string()),
            ("normalize_mean".to_string(), serde_json::json!(mean).to_string()),
            ("normalize_std".to_string(), serde_json::json!(std).to_string()),
            ("space".to_string(), self.cfg.genotype.space().to_string()),
            ("net".to_string(), self.cfg.model.net.to_string()),
        ];
        let doc = format!(
            "{} {} network in evaluation mode. Input `{INPUT}`: float32 (batch, {c}, {h}, {w}) with \
             pixels scaled to [0, 1]; the graph normalises them per channel first. Output \
             `{OUTPUT}`: (batch, {}).",
            self.cfg.genotype.space(),
            self.cfg.model.net,
            self.data.num_classes
        );
        let io = ModelIo {
            input: INPUT,
            input_dims: &[Dim::Symbol("batch"), Dim::Fixed(c), Dim::Fixed(h), Dim::Fixed(w)],
            output: OUTPUT,
            output_dims: &[Dim::Symbol("batch"), Dim::Fixed(self.data.num_classes)],
        };
        Ok(g.into_model(io, &doc, &metadata))
    }
}
