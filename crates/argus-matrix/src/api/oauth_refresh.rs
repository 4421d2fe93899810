//! `POST <token_endpoint>` with `grant_type=refresh_token` — OAuth 2.0 (RFC 6749 §6), as the
//! Client-Server API's OAuth 2.0 API uses it
//! ([spec](https://spec.matrix.org/v1.16/client-server-api/#token-refresh-flow)).
//!
//! Renews an access token of a next-generation auth server with its refresh token and the
//! client id it was issued to. The form is built by the `oauth2` crate and sent through the
//! connector's policy-bound client (policy, no redirects, bounded body, deadline).

use argus_domain::Secret;
use oauth2::{
    ClientId, RefreshToken, RequestTokenError, TokenResponse as _, TokenUrl,
    basic::{BasicClient, BasicErrorResponseType},
};
use std::pin::Pin;

use tokio::time::Instant;
use url::Url;

use crate::{Error, Result, session::TokenPair, transport::HttpClient};

/// A new pair from the auth server's token endpoint; [`Error::TokenRefreshFailed`] when it
/// refuses the refresh token (`invalid_grant`) or the client id.
pub(crate) async fn renew(
    client: &HttpClient,
    token_endpoint: &Url,
    client_id: &str,
    refresh_token: &Secret,
    deadline: Instant,
) -> Result<TokenPair> {
    let oauth = BasicClient::new(ClientId::new(client_id.to_owned()))
        .set_token_uri(TokenUrl::from_url(token_endpoint.clone()));
    let http = PolicyBound { client, deadline };
    let given = RefreshToken::new(refresh_token.expose_secret().to_owned());
    match oauth.exchange_refresh_token(&given).request_async(&http).await {
        Ok(answer) => Ok(TokenPair::renewed(
            answer.access_token().secret().clone(),
            answer.refresh_token().map(|t| t.secret().clone()),
            refresh_token,
            answer.expires_in(),
        )),
        Err(RequestTokenError::ServerResponse(refusal)) => {
            Err(Error::refresh_failed(match refusal.error() {
                BasicErrorResponseType::InvalidGrant => {
                    "the auth server refused the refresh token (invalid_grant: used already, revoked or expired)"
                }
                BasicErrorResponseType::InvalidClient | BasicErrorResponseType::UnauthorizedClient => {
                    "the auth server refused the OAuth client id"
                }
                _ => "the auth server refused the renewal",
            }))
        }
        Err(RequestTokenError::Request(error)) => Err(error),
        Err(RequestTokenError::Parse(..) | RequestTokenError::Other(_)) => {
            Err(Error::malformed("the auth server's token answer is not one this connector reads"))
        }
    }
}

/// The connector's client as `oauth2` sends through it.
struct PolicyBound<'a> {
    client: &'a HttpClient,
    deadline: Instant,
}

impl<'c> oauth2::AsyncHttpClient<'c> for PolicyBound<'_> {
    type Error = Error;
    type Future = Pin<Box<dyn Future<Output = Result<oauth2::HttpResponse>> + Send + 'c>>;

    fn call(&'c self, request: oauth2::HttpRequest) -> Self::Future {
        Box::pin(self.client.exchange_raw(request, self.deadline))
    }
}
