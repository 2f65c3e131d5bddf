//! The registrar: where each agent's phones can be reached (RFC 3261 §10).
//!
//! Owns the location service (bindings per address-of-record, several contacts
//! per agent), the rules of REGISTER processing (Expires bounds, refresh,
//! unregister, wildcard, CSeq ordering) and expiry. Pure state plus events: the
//! SIP edge authenticates and parses, this module decides.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use dashmap::DashMap;

use crate::config::RegistrarSettings;
use crate::events::{Event, EventBus, UnregisterReason};

/// One contact of an agent's phone.
#[derive(Debug, Clone, PartialEq)]
pub struct Binding {
    /// The contact URI, as the phone wrote it (without header parameters).
    pub uri: String,
    pub expires_at: Instant,
    pub call_id: String,
    pub cseq: u32,
    /// Where the REGISTER came from (the phone may be behind NAT).
    pub source: SocketAddr,
    /// "udp" or "tcp".
    pub transport: String,
}

impl Binding {
    /// Whole seconds left, rounded up so a live binding never shows 0.
    pub fn remaining_secs(&self, now: Instant) -> u64 {
        let left = self.expires_at.saturating_duration_since(now);
        left.as_secs() + u64::from(left.subsec_nanos() > 0)
    }
}

/// One Contact of a REGISTER.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContactRequest {
    pub uri: String,
    /// The contact's own `expires` parameter.
    pub expires: Option<u64>,
}

/// The Contact part of a REGISTER.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Contacts {
    /// No Contact: a query for the current bindings.
    Query,
    /// `Contact: *`: remove every binding (only with `Expires: 0`).
    Wildcard,
    List(Vec<ContactRequest>),
}

/// A REGISTER already authenticated for `aor`.
#[derive(Debug, Clone)]
pub struct RegisterRequest {
    pub aor: String,
    pub contacts: Contacts,
    /// The `Expires` header, if any.
    pub expires: Option<u64>,
    pub call_id: String,
    pub cseq: u32,
    pub source: SocketAddr,
    pub transport: String,
}

/// Why a REGISTER is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegisterError {
    #[error("Interval Too Brief: expires below the minimum of {min_secs}s")]
    IntervalTooBrief { min_secs: u64 },
    #[error("Contact: * is allowed only alone and with Expires: 0")]
    WildcardMisuse,
    #[error("CSeq {cseq} is not higher than {last} for this Call-ID")]
    OutOfOrder { cseq: u32, last: u32 },
}

#[derive(Debug)]
pub struct Registrar {
    settings: RegistrarSettings,
    bindings: DashMap<String, Vec<Binding>>,
    bus: EventBus,
}

impl Registrar {
    pub fn new(settings: RegistrarSettings, bus: EventBus) -> Self {
        Self {
            settings,
            bindings: DashMap::new(),
            bus,
        }
    }

    /// Applies a REGISTER and returns the AOR's live bindings afterwards.
    /// All checks run before any change, so a refused REGISTER changes nothing.
    pub fn apply(&self, req: RegisterRequest, now: Instant) -> Result<Vec<Binding>, RegisterError> {
        match &req.contacts {
            Contacts::Query => {}
            Contacts::Wildcard => {
                if req.expires != Some(0) {
                    return Err(RegisterError::WildcardMisuse);
                }
                self.remove_all(&req, now)?;
            }
            Contacts::List(list) => {
                let min = self.settings.min_expires.as_secs().max(1);
                let default = self.settings.default_expires.as_secs();
                let granted: Vec<(String, u64)> = list
                    .iter()
                    .map(|c| {
                        let asked = c.expires.or(req.expires).unwrap_or(default);
                        (c.uri.clone(), asked)
                    })
                    .collect();
                if granted.iter().any(|(_, e)| *e != 0 && *e < min) {
                    return Err(RegisterError::IntervalTooBrief { min_secs: min });
                }
                self.update(&req, &granted, now)?;
            }
        }
        Ok(self.contacts_at(&req.aor, now))
    }

