//! The SIP/TCP listener, ahead of the SIP stack.
//!
//! Owns the accept loop so that a connection is counted before it costs
//! anything: over the per-source or total ceiling it is closed at once, and a
//! connection that does not deliver one complete message head within the
//! first-message timeout (an idle socket, a slowloris trickle) is closed
//! without ever reaching the stack. Accepted connections are handed to
//! rsipstack, which reads and answers them; their places are given back when
//! the stack reports them closed (see [`super::screen::Screen`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rsipstack::transaction::endpoint::EndpointInnerRef;
use rsipstack::transport::tcp::TcpConnection;
use rsipstack::transport::{SipAddr, SipConnection};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::limits::{EdgeLimits, Refusal};

/// Bytes looked at for the end of the first message head.
const PEEK_BYTES: usize = 8192;
/// How often a connection that sent part of a head is looked at again.
const PEEK_INTERVAL: Duration = Duration::from_millis(25);

/// How a new connection began.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FirstMessage {
    /// The end of a message head (an empty line, which a CRLF keep-alive
    /// also is) arrived.
    Arrived,
    Closed,
    TimedOut,
}

/// Waits for `stream`'s first message head, for at most `timeout`. Peeks,
/// so the stack still reads every byte.
pub async fn first_message(stream: &TcpStream, timeout: Duration) -> FirstMessage {
    let mut buf = vec![0u8; PEEK_BYTES];
    let wait = async {
        loop {
            let n = match stream.peek(&mut buf).await {
                Ok(0) | Err(_) => return FirstMessage::Closed,
                Ok(n) => n,
            };
            if n == buf.len() || memchr::memmem::find(&buf[..n], b"\r\n\r\n").is_some() {
                return FirstMessage::Arrived;
            }
            // Data is waiting, so peek would return at once: look again later.
            tokio::time::sleep(PEEK_INTERVAL).await;
        }
    };
    tokio::time::timeout(timeout, wait)
        .await
        .unwrap_or(FirstMessage::TimedOut)
}

/// Accepts SIP/TCP connections on `listener` until `cancel`.
pub fn serve(
    listener: TcpListener,
    local: SipAddr,
    endpoint: EndpointInnerRef,
    limits: Arc<EdgeLimits>,
    cancel: CancellationToken,
) {
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                _ = cancel.cancelled() => break,
                accepted = listener.accept() => accepted,
            };
            let (stream, peer) = match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of descriptors, most likely: let some close first.
                    warn!(error = %e, "cannot accept a SIP/TCP connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            if let Err(refusal) = limits.tcp.open(peer) {
                debug!(%peer, reason = refusal.label(), "SIP/TCP connection refused");
                limits.refused.count(refusal);
                continue;
            }
            let (local, endpoint, limits, cancel) = (
                local.clone(),
                endpoint.clone(),
                limits.clone(),
                cancel.clone(),
            );
            tokio::spawn(async move {
                admit(stream, peer, local, endpoint, &limits, cancel).await;
            });
        }
    });
}

async fn admit(
    stream: TcpStream,
    peer: SocketAddr,
    local: SipAddr,
    endpoint: EndpointInnerRef,
    limits: &EdgeLimits,
    cancel: CancellationToken,
) {
    let timeout = limits.settings.tcp_first_message_timeout;
    let first = tokio::select! {
        _ = cancel.cancelled() => FirstMessage::Closed,
        first = first_message(&stream, timeout) => first,
    };
    if first != FirstMessage::Arrived {
        if first == FirstMessage::TimedOut {
            debug!(%peer, "SIP/TCP connection sent no complete message in time");
            limits.refused.count(Refusal::TcpFirstMessageTimeout);
        }
        limits.tcp.release(peer);
        return;
    }
    match TcpConnection::from_stream(stream, local, Some(cancel.child_token())) {
        Ok(connection) => endpoint
            .transport_layer
            .add_connection(SipConnection::Tcp(connection)),
        Err(e) => {
            debug!(%peer, error = %e, "SIP/TCP connection lost before it was served");
            limits.tcp.release(peer);
        }
    }
}
