//! One actor (tokio task) per inbound call: answers it, runs its IVR flow over
//! real media, queues it, rings agents, bridges the caller with the agent who
//! answers, and follows both dialogs until the call ends.
//!
//! The actor owns its call's state and reads its own inputs in one loop: dialog
//! events of the caller's and the agents' dialogs (ACK, BYE, re-INVITE, INFO),
//! inbound RTP and RTCP of both legs, the pacer's playback events, the router's
//! offers, its timers and lookup replies. Nothing about one call is shared with
//! another except the registry of live calls (shutdown, router decisions).
//! While caller and agent simply talk, a media loop ([`crate::media::engine`])
//! relays the bridge instead, and the actor takes it back before anything
//! changes the media picture.
//!
//! The decisions of the call's life (the IVR flow it is in, the greeting, its
//! place in a queue, the ring limit, who is connected, the hold and its limit,
//! the callback number, the survey's score, what the end of a prompt means)
//! are the pure call core's ([`self::core`]), which takes inputs at a given
//! instant and answers with effects; the core's stage is the call's one state.
//! The actor is its driver: it turns what happens into inputs, carries out the
//! effects, asks the core where the call stands, and alone touches sockets,
//! SIP dialogs and timers.

mod acd;
pub mod agent_leg;
mod callback;
pub mod consult;
pub mod context;
pub mod control;
pub mod core;
pub mod dialog_events;
pub mod features;
mod glare;
pub mod lifetime;
pub mod lookup;
pub mod media_session;
pub mod monitor;
pub mod policy;
mod record;
mod refer;
pub mod relay;
pub mod session_timer;
mod survey;

pub use self::core::Side;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use rsipstack::dialog::DialogId;
use rsipstack::dialog::dialog::{DialogState, TerminatedReason};
use rsipstack::dialog::invite_dialog::InviteDialog;
use rsipstack::sip::{Header, HeadersExt, Method, Request, StatusCode};
use rsipstack::transaction::Transaction;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{Instrument, debug, info, info_span, warn};

use self::acd::end_dialog;
use self::context::CallContext;
use self::core::Input as CoreInput;
use self::media_session::MediaSession;
use self::session_timer::UasDecision;
use crate::acd::RouterError;
use crate::config::NumberTarget;
use crate::events::{Event, ReleasedBy};
use crate::ivr::{Action, Input, IvrRun, LookupReply};
use crate::media::pacer::MediaEvent;
use crate::media::sdp::{self, SdpError};
use crate::sip::{Admitted, EdgeContext, header_values, local_contact};

/// Where a blind transfer sends the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransferTarget {
    Queue(String),
    /// A named agent, offered the call at once if ready.
    Agent(String),
    /// The post-call survey of the call's queue (not counted as a transfer).
    Survey,
    /// An IVR flow (a hotline number that leads to one); the queue's survey
    /// flow is the survey.
    Ivr(String),
}

/// What the rest of the server tells a call actor.
#[derive(Debug)]
pub enum CallCommand {
    /// The router reserved these agents for the call: ring them.
    Offer {
        agents: Vec<crate::acd::AgentId>,
        queue: crate::acd::QueueId,
    },
    /// The router took the offer to `agent` back (another agent answered).
    Cancel { agent: crate::acd::AgentId },
    /// The router refused to queue the call.
    Refused(crate::acd::RouterError),
    /// The queue is paused: straight to its overflow.
    Paused,
    /// CTI: end the call.
    Hangup,
    /// CTI: put the bridged call on hold (true) or take it off (false).
    Hold(bool),
    /// CTI: pass the bridged call on (blind transfer).
    Transfer {
        target: TransferTarget,
        reply: tokio::sync::oneshot::Sender<Result<(), control::ControlError>>,
    },
    /// Where the caller stands in its queue (None: no longer waiting).
    Position(Option<crate::acd::QueuePosition>),
    /// A phone's answer (the SDP body, or why not) to the re-INVITE that
    /// takes the call off hold.
    Resumed {
        side: acd::Side,
        answer: Result<Vec<u8>, String>,
    },
    /// The phone on `side` refused hotline's re-INVITE taking the call off
    /// hold with 491 (glare): it is sent again after the RFC 3261 §14.1 wait.
    ResumeCrossed { side: acd::Side, attempt: u32 },
    /// The wait after a crossed re-INVITE is over: take `side` off hold again.
    ResumeAgain { side: acd::Side, attempt: u32 },
    /// The outcome of a session refresh hotline sent on `side`'s dialog.
    Refreshed {
        side: acd::Side,
        result: session_timer::RefreshOutcome,
    },
    /// A supervisor's monitoring of the call (rulebook Q2).
    Monitor(monitor::MonitorCommand),
    /// A consultation, attended transfer or three-way call (rulebook L6).
    Consult(consult::ConsultCommand),
    /// A consulted agent's phones were rung.
    ConsultLeg(Box<consult::PendingLeg>),
}

/// The live calls, by Call-ID, so shutdown can end them and router decisions
/// reach them.
#[derive(Default)]
pub struct Calls {
    dialogs: DashMap<String, InviteDialog>,
    /// Commands travel boxed: a channel keeps room for 32 of them.
    mailboxes: DashMap<String, mpsc::UnboundedSender<Box<CallCommand>>>,
    /// Queues paused over the CTI API: new callers go to the overflow.
    paused: dashmap::DashSet<String>,
    /// Session timer refreshes and refusals, for the metrics page.
    pub session_timers: session_timer::Totals,
    /// The states of the calls' dialogs, handed to their calls.
    pub dialog_events: dialog_events::DialogEvents,
}

impl Calls {
    /// Pauses or resumes a queue for new callers.
    pub fn set_paused(&self, queue: &str, paused: bool) {
        if paused {
            self.paused.insert(queue.to_string());
        } else {
            self.paused.remove(queue);
        }
    }

    pub fn is_paused(&self, queue: &str) -> bool {
        self.paused.contains(queue)
    }

    /// The dialog shutdown ends for `call_id` (a callback's new one).
    pub fn register_dialog(&self, call_id: &str, dialog: InviteDialog) {
        self.dialogs.insert(call_id.to_string(), dialog);
    }

