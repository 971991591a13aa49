//! The one source of time, so tests can move it (lifetimes, expiry, idle windows).

use std::{
    sync::{Arc, Mutex},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

/// Wall-clock time in milliseconds since the Unix epoch.
pub trait Clock: Send + Sync + 'static {
    fn now_ms(&self) -> i64;
}

/// The real clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0)
    }
}

/// The real clock plus an offset that can only grow: end-to-end tests move a running Doorman's
/// time forward (`DOORMAN_TEST_CLOCK=1` enables the hook) instead of sleeping.
#[derive(Clone, Default)]
pub struct OffsetClock(Arc<std::sync::atomic::AtomicI64>);

impl OffsetClock {
    pub fn advance(&self, by: Duration) {
        self.0
            .fetch_add(by.as_millis() as i64, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Clock for OffsetClock {
    fn now_ms(&self) -> i64 {
        SystemClock.now_ms() + self.0.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// A clock that only moves when told to.
#[derive(Clone)]
pub struct ManualClock(Arc<Mutex<i64>>);

impl ManualClock {
    pub fn new(start_ms: i64) -> Self {
        Self(Arc::new(Mutex::new(start_ms)))
    }

    pub fn advance(&self, by: Duration) {
        *self.0.lock().expect("clock lock") += by.as_millis() as i64;
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        *self.0.lock().expect("clock lock")
    }
}

/// The shared clock handle.
pub type SharedClock = Arc<dyn Clock>;
