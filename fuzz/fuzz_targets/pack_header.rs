//! A pack whose header plaintext and blob area are arbitrary: the agent holds
//! the key, so it can seal any header it likes. `verify` must refuse or
//! accept without panicking or allocating from a claimed length.
#![no_main]

use std::sync::LazyLock;

use cairn_repo::crypto::MasterKey;
use cairn_repo::id::Id;
use cairn_repo::pack::{self, MAGIC};
use libfuzzer_sys::fuzz_target;

static KEY: LazyLock<MasterKey> = LazyLock::new(MasterKey::generate);

fuzz_target!(|input: (Vec<u8>, Vec<u8>)| {
    let (blob_area, header) = input;
    let sealed = KEY.seal(&header, 1);
    let mut obj = blob_area;
    obj.extend_from_slice(&sealed);
    obj.extend_from_slice(&(sealed.len() as u32).to_le_bytes());
    obj.extend_from_slice(MAGIC);
    let id = Id::of_stored(&obj);
    let _ = pack::parse_header(&KEY, &id, &obj, obj.len() as u64);
    if let Ok(entries) = pack::verify(&KEY, &id, &obj) {
        for e in entries {
            assert!(e.offset as usize + e.length as usize <= obj.len());
        }
    }
});