    /// Hands a command to a live call's actor; false when the call is gone.
    /// A command for a call's consultation (the router's id for it) reaches
    /// the call itself.
    pub fn deliver(&self, call_id: &str, command: CallCommand) -> bool {
        if let Some(call) = call_id.strip_suffix(consult::CONSULT_SUFFIX) {
            let command = CallCommand::Consult(consult::ConsultCommand::Router(Box::new(command)));
            return self
                .mailboxes
                .get(call)
                .is_some_and(|mailbox| mailbox.send(Box::new(command)).is_ok());
        }
        self.mailboxes
            .get(call_id)
            .is_some_and(|mailbox| mailbox.send(Box::new(command)).is_ok())
    }

    /// Like [`Calls::deliver`], but hands the command back when the call is
    /// gone, so what it carries (a transaction) can still be answered.
    pub fn try_deliver(&self, call_id: &str, command: CallCommand) -> Result<(), CallCommand> {
        match self.mailboxes.get(call_id) {
            Some(mailbox) => mailbox.send(Box::new(command)).map_err(|e| *e.0),
            None => Err(command),
        }
    }

    pub fn len(&self) -> usize {
        self.dialogs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.dialogs.is_empty()
    }

    /// Ends every live call: BYE when answered, 503 when still ringing. Does not
    /// wait for the BYEs' answers: a silent peer must not hold the shutdown for
    /// the 32 s of BYE retransmissions.
    pub fn hang_up_all(&self) {
        for dialog in self.dialogs.iter().map(|e| e.value().clone()) {
            if matches!(
                dialog.state(),
                DialogState::Confirmed(..) | DialogState::WaitAck(..)
            ) {
                tokio::spawn(async move {
                    if let Err(e) = dialog.bye().await {
                        debug!(error = %e, "BYE at shutdown failed");
                    }
                });
            } else {
                let _ = dialog.reject(
                    Some(StatusCode::ServiceUnavailable),
                    Some("SIP;cause=503;text=\"shutting down\"".into()),
                );
            }
        }
    }
}

fn released_by(reason: &TerminatedReason) -> ReleasedBy {
    match reason {
        TerminatedReason::UacBye | TerminatedReason::UacCancel | TerminatedReason::UacBusy => {
            ReleasedBy::Caller
        }
        _ => ReleasedBy::System,
    }
}

/// The session timer settings, when session timers are on.
pub(super) fn timer_settings(ctx: &EdgeContext) -> Option<session_timer::TimerSettings> {
    let sip = &ctx.settings.sip;
    sip.session_expires
        .map(|session_expires| session_timer::TimerSettings {
            session_expires,
            min_se: sip.min_se,
        })
}

fn sdp_header() -> Header {
    Header::ContentType("application/sdp".into())
}

fn content_type(req: &Request) -> String {
    header_values(&req.headers, "Content-Type")
        .first()
        .map(|v| v.to_string())
        .unwrap_or_default()
}

/// Runs one inbound call from its admitted INVITE to its end.
///
/// The answer (the offer, the dialog, the ringing) and the call's run are two
/// futures: the answer's state is large and needed for a moment, so it is
/// boxed and freed before the run, which is all a call keeps for its life.
pub fn run_inbound(
    ctx: Arc<CallContext>,
    tx: Transaction,
    admitted: Admitted,
) -> impl Future<Output = ()> + Send + 'static {
    let call_id = tx
        .original
        .call_id_header()
        .map(|c| c.value().to_string())
        .unwrap_or_default();
    let span = info_span!(
        "call",
        call_id = %call_id,
        number = %admitted.number.number,
        trunk = %admitted.trunk.name
    );
    async move {
        let answered = Box::pin(answer_call(ctx, tx, admitted, call_id)).await;
        if let Some(answered) = answered {
            run_call(answered).await;
        }
    }
    .instrument(span)
}

/// A SIP Warning header (RFC 3261 §20.43) for an SDP problem.
fn sdp_warning(e: &SdpError) -> Header {
    let text = e.to_string().replace('"', "'");
    Header::Other(
        "Warning".into(),
        format!("{} hotline \"{text}\"", e.warn_code()),
    )
}

async fn refuse(tx: &mut Transaction, status: StatusCode, warning: Option<&SdpError>) {
    let headers = warning.map(|e| vec![sdp_warning(e)]).unwrap_or_default();
    if let Err(e) = tx.reply_with(status, headers, None).await {
        debug!(error = %e, "could not refuse the INVITE");
    }
}

/// An answered call (or one that ended while it rang), ready to run.
struct Answered {
    actor: Actor,
    /// The caller's dialog and its events.
    dialog: InviteDialog,
    state_rx: dialog_events::CallDialogStates,
    /// The INVITE server transaction, running beside the actor.
    transaction: tokio::task::JoinHandle<()>,
    ended: Option<ReleasedBy>,
}

