//! Counting matching lines per time bucket and per value of some labels, straight from the fast
//! columns (no stored document is read): the histogram, label values, top values and LogQL's
//! `count_over_time`/`bytes_over_time` are all this.
//!
//! It is the one scan whose cost grows with every line of a day (a 24 h histogram reads 100 M
//! timestamps at 100 M lines a day), so it reads the columns a block of documents at a time
//! and finds a group's counters through a hash of one integer, the label ordinals in mixed
//! radix, instead of hashing a tuple per line.

use std::collections::HashMap;

use rustc_hash::FxHashMap;
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

/// The counters of one segment.
pub struct SegmentCounts {
    start: i64,
    step: i64,
    buckets: usize,
    ts: Column<DateTime>,
    size: Option<Column<u64>>,
    keys: GroupKeys,
    /// Per group (as numbered by `keys`), its counts.
    counts: Vec<Vec<f64>>,
    // Scratch space for one block of documents.
    ts_block: Vec<Option<DateTime>>,
    size_block: Vec<Option<u64>>,
}

/// Numbers the groups (combinations of label values) of a segment's lines in order of first
/// sight, reading the label columns one block of documents at a time.
pub struct GroupKeys {
    columns: Vec<Option<StrColumn>>,
    slots: Slots,
    /// Per group numbered so far, its term ordinals (resolved to strings by `values`).
    ords: Vec<Vec<Option<u64>>>,
    // The loaded block's ordinals, per column.
    ord_blocks: Vec<Vec<Option<u64>>>,
}

/// How a line's label ordinals find their group.
enum Slots {
    /// Ordinal + 1 (0: no value) of each column in mixed radix: one integer per line.
    Radix {
        radix: Vec<u128>,
        index: FxHashMap<u128, usize>,
    },
    /// Cardinalities too large for 128 bits together: the tuple itself.
    Tuple(FxHashMap<Vec<Option<u64>>, usize>),
}

impl GroupKeys {
    pub fn new(segment: &SegmentReader, fields: &[String]) -> tantivy::Result<GroupKeys> {
        let ff = segment.fast_fields();
        let columns = fields
            .iter()
            .map(|f| ff.str(f))
            .collect::<tantivy::Result<Vec<_>>>()?;
        let mut radix = Vec::with_capacity(columns.len());
        let mut product: Option<u128> = Some(1);
        for c in &columns {
            radix.push(product.unwrap_or(0));
            let values = c.as_ref().map_or(0, |c| c.num_terms()) as u128 + 1;
            product = product.and_then(|p| p.checked_mul(values));
        }
        let slots = match product {
            Some(_) => Slots::Radix {
                radix,
                index: FxHashMap::default(),
            },
            None => Slots::Tuple(FxHashMap::default()),
        };
        Ok(GroupKeys {
            ord_blocks: vec![Vec::new(); columns.len()],
            columns,
            slots,
            ords: Vec::new(),
        })
    }

    /// Reads the label ordinals of a block of documents.
    pub fn load(&mut self, docs: &[DocId]) {
        for (ords, column) in self.ord_blocks.iter_mut().zip(&self.columns) {
            ords.clear();
            ords.resize(docs.len(), None);
            if let Some(column) = column {
                column.ords().first_vals(docs, ords);
            }
        }
    }

    /// The group number of line `i` of the loaded block, and whether it is new.
    pub fn group(&mut self, i: usize) -> (usize, bool) {
        let next = self.ords.len();
        let slot = match &mut self.slots {
            Slots::Radix { radix, index } => {
                let key: u128 = (self.ord_blocks.iter().zip(radix.iter()))
                    .map(|(ords, r)| ords[i].map_or(0, |o| o as u128 + 1) * r)
                    .sum();
                *index.entry(key).or_insert(next)
            }
            Slots::Tuple(index) => {
                let key: Vec<Option<u64>> = self.ord_blocks.iter().map(|ords| ords[i]).collect();
                *index.entry(key).or_insert(next)
            }
        };
        if slot == next {
            (self.ords).push(self.ord_blocks.iter().map(|ords| ords[i]).collect());
        }
        (slot, slot == next)
    }

    /// The label values of every group, in group number order (`None`: no value).
    pub fn values(&self) -> Vec<Vec<Option<String>>> {
        (self.ords.iter())
            .map(|ords| {
                (ords.iter().zip(&self.columns))
                    .map(|(ord, column)| {
                        let (Some(ord), Some(column)) = (ord, column) else {
                            return None;
                        };
                        let mut s = String::new();
                        column.ord_to_str(*ord, &mut s).ok()?;
                        Some(s)
                    })
                    .collect()
            })
            .collect()
    }
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
        Ok(SegmentCounts {
            start: self.start,
            step: self.step.max(1),
            buckets: self.buckets,
            ts: ff.date("ts")?,
            size: if self.bytes {
                Some(ff.u64("size")?)
            } else {
                None
            },
            keys: GroupKeys::new(segment, &self.group_by)?,
            counts: Vec::new(),
            ts_block: Vec::new(),
            size_block: Vec::new(),
        })
    }

    fn requires_scoring(&self) -> bool {
        false
    }

    fn merge_fruits(&self, fruits: Vec<Groups>) -> tantivy::Result<Groups> {
        let mut out = Groups::new();
        for fruit in fruits {
            add_groups(&mut out, fruit);
        }
        Ok(out)
    }
}

/// Adds `from`'s counts into `into`, group by group.
pub fn add_groups(into: &mut Groups, from: Groups) {
    for (k, v) in from {
        match into.get_mut(&k) {
            Some(slot) => {
                for (a, b) in slot.iter_mut().zip(v) {
                    *a += b;
                }
            }
            None => {
                into.insert(k, v);
            }
        }
    }
}

impl SegmentCollector for SegmentCounts {
    type Fruit = Groups;

    fn collect(&mut self, doc: DocId, _: Score) {
        self.collect_block(&[doc]);
    }

    fn collect_block(&mut self, docs: &[DocId]) {
        let n = docs.len();
        self.ts_block.resize(n, None);
        self.ts.first_vals(docs, &mut self.ts_block);
        self.keys.load(docs);
        if let Some(size) = &self.size {
            self.size_block.resize(n, None);
            size.first_vals(docs, &mut self.size_block);
        }
        for i in 0..n {
            let Some(ts) = self.ts_block[i] else {
                continue;
            };
            let offset = ts.into_timestamp_nanos().saturating_sub(self.start);
            if offset < 0 || offset / self.step >= self.buckets as i64 {
                continue;
            }
            let bucket = (offset / self.step) as usize;
            let value = match self.size {
                Some(_) => self.size_block[i].unwrap_or(0) as f64,
                None => 1.0,
            };
            let (group, fresh) = self.keys.group(i);
            if fresh {
                self.counts.push(vec![0.0; self.buckets]);
            }
            self.counts[group][bucket] += value;
        }
    }

    fn harvest(self) -> Groups {
        let mut out = Groups::new();
        for (key, counts) in self.keys.values().into_iter().zip(self.counts) {
            add_groups(&mut out, Groups::from([(key, counts)]));
        }
        out
    }
}
