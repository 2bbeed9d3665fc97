//! The `fetchmux` binary: parse the command line, run the engine under the JSON Lines
//! front, exit with its status.

use clap::Parser;
use fetchmux::front::jsonl::JsonLines;

fn main() {
    let options = match fetchmux::config::Options::try_parse() {
        Ok(options) => options,
        Err(err) => {
            let _ = err.print();
            // --help and --version are not errors; a bad command line is status 2.
            std::process::exit(if err.use_stderr() { 2 } else { 0 });
        }
    };
    let front = Box::<JsonLines>::default();
    std::process::exit(fetchmux::engine::run(options, front));
}
