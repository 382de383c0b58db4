//! Release versions: semver with an optional leading `v`, and the rule that a
//! name used on disk must be a safe single path component.

use std::fmt;
use std::str::FromStr;

/// The git commit this binary was built from (`git rev-parse --short HEAD`
/// at build time, see build.rs), or "unknown" for a build outside a git
/// checkout without `SWITCHYARD_GIT_COMMIT` set.
pub(crate) const BUILD_COMMIT: &str = env!("SWITCHYARD_GIT_COMMIT");

/// The cargo features this binary was built with, comma-separated, or
/// "none" (build.rs).
pub(crate) const BUILD_FEATURES: &str = env!("SWITCHYARD_FEATURES");

/// What `--version` prints after the program name: the version, the commit
/// and the features, so a bug report says exactly which build it was.
pub(crate) const LONG_VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("SWITCHYARD_GIT_COMMIT"),
    ", features: ",
    env!("SWITCHYARD_FEATURES"),
    ")"
);

/// Why a version or name was refused.
#[derive(Debug, thiserror::Error)]
pub enum VersionError {
    /// Not usable as a single directory name.
    #[error(
        "{what} {name:?} is not a safe single path component (no '/', '\\', NUL, control characters, '.' or '..', at most 200 bytes)"
    )]
    UnsafeName {
        /// What the name was ("version", "asset name", ...).
        what: &'static str,
        /// The refused name.
        name: String,
    },
    /// Not semver.
    #[error(
        "version {name:?} is not semver (expected MAJOR.MINOR.PATCH, optionally with a leading 'v')"
    )]
    NotSemver {
        /// The refused string.
        name: String,
        /// The parser's reason.
        #[source]
        source: semver::Error,
    },
}

/// Checks that `name` can be used as exactly one directory entry name.
pub(crate) fn check_component(what: &'static str, name: &str) -> Result<(), VersionError> {
    let bad = name.is_empty()
        || name == "."
        || name == ".."
        || name.len() > 200
        || name.starts_with('.')
        || name
            .chars()
            .any(|c| c == '/' || c == '\\' || c.is_control());
    if bad {
        return Err(VersionError::UnsafeName {
            what,
            name: name.to_string(),
        });
    }
    Ok(())
}

/// A release version. Displays without the `v` (that is its directory name).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version(pub semver::Version);

impl Version {
    /// Parses `1.2.3` or `v1.2.3`, refusing anything unsafe as a path component.
    pub fn parse(s: &str) -> Result<Self, VersionError> {
        check_component("version", s)?;
        let bare = s.strip_prefix('v').unwrap_or(s);
        let v = semver::Version::parse(bare).map_err(|source| VersionError::NotSemver {
            name: s.to_string(),
            source,
        })?;
        let out = Version(v);
        // The canonical form is what lands on disk: check it too.
        check_component("version", &out.to_string())?;
        Ok(out)
    }

    /// The directory name under `releases/`.
    pub fn dir_name(&self) -> String {
        self.0.to_string()
    }

    /// True for `-rc.1` style versions.
    pub fn is_prerelease(&self) -> bool {
        !self.0.pre.is_empty()
    }

    /// Is going from `from` to `self` a major (breaking) upgrade? The one
    /// definition `deploy`, `promote`, `check` and the agent's `auto` level
    /// share, Cargo's: a higher major version; for `0.y.z` a higher minor;
    /// for `0.0.z` any higher version.
    pub fn is_major_upgrade_from(&self, from: &Version) -> bool {
        let (a, b) = (&from.0, &self.0);
        if b <= a {
            return false;
        }
        if a.major != b.major {
            return true;
        }
        a.major == 0 && (a.minor != b.minor || a.minor == 0)
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for Version {
    type Err = VersionError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Version::parse(s)
    }
}

impl serde::Serialize for Version {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Version {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Version::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// What the operator asked to install.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VersionRequest {
    /// The highest version the source offers on the app's channel.
    Latest,
    /// One exact version.
    Exact(Version),
}

impl FromStr for VersionRequest {
    type Err = VersionError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "latest" {
            Ok(VersionRequest::Latest)
        } else {
            Version::parse(s).map(VersionRequest::Exact)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leading_v_is_stripped_for_the_directory() {
        assert_eq!(Version::parse("v1.4.0").unwrap().dir_name(), "1.4.0");
        assert_eq!(Version::parse("1.4.0").unwrap().dir_name(), "1.4.0");
    }

    #[test]
    fn major_upgrades_follow_cargo() {
        let major = |a: &str, b: &str| {
            Version::parse(b)
                .unwrap()
                .is_major_upgrade_from(&Version::parse(a).unwrap())
        };
        assert!(major("1.9.0", "2.0.0"));
        assert!(!major("1.0.0", "1.9.9"));
        assert!(major("0.1.0", "0.2.0"));
        assert!(!major("0.1.0", "0.1.7"));
        assert!(major("0.0.1", "0.0.2"));
        assert!(!major("2.0.0", "1.0.0"), "a downgrade is not an upgrade");
        assert!(!major("1.0.0", "1.0.0"));
    }

    #[test]
    fn orders_by_semver_not_string() {
        let a = Version::parse("v1.9.0").unwrap();
        let b = Version::parse("v1.10.0").unwrap();
        assert!(b > a);
        assert!(Version::parse("1.0.0-rc.1").unwrap() < Version::parse("1.0.0").unwrap());
    }

    #[test]
    fn unsafe_names_are_refused() {
        for bad in [
            "", ".", "..", "../1.0.0", "1.0.0/..", "a\\b", ".hidden", "1.0.0\n",
        ] {
            assert!(Version::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert!(matches!(
            Version::parse("banana"),
            Err(VersionError::NotSemver { .. })
        ));
    }
}
