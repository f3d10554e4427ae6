//! A hostile agent (a valid certificate, the repository key, any message it
//! likes) against a real controller, speaking the proto directly. It can
//! neither make another server's backups unrestorable, nor read them, nor
//! take the controller down (DESIGN §7, issue "the controller owns the fleet
//! repository").

use std::fs;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use cairn_proto::agent::v1 as pb;
use cairn_proto::agent::v1::agent_service_client::AgentServiceClient;
use cairn_repo::crypto::MasterKey;
use cairn_repo::exclude::Excludes;
use cairn_repo::id::Id;
use cairn_repo::pack::{BlobType, PackBody, PackEntry, PackWriter};
use cairn_repo::repository::{Access, KnownBlobs, Repository};
use cairn_repo::snapshot::{Kind, Snapshot, Stats};
use cairn_repo::tree::{Node, NodeKind, Tree};
use cairn_tests::cluster::{Cluster, ClusterOptions, PASSPHRASE};
use cairn_tests::*;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

struct NothingKnown;

impl KnownBlobs for NothingKnown {
    fn have(&self, ids: &[Id]) -> cairn_repo::Result<Vec<bool>> {
        Ok(vec![false; ids.len()])
    }
}

fn channel(c: &Cluster, id: Option<&cairn_net::Identity>) -> Channel {
    let ca = fs::read_to_string(c.state.join("pki/ca.pem")).unwrap();
    let tls = cairn_net::client_config(&cairn_net::Trust::Ca(ca), id).unwrap();
    cairn_net::channel(&c.url(), tls).unwrap()
}

/// A hello as the release before protocol negotiation sends it (no
/// protocol fields): the controller must still welcome it.
fn hello(domains: &[&str]) -> pb::AgentMessage {
    pb::AgentMessage {
        body: Some(pb::agent_message::Body::Hello(pb::Hello {
            agent_version: "0.1.0".into(),
            hostname: "evil-host".into(),
            inventory: Some(pb::Inventory {
                domains: domains
                    .iter()
                    .map(|d| pb::Domain {
                        name: d.to_string(),
                        path: format!("/srv/{d}"),
                        ..Default::default()
                    })
                    .collect(),
            }),
            ..Default::default()
        })),
    }
}

/// A pack of the given blobs (kind, claimed id, plaintext, claimed length).
fn pack(k: &MasterKey, blobs: &[(BlobType, Id, &[u8], usize)]) -> (Id, Vec<u8>) {
    let mut w = PackWriter::in_memory();
    for (kind, id, plain, raw) in blobs {
        w.add(*kind, *id, &k.seal(plain, 3), *raw).unwrap();
    }
    let p = w.finish(k).unwrap();
    let PackBody::Memory(bytes) = p.body else {
        unreachable!("in-memory writer")
    };
    (p.id, bytes)
}

/// A pack holding one file (`x.txt` with `data`) and its tree: the pack's
/// id and bytes, the tree's id and plaintext.
fn one_file_pack(k: &MasterKey, data: &[u8]) -> (Id, Vec<u8>, Id, Vec<u8>) {
    let mut node = Node::new(std::ffi::OsStr::new("x.txt"), NodeKind::File);
    node.content = vec![k.blob_id(data)];
    node.size = data.len() as u64;
    let tree = Tree { nodes: vec![node] }.to_bytes();
    let tree_id = k.blob_id(&tree);
    let (id, bytes) = pack(
        k,
        &[
            (BlobType::Data, k.blob_id(data), data, data.len()),
            (BlobType::Tree, tree_id, &tree, tree.len()),
        ],
    );
    (id, bytes, tree_id, tree)
}

fn pieces(job: &str, id: Id, data: &[u8], index_segment: bool) -> Vec<pb::PackPiece> {
    let mut out = Vec::new();
    let mut off = 0;
    loop {
        let end = (off + (1 << 20)).min(data.len());
        out.push(pb::PackPiece {
            job_id: job.into(),
            pack_id: id.0.to_vec(),
            offset: off as u64,
            data: data[off..end].to_vec(),
            last: end == data.len(),
            index_segment,
        });
        off = end;
        if off == data.len() {
            return out;
        }
    }
}

