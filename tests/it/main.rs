//! The integration tests, as one test binary: each module was a file of its
//! own under `tests/`, and so a binary of its own, each linking tract.
//! `support` holds what several of them use.
//!
//! Run one module with a filter: `cargo test --test it -- hostile::`.
//!
//! All tests run as threads of one process, so none may change what the
//! whole process shares (environment variables, current folder, panic hook,
//! resource limits): a test that needs such a change makes it in a child
//! process, as `fuzz` does for its memory limit.

mod support;

mod batch;
mod batched;
mod bench;
mod check;
mod cli;
mod compare;
mod deep_taylor;
mod engines;
mod evaluate;
mod exporters;
mod fetch;
mod fuzz;
mod gradients;
mod hostile;
mod hostile_models;
mod ledger;
mod load_graph;
mod model_support;
mod movement;
mod naive_reference;
mod quantized;
mod registry;
mod shard;
mod ties;
mod tokens;
mod vit;
