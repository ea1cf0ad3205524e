//! The floor of a memory series and whether it rises in a sustained way: what a predicted
//! recycle may extrapolate from.
//!
//! A healthy worker's RSS and heap rise and fall: allocation raises them, a GC frees what
//! was garbage. Extrapolating the rising half of that sawtooth (or a burst, a step, noise)
//! over a drain recycles a worker that would never have crossed its limit. What leaks
//! shows in the *floor* (the lows the series comes back to), so the trend here is the
//! floor's: the window is split into segments, each segment's lowest value is its floor,
//! and a trend exists only when every floor is higher than the one before and the rise is
//! beyond noise. The window is long enough to hold a GC cycle (at least `MIN_WINDOW_MS`)
//! and several times the horizon it projects over: a trend is never extrapolated further
//! than a fraction of the time it has been seen. Pure: no clock, no I/O.

use std::collections::VecDeque;

/// The shortest window a trend is judged over.
pub const MIN_WINDOW_MS: u64 = 30_000;
/// The longest window kept (and so the longest horizon: a quarter of it).
pub const MAX_WINDOW_MS: u64 = 300_000;
/// The window is at least this many times the horizon projected over.
const WINDOW_PER_HORIZON: u64 = 4;
/// Floors compared across the window.
const SEGMENTS: u64 = 6;
/// The history keeps one lowest point per bucket of this length.
const BUCKET_MS: u64 = 1000;

/// Which series of the history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Series {
    Rss,
    Heap,
}

/// The lowest point of one bucket, per series: (uptime ms of the point, value).
#[derive(Debug, Clone, Copy)]
struct Bucket {
    index: u64,
    rss: (u64, u64),
    heap: (u64, u64),
}

impl Bucket {
    fn point(&self, series: Series) -> (u64, u64) {
        match series {
            Series::Rss => self.rss,
            Series::Heap => self.heap,
        }
    }
}

/// One lowest point per second over the last `MAX_WINDOW_MS`: bounded memory whatever the
/// sampling rate.
#[derive(Debug, Clone, Default)]
pub struct FloorHistory {
    buckets: VecDeque<Bucket>,
}

impl FloorHistory {
    pub fn record(&mut self, uptime_ms: u64, rss: u64, heap: u64) {
        let index = uptime_ms / BUCKET_MS;
        match self.buckets.back_mut() {
            Some(last) if last.index == index => {
                if rss < last.rss.1 {
                    last.rss = (uptime_ms, rss);
                }
                if heap < last.heap.1 {
                    last.heap = (uptime_ms, heap);
                }
            }
            Some(last) if last.index > index => {} // a clock that went back: ignore the point
            _ => self.buckets.push_back(Bucket {
                index,
                rss: (uptime_ms, rss),
                heap: (uptime_ms, heap),
            }),
        }
        let oldest_kept = index.saturating_sub(MAX_WINDOW_MS / BUCKET_MS);
        while self.buckets.front().is_some_and(|b| b.index < oldest_kept) {
            self.buckets.pop_front();
        }
    }

    /// Bytes per second of the per-second lows of `series` over the last `span_ms` (Theil-Sen,
    /// at least 3 seconds seen): how fast a series grows under the sawtooth of minor GCs,
    /// for a worker that already waits at its limit. Not a trend test: any rise counts.
    pub fn recent_floor_slope_per_s(
        &self,
        series: Series,
        now_ms: u64,
        span_ms: u64,
    ) -> Option<f64> {
        let from = now_ms.saturating_sub(span_ms);
        let points: Vec<(u64, u64)> = self
            .buckets
            .iter()
            .map(|b| b.point(series))
            .filter(|(t, _)| *t >= from)
            .collect();
        if points.len() < 3 {
            return None;
        }
        theil_sen_slope(&points).map(|per_ms| per_ms * 1000.0)
    }

    /// The window a projection over `horizon_ms` must be judged on.
    pub fn window_for(horizon_ms: u64) -> u64 {
        horizon_ms
            .saturating_mul(WINDOW_PER_HORIZON)
            .clamp(MIN_WINDOW_MS, MAX_WINDOW_MS)
    }

