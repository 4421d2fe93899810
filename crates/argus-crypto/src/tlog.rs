//! Transparency logs without I/O: RFC 9162 Merkle trees (leaf and node hashes, roots, inclusion
//! and consistency proofs), C2SP `tlog-checkpoint` bodies signed as C2SP `signed-note`s, and
//! C2SP `tlog-proof` texts.
//!
//! Two ways to hold a tree: a list of leaf hashes in memory ([`root_of`], [`inclusion_of`]; a
//! run's `eventsRoot`), or the stored hashes of every complete subtree, as `tlog_tiles` numbers
//! them ([`HashSource`], [`hashes_to_store`], [`tree_root`], [`prove_inclusion`],
//! [`prove_consistency`]; an organisation's log), where a proof reads `O(log n)` hashes in one
//! request.

use base64::{Engine as _, engine::general_purpose::STANDARD};
use signed_note::{Note, Signer as _, StandardSigner, StandardVerifier, VerifierList};
use tlog_tiles::{Hash, HashReader};

use crate::{Error, Result};

/// A SHA-256 digest: a leaf's or a node's hash, or a root.
pub type Digest = [u8; 32];

/// The leaf hash of `data`: `SHA-256(0x00 ‖ data)`.
pub fn leaf_hash(data: &[u8]) -> Digest {
    tlog_tiles::record_hash(data).0
}

/// The root of the empty tree: SHA-256 of nothing.
pub const EMPTY_ROOT: Digest = tlog_tiles::EMPTY_HASH.0;

/// The RFC 9162 root (`MTH`) over leaf hashes held in memory.
pub fn root_of(leaves: &[Digest]) -> Digest {
    match leaves.len() {
        0 => EMPTY_ROOT,
        1 => leaves[0],
        n => {
            let k = split(n);
            node(root_of(&leaves[..k]), root_of(&leaves[k..]))
        }
    }
}

/// The RFC 9162 inclusion proof (`PATH`) of leaf `index` among `leaves`; `None` when out of range.
pub fn inclusion_of(leaves: &[Digest], index: usize) -> Option<Vec<Digest>> {
    if index >= leaves.len() {
        return None;
    }
    let mut proof = Vec::new();
    path(leaves, index, &mut proof);
    Some(proof)
}

fn path(leaves: &[Digest], index: usize, out: &mut Vec<Digest>) {
    if leaves.len() <= 1 {
        return;
    }
    let k = split(leaves.len());
    if index < k {
        path(&leaves[..k], index, out);
        out.push(root_of(&leaves[k..]));
    } else {
        path(&leaves[k..], index - k, out);
        out.push(root_of(&leaves[..k]));
    }
}

/// The largest power of two smaller than `n` (`n > 1`).
fn split(n: usize) -> usize {
    1 << (usize::BITS - 1 - (n - 1).leading_zeros())
}

fn node(left: Digest, right: Digest) -> Digest {
    tlog_tiles::node_hash(Hash(left), Hash(right)).0
}

/// Checks that `proof` proves leaf `index` with hash `leaf` in the tree of `size` leaves whose
/// root is `root` (RFC 9162 §2.1.3.2).
pub fn verify_inclusion(index: u64, size: u64, leaf: Digest, proof: &[Digest], root: Digest) -> Result<()> {
    let proof: Vec<Hash> = proof.iter().copied().map(Hash).collect();
    tlog_tiles::check_record(&proof, size, Hash(root), index, Hash(leaf)).map_err(|_| Error::BadProof)
}

/// Checks that `proof` proves the tree of `old_size` leaves with root `old_root` is a prefix of
/// the tree of `new_size` leaves with root `new_root` (RFC 9162 §2.1.4.2).
pub fn verify_consistency(
    old_size: u64,
    old_root: Digest,
    new_size: u64,
    new_root: Digest,
    proof: &[Digest],
) -> Result<()> {
    let proof: Vec<Hash> = proof.iter().copied().map(Hash).collect();
    tlog_tiles::check_tree(&proof, new_size, Hash(new_root), old_size, Hash(old_root))
        .map_err(|_| Error::BadProof)
}

