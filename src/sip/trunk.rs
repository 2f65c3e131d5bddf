//! Trunk admission: which sources may place calls into hotline, and to which numbers.
//!
//! Pure decisions over the configured trunks: an INVITE is admitted from a trunk
//! by its source address, or by digest credentials for trunks that have them;
//! the dialled number must be a hotline number the trunk may reach.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use crate::config::{HotlineNumber, Trunk};

/// How a source may be admitted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceAdmission<'a> {
    /// Inside this trunk's sources: admitted by address.
    Trusted(&'a Arc<Trunk>),
    /// Outside every trunk's sources: admitted only after digest authentication
    /// as one of these trunks.
    NeedsAuth(Vec<&'a Arc<Trunk>>),
    /// No trunk admits this source.
    Refused,
}

/// Whether a trunk may dial a number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NumberLookup<'a> {
    Found(&'a HotlineNumber),
    /// Not a hotline number at all.
    Unknown,
    /// A hotline number this trunk is not allowed to reach.
    NotForTrunk,
}

/// The trunks are shared: every admitted call holds its trunk, and a trunk's
/// dial plan (compiled patterns) is too large to copy per call.
#[derive(Debug, Clone, Default)]
pub struct TrunkTable {
    trunks: Vec<Arc<Trunk>>,
    numbers: BTreeMap<String, HotlineNumber>,
}

impl TrunkTable {
    pub fn new(trunks: Vec<Trunk>, numbers: BTreeMap<String, HotlineNumber>) -> Self {
        Self {
            trunks: trunks.into_iter().map(Arc::new).collect(),
            numbers,
        }
    }

    /// Decides how `source` may be admitted: a source inside a trunk's `sources`
    /// is admitted by address; any other source may still authenticate as one of
    /// the trunks that have credentials (a carrier whose addresses change).
    pub fn admit_source(&self, source: IpAddr) -> SourceAdmission<'_> {
        if let Some(trunk) = self.trusting(source) {
            return SourceAdmission::Trusted(trunk);
        }
        let candidates: Vec<&Arc<Trunk>> = self
            .trunks
            .iter()
            .filter(|t| t.credentials.is_some())
            .collect();
        if candidates.is_empty() {
            SourceAdmission::Refused
        } else {
            SourceAdmission::NeedsAuth(candidates)
        }
    }

    /// The trunk whose `sources` hold `source`, if any.
    pub fn trusting(&self, source: IpAddr) -> Option<&Arc<Trunk>> {
        self.trunks
            .iter()
            .find(|t| t.sources.iter().any(|net| net.contains(&source)))
    }

    /// Finds the number a trunk dialled.
    pub fn number_for(&self, trunk: &Trunk, dialled: &str) -> NumberLookup<'_> {
        match self.numbers.get(dialled) {
            None => NumberLookup::Unknown,
            Some(_) if !trunk.numbers.is_empty() && !trunk.numbers.iter().any(|n| n == dialled) => {
                NumberLookup::NotForTrunk
            }
            Some(number) => NumberLookup::Found(number),
        }
    }

    pub fn trunk(&self, name: &str) -> Option<&Arc<Trunk>> {
        self.trunks.iter().find(|t| t.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{NumberTarget, TrunkCredentials};
    use std::time::Duration;

    fn trunk(name: &str, sources: &[&str], creds: bool, numbers: &[&str]) -> Trunk {
        Trunk {
            name: name.into(),
            sources: sources.iter().map(|s| s.parse().unwrap()).collect(),
            credentials: creds.then(|| TrunkCredentials {
                username: name.into(),
                password: "pw".into(),
            }),
            numbers: numbers.iter().map(|s| s.to_string()).collect(),
            outbound: None,
            dialplan: Default::default(),
            outbound_limits: Default::default(),
        }
    }

    fn table() -> TrunkTable {
        let numbers = ["400", "401"]
            .into_iter()
            .map(|n| {
                (
                    n.to_string(),
                    HotlineNumber {
                        number: n.into(),
                        description: String::new(),
                        target: NumberTarget::Ivr("main".into()),
                        answer_after: Duration::ZERO,
                        max_duration: None,
                    },
                )
            })
            .collect();
        TrunkTable::new(
            vec![
                trunk("pbx", &["10.0.0.0/8"], false, &[]),
                trunk("carrier", &["192.0.2.0/24"], true, &["401"]),
                trunk("roaming", &[], true, &[]),
            ],
            numbers,
        )
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn source_inside_a_trunk_without_credentials_is_trusted() {
        let t = table();
        assert!(
            matches!(t.admit_source(ip("10.1.2.3")), SourceAdmission::Trusted(tr) if tr.name == "pbx")
        );
    }

    #[test]
    fn a_credentialed_trunk_is_trusted_from_its_own_sources() {
        let t = table();
        assert!(
            matches!(t.admit_source(ip("192.0.2.7")), SourceAdmission::Trusted(tr) if tr.name == "carrier")
        );
    }

    #[test]
    fn other_sources_may_authenticate_as_any_credentialed_trunk() {
        let t = table();
        match t.admit_source(ip("203.0.113.9")) {
            SourceAdmission::NeedsAuth(c) => {
                let names: Vec<_> = c.iter().map(|t| t.name.as_str()).collect();
                assert_eq!(names, vec!["carrier", "roaming"]);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn without_credentialed_trunks_a_foreign_source_is_refused() {
        let strict = TrunkTable::new(
            vec![trunk("pbx", &["10.0.0.0/8"], false, &[])],
            BTreeMap::new(),
        );
        assert_eq!(
            strict.admit_source(ip("203.0.113.9")),
            SourceAdmission::Refused
        );
        assert_eq!(strict.admit_source(ip("::1")), SourceAdmission::Refused);
    }

    #[test]
    fn numbers_are_found_refused_or_unknown() {
        let t = table();
        let pbx = t.trunk("pbx").unwrap();
        let carrier = t.trunk("carrier").unwrap();
        assert!(matches!(t.number_for(pbx, "400"), NumberLookup::Found(n) if n.number == "400"));
        assert_eq!(t.number_for(pbx, "999"), NumberLookup::Unknown);
        assert_eq!(t.number_for(carrier, "400"), NumberLookup::NotForTrunk);
        assert!(matches!(
            t.number_for(carrier, "401"),
            NumberLookup::Found(_)
        ));
    }
}
