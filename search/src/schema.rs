//! The one place that knows the index schema: field names, how each is indexed, and how a
//! [`LogRecord`] becomes a tantivy document and back.
//!
//! Label-like fields (namespace, pod, …) are untokenized `STRING` fields with a fast column, so
//! filters are exact term lookups and label values, top values and splits read columns. The
//! message is full text with positions (phrase queries). `seq` is the service-wide ingest
//! sequence: the tie-breaker that gives lines with equal timestamps a stable order.
//!
//! What a column already holds is not stored again: the timestamp, `seq` and the labels are
//! read back from the columns ([`SegmentColumns`]), where a label value is kept once per segment
//! in the column's dictionary instead of once per line in the document store.

use std::collections::BTreeMap;

use tantivy::columnar::{Column, StrColumn};
use tantivy::schema::{
    DateOptions, DateTimePrecision, FAST, Field, IndexRecordOption, JsonObjectOptions, STORED,
    Schema, TextFieldIndexing, TextOptions, Value,
};
use tantivy::store::{Compressor, ZstdCompressor};
use tantivy::{DateTime, DocId, IndexSettings, SegmentReader, TantivyDocument};

use crate::record::LogRecord;

/// Fields holding one untokenized value each, filterable and listable as labels. The first
/// eight (through `component`) are LogQL's stream labels (`logql::lines::STREAM_LABELS`).
pub const LABEL_FIELDS: [&str; 11] = [
    "namespace",
    "pod",
    "container",
    "node",
    "app",
    "stream",
    "level",
    "component",
    "owner_kind",
    "owner_name",
    "pod_uid",
];

/// Every field, resolved once.
#[derive(Clone, Debug)]
pub struct Fields {
    pub schema: Schema,
    pub ts: Field,
    pub seq: Field,
    pub message: Field,
    pub size: Field,
    pub labels: Field,
    pub fields: Field,
    pub container_id: Field,
    /// The [`LABEL_FIELDS`], in that order.
    pub label_fields: Vec<Field>,
}

impl Fields {
    pub fn new() -> Fields {
        let mut b = Schema::builder();
        let ts = b.add_date_field(
            "ts",
            // Fast only: range filters and sorting read the column at full precision (the
            // inverted index would keep seconds); hits read it back from the column too.
            DateOptions::default()
                .set_fast()
                .set_precision(DateTimePrecision::Nanoseconds),
        );
        // Not indexed: a unique term per line cost a term-dictionary entry and a posting per
        // line (4 % of the index); the one lookup by seq (`/api/v1/context`) scans the column.
        let seq = b.add_u64_field("seq", FAST);
        // No field norms anywhere: lines are ranked by time, never by relevance, and norms
        // cost a byte per document per field.
        let message = b.add_text_field(
            "message",
            TextOptions::default()
                .set_indexing_options(
                    TextFieldIndexing::default()
                        .set_tokenizer("default")
                        .set_index_option(IndexRecordOption::WithFreqsAndPositions)
                        .set_fieldnorms(false),
                )
                .set_stored(),
        );
        // Message bytes, for volume sums without reading documents.
        let size = b.add_u64_field("size", FAST);
        let label_fields = LABEL_FIELDS
            .iter()
            .map(|name| {
                b.add_text_field(
                    name,
                    TextOptions::default()
                        .set_indexing_options(
                            TextFieldIndexing::default()
                                .set_tokenizer("raw")
                                .set_index_option(IndexRecordOption::Basic)
                                .set_fieldnorms(false),
                        )
                        // Not stored: read back from the column's dictionary.
                        .set_fast("raw"),
                )
            })
            .collect();
        // Pod labels: exact values (`labels.app:web`), with a column for top values.
        let labels = b.add_json_field(
            "labels",
            JsonObjectOptions::from(STORED)
                .set_indexing_options(
                    TextFieldIndexing::default()
                        .set_tokenizer("raw")
                        .set_fieldnorms(false),
                )
                .set_fast("raw"),
        );
        // Fields parsed out of JSON and logfmt lines: words, like the message, without
        // positions; not stored, since the message they come from is (they are parsed again
        // for the lines a query returns). Values unique to a line are left out
        // ([`field_is_indexed`]).
        let fields = b.add_json_field(
            "fields",
            JsonObjectOptions::default().set_indexing_options(
                TextFieldIndexing::default()
                    .set_tokenizer("default")
                    .set_index_option(IndexRecordOption::Basic)
                    .set_fieldnorms(false),
            ),
        );
        let container_id = b.add_text_field("container_id", TextOptions::from(STORED));
        Fields {
            schema: b.build(),
            ts,
            seq,
            message,
            size,
            labels,
            fields,
            container_id,
            label_fields,
        }
    }

