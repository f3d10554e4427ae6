//! An index segment with arbitrary plaintext (a damaged repository, or an
//! old agent's upload): decoding refuses or returns entries it can bound.
#![no_main]

use std::sync::LazyLock;

use cairn_repo::crypto::MasterKey;
use cairn_repo::id::Id;
use cairn_repo::index;
use libfuzzer_sys::fuzz_target;

static KEY: LazyLock<MasterKey> = LazyLock::new(MasterKey::generate);

fuzz_target!(|plain: &[u8]| {
    let sealed = KEY.seal(plain, 1);
    if let Ok(packs) = index::decode_segment(&KEY, &Id::of_stored(&sealed), &sealed) {
        let entries: usize = packs.iter().map(|(_, e)| e.len()).sum();
        assert!(entries * cairn_repo::pack::ENTRY_LEN <= plain.len());
        let again = index::encode_segment(&KEY, &packs);
        let back = index::decode_segment(&KEY, &Id::of_stored(&again), &again).unwrap();
        assert_eq!(back, packs);
    }
});
