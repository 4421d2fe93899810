//! One blob-store suite, run against the filesystem store and a real S3-compatible server.

use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};

use argus_domain::{Secret, Sha256Digest};
use argus_media::{BlobStore, Error, FileBlobStore, S3BlobStore, S3Location, Staging};

use crate::{collect, entries, stage, unique_bytes};

/// Bytes of the "several MB" file: over one S3 part, so it goes up in several.
const LARGE: usize = 12 * 1024 * 1024 + 321;

async fn suite(store: &dyn BlobStore, staging: &Staging) {
    // Round trip, byte for byte.
    let small = unique_bytes(10_000);
    let staged = stage(staging, &small, 777).await;
    assert_eq!(store.size(&staged.sha256).await.unwrap(), None);
    store.put(&staged).await.unwrap();
    assert_eq!(store.size(&staged.sha256).await.unwrap(), Some(10_000));
    assert_eq!(collect(store.get(&staged.sha256, None).await.unwrap()).await.0, small);

    // Idempotent: the same content again (another staged copy) is Ok and still reads back.
    let again = stage(staging, &small, 10_000).await;
    assert_eq!(again.sha256, staged.sha256);
    store.put(&again).await.unwrap();
    store.put(&staged).await.unwrap();
    assert_eq!(collect(store.get(&staged.sha256, None).await.unwrap()).await.0, small);

    // Ranges: start, middle, end, empty, and out of range.
    let digest = staged.sha256;
    for range in [0..1, 0..100, 4_000..6_123, 9_990..10_000, 10_000..10_000, 0..10_000] {
        let (bytes, _) = collect(store.get(&digest, Some(range.clone())).await.unwrap()).await;
        assert_eq!(bytes, &small[range.start as usize..range.end as usize], "range {range:?}");
    }
    for range in [9_000..10_001, 10_001..10_002, 20_000..30_000] {
        let error = store.get(&digest, Some(range.clone())).await.err().unwrap();
        assert!(matches!(error, Error::RangeNotSatisfiable { size: 10_000 }), "range {range:?}: {error}");
    }

    // Not held.
    let absent = Sha256Digest::of(&unique_bytes(32));
    assert!(matches!(store.get(&absent, None).await.err().unwrap(), Error::NotFound));
    assert!(matches!(store.get(&absent, Some(0..1)).await.err().unwrap(), Error::NotFound));
    assert_eq!(store.size(&absent).await.unwrap(), None);

    // An empty file.
    let empty = stage(staging, b"", 1).await;
    store.put(&empty).await.unwrap();
    assert_eq!(store.size(&empty.sha256).await.unwrap(), Some(0));
    assert!(collect(store.get(&empty.sha256, None).await.unwrap()).await.0.is_empty());

    // Several MB: stored and read back whole, streamed in many pieces, never one buffer.
    let large = unique_bytes(LARGE);
    let staged = stage(staging, &large, 1 << 20).await;
    store.put(&staged).await.unwrap();
    assert_eq!(store.size(&staged.sha256).await.unwrap(), Some(LARGE as u64));
    let (bytes, chunks) = collect(store.get(&staged.sha256, None).await.unwrap()).await;
    assert!(bytes == large, "the large blob reads back byte for byte");
    assert!(chunks >= 8, "a {LARGE}-byte blob streams in pieces, got {chunks}");
    let tail = (LARGE - 5_000) as u64..LARGE as u64;
    let (bytes, _) = collect(store.get(&staged.sha256, Some(tail)).await.unwrap()).await;
    assert_eq!(bytes, &large[LARGE - 5_000..]);
}

#[tokio::test]
async fn the_filesystem_store_passes_the_suite() {
    let dir = tempfile::tempdir().unwrap();
    let staging = Staging::new(dir.path().join("staging")).unwrap();
    let store = FileBlobStore::open(dir.path().join("blobs")).unwrap();
    assert_eq!(store.name(), "file");
    suite(&store, &staging).await;
}