/// Answers an admitted INVITE and sets its actor up; `None` when the call
/// was refused.
async fn answer_call(
    ctx: Arc<CallContext>,
    mut tx: Transaction,
    admitted: Admitted,
    call_id: String,
) -> Option<Box<Answered>> {
    let media_room = ctx.media.clone();
    let media_ip = ctx
        .udp_addr
        .or(ctx.tcp_addr)
        .map(|a| a.ip())
        .unwrap_or(IpAddr::from([127, 0, 0, 1]));
    let advertise = ctx.settings.sip.external.map(|a| a.ip());

    // The offer first: a call we cannot talk to is refused before anything else.
    let offer = if tx.original.body.iter().all(|b| b.is_ascii_whitespace()) {
        None
    } else {
        match sdp::parse(&tx.original.body) {
            Ok(offer) => Some(offer),
            Err(e) => {
                info!(error = %e, "unusable SDP offer");
                refuse(&mut tx, StatusCode::NotAcceptableHere, Some(&e)).await;
                return None;
            }
        }
    };
    // Session timers (RFC 4028): an interval below ours is refused with 422.
    let mut accept_headers = vec![sdp_header()];
    let mut caller_agreed = None;
    if let Some(timers) = timer_settings(&ctx) {
        match session_timer::negotiate_uas(&tx.original, &timers) {
            UasDecision::TooSmall { min_se } => {
                debug!(min_se, "session interval too small: 422");
                session_timer::Totals::count(&ctx.calls.session_timers.too_small);
                let headers = vec![Header::Other("Min-SE".into(), min_se.to_string())];
                if let Err(e) = tx
                    .reply_with(StatusCode::SessionIntervalTooSmall, headers, None)
                    .await
                {
                    debug!(error = %e, "could not answer 422");
                }
                return None;
            }
            UasDecision::Run {
                interval,
                we_refresh,
                headers,
            } => {
                accept_headers.extend(headers);
                caller_agreed = Some((
                    interval,
                    we_refresh,
                    session_timer::allows_update(&tx.original.headers),
                ));
            }
        }
    }
    let mut media = match MediaSession::open(&media_room, media_ip, advertise).await {
        Ok(m) => m,
        Err(e) => {
            warn!(error = %e, "no RTP ports");
            refuse(&mut tx, StatusCode::ServiceUnavailable, None).await;
            return None;
        }
    };
    media.set_signalling(Some(admitted.source.ip()));
    let local_sdp = match &offer {
        Some(offer) => match media.answer(offer) {
            Ok(answer) => answer,
            Err(e) => {
                info!(error = %e, "offer refused");
                refuse(&mut tx, StatusCode::NotAcceptableHere, Some(&e)).await;
                return None;
            }
        },
        None => media.offer(),
    };

    let contact = local_contact(&ctx, &tx, &admitted.number.number);
    let (state_tx, mut state_rx) = ctx.calls.dialog_events.open();
    let dialog = match ctx.dialogs.get_or_create_server_invite(
        &tx,
        state_tx.sender_for(&call_id),
        None,
        contact,
    ) {
        Ok(d) => d,
        Err(e) => {
            warn!(error = %e, "cannot create the dialog");
            refuse(&mut tx, StatusCode::ServerInternalError, None).await;
            return None;
        }
    };
    ctx.calls.dialogs.insert(call_id.clone(), dialog.clone());
    let caller = admitted.caller.clone();
    ctx.bus.publish(Event::CallAdmitted {
        call_id: call_id.clone(),
        trunk: admitted.trunk.name.clone(),
        caller: caller.clone(),
        number: admitted.number.number.clone(),
        source: admitted.source,
    });
    info!(caller_source = %admitted.source, "call admitted");

    // The INVITE server transaction runs beside the actor: it sends 100/1xx/2xx
    // as the actor asks, absorbs retransmissions and turns CANCEL into 487.
    // Its state is boxed: the call holds the task's handle (and so the task's
    // memory) to its end, the transaction's state is freed when it ends.
    let mut invite_dialog = dialog.clone();
    let transaction = tokio::spawn(Box::pin(async move {
        if let Err(e) = invite_dialog.handle(&mut tx).await {
            debug!(error = %e, "INVITE transaction ended with an error");
        }
    }));

    let mut ended: Option<ReleasedBy> = None;
    let answer_after = admitted.number.answer_after;
    if !answer_after.is_zero() {
        let _ = dialog.ringing(None, None);
        let ring = tokio::time::sleep(answer_after);
        tokio::pin!(ring);
        loop {
            tokio::select! {
                _ = &mut ring => break,
                state = state_rx.recv() => match state {
                    Some(DialogState::Terminated(_, reason)) => {
                        info!(?reason, "caller gave up while ringing");
                        ended = Some(released_by(&reason));
                        break;
                    }
                    Some(_) => {}
                    None => { ended = Some(ReleasedBy::System); break; }
                }
            }
        }
    }
    if ended.is_none()
        && let Err(e) = dialog.accept(Some(accept_headers), Some(local_sdp.into_bytes()))
    {
        warn!(error = %e, "could not answer");
        ended = Some(ReleasedBy::System);
    }

    let (mailbox, commands) = mpsc::unbounded_channel();
    ctx.calls.mailboxes.insert(call_id.clone(), mailbox.clone());
    let mut actor = Actor {
        ctx: ctx.clone(),
        call_id: call_id.clone(),
        media,
        language: media_room.language.clone(),
        timer: None,
        lookups: (None, LookupReplies::default()),
        playing: None,
        answered: false,
        delayed_offer: offer.is_none(),
        core: self::core::CallCore::new(
            self::core::Ident {
                call_id: call_id.clone(),
                caller: caller.clone(),
                number: admitted.number.number.clone(),
            },
            policy::CallPolicy::from_settings(&ctx.settings),
        ),
        acd: acd::AcdState::new(
            &ctx,
            call_id.clone(),
            &admitted.trunk,
            caller.clone(),
            admitted.number.number.clone(),
            mailbox,
            commands,
            state_tx,
        ),
        caller_dialog: dialog.clone(),
        mixed: None,
        supervisor: self::core::monitor::MonitorMachine::new(&call_id),
        consult: consult::Consult::new(&call_id, ctx.settings.acd.max_transfers),
        survey: None,
        referred: Vec::new(),
        lifetime: lifetime::Lifetime::new(
            ctx.settings.media.rtp_timeout,
            admitted.number.max_duration,
        ),
        on_loop: None,
        loop_refused: false,
        listen_mark: None,
        loop_keys: mpsc::unbounded_channel(),
    };
    actor.lifetime.caller_agreed = caller_agreed;
    if ended.is_none() {
        let mut vars = BTreeMap::new();
        vars.insert("caller".to_string(), caller);
        vars.insert("number".to_string(), admitted.number.number.clone());
        if admitted.blocked {
            actor.core_do(CoreInput::Close);
            actor.play(&["blocked".to_string()], false);
        } else {
            actor.begin(&admitted.number.target, vars);
        }
    }
    Some(Box::new(Answered {
        actor,
        dialog,
        state_rx,
        transaction,
        ended,
    }))
}

