//! Turning a search request into a tantivy query and running it over the day indexes: the
//! newest (or oldest) N lines in a stable order, cursor pages, highlighting, and context.

use std::ops::Bound;
use std::sync::Arc;

use tantivy::collector::TopDocs;
use tantivy::query::{
    AllQuery, BooleanQuery, Occur, Query, QueryParser, RangeQuery, RegexQuery, TermQuery,
};
use tantivy::schema::IndexRecordOption;
use tantivy::snippet::SnippetGenerator;
use tantivy::{DateTime, DocAddress, Searcher, SegmentReader, TantivyDocument, Term};

use crate::record::LogRecord;
use crate::schema::{Fields, SegmentColumns};
use crate::store::Store;

/// A bad request, with a message that says what and where.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Index(#[from] tantivy::TantivyError),
}

/// How a label must match.
#[derive(Clone, Debug)]
pub enum Matcher {
    Eq(String),
    Ne(String),
    Re(String),
    NotRe(String),
}

/// What lines to consider.
#[derive(Clone, Debug, Default)]
pub struct Filters {
    /// Lucene-style query text over the message (and `field:value` terms).
    pub text: Option<String>,
    /// Label matchers: a built-in label (`namespace`, `pod`, …) or a pod label (`labels.app`).
    pub labels: Vec<(String, Matcher)>,
    /// Unix ns, inclusive.
    pub start: i64,
    /// Unix ns, exclusive.
    pub end: i64,
    /// Words the message must contain (whole, or as a part of a word): the index's share of a
    /// LogQL line filter, which is then checked exactly on the lines found.
    pub words: Vec<Word>,
}

/// A word of the message, lowercased as the index keeps it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Word {
    Whole(String),
    /// The start of a word.
    Prefix(String),
    /// The end of a word.
    Suffix(String),
    /// Anywhere inside a word.
    Infix(String),
    /// Any of these whole words (a partial word resolved against the term dictionaries).
    AnyOf(Vec<String>),
}

/// Whether a term (first) contains a partial word (second) the way the word needs.
type WordTest = fn(&[u8], &[u8]) -> bool;

/// Most words a partial word may resolve to before it is left to a regular expression.
const MAX_EXPANSION: usize = 20_000;

/// Resolve partial words into the whole words of the message index that contain them, once,
/// so a query paged many times does not walk the term dictionaries on every page.
pub fn expand_words(store: &Store, filters: &Filters) -> Result<Filters, QueryError> {
    let mut out = filters.clone();
    let days = store.days_between(filters.start, filters.end);
    for word in &mut out.words {
        let (needle, test): (String, WordTest) = match word {
            Word::Whole(_) | Word::AnyOf(_) => continue,
            Word::Prefix(w) => (w.clone(), |t, n| t.starts_with(n)),
            Word::Suffix(w) => (w.clone(), |t, n| t.ends_with(n)),
            Word::Infix(w) => (w.clone(), |t, n| {
                t.len() >= n.len() && t.windows(n.len()).any(|x| x == n)
            }),
        };
        let kind = match word {
            Word::Prefix(_) => "prefix",
            Word::Suffix(_) => "suffix",
            _ => "infix",
        };
        let key = format!("{kind}:{needle}");
        let mut terms = std::collections::BTreeSet::new();
        let mut too_many = false;
        'days: for day in &days {
            let searcher = day.searcher();
            for segment in searcher.segment_readers() {
                let cache_key = (segment.segment_id(), key.clone());
                let cached = store
                    .expansions
                    .lock()
                    .expect("expansion cache")
                    .get(&cache_key)
                    .cloned();
                let found = match cached {
                    Some(found) => found,
                    None => {
                        let index = segment.inverted_index(store.fields.message)?;
                        let mut stream = index
                            .terms()
                            .stream()
                            .map_err(tantivy::TantivyError::from)?;
                        let mut found = Vec::new();
                        while stream.advance() && found.len() <= MAX_EXPANSION {
                            let k = stream.key();
                            if test(k, needle.as_bytes()) {
                                found.push(String::from_utf8_lossy(k).into_owned());
                            }
                        }
                        let found = Arc::new(found);
                        let mut cache = store.expansions.lock().expect("expansion cache");
                        // Bounded: forget everything now and then rather than track use.
                        if cache.len() >= 4096 {
                            cache.clear();
                        }
                        cache.insert(cache_key, found.clone());
                        found
                    }
                };
                terms.extend(found.iter().cloned());
                if terms.len() > MAX_EXPANSION {
                    too_many = true;
                    break 'days;
                }
            }
        }
        if !too_many {
            *word = Word::AnyOf(terms.into_iter().collect());
        }
    }
    Ok(out)
}

