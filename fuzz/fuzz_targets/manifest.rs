//! Database dump manifests read back from a snapshot before a restore: a
//! manifest that passes `check_sections` never indexes outside its dump.
#![no_main]

use cairn_dump::Manifest;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (u16, &[u8])| {
    let (blobs, json) = input;
    let Ok(m) = serde_json::from_slice::<Manifest>(json) else {
        return;
    };
    let again = serde_json::to_vec(&m).unwrap();
    assert_eq!(serde_json::from_slice::<Manifest>(&again).unwrap(), m);
    if m.check_sections(blobs as usize).is_ok() {
        let content = vec![0u8; blobs as usize];
        for s in &m.sections {
            let _ = &content[s.first_blob..s.first_blob + s.blobs];
        }
    }
});
