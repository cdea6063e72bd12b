//! The example configuration, schema and policies under `examples/`, embedded so `latch demo`
//! and the test kit run from any directory.

use std::path::{Path, PathBuf};

/// The example files, embedded so the demo runs from any directory.
pub const EXAMPLE_CONFIG: &str = include_str!("../../../examples/latch.toml");
/// The example Cedar schema.
pub const EXAMPLE_SCHEMA: &str = include_str!("../../../examples/latch.cedarschema");
/// The example policies (file name, text).
pub const EXAMPLE_POLICIES: &[(&str, &str)] = &[
    (
        "10-permits.cedar",
        include_str!("../../../examples/policies/10-permits.cedar"),
    ),
    (
        "20-guards.cedar",
        include_str!("../../../examples/policies/20-guards.cedar"),
    ),
    (
        "30-spiffe.cedar",
        include_str!("../../../examples/policies/30-spiffe.cedar"),
    ),
    (
        "40-ci-runs.cedar",
        include_str!("../../../examples/policies/40-ci-runs.cedar"),
    ),
    (
        "50-gateway.cedar",
        include_str!("../../../examples/policies/50-gateway.cedar"),
    ),
    (
        "40-copilots.cedar",
        include_str!("../../../examples/policies/40-copilots.cedar"),
    ),
    (
        "60-history.cedar",
        include_str!("../../../examples/policies/60-history.cedar"),
    ),
];

/// Writes the example configuration into `dir` (listening on `listen`, data in `dir/data`) and
/// returns the config path.
///
/// # Errors
/// I/O errors.
pub fn write_example(dir: &Path, listen: &str) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(dir.join("policies"))?;
    let config = EXAMPLE_CONFIG
        .replace(
            "listen = \"127.0.0.1:8080\"",
            &format!("listen = \"{listen}\""),
        )
        .replace("data_dir = \"../.latch-data\"", "data_dir = \"data\"");
    std::fs::write(dir.join("latch.toml"), config)?;
    std::fs::write(dir.join("latch.cedarschema"), EXAMPLE_SCHEMA)?;
    for (name, text) in EXAMPLE_POLICIES {
        std::fs::write(dir.join("policies").join(name), text)?;
    }
    Ok(dir.join("latch.toml"))
}

/// Introspection client id configured in the example (development only).
pub const DEMO_CLIENT_ID: &str = "demo-resource-server";
/// Its secret; the example configures only its SHA-256.
pub const DEMO_CLIENT_SECRET: &str = "demo-secret";
