//! The IVR's data dip: an HTTP GET to an integrator's URL whose JSON reply
//! becomes call variables (and may choose the next node).
//!
//! Runs inside the call actor with a deadline; a slow or broken service is a
//! failure branch of the flow, never a stuck call.

use std::collections::BTreeMap;
use std::time::Duration;

use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::ivr::LookupReply;

/// Largest reply body accepted.
const MAX_BODY: usize = 64 * 1024;

/// Turns a JSON object into variables: strings as they are, numbers and
/// booleans as text; `next` (a string) is the node the service chose.
pub fn parse_reply(body: &[u8]) -> Result<LookupReply, String> {
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("reply is not JSON: {e}"))?;
    let serde_json::Value::Object(map) = value else {
        return Err("reply is not a JSON object".into());
    };
    let mut reply = LookupReply {
        vars: BTreeMap::new(),
        next: None,
    };
    for (key, value) in map {
        let text = match value {
            serde_json::Value::String(s) => s,
            serde_json::Value::Number(n) => n.to_string(),
            serde_json::Value::Bool(b) => b.to_string(),
            _ => continue,
        };
        if key == "next" {
            reply.next = Some(text);
        } else if key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            reply.vars.insert(key, text);
        }
    }
    Ok(reply)
}

/// GETs `url` within `timeout`.
pub async fn fetch(url: &str, timeout: Duration) -> Result<LookupReply, String> {
    // The URL may carry a caller's PIN: never in an error (errors are logged).
    let uri: hyper::Uri = url.parse().map_err(|e| format!("bad URL: {e}"))?;
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let request = async {
        let response = client
            .get(uri)
            .await
            .map_err(|e| format!("request failed: {e}"))?;
        let status = response.status();
        let body = Limited::new(response.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|e| format!("reading the reply failed: {e}"))?
            .to_bytes();
        if !status.is_success() {
            return Err(format!("service answered {status}"));
        }
        parse_reply(&body)
    };
    match tokio::time::timeout(timeout, request).await {
        Ok(result) => result,
        Err(_) => Err(format!("no reply within {timeout:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_members_become_variables() {
        let r = parse_reply(br#"{"balance": 12.5, "name": "Li", "vip": true, "next": "menu", "nested": {"a": 1}, "bad key": "x"}"#).unwrap();
        assert_eq!(r.vars["balance"], "12.5");
        assert_eq!(r.vars["name"], "Li");
        assert_eq!(r.vars["vip"], "true");
        assert_eq!(r.next.as_deref(), Some("menu"));
        assert!(!r.vars.contains_key("nested"));
        assert!(!r.vars.contains_key("bad key"));
        assert!(parse_reply(b"[1,2]").is_err());
        assert!(parse_reply(b"<html>").is_err());
    }

    #[tokio::test]
    async fn fetch_reads_a_reply_and_times_out_on_a_silent_service() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            // first connection: a proper reply; second: silence
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf).await;
            let body = r#"{"balance":"7"}"#;
            let _ = s
                .write_all(
                    format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                        body.len()
                    )
                    .as_bytes(),
                )
                .await;
            let (_silent, _) = listener.accept().await.unwrap();
            tokio::time::sleep(Duration::from_secs(5)).await;
        });
        let r = fetch(&format!("http://{addr}/b?x=1"), Duration::from_secs(2))
            .await
            .unwrap();
        assert_eq!(r.vars["balance"], "7");
        let err = fetch(&format!("http://{addr}/b"), Duration::from_millis(200))
            .await
            .unwrap_err();
        assert!(err.contains("no reply"), "{err}");
        let err = fetch("http://127.0.0.1:1/", Duration::from_secs(1))
            .await
            .unwrap_err();
        assert!(err.contains("failed"), "{err}");
    }
}
