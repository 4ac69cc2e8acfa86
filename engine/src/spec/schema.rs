//! `[source.schema]`: column names and types declared in the pipeline file,
//! in file order, turned into an Arrow schema.

use std::fmt;
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use toml::Spanned;

use super::diag::{Diagnostics, SpecFile};

/// The type names a schema may use.
pub const TYPE_NAMES: &str = "int32, int64, float64, bool, string, date, timestamp, decimal(p,s)";

/// Columns declared in a `schema` table, in the order they are written.
#[derive(Debug, Clone, Default)]
pub struct SchemaSpec(pub Vec<(String, Spanned<String>)>);

impl<'de> Deserialize<'de> for SchemaSpec {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Columns;
        impl<'de> Visitor<'de> for Columns {
            type Value = SchemaSpec;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "a table of column = \"type\"")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<SchemaSpec, A::Error> {
                let mut columns = Vec::new();
                while let Some((name, ty)) = map.next_entry::<String, Spanned<String>>()? {
                    columns.push((name, ty));
                }
                Ok(SchemaSpec(columns))
            }
        }
        deserializer.deserialize_map(Columns)
    }
}

impl SchemaSpec {
    /// The Arrow schema, or a problem for every type that is not known.
    /// Every column is nullable: an empty field reads as NULL.
    pub fn to_arrow(&self, file: &SpecFile, key_path: &str) -> Result<SchemaRef, Diagnostics> {
        let mut problems = Diagnostics::default();
        let mut fields = Vec::with_capacity(self.0.len());
        for (name, ty) in &self.0 {
            match parse_type(ty.get_ref()) {
                Ok(data_type) => fields.push(Field::new(name, data_type, true)),
                Err(message) => problems.0.push(file.diagnostic(
                    ty.span(),
                    format!("{key_path}.{name}"),
                    message,
                    Some(format!("types: {TYPE_NAMES}")),
                )),
            }
        }
        if problems.is_empty() { Ok(Arc::new(Schema::new(fields))) } else { Err(problems) }
    }
}

/// The Arrow type of a type name of the pipeline file.
pub fn parse_type(name: &str) -> Result<DataType, String> {
    let normalized = name.trim().to_ascii_lowercase().replace(' ', "");
    let data_type = match normalized.as_str() {
        "int32" => DataType::Int32,
        "int64" => DataType::Int64,
        "float64" => DataType::Float64,
        "bool" => DataType::Boolean,
        "string" => DataType::Utf8,
        "date" => DataType::Date32,
        "timestamp" => DataType::Timestamp(TimeUnit::Microsecond, None),
        other => return parse_decimal(other).ok_or_else(|| format!("unknown type \"{name}\"")),
    };
    Ok(data_type)
}

fn parse_decimal(text: &str) -> Option<DataType> {
    let inner = text.strip_prefix("decimal(")?.strip_suffix(')')?;
    let (precision, scale) = inner.split_once(',')?;
    let precision: u8 = precision.parse().ok()?;
    let scale: i8 = scale.parse().ok()?;
    let fits = (1..=38).contains(&precision) && scale >= 0 && scale as u8 <= precision;
    fits.then_some(DataType::Decimal128(precision, scale))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_documented_type() {
        assert_eq!(parse_type("int32"), Ok(DataType::Int32));
        assert_eq!(parse_type("int64"), Ok(DataType::Int64));
        assert_eq!(parse_type("float64"), Ok(DataType::Float64));
        assert_eq!(parse_type("bool"), Ok(DataType::Boolean));
        assert_eq!(parse_type("string"), Ok(DataType::Utf8));
        assert_eq!(parse_type("date"), Ok(DataType::Date32));
        assert!(matches!(parse_type("timestamp"), Ok(DataType::Timestamp(..))));
        assert_eq!(parse_type("decimal(10, 2)"), Ok(DataType::Decimal128(10, 2)));
        assert!(parse_type("decimal(40,2)").is_err());
        assert!(parse_type("decimal(4,5)").is_err());
        assert!(parse_type("varchar").is_err());
    }
}
