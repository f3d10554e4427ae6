//! The fleet gc protocol of [`crate::store`] as a model, explored
//! exhaustively with stateright: every interleaving of two backup jobs, a
//! `forget` and two gc runs over four blobs. The property is the one the
//! store promises — no snapshot in the repository references a deleted blob —
//! and each guard of the protocol is shown necessary by switching it off and
//! finding a counterexample.

use stateright::{Checker, Model, Property};

/// Blobs are bits of a `u8`: b0..b3.
type Blobs = u8;

/// One stored copy of a blob (a pack holding it): a re-upload of a blob gc
/// dropped is a new pack, not the old one.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct Copy {
    blob: u8,
    stored: bool,
    indexed: bool,
}

fn indexed(copies: &[Copy]) -> Blobs {
    copies
        .iter()
        .filter(|c| c.indexed)
        .fold(0, |m, c| m | 1 << c.blob)
}

#[derive(Clone, Copy)]
pub struct Guards {
    /// `have` pins what it answers present until the job ends.
    pub pin_answers: bool,
    /// Commits during a gc's mark are recorded in its epoch.
    pub record_epoch: bool,
    /// A commit checks, under the lock, that its blobs are indexed.
    pub check_commit: bool,
    /// A job's parent (what it reuses without asking) is held while it runs.
    pub hold_roots: bool,
    /// Packs a running job uploaded are held.
    pub hold_uploads: bool,
}

const SOUND: Guards = Guards {
    pin_answers: true,
    record_epoch: true,
    check_commit: true,
    hold_roots: true,
    hold_uploads: true,
};

/// A backup: reuses its parent's `reuse` blobs unasked, asks about `ask`.
/// A hostile agent also `claim`s blobs it was never told are there.
struct Plan {
    parent: Option<u8>,
    reuse: Blobs,
    ask: Blobs,
    claim: Blobs,
}

const PLANS: [Plan; 3] = [
    Plan {
        parent: Some(0),
        reuse: 0b0010,
        ask: 0b0101,
        claim: 0,
    },
    Plan {
        parent: None,
        reuse: 0,
        ask: 0b1100,
        claim: 0,
    },
    // Hostile: names another snapshot's blob b1 without asking.
    Plan {
        parent: None,
        reuse: 0,
        ask: 0b1000,
        claim: 0b0010,
    },
];

#[derive(Clone, Debug, Default, Hash, PartialEq, Eq)]
struct Job {
    /// 0 not begun, 1 begun, 2 asked, 3 uploaded, 4 committed or failed, 5 ended.
    pc: u8,
    roots: Blobs,
    reuse: Blobs,
    pins: Blobs,
    need: Blobs,
    uploaded: Blobs,
    /// Its commit was refused (a blob it relied on was gone).
    failed: bool,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq)]
enum Gc {
    Idle,
    Epoch {
        late: Blobs,
    },
    Marked {
        live: Blobs,
        late: Blobs,
    },
    /// The copies gc dropped from the index, to delete next.
    Unindexed {
        dead: Vec<usize>,
    },
}

#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct State {
    /// (snapshot id, its blobs) in storage.
    snapshots: Vec<(u8, Blobs)>,
    copies: Vec<Copy>,
    jobs: Vec<Job>,
    gc: Gc,
    gcs_left: u8,
    forgets_left: u8,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    Job(usize),
    GcStep,
    Forget,
}

pub struct GcModel(pub Guards);

impl Model for GcModel {
    type State = State;
    type Action = Action;

    fn init_states(&self) -> Vec<State> {
        vec![State {
            snapshots: vec![(0, 0b0011)],
            copies: (0..2)
                .map(|blob| Copy {
                    blob,
                    stored: true,
                    indexed: true,
                })
                .collect(),
            jobs: vec![Job::default(); PLANS.len()],
            gc: Gc::Idle,
            gcs_left: 2,
            forgets_left: 1,
        }]
    }

    fn actions(&self, s: &State, out: &mut Vec<Action>) {
        for (i, j) in s.jobs.iter().enumerate() {
            if j.pc < 5 {
                out.push(Action::Job(i));
            }
        }
        if s.gc != Gc::Idle || s.gcs_left > 0 {
            out.push(Action::GcStep);
        }
        if s.forgets_left > 0 && s.snapshots.iter().any(|(id, _)| *id == 0) {
            out.push(Action::Forget);
        }
    }

