//! The libcurl handle of one attempt, configured: the helper-wide options (protocols and the
//! narrower set a redirect may reach, no decoding of Content-Encoding, timeouts, trust) once
//! per handle, and the request's own (URL, range, conditional and custom headers) on every
//! attempt, each set or cleared so that nothing of one request rides into the next.
//!
//! A new per-request curl option goes in [`configure_request`]; a new helper-wide one in
//! [`configure_handle`].

use std::ffi::{c_char, CStr};
use std::path::Path;
use std::rc::Rc;
use std::time::Duration;

use curl::easy::{Easy2, HttpVersion, List};

use crate::api::{Download, LowSpeed, Tls, Transport};
use crate::body::hasher::Hasher;
use crate::body::sink::{Identity, Sink};
use crate::body::CURL_RECEIVE_BUFFER;
use crate::config::Options;
use crate::error::FetchError;
use crate::net::pacer::Pacer;
use crate::net::transfer::{AlpnLearner, BodyMode, Transfer};
use crate::net::url::is_http;

/// What an attempt is for: the request, the URL chosen for it, and how it may report.
pub(crate) struct Attempt<'a> {
    pub request: &'a Download,
    pub url: &'a str,
    /// The curl token of the attempt, for the hashing workers' unpause.
    pub token: usize,
    /// A buffer for a small body (reused from an earlier one).
    pub buffer: Vec<u8>,
    pub alpn_learner: Option<AlpnLearner>,
    /// The engine's number for the attempt (see `Transfer::serial`).
    pub serial: u64,
    /// What is left of the download's time limit, if it has one.
    pub time_left: Option<Duration>,
    /// The rate buckets the transfer draws on (see `Transfer::pacers`).
    pub pacers: [Option<Rc<Pacer>>; 2],
}

/// A configured handle for `attempt`. A recycled handle (from an attempt that ended)
/// already carries the helper-wide options, so only the request's own are set: creating and
/// configuring a handle per file is measurable when files are small.
pub(crate) fn build(
    attempt: Attempt<'_>,
    options: &Options,
    http2: bool,
    hasher: &Hasher,
    recycled: Option<Easy2<Transfer>>,
) -> Result<Easy2<Transfer>, FetchError> {
    let request = attempt.request;
    let (mut sink, mode, if_range) = receiving_end(request, options);
    if mode == BodyMode::Whole {
        sink.hash_on_worker(hasher, attempt.token);
        sink.buffer_small_bodies(attempt.buffer);
    }
    let mut transfer = Transfer::new(sink, mode, is_http(attempt.url));
    transfer.conditional = request.if_none_match.is_some() || request.if_modified_since.is_some();
    transfer.size = request.size;
    transfer.alpn_learner = attempt.alpn_learner;
    transfer.serial = attempt.serial;
    transfer.pacers = attempt.pacers;
    transfer.key = attempt.token;
    let mut easy = match recycled {
        Some(mut easy) => {
            *easy.get_mut() = transfer;
            easy
        }
        None => {
            let mut easy = Easy2::new(transfer);
            configure_handle(&mut easy, options, http2).map_err(setup_error)?;
            easy
        }
    };
    configure_request(&mut easy, request, attempt.url, if_range.as_deref()).map_err(setup_error)?;
    let transport = request.transport.as_deref();
    set_pace(&mut easy, transport, options, attempt.time_left).map_err(setup_error)?;
    if let Some(transport) = &request.transport {
        // Only on a handle with the helper-wide settings: see `reusable_after`.
        configure_route(&mut easy, transport).map_err(setup_error)?;
    }
    Ok(easy)
}

/// Whether the handle of an attempt of `request` may serve another request: not after a
/// request's own proxy or TLS settings, which are not set back (restoring every default
/// would be more code than a new handle costs; connections live in the multi handle's
/// pool either way). Its timeouts and speed limit are set on every request.
pub(crate) fn reusable_after(request: &Download) -> bool {
    request
        .transport
        .as_ref()
        .is_none_or(|t| t.proxy.is_none() && t.tls == Tls::default())
}