fn proposed(k: &MasterKey, domain: &str, tree: Id) -> Vec<u8> {
    let snap = Snapshot {
        time: chrono::DateTime::parse_from_rfc3339("2099-01-01T00:00:00Z")
            .unwrap()
            .into(),
        domain: domain.into(),
        host: "victim-host".into(),
        kind: Kind::Full,
        content: Default::default(),
        parent: None,
        tree,
        source: "/srv".into(),
        tags: Vec::new(),
        excludes: Vec::new(),
        stats: Stats::default(),
        tool_version: "forged".into(),
        agent: Some("victim".into()),
        job: Some("another-job".into()),
        run: None,
    };
    k.seal(&serde_json::to_vec(&snap).unwrap(), 3)
}

fn site(dir: &Path) {
    fs::create_dir_all(dir.join("wp-content")).unwrap();
    for i in 0..20 {
        let data: Vec<u8> = (0..(i * 3000 + 17)).map(|_| rand::random()).collect();
        fs::write(dir.join(format!("wp-content/f{i}.bin")), data).unwrap();
    }
    fs::write(dir.join("index.php"), b"<?php echo 'victim';").unwrap();
}

/// A scripted agent's open session: its runtime, client, outbound messages
/// (heartbeats are sent for it) and inbound stream.
struct Scripted {
    rt: tokio::runtime::Runtime,
    client: AgentServiceClient<Channel>,
    tx: mpsc::Sender<pb::AgentMessage>,
    inbound: tonic::Streaming<pb::ControllerMessage>,
}

