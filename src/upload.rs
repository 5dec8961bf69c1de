//! Upload: the lake's object store — S3 (aws-sdk-s3, path-style capable, so
//! MinIO works) or a local directory — and retries with capped backoff.
//!
//! Keys given to [`Lake`] are relative to the lake root (`s3://bucket/prefix`).
//! Writes are all-or-nothing and durable when they return: S3 PUTs are
//! atomic, local files are written to a temporary name, fsynced, renamed and
//! their directory fsynced, so only complete files ever appear under
//! `date=…/` and none is lost after its offsets are committed.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use bytes::Bytes;

use crate::config::LakeUrl;
use crate::metrics::METRICS;
use crate::shutdown::Drain;

/// Objects larger than this go up as multipart uploads.
pub const MULTIPART_THRESHOLD: usize = 64 << 20;
const PART_SIZE: usize = 16 << 20;

#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    /// An S3 call failed (after the SDK's own retries).
    #[error("S3 {op} {key}: {msg}")]
    S3 {
        op: &'static str,
        key: String,
        msg: String,
        /// Retrying cannot help (access denied, no such bucket, KMS key unusable).
        permanent: bool,
    },
    /// A local-lake file operation failed.
    #[error("local lake {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    /// The shutdown drain deadline passed while retrying.
    #[error("gave up on {0}: shutdown deadline reached")]
    DeadlineExceeded(String),
    /// A permanent error repeated for longer than `--give-up-after`.
    #[error("gave up on {0} after a permanent error lasted {1:?}")]
    GaveUp(String, Duration),
}

impl UploadError {
    /// Whether retrying cannot help without an operator (credentials, bucket,
    /// policy or KMS key): readiness drops at once and the run ends after
    /// `--give-up-after` instead of retrying forever.
    pub fn is_permanent(&self) -> bool {
        match self {
            UploadError::S3 { permanent, .. } => *permanent,
            UploadError::Io { source, .. } => matches!(
                source.kind(),
                std::io::ErrorKind::PermissionDenied | std::io::ErrorKind::ReadOnlyFilesystem
            ),
            _ => false,
        }
    }
}

/// S3 error codes that retrying cannot fix.
fn permanent_code(code: &str) -> bool {
    matches!(
        code,
        "AccessDenied"
            | "AllAccessDisabled"
            | "InvalidAccessKeyId"
            | "SignatureDoesNotMatch"
            | "NoSuchBucket"
            | "InvalidBucketName"
            | "AccountProblem"
            | "InvalidObjectState"
    ) || code.starts_with("KMS.")
        || code.starts_with("KMS")
}

#[derive(Clone)]
pub enum Lake {
    S3 {
        client: aws_sdk_s3::Client,
        bucket: String,
        prefix: String,
        /// Encryption and storage class of every object written.
        write: std::sync::Arc<crate::config::S3Write>,
    },
    Local {
        root: PathBuf,
    },
}

impl std::fmt::Debug for Lake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Lake::S3 { bucket, prefix, .. } => write!(f, "s3://{bucket}/{prefix}"),
            Lake::Local { root } => write!(f, "file://{}", root.display()),
        }
    }
}

fn s3_err<
    E: std::error::Error + aws_sdk_s3::error::ProvideErrorMetadata + Send + Sync + 'static,
>(
    op: &'static str,
    key: &str,
    e: aws_sdk_s3::error::SdkError<E>,
) -> UploadError {
    use aws_sdk_s3::error::ProvideErrorMetadata;
    let msg = aws_sdk_s3::error::DisplayErrorContext(&e).to_string();
    let permanent = e.code().is_some_and(permanent_code)
        || e.raw_response().is_some_and(|r| r.status().as_u16() == 403);
    UploadError::S3 {
        op,
        key: key.to_string(),
        msg,
        permanent,
    }
}

