//! Reading a configuration: file text → TOML values, with the `config` crate's
//! environment layer (`HAZGATE__SECTION__KEY`) on top → one section and one array
//! element at a time → semantic checks → diagnostics with places.

use super::error::{ConfigError, Diagnostic, Diagnostics, KeyPath, Problem, Segment};
use super::keys;
use super::spans::SpanIndex;
use super::validate::{self, Origins};
use super::*;
use config::Source;
use serde::de::DeserializeOwned;
use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// Prefix of environment overrides: `HAZGATE__SECTION__KEY`.
pub const ENV_PREFIX: &str = "HAZGATE";
/// Separator between levels in an environment override.
pub const ENV_SEPARATOR: &str = "__";

/// Where environment overrides come from.
pub(crate) enum EnvSource {
    /// The process environment.
    Process,
    /// These (name, value) pairs only.
    Given(Vec<(String, String)>),
}

pub(crate) fn load_file(path: &Path, env: EnvSource) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    load_text(&text, path.to_owned(), env)
}

pub(crate) fn load_text(text: &str, file: PathBuf, env: EnvSource) -> Result<Config, ConfigError> {
    let invalid = |items: Vec<Diagnostic>| {
        ConfigError::Invalid(Diagnostics {
            file: file.clone(),
            items,
        })
    };

    // Positions are only needed to report problems, and the position index of a large
    // file costs tens of MB, so it is built only when there is something to report.
    let syntax = |text: &str| match SpanIndex::parse(text) {
        Ok(index) => Ok(index),
        Err((message, location)) => {
            let mut diagnostic = Diagnostic::new(Problem::Syntax, KeyPath::root(), message);
            diagnostic.location = location;
            Err(vec![diagnostic])
        }
    };

    let environment = config::Environment::with_prefix(ENV_PREFIX)
        .separator(ENV_SEPARATOR)
        .try_parsing(true);
    let environment = match env {
        EnvSource::Process => environment,
        EnvSource::Given(vars) => environment.source(Some(vars.into_iter().collect())),
    };
    let mut diagnostics = Vec::new();
    let overrides = match environment.collect() {
        Ok(map) => map,
        Err(error) => {
            diagnostics.push(Diagnostic::new(
                Problem::Value,
                KeyPath::root(),
                format!("environment overrides: {error}"),
            ));
            Default::default()
        }
    };
    let env_keys: Vec<(KeyPath, String)> = overrides.keys().map(|key| env_key(key)).collect();

    // The file is parsed once into plain TOML values; the `config` crate's layered
    // map of the whole file would cost several times the file's size in memory, for
    // nothing the environment layer needs. Its environment layer is applied on top.
    let mut root = match toml::from_str::<toml::Table>(text) {
        Ok(table) => toml::Value::Table(table),
        Err(error) => {
            let index = syntax(text).map_err(invalid)?;
            diagnostics.push(Diagnostic::new(
                Problem::Syntax,
                KeyPath::root(),
                error.to_string(),
            ));
            return Err(invalid(finish(diagnostics, &index, &env_keys)));
        }
    };
    for (key, value) in overrides {
        if let Some(value) = to_toml(value) {
            set_path(&mut root, &key, value);
        }
    }

    keys::strip_unknown(
        &keys::config_shape(),
        &mut root,
        &KeyPath::root(),
        &mut diagnostics,
    );
    let toml::Value::Table(mut table) = root else {
        diagnostics.push(Diagnostic::new(
            Problem::Type,
            KeyPath::root(),
            "expected a table",
        ));
        let index = syntax(text).map_err(invalid)?;
        return Err(invalid(finish(diagnostics, &index, &env_keys)));
    };

    let env_paths: Vec<KeyPath> = env_keys.iter().map(|(path, _)| path.clone()).collect();
    let top = KeyPath::root();
    let site: Option<SiteConfig> = match table.remove("site") {
        Some(value) => lenient(value, &top.key("site"), &env_paths, &mut diagnostics),
        None => {
            diagnostics.push(Diagnostic::new(
                Problem::Missing,
                top.key("site"),
                "missing required section [site] (id, name, kind, rule_profile)",
            ));
            None
        }
    };
    let site_known = site.is_some();
    let hazard_sources =
        elements::<HazardSourceConfig>(&mut table, "hazard_sources", &mut diagnostics);
    let devices = elements::<DeviceConfig>(&mut table, "devices", &mut diagnostics);
    let points = elements::<PointConfig>(&mut table, "points", &mut diagnostics);
    let storage = section::<StorageConfig>(&mut table, "storage", &env_paths, &mut diagnostics);
    let sinks = section::<SinksConfig>(&mut table, "sinks", &env_paths, &mut diagnostics);
    let uplink = table.remove("uplink").and_then(|value| {
        lenient::<UplinkConfig>(value, &top.key("uplink"), &env_paths, &mut diagnostics)
    });
    let api = section::<ApiConfig>(&mut table, "api", &env_paths, &mut diagnostics);
    let alarm_rate =
        section::<AlarmRateConfig>(&mut table, "alarm_rate", &env_paths, &mut diagnostics);
    let actions = elements::<ActionConfig>(&mut table, "actions", &mut diagnostics);
    let linkage = elements::<LinkageConfig>(&mut table, "linkage", &mut diagnostics);

    let config = Config {
        // A placeholder only when [site] itself failed; the semantic checks are told
        // so and skip what depends on the site.
        site: site.unwrap_or(SiteConfig {
            id: String::new(),
            name: String::new(),
            kind: SiteKind::ChemicalPlant,
            rule_profile: String::new(),
        }),
        hazard_sources: hazard_sources.parsed,
        devices: devices.parsed,
        points: points.parsed,
        storage,
        sinks,
        uplink,
        api,
        alarm_rate,
        actions: actions.parsed,
        linkage: linkage.parsed,
    };
    let origins = Origins {
        hazard_sources: hazard_sources.origin,
        devices: devices.origin,
        points: points.origin,
        broken_hazard_sources: hazard_sources.broken_ids,
        broken_devices: devices.broken_ids,
        broken_points: points.broken_ids,
        actions: actions.origin,
        linkage: linkage.origin,
        site_known,
    };
    diagnostics.extend(validate::validate(&config, &origins));

    if diagnostics.is_empty() {
        Ok(config)
    } else {
        let index = syntax(text).map_err(invalid)?;
        Err(invalid(finish(diagnostics, &index, &env_keys)))
    }
}

