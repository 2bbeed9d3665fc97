//! The urlgrabber front: `_loads` on the spec's captured lines, the mapping of options
//! onto a download, and the answer lines with their errno mapping.

use super::*;

/// The three request lines the spec captured from the real parent (Part A.2).
const BIG: &str = "url='http://127.0.0.1:18081/big.bin' filename='out_real1/big.bin' timeout=20.5 close_connection=0 keepalive=1 throttle=1000000 bandwidth=0 user_agent='urlgrabber/<see%20setup.cfg>' ssl_cert_type='PEM' ssl_key_type='PEM' ssl_verify_peer=True ssl_verify_host=True size=3145728 max_header_size=2097152 ftp_disable_epsv=False no_cache=False progress_obj=True";
const RANGED: &str = "url='http://127.0.0.1:18081/c.txt' filename='out_real1/c.txt' timeout=20.5 close_connection=0 keepalive=1 throttle=1.0 bandwidth=0 range=(10,50) user_agent='drive/1.0' http_headers=(('X-Test','yes')) ssl_cert_type='PEM' ssl_key_type='PEM' ssl_verify_peer=True ssl_verify_host=True size=0 max_header_size=2097152 ftp_disable_epsv=False no_cache=False progress_obj=True";
const ESCAPED: &str = "url='http://127.0.0.1:18081/sp%2520ace%2c%5bx%5d.txt' filename='out_real2/sp%20ace%2c%5bx%5d.txt' timeout=20.5 size=0";

fn s(text: &str) -> Value {
    Value::Str(text.to_string())
}

fn mapped(line: &str) -> api::Download {
    download(7, &parse_line(line).unwrap()).unwrap()
}

fn failure_of(line: &str) -> Failure {
    match parse_line(line).and_then(|options| download(1, &options)) {
        Ok(d) => panic!("accepted {line}: {d:?}"),
        Err(failure) => failure,
    }
}

#[test]
fn loads_scalars_as_python_does() {
    assert_eq!(loads("None"), Ok(Value::None));
    assert_eq!(loads("True"), Ok(Value::Bool(true)));
    assert_eq!(loads("False"), Ok(Value::Bool(false)));
    assert_eq!(loads("3145728"), Ok(Value::Int(3145728)));
    assert_eq!(loads("-2"), Ok(Value::Int(-2)));
    assert_eq!(loads("1_000"), Ok(Value::Int(1000)));
    assert_eq!(loads("20.5"), Ok(Value::Float(20.5)));
    assert_eq!(loads("1.0"), Ok(Value::Float(1.0)));
    assert_eq!(loads("1e3"), Ok(Value::Float(1000.0)));
    assert_eq!(loads("''"), Ok(s("")));
    assert_eq!(loads("'PEM'"), Ok(s("PEM")));
    // A quoted number is a string; unquoted text is a bare string.
    assert_eq!(loads("'1'"), Ok(s("1")));
    assert_eq!(loads("simple"), Ok(s("simple")));
    // `'` alone is not quoted text.
    assert_eq!(loads("'"), Ok(s("'")));
}

#[test]
fn loads_unescapes_what_quoter_escapes() {
    assert_eq!(
        loads("'urlgrabber/<see%20setup.cfg>'"),
        Ok(s("urlgrabber/<see setup.cfg>"))
    );
    // The spec's example: the URL `…/sp%20ace,[x].txt` and the file `sp ace,[x].txt`.
    assert_eq!(
        loads("'http://127.0.0.1:18081/sp%2520ace%2c%5bx%5d.txt'"),
        Ok(s("http://127.0.0.1:18081/sp%20ace,[x].txt"))
    );
    assert_eq!(
        loads("'out_real2/sp%20ace%2c%5bx%5d.txt'"),
        Ok(s("out_real2/sp ace,[x].txt"))
    );
    assert_eq!(loads("'a%0ab%25%28%29'"), Ok(s("a\nb%()")));
    // Escapes are code points, as `chr()` makes them.
    assert_eq!(loads("'%e9'"), Ok(s("\u{e9}")));
    assert_eq!(loads("'é'"), Ok(s("é")));
    assert!(loads("'ab%'").is_err());
    assert!(loads("'ab%zz'").is_err());
}

