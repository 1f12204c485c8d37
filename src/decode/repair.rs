//! Repairs for malformed Event Hub bodies seen in the wild: raw control characters inside
//! strings and single-quoted pseudo-JSON. Each repair is applied only for the error found.

/// Escape raw control characters (U+0000..U+001F) that appear inside JSON strings.
/// Outside strings they are whitespace or garbage and are left for the parser to judge.
pub fn escape_control_chars_in_strings(input: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(input.len() + 16);
    let mut in_string = false;
    let mut escaped = false;
    let mut changed = false;
    for &b in input {
        if in_string {
            if escaped {
                escaped = false;
                out.push(b);
                continue;
            }
            match b {
                b'\\' => {
                    escaped = true;
                    out.push(b);
                }
                b'"' => {
                    in_string = false;
                    out.push(b);
                }
                b'\n' => {
                    out.extend_from_slice(b"\\n");
                    changed = true;
                }
                b'\r' => {
                    out.extend_from_slice(b"\\r");
                    changed = true;
                }
                b'\t' => {
                    out.extend_from_slice(b"\\t");
                    changed = true;
                }
                0..=0x1f => {
                    out.extend_from_slice(format!("\\u{b:04x}").as_bytes());
                    changed = true;
                }
                _ => out.push(b),
            }
        } else {
            if b == b'"' {
                in_string = true;
            }
            out.push(b);
        }
    }
    changed.then_some(out)
}

/// Turn single-quoted strings into double-quoted ones, outside double-quoted strings.
/// A `"` inside a single-quoted string is escaped; `\'` becomes `'`. Double-quoted
/// strings (which may contain apostrophes) are copied untouched.
pub fn single_to_double_quotes(input: &[u8]) -> Option<Vec<u8>> {
    #[derive(PartialEq)]
    enum St {
        Out,
        Double,
        Single,
    }
    let mut out = Vec::with_capacity(input.len() + 16);
    let mut st = St::Out;
    let mut escaped = false;
    let mut changed = false;
    for &b in input {
        match st {
            St::Out => match b {
                b'"' => {
                    st = St::Double;
                    out.push(b);
                }
                b'\'' => {
                    st = St::Single;
                    out.push(b'"');
                    changed = true;
                }
                _ => out.push(b),
            },
            St::Double => {
                if escaped {
                    escaped = false;
                } else if b == b'\\' {
                    escaped = true;
                } else if b == b'"' {
                    st = St::Out;
                }
                out.push(b);
            }
            St::Single => {
                if escaped {
                    escaped = false;
                    if b == b'\'' {
                        out.pop(); // drop the backslash: \' is just '
                    }
                    out.push(b);
                } else if b == b'\\' {
                    escaped = true;
                    out.push(b);
                } else if b == b'\'' {
                    st = St::Out;
                    out.push(b'"');
                } else if b == b'"' {
                    out.extend_from_slice(b"\\\"");
                } else {
                    out.push(b);
                }
            }
        }
    }
    (changed && st == St::Out).then_some(out)
}

/// Remove whitespace outside strings (pretty-printed records become one line).
pub fn compact_json(input: &[u8]) -> Vec<u8> {
    crate::json_text::compact(input).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_chars_only_inside_strings() {
        let input = b"{\"a\": \"x\ny\",\n \"b\": 1}";
        let out = escape_control_chars_in_strings(input).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["a"], "x\ny");
        assert!(escape_control_chars_in_strings(b"{\"a\": 1}").is_none());
    }

    #[test]
    fn single_quotes_keep_apostrophes_in_double_quoted_strings() {
        let input = br#"{"note": "it's fine", "p": {'k': 'say "hi"', 'b': false, 'e': 'it\'s'}}"#;
        let out = single_to_double_quotes(input).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["note"], "it's fine");
        assert_eq!(v["p"]["k"], "say \"hi\"");
        assert_eq!(v["p"]["b"], false);
        assert_eq!(v["p"]["e"], "it's");
    }

    #[test]
    fn compact_keeps_string_spaces() {
        let out = compact_json(b"{\n  \"a b\" : [ 1, 2 ]\n}");
        assert_eq!(out, b"{\"a b\":[1,2]}");
    }
}
