//! The schema that holds the rows of every input of a compaction, and the
//! rewrite of each input batch into it.
//!
//! Inputs differ because the writer widens a table's schema over time
//! ([`crate::encode`]): fields appear, Int64 becomes Float64, Null becomes a
//! type. [`union`] follows the same rules by field name, so every input fits.
//!
//! Files hold the writer's physical schema, not its logical one: a field seen
//! only as null is an all-null Utf8 column, and the [`EXACT_INT`] mark is not
//! stored. So [`conform`] does not trust the schemas alone: an all-null column
//! fits any target type, and an Int64 value a Float64 cannot hold exactly is
//! an error rather than a rounded number.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{
    new_null_array, Array, ArrayRef, AsArray, ListArray, RecordBatch, RecordBatchOptions,
    StructArray,
};
use arrow::compute::{cast_with_options, CastOptions};
use arrow::datatypes::{DataType, Field, FieldRef, Fields, Int64Type, Schema, SchemaRef};
use arrow::error::ArrowError;

use crate::encode::json::MAX_EXACT_INT;
use crate::encode::EXACT_INT;

#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error("field {path} is {left} in one input and {right} in another")]
    Conflict {
        path: String,
        left: DataType,
        right: DataType,
    },
    #[error("field {path} holds integers beyond 2^53 that Float64 cannot hold exactly")]
    Inexact { path: String },
    #[error("field {path} is not nullable but is missing from an input")]
    NotNullable { path: String },
    #[error("field {path} of an input is not in the target schema")]
    NotInTarget { path: String },
    #[error("rewriting field {path}: {source}")]
    Arrow {
        path: String,
        #[source]
        source: ArrowError,
    },
}

/// The schema that holds the rows of `a` and of `b`: `a`'s fields in order,
/// then those only `b` has. Schema metadata is `a`'s.
pub fn union(a: &Schema, b: &Schema) -> Result<Schema, SchemaError> {
    if a == b {
        return Ok(a.clone());
    }
    Ok(Schema::new_with_metadata(
        union_fields(a.fields(), b.fields(), "")?,
        a.metadata().clone(),
    ))
}

/// [`union`] of all `schemas`; the empty schema when there are none.
pub fn union_all<'a>(schemas: impl IntoIterator<Item = &'a Schema>) -> Result<Schema, SchemaError> {
    let mut it = schemas.into_iter();
    let Some(first) = it.next() else {
        return Ok(Schema::empty());
    };
    it.try_fold(first.clone(), |acc, s| union(&acc, s))
}

/// `batch` rewritten into `target` (a [`union`] that includes its schema).
/// A batch that already has it is returned as is.
pub fn conform(batch: &RecordBatch, target: &SchemaRef) -> Result<RecordBatch, SchemaError> {
    if batch.schema_ref() == target {
        return Ok(batch.clone());
    }
    let columns = conform_children(
        batch.schema().fields(),
        batch.columns(),
        target.fields(),
        batch.num_rows(),
        "",
    )?;
    let options = RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
    RecordBatch::try_new_with_options(target.clone(), columns, &options).map_err(arrow(""))
}

fn join(parent: &str, name: &str) -> String {
    if parent.is_empty() {
        name.to_string()
    } else {
        format!("{parent}.{name}")
    }
}

fn by_name(fields: &Fields) -> HashMap<&str, usize> {
    fields
        .iter()
        .enumerate()
        .map(|(i, f)| (f.name().as_str(), i))
        .collect()
}

fn nullable(f: &FieldRef) -> FieldRef {
    if f.is_nullable() {
        f.clone()
    } else {
        Arc::new(f.as_ref().clone().with_nullable(true))
    }
}

fn union_fields(a: &Fields, b: &Fields, parent: &str) -> Result<Fields, SchemaError> {
    if a == b {
        return Ok(a.clone());
    }
    let (in_a, in_b) = (by_name(a), by_name(b));
    let mut out = Vec::with_capacity(a.len() + b.len());
    for f in a.iter() {
        out.push(match in_b.get(f.name().as_str()) {
            Some(&j) => union_field(f, &b[j], &join(parent, f.name()))?,
            None => nullable(f),
        });
    }
    out.extend(
        b.iter()
            .filter(|g| !in_a.contains_key(g.name().as_str()))
            .map(nullable),
    );
    Ok(out.into())
}