#[test]
fn loads_containers_and_unwraps_one_top_level_item() {
    assert_eq!(
        loads("(10,50)"),
        Ok(Value::Tuple(vec![Value::Int(10), Value::Int(50)]))
    );
    assert_eq!(
        loads("(10,None)"),
        Ok(Value::Tuple(vec![Value::Int(10), Value::None]))
    );
    assert_eq!(
        loads("(('X-Test','yes'))"),
        Ok(Value::Tuple(vec![Value::Tuple(vec![
            s("X-Test"),
            s("yes")
        ])]))
    );
    assert_eq!(
        loads("[1,[2,(3,'a%2cb')]]"),
        Ok(Value::List(vec![
            Value::Int(1),
            Value::List(vec![
                Value::Int(2),
                Value::Tuple(vec![Value::Int(3), s("a,b")])
            ])
        ]))
    );
    // A top level of several items is a list; of one, the item; of none, an empty list.
    assert_eq!(
        loads("1,2"),
        Ok(Value::List(vec![Value::Int(1), Value::Int(2)]))
    );
    assert_eq!(loads("[5]"), Ok(Value::List(vec![Value::Int(5)])));
    assert_eq!(loads(""), Ok(Value::List(vec![])));
    assert_eq!(loads("()"), Ok(Value::Tuple(vec![])));
    assert_eq!(loads("(1,)"), Ok(Value::Tuple(vec![Value::Int(1)])));
    // `_loads` drops text right before an opening bracket.
    assert_eq!(loads("ab(1)"), Ok(Value::Tuple(vec![Value::Int(1)])));
    assert!(loads("(1,2").is_err());
    assert!(loads("1)").is_err());
}

#[test]
fn the_captured_lines_parse() {
    let options = parse_line(BIG).unwrap();
    assert_eq!(options["timeout"], Value::Float(20.5));
    assert_eq!(options["throttle"], Value::Int(1_000_000));
    assert_eq!(options["progress_obj"], Value::Bool(true));
    assert_eq!(options.len(), 17);
    let options = parse_line(RANGED).unwrap();
    assert_eq!(options["throttle"], Value::Float(1.0));
    // A key given twice keeps the last value, as `setattr` does.
    let options = parse_line("size=1 size=2  url='x'").unwrap();
    assert_eq!(options["size"], Value::Int(2));
    assert!(parse_line("url").is_err());
}

#[test]
fn maps_the_big_download() {
    let d = mapped(BIG);
    assert_eq!(d.id, "7");
    assert_eq!(
        d.source,
        Source::Urls(vec!["http://127.0.0.1:18081/big.bin".into()])
    );
    assert_eq!(d.dest, PathBuf::from("out_real1/big.bin"));
    assert_eq!(d.max_size, Some(3_460_300)); // int(3145728 * 1.10)
    assert_eq!(d.size, None);
    assert!(d.progress && d.server_mtime && !d.continue_dest);
    assert_eq!(d.range, None);
    assert_eq!(
        d.headers,
        vec![(
            "User-Agent".to_string(),
            "urlgrabber/<see setup.cfg>".to_string()
        )]
    );
    let t = d.transport.unwrap();
    assert_eq!(t.connect_timeout, Some(Duration::from_secs(20)));
    assert_eq!(
        t.low_speed,
        Some(LowSpeed {
            bytes_per_second: 1000,
            time: Duration::from_secs(20)
        })
    );
    assert_eq!(t.max_speed, Some(1_000_000));
    // The same time bounds the wait for the response.
    assert_eq!(t.response_timeout, Some(Duration::from_secs(20)));
    assert_eq!(t.proxy, None);
    // The parent always sends ssl_cert_type='PEM'; without a certificate it means nothing,
    // and the TLS settings stay the helper's (so the curl handle can be reused).
    assert_eq!(t.tls, crate::api::Tls::default());
}

#[test]
fn maps_a_range_and_headers() {
    let d = mapped(RANGED);
    // (10,50) is end-exclusive: bytes 10 to 49.
    assert_eq!(d.range, Some(ByteRange { start: 10, end: 49 }));
    assert_eq!(d.max_size, None);
    assert_eq!(
        d.headers,
        vec![
            ("User-Agent".to_string(), "drive/1.0".to_string()),
            ("X-Test".to_string(), "yes".to_string())
        ]
    );
    // A float throttle is a fraction of `bandwidth`; 1.0 of 0 is no limit.
    assert_eq!(d.transport.unwrap().max_speed, Some(0));
    // What the parent sends for `range=(10, None)`.
    let d = mapped("url='http://h/x' filename='x' range=(10,'')");
    assert_eq!(
        d.range,
        Some(ByteRange {
            start: 10,
            end: OPEN_END
        })
    );
    assert_eq!(
        mapped("url='http://h/x' filename='x' range=(None,5)").range,
        Some(ByteRange { start: 0, end: 4 })
    );
    assert_eq!(
        mapped("url='http://h/x' filename='x' range=(0,None)").range,
        None
    );
    assert_eq!(
        failure_of("url='http://h/x' filename='x' range=(5,5)").errno,
        9
    );
    assert_eq!(
        failure_of("url='http://h/x' filename='x' range='a'").errno,
        9
    );
}

#[test]
fn maps_the_escaped_names() {
    let d = mapped(ESCAPED);
    assert_eq!(
        d.source,
        Source::Urls(vec!["http://127.0.0.1:18081/sp%20ace,[x].txt".into()])
    );
    assert_eq!(d.dest, PathBuf::from("out_real2/sp ace,[x].txt"));
    assert!(!d.progress);
}

