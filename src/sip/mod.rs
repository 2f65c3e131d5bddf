//! The SIP edge: transports, transactions and dialogs (on rsipstack), the
//! registrar with digest auth for agents, and trunk admission for calls.
//!
//! It turns the network into typed decisions: a REGISTER becomes a binding, an
//! INVITE from an admitted trunk to a hotline number becomes a call handed
//! upward through [`handoff::CallHandoff`], as does a phone's INVITE that the
//! taker claims (feature codes, consultation); everything else is answered
//! here. It imports nothing above it and knows nothing of queues or IVR.

pub mod auth;
pub mod dialplan;
pub mod digest;
pub mod handoff;
pub mod limits;
pub mod lockout;
pub mod overload;
pub mod registrar;
pub mod screen;
pub mod stats;
pub mod tcp;
pub mod throttle;
pub mod trunk;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use rsipstack::EndpointBuilder;
use rsipstack::dialog::dialog_layer::DialogLayer;
use rsipstack::sip::{Header, HeadersExt, Method, StatusCode, Transport};
use rsipstack::transaction::Transaction;
use rsipstack::transaction::endpoint::{Endpoint, EndpointOption};
use rsipstack::transport::udp::UdpConnection;
use rsipstack::transport::{SipAddr, TransportLayer};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use self::auth::{AuthOutcome, DigestAuthority};
use self::handoff::{CallHandoff, Handoff};
use self::limits::{EdgeLimits, SlotRefusal};
use self::lockout::{Ban, BanScope, Lockout, LockoutPolicy};
use self::registrar::{ContactRequest, Contacts, RegisterError, RegisterRequest, Registrar};
use self::trunk::{NumberLookup, SourceAdmission, TrunkTable};
use crate::config::{Agent, HotlineNumber, Settings, Trunk};
use crate::events::{Event, EventBus, RejectReason};

/// Methods hotline answers, for `Allow` headers.
pub const ALLOW: &str = "INVITE, ACK, CANCEL, BYE, OPTIONS, REGISTER, INFO, UPDATE";
/// Bodies hotline understands, for `Accept` headers.
pub const ACCEPT: &str = "application/sdp";

/// Everything a request handler needs, shared by all of them.
pub struct EdgeContext {
    pub settings: Settings,
    pub bus: EventBus,
    pub registrar: Registrar,
    pub trunks: TrunkTable,
    /// Agents' REGISTERs (WWW-Authenticate / 401).
    pub agent_auth: DigestAuthority,
    /// Trunks' INVITEs (Proxy-Authenticate / 407).
    pub trunk_auth: DigestAuthority,
    pub dialogs: Arc<DialogLayer>,
    /// Set at shutdown: new calls are refused with 503.
    pub draining: AtomicBool,
    /// Who takes the calls the edge admits.
    pub handoff: Arc<dyn CallHandoff>,
    /// Our listeners, for Contact headers.
    pub udp_addr: Option<SocketAddr>,
    pub tcp_addr: Option<SocketAddr>,
    /// SIP messages in and out, by method and code.
    pub sip_stats: Arc<stats::SipStats>,
    /// hotline's own calls out through each trunk, against its ceilings.
    pub outbound: Arc<dialplan::OutboundGate>,
    /// Who is locked out of authenticating, and why.
    pub lockout: Arc<Lockout>,
    /// Call, rate and connection ceilings, and their refusals.
    pub limits: Arc<EdgeLimits>,
}

/// The running SIP edge.
pub struct SipEdge {
    ctx: Arc<EdgeContext>,
    cancel: CancellationToken,
    inflight: Arc<AtomicUsize>,
    endpoint: Endpoint,
}

/// Counts a request handler as in flight for as long as it lives.
struct InflightGuard(Arc<AtomicUsize>);

