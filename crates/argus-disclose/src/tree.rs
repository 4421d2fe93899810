//! A run's tree of versions held in memory as the hashes of its complete subtrees, so that the
//! inclusion proof of each of its versions costs `O(log n)` instead of rebuilding the tree.

use argus_crypto::tlog::{self, Digest, HashSource};

/// The stored hashes of one tree, by `tlog_tiles` stored-hash index.
pub(crate) struct Subtrees {
    hashes: Vec<Digest>,
    size: u64,
}

impl HashSource for Subtrees {
    fn hashes(&self, indexes: &[u64]) -> argus_crypto::Result<Vec<Digest>> {
        indexes
            .iter()
            .map(|&i| {
                usize::try_from(i)
                    .ok()
                    .and_then(|i| self.hashes.get(i).copied())
                    .ok_or(argus_crypto::Error::BadProof)
            })
            .collect()
    }
}

impl Subtrees {
    /// An empty tree.
    #[cfg(feature = "testing")]
    pub(crate) fn empty() -> Self {
        Self { hashes: Vec::new(), size: 0 }
    }

    /// The tree over `leaves` (leaf hashes, in order).
    pub(crate) fn new(leaves: &[Digest]) -> argus_crypto::Result<Self> {
        let mut tree = Self { hashes: Vec::with_capacity(leaves.len() * 2), size: 0 };
        for leaf in leaves {
            tree.push(*leaf)?;
        }
        Ok(tree)
    }

    /// Appends a leaf hash.
    pub(crate) fn push(&mut self, leaf: Digest) -> argus_crypto::Result<()> {
        let new = tlog::hashes_to_store(self.size, leaf, self)?;
        self.hashes.extend(new);
        self.size += 1;
        Ok(())
    }

    /// Leaves in the tree.
    pub(crate) fn size(&self) -> u64 {
        self.size
    }

    /// The root of the first `size` leaves.
    #[cfg(feature = "testing")]
    pub(crate) fn root(&self, size: u64) -> argus_crypto::Result<Digest> {
        tlog::tree_root(size, self)
    }

    /// The inclusion proof of leaf `index` among the first `size` leaves.
    pub(crate) fn inclusion(&self, index: u64, size: u64) -> argus_crypto::Result<Vec<Digest>> {
        tlog::prove_inclusion(size, index, self)
    }
}