fn union_field(a: &FieldRef, b: &FieldRef, path: &str) -> Result<FieldRef, SchemaError> {
    if a == b {
        return Ok(a.clone());
    }
    let exact = a.metadata().contains_key(EXACT_INT) || b.metadata().contains_key(EXACT_INT);
    let t = union_type(a.data_type(), b.data_type(), exact, path)?;
    let mut metadata = a.metadata().clone();
    metadata.extend(
        b.metadata()
            .iter()
            .filter(|(k, _)| !a.metadata().contains_key(k)),
    );
    let f = Field::new(a.name(), t, a.is_nullable() || b.is_nullable()).with_metadata(metadata);
    Ok(Arc::new(f))
}

fn union_type(
    a: &DataType,
    b: &DataType,
    exact: bool,
    path: &str,
) -> Result<DataType, SchemaError> {
    use DataType::*;
    Ok(match (a, b) {
        (x, y) if x == y => x.clone(),
        (Null, t) | (t, Null) => t.clone(),
        (Int64, Float64) | (Float64, Int64) if exact => {
            return Err(SchemaError::Inexact {
                path: path.to_string(),
            })
        }
        (Int64, Float64) | (Float64, Int64) => Float64,
        // The writer widens Int64 to UInt64 when an integer beyond i64::MAX
        // arrives, so one directory holds both; `conform` refuses a negative.
        (Int64, UInt64) | (UInt64, Int64) => UInt64,
        (Struct(x), Struct(y)) => Struct(union_fields(x, y, path)?),
        (List(x), List(y)) => List(union_field(x, y, &format!("{path}[]"))?),
        (x, y) => {
            return Err(SchemaError::Conflict {
                path: path.to_string(),
                left: x.clone(),
                right: y.clone(),
            })
        }
    })
}

fn arrow(path: &str) -> impl FnOnce(ArrowError) -> SchemaError + '_ {
    move |source| SchemaError::Arrow {
        path: path.to_string(),
        source,
    }
}

/// The columns of `target`, taken by name from `columns` (described by `fields`).
fn conform_children(
    fields: &Fields,
    columns: &[ArrayRef],
    target: &Fields,
    len: usize,
    parent: &str,
) -> Result<Vec<ArrayRef>, SchemaError> {
    let (have, want) = (by_name(fields), by_name(target));
    if let Some(f) = fields
        .iter()
        .find(|f| !want.contains_key(f.name().as_str()))
    {
        return Err(SchemaError::NotInTarget {
            path: join(parent, f.name()),
        });
    }
    target
        .iter()
        .map(|t| {
            let path = join(parent, t.name());
            match have.get(t.name().as_str()) {
                Some(&i) => conform_array(&columns[i], t, &path),
                None => nulls(t, len, &path),
            }
        })
        .collect()
}

fn nulls(t: &Field, len: usize, path: &str) -> Result<ArrayRef, SchemaError> {
    if !t.is_nullable() && len > 0 {
        return Err(SchemaError::NotNullable {
            path: path.to_string(),
        });
    }
    Ok(new_null_array(t.data_type(), len))
}

