//! Golden bytes: the encoding of each worked example is pinned, so the wire cannot drift
//! silently. A deliberate change of the format updates `golden.txt` and `docs/protocol.md`
//! (regenerate both with `cargo run -p outpost-protocol --example diag`).

use outpost_protocol::examples;

const GOLDEN: &str = include_str!("golden.txt");
const PROTOCOL_DOC: &str = include_str!("../../docs/protocol.md");

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn golden() -> Vec<(String, String)> {
    GOLDEN
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (name, hex) = l.rsplit_once(' ').expect("`name hex` per line");
            (name.trim().to_string(), hex.trim().to_string())
        })
        .collect()
}

#[test]
fn every_example_encodes_to_its_golden_bytes() {
    let golden = golden();
    let examples = examples::all_encoded();
    assert_eq!(golden.len(), examples.len(), "one golden line per example");
    for ((gname, ghex), (name, bytes)) in golden.iter().zip(&examples) {
        assert_eq!(gname, name);
        assert_eq!(ghex, &hex(bytes), "the encoding of `{name}` changed");
    }
}

#[test]
fn golden_bytes_decode_to_the_examples() {
    use outpost_protocol::*;
    let bytes = |name: &str| -> Vec<u8> {
        let (_, h) = golden().into_iter().find(|(n, _)| n == name).unwrap();
        (0..h.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&h[i..i + 2], 16).unwrap())
            .collect()
    };
    assert_eq!(decode::<Hello>(&bytes("hello")), Ok(examples::hello()));
    assert_eq!(decode::<Offer>(&bytes("offer")), Ok(examples::offer()));
    assert_eq!(
        decode::<Command>(&bytes("command: launch")),
        Ok(examples::launch())
    );
    assert_eq!(
        decode::<Command>(&bytes("command: kill")),
        Ok(examples::kill())
    );
    assert_eq!(
        decode::<Command>(&bytes("command: pull")),
        Ok(examples::pull())
    );
    assert_eq!(
        decode::<Command>(&bytes("command: drain")),
        Ok(examples::drain())
    );
    assert_eq!(
        decode::<Command>(&bytes("command: reconcile")),
        Ok(examples::reconcile())
    );
    assert_eq!(
        decode::<CommandReply>(&bytes("reply: accepted")),
        Ok(examples::reply_accepted())
    );
    assert_eq!(
        decode::<CommandReply>(&bytes("reply: rejected")),
        Ok(examples::reply_rejected())
    );
    assert_eq!(
        decode::<TaskStatus>(&bytes("status")),
        Ok(examples::status())
    );
    assert_eq!(decode::<StatusAck>(&bytes("ack")), Ok(examples::ack()));
    assert_eq!(
        decode::<AgentState>(&bytes("state (last will)")),
        Ok(examples::last_will())
    );
    assert_eq!(
        decode::<Command>(&bytes("command: read_logs")),
        Ok(examples::read_logs())
    );
    assert_eq!(
        decode::<Command>(&bytes("command: stop_logs")),
        Ok(examples::stop_logs())
    );
    assert_eq!(
        decode::<LogChunk>(&bytes("logs: chunk")),
        Ok(examples::log_chunk())
    );
    assert_eq!(
        decode::<LogChunk>(&bytes("logs: end")),
        Ok(examples::log_end())
    );
}

#[test]
fn a_hello_from_an_agent_older_than_its_address_field_still_decodes() {
    // The hello example as agents before the `address` field (key 6) sent it.
    let old = "a600010167656467652d3037026e656467652d30372e736974652d610365302e312e30048282647261636b62723282647a6f6e65656e6f727468051b0000019ab697e800";
    let bytes: Vec<u8> = (0..old.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&old[i..i + 2], 16).unwrap())
        .collect();
    let hello = outpost_protocol::decode::<outpost_protocol::Hello>(&bytes).unwrap();
    let mut expected = examples::hello();
    expected.address = None;
    assert_eq!(hello, expected);
}

#[test]
fn the_protocol_doc_shows_every_example_as_it_is_encoded() {
    for (name, bytes) in examples::all_encoded() {
        let diag = minicbor::display(&bytes).to_string();
        assert!(
            PROTOCOL_DOC.contains(&diag),
            "docs/protocol.md lacks the current diagnostic notation of `{name}`:\n{diag}"
        );
        assert!(
            PROTOCOL_DOC.contains(&hex(&bytes)),
            "docs/protocol.md lacks the hex of `{name}`"
        );
    }
}

#[test]
fn decoding_a_launch_fits_in_a_small_thread_stack() {
    // The agent decodes commands on ordinary threads; a launch must not need a huge stack
    // even in a debug build.
    let bytes = outpost_protocol::codec::encode_to_vec(&examples::launch());
    let handle = std::thread::Builder::new()
        .stack_size(1024 * 1024)
        .spawn(move || outpost_protocol::decode::<outpost_protocol::Command>(&bytes).is_ok())
        .unwrap();
    assert!(handle.join().unwrap());
}

#[test]
fn a_command_from_before_epochs_still_decodes_without_one() {
    // `command: kill` as bridges wrote it before key 6 (the epoch) existed.
    let old = "a400010168632d303030313032021b0000019ab69af540038201a200782f64656d6f2d6e67696e782e37643263316630652d346231612d313165662d396133632d303234326163313130303032010a";
    let bytes: Vec<u8> = (0..old.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&old[i..i + 2], 16).unwrap())
        .collect();
    let cmd = outpost_protocol::decode::<outpost_protocol::Command>(&bytes).unwrap();
    assert_eq!(cmd.epoch, None);
    let mut want = examples::kill();
    want.epoch = None;
    assert_eq!(cmd, want);
}
