//! `GET /packages/{id}`: a disclosure package to its organisation only, to a caller cleared for
//! it and holding `tchap:disclose`; one 404 for everything else.

use argus_domain::{
    Classification::{Restricted, Secret, TopSecret},
    Scope,
};
use argus_graphql::oversight::PackageRecord;

use crate::harness::TestServer;

#[tokio::test]
async fn a_package_goes_to_its_organisation_cleared_for_it_only() {
    let server = TestServer::start().await;
    let dir = server.config.packages_dir();
    std::fs::create_dir_all(&dir).unwrap();
    let tar: Vec<u8> = (0..200_000_u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(PackageRecord::tar_path(&dir, "pkg-1"), &tar).unwrap();
    let record = PackageRecord {
        id: "pkg-1".into(),
        org: "dgsi".into(),
        clearance: Secret,
        actor: "agent@dgsi".into(),
        sha512: "ab".repeat(64),
        size: tar.len() as u64,
    };
    record.write(&dir).unwrap();
    assert_eq!(PackageRecord::read(&dir, "pkg-1").unwrap(), Some(record));

    let get = |token: String, id: &str| {
        let request = server.client.get(server.url(&format!("/packages/{id}"))).bearer_auth(token);
        async move { request.send().await.unwrap() }
    };
    let ok = get(server.token("dgsi", TopSecret, &[Scope::Disclose]), "pkg-1").await;
    assert_eq!(ok.status().as_u16(), 200);
    let header = |name: &str| ok.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    assert_eq!(header("content-type").as_deref(), Some("application/x-tar"));
    assert_eq!(header("content-disposition").as_deref(), Some("attachment; filename=\"pkg-1.tar\""));
    assert_eq!(header("x-content-type-options").as_deref(), Some("nosniff"));
    assert_eq!(header("cache-control").as_deref(), Some("private, no-store"));
    assert!(ok.bytes().await.unwrap()[..] == tar[..], "the bytes differ");

    let mut answers = Vec::new();
    for (token, id) in [
        (server.token("anssi", TopSecret, &[Scope::Disclose]), "pkg-1"),
        (server.token("dgsi", Restricted, &[Scope::Disclose]), "pkg-1"),
        (server.token("dgsi", TopSecret, &[Scope::Disclose]), "pkg-2"),
        (server.token("dgsi", TopSecret, &[Scope::Disclose]), "..%2Fpkg-1"),
        (server.token("dgsi", TopSecret, &[Scope::Disclose]), ".pkg-1"),
    ] {
        let response = get(token, id).await;
        answers.push((response.status().as_u16(), response.text().await.unwrap()));
    }
    assert!(answers.iter().all(|a| a == &answers[0]), "{answers:?}");
    assert_eq!(answers[0].0, 404);
    let without_scope = get(server.token("dgsi", TopSecret, &[Scope::Read, Scope::Audit]), "pkg-1").await;
    assert_eq!(without_scope.status().as_u16(), 403);
    let anonymous = server.client.get(server.url("/packages/pkg-1")).send().await.unwrap();
    assert_eq!(anonymous.status().as_u16(), 401);
    server.stop().await;
}
