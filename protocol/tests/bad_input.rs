//! Hostile and broken input: every failure is an error that names the field, never a panic or
//! an allocation.

use minicbor::Encoder;
use outpost_protocol::codec::{MAX_MESSAGE_BYTES, encode_to_vec};
use outpost_protocol::*;

/// Builds CBOR by hand, for inputs no encoder here would write.
fn cbor(build: impl FnOnce(&mut Encoder<&mut Vec<u8>>)) -> Vec<u8> {
    let mut out = Vec::new();
    build(&mut Encoder::new(&mut out));
    out
}

/// A kill command whose body map is written by `body`.
fn kill_with(body: impl FnOnce(&mut Encoder<&mut Vec<u8>>)) -> Vec<u8> {
    cbor(|e| {
        e.map(4).unwrap();
        e.u8(0).unwrap().u16(1).unwrap();
        e.u8(1).unwrap().str("c-1").unwrap();
        e.u8(2).unwrap().u64(5).unwrap();
        e.u8(3).unwrap().array(2).unwrap().u8(1).unwrap();
        body(e);
    })
}

#[test]
fn every_truncation_of_every_example_is_an_error_not_a_panic() {
    for (name, bytes) in examples::all_encoded() {
        for cut in 0..bytes.len() {
            let part = &bytes[..cut];
            let errs = [
                decode::<Hello>(part).err(),
                decode::<Offer>(part).err(),
                decode::<Command>(part).err(),
                decode::<CommandReply>(part).err(),
                decode::<TaskStatus>(part).err(),
                decode::<StatusAck>(part).err(),
                decode::<AgentState>(part).err(),
            ];
            assert!(
                errs.iter().all(Option::is_some),
                "{name} cut at {cut} decoded"
            );
        }
    }
    // A cut inside a field names it.
    let bytes = encode_to_vec(&examples::launch());
    let image_at = bytes
        .windows(12)
        .position(|w| w == b"nginx:latest")
        .unwrap();
    let err = decode::<Command>(&bytes[..image_at + 3]).unwrap_err();
    assert_eq!(err.kind(), DecodeErrorKind::Truncated);
    assert_eq!(err.field(), "kind.launch.image");
}

#[test]
fn an_over_long_text_field_names_the_field_and_its_limit() {
    let long = "t".repeat(129);
    let bytes = kill_with(|e| {
        e.map(1).unwrap().u8(0).unwrap().str(&long).unwrap();
    });
    let err = decode::<Command>(&bytes).unwrap_err();
    assert_eq!(
        err.kind(),
        DecodeErrorKind::TooLong {
            limit: 128,
            actual: 129
        }
    );
    assert_eq!(err.field(), "kind.kill.task_id");
    assert!(
        err.to_string()
            .starts_with("field `kind.kill.task_id`: length 129 exceeds the limit of 128"),
        "{err}"
    );
}

#[test]
fn an_over_long_list_is_refused_from_its_header_without_reading_it() {
    // Claims a million task ids but holds none: refused before any entry is read.
    let bytes = cbor(|e| {
        e.map(4).unwrap();
        e.u8(0).unwrap().u16(1).unwrap();
        e.u8(1).unwrap().str("c-1").unwrap();
        e.u8(2).unwrap().u64(5).unwrap();
        e.u8(3).unwrap().array(2).unwrap().u8(4).unwrap();
        e.map(1).unwrap().u8(0).unwrap().array(1_000_000).unwrap();
    });
    let err = decode::<Command>(&bytes).unwrap_err();
    assert_eq!(
        err.kind(),
        DecodeErrorKind::TooLong {
            limit: 64,
            actual: 1_000_000
        }
    );
    assert_eq!(err.field(), "kind.reconcile.task_ids");
}

#[test]
fn an_oversized_message_is_refused_before_parsing() {
    let bytes = vec![0u8; MAX_MESSAGE_BYTES + 1];
    let err = decode::<Command>(&bytes).unwrap_err();
    assert_eq!(
        err.kind(),
        DecodeErrorKind::TooLong {
            limit: MAX_MESSAGE_BYTES,
            actual: MAX_MESSAGE_BYTES + 1
        }
    );
}

#[test]
fn a_wrong_typed_field_names_the_field_and_both_types() {
    let bytes = kill_with(|e| {
        e.map(2).unwrap();
        e.u8(0).unwrap().str("web.1").unwrap();
        e.u8(1).unwrap().str("ten").unwrap();
    });
    let err = decode::<Command>(&bytes).unwrap_err();
    assert_eq!(
        err.kind(),
        DecodeErrorKind::WrongType {
            expected: "unsigned integer",
            found: "text string"
        }
    );
    assert_eq!(err.field(), "kind.kill.grace_period_s");
    assert!(
        err.to_string()
            .contains("expected unsigned integer, found text string"),
        "{err}"
    );
}

#[test]
fn a_number_too_big_for_its_field_is_out_of_range() {
    let mut status = examples::status();
    status.host_ports.clear();
    let mut bytes = encode_to_vec(&status);
    // Append host_ports = [70000] by rewriting the map header count (+1) and adding the entry.
    bytes[0] += 1;
    let mut e = Encoder::new(&mut bytes);
    e.u8(10).unwrap().array(1).unwrap().u32(70_000).unwrap();
    let err = decode::<TaskStatus>(&bytes).unwrap_err();
    assert_eq!(err.kind(), DecodeErrorKind::OutOfRange { expected: "u16" });
    assert_eq!(err.field(), "host_ports");
}