/// Longest word the message index keeps (tantivy's default tokenizer drops longer ones).
const MAX_WORD_BYTES: usize = 39;

/// The words a message containing `needle` (case-sensitively) must have in the index: words
/// touching an end of the needle may continue beyond it in the message.
pub fn needle_words(needle: &str) -> Vec<Word> {
    let mut out = Vec::new();
    let mut start = None;
    let chars: Vec<(usize, char)> = needle.char_indices().collect();
    for (i, &(at, c)) in chars.iter().enumerate() {
        if c.is_alphanumeric() {
            if start.is_none() {
                start = Some(at);
            }
            let last = i + 1 == chars.len() || !chars[i + 1].1.is_alphanumeric();
            if last {
                let s = start.take().expect("word start");
                let end = at + c.len_utf8();
                let word = needle[s..end].to_lowercase();
                if word.len() > MAX_WORD_BYTES {
                    continue;
                }
                let open_left = s == 0;
                let open_right = end == needle.len();
                out.push(match (open_left, open_right) {
                    (false, false) => Word::Whole(word),
                    (true, false) => Word::Suffix(word),
                    (false, true) => Word::Prefix(word),
                    (true, true) => Word::Infix(word),
                });
            }
        }
    }
    out
}

/// Newest or oldest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Order {
    #[default]
    Desc,
    Asc,
}

/// A position in the stable order: timestamp, then sequence number.
pub type Position = (i64, u64);

#[derive(Clone, Debug)]
pub struct SearchRequest {
    pub filters: Filters,
    pub order: Order,
    pub limit: usize,
    /// Continue after this position (exclusive), in `order`.
    pub after: Option<Position>,
    pub highlight: bool,
    /// Count every matching line (`total`), not only the page.
    pub count: bool,
}

#[derive(Clone, Debug)]
pub struct Hit {
    pub ts: i64,
    pub seq: u64,
    pub record: LogRecord,
    /// The message with matches in `<b>…</b>` (HTML-escaped).
    pub highlight: Option<String>,
}

/// Matching lines are counted exactly up to this many, as Elasticsearch's
/// `track_total_hits` does: past it, counting every segment of a day of 100 M lines would cost
/// more than finding the lines asked for.
pub const TOTAL_EXACT_UP_TO: usize = 10_000;

#[derive(Clone, Debug, Default)]
pub struct SearchResult {
    pub hits: Vec<Hit>,
    /// Lines matching the filters (all pages), exactly when `total_exact`, else at least.
    pub total: usize,
    pub total_exact: bool,
    /// Where the next page starts, when there may be one.
    pub next: Option<Position>,
}

/// The parts of a compiled query.
pub struct Compiled {
    pub query: Box<dyn Query>,
    /// The query without its time range, for segments wholly inside it: the range is a scan
    /// of the timestamp column, which costs as much as the segment is large.
    pub untimed: Box<dyn Query>,
    /// The text part alone (for highlighting).
    pub text: Option<Box<dyn Query>>,
}

