//! Leave-a-number callback (rulebook C3), the pure part: the caller keys or
//! confirms the number to be called back on (read back for confirmation,
//! `*` starts over, at most three numbers offered, a timeout counted from
//! the last key), and the called-back customer's ring limit counted from
//! the dial. Whether a number may be dialled (the trunk's dial plan) is
//! the driver's answer, handed in. The number entry lives in the waiting
//! stage (it ends with it); the recorded callback is the call's for good.

use std::time::{Duration, Instant};

use super::{CallCore, Effect, Stage};
use crate::events::Event;

/// How long the called-back customer's phone may ring.
pub const CUSTOMER_RING_LIMIT: Duration = Duration::from_secs(30);

/// How long the caller has to confirm or key a number after each prompt or key.
pub const ENTRY_TIMEOUT: Duration = Duration::from_secs(20);

/// Numbers a caller may offer before the callback offer is given up.
pub const ENTRY_ATTEMPTS: u32 = 3;

/// Longest number a caller may key in.
pub const ENTRY_MAX_DIGITS: usize = 20;

/// The key that confirms the number read back, and ends a keyed-in number.
pub const CONFIRM_KEY: char = '#';

/// The caller is giving the number to be called back on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NumberEntry {
    /// The allowed number read back, waiting for the caller's confirmation.
    pub proposed: Option<String>,
    /// Digits keyed so far.
    pub digits: String,
    /// Numbers offered so far (the caller's own counts as the first).
    pub attempts: u32,
    /// The last key or proposal: the timeout counts from it.
    last: Instant,
}

/// What a key asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryStep {
    Nothing,
    /// The caller confirmed the number read back: record it.
    Confirmed(String),
    /// The caller ended a keyed-in number: check it and propose it.
    Propose(String),
    /// The caller keys another number: the read-back stops.
    StopReadBack,
}

/// What a checked proposal asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Proposal {
    /// Read the number back with these prompts.
    ReadBack(Vec<String>),
    /// The number is refused; `give_up` when the caller has had its tries.
    Refused { give_up: bool },
}

impl NumberEntry {
    pub fn start(now: Instant) -> NumberEntry {
        NumberEntry {
            proposed: None,
            digits: String::new(),
            attempts: 0,
            last: now,
        }
    }

    /// When the caller has waited too long to key anything.
    pub fn deadline(&self) -> Instant {
        self.last + ENTRY_TIMEOUT
    }

    /// `number` offered, `checked` the dial plan's answer (the E.164 digits
    /// when it may be dialled).
    pub fn propose<E>(
        &mut self,
        number: &str,
        checked: Result<String, E>,
        now: Instant,
    ) -> Proposal {
        self.attempts += 1;
        self.digits.clear();
        self.last = now;
        match checked {
            Ok(e164) => {
                let mut prompts = vec!["callback_confirm".to_string()];
                prompts.extend(spoken_digits(number));
                prompts.push("callback_confirm_keys".to_string());
                self.proposed = Some(format!("+{e164}"));
                Proposal::ReadBack(prompts)
            }
            Err(_) => {
                self.proposed = None;
                Proposal::Refused {
                    give_up: self.attempts >= ENTRY_ATTEMPTS,
                }
            }
        }
    }

    /// A key: the confirmation key takes the number read back, or ends a
    /// keyed-in number; `*` starts over.
    pub fn key(&mut self, digit: char, now: Instant) -> EntryStep {
        self.last = now;
        match digit {
            CONFIRM_KEY if self.digits.is_empty() => match self.proposed.take() {
                Some(number) => EntryStep::Confirmed(number),
                None => EntryStep::Nothing,
            },
            CONFIRM_KEY => EntryStep::Propose(std::mem::take(&mut self.digits)),
            '*' => {
                self.digits.clear();
                EntryStep::Nothing
            }
            d if d.is_ascii_digit() => {
                let first = self.digits.is_empty();
                if first {
                    self.proposed = None;
                }
                if self.digits.len() < ENTRY_MAX_DIGITS {
                    self.digits.push(d);
                }
                if first {
                    EntryStep::StopReadBack
                } else {
                    EntryStep::Nothing
                }
            }
            _ => EntryStep::Nothing,
        }
    }
}