impl Drop for InflightGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl SipEdge {
    /// Binds the listeners and starts serving. Fails with the address when a
    /// port cannot be bound.
    pub async fn start(
        settings: &Settings,
        bus: EventBus,
        handoff: Arc<dyn CallHandoff>,
    ) -> anyhow::Result<SipEdge> {
        let cancel = CancellationToken::new();
        let transport_layer = TransportLayer::new(cancel.child_token());
        let server = settings.sip.user_agent.clone();
        let external = settings.sip.external;
        let mut udp_addr = None;
        let mut tcp_addr = None;
        let mut tcp_listener = None;
        if let Some(addr) = settings.sip.udp {
            let socket = tokio::net::UdpSocket::bind(addr)
                .await
                .with_context(|| format!("cannot bind SIP UDP listener on {addr} (sip.udp)"))?;
            udp_addr = Some(socket.local_addr()?);
            let screened: Arc<dyn rsipstack::platform::net::UdpSocket> =
                Arc::new(screen::ScreenedUdpSocket::new(socket, &server));
            let conn = UdpConnection::from_socket(screened, external, Some(cancel.child_token()))
                .await
                .context("cannot set up the SIP UDP transport")?;
            transport_layer.add_transport(conn.into());
        }
        if let Some(addr) = settings.sip.tcp {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot bind SIP TCP listener on {addr} (sip.tcp)"))?;
            let bound = listener.local_addr()?;
            tcp_addr = Some(external.unwrap_or(bound));
            tcp_listener = Some(listener);
        }

        let lockout = Arc::new(Lockout::new(LockoutPolicy {
            max_failures_per_user: settings.auth.max_failures,
            max_failures_per_source: settings.auth.max_failures_per_source,
            window: settings.auth.failure_window,
            ban_time: settings.auth.ban_time,
        }));
        let limits = Arc::new(EdgeLimits::new(&settings.limits));
        let t1 = settings.sip.t1;
        let option = EndpointOption {
            t1,
            t1x64: t1 * 64,
            ..EndpointOption::default()
        };
        let sip_stats = Arc::new(stats::SipStats::default());
        let endpoint = EndpointBuilder::new()
            .with_inspector(Box::new(stats::Counting(sip_stats.clone())))
            .with_transport_layer(transport_layer)
            .with_cancel_token(cancel.clone())
            .with_user_agent(&server)
            .with_option(option)
            .with_transport_inspector(Box::new(screen::Screen {
                limits: limits.clone(),
                server: server.clone(),
            }))
            .build();
        let mut incoming = endpoint
            .incoming_transactions()
            .context("transaction receiver already taken")?;
        let dialogs = Arc::new(DialogLayer::new(endpoint.inner.clone()));

        let realm = settings.sip.realm.clone();
        let ctx = Arc::new(EdgeContext {
            registrar: Registrar::new(settings.registrar.clone(), bus.clone()),
            trunks: TrunkTable::new(settings.trunks.clone(), settings.numbers.clone()),
            agent_auth: DigestAuthority::new(&realm, &settings.auth, lockout.clone()),
            trunk_auth: DigestAuthority::new(&realm, &settings.auth, lockout.clone()),
            settings: settings.clone(),
            bus,
            dialogs,
            draining: AtomicBool::new(false),
            handoff,
            udp_addr,
            tcp_addr,
            sip_stats,
            outbound: Arc::default(),
            lockout,
            limits: limits.clone(),
        });
        if let (Some(listener), Some(addr)) = (tcp_listener, tcp_addr) {
            let local = SipAddr {
                r#type: Some(Transport::Tcp),
                addr: addr.into(),
            };
            tcp::serve(
                listener,
                local,
                endpoint.inner.clone(),
                limits,
                cancel.child_token(),
            );
        }

        let inner = endpoint.inner.clone();
        tokio::spawn(async move {
            if let Err(e) = inner.serve().await {
                warn!(error = %e, "SIP endpoint stopped");
            }
        });

        let inflight = Arc::new(AtomicUsize::new(0));
        {
            let ctx = ctx.clone();
            let inflight = inflight.clone();
            let cancel = cancel.clone();
            tokio::spawn(async move {
                loop {
                    let tx = tokio::select! {
                        _ = cancel.cancelled() => break,
                        tx = incoming.recv() => match tx { Some(tx) => tx, None => break },
                    };
                    inflight.fetch_add(1, Ordering::AcqRel);
                    let guard = InflightGuard(inflight.clone());
                    let ctx = ctx.clone();
                    tokio::spawn(async move {
                        // The transaction's handling is boxed and freed once
                        // it returns: an admitted call runs for minutes, and
                        // this task would otherwise keep the largest state of
                        // every kind of request for the call's whole life.
                        let mut call = None;
                        Box::pin(dispatch(ctx, tx, &mut call)).await;
                        if let Some(call) = call {
                            call.await;
                        }
                        drop(guard);
                    });
                }
            });
        }
        {
            let ctx = ctx.clone();
            let cancel = cancel.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_millis(250));
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tokio::select! {
                        _ = cancel.cancelled() => break,
                        _ = tick.tick() => {
                            let now = Instant::now();
                            ctx.registrar.sweep(now);
                            ctx.lockout.sweep(now);
                            ctx.limits.sweep(now);
                            ctx.agent_auth.sweep(now);
                            ctx.trunk_auth.sweep(now);
                        }
                    }
                }
            });
        }
        info!(udp = ?udp_addr, tcp = ?tcp_addr, "SIP edge listening");
        Ok(SipEdge {
            ctx,
            cancel,
            inflight,
            endpoint,
        })
    }

    pub fn context(&self) -> &Arc<EdgeContext> {
        &self.ctx
    }

    /// Stops taking new calls, lets in-flight transactions finish for up to
    /// `grace`, hangs up the calls still up, and closes the listeners.
    pub async fn shutdown(self, grace: Duration) {
        self.ctx.draining.store(true, Ordering::Release);
        let deadline = Instant::now() + grace;
        // Call actors count as in flight for their whole life; wait for the rest.
        while self.inflight.load(Ordering::Acquire) > self.ctx.handoff.live_calls()
            && Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.ctx.handoff.hang_up_all();
        // Give BYEs and final responses a moment on the wire, within the grace.
        let settle =
            (Instant::now() + Duration::from_millis(500)).min(deadline.max(Instant::now()));
        while self.ctx.handoff.live_calls() > 0 && Instant::now() < settle {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // The BYE's first transmission is out; its answer is not awaited.
        tokio::time::sleep(Duration::from_millis(50)).await;
        self.cancel.cancel();
        self.endpoint.shutdown();
    }
}

