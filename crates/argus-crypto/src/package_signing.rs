//! Signatures of disclosure packages: minisign (Ed25519, prehashed `ED`), so that the Debian
//! `minisign` tool checks them (`minisign -Vm tagmanifest-sha512.txt -P <key>`).

use std::io::Read;

use argus_domain::Secret;

use crate::{Error, Result};

/// The minisign key that signs packages. `Debug` never shows it.
pub struct PackageSigner {
    secret: minisign::SecretKey,
    public: minisign::PublicKey,
}

impl std::fmt::Debug for PackageSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PackageSigner").field("public_key", &self.public_key()).finish_non_exhaustive()
    }
}

impl PackageSigner {
    /// A new unencrypted key pair: the signer and its secret key in minisign's file form, to keep
    /// (0600, outside the database).
    pub fn generate() -> Result<(Self, Secret<String>)> {
        let pair = minisign::KeyPair::generate_unencrypted_keypair().map_err(|_| Error::BadSigningKey)?;
        let text = pair
            .sk
            .to_box(Some("argus-tchap package signing key"))
            .map_err(|_| Error::BadSigningKey)?
            .into_string();
        Ok((Self { secret: pair.sk, public: pair.pk }, Secret::new(text)))
    }

    /// The signer of a secret key in minisign's file form (unencrypted).
    pub fn from_secret(text: &str) -> Result<Self> {
        let boxed = minisign::SecretKeyBox::from_string(text).map_err(|_| Error::BadSigningKey)?;
        let secret = boxed.into_unencrypted_secret_key().map_err(|_| Error::BadSigningKey)?;
        let public = minisign::PublicKey::from_secret_key(&secret).map_err(|_| Error::BadSigningKey)?;
        Ok(Self { secret, public })
    }

    /// The public key's base64 line (what `minisign -P` takes).
    pub fn public_key(&self) -> String {
        self.public.to_base64()
    }

    /// The `.minisig` text of `data`, with `trusted_comment` (one line) signed with it.
    pub fn sign(&self, data: impl Read, trusted_comment: &str) -> Result<String> {
        if trusted_comment.contains(['\n', '\r']) {
            return Err(Error::BadSignature);
        }
        let sig = minisign::sign(Some(&self.public), &self.secret, data, Some(trusted_comment), None)
            .map_err(|_| Error::BadSigningKey)?;
        Ok(sig.into_string())
    }
}

/// Verifies a `.minisig` text over `data` with a public key's base64 line (never one read from
/// the package); returns the trusted comment.
pub fn verify_package_signature(
    public_key: &str,
    signature: &str,
    data: impl Read + std::io::Seek,
) -> Result<String> {
    let pk = minisign::PublicKey::from_base64(public_key.trim()).map_err(|_| Error::BadSigningKey)?;
    let sig = minisign::SignatureBox::from_string(signature).map_err(|_| Error::BadSignature)?;
    minisign::verify(&pk, &sig, data, true, false, false).map_err(|_| Error::BadSignature)?;
    sig.trusted_comment().map_err(|_| Error::BadSignature)
}
