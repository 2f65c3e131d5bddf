//! `[http]`: where the HTTP listener (CTI API, metrics, wallboard) binds.

use std::net::SocketAddr;

use serde::Deserialize;

use super::{Problems, Section};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawHttp {
    pub listen: String,
}

impl Default for RawHttp {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
        }
    }
}

impl Section for RawHttp {
    /// The listener's address; `None`: no HTTP listener.
    type Checked = Option<SocketAddr>;

    fn check(&self, problems: &mut Problems) -> Option<SocketAddr> {
        super::sip::parse_listen("http.listen", &self.listen, problems)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::test_support::check_section;

    #[test]
    fn the_listener_is_an_address_or_off() {
        let (listen, keys) = check_section(&RawHttp::default());
        assert_eq!(listen, Some("127.0.0.1:8080".parse().unwrap()));
        assert!(keys.is_empty());
        let (listen, keys) = check_section(&RawHttp {
            listen: String::new(),
        });
        assert_eq!(listen, None);
        assert!(keys.is_empty());
        let (listen, keys) = check_section(&RawHttp {
            listen: "8080".into(),
        });
        assert_eq!(listen, None);
        assert_eq!(keys, ["http.listen"]);
    }
}
