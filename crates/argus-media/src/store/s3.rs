//! The S3-compatible blob store (MinIO, Ceph RGW, Garage, AWS) through the `object_store`
//! crate: objects `blobs/ab/cd/<sha256 hex>` in one bucket, path-style requests, multipart
//! uploads streamed from the staged file.

use std::fmt;
use std::net::IpAddr;
use std::ops::Range;

use argus_domain::{Secret, Sha256Digest};
use futures::future::BoxFuture;
use futures::{FutureExt as _, StreamExt as _, TryStreamExt as _};
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as ObjectPath;
use object_store::{GetOptions, GetRange, ObjectStore as _, PutPayload, WriteMultipart};
use tokio::io::AsyncReadExt as _;

use super::{BlobStore, blob_key, check_range};
use crate::{ByteStream, Error, Result, StagedFile};

/// Size of one uploaded part (S3 wants at least 5 MiB but for the last); a file smaller than
/// this is sent in one request.
const PART_BYTES: usize = 8 * 1024 * 1024;

/// How many parts may be in flight at once (memory is about this many parts).
const PARTS_IN_FLIGHT: usize = 2;

/// The read buffer while uploading.
const READ_CHUNK: usize = 1024 * 1024;

/// Where an S3 store is: the bucket, the endpoint (`None` for AWS itself) and the region, as
/// the `[media] store` setting `s3://bucket?endpoint=…&region=…` gives them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Location {
    /// The bucket.
    pub bucket: String,
    /// The endpoint URL (`https://…`; plain `http://` only on loopback).
    pub endpoint: Option<String>,
    /// The region (`us-east-1` when not given).
    pub region: String,
}

impl S3Location {
    /// Parses `s3://bucket?endpoint=…&region=…`. Credentials are never taken from the URL.
    ///
    /// ```
    /// let at = argus_media::S3Location::parse("s3://evidence?endpoint=http://127.0.0.1:9000")?;
    /// assert_eq!((at.bucket.as_str(), at.region.as_str()), ("evidence", "us-east-1"));
    /// assert!(argus_media::S3Location::parse("s3://b?endpoint=http://minio.example:9000").is_err());
    /// assert!(argus_media::S3Location::parse("s3://b?secret_access_key=x").is_err());
    /// # Ok::<(), argus_media::Error>(())
    /// ```
    pub fn parse(spec: &str) -> Result<Self> {
        let config = |reason: &str| Error::Config(format!("store: {reason}"));
        let url = url::Url::parse(spec).map_err(|_| config("not a URL"))?;
        if url.scheme() != "s3" || !url.username().is_empty() || url.password().is_some() {
            return Err(config("expected s3://bucket?endpoint=…&region=…"));
        }
        let bucket = url
            .host_str()
            .filter(|b| valid_bucket(b))
            .ok_or_else(|| config("no valid bucket name"))?
            .to_owned();
        if url.port().is_some() || url.fragment().is_some() {
            return Err(config("the URL names a bucket only"));
        }
        if !matches!(url.path(), "" | "/") {
            return Err(config("the URL names a bucket only, no path"));
        }
        let mut location = Self { bucket, endpoint: None, region: "us-east-1".to_owned() };
        for (key, value) in url.query_pairs() {
            match &*key {
                "endpoint" => location.endpoint = Some(check_endpoint(&value)?),
                "region" => location.region = value.into_owned(),
                _ => return Err(config("only the parameters endpoint and region are read")),
            }
        }
        Ok(location)
    }
}

/// An S3 bucket name: 3 to 63 of lowercase letters, digits, `.` and `-`.
fn valid_bucket(b: &str) -> bool {
    (3..=63).contains(&b.len())
        && b.bytes().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'.' || c == b'-')
}

/// Checks an endpoint URL: `https`, or `http` to a loopback address.
fn check_endpoint(endpoint: &str) -> Result<String> {
    let config = |reason: &str| Error::Config(format!("store endpoint: {reason}"));
    let url = url::Url::parse(endpoint).map_err(|_| config("not a URL"))?;
    let loopback = match url.host() {
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        Some(url::Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
        None => return Err(config("no host")),
    };
    match url.scheme() {
        "https" => Ok(endpoint.trim_end_matches('/').to_owned()),
        "http" if loopback => Ok(endpoint.trim_end_matches('/').to_owned()),
        "http" => Err(config("plain http is allowed on loopback only")),
        _ => Err(config("expected http or https")),
    }
}

/// Blobs as objects in an S3-compatible bucket (for deployments with replicas).
pub struct S3BlobStore {
    store: AmazonS3,
    bucket: String,
}

impl fmt::Debug for S3BlobStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3BlobStore").field("bucket", &self.bucket).finish_non_exhaustive()
    }
}

