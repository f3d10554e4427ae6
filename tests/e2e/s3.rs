//! STO-1: the same behaviour on a real S3-compatible server (Garage).

use cairn_tests::*;

/// The storage contract, against Garage.
#[test]
fn garage_keeps_the_storage_contract() {
    let g = Garage::start().expect("start garage");
    let s = g.storage("contract").unwrap();
    cairn_repo::storage::contract_suite(&s);
}

/// The fleet round trip of `fleet.rs`, on Garage.
#[test]
fn fleet_backs_up_and_restores_byte_identical_on_garage() {
    let g = Garage::start().expect("start garage");
    let tmp = tempfile::tempdir().unwrap();
    let sites = gen_fleet(&tmp.path().join("fleet"), 2, 0.05);
    crate::fleet::add_edge_cases(&sites[0]);
    let ctl = g.apply_env(Ctl::new("s3://cairn/fleet-repo", "garage pass"));
    ctl.ok(&["init"]);
    assert_eq!(
        ctl.run(&["init"]).status.code(),
        Some(1),
        "init twice must refuse"
    );
    crate::fleet::round_trip(&ctl, &sites, tmp.path());
    // The credentials never show up in cairnctl's output.
    let out = ctl.run(&["snapshots"]);
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!all.contains(&g.secret));
}
