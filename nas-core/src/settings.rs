//! Settings written once: the command-line flag of a configuration field is declared next to
//! the config section that owns the field, as a `Flag` (its long name, the field it sets
//! relative to where the section sits, its help, and how its text becomes the field's JSON
//! value). A command collects its sections' flags as `Mount`s (a section's flags under the
//! section's path, e.g. the weight optimiser's `--lr` under `weight_optimizer` for a search and
//! under `optimizer` for retraining), turns the flags given into a JSON overlay
//! (`overlay_of`) and lays it over the configuration with `merge`, the same merge a config
//! file goes through. No clap here: the command line builds its parser from these
//! declarations, and its error messages name a field by the flag declared for it.
//!
//! `struct_fields` reads the field names of a config struct from its `Deserialize`
//! implementation, so that a section can tell a field it does not have from a field another
//! section (another method, another space) has.

use std::borrow::Cow;
use std::fmt::Display;
use std::str::FromStr;

use serde::de::{self, Deserialize, Deserializer, Visitor};
use serde::Serialize;
use serde_json::{Map, Value};

/// How the text of a flag becomes JSON.
pub type Parse = fn(&str) -> Result<Value, String>;

/// What a flag takes.
#[derive(Debug, Clone, Copy)]
pub enum FlagValue {
    /// No value: the field becomes `true` when the flag is given.
    Switch,
    /// One value.
    One(Parse),
    /// Comma-separated values, each parsed, as a JSON array.
    List(Parse),
    /// One value that is an object laid over the mount point itself (a flag that sets several
    /// fields, such as `--space s1`: the darts space with S1's op sets); `field` is still the
    /// field messages name it by.
    Overlay(Parse),
}

/// One command-line flag of a configuration field.
#[derive(Debug, Clone)]
pub struct Flag {
    /// The long name without dashes (`batch-size`).
    pub long: &'static str,
    /// The field it sets, relative to its section's mount point (`batch_size`, `schedule`).
    pub field: &'static str,
    /// The placeholder in the usage line (`B`); empty for a switch.
    pub value_name: &'static str,
    /// The help text: its first line is the short help.
    pub help: Cow<'static, str>,
    pub value: FlagValue,
}

impl Flag {
    /// A flag taking one value, parsed by `parse`; its help comes with `help`.
    pub fn one(long: &'static str, field: &'static str, value_name: &'static str, parse: Parse) -> Flag {
        Flag { long, field, value_name, help: Cow::Borrowed(""), value: FlagValue::One(parse) }
    }

    /// A flag without a value that sets a boolean field.
    pub fn switch(long: &'static str, field: &'static str) -> Flag {
        Flag { long, field, value_name: "", help: Cow::Borrowed(""), value: FlagValue::Switch }
    }

    /// This flag with its help text (the first line is the short help).
    pub fn help(self, help: impl Into<Cow<'static, str>>) -> Flag {
        Flag { help: help.into(), ..self }
    }

    /// This flag taking a comma-separated list of its values.
    pub fn list(self) -> Flag {
        Flag { value: self.value.map(FlagValue::List), ..self }
    }

    /// This flag with a value that is an object of several fields laid over its mount point.
    pub fn overlay(self) -> Flag {
        Flag { value: self.value.map(FlagValue::Overlay), ..self }
    }
}

impl FlagValue {
    /// The same parser taken another way; a switch stays a switch.
    fn map(self, to: fn(Parse) -> FlagValue) -> FlagValue {
        match self {
            FlagValue::One(p) | FlagValue::List(p) | FlagValue::Overlay(p) => to(p),
            FlagValue::Switch => FlagValue::Switch,
        }
    }
}

/// A section's flags and where the section sits in its configuration.
#[derive(Debug, Clone)]
pub struct Mount {
    /// The section's path (`data`, `model`, `method`); empty for top-level fields.
    pub at: &'static str,
    /// The heading the flags are listed under in `--help` (None: with the command's own).
    pub heading: Option<&'static str>,
    pub flags: Vec<Flag>,
}

