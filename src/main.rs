//! The `fetchmux` binary: read the command line (or the name apt ran it under), run the
//! engine under the front of that protocol, exit with its status.

use fetchmux::config::{Mode, Options};
use fetchmux::front::apt::Apt;
use fetchmux::front::jsonl::JsonLines;
use fetchmux::front::Front;

fn main() {
    let options = match Options::from_args(std::env::args_os()) {
        Ok(options) => options,
        Err(err) => {
            let _ = err.print();
            // --help and --version are not errors; a bad command line is status 2.
            std::process::exit(if err.use_stderr() { 2 } else { 0 });
        }
    };
    let front: Box<dyn Front> = match options.mode {
        None => Box::<JsonLines>::default(),
        Some(Mode::AptMethod) => Box::<Apt>::default(),
    };
    std::process::exit(fetchmux::engine::run(options, front));
}
