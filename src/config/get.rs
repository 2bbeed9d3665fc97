//! The command line of `fetchmux get`, the front for people (front::get does the work).
//! The engine's options (limits, timeouts, retries) are the top-level ones, which may follow
//! `get` too; `-j N` is `--max-parallel N`.

use std::path::PathBuf;

use clap::Args;

/// What `fetchmux get --help` says after the options.
const AFTER: &str = "\
Each file is named after the last segment of its URL's path (percent-decoded); a URL whose \
last segment is empty, `.` or `..`, or decodes to something with `/`, needs -O NAME (or \
`out=NAME` in a list). Nothing is downloaded unless every entry has a name and no two \
entries write the same file.

A list (-i) is one URL per line, each optionally followed by indented aria2-style options \
(`  out=NAME`, `  checksum=sha-256=HEX`), blank lines and `#` comments ignored; or, when its \
first non-blank character is `{`, JSON Lines requests as in docs/protocol.md (relative `dest` \
under -o DIR).

Exit status: 0 when every file is in place and verified; 1 when any download failed (a \
summary of the failures ends the output); 2 for a bad command line or list (nothing \
downloaded); 128+N when stopped by signal N (130 for Ctrl-C).";

/// `fetchmux get URL... [-o DIR | -O NAME] [-i FILE] [--sha256 HEX] [-j N]`.
#[derive(Args, Debug, Clone, PartialEq, Eq)]
#[command(after_help = AFTER)]
pub struct GetArgs {
    /// URLs to download (http, https, ftp, file).
    #[arg(value_name = "URL")]
    pub urls: Vec<String>,

    /// Directory to save into (made if missing); default: the current directory.
    #[arg(
        short = 'o',
        long = "output-dir",
        value_name = "DIR",
        conflicts_with = "output"
    )]
    pub dir: Option<PathBuf>,

    /// Save the one URL given as NAME (a path) instead of the URL's own name.
    #[arg(short = 'O', long = "output", value_name = "NAME")]
    pub output: Option<PathBuf>,

    /// Read URLs from FILE (`-` for stdin): a plain or aria2-style list, or JSON Lines
    /// requests.
    #[arg(short = 'i', long = "input-file", value_name = "FILE")]
    pub input: Option<PathBuf>,

    /// Expected SHA-256 digest of the one URL given: the file is only put in place if it
    /// matches.
    #[arg(long, value_name = "HEX")]
    pub sha256: Option<String>,
}