impl Scripted {
    /// Enrolls `name` and opens its session, reporting `domains`.
    fn connect(c: &Cluster, name: &str, domains: &[&str]) -> Scripted {
        let agent = c.enroll_only(name);
        let id = cairn_net::Identity {
            chain_pem: fs::read_to_string(agent.state().join("agent.pem")).unwrap(),
            key_pem: fs::read_to_string(agent.state().join("agent.key")).unwrap(),
        };
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let _guard = rt.enter();
        let mut client = AgentServiceClient::new(channel(c, Some(&id)));
        let (tx, rx) = mpsc::channel(16);
        tx.try_send(hello(domains)).unwrap();
        let inbound = rt
            .block_on(client.session(ReceiverStream::new(rx)))
            .unwrap()
            .into_inner();
        let beat = tx.clone();
        rt.spawn(async move {
            loop {
                let m = pb::AgentMessage {
                    body: Some(pb::agent_message::Body::Heartbeat(Default::default())),
                };
                if beat.send(m).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        });
        c.wait_online(name, true);
        Scripted {
            rt,
            client,
            tx,
            inbound,
        }
    }
}

/// The repository as the job's key material opens it (over an empty
/// scratch storage): enough to seal blobs and packs the controller accepts.
fn job_repository(job: &pb::Job) -> (tempfile::TempDir, Repository) {
    let access = job.repository.clone().unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let repo = Repository::with_access(
        Arc::new(cairn_repo::storage::LocalStorage::new(scratch.path())),
        &Access {
            master_key: access.master_key,
            config_json: access.config_json,
        },
        Arc::new(NothingKnown),
    )
    .unwrap();
    (scratch, repo)
}

/// The next job the controller sends down the session.
fn next_job(
    rt: &tokio::runtime::Runtime,
    inbound: &mut tonic::Streaming<pb::ControllerMessage>,
) -> pb::Job {
    loop {
        let m = rt
            .block_on(inbound.message())
            .unwrap()
            .expect("session open");
        if let Some(pb::controller_message::Body::Job(j)) = m.body {
            return j;
        }
    }
}

/// Every attack of the issue in one session of a scripted agent; afterwards
/// the victim's backups restore byte for byte and the repository checks clean.
#[test]
fn a_hostile_agent_is_contained() {
    let c = Cluster::start(ClusterOptions::default());
    let victim_site = c.dir.join("victim-site");
    site(&victim_site);
    let _victim = c.add_agent("victim", &[("victim.test", &victim_site)]);
    let first = c.backup("victim.test");
    assert_eq!(first["state"], "succeeded", "{first}");
    assert!(first["snapshot"].is_string(), "{first}");

    let Scripted {
        rt,
        client,
        tx,
        mut inbound,
    } = Scripted::connect(&c, "evil", &["victim.test", "evil.test"]);
    let _guard = rt.enter();

    // Domain takeover: a name two agents report is ambiguous for admin calls.
    let out = c.ctl(&["backup", "victim.test"]);
    assert_eq!(out.status.code(), Some(64), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("several agents"));
    // A backup of "its" victim.test carries nothing of the victim's.
    let queued = c.json(&["backup", "victim.test", "--agent", "evil"]);
    let job_id = queued["id"].as_str().unwrap().to_string();
    let job = next_job(&rt, &mut inbound);
    assert_eq!(job.job_id, job_id);
    assert!(
        job.snapshot.is_empty() && job.index_segment.is_empty(),
        "another agent's snapshot was handed over as a parent"
    );
    let (_scratch, repo) = job_repository(&job);
    let k = repo.key();
    let put = |pieces: Vec<pb::PackPiece>| {
        let mut cl = client.clone();
        rt.block_on(cl.put_packs(tokio_stream::iter(pieces)))
    };
    let have = |id: Id| {
        let mut cl = client.clone();
        let r = rt
            .block_on(cl.have_blobs(pb::HaveBlobsRequest {
                ids: vec![id.0.to_vec()],
                job_id: job_id.clone(),
            }))
            .unwrap()
            .into_inner();
        r.have[0] & 1 == 1
    };

    // Lying packs: a blob under another blob's id, wrong lengths, a zstd
    // bomb, a pack that does not hash to its name.
    let good: &[u8] = b"an honest blob of the evil agent";
    let target = k.blob_id(b"a blob some victim will upload tomorrow");
    let bomb = vec![0u8; 64 << 20];
    let mut lies = vec![
        (
            "blob under a foreign id",
            pack(k, &[(BlobType::Data, target, good, good.len())]),
        ),
        (
            "length lie",
            pack(
                k,
                &[(BlobType::Data, k.blob_id(good), good, good.len() + 9)],
            ),
        ),
        (
            "zstd bomb",
            pack(k, &[(BlobType::Data, k.blob_id(&bomb), &bomb[..], 4096)]),
        ),
        (
            "not a tree",
            pack(k, &[(BlobType::Tree, k.blob_id(good), good, good.len())]),
        ),
    ];
    let (honest_id, honest) = pack(k, &[(BlobType::Data, k.blob_id(good), good, good.len())]);
    let mut renamed = honest.clone();
    renamed[0] ^= 0xff;
    lies.push(("re-declared pack", (honest_id, renamed)));
    for (what, (id, bytes)) in &lies {
        let err = put(pieces(&job_id, *id, bytes, false)).unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{what}: {err:?}");
        assert!(err.message().starts_with("refused"), "{what}: {err:?}");
    }
    assert!(!have(target), "a lying pack made a blob look stored");
    // A lying index segment: the controller never reads one.
    let phantom = k.blob_id(b"never stored anywhere");
    let seg = cairn_repo::index::encode_segment(
        k,
        &[(
            Id::random(),
            vec![PackEntry {
                kind: BlobType::Data,
                id: phantom,
                offset: 0,
                length: 100,
                raw_length: 10,
                grouped: false,
            }],
        )],
    );
    put(pieces(&job_id, Id::of_stored(&seg), &seg, true)).unwrap();
    assert!(!have(phantom), "an agent's index segment was believed");
    assert_eq!(c.metric("cairn_refused_uploads_total"), lies.len() as f64);

    // Bounds: too many open packs, a message over the inbound limit (also
    // before authentication), and the controller keeps serving.
    let many: Vec<pb::PackPiece> = (0..6)
        .map(|_| pb::PackPiece {
            job_id: job_id.clone(),
            pack_id: Id::random().0.to_vec(),
            data: vec![1; 10],
            ..Default::default()
        })
        .collect();
    assert_eq!(
        put(many).unwrap_err().code(),
        tonic::Code::ResourceExhausted
    );
    let huge = vec![pb::PackPiece {
        job_id: job_id.clone(),
        pack_id: Id::random().0.to_vec(),
        data: vec![0; 16 << 20],
        ..Default::default()
    }];
    assert!(put(huge).is_err());
    let mut anon = AgentServiceClient::new(channel(&c, None));
    let err = rt
        .block_on(anon.enroll(pb::EnrollRequest {
            token: "x".repeat(16 << 20),
            ..Default::default()
        }))
        .unwrap_err();
    assert_ne!(
        err.code(),
        tonic::Code::Unauthenticated,
        "a 16 MiB message was decoded: {err:?}"
    );

    // An honest pack is taken; snapshots are checked and stamped by the controller.
    let data = b"evil site file";
    let (pid, pbytes, tree_id, tree) = one_file_pack(k, data);
    put(pieces(&job_id, pid, &pbytes, false)).unwrap();
    assert!(have(k.blob_id(data)));
    // A group (small blobs sealed together, as dumps store theirs): its
    // members are offered to the job that wrote it.
    // Rows, so the group is sealed by column (format v1.3) and the
    // controller decodes that layout to verify it.
    let rows = |from: u32| -> Vec<u8> {
        (from..from + 20)
            .map(|i| format!("({i},'row {i} of a grouped dump'),\n"))
            .collect::<String>()
            .into_bytes()
    };
    let (one, two) = (rows(1), rows(21));
    let members: [&[u8]; 2] = [&one, &two];
    assert!(
        cairn_repo::group::open(
            k,
            &cairn_repo::group::seal(k, &Id([1; 32]), &members, 3, true),
            &"g"
        )
        .unwrap()
        .by_column
    );
    // Written as one group record (format v1.2), or as v1.1 writers did (an
    // entry per member): the controller checks both.
    let group_pack = |scope: &Id, v1_1: bool| {
        let env = cairn_repo::group::seal(k, scope, &members, 3, true);
        let list: Vec<(Id, usize)> = members
            .iter()
            .map(|m| (cairn_repo::group::member_id(k, scope, m), m.len()))
            .collect();
        let mut w = PackWriter::in_memory();
        if v1_1 {
            w.add_group_v1_1(BlobType::Data, &env, &list).unwrap();
        } else {
            w.add_group(scope, &env, &list).unwrap();
        }
        let p = w.finish(k).unwrap();
        let PackBody::Memory(bytes) = p.body else {
            unreachable!("in-memory writer")
        };
        (p.id, bytes)
    };
    // Only in its own scope (its agent id and the job's domain): groups in
    // the victim's are refused, so no group of the victim's holds its blobs.
    for v1_1 in [false, true] {
        let (vid, vbytes) = group_pack(&k.group_scope("victim\nvictim.test"), v1_1);
        let err = put(pieces(&job_id, vid, &vbytes, false)).unwrap_err();
        assert!(err.message().contains("another writer's scope"), "{err:?}");
    }
    let scope = k.group_scope("evil\nvictim.test");
    let member = cairn_repo::group::member_id(k, &scope, members[0]);
    let (gid, gbytes) = group_pack(&scope, false);
    put(pieces(&job_id, gid, &gbytes, false)).unwrap();
    assert!(have(member), "a job's own grouped blob");
    let commit = |snapshot: Vec<u8>| {
        let mut cl = client.clone();
        rt.block_on(cl.commit_snapshot(pb::CommitSnapshotRequest {
            job_id: job_id.clone(),
            snapshot,
        }))
    };
    let err = commit(proposed(k, "other.test", tree_id)).unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");
    let mut dangling = Node::new(std::ffi::OsStr::new("y"), NodeKind::File);
    dangling.content = vec![phantom];
    let dtree = Tree {
        nodes: vec![dangling],
    }
    .to_bytes();
    let (did, dbytes) = pack(
        k,
        &[(BlobType::Tree, k.blob_id(&dtree), &dtree, dtree.len())],
    );
    put(pieces(&job_id, did, &dbytes, false)).unwrap();
    let err = commit(proposed(k, "victim.test", k.blob_id(&dtree))).unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
    let stored = commit(proposed(k, "victim.test", tree_id))
        .unwrap()
        .into_inner();
    let err = commit(proposed(k, "victim.test", tree_id)).unwrap_err();
    assert_eq!(
        err.code(),
        tonic::Code::PermissionDenied,
        "a second snapshot for one job"
    );

    // Reads: the next job stands on that snapshot and may read its trees,
    // never the bytes of other blobs in the same pack, nor other packs.
    let queued = c.json(&["backup", "victim.test", "--agent", "evil"]);
    let next = next_job(&rt, &mut inbound);
    assert_eq!(next.job_id, queued["id"].as_str().unwrap());
    let data_len = k.seal(data, 3).len() as u64;
    let tree_len = k.seal(&tree, 3).len() as u64;
    let read = |pack: Id, offset: u64, length: u64| {
        let mut cl = client.clone();
        rt.block_on(cl.read_pack(pb::ReadPackRequest {
            job_id: next.job_id.clone(),
            pack_id: pack.0.to_vec(),
            offset,
            length,
        }))
    };
    let err = read(pid, 0, data_len).unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");
    let err = read(honest_id, 0, 16).unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");
    let whole = read(pid, 0, pbytes.len() as u64).unwrap().into_inner().data;
    assert_eq!(whole.len(), pbytes.len());
    let tree_at = data_len as usize..(data_len + tree_len) as usize;
    assert_eq!(&whole[tree_at.clone()], &pbytes[tree_at.clone()]);
    assert!(
        whole[..tree_at.start].iter().all(|b| *b == 0)
            && whole[tree_at.end..].iter().all(|b| *b == 0),
        "bytes outside the granted blobs were served"
    );

    // No other job may name that group's members: a restore naming one
    // would be granted the whole group.
    let mut cl = client.clone();
    let asked = rt
        .block_on(cl.have_blobs(pb::HaveBlobsRequest {
            ids: vec![member.0.to_vec()],
            job_id: next.job_id.clone(),
        }))
        .unwrap()
        .into_inner();
    assert_eq!(
        asked.have[0] & 1,
        0,
        "a grouped blob offered to another job"
    );
    let mut node = Node::new(std::ffi::OsStr::new("g"), NodeKind::File);
    node.content = vec![member];
    node.size = members[0].len() as u64;
    let gtree = Tree { nodes: vec![node] }.to_bytes();
    let (tid, tbytes) = pack(
        k,
        &[(BlobType::Tree, k.blob_id(&gtree), &gtree, gtree.len())],
    );
    put(pieces(&next.job_id, tid, &tbytes, false)).unwrap();
    let err = rt
        .block_on(cl.commit_snapshot(pb::CommitSnapshotRequest {
            job_id: next.job_id.clone(),
            snapshot: proposed(k, "victim.test", k.blob_id(&gtree)),
        }))
        .unwrap_err();
    assert!(
        err.message().contains("in a group of another site"),
        "{err:?}"
    );

    // Nor may it store a blob list as edits of a tree the job does not
    // stand on: the list would reach what that tree lists (the victim's).
    let ctl = Ctl::new(c.dir.join("repo").to_str().unwrap(), PASSPHRASE);
    let snaps = ctl.json(&["snapshots"]);
    let victim_tree: Id = snaps
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == first["snapshot"])
        .expect("the victim's snapshot")["tree"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let mut node = Node::new(std::ffi::OsStr::new("index.php"), NodeKind::File);
    node.content_edit = Some(cairn_repo::content_edit::ContentEdit {
        base: victim_tree,
        edits: vec![cairn_repo::content_edit::Edit::Copy(0, 1)],
    });
    let etree = Tree { nodes: vec![node] }.to_bytes();
    let (eid, ebytes) = pack(
        k,
        &[(BlobType::Tree, k.blob_id(&etree), &etree, etree.len())],
    );
    put(pieces(&next.job_id, eid, &ebytes, false)).unwrap();
    let err = rt
        .block_on(cl.commit_snapshot(pb::CommitSnapshotRequest {
            job_id: next.job_id.clone(),
            snapshot: proposed(k, "victim.test", k.blob_id(&etree)),
        }))
        .unwrap_err();
    assert!(
        err.message().contains("not of the dump the job stands on"),
        "{err:?}"
    );

    let forged = snaps
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == stored.snapshot_id)
        .expect("the committed snapshot is in the repository");
    assert_eq!(forged["host"], "evil-host");
    assert_eq!(forged["agent"], "evil");
    assert_eq!(forged["job"], job_id.as_str());
    let t = chrono::DateTime::parse_from_rfc3339(forged["time"].as_str().unwrap()).unwrap();
    assert!(
        (chrono::Utc::now() - t.with_timezone(&chrono::Utc))
            .num_seconds()
            .abs()
            < 300,
        "snapshot time came from the agent: {t}"
    );
    let log = fs::read_to_string(c.controller_log()).unwrap();
    let refusal = log
        .lines()
        .find(|l| l.contains("refused: an agent's upload failed verification"))
        .expect("refusals are logged");
    assert!(
        refusal.contains("evil"),
        "refusals name the agent: {refusal}"
    );