/// Build the tantivy query for `filters`.
pub fn compile(fields: &Fields, filters: &Filters) -> Result<Compiled, QueryError> {
    let mut clauses: Vec<(Occur, Box<dyn Query>)> = Vec::new();
    let time: (Occur, Box<dyn Query>) = (
        Occur::Must,
        Box::new(RangeQuery::new(
            Bound::Included(Term::from_field_date(
                fields.ts,
                DateTime::from_timestamp_nanos(filters.start),
            )),
            Bound::Excluded(Term::from_field_date(
                fields.ts,
                DateTime::from_timestamp_nanos(filters.end),
            )),
        )),
    );
    for (name, matcher) in &filters.labels {
        let (occur, q) = label_clause(fields, name, matcher)?;
        clauses.push((occur, q));
    }
    for word in &filters.words {
        let q: Box<dyn Query> = match word {
            Word::Whole(w) => Box::new(TermQuery::new(
                Term::from_field_text(fields.message, w),
                IndexRecordOption::Basic,
            )),
            Word::Prefix(w) => word_regex(fields, &format!("{}.*", regex::escape(w)))?,
            Word::Suffix(w) => word_regex(fields, &format!(".*{}", regex::escape(w)))?,
            Word::Infix(w) => word_regex(fields, &format!(".*{}.*", regex::escape(w)))?,
            Word::AnyOf(words) => Box::new(tantivy::query::TermSetQuery::new(
                words
                    .iter()
                    .map(|w| Term::from_field_text(fields.message, w)),
            )),
        };
        clauses.push((Occur::Must, q));
    }
    let text = match filters.text.as_deref().map(str::trim) {
        Some(t) if !t.is_empty() && t != "*" => {
            let mut parser = QueryParser::new(
                fields.schema.clone(),
                vec![fields.message],
                tantivy::tokenizer::TokenizerManager::default(),
            );
            parser.set_conjunction_by_default();
            // The lenient grammar reports where the text goes wrong; the strict one only fails.
            let (mut ast, errors) = tantivy::query_grammar::parse_query_lenient(t);
            if let Some(e) = errors.first() {
                return Err(QueryError::Invalid(format!(
                    "query {t:?}: at character {}: {}",
                    e.pos + 1,
                    e.message
                )));
            }
            send_unindexed_fields_to_message(&mut ast);
            let q = parser
                .build_query_from_user_input_ast(ast)
                .map_err(|e| QueryError::Invalid(format!("query {t:?}: {e}")))?;
            clauses.push((Occur::Must, q.box_clone()));
            Some(q)
        }
        _ => None,
    };
    let mut untimed: Vec<(Occur, Box<dyn Query>)> =
        clauses.iter().map(|(o, q)| (*o, q.box_clone())).collect();
    if untimed.iter().all(|(o, _)| *o == Occur::MustNot) {
        untimed.push((Occur::Must, Box::new(AllQuery)));
    }
    clauses.push(time);
    Ok(Compiled {
        query: Box::new(BooleanQuery::new(clauses)),
        untimed: Box::new(BooleanQuery::new(untimed)),
        text,
    })
}

/// `fields.<key>:<value>` terms whose value the fields index leaves out (an identifier, the
/// line's time: [`crate::schema::field_is_indexed`]) search the message for the value instead,
/// where the line's words are indexed.
fn send_unindexed_fields_to_message(ast: &mut tantivy::query_grammar::UserInputAst) {
    use tantivy::query_grammar::{UserInputAst, UserInputLeaf};
    match ast {
        UserInputAst::Clause(clauses) => {
            for (_, c) in clauses {
                send_unindexed_fields_to_message(c);
            }
        }
        UserInputAst::Boost(inner, _) => send_unindexed_fields_to_message(inner),
        UserInputAst::Leaf(leaf) => {
            if let UserInputLeaf::Literal(lit) = &mut **leaf {
                let unindexed = (lit.field_name.as_deref())
                    .and_then(|f| f.strip_prefix("fields."))
                    .is_some_and(|path| !crate::schema::field_is_indexed(path, Some(&lit.phrase)));
                if unindexed {
                    lit.field_name = None;
                }
            }
        }
    }
}

