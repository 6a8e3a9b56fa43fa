//! The subcommands: each takes a plain configuration built by
//! [`crate::app::cli`] and reports on the writer or streams it is given.

pub mod bench;
pub mod compare;
pub mod evaluate;
pub mod explain;
pub mod inspect;

/// What a command that writes whole-run files (`compare`, `evaluate`)
/// returns: the files it wrote, and each input that failed with why.
pub type FileRun = (Vec<std::path::PathBuf>, Vec<(std::path::PathBuf, String)>);
