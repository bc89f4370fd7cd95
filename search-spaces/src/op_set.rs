//! The op set of a space: an enum of its ops in the column order of α, with the names genotype
//! files use. `op_set!` declares one with `ALL`, `name`, `index`, parsing (an unknown name is
//! an error naming the space and listing the ops) and `Display`.

/// `op_set! { /// doc  pub enum Op in "space" { Variant => "name", … } }`
macro_rules! op_set {
    ($(#[$meta:meta])* pub enum $op:ident in $space:literal { $($variant:ident => $name:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $op {
            $($variant,)+
        }

        impl $op {
            /// Every op, in the column order of α.
            pub const ALL: &'static [$op] = &[$($op::$variant,)+];

            pub fn name(self) -> &'static str {
                match self {
                    $($op::$variant => $name,)+
                }
            }

            /// Column of this op in α.
            pub fn index(self) -> usize {
                Self::ALL.iter().position(|&o| o == self).unwrap_or(0)
            }
        }

        impl std::str::FromStr for $op {
            type Err = $crate::Error;

            fn from_str(s: &str) -> std::result::Result<Self, $crate::Error> {
                Self::ALL.iter().copied().find(|o| o.name() == s).ok_or_else(|| {
                    let names: Vec<_> = Self::ALL.iter().map(|o| o.name()).collect();
                    $crate::Error::Genotype(format!(
                        "unknown op `{s}` for the {} space (expected one of {})",
                        $space,
                        names.join(", ")
                    ))
                })
            }
        }

        impl std::fmt::Display for $op {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.name())
            }
        }
    };
}

pub(crate) use op_set;
