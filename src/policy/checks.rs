//! Checks due at a time, each naming a running attempt by its curl token and the engine's
//! serial number for it (so that a check never hits a later attempt on the same token):
//! the response timeout's (see `engine/watch.rs`). A heap: adding and taking the next due
//! cost O(log n); a check of an attempt that ended is dropped when it comes due.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

/// Due times of the running attempts' response checks: `(due, curl token, serial)`.
#[derive(Default)]
pub(crate) struct Checks {
    heap: BinaryHeap<Reverse<(Instant, usize, u64)>>,
}

impl Checks {
    pub fn add(&mut self, due: Instant, key: usize, serial: u64) {
        self.heap.push(Reverse((due, key, serial)));
    }

    pub fn next_due(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((due, ..))| *due)
    }

    pub fn pop_due(&mut self, now: Instant) -> Option<(usize, u64)> {
        match self.heap.peek() {
            Some(Reverse((due, ..))) if *due <= now => {
                let Reverse((_, key, serial)) = self.heap.pop()?;
                Some((key, serial))
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn checks_come_due_in_time_order() {
        let now = Instant::now();
        let mut checks = Checks::default();
        checks.add(now + Duration::from_secs(2), 7, 2);
        checks.add(now + Duration::from_secs(1), 3, 1);
        assert_eq!(checks.next_due(), Some(now + Duration::from_secs(1)));
        assert_eq!(checks.pop_due(now), None);
        assert_eq!(checks.pop_due(now + Duration::from_secs(1)), Some((3, 1)));
        assert_eq!(checks.pop_due(now + Duration::from_secs(5)), Some((7, 2)));
        assert_eq!(checks.next_due(), None);
    }
}
