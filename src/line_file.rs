//! Appending lines to a file across crashes: a process killed in the middle of a write
//! leaves the front of a line at the end of the file; it is cut off when the file is opened
//! again, so the next line does not join it. Used by the file sink and the dead-letter file.

use std::io::Write;

/// Opens `path` for appending lines (created when missing). A file that does not end with a
/// line break holds the front of a line whose write was cut short (the process was killed
/// mid-write): that write was never acknowledged and is made again, so the fragment after
/// the last line break is cut off instead of being joined to the next line. A file without
/// any line break is not ours to cut: a line break is added before the first line.
pub(crate) fn open_for_lines(path: &std::path::Path) -> std::io::Result<std::fs::File> {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .read(true)
        .append(true)
        .open(path)?;
    let len = f.metadata()?.len();
    if len == 0 {
        return Ok(f);
    }
    match last_line_end(&mut f, len)? {
        end if end == len => {}
        0 => {
            tracing::warn!(file = %path.display(), "file does not end with a line break; starting a new line");
            f.write_all(b"\n")?;
        }
        end => {
            tracing::warn!(
                file = %path.display(),
                bytes = len - end,
                "cutting off a partial last line left by a write cut short (its events are sent again)"
            );
            f.set_len(end)?;
        }
    }
    Ok(f)
}

/// The length of the file up to and including its last line break (0 when it has none).
fn last_line_end(f: &mut std::fs::File, len: u64) -> std::io::Result<u64> {
    use std::io::{Read, Seek, SeekFrom};
    let mut buf = vec![0u8; 64 * 1024];
    let mut end = len;
    // The usual case first: the last byte is a line break.
    let mut chunk = 1;
    while end > 0 {
        let start = end.saturating_sub(chunk);
        let n = (end - start) as usize;
        f.seek(SeekFrom::Start(start))?;
        f.read_exact(&mut buf[..n])?;
        if let Some(i) = buf[..n].iter().rposition(|&b| b == b'\n') {
            return Ok(start + i as u64 + 1);
        }
        end = start;
        chunk = buf.len() as u64;
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reopened(content: &[u8]) -> Vec<u8> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.ndjson");
        std::fs::write(&path, content).unwrap();
        let mut f = open_for_lines(&path).unwrap();
        f.write_all(b"{\"next\":1}\n").unwrap();
        drop(f);
        std::fs::read(&path).unwrap()
    }

    #[test]
    fn a_line_cut_short_by_a_kill_is_removed_before_the_next_lines() {
        assert_eq!(
            reopened(b"{\"a\":1}\n{\"b\":2}\n{\"c\""),
            b"{\"a\":1}\n{\"b\":2}\n{\"next\":1}\n"
        );
        // A fragment longer than one read back.
        let mut long = b"{\"a\":1}\n".to_vec();
        long.extend(std::iter::repeat_n(b'x', 200_000));
        assert_eq!(reopened(&long), b"{\"a\":1}\n{\"next\":1}\n");
    }

    #[test]
    fn whole_lines_empty_files_and_foreign_text_are_kept() {
        assert_eq!(reopened(b"{\"a\":1}\n"), b"{\"a\":1}\n{\"next\":1}\n");
        assert_eq!(reopened(b""), b"{\"next\":1}\n");
        assert_eq!(reopened(b"no line break"), b"no line break\n{\"next\":1}\n");
    }
}
