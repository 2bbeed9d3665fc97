//! Every unfinished download, in one table keyed by a number that doubles as the curl token
//! of its running attempt, each in exactly one [`State`].
//!
//! A download is in the table from the moment it is accepted until `done` or `failed` is
//! reported; ids are unique among them. The scheduler holds only tickets (key, order,
//! slot); what a download *is* lives here.

use std::collections::HashMap;
use std::time::Duration;

use curl::multi::Easy2Handle;
use slab::Slab;

use crate::body::sink::{Sink, Verified};
use crate::engine::job::Job;
use crate::net::response::ResponseHead;
use crate::net::transfer::Transfer;

/// Where a download is in its life.
pub(crate) enum State {
    /// In the scheduler: queued, parked behind its slot's limit, or waiting out a retry
    /// delay.
    Queued,
    /// An attempt is running in curl.
    Active(Easy2Handle<Transfer>),
    /// The body arrived; a worker is finishing its digests (see `body::hasher`).
    Hashing(Box<Hashing>),
    /// Verified; a worker is writing the bytes into place (see `body::placer`).
    Placing(Box<Placing>),
}

/// What is known of an attempt that ended with a body.
pub(crate) struct Ended {
    pub head: ResponseHead,
    pub status: u32,
    pub elapsed: Duration,
}

pub(crate) struct Hashing {
    /// The worker's id for the body: its answer must name it.
    pub lane: u64,
    /// Bytes of buffers the body holds until the worker answers.
    pub held: usize,
    pub sink: Sink,
    pub ended: Ended,
}

pub(crate) struct Placing {
    pub verified: Verified,
    pub ended: Ended,
}

pub(crate) struct Download {
    pub job: Job,
    pub state: State,
}

#[derive(Default)]
pub(crate) struct Downloads {
    table: Slab<Download>,
    by_id: HashMap<String, usize>,
}

impl Downloads {
    /// Take in a new download (its id must not be in use); returns its key.
    pub fn insert(&mut self, job: Job) -> usize {
        let id = job.id().to_owned();
        let key = self.table.insert(Download {
            job,
            state: State::Queued,
        });
        self.by_id.insert(id, key);
        key
    }

    /// The download is over: out of the table.
    pub fn remove(&mut self, key: usize) -> Download {
        let download = self.table.remove(key);
        self.by_id.remove(download.job.id());
        download
    }

    pub fn key_of(&self, id: &str) -> Option<usize> {
        self.by_id.get(id).copied()
    }

    pub fn get(&self, key: usize) -> Option<&Download> {
        self.table.get(key)
    }

    pub fn get_mut(&mut self, key: usize) -> Option<&mut Download> {
        self.table.get_mut(key)
    }

    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    pub fn keys(&self) -> Vec<usize> {
        self.table.iter().map(|(key, _)| key).collect()
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = (usize, &mut Download)> {
        self.table.iter_mut()
    }
}

impl std::ops::Index<usize> for Downloads {
    type Output = Download;
    fn index(&self, key: usize) -> &Download {
        &self.table[key]
    }
}

impl std::ops::IndexMut<usize> for Downloads {
    fn index_mut(&mut self, key: usize) -> &mut Download {
        &mut self.table[key]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The table holds an entry per unfinished download, 100,000 of them when a package
    /// manager queues that many, with up to as many again unused behind them (the slab grows
    /// by doubling). An entry is the job and its state; the request stays in the box the front
    /// made, the history of failed attempts is boxed when there is one, and nothing in the job
    /// is a copy of a string many downloads share (docs/design.md, "What a queued download
    /// costs"). Before this was kept small, an entry was 512 bytes.
    #[test]
    fn a_table_entry_stays_small() {
        let entry = std::mem::size_of::<Download>();
        assert!(
            entry <= 160,
            "a table entry is {entry} bytes, more than 160"
        );
    }
}