#[test]
fn maps_reget_speed_proxy_credentials_and_tls() {
    let d = mapped(
        "url='https://h/x' filename='x' reget='simple' throttle=0.5 bandwidth=2000 \
         minrate=50 timeout=0 proxy='http://127.0.0.1:3128' username='u' password='p%3ax' \
         no_cache=True ssl_ca_cert='/ca' ssl_cert='/c' ssl_key='/k' ssl_key_pass='s' \
         ssl_verify_peer=False ssl_verify_host=False",
    );
    assert!(d.continue_dest);
    assert_eq!(
        d.headers,
        vec![
            ("Pragma".to_string(), "no-cache".to_string()),
            // base64("u:p:x")
            ("Authorization".to_string(), "Basic dTpwOng=".to_string())
        ]
    );
    let t = d.transport.unwrap();
    assert_eq!(t.max_speed, Some(1000));
    // timeout=0: no speed guard, curl's own connect limit.
    assert_eq!(t.low_speed, None);
    assert_eq!(t.response_timeout, Some(Duration::ZERO));
    assert_eq!(t.connect_timeout, Some(Duration::from_secs(300)));
    assert_eq!(t.proxy.as_deref(), Some("http://127.0.0.1:3128"));
    assert_eq!(t.tls.ca_file, Some(PathBuf::from("/ca")));
    assert_eq!(t.tls.ca_path, Some(PathBuf::from("/ca")));
    assert_eq!(t.tls.cert, Some(PathBuf::from("/c")));
    assert_eq!(t.tls.key, Some(PathBuf::from("/k")));
    assert_eq!(t.tls.key_password.as_deref(), Some("s"));
    assert!(!t.tls.verify_peer && !t.tls.verify_host);
    // Defaults when the parent leaves things out; one credential alone is not used.
    let d = mapped("url='http://h/x' filename='x' reget=None username='u'");
    assert!(!d.continue_dest && d.headers.is_empty());
    let t = d.transport.unwrap();
    assert_eq!(t.connect_timeout, Some(Duration::from_secs(300)));
    assert_eq!(t.low_speed.unwrap().bytes_per_second, 1000);
    assert_eq!(t.max_speed, Some(0));
    // A range wins over reget.
    let d = mapped("url='http://h/x' filename='x' reget='simple' range=(1,3)");
    assert!(!d.continue_dest && d.range.is_some());
}

#[test]
fn base64_pads() {
    assert_eq!(base64(b""), "");
    assert_eq!(base64(b"f"), "Zg==");
    assert_eq!(base64(b"fo"), "Zm8=");
    assert_eq!(base64(b"foo"), "Zm9v");
    assert_eq!(
        base64(b"Aladdin:open sesame"),
        "QWxhZGRpbjpvcGVuIHNlc2FtZQ=="
    );
}

#[test]
fn refuses_lines_it_cannot_carry_out() {
    for line in [
        "filename='x'",
        "url='http://h/x'",
        "url=5 filename='x'",
        "url='http://h/x' filename='x' size='big'",
        "url='(' filename='x'",
    ] {
        let f = failure_of(line);
        assert_eq!(f.errno, 1, "{line}: {f:?}");
    }
}

#[test]
fn errors_map_onto_errno_and_code() {
    let url = "http://127.0.0.1:1/a.rpm";
    let cases = [
        (FetchError::HttpStatus { status: 404 }, 14, 404, "HTTP Error 404 - Not Found"),
        (FetchError::HttpStatus { status: 599 }, 14, 599, "HTTP Error 599 - The requested URL returned error: 599"),
        (FetchError::Timeout("x".into()), 12, 0, "Timeout on http://127.0.0.1:1/a.rpm: (28, 'timed out: x')"),
        (FetchError::TooSlow("x".into()), 12, 0, "Timeout on http://127.0.0.1:1/a.rpm: (28, 'transfer too slow: x')"),
        (FetchError::Connect("refused".into()), 14, 7, "curl#7 - \"could not connect: refused\""),
        (FetchError::Dns("h".into()), 14, 6, "curl#6 - \"could not resolve host: h\""),
        (FetchError::TooLarge { limit: 5 }, 14, 63, "curl#63 - \"body exceeds the limit of 5 bytes\""),
        (FetchError::Io { context: "writing".into(), message: "No space left on device".into() }, 16, 0,
            "error writing local file from http://127.0.0.1:1/a.rpm, writing: No space left on device"),
        (FetchError::RangeNotSatisfied("asked".into()), 9, 0, "range not satisfiable: asked on http://127.0.0.1:1/a.rpm"),
        (FetchError::Aborted, 15, 0, "helper shutting down"),
    ];
    for (error, errno, code, message) in cases {
        assert_eq!(
            Failure::of(&error, url),
            Failure {
                errno,
                code,
                message: message.to_string()
            },
            "{error:?}"
        );
    }
    assert_eq!(
        http_error("https://h/x", 403),
        "HTTPS Error 403 - Forbidden"
    );
    assert_eq!(
        http_error("ftp://h/x", 550),
        "FTP Error 550 - The requested URL returned error: 550"
    );
}

