//! Every JWT attack of the threat model, over HTTP: 401 with the RFC 6750 challenge.

use argus_domain::{Classification::Secret, Scope};
use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use crate::harness::{SECRET, TestServer, config, fixture};

const QUERY: &str = r#"{"query":"{ tchapStats { totalRooms } }"}"#;

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn claims() -> Value {
    json!({
        "iss": "argus-dev", "aud": "argus-tchap", "exp": now() + 600, "sub": "mallory",
        "org": "dgsi", "clearance": "SECRET", "scope": "tchap:read",
    })
}

fn hs(claims: &Value) -> String {
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &EncodingKey::from_secret(SECRET.as_bytes()))
        .unwrap_or_else(|e| panic!("encode: {e}"))
}

fn edit(mut c: Value, key: &str, value: Option<Value>) -> Value {
    match value {
        Some(v) => c[key] = v,
        None => {
            if let Some(map) = c.as_object_mut() {
                map.remove(key);
            }
        }
    }
    c
}

async fn assert_401(server: &TestServer, authorization: Option<&str>, with_error_code: bool, why: &str) {
    let response = server.post_raw(authorization, QUERY.as_bytes().to_vec()).await;
    assert_eq!(response.status().as_u16(), 401, "{why}");
    let challenge = response
        .headers()
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(challenge.starts_with("Bearer realm=\"argus-tchap\""), "{why}: {challenge}");
    assert_eq!(challenge.contains("error=\"invalid_token\""), with_error_code, "{why}: {challenge}");
    let body: Value = response.json().await.unwrap_or_else(|e| panic!("{why}: {e}"));
    assert_eq!(body["errors"][0]["extensions"]["code"], "UNAUTHENTICATED", "{why}");
    if let Some(a) = authorization {
        let token = a.trim_start_matches("Bearer ");
        if token.len() > 10 {
            assert!(!body.to_string().contains(token), "{why}: the token is echoed");
        }
    }
}

#[tokio::test]
async fn hs256_attacks_are_refused_with_401() {
    let server = TestServer::start().await;
    assert_401(&server, None, false, "no header").await;
    assert_401(&server, Some("Basic YWxhZGRpbjpvcGVuc2VzYW1l"), true, "basic").await;
    assert_401(&server, Some("Bearer"), true, "empty bearer").await;
    assert_401(&server, Some("Bearer garbage"), true, "garbage").await;
    assert_401(&server, Some("Bearer a.b.c"), true, "three garbage parts").await;
    let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
    let none = format!("{}.{}.", b64(r#"{"alg":"none","typ":"JWT"}"#), b64(&claims().to_string()));
    assert_401(&server, Some(&format!("Bearer {none}")), true, "alg none").await;
    let cases = [
        ("expired", edit(claims(), "exp", Some(json!(now() - 3600)))),
        ("wrong issuer", edit(claims(), "iss", Some(json!("https://evil.example")))),
        ("wrong audience", edit(claims(), "aud", Some(json!("another-api")))),
        ("no exp", edit(claims(), "exp", None)),
        ("no org", edit(claims(), "org", None)),
        ("no clearance", edit(claims(), "clearance", None)),
        ("unknown clearance", edit(claims(), "clearance", Some(json!("COSMIC")))),
        ("org of the wrong type", edit(claims(), "org", Some(json!(7)))),
        ("clearance of the wrong type", edit(claims(), "clearance", Some(json!(["SECRET"])))),
        ("exp of the wrong type", edit(claims(), "exp", Some(json!("soon")))),
    ];
    for (why, c) in cases {
        assert_401(&server, Some(&format!("Bearer {}", hs(&c))), true, why).await;
    }
    let wrong_key = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims(),
        &EncodingKey::from_secret(b"another-secret-another-secret-1234"),
    )
    .unwrap();
    assert_401(&server, Some(&format!("Bearer {wrong_key}")), true, "wrong key").await;
    // The genuine token works.
    let (status, body) = server.graphql(&hs(&claims()), "{ tchapStats { totalRooms } }", json!({})).await;
    assert_eq!((status, body["data"]["tchapStats"]["totalRooms"].clone()), (200, json!(0)));
    server.stop().await;
}

#[tokio::test]
async fn unknown_scopes_authenticate_but_grant_nothing() {
    let server = TestServer::start().await;
    let token = hs(&edit(claims(), "scope", Some(json!("tchap:admin openid"))));
    let (status, body) = server.graphql(&token, "{ tchapStats { totalRooms } }", json!({})).await;
    assert_eq!(status, 200);
    assert_eq!(body["errors"][0]["extensions"]["code"], "FORBIDDEN");
    assert!(body["data"].is_null());
    server.stop().await;
}

#[tokio::test]
async fn an_rsa_keyed_server_refuses_hs256_signed_with_its_public_key() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(&dir);
    c.jwt.hs256_secret = None;
    c.jwt.public_key_file = Some(fixture("rsa-public.pem"));
    let server = TestServer::start_with(dir, c).await;
    let public = std::fs::read(fixture("rsa-public.pem")).unwrap();
    let confused =
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims(), &EncodingKey::from_secret(&public))
            .unwrap();
    assert_401(&server, Some(&format!("Bearer {confused}")), true, "HS256 with the RSA public key").await;
    let private = std::fs::read(fixture("rsa-private.pem")).unwrap();
    let genuine = jsonwebtoken::encode(
        &Header::new(Algorithm::RS256),
        &claims(),
        &EncodingKey::from_rsa_pem(&private).unwrap(),
    )
    .unwrap();
    let (status, body) = server.graphql(&genuine, "{ tchapStats { totalRooms } }", json!({})).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.get("errors").is_none(), "{body}");
    // A real key: introspection and GraphiQL are off unless enabled explicitly.
    let (_, body) = server.graphql(&genuine, "{ __schema { queryType { name } } }", json!({})).await;
    assert!(body["errors"].is_array() && body["data"].is_null(), "{body}");
    let graphiql = server.client.get(server.url("/graphiql")).send().await.unwrap();
    assert_eq!(graphiql.status().as_u16(), 404);
    // Development tokens cannot be minted against a real key.
    let source = server.config.key_source().unwrap();
    let request = argus_server::auth::TokenRequest {
        sub: "x".parse().unwrap(),
        org: "dgsi".parse().unwrap(),
        clearance: Secret,
        scopes: vec![Scope::Read],
        ttl: std::time::Duration::from_secs(60),
    };
    assert!(argus_server::auth::mint_dev_token(&server.config.jwt, &source, &request).is_err());
    server.stop().await;
}