/// Runs an answered call to its end, then lets it go.
async fn run_call(answered: Box<Answered>) {
    // Moved out whole, so that the box is freed now rather than at the end.
    let answered = {
        let boxed = answered;
        *boxed
    };
    let Answered {
        mut actor,
        dialog,
        mut state_rx,
        transaction,
        mut ended,
    } = answered;
    let ctx = actor.ctx.clone();
    let call_id = actor.call_id.clone();
    let dialog_id: DialogId = dialog.id();
    if ended.is_none() {
        ended = actor.run(&dialog, &mut state_rx).await;
    }
    ctx.calls.mailboxes.remove(&call_id);
    // A flow the caller hung up in is left last, after the call's release.
    let flow_left = actor.core.take_ivr();
    actor.leave(ended.unwrap_or(ReleasedBy::System));
    actor.finish_recording().await;
    actor.survey_left(flow_left.as_ref().map(|(_, run)| &**run));

    if let Some((flow, run)) = &flow_left {
        ctx.bus.publish(Event::IvrExited {
            call_id: call_id.clone(),
            flow: flow.clone(),
            exit: format!("caller_hung_up:{}", run.node()),
        });
    }
    ctx.bus.publish(Event::MediaStopped {
        call_id: call_id.clone(),
        packets_in: actor.media.packets_in(),
        dropped: actor.media.dropped(),
    });
    ctx.bus.publish(Event::CallEnded {
        call_id: call_id.clone(),
        released_by: ended.unwrap_or(ReleasedBy::System),
        answered: actor.answered,
    });
    ctx.calls.dialogs.remove(&call_id);
    let caller_dialog = actor.caller_dialog.clone();
    drop(actor);
    // Let the INVITE transaction finish its own timers (487/ACK, 2xx/ACK).
    let _ = tokio::time::timeout(Duration::from_secs(40), transaction).await;
    ctx.dialogs.remove_dialog(&dialog_id);
    // A called-back customer's dialog is hotline's own (UAC): drop it too.
    ctx.dialogs.remove_dialog(&caller_dialog.id());
}

type LookupResult = Result<LookupReply, String>;

/// The replies of a call's lookups. The channel is made at the call's first
/// lookup: most calls never look anything up, and a channel keeps room for
/// 32 replies from its start.
#[derive(Default)]
struct LookupReplies(Option<mpsc::UnboundedReceiver<LookupResult>>);

impl LookupReplies {
    /// The next reply; never, while no lookup was made.
    async fn recv(&mut self) -> Option<LookupResult> {
        match &mut self.0 {
            Some(replies) => replies.recv().await,
            None => std::future::pending().await,
        }
    }
}

struct Actor {
    ctx: Arc<CallContext>,
    call_id: String,
    media: MediaSession,
    language: String,
    timer: Option<Instant>,
    /// Where the replies of the call's lookups go, once it made one.
    lookups: (Option<mpsc::UnboundedSender<LookupResult>>, LookupReplies),
    /// Generation of the playlist whose end the IVR waits for.
    playing: Option<u64>,
    answered: bool,
    delayed_offer: bool,
    /// The call's life in the ACD: its place, offers, agent and hold.
    core: self::core::CallCore,
    /// The queue, the agent legs and the bridge.
    acd: acd::AcdState,
    caller_dialog: InviteDialog,
    /// The leg the mixer serves: a supervisor's, or the third party's of a
    /// three-way call.
    mixed: Option<monitor::MixedLeg>,
    /// The supervisor's session, whose leg is `mixed`'s supervisor.
    supervisor: self::core::monitor::MonitorMachine,
    /// The agent consults another agent while the caller waits, or talks
    /// with a third party in a three-way call (whose leg is `mixed`'s third party).
    consult: consult::Consult,
    /// The survey the caller is running, if it is.
    survey: Option<self::core::survey::Survey>,
    /// REFERs from agents' phones answered 202, their NOTIFYs waiting.
    referred: Vec<refer::Accepted>,
    /// The bounds that end the call when its end never comes.
    lifetime: lifetime::Lifetime,
    /// The bridge's relay, while a media loop runs it.
    on_loop: Option<OnLoop>,
    /// A media loop could not take the bridge: it stays here.
    loop_refused: bool,
    /// The caller's inbound packet count when it began only to listen
    /// (see `place_bridge`).
    listen_mark: Option<u64>,
    /// The caller's RFC 4733 keys, from the media loop running the bridge.
    loop_keys: (mpsc::UnboundedSender<char>, mpsc::UnboundedReceiver<char>),
}

impl Actor {
    fn begin(&mut self, target: &NumberTarget, vars: BTreeMap<String, String>) {
        match target {
            NumberTarget::Ivr(flow_name) => self.start_flow(flow_name, None, vars),
            NumberTarget::Queue { queue, greeting } => match greeting {
                Some(greeting) => {
                    self.core_do(CoreInput::Greet {
                        queue: queue.clone(),
                    });
                    self.play(std::slice::from_ref(greeting), false);
                }
                None => self.enter_queue(queue),
            },
        }
    }

    /// Runs IVR flow `flow_name` from its start, or from `node`.
    fn start_flow(&mut self, flow_name: &str, node: Option<&str>, vars: BTreeMap<String, String>) {
        let Some(mut flow) = self.ctx.settings.ivr.get(flow_name).cloned() else {
            // Configuration checks make this unreachable; never leave a caller in silence.
            warn!(flow = %flow_name, "no such flow; ending the call");
            self.core_do(CoreInput::Close);
            return;
        };
        if let Some(node) = node {
            let mut from_node = (*flow).clone();
            from_node.start = node.to_string();
            flow = Arc::new(from_node);
        }
        if let Some(language) = &flow.language {
            self.language = language.clone();
        }
        let (run, actions) = IvrRun::start(flow, vars, time::OffsetDateTime::now_utc);
        self.core_do(CoreInput::EnterIvr {
            flow: flow_name.to_string(),
            run: Box::new(run),
        });
        self.carry_out(actions);
    }

    fn play(&mut self, names: &[String], looping: bool) {
        let prompts = self.ctx.media.playlist(&self.language, names);
        self.ctx.bus.publish(Event::PromptStarted {
            call_id: self.call_id.clone(),
            prompts: names.to_vec(),
        });
        self.playing = Some(self.media.stream.play(prompts, looping));
    }