/// Set `a.b.c` in nested tables, creating tables on the way (an override of a key
/// that is not a table replaces it, and validation then reports the type).
fn set_path(root: &mut toml::Value, dotted: &str, value: toml::Value) {
    let mut node = root;
    let mut parts = dotted.split('.').peekable();
    while let Some(part) = parts.next() {
        if !node.is_table() {
            *node = toml::Value::Table(toml::Table::new());
        }
        let toml::Value::Table(table) = node else {
            return;
        };
        if parts.peek().is_none() {
            table.insert(part.to_owned(), value);
            return;
        }
        node = table
            .entry(part.to_owned())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    }
}

/// `api.listen` → (`api.listen`, `HAZGATE__API__LISTEN`).
fn env_key(key: &str) -> (KeyPath, String) {
    let path = KeyPath(
        key.split('.')
            .map(|part| Segment::Key(part.to_owned()))
            .collect(),
    );
    let var = std::iter::once(ENV_PREFIX.to_owned())
        .chain(key.split('.').map(str::to_uppercase))
        .collect::<Vec<_>>()
        .join(ENV_SEPARATOR);
    (path, var)
}

/// Attaches places (file line/column or environment variable), sorts by place and
/// removes exact repeats.
fn finish(
    mut diagnostics: Vec<Diagnostic>,
    index: &SpanIndex,
    env_keys: &[(KeyPath, String)],
) -> Vec<Diagnostic> {
    for diagnostic in &mut diagnostics {
        if diagnostic.location.is_some() {
            continue;
        }
        let from_env = env_keys
            .iter()
            .find(|(path, _)| !path.0.is_empty() && diagnostic.path.starts_with(path));
        match from_env {
            Some((_, var)) => diagnostic.env_var = Some(var.clone()),
            None if diagnostic.path.0.is_empty() => {}
            None => diagnostic.location = index.locate(&diagnostic.path),
        }
    }
    diagnostics.sort_by(|a, b| {
        (a.location.is_none(), a.location, &a.path).cmp(&(
            b.location.is_none(),
            b.location,
            &b.path,
        ))
    });
    diagnostics.dedup();
    diagnostics
}

