//! `fetchmux generate`: the man pages and shell completions, made from the same clap
//! definitions as `--help` (so they cannot drift from it) by `make install` and packagers.

use std::io::Write;

use crate::config::{Generate, Options};

/// Carry out `what`; the exit status.
pub fn run(what: &Generate) -> i32 {
    let command = Options::command_with_versions();
    let result = match what {
        Generate::Man { dir } => std::fs::create_dir_all(dir)
            .and_then(|()| clap_mangen::generate_to(command, dir))
            .map_err(|e| format!("cannot write the man pages into {}: {e}", dir.display())),
        Generate::Completions { shell } => {
            let mut command = command;
            let mut out = std::io::stdout().lock();
            clap_complete::generate(*shell, &mut command, "fetchmux", &mut out);
            out.flush()
                .map_err(|e| format!("cannot write the completions: {e}"))
        }
    };
    match result {
        Ok(()) => 0,
        Err(message) => {
            eprintln!("fetchmux: {message}");
            1
        }
    }
}
