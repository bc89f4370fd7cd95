//! `--tensorboard DIR`: a run's epoch records as TensorBoard event files, so that a search or
//! retraining can be watched in TensorBoard while it runs.
//!
//! At each epoch's end (`Event::EpochEnd`, the record metrics.jsonl gets) one event holds every
//! numeric field of the record as a scalar (nested objects give `a/b` tags; `epoch` is the
//! step), softmax(α) of every edge (`alpha/<cell>/edge_<e>/<op>`, computed as `nas plot` does
//! in `draw::curves`) and, where the record has a genotype, its cells drawn as a PNG image
//! (`genotype`). Records of a run in stages (P-DARTS) count their steps on from the stages
//! before, `stage·epochs + epoch`, so that the curves continue across stages.
//!
//! The file is TensorFlow's: `DIR/events.out.tfevents.<unix seconds>.<hostname>`, a new one for
//! each process (a resumed run adds one beside the first), a sequence of TFRecords (u64 length,
//! masked CRC-32C of the length, the data, masked CRC-32C of the data) each holding a protobuf
//! `Event` (tensorboard/compat/proto/event.proto and summary.proto), the first with
//! `file_version: "brain.Event:2"`.

use std::fs::OpenOptions;
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use clap::Args;
use nas_core::metrics::Event;
use prost::Message;
use search_spaces::Genotype;
use serde_json::Value;

use crate::draw::cell::CellPicture;
use crate::draw::curves::alpha_histories;
use crate::draw::{render, ImageFormat, Picture};

/// `--tensorboard DIR`, of the commands that run epochs.
#[derive(Args, Debug, Default, Clone)]
pub struct TensorBoardArg {
    /// Also write each epoch's metrics, softmax(α) and cells as TensorBoard events to DIR
    #[arg(long, value_name = "DIR")]
    pub tensorboard: Option<PathBuf>,
}

impl TensorBoardArg {
    /// A new event file in DIR, or None without the flag or on any rank but 0 (which alone
    /// writes a data-parallel run's files).
    pub fn open(&self) -> anyhow::Result<Option<TensorBoard>> {
        match &self.tensorboard {
            Some(dir) if nas_core::dist::is_writer() => Ok(Some(TensorBoard::new(EventFile::create(dir)?))),
            _ => Ok(None),
        }
    }
}

