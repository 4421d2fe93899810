//! The configuration tests: layers, defaults, refusals and the generated development secret.

use argus_domain::Secret;
use figment::Jail;

use super::*;

#[test]
fn defaults_without_any_configuration() {
    Jail::expect_with(|jail| {
        jail.clear_env();
        let c = Config::load(Path::new("argus-tchap.toml")).map_err(|e| e.to_string())?;
        assert_eq!(c, Config::default());
        assert_eq!(c.bind.to_string(), "127.0.0.1:8080");
        assert_eq!(c.database_url, DatabaseUrl::sqlite_file("argus-tchap.db"));
        assert!(c.is_development());
        assert!(c.introspection_enabled());
        assert_eq!(c.data_dir(), PathBuf::from("."));
        assert_eq!(c.fusion().jsonl_path, Some(PathBuf::from("./network-nodes.jsonl")));
        Ok(())
    });
}

#[test]
fn the_fusion_file_lies_in_the_data_directory_unless_absolute() {
    Jail::expect_with(|jail| {
        jail.clear_env();
        jail.set_env("ARGUS_DATA_DIR", "/var/lib/argus");
        let c = Config::load(Path::new("argus-tchap.toml")).map_err(|e| e.to_string())?;
        assert_eq!(c.fusion().jsonl_path, Some(PathBuf::from("/var/lib/argus/network-nodes.jsonl")));
        jail.set_env("ARGUS_FUSION_JSONL_PATH", "/srv/fusion/{org}.jsonl");
        let c = Config::load(Path::new("argus-tchap.toml")).map_err(|e| e.to_string())?;
        assert_eq!(c.fusion().jsonl_path, Some(PathBuf::from("/srv/fusion/{org}.jsonl")));
        Ok(())
    });
}

#[test]
fn file_then_environment() {
    Jail::expect_with(|jail| {
        jail.clear_env();
        jail.create_file(
            "argus-tchap.toml",
            r#"
            bind = "0.0.0.0:9000"
            database_url = "sqlite:///var/lib/argus/tchap.db"
            [jwt]
            issuer = "https://idp.example"
            leeway_seconds = 5
            [matrix]
            allowed_homeservers = ["https://matrix.agent.tchap.gouv.fr"]
            "#,
        )?;
        jail.set_env("ARGUS_JWT_ISSUER", "https://idp2.example");
        jail.set_env("ARGUS_JWT_HS256_SECRET", "12345678901234567890123456789012");
        jail.set_env("ARGUS_MATRIX_ALLOW_PRIVATE_ADDRESSES", "127.0.0.1, ::1");
        jail.set_env("ARGUS_GRAPHQL_INTROSPECTION", "false");
        jail.set_env("ARGUS_MATRIX_EXTERNAL_HOMESERVERS", "agent.externe.tchap.gouv.fr, partenaires.example");
        jail.set_env("ARGUS_CONFIG", "ignored");
        jail.set_env("ARGUS_SOMETHING_ELSE", "ignored");
        let c = Config::load(Path::new("argus-tchap.toml")).map_err(|e| e.to_string())?;
        assert_eq!(c.bind.to_string(), "0.0.0.0:9000");
        assert_eq!(c.jwt.issuer, "https://idp2.example");
        assert_eq!(c.jwt.leeway_seconds, 5);
        assert_eq!(
            c.jwt.hs256_secret.as_ref().map(Secret::expose_secret),
            Some("12345678901234567890123456789012")
        );
        assert_eq!(c.matrix.allow_private_addresses, vec!["127.0.0.1", "::1"]);
        assert_eq!(c.matrix.allowed_homeservers, vec!["https://matrix.agent.tchap.gouv.fr"]);
        assert_eq!(c.matrix.external_homeservers, vec!["agent.externe.tchap.gouv.fr", "partenaires.example"]);
        assert_eq!(
            crate::services::connector_config(&c).external_homeservers,
            c.matrix.external_homeservers,
            "the connector counts members of the configured servers"
        );
        assert!(!c.introspection_enabled());
        assert_eq!(c.data_dir(), PathBuf::from("/var/lib/argus"));
        assert!(!format!("{c:?}").contains("1234567890"));
        Ok(())
    });
}

#[test]
fn debug_leaves_out_the_database_url() -> std::result::Result<(), argus_store::Error> {
    let c = Config { database_url: "postgres://argus:db-password-42@db/argus".parse()?, ..Config::default() };
    let debug = format!("{c:?}");
    assert!(debug.contains("database_url: DatabaseUrl(Postgres([redacted]))"), "{debug}");
    Ok(())
}

