//! The libcurl handle of one attempt, configured: the helper-wide options (protocols and the
//! narrower set a redirect may reach, no decoding of Content-Encoding) once per handle, and
//! the request's own (URL, range, conditional and custom headers, credentials, timeouts, and
//! its route: proxy and TLS, in `net::route`) on every attempt, each set or cleared so that
//! nothing of one request rides into the next: a request's headers and credentials least of
//! all, as handles serve one host after another. An attempt with headers or credentials
//! follows its redirects through the engine ([`follows_itself`], [`redirect`]), which sends
//! them to their own origin only.
//!
//! A new per-request curl option goes in [`configure_request`] (or `net::route` for proxy and
//! TLS); a new helper-wide one in [`configure_handle`].

use std::ffi::CStr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use curl::easy::{Easy2, HttpVersion, List, NetRc};

use crate::api::{Credentials, Download, LowSpeed, Route, Transport};
use crate::body::hasher::Hasher;
use crate::body::root::Root;
use crate::body::sink::{Identity, Sink};
use crate::body::CURL_RECEIVE_BUFFER;
use crate::config::Options;
use crate::error::FetchError;
use crate::net::pacer::Pacer;
use crate::net::route;
use crate::net::transfer::{AlpnLearner, BodyMode, Transfer};
use crate::net::url::{has_userinfo, is_http};

/// What an attempt is for: the request, the URL chosen for it, and how it may report.
pub(crate) struct Attempt<'a> {
    pub request: &'a Download,
    pub url: &'a str,
    /// The curl token of the attempt, for the hashing workers' unpause.
    pub token: usize,
    /// A buffer for a small body (reused from an earlier one).
    pub buffer: Vec<u8>,
    pub alpn_learner: Option<AlpnLearner>,
    /// Credentials for the URL's origin: the request's own, else its mirror set's.
    pub auth: Option<&'a Credentials>,
    /// The proxy and TLS settings of the request's mirror set, if it has its own.
    pub route: Option<&'a Route>,
    /// Where `dest` must lie (`--root`).
    pub root: &'a Arc<Root>,
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
    let (mut sink, mode, if_range) = receiving_end(request, options, attempt.root);
    if mode == BodyMode::Whole {
        sink.hash_on_worker(hasher, attempt.token);
        sink.buffer_small_bodies(attempt.buffer);
    }
    let mut transfer = Transfer::new(sink, mode, is_http(attempt.url));
    transfer.conditional = request.if_none_match.is_some() || request.if_modified_since.is_some();
    transfer.size = request.size;
    transfer.alpn_learner = attempt.alpn_learner;
    transfer.hops.manual = follows_itself(request, attempt.url, attempt.auth);
    if transfer.hops.manual {
        // Each hop sends the conditional headers again.
        transfer.hops.validator.clone_from(&if_range);
    }
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
    set_credentials(&mut easy, attempt.auth).map_err(setup_error)?;
    let transport = request.transport.as_deref();
    set_pace(&mut easy, transport, options, attempt.time_left).map_err(setup_error)?;
    route::apply(&mut easy, transport, attempt.route, options).map_err(setup_error)?;
    Ok(easy)
}

/// Whether the engine, not curl, follows the redirects of an attempt of `request` on `url`:
/// when it carries headers (unless they may go anywhere) or credentials, which must reach
/// no other origin. curl would drop only `Authorization` and `Cookie` on another host.
pub(crate) fn follows_itself(request: &Download, url: &str, auth: Option<&Credentials>) -> bool {
    (!request.headers.is_empty() && !request.headers_follow_redirects)
        || auth.is_some()
        || has_userinfo(url)
}

/// Point a handle whose attempt ended on a redirect at `target`, the next hop: the request's
/// headers and `auth` go along only to the attempt's first origin (`same_origin`); to
/// another, the request's headers only with `headers_follow_redirects`, and never
/// `Authorization` or `Cookie`. Range and conditional headers go to every hop, as with curl.
pub(crate) fn redirect(
    easy: &mut Easy2<Transfer>,
    request: &Download,
    auth: Option<&Credentials>,
    target: &str,
    same_origin: bool,
) -> Result<(), curl::Error> {
    let transfer = easy.get_mut();
    transfer.head = Default::default();
    let (mode, validator) = (transfer.mode, transfer.hops.validator.take());
    let custom = match (same_origin, request.headers_follow_redirects) {
        (true, _) => Custom::All,
        (false, true) => Custom::Portable,
        (false, false) => Custom::None,
    };
    let headers = header_list(request, mode, validator.as_deref(), custom);
    easy.get_mut().hops.validator = validator;
    easy.url(target)?;
    easy.http_headers(headers?)?;
    set_credentials(easy, auth.filter(|_| same_origin))
}