/// The cap for this body: the exact `size` when known (even above `--max-size`, which is
/// for bodies of unknown size; validation keeps it within the request's own `max_size`),
/// else `max_size`, else the helper-wide default (0 meaning none).
fn limit(request: &Download, default_max: u64) -> Option<u64> {
    request
        .size
        .or(request.max_size)
        .or((default_max > 0).then_some(default_max))
}

/// Where this attempt's bytes go, how they relate to the file, and the `If-Range`
/// validator of a resumed partial.
fn receiving_end(request: &Download, options: &Options) -> (Sink, BodyMode, Option<String>) {
    let wanted: Vec<_> = request.hashes.iter().map(|(a, _)| *a).collect();
    let limit = limit(request, options.max_size);
    if let Some(range) = request.range {
        return (
            Sink::new(&request.dest, &wanted, limit),
            BodyMode::Range(range),
            None,
        );
    }
    if !request.resume && !request.continue_dest {
        return (
            Sink::new(&request.dest, &wanted, limit),
            BodyMode::Whole,
            None,
        );
    }
    let identity = Identity {
        size: request.size,
        sha256: request
            .hashes
            .iter()
            .find(|(a, _)| a.name() == "sha256")
            .map(|(_, hex)| hex.clone()),
    };
    if request.continue_dest {
        if let Err(e) = crate::body::partial::adopt(&request.dest, &identity) {
            // The bytes stay where they are and a whole body replaces them.
            eprintln!(
                "fetchmux: cannot continue {}: {e}; fetching it whole",
                request.dest.display()
            );
        }
    }
    let (sink, from) = Sink::resumable(&request.dest, &wanted, limit, identity);
    match from {
        None => (sink, BodyMode::Whole, None),
        Some(from) => {
            // If-Range needs a strong validator; a weak ETag falls back to the date.
            let validator = from
                .etag
                .filter(|e| !e.starts_with("W/"))
                .or(from.last_modified);
            (
                sink,
                BodyMode::Resume {
                    offset: from.offset,
                },
                validator,
            )
        }
    }
}

fn setup_error(err: curl::Error) -> FetchError {
    FetchError::InvalidRequest(format!("cannot set up the transfer: {err}"))
}

/// The options every request shares (set once per handle).
fn configure_handle(
    easy: &mut Easy2<Transfer>,
    options: &Options,
    http2: bool,
) -> Result<(), curl::Error> {
    set_protocols(easy)?;
    easy.follow_location(true)?;
    easy.max_redirections(options.max_redirects)?;
    // Errors surface as CURLE_HTTP_RETURNED_ERROR before any body is written.
    easy.fail_on_error(true)?;
    // Package files are hashed exactly as served: never decode Content-Encoding.
    easy.http_content_decoding(false)?;
    easy.useragent(&options.user_agent())?;
    set_trust(easy, options.ca_file.as_deref())?;
    easy.buffer_size(CURL_RECEIVE_BUFFER)?;
    if http2 && !options.http1_1 {
        easy.http_version(HttpVersion::V2TLS)?;
    } else {
        // libcurl's default is HTTP/2 over TLS where it can: --http1.1 says no.
        easy.http_version(HttpVersion::V11)?;
    }
    if std::env::var_os("FETCHMUX_CURL_VERBOSE").is_some() {
        easy.verbose(true)?;
    }
    Ok(())
}

