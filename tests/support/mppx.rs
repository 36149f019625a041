//! The mppx lines the interop package (`tests/interop/`) installs, for the interop tests of
//! every crate in the workspace (stoka's include this file by path).

use std::path::Path;

/// The mppx lines `package` installs: `mppx` (0.6.31, the line the Stellar MPP SDK supports) and
/// an `mppx-0.<minor>` alias for each later line, up to the newest; the names to load them by.
pub fn lines(package: &Path) -> Vec<String> {
    let manifest = std::fs::read_to_string(package.join("package.json")).unwrap();
    let manifest: serde_json::Value = serde_json::from_str(&manifest).unwrap();
    let lines: Vec<String> = manifest["dependencies"]
        .as_object()
        .unwrap()
        .keys()
        .filter(|name| *name == "mppx" || name.starts_with("mppx-"))
        .cloned()
        .collect();
    assert!(lines.len() >= 2, "{lines:?}");
    lines
}
