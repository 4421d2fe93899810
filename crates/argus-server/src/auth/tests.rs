//! Every JWT attack of the threat model, against the real validator.

use base64::Engine as _;
use jsonwebtoken::{EncodingKey, Header};
use serde_json::json;

use super::*;
use argus_domain::Secret;

const SECRET: &str = "0123456789abcdef0123456789abcdef-test";
const RSA_PRIVATE: &str = include_str!("../../tests/fixtures/rsa-private.pem");
const RSA_PUBLIC: &str = include_str!("../../tests/fixtures/rsa-public.pem");
const EC_PRIVATE: &str = include_str!("../../tests/fixtures/ec-private.pem");
const EC_PUBLIC: &str = include_str!("../../tests/fixtures/ec-public.pem");
const RSA_JWKS: &str = include_str!("../../tests/fixtures/rsa-jwks.json");

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn claims() -> Value {
    json!({
        "iss": "argus-dev",
        "aud": "argus-tchap",
        "exp": now() + 600,
        "iat": now(),
        "sub": "alice@interieur.gouv.fr",
        "org": "dgsi",
        "clearance": "SECRET",
        "scope": "openid tchap:read tchap:audit",
    })
}

fn with(mut base: Value, key: &str, value: Value) -> Value {
    base[key] = value;
    base
}

fn without(mut base: Value, key: &str) -> Value {
    if let Some(map) = base.as_object_mut() {
        map.remove(key);
    }
    base
}

fn hs_source() -> KeySource {
    KeySource::Hs256 { secret: Secret::new(SECRET), generated: false }
}

fn hs_auth() -> Authenticator {
    Authenticator::new(&JwtConfig::default(), &hs_source()).unwrap()
}

fn rsa_auth() -> Authenticator {
    Authenticator::new(&JwtConfig::default(), &KeySource::PublicKeyPem(RSA_PUBLIC.as_bytes().to_vec()))
        .unwrap()
}

fn hs_token(claims: &Value) -> String {
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &EncodingKey::from_secret(SECRET.as_bytes()))
        .unwrap()
}

fn rs_token(claims: &Value, kid: Option<&str>) -> String {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, &EncodingKey::from_rsa_pem(RSA_PRIVATE.as_bytes()).unwrap())
        .unwrap()
}

fn b64(v: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v)
}

fn assert_invalid(result: Result<Viewer>, why: &str) {
    match result {
        Err(Error::InvalidToken(_)) => {}
        other => panic!("{why}: expected InvalidToken, got {other:?}"),
    }
}

#[tokio::test]
async fn a_valid_token_becomes_a_viewer() {
    let viewer = hs_auth().authenticate(&hs_token(&claims())).await.unwrap();
    assert_eq!(viewer.actor.as_str(), "alice@interieur.gouv.fr");
    assert_eq!(viewer.org.as_str(), "dgsi");
    assert_eq!(viewer.clearance, Classification::Secret);
    assert_eq!(viewer.scopes.iter().copied().collect::<Vec<_>>(), vec![Scope::Read, Scope::Audit]);
}

#[tokio::test]
async fn french_markings_and_scope_arrays_are_accepted() {
    let c = with(claims(), "clearance", json!("Diffusion Restreinte"));
    let c = with(c, "scope", json!(["tchap:ingest", "tchap:read"]));
    let viewer = hs_auth().authenticate(&hs_token(&c)).await.unwrap();
    assert_eq!(viewer.clearance, Classification::Restricted);
    assert!(viewer.has_scope(Scope::Ingest) && viewer.has_scope(Scope::Read));
    let c = with(claims(), "clearance", json!("TRÈS SECRET"));
    assert_eq!(hs_auth().authenticate(&hs_token(&c)).await.unwrap().clearance, Classification::TopSecret);
}

