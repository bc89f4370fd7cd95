//! Discrete architectures of any space and their JSON form, compatible with DARTS'
//! `genotypes.py`: a genotype.json names its `space` and the space reads the rest; a file
//! without `space` is read as a DARTS genotype, as DARTS' own files are. `Genotype` has one
//! variant per space (declared with the space in `registry`).

use std::path::Path;

use nas_core::run_dir::GENOTYPE;
use serde_json::Value;

use crate::error::{Error, Result};
pub use crate::registry::Genotype;
use crate::registry::SpaceKind;

impl Genotype {
    /// The name of the genotype's space.
    pub fn space(&self) -> &'static str {
        self.kind().name()
    }

    pub fn from_json_value(v: &Value) -> Result<Self> {
        let kind = match v.get("space") {
            // DARTS' own genotype files name no space.
            None => SpaceKind::Darts,
            Some(s) => {
                let name = s.as_str().ok_or_else(|| Error::Genotype("`space` must be a string".into()))?;
                SpaceKind::parse(name).map_err(Error::Genotype)?
            }
        };
        kind.genotype_from_json(v)
    }

    pub fn from_json_str(s: &str) -> Result<Self> {
        let v: Value = serde_json::from_str(s).map_err(|e| Error::Genotype(format!("malformed JSON: {e}")))?;
        Self::from_json_value(&v)
    }

    /// A run directory (its genotype.json), a name a space knows (a built-in genotype such as
    /// DARTS_V2, an nb201 arch string `|nor_conv_3x3~0|+|…|`) or the path of a genotype.json
    /// file.
    pub fn load(name_or_path: &str) -> Result<Self> {
        let dir = Path::new(name_or_path);
        if dir.is_dir() {
            return Self::load(&dir.join(GENOTYPE).to_string_lossy());
        }
        if let Some(g) = SpaceKind::ALL.iter().find_map(|k| k.named_genotype(name_or_path)) {
            return g;
        }
        let path = Path::new(name_or_path);
        let text = std::fs::read_to_string(path).map_err(|e| {
            let names: Vec<&str> = SpaceKind::ALL.iter().flat_map(|k| k.builtin_names()).collect();
            Error::Genotype(format!(
                "{}: {e} (not a file, nor a built-in genotype: {})",
                path.display(),
                names.join(", ")
            ))
        })?;
        Self::from_json_str(&text).map_err(|e| match e {
            Error::Genotype(m) => Error::Genotype(format!("{}: {m}", path.display())),
            other => other,
        })
    }
}
