//! The repository as an agent sees it during a job: a [`Storage`] whose
//! pack writes go to the controller (via-controller mode) or straight to the
//! storage and are then registered (direct mode: a presigned PUT per pack on
//! S3, or a directory shared with the controller), whose snapshot write is a
//! `CommitSnapshot`, and which can never delete. Index segments are not
//! written at all: the controller indexes each pack it verifies. Known blobs
//! come from `HaveBlobs`.
//!
//! The repository code is blocking; these calls run on its threads and wait
//! on the tokio runtime through a [`Handle`].

use std::sync::{Arc, Mutex};

use cairn_proto::agent::v1 as pb;
use cairn_proto::agent::v1::agent_service_client::AgentServiceClient;
use cairn_repo::id::Id;
use cairn_repo::repository::KnownBlobs;
use cairn_repo::storage::{ObjectInfo, Storage, StorageError, StorageResult};
use tokio::runtime::Handle;
use tonic::transport::Channel;

pub type Client = AgentServiceClient<Channel>;

/// Pieces of an uploaded object (the server takes up to 64 MiB messages).
const PIECE: usize = 1 << 20;
/// Ids per `HaveBlobs` call.
const ASK: usize = 4096;

pub struct JobStorage {
    pub client: Client,
    pub handle: Handle,
    pub job_id: String,
    /// Direct mode: where this job's packs go.
    pub direct: Option<Direct>,
    /// The id the controller stored the snapshot under (it stamps its own
    /// time and host, so the id differs from the one the agent proposed).
    pub committed: Mutex<Option<String>>,
}

pub enum Direct {
    /// A storage the agent opens itself (a directory shared with the controller).
    Storage(Arc<dyn Storage>),
    /// S3: each pack to a presigned PUT from the controller. Reads go
    /// through the controller, as in via-controller mode.
    Presigned(reqwest::Client),
}

fn err(op: &'static str, key: &str, status: tonic::Status) -> StorageError {
    let transient = matches!(
        status.code(),
        tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::ResourceExhausted
    );
    StorageError::Backend {
        location: "controller".into(),
        op,
        key: key.into(),
        message: status.message().to_string(),
        transient,
    }
}

fn refused(op: &'static str, key: &str) -> StorageError {
    StorageError::Backend {
        location: "controller".into(),
        op,
        key: key.into(),
        message: "not available to agents".into(),
        transient: false,
    }
}

impl JobStorage {
    /// The storage this agent reads and writes itself, if any.
    fn own_storage(&self) -> Option<&Arc<dyn Storage>> {
        match &self.direct {
            Some(Direct::Storage(s)) => Some(s),
            _ => None,
        }
    }

    /// PUTs a pack to the presigned request the controller issues for it.
    fn put_presigned(
        &self,
        http: &reqwest::Client,
        key: &str,
        data: &[u8],
        id: Id,
    ) -> StorageResult<()> {
        let mut client = self.client.clone();
        let p = self
            .handle
            .block_on(client.presign_pack(pb::PresignPackRequest {
                job_id: self.job_id.clone(),
                pack_id: id.0.to_vec(),
            }))
            .map_err(|s| err("presign", key, s))?
            .into_inner();
        let failed = |message: String, transient: bool| StorageError::Backend {
            location: "presigned PUT".into(),
            op: "put",
            key: key.into(),
            message,
            transient,
        };
        let method = reqwest::Method::from_bytes(p.method.as_bytes())
            .map_err(|_| failed(format!("the controller sent method {:?}", p.method), false))?;
        let mut req = http.request(method, &p.url).body(data.to_vec());
        for (k, v) in &p.headers {
            req = req.header(k, v);
        }
        self.handle.block_on(async {
            // reqwest's error text names the URL; its query is a signature.
            let resp = req
                .send()
                .await
                .map_err(|e| failed(format!("{}", e.without_url()), true))?;
            let status = resp.status();
            if status.is_success() {
                return Ok(());
            }
            let body = resp.text().await.unwrap_or_default();
            let body: String = body.chars().take(300).collect();
            Err(failed(
                format!("storage answered {status}: {body}"),
                status.is_server_error(),
            ))
        })
    }

