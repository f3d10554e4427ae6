//! Traffic (SPEC INT-3): requests in the last 24 hours from a domain's access
//! logs in the common or combined format, reading the live log and its
//! rotations (`access.log.1`, `access.log.2.gz` …). A rotation last written
//! before the window is not opened.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

/// How many rotations are looked at (logrotate's usual `rotate 14`).
const ROTATIONS: u32 = 14;

/// A log and its rotations that exist, newest first.
fn rotations(base: &Path) -> Vec<PathBuf> {
    let mut out = vec![base.to_path_buf()];
    for n in 1..=ROTATIONS {
        for suffix in [format!(".{n}"), format!(".{n}.gz")] {
            let mut p = base.as_os_str().to_owned();
            p.push(&suffix);
            out.push(PathBuf::from(p));
        }
    }
    out.retain(|p| p.is_file());
    out
}

const MONTHS: [&[u8; 3]; 12] = [
    b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec",
];

fn num(b: &[u8]) -> Option<i64> {
    if b.is_empty() || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(b.iter().fold(0, |n, d| n * 10 + (d - b'0') as i64))
}

/// Unix seconds of a log line's `[10/Oct/2000:13:55:36 -0700]`.
pub fn line_time(line: &[u8]) -> Option<i64> {
    let start = line.iter().position(|&c| c == b'[')? + 1;
    let t = line.get(start..start + 26)?;
    // dd/Mon/yyyy:HH:MM:SS +zzzz
    if t[2] != b'/' || t[6] != b'/' || t[11] != b':' || t[20] != b' ' {
        return None;
    }
    let day = num(&t[0..2])?;
    let month = MONTHS.iter().position(|m| &t[3..6] == *m)? as u32 + 1;
    let year = num(&t[7..11])?;
    let (h, m, s) = (num(&t[12..14])?, num(&t[15..17])?, num(&t[18..20])?);
    let sign = match t[21] {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let zone = sign * (num(&t[22..24])? * 3600 + num(&t[24..26])? * 60);
    let date = chrono::NaiveDate::from_ymd_opt(year as i32, month, day as u32)?;
    let midnight = date.and_hms_opt(0, 0, 0)?.and_utc().timestamp();
    Some(midnight + h * 3600 + m * 60 + s - zone)
}

fn count_in(reader: impl Read, from: i64, to: i64) -> std::io::Result<u64> {
    let mut r = BufReader::with_capacity(256 << 10, reader);
    let mut line = Vec::with_capacity(512);
    let mut n = 0;
    loop {
        line.clear();
        if r.read_until(b'\n', &mut line)? == 0 {
            return Ok(n);
        }
        if line_time(&line).is_some_and(|t| t >= from && t <= to) {
            n += 1;
        }
    }
}

/// Requests in `[now - 24 h, now]` over these logs and their rotations;
/// None when none of them exists (no traffic signal, rather than zero).
pub fn requests_last_day(logs: &[PathBuf], now: i64) -> Option<u64> {
    let from = now - 86_400;
    let mut found = false;
    let mut total = 0;
    let mut seen = std::collections::HashSet::new();
    for base in logs {
        for file in rotations(base) {
            let Ok(meta) = std::fs::metadata(&file) else {
                continue;
            };
            // The same file named twice (a symlink, two vhosts) counts once.
            use std::os::unix::fs::MetadataExt;
            if !seen.insert((meta.dev(), meta.ino())) {
                continue;
            }
            found = true;
            let mtime = meta
                .modified()
                .ok()
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map_or(i64::MAX, |d| d.as_secs() as i64);
            if mtime < from {
                continue; // nothing in it is recent enough
            }
            let counted = std::fs::File::open(&file).and_then(|f| {
                if file.extension().is_some_and(|e| e == "gz") {
                    count_in(flate2::read::MultiGzDecoder::new(f), from, now)
                } else {
                    count_in(f, from, now)
                }
            });
            match counted {
                Ok(n) => total += n,
                Err(e) => {
                    tracing::warn!(log = %file.display(), error = %e, "access log unreadable")
                }
            }
        }
    }
    found.then_some(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn line(t: &str) -> String {
        format!("203.0.113.9 - - [{t}] \"GET / HTTP/1.1\" 200 512 \"-\" \"curl/8\"\n")
    }

    #[test]
    fn timestamps_with_zones() {
        assert_eq!(
            line_time(line("01/Jan/2024:00:00:00 +0000").as_bytes()),
            Some(1_704_067_200)
        );
        assert_eq!(
            line_time(line("31/Dec/2023:17:00:00 -0700").as_bytes()),
            Some(1_704_067_200)
        );
        assert_eq!(
            line_time(line("01/Jan/2024:05:30:00 +0530").as_bytes()),
            Some(1_704_067_200)
        );
        assert_eq!(line_time(b"garbage [not a time]"), None);
        assert_eq!(
            line_time(line("32/Jan/2024:00:00:00 +0000").as_bytes()),
            None
        );
    }

    #[test]
    fn live_rotated_and_gzipped_logs_count_within_the_day() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("access.log");
        let now = 1_704_067_200 + 86_400; // 2024-01-02 00:00 UTC
        std::fs::write(
            &base,
            line("01/Jan/2024:23:00:00 +0000")
                + &line("01/Jan/2024:12:00:00 +0000")
                + "torn line\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("access.log.1"),
            line("01/Jan/2024:00:00:01 +0000") + &line("31/Dec/2023:23:59:59 +0000"),
        )
        .unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(
            (line("01/Jan/2024:06:00:00 +0000") + &line("30/Dec/2023:06:00:00 +0000")).as_bytes(),
        )
        .unwrap();
        std::fs::write(dir.path().join("access.log.2.gz"), gz.finish().unwrap()).unwrap();
        // A rotation last written before the window is skipped unread.
        let old = dir.path().join("access.log.3.gz");
        std::fs::write(&old, b"not even gzip").unwrap();
        filetime::set_file_mtime(
            &old,
            filetime::FileTime::from_unix_time(now - 3 * 86_400, 0),
        )
        .unwrap();
        let logs = [base.clone(), base];
        assert_eq!(requests_last_day(&logs, now), Some(4));
        assert_eq!(requests_last_day(&[dir.path().join("none.log")], now), None);
    }
}
