//! `[registrar]`: how long phone registrations last and how many contacts an
//! account may register.

use std::time::Duration;

use serde::Deserialize;

use super::{Problems, Section};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawRegistrar {
    #[serde(with = "humantime_serde")]
    pub min_expires: Duration,
    #[serde(with = "humantime_serde")]
    pub max_expires: Duration,
    #[serde(with = "humantime_serde")]
    pub default_expires: Duration,
    pub max_contacts: usize,
}

impl Default for RawRegistrar {
    fn default() -> Self {
        Self {
            min_expires: Duration::from_secs(60),
            max_expires: Duration::from_secs(3600),
            default_expires: Duration::from_secs(3600),
            max_contacts: 5,
        }
    }
}

#[derive(Debug, Clone)]
pub struct RegistrarSettings {
    pub min_expires: Duration,
    pub max_expires: Duration,
    pub default_expires: Duration,
    pub max_contacts: usize,
}

impl Section for RawRegistrar {
    type Checked = RegistrarSettings;

    fn check(&self, problems: &mut Problems) -> RegistrarSettings {
        if self.min_expires.is_zero() {
            problems.add("registrar.min_expires", "must be at least 1s");
        }
        if self.max_expires < self.min_expires {
            problems.add(
                "registrar.max_expires",
                "must not be shorter than registrar.min_expires",
            );
        }
        if self.default_expires < self.min_expires || self.default_expires > self.max_expires {
            problems.add(
                "registrar.default_expires",
                "must lie between registrar.min_expires and registrar.max_expires",
            );
        }
        if self.max_contacts == 0 || self.max_contacts > 20 {
            problems.add(
                "registrar.max_contacts",
                "must be between 1 and 20: the 200 OK to a REGISTER lists every contact and must fit in one UDP datagram",
            );
        }
        RegistrarSettings {
            min_expires: self.min_expires,
            max_expires: self.max_expires,
            default_expires: self.default_expires,
            max_contacts: self.max_contacts,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::test_support::check_section;

    #[test]
    fn expiries_keep_their_order_and_contacts_fit_a_datagram() {
        let (r, keys) = check_section(&RawRegistrar::default());
        assert!(keys.is_empty(), "{keys:?}");
        assert_eq!(r.default_expires, Duration::from_secs(3600));
        let (_, keys) = check_section(&RawRegistrar {
            min_expires: Duration::ZERO,
            max_contacts: 21,
            ..RawRegistrar::default()
        });
        assert_eq!(keys, ["registrar.min_expires", "registrar.max_contacts"]);
        let (_, keys) = check_section(&RawRegistrar {
            default_expires: Duration::from_secs(30),
            max_contacts: 0,
            ..RawRegistrar::default()
        });
        assert_eq!(
            keys,
            ["registrar.default_expires", "registrar.max_contacts"]
        );
    }
}
