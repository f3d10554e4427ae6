//! Tree blobs as a hostile agent may write them: parsing either refuses or
//! yields names that are safe to create beneath a restore target.
#![no_main]

use cairn_repo::id::Id;
use cairn_repo::tree::Tree;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(t) = Tree::from_bytes(&Id([0; 32]), data) {
        for n in &t.nodes {
            let name = n.name_os().unwrap();
            let b = std::os::unix::ffi::OsStrExt::as_bytes(name.as_os_str());
            assert!(!b.is_empty() && b != b"." && b != b".." && !b.contains(&b'/'));
            let _ = n.target_os();
        }
        let again = t.to_bytes();
        assert!(Tree::from_bytes(&Id([0; 32]), &again).is_ok());
    }
});
