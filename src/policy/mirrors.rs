//! Mirror sets (their mirrors, and the proxy and TLS settings each set's requests use), and
//! the health of each mirror across every download of the run.
//!
//! A download names a set and a path; for each attempt the engine asks [`Mirrors::choose`]
//! for a base URL. The choice prefers, in order: a mirror this download has not tried yet,
//! a mirror without recent failures, the least loaded mirror (relative to its own limit),
//! and the faster mirror. A mirror that keeps failing on its own is put aside for a while
//! (`--put-aside-for`, a minute by default, doubling each time it is put aside again, at
//! most a quarter of an hour or the first time if longer; a
//! long-running helper must not lose a mirror for good to a short outage) and then comes
//! back on probation: one more failure puts it aside again. A mirror that fails only while
//! busy with other transfers of ours is given fewer parallel transfers instead. Health is
//! keyed by base URL, so it survives a set being declared again.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::api::{Credentials, MirrorSet, Route};
use crate::error::Disposition;

/// Consecutive failures (on an otherwise idle mirror) after which a mirror is put aside.
pub const PUT_ASIDE_AFTER: u32 = 5;
/// How long a mirror is put aside at most (unless the first time is already longer).
pub const LONGEST_ASIDE: Duration = Duration::from_secs(15 * 60);

/// What a failure changed about a mirror, for the engine to act on and tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Change {
    None,
    /// It failed while busy: fewer transfers at once now.
    LimitLowered,
    /// It keeps failing on its own: not chosen again for `for_`.
    PutAside {
        failures: u32,
        for_: Duration,
    },
}

/// What we know of one mirror.
#[derive(Debug)]
pub(crate) struct Health {
    /// Failures since the last success; ranks the mirror (0 = healthy).
    pub consecutive_failures: u32,
    /// Parallel transfers allowed now (lowered when it fails under load).
    pub limit: usize,
    /// The limit the set declared.
    pub max: usize,
    /// Put aside until then (see the module doc).
    pub aside_until: Option<Instant>,
    /// How often it has been put aside this run (the next time lasts longer).
    times_aside: u32,
    /// Successes since the limit last changed (it grows back slowly).
    successes_at_limit: usize,
    bytes: u64,
    busy: Duration,
}

impl Health {
    fn new(max: usize) -> Health {
        Health {
            consecutive_failures: 0,
            limit: max,
            max,
            aside_until: None,
            times_aside: 0,
            successes_at_limit: 0,
            bytes: 0,
            busy: Duration::ZERO,
        }
    }

    /// Bytes per second over every successful transfer so far (0 when unknown).
    pub fn throughput(&self) -> u64 {
        let secs = self.busy.as_secs_f64();
        if secs > 0.0 {
            (self.bytes as f64 / secs) as u64
        } else {
            0
        }
    }
}

/// Every declared set and every mirror's health.
pub(crate) struct Mirrors {
    /// How long a mirror is put aside the first time; each later time doubles it, up to
    /// [`LONGEST_ASIDE`].
    first_aside: Duration,
    sets: HashMap<String, Vec<String>>,
    /// The credentials of the sets that gave `auth` (kept once per set, not per download).
    auth: HashMap<String, Credentials>,
    /// Only sets with settings of their own.
    routes: HashMap<String, Route>,
    health: HashMap<String, Health>,
    /// The earliest time a mirror put aside comes back.
    next_return: Option<Instant>,
}

impl Mirrors {
    pub fn new(first_aside: Duration) -> Mirrors {
        Mirrors {
            first_aside,
            sets: HashMap::new(),
            health: HashMap::new(),
            auth: HashMap::new(),
            routes: HashMap::new(),
            next_return: None,
        }
    }

