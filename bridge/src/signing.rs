//! Signed commands: the bridge signs every command it sends with an Ed25519 key, over the
//! command's canonical CBOR (`Command::signed_bytes`: target agent and issue time included), so
//! an agent that trusts the key runs nothing else: not a forged command, not one meant for
//! another agent, not a replay (docs/security.md).
//!
//! The key is a PKCS#8 PEM file (`command_signing_key` in the config); `outpost-bridge
//! signing-key --file F` makes one (rcgen) and prints the public key agents trust.

use std::path::Path;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ring::signature::{Ed25519KeyPair, KeyPair};
use rustls_pki_types::PrivateKeyDer;
use rustls_pki_types::pem::PemObject;

use outpost_protocol::{Command, Signature};

/// The bridge's signing key.
#[derive(Clone)]
pub struct Signer(Arc<Ed25519KeyPair>);

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Signer(public {})", self.public_base64())
    }
}

impl Signer {
    /// Loads a PKCS#8 PEM Ed25519 key; the error names the file and what is wrong.
    pub fn load(path: &Path) -> Result<Self, String> {
        let der = PrivateKeyDer::from_pem_file(path).map_err(|e| format!("{path:?}: {e}"))?;
        let PrivateKeyDer::Pkcs8(pkcs8) = der else {
            return Err(format!("{path:?}: not a PKCS#8 private key"));
        };
        Ed25519KeyPair::from_pkcs8_maybe_unchecked(pkcs8.secret_pkcs8_der())
            .map(|k| Self(Arc::new(k)))
            .map_err(|e| format!("{path:?}: not an Ed25519 key ({e})"))
    }

    /// The public key as agents write it in `[commands] trusted_keys`: base64 of 32 bytes.
    pub fn public_base64(&self) -> String {
        B64.encode(self.0.public_key().as_ref())
    }

    /// Signs `cmd` in place (its `agent_id` and `issued_at_ms` must be set first).
    pub fn sign(&self, cmd: &mut Command) {
        let sig = self.0.sign(&cmd.signed_bytes());
        let mut bytes = [0u8; 64];
        bytes.copy_from_slice(sig.as_ref());
        cmd.signature = Some(Signature(bytes));
    }
}

/// Makes a new key at `path` (mode 0600) unless one is there; returns the signer either way.
pub fn create_or_load(path: &Path) -> Result<Signer, String> {
    if !path.exists() {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519)
            .map_err(|e| format!("generating an Ed25519 key: {e}"))?;
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| format!("{path:?}: {e}"))?;
        f.write_all(key.serialize_pem().as_bytes())
            .map_err(|e| format!("{path:?}: {e}"))?;
    }
    Signer::load(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_made_key_loads_again_and_its_signatures_verify_with_the_printed_public_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("signing.pem");
        let a = create_or_load(&path).unwrap();
        let b = create_or_load(&path).unwrap();
        assert_eq!(a.public_base64(), b.public_base64(), "the same key, reused");
        let mut cmd = outpost_protocol::examples::reconcile();
        cmd.agent_id = Some(outpost_protocol::AgentId::new("edge-1").unwrap());
        a.sign(&mut cmd);
        let public = B64.decode(a.public_base64()).unwrap();
        ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, &public)
            .verify(&cmd.signed_bytes(), &cmd.signature.unwrap().0)
            .unwrap();
        std::fs::write(
            &path,
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        )
        .unwrap();
        let e = Signer::load(&path).unwrap_err();
        assert!(e.contains("signing.pem"), "{e}");
    }
}
