//! A pack whose header holds one group record (format v1.2) over a group
//! envelope of arbitrary plaintext, with an arbitrary claimed scope and
//! plaintext length: the agent holds the key, so it can seal both. `verify`
//! must refuse or accept without panicking; what it accepts names at most
//! `group::MAX_MEMBERS` distinct members, each under the id its bytes hash
//! to in the group's scope.
#![no_main]

use std::collections::HashSet;
use std::sync::LazyLock;

use cairn_repo::crypto::MasterKey;
use cairn_repo::group;
use cairn_repo::id::Id;
use cairn_repo::pack::{self, MAGIC};
use libfuzzer_sys::fuzz_target;

static KEY: LazyLock<MasterKey> = LazyLock::new(MasterKey::generate);

fuzz_target!(|input: (Vec<u8>, bool, u32)| {
    let (plain, own_scope, plain_length) = input;
    let env = KEY.seal_group_body(&plain, 1);
    let scope = match plain.get(..32) {
        Some(s) if own_scope => Id::from_slice(s).unwrap(),
        _ => Id([7; 32]),
    };
    let mut header = 1u32.to_le_bytes().to_vec();
    header.push(0x40);
    header.extend_from_slice(&scope.0);
    header.extend_from_slice(&0u32.to_le_bytes());
    header.extend_from_slice(&(env.len() as u32).to_le_bytes());
    header.extend_from_slice(&plain_length.to_le_bytes());
    let sealed = KEY.seal(&header, 1);
    let mut obj = env.clone();
    obj.extend_from_slice(&sealed);
    obj.extend_from_slice(&(sealed.len() as u32).to_le_bytes());
    obj.extend_from_slice(MAGIC);
    let id = Id::of_stored(&obj);
    if let Ok(entries) = pack::verify(&KEY, &id, &obj) {
        assert!(entries.len() <= group::MAX_MEMBERS);
        let g = group::open(&KEY, &env, &"fuzz").unwrap();
        assert_eq!(g.scope, scope);
        let mut seen = HashSet::new();
        for (e, (mid, bytes)) in entries.iter().zip(g.members()) {
            assert_eq!(e.id, *mid);
            assert_eq!(e.id, group::member_id(&KEY, &scope, bytes));
            assert_eq!(e.raw_length as usize, bytes.len());
            assert_eq!((e.offset, e.length), (0, env.len() as u32));
            assert!(seen.insert(e.id));
        }
        assert_eq!(entries.len(), g.len());
    }
});
