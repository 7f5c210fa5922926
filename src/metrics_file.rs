//! `--metrics-out FILE`: every epoch's report written as the run goes on, flushed after each
//! epoch, so that a run that is killed keeps the epochs it finished.
//!
//! Two formats, chosen by the file's extension:
//! - `.csv`: a header row with the keys of `--json`, in the same order, then one row per epoch
//!   (a missing value, such as `validation_accuracy` without `--validation`, is an empty field);
//! - anything else: JSON lines, one object per epoch, exactly the objects `--json` prints.
//!
//! [`read`] reads either back (what `gpu-mlp plot` draws).

use crate::train::EpochReport;
use serde_json::{Map, Value};
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use thiserror::Error;

/// A metrics file that could not be written or read, naming it.
#[derive(Debug, Error)]
pub enum MetricsFileError {
    #[error("cannot write the metrics file {}: {source}", path.display())]
    Write { path: PathBuf, source: std::io::Error },
    #[error("cannot read the metrics file {}: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{}, line {line}: {message}", path.display())]
    Parse {
        path: PathBuf,
        line: usize,
        message: String,
    },
}

/// How the epochs are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    JsonLines,
    Csv,
}

impl Format {
    /// CSV for a `.csv` file (any case), JSON lines for anything else.
    pub fn of(path: &Path) -> Format {
        match path.extension().and_then(|e| e.to_str()) {
            Some(ext) if ext.eq_ignore_ascii_case("csv") => Format::Csv,
            _ => Format::JsonLines,
        }
    }
}

/// An open metrics file.
pub struct MetricsFile {
    path: PathBuf,
    format: Format,
    file: File,
    /// CSV: the header is written with the first row (its keys are the report's).
    header_written: bool,
}