/// The values of all headers with this (canonical) name.
pub fn header_values<'a>(headers: &'a rsipstack::sip::Headers, name: &str) -> Vec<&'a str> {
    headers
        .iter()
        .filter(|h| h.name().eq_ignore_ascii_case(name))
        .map(|h| h.value())
        .collect()
}

fn other(name: &str, value: impl Into<String>) -> Header {
    Header::Other(name.to_string(), value.into())
}

/// Where a transaction came from: the packet's source, not what Via claims.
pub fn source_of(tx: &Transaction) -> Option<SocketAddr> {
    let conn = tx.connection.as_ref()?;
    let remote: &SipAddr = conn.get_remote_addr()?;
    SocketAddr::try_from(remote.addr.clone()).ok()
}

fn transport_name(tx: &Transaction) -> &'static str {
    match tx.connection.as_ref().map(|c| c.transport()) {
        Some(Transport::Tcp) => "tcp",
        Some(Transport::Tls) => "tls",
        Some(Transport::Ws) | Some(Transport::Wss) => "ws",
        _ => "udp",
    }
}

async fn reply(tx: &mut Transaction, status: StatusCode, headers: Vec<Header>) {
    if let Err(e) = tx.reply_with(status, headers, None).await {
        debug!(error = %e, "could not send response");
    }
}

