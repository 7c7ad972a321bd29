//! The unknown-key walk. It runs before typed deserialisation so that a typo and a
//! wrong value in the same table are both reported (serde would stop at whichever it
//! met first). The key lists come from the structures themselves, so they cannot drift.

use super::error::{Diagnostic, KeyPath, Problem};
use super::*;
use serde::de::{self, Deserializer, Visitor};
use toml::de::{DeTable, DeValue};

/// The keys a struct accepts, read from its `Deserialize` impl.
fn fields<T: for<'de> Deserialize<'de>>() -> &'static [&'static str] {
    let mut found: &'static [&'static str] = &[];
    let _ = T::deserialize(Introspect(&mut found));
    found
}

struct Introspect<'a>(&'a mut &'static [&'static str]);

impl<'de> Deserializer<'de> for Introspect<'_> {
    type Error = de::value::Error;

    fn deserialize_any<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, Self::Error> {
        Err(de::Error::custom("introspection only"))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, Self::Error> {
        *self.0 = fields;
        Err(de::Error::custom("introspection only"))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map enum identifier ignored_any
    }
}

/// The shape of the configuration tree, as far as keys are concerned.
pub(crate) enum Shape {
    /// A table with these keys; some keys hold nested shapes.
    Table(&'static [&'static str], Vec<(&'static str, Shape)>),
    /// An array whose elements all have this shape.
    Array(Box<Shape>),
}

fn table<T: for<'de> Deserialize<'de>>(children: Vec<(&'static str, Shape)>) -> Shape {
    Shape::Table(fields::<T>(), children)
}

fn array(element: Shape) -> Shape {
    Shape::Array(Box::new(element))
}

/// The whole configuration file.
pub(crate) fn config_shape() -> Shape {
    table::<Config>(vec![
        ("site", table::<SiteConfig>(vec![])),
        (
            "hazard_sources",
            array(table::<HazardSourceConfig>(vec![(
                "rules",
                array(table::<RiskRuleConfig>(vec![])),
            )])),
        ),
        (
            "devices",
            array(table::<DeviceConfig>(vec![(
                "blocks",
                array(table::<BlockConfig>(vec![])),
            )])),
        ),
        (
            "points",
            array(table::<PointConfig>(vec![
                ("modbus", table::<ModbusBinding>(vec![])),
                ("mqtt", table::<MqttBinding>(vec![])),
                ("thresholds", array(table::<ThresholdConfig>(vec![]))),
                ("rate", table::<RateConfig>(vec![])),
            ])),
        ),
        ("storage", table::<StorageConfig>(vec![])),
        (
            "sinks",
            table::<SinksConfig>(vec![("influxdb", table::<InfluxConfig>(vec![]))]),
        ),
        ("uplink", table::<UplinkConfig>(vec![])),
        (
            "api",
            table::<ApiConfig>(vec![("tokens", array(table::<TokenConfig>(vec![])))]),
        ),
        ("alarm_rate", table::<AlarmRateConfig>(vec![])),
        (
            "actions",
            array(table::<ActionConfig>(vec![(
                "relays",
                array(table::<RelayConfig>(vec![])),
            )])),
        ),
        ("linkage", array(table::<LinkageConfig>(vec![]))),
    ])
}

/// Reports and removes every key the shape does not know, so that typed
/// deserialisation afterwards only meets type problems.
pub(crate) fn strip_unknown(
    shape: &Shape,
    value: &mut DeValue<'_>,
    path: &KeyPath,
    out: &mut Vec<Diagnostic>,
) {
    match (shape, value) {
        (Shape::Table(..), DeValue::Table(table)) => strip_unknown_table(shape, table, path, out),
        (Shape::Array(element), DeValue::Array(items)) => {
            for (i, item) in items.iter_mut().enumerate() {
                strip_unknown(element, item.get_mut(), &path.index(i), out);
            }
        }
        // A value of the wrong type: typed deserialisation reports it.
        _ => {}
    }
}

/// The shape of each element of the array of tables `key` of a table shape.
pub(crate) fn element_shape<'s>(shape: &'s Shape, key: &str) -> Option<&'s Shape> {
    let Shape::Table(_, children) = shape else {
        return None;
    };
    match children.iter().find(|(name, _)| *name == key) {
        Some((_, Shape::Array(element))) => Some(element),
        _ => None,
    }
}

/// [`strip_unknown`] for a table (the whole file is one).
pub(crate) fn strip_unknown_table(
    shape: &Shape,
    table: &mut DeTable<'_>,
    path: &KeyPath,
    out: &mut Vec<Diagnostic>,
) {
    let Shape::Table(known, children) = shape else {
        return;
    };
    let unknown: Vec<String> = table
        .keys()
        .map(|key| key.get_ref().as_ref())
        .filter(|key| !known.contains(key))
        .map(str::to_owned)
        .collect();
    for key in unknown {
        table.remove(key.as_str());
        out.push(Diagnostic::new(
            Problem::UnknownKey,
            path.key(&key),
            unknown_key_message(&key, known),
        ));
    }
    for (key, child) in children {
        if let Some(inner) = table.get_mut(*key) {
            strip_unknown(child, inner.get_mut(), &path.key(key), out);
        }
    }
}

fn unknown_key_message(key: &str, known: &[&str]) -> String {
    let nearest = known
        .iter()
        .map(|candidate| (edit_distance(key, candidate), *candidate))
        .min();
    match nearest {
        Some((distance, candidate)) if distance <= 2.max(key.len() / 4) => {
            format!("unknown key `{key}`; did you mean `{candidate}`?")
        }
        _ => format!("unknown key `{key}`; expected one of: {}", known.join(", ")),
    }
}

/// Levenshtein distance, for "did you mean" hints on short keys.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != *cb);
            current.push(substitution.min(previous[j + 1] + 1).min(current[j] + 1));
        }
        previous = current;
    }
    previous[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn introspection_reads_struct_keys() {
        let keys = fields::<ThresholdConfig>();
        assert!(keys.contains(&"restore"));
        assert!(keys.contains(&"power_cut"));
        assert_eq!(
            fields::<RiskRuleConfig>(),
            &["min_points", "min_colour", "colour"]
        );
    }

    #[test]
    fn hints_near_keys() {
        assert_eq!(edit_distance("restor", "restore"), 1);
        assert!(unknown_key_message("restor", fields::<ThresholdConfig>()).contains("`restore`"));
    }
}
