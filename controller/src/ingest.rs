//! The fleet-wide ingest cap (`[scheduler] ingest_bandwidth`): pack bytes
//! streamed through the controller wait here, so all agents together stay
//! under it; HTTP/2 flow control then slows each agent's upload in turn.
//! Direct mode (agents writing to the storage themselves) is not capped.

use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock, ReasonablyRealtime};
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};

/// The limiter counts KiB: a cell is 1024 bytes.
const CELL: u64 = 1024;

pub struct IngestLimit<C: Clock = DefaultClock> {
    limiter: RateLimiter<NotKeyed, InMemoryState, C, NoOpMiddleware<C::Instant>>,
    /// Cells per second, which is also the burst: one second's worth.
    per_second: NonZeroU32,
}

/// Parses a rate like `100MiB`, `50 MB/s` or `0` (no cap) into bytes per second.
pub fn parse_rate(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let t = t.strip_suffix("/s").unwrap_or(t).trim();
    if t.is_empty() || t == "0" {
        return Ok(0);
    }
    let b: bytesize::ByteSize = t
        .parse()
        .map_err(|e| format!("{s:?} is not a rate like 100MiB or 50MB/s: {e}"))?;
    if b.as_u64() != 0 && b.as_u64() < CELL {
        return Err(format!("{s:?}: at least 1KiB per second"));
    }
    Ok(b.as_u64())
}

impl IngestLimit {
    /// None when `bytes_per_second` is 0 (no cap).
    pub fn new(bytes_per_second: u64) -> Option<IngestLimit> {
        Self::with_clock(bytes_per_second, DefaultClock::default())
    }
}

impl<C: Clock> IngestLimit<C> {
    pub fn with_clock(bytes_per_second: u64, clock: C) -> Option<IngestLimit<C>> {
        let cells = (bytes_per_second / CELL).clamp(1, u32::MAX as u64) as u32;
        let per_second = NonZeroU32::new(cells)?;
        (bytes_per_second > 0).then(|| IngestLimit {
            limiter: RateLimiter::direct_with_clock(Quota::per_second(per_second), clock),
            per_second,
        })
    }

    /// The cell counts `bytes` is taken in: none larger than the burst.
    fn steps(&self, bytes: usize) -> impl Iterator<Item = NonZeroU32> + '_ {
        let mut left = (bytes as u64).div_ceil(CELL);
        std::iter::from_fn(move || {
            let n = left.min(self.per_second.get() as u64);
            left -= n;
            NonZeroU32::new(n as u32)
        })
    }

    /// Takes `bytes` now if the cap allows all of them (no waiting).
    pub fn try_take(&self, bytes: usize) -> bool {
        let steps: Vec<NonZeroU32> = self.steps(bytes).collect();
        steps.len() <= 1
            && steps
                .first()
                .is_none_or(|n| matches!(self.limiter.check_n(*n), Ok(Ok(_))))
    }
}

impl<C: ReasonablyRealtime> IngestLimit<C> {
    /// Waits until `bytes` fit under the cap; returns how long it waited.
    pub async fn take(&self, bytes: usize) -> Duration {
        let started = std::time::Instant::now();
        for n in self.steps(bytes) {
            // n never exceeds the burst, so capacity is never insufficient.
            let _ = self.limiter.until_n_ready(n).await;
        }
        started.elapsed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use governor::clock::FakeRelativeClock;

    #[test]
    fn rates_parse_like_sizes() {
        assert_eq!(parse_rate("").unwrap(), 0);
        assert_eq!(parse_rate("0").unwrap(), 0);
        assert_eq!(parse_rate("100MiB").unwrap(), 100 << 20);
        assert_eq!(parse_rate("50 MB/s").unwrap(), 50_000_000);
        assert!(parse_rate("fast").is_err());
        assert!(parse_rate("10B").unwrap_err().contains("at least 1KiB"));
    }

    #[test]
    fn the_cap_lets_one_second_through_then_refills_with_time() {
        let clock = FakeRelativeClock::default();
        let limit = IngestLimit::with_clock(1 << 20, clock.clone()).unwrap();
        assert!(limit.try_take(512 << 10));
        assert!(limit.try_take(512 << 10));
        assert!(!limit.try_take(1), "a second's worth is used up");
        clock.advance(Duration::from_millis(250));
        assert!(
            limit.try_take(256 << 10),
            "a quarter second refills a quarter"
        );
        assert!(!limit.try_take(CELL as usize));
        clock.advance(Duration::from_secs(5));
        assert!(
            !limit.try_take(2 << 20),
            "never more than one second's worth at once"
        );
        assert!(
            limit.try_take(1 << 20),
            "idle time refills up to the burst only"
        );
    }

    #[test]
    fn no_cap_is_no_limiter() {
        assert!(IngestLimit::new(0).is_none());
    }

    #[test]
    fn a_big_piece_is_taken_in_burst_sized_steps() {
        let limit = IngestLimit::new(64 << 10).unwrap();
        let steps: Vec<u32> = limit.steps((150 << 10) + 1).map(|n| n.get()).collect();
        assert_eq!(steps, [64, 64, 23]);
        assert_eq!(limit.steps(0).count(), 0);
    }
}