    // The victim is untouched: the next incremental backup of its own
    // domain is not based on the evil snapshot, and everything restores.
    drop(tx);
    drop(inbound);
    let second = c.json(&["backup", "victim.test", "--agent", "victim", "--wait"]);
    assert_eq!(second["state"], "succeeded", "{second}");
    for snap in [&first, &second] {
        let target = c.dir.join(format!(
            "restore-{}",
            &snap["snapshot"].as_str().unwrap()[..8]
        ));
        c.restore(snap["snapshot"].as_str().unwrap(), &target);
        assert_same_tree(
            &victim_site,
            &target,
            &Excludes::with_defaults::<&str>(&[]).unwrap(),
        );
    }
    ctl.ok(&["check", "--read-data"]);

    // Maintenance from outside is refused while the controller holds the lease.
    for args in [&["gc"][..], &["forget", &stored.snapshot_id[..12]][..]] {
        let out = ctl.run(args);
        assert!(
            !out.status.success(),
            "{args:?} ran beside a live controller"
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("held by the cairn controller"),
            "{args:?}: {err}"
        );
    }
}

/// A job its agent never ends is failed after job_timeout; the agent is told
/// to cancel it, and its read grant and gc pins are gone.
#[test]
fn a_job_that_never_ends_times_out_and_loses_its_grant() {
    let c = Cluster::start(ClusterOptions {
        job_timeout: Some("2s"),
        ..Default::default()
    });
    let Scripted {
        rt,
        client,
        tx: _tx,
        mut inbound,
    } = Scripted::connect(&c, "silent", &["silent.test"]);
    let queued = c.json(&["backup", "silent.test"]);
    let job = next_job(&rt, &mut inbound);
    assert_eq!(job.job_id, queued["id"].as_str().unwrap());
    let cancel = loop {
        let m = rt
            .block_on(inbound.message())
            .unwrap()
            .expect("session open");
        if let Some(pb::controller_message::Body::Cancel(c)) = m.body {
            break c;
        }
    };
    assert_eq!(cancel.job_id, job.job_id);
    let ended = c.wait_job_end(&job.job_id);
    assert_eq!(ended["state"], "failed", "{ended}");
    assert!(
        ended["error"].as_str().unwrap().contains("timed out"),
        "{ended}"
    );
    let mut cl = client.clone();
    let err = rt
        .block_on(cl.have_blobs(pb::HaveBlobsRequest {
            ids: vec![Id::random().0.to_vec()],
            job_id: job.job_id.clone(),
        }))
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");
}