/// Handles one new server transaction; an INVITE admitted as a call leaves
/// the call's run in `call`, for the caller to drive.
async fn dispatch(ctx: Arc<EdgeContext>, mut tx: Transaction, call: &mut Option<Handoff<()>>) {
    let has_to_tag = tx
        .original
        .to_header()
        .ok()
        .and_then(|to| to.tag().ok().flatten())
        .is_some();
    if has_to_tag {
        match ctx.dialogs.match_dialog(&tx) {
            Some(mut dialog) => {
                if let Err(e) = dialog.handle(&mut tx).await {
                    debug!(error = %e, method = %tx.original.method, "in-dialog request failed");
                }
            }
            None if tx.original.method == Method::Ack => {}
            None => reply(&mut tx, StatusCode::CallTransactionDoesNotExist, vec![]).await,
        }
        return;
    }
    match tx.original.method {
        Method::Register => handle_register(&ctx, &mut tx).await,
        Method::Invite => handle_invite(ctx, tx, call).await,
        Method::Options => {
            let headers = vec![
                other("Allow", ALLOW),
                other("Accept", ACCEPT),
                other("Supported", ""),
            ];
            reply(&mut tx, StatusCode::OK, headers).await;
        }
        Method::Ack => {}
        Method::Bye | Method::Cancel | Method::Info | Method::Update | Method::PRack => {
            reply(&mut tx, StatusCode::CallTransactionDoesNotExist, vec![]).await;
        }
        Method::Subscribe | Method::Notify | Method::Publish | Method::Message | Method::Refer => {
            reply(
                &mut tx,
                StatusCode::MethodNotAllowed,
                vec![other("Allow", ALLOW)],
            )
            .await;
        }
    }
}

/// Parses the Contact headers of a REGISTER.
fn register_contacts(tx: &Transaction) -> Result<Contacts, String> {
    let values = header_values(&tx.original.headers, "Contact");
    if values.is_empty() {
        return Ok(Contacts::Query);
    }
    let mut list = Vec::new();
    let mut wildcard = false;
    for value in values {
        let parsed = rsipstack::sip::typed::Contact::parse_header_list(value)
            .map_err(|e| format!("Malformed Contact header: {e}"))?;
        for contact in parsed {
            let is_star = matches!(
                &contact.uri.scheme,
                Some(rsipstack::sip::Scheme::Other(s)) if s == "*"
            );
            if is_star {
                wildcard = true;
            } else {
                let expires = contact
                    .params
                    .iter()
                    .find_map(|p| match p {
                        rsipstack::sip::Param::Expires(e) => Some(e.0.trim().parse::<u64>()),
                        _ => None,
                    })
                    .transpose()
                    .map_err(|_| "Malformed expires parameter in Contact".to_string())?;
                list.push(ContactRequest {
                    uri: contact.uri.to_string(),
                    expires,
                });
            }
        }
    }
    match (wildcard, list.is_empty()) {
        (true, true) => Ok(Contacts::Wildcard),
        (true, false) => Err("Contact: * must be the only contact".into()),
        (false, _) => Ok(Contacts::List(list)),
    }
}

fn uri_user(uri: &rsipstack::sip::Uri) -> Option<String> {
    uri.auth
        .as_ref()
        .map(|a| a.user.clone())
        .filter(|u| !u.is_empty())
}

/// Answers `tx` with a final response of this code and reason phrase.
pub async fn refuse_with(tx: &mut Transaction, code: u16, reason: &str, extra: Vec<Header>) {
    reply(tx, StatusCode::Other(code, reason.to_string()), extra).await;
}

