//! The schema that holds every input of a merge, and batches rewritten into it.
//!
//! Inputs of one directory differ where the writer widened the schema between
//! them: fields added (at the top or inside a struct), a column first seen as
//! NULL that later got a type, an integer column that met a float. The union
//! matches fields by name; a field some input lacks reads as NULL there, as it
//! does for ClickHouse.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{new_null_array, Array, ArrayRef, AsArray, ListArray, RecordBatch, StructArray};
use arrow::datatypes::{DataType, Field, FieldRef, Fields, Schema, SchemaRef};

use crate::encode::EXACT_INT;

#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error("field {path}: {left} in one input, {right} in another")]
    Conflict {
        path: String,
        left: String,
        right: String,
    },
    #[error("field {0} is missing from an input but not nullable")]
    NotNullable(String),
    #[error("rewriting field {path}: {msg}")]
    Rewrite { path: String, msg: String },
}

/// The schema that can hold rows of both `a` and `b` (see the module docs).
pub fn union(a: &Schema, b: &Schema) -> Result<Schema, SchemaError> {
    let fields = union_fields(a.fields(), b.fields(), "")?;
    Ok(Schema::new_with_metadata(fields, a.metadata().clone()))
}

/// [`union`] of any number of schemas.
pub fn union_all<'a>(schemas: impl IntoIterator<Item = &'a Schema>) -> Result<Schema, SchemaError> {
    let mut it = schemas.into_iter();
    let Some(first) = it.next() else {
        return Ok(Schema::empty());
    };
    it.try_fold(first.clone(), |acc, s| union(&acc, s))
}

fn union_fields(a: &Fields, b: &Fields, parent: &str) -> Result<Fields, SchemaError> {
    let mut out: Vec<FieldRef> = Vec::with_capacity(a.len().max(b.len()));
    for fa in a.iter() {
        match b.find(fa.name()) {
            Some((_, fb)) => out.push(Arc::new(union_field(fa, fb, parent)?)),
            None => out.push(Arc::new(fa.as_ref().clone().with_nullable(true))),
        }
    }
    for fb in b.iter() {
        if a.find(fb.name()).is_none() {
            out.push(Arc::new(fb.as_ref().clone().with_nullable(true)));
        }
    }
    Ok(out.into())
}

fn union_field(a: &Field, b: &Field, parent: &str) -> Result<Field, SchemaError> {
    let path = if parent.is_empty() {
        a.name().clone()
    } else {
        format!("{parent}.{}", a.name())
    };
    let exact = a.metadata().contains_key(EXACT_INT) || b.metadata().contains_key(EXACT_INT);
    let conflict = || SchemaError::Conflict {
        path: path.clone(),
        left: a.data_type().to_string(),
        right: b.data_type().to_string(),
    };
    use DataType::*;
    let t = match (a.data_type(), b.data_type()) {
        (x, y) if x == y => x.clone(),
        (Null, y) => y.clone(),
        (x, Null) => x.clone(),
        // The writer's widening; never for a column that has held an integer a
        // double cannot hold (the writer refuses that widening too).
        (Int64, Float64) | (Float64, Int64) if !exact => Float64,
        (Struct(x), Struct(y)) => Struct(union_fields(x, y, &path)?),
        (List(x), List(y)) => List(Arc::new(union_field(x, y, &path)?)),
        (LargeList(x), LargeList(y)) => LargeList(Arc::new(union_field(x, y, &path)?)),
        _ => return Err(conflict()),
    };
    let mut meta = a.metadata().clone();
    meta.extend(b.metadata().iter().map(|(k, v)| (k.clone(), v.clone())));
    Ok(Field::new(a.name(), t, a.is_nullable() || b.is_nullable()).with_metadata(meta))
}