#[tokio::test]
async fn the_s3_store_passes_the_suite() {
    let Some(s3) = argus_testkit::s3::server() else { return };
    let location = S3Location::parse(&s3.store_url()).unwrap();
    assert_eq!(location.bucket, s3.bucket());
    let secret = Secret::new(argus_testkit::s3::SECRET_ACCESS_KEY);
    let store = S3BlobStore::new(&location, argus_testkit::s3::ACCESS_KEY_ID, &secret).unwrap();
    assert_eq!(store.name(), "s3");
    assert!(!format!("{store:?}").contains(argus_testkit::s3::SECRET_ACCESS_KEY));
    let dir = tempfile::tempdir().unwrap();
    let staging = Staging::new(dir.path().join("staging")).unwrap();
    suite(&store, &staging).await;
}

#[tokio::test]
async fn an_s3_bucket_that_does_not_exist_is_an_error_not_a_miss() {
    let Some(s3) = argus_testkit::s3::server() else { return };
    let location =
        S3Location { bucket: "no-such-bucket".to_owned(), ..S3Location::parse(&s3.store_url()).unwrap() };
    let secret = Secret::new(argus_testkit::s3::SECRET_ACCESS_KEY);
    let store = S3BlobStore::new(&location, argus_testkit::s3::ACCESS_KEY_ID, &secret).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let staging = Staging::new(dir.path()).unwrap();
    let staged = stage(&staging, b"evidence", 8).await;
    let error = store.put(&staged).await.unwrap_err();
    assert_eq!(error.code(), "STORAGE", "{error}");
}

#[tokio::test]
async fn filesystem_blobs_are_private_and_written_once() {
    let dir = tempfile::tempdir().unwrap();
    let staging = Staging::new(dir.path().join("staging")).unwrap();
    let root = dir.path().join("media").join("blobs");
    let store = FileBlobStore::open(&root).unwrap();
    let staged = stage(&staging, &unique_bytes(3_000), 1_000).await;
    store.put(&staged).await.unwrap();

    let hex = staged.sha256.to_hex();
    let file = root.join(&hex[..2]).join(&hex[2..4]).join(&hex);
    let mode = |path: &std::path::Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&file), 0o600);
    for folder in
        [root.clone(), root.join(".tmp"), root.join(&hex[..2]), root.join(&hex[..2]).join(&hex[2..4])]
    {
        assert_eq!(mode(&folder), 0o700, "{}", folder.display());
    }
    assert_eq!(mode(&dir.path().join("staging")), 0o700);
    assert!(entries(&root.join(".tmp")).is_empty());

    // Putting it again does not rewrite it.
    let inode = std::fs::metadata(&file).unwrap().ino();
    store.put(&stage(&staging, &std::fs::read(&file).unwrap(), 100).await).await.unwrap();
    assert_eq!(std::fs::metadata(&file).unwrap().ino(), inode);
}

#[tokio::test]
async fn a_failed_filesystem_put_leaves_no_blob_and_no_temporary_file() {
    let dir = tempfile::tempdir().unwrap();
    let staging = Staging::new(dir.path().join("staging")).unwrap();
    let root = dir.path().join("blobs");
    let store = FileBlobStore::open(&root).unwrap();
    let staged = stage(&staging, &unique_bytes(50_000), 4_096).await;
    // A folder where the blob should go makes the final rename fail.
    let hex = staged.sha256.to_hex();
    let target = root.join(&hex[..2]).join(&hex[2..4]).join(&hex);
    std::fs::create_dir_all(target.join("in-the-way")).unwrap();
    let error = store.put(&staged).await.unwrap_err();
    assert_eq!(error.code(), "IO", "{error}");
    assert!(!error.to_string().contains(&hex), "no path in the message");
    assert!(entries(&root.join(".tmp")).is_empty(), "the temporary copy is removed");
    assert_eq!(store.size(&staged.sha256).await.unwrap(), None);
}

#[test]
fn the_store_setting_opens_either_backend() {
    let dir = tempfile::tempdir().unwrap();
    let file = argus_media::open_blob_store("file", dir.path()).unwrap();
    assert_eq!(file.name(), "file");
    assert!(dir.path().join("media/blobs").is_dir());
    for refused in
        ["s3://", "s3://b?endpoint=http://10.0.0.8:9000", "s3://b/path", "s3://b?access_key_id=x", "minio"]
    {
        let error = argus_media::open_blob_store(refused, dir.path()).err().unwrap();
        assert_eq!(error.code(), "CONFIG", "{refused}");
    }
}

