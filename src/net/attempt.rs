//! One attempt at a URL: the libcurl handle it runs on, and the verdict on what came back.
//!
//! [`build`] turns a job and the helper's options into a configured `Easy2<Transfer>`: the
//! URL, the protocols allowed (and the narrower set a redirect may reach), no decoding of
//! Content-Encoding, ranges for resumes and `range` requests, conditional headers, timeouts.
//! [`judge`] turns curl's result and the response head into success or one `FetchError`.

use std::ffi::{c_char, CStr};
use std::path::Path;
use std::time::Duration;

use std::sync::mpsc::Sender;

use curl::easy::{Easy2, HttpVersion, List};

use crate::body::hasher::Hasher;
use crate::body::sink::{Identity, Sink};
use crate::body::CURL_RECEIVE_BUFFER;
use crate::config::Options;
use crate::error::FetchError;
use crate::net::transfer::{BodyMode, Job, Transfer};
use crate::protocol;

/// A configured handle for the job's current URL. A recycled handle (from an attempt that
/// ended) already carries the helper-wide options, so only the request's own are set:
/// creating and configuring a handle per file is measurable when files are small.
pub fn build(
    job: Box<Job>,
    options: &Options,
    http2: bool,
    recycled: Option<Easy2<Transfer>>,
    (hasher, token): (&Hasher, usize),
    buffer: Vec<u8>,
    alpn_learner: Option<Sender<String>>,
) -> Result<Easy2<Transfer>, (Box<Job>, FetchError)> {
    let (mut sink, mode, if_range) = receiving_end(&job, options);
    if mode == BodyMode::Whole {
        sink.hash_on_worker(hasher, token);
        sink.buffer_small_bodies(buffer);
    }
    let http = is_http(job.url());
    let mut transfer = Transfer::new(job, sink, mode, http);
    transfer.alpn_learner = alpn_learner;
    let mut easy = match recycled {
        Some(mut easy) => {
            *easy.get_mut() = transfer;
            easy
        }
        None => {
            let mut easy = Easy2::new(transfer);
            if let Err(err) = configure_handle(&mut easy, options, http2) {
                return Err((take_job(&mut easy), setup_error(err)));
            }
            easy
        }
    };
    match configure_request(&mut easy, if_range.as_deref()) {
        Ok(()) => Ok(easy),
        Err(err) => Err((take_job(&mut easy), setup_error(err))),
    }
}