/// Reads stored hashes of a log by their `tlog_tiles` stored-hash index (see
/// [`stored_hash_index`]), all in one request.
pub trait HashSource {
    /// The hashes at `indexes`, in that order; an error when any is missing.
    fn hashes(&self, indexes: &[u64]) -> Result<Vec<Digest>>;
}

struct Reader<'a, S: ?Sized>(&'a S);

impl<S: HashSource + ?Sized> HashReader for Reader<'_, S> {
    fn read_hashes(&self, indexes: &[u64]) -> std::result::Result<Vec<Hash>, tlog_tiles::tlog::Error> {
        let hashes = self.0.hashes(indexes).map_err(|_| tlog_tiles::tlog::Error::IndexesNotInTree)?;
        if hashes.len() != indexes.len() {
            return Err(tlog_tiles::tlog::Error::IndexesNotInTree);
        }
        Ok(hashes.into_iter().map(Hash).collect())
    }
}

/// The stored-hash index of the node at `level` and position `n` (level 0: leaves).
pub fn stored_hash_index(level: u8, n: u64) -> u64 {
    tlog_tiles::stored_hash_index(level, n)
}

/// The hashes to store when appending leaf number `n` (from 0) with hash `leaf`: to be written at
/// stored-hash indexes `stored_hash_index(0, n)` onwards, consecutively.
pub fn hashes_to_store(n: u64, leaf: Digest, source: &(impl HashSource + ?Sized)) -> Result<Vec<Digest>> {
    tlog_tiles::stored_hashes_for_record_hash(n, Hash(leaf), &Reader(source))
        .map(|v| v.into_iter().map(|h| h.0).collect())
        .map_err(|_| Error::BadProof)
}

/// The root of the stored tree's first `size` leaves.
pub fn tree_root(size: u64, source: &(impl HashSource + ?Sized)) -> Result<Digest> {
    tlog_tiles::tree_hash(size, &Reader(source)).map(|h| h.0).map_err(|_| Error::BadProof)
}

/// The inclusion proof of leaf `index` in the stored tree's first `size` leaves.
pub fn prove_inclusion(size: u64, index: u64, source: &(impl HashSource + ?Sized)) -> Result<Vec<Digest>> {
    if index >= size {
        return Err(Error::BadProof);
    }
    tlog_tiles::prove_record(size, index, &Reader(source))
        .map(|p| p.into_iter().map(|h| h.0).collect())
        .map_err(|_| Error::BadProof)
}

/// The consistency proof from the stored tree's first `old_size` leaves to its first `new_size`.
pub fn prove_consistency(
    old_size: u64,
    new_size: u64,
    source: &(impl HashSource + ?Sized),
) -> Result<Vec<Digest>> {
    if old_size > new_size {
        return Err(Error::BadProof);
    }
    tlog_tiles::prove_tree(new_size, old_size, &Reader(source))
        .map(|p| p.into_iter().map(|h| h.0).collect())
        .map_err(|_| Error::BadProof)
}

/// A checkpoint's body (C2SP `tlog-checkpoint`): origin, size and root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// The log's origin line (e.g. `argus-tchap/dgsi`).
    pub origin: String,
    /// The tree size.
    pub size: u64,
    /// The tree root.
    pub root: Digest,
}

impl Checkpoint {
    /// The note text: `origin\nsize\nbase64(root)\n`.
    pub fn body(&self) -> String {
        format!("{}\n{}\n{}\n", self.origin, self.size, STANDARD.encode(self.root))
    }
}

/// The Ed25519 key that signs checkpoints as C2SP signed notes. `Debug` never shows it.
pub struct LogSigner {
    signer: StandardSigner,
    verifier_key: String,
}

impl std::fmt::Debug for LogSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogSigner").field("verifier_key", &self.verifier_key).finish_non_exhaustive()
    }
}

