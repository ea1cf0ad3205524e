//! Pure: the leak check, a sustained post-GC slope over the threshold (Theil-Sen).

use super::*;

/// Fewest post-GC points, and shortest share of the window they must span, for a slope.
const LEAK_MIN_POINTS: usize = 6;
const LEAK_MIN_SPAN: f64 = 0.5;
/// Theil-Sen is quadratic: fit the most recent points only.
const LEAK_MAX_POINTS: usize = 240;

impl Policy {
    /// Checks the post-GC series (`(ms, used heap)`, oldest first, `now_ms` on the same
    /// clock). A sustained slope over the threshold gives `Leak` then `Recycle`; a
    /// sawtooth or a freed spike has a median slope near zero and gives nothing.
    pub fn observe_leak(
        &mut self,
        post_gc: &[(u64, u64)],
        now_ms: u64,
        uptime_ms: u64,
    ) -> Vec<Verdict> {
        let Some(threshold) = self.limits.leak_slope_per_min else {
            return Vec::new();
        };
        if uptime_ms < self.limits.warmup_ms {
            return Vec::new();
        }
        let window = self.limits.leak_window_ms;
        let recent: Vec<(u64, u64)> = post_gc
            .iter()
            .copied()
            .filter(|(t, _)| now_ms.saturating_sub(*t) <= window)
            .collect();
        let recent = &recent[recent.len().saturating_sub(LEAK_MAX_POINTS)..];
        let spans_window = match (recent.first(), recent.last()) {
            (Some(first), Some(last)) => (last.0 - first.0) as f64 >= window as f64 * LEAK_MIN_SPAN,
            _ => false,
        };
        let slope_per_min = if recent.len() >= LEAK_MIN_POINTS && spans_window {
            theil_sen_slope(recent).map(|per_ms| per_ms * 60_000.0)
        } else {
            None
        };
        let Some(slope_per_min) = slope_per_min.filter(|s| *s > threshold) else {
            if slope_per_min.is_some_and(|s| s < threshold * PRESSURE_REARM) {
                self.leak_reported = false;
            }
            return Vec::new();
        };
        if self.leak_reported {
            return Vec::new();
        }
        self.leak_reported = true;
        let mut verdicts = vec![Verdict::Leak {
            slope_per_min,
            threshold_per_min: threshold,
            window_ms: window,
            points: recent.len(),
        }];
        if uptime_ms >= self.limits.min_uptime_ms {
            verdicts.push(Verdict::Recycle {
                reason: Reason::Leak,
                value: slope_per_min as u64,
                limit: threshold as u64,
                strikes: 0,
                ceiling: false,
                prediction: None,
            });
        }
        verdicts
    }
}