fn word_regex(fields: &Fields, pattern: &str) -> Result<Box<dyn Query>, QueryError> {
    Ok(Box::new(
        RegexQuery::from_pattern(pattern, fields.message)
            .map_err(|e| QueryError::Invalid(format!("word pattern {pattern:?}: {e}")))?,
    ))
}

fn label_clause(
    fields: &Fields,
    name: &str,
    matcher: &Matcher,
) -> Result<(Occur, Box<dyn Query>), QueryError> {
    let (field, path) = match fields.label(name) {
        Some(f) => (f, None),
        None => {
            let key = name.strip_prefix("labels.").unwrap_or(name);
            if key.is_empty() {
                return Err(QueryError::Invalid(format!("label name {name:?} is empty")));
            }
            (fields.labels, Some(key))
        }
    };
    let term = |value: &str| match path {
        None => Term::from_field_text(field, value),
        Some(key) => {
            let mut t = Term::from_field_json_path(field, key, false);
            t.append_type_and_str(value);
            t
        }
    };
    let regex = |re: &str| -> Result<Box<dyn Query>, QueryError> {
        if path.is_some() {
            return Err(QueryError::Invalid(format!(
                "regular expressions match built-in labels only, not pod label {name:?}"
            )));
        }
        Ok(Box::new(RegexQuery::from_pattern(re, field).map_err(
            |e| QueryError::Invalid(format!("regular expression {re:?}: {e}")),
        )?))
    };
    Ok(match matcher {
        Matcher::Eq(v) => (
            Occur::Must,
            Box::new(TermQuery::new(term(v), IndexRecordOption::Basic)),
        ),
        Matcher::Ne(v) => (
            Occur::MustNot,
            Box::new(TermQuery::new(term(v), IndexRecordOption::Basic)),
        ),
        Matcher::Re(re) => (Occur::Must, regex(re)?),
        Matcher::NotRe(re) => (Occur::MustNot, regex(re)?),
    })
}

/// The stable-order sort key of every document of a segment; `None` for documents at or
/// before `after` (they rank lowest and are dropped).
type SegmentKey = Box<dyn FnMut(tantivy::DocId) -> Option<(i64, u64)>>;

fn sort_key(
    order: Order,
    after: Option<Position>,
) -> impl Fn(&SegmentReader) -> SegmentKey + Send + Sync + 'static {
    move |segment: &SegmentReader| {
        let ts = segment
            .fast_fields()
            .date("ts")
            .expect("ts is a fast field")
            .first_or_default_col(DateTime::MIN);
        let seq = segment
            .fast_fields()
            .u64("seq")
            .expect("seq is a fast field")
            .first_or_default_col(0);
        Box::new(move |doc| {
            let pos = (ts.get_val(doc).into_timestamp_nanos(), seq.get_val(doc));
            // The collector keeps the greatest keys: for Asc, older must be greater.
            let key = match order {
                Order::Desc => pos,
                Order::Asc => (i64::MAX.saturating_sub(pos.0), u64::MAX - pos.1),
            };
            let past = match (order, after) {
                (_, None) => false,
                (Order::Desc, Some(a)) => pos >= a,
                (Order::Asc, Some(a)) => pos <= a,
            };
            (!past).then_some(key)
        })
    }
}