    fn next_state(&self, s: &State, a: Action) -> Option<State> {
        let g = self.0;
        let mut n = s.clone();
        match a {
            Action::Forget => {
                n.snapshots.retain(|(id, _)| *id != 0);
                n.forgets_left -= 1;
            }
            Action::Job(i) => {
                let plan = &PLANS[i];
                let parent = plan
                    .parent
                    .and_then(|p| s.snapshots.iter().find(|(id, _)| *id == p).map(|(_, b)| *b));
                let j = &mut n.jobs[i];
                match j.pc {
                    0 => {
                        // Dispatch: a forgotten parent means a full backup.
                        if let Some(blobs) = parent {
                            j.reuse = plan.reuse;
                            if g.hold_roots {
                                j.roots = blobs;
                            }
                        }
                    }
                    1 => {
                        let ask = plan.ask | (plan.reuse & !j.reuse);
                        let present = ask & indexed(&s.copies);
                        if g.pin_answers {
                            j.pins = present;
                        }
                        j.need = ask & !present;
                    }
                    2 => {
                        for blob in (0..4).filter(|b| j.need & 1 << b != 0) {
                            n.copies.push(Copy {
                                blob,
                                stored: true,
                                indexed: true,
                            });
                        }
                        if g.hold_uploads {
                            j.uploaded = j.need;
                        }
                    }
                    3 => {
                        let blobs = plan.ask | plan.reuse | plan.claim;
                        if g.check_commit && blobs & !indexed(&s.copies) != 0 {
                            j.failed = true;
                        } else {
                            n.snapshots.push((i as u8 + 1, blobs));
                            if g.record_epoch {
                                match &mut n.gc {
                                    Gc::Epoch { late } | Gc::Marked { late, .. } => *late |= blobs,
                                    _ => {}
                                }
                            }
                        }
                    }
                    _ => {
                        *j = Job {
                            pc: 4,
                            failed: j.failed,
                            ..Job::default()
                        }
                    }
                }
                n.jobs[i].pc += 1;
            }
            Action::GcStep => {
                n.gc = match &s.gc {
                    Gc::Idle => {
                        n.gcs_left -= 1;
                        Gc::Epoch { late: 0 }
                    }
                    Gc::Epoch { late } => Gc::Marked {
                        live: s.snapshots.iter().fold(0, |m, (_, b)| m | b),
                        late: *late,
                    },
                    Gc::Marked { live, late } => {
                        let mut live = live | late;
                        for j in s.jobs.iter().filter(|j| (1..5).contains(&j.pc)) {
                            live |= j.roots | j.pins | j.uploaded;
                        }
                        let dead: Vec<usize> = (0..s.copies.len())
                            .filter(|&i| s.copies[i].indexed && live & 1 << s.copies[i].blob == 0)
                            .collect();
                        for &i in &dead {
                            n.copies[i].indexed = false;
                        }
                        Gc::Unindexed { dead }
                    }
                    Gc::Unindexed { dead } => {
                        for &i in dead {
                            n.copies[i].stored = false;
                        }
                        Gc::Idle
                    }
                };
            }
        }
        Some(n)
    }

    fn properties(&self) -> Vec<Property<Self>> {
        vec![
            Property::always(NO_BACKUP_FAILS, |_, s: &State| {
                s.jobs
                    .iter()
                    .zip(&PLANS)
                    .all(|(j, p)| p.claim != 0 || !j.failed)
            }),
            Property::always(NO_DANGLING, |_, s: &State| {
                let readable = s
                    .copies
                    .iter()
                    .filter(|c| c.stored && c.indexed)
                    .fold(0, |m, c| m | 1 << c.blob);
                s.snapshots.iter().all(|(_, b)| b & !readable == 0)
            }),
        ]
    }
}

const NO_DANGLING: &str = "no snapshot references a deleted blob";
const NO_BACKUP_FAILS: &str = "no backup fails because gc ran";

/// Explores every interleaving; returns which properties were violated.
fn violated(guards: Guards) -> Vec<&'static str> {
    let c = GcModel(guards).checker().spawn_bfs().join();
    [NO_DANGLING, NO_BACKUP_FAILS]
        .into_iter()
        .filter(|p| c.discovery(p).is_some())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gc_never_deletes_what_a_committed_snapshot_references() {
        let c = GcModel(SOUND).checker().spawn_bfs().join();
        c.assert_properties();
        assert!(
            c.unique_state_count() > 1000,
            "explored {}",
            c.unique_state_count()
        );
    }

    /// Each guard matters: without it the checker finds a counterexample,
    /// of safety (a snapshot that references a deleted blob) or of liveness
    /// (a backup refused at commit because gc took what it relied on).
    #[test]
    fn every_guard_of_the_protocol_is_needed() {
        let broken = [
            (
                "pins",
                Guards {
                    pin_answers: false,
                    ..SOUND
                },
                NO_BACKUP_FAILS,
            ),
            (
                "uploads",
                Guards {
                    hold_uploads: false,
                    ..SOUND
                },
                NO_BACKUP_FAILS,
            ),
            (
                "parent roots",
                Guards {
                    hold_roots: false,
                    ..SOUND
                },
                NO_BACKUP_FAILS,
            ),
            (
                "epoch",
                Guards {
                    record_epoch: false,
                    ..SOUND
                },
                NO_DANGLING,
            ),
            (
                "commit check",
                Guards {
                    check_commit: false,
                    ..SOUND
                },
                NO_DANGLING,
            ),
        ];
        for (name, g, property) in broken {
            assert!(
                violated(g).contains(&property),
                "without the {name} guard, {property:?} still holds"
            );
        }
    }
}