/// Direct mode on Garage: agents get no storage credential, only one
/// presigned PUT per pack; a pack re-written through its URL after it was
/// registered is verified after the URL expired, so the rewrite is caught,
/// the pack deleted and the commit refused. A stored pack gets no new URL.
#[test]
fn presigned_packs_are_verified_after_their_urls_expire() {
    let garage = Garage::start().unwrap();
    let c = Cluster::start(ClusterOptions {
        repo: Some(format!("s3://{}/presigned", garage.bucket)),
        data_path: "direct",
        storage_env: vec![
            ("AWS_ACCESS_KEY_ID".into(), garage.key_id.clone()),
            ("AWS_SECRET_ACCESS_KEY".into(), garage.secret.clone()),
            ("AWS_ENDPOINT_URL".into(), garage.endpoint.clone()),
            ("AWS_REGION".into(), "garage".into()),
        ],
        presign_seconds: 3,
        ..Default::default()
    });
    let Scripted {
        rt,
        client,
        tx: _tx,
        mut inbound,
    } = Scripted::connect(&c, "direct", &["direct.test"]);
    let _guard = rt.enter();
    let run_job = |inbound: &mut tonic::Streaming<pb::ControllerMessage>| {
        let queued = c.json(&["backup", "direct.test"]);
        let job = next_job(&rt, inbound);
        assert_eq!(job.job_id, queued["id"].as_str().unwrap());
        job
    };
    let job = run_job(&mut inbound);
    let grant = job.storage.clone().expect("direct mode grants storage");
    assert!(grant.presigned, "{grant:?}");
    assert!(grant.env.is_empty(), "agents get no storage credential");
    let (_scratch, repo) = job_repository(&job);
    let k = repo.key();
    let http = reqwest::Client::new();
    let presign = |job: &str, id: Id| {
        let mut cl = client.clone();
        rt.block_on(cl.presign_pack(pb::PresignPackRequest {
            job_id: job.into(),
            pack_id: id.0.to_vec(),
        }))
    };
    let put = |p: &pb::PresignPackResponse, body: Vec<u8>| {
        let mut req = http.request(p.method.parse().unwrap(), &p.url).body(body);
        for (h, v) in &p.headers {
            req = req.header(h, v);
        }
        let resp = rt.block_on(req.send()).unwrap();
        assert!(resp.status().is_success(), "{}", resp.status());
    };
    let register = |job: &str, id: Id| {
        let mut cl = client.clone();
        rt.block_on(cl.register_pack(pb::RegisterPackRequest {
            job_id: job.into(),
            pack_id: id.0.to_vec(),
        }))
    };
    let commit = |job: &str, tree: Id| {
        let mut cl = client.clone();
        rt.block_on(cl.commit_snapshot(pb::CommitSnapshotRequest {
            job_id: job.into(),
            snapshot: proposed(k, "direct.test", tree),
        }))
    };
    let site_pack = |text: &[u8]| {
        let (id, bytes, tree_id, _) = one_file_pack(k, text);
        (id, bytes, tree_id)
    };

    // Upload, register, then rewrite through the still-valid URL.
    let (id, bytes, tree) = site_pack(b"honest content");
    let url = presign(&job.job_id, id).unwrap().into_inner();
    assert!(!url.url.contains(&garage.secret));
    put(&url, bytes.clone());
    let r = register(&job.job_id, id).unwrap().into_inner();
    assert_eq!(
        r.blobs, 0,
        "a presigned pack is verified only after its URL expires"
    );
    let err = presign(&Id::random().to_string(), id).unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");
    let mut garbage = bytes.clone();
    garbage[3] ^= 0x55;
    put(&url, garbage);
    let err = commit(&job.job_id, tree).unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("refused"), "{err:?}");
    let store =
        cairn_repo::storage::open_with_vars(&format!("s3://{}/presigned", garage.bucket), |k| {
            c.env().iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
        })
        .unwrap();
    assert!(
        store.stat(&cairn_repo::pack::key_of(&id)).is_err(),
        "the rewritten pack was not deleted"
    );
    assert_eq!(c.metric("cairn_refused_uploads_total"), 1.0);

    // An honest upload is indexed after the wait and commits; a stored pack
    // gets no second URL.
    let job = run_job(&mut inbound);
    let (id, bytes, tree) = site_pack(b"honest content, second try");
    let url = presign(&job.job_id, id).unwrap().into_inner();
    put(&url, bytes);
    register(&job.job_id, id).unwrap();
    commit(&job.job_id, tree).unwrap();
    let err = presign(&job.job_id, id).unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");
}