    fn check_order(req: &RegisterRequest, existing: &[Binding]) -> Result<(), RegisterError> {
        match existing
            .iter()
            .find(|b| b.call_id == req.call_id && req.cseq <= b.cseq)
        {
            Some(b) => Err(RegisterError::OutOfOrder {
                cseq: req.cseq,
                last: b.cseq,
            }),
            None => Ok(()),
        }
    }

    fn remove_all(&self, req: &RegisterRequest, now: Instant) -> Result<(), RegisterError> {
        let removed = match self.bindings.get_mut(&req.aor) {
            None => Vec::new(),
            Some(mut entry) => {
                let live: Vec<Binding> = entry
                    .iter()
                    .filter(|b| b.expires_at > now)
                    .cloned()
                    .collect();
                Self::check_order(req, &live)?;
                std::mem::take(entry.value_mut())
            }
        };
        self.bindings.remove_if(&req.aor, |_, v| v.is_empty());
        for b in removed.into_iter().filter(|b| b.expires_at > now) {
            self.bus.publish(Event::RegistrationRemoved {
                aor: req.aor.clone(),
                contact: b.uri,
                reason: UnregisterReason::UnregisteredAll,
            });
        }
        Ok(())
    }

    fn update(
        &self,
        req: &RegisterRequest,
        granted: &[(String, u64)],
        now: Instant,
    ) -> Result<(), RegisterError> {
        let max = self.settings.max_expires.as_secs();
        let mut events = Vec::new();
        {
            let mut entry = self.bindings.entry(req.aor.clone()).or_default();
            let bindings = entry.value_mut();
            bindings.retain(|b| b.expires_at > now);
            for (uri, _) in granted {
                let same: Vec<Binding> =
                    bindings.iter().filter(|b| &b.uri == uri).cloned().collect();
                Self::check_order(req, &same)?;
            }
            for (uri, asked) in granted {
                let secs = (*asked).min(max);
                let position = bindings.iter().position(|b| &b.uri == uri);
                match (position, secs) {
                    (Some(i), 0) => {
                        let b = bindings.remove(i);
                        events.push(Event::RegistrationRemoved {
                            aor: req.aor.clone(),
                            contact: b.uri,
                            reason: UnregisterReason::Unregistered,
                        });
                    }
                    (None, 0) => {}
                    (Some(i), secs) => {
                        let b = &mut bindings[i];
                        b.expires_at = now + Duration::from_secs(secs);
                        b.call_id = req.call_id.clone();
                        b.cseq = req.cseq;
                        b.source = req.source;
                        b.transport = req.transport.clone();
                        events.push(Event::RegistrationRefreshed {
                            aor: req.aor.clone(),
                            contact: uri.clone(),
                            expires_secs: secs,
                            source: req.source,
                        });
                    }
                    (None, secs) => {
                        bindings.push(Binding {
                            uri: uri.clone(),
                            expires_at: now + Duration::from_secs(secs),
                            call_id: req.call_id.clone(),
                            cseq: req.cseq,
                            source: req.source,
                            transport: req.transport.clone(),
                        });
                        events.push(Event::RegistrationAdded {
                            aor: req.aor.clone(),
                            contact: uri.clone(),
                            expires_secs: secs,
                            source: req.source,
                        });
                    }
                }
            }
            // Over the limit, the binding closest to expiry makes room: a phone
            // that restarted on a new port must not lock its agent out.
            while bindings.len() > self.settings.max_contacts {
                let Some(oldest) = bindings
                    .iter()
                    .enumerate()
                    .min_by_key(|(_, b)| b.expires_at)
                    .map(|(i, _)| i)
                else {
                    break;
                };
                let b = bindings.remove(oldest);
                events.push(Event::RegistrationRemoved {
                    aor: req.aor.clone(),
                    contact: b.uri,
                    reason: UnregisterReason::Evicted,
                });
            }
        }
        self.bindings.remove_if(&req.aor, |_, v| v.is_empty());
        for e in events {
            self.bus.publish(e);
        }
        Ok(())
    }