#[test]
fn the_database_url_is_parsed_once_when_loaded() {
    Jail::expect_with(|jail| {
        jail.clear_env();
        jail.set_env("ARGUS_DATABASE_URL", "sqlite:data/tchap.db");
        let c = Config::load(Path::new("argus-tchap.toml")).map_err(|e| e.to_string())?;
        assert_eq!(c.sqlite_path(), Some(PathBuf::from("data/tchap.db")));
        assert_eq!(c.data_dir(), PathBuf::from("data"));
        // What the store would refuse, the configuration refuses when it is loaded, without
        // repeating the URL.
        for bad in ["sqlite://tchap.db?mode=ro", "mysql://argus:pw-secret@db/argus", "postgres://"] {
            jail.set_env("ARGUS_DATABASE_URL", bad);
            let e = Config::load(Path::new("argus-tchap.toml")).err().map(|e| e.to_string());
            assert!(
                e.as_deref().is_some_and(|e| e.contains("database URL") && !e.contains("pw-secret")),
                "{e:?}"
            );
        }
        Ok(())
    });
}

#[test]
fn unknown_keys_are_rejected() {
    Jail::expect_with(|jail| {
        jail.clear_env();
        jail.create_file("argus-tchap.toml", "[jwt]\nissuer_typo = \"x\"\n")?;
        let e = Config::load(Path::new("argus-tchap.toml")).err().map(|e| e.to_string());
        assert!(e.is_some_and(|e| e.contains("issuer_typo")));
        jail.create_file("argus-tchap.toml", "")?;
        jail.set_env("ARGUS_JWT_ISSUR", "x");
        assert!(Config::load(Path::new("argus-tchap.toml")).is_err());
        Ok(())
    });
}

#[test]
fn a_real_key_turns_development_features_off() {
    let mut c = Config::default();
    c.jwt.jwks_url = Some("https://idp.example/jwks".into());
    assert!(!c.is_development());
    assert!(!c.introspection_enabled());
    assert!(!c.graphiql_enabled());
    c.graphql.introspection = Some(true);
    assert!(c.introspection_enabled());
    c.jwt.hs256_secret = Some(Secret::new("x".repeat(40)));
    assert!(c.validate().is_err(), "two keys at once");
}

#[test]
fn dev_secret_is_generated_once_and_kept() {
    let dir = tempfile::tempdir().unwrap();
    let c =
        Config { database_url: DatabaseUrl::sqlite_file(dir.path().join("db.sqlite")), ..Config::default() };
    let first = c.key_source().unwrap();
    let second = c.key_source().unwrap();
    assert_eq!(first, second);
    assert!(matches!(first, KeySource::Hs256 { generated: true, .. }));
    let path = dir.path().join(DEV_SECRET_FILE);
    assert!(path.exists());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    }
}

#[test]
fn short_secrets_are_refused() {
    let mut c = Config::default();
    c.jwt.hs256_secret = Some(Secret::new("short"));
    assert!(c.validate().is_err());
}

#[test]
fn media_defaults_file_then_environment() {
    Jail::expect_with(|jail| {
        jail.clear_env();
        let c = Config::load(Path::new("argus-tchap.toml")).map_err(|e| e.to_string())?;
        assert_eq!(c.media, MediaConfig::default());
        assert_eq!((c.media.max_file_bytes, c.media.max_run_bytes), (100 << 20, 1 << 30));
        assert_eq!((c.media.concurrency_per_homeserver, c.media.worker_interval_secs), (4, 30));
        assert_eq!(
            (c.media.scan, &c.media.store, c.media.retry_max_secs),
            (ScanMode::Clamd, &MediaStore::File, 3600)
        );
        // No scanner: nothing is served.
        assert!(!c.media.serving_allowed() && c.media.scanner().is_none());
        assert_eq!(c.media.file_store_dir(&c.data_dir()), Some(PathBuf::from("./media")));

        jail.create_file(
            "argus-tchap.toml",
            r#"
            [media]
            clamd = "tcp://clamav.internal:3310"
            store = "s3://evidence?endpoint=https://minio.internal:9000"
            max_file_bytes = 1000
            concurrency_per_homeserver = 2
            content_scanner = "https://mcs.internal/"
            "#,
        )?;
        jail.set_env("ARGUS_MEDIA_CLAMD", "tcp://127.0.0.1:3310");
        jail.set_env("ARGUS_MEDIA_MAX_FILE_BYTES", "2048");
        jail.set_env("ARGUS_MEDIA_WORKER_INTERVAL_SECS", "5");
        let c = Config::load(Path::new("argus-tchap.toml")).map_err(|e| e.to_string())?;
        let clamd = c.media.scanner().map(ToString::to_string);
        assert_eq!(clamd.as_deref(), Some("tcp://127.0.0.1:3310"));
        assert!(c.media.serving_allowed());
        assert_eq!((c.media.max_file_bytes, c.media.concurrency_per_homeserver), (2048, 2));
        assert_eq!(c.media.worker_interval(), std::time::Duration::from_secs(5));
        let MediaStore::S3(at) = &c.media.store else {
            panic!("{:?}", c.media.store);
        };
        assert_eq!(at.bucket, "evidence");
        assert_eq!(at.endpoint.as_deref(), Some("https://minio.internal:9000"));
        assert_eq!(at.region, "us-east-1");
        assert_eq!(c.media.file_store_dir(Path::new("/var/lib/argus")), None);
        assert_eq!(c.media.content_scanner.as_ref().map(|u| u.0.as_str()), Some("https://mcs.internal/"));

        // scan = "off" serves without a scanner, and never scans even with one.
        jail.set_env("ARGUS_MEDIA_SCAN", "off");
        let c = Config::load(Path::new("argus-tchap.toml")).map_err(|e| e.to_string())?;
        assert_eq!(c.media.scan, ScanMode::Off);
        assert!(c.media.serving_allowed() && c.media.scanner().is_none());
        Ok(())
    });
}

