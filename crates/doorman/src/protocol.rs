//! The MCP protocol revisions Doorman speaks, as a type: parsed once where a version enters
//! (a header, `initialize`, `_meta`, a stored session), compared as values everywhere else.

use std::fmt;

/// One MCP revision, oldest first (so `<`/`>=` compare by age).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Version {
    V2025_03_26,
    V2025_06_18,
    V2025_11_25,
    /// The stateless revision: per-request `_meta`, no sessions.
    V2026_07_28,
}

impl Version {
    /// The stateful revisions, served with `initialize` and `MCP-Session-Id`, oldest first.
    pub const LEGACY: [Version; 3] = [Self::V2025_03_26, Self::V2025_06_18, Self::V2025_11_25];
    /// The stateful revision offered when a client asks for one Doorman does not know.
    pub const LATEST_LEGACY: Version = Self::V2025_11_25;
    pub const MODERN: Version = Self::V2026_07_28;
    pub const ALL: [Version; 4] = [
        Self::V2025_03_26,
        Self::V2025_06_18,
        Self::V2025_11_25,
        Self::V2026_07_28,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::V2025_03_26 => "2025-03-26",
            Self::V2025_06_18 => "2025-06-18",
            Self::V2025_11_25 => "2025-11-25",
            Self::V2026_07_28 => "2026-07-28",
        }
    }

    /// A revision Doorman knows, by its name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.as_str() == s)
    }

    pub fn is_modern(self) -> bool {
        self == Self::MODERN
    }

    /// JSON-RPC batches exist in 2025-03-26 only (MCP 2025-06-18 changelog: "Remove support
    /// for JSON-RPC batching").
    pub fn allows_batches(self) -> bool {
        self == Self::V2025_03_26
    }

    /// URL-mode elicitation exists from 2025-11-25 on (MCP 2025-11-25 client/elicitation).
    pub fn has_url_elicitation(self) -> bool {
        self >= Self::V2025_11_25
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Version {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s).ok_or_else(|| format!("unknown MCP protocol version {s:?}"))
    }
}

impl serde::Serialize for Version {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse_compare_and_say_what_they_allow() {
        for v in Version::ALL {
            assert_eq!(Version::parse(v.as_str()), Some(v));
        }
        assert_eq!(Version::parse("2024-11-05"), None);
        assert_eq!(Version::parse(""), None);
        assert!(Version::V2025_03_26 < Version::V2025_11_25);
        assert!(Version::V2025_03_26.allows_batches() && !Version::V2025_06_18.allows_batches());
        assert!(!Version::V2025_06_18.has_url_elicitation());
        assert!(Version::V2025_11_25.has_url_elicitation());
        assert_eq!(
            Version::LEGACY.map(Version::as_str),
            crate::gateway::jsonrpc::LEGACY_VERSIONS
        );
    }
}