impl LogSigner {
    /// A new key named `name` (a schema-less URL-like name, e.g. `argus-tchap`): the signer and
    /// its secret in the signed-note text form (`PRIVATE+KEY+name+hexid+base64`), to keep.
    pub fn generate(name: &str) -> Result<(Self, argus_domain::Secret<String>)> {
        if !signed_note::is_key_name_valid(name) {
            return Err(Error::BadSigningKey);
        }
        let (skey, _vkey) = signed_note::generate_key(&mut rand::rngs::OsRng, name);
        let signer = Self::from_secret(&skey)?;
        Ok((signer, argus_domain::Secret::from_value(skey)))
    }

    /// The signer of a secret in the signed-note text form.
    pub fn from_secret(skey: &str) -> Result<Self> {
        let signer = StandardSigner::new(skey.trim()).map_err(|_| Error::BadSigningKey)?;
        let verifying = signer_verifying_key(skey.trim())?;
        let verifier_key = signed_note::new_ed25519_verifier_key(signer.name(), &verifying);
        Ok(Self { signer, verifier_key })
    }

    /// The verifier key (`name+hexid+base64`), to publish.
    pub fn verifier_key(&self) -> &str {
        &self.verifier_key
    }

    /// The key's name (the signature lines' name).
    pub fn name(&self) -> &str {
        self.signer.name()
    }

    /// The signed note of `checkpoint`.
    pub fn sign(&self, checkpoint: &Checkpoint) -> Result<String> {
        let mut note = Note::new(checkpoint.body().as_bytes(), &[]).map_err(|_| Error::BadProof)?;
        note.add_sigs(&[&self.signer]).map_err(|_| Error::BadSigningKey)?;
        String::from_utf8(note.to_bytes()).map_err(|_| Error::BadProof)
    }
}

fn signer_verifying_key(skey: &str) -> Result<ed25519_dalek_2::VerifyingKey> {
    // PRIVATE+KEY+name+hexid+base64(0x01 ‖ seed)
    // (base64 may itself hold `+`: the key is everything after the fourth.)
    let b64 = skey.splitn(5, '+').nth(4).ok_or(Error::BadSigningKey)?;
    let raw = STANDARD.decode(b64).map_err(|_| Error::BadSigningKey)?;
    let seed: [u8; 32] = raw.get(1..).and_then(|s| s.try_into().ok()).ok_or(Error::BadSigningKey)?;
    Ok(ed25519_dalek_2::SigningKey::from_bytes(&seed).verifying_key())
}

/// Verifies a signed checkpoint against `verifier_key` (`name+hexid+base64`, never one read from
/// the note) and returns its body.
pub fn verify_checkpoint(note: &str, verifier_key: &str) -> Result<Checkpoint> {
    let verifier = StandardVerifier::new(verifier_key.trim()).map_err(|_| Error::BadSigningKey)?;
    let list = VerifierList::new(vec![Box::new(verifier)]);
    let parsed = Note::from_bytes(note.as_bytes()).map_err(|_| Error::BadProof)?;
    parsed.verify(&list).map_err(|_| Error::BadSignature)?;
    let cp = tlog_tiles::Checkpoint::from_bytes(parsed.text()).map_err(|_| Error::BadProof)?;
    Ok(Checkpoint { origin: cp.origin().to_owned(), size: cp.size(), root: cp.hash().0 })
}

/// A C2SP `tlog-proof`: the inclusion of leaf `index` against the signed checkpoint `note`.
pub fn tlog_proof_text(index: u64, proof: &[Digest], note: &str) -> String {
    let mut out = format!("c2sp.org/tlog-proof@v1\nindex {index}\n");
    for h in proof {
        out.push_str(&STANDARD.encode(h));
        out.push('\n');
    }
    out.push('\n');
    out.push_str(note);
    out
}

/// A parsed C2SP `tlog-proof`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlogProof {
    /// The leaf's index.
    pub index: u64,
    /// The inclusion proof.
    pub proof: Vec<Digest>,
    /// The signed checkpoint, as written.
    pub note: String,
}