    fn upload(&self, key: &str, data: &[u8], id: Id) -> StorageResult<()> {
        let mut pieces = Vec::with_capacity(data.len() / PIECE + 1);
        let mut offset = 0;
        loop {
            let end = (offset + PIECE).min(data.len());
            pieces.push(pb::PackPiece {
                job_id: self.job_id.clone(),
                pack_id: id.0.to_vec(),
                offset: offset as u64,
                data: data[offset..end].to_vec(),
                last: end == data.len(),
                index_segment: false,
            });
            offset = end;
            if offset == data.len() {
                break;
            }
        }
        let mut client = self.client.clone();
        self.handle
            .block_on(client.put_packs(tokio_stream::iter(pieces)))
            .map_err(|s| err("put", key, s))?;
        Ok(())
    }
}

impl Storage for JobStorage {
    fn location(&self) -> String {
        match self.own_storage() {
            Some(s) => s.location(),
            None => "controller".into(),
        }
    }

    fn put(&self, key: &str, data: &[u8]) -> StorageResult<()> {
        if key.starts_with("snapshots/") {
            let mut client = self.client.clone();
            let r = self
                .handle
                .block_on(client.commit_snapshot(pb::CommitSnapshotRequest {
                    job_id: self.job_id.clone(),
                    snapshot: data.to_vec(),
                }))
                .map_err(|s| err("commit", key, s))?
                .into_inner();
            *self.committed.lock().unwrap() = Some(r.snapshot_id);
            return Ok(());
        }
        if key.starts_with("index/") {
            // The controller writes the fleet's index from the packs it verified.
            return Ok(());
        }
        let id = cairn_repo::pack::id_of_key(key).ok_or_else(|| refused("put", key))?;
        match &self.direct {
            Some(direct) => {
                match direct {
                    Direct::Storage(s) => s.put(key, data)?,
                    Direct::Presigned(http) => self.put_presigned(http, key, data, id)?,
                }
                let mut client = self.client.clone();
                self.handle
                    .block_on(client.register_pack(pb::RegisterPackRequest {
                        job_id: self.job_id.clone(),
                        pack_id: id.0.to_vec(),
                    }))
                    .map_err(|s| err("register", key, s))?;
                Ok(())
            }
            None => self.upload(key, data, id),
        }
    }

    fn get(&self, key: &str) -> StorageResult<Vec<u8>> {
        match self.own_storage() {
            Some(s) => s.get(key),
            None => Err(refused("get", key)),
        }
    }

    fn get_range(&self, key: &str, offset: u64, len: u64) -> StorageResult<Vec<u8>> {
        if let Some(s) = self.own_storage() {
            return s.get_range(key, offset, len);
        }
        let pack = cairn_repo::pack::id_of_key(key).ok_or_else(|| refused("get_range", key))?;
        let mut client = self.client.clone();
        let r = self
            .handle
            .block_on(client.read_pack(pb::ReadPackRequest {
                job_id: self.job_id.clone(),
                pack_id: pack.0.to_vec(),
                offset,
                length: len,
            }))
            .map_err(|s| err("get_range", key, s))?;
        Ok(r.into_inner().data)
    }

    fn stat(&self, key: &str) -> StorageResult<ObjectInfo> {
        match self.own_storage() {
            Some(s) => s.stat(key),
            None => Err(refused("stat", key)),
        }
    }

    fn list(&self, prefix: &str) -> StorageResult<Vec<ObjectInfo>> {
        match self.own_storage() {
            Some(s) => s.list(prefix),
            None => Err(refused("list", prefix)),
        }
    }

    fn delete(&self, key: &str) -> StorageResult<()> {
        // Agents never delete, in either mode (DESIGN §1).
        Err(refused("delete", key))
    }
}

/// `HaveBlobs` as the repository's known-blob oracle; what it answers present
/// stays in the repository until the job ends.
pub struct ControllerKnows {
    pub client: Client,
    pub handle: Handle,
    pub job_id: String,
}

impl KnownBlobs for ControllerKnows {
    fn have(&self, ids: &[Id]) -> cairn_repo::Result<Vec<bool>> {
        let mut out = Vec::with_capacity(ids.len());
        for batch in ids.chunks(ASK) {
            let mut client = self.client.clone();
            let r = self
                .handle
                .block_on(client.have_blobs(pb::HaveBlobsRequest {
                    ids: batch.iter().map(|i| i.0.to_vec()).collect(),
                    job_id: self.job_id.clone(),
                }))
                .map_err(|s| cairn_repo::Error::Storage(err("have_blobs", "", s)))?
                .into_inner();
            if r.have.len() != batch.len().div_ceil(8) {
                return Err(cairn_repo::Error::Other(
                    "malformed HaveBlobs answer".into(),
                ));
            }
            out.extend((0..batch.len()).map(|i| r.have[i / 8] & (1 << (i % 8)) != 0));
        }
        Ok(out)
    }
}