async fn handle_register(ctx: &EdgeContext, tx: &mut Transaction) {
    let Some(source) = source_of(tx) else {
        return refuse_with(tx, 400, "Unknown source", vec![]).await;
    };
    let Some(aor) = tx
        .original
        .to_header()
        .ok()
        .and_then(|to| to.uri().ok())
        .and_then(|uri| uri_user(&uri))
    else {
        return refuse_with(tx, 400, "To header has no user part (the agent id)", vec![]).await;
    };

    let credentials = header_values(&tx.original.headers, "Authorization");
    let agents = &ctx.settings.agents;
    let request_uri = tx.original.uri.to_string();
    let outcome =
        ctx.agent_auth
            .authenticate(credentials, "REGISTER", &request_uri, source.ip(), |user| {
                agents.get(user).map(|a: &Agent| a.password.clone())
            });
    let Some(username) = settle_auth(ctx, tx, source, "REGISTER", outcome, false).await else {
        return;
    };
    if username != aor {
        warn!(%source, %username, %aor, "credentials do not match the registered AOR");
        return refuse_with(tx, 403, "Credentials do not match the To user", vec![]).await;
    }

    let contacts = match register_contacts(tx) {
        Ok(c) => c,
        Err(reason) => return refuse_with(tx, 400, &reason, vec![]).await,
    };
    let expires = match header_values(&tx.original.headers, "Expires").first() {
        None => None,
        Some(v) => match v.trim().parse::<u64>() {
            Ok(e) => Some(e),
            Err(_) => return refuse_with(tx, 400, "Malformed Expires header", vec![]).await,
        },
    };
    let (call_id, cseq) = match (tx.original.call_id_header(), tx.original.cseq_header()) {
        (Ok(c), Ok(s)) => (c.value().to_string(), s.seq().unwrap_or(0)),
        _ => return refuse_with(tx, 400, "Missing Call-ID or CSeq", vec![]).await,
    };
    let request = RegisterRequest {
        aor: aor.clone(),
        contacts,
        expires,
        call_id,
        cseq,
        source,
        transport: transport_name(tx).to_string(),
    };
    let now = Instant::now();
    match ctx.registrar.apply(request, now) {
        Ok(bindings) => {
            let mut headers: Vec<Header> = bindings
                .iter()
                .map(|b| {
                    other(
                        "Contact",
                        format!("<{}>;expires={}", b.uri, b.remaining_secs(now)),
                    )
                })
                .collect();
            headers.push(other(
                "Date",
                httpdate::fmt_http_date(std::time::SystemTime::now()),
            ));
            debug!(%aor, contacts = bindings.len(), "REGISTER accepted");
            reply(tx, StatusCode::OK, headers).await;
        }
        Err(RegisterError::IntervalTooBrief { min_secs }) => {
            reply(
                tx,
                StatusCode::IntervalTooBrief,
                vec![other("Min-Expires", min_secs.to_string())],
            )
            .await;
        }
        Err(e @ RegisterError::WildcardMisuse) => {
            refuse_with(tx, 400, &e.to_string(), vec![]).await
        }
        Err(e @ RegisterError::OutOfOrder { .. }) => {
            refuse_with(tx, 500, &e.to_string(), vec![other("Retry-After", "1")]).await
        }
    }
}

async fn challenge(ctx: &EdgeContext, tx: &mut Transaction, proxy: bool, stale: bool) {
    let (status, name, authority) = if proxy {
        (
            StatusCode::ProxyAuthenticationRequired,
            "Proxy-Authenticate",
            &ctx.trunk_auth,
        )
    } else {
        (
            StatusCode::Unauthorized,
            "WWW-Authenticate",
            &ctx.agent_auth,
        )
    };
    let Some(source) = source_of(tx) else {
        return refuse_with(tx, 400, "Unknown source", vec![]).await;
    };
    let headers = authority
        .challenges(stale, source.ip())
        .into_iter()
        .map(|v| other(name, v))
        .collect();
    reply(tx, status, headers).await;
}

