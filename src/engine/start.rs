//! Building the engine: the poll, curl's multi handle with caps that match ours, the
//! workers, stdin (when the front reads it), stdout, and the `--max-speed` bucket.

use std::collections::{HashSet, VecDeque};
use std::rc::Rc;
use std::sync::mpsc::channel;
use std::sync::Arc;
use std::time::{Duration, Instant};

use curl::multi::Multi;
use mio::{Interest, Poll, Waker};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;

use crate::body::hasher::Hasher;
use crate::body::known_files::KnownFiles;
use crate::body::placer::Placer;
use crate::body::root::Root;
use crate::config::Options;
use crate::engine::downloads::Downloads;
use crate::engine::report::{Progress, Report};
use crate::engine::{Engine, SIGNALS, STDIN, STDOUT, WAKER};
use crate::front::Front;
use crate::io::stdin::{Input, LineBatch};
use crate::net::curl_io::CurlIo;
use crate::net::pacer::Pacer;
use crate::policy::checks::Checks;
use crate::policy::mirrors::Mirrors;
use crate::policy::scheduler::Scheduler;

impl Engine {
    /// An engine for `front`, ready to [`Engine::run`].
    pub fn new(
        mut options: Options,
        front: Box<dyn Front>,
    ) -> Result<Engine, Box<dyn std::error::Error>> {
        // First, before the engine opens descriptors of its own: they are in the reserve.
        let max_transfers = crate::fd_budget::fit(&mut options);
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let mut signals = Signals::new([SIGINT, SIGTERM])?;
        poll.registry()
            .register(&mut signals, SIGNALS, Interest::READABLE)?;

        let mut multi = Multi::new();
        let curl_io = CurlIo::install(&mut multi)?;
        multi.pipelining(false, true)?;
        let max_parallel = options.max_parallel as usize;
        let max_per_host = options.max_per_host as usize;
        let max_streams = options.max_streams as usize;
        // curl's own caps match ours, so that queued work never opens extra connections and
        // its connection cache does not hold more than we could use.
        multi.set_max_total_connections(max_parallel)?;
        multi.set_max_host_connections(max_per_host)?;
        multi.set_max_connects(max_parallel)?;
        multi.set_max_concurrent_streams(max_streams)?;

        let version = curl::Version::get();
        let file_urls = options.file_urls_allowed();
        let root = match &options.root {
            Some(dir) => Arc::new(
                Root::open(dir)
                    .map_err(|e| format!("cannot open --root {}: {e}", dir.display()))?,
            ),
            None => Root::unconfined(),
        };
        let (hasher, hashed) = Hasher::new(Arc::clone(&waker));
        let (placer, placer_answers) = Placer::new(Arc::clone(&waker), Arc::clone(&root));
        let input = front
            .reads_stdin()
            .then(|| Input::open(poll.registry(), STDIN, Arc::clone(&waker)));
        let report = Report::new(front, waker, poll.registry(), STDOUT);
        // --http1.1: no HTTP/2 anywhere, and `hello` does not offer it.
        let has_http2 = version.feature_http2() && !options.http1_1;
        let pacer = (options.max_speed > 0).then(|| {
            let transfers = (options.max_parallel * options.max_streams.min(8)) as usize;
            Rc::new(Pacer::new(options.max_speed, transfers))
        });
        let mut scheduler = Scheduler::new(max_parallel, max_per_host, max_streams);
        scheduler.cap_transfers(max_transfers);
        Ok(Engine {
            scheduler,
            mirrors: Mirrors::new(Duration::from_secs(options.put_aside_for)),
            shared: Default::default(),
            options,
            curl_io,
            multi,
            downloads: Downloads::default(),
            spare_handles: Vec::new(),
            input_pending: input.is_some(),
            input,
            lines: LineBatch::default(),
            report,
            progress: Progress::default(),
            signals,
            next_seq: 0,
            network_bytes: 0,
            started: Instant::now(),
            stop: None,
            finished: Vec::new(),
            libcurl_version: version.version().to_string(),
            has_http2,
            retry_wake: None,
            front_wake: None,
            hasher,
            hashed,
            hashing_held: 0,
            hashing: 0,
            placer,
            placer_answers,
            placing: 0,
            spare_buffers: Vec::new(),
            http1_slots: HashSet::new(),
            alpn_learned: channel(),
            known_files: {
                // Temporary files older than this are candidates for cleaning.
                crate::body::fs::note_start();
                KnownFiles::new(Arc::clone(&root))
            },
            file_urls,
            root,
            streams_per_connection: max_streams,
            response_checks: Checks::default(),
            next_serial: 0,
            pacer,
            own_pacers: Vec::new(),
            unpausing: VecDeque::new(),
            fds_ran_out: false,
            poll,
        })
    }
}