fn conform_array(a: &ArrayRef, t: &Field, path: &str) -> Result<ArrayRef, SchemaError> {
    use DataType::*;
    let to = t.data_type();
    if a.data_type() == to {
        return Ok(a.clone());
    }
    if a.logical_null_count() == a.len() {
        return nulls(t, a.len(), path);
    }
    let strict = CastOptions {
        safe: false,
        ..Default::default()
    };
    Ok(match (a.data_type(), to) {
        (Struct(_), Struct(fields)) => {
            let s = a.as_struct();
            let children = conform_children(s.fields(), s.columns(), fields, s.len(), path)?;
            let nulls = s.nulls().cloned();
            Arc::new(
                StructArray::try_new_with_length(fields.clone(), children, nulls, s.len())
                    .map_err(arrow(path))?,
            )
        }
        (List(_), List(item)) => {
            let l = a.as_list::<i32>();
            let values = conform_array(l.values(), item, &format!("{path}[]"))?;
            let nulls = l.nulls().cloned();
            Arc::new(
                ListArray::try_new(item.clone(), l.offsets().clone(), values, nulls)
                    .map_err(arrow(path))?,
            )
        }
        (Int64, Float64) => {
            let v = a.as_primitive::<Int64Type>();
            let lim = MAX_EXACT_INT as i64;
            let out = |x: Option<i64>| x.is_some_and(|x| !(-lim..=lim).contains(&x));
            if out(arrow::compute::min(v)) || out(arrow::compute::max(v)) {
                return Err(SchemaError::Inexact {
                    path: path.to_string(),
                });
            }
            cast_with_options(a, to, &strict).map_err(arrow(path))?
        }
        // A negative value fails the cast instead of becoming NULL.
        (Int64, UInt64) => cast_with_options(a, to, &strict).map_err(arrow(path))?,
        (from, _) => {
            return Err(SchemaError::Conflict {
                path: path.to_string(),
                left: from.clone(),
                right: to.clone(),
            })
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encode::{meta_fields, TEXT};
    use arrow::array::{Float64Array, Int64Array, ListBuilder, StringArray, StructBuilder};
    use arrow::array::{Int64Builder, StringBuilder};
    use arrow::compute::concat_batches;
    use arrow::datatypes::{Float64Type, TimeUnit};

    fn f(name: &str, t: DataType) -> Field {
        Field::new(name, t, true)
    }

    fn schema(fields: Vec<Field>) -> Schema {
        Schema::new(fields)
    }

    fn marked(field: Field, key: &str) -> Field {
        field.with_metadata([(key, "true")])
    }

    fn strukt(fields: Vec<Field>) -> DataType {
        DataType::Struct(fields.into())
    }

    fn list(item: DataType) -> DataType {
        DataType::List(Arc::new(Field::new_list_field(item, true)))
    }

    fn names(s: &Schema) -> Vec<&str> {
        s.fields().iter().map(|f| f.name().as_str()).collect()
    }

    #[test]
    fn added_top_level_field_is_appended_and_nullable() {
        let a = schema(vec![
            Field::new("id", DataType::Int64, false),
            f("name", DataType::Utf8),
        ]);
        let b = schema(vec![
            Field::new("score", DataType::Float64, false),
            Field::new("id", DataType::Int64, false),
        ]);
        let u = union(&a, &b).unwrap();
        assert_eq!(names(&u), ["id", "name", "score"]);
        assert!(!u.field(0).is_nullable(), "in both and required in both");
        assert!(u.field(2).is_nullable(), "only in b");
        assert_eq!(union(&b, &a).unwrap().fields().len(), 3);
    }

    #[test]
    fn added_nested_field_reads_as_null_in_older_batch() {
        let old = strukt(vec![f("user_id", DataType::Utf8)]);
        let new = strukt(vec![
            f("user_id", DataType::Utf8),
            f("country", DataType::Utf8),
        ]);
        let u = union(
            &schema(vec![f("p", old.clone())]),
            &schema(vec![f("p", new.clone())]),
        )
        .unwrap();
        assert_eq!(u.field(0).data_type(), &new);

        let DataType::Struct(fields) = old else {
            unreachable!()
        };
        let p = StructArray::new(
            fields,
            vec![Arc::new(StringArray::from(vec![
                Some("u1"),
                None,
                Some("u3"),
            ]))],
            Some(vec![true, true, false].into()),
        );
        let batch = RecordBatch::try_new(
            Arc::new(schema(vec![f("p", p.data_type().clone())])),
            vec![Arc::new(p)],
        )
        .unwrap();
        let out = conform(&batch, &Arc::new(u)).unwrap();
        let p = out.column(0).as_struct();
        assert_eq!(p.column_by_name("country").unwrap().null_count(), 3);
        assert_eq!(
            p.column_by_name("user_id")
                .unwrap()
                .as_string::<i32>()
                .value(0),
            "u1"
        );
        assert!(p.is_null(2), "the struct's own nulls are kept");
    }

    #[test]
    fn int64_widens_to_float64_keeping_values() {
        let a = schema(vec![f("n", DataType::Int64)]);
        let b = schema(vec![f("n", DataType::Float64)]);
        let u = Arc::new(union(&a, &b).unwrap());
        assert_eq!(u.field(0).data_type(), &DataType::Float64);
        let batch = RecordBatch::try_new(
            Arc::new(a),
            vec![Arc::new(Int64Array::from(vec![
                Some(3),
                None,
                Some(-1 << 53),
            ]))],
        )
        .unwrap();
        let out = conform(&batch, &u).unwrap();
        let n = out.column(0).as_primitive::<Float64Type>();
        assert_eq!(
            n.iter().collect::<Vec<_>>(),
            [Some(3.0), None, Some(-9007199254740992.0)]
        );
    }

    #[test]
    fn int64_beyond_2_pow_53_does_not_become_float64() {
        let a = schema(vec![f("n", DataType::Int64)]);
        let u = Arc::new(schema(vec![f("n", DataType::Float64)]));
        let batch = RecordBatch::try_new(
            Arc::new(a),
            vec![Arc::new(Int64Array::from(vec![(1 << 53) + 1]))],
        )
        .unwrap();
        let err = conform(&batch, &u).unwrap_err();
        assert!(
            matches!(&err, SchemaError::Inexact { path } if path == "n"),
            "{err}"
        );
    }

    #[test]
    fn exact_integer_meeting_float_is_an_error_naming_the_path() {
        let exact = marked(f("id", DataType::Int64), EXACT_INT);
        let a = schema(vec![f("p", strukt(vec![exact]))]);
        let b = schema(vec![f("p", strukt(vec![f("id", DataType::Float64)]))]);
        for (x, y) in [(&a, &b), (&b, &a)] {
            let err = union(x, y).unwrap_err();
            assert!(
                matches!(&err, SchemaError::Inexact { path } if path == "p.id"),
                "{err}"
            );
            assert!(err.to_string().contains("p.id"));
        }
    }

    #[test]
    fn utf8_against_int64_is_a_conflict() {
        let a = schema(vec![f("tags", list(strukt(vec![f("v", DataType::Utf8)])))]);
        let b = schema(vec![f("tags", list(strukt(vec![f("v", DataType::Int64)])))]);
        let err = union(&a, &b).unwrap_err();
        let SchemaError::Conflict { path, left, right } = &err else {
            panic!("{err}")
        };
        assert_eq!(
            (path.as_str(), left, right),
            ("tags[].v", &DataType::Utf8, &DataType::Int64)
        );
        assert_eq!(
            err.to_string(),
            "field tags[].v is Utf8 in one input and Int64 in another"
        );
    }

    #[test]
    fn other_conflicts() {
        let ts = |tz: Option<&str>| DataType::Timestamp(TimeUnit::Microsecond, tz.map(Into::into));
        let same = schema(vec![f("t", ts(Some("UTC")))]);
        assert_eq!(union(&same, &same.clone()).unwrap(), same);
        for (x, y) in [
            (ts(Some("UTC")), ts(None)),
            (DataType::UInt64, DataType::Float64),
            (DataType::Int64, list(DataType::Int64)),
            (strukt(vec![]), DataType::Utf8),
        ] {
            assert!(union(&schema(vec![f("x", x)]), &schema(vec![f("x", y)])).is_err());
        }
    }

    #[test]
    fn int64_with_uint64_is_uint64_and_refuses_negatives() {
        let a = Arc::new(schema(vec![f("n", DataType::Int64)]));
        let u = Arc::new(union(&a, &schema(vec![f("n", DataType::UInt64)])).unwrap());
        assert_eq!(u.field(0).data_type(), &DataType::UInt64);
        let ok =
            RecordBatch::try_new(a.clone(), vec![Arc::new(Int64Array::from(vec![0, 7]))]).unwrap();
        assert_eq!(
            conform(&ok, &u)
                .unwrap()
                .column(0)
                .as_primitive::<arrow::datatypes::UInt64Type>()
                .value(1),
            7
        );
        let neg = RecordBatch::try_new(a, vec![Arc::new(Int64Array::from(vec![-1]))]).unwrap();
        assert!(matches!(conform(&neg, &u), Err(SchemaError::Arrow { path, .. }) if path == "n"));
    }

    #[test]
    fn null_column_takes_the_other_type() {
        let a = schema(vec![f("x", DataType::Null), f("l", list(DataType::Null))]);
        let b = schema(vec![f("x", DataType::Int64), f("l", list(DataType::Utf8))]);
        let u = Arc::new(union(&a, &b).unwrap());
        assert_eq!(u.as_ref(), &b);
        assert_eq!(union(&b, &a).unwrap(), b);

        let batch = RecordBatch::try_new(
            Arc::new(schema(vec![f("x", DataType::Null)])),
            vec![new_null_array(&DataType::Null, 2)],
        )
        .unwrap();
        let out = conform(&batch, &u).unwrap();
        assert_eq!(out.column(0).data_type(), &DataType::Int64);
        assert_eq!(out.column(0).null_count(), 2);
        assert_eq!(out.column(1).null_count(), 2);
    }

    #[test]
    fn all_null_utf8_column_fits_another_type() {
        // How the writer stores a field seen only as null.
        let batch = RecordBatch::try_new(
            Arc::new(schema(vec![f("x", DataType::Utf8)])),
            vec![Arc::new(StringArray::from(vec![None::<&str>; 2]))],
        )
        .unwrap();
        let target = Arc::new(schema(vec![f("x", DataType::Int64)]));
        assert_eq!(conform(&batch, &target).unwrap().column(0).null_count(), 2);
        let some = RecordBatch::try_new(
            batch.schema(),
            vec![Arc::new(StringArray::from(vec![Some("a")]))],
        )
        .unwrap();
        assert!(matches!(
            conform(&some, &target),
            Err(SchemaError::Conflict { .. })
        ));
    }

    fn tags(with_score: bool) -> (Field, ArrayRef) {
        let mut fields = vec![f("name", DataType::Utf8)];
        let mut kids: Vec<Box<dyn arrow::array::ArrayBuilder>> =
            vec![Box::new(StringBuilder::new())];
        if with_score {
            fields.push(f("score", DataType::Int64));
            kids.push(Box::new(Int64Builder::new()));
        }
        let mut b = ListBuilder::new(StructBuilder::new(fields, kids));
        for (row, names) in [vec!["a", "b"], vec![], vec!["c"]].into_iter().enumerate() {
            for (i, name) in names.into_iter().enumerate() {
                let s = b.values();
                s.field_builder::<StringBuilder>(0)
                    .unwrap()
                    .append_value(name);
                if with_score {
                    s.field_builder::<Int64Builder>(1)
                        .unwrap()
                        .append_value((10 * row + i) as i64);
                }
                s.append(true);
            }
            b.append(row != 1);
        }
        let a: ArrayRef = Arc::new(b.finish());
        (f("tags", a.data_type().clone()), a)
    }

    #[test]
    fn list_of_structs_with_an_added_field() {
        let (old_field, old) = tags(false);
        let (new_field, _) = tags(true);
        let u = Arc::new(
            union(
                &schema(vec![old_field.clone()]),
                &schema(vec![new_field.clone()]),
            )
            .unwrap(),
        );
        assert_eq!(u.field(0), &new_field);

        let batch = RecordBatch::try_new(Arc::new(schema(vec![old_field])), vec![old]).unwrap();
        let out = conform(&batch, &u).unwrap();
        let l = out.column(0).as_list::<i32>();
        assert!(l.is_null(1));
        assert_eq!(l.value_offsets(), &[0, 2, 2, 3]);
        let items = l.values().as_struct();
        assert_eq!(
            items
                .column_by_name("name")
                .unwrap()
                .as_string::<i32>()
                .value(2),
            "c"
        );
        assert_eq!(items.column_by_name("score").unwrap().null_count(), 3);
    }

    #[test]
    fn metadata_is_kept() {
        let mut a = schema(vec![
            marked(f("event_type", DataType::Utf8), TEXT),
            marked(f("id", DataType::Int64), EXACT_INT),
        ]);
        a.metadata.insert("k", "a");
        let mut b = schema(vec![
            f("event_type", DataType::Utf8),
            f("id", DataType::Int64),
            f("x", DataType::Boolean),
        ]);
        b.metadata.insert("k", "b");
        let ab = union(&a, &b).unwrap();
        assert_eq!(ab.metadata()["k"], "a");
        assert!(ab.field(0).metadata().contains_key(TEXT));
        assert!(ab.field(1).metadata().contains_key(EXACT_INT));
        let ba = union(&b, &a).unwrap();
        assert!(ba.field(0).metadata().contains_key(TEXT));
        assert!(ba.field(1).metadata().contains_key(EXACT_INT));

        let batch = RecordBatch::try_new(
            Arc::new(b),
            vec![
                Arc::new(StringArray::from(vec!["click"])),
                Arc::new(Int64Array::from(vec![1])),
                Arc::new(arrow::array::BooleanArray::from(vec![true])),
            ],
        )
        .unwrap();
        let out = conform(&batch, &Arc::new(ba.clone())).unwrap();
        assert_eq!(out.schema().as_ref(), &ba);
    }

    #[test]
    fn batch_with_the_target_schema_is_returned_as_is() {
        let s = Arc::new(schema(vec![
            f("a", DataType::Int64),
            f("p", strukt(vec![f("b", DataType::Utf8)])),
        ]));
        let p = StructArray::new(
            [Arc::new(f("b", DataType::Utf8))].into(),
            vec![Arc::new(StringArray::from(vec!["x"]))],
            None,
        );
        let batch = RecordBatch::try_new(
            s.clone(),
            vec![Arc::new(Int64Array::from(vec![1])), Arc::new(p)],
        )
        .unwrap();
        let out = conform(&batch, &s).unwrap();
        assert_eq!(out, batch);
        assert!(Arc::ptr_eq(out.schema_ref(), batch.schema_ref()));
        assert!(out
            .columns()
            .iter()
            .zip(batch.columns())
            .all(|(x, y)| Arc::ptr_eq(x, y)));
    }

    #[test]
    fn union_all_of_nothing_and_of_many() {
        assert_eq!(union_all([]).unwrap(), Schema::empty());
        let [a, b, c] = [
            f("a", DataType::Null),
            f("b", DataType::Int64),
            f("a", DataType::Float64),
        ]
        .map(|x| schema(vec![x]));
        let u = union_all([&a, &b, &c]).unwrap();
        assert_eq!(names(&u), ["a", "b"]);
        assert_eq!(u.field(0).data_type(), &DataType::Float64);
    }

    #[test]
    fn unknown_or_required_missing_fields_are_errors() {
        let batch = RecordBatch::try_new(
            Arc::new(schema(vec![f("a", DataType::Int64)])),
            vec![Arc::new(Int64Array::from(vec![1]))],
        )
        .unwrap();
        let without_a = Arc::new(schema(vec![f("b", DataType::Int64)]));
        assert!(
            matches!(conform(&batch, &without_a), Err(SchemaError::NotInTarget { path }) if path == "a")
        );
        let required = Arc::new(schema(vec![
            f("a", DataType::Int64),
            Field::new("b", DataType::Int64, false),
        ]));
        assert!(
            matches!(conform(&batch, &required), Err(SchemaError::NotNullable { path }) if path == "b")
        );
    }

    #[test]
    fn round_trip_two_shapes_into_the_union_and_concat() {
        let mut older = vec![
            f("n", DataType::Int64),
            f("p", strukt(vec![f("a", DataType::Utf8)])),
        ];
        older.extend(meta_fields());
        let mut newer = vec![
            f(
                "p",
                strukt(vec![f("a", DataType::Utf8), f("b", DataType::Boolean)]),
            ),
            f("n", DataType::Float64),
            f("s", DataType::Utf8),
        ];
        newer.extend(meta_fields());
        let (older, newer) = (Arc::new(schema(older)), Arc::new(schema(newer)));
        let u = Arc::new(union_all([older.as_ref(), newer.as_ref()]).unwrap());
        let meta_names = meta_fields().into_iter().map(|f| f.name().clone());
        let expected: Vec<String> = ["n", "p"]
            .map(String::from)
            .into_iter()
            .chain(meta_names)
            .chain(["s".into()])
            .collect();
        assert_eq!(names(&u), expected);
        assert!(!u.field_with_name("_offset").unwrap().is_nullable());

        let meta = |topic: &str, offset: i64| -> Vec<ArrayRef> {
            let ts = |v: Option<i64>| {
                Arc::new(
                    arrow::array::TimestampMicrosecondArray::from(vec![v]).with_timezone("UTC"),
                ) as ArrayRef
            };
            vec![
                Arc::new(StringArray::from(vec![topic])),
                Arc::new(arrow::array::Int32Array::from(vec![0])),
                Arc::new(Int64Array::from(vec![offset])),
                ts(None),
                Arc::new(arrow::array::BinaryArray::from(vec![None::<&[u8]>])),
                ts(Some(1)),
                ts(Some(2)),
            ]
        };
        let p_old = StructArray::new(
            [Arc::new(f("a", DataType::Utf8))].into(),
            vec![Arc::new(StringArray::from(vec!["x"]))],
            None,
        );
        let mut cols: Vec<ArrayRef> = vec![Arc::new(Int64Array::from(vec![3])), Arc::new(p_old)];
        cols.extend(meta("t", 10));
        let b1 = RecordBatch::try_new(older, cols).unwrap();

        let DataType::Struct(p_fields) = newer.field(0).data_type().clone() else {
            unreachable!()
        };
        let p_new = StructArray::new(
            p_fields,
            vec![
                Arc::new(StringArray::from(vec!["y"])),
                Arc::new(arrow::array::BooleanArray::from(vec![true])),
            ],
            None,
        );
        let mut cols: Vec<ArrayRef> = vec![
            Arc::new(p_new),
            Arc::new(Float64Array::from(vec![1.5])),
            Arc::new(StringArray::from(vec!["s"])),
        ];
        cols.extend(meta("t", 11));
        let b2 = RecordBatch::try_new(newer, cols).unwrap();

        let all =
            concat_batches(&u, &[conform(&b1, &u).unwrap(), conform(&b2, &u).unwrap()]).unwrap();
        assert_eq!(all.num_rows(), 2);
        let n = all
            .column_by_name("n")
            .unwrap()
            .as_primitive::<Float64Type>();
        assert_eq!(n.values().as_ref(), [3.0, 1.5]);
        let p = all.column_by_name("p").unwrap().as_struct();
        assert_eq!(
            p.column_by_name("a")
                .unwrap()
                .as_string::<i32>()
                .iter()
                .collect::<Vec<_>>(),
            [Some("x"), Some("y")]
        );
        assert_eq!(
            p.column_by_name("b")
                .unwrap()
                .as_boolean()
                .iter()
                .collect::<Vec<_>>(),
            [None, Some(true)]
        );
        let s = all.column_by_name("s").unwrap().as_string::<i32>();
        assert_eq!(s.iter().collect::<Vec<_>>(), [None, Some("s")]);
        let off = all
            .column_by_name("_offset")
            .unwrap()
            .as_primitive::<Int64Type>();
        assert_eq!(off.values().as_ref(), [10, 11]);
    }
}
