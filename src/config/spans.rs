//! Finding a key path in the file text, so that a diagnostic can say line and column.
//!
//! The text is parsed a second time with `toml_edit`, which keeps byte spans. A path is
//! followed as far as the file has it: a missing key resolves to its enclosing table.

use super::error::{KeyPath, Location, Segment};
use std::ops::Range;
use toml_edit::{Item, Table, Value};

/// The parsed file with spans.
pub(crate) struct SpanIndex {
    text: String,
    document: toml_edit::Document<String>,
}

enum Node<'a> {
    Item(&'a Item),
    Value(&'a Value),
    Table(&'a Table),
}

impl SpanIndex {
    /// Parses `text`; a syntax error comes back with its place.
    pub(crate) fn parse(text: &str) -> Result<SpanIndex, (String, Option<Location>)> {
        match toml_edit::Document::parse(text.to_owned()) {
            Ok(document) => Ok(SpanIndex {
                text: text.to_owned(),
                document,
            }),
            Err(error) => {
                let location = error
                    .span()
                    .map(|span| Location::from_offset(text, span.start));
                Err((error.message().trim().to_owned(), location))
            }
        }
    }

    /// Whether the file itself holds a value at exactly `path`.
    #[cfg(test)]
    pub(crate) fn contains(&self, path: &KeyPath) -> bool {
        let (found, _) = self.walk(path);
        found == path.0.len()
    }

    /// Line and column of the key at `path`, or of the deepest enclosing part the file
    /// has (the `[[points]]` header of a point that lacks a key, for instance).
    pub(crate) fn locate(&self, path: &KeyPath) -> Option<Location> {
        let (_, span) = self.walk(path);
        span.map(|span| Location::from_offset(&self.text, span.start))
    }

    /// Follows `path`; returns how many segments were found and the best span.
    fn walk(&self, path: &KeyPath) -> (usize, Option<Range<usize>>) {
        let mut node = Node::Table(self.document.as_table());
        let mut best: Option<Range<usize>> = None;
        for (depth, segment) in path.0.iter().enumerate() {
            let next = match segment {
                Segment::Key(key) => key_child(&node, key),
                Segment::Index(index) => index_child(&node, *index),
            };
            match next {
                Some((child, span)) => {
                    if span.is_some() {
                        best = span;
                    }
                    node = child;
                }
                None => return (depth, best),
            }
        }
        (path.0.len(), best)
    }
}

/// The child under `key` and the span that best names it: the key itself, or the
/// header of a `[table]`.
fn key_child<'a>(node: &Node<'a>, key: &str) -> Option<(Node<'a>, Option<Range<usize>>)> {
    match node {
        Node::Table(table) => {
            let (k, item) = table.get_key_value(key)?;
            let span = match item {
                Item::Table(t) if !t.is_dotted() => t.span().or_else(|| k.span()),
                _ => k.span().or_else(|| item.span()),
            };
            Some((Node::Item(item), span))
        }
        Node::Item(item) => match item {
            Item::Table(table) => key_child(&Node::Table(table), key),
            Item::Value(value) => key_child(&Node::Value(value), key),
            _ => None,
        },
        Node::Value(Value::InlineTable(table)) => {
            let (k, value) = table.get_key_value(key)?;
            Some((Node::Item(value), k.span().or_else(|| value.span())))
        }
        Node::Value(_) => None,
    }
}

fn index_child<'a>(node: &Node<'a>, index: usize) -> Option<(Node<'a>, Option<Range<usize>>)> {
    match node {
        Node::Item(Item::ArrayOfTables(array)) => {
            let table = array.get(index)?;
            Some((Node::Table(table), table.span()))
        }
        Node::Item(Item::Value(value)) => index_child(&Node::Value(value), index),
        Node::Value(Value::Array(array)) => {
            let value = array.get(index)?;
            Some((Node::Value(value), value.span()))
        }
        _ => None,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn path(segments: &[Segment]) -> KeyPath {
        KeyPath(segments.to_vec())
    }

    #[test]
    fn finds_keys_inside_arrays_of_tables() {
        let text = "[site]\nid = \"x\"\n\n[[points]]\nid = \"a\"\n\n[[points]]\nid = \"b\"\n[[points.thresholds]]\nname = \"t\"\nrestore = 2\n";
        let index = SpanIndex::parse(text).unwrap();
        let restore = path(&[
            Segment::Key("points".into()),
            Segment::Index(1),
            Segment::Key("thresholds".into()),
            Segment::Index(0),
            Segment::Key("restore".into()),
        ]);
        assert_eq!(
            index.locate(&restore),
            Some(Location {
                line: 11,
                column: 1
            })
        );
        let header = path(&[Segment::Key("points".into()), Segment::Index(1)]);
        assert_eq!(index.locate(&header), Some(Location { line: 7, column: 1 }));
        let missing = header.key("name");
        assert_eq!(
            index.locate(&missing),
            Some(Location { line: 7, column: 1 })
        );
        assert!(!index.contains(&missing));
    }

    #[test]
    fn syntax_errors_have_a_place() {
        let (_, location) = SpanIndex::parse("[site]\nid = \n").err().unwrap();
        assert_eq!(location.map(|l| l.line), Some(2));
    }
}
