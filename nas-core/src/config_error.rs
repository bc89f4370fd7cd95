//! A message about settings that cannot work, naming them by their configuration field
//! (`epochs`, `data.batch_size`: the keys of a run's config.json), so that a front end can show
//! its own names for them — the command line shows its flags. Libraries write the message
//! with `field(name)` and `brief(name)` where a setting is mentioned:
//!
//! - `field`: the setting the message is about, whose value may come from a config file; a
//!   front end gives its own name and the field (`--epochs (epochs) must be positive`).
//! - `brief`: a mention in passing, typically followed by its value; a front end gives its own
//!   name alone (`--subset 20 is too small for --batch-size 16`).
//!
//! Without a front end (`Display`) every mention is the field name.

use std::fmt;

/// Marks the start and end of a full and of a brief mention inside a message being built.
const FIELD: char = '\u{1}';
const BRIEF: char = '\u{2}';

/// The setting `name`, as the subject of a `ConfigError` message.
pub fn field(name: &str) -> String {
    format!("{FIELD}{name}{FIELD}")
}

/// The setting `name`, mentioned in passing in a `ConfigError` message.
pub fn brief(name: &str) -> String {
    format!("{BRIEF}{name}{BRIEF}")
}

/// The first of `fields` (name, value) that is 0, as a message naming it.
pub fn require_positive(fields: &[(&str, usize)]) -> Result<(), ConfigError> {
    match fields.iter().find(|(_, v)| *v == 0) {
        Some((name, _)) => Err(ConfigError::new(format!("{} must be positive, got 0", field(name)))),
        None => Ok(()),
    }
}

/// The first of `fields` (name, value) that is negative or not finite, as a message naming it.
pub fn require_finite_non_negative(fields: &[(&str, f64)]) -> Result<(), ConfigError> {
    match fields.iter().find(|(_, v)| !v.is_finite() || *v < 0.0) {
        Some((name, v)) => {
            Err(ConfigError::new(format!("{} must be a finite non-negative number, got {v}", field(name))))
        }
        None => Ok(()),
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Field { name: String, brief: bool },
}

/// An invalid-settings message with its field mentions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    parts: Vec<Part>,
}

impl ConfigError {
    /// A message with mentions made by `field` and `brief`.
    pub fn new(message: impl AsRef<str>) -> Self {
        let mut parts = Vec::new();
        let mut rest = message.as_ref();
        while let Some(start) = rest.find([FIELD, BRIEF]) {
            let mark = rest[start..].chars().next().unwrap_or(FIELD);
            let after = &rest[start + mark.len_utf8()..];
            let Some(len) = after.find(mark) else { break };
            if start > 0 {
                parts.push(Part::Text(rest[..start].to_string()));
            }
            parts.push(Part::Field { name: after[..len].to_string(), brief: mark == BRIEF });
            rest = &after[len + mark.len_utf8()..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_string()));
        }
        Self { parts }
    }

    /// A message that mentions no setting, taken as it is (text from files, other errors).
    pub fn plain(message: impl Into<String>) -> Self {
        Self { parts: vec![Part::Text(message.into())] }
    }

    /// The message after `prefix: ` (a file name), its mentions kept.
    pub fn context(mut self, prefix: impl std::fmt::Display) -> Self {
        self.parts.insert(0, Part::Text(format!("{prefix}: ")));
        self
    }

    /// The fields the message mentions, in order.
    pub fn fields(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|p| match p {
            Part::Field { name, .. } => Some(name.as_str()),
            Part::Text(_) => None,
        })
    }

    /// The message with every mention named by `name(field, brief)`; None keeps the field name.
    pub fn render(&self, name: impl Fn(&str, bool) -> Option<String>) -> String {
        self.parts
            .iter()
            .map(|p| match p {
                Part::Text(t) => t.clone(),
                Part::Field { name: f, brief } => name(f, *brief).unwrap_or_else(|| f.clone()),
            })
            .collect()
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.render(|_, _| None))
    }
}

impl std::error::Error for ConfigError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mentions_are_named_by_the_front_end_or_by_their_field() {
        let e = ConfigError::new(format!(
            "{} {} is too small for {} {}; {} must be even",
            brief("data.subset"),
            20,
            brief("data.batch_size"),
            16,
            field("model.channels")
        ));
        assert_eq!(e.fields().collect::<Vec<_>>(), ["data.subset", "data.batch_size", "model.channels"]);
        assert_eq!(e.to_string(), "data.subset 20 is too small for data.batch_size 16; model.channels must be even");
        let flags = |f: &str, brief: bool| {
            let flag = match f {
                "data.subset" => "--subset",
                "model.channels" => "--channels",
                _ => return None,
            };
            Some(if brief { flag.to_string() } else { format!("{flag} ({f})") })
        };
        assert_eq!(
            e.render(flags),
            "--subset 20 is too small for data.batch_size 16; --channels (model.channels) must be even"
        );
    }

    #[test]
    fn plain_text_is_kept_as_it_is() {
        let text = format!("c.json: expected `,` or `}}` at line 1 {}", field("x"));
        let e = ConfigError::plain(text.clone());
        assert_eq!(e.render(|_, _| Some("flag".into())), text);
        assert_eq!(e.fields().count(), 0);
    }
}