#[test]
fn a_missing_required_field_is_named() {
    let bytes = kill_with(|e| {
        e.map(1).unwrap().u8(1).unwrap().u32(3).unwrap();
    });
    let err = decode::<Command>(&bytes).unwrap_err();
    assert_eq!(err.kind(), DecodeErrorKind::Missing);
    assert_eq!(err.field(), "kind.kill.task_id");
}

#[test]
fn a_duplicated_field_is_refused() {
    let bytes = kill_with(|e| {
        e.map(2).unwrap();
        e.u8(0).unwrap().str("a").unwrap();
        e.u8(0).unwrap().str("b").unwrap();
    });
    let err = decode::<Command>(&bytes).unwrap_err();
    assert_eq!(err.kind(), DecodeErrorKind::Duplicate);
    assert_eq!(err.field(), "kind.kill.task_id");
}

#[test]
fn an_unknown_command_kind_is_refused_with_its_value() {
    let bytes = cbor(|e| {
        e.map(4).unwrap();
        e.u8(0).unwrap().u16(1).unwrap();
        e.u8(1).unwrap().str("c-1").unwrap();
        e.u8(2).unwrap().u64(5).unwrap();
        e.u8(3)
            .unwrap()
            .array(2)
            .unwrap()
            .u8(99)
            .unwrap()
            .map(0)
            .unwrap();
    });
    let err = decode::<Command>(&bytes).unwrap_err();
    assert_eq!(err.kind(), DecodeErrorKind::UnknownVariant { value: 99 });
    assert_eq!(err.field(), "kind");
}

#[test]
fn an_unknown_task_state_is_refused() {
    let mut bytes = encode_to_vec(&examples::status());
    // The state (key 4) is TASK_RUNNING = 1: `04 01`.
    let at = bytes.windows(2).position(|w| w == [0x04, 0x01]).unwrap();
    bytes[at + 1] = 0x17; // 23: no such Mesos state
    let err = decode::<TaskStatus>(&bytes).unwrap_err();
    assert_eq!(err.kind(), DecodeErrorKind::UnknownVariant { value: 23 });
    assert_eq!(err.field(), "state");
}

#[test]
fn another_protocol_version_is_refused_first() {
    let mut bytes = encode_to_vec(&examples::ack());
    assert_eq!(&bytes[1..3], [0x00, 0x01]);
    bytes[2] = 0x02;
    let err = decode::<StatusAck>(&bytes).unwrap_err();
    assert_eq!(err.kind(), DecodeErrorKind::UnsupportedVersion { found: 2 });
    assert_eq!(err.field(), "version");
}

#[test]
fn bytes_after_the_message_are_refused() {
    let mut bytes = encode_to_vec(&examples::ack());
    bytes.push(0x00);
    let err = decode::<StatusAck>(&bytes).unwrap_err();
    assert_eq!(err.kind(), DecodeErrorKind::TrailingBytes { count: 1 });
}

#[test]
fn a_uuid_of_the_wrong_size_is_refused() {
    let bytes = cbor(|e| {
        e.map(3).unwrap();
        e.u8(0).unwrap().u16(1).unwrap();
        e.u8(1).unwrap().str("t").unwrap();
        e.u8(2).unwrap().bytes(&[1, 2, 3]).unwrap();
    });
    let err = decode::<StatusAck>(&bytes).unwrap_err();
    assert_eq!(
        err.kind(),
        DecodeErrorKind::WrongLength {
            expected: 16,
            actual: 3
        }
    );
    assert_eq!(err.field(), "uuid");
}

#[test]
fn unknown_keys_from_a_newer_peer_are_skipped() {
    let mut bytes = encode_to_vec(&examples::ack());
    bytes[0] += 1;
    let mut e = Encoder::new(&mut bytes);
    e.u8(40)
        .unwrap()
        .map(1)
        .unwrap()
        .str("future")
        .unwrap()
        .array(2)
        .unwrap();
    e.u8(1).unwrap().u8(2).unwrap();
    assert_eq!(decode::<StatusAck>(&bytes), Ok(examples::ack()));
}

#[test]
fn a_non_finite_number_is_refused() {
    let mut offer = examples::offer();
    offer.available.cpus = 0.1; // forces an f64 on the wire
    let mut bytes = encode_to_vec(&offer);
    let nan = f64::NAN.to_be_bytes();
    let at = bytes
        .windows(8)
        .position(|w| w == 0.1f64.to_be_bytes())
        .unwrap();
    bytes[at..at + 8].copy_from_slice(&nan);
    let err = decode::<Offer>(&bytes).unwrap_err();
    assert_eq!(
        err.kind(),
        DecodeErrorKind::OutOfRange {
            expected: "a finite number"
        }
    );
    assert_eq!(err.field(), "available.cpus");
}

#[test]
fn a_log_chunk_over_its_byte_limit_names_the_field_and_the_limit() {
    let bytes = cbor(|e| {
        e.map(5).unwrap();
        e.u8(0).unwrap().u16(1).unwrap();
        e.u8(1).unwrap().str("edge-07").unwrap();
        e.u8(2).unwrap().str("l-1").unwrap();
        e.u8(3).unwrap().u32(0).unwrap();
        e.u8(5).unwrap().bytes(&[b'x'; 16 * 1024 + 1]).unwrap();
    });
    let err = decode::<outpost_protocol::LogChunk>(&bytes).unwrap_err();
    assert_eq!(
        err.kind(),
        DecodeErrorKind::TooLong {
            limit: outpost_protocol::MAX_LOG_CHUNK,
            actual: 16 * 1024 + 1
        }
    );
    assert_eq!(err.field(), "data");
}