#[test]
fn media_values_that_cannot_work_are_refused_naming_their_key() {
    Jail::expect_with(|jail| {
        jail.clear_env();
        let refused = [
            ("ARGUS_MEDIA_CLAMD", "unix:///run/clamav/clamd.ctl", "media.clamd"),
            ("ARGUS_MEDIA_CLAMD", "tcp://clamav.internal", "media.clamd"),
            ("ARGUS_MEDIA_CLAMD", "http://clamav.internal:3310", "media.clamd"),
            ("ARGUS_MEDIA_SCAN", "maybe", "media.scan"),
            ("ARGUS_MEDIA_STORE", "ftp://evidence", "media.store"),
            ("ARGUS_MEDIA_STORE", "s3://evidence?endpoint=ftp://minio", "media.store"),
            ("ARGUS_MEDIA_STORE", "s3://key:secret-42@evidence", "media.store"),
            ("ARGUS_MEDIA_STORE", "s3://evidence?bucket_typo=x", "media.store"),
            ("ARGUS_MEDIA_CONTENT_SCANNER", "file:///etc/passwd", "media.content_scanner"),
            ("ARGUS_MEDIA_MAX_FILE_BYTES", "0", "media.max_file_bytes"),
            ("ARGUS_MEDIA_MAX_RUN_BYTES", "0", "media.max_run_bytes"),
            ("ARGUS_MEDIA_CONCURRENCY_PER_HOMESERVER", "0", "media.concurrency_per_homeserver"),
            ("ARGUS_MEDIA_WORKER_INTERVAL_SECS", "0", "media.worker_interval_secs"),
            ("ARGUS_MEDIA_RETRY_MAX_SECS", "0", "media.retry_max_secs"),
            ("ARGUS_MEDIA_MAX_FILE_BYTES", "-1", "media.max_file_bytes"),
        ];
        for (var, value, key) in refused {
            jail.set_env(var, value);
            let e = Config::load(Path::new("argus-tchap.toml")).err().map(|e| e.to_string());
            assert!(
                e.as_deref().is_some_and(|e| e.contains(key) && !e.contains("secret-42")),
                "{var}={value}: {e:?}"
            );
            jail.clear_env();
        }
        jail.create_file("argus-tchap.toml", "[media]\nclamav = \"tcp://x:1\"\n")?;
        let e = Config::load(Path::new("argus-tchap.toml")).err().map(|e| e.to_string());
        assert!(e.is_some_and(|e| e.contains("clamav")));
        Ok(())
    });
}

#[test]
fn the_identity_server_reaches_the_connector_from_the_file_or_the_environment() {
    Jail::expect_with(|jail| {
        jail.clear_env();
        let c = Config::load(Path::new("argus-tchap.toml")).map_err(|e| e.to_string())?;
        assert_eq!(crate::services::connector_config(&c).identity_server, None);
        jail.create_file(
            "argus-tchap.toml",
            "[matrix]\nidentity_server = \"https://matrix.agent.tchap.gouv.fr\"\n",
        )?;
        let c = Config::load(Path::new("argus-tchap.toml")).map_err(|e| e.to_string())?;
        assert_eq!(
            crate::services::connector_config(&c).identity_server.as_deref(),
            Some("https://matrix.agent.tchap.gouv.fr")
        );
        jail.set_env("ARGUS_MATRIX_IDENTITY_SERVER", "http://127.0.0.1:9000");
        let c = Config::load(Path::new("argus-tchap.toml")).map_err(|e| e.to_string())?;
        assert_eq!(c.matrix.identity_server.as_deref(), Some("http://127.0.0.1:9000"));
        Ok(())
    });
}
