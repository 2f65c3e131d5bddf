//! Leave-a-number callback (rulebook C3), the pure part: the caller keys or
//! confirms the number to be called back on (read back for confirmation,
//! `*` starts over, at most three numbers offered, a timeout counted from
//! the last key), and the called-back customer's ring limit counted from
//! the dial. Whether a number may be dialled (the trunk's dial plan) is
//! the driver's answer, handed in.

use std::time::{Duration, Instant};

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

    #[test]
    fn the_customer_rings_thirty_seconds_from_the_dial() {
        let t0 = Instant::now();
        assert_eq!(CustomerRinging { since: t0 }.deadline(), at(t0, 30));
    }
}
