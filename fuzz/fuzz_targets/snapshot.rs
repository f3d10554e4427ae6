//! Snapshot documents as an agent proposes them.
#![no_main]

use cairn_repo::snapshot::Snapshot;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = serde_json::from_slice::<Snapshot>(data) {
        let again = serde_json::to_vec(&s).unwrap();
        let back: Snapshot = serde_json::from_slice(&again).unwrap();
        assert_eq!(serde_json::to_vec(&back).unwrap(), again);
    }
});
