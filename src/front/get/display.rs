//! What `fetchmux get` shows on stderr. On a terminal: a line per running transfer (name,
//! bytes, rate, ETA) above a total line, each finished file printed above them with its
//! verdict, all drawn by indicatif from the loop's thread when an event changes something.
//! Elsewhere (a pipe, a file, a CI log): one plain line per finished file, no escape codes.

use std::io::IsTerminal;

use indicatif::{HumanBytes, MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Transfer lines drawn at most; more running transfers are counted on the total line, so
/// the display never outgrows a small terminal.
const MOST_LINES: usize = 20;

/// Names are cut to this many columns on the transfer lines.
const NAME_COLUMNS: usize = 32;

pub enum Display {
    Terminal(Box<Terminal>),
    Plain,
}

impl Display {
    /// A terminal display when stderr is a terminal, else plain lines.
    pub fn for_stderr(files: usize) -> Display {
        if std::io::stderr().is_terminal() {
            Display::Terminal(Box::new(Terminal::new(files)))
        } else {
            Display::Plain
        }
    }

    /// A line above the running transfers (a verdict), or a plain line.
    pub fn line(&self, text: &str) {
        match self {
            Display::Terminal(t) => {
                let _ = t.multi.println(text);
            }
            Display::Plain => eprintln!("{text}"),
        }
    }

    pub fn is_terminal(&self) -> bool {
        matches!(self, Display::Terminal(_))
    }
}

/// The terminal display: indicatif's bars, one per shown transfer, and the total.
pub struct Terminal {
    multi: MultiProgress,
    total: ProgressBar,
    /// The bar of each entry while it runs and is shown.
    bars: Vec<Option<ProgressBar>>,
    /// The entries that have a bar (at most `most_lines`), so that nothing walks `bars`.
    shown: Vec<usize>,
    most_lines: usize,
    known: ProgressStyle,
    unknown: ProgressStyle,
    total_known: ProgressStyle,
}

impl Terminal {
    fn new(files: usize) -> Terminal {
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(10));
        let rows = terminal_rows().unwrap_or(24);
        let style = |template: &str| ProgressStyle::with_template(template).expect("a template");
        let total_unknown =
            style("{prefix:>5} {binary_bytes:>10} {binary_bytes_per_sec:>12}  {msg}");
        let total = multi.add(
            ProgressBar::new(0)
                .with_style(total_unknown)
                .with_prefix("total"),
        );
        Terminal {
            multi,
            total,
            bars: vec![None; files],
            shown: Vec::new(),
            // Room for the total line and the line the shell prompt comes back on.
            most_lines: rows.saturating_sub(3).clamp(1, MOST_LINES),
            known: style(&format!(
                "{{prefix:{NAME_COLUMNS}!}} {{bar:20}} {{binary_bytes:>10}}/{{binary_total_bytes:<10}} {{binary_bytes_per_sec:>12}} ETA {{eta}}"
            ))
            .progress_chars("=> "),
            unknown: style(&format!(
                "{{prefix:{NAME_COLUMNS}!}} {{spinner}} {{binary_bytes:>10}} {{binary_bytes_per_sec:>12}}"
            )),
            total_known: style(
                "{prefix:>5} {binary_bytes:>10}/{binary_total_bytes:<10} {binary_bytes_per_sec:>12} ETA {eta}  {msg}",
            ),
        }
    }

    /// Entry `index` started an attempt; it gets a line if there is room.
    pub fn started(&mut self, index: usize, name: &str, total: Option<u64>) {
        if let Some(bar) = &self.bars[index] {
            // A retry: the bytes start over.
            bar.reset();
            return;
        }
        if self.shown.len() >= self.most_lines {
            return;
        }
        let bar = ProgressBar::new(total.unwrap_or(0)).with_prefix(name.to_string());
        match total {
            Some(_) => bar.set_style(self.known.clone()),
            None => bar.set_style(self.unknown.clone()),
        }
        self.bars[index] = Some(self.multi.insert_before(&self.total, bar));
        self.shown.push(index);
    }

    pub fn progress(&mut self, index: usize, bytes: u64, total: Option<u64>) {
        let Some(bar) = &self.bars[index] else {
            return;
        };
        if let Some(total) = total {
            if bar.length() != Some(total) {
                bar.set_length(total);
                bar.set_style(self.known.clone());
            }
        }
        bar.set_position(bytes);
    }

    /// Entry `index` is finished: its line goes (its verdict is printed by the caller).
    pub fn ended(&mut self, index: usize) {
        if let Some(bar) = self.bars[index].take() {
            bar.finish_and_clear();
            self.multi.remove(&bar);
            self.shown.retain(|&shown| shown != index);
        }
    }

    /// The total line: bytes so far, out of `length` once every file's size is known.
    pub fn total(&mut self, bytes: u64, length: Option<u64>, message: String) {
        match length {
            Some(length) if self.total.length() != Some(length) => {
                self.total.set_length(length);
                self.total.set_style(self.total_known.clone());
            }
            _ => {}
        }
        self.total.set_message(message);
        self.total.set_position(bytes);
    }

    /// Draw the lines again: what indicatif's rate limit left undrawn shows.
    pub fn refresh(&self) {
        for bar in self.shown.iter().filter_map(|&i| self.bars[i].as_ref()) {
            bar.tick();
        }
        self.total.tick();
    }

    /// Remove every line, for the summary.
    pub fn clear(&mut self) {
        for index in self.shown.drain(..) {
            if let Some(bar) = self.bars[index].take() {
                bar.finish_and_clear();
            }
        }
        self.total.finish_and_clear();
        let _ = self.multi.clear();
    }

    pub fn hidden_running(&self, running: usize) -> usize {
        running.saturating_sub(self.shown.len())
    }
}

/// `1.50 MiB`.
pub fn size(bytes: u64) -> String {
    HumanBytes(bytes).to_string()
}

/// The height of the terminal on stderr.
fn terminal_rows() -> Option<usize> {
    // SAFETY: TIOCGWINSZ fills the winsize it is given and touches nothing else.
    let mut size: libc::winsize = unsafe { std::mem::zeroed() };
    let ok = unsafe { libc::ioctl(libc::STDERR_FILENO, libc::TIOCGWINSZ, &mut size) } == 0;
    (ok && size.ws_row > 0).then_some(size.ws_row as usize)
}
