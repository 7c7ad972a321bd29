//! Reading a configuration: file text → TOML values, with the `config` crate's
//! environment layer (`HAZGATE__SECTION__KEY`) on top → one section and one array
//! element at a time → semantic checks → diagnostics with places.

use super::error::{ConfigError, Diagnostic, Diagnostics, KeyPath, Problem, Segment};
use super::keys;
use super::spans::SpanIndex;
use super::split;
use super::validate::{self, Origins};
use super::*;
use config::Source;
use serde::de::DeserializeOwned;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use toml::de::{DeTable, DeValue, ValueDeserializer};
use toml::Spanned;

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
    let text = std::fs::read_to_string(path).map_err(|cause| ConfigError::Read {
        path: path.to_owned(),
        cause,
    })?;
    load_text(&text, path.to_owned(), env)
}

pub(crate) fn load_text(text: &str, file: PathBuf, env: EnvSource) -> Result<Config, ConfigError> {
    let env = Overrides::collect(env);
    // A large file is read one element of its big arrays at a time; the whole tree
    // is the fallback, and what a file means never depends on which way it was read.
    if let Some(split) = split::split(text) {
        if let Ok(result) = load_tree(text, Some(&split), &env, &file) {
            return result;
        }
    }
    match load_tree(text, None, &env, &file) {
        Ok(result) => result,
        Err(Fallback) => unreachable!("only a file read in pieces falls back"),
    }
}

/// The environment layer (`HAZGATE__SECTION__KEY`), read once.
struct Overrides {
    /// Problems reading the environment itself.
    diagnostics: Vec<Diagnostic>,
    /// Each override's key path and variable name, to place diagnostics.
    keys: Vec<(KeyPath, String)>,
    /// Each override as a dotted key and a TOML value text.
    values: Vec<(String, String)>,
}

impl Overrides {
    fn collect(env: EnvSource) -> Overrides {
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
        let keys = overrides.keys().map(|key| env_key(key)).collect();
        let values = overrides
            .into_iter()
            .filter_map(|(key, value)| to_toml(value).map(|value| (key, value.to_string())))
            .collect();
        Overrides {
            diagnostics,
            keys,
            values,
        }
    }
}

/// A piece of a split file did not parse on its own: read the whole file instead.
struct Fallback;

/// Reads the file's tree into a [`Config`]: the whole tree when `split` is `None`,
/// else the rest of the file as one tree and each element of the big arrays as a
/// tree of its own, parsed, typed and dropped in turn, so that a file of 10,000
/// points never exists in memory as a tree. The strings borrow from the text.
fn load_tree(
    text: &str,
    split: Option<&split::Split<'_>>,
    env: &Overrides,
    file: &Path,
) -> Result<Result<Config, ConfigError>, Fallback> {
    let invalid = |items: Vec<Diagnostic>| {
        ConfigError::Invalid(Diagnostics {
            file: file.to_owned(),
            items,
        })
    };
    // Positions are only needed to report problems, and the position index of a large
    // file costs tens of MB, so it is built only when there is something to report.
    let report = |diagnostics: Vec<Diagnostic>| -> ConfigError {
        match SpanIndex::parse(text) {
            Ok(index) => invalid(finish(diagnostics, &index, &env.keys)),
            Err((message, location)) => {
                let mut diagnostic = Diagnostic::new(Problem::Syntax, KeyPath::root(), message);
                diagnostic.location = location;
                invalid(vec![diagnostic])
            }
        }
    };
    let mut diagnostics = env.diagnostics.clone();

    let mut root = match DeTable::parse(split.map_or(text, |s| s.rest.as_str())) {
        Ok(table) => table.into_inner(),
        Err(_) if split.is_some() => return Err(Fallback),
        Err(error) => {
            diagnostics.push(Diagnostic::new(
                Problem::Syntax,
                KeyPath::root(),
                error.to_string(),
            ));
            return Ok(Err(report(diagnostics)));
        }
    };
    // The rest of a split file must not name the arrays it was split at (an inline
    // `points = [...]` beside `[[points]]` is for the whole-file parser to judge).
    if split.is_some() && split::ELEMENT_ARRAYS.iter().any(|a| root.contains_key(*a)) {
        return Err(Fallback);
    }
    for (key, value) in &env.values {
        if let Ok(value) = DeValue::parse(value) {
            set_path(&mut root, key, value);
        }
    }

    let shape = keys::config_shape();
    keys::strip_unknown_table(&shape, &mut root, &KeyPath::root(), &mut diagnostics);
    let mut table = root;
    let mut items = |key: &'static str| -> Items<'_, '_> {
        let pieces = split.and_then(|s| Some(s.elements[split::array_index(key)?].as_slice()));
        match pieces {
            Some(pieces) => Items::Pieces {
                pieces,
                shape: keys::element_shape(&shape, key),
            },
            None => Items::Tree(table.remove(key)),
        }
    };
    let hazard_sources = elements::<HazardSourceConfig>(
        items("hazard_sources"),
        "hazard_sources",
        &mut diagnostics,
    )?;
    let devices = elements::<DeviceConfig>(items("devices"), "devices", &mut diagnostics)?;
    let points = elements::<PointConfig>(items("points"), "points", &mut diagnostics)?;
    let actions = elements::<ActionConfig>(items("actions"), "actions", &mut diagnostics)?;
    let linkage = elements::<LinkageConfig>(items("linkage"), "linkage", &mut diagnostics)?;

    let env_paths: Vec<KeyPath> = env.keys.iter().map(|(path, _)| path.clone()).collect();
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
    let storage = section::<StorageConfig>(&mut table, "storage", &env_paths, &mut diagnostics);
    let sinks = section::<SinksConfig>(&mut table, "sinks", &env_paths, &mut diagnostics);
    let uplink = table.remove("uplink").and_then(|value| {
        lenient::<UplinkConfig>(value, &top.key("uplink"), &env_paths, &mut diagnostics)
    });
    let api = section::<ApiConfig>(&mut table, "api", &env_paths, &mut diagnostics);
    let alarm_rate =
        section::<AlarmRateConfig>(&mut table, "alarm_rate", &env_paths, &mut diagnostics);

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

    Ok(if diagnostics.is_empty() {
        Ok(config)
    } else {
        Err(report(diagnostics))
    })
}