/// The options of this request: URL, range, headers (each set, or cleared, every time).
fn configure_request(
    easy: &mut Easy2<Transfer>,
    request: &Download,
    url: &str,
    if_range: Option<&str>,
) -> Result<(), curl::Error> {
    let transfer = easy.get_ref();
    let mode = transfer.mode;
    // The debug callback learns the TLS handshake's protocol (see `Transfer::debug`).
    let learning = transfer.alpn_learner.is_some();
    let mut headers = List::new();
    for (name, value) in &request.headers {
        headers.append(&format!("{name}: {value}"))?;
    }
    if let Some(etag) = &request.if_none_match {
        headers.append(&format!("If-None-Match: {etag}"))?;
    }
    if let Some(date) = &request.if_modified_since {
        headers.append(&format!("If-Modified-Since: {date}"))?;
    }
    if let (BodyMode::Resume { .. }, Some(validator)) = (mode, if_range) {
        headers.append(&format!("If-Range: {validator}"))?;
    }
    easy.url(url)?;
    set_redirect_schemes(easy, url)?;
    easy.verbose(learning)?;
    match mode {
        BodyMode::Whole => clear_range(easy)?,
        BodyMode::Resume { offset } => easy.range(&format!("{offset}-"))?,
        BodyMode::Range(range) => easy.range(&format!("{}-{}", range.start, range.end))?,
    }
    easy.http_headers(headers)
}

/// Timeouts: the request's own where it has them, else the helper-wide ones (set on every
/// request, so a reused handle carries nothing over). The
/// download's time limit becomes curl's timeout for the attempt (`time_left`: what remains
/// of it), so curl's own timer ends an attempt that runs out of time.
fn set_pace(
    easy: &mut Easy2<Transfer>,
    transport: Option<&Transport>,
    options: &Options,
    time_left: Option<Duration>,
) -> Result<(), curl::Error> {
    // Zero turns curl's timeout off; a limit that has run out still gets a millisecond.
    let max_time = time_left.map_or(Duration::ZERO, |t| t.max(Duration::from_millis(1)));
    easy.timeout(max_time)?;
    let connect = transport.and_then(|t| t.connect_timeout);
    easy.connect_timeout(connect.unwrap_or(options.connect_timeout()))?;
    let helper_wide =
        (options.low_speed_limit > 0 && options.low_speed_time > 0).then(|| LowSpeed {
            bytes_per_second: options.low_speed_limit,
            time: Duration::from_secs(options.low_speed_time),
        });
    // A limit of 0 turns curl's guard off.
    let low = transport
        .and_then(|t| t.low_speed)
        .or(helper_wide)
        .unwrap_or(LowSpeed {
            bytes_per_second: 0,
            time: Duration::ZERO,
        });
    easy.low_speed_limit(low.bytes_per_second)?;
    easy.low_speed_time(low.time)?;
    // A request's max_speed is the engine's own bucket (net/pacer.rs): libcurl's limiter
    // ran up to 40 % slow here (6 MiB at 2 MiB/s took from 3.25 to 4.2 s).
    easy.max_recv_speed(0)
}

/// A request's own proxy and TLS settings, over the helper-wide ones of a fresh or
/// recycled handle (not recycled afterwards: see [`reusable_after`]).
fn configure_route(easy: &mut Easy2<Transfer>, transport: &Transport) -> Result<(), curl::Error> {
    if let Some(proxy) = &transport.proxy {
        easy.proxy(proxy)?;
    }
    let tls = &transport.tls;
    if *tls == Tls::default() {
        return Ok(());
    }
    if let Some(file) = &tls.ca_file {
        easy.cainfo(file)?;
    }
    if let Some(dir) = &tls.ca_path {
        easy.capath(dir)?;
    }
    if let Some(cert) = &tls.cert {
        easy.ssl_cert(cert)?;
    }
    if let Some(kind) = &tls.cert_type {
        easy.ssl_cert_type(kind)?;
    }
    if let Some(key) = &tls.key {
        easy.ssl_key(key)?;
    }
    if let Some(kind) = &tls.key_type {
        easy.ssl_key_type(kind)?;
    }
    if let Some(password) = &tls.key_password {
        easy.key_password(password)?;
    }
    easy.ssl_verify_peer(tls.verify_peer)?;
    easy.ssl_verify_host(tls.verify_host)
}