#[test]
fn answer_lines() {
    let mut out = Vec::new();
    write_ok(&mut out, 1, 3145728, 3129549, Duration::from_millis(3142));
    write_failure(
        &mut out,
        4,
        &Failure::of(&FetchError::HttpStatus { status: 404 }, "http://h/m"),
    );
    write_failure(&mut out, 5, &Failure::new(1, 0, "two\nlines".into()));
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "1 3145728 3129549 3.142 OK\n4 0 0 0.000 14 404 HTTP Error 404 - Not Found\n5 0 0 0.000 1 0 two lines\n"
    );
}

/// The front as the engine drives it: numbering, progress only when asked and never after
/// the final line, a failure line for a line it cannot read.
#[test]
fn numbers_answers_and_keeps_progress_to_its_requests() {
    let mut front = UrlGrabber::default();
    let (mut out, mut submitted) = (Vec::new(), Vec::new());
    let mut io = Io::new(&mut out, &mut submitted);
    front.input(Line::Text(1, BIG.as_bytes()), &mut io);
    front.input(Line::Text(2, b""), &mut io);
    front.input(Line::Text(3, b"garbage"), &mut io);
    front.input(Line::Text(4, ESCAPED.as_bytes()), &mut io);
    front.input(Line::TooLong(5), &mut io);
    let progress = |id, bytes| Event::Progress {
        id,
        bytes,
        total: None,
    };
    front.event(&progress("1", 10), &mut io);
    // Too soon after the last one.
    front.event(&progress("1", 20), &mut io);
    // Request 3 did not ask for progress.
    front.event(&progress("3", 20), &mut io);
    let outcome = Outcome::Fetched {
        url: "http://127.0.0.1:18081/big.bin",
        status: Some(200),
        size: 3145728,
        hashes: &[],
        etag: None,
        last_modified: None,
    };
    let dest = PathBuf::from("out_real1/big.bin");
    let done = Event::Done {
        id: "1",
        dest: &dest,
        outcome,
        attempts: &[],
        elapsed: Duration::from_millis(1500),
    };
    front.event(&done, &mut io);
    std::thread::sleep(PROGRESS_GAP);
    front.event(&progress("1", 30), &mut io);
    let error = FetchError::HttpStatus { status: 404 };
    front.event(
        &Event::Failed {
            id: "3",
            error: &error,
            attempts: &[],
        },
        &mut io,
    );
    let status = front.finish(
        &Summary {
            bytes: 0,
            elapsed: Duration::ZERO,
            stop: Some(api::Stop::Signal(2)),
        },
        &mut io,
    );
    assert_eq!(status, 0);
    let ids: Vec<_> = submitted
        .iter()
        .map(|(ticket, r)| (*ticket, r.id().unwrap().to_string()))
        .collect();
    assert_eq!(ids, vec![(1, "1".to_string()), (3, "3".to_string())]);
    let text = String::from_utf8(out).unwrap();
    let lines: Vec<_> = text.lines().collect();
    assert_eq!(
        lines[0],
        "2 0 0 0.000 1 0 Bad request: `garbage` is not key=value"
    );
    assert!(
        lines[1].starts_with("4 0 0 0.000 1 0 Bad request: the request line is longer"),
        "{text}"
    );
    assert_eq!(
        lines[2..],
        [
            "1 10",
            "1 3145728 3145728 1.500 OK",
            "3 0 0 0.000 14 404 HTTP Error 404 - Not Found"
        ]
    );
}

#[test]
fn failure_lines_show_no_password() {
    let url = "http://u:pw-of-u@h/m";
    let mut out = Vec::new();
    let errors = [
        FetchError::Timeout("stalled".into()),
        FetchError::HttpStatus { status: 404 },
        FetchError::RangeNotSatisfied("no".into()),
        FetchError::Io {
            context: "writing".into(),
            message: "full".into(),
        },
        FetchError::UnsupportedScheme("\"ftp://v:pw-of-v@h/\" refused".into()),
        FetchError::Network(format!("on {url}")),
    ];
    for (n, error) in errors.iter().enumerate() {
        write_failure(&mut out, n as u64, &Failure::of(error, url));
    }
    let out = String::from_utf8(out).unwrap();
    assert!(!out.contains("pw-of"), "{out}");
    assert!(out.contains("Timeout on http://u:***@h/m"), "{out}");
}
