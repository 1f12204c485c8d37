//! Parsers for CEF and LEEF lines, the inverse of the encoders: header fields and
//! key=value pairs with the escaping undone. Used by round-trip tests and fuzzing
//! ("encode, then parse back, must give the original values").
//!
//! Both accept an optional prefix (a syslog header) before `CEF:`/`LEEF:` and ignore a
//! trailing `\n` or `\r\n`. Unlike many receivers they keep trailing spaces of the last
//! value.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    /// No `CEF:` / `LEEF:` marker.
    NotFound,
    /// Fewer header fields than the format requires.
    Header,
    /// The extension does not start with `key=`, or a key is empty.
    Extension(usize),
    /// A LEEF 2.0 delimiter declaration that is not a character or hex code.
    Delimiter(String),
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseError::NotFound => f.write_str("no CEF:/LEEF: marker"),
            ParseError::Header => f.write_str("incomplete header"),
            ParseError::Extension(at) => write!(f, "malformed extension at byte {at}"),
            ParseError::Delimiter(d) => write!(f, "bad LEEF delimiter {d:?}"),
        }
    }
}

impl std::error::Error for ParseError {}

/// A parsed CEF message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cef {
    pub version: String,
    pub vendor: String,
    pub product: String,
    pub device_version: String,
    pub signature: String,
    pub name: String,
    pub severity: String,
    /// Extension pairs in order, values unescaped.
    pub extensions: Vec<(String, String)>,
}

impl Cef {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.extensions.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// The value of the custom field (`csN`, `cnN`, `c6aN`, ...) whose label is `label`.
    pub fn custom(&self, label: &str) -> Option<&str> {
        self.extensions.iter().find_map(|(k, v)| {
            let key = k.strip_suffix("Label").filter(|_| v == label)?;
            self.get(key)
        })
    }
}

fn strip_eol(line: &str) -> &str {
    let l = line.strip_suffix('\n').unwrap_or(line);
    l.strip_suffix('\r').unwrap_or(l)
}

/// Parses one CEF line.
pub fn parse_cef(line: &str) -> Result<Cef, ParseError> {
    let line = strip_eol(line);
    let at = line.find("CEF:").ok_or(ParseError::NotFound)?;
    let s = &line[at + 4..];
    let mut fields: Vec<String> = Vec::with_capacity(7);
    let mut cur = String::new();
    let mut chars = s.char_indices();
    let mut ext_start = None;
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => match chars.clone().next() {
                Some((_, n @ ('|' | '\\'))) => {
                    cur.push(n);
                    chars.next();
                }
                _ => cur.push('\\'),
            },
            '|' => {
                fields.push(std::mem::take(&mut cur));
                if fields.len() == 7 {
                    ext_start = Some(i + 1);
                    break;
                }
            }
            _ => cur.push(c),
        }
    }
    let ext_start = ext_start.ok_or(ParseError::Header)?;
    let mut f = fields.into_iter();
    let mut next = || f.next().unwrap_or_default();
    Ok(Cef {
        version: next(),
        vendor: next(),
        product: next(),
        device_version: next(),
        signature: next(),
        name: next(),
        severity: next(),
        extensions: parse_extension(&s[ext_start..]).map_err(|e| match e {
            ParseError::Extension(p) => ParseError::Extension(at + 4 + ext_start + p),
            e => e,
        })?,
    })
}

/// Splits a CEF extension into unescaped pairs. A key is the run of non-space characters
/// before an unescaped `=`; the value before it ends at the space preceding the key.
pub fn parse_extension(ext: &str) -> Result<Vec<(String, String)>, ParseError> {
    let b = ext.as_bytes();
    let mut keys: Vec<(usize, usize)> = Vec::new(); // (key start, '=' position)
    let mut esc = false;
    for (i, &c) in b.iter().enumerate() {
        if esc {
            esc = false;
        } else if c == b'\\' {
            esc = true;
        } else if c == b'=' {
            let ks = b[..i].iter().rposition(|&x| x == b' ').map_or(0, |p| p + 1);
            if ks == i || keys.last().is_some_and(|&(_, e)| ks <= e) {
                return Err(ParseError::Extension(i));
            }
            keys.push((ks, i));
        }
    }
    match keys.first() {
        None if ext.trim().is_empty() => return Ok(Vec::new()),
        None => return Err(ParseError::Extension(0)),
        Some(&(ks, _)) if ks != 0 => return Err(ParseError::Extension(0)),
        _ => {}
    }
    let mut out = Vec::with_capacity(keys.len());
    for (n, &(ks, eq)) in keys.iter().enumerate() {
        let end = keys.get(n + 1).map_or(b.len(), |&(next_ks, _)| next_ks - 1);
        out.push((ext[ks..eq].to_owned(), unescape_value(&ext[eq + 1..end])));
    }
    Ok(out)
}

/// Undoes CEF extension escaping: `\\`, `\=`, `\n`, `\r` (and a lenient `\|`).
pub fn unescape_value(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    let mut chars = v.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('\\') => out.push('\\'),
            Some('=') => out.push('='),
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('|') => out.push('|'),
            Some(o) => {
                out.push('\\');
                out.push(o);
            }
            None => out.push('\\'),
        }
    }
    out
}