    fn carry_out(&mut self, actions: Vec<Action>) {
        for action in actions {
            match action {
                Action::Entered { node } => {
                    if let Some((flow, _)) = self.core.ivr() {
                        info!(%flow, %node, "IVR node");
                        self.ctx.bus.publish(Event::IvrNodeEntered {
                            call_id: self.call_id.clone(),
                            flow: flow.to_string(),
                            node,
                        });
                    }
                }
                Action::Play { prompts, .. } => self.play(&prompts, false),
                Action::StopPlayback => {
                    self.playing = None;
                    self.media.stream.stop();
                }
                Action::StartTimer(d) => self.timer = Some(Instant::now() + d),
                Action::Lookup { url, timeout } => {
                    // The caller hears the music while the service answers,
                    // never silence; the next node's prompts replace it.
                    let moh = self.ctx.media.music_on_hold(None);
                    self.playing = None;
                    self.media.stream.play(moh, true);
                    let reply = self.lookup_replies();
                    tokio::spawn(async move {
                        let _ = reply.send(lookup::fetch(&url, timeout).await);
                    });
                }
                Action::Queue {
                    queue,
                    skills,
                    priority,
                } => {
                    self.acd.skills = skills;
                    self.acd.priority = priority.unwrap_or(0);
                    if let Some((_, run)) = self.core.ivr() {
                        self.acd.ivr_vars = run.shown_vars();
                        self.core.vars = self.acd.ivr_vars.clone();
                    }
                    self.exit_ivr(format!("queue:{queue}"));
                    self.enter_queue(&queue);
                }
                Action::Hangup => {
                    self.exit_ivr("hangup".into());
                    self.core_do(CoreInput::Close);
                }
            }
        }
    }

    /// Where a lookup's reply goes (the channel made at the first lookup).
    fn lookup_replies(&mut self) -> mpsc::UnboundedSender<LookupResult> {
        if let Some(replies) = &self.lookups.0 {
            return replies.clone();
        }
        let (to_call, replies) = mpsc::unbounded_channel();
        self.lookups = (Some(to_call.clone()), LookupReplies(Some(replies)));
        to_call
    }

    fn exit_ivr(&mut self, exit: String) {
        self.survey_done();
        if let Some((flow, _)) = self.core.ivr() {
            self.ctx.bus.publish(Event::IvrExited {
                call_id: self.call_id.clone(),
                flow: flow.to_string(),
                exit,
            });
        }
    }

    fn feed(&mut self, input: Input) {
        self.core_do(CoreInput::Ivr(input));
    }

    fn on_digit(&mut self, digit: char, via: &'static str) {
        let secret = self
            .core
            .ivr()
            .is_some_and(|(_, run)| run.collecting_secret());
        if secret {
            // A PIN or card number: neither logged nor published.
            debug!(via, "DTMF (a secret's digit, not shown)");
        } else {
            debug!(%digit, via, "DTMF");
            self.ctx.bus.publish(Event::DtmfReceived {
                call_id: self.call_id.clone(),
                digit,
                via,
            });
        }
        if self.core.number_entry().is_some() && self.core.queued() {
            self.core_do(CoreInput::NumberKey(digit));
            return;
        }
        if self.is_callback_key(digit) {
            self.request_callback();
            return;
        }
        self.feed(Input::Digit(digit));
    }

    fn on_playback_finished(&mut self, generation: u64) {
        if self.playing != Some(generation) {
            return;
        }
        self.playing = None;
        self.ctx.bus.publish(Event::PromptFinished {
            call_id: self.call_id.clone(),
        });
        self.after_prompt();
    }

    fn media_started(&self) {
        if let Some(n) = self.media.negotiated() {
            self.ctx.bus.publish(Event::MediaStarted {
                call_id: self.call_id.clone(),
                codec: n.codec.name().to_string(),
                remote: n.remote,
                telephone_event: n.telephone_event,
            });
        }
    }

    /// The call's main loop; returns who ended the call. The bridge is back
    /// from its media loop when it returns.
    async fn run(
        &mut self,
        dialog: &InviteDialog,
        state_rx: &mut dialog_events::CallDialogStates,
    ) -> Option<ReleasedBy> {
        let released = self.run_turns(dialog, state_rx).await;
        self.take_bridge_back().await;
        released
    }

