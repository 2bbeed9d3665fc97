//! Which queued download starts next: priority order (FIFO within a priority), within the
//! limit on transfers in total and the limit of each *slot* (a host, or a mirror).
//!
//! Limits count *connections' worth* of transfers. A transfer over HTTP/1.x holds a
//! connection of its own and costs a whole unit; once a slot is known to multiplex (a
//! response came over HTTP/2), each of its transfers costs one stream, `1/streams` of a
//! unit. So `--max-parallel 64` means 64 HTTP/1.1 transfers, or 64 connections of up to
//! `--max-streams` HTTP/2 transfers each: curl's own connection caps are set to the same
//! numbers, and streams are what make many small files cheap over a long round trip. A
//! slot starts out as HTTP/1.x and is promoted when a connection agrees on HTTP/2 (or a
//! response comes over it); its running transfers then cost one stream each as well.
//!
//! The scheduler holds [`Ticket`]s, not downloads: a download's key, order and slot.
//! Queued tickets live in one heap. A ticket whose slot is full is parked in that slot's own
//! heap instead of blocking the ones behind it; when a transfer in the slot ends, the slot's
//! best parked ticket returns to the main heap. Tickets waiting out a retry delay sit in a
//! timer heap
//! until they are due. Every operation is O(log n), so 100,000 queued requests cost memory,
//! not time; that memory is one heap entry (40 bytes) per ticket: slots are shared
//! `Rc<str>`s, and nothing else is kept per queued ticket (a cancel names the slot).

use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::rc::Rc;
use std::time::Instant;

/// What the scheduler knows of a queued download.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Ticket {
    /// The download's key in the engine's table.
    pub key: usize,
    /// Order of arrival: FIFO within a priority; identifies the ticket for cancels.
    pub seq: u64,
    pub priority: i64,
    /// The host or mirror the attempt counts against (shared by every ticket of the slot).
    pub slot: Rc<str>,
}

/// A queued ticket, ordered by priority (higher first) then arrival (earlier first).
struct Entry(Ticket);

