//! The `--data SPEC` grammar: `synthetic`, `cifar10:DIR`, `cifar100:DIR`, `folder:DIR`.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::Error;

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum DataSpec {
    #[default]
    Synthetic,
    Cifar10(PathBuf),
    Cifar100(PathBuf),
    Folder(PathBuf),
}

impl FromStr for DataSpec {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        if s == "synthetic" {
            return Ok(DataSpec::Synthetic);
        }
        let (kind, dir) = s.split_once(':').ok_or_else(|| Error::DataSpec(s.to_string()))?;
        if dir.is_empty() {
            return Err(Error::DataSpec(s.to_string()));
        }
        let dir = PathBuf::from(dir);
        match kind {
            "cifar10" => Ok(DataSpec::Cifar10(dir)),
            "cifar100" => Ok(DataSpec::Cifar100(dir)),
            "folder" => Ok(DataSpec::Folder(dir)),
            _ => Err(Error::DataSpec(s.to_string())),
        }
    }
}

impl TryFrom<String> for DataSpec {
    type Error = Error;
    fn try_from(s: String) -> Result<Self, Error> {
        s.parse()
    }
}

impl From<DataSpec> for String {
    fn from(d: DataSpec) -> String {
        d.to_string()
    }
}

impl fmt::Display for DataSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DataSpec::Synthetic => write!(f, "synthetic"),
            DataSpec::Cifar10(d) => write!(f, "cifar10:{}", d.display()),
            DataSpec::Cifar100(d) => write!(f, "cifar100:{}", d.display()),
            DataSpec::Folder(d) => write!(f, "folder:{}", d.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        for s in ["synthetic", "cifar10:/data/c10", "cifar100:rel/dir", "folder:imgs"] {
            assert_eq!(s.parse::<DataSpec>().unwrap().to_string(), s);
        }
        for bad in ["", "mnist", "cifar10", "cifar10:", "imagenet:/x", "Synthetic"] {
            let e = bad.parse::<DataSpec>().unwrap_err().to_string();
            assert!(e.contains("unknown data spec"), "{bad}: {e}");
        }
    }
}
