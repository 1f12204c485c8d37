//! Whether a replayed file is NDJSON (one JSON value per line, read line by line, followed)
//! or one whole document (a pretty-printed body or page, or gzip), decided from its start.

use std::path::Path;

use tokio::io::AsyncReadExt;

/// Whether a file is one JSON document (a pretty-printed body or page) rather than NDJSON:
/// its first line is not a complete JSON value on its own.
pub(super) async fn is_whole_document(path: &Path) -> std::io::Result<bool> {
    let mut f = tokio::fs::File::open(path).await?;
    let mut buf = vec![0u8; 64 * 1024];
    let mut len = 0;
    loop {
        let n = f.read(&mut buf[len..]).await?;
        if n == 0 {
            break;
        }
        len += n;
        if buf[..len].contains(&b'\n') || len == buf.len() {
            break;
        }
    }
    let first = match buf[..len].iter().position(|&b| b == b'\n') {
        Some(p) => &buf[..p],
        None if len < buf.len() => &buf[..len],
        // A first line longer than the probe: NDJSON of large bodies (an Event Hub body of
        // a few dozen sign-ins is past 64 KiB) when its first value ends at a line end.
        None if buf.starts_with(&[0x1f, 0x8b]) => return Ok(true),
        None => {
            let owned = path.to_owned();
            let ndjson = tokio::task::spawn_blocking(move || first_value_ends_a_line(&owned))
                .await
                .map_err(std::io::Error::other)??;
            return Ok(!ndjson);
        }
    };
    if first.starts_with(&[0x1f, 0x8b]) {
        return Ok(true);
    }
    let first = first.trim_ascii();
    Ok(!first.is_empty() && serde_json::from_slice::<serde::de::IgnoredAny>(first).is_err())
}

/// Whether the file's first JSON value is followed, after blanks, by a line end: it is read
/// as a stream (nothing is kept), so a first line of any length costs no memory.
fn first_value_ends_a_line(path: &Path) -> std::io::Result<bool> {
    use std::io::Read;
    let mut r = std::io::BufReader::with_capacity(64 * 1024, std::fs::File::open(path)?);
    let mut de = serde_json::Deserializer::from_reader(&mut r);
    if <serde::de::IgnoredAny as serde::Deserialize>::deserialize(&mut de).is_err() {
        return Ok(false);
    }
    drop(de);
    let mut b = [0u8; 1];
    loop {
        if r.read(&mut b)? == 0 {
            return Ok(false);
        }
        match b[0] {
            b' ' | b'\t' | b'\r' => {}
            c => return Ok(c == b'\n'),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A body of `n` records (each ~1 KB), on one line.
    fn body(n: usize) -> String {
        let recs: Vec<String> = (0..n)
            .map(|i| {
                format!(
                    r#"{{"time":"2026-11-27T09:14:05Z","category":"SignInLogs","id":"{i}","pad":"{}"}}"#,
                    "x".repeat(1000)
                )
            })
            .collect();
        format!("{{\"records\":[{}]}}", recs.join(","))
    }

    #[tokio::test]
    async fn a_first_line_longer_than_the_probe_is_still_ndjson() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        let big = body(100);
        assert!(big.len() > 64 * 1024);
        std::fs::write(&p, format!("{big}\n{big}\r\n{}\n", body(2))).unwrap();
        assert!(!is_whole_document(&p).await.unwrap(), "NDJSON of large bodies");
        std::fs::write(&p, &big).unwrap();
        assert!(is_whole_document(&p).await.unwrap(), "one compact document");
        std::fs::write(&p, format!("{big} {big}")).unwrap();
        assert!(is_whole_document(&p).await.unwrap(), "not one value per line");
        std::fs::write(&p, format!("{}\n", &big[..big.len() - 1])).unwrap();
        assert!(
            is_whole_document(&p).await.unwrap(),
            "a broken first line: one unit, quarantined"
        );
        std::fs::write(&p, "{\n  \"records\": []\n}\n").unwrap();
        assert!(is_whole_document(&p).await.unwrap(), "pretty-printed");
    }
}
