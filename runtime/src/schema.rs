//! The Arrow schema of a source, derived from the column types the project declares. One mapping
//! for the whole runtime, so that every file format loads into the same types.

use std::sync::Arc;

use cdp_compiler::ir;
use cdp_compiler::types::Type;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

use crate::error::{Error, Result};

/// The Arrow type that holds values of `ty`.
///
/// Timestamps carry no time zone and keep microseconds. Durations are whole milliseconds in an
/// `Int64`: the representation the SQL back end gives duration values on every dialect (it
/// compares `time_on_page > 10m` as `time_on_page > 600000`). Lists are Arrow lists.
pub fn arrow_type(ty: &Type) -> Result<DataType> {
    Ok(match ty {
        Type::String => DataType::Utf8,
        Type::Int => DataType::Int64,
        Type::Float => DataType::Float64,
        Type::Decimal { precision, scale } => {
            let p = u8::try_from(*precision)
                .ok()
                .filter(|p| (1..=38).contains(p));
            let s = i8::try_from(*scale).ok().filter(|s| *s >= 0);
            match (p, s) {
                (Some(p), Some(s)) if s as u8 <= p => DataType::Decimal128(p, s),
                _ => {
                    return Err(Error::Internal(format!(
                        "decimal({precision}, {scale}) passed the checker but has no Arrow type"
                    )))
                }
            }
        }
        Type::Bool => DataType::Boolean,
        Type::Date => DataType::Date32,
        Type::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, None),
        Type::Duration => DataType::Int64,
        Type::List(inner) => {
            DataType::List(Arc::new(Field::new_list_field(arrow_type(inner)?, true)))
        }
        Type::Null | Type::Error => {
            return Err(Error::Internal(format!(
                "a source column of type {ty} reached the runtime"
            )))
        }
    })
}

/// The schema of a source's table: its columns in declared order, nullable as declared.
pub fn source_schema(source: &ir::Source) -> Result<SchemaRef> {
    let fields = source
        .columns
        .iter()
        .map(|c| Ok(Field::new(&c.name, arrow_type(&c.ty)?, c.nullable)))
        .collect::<Result<Vec<_>>>()?;
    Ok(Arc::new(Schema::new(fields)))
}
