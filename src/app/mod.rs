//! The command-line application, compiled into the binary only: argument
//! parsing ([`cli`]), the subcommands ([`commands`]), the inputs it walks,
//! the files it writes (atomically), model downloads and their cache, HTML
//! pages and labelled grids. The library (`lrp_heatmap`) knows none of it.

pub mod cache;
pub mod cli;
pub mod commands;
pub mod fetch;
pub mod grid;
pub mod html;
#[cfg(test)]
mod html_browser_tests;
pub mod inputs;
pub mod labels;
pub mod output;
pub mod plots;
pub mod registry;
pub mod text;