impl Lake {
    /// Connect to the lake; credentials and endpoint come from the AWS
    /// environment (`AWS_ACCESS_KEY_ID`, `AWS_ENDPOINT_URL`, …).
    pub async fn connect(url: &LakeUrl, path_style: bool) -> Lake {
        match url {
            LakeUrl::Local { root } => Lake::Local { root: root.clone() },
            LakeUrl::S3 { bucket, prefix } => {
                let region = aws_config::meta::region::RegionProviderChain::default_provider()
                    .or_else("us-east-1");
                let shared = aws_config::defaults(aws_config::BehaviorVersion::latest())
                    .region(region)
                    .load()
                    .await;
                let conf = aws_sdk_s3::config::Builder::from(&shared)
                    .force_path_style(path_style)
                    .retry_config(aws_config::retry::RetryConfig::standard().with_max_attempts(3))
                    .build();
                Lake::S3 {
                    client: aws_sdk_s3::Client::from_conf(conf),
                    bucket: bucket.clone(),
                    prefix: prefix.clone(),
                    write: Default::default(),
                }
            }
        }
    }

    /// Write every object with this encryption and storage class.
    pub fn with_write_options(self, w: crate::config::S3Write) -> Lake {
        match self {
            Lake::S3 {
                client,
                bucket,
                prefix,
                ..
            } => Lake::S3 {
                client,
                bucket,
                prefix,
                write: std::sync::Arc::new(w),
            },
            local => local,
        }
    }

    fn full_key(prefix: &str, key: &str) -> String {
        if prefix.is_empty() {
            key.to_string()
        } else {
            format!("{prefix}/{key}")
        }
    }

    fn local_path(root: &Path, key: &str) -> PathBuf {
        root.join(key)
    }

    /// Fail fast with a clear message when the bucket is missing or unreachable.
    pub async fn check(&self) -> Result<(), UploadError> {
        match self {
            Lake::S3 { client, bucket, .. } => {
                client
                    .head_bucket()
                    .bucket(bucket)
                    .send()
                    .await
                    .map_err(|e| s3_err("HeadBucket", bucket, e))?;
                Ok(())
            }
            Lake::Local { root } => {
                std::fs::create_dir_all(root).map_err(|source| UploadError::Io {
                    path: root.display().to_string(),
                    source,
                })
            }
        }
    }

    pub async fn put(&self, key: &str, body: Bytes) -> Result<(), UploadError> {
        match self {
            Lake::S3 {
                client,
                bucket,
                prefix,
                write,
            } => {
                let full = Self::full_key(prefix, key);
                if body.len() > MULTIPART_THRESHOLD {
                    return multipart(client, write, bucket, &full, body).await;
                }
                put_object(client, bucket, write, &full, ByteStream::from(body)).await
            }
            Lake::Local { root } => {
                place_local(&Self::local_path(root, key), |tmp| write_synced(tmp, &body))
            }
        }
    }

    pub async fn get(&self, key: &str) -> Result<Option<Bytes>, UploadError> {
        match self {
            Lake::S3 { .. } => Ok(self.get_object(key, true).await?.map(|(b, _)| b)),
            Lake::Local { root } => read_local(&Self::local_path(root, key)),
        }
    }

    /// Delete; deleting a missing object is not an error.
    pub async fn delete(&self, key: &str) -> Result<(), UploadError> {
        match self {
            Lake::S3 {
                client,
                bucket,
                prefix,
                ..
            } => {
                let full = Self::full_key(prefix, key);
                client
                    .delete_object()
                    .bucket(bucket)
                    .key(&full)
                    .send()
                    .await
                    .map_err(|e| s3_err("DeleteObject", &full, e))?;
                Ok(())
            }
            Lake::Local { root } => {
                let path = Self::local_path(root, key);
                match std::fs::remove_file(&path) {
                    Ok(()) => Ok(()),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                    Err(source) => Err(UploadError::Io {
                        path: path.display().to_string(),
                        source,
                    }),
                }
            }
        }
    }

