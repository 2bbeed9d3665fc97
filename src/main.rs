//! The `fetchmux` binary: read the command line (or the name a package manager ran it
//! under), run the engine under the front of that protocol, exit with its status.

use fetchmux::config::{Mode, Options};
use fetchmux::front::{apt, get, jsonl::JsonLines, urlgrabber, Front};

fn main() {
    let options = match Options::from_args(std::env::args_os()) {
        Ok(options) => options,
        Err(err) => {
            let _ = err.print();
            if err.kind() == clap::error::ErrorKind::InvalidSubcommand
                && std::env::args().skip(1).any(|arg| arg.contains("://"))
            {
                eprintln!(
                    "\nfetchmux reads its requests on stdin; to download URLs from a \
                     terminal, run: fetchmux get URL..."
                );
            }
            // --help and --version are not errors; a bad command line is status 2.
            std::process::exit(if err.use_stderr() { 2 } else { 0 });
        }
    };
    let (options, front): (Options, Box<dyn Front>) = match options.mode.clone() {
        None => (options, Box::<JsonLines>::default()),
        Some(Mode::AptMethod) => (apt::options(options), Box::<apt::Apt>::default()),
        Some(Mode::UrlgrabberExtDown) => (
            urlgrabber::options(options),
            Box::<urlgrabber::UrlGrabber>::default(),
        ),
        Some(Mode::Get(args)) => match get::Get::new(&args) {
            Ok(front) => (options, Box::new(front)),
            Err(problems) => {
                for problem in problems {
                    eprintln!("fetchmux get: {problem}");
                }
                eprintln!("fetchmux get: nothing was downloaded");
                std::process::exit(2);
            }
        },
        Some(Mode::Generate(what)) => std::process::exit(fetchmux::generate::run(&what)),
    };
    std::process::exit(fetchmux::engine::run(options, front));
}