#[tokio::test]
async fn alg_none_is_rejected() {
    let header = b64(br#"{"alg":"none","typ":"JWT"}"#);
    let payload = b64(claims().to_string().as_bytes());
    for token in [format!("{header}.{payload}."), format!("{header}.{payload}")] {
        assert_invalid(hs_auth().authenticate(&token).await, "alg none");
        assert_invalid(rsa_auth().authenticate(&token).await, "alg none (rsa)");
    }
    let header = b64(br#"{"alg":"None"}"#);
    assert_invalid(hs_auth().authenticate(&format!("{header}.{payload}.")).await, "alg None");
}

#[tokio::test]
async fn hs256_signed_with_the_rsa_public_key_is_rejected() {
    let token = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims(),
        &EncodingKey::from_secret(RSA_PUBLIC.as_bytes()),
    )
    .unwrap();
    assert_invalid(rsa_auth().authenticate(&token).await, "HS/RS confusion");
    // The same RSA-keyed server accepts a genuine RS256 token.
    assert!(rsa_auth().authenticate(&rs_token(&claims(), None)).await.is_ok());
}

#[tokio::test]
async fn rs256_is_rejected_by_an_hs256_server_and_vice_versa() {
    assert_invalid(hs_auth().authenticate(&rs_token(&claims(), None)).await, "RS256 on HS server");
    assert_invalid(rsa_auth().authenticate(&hs_token(&claims())).await, "HS256 on RS server");
}

#[tokio::test]
async fn es256_keys_work() {
    let auth =
        Authenticator::new(&JwtConfig::default(), &KeySource::PublicKeyPem(EC_PUBLIC.as_bytes().to_vec()))
            .unwrap();
    let token = jsonwebtoken::encode(
        &Header::new(Algorithm::ES256),
        &claims(),
        &EncodingKey::from_ec_pem(EC_PRIVATE.as_bytes()).unwrap(),
    )
    .unwrap();
    assert!(auth.authenticate(&token).await.is_ok());
    assert_invalid(auth.authenticate(&rs_token(&claims(), None)).await, "RS256 on EC server");
}

#[tokio::test]
async fn expired_tokens_are_rejected_within_leeway_only() {
    let expired = with(claims(), "exp", json!(now() - 3600));
    assert!(matches!(hs_auth().authenticate(&hs_token(&expired)).await, Err(Error::InvalidToken("expired"))));
    let just = with(claims(), "exp", json!(now() - 5));
    assert!(hs_auth().authenticate(&hs_token(&just)).await.is_ok(), "inside the 30 s leeway");
    let future = with(claims(), "nbf", json!(now() + 3600));
    assert_invalid(hs_auth().authenticate(&hs_token(&future)).await, "not yet valid");
}

#[tokio::test]
async fn wrong_issuer_or_audience_is_rejected() {
    let auth = hs_auth();
    assert_invalid(auth.authenticate(&hs_token(&with(claims(), "iss", json!("evil")))).await, "iss");
    assert_invalid(auth.authenticate(&hs_token(&with(claims(), "aud", json!("other")))).await, "aud");
    let both = with(claims(), "aud", json!(["other", "argus-tchap"]));
    assert!(auth.authenticate(&hs_token(&both)).await.is_ok(), "aud array containing ours");
    for claim in ["exp", "iss", "aud"] {
        assert_invalid(auth.authenticate(&hs_token(&without(claims(), claim))).await, claim);
    }
}

#[tokio::test]
async fn missing_identity_claims_are_rejected() {
    for claim in ["sub", "org", "clearance"] {
        assert_invalid(hs_auth().authenticate(&hs_token(&without(claims(), claim))).await, claim);
    }
}

#[tokio::test]
async fn claims_of_the_wrong_type_are_rejected() {
    let auth = hs_auth();
    for (claim, value) in [
        ("org", json!(42)),
        ("org", json!(["dgsi"])),
        ("org", json!("two words")),
        ("clearance", json!(["SECRET"])),
        ("clearance", json!(3)),
        ("clearance", json!("COSMIC")),
        ("sub", json!({"id": 1})),
        ("scope", json!(7)),
        ("scope", json!([1, 2])),
        ("exp", json!("tomorrow")),
        ("iss", json!(1)),
    ] {
        assert_invalid(auth.authenticate(&hs_token(&with(claims(), claim, value.clone()))).await, claim);
    }
}

#[tokio::test]
async fn unknown_scopes_grant_nothing() {
    let c = with(claims(), "scope", json!("tchap:admin tchap:*"));
    let viewer = hs_auth().authenticate(&hs_token(&c)).await.unwrap();
    assert!(viewer.scopes.is_empty());
}

#[tokio::test]
async fn garbage_is_rejected() {
    let auth = hs_auth();
    for garbage in ["", "abc", "a.b.c", "....", "eyJhbGciOiJIUzI1NiJ9.e30.", "\u{0}\u{1}"] {
        assert_invalid(auth.authenticate(garbage).await, garbage);
    }
    assert_invalid(auth.authenticate(&"a".repeat(MAX_TOKEN_BYTES + 1)).await, "huge");
    // A valid token with a flipped signature byte.
    let mut token = hs_token(&claims()).into_bytes();
    if let Some(last) = token.last_mut() {
        *last = if *last == b'A' { b'B' } else { b'A' };
    }
    assert_invalid(auth.authenticate(&String::from_utf8(token).unwrap()).await, "tampered");
}

#[tokio::test]
async fn authorization_header_forms() {
    let auth = hs_auth();
    assert!(matches!(auth.authenticate_header(None).await, Err(Error::MissingToken)));
    let token = hs_token(&claims());
    assert!(auth.authenticate_header(Some(&format!("Bearer {token}"))).await.is_ok());
    assert!(auth.authenticate_header(Some(&format!("bearer {token}"))).await.is_ok());
    assert_invalid(auth.authenticate_header(Some(&format!("Basic {token}"))).await, "basic");
    assert_invalid(auth.authenticate_header(Some("Bearer")).await, "empty");
}

#[tokio::test]
async fn configured_claim_names_and_algorithms() {
    let config = JwtConfig {
        org_claim: "https://argus/org".into(),
        clearance_claim: "niveau".into(),
        scope_claim: "scp".into(),
        algorithms: vec!["HS512".into()],
        ..JwtConfig::default()
    };
    let auth = Authenticator::new(&config, &hs_source()).unwrap();
    let c = json!({
        "iss": "argus-dev", "aud": "argus-tchap", "exp": now() + 60, "sub": "bob",
        "https://argus/org": "anssi", "niveau": "confidentiel", "scp": ["tchap:read"],
    });
    let hs512 = jsonwebtoken::encode(
        &Header::new(Algorithm::HS512),
        &c,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap();
    let viewer = auth.authenticate(&hs512).await.unwrap();
    assert_eq!(viewer.org.as_str(), "anssi");
    assert_eq!(viewer.clearance, Classification::Confidential);
    assert_invalid(auth.authenticate(&hs_token(&c)).await, "HS256 not pinned");
    // An RSA algorithm cannot be pinned for an HMAC key.
    let bad = JwtConfig { algorithms: vec!["RS256".into()], ..JwtConfig::default() };
    assert!(Authenticator::new(&bad, &hs_source()).is_err());
}

#[tokio::test]
async fn minted_development_tokens_validate() {
    let request = TokenRequest {
        sub: "carol".parse().unwrap(),
        org: "dgsi".parse().unwrap(),
        clearance: Classification::Confidential,
        scopes: vec![Scope::Read, Scope::Ingest],
        ttl: Duration::from_secs(60),
    };
    let token = mint_dev_token(&JwtConfig::default(), &hs_source(), &request).unwrap();
    let viewer = hs_auth().authenticate(&token).await.unwrap();
    assert_eq!(viewer.actor.as_str(), "carol");
    assert_eq!(viewer.clearance, Classification::Confidential);
    assert!(viewer.has_scope(Scope::Ingest) && !viewer.has_scope(Scope::Audit));
    let real = KeySource::PublicKeyPem(RSA_PUBLIC.as_bytes().to_vec());
    assert!(matches!(mint_dev_token(&JwtConfig::default(), &real, &request), Err(Error::NotDevelopment)));
}

#[tokio::test]
async fn token_lifetime_and_type_are_checked_when_configured() {
    let config = JwtConfig {
        max_token_lifetime_seconds: Some(3_600),
        required_typ: Some("at+jwt".into()),
        ..JwtConfig::default()
    };
    let auth = Authenticator::new(&config, &hs_source()).unwrap();
    let token = |typ: Option<&str>, claims: &Value| {
        let mut header = Header::new(Algorithm::HS256);
        header.typ = typ.map(str::to_owned);
        jsonwebtoken::encode(&header, claims, &EncodingKey::from_secret(SECRET.as_bytes())).unwrap()
    };
    let short = with(with(claims(), "iat", json!(now())), "exp", json!(now() + 600));
    assert!(auth.authenticate(&token(Some("at+jwt"), &short)).await.is_ok());
    assert!(auth.authenticate(&token(Some("application/AT+JWT"), &short)).await.is_ok());
    assert_invalid(auth.authenticate(&token(Some("JWT"), &short)).await, "typ JWT");
    assert_invalid(auth.authenticate(&token(None, &short)).await, "no typ");
    let long = with(with(claims(), "iat", json!(now())), "exp", json!(now() + 86_400));
    assert_invalid(auth.authenticate(&token(Some("at+jwt"), &long)).await, "a day-long token");
    let no_iat = with(claims(), "exp", json!(now() + 600));
    assert_invalid(auth.authenticate(&token(Some("at+jwt"), &without(no_iat, "iat"))).await, "no iat");
    // Without the settings, the same tokens pass.
    assert!(hs_auth().authenticate(&token(Some("JWT"), &long)).await.is_ok());
}

mod jwks {
    use wiremock::{Mock, MockServer, ResponseTemplate, matchers};

    use super::*;

    async fn server(expected_fetches: u64) -> MockServer {
        let server = MockServer::start().await;
        Mock::given(matchers::method("GET"))
            .and(matchers::path("/jwks"))
            .respond_with(ResponseTemplate::new(200).set_body_string(RSA_JWKS))
            .expect(expected_fetches)
            .mount(&server)
            .await;
        server
    }

    fn auth(server: &MockServer, refresh: u64) -> Authenticator {
        let config = JwtConfig { jwks_refresh_seconds: refresh, ..JwtConfig::default() };
        Authenticator::new(&config, &KeySource::Jwks(format!("{}/jwks", server.uri()))).unwrap()
    }

    #[tokio::test]
    async fn keys_are_fetched_once_and_cached_by_kid() {
        let server = server(1).await;
        let auth = auth(&server, 60);
        for _ in 0..3 {
            let viewer = auth.authenticate(&rs_token(&claims(), Some("k1"))).await.unwrap();
            assert_eq!(viewer.org.as_str(), "dgsi");
        }
    }

    #[tokio::test]
    async fn unknown_kids_refetch_at_most_once_per_interval() {
        let server = server(1).await;
        let auth = auth(&server, 60);
        for kid in ["k2", "k3", "k4", "k5"] {
            assert_invalid(auth.authenticate(&rs_token(&claims(), Some(kid))).await, kid);
        }
        // The one fetch also loaded k1.
        assert!(auth.authenticate(&rs_token(&claims(), Some("k1"))).await.is_ok());
    }

    #[tokio::test]
    async fn an_unknown_kid_refetches_after_the_interval() {
        let server = server(2).await;
        let auth = auth(&server, 0);
        assert_invalid(auth.authenticate(&rs_token(&claims(), Some("zz"))).await, "zz");
        assert_invalid(auth.authenticate(&rs_token(&claims(), Some("zz"))).await, "zz again");
    }

    #[tokio::test]
    async fn hmac_tokens_never_verify_against_a_jwks() {
        let server = server(1).await;
        let auth = auth(&server, 60);
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some("k1".into());
        let token =
            jsonwebtoken::encode(&header, &claims(), &EncodingKey::from_secret(RSA_PUBLIC.as_bytes()))
                .unwrap();
        // The set is fetched to learn k1's algorithm (RS256), then the HS256 token is refused.
        assert_invalid(auth.authenticate(&token).await, "HS256 against a JWKS");
    }

    /// A key the identity provider withdrew stops verifying once the set expires (its
    /// `Cache-Control: max-age`, within the configured bounds), though no unknown `kid` asked.
    #[tokio::test]
    async fn a_withdrawn_key_stops_verifying_when_the_set_expires() {
        let server = MockServer::start().await;
        Mock::given(matchers::method("GET"))
            .and(matchers::path("/jwks"))
            .respond_with(
                ResponseTemplate::new(200)
                    .set_body_string(RSA_JWKS)
                    .insert_header("cache-control", "max-age=1"),
            )
            .up_to_n_times(1)
            .mount(&server)
            .await;
        Mock::given(matchers::method("GET"))
            .and(matchers::path("/jwks"))
            .respond_with(ResponseTemplate::new(200).set_body_string(r#"{"keys":[]}"#))
            .mount(&server)
            .await;
        let config = JwtConfig { jwks_refresh_seconds: 0, ..JwtConfig::default() };
        let auth = Authenticator::new(&config, &KeySource::Jwks(format!("{}/jwks", server.uri()))).unwrap();
        let token = rs_token(&claims(), Some("k1"));
        assert!(auth.authenticate(&token).await.is_ok());
        assert!(auth.authenticate(&token).await.is_ok(), "cached within max-age");
        tokio::time::sleep(Duration::from_millis(1_100)).await;
        assert_invalid(auth.authenticate(&token).await, "withdrawn key after expiry");
        assert_eq!(server.received_requests().await.unwrap().len(), 2);
    }

    #[tokio::test]
    async fn an_unreachable_jwks_is_reported_as_such() {
        let server = MockServer::start().await;
        Mock::given(matchers::any()).respond_with(ResponseTemplate::new(500)).mount(&server).await;
        let auth = auth(&server, 60);
        assert!(matches!(
            auth.authenticate(&rs_token(&claims(), Some("k1"))).await,
            Err(Error::KeysUnavailable)
        ));
    }
}