    /// The live bindings of an AOR, soonest-registered first.
    pub fn contacts(&self, aor: &str) -> Vec<Binding> {
        self.contacts_at(aor, Instant::now())
    }

    fn contacts_at(&self, aor: &str, now: Instant) -> Vec<Binding> {
        self.bindings
            .get(aor)
            .map(|v| v.iter().filter(|b| b.expires_at > now).cloned().collect())
            .unwrap_or_default()
    }

    /// Removes bindings that expired by `now`, publishing an event for each.
    pub fn sweep(&self, now: Instant) -> usize {
        let mut expired = Vec::new();
        self.bindings.retain(|aor, bindings| {
            bindings.retain(|b| {
                let live = b.expires_at > now;
                if !live {
                    expired.push((aor.clone(), b.uri.clone()));
                }
                live
            });
            !bindings.is_empty()
        });
        let count = expired.len();
        for (aor, contact) in expired {
            self.bus.publish(Event::RegistrationRemoved {
                aor,
                contact,
                reason: UnregisterReason::Expired,
            });
        }
        count
    }

    /// Number of live bindings over all agents.
    pub fn active_bindings(&self) -> usize {
        self.bindings.iter().map(|e| e.value().len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registrar(bus: &EventBus) -> Registrar {
        Registrar::new(
            RegistrarSettings {
                min_expires: Duration::from_secs(60),
                max_expires: Duration::from_secs(3600),
                default_expires: Duration::from_secs(1800),
                max_contacts: 2,
            },
            bus.clone(),
        )
    }

    fn req(contacts: Contacts, expires: Option<u64>, call_id: &str, cseq: u32) -> RegisterRequest {
        RegisterRequest {
            aor: "1001".into(),
            contacts,
            expires,
            call_id: call_id.into(),
            cseq,
            source: "127.0.0.1:5070".parse().unwrap(),
            transport: "udp".into(),
        }
    }

    fn list(uris: &[(&str, Option<u64>)]) -> Contacts {
        Contacts::List(
            uris.iter()
                .map(|(u, e)| ContactRequest {
                    uri: u.to_string(),
                    expires: *e,
                })
                .collect(),
        )
    }

    #[test]
    fn register_refresh_and_unregister_one_contact() {
        let bus = EventBus::new(64);
        let mut rx = bus.subscribe();
        let r = registrar(&bus);
        let now = Instant::now();
        let b = r
            .apply(req(list(&[("sip:a@h", None)]), Some(120), "c1", 1), now)
            .unwrap();
        assert_eq!(b.len(), 1);
        assert_eq!(b[0].remaining_secs(now), 120);
        let b = r
            .apply(req(list(&[("sip:a@h", Some(300))]), None, "c1", 2), now)
            .unwrap();
        assert_eq!(
            b[0].remaining_secs(now),
            300,
            "contact param wins over header"
        );
        let b = r
            .apply(req(list(&[("sip:a@h", None)]), Some(0), "c1", 3), now)
            .unwrap();
        assert!(b.is_empty());
        let kinds: Vec<_> = std::iter::from_fn(|| rx.try_recv().ok())
            .map(|s| match s.event {
                Event::RegistrationAdded { .. } => "added",
                Event::RegistrationRefreshed { .. } => "refreshed",
                Event::RegistrationRemoved { .. } => "removed",
                _ => "other",
            })
            .collect();
        assert_eq!(kinds, vec!["added", "refreshed", "removed"]);
    }

    #[test]
    fn default_and_max_expires_apply() {
        let bus = EventBus::new(8);
        let r = registrar(&bus);
        let now = Instant::now();
        let b = r
            .apply(req(list(&[("sip:a@h", None)]), None, "c1", 1), now)
            .unwrap();
        assert_eq!(b[0].remaining_secs(now), 1800);
        let b = r
            .apply(req(list(&[("sip:a@h", Some(99999))]), None, "c1", 2), now)
            .unwrap();
        assert_eq!(b[0].remaining_secs(now), 3600);
    }

    #[test]
    fn too_brief_is_refused_without_changing_anything() {
        let bus = EventBus::new(8);
        let r = registrar(&bus);
        let now = Instant::now();
        let err = r
            .apply(
                req(
                    list(&[("sip:a@h", None), ("sip:b@h", Some(5))]),
                    Some(120),
                    "c1",
                    1,
                ),
                now,
            )
            .unwrap_err();
        assert_eq!(err, RegisterError::IntervalTooBrief { min_secs: 60 });
        assert!(r.contacts("1001").is_empty());
    }

    #[test]
    fn several_contacts_and_wildcard_removal() {
        let bus = EventBus::new(8);
        let r = registrar(&bus);
        let now = Instant::now();
        r.apply(req(list(&[("sip:a@h", None)]), Some(120), "c1", 1), now)
            .unwrap();
        let b = r
            .apply(req(list(&[("sip:b@h", None)]), Some(120), "c2", 1), now)
            .unwrap();
        assert_eq!(b.len(), 2);
        assert_eq!(
            r.apply(req(Contacts::Wildcard, Some(60), "c3", 1), now)
                .unwrap_err(),
            RegisterError::WildcardMisuse
        );
        assert!(
            r.apply(req(Contacts::Wildcard, Some(0), "c3", 1), now)
                .unwrap()
                .is_empty()
        );
        assert_eq!(r.active_bindings(), 0);
    }

    #[test]
    fn query_lists_without_changing() {
        let bus = EventBus::new(8);
        let r = registrar(&bus);
        let now = Instant::now();
        r.apply(req(list(&[("sip:a@h", None)]), Some(120), "c1", 1), now)
            .unwrap();
        let b = r
            .apply(
                req(Contacts::Query, None, "q", 1),
                now + Duration::from_secs(20),
            )
            .unwrap();
        assert_eq!(b[0].remaining_secs(now + Duration::from_secs(20)), 100);
    }

    #[test]
    fn out_of_order_cseq_for_the_same_call_id_is_refused() {
        let bus = EventBus::new(8);
        let r = registrar(&bus);
        let now = Instant::now();
        r.apply(req(list(&[("sip:a@h", None)]), Some(120), "c1", 5), now)
            .unwrap();
        assert_eq!(
            r.apply(req(list(&[("sip:a@h", None)]), Some(120), "c1", 5), now)
                .unwrap_err(),
            RegisterError::OutOfOrder { cseq: 5, last: 5 }
        );
        // another Call-ID (the phone restarted) is fine
        r.apply(req(list(&[("sip:a@h", None)]), Some(120), "c2", 1), now)
            .unwrap();
    }

    #[test]
    fn the_contact_closest_to_expiry_makes_room() {
        let bus = EventBus::new(8);
        let r = registrar(&bus);
        let now = Instant::now();
        r.apply(req(list(&[("sip:a@h", None)]), Some(100), "c1", 1), now)
            .unwrap();
        r.apply(req(list(&[("sip:b@h", None)]), Some(200), "c2", 1), now)
            .unwrap();
        let b = r
            .apply(req(list(&[("sip:c@h", None)]), Some(300), "c3", 1), now)
            .unwrap();
        let uris: Vec<_> = b.iter().map(|b| b.uri.as_str()).collect();
        assert_eq!(uris, vec!["sip:b@h", "sip:c@h"]);
    }

    #[test]
    fn bindings_expire_on_time_with_an_event() {
        let bus = EventBus::new(8);
        let mut rx = bus.subscribe();
        let r = registrar(&bus);
        let now = Instant::now();
        r.apply(req(list(&[("sip:a@h", None)]), Some(60), "c1", 1), now)
            .unwrap();
        let _added = rx.try_recv().unwrap();
        assert_eq!(r.sweep(now + Duration::from_secs(59)), 0);
        assert_eq!(
            r.contacts_at("1001", now + Duration::from_secs(60)).len(),
            0
        );
        assert_eq!(r.sweep(now + Duration::from_secs(60)), 1);
        match rx.try_recv().unwrap().event {
            Event::RegistrationRemoved { reason, .. } => {
                assert_eq!(reason, UnregisterReason::Expired)
            }
            other => panic!("{other:?}"),
        }
    }
}
