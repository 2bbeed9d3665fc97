//! What `--version` says: fetchmux's version and the libcurl it runs on (version, TLS
//! library, HTTP/2 library, the features that change what downloads can do, protocols), so
//! that a bug report carries them.

/// `-V`: one line.
pub fn short() -> String {
    let curl = curl::Version::get();
    format!("{} (libcurl {})", env!("CARGO_PKG_VERSION"), curl.version())
}

/// `--version`: the libcurl details too, one subject per line.
pub fn long() -> String {
    let curl = curl::Version::get();
    let mut libraries = vec![format!("libcurl {}", curl.version())];
    libraries.extend(curl.ssl_version().map(str::to_string));
    libraries.extend(curl.nghttp2_version().map(|v| format!("nghttp2/{v}")));
    libraries.extend(curl.libz_version().map(|v| format!("zlib/{v}")));
    let features = [
        ("http2", curl.feature_http2()),
        ("ssl", curl.feature_ssl()),
        ("https-proxy", curl.feature_https_proxy()),
        ("ipv6", curl.feature_ipv6()),
        ("largefile", curl.feature_largefile()),
        ("async-dns", curl.feature_async_dns()),
        ("unix-sockets", curl.feature_unix_domain_socket()),
        ("idn", curl.feature_idn()),
        ("libz", curl.feature_libz()),
    ]
    .into_iter()
    .filter_map(|(name, on)| on.then_some(name))
    .collect::<Vec<_>>()
    .join(" ");
    let protocols = curl.protocols().collect::<Vec<_>>().join(" ");
    format!(
        "{}\n{}\nfeatures: {features}\nprotocols: {protocols}",
        env!("CARGO_PKG_VERSION"),
        libraries.join(" ")
    )
}