/// A value of the configuration tree, with its place in the text.
type Node<'i> = Spanned<DeValue<'i>>;

/// A key or value that is not in the text (an environment override) has no place.
fn unplaced<T>(value: T) -> Spanned<T> {
    Spanned::new(0..0, value)
}

/// Set `a.b.c` in nested tables, creating tables on the way (an override of a key
/// that is not a table replaces it, and validation then reports the type).
fn set_path<'i>(root: &mut DeTable<'i>, dotted: &str, value: Node<'i>) {
    let mut table = root;
    let mut parts = dotted.split('.').peekable();
    while let Some(part) = parts.next() {
        let key = unplaced(std::borrow::Cow::Owned(part.to_owned()));
        if parts.peek().is_none() {
            table.insert(key, value);
            return;
        }
        let node = table
            .entry(key)
            .or_insert_with(|| unplaced(DeValue::Table(DeTable::new())));
        if !matches!(node.get_ref(), DeValue::Table(_)) {
            *node = unplaced(DeValue::Table(DeTable::new()));
        }
        let DeValue::Table(inner) = node.get_mut() else {
            return;
        };
        table = inner;
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
    table: &mut DeTable<'_>,
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

/// Where the elements of one array of tables come from.
enum Items<'t, 's> {
    /// The array as it is in the tree (absent: no elements).
    Tree(Option<Node<'t>>),
    /// The text of each element, parsed one at a time; unknown keys are stripped
    /// with the element's shape.
    Pieces {
        pieces: &'s [&'t str],
        shape: Option<&'s keys::Shape>,
    },
}

fn elements<T: DeserializeOwned>(
    items: Items<'_, '_>,
    key: &str,
    diagnostics: &mut Vec<Diagnostic>,
) -> Result<Elements<T>, Fallback> {
    let mut out = Elements {
        parsed: Vec::new(),
        origin: Vec::new(),
        broken_ids: HashSet::new(),
    };
    let path = KeyPath::root().key(key);
    let mut take = |i: usize, item: Node<'_>, diagnostics: &mut Vec<Diagnostic>| {
        let id = item
            .get_ref()
            .get("id")
            .and_then(|id| id.get_ref().as_str())
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
    };
    match items {
        Items::Tree(None) => {}
        Items::Tree(Some(value)) => match value.into_inner() {
            DeValue::Array(items) => {
                for (i, item) in items.into_iter().enumerate() {
                    take(i, item, diagnostics);
                }
            }
            other => diagnostics.push(Diagnostic::new(
                Problem::Type,
                path.clone(),
                format!(
                    "expected an array of tables ([[{key}]]), found {}",
                    other.type_str()
                ),
            )),
        },
        Items::Pieces { pieces, shape } => {
            for (i, piece) in pieces.iter().enumerate() {
                let mut doc = DeTable::parse(piece).map_err(|_| Fallback)?.into_inner();
                let mut item = match (doc.remove(key).map(Spanned::into_inner), doc.is_empty()) {
                    (Some(DeValue::Array(items)), true) if items.len() == 1 => {
                        items.into_iter().next().ok_or(Fallback)?
                    }
                    _ => return Err(Fallback),
                };
                if let Some(shape) = shape {
                    keys::strip_unknown(shape, item.get_mut(), &path.index(i), diagnostics);
                }
                take(i, item, diagnostics);
            }
        }
    }
    Ok(out)
}