/// Where this attempt's bytes go, how they relate to the file, and the `If-Range`
/// validator of a resumed partial.
fn receiving_end(job: &Job, options: &Options) -> (Sink, BodyMode, Option<String>) {
    let request = &job.request;
    let wanted: Vec<_> = request.hashes.iter().map(|(a, _)| *a).collect();
    let limit = job.limit(options.max_size);
    if let Some(range) = request.range {
        return (
            Sink::new(&request.dest, &wanted, limit),
            BodyMode::Range(range),
            None,
        );
    }
    if !request.resume {
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

fn take_job(easy: &mut Easy2<Transfer>) -> Box<Job> {
    easy.get_mut().job.take().expect("job present")
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
    easy.useragent(&options.user_agent)?;
    set_trust(easy, options.ca_file.as_deref())?;
    easy.connect_timeout(options.connect_timeout())?;
    if options.low_speed_limit > 0 && options.low_speed_time > 0 {
        easy.low_speed_limit(options.low_speed_limit)?;
        easy.low_speed_time(Duration::from_secs(options.low_speed_time))?;
    }
    easy.buffer_size(CURL_RECEIVE_BUFFER)?;
    if http2 {
        easy.http_version(HttpVersion::V2TLS)?;
    }
    if std::env::var_os("FETCHMUX_CURL_VERBOSE").is_some() {
        easy.verbose(true)?;
    }
    Ok(())
}

/// The options of this request: URL, range, headers (each set, or cleared, every time).
fn configure_request(
    easy: &mut Easy2<Transfer>,
    if_range: Option<&str>,
) -> Result<(), curl::Error> {
    let transfer = easy.get_ref();
    let job = transfer.job();
    let url = job.url().to_string();
    let mode = transfer.mode;
    // The debug callback learns the TLS handshake's protocol (see `Transfer::debug`).
    let learning = transfer.alpn_learner.is_some();
    let mut headers = List::new();
    for (name, value) in &job.request.headers {
        headers.append(&format!("{name}: {value}"))?;
    }
    if let Some(etag) = &job.request.if_none_match {
        headers.append(&format!("If-None-Match: {etag}"))?;
    }
    if let Some(date) = &job.request.if_modified_since {
        headers.append(&format!("If-Modified-Since: {date}"))?;
    }
    if let (BodyMode::Resume { .. }, Some(validator)) = (mode, if_range) {
        headers.append(&format!("If-Range: {validator}"))?;
    }
    easy.url(&url)?;
    easy.verbose(learning)?;
    match mode {
        BodyMode::Whole => clear_range(easy)?,
        BodyMode::Resume { offset } => easy.range(&format!("{offset}-"))?,
        BodyMode::Range(range) => easy.range(&format!("{}-{}", range.start, range.end))?,
    }
    easy.http_headers(headers)
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

/// Does this URL speak HTTP (so that statuses and ranges are ours to check)?
pub fn is_http(url: &str) -> bool {
    protocol::scheme_of(url).is_some_and(|s| s == "http" || s == "https")
}

/// The verdict on a finished attempt, before the bytes are verified.
pub enum Verdict {
    /// A body to verify and place.
    Body,
    /// 304 to a conditional request: `dest` stays as it is.
    NotModified,
    /// 416 to a resume whose partial already holds the whole file: verify the partial.
    PartialComplete,
    /// 416 to a resume whose partial does not fit the file: drop it and start over.
    PartialStale,
    Failed(FetchError),
}

/// Judge curl's `result` for an attempt that received `transfer`'s response.
pub fn judge(transfer: &mut Transfer, result: Result<(), curl::Error>, status: u32) -> Verdict {
    let request = &transfer.job().request;
    let conditional = request.if_none_match.is_some() || request.if_modified_since.is_some();
    let size = request.size;
    let error = match (transfer.failure.take(), result) {
        (Some(failure), _) => failure,
        (None, Err(_)) if transfer.complete_early => return Verdict::Body,
        (None, Err(err)) => FetchError::from_curl(&err, status),
        (None, Ok(())) if !transfer.http => return Verdict::Body,
        (None, Ok(())) if status == 304 && conditional => return Verdict::NotModified,
        (None, Ok(())) if status == 206 && transfer.mode == BodyMode::Whole => {
            FetchError::HttpStatus { status }
        }
        (None, Ok(())) if (200..300).contains(&status) => return Verdict::Body,
        (None, Ok(())) => FetchError::HttpStatus { status },
    };
    if let (BodyMode::Resume { offset }, Some(416)) = (transfer.mode, error.status()) {
        let total = transfer.head.content_range.and_then(|r| r.total);
        let expected = size.or(total);
        return if expected == Some(offset) {
            Verdict::PartialComplete
        } else {
            Verdict::PartialStale
        };
    }
    Verdict::Failed(error)
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

/// Which schemes a request may use, and (narrower) which a redirect may lead to. The curl
/// crate does not wrap these options, so they are set on the raw handle.
fn set_protocols(easy: &mut Easy2<Transfer>) -> Result<(), curl::Error> {
    const CURLOPT_PROTOCOLS_STR: curl_sys::CURLoption = curl_sys::CURLOPTTYPE_OBJECTPOINT + 318;
    const CURLOPT_REDIR_PROTOCOLS_STR: curl_sys::CURLoption =
        curl_sys::CURLOPTTYPE_OBJECTPOINT + 319;
    const REQUEST: &CStr = c"http,https,ftp,file";
    const REDIRECT: &CStr = c"http,https";
    for (option, value) in [
        (CURLOPT_PROTOCOLS_STR, REQUEST),
        (CURLOPT_REDIR_PROTOCOLS_STR, REDIRECT),
    ] {
        // SAFETY: a valid easy handle and a NUL-terminated string that libcurl copies.
        let code = unsafe { curl_sys::curl_easy_setopt(easy.raw(), option, value.as_ptr()) };
        if code != curl_sys::CURLE_OK {
            return Err(curl::Error::new(code));
        }
    }
    Ok(())
}
