//! Architecture support. Keel runs on x86-64 only.
pub mod x86;