    async fn run_turns(
        &mut self,
        dialog: &InviteDialog,
        state_rx: &mut dialog_events::CallDialogStates,
    ) -> Option<ReleasedBy> {
        let mut rtp_buf = vec![0u8; RTP_BUF_LEN];
        // The other legs' buffers are sized by `recv_from_opt` once such a
        // leg exists: most calls never have a supervisor or a consultation,
        // and a bridge on a media loop is read there.
        let mut agent_buf = Vec::new();
        let mut supervisor_buf = Vec::new();
        let mut consultant_buf = Vec::new();
        let mut consult_phone_buf = Vec::new();
        // RTCP is only counted, never read: a short buffer takes the
        // datagram (truncated) as well as a long one.
        let mut rtcp_buf = [0u8; 64];
        if !self.delayed_offer {
            self.media_started();
        }
        // One timer for the call's life, moved only when the deadline moves:
        // most turns of the loop (media, messages) leave it where it is.
        let mut far = Instant::now() + Duration::from_secs(86400);
        let mut armed = self.next_deadline().unwrap_or(far);
        let timer = tokio::time::sleep_until(armed);
        tokio::pin!(timer);
        loop {
            if self.core.closing() && self.playing.is_none() {
                info!("flow hung up");
                // The dialog ends as the BYE leaves; its answer is not waited for.
                let dialog = dialog.clone();
                tokio::spawn(async move {
                    if let Err(e) = dialog.bye().await {
                        debug!(error = %e, "BYE failed");
                    }
                });
                return Some(ReleasedBy::System);
            }
            if let Some(released) = self.acd.released.take() {
                return Some(released);
            }
            self.place_bridge().await;
            let digits_wanted = self.digits_wanted();
            self.media.want_digits(digits_wanted);
            let deadline = self.next_deadline().unwrap_or(far);
            if deadline != armed {
                armed = deadline;
                timer.as_mut().reset(deadline);
            }
            // A bridge on a media loop: its sockets are the loop's to read.
            let relayed_here = self.on_loop.is_none();
            let agent_rtp = self.acd.agent_rtp().filter(|_| relayed_here);
            let supervisor_rtp = monitor::monitor_rtp(self.mixed.as_ref());
            let consultant_rtp = self.consult.consultant_rtp();
            let consult_phone_rtp = self.consult.phone_rtp();
            tokio::select! {
                state = state_rx.recv() => {
                    let Some(state) = state else { return Some(ReleasedBy::System) };
                    self.take_bridge_back().await;
                    let sip_call_id = &dialog_of(&state).call_id;
                    if self.mixed.as_ref().is_some_and(|m| m.leg().owns(sip_call_id)) {
                        self.on_monitor_dialog(state).await;
                        continue;
                    }
                    if self.consult.owns(sip_call_id) || self.consult.phone_owns(sip_call_id) {
                        self.on_consult_dialog(state).await;
                        continue;
                    }
                    if dialog_of(&state).call_id != self.acd.caller_sip_call_id {
                        self.on_agent_dialog(state).await;
                        continue;
                    }
                    if let Some(released) = self.on_caller_dialog(dialog, state).await {
                        return Some(released);
                    }
                }
                command = self.acd.commands.recv() => {
                    if let Some(command) = command {
                        self.take_bridge_back().await;
                        self.on_command(command).await;
                    }
                }
                fork = self.acd.finals.1.recv() => {
                    if let Some(fork) = fork {
                        self.take_bridge_back().await;
                        self.on_fork_final(fork).await;
                    }
                }
                received = self.media.rtp.recv_from(&mut rtp_buf), if relayed_here => {
                    if let Ok((n, source)) = received {
                        let (accepted, digit) = self.media.on_rtp(source, &rtp_buf[..n]);
                        if let Some((digit, via)) = digit {
                            self.on_digit(digit, via);
                        }
                        if accepted {
                            self.relay_from_caller(&rtp_buf[..n]);
                        }
                    }
                }
                received = recv_from_opt(agent_rtp.as_deref(), &mut agent_buf) => {
                    if let Ok((n, source)) = received {
                        self.relay_from_agent(source, &agent_buf[..n]);
                    }
                }
                received = recv_from_opt(supervisor_rtp.as_deref(), &mut supervisor_buf) => {
                    if let Ok((n, source)) = received {
                        self.on_supervisor_rtp(source, &supervisor_buf[..n]);
                    }
                }
                received = recv_from_opt(consultant_rtp.as_deref(), &mut consultant_buf) => {
                    if let Ok((n, source)) = received {
                        self.relay_from_consultant(source, &consultant_buf[..n]);
                    }
                }
                received = recv_from_opt(consult_phone_rtp.as_deref(), &mut consult_phone_buf) => {
                    if let Ok((n, source)) = received {
                        self.on_consult_phone_rtp(source, &consult_phone_buf[..n]);
                    }
                }
                received = self.media.rtcp.recv_from(&mut rtcp_buf) => {
                    if received.is_ok() {
                        self.media.on_rtcp();
                    }
                }
                key = self.loop_keys.1.recv() => {
                    if let Some(digit) = key {
                        self.on_digit(digit, "rfc4733");
                    }
                }
                event = self.media.events.recv() => {
                    if let Some(MediaEvent::PlaybackFinished { generation }) = event {
                        // A listening caller stays on its loop: what comes
                        // next (a prompt, keys) needs only the pacer, and a
                        // change that needs its audio here is seen at the
                        // top of the next turn.
                        if !self.on_loop.as_ref().is_some_and(|l| l.listening) {
                            self.take_bridge_back().await;
                        }
                        self.on_playback_finished(generation);
                    }
                }
                reply = self.lookups.1.recv() => {
                    if let Some(reply) = reply {
                        self.take_bridge_back().await;
                        if let Err(e) = &reply {
                            info!(error = %e, "lookup failed");
                        }
                        self.feed(Input::LookupDone(reply));
                    }
                }
                _ = &mut timer => {
                    let now = Instant::now();
                    if now >= far {
                        far = now + Duration::from_secs(86400);
                    }
                    if self.timer.is_some_and(|t| t <= now) {
                        self.timer = None;
                        self.feed(Input::Timeout);
                    }
                    self.on_acd_timers(now).await;
                    self.on_monitor_timer(now);
                    self.on_consult_timer(now);
                    self.on_lifetime_timers(now);
                }
            }
        }
    }

    /// What the rest of the server tells the call (the router, the CTI
    /// API, the call's own helper tasks). Boxed: carrying a command out
    /// (a consultation, a monitor) takes the largest state of the call's
    /// loop, which would otherwise keep room for it for the call's life.
    async fn on_command(&mut self, command: Box<CallCommand>) {
        Box::pin(self.carry_out_command(*command)).await;
    }