    /// The field of a label name, if it is one.
    pub fn label(&self, name: &str) -> Option<Field> {
        LABEL_FIELDS
            .iter()
            .position(|n| *n == name)
            .map(|i| self.label_fields[i])
    }

    /// The document for `record`, which has sequence number `seq`.
    pub fn document(&self, record: &LogRecord, seq: u64) -> TantivyDocument {
        let mut doc = TantivyDocument::new();
        doc.add_date(self.ts, DateTime::from_timestamp_nanos(record.ts));
        doc.add_u64(self.seq, seq);
        doc.add_text(self.message, &record.message);
        doc.add_u64(self.size, record.message.len() as u64);
        for (name, field) in LABEL_FIELDS.iter().zip(&self.label_fields) {
            if let Some(v) = record.label(name) {
                doc.add_text(*field, v);
            }
        }
        if !record.labels.is_empty() {
            doc.add_object(self.labels, json_object(&record.labels));
        }
        if let Some(fields) = &record.fields {
            let mut indexed = json_object_value(fields);
            keep_indexed_fields(&mut indexed, true);
            if !indexed.is_empty() {
                doc.add_object(self.fields, indexed);
            }
        }
        if let Some(id) = &record.container_id {
            doc.add_text(self.container_id, id);
        }
        doc
    }

    /// The record of document `doc` of a segment: the message and pod labels from `stored`
    /// (the document store), the rest from the segment's `columns`. Indexes written before
    /// the labels left the store still have them stored; those values are used first.
    pub fn record(
        &self,
        stored: &TantivyDocument,
        columns: &SegmentColumns,
        doc: DocId,
    ) -> (LogRecord, u64) {
        let text = |f: Field| {
            stored
                .get_first(f)
                .and_then(|v| v.as_str())
                .map(str::to_owned)
        };
        let mut record = LogRecord {
            ts: columns
                .ts
                .first(doc)
                .map(|d| d.into_timestamp_nanos())
                .unwrap_or_default(),
            message: text(self.message).unwrap_or_default(),
            container_id: text(self.container_id),
            ..LogRecord::default()
        };
        let mut buf = String::new();
        for ((name, field), column) in LABEL_FIELDS
            .iter()
            .zip(&self.label_fields)
            .zip(&columns.labels)
        {
            let value = text(*field).or_else(|| {
                let ord = column.as_ref()?.term_ords(doc).next()?;
                buf.clear();
                column
                    .as_ref()?
                    .ord_to_str(ord, &mut buf)
                    .ok()?
                    .then(|| buf.clone())
            });
            if let Some(v) = value {
                record.set_label(name, v);
            }
        }
        if let Some(obj) = stored.get_first(self.labels).and_then(|v| v.as_object()) {
            for (k, v) in obj {
                if let Some(s) = v.as_str() {
                    record.labels.insert(k.to_owned(), s.to_owned());
                }
            }
        }
        // Indexes written before fields stopped being stored still have them.
        record.fields = match stored.get_first(self.fields) {
            Some(v) => Some(
                serde_json::to_value(tantivy::schema::OwnedValue::from(v))
                    .unwrap_or(serde_json::Value::Null),
            )
            .filter(serde_json::Value::is_object),
            None => crate::record::parse_fields(&record.message),
        };
        (record, columns.seq.first(doc).unwrap_or_default())
    }
}

/// The columns of one segment that hits are read back from, opened once per segment.
pub struct SegmentColumns {
    ts: Column<DateTime>,
    seq: Column<u64>,
    /// One per [`LABEL_FIELDS`]; `None` where no document of the segment has that label.
    labels: Vec<Option<StrColumn>>,
}

impl SegmentColumns {
    pub fn open(segment: &SegmentReader) -> tantivy::Result<SegmentColumns> {
        let ff = segment.fast_fields();
        Ok(SegmentColumns {
            ts: ff.date("ts")?,
            seq: ff.u64("seq")?,
            labels: LABEL_FIELDS
                .iter()
                .map(|name| ff.str(name))
                .collect::<tantivy::Result<_>>()?,
        })
    }
}

impl Default for Fields {
    fn default() -> Self {
        Fields::new()
    }
}

