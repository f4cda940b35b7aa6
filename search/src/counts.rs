//! Counting matching lines per time bucket and per value of some labels, straight from the fast
//! columns (no stored document is read): the histogram, label values, top values and, later,
//! LogQL's `count_over_time`/`bytes_over_time` are all this.

use std::collections::HashMap;

use tantivy::collector::{Collector, SegmentCollector};
use tantivy::columnar::{Column, StrColumn};
use tantivy::{DateTime, DocId, Score, SegmentOrdinal, SegmentReader};

/// Buckets `[start + i*step, start + (i+1)*step)` for `i < buckets`, split by `group_by`.
#[derive(Clone, Debug)]
pub struct GroupedCounts {
    pub start: i64,
    pub step: i64,
    pub buckets: usize,
    /// Built-in label fields (fast string columns) to split by.
    pub group_by: Vec<String>,
    /// Sum message bytes instead of counting lines.
    pub bytes: bool,
}

/// Per group (the values of `group_by`, `None` where a line has no value), a count per bucket.
pub type Groups = HashMap<Vec<Option<String>>, Vec<f64>>;

pub struct SegmentCounts {
    start: i64,
    step: i64,
    ts: Column<DateTime>,
    size: Option<Column<u64>>,
    columns: Vec<Option<StrColumn>>,
    /// Keyed by term ordinals while collecting; resolved to strings at harvest.
    counts: HashMap<Vec<Option<u64>>, Vec<f64>>,
    buckets: usize,
    key: Vec<Option<u64>>,
}

impl Collector for GroupedCounts {
    type Fruit = Groups;
    type Child = SegmentCounts;

    fn for_segment(
        &self,
        _: SegmentOrdinal,
        segment: &SegmentReader,
    ) -> tantivy::Result<SegmentCounts> {
        let ff = segment.fast_fields();
        let columns = self
            .group_by
            .iter()
            .map(|f| ff.str(f))
            .collect::<tantivy::Result<Vec<_>>>()?;
        Ok(SegmentCounts {
            start: self.start,
            step: self.step.max(1),
            ts: ff.date("ts")?,
            size: if self.bytes {
                Some(ff.u64("size")?)
            } else {
                None
            },
            key: vec![None; columns.len()],
            columns,
            counts: HashMap::new(),
            buckets: self.buckets,
        })
    }

    fn requires_scoring(&self) -> bool {
        false
    }

    fn merge_fruits(&self, fruits: Vec<Groups>) -> tantivy::Result<Groups> {
        let mut out = Groups::new();
        for fruit in fruits {
            for (k, v) in fruit {
                let slot = out.entry(k).or_insert_with(|| vec![0.0; self.buckets]);
                for (a, b) in slot.iter_mut().zip(v) {
                    *a += b;
                }
            }
        }
        Ok(out)
    }
}

impl SegmentCollector for SegmentCounts {
    type Fruit = Groups;

    fn collect(&mut self, doc: DocId, _: Score) {
        let Some(ts) = self.ts.first(doc) else {
            return;
        };
        let offset = ts.into_timestamp_nanos().saturating_sub(self.start);
        if offset < 0 {
            return;
        }
        let bucket = (offset / self.step) as usize;
        if bucket >= self.buckets {
            return;
        }
        for (slot, column) in self.key.iter_mut().zip(&self.columns) {
            *slot = column.as_ref().and_then(|c| c.term_ords(doc).next());
        }
        let value = match &self.size {
            Some(size) => size.first(doc).unwrap_or(0) as f64,
            None => 1.0,
        };
        let buckets = self.buckets;
        match self.counts.get_mut(&self.key) {
            Some(v) => v[bucket] += value,
            None => {
                let mut v = vec![0.0; buckets];
                v[bucket] = value;
                self.counts.insert(self.key.clone(), v);
            }
        }
    }

    fn harvest(self) -> Groups {
        let mut out = Groups::new();
        for (ords, v) in self.counts {
            let key = ords
                .iter()
                .zip(&self.columns)
                .map(|(ord, column)| {
                    let (Some(ord), Some(column)) = (ord, column) else {
                        return None;
                    };
                    let mut s = String::new();
                    column.ord_to_str(*ord, &mut s).ok()?;
                    Some(s)
                })
                .collect();
            let slot = out.entry(key).or_insert_with(|| vec![0.0; self.buckets]);
            for (a, b) in slot.iter_mut().zip(v) {
                *a += b;
            }
        }
        out
    }
}
