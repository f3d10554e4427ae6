//! A group envelope whose plaintext is arbitrary: the agent holds the key, so
//! it can seal any table and members it likes. Opening must refuse or accept
//! without panicking or allocating from a claimed count or length, and a
//! member comes back only under the id its bytes hash to.
#![no_main]

use std::sync::LazyLock;

use cairn_repo::crypto::MasterKey;
use cairn_repo::group;
use libfuzzer_sys::fuzz_target;

static KEY: LazyLock<MasterKey> = LazyLock::new(MasterKey::generate);

fuzz_target!(|plain: Vec<u8>| {
    let env = KEY.seal_group_body(&plain, 1);
    if let Ok(g) = group::open(&KEY, &env, &"fuzz") {
        for (id, bytes) in g.members() {
            assert_eq!(*id, group::member_id(&KEY, &g.scope, bytes));
            let (got, scope) = KEY.open_blob_scoped(id, &env, usize::MAX).unwrap();
            assert_eq!(got, bytes);
            assert_eq!(scope, Some(g.scope));
        }
    }
});
