//! Obtaining a bearer token from the identity provider with the OAuth 2.0 client-credentials
//! grant, for operators and scripts once development tokens are refused.

use std::time::Duration;

use oauth2::{
    ClientId, ClientSecret, RequestTokenError, Scope as OAuthScope, TokenResponse as _, TokenUrl,
    basic::BasicClient,
};

use crate::{Error, Result, config::OAuthClientConfig};

/// How long the whole token request may take.
const TIMEOUT: Duration = Duration::from_secs(30);

/// Requests an access token from `config.token_url` with the client-credentials grant
/// (RFC 6749 §4.4), authenticating with HTTP Basic, and returns it.
///
/// `scopes` replaces the configured scopes when not empty. Redirects are not followed. Error
/// messages carry the provider's `error` code at most, never the client secret or a token.
pub async fn client_credentials_token(config: &OAuthClientConfig, scopes: &[String]) -> Result<String> {
    let url = config
        .token_url
        .as_deref()
        .ok_or_else(|| Error::Config("oauth.token_url is not configured".into()))?;
    let token_url =
        TokenUrl::new(url.to_owned()).map_err(|_| Error::Config("oauth.token_url is not a URL".into()))?;
    let mut client = BasicClient::new(ClientId::new(config.client_id.clone())).set_token_uri(token_url);
    if let Some(secret) = &config.client_secret {
        client = client.set_client_secret(ClientSecret::new(secret.expose_secret().to_owned()));
    }
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(TIMEOUT)
        .build()
        .map_err(|_| Error::IdentityProvider("cannot build the HTTP client".into()))?;
    let requested = if scopes.is_empty() { &config.scopes } else { scopes };
    let request =
        client.exchange_client_credentials().add_scopes(requested.iter().map(|s| OAuthScope::new(s.clone())));
    let response = request.request_async(&http).await.map_err(|e| {
        Error::IdentityProvider(match e {
            RequestTokenError::ServerResponse(r) => format!("token request refused ({})", r.error()),
            RequestTokenError::Request(_) => "the token endpoint is unreachable".into(),
            RequestTokenError::Parse(..) | RequestTokenError::Other(_) => {
                "the token endpoint's answer is not a token response".into()
            }
        })
    })?;
    Ok(response.access_token().secret().clone())
}

#[cfg(test)]
mod tests {
    use wiremock::{
        Mock, MockServer, ResponseTemplate,
        matchers::{body_string_contains, header, method, path},
    };

    use super::*;
    use argus_domain::Secret;

    const SECRET: &str = "client-secret-never-shown";

    fn config(server: &MockServer) -> OAuthClientConfig {
        OAuthClientConfig {
            token_url: Some(format!("{}/token", server.uri())),
            client_id: "argus-cli".into(),
            client_secret: Some(Secret::new(SECRET)),
            scopes: vec!["tchap:read".into()],
        }
    }

    #[tokio::test]
    async fn obtains_a_token_with_basic_auth_and_the_configured_scopes() {
        let server = MockServer::start().await;
        // base64("argus-cli:client-secret-never-shown")
        let basic = format!(
            "Basic {}",
            base64::Engine::encode(&base64::engine::general_purpose::STANDARD, format!("argus-cli:{SECRET}"),)
        );
        Mock::given(method("POST"))
            .and(path("/token"))
            .and(header("authorization", basic.as_str()))
            .and(body_string_contains("grant_type=client_credentials"))
            .and(body_string_contains("scope=tchap%3Aread"))
            .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
                "access_token": "eyJ.issued.token", "token_type": "Bearer", "expires_in": 300
            })))
            .expect(1)
            .mount(&server)
            .await;
        let token = client_credentials_token(&config(&server), &[]).await.unwrap();
        assert_eq!(token, "eyJ.issued.token");
    }

    #[tokio::test]
    async fn command_line_scopes_replace_the_configured_ones() {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(body_string_contains("scope=tchap%3Aingest+tchap%3Aaudit"))
            .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
                "access_token": "t", "token_type": "bearer"
            })))
            .expect(1)
            .mount(&server)
            .await;
        let scopes = ["tchap:ingest".to_owned(), "tchap:audit".to_owned()];
        assert_eq!(client_credentials_token(&config(&server), &scopes).await.unwrap(), "t");
    }

    #[tokio::test]
    async fn refusals_name_the_error_code_and_never_the_secret() {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(ResponseTemplate::new(401).set_body_json(serde_json::json!({
                "error": "invalid_client", "error_description": "bad secret"
            })))
            .mount(&server)
            .await;
        let err = client_credentials_token(&config(&server), &[]).await.unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, Error::IdentityProvider(_)), "{err:?}");
        assert!(text.contains("invalid_client"), "{text}");
        assert!(!text.contains(SECRET) && !format!("{err:?}").contains(SECRET), "{text}");
    }

    #[tokio::test]
    async fn redirects_and_garbage_are_typed_errors() {
        let server = MockServer::start().await;
        Mock::given(path("/token"))
            .respond_with(ResponseTemplate::new(302).insert_header("location", "http://169.254.169.254/"))
            .mount(&server)
            .await;
        Mock::given(path("/garbage"))
            .respond_with(ResponseTemplate::new(200).set_body_string("<html>login</html>"))
            .mount(&server)
            .await;
        let redirected = client_credentials_token(&config(&server), &[]).await.unwrap_err();
        assert!(matches!(redirected, Error::IdentityProvider(_)), "{redirected:?}");
        let mut garbage = config(&server);
        garbage.token_url = Some(format!("{}/garbage", server.uri()));
        let err = client_credentials_token(&garbage, &[]).await.unwrap_err();
        assert!(err.to_string().contains("not a token response"), "{err}");
    }

    #[tokio::test]
    async fn unconfigured_endpoint_is_a_configuration_error() {
        let err = client_credentials_token(&OAuthClientConfig::default(), &[]).await.unwrap_err();
        assert!(matches!(err, Error::Config(_)), "{err:?}");
    }
}