impl Entry {
    fn key(&self) -> (i64, Reverse<u64>) {
        (self.0.priority, Reverse(self.0.seq))
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

/// The queue of tickets waiting for a transfer slot, and the slots in use.
pub(crate) struct Scheduler {
    ready: BinaryHeap<Entry>,
    parked: HashMap<Rc<str>, BinaryHeap<Entry>>,
    /// Units (streams) in use per slot; a unit is `streams` of them.
    active_per_slot: HashMap<Rc<str>, usize>,
    /// Slots that answered over HTTP/2: their transfers cost one stream each.
    multiplexed: HashSet<Rc<str>>,
    streams: usize,
    /// Transfers running per slot, whatever they cost.
    running_per_slot: HashMap<Rc<str>, usize>,
    /// Tickets queued (ready or parked), in total and per slot.
    queued: usize,
    queued_per_slot: HashMap<Rc<str>, usize>,
    limits: HashMap<Rc<str>, usize>,
    default_limit: usize,
    delayed: BinaryHeap<Reverse<(Instant, u64)>>,
    delayed_tickets: HashMap<u64, Ticket>,
    /// Queued tickets cancelled by `seq`; dropped when they reach the top.
    cancelled: HashSet<u64>,
    /// Transfers running, and what they cost in streams.
    active: usize,
    active_streams: usize,
    max_parallel: usize,
    /// Transfers at once, whatever they cost: what the file descriptors allow
    /// (`fd_budget`), lowered when they run out.
    max_transfers: usize,
}

impl Scheduler {
    /// `default_limit` is the limit of a slot that has none of its own (the per-host limit);
    /// `streams` is how many multiplexed transfers one connection carries.
    pub fn new(max_parallel: usize, default_limit: usize, streams: usize) -> Scheduler {
        Scheduler {
            ready: BinaryHeap::new(),
            parked: HashMap::new(),
            active_per_slot: HashMap::new(),
            multiplexed: HashSet::new(),
            streams: streams.max(1),
            running_per_slot: HashMap::new(),
            queued: 0,
            queued_per_slot: HashMap::new(),
            limits: HashMap::new(),
            default_limit: default_limit.max(1),
            delayed: BinaryHeap::new(),
            delayed_tickets: HashMap::new(),
            cancelled: HashSet::new(),
            active: 0,
            active_streams: 0,
            max_parallel: max_parallel.max(1),
            max_transfers: usize::MAX,
        }
    }

    /// Run at most `max` transfers at once (at least one), whatever they cost.
    pub fn cap_transfers(&mut self, max: usize) {
        self.max_transfers = max.max(1);
    }

    /// Whether one more transfer fits within the cap on transfers, beside `held` bodies that
    /// hold a file after their transfer ended (those waiting for a hashing worker).
    pub fn has_room_beside(&self, held: usize) -> bool {
        self.active + held < self.max_transfers
    }

    /// File descriptors ran out: from now on run no more transfers than are running now,
    /// counting `held` bodies that hold a file after their transfer ended (at least one);
    /// returns the new cap.
    pub fn ran_out_of_fds(&mut self, held: usize) -> usize {
        self.cap_transfers((self.active + held).min(self.max_transfers));
        self.max_transfers
    }

    /// Queue a ticket for its slot, to start as soon as the limits allow.
    pub fn push(&mut self, ticket: Ticket) {
        *self.queued_per_slot.entry(ticket.slot.clone()).or_insert(0) += 1;
        self.queued += 1;
        self.ready.push(Entry(ticket));
    }

    /// Hold a ticket until `at` (a retry delay); [`Scheduler::take_due`] hands it back.
    pub fn delay(&mut self, ticket: Ticket, at: Instant) {
        self.delayed.push(Reverse((at, ticket.seq)));
        self.delayed_tickets.insert(ticket.seq, ticket);
    }

    /// When the next delayed ticket is due, if any.
    pub fn next_wake(&mut self) -> Option<Instant> {
        while let Some(Reverse((at, seq))) = self.delayed.peek() {
            if self.delayed_tickets.contains_key(seq) {
                return Some(*at);
            }
            self.delayed.pop();
        }
        None
    }

    /// Delayed tickets whose time has come.
    pub fn take_due(&mut self, now: Instant) -> Vec<Ticket> {
        let mut due = Vec::new();
        while let Some(Reverse((at, seq))) = self.delayed.peek().copied() {
            if at > now {
                break;
            }
            self.delayed.pop();
            if let Some(ticket) = self.delayed_tickets.remove(&seq) {
                due.push(ticket);
            }
        }
        due
    }

    /// Forget a queued or delayed ticket of `slot` (the caller knows it is one of them).
    pub fn cancel(&mut self, seq: u64, slot: &str) {
        if self.delayed_tickets.remove(&seq).is_some() {
            return;
        }
        self.cancelled.insert(seq);
        self.unqueue(slot);
    }

    /// Transfers running or queued for `slot`.
    pub fn load(&self, slot: &str) -> usize {
        self.running_per_slot.get(slot).copied().unwrap_or(0)
            + self.queued_per_slot.get(slot).copied().unwrap_or(0)
    }

    /// Whether transfers are running in `slot`.
    pub fn busy(&self, slot: &str) -> bool {
        self.active_per_slot.contains_key(slot)
    }

    /// Has `slot` been seen to multiplex?
    pub fn is_multiplexed(&self, slot: &str) -> bool {
        self.multiplexed.contains(slot)
    }

    /// `slot` answered over HTTP/2: from now on its transfers cost one stream each, so more
    /// of its parked jobs may start. That includes the `recosted` transfers already running
    /// at a whole connection's price, whose `cost` the caller has lowered to 1: each holds a
    /// connection that now carries streams, and keeping their old price until they ended
    /// held every other transfer back for a round trip (scenario L2 of `make bench`).
    pub fn mark_multiplexed(&mut self, slot: &Rc<str>, recosted: usize) {
        if self.multiplexed.insert(slot.clone()) {
            let freed = recosted * (self.streams - 1);
            self.active_streams -= freed;
            if let Some(in_use) = self.active_per_slot.get_mut(slot) {
                *in_use -= freed;
            }
            for _ in 0..self.limit_of(slot) * (self.streams - 1) {
                self.unpark_one(slot);
            }
        }
    }

    /// Give `slot` its own limit (a mirror's `max_per_mirror`, lowered under load).
    pub fn set_limit(&mut self, slot: &Rc<str>, limit: usize) {
        let old = self.limit_of(slot);
        self.limits.insert(slot.clone(), limit.max(1));
        let per_connection = self.streams / self.cost_in(slot);
        for _ in old * per_connection..limit * per_connection {
            self.unpark_one(slot);
        }
    }

    /// How many streams one connection should carry so that the busiest multiplexed slot
    /// spreads its transfers over all the connections it may open (1 when none multiplex).
    pub fn streams_per_connection(&self) -> usize {
        self.multiplexed
            .iter()
            .filter_map(|slot| {
                let running = self.running_per_slot.get(slot)?;
                Some(running.div_ceil(self.limit_of(slot)))
            })
            .max()
            .unwrap_or(1)
            .clamp(1, self.streams)
    }

    /// Streams one transfer in `slot` costs: a whole connection unless it multiplexes.
    fn cost_in(&self, slot: &str) -> usize {
        if self.multiplexed.contains(slot) {
            1
        } else {
            self.streams
        }
    }

    /// Tickets queued (not delayed, not running).
    #[cfg(test)]
    pub fn queued(&self) -> usize {
        self.queued
    }

    /// Transfers holding a slot.
    #[cfg(test)]
    pub fn active(&self) -> usize {
        self.active
    }

    fn limit_of(&self, slot: &str) -> usize {
        self.limits.get(slot).copied().unwrap_or(self.default_limit)
    }

    fn unqueue(&mut self, slot: &str) {
        self.queued -= 1;
        if let Some(n) = self.queued_per_slot.get_mut(slot) {
            *n -= 1;
            if *n == 0 {
                self.queued_per_slot.remove(slot);
            }
        }
    }

    /// The next ticket allowed to start, taking its place in the slot, with what it costs
    /// (give the cost back to [`Scheduler::release`]); `None` when the limits or an empty
    /// queue say wait.
    pub fn admit_next(&mut self) -> Option<(Ticket, usize)> {
        let capacity = self.max_parallel * self.streams;
        while self.active_streams < capacity && self.active < self.max_transfers {
            let Entry(job) = self.ready.pop()?;
            if self.cancelled.remove(&job.seq) {
                continue;
            }
            let cost = self.cost_in(&job.slot);
            let slot_capacity = self.limit_of(&job.slot) * self.streams;
            let in_use = self.active_per_slot.get(&job.slot).copied().unwrap_or(0);
            if self.active_streams + cost > capacity {
                // Not even the total has room for it: it keeps its place at the head.
                self.ready.push(Entry(job));
                return None;
            }
            if in_use + cost > slot_capacity {
                self.parked
                    .entry(job.slot.clone())
                    .or_default()
                    .push(Entry(job));
                continue;
            }
            *self.active_per_slot.entry(job.slot.clone()).or_insert(0) += cost;
            *self.running_per_slot.entry(job.slot.clone()).or_insert(0) += 1;
            self.active += 1;
            self.active_streams += cost;
            self.unqueue(&job.slot);
            return Some((job, cost));
        }
        None
    }

    /// A transfer in `slot` that cost `cost` ended (or never started after `admit_next`
    /// returned it): free its place, and let the slot's best parked tickets compete again.
    pub fn release(&mut self, slot: &str, cost: usize) {
        self.active -= 1;
        self.active_streams -= cost;
        if let Some(in_use) = self.active_per_slot.get_mut(slot) {
            *in_use -= cost;
            if *in_use == 0 {
                self.active_per_slot.remove(slot);
                self.running_per_slot.remove(slot);
            } else if let Some(running) = self.running_per_slot.get_mut(slot) {
                *running -= 1;
            }
        }
        for _ in 0..cost.div_ceil(self.cost_in(slot)) {
            self.unpark_one(slot);
        }
    }

    fn unpark_one(&mut self, slot: &str) {
        if let Some(parked) = self.parked.get_mut(slot) {
            if let Some(entry) = parked.pop() {
                self.ready.push(entry);
            }
            if parked.is_empty() {
                self.parked.remove(slot);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(seq: u64, priority: i64, slot: &str) -> Ticket {
        Ticket {
            key: seq as usize,
            seq,
            priority,
            slot: slot.into(),
        }
    }

    /// Admit everything the limits allow: (seq, cost) of each.
    fn admit_all(s: &mut Scheduler) -> Vec<(u64, usize)> {
        std::iter::from_fn(|| s.admit_next())
            .map(|(t, cost)| (t.seq, cost))
            .collect()
    }

    #[test]
    fn priority_then_fifo() {
        let mut s = Scheduler::new(10, 10, 4);
        s.push(job(1, 0, "a"));
        s.push(job(2, 5, "a"));
        s.push(job(3, 0, "a"));
        s.push(job(4, 5, "a"));
        let order: Vec<u64> = admit_all(&mut s).into_iter().map(|(seq, _)| seq).collect();
        assert_eq!(order, vec![2, 4, 1, 3]);
    }

    #[test]
    fn a_full_slot_lets_other_slots_pass() {
        let mut s = Scheduler::new(10, 1, 4);
        s.push(job(1, 0, "a"));
        s.push(job(2, 0, "a"));
        s.push(job(3, 0, "b"));
        let (first, cost) = s.admit_next().unwrap();
        assert_eq!(first.seq, 1);
        assert_eq!(s.admit_next().unwrap().0.seq, 3);
        assert!(s.admit_next().is_none());
        assert_eq!(s.queued(), 1);
        assert_eq!(s.load("a"), 2);
        s.release(&first.slot, cost);
        assert_eq!(s.admit_next().unwrap().0.seq, 2);
        assert_eq!(s.queued(), 0);
    }

    #[test]
    fn total_limit_and_cancel() {
        let mut s = Scheduler::new(1, 10, 4);
        s.push(job(1, 0, "a"));
        s.push(job(2, 0, "a"));
        s.push(job(3, 0, "a"));
        let (first, cost) = s.admit_next().unwrap();
        assert_eq!(first.seq, 1);
        assert!(s.admit_next().is_none());
        s.cancel(2, "a");
        s.release(&first.slot, cost);
        assert_eq!(s.admit_next().unwrap().0.seq, 3);
        assert_eq!(s.active(), 1);
        assert_eq!(s.queued(), 0);
    }

    #[test]
    fn running_out_of_fds_caps_transfers_at_those_running() {
        // Multiplexed: 2 connections of 4 streams would allow 8 transfers.
        let mut s = Scheduler::new(2, 2, 4);
        s.mark_multiplexed(&Rc::from("h2"), 0);
        s.cap_transfers(5);
        for seq in 0..10 {
            s.push(job(seq, 0, "h2"));
        }
        let running = admit_all(&mut s);
        assert_eq!(running.len(), 5, "the cap at start");
        // One of them ran out of descriptors: it ends, and the cap is what still runs.
        s.release("h2", 1);
        assert_eq!(s.ran_out_of_fds(0), 4);
        assert!(s.admit_next().is_none());
        s.release("h2", 1);
        assert_eq!(admit_all(&mut s).len(), 1);
        assert!(!s.has_room_beside(0));
        // Bodies still held by a hashing worker count as transfers.
        s.release("h2", 1);
        assert!(s.has_room_beside(0) && !s.has_room_beside(1));
        assert_eq!(admit_all(&mut s).len(), 1);
        // Never below one transfer.
        for _ in 0..4 {
            s.release("h2", 1);
        }
        assert_eq!(s.ran_out_of_fds(0), 1);
        assert_eq!(admit_all(&mut s).len(), 1);
    }

    #[test]
    fn raising_a_limit_unparks() {
        let mut s = Scheduler::new(10, 1, 4);
        s.push(job(1, 0, "m"));
        s.push(job(2, 0, "m"));
        assert_eq!(s.admit_next().unwrap().0.seq, 1);
        assert!(s.admit_next().is_none());
        s.set_limit(&"m".into(), 2);
        assert_eq!(s.admit_next().unwrap().0.seq, 2);
    }

    #[test]
    fn a_multiplexed_slot_runs_streams_within_its_connections() {
        // 2 connections in total, 1 per host, 4 streams per connection.
        let mut s = Scheduler::new(2, 1, 4);
        for seq in 0..12 {
            s.push(job(seq, 0, "h2"));
        }
        s.push(job(12, 0, "other"));
        // Before the slot is known to multiplex, a transfer holds a whole connection.
        let (first, cost) = s.admit_next().unwrap();
        assert_eq!((first.seq, cost), (0, 4));
        assert_eq!(s.admit_next().unwrap().0.seq, 12);
        assert!(s.admit_next().is_none());
        // The first connection agreed on HTTP/2: it carries 4 streams, one of them the
        // transfer already running, which now costs one stream too.
        s.mark_multiplexed(&"h2".into(), 1);
        let streams = admit_all(&mut s);
        assert_eq!(streams, vec![(1, 1), (2, 1), (3, 1)]);
        assert_eq!(s.active(), 5);
        // The first transfer ends: exactly one more starts.
        s.release("h2", 1);
        assert_eq!(s.admit_next().unwrap().0.seq, 4);
        assert!(s.admit_next().is_none());
        // So does a stream.
        s.release("h2", 1);
        assert_eq!(s.admit_next().unwrap().0.seq, 5);
        assert!(s.admit_next().is_none());
    }

    #[test]
    fn streams_spread_over_the_connections_a_slot_may_open() {
        let mut s = Scheduler::new(64, 8, 100);
        assert_eq!(s.streams_per_connection(), 1);
        s.mark_multiplexed(&"a".into(), 0);
        for seq in 0..20 {
            s.push(job(seq, 0, "a"));
        }
        let running = admit_all(&mut s);
        assert_eq!(running.len(), 20);
        // 20 transfers over 8 connections: 3 streams each, not 20 on the first one.
        assert_eq!(s.streams_per_connection(), 3);
        for &(_, cost) in &running[..12] {
            s.release("a", cost);
        }
        assert_eq!(s.streams_per_connection(), 1);
    }

    #[test]
    fn the_total_counts_connections_not_streams() {
        // 1 connection in total, 8 per host, 3 streams per connection.
        let mut s = Scheduler::new(1, 8, 3);
        s.mark_multiplexed(&"a".into(), 0);
        for seq in 0..5 {
            s.push(job(seq, 0, "a"));
        }
        s.push(job(5, 0, "b"));
        let running: Vec<u64> = admit_all(&mut s).into_iter().map(|(seq, _)| seq).collect();
        assert_eq!(running, vec![0, 1, 2]);
        assert_eq!(s.queued(), 3);
    }

    #[test]
    fn delayed_tickets_come_back_when_due() {
        let mut s = Scheduler::new(10, 10, 4);
        let now = Instant::now();
        s.delay(job(1, 0, "a"), now + std::time::Duration::from_secs(5));
        s.delay(job(2, 0, "a"), now);
        assert_eq!(s.next_wake(), Some(now));
        let due: Vec<u64> = s.take_due(now).iter().map(|j| j.seq).collect();
        assert_eq!(due, vec![2]);
        s.cancel(1, "a");
        assert_eq!(s.next_wake(), None);
    }
}
