//! Prints every example message as CBOR diagnostic notation and hex, for `docs/protocol.md`.

fn main() {
    for (name, bytes) in outpost_protocol::examples::all_encoded() {
        println!("### {name} ({} bytes)\n", bytes.len());
        println!("```\n{}\n```\n", minicbor::display(&bytes));
        println!("```\n{}\n```\n", hex(&bytes));
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
