//! The JSON Lines front's parsing and event lines.

use super::*;
use crate::error::ErrorKind;

/// What the front parses, as the engine then validates it.
fn parse(line: &str) -> Result<Request, Rejected> {
    let mut request = parse_request(line.as_bytes())?;
    let id = request.id().map(str::to_owned);
    request
        .validate()
        .map(|()| request)
        .map_err(|error| Rejected { id, error })
}

fn rejected(line: &str) -> Rejected {
    match parse(line) {
        Ok(r) => panic!("accepted {line}: {r:?}"),
        Err(r) => r,
    }
}

const SHA: &str = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

#[test]
fn accepts_a_full_download() {
    let line = format!(
        r#"{{"op":"download","id":"a","url":"http://h/x","dest":"/tmp/x","size":3,
           "hashes":{{"sha256":"{}"}},"headers":{{"X-A":"1"}},"priority":-2,
           "progress":true,"x-mine":{{"any":1}}}}"#,
        SHA.to_uppercase()
    );
    let Request::Download(d) = parse(&line).unwrap() else {
        panic!()
    };
    assert_eq!(d.source, Source::Urls(vec!["http://h/x".into()]));
    assert_eq!(d.hashes, vec![(Algorithm::Sha256, SHA.to_string())]);
    assert_eq!(d.priority, -2);
    assert!(d.progress);
}