impl Mount {
    pub fn new(at: &'static str, flags: Vec<Flag>) -> Mount {
        Mount { at, heading: None, flags }
    }

    pub fn with_heading(mut self, heading: &'static str) -> Mount {
        self.heading = Some(heading);
        self
    }

    /// The full path of `flag`'s field (`data.batch_size`).
    pub fn path(&self, flag: &Flag) -> String {
        join(self.at, flag.field)
    }
}

fn join(at: &str, field: &str) -> String {
    match (at.is_empty(), field.is_empty()) {
        (true, _) => field.to_string(),
        (false, true) => at.to_string(),
        (false, false) => format!("{at}.{field}"),
    }
}

/// `FromStr` and `Display` for a setting's enum by the names config.json and the command line
/// use, a bad name refused as `unknown <what> `x` (expected a, b)`.
#[macro_export]
macro_rules! named_enum {
    ($t:ty, $what:literal, [$($v:path => $s:literal),+ $(,)?]) => {
        impl std::str::FromStr for $t {
            type Err = String;
            fn from_str(s: &str) -> std::result::Result<Self, String> {
                match s {
                    $($s => Ok($v),)+
                    _ => Err(format!(concat!("unknown ", $what, " `{}` (expected {})"), s, [$($s),+].join(", "))),
                }
            }
        }

        impl std::fmt::Display for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                match self {
                    $($v => f.write_str($s),)+
                }
            }
        }
    };
}

/// The value `text` as a `T` (through its `FromStr`), written as JSON by its `Serialize`: a
/// number for a number type, the config.json form of a setting type.
pub fn parse<T: FromStr + Serialize>(text: &str) -> Result<Value, String>
where
    T::Err: Display,
{
    let v: T = text.parse().map_err(|e: T::Err| e.to_string())?;
    serde_json::to_value(v).map_err(|e| e.to_string())
}

/// The text itself, as a JSON string.
pub fn text(text: &str) -> Result<Value, String> {
    Ok(Value::String(text.to_string()))
}

/// One given flag's JSON: the value parsed, a list of values, or `true` for a switch.
pub fn flag_json(flag: &Flag, values: &[Value]) -> Option<Value> {
    match flag.value {
        FlagValue::Switch => Some(Value::Bool(true)),
        FlagValue::One(_) | FlagValue::Overlay(_) => values.first().cloned(),
        FlagValue::List(_) => Some(Value::Array(values.to_vec())),
    }
}

/// The overlay of given flags: each (mount, flag, JSON value) set at its path, an `Overlay`
/// flag's object laid over its mount point. Later flags win where two set the same field.
pub fn overlay_of<'a>(given: impl IntoIterator<Item = (&'a Mount, &'a Flag, Value)>) -> Value {
    let mut root = Value::Object(Map::new());
    for (mount, flag, value) in given {
        match flag.value {
            FlagValue::Overlay(_) => {
                let mut at = Value::Object(Map::new());
                set_path(&mut at, mount.at, value);
                merge(&mut root, &at);
            }
            _ => set_path(&mut root, &mount.path(flag), value),
        }
    }
    root
}

/// Sets the field at the dotted `path` of `root` (objects made on the way); an empty path
/// replaces `root`.
pub fn set_path(root: &mut Value, path: &str, value: Value) {
    if path.is_empty() {
        *root = value;
        return;
    }
    let mut at = root;
    let mut parts = path.split('.').peekable();
    while let Some(key) = parts.next() {
        if !at.is_object() {
            *at = Value::Object(Map::new());
        }
        let Value::Object(map) = at else { return };
        if parts.peek().is_none() {
            map.insert(key.to_string(), value);
            return;
        }
        at = map.entry(key.to_string()).or_insert_with(|| Value::Object(Map::new()));
    }
}

/// The value at the dotted `path` of `root`.
pub fn get_path<'a>(root: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(root, |v, key| v.get(key))
}

/// The key that names a tagged section (the search method: `{"name": "implicit-cg",
/// "cg_steps": 5}`).
pub const TAG: &str = "name";

