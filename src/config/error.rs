//! Configuration problems, each with the key path it concerns and, where the key can be
//! found in the file, its line and column.
//!
//! Loading never stops at the first problem: every [`Diagnostic`] found is collected
//! into one [`ConfigError::Invalid`], so a plant engineer fixes the whole file in one go.

use std::fmt;
use std::path::PathBuf;

/// One segment of a key path: a table key or an array index.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Segment {
    /// A key inside a table, e.g. `thresholds`.
    Key(String),
    /// A position inside an array, e.g. the `3` of `points[3]`.
    Index(usize),
}

/// Where a value lives in the configuration tree, e.g. `points[3].thresholds[1].restore`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyPath(pub Vec<Segment>);

impl KeyPath {
    /// The empty path: the whole document.
    pub fn root() -> KeyPath {
        KeyPath(Vec::new())
    }

    /// This path followed by a key.
    pub fn key(&self, key: &str) -> KeyPath {
        let mut segments = self.0.clone();
        segments.push(Segment::Key(key.to_owned()));
        KeyPath(segments)
    }

    /// This path followed by an array index.
    pub fn index(&self, index: usize) -> KeyPath {
        let mut segments = self.0.clone();
        segments.push(Segment::Index(index));
        KeyPath(segments)
    }

    /// Whether `prefix` is this path or one of its ancestors.
    pub fn starts_with(&self, prefix: &KeyPath) -> bool {
        self.0.starts_with(&prefix.0)
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("(top level)");
        }
        for (i, segment) in self.0.iter().enumerate() {
            match segment {
                Segment::Key(key) if i == 0 => f.write_str(key)?,
                Segment::Key(key) => write!(f, ".{key}")?,
                Segment::Index(index) => write!(f, "[{index}]")?,
            }
        }
        Ok(())
    }
}

/// A 1-based line and column (in characters) inside the configuration file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Location {
    pub line: usize,
    pub column: usize,
}

impl Location {
    /// The line and column of byte `offset` inside `text`.
    pub fn from_offset(text: &str, offset: usize) -> Location {
        let offset = offset.min(text.len());
        let before = text.get(..offset).unwrap_or(text);
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        Location {
            line: before.matches('\n').count() + 1,
            column: before[line_start..].chars().count() + 1,
        }
    }
}

/// What kind of problem a diagnostic reports. Stable, so tests and tools can match on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Problem {
    /// The file is not valid TOML.
    Syntax,
    /// A key that no section knows (often a typo).
    UnknownKey,
    /// A required key is absent.
    Missing,
    /// A value of the wrong type or an unknown variant (`colour = "purple"`).
    Type,
    /// Two entries share an id or a name that must be unique.
    Duplicate,
    /// A reference to a device or hazard source that does not exist.
    Reference,
    /// Threshold grades out of order, or a colour that drops as severity rises.
    GradeOrder,
    /// A restore value on the wrong side of its trigger, or restore and deadband both given.
    Restore,
    /// A delay, deadband or missing restore on a power-cut grade.
    PowerCut,
    /// A poll interval too slow for a coal-mine safety point, or inconsistent intervals.
    PollInterval,
    /// A Modbus read block beyond the protocol limits (125 registers, 2000 bits).
    ModbusBlock,
    /// Two points bound to overlapping Modbus addresses with different types.
    AddressOverlap,
    /// A Modbus binding that cannot be read: table/type mismatch, `bit`, address range.
    ModbusBinding,
    /// A binding that does not fit the device's protocol, or a point with no binding.
    Binding,
    /// A sensor range or a threshold outside it.
    Range,
    /// A safety action that could not act: a read-only table, an address no point
    /// describes, a trigger with no cut grade, a relay driven by two actions.
    Action,
    /// Any other value that is out of its allowed set (URLs, addresses, counts…).
    Value,
}

/// One problem in the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// What kind of problem this is.
    pub problem: Problem,
    /// The key the problem concerns.
    pub path: KeyPath,
    /// Where the key (or its nearest enclosing table) is in the file, when found there.
    pub location: Option<Location>,
    /// The environment variable that set this value, when it came from one.
    pub env_var: Option<String>,
    /// What is wrong and, where possible, what is expected.
    pub message: String,
}

impl Diagnostic {
    /// A diagnostic without a location yet; the loader resolves locations at the end.
    pub fn new(problem: Problem, path: KeyPath, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            problem,
            path,
            location: None,
            env_var: None,
            message: message.into(),
        }
    }

    /// One line in the classic compiler form: `FILE:LINE:COL: path: message`, or
    /// `FILE: path: message` when the place is not known.
    pub fn render(&self, file: &str) -> String {
        let env = match &self.env_var {
            Some(var) => format!(" (value set by environment variable {var})"),
            None => String::new(),
        };
        let place = match self.location {
            Some(loc) => format!("{file}:{}:{}", loc.line, loc.column),
            None => file.to_owned(),
        };
        if self.path.0.is_empty() {
            format!("{place}: {}{env}", self.message)
        } else {
            format!("{place}: {}: {}{env}", self.path, self.message)
        }
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(loc) = self.location {
            write!(f, "{}:{}: ", loc.line, loc.column)?;
        }
        if !self.path.0.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)?;
        if let Some(var) = &self.env_var {
            write!(f, " (value set by environment variable {var})")?;
        }
        Ok(())
    }
}

/// Every problem found in one configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostics {
    /// The file as named by the caller.
    pub file: PathBuf,
    /// All problems, in file order (problems without a location last).
    pub items: Vec<Diagnostic>,
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let file = self.file.display().to_string();
        for item in &self.items {
            writeln!(f, "{}", item.render(&file))?;
        }
        write!(f, "{} error(s)", self.items.len())
    }
}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read at all.
    /// The message carries the cause itself; it is not also the error's `source`,
    /// or an error chain would print it twice.
    #[error("cannot read {}: {cause}", path.display())]
    Read {
        path: PathBuf,
        cause: std::io::Error,
    },
    /// The file was read but has problems; all of them are listed.
    #[error("{}", .0)]
    Invalid(Diagnostics),
}
