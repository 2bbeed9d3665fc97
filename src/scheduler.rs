//! Which queued download starts next: priority order (FIFO within a priority), within the
//! limits on transfers in total and per host.
//!
//! Queued jobs live in one heap. A job whose host is at its limit is parked in that host's
//! own heap instead of blocking the jobs behind it; when a transfer to the host ends, the
//! host's best parked job returns to the main heap. Every operation is O(log n), so 100,000
//! queued requests cost memory, not time.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap, HashSet};

use crate::protocol::host_key;
use crate::transfer::Job;

/// A queued job, ordered by priority (higher first) then arrival (earlier first).
struct Entry(Box<Job>);

impl Entry {
    fn key(&self) -> (i64, std::cmp::Reverse<u64>) {
        (self.0.request.priority, std::cmp::Reverse(self.0.seq))
    }
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Entry {
    fn cmp(&self, other: &Self) -> Ordering {
        self.key().cmp(&other.key())
    }
}

/// The queue of jobs waiting for a transfer slot, and the count of slots in use.
pub struct Scheduler {
    ready: BinaryHeap<Entry>,
    parked: HashMap<String, BinaryHeap<Entry>>,
    active_per_host: HashMap<String, usize>,
    active: usize,
    /// Jobs cancelled while queued, by `seq`; dropped when they reach the top.
    cancelled: HashSet<u64>,
    queued: usize,
    max_parallel: usize,
    max_per_host: usize,
}

impl Scheduler {
    pub fn new(max_parallel: usize, max_per_host: usize) -> Scheduler {
        Scheduler {
            ready: BinaryHeap::new(),
            parked: HashMap::new(),
            active_per_host: HashMap::new(),
            active: 0,
            cancelled: HashSet::new(),
            queued: 0,
            max_parallel: max_parallel.max(1),
            max_per_host: max_per_host.max(1),
        }
    }

    /// Queue a job (new, or back for another attempt).
    pub fn push(&mut self, job: Box<Job>) {
        self.queued += 1;
        self.ready.push(Entry(job));
    }

    /// Forget a queued job. The caller knows it is queued (not active).
    pub fn cancel(&mut self, seq: u64) {
        self.cancelled.insert(seq);
        self.queued -= 1;
    }

    /// Jobs waiting for a slot (cancelled ones excluded).
    pub fn queued(&self) -> usize {
        self.queued
    }

    /// Transfers holding a slot.
    pub fn active(&self) -> usize {
        self.active
    }

    /// The next job allowed to start, taking its slot; `None` when the limits or an empty
    /// queue say wait.
    pub fn admit_next(&mut self) -> Option<Box<Job>> {
        while self.active < self.max_parallel {
            let Entry(job) = self.ready.pop()?;
            if self.cancelled.remove(&job.seq) {
                continue;
            }
            let host = slot_key(job.url());
            let in_use = self.active_per_host.entry(host.clone()).or_insert(0);
            if *in_use >= self.max_per_host {
                self.parked.entry(host).or_default().push(Entry(job));
                continue;
            }
            *in_use += 1;
            self.active += 1;
            self.queued -= 1;
            return Some(job);
        }
        None
    }

    /// Take any one queued job out, ignoring the limits (used when aborting everything).
    pub fn drain_one(&mut self) -> Option<Box<Job>> {
        loop {
            let entry = match self.ready.pop() {
                Some(entry) => entry,
                None => {
                    let host = self.parked.keys().next()?.clone();
                    let parked = self.parked.get_mut(&host)?;
                    let entry = parked.pop();
                    if parked.is_empty() {
                        self.parked.remove(&host);
                    }
                    entry?
                }
            };
            if self.cancelled.remove(&entry.0.seq) {
                continue;
            }
            self.queued -= 1;
            return Some(entry.0);
        }
    }

    /// A transfer to `url` ended (or was never started after `next` returned it): free its
    /// slot, and let the host's best parked job compete again.
    pub fn release(&mut self, url: &str) {
        let host = slot_key(url);
        self.active -= 1;
        if let Some(in_use) = self.active_per_host.get_mut(&host) {
            *in_use -= 1;
            if *in_use == 0 && !self.parked.contains_key(&host) {
                self.active_per_host.remove(&host);
            }
        }
        if let Some(parked) = self.parked.get_mut(&host) {
            if let Some(entry) = parked.pop() {
                self.ready.push(entry);
            }
            if parked.is_empty() {
                self.parked.remove(&host);
            }
        }
    }
}

fn slot_key(url: &str) -> String {
    host_key(url).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Download;

    fn job(seq: u64, priority: i64, url: &str) -> Box<Job> {
        let request = Download {
            id: format!("j{seq}"),
            urls: vec![url.to_string()],
            dest: "/tmp/x".into(),
            size: None,
            max_size: None,
            hashes: vec![],
            headers: vec![],
            priority,
            progress: false,
        };
        Box::new(Job::new(request, seq))
    }

    #[test]
    fn priority_then_fifo() {
        let mut s = Scheduler::new(10, 10);
        s.push(job(1, 0, "http://a/1"));
        s.push(job(2, 5, "http://a/2"));
        s.push(job(3, 0, "http://a/3"));
        s.push(job(4, 5, "http://a/4"));
        let order: Vec<u64> = std::iter::from_fn(|| s.admit_next())
            .map(|j| j.seq)
            .collect();
        assert_eq!(order, vec![2, 4, 1, 3]);
    }

    #[test]
    fn per_host_limit_lets_other_hosts_pass() {
        let mut s = Scheduler::new(10, 1);
        s.push(job(1, 0, "http://a/1"));
        s.push(job(2, 0, "http://a/2"));
        s.push(job(3, 0, "http://b/3"));
        assert_eq!(s.admit_next().unwrap().seq, 1);
        assert_eq!(s.admit_next().unwrap().seq, 3);
        assert!(s.admit_next().is_none());
        assert_eq!(s.queued(), 1);
        s.release("http://a/1");
        assert_eq!(s.admit_next().unwrap().seq, 2);
        assert_eq!(s.queued(), 0);
    }

    #[test]
    fn total_limit_and_cancel() {
        let mut s = Scheduler::new(1, 10);
        s.push(job(1, 0, "http://a/1"));
        s.push(job(2, 0, "http://a/2"));
        s.push(job(3, 0, "http://a/3"));
        assert_eq!(s.admit_next().unwrap().seq, 1);
        assert!(s.admit_next().is_none());
        s.cancel(2);
        s.release("http://a/1");
        assert_eq!(s.admit_next().unwrap().seq, 3);
        assert_eq!(s.active(), 1);
        assert_eq!(s.queued(), 0);
    }
}