    /// Delete many keys in as few requests as S3 allows (DeleteObjects, 1,000
    /// keys each), so that they disappear together rather than one round trip
    /// apart. Missing keys are not an error.
    pub async fn delete_many(&self, keys: &[String]) -> Result<(), UploadError> {
        let Lake::S3 {
            client,
            bucket,
            prefix,
            ..
        } = self
        else {
            for k in keys {
                self.delete(k).await?;
            }
            return Ok(());
        };
        use aws_sdk_s3::types::{Delete, ObjectIdentifier};
        for chunk in keys.chunks(1000) {
            // A request that cannot be built is a bug, not an outage.
            let unbuildable = |e: aws_sdk_s3::error::BuildError| UploadError::S3 {
                op: "DeleteObjects",
                key: chunk[0].clone(),
                msg: e.to_string(),
                permanent: true,
            };
            let objects = chunk
                .iter()
                .map(|k| {
                    ObjectIdentifier::builder()
                        .key(Self::full_key(prefix, k))
                        .build()
                })
                .collect::<Result<Vec<_>, _>>()
                .map_err(unbuildable)?;
            let delete = Delete::builder()
                .set_objects(Some(objects))
                .quiet(true)
                .build()
                .map_err(unbuildable)?;
            let out = client
                .delete_objects()
                .bucket(bucket)
                .delete(delete)
                .send()
                .await
                .map_err(|e| s3_err("DeleteObjects", &chunk[0], e))?;
            if let Some(e) = out.errors().first() {
                return Err(UploadError::S3 {
                    op: "DeleteObjects",
                    key: e.key().unwrap_or_default().to_string(),
                    msg: format!(
                        "{}: {}",
                        e.code().unwrap_or_default(),
                        e.message().unwrap_or_default()
                    ),
                    permanent: false,
                });
            }
        }
        Ok(())
    }

    /// Create `key` only if it does not exist (S3 `If-None-Match: *`). Returns the
    /// new object's version tag, or `None` when the key already exists.
    pub async fn put_new(&self, key: &str, body: Bytes) -> Result<Option<String>, UploadError> {
        self.put_conditional(key, body, None).await
    }

    /// Replace `key` only if it still has version tag `tag` (S3 `If-Match`).
    /// Returns the new tag, or `None` when someone else changed (or removed) it.
    pub async fn put_if(
        &self,
        key: &str,
        body: Bytes,
        tag: &str,
    ) -> Result<Option<String>, UploadError> {
        self.put_conditional(key, body, Some(tag)).await
    }

