//! Every message the controller decodes from an agent, from the first byte
//! of input choosing which.
#![no_main]

use cairn_proto::agent::v1 as pb;
use libfuzzer_sys::fuzz_target;
use prost::Message;

fn round_trip<M: Message + Default + PartialEq + std::fmt::Debug>(data: &[u8]) {
    if let Ok(m) = M::decode(data) {
        let again = m.encode_to_vec();
        assert_eq!(M::decode(again.as_slice()).unwrap(), m);
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((which, rest)) = data.split_first() else {
        return;
    };
    match which % 8 {
        0 => round_trip::<pb::AgentMessage>(rest),
        1 => round_trip::<pb::PackPiece>(rest),
        2 => round_trip::<pb::HaveBlobsRequest>(rest),
        3 => round_trip::<pb::ReadPackRequest>(rest),
        4 => round_trip::<pb::CommitSnapshotRequest>(rest),
        5 => round_trip::<pb::RegisterPackRequest>(rest),
        6 => round_trip::<pb::EnrollRequest>(rest),
        _ => round_trip::<pb::JobResult>(rest),
    }
});
