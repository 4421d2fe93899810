//! The bag's tag files (RFC 8493: `bagit.txt`, `bag-info.txt`, the tag manifest), its minisign
//! signature, and the bag as one `.tar`.

use std::{
    fs::{self, File},
    io::{self, BufWriter, Write as _},
    path::Path,
};

use argus_crypto::package_signing::PackageSigner;
use argus_domain::Classification;
use sha2::{Digest as _, Sha512};
use time::OffsetDateTime;

use crate::{Result, hashing::sha512_file, messages::utc};

/// The bag's declaration.
pub(crate) const BAGIT_TXT: &str = "BagIt-Version: 1.0\nTag-File-Character-Encoding: UTF-8\n";

/// The tag files the tag manifest covers, in its order.
pub(crate) const TAG_FILES: [&str; 4] =
    ["bagit.txt", "bag-info.txt", "manifest-sha256.txt", "manifest-sha512.txt"];

/// The signature's file.
pub(crate) const SIGNATURE: &str = "tagmanifest-sha512.txt.minisig";

/// What `bag-info.txt` says.
pub(crate) struct Info<'a> {
    pub(crate) package_id: &'a str,
    pub(crate) org: &'a str,
    pub(crate) room_id: &'a str,
    pub(crate) range: &'a str,
    pub(crate) from: Option<OffsetDateTime>,
    pub(crate) to: Option<OffsetDateTime>,
    pub(crate) requester: &'a str,
    pub(crate) clearance: Classification,
    pub(crate) checkpoint_size: u64,
    pub(crate) log_index: u64,
    pub(crate) octets: u64,
    pub(crate) files: u64,
}

impl Info<'_> {
    /// The signature's trusted comment (one line).
    pub(crate) fn trusted_comment(&self) -> String {
        format!(
            "argus-tchap disclosure package {} org {} room {} range {} checkpoint size {}",
            self.package_id,
            self.org,
            self.room_id,
            self.range.replace(['\n', '\r'], " "),
            self.checkpoint_size
        )
    }

    fn text(&self) -> String {
        let date = OffsetDateTime::now_utc().date();
        let one_line = |s: &str| s.replace(['\n', '\r'], " ");
        format!(
            "Source-Organization: {}\nBagging-Date: {date}\nExternal-Identifier: {}\nBag-Group-Identifier: {}\n\
External-Description: Disclosure of one Tchap room / Communication d'un salon Tchap\n\
Argus-Range: {}\nArgus-Range-From: {}\nArgus-Range-To: {}\nArgus-Requester: {}\nArgus-Clearance: {}\n\
Argus-Checkpoint-Size: {}\nArgus-Disclosure-Log-Index: {}\nBag-Software-Agent: argus-tchap {}\nPayload-Oxum: {}.{}\n",
            one_line(self.org),
            one_line(self.package_id),
            one_line(self.room_id),
            one_line(self.range),
            self.from.map_or_else(|| "none".to_owned(), utc),
            self.to.map_or_else(|| "none".to_owned(), utc),
            one_line(self.requester),
            self.clearance.as_str(),
            self.checkpoint_size,
            self.log_index,
            env!("CARGO_PKG_VERSION"),
            self.octets,
            self.files,
        )
    }
}

/// Writes the tag files of the bag at `root` (whose payload and payload manifests are written)
/// and signs its tag manifest.
pub(crate) fn close(root: &Path, info: &Info<'_>, signer: &PackageSigner) -> Result<()> {
    fs::write(root.join("bagit.txt"), BAGIT_TXT)?;
    fs::write(root.join("bag-info.txt"), info.text())?;
    let mut manifest = String::new();
    for name in TAG_FILES {
        manifest.push_str(&format!("{}  {name}\n", sha512_file(&root.join(name))?));
    }
    let tag_manifest = root.join("tagmanifest-sha512.txt");
    fs::write(&tag_manifest, &manifest)?;
    let signature = signer.sign(manifest.as_bytes(), &info.trusted_comment())?;
    fs::write(root.join(SIGNATURE), signature)?;
    Ok(())
}

/// Writes the bag at `bag_dir` as one `.tar` at `out_file` (entries under the bag's folder
/// name); returns its SHA-512 (hex) and size.
///
/// # Errors
///
/// I/O failures.
pub fn write_tar(bag_dir: &Path, out_file: &Path) -> Result<(String, u64)> {
    let name = bag_dir.file_name().map_or_else(|| "bag".into(), |n| n.to_string_lossy().into_owned());
    let out = HashingOut {
        inner: BufWriter::with_capacity(1 << 20, File::create(out_file)?),
        hash: Sha512::new(),
        size: 0,
    };
    let mut builder = tar::Builder::new(out);
    builder.follow_symlinks(false);
    builder.mode(tar::HeaderMode::Deterministic);
    // The tar crate names the file in its errors: only the kind is kept.
    builder.append_dir_all(&name, bag_dir).map_err(|e| io::Error::from(e.kind()))?;
    let mut out = builder.into_inner()?;
    out.inner.flush()?;
    out.inner.get_ref().sync_all()?;
    Ok((hex::encode(out.hash.finalize()), out.size))
}

/// The tar's output, hashed as it is written.
struct HashingOut {
    inner: BufWriter<File>,
    hash: Sha512,
    size: u64,
}

impl io::Write for HashingOut {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        let written = buf.get(..n).unwrap_or_default();
        self.hash.update(written);
        self.size += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}