impl S3BlobStore {
    /// Connects to `location` with these credentials (no request is made yet).
    pub fn new(location: &S3Location, access_key_id: &str, secret_access_key: &Secret) -> Result<Self> {
        let mut builder = AmazonS3Builder::new()
            .with_bucket_name(&location.bucket)
            .with_region(&location.region)
            .with_virtual_hosted_style_request(false)
            .with_access_key_id(access_key_id)
            .with_secret_access_key(secret_access_key.expose_secret());
        if let Some(endpoint) = &location.endpoint {
            let endpoint = check_endpoint(endpoint)?;
            builder = builder.with_allow_http(endpoint.starts_with("http://")).with_endpoint(endpoint);
        }
        let store = builder
            .build()
            .map_err(|_| Error::Config("store: the S3 client could not be built".to_owned()))?;
        Ok(Self { store, bucket: location.bucket.clone() })
    }

    /// Connects to `location` with the credentials of `AWS_ACCESS_KEY_ID` and
    /// `AWS_SECRET_ACCESS_KEY`.
    pub fn from_env(location: &S3Location) -> Result<Self> {
        let var =
            |name: &str| std::env::var(name).map_err(|_| Error::Config(format!("store: {name} is not set")));
        let secret = Secret::new(var("AWS_SECRET_ACCESS_KEY")?);
        Self::new(location, &var("AWS_ACCESS_KEY_ID")?, &secret)
    }

    fn path_of(digest: &Sha256Digest) -> ObjectPath {
        ObjectPath::from(format!("blobs/{}", blob_key(digest)))
    }

    async fn head(&self, path: &ObjectPath) -> Result<Option<u64>> {
        match self.store.head(path).await {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(error) => Err(storage(&error)),
        }
    }

    async fn upload(&self, path: &ObjectPath, staged: &StagedFile) -> Result<()> {
        let mut file = tokio::fs::File::open(staged.path()).await?;
        if staged.size < PART_BYTES as u64 {
            let mut bytes = Vec::with_capacity(usize::try_from(staged.size).unwrap_or(0));
            file.read_to_end(&mut bytes).await?;
            self.store.put(path, PutPayload::from(bytes)).await.map_err(|e| storage(&e))?;
            return Ok(());
        }
        let upload = self.store.put_multipart(path).await.map_err(|e| storage(&e))?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_BYTES);
        let mut buf = vec![0_u8; READ_CHUNK];
        loop {
            let read = async {
                writer.wait_for_capacity(PARTS_IN_FLIGHT).await.map_err(|e| storage(&e))?;
                Ok::<_, Error>(file.read(&mut buf).await?)
            };
            match read.await {
                Ok(0) => break,
                Ok(n) => writer.write(&buf[..n]),
                Err(error) => {
                    let _ = writer.abort().await;
                    return Err(error);
                }
            }
        }
        writer.finish().await.map_err(|e| storage(&e))?;
        Ok(())
    }
}

impl BlobStore for S3BlobStore {
    fn put<'a>(&'a self, staged: &'a StagedFile) -> BoxFuture<'a, Result<()>> {
        async move {
            let path = Self::path_of(&staged.sha256);
            if self.head(&path).await? == Some(staged.size) {
                return Ok(());
            }
            self.upload(&path, staged).await
        }
        .boxed()
    }

    fn get<'a>(
        &'a self,
        digest: &'a Sha256Digest,
        range: Option<Range<u64>>,
    ) -> BoxFuture<'a, Result<ByteStream>> {
        async move {
            let path = Self::path_of(digest);
            let size = self.head(&path).await?.ok_or(Error::NotFound)?;
            let range = check_range(range, size)?;
            if range.is_empty() {
                return Ok(futures::stream::empty().boxed());
            }
            let options = GetOptions { range: Some(GetRange::Bounded(range)), ..GetOptions::default() };
            let result = self.store.get_opts(&path, options).await.map_err(|e| match e {
                object_store::Error::NotFound { .. } => Error::NotFound,
                other => storage(&other),
            })?;
            Ok(result.into_stream().map_err(|e| storage(&e)).boxed())
        }
        .boxed()
    }

    fn size<'a>(&'a self, digest: &'a Sha256Digest) -> BoxFuture<'a, Result<Option<u64>>> {
        async move { self.head(&Self::path_of(digest)).await }.boxed()
    }

    fn name(&self) -> &'static str {
        "s3"
    }
}

/// An object store failure in words (its own message may carry the endpoint and object path:
/// those go to the log only).
fn storage(error: &object_store::Error) -> Error {
    tracing::warn!(%error, "object store request failed");
    let what = match error {
        object_store::Error::NotFound { .. } => "not found",
        object_store::Error::PermissionDenied { .. } => "permission denied",
        object_store::Error::Unauthenticated { .. } => "the credentials were refused",
        object_store::Error::Precondition { .. } => "a precondition failed",
        object_store::Error::NotSupported { .. } | object_store::Error::NotImplemented => "not supported",
        _ => "the request failed",
    };
    Error::Storage(what.to_owned())
}
