//! When a scrape failure makes an endpoint unhealthy, and when it recovers.

/// A change worth acting on (and logging) after a scrape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    None,
    /// First failure after a success: log at warn, keep the endpoint.
    FirstFailure,
    /// `threshold` consecutive failures: mark the endpoint unhealthy.
    BecameUnhealthy,
    /// A success after failures: log at info, healthy again.
    Recovered,
}

/// Counts consecutive scrape failures. One failed scrape never takes a pod out (that made pods
/// flap upstream); `threshold` in a row does, and the next success brings it back.
#[derive(Debug, Clone)]
pub struct HealthTracker {
    threshold: u32,
    consecutive_failures: u32,
}

impl HealthTracker {
    pub fn new(threshold: u32) -> Self {
        Self {
            threshold: threshold.max(1),
            consecutive_failures: 0,
        }
    }

    pub fn healthy(&self) -> bool {
        self.consecutive_failures < self.threshold
    }

    pub fn on_success(&mut self) -> Transition {
        let had_failed = self.consecutive_failures > 0;
        self.consecutive_failures = 0;
        if had_failed {
            Transition::Recovered
        } else {
            Transition::None
        }
    }

    pub fn on_failure(&mut self) -> Transition {
        self.consecutive_failures = self.consecutive_failures.saturating_add(1);
        if self.consecutive_failures == self.threshold {
            Transition::BecameUnhealthy
        } else if self.consecutive_failures == 1 {
            Transition::FirstFailure
        } else {
            Transition::None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unhealthy_only_after_threshold_and_back_on_success() {
        let mut t = HealthTracker::new(3);
        assert_eq!(t.on_failure(), Transition::FirstFailure);
        assert!(t.healthy());
        assert_eq!(t.on_failure(), Transition::None);
        assert_eq!(t.on_failure(), Transition::BecameUnhealthy);
        assert!(!t.healthy());
        assert_eq!(t.on_failure(), Transition::None);
        assert_eq!(t.on_success(), Transition::Recovered);
        assert!(t.healthy());
        assert_eq!(t.on_success(), Transition::None);
    }
}
