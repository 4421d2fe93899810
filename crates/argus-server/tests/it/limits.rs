//! The limits that keep one caller from taking what others need, as configured, reach the
//! application services the server and the operator commands run on.

use std::time::Duration;

use argus_server::Config;
use figment::{
    Figment,
    providers::{Format as _, Toml},
};

#[tokio::test]
async fn configured_limits_reach_the_application_services() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let defaults = Config::default();
    assert_eq!(
        (defaults.matrix.max_concurrent_per_caller, defaults.matrix.interactive_run_deadline_secs),
        (2, 600)
    );
    assert_eq!((defaults.matrix.joined_rooms_per_call, defaults.matrix.joined_failures_recorded), (200, 20));
    assert_eq!((defaults.watch.max_per_owner, defaults.watch.max_per_organisation), (500, 10_000));
    let file = format!(
        r#"
        database_url = "sqlite://{}/argus.db"
        [matrix]
        max_concurrent_per_caller = 3
        interactive_run_deadline_secs = 120
        joined_rooms_per_call = 50
        joined_failures_recorded = 5
        [watch]
        scheduler = false
        max_per_owner = 40
        max_per_organisation = 400
        "#,
        dir.path().display()
    );
    let config = Config::from_figment(Figment::new().merge(Toml::string(&file)))?;
    let app = &argus_server::services::assemble(&config).await?.services.app;
    assert_eq!(app.admission.limits().max_concurrent_per_caller, 3);
    assert_eq!(app.limits.interactive_run_deadline, Duration::from_secs(120));
    assert_eq!((app.limits.joined_rooms_per_call, app.limits.joined_failures_recorded), (50, 5));
    assert_eq!((app.watch_limits.max_per_owner, app.watch_limits.max_per_org), (40, 400));
    Ok(())
}
