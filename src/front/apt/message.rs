//! apt's method-protocol framing: RFC 822-style messages of a `NNN Text` status line,
//! `Field: value` lines and a blank line. [`Reader`] assembles incoming lines into
//! [`Message`]s; [`Reply`] builds an outgoing one.
//!
//! The rules are apt's own (`strutl.cc` `ReadMessages` and `LookupTag`, apt 2.6.1): field
//! names are case-insensitive, a line starting with a space continues the previous value
//! (` .` stands for an empty line), and a `\r` before the newline is tolerated (the line
//! splitter already removed it).

use std::fmt::Display;

/// One message from apt: its status code, and its fields in the order they came.
#[derive(Debug, Default)]
pub(crate) struct Message {
    pub code: u16,
    fields: Vec<(String, String)>,
}

impl Message {
    /// The first value of the field `name` (case-insensitive).
    pub fn field(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every value of the field `name`, in order (`601` repeats `Config-Item`).
    pub fn fields<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.fields
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every field, in order.
    #[cfg(test)]
    pub fn all(&self) -> &[(String, String)] {
        &self.fields
    }

    /// Whether the field `name` holds one of apt's true words (`StringToBool`).
    pub fn flag(&self, name: &str) -> bool {
        self.field(name).is_some_and(is_true)
    }
}

/// apt's `StringToBool` for the true side: `yes`, `true`, `with`, `on`, `enable`, or a
/// non-zero number.
pub(crate) fn is_true(value: &str) -> bool {
    let value = value.trim();
    ["yes", "true", "with", "on", "enable"]
        .iter()
        .any(|word| value.eq_ignore_ascii_case(word))
        || value.parse::<i64>().is_ok_and(|n| n != 0)
}

/// Lines in, messages out.
#[derive(Default)]
pub(crate) struct Reader {
    lines: Vec<String>,
    /// A line of the message under way was too long to keep: the message is dropped.
    damaged: bool,
}

impl Reader {
    /// Take one line (without its newline); returns the message a blank line completes, or
    /// why it could not be read.
    pub fn line(&mut self, line: &[u8]) -> Option<Result<Message, String>> {
        if !line.is_empty() {
            self.lines.push(String::from_utf8_lossy(line).into_owned());
            return None;
        }
        if self.lines.is_empty() && !self.damaged {
            // Blank lines between messages separate nothing.
            return None;
        }
        let lines = std::mem::take(&mut self.lines);
        if std::mem::take(&mut self.damaged) {
            return Some(Err("a line of the message was too long".into()));
        }
        Some(parse(&lines))
    }

    /// A line of the message under way was too long and is lost.
    pub fn too_long(&mut self) {
        self.damaged = true;
    }
}

fn parse(lines: &[String]) -> Result<Message, String> {
    let status = &lines[0];
    let code = status
        .split(' ')
        .next()
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| format!("not a status line: {status:?}"))?;
    let mut fields: Vec<(String, String)> = Vec::new();
    for line in &lines[1..] {
        if let Some(more) = line.strip_prefix(' ') {
            let (_, value) = fields
                .last_mut()
                .ok_or_else(|| format!("a continuation line with no field before it: {line:?}"))?;
            value.push('\n');
            value.push_str(if more == "." { "" } else { more });
            continue;
        }
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| format!("not a field: {line:?}"))?;
        fields.push((name.trim().to_string(), value.trim().to_string()));
    }
    Ok(Message { code, fields })
}

/// An outgoing message, built field by field and appended whole to stdout.
pub(crate) struct Reply {
    text: String,
}

impl Reply {
    /// A message with the status line `status` (`"201 URI Done"`).
    pub fn new(status: &str) -> Reply {
        Reply {
            text: format!("{status}\n"),
        }
    }

    /// Add `name: value`. Control characters would end the field (or the message) early,
    /// so they become spaces: apt aborts on them too (`SendMessage`).
    pub fn field(mut self, name: &str, value: impl Display) -> Reply {
        let value = value.to_string();
        self.text.push_str(name);
        self.text.push_str(": ");
        self.text
            .extend(value.chars().map(|c| if c.is_control() { ' ' } else { c }));
        self.text.push('\n');
        self
    }

    /// Add the field when there is a value.
    pub fn maybe(self, name: &str, value: Option<impl Display>) -> Reply {
        match value {
            Some(value) => self.field(name, value),
            None => self,
        }
    }

    /// End the message with its blank line and append it to `out`.
    pub fn send(self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.text.as_bytes());
        out.push(b'\n');
    }
}
