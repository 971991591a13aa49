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
