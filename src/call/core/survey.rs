//! The post-call survey (rulebook Q3), the pure part: whom the caller
//! rates, and the score it keyed (`survey_score`, 1 to 5) read from the
//! survey flow's variables when the flow ends.

use std::collections::BTreeMap;

use crate::events::Event;

/// The IVR variable a survey flow collects the score in.
pub const SCORE_VAR: &str = "survey_score";

/// Whom the caller rates: the agent and the queue it answered from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Survey {
    pub queue: String,
    pub agent: String,
}

impl Survey {
    /// The score in the flow's variables, if the caller gave a valid one.
    pub fn score(vars: &BTreeMap<String, String>) -> Option<u8> {
        vars.get(SCORE_VAR)
            .and_then(|v| v.trim().parse::<u8>().ok())
            .filter(|s| (1..=5).contains(s))
    }

    /// The survey ended with the flow's `vars`: the answer to publish, if
    /// the caller gave a score.
    pub fn finish(self, call_id: &str, vars: &BTreeMap<String, String>) -> Option<Event> {
        let score = Survey::score(vars)?;
        Some(Event::SurveyAnswered {
            call_id: call_id.to_string(),
            queue: self.queue,
            agent: self.agent,
            score,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(score: &str) -> BTreeMap<String, String> {
        BTreeMap::from([(SCORE_VAR.to_string(), score.to_string())])
    }

    #[test]
    fn a_score_from_one_to_five_is_the_answer() {
        let survey = Survey {
            queue: "sales".into(),
            agent: "1001".into(),
        };
        assert_eq!(
            survey.finish("c1", &vars(" 4 ")),
            Some(Event::SurveyAnswered {
                call_id: "c1".into(),
                queue: "sales".into(),
                agent: "1001".into(),
                score: 4,
            })
        );
    }

    #[test]
    fn no_score_or_one_out_of_range_is_no_answer() {
        for given in ["0", "6", "x", ""] {
            assert_eq!(Survey::score(&vars(given)), None, "{given:?}");
        }
        assert_eq!(Survey::score(&BTreeMap::new()), None);
    }
}
