//! Transitional: the names this module used to define, now from `tether_testing`, for
//! test files still written against it (`mod common;`). New tests import
//! `tether_testing::openssh` (and `tether_testing::checksum`) directly.
#![allow(unused_imports, dead_code)]

pub use tether_testing::checksum::sha256_file;
pub use tether_testing::openssh::{
    CMD_TIMEOUT, SshEnv as Env, echo_roundtrip, echo_server, run, setup, start_server, stderr,
    stdout,
};

/// Logs at `warn` unless `TETHER_TEST_LOG` says otherwise.
pub fn init_tracing() {
    tether_testing::init_tracing_with("warn");
}
