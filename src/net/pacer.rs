//! The process-wide receive rate (`--max-speed`): a token bucket that the write callbacks of
//! every running transfer draw on, and the queue of transfers it paused, in the order they
//! were paused, for the engine to unpause when the bucket has tokens again.
//!
//! Why not curl's own `CURLOPT_MAX_RECV_SPEED_LARGE` split between the transfers: a fair
//! share changes whenever a transfer starts or ends, and libcurl does not promise that the
//! option takes effect on a running transfer (curl issues 6162 and 11857: it did not, in
//! some versions). A bucket in front of the sinks is exact over any window longer than a
//! few chunks, needs nothing from curl but pause and unpause, and shares evenly: every
//! transfer waiting on the bucket is unpaused when it is out of debt (oldest first), each
//! takes at most one chunk while it is not in debt, and the rest pause again and wait for
//! the next refill; whoever got a chunk has to read again and queue behind them.
//!
//! Everything runs on the loop's thread (the callbacks run inside curl calls the loop
//! makes), so plain cells suffice; the hot path (`admit`, `spend`) does not allocate.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::time::{Duration, Instant};

pub(crate) struct Pacer {
    /// Bytes a second.
    rate: f64,
    /// Most tokens saved up while nobody takes them: 250 ms worth. Enough to make up for a
    /// late unpause (an HTTP/2 stream needs a window update first: with 50 ms, three streams
    /// sharing 2 MiB/s ran 15 % slow), little enough that an idle moment lets no real burst
    /// through.
    burst: f64,
    /// Tokens (bytes) now; negative after a chunk larger than what was left (a debt the
    /// next refills pay back, so the average holds exactly).
    tokens: Cell<f64>,
    refilled_at: Cell<Instant>,
    /// Curl tokens of paused transfers, oldest first.
    waiting: RefCell<VecDeque<usize>>,
}

impl Pacer {
    /// A bucket for `rate` bytes a second, with room in its queue for `transfers` paused
    /// transfers before it grows.
    pub fn new(rate: u64, transfers: usize) -> Pacer {
        let rate = rate.max(1) as f64;
        Pacer {
            rate,
            burst: rate / 4.0,
            tokens: Cell::new(0.0),
            refilled_at: Cell::new(Instant::now()),
            waiting: RefCell::new(VecDeque::with_capacity(transfers)),
        }
    }

    fn refill(&self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.refilled_at.get());
        let tokens = self.tokens.get() + elapsed.as_secs_f64() * self.rate;
        self.tokens.set(tokens.min(self.burst));
        self.refilled_at.set(now);
    }

    /// May the transfer with curl token `key` take a chunk now? If not, it is queued and
    /// must pause; the engine unpauses it once [`Pacer::due`] has passed.
    pub fn admit(&self, key: usize) -> bool {
        self.refill(Instant::now());
        if self.tokens.get() > 0.0 {
            return true;
        }
        self.waiting.borrow_mut().push_back(key);
        false
    }

    /// A chunk of `bytes` was taken.
    pub fn spend(&self, bytes: usize) {
        self.tokens.set(self.tokens.get() - bytes as f64);
    }

    /// When the bucket is out of debt, if a transfer waits for it.
    pub fn due(&self) -> Option<Instant> {
        if self.waiting.borrow().is_empty() {
            return None;
        }
        let debt = (-self.tokens.get()).max(0.0);
        // A millisecond more: at the due time itself the bucket would still hold zero.
        let wait = Duration::from_secs_f64(debt / self.rate) + Duration::from_millis(1);
        Some(self.refilled_at.get() + wait)
    }

    /// Move the waiting transfers, oldest first, to the end of `into` (kept between calls
    /// so that no turn allocates). Unpausing them may queue some again at once.
    pub fn take_waiting(&self, into: &mut VecDeque<usize>) {
        into.extend(self.waiting.borrow_mut().drain(..));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chunk_is_taken_only_out_of_debt_and_waiters_queue_in_order() {
        let pacer = Pacer::new(1000, 4);
        std::thread::sleep(Duration::from_millis(20));
        assert!(pacer.admit(1), "tokens come with time");
        pacer.spend(500);
        assert!(!pacer.admit(2));
        assert!(!pacer.admit(3));
        // Nearly 500 bytes of debt at 1000 B/s: due some 480 ms after the last refill (less
        // the time the test took, more a millisecond).
        let due = pacer.due().unwrap();
        let wait = due - pacer.refilled_at.get();
        assert!(wait > Duration::from_millis(300) && wait <= Duration::from_millis(482));
        let mut taken = VecDeque::new();
        pacer.take_waiting(&mut taken);
        assert_eq!(taken, [2, 3]);
        assert_eq!(pacer.due(), None);
    }
}
