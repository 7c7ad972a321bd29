//! Environment overrides `HAZGATE__SECTION__KEY`, through the `config` crate.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use hazgate::config::{Config, ConfigError, Problem};

fn example() -> String {
    format!("{}/config/coal-mine.toml", env!("CARGO_MANIFEST_DIR"))
}

fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn overrides_scalars_and_keeps_arrays_of_tables() {
    let config = Config::load_with_env(
        example(),
        vars(&[
            ("HAZGATE__API__LISTEN", "0.0.0.0:9000"),
            ("HAZGATE__STORAGE__HEARTBEAT_S", "30"),
            ("HAZGATE__STORAGE__MODE", "every"),
        ]),
    )
    .unwrap();
    assert_eq!(config.api.listen, "0.0.0.0:9000");
    assert_eq!(config.storage.heartbeat_s, 30);
    assert_eq!(config.storage.mode, hazgate::config::StorageMode::Every);
    // Arrays of tables survive the `config` crate untouched, in order.
    assert_eq!(config.points.len(), 17);
    assert_eq!(config.points[0].id, "CH4-1201-T1");
    assert_eq!(config.points[0].thresholds[1].name, "断电");
    assert_eq!(config.api.tokens.len(), 2);
    // Case of values and file keys is kept.
    assert_eq!(config.site.name, "示例煤矿 (example colliery)");
}

#[test]
fn lowercase_variable_names_work_too() {
    let config =
        Config::load_with_env(example(), vars(&[("hazgate__api__listen", "127.0.0.1:1")])).unwrap();
    assert_eq!(config.api.listen, "127.0.0.1:1");
}

#[test]
fn errors_from_overrides_name_the_variable() {
    let result = Config::load_with_env(
        example(),
        vars(&[
            ("HAZGATE__STORAGE__HEARTBEAT_S", "soon"),
            ("HAZGATE__API__LISTEN", "nowhere"),
            ("HAZGATE__API__PORT", "1"),
        ]),
    );
    let Err(ConfigError::Invalid(diagnostics)) = result else {
        panic!("should be invalid");
    };
    let found = diagnostics.items;
    assert_eq!(found.len(), 3, "{found:#?}");
    for diagnostic in &found {
        assert!(diagnostic.env_var.is_some(), "{diagnostic:?}");
        assert!(diagnostic.location.is_none(), "{diagnostic:?}");
    }
    let by_path = |path: &str| found.iter().find(|d| d.path.to_string() == path).unwrap();
    assert_eq!(by_path("storage.heartbeat_s").problem, Problem::Type);
    assert_eq!(
        by_path("storage.heartbeat_s").env_var.as_deref(),
        Some("HAZGATE__STORAGE__HEARTBEAT_S")
    );
    assert_eq!(by_path("api.listen").problem, Problem::Value);
    assert_eq!(by_path("api.port").problem, Problem::UnknownKey);
}

#[test]
fn numeric_looking_text_stays_text() {
    // `try_parsing` makes 140000000099 a number; the site code is a string.
    let config =
        Config::load_with_env(example(), vars(&[("HAZGATE__SITE__ID", "140000000099")])).unwrap();
    assert_eq!(config.site.id, "140000000099");
}
