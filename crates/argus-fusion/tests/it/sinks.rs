//! The JSON Lines sink: buffered until flush, one object per line, appended, torn lines healed.

use argus_domain::Classification;
use argus_fusion::{FusionConfig, JsonLinesSink, NetworkNode, Sink, build_sinks};

use crate::support::{assert_valid, bare_room, read_entities, read_jsonl, room, validator};

#[tokio::test]
async fn writes_one_object_per_line_on_flush() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("nested/dir/nodes.jsonl");
    let sink = JsonLinesSink::new(&path);
    let nodes = vec![
        NetworkNode::from_room(&room("dgsi", "!a:x.org", Classification::Secret)?, 1),
        NetworkNode::from_room(&bare_room("dgsi")?, 2),
        NetworkNode::from_room(&room("anssi", "!b:x.org", Classification::Unclassified)?, 1),
    ];
    for n in &nodes {
        sink.deliver(n).await?;
    }
    assert!(!path.exists(), "nothing is written before flush");
    sink.flush().await?;
    assert_eq!(read_entities(&path)?, nodes);
    let validator = validator()?;
    for line in read_jsonl(&path)? {
        assert_valid(&validator, &line)?;
    }
    // A second batch appends; an empty flush writes nothing.
    sink.deliver(&nodes[0]).await?;
    sink.flush().await?;
    sink.flush().await?;
    let all = read_entities(&path)?;
    assert_eq!(all.len(), 4);
    assert_eq!(all[3], nodes[0]);
    Ok(())
}

#[tokio::test]
async fn heals_a_torn_last_line() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("nodes.jsonl");
    std::fs::write(&path, "{\"id\":\"torn")?;
    let sink = JsonLinesSink::new(&path);
    let node = NetworkNode::from_room(&bare_room("dgsi")?, 1);
    sink.deliver(&node).await?;
    sink.flush().await?;
    let text = std::fs::read_to_string(&path)?;
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(serde_json::from_str::<NetworkNode>(lines[1])?, node);
    Ok(())
}

#[tokio::test]
async fn io_errors_do_not_name_the_path() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    // The parent "directory" is a file, so the sink cannot create the file.
    std::fs::write(dir.path().join("blocker"), "")?;
    let sink = JsonLinesSink::new(dir.path().join("blocker/nodes.jsonl"));
    sink.deliver(&NetworkNode::from_room(&bare_room("dgsi")?, 1)).await?;
    let err = sink.flush().await.err().ok_or_else(|| anyhow::anyhow!("flush succeeded"))?;
    assert!(err.is_retryable());
    assert!(!err.to_string().contains("blocker"), "{err}");
    Ok(())
}

#[test]
fn config_builds_the_configured_sinks() -> anyhow::Result<()> {
    let config: FusionConfig = serde_json::from_value(serde_json::json!({
        "jsonl_path": "/tmp/x.jsonl",
        "webhook": { "url": "https://fusion.example/hook", "org_urls": { "dgsi": "http://127.0.0.1:9/h" } },
        "batch_size": 10
    }))?;
    let sinks = build_sinks(&config)?;
    assert_eq!(sinks.iter().map(|s| s.name()).collect::<Vec<_>>(), ["jsonl", "webhook"]);
    assert_eq!(config.relay_options().batch_size, 10);

    let none: FusionConfig = serde_json::from_value(serde_json::json!({ "jsonl_path": null }))?;
    assert!(build_sinks(&none)?.is_empty());
    // TOML has no null: an empty path disables the file sink too.
    let empty: FusionConfig = serde_json::from_value(serde_json::json!({ "jsonl_path": "" }))?;
    assert!(build_sinks(&empty.relative_to(std::path::Path::new("/data")))?.is_empty());
    let absolute = config.clone().relative_to(std::path::Path::new("/data"));
    assert_eq!(absolute.jsonl_path, config.jsonl_path, "absolute paths are kept");

    let secret_url = "ftp://user:hunter2@fusion.example/hook";
    let bad: FusionConfig = serde_json::from_value(serde_json::json!({ "webhook": { "url": secret_url } }))?;
    let err = build_sinks(&bad).err().ok_or_else(|| anyhow::anyhow!("bad URL accepted"))?;
    assert!(!err.to_string().contains("hunter2"), "{err}");
    let bad_org: FusionConfig =
        serde_json::from_value(serde_json::json!({ "webhook": { "org_urls": { "dgsi": "not a url" } } }))?;
    assert!(build_sinks(&bad_org).err().is_some_and(|e| e.to_string().contains("dgsi")));
    assert!(
        serde_json::from_value::<FusionConfig>(serde_json::json!({ "webhook": { "urls": [] } })).is_err()
    );
    assert!(
        serde_json::from_value::<FusionConfig>(
            serde_json::json!({ "webhook": { "org_urls": { "a b": "https://x" } } })
        )
        .is_err()
    );
    let zero: FusionConfig = serde_json::from_value(serde_json::json!({ "batch_size": 0 }))?;
    assert!(build_sinks(&zero).is_err());
    let no_time: FusionConfig =
        serde_json::from_value(serde_json::json!({ "webhook": { "request_timeout_ms": 0 } }))?;
    assert!(no_time.validate().is_err());
    Ok(())
}

