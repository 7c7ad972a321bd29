//! Cutting a configuration file into the elements of its large arrays of tables.
//!
//! A site of 10,000 points is a file of 10,000 `[[points]]` tables. Parsed whole, its
//! tree of small allocations peaks at several times the file's size and leaves the
//! heap fragmented for the rest of the run. Cut at its table headers, each element is
//! parsed, checked and turned into its typed form on its own, and only one element's
//! tree exists at a time.
//!
//! The cut is found with the TOML lexer, so strings, multi-line strings, comments and
//! multi-line arrays cannot be mistaken for headers. It is only an optimisation: the
//! loader falls back to parsing the whole file when a piece does not parse alone or
//! the rest of the file also names one of the arrays (an inline `points = [...]`), so
//! a file means the same either way.

use toml_parser::lexer::TokenKind;

/// The arrays of tables that a large site repeats, and which are cut out one
/// element at a time.
pub(crate) const ELEMENT_ARRAYS: [&str; 5] =
    ["hazard_sources", "devices", "points", "actions", "linkage"];

/// A file cut at its headers.
#[derive(Debug, Default)]
pub(crate) struct Split<'t> {
    /// Everything that is not an element of [`ELEMENT_ARRAYS`], in file order.
    pub rest: String,
    /// Per array of [`ELEMENT_ARRAYS`] (same order), the text of each element: its
    /// `[[name]]` header, its keys, and the sub-tables (`[[name.sub]]`, `[name.sub]`)
    /// that belong to it.
    pub elements: [Vec<&'t str>; 5],
}

/// One table header found in the text.
struct Header<'t> {
    start: usize,
    /// `[[…]]` rather than `[…]`.
    array: bool,
    /// The first key of the header, when it is a bare key.
    first: Option<&'t str>,
    /// More than one key (`[[points.thresholds]]`).
    dotted: bool,
}

/// Cuts `text`; `None` when it has no element headers worth cutting.
pub(crate) fn split(text: &str) -> Option<Split<'_>> {
    let headers = headers(text);
    let mut out = Split::default();
    // The array whose element is open, and where that element started.
    let mut open: Option<(usize, usize)> = None;
    let mut rest_from = 0;
    for header in &headers {
        let array = header.first.and_then(array_index);
        let starts_element = header.array && !header.dotted && array.is_some();
        let continues = matches!((open, array), (Some((a, _)), Some(b)) if a == b) && header.dotted;
        if continues {
            continue;
        }
        // This header ends whatever was open.
        match open.take() {
            Some((a, from)) => out.elements[a].push(&text[from..header.start]),
            None => out.rest.push_str(&text[rest_from..header.start]),
        }
        if starts_element {
            open = array.map(|a| (a, header.start));
        } else {
            rest_from = header.start;
        }
    }
    match open {
        Some((a, from)) => out.elements[a].push(&text[from..]),
        None => out.rest.push_str(&text[rest_from..]),
    }
    // Nothing to cut: the whole file is read as one.
    out.elements.iter().any(|e| !e.is_empty()).then_some(out)
}

/// The position of `key` in [`ELEMENT_ARRAYS`].
pub(crate) fn array_index(key: &str) -> Option<usize> {
    ELEMENT_ARRAYS.iter().position(|a| *a == key)
}

/// The table headers of `text`, in order. A header is a `[` at the start of a line
/// (after whitespace) that is not inside a value.
fn headers(text: &str) -> Vec<Header<'_>> {
    let source = toml_parser::Source::new(text);
    let mut tokens = source.lex().peekable();
    let mut out = Vec::new();
    // Brackets and braces open inside the current value.
    let mut depth = 0usize;
    let mut line_start = true;
    while let Some(token) = tokens.next() {
        let kind = token.kind();
        let span = token.span();
        if depth > 0 {
            match kind {
                TokenKind::LeftSquareBracket | TokenKind::LeftCurlyBracket => depth += 1,
                TokenKind::RightSquareBracket | TokenKind::RightCurlyBracket => depth -= 1,
                _ => {}
            }
            continue;
        }
        match kind {
            TokenKind::Newline => line_start = true,
            TokenKind::Whitespace | TokenKind::Comment => {}
            TokenKind::LeftSquareBracket if line_start => {
                let array = tokens
                    .next_if(|t| t.kind() == TokenKind::LeftSquareBracket)
                    .is_some();
                let mut first = None;
                let mut keys = 0;
                // The keys, up to the closing bracket (or the end of the line, when
                // the header is broken: the parser then reports it).
                while let Some(t) = tokens.next_if(|t| {
                    !matches!(t.kind(), TokenKind::Newline | TokenKind::RightSquareBracket)
                }) {
                    match t.kind() {
                        TokenKind::Atom | TokenKind::BasicString | TokenKind::LiteralString => {
                            keys += 1;
                            if keys == 1 && t.kind() == TokenKind::Atom {
                                first = text.get(t.span().start()..t.span().end());
                            }
                        }
                        _ => {}
                    }
                }
                out.push(Header {
                    start: span.start(),
                    array,
                    first,
                    dotted: keys > 1,
                });
                line_start = false;
            }
            TokenKind::LeftSquareBracket | TokenKind::LeftCurlyBracket => {
                depth += 1;
                line_start = false;
            }
            _ => line_start = false,
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elements_are_cut_with_their_sub_tables() {
        let text = "\
# head
[site]
id = \"S\"

[[points]]
id = \"a\"
  [[points.thresholds]]
  trigger = 1
[[devices]]
id = \"d\"
[storage]
path = \"x\"
[[points]]
id = \"b\"
[points.modbus]
address = 1
";
        let split = split(text).unwrap();
        assert_eq!(
            split.rest,
            "# head\n[site]\nid = \"S\"\n\n[storage]\npath = \"x\"\n"
        );
        assert_eq!(
            split.elements[2],
            vec![
                "[[points]]\nid = \"a\"\n  [[points.thresholds]]\n  trigger = 1\n",
                "[[points]]\nid = \"b\"\n[points.modbus]\naddress = 1\n"
            ]
        );
        assert_eq!(split.elements[1], vec!["[[devices]]\nid = \"d\"\n"]);
    }

    #[test]
    fn brackets_inside_values_strings_and_comments_are_not_headers() {
        let text = "\
[[points]]
id = \"a\"
keyframes = [
[0, 1],
[2, 3],
]
note = '''
[[points]]
'''
text = \"[[devices]]\"
# [[devices]]
inline = { a = [1, 2] }
";
        let split = split(text).unwrap();
        assert_eq!(split.elements[2], vec![text]);
        assert!(split.elements[1].is_empty());
        assert_eq!(split.rest, "");
    }

    #[test]
    fn files_without_element_headers_are_not_cut() {
        assert!(split("[site]\nid = \"S\"\npoints = [{ id = \"a\" }]\n").is_none());
    }
}
