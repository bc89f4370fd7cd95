//! A reader of TensorBoard event files for the tests, written from the format's description
//! and not from the writer's code: TFRecord framing (u64 length, masked CRC-32C of the length
//! bytes, data, masked CRC-32C of the data) with both checksums computed by a bitwise CRC-32C,
//! and the protobuf wire format decoded by the field numbers of TensorFlow's event.proto and
//! summary.proto (Event: wall_time 1, step 2, file_version 3, summary 5; Summary: value 1;
//! Summary.Value: tag 1, simple_value 2, image 4; Summary.Image: height 1, width 2,
//! colorspace 3, encoded_image_string 4).
#![allow(dead_code)] // the unit tests and each test binary use a different part

use std::path::{Path, PathBuf};

/// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), one bit at a time.
pub fn crc32c(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ 0x82F6_3B78 } else { crc >> 1 };
        }
    }
    !crc
}

/// The masked form TFRecord stores.
pub fn masked(crc: u32) -> u32 {
    crc.rotate_right(15).wrapping_add(0xa282_ead8)
}

/// The data of every record, after checking both checksums of each; an error names the
/// record (from 0) and what is wrong.
pub fn records(bytes: &[u8]) -> Result<Vec<&[u8]>, String> {
    let mut out = Vec::new();
    let mut at = 0usize;
    while at < bytes.len() {
        let n = out.len();
        let head = bytes.get(at..at + 12).ok_or(format!("record {n}: truncated header"))?;
        let len = u64::from_le_bytes(head[..8].try_into().unwrap()) as usize;
        let len_crc = u32::from_le_bytes(head[8..12].try_into().unwrap());
        if len_crc != masked(crc32c(&head[..8])) {
            return Err(format!("record {n}: bad length checksum"));
        }
        let data = bytes.get(at + 12..at + 12 + len).ok_or(format!("record {n}: truncated data"))?;
        let tail = bytes.get(at + 12 + len..at + 16 + len).ok_or(format!("record {n}: truncated data checksum"))?;
        if u32::from_le_bytes(tail.try_into().unwrap()) != masked(crc32c(data)) {
            return Err(format!("record {n}: bad data checksum"));
        }
        out.push(data);
        at += 16 + len;
    }
    Ok(out)
}

#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    Simple(f32),
    Image { height: i32, width: i32, colorspace: i32, encoded: Vec<u8> },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Value {
    pub tag: String,
    pub kind: Kind,
}

#[derive(Debug, Clone, PartialEq)]
pub enum What {
    FileVersion(String),
    Summary(Vec<Value>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub wall_time: f64,
    pub step: i64,
    pub what: Option<What>,
}

/// One field of a message: its number and its payload by wire type.
enum Field<'a> {
    Varint(u64),
    Fixed64(u64),
    Bytes(&'a [u8]),
    Fixed32(u32),
}

fn varint(bytes: &[u8], at: &mut usize) -> Result<u64, String> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *bytes.get(*at).ok_or("truncated varint")?;
        *at += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err("varint longer than 10 bytes".into())
}

/// The fields of a message, in order.
fn fields(bytes: &[u8]) -> Result<Vec<(u64, Field<'_>)>, String> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let key = varint(bytes, &mut at)?;
        let take = |at: &mut usize, n: usize| -> Result<&[u8], String> {
            let s = bytes.get(*at..*at + n).ok_or("truncated field")?;
            *at += n;
            Ok(s)
        };
        let field = match key & 7 {
            0 => Field::Varint(varint(bytes, &mut at)?),
            1 => Field::Fixed64(u64::from_le_bytes(take(&mut at, 8)?.try_into().unwrap())),
            2 => {
                let n = varint(bytes, &mut at)? as usize;
                Field::Bytes(take(&mut at, n)?)
            }
            5 => Field::Fixed32(u32::from_le_bytes(take(&mut at, 4)?.try_into().unwrap())),
            w => return Err(format!("field {}: wire type {w}", key >> 3)),
        };
        out.push((key >> 3, field));
    }
    Ok(out)
}

fn image(bytes: &[u8]) -> Result<Kind, String> {
    let (mut height, mut width, mut colorspace, mut encoded) = (0, 0, 0, Vec::new());
    for (n, f) in fields(bytes)? {
        match (n, f) {
            (1, Field::Varint(v)) => height = v as i32,
            (2, Field::Varint(v)) => width = v as i32,
            (3, Field::Varint(v)) => colorspace = v as i32,
            (4, Field::Bytes(b)) => encoded = b.to_vec(),
            (n, _) => return Err(format!("Summary.Image: unexpected field {n}")),
        }
    }
    Ok(Kind::Image { height, width, colorspace, encoded })
}

fn value(bytes: &[u8]) -> Result<Value, String> {
    let (mut tag, mut kind) = (String::new(), None);
    for (n, f) in fields(bytes)? {
        match (n, f) {
            (1, Field::Bytes(b)) => tag = String::from_utf8(b.to_vec()).map_err(|e| e.to_string())?,
            (2, Field::Fixed32(v)) => kind = Some(Kind::Simple(f32::from_bits(v))),
            (4, Field::Bytes(b)) => kind = Some(image(b)?),
            (n, _) => return Err(format!("Summary.Value: unexpected field {n}")),
        }
    }
    // proto3 leaves a simple_value of 0 out only outside a oneof; inside one it is written.
    let kind = kind.ok_or(format!("Summary.Value `{tag}` has no value"))?;
    Ok(Value { tag, kind })
}

/// Decodes one Event message.
pub fn event(bytes: &[u8]) -> Result<Event, String> {
    let mut e = Event { wall_time: 0.0, step: 0, what: None };
    for (n, f) in fields(bytes)? {
        match (n, f) {
            (1, Field::Fixed64(v)) => e.wall_time = f64::from_bits(v),
            (2, Field::Varint(v)) => e.step = v as i64,
            (3, Field::Bytes(b)) => {
                e.what = Some(What::FileVersion(String::from_utf8(b.to_vec()).map_err(|e| e.to_string())?))
            }
            (5, Field::Bytes(b)) => {
                let mut values = Vec::new();
                for (n, f) in fields(b)? {
                    match (n, f) {
                        (1, Field::Bytes(v)) => values.push(value(v)?),
                        (n, _) => return Err(format!("Summary: unexpected field {n}")),
                    }
                }
                e.what = Some(What::Summary(values));
            }
            (n, _) => return Err(format!("Event: unexpected field {n}")),
        }
    }
    Ok(e)
}

/// Every event of an event file, checksums checked.
pub fn read_events(bytes: &[u8]) -> Result<Vec<Event>, String> {
    records(bytes)?.into_iter().enumerate().map(|(i, r)| event(r).map_err(|e| format!("record {i}: {e}"))).collect()
}

/// The event files of `dir` (names starting `events.out.tfevents.`), in name order, with
/// their events.
pub fn read_dir(dir: &Path) -> Vec<(PathBuf, Vec<Event>)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("events.out.tfevents."))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap();
            let events = read_events(&bytes).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            (p, events)
        })
        .collect()
}

/// The values of the summaries of `events`, each with its event's step.
pub fn values(events: &[Event]) -> Vec<(i64, Value)> {
    events
        .iter()
        .flat_map(|e| match &e.what {
            Some(What::Summary(values)) => values.iter().map(|v| (e.step, v.clone())).collect(),
            _ => Vec::new(),
        })
        .collect()
}