/// Answers a request whose credentials did not authenticate it, or returns
/// the authenticated username.
async fn settle_auth(
    ctx: &EdgeContext,
    tx: &mut Transaction,
    source: SocketAddr,
    method: &str,
    outcome: AuthOutcome,
    proxy: bool,
) -> Option<String> {
    match outcome {
        AuthOutcome::Authenticated { username } => return Some(username),
        AuthOutcome::Challenge { stale } => challenge(ctx, tx, proxy, stale).await,
        AuthOutcome::BadRequest { reason } => {
            debug!(%source, method, %reason, "credentials refused");
            refuse_with(tx, 400, &reason, vec![]).await;
        }
        AuthOutcome::LockedOut(ban) => {
            debug!(%source, method, reason = %ban.reason(), "authentication while locked out");
            ctx.limits.refused.count(limits::Refusal::AuthLockedOut);
            refuse_locked_out(tx, &ban).await;
        }
        AuthOutcome::Failed {
            username,
            reason,
            lockout,
        } => {
            warn!(%source, method, %reason, locked_out = lockout.is_some(), "authentication failed");
            ctx.bus.publish(Event::AuthFailed {
                source,
                username: Some(username),
                method: method.to_string(),
                reason,
            });
            match lockout {
                Some(ban) => {
                    warn!(%source, reason = %ban.reason(), scope = ban.scope.label(), "authentication locked out");
                    ctx.bus.publish(Event::SourceBanned {
                        source: source.ip(),
                        ban_secs: ctx.lockout.policy().ban_time.as_secs(),
                    });
                    refuse_locked_out(tx, &ban).await;
                }
                None => challenge(ctx, tx, proxy, false).await,
            }
        }
    }
    None
}

async fn refuse_locked_out(tx: &mut Transaction, ban: &Ban) {
    let reason = match ban.scope {
        BanScope::User(_) => "Forbidden (too many failed authentications for this user)",
        BanScope::Source => "Forbidden (too many failed authentications from this address)",
    };
    let retry = ban
        .until
        .saturating_duration_since(Instant::now())
        .as_secs()
        .max(1);
    refuse_with(
        tx,
        403,
        reason,
        vec![other("Retry-After", retry.to_string())],
    )
    .await;
}

/// Who is calling, once admitted.
pub struct Admitted {
    pub trunk: Arc<Trunk>,
    pub number: HotlineNumber,
    pub source: SocketAddr,
    /// On the blocklist with action "prompt": hear `blocked`, then hang up.
    pub blocked: bool,
    /// The caller's number (the user part of From).
    pub caller: String,
}