#[test]
fn rejects_typos_but_ignores_x_fields() {
    let r = rejected(r#"{"op":"download","id":"a","url":"http://h/x","dest":"/t","szie":1}"#);
    assert_eq!(r.id.as_deref(), Some("a"));
    assert!(r.error.to_string().contains("szie"), "{}", r.error);
}

#[test]
fn rejects_bad_inputs_with_the_id_when_known() {
    for line in [
        "not json",
        "[1,2]",
        r#"{"id":"a"}"#,
        r#"{"op":"frobnicate","id":"a"}"#,
        r#"{"op":"download","id":"a","url":"http://h/x"}"#,
        r#"{"op":"download","id":"a","url":"http://h/x","dest":"/t","hashes":{"sha256":"zz"}}"#,
        r#"{"op":"download","id":"a","url":"http://h/x","dest":"/t","hashes":{"crc32":"00"}}"#,
        r#"{"op":"download","id":"a","url":"http://h/a b","dest":"/t"}"#,
        "{\"op\":\"download\",\"id\":\"a\",\"url\":\"http://h/\\u0007\",\"dest\":\"/t\"}",
        r#"{"op":"download","id":"a","url":"http://h/x","urls":["http://h/y"],"dest":"/t"}"#,
        r#"{"op":"download","id":"a","url":"http://h/x","dest":"/t/"}"#,
        r#"{"op":"download","id":"","url":"http://h/x","dest":"/t"}"#,
    ] {
        let r = rejected(line);
        assert_eq!(r.error.kind(), ErrorKind::InvalidRequest, "{line}");
    }
}

#[test]
fn mirror_sources_and_sets() {
    let Request::Download(d) = parse(
        r#"{"op":"download","id":"a","mirror":"f","path":"/P/a.rpm","dest":"/t","resume":true}"#,
    )
    .unwrap() else {
        panic!()
    };
    assert_eq!(
        d.source,
        Source::Mirror {
            set: "f".into(),
            path: "P/a.rpm".into()
        }
    );
    assert!(d.resume);
    let Request::Mirrors(m) = parse(
        r#"{"op":"mirrors","set":"f","urls":["http://a/x","http://b/y/"],"max_per_mirror":2}"#,
    )
    .unwrap() else {
        panic!()
    };
    assert_eq!(m.urls, vec!["http://a/x/", "http://b/y/"]);
    for bad in [
        r#"{"op":"download","id":"a","mirror":"f","dest":"/t"}"#,
        r#"{"op":"download","id":"a","url":"http://h/x","mirror":"f","path":"p","dest":"/t"}"#,
        r#"{"op":"download","id":"a","url":"http://h/x","dest":"/t","range":{"start":5,"end":1}}"#,
        r#"{"op":"download","id":"a","url":"http://h/x","dest":"/t","range":{"start":0,"end":1},"resume":true}"#,
        r#"{"op":"mirrors","set":"f","urls":[]}"#,
        r#"{"op":"mirrors","set":"f","urls":["http://a/"],"max_per_mirror":0}"#,
    ] {
        assert!(parse(bad).is_err(), "{bad}");
    }
}

#[test]
fn unsupported_scheme_has_its_own_kind() {
    let r = rejected(r#"{"op":"download","id":"a","url":"gopher://h/x","dest":"/t"}"#);
    assert_eq!(r.error.kind(), ErrorKind::UnsupportedScheme);
}

#[test]
fn events_serialize_with_their_tag() {
    let mut out = Vec::new();
    write_line(
        &mut out,
        &Wire::Bye {
            ok: 1,
            failed: 2,
            invalid: 0,
            bytes: 3,
            elapsed_ms: 4,
        },
    );
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "{\"event\":\"bye\",\"ok\":1,\"failed\":2,\"invalid\":0,\"bytes\":3,\"elapsed_ms\":4}\n"
    );
}

/// Issue 13: with the line read into a `serde_json::Value` first, a repeated key silently
/// kept its last value, so two JSON parsers could disagree on which file is written.
#[test]
fn duplicate_keys_are_invalid_and_named() {
    let url = r#""op":"download","id":"a","url":"http://h/x""#;
    for (line, key) in [
        (format!(r#"{{{url},"dest":"/t/a","dest":"/t/b"}}"#), "dest"),
        (format!(r#"{{{url},"dest":"/t/a","op":"download"}}"#), "op"),
        (format!(r#"{{{url},"dest":"/t/a","x-n":1,"x-n":2}}"#), "x-n"),
        (
            format!(
                r#"{{{url},"dest":"/t/a","hashes":{{"md5":"{0}","md5":"{0}"}}}}"#,
                &SHA[..32]
            ),
            "md5",
        ),
        (
            format!(r#"{{{url},"dest":"/t/a","headers":{{"X-A":"1","X-A":"2"}}}}"#),
            "X-A",
        ),
        // Header names are case-insensitive in HTTP: these are two values for one header.
        (
            format!(r#"{{{url},"dest":"/t/a","headers":{{"X-A":"1","x-a":"2"}}}}"#),
            "x-a",
        ),
        (
            r#"{"op":"mirrors","set":"f","set":"g","urls":["http://a/"]}"#.to_string(),
            "set",
        ),
    ] {
        let r = rejected(&line);
        assert_eq!(r.error.kind(), ErrorKind::InvalidRequest, "{line}");
        let message = r.error.to_string();
        assert!(
            message.contains("duplicate") && message.contains(&format!("`{key}`")),
            "{line}: {message}"
        );
    }
    assert_eq!(
        rejected(r#"{"op":"download","id":"a","url":"http://h/x","dest":"/t/a","dest":"/t/a"}"#)
            .error
            .to_string(),
        "duplicate field `dest`"
    );
    // Which of two ids would be the one to echo is exactly the ambiguity refused here.
    let r = rejected(r#"{"op":"cancel","id":"a","id":"b"}"#);
    assert_eq!(r.id, None);
    assert!(r.error.to_string().contains("`id`"), "{}", r.error);
    // Distinct names, even ones differing only in case, are distinct fields or digests.
    parse(r#"{"op":"download","id":"a","url":"http://h/x","dest":"/t/a","x-n":1,"x-N":2}"#)
        .unwrap();
}

/// Issue 13: every `invalid` message names the field it is about (`"size":-1` used to say
/// only "invalid value: integer `-1`, expected u64").
#[test]
fn every_refusal_names_its_field() {
    let d = r#""op":"download","id":"a""#;
    for (line, field) in [
        (
            format!(r#"{{{d},"url":"http://h/x","dest":"/t","size":-1}}"#),
            "size",
        ),
        (
            format!(r#"{{{d},"url":"http://h/x","dest":"/t","priority":"hi"}}"#),
            "priority",
        ),
        (
            format!(r#"{{{d},"url":"http://h/x","dest":"/t","range":{{"start":0}}}}"#),
            "range",
        ),
        (
            format!(r#"{{{d},"url":"http://h/x","dest":"/t","hashes":{{"sha256":"zz"}}}}"#),
            "hashes",
        ),
        (
            format!(r#"{{{d},"url":"http://h/x","dest":"/t","hashes":{{"crc32":"00"}}}}"#),
            "hashes",
        ),
        (
            format!(r#"{{{d},"url":"http://h/x","dest":"/t","headers":{{"a b":"1"}}}}"#),
            "headers",
        ),
        (
            format!(r#"{{{d},"url":"http://h/x","dest":"/t","headers":{{"A":"1\n"}}}}"#),
            "headers",
        ),
        (
            format!(r#"{{{d},"url":"http://h/x","dest":"/t","size":5,"max_size":4}}"#),
            "size",
        ),
        (
            format!(r#"{{{d},"url":"http://h/a b","dest":"/t"}}"#),
            "url",
        ),
        (
            format!(r#"{{{d},"urls":["http://h/x","nope"],"dest":"/t"}}"#),
            "urls",
        ),
        (
            format!(r#"{{{d},"url":"gopher://h/x","dest":"/t"}}"#),
            "url",
        ),
        (format!(r#"{{{d},"url":"http:///x","dest":"/t"}}"#), "url"),
        (
            format!(r#"{{{d},"url":"http://h/x","dest":"/t/"}}"#),
            "dest",
        ),
        (
            r#"{"op":"mirrors","set":"f","urls":["http://a/","x"]}"#.into(),
            "urls",
        ),
        (r#"{"op":"mirrors","set":"f","urls":[]}"#.into(), "urls"),
        (r#"{"op":"cancel","id":7}"#.into(), "id"),
        (r#"{"op":"frobnicate"}"#.into(), "op"),
    ] {
        let message = rejected(&line).error.to_string();
        assert!(message.contains(&format!("`{field}`")), "{line}: {message}");
    }
    let r = rejected(r#"{"op":"download","id":"a","url":"http://h/x","dest":"/t","size":-1}"#);
    assert_eq!(
        r.error.to_string(),
        "`size`: invalid value: integer `-1`, expected u64"
    );
}