    async fn carry_out_command(&mut self, command: CallCommand) {
        match command {
            CallCommand::Offer { agents, queue } => {
                for agent in agents {
                    self.offer(agent, &queue).await;
                }
            }
            CallCommand::Cancel { agent } => {
                info!(agent = %agent, "offer withdrawn");
                self.core_do(CoreInput::OfferWithdrawn(agent));
            }
            CallCommand::Refused(error) => {
                info!(error = %error, "the router refused the caller");
                self.core_do(CoreInput::Refused);
                let reason = match error {
                    RouterError::QueueFull { .. } => "max_len",
                    RouterError::NoAgents { .. } => "no_agents",
                    _ => "refused",
                };
                self.overflow(reason).await;
            }
            CallCommand::Position(position) => {
                if self.core.queued() {
                    let entering_number = self.core.number_entry().is_some();
                    self.core_do(CoreInput::Position {
                        position,
                        entering_number,
                    });
                }
            }
            CallCommand::Paused => self.overflow("paused").await,
            CallCommand::Hangup => {
                info!("hung up over the CTI API");
                end_dialog(&self.ctx, self.caller_dialog.clone());
                self.acd.released = Some(ReleasedBy::System);
            }
            CallCommand::Hold(hold) => {
                self.core_do(CoreInput::ApiHold(hold));
            }
            CallCommand::Transfer { target, reply } => {
                let _ = reply.send(self.transfer(target));
            }
            CallCommand::Resumed { side, answer } => {
                self.acd.reinvites.finish(side);
                self.on_resumed(side, answer);
            }
            CallCommand::ResumeCrossed { side, attempt } => self.resume_crossed(side, attempt),
            CallCommand::ResumeAgain { side, attempt } => self.resume_again(side, attempt),
            CallCommand::Refreshed { side, result } => self.on_refreshed(side, result),
            CallCommand::Monitor(command) => self.on_monitor_command(command).await,
            CallCommand::Consult(command) => self.on_consult_command(command).await,
            CallCommand::ConsultLeg(pending) => self.consult_leg_ready(*pending),
        }
    }

    /// Whether a key the caller presses can matter now: in an IVR flow (the
    /// survey's too), keying a callback number, or waiting in a queue that
    /// offered the callback key. Bridged, the caller's keys are only
    /// reported (RFC 4733, INFO), never looked for in the audio.
    fn digits_wanted(&self) -> bool {
        self.core.ivr().is_some()
            || self.core.number_entry().is_some()
            || (self.core.queued() && self.core.callback_offered())
    }

