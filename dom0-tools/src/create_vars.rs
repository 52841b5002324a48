//! The `[vars]` of `xm create`: `NAME=VALUE` settings that add to or
//! override those of the domain configuration file, as in Xen's `xm`.

use std::fmt;
use std::str::FromStr;

/// One `NAME=VALUE` setting. The name is a configuration identifier
/// (an ASCII letter or `_`, then letters, digits or `_`); the value is
/// everything after the first `=` and may be empty.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ConfigVar {
    name: String,
    value: String,
}

impl ConfigVar {
    /// The setting's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The setting's value, as written.
    pub fn value(&self) -> &str {
        &self.value
    }
}

impl fmt::Display for ConfigVar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.name, self.value)
    }
}

fn is_identifier(s: &str) -> bool {
    let mut bytes = s.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

impl FromStr for ConfigVar {
    type Err = ConfigVarError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (name, value) = s.split_once('=').ok_or_else(|| ConfigVarError::MissingEquals(s.to_owned()))?;
        if !is_identifier(name) {
            return Err(ConfigVarError::BadName(s.to_owned()));
        }
        Ok(ConfigVar { name: name.to_owned(), value: value.to_owned() })
    }
}

/// Why a `NAME=VALUE` setting was rejected (each holds the setting).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigVarError {
    /// No `=` in it.
    MissingEquals(String),
    /// The part before `=` is not an identifier.
    BadName(String),
}

impl fmt::Display for ConfigVarError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigVarError::MissingEquals(s) => {
                write!(f, "'{s}' is not a configuration setting (expected NAME=VALUE, e.g. memory=512)")
            }
            ConfigVarError::BadName(s) => write!(
                f,
                "'{s}' does not start with a setting name (letters, digits and _, \
                 not starting with a digit)"
            ),
        }
    }
}

impl std::error::Error for ConfigVarError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_parse() {
        let var: ConfigVar = "memory=512".parse().unwrap();
        assert_eq!((var.name(), var.value()), ("memory", "512"));
        let var: ConfigVar = "extra=root=/dev/xvda1 ro".parse().unwrap();
        assert_eq!((var.name(), var.value()), ("extra", "root=/dev/xvda1 ro"));
        let var: ConfigVar = "_x1=".parse().unwrap();
        assert_eq!((var.name(), var.value()), ("_x1", ""));
        assert_eq!(var.to_string(), "_x1=");
    }

    #[test]
    fn malformed_settings_are_rejected() {
        assert_eq!("memory".parse::<ConfigVar>(), Err(ConfigVarError::MissingEquals("memory".into())));
        assert_eq!("".parse::<ConfigVar>(), Err(ConfigVarError::MissingEquals("".into())));
        for bad in ["=512", "1mem=512", "mem ory=1", "mem-ory=1"] {
            assert_eq!(bad.parse::<ConfigVar>(), Err(ConfigVarError::BadName(bad.into())), "{bad}");
        }
    }
}