/// Run `req` over `store`.
pub fn search(store: &Store, req: &SearchRequest) -> Result<SearchResult, QueryError> {
    let fields = &store.fields;
    let mut filters = req.filters.clone();
    // A cursor narrows the time range too, so older days are skipped.
    if let Some((ts, _)) = req.after {
        match req.order {
            Order::Desc => filters.end = filters.end.min(ts.saturating_add(1)),
            Order::Asc => filters.start = filters.start.max(ts),
        }
    }
    let mut days = store.days_between(filters.start, filters.end);
    if req.order == Order::Desc {
        days.reverse();
    }
    let mut result = SearchResult {
        total_exact: true,
        ..SearchResult::default()
    };
    let compiled = compile(fields, &filters)?;
    for day in &days {
        let counting = req.count && result.total < TOTAL_EXACT_UP_TO;
        if !counting && result.hits.len() >= req.limit {
            result.total_exact &= !req.count;
            break;
        }
        let searcher = day.searcher();
        let budget = if counting {
            TOTAL_EXACT_UP_TO - result.total
        } else {
            0
        };
        let (count, exact, top) = newest_in_day(&searcher, &compiled, &filters, req, budget)?;
        result.total += count;
        result.total_exact &= exact || !req.count;
        if result.hits.len() >= req.limit {
            continue;
        }
        let snippets = match (&compiled.text, req.highlight) {
            (Some(q), true) => {
                let mut g = SnippetGenerator::create(&searcher, &**q, fields.message)?;
                g.set_max_num_chars(2000);
                Some(g)
            }
            _ => None,
        };
        let mut docs = Docs::new(fields, &searcher);
        for (key, addr) in top {
            if key.is_none() || result.hits.len() >= req.limit {
                continue;
            }
            result.hits.push(hit(&mut docs, addr, snippets.as_ref())?);
        }
    }
    if result.hits.len() == req.limit {
        result.next = result.hits.last().map(|h| (h.ts, h.seq));
    }
    Ok(result)
}

/// Reads records back from one searcher: the document store for what is stored, each
/// segment's columns (opened once) for the rest.
struct Docs<'a> {
    fields: &'a Fields,
    searcher: &'a Searcher,
    columns: std::collections::HashMap<u32, SegmentColumns>,
}

impl<'a> Docs<'a> {
    fn new(fields: &'a Fields, searcher: &'a Searcher) -> Docs<'a> {
        Docs {
            fields,
            searcher,
            columns: Default::default(),
        }
    }

    fn record(&mut self, addr: DocAddress) -> Result<(LogRecord, u64), QueryError> {
        let stored: TantivyDocument = self.searcher.doc(addr)?;
        let columns = match self.columns.entry(addr.segment_ord) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => e.insert(SegmentColumns::open(
                self.searcher.segment_reader(addr.segment_ord),
            )?),
        };
        Ok(self.fields.record(&stored, columns, addr.doc_id))
    }
}

/// The first `req.limit` lines of one day in the request's order (and how many match, when
/// asked). Segments are visited newest first (oldest first for `Asc`), and once `limit` lines
/// are in hand a segment that cannot hold a better one is only counted, or skipped: the newest
/// 100 of 100 M lines read the newest segment or two, not all of them. Segments wholly inside
/// the time range run the query without its range clause.
/// Matches are counted segment by segment until `count_up_to` is reached; the flag says
/// whether every segment was counted.
#[allow(clippy::type_complexity)]
fn newest_in_day(
    searcher: &Searcher,
    compiled: &Compiled,
    filters: &Filters,
    req: &SearchRequest,
    count_up_to: usize,
) -> Result<(usize, bool, Vec<(Option<(i64, u64)>, DocAddress)>), QueryError> {
    use tantivy::collector::Collector;
    let scoring = tantivy::query::EnableScoring::disabled_from_searcher(searcher);
    let timed = compiled.query.weight(scoring)?;
    let untimed = compiled.untimed.weight(scoring)?;
    let mut segments = Vec::new();
    for (ord, reader) in searcher.segment_readers().iter().enumerate() {
        if reader.num_docs() == 0 {
            continue;
        }
        let ts = reader.fast_fields().date("ts")?;
        let (min, max) = (
            ts.min_value().into_timestamp_nanos(),
            ts.max_value().into_timestamp_nanos(),
        );
        if max < filters.start || min >= filters.end {
            continue;
        }
        let inside = min >= filters.start && max < filters.end;
        segments.push((ord as u32, reader, min, max, inside));
    }
    match req.order {
        Order::Desc => segments.sort_by_key(|s| std::cmp::Reverse(s.3)),
        Order::Asc => segments.sort_by_key(|s| s.2),
    }
    let top = TopDocs::with_limit(req.limit.max(1)).order_by(sort_key(req.order, req.after));
    let (mut count, mut exact, mut best) = (0, true, Vec::new());
    for (ord, reader, min, max, inside) in segments {
        let counting = count < count_up_to;
        exact &= counting;
        let weight = if inside { &untimed } else { &timed };
        // With `limit` lines in hand, the worst of them against the segment's time bounds.
        let beaten = best.len() >= req.limit
            && best
                .last()
                .is_some_and(|(key, _): &(Option<(i64, u64)>, _)| {
                    key.is_some_and(|(ts, _)| match req.order {
                        Order::Desc => max < ts,
                        // Asc keys are inverted (the collector keeps the greatest).
                        Order::Asc => min > i64::MAX.saturating_sub(ts),
                    })
                });
        if beaten {
            if !counting {
                break;
            }
            count += weight.count(reader)? as usize;
            continue;
        }
        if counting {
            count += weight.count(reader)? as usize;
        }
        let fruit = top.collect_segment(weight.as_ref(), ord, reader)?;
        best.extend(top.merge_fruits(vec![fruit])?);
        best.sort_by_key(|b| std::cmp::Reverse(b.0));
        best.truncate(req.limit.max(1));
    }
    Ok((count, exact, best))
}