    /// The earliest of the IVR timer and the ACD timers, if any is set.
    fn next_deadline(&self) -> Option<Instant> {
        let monitor = self
            .mixed
            .as_ref()
            .and_then(|m| monitor::Monitor::deadline(m.leg()));
        let consult = self.consult.deadline();
        let lifetime = self.lifetime.deadline();
        let core = self.core.deadline().map(Instant::from_std);
        [
            self.timer,
            core,
            self.acd.next_deadline(),
            monitor,
            consult,
            lifetime,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// A request or state change of the caller's dialog; returns who ended
    /// the call when it ended.
    async fn on_caller_dialog(
        &mut self,
        dialog: &InviteDialog,
        state: DialogState,
    ) -> Option<ReleasedBy> {
        match state {
            DialogState::Confirmed(..) if !self.answered => {
                self.answered = true;
                self.lifetime.answered(Instant::now());
                self.ctx.bus.publish(Event::CallAnswered {
                    call_id: self.call_id.clone(),
                });
                info!("call answered");
                if self.delayed_offer {
                    // The answer to our offer rides on the ACK.
                    match dialog.last_remote_ack().map(|ack| sdp::parse(&ack.body)) {
                        Some(Ok(answer)) => {
                            if let Err(e) = self.media.accept_answer(&answer) {
                                warn!(error = %e, "the ACK's SDP answer is unusable; ending the call");
                                let _ = dialog.bye().await;
                                return Some(ReleasedBy::System);
                            }
                            self.media_started();
                        }
                        _ => {
                            warn!("delayed offer answered without SDP in the ACK; ending the call");
                            let _ = dialog.bye().await;
                            return Some(ReleasedBy::System);
                        }
                    }
                }
            }
            DialogState::Updated(_, req, handle)
                if glare::crosses(&req, &self.acd.reinvites, Side::Caller) =>
            {
                glare::refuse(&handle).await;
            }
            DialogState::Updated(_, req, handle) => {
                // None: refused 422 (an interval below sip.min_se).
                if let Some(refresh) = self.peer_refresh(Side::Caller, &req, &handle).await {
                    let extra = refresh.as_ref().map(|r| r.0.clone()).unwrap_or_default();
                    if answer_update_with(&mut self.media, &req, &handle, extra).await {
                        self.peer_refreshed(Side::Caller, refresh);
                        info!(on_hold = self.media.on_hold(), "session updated");
                        self.hold_changed();
                    }
                }
            }
            DialogState::Info(_, req, handle) => {
                match crate::media::dtmf::parse_info(&content_type(&req), &req.body) {
                    Ok(digit) => {
                        let _ = handle.reply(StatusCode::OK).await;
                        self.on_digit(digit, "info");
                        self.forward_info(&req);
                    }
                    Err(e) => {
                        debug!(error = %e, "INFO without DTMF");
                        let _ = handle.reply(StatusCode::UnsupportedMediaType).await;
                    }
                }
            }
            DialogState::Options(_, _, handle) => {
                let _ = handle.reply(StatusCode::OK).await;
            }
            DialogState::Message(_, _, handle)
            | DialogState::Notify(_, _, handle)
            | DialogState::Refer(_, _, handle) => {
                let _ = handle.reply(StatusCode::MethodNotAllowed).await;
            }
            DialogState::Terminated(_, reason) => {
                info!(?reason, "caller's dialog ended");
                if self.core.callback().is_some() {
                    // The caller left a number and hung up, or the called-back
                    // customer hung up (a dialog hotline started: UAS BYE).
                    return self.callback_dialog_ended(&reason);
                }
                return Some(released_by(&reason));
            }
            _ => {}
        }
        None
    }
}

/// Answers a re-INVITE or UPDATE of one leg (hold, resume, a move): a new
/// offer gets this leg's answer, a re-INVITE without one gets an offer.
/// False when the offer was refused (488 with the reason).
pub(super) async fn answer_update(
    media: &mut MediaSession,
    req: &Request,
    handle: &rsipstack::dialog::dialog::TransactionHandle,
) -> bool {
    answer_update_with(media, req, handle, Vec::new()).await
}

/// [`answer_update`] with `extra` headers in the 200 (a session refresh's
/// `Session-Expires`).
pub(super) async fn answer_update_with(
    media: &mut MediaSession,
    req: &Request,
    handle: &rsipstack::dialog::dialog::TransactionHandle,
    extra: Vec<Header>,
) -> bool {
    let answer = if req.body.iter().all(|b| b.is_ascii_whitespace()) {
        (req.method == Method::Invite).then(|| media.offer())
    } else {
        match sdp::parse(&req.body).and_then(|o| media.answer(&o)) {
            Ok(answer) => Some(answer),
            Err(e) => {
                info!(error = %e, "new offer refused");
                let _ = handle
                    .respond(
                        StatusCode::NotAcceptableHere,
                        Some(vec![sdp_warning(&e)]),
                        None,
                    )
                    .await;
                return false;
            }
        }
    };
    let mut headers = extra;
    if answer.is_some() {
        headers.push(sdp_header());
    }
    let headers = (!headers.is_empty()).then_some(headers);
    let _ = handle
        .respond(StatusCode::OK, headers, answer.map(String::into_bytes))
        .await;
    true
}

/// A phone's INVITE taken into a call's dialogs (a supervisor's feature
/// code, an agent's consultation): its media, dialog and SDP answer, not yet
/// sent.
pub(super) struct PhoneInvite {
    pub media: MediaSession,
    pub dialog: InviteDialog,
    pub sip_call_id: String,
    pub answer: String,
}

impl Actor {
    /// Opens media for a leg of this call on the caller's address.
    pub(super) async fn open_leg_media(&self) -> Result<MediaSession, String> {
        let ip = self
            .media
            .rtp
            .local_addr()
            .map_or(self.media.advertised.ip(), |a| a.ip());
        let advertise = self.ctx.settings.sip.external.map(|a| a.ip());
        MediaSession::open(&self.ctx.media, ip, advertise)
            .await
            .map_err(|e| format!("no RTP ports for another leg: {e}"))
    }

    /// Answers the offer of a phone's INVITE and creates its dialog, whose
    /// requests come to this actor; `None` when it was refused (488, 503,
    /// 500 with the reason).
    pub(super) async fn take_phone_invite(&self, tx: &mut Transaction) -> Option<PhoneInvite> {
        let offer = match sdp::parse(&tx.original.body) {
            Ok(offer) => offer,
            Err(e) => {
                refuse(tx, StatusCode::NotAcceptableHere, Some(&e)).await;
                return None;
            }
        };
        let mut media = match self.open_leg_media().await {
            Ok(media) => media,
            Err(e) => {
                warn!(error = %e, "cannot take the phone's call");
                refuse(tx, StatusCode::ServiceUnavailable, None).await;
                return None;
            }
        };
        let answer = match media.answer(&offer) {
            Ok(answer) => answer,
            Err(e) => {
                refuse(tx, StatusCode::NotAcceptableHere, Some(&e)).await;
                return None;
            }
        };
        let contact = local_contact(&self.ctx, tx, "hotline");
        let sip_call_id = tx
            .original
            .call_id_header()
            .map(|c| c.value().to_string())
            .unwrap_or_default();
        let dialog = match self.ctx.dialogs.get_or_create_server_invite(
            tx,
            self.acd.states.sender_for(&sip_call_id),
            None,
            contact,
        ) {
            Ok(dialog) => dialog,
            Err(e) => {
                warn!(error = %e, "cannot create the phone's dialog");
                refuse(tx, StatusCode::ServerInternalError, None).await;
                return None;
            }
        };
        Some(PhoneInvite {
            media,
            dialog,
            sip_call_id,
            answer,
        })
    }
}

impl PhoneInvite {
    pub(super) fn accept(&self, tx: Transaction) -> bool {
        accept_phone(&self.dialog, &self.answer, tx)
    }
}

/// Sends a phone's INVITE the 200 OK with `answer`; the INVITE transaction
/// runs on beside the actor (retransmissions, the ACK).
pub(super) fn accept_phone(dialog: &InviteDialog, answer: &str, mut tx: Transaction) -> bool {
    {
        let answer = answer.as_bytes().to_vec();
        if let Err(e) = dialog.accept(Some(vec![sdp_header()]), Some(answer)) {
            warn!(error = %e, "cannot answer the phone");
            return false;
        }
        let mut handler = dialog.clone();
        tokio::spawn(async move {
            if let Err(e) = handler.handle(&mut tx).await {
                debug!(error = %e, "a phone's INVITE transaction ended with an error");
            }
        });
        true
    }
}

/// The dialog a state belongs to.
fn dialog_of(state: &DialogState) -> &DialogId {
    match state {
        DialogState::Calling(id)
        | DialogState::Trying(id)
        | DialogState::Early(id, _)
        | DialogState::WaitAck(id, _)
        | DialogState::Confirmed(id, _)
        | DialogState::Updated(id, _, _)
        | DialogState::Publish(id, _, _)
        | DialogState::Notify(id, _, _)
        | DialogState::Refer(id, _, _)
        | DialogState::Message(id, _, _)
        | DialogState::Info(id, _, _)
        | DialogState::Options(id, _, _)
        | DialogState::Terminated(id, _) => id,
    }
}

/// The call's media on a media loop: a bridge, or the caller listening.
pub(crate) struct OnLoop {
    ticket: crate::media::engine::BridgeTicket,
    listening: bool,
}

/// The longest RTP datagram a call reads whole.
const RTP_BUF_LEN: usize = 2048;

/// Receives from `socket`, or never when there is none. `buf` gets its
/// room ([`RTP_BUF_LEN`]) the first time there is a socket to read.
async fn recv_from_opt(
    socket: Option<&tokio::net::UdpSocket>,
    buf: &mut Vec<u8>,
) -> std::io::Result<(usize, std::net::SocketAddr)> {
    match socket {
        Some(socket) => {
            if buf.len() < RTP_BUF_LEN {
                buf.resize(RTP_BUF_LEN, 0);
            }
            socket.recv_from(buf).await
        }
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn lookup_replies_wait_for_ever_until_a_lookup_is_made() {
        let mut none = LookupReplies::default();
        let waited = tokio::time::timeout(Duration::from_millis(20), none.recv()).await;
        assert!(waited.is_err(), "no lookup, no reply");

        let (to_call, replies) = mpsc::unbounded_channel();
        let mut made = LookupReplies(Some(replies));
        to_call.send(Err("timed out".to_string())).unwrap();
        assert_eq!(made.recv().await, Some(Err("timed out".to_string())));
    }
}