#[tokio::test]
async fn an_org_placeholder_gives_each_organisation_its_own_file() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let sink = JsonLinesSink::new(dir.path().join("fusion/{org}.jsonl"));
    let a1 = NetworkNode::from_room(&room("org-a", "!a:x.org", Classification::Secret)?, 1);
    let b1 = NetworkNode::from_room(&room("org-b", "!a:x.org", Classification::Secret)?, 1);
    let a2 = NetworkNode::from_room(&room("org-a", "!b:x.org", Classification::Secret)?, 2);
    for n in [&a1, &b1, &a2] {
        sink.deliver(n).await?;
    }
    sink.flush().await?;
    assert_eq!(read_entities(&dir.path().join("fusion/org-a.jsonl"))?, [a1, a2]);
    assert_eq!(read_entities(&dir.path().join("fusion/org-b.jsonl"))?, [b1]);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("fusion/org-a.jsonl"))?.permissions().mode();
        assert_eq!(mode & 0o077, 0, "entity files are readable by their owner only");
    }
    // An organisation id that would hide or escape the file is refused.
    let dots = NetworkNode::from_room(&room("..", "!a:x.org", Classification::Secret)?, 1);
    assert!(sink.deliver(&dots).await.is_err());
    Ok(())
}

#[test]
fn the_documented_toml_section_parses() -> anyhow::Result<()> {
    use figment::{
        Figment,
        providers::{Format, Toml},
    };
    let readme = include_str!("../../README.md");
    let start = readme.find("```toml\n").ok_or_else(|| anyhow::anyhow!("no TOML example"))? + 8;
    let len = readme[start..].find("```").ok_or_else(|| anyhow::anyhow!("unterminated"))?;
    let config: FusionConfig =
        Figment::from(Toml::string(&readme[start..start + len])).extract_inner("fusion")?;
    assert_eq!(config.jsonl_path.as_deref(), Some(std::path::Path::new("network-nodes.jsonl")));
    assert_eq!((config.park_after_attempts, config.batch_size), (8, 500));
    let webhook = config.webhook.clone().ok_or_else(|| anyhow::anyhow!("no webhook"))?;
    assert_eq!(webhook.org_urls.len(), 1);
    assert!(webhook.signing_secret.is_some());
    assert!(!format!("{config:?}").contains("change-me"), "the secret never shows in Debug");
    assert_eq!(build_sinks(&config)?.len(), 2);
    // Unknown keys are refused, as in every other section.
    let typo =
        Figment::from(Toml::string("[fusion]\njsonl_pth = \"x\"\n")).extract_inner::<FusionConfig>("fusion");
    assert!(typo.is_err());
    Ok(())
}
