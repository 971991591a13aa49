//! Durations in the config: `"500ms"`, `"30s"`, `"10m"`, `"1h"`, `"30d"`.
//!
//! One number and one unit, nothing else: an operator reading the file sees exactly what the
//! gateway will use, and a typo (`"10 mins"`) is refused instead of silently misread.

use std::{fmt, str::FromStr, time::Duration};

use serde::{Deserialize, Deserializer, de};

/// A duration written in the config as a number followed by a unit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConfigDuration(pub Duration);

impl ConfigDuration {
    pub const fn secs(s: u64) -> Self {
        Self(Duration::from_secs(s))
    }
}

impl FromStr for ConfigDuration {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (number, unit) = s.split_at(split);
        let hint = "expected a number and a unit: ms, s, m, h or d (for example \"10m\")";
        if number.is_empty() {
            return Err(format!("invalid duration {s:?}: {hint}"));
        }
        let n: u64 = number
            .parse()
            .map_err(|_| format!("invalid duration {s:?}: number too large"))?;
        let unit_ms: u64 = match unit {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => return Err(format!("invalid duration {s:?}: {hint}")),
        };
        let ms = n
            .checked_mul(unit_ms)
            .ok_or_else(|| format!("invalid duration {s:?}: too large"))?;
        Ok(Self(Duration::from_millis(ms)))
    }
}

impl fmt::Display for ConfigDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        for (unit, size) in [
            ("d", 86_400_000),
            ("h", 3_600_000),
            ("m", 60_000),
            ("s", 1_000),
        ] {
            if ms != 0 && ms.is_multiple_of(size) {
                return write!(f, "{}{unit}", ms / size);
            }
        }
        write!(f, "{ms}ms")
    }
}

impl<'de> Deserialize<'de> for ConfigDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_unit() {
        let cases = [
            ("250ms", 250),
            ("30s", 30_000),
            ("10m", 600_000),
            ("1h", 3_600_000),
            ("30d", 2_592_000_000),
        ];
        for (text, ms) in cases {
            let d: ConfigDuration = text.parse().unwrap();
            assert_eq!(d.0, Duration::from_millis(ms), "{text}");
            assert_eq!(d.to_string(), text);
        }
    }

    #[test]
    fn refuses_what_it_cannot_read_exactly() {
        for bad in [
            "",
            "10",
            "m",
            "10 m",
            "10mins",
            "1.5h",
            "-1s",
            "99999999999999999999d",
        ] {
            let err = bad.parse::<ConfigDuration>().unwrap_err();
            assert!(err.contains("invalid duration"), "{bad}: {err}");
        }
    }
}