/// Index settings: zstd for the document store (logs compress well; the reference measured
/// 0.84x the size of lz4 for ~the same indexing speed), level 9 over 256 KiB blocks instead of
/// tantivy's 16 KiB: neighbouring lines share most of their words, and the store went from 69
/// to 42 MB per million lines (docs/BENCHMARKS.md); level 9 took 1 MB more off at the same
/// ingest rate, level 12 only 0.6 MB more and cost a fifth of it. Reading one line decompresses
/// its block; the newest lines of a query sit in few blocks.
pub fn settings() -> IndexSettings {
    IndexSettings {
        docstore_compression: Compressor::Zstd(ZstdCompressor {
            compression_level: Some(9),
        }),
        docstore_blocksize: 256 * 1024,
        ..IndexSettings::default()
    }
}

/// Keys that hold the line's own time (zap's `ts`, logrus' and pino's `time`, ECS'
/// `@timestamp`): the `ts` column already has it, and no one looks a line up by its
/// exact timestamp text.
const LINE_TIME_KEYS: [&str; 4] = ["ts", "time", "timestamp", "@timestamp"];

/// Whether the parsed field at `path` (`a` or `a.b` below `fields`) with text `value` goes into
/// the fields index. Two kinds of values stay out: the line's own time, and identifiers (16 or
/// more hex digits, or a UUID: trace, span and request ids). Each is unique to a line or a
/// request, so each cost a dictionary entry per line (10 of the 38 MB per million lines of
/// gen_logs.py before they were left out, docs/BENCHMARKS.md); an identifier is one word of
/// the message, whose index finds it, and a `fields.<key>:<id>` query is sent there
/// ([`crate::query::compile`]).
pub fn field_is_indexed(path: &str, value: Option<&str>) -> bool {
    !LINE_TIME_KEYS.contains(&path) && !value.is_some_and(is_identifier)
}

fn is_identifier(v: &str) -> bool {
    let hex = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_hexdigit());
    let uuid =
        v.len() == 36 && v.split('-').map(str::len).eq([8, 4, 4, 4, 12]) && v.split('-').all(hex);
    (v.len() >= 16 && hex(v)) || uuid
}

/// Drops from a parsed-fields object what [`field_is_indexed`] leaves out, at any depth
/// (`top` is the first level, where the line-time keys are).
fn keep_indexed_fields(map: &mut BTreeMap<String, tantivy::schema::OwnedValue>, top: bool) {
    use tantivy::schema::OwnedValue;
    map.retain(|key, value| {
        if top && !field_is_indexed(key, None) {
            return false;
        }
        match value {
            OwnedValue::Str(s) => !is_identifier(s),
            OwnedValue::Object(entries) => {
                let mut inner: BTreeMap<_, _> = std::mem::take(entries).into_iter().collect();
                keep_indexed_fields(&mut inner, false);
                *entries = inner.into_iter().collect();
                !entries.is_empty()
            }
            _ => true,
        }
    });
}

fn json_object(map: &BTreeMap<String, String>) -> BTreeMap<String, tantivy::schema::OwnedValue> {
    map.iter()
        .map(|(k, v)| (k.clone(), tantivy::schema::OwnedValue::Str(v.clone())))
        .collect()
}

fn json_object_value(value: &serde_json::Value) -> BTreeMap<String, tantivy::schema::OwnedValue> {
    match tantivy::schema::OwnedValue::from(value.clone()) {
        tantivy::schema::OwnedValue::Object(entries) => entries.into_iter().collect(),
        _ => BTreeMap::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_and_the_line_time_stay_out_of_the_fields_index() {
        for id in [
            "02ee4f0b02ab6df7",
            "4bf92f3577b34da6a3ce929d0e0e4736",
            "550e8400-e29b-41d4-a716-446655440000",
            "1234567890123456",
        ] {
            assert!(!field_is_indexed("trace_id", Some(id)), "{id}");
        }
        for value in [
            "alice",
            "02ee4f0b02ab6df",
            "/api/v1/orders",
            "550e8400-e29b-41d4-a716-44665544000g",
            "deadbeef-cafe",
        ] {
            assert!(field_is_indexed("user", Some(value)), "{value}");
        }
        for key in LINE_TIME_KEYS {
            assert!(!field_is_indexed(key, None), "{key}");
        }
        // Only the first level holds the line's time.
        assert!(field_is_indexed("http.time", None));
    }
}