    /// Bytes per second at which the floor of `series` rises, when it rises in a sustained
    /// way over the window for `horizon_ms` ending at `now_ms`: every segment's floor above
    /// the one before, the whole rise above `noise` bytes. `None` when the history is
    /// shorter than the window, the floor is flat, has come back down, or is noise, or the
    /// horizon is longer than a quarter of the longest window.
    pub fn sustained_slope_per_s(
        &self,
        series: Series,
        now_ms: u64,
        horizon_ms: u64,
        noise: u64,
    ) -> Option<f64> {
        if horizon_ms.saturating_mul(WINDOW_PER_HORIZON) > MAX_WINDOW_MS {
            return None;
        }
        let window = Self::window_for(horizon_ms);
        let start = now_ms.checked_sub(window)?;
        let oldest = self.buckets.front()?;
        if oldest.index * BUCKET_MS > start {
            return None; // not seen for the whole window yet
        }
        let segment = window / SEGMENTS;
        let mut floors: Vec<(u64, u64)> = Vec::with_capacity(SEGMENTS as usize);
        for i in 0..SEGMENTS {
            let from = start + i * segment;
            let to = if i + 1 == SEGMENTS {
                u64::MAX
            } else {
                from + segment
            };
            let floor = self
                .buckets
                .iter()
                .map(|b| b.point(series))
                .filter(|(t, _)| *t >= from && *t < to)
                .min_by_key(|(_, v)| *v)?; // a segment with no sample tells nothing
            floors.push(floor);
        }
        let rising = floors.windows(2).all(|pair| pair[1].1 > pair[0].1);
        let first = floors.first()?.1;
        let last = floors.last()?.1;
        if !rising || last - first <= noise {
            return None;
        }
        // A decelerating rise (a cache that fills, a warm-up that levels off) projects at
        // its recent rate: the lower of the whole window's slope and its second half's.
        let whole = theil_sen_slope(&floors)?;
        let recent = theil_sen_slope(&floors[floors.len() / 2..])?;
        let per_ms = whole.min(recent);
        (per_ms > 0.0).then_some(per_ms * 1000.0)
    }
}

