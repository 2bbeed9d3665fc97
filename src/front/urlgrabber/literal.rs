//! urlgrabber's value format on the wire (`_dumps` / `_loads` in `grabber.py`): the value
//! after `key=` in a request line. Decoded exactly as `_loads` does, because the parent
//! writes with `_dumps` and the stock helper reads with `_loads`; anything `_loads` accepts
//! means here what it means there.

/// A decoded value (Python's `None`, `bool`, `int`, `float`, `str`, `tuple`, `list`).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Tuple(Vec<Value>),
    List(Vec<Value>),
}

/// Decode one value as `_loads` does: items are split on `, ( ) [ ]` (which `_dumps`
/// %-escapes inside strings), each item is `None`/`True`/`False`, an int, a float, a
/// `'…'` string with `%xx` escapes, or else the bare text; a one-element top level is
/// unwrapped, any other top level is a list.
pub(crate) fn loads(s: &str) -> Result<Value, String> {
    // The open containers: each one's items so far and whether it is a tuple.
    let mut open: Vec<(Vec<Value>, bool)> = Vec::new();
    let mut items = Vec::new();
    let mut start = 0;
    for (j, c) in s.char_indices() {
        if !matches!(c, ',' | '(' | ')' | '[' | ']') {
            continue;
        }
        // `_loads` only takes an item when it is not empty: `(1,)` is a one-tuple.
        if j > start && c != '(' && c != '[' {
            items.push(decode(&s[start..j])?);
        }
        match c {
            '(' | '[' => open.push((std::mem::take(&mut items), c == '(')),
            ')' | ']' => {
                // `_loads` pairs any closer with any opener; it only fails on a closer
                // with nothing open.
                let (outer, _) = open
                    .pop()
                    .ok_or_else(|| format!("unbalanced `{c}` in {s:?}"))?;
                let inner = std::mem::replace(&mut items, outer);
                items.push(if c == ')' {
                    Value::Tuple(inner)
                } else {
                    Value::List(inner)
                });
            }
            _ => {}
        }
        start = j + 1;
    }
    if start < s.len() {
        items.push(decode(&s[start..])?);
    }
    if !open.is_empty() {
        return Err(format!("unclosed bracket in {s:?}"));
    }
    Ok(match items.len() {
        1 => items.pop().expect("one item"),
        _ => Value::List(items),
    })
}

/// One item: the constants, then `int(v)`, then `float(v)`, then a quoted string, else the
/// text as it is.
fn decode(v: &str) -> Result<Value, String> {
    match v {
        "None" => return Ok(Value::None),
        "True" => return Ok(Value::Bool(true)),
        "False" => return Ok(Value::Bool(false)),
        _ => {}
    }
    if let Some(int) = python_int(v) {
        return Ok(Value::Int(int));
    }
    if let Some(float) = python_float(v) {
        return Ok(Value::Float(float));
    }
    if v.len() >= 2 && v.starts_with('\'') && v.ends_with('\'') {
        return unquote(&v[1..v.len() - 1]).map(Value::Str);
    }
    Ok(Value::Str(v.to_string()))
}

/// `%xx` → the character with that code (`chr(int(xx, 16))`: a code point, not a byte;
/// `_quoter` only ever escapes ASCII).
fn unquote(quoted: &str) -> Result<String, String> {
    let mut out = String::with_capacity(quoted.len());
    let mut rest = quoted;
    while let Some(at) = rest.find('%') {
        out.push_str(&rest[..at]);
        let hex = rest
            .get(at + 1..at + 3)
            .filter(|h| h.bytes().all(|b| b.is_ascii_hexdigit()))
            .ok_or_else(|| format!("bad %-escape in {quoted:?}"))?;
        let code = u8::from_str_radix(hex, 16).expect("two hex digits");
        out.push(char::from(code));
        rest = &rest[at + 3..];
    }
    out.push_str(rest);
    Ok(out)
}

/// What Python's `int(v)` accepts (ASCII only): surrounding whitespace, a sign, digits with
/// single underscores between them. Values beyond `i64` are left to `float`, as the parent
/// never sends them.
fn python_int(v: &str) -> Option<i64> {
    let t = v.trim();
    let digits = t.strip_prefix(['+', '-']).unwrap_or(t);
    if !well_formed_digits(digits) {
        return None;
    }
    t.replace('_', "").parse().ok()
}

/// What Python's `float(v)` accepts: decimal and exponent forms, `inf`, `infinity`, `nan`
/// in any case, with a sign, surrounding whitespace and underscores between digits.
fn python_float(v: &str) -> Option<f64> {
    let t = v.trim();
    let bytes = t.as_bytes();
    let underscores_ok = bytes.iter().enumerate().all(|(i, &b)| {
        b != b'_'
            || (i > 0
                && i + 1 < bytes.len()
                && bytes[i - 1].is_ascii_digit()
                && bytes[i + 1].is_ascii_digit())
    });
    if !underscores_ok || t.is_empty() {
        return None;
    }
    t.replace('_', "").parse().ok()
}

fn well_formed_digits(digits: &str) -> bool {
    !digits.is_empty()
        && !digits.starts_with('_')
        && !digits.ends_with('_')
        && !digits.contains("__")
        && digits.bytes().all(|b| b.is_ascii_digit() || b == b'_')
}