/// Reads a C2SP `tlog-proof` (an `extra` line is accepted and ignored).
pub fn parse_tlog_proof(text: &str) -> Result<TlogProof> {
    let (head, note) = text.split_once("\n\n").ok_or(Error::BadProof)?;
    let mut lines = head.lines();
    if lines.next() != Some("c2sp.org/tlog-proof@v1") {
        return Err(Error::BadProof);
    }
    let mut line = lines.next().ok_or(Error::BadProof)?;
    if line.starts_with("extra ") {
        line = lines.next().ok_or(Error::BadProof)?;
    }
    let index = line.strip_prefix("index ").and_then(|n| n.parse().ok()).ok_or(Error::BadProof)?;
    let proof = lines
        .map(|l| {
            STANDARD.decode(l).ok().and_then(|b| <Digest>::try_from(b.as_slice()).ok()).ok_or(Error::BadProof)
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(TlogProof { index, proof, note: note.to_owned() })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    struct Mem(HashMap<u64, Digest>);

    impl HashSource for Mem {
        fn hashes(&self, indexes: &[u64]) -> Result<Vec<Digest>> {
            indexes.iter().map(|i| self.0.get(i).copied().ok_or(Error::BadProof)).collect()
        }
    }

    fn stored(leaves: &[Digest]) -> Mem {
        let mut mem = Mem(HashMap::new());
        for (n, leaf) in leaves.iter().enumerate() {
            let n = n as u64;
            let new = hashes_to_store(n, *leaf, &mem).unwrap();
            let start = stored_hash_index(0, n);
            for (i, h) in new.into_iter().enumerate() {
                mem.0.insert(start + i as u64, h);
            }
        }
        mem
    }

    #[test]
    fn stored_and_in_memory_trees_agree_on_roots_and_proofs() {
        let leaves: Vec<Digest> = (0..37u32).map(|i| leaf_hash(&i.to_be_bytes())).collect();
        let mem = stored(&leaves);
        for size in 1..=leaves.len() {
            let root = root_of(&leaves[..size]);
            assert_eq!(tree_root(size as u64, &mem).unwrap(), root, "size {size}");
            for index in 0..size {
                let proof = inclusion_of(&leaves[..size], index).unwrap();
                assert_eq!(prove_inclusion(size as u64, index as u64, &mem).unwrap(), proof);
                verify_inclusion(index as u64, size as u64, leaves[index], &proof, root).unwrap();
                assert!(
                    verify_inclusion(index as u64, size as u64, leaves[(index + 1) % size], &proof, root)
                        .is_err()
                        || size == 1
                );
            }
            for old in 1..=size {
                let proof = prove_consistency(old as u64, size as u64, &mem).unwrap();
                verify_consistency(old as u64, root_of(&leaves[..old]), size as u64, root, &proof).unwrap();
            }
        }
    }

    #[test]
    fn a_signed_checkpoint_verifies_with_its_key_only() {
        let (signer, secret) = LogSigner::generate("argus-tchap").unwrap();
        let again = LogSigner::from_secret(secret.expose_value()).unwrap();
        assert_eq!(again.verifier_key(), signer.verifier_key());
        let cp = Checkpoint { origin: "argus-tchap/dgsi".into(), size: 3, root: leaf_hash(b"x") };
        let note = signer.sign(&cp).unwrap();
        assert_eq!(verify_checkpoint(&note, signer.verifier_key()).unwrap(), cp);
        let (other, _) = LogSigner::generate("argus-tchap").unwrap();
        assert!(verify_checkpoint(&note, other.verifier_key()).is_err());
        let text = tlog_proof_text(2, &[leaf_hash(b"a")], &note);
        let parsed = parse_tlog_proof(&text).unwrap();
        assert_eq!((parsed.index, parsed.proof.len(), parsed.note.as_str()), (2, 1, note.as_str()));
    }
}