    /// Declare (or replace) a set. `default_max` applies when the set gives no
    /// `max_per_mirror`.
    pub fn declare(&mut self, decl: MirrorSet, default_max: usize) {
        let max = decl.max_per_mirror.unwrap_or(default_max).max(1);
        for base in &decl.urls {
            let health = self
                .health
                .entry(base.clone())
                .or_insert_with(|| Health::new(max));
            health.max = max;
            health.limit = health.limit.min(max).max(1);
        }
        match decl.auth {
            Some(auth) => self.auth.insert(decl.set.clone(), auth),
            None => self.auth.remove(&decl.set),
        };
        if decl.route == Route::default() {
            self.routes.remove(&decl.set);
        } else {
            if decl.route.tls.as_ref().is_some_and(|t| !t.verify_peer) {
                eprintln!(
                    "fetchmux: WARNING: mirror set `{}` is insecure: its servers' TLS \
                     certificates are not verified, so anyone on the path can serve anything \
                     (only the requests' digests still protect them)",
                    decl.set
                );
            }
            self.routes.insert(decl.set.clone(), decl.route);
        }
        self.sets.insert(decl.set, decl.urls);
    }

    /// The credentials the set was declared with, if any (as last declared).
    pub fn auth(&self, set: &str) -> Option<&Credentials> {
        self.auth.get(set)
    }

    /// The proxy and TLS settings of `set`, when it has its own.
    pub fn route(&self, set: &str) -> Option<&Route> {
        self.routes.get(set)
    }

    /// The base URLs of a set, in declared order.
    pub fn bases(&self, set: &str) -> Option<&[String]> {
        self.sets.get(set).map(Vec::as_slice)
    }

    #[cfg(test)]
    pub fn health(&self, base: &str) -> Option<&Health> {
        self.health.get(base)
    }

    /// The current limit on parallel transfers to `base`.
    pub fn limit(&self, base: &str) -> usize {
        self.health.get(base).map_or(1, |h| h.limit)
    }

    /// The best base URL of `set` for a download that has tried `tried` and ruled out
    /// `excluded`; `load` tells how many transfers (running or queued) a base has now.
    pub fn choose(
        &self,
        set: &str,
        tried: &[String],
        excluded: &[String],
        load: impl Fn(&str) -> usize,
    ) -> Option<String> {
        let bases = self.sets.get(set)?;
        bases
            .iter()
            .enumerate()
            .filter(|(_, base)| !excluded.contains(base))
            .filter_map(|(index, base)| {
                let health = self.health.get(base)?;
                if health.aside_until.is_some() {
                    return None;
                }
                let untried = !tried.contains(base);
                let tier = health.consecutive_failures.min(3);
                let busy = load(base) * 1000 / health.limit.max(1);
                let rank = (
                    !untried,
                    tier,
                    busy,
                    std::cmp::Reverse(health.throughput() >> 16),
                    index,
                );
                Some((rank, base))
            })
            .min_by(|a, b| a.0.cmp(&b.0))
            .map(|(_, base)| base.clone())
    }

    /// A base clearly better than `current` for this download now: untried where `current`
    /// was tried, or healthier. Load is left out on purpose: the choice made when the job
    /// was queued balanced the load; this only catches health that changed since.
    pub fn better_than(
        &self,
        set: &str,
        current: &str,
        tried: &[String],
        excluded: &[String],
    ) -> Option<String> {
        let standing = |base: &str| {
            let health = self.health.get(base)?;
            health.aside_until.is_none().then(|| {
                (
                    tried.iter().any(|t| t == base),
                    health.consecutive_failures.min(3),
                )
            })
        };
        let best = self
            .sets
            .get(set)?
            .iter()
            .filter(|base| !excluded.contains(base))
            .filter_map(|base| Some((standing(base)?, base)))
            .min_by(|a, b| a.0.cmp(&b.0))?;
        match standing(current) {
            Some(now) if now <= best.0 => None,
            _ => Some(best.1.clone()),
        }
    }