/// Admits or refuses an INVITE; an admitted call's run is left in `call`
/// (with its slot under the call ceilings, freed when the run ends).
async fn handle_invite(ctx: Arc<EdgeContext>, mut tx: Transaction, call: &mut Option<Handoff<()>>) {
    let call_id = tx
        .original
        .call_id_header()
        .map(|c| c.value().to_string())
        .unwrap_or_default();
    let dialled = uri_user(&tx.original.uri).unwrap_or_default();
    let Some(source) = source_of(&tx) else {
        return refuse_with(&mut tx, 400, "Unknown source", vec![]).await;
    };
    let reject = |status: u16, reason: RejectReason| Event::CallRejected {
        call_id: call_id.clone(),
        number: dialled.clone(),
        source,
        status,
        reason,
    };
    if ctx.draining.load(Ordering::Acquire) {
        ctx.bus.publish(reject(503, RejectReason::ShuttingDown));
        return refuse_with(
            &mut tx,
            503,
            "Service Unavailable (shutting down)",
            vec![other("Retry-After", "30")],
        )
        .await;
    }
    let trusting = ctx.trunks.trusting(source.ip()).map(|t| t.name.as_str());
    if let Err(wait) = ctx
        .limits
        .admit_invite(source.ip(), trusting, Instant::now())
    {
        ctx.limits.refused.count(limits::Refusal::InviteRate);
        debug!(%source, %call_id, "INVITE above the source's rate");
        let retry = wait.as_secs_f64().ceil().max(1.0) as u64;
        return refuse_with(
            &mut tx,
            503,
            "Service Unavailable (too many calls from this address)",
            vec![other("Retry-After", retry.to_string())],
        )
        .await;
    }
    if ctx.limits.calls.in_use(&call_id) {
        return refuse_call_id_in_use(&ctx, &mut tx, source, &call_id).await;
    }
    // A phone's feature code or consultation is the call room's to take.
    let Some(mut tx) = ctx
        .handoff
        .phone_invite(ctx.clone(), tx, source, &dialled)
        .await
    else {
        return;
    };
    let trunk = match admit(&ctx, &mut tx, source.ip()) {
        Ok(trunk) => trunk,
        Err(Refusal::Auth(outcome)) => {
            settle_auth(&ctx, &mut tx, source, "INVITE", outcome, true).await;
            return;
        }
        Err(Refusal::NotATrunk) => {
            info!(%source, %call_id, "INVITE from a source no trunk admits");
            ctx.bus.publish(reject(403, RejectReason::NotATrunk));
            return refuse_with(&mut tx, 403, "Forbidden (source is not a trunk)", vec![]).await;
        }
    };
    let number = match ctx.trunks.number_for(&trunk, &dialled) {
        NumberLookup::Found(n) => n.clone(),
        NumberLookup::Unknown => {
            info!(%source, %call_id, number = %dialled, "INVITE to an unknown number");
            ctx.bus.publish(reject(404, RejectReason::UnknownNumber));
            return refuse_with(&mut tx, 404, "Not Found (not a hotline number)", vec![]).await;
        }
        NumberLookup::NotForTrunk => {
            ctx.bus.publish(reject(404, RejectReason::NumberNotAllowed));
            return refuse_with(
                &mut tx,
                404,
                "Not Found (number not open to this trunk)",
                vec![],
            )
            .await;
        }
    };
    let caller = tx
        .original
        .from_header()
        .ok()
        .and_then(|f| f.uri().ok())
        .and_then(|u| uri_user(&u))
        .unwrap_or_default();
    let blocked = ctx.settings.blocklist.contains(&caller);
    if blocked {
        info!(%source, %call_id, %caller, "caller on the blocklist");
        if ctx.settings.block_action == crate::config::BlockAction::Reject {
            ctx.bus.publish(reject(403, RejectReason::Blocked));
            return refuse_with(&mut tx, 403, "Forbidden (caller blocked)", vec![]).await;
        }
    }
    let overload = &ctx.limits.overload;
    if let Some(reason) = overload.shedding() {
        overload.count_shed(reason);
        debug!(%source, %call_id, reason = reason.label(), "call shed: the server is overloaded");
        let retry = overload.retry_after_secs().to_string();
        return refuse_with(
            &mut tx,
            503,
            "Service Unavailable (overloaded)",
            vec![other("Retry-After", retry)],
        )
        .await;
    }
    let trunk_max = ctx.limits.trunk_max_calls(&trunk.name);
    let slot = match ctx.limits.calls.take(&call_id, &trunk.name, trunk_max) {
        Ok(slot) => slot,
        Err(SlotRefusal::CallIdInUse) => {
            return refuse_call_id_in_use(&ctx, &mut tx, source, &call_id).await;
        }
        Err(refusal) => {
            let (counted, phrase) = match refusal {
                SlotRefusal::TrunkMaxCalls { .. } => (
                    limits::Refusal::TrunkMaxCalls,
                    "Service Unavailable (too many calls from this trunk)",
                ),
                _ => {
                    overload.count_shed(overload::ShedReason::MaxCalls);
                    (
                        limits::Refusal::MaxCalls,
                        "Service Unavailable (too many calls)",
                    )
                }
            };
            ctx.limits.refused.count(counted);
            debug!(%source, %call_id, trunk = %trunk.name, ?refusal, "call refused at a ceiling");
            return refuse_with(&mut tx, 503, phrase, vec![other("Retry-After", "5")]).await;
        }
    };
    let admitted = Admitted {
        trunk,
        number,
        source,
        blocked,
        caller,
    };
    let handoff = ctx.handoff.clone();
    let run = handoff.inbound(ctx, tx, admitted);
    *call = Some(Box::pin(async move {
        run.await;
        drop(slot);
    }));
}