/// Upgrades (issue 15): an agent of the release before negotiation (its
/// hello has no protocol fields) is welcomed, told the controller's version
/// and protocol 1; an agent that speaks only protocols this controller does
/// not know is refused in one line that says which side to upgrade.
#[test]
fn agents_a_release_apart_work_together_and_others_are_told_why() {
    let c = Cluster::start(ClusterOptions::default());
    let old = Scripted::connect(&c, "old-agent", &["old.test"]);
    let mut inbound = old.inbound;
    let welcome = old.rt.block_on(inbound.message()).unwrap().unwrap();
    let Some(pb::controller_message::Body::Welcome(w)) = welcome.body else {
        panic!("no welcome: {welcome:?}");
    };
    assert_eq!(w.protocol, 1, "the old agent's protocol");
    assert_eq!(w.controller_version, env!("CARGO_PKG_VERSION"));
    let listed = c.json(&["domains", "list"]);
    assert!(listed.to_string().contains("old.test"), "{listed}");

    let agent = c.enroll_only("future-agent");
    let id = cairn_net::Identity {
        chain_pem: fs::read_to_string(agent.state().join("agent.pem")).unwrap(),
        key_pem: fs::read_to_string(agent.state().join("agent.key")).unwrap(),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let mut client = AgentServiceClient::new(channel(&c, Some(&id)));
    let (tx, rx) = mpsc::channel(4);
    tx.try_send(pb::AgentMessage {
        body: Some(pb::agent_message::Body::Hello(pb::Hello {
            agent_version: "9.0.0".into(),
            hostname: "future-host".into(),
            protocol: cairn_proto::PROTOCOL + 2,
            min_protocol: cairn_proto::PROTOCOL + 1,
            ..Default::default()
        })),
    })
    .unwrap();
    let refused = rt
        .block_on(client.session(ReceiverStream::new(rx)))
        .expect_err("a session in no common protocol is refused");
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    assert!(
        refused.message().contains("upgrade the controller") && !refused.message().contains('\n'),
        "{}",
        refused.message()
    );
    let v = c.json(&["version"]);
    assert_eq!(v["controller"]["protocol"], cairn_proto::PROTOCOL);
}