    /// A transfer from `base` succeeded: `bytes` in `elapsed`.
    pub fn record_success(&mut self, base: &str, bytes: u64, elapsed: Duration) {
        if let Some(health) = self.health.get_mut(base) {
            health.consecutive_failures = 0;
            health.bytes += bytes;
            health.busy += elapsed;
            // Additive increase: one more parallel transfer after a limit's worth of
            // successes twice over.
            health.successes_at_limit += 1;
            if health.limit < health.max && health.successes_at_limit >= 2 * health.limit {
                health.limit += 1;
                health.successes_at_limit = 0;
            }
        }
    }

    /// A transfer from `base` failed. `others_running` says whether the mirror was busy with
    /// other transfers of ours at the time.
    pub fn record_failure(
        &mut self,
        base: &str,
        disposition: Disposition,
        others_running: bool,
        now: Instant,
    ) -> Change {
        let Some(health) = self.health.get_mut(base) else {
            return Change::None;
        };
        match disposition {
            Disposition::Transient if others_running => {
                // Failing only under load: ask less of it rather than give up on it
                // (multiplicative decrease).
                let before = health.limit;
                health.limit = (health.limit / 2).max(1);
                health.successes_at_limit = 0;
                if health.limit != before {
                    return Change::LimitLowered;
                }
            }
            Disposition::Transient | Disposition::BadSource => {
                health.consecutive_failures += 1;
                if health.consecutive_failures >= PUT_ASIDE_AFTER && health.aside_until.is_none() {
                    let for_ = self
                        .first_aside
                        .saturating_mul(1 << health.times_aside.min(8))
                        .min(LONGEST_ASIDE.max(self.first_aside));
                    health.times_aside += 1;
                    let until = now + for_;
                    health.aside_until = Some(until);
                    self.next_return = Some(self.next_return.map_or(until, |t| t.min(until)));
                    return Change::PutAside {
                        failures: health.consecutive_failures,
                        for_,
                    };
                }
            }
            Disposition::Elsewhere | Disposition::Denied | Disposition::Final => {}
        }
        Change::None
    }

    /// When the next mirror put aside comes back.
    pub fn next_return(&self) -> Option<Instant> {
        self.next_return
    }