/// A new INVITE (no To tag) carrying the Call-ID of a live call. RFC 3261
/// §8.2.2.2 answers a request that looks like another copy of an INVITE
/// already being served (a merged or looped request) with 482 Loop Detected,
/// which a UAC does not retry as it is; the live call is left untouched.
async fn refuse_call_id_in_use(
    ctx: &EdgeContext,
    tx: &mut Transaction,
    source: SocketAddr,
    call_id: &str,
) {
    ctx.limits.refused.count(limits::Refusal::CallIdInUse);
    debug!(%source, %call_id, "new INVITE with the Call-ID of a live call");
    refuse_with(
        tx,
        482,
        "Loop Detected (Call-ID belongs to a live call)",
        vec![],
    )
    .await;
}

/// Authenticates a phone's INVITE against the agents' accounts (401
/// challenge): the account, or `None` when the request was answered.
pub async fn phone_account(
    ctx: &EdgeContext,
    tx: &mut Transaction,
    source: SocketAddr,
) -> Option<String> {
    let credentials = header_values(&tx.original.headers, "Authorization");
    let agents = &ctx.settings.agents;
    let request_uri = tx.original.uri.to_string();
    let outcome =
        ctx.agent_auth
            .authenticate(credentials, "INVITE", &request_uri, source.ip(), |user| {
                agents.get(user).map(|a: &Agent| a.password.clone())
            });
    settle_auth(ctx, tx, source, "INVITE", outcome, false).await
}

enum Refusal {
    /// Not authenticated (yet): answered by [`settle_auth`].
    Auth(AuthOutcome),
    NotATrunk,
}

fn admit(ctx: &EdgeContext, tx: &mut Transaction, source: IpAddr) -> Result<Arc<Trunk>, Refusal> {
    let candidates = match ctx.trunks.admit_source(source) {
        SourceAdmission::Trusted(trunk) => return Ok(trunk.clone()),
        SourceAdmission::Refused => return Err(Refusal::NotATrunk),
        SourceAdmission::NeedsAuth(candidates) => candidates,
    };
    let credentials = header_values(&tx.original.headers, "Proxy-Authorization");
    let password_of = |user: &str| {
        candidates
            .iter()
            .find_map(|t| t.credentials.as_ref().filter(|c| c.username == user))
            .map(|c| c.password.clone())
    };
    let request_uri = tx.original.uri.to_string();
    match ctx
        .trunk_auth
        .authenticate(credentials, "INVITE", &request_uri, source, password_of)
    {
        AuthOutcome::Authenticated { username } => candidates
            .iter()
            .find(|t| {
                t.credentials
                    .as_ref()
                    .is_some_and(|c| c.username == username)
            })
            .map(|t| Arc::clone(t))
            .ok_or(Refusal::NotATrunk),
        outcome => Err(Refusal::Auth(outcome)),
    }
}

/// The Contact hotline puts in its answers, on the transport the request came in on.
pub fn local_contact(
    ctx: &EdgeContext,
    tx: &Transaction,
    user: &str,
) -> Option<rsipstack::sip::Uri> {
    let tcp = transport_name(tx) == "tcp";
    let addr = if tcp { ctx.tcp_addr } else { ctx.udp_addr }?;
    let addr = ctx.settings.sip.external.unwrap_or(addr);
    let host = match addr.ip() {
        IpAddr::V6(ip) => format!("[{ip}]"),
        IpAddr::V4(ip) => ip.to_string(),
    };
    let user = if user.is_empty() { "hotline" } else { user };
    let transport = if tcp { ";transport=tcp" } else { "" };
    rsipstack::sip::uri::parse_uri(&format!("sip:{user}@{host}:{}{transport}", addr.port())).ok()
}
