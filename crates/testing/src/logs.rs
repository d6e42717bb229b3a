//! Logs in tests: one `tracing` subscriber per test process, writing through the test
//! harness's capture, filtered by `TETHER_TEST_LOG` (an `EnvFilter` directive).

/// Installs the subscriber with `TETHER_TEST_LOG`, else `info`. Later calls do nothing.
pub fn init_tracing() {
    init_tracing_with("info");
}

/// Installs the subscriber with `TETHER_TEST_LOG`, else `default` (e.g. `warn`, or
/// `tether_tailnet=debug,info`). Later calls do nothing.
pub fn init_tracing_with(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("TETHER_TEST_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}