    /// Bring back the mirrors whose time aside is over by `now`, on probation (one more
    /// failure puts them aside again); returns their base URLs.
    pub fn bring_back(&mut self, now: Instant) -> Vec<String> {
        if self.next_return.is_none_or(|at| at > now) {
            return Vec::new();
        }
        let mut back = Vec::new();
        let mut next = None::<Instant>;
        for (base, health) in &mut self.health {
            match health.aside_until {
                Some(until) if until <= now => {
                    health.aside_until = None;
                    health.consecutive_failures = PUT_ASIDE_AFTER - 1;
                    back.push(base.clone());
                }
                Some(until) => next = Some(next.map_or(until, |t| t.min(until))),
                None => {}
            }
        }
        self.next_return = next;
        back
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIRST_ASIDE: Duration = Duration::from_secs(60);

    fn set(urls: &[&str], max: usize) -> Mirrors {
        let mut m = Mirrors::new(FIRST_ASIDE);
        m.declare(
            MirrorSet {
                set: "s".into(),
                urls: urls.iter().map(|u| u.to_string()).collect(),
                max_per_mirror: Some(max),
                auth: None,
                route: Default::default(),
            },
            4,
        );
        m
    }

    #[test]
    fn untried_then_healthy_then_least_loaded() {
        let m = set(&["http://a/", "http://b/"], 4);
        let none: Vec<String> = vec![];
        assert_eq!(m.choose("s", &none, &none, |_| 0).unwrap(), "http://a/");
        assert_eq!(
            m.choose("s", &none, &none, |b| usize::from(b == "http://a/") * 3)
                .unwrap(),
            "http://b/"
        );
        let tried = vec!["http://a/".to_string()];
        assert_eq!(m.choose("s", &tried, &none, |_| 0).unwrap(), "http://b/");
        let excluded = vec!["http://a/".to_string(), "http://b/".to_string()];
        assert!(m.choose("s", &none, &excluded, |_| 0).is_none());
    }

    #[test]
    fn a_failing_mirror_drops_behind_and_is_put_aside() {
        let mut m = set(&["http://a/", "http://b/"], 4);
        let none: Vec<String> = vec![];
        let now = Instant::now();
        m.record_failure("http://a/", Disposition::BadSource, false, now);
        assert_eq!(m.choose("s", &none, &none, |_| 0).unwrap(), "http://b/");
        for _ in 2..PUT_ASIDE_AFTER {
            let change = m.record_failure("http://a/", Disposition::Transient, false, now);
            assert_eq!(change, Change::None);
        }
        let change = m.record_failure("http://a/", Disposition::Transient, false, now);
        assert_eq!(
            change,
            Change::PutAside {
                failures: PUT_ASIDE_AFTER,
                for_: FIRST_ASIDE
            }
        );
        let b_only = vec!["http://b/".to_string()];
        assert!(m.choose("s", &none, &b_only, |_| 0).is_none());
    }

    #[test]
    fn a_mirror_put_aside_comes_back_on_probation_and_stays_away_longer_next_time() {
        let mut m = set(&["http://a/", "http://b/"], 4);
        let b_only = vec!["http://b/".to_string()];
        let none: Vec<String> = vec![];
        let start = Instant::now();
        for _ in 0..PUT_ASIDE_AFTER {
            m.record_failure("http://a/", Disposition::Transient, false, start);
        }
        assert_eq!(m.next_return(), Some(start + FIRST_ASIDE));
        assert!(m.bring_back(start + FIRST_ASIDE / 2).is_empty());
        assert!(m.choose("s", &none, &b_only, |_| 0).is_none());
        let back = m.bring_back(start + FIRST_ASIDE);
        assert_eq!(back, vec!["http://a/".to_string()]);
        assert_eq!(m.next_return(), None);
        assert_eq!(m.choose("s", &none, &b_only, |_| 0).unwrap(), "http://a/");
        // Probation: the next failure puts it aside again, for twice as long.
        let later = start + FIRST_ASIDE;
        let change = m.record_failure("http://a/", Disposition::Transient, false, later);
        assert_eq!(
            change,
            Change::PutAside {
                failures: PUT_ASIDE_AFTER,
                for_: FIRST_ASIDE * 2
            }
        );
        // A success ends probation.
        m.bring_back(later + FIRST_ASIDE * 2);
        m.record_success("http://a/", 1, Duration::from_millis(1));
        let change = m.record_failure("http://a/", Disposition::Transient, false, later);
        assert_eq!(change, Change::None);
    }

    #[test]
    fn better_than_sees_health_not_load() {
        let mut m = set(&["http://a/", "http://b/"], 4);
        let none: Vec<String> = vec![];
        assert_eq!(m.better_than("s", "http://b/", &none, &none), None);
        m.record_failure("http://a/", Disposition::BadSource, false, Instant::now());
        assert_eq!(m.better_than("s", "http://b/", &none, &none), None);
        assert_eq!(
            m.better_than("s", "http://a/", &none, &none).as_deref(),
            Some("http://b/")
        );
    }

    #[test]
    fn failing_under_load_lowers_the_limit_only() {
        let mut m = set(&["http://a/"], 4);
        assert_eq!(
            m.record_failure("http://a/", Disposition::Transient, true, Instant::now()),
            Change::LimitLowered
        );
        assert_eq!(m.limit("http://a/"), 2);
        assert_eq!(m.health("http://a/").unwrap().consecutive_failures, 0);
        for _ in 0..3 {
            m.record_success("http://a/", 10, Duration::from_millis(5));
        }
        assert_eq!(m.limit("http://a/"), 2, "grows back slowly");
        m.record_success("http://a/", 10, Duration::from_millis(5));
        assert_eq!(m.limit("http://a/"), 3);
    }
}
