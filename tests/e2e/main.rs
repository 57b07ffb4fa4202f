//! End-to-end tests of the `cairn` binary on generated trees. One test binary, modules sharing
//! `util` (ripgrep's layout).

// Helpers outside `#[test]` functions (util, generators) unwrap too: a panic fails the test.
#![allow(clippy::unwrap_used)]

mod util;

mod captures;
mod changing;
mod cli_output;
mod copy;
mod crash;
mod crash_matrix;
mod data_safety;
mod diff_everyday;
mod encrypt;
mod errors;
mod everyday;
mod full_disk;
mod gc;
mod golden;
mod hooks;
mod hostile;
mod incremental;
mod inspect;
mod integrity;
mod kits;
mod kubernetes;
mod logging;
mod processes;
mod profiles;
mod property;
mod restore_everyday;
mod restore_options;
mod restore_safety;
mod review15;
mod review18;
mod roundtrip;
mod s3;
mod s3_commands;
mod selection;
mod service;
mod snapshot_everyday;
mod snapshot_options;
mod source_safety;
mod status;
