//! What `fetchmux get` will download, worked out before anything is: the entries of the
//! command line and of the -i list, each with its file name and destination, every request
//! validated, no two entries writing the same file or sharing an id. Any problem stops the
//! run before the first byte (exit 2), with every problem listed, so that a list is fixed in
//! one go rather than half downloaded.

use std::collections::HashSet;
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::api::{check_url, Download, MirrorSet, Request, Source};
use crate::body::digest::Algorithm;
use crate::config::get::GetArgs;
use crate::front::get::list::{self, List};
use crate::front::get::name;
use crate::net::url::redacted;

/// The downloads of a run, in order, and the mirror sets a request file declared.
#[derive(Debug)]
pub struct Plan {
    pub mirrors: Vec<MirrorSet>,
    pub downloads: Vec<Download>,
}

/// The plan for `args`, or every problem found (each a line for the user).
pub fn plan(args: &GetArgs) -> Result<Plan, Vec<String>> {
    let mut problems = Vec::new();
    let mut plan = Plan {
        mirrors: Vec::new(),
        downloads: Vec::new(),
    };
    let one_url_only = args.urls.len() != 1 || args.input.is_some();
    if args.output.is_some() && one_url_only {
        problems.push("-O NAME names one file: give exactly one URL and no -i list".into());
    }
    if args.sha256.is_some() && one_url_only {
        problems.push(
            "--sha256 is the digest of one file: give exactly one URL and no -i list \
             (a list gives digests as `  checksum=sha-256=HEX`)"
                .into(),
        );
    }
    if args.urls.is_empty() && args.input.is_none() {
        problems.push("nothing to download: give URLs, or -i FILE with a list of them".into());
    }
    let dir = args.dir.clone().unwrap_or_default();
    for (index, url) in args.urls.iter().enumerate() {
        let entry = list::Entry {
            line: index as u64 + 1,
            urls: vec![url.clone()],
            out: None,
            hashes: args
                .sha256
                .iter()
                .map(|hex| (Algorithm::Sha256, hex.clone()))
                .collect(),
        };
        let dest = args.output.clone().filter(|_| !one_url_only);
        let origin = format!("URL {}", redacted(url));
        add_entry(&mut plan, &mut problems, &dir, entry, dest, &origin);
    }
    if let Some(input) = &args.input {
        match read_list(input) {
            Ok((text, origin)) => match list::parse(&text, &origin) {
                Ok(List::Plain(entries)) => {
                    for entry in entries {
                        let at = format!("{origin}:{}", entry.line);
                        add_entry(&mut plan, &mut problems, &dir, entry, None, &at);
                    }
                }
                Ok(List::Requests(requests)) => {
                    for (line, request) in requests {
                        add_request(&mut plan, &mut problems, &dir, request, &origin, line);
                    }
                }
                Err(found) => problems.extend(found),
            },
            Err(problem) => problems.push(problem),
        }
    }
    problems.extend(clashes(&plan.downloads));
    if problems.is_empty() {
        Ok(plan)
    } else {
        Err(problems)
    }
}

/// The list's text, and how to name it in messages.
fn read_list(input: &Path) -> Result<(String, String), String> {
    if input == Path::new("-") {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| format!("cannot read the list on stdin: {e}"))?;
        return Ok((text, "stdin".into()));
    }
    let shown = input.display().to_string();
    let text =
        std::fs::read_to_string(input).map_err(|e| format!("cannot read the list {shown}: {e}"))?;
    Ok((text, shown))
}

/// A URL of the command line or of a plain list (named `at` in messages).
fn add_entry(
    plan: &mut Plan,
    problems: &mut Vec<String>,
    dir: &Path,
    entry: list::Entry,
    dest: Option<PathBuf>,
    at: &str,
) {
    let Some(first) = entry.urls.first() else {
        return;
    };
    // A line that is no URL is said to be so, before its "name" is looked at.
    let field = if entry.urls.len() == 1 { "url" } else { "urls" };
    if let Err(error) = entry.urls.iter().try_for_each(|url| check_url(url, field)) {
        return problems.push(format!("{at}: {error}"));
    }
    let dest = match (dest, &entry.out) {
        (Some(dest), _) => dest,
        (None, Some(out)) => match checked_out(out) {
            Ok(()) => dir.join(out),
            Err(problem) => return problems.push(format!("{at}: {problem}")),
        },
        (None, None) => match name::from_url(first) {
            Ok(name) => dir.join(name),
            Err(problem) => {
                let hint = "give one with -O NAME, or `  out=NAME` under it in a list";
                return problems.push(format!("{at}: {problem}; {hint}"));
            }
        },
    };
    let id = format!("#{}", plan.downloads.len() + 1);
    let mut download = Download::new(id, Source::Urls(entry.urls), dest);
    download.hashes = entry.hashes;
    download.progress = true;
    submit_checked(plan, problems, Request::from(download), at);
}

