//! Prints every example message as CBOR diagnostic notation and hex, for `docs/protocol.md`.
//! `--raw NAME` writes the bytes of the example whose name starts with NAME to stdout instead.

use std::io::Write;

fn main() {
    let examples = outpost_protocol::examples::all_encoded();
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let [flag, name] = args.as_slice()
        && flag == "--raw"
    {
        match examples.iter().find(|(n, _)| n.starts_with(name.as_str())) {
            Some((_, bytes)) => {
                let _ = std::io::stdout().write_all(bytes);
                return;
            }
            None => {
                eprintln!("no example named {name:?}");
                std::process::exit(2);
            }
        }
    }
    for (name, bytes) in examples {
        println!("### {name} ({} bytes)\n", bytes.len());
        println!("```\n{}\n```\n", minicbor::display(&bytes));
        println!("```\n{}\n```\n", hex(&bytes));
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
