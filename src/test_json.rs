//! Test support shared by the JSON readers' tests (the decoding scan, the record parse):
//! the sample files, and a small deterministic generator of JSON documents whose strings
//! carry escapes, surrogate pairs, multi-byte characters and structural characters.

use std::path::PathBuf;

/// The `.json` files of `tests/data/<dir>`, with their paths.
pub(crate) fn sample_files(dir: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = format!("{}/tests/data/{dir}", env!("CARGO_MANIFEST_DIR"));
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "json") {
            let bytes = std::fs::read(&path).unwrap();
            out.push((path, bytes));
        }
    }
    out
}

/// A deterministic generator (xorshift) of JSON text.
pub(crate) struct Gen(pub u64);

impl Gen {
    pub fn pick(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }

    /// A string of up to 40 pieces: plain letters, escapes (`\"`, `\\`, `\n`, `\u00e9`, a
    /// surrogate pair), `é`, spaces and structural characters.
    pub fn string(&mut self, out: &mut String) {
        const PIECES: [&str; 10] = [
            "a",
            "xyz",
            "\\\"",
            "\\\\",
            "\\u00e9",
            "\\ud83d\\ude00",
            "é",
            " ",
            "{[,:]}",
            "\\n",
        ];
        out.push('"');
        for _ in 0..self.pick(40) {
            out.push_str(PIECES[self.pick(PIECES.len() as u64) as usize]);
        }
        out.push('"');
    }

    /// Whitespace between tokens, now and then.
    pub fn ws(&mut self, out: &mut String) {
        for _ in 0..self.pick(4).saturating_sub(2) {
            out.push([' ', '\n', '\t', '\r'][self.pick(4) as usize]);
        }
    }

    /// A value nested `depth` deep: strings, numbers at the edges, literals, objects (keys
    /// with escapes too) and arrays; containers stop after depth 4.
    pub fn value(&mut self, out: &mut String, depth: u32) {
        const NUMBERS: [&str; 8] = ["0", "-12", "3.25", "1e9", "-0", "-0.5E-3", "18446744073709551616", "42"];
        self.ws(out);
        match self.pick(if depth > 4 { 6 } else { 9 }) {
            0 | 1 => self.string(out),
            2 => out.push_str(NUMBERS[self.pick(NUMBERS.len() as u64) as usize]),
            3 => out.push_str(["true", "false", "null"][self.pick(3) as usize]),
            4 | 5 => out.push_str("\"plain\""),
            6 | 7 => {
                out.push('{');
                for i in 0..self.pick(6) {
                    if i > 0 {
                        out.push(',');
                    }
                    self.ws(out);
                    self.string(out);
                    self.ws(out);
                    out.push(':');
                    self.value(out, depth + 1);
                }
                self.ws(out);
                out.push('}');
            }
            _ => {
                out.push('[');
                for i in 0..self.pick(6) {
                    if i > 0 {
                        out.push(',');
                    }
                    self.value(out, depth + 1);
                }
                self.ws(out);
                out.push(']');
            }
        }
        self.ws(out);
    }

    /// `text` with the byte at a random position replaced by one of `bytes`.
    pub fn change(&mut self, text: &[u8], bytes: &[u8]) -> Vec<u8> {
        let mut m = text.to_vec();
        let at = self.pick(m.len() as u64) as usize;
        m[at] = bytes[self.pick(bytes.len() as u64) as usize];
        m
    }
}
