//! Running the scripts of the repository's interop package (`tests/interop`, a node package)
//! from the interop tests of any crate in the workspace (included by path).

use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

/// Whether the tests that need the node package run (`scripts/test` sets
/// `TOWER_PAYWALL_INTEROP` after `npm ci`, in a loopback-only network namespace).
pub fn interop_enabled() -> bool {
    let on = std::env::var_os("TOWER_PAYWALL_INTEROP").is_some();
    if !on {
        eprintln!("this test runs from scripts/test (it needs the node package); skipped");
    }
    on
}

/// The repository's root: the crate's directory or the closest one above it that holds the
/// interop package.
pub fn workspace() -> PathBuf {
    let crate_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    crate_dir
        .ancestors()
        .find(|dir| dir.join("tests/interop/package.json").is_file())
        .unwrap_or(&crate_dir)
        .to_path_buf()
}

/// `node tests/interop/<script>`, in the package's directory, killed when dropped.
pub fn command(script: &str) -> tokio::process::Command {
    let mut command = tokio::process::Command::new("node");
    command
        .arg(script)
        .current_dir(workspace().join("tests/interop"))
        .kill_on_drop(true);
    command
}

/// Runs `tests/interop/<script>` with `env` (5 minutes at most) and returns the JSON of its
/// last line.
pub async fn node(script: &str, env: &[(&str, &std::ffi::OsStr)]) -> Value {
    let mut command = command(script);
    for (name, value) in env {
        command.env(name, value);
    }
    run(script, command).await
}

/// Runs `command` (of `script`; 5 minutes at most), which must succeed, and returns the JSON
/// of the last line it printed.
pub async fn run(script: &str, mut command: tokio::process::Command) -> Value {
    let output = tokio::time::timeout(Duration::from_secs(300), command.output())
        .await
        .expect("the script finishes within 5 minutes")
        .expect("node runs (scripts/test installs the package)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{script} failed:\n{stdout}\n{stderr}"
    );
    if !stderr.trim().is_empty() {
        eprintln!("{script} wrote to stderr: {stderr}");
    }
    serde_json::from_str(stdout.lines().last().unwrap_or_default())
        .unwrap_or_else(|_| panic!("{script} printed {stdout}\n{stderr}"))
}
