//! The shipped binaries answer `--help` and `--version`, and refuse unknown arguments with a
//! message that names them.

use std::process::Command;

use outpost_tests::bin_path;

fn run(bin: &str, args: &[&str]) -> std::process::Output {
    Command::new(bin_path::path(bin).unwrap())
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn both_binaries_print_their_version() {
    for bin in ["outpost-agent", "outpost-bridge"] {
        let out = run(bin, &["--version"]);
        assert!(out.status.success(), "{bin} --version failed");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            format!("{bin} {}", env!("CARGO_PKG_VERSION"))
        );
    }
}

#[test]
fn both_binaries_print_help_with_their_config_option() {
    for bin in ["outpost-agent", "outpost-bridge"] {
        let out = run(bin, &["--help"]);
        assert!(out.status.success(), "{bin} --help failed");
        let help = String::from_utf8_lossy(&out.stdout);
        assert!(help.contains(&format!("Usage: {bin}")), "{help}");
        assert!(help.contains("--config <CONFIG>"), "{help}");
    }
}

#[test]
fn an_unknown_argument_is_refused_by_name() {
    for bin in ["outpost-agent", "outpost-bridge"] {
        let out = run(bin, &["--frobnicate"]);
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("--frobnicate"), "{err}");
    }
}
