//! A tiny identity server on loopback, answering the lookup Tchap clients make to find an
//! e-mail address's homeserver: `GET /_matrix/identity/api/v1/info?medium=email&address=…`
//! answers `{"hs": "<server name>"}` for a known address, `{}` for an unknown one (as Tchap's
//! identity server does), and 404 for any other path or medium.
//!
//! A real HTTP/1.1 server (one request per connection) on the runtime of the test that starts
//! it, stopped when dropped.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use argus_testkit::identity::IdentityServer;
//! let identity = IdentityServer::start([("alice@finances.gouv.fr", "agent.finances.tchap.gouv.fr")]).await?;
//! let answer = reqwest::get(format!(
//!     "{}/_matrix/identity/api/v1/info?medium=email&address=alice@finances.gouv.fr",
//!     identity.url()
//! ))
//! .await?
//! .text()
//! .await?;
//! assert_eq!(answer, r#"{"hs":"agent.finances.tchap.gouv.fr"}"#);
//! # Ok(())
//! # }
//! ```

use std::{collections::HashMap, sync::Arc};

use anyhow::Context as _;
use serde_json::json;
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
    task::JoinHandle,
};

/// The longest request head read.
const MAX_HEAD: usize = 16 * 1024;

/// An identity server on `127.0.0.1`, mapping e-mail addresses (any case) to server names.
#[derive(Debug)]
pub struct IdentityServer {
    url: String,
    task: JoinHandle<()>,
}

impl IdentityServer {
    /// Starts a server that knows `entries` (address, server name).
    pub async fn start<A: Into<String>, S: Into<String>>(
        entries: impl IntoIterator<Item = (A, S)>,
    ) -> anyhow::Result<Self> {
        let known: HashMap<String, String> =
            entries.into_iter().map(|(a, s)| (a.into().to_lowercase(), s.into())).collect();
        let known = Arc::new(known);
        let listener = TcpListener::bind(("127.0.0.1", 0)).await.context("binding the identity server")?;
        let url = format!("http://{}", listener.local_addr()?);
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let known = Arc::clone(&known);
                tokio::spawn(async move {
                    // A client that goes away is nothing to report.
                    let _ = answer(stream, &known).await;
                });
            }
        });
        Ok(Self { url, task })
    }

    /// The server's base URL, `http://127.0.0.1:PORT` (no trailing slash).
    pub fn url(&self) -> &str {
        &self.url
    }
}

impl Drop for IdentityServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn answer(mut stream: TcpStream, known: &HashMap<String, String>) -> anyhow::Result<()> {
    let mut head = Vec::new();
    let mut buffer = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buffer).await?;
        if n == 0 || head.len() + n > MAX_HEAD {
            return Ok(());
        }
        head.extend_from_slice(&buffer[..n]);
    }
    let head = String::from_utf8_lossy(&head);
    let target = head.lines().next().and_then(|line| line.split(' ').nth(1)).unwrap_or("/");
    let (status, body) = lookup(target, known);
    let response = format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await?;
    Ok(())
}

/// The status line's code and reason, and the body, for a request target.
fn lookup(target: &str, known: &HashMap<String, String>) -> (&'static str, String) {
    let not_found = ("404 Not Found", json!({"errcode": "M_NOT_FOUND", "error": "Not found"}).to_string());
    let Ok(url) = reqwest::Url::parse(&format!("http://identity.invalid{target}")) else {
        return not_found;
    };
    if url.path() != "/_matrix/identity/api/v1/info" {
        return not_found;
    }
    let query: HashMap<String, String> = url.query_pairs().into_owned().collect();
    if query.get("medium").map(String::as_str) != Some("email") {
        return not_found;
    }
    let hs = query.get("address").and_then(|address| known.get(&address.to_lowercase()));
    match hs {
        Some(hs) => ("200 OK", json!({ "hs": hs }).to_string()),
        None => ("200 OK", "{}".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_addresses_get_their_server_and_others_nothing() {
        let known = HashMap::from([("alice@finances.gouv.fr".to_owned(), "hs.test".to_owned())]);
        let info = "/_matrix/identity/api/v1/info?medium=email&address=";
        assert_eq!(
            lookup(&format!("{info}Alice%40finances.gouv.fr"), &known),
            ("200 OK", r#"{"hs":"hs.test"}"#.to_owned())
        );
        assert_eq!(lookup(&format!("{info}bob%40finances.gouv.fr"), &known), ("200 OK", "{}".to_owned()));
        assert_eq!(lookup("/_matrix/identity/api/v1/other", &known).0, "404 Not Found");
        assert_eq!(
            lookup("/_matrix/identity/api/v1/info?medium=msisdn&address=33600000000", &known).0,
            "404 Not Found"
        );
    }
}