/// Recursively lays `overlay` over `base`: objects merge field by field, everything else is
/// replaced. A tagged section (an object with a `name`) that the overlay gives another name
/// starts over from the overlay: the settings of one method mean nothing to another.
pub fn merge(base: &mut Value, overlay: &Value) {
    match (base, overlay) {
        (Value::Object(b), Value::Object(o)) => {
            if let (Some(was), Some(now)) = (b.get(TAG), o.get(TAG)) {
                if was != now {
                    *b = o.clone();
                    return;
                }
            }
            for (k, v) in o {
                match b.get_mut(k) {
                    Some(slot) => merge(slot, v),
                    None => {
                        b.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (b, o) => *b = o.clone(),
    }
}

/// The field names of the struct `T` as its derived `Deserialize` knows them (for
/// `#[serde(deny_unknown_fields)]` structs: exactly the fields it accepts). Empty for a type
/// that is not deserialised as a struct.
pub fn struct_fields<'de, T: Deserialize<'de>>() -> &'static [&'static str] {
    let mut probe = FieldsProbe(None);
    let _ = T::deserialize(&mut probe);
    probe.0.unwrap_or(&[])
}

/// A deserializer that only records the fields a struct asks for.
struct FieldsProbe(Option<&'static [&'static str]>);

#[derive(Debug)]
struct Probed;

impl Display for Probed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("fields probed")
    }
}

impl std::error::Error for Probed {}

impl de::Error for Probed {
    fn custom<M: Display>(_: M) -> Self {
        Probed
    }
}

impl<'de> Deserializer<'de> for &mut FieldsProbe {
    type Error = Probed;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Probed> {
        Err(Probed)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, Probed> {
        self.0 = Some(fields);
        Err(Probed)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
        ignored_any
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Section {
        cg_steps: usize,
        #[serde(default)]
        cg_damping: f64,
    }

    #[test]
    fn struct_fields_lists_what_the_struct_accepts() {
        assert_eq!(struct_fields::<Section>(), ["cg_steps", "cg_damping"]);
        assert!(struct_fields::<usize>().is_empty());
    }

    #[test]
    fn merge_replaces_a_tagged_section_given_another_name() {
        let mut base = json!({"method": {"name": "implicit-cg", "cg_steps": 3}, "epochs": 5, "data": {"a": 1}});
        merge(&mut base, &json!({"method": {"cg_damping": 0.5}, "data": {"b": 2}}));
        assert_eq!(
            base,
            json!({"method": {"name": "implicit-cg", "cg_steps": 3, "cg_damping": 0.5}, "epochs": 5, "data": {"a": 1, "b": 2}})
        );
        merge(&mut base, &json!({"method": {"name": "gdas", "tau_max": 4}}));
        assert_eq!(base["method"], json!({"name": "gdas", "tau_max": 4}));
    }

    #[test]
    fn overlays_set_fields_under_their_mounts() {
        let data = Mount::new("data", vec![Flag::one("batch-size", "batch_size", "B", parse::<usize>)]);
        let top = Mount::new(
            "",
            vec![
                Flag::switch("edge-norm", "model.edge_norm"),
                Flag::one("space", "space", "S", |s| Ok(json!({"space": "darts", "model": {"ops": [s]}}))).overlay(),
            ],
        );
        let v = parse::<usize>("16").unwrap();
        let given = vec![
            (&data, &data.flags[0], v),
            (&top, &top.flags[0], Value::Bool(true)),
            (&top, &top.flags[1], json!({"space": "darts", "model": {"ops": ["noise"]}})),
        ];
        assert_eq!(
            overlay_of(given),
            json!({"data": {"batch_size": 16}, "model": {"edge_norm": true, "ops": ["noise"]}, "space": "darts"})
        );
        assert_eq!(parse::<usize>("-4").unwrap_err(), "invalid digit found in string");
        assert_eq!(get_path(&json!({"a": {"b": 2}}), "a.b"), Some(&json!(2)));
    }
}
