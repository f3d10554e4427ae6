//! The column layout of a group's rows (format v1.3): an agent holds the key,
//! so a group may hold any bytes under encoding 0x03. `decode` must refuse
//! or return at most its bound, without panicking, and whatever `encode`
//! makes of any bytes must decode back to them.
#![no_main]

use cairn_repo::columns;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (Vec<u8>, u16, u16)| {
    let (bytes, max, prefix) = input;
    let max = max as usize;
    if let Ok(out) = columns::decode(&bytes, max) {
        assert!(out.len() <= max);
    }
    if let Some(t) = columns::encode(&bytes, prefix as usize) {
        assert_eq!(columns::decode(&t, usize::MAX).unwrap(), bytes);
    }
});
