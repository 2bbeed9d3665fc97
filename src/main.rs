//! The `fetchmux` binary: parse the command line, pick the front (JSON Lines, or a
//! subcommand's protocol, or the protocol of the name it runs under), run the engine, exit
//! with its status.

use std::path::Path;

use clap::Parser;
use fetchmux::config::{Options, Protocol};
use fetchmux::front::{jsonl::JsonLines, urlgrabber, Front};

fn main() {
    // yum runs /usr/libexec/urlgrabber-ext-down (or $URLGRABBER_EXT_DOWN) with no arguments.
    let argv0 = std::env::args_os().next().unwrap_or_default();
    let options = if Path::new(&argv0).file_name() == Some(urlgrabber::PROGRAM_NAME.as_ref()) {
        let mut options = Options::parse_from(["fetchmux"]);
        options.protocol = Some(Protocol::UrlgrabberExtDown);
        options
    } else {
        parse_command_line()
    };
    let (options, front): (Options, Box<dyn Front>) = match options.protocol {
        None => (options, Box::<JsonLines>::default()),
        Some(Protocol::UrlgrabberExtDown) => (
            urlgrabber::options(options),
            Box::<urlgrabber::UrlGrabber>::default(),
        ),
    };
    std::process::exit(fetchmux::engine::run(options, front));
}

fn parse_command_line() -> Options {
    match Options::try_parse() {
        Ok(options) => options,
        Err(err) => {
            let _ = err.print();
            // --help and --version are not errors; a bad command line is status 2.
            std::process::exit(if err.use_stderr() { 2 } else { 0 });
        }
    }
}