    async fn put_conditional(
        &self,
        key: &str,
        body: Bytes,
        if_match: Option<&str>,
    ) -> Result<Option<String>, UploadError> {
        match self {
            Lake::S3 {
                client,
                bucket,
                prefix,
                write,
            } => {
                let full = Self::full_key(prefix, key);
                let req = client
                    .put_object()
                    .bucket(bucket)
                    .key(&full)
                    .set_server_side_encryption(write.sse.as_deref().map(Into::into))
                    .set_ssekms_key_id(write.kms_key_id.clone())
                    .set_storage_class(write.storage_class.as_deref().map(Into::into))
                    .body(ByteStream::from(body));
                let req = match if_match {
                    Some(tag) => req.if_match(tag),
                    None => req.if_none_match("*"),
                };
                match req.send().await {
                    Ok(out) => Ok(Some(out.e_tag().unwrap_or_default().to_string())),
                    // 412: the precondition failed; 409: a concurrent conditional write
                    // won (AWS); 404: If-Match on a key that is gone.
                    Err(e)
                        if e.raw_response()
                            .is_some_and(|r| matches!(r.status().as_u16(), 404 | 409 | 412)) =>
                    {
                        Ok(None)
                    }
                    Err(e) => Err(s3_err("PutObject", &full, e)),
                }
            }
            Lake::Local { root } => {
                // A local lake serves one host: the tag is a hash of the content, and
                // create-if-absent is a hard link, which fails when the name exists.
                let path = Self::local_path(root, key);
                let io = |source| UploadError::Io {
                    path: path.display().to_string(),
                    source,
                };
                create_parent(&path).map_err(io)?;
                let tag = content_tag(&body);
                if let Some(want) = if_match {
                    match std::fs::read(&path) {
                        Ok(cur) if content_tag(&cur) == want => {}
                        Ok(_) => return Ok(None),
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                        Err(e) => return Err(io(e)),
                    }
                }
                let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
                write_synced(&tmp, &body).map_err(io)?;
                let placed = if if_match.is_some() {
                    std::fs::rename(&tmp, &path)
                } else {
                    let r = std::fs::hard_link(&tmp, &path);
                    let _ = std::fs::remove_file(&tmp);
                    r
                };
                match placed {
                    Ok(()) => {
                        sync_dir(&path).map_err(io)?;
                        Ok(Some(tag))
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(None),
                    Err(e) => Err(io(e)),
                }
            }
        }
    }

    /// `get` with the object's version tag (for [`Lake::put_if`]), for a small
    /// record the caller validates itself (it parses it), without checking the body against the checksum the store keeps
    /// beside it. s3s-fs's conditional create is not atomic: two simultaneous
    /// creates can leave the body of one paired with the checksum of the other,
    /// which fails every checked read for ever, while the body itself is whole
    /// (its files are written aside and renamed into place).
    pub async fn get_record_tagged(
        &self,
        key: &str,
    ) -> Result<Option<(Bytes, String)>, UploadError> {
        self.get_object(key, false).await
    }

    async fn get_object(
        &self,
        key: &str,
        check_sum: bool,
    ) -> Result<Option<(Bytes, String)>, UploadError> {
        match self {
            Lake::S3 {
                client,
                bucket,
                prefix,
                ..
            } => {
                let full = Self::full_key(prefix, key);
                let req = client.get_object().bucket(bucket).key(&full);
                let sent = if check_sum {
                    req.send().await
                } else {
                    req.customize()
                        .config_override(
                            aws_sdk_s3::config::Builder::default().response_checksum_validation(
                                aws_sdk_s3::config::ResponseChecksumValidation::WhenRequired,
                            ),
                        )
                        .send()
                        .await
                };
                match sent {
                    Ok(out) => {
                        let tag = out.e_tag().unwrap_or_default().to_string();
                        let data = out.body.collect().await.map_err(|e| UploadError::S3 {
                            op: "GetObject",
                            key: full.clone(),
                            msg: e.to_string(),
                            permanent: false,
                        })?;
                        Ok(Some((data.into_bytes(), tag)))
                    }
                    Err(e) if e.as_service_error().is_some_and(|se| se.is_no_such_key()) => {
                        Ok(None)
                    }
                    Err(e) => Err(s3_err("GetObject", &full, e)),
                }
            }
            Lake::Local { root } => Ok(read_local(&Self::local_path(root, key))?.map(|b| {
                let tag = content_tag(&b);
                (b, tag)
            })),
        }
    }

    /// All keys under `prefix` (relative to the lake root), sorted.
    pub async fn list(&self, prefix: &str) -> Result<Vec<String>, UploadError> {
        Ok(self
            .list_objects(prefix)
            .await?
            .into_iter()
            .map(|o| o.key)
            .collect())
    }

    /// [`Lake::list`] with each object's size and last modification.
    pub async fn list_objects(&self, prefix: &str) -> Result<Vec<ObjectInfo>, UploadError> {
        let mut out = Vec::new();
        match self {
            Lake::S3 {
                client,
                bucket,
                prefix: root,
                ..
            } => {
                let full = Self::full_key(root, prefix);
                let strip = if root.is_empty() { 0 } else { root.len() + 1 };
                let mut pages = client
                    .list_objects_v2()
                    .bucket(bucket)
                    .prefix(&full)
                    .into_paginator()
                    .send();
                while let Some(page) = pages.next().await {
                    let page = page.map_err(|e| s3_err("ListObjectsV2", &full, e))?;
                    for o in page.contents() {
                        if let Some(k) = o.key() {
                            out.push(ObjectInfo {
                                key: k[strip.min(k.len())..].to_string(),
                                size: o.size().unwrap_or(0).max(0) as u64,
                                modified_ms: o
                                    .last_modified()
                                    .and_then(|t| t.to_millis().ok())
                                    .unwrap_or(0),
                            });
                        }
                    }
                }
            }
            Lake::Local { root } => {
                let base = Self::local_path(root, prefix);
                // The prefix may end inside a file name: walk its parent directory.
                let dir = if prefix.ends_with('/') || prefix.is_empty() {
                    base.clone()
                } else {
                    base.parent().map(Path::to_path_buf).unwrap_or(base.clone())
                };
                walk(&dir, &mut |p| {
                    if let Ok(rel) = p.strip_prefix(root) {
                        let rel = rel.to_string_lossy().replace('\\', "/");
                        if rel.starts_with(prefix) && !rel.contains(".tmp-") {
                            let meta = std::fs::metadata(p).ok();
                            out.push(ObjectInfo {
                                key: rel,
                                size: meta.as_ref().map_or(0, |m| m.len()),
                                modified_ms: meta
                                    .and_then(|m| m.modified().ok())
                                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                                    .map_or(0, |d| d.as_millis() as i64),
                            });
                        }
                    }
                })
                .map_err(|source| UploadError::Io {
                    path: dir.display().to_string(),
                    source,
                })?;
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    /// Download `key` into the local file `path` (streamed: objects of any size).
    /// `Ok(false)` when the object does not exist.
    pub async fn get_to_file(&self, key: &str, path: &Path) -> Result<bool, UploadError> {
        let io = |source| UploadError::Io {
            path: path.display().to_string(),
            source,
        };
        match self {
            Lake::S3 {
                client,
                bucket,
                prefix,
                ..
            } => {
                let full = Self::full_key(prefix, key);
                let out = match client.get_object().bucket(bucket).key(&full).send().await {
                    Ok(out) => out,
                    Err(e) if e.as_service_error().is_some_and(|se| se.is_no_such_key()) => {
                        return Ok(false)
                    }
                    Err(e) => return Err(s3_err("GetObject", &full, e)),
                };
                let mut body = out.body.into_async_read();
                let mut file = tokio::fs::File::create(path).await.map_err(io)?;
                tokio::io::copy(&mut body, &mut file)
                    .await
                    .map_err(|e| UploadError::S3 {
                        op: "GetObject",
                        key: full.clone(),
                        msg: e.to_string(),
                        permanent: false,
                    })?;
                tokio::io::AsyncWriteExt::flush(&mut file)
                    .await
                    .map_err(io)?;
                Ok(true)
            }
            Lake::Local { root } => match std::fs::copy(Self::local_path(root, key), path) {
                Ok(_) => Ok(true),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
                Err(e) => Err(io(e)),
            },
        }
    }

    /// Upload the local file `path` as `key`, streamed from disk (one request,
    /// so at most 5 GiB on S3).
    pub async fn put_file(&self, key: &str, path: &Path) -> Result<(), UploadError> {
        let io = |source| UploadError::Io {
            path: path.display().to_string(),
            source,
        };
        match self {
            Lake::S3 {
                client,
                bucket,
                prefix,
                write,
            } => {
                let full = Self::full_key(prefix, key);
                let body = ByteStream::from_path(path)
                    .await
                    .map_err(|e| io(std::io::Error::other(e)))?;
                put_object(client, bucket, write, &full, body).await
            }
            Lake::Local { root } => place_local(&Self::local_path(root, key), |tmp| {
                std::fs::copy(path, tmp)?;
                std::fs::File::open(tmp)?.sync_all()
            }),
        }
    }
}

/// One object of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    /// Relative to the lake root.
    pub key: String,
    pub size: u64,
    /// Last modification, ms since the epoch (0 when the store does not say).
    pub modified_ms: i64,
}

/// One PutObject with the lake's encryption and storage class.
async fn put_object(
    client: &aws_sdk_s3::Client,
    bucket: &str,
    write: &crate::config::S3Write,
    full: &str,
    body: ByteStream,
) -> Result<(), UploadError> {
    client
        .put_object()
        .bucket(bucket)
        .key(full)
        .set_server_side_encryption(write.sse.as_deref().map(Into::into))
        .set_ssekms_key_id(write.kms_key_id.clone())
        .set_storage_class(write.storage_class.as_deref().map(Into::into))
        .body(body)
        .send()
        .await
        .map_err(|e| s3_err("PutObject", full, e))?;
    Ok(())
}

/// A local lake file put in place whole: written (and fsynced) by `write`
/// under a temporary name, renamed, its directory fsynced.
fn place_local(
    path: &Path,
    write: impl FnOnce(&Path) -> std::io::Result<()>,
) -> Result<(), UploadError> {
    let io = |source| UploadError::Io {
        path: path.display().to_string(),
        source,
    };
    create_parent(path).map_err(io)?;
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    write(&tmp).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)?;
    sync_dir(path).map_err(io)?;
    Ok(())
}

fn create_parent(path: &Path) -> std::io::Result<()> {
    match path.parent() {
        Some(dir) => std::fs::create_dir_all(dir),
        None => Ok(()),
    }
}

fn read_local(path: &Path) -> Result<Option<Bytes>, UploadError> {
    match std::fs::read(path) {
        Ok(v) => Ok(Some(Bytes::from(v))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(UploadError::Io {
            path: path.display().to_string(),
            source,
        }),
    }
}

/// Write a local lake file and flush it to the disk: a local lake's files must
/// be durable before the offsets they cover are committed, as S3's are.
fn write_synced(path: &Path, body: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut f = std::fs::File::create(path)?;
    f.write_all(body)?;
    f.sync_all()
}

/// Make a rename or link into `path`'s directory durable.
fn sync_dir(path: &Path) -> std::io::Result<()> {
    match path.parent() {
        Some(dir) => std::fs::File::open(dir)?.sync_all(),
        None => Ok(()),
    }
}

/// A local object's version tag: FNV-1a of its bytes.
fn content_tag(b: &[u8]) -> String {
    let h = b.iter().fold(0xcbf29ce484222325u64, |h, &c| {
        (h ^ c as u64).wrapping_mul(0x100000001b3)
    });
    format!("{h:016x}")
}

fn walk(dir: &Path, f: &mut dyn FnMut(&Path)) -> std::io::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let p = entry.path();
        if entry.file_type()?.is_dir() {
            walk(&p, f)?;
        } else {
            f(&p);
        }
    }
    Ok(())
}

async fn multipart(
    client: &aws_sdk_s3::Client,
    write: &crate::config::S3Write,
    bucket: &str,
    key: &str,
    body: Bytes,
) -> Result<(), UploadError> {
    let created = client
        .create_multipart_upload()
        .bucket(bucket)
        .key(key)
        .set_server_side_encryption(write.sse.as_deref().map(Into::into))
        .set_ssekms_key_id(write.kms_key_id.clone())
        .set_storage_class(write.storage_class.as_deref().map(Into::into))
        .send()
        .await
        .map_err(|e| s3_err("CreateMultipartUpload", key, e))?;
    let Some(upload_id) = created.upload_id() else {
        return Err(UploadError::S3 {
            op: "CreateMultipartUpload",
            key: key.into(),
            msg: "no upload id".into(),
            permanent: false,
        });
    };
    let result = async {
        let mut parts = Vec::new();
        for (i, chunk) in body.chunks(PART_SIZE).enumerate() {
            let n = i as i32 + 1;
            let part = client
                .upload_part()
                .bucket(bucket)
                .key(key)
                .upload_id(upload_id)
                .part_number(n)
                .body(ByteStream::from(body.slice_ref(chunk)))
                .send()
                .await
                .map_err(|e| s3_err("UploadPart", key, e))?;
            parts.push(
                CompletedPart::builder()
                    .set_e_tag(part.e_tag().map(str::to_string))
                    .part_number(n)
                    .build(),
            );
        }
        client
            .complete_multipart_upload()
            .bucket(bucket)
            .key(key)
            .upload_id(upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| s3_err("CompleteMultipartUpload", key, e))?;
        Ok(())
    }
    .await;
    if result.is_err() {
        // Best effort: an abandoned upload only costs storage until a lifecycle rule removes it.
        let _ = client
            .abort_multipart_upload()
            .bucket(bucket)
            .key(key)
            .upload_id(upload_id)
            .send()
            .await;
    }
    result
}

/// Run `op` until it succeeds, backing off from 100 ms to 10 s. It gives up
/// only when the shutdown drain deadline has passed: an S3 outage stalls the
/// pipeline (and so the consumer), it never drops data.
pub async fn retry<T, F, Fut>(what: &str, drain: &Drain, mut op: F) -> Result<T, UploadError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, UploadError>>,
{
    let mut backoff = Duration::from_millis(100);
    let mut attempt = 0u32;
    let mut first_failure: Option<Instant> = None;
    // Since when the error has been permanent, and when that was last logged.
    let mut permanent_since: Option<Instant> = None;
    let mut permanent_logged: Option<Instant> = None;
    loop {
        match op().await {
            Ok(v) => {
                if let Some(t) = first_failure {
                    tracing::info!(
                        what,
                        attempts = attempt + 1,
                        stalled_ms = t.elapsed().as_millis() as u64,
                        "S3 recovered"
                    );
                }
                if permanent_since.is_some() {
                    crate::health::set_permanent_error(false);
                }
                return Ok(v);
            }
            Err(e) => {
                attempt += 1;
                METRICS.upload_retries.inc();
                first_failure.get_or_insert_with(Instant::now);
                if drain.deadline_passed() {
                    return Err(UploadError::DeadlineExceeded(format!("{what}: {e}")));
                }
                if e.is_permanent() {
                    let since = *permanent_since.get_or_insert_with(Instant::now);
                    crate::health::set_permanent_error(true);
                    if since.elapsed() >= drain.give_up_after {
                        return Err(UploadError::GaveUp(
                            format!("{what}: {e}"),
                            drain.give_up_after,
                        ));
                    }
                    // Named every time it repeats, at most every 30 s.
                    if permanent_logged.is_none_or(|t| t.elapsed() >= Duration::from_secs(30)) {
                        permanent_logged = Some(Instant::now());
                        tracing::error!(what, attempt, error = %e, give_up_in_s = drain.give_up_after.saturating_sub(since.elapsed()).as_secs(),
                            "S3 refuses the operation for good (credentials, bucket, policy or KMS key?); not ready, retrying until the give-up deadline");
                    }
                } else {
                    permanent_since = None;
                    // Log the first failure and then every tenth, not every retry.
                    if attempt == 1 || attempt.is_multiple_of(10) {
                        tracing::warn!(what, attempt, error = %e, "S3 operation failed; retrying");
                    }
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s3_error(permanent: bool) -> UploadError {
        UploadError::S3 {
            op: "PutObject",
            key: "k".into(),
            msg: "AccessDenied".into(),
            permanent,
        }
    }

    #[tokio::test]
    async fn permanent_errors_end_after_the_give_up_window_transient_ones_retry() {
        let mut drain = Drain::new(Duration::from_secs(60));
        drain.give_up_after = Duration::from_millis(400);
        let t = Instant::now();
        let r = retry("put", &drain, || async { Err::<(), _>(s3_error(true)) }).await;
        assert!(matches!(r, Err(UploadError::GaveUp(..))), "{r:?}");
        assert!(t.elapsed() >= Duration::from_millis(400));
        assert!(crate::health::HEALTH
            .permanent_error
            .load(std::sync::atomic::Ordering::Relaxed));
        // Transient errors do not count towards it, however long they last.
        let mut n = 0;
        let r = retry("put", &drain, || {
            n += 1;
            let k = n;
            async move {
                if k < 5 {
                    Err(s3_error(false))
                } else {
                    Ok(k)
                }
            }
        })
        .await;
        assert_eq!(r.unwrap(), 5);
        assert!(s3_error(true).is_permanent() && !s3_error(false).is_permanent());
        assert!(permanent_code("NoSuchBucket") && permanent_code("KMS.DisabledException"));
        assert!(!permanent_code("SlowDown") && !permanent_code("InternalError"));
    }

    #[tokio::test]
    async fn local_lake_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let lake = Lake::Local {
            root: dir.path().to_path_buf(),
        };
        lake.check().await.unwrap();
        lake.put(
            "t/date=2024-01-01/event_type=a/x.parquet",
            Bytes::from_static(b"abc"),
        )
        .await
        .unwrap();
        lake.put(
            "t/date=2024-01-02/event_type=a/y.parquet",
            Bytes::from_static(b"d"),
        )
        .await
        .unwrap();
        lake.put("_lakewriter/r.json", Bytes::from_static(b"{}"))
            .await
            .unwrap();
        assert_eq!(lake.list("t/").await.unwrap().len(), 2);
        assert_eq!(lake.list("t/date=2024-01-0").await.unwrap().len(), 2);
        assert_eq!(
            lake.get("t/date=2024-01-01/event_type=a/x.parquet")
                .await
                .unwrap()
                .unwrap(),
            Bytes::from_static(b"abc")
        );
        assert!(lake.get("nope").await.unwrap().is_none());
        lake.delete("t/date=2024-01-01/event_type=a/x.parquet")
            .await
            .unwrap();
        lake.delete("t/date=2024-01-01/event_type=a/x.parquet")
            .await
            .unwrap();
        assert_eq!(
            lake.list("t/").await.unwrap(),
            ["t/date=2024-01-02/event_type=a/y.parquet"]
        );
    }

    #[tokio::test]
    async fn retry_gives_up_only_after_the_drain_deadline() {
        let drain = Drain::new(Duration::ZERO);
        let mut calls = 0;
        let r: Result<(), _> = retry("x", &drain, || {
            calls += 1;
            let n = calls;
            async move {
                if n < 3 {
                    Err(s3_error(false))
                } else {
                    Ok(())
                }
            }
        })
        .await;
        assert!(r.is_ok());
        assert_eq!(calls, 3);
        drain.start();
        let r: Result<(), _> = retry("x", &drain, || async { Err(s3_error(false)) }).await;
        assert!(matches!(r, Err(UploadError::DeadlineExceeded(_))));
    }
}