/// The `config` crate's value tree as a TOML value (strict types for serde). `Nil`
/// (absent) values are dropped.
fn to_toml(value: config::Value) -> Option<toml::Value> {
    use config::ValueKind;
    Some(match value.kind {
        ValueKind::Nil => return None,
        ValueKind::Boolean(b) => toml::Value::Boolean(b),
        ValueKind::I64(i) => toml::Value::Integer(i),
        ValueKind::I128(i) => i64::try_from(i)
            .map_or_else(|_| toml::Value::String(i.to_string()), toml::Value::Integer),
        ValueKind::U64(u) => i64::try_from(u)
            .map_or_else(|_| toml::Value::String(u.to_string()), toml::Value::Integer),
        ValueKind::U128(u) => i64::try_from(u)
            .map_or_else(|_| toml::Value::String(u.to_string()), toml::Value::Integer),
        ValueKind::Float(f) => toml::Value::Float(f),
        ValueKind::String(s) => toml::Value::String(s),
        ValueKind::Table(map) => toml::Value::Table(
            map.into_iter()
                .filter_map(|(key, value)| to_toml(value).map(|value| (key, value)))
                .collect(),
        ),
        ValueKind::Array(items) => {
            toml::Value::Array(items.into_iter().filter_map(to_toml).collect())
        }
    })
}

/// An optional section with defaults: absent → default; broken → reported, default.
fn section<T: DeserializeOwned + Default>(
    table: &mut toml::Table,
    key: &str,
    env_paths: &[KeyPath],
    diagnostics: &mut Vec<Diagnostic>,
) -> T {
    table
        .remove(key)
        .and_then(|value| lenient(value, &KeyPath::root().key(key), env_paths, diagnostics))
        .unwrap_or_default()
}

/// The elements of one array of tables that parsed, with their original positions.
struct Elements<T> {
    parsed: Vec<T>,
    origin: Vec<usize>,
    /// Ids of elements that did not parse, so references to them are not reported
    /// a second time as missing.
    broken_ids: HashSet<String>,
}

fn elements<T: DeserializeOwned>(
    table: &mut toml::Table,
    key: &str,
    diagnostics: &mut Vec<Diagnostic>,
) -> Elements<T> {
    let mut out = Elements {
        parsed: Vec::new(),
        origin: Vec::new(),
        broken_ids: HashSet::new(),
    };
    let path = KeyPath::root().key(key);
    let items = match table.remove(key) {
        None => return out,
        Some(toml::Value::Array(items)) => items,
        Some(other) => {
            diagnostics.push(Diagnostic::new(
                Problem::Type,
                path,
                format!(
                    "expected an array of tables ([[{key}]]), found {}",
                    other.type_str()
                ),
            ));
            return out;
        }
    };
    for (i, item) in items.into_iter().enumerate() {
        let id = item
            .get("id")
            .and_then(toml::Value::as_str)
            .map(str::to_owned);
        match lenient::<T>(item, &path.index(i), &[], diagnostics) {
            Some(parsed) => {
                out.parsed.push(parsed);
                out.origin.push(i);
            }
            None => {
                out.broken_ids.extend(id);
            }
        }
    }
    out
}