/// A parsed LEEF message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leef {
    pub version: String,
    pub vendor: String,
    pub product: String,
    pub product_version: String,
    pub event_id: String,
    /// Attribute delimiter (tab for 1.0).
    pub delimiter: u8,
    pub attributes: Vec<(String, String)>,
}

impl Leef {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.attributes.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

/// Parses a LEEF 2.0 delimiter declaration (`^`, `x5E`, `0x5E`; empty means tab).
pub fn parse_delimiter(d: &str) -> Result<u8, ParseError> {
    let hex = d.strip_prefix("0x").or_else(|| d.strip_prefix('x'));
    match (d.len(), hex) {
        (0, _) => Ok(b'\t'),
        (1, _) => Ok(d.as_bytes()[0]),
        (_, Some(h)) if (1..=4).contains(&h.len()) => u8::from_str_radix(h, 16)
            .ok()
            .filter(u8::is_ascii)
            .ok_or_else(|| ParseError::Delimiter(d.to_owned())),
        _ => Err(ParseError::Delimiter(d.to_owned())),
    }
}

/// Parses one LEEF 1.0 or 2.0 line.
pub fn parse_leef(line: &str) -> Result<Leef, ParseError> {
    let line = strip_eol(line);
    let at = line.find("LEEF:").ok_or(ParseError::NotFound)?;
    let mut parts = line[at + 5..].splitn(6, '|');
    let mut next = || parts.next().map(str::to_owned).ok_or(ParseError::Header);
    let version = next()?;
    let vendor = next()?;
    let product = next()?;
    let product_version = next()?;
    let event_id = next()?;
    let rest = next().unwrap_or_default();
    let (delimiter, attrs) = if version.starts_with('2') {
        let (decl, attrs) = rest.split_once('|').ok_or(ParseError::Header)?;
        (parse_delimiter(decl)?, attrs.to_owned())
    } else {
        (b'\t', rest)
    };
    let attributes = attrs
        .split(delimiter as char)
        .filter(|a| !a.is_empty())
        .map(|a| match a.split_once('=') {
            Some((k, v)) => (k.to_owned(), v.to_owned()),
            None => (a.to_owned(), String::new()),
        })
        .collect();
    Ok(Leef {
        version,
        vendor,
        product,
        product_version,
        event_id,
        delimiter,
        attributes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::encode::testutil::{alert_ocsf, event};
    use crate::encode::{encoder, EncoderOptions, Format, LeefDelimiter, LeefOptions, LeefVersion};
    use crate::event::EventKind;

    const ADVERSARIAL: &[&str] = &[
        "a|b",
        "back\\slash",
        "trailing\\",
        "\\",
        "eq=val",
        "=",
        "a = b",
        " k=v x=y",
        "new\nline",
        "cr\r\nlf\n",
        "unicode é 日本 🦀",
        "  leading",
        "trailing  ",
        " ",
        "\\n literal",
        "\\=",
        "|\\=\n^\t~",
        "CEF:0|x|y|",
        "cs1Label=url cs1=evil",
    ];

    fn encode_with(format: Format, opts: &EncoderOptions, s: &str) -> String {
        let mut o = alert_ocsf();
        o["message"] = s.into();
        o["finding_info"]["title"] = s.into();
        o["finding_info"]["uid"] = s.into();
        o["actor"]["user"]["name"] = s.into();
        o["metadata"]["tenant_uid"] = s.into();
        let mut ev = event(EventKind::Alert, "GraphAlert", "{}", Some(o));
        ev.meta.change_type = Some(s.into());
        let mut out = Vec::new();
        let r = encoder(format, opts).encode(&ev, &mut out).unwrap();
        assert_eq!(r.messages, 1);
        let line = String::from_utf8(out).unwrap();
        assert_eq!(line.matches('\n').count(), 1, "{line:?}");
        line
    }

    fn check_cef(s: &str) {
        let line = encode_with(Format::Cef, &EncoderOptions::default(), s);
        let c = parse_cef(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
        // Extension values round-trip exactly, except control characters other than CR/LF
        // (tab, NUL, ...) which CEF cannot carry and which become spaces.
        let ext: String = s
            .chars()
            .map(|ch| {
                if ch.is_control() && ch != '\n' && ch != '\r' {
                    ' '
                } else {
                    ch
                }
            })
            .collect();
        let s = ext.as_str();
        assert_eq!(c.get("msg"), Some(s), "{line}");
        assert_eq!(c.get("suser"), Some(s), "{line}");
        assert_eq!(c.custom("findingUid"), Some(s), "{line}");
        assert_eq!(c.custom("tenantId"), Some(s), "{line}");
        assert_eq!(c.custom("changeType"), Some(s), "{line}");
        assert_eq!(c.get("externalId"), (s.len() <= 40).then_some(s), "{line}");
        // Header fields cannot carry line breaks or controls: they become spaces.
        let header: String = s.chars().map(|ch| if ch.is_control() { ' ' } else { ch }).collect();
        assert_eq!(c.name, header, "{line}");
        assert_eq!(c.signature, "alert:unlikelyTravel");
        assert_eq!(c.get("cn2"), Some("200401"));
    }

    fn check_leef(s: &str, opts: &EncoderOptions, delim: u8) {
        let line = encode_with(Format::Leef, opts, s);
        let l = parse_leef(&line).unwrap();
        let replaced: String = s
            .chars()
            .map(|ch| {
                if ch.is_control() || ch as u32 == delim as u32 {
                    ' '
                } else {
                    ch
                }
            })
            .collect();
        assert_eq!(l.get("msg"), Some(replaced.as_str()), "{line:?}");
        assert_eq!(l.get("usrName"), Some(replaced.as_str()), "{line:?}");
        assert_eq!(l.get("findingId"), Some(replaced.as_str()), "{line:?}");
        assert_eq!(l.get("altered"), (replaced != s).then_some("true"), "{line:?}");
        assert_eq!(l.event_id, "AlertCreated");
        assert_eq!(l.get("ocsfType"), Some("200401"));
    }

    #[test]
    fn cef_round_trip_adversarial() {
        for s in ADVERSARIAL {
            check_cef(s);
        }
    }

    #[test]
    fn leef_round_trip_adversarial() {
        let v1 = EncoderOptions {
            leef: LeefOptions {
                version: LeefVersion::V1,
                ..Default::default()
            },
            ..Default::default()
        };
        let tilde = EncoderOptions {
            leef: LeefOptions {
                delimiter: LeefDelimiter(b'~'),
                ..Default::default()
            },
            ..Default::default()
        };
        for s in ADVERSARIAL {
            check_leef(s, &EncoderOptions::default(), b'^');
            check_leef(s, &v1, b'\t');
            check_leef(s, &tilde, b'~');
        }
    }

    #[test]
    fn round_trip_random_strings() {
        const ALPHABET: &[&str] = &[
            "a", "Z", " ", "|", "\\", "=", "\n", "\r", "^", "\t", "é", "🦀", "k=", " x=", "\\=", "\\n",
        ];
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut rnd = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..500 {
            let n = (rnd() % 12) as usize + 1;
            let s: String = (0..n)
                .map(|_| ALPHABET[(rnd() % ALPHABET.len() as u64) as usize])
                .collect();
            check_cef(&s);
            check_leef(&s, &EncoderOptions::default(), b'^');
        }
    }

    #[test]
    fn cef_reference_examples() {
        let c = parse_cef(
            "<84>1 x CEF:0|Microsoft|Defender XDR|v1.0|incident|Ransomware \\| lateral movement|8|\
             filePath=C:\\\\Users\\\\kim\\\\a\\=b.ps1 msg=First line.\\nSecond line. fname=quarterly report.xlsx\n",
        )
        .unwrap();
        assert_eq!(c.name, "Ransomware | lateral movement");
        assert_eq!(c.get("filePath"), Some(r"C:\Users\kim\a=b.ps1"));
        assert_eq!(c.get("msg"), Some("First line.\nSecond line."));
        assert_eq!(c.get("fname"), Some("quarterly report.xlsx"));
        assert_eq!(c.severity, "8");
    }

    #[test]
    fn cef_custom_labels_and_errors() {
        let c = parse_cef("CEF:0|a|b|c|d|e|1|cs1Label=url cs1=http://x/?a\\=1 cn1Label=n cn1=5").unwrap();
        assert_eq!(c.custom("url"), Some("http://x/?a=1"));
        assert_eq!(c.custom("n"), Some("5"));
        assert_eq!(parse_cef("CEF:0|a|b|c|d|e|1|").unwrap().extensions, vec![]);
        assert_eq!(parse_cef("CEF:0|a|b|c|d|e|1"), Err(ParseError::Header));
        assert!(matches!(
            parse_cef("CEF:0|a|b|c|d|e|1|junk k=v"),
            Err(ParseError::Extension(_))
        ));
        assert_eq!(parse_cef("nothing"), Err(ParseError::NotFound));
    }

    #[test]
    fn leef_versions() {
        let l = parse_leef("LEEF:1.0|Microsoft|Entra ID|1.0|SignIn|devTime=1\tsrc=10.0.0.1\n").unwrap();
        assert_eq!(l.delimiter, b'\t');
        assert_eq!(l.get("src"), Some("10.0.0.1"));
        let l = parse_leef("LEEF:2.0|M|P|1|E|x5E|a=1^b=x=y^c=").unwrap();
        assert_eq!(l.delimiter, b'^');
        assert_eq!(l.get("b"), Some("x=y"));
        assert_eq!(l.get("c"), Some(""));
        assert_eq!(parse_leef("LEEF:2.0|M|P|1|E|^|a=1").unwrap().get("a"), Some("1"));
        assert_eq!(
            parse_leef("LEEF:2.0|M|P|1|E|0x09|a=1\tb=2").unwrap().get("b"),
            Some("2")
        );
        assert!(parse_leef("LEEF:2.0|M|P|1|E|xZZ|a=1").is_err());
        assert_eq!(parse_leef("LEEF:2.0|M|P"), Err(ParseError::Header));
    }
}
