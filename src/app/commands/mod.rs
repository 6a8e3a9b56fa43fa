//! The subcommands: each takes a plain configuration built by
//! [`crate::app::cli`] and reports on the writer or streams it is given.

pub mod bench;
pub mod compare;
pub mod evaluate;
pub mod explain;
pub mod inspect;
