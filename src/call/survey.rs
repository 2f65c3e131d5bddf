//! The post-call survey (rulebook Q3): when the agent hangs up first, or the
//! call is transferred to it, the caller is not hung up but runs its queue's
//! survey flow; the key it presses there (`survey_score`, 1 to 5) becomes a
//! [`Event::SurveyAnswered`] when the flow ends.

use std::collections::BTreeMap;

use tracing::info;

use super::Actor;
use super::control::ControlError;
use super::core::survey::Survey;
use crate::events::EventBus;
use crate::events::ReleasedBy;
use crate::ivr::IvrRun;

impl Actor {
    /// The survey of the queue the connected agent answered from, with that
    /// queue and agent: (flow, queue, agent).
    pub(super) fn survey_flow(&self) -> Option<(String, String, String)> {
        let connected = self.acd.connected.as_ref()?;
        let flow = self
            .ctx
            .settings
            .queues
            .get(&connected.leg.queue)?
            .survey
            .clone()?;
        Some((
            flow,
            connected.leg.queue.clone(),
            connected.leg.agent.0.clone(),
        ))
    }

    /// The agent hung up first: when the call's queue has a survey, the
    /// agent is released and the caller runs it. False when there is none
    /// (the caller is then hung up as before).
    pub(super) fn agent_left_for_survey(&mut self) -> bool {
        // A callback's customer, or a caller left waiting on a consultation,
        // is hung up as before.
        if !self.core.bridged() || self.core.callback().is_some() || self.consult.running() {
            return false;
        }
        let Some((flow, queue, agent)) = self.survey_flow() else {
            return false;
        };
        if self.release_agent(ReleasedBy::Agent).is_none() {
            return false;
        }
        self.run_survey(&flow, queue, agent);
        true
    }

    /// A transfer to the survey (CTI, or an agent's REFER to the survey's
    /// number): the agent is released and the caller runs the survey.
    pub(super) fn transfer_to_survey(&mut self, end_agent: bool) -> Result<(), ControlError> {
        if !self.core.bridged() {
            return Err(ControlError::NotBridged {
                action: "be sent to the survey",
            });
        }
        let Some((flow, queue, agent)) = self.survey_flow() else {
            let queue = self.acd.connected.as_ref().map(|c| c.leg.queue.clone());
            return Err(ControlError::NoSurvey(queue.unwrap_or_default()));
        };
        let Some(connected) = self.release_agent(ReleasedBy::System) else {
            return Err(ControlError::NoAgent);
        };
        if end_agent && let Some(dialog) = connected.leg.answered() {
            super::acd::end_dialog(&self.ctx, dialog.clone());
        }
        self.end_consult("cancelled");
        self.end_monitor("transferred", true);
        self.run_survey(&flow, queue, agent);
        Ok(())
    }

    fn run_survey(&mut self, flow: &str, queue: String, agent: String) {
        info!(%flow, %queue, %agent, "the caller runs the survey");
        self.playing = None;
        self.media.stream.stop();
        self.survey = Some(Survey { queue, agent });
        let mut vars = BTreeMap::new();
        vars.insert("caller".to_string(), self.acd.caller.clone());
        vars.insert("number".to_string(), self.acd.number.clone());
        self.start_flow(flow, None, vars);
    }

    /// The survey flow ends (its own hangup or exit): its score, if one
    /// was given, is published.
    pub(super) fn survey_done(&mut self) {
        let vars = self.core.ivr().map(|(_, run)| run.vars());
        publish_survey(&self.call_id, &self.ctx.bus, self.survey.take(), vars);
    }

    /// The caller hung up in a flow (`run`, taken from the call's stage):
    /// a survey's score, if one was given, is published.
    pub(super) fn survey_left(&mut self, run: Option<&IvrRun>) {
        let vars = run.map(IvrRun::vars);
        publish_survey(&self.call_id, &self.ctx.bus, self.survey.take(), vars);
    }
}

fn publish_survey(
    call_id: &str,
    bus: &EventBus,
    survey: Option<Survey>,
    vars: Option<&BTreeMap<String, String>>,
) {
    let (Some(survey), Some(vars)) = (survey, vars) else {
        return;
    };
    let queue = survey.queue.clone();
    let score = Survey::score(vars);
    match survey.finish(call_id, vars) {
        Some(answer) => {
            info!(?score, %queue, "survey answered");
            bus.publish(answer);
        }
        None => info!(%queue, "the survey ended without a score"),
    }
}