fn hit(
    docs: &mut Docs,
    addr: DocAddress,
    snippets: Option<&SnippetGenerator>,
) -> Result<Hit, QueryError> {
    let (record, seq) = docs.record(addr)?;
    let highlight = snippets.map(|g| {
        let s = g.snippet(&record.message);
        if s.highlighted().is_empty() {
            html_escape(&record.message)
        } else {
            s.to_html()
        }
    });
    Ok(Hit {
        ts: record.ts,
        seq,
        record,
        highlight,
    })
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The line with sequence number `seq`, looked up newest day first.
pub fn find(store: &Store, seq: u64) -> Result<Option<Hit>, QueryError> {
    let fields = &store.fields;
    let term = Term::from_field_u64(fields.seq, seq);
    let q = tantivy::query::RangeQuery::new(
        std::ops::Bound::Included(term.clone()),
        std::ops::Bound::Included(term),
    );
    for day in store.days().iter().rev() {
        let searcher = day.searcher();
        let top = searcher.search(&q, &TopDocs::with_limit(1).order_by_score())?;
        if let Some((_, addr)) = top.first() {
            return Ok(Some(hit(&mut Docs::new(fields, &searcher), *addr, None)?));
        }
    }
    Ok(None)
}

/// Up to `before` lines before and `after` lines after line `seq` from the same container,
/// oldest first, the line itself included.
pub fn context(
    store: &Store,
    seq: u64,
    before: usize,
    after: usize,
) -> Result<Option<Vec<Hit>>, QueryError> {
    let Some(center) = find(store, seq)? else {
        return Ok(None);
    };
    let mut labels = Vec::new();
    for name in ["namespace", "pod", "container", "component", "node"] {
        if let Some(v) = center.record.label(name) {
            labels.push((name.to_owned(), Matcher::Eq(v.to_owned())));
        }
    }
    let filters = Filters {
        text: None,
        labels,
        start: 0,
        end: i64::MAX,
        words: Vec::new(),
    };
    let at = (center.ts, center.seq);
    let run = |order, limit| {
        search(
            store,
            &SearchRequest {
                filters: filters.clone(),
                order,
                limit,
                after: Some(at),
                highlight: false,
                count: false,
            },
        )
    };
    let mut lines = if before > 0 {
        run(Order::Desc, before)?.hits
    } else {
        Vec::new()
    };
    lines.reverse();
    lines.push(center);
    if after > 0 {
        lines.extend(run(Order::Asc, after)?.hits);
    }
    Ok(Some(lines))
}

/// Lines (or message bytes) matching `filters` per `step` bucket from `origin` (at or before
/// `filters.start`), split by the built-in labels `group_by`.
pub fn counts(
    store: &Store,
    filters: &Filters,
    origin: i64,
    step: i64,
    group_by: &[String],
    bytes: bool,
) -> Result<crate::counts::Groups, QueryError> {
    for g in group_by {
        label_field(store, g)?;
    }
    if step <= 0 || filters.end <= filters.start || origin > filters.start {
        return Err(QueryError::Invalid(
            "the step and the time range must be positive".into(),
        ));
    }
    let buckets = filters.end.saturating_sub(origin).saturating_add(step - 1) / step;
    if buckets > 11_000 {
        return Err(QueryError::Invalid(format!(
            "{buckets} buckets is too many (at most 11000): use a larger step"
        )));
    }
    let collector = crate::counts::GroupedCounts {
        start: origin,
        step,
        buckets: buckets as usize,
        group_by: group_by.to_vec(),
        bytes,
    };
    let mut out = crate::counts::Groups::new();
    let compiled = compile(&store.fields, filters)?;
    for day in store.days_between(filters.start, filters.end) {
        let searcher = day.searcher();
        let groups = crate::rollup::count_day(store, &searcher, &compiled, filters, &collector)?;
        crate::counts::add_groups(&mut out, groups);
    }
    Ok(out)
}

/// The values of a built-in label among lines matching `filters`, with their line counts,
/// most frequent first.
pub fn values(
    store: &Store,
    filters: &Filters,
    label: &str,
) -> Result<Vec<(String, u64)>, QueryError> {
    use tantivy::collector::Collector;
    let field = label_field(store, label)?;
    let span = filters.end.saturating_sub(filters.start).max(1);
    let collector = crate::counts::GroupedCounts {
        start: filters.start,
        step: span,
        buckets: 1,
        group_by: vec![label.to_owned()],
        bytes: false,
    };
    let compiled = compile(&store.fields, filters)?;
    let mut totals: std::collections::HashMap<String, u64> = Default::default();
    for day in store.days_between(filters.start, filters.end) {
        let searcher = day.searcher();
        let weight = (compiled.query).weight(
            tantivy::query::EnableScoring::disabled_from_searcher(&searcher),
        )?;
        for (ord, segment) in searcher.segment_readers().iter().enumerate() {
            if only_time(filters) && segment_within(segment, filters)? {
                // Every line of the segment counts: a value's count is its term's document
                // frequency, read off the term dictionary instead of a column scan (a day of
                // 100 M lines has ~100 values, not 100 M lines, to visit).
                let index = segment.inverted_index(field)?;
                let mut terms = index
                    .terms()
                    .stream()
                    .map_err(tantivy::TantivyError::from)?;
                while terms.advance() {
                    let value = String::from_utf8_lossy(terms.key()).into_owned();
                    *totals.entry(value).or_default() += u64::from(terms.value().doc_freq);
                }
                continue;
            }
            let groups = collector.collect_segment(weight.as_ref(), ord as u32, segment)?;
            for (key, counts) in groups {
                if let Some(Some(value)) = key.into_iter().next() {
                    *totals.entry(value).or_default() += counts.iter().sum::<f64>() as u64;
                }
            }
        }
    }
    let mut out: Vec<(String, u64)> = totals.into_iter().collect();
    out.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    Ok(out)
}

/// The field of a built-in label that lines can be split or counted by.
fn label_field(store: &Store, name: &str) -> Result<tantivy::schema::Field, QueryError> {
    store.fields.label(name).ok_or_else(|| {
        QueryError::Invalid(format!(
            "cannot split by {name:?}: one of {} is needed",
            crate::schema::LABEL_FIELDS.join(", ")
        ))
    })
}

/// Whether `filters` select by time only (no label, word or text filter).
fn only_time(filters: &Filters) -> bool {
    filters.labels.is_empty()
        && filters.words.is_empty()
        && filters
            .text
            .as_deref()
            .is_none_or(|t| t.trim().is_empty() || t.trim() == "*")
}

/// Whether every line of `segment` is inside the filters' time range.
pub(crate) fn segment_within(segment: &SegmentReader, filters: &Filters) -> tantivy::Result<bool> {
    let ts = segment.fast_fields().date("ts")?;
    Ok(ts.min_value().into_timestamp_nanos() >= filters.start
        && ts.max_value().into_timestamp_nanos() < filters.end)
}

/// Every line matching `filters`, in no particular order, read in index order (so the
/// document store's blocks are decompressed once). Stops with an error past `max` lines.
pub fn scan(
    store: &Store,
    filters: &Filters,
    max: usize,
    mut each: impl FnMut(i64, u64, LogRecord),
) -> Result<usize, QueryError> {
    let compiled = compile(&store.fields, filters)?;
    let mut seen = 0;
    for day in store.days_between(filters.start, filters.end) {
        let searcher = day.searcher();
        let mut docs: Vec<DocAddress> = searcher
            .search(&*compiled.query, &tantivy::collector::DocSetCollector)?
            .into_iter()
            .collect();
        seen += docs.len();
        if seen > max {
            return Err(QueryError::Invalid(format!(
                "the query would read more than {max} lines: narrow the selector, add a line filter or shorten the time range"
            )));
        }
        docs.sort_unstable();
        let mut reader = Docs::new(&store.fields, &searcher);
        for addr in docs {
            let (record, seq) = reader.record(addr)?;
            each(record.ts, seq, record);
        }
    }
    Ok(seen)
}

/// The distinct values of the built-in labels `names` among lines matching `filters`. Segments
/// wholly inside the time range with no other filter are answered from the column dictionary
/// without reading any document.
pub fn distinct(
    store: &Store,
    filters: &Filters,
    names: &[&str],
) -> Result<Vec<std::collections::BTreeSet<String>>, QueryError> {
    use std::collections::BTreeSet;
    let mut out: Vec<BTreeSet<String>> = vec![BTreeSet::new(); names.len()];
    let only_time = only_time(filters);
    let compiled = compile(&store.fields, filters)?;
    for day in store.days_between(filters.start, filters.end) {
        let searcher = day.searcher();
        let weight =
            compiled
                .query
                .weight(tantivy::query::EnableScoring::disabled_from_searcher(
                    &searcher,
                ))?;
        for segment in searcher.segment_readers() {
            let ff = segment.fast_fields();
            let columns = names
                .iter()
                .map(|n| ff.str(n))
                .collect::<tantivy::Result<Vec<_>>>()?;
            if only_time && segment_within(segment, filters)? {
                for (set, column) in out.iter_mut().zip(&columns) {
                    let Some(column) = column else { continue };
                    let mut stream = column
                        .dictionary()
                        .stream()
                        .map_err(tantivy::TantivyError::from)?;
                    while stream.advance() {
                        set.insert(String::from_utf8_lossy(stream.key()).into_owned());
                    }
                }
                continue;
            }
            let mut ords: Vec<std::collections::HashSet<u64>> =
                vec![Default::default(); names.len()];
            weight.for_each_no_score(segment, &mut |docs| {
                for doc in docs {
                    for (set, column) in ords.iter_mut().zip(&columns) {
                        if let Some(column) = column {
                            set.extend(column.term_ords(*doc));
                        }
                    }
                }
            })?;
            for ((set, column), ords) in out.iter_mut().zip(&columns).zip(ords) {
                let Some(column) = column else { continue };
                for ord in ords {
                    let mut s = String::new();
                    if column
                        .ord_to_str(ord, &mut s)
                        .map_err(tantivy::TantivyError::from)?
                    {
                        set.insert(s);
                    }
                }
            }
        }
    }
    Ok(out)
}