/// Median of pairwise slopes (Theil-Sen): robust to a few outliers such as one spike.
pub fn theil_sen_slope(points: &[(u64, u64)]) -> Option<f64> {
    let mut slopes = Vec::with_capacity(points.len() * points.len() / 2);
    for (i, a) in points.iter().enumerate() {
        for b in &points[i + 1..] {
            if b.0 != a.0 {
                slopes.push((b.1 as f64 - a.1 as f64) / (b.0 as f64 - a.0 as f64));
            }
        }
    }
    if slopes.is_empty() {
        return None;
    }
    slopes.sort_by(f64::total_cmp);
    let middle = slopes.len() / 2;
    Some(if slopes.len() % 2 == 0 {
        (slopes[middle - 1] + slopes[middle]) / 2.0
    } else {
        slopes[middle]
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A memory series over time (ms -> bytes), for the shape tests.
    type Shape<'a> = Box<dyn Fn(u64) -> u64 + 'a>;

    const MIB: u64 = 1 << 20;

    /// Feeds `value(t)` every `step_ms` up to `until_ms` (both series the same).
    fn history(until_ms: u64, step_ms: u64, value: impl Fn(u64) -> u64) -> FloorHistory {
        let mut history = FloorHistory::default();
        let mut t = 0;
        while t <= until_ms {
            history.record(t, value(t), value(t));
            t += step_ms;
        }
        history
    }

    #[test]
    fn a_steady_leak_is_a_trend_at_its_rate() {
        let h = history(40_000, 100, |t| 100 * MIB + t * MIB / 1000);
        let slope = h
            .sustained_slope_per_s(Series::Rss, 40_000, 2000, MIB)
            .expect("trend");
        assert!((slope / MIB as f64 - 1.0).abs() < 0.05, "{slope}");
        assert!(h
            .sustained_slope_per_s(Series::Heap, 40_000, 2000, MIB)
            .is_some());
    }

    #[test]
    fn a_leak_under_a_gc_sawtooth_is_a_trend_of_its_floor() {
        // +1 MiB/s retained, plus 20 MiB of garbage freed every 4 s.
        let h = history(60_000, 25, |t| {
            100 * MIB + t * MIB / 1000 + (t % 4000) * 20 * MIB / 4000
        });
        let slope = h
            .sustained_slope_per_s(Series::Rss, 60_000, 3000, MIB)
            .expect("trend");
        assert!((slope / MIB as f64 - 1.0).abs() < 0.25, "{slope}");
    }

    #[test]
    fn too_short_a_history_is_no_trend() {
        let h = history(20_000, 100, |t| 100 * MIB + t * MIB);
        assert_eq!(
            h.sustained_slope_per_s(Series::Rss, 20_000, 1000, MIB),
            None
        );
        // A long horizon needs a longer window: 15 s of drain needs 60 s seen.
        let h = history(45_000, 100, |t| 100 * MIB + t * MIB / 1000);
        assert_eq!(
            h.sustained_slope_per_s(Series::Rss, 45_000, 15_000, MIB),
            None
        );
        assert!(h
            .sustained_slope_per_s(Series::Rss, 45_000, 5_000, MIB)
            .is_some());
        // Beyond a quarter of the longest window, nothing is projected.
        let h = history(400_000, 1000, |t| 100 * MIB + t * MIB / 1000);
        assert_eq!(
            h.sustained_slope_per_s(Series::Rss, 400_000, 80_000, MIB),
            None
        );
    }

    #[test]
    fn healthy_shapes_are_no_trend() {
        let base = 240 * MIB;
        let shapes: Vec<(&str, Shape<'_>)> = vec![
            ("flat", Box::new(move |_| base)),
            // Held near a limit with page-level noise.
            (
                "noisy flat",
                Box::new(move |t| base + (t * 7919 % 13) * MIB / 8),
            ),
            // Rises for 10 s, freed by GC, again.
            (
                "sawtooth",
                Box::new(move |t| base + (t % 10_000) * 14 * MIB / 1000),
            ),
            // A GC that runs late: one rise of the sawtooth goes on twice as long.
            (
                "late gc",
                Box::new(move |t| match t {
                    50_000..=69_999 => base + (t - 50_000) * 10 * MIB / 1000,
                    _ => base + (t % 10_000) * 10 * MIB / 1000,
                }),
            ),
            // +120 MiB for 2 s of every 8 s.
            (
                "burst",
                Box::new(move |t| {
                    if t % 8000 < 2000 {
                        base + 120 * MIB
                    } else {
                        base
                    }
                }),
            ),
            // A cache refilled at t = 40 s: +100 MiB over 10 s, then level.
            (
                "cache refill",
                Box::new(move |t| match t {
                    0..=40_000 => base,
                    40_001..=50_000 => base + (t - 40_000) * 10 * MIB / 1000,
                    _ => base + 100 * MIB,
                }),
            ),
            // A warm-up that levels off: fast, then slower, then flat.
            (
                "plateau",
                Box::new(move |t| {
                    let s = (t as f64 / 1000.0).min(60.0);
                    base + ((60.0 * s - s * s / 2.0) * 3.0) as u64 * MIB / 60
                }),
            ),
        ];
        for (name, shape) in shapes {
            let mut h = FloorHistory::default();
            let mut t = 0;
            while t <= 120_000 {
                h.record(t, shape(t), shape(t));
                for horizon in [500, 3000, 15_000] {
                    let slope = h.sustained_slope_per_s(Series::Rss, t, horizon, 2 * MIB);
                    // The warm-up's rise is real, but it slows and the floor stops rising
                    // within a window of levelling off: no trend after that.
                    let allowed =
                        name == "plateau" && t < 60_000 + FloorHistory::window_for(horizon);
                    assert!(
                        slope.is_none() || (allowed && slope.unwrap_or(0.0) < 3.0 * MIB as f64),
                        "{name} at {t} ms, horizon {horizon}: {slope:?}"
                    );
                }
                t += 250;
            }
        }
    }

    #[test]
    fn a_series_that_came_back_down_is_no_trend() {
        // 40 s of leak, then freed to below where the window starts.
        let h = history(50_000, 100, |t| {
            if t < 45_000 {
                100 * MIB + t * MIB / 1000
            } else {
                100 * MIB
            }
        });
        assert_eq!(
            h.sustained_slope_per_s(Series::Rss, 50_000, 1000, MIB),
            None
        );
    }

    #[test]
    fn the_recent_floor_slope_sees_through_minor_gcs() {
        // +4 MiB/s under a 10 MiB sawtooth every 300 ms.
        let h = history(10_000, 25, |t| {
            100 * MIB + t * 4 * MIB / 1000 + (t % 300) * 10 * MIB / 300
        });
        let slope = h
            .recent_floor_slope_per_s(Series::Heap, 10_000, 5000)
            .expect("slope");
        assert!((slope / MIB as f64 - 4.0).abs() < 0.5, "{slope}");
        let short = history(1500, 25, |t| t);
        assert_eq!(
            short.recent_floor_slope_per_s(Series::Heap, 1500, 5000),
            None
        );
    }

    #[test]
    fn a_rise_within_noise_is_no_trend() {
        let h = history(40_000, 100, |t| 100 * MIB + t * 10);
        assert_eq!(
            h.sustained_slope_per_s(Series::Rss, 40_000, 1000, MIB),
            None
        );
    }

    #[test]
    fn memory_is_bounded_and_a_clock_going_back_is_ignored() {
        let mut h = history(1_000_000, 10, |t| t);
        assert!(h.buckets.len() <= (MAX_WINDOW_MS / BUCKET_MS) as usize + 1);
        let before = h.buckets.len();
        h.record(5, 0, 0);
        assert_eq!(h.buckets.len(), before);
        assert_eq!(FloorHistory::window_for(0), MIN_WINDOW_MS);
        assert_eq!(FloorHistory::window_for(20_000), 80_000);
        assert_eq!(FloorHistory::window_for(u64::MAX), MAX_WINDOW_MS);
    }

    /// A steady leak of 1 MiB/s from 100 MiB.
    fn leak(t: u64) -> u64 {
        100 * MIB + t * MIB / 1000
    }

    #[test]
    fn a_history_exactly_as_long_as_the_window_is_judged() {
        let h = history(30_000, 100, leak);
        let slope = h
            .sustained_slope_per_s(Series::Rss, 30_000, 1000, MIB)
            .expect("30 s seen, 30 s needed");
        assert!((slope / MIB as f64 - 1.0).abs() < 0.05, "{slope}");
    }

    #[test]
    fn a_history_younger_than_the_window_is_no_trend_wherever_it_starts() {
        // Recording starts at an uptime of 100 s (the addon started late).
        let mut h = FloorHistory::default();
        for t in (100_000..=129_900).step_by(100) {
            h.record(t, leak(t), leak(t));
        }
        assert_eq!(
            h.sustained_slope_per_s(Series::Rss, 129_900, 1000, MIB),
            None,
            "29.9 s seen of the 30 s needed"
        );
        h.record(130_000, leak(130_000), leak(130_000));
        assert!(h
            .sustained_slope_per_s(Series::Rss, 130_000, 1000, MIB)
            .is_some());
    }

    #[test]
    fn the_longest_horizon_is_a_quarter_of_the_longest_window() {
        // Sampled once a second for 400 s: the last 300 s are kept, exactly the window.
        let h = history(400_000, 1000, leak);
        let slope = h
            .sustained_slope_per_s(Series::Rss, 400_000, MAX_WINDOW_MS / 4, MIB)
            .expect("a 75 s horizon is judged over 300 s");
        assert!((slope / MIB as f64 - 1.0).abs() < 0.05, "{slope}");
        assert_eq!(
            h.sustained_slope_per_s(Series::Rss, 400_000, MAX_WINDOW_MS / 4 + 1, MIB),
            None
        );
    }

    #[test]
    fn a_floor_that_comes_down_at_the_latest_sample_is_no_trend() {
        // The window's segments start at 10, 15, ..., 35 s; their floors are 110, 115, ...,
        // 135 MiB. The latest sample falls to 127 MiB: below the floor of the segment
        // before, so the floor no longer rises.
        let mut h = history(39_900, 100, leak);
        h.record(40_000, 127 * MIB, 127 * MIB);
        assert_eq!(
            h.sustained_slope_per_s(Series::Rss, 40_000, 1000, MIB),
            None
        );
        let mut h = history(39_900, 100, leak);
        h.record(40_000, leak(40_000), leak(40_000));
        assert!(h
            .sustained_slope_per_s(Series::Rss, 40_000, 1000, MIB)
            .is_some());
    }

    #[test]
    fn a_decelerating_rise_projects_at_its_recent_rate() {
        // 2 MiB/s until 25 s, then 1 MiB/s: the second half of the window rises at 1.
        let h = history(40_000, 100, |t| {
            if t <= 25_000 {
                100 * MIB + t * 2 * MIB / 1000
            } else {
                150 * MIB + (t - 25_000) * MIB / 1000
            }
        });
        let slope = h
            .sustained_slope_per_s(Series::Rss, 40_000, 1000, MIB)
            .expect("trend");
        assert!((slope / MIB as f64 - 1.0).abs() < 0.05, "{slope}");
    }

    #[test]
    fn the_recent_floor_slope_sees_only_its_span() {
        // Flat for 10 s, then +2 MiB/s: the last 5 s rise at 2 MiB/s.
        let h = history(20_000, 100, |t| {
            100 * MIB + t.saturating_sub(10_000) * 2 * MIB / 1000
        });
        let slope = h
            .recent_floor_slope_per_s(Series::Rss, 20_000, 5000)
            .expect("slope");
        assert!((slope / MIB as f64 - 2.0).abs() < 0.1, "{slope}");
    }

    #[test]
    fn the_floor_of_each_second_is_its_lowest_point_per_series() {
        // Three seconds seen (the least a recent slope needs); in the first, each series
        // dips below where the second started, at a different moment.
        let mut h = FloorHistory::default();
        h.record(0, 100, 300);
        h.record(400, 40, 310);
        h.record(500, 90, 240);
        h.record(1000, 50, 250);
        h.record(2000, 60, 260);
        // rss lows (400, 40), (1000, 50), (2000, 60): pairwise 1/60, 1/80, 1/100 per ms.
        let rss = h
            .recent_floor_slope_per_s(Series::Rss, 2000, 5000)
            .expect("slope");
        assert!((rss - 1000.0 / 80.0).abs() < 1e-9, "{rss}");
        // heap lows (500, 240), (1000, 250), (2000, 260): 1/50, 1/75, 1/100 per ms.
        let heap = h
            .recent_floor_slope_per_s(Series::Heap, 2000, 5000)
            .expect("slope");
        assert!((heap - 1000.0 / 75.0).abs() < 1e-9, "{heap}");
    }

    #[test]
    fn a_low_held_within_a_second_is_dated_from_when_it_was_reached() {
        // Held at 40 from 0 to 600 ms, then +10 per second: dating the low at 0 gives the
        // lower (later-recycling) of the two readings of the rise.
        let mut h = FloorHistory::default();
        for (t, v) in [(0, 40), (600, 40), (1000, 50), (2000, 60)] {
            h.record(t, v, v);
        }
        for series in [Series::Rss, Series::Heap] {
            let slope = h
                .recent_floor_slope_per_s(series, 2000, 5000)
                .expect("slope");
            assert!((slope - 10.0).abs() < 1e-9, "{series:?}: {slope}");
        }
    }

    #[test]
    fn memory_stays_bounded_when_samples_skip_seconds() {
        // A sampler slower than the buckets (one every 1.7 s) for an hour.
        let h = history(3_600_000, 1700, |t| t);
        let newest = h.buckets.back().expect("recorded").index;
        let oldest = h.buckets.front().expect("recorded").index;
        assert!(
            newest - oldest <= MAX_WINDOW_MS / BUCKET_MS,
            "{oldest}..{newest}"
        );
        assert!(h.buckets.len() <= (MAX_WINDOW_MS / BUCKET_MS) as usize + 1);
    }
}