/// The called-back customer's phone rings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CustomerRinging {
    pub since: Instant,
}

impl CustomerRinging {
    pub fn deadline(&self) -> Instant {
        self.since + CUSTOMER_RING_LIMIT
    }
}

/// The callback the caller asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallbackRequest {
    /// The number to call back, in E.164 ("+" and digits).
    pub number: String,
    /// The customer's phone rings (its ring limit counts from the dial).
    pub ringing: Option<CustomerRinging>,
}

impl CallCore {
    /// The number the caller is giving, while it gives it.
    pub fn number_entry(&self) -> Option<&NumberEntry> {
        self.waiting().and_then(|w| w.number_entry.as_ref())
    }

    /// The callback the caller left a number for.
    pub fn callback(&self) -> Option<&CallbackRequest> {
        self.callback.as_ref()
    }

    pub(super) fn callback_deadline(&self) -> Option<Instant> {
        let entry = self.number_entry().map(NumberEntry::deadline);
        let customer = self
            .callback
            .as_ref()
            .and_then(|c| c.ringing)
            .map(|r| r.deadline());
        [entry, customer].into_iter().flatten().min()
    }

    /// The caller pressed the callback key: the announcements stop, the
    /// entry's timeout counts from now.
    pub(super) fn start_number_entry(&mut self, now: Instant) {
        if let Stage::Waiting(waiting) = &mut self.stage
            && waiting.kept.is_none()
        {
            waiting.stop_announcing();
            waiting.number_entry = Some(NumberEntry::start(now));
        }
    }

    /// A checked number: read back, or refused (and the entry given up
    /// after the last try).
    pub(super) fn number_proposed(
        &mut self,
        number: &str,
        e164: Option<String>,
        now: Instant,
        out: &mut Vec<Effect>,
    ) {
        let Some(entry) = self.waiting_entry() else {
            return;
        };
        match entry.propose(number, e164.ok_or(()), now) {
            Proposal::ReadBack(prompts) => out.push(Effect::Play(prompts)),
            Proposal::Refused { give_up: true } => self.end_number_entry(out),
            Proposal::Refused { give_up: false } => {
                out.push(Effect::Play(vec!["callback_number_refused".to_string()]))
            }
        }
    }

    pub(super) fn number_key(&mut self, digit: char, now: Instant, out: &mut Vec<Effect>) {
        let Some(entry) = self.waiting_entry() else {
            return;
        };
        match entry.key(digit, now) {
            EntryStep::Confirmed(number) => self.record_callback(number, out),
            EntryStep::Propose(keyed) => out.push(Effect::CheckNumber(keyed)),
            EntryStep::StopReadBack => out.push(Effect::StopPrompt),
            EntryStep::Nothing => {}
        }
    }

    fn waiting_entry(&mut self) -> Option<&mut NumberEntry> {
        match &mut self.stage {
            Stage::Waiting(waiting) => waiting.number_entry.as_mut(),
            _ => None,
        }
    }

    /// No number given: the caller goes on waiting, and may press the
    /// callback key again.
    fn end_number_entry(&mut self, out: &mut Vec<Effect>) {
        if let Stage::Waiting(waiting) = &mut self.stage
            && waiting.number_entry.take().is_some()
            && waiting.kept.is_none()
        {
            out.push(Effect::NumberEntryEnded);
        }
    }

    /// The caller confirmed `number`: it is recorded, the caller hears so
    /// and is hung up after the prompt; the call keeps its place.
    fn record_callback(&mut self, number: String, out: &mut Vec<Effect>) {
        let Stage::Waiting(waiting) = &mut self.stage else {
            return;
        };
        out.push(Effect::Publish(Event::CallbackRequested {
            call_id: self.ident.call_id.clone(),
            queue: waiting.place.queue.clone(),
            number: number.clone(),
        }));
        waiting.keep_for_callback();
        self.callback = Some(CallbackRequest {
            number,
            ringing: None,
        });
        out.push(Effect::Play(vec!["callback_recorded".to_string()]));
    }

    pub(super) fn customer_dialled(&mut self, now: Instant) {
        if let Some(callback) = self.callback.as_mut() {
            callback.ringing = Some(CustomerRinging { since: now });
        }
    }

    pub(super) fn customer_final(&mut self) {
        if let Some(callback) = self.callback.as_mut() {
            callback.ringing = None;
        }
    }