/// No Range header (a recycled handle may have had one).
fn clear_range(easy: &mut Easy2<Transfer>) -> Result<(), curl::Error> {
    // SAFETY: a valid handle; a NULL string clears the option.
    let code = unsafe {
        curl_sys::curl_easy_setopt(
            easy.raw(),
            curl_sys::CURLOPT_RANGE,
            std::ptr::null::<std::ffi::c_char>(),
        )
    };
    if code == curl_sys::CURLE_OK {
        Ok(())
    } else {
        Err(curl::Error::new(code))
    }
}

/// Which certificate authorities https trusts: `--ca-file` alone, or the system's bundle
/// file. The curl crate gives every new handle the bundle file *and* the certificate
/// directory it finds (`openssl-probe`); with a directory set, libcurl neither caches the
/// trust store nor shares it between connections, so every TLS connection parsed the whole
/// bundle again (scenario L2 of `make bench` with the system's 144 certificates: 2.2 s of
/// CPU instead of 0.4), and `--ca-file` was not "instead of the system store" but in
/// addition to its directory. The directory stays where the system has no bundle file, or
/// where `SSL_CERT_DIR` names it (an explicit choice, honoured at the old price).
fn set_trust(easy: &mut Easy2<Transfer>, ca_file: Option<&Path>) -> Result<(), curl::Error> {
    if let Some(ca_file) = ca_file {
        easy.cainfo(ca_file)?;
    } else if system_bundle().is_none() || std::env::var_os("SSL_CERT_DIR").is_some() {
        return Ok(());
    }
    // SAFETY: a valid easy handle; a null string restores "no directory".
    let code = unsafe {
        curl_sys::curl_easy_setopt(
            easy.raw(),
            curl_sys::CURLOPT_CAPATH,
            std::ptr::null::<c_char>(),
        )
    };
    if code != curl_sys::CURLE_OK {
        return Err(curl::Error::new(code));
    }
    Ok(())
}

/// The system's CA bundle file, as the curl crate finds it for every handle.
fn system_bundle() -> Option<&'static Path> {
    static PROBED: std::sync::OnceLock<openssl_probe::ProbeResult> = std::sync::OnceLock::new();
    PROBED
        .get_or_init(openssl_probe::probe)
        .cert_file
        .as_deref()
}

/// Which schemes a request may use (set once per handle). The curl crate does not wrap the
/// option, so it is set on the raw handle, as is [`set_redirect_schemes`]'s.
fn set_protocols(easy: &mut Easy2<Transfer>) -> Result<(), curl::Error> {
    const CURLOPT_PROTOCOLS_STR: curl_sys::CURLoption = curl_sys::CURLOPTTYPE_OBJECTPOINT + 318;
    set_raw_text(easy, CURLOPT_PROTOCOLS_STR, c"http,https,ftp,file")
}

/// Where a redirect of an attempt on `url` may lead: http and https, and from https only to
/// https. A downgrade would send the request and take the answer in the clear, which apt
/// refuses too ("Redirection from https to 'http' is forbidden").
fn set_redirect_schemes(easy: &mut Easy2<Transfer>, url: &str) -> Result<(), curl::Error> {
    const CURLOPT_REDIR_PROTOCOLS_STR: curl_sys::CURLoption =
        curl_sys::CURLOPTTYPE_OBJECTPOINT + 319;
    let schemes = if url
        .get(..8)
        .is_some_and(|p| p.eq_ignore_ascii_case("https://"))
    {
        c"https"
    } else {
        c"http,https"
    };
    set_raw_text(easy, CURLOPT_REDIR_PROTOCOLS_STR, schemes)
}

fn set_raw_text(
    easy: &mut Easy2<Transfer>,
    option: curl_sys::CURLoption,
    value: &CStr,
) -> Result<(), curl::Error> {
    // SAFETY: a valid easy handle and a NUL-terminated string that libcurl copies.
    let code = unsafe { curl_sys::curl_easy_setopt(easy.raw(), option, value.as_ptr()) };
    if code != curl_sys::CURLE_OK {
        return Err(curl::Error::new(code));
    }
    Ok(())
}
