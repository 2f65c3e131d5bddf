//! The call actor's side of recording (rulebook Q1): the recording starts at
//! the first bridge when the queue records, and at the end of the call the
//! actor waits for the file to be final so its checksum is on the call's
//! record before the call's last event.

use std::time::Duration;

use super::Actor;

/// Longest wait for the writer at hang-up (a slow disk must not keep a
/// finished call's actor for ever; the record then lacks the checksum).
const FINISH_WAIT: Duration = Duration::from_secs(30);

impl Actor {
    pub(super) fn start_recording(&mut self) {
        let settings = &self.ctx.settings;
        let queue = self.acd.connected.as_ref().map(|c| c.leg.queue.as_str());
        let records = settings.recording.enabled
            && queue
                .and_then(|q| settings.queues.get(q))
                .is_none_or(|q| q.record);
        if records {
            self.acd
                .recording
                .start(&settings.recording, &self.call_id, &self.ctx.bus);
        }
    }

    pub(super) async fn finish_recording(&mut self) {
        if let Some(done) = self.acd.recording.finish()
            && tokio::time::timeout(FINISH_WAIT, done).await.is_err()
        {
            tracing::warn!(
                "the recording was not finalised in time; its record lacks the checksum"
            );
        }
    }
}
