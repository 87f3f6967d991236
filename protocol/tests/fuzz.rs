//! Fuzzing the decoders with proptest (cargo-fuzz needs a nightly compiler, which this project's
//! pinned toolchain is not): arbitrary bytes and mutated valid messages into every message's
//! decoder. Nothing may panic, and whatever decodes must encode and decode to itself.
//!
//! Cases per target: `OUTPOST_FUZZ_CASES` (CI runs the default, 20,000; run more by hand, e.g.
//! `OUTPOST_FUZZ_CASES=1000000 cargo test --release -p outpost-protocol --test fuzz`). A failure
//! proptest finds is saved under `proptest-regressions/` and replayed by every later run: commit
//! it, so it stays a test forever.

use outpost_protocol::codec::encode_to_vec;
use outpost_protocol::*;
use proptest::prelude::*;

fn cases() -> u32 {
    std::env::var("OUTPOST_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000)
}

/// Decodes `bytes` as `M`; if it decodes, its encoding must decode to the same value.
fn check<M: Message + Default + PartialEq + std::fmt::Debug>(bytes: &[u8]) {
    if let Ok(m) = decode::<M>(bytes) {
        let again = encode_to_vec(&m);
        assert_eq!(
            decode::<M>(&again).as_ref(),
            Ok(&m),
            "re-encoding changed it"
        );
    }
}

fn every_decoder(bytes: &[u8]) {
    check::<Hello>(bytes);
    check::<Offer>(bytes);
    check::<Command>(bytes);
    check::<CommandReply>(bytes);
    check::<TaskStatus>(bytes);
    check::<StatusAck>(bytes);
    check::<AgentState>(bytes);
    let _ = codec::command_id_of(bytes);
}

/// A valid example message with some bytes changed, inserted or removed.
fn mutated() -> impl Strategy<Value = Vec<u8>> {
    let examples: Vec<Vec<u8>> = examples::all_encoded()
        .into_iter()
        .map(|(_, b)| b)
        .collect();
    (
        proptest::sample::select(examples),
        proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..8),
    )
        .prop_map(|(mut bytes, edits)| {
            for (at, byte, how) in edits {
                if bytes.is_empty() {
                    bytes.push(byte);
                    continue;
                }
                let i = at.index(bytes.len());
                match how {
                    0 => bytes[i] = byte,
                    1 => bytes.insert(i, byte),
                    _ => {
                        bytes.remove(i);
                    }
                }
            }
            bytes
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic_a_decoder(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        every_decoder(&bytes);
    }

    #[test]
    fn mutated_messages_never_panic_a_decoder(bytes in mutated()) {
        every_decoder(&bytes);
    }
}