/// `batch` rewritten into `target`, a union that includes its schema.
pub fn conform(batch: &RecordBatch, target: &SchemaRef) -> Result<RecordBatch, SchemaError> {
    if batch.schema().fields() == target.fields() {
        return RecordBatch::try_new(target.clone(), batch.columns().to_vec()).map_err(|e| {
            SchemaError::Rewrite {
                path: String::new(),
                msg: e.to_string(),
            }
        });
    }
    let by_name: HashMap<&str, &ArrayRef> = batch
        .schema_ref()
        .fields()
        .iter()
        .map(|f| f.name().as_str())
        .zip(batch.columns())
        .collect();
    let n = batch.num_rows();
    let columns = target
        .fields()
        .iter()
        .map(|f| match by_name.get(f.name().as_str()) {
            Some(a) => conform_array(a, f, f.name()),
            None if f.is_nullable() => Ok(new_null_array(f.data_type(), n)),
            None => Err(SchemaError::NotNullable(f.name().clone())),
        })
        .collect::<Result<Vec<_>, _>>()?;
    RecordBatch::try_new(target.clone(), columns).map_err(|e| SchemaError::Rewrite {
        path: String::new(),
        msg: e.to_string(),
    })
}

fn conform_array(a: &ArrayRef, target: &Field, path: &str) -> Result<ArrayRef, SchemaError> {
    let rewrite = |msg: String| SchemaError::Rewrite {
        path: path.to_string(),
        msg,
    };
    if a.data_type() == target.data_type() {
        return Ok(a.clone());
    }
    match (a.data_type(), target.data_type()) {
        (DataType::Null, t) => Ok(new_null_array(t, a.len())),
        (DataType::Struct(_), DataType::Struct(kids)) => {
            let s = a.as_struct();
            let columns = kids
                .iter()
                .map(|k| {
                    let sub = format!("{path}.{}", k.name());
                    match s.column_by_name(k.name()) {
                        Some(c) => conform_array(c, k, &sub),
                        None if k.is_nullable() => Ok(new_null_array(k.data_type(), s.len())),
                        None => Err(SchemaError::NotNullable(sub)),
                    }
                })
                .collect::<Result<Vec<_>, _>>()?;
            let out = StructArray::try_new(kids.clone(), columns, s.nulls().cloned())
                .map_err(|e| rewrite(e.to_string()))?;
            Ok(Arc::new(out))
        }
        (DataType::List(_), DataType::List(item)) => {
            let l = a.as_list::<i32>();
            let values = conform_array(l.values(), item, path)?;
            let out = ListArray::try_new(
                item.clone(),
                l.offsets().clone(),
                values,
                l.nulls().cloned(),
            )
            .map_err(|e| rewrite(e.to_string()))?;
            Ok(Arc::new(out))
        }
        (_, t) => arrow::compute::cast(a, t).map_err(|e| rewrite(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Float64Array, Int64Array, StringArray};
    use arrow::compute::concat_batches;

    fn schema(fields: Vec<Field>) -> Schema {
        Schema::new(fields)
    }

    fn params(extra: bool) -> DataType {
        let mut f = vec![Field::new("user_id", DataType::Utf8, true)];
        if extra {
            f.push(Field::new("uuid_track", DataType::Utf8, true));
        }
        DataType::Struct(f.into())
    }

    #[test]
    fn fields_added_at_the_top_and_inside_a_struct_read_as_null_in_older_rows() {
        let old = Arc::new(schema(vec![
            Field::new("_offset", DataType::Int64, false),
            Field::new("event_params", params(false), true),
        ]));
        let new = schema(vec![
            Field::new("_offset", DataType::Int64, false),
            Field::new("event_params", params(true), true),
            Field::new("price", DataType::Float64, true),
        ]);
        let u = Arc::new(union(&old, &new).unwrap());
        assert_eq!(
            u.field_with_name("event_params").unwrap().data_type(),
            &params(true)
        );
        assert!(u.field_with_name("price").unwrap().is_nullable());
        assert!(!u.field_with_name("_offset").unwrap().is_nullable());

        let users: ArrayRef = Arc::new(StringArray::from(vec!["u1", "u2"]));
        let st = StructArray::from(vec![(
            Arc::new(Field::new("user_id", DataType::Utf8, true)),
            users,
        )]);
        let b = RecordBatch::try_new(
            old.clone(),
            vec![Arc::new(Int64Array::from(vec![1, 2])), Arc::new(st)],
        )
        .unwrap();
        let c = conform(&b, &u).unwrap();
        assert_eq!(c.schema(), u);
        let p = c.column_by_name("event_params").unwrap().as_struct();
        assert_eq!(
            p.column_by_name("user_id")
                .unwrap()
                .as_string::<i32>()
                .value(1),
            "u2"
        );
        assert_eq!(p.column_by_name("uuid_track").unwrap().null_count(), 2);
        assert_eq!(c.column_by_name("price").unwrap().null_count(), 2);
    }

    #[test]
    fn an_integer_column_that_met_a_float_widens_and_keeps_its_values() {
        let a = Arc::new(schema(vec![Field::new("n", DataType::Int64, true)]));
        let b = Arc::new(schema(vec![Field::new("n", DataType::Float64, true)]));
        let u = Arc::new(union(&a, &b).unwrap());
        let ba = RecordBatch::try_new(a, vec![Arc::new(Int64Array::from(vec![3, -7]))]).unwrap();
        let bb = RecordBatch::try_new(b, vec![Arc::new(Float64Array::from(vec![12.5]))]).unwrap();
        let all =
            concat_batches(&u, &[conform(&ba, &u).unwrap(), conform(&bb, &u).unwrap()]).unwrap();
        let n = all
            .column(0)
            .as_primitive::<arrow::datatypes::Float64Type>();
        assert_eq!(n.values().to_vec(), vec![3.0, -7.0, 12.5]);
    }

    #[test]
    fn an_exact_integer_column_never_widens_and_other_conflicts_name_the_path() {
        let mut m = HashMap::new();
        m.insert(EXACT_INT.to_string(), "true".to_string());
        let a = schema(vec![
            Field::new("id", DataType::Int64, true).with_metadata(m)
        ]);
        let b = schema(vec![Field::new("id", DataType::Float64, true)]);
        let e = union(&a, &b).unwrap_err().to_string();
        assert!(e.contains("id"), "{e}");
        let a = schema(vec![Field::new("p", params(false), true)]);
        let b = schema(vec![Field::new(
            "p",
            DataType::Struct(vec![Field::new("user_id", DataType::Int64, true)].into()),
            true,
        )]);
        let e = union(&a, &b).unwrap_err().to_string();
        assert!(e.contains("p.user_id"), "{e}");
    }

    #[test]
    fn a_null_column_takes_the_type_and_metadata_is_kept() {
        let mut m = HashMap::new();
        m.insert(EXACT_INT.to_string(), "true".to_string());
        let a = schema(vec![Field::new("x", DataType::Null, true)]);
        let b = schema(vec![Field::new("x", DataType::Int64, true).with_metadata(m)]);
        let u = union(&a, &b).unwrap();
        assert_eq!(u.field(0).data_type(), &DataType::Int64);
        assert!(u.field(0).metadata().contains_key(EXACT_INT));
    }

    #[test]
    fn a_list_of_structs_gains_a_field() {
        let item = |extra| Arc::new(Field::new("item", params(extra), true));
        let a = schema(vec![Field::new("l", DataType::List(item(false)), true)]);
        let b = schema(vec![Field::new("l", DataType::List(item(true)), true)]);
        let u = Arc::new(union(&a, &b).unwrap());
        assert_eq!(u.field(0).data_type(), &DataType::List(item(true)));
        let users: ArrayRef = Arc::new(StringArray::from(vec!["a", "b", "c"]));
        let st = StructArray::from(vec![(
            Arc::new(Field::new("user_id", DataType::Utf8, true)),
            users,
        )]);
        let list = ListArray::try_new(
            item(false),
            arrow::buffer::OffsetBuffer::new(vec![0, 1, 3].into()),
            Arc::new(st),
            None,
        )
        .unwrap();
        let b = RecordBatch::try_new(Arc::new(a), vec![Arc::new(list)]).unwrap();
        let c = conform(&b, &u).unwrap();
        let l = c.column(0).as_list::<i32>();
        assert_eq!(l.value_length(1), 2);
        assert_eq!(l.values().as_struct().column(1).null_count(), 3);
    }

    #[test]
    fn a_batch_already_in_the_target_schema_is_unchanged() {
        let s = Arc::new(schema(vec![Field::new("n", DataType::Int64, false)]));
        let b = RecordBatch::try_new(s.clone(), vec![Arc::new(Int64Array::from(vec![1]))]).unwrap();
        assert_eq!(conform(&b, &s).unwrap(), b);
    }
}