/// The messages of event.proto and summary.proto that a run writes (their field numbers).
mod proto {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Event {
        #[prost(double, tag = "1")]
        pub wall_time: f64,
        #[prost(int64, tag = "2")]
        pub step: i64,
        #[prost(oneof = "What", tags = "3, 5")]
        pub what: Option<What>,
    }

    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum What {
        #[prost(string, tag = "3")]
        FileVersion(String),
        #[prost(message, tag = "5")]
        Summary(Summary),
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Summary {
        #[prost(message, repeated, tag = "1")]
        pub value: Vec<Value>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Value {
        #[prost(string, tag = "1")]
        pub tag: String,
        #[prost(oneof = "Kind", tags = "2, 4")]
        pub kind: Option<Kind>,
    }

    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Kind {
        #[prost(float, tag = "2")]
        SimpleValue(f32),
        #[prost(message, tag = "4")]
        Image(Image),
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Image {
        #[prost(int32, tag = "1")]
        pub height: i32,
        #[prost(int32, tag = "2")]
        pub width: i32,
        /// 3: RGB.
        #[prost(int32, tag = "3")]
        pub colorspace: i32,
        #[prost(bytes = "vec", tag = "4")]
        pub encoded_image_string: Vec<u8>,
    }
}

pub use proto::Value as SummaryValue;

impl SummaryValue {
    pub fn scalar(tag: impl Into<String>, value: f32) -> Self {
        Self { tag: tag.into(), kind: Some(proto::Kind::SimpleValue(value)) }
    }

    /// An RGB PNG of `width`×`height` pixels.
    pub fn png(tag: impl Into<String>, (width, height): (u32, u32), png: Vec<u8>) -> Self {
        let image =
            proto::Image { height: height as i32, width: width as i32, colorspace: 3, encoded_image_string: png };
        Self { tag: tag.into(), kind: Some(proto::Kind::Image(image)) }
    }
}

/// TFRecord's checksum: CRC-32C rotated right by 15 bits plus a constant, so that the CRC of
/// data holding CRCs is not degenerate.
pub fn masked_crc(data: &[u8]) -> u32 {
    crc32c::crc32c(data).rotate_right(15).wrapping_add(0xa282_ead8)
}

/// `data` framed as one TFRecord.
fn tf_record(data: &[u8]) -> Vec<u8> {
    let len = (data.len() as u64).to_le_bytes();
    let mut out = Vec::with_capacity(data.len() + 16);
    out.extend_from_slice(&len);
    out.extend_from_slice(&masked_crc(&len).to_le_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(&masked_crc(data).to_le_bytes());
    out
}

/// The machine's name, for the file name as TensorFlow writes it; `localhost` where it cannot
/// be found. Characters that cannot be in a file name become `_`.
fn hostname() -> String {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| {
            let out = std::process::Command::new("hostname").output().ok()?;
            out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
        })
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".to_string());
    name.chars().map(|c| if c.is_ascii_alphanumeric() || "-._".contains(c) { c } else { '_' }).collect()
}

fn now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

/// One event file being written. Each record goes out in one write, unbuffered, so that
/// TensorBoard sees an epoch as soon as it ends and a killed run leaves whole records.
pub struct EventFile {
    out: Box<dyn Write + Send>,
    path: PathBuf,
    /// Whether a summary was written (or tried); a file holding nothing else is removed when
    /// the writer is dropped, so a run refused or stopped before its first epoch ends leaves
    /// no empty run in TensorBoard.
    wrote_summary: bool,
    remove_if_empty: bool,
}

impl EventFile {
    /// A new event file in `dir` (created if missing), named by the current second and the
    /// host; `.1`, `.2`, … are appended to a name already taken (a second process in the same
    /// second).
    pub fn create(dir: &Path) -> anyhow::Result<Self> {
        let flag = || format!("--tensorboard {}", dir.display());
        std::fs::create_dir_all(dir).with_context(|| format!("{}: cannot create the directory", flag()))?;
        let secs = now() as u64;
        let base = format!("events.out.tfevents.{secs}.{}", hostname());
        let mut n = 0;
        let (file, path) = loop {
            let name = if n == 0 { base.clone() } else { format!("{base}.{n}") };
            let path = dir.join(name);
            match OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(file) => break (file, path),
                Err(e) if e.kind() == ErrorKind::AlreadyExists && n < 1000 => n += 1,
                Err(e) => return Err(e).with_context(|| format!("{}: cannot create {}", flag(), path.display())),
            }
        };
        let mut events = Self::over(file, path);
        events.remove_if_empty = true;
        events.write_header().with_context(|| format!("{}: cannot write {}", flag(), events.path.display()))?;
        Ok(events)
    }

    /// Events written to `out` (named `path` in messages), without the header.
    pub(crate) fn over(out: impl Write + Send + 'static, path: PathBuf) -> Self {
        Self { out: Box::new(out), path, wrote_summary: false, remove_if_empty: false }
    }

    fn write_header(&mut self) -> std::io::Result<()> {
        let what = Some(proto::What::FileVersion("brain.Event:2".into()));
        self.write(&proto::Event { wall_time: now(), step: 0, what })
    }

    fn write(&mut self, event: &proto::Event) -> std::io::Result<()> {
        self.out.write_all(&tf_record(&event.encode_to_vec()))?;
        self.out.flush()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// One event at `step` holding `values`.
    pub fn write_summary(&mut self, step: i64, values: Vec<SummaryValue>) -> anyhow::Result<()> {
        self.wrote_summary = true;
        let what = Some(proto::What::Summary(proto::Summary { value: values }));
        self.write(&proto::Event { wall_time: now(), step, what })
            .with_context(|| format!("cannot write {}", self.path.display()))
    }
}

impl Drop for EventFile {
    fn drop(&mut self) {
        if self.remove_if_empty && !self.wrote_summary {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Turns a run's epoch records into events of an `EventFile`.
pub struct TensorBoard {
    file: EventFile,
    /// The epochs of the run (of a stage, in a run in stages), from the last `EpochStart`.
    epochs: usize,
}

impl TensorBoard {
    pub fn new(file: EventFile) -> Self {
        Self { file, epochs: 0 }
    }

    pub fn path(&self) -> &Path {
        self.file.path()
    }

    /// Writes the summary of an `EpochEnd`; other events only tell the number of epochs.
    pub fn event(&mut self, event: &Event<'_>) -> anyhow::Result<()> {
        match event {
            Event::EpochStart { epochs, .. } => self.epochs = *epochs,
            Event::EpochEnd { record } => {
                let values = summary(record)?;
                self.file.write_summary(self.step(record), values)?;
            }
            _ => {}
        }
        Ok(())
    }

    /// The step of `record`: its epoch, counted on from the earlier stages in a run in stages.
    fn step(&self, record: &Value) -> i64 {
        let epoch = record.get("epoch").and_then(Value::as_u64).unwrap_or(0);
        let stage = record.get("stage").and_then(Value::as_u64).unwrap_or(0);
        (stage * self.epochs as u64 + epoch) as i64
    }
}

/// Every numeric field of `record` (but `epoch`, the step) as `(tag, value)`, nested objects'
/// keys joined by `/`. Arrays (α, the genotype's lists) are not scalars and are left out, as
/// are strings, booleans and the nulls a non-finite value is written as.
pub fn scalars(record: &Value) -> Vec<(String, f64)> {
    fn walk(v: &Value, tag: String, out: &mut Vec<(String, f64)>) {
        match v {
            Value::Number(n) => out.extend(n.as_f64().map(|x| (tag, x))),
            Value::Object(fields) => {
                for (k, v) in fields {
                    let tag = if tag.is_empty() { k.clone() } else { format!("{tag}/{k}") };
                    walk(v, tag, out);
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    if let Value::Object(fields) = record {
        for (k, v) in fields.iter().filter(|(k, _)| *k != "epoch") {
            walk(v, k.clone(), &mut out);
        }
    }
    out
}

/// softmax(α) of every edge of every α matrix of `record`, `alpha/<cell>/edge_<e>/<op>`, where
/// `<cell>` is the matrix's key without `alphas_` (`normal`, `reduce`; nb201's
/// `arch_parameters`).
pub fn alpha_scalars(record: &Value) -> anyhow::Result<Vec<(String, f64)>> {
    let mut out = Vec::new();
    for history in alpha_histories(std::slice::from_ref(record))? {
        let cell = history.key.strip_prefix("alphas_").unwrap_or(history.key);
        for (e, edge) in history.weights.iter().flatten().enumerate() {
            // NaN marks an op this edge does not have.
            for (op, &w) in history.op_names.iter().zip(edge).filter(|(_, w)| !w.is_nan()) {
                out.push((format!("alpha/{cell}/edge_{e}/{op}"), w));
            }
        }
    }
    Ok(out)
}

/// The values of the summary of `record`.
fn summary(record: &Value) -> anyhow::Result<Vec<SummaryValue>> {
    let mut values: Vec<SummaryValue> = scalars(record)
        .into_iter()
        .chain(alpha_scalars(record)?)
        .map(|(tag, v)| SummaryValue::scalar(tag, v as f32))
        .collect();
    if let Some(g) = record.get("genotype") {
        let picture = CellPicture { graphs: Genotype::from_json_value(g)?.cell_graphs() };
        values.push(SummaryValue::png("genotype", picture.size(), render(&picture, ImageFormat::Png)?));
    }
    Ok(values)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tfevents;
    use serde_json::json;
    use std::sync::{Arc, Mutex};

    /// Bytes written to a buffer the test keeps; after `limit` bytes every write fails.
    #[derive(Clone)]
    struct Sink {
        bytes: Arc<Mutex<Vec<u8>>>,
        limit: usize,
    }

    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let mut bytes = self.bytes.lock().unwrap();
            if bytes.len() + buf.len() > self.limit {
                return Err(std::io::Error::other("device full"));
            }
            bytes.extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn masked_crc_known_answer() {
        // CRC-32C's check value, and its mask as TensorBoard computes it:
        //   from tensorboard.summary.writer.record_writer import masked_crc32c
        //   hex(masked_crc32c(b"123456789"))  # '0xc78ab0e5'
        assert_eq!(crc32c::crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(masked_crc(b"123456789"), 0xc78a_b0e5);
        assert_eq!(tfevents::masked(tfevents::crc32c(b"123456789")), 0xc78a_b0e5);
    }

    #[test]
    fn events_read_back_with_their_checksums_tags_and_steps() {
        let dir = tempfile::tempdir().unwrap();
        let mut file = EventFile::create(dir.path()).unwrap();
        let name = file.path().file_name().unwrap().to_string_lossy().into_owned();
        let secs: u64 = name.strip_prefix("events.out.tfevents.").unwrap().split('.').next().unwrap().parse().unwrap();
        let png = vec![0x89, b'P', b'N', b'G', 1, 2, 3];
        file.write_summary(0, vec![SummaryValue::scalar("train_loss", 2.5), SummaryValue::scalar("acc", 0.0)]).unwrap();
        file.write_summary(
            7,
            vec![SummaryValue::scalar("a/b", -1.25e-3), SummaryValue::png("genotype", (30, 20), png.clone())],
        )
        .unwrap();
        let path = file.path().to_path_buf();
        drop(file);

        let bytes = std::fs::read(&path).unwrap();
        let events = tfevents::read_events(&bytes).unwrap();
        assert_eq!(events.len(), 3);
        assert_eq!(events[0].what, Some(tfevents::What::FileVersion("brain.Event:2".into())));
        let wall = events[0].wall_time;
        assert!(wall >= secs as f64 && wall < secs as f64 + 60.0, "{wall} vs {secs}");
        assert!(events[1..].iter().all(|e| e.wall_time >= wall));
        let got = tfevents::values(&events);
        let scalar = |tag: &str, v: f32| tfevents::Value { tag: tag.into(), kind: tfevents::Kind::Simple(v) };
        let image = tfevents::Value {
            tag: "genotype".into(),
            kind: tfevents::Kind::Image { height: 20, width: 30, colorspace: 3, encoded: png },
        };
        assert_eq!(
            got,
            [(0, scalar("train_loss", 2.5)), (0, scalar("acc", 0.0)), (7, scalar("a/b", -1.25e-3)), (7, image)]
        );

        // A flipped bit anywhere is caught by one of the two checksums.
        for at in [3, 9, 20, bytes.len() - 2] {
            let mut bad = bytes.clone();
            bad[at] ^= 0x10;
            assert!(tfevents::read_events(&bad).is_err(), "byte {at}");
        }
    }

    #[test]
    fn each_writer_gets_its_own_file_and_an_empty_one_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let a = EventFile::create(&dir.path().join("tb")).unwrap();
        let mut b = EventFile::create(&dir.path().join("tb")).unwrap();
        assert_ne!(a.path(), b.path());
        b.write_summary(1, vec![SummaryValue::scalar("x", 1.0)]).unwrap();
        let (a_path, b_path) = (a.path().to_path_buf(), b.path().to_path_buf());
        drop((a, b));
        assert!(!a_path.exists(), "a file without a summary is removed");
        assert_eq!(tfevents::read_events(&std::fs::read(&b_path).unwrap()).unwrap().len(), 2);

        let not_a_dir = dir.path().join("file");
        std::fs::write(&not_a_dir, "x").unwrap();
        let err = format!("{:#}", EventFile::create(&not_a_dir.join("tb")).err().unwrap());
        assert!(err.contains("--tensorboard") && err.contains("cannot create the directory"), "{err}");
    }

    fn search_record(epoch: u64) -> Value {
        let ln = f64::ln;
        json!({
            "epoch": epoch, "train_loss": 2.25, "valid_acc": 0.0, "lr": 0.025, "stage": 1,
            "method": {"reward": -0.5, "name": "x", "on": true}, "hessian_eig": null,
            "genotype": {"space": "darts", "normal": [["sep_conv_3x3", 0], ["skip_connect", 1], ["sep_conv_3x3", 1],
                ["max_pool_3x3", 0], ["sep_conv_3x3", 2], ["dil_conv_3x3", 0], ["skip_connect", 3], ["sep_conv_5x5", 2]],
                "normal_concat": [2, 3, 4, 5], "reduce": [["max_pool_3x3", 0], ["max_pool_3x3", 1],
                ["skip_connect", 2], ["max_pool_3x3", 1], ["max_pool_3x3", 0], ["skip_connect", 2],
                ["skip_connect", 2], ["max_pool_3x3", 1]], "reduce_concat": [2, 3, 4, 5]},
            "alpha": {
                "alphas_normal": [[0.0, ln(3.0)], [ln(2.0), 0.0, 0.0]],
                "alphas_normal_ops": [["none", "sep_conv_3x3"], ["skip_connect", "none", "sep_conv_3x3"]],
            },
        })
    }

    #[test]
    fn epoch_records_become_scalars_alpha_and_a_cell_picture() {
        let bytes = Arc::new(Mutex::new(Vec::new()));
        let file = EventFile::over(Sink { bytes: bytes.clone(), limit: usize::MAX }, "mem".into());
        let mut tb = TensorBoard::new(file);
        tb.event(&Event::EpochStart { epoch: 2, epochs: 4, steps: 10 }).unwrap();
        tb.event(&Event::EpochEnd { record: &search_record(2) }).unwrap();
        let events = tfevents::read_events(&bytes.lock().unwrap()).unwrap();
        assert_eq!(events.len(), 1);
        // Stage 1 of stages of 4 epochs, epoch 2.
        assert_eq!(events[0].step, 6);
        let values = tfevents::values(&events);
        let simple: Vec<(&str, f32)> = values
            .iter()
            .filter_map(|(_, v)| match v.kind {
                tfevents::Kind::Simple(x) => Some((v.tag.as_str(), x)),
                _ => None,
            })
            .collect();
        let expected = [
            ("train_loss", 2.25),
            ("valid_acc", 0.0),
            ("lr", 0.025),
            ("stage", 1.0),
            ("method/reward", -0.5),
            ("alpha/normal/edge_0/none", 0.25),
            ("alpha/normal/edge_0/sep_conv_3x3", 0.75),
            ("alpha/normal/edge_1/none", 0.25),
            ("alpha/normal/edge_1/sep_conv_3x3", 0.25),
            ("alpha/normal/edge_1/skip_connect", 0.5),
        ];
        let mut simple_sorted = simple.clone();
        simple_sorted.sort_by(|a, b| a.0.cmp(b.0));
        let mut expected_sorted = expected.to_vec();
        expected_sorted.sort_by(|a, b| a.0.cmp(b.0));
        assert_eq!(simple_sorted.len(), expected_sorted.len(), "{simple:?}");
        for ((tag, v), (want_tag, want)) in simple_sorted.iter().zip(&expected_sorted) {
            assert_eq!(tag, want_tag);
            assert!((v - want).abs() < 1e-6, "{tag}: {v} vs {want}");
        }
        let images: Vec<_> = values.iter().filter(|(_, v)| matches!(v.kind, tfevents::Kind::Image { .. })).collect();
        assert_eq!(images.len(), 1);
        let tfevents::Kind::Image { height, width, colorspace, encoded } = &images[0].1.kind else { unreachable!() };
        assert_eq!((images[0].1.tag.as_str(), *colorspace), ("genotype", 3));
        let img = image::load_from_memory_with_format(encoded, image::ImageFormat::Png).unwrap();
        assert_eq!((img.width() as i32, img.height() as i32), (*width, *height));
    }

    #[test]
    fn a_failed_write_is_an_error_naming_the_file() {
        let bytes = Arc::new(Mutex::new(Vec::new()));
        let mut tb = TensorBoard::new(EventFile::over(Sink { bytes, limit: 40 }, "tb/events".into()));
        let record = json!({"epoch": 0, "train_loss": 1.0, "valid_loss": 2.0, "lr": 0.1, "seconds": 3.0});
        let err = format!("{:#}", tb.event(&Event::EpochEnd { record: &record }).unwrap_err());
        assert!(err.contains("tb/events") && err.contains("device full"), "{err}");
    }
}
