//! Helpers the unit tests share.

use std::path::Path;
use std::sync::OnceLock;

/// Panic unless `event` validates against docs/protocol.schema.json.
pub fn assert_schema(event: &serde_json::Value) {
    static SCHEMA: OnceLock<jsonschema::Validator> = OnceLock::new();
    let schema = SCHEMA.get_or_init(|| {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/protocol.schema.json");
        let text = std::fs::read_to_string(path).expect("docs/protocol.schema.json exists");
        let schema = serde_json::from_str(&text).expect("the schema is JSON");
        jsonschema::validator_for(&schema).expect("the schema is a valid JSON Schema")
    });
    if let Err(error) = schema.validate(event) {
        panic!("event does not match the schema ({error}): {event}");
    }
}

/// The names in `dir`, sorted: what a download left behind.
pub fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}