/// Which of a request's own headers a request carries.
#[derive(Clone, Copy, PartialEq)]
enum Custom {
    All,
    /// All but `Authorization` and `Cookie`, which never leave their origin.
    Portable,
    None,
}

/// The request's headers for one hop: its own (as `custom` says), the conditional ones and
/// a resume's `If-Range`.
fn header_list(
    request: &Download,
    mode: BodyMode,
    if_range: Option<&str>,
    custom: Custom,
) -> Result<List, curl::Error> {
    let mut headers = List::new();
    for (name, value) in &request.headers {
        let private =
            name.eq_ignore_ascii_case("authorization") || name.eq_ignore_ascii_case("cookie");
        if custom == Custom::All || (custom == Custom::Portable && !private) {
            headers.append(&format!("{name}: {value}"))?;
        }
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
    Ok(headers)
}

/// The user name and password for this hop, or none (a reused handle may hold another
/// host's: they are cleared, never left over).
fn set_credentials(
    easy: &mut Easy2<Transfer>,
    auth: Option<&Credentials>,
) -> Result<(), curl::Error> {
    match auth {
        Some(auth) => {
            easy.username(&auth.user)?;
            easy.password(&auth.password)
        }
        None => {
            clear_text(easy, curl_sys::CURLOPT_USERNAME)?;
            clear_text(easy, curl_sys::CURLOPT_PASSWORD)
        }
    }
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
fn receiving_end(
    request: &Download,
    options: &Options,
    root: &Arc<Root>,
) -> (Sink, BodyMode, Option<String>) {
    let wanted: Vec<_> = request.hashes.iter().map(|(a, _)| *a).collect();
    let limit = limit(request, options.max_size);
    if let Some(range) = request.range {
        return (
            Sink::new(root, &request.dest, &wanted, limit),
            BodyMode::Range(range),
            None,
        );
    }
    if !request.resume && !request.continue_dest {
        return (
            Sink::new(root, &request.dest, &wanted, limit),
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
    let adopt = request.continue_dest;
    let (sink, from) = Sink::resumable(root, &request.dest, &wanted, limit, identity, adopt);
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
    set_protocols(easy, options.file_urls_allowed())?;
    easy.max_redirections(options.max_redirects)?;
    if options.netrc || options.netrc_file.is_some() {
        // Credentials given in the request or its URL win; curl looks up each host itself
        // (after a redirect too), so an entry reaches only the host it names.
        easy.netrc(NetRc::Optional)?;
        if let Some(file) = &options.netrc_file {
            use std::os::unix::ffi::OsStrExt;
            let file = std::ffi::CString::new(file.as_os_str().as_bytes())?;
            set_raw_text(easy, curl_sys::CURLOPT_NETRC_FILE, &file)?;
        }
    }
    // Errors surface as CURLE_HTTP_RETURNED_ERROR before any body is written.
    easy.fail_on_error(true)?;
    // Package files are hashed exactly as served: never decode Content-Encoding.
    easy.http_content_decoding(false)?;
    easy.useragent(&options.user_agent())?;
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
    let manual = transfer.hops.manual;
    let headers = header_list(request, mode, if_range, Custom::All)?;
    easy.url(url)?;
    // Set every time: a reused handle may come from an attempt of the other kind.
    easy.follow_location(!manual)?;
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

/// No Range header (a recycled handle may have had one).
fn clear_range(easy: &mut Easy2<Transfer>) -> Result<(), curl::Error> {
    clear_text(easy, curl_sys::CURLOPT_RANGE)
}

/// A string option back to unset (an empty string would be a value).
fn clear_text(easy: &mut Easy2<Transfer>, option: curl_sys::CURLoption) -> Result<(), curl::Error> {
    // SAFETY: a valid handle; a NULL string clears the option.
    let code = unsafe {
        curl_sys::curl_easy_setopt(easy.raw(), option, std::ptr::null::<std::ffi::c_char>())
    };
    if code == curl_sys::CURLE_OK {
        Ok(())
    } else {
        Err(curl::Error::new(code))
    }
}

/// Which schemes a request may use (set once per handle; `file` only with `file_urls`,
/// which the engine also checks when a request is read). The curl crate does not wrap the
/// option, so it is set on the raw handle, as is [`set_redirect_schemes`]'s.
fn set_protocols(easy: &mut Easy2<Transfer>, file_urls: bool) -> Result<(), curl::Error> {
    const CURLOPT_PROTOCOLS_STR: curl_sys::CURLoption = curl_sys::CURLOPTTYPE_OBJECTPOINT + 318;
    let schemes = if file_urls {
        c"http,https,ftp,file"
    } else {
        c"http,https,ftp"
    };
    set_raw_text(easy, CURLOPT_PROTOCOLS_STR, schemes)
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
