//! The one place that knows the index schema: field names, how each is indexed, and how a
//! [`LogRecord`] becomes a tantivy document and back.
//!
//! Label-like fields (namespace, pod, …) are untokenized `STRING` fields with a fast column, so
//! filters are exact term lookups and label values, top values and splits read columns. The
//! message is full text with positions (phrase queries). `seq` is the service-wide ingest
//! sequence: the tie-breaker that gives lines with equal timestamps a stable order.

use std::collections::BTreeMap;

use tantivy::schema::{
    DateOptions, DateTimePrecision, FAST, Field, IndexRecordOption, JsonObjectOptions, STORED,
    Schema, TextFieldIndexing, TextOptions, Value,
};
use tantivy::store::{Compressor, ZstdCompressor};
use tantivy::{DateTime, IndexSettings, TantivyDocument};

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
            // inverted index would keep seconds).
            DateOptions::from(STORED)
                .set_fast()
                .set_precision(DateTimePrecision::Nanoseconds),
        );
        // Not indexed: a unique term per line cost a term-dictionary entry and a posting per
        // line (4 % of the index); the one lookup by seq (`/api/v1/context`) scans the column.
        let seq = b.add_u64_field("seq", FAST | STORED);
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
                        .set_fast("raw")
                        .set_stored(),
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
        // for the lines a query returns).
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
            doc.add_object(self.fields, json_object_value(fields));
        }
        if let Some(id) = &record.container_id {
            doc.add_text(self.container_id, id);
        }
        doc
    }

    /// The record a stored document holds, and its sequence number.
    pub fn record(&self, doc: &TantivyDocument) -> (LogRecord, u64) {
        let text = |f: Field| doc.get_first(f).and_then(|v| v.as_str()).map(str::to_owned);
        let mut record = LogRecord {
            ts: doc
                .get_first(self.ts)
                .and_then(|v| v.as_datetime())
                .map(|d| d.into_timestamp_nanos())
                .unwrap_or_default(),
            message: text(self.message).unwrap_or_default(),
            container_id: text(self.container_id),
            ..LogRecord::default()
        };
        for (name, field) in LABEL_FIELDS.iter().zip(&self.label_fields) {
            if let Some(v) = text(*field) {
                record.set_label(name, v);
            }
        }
        if let Some(obj) = doc.get_first(self.labels).and_then(|v| v.as_object()) {
            for (k, v) in obj {
                if let Some(s) = v.as_str() {
                    record.labels.insert(k.to_owned(), s.to_owned());
                }
            }
        }
        // Indexes written before fields stopped being stored still have them.
        record.fields = match doc.get_first(self.fields) {
            Some(v) => Some(
                serde_json::to_value(tantivy::schema::OwnedValue::from(v))
                    .unwrap_or(serde_json::Value::Null),
            )
            .filter(serde_json::Value::is_object),
            None => crate::record::parse_fields(&record.message),
        };
        let seq = doc
            .get_first(self.seq)
            .and_then(|v| v.as_u64())
            .unwrap_or_default();
        (record, seq)
    }
}

impl Default for Fields {
    fn default() -> Self {
        Fields::new()
    }
}

/// Index settings: zstd for the document store (logs compress well; the reference measured
/// 0.84x the size of lz4 for ~the same indexing speed), level 6 over 256 KiB blocks instead of
/// tantivy's 16 KiB: neighbouring lines share most of their labels and words, and the store
/// went from 69 to 42 MB per million lines (docs/BENCHMARKS.md). Reading one line decompresses
/// its block; the newest lines of a query sit in few blocks.
pub fn settings() -> IndexSettings {
    IndexSettings {
        docstore_compression: Compressor::Zstd(ZstdCompressor {
            compression_level: Some(6),
        }),
        docstore_blocksize: 256 * 1024,
        ..IndexSettings::default()
    }
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
