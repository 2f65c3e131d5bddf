//! The wallboard: one page for the supervisors' big screen, embedded in the
//! binary. Loading it needs no token; the page asks for a supervisor or admin
//! token and reads the CTI API (`/api/v1/queues`, `/api/v1/agents` and the
//! event stream) with it, so it shows exactly what that token may see.

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

const PAGE: &str = include_str!("wallboard/index.html");
const STYLE: &str = include_str!("wallboard/wallboard.css");
const SCRIPT: &str = include_str!("wallboard/wallboard.js");

/// Only the page's own files run and style it, it talks only to its own
/// origin (the API and the WebSocket), and no other site may frame it.
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; \
    frame-ancestors 'none'";

fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
            (header::CONTENT_SECURITY_POLICY, POLICY),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        body,
    )
}

async fn page() -> impl IntoResponse {
    asset("text/html; charset=utf-8", PAGE)
}

async fn style() -> impl IntoResponse {
    asset("text/css; charset=utf-8", STYLE)
}

async fn script() -> impl IntoResponse {
    asset("text/javascript; charset=utf-8", SCRIPT)
}

/// `/` and the page's assets under `/wallboard/`.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(page))
        .route("/wallboard/wallboard.css", get(style))
        .route("/wallboard/wallboard.js", get(script))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_loads_the_assets_that_are_served() {
        assert!(PAGE.contains("src=\"/wallboard/wallboard.js\""));
        assert!(PAGE.contains("href=\"/wallboard/wallboard.css\""));
    }

    /// Data reaches the DOM through `textContent` only: nothing in the script
    /// parses markup.
    #[test]
    fn the_script_never_parses_markup() {
        for parser in [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
            "eval(",
            "new Function",
        ] {
            assert!(
                !SCRIPT.contains(parser),
                "the wallboard script uses {parser}"
            );
        }
    }

    /// The policy forbids inline code, so the page carries none.
    #[test]
    fn the_page_has_no_inline_script_or_style() {
        assert!(!PAGE.contains("<style"));
        assert!(!PAGE.contains("style="));
        assert!(!PAGE.contains("<script>"));
        // An attribute ` onXXX=` is an inline event handler.
        for (at, _) in PAGE.match_indices(" on") {
            let name: String = PAGE[at + 1..]
                .chars()
                .take_while(|c| c.is_ascii_alphabetic())
                .collect();
            assert!(
                !PAGE[at + 1 + name.len()..].starts_with('='),
                "inline event handler {name} in the page"
            );
        }
    }
}