#[tokio::test]
async fn a_filesystem_blob_that_shrinks_while_read_ends_in_an_error_not_a_short_answer() {
    use futures::StreamExt as _;
    let dir = tempfile::tempdir().unwrap();
    let staging = Staging::new(dir.path().join("staging")).unwrap();
    let root = dir.path().join("blobs");
    let store = FileBlobStore::open(&root).unwrap();
    let bytes = unique_bytes(3 * 1024 * 1024);
    let staged = stage(&staging, &bytes, 1 << 20).await;
    store.put(&staged).await.unwrap();
    let hex = staged.sha256.to_hex();
    let file = root.join(&hex[..2]).join(&hex[2..4]).join(&hex);

    let mut stream = store.get(&staged.sha256, None).await.unwrap();
    let first = stream.next().await.unwrap().unwrap();
    assert_eq!(first, &bytes[..first.len()]);
    std::fs::OpenOptions::new().write(true).open(&file).unwrap().set_len(first.len() as u64 + 10).unwrap();
    let mut read = first.len();
    let error = loop {
        match stream.next().await {
            Some(Ok(chunk)) => read += chunk.len(),
            Some(Err(error)) => break error,
            None => panic!("the stream ended after {read} of {} bytes without an error", bytes.len()),
        }
    };
    assert_eq!(error.code(), "IO", "{error}");
}

/// Where the filesystem store put the blob `digest` under `root`.
fn blob_path(root: &std::path::Path, digest: &Sha256Digest) -> std::path::PathBuf {
    let hex = digest.to_hex();
    root.join(&hex[..2]).join(&hex[2..4]).join(&hex)
}

#[tokio::test]
async fn a_staged_file_beside_the_store_is_linked_not_copied_and_outlives_its_staging() {
    let dir = tempfile::tempdir().unwrap();
    let staging = Staging::new(dir.path().join("staging")).unwrap();
    let root = dir.path().join("blobs");
    let store = FileBlobStore::open(&root).unwrap();
    let bytes = unique_bytes(300_000);
    let staged = stage(&staging, &bytes, 4_096).await;
    let staged_inode = std::fs::metadata(staged.path()).unwrap().ino();
    store.put(&staged).await.unwrap();

    let file = blob_path(&root, &staged.sha256);
    let meta = std::fs::metadata(&file).unwrap();
    assert_eq!(meta.ino(), staged_inode, "the bytes are on disk once, not twice");
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let digest = staged.sha256;
    drop(staged);
    assert!(entries(&dir.path().join("staging")).is_empty(), "the staged name is gone");
    assert!(entries(&root.join(".tmp")).is_empty());
    assert_eq!(std::fs::metadata(&file).unwrap().nlink(), 1);
    assert!(collect(store.get(&digest, None).await.unwrap()).await.0 == bytes, "the blob reads back whole");
}

#[tokio::test]
async fn a_staged_file_on_another_filesystem_is_copied() {
    // /dev/shm is a filesystem of its own: no link reaches the store from it, a copy does.
    let other = match tempfile::tempdir_in("/dev/shm") {
        Ok(other) => other,
        Err(error) => {
            eprintln!("SKIP a_staged_file_on_another_filesystem_is_copied: no /dev/shm ({error})");
            return;
        }
    };
    let dir = tempfile::tempdir().unwrap();
    let device = |path: &std::path::Path| std::fs::metadata(path).unwrap().dev();
    if device(other.path()) == device(dir.path()) {
        eprintln!(
            "SKIP a_staged_file_on_another_filesystem_is_copied: /dev/shm is the temporary folder's filesystem"
        );
        return;
    }
    let staging = Staging::new(other.path().join("staging")).unwrap();
    let root = dir.path().join("blobs");
    let store = FileBlobStore::open(&root).unwrap();
    let bytes = unique_bytes(300_000);
    let staged = stage(&staging, &bytes, 4_096).await;
    store.put(&staged).await.unwrap();

    let file = blob_path(&root, &staged.sha256);
    let meta = std::fs::metadata(&file).unwrap();
    assert_ne!(meta.dev(), device(staged.path()));
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let digest = staged.sha256;
    drop(staged);
    assert!(entries(&root.join(".tmp")).is_empty());
    assert!(collect(store.get(&digest, None).await.unwrap()).await.0 == bytes, "the blob reads back whole");
}
