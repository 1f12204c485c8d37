//! Little-endian binary helpers for the disk buffer's record payloads: fixed-width integers,
//! length-prefixed bytes and strings, and `serde_json::Value` written exactly (floats as
//! their bits, object members in their map order), so a value read back is equal bit for bit.

use serde_json::{Map, Number, Value};

/// Why a payload could not be read back.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("payload ends early (wanted {wanted} more bytes at {at})")]
    Short { wanted: usize, at: usize },
    #[error("invalid payload: {0}")]
    Invalid(&'static str),
}

/// Nesting limit when reading values (a corrupt record must not overflow the stack).
const MAX_DEPTH: u32 = 256;

pub fn put_u8(out: &mut Vec<u8>, v: u8) {
    out.push(v);
}
pub fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}
pub fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}
pub fn put_i64(out: &mut Vec<u8>, v: i64) {
    out.extend_from_slice(&v.to_le_bytes());
}
pub fn put_bytes(out: &mut Vec<u8>, v: &[u8]) {
    put_u32(out, v.len() as u32);
    out.extend_from_slice(v);
}
pub fn put_str(out: &mut Vec<u8>, v: &str) {
    put_bytes(out, v.as_bytes());
}
pub fn put_opt_str(out: &mut Vec<u8>, v: Option<&str>) {
    match v {
        Some(s) => {
            out.push(1);
            put_str(out, s);
        }
        None => out.push(0),
    }
}
pub fn put_opt_i64(out: &mut Vec<u8>, v: Option<i64>) {
    match v {
        Some(x) => {
            out.push(1);
            put_i64(out, x);
        }
        None => out.push(0),
    }
}

/// A JSON value: a tag byte, then its content.
pub fn put_value(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::Null => out.push(0),
        Value::Bool(b) => out.push(if *b { 2 } else { 1 }),
        Value::Number(n) => {
            if let Some(u) = n.as_u64() {
                out.push(3);
                put_u64(out, u);
            } else if let Some(i) = n.as_i64() {
                out.push(4);
                put_i64(out, i);
            } else {
                out.push(5);
                put_u64(out, n.as_f64().unwrap_or(0.0).to_bits());
            }
        }
        Value::String(s) => {
            out.push(6);
            put_str(out, s);
        }
        Value::Array(a) => {
            out.push(7);
            put_u32(out, a.len() as u32);
            a.iter().for_each(|x| put_value(out, x));
        }
        Value::Object(m) => {
            out.push(8);
            put_u32(out, m.len() as u32);
            for (k, x) in m {
                put_str(out, k);
                put_value(out, x);
            }
        }
    }
}

/// Reads what the `put_*` functions wrote, in the same order.
pub struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Reader<'a> {
        Reader { buf, at: 0 }
    }

    pub fn is_empty(&self) -> bool {
        self.at >= self.buf.len()
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|e| *e <= self.buf.len())
            .ok_or(WireError::Short { wanted: n, at: self.at })?;
        let s = &self.buf[self.at..end];
        self.at = end;
        Ok(s)
    }

    pub fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.take(1)?[0])
    }
    pub fn u32(&mut self) -> Result<u32, WireError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    pub fn u64(&mut self) -> Result<u64, WireError> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(a))
    }
    pub fn i64(&mut self) -> Result<i64, WireError> {
        Ok(self.u64()? as i64)
    }
    pub fn bytes(&mut self) -> Result<&'a [u8], WireError> {
        let n = self.u32()? as usize;
        self.take(n)
    }
    pub fn str(&mut self) -> Result<&'a str, WireError> {
        std::str::from_utf8(self.bytes()?).map_err(|_| WireError::Invalid("string is not UTF-8"))
    }
    pub fn opt_str(&mut self) -> Result<Option<&'a str>, WireError> {
        match self.u8()? {
            0 => Ok(None),
            1 => self.str().map(Some),
            _ => Err(WireError::Invalid("option tag")),
        }
    }
    pub fn opt_i64(&mut self) -> Result<Option<i64>, WireError> {
        match self.u8()? {
            0 => Ok(None),
            1 => self.i64().map(Some),
            _ => Err(WireError::Invalid("option tag")),
        }
    }
    pub fn bool(&mut self) -> Result<bool, WireError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(WireError::Invalid("bool")),
        }
    }

    pub fn value(&mut self) -> Result<Value, WireError> {
        self.value_at(0)
    }

    fn value_at(&mut self, depth: u32) -> Result<Value, WireError> {
        if depth > MAX_DEPTH {
            return Err(WireError::Invalid("value nested too deep"));
        }
        Ok(match self.u8()? {
            0 => Value::Null,
            1 => Value::Bool(false),
            2 => Value::Bool(true),
            3 => Value::from(self.u64()?),
            4 => Value::from(self.i64()?),
            5 => Value::Number(
                Number::from_f64(f64::from_bits(self.u64()?)).ok_or(WireError::Invalid("float is not finite"))?,
            ),
            6 => Value::String(self.str()?.to_owned()),
            7 => {
                let n = self.u32()? as usize;
                let mut a = Vec::with_capacity(n.min(1024));
                for _ in 0..n {
                    a.push(self.value_at(depth + 1)?);
                }
                Value::Array(a)
            }
            8 => {
                let n = self.u32()? as usize;
                let mut m = Map::new();
                for _ in 0..n {
                    let k = self.str()?.to_owned();
                    m.insert(k, self.value_at(depth + 1)?);
                }
                Value::Object(m)
            }
            _ => return Err(WireError::Invalid("value tag")),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_exactly() {
        let v = serde_json::json!({
            "f": 0.1, "g": 1e300, "neg": -5, "big": u64::MAX, "s": "é\"\n",
            "a": [null, true, false, {"z": 1, "a": [2.5]}], "o": {}
        });
        let mut out = Vec::new();
        put_value(&mut out, &v);
        let back = Reader::new(&out).value().unwrap();
        assert_eq!(back, v);
        assert_eq!(
            serde_json::to_string(&back).unwrap(),
            serde_json::to_string(&v).unwrap()
        );
        assert!(Reader::new(&out[..out.len() - 1]).value().is_err(), "truncated");
    }
}
