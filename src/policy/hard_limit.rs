//! Pure: a limit a waiting recycle must never reach, and when it must go instead.

use crate::units::format_size;

/// A limit a recycle waiting for its turn must never reach (V8's heap limit, the RSS
/// ceiling): where the value is and how fast it grows.
#[derive(Debug, Clone, PartialEq)]
pub struct HardLimit {
    /// What the limit is, in words (`85% of V8's heap limit`).
    pub name: String,
    pub value: u64,
    /// What a growing value must not be projected to reach within the lead.
    pub limit: u64,
    /// Where it goes at once, growing or not (at least `limit`).
    pub at_once: u64,
    pub slope_per_s: Option<f64>,
}

impl HardLimit {
    /// Why a waiting recycle must go now: the value is at the limit, or at its rate it would
    /// reach it within `lead_ms` (the drain it still needs plus a margin). `None`: it may
    /// wait on.
    pub fn must_go_within(&self, lead_ms: u64) -> Option<String> {
        if self.value >= self.at_once.max(self.limit) {
            return Some(format!(
                "at {} of {}",
                format_size(self.value),
                format_size(self.at_once.max(self.limit))
            ));
        }
        let slope = self.slope_per_s.filter(|s| *s > 0.0)?;
        let seconds_left = self.limit.saturating_sub(self.value) as f64 / slope;
        (seconds_left * 1000.0 <= lead_ms as f64).then(|| {
            format!(
                "{} would reach {} in {:.1} s at {}/s, sooner than the {:.1} s a drain needs",
                format_size(self.value),
                self.name,
                seconds_left,
                format_size(slope as u64),
                lead_ms as f64 / 1000.0
            )
        })
    }
}