/// Deserialises `value` as a `T`, reporting every bad value it can: a bad value is
/// reported, removed and the rest tried again, until the table parses or a required
/// key is missing. Returns the parsed value even when optional keys had to be dropped
/// (their problems are already reported), so semantic checks still see the table.
fn lenient<T: DeserializeOwned>(
    mut value: Node<'_>,
    base: &KeyPath,
    env_paths: &[KeyPath],
    diagnostics: &mut Vec<Diagnostic>,
) -> Option<T> {
    let mut removed: Vec<KeyPath> = Vec::new();
    // Each round removes one key, so the number of rounds is bounded by the keys.
    loop {
        let error = match serde_path_to_error::deserialize::<_, T>(ValueDeserializer::from(
            value.clone(),
        )) {
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
fn stringify_at(value: &mut Node<'_>, path: &[Segment]) -> bool {
    let mut node = value;
    for segment in path {
        let next = match (segment, node.get_mut()) {
            (Segment::Key(key), DeValue::Table(table)) => table.get_mut(key.as_str()),
            (Segment::Index(i), DeValue::Array(items)) => items.get_mut(*i),
            _ => None,
        };
        match next {
            Some(next) => node = next,
            None => return false,
        }
    }
    let text = match node.get_ref() {
        DeValue::Integer(i) => i.as_str().to_owned(),
        DeValue::Float(f) => f.as_str().to_owned(),
        DeValue::Boolean(b) => b.to_string(),
        _ => return false,
    };
    *node.get_mut() = DeValue::String(text.into());
    true
}

/// The field name in serde's "missing field `x`" message.
fn missing_field(message: &str) -> Option<&str> {
    message.strip_prefix("missing field `")?.split('`').next()
}

/// Removes the value at `path` inside `value`; false when there is nothing to remove.
fn remove_at(value: &mut Node<'_>, path: &[Segment]) -> bool {
    let Some((last, parents)) = path.split_last() else {
        return false;
    };
    let mut node = value;
    for segment in parents {
        let next = match (segment, node.get_mut()) {
            (Segment::Key(key), DeValue::Table(table)) => table.get_mut(key.as_str()),
            (Segment::Index(i), DeValue::Array(items)) => items.get_mut(*i),
            _ => None,
        };
        match next {
            Some(next) => node = next,
            None => return false,
        }
    }
    match (last, node.get_mut()) {
        (Segment::Key(key), DeValue::Table(table)) => table.remove(key.as_str()).is_some(),
        // Removing an array element would shift the others: give up on this table.
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The result of reading `text` as a whole tree, and in pieces when it splits.
    fn both(text: &str) -> (String, Option<String>) {
        let env = Overrides::collect(EnvSource::Given(Vec::new()));
        let file = Path::new("t.toml");
        let whole = match load_tree(text, None, &env, file) {
            Ok(result) => format!("{result:?}"),
            Err(Fallback) => panic!("the whole tree never falls back"),
        };
        let pieces = split::split(text).and_then(|split| {
            load_tree(text, Some(&split), &env, file)
                .ok()
                .map(|result| format!("{result:?}"))
        });
        (whole, pieces)
    }

    /// Every example and fixture means the same read whole or in pieces: the same
    /// configuration, or the same problems at the same places.
    #[test]
    fn reading_in_pieces_gives_what_the_whole_tree_gives() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut split = 0;
        for dir in ["config", "tests/fixtures/config"] {
            for entry in std::fs::read_dir(root.join(dir)).unwrap() {
                let path = entry.unwrap().path();
                if path.extension().is_none_or(|e| e != "toml") {
                    continue;
                }
                let text = std::fs::read_to_string(&path).unwrap();
                let (whole, pieces) = both(&text);
                if let Some(pieces) = pieces {
                    assert_eq!(pieces, whole, "{}", path.display());
                    split += 1;
                }
            }
        }
        assert!(split >= 10, "only {split} files were read in pieces");
    }

    #[test]
    fn a_file_the_pieces_cannot_mean_alone_falls_back_to_the_whole_tree() {
        // An inline array beside array-of-tables elements: a duplicate the whole
        // parser reports.
        let text = "points = []\n[site]\nid = \"S\"\nname = \"n\"\nkind = \"coal_mine\"\n\
                    rule_profile = \"p\"\n[[points]]\nid = \"a\"\n";
        let env = Overrides::collect(EnvSource::Given(Vec::new()));
        let split = split::split(text).unwrap();
        assert!(load_tree(text, Some(&split), &env, Path::new("t.toml")).is_err());
        let error = load_text(text, "t.toml".into(), EnvSource::Given(Vec::new())).unwrap_err();
        assert!(error.to_string().contains("duplicate key"), "{error}");
    }
}
