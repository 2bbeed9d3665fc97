//! The `fetchmux` binary: parse the command line, run the engine, exit with its status.

use clap::Parser;

fn main() {
    let options = match fetchmux::config::Options::try_parse() {
        Ok(options) => options,
        Err(err) => {
            let _ = err.print();
            // --help and --version are not errors; a bad command line is status 2.
            std::process::exit(if err.use_stderr() { 2 } else { 0 });
        }
    };
    std::process::exit(fetchmux::engine::run(options));
}