/// `out=NAME` of a list stays inside the directory: a plain relative name.
fn checked_out(out: &str) -> Result<(), String> {
    let path = Path::new(out);
    let plain = !out.is_empty()
        && path.is_relative()
        && path
            .components()
            .all(|c| matches!(c, std::path::Component::Normal(_)));
    if plain {
        Ok(())
    } else {
        Err(format!(
            "`out={out}` must be a relative path without `..` (it is under -o DIR)"
        ))
    }
}

/// A request of a JSON Lines list: `dest` relative to -o DIR, progress always on (the
/// display needs it).
fn add_request(
    plan: &mut Plan,
    problems: &mut Vec<String>,
    dir: &Path,
    mut request: Request,
    origin: &str,
    line: u64,
) {
    let at = format!("{origin}:{line}");
    match &mut request {
        Request::Download(download) => {
            download.dest = dir.join(&download.dest);
            download.progress = true;
        }
        Request::Mirrors(_) => {}
        Request::Cancel { .. } => {
            return problems.push(format!("{at}: `cancel` has no place in a request file"));
        }
    }
    submit_checked(plan, problems, request, &at);
}

fn submit_checked(plan: &mut Plan, problems: &mut Vec<String>, mut request: Request, at: &str) {
    if let Err(error) = request.validate() {
        return problems.push(format!("{at}: {error}"));
    }
    match request {
        Request::Download(download) => plan.downloads.push(*download),
        Request::Mirrors(set) => plan.mirrors.push(set),
        Request::Cancel { .. } => {}
    }
}

/// Two downloads with one `dest` would race for the file; two with one id would be refused
/// by the engine halfway through the run.
fn clashes(downloads: &[Download]) -> Vec<String> {
    let mut problems = Vec::new();
    let mut dests = HashSet::new();
    let mut ids = HashSet::new();
    for download in downloads {
        if !dests.insert(&download.dest) {
            problems.push(format!(
                "{} would be written by two entries (give one of them another name with \
                 `out=NAME`)",
                download.dest.display()
            ));
        }
        if !ids.insert(&download.id) {
            problems.push(format!("the id `{}` is used twice", download.id));
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(urls: &[&str], list: Option<&str>) -> (GetArgs, Option<tempfile::NamedTempFile>) {
        let file = list.map(|text| {
            let file = tempfile::NamedTempFile::new().unwrap();
            std::fs::write(file.path(), text).unwrap();
            file
        });
        let args = GetArgs {
            urls: urls.iter().map(|u| u.to_string()).collect(),
            dir: Some(PathBuf::from("/cache")),
            output: None,
            input: file.as_ref().map(|f| f.path().to_path_buf()),
            sha256: None,
        };
        (args, file)
    }

    #[test]
    fn names_go_under_the_directory_and_out_stays_inside_it() {
        let (a, _list) = args(&["http://h/p/a%20b.rpm"], Some("http://h/x\n  out=sub/y\n"));
        let planned = plan(&a).unwrap();
        let dests: Vec<_> = planned.downloads.iter().map(|d| d.dest.clone()).collect();
        assert_eq!(
            dests,
            [
                PathBuf::from("/cache/a b.rpm"),
                PathBuf::from("/cache/sub/y")
            ]
        );
        assert!(planned.downloads.iter().all(|d| d.progress));
        for out in ["../y", "/etc/y", "a/../../y", ""] {
            let (a, _list) = args(&[], Some(&format!("http://h/x\n  out={out}\n")));
            let problems = plan(&a).unwrap_err();
            assert!(problems[0].contains(":1: `out="), "{problems:?}");
        }
    }

    #[test]
    fn every_problem_is_listed_at_once() {
        let list = "http://h/a\nhttp://h/dir/\n{not json\nhttp://h/c\n  checksum=sha-256=zz\n";
        let (a, _list) = args(&["http://h/a", "gopher://h/b"], Some(list));
        let problems = plan(&a).unwrap_err();
        let expected = [
            "URL gopher://h/b: `url`: scheme `gopher` is not supported",
            ":2: cannot name the file of http://h/dir/: its path ends in `/` (no file name); give one with -O NAME, or `  out=NAME` under it in a list",
            ":3: `url`: \"{not json\" contains a space or control character",
            ":4: `hashes`: `sha256` must be 64 hex digits",
            "/cache/a would be written by two entries",
        ];
        assert_eq!(problems.len(), expected.len(), "{problems:#?}");
        for (problem, expected) in problems.iter().zip(expected) {
            assert!(problem.contains(expected), "{problem} lacks {expected}");
        }
    }
}
