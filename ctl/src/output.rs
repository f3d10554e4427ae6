//! Formatting helpers shared by commands.

pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// Text from agents or a repository, made safe for a terminal: control
/// characters (escape sequences could rewrite the screen or the title) are
/// shown escaped, as `\u{1b}`.
pub fn safe(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.chars().any(char::is_control) {
        return s.into();
    }
    s.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_unicode().to_string()
            } else {
                c.to_string()
            }
        })
        .collect::<String>()
        .into()
}

const TICK: std::time::Duration = std::time::Duration::from_millis(100);

/// Runs `work` on a thread while a spinner on stderr shows `msg()`.
pub fn with_spinner<T: Send>(msg: impl Fn() -> String, work: impl FnOnce() -> T + Send) -> T {
    use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
    use std::sync::mpsc::RecvTimeoutError;
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    bar.set_style(ProgressStyle::with_template("{spinner} {elapsed} {msg}").unwrap());
    let result = std::thread::scope(|s| {
        let (done, finished) = std::sync::mpsc::channel();
        let work = s.spawn(move || {
            let result = work();
            let _ = done.send(());
            result
        });
        // Wakes at once when the work ends (a sleep between ticks would add
        // up to a tick's length to every command).
        while let Err(RecvTimeoutError::Timeout) = finished.recv_timeout(TICK) {
            bar.set_message(msg());
            bar.tick();
        }
        work.join().expect("worker thread panicked")
    });
    bar.finish_and_clear();
    result
}

/// The host name recorded in snapshots unless one is given.
pub fn host_name(given: Option<&str>) -> String {
    given.map(str::to_string).unwrap_or_else(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|s| s.trim().to_string())
            .unwrap_or_default()
    })
}

pub fn json<T: serde::Serialize>(v: &T) -> anyhow::Result<()> {
    json_to(&mut std::io::stdout().lock(), v)
}

fn json_to<T: serde::Serialize>(out: &mut impl std::io::Write, v: &T) -> anyhow::Result<()> {
    serde_json::to_writer_pretty(&mut *out, v)?;
    writeln!(out)?;
    Ok(())
}

/// Whether the error is only that whoever read standard output stopped
/// reading (`cairnctl … | grep -q x`, `| head`): not a failure of cairnctl.
pub fn is_broken_pipe(err: &anyhow::Error) -> bool {
    use std::io::ErrorKind::BrokenPipe;
    err.chain().any(|c| {
        c.downcast_ref::<std::io::Error>().is_some_and(|e| e.kind() == BrokenPipe)
            // serde_json's source() skips its io::Error, so ask it directly.
            || c.downcast_ref::<serde_json::Error>().is_some_and(|e| e.io_error_kind() == Some(BrokenPipe))
            || matches!(c.downcast_ref::<cairn_repo::Error>(), Some(cairn_repo::Error::Io { source, .. }) if source.kind() == BrokenPipe)
    })
}

#[cfg(test)]
mod tests {
    /// A reader that quit early (`| grep -q`) must not turn JSON output
    /// into a failure.
    #[test]
    fn json_to_a_closed_pipe_is_a_broken_pipe() {
        struct Closed;
        impl std::io::Write for Closed {
            fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
                Err(std::io::ErrorKind::BrokenPipe.into())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let err =
            super::json_to(&mut Closed, &serde_json::json!({"snapshots": ["a", "b"]})).unwrap_err();
        assert!(super::is_broken_pipe(&err), "{err:#}");
        let other = anyhow::Error::from(std::io::Error::from(std::io::ErrorKind::PermissionDenied));
        assert!(!super::is_broken_pipe(&other));
    }

    #[test]
    fn bytes_are_human() {
        assert_eq!(super::bytes(5), "5 B");
        assert_eq!(super::bytes(1536), "1.5 KiB");
        assert_eq!(super::bytes(3 * 1024 * 1024 * 1024), "3.0 GiB");
    }

    #[test]
    fn control_characters_never_reach_the_terminal() {
        assert_eq!(super::safe("plain.txt"), "plain.txt");
        let shown = super::safe("a\x1b]0;pwned\x07b\nc");
        assert!(!shown.chars().any(char::is_control), "{shown}");
        assert_eq!(shown, "a\\u{1b}]0;pwned\\u{7}b\\u{a}c");
    }
}

/// A moment as an operator writes it: `2026-11-30 14:05[:30]` in this
/// machine's time zone (TZ), RFC 3339 (`2026-11-30T14:05:00Z`), or `@UNIX`.
pub fn moment(s: &str) -> Result<i64, String> {
    use chrono::TimeZone;
    let s = s.trim();
    if let Some(n) = s.strip_prefix('@') {
        return n
            .parse()
            .map_err(|_| format!("{s:?}: @ takes unix seconds"));
    }
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Ok(t.timestamp());
    }
    for f in [
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%d %H:%M",
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%dT%H:%M",
    ] {
        if let Ok(naive) = chrono::NaiveDateTime::parse_from_str(s, f) {
            return match chrono::Local.from_local_datetime(&naive) {
                chrono::LocalResult::Single(t) => Ok(t.timestamp()),
                chrono::LocalResult::Ambiguous(..) => Err(format!(
                    "{s:?} happens twice in this time zone (clocks went back): add an offset, as in 2026-10-25T02:30:00+01:00"
                )),
                chrono::LocalResult::None => Err(format!(
                    "{s:?} does not exist in this time zone (clocks went forward)"
                )),
            };
        }
    }
    Err(format!(
        "{s:?} is not a time: expected \"2026-11-30 14:05\" (local time), 2026-11-30T14:05:00Z or @1764511500"
    ))
}

#[cfg(test)]
mod moment_tests {
    #[test]
    fn moments_in_every_accepted_form() {
        assert_eq!(super::moment("@1764511500"), Ok(1_764_511_500));
        assert_eq!(super::moment("2025-11-30T14:05:00Z"), Ok(1_764_511_500));
        assert_eq!(
            super::moment("2025-11-30T15:05:00+01:00"),
            Ok(1_764_511_500)
        );
        assert!(super::moment("2025-11-30 14:05").is_ok());
        assert!(super::moment("2025-11-30 14:05:09").is_ok());
        for bad in ["yesterday", "2025-13-01 00:00", "@x", ""] {
            assert!(super::moment(bad).is_err(), "{bad}");
        }
    }
}
