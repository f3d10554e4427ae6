//! S3 and S3-compatible storage (AWS, Garage, MinIO, Ceph RGW) through OpenDAL.
//!
//! OpenDAL is async; this backend owns a small tokio runtime and blocks on it,
//! so the pipeline's worker threads can call it directly. A single PUT is atomic
//! on S3, which gives the `put` contract for free.

use std::future::Future;

use opendal::{services, ErrorKind, Operator};

use super::{ObjectInfo, Presigned, S3Config, Storage, StorageError, StorageResult};

pub struct S3Storage {
    op: Operator,
    rt: tokio::runtime::Runtime,
    location: String,
}

impl S3Storage {
    pub fn new(cfg: S3Config) -> StorageResult<S3Storage> {
        let location = format!("s3://{}/{}", cfg.bucket, cfg.prefix.trim_matches('/'));
        let bad = |e: opendal::Error| StorageError::Backend {
            location: location.clone(),
            op: "open",
            key: String::new(),
            message: e.to_string(),
            transient: false,
        };
        let mut b = services::S3::default()
            .bucket(&cfg.bucket)
            .root(&format!("/{}", cfg.prefix.trim_matches('/')))
            .region(cfg.region.as_deref().unwrap_or("us-east-1"))
            // Never probe the EC2 metadata service: credentials come from the environment.
            .disable_ec2_metadata();
        if let Some(ep) = &cfg.endpoint {
            b = b.endpoint(ep);
        }
        if let (Some(id), Some(secret)) = (&cfg.access_key_id, &cfg.secret_access_key) {
            b = b.access_key_id(id).secret_access_key(secret);
        }
        let op = Operator::new(b)
            .map_err(bad)?
            .layer(
                opendal::layers::RetryLayer::new()
                    .with_max_times(4)
                    .with_jitter(),
            )
            .finish();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("cairn-s3")
            .enable_all()
            .build()
            .map_err(|e| StorageError::Backend {
                location: location.clone(),
                op: "open",
                key: String::new(),
                message: e.to_string(),
                transient: false,
            })?;
        Ok(S3Storage { op, rt, location })
    }

    fn block<T>(
        &self,
        op: &'static str,
        key: &str,
        f: impl Future<Output = opendal::Result<T>>,
    ) -> StorageResult<T> {
        self.rt.block_on(f).map_err(|e| {
            if e.kind() == ErrorKind::NotFound {
                return StorageError::NotFound {
                    location: self.location.clone(),
                    key: key.to_string(),
                };
            }
            StorageError::Backend {
                location: self.location.clone(),
                op,
                key: key.to_string(),
                message: e.to_string(),
                transient: e.is_temporary(),
            }
        })
    }
}

impl Storage for S3Storage {
    fn location(&self) -> String {
        self.location.clone()
    }

    fn put(&self, key: &str, data: &[u8]) -> StorageResult<()> {
        self.block("put", key, async {
            self.op.write(key, data.to_vec()).await.map(|_| ())
        })
    }

    fn get(&self, key: &str) -> StorageResult<Vec<u8>> {
        self.block("get", key, async { Ok(self.op.read(key).await?.to_vec()) })
    }

    fn get_range(&self, key: &str, offset: u64, len: u64) -> StorageResult<Vec<u8>> {
        self.block("get_range", key, async {
            Ok(self
                .op
                .read_with(key)
                .range(offset..offset + len)
                .await?
                .to_vec())
        })
    }

    fn presign_put(
        &self,
        key: &str,
        expires: std::time::Duration,
    ) -> StorageResult<Option<Presigned>> {
        let req = self.block("presign", key, self.op.presign_write(key, expires))?;
        Ok(Some(Presigned {
            method: req.method().to_string(),
            url: req.uri().to_string(),
            headers: req
                .header()
                .iter()
                .filter_map(|(k, v)| Some((k.to_string(), v.to_str().ok()?.to_string())))
                .collect(),
        }))
    }

    fn stat(&self, key: &str) -> StorageResult<ObjectInfo> {
        let m = self.block("stat", key, self.op.stat(key))?;
        Ok(ObjectInfo {
            key: key.to_string(),
            size: m.content_length(),
            modified: m.last_modified().map(std::time::SystemTime::from),
        })
    }

    fn list(&self, prefix: &str) -> StorageResult<Vec<ObjectInfo>> {
        let entries = self.block("list", prefix, async {
            self.op.list_with(prefix).recursive(true).await
        })?;
        Ok(entries
            .into_iter()
            .filter(|e| e.metadata().is_file())
            .map(|e| ObjectInfo {
                key: e.path().to_string(),
                size: e.metadata().content_length(),
                modified: e
                    .metadata()
                    .last_modified()
                    .map(std::time::SystemTime::from),
            })
            .collect())
    }

    fn delete(&self, key: &str) -> StorageResult<()> {
        self.block("delete", key, self.op.delete(key))
    }
}