    /// The entry's timeout and the customer's ring limit.
    pub(super) fn callback_timers(&mut self, now: Instant, out: &mut Vec<Effect>) {
        if self
            .number_entry()
            .is_some_and(|entry| entry.deadline() <= now)
        {
            self.end_number_entry(out);
        }
        if let Some(callback) = self.callback.as_mut()
            && callback.ringing.is_some_and(|r| r.deadline() <= now)
        {
            callback.ringing = None;
            out.push(Effect::CustomerUnanswered);
        }
    }
}

/// The digit prompts that read a number out ("+" and separators are silent).
pub fn spoken_digits(number: &str) -> Vec<String> {
    number
        .chars()
        .filter(char::is_ascii_digit)
        .map(|d| format!("digit_{d}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(t0: Instant, s: u64) -> Instant {
        t0 + Duration::from_secs(s)
    }

    #[test]
    fn the_callers_own_number_is_read_back_and_confirmed() {
        let t0 = Instant::now();
        let mut entry = NumberEntry::start(t0);
        let read_back = entry.propose("+1 555-0100", Ok::<_, ()>("15550100".into()), t0);
        assert_eq!(
            read_back,
            Proposal::ReadBack(
                [
                    "callback_confirm",
                    "digit_1",
                    "digit_5",
                    "digit_5",
                    "digit_5",
                    "digit_0",
                    "digit_1",
                    "digit_0",
                    "digit_0",
                    "callback_confirm_keys"
                ]
                .map(String::from)
                .to_vec()
            )
        );
        assert_eq!(
            entry.key('#', at(t0, 3)),
            EntryStep::Confirmed("+15550100".into())
        );
        // Confirmed once: a second key confirms nothing.
        assert_eq!(entry.key('#', at(t0, 4)), EntryStep::Nothing);
    }

    #[test]
    fn a_keyed_number_replaces_the_read_back_and_star_starts_over() {
        let t0 = Instant::now();
        let mut entry = NumberEntry::start(t0);
        entry.propose("100", Ok::<_, ()>("100".into()), t0);
        assert_eq!(entry.key('5', at(t0, 1)), EntryStep::StopReadBack);
        assert_eq!(entry.proposed, None);
        assert_eq!(entry.key('5', at(t0, 2)), EntryStep::Nothing);
        assert_eq!(entry.key('*', at(t0, 3)), EntryStep::Nothing);
        assert_eq!(entry.key('4', at(t0, 4)), EntryStep::StopReadBack);
        entry.key('2', at(t0, 5));
        assert_eq!(entry.key('#', at(t0, 6)), EntryStep::Propose("42".into()));
        assert!(entry.digits.is_empty());
    }

    #[test]
    fn three_refused_numbers_give_the_offer_up() {
        let t0 = Instant::now();
        let mut entry = NumberEntry::start(t0);
        for (i, give_up) in [(1, false), (2, false), (3, true)] {
            assert_eq!(
                entry.propose("0900", Err("premium"), at(t0, i)),
                Proposal::Refused { give_up }
            );
        }
    }

    #[test]
    fn the_entry_times_out_from_the_last_key_and_digits_are_bounded() {
        let t0 = Instant::now();
        let mut entry = NumberEntry::start(t0);
        assert_eq!(entry.deadline(), at(t0, 20));
        for i in 0..30 {
            entry.key('7', at(t0, 5));
            let _ = i;
        }
        assert_eq!(entry.digits.len(), ENTRY_MAX_DIGITS);
        assert_eq!(entry.deadline(), at(t0, 25));
    }

    use super::super::tests::Script;
    use super::super::{Input, QueueTimers};

    fn waiting_caller() -> Script {
        let mut s = Script::new();
        s.enqueue("sales", QueueTimers::default(), 0);
        s
    }

    #[test]
    fn an_entry_with_no_key_ends_at_its_deadline_and_the_caller_waits_on() {
        let mut s = waiting_caller();
        assert_eq!(s.core.deadline(), None);
        s.at(10, Input::NumberEntryStarted);
        assert_eq!(s.core.deadline(), Some(s.t(30)));
        // Each key moves the timeout on.
        s.at(25, Input::NumberKey('5'));
        assert_eq!(s.core.deadline(), Some(s.t(45)));
        assert!(s.at(44, Input::Tick).is_empty());
        assert_eq!(s.at(45, Input::Tick), vec![Effect::NumberEntryEnded]);
        assert!(s.core.number_entry().is_none() && s.core.callback().is_none());
        assert!(s.core.queued());
        assert_eq!(s.core.deadline(), None);
        // Keys now belong to nobody.
        assert!(s.at(46, Input::NumberKey('#')).is_empty());
    }

    #[test]
    fn the_confirmed_number_is_recorded_published_and_kept_for_good() {
        let mut s = waiting_caller();
        s.at(10, Input::NumberEntryStarted);
        let read_back = s.at(
            10,
            Input::NumberProposed {
                number: "100".into(),
                e164: Some("100".into()),
            },
        );
        assert!(matches!(&read_back[..], [Effect::Play(p)] if p[0] == "callback_confirm"));
        let out = s.at(12, Input::NumberKey('#'));
        assert_eq!(
            out,
            vec![
                Effect::Publish(Event::CallbackRequested {
                    call_id: "c1".into(),
                    queue: "sales".into(),
                    number: "+100".into(),
                }),
                Effect::Play(vec!["callback_recorded".into()]),
            ]
        );
        assert_eq!(s.core.callback().map(|c| c.number.as_str()), Some("+100"));
        assert!(s.core.number_entry().is_none() && !s.core.queued());
        // The callback outlives the waiting stage.
        s.offer("1001", 40);
        s.answer("1001", 42);
        assert!(s.core.callback().is_some());
    }

    #[test]
    fn a_keyed_number_is_checked_by_the_driver_and_three_refusals_end_the_entry() {
        let mut s = waiting_caller();
        s.at(1, Input::NumberEntryStarted);
        let refused = |s: &mut Script, t| {
            s.at(
                t,
                Input::NumberProposed {
                    number: "0900".into(),
                    e164: None,
                },
            )
        };
        assert_eq!(
            refused(&mut s, 1),
            vec![Effect::Play(vec!["callback_number_refused".into()])]
        );
        assert_eq!(s.at(2, Input::NumberKey('4')), vec![Effect::StopPrompt]);
        assert!(s.at(3, Input::NumberKey('2')).is_empty());
        assert_eq!(
            s.at(4, Input::NumberKey('#')),
            vec![Effect::CheckNumber("42".into())]
        );
        assert_eq!(
            refused(&mut s, 5),
            vec![Effect::Play(vec!["callback_number_refused".into()])]
        );
        assert_eq!(refused(&mut s, 6), vec![Effect::NumberEntryEnded]);
        assert!(s.core.number_entry().is_none() && s.core.callback().is_none());
    }

    #[test]
    fn the_customer_ring_limit_comes_from_the_deadline_and_ends_the_ringing_once() {
        let mut s = waiting_caller();
        s.record_callback(5);
        s.offer("1001", 40);
        assert!(s.answer("1001", 42).contains(&Effect::DialCustomer));
        assert_eq!(s.core.deadline(), None);
        s.at(43, Input::CustomerDialled);
        assert_eq!(s.core.deadline(), Some(s.t(73)));
        assert!(s.at(72, Input::Tick).is_empty());
        assert_eq!(s.at(73, Input::Tick), vec![Effect::CustomerUnanswered]);
        assert_eq!(s.core.deadline(), None);
        assert!(s.at(80, Input::Tick).is_empty());
    }

    #[test]
    fn the_customers_answer_or_the_end_stops_its_ring_limit() {
        let mut s = waiting_caller();
        s.record_callback(5);
        s.offer("1001", 40);
        s.answer("1001", 42);
        s.at(43, Input::CustomerDialled);
        s.at(50, Input::CustomerFinal);
        assert_eq!(s.core.deadline(), None);
        s.at(51, Input::CustomerDialled);
        s.at(52, Input::Ended(crate::events::ReleasedBy::Caller));
        assert_eq!(s.core.deadline(), None);
    }

    #[test]
    fn the_customer_rings_thirty_seconds_from_the_dial() {
        let t0 = Instant::now();
        assert_eq!(CustomerRinging { since: t0 }.deadline(), at(t0, 30));
    }
}