impl MetricsFile {
    /// Creates (or truncates) `path`: done before training, so a path that cannot be written
    /// fails the run before it spends any time.
    pub fn create(path: &Path) -> Result<MetricsFile, MetricsFileError> {
        let file = File::create(path).map_err(|source| MetricsFileError::Write {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(MetricsFile {
            path: path.to_path_buf(),
            format: Format::of(path),
            file,
            header_written: false,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one epoch and flushes it to the file.
    pub fn write(&mut self, report: &EpochReport) -> Result<(), MetricsFileError> {
        let text = match self.format {
            Format::JsonLines => format!("{}\n", serde_json::to_string(report).expect("a report serialises")),
            Format::Csv => {
                // Through the JSON text, so that each number is written as --json writes it
                // (an f32 learning rate of 0.3 stays "0.3", not "0.30000001192092896").
                let json = serde_json::to_string(report).expect("a report serialises");
                let Ok(Value::Object(fields)) = serde_json::from_str(&json) else {
                    unreachable!("a report serialises to an object")
                };
                let mut text = String::new();
                if !self.header_written {
                    text += &csv_row(fields.keys().map(|k| k.as_str()));
                }
                let cells: Vec<String> = fields.values().map(csv_cell).collect();
                text += &csv_row(cells.iter().map(|c| c.as_str()));
                text
            }
        };
        self.file
            .write_all(text.as_bytes())
            .and_then(|()| self.file.flush())
            .map_err(|source| MetricsFileError::Write {
                path: self.path.clone(),
                source,
            })?;
        self.header_written = true;
        Ok(())
    }
}

/// A value as a CSV field: null is empty, a string is quoted when it must be.
fn csv_cell(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// One CSV line (RFC 4180): a field with a comma, quote or line break is quoted, its quotes
/// doubled.
fn csv_row<'a>(fields: impl Iterator<Item = &'a str>) -> String {
    let quoted: Vec<String> = fields
        .map(|f| {
            if f.contains([',', '"', '\n', '\r']) {
                format!("\"{}\"", f.replace('"', "\"\""))
            } else {
                f.to_string()
            }
        })
        .collect();
    quoted.join(",") + "\n"
}

/// Splits one CSV line into its fields (the inverse of `csv_row`).
fn parse_csv_line(line: &str) -> Result<Vec<String>, String> {
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut chars = line.chars().peekable();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            (true, '"') => quoted = false,
            (false, '"') if field.is_empty() => quoted = true,
            (false, ',') => fields.push(std::mem::take(&mut field)),
            (_, c) => field.push(c),
        }
    }
    if quoted {
        return Err("a quoted field is not closed".into());
    }
    fields.push(field);
    Ok(fields)
}

/// A CSV field back as a JSON value: empty is null, a number is a number, else a string.
fn csv_value(field: &str) -> Value {
    if field.is_empty() {
        return Value::Null;
    }
    match serde_json::from_str::<serde_json::Number>(field) {
        Ok(n) => Value::Number(n),
        Err(_) => Value::String(field.to_string()),
    }
}

/// Reads a metrics file written by `--metrics-out` (or `--json` output saved to a file): one
/// JSON object per epoch, with the keys of `--json`. Blank lines are skipped.
pub fn read(path: &Path) -> Result<Vec<Map<String, Value>>, MetricsFileError> {
    let read_error = |source| MetricsFileError::Read {
        path: path.to_path_buf(),
        source,
    };
    let parse_error = |line: usize, message: String| MetricsFileError::Parse {
        path: path.to_path_buf(),
        line,
        message,
    };
    let file = File::open(path).map_err(read_error)?;
    let format = Format::of(path);
    let mut rows = Vec::new();
    let mut header: Option<Vec<String>> = None;
    for (index, line) in BufReader::new(file).lines().enumerate() {
        let line = line.map_err(read_error)?;
        let number = index + 1;
        if line.trim().is_empty() {
            continue;
        }
        match format {
            Format::JsonLines => match serde_json::from_str::<Value>(&line) {
                Ok(Value::Object(object)) => rows.push(object),
                Ok(_) => return Err(parse_error(number, "not a JSON object".into())),
                Err(e) => return Err(parse_error(number, format!("not JSON: {e}"))),
            },
            Format::Csv => {
                let fields = parse_csv_line(&line).map_err(|m| parse_error(number, m))?;
                let Some(keys) = &header else {
                    header = Some(fields);
                    continue;
                };
                if fields.len() != keys.len() {
                    let message = format!("{} fields, but the header has {}", fields.len(), keys.len());
                    return Err(parse_error(number, message));
                }
                rows.push(keys.iter().cloned().zip(fields.iter().map(|f| csv_value(f))).collect());
            }
        }
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_round_trip() {
        let fields = ["plain", "", "llvmpipe (LLVM 15.0.6, 256 bits)", "say \"hi\"", "0.25"];
        let line = csv_row(fields.iter().copied());
        assert_eq!(
            line,
            "plain,,\"llvmpipe (LLVM 15.0.6, 256 bits)\",\"say \"\"hi\"\"\",0.25\n"
        );
        assert_eq!(parse_csv_line(line.trim_end()).unwrap(), fields);
        assert!(parse_csv_line("\"open").is_err());
    }

    #[test]
    fn csv_values_come_back_typed() {
        assert_eq!(csv_value(""), Value::Null);
        assert_eq!(csv_value("3"), serde_json::json!(3));
        assert_eq!(csv_value("0.5"), serde_json::json!(0.5));
        assert_eq!(csv_value("gpu"), serde_json::json!("gpu"));
    }

    #[test]
    fn the_extension_picks_the_format() {
        assert_eq!(Format::of(Path::new("run.csv")), Format::Csv);
        assert_eq!(Format::of(Path::new("RUN.CSV")), Format::Csv);
        assert_eq!(Format::of(Path::new("run.jsonl")), Format::JsonLines);
        assert_eq!(Format::of(Path::new("run")), Format::JsonLines);
    }
}
