//! The list `fetchmux get -i FILE` reads: plain URLs with aria2-style options, or JSON Lines
//! requests (docs/protocol.md), told apart by the first non-blank character (`{`).
//!
//! Plain lists follow aria2's input file: one entry per line, URLs of the same file separated
//! by tabs (tried in order, as a request's `urls`), then indented `key=value` lines for that
//! entry. Of aria2's options, `out=NAME` and `checksum=ALGO=HEX` are understood; any other
//! is refused, as an unknown protocol field is: a typo must not change what is downloaded.

use crate::api::Request;
use crate::body::digest::Algorithm;
use crate::front::jsonl::parse_request;

/// What a list holds.
#[derive(Debug)]
pub enum List {
    Plain(Vec<Entry>),
    /// Requests with their line numbers.
    Requests(Vec<(u64, Request)>),
}

/// One entry of a plain list.
#[derive(Debug, Default, PartialEq)]
pub struct Entry {
    pub line: u64,
    pub urls: Vec<String>,
    pub out: Option<String>,
    pub hashes: Vec<(Algorithm, String)>,
}

/// Read `text`; every problem is reported as `ORIGIN:LINE: message`.
pub fn parse(text: &str, origin: &str) -> Result<List, Vec<String>> {
    let json = text.trim_start().starts_with('{');
    let mut problems = Vec::new();
    let mut entries: Vec<Entry> = Vec::new();
    let mut requests = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let no = index as u64 + 1;
        let mut problem = |message: String| problems.push(format!("{origin}:{no}: {message}"));
        if line.trim().is_empty() {
            continue;
        }
        if json {
            match parse_request(line.as_bytes()) {
                Ok(request) => requests.push((no, request)),
                Err(rejected) => problem(rejected.error.to_string()),
            }
            continue;
        }
        if line.trim_start().starts_with('#') {
            continue;
        }
        if line.starts_with([' ', '\t']) {
            match entries.last_mut() {
                Some(entry) => {
                    if let Err(message) = option(entry, line.trim()) {
                        problem(message)
                    }
                }
                None => problem("an indented option comes before any URL".into()),
            }
            continue;
        }
        let urls = line
            .split('\t')
            .map(str::trim)
            .filter(|url| !url.is_empty())
            .map(str::to_string)
            .collect();
        entries.push(Entry {
            line: no,
            urls,
            ..Entry::default()
        });
    }
    match (problems.is_empty(), json) {
        (false, _) => Err(problems),
        (true, true) => Ok(List::Requests(requests)),
        (true, false) => Ok(List::Plain(entries)),
    }
}

/// One indented `key=value` line of a plain list.
fn option(entry: &mut Entry, text: &str) -> Result<(), String> {
    let (key, value) = text
        .split_once('=')
        .ok_or_else(|| format!("`{text}` is not `key=value`"))?;
    match key.trim() {
        "out" if entry.out.is_some() => Err("`out` given twice for one URL".into()),
        "out" => {
            entry.out = Some(value.trim().to_string());
            Ok(())
        }
        "checksum" => {
            let (name, hex) = value
                .trim()
                .split_once('=')
                .ok_or_else(|| format!("`checksum={value}` must be `checksum=ALGO=HEX`"))?;
            // aria2 writes `sha-256`; the protocol `sha256`.
            let algorithm = Algorithm::from_name(&name.replace('-', "").to_ascii_lowercase())
                .ok_or_else(|| {
                    format!("unknown checksum `{name}` (known: sha-256, sha-512, sha-384, sha-224, sha-1, md5)")
                })?;
            if entry.hashes.iter().any(|(a, _)| *a == algorithm) {
                return Err(format!("`checksum={name}` given twice for one URL"));
            }
            entry.hashes.push((algorithm, hex.trim().to_string()));
            Ok(())
        }
        other => Err(format!("unknown option `{other}` (known: out, checksum)")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_lists_with_aria2_options() {
        let text = "# packages\n\nhttp://h/a.rpm\n  checksum=sha-256=AB\n  out=x.rpm\nhttp://m1/b\thttp://m2/b\n";
        let List::Plain(entries) = parse(text, "list").unwrap() else {
            panic!("plain")
        };
        assert_eq!(
            entries,
            vec![
                Entry {
                    line: 3,
                    urls: vec!["http://h/a.rpm".into()],
                    out: Some("x.rpm".into()),
                    hashes: vec![(Algorithm::Sha256, "AB".into())],
                },
                Entry {
                    line: 6,
                    urls: vec!["http://m1/b".into(), "http://m2/b".into()],
                    ..Entry::default()
                },
            ]
        );
    }

    #[test]
    fn json_lines_when_the_first_character_is_a_brace() {
        let text = "\n  {\"op\":\"download\",\"id\":\"a\",\"url\":\"http://h/a\",\"dest\":\"a\"}\n\n{\"op\":\"mirrors\",\"set\":\"f\",\"urls\":[\"http://m/\"]}\n";
        let List::Requests(requests) = parse(text, "list").unwrap() else {
            panic!("requests")
        };
        assert_eq!(requests.iter().map(|(n, _)| *n).collect::<Vec<_>>(), [2, 4]);
    }

    #[test]
    fn every_problem_names_its_line() {
        let text = "  out=x\nhttp://h/a\n  referer=y\n  checksum=sha-3=00\n  out\n";
        let problems = parse(text, "l.txt").unwrap_err();
        assert_eq!(problems.len(), 4, "{problems:?}");
        for (problem, line) in problems.iter().zip([1, 3, 4, 5]) {
            assert!(problem.starts_with(&format!("l.txt:{line}: ")), "{problem}");
        }
        let problems =
            parse("{\"op\":\"download\",\"id\":\"a\"}\n{\"op\":\"x\"}", "r").unwrap_err();
        assert!(problems[0].starts_with("r:1: "), "{problems:?}");
        assert!(problems[1].starts_with("r:2: "), "{problems:?}");
    }
}