/// Deserialises `value` as a `T`, reporting every bad value it can: a bad value is
/// reported, removed and the rest tried again, until the table parses or a required
/// key is missing. Returns the parsed value even when optional keys had to be dropped
/// (their problems are already reported), so semantic checks still see the table.
fn lenient<T: DeserializeOwned>(
    mut value: toml::Value,
    base: &KeyPath,
    env_paths: &[KeyPath],
    diagnostics: &mut Vec<Diagnostic>,
) -> Option<T> {
    let mut removed: Vec<KeyPath> = Vec::new();
    // Each round removes one key, so the number of rounds is bounded by the keys.
    loop {
        let error = match serde_path_to_error::deserialize::<_, T>(value.clone()) {
            Ok(parsed) => return Some(parsed),
            Err(error) => error,
        };
        let mut inner = Vec::new();
        for segment in error.path().iter() {
            match segment {
                serde_path_to_error::Segment::Seq { index } => inner.push(Segment::Index(*index)),
                serde_path_to_error::Segment::Map { key } => inner.push(Segment::Key(key.clone())),
                serde_path_to_error::Segment::Enum { .. } => {}
                serde_path_to_error::Segment::Unknown => break,
            }
        }
        // The TOML deserialiser appends "in `key`" lines; the path already says that.
        let message = error.into_inner().to_string();
        let message = message.lines().next().unwrap_or_default().trim().to_owned();
        let mut path = base.clone();
        path.0.extend(inner.iter().cloned());

        if let Some(field) = missing_field(&message) {
            let full = path.key(field);
            if !removed.contains(&full) {
                diagnostics.push(Diagnostic::new(
                    Problem::Missing,
                    full,
                    format!("missing required key `{field}`"),
                ));
            }
            return None;
        }
        // The environment has no types: `try_parsing` turns `HAZGATE__SITE__ID=1234`
        // into a number. Where a string is expected, take the variable's text as is.
        if message.ends_with("expected a string")
            && env_paths.contains(&path)
            && stringify_at(&mut value, &inner)
        {
            continue;
        }
        diagnostics.push(Diagnostic::new(Problem::Type, path.clone(), message));
        if inner.is_empty() || !remove_at(&mut value, &inner) {
            return None;
        }
        removed.push(path);
    }
}

/// Replaces a number or boolean at `path` by its text; false when there is none.
fn stringify_at(value: &mut toml::Value, path: &[Segment]) -> bool {
    let mut node = value;
    for segment in path {
        let next = match (segment, node) {
            (Segment::Key(key), toml::Value::Table(table)) => table.get_mut(key),
            (Segment::Index(i), toml::Value::Array(items)) => items.get_mut(*i),
            _ => None,
        };
        match next {
            Some(next) => node = next,
            None => return false,
        }
    }
    let text = match node {
        toml::Value::Integer(i) => i.to_string(),
        toml::Value::Float(f) => f.to_string(),
        toml::Value::Boolean(b) => b.to_string(),
        _ => return false,
    };
    *node = toml::Value::String(text);
    true
}

/// The field name in serde's "missing field `x`" message.
fn missing_field(message: &str) -> Option<&str> {
    message.strip_prefix("missing field `")?.split('`').next()
}

/// Removes the value at `path` inside `value`; false when there is nothing to remove.
fn remove_at(value: &mut toml::Value, path: &[Segment]) -> bool {
    let Some((last, parents)) = path.split_last() else {
        return false;
    };
    let mut node = value;
    for segment in parents {
        let next = match (segment, node) {
            (Segment::Key(key), toml::Value::Table(table)) => table.get_mut(key),
            (Segment::Index(i), toml::Value::Array(items)) => items.get_mut(*i),
            _ => None,
        };
        match next {
            Some(next) => node = next,
            None => return false,
        }
    }
    match (last, node) {
        (Segment::Key(key), toml::Value::Table(table)) => table.remove(key).is_some(),
        // Removing an array element would shift the others: give up on this table.
        _ => false,
    }
}
